/* test_mamba.c - unit tests of the temporal encoder (engine/mamba.h, engine/temporal.h): the C
 * block and encoder against the float64 PyTorch reference (tests/fixtures/mamba, made by
 * tests/tools/gen_mamba_fixtures.py from tests/tools/mamba_ref.py) for the forward, backward and
 * bidirectional mixer and a 3-layer encoder at sequence lengths 1, 7, 33, 100; the selective scan
 * against a naive double-precision loop; streaming (two halves with carried state == one pass for
 * the forward direction, windows with overlap == the reference's encode_windows, checkpoint and
 * restore == an uninterrupted run); the identity encoder (out_proj zero: segment embeddings ==
 * the normalised mean of the frames' CLIP embeddings, contiguous times); and temporal.safetensors
 * validation (truncated, missing / extra / misshaped / non-finite tensors, bad metadata) as clear
 * MD_ERR_INVALID errors, never a crash (run under ASan by `make asan`).
 *
 * Error measure: rel(c, r) = max_i |c_i - r_i| / max_i |r_i| over one whole output tensor; the
 * tolerance against the reference is 1e-4. The largest measured values are printed. */
#define _XOPEN_SOURCE 700
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../engine/mamba.h"
#include "../../engine/safetensors.h"
#include "../../engine/temporal.h"
#include "harness.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

#define FIX "tests/fixtures/mamba"
#define TOL 1e-4

static char g_tmp[PATH_MAX];
static double g_worst_ref; /* largest rel error against the reference seen */

static double rel(const float *c, const float *r, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)c[i] - r[i]);
        if (!(d <= num)) /* NaN-safe: a NaN makes num NaN and the check fail */
            num = d;
        if (fabs(r[i]) > den)
            den = fabs(r[i]);
    }
    return num / (den > 1e-30 ? den : 1e-30);
}

static int check_ref(const char *what, const float *c, const float *r, size_t n)
{
    double e = rel(c, r, n);
    if (e > g_worst_ref || isnan(e))
        g_worst_ref = isnan(e) ? INFINITY : e;
    if (!(e <= TOL)) {
        fprintf(stderr, "  %s: rel error %.3g > %g\n", what, e, TOL);
        return 0;
    }
    return 1;
}

/* Tensor NAME of ST as f32 (malloc'd), its element count in *N (may be NULL). */
static float *get_f32(const md_safetensors *st, const char *name, size_t *n)
{
    const md_st_tensor *t = md_safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "  fixture tensor %s missing\n", name);
        return NULL;
    }
    float *v = malloc((t->numel ? t->numel : 1) * sizeof *v);
    if (v && md_st_to_f32(t, v) != MD_OK) {
        free(v);
        return NULL;
    }
    if (n)
        *n = t->numel;
    return v;
}

static md_safetensors *open_fix(const char *name)
{
    char p[512], err[256] = "";
    snprintf(p, sizeof p, FIX "/%s", name);
    md_safetensors *st = NULL;
    if (md_safetensors_open(p, &st, err, sizeof err) != MD_OK)
        fprintf(stderr, "  %s\n", err);
    return st;
}

static md_temporal *load_fix(const char *name)
{
    char p[512], err[512] = "";
    snprintf(p, sizeof p, FIX "/%s", name);
    md_temporal *t = NULL;
    if (md_temporal_load(p, &t, err, sizeof err) != MD_OK)
        fprintf(stderr, "  %s\n", err);
    return t;
}

static const int LENGTHS[] = {1, 7, 33, 100};

/* ---- the selective scan against a naive double loop ------------------------------------- */

static uint64_t g_rng = 0x1234567;
static float frand(void) /* uniform [-1, 1) */
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void test_selective_scan(void)
{
    enum { L = 33, DI = 37, N = 5, LD = 2 * N + 3 };
    float *u = malloc(sizeof(float) * L * DI), *dl = malloc(sizeof(float) * L * DI), *A = malloc(sizeof(float) * DI * N);
    float *BC = malloc(sizeof(float) * L * LD), *D = malloc(sizeof(float) * DI), *y = malloc(sizeof(float) * L * DI);
    float *y2 = malloc(sizeof(float) * L * DI), *ref = malloc(sizeof(float) * L * DI);
    float *h = calloc(DI * N, sizeof(float));
    double *hd = calloc(DI * N, sizeof(double));
    for (int i = 0; i < L * DI; i++) {
        u[i] = 2 * frand();
        dl[i] = 1.0f + frand(); /* [0, 2): delta * A reaches -100, exp underflows */
    }
    for (int i = 0; i < DI * N; i++)
        A[i] = -expf(2.0f * frand() + 1.0f); /* [-e^3, -e^-1] */
    A[0] = -50.0f;
    for (int i = 0; i < L * LD; i++)
        BC[i] = frand();
    for (int i = 0; i < DI; i++)
        D[i] = frand();
    const float *B = BC + 3, *C = BC + 3 + N;
    for (int t = 0; t < L; t++)
        for (int d = 0; d < DI; d++) {
            double acc = 0;
            for (int n = 0; n < N; n++) {
                double *hv = &hd[d * N + n];
                *hv = exp((double)dl[t * DI + d] * A[d * N + n]) * *hv + (double)dl[t * DI + d] * B[t * LD + n] * u[t * DI + d];
                acc += C[t * LD + n] * *hv;
            }
            ref[t * DI + d] = (float)(acc + (double)D[d] * u[t * DI + d]);
        }
    md_mamba_selective_scan(L, DI, N, u, dl, A, B, C, LD, D, NULL, L, y);
    CHECK(check_ref("scan", y, ref, (size_t)L * DI));
    md_mamba_selective_scan_ref(L, DI, N, u, dl, A, B, C, LD, D, NULL, L, y2);
    CHECK(check_ref("scan_ref", y2, ref, (size_t)L * DI));
    /* In two pieces with the state carried through h: the same. */
    md_mamba_selective_scan(13, DI, N, u, dl, A, B, C, LD, D, h, 13, y2);
    md_mamba_selective_scan(L - 13, DI, N, u + 13 * DI, dl + 13 * DI, A, B + 13 * LD, C + 13 * LD, LD, D, h, L - 13,
                            y2 + 13 * DI);
    CHECK(rel(y2, y, (size_t)L * DI) < 1e-6);
    float hmax = 0;
    for (int i = 0; i < DI * N; i++) {
        CHECK(fabs(h[i] - hd[i]) <= 1e-4 * (1 + fabs(hd[i])));
        hmax = fabsf(h[i]) > hmax ? fabsf(h[i]) : hmax;
    }
    CHECK(hmax > 0.01f); /* the state is not trivially zero */
    free(u), free(dl), free(A), free(BC), free(D), free(y), free(y2), free(ref), free(h), free(hd);
}

