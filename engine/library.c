/* library.c - the video library: uploads, archive indexing, videos, jobs and
 * the worker threads that run jobs.
 *
 * Files under data_dir:
 *   momentd.db        SQLite database (schema/NNN-*.sql)
 *   videos/<sha256>   uploaded videos, content-addressed: the same bytes are stored once
 *   tmp/              uploads in progress; emptied at start-up (a crash leaves partial files)
 *
 * Concurrency: request-side calls share one connection (lib->db) under
 * lib->db_mu, which also makes "look up sha256, then insert" atomic, so
 * concurrent uploads of the same bytes yield one video. Each worker has its own
 * connection. Jobs are claimed with one UPDATE ... RETURNING, so two workers
 * never take the same job.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include "momentd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../video/video.h"
#include "library_internal.h"
#include "../base/log.h"
#include "pipeline.h"
#include "sha256.h"
#include "store.h"

#define MAX_INDEX_FILES 100000
#define PROGRESS_COMMIT_S 0.25

struct md_upload {
    md_library *lib;
    char tmp_path[PATH_MAX + 32];
    char name[256];
    int fd;
    long long size;
    md_sha256 h;
};

md_status md_fail(md_error *e, md_status st, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

md_library_params md_library_default_params(void)
{
    md_library_params p = {0};
    p.data_dir = "./data";
    p.workers = 2;
    p.max_upload = 4LL << 30;
    p.job_retries = 3;
    p.sample_fps = 1.0;
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    for (int i = 0; i < 3; i++) {
        p.mean[i] = mean[i];
        p.std[i] = std[i];
    }
    p.segment_frames = 4;
    p.window_frames = 32;
    return p;
}

/* ---- small helpers ---------------------------------------------------- */

static void iso_time(long long ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char b[24];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", b, (int)(ms % 1000));
}

/* Replaces a numeric millisecond member with an ISO 8601 string (null stays null). */
static void json_time(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v))
        return;
    char b[32];
    iso_time((long long)v->valuedouble, b);
    cJSON_ReplaceItemInObjectCaseSensitive(o, key, cJSON_CreateString(b));
}

static md_status mkdir_p(const char *path, md_error *e)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return md_fail(e, MD_ERR_INVALID, "path too long: %s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return md_fail(e, MD_ERR_IO, "cannot create directory %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return md_fail(e, MD_ERR_IO, "cannot create directory %s: %s", tmp, strerror(errno));
    struct stat sb;
    if (stat(tmp, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return md_fail(e, MD_ERR_IO, "%s is not a directory", tmp);
    return MD_OK;
}

static md_status db_fail(md_store *s, md_error *e, int rc, const char *what)
{
    return md_fail(e, md_store_status(rc), "database error while %s: %s", what, sqlite3_errmsg(s->db));
}

static void wake_workers(md_library *lib)
{
    pthread_mutex_lock(&lib->q_mu);
    pthread_cond_broadcast(&lib->q_cv);
    pthread_mutex_unlock(&lib->q_mu);
}

static int is_stopping(md_library *lib)
{
    pthread_mutex_lock(&lib->q_mu);
    int s = lib->stopping;
    pthread_mutex_unlock(&lib->q_mu);
    return s;
}

/* ---- JSON views of rows ----------------------------------------------- */

#define VIDEO_COLS                                                                                              \
    "v.id, v.name, v.sha256, v.source, v.path, v.size_bytes, v.created_at, v.duration_ms, v.width, v.height, " \
    "v.fps, v.rotation, v.codec, v.format, v.n_streams, v.n_packets, v.n_corrupt, v.indexed_at, "             \
    "v.n_frames, v.n_segments, v.tokens_per_frame, v.embed_dim, v.temporal, "                               \
    "j.id AS job_id, j.state AS job_state, j.error AS error "
#define VIDEO_FROM "FROM videos v LEFT JOIN jobs j ON j.id = (SELECT max(id) FROM jobs WHERE video_id = v.id) "

static cJSON *video_json(sqlite3_stmt *st)
{
    cJSON *o = md_store_row_json(st);
    if (!o)
        return NULL;
    const char *js = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "job_state"));
    const char *status = !js ? "unknown"
                         : strcmp(js, "done") == 0    ? "ready"
                         : strcmp(js, "failed") == 0  ? "failed"
                         : strcmp(js, "running") == 0 ? "indexing"
                                                      : "queued";
    cJSON_DeleteItemFromObjectCaseSensitive(o, "job_state");
    cJSON_AddStringToObject(o, "status", status);
    /* Uploads live at an internal path; only archive paths mean something to users. */
    const char *src = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "source"));
    if (src && strcmp(src, "upload") == 0)
        cJSON_DeleteItemFromObjectCaseSensitive(o, "path");
    cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "duration_ms");
    if (cJSON_IsNumber(d))
        cJSON_AddNumberToObject(o, "duration_s", d->valuedouble / 1000.0);
    else
        cJSON_AddNullToObject(o, "duration_s");
    json_time(o, "created_at");
    json_time(o, "indexed_at");
    /* Token reduction: the CLIP tokens of the sampled frames versus the segment vectors kept. */
    double nf = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "n_frames"));
    double ns = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "n_segments"));
    double tpf = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "tokens_per_frame"));
    double dim = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "embed_dim"));
    if (nf > 0 && ns > 0 && tpf > 0 && dim > 0) {
        cJSON *t = cJSON_AddObjectToObject(o, "token_reduction");
        cJSON_AddNumberToObject(t, "clip_tokens", nf * tpf);
        cJSON_AddNumberToObject(t, "stored_vectors", ns);
        cJSON_AddNumberToObject(t, "ratio", (double)(long long)(nf * tpf / ns * 10 + 0.5) / 10);
        cJSON_AddNumberToObject(t, "raw_bytes_fp16", nf * tpf * dim * 2);
        cJSON_AddNumberToObject(t, "stored_bytes", ns * dim * 2);
        if (cJSON_IsNumber(d) && d->valuedouble > 0)
            cJSON_AddNumberToObject(t, "stored_bytes_per_hour", (double)(long long)(ns * dim * 2 / (d->valuedouble / 3.6e6)));
    }
    return o;
}

