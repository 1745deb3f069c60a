/* videos.c - videos and jobs as the API shows them: list, get, delete, statistics, and the JSON
 * views of the store's records (md_video_json, md_job_json), built here and nowhere else.
 *
 * The views' field names and types are the API's (README, server/openapi.json): times are ISO
 * 8601 strings in UTC, unknown values are null, uploads do not show their internal path.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "library_internal.h"

md_status md_store_fail(md_errbuf *e, md_status st, md_store *s) { return md_fail(e, st, "%s", md_store_error(s)); }

/* ---- JSON views ---------------------------------------------------------------------------- */

void md_json_add_path(cJSON *o, const char *key, const char *path)
{
    char fixed[3 * MD_STORE_PATH_MAX + 1];
    md_utf8_repair(path, strnlen(path, MD_STORE_PATH_MAX), fixed, sizeof fixed);
    cJSON_AddStringToObject(o, key, fixed);
}

static void add_time(cJSON *o, const char *key, long long ms)
{
    if (ms <= 0) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char b[24], out[32];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, sizeof out, "%s.%03dZ", b, (int)(ms % 1000));
    cJSON_AddStringToObject(o, key, out);
}

static void add_num_or_null(cJSON *o, const char *key, int known, double v)
{
    if (known)
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

static void add_str_or_null(cJSON *o, const char *key, const char *v)
{
    if (v && v[0])
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

static const char *video_status(const md_video_rec *v)
{
    if (!v->job_id)
        return "unknown";
    switch (v->job_state) {
    case MD_JOB_DONE: return "ready";
    case MD_JOB_FAILED: return "failed";
    case MD_JOB_RUNNING: return "indexing";
    case MD_JOB_CANCELLED: return "cancelled";
    case MD_JOB_QUEUED: break;
    }
    return "queued";
}

cJSON *md_video_json(const md_video_rec *v)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    const md_probe_rec *p = &v->probe;
    int probed = v->indexed_at_ms > 0;
    cJSON_AddNumberToObject(o, "id", (double)v->id);
    /* Names stored before they were cleaned at the door may hold any bytes: valid UTF-8 out. */
    char name[3 * MD_STORE_NAME_MAX + 1];
    md_utf8_repair(v->name, strlen(v->name), name, sizeof name);
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, "sha256", v->sha256);
    cJSON_AddStringToObject(o, "source", md_video_source_name(v->source));
    /* Uploads live at an internal path; only archive paths mean something to users. */
    if (v->source == MD_SOURCE_PATH)
        md_json_add_path(o, "path", v->path);
    cJSON_AddNumberToObject(o, "size_bytes", (double)v->size_bytes);
    add_time(o, "created_at", v->created_at_ms);
    add_num_or_null(o, "duration_ms", probed && p->duration_ms >= 0, (double)p->duration_ms);
    add_num_or_null(o, "width", probed, p->width);
    add_num_or_null(o, "height", probed, p->height);
    add_num_or_null(o, "fps", probed && p->fps > 0, p->fps);
    add_num_or_null(o, "rotation", probed, p->rotation);
    add_str_or_null(o, "codec", probed ? p->codec : NULL);
    add_str_or_null(o, "format", probed ? p->format : NULL);
    add_num_or_null(o, "n_streams", probed, p->n_streams);
    add_num_or_null(o, "n_packets", probed, (double)p->n_packets);
    add_num_or_null(o, "n_corrupt", probed, (double)p->n_corrupt);
    add_time(o, "indexed_at", v->indexed_at_ms);
    add_num_or_null(o, "n_frames", v->has_tokens, (double)v->n_frames);
    add_num_or_null(o, "n_segments", v->has_tokens, (double)v->n_segments);
    add_num_or_null(o, "tokens_per_frame", v->has_tokens, v->tokens_per_frame);
    add_num_or_null(o, "embed_dim", v->has_tokens, v->embed_dim);
    add_str_or_null(o, "temporal", v->has_tokens ? v->temporal : NULL);
    add_num_or_null(o, "job_id", v->job_id > 0, (double)v->job_id);
    add_str_or_null(o, "error", v->job_error);
    cJSON_AddStringToObject(o, "status", video_status(v));
    /* What the last indexing run covered: a cut file is "ready" as far as it goes, and says so. */
    if (v->has_coverage) {
        cJSON_AddBoolToObject(o, "truncated", v->truncated);
        add_num_or_null(o, "indexed_duration_s", v->indexed_ms >= 0, v->indexed_ms / 1000.0);
    } else {
        cJSON_AddNullToObject(o, "truncated");
        cJSON_AddNullToObject(o, "indexed_duration_s");
    }
    add_num_or_null(o, "duration_s", probed && p->duration_ms >= 0, p->duration_ms / 1000.0);
    /* Token reduction: the CLIP tokens of the sampled frames versus the segment vectors kept. */
    double nf = (double)v->n_frames, ns = (double)v->n_segments, tpf = v->tokens_per_frame, dim = v->embed_dim;
    if (v->has_tokens && nf > 0 && ns > 0 && tpf > 0 && dim > 0) {
        cJSON *t = cJSON_AddObjectToObject(o, "token_reduction");
        cJSON_AddNumberToObject(t, "clip_tokens", nf * tpf);
        cJSON_AddNumberToObject(t, "stored_vectors", ns);
        cJSON_AddNumberToObject(t, "ratio", (double)(long long)(nf * tpf / ns * 10 + 0.5) / 10);
        cJSON_AddNumberToObject(t, "raw_bytes_fp16", nf * tpf * dim * 2);
        cJSON_AddNumberToObject(t, "stored_bytes", ns * dim * 2);
        if (probed && p->duration_ms > 0)
            cJSON_AddNumberToObject(t, "stored_bytes_per_hour", (double)(long long)(ns * dim * 2 / (p->duration_ms / 3.6e6)));
    }
    return o;
}

