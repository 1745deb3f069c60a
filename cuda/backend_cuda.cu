/* backend_cuda.cu - the CUDA backend: device discovery, memory (with the --gpu-mem budget), the
 * per-thread stream and error message, matrix products through cuBLAS, the op table. The kernels
 * live beside it (kernels_*.cu, see cuda_internal.h).
 *
 * Built only when nvcc is present. md_backend_cuda() returns NULL at run time without a device,
 * without cuBLAS or when this build's machine code does not run on the device, so the daemon
 * falls back to the CPU.
 *
 * cuBLAS is loaded with dlopen (libcublas.so.<major> of the toolkit built against) rather than
 * linked: with the static CUDA runtime, the same binary starts on machines that have no CUDA
 * libraries at all. Search order: $MD_CUBLAS_LIB, the dynamic loader's path, the toolkit's lib64
 * seen at build time, /usr/local/cuda/lib64.
 *
 * Streams. Each host thread gets its own non-blocking stream and cuBLAS handle on first use
 * (thread_local), so threads never wait for each other's work and a thread's ops run in order.
 * Errors are per thread too: every failure returns a status and leaves "cuda: <op>: <why>" in
 * last_error(). A sticky CUDA error (an illegal address: a bug) makes every later call fail with
 * a message; nothing aborts. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <mutex>
#include <unordered_map>

#include <cublas_v2.h>

#include "cuda_internal.h"

#ifndef MD_CUDA_HOME
#define MD_CUDA_HOME "/usr/local/cuda"
#endif
#define STR2(x) #x
#define STR(x) STR2(x)

/* ---------------------------------------------------------------- per-thread state */

struct tls_state {
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    int tried = 0;
    char err[512] = "";
    ~tls_state();
};
static thread_local tls_state tls;

static const char *cuda_last_error(void) { return tls.err; }

md_status md_cu_failf(md_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls.err, sizeof tls.err, fmt, ap);
    va_end(ap);
    return st;
}

md_status md_cu_fail(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return MD_OK;
    if (e == cudaErrorMemoryAllocation) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        return md_cu_failf(MD_ERR_NOMEM, "cuda: %s: out of device memory (%zu of %zu MiB free)", what, fr >> 20,
                           tot >> 20);
    }
    return md_cu_failf(MD_ERR_UNAVAILABLE, "cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

md_status md_cu_check(const char *what) { return md_cu_fail(cudaGetLastError(), what); }

cudaStream_t md_cu_stream(void)
{
    if (!tls.stream && !tls.tried) {
        tls.tried = 1;
        cudaError_t e = cudaStreamCreateWithFlags(&tls.stream, cudaStreamNonBlocking);
        if (e != cudaSuccess) {
            tls.stream = nullptr;
            md_cu_fail(e, "creating the thread's stream");
        }
    }
    return tls.stream;
}

/* ---------------------------------------------------------------- cuBLAS, loaded at run time */

static struct {
    void *lib;
    decltype(&cublasCreate_v2) create;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSetStream_v2) set_stream;
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                              const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
    decltype(&cublasGetStatusString) status_string;
} blas;

static int load_cublas(char *why, size_t len)
{
    const char *soname = "libcublas.so." STR(CUBLAS_VER_MAJOR);
    char paths[4][512];
    int np = 0;
    const char *env = getenv("MD_CUBLAS_LIB");
    if (env && env[0])
        snprintf(paths[np++], sizeof paths[0], "%s", env);
    snprintf(paths[np++], sizeof paths[0], "%s", soname);
    snprintf(paths[np++], sizeof paths[0], "%s/lib64/%s", MD_CUDA_HOME, soname);
    snprintf(paths[np++], sizeof paths[0], "/usr/local/cuda/lib64/%s", soname);
    const char *first_err = NULL;
    char errbuf[256] = "";
    for (int i = 0; i < np && !blas.lib; i++) {
        blas.lib = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
        if (!blas.lib && !first_err) {
            const char *e = dlerror();
            snprintf(errbuf, sizeof errbuf, "%.200s", e ? e : paths[i]);
            first_err = errbuf;
        }
    }
    if (!blas.lib) {
        snprintf(why, len, "cuBLAS could not be loaded (%s; set MD_CUBLAS_LIB or LD_LIBRARY_PATH)", errbuf);
        return -1;
    }
#define SYM(field, name)                                                                                     \
    do {                                                                                                     \
        *(void **)&blas.field = dlsym(blas.lib, name);                                                       \
        if (!blas.field) {                                                                                   \
            snprintf(why, len, "cuBLAS lacks %s", name);                                                     \
            return -1;                                                                                       \
        }                                                                                                    \
    } while (0)
    SYM(create, "cublasCreate_v2");
    SYM(destroy, "cublasDestroy_v2");
    SYM(set_stream, "cublasSetStream_v2");
    SYM(gemm_ex, "cublasGemmEx");
    SYM(status_string, "cublasGetStatusString");
#undef SYM
    return 0;
}

