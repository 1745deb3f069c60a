/* files.c - safe opens for the files jobs read (files.h). Archive paths are checked against the
 * allowed roots when they are queued; a job runs later, and between the two a file or a
 * directory on its path can be replaced by a symlink to anywhere. Opening every component with
 * O_NOFOLLOW and comparing the opened file's identity with the one recorded when it was hashed
 * closes that window: the job reads the descriptor it checked (as /proc/self/fd/N). */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

md_status md_file_identity(int fd, md_file_id *out)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return MD_ERR_IO;
    out->dev = (long long)sb.st_dev;
    out->ino = (long long)sb.st_ino;
    out->size = (long long)sb.st_size;
    out->mtime_ns = (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
    return MD_OK;
}

static md_status open_error(int err, const char *path, const char *comp, char *errbuf, size_t errlen)
{
    if (err == ELOOP || err == ENOTDIR)
        return md_errf(errbuf, errlen, MD_ERR_FORBIDDEN,
                       "%s: '%s' is a symbolic link or not a directory now (it was replaced after the file was "
                       "added?); not followed",
                       path, comp);
    if (err == ENOENT)
        return md_errf(errbuf, errlen, MD_ERR_NOT_FOUND, "%s: no such file", path);
    return md_errf(errbuf, errlen, MD_ERR_IO, "%s: %s", path, strerror(err));
}

md_status md_open_nofollow(const char *path, int *fd, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    *fd = -1;
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return md_errf(err, errlen, MD_ERR_INVALID, "path too long: %.100s...", path);
    const int final_flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    if (buf[0] != '/') {
        /* Relative (our own data directory): only the file itself must not be a link. */
        int f = open(buf, final_flags);
        if (f < 0)
            return open_error(errno, path, path, err, errlen);
        *fd = f;
        goto regular;
    }
    int dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return open_error(errno, path, "/", err, errlen);
    char *save = NULL, *comp = strtok_r(buf + 1, "/", &save);
    while (comp) {
        char *next = strtok_r(NULL, "/", &save);
        int f = openat(dir, comp, next ? O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC : final_flags);
        int e = errno;
        close(dir);
        if (f < 0)
            return open_error(e, path, comp, err, errlen);
        dir = f;
        comp = next;
    }
    *fd = dir;
regular:;
    struct stat sb;
    if (fstat(*fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(*fd);
        *fd = -1;
        return md_errf(err, errlen, MD_ERR_FORBIDDEN, "%s is not a regular file now", path);
    }
    /* O_NONBLOCK only kept a FIFO from blocking the open; reads of a regular file ignore it, but
     * clear it for whoever reads the descriptor next. */
    int fl = fcntl(*fd, F_GETFL);
    if (fl >= 0)
        fcntl(*fd, F_SETFL, fl & ~O_NONBLOCK);
    return MD_OK;
}

md_status md_file_check(int fd, const md_file_id *want, const char *path, char *err, size_t errlen)
{
    if (!want->dev && !want->ino)
        return MD_OK;
    md_file_id have;
    if (md_file_identity(fd, &have) != MD_OK)
        return md_errf(err, errlen, MD_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    const char *what = have.dev != want->dev || have.ino != want->ino ? "it is another file (device/inode differ)"
                       : have.size != want->size ? "its size differs"
                       : have.mtime_ns != want->mtime_ns ? "it was modified"
                                                         : NULL;
    if (!what)
        return MD_OK;
    return md_errf(err, errlen, MD_ERR_CONFLICT,
                   "%s changed since it was added (%s): refused; add it again to index the new content", path, what);
}