/* ---- the block against the reference ------------------------------------------------------ */

static void test_block_mixer(void)
{
    md_temporal *t = load_fix("block.safetensors");
    md_safetensors *r = open_fix("block.ref.safetensors");
    CHECK(t && r);
    if (!t || !r)
        goto out;
    md_mamba *m = md_temporal_model(t);
    CHECK_EQ_INT(m->cfg.d_model, 16);
    CHECK_EQ_INT(m->cfg.dirs, MD_MAMBA_BOTH);
    CHECK_EQ_INT(m->cfg.dt_rank, 1);
    CHECK(!md_temporal_get_info(t)->identity && !md_temporal_get_info(t)->trained);
    for (size_t i = 0; i < sizeof LENGTHS / sizeof *LENGTHS; i++) {
        int L = LENGTHS[i];
        char name[64];
        snprintf(name, sizeof name, "u.L%d", L);
        size_t n;
        float *u = get_f32(r, name, &n);
        float *out = malloc(n * sizeof *out);
        CHECK(u && out && n == (size_t)L * 16);
        if (!u || !out) {
            free(u), free(out);
            continue;
        }
        static const char *const dn[] = {"", "fwd", "bwd", "both"};
        for (int dirs = 1; dirs <= 3; dirs++) {
            snprintf(name, sizeof name, "mixer_%s.L%d", dn[dirs], L);
            float *ref = get_f32(r, name, NULL);
            CHECK_EQ_INT(md_mamba_mixer(m, NULL, 0, dirs, u, L, NULL, 0, out), MD_OK);
            CHECK(ref && check_ref(name, out, ref, n));
            free(ref);
        }
        snprintf(name, sizeof name, "enc.L%d", L);
        float *ref = get_f32(r, name, NULL);
        memcpy(out, u, n * sizeof *out);
        CHECK_EQ_INT(md_mamba_forward(m, NULL, out, L, NULL, 0), MD_OK);
        CHECK(ref && check_ref(name, out, ref, n));
        free(ref), free(u), free(out);
    }
out:
    md_safetensors_free(r);
    md_temporal_free(t);
}

static void test_encoder(void)
{
    md_temporal *t = load_fix("enc.safetensors");
    md_safetensors *r = open_fix("enc.ref.safetensors");
    CHECK(t && r);
    if (!t || !r)
        goto out;
    md_mamba *m = md_temporal_model(t);
    CHECK_EQ_INT(m->cfg.n_layers, 3);
    CHECK_EQ_INT(m->cfg.dt_rank, 2);
    CHECK_EQ_INT(m->cfg.d_conv, 3);
    CHECK(m->cfg.in_proj_bias && m->cfg.out_proj_bias && m->cfg.final_norm);
    for (size_t i = 0; i < sizeof LENGTHS / sizeof *LENGTHS; i++) {
        int L = LENGTHS[i];
        char name[64];
        snprintf(name, sizeof name, "x.L%d", L);
        size_t n;
        float *x = get_f32(r, name, &n);
        float *out = malloc(n * sizeof *out);
        if (!x || !out) {
            CHECK(!"fixture");
            free(x), free(out);
            continue;
        }
        for (int fwd = 0; fwd < 2; fwd++) {
            snprintf(name, sizeof name, fwd ? "enc_fwd.L%d" : "enc.L%d", L);
            float *ref = get_f32(r, name, NULL);
            memcpy(out, x, n * sizeof *out);
            m->cfg.dirs = fwd ? MD_MAMBA_FWD : MD_MAMBA_BOTH;
            CHECK_EQ_INT(md_mamba_forward(m, NULL, out, L, NULL, 0), MD_OK);
            m->cfg.dirs = MD_MAMBA_BOTH;
            CHECK(ref && check_ref(name, out, ref, n));
            free(ref);
        }
        free(x), free(out);
    }
out:
    md_safetensors_free(r);
    md_temporal_free(t);
}

/* ---- streaming: two halves with the state carried == one pass (forward direction) ----------- */

/* X [L] in pieces cut at CUTS (ascending, NCUT of them) with the forward state carried == one
 * pass, forward direction only; without the state it differs. */