cJSON *md_job_json(const md_job_rec *j)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "id", (double)j->id);
    cJSON_AddNumberToObject(o, "video_id", (double)j->video_id);
    cJSON_AddStringToObject(o, "kind", j->kind);
    cJSON_AddStringToObject(o, "state", md_job_state_name(j->state));
    add_str_or_null(o, "error", j->error);
    cJSON_AddNumberToObject(o, "attempts", j->attempts);
    add_time(o, "created_at", j->created_at_ms);
    add_time(o, "started_at", j->started_at_ms);
    add_time(o, "finished_at", j->finished_at_ms);
    add_time(o, "updated_at", j->updated_at_ms);
    double done = (double)j->progress_done, total = (double)j->progress_total;
    cJSON *pr = cJSON_AddObjectToObject(o, "progress");
    cJSON_AddNumberToObject(pr, "done", done);
    cJSON_AddNumberToObject(pr, "total", total);
    cJSON_AddStringToObject(pr, "unit", j->progress_unit);
    double pct = j->state == MD_JOB_DONE ? 100 : total > 0 ? 100.0 * done / total : 0;
    cJSON_AddNumberToObject(pr, "percent", (double)(long long)(pct * 10 + 0.5) / 10);
    /* ETA from this attempt's rate; unknown until some progress was made. */
    if (j->state == MD_JOB_RUNNING && j->started_at_ms > 0 && done > 0 && total > done) {
        double elapsed = (double)(md_now_ms() - j->started_at_ms) / 1000.0;
        cJSON_AddNumberToObject(pr, "eta_s", (double)(long long)(elapsed * (total - done) / done * 10) / 10);
    } else if (j->state == MD_JOB_DONE) {
        cJSON_AddNumberToObject(pr, "eta_s", 0);
    } else {
        cJSON_AddNullToObject(pr, "eta_s");
    }
    return o;
}

