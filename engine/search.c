/* search.c - the in-memory segment index, retrieval and grounding (see search.h
 * for the scoring and moment rules). */
#define _XOPEN_SOURCE 700
#include "search.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct vid_entry {
    long long video_id; /* 0: empty slot, -1: removed */
    int *rows;          /* row indices, sorted by seq */
    int n, cap;
} vid_entry;

struct md_index {
    int dim;
    pthread_rwlock_t lock;
    float *emb;
    long long *vid, *t0, *t1;
    int *seq;
    size_t n, cap;
    vid_entry *tab; /* open addressing, linear probing, capacity a power of two */
    size_t tab_cap, tab_used;
};

md_search_params md_search_default_params(void)
{
    md_search_params p = {.k = 10, .offset = 0, .min_score = -1.0f};
    return p;
}

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

/* ---- the video table --------------------------------------------------- */

static size_t slot_of(long long id, size_t cap)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static vid_entry *find_video(md_index *ix, long long id)
{
    if (!ix->tab_cap)
        return NULL;
    for (size_t i = slot_of(id, ix->tab_cap), k = 0; k < ix->tab_cap; i = (i + 1) & (ix->tab_cap - 1), k++) {
        if (ix->tab[i].video_id == id)
            return &ix->tab[i];
        if (ix->tab[i].video_id == 0)
            return NULL;
    }
    return NULL;
}

static md_status grow_table(md_index *ix)
{
    size_t ncap = ix->tab_cap ? ix->tab_cap * 2 : 64;
    vid_entry *nt = calloc(ncap, sizeof *nt);
    if (!nt)
        return MD_ERR_NOMEM;
    size_t used = 0;
    for (size_t i = 0; i < ix->tab_cap; i++) {
        vid_entry *e = &ix->tab[i];
        if (e->video_id <= 0)
            continue;
        size_t j = slot_of(e->video_id, ncap);
        while (nt[j].video_id)
            j = (j + 1) & (ncap - 1);
        nt[j] = *e;
        used++;
    }
    free(ix->tab);
    ix->tab = nt;
    ix->tab_cap = ncap;
    ix->tab_used = used;
    return MD_OK;
}

static md_status get_or_add_video(md_index *ix, long long id, vid_entry **out)
{
    if ((*out = find_video(ix, id)))
        return MD_OK;
    if ((ix->tab_used + 1) * 2 > ix->tab_cap) {
        md_status s = grow_table(ix);
        if (s != MD_OK)
            return s;
    }
    size_t i = slot_of(id, ix->tab_cap);
    while (ix->tab[i].video_id > 0)
        i = (i + 1) & (ix->tab_cap - 1);
    if (ix->tab[i].video_id == 0)
        ix->tab_used++;
    ix->tab[i] = (vid_entry){.video_id = id};
    *out = &ix->tab[i];
    return MD_OK;
}

/* Position of SEQ in E's rows, or the insertion point as -(pos + 1). */
static int find_seq(const md_index *ix, const vid_entry *e, int seq)
{
    int lo = 0, hi = e->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, s = ix->seq[e->rows[mid]];
        if (s == seq)
            return mid;
        if (s < seq)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -(lo + 1);
}

/* ---- lifecycle --------------------------------------------------------- */

md_status md_index_new(int dim, md_index **out)
{
    *out = NULL;
    if (dim <= 0 || dim > 65536)
        return MD_ERR_INVALID;
    md_index *ix = calloc(1, sizeof *ix);
    if (!ix)
        return MD_ERR_NOMEM;
    ix->dim = dim;
    pthread_rwlock_init(&ix->lock, NULL);
    *out = ix;
    return MD_OK;
}

void md_index_free(md_index *ix)
{
    if (!ix)
        return;
    for (size_t i = 0; i < ix->tab_cap; i++)
        free(ix->tab[i].rows);
    free(ix->tab);
    free(ix->emb);
    free(ix->vid);
    free(ix->t0);
    free(ix->t1);
    free(ix->seq);
    pthread_rwlock_destroy(&ix->lock);
    free(ix);
}

