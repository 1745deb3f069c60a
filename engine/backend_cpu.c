/* backend_cpu.c - the CPU backend (the reference) and backend selection.
 *
 * Matrix products go through OpenBLAS (cblas_sgemm), which parallelises them on its own thread
 * pool; the element-wise ops are plain loops that the compiler vectorises. Attention runs two
 * small sgemm calls per sequence and head, so its cost stays with BLAS too.
 *
 * The device-path ops (backend.h's second group) are written for clarity, not speed: they are
 * what the CUDA kernels are checked against (tests/unit/test_backend_ops.c), and what lets the
 * device path of the CLIP towers run, and be tested, without a GPU. Their references are the
 * project's own: md_image_preprocess for preprocessing, the loops of mamba.c for the Mamba
 * steps (the scan is md_mamba_selective_scan_ref's, with its neighbours fused). Half-precision
 * inputs are widened to F32 exactly, so an F16 product here is the exact product of the rounded
 * inputs accumulated in F32, which is what tensor cores compute. */
#define _POSIX_C_SOURCE 200809L
#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "../base/half.h"
#include "../base/image.h"
#include "backend.h"

static const char *const OP_NAMES[MD_OP_COUNT] = {
    [MD_OP_NONE] = "none",
    [MD_OP_LINEAR] = "linear",
    [MD_OP_LAYERNORM] = "layernorm",
    [MD_OP_GELU] = "gelu",
    [MD_OP_GELU_TANH] = "gelu_tanh",
    [MD_OP_QUICK_GELU] = "quick_gelu",
    [MD_OP_ATTENTION] = "attention",
    [MD_OP_ADD] = "add",
    [MD_OP_L2NORM] = "l2norm",
    [MD_OP_MEMORY] = "memory",
    [MD_OP_CONVERT] = "convert",
    [MD_OP_GEMM] = "gemm_f32",
    [MD_OP_GEMM_TF32] = "gemm_tf32",
    [MD_OP_GEMM_F16] = "gemm_f16",
    [MD_OP_GEMM_BF16] = "gemm_bf16",
    [MD_OP_BIAS_ACT] = "bias_act",
    [MD_OP_ADD_LAYERNORM] = "add_layernorm",
    [MD_OP_ATTENTION_EX] = "attention_ex",
    [MD_OP_PATCH_EMBED] = "patch_embed",
    [MD_OP_EMBED_TOKENS] = "embed_tokens",
    [MD_OP_PREPROCESS] = "preprocess",
    [MD_OP_CONV1D_SILU] = "conv1d_silu",
    [MD_OP_SCAN] = "selective_scan",
    [MD_OP_GATE] = "gate",
    [MD_OP_POOL] = "pool",
    [MD_OP_SCORE] = "score",
    [MD_OP_TOPK] = "topk",
};

const char *md_op_name(md_op op) { return op >= 0 && op < MD_OP_COUNT && OP_NAMES[op] ? OP_NAMES[op] : "?"; }

size_t md_bt_size(md_bt t) { return t == MD_BT_F32 ? 4 : 2; }
const char *md_bt_name(md_bt t) { return t == MD_BT_F32 ? "f32" : t == MD_BT_F16 ? "f16" : "bf16"; }
md_bt md_prec_input(md_prec p) { return p == MD_PREC_F16 ? MD_BT_F16 : p == MD_PREC_BF16 ? MD_BT_BF16 : MD_BT_F32; }
md_op md_prec_op(md_prec p)
{
    static const md_op ops[] = {MD_OP_GEMM, MD_OP_GEMM_TF32, MD_OP_GEMM_F16, MD_OP_GEMM_BF16};
    return ops[p];
}
const char *md_prec_name(md_prec p)
{
    static const char *const names[] = {"f32", "tf32", "f16", "bf16"};
    return names[p];
}
md_status md_prec_parse(const char *s, md_prec *out)
{
    for (int p = MD_PREC_F32; p <= MD_PREC_BF16; p++)
        if (s && strcmp(s, md_prec_name((md_prec)p)) == 0) {
            *out = (md_prec)p;
            return MD_OK;
        }
    return MD_ERR_INVALID;
}

