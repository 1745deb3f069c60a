/* cli.c - the model subcommands of the momentd binary: embeddings on the command line.
 *
 *   momentd embed-text  --model DIR [--threads N] TEXT
 *   momentd embed-image --model DIR [--threads N] [--tokens] FILE
 *
 * Each loads the Hugging Face CLIP checkpoint DIR exactly as the daemon does and prints one JSON
 * object on stdout:
 *
 *   embed-text:  {"model": DIR, "description": "...", "demo": false, "weights_sha256": "...",
 *                 "text": TEXT, "ids": [49406, ...], "tokens": ["<|startoftext|>", "a</w>", ...],
 *                 "embedding": [...]}                    (L2-normalised, projection_dim floats)
 *   embed-image: {"model": ..., "file": FILE, "image_size": S, "embedding": [...],
 *                 "vision_tokens": [[...], ...]}          (with --tokens: 1 + P rows, CLS first)
 *
 * FILE is any picture or video FFmpeg reads (a video's first frame), preprocessed as
 * CLIPImageProcessor does (shortest side to S, bicubic, center crop, CLIP mean/std). Errors go to
 * stderr as "momentd: ..." with exit status 1 (2 for bad usage).
 */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/clip.h"
#include "../base/log.h"
#include "../video/video.h"
#include "cJSON.h"

int md_cli_main(int argc, char **argv);

static int usage(const char *cmd)
{
    fprintf(stderr,
            "usage: momentd embed-text  --model DIR [--threads N] TEXT\n"
            "       momentd embed-image --model DIR [--threads N] [--tokens] FILE\n"
            "(%s: DIR is a Hugging Face CLIP checkpoint directory: config.json, model.safetensors, vocab.json, "
            "merges.txt)\n",
            cmd);
    return 2;
}

static cJSON *float_array(const float *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        /* %.9g round-trips a float; cJSON would print the double's 17 digits. */
        char buf[32];
        snprintf(buf, sizeof buf, "%.9g", v[i]);
        cJSON *x = cJSON_CreateRaw(buf);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static int print_json(cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    if (!s) {
        fprintf(stderr, "momentd: out of memory\n");
        return 1;
    }
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    return 0;
}

int md_cli_main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "embed-text") != 0 && strcmp(argv[1], "embed-image") != 0))
        return -1;
    const char *cmd = argv[1], *dir = NULL, *arg = NULL;
    int tokens = 0, threads = 0, rc = 1;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strncmp(argv[i], "--model=", 8) == 0)
            dir = argv[i] + 8;
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--tokens") == 0)
            tokens = 1;
        else if (strcmp(argv[i], "--") == 0 && i + 1 < argc && !arg)
            arg = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1] == '-')
            return usage(cmd);
        else if (!arg)
            arg = argv[i];
        else
            return usage(cmd);
    }
    if (!dir || !arg)
        return usage(cmd);

    char err[1024];
    md_clip *m = NULL;
    cJSON *o = NULL;
    float *px = NULL, *emb = NULL, *tok = NULL;
    if (threads > 0)
        md_backend_cpu_set_threads(threads);
    if (md_clip_load(dir, NULL, &m, err, sizeof err) != MD_OK) {
        fprintf(stderr, "momentd: model %s: %s\n", dir, err);
        goto out;
    }
    const int E = md_clip_dim(m);
    o = cJSON_CreateObject();
    emb = malloc((size_t)E * sizeof *emb);
    if (!o || !emb)
        goto oom;
    cJSON_AddStringToObject(o, "model", dir);
    cJSON_AddStringToObject(o, "description", md_clip_describe(m));
    cJSON_AddBoolToObject(o, "demo", md_clip_is_demo(m));
    cJSON_AddStringToObject(o, "weights_sha256", md_clip_weights_sha256(m));
    if (strcmp(cmd, "embed-text") == 0) {
        int ids[MD_CLIP_MAX_TOKENS], n = 0;
        if (md_clip_embed_text(m, arg, emb, ids, &n, err, sizeof err) != MD_OK) {
            fprintf(stderr, "momentd: embed-text: %s\n", err);
            goto out;
        }
        cJSON_AddStringToObject(o, "text", arg);
        cJSON *ja = cJSON_AddArrayToObject(o, "ids"), *ta = cJSON_AddArrayToObject(o, "tokens");
        for (int i = 0; ja && ta && i < n; i++) {
            const char *t = md_clip_token_str(m, ids[i]);
            cJSON_AddItemToArray(ja, cJSON_CreateNumber(ids[i]));
            cJSON_AddItemToArray(ta, t ? cJSON_CreateString(t) : cJSON_CreateNull());
        }
        cJSON_AddItemToObject(o, "embedding", float_array(emb, E));
    } else {
        const int S = md_clip_image_size(m), T = 1 + md_clip_n_patches(m);
        px = malloc((size_t)3 * S * S * sizeof *px);
        tok = tokens ? malloc((size_t)T * E * sizeof *tok) : NULL;
        if (!px || (tokens && !tok))
            goto oom;
        md_video_global_init();
        md_status st = md_video_load_image(arg, S, NULL, NULL, px, err, sizeof err);
        if (st != MD_OK) {
            fprintf(stderr, "momentd: embed-image: %s: %s\n", arg, err);
            goto out;
        }
        if (md_clip_embed_images(m, px, 1, emb, tok, err, sizeof err) != MD_OK) {
            fprintf(stderr, "momentd: embed-image: %s\n", err);
            goto out;
        }
        cJSON_AddStringToObject(o, "file", arg);
        cJSON_AddNumberToObject(o, "image_size", S);
        cJSON_AddItemToObject(o, "embedding", float_array(emb, E));
        if (tok) {
            cJSON *rows = cJSON_AddArrayToObject(o, "vision_tokens");
            for (int i = 0; rows && i < T; i++)
                cJSON_AddItemToArray(rows, float_array(tok + (size_t)i * E, E));
        }
    }
    rc = print_json(o);
    goto out;
oom:
    fprintf(stderr, "momentd: out of memory\n");
out:
    cJSON_Delete(o);
    free(px);
    free(emb);
    free(tok);
    md_clip_free(m);
    return rc;
}