static void pieces(md_mamba *m, const float *x, int L, const int *cuts, int ncut, const float *ref_fwd)
{
    const int dm = m->cfg.d_model;
    size_t n = (size_t)L * dm;
    float *one = malloc(n * sizeof *one), *two = malloc(n * sizeof *two), *nost = malloc(n * sizeof *nost);
    md_mamba_state *st = NULL;
    md_mamba_ws *ws = md_mamba_ws_new();
    CHECK_EQ_INT(md_mamba_state_new(m, &st), MD_OK);
    if (!one || !two || !nost || !st || !ws)
        goto out;
    memcpy(one, x, n * sizeof *one);
    memcpy(two, x, n * sizeof *two);
    memcpy(nost, x, n * sizeof *nost);
    int saved = m->cfg.dirs;
    m->cfg.dirs = MD_MAMBA_FWD;
    CHECK_EQ_INT(md_mamba_forward(m, NULL, one, L, NULL, 0), MD_OK);
    for (int i = 0, a = 0; i <= ncut; i++) {
        int b = i < ncut ? cuts[i] : L;
        CHECK_EQ_INT(md_mamba_forward(m, ws, two + (size_t)a * dm, b - a, st, b - a), MD_OK);
        CHECK_EQ_INT(md_mamba_forward(m, ws, nost + (size_t)a * dm, b - a, NULL, 0), MD_OK);
        a = b;
    }
    m->cfg.dirs = saved;
    double e = rel(two, one, n), e0 = rel(nost, one, n);
    if (!(e < 1e-5) || !(e0 > 1e-3))
        fprintf(stderr, "  %d cuts from %d of %d: carried %.3g, not carried %.3g\n", ncut, cuts[0], L, e, e0);
    CHECK(e < 1e-5);
    CHECK(e0 > 1e-3);
    if (ref_fwd)
        CHECK(check_ref("pieces vs reference", two, ref_fwd, n));
out:
    md_mamba_ws_free(ws);
    md_mamba_state_free(st);
    free(one), free(two), free(nost);
}

static void test_stream_halves(void)
{
    md_temporal *t = load_fix("enc.safetensors");
    md_temporal *tb = load_fix("block.safetensors");
    md_safetensors *r = open_fix("enc.ref.safetensors");
    md_safetensors *rb = open_fix("block.ref.safetensors");
    CHECK(t && tb && r && rb);
    if (!t || !tb || !r || !rb)
        goto out;
    float *x = get_f32(r, "x.L100", NULL), *ref = get_f32(r, "enc_fwd.L100", NULL);
    float *u = get_f32(rb, "u.L100", NULL);
    /* Two halves at several points, and pieces shorter than the conv window (d_conv - 1 = 2 and
     * 3) so that carried conv inputs are carried again. */
    static const int c1[] = {1}, c38[] = {38}, c75[] = {75}, c50[] = {50}, c99[] = {99};
    static const int c3[] = {40, 41, 42}, c4[] = {1, 2, 60, 62};
    if (x && ref) {
        pieces(md_temporal_model(t), x, 100, c1, 1, ref);
        pieces(md_temporal_model(t), x, 100, c38, 1, ref);
        pieces(md_temporal_model(t), x, 100, c75, 1, ref);
        pieces(md_temporal_model(t), x, 100, c3, 3, ref);
    }
    if (u) {
        pieces(md_temporal_model(tb), u, 100, c50, 1, NULL);
        pieces(md_temporal_model(tb), u, 100, c99, 1, NULL);
        pieces(md_temporal_model(tb), u, 100, c4, 4, NULL);
        pieces(md_temporal_model(tb), u, 100, c3, 3, NULL);
    }
    free(x), free(ref), free(u);
out:
    md_safetensors_free(rb);
    md_safetensors_free(r);
    md_temporal_free(tb);
    md_temporal_free(t);
}

/* ---- streams of frames against the reference's encode_windows + reduce_segments ----------- */

static int meta_i(const md_safetensors *st, const char *stream, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "%s.%s", stream, key);
    const char *v = md_safetensors_meta(st, k);
    return v ? atoi(v) : -1;
}

static void params_of(const md_safetensors *r, const char *s, md_temporal_params *p)
{
    md_temporal_params_default(p, meta_i(r, s, "tpf"));
    p->window_frames = meta_i(r, s, "T");
    p->overlap_frames = meta_i(r, s, "overlap");
    p->segment_frames = meta_i(r, s, "k");
    p->sample_stride = meta_i(r, s, "s");
    char k[64];
    snprintf(k, sizeof k, "%s.patch_weight", s);
    p->patch_weight = (float)atof(md_safetensors_meta(r, k));
    p->frame_interval_ms = meta_i(r, s, "interval_ms");
}

/* Runs N frames through a new stream in pushes of the sizes in BATCHES (cycled). */
static md_status run_stream(md_temporal *t, const md_temporal_params *p, const float *x, const int64_t *pts, int n,
                            const int *batches, int nb, md_segments *out)
{
    char err[256];
    md_temporal_stream *s = NULL;
    md_status rc = md_temporal_stream_new(t, p, &s, err, sizeof err);
    if (rc != MD_OK)
        return rc;
    size_t frame = (size_t)p->tokens_per_frame * md_temporal_model(t)->cfg.d_model;
    for (int f = 0, b = 0; f < n && rc == MD_OK; b++) {
        int c = batches[b % nb] < n - f ? batches[b % nb] : n - f;
        rc = md_temporal_stream_push(s, f, x + f * frame, pts + f, c, out);
        f += c;
    }
    if (rc == MD_OK)
        rc = md_temporal_stream_finish(s, out);
    md_temporal_stream_free(s);
    return rc;
}

