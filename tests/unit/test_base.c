/* test_base.c - unit tests of base/: UTF-8 validation and repair (base/utf8.c).
 *
 * The expected repairs are what Python's bytes.decode("utf-8", errors="replace") gives (one
 * U+FFFD per maximal subpart of an ill-formed sequence, as Unicode recommends), written out by
 * hand so that the test needs no Python. */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../base/utf8.h"
#include "harness.h"

#define FFFD "\xEF\xBF\xBD"

static int valid(const char *s)
{
    return md_utf8_valid(s, strlen(s));
}

static void test_utf8_valid(void)
{
    CHECK(md_utf8_valid(NULL, 0));
    CHECK(valid(""));
    CHECK(valid("plain ascii, with \t and \x7f"));
    CHECK(valid("caf\xC3\xA9"));      /* U+00E9 */
    CHECK(valid("\xE2\x82\xAC"));     /* U+20AC */
    CHECK(valid("\xF0\x9F\x90\xB6")); /* U+1F436 */
    CHECK(valid("\xED\x9F\xBF"));     /* U+D7FF, last before the surrogates */
    CHECK(valid("\xEE\x80\x80"));     /* U+E000, first after them */
    CHECK(valid("\xF4\x8F\xBF\xBF")); /* U+10FFFF, the last code point */
    CHECK(valid("\xEF\xBB\xBF"
                "bom"));             /* a BOM is a valid character */
    CHECK(md_utf8_valid("a\0b", 3)); /* NUL is valid UTF-8 */

    CHECK(!valid("\xFF\xFE")); /* the case from the issue */
    CHECK(!valid("\x80"));     /* lone continuation byte */
    CHECK(!valid("\xC3"));     /* truncated at the end */
    CHECK(!valid("\xC3("));
    CHECK(!valid("\xC0\xAF"));         /* overlong '/' */
    CHECK(!valid("\xC1\xBF"));         /* overlong */
    CHECK(!valid("\xE0\x80\xAF"));     /* overlong three-byte form */
    CHECK(!valid("\xF0\x80\x80\xAF")); /* overlong four-byte form */
    CHECK(!valid("\xED\xA0\x80"));     /* U+D800, a surrogate (CESU-8) */
    CHECK(!valid("\xED\xBF\xBF"));     /* U+DFFF */
    CHECK(!valid("\xF4\x90\x80\x80")); /* U+110000 */
    CHECK(!valid("\xF5\x80\x80\x80"));
    CHECK(!valid("\xF8\x88\x80\x80\x80")); /* old five-byte form */
    CHECK(!valid("\xE2\x82"));             /* truncated three-byte */
    CHECK(!valid("ok\xE2\x82\xACok\x80")); /* bad byte after good ones */
    CHECK(!md_utf8_valid("\xC3\xA9", 1));  /* N counts: a character cut by N */
}

/* Repair of S (as a C string) into a buffer of OUTLEN bytes must give WANT. */
static void repairs_to(const char *s, size_t outlen, const char *want)
{
    char *out = malloc(outlen);
    CHECK(out != NULL);
    if (!out)
        return;
    memset(out, 'X', outlen);
    size_t k = md_utf8_repair(s, strlen(s), out, outlen);
    CHECK_STR(out, want);
    CHECK_EQ_INT(k, strlen(want));
    CHECK(md_utf8_valid(out, k));
    free(out);
}

static void test_utf8_repair(void)
{
    repairs_to("", 16, "");
    repairs_to("caf\xC3\xA9", 16, "caf\xC3\xA9");
    repairs_to("\xFF\xFE"
               "abc",
               16, FFFD FFFD "abc"); /* the issue's ?name=%FF%FE */
    repairs_to("a\x80z", 16, "a" FFFD "z");
    repairs_to("\xC3(", 16, FFFD "(");
    repairs_to("\xC0\xAF", 16, FFFD FFFD);          /* C0 never starts a sequence */
    repairs_to("\xE0\x80\xAF", 16, FFFD FFFD FFFD); /* E0 80: 80 is not allowed after E0 */
    repairs_to("\xED\xA0\x80", 16, FFFD FFFD FFFD); /* surrogate: three replacements */
    repairs_to("\xE2\x82", 16, FFFD);               /* one truncated sequence: one */
    repairs_to("\xE2\x82z", 16, FFFD "z");
    repairs_to("\xF0\x9F\x90", 16, FFFD);
    repairs_to("\xF0\x9F\x90\xB6\xF0\x9F", 16, "\xF0\x9F\x90\xB6" FFFD);
    repairs_to("\xF4\x90\x80\x80", 16, FFFD FFFD FFFD FFFD);
    repairs_to("\xF8\x88\x80\x80\x80", 32, FFFD FFFD FFFD FFFD FFFD);
}

