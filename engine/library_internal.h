/* library_internal.h - the md_library object, shared by the files that make up the library:
 * library.c (open/start/close), jobs.c (workers and the job life cycle), uploads.c, archive.c
 * (indexing server paths), videos.c (list/get/delete/stats and the JSON views), model.c (the
 * model and the segment index) and query.c (search and grounding). Not a public header: the
 * server sees only momentd.h.
 *
 * Locking: the request-side store connection (db) and everything done with it is under db_mu,
 * which also orders a window's commit (jobs.c) against a video's deletion (videos.c), so that a
 * deleted video never reappears in the index. q_mu/q_cv/stopping are the workers' queue and the
 * shutdown flag (library.c). The model objects (clip, index) are created before workers start
 * and freed after they stop, and are thread-safe themselves (clip.h, search.h).
 */
#ifndef MD_LIBRARY_INTERNAL_H
#define MD_LIBRARY_INTERNAL_H

#include <limits.h>
#include <pthread.h>

#include "clip.h"
#include "momentd.h"
#include "search.h"
#include "store.h"
#include "temporal.h"

struct md_library {
    md_library_params p;
    char *data_dir;
    char **roots;
    char videos_dir[PATH_MAX], tmp_dir[PATH_MAX], db_path[PATH_MAX + 16], reserve_path[PATH_MAX + 16];
    md_dir_lock *own_lock; /* the data directory's lock when open took it (p.lock was NULL) */

    md_store *db; /* request side, under db_mu */
    pthread_mutex_t db_mu;

    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    int stopping;
    pthread_t *threads;
    int n_threads;

    /* Picture queries being decoded (query.c): at most MD_PICTURE_DECODES_MAX, under pic_mu. */
    pthread_mutex_t pic_mu;
    pthread_cond_t pic_cv;
    int pic_busy;

    /* Counters since start-up (md_library_stats), under stats_mu. */
    pthread_mutex_t stats_mu;
    double stage_seconds[MD_STAGE_COUNT];
    long long failures[MD_FAIL_COUNT];

    /* The model (model.c). NULL clip: none loaded (indexing then only probes). */
    md_clip *clip;
    md_temporal *temporal; /* the temporal encoder over CLIP tokens */
    char temporal_path[PATH_MAX + 64];
    char temporal_label[160]; /* "untrained (identity)" or "trained <sha>", stored on videos */
    md_index *index;          /* segments of model_id */
    long long model_id;       /* the current model's id in the store */
    char model_dir[PATH_MAX];
    char model_name[256];
    double model_load_s;
};

/* library.c: the shutdown flag, and waking idle workers when jobs were queued. */
int md_library_stopping(md_library *lib);
void md_library_wake(md_library *lib);

/* library.c: the disk-space reserve (DATA_DIR/.reserve, MD_RESERVE_BYTES), so that a delete can
 * be written on a full disk. Release returns 1 when it freed the room (then retry the write);
 * keep recreates it when there is room again (best effort). Caller holds db_mu for release. */
int md_library_release_reserve(md_library *lib);
void md_library_keep_reserve(md_library *lib);

/* library.c: adds to the counters of md_library_stats. */
void md_library_count_stage(md_library *lib, md_stage s, double seconds);
void md_library_count_failure(md_library *lib, md_fail_reason r);

/* uploads.c: a name as stored: the last path component, valid UTF-8 (ill-formed sequences become
 * U+FFFD), no control characters, cut on a character boundary to OUTLEN-1 bytes; "upload" when
 * nothing is left. Archive files' names go through it too. */
void md_clean_name(const char *in, char *out, size_t outlen);

/* archive.c: 1 when the canonical path CANON is inside one of the allowed roots. */
int md_archive_under_root(md_library *lib, const char *canon);

/* jobs.c: one worker thread (ARG is the library). */
void *md_worker_main(void *arg);

/* videos.c: the API's JSON views of store records (the one place they are built). A file
 * system path is any bytes; in JSON it goes out as valid UTF-8 (md_json_add_path). */
void md_json_add_path(cJSON *o, const char *key, const char *path);
cJSON *md_video_json(const md_video_rec *v);
cJSON *md_job_json(const md_job_rec *j);
/* {"video": ..., "job": ...|null} for video ID and its latest job. Caller holds db_mu. */
md_status md_video_and_job_locked(md_library *lib, long long id, cJSON **out, md_errbuf *e);
/* "database error while ...": ST with the store's message. */
md_status md_store_fail(md_errbuf *e, md_status st, md_store *s);

/* model.c: loads the configured model (or writes and loads the demo model), records its
 * provenance in the store and loads its segments into the index. Called by md_library_open
 * before the workers start. */
md_status md_model_open(md_library *lib, md_errbuf *e);
void md_model_close(md_library *lib);

#endif
