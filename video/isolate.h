/* isolate.h - the video API of video.h, run in sandboxed worker processes: FFmpeg parses untrusted
 * files (probe, decode, picture queries) in a child process with a memory limit, a CPU-time limit,
 * no network, no way to open files by path, a closed set of file descriptors and a seccomp filter;
 * a crash, hang or limit of the worker fails that one call and the caller keeps running.
 *
 * Any program that uses these functions makes its own executable the worker: it calls
 * md_video_worker_main() first thing in main(), before any thread or other start-up work:
 *
 *     int main(int argc, char **argv)
 *     {
 *         int rc = md_video_worker_main(argc, argv);   // -1: not a worker invocation
 *         if (rc >= 0)
 *             return rc;
 *         ...
 *         md_video_sandbox sb = md_video_sandbox_default();   // 2 GiB, CPU limit, 30 s watchdog
 *         md_video_iso *d;
 *         if (md_video_iso_decoder_open(&sb, path, &params, &info, &d, err, sizeof err) != MD_OK) ...;
 *         md_video_batch b;
 *         while ((st = md_video_iso_next(d, &b)) == MD_OK && b.n > 0)
 *             encode(b.pixels, b.n);          // points into memory shared with the worker
 *         md_video_iso_close(d);
 *     }
 *
 * Each function mirrors its in-process twin in video.h: the same arguments (plus the sandbox), the
 * same results bit for bit (md_video_info, pixels, frame times, statistics, statuses and messages
 * of the file's own errors), since the worker runs exactly that code. Added failures, each
 * naming its cause in ERR / md_video_iso_error():
 *   MD_ERR_MEDIA     "decoder process killed by signal 11 (SIGSEGV)" (a crash on the file; any
 *                    signal), "decoder made no progress for 30 s; killed" (the watchdog),
 *                    "decoder process sent a malformed reply; killed"
 *   MD_ERR_TOO_LARGE "decoder exceeded its memory limit (2 GiB)", "decoder exceeded its CPU-time
 *                    limit (SIGXCPU)"
 *   MD_ERR_FORBIDDEN the path's last component is a symbolic link (the file is opened with
 *                    O_NOFOLLOW: resolve and check links before calling)
 * PATH may also name one of this process's open descriptors as "/proc/self/fd/N" or "/dev/fd/N":
 * that descriptor is duplicated, not reopened, so the worker reads exactly the file the caller
 * opened and checked, whatever the name on disk points to by then (FFmpeg then sees no file name
 * extension, as in-process with the same PATH). The caller keeps its descriptor; its offset and
 * flags are not touched.
 *   MD_ERR_UNAVAILABLE the worker could not be started (message says why)
 * Differences to the in-process API: where the kernel lacks Landlock the worker reads the file as
 * /proc/self/fd/N, so FFmpeg cannot use the file name's extension to pick a format (messages of
 * unreadable files then differ, headerless raw video is not recognised); files that open other
 * files (md_video_open_opts.allow_nested) can never work in a worker: it can open only its one
 * file; a cancelled decoder's worker is killed at once.
 *
 * The worker (video/worker.c) is started with posix_spawn (never a fork of this process without
 * exec) as WORKER_EXE "__video-worker"; it gets the file as an already-open read-only descriptor,
 * pipes for requests and replies, and for decoders a shared memory block (memfd) that holds two
 * batches: the worker copies each batch there once and md_video_iso_next() hands out pointers into
 * it. Before it reads the file the worker applies, in this order: RLIMIT_CORE 0, RLIMIT_NOFILE 32,
 * RLIMIT_CPU, RLIMIT_AS (skipped in AddressSanitizer builds, which reserve terabytes of address
 * space), PR_SET_PDEATHSIG SIGKILL, PR_SET_NO_NEW_PRIVS, a Landlock ruleset that lets it open
 * nothing but that one file, read-only (Linux 5.13+; where the kernel lacks Landlock the worker
 * still cannot write any file, but could read those this process can: md_video_iso_sandbox()
 * tells, and the first such worker logs a warning), and a seccomp filter (x86-64 and arm64) that
 * denies sockets, exec, new processes (threads stay allowed), ptrace, signals to other
 * processes, opening files for writing, mounts, namespaces, io_uring, bpf, keyrings and module
 * loading. Every other descriptor is closed.
 *
 * Thread-safety: calls are independent and may run concurrently on any threads; one md_video_iso
 * is used by one thread at a time. The worker gets SIGKILL when the thread that started it exits
 * (PR_SET_PDEATHSIG follows threads, not processes): open decoders on long-lived threads (a job
 * worker pool), not on threads that end before md_video_iso_close(). Nothing here changes this
 * process's signal handlers; a write to a dead worker never raises SIGPIPE here.
 *
 * Cost: one process start (a few milliseconds) per probe, decoder or picture, one copy of each
 * batch into shared memory, one pipe round trip per batch; tests/bench/bench_decode.sh measures it.
 */
