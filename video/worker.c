/* worker.c - the child side of decode isolation (isolate.h): md_video_worker_main() sandboxes the
 * process, then runs one probe, one decoder or one picture query with the in-process code of
 * probe.c / decode.c on the file it was handed, and answers over a pipe.
 *
 * Descriptors on entry (isolate.c sets them up with posix_spawn; everything else is closed here):
 *   0, 1 /dev/null   2 the parent's stderr (log lines)
 *   3 the file, read-only. Under Landlock the worker opens it again by the caller's own path
 *     (so FFmpeg sees the same name and picks formats by extension as in-process); the Landlock
 *     rule is on this descriptor's file, so that path reaches nothing else. Without Landlock it
 *     reads MD_WIRE_FILE_PATH ("/proc/self/fd/3"), which reopens this very file.
 *   4 requests from the parent      5 replies to the parent
 *   6 the shared block (memfd, sealed against resizing): a header page (md_wire_shm_head: the
 *     watchdog's tick counter, crash notes), then two buffers of one batch (or one picture) each
 *
 * Protocol (message layouts in isolate.h, MD_VIDEO_ISOLATE_WIRE; every message a fixed header and
 * a payload of at most MD_WIRE_MAX_PAYLOAD bytes):
 *   parent: START(job)             worker: sandbox -> HELLO(pid, layers in place)
 *   probe:  PROGRESS* (when asked)  PROBE(status, info, message)                    -> exit 0
 *   image:  IMAGE(status, message), the tensor in buffer 0                            -> exit 0
 *   decode: OPEN(status, info, expected, keyframe mode, message); then for k = 0, 1, ...:
 *           parent NEXT(k) -> worker BATCH(k: status, n, frames, stats, message), pixels in
 *           buffer k % 2. Sending NEXT(k) releases buffer (k - 1) % 2, so right after answering
 *           NEXT(k) the worker prepares batch k + 1 in it: the copy into shared memory and the
 *           decoding overlap with the caller's work. After the end (n = 0) or an error -> exit 0.
 *           EOF on the request pipe at any point -> exit 0.
 *   A setup or protocol failure sends FATAL(message) when it can and exits with status 3.
 *
 * The sandbox, applied after START is read (the parent is trusted) and before the file is touched:
 * rlimits (core 0, 32 descriptors, CPU, address space), parent-death SIGKILL, no-new-privs,
 * Landlock (open nothing but fd 3's file, read-only; net and scope rules where the kernel has
 * them), seccomp (a deny list with argument checks, below). Each layer that the kernel lacks is
 * left out and reported in HELLO; the parent decides what to say.
 */
#define _GNU_SOURCE
#define MD_VIDEO_ISOLATE_WIRE
#include "isolate.h"

#include "../base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define WORKER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WORKER_ASAN 1
#endif
#endif
#ifndef WORKER_ASAN
#define WORKER_ASAN 0
#endif

#define EXIT_FATAL 3
#define NOFILE_LIMIT 32

typedef struct worker {
    md_wire_start job;
    unsigned char *shm; /* MAP_FAILED-free: NULL when not mapped */
    size_t shm_bytes;
    md_wire_shm_head *head;
    unsigned sandbox;
    int landlock_abi;
    const char *path; /* what probe.c / decode.c are given */
} worker;

static md_wire_shm_head *g_head; /* for the crash handler */

