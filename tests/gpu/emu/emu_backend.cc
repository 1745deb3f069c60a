/* emu_backend.cc - the CUDA backend's kernels on the CPU: the emulator runtime of cuda_emu.h and a
 * backend table ("emu") that runs cuda/kernels_*.cu compiled with -DMD_CUDA_EMU, so that
 * tests/unit/test_backend_ops.c can check every kernel against the CPU reference without a GPU
 * (`make gpu-emu`). Matrix products go to the CPU backend (cuBLAS is not emulated) after the bias
 * kernel, as cu_gemm does; the first-group F32 ops call the same launchers cu_* do, without
 * staging (emulated device memory is host memory). */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include <map>
#include <mutex>
#include <vector>

#include "../../../cuda/cuda_internal.h"

thread_local md_emu_uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

/* ---------------------------------------------------------------- runtime */

static thread_local cudaError_t last_err = cudaSuccess;
static std::mutex g_mu;
static std::map<const void *, int> g_smem_limit;

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_err;
    last_err = cudaSuccess;
    return e;
}
const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "invalid argument";
    }
}
const char *cudaGetErrorName(cudaError_t e)
{
    return e == cudaSuccess ? "cudaSuccess" : e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation"
                                          : e == cudaErrorInvalidConfiguration ? "cudaErrorInvalidConfiguration"
                                                                                : "cudaErrorInvalidValue";
}
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t)
{
    *p = malloc(n ? n : 1);
    if (!*p)
        return cudaErrorMemoryAllocation;
    memset(*p, 0xCD, n); /* device memory is not zeroed */
    return cudaSuccess;
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t)
{
    free(p);
    return cudaSuccess;
}
cudaError_t md_emu_set_smem_limit(const void *fn, int bytes)
{
    std::lock_guard<std::mutex> lk(g_mu);
    g_smem_limit[fn] = bytes;
    return cudaSuccess;
}

/* One launch: the block's threads, their barriers and the warp exchange area. */
struct launch_ctx {
    dim3 grid, block;
    unsigned nthreads;
    pthread_barrier_t block_bar;
    std::vector<pthread_barrier_t> warp_bar;
    std::vector<float> xchg;
    std::vector<unsigned char> smem;
    const std::function<void()> *body;
};
static thread_local launch_ctx *cur;

void __syncthreads(void) { pthread_barrier_wait(&cur->block_bar); }

float md_emu_shfl(float v, int src)
{
    const unsigned t = threadIdx.x, w = t / 32;
    cur->xchg[t] = v;
    pthread_barrier_wait(&cur->warp_bar[w]);
    float r = cur->xchg[w * 32 + src];
    pthread_barrier_wait(&cur->warp_bar[w]);
    return r;
}

void *md_emu_dyn_smem(void) { return cur->smem.data(); }

static void *thread_main(void *arg)
{
    launch_ctx *c = (launch_ctx *)((void **)arg)[0];
    unsigned t = (unsigned)(uintptr_t)((void **)arg)[1];
    cur = c;
    threadIdx = md_emu_uint3{t % c->block.x, t / c->block.x % c->block.y, t / (c->block.x * c->block.y)};
    blockDim = c->block;
    gridDim = c->grid;
    for (unsigned z = 0; z < c->grid.z; z++)
        for (unsigned y = 0; y < c->grid.y; y++)
            for (unsigned x = 0; x < c->grid.x; x++) {
                if (t == 0) /* uninitialised shared memory reads as NaN */
                    memset(c->smem.data(), 0xFF, c->smem.size());
                pthread_barrier_wait(&c->block_bar);
                blockIdx = md_emu_uint3{x, y, z};
                (*c->body)();
                pthread_barrier_wait(&c->block_bar); /* the block is done before the next starts */
            }
    return nullptr;
}

void md_emu_run(dim3 grid, dim3 block, size_t smem, const void *fn, const std::function<void()> &body)
{
    const unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
    int limit = 48 * 1024;
    {
        std::lock_guard<std::mutex> lk(g_mu);
        auto it = g_smem_limit.find(fn);
        if (it != g_smem_limit.end())
            limit = it->second;
    }
    if (nt == 0 || nt > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 ||
        smem > (size_t)limit || smem > 227 * 1024) {
        fprintf(stderr, "emu: bad launch: grid %u x %u x %u, block %llu threads, %zu bytes of shared memory (limit %d)\n",
                grid.x, grid.y, grid.z, nt, smem, limit);
        last_err = cudaErrorInvalidConfiguration;
        return;
    }
    launch_ctx c;
    c.grid = grid;
    c.block = block;
    c.nthreads = (unsigned)nt;
    c.body = &body;
    c.smem.assign(smem ? smem : 1, 0xFF);
    c.xchg.assign(nt, 0.0f);
    pthread_barrier_init(&c.block_bar, nullptr, c.nthreads);
    const unsigned nw = (c.nthreads + 31) / 32;
    c.warp_bar.resize(nw);
    for (unsigned w = 0; w < nw; w++)
        pthread_barrier_init(&c.warp_bar[w], nullptr, std::min(32u, c.nthreads - w * 32));
    std::vector<pthread_t> th(nt);
    std::vector<void *> args(2 * nt);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (unsigned t = 0; t < nt; t++) {
        args[2 * t] = &c;
        args[2 * t + 1] = (void *)(uintptr_t)t;
        if (pthread_create(&th[t], &attr, thread_main, &args[2 * t]) != 0) {
            fprintf(stderr, "emu: cannot start thread %u of %llu\n", t, nt);
            abort();
        }
    }
    for (unsigned t = 0; t < nt; t++)
        pthread_join(th[t], nullptr);
    pthread_attr_destroy(&attr);
    pthread_barrier_destroy(&c.block_bar);
    for (auto &b : c.warp_bar)
        pthread_barrier_destroy(&b);
}

