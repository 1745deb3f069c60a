/* clip_load.c - loading a CLIP checkpoint directory (config.json, model.safetensors, vocab.json +
 * merges.txt) into an md_clip: config.json read with transformers' defaults and checked, every
 * tensor's name, shape and dtype checked in a sizing pass before the weights are converted into
 * the one F32 block, the device copy of the weights for the device path (see the top of clip.c),
 * md_clip_free and the accessors. The forward passes are in clip.c; what both files share is in
 * clip_internal.h. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cJSON.h"
#include "clip_internal.h"
#include "../base/log.h"
#include "safetensors.h"
#include "sha256.h"
#include "tokenizer.h"

#define MAX_CONFIG_BYTES (4u << 20)

/* ---------------------------------------------------------------- config.json */

typedef struct cfg_ctx {
    const char *where; /* "text_config" etc., for messages */
    char *err;
    size_t errlen;
} cfg_ctx;

/* An integer V in [LO, HI] (the value in *OUT on success). */
static md_status cfg_num(const cfg_ctx *c, const cJSON *v, const char *key, long lo, long hi, int *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return md_errf(c->err, c->errlen, MD_ERR_INVALID, "config.json: %s.%s is not an integer", c->where, key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return md_errf(c->err, c->errlen, MD_ERR_INVALID, "config.json: %s.%s = %.0f is out of range [%ld, %ld]",
                    c->where, key, v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return MD_OK;
}

/* An integer KEY of OBJ in [LO, HI]; absent or null keeps *OUT (the default). */
static md_status cfg_int(const cfg_ctx *c, const cJSON *obj, const char *key, long lo, long hi, int *out)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!v || cJSON_IsNull(v))
        return MD_OK;
    return cfg_num(c, v, key, lo, hi, out);
}

/* image_size / patch_size may also be written [h, w]; only square ones are supported. */
static md_status cfg_side(const cfg_ctx *c, const cJSON *obj, const char *key, int *out)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!cJSON_IsArray(v))
        return cfg_int(c, obj, key, 1, 8192, out);
    int h = 0, w = 0;
    md_status st;
    if (cJSON_GetArraySize(v) != 2)
        return md_errf(c->err, c->errlen, MD_ERR_INVALID, "config.json: %s.%s must be an integer or [h, w]", c->where,
                    key);
    if ((st = cfg_num(c, cJSON_GetArrayItem(v, 0), key, 1, 8192, &h)) ||
        (st = cfg_num(c, cJSON_GetArrayItem(v, 1), key, 1, 8192, &w)))
        return st;
    if (h != w)
        return md_errf(c->err, c->errlen, MD_ERR_UNSUPPORTED, "config.json: %s.%s: only square sizes are supported",
                    c->where, key);
    *out = h;
    return MD_OK;
}

static md_status cfg_act(const cfg_ctx *c, const cJSON *obj, tower_cfg *t)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, "hidden_act") : NULL;
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v))
            return md_errf(c->err, c->errlen, MD_ERR_INVALID, "config.json: %s.hidden_act is not a string", c->where);
        snprintf(t->act_name, sizeof t->act_name, "%s", v->valuestring);
    }
    const char *a = t->act_name;
    if (strcmp(a, "quick_gelu") == 0)
        t->act = MD_OP_QUICK_GELU;
    else if (strcmp(a, "gelu") == 0)
        t->act = MD_OP_GELU;
    else if (strcmp(a, "gelu_new") == 0 || strcmp(a, "gelu_pytorch_tanh") == 0 || strcmp(a, "gelu_fast") == 0)
        t->act = MD_OP_GELU_TANH;
    else
        return md_errf(c->err, c->errlen, MD_ERR_UNSUPPORTED,
                    "config.json: %s.hidden_act \"%.40s\" is not supported (quick_gelu, gelu, gelu_new, "
                    "gelu_pytorch_tanh, gelu_fast)",
                    c->where, a);
    return MD_OK;
}

