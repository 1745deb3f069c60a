/* jobs.c - the worker threads and the life cycle of a job: claim, run (probe, then decode ->
 * pipeline -> store), progress, finish, requeue on shutdown.
 *
 * Each worker has its own store connection. A job's windows are committed through the
 * pipeline's sink (below) under the library's db_mu, which orders them against a deletion of
 * the video: a deleted video's job finds its row gone, stops, and never adds to the index again.
 * Shutdown: every long loop asks md_library_stopping(); an interrupted job goes back to the queue
 * with its progress, and its attempt does not count.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../video/video.h"
#include "library_internal.h"
#include "pipeline.h"

#define PROGRESS_COMMIT_S 0.25

typedef struct job_ctx {
    md_library *lib;
    md_store *db; /* the worker's connection */
    long long job_id, video_id;
    double last_commit;
    int deleted; /* the job row vanished: its video was deleted */
} job_ctx;

/* Test hook (setting debug_job_delay_ms): a pause that ends early at shutdown. Returns 1 when
 * the library is stopping. */
static int debug_pause(md_library *lib)
{
    for (int waited = 0; waited < lib->p.debug_job_delay_ms; waited += 20) {
        if (md_library_stopping(lib))
            return 1;
        usleep(20000);
    }
    return md_library_stopping(lib);
}

/* Probe progress, in bytes. With a model the probe is a short first step and progress is counted
 * in frames by the pipeline instead. */
static int probe_progress(void *ctx, long long done, long long total)
{
    job_ctx *c = ctx;
    if (md_library_stopping(c->lib))
        return 1;
    if (c->lib->clip)
        return 0;
    double now = md_mono_s();
    if (now - c->last_commit >= PROGRESS_COMMIT_S || done == total) {
        c->last_commit = now;
        int gone = 0;
        if (md_store_job_progress(c->db, c->job_id, done, total, NULL, &gone) == MD_OK && gone) {
            c->deleted = 1;
            return 1;
        }
    }
    return 0;
}

static int decode_interrupt(void *ctx)
{
    job_ctx *c = ctx;
    return md_library_stopping(c->lib);
}

/* ---- the pipeline's sink: the store and the index -------------------------------------------- */

static md_status sink_resume(void *ctx, void **ckpt, size_t *len, long long *stored, char *err, size_t errlen)
{
    job_ctx *c = ctx;
    md_status s = md_store_job_checkpoint(c->db, c->job_id, c->lib->model_id, ckpt, len, stored);
    return s == MD_OK ? MD_OK : md_errf(err, errlen, s, "%s", md_store_error(c->db));
}

static md_status sink_clear(void *ctx, char *err, size_t errlen)
{
    job_ctx *c = ctx;
    pthread_mutex_lock(&c->lib->db_mu);
    md_status s = md_store_segments_clear(c->db, c->video_id, c->lib->model_id);
    if (s == MD_OK)
        md_index_remove_video(c->lib->index, c->video_id);
    else
        md_errf(err, errlen, s, "%s", md_store_error(c->db));
    pthread_mutex_unlock(&c->lib->db_mu);
    return s;
}

static void sink_started(void *ctx, long long done, long long total)
{
    job_ctx *c = ctx;
    if (md_store_job_progress(c->db, c->job_id, done, total, "frames", NULL) != MD_OK)
        md_warn("job %lld: %s", c->job_id, md_store_error(c->db));
}

/* Stores the window and adds its segments to the index, both under db_mu (see the top). */
static md_status sink_commit(void *ctx, const md_segment_rec *segs, int n, int dim, long long frames_done,
                             const void *ckpt, size_t ckpt_len, char *err, size_t errlen)
{
    job_ctx *c = ctx;
    md_library *lib = c->lib;
    md_window_rec w = {.job_id = c->job_id,
                       .video_id = c->video_id,
                       .model_id = lib->model_id,
                       .progress_done = frames_done,
                       .checkpoint = ckpt,
                       .checkpoint_len = ckpt_len,
                       .segs = segs,
                       .n_segs = n,
                       .dim = dim};
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_window_commit(c->db, &w);
    if (s == MD_OK)
        for (int j = 0; j < n; j++)
            md_index_add_f16(lib->index, c->video_id, segs[j].seq, segs[j].start_ms, segs[j].end_ms, segs[j].emb);
    else
        md_errf(err, errlen, s, "%s", md_store_error(c->db));
    pthread_mutex_unlock(&lib->db_mu);
    if (s == MD_OK)
        debug_pause(lib); /* lets tests stop the daemon between windows */
    return s;
}

