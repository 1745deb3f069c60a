/* sandbox-exec.c - run a command under the seccomp half of deploy/momentd.service's
 * sandbox, without systemd, so the daemon's tests can run inside it
 * (tests/deploy/sandboxed-e2e.sh). Each filter mirrors what systemd installs for:
 *
 *   SystemCallFilter=   allow list read from a file (one syscall name a line; the
 *                       script expands @system-service minus @privileged with
 *                       systemd-analyze syscall-filter), everything else EPERM
 *                       (SystemCallErrorNumber=EPERM)
 *   SystemCallArchitectures=native   (libseccomp's default: only the native ABI)
 *   MemoryDenyWriteExecute=yes       mmap(W|X), mprotect/pkey_mprotect(X), shmat(SHM_EXEC)
 *                                    refused; plus prctl(PR_SET_MDWE) where the kernel has it
 *   RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX   other socket() families EAFNOSUPPORT
 *   RestrictNamespaces=yes           clone/unshare with CLONE_NEW* EPERM, setns EPERM,
 *                                    clone3 ENOSYS (so glibc falls back to clone)
 *   RestrictRealtime=yes             SCHED_FIFO/RR/DEADLINE refused
 *   NoNewPrivileges=yes
 *
 *   cc -O2 -o sandbox-exec tests/deploy/sandbox-exec.c -lseccomp
 *   sandbox-exec ALLOWLIST_FILE PROGRAM [ARGS...]
 *
 * LockPersonality= is left out (nothing in momentd calls personality()). The mount half
 * (ProtectSystem=strict, ProtectHome, PrivateTmp, ProcSubset=pid...) is set up by the
 * script with unshare(1) and mount(8). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#endif
#ifndef PR_MDWE_REFUSE_EXEC_GAIN
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif
#ifndef SCHED_DEADLINE
#define SCHED_DEADLINE 6
#endif

static void die(const char *what, int rc) {
    fprintf(stderr, "sandbox-exec: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
    exit(125);
}

static void load(scmp_filter_ctx ctx, const char *what) {
    int rc = seccomp_load(ctx);
    if (rc < 0) die(what, rc);
    seccomp_release(ctx);
}

static void rule(scmp_filter_ctx ctx, uint32_t action, const char *name, unsigned n, const struct scmp_arg_cmp *a) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return; /* not on this architecture */
    int rc = seccomp_rule_add_array(ctx, action, nr, n, a);
    if (rc < 0) die(name, rc);
}

static void allow_list(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path, errno);
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx) die("seccomp_init", ENOMEM);
    char line[128];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, " \t\r\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        rule(ctx, SCMP_ACT_ALLOW, line, 0, NULL);
        n++;
    }
    fclose(f);
    if (n < 100) die("allow list has fewer than 100 syscalls", EINVAL);
    load(ctx, "SystemCallFilter");
}

static scmp_filter_ctx allow_all(void) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) die("seccomp_init", ENOMEM);
    return ctx;
}

static void memory_deny_write_execute(void) {
    scmp_filter_ctx ctx = allow_all();
    struct scmp_arg_cmp wx = SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC);
    struct scmp_arg_cmp x = SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC);
    struct scmp_arg_cmp shm = SCMP_A2(SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC);
    rule(ctx, SCMP_ACT_ERRNO(EPERM), "mmap", 1, &wx);
    rule(ctx, SCMP_ACT_ERRNO(EPERM), "mprotect", 1, &x);
    rule(ctx, SCMP_ACT_ERRNO(EPERM), "pkey_mprotect", 1, &x);
    rule(ctx, SCMP_ACT_ERRNO(EPERM), "shmat", 1, &shm);
    load(ctx, "MemoryDenyWriteExecute");
    /* systemd >= 254 uses the kernel's own W^X switch (Linux >= 6.3) when it has one. */
    if (prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0L, 0L, 0L) != 0 && errno != EINVAL)
        die("PR_SET_MDWE", errno);
}

static void restrict_address_families(void) {
    scmp_filter_ctx ctx = allow_all();
    for (int d = 0; d < AF_MAX; d++) {
        if (d == AF_UNIX || d == AF_INET || d == AF_INET6) continue;
        struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)d);
        rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), "socket", 1, &c);
    }
    struct scmp_arg_cmp big = SCMP_A0(SCMP_CMP_GE, AF_MAX);
    rule(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), "socket", 1, &big);
    load(ctx, "RestrictAddressFamilies");
}

static void restrict_namespaces(void) {
    static const unsigned long flags[] = {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
                                          CLONE_NEWNET, CLONE_NEWCGROUP,
#ifdef CLONE_NEWTIME
                                          CLONE_NEWTIME
#endif
    };
    scmp_filter_ctx ctx = allow_all();
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        struct scmp_arg_cmp c = SCMP_A0(SCMP_CMP_MASKED_EQ, flags[i], flags[i]);
        rule(ctx, SCMP_ACT_ERRNO(EPERM), "clone", 1, &c); /* x86-64: flags are the first argument */
        rule(ctx, SCMP_ACT_ERRNO(EPERM), "unshare", 1, &c);
    }
    rule(ctx, SCMP_ACT_ERRNO(EPERM), "setns", 0, NULL);
    rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, NULL); /* flags sit behind a pointer */
    load(ctx, "RestrictNamespaces");
}

static void restrict_realtime(void) {
    scmp_filter_ctx ctx = allow_all();
    static const int pol[] = {SCHED_FIFO, SCHED_RR, SCHED_DEADLINE};
    for (size_t i = 0; i < 3; i++) {
        struct scmp_arg_cmp c = SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)pol[i]);
        rule(ctx, SCMP_ACT_ERRNO(EPERM), "sched_setscheduler", 1, &c);
    }
    load(ctx, "RestrictRealtime");
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sandbox-exec ALLOWLIST_FILE PROGRAM [ARGS...]\n");
        return 2;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L) != 0) die("PR_SET_NO_NEW_PRIVS", errno);
    /* The allow list goes last: the other filters' own syscalls are then still allowed. */
    memory_deny_write_execute();
    restrict_address_families();
    restrict_namespaces();
    restrict_realtime();
    allow_list(argv[1]);
    execv(argv[2], argv + 2);
    die(argv[2], errno);
}
