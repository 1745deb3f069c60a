/* momentd.h - the momentd engine library: the video library, its jobs and workers.
 *
 * This is the one header the server includes; SQLite, FFmpeg and CUDA stay
 * behind it (with it come base/status.h, base/log.h and base/utf8.h). Usage:
 *
 *   md_engine_params ep = {.device = "auto", .workers = 2};
 *   md_engine_init(&ep, NULL, &e);                // once: FFmpeg, the device, math threads
 *
 *   md_library_params p = md_library_default_params();
 *   p.data_dir = "./data";
 *   md_library *lib; md_errbuf e;
 *   if (md_library_open(&p, &lib, &e) != MD_OK) { fprintf(stderr, "%s\n", e.msg); exit(1); }
 *   md_library_start(lib);                        // worker threads start taking jobs
 *   md_upload *u; md_upload_begin(lib, "clip.mp4", &u, &e);
 *   md_upload_write(u, bytes, n, &e);             // as the body arrives, any number of times
 *   cJSON *res; int created; md_upload_finish(u, &res, &created, &e);  // {"video":..,"job":..}
 *   ...
 *   md_library_close(lib);                        // workers checkpoint, database closes
 *
 * Thread-safety: every md_library_* and md_upload_* function may be called from
 * any thread at the same time, except that one md_upload is used by one thread
 * at a time and md_library_close() is called once, after all other calls ended.
 * Functions that return cJSON hand ownership to the caller (cJSON_Delete).
 * On failure functions return a status and write a human-readable message to
 * the md_errbuf they are given (which may be NULL).
 */
#ifndef MD_MOMENTD_H
#define MD_MOMENTD_H

#include <stddef.h>

#include "../base/log.h"
#include "../base/status.h"
#include "../base/utf8.h"
#include "cJSON.h"

#define MD_VERSION "0.1.0"


/* Process-wide set-up, called once at start-up before md_library_open (not thread-safe):
 * FFmpeg's global state, the compute device and the CPU math threads. */
typedef struct md_engine_params {
    const char *device; /* "auto" (CUDA when a GPU is found, else the CPU), "cpu", "cuda" */
    long long gpu_mem;  /* bytes of GPU memory the CUDA backend may use; 0: the whole device */
    int threads;        /* CPU math (OpenBLAS) threads; 0: cores / workers, at least 1 */
    int workers;        /* indexing threads that will share the cores */
} md_engine_params;

typedef struct md_engine_info {
    char backend[32];  /* the backend in use: "cpu", "cuda" */
    char device[256];  /* what it runs on, in words */
    int math_threads;  /* CPU math threads in effect */
    int cuda_built;    /* this binary has the CUDA backend */
} md_engine_info;

/* MD_ERR_UNAVAILABLE (naming the setting 'device') when "cuda" is asked for and no GPU can be
 * used. INFO may be NULL. */
md_status md_engine_init(const md_engine_params *p, md_engine_info *info, md_errbuf *e);
/* A program that opens a library with decode isolation (the default) calls this first thing in
 * main(): when ARGV is a decode worker's invocation it runs the worker and returns its exit
 * status; otherwise it returns -1 at once, having touched nothing. */
int md_engine_worker_main(int argc, char **argv);
/* The same facts later (for /v1/health); zeroed before md_engine_init. */
void md_engine_get_info(md_engine_info *info);

typedef struct md_library md_library;
typedef struct md_upload md_upload;
typedef struct md_dir_lock md_dir_lock;

/* One momentd per data directory: takes DATA_DIR/momentd.lock (creating the directory if
 * needed) and writes this process's PID into it. MD_ERR_CONFLICT, with a message naming the
 * directory and the PID that holds it, when another process has it. The kernel releases the
 * lock on any exit, kill -9 included. Call it before anything else touches DATA_DIR (the daemon
 * does, before it listens); md_library_open takes the lock itself when not given one. */
md_status md_data_dir_lock(const char *data_dir, md_dir_lock **out, md_errbuf *e);
/* Releases the lock. NULL is a no-op. */
void md_data_dir_unlock(md_dir_lock *l);