static cJSON *job_json(sqlite3_stmt *st)
{
    cJSON *o = md_store_row_json(st);
    if (!o)
        return NULL;
    double done = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "progress_done"));
    double total = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "progress_total"));
    const char *unit = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "progress_unit"));
    const char *state = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "state"));
    cJSON *started = cJSON_GetObjectItemCaseSensitive(o, "started_at");
    cJSON *pr = cJSON_CreateObject();
    cJSON_AddNumberToObject(pr, "done", done);
    cJSON_AddNumberToObject(pr, "total", total);
    cJSON_AddStringToObject(pr, "unit", unit ? unit : "");
    double pct = total > 0 ? 100.0 * done / total : 0;
    if (state && strcmp(state, "done") == 0)
        pct = 100;
    cJSON_AddNumberToObject(pr, "percent", (double)(long long)(pct * 10 + 0.5) / 10);
    /* ETA from this attempt's rate; unknown until some progress was made. */
    if (state && strcmp(state, "running") == 0 && cJSON_IsNumber(started) && done > 0 && total > done) {
        double elapsed = (double)(md_now_ms() - (long long)started->valuedouble) / 1000.0;
        cJSON_AddNumberToObject(pr, "eta_s", (double)(long long)(elapsed * (total - done) / done * 10) / 10);
    } else if (state && strcmp(state, "done") == 0) {
        cJSON_AddNumberToObject(pr, "eta_s", 0);
    } else {
        cJSON_AddNullToObject(pr, "eta_s");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(o, "progress_done");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "progress_total");
    cJSON_DeleteItemFromObjectCaseSensitive(o, "progress_unit");
    cJSON_AddItemToObject(o, "progress", pr);
    json_time(o, "created_at");
    json_time(o, "started_at");
    json_time(o, "finished_at");
    json_time(o, "updated_at");
    return o;
}

#define JOB_SELECT                                                                                          \
    "SELECT id, video_id, kind, state, progress_done, progress_total, progress_unit, error, attempts, " \
    "created_at, started_at, finished_at, updated_at FROM jobs "

/* Both under db_mu (caller holds it). */
static md_status load_video(md_library *lib, long long id, cJSON **out, md_error *e)
{
    sqlite3_stmt *st = NULL;
    md_status s = MD_OK;
    *out = NULL;
    int rc = sqlite3_prepare_v2(lib->db->db, "SELECT " VIDEO_COLS VIDEO_FROM "WHERE v.id = ?", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        s = db_fail(lib->db, e, rc, "reading a video");
        goto out;
    }
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        s = md_fail(e, MD_ERR_NOT_FOUND, "no video with id %lld", id);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        s = db_fail(lib->db, e, rc, "reading a video");
        goto out;
    }
    if (!(*out = video_json(st)))
        s = md_fail(e, MD_ERR_NOMEM, "out of memory");
out:
    sqlite3_finalize(st);
    return s;
}

static md_status load_job(md_library *lib, long long id, cJSON **out, md_error *e)
{
    sqlite3_stmt *st = NULL;
    md_status s = MD_OK;
    *out = NULL;
    int rc = sqlite3_prepare_v2(lib->db->db, JOB_SELECT "WHERE id = ?", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        s = db_fail(lib->db, e, rc, "reading a job");
        goto out;
    }
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        s = md_fail(e, MD_ERR_NOT_FOUND, "no job with id %lld", id);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        s = db_fail(lib->db, e, rc, "reading a job");
        goto out;
    }
    if (!(*out = job_json(st)))
        s = md_fail(e, MD_ERR_NOMEM, "out of memory");
out:
    sqlite3_finalize(st);
    return s;
}

/* {"video": ..., "job": ...} for video ID and its latest job. Caller holds db_mu. */
static md_status video_and_job(md_library *lib, long long id, cJSON **out, md_error *e)
{
    cJSON *v = NULL, *j = NULL;
    md_status s = load_video(lib, id, &v, e);
    if (s != MD_OK)
        return s;
    cJSON *jid = cJSON_GetObjectItemCaseSensitive(v, "job_id");
    if (cJSON_IsNumber(jid) && (s = load_job(lib, (long long)jid->valuedouble, &j, e)) != MD_OK) {
        cJSON_Delete(v);
        return s;
    }
    *out = cJSON_CreateObject();
    cJSON_AddItemToObject(*out, "video", v);
    cJSON_AddItemToObject(*out, "job", j ? j : cJSON_CreateNull());
    return MD_OK;
}

/* Finds a video by content hash; *ID = 0 when unknown. Caller holds db_mu. */
static md_status find_sha(md_library *lib, const char *sha, long long *id, md_error *e)
{
    sqlite3_stmt *st = NULL;
    *id = 0;
    int rc = sqlite3_prepare_v2(lib->db->db, "SELECT id FROM videos WHERE sha256 = ?", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *id = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_fail(lib->db, e, rc, "looking up a hash");
    return MD_OK;
}

/* Inserts a video and its queued index job in one transaction. Caller holds db_mu. */
static md_status insert_video(md_library *lib, const char *sha, const char *name, const char *source,
                              const char *path, long long size, long long *video_id, md_error *e)
{
    md_store *s = lib->db;
    sqlite3_stmt *st = NULL;
    md_status ret = md_store_begin(s);
    if (ret != MD_OK)
        return md_fail(e, ret, "database busy: %s", sqlite3_errmsg(s->db));
    long long now = md_now_ms();
    int rc = sqlite3_prepare_v2(s->db,
                                "INSERT INTO videos (sha256, name, source, path, size_bytes, created_at) "
                                "VALUES (?, ?, ?, ?, ?, ?)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, source, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, size);
        sqlite3_bind_int64(st, 6, now);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_DONE) {
        ret = db_fail(s, e, rc, "adding a video");
        goto out;
    }
    *video_id = sqlite3_last_insert_rowid(s->db);
    rc = sqlite3_prepare_v2(s->db,
                            "INSERT INTO jobs (video_id, kind, state, created_at, updated_at) "
                            "VALUES (?, 'index', 'queued', ?, ?)",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, *video_id);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_int64(st, 3, now);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        ret = db_fail(s, e, rc, "queueing a job");
        goto out;
    }
    if ((ret = md_store_commit(s)) != MD_OK)
        ret = md_fail(e, ret, "database commit failed: %s", sqlite3_errmsg(s->db));
out:
    if (ret != MD_OK)
        md_store_rollback(s);
    return ret;
}

