/* mamba.c - the Mamba-1 block, bidirectional mixer and residual encoder on the CPU (see mamba.h).
 *
 * The matrix products (in_proj, x_proj, dt_proj, out_proj) are cblas_sgemm calls on the whole
 * window at once. The rest is written to be read: one function per step, row-major [L, d_inner]
 * buffers as in the maths. The selective scan exists twice: a plain loop (the reference for other
 * backends) and the one used, which walks d_inner in blocks of 8 channels (one vector; a block's
 * state, d_state vectors, stays in L1) with a polynomial exp, the blocks split over threads. The
 * element-wise exp/SiLU use the same polynomial (libm's expf does not vectorise without
 * -ffast-math). */
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "backend.h"
#include "mamba.h"

/* Most threads one step uses. */
#define MD_MAX_THREADS 64

void md_mamba_config_default(md_mamba_config *c, int d_model)
{
    memset(c, 0, sizeof *c);
    c->d_model = d_model;
    c->n_layers = 2;
    c->d_state = 16;
    c->d_conv = 4;
    c->expand = 2;
    c->dt_rank = (d_model + 15) / 16;
    c->dirs = MD_MAMBA_BOTH;
    c->norm_eps = 1e-5f;
}

md_status md_mamba_config_check(const md_mamba_config *c, char *err, size_t errlen)
{
#define RANGE(f, lo, hi)                                                                     \
    if (c->f < (lo) || c->f > (hi)) {                                                        \
        snprintf(err, errlen, "temporal encoder: %s = %d, must be in [%d, %d]", #f, c->f, lo, hi); \
        return MD_ERR_INVALID;                                                               \
    }
    RANGE(d_model, 1, MD_MAMBA_MAX_D_MODEL);
    RANGE(n_layers, 0, MD_MAMBA_MAX_LAYERS);
    RANGE(d_state, 1, MD_MAMBA_MAX_D_STATE);
    RANGE(d_conv, 1, MD_MAMBA_MAX_D_CONV);
    RANGE(expand, 1, MD_MAMBA_MAX_EXPAND);
    RANGE(dt_rank, 1, c->d_model * c->expand);
    RANGE(dirs, 1, 3);
    RANGE(in_proj_bias, 0, 1);
    RANGE(out_proj_bias, 0, 1);
    RANGE(final_norm, 0, 1);
#undef RANGE
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) {
        snprintf(err, errlen, "temporal encoder: norm_eps = %g, must be in (0, 1)", (double)c->norm_eps);
        return MD_ERR_INVALID;
    }
    return MD_OK;
}

/* Floats of one direction's tensors (A included). */
static size_t dir_floats(const md_mamba_config *c)
{
    size_t di = (size_t)md_mamba_d_inner(c), n = (size_t)c->d_state;
    return 2 * di * c->d_conv + di + (c->dt_rank + 2 * n) * di + di * c->dt_rank + di + 2 * di * n + di;
}

static size_t layer_floats(const md_mamba_config *c)
{
    size_t dm = (size_t)c->d_model, di = (size_t)md_mamba_d_inner(c);
    size_t n = 2 * dm + 2 * di * dm + dm * di;
    if (c->in_proj_bias)
        n += 2 * di;
    if (c->out_proj_bias)
        n += dm;
    return n + dir_floats(c) * ((c->dirs & MD_MAMBA_BWD) ? 2 : 1);
}

size_t md_mamba_param_count(const md_mamba_config *c)
{
    size_t derived = (size_t)md_mamba_d_inner(c) * (c->d_state + c->d_conv) * ((c->dirs & MD_MAMBA_BWD) ? 2 : 1);
    return (layer_floats(c) - derived) * c->n_layers + (c->final_norm ? 2 * (size_t)c->d_model : 0);
}

static float *take(float **p, size_t n)
{
    float *r = *p;
    *p += n;
    return r;
}

static void point_dir(md_mamba_dir *d, const md_mamba_config *c, float **p)
{
    size_t di = (size_t)md_mamba_d_inner(c), n = (size_t)c->d_state;
    d->conv_w = take(p, di * c->d_conv);
    d->conv_b = take(p, di);
    d->x_proj_w = take(p, (c->dt_rank + 2 * n) * di);
    d->dt_proj_w = take(p, di * c->dt_rank);
    d->dt_proj_b = take(p, di);
    d->A_log = take(p, di * n);
    d->D = take(p, di);
    d->A = take(p, di * n);
    d->conv_wt = take(p, di * c->d_conv);
}

