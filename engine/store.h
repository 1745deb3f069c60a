/* store.h - the storage interface of momentd: videos, jobs, segment embeddings and models.
 *
 * Callers see an opaque md_store and functions named for what they do; no SQL and no database
 * types cross this header. Behind it is a table of functions (md_store_i, like the backend
 * interface in backend.h) with one implementation today, SQLite (store_sqlite.c: one file in
 * the data directory, WAL, schema/NNN-*.sql migrations); a PostgreSQL implementation plugs in
 * behind the same table without touching callers.
 *
 * Records are plain C structs (md_video_rec, md_job_rec, ...); the API's JSON is built from
 * them (engine/videos.c), never from database rows. Stored segment embeddings are IEEE halves;
 * how they are laid out in the database is the implementation's business.
 *
 * Ids are never reused: a deleted video's or job's id is never handed out again.
 *
 * Thread-safety: one md_store is one connection, used by one thread at a time (a caller that
 * shares one holds its own mutex); every thread that works independently opens its own.
 * Connections wait for each other (busy timeout) instead of failing. Every function returns an
 * md_status; on failure md_store_error() says what went wrong, with context ("database error
 * while adding a video: ..."), until the next call on the same store.
 */
#ifndef MD_STORE_H
#define MD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

typedef struct md_store md_store;

typedef enum md_video_source { MD_SOURCE_UPLOAD, MD_SOURCE_PATH } md_video_source;
typedef enum md_job_state { MD_JOB_QUEUED, MD_JOB_RUNNING, MD_JOB_DONE, MD_JOB_FAILED, MD_JOB_CANCELLED } md_job_state;

#define MD_STORE_NAME_MAX 256  /* bytes of a video name, with the terminating NUL */
#define MD_STORE_PATH_MAX 4096 /* bytes of a stored path, with the terminating NUL */
#define MD_STORE_ERROR_MAX 700 /* bytes of a job's error message, with the terminating NUL */

/* What indexing learned of a file (video/ probe): the fields of md_video_info that are kept. */
typedef struct md_probe_rec {
    long long duration_ms; /* -1: unknown */
    int width, height;
    double fps;            /* 0: unknown */
    int rotation;
    char codec[32];
    char format[64];
    int n_streams;
    long long n_packets, n_corrupt;
} md_probe_rec;

/* Which file: (device, inode, size, modification time in ns) when it was added. All 0: unknown
 * (videos added before schema 004). */
typedef struct md_file_id {
    long long dev, ino, size, mtime_ns;
} md_file_id;

typedef struct md_video_rec {
    long long id;
    char sha256[65];
    char name[MD_STORE_NAME_MAX];
    md_video_source source;
    char path[MD_STORE_PATH_MAX]; /* the stored file (upload) or the archive file (path) */
    long long size_bytes;
    md_file_id file;
    long long created_at_ms;
    long long indexed_at_ms; /* 0: not probed yet, and PROBE is meaningless */
    int has_coverage;        /* 1 once an indexing run recorded the two below */
    int truncated;           /* the file ended early (cut or damaged) */
    long long indexed_ms;    /* duration actually decoded and indexed */
    md_probe_rec probe;
    int has_tokens;          /* 1 once an indexing run recorded the counts below */
    long long n_frames, n_segments;
    int tokens_per_frame, embed_dim;
    char temporal[160];      /* which temporal encoder produced the segments */
    /* The video's latest job: 0 when it has none. */
    long long job_id;
    md_job_state job_state;
    char job_error[MD_STORE_ERROR_MAX]; /* "" when none */
} md_video_rec;

typedef struct md_job_rec {
    long long id, video_id;
    char kind[16]; /* "index" */
    md_job_state state;
    long long progress_done, progress_total;
    char progress_unit[16]; /* "bytes", "frames" */
    char error[MD_STORE_ERROR_MAX]; /* "" when none */
    int attempts;       /* times a worker started it */
    long long created_at_ms, updated_at_ms;
    long long started_at_ms, finished_at_ms; /* 0: not yet */
} md_job_rec;

