/* search.h - the in-memory segment index: retrieval across the library and
 * grounding in one video.
 *
 * One md_index holds every segment embedding of ONE model (queries never mix
 * embedding spaces: the library keeps one index per model and loads it from
 * SQLite at start). Rows are float32, L2-normalised, dim values each; scoring
 * is one matrix-vector product (OpenBLAS sgemv) over all rows, so a query
 * costs one pass over rows x dim x 4 bytes of memory.
 *
 *   md_index *ix; md_index_new(512, &ix);
 *   md_index_add(ix, video_id, seq, start_ms, end_ms, emb);     // as segments are committed
 *   md_search_params sp = md_search_default_params();
 *   md_search_result r; md_index_search(ix, query_emb, &sp, &r);
 *   for (int i = 0; i < r.n; i++) use(r.moments[i]);
 *   md_search_result_free(&r);
 *
 * Scores. Every segment gets its raw cosine s with the query. Over all scored
 * segments we take the mean m and standard deviation d; the normalised score of
 * a segment is z = (s - m) / d. A result is "confident" when the best z reaches
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

#include "status.h"

typedef struct md_index md_index;

md_status md_index_new(int dim, md_index **out);
void md_index_free(md_index *ix); /* NULL is a no-op */
int md_index_dim(const md_index *ix);
long long md_index_count(md_index *ix);
/* Bytes of memory the index holds (embeddings and bookkeeping). */
size_t md_index_bytes(md_index *ix);

/* Adds segment SEQ (0, 1, ... in time order) of VIDEO_ID, or replaces it when
 * that (video, seq) exists. EMB: dim floats, copied. */
md_status md_index_add(md_index *ix, long long video_id, int seq, long long start_ms, long long end_ms,
                       const float *emb);
/* Removes every segment of VIDEO_ID (no-op when it has none). */
void md_index_remove_video(md_index *ix, long long video_id);
/* Segments held for VIDEO_ID. */
int md_index_video_segments(md_index *ix, long long video_id);
/* Copies the embedding of VIDEO_ID's segment that contains time T_MS (the last
 * one starting at or before T_MS) into EMB, with its times. MD_ERR_NOT_FOUND
 * when the video has no segments or T_MS is past its end. */
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

typedef struct md_search_params {
    int k;                    /* moments to return (after offset) */
    int offset;               /* pagination: moments to skip */
    float min_score;          /* drop moments whose peak cosine is below (default -1: none) */
    const long long *videos;  /* restrict to these videos (NULL: all) */
    int n_videos;
} md_search_params;

md_search_params md_search_default_params(void);

typedef struct md_search_result {
    md_moment *moments; /* n of them, best first */
    int n;
    md_segment_hit *segs; /* the returned moments' segments, in time order per moment */
    int total;          /* moments found before pagination (a lower bound: only the top hits grow moments) */
    long long scored;   /* segments scored */
    float mean, std;    /* of all scored segments' cosines */
    float z_needed;     /* max(3, sqrt(2 ln scored)) */
    int confident;      /* the best moment's z >= z_needed */
} md_search_result;

md_status md_index_search(md_index *ix, const float *query, const md_search_params *p, md_search_result *out);
void md_search_result_free(md_search_result *r);

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
