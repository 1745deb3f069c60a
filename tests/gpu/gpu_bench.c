/* gpu_bench.c - the GPU checks and benchmarks of tests/gpu/run.sh (not a unit test).
 *
 *   gpu_bench [--device cpu|cuda] COMMAND [options]
 *
 *   info                         the backend, in words
 *   demo DIR                     writes the tiny demo CLIP checkpoint (for dry runs without a GPU)
 *   clip --clip DIR [--batch 256] [--iters 10] [--prec f16]
 *                                CLIP image embeddings per second at BATCH (md_clip_embed_images from
 *                                host pixels, no tokens), and the same with the measured upload of
 *                                the pixels subtracted (what a device-resident input would give)
 *   scan [--batch 16] [--L 1600] [--C 1024] [--N 16] [--iters 20]
 *                                the selective scan (softplus + bias fused, D, no state) against the
 *                                memory-bandwidth floor of its bytes (bandwidth measured here with a
 *                                device copy of 1 GiB: 2 x bytes / time)
 *   segcheck --clip DIR --frames FILE [--k 4]
 *                                real frames through the CPU and the device: preprocessing (bit for
 *                                bit), CLIP tokens, segment embeddings (md_temporal stream, random
 *                                non-zero 2-layer encoder), cosine per segment; and the Mamba encoder
 *                                from ops (tests/gpu/mamba_dev.h) against md_mamba_forward on the real
 *                                tokens of each window
 *   e2e --clip DIR (--video FILE [--loops K] [--keyframes] | --frames FILE|-) [--window 32]
 *                                end-to-end indexing at 1 frame/s with the stage times: decode (+
 *                                CPU preprocessing, video/) or reading raw frames (+ GPU
 *                                preprocessing), CLIP on the device with tokens, the temporal stream
 *                                (CPU, as the daemon runs it) and the same windows through the
 *                                device Mamba encoder, storage (fp16 + SQLite, one transaction per
 *                                window); realtime factor = video seconds / wall seconds
 *
 * --frames reads what tests/gpu/frames.py writes: a line "MDRGB1 W H FPS\n", then W*H*3-byte RGB
 * frames sampled at FPS. Output: Markdown table rows on stdout ("| name | value | note |"), details
 * on stderr. Exit status 0 when every check passed. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../../engine/backend.h"
#include "../../engine/clip.h"
#include "../../base/log.h"
#include "../../engine/mamba.h"
#include "../../engine/safetensors.h"
#include "../../engine/temporal.h"
#include "../../video/video.h"
#include "mamba_dev.h"

static const md_backend_i *BE;
static int g_fail;

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static const char *arg(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return def;
}
static int flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

static void die(const char *what, md_status st, const char *msg)
{
    fprintf(stderr, "gpu_bench: %s: %s: %s\n", what, md_status_str(st), msg && msg[0] ? msg : BE->last_error());
    exit(1);
}
#define OK(x, what)                                                                                          \
    do {                                                                                                     \
        md_status st_ = (x);                                                                                 \
        if (st_ != MD_OK)                                                                                    \
            die(what, st_, NULL);                                                                            \
    } while (0)

static void *dalloc(size_t bytes)
{
    void *p = NULL;
    OK(BE->alloc(bytes, &p), "alloc");
    return p;
}

/* The random non-zero bidirectional encoder of bench_temporal.c (a trained one's cost). */
static md_temporal *random_encoder(int layers, int dm)
{
    md_mamba_config c;
    md_mamba_config_default(&c, dm);
    c.n_layers = layers;
    md_mamba *m = NULL;
    char err[256];
    if (md_mamba_new(&c, &m, err, sizeof err) != MD_OK)
        die("mamba", MD_ERR_INVALID, err);
    const int di = md_mamba_d_inner(&c);
    for (size_t i = 0; i < m->mem_floats; i++)
        m->mem[i] = frand() / sqrtf((float)di);
    for (int i = 0; i < layers; i++) {
        md_mamba_layer *l = &m->layers[i];
        for (int j = 0; j < dm; j++)
            l->norm_w[j] = 1.0f + 0.1f * frand();
        for (int d = 0; d < 2; d++)
            for (int j = 0; j < di; j++) {
                l->dir[d].dt_proj_b[j] = logf(expm1f(0.001f + 0.05f * (1 + frand())));
                for (int n = 0; n < c.d_state; n++)
                    l->dir[d].A_log[j * c.d_state + n] = logf((float)(n + 1));
            }
    }
    md_temporal *t = NULL;
    md_temporal_from_model(m, &t);
    return t;
}