/* ---- pipes ---------------------------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 1 when N bytes were read, 0 on EOF before the first byte, -1 on error or a short read. */
static int read_all(int fd, void *buf, size_t n)
{
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return got == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

/* One reply: header and payload in one write, so the parent never sees half a header for long. */
static int send_msg(int type, md_status st, const void *payload, size_t len, const void *tail, size_t tail_len)
{
    unsigned char buf[sizeof(md_wire_hdr) + MD_WIRE_MAX_PAYLOAD];
    if (len + tail_len > MD_WIRE_MAX_PAYLOAD)
        return -1;
    md_wire_hdr h = {.magic = MD_WIRE_MAGIC,
                     .version = MD_WIRE_VERSION,
                     .type = (uint16_t)type,
                     .len = (uint32_t)(len + tail_len),
                     .status = (int32_t)st};
    memcpy(buf, &h, sizeof h);
    if (len)
        memcpy(buf + sizeof h, payload, len);
    if (tail_len)
        memcpy(buf + sizeof h + len, tail, tail_len);
    return write_all(MD_WIRE_FD_RSP, buf, sizeof h + len + tail_len);
}

static int fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fatal(const char *fmt, ...)
{
    md_wire_text t;
    memset(&t, 0, sizeof t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t.err, sizeof t.err, fmt, ap);
    va_end(ap);
    md_error("video worker: %s", t.err);
    send_msg(MD_WIRE_RSP_FATAL, MD_ERR_INTERNAL, &t, sizeof t, NULL, 0);
    return EXIT_FATAL;
}

static void copy_err(char dst[MD_WIRE_ERRLEN], const char *src)
{
    snprintf(dst, MD_WIRE_ERRLEN, "%s", src ? src : "");
}

/* ---- progress ticks and crash notes ---------------------------------------------------------- */

static void tick(worker *w)
{
    if (w->head)
        atomic_fetch_add_explicit(&w->head->ticks, 1, memory_order_relaxed);
}

/* The decoder's interrupt callback (its decoding thread, and open's thread): a tick, never a stop;
 * the parent stops a worker by killing it. */
static int tick_interrupt(void *ctx)
{
    tick(ctx);
    return 0;
}

/* Notes the signal, how it came (si_code > 0: the kernel, a fault; <= 0: sent by someone) and
 * errno (ENOMEM right after an allocation failed under RLIMIT_AS), then dies of the same signal. */
static void crash_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int e = errno;
    if (g_head) {
        g_head->crash_errno = e;
        g_head->crash_code = si ? si->si_code : 0;
        g_head->crash_signal = sig;
    }
    signal(sig, SIG_DFL);
    raise(sig); /* delivered once this handler returns */
}

static void install_crash_handler(void)
{
    if (WORKER_ASAN)
        return; /* AddressSanitizer's own handler reports better */
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = crash_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
}

/* ---- sandbox --------------------------------------------------------------------------------- */

static int close_other_fds(void)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)MD_WIRE_FD_END, ~0U, 0) == 0)
        return 0;
#endif
    struct rlimit rl;
    long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 65536;
    if (max > 1 << 20)
        max = 1 << 20;
    for (long fd = MD_WIRE_FD_END; fd < max; fd++)
        close((int)fd);
    return 0;
}

static int set_limit(int res, rlim_t soft, rlim_t hard)
{
    struct rlimit rl = {soft, hard};
    return setrlimit(res, &rl);
}

/* Landlock rights by ABI version, defined here for headers older than the kernel. */
#define LL_FS_V1 ((1ULL << 13) - 1)
#define LL_FS_REFER (1ULL << 13)
#define LL_FS_TRUNCATE (1ULL << 14)
#define LL_FS_IOCTL_DEV (1ULL << 15)
#define LL_FS_READ_FILE (1ULL << 2)
#define LL_NET_BIND_TCP (1ULL << 0)
#define LL_NET_CONNECT_TCP (1ULL << 1)
#define LL_SCOPE_ABSTRACT_UNIX (1ULL << 0)
#define LL_SCOPE_SIGNAL (1ULL << 1)

struct ll_ruleset_attr {
    uint64_t handled_access_fs, handled_access_net, scoped;
};

/* Handles every filesystem right the kernel knows and grants only reading the file on fd FD: any
 * other open by path (playlists' segments, "file:" references, /proc, /etc) is EACCES. With ABI 4+
 * TCP bind/connect are refused too, with 6+ signals and abstract sockets outside the sandbox. */
