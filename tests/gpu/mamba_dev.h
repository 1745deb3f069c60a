/* mamba_dev.h - the Mamba encoder of mamba.h composed from backend ops (header-only; used by
 * tests/gpu/gpu_bench.c and tests/unit/test_backend_ops.c).
 *
 * This is the device path of the temporal encoder: the same maths as md_mamba_forward (mamba.h)
 * for one stand-alone sequence (no carried state), every step a backend op on backend memory:
 *
 *   u = LN(x); xz = u in_proj^T (+ b); per direction: c = conv1d_silu(x part); dbl = c x_proj^T;
 *   delta = dbl[:, :R] dt_proj^T; y_d = scan(c, delta + dt_bias -> softplus, A, B, C, D);
 *   y = gate(z, y_f, y_b, 1/2 when bidirectional); x += y out_proj^T (+ b); finally norm_f.
 *
 * Weights stay F32 (the products run at MD_PREC_F32 or MD_PREC_TF32). Until temporal.c takes it
 * over, it lives here: the CPU backend runs it against md_mamba_forward in the unit tests, the
 * CUDA backend in tests/gpu/run.sh. */
#ifndef MD_MAMBA_DEV_H
#define MD_MAMBA_DEV_H

#include <stdlib.h>
#include <string.h>

#include "../../engine/backend.h"
#include "../../engine/mamba.h"

typedef struct md_mamba_dev {
    const md_backend_i *be;
    const md_mamba *m; /* borrowed: config and which layers are skipped */
    md_prec prec;
    float *w;          /* a device copy of m->mem (same offsets) */
    void *scratch;
    size_t scratch_bytes;
    int scratch_L;
} md_mamba_dev;

/* The device address of host weight pointer P of M. */
static inline float *mdd_w(const md_mamba_dev *d, const float *p)
{
    return p ? d->w + (p - d->m->mem) : NULL;
}

static inline void md_mamba_dev_free(md_mamba_dev *d)
{
    if (!d)
        return;
    d->be->free(d->w);
    d->be->free(d->scratch);
    free(d);
}

/* Uploads M's weights (M must be prepared: A derived). PREC: MD_PREC_F32 or MD_PREC_TF32. */
static inline md_status md_mamba_dev_new(const md_backend_i *be, const md_mamba *m, md_prec prec, md_mamba_dev **out)
{
    md_mamba_dev *d = calloc(1, sizeof *d);
    if (!d)
        return MD_ERR_NOMEM;
    d->be = be;
    d->m = m;
    d->prec = prec;
    md_status st = be->alloc(m->mem_floats * sizeof(float), (void **)&d->w);
    if (st == MD_OK)
        st = be->upload(d->w, m->mem, m->mem_floats * sizeof(float));
    if (st != MD_OK) {
        md_mamba_dev_free(d);
        return st;
    }
    *out = d;
    return MD_OK;
}

/* The encoder in place on X [L, d_model] in backend memory. */
static inline md_status md_mamba_dev_forward(md_mamba_dev *d, float *x, int L)
{
    const md_backend_i *be = d->be;
    const md_mamba_config *c = &d->m->cfg;
    const int dm = c->d_model, di = md_mamba_d_inner(c), N = c->d_state, R = c->dt_rank, K = c->d_conv;
    const int ld = R + 2 * N;
    md_status st = MD_OK;
    if (L <= 0)
        return MD_OK;
    /* u [L, dm] | xz [L, 2 di] | cv [L, di] | dbl [L, ld] | delta [L, di] | yf, yb [L, di] */
    const size_t need = ((size_t)L * dm + (size_t)L * 2 * di + (size_t)L * di + (size_t)L * ld + 3 * (size_t)L * di) *
                        sizeof(float);
    if (d->scratch_bytes < need) {
        be->free(d->scratch);
        d->scratch = NULL;
        d->scratch_bytes = 0;
        if ((st = be->alloc(need, &d->scratch)) != MD_OK)
            return st;
        d->scratch_bytes = need;
    }
    float *u = d->scratch, *xz = u + (size_t)L * dm, *cv = xz + (size_t)L * 2 * di, *dbl = cv + (size_t)L * di,
          *delta = dbl + (size_t)L * ld, *yd[2] = {delta + (size_t)L * di, delta + (size_t)2 * L * di};
    for (int li = 0; li < c->n_layers; li++) {
        const md_mamba_layer *l = &d->m->layers[li];
        if (l->zero_out && !d->m->force_compute)
            continue;
        if ((st = be->add_layernorm(x, NULL, MD_BT_F32, NULL, L, dm, mdd_w(d, l->norm_w), mdd_w(d, l->norm_b),
                                    c->norm_eps, u, MD_BT_F32)) != MD_OK ||
            (st = be->gemm(d->prec, u, dm, L, dm, mdd_w(d, l->in_proj_w), mdd_w(d, l->in_proj_b), 2 * di, xz,
                           MD_BT_F32, 0)) != MD_OK)
            return st;
        int nd = 0;
        for (int dir = 0; dir < 2; dir++) {
            if (!(c->dirs & (dir ? MD_MAMBA_BWD : MD_MAMBA_FWD)))
                continue;
            const md_mamba_dir *p = &l->dir[dir];
            md_scan_args a = {1, L, di, N, cv, di, delta, di, mdd_w(d, p->dt_proj_b), 1, mdd_w(d, p->A), dbl + R,
                              dbl + R + N, ld, mdd_w(d, p->D), dir, NULL, 0, yd[nd], di};
            if ((st = be->conv1d_silu(xz, 2 * di, 1, L, di, mdd_w(d, p->conv_w), mdd_w(d, p->conv_b), K, NULL, dir,
                                      cv)) != MD_OK ||
                (st = be->gemm(d->prec, cv, di, L, di, mdd_w(d, p->x_proj_w), NULL, ld, dbl, MD_BT_F32, 0)) != MD_OK ||
                (st = be->gemm(d->prec, dbl, ld, L, R, mdd_w(d, p->dt_proj_w), NULL, di, delta, MD_BT_F32, 0)) !=
                    MD_OK ||
                (st = be->scan(&a)) != MD_OK)
                return st;
            nd++;
        }
        if ((st = be->gate(xz + di, 2 * di, yd[0], nd == 2 ? yd[1] : NULL, L, di, nd == 2 ? 0.5f : 1.0f, yd[0])) !=
                MD_OK ||
            (st = be->gemm(d->prec, yd[0], di, L, di, mdd_w(d, l->out_proj_w), mdd_w(d, l->out_proj_b), dm, x,
                           MD_BT_F32, 1)) != MD_OK)
            return st;
    }
    if (c->final_norm)
        st = be->add_layernorm(x, NULL, MD_BT_F32, NULL, L, dm, mdd_w(d, d->m->norm_f_w), mdd_w(d, d->m->norm_f_b),
                               c->norm_eps, x, MD_BT_F32);
    return st;
}

#endif