tls_state::~tls_state()
{
    /* At process exit the runtime may be gone already; the results do not matter then. */
    if (blas && ::blas.destroy)
        ::blas.destroy(blas);
    if (stream)
        cudaStreamDestroy(stream);
}

static cublasHandle_t blas_handle(void)
{
    if (tls.blas)
        return tls.blas;
    cudaStream_t s = md_cu_stream();
    if (!s)
        return nullptr;
    cublasHandle_t h = nullptr;
    cublasStatus_t st = blas.create(&h);
    if (st != CUBLAS_STATUS_SUCCESS) {
        md_cu_failf(st == CUBLAS_STATUS_ALLOC_FAILED ? MD_ERR_NOMEM : MD_ERR_UNAVAILABLE, "cuda: cublasCreate: %s",
                    blas.status_string(st));
        return nullptr;
    }
    blas.set_stream(h, s);
    tls.blas = h;
    return h;
}

/* ---------------------------------------------------------------- discovery */

static std::once_flag init_once;
static int g_ok;
static char g_why[512] = "";
static cudaDeviceProp g_prop;

__global__ void probe_kernel(int *p) { *p = 42; }

static void init(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(g_why, sizeof g_why, "no CUDA device was found (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError();
        return;
    }
    if ((e = cudaGetDeviceProperties(&g_prop, 0)) != cudaSuccess) {
        snprintf(g_why, sizeof g_why, "CUDA device 0: %s", cudaGetErrorString(e));
        return;
    }
    if (load_cublas(g_why, sizeof g_why) != 0)
        return;
    /* This build carries machine code for sm_80 and sm_90 (and PTX for newer devices): make sure a
     * kernel actually runs here before offering the backend. */
    int *d = nullptr, h = 0;
    if ((e = cudaMalloc(&d, sizeof *d)) == cudaSuccess) {
        probe_kernel<<<1, 1>>>(d);
        if ((e = cudaGetLastError()) == cudaSuccess)
            e = cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost);
        cudaFree(d);
    }
    if (e != cudaSuccess || h != 42) {
        snprintf(g_why, sizeof g_why, "a test kernel did not run on %s (sm_%d%d): %s", g_prop.name, g_prop.major,
                 g_prop.minor, e != cudaSuccess ? cudaGetErrorString(e) : "wrong result");
        cudaGetLastError();
        return;
    }
    g_ok = 1;
}

/* ---------------------------------------------------------------- memory and the budget */

static std::atomic<size_t> g_used{0}, g_budget{0};
static std::mutex g_sizes_mu;
static std::unordered_map<void *, size_t> g_sizes;

/* Takes BYTES from the budget; MD_ERR_NOMEM with a message when it has no room. */
static md_status reserve(size_t bytes, const char *what)
{
    size_t budget = g_budget.load();
    size_t used = g_used.fetch_add(bytes) + bytes;
    if (budget && used > budget) {
        g_used.fetch_sub(bytes);
        return md_cu_failf(MD_ERR_NOMEM,
                           "cuda: %s: %.1f MiB requested but %.1f of the %.1f MiB GPU memory budget (gpu_mem) are in use",
                           what, bytes / 1048576.0, (used - bytes) / 1048576.0, budget / 1048576.0);
    }
    return MD_OK;
}