md_status md_mamba_new(const md_mamba_config *c, md_mamba **out, char *err, size_t errlen)
{
    *out = NULL;
    md_status rc = md_mamba_config_check(c, err, errlen);
    if (rc != MD_OK)
        return rc;
    md_mamba *m = calloc(1, sizeof *m);
    if (!m)
        return MD_ERR_NOMEM;
    m->cfg = *c;
    m->mem_floats = layer_floats(c) * c->n_layers + (c->final_norm ? 2 * (size_t)c->d_model : 0);
    m->layers = calloc(c->n_layers ? c->n_layers : 1, sizeof *m->layers);
    m->mem = calloc(m->mem_floats ? m->mem_floats : 1, sizeof *m->mem);
    if (!m->layers || !m->mem) {
        snprintf(err, errlen, "temporal encoder: out of memory for %zu weights", m->mem_floats);
        md_mamba_free(m);
        return MD_ERR_NOMEM;
    }
    size_t dm = (size_t)c->d_model, di = (size_t)md_mamba_d_inner(c);
    float *p = m->mem;
    for (int i = 0; i < c->n_layers; i++) {
        md_mamba_layer *l = &m->layers[i];
        l->norm_w = take(&p, dm);
        l->norm_b = take(&p, dm);
        l->in_proj_w = take(&p, 2 * di * dm);
        l->in_proj_b = c->in_proj_bias ? take(&p, 2 * di) : NULL;
        point_dir(&l->dir[0], c, &p);
        if (c->dirs & MD_MAMBA_BWD)
            point_dir(&l->dir[1], c, &p);
        l->out_proj_w = take(&p, dm * di);
        l->out_proj_b = c->out_proj_bias ? take(&p, dm) : NULL;
    }
    if (c->final_norm) {
        m->norm_f_w = take(&p, dm);
        m->norm_f_b = take(&p, dm);
    }
    assert((size_t)(p - m->mem) == m->mem_floats);
    *out = m;
    return MD_OK;
}

void md_mamba_free(md_mamba *m)
{
    if (!m)
        return;
    free(m->mem);
    free(m->layers);
    free(m);
}

static int all_zero(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] != 0.0f) /* -0.0f counts as zero: it adds exactly nothing either */
            return 0;
    return 1;
}

void md_mamba_prepare(md_mamba *m)
{
    const md_mamba_config *c = &m->cfg;
    size_t dm = (size_t)c->d_model, di = (size_t)md_mamba_d_inner(c), n = (size_t)c->d_state;
    for (int i = 0; i < c->n_layers; i++) {
        md_mamba_layer *l = &m->layers[i];
        for (int d = 0; d < 2; d++) {
            if (!l->dir[d].A_log)
                continue;
            md_mamba_dir *p = &l->dir[d];
            for (size_t j = 0; j < di * n; j++)
                p->A[j] = -expf(p->A_log[j]);
            for (size_t j = 0; j < di; j++)
                for (int k = 0; k < c->d_conv; k++)
                    p->conv_wt[(size_t)k * di + j] = p->conv_w[j * c->d_conv + k];
        }
        l->zero_out = all_zero(l->out_proj_w, dm * di) && (!l->out_proj_b || all_zero(l->out_proj_b, dm));
    }
}

int md_mamba_is_identity(const md_mamba *m)
{
    if (m->cfg.final_norm)
        return 0;
    for (int i = 0; i < m->cfg.n_layers; i++)
        if (!m->layers[i].zero_out)
            return 0;
    return 1;
}

md_status md_mamba_state_new(const md_mamba *m, md_mamba_state **out)
{
    *out = NULL;
    md_mamba_state *s = calloc(1, sizeof *s);
    if (!s)
        return MD_ERR_NOMEM;
    s->n_layers = m->cfg.n_layers;
    s->d_inner = md_mamba_d_inner(&m->cfg);
    s->d_state = m->cfg.d_state;
    s->d_conv = m->cfg.d_conv;
    size_t nc = (size_t)s->n_layers * (s->d_conv - 1) * s->d_inner;
    size_t ns = (size_t)s->n_layers * s->d_inner * s->d_state;
    s->conv = calloc(nc ? nc : 1, sizeof *s->conv);
    s->ssm = calloc(ns ? ns : 1, sizeof *s->ssm);
    if (!s->conv || !s->ssm) {
        md_mamba_state_free(s);
        return MD_ERR_NOMEM;
    }
    *out = s;
    return MD_OK;
}

