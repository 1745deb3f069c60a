/* clip.c - the vision and text towers of a CLIP model (md_clip_embed_*), following transformers'
 * models/clip/modeling_clip.py (loading the checkpoint is in clip_load.c, what both share in
 * clip_internal.h):
 *
 *   vision: patches (im2col) . patch_embedding^T -> [CLS | patches] + position_embedding
 *           -> pre_layrnorm -> L x encoder layer -> post_layernorm -> visual_projection
 *   text:   token_embedding[ids] + position_embedding -> L x encoder layer (causal)
 *           -> final_layer_norm -> the row at the EOS position -> text_projection
 *   encoder layer: x += out_proj(attn(layer_norm1(x))); x += fc2(act(fc1(layer_norm2(x))))
 *
 * Two ways to run the towers. The host path (the CPU, and any backend whose buffers are host
 * memory) is the reference and computes in F32 with the F32 ops of backend.h. The device path
 * (a backend with its own memory: CUDA) keeps a second copy of the weights in the backend's
 * memory, the matrices in the precision of its matrix products (F16 by default: tensor cores with
 * F32 accumulation; MD_CUDA_PRECISION=f32|tf32|f16|bf16) and the vectors in F32, and runs the
 * towers there with the typed ops: the residual stream stays F32, the inputs of every matrix
 * product are written in the product's input type by the op before it (layernorm, activation,
 * attention), and each residual add is fused with the layernorm that follows it:
 *
 *   h = LN1(x + pending)  ->  qkv = h Wqkv  ->  a = attention(qkv + b)  ->  t = a Wo
 *   h = LN2(x += t + bo)  ->  m = act(h W1 + b1) ->  t = m W2  ->  pending = t + b2
 *
 * Its scratch memory is sized from the backend's memory left under the budget (gpu_mem), and
 * kept between calls (one buffer per model, taken by one call at a time). MD_CLIP_DEVICE_PATH=1
 * at load runs the device path on the CPU backend too (in F32), which is how the tests check it
 * without a GPU. */
#define _XOPEN_SOURCE 700
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clip_internal.h"
#include "tokenizer.h"

/* Scratch memory one md_clip_embed_images call may use; more images are done in chunks. */
#define SCRATCH_BUDGET ((size_t)256 << 20)

/* ---------------------------------------------------------------- forward passes */

#define TRY(x)                                                                                               \
    do {                                                                                                     \
        if ((st = (x)) != MD_OK)                                                                             \
            goto out;                                                                                        \
    } while (0)

/* One encoder layer over BATCH sequences of T tokens, in place on X [batch * t, D]. H, A are
 * [batch * t, D], QKV [batch * t, 3D], MM [batch * t, I]. */
static md_status encoder_layer(const md_backend_i *be, const tower_cfg *c, const layer_w *l, float *x, float *h,
                               float *qkv, float *a, float *mm, int batch, int t, int causal)
{
    md_status st;
    const int D = c->hidden, I = c->inter, R = batch * t;
    TRY(be->layernorm(x, R, D, l->ln1_g, l->ln1_b, c->eps, h));
    TRY(be->linear(h, R, D, l->qkv_w, l->qkv_b, 3 * D, qkv, 0));
    TRY(be->attention(qkv, batch, t, c->heads, D / c->heads, causal, a));
    TRY(be->linear(a, R, D, l->o_w, l->o_b, D, x, 1));
    TRY(be->layernorm(x, R, D, l->ln2_g, l->ln2_b, c->eps, h));
    TRY(be->linear(h, R, D, l->fc1_w, l->fc1_b, I, mm, 0));
    TRY(be->activation(c->act, mm, (size_t)R * I));
    TRY(be->linear(mm, R, I, l->fc2_w, l->fc2_b, D, x, 1));
out:
    return st;
}

/* Pooling as transformers: old configs (eos_token_id == 2) take the largest id (the end token has
 * the largest id of CLIP's vocabulary); newer ones the first eos_token_id, or position 0 when
 * there is none (argmax of all zeros). First occurrence either way. */
