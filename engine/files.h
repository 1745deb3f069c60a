/* files.h - opening the files a job reads so that what is read is what was added: no symlink
 * followed on the way, the same file (device, inode, size, mtime) as when it was hashed. */
#ifndef MD_FILES_H
#define MD_FILES_H

#include <stddef.h>

#include "store.h"

/* The identity of an open file. */
md_status md_file_identity(int fd, md_file_id *out);

/* Opens PATH read-only without following any symbolic link on the way: an absolute PATH is
 * walked from "/" one component at a time (openat with O_NOFOLLOW), so a directory or the file
 * swapped for a link after the path was checked is refused (MD_ERR_FORBIDDEN), not followed.
 * MD_ERR_NOT_FOUND when a component is missing. *FD is O_CLOEXEC; the caller closes it. */
md_status md_open_nofollow(const char *path, int *fd, char *err, size_t errlen);

/* Checks that FD is the file WANT describes; unknown identities (all 0) always match.
 * MD_ERR_CONFLICT, naming what differs, otherwise. */
md_status md_file_check(int fd, const md_file_id *want, const char *path, char *err, size_t errlen);

#endif
