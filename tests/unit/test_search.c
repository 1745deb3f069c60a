/* test_search.c - retrieval and grounding on planted embedding sequences (no
 * model): a query planted into a run of segments comes back as exactly that
 * moment; separate runs stay separate; noise gives "no confident match";
 * filters, pagination, deletion and concurrent use. The int8 first pass gives
 * the same moments and bit-identical scores as the exact scan; returned scores
 * are the exact cosines with the stored halves; both kernels agree. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/safetensors.h"
#include "../../engine/search.h"
#include "harness.h"

#define DIM 64
#define SEG_MS 2000

static uint64_t g_rng = 0x12345678abcdefull;
static float frand(void) /* uniform in (-1, 1) */
{
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}
static void normalise(float *v)
{
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += v[i] * v[i];
    for (int i = 0; i < DIM; i++)
        v[i] /= (float)sqrt(s);
}
static void random_unit(float *v)
{
    for (int i = 0; i < DIM; i++)
        v[i] = frand();
    normalise(v);
}
/* Close to Q: cosine about 0.95. */
static void planted(float *v, const float *q)
{
    float n[DIM];
    random_unit(n);
    for (int i = 0; i < DIM; i++)
        v[i] = q[i] + 0.3f * n[i];
    normalise(v);
}

/* VIDEOS videos of SEGS segments of noise; plants[v] lists [first,last] runs of Q in video v. */
typedef struct plant {
    long long video;
    int first, last;
} plant;

static md_index *build(int videos, int segs, const float *q, const plant *plants, int n_plants)
{
    md_index *ix = NULL;
    CHECK_EQ_INT(md_index_new(DIM, &ix), MD_OK);
    float v[DIM];
    for (long long vid = 1; vid <= videos; vid++)
        for (int s = 0; s < segs; s++) {
            random_unit(v);
            for (int p = 0; p < n_plants; p++)
                if (plants[p].video == vid && s >= plants[p].first && s <= plants[p].last)
                    planted(v, q);
            CHECK_EQ_INT(md_index_add(ix, vid, s, (long long)s * SEG_MS, (long long)(s + 1) * SEG_MS, v), MD_OK);
        }
    return ix;
}

static void test_planted_run_is_the_moment(void)
{
    float q[DIM];
    random_unit(q);
    plant pl[] = {{7, 10, 14}};
    md_index *ix = build(40, 30, q, pl, 1);
    CHECK_EQ_INT(md_index_count(ix), 1200);
    md_search_params p = md_search_default_params();
    md_search_result r;
    CHECK_EQ_INT(md_index_search(ix, q, &p, &r), MD_OK);
    CHECK(r.n >= 1);
    CHECK_EQ_INT(r.moments[0].video_id, 7);
    CHECK_EQ_INT(r.moments[0].first_seq, 10);
    CHECK_EQ_INT(r.moments[0].last_seq, 14);
    CHECK_EQ_INT(r.moments[0].start_ms, 10 * SEG_MS);
    CHECK_EQ_INT(r.moments[0].end_ms, 15 * SEG_MS);
    CHECK(r.moments[0].score > 0.8f);
    CHECK(r.confident);
    CHECK_EQ_INT(r.scored, 1200);
    CHECK_EQ_INT(r.moments[0].n_segs, 5);
    for (int j = 0; r.n && j < r.moments[0].n_segs; j++) {
        md_segment_hit *h = &r.segs[r.moments[0].seg0 + j];
        CHECK_EQ_INT(h->seq, 10 + j);
        CHECK_EQ_INT(h->start_ms, (10 + j) * SEG_MS);
        CHECK(h->score > 0.8f);
    }
    float e[DIM];
    long long a, b;
    CHECK_EQ_INT(md_index_lookup(ix, 7, 12 * SEG_MS + 500, e, &a, &b), MD_OK);
    CHECK_EQ_INT(a, 12 * SEG_MS);
    CHECK_EQ_INT(b, 13 * SEG_MS);
    double dq = 0;
    for (int i = 0; i < DIM; i++)
        dq += e[i] * q[i];
    CHECK(dq > 0.8);
    CHECK_EQ_INT(md_index_lookup(ix, 7, 31 * SEG_MS, e, &a, &b), MD_ERR_NOT_FOUND);
    CHECK_EQ_INT(md_index_lookup(ix, 77, 0, e, &a, &b), MD_ERR_NOT_FOUND);
    /* Only one planted moment: the second result is noise and far below. */
    CHECK(r.n < 2 || r.moments[1].score < r.moments[0].score - 0.3f);
    CHECK(r.n < 2 || r.moments[1].z < r.z_needed + 1.5f);
    md_search_result_free(&r);

    /* Grounding in that video finds the same span; boundary precision is the segment length. */
    md_ground_params gp = md_ground_default_params();
    gp.with_curve = 1;
    md_ground_result g;
    CHECK_EQ_INT(md_index_ground(ix, 7, q, &gp, &g), MD_OK);
    CHECK(g.n >= 1);
    CHECK_EQ_INT(g.moments[0].start_ms, 10 * SEG_MS);
    CHECK_EQ_INT(g.moments[0].end_ms, 15 * SEG_MS);
    CHECK(g.confident);
    CHECK_EQ_INT(g.n_segments, 30);
    CHECK_EQ_INT(g.precision_ms, SEG_MS);
    CHECK(g.raw && g.smooth && g.start_ms && g.end_ms);
    if (g.raw) {
        CHECK(g.raw[12] > 0.8f && g.raw[0] < 0.6f);
        CHECK_EQ_INT(g.start_ms[29], 29 * SEG_MS);
    }
    md_ground_result_free(&g);
    md_index_free(ix);
}

