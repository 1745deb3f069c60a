/* search.h - the in-memory segment index: retrieval across the library and
 * grounding in one video.
 *
 * One md_index holds every segment embedding of ONE model (queries never mix
 * embedding spaces: the library keeps one index per model and loads it from
 * SQLite at start). Rows are L2-normalised, dim values each, kept twice:
 *
 *   - as IEEE halves (2 bytes a value): the stored vector. SQLite keeps fp16
 *     embeddings, so this loses nothing against the database, and an index
 *     answers the same before and after a restart. Every score a search or
 *     grounding returns is computed exactly (float accumulation) from these.
 *   - as int8 with one float scale per row (1 byte a value): the first pass.
 *
 * A query is memory-bound: it streams every row once. The first pass scans the
 * int8 rows (a quarter of float32's traffic; 512 MB for 1M x 512) with SIMD
 * (AVX-512, or AVX2 + FMA, when the CPU has them, chosen at run time; plain C
 * otherwise) on md_index_set_threads threads taking chunks of rows, keeps the
 * best max(256, 4 (offset + k)) candidates, and re-scores them exactly from
 * the halves; moments then grow over neighbours scored exactly too.
 * MD_SCAN_EXACT scans the halves instead (the reference; twice the traffic).
 * Memory: 3 dim + 32 bytes a segment (1.57 GB per million at dim 512).
 * BENCHMARKS.md ("Search") has the latencies and the measured accuracy cost:
 * in its runs every true top 10 was among the re-scored candidates.
 *
 *   md_index *ix; md_index_new(512, &ix);
 *   md_index_add(ix, video_id, seq, start_ms, end_ms, emb);     // as segments are committed
 *   md_search_params sp = md_search_default_params();
 *   md_search_result r; md_index_search(ix, query_emb, &sp, &r);
 *   for (int i = 0; i < r.n; i++) use(r.moments[i]);
 *   md_search_result_free(&r);
 *
 * Scores. Every segment gets its raw cosine s with the query. Over all scored
 * segments we take the mean m and standard deviation d (with MD_SCAN_INT8 from
 * the first-pass scores: against the exact scan m moved by under 1e-5, d by
 * under 2e-4 relative, z by about 1e-3); the normalised score of a segment is
 * z = (s - m) / d. A result is "confident" when the best z reaches
 * max(3, sqrt(2 ln n)) - the size the largest of n pure-noise scores is
 * expected to have - i.e. when something stands out of the crowd rather than
 * merely being the largest of many.
 *
 * Moments. Starting from the best hit, a moment grows over adjacent segments
 * of the same video while their score stays above m + (peak - m) / 2 and does
 * not climb again by more than a quarter of that margin (a second peak starts
 * its own moment, so two moments separated by a dip are not chain-merged).
 *
 * Thread-safety: all functions may be called concurrently; searches share a
 * read lock, add/remove take the write lock.
 */
#ifndef MD_SEARCH_H
#define MD_SEARCH_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

typedef struct md_index md_index;

md_status md_index_new(int dim, md_index **out);
void md_index_free(md_index *ix); /* NULL is a no-op */
int md_index_dim(const md_index *ix);
long long md_index_count(md_index *ix);
/* Bytes of memory the index holds (embeddings and bookkeeping). */
size_t md_index_bytes(md_index *ix);
/* Threads one search scans with (N <= 0: the online CPUs, at most 16); small
 * indexes use fewer (a thread gets at least 4M values). Returns the number now
 * in effect. Safe at any time. */
int md_index_set_threads(md_index *ix, int n);
/* The kernel set in use: "avx512", "avx2" or "scalar". */
const char *md_search_kernel(void);
/* Forces the kernels ("avx512", "avx2", "scalar") for tests and benchmarks; process-wide.
 * MD_ERR_UNSUPPORTED when this CPU lacks it. Searches running meanwhile may
 * mix kernels (scores then differ in the last bits, nothing worse). */
md_status md_search_set_kernel(const char *name);

/* Adds segment SEQ (0, 1, ... in time order) of VIDEO_ID, or replaces it when
 * that (video, seq) exists. EMB: dim floats, copied and rounded to halves
 * (nearest even). MD_ERR_INVALID for a value that is not finite or beyond the
 * half range (|v| > 65504). */
md_status md_index_add(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                       const float *emb);
/* The same from dim IEEE halves (as SQLite stores them, host order), kept
 * bit for bit. MD_ERR_INVALID for Inf or NaN. */