int md_index_dim(const md_index *ix) { return ix->dim; }

long long md_index_count(md_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    long long n = (long long)ix->n;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

size_t md_index_bytes(md_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    size_t b = ix->cap * ((size_t)ix->dim * sizeof(float) + 3 * sizeof(long long) + sizeof(int)) +
               ix->tab_cap * sizeof(vid_entry);
    for (size_t i = 0; i < ix->tab_cap; i++)
        b += (size_t)ix->tab[i].cap * sizeof(int);
    pthread_rwlock_unlock(&ix->lock);
    return b;
}

md_status md_index_lookup(md_index *ix, long long video_id, long long t_ms, float *emb, long long *start_ms,
                          long long *end_ms)
{
    md_status s = MD_ERR_NOT_FOUND;
    pthread_rwlock_rdlock(&ix->lock);
    const vid_entry *e = find_video(ix, video_id);
    int best = -1;
    for (int i = 0; e && i < e->n; i++)
        if (ix->t0[e->rows[i]] <= t_ms)
            best = e->rows[i];
    if (best >= 0 && t_ms <= ix->t1[best]) {
        memcpy(emb, ix->emb + (size_t)best * ix->dim, (size_t)ix->dim * sizeof *emb);
        if (start_ms)
            *start_ms = ix->t0[best];
        if (end_ms)
            *end_ms = ix->t1[best];
        s = MD_OK;
    }
    pthread_rwlock_unlock(&ix->lock);
    return s;
}

int md_index_video_segments(md_index *ix, long long video_id)
{
    pthread_rwlock_rdlock(&ix->lock);
    vid_entry *e = find_video(ix, video_id);
    int n = e ? e->n : 0;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

static md_status grow_rows(md_index *ix)
{
    size_t nc = ix->cap ? ix->cap * 2 : 1024;
    float *emb = realloc(ix->emb, nc * (size_t)ix->dim * sizeof *emb);
    if (!emb)
        return MD_ERR_NOMEM;
    ix->emb = emb;
    long long *a = realloc(ix->vid, nc * sizeof *a);
    if (!a)
        return MD_ERR_NOMEM;
    ix->vid = a;
    if (!(a = realloc(ix->t0, nc * sizeof *a)))
        return MD_ERR_NOMEM;
    ix->t0 = a;
    if (!(a = realloc(ix->t1, nc * sizeof *a)))
        return MD_ERR_NOMEM;
    ix->t1 = a;
    int *s = realloc(ix->seq, nc * sizeof *s);
    if (!s)
        return MD_ERR_NOMEM;
    ix->seq = s;
    ix->cap = nc;
    return MD_OK;
}

md_status md_index_add(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                       const float *emb)
{
    if (video_id <= 0 || seq < 0 || end_ms < start_ms)
        return MD_ERR_INVALID;
    md_status s = MD_OK;
    pthread_rwlock_wrlock(&ix->lock);
    vid_entry *e;
    if ((s = get_or_add_video(ix, video_id, &e)) != MD_OK)
        goto out;
    int pos = find_seq(ix, e, seq);
    size_t row;
    if (pos >= 0) {
        row = (size_t)e->rows[pos];
    } else {
        if (ix->n == ix->cap && (s = grow_rows(ix)) != MD_OK)
            goto out;
        if (e->n == e->cap) {
            int nc = e->cap ? e->cap * 2 : 16;
            int *nr = realloc(e->rows, (size_t)nc * sizeof *nr);
            if (!nr) {
                s = MD_ERR_NOMEM;
                goto out;
            }
            e->rows = nr;
            e->cap = nc;
        }
        pos = -pos - 1;
        memmove(e->rows + pos + 1, e->rows + pos, (size_t)(e->n - pos) * sizeof *e->rows);
        row = ix->n++;
        e->rows[pos] = (int)row;
        e->n++;
    }
    memcpy(ix->emb + row * (size_t)ix->dim, emb, (size_t)ix->dim * sizeof *emb);
    ix->vid[row] = video_id;
    ix->seq[row] = seq;
    ix->t0[row] = start_ms;
    ix->t1[row] = end_ms;
out:
    pthread_rwlock_unlock(&ix->lock);
    return s;
}

static int cmp_int_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

void md_index_remove_video(md_index *ix, long long video_id)
{
    pthread_rwlock_wrlock(&ix->lock);
    vid_entry *e = find_video(ix, video_id);
    if (!e)
        goto out;
    /* Highest rows first: the row moved into each hole then never belongs to
     * this video (its rows above the hole are already gone). */
    qsort(e->rows, (size_t)e->n, sizeof *e->rows, cmp_int_desc);
    for (int i = 0; i < e->n; i++) {
        size_t r = (size_t)e->rows[i], last = ix->n - 1;
        if (r != last) {
            memcpy(ix->emb + r * (size_t)ix->dim, ix->emb + last * (size_t)ix->dim, (size_t)ix->dim * sizeof(float));
            ix->vid[r] = ix->vid[last];
            ix->seq[r] = ix->seq[last];
            ix->t0[r] = ix->t0[last];
            ix->t1[r] = ix->t1[last];
            vid_entry *o = find_video(ix, ix->vid[r]);
            int p = o ? find_seq(ix, o, ix->seq[r]) : -1;
            if (p >= 0)
                o->rows[p] = (int)r;
        }
        ix->n--;
    }
    free(e->rows);
    *e = (vid_entry){.video_id = -1};
out:
    pthread_rwlock_unlock(&ix->lock);
}

/* ---- retrieval --------------------------------------------------------- */

typedef struct cand {
    float s;
    int row;
} cand;

static int cmp_cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->s != y->s)
        return x->s < y->s ? 1 : -1;
    return x->row - y->row;
}