static void test_two_runs_stay_two(void)
{
    float q[DIM];
    random_unit(q);
    /* Same video, separated by one noise segment, and another run elsewhere. */
    plant pl[] = {{3, 5, 7}, {3, 9, 11}, {12, 20, 22}};
    md_index *ix = build(20, 30, q, pl, 3);
    md_search_params p = md_search_default_params();
    md_search_result r;
    CHECK_EQ_INT(md_index_search(ix, q, &p, &r), MD_OK);
    CHECK(r.n >= 3);
    int found[3] = {0, 0, 0};
    for (int i = 0; i < 3 && i < r.n; i++) {
        md_moment *m = &r.moments[i];
        for (int k = 0; k < 3; k++)
            if (m->video_id == pl[k].video && m->first_seq == pl[k].first && m->last_seq == pl[k].last)
                found[k]++;
    }
    CHECK_EQ_INT(found[0], 1);
    CHECK_EQ_INT(found[1], 1);
    CHECK_EQ_INT(found[2], 1);
    md_search_result_free(&r);

    md_ground_params gp = md_ground_default_params();
    md_ground_result g;
    CHECK_EQ_INT(md_index_ground(ix, 3, q, &gp, &g), MD_OK);
    /* Smoothing may blur the one-segment gap, but the best moment must lie on the plants. */
    CHECK(g.n >= 1 && g.moments[0].start_ms >= 5 * SEG_MS && g.moments[0].end_ms <= 12 * SEG_MS);
    md_ground_result_free(&g);
    md_index_free(ix);
}

static void test_noise_is_not_confident(void)
{
    float q[DIM];
    random_unit(q);
    md_index *ix = build(20, 30, q, NULL, 0);
    md_search_params p = md_search_default_params();
    md_search_result r;
    CHECK_EQ_INT(md_index_search(ix, q, &p, &r), MD_OK);
    CHECK(r.n > 0); /* moments are still listed ... */
    CHECK(!r.confident); /* ... but flagged */
    CHECK(r.z_needed > 3.0f);
    md_search_result_free(&r);
    md_ground_params gp = md_ground_default_params();
    md_ground_result g;
    CHECK_EQ_INT(md_index_ground(ix, 4, q, &gp, &g), MD_OK);
    CHECK(!g.confident);
    md_ground_result_free(&g);
    CHECK_EQ_INT(md_index_ground(ix, 999, q, &gp, &g), MD_ERR_NOT_FOUND);
    md_index_free(ix);
}

