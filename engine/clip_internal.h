/* clip_internal.h - what the two files of the CLIP model share; not a public header (clip.h is):
 * only clip.c (the forward passes) and clip_load.c (config.json, the weights, the device copy,
 * md_clip_free and the accessors) include it.
 *
 * The weights live in one F32 block (llm.c style) laid out per tower; q, k and v of a layer are
 * stored next to each other so that one matrix product computes all three. The device path (see
 * the top of clip.c) keeps a second copy in the backend's memory, one allocation (dblock). */
#ifndef MD_CLIP_INTERNAL_H
#define MD_CLIP_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>

#include "clip.h"
#include "tokenizer.h"

typedef struct layer_w {
    float *ln1_g, *ln1_b, *qkv_w, *qkv_b, *o_w, *o_b, *ln2_g, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} layer_w;

typedef struct tower_cfg {
    int hidden, inter, layers, heads;
    md_op act;
    char act_name[32];
    float eps;
    /* text */
    int vocab, max_pos, bos, eos, pad;
    /* vision */
    int image, patch, channels;
} tower_cfg;

typedef struct tower {
    tower_cfg c;
    layer_w *l;
    float *pos;              /* [positions, hidden] */
    float *tok;              /* text: token_embedding [vocab, hidden] */
    float *patch_w, *cls;    /* vision: [hidden, 3 * patch * patch], [hidden] */
    float *pre_g, *pre_b;    /* vision: pre_layrnorm */
    float *fin_g, *fin_b;    /* post_layernorm (vision) / final_layer_norm (text) */
    float *proj;             /* [projection_dim, hidden] */
} tower;

/* The device copy of a tower's weights: matrices in the precision's input type, vectors F32. */
typedef struct dev_layer {
    void *qkv_w, *o_w, *fc1_w, *fc2_w;
    float *ln1_g, *ln1_b, *qkv_b, *o_b, *ln2_g, *ln2_b, *fc1_b, *fc2_b;
} dev_layer;

typedef struct dev_tower {
    dev_layer *l;
    void *patch_w, *proj;
    float *cls, *pos, *pre_g, *pre_b, *fin_g, *fin_b;
} dev_tower;

struct md_clip {
    const md_backend_i *be;
    int dev;            /* 1: the device path (see the top of clip.c) */
    md_prec prec;       /* its matrix products */
    void *dblock;       /* every device weight, one allocation */
    dev_tower dv, dt;
    pthread_mutex_t smu; /* guards the kept scratch buffer */
    int smu_init;
    void *scratch;
    size_t scratch_bytes;
    tower v, t;
    int dim;         /* projection_dim */
    int grid;        /* patches per side */
    int ctx;         /* longest token sequence: min(max_position_embeddings, 77) */
    int demo;
    int max_batch;   /* 0: by SCRATCH_BUDGET (clip.c) */
    float *block;    /* every weight */
    size_t block_floats;
    md_tokenizer *tok;
    char sha[65];
    char desc[256];
};

/* Parses config.json's N bytes at BUF (not NUL-terminated; PATH names it in messages) into M's
 * settings (m->v.c, m->t.c, dim, grid, ctx, demo), with transformers' defaults and every value
 * range-checked: MD_ERR_INVALID or MD_ERR_UNSUPPORTED with a message in ERR. Allocates nothing
 * that outlives the call. clip_load.c reads the file with it; the config fuzz target
 * (tests/fuzz/fuzz_clip_config.c) calls it directly. */
md_status md_clip_parse_config(const char *path, const char *buf, size_t n, md_clip *m, char *err, size_t errlen);

#endif
