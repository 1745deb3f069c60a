/* bench_search.c - times momentd's segment index on synthetic embeddings (the C half of
 * `make bench-search`; tests/bench/bench_search.sh runs it next to FAISS, bench_search_faiss.py).
 *
 *   bench_search --n N --dist clustered|random --dir OUT [--dim 512] [--queries 100]
 *                [--threads 2] [--model CLIPDIR] [--seed 1]
 *
 * Builds an index of N segments inserted directly with md_index_add (videos of 300 segments),
 * then times, one query at a time:
 *   search   md_index_search (int8 first pass, exact re-scoring, moments; k = 10)
 *   exact    the same with MD_SCAN_EXACT (every segment scored from the stored halves); against
 *            it, the int8 pass's error on the result's mean, standard deviation and best z
 *   text     md_clip_embed_text on CLIPDIR (when given), with OpenBLAS on 1 and on THREADS threads
 *   total    text -> md_index_search with that embedding, one chain, OpenBLAS as the faster of those
 * and writes for the FAISS side and the accuracy check, into OUT:
 *   vectors.f32   N x dim float32: exactly the vectors given to md_index_add, row = insertion order
 *   queries.f32   Q x dim float32: the search queries
 *   top.i64, top.f32      Q x 10: md_index_top_segments (int8 + exact re-scoring): rows, scores
 *   raw.i64       Q x 10: the int8 first pass alone (its 256 candidates ranked by int8 score)
 *   exact.i64     Q x 10: md_index_top_segments with MD_SCAN_EXACT (exact over the stored halves)
 * Prints one JSON object with the timings (ms) and settings.
 *
 * Data. random: i.i.d. uniform coordinates, normalised (queries the same). clustered: a
 * crude stand-in for CLIP features of real footage: 1024 "concept" directions; each video has
 * a style direction and scenes of 8-31 segments; a segment mixes its scene's two concepts,
 * the video's style and per-segment noise, normalised; a query is one concept plus noise.
 * Every row is a pure function of (seed, row), so nothing needs to be kept but the file. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/backend.h"
#include "../../engine/clip.h"
#include "../../base/log.h"
#include "../../engine/search.h"

#define SEGS_PER_VIDEO 300
#define SEG_MS 2000
#define CONCEPTS 1024
#define TOPK 10
#define RAW_CANDIDATES 256

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* DIM uniform values in (-1, 1) from the stream KEY, normalised. */
static void unit_vector(uint64_t key, float *v, int dim)
{
    uint64_t s = mix(key) | 1;
    double n = 0;
    for (int i = 0; i < dim; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        v[i] = (float)((double)(s >> 11) * (2.0 / 9007199254740992.0) - 1.0);
        n += (double)v[i] * v[i];
    }
    float inv = (float)(1.0 / sqrt(n));
    for (int i = 0; i < dim; i++)
        v[i] *= inv;
}

typedef struct gen {
    int dim, clustered;
    uint64_t seed;
    float *concepts; /* CONCEPTS x dim */
    float *style, *noise;
    long long style_video;
} gen;

static void row_vector(gen *g, size_t row, float *v)
{
    const int d = g->dim;
    if (!g->clustered) {
        unit_vector(g->seed * 0x100000001b3ull ^ mix(row), v, d);
        return;
    }
    long long video = (long long)(row / SEGS_PER_VIDEO);
    int seq = (int)(row % SEGS_PER_VIDEO);
    if (g->style_video != video) {
        unit_vector(mix(g->seed ^ 0x5757) ^ mix((uint64_t)video), g->style, d);
        g->style_video = video;
    }
    uint64_t hv = mix(g->seed ^ mix((uint64_t)video + 77));
    int len = 8 + (int)(hv % 24), scene = seq / len;
    uint64_t h = mix(hv ^ mix((uint64_t)scene + 1));
    const float *a = g->concepts + (size_t)(h % CONCEPTS) * d, *b = g->concepts + (size_t)((h >> 20) % CONCEPTS) * d;
    float w = 0.5f + 0.5f * (float)((h >> 40) & 0xffff) / 65536.0f;
    unit_vector(g->seed ^ mix(row + 0xabcdef), g->noise, d);
    double n = 0;
    for (int i = 0; i < d; i++) {
        v[i] = w * a[i] + 0.7f * (1 - w) * b[i] + 0.5f * g->style[i] + 0.8f * g->noise[i];
        n += (double)v[i] * v[i];
    }
    float inv = (float)(1.0 / sqrt(n));
    for (int i = 0; i < d; i++)
        v[i] *= inv;
}

