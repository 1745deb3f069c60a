/* emu_backend.cc - the CUDA backend's kernels on the CPU: the emulator runtime of cuda_emu.h and a
 * backend table ("emu") that runs cuda/kernels_*.cu compiled with -DMD_CUDA_EMU, so that
 * tests/unit/test_backend_ops.c can check every kernel against the CPU reference without a GPU
 * (`make gpu-emu`). Matrix products go to the CPU backend (cuBLAS is not emulated) after the bias
 * kernel, as cu_gemm does; the first-group F32 ops call the same launchers cu_* do, without
 * staging (emulated device memory is host memory). */
#include <stdarg.h>
#include <stdio.h>
#include <ucontext.h>

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

/* One launch. The threads of a block are fibers (ucontext) on the calling thread: each runs until
 * it finishes or waits at a barrier (__syncthreads, or its warp's exchange in a shuffle); a barrier
 * opens when every live thread of its scope waits at it. Deterministic, and a barrier some threads
 * never reach (divergent __syncthreads or shuffle) is reported instead of hanging. */
#define FIBER_STACK ((size_t)64 * 1024)
struct fiber {
    ucontext_t ctx;
    char *stack;
    int done;
    int wait;           /* 0: runnable; 1: at the block barrier; 2: at its warp barrier */
    unsigned long long gen; /* the barrier generation it waits for */
};
struct launch_ctx {
    dim3 grid, block;
    unsigned nthreads;
    std::vector<fiber> f;
    std::vector<float> xchg;
    std::vector<unsigned char> smem;
    const std::function<void()> *body;
    ucontext_t sched;
    unsigned cur_t;
    unsigned long long block_gen;
    std::vector<unsigned long long> warp_gen;
    int broken;
    int used_barrier; /* a thread of an earlier block waited at a barrier */
    int direct;       /* blocks run thread after thread, without fibers */
};
static launch_ctx *cur;

static void yield_to_sched(void) { swapcontext(&cur->f[cur->cur_t].ctx, &cur->sched); }

/* Waits at the barrier of scope KIND (1 block, 2 warp) with the others of that scope. */
static void barrier_wait(int kind)
{
    if (cur->direct) {
        fprintf(stderr, "emu: a barrier in a launch whose first block had none: not emulated\n");
        abort();
    }
    cur->used_barrier = 1;
    fiber &me = cur->f[cur->cur_t];
    me.wait = kind;
    me.gen = kind == 1 ? cur->block_gen : cur->warp_gen[cur->cur_t / 32];
    yield_to_sched();
}

void __syncthreads(void) { barrier_wait(1); }

float md_emu_shfl(float v, int src)
{
    const unsigned t = cur->cur_t, w = t / 32;
    cur->xchg[t] = v;
    barrier_wait(2);
    float r = cur->xchg[w * 32 + src];
    barrier_wait(2);
    return r;
}

void *md_emu_dyn_smem(void) { return cur->smem.data(); }

static void fiber_main(void)
{
    (*cur->body)();
    cur->f[cur->cur_t].done = 1;
    /* returning resumes uc_link: the scheduler */
}

static void set_thread(unsigned t)
{
    cur->cur_t = t;
    threadIdx = md_emu_uint3{t % cur->block.x, t / cur->block.x % cur->block.y, t / (cur->block.x * cur->block.y)};
}

/* The order threads run in between barriers: MD_EMU_ORDER=forward (default), reverse, or
 * shuffle (a permutation per round): a missing __syncthreads shows up as a different result in
 * one of them. */
static unsigned emu_order(unsigned i, unsigned n, unsigned round)
{
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("MD_EMU_ORDER");
        mode = e && strcmp(e, "reverse") == 0 ? 1 : e && strcmp(e, "shuffle") == 0 ? 2 : 0;
    }
    if (mode == 1)
        return n - 1 - i;
    if (mode == 2 && n > 1) {
        /* i -> (a i + b) mod n with a odd and coprime to n: a permutation that changes per round */
        unsigned a = 2 * (round * 7 + 3) + 1;
        while (std::__gcd(a, n) != 1)
            a += 2;
        return (unsigned)(((unsigned long long)a * i + round * 13 + blockIdx.x) % n);
    }
    return i;
}