static void test_filters_pagination_delete(void)
{
    float q[DIM];
    random_unit(q);
    plant pl[] = {{2, 3, 4}, {5, 10, 12}, {9, 0, 1}};
    md_index *ix = build(10, 20, q, pl, 3);
    md_search_params p = md_search_default_params();
    md_search_result r;
    long long only[] = {5, 9};
    p.videos = only;
    p.n_videos = 2;
    CHECK_EQ_INT(md_index_search(ix, q, &p, &r), MD_OK);
    CHECK_EQ_INT(r.scored, 40);
    for (int i = 0; i < r.n; i++)
        CHECK(r.moments[i].video_id == 5 || r.moments[i].video_id == 9);
    CHECK(r.n >= 2 && r.moments[0].score > 0.8f && r.moments[1].score > 0.8f);
    md_search_result_free(&r);

    p = md_search_default_params();
    p.min_score = 0.8f;
    CHECK_EQ_INT(md_index_search(ix, q, &p, &r), MD_OK);
    CHECK_EQ_INT(r.n, 3);
    md_moment first = r.moments[0], second = r.moments[1];
    md_search_result_free(&r);
    p.k = 1;
    p.offset = 1;
    CHECK_EQ_INT(md_index_search(ix, q, &p, &r), MD_OK);
    CHECK_EQ_INT(r.n, 1);
    CHECK(r.n == 1 && r.moments[0].video_id == second.video_id && r.moments[0].first_seq == second.first_seq);
    CHECK_EQ_INT(r.total, 3);
    md_search_result_free(&r);

    /* Deleting a video removes it from results at once; others stay intact. */
    md_index_remove_video(ix, first.video_id);
    CHECK_EQ_INT(md_index_count(ix), 180);
    CHECK_EQ_INT(md_index_video_segments(ix, first.video_id), 0);
    p = md_search_default_params();
    p.min_score = 0.8f;
    CHECK_EQ_INT(md_index_search(ix, q, &p, &r), MD_OK);
    CHECK_EQ_INT(r.n, 2);
    for (int i = 0; i < r.n; i++)
        CHECK(r.moments[i].video_id != first.video_id);
    md_search_result_free(&r);
    /* The moved rows still answer grounding for their videos with the right times. */
    for (long long v = 1; v <= 10; v++) {
        if (v == first.video_id)
            continue;
        CHECK_EQ_INT(md_index_video_segments(ix, v), 20);
        md_ground_params gp = md_ground_default_params();
        gp.with_curve = 1;
        md_ground_result g;
        CHECK_EQ_INT(md_index_ground(ix, v, q, &gp, &g), MD_OK);
        for (int s = 0; g.start_ms && s < 20; s++)
            CHECK_EQ_INT(g.start_ms[s], (long long)s * SEG_MS);
        md_ground_result_free(&g);
    }
    /* Replacing a segment keeps the count. */
    float v[DIM];
    random_unit(v);
    long long keep = first.video_id == 2 ? 5 : 2;
    CHECK_EQ_INT(md_index_add(ix, keep, 3, 3 * SEG_MS, 4 * SEG_MS, v), MD_OK);
    CHECK_EQ_INT(md_index_count(ix), 180);
    CHECK_EQ_INT(md_index_add(ix, 0, 0, 0, 1, v), MD_ERR_INVALID);
    CHECK_EQ_INT(md_index_add(ix, 1, 0, 5, 1, v), MD_ERR_INVALID);
    md_index_free(ix);
}

static void test_empty_index(void)
{
    md_index *ix;
    float q[DIM];
    random_unit(q);
    CHECK_EQ_INT(md_index_new(DIM, &ix), MD_OK);
    md_search_params p = md_search_default_params();
    md_search_result r;
    CHECK_EQ_INT(md_index_search(ix, q, &p, &r), MD_OK);
    CHECK_EQ_INT(r.n, 0);
    CHECK(!r.confident);
    md_search_result_free(&r);
    md_index_free(ix);
    CHECK_EQ_INT(md_index_new(0, &ix), MD_ERR_INVALID);
}

typedef struct thr_arg {
    md_index *ix;
    const float *q;
    int writer;
} thr_arg;

