/* library.c - the video library's life cycle: default parameters, open (data directory and its
 * lock, store, crash recovery, model), start (worker threads) and close. The rest of the library
 * is split by what it does: jobs.c, uploads.c, archive.c, videos.c, model.c, query.c
 * (library_internal.h says who shares what).
 *
 * Files under data_dir:
 *   momentd.db        the store (store_sqlite.c; schema/NNN-*.sql)
 *   momentd.lock      held (flock) by the one momentd using this directory; has its PID
 *                     (md_data_dir_lock)
 *   videos/<sha256>   uploaded videos, content-addressed: the same bytes are stored once
 *   tmp/              uploads in progress; emptied at start-up (a crash leaves partial files)
 *   .reserve          4 MiB kept free for the database, released when a delete meets a full disk
 *
 * Concurrency: request-side calls share one store connection (lib->db) under lib->db_mu; each
 * worker has its own connection.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "library_internal.h"

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

int md_library_stopping(md_library *lib)
{
    pthread_mutex_lock(&lib->q_mu);
    int s = lib->stopping;
    pthread_mutex_unlock(&lib->q_mu);
    return s;
}

void md_library_wake(md_library *lib)
{
    pthread_mutex_lock(&lib->q_mu);
    pthread_cond_broadcast(&lib->q_cv);
    pthread_mutex_unlock(&lib->q_mu);
}

void md_library_count_stage(md_library *lib, md_stage s, double seconds)
{
    pthread_mutex_lock(&lib->stats_mu);
    lib->stage_seconds[s] += seconds;
    pthread_mutex_unlock(&lib->stats_mu);
}

void md_library_count_failure(md_library *lib, md_fail_reason r)
{
    pthread_mutex_lock(&lib->stats_mu);
    lib->failures[r]++;
    pthread_mutex_unlock(&lib->stats_mu);
}

/* Enough for the database to record deletes (WAL frames of the rows and index pages they touch)
 * when the disk is otherwise full. */
#define MD_RESERVE_BYTES (4LL << 20)

void md_library_keep_reserve(md_library *lib)
{
    struct stat sb;
    if (stat(lib->reserve_path, &sb) == 0 && sb.st_size >= MD_RESERVE_BYTES)
        return;
    int fd = open(lib->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int rc = posix_fallocate(fd, 0, MD_RESERVE_BYTES);
    close(fd);
    if (rc != 0)
        unlink(lib->reserve_path); /* no room yet: try again after the next delete */
}

int md_library_release_reserve(md_library *lib)
{
    if (unlink(lib->reserve_path) != 0)
        return 0;
    md_warn("library: disk full: released the %lld MiB reserve (%s) so that a delete can be written; free some "
            "space, it is taken back when there is room",
            MD_RESERVE_BYTES >> 20, lib->reserve_path);
    return 1;
}

static md_status mkdir_p(const char *path, md_errbuf *e)
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

struct md_dir_lock {
    int fd;
};

/* One momentd per data directory: two would share the database but not the in-memory index,
 * and each would delete the other's partial uploads. flock() is released by the kernel on any
 * exit, kill -9 included, so a crash never leaves a stale lock behind; the PID in the file is
 * only there to be named in the message. */
md_status md_data_dir_lock(const char *data_dir, md_dir_lock **out, md_errbuf *e)
{
    char path[PATH_MAX + 16], pid[32] = "";
    md_status s;
    *out = NULL;
    if ((s = mkdir_p(data_dir, e)) != MD_OK)
        return s;
    md_dir_lock *l = malloc(sizeof *l);
    if (!l)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/momentd.lock", data_dir);
    if ((l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        s = md_fail(e, MD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        free(l);
        return s;
    }
    if (flock(l->fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        ssize_t n = pread(l->fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\r\n")] = 0;
        md_data_dir_unlock(l);
        if (err == EWOULDBLOCK)
            return md_fail(e, MD_ERR_CONFLICT,
                           "data directory %s is in use by another momentd (pid %s); stop it or choose another data_dir",
                           data_dir, pid[0] ? pid : "unknown");
        return md_fail(e, MD_ERR_IO, "cannot lock %s: %s", path, strerror(err));
    }
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(l->fd, 0) != 0 || pwrite(l->fd, pid, (size_t)len, 0) != len)
        md_warn("library: cannot write the PID to %s: %s", path, strerror(errno));
    *out = l;
    return MD_OK;
}

void md_data_dir_unlock(md_dir_lock *l)
{
    if (!l)
        return;
    close(l->fd); /* releases the flock */
    free(l);
}

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

static void log_recovered(void *ctx, long long job_id, int resumed)
{
    (void)ctx;
    md_info("library: job %lld was interrupted by a crash: %s", job_id, resumed ? "resuming" : "failed (too many tries)");
}

md_status md_library_open(const md_library_params *p, md_library **out, md_errbuf *e)
{
    md_status s = MD_OK;
    char err[1024];
    *out = NULL;
    if ((s = md_library_params_check(p, e)) != MD_OK)
        return s;
    md_library *lib = calloc(1, sizeof *lib);
    if (!lib)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    lib->p = *p;
    pthread_mutex_init(&lib->db_mu, NULL);
    pthread_mutex_init(&lib->stats_mu, NULL);
    pthread_mutex_init(&lib->pic_mu, NULL);
    pthread_cond_init(&lib->pic_cv, NULL);
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
    snprintf(lib->db_path, sizeof lib->db_path, "%s/momentd.db", lib->data_dir);
    snprintf(lib->reserve_path, sizeof lib->reserve_path, "%s/.reserve", lib->data_dir);
    if (!p->lock && (s = md_data_dir_lock(lib->data_dir, &lib->own_lock, e)) != MD_OK)
        goto out;
    if ((s = mkdir_p(lib->videos_dir, e)) != MD_OK || (s = mkdir_p(lib->tmp_dir, e)) != MD_OK)
        goto out;
    clean_tmp(lib);
    md_library_keep_reserve(lib);
    if ((s = md_store_open(lib->db_path, &lib->db, err, sizeof err)) != MD_OK) {
        md_fail(e, s, "%s", err);
        goto out;
    }
    if ((s = md_store_jobs_recover(lib->db, lib->p.job_retries, log_recovered, NULL)) != MD_OK) {
        md_store_fail(e, s, lib->db);
        goto out;
    }
    if ((s = md_model_open(lib, e)) != MD_OK)
        goto out;
    *out = lib;
    return MD_OK;
out:
    md_library_close(lib);
    return s;
}

md_status md_library_start(md_library *lib, md_errbuf *e)
{
    lib->threads = calloc((size_t)lib->p.workers, sizeof *lib->threads);
    if (!lib->threads)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    for (int i = 0; i < lib->p.workers; i++) {
        if (pthread_create(&lib->threads[i], NULL, md_worker_main, lib) != 0)
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
    md_data_dir_unlock(lib->own_lock);
    for (int i = 0; lib->roots && i < lib->p.n_allowed_roots; i++)
        free(lib->roots[i]);
    free(lib->roots);
    free(lib->data_dir);
    pthread_cond_destroy(&lib->q_cv);
    pthread_mutex_destroy(&lib->q_mu);
    pthread_mutex_destroy(&lib->db_mu);
    pthread_mutex_destroy(&lib->stats_mu);
    pthread_cond_destroy(&lib->pic_cv);
    pthread_mutex_destroy(&lib->pic_mu);
    free(lib);
}