void md_mamba_state_free(md_mamba_state *s)
{
    if (!s)
        return;
    free(s->conv);
    free(s->ssm);
    free(s);
}

size_t md_mamba_state_floats(const md_mamba_state *s)
{
    return (size_t)s->n_layers * s->d_inner * ((size_t)(s->d_conv - 1) + (size_t)s->d_state);
}

void md_mamba_state_reset(md_mamba_state *s)
{
    size_t nc = (size_t)s->n_layers * (s->d_conv - 1) * s->d_inner;
    memset(s->conv, 0, nc * sizeof *s->conv);
    memset(s->ssm, 0, (size_t)s->n_layers * s->d_inner * s->d_state * sizeof *s->ssm);
}

/* ---- the selective scan ---------------------------------------------------------------- */

void md_mamba_selective_scan_ref(int L, int d_inner, int d_state, const float *u, const float *delta,
                                 const float *A, const float *B, const float *C, int ldbc, const float *D, float *h,
                                 int h_at, float *y)
{
    assert(h_at >= 0 && h_at <= L);
    for (int d = 0; d < d_inner; d++) {
        float hd[MD_MAMBA_MAX_D_STATE];
        for (int n = 0; n < d_state; n++)
            hd[n] = h ? h[(size_t)d * d_state + n] : 0.0f;
        for (int t = 0; t < L; t++) {
            const float dt = delta[(size_t)t * d_inner + d], ut = u[(size_t)t * d_inner + d], du = dt * ut;
            float acc = 0.0f;
            for (int n = 0; n < d_state; n++) {
                hd[n] = expf(dt * A[(size_t)d * d_state + n]) * hd[n] + du * B[(size_t)t * ldbc + n];
                acc += C[(size_t)t * ldbc + n] * hd[n];
            }
            y[(size_t)t * d_inner + d] = acc + D[d] * ut;
            if (h && t + 1 == h_at)
                for (int n = 0; n < d_state; n++)
                    h[(size_t)d * d_state + n] = hd[n];
        }
    }
}

/* ---- 8 lanes at a time ------------------------------------------------------------------- */

/* The fast scan and the element-wise steps work on 8 floats at a time in GCC/Clang vector
 * extensions: SSE2 pairs on plain x86-64, and on x86-64 AVX2 and AVX-512 clones of the hot
 * functions (MD_CLONES) picked at run time, the AVX-512 one about twice as fast on the machines
 * measured. */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

/* Vectors are passed by pointer or built by macros: passing them by value to a function would make
 * GCC warn that the ABI differs with and without AVX. */
#define V8(x) ((v8f){(x), (x), (x), (x), (x), (x), (x), (x)})
/* (m ? a : b) lane by lane, M from a comparison. */
#define V8_SELECT(m, a, b) ((v8f)(((m) & (v8i)(a)) | (~(m) & (v8i)(b))))

/* Loads N <= 8 floats (the rest zero) / stores the first N lanes. The full case is a constant-size
 * copy, one vector move; only tails take the variable-size path. */
static inline __attribute__((always_inline)) void v8_load(v8f *v, const float *p, int n)
{
    if (n == 8) {
        memcpy(v, p, sizeof *v);
    } else {
        *v = V8(0.0f);
        memcpy(v, p, (size_t)n * sizeof(float));
    }
}

static inline __attribute__((always_inline)) void v8_store(float *p, const v8f *v, int n)
{
    if (n == 8)
        memcpy(p, v, sizeof *v);
    else
        memcpy(p, v, (size_t)n * sizeof(float));
}

/* *x = exp(*x) lane by lane: exp(x) = 2^t, t = x log2(e) clamped to [-126, 127] (exp(-87.3) ~
 * 1e-38 stands for anything smaller): t = n + f with n an integer and |f| <= 1/2, 2^f by a degree-5 polynomial (fitted for
 * relative error, 1.8e-7), 2^n assembled in the exponent bits. Relative error about 3e-7 where
 * |x| < 10, growing to 6e-6 near the clamp (the rounding of x log2(e)), far below the 1e-4 the
 * encoder is held to. Only arithmetic and integer moves, so loops over it vectorise; rounding uses
 * the 1.5 * 2^23 trick instead of floorf (a libm call on plain x86-64). */