static void *worker(void *a)
{
    thr_arg *t = a;
    float v[DIM];
    for (int i = 0; i < 200; i++) {
        if (t->writer) {
            long long vid = 100 + i % 5;
            for (int s = 0; s < 10; s++) {
                for (int k = 0; k < DIM; k++)
                    v[k] = t->q[(k + s) % DIM];
                md_index_add(t->ix, vid, s, s * 1000, s * 1000 + 1000, v);
            }
            if (i % 3 == 0)
                md_index_remove_video(t->ix, vid);
        } else {
            md_search_params p = md_search_default_params();
            md_search_result r;
            if (md_index_search(t->ix, t->q, &p, &r) == MD_OK)
                md_search_result_free(&r);
        }
    }
    return NULL;
}

static void test_concurrent_use(void)
{
    float q[DIM];
    random_unit(q);
    md_index *ix = build(5, 10, q, NULL, 0);
    pthread_t th[4];
    thr_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_arg){ix, q, i == 0};
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    /* Original videos are untouched by the churn. */
    for (long long v = 1; v <= 5; v++)
        CHECK_EQ_INT(md_index_video_segments(ix, v), 10);
    md_index_free(ix);
}

/* ---- the int8 first pass ------------------------------------------------ */

static void unit_n(float *v, int dim)
{
    double s = 0;
    for (int i = 0; i < dim; i++) {
        v[i] = frand();
        s += v[i] * v[i];
    }
    for (int i = 0; i < dim; i++)
        v[i] /= (float)sqrt(s);
}

/* VIDEOS x SEGS segments of dimension DIM: noise, with Q mixed into runs of
 * video 3 (strong), 11 (medium) and 17 (two weak runs) and a slowly drifting
 * "topic" per video so that neighbours are correlated as in real footage. */
static md_index *build_big(int dim, int videos, int segs, const float *q)
{
    md_index *ix = NULL;
    CHECK_EQ_INT(md_index_new(dim, &ix), MD_OK);
    float *v = malloc((size_t)dim * sizeof *v), *topic = malloc((size_t)dim * sizeof *topic);
    for (long long vid = 1; vid <= videos; vid++) {
        unit_n(topic, dim);
        for (int s = 0; s < segs; s++) {
            unit_n(v, dim);
            float w = 0;
            if (vid == 3 && s >= 100 && s <= 104)
                w = 3.0f;
            if (vid == 11 && s >= 7 && s <= 9)
                w = 1.0f;
            if (vid == 17 && ((s >= 50 && s <= 52) || (s >= 60 && s <= 61)))
                w = 0.6f;
            double n2 = 0;
            for (int i = 0; i < dim; i++) {
                v[i] = v[i] + topic[i] + w * q[i];
                n2 += v[i] * v[i];
            }
            for (int i = 0; i < dim; i++)
                v[i] /= (float)sqrt(n2);
            CHECK_EQ_INT(md_index_add(ix, vid, s, (long long)s * SEG_MS, (long long)(s + 1) * SEG_MS, v), MD_OK);
        }
    }
    free(v);
    free(topic);
    return ix;
}

/* Exact cosine of Q with the stored (half) vector of VIDEO's segment SEQ, in double. */
static double stored_dot(md_index *ix, long long video, int seq, const float *q, int dim)
{
    float *e = malloc((size_t)dim * sizeof *e);
    double d = 0;
    if (md_index_lookup(ix, video, (long long)seq * SEG_MS, e, NULL, NULL) == MD_OK)
        for (int i = 0; i < dim; i++)
            d += (double)e[i] * q[i];
    else
        d = NAN;
    free(e);
    return d;
}