static int pool_position(const tower_cfg *c, const int *ids, int n)
{
    int pos = 0;
    if (c->eos == 2) {
        for (int i = 1; i < n; i++)
            if (ids[i] > ids[pos])
                pos = i;
    } else {
        for (int i = 0; i < n; i++)
            if (ids[i] == c->eos) {
                pos = i;
                break;
            }
    }
    return pos;
}

/* ---------------------------------------------------------------- the device path: forward passes */

/* Backend scratch of at least BYTES: the model's kept buffer when it is free and large enough,
 * else a new one. */
static md_status dev_scratch_get(md_clip *m, size_t bytes, void **out, size_t *got)
{
    pthread_mutex_lock(&m->smu);
    if (m->scratch && m->scratch_bytes >= bytes) {
        *out = m->scratch;
        *got = m->scratch_bytes;
        m->scratch = NULL;
        m->scratch_bytes = 0;
        pthread_mutex_unlock(&m->smu);
        return MD_OK;
    }
    pthread_mutex_unlock(&m->smu);
    *got = bytes;
    return m->be->alloc(bytes, out);
}

/* Gives P back: kept for the next call when the slot is empty (the larger one wins). */
static void dev_scratch_put(md_clip *m, void *p, size_t bytes)
{
    if (!p)
        return;
    pthread_mutex_lock(&m->smu);
    if (!m->scratch || m->scratch_bytes < bytes) {
        void *old = m->scratch;
        m->scratch = p;
        m->scratch_bytes = bytes;
        p = old;
    }
    pthread_mutex_unlock(&m->smu);
    m->be->free(p);
}

#define AL(n) (((n) + 255) / 256 * 256)

/* The device buffers of one batch of R rows (see the top of this file). */
typedef struct dev_bufs {
    float *x, *t;  /* F32 [R, D]: the residual stream, a product's output */
    void *h, *qkv, *a, *mm; /* the products' input type: [R, D], [R, 3D], [R, D], [R, max(I, ...)] */
} dev_bufs;

static size_t dev_rows_bytes(const tower_cfg *c, size_t rows, size_t mm_per_row, md_bt wt)
{
    const size_t D = c->hidden, ws = md_bt_size(wt);
    return AL(rows * D * 4) * 2 + AL(rows * D * ws) * 2 + AL(rows * 3 * D * ws) + AL(rows * mm_per_row * ws);
}

static char *dev_rows_carve(const tower_cfg *c, char *p, size_t rows, size_t mm_per_row, md_bt wt, dev_bufs *b)
{
    const size_t D = c->hidden, ws = md_bt_size(wt);
    b->x = (float *)p, p += AL(rows * D * 4);
    b->t = (float *)p, p += AL(rows * D * 4);
    b->h = p, p += AL(rows * D * ws);
    b->a = p, p += AL(rows * D * ws);
    b->qkv = p, p += AL(rows * 3 * D * ws);
    b->mm = p, p += AL(rows * mm_per_row * ws);
    return p;
}

/* L encoder layers over BATCH sequences of T tokens, then the final layernorm into b->h (type
 * WT). FIN_G/FIN_B: the tower's final norm. */