/* ---------------------------------------------------------------- what backend_cuda.cu provides */

static thread_local char emu_err[512];

cudaStream_t md_cu_stream(void) { return (cudaStream_t)1; }

md_status md_cu_failf(md_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(emu_err, sizeof emu_err, fmt, ap);
    va_end(ap);
    return st;
}

md_status md_cu_fail(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return MD_OK;
    return md_cu_failf(e == cudaErrorMemoryAllocation ? MD_ERR_NOMEM : MD_ERR_UNAVAILABLE, "emu: %s: %s", what,
                       cudaGetErrorString(e));
}

md_status md_cu_check(const char *what) { return md_cu_fail(cudaGetLastError(), what); }

md_status md_cu_scratch(size_t bytes, void **out, const char *what)
{
    *out = nullptr;
    if (!bytes)
        return MD_OK;
    return md_cu_fail(cudaMallocAsync(out, bytes, nullptr), what);
}

void md_cu_scratch_free(void *p, size_t) { free(p); }

/* ---------------------------------------------------------------- the table */

static const char *emu_last_error(void) { return emu_err; }
static int emu_supports(md_op op) { return op > MD_OP_NONE && op < MD_OP_COUNT; }
static md_status emu_describe(char *buf, size_t len)
{
    snprintf(buf, len, "the CUDA kernels emulated on CPU threads (tests/gpu/emu)");
    return MD_OK;
}

static std::mutex g_mem_mu;
static std::map<void *, size_t> g_sizes;
static size_t g_used, g_budget;

static md_status emu_alloc(size_t bytes, void **out)
{
    *out = nullptr;
    if (!bytes)
        return MD_OK;
    std::lock_guard<std::mutex> lk(g_mem_mu);
    if (g_budget && g_used + bytes > g_budget)
        return md_cu_failf(MD_ERR_NOMEM, "emu: %zu bytes requested, %zu of the %zu-byte budget in use", bytes, g_used,
                           g_budget);
    if (cudaMallocAsync(out, bytes, nullptr) != cudaSuccess)
        return md_cu_failf(MD_ERR_NOMEM, "emu: out of memory");
    g_sizes[*out] = bytes;
    g_used += bytes;
    return MD_OK;
}
static void emu_free(void *p)
{
    if (!p)
        return;
    std::lock_guard<std::mutex> lk(g_mem_mu);
    g_used -= g_sizes[p];
    g_sizes.erase(p);
    free(p);
}
static md_status emu_copy(void *d, const void *s, size_t n)
{
    memmove(d, s, n);
    return MD_OK;
}
static md_status emu_fill(void *d, int b, size_t n)
{
    memset(d, b, n);
    return MD_OK;
}
static md_status emu_sync(void) { return MD_OK; }
static md_status emu_mem_info(size_t *used, size_t *avail)
{
    std::lock_guard<std::mutex> lk(g_mem_mu);
    if (used)
        *used = g_used;
    if (avail)
        *avail = g_budget ? (g_used < g_budget ? g_budget - g_used : 0) : ((size_t)8 << 30);
    return MD_OK;
}
static void emu_set_budget(size_t b)
{
    std::lock_guard<std::mutex> lk(g_mem_mu);
    g_budget = b;
}

