/* backend_cpu.c - the CPU backend (the reference) and backend selection.
 *
 * Matrix products go through OpenBLAS (cblas_sgemm), which parallelises them on its own thread
 * pool; the element-wise ops are plain loops that the compiler vectorises. Attention runs two
 * small sgemm calls per sequence and head, so its cost stays with BLAS too. */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "backend.h"

static const char *const OP_NAMES[MD_OP_COUNT] = {
    [MD_OP_NONE] = "none",         [MD_OP_LINEAR] = "linear",       [MD_OP_LAYERNORM] = "layernorm",
    [MD_OP_GELU] = "gelu",         [MD_OP_GELU_TANH] = "gelu_tanh", [MD_OP_QUICK_GELU] = "quick_gelu",
    [MD_OP_ATTENTION] = "attention", [MD_OP_ADD] = "add",           [MD_OP_L2NORM] = "l2norm",
};

const char *md_op_name(md_op op) { return op >= 0 && op < MD_OP_COUNT && OP_NAMES[op] ? OP_NAMES[op] : "?"; }

static int cpu_supports(md_op op) { return op > MD_OP_NONE && op < MD_OP_COUNT; }

static md_status cpu_describe(char *buf, size_t len)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(buf, len, "CPU, %ld cores, OpenBLAS %d threads (%s)", n, openblas_get_num_threads(),
             openblas_get_corename());
    return MD_OK;
}

static md_status cpu_linear(const float *x, int m, int k, const float *w, const float *b, int n, float *y,
                            int accumulate)
{
    assert(m >= 0 && k > 0 && n > 0);
    if (m == 0)
        return MD_OK;
    if (b) {
        /* Bias first, then one sgemm with beta = 1: a single pass over y. */
        for (int i = 0; i < m; i++) {
            float *r = y + (size_t)i * n;
            if (accumulate)
                for (int j = 0; j < n; j++)
                    r[j] += b[j];
            else
                memcpy(r, b, (size_t)n * sizeof *r);
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k,
                (b || accumulate) ? 1.0f : 0.0f, y, n);
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

static md_status cpu_activation(md_op op, float *x, size_t n)
{
    switch (op) {
    case MD_OP_GELU:
        for (size_t i = 0; i < n; i++)
            x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        return MD_OK;
    case MD_OP_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            x[i] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        }
        return MD_OK;
    case MD_OP_QUICK_GELU:
        for (size_t i = 0; i < n; i++)
            x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
        return MD_OK;
    default:
        return MD_ERR_UNSUPPORTED;
    }
}

static md_status cpu_attention(const float *qkv, int batch, int t, int heads, int hd, int causal, float *out)
{
    const int d = heads * hd, ld = 3 * d;
    const float scale = 1.0f / sqrtf((float)hd);
    float *s = malloc((size_t)t * t * sizeof *s);
    if (!s)
        return MD_ERR_NOMEM;
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

static const md_backend_i CPU = {
    .name = "cpu",
    .supports = cpu_supports,
    .describe = cpu_describe,
    .linear = cpu_linear,
    .layernorm = cpu_layernorm,
    .activation = cpu_activation,
    .attention = cpu_attention,
    .add = cpu_add,
    .l2norm = cpu_l2norm,
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
#endif

md_status md_backend_select(const char *device, const md_backend_i **out, char *err, size_t errlen)
{
    const md_backend_i *cuda = strcmp(device, "cpu") == 0 ? NULL : md_backend_cuda();
    if (strcmp(device, "cuda") == 0 && !cuda) {
        snprintf(err, errlen,
#ifdef MD_HAVE_CUDA
                 "setting 'device': cuda requested but no CUDA device was found"
#else
                 "setting 'device': cuda requested but this momentd was built without CUDA (CPU only)"
#endif
        );
        return MD_ERR_UNAVAILABLE;
    }
    *out = cuda ? cuda : &CPU;
    return MD_OK;
}