static inline __attribute__((always_inline)) void v8_exp(v8f *px)
{
    v8f t = *px * V8(1.44269504088896341f);
    t = V8_SELECT(t < V8(-126.0f), V8(-126.0f), t); /* NaN stays NaN */
    t = V8_SELECT(t > V8(127.0f), V8(127.0f), t);
    const v8f magic = V8(12582912.0f);
    v8f tm = t + magic;
    v8f f = t - (tm - magic);
    v8f p = V8(1.3276470127e-3f);
    p = p * f + V8(9.6755418926e-3f);
    p = p * f + V8(5.5507134646e-2f);
    p = p * f + V8(2.4022120237e-1f);
    p = p * f + V8(6.9314694405e-1f);
    p = p * f + V8(1.0f);
    v8i e = ((v8i)tm - (0x4B400000 - 127)) << 23;
    *px = p * (v8f)e;
}

/* The fast scan: the same sums in the same order as the reference, 8 channels per block, blocks
 * split over threads. */
typedef struct scan_args {
    int L, d_inner, d_state, ldbc, h_at;
    const float *u, *delta, *A, *B, *C, *D;
    float *h, *y;
} scan_args;

/* -DMD_NO_CLONES builds only the baseline code (to test it on a machine with AVX). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute) && !defined(MD_NO_CLONES)
#if __has_attribute(target_clones)
#define MD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=haswell", "default")))
#endif
#endif
#ifndef MD_CLONES
#define MD_CLONES
#endif

/* Channel blocks [b0, b1) (8 channels each) of the scan. */
MD_CLONES static void scan_blocks(void *ctx, int b0, int b1)
{
    const scan_args *a = ctx;
    const int N = a->d_state, di = a->d_inner;
    v8f hs[MD_MAMBA_MAX_D_STATE], As[MD_MAMBA_MAX_D_STATE];
    for (int b = b0; b < b1; b++) {
        const int d0 = 8 * b, nb = di - d0 < 8 ? di - d0 : 8;
        /* The block's state and A, transposed: hs[n] holds channels d0..d0+7 of state n. */
        for (int n = 0; n < N; n++) {
            float hv[8] = {0}, av[8] = {0};
            for (int j = 0; j < nb; j++) {
                hv[j] = a->h ? a->h[(size_t)(d0 + j) * N + n] : 0.0f;
                av[j] = a->A[(size_t)(d0 + j) * N + n];
            }
            memcpy(&hs[n], hv, sizeof hv);
            memcpy(&As[n], av, sizeof av);
        }
        v8f Dv, ut, dt;
        v8_load(&Dv, a->D + d0, nb);
        for (int t = 0; t < a->L; t++) {
            v8_load(&ut, a->u + (size_t)t * di + d0, nb);
            v8_load(&dt, a->delta + (size_t)t * di + d0, nb);
            const v8f du = dt * ut;
            const float *Bt = a->B + (size_t)t * a->ldbc, *Ct = a->C + (size_t)t * a->ldbc;
            v8f acc = V8(0.0f);
            for (int n = 0; n < N; n++) {
                v8f dA = dt * As[n];
                v8_exp(&dA);
                hs[n] = dA * hs[n] + du * V8(Bt[n]);
                acc += V8(Ct[n]) * hs[n];
            }
            v8f yt = acc + Dv * ut;
            v8_store(a->y + (size_t)t * di + d0, &yt, nb);
            if (a->h && t + 1 == a->h_at)
                for (int n = 0; n < N; n++) {
                    float hv[8];
                    memcpy(hv, &hs[n], sizeof hv);
                    for (int j = 0; j < nb; j++)
                        a->h[(size_t)(d0 + j) * N + n] = hv[j];
                }
        }
    }
}

/* Runs FN(CTX, begin, end) over [0, N) in contiguous ranges, one per thread: as many threads as
 * OpenBLAS uses (these steps never run beside a BLAS call), at most one per GRAIN items; the
 * calling thread takes the first range. Without a thread (creation failed) a range runs here. */
typedef void (*range_fn)(void *ctx, int begin, int end);
typedef struct par_job {
    range_fn fn;
    void *ctx;
    int begin, end;
} par_job;

static void *par_thread(void *p)
{
    par_job *j = p;
    j->fn(j->ctx, j->begin, j->end);
    return NULL;
}