static md_clip *load_clip(const char *dir, const md_backend_i *be, const char *prec)
{
    char err[512];
    md_clip *m = NULL;
    if (prec)
        setenv("MD_CUDA_PRECISION", prec, 1);
    if (md_clip_load(dir, be, &m, err, sizeof err) != MD_OK)
        die("clip load", MD_ERR_INVALID, err);
    unsetenv("MD_CUDA_PRECISION");
    fprintf(stderr, "clip: %s\n", md_clip_describe(m));
    return m;
}

/* ---------------------------------------------------------------- raw frames */

typedef struct frames {
    FILE *f;
    int w, h;
    double fps;
    size_t fbytes;
} frames;

static int frames_open(frames *fr, const char *path)
{
    fr->f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char line[128];
    if (!fr->f || !fgets(line, sizeof line, fr->f) || sscanf(line, "MDRGB1 %d %d %lf", &fr->w, &fr->h, &fr->fps) != 3 ||
        fr->w < 1 || fr->h < 1 || fr->fps <= 0) {
        fprintf(stderr, "gpu_bench: %s: not a frames file (MDRGB1 W H FPS)\n", path);
        return -1;
    }
    fr->fbytes = (size_t)fr->w * fr->h * 3;
    return 0;
}

/* Up to MAX frames into BUF; returns how many. */
static int frames_read(frames *fr, uint8_t *buf, int max)
{
    int n = 0;
    while (n < max && fread(buf + (size_t)n * fr->fbytes, 1, fr->fbytes, fr->f) == fr->fbytes)
        n++;
    return n;
}

/* ---------------------------------------------------------------- info */

static int cmd_info(void)
{
    char d[256] = "";
    BE->describe(d, sizeof d);
    size_t used = 0, avail = 0;
    BE->mem_info(&used, &avail);
    printf("| backend | %s | %s |\n", BE->name, d);
    return 0;
}

/* ---------------------------------------------------------------- clip */

static int cmd_clip(int argc, char **argv)
{
    const char *dir = arg(argc, argv, "--clip", NULL);
    const int batch = atoi(arg(argc, argv, "--batch", "256")), iters = atoi(arg(argc, argv, "--iters", "10"));
    const char *prec = arg(argc, argv, "--prec", "f16");
    if (!dir)
        die("clip", MD_ERR_INVALID, "--clip DIR is required");
    md_clip *m = load_clip(dir, BE, prec);
    md_clip_set_max_batch(m, batch);
    const int S = md_clip_image_size(m), E = md_clip_dim(m);
    const size_t npx = (size_t)batch * 3 * S * S;
    float *px = malloc(npx * sizeof *px), *out = malloc((size_t)batch * E * sizeof *out);
    for (size_t i = 0; i < npx; i++)
        px[i] = frand() * 2;
    char err[512];
    if (md_clip_embed_images(m, px, batch, out, NULL, err, sizeof err) != MD_OK) /* warm-up */
        die("clip", MD_ERR_INVALID, err);
    double best = 1e30;
    for (int i = 0; i < iters; i++) {
        double t0 = md_mono_s();
        if (md_clip_embed_images(m, px, batch, out, NULL, err, sizeof err) != MD_OK)
            die("clip", MD_ERR_INVALID, err);
        double t = md_mono_s() - t0;
        best = t < best ? t : best;
    }
    /* The pixels' upload alone, as the call does it. */
    double up = 0;
    if (!BE->host_memory) {
        void *d = dalloc(npx * sizeof *px);
        up = 1e30;
        for (int i = 0; i < 3; i++) {
            double t0 = md_mono_s();
            OK(BE->upload(d, px, npx * sizeof *px), "upload");
            double t = md_mono_s() - t0;
            up = t < up ? t : up;
        }
        BE->free(d);
    }
    printf("| momentd CLIP ViT-B/32 %s, batch %d, from host pixels | %.0f img/s | %.2f ms per batch |\n", prec, batch,
           batch / best, best * 1e3);
    if (!BE->host_memory)
        printf("| momentd CLIP ViT-B/32 %s, batch %d, upload subtracted | %.0f img/s | upload %.2f ms (%.1f GB/s) |\n",
               prec, batch, batch / (best - up), up * 1e3, npx * 4 / up / 1e9);
    free(px);
    free(out);
    md_clip_free(m);
    return 0;
}

