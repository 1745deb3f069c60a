/* fuzz_common.h - what the libFuzzer targets of tests/fuzz share (header-only, static).
 *
 * The loaders under test take paths, not buffers, so each input is written to a memory file
 * (memfd_create) and handed over as /proc/self/fd/N: no disk traffic per input, a regular file
 * for fstat/mmap/FFmpeg like a real one, and nothing left behind when the process dies.
 *
 * Each target defines LLVMFuzzerTestOneInput (and may define LLVMFuzzerInitialize); built with
 * clang -fsanitize=fuzzer,address,undefined by `make fuzz` / `make fuzz-regress`. A target
 * returns 0 for every input the code under test refuses cleanly; anything else (a sanitizer
 * report, an abort() from a broken invariant below, a timeout) is a finding.
 */
#ifndef MD_FUZZ_COMMON_H
#define MD_FUZZ_COMMON_H

#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../base/log.h"
#include "../../base/status.h"

/* A memory file holding the N bytes at DATA; *FD keeps it open across inputs (start it at -1).
 * Returns its path (static storage, one per FD slot), or NULL when the file cannot be made. */
static inline const char *fz_memfile(int *fd, char path[64], const uint8_t *data, size_t n)
{
    if (*fd < 0 && (*fd = memfd_create("momentd-fuzz", MFD_CLOEXEC)) < 0) {
        perror("memfd_create");
        abort(); /* the harness itself is broken: say so rather than fuzz nothing */
    }
    if (ftruncate(*fd, 0) != 0)
        abort();
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(*fd, data + done, n - done, (off_t)done);
        if (w <= 0)
            abort();
        done += (size_t)w;
    }
    snprintf(path, 64, "/proc/self/fd/%d", *fd);
    return path;
}

/* Makes a fresh directory PREFIX-<pid>-XXXXXX under /dev/shm (tmpfs; /tmp when there is none)
 * into OUT, first removing those of earlier runs whose process is gone: a run that ends in a
 * crash never gets to remove its own. */
static inline void fz_tmpdir(const char *prefix, char out[128])
{
    const char *bases[] = {"/dev/shm", "/tmp"};
    for (int b = 0; b < 2; b++) {
        char cmd[512];
        /* A name is PREFIX-<pid>-XXXXXX: kill -0 <pid> fails once that process is gone. */
        snprintf(cmd, sizeof cmd,
                 "for d in %s/%s-*-*; do [ -d \"$d\" ] || continue; p=${d#%s/%s-}; p=${p%%%%-*}; "
                 "kill -0 \"$p\" 2>/dev/null || rm -rf \"$d\"; done",
                 bases[b], prefix, bases[b], prefix);
        if (system(cmd) != 0)
            fprintf(stderr, "fuzz: could not clean up old %s/%s-* directories\n", bases[b], prefix);
        snprintf(out, 128, "%s/%s-%ld-XXXXXX", bases[b], prefix, (long)getpid());
        if (mkdtemp(out))
            return;
    }
    perror("fuzz: mkdtemp");
    abort();
}

/* A broken invariant of the code under test: print it and abort, which libFuzzer reports as a
 * crash with the input that caused it. */
#define FZ_ASSERT(cond)                                                                                \
    do {                                                                                               \
        if (!(cond)) {                                                                                 \
            fprintf(stderr, "fuzz: %s:%d: invariant '%s' broken\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                                   \
        }                                                                                              \
    } while (0)

/* With MD_FUZZ_VERBOSE=1 in the environment each input's outcome is printed, to see what the seeds
 * of a corpus reach: MD_FUZZ_VERBOSE=1 ./build-fuzz/fuzz/fuzz_x tests/fuzz/corpus/fuzz_x/\* */
static inline int fz_verbose(void)
{
    static int verbose = -1;
    if (verbose < 0) {
        const char *v = getenv("MD_FUZZ_VERBOSE");
        verbose = v && strcmp(v, "1") == 0;
    }
    return verbose;
}

static inline void fz_report(md_status st, const char *err)
{
    if (fz_verbose())
        fprintf(stderr, "fuzz: %s%s%s\n", md_status_str(st), err && err[0] ? ": " : "", err ? err : "");
}

/* Log records of refused inputs would drown libFuzzer's status lines. */
static inline void fz_quiet(void) { md_log_set_level(MD_LOG_ERROR); }

#endif
