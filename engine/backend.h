/* backend.h - the compute backend interface: one table of function pointers.
 *
 * The CPU backend (backend_cpu.c) is always built and is the reference. The
 * CUDA backend (cuda/backend_cuda.cu) is built when nvcc is present
 * (MD_HAVE_CUDA) and offered only when a device (and cuBLAS) is found at run
 * time. An op a backend lacks is reported by supports() and its pointer may be
 * NULL, never a crash: callers check supports() once (md_clip_load does, and
 * runs on the CPU when an op is missing).
 *
 * Memory. Every op reads and writes buffers in the backend's memory: host
 * memory for the CPU (host_memory = 1), device memory for CUDA, obtained with
 * alloc() and filled with upload(). The legacy F32 ops of the first group
 * (linear ... l2norm) also accept host pointers on CUDA, staged through device
 * memory for the call (slow; for tests and small calls). Buffers are dense and
 * row-major; shapes are written [rows, cols]; element types are md_bt.
 *
 * Errors. Ops return MD_OK or a status for a backend failure: MD_ERR_NOMEM when
 * memory (or the memory budget, set_mem_budget) runs out, MD_ERR_UNAVAILABLE for
 * a device failure (a CUDA error), MD_ERR_UNSUPPORTED for an op or type the
 * backend lacks. last_error() then says what happened, in words, for the
 * calling thread. Our own bad arguments (a bug) are asserted, not returned.
 *
 * Threads. Each op may run on any thread; concurrent calls on different buffers
 * are safe. CUDA runs each host thread's work on its own stream, in order, so
 * a thread sees its own results without synchronising; download() waits for
 * the thread's earlier work. The CPU ops use OpenBLAS for matrix products, which
 * runs them on its own threads (see md_backend_cpu_set_threads).
 *
 * Every op is checked on every available backend against the CPU by
 * tests/unit/test_backend_ops.c (tolerances are stated there).
 */
#ifndef MD_BACKEND_H
#define MD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

typedef enum md_op {
    MD_OP_NONE = 0,
    /* F32 ops of the CLIP towers (host pointers accepted on every backend) */
    MD_OP_LINEAR,     /* y[m,n] (+)= x[m,k] . w[n,k]^T + b[n]      (torch.nn.Linear; b may be NULL) */
    MD_OP_LAYERNORM,  /* y[r,:] = (x - mean) / sqrt(var + eps) * g + b, biased variance; y may be x */
    MD_OP_GELU,       /* x * 0.5 * (1 + erf(x / sqrt 2)), in place   (transformers "gelu") */
    MD_OP_GELU_TANH,  /* tanh approximation, in place   ("gelu_new", "gelu_pytorch_tanh", "gelu_fast") */
    MD_OP_QUICK_GELU, /* x * sigmoid(1.702 x), in place  ("quick_gelu", the OpenAI CLIP checkpoints) */
    MD_OP_ATTENTION,  /* multi-head scaled dot-product attention over a fused q|k|v buffer, see below */
    MD_OP_ADD,        /* y[n] += x[n] */
    MD_OP_L2NORM,     /* y[r,:] /= ||y[r,:]||_2 (rows of zeros stay zero) */
    /* the device path: backend memory only */
    MD_OP_MEMORY,        /* alloc, free, upload, download, copy, fill, synchronize, mem_info */
    MD_OP_CONVERT,       /* between F32, F16 and BF16, round to nearest even */
    MD_OP_GEMM,          /* gemm() at MD_PREC_F32 */
    MD_OP_GEMM_TF32,     /* gemm() at MD_PREC_TF32 */
    MD_OP_GEMM_F16,      /* gemm() at MD_PREC_F16 (tensor cores, F32 accumulation) */
    MD_OP_GEMM_BF16,     /* gemm() at MD_PREC_BF16 */
    MD_OP_BIAS_ACT,      /* y = act(x + b), typed */
    MD_OP_ADD_LAYERNORM, /* x += r + rb; y = layernorm(x), typed (residual epilogue + the next norm) */
    MD_OP_ATTENTION_EX,  /* fused softmax(q k^T / sqrt hd) v per head, typed */
    MD_OP_PATCH_EMBED,   /* im2col of non-overlapping patches */
    MD_OP_EMBED_TOKENS,  /* class + position embeddings */
    MD_OP_PREPROCESS,    /* uint8 RGB frames -> resized, cropped, normalised planes (PIL bicubic) */
    MD_OP_CONV1D_SILU,   /* Mamba: causal depthwise conv1d + SiLU, either direction */
    MD_OP_SCAN,          /* Mamba: the selective scan, either direction */
    MD_OP_GATE,          /* Mamba: y = SiLU(z) * (a + b) * scale */
    MD_OP_POOL,          /* mean over groups of rows */
    MD_OP_SCORE,         /* s = E . q over F16 rows (search scoring) */
    MD_OP_TOPK,          /* the k largest scores */
    MD_OP_COUNT
} md_op;