static void test_stream_windows(void)
{
    md_temporal *t = load_fix("enc.safetensors");
    md_safetensors *r = open_fix("enc.ref.safetensors");
    CHECK(t && r);
    if (!t || !r)
        goto out;
    md_mamba *m = md_temporal_model(t);
    const int D = m->cfg.d_model;
    static const char *const names[] = {"streamA", "streamB"};
    for (int si = 0; si < 2; si++) {
        const char *sn = names[si];
        md_temporal_params p;
        params_of(r, sn, &p);
        int n = meta_i(r, sn, "n_frames"), tpf = p.tokens_per_frame;
        char k[64];
        snprintf(k, sizeof k, "%s.x", sn);
        float *x = get_f32(r, k, NULL);
        snprintf(k, sizeof k, "%s.out", sn);
        float *ref_out = get_f32(r, k, NULL);
        snprintf(k, sizeof k, "%s.seg_emb", sn);
        size_t nse;
        float *ref_emb = get_f32(r, k, &nse);
        snprintf(k, sizeof k, "%s.pts", sn);
        const md_st_tensor *tp = md_safetensors_find(r, k);
        snprintf(k, sizeof k, "%s.seg", sn);
        const md_st_tensor *ts = md_safetensors_find(r, k);
        if (!x || !ref_out || !ref_emb || !tp || !ts) {
            CHECK(!"fixture");
            free(x), free(ref_out), free(ref_emb);
            continue;
        }
        int64_t *pts = malloc((size_t)n * sizeof *pts), *seg = malloc(ts->nbytes);
        memcpy(pts, tp->data, (size_t)n * sizeof *pts);
        memcpy(seg, ts->data, ts->nbytes);
        int nseg = (int)ts->shape[0];

        /* Token level: the windows by hand with md_mamba_forward and a carried state. */
        float *enc = malloc((size_t)n * tpf * D * sizeof *enc), *w = malloc((size_t)p.window_frames * tpf * D * 4);
        md_mamba_state *st = NULL;
        CHECK_EQ_INT(md_mamba_state_new(m, &st), MD_OK);
        for (int f0 = 0; f0 < n && st;) {
            int nf = n - f0 < p.window_frames ? n - f0 : p.window_frames;
            int final = f0 + nf >= n, commit = final ? nf : p.window_frames - p.overlap_frames;
            memcpy(w, x + (size_t)f0 * tpf * D, (size_t)nf * tpf * D * sizeof *w);
            CHECK_EQ_INT(md_mamba_forward(m, NULL, w, nf * tpf, st, commit * tpf), MD_OK);
            memcpy(enc + (size_t)f0 * tpf * D, w, (size_t)commit * tpf * D * sizeof *w);
            f0 += commit;
        }
        snprintf(k, sizeof k, "%s.out", sn);
        CHECK(check_ref(k, enc, ref_out, (size_t)n * tpf * D));

        /* Segment level through the stream API, in awkward push sizes. */
        static const int batches[][3] = {{1, 3, 5}, {100, 100, 100}, {7, 2, 9}};
        for (int bi = 0; bi < 3; bi++) {
            md_segments segs = {0};
            CHECK_EQ_INT(run_stream(t, &p, x, pts, n, batches[bi], 3, &segs), MD_OK);
            CHECK_EQ_INT(segs.n, nseg);
            CHECK_EQ_INT(segs.dim, D);
            if (segs.n == nseg) {
                for (int i = 0; i < nseg; i++) {
                    CHECK_EQ_INT(segs.seg[i].index, i);
                    CHECK_EQ_INT(segs.seg[i].start_ms, seg[i * 4 + 0]);
                    CHECK_EQ_INT(segs.seg[i].end_ms, seg[i * 4 + 1]);
                    CHECK_EQ_INT(segs.seg[i].first_frame, seg[i * 4 + 2]);
                    CHECK_EQ_INT(segs.seg[i].n_frames, seg[i * 4 + 3]);
                    char what[64];
                    snprintf(what, sizeof what, "%s segment %d", sn, i);
                    CHECK(check_ref(what, segs.emb + (size_t)i * D, ref_emb + (size_t)i * D, D));
                }
            }
            md_segments_free(&segs);
        }
        md_mamba_state_free(st);
        free(enc), free(w), free(pts), free(seg), free(x), free(ref_out), free(ref_emb);
    }
out:
    md_safetensors_free(r);
    md_temporal_free(t);
}

/* ---- checkpoint / restore == uninterrupted ------------------------------------------------- */