static md_status cu_alloc(size_t bytes, void **out)
{
    *out = nullptr;
    if (bytes == 0)
        return MD_OK;
    md_status st = reserve(bytes, "alloc");
    if (st != MD_OK)
        return st;
    cudaError_t e = cudaMalloc(out, bytes);
    if (e != cudaSuccess) {
        g_used.fetch_sub(bytes);
        *out = nullptr;
        char what[64];
        snprintf(what, sizeof what, "cudaMalloc of %.1f MiB", bytes / 1048576.0);
        return md_cu_fail(e, what);
    }
    std::lock_guard<std::mutex> lk(g_sizes_mu);
    g_sizes[*out] = bytes;
    return MD_OK;
}

static void cu_free(void *p)
{
    if (!p)
        return;
    size_t bytes = 0;
    {
        std::lock_guard<std::mutex> lk(g_sizes_mu);
        auto it = g_sizes.find(p);
        if (it != g_sizes.end()) {
            bytes = it->second;
            g_sizes.erase(it);
        }
    }
    /* cudaFree waits for the device, so no stream still uses P. */
    cudaFree(p);
    g_used.fetch_sub(bytes);
}

md_status md_cu_scratch(size_t bytes, void **out, const char *what)
{
    *out = nullptr;
    if (bytes == 0)
        return MD_OK;
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    md_status st = reserve(bytes, what);
    if (st != MD_OK)
        return st;
    cudaError_t e = cudaMallocAsync(out, bytes, s);
    if (e != cudaSuccess) {
        g_used.fetch_sub(bytes);
        *out = nullptr;
        return md_cu_fail(e, what);
    }
    return MD_OK;
}

void md_cu_scratch_free(void *p, size_t bytes)
{
    if (!p)
        return;
    cudaFreeAsync(p, md_cu_stream());
    g_used.fetch_sub(bytes);
}

static md_status cu_upload(void *dst, const void *src, size_t bytes)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    if (!bytes)
        return MD_OK;
    /* Synchronous for the caller: SRC may be reused (or freed) as soon as this returns. */
    md_status st = md_cu_fail(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s), "upload");
    return st != MD_OK ? st : md_cu_fail(cudaStreamSynchronize(s), "upload");
}

static md_status cu_download(void *dst, const void *src, size_t bytes)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    md_status st = bytes ? md_cu_fail(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), "download") : MD_OK;
    return st != MD_OK ? st : md_cu_fail(cudaStreamSynchronize(s), "download");
}

static md_status cu_copy(void *dst, const void *src, size_t bytes)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    return bytes ? md_cu_fail(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "copy") : MD_OK;
}

static md_status cu_fill(void *dst, int byte, size_t bytes)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    return bytes ? md_cu_fail(cudaMemsetAsync(dst, byte, bytes, s), "fill") : MD_OK;
}

static md_status cu_synchronize(void)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    return md_cu_fail(cudaStreamSynchronize(s), "synchronize");
}

static md_status cu_mem_info(size_t *used, size_t *avail)
{
    size_t fr = 0, tot = 0;
    cudaError_t e = cudaMemGetInfo(&fr, &tot);
    if (e != cudaSuccess)
        return md_cu_fail(e, "cudaMemGetInfo");
    size_t u = g_used.load(), b = g_budget.load();
    if (used)
        *used = u;
    if (avail) {
        size_t a = fr;
        if (b)
            a = u < b ? (b - u < a ? b - u : a) : 0;
        *avail = a;
    }
    return MD_OK;
}

static void cu_set_mem_budget(size_t bytes) { g_budget.store(bytes); }

/* ---------------------------------------------------------------- matrix products */