static int apply_landlock(int fd, int *abi_out)
{
#if defined(SYS_landlock_create_ruleset) && defined(SYS_landlock_add_rule) && defined(SYS_landlock_restrict_self)
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    *abi_out = abi > 0 ? (int)abi : 0;
    if (abi < 1)
        return -1;
    struct ll_ruleset_attr ra = {.handled_access_fs = LL_FS_V1};
    if (abi >= 2)
        ra.handled_access_fs |= LL_FS_REFER;
    if (abi >= 3)
        ra.handled_access_fs |= LL_FS_TRUNCATE;
    if (abi >= 5)
        ra.handled_access_fs |= LL_FS_IOCTL_DEV;
    if (abi >= 4)
        ra.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
    if (abi >= 6)
        ra.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
    size_t size = abi >= 6 ? sizeof ra : abi >= 4 ? 2 * sizeof(uint64_t) : sizeof(uint64_t);
    int rs = (int)syscall(SYS_landlock_create_ruleset, &ra, size, 0);
    if (rs < 0)
        return -1;
    struct landlock_path_beneath_attr pb = {.allowed_access = LL_FS_READ_FILE, .parent_fd = fd};
    int rc = -1;
    if (fd < 0 || syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) == 0)
        rc = (int)syscall(SYS_landlock_restrict_self, rs, 0);
    close(rs);
    return rc == 0 ? 0 : -1;
#else
    (void)fd;
    *abi_out = 0;
    return -1;
#endif
}

/* ---- seccomp: a deny list, so that whatever FFmpeg, glibc and the sanitizers call keeps working,
 * with argument checks where a call has a harmless use: clone only for threads, signals only to
 * this process, open only for reading. The kernel caches "always allowed" per syscall, so the
 * filter costs nothing on the hot calls (read, futex, mmap). */
#if defined(__x86_64__)
#define SC_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SC_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef SC_ARCH
#define SC_MAX 512
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + (i) * sizeof(uint64_t))
#define ARG_HI(i) (ARG_LO(i) + sizeof(uint32_t)) /* little-endian: x86-64 and arm64 */
#define DENY_ERRNO(e) (SECCOMP_RET_ERRNO | ((e)&SECCOMP_RET_DATA))

typedef struct sc_prog {
    struct sock_filter f[SC_MAX];
    int n, overflow;
} sc_prog;

static void sc_add(sc_prog *p, struct sock_filter ins)
{
    if (p->n < SC_MAX)
        p->f[p->n++] = ins;
    else
        p->overflow = 1;
}

/* The accumulator holds the syscall number between blocks: a block either returns or leaves it. */
static void sc_deny(sc_prog *p, int nr, int err)
{
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 1));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, DENY_ERRNO(err)));
}

/* NR is allowed only when argument ARG is this process's pid (kill, tgkill, sigqueue). */
static void sc_self_only(sc_prog *p, int nr, int arg, uint32_t pid)
{
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 6));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(arg)));
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, pid, 0, 2));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_HI(arg)));
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, DENY_ERRNO(EPERM)));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
}

/* NR is denied when argument ARG has any bit of MASK (open flags for writing, clone without
 * CLONE_THREAD is handled by sc_need_bits). */
static void sc_deny_bits(sc_prog *p, int nr, int arg, uint32_t mask)
{
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 4));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(arg)));
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, mask, 0, 1));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, DENY_ERRNO(EPERM)));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
}

/* NR is allowed only when argument ARG has all of BITS (clone: CLONE_THREAD). */
static void sc_need_bits(sc_prog *p, int nr, int arg, uint32_t bits)
{
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 5));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(arg)));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, bits));
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, bits, 1, 0));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, DENY_ERRNO(EPERM)));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
}

static int apply_seccomp(void)
{
    static sc_prog prog; /* 4 KiB: kept off the stack */
    sc_prog *p = &prog;
    p->n = p->overflow = 0;
    const uint32_t pid = (uint32_t)getpid();
    /* Another architecture's calling convention (x32, i386 via int 0x80) could bypass the numbers
     * below: kill the process. */
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SC_ARCH, 1, 0));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
    sc_add(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u /* __X32_SYSCALL_BIT */, 0, 1));
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
#endif
    /* Threads yes, processes no. clone3's flags live in memory the filter cannot read: ENOSYS makes
     * glibc fall back to clone. */
    sc_need_bits(p, SYS_clone, 0, CLONE_THREAD);
#ifdef SYS_clone3
    sc_deny(p, SYS_clone3, ENOSYS);
#endif
    /* Reading only: no file can be created, truncated or written by path. */
    const uint32_t wr = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_TMPFILE;
    sc_deny_bits(p, SYS_openat, 2, wr);
#ifdef SYS_open
    sc_deny_bits(p, SYS_open, 1, wr);