/* Name of OP for messages, e.g. "linear"; static. */
const char *md_op_name(md_op op);

/* Element types of backend buffers. F16 is IEEE binary16, BF16 the top half of an F32. */
typedef enum md_bt { MD_BT_F32 = 0, MD_BT_F16, MD_BT_BF16 } md_bt;
size_t md_bt_size(md_bt t);
const char *md_bt_name(md_bt t);

/* Precision of a matrix product: its inputs' type and how it multiplies. F32: exact F32 products
 * (the reference); TF32: F32 inputs rounded to 10-bit mantissas by the tensor cores (the CPU
 * computes it as F32); F16 / BF16: F16 / BF16 inputs, F32 accumulation. */
typedef enum md_prec { MD_PREC_F32 = 0, MD_PREC_TF32, MD_PREC_F16, MD_PREC_BF16 } md_prec;
md_bt md_prec_input(md_prec p); /* the input type: F32, F32, F16, BF16 */
md_op md_prec_op(md_prec p);    /* MD_OP_GEMM, _TF32, _F16, _BF16: what supports() is asked */
const char *md_prec_name(md_prec p);
/* "f32", "tf32", "f16", "bf16" -> *OUT; MD_ERR_INVALID otherwise. */
md_status md_prec_parse(const char *s, md_prec *out);

/* Arguments of the selective scan (MD_OP_SCAN), per sequence b < batch, channel c < C, state
 * n < N, step t < L, as md_mamba_selective_scan_ref (mamba.h) with its neighbours fused:
 *
 *   dt      = delta[t, c] + delta_bias[c];  dt = softplus(dt) when delta_softplus (torch's:
 *             x for x > 20, else log1p(exp x))
 *   h[c, n] = exp(dt * A[c, n]) * h[c, n] + dt * B_t[n] * u[t, c]
 *   y[t, c] = sum_n C_t[n] * h[c, n] + D[c] * u[t, c]
 *
 * Rows t of sequence b are at (b * L + t) * ld of their buffer. With REVERSE the scan runs from
 * t = L - 1 down to 0 (the backward direction of a bidirectional block) and y stays in the
 * original order. H ([batch, C, N], NULL: none) holds the state before the first step (NULL
 * pointer: zeros) and gets the state after the first H_AT steps taken (0 <= h_at <= L). */
typedef struct md_scan_args {
    int batch, L, C, N;
    const float *u;
    int ldu;
    const float *delta;
    int ldd;
    const float *delta_bias; /* [C] or NULL */
    int delta_softplus;
    const float *A; /* [C, N], already -exp(A_log) */
    const float *B, *Cm;
    int ldbc; /* B_t = B + (b * L + t) * ldbc, C_t likewise */
    const float *D; /* [C] or NULL */
    int reverse;
    float *h;
    int h_at;
    float *y;
    int ldy;
} md_scan_args;

/* Largest k of MD_OP_TOPK. */
#define MD_TOPK_MAX 4096