static _Thread_local char cpu_err[256];
static const char *cpu_last_error(void) { return cpu_err; }

static int cpu_supports(md_op op) { return op > MD_OP_NONE && op < MD_OP_COUNT; }

static md_status cpu_describe(char *buf, size_t len)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(buf, len, "CPU, %ld cores, OpenBLAS %d threads (%s)", n, openblas_get_num_threads(),
             openblas_get_corename());
    return MD_OK;
}

/* ---------------------------------------------------------------- typed element access */

static inline float ld_el(const void *p, md_bt t, size_t i)
{
    switch (t) {
    case MD_BT_F16: return md_f16_to_f32(((const uint16_t *)p)[i]);
    case MD_BT_BF16: return md_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static inline void st_el(void *p, md_bt t, size_t i, float v)
{
    switch (t) {
    case MD_BT_F16: ((uint16_t *)p)[i] = md_f32_to_f16(v); break;
    case MD_BT_BF16: ((uint16_t *)p)[i] = md_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v;
    }
}

/* A float copy of ROWS x COLS elements of type T (rows LD elements apart), dense; NULL when out
 * of memory. */
static float *widen(const void *x, md_bt t, size_t rows, size_t cols, size_t ld)
{
    float *f = malloc(rows * cols * sizeof *f + 1);
    if (!f)
        return NULL;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++)
            f[r * cols + c] = ld_el(x, t, r * ld + c);
    return f;
}

static md_status nomem(const char *what, size_t bytes)
{
    snprintf(cpu_err, sizeof cpu_err, "cpu: %s: out of memory (%zu bytes)", what, bytes);
    return MD_ERR_NOMEM;
}

/* ---------------------------------------------------------------- the F32 ops */

/* y[m,n] (+)= x[m,k] . w[n,k]^T + b: bias first, then one sgemm with beta = 1, so y is
 * passed over once. LDX is x's row stride. */
static void sgemm_bias(const float *x, int ldx, int m, int k, const float *w, const float *b, int n, float *y,
                       int accumulate)
{
    if (b)
        for (int i = 0; i < m; i++) {
            float *r = y + (size_t)i * n;
            if (accumulate)
                for (int j = 0; j < n; j++)
                    r[j] += b[j];
            else
                memcpy(r, b, (size_t)n * sizeof *r);
        }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, ldx, w, k,
                (b || accumulate) ? 1.0f : 0.0f, y, n);
}

static md_status cpu_linear(const float *x, int m, int k, const float *w, const float *b, int n, float *y,
                            int accumulate)
{
    assert(m >= 0 && k > 0 && n > 0);
    if (m == 0)
        return MD_OK;
    sgemm_bias(x, k, m, k, w, b, n, y, accumulate);
    return MD_OK;
}

static md_status cpu_layernorm(const float *x, int rows, int dim, const float *g, const float *b, float eps,
                               float *y)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double s = 0, ss = 0;
        for (int i = 0; i < dim; i++)
            s += xr[i];
        double mean = s / dim;
        for (int i = 0; i < dim; i++) {
            double d = xr[i] - mean;
            ss += d * d;
        }
        float inv = (float)(1.0 / sqrt(ss / dim + eps)), mf = (float)mean;
        for (int i = 0; i < dim; i++)
            yr[i] = (xr[i] - mf) * inv * g[i] + b[i];
    }
    return MD_OK;
}

static inline float act1(md_op op, float v)
{
    switch (op) {
    case MD_OP_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case MD_OP_GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case MD_OP_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
    default: return v;
    }
}

static md_status cpu_activation(md_op op, float *x, size_t n)
{
    if (op != MD_OP_GELU && op != MD_OP_GELU_TANH && op != MD_OP_QUICK_GELU)
        return MD_ERR_UNSUPPORTED;
    for (size_t i = 0; i < n; i++)
        x[i] = act1(op, x[i]);
    return MD_OK;
}