static void test_checkpoint(void)
{
    md_temporal *t = load_fix("enc.safetensors"), *other = load_fix("block.safetensors");
    md_safetensors *r = open_fix("enc.ref.safetensors");
    float *x = NULL;
    int64_t *pts = NULL;
    CHECK(t && other && r);
    if (!t || !other || !r)
        goto out;
    md_temporal_params p;
    params_of(r, "streamA", &p);
    int n = meta_i(r, "streamA", "n_frames");
    x = get_f32(r, "streamA.x", NULL);
    const md_st_tensor *tp = md_safetensors_find(r, "streamA.pts");
    if (!x || !tp)
        goto out;
    pts = malloc((size_t)n * sizeof *pts);
    memcpy(pts, tp->data, (size_t)n * sizeof *pts);
    const size_t frame = (size_t)p.tokens_per_frame * md_temporal_model(t)->cfg.d_model;
    const int D = md_temporal_model(t)->cfg.d_model;

    md_segments all = {0}, got = {0};
    static const int one[] = {1};
    CHECK_EQ_INT(run_stream(t, &p, x, pts, n, one, 1, &all), MD_OK);

    /* A job: pushes 5 frames at a time, commits (segments + checkpoint) after each push; dies after
     * frame 17 with frames pushed but not committed; a new process restores the last checkpoint
     * and pushes again from next_frame. */
    char err[256] = "";
    md_temporal_stream *s = NULL, *s2 = NULL;
    void *blob = NULL;
    size_t len = 0;
    CHECK_EQ_INT(md_temporal_stream_new(t, &p, &s, err, sizeof err), MD_OK);
    int f = 0;
    while (f < 17) {
        CHECK_EQ_INT(md_temporal_stream_push(s, f, x + f * frame, pts + f, 5, &got), MD_OK);
        f += 5;
        free(blob);
        CHECK_EQ_INT(md_temporal_stream_save(s, &blob, &len), MD_OK);
    }
    int committed_segs = got.n;
    int64_t resume = md_temporal_stream_next_frame(s);
    CHECK(resume > 0 && resume < f); /* some frames were pushed but not committed */
    CHECK_EQ_INT(md_temporal_stream_segments(s), committed_segs);
    md_temporal_stream_free(s);

    CHECK_EQ_INT(md_temporal_stream_new(t, &p, &s2, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_temporal_stream_restore(s2, blob, len, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_temporal_stream_next_frame(s2), resume);
    CHECK_EQ_INT(md_temporal_stream_segments(s2), committed_segs);
    /* Pushing from anywhere but next_frame is refused: no gap, no duplicate. */
    CHECK_EQ_INT(md_temporal_stream_push(s2, resume + 1, x + (resume + 1) * frame, pts + resume + 1, 1, &got),
                 MD_ERR_INVALID);
    CHECK(strstr(md_temporal_stream_error(s2), "expected frame") != NULL);
    CHECK_EQ_INT(md_temporal_stream_push(s2, resume - 1, x + (resume - 1) * frame, pts + resume - 1, 1, &got),
                 MD_ERR_INVALID);
    CHECK_EQ_INT(md_temporal_stream_push(s2, resume, x + resume * frame, pts + resume, (int)(n - resume), &got),
                 MD_OK);
    CHECK_EQ_INT(md_temporal_stream_finish(s2, &got), MD_OK);
    CHECK_EQ_INT(got.n, all.n);
    if (got.n == all.n) {
        CHECK(memcmp(got.seg, all.seg, (size_t)all.n * sizeof *all.seg) == 0);
        CHECK(rel(got.emb, all.emb, (size_t)all.n * D) == 0.0);
    }
    /* A repeated timestamp is refused. */
    int64_t bad_pts = pts[n - 1];
    CHECK_EQ_INT(md_temporal_stream_push(s2, n, x, &bad_pts, 1, &got), MD_ERR_INVALID);

    /* Damaged or foreign checkpoints. */
    unsigned char *b = blob;
    b[len / 2] ^= 1;
    CHECK_EQ_INT(md_temporal_stream_restore(s2, blob, len, err, sizeof err), MD_ERR_INVALID);
    CHECK(strstr(err, "checksum") != NULL);
    CHECK(strstr(md_temporal_stream_error(s2), "checksum") != NULL);
    CHECK_EQ_INT(md_temporal_stream_next_frame(s2), n); /* a failed restore changes nothing */
    CHECK_EQ_INT(md_temporal_stream_segments(s2), all.n);
    b[len / 2] ^= 1;
    CHECK_EQ_INT(md_temporal_stream_restore(s2, blob, len - 7, err, sizeof err), MD_ERR_INVALID);
    CHECK_EQ_INT(md_temporal_stream_restore(s2, blob, 10, err, sizeof err), MD_ERR_INVALID);
    md_temporal_stream_free(s2);
    s2 = NULL;
    md_temporal_params p2 = p;
    p2.patch_weight = 0.25f;
    CHECK_EQ_INT(md_temporal_stream_new(t, &p2, &s2, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_temporal_stream_restore(s2, blob, len, err, sizeof err), MD_ERR_CONFLICT);
    CHECK(strstr(err, "parameters") != NULL);
    md_temporal_stream_free(s2);
    s2 = NULL;
    md_temporal_params p3 = p;
    p3.tokens_per_frame = 1;
    CHECK_EQ_INT(md_temporal_stream_new(other, &p3, &s2, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_temporal_stream_restore(s2, blob, len, err, sizeof err), MD_ERR_CONFLICT);
    CHECK(strstr(err, "other weights") != NULL);
    md_temporal_stream_free(s2);
    free(blob);
    md_segments_free(&all);
    md_segments_free(&got);
out:
    free(x), free(pts);
    md_safetensors_free(r);
    md_temporal_free(other);
    md_temporal_free(t);
}

/* ---- the identity encoder (init-temporal) --------------------------------------------------- */

static void test_identity(void)
{
    char path[PATH_MAX + 32], err[512] = "";
    snprintf(path, sizeof path, "%s/temporal.safetensors", g_tmp);
    md_mamba_config c;
    md_mamba_config_default(&c, 32);
    c.n_layers = 2;
    c.final_norm = 1; /* ignored: a fresh encoder has no final norm */
    CHECK_EQ_INT(md_temporal_init_write(path, &c, 42, err, sizeof err), MD_OK);
    md_temporal *t = NULL;
    CHECK_EQ_INT(md_temporal_load(path, &t, err, sizeof err), MD_OK);
    if (!t) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    const md_temporal_info *info = md_temporal_get_info(t);
    CHECK(info->identity && !info->trained);
    CHECK_EQ_INT(strlen(info->sha256), 64);
    md_mamba *m = md_temporal_model(t);
    CHECK(!m->cfg.final_norm && m->cfg.dirs == MD_MAMBA_BOTH && m->cfg.dt_rank == 2);
    /* Mamba's initialisation: A_log = log(1..N), D = 1, dt = softplus(bias) in [1e-3, 1e-1]. */
    const md_mamba_dir *d = &m->layers[1].dir[1];
    CHECK(fabsf(d->A_log[5 * 16 + 3] - logf(4.0f)) < 1e-6f && d->D[7] == 1.0f);
    for (int i = 0; i < 64; i++) {
        double dt = log1p(exp((double)d->dt_proj_b[i]));
        CHECK(dt > 0.99e-3 && dt < 0.101);
    }
    CHECK(m->layers[0].in_proj_w[0] != 0.0f && m->layers[0].out_proj_w[0] == 0.0f);

    enum { NF = 23, TPF = 5, DM = 32 };
    float *x = malloc(sizeof(float) * NF * TPF * DM), *cls = malloc(sizeof(float) * NF * DM);
    int64_t pts[NF];
    for (int i = 0; i < NF * TPF * DM; i++)
        x[i] = frand() * 3;
    for (int f = 0; f < NF; f++) {
        pts[f] = 1000 + 500 * f + (f % 3);
        /* The frame's CLIP embedding: l2n of its projected CLS token. */
        double ss = 0;
        for (int i = 0; i < DM; i++)
            ss += (double)x[f * TPF * DM + i] * x[f * TPF * DM + i];
        for (int i = 0; i < DM; i++)
            cls[f * DM + i] = (float)(x[f * TPF * DM + i] / sqrt(ss));
    }
    static const int batches[] = {4, 1, 9};
    for (int variant = 0; variant < 3; variant++) {
        md_temporal_params p;
        md_temporal_params_default(&p, TPF);
        p.window_frames = 8;
        p.segment_frames = 4;
        p.frame_interval_ms = 500;
        m->force_compute = variant >= 1; /* run the zero-out_proj layers for real too */
        if (variant == 2) {
            p.overlap_frames = 4;
            p.frame_interval_ms = 0; /* the last segment ends one frame spacing after its last frame */
        }
        const int64_t last_end = pts[NF - 1] + (variant == 2 ? pts[NF - 1] - pts[NF - 2] : 500);
        md_segments segs = {0};
        CHECK_EQ_INT(run_stream(t, &p, x, pts, NF, batches, 3, &segs), MD_OK);
        CHECK_EQ_INT(segs.n, (NF + 3) / 4);
        double worst = 0;
        for (int i = 0; i < segs.n; i++) {
            const md_segment *s = &segs.seg[i];
            CHECK_EQ_INT(s->first_frame, 4 * i);
            CHECK_EQ_INT(s->n_frames, i < segs.n - 1 ? 4 : NF - 4 * i);
            CHECK_EQ_INT(s->start_ms, pts[4 * i]);
            CHECK_EQ_INT(s->end_ms, i < segs.n - 1 ? segs.seg[i + 1].start_ms : last_end);
            double mean[DM] = {0}, ss = 0;
            for (int f = s->first_frame; f < s->first_frame + s->n_frames; f++)
                for (int j = 0; j < DM; j++)
                    mean[j] += cls[f * DM + j] / s->n_frames;
            for (int j = 0; j < DM; j++)
                ss += mean[j] * mean[j];
            for (int j = 0; j < DM; j++) {
                double e = fabs(segs.emb[i * DM + j] - mean[j] / sqrt(ss));
                worst = e > worst ? e : worst;
            }
        }
        if (!(worst < 1e-6))
            fprintf(stderr, "  identity variant %d: max abs error %.3g\n", variant, worst);
        CHECK(worst < 1e-6);
        CHECK_EQ_INT(segs.seg[0].start_ms, pts[0]);
        md_segments_free(&segs);
    }
    m->force_compute = 0;
    free(x), free(cls);
    md_temporal_free(t);
}

/* ---- temporal.safetensors: round trip and validation ----------------------------------------- */

static void test_write_round_trip(void)
{
    char path[PATH_MAX + 32], err[512] = "";
    snprintf(path, sizeof path, "%s/rt.safetensors", g_tmp);
    md_temporal *a = load_fix("enc.safetensors"), *b = NULL;
    CHECK(a != NULL);
    if (!a)
        return;
    md_mamba *ma = md_temporal_model(a);
    CHECK_EQ_INT(md_temporal_write(path, ma, 1, "round trip", err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_temporal_load(path, &b, err, sizeof err), MD_OK);
    if (b) {
        md_mamba *mb = md_temporal_model(b);
        CHECK(memcmp(&ma->cfg, &mb->cfg, sizeof ma->cfg) == 0);
        CHECK_EQ_INT(ma->mem_floats, mb->mem_floats);
        CHECK(memcmp(ma->mem, mb->mem, ma->mem_floats * sizeof(float)) == 0);
        CHECK(md_temporal_get_info(b)->trained);
        CHECK_STR(md_temporal_get_info(b)->description, "round trip");
        CHECK(strcmp(md_temporal_get_info(a)->sha256, md_temporal_get_info(b)->sha256) != 0);
    }
    md_temporal_free(b);
    md_temporal_free(a);
}

/* Rewrites block.safetensors to PATH with changes: DROP removed; RESHAPE gets its first dimension
 * plus one (its data from a zero buffer); EXTRA added ([16] F32); NAN_IN gets a NaN; DT_I32 stored
 * as I32; META: key/value pairs replacing or adding metadata (value NULL removes). */
static void rewrite(const char *path, const char *drop, const char *reshape, const char *extra, const char *nan_in,
                    const char *dt_i32, const char *const *meta, int nmeta)
{
    char err[256];
    md_safetensors *st = open_fix("block.safetensors");
    if (!st)
        return;
    int n = md_safetensors_count(st);
    md_st_write *w = calloc((size_t)n + 1, sizeof *w);
    float **bufs = calloc((size_t)n + 1, sizeof *bufs);
    static float zeros[4096];
    int k = 0;
    for (int i = 0; i < n; i++) {
        const md_st_tensor *t = md_safetensors_at(st, i);
        if (drop && !strcmp(t->name, drop))
            continue;
        bufs[k] = malloc((t->numel + 64) * sizeof(float));
        md_st_to_f32(t, bufs[k]);
        w[k].name = t->name;
        w[k].dtype = MD_DT_F32;
        w[k].ndim = t->ndim;
        memcpy(w[k].shape, t->shape, sizeof t->shape);
        w[k].data = bufs[k];
        if (reshape && !strcmp(t->name, reshape)) {
            w[k].shape[0]++;
            w[k].data = zeros;
        }
        if (nan_in && !strcmp(t->name, nan_in))
            bufs[k][t->numel / 2] = NAN;
        if (dt_i32 && !strcmp(t->name, dt_i32))
            w[k].dtype = MD_DT_I32;
        k++;
    }
    if (extra) {
        w[k].name = extra;
        w[k].dtype = MD_DT_F32;
        w[k].ndim = 1;
        w[k].shape[0] = 16;
        w[k].data = zeros;
        k++;
    }
    static const char *const keys[] = {"format", "version", "trained", "description", "d_model", "n_layers",
                                       "d_state", "d_conv", "expand", "dt_rank", "bidirectional"};
    const char *kv[2 * 16];
    int nkv = 0;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *v = md_safetensors_meta(st, keys[i]);
        for (int j = 0; j < nmeta; j++)
            if (!strcmp(meta[2 * j], keys[i]))
                v = meta[2 * j + 1];
        if (v) {
            kv[2 * nkv] = keys[i];
            kv[2 * nkv + 1] = v;
            nkv++;
        }
    }
    if (md_safetensors_write(path, w, k, kv, nkv, err, sizeof err) != MD_OK)
        fprintf(stderr, "  rewrite: %s\n", err);
    for (int i = 0; i < k; i++)
        free(bufs[i]);
    free(bufs);
    free(w);
    md_safetensors_free(st);
}

static int expect_load_error(const char *path, md_status want, const char *needle)
{
    char err[512] = "";
    md_temporal *t = NULL;
    md_status rc = md_temporal_load(path, &t, err, sizeof err);
    md_temporal_free(t);
    int ok = rc == want && t == NULL && strstr(err, needle) != NULL;
    if (!ok)
        fprintf(stderr, "  %s -> %s: %s (wanted '%s')\n", path, md_status_str(rc), err, needle);
    return ok;
}

static void test_weights_errors(void)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/bad.safetensors", g_tmp);

    rewrite(p, NULL, NULL, NULL, NULL, NULL, NULL, 0); /* unchanged: loads */
    char err[512] = "";
    md_temporal *t = NULL;
    CHECK_EQ_INT(md_temporal_load(p, &t, err, sizeof err), MD_OK);
    md_temporal_free(t);

    rewrite(p, "layers.0.mixer.A_b_log", NULL, NULL, NULL, NULL, NULL, 0);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "tensor layers.0.mixer.A_b_log missing"));
    rewrite(p, "layers.0.mixer.conv1d_b.weight", NULL, NULL, NULL, NULL, NULL, 0);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "bidirectional = 1"));
    rewrite(p, NULL, "layers.0.mixer.x_proj.weight", NULL, NULL, NULL, NULL, 0);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "x_proj.weight has shape [34, 32]"));
    rewrite(p, NULL, NULL, "layers.1.norm.weight", NULL, NULL, NULL, 0);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "unexpected tensor layers.1.norm.weight"));
    rewrite(p, NULL, NULL, NULL, "layers.0.mixer.dt_proj.bias", NULL, NULL, 0);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "tensor layers.0.mixer.dt_proj.bias has 1 non-finite value (NaN/Inf"));
    rewrite(p, NULL, NULL, NULL, NULL, "layers.0.mixer.D", NULL, 0);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "layers.0.mixer.D has dtype I32"));
    static const char *const no_dmodel[] = {"d_model", NULL};
    rewrite(p, NULL, NULL, NULL, NULL, NULL, no_dmodel, 1);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "metadata \"d_model\" missing"));
    static const char *const bad_expand[] = {"expand", "two"};
    rewrite(p, NULL, NULL, NULL, NULL, NULL, bad_expand, 1);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "\"expand\" = \"two\" is not an integer"));
    static const char *const bad_state[] = {"d_state", "8"};
    rewrite(p, NULL, NULL, NULL, NULL, NULL, bad_state, 1);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "x_proj.weight has shape [33, 32], the metadata's config needs [17, 32]"));
    static const char *const two_layers[] = {"n_layers", "2"};
    rewrite(p, NULL, NULL, NULL, NULL, NULL, two_layers, 1);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "tensor layers.1.norm.weight missing"));
    static const char *const huge[] = {"d_model", "8192", "n_layers", "64"};
    rewrite(p, NULL, NULL, NULL, NULL, NULL, huge, 2);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "truncated?"));
    static const char *const too_big[] = {"d_model", "100000"};
    rewrite(p, NULL, NULL, NULL, NULL, NULL, too_big, 1);
    CHECK(expect_load_error(p, MD_ERR_INVALID, "not an integer in [1, 8192]"));

    /* A truncated file (every length from the header into the data). */
    char src[512];
    snprintf(src, sizeof src, FIX "/block.safetensors");
    FILE *f = fopen(src, "rb");
    static unsigned char bytes[1 << 16];
    size_t n = f ? fread(bytes, 1, sizeof bytes, f) : 0;
    if (f)
        fclose(f);
    CHECK(n > 1000 && n < sizeof bytes);
    static const size_t cuts[] = {0, 5, 8, 100, 2000, 0};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        size_t cut = i == sizeof cuts / sizeof *cuts - 1 ? n - 1 : cuts[i];
        FILE *o = fopen(p, "wb");
        if (!o)
            continue;
        fwrite(bytes, 1, cut, o);
        fclose(o);
        CHECK(expect_load_error(p, MD_ERR_INVALID, "bad.safetensors"));
    }
    snprintf(p, sizeof p, "%s/nonexistent.safetensors", g_tmp);
    CHECK(expect_load_error(p, MD_ERR_NOT_FOUND, "nonexistent"));
}

