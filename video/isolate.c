/* isolate.c - the parent side of decode isolation (isolate.h): starts a sandboxed worker process
 * (worker.c) per probe, decoder or picture, hands it the file as an open descriptor, and turns its
 * replies - or its death, hang or limits - into the statuses of video.h.
 *
 * One connection (conn) per worker:
 *   spawn   pipe2 x 2 (O_CLOEXEC), a memfd sized for the job and sealed against shrinking and
 *           growing (a worker that could shrink it would make our reads of the mapping SIGBUS),
 *           mapped read-only here; posix_spawn of WORKER_EXE "__video-worker" with the file, the
 *           pipes and the memfd dup'ed to 3..6, every other descriptor closed, signals reset, its
 *           own process group, a minimal environment (one BLAS thread; sanitizer options passed
 *           through); then START (the whole job) is written at once: no round trip before work.
 *   wait    poll() on the reply pipe in steps of 10 ms; each step checks the caller's interrupt,
 *           the worker's tick counter in the shared header (the watchdog restarts whenever it
 *           moved or a message came), and EOF (the worker is gone: reap it, say why).
 *   replies are checked before use: magic, version, type, exact payload sizes, counts against
 *           the batch size, strings NUL-terminated; the pixels stay in shared memory (read-only
 *           here), everything else is copied out. A malformed reply kills the worker.
 *   end     probe and picture workers exit after their reply, decoders after the end or an
 *           error; a worker still running at close is killed. Every worker is reaped with wait4()
 *           on its own pid (its rusage tells a CPU-limit SIGKILL); no path leaves a zombie, a
 *           descriptor or a mapping (conn_close is the one cleanup path).
 * Writes to a worker that died raise no SIGPIPE in this process: the signal is blocked on the
 * writing thread for the write and a pending one is consumed (the process's handlers are not
 * ours to change).
 */
#define _GNU_SOURCE
#define MD_VIDEO_ISOLATE_WIRE
#include "isolate.h"

#include "../base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define ISO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ISO_ASAN 1
#endif
#endif
#ifndef ISO_ASAN
#define ISO_ASAN 0
#endif

extern char **environ;

#define POLL_STEP_MS 10
#define REAP_WAIT_S 2.0 /* a worker that said its last word gets this long to exit */

md_video_sandbox md_video_sandbox_default(void)
{
    md_video_sandbox sb = {0};
    sb.mem_limit_bytes = 2LL << 30;
    sb.cpu_limit_s = 3600;
    sb.watchdog_s = 30;
    sb.log_level = MD_LOG_WARN;
    sb.worker_exe = NULL;
    return sb;
}

/* ---- one worker ------------------------------------------------------------------------------ */

typedef struct conn {
    md_video_sandbox sb;
    pid_t pid;          /* > 0 until reaped */
    int req_fd, rsp_fd; /* -1 when closed */
    const unsigned char *shm;
    size_t shm_bytes;
    const md_wire_shm_head *head;
    unsigned sandbox; /* from HELLO */
    int got_hello;
    int exited; /* reaped */
    int wstatus;
    struct rusage ru;
    unsigned char *rx; /* sizeof(md_wire_hdr) + MD_WIRE_MAX_PAYLOAD */
    size_t rx_len;
} conn;