static md_status dev_layers(const md_clip *m, const tower *tw, const dev_tower *dt, const dev_bufs *b, int batch,
                            int t, int causal)
{
    const md_backend_i *be = m->be;
    const tower_cfg *c = &tw->c;
    const md_bt wt = md_prec_input(m->prec);
    const int D = c->hidden, I = c->inter, R = batch * t;
    const float *rb = NULL;
    const void *r = NULL;
    md_status st = MD_OK;
    for (int li = 0; li < c->layers; li++) {
        const dev_layer *l = &dt->l[li];
        TRY(be->add_layernorm(b->x, r, MD_BT_F32, rb, R, D, l->ln1_g, l->ln1_b, c->eps, b->h, wt));
        TRY(be->gemm(m->prec, b->h, D, R, D, l->qkv_w, NULL, 3 * D, b->qkv, wt, 0));
        TRY(be->attention_ex(b->qkv, wt, l->qkv_b, batch, t, c->heads, D / c->heads, causal, b->a, wt));
        TRY(be->gemm(m->prec, b->a, D, R, D, l->o_w, NULL, D, b->t, MD_BT_F32, 0));
        TRY(be->add_layernorm(b->x, b->t, MD_BT_F32, l->o_b, R, D, l->ln2_g, l->ln2_b, c->eps, b->h, wt));
        TRY(be->gemm(m->prec, b->h, D, R, D, l->fc1_w, NULL, I, b->mm, wt, 0));
        TRY(be->bias_act(c->act, b->mm, wt, l->fc1_b, R, I, b->mm, wt));
        TRY(be->gemm(m->prec, b->mm, I, R, I, l->fc2_w, NULL, D, b->t, MD_BT_F32, 0));
        r = b->t;
        rb = l->fc2_b;
    }
    TRY(be->add_layernorm(b->x, r, MD_BT_F32, rb, R, D, dt->fin_g, dt->fin_b, c->eps, b->h, wt));
out:
    return st;
}

static md_status dev_embed_tokens(md_clip *m, const int *ids, int n, int pos, float *out, char *err, size_t errlen)
{
    const md_backend_i *be = m->be;
    const tower *tw = &m->t;
    const tower_cfg *c = &tw->c;
    const int D = c->hidden, E = m->dim;
    const md_bt wt = md_prec_input(m->prec);
    const size_t need = dev_rows_bytes(c, (size_t)n, (size_t)c->inter, wt) + AL((size_t)E * 4);
    void *mem = NULL;
    size_t got = 0;
    float *x = malloc((size_t)n * D * sizeof *x);
    md_status st = x ? dev_scratch_get(m, need, &mem, &got) : MD_ERR_NOMEM;
    if (st != MD_OK)
        goto out;
    dev_bufs b;
    float *o = (float *)dev_rows_carve(c, mem, (size_t)n, (size_t)c->inter, wt, &b);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++)
            x[(size_t)i * D + j] = tw->tok[(size_t)ids[i] * D + j] + tw->pos[(size_t)i * D + j];
    TRY(be->upload(b.x, x, (size_t)n * D * sizeof *x));
    TRY(dev_layers(m, tw, &m->dt, &b, 1, n, 1));
    TRY(be->gemm(m->prec, (char *)b.h + (size_t)pos * D * md_bt_size(wt), D, 1, D, m->dt.proj, NULL, E, o,
                 MD_BT_F32, 0));
    TRY(be->l2norm(o, 1, E));
    TRY(be->download(out, o, (size_t)E * sizeof *out));
out:
    if (st != MD_OK)
        md_errf(err, errlen, st, "text encoder on %s: %s", be->name, be->last_error());
    dev_scratch_put(m, mem, got);
    free(x);
    return st;
}

/* Images per chunk for the device path: what fits in the backend's memory left under the gpu_mem
 * budget (the kept scratch buffer counted as ours), 64 MiB kept aside on a device for cuBLAS's own
 * workspaces, SCRATCH_BUDGET at most in host memory; at most 512 images, or max_batch. */
static int dev_chunk(md_clip *m, size_t per, int n)
{
    size_t a = 0;
    if (m->be->mem_info(NULL, &a) != MD_OK)
        return 0;
    if (a > SIZE_MAX - m->scratch_bytes)
        a = SIZE_MAX - m->scratch_bytes;
    a += m->scratch_bytes; /* the kept buffer is ours to reuse */
    size_t avail = m->be->host_memory ? (a < SCRATCH_BUDGET ? a : SCRATCH_BUDGET)
                                      : a > ((size_t)64 << 20) ? (a - ((size_t)64 << 20)) / 10 * 9 : 0;
    size_t c = avail / per;
    int cap = m->max_batch ? m->max_batch : 512;
    if (c > (size_t)cap)
        c = (size_t)cap;
    return (int)(c < (size_t)n ? c : (size_t)n);
}

