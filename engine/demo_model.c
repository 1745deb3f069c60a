/* demo_model.c - writes momentd's demo CLIP checkpoint: tiny, random weights, real layout.
 *
 * With no model configured the daemon still has to start and answer (the README's run command
 * works offline), so it writes this checkpoint and loads it through the same md_clip_load() as a
 * real one. The directory is a valid Hugging Face CLIP checkpoint (transformers' CLIPModel and
 * CLIPTokenizer load it too):
 *
 *   config.json        CLIPConfig, "momentd_demo": true; ViT 224 px / patch 32 (49 patches, as
 *                      ViT-B/32), width 64, 2 layers, 4 heads; text width 64, 2 layers; embedding
 *                      512 wide (the joint space width of ViT-B/32, which the temporal encoder
 *                      defaults to); quick_gelu; eos_token_id 513 (pooling at the first end token)
 *   model.safetensors  F32, weights drawn from SEED (xorshift64* + Box-Muller): linear weights
 *                      N(0, 1/fan_in), layer norms 1 + N(0, 0.04), biases N(0, 0.04), embeddings
 *                      N(0, 0.25): activations stay O(1) so the outputs vary with the input
 *   vocab.json         byte-level: ids 0-255 the 256 byte symbols in GPT-2's bytes_to_unicode()
 *                      order, 256-511 the same with "</w>", 512 <|startoftext|>, 513 <|endoftext|>
 *   merges.txt         "#version: 0.2" and no merges: every character is its own token
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cJSON.h"
#include "clip.h"
#include "safetensors.h"

enum { V_IMAGE = 224, V_PATCH = 32, V_D = 64, V_HEADS = 4, V_LAYERS = 2, V_I = 256 };
enum { T_VOCAB = 514, T_POS = 77, T_D = 64, T_HEADS = 4, T_LAYERS = 2, T_I = 256, PROJ = 512 };
enum { MAX_TENSORS = 256 };

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}

static double rng_normal(rng *r)
{
    double u1 = ((rng_next(r) >> 11) + 1.0) / 9007199254740993.0, u2 = (rng_next(r) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef enum init_kind { INIT_LINEAR, INIT_NORM_W, INIT_SMALL, INIT_EMBED } init_kind;

typedef struct builder {
    md_st_write w[MAX_TENSORS];
    char names[MAX_TENSORS][96];
    float *data[MAX_TENSORS];
    int n;
    rng r;
    int oom;
} builder;

static void add(builder *b, const char *name, init_kind kind, int nd, int d0, int d1, int d2, int d3)
{
    if (b->n >= MAX_TENSORS || b->oom) {
        b->oom = 1;
        return;
    }
    md_st_write *w = &b->w[b->n];
    int64_t dims[4] = {d0, d1, d2, d3};
    size_t numel = 1;
    for (int i = 0; i < nd; i++) {
        w->shape[i] = dims[i];
        numel *= (size_t)dims[i];
    }
    float *p = malloc(numel * sizeof *p);
    if (!p) {
        b->oom = 1;
        return;
    }
    size_t fan_in = nd > 1 ? numel / (size_t)d0 : 1;
    for (size_t i = 0; i < numel; i++) {
        double g = rng_normal(&b->r);
        p[i] = (float)(kind == INIT_LINEAR   ? g / sqrt((double)fan_in)
                       : kind == INIT_NORM_W ? 1.0 + 0.2 * g
                       : kind == INIT_SMALL  ? 0.2 * g
                                             : 0.5 * g);
    }
    snprintf(b->names[b->n], sizeof b->names[b->n], "%s", name);
    w->name = b->names[b->n];
    w->dtype = MD_DT_F32;
    w->ndim = nd;
    w->data = p;
    b->data[b->n++] = p;
}

static void add_layers(builder *b, const char *prefix, int layers, int d, int inter)
{
    char n[96];
#define L(suffix, kind, nd, d0, d1)                                                                          \
    do {                                                                                                     \
        snprintf(n, sizeof n, "%s.encoder.layers.%d.%s", prefix, i, suffix);                                 \
        add(b, n, kind, nd, d0, d1, 0, 0);                                                                   \
    } while (0)
    for (int i = 0; i < layers; i++) {
        L("layer_norm1.weight", INIT_NORM_W, 1, d, 0);
        L("layer_norm1.bias", INIT_SMALL, 1, d, 0);
        L("self_attn.q_proj.weight", INIT_LINEAR, 2, d, d);
        L("self_attn.q_proj.bias", INIT_SMALL, 1, d, 0);
        L("self_attn.k_proj.weight", INIT_LINEAR, 2, d, d);
        L("self_attn.k_proj.bias", INIT_SMALL, 1, d, 0);
        L("self_attn.v_proj.weight", INIT_LINEAR, 2, d, d);
        L("self_attn.v_proj.bias", INIT_SMALL, 1, d, 0);
        L("self_attn.out_proj.weight", INIT_LINEAR, 2, d, d);
        L("self_attn.out_proj.bias", INIT_SMALL, 1, d, 0);
        L("layer_norm2.weight", INIT_NORM_W, 1, d, 0);
        L("layer_norm2.bias", INIT_SMALL, 1, d, 0);
        L("mlp.fc1.weight", INIT_LINEAR, 2, inter, d);
        L("mlp.fc1.bias", INIT_SMALL, 1, inter, 0);
        L("mlp.fc2.weight", INIT_LINEAR, 2, d, inter);
        L("mlp.fc2.bias", INIT_SMALL, 1, d, 0);
    }
#undef L
}

/* GPT-2's bytes_to_unicode(): printable bytes map to themselves, the others to 256 + n in order. */
static void byte_symbols(int cps[256])
{
    int k = 0, extra = 0;
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
            cps[k++] = b;
    for (int b = 0; b < 256; b++)
        if (!((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)))
            cps[k++] = 256 + extra++;
}