static void parallel_for(int n, int grain, range_fn fn, void *ctx)
{
    int nt = md_backend_cpu_set_threads(0);
    if (nt > MD_MAX_THREADS)
        nt = MD_MAX_THREADS;
    if (nt > n / (grain > 0 ? grain : 1))
        nt = n / (grain > 0 ? grain : 1);
    if (nt <= 1) {
        if (n > 0)
            fn(ctx, 0, n);
        return;
    }
    par_job jobs[MD_MAX_THREADS];
    pthread_t tid[MD_MAX_THREADS];
    int started[MD_MAX_THREADS] = {0};
    for (int i = 0; i < nt; i++)
        jobs[i] = (par_job){fn, ctx, (int)((long long)n * i / nt), (int)((long long)n * (i + 1) / nt)};
    for (int i = 1; i < nt; i++)
        started[i] = pthread_create(&tid[i], NULL, par_thread, &jobs[i]) == 0;
    fn(ctx, jobs[0].begin, jobs[0].end);
    for (int i = 1; i < nt; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            fn(ctx, jobs[i].begin, jobs[i].end);
    }
}

void md_mamba_selective_scan(int L, int d_inner, int d_state, const float *u, const float *delta, const float *A,
                             const float *B, const float *C, int ldbc, const float *D, float *h, int h_at,
                             float *y)
{
    assert(d_state >= 1 && d_state <= MD_MAMBA_MAX_D_STATE && h_at >= 0 && h_at <= L);
    scan_args a = {L, d_inner, d_state, ldbc, h_at, u, delta, A, B, C, D, h, y};
    /* Threads get at least 4 blocks and about 64 k state updates each. */
    long long per_block = (long long)L * 8 * d_state;
    int grain = (int)(65536 / (per_block ? per_block : 1)) + 1;
    parallel_for((d_inner + 7) / 8, grain > 4 ? grain : 4, scan_blocks, &a);
}

/* ---- element-wise steps, 8 lanes at a time ---------------------------------------------- */

/* *x = log(*x) for finite x >= 1 (the argument of softplus's log1p): x = 2^e m with m in
 * [sqrt(1/2), sqrt(2)), log(m) = log1p(m - 1) by Cephes' logf polynomial (relative error ~1e-7). */
static inline __attribute__((always_inline)) void v8_log_ge1(v8f *px)
{
    v8i b = (v8i)*px;
    v8f e = __builtin_convertvector((b >> 23) - 127, v8f);
    v8f m = (v8f)((b & 0x007fffff) | 0x3f800000); /* [1, 2) */
    v8i big = m > V8(1.41421356f);
    m = V8_SELECT(big, m * V8(0.5f), m);
    e = V8_SELECT(big, e + V8(1.0f), e);
    v8f f = m - V8(1.0f), z = f * f;
    v8f p = V8(7.0376836292e-2f);
    p = p * f + V8(-1.1514610310e-1f);
    p = p * f + V8(1.1676998740e-1f);
    p = p * f + V8(-1.2420140846e-1f);
    p = p * f + V8(1.4249322787e-1f);
    p = p * f + V8(-1.6668057665e-1f);
    p = p * f + V8(2.0000714765e-1f);
    p = p * f + V8(-2.4999993993e-1f);
    p = p * f + V8(3.3333331174e-1f);
    v8f y = p * f * z + e * V8(-2.12194440e-4f) - V8(0.5f) * z;
    *px = f + y + e * V8(0.693359375f);
}

/* softplus(x) = x for x > 20 (torch's threshold), else log1p(e^x) = log(u) * e^x / (u - 1) with
 * u = 1 + e^x rounded (the classic correction that keeps log1p's accuracy for tiny e^x). On rows
 * [r0, r1) of CTX (a rows_args: X with DI floats per row). */
typedef struct rows_args {
    float *x;
    const float *z;
    int di, ldz;
    float scale;
} rows_args;

MD_CLONES static void softplus_rows(void *ctx, int r0, int r1)
{
    const rows_args *a = ctx;
    float *x = a->x + (size_t)r0 * a->di;
    const size_t n = (size_t)(r1 - r0) * a->di;
    for (size_t i = 0; i < n; i += 8) {
        int k = n - i < 8 ? (int)(n - i) : 8;
        v8f v, y, u, l;
        v8_load(&v, x + i, k);
        y = v;
        v8_exp(&y);
        u = V8(1.0f) + y;
        l = u;
        v8_log_ge1(&l);
        v8f d = u - V8(1.0f);
        v8f r = V8_SELECT(d == V8(0.0f), y, l * (y / V8_SELECT(d == V8(0.0f), V8(1.0f), d)));
        r = V8_SELECT(v > V8(20.0f), v, r);
        v8_store(x + i, &r, k);
    }
}