static md_status cfg_eps(const cfg_ctx *c, const cJSON *obj, float *eps)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, "layer_norm_eps") : NULL;
    if (!v || cJSON_IsNull(v))
        return MD_OK;
    /* Checked as the float the towers use: a tiny double (1e-76) passes "> 0" but becomes 0, and
     * a LayerNorm with eps 0 turns a constant row into NaN (found by fuzz_clip_config). */
    const float f = cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble <= 1 ? (float)v->valuedouble : 0.0f;
    if (!(f > 0))
        return md_errf(c->err, c->errlen, MD_ERR_INVALID,
                       "config.json: %s.layer_norm_eps must be a number in (0, 1] that is not 0 as a 32-bit float",
                       c->where);
    *eps = f;
    return MD_OK;
}

/* The settings shared by both towers. */
static md_status cfg_common(const cfg_ctx *c, const cJSON *o, tower_cfg *t)
{
    md_status st;
    if ((st = cfg_int(c, o, "hidden_size", 1, 16384, &t->hidden)) || (st = cfg_int(c, o, "intermediate_size", 1, 65536, &t->inter)) ||
        (st = cfg_int(c, o, "num_hidden_layers", 0, 256, &t->layers)) ||
        (st = cfg_int(c, o, "num_attention_heads", 1, 1024, &t->heads)) || (st = cfg_act(c, o, t)) ||
        (st = cfg_eps(c, o, &t->eps)))
        return st;
    if (t->hidden % t->heads)
        return md_errf(c->err, c->errlen, MD_ERR_INVALID,
                    "config.json: %s: hidden_size %d is not a multiple of num_attention_heads %d", c->where, t->hidden,
                    t->heads);
    return MD_OK;
}

/* transformers builds a tower's config from its defaults plus text_config_dict (vision_config_dict)
 * when that key holds an object, else plus text_config (vision_config): CLIPConfig.__post_init__
 * overwrites text_config with the whole defaulted *_config_dict. */
static const cJSON *tower_obj(const cJSON *root, const char *name, const char **where)
{
    char k[64];
    snprintf(k, sizeof k, "%s_dict", name);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, k);
    if (cJSON_IsObject(d)) {
        *where = name[0] == 't' ? "text_config_dict" : "vision_config_dict";
        return d;
    }
    *where = name;
    return cJSON_GetObjectItemCaseSensitive(root, name);
}

md_status md_clip_parse_config(const char *path, const char *buf, size_t n, md_clip *m, char *err, size_t errlen)
{
    md_status st = MD_OK;
    cJSON *root = NULL;
    const char *endp = NULL;
    root = cJSON_ParseWithLengthOpts(buf, n, &endp, 0);
    if (!root || !cJSON_IsObject(root)) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "%s: not a JSON object (syntax error near byte %ld)", path,
                  endp ? (long)(endp - buf) : -1L);
        goto out;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "clip") != 0) {
        st = md_errf(err, errlen, MD_ERR_UNSUPPORTED, "%s: model_type \"%.40s\" is not a CLIP model (\"clip\")", path,
                  mt->valuestring);
        goto out;
    }
    m->demo = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "momentd_demo"));

    tower_cfg *t = &m->t.c, *v = &m->v.c;
    *t = (tower_cfg){.hidden = 512, .inter = 2048, .layers = 12, .heads = 8, .act_name = "quick_gelu",
                     .eps = 1e-5f, .vocab = 49408, .max_pos = 77, .bos = 49406, .eos = 49407, .pad = 1};
    *v = (tower_cfg){.hidden = 768, .inter = 3072, .layers = 12, .heads = 12, .act_name = "quick_gelu",
                     .eps = 1e-5f, .image = 224, .patch = 32, .channels = 3};
    m->dim = 512;
    cfg_ctx c = {"config", err, errlen};
    if ((st = cfg_int(&c, root, "projection_dim", 1, 16384, &m->dim)))
        goto out;

    const cJSON *to = tower_obj(root, "text_config", &c.where);
    if (to && !cJSON_IsObject(to) && !cJSON_IsNull(to)) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "config.json: %s is not an object", c.where);
        goto out;
    }
    if ((st = cfg_common(&c, to, t)) || (st = cfg_int(&c, to, "vocab_size", 1, 1 << 24, &t->vocab)) ||
        (st = cfg_int(&c, to, "max_position_embeddings", 2, 1 << 16, &t->max_pos)) ||
        (st = cfg_int(&c, to, "bos_token_id", INT_MIN, INT_MAX, &t->bos)) ||
        (st = cfg_int(&c, to, "pad_token_id", INT_MIN, INT_MAX, &t->pad)))
        goto out;
    const cJSON *eos = to ? cJSON_GetObjectItemCaseSensitive(to, "eos_token_id") : NULL;
    if (cJSON_IsArray(eos)) {
        st = md_errf(err, errlen, MD_ERR_UNSUPPORTED, "config.json: %s.eos_token_id: a list is not supported", c.where);
        goto out;
    }
    if ((st = cfg_int(&c, to, "eos_token_id", INT_MIN, INT_MAX, &t->eos)))
        goto out;

    const cJSON *vo = tower_obj(root, "vision_config", &c.where);
    if (vo && !cJSON_IsObject(vo) && !cJSON_IsNull(vo)) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "config.json: %s is not an object", c.where);
        goto out;
    }
    if ((st = cfg_common(&c, vo, v)) || (st = cfg_side(&c, vo, "image_size", &v->image)) ||
        (st = cfg_side(&c, vo, "patch_size", &v->patch)) || (st = cfg_int(&c, vo, "num_channels", 1, 64, &v->channels)))
        goto out;
    if (v->channels != 3) {
        st = md_errf(err, errlen, MD_ERR_UNSUPPORTED, "config.json: %s.num_channels %d (only 3 is supported)", c.where,
                  v->channels);
        goto out;
    }
    if (v->patch > v->image) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "config.json: %s: patch_size %d is larger than image_size %d",
                  c.where, v->patch, v->image);
        goto out;
    }
    m->grid = v->image / v->patch;
    m->ctx = t->max_pos < MD_CLIP_MAX_TOKENS ? t->max_pos : MD_CLIP_MAX_TOKENS;