static void check_int8_matches_exact(int dim, int videos, int segs)
{
    float *q = malloc((size_t)dim * sizeof *q);
    unit_n(q, dim);
    md_index *ix = build_big(dim, videos, segs, q);
    md_index_set_threads(ix, 4); /* threads even on a one-CPU machine (the size allows two) */
    md_search_params pe = md_search_default_params(), pi = pe;
    pe.scan = MD_SCAN_EXACT;
    pe.k = pi.k = 20;
    md_search_result re, ri;
    CHECK_EQ_INT(md_index_search(ix, q, &pe, &re), MD_OK);
    CHECK_EQ_INT(md_index_search(ix, q, &pi, &ri), MD_OK);
    CHECK_EQ_INT(ri.n, re.n);
    CHECK_EQ_INT(ri.scored, (long long)videos * segs);
    CHECK(fabsf(ri.mean - re.mean) < 1e-3f && fabsf(ri.std - re.std) < 1e-3f * re.std + 1e-4f);
    for (int i = 0; i < ri.n && i < re.n; i++) {
        md_moment *a = &ri.moments[i], *b = &re.moments[i];
        CHECK_EQ_INT(a->video_id, b->video_id);
        CHECK_EQ_INT(a->first_seq, b->first_seq);
        CHECK_EQ_INT(a->last_seq, b->last_seq);
        CHECK_EQ_INT(a->peak_seq, b->peak_seq);
        CHECK(a->score == b->score); /* re-scored exactly: bit for bit */
        CHECK(fabsf(a->z - b->z) < 0.05f);
        CHECK(fabs(a->score - stored_dot(ix, a->video_id, a->peak_seq, q, dim)) < 1e-5);
        for (int j = 0; j < a->n_segs && j < b->n_segs; j++)
            CHECK(ri.segs[a->seg0 + j].score == re.segs[b->seg0 + j].score);
    }
    /* The planted runs come first, each exactly. */
    CHECK(ri.n >= 4);
    if (ri.n >= 4) {
        CHECK(ri.moments[0].video_id == 3 && ri.moments[0].first_seq == 100 && ri.moments[0].last_seq == 104);
        CHECK(ri.moments[1].video_id == 11 && ri.moments[1].first_seq == 7 && ri.moments[1].last_seq == 9);
        CHECK(ri.confident);
        int weak = 0; /* video 17's two weak runs stay two moments (at dim 100 they drown in the topics) */
        for (int i = 2; i < ri.n; i++)
            weak += ri.moments[i].video_id == 17 && ri.moments[i].last_seq - ri.moments[i].first_seq <= 2;
        CHECK(dim < 256 || weak == 2);
    }
    md_search_result_free(&re);
    md_search_result_free(&ri);

    /* Restricted to some videos (their rows are gathered, not the whole index scanned). */
    long long only[] = {17, 5, 17, 3};
    pe.videos = pi.videos = only;
    pe.n_videos = pi.n_videos = 4;
    CHECK_EQ_INT(md_index_search(ix, q, &pe, &re), MD_OK);
    CHECK_EQ_INT(md_index_search(ix, q, &pi, &ri), MD_OK);
    CHECK_EQ_INT(ri.scored, 3LL * segs);
    CHECK_EQ_INT(ri.n, re.n);
    for (int i = 0; i < ri.n && i < re.n; i++) {
        CHECK(ri.moments[i].video_id == 3 || ri.moments[i].video_id == 5 || ri.moments[i].video_id == 17);
        CHECK(ri.moments[i].video_id == re.moments[i].video_id && ri.moments[i].first_seq == re.moments[i].first_seq &&
              ri.moments[i].last_seq == re.moments[i].last_seq && ri.moments[i].score == re.moments[i].score);
    }
    CHECK(ri.n > 0 && ri.moments[0].video_id == 3 && ri.moments[0].first_seq == 100);
    md_search_result_free(&re);
    md_search_result_free(&ri);
    pe.videos = pi.videos = NULL;
    pe.n_videos = pi.n_videos = 0;

    /* Raw segment ranking: the same segments, the same exact scores; the
     * first-pass score is close. */
    enum { K = 50 };
    md_segment_score se[K], si[K];
    int ne, ni;
    pe.k = pi.k = K;
    CHECK_EQ_INT(md_index_top_segments(ix, q, &pe, se, &ne), MD_OK);
    CHECK_EQ_INT(md_index_top_segments(ix, q, &pi, si, &ni), MD_OK);
    CHECK_EQ_INT(ne, K);
    CHECK_EQ_INT(ni, K);
    float worst = 0;
    for (int i = 0; i < ne && i < ni; i++) {
        CHECK(si[i].video_id == se[i].video_id && si[i].seq == se[i].seq);
        CHECK(si[i].score == se[i].score && se[i].approx == se[i].score);
        CHECK(i == 0 || si[i].score <= si[i - 1].score);
        float err = fabsf(si[i].approx - si[i].score);
        worst = err > worst ? err : worst;
    }
    CHECK(worst < 0.01f);
    CHECK(worst > 0); /* the first pass really is the int8 one */
    /* Pagination and min_score on the ranking. */
    pi.k = 5;
    pi.offset = 3;
    pi.min_score = se[5].score;
    CHECK_EQ_INT(md_index_top_segments(ix, q, &pi, si, &ni), MD_OK);
    CHECK_EQ_INT(ni, 3);
    CHECK(ni == 3 && si[0].seq == se[3].seq && si[2].seq == se[5].seq && si[0].video_id == se[3].video_id);

    /* One thread or several: the same answer. */
    md_index_set_threads(ix, 1);
    pi = md_search_default_params();
    pi.k = K;
    CHECK_EQ_INT(md_index_top_segments(ix, q, &pi, si, &ni), MD_OK);
    for (int i = 0; i < ni && i < ne; i++)
        CHECK(si[i].score == se[i].score && si[i].seq == se[i].seq);
    CHECK_EQ_INT(md_index_set_threads(ix, 4), 4);
    md_index_free(ix);
    free(q);
}