static void utf8(int cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else { /* all byte symbols are below U+0800 */
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

/* Writes TEXT to PATH.tmp, then renames it: a crash never leaves a half-written file behind. */
static md_status write_text(const char *path, const char *text, char *err, size_t errlen)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return errno == ENOSPC ? MD_ERR_NO_SPACE : MD_ERR_IO;
    }
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        snprintf(err, errlen, "%s: write: %s", path, strerror(e));
        return e == ENOSPC ? MD_ERR_NO_SPACE : MD_ERR_IO;
    }
    return MD_OK;
}

static cJSON *demo_config(void)
{
    cJSON *c = cJSON_CreateObject(), *t, *v;
    const char *arch[] = {"CLIPModel"};
    cJSON_AddItemToObject(c, "architectures", cJSON_CreateStringArray(arch, 1));
    cJSON_AddStringToObject(c, "model_type", "clip");
    cJSON_AddTrueToObject(c, "momentd_demo");
    cJSON_AddStringToObject(c, "momentd_note",
                            "demo model written by momentd: random weights, embeddings are not meaningful");
    cJSON_AddNumberToObject(c, "projection_dim", PROJ);
    cJSON_AddNumberToObject(c, "logit_scale_init_value", 2.6592);
    t = cJSON_AddObjectToObject(c, "text_config");
    cJSON_AddNumberToObject(t, "vocab_size", T_VOCAB);
    cJSON_AddNumberToObject(t, "max_position_embeddings", T_POS);
    cJSON_AddNumberToObject(t, "hidden_size", T_D);
    cJSON_AddNumberToObject(t, "intermediate_size", T_I);
    cJSON_AddNumberToObject(t, "num_attention_heads", T_HEADS);
    cJSON_AddNumberToObject(t, "num_hidden_layers", T_LAYERS);
    cJSON_AddStringToObject(t, "hidden_act", "quick_gelu");
    cJSON_AddNumberToObject(t, "layer_norm_eps", 1e-5);
    cJSON_AddNumberToObject(t, "bos_token_id", 512);
    cJSON_AddNumberToObject(t, "eos_token_id", 513);
    cJSON_AddNumberToObject(t, "pad_token_id", 513);
    cJSON_AddNumberToObject(t, "projection_dim", PROJ);
    cJSON_AddStringToObject(t, "model_type", "clip_text_model");
    v = cJSON_AddObjectToObject(c, "vision_config");
    cJSON_AddNumberToObject(v, "image_size", V_IMAGE);
    cJSON_AddNumberToObject(v, "patch_size", V_PATCH);
    cJSON_AddNumberToObject(v, "num_channels", 3);
    cJSON_AddNumberToObject(v, "hidden_size", V_D);
    cJSON_AddNumberToObject(v, "intermediate_size", V_I);
    cJSON_AddNumberToObject(v, "num_attention_heads", V_HEADS);
    cJSON_AddNumberToObject(v, "num_hidden_layers", V_LAYERS);
    cJSON_AddStringToObject(v, "hidden_act", "quick_gelu");
    cJSON_AddNumberToObject(v, "layer_norm_eps", 1e-5);
    cJSON_AddNumberToObject(v, "projection_dim", PROJ);
    cJSON_AddStringToObject(v, "model_type", "clip_vision_model");
    return c;
}