static void conn_init(conn *c, const md_video_sandbox *sb)
{
    memset(c, 0, sizeof *c);
    c->sb = sb ? *sb : md_video_sandbox_default();
    c->pid = -1;
    c->req_fd = c->rsp_fd = -1;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void size_str(long long bytes, char *out, size_t outlen)
{
    if (bytes >= (1LL << 30) && bytes % (1LL << 30) == 0)
        snprintf(out, outlen, "%lld GiB", bytes >> 30);
    else if (bytes >= (1LL << 20) && bytes % (1LL << 20) == 0)
        snprintf(out, outlen, "%lld MiB", bytes >> 20);
    else
        snprintf(out, outlen, "%lld bytes", bytes);
}

static const char *sig_name(int sig)
{
    switch (sig) {
    case SIGHUP:
        return "SIGHUP";
    case SIGINT:
        return "SIGINT";
    case SIGQUIT:
        return "SIGQUIT";
    case SIGILL:
        return "SIGILL";
    case SIGTRAP:
        return "SIGTRAP";
    case SIGABRT:
        return "SIGABRT";
    case SIGBUS:
        return "SIGBUS";
    case SIGFPE:
        return "SIGFPE";
    case SIGKILL:
        return "SIGKILL";
    case SIGUSR1:
        return "SIGUSR1";
    case SIGSEGV:
        return "SIGSEGV";
    case SIGUSR2:
        return "SIGUSR2";
    case SIGPIPE:
        return "SIGPIPE";
    case SIGALRM:
        return "SIGALRM";
    case SIGTERM:
        return "SIGTERM";
    case SIGXCPU:
        return "SIGXCPU";
    case SIGXFSZ:
        return "SIGXFSZ";
    case SIGSYS:
        return "SIGSYS";
    default:
        return "?";
    }
}

/* Waits up to WAIT_S for the worker to exit by itself (its reply pipe reads EOF when it is gone),
 * then kills it; reaps it either way. */
static void conn_reap(conn *c, double wait_s)
{
    if (c->pid <= 0)
        return;
    double end = md_mono_s() + wait_s;
    int r;
    while ((r = (int)wait4(c->pid, &c->wstatus, WNOHANG, &c->ru)) == 0 && md_mono_s() < end) {
        if (c->rsp_fd >= 0) {
            /* Drain what is left so EOF can be seen; the replies no longer matter. */
            struct pollfd pfd = {c->rsp_fd, POLLIN, 0};
            if (poll(&pfd, 1, 1) > 0) {
                unsigned char sink[4096];
                if (read(c->rsp_fd, sink, sizeof sink) == 0)
                    close_fd(&c->rsp_fd);
            }
        } else {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    if (r == 0) {
        kill(c->pid, SIGKILL);
        while ((r = (int)wait4(c->pid, &c->wstatus, 0, &c->ru)) < 0 && errno == EINTR)
            ;
    }
    c->exited = 1;
    c->pid = -1;
}

/* The one cleanup path: kills a worker still running, reaps it, closes and unmaps. */
static void conn_close(conn *c)
{
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        conn_reap(c, 0);
    }
    close_fd(&c->req_fd);
    close_fd(&c->rsp_fd);
    if (c->shm)
        munmap((void *)(uintptr_t)c->shm, c->shm_bytes);
    c->shm = NULL;
    c->head = NULL;
    free(c->rx);
    c->rx = NULL;
}

/* Kills the worker (a decision of ours: watchdog, cancel, malformed reply) and reaps it. */
static void conn_kill(conn *c)
{
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        conn_reap(c, 0);
    }
}

/* Why the (reaped) worker is gone, as a status and message. */
static md_status death_status(const conn *c, char *err, size_t errlen)
{
    char lim[32];
    double cpu = (double)c->ru.ru_utime.tv_sec + c->ru.ru_utime.tv_usec / 1e6 + (double)c->ru.ru_stime.tv_sec +
                 c->ru.ru_stime.tv_usec / 1e6;
    if (WIFSIGNALED(c->wstatus)) {
        int sig = WTERMSIG(c->wstatus);
        if (sig == SIGXCPU || (sig == SIGKILL && c->sb.cpu_limit_s > 0 && cpu >= c->sb.cpu_limit_s))
            return md_errf(err, errlen, MD_ERR_TOO_LARGE, "decoder exceeded its CPU-time limit (%s)", sig_name(sig));
        /* The crash handler's note: a fault (si_code > 0) right after an allocation failed. */
        const md_wire_shm_head *h = c->head;
        if (h && (c->sandbox & MD_VIDEO_SANDBOX_MEM_LIMIT) && h->crash_signal == sig && h->crash_code > 0 &&
            h->crash_errno == ENOMEM) {
            size_str(c->sb.mem_limit_bytes, lim, sizeof lim);
            return md_errf(err, errlen, MD_ERR_TOO_LARGE,
                           "decoder exceeded its memory limit (%s): killed by signal %d (%s)", lim, sig, sig_name(sig));
        }
        return md_errf(err, errlen, MD_ERR_MEDIA, "decoder process killed by signal %d (%s)", sig, sig_name(sig));
    }
    if (WIFEXITED(c->wstatus) && WEXITSTATUS(c->wstatus) != 0)
        return md_errf(err, errlen, MD_ERR_INTERNAL,
                       "decoder process exited with status %d before answering (does %s call md_video_worker_main() "
                       "first thing in main()?)",
                       WEXITSTATUS(c->wstatus), c->sb.worker_exe ? c->sb.worker_exe : "this program");
    return md_errf(err, errlen, MD_ERR_INTERNAL, "decoder process exited before answering");
}

/* Writes the whole buffer with SIGPIPE blocked on this thread; a SIGPIPE that the write raised is
 * consumed before the mask is restored. */
static int write_nosig(int fd, const void *buf, size_t n)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE) == 1; /* someone else's: left alone */
    int rc = 0, epipe = 0;
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            epipe = w < 0 && errno == EPIPE;
            rc = -1;
            break;
        }
        p += w;
        n -= (size_t)w;
    }
    if (epipe && !was_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static int conn_send(conn *c, int type, const void *payload, size_t len)
{
    static _Thread_local unsigned char buf[sizeof(md_wire_hdr) + sizeof(md_wire_start)]; /* 4.7 KiB */
    md_wire_hdr h = {
        .magic = MD_WIRE_MAGIC, .version = MD_WIRE_VERSION, .type = (uint16_t)type, .len = (uint32_t)len, .status = 0};
    if (c->req_fd < 0 || len > sizeof(md_wire_start))
        return -1;
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, payload, len);
    return write_nosig(c->req_fd, buf, sizeof h + len);
}

/* A descriptor for the child at a number >= MD_WIRE_FD_END, so the dup2s onto 3..6 cannot clobber
 * one another. */
static int high_fd(int fd)
{
    if (fd < 0 || fd >= MD_WIRE_FD_END)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, MD_WIRE_FD_END);
    close(fd);
    return n;
}

