/* pipeline.h - the indexing pipeline behind a job: sampled, preprocessed
 * frames in; CLIP image embeddings; segments of k frames; segment embeddings
 * stored in SQLite (fp16) and added to the search index, one window at a time.
 *
 *   md_pipeline *p; md_pipeline_begin(lib, db, video_id, job_id, total_frames, &p, err, n);
 *   long long skip = md_pipeline_resume_frame(p);  // samples already committed by an earlier run
 *   while (decoder gives batch) md_pipeline_push(p, batch, ...);  // frames < skip are ignored
 *   md_pipeline_finish(p, ...);                      // last partial window
 *   md_pipeline_free(p);
 *
 * Each window's segments are committed in one transaction together with the
 * temporal stream's checkpoint and the job's progress, so what is committed
 * is searchable at once and a restart resumes after the last committed window
 * without duplicate or missing segments. One pipeline per job; it uses the
 * caller's connection DB.
 */
#ifndef MD_PIPELINE_H
#define MD_PIPELINE_H

#include "../video/video.h"
#include "library_internal.h"

typedef struct md_pipeline md_pipeline;

/* TOTAL_FRAMES: the decoder's expected count (for progress; -1 unknown). */
md_status md_pipeline_begin(md_library *lib, md_store *db, long long video_id, long long job_id,
                            long long total_frames, double sample_interval_ms, md_pipeline **out, char *err,
                            size_t errlen);
long long md_pipeline_resume_frame(const md_pipeline *p);
/* MD_ERR_CANCELLED when the job's row is gone (video deleted). */
md_status md_pipeline_push(md_pipeline *p, const md_video_batch *b, char *err, size_t errlen);
/* END_MS: the video's duration (-1 unknown), for the last segment's end. */
md_status md_pipeline_finish(md_pipeline *p, long long end_ms, char *err, size_t errlen);
/* Segments stored for the video so far, and frames embedded by this run. */
long long md_pipeline_segments(const md_pipeline *p);
long long md_pipeline_frames_embedded(const md_pipeline *p);
/* Frames of the video handed to the temporal encoder (all runs). */
long long md_pipeline_frames(const md_pipeline *p);
void md_pipeline_free(md_pipeline *p);

#endif
