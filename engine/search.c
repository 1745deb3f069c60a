/* search.c - the in-memory segment index (see search.h for the storage, the scoring and moment
 * rules): its storage (halves, and an int8 copy per row for the first pass), the video table,
 * adding and removing rows, the first pass of a query (threads, candidates re-scored exactly)
 * and the top-k segments. Moments and grounding are in moments.c, the scan kernels in
 * search_kernels.c; what the three share is in search_internal.h. */
#define _XOPEN_SOURCE 700
#include "search_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A thread of the first pass gets at least this many values to scan (4 MB of
 * int8): below it, starting a thread costs more than it saves. */
#define MIN_VALUES_PER_THREAD (1u << 22)
#define MAX_THREADS 16
/* Values per chunk of the first pass that a thread takes at a time (1 MB of int8). */
#define CHUNK_VALUES (1u << 20)

md_search_params md_search_default_params(void)
{
    md_search_params p = {.k = 10, .offset = 0, .min_score = -1.0f, .scan = MD_SCAN_INT8};
    return p;
}

/* ---- the video table --------------------------------------------------- */

static size_t slot_of(long long id, size_t cap)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

vid_entry *md_index_find_video(md_index *ix, long long id)
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
    if ((*out = md_index_find_video(ix, id)))
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
int md_index_find_seq(const md_index *ix, const vid_entry *e, int seq)
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

static int online_cpus(void)
{
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c < 1 ? 1 : c > MAX_THREADS ? MAX_THREADS : (int)c;
}

md_status md_index_new(int dim, md_index **out)
{
    *out = NULL;
    if (dim <= 0 || dim > 65536)
        return MD_ERR_INVALID;
    md_index *ix = calloc(1, sizeof *ix);
    if (!ix)
        return MD_ERR_NOMEM;
    ix->dim = dim;
    ix->threads = online_cpus();
    if (!(ix->scratch = malloc((size_t)dim * sizeof *ix->scratch))) {
        free(ix);
        return MD_ERR_NOMEM;
    }
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
    free(ix->h16);
    free(ix->q8);
    free(ix->scale);
    free(ix->vid);
    free(ix->t0);
    free(ix->t1);
    free(ix->seq);
    free(ix->scratch);
    pthread_rwlock_destroy(&ix->lock);
    free(ix);
}

int md_index_dim(const md_index *ix) { return ix->dim; }

int md_index_set_threads(md_index *ix, int n)
{
    n = n <= 0 ? online_cpus() : n > MAX_THREADS ? MAX_THREADS : n;
    __atomic_store_n(&ix->threads, n, __ATOMIC_RELAXED);
    return n;
}