/* The cut never ends inside a character, also when the character is a replacement. */
static void test_utf8_repair_cut(void)
{
    repairs_to("abcdef", 4, "abc");
    repairs_to("ab\xC3\xA9", 4, "ab"); /* 'é' needs bytes 3 and 4: not split */
    repairs_to("ab\xC3\xA9", 5, "ab\xC3\xA9");
    repairs_to("a\xF0\x9F\x90\xB6", 5, "a"); /* 4-byte character, 3 bytes free */
    repairs_to("a\xF0\x9F\x90\xB6", 6, "a\xF0\x9F\x90\xB6");
    repairs_to("ab\xFF", 5, "ab"); /* U+FFFD is 3 bytes: does not fit in 2 */
    repairs_to("ab\xFF", 6, "ab" FFFD);
    repairs_to("x", 1, ""); /* room for the NUL only */

    /* The case: a name of 300 bytes, a 2-byte character across byte 255, capped at 256
     * with the NUL (MD_STORE_NAME_MAX): 254 bytes kept, not 255 with half a character. */
    char name[301];
    memset(name, 'a', 254);
    for (int i = 254; i < 300; i += 2)
        memcpy(name + i, "\xC3\xA9", 2);
    name[300] = 0;
    char out[256];
    size_t k = md_utf8_repair(name, 300, out, sizeof out);
    CHECK_EQ_INT(k, 254);
    CHECK_EQ_INT(strlen(out), 254);
    name[254] = 'b'; /* now the character starts at 255 */
    k = md_utf8_repair(name, 300, out, sizeof out);
    CHECK_EQ_INT(k, 255);
    CHECK(md_utf8_valid(out, k));

    /* OUTLEN 0 writes nothing at all. */
    char none = 'X';
    CHECK_EQ_INT(md_utf8_repair("abc", 3, &none, 0), 0);
    CHECK(none == 'X');
    /* A NUL in the input ends the copy: OUT is a C string. */
    CHECK_EQ_INT(md_utf8_repair("ab\0cd", 5, out, sizeof out), 2);
    CHECK_STR(out, "ab");
}

/* Every byte string of length 1..3 (and a sample of length 4): the repair is valid UTF-8, equal
 * to the input exactly when the input is valid, and never longer than 3 bytes per input byte. */
static void test_utf8_exhaustive(void)
{
    unsigned char in[4];
    char out[16];
    long checked = 0, bad = 0;
    for (int len = 1; len <= 3; len++) {
        long total = 1L << (8 * len);
        for (long v = 0; v < total; v++) {
            int has_nul = 0;
            for (int i = 0; i < len; i++) {
                in[i] = (unsigned char)(v >> (8 * i));
                has_nul |= in[i] == 0;
            }
            if (has_nul)
                continue;
            size_t k = md_utf8_repair((const char *)in, (size_t)len, out, sizeof out);
            int ok = md_utf8_valid((const char *)in, (size_t)len);
            checked++;
            if (!md_utf8_valid(out, k) || k > 3 * (size_t)len || (ok != (k == (size_t)len && !memcmp(in, out, k))))
                bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(checked > 16000000);
    /* Known count: of the 255^2 two-byte strings without NUL, the valid ones are 127^2 ASCII
     * pairs plus 30 * 64 two-byte characters. */
    long valid2 = 0;
    for (int a = 1; a < 256; a++)
        for (int b = 1; b < 256; b++) {
            in[0] = (unsigned char)a, in[1] = (unsigned char)b;
            valid2 += md_utf8_valid((const char *)in, 2);
        }
    CHECK_EQ_INT(valid2, 127 * 127 + 30 * 64);
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    RUN(test_utf8_valid);
    RUN(test_utf8_repair);
    RUN(test_utf8_repair_cut);
    RUN(test_utf8_exhaustive);
    return md_test_summary("test_base");
}