/* The worker's environment: nothing of ours but the sanitizers' settings. One BLAS thread (the
 * worker never multiplies matrices; OpenBLAS would start its pool at load). Under ASan the worker's
 * leak check is off (it needs ptrace and /proc, which the sandbox denies), and a report ends in
 * abort(), so a crash ASan caught still ends the worker by a signal (SIGABRT), not exit status 1. */
static void worker_env(char *asan, size_t asanlen, char **envp, size_t max)
{
    size_t n = 0;
    envp[n++] = "OPENBLAS_NUM_THREADS=1";
    envp[n++] = "OMP_NUM_THREADS=1";
    /* glibc reserves 64 MiB of address space per thread arena, so with FFmpeg's threads RLIMIT_AS
     * would be spent on reservations (5 arenas: 300 MiB for 40 MiB used); two keep it near use. */
    envp[n++] = "MALLOC_ARENA_MAX=2";
    static const char *pass[] = {"UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS", "MSAN_OPTIONS"};
    for (size_t i = 0; i < sizeof pass / sizeof pass[0]; i++) {
        size_t k = strlen(pass[i]);
        for (char **e = environ; e && *e && n + 2 < max; e++)
            if (strncmp(*e, pass[i], k) == 0 && (*e)[k] == '=')
                envp[n++] = *e;
    }
    const char *a = getenv("ASAN_OPTIONS");
    if (ISO_ASAN || (a && *a)) {
        snprintf(asan, asanlen, "ASAN_OPTIONS=%s%s%s", a ? a : "", a && *a ? ":" : "",
                 ISO_ASAN ? "detect_leaks=0:abort_on_error=1" : "");
        envp[n++] = asan;
    }
    envp[n] = NULL;
}

/* Starts the worker for JOB on the open file FD (borrowed), with a shared block of SHM_BYTES, and
 * sends START. On failure nothing is left running or open (conn_close still safe). */
static md_status conn_spawn(conn *c, int fd, md_wire_start *job, size_t shm_bytes, char *err, size_t errlen)
{
    md_status st = MD_OK;
    int req[2] = {-1, -1}, rsp[2] = {-1, -1}, mfd = -1, ffd = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int fa_ok = 0, attr_ok = 0;
    void *m = MAP_FAILED;
    if (!(c->rx = malloc(sizeof(md_wire_hdr) + MD_WIRE_MAX_PAYLOAD))) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (pipe2(req, O_CLOEXEC) != 0 || pipe2(rsp, O_CLOEXEC) != 0 ||
        (mfd = memfd_create("md-video-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0) {
        st = md_errf(err, errlen, errno == ENOMEM ? MD_ERR_NOMEM : MD_ERR_UNAVAILABLE,
                     "cannot start the decoder process: %s", strerror(errno));
        goto out;
    }
    if (ftruncate(mfd, (off_t)shm_bytes) != 0 ||
        fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0 ||
        (m = mmap(NULL, shm_bytes, PROT_READ, MAP_SHARED, mfd, 0)) == MAP_FAILED) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "cannot set up %zu bytes of shared memory: %s", shm_bytes,
                     strerror(errno));
        goto out;
    }
    c->shm = m;
    c->shm_bytes = shm_bytes;
    c->head = (const md_wire_shm_head *)m;
    if ((ffd = fcntl(fd, F_DUPFD_CLOEXEC, MD_WIRE_FD_END)) < 0 || (req[0] = high_fd(req[0])) < 0 ||
        (rsp[1] = high_fd(rsp[1])) < 0 || (mfd = high_fd(mfd)) < 0) {
        st = md_errf(err, errlen, MD_ERR_UNAVAILABLE, "cannot start the decoder process: %s", strerror(errno));
        goto out;
    }
    fa_ok = posix_spawn_file_actions_init(&fa) == 0;
    attr_ok = posix_spawnattr_init(&attr) == 0;
    if (!fa_ok || !attr_ok) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    rc = rc ? rc : posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    rc = rc ? rc : posix_spawn_file_actions_adddup2(&fa, ffd, MD_WIRE_FD_FILE);
    rc = rc ? rc : posix_spawn_file_actions_adddup2(&fa, req[0], MD_WIRE_FD_REQ);
    rc = rc ? rc : posix_spawn_file_actions_adddup2(&fa, rsp[1], MD_WIRE_FD_RSP);
    rc = rc ? rc : posix_spawn_file_actions_adddup2(&fa, mfd, MD_WIRE_FD_SHM);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    rc = rc ? rc : posix_spawn_file_actions_addclosefrom_np(&fa, MD_WIRE_FD_END); /* the worker closes them too */
#endif
    rc = rc ? rc : posix_spawnattr_setsigmask(&attr, &none);
    rc = rc ? rc : posix_spawnattr_setsigdefault(&attr, &all);
    rc = rc ? rc : posix_spawnattr_setpgroup(&attr, 0);
    rc = rc ? rc
            : posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    const char *exe = c->sb.worker_exe ? c->sb.worker_exe : "/proc/self/exe";
    char *argv[] = {(char *)(uintptr_t)exe, MD_VIDEO_WORKER_ARG, NULL};
    char asan[1024], *envp[16];
    worker_env(asan, sizeof asan, envp, sizeof envp / sizeof envp[0]);
    pid_t pid = -1;
    rc = rc ? rc : posix_spawn(&pid, exe, &fa, &attr, argv, envp);
    if (rc != 0) {
        st = md_errf(err, errlen, MD_ERR_UNAVAILABLE, "cannot start the decoder process %s: %s", exe, strerror(rc));
        goto out;
    }
    c->pid = pid;
    c->req_fd = req[1];
    c->rsp_fd = rsp[0];
    req[1] = rsp[0] = -1;
    job->parent_pid = (int32_t)getpid();
    job->sizeof_start = sizeof(md_wire_start);
    job->sizeof_info = sizeof(md_video_info);
    job->sizeof_params = sizeof(md_video_params);
    job->sizeof_frame = sizeof(md_video_frame);
    job->sizeof_stats = sizeof(md_video_decode_stats);
    job->mem_limit = c->sb.mem_limit_bytes > 0 ? c->sb.mem_limit_bytes : 0;
    job->cpu_limit_s = c->sb.cpu_limit_s > 0 ? c->sb.cpu_limit_s : 0;
    job->log_level = c->sb.log_level;
    job->shm_bytes = shm_bytes;
    /* A worker that died at once shows up as EOF on the reply pipe, where the caller looks next. */
    conn_send(c, MD_WIRE_REQ_START, job, sizeof *job);
out:
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    close_fd(&req[0]);
    close_fd(&req[1]);
    close_fd(&rsp[0]);
    close_fd(&rsp[1]);
    close_fd(&mfd);
    close_fd(&ffd);
    return st;
}