/* ---- the worker ------------------------------------------------------- */

typedef struct job_ctx {
    md_library *lib;
    md_store *db;
    long long job_id;
    double last_commit;
    int deleted; /* the job row vanished: its video was deleted */
} job_ctx;

/* Returns 1 when the job row is gone. */
static int commit_progress(job_ctx *c, long long done, long long total)
{
    sqlite3_stmt *st = NULL;
    int gone = 0;
    if (sqlite3_prepare_v2(c->db->db,
                           "UPDATE jobs SET progress_done = ?, progress_total = ?, updated_at = ? "
                           "WHERE id = ? AND state = 'running'",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, done);
        sqlite3_bind_int64(st, 2, total);
        sqlite3_bind_int64(st, 3, md_now_ms());
        sqlite3_bind_int64(st, 4, c->job_id);
        if (sqlite3_step(st) == SQLITE_DONE && sqlite3_changes(c->db->db) == 0)
            gone = 1;
    }
    sqlite3_finalize(st);
    return gone;
}

static int job_progress(void *ctx, long long done, long long total)
{
    job_ctx *c = ctx;
    if (is_stopping(c->lib))
        return 1;
    double now = md_mono_s();
    /* With a model the probe is a short first step: progress is counted in frames by the pipeline. */
    if (c->lib->clip)
        return 0;
    if (now - c->last_commit >= PROGRESS_COMMIT_S || done == total) {
        c->last_commit = now;
        if (commit_progress(c, done, total)) {
            c->deleted = 1;
            return 1;
        }
    }
    return 0;
}

static void finish_job(md_store *db, long long job_id, const char *state, const char *error)
{
    sqlite3_stmt *st = NULL;
    long long now = md_now_ms();
    if (sqlite3_prepare_v2(db->db,
                           "UPDATE jobs SET state = ?, error = ?, finished_at = ?, updated_at = ?, "
                           "progress_done = CASE WHEN ? = 'done' THEN progress_total ELSE progress_done END "
                           "WHERE id = ?",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
        if (error)
            sqlite3_bind_text(st, 2, error, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, now);
        sqlite3_bind_int64(st, 4, now);
        sqlite3_bind_text(st, 5, state, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, job_id);
        if (sqlite3_step(st) != SQLITE_DONE)
            md_error("job %lld: cannot record state %s: %s", job_id, state, sqlite3_errmsg(db->db));
    }
    sqlite3_finalize(st);
}

/* Puts an interrupted job back in the queue with its progress; the attempt does not count. */
static void requeue_job(md_store *db, long long job_id)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), updated_at = ? "
                           "WHERE id = ? AND state = 'running'",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, md_now_ms());
        sqlite3_bind_int64(st, 2, job_id);
        sqlite3_step(st);
    }
    sqlite3_finalize(st);
}

static md_status save_probe(md_store *db, long long job_id, long long video_id, const md_video_info *vi)
{
    sqlite3_stmt *st = NULL;
    md_status s = md_store_begin(db);
    if (s != MD_OK)
        return s;
    int rc = sqlite3_prepare_v2(db->db,
                                "UPDATE videos SET duration_ms = ?, width = ?, height = ?, fps = ?, rotation = ?, "
                                "codec = ?, format = ?, n_streams = ?, n_packets = ?, n_corrupt = ?, indexed_at = ? "
                                "WHERE id = ?",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        if (vi->duration_ms >= 0)
            sqlite3_bind_int64(st, 1, vi->duration_ms);
        sqlite3_bind_int(st, 2, vi->width);
        sqlite3_bind_int(st, 3, vi->height);
        if (vi->fps > 0)
            sqlite3_bind_double(st, 4, vi->fps);
        sqlite3_bind_int(st, 5, vi->rotation);
        sqlite3_bind_text(st, 6, vi->codec, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, vi->format, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 8, vi->n_streams);
        sqlite3_bind_int64(st, 9, vi->n_video_packets);
        sqlite3_bind_int64(st, 10, vi->n_corrupt_packets);
        sqlite3_bind_int64(st, 11, md_now_ms());
        sqlite3_bind_int64(st, 12, video_id);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        md_store_rollback(db);
        return md_store_status(rc);
    }
    (void)job_id;
    return md_store_commit(db);
}

/* Decoding sees damage the probe's demux-only scan cannot (packets the decoder rejects); the
 * video row's n_corrupt keeps the larger count. */
static void record_damage(md_store *db, long long video_id, long long n)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, "UPDATE videos SET n_corrupt = max(coalesce(n_corrupt, 0), ?) WHERE id = ?", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, n);
        sqlite3_bind_int64(st, 2, video_id);
        if (sqlite3_step(st) != SQLITE_DONE)
            md_warn("video %lld: cannot record damaged packets: %s", video_id, sqlite3_errmsg(db->db));
    }
    sqlite3_finalize(st);
}

static int decode_interrupt(void *ctx)
{
    job_ctx *c = ctx;
    return is_stopping(c->lib);
}

/* Decodes, samples and embeds the whole video into stored segments (pipeline.h).
 * Resumes after the windows an earlier run committed. */