static md_status emu_gemm(md_prec prec, const void *x, int ldx, int m, int k, const void *w, const float *bias, int n,
                          void *y, md_bt yt, int accumulate)
{
    if (yt != MD_BT_F32 && yt != md_prec_input(prec))
        return md_cu_failf(MD_ERR_UNSUPPORTED, "emu: gemm %s with %s output is not supported", md_prec_name(prec),
                           md_bt_name(yt));
    if (m == 0)
        return MD_OK;
    if (bias) { /* as cu_gemm: the bias kernel first, then the product with beta = 1 */
        md_status st = md_cu_bias_rows(y, yt, bias, m, n, accumulate);
        if (st != MD_OK)
            return st;
    }
    /* cublasGemmEx's column-major definition, on the arguments backend_cuda.cu passes it:
     * C[i + j ldc] = sum_l op(A)[i, l] op(B)[l, j] (+ C when beta = 1), op(A)[i, l] = A[l + i lda]
     * when transposed, A[i + l lda] when not. Products of the inputs as they are stored, summed
     * in double (the real library sums in F32, with TF32 rounding for MD_PREC_TF32). */
    const md_bt it = md_prec_input(prec);
    const md_gemm_call g = md_gemm_args(x, ldx, m, k, w, n, y);
    const size_t is = md_bt_size(it);
    auto in = [&](const void *p, size_t i) {
        float v;
        md_backend_cpu()->convert((const char *)p + i * is, it, &v, MD_BT_F32, 1);
        return (double)v;
    };
    const bool beta1 = bias || accumulate;
    for (int j = 0; j < g.N; j++)
        for (int i = 0; i < g.M; i++) {
            double s = 0;
            for (int l = 0; l < g.K; l++) {
                double a = g.transa ? in(g.A, (size_t)l + (size_t)i * g.lda) : in(g.A, (size_t)i + (size_t)l * g.lda);
                double b = g.transb ? in(g.B, (size_t)j + (size_t)l * g.ldb) : in(g.B, (size_t)l + (size_t)j * g.ldb);
                s += a * b;
            }
            const size_t ci = (size_t)i + (size_t)j * g.ldc;
            float c = 0;
            if (beta1)
                md_backend_cpu()->convert((const char *)g.C + ci * md_bt_size(yt), yt, &c, MD_BT_F32, 1);
            float v = (float)(s + c);
            md_backend_cpu()->convert(&v, MD_BT_F32, (char *)g.C + ci * md_bt_size(yt), yt, 1);
        }
    return MD_OK;
}

static md_status emu_linear(const float *x, int m, int k, const float *w, const float *b, int n, float *y, int acc)
{
    return emu_gemm(MD_PREC_F32, x, k, m, k, w, b, n, y, MD_BT_F32, acc);
}
static md_status emu_layernorm(const float *x, int rows, int dim, const float *g, const float *b, float eps, float *y)
{
    return md_cu_add_layernorm((float *)x, nullptr, MD_BT_F32, nullptr, rows, dim, g, b, eps, y, MD_BT_F32);
}
static md_status emu_activation(md_op op, float *x, size_t n)
{
    if (op != MD_OP_GELU && op != MD_OP_GELU_TANH && op != MD_OP_QUICK_GELU)
        return MD_ERR_UNSUPPORTED;
    return md_cu_bias_act(op, x, MD_BT_F32, nullptr, n, 1, x, MD_BT_F32);
}
static md_status emu_attention(const float *qkv, int batch, int t, int heads, int hd, int causal, float *out)
{
    return md_cu_attention(qkv, MD_BT_F32, batch, t, heads, hd, causal, out, MD_BT_F32);
}
static md_status emu_bias_act(md_op act, const void *x, md_bt xt, const float *b, int rows, int cols, void *y, md_bt yt)
{
    return md_cu_bias_act(act, x, xt, b, (size_t)rows * cols, cols, y, yt);
}

static md_backend_i make_table(void)
{
    md_backend_i t;
    memset(&t, 0, sizeof t);
    t.name = "emu";
    t.host_memory = 0;
    t.supports = emu_supports;
    t.describe = emu_describe;
    t.last_error = emu_last_error;
    t.linear = emu_linear;
    t.layernorm = emu_layernorm;
    t.activation = emu_activation;
    t.attention = emu_attention;
    t.add = md_cu_add;
    t.l2norm = md_cu_l2norm;
    t.alloc = emu_alloc;
    t.free = emu_free;
    t.upload = emu_copy;
    t.download = emu_copy;
    t.copy = emu_copy;
    t.fill = emu_fill;
    t.synchronize = emu_sync;
    t.mem_info = emu_mem_info;
    t.set_mem_budget = emu_set_budget;
    t.convert = md_cu_convert;
    t.gemm = emu_gemm;
    t.bias_act = emu_bias_act;
    t.add_layernorm = md_cu_add_layernorm;
    t.attention_ex = md_cu_attention;
    t.im2col = md_cu_im2col;
    t.embed_tokens = md_cu_embed_tokens;
    t.preprocess = md_cu_preprocess;
    t.conv1d_silu = md_cu_conv1d_silu;
    t.scan = md_cu_scan;
    t.gate = md_cu_gate;
    t.pool = md_cu_pool;
    t.score = md_cu_score;
    t.topk = md_cu_topk;
    return t;
}
static md_backend_i EMU = make_table();

extern "C" const md_backend_i *md_backend_cuda_emu(void) { return &EMU; }
/* This build has no real CUDA backend. */
extern "C" const md_backend_i *md_backend_cuda(void) { return nullptr; }
extern "C" const char *md_backend_cuda_why(void) { return "an emulator build (tests/gpu/emu): no real CUDA backend"; }
