/* test_isolate.c - unit tests of decode isolation (video/isolate.c, video/worker.c).
 *
 * This binary is its own worker: main() calls md_video_worker_main() first, and the sandbox's
 * worker_exe defaults to /proc/self/exe. Fixtures are made with the ffmpeg CLI in a mkdtemp
 * directory (removed at the end); the real clips in ../shared/media ($MD_SHARED_MEDIA) and the
 * forensics-samples-files 1080p phone video are used when present, else those cases are skipped.
 *
 * What is checked:
 *   - the same results as the in-process API, bit for bit: md_video_info (probe and decoder),
 *     every batch (n, first_index, frame times, pixels), expected count, keyframe mode, final
 *     statistics, statuses and messages of bad files; pictures the same;
 *   - a worker killed (SIGKILL, SIGSEGV) mid-decode fails that decoder with the signal named, and
 *     the next decoder works; SIGSTOP trips the watchdog; a small RLIMIT_AS and a small CPU limit
 *     fail with the limit named; the caller's interrupt kills the worker promptly;
 *   - the sandbox as the kernel sees it, while a worker runs: Seccomp 2 and NoNewPrivs 1 in
 *     /proc/PID/status, its rlimits (prlimit), its descriptors (/proc/PID/fd: nothing but
 *     /dev/null, stderr, its pipes and the input file), Landlock reported; and a playlist that
 *     names another file by absolute path cannot make the worker open it;
 *   - no zombies (waitpid(-1, WNOHANG) finds no child at all) and no descriptor leaked here.
 * Under AddressSanitizer RLIMIT_AS cannot be used (ASan reserves terabytes of address space): the
 * memory-limit case is then counted as skipped.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "testutil.h"

#include "../../base/log.h"
#include "../../base/status.h"
#include "../../video/isolate.h"
#include "../../video/video.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

extern char **environ;

static char g_dir[256];
static char g_root[256];
static char g_1080[512]; /* a 1080p H.264 clip, "" when none */
static char g_long[512]; /* ~30 s of 1080p, "" when none */

static const char *fx(const char *name)
{
    static char paths[32][512];
    static int next;
    char *p = paths[next++ % 32];
    snprintf(p, sizeof paths[0], "%s/%s", g_dir, name);
    return p;
}

