/* cuda_internal.h - what the files of cuda/ share: the per-thread stream and error message, the
 * budget-checked scratch allocator, typed element access in kernels, and the launchers each
 * kernel file defines for backend_cuda.cu's op table. C++ (nvcc) only.
 *
 * Conventions. Every launcher runs on the calling thread's stream (md_cu_stream()), checks the
 * launch and returns an md_status; a CUDA failure sets the thread's message (md_cu_fail) naming
 * the op. Kernels never assume more than the op's contract in backend.h; shapes beyond what a
 * kernel handles return MD_ERR_UNSUPPORTED with a message, never a wrong answer. */
#ifndef MD_CUDA_INTERNAL_H
#define MD_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef MD_CUDA_EMU
/* The kernels compiled as plain C++ and run on CPU threads (tests/gpu/emu): checks their
 * arithmetic and indexing without a GPU. */
#include "cuda_emu.h" /* tests/gpu/emu, on the emulator build's include path */
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
/* KERNEL<<<GRID, BLOCK, SMEM, STREAM>>>, written so that the emulator can launch it too. */
#define MD_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
/* The block's dynamic shared memory as an array NAME of TYPE. */
#define MD_EXTERN_SHARED(type, name) extern __shared__ type name[]
#endif

extern "C" {
#include "../engine/backend.h"
}

/* The calling thread's stream (created on first use; NULL when that failed, with a message). */
cudaStream_t md_cu_stream(void);
/* Records "cuda: WHAT: <error>" as the thread's last error and maps E to a status
 * (MD_ERR_NOMEM for allocation failures, MD_ERR_UNAVAILABLE otherwise). */
md_status md_cu_fail(cudaError_t e, const char *what);
/* Formats the thread's last error and returns ST. */
md_status md_cu_failf(md_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* MD_OK, or md_cu_fail(cudaGetLastError(), WHAT): call right after a launch. */
md_status md_cu_check(const char *what);

/* Stream-ordered scratch memory on the thread's stream, counted against the memory budget. */
md_status md_cu_scratch(size_t bytes, void **out, const char *what);
void md_cu_scratch_free(void *p, size_t bytes);

/* The column-major product cublasGemmEx computes for the row-major y[m,n] = x[m,k] . w[n,k]^T
 * (rows of x LDX elements apart): C[M,N] = op(A) . op(B) with C = y^T (ldc n), A = w read
 * transposed (lda k), B = x^T (ldb ldx). One place, so that the emulator checks the mapping that
 * backend_cuda.cu hands to cuBLAS. */
typedef struct md_gemm_call {
    int transa, transb; /* 1: transposed (CUBLAS_OP_T), 0: not */
    int M, N, K;
    const void *A;
    int lda;
    const void *B;
    int ldb;
    void *C;
    int ldc;
} md_gemm_call;
static inline md_gemm_call md_gemm_args(const void *x, int ldx, int m, int k, const void *w, int n, void *y)
{
    md_gemm_call c = {1, 0, n, m, k, w, k, x, ldx, y, n};
    return c;
}

/* Blocks for N elements with THREADS per block, capped for grid-stride loops. */
static inline unsigned md_cu_blocks(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 65535u * 16 ? 65535u * 16 : b);
}

/* Typed loads and stores: every op computes in F32. */
__device__ __forceinline__ float md_ld(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float md_ld(const __half *p, size_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float md_ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void md_st(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void md_st(__half *p, size_t i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void md_st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }

/* ---- launchers (kernels_nn.cu) ---- */
md_status md_cu_convert(const void *x, md_bt xt, void *y, md_bt yt, size_t n);
/* y[i] = act(x[i] + b[i % cols]) over TOTAL elements (B may be NULL). */
md_status md_cu_bias_act(md_op act, const void *x, md_bt xt, const float *b, size_t total, int cols, void *y,
                         md_bt yt);
/* y[r, c] = bias[c] (ACCUMULATE 0) or y[r, c] += bias[c] (1), y of type YT. */
md_status md_cu_bias_rows(void *y, md_bt yt, const float *bias, int rows, int cols, int accumulate);
md_status md_cu_add_layernorm(float *x, const void *r, md_bt rt, const float *rb, int rows, int dim,
                              const float *g, const float *b, float eps, void *y, md_bt yt);
md_status md_cu_attention(const void *qkv, md_bt qt, const float *bias, int batch, int t, int heads, int hd,
                          int causal, void *out, md_bt ot);
md_status md_cu_im2col(const float *px, int n, int s, int p, void *cols, md_bt ct);
md_status md_cu_embed_tokens(const float *patches, const float *cls, const float *pos, int n, int np, int d,
                             float *x);
md_status md_cu_add(float *y, const float *x, size_t n);
md_status md_cu_l2norm(float *y, int rows, int dim);

/* ---- kernels_video.cu ---- */
md_status md_cu_preprocess(const uint8_t *rgb, int n, int w, int h, size_t stride, size_t fstride, int s,
                           const float mean[3], const float std[3], float *out);

/* ---- kernels_mamba.cu ---- */
md_status md_cu_conv1d_silu(const float *x, int ldx, int batch, int L, int C, const float *w, const float *b,
                            int K, const float *prev, int reverse, float *y);
md_status md_cu_scan(const md_scan_args *a);
md_status md_cu_gate(const float *z, int ldz, const float *a, const float *b, int rows, int cols, float scale,
                     float *y);
md_status md_cu_pool(const float *x, int ldx, int groups, int k, int dim, float *y);

/* ---- kernels_search.cu ---- */
md_status md_cu_score(const uint16_t *e, long long n, int dim, const float *q, float *s);
md_status md_cu_topk(const float *s, long long n, int k, long long *idx, float *val);

#endif