static cudaDataType cuda_type(md_bt t) { return t == MD_BT_F16 ? CUDA_R_16F : t == MD_BT_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

static md_status cu_gemm(md_prec prec, const void *x, int ldx, int m, int k, const void *w, const float *bias, int n,
                         void *y, md_bt yt, int accumulate)
{
    if (m == 0)
        return MD_OK;
    const md_bt it = md_prec_input(prec);
    if (yt != MD_BT_F32 && yt != it)
        return md_cu_failf(MD_ERR_UNSUPPORTED, "cuda: gemm %s with %s output is not supported", md_prec_name(prec),
                           md_bt_name(yt));
    cublasHandle_t h = blas_handle();
    if (!h)
        return MD_ERR_UNAVAILABLE;
    float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (bias) {
        /* The bias goes into y first, then the product adds to it (beta = 1). */
        md_status st = md_cu_bias_rows(y, yt, bias, m, n, accumulate);
        if (st != MD_OK)
            return st;
        beta = 1.0f;
    }
    /* Row-major y[m,n] = x[m,k] . w[n,k]^T is column-major y^T[n,m] = w^T[k,n]^T . x^T[k,m]. */
    cublasComputeType_t ct = prec == MD_PREC_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const md_gemm_call g = md_gemm_args(x, ldx, m, k, w, n, y);
    cublasStatus_t st = blas.gemm_ex(h, g.transa ? CUBLAS_OP_T : CUBLAS_OP_N, g.transb ? CUBLAS_OP_T : CUBLAS_OP_N, g.M,
                                     g.N, g.K, &alpha, g.A, cuda_type(it), g.lda, g.B, cuda_type(it), g.ldb, &beta,
                                     g.C, cuda_type(yt), g.ldc, ct, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return md_cu_failf(st == CUBLAS_STATUS_ALLOC_FAILED ? MD_ERR_NOMEM : MD_ERR_UNAVAILABLE,
                           "cuda: cublasGemmEx %s [%d x %d] . [%d x %d]^T: %s", md_prec_name(prec), m, k, n, k,
                           blas.status_string(st));
    return MD_OK;
}

/* ---------------------------------------------------------------- the F32 ops, host pointers staged */

static int is_device(const void *p)
{
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

/* Maps the arguments of one call to device memory: device pointers pass through, host ones are
 * copied in (IN) and back out (OUT) around the call. The same host pointer maps to one copy. */
struct stager {
    struct ent {
        const void *host;
        void *dev;
        size_t bytes;
        int out;
    } e[6];
    int n = 0;
    md_status st = MD_OK;

    void *map(const void *p, size_t bytes, int in, int out)
    {
        if (!p || st != MD_OK)
            return (void *)p;
        for (int i = 0; i < n; i++)
            if (e[i].host == p) {
                e[i].out |= out;
                return e[i].dev;
            }
        if (is_device(p))
            return (void *)p;
        ent &x = e[n];
        if ((st = md_cu_scratch(bytes, &x.dev, "staging host memory")) != MD_OK)
            return nullptr;
        x.host = p;
        x.bytes = bytes;
        x.out = out;
        n++;
        if (in)
            st = md_cu_fail(cudaMemcpyAsync(x.dev, p, bytes, cudaMemcpyHostToDevice, md_cu_stream()), "staging");
        return x.dev;
    }
    md_status finish(md_status rc)
    {
        if (rc == MD_OK)
            rc = st;
        for (int i = 0; i < n && rc == MD_OK; i++)
            if (e[i].out)
                rc = md_cu_fail(cudaMemcpyAsync((void *)e[i].host, e[i].dev, e[i].bytes, cudaMemcpyDeviceToHost,
                                                md_cu_stream()),
                                "staging");
        if (n) {
            md_status s2 = md_cu_fail(cudaStreamSynchronize(md_cu_stream()), "staging");
            if (rc == MD_OK)
                rc = s2;
        }
        for (int i = 0; i < n; i++)
            md_cu_scratch_free(e[i].dev, e[i].bytes);
        n = 0;
        return rc;
    }
};

static md_status cu_linear(const float *x, int m, int k, const float *w, const float *b, int n, float *y,
                           int accumulate)
{
    if (m == 0)
        return MD_OK;
    stager sg;
    const void *dx = sg.map(x, (size_t)m * k * 4, 1, 0), *dw = sg.map(w, (size_t)n * k * 4, 1, 0);
    const float *db = (const float *)sg.map(b, (size_t)n * 4, 1, 0);
    void *dy = sg.map(y, (size_t)m * n * 4, accumulate, 1);
    md_status rc = sg.st == MD_OK ? cu_gemm(MD_PREC_F32, dx, k, m, k, dw, db, n, dy, MD_BT_F32, accumulate) : sg.st;
    return sg.finish(rc);
}

static md_status cu_layernorm(const float *x, int rows, int dim, const float *g, const float *b, float eps, float *y)
{
    stager sg;
    size_t bytes = (size_t)rows * dim * 4;
    float *dx = (float *)sg.map(x, bytes, 1, 0);
    const float *dg = (const float *)sg.map(g, (size_t)dim * 4, 1, 0), *db = (const float *)sg.map(b, (size_t)dim * 4, 1, 0);
    void *dy = sg.map(y, bytes, 0, 1);
    md_status rc = sg.st == MD_OK ? md_cu_add_layernorm(dx, nullptr, MD_BT_F32, nullptr, rows, dim, dg, db, eps, dy,
                                                        MD_BT_F32)
                                  : sg.st;
    return sg.finish(rc);
}

static md_status cu_activation(md_op op, float *x, size_t n)
{
    if (op != MD_OP_GELU && op != MD_OP_GELU_TANH && op != MD_OP_QUICK_GELU)
        return md_cu_failf(MD_ERR_UNSUPPORTED, "cuda: activation %s is not supported", md_op_name(op));
    stager sg;
    void *dx = sg.map(x, n * 4, 1, 1);
    md_status rc = sg.st == MD_OK ? md_cu_bias_act(op, dx, MD_BT_F32, nullptr, n, 1, dx, MD_BT_F32) : sg.st;
    return sg.finish(rc);
}

static md_status cu_attention(const float *qkv, int batch, int t, int heads, int hd, int causal, float *out)
{
    stager sg;
    size_t rows = (size_t)batch * t, d = (size_t)heads * hd;
    const void *dq = sg.map(qkv, rows * 3 * d * 4, 1, 0);
    void *dout = sg.map(out, rows * d * 4, 0, 1);
    md_status rc = sg.st == MD_OK ? md_cu_attention(dq, MD_BT_F32, nullptr, batch, t, heads, hd, causal, dout, MD_BT_F32) : sg.st;
    return sg.finish(rc);
}

static md_status cu_add(float *y, const float *x, size_t n)
{
    stager sg;
    float *dy = (float *)sg.map(y, n * 4, 1, 1);
    const float *dx = (const float *)sg.map(x, n * 4, 1, 0);
    md_status rc = sg.st == MD_OK ? md_cu_add(dy, dx, n) : sg.st;
    return sg.finish(rc);
}

static md_status cu_l2norm(float *y, int rows, int dim)
{
    stager sg;
    float *dy = (float *)sg.map(y, (size_t)rows * dim * 4, 1, 1);
    md_status rc = sg.st == MD_OK ? md_cu_l2norm(dy, rows, dim) : sg.st;
    return sg.finish(rc);
}

/* ---------------------------------------------------------------- the table */

static int cu_supports(md_op op) { return g_ok && op > MD_OP_NONE && op < MD_OP_COUNT; }

static md_status cu_describe(char *buf, size_t len)
{
    if (!g_ok)
        return MD_ERR_UNAVAILABLE;
    snprintf(buf, len, "%s, %.0f GiB, sm_%d%d, %d SMs", g_prop.name, g_prop.totalGlobalMem / 1073741824.0,
             g_prop.major, g_prop.minor, g_prop.multiProcessorCount);
    return MD_OK;
}

static md_backend_i make_table(void)
{
    md_backend_i t;
    memset(&t, 0, sizeof t);
    t.name = "cuda";
    t.host_memory = 0;
    t.supports = cu_supports;
    t.describe = cu_describe;
    t.last_error = cuda_last_error;
    t.linear = cu_linear;
    t.layernorm = cu_layernorm;
    t.activation = cu_activation;
    t.attention = cu_attention;
    t.add = cu_add;
    t.l2norm = cu_l2norm;
    t.alloc = cu_alloc;
    t.free = cu_free;
    t.upload = cu_upload;
    t.download = cu_download;
    t.copy = cu_copy;
    t.fill = cu_fill;
    t.synchronize = cu_synchronize;
    t.mem_info = cu_mem_info;
    t.set_mem_budget = cu_set_mem_budget;
    t.convert = md_cu_convert;
    t.gemm = cu_gemm;
    t.bias_act = [](md_op act, const void *x, md_bt xt, const float *b, int rows, int cols, void *y, md_bt yt) {
        return md_cu_bias_act(act, x, xt, b, (size_t)rows * cols, cols, y, yt);
    };
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

static md_backend_i CUDA_BACKEND = make_table();

extern "C" const md_backend_i *md_backend_cuda(void)
{
    std::call_once(init_once, init);
    return g_ok ? &CUDA_BACKEND : nullptr;
}

extern "C" const char *md_backend_cuda_why(void)
{
    std::call_once(init_once, init);
    return g_ok ? "" : g_why;
}