/* Rows [r0, r1) of x *= scale * SiLU(z) (x rows of DI, z rows of stride LDZ). */
MD_CLONES static void gate_rows(void *ctx, int r0, int r1)
{
    const rows_args *a = ctx;
    for (int t = r0; t < r1; t++)
        for (int d = 0; d < a->di; d += 8) {
            int k8 = a->di - d < 8 ? a->di - d : 8;
            v8f yv, zv, e;
            v8_load(&yv, a->x + (size_t)t * a->di + d, k8);
            v8_load(&zv, a->z + (size_t)t * a->ldz + d, k8);
            e = -zv;
            v8_exp(&e);
            yv = yv * V8(a->scale) * (zv / (V8(1.0f) + e));
            v8_store(a->x + (size_t)t * a->di + d, &yv, k8);
        }
}

/* Causal depthwise conv + SiLU for one direction, rows [t0, t1): c[t, :] = SiLU(b + sum_k wt[k, :]
 * * x(t + k - (d_conv - 1), :)), where x(s) is row s of X (stride LDX, rows in reverse when
 * REVERSE) for s >= 0 and row d_conv - 1 + s of PRE (the carried inputs, NULL: zeros) for s < 0. */
typedef struct conv_args {
    const float *x, *pre, *wt, *b;
    int ldx, L, reverse, di, dc;
    float *c;
} conv_args;

MD_CLONES static void conv_silu_rows(void *ctx, int t0, int t1)
{
    const conv_args *a = ctx;
    const int di = a->di, dc = a->dc;
    for (int t = t0; t < t1; t++) {
        float *ct = a->c + (size_t)t * di;
        for (int d = 0; d < di; d += 8) {
            int k8 = di - d < 8 ? di - d : 8;
            v8f acc, w, xv;
            v8_load(&acc, a->b + d, k8);
            for (int k = 0; k < dc; k++) {
                int src = t + k - (dc - 1);
                const float *row = src >= 0 ? a->x + (size_t)(a->reverse ? a->L - 1 - src : src) * a->ldx
                                            : (a->pre ? a->pre + (size_t)(dc - 1 + src) * di : NULL);
                if (!row)
                    continue;
                v8_load(&w, a->wt + (size_t)k * di + d, k8);
                v8_load(&xv, row + d, k8);
                acc += w * xv;
            }
            v8f e = -acc;
            v8_exp(&e);
            acc = acc / (V8(1.0f) + e);
            v8_store(ct + d, &acc, k8);
        }
    }
}

/* Rows [t0, t1) of x += y, with y's rows taken in reverse order when REVERSE (the backward scan's
 * output, flipped back). */
typedef struct add_args {
    float *x;
    const float *y;
    int L, di, reverse;
} add_args;

static void add_rows(void *ctx, int t0, int t1)
{
    const add_args *a = ctx;
    for (int t = t0; t < t1; t++) {
        float *dst = a->x + (size_t)t * a->di;
        const float *src = a->y + (size_t)(a->reverse ? a->L - 1 - t : t) * a->di;
        for (int d = 0; d < a->di; d++)
            dst[d] += src[d];
    }
}

/* ---- the mixer ------------------------------------------------------------------------- */

/* y[m, n] (ldy) = x[m, k] (ldx) . w[n, k]^T (+ b[n]); ACCUMULATE adds to y. */
static void linear(const float *x, int ldx, int m, int k, const float *w, const float *b, int n, float *y, int ldy,
                   int accumulate)
{
    if (m == 0)
        return;
    if (b)
        for (int i = 0; i < m; i++) {
            float *r = y + (size_t)i * ldy;
            for (int j = 0; j < n; j++)
                r[j] = (accumulate ? r[j] : 0.0f) + b[j];
        }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, ldx, w, k, (b || accumulate) ? 1.0f : 0.0f,
                y, ldy);
}

struct md_mamba_ws {
    size_t cap;   /* floats in buf */
    float *buf;
};

md_mamba_ws *md_mamba_ws_new(void) { return calloc(1, sizeof(md_mamba_ws)); }

void md_mamba_ws_free(md_mamba_ws *ws)
{
    if (!ws)
        return;
    free(ws->buf);
    free(ws);
}