static md_status dev_embed_images(md_clip *m, const float *pixels, int n, float *out, float *tokens, char *err,
                                  size_t errlen)
{
    const md_backend_i *be = m->be;
    const tower *tw = &m->v;
    const tower_cfg *c = &tw->c;
    const int D = c->hidden, I = c->inter, S = c->image, P = c->patch, NP = m->grid * m->grid, T = NP + 1;
    const int K = 3 * P * P, E = m->dim;
    const md_bt wt = md_prec_input(m->prec);
    /* mm also holds the im2col patches [NP, K] of each image. */
    const size_t mmw = ((size_t)T * I > (size_t)NP * K ? (size_t)T * I : (size_t)NP * K + T - 1) / T;
    const size_t per_px = (size_t)3 * S * S * 4, per_out = (size_t)(tokens ? T : 1) * E * 4;
    const size_t per = dev_rows_bytes(c, T, mmw, wt) + per_px + per_out + 3 * 256;
    void *mem = NULL;
    size_t got = 0;
    md_status st = MD_OK;
    const int chunk = dev_chunk(m, per, n);
    if (chunk < 1) {
        size_t a = 0;
        be->mem_info(NULL, &a);
        return md_errf(err, errlen, MD_ERR_NOMEM,
                    "image encoder on %s: not enough memory for one image (%.1f MiB needed, %.1f MiB available "
                    "under the gpu_mem budget)",
                    be->name, per / 1048576.0, a / 1048576.0);
    }
    const size_t need = dev_rows_bytes(c, (size_t)chunk * T, mmw, wt) + AL(per_px * chunk) + AL(per_out * chunk);
    if ((st = dev_scratch_get(m, need, &mem, &got)) != MD_OK)
        goto out;
    dev_bufs b;
    char *p = dev_rows_carve(c, mem, (size_t)chunk * T, mmw, wt, &b);
    float *px = (float *)p, *o = (float *)(p + AL(per_px * chunk));
    for (int b0 = 0; b0 < n; b0 += chunk) {
        const int B = n - b0 < chunk ? n - b0 : chunk, R = B * T;
        TRY(be->upload(px, pixels + (size_t)b0 * 3 * S * S, (size_t)B * per_px));
        /* Patch embedding as one matrix product, then [CLS | patches] + positions, pre-LN. */
        TRY(be->im2col(px, B, S, P, b.mm, wt));
        TRY(be->gemm(m->prec, b.mm, K, B * NP, K, m->dv.patch_w, NULL, D, b.t, MD_BT_F32, 0));
        TRY(be->embed_tokens(b.t, m->dv.cls, m->dv.pos, B, NP, D, b.x));
        TRY(be->add_layernorm(b.x, NULL, MD_BT_F32, NULL, R, D, m->dv.pre_g, m->dv.pre_b, c->eps, b.x, MD_BT_F32));
        TRY(dev_layers(m, tw, &m->dv, &b, B, T, 0));
        float *emb = out + (size_t)b0 * E;
        if (tokens) {
            float *tok = tokens + (size_t)b0 * T * E;
            TRY(be->gemm(m->prec, b.h, D, R, D, m->dv.proj, NULL, E, o, MD_BT_F32, 0));
            TRY(be->download(tok, o, (size_t)R * E * sizeof *tok));
            for (int i = 0; i < B; i++)
                memcpy(emb + (size_t)i * E, tok + (size_t)i * T * E, (size_t)E * sizeof *emb);
            TRY(md_backend_cpu()->l2norm(emb, B, E));
        } else {
            /* Only the CLS rows: every T-th row of h. */
            TRY(be->gemm(m->prec, b.h, T * D, B, D, m->dv.proj, NULL, E, o, MD_BT_F32, 0));
            TRY(be->l2norm(o, B, E));
            TRY(be->download(emb, o, (size_t)B * E * sizeof *emb));
        }
    }
out:
    if (st != MD_OK && err && errlen && !err[0])
        md_errf(err, errlen, st, "image encoder on %s: %s", be->name, be->last_error());
    dev_scratch_put(m, mem, got);
    return st;
}