md_status md_index_add_f16(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                           const uint16_t *emb);
/* Removes every segment of VIDEO_ID (no-op when it has none). */
void md_index_remove_video(md_index *ix, long long video_id);
/* Segments held for VIDEO_ID. */
int md_index_video_segments(md_index *ix, long long video_id);
/* Copies the embedding of VIDEO_ID's segment that contains time T_MS (the last
 * one starting at or before T_MS) into EMB (dim floats: the stored halves),
 * with its times. MD_ERR_NOT_FOUND when the video has no segments or T_MS is
 * past its end. */
md_status md_index_lookup(md_index *ix, long long video_id, long long t_ms, float *emb, long long *start_ms,
                          long long *end_ms);

typedef struct md_moment {
    long long video_id;
    long long start_ms, end_ms;
    int first_seq, last_seq, peak_seq;
    float score; /* raw cosine at the peak */
    float z;     /* normalised score at the peak */
    int seg0, n_segs; /* search only: its segments are result.segs[seg0 .. seg0 + n_segs - 1] */
} md_moment;

/* One segment behind a moment. */
typedef struct md_segment_hit {
    int seq;
    long long start_ms, end_ms;
    float score;
} md_segment_hit;

/* How a search finds its candidates (see the top of this file). */
typedef enum md_scan {
    MD_SCAN_INT8 = 0, /* default: int8 first pass, candidates and moments re-scored exactly */
    MD_SCAN_EXACT     /* every segment scored exactly from the halves */
} md_scan;

typedef struct md_search_params {
    int k;                    /* moments to return (after offset) */
    int offset;               /* pagination: moments to skip */
    float min_score;          /* drop moments whose peak cosine is below (default -1: none) */
    const long long *videos;  /* restrict to these videos (NULL: all); only their rows are scanned */
    int n_videos;
    md_scan scan;             /* default MD_SCAN_INT8 */
} md_search_params;

md_search_params md_search_default_params(void);

typedef struct md_search_result {
    md_moment *moments; /* n of them, best first */
    int n;
    md_segment_hit *segs; /* the returned moments' segments, in time order per moment */
    int total;          /* moments found before pagination (a lower bound: only the top hits grow moments) */
    long long scored;   /* segments scored */
    float mean, std;    /* of all scored segments' cosines (first-pass scores with MD_SCAN_INT8) */
    float z_needed;     /* max(3, sqrt(2 ln scored)) */
    int confident;      /* the best moment's z >= z_needed */
} md_search_result;

md_status md_index_search(md_index *ix, const float *query, const md_search_params *p, md_search_result *out);
void md_search_result_free(md_search_result *r);

/* One segment of a ranking without moments. */
typedef struct md_segment_score {
    long long video_id;
    int seq;
    long long start_ms, end_ms;
    float score;  /* exact cosine with the stored vector */
    float approx; /* the first-pass score that selected it (== score with MD_SCAN_EXACT) */
} md_segment_score;

/* The best segments by exact score, not grouped into moments: ranks
 * [offset, offset + k) honouring videos, min_score and scan, written to OUT
 * (room for p->k), their number to *N_OUT. For raw hits and for measuring the
 * first pass's recall. */
md_status md_index_top_segments(md_index *ix, const float *query, const md_search_params *p, md_segment_score *out,
                                int *n_out);

typedef struct md_ground_params {
    int top_n;          /* moments to return */
    float sigma;        /* Gaussian smoothing of the score curve, in segments (0: none) */
    float nms_iou;      /* suppress a moment overlapping a better one by more than this (temporal IoU) */
    int with_curve;     /* also return the curve */
} md_ground_params;

md_ground_params md_ground_default_params(void);

typedef struct md_ground_result {
    md_moment *moments; /* n of them, best first */
    int n;
    int n_segments;     /* the video's segments (curve length) */
    float *raw, *smooth;               /* with_curve: n_segments scores each */
    long long *start_ms, *end_ms;      /* with_curve: segment times */
    float threshold;    /* on the smoothed curve */
    float null_mean, null_std; /* reference distribution (a sample of the whole index) */
    float z_needed;
    int confident;
    long long precision_ms; /* boundary precision: the median segment length */
} md_ground_result;

/* MD_ERR_NOT_FOUND when VIDEO_ID has no segments in the index. */
md_status md_index_ground(md_index *ix, long long video_id, const float *query, const md_ground_params *p,
                          md_ground_result *out);
void md_ground_result_free(md_ground_result *r);

#endif