typedef struct md_backend_i {
    const char *name;                 /* "cpu" or "cuda" */
    int host_memory;                  /* 1: buffers are host memory (the CPU) */
    int (*supports)(md_op op);        /* 1 when the backend implements OP */
    md_status (*describe)(char *buf, size_t len); /* device in words, e.g. "NVIDIA H100, 80 GiB" */
    /* The calling thread's last failure, in words ("" when none); static or thread-local. */
    const char *(*last_error)(void);

    /* ---- F32 ops of the first group (host pointers accepted everywhere) ---- */

    /* MD_OP_LINEAR. ACCUMULATE = 1 adds to y (residual connections), 0 overwrites it. */
    md_status (*linear)(const float *x, int m, int k, const float *w, const float *b, int n, float *y,
                        int accumulate);
    /* MD_OP_LAYERNORM over ROWS rows of DIM. */
    md_status (*layernorm)(const float *x, int rows, int dim, const float *g, const float *b, float eps, float *y);
    /* MD_OP_GELU, MD_OP_GELU_TANH or MD_OP_QUICK_GELU on N values in place. */
    md_status (*activation)(md_op op, float *x, size_t n);
    /* MD_OP_ATTENTION. QKV is [batch * t, 3 * heads * hd]: row i holds token i's query, key and
     * value, each split into HEADS heads of HD. OUT is [batch * t, heads * hd]. Scores are
     * q.k * hd^-0.5, softmax over keys (keys after the query are masked when CAUSAL), times v;
     * sequences of one batch never see each other. */
    md_status (*attention)(const float *qkv, int batch, int t, int heads, int hd, int causal, float *out);
    /* MD_OP_ADD. */
    md_status (*add)(float *y, const float *x, size_t n);
    /* MD_OP_L2NORM over ROWS rows of DIM, in place. */
    md_status (*l2norm)(float *y, int rows, int dim);

    /* ---- memory (MD_OP_MEMORY) ---- */

    /* BYTES of backend memory (64-byte aligned at least) into *OUT; MD_ERR_NOMEM (message in
     * last_error) when the device or the budget has no room. BYTES 0 gives NULL and MD_OK. */
    md_status (*alloc)(size_t bytes, void **out);
    void (*free)(void *p); /* NULL is a no-op */
    md_status (*upload)(void *dst, const void *host_src, size_t bytes);
    md_status (*download)(void *host_dst, const void *src, size_t bytes); /* waits for the thread's work */
    md_status (*copy)(void *dst, const void *src, size_t bytes);          /* within the backend */
    md_status (*fill)(void *dst, int byte, size_t bytes);                 /* memset */
    md_status (*synchronize)(void);                                       /* waits for the thread's work */
    /* Bytes allocated through alloc() now, and what alloc() can still give: the budget left, or
     * the device's free memory when lower (SIZE_MAX for the CPU without a budget). */
    md_status (*mem_info)(size_t *used, size_t *avail);
    /* Caps the bytes alloc() hands out in total (0: no cap but the device's). Process-wide. */
    void (*set_mem_budget)(size_t bytes);

    /* ---- the device path (backend memory only) ---- */

    /* MD_OP_CONVERT: N values of type XT at X to type YT at Y (round to nearest even). */
    md_status (*convert)(const void *x, md_bt xt, void *y, md_bt yt, size_t n);
    /* MD_OP_GEMM*: y[m,n] = x[m,k] . w[n,k]^T + bias[n] (+ y when ACCUMULATE). X (rows LDX
     * elements apart, ldx >= k) and W are of type md_prec_input(PREC); Y is of type YT (F32, or
     * PREC's input type); BIAS is F32 or NULL. Products accumulate in F32. */
    md_status (*gemm)(md_prec prec, const void *x, int ldx, int m, int k, const void *w, const float *bias, int n,
                      void *y, md_bt yt, int accumulate);
    /* MD_OP_BIAS_ACT: y[r,c] = act(x[r,c] + b[c]) over ROWS x COLS; ACT is MD_OP_NONE, MD_OP_GELU,
     * MD_OP_GELU_TANH or MD_OP_QUICK_GELU; B may be NULL; Y may be X (same type). Math in F32. */
    md_status (*bias_act)(md_op act, const void *x, md_bt xt, const float *b, int rows, int cols, void *y,
                          md_bt yt);
    /* MD_OP_ADD_LAYERNORM over ROWS rows of DIM: when R is not NULL, x += r (+ rb[col] when RB);
     * then, when Y is not NULL, y = layernorm(x) * g + b (eps EPS, biased variance, statistics in
     * double on the CPU and F32 on the device) of type YT. Y may be X when YT is F32. */
    md_status (*add_layernorm)(float *x, const void *r, md_bt rt, const float *rb, int rows, int dim,
                               const float *g, const float *b, float eps, void *y, md_bt yt);
    /* MD_OP_ATTENTION_EX: MD_OP_ATTENTION with QKV of type QT and OUT of type OT (math in F32), and
     * BIAS ([3 * heads * hd] F32, or NULL) added to every row of QKV as it is read: the q|k|v
     * projection's bias, so that the product before it needs no bias pass. */
    md_status (*attention_ex)(const void *qkv, md_bt qt, const float *bias, int batch, int t, int heads, int hd,
                              int causal, void *out, md_bt ot);
    /* MD_OP_PATCH_EMBED: N images 3 x S x S (F32, planar) to rows [n * g * g, 3 P P] of type CT,
     * g = S / P: row (i, gy, gx) holds its patch channel-major, then row-major (the order of a
     * Conv2d weight [D, 3, P, P] flattened). */
    md_status (*im2col)(const float *px, int n, int s, int p, void *cols, md_bt ct);
    /* MD_OP_EMBED_TOKENS: x[i, 0, :] = cls + pos[0, :], x[i, 1 + j, :] = patches[i * np + j, :] +
     * pos[1 + j, :] for N images of NP patches of width D. */
    md_status (*embed_tokens)(const float *patches, const float *cls, const float *pos, int n, int np, int d,
                              float *x);
    /* MD_OP_PREPROCESS: N RGB24 frames W x H (rows STRIDE bytes apart, frames FSTRIDE bytes apart)
     * to N x 3 x S x S F32: the short side resized to S with PIL's bicubic filter (the long one to
     * int(S * long / short)), the center S x S crop, (u / 255 - mean) / std; exactly
     * md_image_preprocess (video.h) at rotation 0. MEAN and STD are host arrays. */
    md_status (*preprocess)(const uint8_t *rgb, int n, int w, int h, size_t stride, size_t fstride, int s,
                            const float mean[3], const float std[3], float *out);
    /* MD_OP_CONV1D_SILU: for BATCH sequences of L steps and C channels, y[t, c] = SiLU(b[c] +
     * sum_k w[c, k] * x(t - (K-1) + k, c)), x rows LDX floats apart, y [batch, L, C]; x(s) for
     * s < 0 is row K-1+s of PREV ([batch, K-1, C], NULL: zeros). REVERSE runs on the reversed
     * sequence and writes y in the original order: y[t] = SiLU(b + sum_k w[k] x(t + K-1 - k)),
     * zeros past the end (PREV unused). */
    md_status (*conv1d_silu)(const float *x, int ldx, int batch, int L, int C, const float *w, const float *b,
                             int K, const float *prev, int reverse, float *y);
    /* MD_OP_SCAN, see md_scan_args. */
    md_status (*scan)(const md_scan_args *a);
    /* MD_OP_GATE: y[r, c] = SiLU(z[r, c]) * (a[r, c] + (b ? b[r, c] : 0)) * scale over ROWS x COLS;
     * z rows LDZ apart, a, b, y dense; Y may be A. */
    md_status (*gate)(const float *z, int ldz, const float *a, const float *b, int rows, int cols, float scale,
                      float *y);
    /* MD_OP_POOL: y[g, :] = mean over i < K of x[(g * k + i) * ldx + :] for G groups of DIM. */
    md_status (*pool)(const float *x, int ldx, int groups, int k, int dim, float *y);
    /* MD_OP_SCORE: s[i] = sum_j e[i, j] * q[j] for N rows of DIM F16 values (F32 accumulation). */
    md_status (*score)(const uint16_t *e, long long n, int dim, const float *q, float *s);
    /* MD_OP_TOPK: the K (<= n, <= MD_TOPK_MAX) largest of S[N] (finite values), best first, ties by
     * lower index: their indices to IDX and values to VAL (backend memory). */
    md_status (*topk)(const float *s, long long n, int k, long long *idx, float *val);
} md_backend_i;

