/* store.c - the storage interface's front (store.h): picks the implementation for a path and
 * calls through its table. No SQL here; that lives in the implementations (store_sqlite.c). */
#include "store_impl.h"

#include <stdio.h>

md_status md_store_open(const char *path, md_store **out, char *err, size_t errlen)
{
    /* One implementation today; a "postgresql://" URL will pick the PostgreSQL one. */
    return md_store_sqlite()->open(path, out, err, errlen);
}

void md_store_close(md_store *s)
{
    if (s)
        s->i->close(s);
}

const char *md_store_error(const md_store *s) { return s ? s->err : ""; }
int md_store_version(md_store *s) { return s->i->version(s); }
int md_store_latest_version(md_store *s) { return s->i->latest_version(s); }

/* Every call starts with an empty message, so md_store_error() is about the last call only. */
#define CALL(s, fn, ...) ((s)->err[0] = 0, (s)->i->fn((s), __VA_ARGS__))

md_status md_store_video_insert(md_store *s, const md_video_new *v, long long *video_id, long long *job_id)
{
    return CALL(s, video_insert, v, video_id, job_id);
}
md_status md_store_video_find_sha(md_store *s, const char *sha256, long long *id)
{
    return CALL(s, video_find_sha, sha256, id);
}
md_status md_store_video_get(md_store *s, long long id, md_video_rec *out) { return CALL(s, video_get, id, out); }
md_status md_store_video_list(md_store *s, long long limit, long long offset, md_video_rec **out, int *n,
                              long long *total)
{
    return CALL(s, video_list, limit, offset, out, n, total);
}
md_status md_store_video_delete(md_store *s, long long id, md_video_source *source, char *path, size_t pathlen)
{
    return CALL(s, video_delete, id, source, path, pathlen);
}
md_status md_store_video_set_probe(md_store *s, long long id, const md_probe_rec *p)
{
    return CALL(s, video_set_probe, id, p);
}
md_status md_store_video_add_damage(md_store *s, long long id, long long n) { return CALL(s, video_add_damage, id, n); }
md_status md_store_video_set_coverage(md_store *s, long long id, int truncated, long long indexed_ms)
{
    return CALL(s, video_set_coverage, id, truncated, indexed_ms);
}
md_status md_store_video_set_tokens(md_store *s, long long id, long long n_frames, long long n_segments,
                                    int tokens_per_frame, int embed_dim, const char *temporal)
{
    return CALL(s, video_set_tokens, id, n_frames, n_segments, tokens_per_frame, embed_dim, temporal);
}
md_status md_store_job_get(md_store *s, long long id, md_job_rec *out) { return CALL(s, job_get, id, out); }
md_status md_store_job_claim(md_store *s, md_job_claim *out) { return CALL(s, job_claim, out); }
md_status md_store_job_list(md_store *s, const md_job_query *q, md_job_rec **out, int *n, long long *total)
{
    return CALL(s, job_list, q, out, n, total);
}
md_status md_store_job_cancel(md_store *s, long long id, md_job_state *state) { return CALL(s, job_cancel, id, state); }
md_status md_store_video_reindex(md_store *s, long long video_id, long long *job_id)
{
    return CALL(s, video_reindex, video_id, job_id);
}
md_status md_store_job_progress(md_store *s, long long job_id, long long done, long long total, const char *unit,
                                int *gone)
{
    return CALL(s, job_progress, job_id, done, total, unit, gone);
}
md_status md_store_job_finish(md_store *s, long long job_id, md_job_state state, const char *error)
{
    return CALL(s, job_finish, job_id, state, error);
}
md_status md_store_job_requeue(md_store *s, long long job_id) { return CALL(s, job_requeue, job_id); }
md_status md_store_jobs_recover(md_store *s, int retries, md_store_recover_fn each, void *ctx)
{
    return CALL(s, jobs_recover, retries, each, ctx);
}
md_status md_store_jobs_queue_reindex(md_store *s, long long model_id, int *n_queued)
{
    return CALL(s, jobs_queue_reindex, model_id, n_queued);
}
md_status md_store_job_checkpoint(md_store *s, long long job_id, long long model_id, void **blob, size_t *len,
                                  long long *stored)
{
    return CALL(s, job_checkpoint, job_id, model_id, blob, len, stored);
}
md_status md_store_window_commit(md_store *s, const md_window_rec *w) { return CALL(s, window_commit, w); }
md_status md_store_segments_clear(md_store *s, long long video_id, long long model_id)
{
    return CALL(s, segments_clear, video_id, model_id);
}
md_status md_store_segments_load(md_store *s, long long model_id, int dim, md_store_segment_fn fn, void *ctx,
                                 long long *bad)
{
    return CALL(s, segments_load, model_id, dim, fn, ctx, bad);
}
md_status md_store_model_register(md_store *s, const md_model_rec *m, long long *model_id)
{
    return CALL(s, model_register, m, model_id);
}
md_status md_store_stats_get(md_store *s, md_store_stats *out) { return CALL(s, stats_get, out); }

const char *md_video_source_name(md_video_source s) { return s == MD_SOURCE_UPLOAD ? "upload" : "path"; }

const char *md_job_state_name(md_job_state s)
{
    switch (s) {
    case MD_JOB_QUEUED: return "queued";
    case MD_JOB_RUNNING: return "running";
    case MD_JOB_DONE: return "done";
    case MD_JOB_FAILED: return "failed";
    case MD_JOB_CANCELLED: return "cancelled";
    }
    return "unknown";
}
