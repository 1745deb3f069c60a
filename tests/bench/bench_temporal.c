/* bench_temporal.c - the temporal encoder's cost (a benchmark, not a test; `make bench-temporal`).
 *
 *   bench_temporal [--clip DIR] [--video FILE] [--threads N] [--layers 1,2,4] [--repeats R]
 *
 * Prints Markdown tables:
 *  1. per window of T = 32 frames x 50 tokens x 512 dims (ViT-B/32 sizes): the CLIP image tower
 *     on the window's 32 frames (md_clip_embed_images with tokens, on the checkpoint DIR, e.g.
 *     a random-weight ViT-B/32 in the real layout; without --clip, the tower's matrix products
 *     alone timed as cblas_sgemm calls, a lower bound, and said so) next to the temporal encoder
 *     with L layers (random non-zero weights, bidirectional, d_state 16), the identity encoder
 *     (md_temporal_init_write: out_proj zero, skipped) and the token reduction, as % of CLIP;
 *  2. the selective scan alone: steps x channels x states per second, and tokens per second;
 *  3. with --video (needs --clip): end-to-end indexing of FILE at 1 frame/s on the CPU, the
 *     stages timed separately: decode + preprocess (video/; the time spent waiting for the decoder,
 *     which decodes ahead on its own threads while the caller encodes), CLIP (image tower + tokens),
 *     temporal (stream, L = 2, random non-zero weights), storage (fp16 conversion + SQLite insert
 *     of each window's segments in one WAL transaction, as the daemon commits them); realtime
 *     factor = video duration / total time.
 * Times are the best of R runs (default 3) after a warm-up. Section 1 runs in R rounds of CLIP then
 * every encoder once each, and gives as "% of CLIP" the median over rounds of the ratio within a
 * round, so that a shared machine's drifting load cancels out. --threads sets OpenBLAS's threads,
 * which the encoder's own parallel steps follow. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>
#include <sqlite3.h>

#include "../../engine/backend.h"
#include "../../engine/clip.h"
#include "../../base/log.h"
#include "../../engine/mamba.h"
#include "../../engine/safetensors.h"
#include "../../engine/temporal.h"
#include "../../video/video.h"

enum { T = 32, TPF = 50, DM = 512 };

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* A bidirectional encoder with random non-zero weights at Mamba's scales (the cost of a trained
 * one: nothing is skipped). */
static md_temporal *random_encoder(int layers)
{
    md_mamba_config c;
    md_mamba_config_default(&c, DM);
    c.n_layers = layers;
    md_mamba *m = NULL;
    char err[256];
    if (md_mamba_new(&c, &m, err, sizeof err) != MD_OK) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    const int di = md_mamba_d_inner(&c);
    for (size_t i = 0; i < m->mem_floats; i++)
        m->mem[i] = frand() / sqrtf((float)di);
    for (int i = 0; i < layers; i++) {
        md_mamba_layer *l = &m->layers[i];
        for (int j = 0; j < DM; j++)
            l->norm_w[j] = 1.0f + 0.1f * frand();
        for (int d = 0; d < 2; d++)
            for (int j = 0; j < di; j++) {
                l->dir[d].dt_proj_b[j] = logf(expm1f(0.001f + 0.05f * (1 + frand()))); /* dt ~ 1e-3..1e-1 */
                for (int n = 0; n < c.d_state; n++)
                    l->dir[d].A_log[j * c.d_state + n] = logf((float)(n + 1));
            }
    }
    md_temporal *t = NULL;
    md_temporal_from_model(m, &t);
    return t;
}

static double best_of(int reps, double (*fn)(void *), void *ctx)
{
    fn(ctx); /* warm-up */
    double b = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = fn(ctx);
        b = t < b ? t : b;
    }
    return b;
}

/* ---- temporal per window ------------------------------------------------------------------- */

typedef struct tw {
    md_temporal *t;
    const float *tokens;
    float *x;
    md_mamba_ws *ws; /* kept across calls, as a stream keeps it */
    struct sstate *ss;
} tw;

static double time_encoder(void *p)
{
    tw *w = p;
    memcpy(w->x, w->tokens, sizeof(float) * T * TPF * DM);
    double t0 = md_mono_s();
    md_mamba_forward(md_temporal_model(w->t), w->ws, w->x, T * TPF, NULL, 0);
    return md_mono_s() - t0;
}