typedef struct wait_ctl {
    md_video_interrupt_fn interrupt; /* NULL: none */
    void *interrupt_ctx;
} wait_ctl;

static int have_message(const conn *c, md_wire_hdr *h)
{
    if (c->rx_len < sizeof *h)
        return 0;
    memcpy(h, c->rx, sizeof *h);
    return h->magic != MD_WIRE_MAGIC || h->version != MD_WIRE_VERSION || h->len > MD_WIRE_MAX_PAYLOAD ||
           c->rx_len >= sizeof *h + h->len;
}

/* Waits for the worker's next message: *H and its payload (LEN bytes, copied to PAYLOAD when it
 * is exactly PAYLOAD_LEN long, or to PAYLOAD and TAIL (up to TAIL_CAP) beyond it). HELLO is
 * absorbed here. Returns MD_OK with a message, or the status of the worker's death, a cancel, the
 * watchdog or a malformed message (the worker then is killed and reaped). */
static md_status conn_recv(conn *c, const wait_ctl *w, md_wire_hdr *h, void *payload, size_t payload_len, void *tail,
                           size_t tail_cap, size_t *tail_len, char *err, size_t errlen)
{
    const double wd = c->sb.watchdog_s;
    double deadline = wd > 0 ? md_mono_s() + wd : 0;
    unsigned long long last_ticks = c->head ? atomic_load_explicit(&c->head->ticks, memory_order_relaxed) : 0;
    for (;;) {
        if (have_message(c, h)) {
            size_t len = h->len;
            if (h->magic != MD_WIRE_MAGIC || h->version != MD_WIRE_VERSION || len > MD_WIRE_MAX_PAYLOAD)
                goto malformed;
            const unsigned char *p = c->rx + sizeof *h;
            int ok = 1;
            if (h->type == MD_WIRE_RSP_HELLO) {
                md_wire_hello hello;
                ok = len == sizeof hello;
                if (ok) {
                    memcpy(&hello, p, sizeof hello);
                    c->sandbox = hello.sandbox;
                    c->got_hello = 1;
                }
            } else if (h->type == MD_WIRE_RSP_FATAL) {
                md_wire_text t;
                ok = len == sizeof t;
                if (ok) {
                    memcpy(&t, p, sizeof t);
                    t.err[sizeof t.err - 1] = '\0';
                    memmove(c->rx, c->rx + sizeof *h + len, c->rx_len - sizeof *h - len);
                    c->rx_len -= sizeof *h + len;
                    conn_kill(c);
                    return md_errf(err, errlen, MD_ERR_INTERNAL, "decoder process: %s", t.err);
                }
            } else {
                ok = len >= payload_len && len - payload_len <= tail_cap;
                if (ok) {
                    memcpy(payload, p, payload_len);
                    if (tail_len)
                        *tail_len = len - payload_len;
                    if (len > payload_len)
                        memcpy(tail, p + payload_len, len - payload_len);
                }
            }
            if (!ok)
                goto malformed;
            memmove(c->rx, c->rx + sizeof *h + len, c->rx_len - sizeof *h - len);
            c->rx_len -= sizeof *h + len;
            if (h->type == MD_WIRE_RSP_HELLO)
                continue;
            return MD_OK;
        }
        if (c->rsp_fd < 0 || c->pid <= 0) /* EOF seen (and reaped), or killed before */
            return c->exited ? death_status(c, err, errlen)
                             : md_errf(err, errlen, MD_ERR_INTERNAL, "decoder process is gone");
        if (w && w->interrupt && w->interrupt(w->interrupt_ctx)) {
            conn_kill(c);
            return md_errf(err, errlen, MD_ERR_CANCELLED, "cancelled");
        }
        /* Data wakes poll at once; the step only bounds how late a cancel or the watchdog is. */
        int timeout = (w && w->interrupt) || wd > 0 ? POLL_STEP_MS : -1;
        struct pollfd pfd = {c->rsp_fd, POLLIN, 0};
        int pr = poll(&pfd, 1, timeout);
        if (pr < 0 && errno != EINTR)
            return md_errf(err, errlen, MD_ERR_INTERNAL, "poll: %s", strerror(errno));
        if (pr > 0) {
            size_t cap = sizeof(md_wire_hdr) + MD_WIRE_MAX_PAYLOAD;
            ssize_t r = read(c->rsp_fd, c->rx + c->rx_len, cap - c->rx_len);
            if (r > 0) {
                c->rx_len += (size_t)r;
                if (wd > 0)
                    deadline = md_mono_s() + wd;
            } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                /* The worker is gone (or closed its end, which only exiting does): reap it. Whole
                 * messages already read are still delivered, then its death. */
                close_fd(&c->rsp_fd);
                conn_reap(c, REAP_WAIT_S);
                continue;
            }
        }
        if (c->head) {
            unsigned long long t = atomic_load_explicit(&c->head->ticks, memory_order_relaxed);
            if (t != last_ticks && wd > 0)
                deadline = md_mono_s() + wd;
            last_ticks = t;
        }
        if (wd > 0 && md_mono_s() >= deadline) {
            conn_kill(c);
            return md_errf(err, errlen, MD_ERR_MEDIA, "decoder made no progress for %g s; killed", wd);
        }
    }