out:
    cJSON_Delete(root);
    return st;
}

static md_status parse_config(const char *path, md_clip *m, char *err, size_t errlen)
{
    md_status st = MD_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return md_errf(err, errlen, errno == ENOENT ? MD_ERR_NOT_FOUND : MD_ERR_IO, "%s: %s", path, strerror(errno));
    buf = malloc(MAX_CONFIG_BYTES + 1);
    if (!buf) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t n = fread(buf, 1, MAX_CONFIG_BYTES + 1, f);
    if (ferror(f)) {
        st = md_errf(err, errlen, MD_ERR_IO, "%s: read error", path);
        goto out;
    }
    if (n > MAX_CONFIG_BYTES) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "%s: larger than 4 MiB: not a model config", path);
        goto out;
    }
    st = md_clip_parse_config(path, buf, n, m, err, errlen);
out:
    fclose(f);
    free(buf);
    return st;
}

/* ---------------------------------------------------------------- weights */

typedef struct loader {
    md_safetensors *st;
    const char *file;
    float *base; /* NULL in the sizing pass */
    size_t used; /* floats */
    char *err;
    size_t errlen;
} loader;

/* N floats of the block, 64-byte aligned; NULL while sizing. */
static float *reserve(loader *L, size_t n)
{
    float *p = L->base ? L->base + L->used : NULL;
    L->used += (n + 15) & ~(size_t)15;
    return p;
}

/* Checks that tensor NAME exists with shape [d0, d1, ...] (ND dims) and a float dtype; in the
 * load pass converts it to F32 at DST. */
