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
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../video/isolate.h"
#include "../video/video.h"
#include "files.h"
#include "library_internal.h"
#include "pipeline.h"

#define PROGRESS_COMMIT_S 0.25

typedef struct job_ctx {
    md_library *lib;
    md_store *db; /* the worker's connection */
    long long job_id, video_id;
    double last_commit;
    int deleted;        /* the job row vanished: its video was deleted */
    int storage_failed; /* a write to the store failed (disk full, database error) */
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
    double t0 = md_mono_s();
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_window_commit(c->db, &w);
    if (s == MD_OK)
        for (int j = 0; j < n; j++)
            md_index_add_f16(lib->index, c->video_id, segs[j].seq, segs[j].start_ms, segs[j].end_ms, segs[j].emb);
    else
        md_errf(err, errlen, s, "%s", md_store_error(c->db));
    pthread_mutex_unlock(&lib->db_mu);
    md_library_count_stage(lib, MD_STAGE_STORE, md_mono_s() - t0);
    if (s != MD_OK && s != MD_ERR_CANCELLED)
        c->storage_failed = 1;
    if (s == MD_OK)
        debug_pause(lib); /* lets tests stop the daemon between windows */
    return s;
}

/* ---- running a job ------------------------------------------------------------------------- */

/* How a job reads its file: in a sandboxed worker process (video/isolate.h, the default) or in
 * this process (setting decode_in_process, or a trusted archive with allow_nested_media, whose
 * files may open others: a worker can open only its own). One of the two decoders is set. */
typedef struct job_decoder {
    md_video_sandbox sb;
    md_video_open_opts opts;
    int in_process;
    md_video_decoder *local;
    md_video_iso *iso;
} job_decoder;

static void decoder_setup(job_decoder *d, md_library *lib, const md_job_claim *jc)
{
    memset(d, 0, sizeof *d);
    d->sb = md_video_sandbox_default();
    if (lib->p.decode_mem_limit)
        d->sb.mem_limit_bytes = lib->p.decode_mem_limit > 0 ? lib->p.decode_mem_limit : 0; /* < 0: none */
    d->opts.allow_nested = lib->p.allow_nested_media && jc->source == MD_SOURCE_PATH;
    d->in_process = lib->p.decode_in_process || d->opts.allow_nested;
}

static md_status decoder_probe(job_decoder *d, const char *path, md_video_info *vi, job_ctx *c, char *err,
                               size_t errlen)
{
    if (d->in_process)
        return md_video_probe_ex(path, &d->opts, vi, probe_progress, c, err, errlen);
    return md_video_iso_probe_ex(&d->sb, path, &d->opts, vi, probe_progress, c, err, errlen);
}

static md_status decoder_open(job_decoder *d, const char *path, md_video_params *vp, const md_video_info *vi,
                              char *err, size_t errlen)
{
    vp->open = d->opts;
    /* A worker's CPU-time limit covers its whole life: a long video may take its time, a short
     * one may not spin for an hour. */
    /* Measured: 0.3 (1080p30 H.264) to 0.73 (4K60 HEVC 10-bit) CPU-seconds per second of video:
     * three times the duration leaves room, ten minutes at least. */
    long long dur_s = vi->duration_ms > 0 ? vi->duration_ms / 1000 : 0;
    d->sb.cpu_limit_s = (int)(dur_s * 3 > 600 ? (dur_s * 3 < 86400 ? dur_s * 3 : 86400) : 600);
    if (d->in_process)
        return md_video_decoder_open(path, vp, vi, &d->local, err, errlen);
    return md_video_iso_decoder_open(&d->sb, path, vp, vi, &d->iso, err, errlen);
}

static md_status decoder_next(job_decoder *d, md_video_batch *b)
{
    return d->local ? md_video_decoder_next(d->local, b) : md_video_iso_next(d->iso, b);
}

static long long decoder_expected(const job_decoder *d)
{
    return d->local ? md_video_decoder_expected(d->local) : md_video_iso_expected(d->iso);
}

static const char *decoder_error(const job_decoder *d)
{
    return d->local ? md_video_decoder_error(d->local) : md_video_iso_error(d->iso);
}

static void decoder_stats(const job_decoder *d, md_video_decode_stats *st)
{
    if (d->local)
        md_video_decoder_stats(d->local, st);
    else
        md_video_iso_stats(d->iso, st);
}