static md_status index_frames(md_library *lib, md_store *db, job_ctx *c, long long video_id, const char *path,
                              const md_video_info *vi, long long *n_segments, char *err, size_t errlen)
{
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
    if ((s = md_pipeline_begin(lib, db, video_id, c->job_id, md_video_decoder_expected(dec), 1000.0 / vp.fps, &pl,
                               err, errlen)) != MD_OK)
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
    if ((s = md_pipeline_finish(pl, vi->duration_ms, err, errlen)) != MD_OK)
        goto out;
    md_video_decode_stats ds;
    md_video_decoder_stats(dec, &ds);
    if (ds.skipped_packets || ds.corrupt_frames) {
        md_warn("job %lld: %lld damaged packets skipped, %lld frames with concealed errors", c->job_id,
                ds.skipped_packets, ds.corrupt_frames);
        record_damage(db, video_id, ds.skipped_packets + ds.corrupt_packets);
    }
    *n_segments = md_pipeline_segments(pl);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           "UPDATE videos SET n_frames = ?, n_segments = ?, tokens_per_frame = ?, embed_dim = ?, "
                           "temporal = ? WHERE id = ?",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, md_pipeline_frames(pl));
        sqlite3_bind_int64(st, 2, *n_segments);
        sqlite3_bind_int(st, 3, 1 + md_clip_n_patches(lib->clip));
        sqlite3_bind_int(st, 4, md_clip_dim(lib->clip));
        sqlite3_bind_text(st, 5, lib->temporal_label, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, video_id);
        if (sqlite3_step(st) != SQLITE_DONE)
            md_warn("job %lld: cannot record token counts: %s", c->job_id, sqlite3_errmsg(db->db));
    }
    sqlite3_finalize(st);
out:
    if (s == MD_ERR_CANCELLED && !is_stopping(lib))
        c->deleted = 1;
    md_pipeline_free(pl);
    md_video_decoder_close(dec);
    return s;
}

static void run_job(md_library *lib, md_store *db, long long job_id, long long video_id, const char *path)
{
    job_ctx c = {.lib = lib, .db = db, .job_id = job_id, .last_commit = 0};
    md_info("job %lld: indexing video %lld (%s)", job_id, video_id, path);
    double t0 = md_mono_s();

    for (int waited = 0; waited < lib->p.debug_job_delay_ms; waited += 20) {
        if (is_stopping(lib)) {
            requeue_job(db, job_id);
            md_info("job %lld: interrupted by shutdown, back in the queue", job_id);
            return;
        }
        usleep(20000);
    }

    md_video_info vi;
    char err[512] = "";
    long long n_segments = 0;
    md_status s = md_video_probe(path, &vi, job_progress, &c, err, sizeof err);
    if (s == MD_OK && save_probe(db, job_id, video_id, &vi) != MD_OK) {
        md_error("job %lld: cannot save the probe: %s", job_id, sqlite3_errmsg(db->db));
        snprintf(err, sizeof err, "could not save the results to the database");
        s = MD_ERR_DB;
    }
    if (s == MD_OK && lib->clip)
        s = index_frames(lib, db, &c, video_id, path, &vi, &n_segments, err, sizeof err);
    if (s == MD_OK) {
        finish_job(db, job_id, "done", NULL);
        md_info("job %lld: done in %.2f s (%s %dx%d, %.3f s, %lld packets, %lld corrupt; %lld segments)", job_id,
                md_mono_s() - t0, vi.codec, vi.width, vi.height, vi.duration_ms / 1000.0, vi.n_video_packets,
                vi.n_corrupt_packets, n_segments);
    } else if (s == MD_ERR_CANCELLED && c.deleted) {
        md_info("job %lld: video was deleted, job dropped", job_id);
    } else if (s == MD_ERR_CANCELLED) {
        requeue_job(db, job_id);
        md_info("job %lld: interrupted by shutdown, back in the queue", job_id);
    } else {
        char msg[700];
        snprintf(msg, sizeof msg, "%s", err[0] ? err : md_status_str(s));
        if (s == MD_ERR_NOT_FOUND)
            snprintf(msg, sizeof msg, "video file is missing: %.600s", path);
        md_warn("job %lld: failed: %s", job_id, msg);
        finish_job(db, job_id, "failed", msg);
    }
}