static md_status fill(loader *L, float *dst, const char *name, int nd, ...)
{
    const md_st_tensor *t = md_safetensors_find(L->st, name);
    if (!t)
        return md_errf(L->err, L->errlen, MD_ERR_INVALID, "%s: tensor '%s' is missing (not a CLIPModel checkpoint?)",
                    L->file, name);
    if (t->dtype != MD_DT_F32 && t->dtype != MD_DT_F16 && t->dtype != MD_DT_BF16)
        return md_errf(L->err, L->errlen, MD_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 needed)",
                    L->file, name, md_dtype_name(t->dtype));
    int64_t want[MD_ST_MAX_DIMS];
    va_list ap;
    va_start(ap, nd);
    for (int i = 0; i < nd; i++)
        want[i] = va_arg(ap, int);
    va_end(ap);
    int same = t->ndim == nd;
    for (int i = 0; same && i < nd; i++)
        same = t->shape[i] == want[i];
    if (!same) {
        char a[128] = "", b[128] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(a + strlen(a), sizeof a - strlen(a), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        for (int i = 0; i < nd; i++)
            snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", i ? ", " : "", (long long)want[i]);
        return md_errf(L->err, L->errlen, MD_ERR_INVALID,
                    "%s: tensor '%s' has shape [%s] but config.json implies [%s]", L->file, name, a, b);
    }
    if (!dst)
        return MD_OK;
    md_status st = md_st_to_f32(t, dst);
    if (st != MD_OK)
        return md_errf(L->err, L->errlen, st, "%s: tensor '%s': cannot convert %s to F32", L->file, name,
                       md_dtype_name(t->dtype));
    /* NaN/Inf weights would load and turn every embedding into NaN: refused here, naming the tensor. */
    uint64_t first, bad = md_st_count_nonfinite(dst, t->numel, &first);
    if (bad)
        return md_errf(L->err, L->errlen, MD_ERR_INVALID,
                       "%s: tensor '%s' has %llu non-finite value%s (NaN/Inf; the first at element %llu)", L->file,
                       name, (unsigned long long)bad, bad == 1 ? "" : "s", (unsigned long long)first);
    return MD_OK;
}

#define OFF(p, n) ((p) ? (p) + (n) : NULL)

static md_status bind_layers(loader *L, tower *tw, const char *prefix)
{
    const int D = tw->c.hidden, I = tw->c.inter;
    char n[256];
    md_status st;
#define F(dst, suffix, ...)                                                                                  \
    do {                                                                                                     \
        snprintf(n, sizeof n, "%s.encoder.layers.%d.%s", prefix, i, suffix);                                 \
        if ((st = fill(L, dst, n, __VA_ARGS__)) != MD_OK)                                                    \
            return st;                                                                                       \
    } while (0)
    for (int i = 0; i < tw->c.layers; i++) {
        layer_w *l = &tw->l[i];
        l->ln1_g = reserve(L, D);
        l->ln1_b = reserve(L, D);
        l->qkv_w = reserve(L, (size_t)3 * D * D);
        l->qkv_b = reserve(L, (size_t)3 * D);
        l->o_w = reserve(L, (size_t)D * D);
        l->o_b = reserve(L, D);
        l->ln2_g = reserve(L, D);
        l->ln2_b = reserve(L, D);
        l->fc1_w = reserve(L, (size_t)I * D);
        l->fc1_b = reserve(L, I);
        l->fc2_w = reserve(L, (size_t)D * I);
        l->fc2_b = reserve(L, D);
        F(l->ln1_g, "layer_norm1.weight", 1, D);
        F(l->ln1_b, "layer_norm1.bias", 1, D);
        F(l->qkv_w, "self_attn.q_proj.weight", 2, D, D);
        F(OFF(l->qkv_w, (size_t)D * D), "self_attn.k_proj.weight", 2, D, D);
        F(OFF(l->qkv_w, (size_t)2 * D * D), "self_attn.v_proj.weight", 2, D, D);
        F(l->qkv_b, "self_attn.q_proj.bias", 1, D);
        F(OFF(l->qkv_b, D), "self_attn.k_proj.bias", 1, D);
        F(OFF(l->qkv_b, 2 * D), "self_attn.v_proj.bias", 1, D);
        F(l->o_w, "self_attn.out_proj.weight", 2, D, D);
        F(l->o_b, "self_attn.out_proj.bias", 1, D);
        F(l->ln2_g, "layer_norm2.weight", 1, D);
        F(l->ln2_b, "layer_norm2.bias", 1, D);
        F(l->fc1_w, "mlp.fc1.weight", 2, I, D);
        F(l->fc1_b, "mlp.fc1.bias", 1, I);
        F(l->fc2_w, "mlp.fc2.weight", 2, D, I);
        F(l->fc2_b, "mlp.fc2.bias", 1, D);
    }
#undef F
    return MD_OK;
}