/* A new video: inserted together with its queued index job. */
typedef struct md_video_new {
    const char *sha256, *name, *path;
    md_video_source source;
    long long size_bytes;
    md_file_id file;
} md_video_new;

/* Which jobs md_store_job_list returns: every field is a filter unless unset. */
typedef struct md_job_query {
    int state;          /* an md_job_state, or -1 for any */
    long long video_id; /* 0: any */
    const char *kind;   /* NULL: any */
    long long limit, offset;
} md_job_query;

/* A claimed job: what a worker needs to run it. */
typedef struct md_job_claim {
    long long job_id, video_id;
    md_video_source source;
    char path[MD_STORE_PATH_MAX];
    md_file_id file;
} md_job_claim;

/* One segment embedding of DIM halves (borrowed for the call). */
typedef struct md_segment_rec {
    int seq;
    long long start_ms, end_ms;
    const uint16_t *emb;
} md_segment_rec;

/* What one window of a job commits, in one transaction: its segments, the temporal stream's
 * checkpoint after them and the job's progress. */
typedef struct md_window_rec {
    long long job_id, video_id, model_id;
    long long progress_done; /* frames done: the job's progress (its total grows to at least this) */
    const void *checkpoint;
    size_t checkpoint_len;
    const md_segment_rec *segs;
    int n_segs, dim;
} md_window_rec;

/* Provenance of a model: the vectors of different models are never mixed. */
typedef struct md_model_rec {
    const char *name, *kind;  /* "clip-vit-base-patch32", "clip+temporal" */
    const char *weights_sha256; /* over CLIP and the temporal encoder */
    const char *preprocess_hash;
    const char *temporal_sha256;
    const char *config;       /* JSON, for humans */
    int dim;
} md_model_rec;

typedef struct md_store_stats {
    long long jobs_queued, jobs_running, jobs_done, jobs_failed;
    long long videos;
    long long bytes_stored;        /* uploaded files kept in data_dir */
    long long bytes_indexed_paths; /* archive files indexed in place */
} md_store_stats;

/* Called for each stored segment by md_store_segments_load; a non-MD_OK return stops the load. */
typedef md_status (*md_store_segment_fn)(void *ctx, long long video_id, int seq, long long start_ms, long long end_ms,
                                         const uint16_t *emb);
/* Called for each job md_store_jobs_recover found running: RESUMED 1 (queued again) or 0 (failed). */
typedef void (*md_store_recover_fn)(void *ctx, long long job_id, int resumed);

/* ---- connections ------------------------------------------------------------------------- */

/* Opens (creating if needed) the store at PATH (a SQLite file) and brings its schema up to
 * date. A file that is not a database, a damaged one, or one whose schema is newer than this
 * binary (MD_ERR_CONFLICT) is refused with a message in ERR. *OUT is NULL on failure. */
md_status md_store_open(const char *path, md_store **out, char *err, size_t errlen);
/* Closes the connection. NULL is a no-op. */
void md_store_close(md_store *s);
/* The last failure's message; "" after success. Borrowed until the next call on S. */
const char *md_store_error(const md_store *s);
/* Schema version of the open store, and the newest this binary knows. */
int md_store_version(md_store *s);
int md_store_latest_version(md_store *s);

/* ---- videos ------------------------------------------------------------------------------ */

/* Inserts V and its queued index job in one transaction. MD_ERR_CONFLICT when the sha256 is known. */
md_status md_store_video_insert(md_store *s, const md_video_new *v, long long *video_id, long long *job_id);
/* The video with this content hash; *ID = 0 when there is none. */
md_status md_store_video_find_sha(md_store *s, const char *sha256, long long *id);
/* MD_ERR_NOT_FOUND for an unknown id. */
md_status md_store_video_get(md_store *s, long long id, md_video_rec *out);
/* Videos by id, LIMIT from OFFSET: *OUT is a malloc'd array of *N records (free()), *TOTAL all videos. */
md_status md_store_video_list(md_store *s, long long limit, long long offset, md_video_rec **out, int *n,
                              long long *total);