md_status md_video_and_job_locked(md_library *lib, long long id, cJSON **out, md_errbuf *e)
{
    md_video_rec *v = malloc(sizeof *v);
    md_job_rec j;
    md_status s = MD_OK;
    cJSON *vj = NULL, *jj = NULL;
    *out = NULL;
    if (!v)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    if ((s = md_store_video_get(lib->db, id, v)) != MD_OK) {
        md_store_fail(e, s, lib->db);
        goto out;
    }
    if (v->job_id && (s = md_store_job_get(lib->db, v->job_id, &j)) != MD_OK) {
        md_store_fail(e, s, lib->db);
        goto out;
    }
    vj = md_video_json(v);
    jj = v->job_id ? md_job_json(&j) : cJSON_CreateNull();
    if (!vj || !jj || !(*out = cJSON_CreateObject())) {
        s = md_fail(e, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    cJSON_AddItemToObject(*out, "video", vj);
    cJSON_AddItemToObject(*out, "job", jj);
    vj = jj = NULL;
out:
    cJSON_Delete(vj);
    cJSON_Delete(jj);
    free(v);
    return s;
}

/* ---- list, get, delete, statistics ---------------------------------------------------------- */

/* "total", "limit", "offset" and "next_offset" (null on the last page) of a listing. */
static void add_page(cJSON *res, long long total, long long limit, long long offset)
{
    cJSON_AddNumberToObject(res, "total", (double)total);
    cJSON_AddNumberToObject(res, "limit", (double)limit);
    cJSON_AddNumberToObject(res, "offset", (double)offset);
    if (offset + limit < total)
        cJSON_AddNumberToObject(res, "next_offset", (double)(offset + limit));
    else
        cJSON_AddNullToObject(res, "next_offset");
}

md_status md_library_list_videos(md_library *lib, long long limit, long long offset, cJSON **out, md_errbuf *e)
{
    md_video_rec *recs = NULL;
    int n = 0;
    long long total = 0;
    *out = NULL;
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_video_list(lib->db, limit, offset, &recs, &n, &total);
    if (s != MD_OK)
        md_store_fail(e, s, lib->db);
    pthread_mutex_unlock(&lib->db_mu);
    if (s != MD_OK)
        return s;
    cJSON *res = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(res, "videos");
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, md_video_json(&recs[i]));
    free(recs);
    add_page(res, total, limit, offset);
    *out = res;
    return MD_OK;
}

md_status md_library_get_video(md_library *lib, long long id, cJSON **out, md_errbuf *e)
{
    md_video_rec *v = malloc(sizeof *v);
    *out = NULL;
    if (!v)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_video_get(lib->db, id, v);
    if (s != MD_OK)
        md_store_fail(e, s, lib->db);
    pthread_mutex_unlock(&lib->db_mu);
    if (s == MD_OK && !(*out = md_video_json(v)))
        s = md_fail(e, MD_ERR_NOMEM, "out of memory");
    free(v);
    return s;
}

md_status md_library_get_job(md_library *lib, long long id, cJSON **out, md_errbuf *e)
{
    md_job_rec j;
    *out = NULL;
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_job_get(lib->db, id, &j);
    if (s != MD_OK)
        md_store_fail(e, s, lib->db);
    pthread_mutex_unlock(&lib->db_mu);
    if (s == MD_OK && !(*out = md_job_json(&j)))
        s = md_fail(e, MD_ERR_NOMEM, "out of memory");
    return s;
}

md_status md_library_list_jobs(md_library *lib, const char *state, long long video_id, const char *kind,
                               long long limit, long long offset, cJSON **out, md_errbuf *e)
{
    md_job_query q = {.state = -1, .video_id = video_id, .kind = kind, .limit = limit, .offset = offset};
    *out = NULL;
    if (state) {
        for (int s = MD_JOB_QUEUED; s <= MD_JOB_CANCELLED; s++)
            if (strcmp(state, md_job_state_name((md_job_state)s)) == 0)
                q.state = s;
        if (q.state < 0)
            return md_fail(e, MD_ERR_INVALID, "'state' must be queued, running, done, failed or cancelled, not '%.40s'",
                           state);
    }
    md_job_rec *recs = NULL;
    int n = 0;
    long long total = 0;
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_job_list(lib->db, &q, &recs, &n, &total);
    if (s != MD_OK)
        md_store_fail(e, s, lib->db);
    pthread_mutex_unlock(&lib->db_mu);
    if (s != MD_OK)
        return s;
    cJSON *res = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(res, "jobs");
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, md_job_json(&recs[i]));
    free(recs);
    add_page(res, total, limit, offset);
    *out = res;
    return MD_OK;
}