/* ---------------------------------------------------------------- scan */

static int cmd_scan(int argc, char **argv)
{
    const int B = atoi(arg(argc, argv, "--batch", "16")), L = atoi(arg(argc, argv, "--L", "1600")),
              C = atoi(arg(argc, argv, "--C", "1024")), N = atoi(arg(argc, argv, "--N", "16")),
              iters = atoi(arg(argc, argv, "--iters", "20"));
    const size_t rows = (size_t)B * L;
    float *h = malloc(rows * C * sizeof *h);
    for (size_t i = 0; i < rows * C; i++)
        h[i] = frand();
    float *u = dalloc(rows * C * 4), *dl = dalloc(rows * C * 4), *y = dalloc(rows * C * 4),
          *bc = dalloc(rows * 2 * N * 4), *A = dalloc((size_t)C * N * 4), *D = dalloc((size_t)C * 4),
          *bias = dalloc((size_t)C * 4);
    OK(BE->upload(u, h, rows * C * 4), "upload");
    OK(BE->upload(dl, h, rows * C * 4), "upload");
    OK(BE->upload(bc, h, rows * 2 * N * 4), "upload");
    for (int i = 0; i < C * N; i++)
        h[i] = -(float)(i % N + 1);
    OK(BE->upload(A, h, (size_t)C * N * 4), "upload");
    OK(BE->upload(D, h, (size_t)C * 4), "upload");
    OK(BE->upload(bias, h, (size_t)C * 4), "upload");
    md_scan_args a = {B, L, C, N, u, C, dl, C, bias, 1, A, bc, bc + N, 2 * N, D, 0, NULL, 0, y, C};
    OK(BE->scan(&a), "scan");
    OK(BE->synchronize(), "scan");
    double best = 1e30;
    for (int i = 0; i < iters; i++) {
        double t0 = md_mono_s();
        a.reverse = i & 1;
        OK(BE->scan(&a), "scan");
        OK(BE->synchronize(), "scan");
        double t = md_mono_s() - t0;
        best = t < best ? t : best;
    }
    /* Bandwidth: a device copy, bytes read + written over time. */
    const size_t cb = (size_t)1 << 30;
    double bw = 0;
    void *s1 = NULL, *s2 = NULL;
    if (BE->alloc(cb, &s1) == MD_OK && BE->alloc(cb, &s2) == MD_OK) {
        double bt = 1e30;
        for (int i = 0; i < 5; i++) {
            double t0 = md_mono_s();
            OK(BE->copy(s2, s1, cb), "copy");
            OK(BE->synchronize(), "copy");
            double t = md_mono_s() - t0;
            bt = t < bt ? t : bt;
        }
        bw = 2.0 * cb / bt;
    }
    BE->free(s1);
    BE->free(s2);
    const double bytes = 4.0 * (3.0 * rows * C + 2.0 * rows * N + (double)C * N + 2.0 * C);
    const double floor_s = bw > 0 ? bytes / bw : 0;
    printf("| selective scan %d x %d steps x %d ch x %d states | %.3f ms | %.0f MB moved; floor %.3f ms at %.0f GB/s "
           "(copy); %.2fx the floor |\n",
           B, L, C, N, best * 1e3, bytes / 1e6, floor_s * 1e3, bw / 1e9, floor_s > 0 ? best / floor_s : 0);
    BE->free(u), BE->free(dl), BE->free(y), BE->free(bc), BE->free(A), BE->free(D), BE->free(bias);
    free(h);
    return 0;
}