long long md_index_count(md_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    long long n = (long long)ix->n;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

/* Bytes per row: halves, int8, scale, video, times, seq. */
static size_t row_bytes(const md_index *ix)
{
    return (size_t)ix->dim * (sizeof(uint16_t) + sizeof(int8_t)) + sizeof(float) + 3 * sizeof(long long) +
           sizeof(int);
}

size_t md_index_bytes(md_index *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    size_t b = ix->cap * row_bytes(ix) + ix->tab_cap * sizeof(vid_entry);
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
    const vid_entry *e = md_index_find_video(ix, video_id);
    int best = -1;
    for (int i = 0; e && i < e->n; i++)
        if (ix->t0[e->rows[i]] <= t_ms)
            best = e->rows[i];
    if (best >= 0 && t_ms <= ix->t1[best]) {
        md_search_kern()->from_f16(ix->h16 + (size_t)best * ix->dim, emb, ix->dim);
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
    vid_entry *e = md_index_find_video(ix, video_id);
    int n = e ? e->n : 0;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

static md_status grow_rows(md_index *ix)
{
    size_t nc = ix->cap ? ix->cap * 2 : 1024, d = (size_t)ix->dim;
    /* Each array is replaced as soon as it has grown, so a failure half way
     * leaves every array at least ix->cap long and the index consistent. */
    uint16_t *h = realloc(ix->h16, nc * d * sizeof *h);
    if (!h)
        return MD_ERR_NOMEM;
    ix->h16 = h;
    int8_t *q = realloc(ix->q8, nc * d);
    if (!q)
        return MD_ERR_NOMEM;
    ix->q8 = q;
    float *f = realloc(ix->scale, nc * sizeof *f);
    if (!f)
        return MD_ERR_NOMEM;
    ix->scale = f;
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

/* Writes ROW's int8 copy from X, its halves as floats: symmetric, one scale
 * per row, so the largest value maps to +-127 and every value is off by at
 * most scale/2. */
static void quantise_row(md_index *ix, size_t row, const float *x)
{
    int8_t *q = ix->q8 + row * (size_t)ix->dim;
    float mx = 0;
    for (int i = 0; i < ix->dim; i++) {
        float a = fabsf(x[i]);
        mx = a > mx ? a : mx;
    }
    float inv = mx > 0 ? 127.0f / mx : 0;
    for (int i = 0; i < ix->dim; i++) {
        float v = rintf(x[i] * inv);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    ix->scale[row] = mx / 127.0f;
}

/* Adds or replaces a row from F (floats) or H (halves); exactly one is set. */
static md_status add_row(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                         const float *f, const uint16_t *h)
{
    if (video_id <= 0 || seq < 0 || end_ms < start_ms)
        return MD_ERR_INVALID;
    for (int i = 0; i < ix->dim; i++) /* checked before anything changes */
        if (f ? !(fabsf(f[i]) <= 65504.0f) : (h[i] & 0x7c00u) == 0x7c00u)
            return MD_ERR_INVALID;
    md_status s = MD_OK;
    pthread_rwlock_wrlock(&ix->lock);
    vid_entry *e;
    if ((s = get_or_add_video(ix, video_id, &e)) != MD_OK)
        goto out;
    int pos = md_index_find_seq(ix, e, seq);
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
    const kernels *k = md_search_kern();
    uint16_t *dst = ix->h16 + row * (size_t)ix->dim;
    if (f)
        k->to_f16(f, dst, ix->dim);
    else
        memcpy(dst, h, (size_t)ix->dim * sizeof *h);
    k->from_f16(dst, ix->scratch, ix->dim);
    quantise_row(ix, row, ix->scratch);
    ix->vid[row] = video_id;
    ix->seq[row] = seq;
    ix->t0[row] = start_ms;
    ix->t1[row] = end_ms;
out:
    pthread_rwlock_unlock(&ix->lock);
    return s;
}

md_status md_index_add(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                       const float *emb)
{
    return add_row(ix, video_id, seq, start_ms, end_ms, emb, NULL);
}

md_status md_index_add_f16(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                           const uint16_t *emb)
{
    return add_row(ix, video_id, seq, start_ms, end_ms, NULL, emb);
}

static int cmp_int_desc(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

void md_index_remove_video(md_index *ix, long long video_id)
{
    pthread_rwlock_wrlock(&ix->lock);
    vid_entry *e = md_index_find_video(ix, video_id);
    if (!e)
        goto out;
    /* Highest rows first: the row moved into each hole then never belongs to
     * this video (its rows above the hole are already gone). */
    qsort(e->rows, (size_t)e->n, sizeof *e->rows, cmp_int_desc);
    const size_t d = (size_t)ix->dim;
    for (int i = 0; i < e->n; i++) {
        size_t r = (size_t)e->rows[i], last = ix->n - 1;
        if (r != last) {
            memcpy(ix->h16 + r * d, ix->h16 + last * d, d * sizeof *ix->h16);
            memcpy(ix->q8 + r * d, ix->q8 + last * d, d);
            ix->scale[r] = ix->scale[last];
            ix->vid[r] = ix->vid[last];
            ix->seq[r] = ix->seq[last];
            ix->t0[r] = ix->t0[last];
            ix->t1[r] = ix->t1[last];
            vid_entry *o = md_index_find_video(ix, ix->vid[r]);
            int p = o ? md_index_find_seq(ix, o, ix->seq[r]) : -1;
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

/* The first pass's work, shared by its threads: rows [0, total), or
 * list[0 .. total) when there is a list, handed out a chunk at a time. */
typedef struct scan_work {
    const scorer *sc;
    md_scan scan;
    const int *list;
    size_t total, chunk;
    size_t next; /* the first row not handed out yet (atomic) */
} scan_work;

/* One thread's results: its best m candidates in heap, its score sums. */
typedef struct scan_job {
    scan_work *w;
    cand *heap;
    int hn, m;
    double sum, sum2;
} scan_job;

#define SCAN_BLOCK 256

/* Scans rows (or list entries) [a, b) into J's heap and sums. */
static void scan_range(scan_job *j, size_t a, size_t b)
{
    const scan_work *w = j->w;
    const md_index *ix = w->sc->ix;
    const kernels *k = w->sc->k;
    const float *q = w->sc->q;
    const int dim = ix->dim;
    const size_t d = (size_t)dim;
    float buf[SCAN_BLOCK];
    for (size_t i = a; i < b; i += SCAN_BLOCK) {
        size_t cnt = b - i < SCAN_BLOCK ? b - i : SCAN_BLOCK;
        if (!w->list && w->scan == MD_SCAN_EXACT) {
            k->scan_f16(q, ix->h16 + i * d, cnt, dim, buf);
        } else if (!w->list) {
            k->scan_i8(q, ix->q8 + i * d, ix->scale + i, cnt, dim, buf);
        } else {
            for (size_t t = 0; t < cnt; t++) {
                size_t r = (size_t)w->list[i + t];
                if (w->scan == MD_SCAN_EXACT)
                    k->scan_f16(q, ix->h16 + r * d, 1, dim, buf + t);
                else
                    k->scan_i8(q, ix->q8 + r * d, ix->scale + r, 1, dim, buf + t);
            }
        }
        double sum = 0, sum2 = 0;
        for (size_t t = 0; t < cnt; t++) {
            float s = buf[t];
            sum += s;
            sum2 += (double)s * s;
            if (j->hn < j->m || s > j->heap[0].s)
                heap_push(j->heap, &j->hn, j->m, (cand){s, s, w->list ? w->list[i + t] : (int)(i + t)});
        }
        j->sum += sum;
        j->sum2 += sum2;
    }
}

/* Scans chunks until none are left. Chunks rather than one fixed range per
 * thread: on a busy machine a thread that loses its core leaves its work to
 * the others instead of holding up the whole query. */
static void *scan_run(void *arg)
{
    scan_job *j = arg;
    scan_work *w = j->w;
    for (;;) {
        size_t a = __atomic_fetch_add(&w->next, w->chunk, __ATOMIC_RELAXED);
        if (a >= w->total)
            break;
        scan_range(j, a, w->total - a < w->chunk ? w->total : a + w->chunk);
    }
    return NULL;
}

/* Candidates for a query: the first pass over all rows (or P->videos' rows)
 * on up to ix->threads threads, the best M of it re-scored exactly, sorted by
 * exact score into *OUT (the caller's), *N_OUT of them; *SUM, *SUM2 of the
 * first-pass scores of the *CNT rows scanned. Holds no lock itself. */
md_status md_index_first_pass(md_index *ix, const scorer *sc, const md_search_params *p, int m, cand **out,
                              int *n_out, double *sum, double *sum2, long long *cnt)
{
    md_status s = MD_OK;
    long long *ids = NULL;
    int *list = NULL;
    scan_job *jobs = NULL;
    cand *all = NULL;
    pthread_t *tids = NULL;
    char *started = NULL;
    int nt = 0;
    *out = NULL;
    *n_out = 0;
    *sum = *sum2 = 0;
    *cnt = 0;
    size_t total = ix->n;
    if (p->videos && p->n_videos > 0) {
        /* Only the filtered videos' rows are scanned: a filtered query costs
         * what those videos hold, not what the library holds. */
        if (!(ids = malloc((size_t)p->n_videos * sizeof *ids)))
            return MD_ERR_NOMEM;
        memcpy(ids, p->videos, (size_t)p->n_videos * sizeof *ids);
        qsort(ids, (size_t)p->n_videos, sizeof *ids, cmp_ll);
        total = 0;
        for (int i = 0; i < p->n_videos; i++) {
            const vid_entry *e = (i && ids[i] == ids[i - 1]) ? NULL : md_index_find_video(ix, ids[i]);
            total += e ? (size_t)e->n : 0;
        }
        if (total && !(list = malloc(total * sizeof *list))) {
            s = MD_ERR_NOMEM;
            goto out;
        }
        total = 0;
        for (int i = 0; i < p->n_videos; i++) {
            const vid_entry *e = (i && ids[i] == ids[i - 1]) ? NULL : md_index_find_video(ix, ids[i]);
            for (int r = 0; e && r < e->n; r++)
                list[total++] = e->rows[r];
        }
    }
    if (total == 0 || m <= 0)
        goto out;
    size_t max_nt = total * (size_t)ix->dim / MIN_VALUES_PER_THREAD;
    nt = __atomic_load_n(&ix->threads, __ATOMIC_RELAXED);
    nt = (size_t)nt > max_nt ? (int)max_nt : nt;
    nt = nt < 1 ? 1 : nt;
    jobs = calloc((size_t)nt, sizeof *jobs);
    all = malloc((size_t)nt * (size_t)m * sizeof *all);
    tids = calloc((size_t)nt, sizeof *tids);
    started = calloc((size_t)nt, 1);
    if (!jobs || !all || !tids || !started) {
        s = MD_ERR_NOMEM;
        goto out;
    }
    scan_work w = {.sc = sc, .scan = p->scan, .list = list, .total = total};
    w.chunk = CHUNK_VALUES / (size_t)ix->dim;
    w.chunk = w.chunk < SCAN_BLOCK ? SCAN_BLOCK : w.chunk;
    for (int t = 0; t < nt; t++)
        jobs[t] = (scan_job){.w = &w, .heap = all + (size_t)t * m, .m = m};
    /* Threads per query rather than a pool: starting one costs tens of
     * microseconds against milliseconds of scanning, and nothing outlives the
     * call. A thread that cannot start has its share run here. */
    for (int t = 1; t < nt; t++)
        started[t] = pthread_create(&tids[t], NULL, scan_run, &jobs[t]) == 0;
    scan_run(&jobs[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            scan_run(&jobs[t]);
    }
    int n = 0;
    for (int t = 0; t < nt; t++) {
        *sum += jobs[t].sum;
        *sum2 += jobs[t].sum2;
        memmove(all + n, jobs[t].heap, (size_t)jobs[t].hn * sizeof *all);
        n += jobs[t].hn;
    }
    *cnt = (long long)total;
    /* The best M over all threads (by first-pass score), then exact scores. */
    qsort(all, (size_t)n, sizeof *all, cmp_cand_desc);
    n = n < m ? n : m;
    if (p->scan != MD_SCAN_EXACT) {
        for (int i = 0; i < n; i++)
            all[i].s = row_score(sc, all[i].row);
        qsort(all, (size_t)n, sizeof *all, cmp_cand_desc);
    }
    *out = all;
    *n_out = n;
    all = NULL;
out:
    free(ids);
    free(list);
    free(jobs);
    free(all);
    free(tids);
    free(started);
    return s;
}

md_status md_index_top_segments(md_index *ix, const float *query, const md_search_params *p, md_segment_score *out,
                                int *n_out)
{
    md_status s = MD_OK;
    cand *cands = NULL;
    int nc = 0;
    *n_out = 0;
    if (p->k < 0 || p->offset < 0)
        return MD_ERR_INVALID;
    const scorer sc = {ix, md_search_kern(), query};
    pthread_rwlock_rdlock(&ix->lock);
    double sum, sum2;
    long long cnt;
    if (ix->n &&
        (s = md_index_first_pass(ix, &sc, p, candidates(p, ix->n), &cands, &nc, &sum, &sum2, &cnt)) == MD_OK) {
        for (int i = p->offset; i < nc && *n_out < p->k && cands[i].s >= p->min_score; i++) {
            int r = cands[i].row;
            out[(*n_out)++] = (md_segment_score){ix->vid[r], ix->seq[r], ix->t0[r], ix->t1[r], cands[i].s,
                                                 cands[i].approx};
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    free(cands);
    return s;
}
