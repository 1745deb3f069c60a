/* harness.h - the tiny unit-test harness: CHECK macros, skips, a name filter and a summary line.
 *
 * Each test program defines tests as plain functions, calls md_test_init(argc, argv) first,
 * runs the tests with RUN(), and returns md_test_summary(), which prints
 * "NAME: N passed, M failed" (", K skipped" appended when K > 0) as its last line (CI reads
 * that line) and returns non-zero when anything failed.
 *
 *   ./build/tests/test_x          every test
 *   ./build/tests/test_x NAME     only the tests whose function name contains NAME; says how
 *                                 many were filtered out, and fails when none matches
 *
 * A case that cannot run here (no ffmpeg, no fixture, no CUDA device) is skipped, never passed:
 *   md_test_skip("why")          inside a test: the running case counts as skipped (a CHECK
 *                                that failed before still makes it fail); return after it
 *   SKIP(fn, "why")              counts FN as skipped without running it
 *   md_test_skip_rest("why")     the RUN()s that follow count as skipped with that reason,
 *                                until md_test_skip_rest(NULL)
 *   md_test_begin / md_test_end  for a case run by hand rather than as one function
 * Every skip prints "skip   NAME: why". Not thread-safe: CHECK from test threads only sets a
 * flag, the counting happens on the main thread.
 */
#ifndef MD_TEST_HARNESS_H
#define MD_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int md_t_passed, md_t_failed, md_t_skipped, md_t_cur_failed;
static int md_t_matched, md_t_filtered; /* cases the name filter let through / left out */
static const char *md_t_filter;     /* argv[1], or NULL: run everything */
static const char *md_t_cur_skip;   /* reason the running case was skipped, or NULL */
static const char *md_t_skip_rest;  /* reason every following case is skipped, or NULL */

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);              \
            md_t_cur_failed = 1;                                                           \
        }                                                                                  \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                 \
    do {                                                                                   \
        long long md_a_ = (long long)(a), md_b_ = (long long)(b);                          \
        if (md_a_ != md_b_) {                                                              \
            fprintf(stderr, "  FAIL %s:%d: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, \
                    #a, #b, md_a_, md_b_);                                                 \
            md_t_cur_failed = 1;                                                           \
        }                                                                                  \
    } while (0)

#define CHECK_STR(a, b)                                                                    \
    do {                                                                                   \
        const char *md_a_ = (a), *md_b_ = (b);                                             \
        if (!md_a_ || !md_b_ || strcmp(md_a_, md_b_) != 0) {                               \
            fprintf(stderr, "  FAIL %s:%d: %s == %s (\"%s\" vs \"%s\")\n", __FILE__,       \
                    __LINE__, #a, #b, md_a_ ? md_a_ : "(null)", md_b_ ? md_b_ : "(null)"); \
            md_t_cur_failed = 1;                                                           \
        }                                                                                  \
    } while (0)

/* Reads the optional name filter from the command line. More than one argument is a usage
 * error: exits 2 (a typo must not silently run everything). */
static inline void md_test_init(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && (!argv[1][0] || argv[1][0] == '-'))) {
        fprintf(stderr, "usage: %s [NAME]   (runs the tests whose function name contains NAME)\n", argv[0]);
        exit(2);
    }
    md_t_filter = argc == 2 ? argv[1] : NULL;
}

/* Starts case NAME. Returns 0 when it is not to run: the filter leaves it out (counted as
 * filtered out) or md_test_skip_rest() is in force (counted as skipped); else 1, and the
 * caller runs its checks and calls md_test_end(NAME). */
static inline int md_test_begin(const char *name)
{
    if (md_t_filter && !strstr(name, md_t_filter)) {
        md_t_filtered++;
        return 0;
    }
    md_t_matched++;
    if (md_t_skip_rest) {
        md_t_skipped++;
        fprintf(stderr, "skip   %s: %s\n", name, md_t_skip_rest);
        return 0;
    }
    md_t_cur_failed = 0;
    md_t_cur_skip = NULL;
    return 1;
}

/* Marks the running case skipped with REASON (a string that outlives the case). */
static inline void md_test_skip(const char *reason) { md_t_cur_skip = reason ? reason : "skipped"; }

static inline void md_test_skip_rest(const char *reason) { md_t_skip_rest = reason; }

/* Ends case NAME: counts it failed (any CHECK failed), skipped, or passed, and prints that. */
static inline void md_test_end(const char *name)
{
    if (md_t_cur_failed) {
        md_t_failed++;
        fprintf(stderr, "not ok %s\n", name);
    } else if (md_t_cur_skip) {
        md_t_skipped++;
        fprintf(stderr, "skip   %s: %s\n", name, md_t_cur_skip);
    } else {
        md_t_passed++;
        fprintf(stderr, "ok     %s\n", name);
    }
    md_t_cur_failed = 0;
    md_t_cur_skip = NULL;
}

#define RUN(fn)                                                                            \
    do {                                                                                   \
        if (md_test_begin(#fn)) {                                                          \
            fn();                                                                          \
            md_test_end(#fn);                                                              \
        }                                                                                  \
    } while (0)

/* (void)fn: the test stays referenced, so a skipped one is no unused-function error. */
#define SKIP(fn, reason)                                                                   \
    do {                                                                                   \
        (void)(fn);                                                                        \
        if (md_test_begin(#fn)) {                                                          \
            md_test_skip(reason);                                                          \
            md_test_end(#fn);                                                              \
        }                                                                                  \
    } while (0)

/* Prints the summary line and returns the exit status: 1 when a case failed, or when a name
 * filter was given and matched no case (counted as a failure, so that the line says so too). */
static inline int md_test_summary(const char *suite)
{
    if (md_t_filter) {
        fprintf(stderr, "# filter '%s': %d test%s filtered out\n", md_t_filter, md_t_filtered,
                md_t_filtered == 1 ? "" : "s");
        if (md_t_matched == 0) {
            fprintf(stderr, "not ok filter '%s': no test name contains it\n", md_t_filter);
            md_t_failed++;
        }
    }
    fflush(stderr);
    if (md_t_skipped)
        printf("%s: %d passed, %d failed, %d skipped\n", suite, md_t_passed, md_t_failed, md_t_skipped);
    else
        printf("%s: %d passed, %d failed\n", suite, md_t_passed, md_t_failed);
    return md_t_failed ? 1 : 0;
}

#endif