malformed:
    conn_kill(c);
    c->rx_len = 0;
    return md_errf(err, errlen, MD_ERR_MEDIA, "decoder process sent a malformed reply; killed");
}

/* A job status from the worker, with MD_ERR_NOMEM under the memory limit named as that limit. */
static md_status job_status(const conn *c, md_status st, const char *msg, char *err, size_t errlen)
{
    if (st == MD_ERR_NOMEM && (c->sandbox & MD_VIDEO_SANDBOX_MEM_LIMIT)) {
        char lim[32];
        size_str(c->sb.mem_limit_bytes, lim, sizeof lim);
        return md_errf(err, errlen, MD_ERR_TOO_LARGE, "decoder exceeded its memory limit (%s)", lim);
    }
    if (st < MD_OK || st > MD_ERR_INTERNAL)
        return md_errf(err, errlen, MD_ERR_MEDIA, "decoder process sent a malformed reply");
    if (st != MD_OK)
        md_errf(err, errlen, st, "%s", msg);
    return st;
}

/* Warns once per process about each sandbox layer a worker could not put in place. */
static void warn_layers(const conn *c)
{
    static atomic_int warned_landlock, warned_seccomp;
    if (!c->got_hello)
        return;
    if (!(c->sandbox & MD_VIDEO_SANDBOX_LANDLOCK) && !atomic_exchange(&warned_landlock, 1))
        md_warn("video worker: Landlock unavailable (Linux 5.13+ with Landlock enabled): workers cannot write "
                "files but can read what this process can");
    if (!(c->sandbox & MD_VIDEO_SANDBOX_SECCOMP) && !atomic_exchange(&warned_seccomp, 1))
        md_warn("video worker: seccomp filter unavailable: workers are not kept from sockets and exec");
}

/* N when PATH names one of this process's descriptors ("/proc/self/fd/N", "/dev/fd/N"), else -1. */
static int own_fd(const char *path)
{
    const char *n = strncmp(path, "/proc/self/fd/", 14) == 0 ? path + 14
                    : strncmp(path, "/dev/fd/", 8) == 0      ? path + 8
                                                             : NULL;
    if (!n || *n < '0' || *n > '9')
        return -1;
    char *end;
    long v = strtol(n, &end, 10);
    return *end == '\0' && v >= 0 && v <= INT_MAX ? (int)v : -1;
}

/* Opens PATH for a worker: read-only, not following a last-component link, not blocking on a
 * FIFO; only regular, non-empty files (md_video_check_file's messages). A PATH naming one of our
 * descriptors duplicates it (the file the caller checked, not whatever the name reaches now);
 * *BY_FD says so. */