static void query_vector(gen *g, int i, float *q)
{
    const int d = g->dim;
    if (!g->clustered) {
        unit_vector(mix(g->seed ^ 0x9999) ^ mix((uint64_t)i), q, d);
        return;
    }
    const float *c = g->concepts + (size_t)(mix(g->seed ^ 0x4242 ^ mix((uint64_t)i)) % CONCEPTS) * d;
    unit_vector(mix(g->seed ^ 0x7777) ^ mix((uint64_t)i), g->noise, d);
    double n = 0;
    for (int k = 0; k < d; k++) {
        q[k] = c[k] + 0.5f * g->noise[k];
        n += (double)q[k] * q[k];
    }
    for (int k = 0; k < d; k++)
        q[k] /= (float)sqrt(n);
}

static const char *const texts[] = {
    "a dog jumps into a pool",
    "the car turns left at the intersection",
    "a man in a red jacket opens the door",
    "people dancing at a wedding",
    "close-up of hands kneading bread dough on a wooden table",
    "sunset over the ocean",
    "a cat",
    "two children riding bicycles down a hill in the rain",
    "someone pours coffee into a white mug",
    "aerial view of a city at night with traffic",
    "a goal is scored",
    "the speaker points at a chart showing quarterly revenue",
    "a helicopter lands on the roof",
    "fireworks",
    "a woman reads a book on a train while the landscape passes by the window",
    "slow motion shot of a water droplet",
    "the band starts playing and the crowd cheers",
    "a truck backs into the loading dock",
    "snow falling on a quiet street",
    "a chef flips a pancake",
};
#define N_TEXTS ((int)(sizeof texts / sizeof *texts))

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of the N samples in T (sorted in place). */
static double pct(double *t, int n, double p)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    int i = (int)ceil(p / 100.0 * n) - 1;
    return t[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static int cmp_approx_desc(const void *a, const void *b)
{
    const md_segment_score *x = a, *y = b;
    return (x->approx < y->approx) - (x->approx > y->approx);
}

static int write_all(FILE *f, const void *p, size_t size, size_t n) { return fwrite(p, size, n, f) == n ? 0 : -1; }

static FILE *open_out(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        fprintf(stderr, "bench_search: cannot write %s\n", path);
    return f;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s --n N --dist clustered|random --dir OUT [--dim 512] [--queries 100] [--threads 2]\n"
            "          [--model CLIPDIR] [--seed 1]\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    long long n = 0;
    int dim = 512, nq = 100, threads = 2, clustered = -1;
    const char *dir = NULL, *model = NULL;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage(argv[0]);
        if (!strcmp(a, "--n"))
            n = atoll(v);
        else if (!strcmp(a, "--dim"))
            dim = atoi(v);
        else if (!strcmp(a, "--queries"))
            nq = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--dist"))
            clustered = !strcmp(v, "clustered") ? 1 : !strcmp(v, "random") ? 0 : -1;
        else if (!strcmp(a, "--dir"))
            dir = v;
        else if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--seed"))
            seed = (uint64_t)atoll(v);
        else
            usage(argv[0]);
        i++;
    }
    if (n <= 0 || dim <= 0 || nq <= 0 || threads <= 0 || clustered < 0 || !dir)
        usage(argv[0]);

    char err[1024];
    int blas_threads = md_backend_cpu_set_threads(threads);
    md_clip *clip = NULL;
    if (model && md_clip_load(model, md_backend_cpu(), &clip, err, sizeof err) != MD_OK) {
        fprintf(stderr, "bench_search: model: %s\n", err);
        return 1;
    }
    if (clip && md_clip_dim(clip) != dim) {
        fprintf(stderr, "bench_search: the model's embeddings have %d values, not %d\n", md_clip_dim(clip), dim);
        return 1;
    }

    gen g = {.dim = dim, .clustered = clustered, .seed = seed, .style_video = -1};
    g.concepts = malloc((size_t)CONCEPTS * dim * sizeof *g.concepts);
    g.style = malloc((size_t)dim * sizeof *g.style);
    g.noise = malloc((size_t)dim * sizeof *g.noise);
    float *v = malloc((size_t)dim * sizeof *v), *qs = malloc((size_t)nq * dim * sizeof *qs);
    double *t = malloc((size_t)nq * 2 * sizeof *t);
    md_segment_score *segs = malloc(RAW_CANDIDATES * sizeof *segs);
    long long *ids = malloc((size_t)nq * TOPK * sizeof *ids), *raw = malloc((size_t)nq * TOPK * sizeof *raw),
              *exact = malloc((size_t)nq * TOPK * sizeof *exact);
    float *scores = malloc((size_t)nq * TOPK * sizeof *scores);
    if (!g.concepts || !g.style || !g.noise || !v || !qs || !t || !segs || !ids || !raw || !exact || !scores) {
        fprintf(stderr, "bench_search: out of memory\n");
        return 1;
    }
    for (int c = 0; c < CONCEPTS; c++)
        unit_vector(mix(seed ^ 0xc0c0) ^ mix((uint64_t)c), g.concepts + (size_t)c * dim, dim);

    /* Build: generate, write for FAISS, insert. */
    md_index *ix = NULL;
    if (md_index_new(dim, &ix) != MD_OK)
        return 1;
    md_index_set_threads(ix, threads);
    FILE *fv = open_out(dir, "vectors.f32");
    if (!fv)
        return 1;
    double t0 = md_mono_s(), t_add = 0;
    for (long long r = 0; r < n; r++) {
        row_vector(&g, (size_t)r, v);
        if (write_all(fv, v, sizeof *v, (size_t)dim)) {
            fprintf(stderr, "bench_search: write failed\n");
            return 1;
        }
        double a = md_mono_s();
        long long video = r / SEGS_PER_VIDEO + 1;
        int seq = (int)(r % SEGS_PER_VIDEO);
        if (md_index_add(ix, video, seq, (long long)seq * SEG_MS, (long long)(seq + 1) * SEG_MS, v) != MD_OK) {
            fprintf(stderr, "bench_search: md_index_add failed at row %lld\n", r);
            return 1;
        }
        t_add += md_mono_s() - a;
    }
    if (fclose(fv)) {
        fprintf(stderr, "bench_search: write failed\n");
        return 1;
    }
    double t_build = md_mono_s() - t0;
    fprintf(stderr, "bench_search: %lld segments generated, written and added in %.1f s (md_index_add %.1f s)\n", n,
            t_build, t_add);
    for (int i = 0; i < nq; i++)
        query_vector(&g, i, qs + (size_t)i * dim);
    FILE *fq = open_out(dir, "queries.f32");
    if (!fq || write_all(fq, qs, sizeof *qs, (size_t)nq * dim) || fclose(fq))
        return 1;

    md_search_params sp = md_search_default_params();
    md_search_result res;
    /* Warm-up: page in the rows and start the thread machinery once. */
    for (int i = 0; i < 3; i++) {
        if (md_index_search(ix, qs + (size_t)(i % nq) * dim, &sp, &res) != MD_OK)
            return 1;
        md_search_result_free(&res);
    }
    double sum_moments = 0;
    for (int i = 0; i < nq; i++) {
        double a = md_mono_s();
        md_index_search(ix, qs + (size_t)i * dim, &sp, &res);
        t[i] = (md_mono_s() - a) * 1e3;
        sum_moments += res.n;
        md_search_result_free(&res);
    }
    double search_p50 = pct(t, nq, 50), search_p99 = pct(t, nq, 99);

    int ne = nq < 30 ? nq : 30;
    md_search_params xp = sp;
    xp.scan = MD_SCAN_EXACT;
    /* ... and how far the int8 pass moves the mean, standard deviation and z of a result. */
    double mean_err = 0, std_err = 0, z_err = 0;
    for (int i = 0; i < ne; i++) {
        md_search_result ri;
        double a = md_mono_s();
        md_index_search(ix, qs + (size_t)i * dim, &xp, &res);
        t[i] = (md_mono_s() - a) * 1e3;
        if (md_index_search(ix, qs + (size_t)i * dim, &sp, &ri) == MD_OK && ri.n > 0 && res.n > 0) {
            mean_err = fmax(mean_err, fabs((double)ri.mean - res.mean));
            std_err = fmax(std_err, fabs((double)ri.std - res.std) / res.std);
            z_err = fmax(z_err, fabs((double)ri.moments[0].z - res.moments[0].z));
        }
        md_search_result_free(&ri);
        md_search_result_free(&res);
    }
    double exact_p50 = pct(t, ne, 50), exact_p99 = pct(t, ne, 99);

    /* Rankings for the accuracy check (not timed). */
    double worst_approx = 0;
    for (int i = 0; i < nq; i++) {
        const float *q = qs + (size_t)i * dim;
        md_search_params tp = md_search_default_params();
        int got;
        tp.k = TOPK;
        if (md_index_top_segments(ix, q, &tp, segs, &got) != MD_OK || got != TOPK)
            return 1;
        for (int j = 0; j < TOPK; j++) {
            ids[i * TOPK + j] = (segs[j].video_id - 1) * SEGS_PER_VIDEO + segs[j].seq;
            scores[i * TOPK + j] = segs[j].score;
        }
        tp.k = RAW_CANDIDATES < n ? RAW_CANDIDATES : (int)n;
        if (md_index_top_segments(ix, q, &tp, segs, &got) != MD_OK)
            return 1;
        for (int j = 0; j < got; j++) {
            double e = fabs((double)segs[j].approx - segs[j].score);
            worst_approx = e > worst_approx ? e : worst_approx;
        }
        qsort(segs, (size_t)got, sizeof *segs, cmp_approx_desc);
        for (int j = 0; j < TOPK; j++)
            raw[i * TOPK + j] = j < got ? (segs[j].video_id - 1) * SEGS_PER_VIDEO + segs[j].seq : -1;
        tp.k = TOPK;
        tp.scan = MD_SCAN_EXACT;
        if (md_index_top_segments(ix, q, &tp, segs, &got) != MD_OK || got != TOPK)
            return 1;
        for (int j = 0; j < TOPK; j++)
            exact[i * TOPK + j] = (segs[j].video_id - 1) * SEGS_PER_VIDEO + segs[j].seq;
    }
    FILE *f1 = open_out(dir, "top.i64"), *f2 = open_out(dir, "top.f32"), *f3 = open_out(dir, "raw.i64"),
         *f4 = open_out(dir, "exact.i64");
    if (!f1 || !f2 || !f3 || !f4 || write_all(f1, ids, sizeof *ids, (size_t)nq * TOPK) ||
        write_all(f2, scores, sizeof *scores, (size_t)nq * TOPK) || write_all(f3, raw, sizeof *raw, (size_t)nq * TOPK) ||
        write_all(f4, exact, sizeof *exact, (size_t)nq * TOPK) || fclose(f1) || fclose(f2) || fclose(f3) || fclose(f4))
        return 1;

    /* Text encoding alone, with OpenBLAS on 1 and on THREADS threads (a short query is a few rows
     * per matrix product, where OpenBLAS's threading can cost more than it brings); then, with the
     * faster setting, text -> moments as one chain. */
    double text_p50 = -1, text_p99 = -1, total_p50 = -1, total_p99 = -1, text1_p50 = -1, textn_p50 = -1;
    int ntext = 0, text_blas = threads;
    if (clip) {
        ntext = nq < 2 * N_TEXTS ? 2 * N_TEXTS : nq;
        double *tt = realloc(t, (size_t)ntext * sizeof *tt);
        if (!tt)
            return 1;
        t = tt;
        for (int pass = 0; pass < 2; pass++) {
            int bt = md_backend_cpu_set_threads(pass == 0 ? 1 : threads);
            for (int i = 0; i < 3; i++) /* warm-up */
                md_clip_embed_text(clip, texts[i], v, NULL, NULL, err, sizeof err);
            for (int i = 0; i < ntext; i++) {
                double a = md_mono_s();
                if (md_clip_embed_text(clip, texts[i % N_TEXTS], v, NULL, NULL, err, sizeof err) != MD_OK) {
                    fprintf(stderr, "bench_search: embed: %s\n", err);
                    return 1;
                }
                t[i] = (md_mono_s() - a) * 1e3;
            }
            double p50 = pct(t, ntext, 50), p99 = pct(t, ntext, 99);
            *(pass == 0 ? &text1_p50 : &textn_p50) = p50;
            if (pass == 0 || p50 < text_p50) {
                text_p50 = p50;
                text_p99 = p99;
                text_blas = bt;
            }
        }
        md_backend_cpu_set_threads(text_blas);
        for (int i = 0; i < ntext; i++) {
            double a = md_mono_s();
            if (md_clip_embed_text(clip, texts[i % N_TEXTS], v, NULL, NULL, err, sizeof err) != MD_OK ||
                md_index_search(ix, v, &sp, &res) != MD_OK)
                return 1;
            t[i] = (md_mono_s() - a) * 1e3;
            md_search_result_free(&res);
        }
        total_p50 = pct(t, ntext, 50);
        total_p99 = pct(t, ntext, 99);
    }

    size_t bytes = md_index_bytes(ix);
    printf("{\"n\": %lld, \"dist\": \"%s\", \"dim\": %d, \"queries\": %d, \"threads\": %d, \"openblas_threads\": %d, "
           "\"kernel\": \"%s\", \"build_s\": %.2f, \"add_s\": %.2f, \"index_bytes\": %zu, "
           "\"bytes_per_segment\": %.1f, \"search_p50\": %.3f, \"search_p99\": %.3f, \"exact_p50\": %.3f, "
           "\"exact_p99\": %.3f, \"text_queries\": %d, \"text_p50\": %.3f, \"text_p99\": %.3f, \"text_blas_threads\": %d, "
           "\"text_p50_blas1\": %.3f, \"text_p50_blasn\": %.3f, \"total_p50\": %.3f, "
           "\"total_p99\": %.3f, \"moments_per_query\": %.1f, \"max_int8_error\": %.6f, \"mean_err\": %.3g, "
           "\"std_rel_err\": %.3g, \"z_err\": %.3g}\n",
           n, clustered ? "clustered" : "random", dim, nq, threads, blas_threads, md_search_kernel(), t_build, t_add,
           bytes, (double)bytes / (double)n, search_p50, search_p99, exact_p50, exact_p99, ntext, text_p50, text_p99,
           text_blas, text1_p50, textn_p50,
           total_p50, total_p99, sum_moments / nq, worst_approx, mean_err, std_err, z_err);
    md_index_free(ix);
    md_clip_free(clip);
    free(g.concepts);
    free(g.style);
    free(g.noise);
    free(v);
    free(qs);
    free(t);
    free(segs);
    free(ids);
    free(raw);
    free(exact);
    free(scores);
    return 0;
}