static md_status cpu_attention(const float *qkv, int batch, int t, int heads, int hd, int causal, float *out)
{
    const int d = heads * hd, ld = 3 * d;
    const float scale = 1.0f / sqrtf((float)hd);
    float *s = malloc((size_t)t * t * sizeof *s);
    if (!s)
        return nomem("attention", (size_t)t * t * sizeof *s);
    for (int bi = 0; bi < batch; bi++) {
        const float *base = qkv + (size_t)bi * t * ld;
        for (int h = 0; h < heads; h++) {
            const float *q = base + h * hd, *k = base + d + h * hd, *v = base + 2 * d + h * hd;
            /* s = scale * q k^T   [t, t] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, t, hd, scale, q, ld, k, ld, 0.0f, s, t);
            for (int i = 0; i < t; i++) {
                float *r = s + (size_t)i * t;
                int nk = causal ? i + 1 : t;
                float mx = r[0];
                for (int j = 1; j < nk; j++)
                    mx = r[j] > mx ? r[j] : mx;
                float sum = 0;
                for (int j = 0; j < nk; j++) {
                    r[j] = expf(r[j] - mx);
                    sum += r[j];
                }
                float inv = 1.0f / sum;
                for (int j = 0; j < nk; j++)
                    r[j] *= inv;
                for (int j = nk; j < t; j++)
                    r[j] = 0.0f;
            }
            /* out_h = s v   [t, hd], written into its head's columns of OUT */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, hd, t, 1.0f, s, t, v, ld, 0.0f,
                        out + (size_t)bi * t * d + h * hd, d);
        }
    }
    free(s);
    return MD_OK;
}

static md_status cpu_add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
    return MD_OK;
}

static md_status cpu_l2norm(float *y, int rows, int dim)
{
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * dim;
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)yr[i] * yr[i];
        if (ss > 0) {
            float inv = (float)(1.0 / sqrt(ss));
            for (int i = 0; i < dim; i++)
                yr[i] *= inv;
        }
    }
    return MD_OK;
}

/* ---------------------------------------------------------------- memory */

/* Each block carries its size in a 64-byte header, for the budget's accounting. */
#define HDR 64
static atomic_size_t cpu_used, cpu_budget;

static md_status cpu_alloc(size_t bytes, void **out)
{
    *out = NULL;
    if (bytes == 0)
        return MD_OK;
    size_t budget = atomic_load(&cpu_budget), used = atomic_load(&cpu_used);
    if (budget && (bytes > budget || used > budget - bytes)) {
        snprintf(cpu_err, sizeof cpu_err, "cpu: %.2f MiB requested, %.2f of the %.2f MiB budget in use",
                 bytes / 1048576.0, used / 1048576.0, budget / 1048576.0);
        return MD_ERR_NOMEM;
    }
    size_t total = (bytes + HDR + 63) / 64 * 64;
    if (total < bytes)
        return nomem("alloc", bytes);
    unsigned char *p = aligned_alloc(64, total);
    if (!p)
        return nomem("alloc", bytes);
    memcpy(p, &bytes, sizeof bytes);
    atomic_fetch_add(&cpu_used, bytes);
    *out = p + HDR;
    return MD_OK;
}

static void cpu_free(void *p)
{
    if (!p)
        return;
    unsigned char *b = (unsigned char *)p - HDR;
    size_t bytes;
    memcpy(&bytes, b, sizeof bytes);
    atomic_fetch_sub(&cpu_used, bytes);
    free(b);
}

static md_status cpu_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes)
        memmove(dst, src, bytes);
    return MD_OK;
}

static md_status cpu_fill(void *dst, int byte, size_t bytes)
{
    if (bytes)
        memset(dst, byte, bytes);
    return MD_OK;
}

static md_status cpu_synchronize(void) { return MD_OK; }

static md_status cpu_mem_info(size_t *used, size_t *avail)
{
    size_t u = atomic_load(&cpu_used), b = atomic_load(&cpu_budget);
    if (used)
        *used = u;
    if (avail)
        *avail = b ? (u < b ? b - u : 0) : SIZE_MAX;
    return MD_OK;
}

static void cpu_set_mem_budget(size_t bytes) { atomic_store(&cpu_budget, bytes); }

/* ---------------------------------------------------------------- the device-path ops */

