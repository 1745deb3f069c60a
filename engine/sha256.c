/* sha256.c - SHA-256 as specified in FIPS 180-4, written from the standard. */
#define _XOPEN_SOURCE 700
#include "sha256.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(uint32_t s[8], const uint8_t p[64])
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s[0] += a, s[1] += b, s[2] += c, s[3] += d, s[4] += e, s[5] += f, s[6] += g, s[7] += h;
}

void md_sha256_init(md_sha256 *h)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(h->state, iv, sizeof iv);
    h->nbytes = 0;
    h->buflen = 0;
}

void md_sha256_update(md_sha256 *h, const void *data, size_t len)
{
    const uint8_t *p = data;
    h->nbytes += len;
    if (h->buflen) {
        size_t take = 64 - h->buflen < len ? 64 - h->buflen : len;
        memcpy(h->buf + h->buflen, p, take);
        h->buflen += take, p += take, len -= take;
        if (h->buflen < 64)
            return;
        compress(h->state, h->buf);
        h->buflen = 0;
    }
    for (; len >= 64; p += 64, len -= 64)
        compress(h->state, p);
    memcpy(h->buf, p, len);
    h->buflen = len;
}

void md_sha256_final(md_sha256 *h, uint8_t out[32])
{
    uint64_t bits = h->nbytes * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (h->buflen < 56 ? 56 : 120) - h->buflen;
    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
    uint64_t keep = h->nbytes;
    md_sha256_update(h, pad, padlen + 8);
    h->nbytes = keep;
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(h->state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h->state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h->state[i] >> 8);
        out[4 * i + 3] = (uint8_t)h->state[i];
    }
}

void md_sha256_final_hex(md_sha256 *h, char out[65])
{
    static const char hexd[] = "0123456789abcdef";
    uint8_t d[32];
    md_sha256_final(h, d);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hexd[d[i] >> 4];
        out[2 * i + 1] = hexd[d[i] & 15];
    }
    out[64] = 0;
}

md_status md_sha256_file(const char *path, char out[65], long long *size_out)
{
    md_status st = MD_OK;
    uint8_t *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        st = errno == ENOENT ? MD_ERR_NOT_FOUND : MD_ERR_IO;
        goto out;
    }
    buf = malloc(1 << 20);
    if (!buf) {
        st = MD_ERR_NOMEM;
        goto out;
    }
    md_sha256 h;
    md_sha256_init(&h);
    size_t n;
    while ((n = fread(buf, 1, 1 << 20, f)) > 0)
        md_sha256_update(&h, buf, n);
    if (ferror(f)) {
        st = MD_ERR_IO;
        goto out;
    }
    if (size_out)
        *size_out = (long long)h.nbytes;
    md_sha256_final_hex(&h, out);
out:
    free(buf);
    if (f)
        fclose(f);
    return st;
}

md_status md_sha256_fd(int fd, char out[65], long long *size_out)
{
    uint8_t *buf = malloc(1 << 20);
    if (!buf)
        return MD_ERR_NOMEM;
    md_sha256 h;
    md_sha256_init(&h);
    md_status st = MD_OK;
    for (off_t off = 0;;) {
        ssize_t n = pread(fd, buf, 1 << 20, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = MD_ERR_IO;
            break;
        }
        if (n == 0)
            break;
        md_sha256_update(&h, buf, (size_t)n);
        off += n;
    }
    if (st == MD_OK) {
        if (size_out)
            *size_out = (long long)h.nbytes;
        md_sha256_final_hex(&h, out);
    }
    free(buf);
    return st;
}