/* The CPU backend: always available. */
const md_backend_i *md_backend_cpu(void);
/* Sets the threads OpenBLAS uses for the CPU backend's matrix products (process-wide; N <= 0
 * keeps OpenBLAS's own choice: OPENBLAS_NUM_THREADS, else all cores). Returns the count in use. */
int md_backend_cpu_set_threads(int n);
/* The CUDA backend, or NULL when not built in, no device is present or cuBLAS cannot be loaded
 * (md_backend_cuda_why says which). */
const md_backend_i *md_backend_cuda(void);
/* Why md_backend_cuda() returned NULL, in words ("" when it did not). */
const char *md_backend_cuda_why(void);
/* Picks a backend for DEVICE ("auto", "cpu", "cuda"). "cuda" without a device is
 * MD_ERR_UNAVAILABLE with a message in ERR; "auto" falls back to the CPU. */
md_status md_backend_select(const char *device, const md_backend_i **out, char *err, size_t errlen);

/* Pillow's resampling coefficients (precompute_coeffs + normalize_coeffs_8bpc) for the N output
 * positions from OUT0 of a resize from IN_SIZE to OUT_SIZE: BOUNDS gets N (first input, count)
 * pairs, KK N rows of KSIZE 22-bit fixed-point weights. Returns KSIZE, the row width, when BOUNDS
 * and KK are NULL (to size them); -1 for bad sizes or no memory. The CUDA preprocessing uploads these. */
int md_backend_bicubic_coeffs(int in_size, int out_size, int out0, int n, int *bounds, int32_t *kk);
/* The resized size of a W x H picture whose short side becomes S (CLIPImageProcessor's
 * get_resize_output_image_size); MD_ERR_INVALID when it does not fit an int. */
md_status md_backend_resize_dims(int w, int h, int s, int *rw, int *rh);

#endif