static md_status cpu_convert(const void *x, md_bt xt, void *y, md_bt yt, size_t n)
{
    if (xt == yt)
        return cpu_copy(y, x, n * md_bt_size(xt));
    for (size_t i = 0; i < n; i++)
        st_el(y, yt, i, ld_el(x, xt, i));
    return MD_OK;
}

static md_status cpu_gemm(md_prec prec, const void *x, int ldx, int m, int k, const void *w, const float *bias,
                          int n, void *y, md_bt yt, int accumulate)
{
    assert(m >= 0 && k > 0 && n > 0 && ldx >= k);
    if (m == 0)
        return MD_OK;
    const md_bt it = md_prec_input(prec);
    float *xf = NULL, *wf = NULL, *yf = NULL;
    md_status st = MD_OK;
    const float *xp = x, *wp = w;
    int lx = ldx;
    if (it != MD_BT_F32) {
        xf = widen(x, it, (size_t)m, (size_t)k, (size_t)ldx);
        wf = widen(w, it, (size_t)n, (size_t)k, (size_t)k);
        if (!xf || !wf) {
            st = nomem("gemm", ((size_t)m + n) * k * sizeof(float));
            goto out;
        }
        xp = xf;
        wp = wf;
        lx = k;
    }
    float *yp = y;
    if (yt != MD_BT_F32) {
        if (!(yf = accumulate ? widen(y, yt, (size_t)m, (size_t)n, (size_t)n) : malloc((size_t)m * n * sizeof *yf))) {
            st = nomem("gemm", (size_t)m * n * sizeof *yf);
            goto out;
        }
        yp = yf;
    }
    /* The same arithmetic as cpu_linear, so F32 matches it bit for bit. */
    sgemm_bias(xp, lx, m, k, wp, bias, n, yp, accumulate);
    if (yf)
        cpu_convert(yf, MD_BT_F32, y, yt, (size_t)m * n);
out:
    free(xf);
    free(wf);
    free(yf);
    return st;
}

static md_status cpu_bias_act(md_op act, const void *x, md_bt xt, const float *b, int rows, int cols, void *y,
                              md_bt yt)
{
    if (act != MD_OP_NONE && act != MD_OP_GELU && act != MD_OP_GELU_TANH && act != MD_OP_QUICK_GELU)
        return MD_ERR_UNSUPPORTED;
    for (size_t r = 0; r < (size_t)rows; r++)
        for (size_t c = 0; c < (size_t)cols; c++) {
            size_t i = r * cols + c;
            float v = ld_el(x, xt, i);
            if (b)
                v += b[c];
            st_el(y, yt, i, act1(act, v));
        }
    return MD_OK;
}

static md_status cpu_add_layernorm(float *x, const void *r, md_bt rt, const float *rb, int rows, int dim,
                                   const float *g, const float *b, float eps, void *y, md_bt yt)
{
    for (int i = 0; i < rows; i++) {
        float *xr = x + (size_t)i * dim;
        if (r)
            for (int j = 0; j < dim; j++) /* (x + bias) + product: cpu_linear's order */
                xr[j] = (rb ? xr[j] + rb[j] : xr[j]) + ld_el(r, rt, (size_t)i * dim + j);
        if (!y)
            continue;
        double s = 0, ss = 0;
        for (int j = 0; j < dim; j++)
            s += xr[j];
        double mean = s / dim;
        for (int j = 0; j < dim; j++) {
            double d = xr[j] - mean;
            ss += d * d;
        }
        float inv = (float)(1.0 / sqrt(ss / dim + eps)), mf = (float)mean;
        for (int j = 0; j < dim; j++)
            st_el(y, yt, (size_t)i * dim + j, (xr[j] - mf) * inv * g[j] + b[j]);
    }
    return MD_OK;
}