static md_status open_file(const char *path, int *fd_out, long long *size, int *by_fd, char *err, size_t errlen)
{
    *fd_out = -1;
    int own = own_fd(path);
    *by_fd = own >= 0;
    int fd = own >= 0 ? fcntl(own, F_DUPFD_CLOEXEC, 0)
                      : open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd >= 0 && own >= 0 && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY) {
        close(fd);
        return md_errf(err, errlen, MD_ERR_IO, "cannot open file: descriptor %d is not readable", own);
    }
    if (fd < 0 && own >= 0 && errno == EBADF)
        return md_errf(err, errlen, MD_ERR_NOT_FOUND, "file not found (no descriptor %d)", own);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            return md_errf(err, errlen, MD_ERR_NOT_FOUND, "file not found");
        if (e == ELOOP)
            return md_errf(err, errlen, MD_ERR_FORBIDDEN, "refusing to follow a symbolic link");
        return md_errf(err, errlen, MD_ERR_IO, "cannot open file: %s", strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return md_errf(err, errlen, MD_ERR_IO, "cannot access file: %s", strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return md_errf(err, errlen, MD_ERR_MEDIA, "not a regular file");
    }
    if (sb.st_size == 0) {
        close(fd);
        return md_errf(err, errlen, MD_ERR_MEDIA, "empty file");
    }
    if (own < 0) /* a duplicate shares the caller's flags: left alone */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    *fd_out = fd;
    if (size)
        *size = (long long)sb.st_size;
    return MD_OK;
}

/* The caller's path for the worker to open under Landlock; "" (the worker's descriptor's own
 * /proc name) when it is too long or names one of our descriptors, which means nothing there. */
static void set_path(md_wire_start *job, const char *path, int by_fd)
{
    if (!by_fd && strlen(path) < sizeof job->path)
        memcpy(job->path, path, strlen(path) + 1);
}

static void clear_err(char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
}

/* ---- probe ----------------------------------------------------------------------------------- */

md_status md_video_iso_probe(const md_video_sandbox *sb, const char *path, md_video_info *info,
                             md_video_progress_fn progress, void *ctx, char *err, size_t errlen)
{
    return md_video_iso_probe_ex(sb, path, NULL, info, progress, ctx, err, errlen);
}

md_status md_video_iso_probe_ex(const md_video_sandbox *sb, const char *path, const md_video_open_opts *opts,
                                md_video_info *info, md_video_progress_fn progress, void *ctx, char *err, size_t errlen)
{
    md_status st = MD_OK;
    conn c;
    conn_init(&c, sb);
    int fd = -1, by_fd = 0;
    long long size = 0, done = 0;
    clear_err(err, errlen);
    /* The in-process probe's own "failed" info: without a path it only resets INFO (no FFmpeg). */
    if (info)
        md_video_probe(NULL, info, NULL, NULL, NULL, 0);
    if (!path || !info)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: path and info are required", __func__);
    if ((st = open_file(path, &fd, &size, &by_fd, err, errlen)) != MD_OK)
        goto out;
    md_wire_start job;
    memset(&job, 0, sizeof job);
    job.job = MD_WIRE_JOB_PROBE;
    set_path(&job, path, by_fd);
    if (opts) {
        job.has_opts = 1;
        job.opts = *opts;
    }
    job.want_progress = progress != NULL;
    if ((st = conn_spawn(&c, fd, &job, MD_WIRE_HEAD_BYTES, err, errlen)) != MD_OK)
        goto out;
    close_fd(&fd);
    for (;;) {
        md_wire_hdr h;
        union {
            md_wire_probe probe;
            md_wire_progress progress;
        } u;
        size_t want = 0;
        /* Both reply types end the payload where their struct does; read the header's type first. */
        if ((st = conn_recv(&c, NULL, &h, &u, 0, &u, sizeof u, &want, err, errlen)) != MD_OK)
            goto out;
        if (h.type == MD_WIRE_RSP_PROGRESS && want == sizeof u.progress) {
            /* Only the worker's word: kept monotonic and within the size we know. */
            long long d = u.progress.done < done ? done : u.progress.done > size ? size : u.progress.done;
            done = d;
            if (progress && progress(ctx, done, size)) {
                conn_kill(&c);
                st = md_errf(err, errlen, MD_ERR_CANCELLED, "cancelled");
                goto out;
            }
            continue;
        }
        if (h.type != MD_WIRE_RSP_PROBE || want != sizeof u.probe) {
            conn_kill(&c);
            st = md_errf(err, errlen, MD_ERR_MEDIA, "decoder process sent a malformed reply; killed");
            goto out;
        }
        u.probe.err[sizeof u.probe.err - 1] = '\0';
        u.probe.info.codec[sizeof u.probe.info.codec - 1] = '\0';
        u.probe.info.format[sizeof u.probe.info.format - 1] = '\0';
        st = job_status(&c, (md_status)h.status, u.probe.err, err, errlen);
        if (st == MD_OK)
            *info = u.probe.info;
        break;
    }
    warn_layers(&c);
    conn_reap(&c, REAP_WAIT_S);
out:
    conn_close(&c);
    close_fd(&fd);
    if (st != MD_OK && err && errlen && !err[0])
        md_errf(err, errlen, st, "%s", md_status_str(st));
    return st;
}

/* ---- decoder --------------------------------------------------------------------------------- */

struct md_video_iso {
    conn c;
    md_video_params p; /* the caller's, interrupt included */
    md_video_info info;
    long long expected;
    int keyframe_mode;
    long long seq;   /* the next batch to ask for */
    long long taken; /* frames handed out */
    int done;        /* the end was delivered */
    md_status failed;
    char err[MD_WIRE_ERRLEN];
    md_video_decode_stats stats;
    md_video_frame *frames; /* p.batch entries: the held batch's, copied out of the reply */
    size_t buf_bytes;
};