/* Claims the oldest queued job. *JOB_ID = 0 when there is none. */
static md_status claim_job(md_store *db, long long *job_id, long long *video_id, char *path, size_t pathlen)
{
    sqlite3_stmt *st = NULL;
    *job_id = 0;
    long long now = md_now_ms();
    int rc = sqlite3_prepare_v2(db->db,
                                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?1, "
                                "updated_at = ?1, progress_done = 0 "
                                "WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1) "
                                "RETURNING id, video_id",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, now);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *job_id = sqlite3_column_int64(st, 0);
            *video_id = sqlite3_column_int64(st, 1);
            rc = sqlite3_step(st);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return md_store_status(rc);
    if (!*job_id)
        return MD_OK;
    rc = sqlite3_prepare_v2(db->db, "SELECT path FROM videos WHERE id = ?", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, *video_id);
        if ((rc = sqlite3_step(st)) == SQLITE_ROW)
            snprintf(path, pathlen, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? MD_OK : md_store_status(rc);
}

static void *worker_main(void *arg)
{
    md_library *lib = arg;
    md_store *db = NULL;
    char err[1024];
    char dbpath[PATH_MAX + 16];
    snprintf(dbpath, sizeof dbpath, "%s/momentd.db", lib->data_dir);
    if (md_store_open(dbpath, &db, err, sizeof err) != MD_OK) {
        md_error("worker: %s", err);
        return NULL;
    }
    while (!is_stopping(lib)) {
        long long job_id, video_id;
        char path[PATH_MAX];
        md_status s = claim_job(db, &job_id, &video_id, path, sizeof path);
        if (s != MD_OK)
            md_warn("worker: cannot claim a job: %s", sqlite3_errmsg(db->db));
        if (s == MD_OK && job_id) {
            run_job(lib, db, job_id, video_id, path);
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

/* ---- open / close ----------------------------------------------------- */

static void clean_tmp(md_library *lib)
{
    DIR *d = opendir(lib->tmp_dir);
    if (!d)
        return;
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "upload-", 7) != 0 && strncmp(de->d_name, "query-", 6) != 0)
            continue;
        char p[PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/%s", lib->tmp_dir, de->d_name);
        if (unlink(p) == 0)
            n++;
    }
    closedir(d);
    if (n)
        md_info("library: removed %d partial upload(s) left by an earlier run", n);
}

static md_status recover_jobs(md_library *lib, md_error *e)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(lib->db->db,
                                "UPDATE jobs SET state = CASE WHEN attempts > ?1 THEN 'failed' ELSE 'queued' END, "
                                "error = CASE WHEN attempts > ?1 THEN 'interrupted ' || attempts || ' times (the "
                                "daemon stopped while running it); giving up' ELSE NULL END, "
                                "finished_at = CASE WHEN attempts > ?1 THEN ?2 ELSE NULL END, updated_at = ?2 "
                                "WHERE state = 'running' RETURNING id, state",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_fail(lib->db, e, rc, "recovering jobs");
    sqlite3_bind_int(st, 1, lib->p.job_retries);
    sqlite3_bind_int64(st, 2, md_now_ms());
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        md_info("library: job %lld was interrupted by a crash: %s", sqlite3_column_int64(st, 0),
                strcmp((const char *)sqlite3_column_text(st, 1), "queued") == 0 ? "resuming" : "failed (too many tries)");
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? MD_OK : db_fail(lib->db, e, rc, "recovering jobs");
}

md_status md_library_open(const md_library_params *p, md_library **out, md_error *e)
{
    md_status s = MD_OK;
    *out = NULL;
    md_library *lib = calloc(1, sizeof *lib);
    if (!lib)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    lib->p = *p;
    pthread_mutex_init(&lib->db_mu, NULL);
    pthread_mutex_init(&lib->q_mu, NULL);
    pthread_cond_init(&lib->q_cv, NULL);
    if (!(lib->data_dir = strdup(p->data_dir)) ||
        (p->n_allowed_roots && !(lib->roots = calloc((size_t)p->n_allowed_roots, sizeof *lib->roots)))) {
        s = md_fail(e, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < p->n_allowed_roots; i++)
        if (!(lib->roots[i] = strdup(p->allowed_roots[i]))) {
            s = md_fail(e, MD_ERR_NOMEM, "out of memory");
            goto out;
        }
    lib->p.allowed_roots = NULL;
    lib->p.data_dir = lib->data_dir;

    snprintf(lib->videos_dir, sizeof lib->videos_dir, "%s/videos", lib->data_dir);
    snprintf(lib->tmp_dir, sizeof lib->tmp_dir, "%s/tmp", lib->data_dir);
    if ((s = mkdir_p(lib->data_dir, e)) != MD_OK || (s = mkdir_p(lib->videos_dir, e)) != MD_OK ||
        (s = mkdir_p(lib->tmp_dir, e)) != MD_OK)
        goto out;
    clean_tmp(lib);

    char dbpath[PATH_MAX + 16], err[1024];
    snprintf(dbpath, sizeof dbpath, "%s/momentd.db", lib->data_dir);
    if ((s = md_store_open(dbpath, &lib->db, err, sizeof err)) != MD_OK) {
        md_fail(e, s, "%s", err);
        goto out;
    }
    if ((s = recover_jobs(lib, e)) != MD_OK)
        goto out;
    if ((s = md_model_open(lib, e)) != MD_OK)
        goto out;
    *out = lib;
    return MD_OK;
out:
    md_library_close(lib);
    return s;
}

md_status md_library_start(md_library *lib, md_error *e)
{
    lib->threads = calloc((size_t)lib->p.workers, sizeof *lib->threads);
    if (!lib->threads)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    for (int i = 0; i < lib->p.workers; i++) {
        if (pthread_create(&lib->threads[i], NULL, worker_main, lib) != 0)
            return md_fail(e, MD_ERR_INTERNAL, "cannot start worker thread %d", i);
        lib->n_threads++;
    }
    return MD_OK;
}

void md_library_close(md_library *lib)
{
    if (!lib)
        return;
    pthread_mutex_lock(&lib->q_mu);
    lib->stopping = 1;
    pthread_cond_broadcast(&lib->q_cv);
    pthread_mutex_unlock(&lib->q_mu);
    for (int i = 0; i < lib->n_threads; i++)
        pthread_join(lib->threads[i], NULL);
    free(lib->threads);
    md_model_close(lib);
    md_store_close(lib->db);
    for (int i = 0; lib->roots && i < lib->p.n_allowed_roots; i++)
        free(lib->roots[i]);
    free(lib->roots);
    free(lib->data_dir);
    pthread_cond_destroy(&lib->q_cv);
    pthread_mutex_destroy(&lib->q_mu);
    pthread_mutex_destroy(&lib->db_mu);
    free(lib);
}

/* ---- uploads ---------------------------------------------------------- */

/* Keeps the last path component, drops control characters, caps the length. */
static void clean_name(const char *in, char *out, size_t outlen)
{
    const char *base = in;
    for (const char *p = in; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    size_t k = 0;
    for (const char *p = base; *p && k + 1 < outlen; p++)
        if ((unsigned char)*p >= 0x20 && *p != 0x7f)
            out[k++] = *p;
    out[k] = 0;
    if (!k)
        snprintf(out, outlen, "upload");
}

md_status md_upload_begin(md_library *lib, const char *name, md_upload **out, md_error *e)
{
    md_upload *u = calloc(1, sizeof *u);
    *out = NULL;
    if (!u)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    u->lib = lib;
    clean_name(name ? name : "", u->name, sizeof u->name);
    snprintf(u->tmp_path, sizeof u->tmp_path, "%s/upload-XXXXXX", lib->tmp_dir);
    u->fd = mkstemp(u->tmp_path);
    if (u->fd < 0) {
        md_status s = md_fail(e, errno == ENOSPC ? MD_ERR_NO_SPACE : MD_ERR_IO, "cannot create a temporary file in %s: %s",
                              lib->tmp_dir, strerror(errno));
        free(u);
        return s;
    }
    md_sha256_init(&u->h);
    *out = u;
    return MD_OK;
}

long long md_upload_size(const md_upload *u) { return u->size; }

md_status md_upload_write(md_upload *u, const void *data, size_t len, md_error *e)
{
    if (u->size + (long long)len > u->lib->p.max_upload)
        return md_fail(e, MD_ERR_TOO_LARGE, "upload is larger than the limit of %lld bytes (setting max_upload)",
                       u->lib->p.max_upload);
    md_sha256_update(&u->h, data, len);
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t n = write(u->fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno == ENOSPC || errno == EDQUOT)
                return md_fail(e, MD_ERR_NO_SPACE, "disk full while storing the upload (%lld bytes written)", u->size);
            return md_fail(e, MD_ERR_IO, "cannot write the upload: %s", strerror(errno));
        }
        p += n;
        left -= (size_t)n;
        u->size += n;
    }
    return MD_OK;
}

void md_upload_abort(md_upload *u)
{
    if (!u)
        return;
    if (u->fd >= 0)
        close(u->fd);
    unlink(u->tmp_path);
    free(u);
}

md_status md_upload_finish(md_upload *u, cJSON **out, int *created, md_error *e)
{
    md_library *lib = u->lib;
    md_status s = MD_OK;
    char sha[65], final_path[PATH_MAX + 80];
    int locked = 0, moved = 0;
    *out = NULL;
    *created = 0;
    if (u->size == 0) {
        s = md_fail(e, MD_ERR_INVALID, "empty upload: the request body has no bytes");
        goto out;
    }
    /* The bytes must be on disk before the database says the video exists. */
    if (fsync(u->fd) != 0) {
        s = md_fail(e, errno == ENOSPC ? MD_ERR_NO_SPACE : MD_ERR_IO, "cannot flush the upload: %s", strerror(errno));
        goto out;
    }
    close(u->fd);
    u->fd = -1;
    md_sha256_final_hex(&u->h, sha);
    snprintf(final_path, sizeof final_path, "%s/%s", lib->videos_dir, sha);

    pthread_mutex_lock(&lib->db_mu);
    locked = 1;
    long long id;
    if ((s = find_sha(lib, sha, &id, e)) != MD_OK)
        goto out;
    if (id) {
        s = video_and_job(lib, id, out, e);
        goto out;
    }
    if (rename(u->tmp_path, final_path) != 0) {
        s = md_fail(e, MD_ERR_IO, "cannot store the upload: %s", strerror(errno));
        goto out;
    }
    moved = 1;
    if ((s = insert_video(lib, sha, u->name, "upload", final_path, u->size, &id, e)) != MD_OK)
        goto out;
    if ((s = video_and_job(lib, id, out, e)) != MD_OK)
        goto out;
    *created = 1;
    md_info("library: stored upload '%s' as video %lld (%lld bytes, sha256 %.12s)", u->name, id, u->size, sha);
out:
    if (s != MD_OK && moved)
        unlink(final_path);
    if (locked)
        pthread_mutex_unlock(&lib->db_mu);
    if (*created)
        wake_workers(lib);
    if (u->fd >= 0)
        close(u->fd);
    if (!moved)
        unlink(u->tmp_path);
    free(u);
    return s;
}

/* ---- videos and jobs -------------------------------------------------- */

md_status md_library_list_videos(md_library *lib, long long limit, long long offset, cJSON **out, md_error *e)
{
    sqlite3_stmt *st = NULL;
    md_status s = MD_OK;
    cJSON *res = NULL, *arr = NULL;
    long long total = 0;
    *out = NULL;
    pthread_mutex_lock(&lib->db_mu);
    int rc = sqlite3_prepare_v2(lib->db->db, "SELECT count(*) FROM videos", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        total = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_ROW) {
        s = db_fail(lib->db, e, rc, "counting videos");
        goto out;
    }
    rc = sqlite3_prepare_v2(lib->db->db, "SELECT " VIDEO_COLS VIDEO_FROM "ORDER BY v.id LIMIT ? OFFSET ?", -1, &st,
                            NULL);
    if (rc != SQLITE_OK) {
        s = db_fail(lib->db, e, rc, "listing videos");
        goto out;
    }
    sqlite3_bind_int64(st, 1, limit);
    sqlite3_bind_int64(st, 2, offset);
    res = cJSON_CreateObject();
    arr = cJSON_AddArrayToObject(res, "videos");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        cJSON_AddItemToArray(arr, video_json(st));
    if (rc != SQLITE_DONE) {
        s = db_fail(lib->db, e, rc, "listing videos");
        goto out;
    }
    cJSON_AddNumberToObject(res, "total", (double)total);
    cJSON_AddNumberToObject(res, "limit", (double)limit);
    cJSON_AddNumberToObject(res, "offset", (double)offset);
    if (offset + limit < total)
        cJSON_AddNumberToObject(res, "next_offset", (double)(offset + limit));
    else
        cJSON_AddNullToObject(res, "next_offset");
    *out = res;
    res = NULL;
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&lib->db_mu);
    cJSON_Delete(res);
    return s;
}

md_status md_library_get_video(md_library *lib, long long id, cJSON **out, md_error *e)
{
    pthread_mutex_lock(&lib->db_mu);
    md_status s = load_video(lib, id, out, e);
    pthread_mutex_unlock(&lib->db_mu);
    return s;
}

md_status md_library_get_job(md_library *lib, long long id, cJSON **out, md_error *e)
{
    pthread_mutex_lock(&lib->db_mu);
    md_status s = load_job(lib, id, out, e);
    pthread_mutex_unlock(&lib->db_mu);
    return s;
}

md_status md_library_delete_video(md_library *lib, long long id, md_error *e)
{
    sqlite3_stmt *st = NULL;
    md_status s = MD_OK;
    char path[PATH_MAX] = "";
    int is_upload = 0;
    pthread_mutex_lock(&lib->db_mu);
    int rc = sqlite3_prepare_v2(lib->db->db, "DELETE FROM videos WHERE id = ? RETURNING source, path", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            is_upload = strcmp((const char *)sqlite3_column_text(st, 0), "upload") == 0;
            snprintf(path, sizeof path, "%s", (const char *)sqlite3_column_text(st, 1));
            rc = sqlite3_step(st);
        } else if (rc == SQLITE_DONE) {
            s = md_fail(e, MD_ERR_NOT_FOUND, "no video with id %lld", id);
        }
    }
    sqlite3_finalize(st);
    if (s == MD_OK && rc != SQLITE_DONE)
        s = db_fail(lib->db, e, rc, "deleting a video");
    if (s == MD_OK && lib->index)
        md_index_remove_video(lib->index, id); /* gone from results at once */
    /* Only files we stored are ours to remove; archive files indexed in place stay. */
    if (s == MD_OK && is_upload && unlink(path) != 0 && errno != ENOENT)
        md_warn("library: video %lld deleted but its file %s stays: %s", id, path, strerror(errno));
    pthread_mutex_unlock(&lib->db_mu);
    if (s == MD_OK)
        md_info("library: deleted video %lld", id);
    return s;
}