static md_status cpu_attention_ex(const void *qkv, md_bt qt, const float *bias, int batch, int t, int heads, int hd,
                                  int causal, void *out, md_bt ot)
{
    const size_t rows = (size_t)batch * t, d = (size_t)heads * hd;
    float *q = qt == MD_BT_F32 && !bias ? NULL : widen(qkv, qt, rows, 3 * d, 3 * d);
    float *o = ot == MD_BT_F32 ? NULL : malloc(rows * d * sizeof *o + 1);
    md_status st;
    if (q && bias)
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < 3 * d; c++)
                q[r * 3 * d + c] += bias[c];
    if (((qt != MD_BT_F32 || bias) && !q) || (ot != MD_BT_F32 && !o))
        st = nomem("attention_ex", rows * 4 * d * sizeof(float));
    else if ((st = cpu_attention(q ? q : qkv, batch, t, heads, hd, causal, o ? o : out)) == MD_OK && o)
        cpu_convert(o, MD_BT_F32, out, ot, rows * d);
    free(q);
    free(o);
    return st;
}

static md_status cpu_im2col(const float *px, int n, int s, int p, void *cols, md_bt ct)
{
    const int grid = s / p, k = 3 * p * p;
    for (int i = 0; i < n; i++)
        for (int gy = 0; gy < grid; gy++)
            for (int gx = 0; gx < grid; gx++) {
                size_t row = ((size_t)(i * grid + gy) * grid + gx) * k;
                for (int ch = 0; ch < 3; ch++)
                    for (int y = 0; y < p; y++) {
                        const float *src = px + (((size_t)i * 3 + ch) * s + (size_t)gy * p + y) * s + (size_t)gx * p;
                        for (int xx = 0; xx < p; xx++)
                            st_el(cols, ct, row + (size_t)(ch * p + y) * p + xx, src[xx]);
                    }
            }
    return MD_OK;
}

static md_status cpu_embed_tokens(const float *patches, const float *cls, const float *pos, int n, int np, int d,
                                  float *x)
{
    const size_t T = (size_t)np + 1;
    for (size_t i = 0; i < (size_t)n; i++) {
        float *xi = x + i * T * d;
        for (int j = 0; j < d; j++)
            xi[j] = cls[j] + pos[j];
        for (size_t t = 1; t < T; t++)
            for (size_t j = 0; j < (size_t)d; j++)
                xi[t * d + j] = patches[(i * np + t - 1) * d + j] + pos[t * d + j];
    }
    return MD_OK;
}

static md_status cpu_preprocess(const uint8_t *rgb, int n, int w, int h, size_t stride, size_t fstride, int s,
                                const float mean[3], const float std[3], float *out)
{
    for (int i = 0; i < n; i++) {
        md_status st = md_image_preprocess(rgb + (size_t)i * fstride, w, h, (ptrdiff_t)stride, 3, 0, s, mean,
                                               std, out + (size_t)i * 3 * s * s);
        if (st != MD_OK) {
            snprintf(cpu_err, sizeof cpu_err, "cpu: preprocess %dx%d to %d: %s", w, h, s, md_status_str(st));
            return st;
        }
    }
    return MD_OK;
}

static inline float silu(float v) { return v / (1.0f + expf(-v)); }

static md_status cpu_conv1d_silu(const float *x, int ldx, int batch, int L, int C, const float *w, const float *b,
                                 int K, const float *prev, int reverse, float *y)
{
    for (int bi = 0; bi < batch; bi++) {
        const float *xb = x + (size_t)bi * L * ldx;
        const float *pb = prev ? prev + (size_t)bi * (K - 1) * C : NULL;
        for (int t = 0; t < L; t++)
            for (int c = 0; c < C; c++) {
                float acc = b ? b[c] : 0.0f;
                for (int k = 0; k < K; k++) {
                    /* In the direction's own order the input is s = t' - (K-1) + k, t' its step. */
                    int s = (reverse ? L - 1 - t : t) - (K - 1) + k;
                    float v;
                    if (s >= 0)
                        v = xb[(size_t)(reverse ? L - 1 - s : s) * ldx + c];
                    else if (!reverse && pb)
                        v = pb[(size_t)(K - 1 + s) * C + c];
                    else
                        continue;
                    acc += w[(size_t)c * K + k] * v;
                }
                y[((size_t)bi * L + t) * C + c] = silu(acc);
            }
    }
    return MD_OK;
}

static inline float softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