/* Deletes the video with its jobs and segments; *SOURCE and PATH say which file it had.
 * MD_ERR_NOT_FOUND for an unknown id. */
md_status md_store_video_delete(md_store *s, long long id, md_video_source *source, char *path, size_t pathlen);
/* The probe's findings (also sets indexed_at). */
md_status md_store_video_set_probe(md_store *s, long long id, const md_probe_rec *p);
/* Damage seen while decoding: the kept count of corrupt packets becomes at least N. */
md_status md_store_video_add_damage(md_store *s, long long id, long long n);
/* What the last indexing run covered (md_video_rec.truncated, indexed_ms). */
md_status md_store_video_set_coverage(md_store *s, long long id, int truncated, long long indexed_ms);
/* Token accounting of the last indexing run. */
md_status md_store_video_set_tokens(md_store *s, long long id, long long n_frames, long long n_segments,
                                    int tokens_per_frame, int embed_dim, const char *temporal);

/* ---- jobs -------------------------------------------------------------------------------- */

/* MD_ERR_NOT_FOUND for an unknown id. */
md_status md_store_job_get(md_store *s, long long id, md_job_rec *out);
/* Jobs matching Q, newest first: *OUT a malloc'd array of *N records (free()), *TOTAL all matches. */
md_status md_store_job_list(md_store *s, const md_job_query *q, md_job_rec **out, int *n, long long *total);
/* Cancels a queued or running job (state cancelled at once; a running job's worker finds out at its
 * next write and stops, keeping what it committed). MD_ERR_NOT_FOUND for an unknown id,
 * MD_ERR_CONFLICT when the job has already ended (*STATE says how). */
md_status md_store_job_cancel(md_store *s, long long id, md_job_state *state);
/* Queues a new index job for VIDEO_ID. MD_ERR_CONFLICT while its latest job is queued or running. */
md_status md_store_video_reindex(md_store *s, long long video_id, long long *job_id);
/* Claims the oldest queued job (state running, attempts + 1, progress from 0); two connections
 * never claim the same job. OUT->job_id = 0 when none is queued. */
md_status md_store_job_claim(md_store *s, md_job_claim *out);
/* Progress of a running job: DONE of TOTAL, in UNIT (NULL: unchanged). *GONE (may be NULL) is 1
 * when the job is no longer running (its video was deleted). */
md_status md_store_job_progress(md_store *s, long long job_id, long long done, long long total, const char *unit,
                                int *gone);
/* Ends a job: STATE is MD_JOB_DONE (progress completed) or MD_JOB_FAILED with ERROR. */
md_status md_store_job_finish(md_store *s, long long job_id, md_job_state state, const char *error);
/* Puts an interrupted running job back in the queue with its progress; the attempt does not count. */
md_status md_store_job_requeue(md_store *s, long long job_id);
/* At start-up: jobs left running by a crash are queued again, or failed after RETRIES
 * interruptions; EACH (may be NULL) hears of every one. */
md_status md_store_jobs_recover(md_store *s, int retries, md_store_recover_fn each, void *ctx);
/* Queues an index job for every finished video that has no segments of MODEL_ID. */
md_status md_store_jobs_queue_reindex(md_store *s, long long model_id, int *n_queued);
/* The job's saved checkpoint (*BLOB malloc'd, NULL when none) and how many segments of MODEL_ID
 * its video has stored. */
md_status md_store_job_checkpoint(md_store *s, long long job_id, long long model_id, void **blob, size_t *len,
                                  long long *stored);

/* ---- segments and models ----------------------------------------------------------------- */

/* Commits one window (md_window_rec) in one transaction. MD_ERR_CANCELLED, with nothing
 * written, when the job is no longer running (its video was deleted). */
