/* archive.c - indexing files already on the server (POST /v1/index): every path must resolve,
 * symlinks and ".." included, inside an allowed root; directories are walked for video files;
 * each new file is hashed and queued as a video indexed in place (its file is never removed).
 *
 * Symlinked directories are not followed (they could loop); a symlinked file is followed only
 * when its target is inside an allowed root. A forbidden path queues nothing at all.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"
#include "library_internal.h"
#include "sha256.h"

#define MAX_INDEX_FILES 100000

int md_archive_under_root(md_library *lib, const char *canon)
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
    md_json_add_path(o, "path", path);
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
            else if (!md_archive_under_root(w->lib, c))
                add_reason(w->skipped, p, "reason", "symlink leads outside the allowed roots");
            else
                s = walk_add(w, c);
            free(c);
        }
    }
    closedir(d);
    return s;
}

md_status md_library_index_paths(md_library *lib, const char *const *paths, int n, cJSON **out, md_errbuf *e)
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
        if (lexical_normalise(paths[i], lex, sizeof lex) != 0 || !md_archive_under_root(lib, lex)) {
            s = md_fail(e, MD_ERR_FORBIDDEN, "path '%s' is outside the allowed roots", paths[i]);
            goto out;
        }
        if (!(canon[i] = realpath(paths[i], NULL))) {
            s = md_fail(e, errno == ENOENT ? MD_ERR_NOT_FOUND : MD_ERR_IO, "path '%s': %s", paths[i], strerror(errno));
            goto out;
        }
        if (!md_archive_under_root(lib, canon[i])) {
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
        char sha[65], oerr[512];
        long long size = 0, id = 0;
        md_file_id fid = {0};
        int fd = -1;
        /* Hash the descriptor that was opened without following links, and remember which file it
         * is: the job checks the same identity on what it reads (files.h). */
        md_status hs = md_open_nofollow(w.files[i], &fd, oerr, sizeof oerr);
        if (hs == MD_OK && (hs = md_file_identity(fd, &fid)) == MD_OK)
            hs = md_sha256_fd(fd, sha, &size);
        if (fd >= 0)
            close(fd);
        if (hs == MD_OK && size != fid.size)
            hs = md_errf(oerr, sizeof oerr, MD_ERR_CONFLICT, "file changed while it was being read");
        if (hs != MD_OK) {
            add_reason(w.errors, w.files[i], "message",
                       hs == MD_ERR_NOT_FOUND ? "file vanished" : hs == MD_ERR_IO ? "cannot read file" : oerr);
            continue;
        }
        pthread_mutex_lock(&lib->db_mu);
        md_errbuf ie;
        md_status is = md_store_video_find_sha(lib->db, sha, &id);
        if (is != MD_OK) {
            md_store_fail(&ie, is, lib->db);
        } else if (id) {
            cJSON *o = cJSON_CreateObject();
            md_json_add_path(o, "path", w.files[i]);
            cJSON_AddStringToObject(o, "reason", "already known (same sha256)");
            cJSON_AddNumberToObject(o, "video_id", (double)id);
            cJSON_AddItemToArray(w.skipped, o);
        } else {
            char name[MD_STORE_NAME_MAX];
            md_clean_name(w.files[i], name, sizeof name); /* file names are bytes, names are UTF-8 */
            md_video_new v = {.sha256 = sha,
                              .name = name,
                              .path = w.files[i],
                              .source = MD_SOURCE_PATH,
                              .size_bytes = size,
                              .file = fid};
            if ((is = md_store_video_insert(lib->db, &v, &id, NULL)) != MD_OK) {
                md_store_fail(&ie, is, lib->db);
            } else {
                cJSON *vj = NULL;
                if (md_video_and_job_locked(lib, id, &vj, &ie) == MD_OK) {
                    cJSON_DeleteItemFromObjectCaseSensitive(vj, "path");
                    md_json_add_path(vj, "path", w.files[i]);
                    cJSON_AddItemToArray(queued, vj);
                }
                any_new = 1;
            }
        }
        pthread_mutex_unlock(&lib->db_mu);
        if (is != MD_OK)
            add_reason(w.errors, w.files[i], "message", ie.msg);
        if (any_new && i % 16 == 15)
            md_library_wake(lib); /* let workers start while we hash the rest */
    }
    *out = res;
    res = NULL;
out:
    if (any_new)
        md_library_wake(lib);
    for (int i = 0; canon && i < n; i++)
        free(canon[i]);
    free(canon);
    for (int i = 0; i < w.n; i++)
        free(w.files[i]);
    free(w.files);
    cJSON_Delete(res);
    return s;
}