static md_status cpu_scan(const md_scan_args *a)
{
    const int L = a->L, C = a->C, N = a->N;
    if (N > 256)
        return MD_ERR_UNSUPPORTED;
    float hs[256];
    for (int bi = 0; bi < a->batch; bi++)
        for (int c = 0; c < C; c++) {
            float *hp = a->h ? a->h + ((size_t)bi * C + c) * N : NULL;
            for (int n = 0; n < N; n++)
                hs[n] = hp ? hp[n] : 0.0f;
            for (int i = 0; i < L; i++) {
                const int t = a->reverse ? L - 1 - i : i;
                const size_t row = (size_t)bi * L + t;
                float dt = a->delta[row * a->ldd + c] + (a->delta_bias ? a->delta_bias[c] : 0.0f);
                if (a->delta_softplus)
                    dt = softplus(dt);
                const float u = a->u[row * a->ldu + c];
                const float *B = a->B + row * a->ldbc, *Cm = a->Cm + row * a->ldbc;
                const float du = dt * u;
                float acc = 0.0f;
                for (int n = 0; n < N; n++) {
                    hs[n] = expf(dt * a->A[(size_t)c * N + n]) * hs[n] + du * B[n];
                    acc += Cm[n] * hs[n];
                }
                a->y[row * a->ldy + c] = acc + (a->D ? a->D[c] * u : 0.0f);
                if (hp && i + 1 == a->h_at) /* h_at == 0: H keeps the state given */
                    memcpy(hp, hs, (size_t)N * sizeof *hp);
            }
        }
    return MD_OK;
}

static md_status cpu_gate(const float *z, int ldz, const float *a, const float *b, int rows, int cols, float scale,
                          float *y)
{
    for (size_t r = 0; r < (size_t)rows; r++)
        for (size_t c = 0; c < (size_t)cols; c++) {
            size_t i = r * cols + c;
            float s = b ? a[i] + b[i] : a[i];
            y[i] = s * scale * silu(z[r * ldz + c]);
        }
    return MD_OK;
}

static md_status cpu_pool(const float *x, int ldx, int groups, int k, int dim, float *y)
{
    for (size_t g = 0; g < (size_t)groups; g++)
        for (size_t j = 0; j < (size_t)dim; j++) {
            double s = 0;
            for (size_t i = 0; i < (size_t)k; i++)
                s += x[(g * k + i) * ldx + j];
            y[g * dim + j] = (float)(s / k);
        }
    return MD_OK;
}

static md_status cpu_score(const uint16_t *e, long long n, int dim, const float *q, float *s)
{
    for (long long i = 0; i < n; i++) {
        const uint16_t *r = e + (size_t)i * dim;
        double acc = 0;
        for (int j = 0; j < dim; j++)
            acc += (double)md_f16_to_f32(r[j]) * q[j];
        s[i] = (float)acc;
    }
    return MD_OK;
}

/* A before B in the top-k order: larger value, then lower index. */
static inline int topk_before(float va, long long ia, float vb, long long ib)
{
    return va > vb || (va == vb && ia < ib);
}