void md_video_iso_close(md_video_iso *d)
{
    if (!d)
        return;
    conn_close(&d->c);
    free(d->frames);
    free(d);
}

md_status md_video_iso_decoder_open(const md_video_sandbox *sb, const char *path, const md_video_params *params,
                                    const md_video_info *probed, md_video_iso **out, char *err, size_t errlen)
{
    md_status st = MD_OK;
    md_video_iso *d = NULL;
    int fd = -1, by_fd = 0;
    clear_err(err, errlen);
    if (out)
        *out = NULL;
    if (!path || !out)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: path and out are required", __func__);
    md_video_params p = params ? *params : md_video_default_params();
    /* The shared buffers are sized from these before the worker (which checks the rest) runs. */
    if (p.size < 1 || p.size > MD_VIDEO_MAX_SIZE)
        return md_errf(err, errlen, MD_ERR_INVALID, "size must be in [1, %d], not %d", MD_VIDEO_MAX_SIZE, p.size);
    if (p.batch < 1 || p.batch > 1024)
        return md_errf(err, errlen, MD_ERR_INVALID, "batch must be in [1, 1024], not %d", p.batch);
    if (!(d = calloc(1, sizeof *d)) || !(d->frames = calloc((size_t)p.batch, sizeof *d->frames))) {
        if (d)
            free(d);
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    }
    conn_init(&d->c, sb);
    d->p = p;
    if ((st = open_file(path, &fd, NULL, &by_fd, err, errlen)) != MD_OK)
        goto out;
    size_t page = 4096;
    d->buf_bytes = ((size_t)p.batch * 3 * (size_t)p.size * (size_t)p.size * sizeof(float) + page - 1) / page * page;
    md_wire_start job;
    memset(&job, 0, sizeof job);
    job.job = MD_WIRE_JOB_DECODE;
    set_path(&job, path, by_fd);
    job.params = p;
    job.params.interrupt = NULL;
    job.params.interrupt_ctx = NULL;
    job.buf_bytes = d->buf_bytes;
    if (probed) {
        job.has_probed = 1;
        job.probed = *probed;
    }
    if ((st = conn_spawn(&d->c, fd, &job, MD_WIRE_HEAD_BYTES + 2 * d->buf_bytes, err, errlen)) != MD_OK)
        goto out;
    close_fd(&fd);
    wait_ctl w = {p.interrupt, p.interrupt_ctx};
    md_wire_hdr h;
    md_wire_open o;
    if ((st = conn_recv(&d->c, &w, &h, &o, sizeof o, NULL, 0, NULL, err, errlen)) != MD_OK)
        goto out;
    if (h.type != MD_WIRE_RSP_OPEN) {
        conn_kill(&d->c);
        st = md_errf(err, errlen, MD_ERR_MEDIA, "decoder process sent a malformed reply; killed");
        goto out;
    }
    o.err[sizeof o.err - 1] = '\0';
    o.info.codec[sizeof o.info.codec - 1] = '\0';
    o.info.format[sizeof o.info.format - 1] = '\0';
    if ((st = job_status(&d->c, (md_status)h.status, o.err, err, errlen)) != MD_OK)
        goto out;
    warn_layers(&d->c);
    d->info = o.info;
    d->expected = o.expected;
    d->keyframe_mode = o.keyframe_mode;
    *out = d;
    d = NULL;
out:
    close_fd(&fd);
    md_video_iso_close(d);
    if (st != MD_OK && err && errlen && !err[0])
        md_errf(err, errlen, st, "%s", md_status_str(st));
    return st;
}

static md_status iso_fail(md_video_iso *d, md_status st)
{
    d->failed = st;
    conn_kill(&d->c);
    return st;
}

md_status md_video_iso_next(md_video_iso *d, md_video_batch *b)
{
    memset(b, 0, sizeof *b);
    if (!d)
        return MD_ERR_INVALID;
    b->size = d->p.size;
    if (d->failed != MD_OK)
        return d->failed;
    if (d->done) {
        b->first_index = d->taken;
        return MD_OK;
    }
    if (d->p.interrupt && d->p.interrupt(d->p.interrupt_ctx)) {
        md_errf(d->err, sizeof d->err, MD_ERR_CANCELLED, "cancelled");
        return iso_fail(d, MD_ERR_CANCELLED);
    }
    md_wire_next nx = {d->seq};
    md_wire_hdr h;
    md_wire_batch r;
    size_t tail = 0;
    wait_ctl w = {d->p.interrupt, d->p.interrupt_ctx};
    md_status st;
    conn_send(&d->c, MD_WIRE_REQ_NEXT, &nx, sizeof nx); /* if it is dead, conn_recv says why */
    st = conn_recv(&d->c, &w, &h, &r, sizeof r, d->frames, sizeof *d->frames * (size_t)d->p.batch, &tail, d->err,
                   sizeof d->err);
    if (st != MD_OK)
        return iso_fail(d, st);
    r.err[sizeof r.err - 1] = '\0';
    if (h.type != MD_WIRE_RSP_BATCH || r.seq != d->seq || r.n < 0 || r.n > d->p.batch || r.size != d->p.size ||
        tail != sizeof *d->frames * (size_t)r.n || (h.status == MD_OK && r.first_index < 0)) {
        md_errf(d->err, sizeof d->err, MD_ERR_MEDIA, "decoder process sent a malformed reply; killed");
        return iso_fail(d, MD_ERR_MEDIA);
    }
    d->stats = r.stats;
    if ((st = job_status(&d->c, (md_status)h.status, r.err, d->err, sizeof d->err)) != MD_OK) {
        d->failed = st;
        conn_reap(&d->c, REAP_WAIT_S); /* it exits after an error */
        return st;
    }
    d->seq++;
    d->taken += r.n;
    b->n = r.n;
    b->first_index = r.first_index;
    if (r.n == 0) {
        d->done = 1;
        conn_reap(&d->c, REAP_WAIT_S); /* it exits after the end */
        return MD_OK;
    }
    b->pixels = (const float *)(const void *)(d->c.shm + MD_WIRE_HEAD_BYTES + (size_t)(r.seq % 2) * d->buf_bytes);
    b->frames = d->frames;
    return MD_OK;
}

