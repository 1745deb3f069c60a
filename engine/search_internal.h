/* search_internal.h - what the three files of the segment index share; not a public header
 * (search.h is): only search.c, search_kernels.c and moments.c include it.
 *
 *   search.c          the index: storage, the video table, adding and removing rows, the first
 *                     pass (threads, candidates) and the top-k segments
 *   search_kernels.c  the first-pass scan kernels (plain C, AVX2, AVX-512) and their choice
 *   moments.c         hits grown into moments, z-scores, and grounding in one video
 *
 * It holds the index's layout, the kernel table, the candidate record and the few helpers of
 * the first pass that moments.c also calls. */
#ifndef MD_SEARCH_INTERNAL_H
#define MD_SEARCH_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "search.h"

typedef struct vid_entry {
    long long video_id; /* 0: empty slot, -1: removed */
    int *rows;          /* row indices, sorted by seq */
    int n, cap;
} vid_entry;

struct md_index {
    int dim;
    int threads; /* for one search's first pass */
    pthread_rwlock_t lock;
    uint16_t *h16; /* n x dim halves: the stored vectors */
    int8_t *q8;    /* n x dim: h16 quantised per row for the first pass */
    float *scale;  /* per row: h16 ~ q8 * scale */
    long long *vid, *t0, *t1;
    int *seq;
    size_t n, cap;
    vid_entry *tab; /* open addressing, linear probing, capacity a power of two */
    size_t tab_cap, tab_used;
    float *scratch; /* dim floats for md_index_add, under the write lock */
};

/* At least this many candidates are re-scored exactly (and grown into moments) per search. */
#define MIN_CANDIDATES 256

typedef struct kernels {
    const char *name;
    /* out[r] = scale[r] * sum_i q[i] * rows[r dim + i] for r < n */
    void (*scan_i8)(const float *q, const int8_t *rows, const float *scale, size_t n, int dim, float *out);
    /* out[r] = sum_i q[i] * half(rows[r dim + i]) for r < n. Each row is summed
     * the same way alone or in a block, so a segment's exact score does not
     * depend on how it was reached. */
    void (*scan_f16)(const float *q, const uint16_t *rows, size_t n, int dim, float *out);
    /* Conversions, rounding to nearest even like md_f32_to_f16 (finite input only). */
    void (*to_f16)(const float *src, uint16_t *dst, int n);
    void (*from_f16)(const uint16_t *src, float *dst, int n);
} kernels;

/* The kernels in use: the widest the CPU has, chosen at the first call, or the one
 * md_search_set_kernel chose (search_kernels.c). */
const kernels *md_search_kern(void);

typedef struct cand {
    float s;      /* first-pass score during the scan; exact once re-scored */
    float approx; /* first-pass score */
    int row;
} cand;

static inline int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Exact scores: the query against a row's halves. */
typedef struct scorer {
    const md_index *ix;
    const kernels *k; /* taken once per query: md_search_set_kernel may change the global */
    const float *q;
} scorer;

static inline float row_score(const scorer *sc, int row)
{
    float s;
    sc->k->scan_f16(sc->q, sc->ix->h16 + (size_t)row * sc->ix->dim, 1, sc->ix->dim, &s);
    return s;
}

/* Candidates to re-score and grow: max(256, 4 (offset + k)), at most N. */
static inline int candidates(const md_search_params *p, size_t n)
{
    long long m = 4LL * ((long long)p->offset + p->k);
    m = m < MIN_CANDIDATES ? MIN_CANDIDATES : m;
    return (int)(m > (long long)n ? (long long)n : m);
}

/* The entry of video ID in IX's video table, or NULL (search.c). Caller holds the lock. */
vid_entry *md_index_find_video(md_index *ix, long long id);
/* Position of SEQ in E's rows, or the insertion point as -(pos + 1) (search.c). */
int md_index_find_seq(const md_index *ix, const vid_entry *e, int seq);
/* The first pass of a query (search.c, where its contract is). Caller holds the read lock. */
md_status md_index_first_pass(md_index *ix, const scorer *sc, const md_search_params *p, int m, cand **out,
                              int *n_out, double *sum, double *sum2, long long *cnt);

#endif