md_status md_library_stats_get(md_library *lib, md_library_stats *out, md_error *e)
{
    sqlite3_stmt *st = NULL;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&lib->db_mu);
    int rc = sqlite3_prepare_v2(lib->db->db,
                                "SELECT (SELECT count(*) FROM jobs WHERE state = 'queued'), "
                                "(SELECT count(*) FROM jobs WHERE state = 'running'), "
                                "(SELECT count(*) FROM jobs WHERE state = 'done'), "
                                "(SELECT count(*) FROM jobs WHERE state = 'failed'), "
                                "(SELECT count(*) FROM videos), "
                                "(SELECT coalesce(sum(size_bytes), 0) FROM videos WHERE source = 'upload'), "
                                "(SELECT coalesce(sum(size_bytes), 0) FROM videos WHERE source = 'path')",
                                -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        out->jobs_queued = sqlite3_column_int64(st, 0);
        out->jobs_running = sqlite3_column_int64(st, 1);
        out->jobs_done = sqlite3_column_int64(st, 2);
        out->jobs_failed = sqlite3_column_int64(st, 3);
        out->videos = sqlite3_column_int64(st, 4);
        out->bytes_stored = sqlite3_column_int64(st, 5);
        out->bytes_indexed_paths = sqlite3_column_int64(st, 6);
    }
    sqlite3_finalize(st);
    md_status s = rc == SQLITE_ROW ? MD_OK : db_fail(lib->db, e, rc, "reading statistics");
    pthread_mutex_unlock(&lib->db_mu);
    return s;
}