#ifndef MD_VIDEO_ISOLATE_H
#define MD_VIDEO_ISOLATE_H

#include "video.h"

#include <stddef.h>

/* argv[1] of a worker invocation. */
#define MD_VIDEO_WORKER_ARG "__video-worker"

typedef struct md_video_sandbox {
    long long mem_limit_bytes; /* RLIMIT_AS of the worker (address space, not resident memory);
                                  <= 0: none. Default 2 GiB */
    int cpu_limit_s;           /* RLIMIT_CPU: CPU seconds of all the worker's threads over its
                                  whole life (a decoder's worker lives for the whole video, so
                                  size it by the video's duration); <= 0: none. Default 3600 */
    double watchdog_s;         /* wall-clock seconds without progress after which the worker is
                                  killed: while a call waits, progress is the worker's decoding
                                  loop ticking (several times a second while it reads or
                                  decodes); a picture query has no ticks, so for it this bounds
                                  the whole call. <= 0: none. Default 30 */
    int log_level;             /* md_log_level (base/log.h) of the worker's own log lines, FFmpeg's
                                  included; they go to this process's stderr. Default MD_LOG_WARN */
    const char *worker_exe;    /* the executable started as the worker; NULL: "/proc/self/exe"
                                  (this program, which must call md_video_worker_main()) */
} md_video_sandbox;

md_video_sandbox md_video_sandbox_default(void);

/* Sandbox layers a worker reported in place (md_video_iso_sandbox()). */
enum {
    MD_VIDEO_SANDBOX_RLIMITS = 1 << 0,   /* RLIMIT_CORE/NOFILE/CPU set (CPU when asked) */
    MD_VIDEO_SANDBOX_MEM_LIMIT = 1 << 1, /* RLIMIT_AS set (not asked for, or a sanitizer build: 0) */
    MD_VIDEO_SANDBOX_NO_NEW_PRIVS = 1 << 2,
    MD_VIDEO_SANDBOX_LANDLOCK = 1 << 3, /* can open only its one file */
    MD_VIDEO_SANDBOX_SECCOMP = 1 << 4,
    MD_VIDEO_SANDBOX_FDS_CLOSED = 1 << 5
};

/* If ARGV is a worker invocation (argv[1] == MD_VIDEO_WORKER_ARG), runs the worker and returns its
 * exit status (0 after a normal end, non-zero when the protocol broke or the sandbox could not be
 * set up); else returns -1 at once, having touched nothing. Call it first thing in main(). */
int md_video_worker_main(int argc, char **argv);

/* md_video_probe() in a worker. SB NULL means md_video_sandbox_default(). PROGRESS (may be NULL)
 * is called on the caller's thread with the worker's progress; returning non-zero kills the
 * worker and returns MD_ERR_CANCELLED. */
md_status md_video_iso_probe(const md_video_sandbox *sb, const char *path, md_video_info *info,
                             md_video_progress_fn progress, void *ctx, char *err, size_t errlen);

/* md_video_probe_ex() in a worker: OPTS NULL means the defaults. allow_nested = 1 cannot reach other
 * files from a worker (it can open only its own): such files fail there. */
md_status md_video_iso_probe_ex(const md_video_sandbox *sb, const char *path, const md_video_open_opts *opts,
                                md_video_info *info, md_video_progress_fn progress, void *ctx, char *err,
                                size_t errlen);

typedef struct md_video_iso md_video_iso;