/* Scratch of a forward pass over L tokens, carved from WS's buffer. */
typedef struct scratch {
    float *u, *o;  /* [L, d_model]: normed input, mixer output */
    float *xz;     /* [L, 2 d_inner]: in_proj output, rows x then z */
    float *y;      /* [L, d_inner]: the directions' sum, then the gated output */
    float *c;      /* [L, d_inner]: SiLU(conv) of the current direction */
    float *dbl;    /* [L, dt_rank + 2 d_state]: x_proj output */
    float *delta;  /* [L, d_inner] */
    float *yd;     /* [L, d_inner]: the current direction's scan output */
} scratch;

static md_status ws_take(md_mamba_ws *ws, const md_mamba_config *cfg, int L, scratch *s)
{
    const size_t Ls = (size_t)L, dm = (size_t)cfg->d_model, di = (size_t)md_mamba_d_inner(cfg);
    const size_t ld = (size_t)cfg->dt_rank + 2 * (size_t)cfg->d_state;
    /* Each piece rounded up to 16 floats so that every one starts 64-byte aligned. */
#define R16(n) (((n) + 15) & ~(size_t)15)
    size_t need = 2 * R16(Ls * dm) + R16(Ls * 2 * di) + 4 * R16(Ls * di) + R16(Ls * ld);
    if (need > ws->cap) {
        free(ws->buf);
        ws->cap = 0;
        /* C11 aligned_alloc: the size is a multiple of 64 bytes, as it requires. */
        if (!(ws->buf = aligned_alloc(64, need * sizeof(float))))
            return MD_ERR_NOMEM;
        ws->cap = need;
    }
    float *p = ws->buf;
    s->u = p, p += R16(Ls * dm);
    s->o = p, p += R16(Ls * dm);
    s->xz = p, p += R16(Ls * 2 * di);
    s->y = p, p += R16(Ls * di);
    s->c = p, p += R16(Ls * di);
    s->delta = p, p += R16(Ls * di);
    s->yd = p, p += R16(Ls * di);
    s->dbl = p, p += R16(Ls * ld);
#undef R16
    return MD_OK;
}

/* One direction on x' (the first d_inner columns of S->xz; reversed when REVERSE) -> S->yd in the
 * direction's own order. CONV_STATE / H: the carried state, or NULL for zeros (and nothing saved);
 * when given, left holding the state after STATE_AT tokens. */
static void run_direction(const md_mamba_config *cfg, const md_mamba_dir *p, int L, int reverse, float *conv_state,
                          float *h, int state_at, const scratch *s)
{
    const int di = md_mamba_d_inner(cfg), dc = cfg->d_conv, N = cfg->d_state, R = cfg->dt_rank;
    const int ld = R + 2 * N;
    /* Row grains: a thread gets at least 64 k elements. */
    const int grain = 65536 / di + 1;
    conv_args ca = {s->xz, conv_state, p->conv_wt, p->conv_b, 2 * di, L, reverse, di, dc, s->c};
    parallel_for(L, grain, conv_silu_rows, &ca);
    if (conv_state) {
        /* The conv's inputs just before token state_at: from this window, or still from the
         * carried ones when state_at < d_conv - 1. The carried rows shift first. */
        for (int r = 0; r < dc - 1; r++) {
            int src = state_at - (dc - 1) + r; /* position of the input kept in row r */
            if (src < 0)
                memmove(conv_state + (size_t)r * di, conv_state + (size_t)(dc - 1 + src) * di,
                        (size_t)di * sizeof(float));
            else
                memcpy(conv_state + (size_t)r * di, s->xz + (size_t)src * 2 * di, (size_t)di * sizeof(float));
        }
    }
    /* [dt | B | C] = c . x_proj^T;  delta = softplus(dt . dt_proj^T + bias). */
    linear(s->c, di, L, di, p->x_proj_w, NULL, ld, s->dbl, ld, 0);
    linear(s->dbl, ld, L, R, p->dt_proj_w, p->dt_proj_b, di, s->delta, di, 0);
    rows_args sa = {s->delta, NULL, di, 0, 0.0f};
    parallel_for(L, grain, softplus_rows, &sa);
    md_mamba_selective_scan(L, di, N, s->c, s->delta, p->A, s->dbl + R, s->dbl + R + N, ld, p->D, h, state_at,
                            s->yd);
}

