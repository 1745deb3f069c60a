/* moments.c - the segment index's answers built from scores (see search.h for the rules):
 * md_index_search grows the first pass's candidates into moments (runs of neighbouring
 * segments around a peak) with z-scores against the scores of every row scanned;
 * md_index_ground scores one video's segments, smooths them and picks its best moments by
 * thresholds and non-maximum suppression, with z-scores against a sample of the whole index.
 * The index itself is in search.c (search_internal.h). */
#define _XOPEN_SOURCE 700
#include "search_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

md_ground_params md_ground_default_params(void)
{
    md_ground_params p = {.top_n = 5, .sigma = 1.0f, .nms_iou = 0.5f, .with_curve = 0};
    return p;
}

static float z_needed(long long n)
{
    float z = n > 1 ? sqrtf(2.0f * logf((float)n)) : 0;
    return z > 3.0f ? z : 3.0f;
}

#define COVERED(c, r) ((c)[(size_t)(r) >> 3] & (1u << ((r) & 7)))
#define COVER(c, r) ((c)[(size_t)(r) >> 3] |= (uint8_t)(1u << ((r) & 7)))

/* Grows a moment around row PEAK (exact score PS) of entry E (see search.h),
 * scoring the neighbours it visits exactly. Marks rows covered. */
static md_moment grow_moment(const md_index *ix, const scorer *sc, const vid_entry *e, int peak, float ps,
                             uint8_t *covered, float mean, float std)
{
    int p = md_index_find_seq(ix, e, ix->seq[peak]);
    float thr = mean + (ps - mean) / 2, rise = (ps - mean) / 4, prev_s = ps;
    int lo = p, hi = p;
    for (int j = p - 1; j >= 0; j--) {
        int r = e->rows[j], prev = e->rows[j + 1];
        if (COVERED(covered, r) || ix->seq[r] != ix->seq[prev] - 1)
            break;
        float s = row_score(sc, r);
        if (s < thr || s > prev_s + rise)
            break;
        lo = j;
        prev_s = s;
    }
    prev_s = ps;
    for (int j = p + 1; j < e->n; j++) {
        int r = e->rows[j], prev = e->rows[j - 1];
        if (COVERED(covered, r) || ix->seq[r] != ix->seq[prev] + 1)
            break;
        float s = row_score(sc, r);
        if (s < thr || s > prev_s + rise)
            break;
        hi = j;
        prev_s = s;
    }
    for (int j = lo; j <= hi; j++)
        COVER(covered, e->rows[j]);
    md_moment m = {.video_id = ix->vid[peak],
                   .start_ms = ix->t0[e->rows[lo]],
                   .end_ms = ix->t1[e->rows[hi]],
                   .first_seq = ix->seq[e->rows[lo]],
                   .last_seq = ix->seq[e->rows[hi]],
                   .peak_seq = ix->seq[peak],
                   .score = ps,
                   .z = std > 0 ? (ps - mean) / std : 0};
    return m;
}