/* The stream path for one window, as a job runs it: each call pushes the next 32 frames into one
 * long-lived stream per encoder, which encodes one window (its first call only fills the buffer:
 * the warm-up round) and reduces it to 8 segments. Includes the copies into the stream's buffer. */
typedef struct sstate {
    md_temporal *t;
    md_temporal_stream *s;
    int64_t next;
    md_segments segs;
} sstate;

static double time_stream(void *p)
{
    tw *w = p;
    sstate *ss = w->ss;
    if (!ss->s || ss->t != w->t) {
        md_temporal_params pr;
        md_temporal_params_default(&pr, TPF);
        char err[256];
        md_temporal_stream_free(ss->s);
        ss->s = NULL;
        ss->t = w->t;
        ss->next = 0;
        if (md_temporal_stream_new(w->t, &pr, &ss->s, err, sizeof err) != MD_OK) {
            fprintf(stderr, "stream: %s\n", err);
            exit(1);
        }
    }
    int64_t pts[T];
    for (int i = 0; i < T; i++)
        pts[i] = 1000 * (ss->next + i);
    md_segments_clear(&ss->segs);
    double t0 = md_mono_s();
    md_temporal_stream_push(ss->s, ss->next, w->tokens, pts, T, &ss->segs);
    double dt = md_mono_s() - t0;
    ss->next += T;
    return dt;
}

/* ---- CLIP ---------------------------------------------------------------------------------- */

typedef struct cw {
    md_clip *clip;
    const float *px;
    float *emb, *tok;
} cw;

static double time_clip(void *p)
{
    cw *c = p;
    char err[256];
    double t0 = md_mono_s();
    if (md_clip_embed_images(c->clip, c->px, T, c->emb, c->tok, err, sizeof err) != MD_OK) {
        fprintf(stderr, "clip: %s\n", err);
        exit(1);
    }
    return md_mono_s() - t0;
}

/* ViT-B/32's matrix products for T images (50 tokens each, width 768, 12 layers, MLP 3072, 12
 * heads of 64): fused qkv, attention scores and values per image and head, out proj, fc1, fc2,
 * then the projection of every token to 512. Nothing else (no layer norms, GELU or softmax). */
static double time_vit_sgemm(void *p)
{
    float *buf = p; /* big enough for everything below */
    const int m = T * TPF, W = 768, F = 3072;
    float *x = buf, *w = x + (size_t)m * F, *y = w + (size_t)F * W * 3, *s = y + (size_t)m * F;
    double t0 = md_mono_s();
    for (int l = 0; l < 12; l++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, 3 * W, W, 1, x, W, w, W, 0, y, 3 * W);
        for (int i = 0; i < T; i++)
            for (int h = 0; h < 12; h++) {
                const float *q = y + (size_t)i * TPF * 3 * W + h * 64;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, TPF, TPF, 64, 1, q, 3 * W, q + W, 3 * W, 0, s,
                            TPF);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, TPF, 64, TPF, 1, s, TPF, q + 2 * W, 3 * W, 0,
                            x + (size_t)i * TPF * W + h * 64, W);
            }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, W, W, 1, x, W, w, W, 0, y, W);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, F, W, 1, y, W, w, W, 0, x, F);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, W, F, 1, x, F, w, F, 0, y, W);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, DM, W, 1, y, W, w, W, 0, x, DM);
    return md_mono_s() - t0;
}

/* ---- the selective scan alone --------------------------------------------------------------- */

typedef struct sw {
    int L, di, N;
    float *u, *dl, *A, *BC, *D, *y;
} sw;

static double time_scan(void *p)
{
    sw *s = p;
    double t0 = md_mono_s();
    md_mamba_selective_scan(s->L, s->di, s->N, s->u, s->dl, s->A, s->BC, s->BC + s->N, 2 * s->N, s->D, NULL, s->L,
                            s->y);
    return md_mono_s() - t0;
}

static double time_scan_ref(void *p)
{
    sw *s = p;
    double t0 = md_mono_s();
    md_mamba_selective_scan_ref(s->L, s->di, s->N, s->u, s->dl, s->A, s->BC, s->BC + s->N, 2 * s->N, s->D, NULL,
                                s->L, s->y);
    return md_mono_s() - t0;
}