/* ---------------------------------------------------------------- segcheck */

static double cosine(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb ? 1 : 0);
}

/* Segments of a whole token sequence through a fresh stream. */
static void segments_of(md_temporal *t, int tpf, int k, const float *tok, int n, double fps, md_segments *out)
{
    md_temporal_params pr;
    md_temporal_params_default(&pr, tpf);
    pr.segment_frames = k;
    pr.frame_interval_ms = (int64_t)(1000 / fps);
    md_temporal_stream *s = NULL;
    char err[256];
    if (md_temporal_stream_new(t, &pr, &s, err, sizeof err) != MD_OK)
        die("temporal", MD_ERR_INVALID, err);
    int64_t *pts = malloc(sizeof *pts * (n ? n : 1));
    for (int i = 0; i < n; i++)
        pts[i] = (int64_t)(i * 1000 / fps);
    md_temporal_stream_push(s, 0, tok, pts, n, out);
    md_temporal_stream_finish(s, out);
    md_temporal_stream_free(s);
    free(pts);
}

static int cmd_segcheck(int argc, char **argv)
{
    const char *dir = arg(argc, argv, "--clip", NULL), *fpath = arg(argc, argv, "--frames", NULL);
    const int k = atoi(arg(argc, argv, "--k", "4"));
    if (!dir || !fpath)
        die("segcheck", MD_ERR_INVALID, "--clip DIR and --frames FILE are required");
    frames fr;
    if (frames_open(&fr, fpath) != 0)
        return 1;
    enum { MAXF = 512 };
    uint8_t *rgb = malloc(fr.fbytes * MAXF);
    const int n = frames_read(&fr, rgb, MAXF);
    if (fr.f != stdin)
        fclose(fr.f);
    md_clip *cpu = load_clip(dir, md_backend_cpu(), NULL), *dev = load_clip(dir, BE, arg(argc, argv, "--prec", NULL));
    const int S = md_clip_image_size(cpu), E = md_clip_dim(cpu), T = md_clip_n_patches(cpu) + 1;
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    const size_t per = (size_t)3 * S * S;
    float *pc = malloc(per * n * 4), *pd = malloc(per * n * 4);
    for (int i = 0; i < n; i++)
        OK(md_image_preprocess(rgb + i * fr.fbytes, fr.w, fr.h, (ptrdiff_t)fr.w * 3, 3, 0, S, mean, std, pc + i * per),
           "preprocess (cpu)");
    void *drgb = dalloc(fr.fbytes * n), *dpx = dalloc(per * n * 4);
    OK(BE->upload(drgb, rgb, fr.fbytes * n), "upload");
    OK(BE->preprocess(drgb, n, fr.w, fr.h, (size_t)fr.w * 3, fr.fbytes, S, mean, std, dpx), "preprocess");
    OK(BE->download(pd, dpx, per * n * 4), "download");
    size_t diff = 0;
    for (size_t i = 0; i < per * n; i++)
        diff += memcmp(&pc[i], &pd[i], 4) != 0;
    printf("| preprocess %d real frames %dx%d -> %d on %s vs CPU | %zu of %zu values differ | must be 0 |\n", n, fr.w,
           fr.h, S, BE->name, diff, per * n);
    g_fail |= diff != 0;
    float *ec = malloc((size_t)n * E * 4), *ed = malloc((size_t)n * E * 4), *tc = malloc((size_t)n * T * E * 4),
          *td = malloc((size_t)n * T * E * 4);
    char err[512];
    if (md_clip_embed_images(cpu, pc, n, ec, tc, err, sizeof err) != MD_OK ||
        md_clip_embed_images(dev, pd, n, ed, td, err, sizeof err) != MD_OK)
        die("clip", MD_ERR_INVALID, err);
    double worst_img = 1;
    for (int i = 0; i < n; i++) {
        double c = cosine(ec + (size_t)i * E, ed + (size_t)i * E, E);
        worst_img = c < worst_img ? c : worst_img;
    }
    md_temporal *t = random_encoder(2, E);
    md_segments sc = {0}, sd = {0};
    segments_of(t, T, k, tc, n, fr.fps, &sc);
    segments_of(t, T, k, td, n, fr.fps, &sd);
    double worst = 1, sum = 0;
    int ns = sc.n < sd.n ? sc.n : sd.n;
    for (int i = 0; i < ns; i++) {
        double c = cosine(sc.emb + (size_t)i * E, sd.emb + (size_t)i * E, E);
        fprintf(stderr, "segment %d [%lld, %lld) ms: cosine %.6f\n", i, (long long)sc.seg[i].start_ms,
                (long long)sc.seg[i].end_ms, c);
        worst = c < worst ? c : worst;
        sum += c;
    }
    printf("| image embeddings, %d frames, %s device path vs CPU | worst cosine %.6f | |\n", n, BE->name, worst_img);
    printf("| segment embeddings (k=%d, 2-layer random Mamba), %d segments | worst cosine %.6f, mean %.6f | must be >= "
           "0.999 |\n",
           k, ns, worst, ns ? sum / ns : 0);
    g_fail |= !(worst >= 0.999) || sc.n != sd.n || ns == 0;
    /* The Mamba encoder from ops on the device against the CPU's, on real tokens (one window). */
    md_mamba *mm = md_temporal_model(t);
    mm->force_compute = 1;
    const int wf = n < 32 ? n : 32, L = wf * T;
    float *xc = malloc((size_t)L * E * 4), *xd = malloc((size_t)L * E * 4);
    memcpy(xc, tc, (size_t)L * E * 4);
    OK(md_mamba_forward(mm, NULL, xc, L, NULL, 0), "mamba (cpu)");
    md_mamba_dev *md = NULL;
    OK(md_mamba_dev_new(BE, mm, MD_PREC_F32, &md), "mamba dev");
    float *dx = dalloc((size_t)L * E * 4);
    OK(BE->upload(dx, tc, (size_t)L * E * 4), "upload");
    OK(md_mamba_dev_forward(md, dx, L), "mamba dev");
    OK(BE->download(xd, dx, (size_t)L * E * 4), "download");
    double e = 0, s = 0;
    for (size_t i = 0; i < (size_t)L * E; i++) {
        double d = fabs((double)xd[i] - xc[i]);
        e = d > e || isnan(d) ? d : e;
        s = fabs(xc[i]) > s ? fabs(xc[i]) : s;
    }
    printf("| Mamba encoder from ops (f32) on %s vs md_mamba_forward, %d real tokens | max rel err %.2e | must be <= "
           "1e-4 |\n",
           BE->name, L, e / s);
    g_fail |= !(e / s <= 1e-4);
    md_mamba_dev_free(md);
    BE->free(dx), BE->free(drgb), BE->free(dpx);
    md_segments_free(&sc), md_segments_free(&sd);
    md_temporal_free(t);
    md_clip_free(cpu), md_clip_free(dev);
    free(rgb), free(pc), free(pd), free(ec), free(ed), free(tc), free(td), free(xc), free(xd);
    return g_fail;
}

