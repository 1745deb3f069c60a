/* pipeline.h - the indexing pipeline behind a job: sampled, preprocessed frames in; CLIP image
 * tokens; the temporal encoder; one embedding per segment of k frames out, one window at a time,
 * handed to a sink (the job, engine/jobs.c) that stores them.
 *
 *   md_pipeline_params pp = {.clip = ..., .temporal = ..., .sink = {...}, ...};
 *   md_pipeline *p; md_pipeline_begin(&pp, &p, err, n);  // asks the sink where to resume
 *   while (decoder gives batch) md_pipeline_push(p, batch, ...);  // frames before the resume point are skipped
 *   md_pipeline_finish(p, ...);                                   // the last partial window
 *   md_pipeline_free(p);
 *
 * The pipeline knows nothing of storage, locks or the library: what it needs comes in through
 * the parameters, and what it produces leaves through the sink. Each window's segments go to
 * sink.commit together with the temporal stream's checkpoint and the frames done, so a sink that
 * stores them in one transaction makes a restart resume after the last committed window without
 * duplicate or missing segments. One pipeline per job, used by one thread.
 */
#ifndef MD_PIPELINE_H
#define MD_PIPELINE_H

#include "../video/video.h"
#include "clip.h"
#include "store.h"
#include "temporal.h"

typedef struct md_pipeline md_pipeline;

/* Where the pipeline's output goes; every function gets CTX. */
typedef struct md_pipeline_sink {
    void *ctx;
    /* The checkpoint saved by an earlier run (*CKPT malloc'd, NULL when none) and how many
     * segments of this video are stored now. */
    md_status (*resume)(void *ctx, void **ckpt, size_t *len, long long *stored, char *err, size_t errlen);
    /* Drops this video's stored segments: indexing starts over at frame 0. */
    md_status (*clear)(void *ctx, char *err, size_t errlen);
    /* Once, when the resume point is known: DONE frames of TOTAL (for progress). */
    void (*started)(void *ctx, long long done, long long total);
    /* One window: N segments of DIM halves, the stream's checkpoint after them, and FRAMES_DONE (the
     * first frame not yet committed). MD_ERR_CANCELLED stops the job (its video was deleted). */
    md_status (*commit)(void *ctx, const md_segment_rec *segs, int n, int dim, long long frames_done,
                        const void *ckpt, size_t ckpt_len, char *err, size_t errlen);
} md_pipeline_sink;

typedef struct md_pipeline_params {
    md_clip *clip;             /* borrowed: thread-safe (clip.h) */
    md_temporal *temporal;     /* borrowed */
    int segment_frames;        /* k */
    int window_frames;         /* T, a multiple of k */
    double sample_interval_ms; /* between sampled frames: ends the last segment */
    long long total_frames;    /* the decoder's expected count, for progress; -1 unknown */
    long long job_id;          /* for log lines */
    md_pipeline_sink sink;
} md_pipeline_params;

md_status md_pipeline_begin(const md_pipeline_params *pp, md_pipeline **out, char *err, size_t errlen);
long long md_pipeline_resume_frame(const md_pipeline *p);
/* MD_ERR_CANCELLED when the sink says the job is gone. */
md_status md_pipeline_push(md_pipeline *p, const md_video_batch *b, char *err, size_t errlen);
md_status md_pipeline_finish(md_pipeline *p, char *err, size_t errlen);
/* Segments stored for the video so far, and frames embedded by this run. */
long long md_pipeline_segments(const md_pipeline *p);
long long md_pipeline_frames_embedded(const md_pipeline *p);
/* Frames of the video handed to the temporal encoder (all runs). */
long long md_pipeline_frames(const md_pipeline *p);
/* Seconds this run spent in the CLIP image tower and in the temporal stream. */
void md_pipeline_times(const md_pipeline *p, double *embed_s, double *temporal_s);
void md_pipeline_free(md_pipeline *p);

#endif