/* The matrix products of one bidirectional layer at d_model 512 (d_inner 1024, dt_rank 32,
 * d_state 16) on 1600 tokens, as mamba.c issues them. */
static double time_layer_sgemm(void *unused)
{
    (void)unused;
    enum { M = T * TPF, DI = 2 * DM, R = 32, LD = R + 32 };
    static float *u, *xz, *w, *dbl, *dl, *o;
    if (!u) {
        u = calloc((size_t)M * DM, 4), xz = calloc((size_t)M * 2 * DI, 4), w = calloc((size_t)2 * DI * DM, 4);
        dbl = calloc((size_t)M * LD, 4), dl = calloc((size_t)M * DI, 4), o = calloc((size_t)M * DM, 4);
    }
    double t0 = md_mono_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, 2 * DI, DM, 1, u, DM, w, DM, 0, xz, 2 * DI);
    for (int d = 0; d < 2; d++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, LD, DI, 1, xz, 2 * DI, w, DI, 0, dbl, LD);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, DI, R, 1, dbl, LD, w, R, 0, dl, DI);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, DM, DI, 1, dl, DI, w, DI, 0, o, DM);
    return md_mono_s() - t0;
}

/* ---- end to end on a video ------------------------------------------------------------------ */

static int run_video(const char *path, md_clip *clip, int reps)
{
    char err[512];
    md_video_global_init();
    md_video_info pinfo;
    double t_probe = md_mono_s();
    if (md_video_probe(path, &pinfo, NULL, NULL, err, sizeof err) != MD_OK) {
        fprintf(stderr, "%s: %s\n", path, err);
        return 1;
    }
    t_probe = md_mono_s() - t_probe;
    md_temporal *t = random_encoder(2);
    double best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
    long long nframes = 0, nseg = 0, dur_ms = pinfo.duration_ms;
    for (int r = 0; r < reps; r++) {
        double st[4] = {0, 0, 0, 0};
        md_video_params vp = md_video_default_params();
        vp.batch = T;
        md_video_info info;
        md_video_decoder *d = NULL;
        double t0 = md_mono_s();
        if (md_video_decoder_open(path, &vp, &info, &d, err, sizeof err) != MD_OK) {
            fprintf(stderr, "%s: %s\n", path, err);
            return 1;
        }
        st[0] += md_mono_s() - t0;
        md_temporal_params pr;
        md_temporal_params_default(&pr, md_clip_n_patches(clip) + 1);
        pr.frame_interval_ms = 1000;
        md_temporal_stream *s = NULL;
        md_temporal_stream_new(t, &pr, &s, err, sizeof err);
        sqlite3 *db = NULL;
        sqlite3_stmt *ins = NULL;
        char dbp[] = "/tmp/momentd-bench-XXXXXX";
        int fd = mkstemp(dbp);
        if (fd >= 0)
            close(fd);
        sqlite3_open(dbp, &db);
        sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE segments(video INTEGER, "
                         "start_ms INTEGER, end_ms INTEGER, embedding BLOB)", NULL, NULL, NULL);
        sqlite3_prepare_v2(db, "INSERT INTO segments VALUES (1, ?, ?, ?)", -1, &ins, NULL);
        const int E = md_clip_dim(clip), tpf = pr.tokens_per_frame;
        float *emb = malloc(sizeof(float) * T * E), *tok = malloc(sizeof(float) * T * tpf * E);
        int64_t *pts = malloc(sizeof(int64_t) * T);
        uint16_t *h = malloc(sizeof(uint16_t) * E);
        md_segments segs = {0};
        nframes = 0;
        nseg = 0;
        for (int done = 0; !done;) {
            md_video_batch b;
            t0 = md_mono_s();
            md_status rc = md_video_decoder_next(d, &b);
            st[0] += md_mono_s() - t0;
            if (rc != MD_OK) {
                fprintf(stderr, "decode: %s\n", md_status_str(rc));
                return 1;
            }
            t0 = md_mono_s();
            if (b.n > 0 && md_clip_embed_images(clip, b.pixels, b.n, emb, tok, err, sizeof err) != MD_OK) {
                fprintf(stderr, "clip: %s\n", err);
                return 1;
            }
            st[1] += md_mono_s() - t0;
            for (int i = 0; i < b.n; i++)
                pts[i] = b.frames[i].ts_ms;
            t0 = md_mono_s();
            md_segments_clear(&segs);
            if (b.n > 0)
                md_temporal_stream_push(s, b.first_index, tok, pts, b.n, &segs);
            else {
                md_temporal_stream_finish(s, &segs);
                done = 1;
            }
            st[2] += md_mono_s() - t0;
            t0 = md_mono_s();
            void *blob = NULL;
            size_t len = 0;
            md_temporal_stream_save(s, &blob, &len); /* the checkpoint committed with them */
            sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
            for (int i = 0; i < segs.n; i++) {
                for (int j = 0; j < E; j++)
                    h[j] = md_f32_to_f16(segs.emb[(size_t)i * E + j]);
                sqlite3_bind_int64(ins, 1, segs.seg[i].start_ms);
                sqlite3_bind_int64(ins, 2, segs.seg[i].end_ms);
                sqlite3_bind_blob(ins, 3, h, (int)(E * sizeof *h), SQLITE_TRANSIENT);
                sqlite3_step(ins);
                sqlite3_reset(ins);
            }
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
            free(blob);
            st[3] += md_mono_s() - t0;
            nframes += b.n;
            nseg += segs.n;
        }
        md_video_decoder_close(d);
        sqlite3_finalize(ins);
        sqlite3_close(db);
        char wal[64];
        unlink(dbp);
        snprintf(wal, sizeof wal, "%s-wal", dbp);
        unlink(wal);
        snprintf(wal, sizeof wal, "%s-shm", dbp);
        unlink(wal);
        md_temporal_stream_free(s);
        md_segments_free(&segs);
        free(emb), free(tok), free(pts), free(h);
        double tot = st[0] + st[1] + st[2] + st[3];
        if (tot < best[4]) {
            memcpy(best, st, sizeof st);
            best[4] = tot;
        }
    }
    printf("\nEnd to end, %s (%dx%d %s, %.1f s), 1 frame/s -> %lld frames, %lld segments (k = 4); best of %d "
           "runs (probe at upload, not counted: %.2f s):\n\n",
           path, pinfo.width, pinfo.height, pinfo.codec, dur_ms / 1000.0, nframes, nseg, reps, t_probe);
    printf("| stage | seconds | share |\n| --- | ---: | ---: |\n");
    static const char *const names[] = {"decode + preprocess (time waiting for the decoder, which works ahead on its "
                                         "own threads)",
                                         "CLIP image tower (+ tokens)",
                                         "temporal encoder (L = 2) + reduction", "storage (fp16, SQLite, checkpoint)"};
    for (int i = 0; i < 4; i++)
        printf("| %s | %.3f | %.1f%% |\n", names[i], best[i], 100 * best[i] / best[4]);
    printf("| **total** | **%.3f** | |\n\nRealtime factor: %.1fx (video seconds per second of indexing).\n", best[4],
           dur_ms / 1000.0 / best[4]);
    md_temporal_free(t);
    return 0;
}

