/* uploads.c - uploads: bytes are streamed to a temporary file in data_dir/tmp while being
 * hashed; finishing moves the file to its content address data_dir/videos/<sha256> and records
 * the video with its index job. The same bytes uploaded twice are one video.
 *
 * "Look up sha256, then insert" runs under the library's db_mu, so concurrent uploads of the
 * same bytes yield one video.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files.h"
#include "../base/utf8.h"
#include "library_internal.h"
#include "sha256.h"

struct md_upload {
    md_library *lib;
    char tmp_path[PATH_MAX + 32];
    char name[MD_STORE_NAME_MAX];
    int fd;
    long long size;
    md_sha256 h;
};

/* Keeps the last path component, as valid UTF-8 (each ill-formed sequence becomes U+FFFD), drops
 * control characters (C0, DEL, C1), and cuts to OUTLEN-1 bytes on a character boundary, so that
 * the stored name always goes out as valid JSON. "upload" when nothing is left. */
void md_clean_name(const char *in, char *out, size_t outlen)
{
    const char *base = in;
    for (const char *p = in; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    /* The stored name is short (MD_STORE_NAME_MAX): a longer input only matters up to a bound
     * (a cut in the middle of a character there just turns into U+FFFD past what is kept, unless
     * the first 64 KiB are all control characters, when the name becomes "upload"). */
    size_t n = strnlen(base, 64 * 1024), k = 0;
    char *fixed = malloc(3 * n + 1); /* repair turns a byte into at most 3 */
    if (fixed) {
        md_utf8_repair(base, n, fixed, 3 * n + 1);
        /* FIXED is valid UTF-8 now: the first byte gives each character's length. */
        for (const unsigned char *p = (const unsigned char *)fixed; *p;) {
            size_t len = *p < 0x80 ? 1 : *p < 0xE0 ? 2 : *p < 0xF0 ? 3 : 4;
            int control = *p < 0x20 || *p == 0x7f || (*p == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F);
            if (!control) {
                if (k + len > outlen - 1)
                    break;
                memcpy(out + k, p, len);
                k += len;
            }
            p += len;
        }
        free(fixed);
    }
    out[k] = 0;
    if (!k)
        snprintf(out, outlen, "upload");
}

md_status md_upload_begin(md_library *lib, const char *name, md_upload **out, md_errbuf *e)
{
    md_upload *u = calloc(1, sizeof *u);
    *out = NULL;
    if (!u)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    u->lib = lib;
    md_clean_name(name ? name : "", u->name, sizeof u->name);
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

md_status md_upload_write(md_upload *u, const void *data, size_t len, md_errbuf *e)
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

md_status md_upload_finish(md_upload *u, cJSON **out, int *created, md_errbuf *e)
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
    /* The bytes must be on disk before the store says the video exists. */
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
    if ((s = md_store_video_find_sha(lib->db, sha, &id)) != MD_OK) {
        md_store_fail(e, s, lib->db);
        goto out;
    }
    if (id) {
        s = md_video_and_job_locked(lib, id, out, e);
        goto out;
    }
    if (rename(u->tmp_path, final_path) != 0) {
        s = md_fail(e, MD_ERR_IO, "cannot store the upload: %s", strerror(errno));
        goto out;
    }
    moved = 1;
    md_video_new v = {.sha256 = sha, .name = u->name, .path = final_path, .source = MD_SOURCE_UPLOAD, .size_bytes = u->size};
    /* Which file it is, for the job's check (files.h); the directory is ours, the path is not followed. */
    char oerr[256];
    int fd = -1;
    if (md_open_nofollow(final_path, &fd, oerr, sizeof oerr) == MD_OK)
        md_file_identity(fd, &v.file);
    if (fd >= 0)
        close(fd);
    if ((s = md_store_video_insert(lib->db, &v, &id, NULL)) != MD_OK) {
        md_store_fail(e, s, lib->db);
        goto out;
    }
    if ((s = md_video_and_job_locked(lib, id, out, e)) != MD_OK)
        goto out;
    *created = 1;
    md_info("library: stored upload '%s' as video %lld (%lld bytes, sha256 %.12s)", u->name, id, u->size, sha);
out:
    if (s != MD_OK && moved)
        unlink(final_path);
    if (locked)
        pthread_mutex_unlock(&lib->db_mu);
    if (*created)
        md_library_wake(lib);
    if (u->fd >= 0)
        close(u->fd);
    if (!moved)
        unlink(u->tmp_path);
    free(u);
    return s;
}