#endif
#ifdef SYS_openat2
    sc_deny(p, SYS_openat2, ENOSYS); /* flags in memory; glibc never needs it */
#endif
    /* Signals to this process only (raise, abort, FFmpeg's threads): never to the parent. */
    sc_self_only(p, SYS_kill, 0, pid);
    sc_self_only(p, SYS_tgkill, 0, pid);
    sc_self_only(p, SYS_rt_sigqueueinfo, 0, pid);
    sc_self_only(p, SYS_rt_tgsigqueueinfo, 0, pid);
    static const int deny[] = {
        SYS_socket,
        SYS_socketpair,
        SYS_connect,
        SYS_bind,
        SYS_listen,
        SYS_accept,
        SYS_accept4,
        SYS_sendto,
        SYS_recvfrom,
        SYS_sendmsg,
        SYS_recvmsg,
        SYS_sendmmsg,
        SYS_recvmmsg,
        SYS_shutdown,
        SYS_execve,
        SYS_execveat,
        SYS_tkill,
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_kcmp,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_chroot,
        SYS_unshare,
        SYS_setns,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_userfaultfd,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_kexec_load,
        SYS_reboot,
        SYS_swapon,
        SYS_swapoff,
        SYS_acct,
        SYS_settimeofday,
        SYS_clock_settime,
        SYS_clock_adjtime,
        SYS_adjtimex,
        SYS_sethostname,
        SYS_setdomainname,
        SYS_quotactl,
        SYS_syslog,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_open_by_handle_at,
        SYS_name_to_handle_at,
        SYS_mknodat,
        SYS_linkat,
        SYS_symlinkat,
        SYS_unlinkat,
        SYS_renameat,
        SYS_renameat2,
        SYS_mkdirat,
        SYS_fchmodat,
        SYS_fchownat,
        SYS_fchmod,
        SYS_fchown,
        SYS_ftruncate,
        SYS_truncate,
        SYS_move_pages,
        SYS_migrate_pages,
        SYS_personality,
        SYS_vhangup,
        SYS_pidfd_open,
        SYS_pidfd_getfd,
        SYS_pidfd_send_signal,
        SYS_process_madvise,
        SYS_fanotify_init,
        SYS_inotify_init1,
        SYS_mbind,
        SYS_set_mempolicy,
#ifdef SYS_fork
        SYS_fork,
        SYS_vfork,
#endif
#ifdef SYS_creat
        SYS_creat,
        SYS_mknod,
        SYS_link,
        SYS_symlink,
        SYS_unlink,
        SYS_rename,
        SYS_mkdir,
        SYS_rmdir,
        SYS_chmod,
        SYS_chown,
        SYS_lchown,
        SYS_iopl,
        SYS_ioperm,
        SYS_uselib,
        SYS_inotify_init,
#endif
#ifdef SYS_open_tree
        SYS_open_tree,
        SYS_move_mount,
        SYS_fsopen,
        SYS_fsconfig,
        SYS_fsmount,
        SYS_fspick,
#endif
#ifdef SYS_mount_setattr
        SYS_mount_setattr,
#endif
    };
    for (size_t i = 0; i < sizeof deny / sizeof deny[0]; i++)
        sc_deny(p, deny[i], EPERM);
    sc_add(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    if (p->overflow)
        return -1;
    struct sock_fprog fp = {.len = (unsigned short)p->n, .filter = p->f};
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp, 0, 0) == 0 ? 0 : -1;
}
#else
static int apply_seccomp(void)
{
    return -1;
}
#endif

/* The whole sandbox, in the order the header lists. Fatal only where a limit asked for could not be
 * set; a layer the kernel lacks is left out and reported. */