int main(int argc, char **argv)
{
    const char *clip_dir = NULL, *video = NULL, *layers_arg = "1,2,4";
    int threads = 0, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--clip") && i + 1 < argc)
            clip_dir = argv[++i];
        else if (!strcmp(argv[i], "--video") && i + 1 < argc)
            video = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc)
            layers_arg = argv[++i];
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--clip DIR] [--video FILE] [--threads N] [--layers 1,2,4] [--repeats R]\n",
                    argv[0]);
            return 2;
        }
    }
    threads = md_backend_cpu_set_threads(threads);
    char cpu[256];
    md_backend_cpu()->describe(cpu, sizeof cpu);

    /* The window's tokens: random, at CLIP token scale. */
    float *tokens = malloc(sizeof(float) * T * TPF * DM), *x = malloc(sizeof(float) * T * TPF * DM);
    for (size_t i = 0; i < (size_t)T * TPF * DM; i++)
        tokens[i] = frand();

    /* The reference: CLIP on the window's 32 frames, or its matrix products alone. */
    const char *clip_what;
    md_clip *clip = NULL;
    char err[512], what[320];
    cw c = {0};
    float *vit_buf = NULL;
    if (clip_dir) {
        if (md_clip_load(clip_dir, md_backend_cpu(), &clip, err, sizeof err) != MD_OK) {
            fprintf(stderr, "%s: %s\n", clip_dir, err);
            return 1;
        }
        if (md_clip_n_patches(clip) + 1 != TPF || md_clip_dim(clip) != DM)
            fprintf(stderr, "warning: %s is not ViT-B/32 sized\n", clip_dir);
        size_t S = (size_t)md_clip_image_size(clip);
        c = (cw){clip, malloc(sizeof(float) * T * 3 * S * S), malloc(sizeof(float) * T * DM),
                 malloc(sizeof(float) * T * TPF * DM)};
        for (size_t i = 0; i < (size_t)T * 3 * S * S; i++)
            ((float *)c.px)[i] = frand();
        snprintf(what, sizeof what, "CLIP image tower, md_clip_embed_images (%s), 32 frames + tokens",
                 md_clip_describe(clip));
        clip_what = what;
    } else {
        vit_buf = calloc((size_t)T * TPF * 3072 * 2 + (size_t)3072 * 768 * 3 + (size_t)TPF * TPF, sizeof *vit_buf);
        clip_what = "ViT-B/32 image tower's sgemm calls only for 32 frames (lower bound of CLIP; no --clip given)";
    }

    /* The encoders: the fresh one (skipped, then forced), and random ones with L layers, each
     * timed alone (md_mamba_forward) and through a stream (+ token reduction). */
    enum { MAXC = 16 };
    md_temporal *encs[MAXC];
    int mode[MAXC]; /* 0: encoder alone, 1: stream */
    char label[MAXC][160];
    int nc = 0;
    char path[] = "/tmp/momentd-bench-temporal-XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0)
        close(fd);
    md_mamba_config ic;
    md_mamba_config_default(&ic, DM);
    md_temporal *ident = NULL, *forced = NULL;
    if (md_temporal_init_write(path, &ic, 1, err, sizeof err) != MD_OK ||
        md_temporal_load(path, &ident, err, sizeof err) != MD_OK ||
        md_temporal_load(path, &forced, err, sizeof err) != MD_OK) {
        fprintf(stderr, "init: %s\n", err);
        return 1;
    }
    unlink(path);
    md_temporal_model(forced)->force_compute = 1;
    encs[nc] = ident, mode[nc] = 1;
    snprintf(label[nc++], sizeof *label, "identity encoder (init-temporal, out_proj zero: layers skipped) + reduction");
    encs[nc] = forced, mode[nc] = 1;
    snprintf(label[nc++], sizeof *label, "identity encoder, L = 2, forced to compute + reduction");
    for (const char *p = layers_arg; *p && nc + 2 <= MAXC;) {
        int L = atoi(p);
        encs[nc] = random_encoder(L), mode[nc] = 0;
        snprintf(label[nc++], sizeof *label, "temporal encoder, L = %d bidirectional layers (random weights)", L);
        encs[nc] = encs[nc - 1], mode[nc] = 1;
        snprintf(label[nc++], sizeof *label, "... through a stream: + copies, token reduction to 8 segments");
        while (*p && *p != ',')
            p++;
        if (*p == ',')
            p++;
    }
    /* Rounds: CLIP, then every encoder, once each. The machine's load drifts, so a ratio is taken
     * within a round and the median over rounds is reported; times are the best of the rounds. */
    static sstate streams[MAXC];
    tw w = {NULL, tokens, x, md_mamba_ws_new(), NULL};
    double best_clip = 1e30, best[MAXC], ratio[MAXC][64];
    for (int i = 0; i < nc; i++)
        best[i] = 1e30;
    if (reps > 64)
        reps = 64;
    for (int r = -1; r < reps; r++) { /* round -1 warms up */
        double tc = clip ? time_clip(&c) : time_vit_sgemm(vit_buf);
        if (r >= 0 && tc < best_clip)
            best_clip = tc;
        for (int i = 0; i < nc; i++) {
            w.t = encs[i];
            w.ss = &streams[i];
            double te = mode[i] ? time_stream(&w) : time_encoder(&w);
            if (r < 0)
                continue;
            best[i] = te < best[i] ? te : best[i];
            ratio[i][r] = te / tc;
        }
    }
    printf("Temporal encoder vs CLIP, one window of T = 32 frames x 50 tokens x 512 dims (1600 tokens), fp32, "
           "%s; ms: best of %d rounds; %% of CLIP: median over the rounds of the ratio within a round\n\n", cpu, reps);
    printf("| stage | ms per window | %% of CLIP |\n| --- | ---: | ---: |\n");
    printf("| %s | %.1f | 100%% |\n", clip_what, best_clip * 1e3);
    for (int i = 0; i < nc; i++) {
        /* median by insertion sort (a handful of values) */
        for (int a = 1; a < reps; a++)
            for (int b = a; b > 0 && ratio[i][b] < ratio[i][b - 1]; b--) {
                double tmp = ratio[i][b];
                ratio[i][b] = ratio[i][b - 1];
                ratio[i][b - 1] = tmp;
            }
        double med = reps % 2 ? ratio[i][reps / 2] : (ratio[i][reps / 2 - 1] + ratio[i][reps / 2]) / 2;
        printf("| %s | %.*f | %.*f%% |\n", label[i], best[i] < 0.01 ? 2 : 1, best[i] * 1e3, med < 0.001 ? 3 : 1,
               100 * med);
    }
    for (int i = 0; i < nc; i++) {
        md_temporal_stream_free(streams[i].s);
        md_segments_free(&streams[i].segs);
    }
    for (int i = 0; i < nc; i++)
        if (i == 0 || encs[i] != encs[i - 1])
            md_temporal_free(encs[i]);
    free((void *)c.px), free(c.emb), free(c.tok), free(vit_buf);
    double t;

    /* The scan of one direction of one layer at these sizes. */
    sw s = {T * TPF, 2 * DM, 16, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t nd = (size_t)s.L * s.di;
    s.u = malloc(nd * 4), s.dl = malloc(nd * 4), s.y = malloc(nd * 4), s.A = malloc((size_t)s.di * s.N * 4);
    s.BC = malloc((size_t)s.L * 2 * s.N * 4), s.D = malloc((size_t)s.di * 4);
    for (size_t i = 0; i < nd; i++)
        s.u[i] = frand(), s.dl[i] = 0.05f * (1 + frand());
    for (int i = 0; i < s.di * s.N; i++)
        s.A[i] = -(float)(1 + i % s.N);
    for (int i = 0; i < s.L * 2 * s.N; i++)
        s.BC[i] = frand();
    for (int i = 0; i < s.di; i++)
        s.D[i] = 1;
    t = best_of(reps, time_scan, &s);
    double tr = best_of(reps, time_scan_ref, &s);
    double tm = best_of(reps, time_layer_sgemm, NULL);
    printf("\nOne layer's matrix products alone (in_proj, 2 x x_proj, 2 x dt_proj, out_proj as cblas_sgemm): %.1f ms.\n",
           tm * 1e3);
    printf("\nSelective scan, one direction of one layer (L = %d steps, d_inner %d, d_state %d, %d threads):\n\n"
           "| scan | ms | M state updates/s | k tokens/s |\n| --- | ---: | ---: | ---: |\n"
           "| md_mamba_selective_scan (vectorised, threads) | %.1f | %.0f | %.0f |\n"
           "| md_mamba_selective_scan_ref (plain loop, libm expf, 1 thread) | %.1f | %.0f | %.0f |\n",
           s.L, s.di, s.N, threads, t * 1e3, (double)s.L * s.di * s.N / t / 1e6, s.L / t / 1e3, tr * 1e3,
           (double)s.L * s.di * s.N / tr / 1e6, s.L / tr / 1e3);
    free(s.u), free(s.dl), free(s.y), free(s.A), free(s.BC), free(s.D);

    int rc = 0;
    if (video) {
        if (!clip) {
            fprintf(stderr, "--video needs --clip\n");
            rc = 2;
        } else
            rc = run_video(video, clip, reps);
    }
    md_clip_free(clip);
    md_mamba_ws_free(w.ws);
    free(tokens), free(x);
    return rc;
}
