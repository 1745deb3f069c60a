/* library_internal.h - the md_library object, shared by the files that make up
 * the library: library.c (videos, uploads, jobs, workers), model.c (the model
 * and the segment index) and query.c (search and grounding). Not a public
 * header: the server sees only momentd.h.
 *
 * Locking: db and everything done with it is under db_mu; the model objects
 * (clip, index) are created before workers start and freed after they stop,
 * and are thread-safe themselves (clip.h, search.h).
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
    char videos_dir[PATH_MAX], tmp_dir[PATH_MAX];

    md_store *db; /* request side, under db_mu */
    pthread_mutex_t db_mu;

    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    int stopping;
    pthread_t *threads;
    int n_threads;

    /* The model (model.c). NULL clip: none loaded (indexing then only probes). */
    md_clip *clip;
    md_temporal *temporal; /* the temporal encoder over CLIP tokens */
    char temporal_path[PATH_MAX + 64];
    char temporal_label[160]; /* "untrained (identity)" or "trained <sha>", stored on videos */
    md_index *index;     /* segments of model_id */
    long long model_id;  /* models.id of the current model */
    char model_dir[PATH_MAX];
    char model_name[256];
    double model_load_s;
};

/* model.c: loads the configured model (or writes and loads the demo model),
 * records its provenance in the models table and loads its segments into the
 * index. Called by md_library_open before the workers start. */
md_status md_model_open(md_library *lib, md_error *e);
void md_model_close(md_library *lib);

#endif