static void test_int8_matches_exact(void)
{
    /* 16800 x 512: over 2 x 4M values, so the first pass runs on threads. */
    check_int8_matches_exact(512, 40, 420);
    /* A width that is not a multiple of the SIMD blocks. */
    check_int8_matches_exact(100, 30, 200);
}

static void test_kernels_agree(void)
{
    const char *def = md_search_kernel();
    CHECK(!strcmp(def, "avx512") || !strcmp(def, "avx2") || !strcmp(def, "scalar"));
    CHECK_EQ_INT(md_search_set_kernel("nonsense"), MD_ERR_UNSUPPORTED);
    /* Widths with every kind of tail: 64-wide blocks, 16- or 32-wide blocks, single values. */
    const int dims[] = {77, 128, 200};
    const char *names[] = {"scalar", "avx2", "avx512"};
    enum { K = 30 };
    for (int di = 0; di < 3; di++) {
        const int d = dims[di];
        float *q = malloc((size_t)d * sizeof *q);
        unit_n(q, d);
        md_index *ix = build_big(d, 20, 150, q);
        md_search_params p = md_search_default_params();
        p.k = K;
        md_segment_score a[K], b[K];
        int na, nb, ran = 0;
        CHECK_EQ_INT(md_search_set_kernel("scalar"), MD_OK);
        CHECK_EQ_INT(md_index_top_segments(ix, q, &p, a, &na), MD_OK);
        CHECK_EQ_INT(na, K);
        for (int ki = 0; ki < 3; ki++) {
            if (md_search_set_kernel(names[ki]) != MD_OK)
                continue; /* not on this CPU */
            ran++;
            CHECK_EQ_INT(md_index_top_segments(ix, q, &p, b, &nb), MD_OK);
            CHECK_EQ_INT(na, nb);
            for (int i = 0; i < na && i < nb; i++) {
                CHECK(a[i].video_id == b[i].video_id && a[i].seq == b[i].seq);
                CHECK(fabsf(a[i].score - b[i].score) < 1e-5f && fabsf(a[i].approx - b[i].approx) < 1e-5f);
                CHECK(fabs(b[i].score - stored_dot(ix, b[i].video_id, b[i].seq, q, d)) < 1e-5);
            }
        }
        CHECK(ran >= 1);
        CHECK_EQ_INT(md_search_set_kernel(def), MD_OK);
        md_index_free(ix);
        free(q);
    }
    CHECK_EQ_INT(strcmp(md_search_kernel(), def), 0);
}