md_status md_index_search(md_index *ix, const float *query, const md_search_params *p, md_search_result *out)
{
    md_status s = MD_OK;
    uint8_t *covered = NULL;
    cand *cands = NULL;
    int nc = 0;
    memset(out, 0, sizeof *out);
    if (p->k < 0 || p->offset < 0)
        return MD_ERR_INVALID;
    const scorer sc = {ix, md_search_kern(), query};
    pthread_rwlock_rdlock(&ix->lock);
    size_t n = ix->n;
    if (n == 0)
        goto out;
    double sum, sum2;
    long long cnt;
    if ((s = md_index_first_pass(ix, &sc, p, candidates(p, n), &cands, &nc, &sum, &sum2, &cnt)) != MD_OK)
        goto out;
    out->scored = cnt;
    if (!cnt)
        goto out;
    double mean = sum / (double)cnt, var = sum2 / (double)cnt - mean * mean;
    out->mean = (float)mean;
    out->std = (float)(var > 0 ? sqrt(var) : 0);
    out->z_needed = z_needed(cnt);

    covered = calloc((n + 7) / 8, 1);
    md_moment *all = malloc((size_t)(nc ? nc : 1) * sizeof *all);
    if (!covered || !all) {
        free(all);
        s = MD_ERR_NOMEM;
        goto out;
    }
    int na = 0;
    for (int i = 0; i < nc; i++) {
        int row = cands[i].row;
        if (COVERED(covered, row))
            continue;
        const vid_entry *e = md_index_find_video(ix, ix->vid[row]);
        md_moment mo = grow_moment(ix, &sc, e, row, cands[i].s, covered, out->mean, out->std);
        if (mo.score >= p->min_score)
            all[na++] = mo;
    }
    out->total = na;
    out->confident = na > 0 && all[0].z >= out->z_needed;
    int from = p->offset < na ? p->offset : na, to = p->k < na - from ? from + p->k : na;
    out->n = to - from;
    memmove(all, all + from, (size_t)out->n * sizeof *all);
    out->moments = all;
    int nsegs = 0;
    for (int i = 0; i < out->n; i++)
        nsegs += all[i].last_seq - all[i].first_seq + 1;
    if (!(out->segs = malloc((size_t)(nsegs ? nsegs : 1) * sizeof *out->segs))) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    nsegs = 0;
    for (int i = 0; i < out->n; i++) {
        const vid_entry *e = md_index_find_video(ix, all[i].video_id);
        int p0 = md_index_find_seq(ix, e, all[i].first_seq);
        all[i].seg0 = nsegs;
        all[i].n_segs = all[i].last_seq - all[i].first_seq + 1;
        for (int j = 0; j < all[i].n_segs; j++) {
            int r = e->rows[p0 + j];
            out->segs[nsegs++] = (md_segment_hit){ix->seq[r], ix->t0[r], ix->t1[r], row_score(&sc, r)};
        }
    }
out:
    pthread_rwlock_unlock(&ix->lock);
    if (s != MD_OK)
        md_search_result_free(out);
    free(covered);
    free(cands);
    return s;
}

void md_search_result_free(md_search_result *r)
{
    if (!r)
        return;
    free(r->moments);
    free(r->segs);
    r->moments = NULL;
    r->segs = NULL;
    r->n = 0;
}

/* ---- grounding --------------------------------------------------------- */

typedef struct run {
    int lo, hi;
    float rank; /* best smoothed score inside */
} run;

static int cmp_run_desc(const void *a, const void *b)
{
    const run *x = a, *y = b;
    return (x->rank < y->rank) - (x->rank > y->rank);
}