typedef struct md_library_params {
    const char *data_dir;             /* database, uploads (videos/), temporary files (tmp/) */
    md_dir_lock *lock;                /* DATA_DIR's lock, held by the caller; NULL: taken and released here */
    int workers;                      /* indexing threads, >= 1 */
    long long max_upload;             /* bytes */
    const char *const *allowed_roots; /* canonical absolute directories for md_library_index_paths */
    int n_allowed_roots;
    int job_retries;        /* times an interrupted job is resumed before it fails */
    int debug_job_delay_ms; /* test hook: sleep at the start of each job */

    /* The model. */
    const char *model_dir;            /* Hugging Face CLIP checkpoint; NULL or "": the demo model */
    const char *device;               /* "auto", "cpu", "cuda" (md_engine_init first); NULL: the CPU */
    double sample_fps;                /* frames sampled per second of video: 1.0 */
    int keyframes_only;               /* decode only keyframes when they are dense enough (video.h) */
    float mean[3], std[3];            /* CLIP's normalisation (a checkpoint's preprocessor_config.json wins) */
    int segment_frames;               /* frames per stored segment (k): 4 */
    int window_frames;                /* frames per temporal window (T): 32, a multiple of k */
    const char *temporal_path;        /* temporal.safetensors; NULL/"": the model's, else a fresh one */

    /* Untrusted files (uploads, archives, picture queries) are probed and decoded in sandboxed
     * worker processes (video/isolate.h): a crash, hang or runaway allocation fails that job only.
     * The program must call md_engine_worker_main() first thing in main(). */
    int decode_in_process;            /* 1: decode in this process instead (tests, debugging) */
    long long decode_mem_limit;       /* bytes of address space per worker; 0: the default (2 GiB);
                                         < 0: no limit */
    int allow_nested_media;           /* 1: archive files may open other local files (playlists,
                                         references); uploads and picture queries never may */
} md_library_params;

md_library_params md_library_default_params(void);

/* Creates DATA_DIR if needed, takes its lock (unless P->lock holds it: MD_ERR_CONFLICT when
 * another momentd uses it), opens and migrates the database, removes
 * temporary files left by a crash and puts jobs that were running when the
 * process died back in the queue (or fails them after job_retries attempts).
 * Does not start workers. */
md_status md_library_open(const md_library_params *p, md_library **out, md_errbuf *e);
/* Starts the worker threads. */
md_status md_library_start(md_library *lib, md_errbuf *e);
/* Stops taking jobs, lets running jobs checkpoint (they go back to 'queued'
 * with their progress), joins the workers and closes the database. NULL is a no-op. */
void md_library_close(md_library *lib);

/* Uploads: bytes are streamed to a temporary file while being hashed; finish
 * moves the file to its content address. md_upload_write returns
 * MD_ERR_TOO_LARGE past max_upload and MD_ERR_NO_SPACE on a full disk; after
 * any error call md_upload_abort, which removes the temporary file and frees U. */
md_status md_upload_begin(md_library *lib, const char *name, md_upload **out, md_errbuf *e);
md_status md_upload_write(md_upload *u, const void *data, size_t len, md_errbuf *e);
/* Frees U in every case. *CREATED is 1 for a new video (a job was queued) and 0
 * when the same bytes were already known; *OUT is {"video": {...}, "job": {...}}. */
md_status md_upload_finish(md_upload *u, cJSON **out, int *created, md_errbuf *e);
void md_upload_abort(md_upload *u);
long long md_upload_size(const md_upload *u);

/* Videos. List: {"videos": [...], "total": N, "limit": L, "offset": O, "next_offset": N|null}. */
md_status md_library_list_videos(md_library *lib, long long limit, long long offset, cJSON **out, md_errbuf *e);
md_status md_library_get_video(md_library *lib, long long id, cJSON **out, md_errbuf *e);
/* Removes the video's rows (jobs and segments cascade) and, for uploads, its
 * stored file. A running job of that video notices and stops. */
md_status md_library_delete_video(md_library *lib, long long id, md_errbuf *e);

/* Indexes files already on the server. Each path must resolve (symlinks and
 * ".." included) inside an allowed root, else MD_ERR_FORBIDDEN and nothing is
 * queued. Directories are walked recursively for video files. *OUT is
 * {"queued": [...], "skipped": [...], "errors": [...]}. */
md_status md_library_index_paths(md_library *lib, const char *const *paths, int n, cJSON **out, md_errbuf *e);

md_status md_library_get_job(md_library *lib, long long id, cJSON **out, md_errbuf *e);