/* Every NaN and Inf of a tensor is counted in the refusal (one pass over each converted tensor),
 * so a message says how damaged the file is, not only where the first bad value sits. */
static void test_nonfinite_weights(void)
{
    char src[PATH_MAX + 32], p[PATH_MAX + 32], err[512] = "";
    snprintf(src, sizeof src, "%s/nf-src.safetensors", g_tmp);
    snprintf(p, sizeof p, "%s/nf.safetensors", g_tmp);
    md_mamba_config c;
    md_mamba_config_default(&c, 16);
    c.n_layers = 2;
    CHECK_EQ_INT(md_temporal_init_write(src, &c, 3, err, sizeof err), MD_OK);
    md_temporal *t = NULL;
    CHECK_EQ_INT(md_temporal_load(src, &t, err, sizeof err), MD_OK);
    if (!t)
        return;
    md_mamba *m = md_temporal_model(t);
    float *w = m->layers[1].dir[1].conv_w;
    w[2] = NAN;
    w[9] = INFINITY;
    w[10] = -INFINITY;
    CHECK_EQ_INT(md_temporal_write(p, m, 0, NULL, err, sizeof err), MD_OK);
    CHECK(expect_load_error(p, MD_ERR_INVALID,
                            "nf.safetensors: tensor layers.1.mixer.conv1d_b.weight has 3 non-finite values (NaN/Inf; "
                            "the first at element 2)"));
    w[2] = w[9] = w[10] = 0.5f;
    CHECK_EQ_INT(md_temporal_write(p, m, 0, NULL, err, sizeof err), MD_OK);
    md_temporal *u = NULL;
    CHECK_EQ_INT(md_temporal_load(p, &u, err, sizeof err), MD_OK); /* finite again: loads */
    md_temporal_free(u);
    md_temporal_free(t);
}

