/* mamba.c - the Mamba-1 block, bidirectional mixer and residual encoder on the CPU (see mamba.h).
 *
 * The matrix products (in_proj, x_proj, dt_proj, out_proj) are cblas_sgemm calls on the whole
 * window at once. The rest is written to be read: one function per step, row-major [L, d_inner]
 * buffers as in the maths. The scan walks d_inner in blocks of MD_SCAN_BLOCK channels so that a
 * block's state (d_state x MD_SCAN_BLOCK floats) stays in L1 and its inner loop over channels is a
 * fixed-length loop the compiler vectorises; the element-wise exp/SiLU use a polynomial exp that
 * vectorises too (libm's expf does not without -ffast-math). */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "backend.h"
#include "mamba.h"

/* Channels per scan block (the inner loop's fixed trip count). */
#define MD_SCAN_BLOCK 16

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
    return di * c->d_conv + di + (c->dt_rank + 2 * n) * di + di * c->dt_rank + di + 2 * di * n + di;
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
    size_t derived_A = (size_t)md_mamba_d_inner(c) * c->d_state * ((c->dirs & MD_MAMBA_BWD) ? 2 : 1);
    return (layer_floats(c) - derived_A) * c->n_layers + (c->final_norm ? 2 * (size_t)c->d_model : 0);
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
            for (size_t j = 0; j < di * n; j++)
                l->dir[d].A[j] = -expf(l->dir[d].A_log[j]);
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

/* ---- element-wise maths ---------------------------------------------------------------- */

/* exp(x) for x in [-87.3, 88.7] (clamped outside: exp(-87.3) ~ 1e-38 stands for anything smaller),
 * Cephes' method: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial (relative error
 * about 1e-7), 2^n assembled in the exponent bits. Only arithmetic and integer moves, so loops over
 * it vectorise; rounding uses the 1.5 * 2^23 trick instead of floorf (a call on plain x86-64). */
static inline float fast_expf(float x)
{
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.7f ? 88.7f : x;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer in the low bits */
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;  /* ln2 in two parts, so that n * ln2 is exact enough */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    /* tb = bits(1.5 * 2^23) + n; 2^n = (n + 127) << 23 */
    uint32_t eb = (tb - 0x4B400000u + 127u) << 23;
    float s;
    memcpy(&s, &eb, sizeof s);
    return p * s;
}

static inline float silu(float x) { return x / (1.0f + fast_expf(-x)); }

/* torch.nn.functional.softplus (beta 1, threshold 20). */
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(fast_expf(x)); }

/* ---- the selective scan ---------------------------------------------------------------- */

/* Channels [d0, d0 + nb) of the scan, nb <= MD_SCAN_BLOCK. The block's state and A are kept
 * transposed ([d_state][MD_SCAN_BLOCK]) so that the inner loop runs over contiguous channels. When
 * nb is the full block the compiler sees a fixed trip count and vectorises. */
static void scan_block(int L, int d_inner, int d_state, int d0, int nb, const float *u, const float *delta,
                       const float *A, const float *B, const float *C, int ldbc, const float *D, float *h,
                       int h_at, float *y)
{
    enum { NB = MD_SCAN_BLOCK };
    float hs[MD_MAMBA_MAX_D_STATE][NB], As[MD_MAMBA_MAX_D_STATE][NB];
    float Ds[NB];
    for (int n = 0; n < d_state; n++)
        for (int j = 0; j < NB; j++) {
            hs[n][j] = (j < nb && h) ? h[(size_t)(d0 + j) * d_state + n] : 0.0f;
            As[n][j] = j < nb ? A[(size_t)(d0 + j) * d_state + n] : 0.0f;
        }
    for (int j = 0; j < NB; j++)
        Ds[j] = j < nb ? D[d0 + j] : 0.0f;
    int saved = 0;
    if (h && h_at == 0)
        saved = 1; /* the state before step 0 is what was passed in: leave h alone */
    for (int t = 0; t < L; t++) {
        const float *ut = u + (size_t)t * d_inner + d0, *dt = delta + (size_t)t * d_inner + d0;
        const float *Bt = B + (size_t)t * ldbc, *Ct = C + (size_t)t * ldbc;
        float yt[NB], du[NB], dl[NB];
        for (int j = 0; j < NB; j++) {
            dl[j] = j < nb ? dt[j] : 0.0f;
            du[j] = j < nb ? dt[j] * ut[j] : 0.0f;
            yt[j] = 0.0f;
        }
        for (int n = 0; n < d_state; n++) {
            const float b = Bt[n], c = Ct[n];
            for (int j = 0; j < NB; j++) {
                float v = fast_expf(dl[j] * As[n][j]) * hs[n][j] + du[j] * b;
                hs[n][j] = v;
                yt[j] += c * v;
            }
        }
        float *yo = y + (size_t)t * d_inner + d0;
        for (int j = 0; j < nb; j++)
            yo[j] = yt[j] + Ds[j] * ut[j];
        if (h && !saved && t + 1 == h_at) {
            for (int j = 0; j < nb; j++)
                for (int n = 0; n < d_state; n++)
                    h[(size_t)(d0 + j) * d_state + n] = hs[n][j];
            saved = 1;
        }
    }
}