/* Runs ARGV (ARGV[0] looked up in PATH) with stdout and stderr to /dev/null; 0 when it exits 0. */
static int run(const char *const *argv)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)(uintptr_t)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    int ws;
    if (waitpid(pid, &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        return -1;
    return 0;
}

static int ffmpeg(const char *const *args)
{
    const char *argv[64] = {"ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"};
    int n = 6;
    for (int i = 0; args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return run(argv);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n - 1; /* the DIR's own */
}

/* 1 when this process has no child at all (none running, no zombie). */
static int no_children(void)
{
    int st;
    pid_t r = waitpid(-1, &st, WNOHANG);
    if (r > 0)
        fprintf(stderr, "  a zombie was left: pid %d\n", (int)r);
    return r < 0 && errno == ECHILD;
}

/* ---- fixtures ---- */

#define SRC "testsrc2=size=160x120:rate=10"

static int make_fixtures(void)
{
    const char *h264[] = {"-f",       "lavfi",   "-i", SRC,  "-t",           "3", "-c:v", "libx264",
                          "-pix_fmt", "yuv420p", "-g", "10", fx("h264.mp4"), NULL};
    const char *vp9[] = {"-f",   "lavfi", "-i",        SRC,        "-t",           "2", "-c:v", "libvpx-vp9",
                         "-b:v", "200k",  "-deadline", "realtime", fx("vp9.webm"), NULL};
    const char *mpeg4[] = {"-f", "lavfi", "-i", SRC, "-t", "2", "-c:v", "mpeg4", fx("mpeg4.avi"), NULL};
    const char *audio[] = {"-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", fx("audio.m4a"), NULL};
    const char *png[] = {"-f", "lavfi", "-i", "testsrc2=size=97x61", "-frames:v", "1", fx("still.png"), NULL};
    const char *ts[] = {"-f",      "lavfi",    "-i",      SRC,  "-t",     "2",          "-c:v",
                        "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts", fx("seg.ts"), NULL};
    if (ffmpeg(h264) || ffmpeg(vp9) || ffmpeg(mpeg4) || ffmpeg(audio) || ffmpeg(png) || ffmpeg(ts))
        return -1;
    if (tu_write_file(fx("empty.mp4"), "", 0) || tu_write_file(fx("text.mp4"), "hello, not a video\n", 19))
        return -1;
    size_t n = 0;
    char *b = tu_read_file(fx("h264.mp4"), &n);
    if (!b)
        return -1;
    int rc = tu_write_file(fx("cut.mp4"), b, n / 2) || tu_write_file(fx("head.mp4"), b, 64);
    free(b);
    /* A playlist naming a real segment by absolute path: in-process, FFmpeg follows it (until the
     * open options refuse playlists); the worker has no way to open it. */
    char m3u8[1024];
    snprintf(m3u8, sizeof m3u8,
             "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n%s\n#EXT-X-ENDLIST\n", fx("seg.ts"));
    rc = rc || tu_write_file(fx("list.m3u8"), m3u8, strlen(m3u8));
    if (symlink(fx("h264.mp4"), fx("link.mp4")) != 0)
        rc = -1;
    if (mkdir(fx("dir.mp4"), 0700) != 0)
        rc = -1;
    return rc;
}

/* The 1080p clips: the forensics phone video (else a synthetic one), and ~30 s of it. */
static void make_1080p(void)
{
    const char *dog = "/usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4";
    if (access(dog, R_OK) == 0) {
        snprintf(g_1080, sizeof g_1080, "%s", dog);
        const char *loop[] = {"-stream_loop", "18", "-i", dog, "-an", "-c", "copy", fx("long1080.mp4"), NULL};
        if (ffmpeg(loop) == 0)
            snprintf(g_long, sizeof g_long, "%s", fx("long1080.mp4"));
        return;
    }
    const char *syn[] = {"-f",
                         "lavfi",
                         "-i",
                         "testsrc2=size=1920x1080:rate=30",
                         "-t",
                         "30",
                         "-c:v",
                         "libx264",
                         "-preset",
                         "ultrafast",
                         "-pix_fmt",
                         "yuv420p",
                         fx("long1080.mp4"),
                         NULL};
    if (ffmpeg(syn) == 0) {
        snprintf(g_1080, sizeof g_1080, "%s", fx("long1080.mp4"));
        snprintf(g_long, sizeof g_long, "%s", fx("long1080.mp4"));
    }
}

static int shared_media(const char *name, char *out, size_t outlen)
{
    const char *env = getenv("MD_SHARED_MEDIA");
    if (env && *env)
        snprintf(out, outlen, "%s/%s", env, name);
    else
        snprintf(out, outlen, "%s../shared/media/%s", g_root, name);
    return access(out, R_OK) == 0;
}

/* ---- decoding both ways ---- */

typedef struct decoded {
    md_status open_st, end_st;
    char open_err[256], end_err[256];
    md_video_info info;
    long long expected;
    int keyframe_mode;
    int nb, n; /* batches, frames */
    int batch_n[4096];
    long long first_index[4096];
    float *px;
    md_video_frame *fr;
    md_video_decode_stats stats;
} decoded;

static void decoded_free(decoded *d)
{
    free(d->px);
    free(d->fr);
    memset(d, 0, sizeof *d);
}

static int append(decoded *d, const md_video_batch *b)
{
    size_t one = (size_t)3 * (size_t)b->size * (size_t)b->size;
    float *px = realloc(d->px, sizeof *px * one * (size_t)(d->n + b->n));
    md_video_frame *fr = realloc(d->fr, sizeof *fr * (size_t)(d->n + b->n));
    if (px)
        d->px = px;
    if (fr)
        d->fr = fr;
    if (!px || !fr || d->nb >= 4096)
        return -1;
    memcpy(d->px + one * (size_t)d->n, b->pixels, sizeof *px * one * (size_t)b->n);
    memcpy(d->fr + d->n, b->frames, sizeof *fr * (size_t)b->n);
    d->batch_n[d->nb] = b->n;
    d->first_index[d->nb] = b->first_index;
    d->nb++;
    d->n += b->n;
    return 0;
}

/* Decodes PATH to the end in-process (ISO 0) or isolated (ISO 1) with SB. */
static void decode_all(int iso, const md_video_sandbox *sb, const char *path, const md_video_params *p,
                       const md_video_info *probed, decoded *d)
{
    memset(d, 0, sizeof *d);
    md_video_batch b;
    if (!iso) {
        md_video_decoder *dec = NULL;
        d->open_st = md_video_decoder_open(path, p, probed, &dec, d->open_err, sizeof d->open_err);
        if (d->open_st != MD_OK)
            return;
        d->info = *md_video_decoder_info(dec);
        d->expected = md_video_decoder_expected(dec);
        d->keyframe_mode = md_video_decoder_keyframe_mode(dec);
        while ((d->end_st = md_video_decoder_next(dec, &b)) == MD_OK && b.n > 0)
            if (append(d, &b) != 0)
                break;
        snprintf(d->end_err, sizeof d->end_err, "%s", md_video_decoder_error(dec));
        md_video_decoder_stats(dec, &d->stats);
        md_video_decoder_close(dec);
        return;
    }
    md_video_iso *dec = NULL;
    d->open_st = md_video_iso_decoder_open(sb, path, p, probed, &dec, d->open_err, sizeof d->open_err);
    if (d->open_st != MD_OK)
        return;
    d->info = *md_video_iso_info(dec);
    d->expected = md_video_iso_expected(dec);
    d->keyframe_mode = md_video_iso_keyframe_mode(dec);
    while ((d->end_st = md_video_iso_next(dec, &b)) == MD_OK && b.n > 0)
        if (append(d, &b) != 0)
            break;
    snprintf(d->end_err, sizeof d->end_err, "%s", md_video_iso_error(dec));
    md_video_iso_stats(dec, &d->stats);
    md_video_iso_close(dec);
}

/* 1 when A and B are the same decode, bit for bit; prints the first difference. */
static int same_decode(const char *what, const decoded *a, const decoded *b, size_t one)
{
#define DIFF(cond, ...)                                                                                                \
    do {                                                                                                               \
        if (cond) {                                                                                                    \
            fprintf(stderr, "  %s: ", what);                                                                           \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
            return 0;                                                                                                  \
        }                                                                                                              \
    } while (0)
    DIFF(a->open_st != b->open_st, "open status %s vs %s", md_status_str(a->open_st), md_status_str(b->open_st));
    DIFF(strcmp(a->open_err, b->open_err) != 0, "open message \"%s\" vs \"%s\"", a->open_err, b->open_err);
    if (a->open_st != MD_OK)
        return 1;
    DIFF(memcmp(&a->info, &b->info, sizeof a->info) != 0, "md_video_info differs");
    DIFF(a->expected != b->expected, "expected %lld vs %lld", a->expected, b->expected);
    DIFF(a->keyframe_mode != b->keyframe_mode, "keyframe mode %d vs %d", a->keyframe_mode, b->keyframe_mode);
    DIFF(a->end_st != b->end_st, "end status %s vs %s", md_status_str(a->end_st), md_status_str(b->end_st));
    DIFF(strcmp(a->end_err, b->end_err) != 0, "end message \"%s\" vs \"%s\"", a->end_err, b->end_err);
    DIFF(a->nb != b->nb || a->n != b->n, "%d batches / %d frames vs %d / %d", a->nb, a->n, b->nb, b->n);
    for (int i = 0; i < a->nb; i++)
        DIFF(a->batch_n[i] != b->batch_n[i] || a->first_index[i] != b->first_index[i], "batch %d differs", i);
    DIFF(a->n && memcmp(a->fr, b->fr, sizeof *a->fr * (size_t)a->n) != 0, "frame times differ");
    DIFF(a->n && memcmp(a->px, b->px, sizeof *a->px * one * (size_t)a->n) != 0, "pixels differ");
    DIFF(memcmp(&a->stats, &b->stats, sizeof a->stats) != 0, "statistics differ (decoded %lld vs %lld)",
         a->stats.frames_decoded, b->stats.frames_decoded);
    return 1;
#undef DIFF
}

static decoded g_a, g_b;

static void check_same_decode(const char *path, const md_video_params *p, int with_probe)
{
    md_video_info info, *probed = NULL;
    char err[256];
    if (with_probe) {
        CHECK_EQ_INT(md_video_probe(path, &info, NULL, NULL, err, sizeof err), MD_OK);
        probed = &info;
    }
    decode_all(0, NULL, path, p, probed, &g_a);
    decode_all(1, NULL, path, p, probed, &g_b);
    char what[600];
    snprintf(what, sizeof what, "%s (fps %g size %d batch %d sampling %d keyframes %d)", path, p->fps, p->size,
             p->batch, (int)p->sampling, p->keyframes_only);
    CHECK(same_decode(what, &g_a, &g_b, (size_t)3 * (size_t)p->size * (size_t)p->size));
    if (g_a.open_st == MD_OK)
        CHECK(g_a.n > 0);
    decoded_free(&g_a);
    decoded_free(&g_b);
}

static md_video_params params(double fps, int size, int batch)
{
    md_video_params p = md_video_default_params();
    p.fps = fps;
    p.size = size;
    p.batch = batch;
    return p;
}

/* ---- tests: the same results ---- */

static void check_same_probe(const char *path)
{
    md_video_info a, b;
    char ea[256], eb[256];
    memset(&a, 0, sizeof a); /* the same padding bytes both ways */
    memset(&b, 0, sizeof b);
    md_status sa = md_video_probe(path, &a, NULL, NULL, ea, sizeof ea);
    md_status sb = md_video_iso_probe(NULL, path, &b, NULL, NULL, eb, sizeof eb);
    CHECK_EQ_INT(sb, sa);
    CHECK_STR(eb, ea);
    if (memcmp(&a, &b, sizeof a) != 0) {
        fprintf(stderr, "  %s: md_video_info differs (duration %lld vs %lld, %dx%d vs %dx%d)\n", path, a.duration_ms,
                b.duration_ms, a.width, a.height, b.width, b.height);
        md_t_cur_failed = 1;
    }
}

static void test_probe_same_as_in_process(void)
{
    static const char *names[] = {"h264.mp4",  "vp9.webm", "mpeg4.avi",   "cut.mp4", "head.mp4", "audio.m4a",
                                  "empty.mp4", "text.mp4", "missing.mp4", "dir.mp4", "still.png"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        check_same_probe(fx(names[i]));
    if (g_1080[0])
        check_same_probe(g_1080);
    char path[512];
    if (shared_media("lion-monkey.mp4", path, sizeof path))
        check_same_probe(path);
}

typedef struct progress_log {
    long long calls, last_done, total, bad;
} progress_log;

static int log_progress(void *ctx, long long done, long long total)
{
    progress_log *l = ctx;
    if (done < l->last_done || done > total)
        l->bad++;
    l->calls++;
    l->last_done = done;
    l->total = total;
    return 0;
}

static int cancel_progress(void *ctx, long long done, long long total)
{
    (void)done;
    (void)total;
    ++*(int *)ctx;
    return 1;
}

static void test_probe_progress_and_cancel(void)
{
    const char *path = g_long[0] ? g_long : fx("h264.mp4");
    progress_log l = {0};
    md_video_info info;
    char err[256];
    CHECK_EQ_INT(md_video_iso_probe(NULL, path, &info, log_progress, &l, err, sizeof err), MD_OK);
    struct stat sb;
    CHECK(stat(path, &sb) == 0);
    CHECK(l.calls >= 2);
    CHECK_EQ_INT(l.bad, 0);
    CHECK_EQ_INT(l.total, (long long)sb.st_size);
    CHECK_EQ_INT(l.last_done, (long long)sb.st_size); /* the final call */
    int calls = 0;
    double t0 = now_s();
    CHECK_EQ_INT(md_video_iso_probe(NULL, path, &info, cancel_progress, &calls, err, sizeof err), MD_ERR_CANCELLED);
    CHECK_STR(err, "cancelled");
    CHECK_EQ_INT(calls, 1);
    CHECK(now_s() - t0 < 5);
    CHECK_EQ_INT(info.duration_ms, -1);
}

static void test_decode_same_as_in_process(void)
{
    md_video_params p = params(1.0, 224, 16);
    check_same_decode(fx("h264.mp4"), &p, 0);
    check_same_decode(fx("vp9.webm"), &p, 0);
    check_same_decode(fx("mpeg4.avi"), &p, 1);
    p = params(10.0, 64, 7); /* batches that do not divide the count */
    check_same_decode(fx("h264.mp4"), &p, 0);
    check_same_decode(fx("cut.mp4"), &p, 0); /* truncated: fewer frames, same ones */
    p.sampling = MD_VIDEO_SAMPLE_ALL;
    check_same_decode(fx("h264.mp4"), &p, 1);
    p.sampling = MD_VIDEO_SAMPLE_COUNT;
    p.count = 5;
    check_same_decode(fx("vp9.webm"), &p, 0);
    p = params(1.0, 32, 1);
    p.keyframes_only = 1;
    check_same_decode(fx("h264.mp4"), &p, 0);
    p = params(4.0, 48, 3);
    p.threads = 1;
    check_same_decode(fx("h264.mp4"), &p, 1);
}

static void test_decode_errors_same_as_in_process(void)
{
    md_video_params p = params(1.0, 32, 4);
    static const char *names[] = {"missing.mp4", "empty.mp4", "text.mp4", "audio.m4a",
                                  "head.mp4",    "dir.mp4",   "still.png"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        check_same_decode(fx(names[i]), &p, 0);
    p.fps = -1; /* a bad parameter: the worker's check, the same message */
    check_same_decode(fx("h264.mp4"), &p, 0);
    /* The two the parent checks itself (they size the shared buffers). */
    md_video_iso *d = NULL;
    char err[256];
    p = params(1.0, 0, 4);
    CHECK_EQ_INT(md_video_iso_decoder_open(NULL, fx("h264.mp4"), &p, NULL, &d, err, sizeof err), MD_ERR_INVALID);
    CHECK(d == NULL && strstr(err, "size") != NULL);
    p = params(1.0, 32, 2000);
    CHECK_EQ_INT(md_video_iso_decoder_open(NULL, fx("h264.mp4"), &p, NULL, &d, err, sizeof err), MD_ERR_INVALID);
    CHECK(strstr(err, "batch") != NULL);
    CHECK_EQ_INT(md_video_iso_decoder_open(NULL, NULL, &p, NULL, &d, err, sizeof err), MD_ERR_INVALID);
}

static void test_real_clips_same_as_in_process(void)
{
    char path[512];
    int any = 0;
    md_video_params p = params(1.0, 224, 16);
    static const char *names[] = {"lion-monkey.mp4", "parakeet-ladder.mp4"};
    for (size_t i = 0; i < 2; i++)
        if (shared_media(names[i], path, sizeof path)) {
            check_same_decode(path, &p, 0);
            any = 1;
        }
    if (g_1080[0]) {
        check_same_decode(g_1080, &p, 0);
        p.keyframes_only = 1;
        check_same_decode(g_1080, &p, 1);
        any = 1;
    }
    if (!any)
        md_test_skip("no real clips ($MD_SHARED_MEDIA, ../shared/media, forensics-samples-files)");
}

static void test_load_image_same_as_in_process(void)
{
    static float a[3 * 96 * 96], b[3 * 96 * 96];
    static const char *names[] = {"still.png",   "h264.mp4", "vp9.webm", "audio.m4a",
                                  "missing.png", "text.mp4", "empty.mp4"};
    const float mean[3] = {0.5f, 0.25f, 0.125f}, std[3] = {0.5f, 0.5f, 0.25f};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        for (int custom = 0; custom < 2; custom++) {
            char ea[256], eb[256];
            memset(a, 0, sizeof a);
            memset(b, 0xff, sizeof b);
            md_status sa =
                md_video_load_image(fx(names[i]), 96, custom ? mean : NULL, custom ? std : NULL, a, ea, sizeof ea);
            md_status sb = md_video_iso_load_image(NULL, fx(names[i]), 96, custom ? mean : NULL, custom ? std : NULL, b,
                                                   eb, sizeof eb);
            CHECK_EQ_INT(sb, sa);
            CHECK_STR(eb, ea);
            if (sa == MD_OK)
                CHECK(memcmp(a, b, sizeof a) == 0);
        }
    }
    char err[256];
    CHECK_EQ_INT(md_video_iso_load_image(NULL, fx("still.png"), 0, NULL, NULL, b, err, sizeof err), MD_ERR_INVALID);
}

static void test_symlink_refused(void)
{
    md_video_info info;
    char err[256];
    CHECK_EQ_INT(md_video_iso_probe(NULL, fx("link.mp4"), &info, NULL, NULL, err, sizeof err), MD_ERR_FORBIDDEN);
    CHECK(strstr(err, "symbolic link") != NULL);
}

/* A descriptor the caller checked, named /proc/self/fd/N or /dev/fd/N: the worker reads that
 * file even after its name was made to point to another one, as in-process with the same name. */
static void test_own_descriptor(void)
{
    size_t n = 0;
    char *bytes = tu_read_file(fx("h264.mp4"), &n);
    CHECK(bytes && tu_write_file(fx("swap.mp4"), bytes, n) == 0);
    free(bytes);
    int fd = open(fx("swap.mp4"), O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(lseek(fd, 123, SEEK_SET) == 123);
    CHECK(rename(fx("text.mp4"), fx("swap.mp4")) == 0); /* the name now reaches a text file */
    char name[64], dev[64];
    snprintf(name, sizeof name, "/proc/self/fd/%d", fd);
    snprintf(dev, sizeof dev, "/dev/fd/%d", fd);
    check_same_probe(name);
    md_video_info info;
    char err[256];
    CHECK_EQ_INT(md_video_iso_probe(NULL, dev, &info, NULL, NULL, err, sizeof err), MD_OK);
    CHECK_EQ_INT(info.width, 160);
    CHECK_EQ_INT(md_video_iso_probe(NULL, fx("swap.mp4"), &info, NULL, NULL, err, sizeof err), MD_ERR_MEDIA);
    md_video_params p = params(10.0, 32, 8);
    check_same_decode(name, &p, 0);
    static float a[3 * 32 * 32], b[3 * 32 * 32];
    CHECK_EQ_INT(md_video_load_image(name, 32, NULL, NULL, a, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_video_iso_load_image(NULL, dev, 32, NULL, NULL, b, err, sizeof err), MD_OK);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(lseek(fd, 0, SEEK_CUR) == 123); /* the caller's offset, untouched */
    close(fd);
    /* A descriptor that is not open. */
    CHECK_EQ_INT(md_video_iso_probe(NULL, "/proc/self/fd/999999", &info, NULL, NULL, err, sizeof err),
                 MD_ERR_NOT_FOUND);
    /* text.mp4 back where the other cases expect it. */
    CHECK(rename(fx("swap.mp4"), fx("text.mp4")) == 0);
}

/* ---- tests: failures of the worker ---- */

/* Opens PATH isolated with SB and P and takes one batch; NULL (and a failed check) on failure. */
static md_video_iso *open_one_batch(const md_video_sandbox *sb, const char *path, const md_video_params *p)
{
    md_video_iso *d = NULL;
    char err[256];
    md_status st = md_video_iso_decoder_open(sb, path, p, NULL, &d, err, sizeof err);
    CHECK_EQ_INT(st, MD_OK);
    if (st != MD_OK) {
        fprintf(stderr, "  open: %s\n", err);
        return NULL;
    }
    md_video_batch b;
    CHECK_EQ_INT(md_video_iso_next(d, &b), MD_OK);
    CHECK(b.n > 0);
    return d;
}

/* Kills the worker with SIG after the first batch and checks the next call's error. */
static void check_killed(int sig, const char *want)
{
    md_video_params p = params(10.0, 64, 4);
    md_video_iso *d = open_one_batch(NULL, fx("h264.mp4"), &p);
    if (!d)
        return;
    int pid = md_video_iso_pid(d);
    CHECK(pid > 0);
    CHECK(kill(pid, sig) == 0);
    md_video_batch b;
    md_status st;
    int guard = 0;
    while ((st = md_video_iso_next(d, &b)) == MD_OK && b.n > 0 && ++guard < 100)
        ; /* batches already sent before the signal arrived */
    CHECK_EQ_INT(st, MD_ERR_MEDIA);
    CHECK_EQ_INT(b.n, 0);
    CHECK_STR(md_video_iso_error(d), want);
    CHECK_EQ_INT(md_video_iso_next(d, &b), MD_ERR_MEDIA); /* the same error again */
    CHECK_EQ_INT(md_video_iso_pid(d), -1);                /* reaped */
    md_video_iso_close(d);
    /* The next decoder works, and gives the in-process result. */
    decode_all(0, NULL, fx("h264.mp4"), &p, NULL, &g_a);
    decode_all(1, NULL, fx("h264.mp4"), &p, NULL, &g_b);
    CHECK(same_decode("after a killed worker", &g_a, &g_b, 3 * 64 * 64));
    decoded_free(&g_a);
    decoded_free(&g_b);
}

static void test_worker_sigkill(void)
{
    check_killed(SIGKILL, "decoder process killed by signal 9 (SIGKILL)");
}

/* Under ASan the worker's SIGSEGV is AddressSanitizer's: it reports and aborts (abort_on_error=1,
 * set for workers by isolate.c), so the worker dies of SIGABRT. */
static void test_worker_sigsegv(void)
{
    check_killed(SIGSEGV, UNDER_ASAN ? "decoder process killed by signal 6 (SIGABRT)"
                                     : "decoder process killed by signal 11 (SIGSEGV)");
}

static void test_worker_sigstop_watchdog(void)
{
    md_video_sandbox sb = md_video_sandbox_default();
    sb.watchdog_s = 1;
    md_video_params p = params(10.0, 64, 4);
    md_video_iso *d = open_one_batch(&sb, fx("h264.mp4"), &p);
    if (!d)
        return;
    int pid = md_video_iso_pid(d);
    CHECK(kill(pid, SIGSTOP) == 0);
    md_video_batch b;
    double t0 = now_s();
    CHECK_EQ_INT(md_video_iso_next(d, &b), MD_ERR_MEDIA);
    double dt = now_s() - t0;
    CHECK_STR(md_video_iso_error(d), "decoder made no progress for 1 s; killed");
    CHECK(dt >= 0.9 && dt < 4);
    CHECK_EQ_INT(md_video_iso_pid(d), -1);
    CHECK(kill(pid, 0) != 0); /* gone, and reaped (else it would still exist as a zombie) */
    md_video_iso_close(d);
}

static void test_memory_limit(void)
{
    if (UNDER_ASAN) {
        md_test_skip("AddressSanitizer build: RLIMIT_AS cannot be applied");
        return;
    }
    if (!g_1080[0]) {
        md_test_skip("no 1080p clip");
        return;
    }
    md_video_params p = params(1.0, 224, 16);
    /* The worker's address space before decoding, seen from here. */
    md_video_iso *d = NULL;
    char err[256];
    long long base_kb = 0;
    if (md_video_iso_decoder_open(NULL, g_1080, &p, NULL, &d, err, sizeof err) == MD_OK) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", md_video_iso_pid(d));
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "VmSize: %lld kB", &base_kb) == 1)
                break;
        if (f)
            fclose(f);
    }
    md_video_iso_close(d);
    CHECK(base_kb > 0);
    /* 64 MiB (less than the worker maps to start: it fails at once), and 24 MiB more than the worker
     * had mapped once open (so open succeeds and the limit is hit decoding 1080p frames): both
     * fail naming the limit. */
    long long limits[2] = {64LL << 20, ((base_kb << 10) + (24LL << 20) + (1 << 20) - 1) & ~((1LL << 20) - 1)};
    for (int i = 0; i < 2; i++) {
        md_video_sandbox sb = md_video_sandbox_default();
        sb.mem_limit_bytes = limits[i];
        decode_all(1, &sb, g_1080, &p, NULL, &g_b);
        md_status st = g_b.open_st != MD_OK ? g_b.open_st : g_b.end_st;
        const char *msg = g_b.open_st != MD_OK ? g_b.open_err : g_b.end_err;
        char want[96];
        snprintf(want, sizeof want, "decoder exceeded its memory limit (%lld MiB)", limits[i] >> 20);
        fprintf(stderr, "  limit %lld MiB (worker had %lld MiB once open): %s in %s after %d samples: %s\n",
                limits[i] >> 20, base_kb >> 10, md_status_str(st), g_b.open_st != MD_OK ? "open" : "next", g_b.n, msg);
        if (i == 1)
            CHECK_EQ_INT(g_b.open_st, MD_OK);
        CHECK_EQ_INT(st, MD_ERR_TOO_LARGE);
        CHECK(strncmp(msg, want, strlen(want)) == 0);
        decoded_free(&g_b);
    }
    /* The default limit decodes it. */
    decode_all(1, NULL, g_1080, &p, NULL, &g_b);
    CHECK_EQ_INT(g_b.open_st, MD_OK);
    CHECK_EQ_INT(g_b.end_st, MD_OK);
    decoded_free(&g_b);
}

static void test_cpu_limit(void)
{
    if (!g_long[0]) {
        md_test_skip("no long 1080p clip");
        return;
    }
    md_video_sandbox sb = md_video_sandbox_default();
    sb.cpu_limit_s = 1;
    md_video_params p = params(1.0, 224, 16);
    double t0 = now_s();
    decode_all(1, &sb, g_long, &p, NULL, &g_b);
    md_status st = g_b.open_st != MD_OK ? g_b.open_st : g_b.end_st;
    const char *msg = g_b.open_st != MD_OK ? g_b.open_err : g_b.end_err;
    fprintf(stderr, "  %.2f s wall, %d samples before: %s\n", now_s() - t0, g_b.n, msg);
    CHECK_EQ_INT(st, MD_ERR_TOO_LARGE);
    CHECK_STR(msg, "decoder exceeded its CPU-time limit (SIGXCPU)");
    CHECK(g_b.n < 30); /* it stopped well before the end (31 samples) */
    decoded_free(&g_b);
}

static atomic_int g_interrupt_after; /* batches to let through, then stop */

static int stop_when_zero(void *ctx)
{
    (void)ctx;
    return atomic_load(&g_interrupt_after) <= 0;
}

static void test_interrupt(void)
{
    md_video_params p = params(10.0, 64, 4);
    p.interrupt = stop_when_zero;
    /* Stopping inside open. */
    atomic_store(&g_interrupt_after, 0);
    md_video_iso *d = NULL;
    char err[256];
    CHECK_EQ_INT(md_video_iso_decoder_open(NULL, fx("h264.mp4"), &p, NULL, &d, err, sizeof err), MD_ERR_CANCELLED);
    CHECK_STR(err, "cancelled");
    CHECK(d == NULL);
    /* Stopping mid-video, between calls and while waiting. */
    atomic_store(&g_interrupt_after, 1);
    CHECK_EQ_INT(md_video_iso_decoder_open(NULL, g_long[0] ? g_long : fx("h264.mp4"), &p, NULL, &d, err, sizeof err),
                 MD_OK);
    if (!d)
        return;
    md_video_batch b;
    CHECK_EQ_INT(md_video_iso_next(d, &b), MD_OK);
    int pid = md_video_iso_pid(d);
    atomic_store(&g_interrupt_after, 0);
    double t0 = now_s();
    CHECK_EQ_INT(md_video_iso_next(d, &b), MD_ERR_CANCELLED);
    CHECK(now_s() - t0 < 0.5);
    CHECK_EQ_INT(b.n, 0);
    CHECK_STR(md_video_iso_error(d), "cancelled");
    CHECK_EQ_INT(md_video_iso_next(d, &b), MD_ERR_CANCELLED);
    CHECK_EQ_INT(md_video_iso_pid(d), -1);
    CHECK(kill(pid, 0) != 0);
    md_video_iso_close(d);
}

static void test_close_mid_video(void)
{
    md_video_params p = params(1.0, 224, 2);
    const char *path = g_long[0] ? g_long : fx("h264.mp4");
    md_video_iso *d = open_one_batch(NULL, path, &p);
    if (!d)
        return;
    int pid = md_video_iso_pid(d);
    double t0 = now_s();
    md_video_iso_close(d);
    CHECK(now_s() - t0 < 0.5);
    CHECK(kill(pid, 0) != 0);
    md_video_iso_close(NULL);
}

static void test_bad_worker_exe(void)
{
    md_video_sandbox sb = md_video_sandbox_default();
    md_video_info info;
    char err[256];
    sb.worker_exe = "/nonexistent/momentd";
    CHECK_EQ_INT(md_video_iso_probe(&sb, fx("h264.mp4"), &info, NULL, NULL, err, sizeof err), MD_ERR_UNAVAILABLE);
    CHECK(strstr(err, "cannot start") != NULL);
    /* A program that is no worker: it exits without a word. */
    sb.worker_exe = "/bin/false";
    CHECK_EQ_INT(md_video_iso_probe(&sb, fx("h264.mp4"), &info, NULL, NULL, err, sizeof err), MD_ERR_INTERNAL);
    CHECK(strstr(err, "md_video_worker_main") != NULL);
    sb.worker_exe = "/bin/true";
    CHECK_EQ_INT(md_video_iso_probe(&sb, fx("h264.mp4"), &info, NULL, NULL, err, sizeof err), MD_ERR_INTERNAL);
    CHECK_STR(err, "decoder process exited before answering");
}

/* ---- tests: the sandbox ---- */

static int proc_field(int pid, const char *name, char *out, size_t outlen)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    int found = 0;
    size_t k = strlen(name);
    while (f && !found && fgets(line, sizeof line, f))
        if (strncmp(line, name, k) == 0 && line[k] == ':') {
            char *v = line + k + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            v[strcspn(v, "\n")] = '\0';
            snprintf(out, outlen, "%s", v);
            found = 1;
        }
    if (f)
        fclose(f);
    return found;
}

static void test_sandbox_in_place(void)
{
    md_video_sandbox sb = md_video_sandbox_default();
    sb.mem_limit_bytes = 3LL << 30;
    sb.cpu_limit_s = 77;
    md_video_params p = params(1.0, 64, 2);
    const char *path = g_long[0] ? g_long : fx("h264.mp4");
    md_video_iso *d = open_one_batch(&sb, path, &p);
    if (!d)
        return;
    int pid = md_video_iso_pid(d);
    char v[128];
    CHECK(proc_field(pid, "Seccomp", v, sizeof v) && strcmp(v, "2") == 0);
    CHECK(proc_field(pid, "NoNewPrivs", v, sizeof v) && strcmp(v, "1") == 0);
    unsigned layers = md_video_iso_sandbox(d);
    CHECK(layers & MD_VIDEO_SANDBOX_SECCOMP);
    CHECK(layers & MD_VIDEO_SANDBOX_NO_NEW_PRIVS);
    CHECK(layers & MD_VIDEO_SANDBOX_RLIMITS);
    CHECK(layers & MD_VIDEO_SANDBOX_FDS_CLOSED);
    if (!(layers & MD_VIDEO_SANDBOX_LANDLOCK))
        fprintf(stderr, "  note: this kernel has no Landlock\n");
    struct rlimit rl;
    CHECK(prlimit(pid, RLIMIT_CPU, NULL, &rl) == 0 && rl.rlim_cur == 77);
    CHECK(prlimit(pid, RLIMIT_CORE, NULL, &rl) == 0 && rl.rlim_cur == 0 && rl.rlim_max == 0);
    CHECK(prlimit(pid, RLIMIT_NOFILE, NULL, &rl) == 0 && rl.rlim_cur <= 64);
    if (!UNDER_ASAN) {
        CHECK(layers & MD_VIDEO_SANDBOX_MEM_LIMIT);
        CHECK(prlimit(pid, RLIMIT_AS, NULL, &rl) == 0 && rl.rlim_cur == (rlim_t)(3LL << 30));
    }
    /* Its descriptors: /dev/null, our stderr, its pipes, the input file (FFmpeg's own opens of it
     * included) and nothing else. */
    char real[PATH_MAX], fdpath[96], dirpath[64], link[PATH_MAX];
    CHECK(realpath(path, real) != NULL);
    snprintf(dirpath, sizeof dirpath, "/proc/%d/fd", pid);
    DIR *dir = opendir(dirpath);
    CHECK(dir != NULL);
    struct dirent *e;
    int n = 0, pipes = 0;
    while (dir && (e = readdir(dir))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        snprintf(fdpath, sizeof fdpath, "%s/%d", dirpath, fd);
        ssize_t k = readlink(fdpath, link, sizeof link - 1);
        if (k < 0)
            continue;
        link[k] = '\0';
        n++;
        int ok = (fd <= 1 && strcmp(link, "/dev/null") == 0) || fd == 2 ||
                 ((fd == 4 || fd == 5) && strncmp(link, "pipe:", 5) == 0 && ++pipes) ||
                 (fd == 6 && strncmp(link, "/memfd:", 7) == 0) ||   /* closed once mapped, normally */
                 ((fd == 3 || fd >= 6) && strcmp(link, real) == 0); /* FFmpeg's own opens of it */
        if (!ok) {
            fprintf(stderr, "  worker fd %d -> %s\n", fd, link);
            md_t_cur_failed = 1;
        }
    }
    if (dir)
        closedir(dir);
    CHECK(n >= 6);
    CHECK_EQ_INT(pipes, 2);
    md_video_iso_close(d);
}

static void test_worker_cannot_open_other_files(void)
{
    /* The playlist names seg.ts by absolute path. By default both ways refuse it (the open options);
     * with allow_nested = 1 in-process FFmpeg opens seg.ts by its path and decodes it, while the
     * worker, whose Landlock rule covers only the playlist, cannot open it: it must fail. */
    md_video_open_opts nested = {.allow_nested = 1};
    md_video_info a, b;
    char ea[256], eb[256];
    CHECK(md_video_iso_probe(NULL, fx("list.m3u8"), &b, NULL, NULL, eb, sizeof eb) != MD_OK);
    md_status sa = md_video_probe_ex(fx("list.m3u8"), &nested, &a, NULL, NULL, ea, sizeof ea);
    md_status sb = md_video_iso_probe_ex(NULL, fx("list.m3u8"), &nested, &b, NULL, NULL, eb, sizeof eb);
    fprintf(stderr, "  allow_nested: in-process probe: %s %s; isolated: %s %s\n", md_status_str(sa), ea,
            md_status_str(sb), eb);
    CHECK_EQ_INT(sa, MD_OK); /* the proof that FFmpeg would open seg.ts */
    CHECK(sb != MD_OK);
    md_video_params p = params(1.0, 32, 4);
    p.open = nested;
    decode_all(0, NULL, fx("list.m3u8"), &p, NULL, &g_a);
    decode_all(1, NULL, fx("list.m3u8"), &p, NULL, &g_b);
    fprintf(stderr, "  allow_nested: in-process decode: %s, %d samples; isolated: %s %s\n", md_status_str(g_a.open_st),
            g_a.n, md_status_str(g_b.open_st), g_b.open_err);
    CHECK(g_a.open_st == MD_OK && g_a.end_st == MD_OK && g_a.n > 0);
    CHECK(g_b.open_st != MD_OK || g_b.end_st != MD_OK || g_b.n == 0);
    decoded_free(&g_a);
    decoded_free(&g_b);
    static float px[3 * 32 * 32];
    CHECK(md_video_iso_load_image_ex(NULL, fx("list.m3u8"), &nested, 32, NULL, NULL, px, eb, sizeof eb) != MD_OK);
    md_video_iso *d = NULL;
    md_video_params q = params(1.0, 32, 4);
    if (md_video_iso_decoder_open(NULL, fx("h264.mp4"), &q, NULL, &d, eb, sizeof eb) == MD_OK &&
        !(md_video_iso_sandbox(d) & MD_VIDEO_SANDBOX_LANDLOCK))
        md_test_skip("no Landlock in this kernel: the worker could read other files");
    md_video_iso_close(d);
}

/* ---- concurrency ---- */

typedef struct thread_job {
    const char *path;
    int ok;
} thread_job;

static void *decode_thread(void *arg)
{
    thread_job *j = arg;
    static decoded a[2], b[2];
    int i = j->ok; /* slot */
    md_video_params p = params(10.0, 48, 5);
    decode_all(0, NULL, j->path, &p, NULL, &a[i]);
    decode_all(1, NULL, j->path, &p, NULL, &b[i]);
    j->ok = a[i].open_st == MD_OK && a[i].n > 0 && same_decode(j->path, &a[i], &b[i], 3 * 48 * 48);
    decoded_free(&a[i]);
    decoded_free(&b[i]);
    return NULL;
}

static void test_concurrent_decoders(void)
{
    thread_job jobs[2] = {{fx("h264.mp4"), 0}, {fx("vp9.webm"), 1}};
    pthread_t t[2];
    int started[2];
    for (int i = 0; i < 2; i++)
        started[i] = pthread_create(&t[i], NULL, decode_thread, &jobs[i]) == 0;
    for (int i = 0; i < 2; i++) {
        CHECK(started[i]);
        if (started[i])
            pthread_join(t[i], NULL);
        CHECK(jobs[i].ok == 1);
    }
}

int main(int argc, char **argv)
{
    int wrc = md_video_worker_main(argc, argv);
    if (wrc >= 0)
        return wrc;
    md_test_init(argc, argv);
    md_video_global_init();
    md_log_set_level(MD_LOG_ERROR); /* damaged fixtures make FFmpeg warn, on purpose */
    snprintf(g_root, sizeof g_root, "%s", tu_repo_root());
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/md_test_isolate.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    const char *version[] = {"ffmpeg", "-version", NULL};
    if (run(version) != 0) {
        md_test_skip_rest("no working ffmpeg on PATH to make the fixtures");
    } else if (make_fixtures() != 0) {
        fprintf(stderr, "not ok make_fixtures\n");
        md_t_failed++;
        md_test_skip_rest("make_fixtures failed");
    } else {
        make_1080p();
    }
    int fds0 = count_fds();
    RUN(test_probe_same_as_in_process);
    RUN(test_probe_progress_and_cancel);
    RUN(test_decode_same_as_in_process);
    RUN(test_decode_errors_same_as_in_process);
    RUN(test_real_clips_same_as_in_process);
    RUN(test_load_image_same_as_in_process);
    RUN(test_symlink_refused);
    RUN(test_own_descriptor);
    RUN(test_worker_sigkill);
    RUN(test_worker_sigsegv);
    RUN(test_worker_sigstop_watchdog);
    RUN(test_memory_limit);
    RUN(test_cpu_limit);
    RUN(test_interrupt);
    RUN(test_close_mid_video);
    RUN(test_bad_worker_exe);
    RUN(test_sandbox_in_place);
    RUN(test_worker_cannot_open_other_files);
    RUN(test_concurrent_decoders);
    md_test_skip_rest(NULL);
    if (md_test_begin("test_no_zombies_no_leaked_fds")) {
        CHECK(no_children());
        int fds1 = count_fds();
        if (fds1 != fds0)
            fprintf(stderr, "  descriptors: %d before, %d after\n", fds0, fds1);
        CHECK_EQ_INT(fds1, fds0);
        md_test_end("test_no_zombies_no_leaked_fds");
    }
    tu_remove_dir(g_dir);
    return md_test_summary("test_isolate");
}