#undef AL

md_status md_clip_embed_tokens(md_clip *m, const int *ids, int n, float *out, char *err, size_t errlen)
{
    md_status st = MD_OK;
    const tower *tw = &m->t;
    const tower_cfg *c = &tw->c;
    const int D = c->hidden, I = c->inter;
    float *buf = NULL;
    if (err && errlen)
        err[0] = 0;
    if (!ids || n < 1 || n > c->max_pos)
        return md_errf(err, errlen, MD_ERR_INVALID, "%d tokens: 1 to %d expected", n, c->max_pos);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return md_errf(err, errlen, MD_ERR_INVALID, "token id %d at %d is outside the vocabulary [0, %d)", ids[i], i,
                        c->vocab);
    if (m->dev)
        return dev_embed_tokens(m, ids, n, pool_position(c, ids, n), out, err, errlen);
    size_t per = (size_t)n;
    buf = malloc(per * (size_t)(3 * D + 3 * D + I) * sizeof *buf);
    if (!buf)
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    float *x = buf, *h = x + per * D, *a = h + per * D, *qkv = a + per * D, *mm = qkv + per * 3 * D;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++)
            x[(size_t)i * D + j] = tw->tok[(size_t)ids[i] * D + j] + tw->pos[(size_t)i * D + j];
    for (int li = 0; li < c->layers; li++)
        TRY(encoder_layer(m->be, c, &tw->l[li], x, h, qkv, a, mm, 1, n, 1));
    const int pos = pool_position(c, ids, n);
    /* final_layer_norm is per row: only the pooled row is needed. */
    TRY(m->be->layernorm(x + (size_t)pos * D, 1, D, tw->fin_g, tw->fin_b, c->eps, h));
    TRY(m->be->linear(h, 1, D, tw->proj, NULL, m->dim, out, 0));
    TRY(m->be->l2norm(out, 1, m->dim));
out:
    if (st != MD_OK && err && errlen && !err[0])
        md_errf(err, errlen, st, "text encoder: backend %s failed: %s", m->be->name, md_status_str(st));
    free(buf);
    return st;
}

md_status md_clip_embed_text(md_clip *m, const char *text, float *out, int *ids, int *n_ids, char *err,
                             size_t errlen)
{
    int tmp[MD_CLIP_MAX_TOKENS], n = 0;
    int *dst = ids ? ids : tmp;
    if (err && errlen)
        err[0] = 0;
    if (!text)
        return md_errf(err, errlen, MD_ERR_INVALID, "no text");
    md_status st = md_tokenizer_encode(m->tok, text, m->ctx, dst, &n, err, errlen);
    if (st != MD_OK)
        return st;
    if (n_ids)
        *n_ids = n;
    return md_clip_embed_tokens(m, dst, n, out, err, errlen);
}

/* im2col of non-overlapping patches: row (b, gy, gx) holds channel-major, then row-major pixels
 * of its patch, the order of patch_embedding.weight [D, 3, P, P] flattened. */
static void im2col(const float *px, int b, int s, int p, int grid, float *cols)
{
    const int k = 3 * p * p;
    for (int i = 0; i < b; i++)
        for (int gy = 0; gy < grid; gy++)
            for (int gx = 0; gx < grid; gx++) {
                float *row = cols + ((size_t)(i * grid + gy) * grid + gx) * k;
                for (int ch = 0; ch < 3; ch++)
                    for (int y = 0; y < p; y++) {
                        const float *src = px + (((size_t)i * 3 + ch) * s + (size_t)gy * p + y) * s + (size_t)gx * p;
                        memcpy(row + (ch * p + y) * p, src, (size_t)p * sizeof *src);
                    }
            }
}