static void decoder_close(job_decoder *d)
{
    md_video_decoder_close(d->local);
    md_video_iso_close(d->iso);
    d->local = NULL;
    d->iso = NULL;
}

/* Decodes, samples and embeds the whole video into stored segments (pipeline.h); resumes after
 * the windows an earlier run committed. */
static md_status index_frames(job_ctx *c, job_decoder *dec, const char *path, const md_video_info *vi,
                              long long *n_segments, char *err, size_t errlen)
{
    md_library *lib = c->lib;
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
    md_status s = decoder_open(dec, path, &vp, vi, err, errlen);
    if (s != MD_OK)
        goto out;
    md_pipeline_params pp = {.clip = lib->clip,
                             .temporal = lib->temporal,
                             .segment_frames = lib->p.segment_frames,
                             .window_frames = lib->p.window_frames,
                             .sample_interval_ms = 1000.0 / vp.fps,
                             .total_frames = decoder_expected(dec),
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
        double t0 = md_mono_s();
        s = decoder_next(dec, &b);
        md_library_count_stage(lib, MD_STAGE_DECODE, md_mono_s() - t0);
        if (s != MD_OK) {
            snprintf(err, errlen, "%s", decoder_error(dec));
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
    decoder_stats(dec, &ds);
    if (ds.skipped_packets || ds.corrupt_frames) {
        md_warn("job %lld: %lld damaged packets skipped, %lld frames with concealed errors", c->job_id,
                ds.skipped_packets, ds.corrupt_frames);
        if (md_store_video_add_damage(c->db, c->video_id, ds.skipped_packets + ds.corrupt_packets) != MD_OK)
            md_warn("job %lld: %s", c->job_id, md_store_error(c->db));
    }
    /* What was really indexed: a cut file is indexed as far as it goes and says so; gaps in the
     * timestamps got no samples. */
    int truncated = ds.truncated || vi->truncated;
    if (truncated)
        md_warn("job %lld: the file is truncated: indexed up to %.3f s of %.3f s", c->job_id, ds.end_ms / 1000.0,
                vi->duration_ms / 1000.0);
    if (ds.gaps)
        md_info("job %lld: %lld gap(s) in the timestamps (%.1f s without frames) got no samples", c->job_id,
                (long long)ds.gaps, ds.gap_ms / 1000.0);
    if (md_store_video_set_coverage(c->db, c->video_id, truncated, ds.end_ms) != MD_OK)
        md_warn("job %lld: %s", c->job_id, md_store_error(c->db));
    *n_segments = md_pipeline_segments(pl);
    double embed_s, temporal_s;
    md_pipeline_times(pl, &embed_s, &temporal_s);
    md_library_count_stage(lib, MD_STAGE_EMBED, embed_s);
    md_library_count_stage(lib, MD_STAGE_TEMPORAL, temporal_s);
    if (md_store_video_set_tokens(c->db, c->video_id, md_pipeline_frames(pl), *n_segments,
                                  1 + md_clip_n_patches(lib->clip), md_clip_dim(lib->clip), lib->temporal_label) != MD_OK)
        md_warn("job %lld: %s", c->job_id, md_store_error(c->db));
out:
    if (s == MD_ERR_CANCELLED && !md_library_stopping(lib))
        c->deleted = 1;
    md_pipeline_free(pl);
    decoder_close(dec);
    return s;
}

/* Why a job failed, for the counters of md_library_stats: the status, refined by the video
 * layer's own words for files it refused on purpose or found cut short. */
static md_fail_reason fail_reason(md_status s, const job_ctx *c, const char *msg)
{
    if (c->storage_failed || s == MD_ERR_NO_SPACE || s == MD_ERR_DB)
        return MD_FAIL_STORAGE;
    if (strncmp(msg, "refused", 7) == 0)
        return MD_FAIL_REFUSED;
    if (strstr(msg, "truncated"))
        return MD_FAIL_TRUNCATED;
    if (strstr(msg, "decoder process") || strstr(msg, "decoder exceeded") || strstr(msg, "no progress"))
        return MD_FAIL_LIMIT;
    switch (s) {
    case MD_ERR_MEDIA: return MD_FAIL_NOT_MEDIA;
    case MD_ERR_UNSUPPORTED: return MD_FAIL_UNSUPPORTED;
    case MD_ERR_NOT_FOUND: return MD_FAIL_MISSING;
    case MD_ERR_FORBIDDEN:
    case MD_ERR_CONFLICT:
    case MD_ERR_TOO_LARGE: return MD_FAIL_REFUSED;
    case MD_ERR_NOMEM:
    case MD_ERR_UNAVAILABLE: return MD_FAIL_LIMIT;
    default: return MD_FAIL_OTHER;
    }
}

/* Opens the job's file as it was added (files.h): no link followed on the way, the same file as
 * when it was hashed, and an archive file still inside an allowed root. */
static md_status open_job_file(md_library *lib, const md_job_claim *jc, int *fd, char *err, size_t errlen)
{
    *fd = -1;
    if (jc->source == MD_SOURCE_PATH && !md_archive_under_root(lib, jc->path))
        return md_errf(err, errlen, MD_ERR_FORBIDDEN,
                       "%s is no longer inside the allowed roots (setting allowed_roots); not read", jc->path);
    md_status s = md_open_nofollow(jc->path, fd, err, errlen);
    if (s == MD_OK && (s = md_file_check(*fd, &jc->file, jc->path, err, errlen)) != MD_OK) {
        close(*fd);
        *fd = -1;
    }
    return s;
}

/* Messages from the video layer name the descriptor's /proc path; users know the file's. */
static void name_the_file(char *msg, size_t len, const char *fdpath, const char *path)
{
    char *p = strstr(msg, fdpath);
    if (!p)
        return;
    char out[1024];
    size_t k = 0, head = (size_t)(p - msg);
    const char *parts[3] = {msg, path, p + strlen(fdpath)};
    size_t lens[3] = {head, strlen(path), strlen(p + strlen(fdpath))};
    for (int i = 0; i < 3; i++) {
        size_t n = lens[i] < sizeof out - 1 - k ? lens[i] : sizeof out - 1 - k;
        memcpy(out + k, parts[i], n);
        k += n;
    }
    k = k < len - 1 ? k : len - 1;
    memcpy(msg, out, k);
    msg[k] = 0;
}

static void requeue(job_ctx *c)
{
    if (md_store_job_requeue(c->db, c->job_id) != MD_OK)
        md_warn("job %lld: %s", c->job_id, md_store_error(c->db));
    md_info("job %lld: interrupted by shutdown, back in the queue", c->job_id);
}

/* A job's end that could not be written (disk full, database error): kept by its worker and
 * written again later, so the job does not stay 'running' for ever and no crash is counted. */
typedef struct pending_end {
    long long job_id;
    md_job_state state;
    char error[MD_STORE_ERROR_MAX];
} pending_end;

#define MAX_PENDING_ENDS 64

typedef struct worker {
    md_library *lib;
    md_store *db;
    pending_end pending[MAX_PENDING_ENDS];
    int n_pending;
    double last_retry, last_claim_warning;
} worker;

static void end_job(worker *w, long long job_id, md_job_state state, const char *error)
{
    if (md_store_job_finish(w->db, job_id, state, error) == MD_OK)
        return;
    md_error("job %lld: cannot record state %s: %s; will retry", job_id, md_job_state_name(state),
             md_store_error(w->db));
    if (w->n_pending == MAX_PENDING_ENDS)
        return; /* the next start puts it back in the queue */
    pending_end *p = &w->pending[w->n_pending++];
    p->job_id = job_id;
    p->state = state;
    snprintf(p->error, sizeof p->error, "%s", error ? error : "");
}

/* Writes the ends that failed before; every 2 s at most, and once more when stopping. */
static void retry_pending(worker *w, int force)
{
    double now = md_mono_s();
    if (!w->n_pending || (!force && now - w->last_retry < 2.0))
        return;
    w->last_retry = now;
    int k = 0;
    for (int i = 0; i < w->n_pending; i++) {
        pending_end *p = &w->pending[i];
        if (md_store_job_finish(w->db, p->job_id, p->state, p->error[0] ? p->error : NULL) == MD_OK)
            md_info("job %lld: state %s recorded (after a failed write)", p->job_id, md_job_state_name(p->state));
        else
            w->pending[k++] = *p;
    }
    w->n_pending = k;
}

static void run_job(worker *w, const md_job_claim *jc)
{
    md_library *lib = w->lib;
    md_store *db = w->db;
    job_ctx c = {.lib = lib, .db = db, .job_id = jc->job_id, .video_id = jc->video_id};
    md_info("job %lld: indexing video %lld (%s)", jc->job_id, jc->video_id, jc->path);
    double t0 = md_mono_s();
    if (debug_pause(lib)) {
        requeue(&c);
        return;
    }
    md_video_info vi;
    char err[512] = "", src[64] = "";
    long long n_segments = 0;
    int fd = -1;
    job_decoder dec;
    decoder_setup(&dec, lib, jc);
    md_status s = open_job_file(lib, jc, &fd, err, sizeof err);
    if (s == MD_OK) {
        /* The checked descriptor, nothing else: through its /proc name, which a worker is handed
         * as that very descriptor (video/isolate.h), never reopened by path. */
        snprintf(src, sizeof src, "/proc/self/fd/%d", fd);
        double tp = md_mono_s();
        s = decoder_probe(&dec, src, &vi, &c, err, sizeof err);
        md_library_count_stage(lib, MD_STAGE_PROBE, md_mono_s() - tp);
    }
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
            snprintf(err, sizeof err, "could not save the results to the database: %s", md_store_error(db));
            c.storage_failed = 1;
        }
    }
    if (s == MD_OK && lib->clip)
        s = index_frames(&c, &dec, src, &vi, &n_segments, err, sizeof err);
    if (fd >= 0)
        close(fd);
    if (src[0])
        name_the_file(err, sizeof err, src, jc->path);
    if (s == MD_OK) {
        end_job(w, jc->job_id, MD_JOB_DONE, NULL);
        md_info("job %lld: done in %.2f s (%s %dx%d, %.3f s, %lld packets, %lld corrupt; %lld segments)", jc->job_id,
                md_mono_s() - t0, vi.codec, vi.width, vi.height, vi.duration_ms / 1000.0, vi.n_video_packets,
                vi.n_corrupt_packets, n_segments);
    } else if (s == MD_ERR_CANCELLED && c.deleted) {
        /* The job is no longer running: cancelled (its row says so, and keeps what it committed)
         * or gone with its deleted video. */
        md_job_rec jr;
        if (md_store_job_get(db, jc->job_id, &jr) == MD_OK && jr.state == MD_JOB_CANCELLED)
            md_info("job %lld: cancelled; stopped after %lld committed segments", jc->job_id, n_segments);
        else
            md_info("job %lld: video was deleted, job dropped", jc->job_id);
    } else if (s == MD_ERR_CANCELLED) {
        requeue(&c);
    } else {
        char msg[MD_STORE_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", err[0] ? err : md_status_str(s));
        if (s == MD_ERR_NOT_FOUND)
            snprintf(msg, sizeof msg, "video file is missing: %.600s", jc->path);
        md_warn("job %lld: failed: %s", jc->job_id, msg);
        md_library_count_failure(lib, fail_reason(s, &c, msg));
        end_job(w, jc->job_id, MD_JOB_FAILED, msg);
    }
}

void *md_worker_main(void *arg)
{
    worker *w = calloc(1, sizeof *w);
    char err[1024];
    if (!w) {
        md_error("worker: out of memory");
        return NULL;
    }
    w->lib = arg;
    md_library *lib = w->lib;
    if (md_store_open(lib->db_path, &w->db, err, sizeof err) != MD_OK) {
        md_error("worker: %s", err);
        free(w);
        return NULL;
    }
    while (!md_library_stopping(lib)) {
        retry_pending(w, 0);
        md_job_claim jc;
        md_status s = md_store_job_claim(w->db, &jc);
        if (s != MD_OK && md_mono_s() - w->last_claim_warning >= 30) {
            w->last_claim_warning = md_mono_s(); /* a full disk would say so every 2 s otherwise */
            md_warn("worker: cannot claim a job: %s", md_store_error(w->db));
        }
        if (s == MD_OK && jc.job_id) {
            run_job(w, &jc);
            /* A job's frames and decoder buffers are freed, but glibc keeps the pages: give them
             * back, so that one big video does not keep the daemon large until the next. */
            malloc_trim(0);
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
    retry_pending(w, 1);
    for (int i = 0; i < w->n_pending; i++)
        md_warn("job %lld: its end (%s) could not be recorded; it is queued again at the next start",
                w->pending[i].job_id, md_job_state_name(w->pending[i].state));
    md_store_close(w->db);
    free(w);
    return NULL;
}