static void test_halves(void)
{
    md_index *ix;
    CHECK_EQ_INT(md_index_new(DIM, &ix), MD_OK);
    float v[DIM], back[DIM];
    uint16_t h[DIM];
    random_unit(v);
    for (int i = 0; i < DIM; i++)
        h[i] = md_f32_to_f16(v[i]);
    CHECK_EQ_INT(md_index_add_f16(ix, 1, 0, 0, 1000, h), MD_OK);
    CHECK_EQ_INT(md_index_add(ix, 2, 0, 0, 1000, v), MD_OK);
    /* Both keep the halves bit for bit: floats are rounded to nearest even. */
    CHECK_EQ_INT(md_index_lookup(ix, 1, 0, back, NULL, NULL), MD_OK);
    int same = 1;
    for (int i = 0; i < DIM; i++)
        same &= back[i] == md_f16_to_f32(h[i]);
    CHECK(same);
    CHECK_EQ_INT(md_index_lookup(ix, 2, 0, back, NULL, NULL), MD_OK);
    for (int i = 0; i < DIM; i++)
        same &= back[i] == md_f16_to_f32(h[i]);
    CHECK(same);
    /* The score is the exact cosine with the stored vector, within half rounding of the float one. */
    md_segment_score s[2];
    int n;
    md_search_params p = md_search_default_params();
    CHECK_EQ_INT(md_index_top_segments(ix, v, &p, s, &n), MD_OK);
    CHECK_EQ_INT(n, 2);
    CHECK(n == 2 && s[0].score == s[1].score && fabsf(s[0].score - 1.0f) < 5e-4f);
    /* Not finite or out of the half range: refused, nothing changes. */
    h[3] = 0x7c00; /* +Inf */
    CHECK_EQ_INT(md_index_add_f16(ix, 3, 0, 0, 1000, h), MD_ERR_INVALID);
    h[3] = 0x7e00; /* NaN */
    CHECK_EQ_INT(md_index_add_f16(ix, 3, 0, 0, 1000, h), MD_ERR_INVALID);
    v[5] = NAN;
    CHECK_EQ_INT(md_index_add(ix, 3, 0, 0, 1000, v), MD_ERR_INVALID);
    v[5] = 70000.0f;
    CHECK_EQ_INT(md_index_add(ix, 3, 0, 0, 1000, v), MD_ERR_INVALID);
    CHECK_EQ_INT(md_index_count(ix), 2);
    /* Every kernel set rounds to halves exactly as md_f32_to_f16: ties to even,
     * subnormals, the largest half, underflow to zero. */
    const char *names[] = {"scalar", "avx2", "avx512"}, *def = md_search_kernel();
    float w[DIM];
    for (int i = 0; i < DIM; i++) {
        const float mag[8] = {1.0f, 1e-3f, 3e-5f, 1e-6f, 1e-8f, 1e-7f, 100.0f, 60000.0f};
        w[i] = frand() * mag[i % 8];
    }
    w[0] = 1.0f + 0x1p-11f;       /* halfway: to 1 */
    w[1] = 1.0f + 3 * 0x1p-11f;   /* halfway: to 1 + 2^-9 (even) */
    w[2] = -65504.0f;
    w[3] = 0x1p-25f;              /* half the smallest subnormal: to 0 */
    w[4] = 3 * 0x1p-25f;          /* to 2^-23 (even) */
    for (int ki = 0; ki < 3; ki++) {
        if (md_search_set_kernel(names[ki]) != MD_OK)
            continue;
        CHECK_EQ_INT(md_index_add(ix, 10 + ki, 0, 0, 1000, w), MD_OK);
        CHECK_EQ_INT(md_index_lookup(ix, 10 + ki, 0, back, NULL, NULL), MD_OK);
        int exact = 1;
        for (int i = 0; i < DIM; i++)
            exact &= back[i] == md_f16_to_f32(md_f32_to_f16(w[i]));
        CHECK(exact);
    }
    CHECK_EQ_INT(md_search_set_kernel(def), MD_OK);
    for (long long vid = 10; vid < 13; vid++)
        md_index_remove_video(ix, vid);
    /* Memory: halves + int8 + bookkeeping per row of capacity. */
    CHECK(md_index_bytes(ix) >= 1024 * (size_t)(3 * DIM + 4));
    CHECK(md_index_bytes(ix) < 1024 * (size_t)(3 * DIM + 64) + 65536);
    md_index_free(ix);
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    RUN(test_planted_run_is_the_moment);
    RUN(test_two_runs_stay_two);
    RUN(test_noise_is_not_confident);
    RUN(test_filters_pagination_delete);
    RUN(test_empty_index);
    RUN(test_concurrent_use);
    RUN(test_int8_matches_exact);
    RUN(test_kernels_agree);
    RUN(test_halves);
    return md_test_summary("test_search");
}