static void test_params(void)
{
    char err[256] = "";
    md_temporal_params p;
    md_temporal_params_default(&p, 50);
    CHECK_EQ_INT(p.window_frames, 32);
    CHECK_EQ_INT(p.segment_frames, 4);
    CHECK_EQ_INT(p.sample_stride, 1);
    CHECK_EQ_INT(p.overlap_frames, 0);
    CHECK_EQ_INT(md_temporal_params_check(&p, err, sizeof err), MD_OK);
    p.overlap_frames = 2;
    CHECK_EQ_INT(md_temporal_params_check(&p, err, sizeof err), MD_ERR_INVALID); /* 30 % 4 */
    CHECK(strstr(err, "divide") != NULL);
    p.overlap_frames = 4;
    CHECK_EQ_INT(md_temporal_params_check(&p, err, sizeof err), MD_OK);
    p.sample_stride = 5;
    CHECK_EQ_INT(md_temporal_params_check(&p, err, sizeof err), MD_ERR_INVALID);
    p.sample_stride = 1;
    p.overlap_frames = 32;
    CHECK_EQ_INT(md_temporal_params_check(&p, err, sizeof err), MD_ERR_INVALID);
    md_mamba_config c;
    md_mamba_config_default(&c, 512);
    CHECK_EQ_INT(c.dt_rank, 32);
    CHECK_EQ_INT(c.d_state, 16);
    CHECK_EQ_INT(md_mamba_config_check(&c, err, sizeof err), MD_OK);
    c.d_state = 0;
    CHECK_EQ_INT(md_mamba_config_check(&c, err, sizeof err), MD_ERR_INVALID);
    CHECK(strstr(err, "d_state") != NULL);
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    snprintf(g_tmp, sizeof g_tmp, "%s/momentd-mamba-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_params);
    RUN(test_selective_scan);
    RUN(test_block_mixer);
    RUN(test_encoder);
    RUN(test_stream_halves);
    RUN(test_stream_windows);
    RUN(test_checkpoint);
    RUN(test_identity);
    RUN(test_write_round_trip);
    RUN(test_weights_errors);
    RUN(test_nonfinite_weights);
    fprintf(stderr, "largest rel error against the reference: %.3g (tolerance %g)\n", g_worst_ref, TOL);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_tmp);
    return md_test_summary("test_mamba");
}