static md_status cpu_topk(const float *s, long long n, int k, long long *idx, float *val)
{
    assert(k >= 0 && k <= MD_TOPK_MAX && k <= n);
    if (k == 0)
        return MD_OK;
    /* A heap of the best k so far with the worst at the root. */
    long long hi[MD_TOPK_MAX];
    float hv[MD_TOPK_MAX];
    int sz = 0;
    for (long long i = 0; i < n; i++) {
        float v = s[i];
        if (sz == k && !topk_before(v, i, hv[0], hi[0]))
            continue;
        int p;
        if (sz < k) { /* sift up */
            p = sz++;
            while (p > 0) {
                int q = (p - 1) / 2;
                if (!topk_before(hv[q], hi[q], v, i))
                    break;
                hv[p] = hv[q];
                hi[p] = hi[q];
                p = q;
            }
        } else { /* replace the root, sift down */
            p = 0;
            for (;;) {
                int c = 2 * p + 1;
                if (c >= sz)
                    break;
                if (c + 1 < sz && topk_before(hv[c], hi[c], hv[c + 1], hi[c + 1]))
                    c++; /* the worse child */
                if (!topk_before(v, i, hv[c], hi[c]))
                    break;
                hv[p] = hv[c];
                hi[p] = hi[c];
                p = c;
            }
        }
        hv[p] = v;
        hi[p] = i;
    }
    /* Pop worst-first into the back of the outputs. */
    for (int o = k - 1; o >= 0; o--) {
        val[o] = hv[0];
        idx[o] = hi[0];
        float v = hv[--sz];
        long long ii = hi[sz];
        int p = 0;
        for (;;) {
            int c = 2 * p + 1;
            if (c >= sz)
                break;
            if (c + 1 < sz && topk_before(hv[c], hi[c], hv[c + 1], hi[c + 1]))
                c++;
            if (!topk_before(v, ii, hv[c], hi[c]))
                break;
            hv[p] = hv[c];
            hi[p] = hi[c];
            p = c;
        }
        hv[p] = v;
        hi[p] = ii;
    }
    return MD_OK;
}

static const md_backend_i CPU = {
    .name = "cpu",
    .host_memory = 1,
    .supports = cpu_supports,
    .describe = cpu_describe,
    .last_error = cpu_last_error,
    .linear = cpu_linear,
    .layernorm = cpu_layernorm,
    .activation = cpu_activation,
    .attention = cpu_attention,
    .add = cpu_add,
    .l2norm = cpu_l2norm,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .synchronize = cpu_synchronize,
    .mem_info = cpu_mem_info,
    .set_mem_budget = cpu_set_mem_budget,
    .convert = cpu_convert,
    .gemm = cpu_gemm,
    .bias_act = cpu_bias_act,
    .add_layernorm = cpu_add_layernorm,
    .attention_ex = cpu_attention_ex,
    .im2col = cpu_im2col,
    .embed_tokens = cpu_embed_tokens,
    .preprocess = cpu_preprocess,
    .conv1d_silu = cpu_conv1d_silu,
    .scan = cpu_scan,
    .gate = cpu_gate,
    .pool = cpu_pool,
    .score = cpu_score,
    .topk = cpu_topk,
};

const md_backend_i *md_backend_cpu(void) { return &CPU; }

int md_backend_cpu_set_threads(int n)
{
    if (n > 0)
        openblas_set_num_threads(n);
    return openblas_get_num_threads();
}

#ifndef MD_HAVE_CUDA
const md_backend_i *md_backend_cuda(void) { return NULL; }
const char *md_backend_cuda_why(void) { return "this momentd was built without CUDA (CPU only)"; }
#endif

md_status md_backend_select(const char *device, const md_backend_i **out, char *err, size_t errlen)
{
    const md_backend_i *cuda = strcmp(device, "cpu") == 0 ? NULL : md_backend_cuda();
    if (strcmp(device, "cuda") == 0 && !cuda) {
        snprintf(err, errlen, "setting 'device': cuda requested but %s", md_backend_cuda_why());
        return MD_ERR_UNAVAILABLE;
    }
    *out = cuda ? cuda : &CPU;
    return MD_OK;
}

/* ---------------------------------------------------------------- Pillow's coefficients */

/* Pillow's weights: one implementation, in base/image.c. */
int md_backend_bicubic_coeffs(int in_size, int out_size, int out0, int n, int *bounds, int32_t *kk)
{
    return md_image_bicubic_coeffs(in_size, out_size, out0, n, bounds, kk);
}

md_status md_backend_resize_dims(int w, int h, int s, int *rw, int *rh)
{
    long long a, b;
    if (w < 1 || h < 1 || s < 1)
        return MD_ERR_INVALID;
    if (w <= h) {
        a = s;
        b = (long long)((double)((long long)s * h) / (double)w);
    } else {
        b = s;
        a = (long long)((double)((long long)s * w) / (double)h);
    }
    if (a < s || b < s || a > 0x7fffffff || b > 0x7fffffff)
        return MD_ERR_INVALID;
    *rw = (int)a;
    *rh = (int)b;
    return MD_OK;
}