/* ---- indexing files on the server ------------------------------------- */

static int under_root(md_library *lib, const char *canon)
{
    for (int i = 0; i < lib->p.n_allowed_roots; i++) {
        size_t l = strlen(lib->roots[i]);
        if (strncmp(canon, lib->roots[i], l) == 0 && (canon[l] == '/' || canon[l] == 0 || l == 1))
            return 1;
    }
    return 0;
}

/* Resolves ".", ".." and repeated slashes without touching the file system. */
static int lexical_normalise(const char *in, char *out, size_t outlen)
{
    size_t k = 0;
    const char *p = in;
    if (*p != '/' || outlen < 2)
        return -1;
    out[k++] = '/';
    while (*p) {
        while (*p == '/')
            p++;
        const char *s = p;
        while (*p && *p != '/')
            p++;
        size_t l = (size_t)(p - s);
        if (l == 0 || (l == 1 && s[0] == '.'))
            continue;
        if (l == 2 && s[0] == '.' && s[1] == '.') {
            if (k > 1) {
                k--;
                while (k > 1 && out[k - 1] != '/')
                    k--;
            }
            continue;
        }
        if (k + l + 2 > outlen)
            return -1;
        memcpy(out + k, s, l);
        k += l;
        out[k++] = '/';
    }
    if (k > 1)
        k--;
    out[k] = 0;
    return 0;
}

static int has_video_ext(const char *name)
{
    static const char *exts[] = {"mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts",
                                 "flv", "wmv", "ogv", "ogg", "3gp", "3g2", "mxf", "vob", "asf", "divx", "dv", NULL};
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    for (int i = 0; exts[i]; i++)
        if (strcasecmp(dot + 1, exts[i]) == 0)
            return 1;
    return 0;
}

typedef struct walk {
    md_library *lib;
    char **files;
    int n, cap;
    cJSON *skipped, *errors;
    int too_many;
} walk;

static void add_reason(cJSON *arr, const char *path, const char *key, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddStringToObject(o, key, msg);
    cJSON_AddItemToArray(arr, o);
}

static md_status walk_add(walk *w, const char *canon)
{
    if (w->n >= MAX_INDEX_FILES) {
        w->too_many = 1;
        return MD_OK;
    }
    if (w->n == w->cap) {
        int nc = w->cap ? w->cap * 2 : 64;
        char **nf = realloc(w->files, (size_t)nc * sizeof *nf);
        if (!nf)
            return MD_ERR_NOMEM;
        w->files = nf;
        w->cap = nc;
    }
    if (!(w->files[w->n] = strdup(canon)))
        return MD_ERR_NOMEM;
    w->n++;
    return MD_OK;
}

/* Walks DIR (canonical, inside a root). Symlinked directories are not
 * followed (they could loop); symlinked files are followed only when their
 * target is inside an allowed root. */