/* ---------------------------------------------------------------- e2e */

typedef struct store {
    sqlite3 *db;
    sqlite3_stmt *ins;
    char path[64];
} store;

static void store_open(store *s)
{
    snprintf(s->path, sizeof s->path, "/tmp/momentd-gpu-bench-XXXXXX");
    int fd = mkstemp(s->path);
    if (fd >= 0)
        close(fd);
    sqlite3_open(s->path, &s->db);
    sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE segments(video INTEGER, "
                        "start_ms INTEGER, end_ms INTEGER, embedding BLOB)", NULL, NULL, NULL);
    sqlite3_prepare_v2(s->db, "INSERT INTO segments VALUES (1, ?, ?, ?)", -1, &s->ins, NULL);
}

static void store_put(store *s, const md_segments *segs)
{
    uint16_t h[4096];
    sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL);
    for (int i = 0; i < segs->n; i++) {
        for (int j = 0; j < segs->dim && j < 4096; j++)
            h[j] = md_f32_to_f16(segs->emb[(size_t)i * segs->dim + j]);
        sqlite3_bind_int64(s->ins, 1, segs->seg[i].start_ms);
        sqlite3_bind_int64(s->ins, 2, segs->seg[i].end_ms);
        sqlite3_bind_blob(s->ins, 3, h, (int)(segs->dim * sizeof *h), SQLITE_TRANSIENT);
        sqlite3_step(s->ins);
        sqlite3_reset(s->ins);
    }
    sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
}

