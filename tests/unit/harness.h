/* harness.h - the tiny unit-test harness: CHECK macros and a summary line.
 *
 * Each test program defines tests as plain functions, runs them with RUN(),
 * and returns md_test_summary(), which prints "N passed, N failed" as its last
 * line (CI reads that line) and returns non-zero when anything failed.
 */
#ifndef MD_TEST_HARNESS_H
#define MD_TEST_HARNESS_H

#include <stdio.h>
#include <string.h>

static int md_t_passed, md_t_failed, md_t_cur_failed;

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

#define RUN(fn)                                                                            \
    do {                                                                                   \
        md_t_cur_failed = 0;                                                               \
        fn();                                                                              \
        if (md_t_cur_failed) {                                                             \
            md_t_failed++;                                                                 \
            fprintf(stderr, "not ok %s\n", #fn);                                           \
        } else {                                                                           \
            md_t_passed++;                                                                 \
            fprintf(stderr, "ok     %s\n", #fn);                                           \
        }                                                                                  \
    } while (0)

static inline int md_test_summary(const char *suite)
{
    fflush(stderr);
    printf("%s: %d passed, %d failed\n", suite, md_t_passed, md_t_failed);
    return md_t_failed ? 1 : 0;
}

#endif