static int apply_sandbox(worker *w)
{
    const md_wire_start *j = &w->job;
    if (set_limit(RLIMIT_CORE, 0, 0) != 0 || set_limit(RLIMIT_NOFILE, NOFILE_LIMIT, NOFILE_LIMIT) != 0)
        return fatal("cannot set RLIMIT_CORE/RLIMIT_NOFILE: %s", strerror(errno));
    if (j->cpu_limit_s > 0 && set_limit(RLIMIT_CPU, (rlim_t)j->cpu_limit_s, (rlim_t)j->cpu_limit_s + 2) != 0)
        return fatal("cannot set RLIMIT_CPU: %s", strerror(errno));
    w->sandbox |= MD_VIDEO_SANDBOX_RLIMITS | MD_VIDEO_SANDBOX_FDS_CLOSED;
    if (j->mem_limit > 0 && !WORKER_ASAN) {
        if (set_limit(RLIMIT_AS, (rlim_t)j->mem_limit, (rlim_t)j->mem_limit) != 0)
            return fatal("cannot set RLIMIT_AS: %s", strerror(errno));
        w->sandbox |= MD_VIDEO_SANDBOX_MEM_LIMIT;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0)
        w->sandbox |= MD_VIDEO_SANDBOX_NO_NEW_PRIVS;
    else
        return 0; /* neither Landlock nor seccomp can be applied without it */
    if (apply_landlock(MD_WIRE_FD_FILE, &w->landlock_abi) == 0)
        w->sandbox |= MD_VIDEO_SANDBOX_LANDLOCK;
    if (apply_seccomp() == 0)
        w->sandbox |= MD_VIDEO_SANDBOX_SECCOMP;
    return 0;
}

/* ---- jobs ------------------------------------------------------------------------------------ */

static float *shm_buf(const worker *w, int i)
{
    return (float *)(void *)(w->shm + MD_WIRE_HEAD_BYTES + (size_t)i * w->job.buf_bytes);
}

static int probe_progress(void *ctx, long long done, long long total)
{
    worker *w = ctx;
    tick(w);
    if (!w->job.want_progress)
        return 0;
    md_wire_progress pr = {done, total};
    return send_msg(MD_WIRE_RSP_PROGRESS, MD_OK, &pr, sizeof pr, NULL, 0) == 0 ? 0 : 1;
}

static int run_probe(worker *w)
{
    md_wire_probe r;
    memset(&r, 0, sizeof r);
    md_status st = md_video_probe_ex(w->path, w->job.has_opts ? &w->job.opts : NULL, &r.info, probe_progress, w, r.err,
                                     sizeof r.err);
    send_msg(MD_WIRE_RSP_PROBE, st, &r, sizeof r, NULL, 0);
    return 0;
}

static int run_image(worker *w)
{
    md_wire_image r;
    memset(&r, 0, sizeof r);
    const md_wire_start *j = &w->job;
    md_status st;
    if ((size_t)3 * (size_t)j->image_size * (size_t)j->image_size * sizeof(float) > j->buf_bytes)
        st = md_errf(r.err, sizeof r.err, MD_ERR_INTERNAL, "shared buffer too small for size %d", j->image_size);
    else
        st = md_video_load_image_ex(w->path, j->has_opts ? &j->opts : NULL, j->image_size, j->has_mean ? j->mean : NULL,
                                    j->has_std ? j->std : NULL, shm_buf(w, 0), r.err, sizeof r.err);
    send_msg(MD_WIRE_RSP_IMAGE, st, &r, sizeof r, NULL, 0);
    return 0;
}

/* Batch SEQ from the decoder into shared buffer SEQ % 2 and *R / FRAMES; 1 when it is the last
 * reply (the end or an error). */
static int produce(worker *w, md_video_decoder *d, long long seq, md_wire_batch *r, md_video_frame *frames,
                   md_status *st)
{
    const md_video_params *p = &w->job.params;
    md_video_batch b;
    memset(r, 0, sizeof *r);
    r->seq = seq;
    *st = md_video_decoder_next(d, &b);
    size_t one = (size_t)3 * (size_t)p->size * (size_t)p->size;
    if (*st == MD_OK && (b.n < 0 || b.n > p->batch || b.size != p->size)) {
        *st = MD_ERR_INTERNAL;
        copy_err(r->err, "decoder returned a batch of an unexpected shape");
    } else if (*st == MD_OK && b.n > 0) {
        memcpy(shm_buf(w, (int)(seq % 2)), b.pixels, sizeof(float) * one * (size_t)b.n);
        memcpy(frames, b.frames, sizeof *frames * (size_t)b.n);
        r->n = b.n;
    } else if (*st != MD_OK) {
        copy_err(r->err, md_video_decoder_error(d));
    }
    r->size = p->size;
    r->first_index = b.first_index;
    md_video_decoder_stats(d, &r->stats);
    tick(w);
    return *st != MD_OK || r->n == 0;
}