static void store_close(store *s)
{
    char p[80];
    sqlite3_finalize(s->ins);
    sqlite3_close(s->db);
    unlink(s->path);
    snprintf(p, sizeof p, "%s-wal", s->path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", s->path);
    unlink(p);
}

enum { ST_DECODE, ST_PREP, ST_CLIP, ST_TEMPORAL, ST_TEMPORAL_DEV, ST_STORE, ST_N };
static const char *const STAGE[ST_N] = {"decode (+ CPU preprocessing in video/)", "upload + GPU preprocessing",
                                        "CLIP image tower + tokens (device)", "temporal stream (CPU, as the daemon)",
                                        "temporal: Mamba from ops (device, same windows)",
                                        "storage (fp16 + SQLite per window)"};

static int cmd_e2e(int argc, char **argv)
{
    const char *dir = arg(argc, argv, "--clip", NULL), *video = arg(argc, argv, "--video", NULL),
               *fpath = arg(argc, argv, "--frames", NULL);
    const int loops = atoi(arg(argc, argv, "--loops", "1")), W = atoi(arg(argc, argv, "--window", "32"));
    if (!dir || (!video && !fpath))
        die("e2e", MD_ERR_INVALID, "--clip DIR and --video FILE or --frames FILE are required");
    md_clip *clip = load_clip(dir, BE, arg(argc, argv, "--prec", NULL));
    const int S = md_clip_image_size(clip), E = md_clip_dim(clip), T = md_clip_n_patches(clip) + 1;
    const size_t per = (size_t)3 * S * S;
    md_temporal *t = random_encoder(2, E);
    md_mamba_dev *mdev = NULL;
    OK(md_mamba_dev_new(BE, md_temporal_model(t), MD_PREC_F32, &mdev), "mamba dev");
    md_temporal_params pr;
    md_temporal_params_default(&pr, T);
    pr.window_frames = W;
    pr.frame_interval_ms = 1000;
    md_temporal_stream *s = NULL;
    char err[512];
    if (md_temporal_stream_new(t, &pr, &s, err, sizeof err) != MD_OK)
        die("temporal", MD_ERR_INVALID, err);
    store db;
    store_open(&db);
    float *px = malloc(per * W * 4), *emb = malloc((size_t)W * E * 4), *tok = malloc((size_t)W * T * E * 4);
    float *dtok = dalloc((size_t)W * T * E * 4);
    int64_t *pts = malloc(sizeof *pts * W);
    md_segments segs = {0};
    double st[ST_N] = {0};
    long long nframes = 0, nseg = 0;
    double video_s = 0;
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    const double t_start = md_mono_s();
    frames fr = {0};
    uint8_t *rgb = NULL;
    void *drgb = NULL, *dpx = NULL;
    int use_frames = video == NULL;
    md_video_decoder *d = NULL;
    int loop = 0;
    long long loop_off_ms = 0, last_ms = 0;
    if (use_frames) {
        if (frames_open(&fr, fpath) != 0)
            return 1;
        rgb = malloc(fr.fbytes * W);
        drgb = dalloc(fr.fbytes * W);
        dpx = dalloc(per * W * 4);
    } else {
#ifndef MD_GPU_NO_DECODER
        md_video_global_init();
#endif
    }
    /* The window's tokens are pushed in batches of W frames; the device Mamba runs each batch as
     * one sequence too, for its time (its output is not used). */
    for (;;) {
        int n = 0;
        const float *pix = px;
        double t0 = md_mono_s();
        if (use_frames) {
            n = frames_read(&fr, rgb, W);
            st[ST_DECODE] += md_mono_s() - t0;
            if (n > 0) {
                t0 = md_mono_s();
                OK(BE->upload(drgb, rgb, fr.fbytes * n), "upload");
                OK(BE->preprocess(drgb, n, fr.w, fr.h, (size_t)fr.w * 3, fr.fbytes, S, mean, std, dpx), "preprocess");
                OK(BE->download(px, dpx, per * n * 4), "download");
                st[ST_PREP] += md_mono_s() - t0;
                for (int i = 0; i < n; i++)
                    pts[i] = (int64_t)((nframes + i) * 1000 / fr.fps);
            }
        } else {
#ifdef MD_GPU_NO_DECODER
            (void)d, (void)loop, (void)loops, (void)loop_off_ms, (void)last_ms;
            die("e2e", MD_ERR_UNSUPPORTED, "this build has no video decoder: use --frames");
#else
            md_video_batch b;
            for (;;) {
                if (!d) {
                    if (loop >= loops)
                        break;
                    md_video_params vp = md_video_default_params();
                    vp.batch = W;
                    vp.keyframes_only = flag(argc, argv, "--keyframes");
                    if (md_video_decoder_open(video, &vp, NULL, &d, err, sizeof err) != MD_OK)
                        die("decode", MD_ERR_MEDIA, err);
                    loop++;
                }
                md_status rc = md_video_decoder_next(d, &b);
                if (rc != MD_OK)
                    die("decode", rc, md_video_decoder_error(d));
                if (b.n > 0)
                    break;
                const md_video_info *vi = md_video_decoder_info(d);
                loop_off_ms += vi->duration_ms > 0 ? vi->duration_ms : last_ms + 1000;
                md_video_decoder_close(d);
                d = NULL;
            }
            st[ST_DECODE] += md_mono_s() - t0;
            if (d) {
                n = b.n;
                pix = b.pixels;
                for (int i = 0; i < n; i++)
                    pts[i] = last_ms = loop_off_ms + b.frames[i].ts_ms;
                if (getenv("MD_GPU_BENCH_DEBUG"))
                    fprintf(stderr, "batch %d frames, %lld..%lld ms\n", n, (long long)pts[0], (long long)pts[n - 1]);
            }
#endif
        }
        if (n == 0)
            break;
        t0 = md_mono_s();
        if (md_clip_embed_images(clip, pix, n, emb, tok, err, sizeof err) != MD_OK)
            die("clip", MD_ERR_INVALID, err);
        st[ST_CLIP] += md_mono_s() - t0;
        t0 = md_mono_s();
        md_segments_clear(&segs);
        md_temporal_stream_push(s, nframes, tok, pts, n, &segs);
        st[ST_TEMPORAL] += md_mono_s() - t0;
        t0 = md_mono_s();
        OK(BE->upload(dtok, tok, (size_t)n * T * E * 4), "upload");
        OK(md_mamba_dev_forward(mdev, dtok, n * T), "mamba dev");
        OK(BE->synchronize(), "mamba dev");
        st[ST_TEMPORAL_DEV] += md_mono_s() - t0;
        t0 = md_mono_s();
        store_put(&db, &segs);
        st[ST_STORE] += md_mono_s() - t0;
        nframes += n;
        nseg += segs.n;
        video_s = (pts[n - 1] + 1000) / 1000.0;
    }
    md_segments_clear(&segs);
    double t0 = md_mono_s();
    md_temporal_stream_finish(s, &segs);
    st[ST_TEMPORAL] += md_mono_s() - t0;
    store_put(&db, &segs);
    nseg += segs.n;
    const double wall = md_mono_s() - t_start;
    double total = 0;
    for (int i = 0; i < ST_N; i++)
        if (i != ST_TEMPORAL_DEV)
            total += st[i];
    printf("| e2e source | %s | %s |\n", use_frames ? "raw frames (tests/gpu/frames.py)" : video,
           use_frames ? "decode = reading the pipe: the decoder's own time is frames.py's" : flag(argc, argv, "--keyframes") ? "keyframes only" : "exact");
    for (int i = 0; i < ST_N; i++)
        if (st[i] > 0 && i != ST_TEMPORAL_DEV)
            printf("| e2e %s | %.2f s | %.1f%% of the stages |\n",
                   i == ST_DECODE && use_frames ? "waiting for frames (decoder: frames.py, concurrent)" : STAGE[i], st[i],
                   100 * st[i] / total);
    printf("| e2e %s | %.2f s | instead of the CPU stream's %.2f s (encoder only: no pooling) |\n", STAGE[ST_TEMPORAL_DEV],
           st[ST_TEMPORAL_DEV], st[ST_TEMPORAL]);
    printf("| e2e %lld frames (1/s), %lld segments, %.0f s of video | wall %.2f s | realtime factor %.0fx = %.0f h of "
           "video per hour |\n",
           nframes, nseg, video_s, wall, video_s / wall, video_s / wall);
    printf("| e2e with the temporal stage on the device instead | %.2f s | realtime factor %.0fx |\n",
           total - st[ST_TEMPORAL] + st[ST_TEMPORAL_DEV], video_s / (total - st[ST_TEMPORAL] + st[ST_TEMPORAL_DEV]));
    store_close(&db);
    md_segments_free(&segs);
    md_temporal_stream_free(s);
    md_mamba_dev_free(mdev);
    md_temporal_free(t);
    md_clip_free(clip);
    BE->free(dtok), BE->free(drgb), BE->free(dpx);
    if (fr.f && fr.f != stdin)
        fclose(fr.f);
    free(px), free(emb), free(tok), free(pts), free(rgb);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dev = arg(argc, argv, "--device", "cuda");
    int i = 1;
    while (i < argc && argv[i][0] == '-')
        i += 2;
    if (i >= argc) {
        fprintf(stderr, "usage: gpu_bench [--device cpu|cuda] info|clip|scan|segcheck|e2e [options] (see the source)\n");
        return 2;
    }
    md_log_set_level(MD_LOG_WARN);
    char err[256];
    if (strcmp(dev, "cpu") == 0)
        BE = md_backend_cpu();
    else if (md_backend_select(dev, &BE, err, sizeof err) != MD_OK) {
        fprintf(stderr, "gpu_bench: %s\n", err);
        return 3;
    }
    const char *cmd = argv[i];
    int sub_argc = argc - i;
    char **sub = argv + i;
    if (strcmp(cmd, "info") == 0)
        return cmd_info();
    if (strcmp(cmd, "demo") == 0 && sub_argc > 1) { /* the tiny demo checkpoint, for dry runs */
        if (md_clip_write_demo(sub[1], 7, err, sizeof err) != MD_OK)
            die("demo", MD_ERR_IO, err);
        return 0;
    }
    if (strcmp(cmd, "clip") == 0)
        return cmd_clip(sub_argc, sub);
    if (strcmp(cmd, "scan") == 0)
        return cmd_scan(sub_argc, sub);
    if (strcmp(cmd, "segcheck") == 0)
        return cmd_segcheck(sub_argc, sub);
    if (strcmp(cmd, "e2e") == 0)
        return cmd_e2e(sub_argc, sub);
    fprintf(stderr, "gpu_bench: unknown command %s\n", cmd);
    return 2;
}