void md_mamba_selective_scan(int L, int d_inner, int d_state, const float *u, const float *delta, const float *A,
                             const float *B, const float *C, int ldbc, const float *D, float *h, int h_at,
                             float *y)
{
    assert(d_state >= 1 && d_state <= MD_MAMBA_MAX_D_STATE && h_at >= 0 && h_at <= L);
    for (int d0 = 0; d0 < d_inner; d0 += MD_SCAN_BLOCK) {
        int nb = d_inner - d0 < MD_SCAN_BLOCK ? d_inner - d0 : MD_SCAN_BLOCK;
        scan_block(L, d_inner, d_state, d0, nb, u, delta, A, B, C, ldbc, D, h, h_at, y);
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

/* Scratch of one direction for L tokens. */
typedef struct dir_work {
    float *xs;    /* [d_conv - 1 + L, d_inner]: conv inputs, the carried window first */
    float *c;     /* [L, d_inner]: SiLU(conv) */
    float *dbl;   /* [L, dt_rank + 2 d_state]: x_proj output */
    float *delta; /* [L, d_inner] */
    float *y;     /* [L, d_inner] */
} dir_work;

/* One direction on x' (rows of XZ, stride 2 d_inner; reversed when REVERSE) -> W->y in the
 * direction's own order. CONV_STATE / H: the carried state, or NULL for zeros (and nothing
 * saved); when given, left holding the state after STATE_AT tokens. */
static void run_direction(const md_mamba_config *cfg, const md_mamba_dir *p, const float *xz, int L, int reverse,
                          float *conv_state, float *h, int state_at, dir_work *w)
{
    const int di = md_mamba_d_inner(cfg), dc = cfg->d_conv, N = cfg->d_state, R = cfg->dt_rank;
    const int ld = R + 2 * N;
    const size_t row = (size_t)di * sizeof(float);
    /* Conv inputs: the previous d_conv - 1 inputs (carried or zero), then this window's. */
    if (conv_state)
        memcpy(w->xs, conv_state, (size_t)(dc - 1) * row);
    else
        memset(w->xs, 0, (size_t)(dc - 1) * row);
    for (int t = 0; t < L; t++)
        memcpy(w->xs + (size_t)(dc - 1 + t) * di, xz + (size_t)(reverse ? L - 1 - t : t) * 2 * di, row);
    /* Causal depthwise conv: c[t, d] = b[d] + sum_k w[d, k] * xs[t + k, d], then SiLU. */
    for (int t = 0; t < L; t++) {
        float *ct = w->c + (size_t)t * di;
        memcpy(ct, p->conv_b, row);
        for (int k = 0; k < dc; k++) {
            const float *xk = w->xs + (size_t)(t + k) * di;
            for (int d = 0; d < di; d++)
                ct[d] += p->conv_w[(size_t)d * dc + k] * xk[d];
        }
        for (int d = 0; d < di; d++)
            ct[d] = silu(ct[d]);
    }
    if (conv_state)
        memcpy(conv_state, w->xs + (size_t)state_at * di, (size_t)(dc - 1) * row);
    /* [dt | B | C] = c . x_proj^T;  delta = softplus(dt . dt_proj^T + bias). */
    linear(w->c, di, L, di, p->x_proj_w, NULL, ld, w->dbl, ld, 0);
    linear(w->dbl, ld, L, R, p->dt_proj_w, p->dt_proj_b, di, w->delta, di, 0);
    for (size_t i = 0; i < (size_t)L * di; i++)
        w->delta[i] = softplus(w->delta[i]);
    md_mamba_selective_scan(L, di, N, w->c, w->delta, p->A, w->dbl + R, w->dbl + R + N, ld, p->D, h, state_at, w->y);
}

static void dir_work_free(dir_work *w)
{
    free(w->xs);
    free(w->c);
    free(w->dbl);
    free(w->delta);
    free(w->y);
}

static md_status dir_work_alloc(const md_mamba_config *cfg, int L, dir_work *w)
{
    size_t di = (size_t)md_mamba_d_inner(cfg), Ls = (size_t)(L ? L : 1);
    w->xs = malloc((cfg->d_conv - 1 + Ls) * di * sizeof(float));
    w->c = malloc(Ls * di * sizeof(float));
    w->dbl = malloc(Ls * (cfg->dt_rank + 2 * (size_t)cfg->d_state) * sizeof(float));
    w->delta = malloc(Ls * di * sizeof(float));
    w->y = malloc(Ls * di * sizeof(float));
    if (!w->xs || !w->c || !w->dbl || !w->delta || !w->y) {
        dir_work_free(w);
        memset(w, 0, sizeof *w);
        return MD_ERR_NOMEM;
    }
    return MD_OK;
}

md_status md_mamba_mixer(const md_mamba *m, int layer, int dirs, const float *u, int L, md_mamba_state *state,
                         int state_at, float *out)
{
    const md_mamba_config *cfg = &m->cfg;
    assert(layer >= 0 && layer < cfg->n_layers && L >= 0 && state_at >= 0 && state_at <= L);
    assert(dirs >= 1 && dirs <= 3 && (dirs & ~cfg->dirs) == 0);
    const md_mamba_layer *l = &m->layers[layer];
    const int dm = cfg->d_model, di = md_mamba_d_inner(cfg);
    if (L == 0)
        return MD_OK;
    md_status rc = MD_ERR_NOMEM;
    dir_work w = {0};
    float *xz = malloc((size_t)L * 2 * di * sizeof *xz);
    float *y = malloc((size_t)L * di * sizeof *y);
    if (!xz || !y || dir_work_alloc(cfg, L, &w) != MD_OK)
        goto out;
    linear(u, dm, L, dm, l->in_proj_w, l->in_proj_b, 2 * di, xz, 2 * di, 0);
    memset(y, 0, (size_t)L * di * sizeof *y);
    if (dirs & MD_MAMBA_FWD) {
        float *cs = state ? state->conv + (size_t)layer * (cfg->d_conv - 1) * di : NULL;
        float *h = state ? state->ssm + (size_t)layer * di * cfg->d_state : NULL;
        run_direction(cfg, &l->dir[0], xz, L, 0, cs, h, state_at, &w);
        for (size_t i = 0; i < (size_t)L * di; i++)
            y[i] += w.y[i];
    }
    if (dirs & MD_MAMBA_BWD) {
        /* The reversed sequence from zeros: window-local, never carried (see mamba.h). */
        run_direction(cfg, &l->dir[1], xz, L, 1, NULL, NULL, 0, &w);
        for (int t = 0; t < L; t++) {
            const float *src = w.y + (size_t)(L - 1 - t) * di;
            float *dst = y + (size_t)t * di;
            for (int d = 0; d < di; d++)
                dst[d] += src[d];
        }
    }
    /* Average the directions and gate with SiLU(z): (y_f + y_b) / 2 * SiLU(z). */
    const float scale = dirs == MD_MAMBA_BOTH ? 0.5f : 1.0f;
    for (int t = 0; t < L; t++) {
        float *yt = y + (size_t)t * di;
        const float *zt = xz + (size_t)t * 2 * di + di;
        for (int d = 0; d < di; d++)
            yt[d] *= scale * silu(zt[d]);
    }
    linear(y, di, L, di, l->out_proj_w, l->out_proj_b, dm, out, dm, 0);
    rc = MD_OK;
out:
    dir_work_free(&w);
    free(y);
    free(xz);
    return rc;
}

md_status md_mamba_forward(const md_mamba *m, float *x, int L, md_mamba_state *state, int state_at)
{
    const md_mamba_config *cfg = &m->cfg;
    const md_backend_i *cpu = md_backend_cpu();
    const int dm = cfg->d_model;
    assert(L >= 0 && state_at >= 0 && state_at <= L);
    if (L == 0)
        return MD_OK;
    md_status rc = MD_ERR_NOMEM;
    float *u = malloc((size_t)L * dm * sizeof *u);
    float *o = malloc((size_t)L * dm * sizeof *o);
    if (!u || !o)
        goto out;
    for (int i = 0; i < cfg->n_layers; i++) {
        const md_mamba_layer *l = &m->layers[i];
        if (l->zero_out && !m->force_compute)
            continue; /* x + 0 == x exactly; the layer's carried state is not needed by anyone */
        if ((rc = cpu->layernorm(x, L, dm, l->norm_w, l->norm_b, cfg->norm_eps, u)) != MD_OK)
            goto out;
        if ((rc = md_mamba_mixer(m, i, cfg->dirs, u, L, state, state_at, o)) != MD_OK)
            goto out;
        for (size_t j = 0; j < (size_t)L * dm; j++)
            x[j] += o[j];
    }
    if (cfg->final_norm && (rc = cpu->layernorm(x, L, dm, m->norm_f_w, m->norm_f_b, cfg->norm_eps, x)) != MD_OK)
        goto out;
    rc = MD_OK;
out:
    free(o);
    free(u);
    return rc;
}