/* Jobs, newest first. STATE ("queued", "running", "done", "failed", "cancelled"; NULL any),
 * VIDEO_ID (0 any), KIND (NULL any). *OUT: {"jobs": [...], "total", "limit", "offset",
 * "next_offset"}. MD_ERR_INVALID for an unknown state. */
md_status md_library_list_jobs(md_library *lib, const char *state, long long video_id, const char *kind,
                               long long limit, long long offset, cJSON **out, md_errbuf *e);
/* Cancels a job: a queued one at once; a running one is marked cancelled now and its worker stops
 * at its next window, keeping the segments it committed. *OUT: the job. MD_ERR_NOT_FOUND, or
 * MD_ERR_CONFLICT when it has already ended. */
md_status md_library_cancel_job(md_library *lib, long long id, cJSON **out, md_errbuf *e);
/* Queues the video again (a failed or cancelled one, or a finished one to index anew). *OUT:
 * {"video", "job"}. MD_ERR_NOT_FOUND, or MD_ERR_CONFLICT while it is queued or being indexed. */
md_status md_library_reindex_video(md_library *lib, long long id, cJSON **out, md_errbuf *e);

/* Search. Exactly one of TEXT, IMAGE_PATH, or VIDEO_ID (> 0) with T_S gives the query:
 * text, query by example with a picture (any image or video file FFmpeg reads: its first
 * frame), or "more moments like" the segment of VIDEO_ID at T_S seconds. */
typedef struct md_search_query {
    const char *text;
    const char *image_path;
    long long video_id;
    double t_s;
    int k;                   /* moments wanted: MD_SEARCH_K_MIN..MD_SEARCH_K_MAX */
    int offset;              /* pagination: 0..MD_SEARCH_OFFSET_MAX */
    double min_score;        /* raw cosine floor; -1: none */
    const long long *videos; /* restrict to these videos (NULL: all) */
    int n_videos;
} md_search_query;

/* ---- Limits ------------------------------------------------------------------------------
 * Every bound on a request and on a library setting is defined here, once, and checked by the
 * md_*_check functions below (engine/limits.c). The server's settings table and handlers use
 * the same constants, so changing a limit is one edit. The product ranges of the settings lie
 * inside what the video decoder (MD_VIDEO_FPS_MAX) and the temporal encoder
 * (MD_TEMPORAL_WINDOW_MAX) accept; limits.c checks that. */

/* Search (md_search_query) and grounding. */
#define MD_SEARCH_K_MIN 1
#define MD_SEARCH_K_MAX 100            /* moments per answer */
#define MD_SEARCH_OFFSET_MAX 10000     /* pagination reaches this deep, no further */
#define MD_SEARCH_MIN_SCORE_MIN (-1.0) /* a cosine floor: -1 (no floor) .. 1 */
#define MD_SEARCH_MIN_SCORE_MAX 1.0
#define MD_SEARCH_T_MAX 1e9            /* seconds into a video, for query by example */
#define MD_SEARCH_MAX_VIDEOS 1000      /* video ids in a filter */
#define MD_GROUND_TOP_N_MIN 1
#define MD_GROUND_TOP_N_MAX 100
#define MD_MAX_QUERY_BYTES 1000        /* query text, in bytes */
#define MD_ID_MAX ((long long)1 << 53) /* ids are >= 1 and exact in a JSON number */
#define MD_PICTURE_DECODES_MAX 2       /* picture queries decoded at once; more wait their turn */
#define MD_PICTURE_WAIT_S 30           /* ... at most this long, then 503 */

/* Library settings (md_library_params, and the server's settings of the same names). */
#define MD_WORKERS_MIN 1
#define MD_WORKERS_MAX 64
#define MD_MAX_UPLOAD_MIN 1LL
#define MD_MAX_UPLOAD_MAX (1LL << 50)
#define MD_JOB_RETRIES_MAX 100
#define MD_DEBUG_JOB_DELAY_MS_MAX 60000
#define MD_SAMPLE_FPS_MIN 0.01
#define MD_SAMPLE_FPS_MAX 30.0
#define MD_SEGMENT_FRAMES_MIN 1
#define MD_SEGMENT_FRAMES_MAX 64
#define MD_WINDOW_FRAMES_MIN 1
#define MD_WINDOW_FRAMES_MAX 1024 /* and a multiple of segment_frames */