/* md_video_decoder_open() in a worker, which keeps the file open until md_video_iso_close().
 * PARAMS->interrupt (thread-safe, as in video.h) is polled by the calling thread every ~10 ms while
 * a call waits for the worker, and before each md_video_iso_next(); when it says stop, the worker
 * is killed and the call returns MD_ERR_CANCELLED "cancelled". On success *OUT owns the worker;
 * release it with md_video_iso_close(). */
md_status md_video_iso_decoder_open(const md_video_sandbox *sb, const char *path, const md_video_params *params,
                                    const md_video_info *probed, md_video_iso **out, char *err, size_t errlen);

/* As md_video_decoder_next(): BATCH->pixels points into memory shared with the worker (read-only
 * here), BATCH->frames into this object; both are valid until the next call or close. While the
 * caller works on a batch the worker prepares the next one. After an error (the file's, or the
 * worker's death, named in md_video_iso_error()) the worker is gone and further calls return the
 * same error. */
md_status md_video_iso_next(md_video_iso *d, md_video_batch *batch);

/* As md_video_decoder_info(), _expected(), _keyframe_mode(), _stats(), _error(): borrowed until
 * close. Statistics are the worker's as of its last reply (final once next returned the end or an
 * error). */
const md_video_info *md_video_iso_info(const md_video_iso *d);
long long md_video_iso_expected(const md_video_iso *d);
int md_video_iso_keyframe_mode(const md_video_iso *d);
void md_video_iso_stats(const md_video_iso *d, md_video_decode_stats *stats);
const char *md_video_iso_error(const md_video_iso *d);

/* The worker's process id while it runs, else -1 (for tests and diagnostics). */
int md_video_iso_pid(const md_video_iso *d);

/* MD_VIDEO_SANDBOX_* bits the worker reported in place. */
unsigned md_video_iso_sandbox(const md_video_iso *d);

/* Kills the worker if it still runs, reaps it, unmaps and closes everything; NULL is a no-op. Safe
 * at any point, also mid-video. Never blocks for more than a few milliseconds. */
void md_video_iso_close(md_video_iso *d);

/* md_video_load_image() in a worker: the picture's tensor arrives in shared memory and is copied
 * once into OUT_CHW. The watchdog bounds the whole call. */
md_status md_video_iso_load_image(const md_video_sandbox *sb, const char *path, int size, const float mean[3],
                                  const float std[3], float *out_chw, char *err, size_t errlen);

/* md_video_load_image_ex() in a worker (OPTS NULL: the defaults). */
md_status md_video_iso_load_image_ex(const md_video_sandbox *sb, const char *path, const md_video_open_opts *opts,
                                     int size, const float mean[3], const float std[3], float *out_chw, char *err,
                                     size_t errlen);

/* ---- the wire protocol between isolate.c and worker.c (not an API; compiled in by defining
 * MD_VIDEO_ISOLATE_WIRE). Both ends are normally the same executable; START carries the sizes of
 * the structs sent raw so a mismatched worker_exe is refused rather than misread. ------------- */
#ifdef MD_VIDEO_ISOLATE_WIRE
#include <stdatomic.h>
#include <stdint.h>

#define MD_WIRE_MAGIC 0x5756444du /* "MDVW" */
#define MD_WIRE_VERSION 1
#define MD_WIRE_ERRLEN 256
#define MD_WIRE_MAX_PAYLOAD 65536 /* > sizeof(md_wire_batch) + 1024 frames */
#define MD_WIRE_HEAD_BYTES 4096   /* the shared block's first page: md_wire_shm_head */
#define MD_WIRE_FILE_PATH "/proc/self/fd/3"
#define MD_WIRE_PATH_MAX 4096

/* The worker's descriptors: 0 and 1 /dev/null, 2 the parent's stderr, then these; no others. */
enum { MD_WIRE_FD_FILE = 3, MD_WIRE_FD_REQ = 4, MD_WIRE_FD_RSP = 5, MD_WIRE_FD_SHM = 6, MD_WIRE_FD_END = 7 };