static int run_decode(worker *w)
{
    md_wire_open o;
    memset(&o, 0, sizeof o);
    md_video_params p = w->job.params;
    p.interrupt = tick_interrupt;
    p.interrupt_ctx = w;
    md_video_decoder *d = NULL;
    md_video_frame *frames = NULL;
    int rc = 0;
    md_status st =
        md_video_decoder_open(w->path, &p, w->job.has_probed ? &w->job.probed : NULL, &d, o.err, sizeof o.err);
    if (st == MD_OK) {
        o.info = *md_video_decoder_info(d);
        o.expected = md_video_decoder_expected(d);
        o.keyframe_mode = md_video_decoder_keyframe_mode(d);
        if ((size_t)p.batch * sizeof *frames + sizeof(md_wire_batch) > MD_WIRE_MAX_PAYLOAD ||
            (size_t)p.batch * 3 * (size_t)p.size * (size_t)p.size * sizeof(float) > w->job.buf_bytes)
            st = md_errf(o.err, sizeof o.err, MD_ERR_INTERNAL, "shared buffers too small for the batch");
        else if (!(frames = calloc((size_t)p.batch, sizeof *frames)))
            st = md_errf(o.err, sizeof o.err, MD_ERR_NOMEM, "out of memory");
    }
    if (send_msg(MD_WIRE_RSP_OPEN, st, &o, sizeof o, NULL, 0) != 0 || st != MD_OK)
        goto out;
    md_wire_batch r;
    md_status bst = MD_OK;
    int ready = 0, last = 0;
    for (long long seq = 0;;) {
        md_wire_hdr h;
        md_wire_next nx;
        int got = read_all(MD_WIRE_FD_REQ, &h, sizeof h);
        if (got == 0)
            break; /* the parent closed: done */
        if (got < 0 || h.magic != MD_WIRE_MAGIC || h.type != MD_WIRE_REQ_NEXT || h.len != sizeof nx ||
            read_all(MD_WIRE_FD_REQ, &nx, sizeof nx) != 1 || nx.seq != seq) {
            rc = fatal("bad request (type %u, expected NEXT %lld)", (unsigned)h.type, seq);
            break;
        }
        if (!ready)
            last = produce(w, d, seq, &r, frames, &bst);
        if (send_msg(MD_WIRE_RSP_BATCH, bst, &r, sizeof r, frames, sizeof *frames * (size_t)r.n) != 0 || last)
            break;
        seq++;
        /* Buffer seq % 2 was released by this request: prepare the next batch in it now. */
        last = produce(w, d, seq, &r, frames, &bst);
        ready = 1;
    }
out:
    free(frames);
    md_video_decoder_close(d);
    return rc;
}

/* ---- entry ----------------------------------------------------------------------------------- */

static int check_fd(int fd, int want_reg)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return -1;
    return want_reg && !S_ISREG(sb.st_mode) ? -1 : 0;
}

