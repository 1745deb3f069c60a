/* sha256.h - SHA-256 (FIPS 180-4), streaming. Used for content addressing of
 * videos and model provenance. A context is plain data: no allocation, one per
 * stream, not shared between threads.
 *
 *   md_sha256 h; md_sha256_init(&h);
 *   md_sha256_update(&h, buf, n);          // any number of times
 *   char hex[65]; md_sha256_final_hex(&h, hex);
 */
#ifndef MD_SHA256_H
#define MD_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "../base/status.h"

typedef struct md_sha256 {
    uint32_t state[8];
    uint64_t nbytes;
    uint8_t buf[64];
    size_t buflen;
} md_sha256;

void md_sha256_init(md_sha256 *h);
void md_sha256_update(md_sha256 *h, const void *data, size_t len);
void md_sha256_final(md_sha256 *h, uint8_t out[32]);
/* Writes 64 lower-case hex digits and a NUL. */
void md_sha256_final_hex(md_sha256 *h, char out[65]);
/* Hashes a whole file in 1 MiB reads. MD_ERR_NOT_FOUND / MD_ERR_IO on failure. */
md_status md_sha256_file(const char *path, char out[65], long long *size_out);
/* The same for an open file descriptor, read from offset 0 with pread (FD's offset is left as it
 * was), so that what is hashed is the file that was opened and checked. */
md_status md_sha256_fd(int fd, char out[65], long long *size_out);

#endif