static md_status walk_dir(walk *w, const char *dir, int depth)
{
    md_status s = MD_OK;
    if (depth > 64) {
        add_reason(w->errors, dir, "message", "directory tree deeper than 64 levels; not descended");
        return MD_OK;
    }
    DIR *d = opendir(dir);
    if (!d) {
        add_reason(w->errors, dir, "message", strerror(errno));
        return MD_OK;
    }
    struct dirent *de;
    while (s == MD_OK && !w->too_many && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue; /* ".", "..", and hidden files */
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p)
            continue;
        struct stat sb;
        if (lstat(p, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            s = walk_dir(w, p, depth + 1);
        } else if (S_ISREG(sb.st_mode)) {
            if (has_video_ext(de->d_name))
                s = walk_add(w, p);
        } else if (S_ISLNK(sb.st_mode) && has_video_ext(de->d_name)) {
            char *c = realpath(p, NULL);
            struct stat tb;
            if (!c || stat(c, &tb) != 0 || !S_ISREG(tb.st_mode))
                add_reason(w->skipped, p, "reason", "broken or non-file symlink");
            else if (!under_root(w->lib, c))
                add_reason(w->skipped, p, "reason", "symlink leads outside the allowed roots");
            else
                s = walk_add(w, c);
            free(c);
        }
    }
    closedir(d);
    return s;
}

md_status md_library_index_paths(md_library *lib, const char *const *paths, int n, cJSON **out, md_error *e)
{
    md_status s = MD_OK;
    walk w = {.lib = lib};
    char **canon = NULL;
    cJSON *res = cJSON_CreateObject(), *queued = cJSON_AddArrayToObject(res, "queued");
    w.skipped = cJSON_AddArrayToObject(res, "skipped");
    w.errors = cJSON_AddArrayToObject(res, "errors");
    int any_new = 0;
    *out = NULL;

    if (lib->p.n_allowed_roots == 0) {
        s = md_fail(e, MD_ERR_FORBIDDEN, "indexing server paths is disabled: no allowed_roots are configured");
        goto out;
    }
    if (!(canon = calloc((size_t)n + 1, sizeof *canon))) {
        s = md_fail(e, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* Check every path before doing anything, so a forbidden one queues nothing. */
    for (int i = 0; i < n; i++) {
        char lex[PATH_MAX];
        if (paths[i][0] != '/') {
            s = md_fail(e, MD_ERR_INVALID, "path '%s' is not absolute", paths[i]);
            goto out;
        }
        if (lexical_normalise(paths[i], lex, sizeof lex) != 0 || !under_root(lib, lex)) {
            s = md_fail(e, MD_ERR_FORBIDDEN, "path '%s' is outside the allowed roots", paths[i]);
            goto out;
        }
        if (!(canon[i] = realpath(paths[i], NULL))) {
            s = md_fail(e, errno == ENOENT ? MD_ERR_NOT_FOUND : MD_ERR_IO, "path '%s': %s", paths[i], strerror(errno));
            goto out;
        }
        if (!under_root(lib, canon[i])) {
            s = md_fail(e, MD_ERR_FORBIDDEN, "path '%s' resolves to '%s', outside the allowed roots", paths[i],
                        canon[i]);
            goto out;
        }
    }
    for (int i = 0; i < n && s == MD_OK; i++) {
        struct stat sb;
        if (stat(canon[i], &sb) != 0)
            add_reason(w.errors, canon[i], "message", strerror(errno));
        else if (S_ISDIR(sb.st_mode))
            s = walk_dir(&w, canon[i], 0);
        else if (S_ISREG(sb.st_mode))
            s = walk_add(&w, canon[i]);
        else
            add_reason(w.errors, canon[i], "message", "not a regular file or directory");
    }
    if (s != MD_OK) {
        md_fail(e, s, "out of memory while listing files");
        goto out;
    }
    if (w.too_many) {
        s = md_fail(e, MD_ERR_TOO_LARGE, "more than %d files; index subdirectories in separate requests",
                    MAX_INDEX_FILES);
        goto out;
    }
    for (int i = 0; i < w.n; i++) {
        char sha[65];
        long long size = 0, id = 0;
        md_status hs = md_sha256_file(w.files[i], sha, &size);
        if (hs != MD_OK) {
            add_reason(w.errors, w.files[i], "message", hs == MD_ERR_NOT_FOUND ? "file vanished" : "cannot read file");
            continue;
        }
        pthread_mutex_lock(&lib->db_mu);
        md_error ie;
        md_status is = find_sha(lib, sha, &id, &ie);
        if (is == MD_OK && id) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "path", w.files[i]);
            cJSON_AddStringToObject(o, "reason", "already known (same sha256)");
            cJSON_AddNumberToObject(o, "video_id", (double)id);
            cJSON_AddItemToArray(w.skipped, o);
        } else if (is == MD_OK) {
            const char *base = strrchr(w.files[i], '/');
            is = insert_video(lib, sha, base ? base + 1 : w.files[i], "path", w.files[i], size, &id, &ie);
            if (is == MD_OK) {
                cJSON *vj = NULL;
                if (video_and_job(lib, id, &vj, &ie) == MD_OK) {
                    cJSON_AddStringToObject(vj, "path", w.files[i]);
                    cJSON_AddItemToArray(queued, vj);
                }
                any_new = 1;
            }
        }
        pthread_mutex_unlock(&lib->db_mu);
        if (is != MD_OK)
            add_reason(w.errors, w.files[i], "message", ie.msg);
        if (any_new && i % 16 == 15)
            wake_workers(lib); /* let workers start while we hash the rest */
    }
    *out = res;
    res = NULL;
out:
    if (any_new)
        wake_workers(lib);
    for (int i = 0; canon && i < n; i++)
        free(canon[i]);
    free(canon);
    for (int i = 0; i < w.n; i++)
        free(w.files[i]);
    free(w.files);
    cJSON_Delete(res);
    return s;
}