const md_video_info *md_video_iso_info(const md_video_iso *d)
{
    return &d->info;
}

long long md_video_iso_expected(const md_video_iso *d)
{
    return d->expected;
}

int md_video_iso_keyframe_mode(const md_video_iso *d)
{
    return d->keyframe_mode;
}

void md_video_iso_stats(const md_video_iso *d, md_video_decode_stats *stats)
{
    *stats = d->stats;
}

const char *md_video_iso_error(const md_video_iso *d)
{
    return d->err;
}

int md_video_iso_pid(const md_video_iso *d)
{
    return d && d->c.pid > 0 ? (int)d->c.pid : -1;
}

unsigned md_video_iso_sandbox(const md_video_iso *d)
{
    return d ? d->c.sandbox : 0;
}

/* ---- pictures -------------------------------------------------------------------------------- */

md_status md_video_iso_load_image(const md_video_sandbox *sb, const char *path, int size, const float mean[3],
                                  const float std[3], float *out_chw, char *err, size_t errlen)
{
    return md_video_iso_load_image_ex(sb, path, NULL, size, mean, std, out_chw, err, errlen);
}

md_status md_video_iso_load_image_ex(const md_video_sandbox *sb, const char *path, const md_video_open_opts *opts,
                                     int size, const float mean[3], const float std[3], float *out_chw, char *err,
                                     size_t errlen)
{
    md_status st = MD_OK;
    conn c;
    conn_init(&c, sb);
    int fd = -1, by_fd = 0;
    clear_err(err, errlen);
    if (!path || !out_chw)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: path and out_chw are required", __func__);
    if (size < 1 || size > MD_VIDEO_MAX_SIZE)
        return md_errf(err, errlen, MD_ERR_INVALID, "size must be in [1, %d], not %d", MD_VIDEO_MAX_SIZE, size);
    for (int i = 0; std && i < 3; i++)
        if (!(std[i] > 0))
            return md_errf(err, errlen, MD_ERR_INVALID, "std must be > 0");
    if ((st = open_file(path, &fd, NULL, &by_fd, err, errlen)) != MD_OK)
        goto out;
    size_t bytes = (size_t)3 * (size_t)size * (size_t)size * sizeof(float);
    md_wire_start job;
    memset(&job, 0, sizeof job);
    job.job = MD_WIRE_JOB_IMAGE;
    set_path(&job, path, by_fd);
    if (opts) {
        job.has_opts = 1;
        job.opts = *opts;
    }
    job.image_size = size;
    job.has_mean = mean != NULL;
    job.has_std = std != NULL;
    if (mean)
        memcpy(job.mean, mean, sizeof job.mean);
    if (std)
        memcpy(job.std, std, sizeof job.std);
    job.buf_bytes = (bytes + 4095) / 4096 * 4096;
    if ((st = conn_spawn(&c, fd, &job, MD_WIRE_HEAD_BYTES + job.buf_bytes, err, errlen)) != MD_OK)
        goto out;
    close_fd(&fd);
    md_wire_hdr h;
    md_wire_image r;
    if ((st = conn_recv(&c, NULL, &h, &r, sizeof r, NULL, 0, NULL, err, errlen)) != MD_OK)
        goto out;
    if (h.type != MD_WIRE_RSP_IMAGE) {
        conn_kill(&c);
        st = md_errf(err, errlen, MD_ERR_MEDIA, "decoder process sent a malformed reply; killed");
        goto out;
    }
    r.err[sizeof r.err - 1] = '\0';
    if ((st = job_status(&c, (md_status)h.status, r.err, err, errlen)) == MD_OK)
        memcpy(out_chw, c.shm + MD_WIRE_HEAD_BYTES, bytes);
    warn_layers(&c);
    conn_reap(&c, REAP_WAIT_S);
out:
    conn_close(&c);
    close_fd(&fd);
    if (st != MD_OK && err && errlen && !err[0])
        md_errf(err, errlen, st, "%s", md_status_str(st));
    return st;
}