/* The check functions: MD_OK, or MD_ERR_INVALID with a message in E that names the field (as the
 * API and the settings spell it) and its range. They read only their arguments: thread-safe.
 * md_library_search / md_library_ground / md_library_open call them first; the server calls
 * them too, so that a bad request is a 400 before any work.
 *
 * md_search_query_check: k, offset, min_score (finite), t (finite), the filter (at most
 * MD_SEARCH_MAX_VIDEOS ids, each 1..MD_ID_MAX), video_id >= 0, exactly one of text, image_path
 * or video_id, and a text that is not blank and at most MD_MAX_QUERY_BYTES long. */
md_status md_search_query_check(const md_search_query *q, md_errbuf *e);
/* top_n, then TEXT as above (NULL: "give the query text"). */
md_status md_ground_check(const char *text, int top_n, md_errbuf *e);
/* A whole md_library_params: data_dir, workers, max_upload, job_retries, debug_job_delay_ms,
 * sample_fps, keyframes_only, mean/std, segment_frames, window_frames (a multiple of
 * segment_frames), the allowed roots. */
md_status md_library_params_check(const md_library_params *p, md_errbuf *e);

/* *OUT: {"query", "model", "took_ms", "took_ms_encode", "segments_scored", "confident",
 * "message", "total", "moments": [{"video_id", "video_name", "start", "end", "score", "z",
 * "segments": [{"seq", "start", "end", "score"}]}]}. MD_ERR_INVALID for an empty or over-long
 * query, MD_ERR_NOT_FOUND for an unknown video, MD_ERR_UNAVAILABLE without a model. */
md_status md_library_search(md_library *lib, const md_search_query *q, cJSON **out, md_errbuf *e);

/* Grounding: where in VIDEO_ID does TEXT happen. *OUT: {"video_id", "query", "model",
 * "took_ms", "precision_s", "confident", "message", "moments": [{"start", "end", "score", "z"}],
 * "curve": [...] when WITH_CURVE}. */
md_status md_library_ground(md_library *lib, long long video_id, const char *text, int top_n, int with_curve,
                            cJSON **out, md_errbuf *e);

/* {"status", "name", "dir", "demo", "meaningful", "description", "dim", "segments", ...} for /v1/health. */
cJSON *md_library_model_json(md_library *lib);

/* Indexing stages whose time is counted (md_library_stats.stage_seconds), in this order. */
typedef enum md_stage {
    MD_STAGE_PROBE,    /* reading the file's headers and packets */
    MD_STAGE_DECODE,   /* decoding and sampling frames (waiting on the decoder) */
    MD_STAGE_EMBED,    /* the CLIP image tower */
    MD_STAGE_TEMPORAL, /* the temporal encoder and token reduction */
    MD_STAGE_STORE,    /* committing windows to the store */
    MD_STAGE_COUNT
} md_stage;
/* "probe", "decode", ... (Prometheus label values). */
const char *md_stage_name(md_stage s);

/* Why a job's file could not be indexed (md_library_stats.failures), in this order. */
typedef enum md_fail_reason {
    MD_FAIL_NOT_MEDIA,   /* not a video file, or no decodable video stream */
    MD_FAIL_TRUNCATED,   /* cut short or incomplete */
    MD_FAIL_UNSUPPORTED, /* a codec or feature this build does not decode */
    MD_FAIL_REFUSED,     /* refused on purpose: nested opens, absurd sizes or durations, changed file */
    MD_FAIL_MISSING,     /* the file is gone */
    MD_FAIL_LIMIT,       /* the decoder hit its memory or CPU-time limit, or was killed */
    MD_FAIL_STORAGE,     /* the store could not write (disk full, database error) */
    MD_FAIL_OTHER,
    MD_FAIL_COUNT
} md_fail_reason;
/* "not_media", "truncated", ... (Prometheus label values). */
const char *md_fail_reason_name(md_fail_reason r);

typedef struct md_library_stats {
    long long jobs_queued, jobs_running, jobs_done, jobs_failed;
    long long videos;
    long long bytes_stored; /* uploaded files kept in data_dir */
    long long bytes_indexed_paths; /* archive files indexed in place */
    /* Since start-up: seconds spent per indexing stage (all workers added up), and jobs failed per
     * reason. */
    double stage_seconds[MD_STAGE_COUNT];
    long long failures[MD_FAIL_COUNT];
} md_library_stats;
md_status md_library_stats_get(md_library *lib, md_library_stats *out, md_errbuf *e);

#endif