/* ---- running a job ------------------------------------------------------------------------- */

/* Decodes, samples and embeds the whole video into stored segments (pipeline.h); resumes after
 * the windows an earlier run committed. */
static md_status index_frames(job_ctx *c, const char *path, const md_video_info *vi, long long *n_segments, char *err,
                              size_t errlen)
{
    md_library *lib = c->lib;
    md_video_decoder *dec = NULL;
    md_pipeline *pl = NULL;
    md_video_params vp = md_video_default_params();
    vp.fps = lib->p.sample_fps;
    vp.keyframes_only = lib->p.keyframes_only;
    vp.size = md_clip_image_size(lib->clip);
    for (int i = 0; i < 3; i++) {
        vp.mean[i] = lib->p.mean[i];
        vp.std[i] = lib->p.std[i];
    }
    vp.interrupt = decode_interrupt;
    vp.interrupt_ctx = c;
    md_status s = md_video_decoder_open(path, &vp, vi, &dec, err, errlen);
    if (s != MD_OK)
        goto out;
    md_pipeline_params pp = {.clip = lib->clip,
                             .temporal = lib->temporal,
                             .segment_frames = lib->p.segment_frames,
                             .window_frames = lib->p.window_frames,
                             .sample_interval_ms = 1000.0 / vp.fps,
                             .total_frames = md_video_decoder_expected(dec),
                             .job_id = c->job_id,
                             .sink = {.ctx = c,
                                      .resume = sink_resume,
                                      .clear = sink_clear,
                                      .started = sink_started,
                                      .commit = sink_commit}};
    if ((s = md_pipeline_begin(&pp, &pl, err, errlen)) != MD_OK)
        goto out;
    md_video_batch b;
    for (;;) {
        if ((s = md_video_decoder_next(dec, &b)) != MD_OK) {
            snprintf(err, errlen, "%s", md_video_decoder_error(dec));
            goto out;
        }
        if (b.n == 0)
            break;
        if ((s = md_pipeline_push(pl, &b, err, errlen)) != MD_OK)
            goto out;
    }
    if ((s = md_pipeline_finish(pl, err, errlen)) != MD_OK)
        goto out;
    md_video_decode_stats ds;
    md_video_decoder_stats(dec, &ds);
    if (ds.skipped_packets || ds.corrupt_frames) {
        md_warn("job %lld: %lld damaged packets skipped, %lld frames with concealed errors", c->job_id,
                ds.skipped_packets, ds.corrupt_frames);
        if (md_store_video_add_damage(c->db, c->video_id, ds.skipped_packets + ds.corrupt_packets) != MD_OK)
            md_warn("job %lld: %s", c->job_id, md_store_error(c->db));
    }
    *n_segments = md_pipeline_segments(pl);
    if (md_store_video_set_tokens(c->db, c->video_id, md_pipeline_frames(pl), *n_segments,
                                  1 + md_clip_n_patches(lib->clip), md_clip_dim(lib->clip), lib->temporal_label) != MD_OK)
        md_warn("job %lld: %s", c->job_id, md_store_error(c->db));
out:
    if (s == MD_ERR_CANCELLED && !md_library_stopping(lib))
        c->deleted = 1;
    md_pipeline_free(pl);
    md_video_decoder_close(dec);
    return s;
}

static void requeue(job_ctx *c)
{
    if (md_store_job_requeue(c->db, c->job_id) != MD_OK)
        md_warn("job %lld: %s", c->job_id, md_store_error(c->db));
    md_info("job %lld: interrupted by shutdown, back in the queue", c->job_id);
}