md_status md_clip_write_demo(const char *dir, unsigned seed, char *err, size_t errlen)
{
    md_status st = MD_OK;
    builder *b = calloc(1, sizeof *b);
    cJSON *cfg = NULL, *vocab = NULL;
    char *js = NULL, path[4096], dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    if (!b)
        return snprintf(err, errlen, "out of memory"), MD_ERR_NOMEM;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        st = errno == ENOSPC ? MD_ERR_NO_SPACE : MD_ERR_IO;
        goto out;
    }

    b->r.s = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)seed * 0xD1B54A32D192ED03ULL);
    if (!b->r.s)
        b->r.s = 1;
    add(b, "vision_model.embeddings.patch_embedding.weight", INIT_LINEAR, 4, V_D, 3, V_PATCH, V_PATCH);
    add(b, "vision_model.embeddings.class_embedding", INIT_EMBED, 1, V_D, 0, 0, 0);
    int np = (V_IMAGE / V_PATCH) * (V_IMAGE / V_PATCH);
    add(b, "vision_model.embeddings.position_embedding.weight", INIT_EMBED, 2, np + 1, V_D, 0, 0);
    add(b, "vision_model.pre_layrnorm.weight", INIT_NORM_W, 1, V_D, 0, 0, 0);
    add(b, "vision_model.pre_layrnorm.bias", INIT_SMALL, 1, V_D, 0, 0, 0);
    add_layers(b, "vision_model", V_LAYERS, V_D, V_I);
    add(b, "vision_model.post_layernorm.weight", INIT_NORM_W, 1, V_D, 0, 0, 0);
    add(b, "vision_model.post_layernorm.bias", INIT_SMALL, 1, V_D, 0, 0, 0);
    add(b, "visual_projection.weight", INIT_LINEAR, 2, PROJ, V_D, 0, 0);
    add(b, "text_model.embeddings.token_embedding.weight", INIT_EMBED, 2, T_VOCAB, T_D, 0, 0);
    add(b, "text_model.embeddings.position_embedding.weight", INIT_EMBED, 2, T_POS, T_D, 0, 0);
    add_layers(b, "text_model", T_LAYERS, T_D, T_I);
    add(b, "text_model.final_layer_norm.weight", INIT_NORM_W, 1, T_D, 0, 0, 0);
    add(b, "text_model.final_layer_norm.bias", INIT_SMALL, 1, T_D, 0, 0, 0);
    add(b, "text_projection.weight", INIT_LINEAR, 2, PROJ, T_D, 0, 0);
    add(b, "logit_scale", INIT_SMALL, 0, 0, 0, 0, 0);
    if (b->oom) {
        snprintf(err, errlen, "out of memory");
        st = MD_ERR_NOMEM;
        goto out;
    }
    b->data[b->n - 1][0] = 2.6592f;
    const char *meta[] = {"format", "pt", "momentd_demo", "true"};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((st = md_safetensors_write(path, b->w, b->n, meta, 2, err, errlen)) != MD_OK)
        goto out;

    cfg = demo_config();
    js = cfg ? cJSON_Print(cfg) : NULL;
    if (!js) {
        snprintf(err, errlen, "out of memory");
        st = MD_ERR_NOMEM;
        goto out;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((st = write_text(path, js, err, errlen)) != MD_OK)
        goto out;
    free(js);
    js = NULL;

    int cps[256];
    byte_symbols(cps);
    vocab = cJSON_CreateObject();
    for (int i = 0; vocab && i < 512; i++) {
        char s[16];
        utf8(cps[i % 256], s);
        if (i >= 256)
            strcat(s, "</w>");
        if (!cJSON_AddNumberToObject(vocab, s, i)) {
            cJSON_Delete(vocab);
            vocab = NULL;
        }
    }
    if (vocab && (!cJSON_AddNumberToObject(vocab, "<|startoftext|>", 512) ||
                  !cJSON_AddNumberToObject(vocab, "<|endoftext|>", 513))) {
        cJSON_Delete(vocab);
        vocab = NULL;
    }
    js = vocab ? cJSON_PrintUnformatted(vocab) : NULL;
    if (!js) {
        snprintf(err, errlen, "out of memory");
        st = MD_ERR_NOMEM;
        goto out;
    }
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    if ((st = write_text(path, js, err, errlen)) != MD_OK)
        goto out;
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    if ((st = write_text(path, "#version: 0.2\n", err, errlen)) != MD_OK)
        goto out;
out:
    free(js);
    cJSON_Delete(cfg);
    cJSON_Delete(vocab);
    for (int i = 0; i < b->n; i++)
        free(b->data[i]);
    free(b);
    return st;
}