md_status md_store_window_commit(md_store *s, const md_window_rec *w);
/* Removes the segments of VIDEO_ID computed with MODEL_ID. */
md_status md_store_segments_clear(md_store *s, long long video_id, long long model_id);
/* Calls FN for every segment of MODEL_ID (DIM halves each), by video and seq. A damaged row is
 * skipped and counted in *BAD, never fatal. */
md_status md_store_segments_load(md_store *s, long long model_id, int dim, md_store_segment_fn fn, void *ctx,
                                 long long *bad);
/* Records M (or finds it: same weights and preprocessing) and gives its id. */
md_status md_store_model_register(md_store *s, const md_model_rec *m, long long *model_id);

md_status md_store_stats_get(md_store *s, md_store_stats *out);

/* ---- the implementation table -------------------------------------------------------------- */

/* Every implementation fills one of these (store_sqlite.c: md_store_sqlite()). The functions
 * above check nothing themselves and call through it; see them for the contracts. */
typedef struct md_store_i {
    const char *name; /* "sqlite" */
    md_status (*open)(const char *path, md_store **out, char *err, size_t errlen);
    void (*close)(md_store *s);
    int (*version)(md_store *s);
    int (*latest_version)(md_store *s);
    md_status (*video_insert)(md_store *s, const md_video_new *v, long long *video_id, long long *job_id);
    md_status (*video_find_sha)(md_store *s, const char *sha256, long long *id);
    md_status (*video_get)(md_store *s, long long id, md_video_rec *out);
    md_status (*video_list)(md_store *s, long long limit, long long offset, md_video_rec **out, int *n,
                            long long *total);
    md_status (*video_delete)(md_store *s, long long id, md_video_source *source, char *path, size_t pathlen);
    md_status (*video_set_probe)(md_store *s, long long id, const md_probe_rec *p);
    md_status (*video_add_damage)(md_store *s, long long id, long long n);
    md_status (*video_set_coverage)(md_store *s, long long id, int truncated, long long indexed_ms);
    md_status (*video_set_tokens)(md_store *s, long long id, long long n_frames, long long n_segments,
                                  int tokens_per_frame, int embed_dim, const char *temporal);
    md_status (*job_get)(md_store *s, long long id, md_job_rec *out);
    md_status (*job_claim)(md_store *s, md_job_claim *out);
    md_status (*job_list)(md_store *s, const md_job_query *q, md_job_rec **out, int *n, long long *total);
    md_status (*job_cancel)(md_store *s, long long id, md_job_state *state);
    md_status (*video_reindex)(md_store *s, long long video_id, long long *job_id);
    md_status (*job_progress)(md_store *s, long long job_id, long long done, long long total, const char *unit,
                              int *gone);
    md_status (*job_finish)(md_store *s, long long job_id, md_job_state state, const char *error);
    md_status (*job_requeue)(md_store *s, long long job_id);
    md_status (*jobs_recover)(md_store *s, int retries, md_store_recover_fn each, void *ctx);
    md_status (*jobs_queue_reindex)(md_store *s, long long model_id, int *n_queued);
    md_status (*job_checkpoint)(md_store *s, long long job_id, long long model_id, void **blob, size_t *len,
                                long long *stored);
    md_status (*window_commit)(md_store *s, const md_window_rec *w);
    md_status (*segments_clear)(md_store *s, long long video_id, long long model_id);
    md_status (*segments_load)(md_store *s, long long model_id, int dim, md_store_segment_fn fn, void *ctx,
                               long long *bad);
    md_status (*model_register)(md_store *s, const md_model_rec *m, long long *model_id);
    md_status (*stats_get)(md_store *s, md_store_stats *out);
} md_store_i;

const md_store_i *md_store_sqlite(void);

/* Names of the enum values as the API shows them ("upload", "queued", ...). */
const char *md_video_source_name(md_video_source s);
const char *md_job_state_name(md_job_state s);

#endif