static void run_job(md_library *lib, md_store *db, const md_job_claim *jc)
{
    job_ctx c = {.lib = lib, .db = db, .job_id = jc->job_id, .video_id = jc->video_id};
    md_info("job %lld: indexing video %lld (%s)", jc->job_id, jc->video_id, jc->path);
    double t0 = md_mono_s();
    if (debug_pause(lib)) {
        requeue(&c);
        return;
    }
    md_video_info vi;
    char err[512] = "";
    long long n_segments = 0;
    md_status s = md_video_probe(jc->path, &vi, probe_progress, &c, err, sizeof err);
    if (s == MD_OK) {
        md_probe_rec pr = {.duration_ms = vi.duration_ms,
                           .width = vi.width,
                           .height = vi.height,
                           .fps = vi.fps,
                           .rotation = vi.rotation,
                           .n_streams = vi.n_streams,
                           .n_packets = vi.n_video_packets,
                           .n_corrupt = vi.n_corrupt_packets};
        snprintf(pr.codec, sizeof pr.codec, "%s", vi.codec);
        snprintf(pr.format, sizeof pr.format, "%s", vi.format);
        if ((s = md_store_video_set_probe(db, jc->video_id, &pr)) != MD_OK) {
            md_error("job %lld: cannot save the probe: %s", jc->job_id, md_store_error(db));
            snprintf(err, sizeof err, "could not save the results to the database");
        }
    }
    if (s == MD_OK && lib->clip)
        s = index_frames(&c, jc->path, &vi, &n_segments, err, sizeof err);
    if (s == MD_OK) {
        if (md_store_job_finish(db, jc->job_id, MD_JOB_DONE, NULL) != MD_OK)
            md_error("job %lld: cannot record state done: %s", jc->job_id, md_store_error(db));
        md_info("job %lld: done in %.2f s (%s %dx%d, %.3f s, %lld packets, %lld corrupt; %lld segments)", jc->job_id,
                md_mono_s() - t0, vi.codec, vi.width, vi.height, vi.duration_ms / 1000.0, vi.n_video_packets,
                vi.n_corrupt_packets, n_segments);
    } else if (s == MD_ERR_CANCELLED && c.deleted) {
        md_info("job %lld: video was deleted, job dropped", jc->job_id);
    } else if (s == MD_ERR_CANCELLED) {
        requeue(&c);
    } else {
        char msg[MD_STORE_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", err[0] ? err : md_status_str(s));
        if (s == MD_ERR_NOT_FOUND)
            snprintf(msg, sizeof msg, "video file is missing: %.600s", jc->path);
        md_warn("job %lld: failed: %s", jc->job_id, msg);
        if (md_store_job_finish(db, jc->job_id, MD_JOB_FAILED, msg) != MD_OK)
            md_error("job %lld: cannot record state failed: %s", jc->job_id, md_store_error(db));
    }
}

void *md_worker_main(void *arg)
{
    md_library *lib = arg;
    md_store *db = NULL;
    char err[1024];
    if (md_store_open(lib->db_path, &db, err, sizeof err) != MD_OK) {
        md_error("worker: %s", err);
        return NULL;
    }
    while (!md_library_stopping(lib)) {
        md_job_claim jc;
        md_status s = md_store_job_claim(db, &jc);
        if (s != MD_OK)
            md_warn("worker: cannot claim a job: %s", md_store_error(db));
        if (s == MD_OK && jc.job_id) {
            run_job(lib, db, &jc);
            continue;
        }
        /* Nothing to do: sleep until woken by a new job, or poll again after a while. */
        pthread_mutex_lock(&lib->q_mu);
        if (!lib->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 2;
            pthread_cond_timedwait(&lib->q_cv, &lib->q_mu, &ts);
        }
        pthread_mutex_unlock(&lib->q_mu);
    }
    md_store_close(db);
    return NULL;
}
