/* bench_clip.c - times momentd's CLIP encoders on a checkpoint directory (the C half of
 * `make bench-clip`; tests/bench/bench_clip.py drives it next to transformers + PyTorch).
 *
 *   bench_clip DIR THREADS PIXELS.f32 N_PIXELS OUT.f32 REPEATS
 *
 * PIXELS.f32 holds N_PIXELS preprocessed images (n x 3 x S x S float32). Prints one JSON object:
 * load seconds, images/s at batch 1 and at batch N_PIXELS, text latency (ms, "a photo of a cat"),
 * the best of REPEATS runs each. Writes the image embeddings of the batch run, then the text
 * embedding, to OUT.f32 (for the accuracy check against transformers). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>

#include "../../engine/clip.h"
#include "../../base/log.h"

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s DIR THREADS PIXELS.f32 N_PIXELS OUT.f32 REPEATS\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int threads = atoi(argv[2]), n = atoi(argv[4]), reps = atoi(argv[6]);
    char err[1024];
    md_backend_cpu_set_threads(threads);
    double t0 = md_mono_s();
    md_clip *m = NULL;
    if (md_clip_load(dir, md_backend_cpu(), &m, err, sizeof err) != MD_OK) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    double t_load = md_mono_s() - t0;
    const int S = md_clip_image_size(m), E = md_clip_dim(m);
    size_t per = (size_t)3 * S * S;
    float *px = malloc(per * n * sizeof *px), *emb = malloc((size_t)(n + 1) * E * sizeof *emb);
    FILE *f = fopen(argv[3], "rb");
    if (!f || fread(px, sizeof *px, per * n, f) != per * n) {
        fprintf(stderr, "%s: cannot read %d images\n", argv[3], n);
        return 1;
    }
    fclose(f);
    md_clip_embed_images(m, px, 1, emb, NULL, err, sizeof err); /* warm-up */
    double best1 = 1e9, bestn = 1e9, bestt = 1e9;
    for (int r = 0; r < reps; r++) {
        t0 = md_mono_s();
        for (int i = 0; i < n; i++)
            md_clip_embed_images(m, px + per * i, 1, emb + (size_t)i * E, NULL, err, sizeof err);
        double t = (md_mono_s() - t0) / n;
        best1 = t < best1 ? t : best1;
        t0 = md_mono_s();
        if (md_clip_embed_images(m, px, n, emb, NULL, err, sizeof err) != MD_OK) {
            fprintf(stderr, "embed: %s\n", err);
            return 1;
        }
        t = md_mono_s() - t0;
        bestn = t < bestn ? t : bestn;
        t0 = md_mono_s();
        for (int i = 0; i < 10; i++)
            md_clip_embed_text(m, "a photo of a cat", emb + (size_t)n * E, NULL, NULL, err, sizeof err);
        t = (md_mono_s() - t0) / 10;
        bestt = t < bestt ? t : bestt;
    }
    f = fopen(argv[5], "wb");
    if (!f || fwrite(emb, sizeof *emb, (size_t)(n + 1) * E, f) != (size_t)(n + 1) * E) {
        fprintf(stderr, "%s: cannot write\n", argv[5]);
        return 1;
    }
    fclose(f);
    printf("{\"load_s\": %.3f, \"img_per_s_b1\": %.3f, \"img_per_s_bn\": %.3f, \"batch\": %d, \"text_ms\": %.3f, "
           "\"threads\": %d, \"model\": \"%s\"}\n",
           t_load, 1 / best1, n / bestn, n, bestt * 1e3, md_backend_cpu_set_threads(0), md_clip_describe(m));
    md_clip_free(m);
    free(px);
    free(emb);
    return 0;
}
