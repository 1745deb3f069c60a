/* utf8.h - UTF-8 validation and repair for text that comes from outside (requests, file names)
 * and goes out again in JSON, which must be valid UTF-8 (RFC 8259 section 8.1).
 *
 * "Valid" is the Unicode definition (RFC 3629): shortest form only, no surrogates (U+D800..DFFF),
 * nothing above U+10FFFF. Both functions read exactly N bytes (NUL bytes included, they are
 * valid UTF-8) and are pure: thread-safe.
 */
#ifndef MD_BASE_UTF8_H
#define MD_BASE_UTF8_H

#include <stddef.h>

/* 1 when the N bytes at S are valid UTF-8, else 0. S may be NULL when N is 0. */
int md_utf8_valid(const char *s, size_t n);

/* Copies the N bytes at IN to OUT (OUTLEN bytes, at least 1), replacing each ill-formed
 * sequence by U+FFFD (EF BF BD) the way Unicode recommends ("maximal subparts", as Python's
 * decode(errors="replace") and the WHATWG decoder do: a truncated sequence is one U+FFFD, each
 * other bad byte one more). When OUT is too small the copy stops before the first character
 * that does not fit whole, so OUT never ends inside a character. OUT is always NUL-terminated;
 * returns the bytes written before the NUL. A NUL byte in IN ends the copy (OUT is a C string).
 * IN and OUT must not overlap. */
size_t md_utf8_repair(const char *in, size_t n, char *out, size_t outlen);

#endif