enum md_wire_type {
    MD_WIRE_REQ_START = 1,  /* md_wire_start: the whole job, sent once right after the spawn */
    MD_WIRE_REQ_NEXT,       /* md_wire_next: the batch wanted (releases the one held before) */
    MD_WIRE_RSP_HELLO = 16, /* md_wire_hello: sandbox in place, file not yet touched */
    MD_WIRE_RSP_PROGRESS,   /* md_wire_progress (probe, when asked for) */
    MD_WIRE_RSP_PROBE,      /* md_wire_probe, then the worker exits */
    MD_WIRE_RSP_OPEN,       /* md_wire_open (decoder) */
    MD_WIRE_RSP_BATCH,      /* md_wire_batch + n md_video_frame; pixels in shared buffer seq % 2 */
    MD_WIRE_RSP_IMAGE,      /* md_wire_image; the tensor in shared buffer 0, then the worker exits */
    MD_WIRE_RSP_FATAL       /* md_wire_text: setup or protocol failure, then exit status 3 */
};

enum md_wire_job { MD_WIRE_JOB_PROBE = 1, MD_WIRE_JOB_DECODE, MD_WIRE_JOB_IMAGE };

/* Every message: this header, then LEN payload bytes; STATUS is an md_status (0 for requests). */
typedef struct md_wire_hdr {
    uint32_t magic;
    uint16_t version, type;
    uint32_t len;
    int32_t status;
} md_wire_hdr;

typedef struct md_wire_start {
    int32_t job;        /* md_wire_job */
    int32_t parent_pid; /* the worker exits when its parent is no longer this one */
    uint32_t sizeof_start, sizeof_info, sizeof_params, sizeof_frame, sizeof_stats, pad0;
    int64_t mem_limit;   /* <= 0: none */
    int32_t cpu_limit_s; /* <= 0: none */
    int32_t log_level;
    uint64_t shm_bytes; /* the memfd's (sealed) size */
    uint64_t buf_bytes; /* shared buffer i starts at MD_WIRE_HEAD_BYTES + i * buf_bytes */
    int32_t want_progress, has_probed;
    int32_t has_opts, pad2;
    md_video_open_opts opts; /* probe and picture jobs (decoders: params.open) */
    md_video_params params;  /* interrupt NULL */
    md_video_info probed;
    int32_t image_size, has_mean, has_std, pad1;
    float mean[3], std[3];
    /* The caller's path, "" when too long: under Landlock the worker opens it by this name, so
     * FFmpeg sees the same file name (extension) as in-process; Landlock's rule is on the file
     * the parent opened, so the name can reach no other file. Without Landlock the worker reads
     * MD_WIRE_FILE_PATH instead, so a file swapped in since is never read. */
    char path[MD_WIRE_PATH_MAX];
} md_wire_start;

typedef struct md_wire_hello {
    int32_t pid;
    uint32_t sandbox; /* MD_VIDEO_SANDBOX_* */
    int32_t landlock_abi, pad;
} md_wire_hello;

typedef struct md_wire_progress {
    int64_t done, total;
} md_wire_progress;

typedef struct md_wire_probe {
    md_video_info info;
    char err[MD_WIRE_ERRLEN];
} md_wire_probe;

typedef struct md_wire_open {
    md_video_info info;
    int64_t expected;
    int32_t keyframe_mode, pad;
    char err[MD_WIRE_ERRLEN];
} md_wire_open;

typedef struct md_wire_next {
    int64_t seq;
} md_wire_next;

typedef struct md_wire_batch {
    int64_t seq, first_index;
    int32_t n, size;
    md_video_decode_stats stats;
    char err[MD_WIRE_ERRLEN];
    /* then n md_video_frame */
} md_wire_batch;

typedef struct md_wire_image {
    char err[MD_WIRE_ERRLEN];
} md_wire_image;

typedef struct md_wire_text {
    char err[MD_WIRE_ERRLEN];
} md_wire_text;

/* The shared block's first page. TICKS counts the worker's decoding loop (FFmpeg's interrupt
 * callback, progress calls): the parent's watchdog reads it. A crash signal's handler records what
 * it saw, so the parent can tell a crash after a failed allocation from any other. */
typedef struct md_wire_shm_head {
    atomic_ullong ticks;
    int32_t crash_signal, crash_code, crash_errno, pad;
} md_wire_shm_head;
#endif /* MD_VIDEO_ISOLATE_WIRE */

#endif