md_status md_index_ground(md_index *ix, long long video_id, const float *query, const md_ground_params *p,
                          md_ground_result *out)
{
    md_status s = MD_OK;
    float *raw = NULL, *sm = NULL;
    long long *t0 = NULL, *t1 = NULL, *lens = NULL;
    run *runs = NULL;
    memset(out, 0, sizeof *out);
    pthread_rwlock_rdlock(&ix->lock);
    const vid_entry *e = md_index_find_video(ix, video_id);
    if (!e || e->n == 0) {
        s = MD_ERR_NOT_FOUND;
        goto out;
    }
    int n = e->n;
    raw = malloc((size_t)n * sizeof *raw);
    sm = malloc((size_t)n * sizeof *sm);
    t0 = malloc((size_t)n * sizeof *t0);
    t1 = malloc((size_t)n * sizeof *t1);
    lens = malloc((size_t)n * sizeof *lens);
    runs = malloc((size_t)n * 2 * sizeof *runs);
    if (!raw || !sm || !t0 || !t1 || !lens || !runs) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    const scorer sc = {ix, md_search_kern(), query};
    for (int i = 0; i < n; i++) {
        int r = e->rows[i];
        raw[i] = row_score(&sc, r);
        t0[i] = ix->t0[r];
        t1[i] = ix->t1[r];
        lens[i] = t1[i] - t0[i];
    }
    qsort(lens, (size_t)n, sizeof *lens, cmp_ll);
    out->precision_ms = lens[n / 2];
    out->n_segments = n;

    /* Gaussian smoothing, renormalised at the edges so the ends are not pulled down. */
    int rad = p->sigma > 0 ? (int)ceilf(3 * p->sigma) : 0;
    for (int i = 0; i < n; i++) {
        double acc = 0, wsum = 0;
        for (int j = i - rad; j <= i + rad; j++) {
            if (j < 0 || j >= n)
                continue;
            double w = rad ? exp(-0.5 * (double)(j - i) * (j - i) / ((double)p->sigma * p->sigma)) : 1;
            acc += w * raw[j];
            wsum += w;
        }
        sm[i] = (float)(acc / wsum);
    }

    /* The null distribution: a spread sample of the whole index (this video included). */
    size_t total = ix->n, step = total > 8192 ? total / 8192 : 1;
    double nsum = 0, nsum2 = 0;
    long long ncnt = 0;
    for (size_t r = 0; r < total; r += step) {
        double v = row_score(&sc, (int)r);
        nsum += v;
        nsum2 += v * v;
        ncnt++;
    }
    double nmean = nsum / (double)ncnt, nvar = nsum2 / (double)ncnt - nmean * nmean;
    out->null_mean = (float)nmean;
    out->null_std = (float)(nvar > 0 ? sqrt(nvar) : 0);
    out->z_needed = z_needed(n);

    /* Runs above two levels between the video's mean and its peak; the nested
     * candidates are then deduplicated by non-maximum suppression. */
    double vmean = 0;
    float peak = sm[0];
    for (int i = 0; i < n; i++) {
        vmean += sm[i];
        if (sm[i] > peak)
            peak = sm[i];
    }
    vmean /= n;
    out->threshold = (float)(vmean + 0.5 * (peak - vmean));
    int nr = 0;
    const double levels[2] = {0.5, 0.25};
    for (int l = 0; l < 2; l++) {
        float thr = (float)(vmean + levels[l] * (peak - vmean));
        for (int i = 0; i < n;) {
            if (sm[i] < thr || (peak - vmean) <= 0) {
                i++;
                continue;
            }
            int j = i;
            float best = sm[i];
            while (j + 1 < n && sm[j + 1] >= thr) {
                j++;
                if (sm[j] > best)
                    best = sm[j];
            }
            runs[nr++] = (run){i, j, best};
            i = j + 1;
        }
    }
    qsort(runs, (size_t)nr, sizeof *runs, cmp_run_desc);
    out->moments = malloc((size_t)(nr ? nr : 1) * sizeof *out->moments);
    if (!out->moments) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < nr && out->n < p->top_n; i++) {
        run *rn = &runs[i];
        int keep = 1;
        for (int k = 0; k < out->n && keep; k++) {
            md_moment *o = &out->moments[k];
            long long a0 = t0[rn->lo], a1 = t1[rn->hi];
            long long inter = (a1 < o->end_ms ? a1 : o->end_ms) - (a0 > o->start_ms ? a0 : o->start_ms);
            long long uni = (a1 > o->end_ms ? a1 : o->end_ms) - (a0 < o->start_ms ? a0 : o->start_ms);
            if (inter > 0 && uni > 0 && (float)inter / (float)uni > p->nms_iou)
                keep = 0;
            if (inter > 0 && rn->lo >= o->first_seq && rn->hi <= o->last_seq)
                keep = 0; /* nested inside a better one */
        }
        if (!keep)
            continue;
        int pk = rn->lo;
        for (int k = rn->lo; k <= rn->hi; k++)
            if (raw[k] > raw[pk])
                pk = k;
        out->moments[out->n++] = (md_moment){.video_id = video_id,
                                             .start_ms = t0[rn->lo],
                                             .end_ms = t1[rn->hi],
                                             .first_seq = ix->seq[e->rows[rn->lo]],
                                             .last_seq = ix->seq[e->rows[rn->hi]],
                                             .peak_seq = ix->seq[e->rows[pk]],
                                             .score = raw[pk],
                                             .z = out->null_std > 0 ? (raw[pk] - out->null_mean) / out->null_std : 0};
    }
    out->confident = out->n > 0 && out->moments[0].z >= out->z_needed;
    if (p->with_curve) {
        out->raw = raw;
        out->smooth = sm;
        out->start_ms = t0;
        out->end_ms = t1;
        raw = sm = NULL;
        t0 = t1 = NULL;
    }
out:
    pthread_rwlock_unlock(&ix->lock);
    if (s != MD_OK)
        md_ground_result_free(out);
    free(raw);
    free(sm);
    free(t0);
    free(t1);
    free(lens);
    free(runs);
    return s;
}

void md_ground_result_free(md_ground_result *r)
{
    if (!r)
        return;
    free(r->moments);
    free(r->raw);
    free(r->smooth);
    free(r->start_ms);
    free(r->end_ms);
    memset(r, 0, sizeof *r);
}