static md_status mixer(const md_mamba *m, int layer, int dirs, const float *u, int L, md_mamba_state *state,
                       int state_at, float *out, const scratch *s)
{
    const md_mamba_config *cfg = &m->cfg;
    const md_mamba_layer *l = &m->layers[layer];
    const int dm = cfg->d_model, di = md_mamba_d_inner(cfg);
    linear(u, dm, L, dm, l->in_proj_w, l->in_proj_b, 2 * di, s->xz, 2 * di, 0);
    memset(s->y, 0, (size_t)L * di * sizeof *s->y);
    const int grain = 65536 / di + 1;
    if (dirs & MD_MAMBA_FWD) {
        float *cs = state ? state->conv + (size_t)layer * (cfg->d_conv - 1) * di : NULL;
        float *h = state ? state->ssm + (size_t)layer * di * cfg->d_state : NULL;
        run_direction(cfg, &l->dir[0], L, 0, cs, h, state_at, s);
        add_args aa = {s->y, s->yd, L, di, 0};
        parallel_for(L, grain, add_rows, &aa);
    }
    if (dirs & MD_MAMBA_BWD) {
        /* The reversed sequence from zeros: window-local, never carried (see mamba.h). */
        run_direction(cfg, &l->dir[1], L, 1, NULL, NULL, 0, s);
        add_args aa = {s->y, s->yd, L, di, 1};
        parallel_for(L, grain, add_rows, &aa);
    }
    /* Average the directions and gate with SiLU(z): (y_f + y_b) / 2 * SiLU(z). */
    rows_args ga = {s->y, s->xz + di, di, 2 * di, dirs == MD_MAMBA_BOTH ? 0.5f : 1.0f};
    parallel_for(L, grain, gate_rows, &ga);
    linear(s->y, di, L, di, l->out_proj_w, l->out_proj_b, dm, out, dm, 0);
    return MD_OK;
}

md_status md_mamba_mixer(const md_mamba *m, md_mamba_ws *ws, int layer, int dirs, const float *u, int L,
                         md_mamba_state *state, int state_at, float *out)
{
    const md_mamba_config *cfg = &m->cfg;
    assert(layer >= 0 && layer < cfg->n_layers && L >= 0 && state_at >= 0 && state_at <= L);
    assert(dirs >= 1 && dirs <= 3 && (dirs & ~cfg->dirs) == 0);
    if (L == 0)
        return MD_OK;
    md_mamba_ws *own = ws ? NULL : md_mamba_ws_new();
    scratch s;
    md_status rc = MD_ERR_NOMEM;
    if ((ws || own) && (rc = ws_take(ws ? ws : own, cfg, L, &s)) == MD_OK)
        rc = mixer(m, layer, dirs, u, L, state, state_at, out, &s);
    md_mamba_ws_free(own);
    return rc;
}

md_status md_mamba_forward(const md_mamba *m, md_mamba_ws *ws, float *x, int L, md_mamba_state *state, int state_at)
{
    const md_mamba_config *cfg = &m->cfg;
    const md_backend_i *cpu = md_backend_cpu();
    const int dm = cfg->d_model;
    assert(L >= 0 && state_at >= 0 && state_at <= L);
    if (L == 0)
        return MD_OK;
    md_mamba_ws *own = NULL;
    scratch s;
    md_status rc = MD_ERR_NOMEM;
    if (!ws && !(ws = own = md_mamba_ws_new()))
        goto out;
    for (int i = 0; i < cfg->n_layers; i++) {
        const md_mamba_layer *l = &m->layers[i];
        if (l->zero_out && !m->force_compute)
            continue; /* x + 0 == x exactly; the layer's carried state is not needed by anyone */
        if ((rc = ws_take(ws, cfg, L, &s)) != MD_OK ||
            (rc = cpu->layernorm(x, L, dm, l->norm_w, l->norm_b, cfg->norm_eps, s.u)) != MD_OK ||
            (rc = mixer(m, i, cfg->dirs, s.u, L, state, state_at, s.o, &s)) != MD_OK)
            goto out;
        for (size_t j = 0; j < (size_t)L * dm; j++)
            x[j] += s.o[j];
    }
    if (cfg->final_norm && (rc = cpu->layernorm(x, L, dm, m->norm_f_w, m->norm_f_b, cfg->norm_eps, x)) != MD_OK)
        goto out;
    rc = MD_OK;
out:
    md_mamba_ws_free(own);
    return rc;
}