md_status md_library_cancel_job(md_library *lib, long long id, cJSON **out, md_errbuf *e)
{
    md_job_state was = MD_JOB_QUEUED;
    md_job_rec j;
    *out = NULL;
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_job_cancel(lib->db, id, &was);
    if (s == MD_OK)
        s = md_store_job_get(lib->db, id, &j);
    if (s != MD_OK)
        md_store_fail(e, s, lib->db);
    pthread_mutex_unlock(&lib->db_mu);
    if (s != MD_OK)
        return s;
    md_info("job %lld: cancelled", id);
    if (!(*out = md_job_json(&j)))
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    return MD_OK;
}

md_status md_library_reindex_video(md_library *lib, long long id, cJSON **out, md_errbuf *e)
{
    long long job = 0;
    *out = NULL;
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_video_reindex(lib->db, id, &job);
    if (s != MD_OK)
        md_store_fail(e, s, lib->db);
    else
        s = md_video_and_job_locked(lib, id, out, e);
    pthread_mutex_unlock(&lib->db_mu);
    if (s == MD_OK) {
        md_info("library: video %lld queued again (job %lld)", id, job);
        md_library_wake(lib);
    }
    return s;
}

md_status md_library_delete_video(md_library *lib, long long id, md_errbuf *e)
{
    char path[MD_STORE_PATH_MAX] = "";
    md_video_source src = MD_SOURCE_PATH;
    md_video_rec *v = malloc(sizeof *v);
    if (!v)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_video_get(lib->db, id, v);
    if (s != MD_OK) {
        md_store_fail(e, s, lib->db);
        goto out;
    }
    /* Delete first, write later: on a full disk an upload's own file is what frees the room the
     * database needs to record the delete. Only files we stored are ours to remove; archive files
     * indexed in place stay. */
    if (v->source == MD_SOURCE_UPLOAD && unlink(v->path) != 0 && errno != ENOENT)
        md_warn("library: cannot remove %s of video %lld: %s", v->path, id, strerror(errno));
    s = md_store_video_delete(lib->db, id, &src, path, sizeof path);
    if (s == MD_ERR_NO_SPACE && md_library_release_reserve(lib))
        s = md_store_video_delete(lib->db, id, &src, path, sizeof path);
    if (s != MD_OK) {
        md_store_fail(e, s, lib->db);
        goto out;
    }
    if (lib->index)
        md_index_remove_video(lib->index, id); /* gone from results at once */
out:
    pthread_mutex_unlock(&lib->db_mu);
    free(v);
    if (s == MD_OK) {
        md_info("library: deleted video %lld", id);
        md_library_keep_reserve(lib);
    }
    return s;
}

const char *md_stage_name(md_stage s)
{
    static const char *const names[MD_STAGE_COUNT] = {"probe", "decode", "embed", "temporal", "store"};
    return s >= 0 && s < MD_STAGE_COUNT ? names[s] : "unknown";
}

const char *md_fail_reason_name(md_fail_reason r)
{
    static const char *const names[MD_FAIL_COUNT] = {"not_media", "truncated", "unsupported", "refused",
                                                     "missing",   "limit",     "storage",     "other"};
    return r >= 0 && r < MD_FAIL_COUNT ? names[r] : "unknown";
}

md_status md_library_stats_get(md_library *lib, md_library_stats *out, md_errbuf *e)
{
    md_store_stats st;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&lib->db_mu);
    md_status s = md_store_stats_get(lib->db, &st);
    if (s != MD_OK)
        md_store_fail(e, s, lib->db);
    pthread_mutex_unlock(&lib->db_mu);
    if (s != MD_OK)
        return s;
    out->jobs_queued = st.jobs_queued;
    out->jobs_running = st.jobs_running;
    out->jobs_done = st.jobs_done;
    out->jobs_failed = st.jobs_failed;
    out->videos = st.videos;
    out->bytes_stored = st.bytes_stored;
    out->bytes_indexed_paths = st.bytes_indexed_paths;
    pthread_mutex_lock(&lib->stats_mu);
    memcpy(out->stage_seconds, lib->stage_seconds, sizeof out->stage_seconds);
    memcpy(out->failures, lib->failures, sizeof out->failures);
    pthread_mutex_unlock(&lib->stats_mu);
    return MD_OK;
}