md_status md_clip_embed_images(md_clip *m, const float *pixels, int n, float *out, float *tokens, char *err,
                               size_t errlen)
{
    md_status st = MD_OK;
    const tower *tw = &m->v;
    const tower_cfg *c = &tw->c;
    const int D = c->hidden, I = c->inter, S = c->image, P = c->patch, NP = m->grid * m->grid, T = NP + 1;
    const int K = 3 * P * P, E = m->dim;
    float *buf = NULL;
    if (err && errlen)
        err[0] = 0;
    if (n < 0 || (n > 0 && (!pixels || !out)))
        return md_errf(err, errlen, MD_ERR_INVALID, "embed_images: bad arguments");
    if (n == 0)
        return MD_OK;
    if (m->dev)
        return dev_embed_images(m, pixels, n, out, tokens, err, errlen);
    /* Per image: x, h, a [T, D], qkv [T, 3D], mm [T, max(I, ...)] (mm also holds the im2col
     * patches [NP, K] and the patch embeddings are written to h). */
    size_t mmw = (size_t)T * I > (size_t)NP * K ? (size_t)T * I : (size_t)NP * K;
    size_t per = (size_t)T * 6 * D + mmw;
    int chunk = (int)(SCRATCH_BUDGET / (per * sizeof(float)));
    if (m->max_batch && chunk > m->max_batch)
        chunk = m->max_batch;
    chunk = chunk < 1 ? 1 : chunk > n ? n : chunk;
    buf = malloc((size_t)chunk * per * sizeof *buf);
    if (!buf)
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory for %d images", chunk);
    for (int b0 = 0; b0 < n; b0 += chunk) {
        const int B = n - b0 < chunk ? n - b0 : chunk, R = B * T;
        float *x = buf, *h = x + (size_t)R * D, *a = h + (size_t)R * D, *qkv = a + (size_t)R * D,
              *mm = qkv + (size_t)R * 3 * D;
        /* Patch embedding as one matrix product. */
        im2col(pixels + (size_t)b0 * 3 * S * S, B, S, P, m->grid, mm);
        TRY(m->be->linear(mm, B * NP, K, tw->patch_w, NULL, D, h, 0));
        for (int i = 0; i < B; i++) {
            float *xi = x + (size_t)i * T * D;
            memcpy(xi, tw->cls, (size_t)D * sizeof *xi);
            memcpy(xi + D, h + (size_t)i * NP * D, (size_t)NP * D * sizeof *xi);
            TRY(m->be->add(xi, tw->pos, (size_t)T * D));
        }
        TRY(m->be->layernorm(x, R, D, tw->pre_g, tw->pre_b, c->eps, x));
        for (int li = 0; li < c->layers; li++)
            TRY(encoder_layer(m->be, c, &tw->l[li], x, h, qkv, a, mm, B, T, 0));
        float *emb = out + (size_t)b0 * E;
        if (tokens) {
            float *tok = tokens + (size_t)b0 * T * E;
            TRY(m->be->layernorm(x, R, D, tw->fin_g, tw->fin_b, c->eps, h));
            TRY(m->be->linear(h, R, D, tw->proj, NULL, E, tok, 0));
            for (int i = 0; i < B; i++)
                memcpy(emb + (size_t)i * E, tok + (size_t)i * T * E, (size_t)E * sizeof *emb);
        } else {
            for (int i = 0; i < B; i++)
                memcpy(h + (size_t)i * D, x + (size_t)i * T * D, (size_t)D * sizeof *h);
            TRY(m->be->layernorm(h, B, D, tw->fin_g, tw->fin_b, c->eps, h));
            TRY(m->be->linear(h, B, D, tw->proj, NULL, E, emb, 0));
        }
        TRY(m->be->l2norm(emb, B, E));
    }
out:
    if (st != MD_OK && err && errlen && !err[0])
        md_errf(err, errlen, st, "image encoder: backend %s failed: %s", m->be->name, md_status_str(st));
    free(buf);
    return st;
}
