/* utf8.c - UTF-8 validation and repair (see utf8.h).
 *
 * Well-formed sequences (Unicode 15, table 3-7), by first byte:
 *   00..7F                      one byte
 *   C2..DF  80..BF              two
 *   E0      A0..BF  80..BF      three (E0 80..9F would be an overlong form)
 *   E1..EC  80..BF  80..BF
 *   ED      80..9F  80..BF      (ED A0..BF would be a surrogate)
 *   EE..EF  80..BF  80..BF
 *   F0      90..BF  80..BF 80..BF  four (F0 80..8F overlong)
 *   F1..F3  80..BF  80..BF 80..BF
 *   F4      80..8F  80..BF 80..BF  (F4 90.. is above U+10FFFF)
 * Anything else (80..C1, F5..FF as a first byte) is ill-formed on its own.
 */
#include "utf8.h"

/* Looks at the sequence starting at P (N >= 1 bytes left). Returns how many bytes it spans:
 * the whole character when *OK is set, else the maximal subpart of an ill-formed sequence
 * (at least 1), which the caller replaces by one U+FFFD. */
static size_t next_seq(const unsigned char *p, size_t n, int *ok)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    *ok = 0;
    if (c < 0x80) {
        *ok = 1;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 1;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    size_t i = 1;
    for (; i < len && i < n; i++) {
        unsigned char b = p[i];
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h)
            return i; /* the bytes so far are the maximal subpart; B starts the next sequence */
    }
    if (i < len)
        return i; /* truncated at the end of the input */
    *ok = 1;
    return len;
}

int md_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int ok;
        i += next_seq(p + i, n - i, &ok);
        if (!ok)
            return 0;
    }
    return 1;
}

size_t md_utf8_repair(const char *in, size_t n, char *out, size_t outlen)
{
    static const char fffd[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0, k = 0;
    if (!outlen)
        return 0;
    while (i < n && p[i]) {
        int ok;
        size_t len = next_seq(p + i, n - i, &ok);
        const char *src = ok ? (const char *)p + i : fffd;
        size_t w = ok ? len : sizeof fffd;
        if (k + w > outlen - 1)
            break; /* the character does not fit whole: stop on the boundary before it */
        for (size_t j = 0; j < w; j++)
            out[k + j] = src[j];
        k += w;
        i += len;
    }
    out[k] = 0;
    return k;
}