/* Both passes over every weight: sizing (L->base NULL) and loading. */
static md_status bind_all(loader *L, md_clip *m)
{
    md_status st;
    tower *v = &m->v, *t = &m->t;
    const int VD = v->c.hidden, TD = t->c.hidden, P = v->c.patch, np = m->grid * m->grid;
#define G(dst, n, name, ...)                                                                                 \
    do {                                                                                                     \
        dst = reserve(L, n);                                                                                 \
        if ((st = fill(L, dst, name, __VA_ARGS__)) != MD_OK)                                                 \
            return st;                                                                                       \
    } while (0)
    G(v->patch_w, (size_t)VD * 3 * P * P, "vision_model.embeddings.patch_embedding.weight", 4, VD, 3, P, P);
    G(v->cls, VD, "vision_model.embeddings.class_embedding", 1, VD);
    G(v->pos, (size_t)(np + 1) * VD, "vision_model.embeddings.position_embedding.weight", 2, np + 1, VD);
    G(v->pre_g, VD, "vision_model.pre_layrnorm.weight", 1, VD);
    G(v->pre_b, VD, "vision_model.pre_layrnorm.bias", 1, VD);
    if ((st = bind_layers(L, v, "vision_model")) != MD_OK)
        return st;
    G(v->fin_g, VD, "vision_model.post_layernorm.weight", 1, VD);
    G(v->fin_b, VD, "vision_model.post_layernorm.bias", 1, VD);
    G(v->proj, (size_t)m->dim * VD, "visual_projection.weight", 2, m->dim, VD);

    G(t->tok, (size_t)t->c.vocab * TD, "text_model.embeddings.token_embedding.weight", 2, t->c.vocab, TD);
    G(t->pos, (size_t)t->c.max_pos * TD, "text_model.embeddings.position_embedding.weight", 2, t->c.max_pos, TD);
    if ((st = bind_layers(L, t, "text_model")) != MD_OK)
        return st;
    G(t->fin_g, TD, "text_model.final_layer_norm.weight", 1, TD);
    G(t->fin_b, TD, "text_model.final_layer_norm.bias", 1, TD);
    G(t->proj, (size_t)m->dim * TD, "text_projection.weight", 2, m->dim, TD);
#undef G
    return MD_OK;
}

/* ---------------------------------------------------------------- the device path: weights */

static int getenv_flag(const char *name)
{
    const char *v = getenv(name);
    return v && strcmp(v, "1") == 0;
}

static const md_op DEV_OPS[] = {MD_OP_MEMORY,       MD_OP_CONVERT,      MD_OP_BIAS_ACT,    MD_OP_ADD_LAYERNORM,
                                MD_OP_ATTENTION_EX, MD_OP_PATCH_EMBED,  MD_OP_EMBED_TOKENS, MD_OP_L2NORM};

/* Lays out the device weights: a sizing pass (HOST NULL) gives the bytes; the second converts
 * each tensor into HOST at its offset and points the dev_tower fields at BASE + offset. */
typedef struct dlayout {
    char *host;
    char *base;
    size_t off;
    md_bt wt;
} dlayout;

static void *dl_put(dlayout *d, const float *src, size_t n, md_bt t)
{
    size_t o = d->off;
    d->off += (n * md_bt_size(t) + 255) / 256 * 256;
    if (!d->host)
        return NULL;
    md_backend_cpu()->convert(src, MD_BT_F32, d->host + o, t, n);
    return d->base + o;
}