int md_video_worker_main(int argc, char **argv)
{
    if (argc < 2 || !argv || !argv[1] || strcmp(argv[1], MD_VIDEO_WORKER_ARG) != 0)
        return -1;
    worker w;
    memset(&w, 0, sizeof w);
    int rc = 0;
    /* Nothing beyond our own descriptors, whatever the spawner left open. */
    close_other_fds();
    signal(SIGPIPE, SIG_IGN); /* a parent gone away is EPIPE, then exit */
    prctl(PR_SET_NAME, "md-video-worker", 0, 0, 0);
    if (check_fd(MD_WIRE_FD_REQ, 0) != 0 || check_fd(MD_WIRE_FD_RSP, 0) != 0) {
        fprintf(stderr, "%s %s: run by momentd only (no request/reply pipes)\n", argv[0], argv[1]);
        return EXIT_FATAL;
    }
    md_wire_hdr h;
    if (read_all(MD_WIRE_FD_REQ, &h, sizeof h) != 1 || h.magic != MD_WIRE_MAGIC || h.version != MD_WIRE_VERSION ||
        h.type != MD_WIRE_REQ_START || h.len != sizeof w.job || read_all(MD_WIRE_FD_REQ, &w.job, sizeof w.job) != 1)
        return fatal("protocol mismatch: no START of this build (is worker_exe the same build?)");
    const md_wire_start *j = &w.job;
    if (j->sizeof_start != sizeof(md_wire_start) || j->sizeof_info != sizeof(md_video_info) ||
        j->sizeof_params != sizeof(md_video_params) || j->sizeof_frame != sizeof(md_video_frame) ||
        j->sizeof_stats != sizeof(md_video_decode_stats))
        return fatal("protocol mismatch: struct sizes differ (is worker_exe the same build?)");
    /* Die with the parent; if it is gone already, we were reparented: stop. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != (pid_t)j->parent_pid)
        return EXIT_FATAL;
    md_log_set_level((md_log_level)j->log_level);
    md_video_global_init();
    if (check_fd(MD_WIRE_FD_FILE, 1) != 0 || check_fd(MD_WIRE_FD_SHM, 0) != 0)
        return fatal("file or shared memory descriptor missing");
    if ((rc = apply_sandbox(&w)) != 0)
        return rc;
    w.job.path[sizeof w.job.path - 1] = '\0';
    w.path = (w.sandbox & MD_VIDEO_SANDBOX_LANDLOCK) && w.job.path[0] ? w.job.path : MD_WIRE_FILE_PATH;
    /* Mapped under the address-space limit, so buffers beyond it fail here, cleanly. */
    if (j->shm_bytes < MD_WIRE_HEAD_BYTES || j->shm_bytes > SIZE_MAX)
        return fatal("bad shared block size");
    void *m = mmap(NULL, (size_t)j->shm_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, MD_WIRE_FD_SHM, 0);
    if (m == MAP_FAILED) {
        /* The job's own reply type, so the parent reports it as that job's memory failure. */
        char msg[MD_WIRE_ERRLEN];
        snprintf(msg, sizeof msg, "out of memory (%llu bytes of shared buffers)", (unsigned long long)j->shm_bytes);
        md_wire_hello hello = {.pid = getpid(), .sandbox = w.sandbox, .landlock_abi = w.landlock_abi};
        send_msg(MD_WIRE_RSP_HELLO, MD_OK, &hello, sizeof hello, NULL, 0);
        if (j->job == MD_WIRE_JOB_PROBE) {
            md_wire_probe r = {.info = {.duration_ms = -1}};
            copy_err(r.err, msg);
            send_msg(MD_WIRE_RSP_PROBE, MD_ERR_NOMEM, &r, sizeof r, NULL, 0);
        } else if (j->job == MD_WIRE_JOB_IMAGE) {
            md_wire_image r;
            copy_err(r.err, msg);
            send_msg(MD_WIRE_RSP_IMAGE, MD_ERR_NOMEM, &r, sizeof r, NULL, 0);
        } else {
            md_wire_open r;
            memset(&r, 0, sizeof r);
            copy_err(r.err, msg);
            send_msg(MD_WIRE_RSP_OPEN, MD_ERR_NOMEM, &r, sizeof r, NULL, 0);
        }
        return 0;
    }
    close(MD_WIRE_FD_SHM);
    w.shm = m;
    w.shm_bytes = (size_t)j->shm_bytes;
    w.head = g_head = (md_wire_shm_head *)m;
    install_crash_handler();
    md_wire_hello hello = {.pid = getpid(), .sandbox = w.sandbox, .landlock_abi = w.landlock_abi};
    if (send_msg(MD_WIRE_RSP_HELLO, MD_OK, &hello, sizeof hello, NULL, 0) != 0)
        rc = 0; /* the parent is gone */
    else if (j->job == MD_WIRE_JOB_PROBE)
        rc = run_probe(&w);
    else if (j->job == MD_WIRE_JOB_DECODE)
        rc = run_decode(&w);
    else if (j->job == MD_WIRE_JOB_IMAGE)
        rc = run_image(&w);
    else
        rc = fatal("unknown job %d", j->job);
    g_head = NULL;
    munmap(w.shm, w.shm_bytes);
    return rc;
}