/* Min-heap of the M best candidates. */
static void heap_push(cand *h, int *n, int m, cand c)
{
    if (*n < m) {
        int i = (*n)++;
        h[i] = c;
        while (i > 0 && h[(i - 1) / 2].s > h[i].s) {
            cand t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
        return;
    }
    if (c.s <= h[0].s)
        return;
    h[0] = c;
    for (int i = 0;;) {
        int l = 2 * i + 1, r = l + 1, s = i;
        if (l < *n && h[l].s < h[s].s)
            s = l;
        if (r < *n && h[r].s < h[s].s)
            s = r;
        if (s == i)
            break;
        cand t = h[i];
        h[i] = h[s];
        h[s] = t;
        i = s;
    }
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Grows a moment around row PEAK of entry E (see search.h). Marks rows covered. */
static md_moment grow_moment(const md_index *ix, const vid_entry *e, int peak, const float *scores, uint8_t *covered,
                             float mean, float std)
{
    int p = find_seq(ix, e, ix->seq[peak]);
    float ps = scores[peak], thr = mean + (ps - mean) / 2, rise = (ps - mean) / 4;
    int lo = p, hi = p;
    for (int j = p - 1; j >= 0; j--) {
        int r = e->rows[j], prev = e->rows[j + 1];
        if (covered[r] || ix->seq[r] != ix->seq[prev] - 1 || scores[r] < thr || scores[r] > scores[prev] + rise)
            break;
        lo = j;
    }
    for (int j = p + 1; j < e->n; j++) {
        int r = e->rows[j], prev = e->rows[j - 1];
        if (covered[r] || ix->seq[r] != ix->seq[prev] + 1 || scores[r] < thr || scores[r] > scores[prev] + rise)
            break;
        hi = j;
    }
    for (int j = lo; j <= hi; j++)
        covered[e->rows[j]] = 1;
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
    float *scores = NULL;
    uint8_t *covered = NULL;
    cand *heap = NULL;
    long long *filter = NULL;
    memset(out, 0, sizeof *out);
    if (p->k < 0 || p->offset < 0)
        return MD_ERR_INVALID;
    pthread_rwlock_rdlock(&ix->lock);
    size_t n = ix->n;
    if (n == 0)
        goto out;
    scores = malloc(n * sizeof *scores);
    covered = calloc(n, 1);
    int m = p->offset + p->k;
    m = m * 4 < 64 ? 64 : m * 4;
    heap = malloc((size_t)m * sizeof *heap);
    if (!scores || !covered || !heap) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    if (p->videos && p->n_videos > 0) {
        if (!(filter = malloc((size_t)p->n_videos * sizeof *filter))) {
            s = MD_ERR_NOMEM;
            goto out;
        }
        memcpy(filter, p->videos, (size_t)p->n_videos * sizeof *filter);
        qsort(filter, (size_t)p->n_videos, sizeof *filter, cmp_ll);
    }
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, ix->dim, 1.0f, ix->emb, ix->dim, query, 1, 0.0f, scores, 1);

    double sum = 0, sum2 = 0;
    long long cnt = 0;
    int hn = 0;
    for (size_t i = 0; i < n; i++) {
        if (filter && !bsearch(&ix->vid[i], filter, (size_t)p->n_videos, sizeof *filter, cmp_ll)) {
            covered[i] = 1; /* outside the filter: never part of a moment */
            continue;
        }
        sum += scores[i];
        sum2 += (double)scores[i] * scores[i];
        cnt++;
        heap_push(heap, &hn, m, (cand){scores[i], (int)i});
    }
    out->scored = cnt;
    if (!cnt)
        goto out;
    double mean = sum / (double)cnt, var = sum2 / (double)cnt - mean * mean;
    out->mean = (float)mean;
    out->std = (float)(var > 0 ? sqrt(var) : 0);
    out->z_needed = z_needed(cnt);
    qsort(heap, (size_t)hn, sizeof *heap, cmp_cand_desc);

    md_moment *all = malloc((size_t)hn * sizeof *all);
    if (!all) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    int na = 0;
    for (int i = 0; i < hn; i++) {
        int row = heap[i].row;
        if (covered[row])
            continue;
        const vid_entry *e = find_video(ix, ix->vid[row]);
        md_moment mo = grow_moment(ix, e, row, scores, covered, out->mean, out->std);
        if (mo.score >= p->min_score)
            all[na++] = mo;
    }
    out->total = na;
    out->confident = na > 0 && all[0].z >= out->z_needed;
    int from = p->offset < na ? p->offset : na, to = from + p->k < na ? from + p->k : na;
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
        const vid_entry *e = find_video(ix, all[i].video_id);
        int p0 = find_seq(ix, e, all[i].first_seq);
        all[i].seg0 = nsegs;
        all[i].n_segs = all[i].last_seq - all[i].first_seq + 1;
        for (int j = 0; j < all[i].n_segs; j++) {
            int r = e->rows[p0 + j];
            out->segs[nsegs++] = (md_segment_hit){ix->seq[r], ix->t0[r], ix->t1[r], scores[r]};
        }
    }
out:
    pthread_rwlock_unlock(&ix->lock);
    if (s != MD_OK)
        md_search_result_free(out);
    free(scores);
    free(covered);
    free(heap);
    free(filter);
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

static int cmp_ll_asc(const void *a, const void *b) { return cmp_ll(a, b); }

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
    const vid_entry *e = find_video(ix, video_id);
    if (!e || e->n == 0) {
        s = MD_ERR_NOT_FOUND;
        goto out;
    }
    int n = e->n, dim = ix->dim;
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
    for (int i = 0; i < n; i++) {
        int r = e->rows[i];
        raw[i] = cblas_sdot(dim, ix->emb + (size_t)r * dim, 1, query, 1);
        t0[i] = ix->t0[r];
        t1[i] = ix->t1[r];
        lens[i] = t1[i] - t0[i];
    }
    qsort(lens, (size_t)n, sizeof *lens, cmp_ll_asc);
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
        double v = cblas_sdot(dim, ix->emb + r * (size_t)dim, 1, query, 1);
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