static void dl_tower(dlayout *d, const tower *tw, dev_tower *dt, int vision, int dim)
{
    const int D = tw->c.hidden, I = tw->c.inter;
    for (int i = 0; i < tw->c.layers; i++) {
        const layer_w *l = &tw->l[i];
        dev_layer *o = &dt->l[i];
        o->qkv_w = dl_put(d, l->qkv_w, (size_t)3 * D * D, d->wt);
        o->o_w = dl_put(d, l->o_w, (size_t)D * D, d->wt);
        o->fc1_w = dl_put(d, l->fc1_w, (size_t)I * D, d->wt);
        o->fc2_w = dl_put(d, l->fc2_w, (size_t)D * I, d->wt);
        o->ln1_g = dl_put(d, l->ln1_g, D, MD_BT_F32);
        o->ln1_b = dl_put(d, l->ln1_b, D, MD_BT_F32);
        o->qkv_b = dl_put(d, l->qkv_b, (size_t)3 * D, MD_BT_F32);
        o->o_b = dl_put(d, l->o_b, D, MD_BT_F32);
        o->ln2_g = dl_put(d, l->ln2_g, D, MD_BT_F32);
        o->ln2_b = dl_put(d, l->ln2_b, D, MD_BT_F32);
        o->fc1_b = dl_put(d, l->fc1_b, I, MD_BT_F32);
        o->fc2_b = dl_put(d, l->fc2_b, D, MD_BT_F32);
    }
    if (vision) {
        const int K = 3 * tw->c.patch * tw->c.patch, np = (tw->c.image / tw->c.patch) * (tw->c.image / tw->c.patch);
        dt->patch_w = dl_put(d, tw->patch_w, (size_t)D * K, d->wt);
        dt->cls = dl_put(d, tw->cls, D, MD_BT_F32);
        dt->pos = dl_put(d, tw->pos, (size_t)(np + 1) * D, MD_BT_F32);
        dt->pre_g = dl_put(d, tw->pre_g, D, MD_BT_F32);
        dt->pre_b = dl_put(d, tw->pre_b, D, MD_BT_F32);
    }
    dt->fin_g = dl_put(d, tw->fin_g, D, MD_BT_F32);
    dt->fin_b = dl_put(d, tw->fin_b, D, MD_BT_F32);
    dt->proj = dl_put(d, tw->proj, (size_t)dim * D, d->wt);
}

static void dev_free(md_clip *m)
{
    if (m->dev || m->dblock || m->scratch) {
        m->be->free(m->scratch);
        m->be->free(m->dblock);
    }
    m->scratch = m->dblock = NULL;
    m->scratch_bytes = 0;
    free(m->dv.l);
    free(m->dt.l);
    m->dv.l = m->dt.l = NULL;
    if (m->smu_init)
        pthread_mutex_destroy(&m->smu);
    m->smu_init = 0;
    m->dev = 0;
}

/* Copies the weights to the backend for the device path. Errors leave the last_error message. */
static md_status dev_setup(md_clip *m)
{
    const md_backend_i *be = m->be;
    m->prec = be->host_memory ? MD_PREC_F32 : MD_PREC_F16;
    const char *pe = getenv("MD_CUDA_PRECISION");
    if (pe && pe[0] && md_prec_parse(pe, &m->prec) != MD_OK)
        md_warn("clip: MD_CUDA_PRECISION=%s is not f32, tf32, f16 or bf16: using %s", pe, md_prec_name(m->prec));
    for (size_t i = 0; i < sizeof DEV_OPS / sizeof *DEV_OPS; i++)
        if (!be->supports(DEV_OPS[i]))
            return MD_ERR_UNSUPPORTED;
    if (!be->supports(md_prec_op(m->prec)) || !be->supports(m->v.c.act) || !be->supports(m->t.c.act))
        return MD_ERR_UNSUPPORTED;
    m->dv.l = calloc((size_t)m->v.c.layers + 1, sizeof *m->dv.l);
    m->dt.l = calloc((size_t)m->t.c.layers + 1, sizeof *m->dt.l);
    if (!m->dv.l || !m->dt.l)
        return MD_ERR_NOMEM;
    dlayout d = {NULL, NULL, 0, md_prec_input(m->prec)};
    dl_tower(&d, &m->v, &m->dv, 1, m->dim);
    dl_tower(&d, &m->t, &m->dt, 0, m->dim);
    const size_t bytes = d.off;
    md_status st = be->alloc(bytes, &m->dblock);
    if (st != MD_OK)
        return st;
    d.host = aligned_alloc(256, bytes);
    if (!d.host)
        return MD_ERR_NOMEM;
    d.base = m->dblock;
    d.off = 0;
    dl_tower(&d, &m->v, &m->dv, 1, m->dim);
    dl_tower(&d, &m->t, &m->dt, 0, m->dim);
    st = be->upload(m->dblock, d.host, bytes);
    free(d.host);
    if (st != MD_OK)
        return st;
    if (pthread_mutex_init(&m->smu, NULL) != 0)
        return MD_ERR_NOMEM;
    m->smu_init = 1;
    m->dev = 1;
    md_info("clip: weights on %s: %.1f MiB (%s matrices)", be->name, bytes / 1048576.0, md_prec_name(m->prec));
    return MD_OK;
}