/* Runs one block to the end; returns 0, or -1 when its threads can never all finish. */
static int run_block(launch_ctx &c)
{
    if (c.direct) { /* no barriers in this kernel (its first block had none): plain calls */
        memset(c.smem.data(), 0xFF, c.smem.size());
        for (unsigned i = 0; i < c.nthreads; i++) {
            set_thread(emu_order(i, c.nthreads, 0));
            (*c.body)();
        }
        return 0;
    }
    for (unsigned t = 0; t < c.nthreads; t++) {
        fiber &fb = c.f[t];
        fb.done = 0;
        fb.wait = 0;
        getcontext(&fb.ctx);
        fb.ctx.uc_stack.ss_sp = fb.stack;
        fb.ctx.uc_stack.ss_size = FIBER_STACK;
        fb.ctx.uc_link = &c.sched;
        makecontext(&fb.ctx, fiber_main, 0);
    }
    memset(c.smem.data(), 0xFF, c.smem.size()); /* uninitialised shared memory reads as NaN */
    for (unsigned round = 0;; round++) {
        int ran = 0;
        for (unsigned i = 0; i < c.nthreads; i++) {
            const unsigned t = emu_order(i, c.nthreads, round);
            fiber &fb = c.f[t];
            if (fb.done || fb.wait)
                continue;
            set_thread(t);
            swapcontext(&c.sched, &fb.ctx);
            ran = 1;
        }
        /* Open the barriers every live thread of the scope waits at. */
        unsigned live = 0, at_block = 0;
        for (unsigned t = 0; t < c.nthreads; t++)
            if (!c.f[t].done) {
                live++;
                at_block += c.f[t].wait == 1;
            }
        if (live == 0)
            return 0;
        int opened = 0;
        if (at_block == live) {
            for (auto &fb : c.f)
                if (!fb.done)
                    fb.wait = 0;
            c.block_gen++;
            opened = 1;
        }
        for (unsigned w = 0; w * 32 < c.nthreads; w++) {
            unsigned lo = w * 32, hi = std::min(c.nthreads, lo + 32), wl = 0, ww = 0;
            for (unsigned t = lo; t < hi; t++)
                if (!c.f[t].done) {
                    wl++;
                    ww += c.f[t].wait == 2;
                }
            if (wl && ww == wl) {
                for (unsigned t = lo; t < hi; t++)
                    if (!c.f[t].done)
                        c.f[t].wait = 0;
                c.warp_gen[w]++;
                opened = 1;
            }
        }
        if (!ran && !opened) {
            fprintf(stderr, "emu: block (%u,%u,%u): %u threads wait at a barrier the others never reach (divergent "
                            "__syncthreads or shuffle)\n",
                    blockIdx.x, blockIdx.y, blockIdx.z, live);
            return -1;
        }
    }
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
    /* One launch at a time (the fibers' globals); launches from several threads take turns. */
    static std::mutex run_mu;
    std::lock_guard<std::mutex> lk(run_mu);
    launch_ctx c;
    c.grid = grid;
    c.block = block;
    c.nthreads = (unsigned)nt;
    c.body = &body;
    c.smem.assign(smem ? smem : 1, 0xFF);
    c.xchg.assign(nt, 0.0f);
    /* The fibers' stacks: one pool, kept from launch to launch (launches take turns). */
    static std::vector<char> stacks;
    if (stacks.size() < nt * FIBER_STACK)
        stacks.resize(nt * FIBER_STACK);
    c.f.resize(nt);
    for (unsigned t = 0; t < nt; t++)
        c.f[t].stack = stacks.data() + (size_t)t * FIBER_STACK;
    c.block_gen = 0;
    c.warp_gen.assign((nt + 31) / 32, 0);
    c.broken = 0;
    c.used_barrier = 0;
    c.direct = 0;
    launch_ctx *saved = cur;
    cur = &c;
    blockDim = block;
    gridDim = grid;
    for (unsigned z = 0; z < grid.z && !c.broken; z++)
        for (unsigned y = 0; y < grid.y && !c.broken; y++)
            for (unsigned x = 0; x < grid.x && !c.broken; x++) {
                blockIdx = md_emu_uint3{x, y, z};
                if (run_block(c) != 0) {
                    c.broken = 1;
                    last_err = cudaErrorInvalidValue;
                }
                /* After the first block: a kernel that never waited runs the rest directly (each
                 * switch of ucontext costs a system call). */
                c.direct = !c.used_barrier;
            }
    cur = saved;
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
    /* The stored inputs widened to float, as far as the call reads them. */
    auto widen = [&](const void *p, size_t count) {
        std::vector<float> v(count);
        md_backend_cpu()->convert(p, it, v.data(), MD_BT_F32, count);
        return v;
    };
    const size_t na = g.transa ? (size_t)(g.M - 1) * g.lda + g.K : (size_t)(g.K - 1) * g.lda + g.M;
    const size_t nb = g.transb ? (size_t)(g.K - 1) * g.ldb + g.N : (size_t)(g.N - 1) * g.ldb + g.K;
    const std::vector<float> A = widen(g.A, na), B = widen(g.B, nb);
    const bool beta1 = bias || accumulate;
    const size_t ys = md_bt_size(yt);
    for (int j = 0; j < g.N; j++)
        for (int i = 0; i < g.M; i++) {
            double s = 0;
            for (int l = 0; l < g.K; l++) {
                double a = g.transa ? A[(size_t)l + (size_t)i * g.lda] : A[(size_t)i + (size_t)l * g.lda];
                double b = g.transb ? B[(size_t)j + (size_t)l * g.ldb] : B[(size_t)l + (size_t)j * g.ldb];
                s += a * b;
            }
            const size_t ci = (size_t)i + (size_t)j * g.ldc;
            float c = 0;
            if (beta1)
                md_backend_cpu()->convert((const char *)g.C + ci * ys, yt, &c, MD_BT_F32, 1);
            float v = (float)(s + c);
            md_backend_cpu()->convert(&v, MD_BT_F32, (char *)g.C + ci * ys, yt, 1);
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
    return md_cu_attention(qkv, MD_BT_F32, nullptr, batch, t, heads, hd, causal, out, MD_BT_F32);
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