static const md_op NEEDED_OPS[] = {MD_OP_LINEAR, MD_OP_LAYERNORM, MD_OP_ATTENTION, MD_OP_ADD, MD_OP_L2NORM};

static const char *dtype_summary(const md_safetensors *st)
{
    int f32 = 0, f16 = 0, bf16 = 0;
    for (int i = 0; i < md_safetensors_count(st); i++) {
        md_dtype d = md_safetensors_at(st, i)->dtype;
        f32 += d == MD_DT_F32;
        f16 += d == MD_DT_F16;
        bf16 += d == MD_DT_BF16;
    }
    if (f16 && !f32 && !bf16)
        return "F16";
    if (bf16 && !f32 && !f16)
        return "BF16";
    if (f32 && !f16 && !bf16)
        return "F32";
    return "mixed-precision";
}

md_status md_clip_load(const char *dir, const md_backend_i *be, md_clip **out, char *err, size_t errlen)
{
    md_status st = MD_OK;
    md_clip *m = NULL;
    md_safetensors *sf = NULL;
    char path[PATH_MAX], path2[PATH_MAX];
    struct stat sb;
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    if (!dir || !dir[0])
        return md_errf(err, errlen, MD_ERR_INVALID, "no model directory given");
    if (stat(dir, &sb) != 0)
        return md_errf(err, errlen, errno == ENOENT || errno == ENOTDIR ? MD_ERR_NOT_FOUND : MD_ERR_IO,
                    "%s: %s (not a model directory)", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return md_errf(err, errlen, MD_ERR_NOT_FOUND, "%s: not a model directory (a Hugging Face CLIP checkpoint "
                    "directory holds config.json, model.safetensors, vocab.json, merges.txt)", dir);
    m = calloc(1, sizeof *m);
    if (!m)
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((st = parse_config(path, m, err, errlen)) != MD_OK)
        goto out;

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (stat(path, &sb) != 0) {
        snprintf(path2, sizeof path2, "%s/model.safetensors.index.json", dir);
        struct stat s2;
        if (stat(path2, &s2) == 0)
            st = md_errf(err, errlen, MD_ERR_UNSUPPORTED, "%s: sharded checkpoints are not supported: merge the shards into model.safetensors", dir);
        else {
            snprintf(path2, sizeof path2, "%s/pytorch_model.bin", dir);
            st = md_errf(err, errlen, MD_ERR_NOT_FOUND, "%s: no model.safetensors%s", dir,
                      stat(path2, &s2) == 0 ? " (only pytorch_model.bin, which momentd does not read: download the "
                                              "safetensors revision or convert it)"
                                            : "");
        }
        goto out;
    }
    if ((st = md_safetensors_open(path, &sf, err, errlen)) != MD_OK)
        goto out;
    m->v.l = calloc((size_t)m->v.c.layers + 1, sizeof *m->v.l);
    m->t.l = calloc((size_t)m->t.c.layers + 1, sizeof *m->t.l);
    if (!m->v.l || !m->t.l) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    loader L = {sf, path, NULL, 0, err, errlen};
    if ((st = bind_all(&L, m)) != MD_OK) /* sizing pass: checks every name, shape and dtype */
        goto out;
    m->block_floats = L.used;
    if (L.used > SIZE_MAX / sizeof(float) || !(m->block = aligned_alloc(64, L.used * sizeof(float)))) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "%s: out of memory for %zu MiB of weights", dir,
                  L.used * sizeof(float) >> 20);
        goto out;
    }
    L.base = m->block;
    L.used = 0;
    if ((st = bind_all(&L, m)) != MD_OK)
        goto out;
    const char *dts = dtype_summary(sf);
    md_safetensors_free(sf);
    sf = NULL;

    snprintf(path, sizeof path, "%s/vocab.json", dir);
    snprintf(path2, sizeof path2, "%s/merges.txt", dir);
    if ((st = md_tokenizer_load(path, path2, &m->tok, err, errlen)) != MD_OK)
        goto out;
    int nv = md_tokenizer_vocab_size(m->tok);
    if (nv > m->t.c.vocab) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "%s: vocab.json has %d tokens but the text model only %d (vocab_size)",
                  dir, nv, m->t.c.vocab);
        goto out;
    }

    /* transformers pools at the first eos_token_id; if the tokenizer never emits it, every text
     * would pool at position 0. Allowed (transformers does the same), but worth a loud warning. */
    if (m->t.c.eos != 2 && m->t.c.eos != md_tokenizer_eos_id(m->tok))
        md_warn("clip: %s: config eos_token_id %d is not the tokenizer's <|endoftext|> (%d): text embeddings "
                "will pool at the first token",
                dir, m->t.c.eos, md_tokenizer_eos_id(m->tok));

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((st = md_sha256_file(path, m->sha, NULL)) != MD_OK) {
        md_errf(err, errlen, st, "%s: cannot hash", path);
        goto out;
    }

    m->be = be ? be : md_backend_cpu();
    for (size_t i = 0; i < sizeof NEEDED_OPS / sizeof *NEEDED_OPS; i++) {
        md_op need[] = {NEEDED_OPS[i], m->v.c.act, m->t.c.act};
        for (int j = 0; j < 3; j++)
            if (!m->be->supports(need[j])) {
                md_info("clip: backend %s lacks op %s: the CLIP model runs on the CPU", m->be->name,
                        md_op_name(need[j]));
                m->be = md_backend_cpu();
                break;
            }
    }
    if ((!m->be->host_memory || getenv_flag("MD_CLIP_DEVICE_PATH")) && dev_setup(m) != MD_OK) {
        md_warn("clip: cannot run on %s (%s): the CLIP model runs on the CPU", m->be->name, m->be->last_error());
        dev_free(m);
        m->be = md_backend_cpu();
    }
    snprintf(m->desc, sizeof m->desc,
             "CLIP ViT %dpx/%d, width %d, %d layers; text width %d, %d layers, %d tokens; embedding %d; %s weights%s",
             m->v.c.image, m->v.c.patch, m->v.c.hidden, m->v.c.layers, m->t.c.hidden, m->t.c.layers, nv, m->dim, dts,
             m->demo ? "; DEMO model (random weights, not meaningful)" : "");
    if (m->dev) {
        size_t l = strlen(m->desc);
        snprintf(m->desc + l, sizeof m->desc - l, "; on %s, %s matrix products", m->be->name, md_prec_name(m->prec));
    }
    *out = m;
    m = NULL;
out:
    md_safetensors_free(sf);
    md_clip_free(m);
    return st;
}

void md_clip_free(md_clip *m)
{
    if (!m)
        return;
    dev_free(m);
    md_tokenizer_free(m->tok);
    free(m->block);
    free(m->v.l);
    free(m->t.l);
    free(m);
}

int md_clip_dim(const md_clip *m) { return m->dim; }
int md_clip_image_size(const md_clip *m) { return m->v.c.image; }
int md_clip_patch_size(const md_clip *m) { return m->v.c.patch; }
int md_clip_n_patches(const md_clip *m) { return m->grid * m->grid; }
int md_clip_vision_width(const md_clip *m) { return m->v.c.hidden; }
int md_clip_is_demo(const md_clip *m) { return m->demo; }
const char *md_clip_weights_sha256(const md_clip *m) { return m->sha; }
const char *md_clip_describe(const md_clip *m) { return m->desc; }
const md_backend_i *md_clip_backend(const md_clip *m) { return m->be; }
void md_clip_set_max_batch(md_clip *m, int n) { m->max_batch = n > 0 ? n : 0; }
const char *md_clip_token_str(const md_clip *m, int id) { return md_tokenizer_token(m->tok, id); }

