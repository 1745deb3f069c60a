/* test_decode.c - unit tests of the streaming decoder (video/decode.c) and CLIP preprocessing
 * (base/image.c).
 *
 * Preprocessing is compared with Hugging Face CLIPImageProcessor through the committed fixtures in
 * tests/fixtures/preprocess (PNG inputs, float32 outputs; tests/tools/gen_preprocess_fixtures.py
 * makes them). Our resampler reimplements PIL's fixed-point bicubic resampling, so the expected
 * error is exactly 0; the stated tolerance is 1e-6 (a float32 rounding step near 1).
 *
 * Video fixtures are made at run time with the ffmpeg CLI in a mkdtemp directory (removed at the
 * end). Sampling is checked against ffprobe's view of the same files: its frames' best-effort
 * timestamps and keyframe flags, the stream's time base and start. For a target t the expected
 * frame is the last one with pts <= t. The real clips in ../shared/media ($MD_SHARED_MEDIA) and the
 * forensics-samples-files phone video are checked the same way when present, else counted as skipped.
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "testutil.h"

#include "../../base/log.h"
#include "../../base/status.h"
#include "../../video/video.h"

#include <dirent.h>
#include <limits.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
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

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifndef UNDER_SANITIZER
#define UNDER_SANITIZER 0
#endif

extern char **environ;

#define PREPROCESS_TOLERANCE 1e-6

static char g_dir[256];
static char g_root[256]; /* repository root, relative to the current directory */

/* A path in the fixture directory; the last 64 stay valid (make_fixtures holds ~30 at once). */
static const char *fx(const char *name)
{
    static char paths[64][512];
    static int next;
    char *p = paths[next++ % 64];
    snprintf(p, sizeof paths[0], "%s/%s", g_dir, name);
    return p;
}

/* Runs PROG with ARGV (NULL-terminated, ARGV[0] is PROG) and returns its stdout (malloc'd, NUL
 * terminated) or NULL when it failed. Stderr is left alone. */
static char *capture(const char *const *argv)
{
    int fds[2];
    if (pipe(fds) != 0)
        return NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)(uintptr_t)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return NULL;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ssize_t n;
    while (buf && (n = read(fds[0], buf + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (cap - len < 4096) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    close(fds[0]);
    int ws;
    if (waitpid(pid, &ws, 0) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        free(buf);
        return NULL;
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* Runs ffmpeg with ARGS (without the program name); 0 on success. */
static int run_ffmpeg(const char *const *args)
{
    const char *argv[64] = {"ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"};
    int n = 6;
    for (int i = 0; args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char *out = capture(argv);
    int ok = out != NULL;
    free(out);
    return ok ? 0 : -1;
}




static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ---- fixtures ---- */

#define SRC "testsrc2=size=160x120:rate=10"

static int make_fixtures(void)
{
    const char *h264[] = {"-f", "lavfi", "-i", SRC, "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                          fx("h264.mp4"), NULL};
    const char *fast[] = {"-f", "lavfi", "-i", SRC, "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                          "-movflags", "+faststart", fx("faststart.mp4"), NULL};
    const char *g5[] = {"-f", "lavfi", "-i", SRC, "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "5",
                        "-keyint_min", "5", "-sc_threshold", "0", fx("g5.mp4"), NULL};
    const char *hevc[] = {"-f", "lavfi", "-i", SRC, "-t", "2", "-c:v", "libx265", "-pix_fmt", "yuv420p",
                          "-x265-params", "log-level=error", fx("hevc.mkv"), NULL};
    const char *vp9[] = {"-f", "lavfi", "-i", SRC, "-t", "2", "-c:v", "libvpx-vp9", "-deadline", "realtime",
                         "-cpu-used", "8", "-b:v", "200k", fx("vp9.webm"), NULL};
    const char *mpeg4[] = {"-f", "lavfi", "-i", SRC, "-t", "2", "-c:v", "mpeg4", "-bf", "2", fx("mpeg4.avi"), NULL};
    const char *mjpeg[] = {"-f", "lavfi", "-i", SRC, "-t", "1", "-c:v", "mjpeg", fx("mjpeg.avi"), NULL};
    const char *msmpeg4[] = {"-f", "lavfi", "-i", SRC, "-t", "2", "-c:v", "msmpeg4v3", fx("msmpeg4.avi"), NULL};
    /* Variable frame rate: a 30 fps source thinned irregularly, timestamps kept (1 ms base). */
    const char *vfr[] = {"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-t", "3", "-vf",
                         "select='not(mod(n\\,4))+eq(mod(n\\,9)\\,1)'", "-vsync", "vfr", "-c:v", "libx264",
                         "-pix_fmt", "yuv420p", fx("vfr.mkv"), NULL};
    /* MPEG-TS starts its clock at 1.4 s. */
    const char *ts[] = {"-f", "lavfi", "-i", SRC, "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p", fx("h264.ts"),
                        NULL};
    /* FFmpeg 5.1 has no -display_rotation; the rotate tag still sets the display matrix. */
    /* A cut by stream copy: its edit list starts 0.55 s into the stream, after the keyframe, so the
     * frames before it are decoded but not shown. */
    const char *edit[] = {"-ss", "0.55", "-i", fx("h264.mp4"), "-c", "copy", fx("edit.mp4"), NULL};
    const char *rot[] = {"-i", fx("h264.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90", fx("rot90.mp4"), NULL};
    /* Odd sizes need 4:4:4 in H.264. */
    const char *odd[] = {"-f", "lavfi", "-i", "testsrc2=size=334x188:rate=10", "-t", "1", "-vf", "format=yuv444p,crop=333:187:0:0",
                         "-c:v", "libx264", "-pix_fmt", "yuv444p", fx("odd333.mp4"), NULL};
    const char *tiny[] = {"-f", "lavfi", "-i", "testsrc2=size=16x16:rate=10", "-t", "1", "-c:v", "libx264",
                          "-pix_fmt", "yuv420p", fx("tiny16.mp4"), NULL};
    /* 20 minutes at 32x32, 5 fps: 6000 frames. */
    const char *lng[] = {"-f", "lavfi", "-i", "testsrc2=size=32x32:rate=5", "-t", "1200", "-c:v", "libx264",
                         "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p", fx("long.mp4"), NULL};
    /* An H.264 elementary stream: no container, no timestamps, no duration. */
    const char *raw[] = {"-f", "lavfi", "-i", SRC, "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "h264",
                         fx("raw.h264"), NULL};
    /* Matroska's index lists only some keyframes: keyframe mode counts them with a scan. */
    const char *g5mkv[] = {"-i", fx("g5.mp4"), "-c", "copy", fx("g5.mkv"), NULL};
    const char *aud[] = {"-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", fx("audio.m4a"), NULL};
    const char *png[] = {"-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", fx("still.png"), NULL};
    const char *const *all[] = {h264, fast, g5,  hevc, vp9, mpeg4, mjpeg, msmpeg4, vfr,   ts,
                                edit, rot,  odd, tiny, lng, raw,   g5mkv, aud,   png};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (run_ffmpeg(all[i]) != 0) {
            const char *out = "?";
            for (int j = 0; all[i][j]; j++)
                out = all[i][j];
            fprintf(stderr, "ffmpeg fixture %s failed\n", out);
            return -1;
        }

    /* Broken copies of faststart.mp4 (index first, so the data can be damaged alone). */
    size_t len;
    unsigned char *data = tu_read_file(fx("faststart.mp4"), &len);
    if (!data)
        return -1;
    int rc = tu_write_file(fx("truncated.mp4"), data, len * 6 / 10);
    for (size_t i = len / 2; i < len / 2 + len / 10; i++)
        data[i] ^= 0xA5;
    rc |= tu_write_file(fx("flipped.mp4"), data, len);
    /* Everything after the index damaged: not one frame decodes. */
    for (size_t i = 0; i + 4 <= len; i++)
        if (!memcmp(data + i, "mdat", 4)) {
            for (size_t j = i + 4; j < len; j++)
                data[j] ^= 0x5A;
            break;
        }
    rc |= tu_write_file(fx("allbad.mp4"), data, len);
    free(data);

    /* An AVI whose codec tag nothing knows: MPEG-4 with its FourCC overwritten. */
    data = tu_read_file(fx("mpeg4.avi"), &len);
    if (!data)
        return -1;
    for (size_t i = 0; i + 4 <= len; i++)
        if (!memcmp(data + i, "FMP4", 4))
            memcpy(data + i, "QQQQ", 4);
    rc |= tu_write_file(fx("unknown.avi"), data, len);
    free(data);

    /* A YUV4MPEG header claiming 10000x10000 (100 Mpixel), with a little data. */
    static const char y4m[] = "YUV4MPEG2 W10000 H10000 F25:1 Ip A1:1 C420jpeg\nFRAME\n";
    unsigned char *big = calloc(1, sizeof y4m + 4096);
    if (!big)
        return -1;
    memcpy(big, y4m, sizeof y4m - 1);
    rc |= tu_write_file(fx("huge.y4m"), big, sizeof y4m - 1 + 4096);
    free(big);

    /* A fixed LCG, not /dev/urandom: random bytes occasionally look like some format's magic. */
    static unsigned char noise[65536];
    uint32_t x = 4242;
    for (size_t i = 0; i < sizeof noise; i++) {
        x = x * 1103515245u + 12345u;
        noise[i] = (unsigned char)(x >> 16);
    }
    rc |= tu_write_file(fx("noise.mp4"), noise, sizeof noise);
    rc |= tu_write_file(fx("empty.mp4"), noise, 0);
    return rc;
}

/* CRC-32 of PNG chunks (ISO 3309, the zlib one), bitwise: a few chunks only. */
static uint32_t crc32_png(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static size_t png_chunk(unsigned char *out, const char *type, const unsigned char *data, uint32_t len)
{
    out[0] = (unsigned char)(len >> 24), out[1] = (unsigned char)(len >> 16);
    out[2] = (unsigned char)(len >> 8), out[3] = (unsigned char)len;
    memcpy(out + 4, type, 4);
    if (len)
        memcpy(out + 8, data, len);
    uint32_t c = crc32_png(out + 4, 4 + (size_t)len);
    out[8 + len] = (unsigned char)(c >> 24), out[9 + len] = (unsigned char)(c >> 16);
    out[10 + len] = (unsigned char)(c >> 8), out[11 + len] = (unsigned char)c;
    return 12 + (size_t)len;
}

/* Hostile files (issue 11):
 *   bomb.png    68 bytes: an IHDR claiming 16000 x 16000 RGB (768 MB decoded) and a tiny IDAT
 *   wide.y4m    a 20000 x 8 "video" (160 kpx, but wider than any codec level allows)
 *   gap.mkv     10 frames at 10 fps, the last 5 shifted by 10,240 h (36,864,000 s)
 *   list.m3u8   an HLS playlist naming secret/clip.ts by absolute path; concat.txt naming
 *               h264.mp4; dash.mpd with its segments; cam.mlv whose demuxer opens cam.m00
 *   seq%03d.png a real file of that name (still.png's picture) beside seq001.png (another one):
 *               image2 would read seq001.png for it
 *   hd.mp4      1920 x 1080, 2 s: frames large enough to show memory kept after close */
static int make_hostile_fixtures(void)
{
    char line[1024];
    int rc = 0;
    if (mkdir(fx("secret"), 0700) != 0)
        return -1;
    const char *ts[] = {"-f", "lavfi", "-i", SRC, "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                        fx("secret/clip.ts"), NULL};
    const char *dash[] = {"-i", fx("h264.mp4"), "-c", "copy", "-f", "dash", fx("dash.mpd"), NULL};
    const char *gap[] = {"-f", "lavfi", "-i", SRC, "-frames:v", "10", "-vf", "setpts='if(gte(N,5),PTS+36864000/TB,PTS)'",
                         "-vsync", "passthrough", "-c:v", "libx264", "-pix_fmt", "yuv420p", fx("gap.mkv"), NULL};
    const char *other[] = {"-f", "lavfi", "-i", "testsrc2=size=64x48", "-vf", "negate", "-frames:v", "1",
                           fx("seq001.png"), NULL};
    const char *hd[] = {"-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25", "-t", "2", "-c:v", "libx264",
                        "-preset", "ultrafast", "-pix_fmt", "yuv420p", fx("hd.mp4"), NULL};
    const char *const *all[] = {ts, dash, gap, other, hd};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (run_ffmpeg(all[i]) != 0) {
            fprintf(stderr, "ffmpeg hostile fixture %zu failed\n", i);
            return -1;
        }
    snprintf(line, sizeof line, "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n%s\n#EXT-X-ENDLIST\n",
             fx("secret/clip.ts"));
    rc |= tu_write_file(fx("list.m3u8"), line, strlen(line));
    snprintf(line, sizeof line, "ffconcat version 1.0\nfile 'h264.mp4'\n");
    rc |= tu_write_file(fx("concat.txt"), line, strlen(line));
    static const unsigned char mlv[] = {
        'M', 'L', 'V', 'I', 52, 0, 0, 0, 'v', '2', '.', '0', 0, 0, 0, 0, 0x34, 0x12, 0, 0, 0, 0, 0, 0,
        0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0,
        'N', 'U', 'L', 'L', 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    rc |= tu_write_file(fx("cam.mlv"), mlv, sizeof mlv);
    rc |= tu_write_file(fx("cam.m00"), mlv, 52);
    size_t len;
    unsigned char *still = tu_read_file(fx("still.png"), &len);
    if (!still)
        return -1;
    rc |= tu_write_file(fx("seq%03d.png"), still, len);
    free(still);

    unsigned char png[128];
    static const unsigned char ihdr[13] = {0, 0, 0x3e, 0x80, 0, 0, 0x3e, 0x80, 8, 2, 0, 0, 0}; /* 16000 x 16000 */
    static const unsigned char idat[] = {0x78, 0x9c, 0x63, 0x60, 0x60, 0, 0, 0, 3, 0, 1};   /* zlib of 3 zeros */
    size_t n = 8;
    memcpy(png, "\x89PNG\r\n\x1a\n", 8);
    n += png_chunk(png + n, "IHDR", ihdr, sizeof ihdr);
    n += png_chunk(png + n, "IDAT", idat, sizeof idat);
    n += png_chunk(png + n, "IEND", NULL, 0);
    rc |= tu_write_file(fx("bomb.png"), png, n);

    static const char y4m[] = "YUV4MPEG2 W20000 H8 F25:1 Ip A1:1 C420jpeg\nFRAME\n";
    size_t frame = 20000 * 8 * 3 / 2;
    unsigned char *wide = calloc(1, sizeof y4m + frame);
    if (!wide)
        return -1;
    memcpy(wide, y4m, sizeof y4m - 1);
    rc |= tu_write_file(fx("wide.y4m"), wide, sizeof y4m - 1 + frame);
    free(wide);
    return rc;
}

/* ---- ffprobe's view ---- */

#define MISSING_TS LLONG_MIN

typedef struct probed {
    long long tb_num, tb_den;
    long long start;
    int n;
    long long *ts; /* best-effort timestamps, presentation order */
    int *key;
    double duration;
} probed;

static void probed_free(probed *p)
{
    free(p->ts);
    free(p->key);
    memset(p, 0, sizeof *p);
}

static long long field(const char *line, const char *name, int *ok)
{
    const char *f = strstr(line, name);
    if (!f || f[strlen(name)] != '=') {
        *ok = 0;
        return 0;
    }
    const char *v = f + strlen(name) + 1;
    if (!strncmp(v, "N/A", 3)) {
        *ok = 0;
        return 0;
    }
    return strtoll(v, NULL, 10);
}

static int ffprobe(const char *path, probed *p)
{
    memset(p, 0, sizeof *p);
    const char *argv[] = {"ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=time_base,start_pts,avg_frame_rate:frame=key_frame,best_effort_timestamp:format=duration",
                          "-of", "compact", path, NULL};
    char *out = capture(argv);
    if (!out)
        return -1;
    int cap = 1024;
    p->ts = malloc(sizeof *p->ts * (size_t)cap);
    p->key = malloc(sizeof *p->key * (size_t)cap);
    int got_stream = 0;
    long long rate_num = 0, rate_den = 0;
    int start_known = 0;
    for (char *line = strtok(out, "\n"); line && p->ts && p->key; line = strtok(NULL, "\n")) {
        int ok = 1;
        if (!strncmp(line, "frame|", 6)) {
            if (p->n == cap) {
                cap *= 2;
                long long *nt = realloc(p->ts, sizeof *p->ts * (size_t)cap);
                int *nk = realloc(p->key, sizeof *p->key * (size_t)cap);
                if (nt)
                    p->ts = nt;
                if (nk)
                    p->key = nk;
                if (!nt || !nk)
                    break;
            }
            int key = (int)field(line, "key_frame", &ok);
            long long ts = field(line, "best_effort_timestamp", &ok);
            p->ts[p->n] = ok ? ts : MISSING_TS; /* N/A: filled in below */
            p->key[p->n++] = key;
        } else if (!strncmp(line, "stream|", 7)) {
            const char *tb = strstr(line, "time_base=");
            if (tb && sscanf(tb, "time_base=%lld/%lld", &p->tb_num, &p->tb_den) == 2)
                got_stream = 1;
            const char *fr = strstr(line, "avg_frame_rate=");
            if (fr && sscanf(fr, "avg_frame_rate=%lld/%lld", &rate_num, &rate_den) != 2)
                rate_num = rate_den = 0;
            p->start = field(line, "start_pts", &ok);
            start_known = ok;
        } else if (!strncmp(line, "format|", 7)) {
            const char *d = strstr(line, "duration=");
            if (d)
                p->duration = atof(d + 9);
        }
    }
    free(out);
    if (!got_stream || !p->ts || !p->key || p->n == 0 || p->tb_num <= 0 || p->tb_den <= 0) {
        probed_free(p);
        return -1;
    }
    /* A frame without any timestamp (the last one of an AVI with packed B-frames) is shown one
     * nominal frame duration after the previous one: the decoder's documented rule. */
    long long step = rate_num > 0 && rate_den > 0
                         ? (p->tb_den * rate_den + p->tb_num * rate_num / 2) / (p->tb_num * rate_num)
                         : 1;
    if (!start_known)
        p->start = p->ts[0] != MISSING_TS ? p->ts[0] : 0;
    for (int i = 0; i < p->n; i++)
        if (p->ts[i] == MISSING_TS)
            p->ts[i] = i ? p->ts[i - 1] + (step > 0 ? step : 1) : p->start;
    return 0;
}

/* Milliseconds of TICKS in P's time base, rounded to nearest, halves away from zero. */
static long long to_ms(const probed *p, long long ticks)
{
    __int128 num = (__int128)ticks * 1000 * p->tb_num;
    __int128 den = p->tb_den;
    __int128 q = (num >= 0 ? num + den / 2 : num - den / 2) / den;
    return (long long)q;
}

/* Target K for FPS = FNUM/FDEN samples per second, in P's ticks from its start, rounded down. */
static long long target_ticks(const probed *p, long long k, long long fnum, long long fden)
{
    __int128 num = (__int128)k * fden * p->tb_den, den = (__int128)fnum * p->tb_num;
    return (long long)(num / den);
}

/* Index of the frame shown at stream time T: the last with ts <= T, the first when none. */
static int shown_at(const probed *p, long long t, int keys_only)
{
    int best = -1, first = -1;
    for (int i = 0; i < p->n; i++) {
        if (keys_only && !p->key[i])
            continue;
        if (first < 0)
            first = i;
        if (p->ts[i] <= t && (best < 0 || p->ts[i] >= p->ts[best]))
            best = i;
    }
    return best >= 0 ? best : first;
}

/* ---- decoding everything ---- */

typedef struct decoded {
    int n;
    long long ts[8192], target[8192];
    int kf[8192];
    float *px; /* n frames when kept */
    int size;
    long long expected;
    int keyframe_mode;
    md_video_decode_stats stats;
    char err[256];
} decoded;

static md_status decode_all(const char *path, const md_video_params *p, int keep_pixels, decoded *d)
{
    md_video_decoder *dec = NULL;
    free(d->px);
    memset(d, 0, sizeof *d);
    d->size = p->size;
    md_status st = md_video_decoder_open(path, p, NULL, &dec, d->err, sizeof d->err);
    if (st != MD_OK)
        return st;
    d->expected = md_video_decoder_expected(dec);
    d->keyframe_mode = md_video_decoder_keyframe_mode(dec);
    size_t plane3 = 3 * (size_t)p->size * (size_t)p->size;
    md_video_batch b;
    while ((st = md_video_decoder_next(dec, &b)) == MD_OK && b.n > 0) {
        if (b.first_index != d->n || b.size != p->size || b.n > p->batch)
            st = MD_ERR_INTERNAL;
        if (keep_pixels) {
            float *np = realloc(d->px, sizeof(float) * plane3 * (size_t)(d->n + b.n));
            if (!np) {
                st = MD_ERR_NOMEM;
                break;
            }
            d->px = np;
            memcpy(d->px + plane3 * (size_t)d->n, b.pixels, sizeof(float) * plane3 * (size_t)b.n);
        }
        for (int i = 0; i < b.n && d->n < 8192; i++, d->n++) {
            d->ts[d->n] = b.frames[i].ts_ms;
            d->target[d->n] = b.frames[i].target_ms;
            d->kf[d->n] = b.frames[i].keyframe_only;
        }
        if (st != MD_OK)
            break;
    }
    md_video_decoder_stats(dec, &d->stats);
    if (st != MD_OK)
        snprintf(d->err, sizeof d->err, "%s", md_video_decoder_error(dec));
    md_video_decoder_close(dec);
    return st;
}

static md_video_params params_fps(double fps, int size)
{
    md_video_params p = md_video_default_params();
    p.fps = fps;
    p.size = size;
    return p;
}

/* Checks D (sampled at FNUM/FDEN fps, KEYS: keyframe mode) against ffprobe's frames of PATH.
 * Returns the number of mismatches (each printed). */
static int check_selection(const char *path, const decoded *d, long long fnum, long long fden, int keys)
{
    probed p;
    if (ffprobe(path, &p) != 0) {
        fprintf(stderr, "  ffprobe failed on %s\n", path);
        return 1;
    }
    int bad = 0;
    for (int k = 0; k < d->n; k++) {
        long long t = p.start + target_ticks(&p, k, fnum, fden);
        int i = shown_at(&p, t, keys);
        long long want = to_ms(&p, p.ts[i] - p.start), want_target = to_ms(&p, t - p.start);
        if (d->ts[k] != want || d->target[k] != want_target || d->kf[k] != keys) {
            if (bad++ < 5)
                fprintf(stderr, "  %s sample %d: ts %lld target %lld kf %d, ffprobe: ts %lld target %lld\n", path, k,
                        d->ts[k], d->target[k], d->kf[k], want, want_target);
        }
    }
    /* Every target before the last frame's time must have been delivered. */
    long long last = p.ts[p.n - 1];
    long long n_due = 0;
    while (p.start + target_ticks(&p, n_due, fnum, fden) <= last)
        n_due++;
    if (d->n < n_due) {
        fprintf(stderr, "  %s: %d samples, but targets up to the last frame need %lld\n", path, d->n, n_due);
        bad++;
    }
    probed_free(&p);
    return bad;
}

static int check_all_frames(const char *path, const decoded *d)
{
    probed p;
    if (ffprobe(path, &p) != 0)
        return 1;
    int bad = d->n != p.n;
    if (bad)
        fprintf(stderr, "  %s: %d frames, ffprobe %d\n", path, d->n, p.n);
    for (int i = 0; i < d->n && i < p.n; i++)
        if (d->ts[i] != to_ms(&p, p.ts[i] - p.start) && bad++ < 5)
            fprintf(stderr, "  %s frame %d: ts %lld, ffprobe %lld\n", path, i, d->ts[i], to_ms(&p, p.ts[i] - p.start));
    probed_free(&p);
    return bad;
}

static decoded g_d, g_d2;

/* ---- preprocessing ---- */

static int find_root(void)
{
    char up[64] = "";
    for (int depth = 0; depth < 5; depth++) {
        char probe_path[128];
        snprintf(probe_path, sizeof probe_path, "%stests/fixtures/preprocess/cases.txt", up);
        if (access(probe_path, R_OK) == 0) {
            snprintf(g_root, sizeof g_root, "%s", up);
            return 1;
        }
        strcat(up, "../");
    }
    return 0;
}

static void test_preprocess_matches_clip_image_processor(void)
{
    char path[512];
    snprintf(path, sizeof path, "%stests/fixtures/preprocess/cases.txt", g_root);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (!f)
        return;
    char line[256];
    int cases = 0;
    double worst = 0;
    long long values = 0;
    while (fgets(line, sizeof line, f)) {
        char name[64];
        int w, h, size;
        if (line[0] == '#' || sscanf(line, "%63s %d %d %d", name, &w, &h, &size) != 4)
            continue;
        size_t n = 3 * (size_t)size * (size_t)size, len = 0;
        float *out = malloc(sizeof(float) * n);
        snprintf(path, sizeof path, "%stests/fixtures/preprocess/%s.f32", g_root, name);
        float *ref = tu_read_file(path, &len);
        CHECK(out && ref && len == sizeof(float) * n);
        if (!out || !ref || len != sizeof(float) * n) {
            free(out);
            free(ref);
            continue;
        }
        char err[256];
        snprintf(path, sizeof path, "%stests/fixtures/preprocess/%s.png", g_root, name);
        md_status st = md_video_load_image(path, size, NULL, NULL, out, err, sizeof err);
        CHECK_EQ_INT(st, MD_OK);
        double max_err = 0;
        for (size_t i = 0; i < n; i++) {
            double e = fabs((double)out[i] - (double)ref[i]);
            if (!(e <= max_err)) /* NaN counts as worst */
                max_err = isnan(e) ? INFINITY : e;
        }
        fprintf(stderr, "  %-20s %4dx%-4d -> %3d: max abs error %g\n", name, w, h, size, max_err);
        CHECK(max_err <= PREPROCESS_TOLERANCE);
        if (max_err > worst)
            worst = max_err;
        values += (long long)n;
        cases++;
        free(out);
        free(ref);
    }
    fclose(f);
    CHECK(cases >= 8);
    fprintf(stderr, "  CLIPImageProcessor: %d cases, %lld values, max abs error %g (tolerance %g)\n", cases, values,
            worst, PREPROCESS_TOLERANCE);
}

/* Rotation walks the picture; a picture rotated by hand must give the same tensor. */
static void test_preprocess_rotation(void)
{
    enum { W = 37, H = 23, S = 16 };
    static unsigned char src[H][W][3], r90[W][H][3], r180[H][W][3], r270[W][H][3];
    uint32_t x = 7;
    for (int y = 0; y < H; y++)
        for (int i = 0; i < W; i++)
            for (int c = 0; c < 3; c++) {
                x = x * 1103515245u + 12345u;
                src[y][i][c] = (unsigned char)(x >> 16);
            }
    for (int y = 0; y < H; y++)
        for (int i = 0; i < W; i++)
            for (int c = 0; c < 3; c++) {
                r90[i][H - 1 - y][c] = src[y][i][c];         /* clockwise: top-left goes top-right */
                r180[H - 1 - y][W - 1 - i][c] = src[y][i][c];
                r270[W - 1 - i][y][c] = src[y][i][c];        /* top-left goes bottom-left */
            }
    static float a[3 * S * S], b[3 * S * S];
    const struct {
        int rot;
        const unsigned char *pic;
        int w, h;
    } cases[] = {{90, &r90[0][0][0], H, W}, {180, &r180[0][0][0], W, H}, {270, &r270[0][0][0], H, W}};
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ_INT(md_image_preprocess(&src[0][0][0], W, H, W * 3, 3, cases[i].rot, S, NULL, NULL, a), MD_OK);
        CHECK_EQ_INT(md_image_preprocess(cases[i].pic, cases[i].w, cases[i].h, cases[i].w * 3, 3, 0, S, NULL,
                                             NULL, b),
                     MD_OK);
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
    CHECK_EQ_INT(md_image_preprocess(&src[0][0][0], W, H, W * 3, 3, 45, S, NULL, NULL, a), MD_ERR_INVALID);
    CHECK_EQ_INT(md_image_preprocess(&src[0][0][0], W, H, W * 2, 3, 0, S, NULL, NULL, a), MD_ERR_INVALID);
    CHECK_EQ_INT(md_image_preprocess(NULL, W, H, W * 3, 3, 0, S, NULL, NULL, a), MD_ERR_INVALID);
}

/* Non-default normalisation is the same per-channel affine map. */
static void test_preprocess_mean_std(void)
{
    static unsigned char px[8 * 8 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (unsigned char)(i * 37);
    float a[3 * 8 * 8], b[3 * 8 * 8];
    const float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.5f, 0.25f, 1.0f};
    CHECK_EQ_INT(md_image_preprocess(px, 8, 8, 24, 3, 0, 8, mean, std, a), MD_OK);
    CHECK_EQ_INT(md_image_preprocess(px, 8, 8, 24, 3, 0, 8, NULL, NULL, b), MD_OK);
    /* 8x8 to 8: no resampling, so the values are the input's. */
    CHECK(fabsf(a[0] - ((float)px[0] / 255.0f - 0.5f) / 0.5f) < 1e-6f);
    CHECK(fabsf(a[64 + 1] - ((float)px[4] / 255.0f - 0.5f) / 0.25f) < 1e-6f);
    CHECK(fabsf(b[0] - ((float)px[0] / 255.0f - 0.48145466f) / 0.26862954f) < 1e-6f);
}

/* ---- sampling against ffprobe ---- */

static void check_fps1(const char *name, int want_frames_min)
{
    md_video_params p = params_fps(1.0, 32);
    md_status st = decode_all(fx(name), &p, 0, &g_d);
    CHECK_EQ_INT(st, MD_OK);
    if (st != MD_OK) {
        fprintf(stderr, "  %s: %s\n", name, g_d.err);
        return;
    }
    CHECK(g_d.n >= want_frames_min);
    /* AVI with B-frames shifts every timestamp a frame late, so the last frame ends past the
     * stated duration and its target is delivered too. */
    CHECK(g_d.n == g_d.expected || (g_d.n == g_d.expected + 1 && strstr(name, ".avi")));
    CHECK_EQ_INT(g_d.stats.skipped_packets, 0);
    CHECK_EQ_INT(check_selection(fx(name), &g_d, 1, 1, 0), 0);
    p.sampling = MD_VIDEO_SAMPLE_ALL;
    st = decode_all(fx(name), &p, 0, &g_d);
    CHECK_EQ_INT(st, MD_OK);
    CHECK_EQ_INT(check_all_frames(fx(name), &g_d), 0);
}

static void test_h264_mp4(void)
{
    check_fps1("h264.mp4", 3);
}

static void test_edit_list(void)
{
    check_fps1("edit.mp4", 2);
}

static void test_hevc_mkv(void)
{
    check_fps1("hevc.mkv", 2);
}

static void test_vp9_webm(void)
{
    check_fps1("vp9.webm", 2);
}

static void test_mpeg4_avi(void)
{
    check_fps1("mpeg4.avi", 2);
}

static void test_mjpeg_avi(void)
{
    check_fps1("mjpeg.avi", 1);
}

static void test_msmpeg4_avi(void)
{
    check_fps1("msmpeg4.avi", 2);
}

static void test_vfr_mkv(void)
{
    check_fps1("vfr.mkv", 3);
    /* Faster than some gaps: frames repeat, each still the one shown at its target. */
    md_video_params p = params_fps(7.0, 16);
    CHECK_EQ_INT(decode_all(fx("vfr.mkv"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.n, g_d.expected);
    CHECK_EQ_INT(check_selection(fx("vfr.mkv"), &g_d, 7, 1, 0), 0);
}

static void test_nonzero_start(void)
{
    probed p;
    CHECK_EQ_INT(ffprobe(fx("h264.ts"), &p), 0);
    CHECK(p.start > 0); /* 1.4 s in MPEG-TS */
    probed_free(&p);
    check_fps1("h264.ts", 3);
    CHECK_EQ_INT(g_d.ts[0], 0);
}

/* No timestamps at all: frames are spaced by the frame rate, the length comes from a scan. */
static void test_missing_timestamps(void)
{
    check_fps1("raw.h264", 3);
    CHECK_EQ_INT(g_d.n, 30); /* the ALL pass of check_fps1 */
    CHECK_EQ_INT(g_d.ts[29], 2900);
}

static void test_odd_and_tiny_sizes(void)
{
    check_fps1("odd333.mp4", 1);
    check_fps1("tiny16.mp4", 1);
    /* The 333x187 frames through the decoder give the tensor of the same RGB picture. */
    md_video_params p = params_fps(1.0, 224);
    CHECK_EQ_INT(decode_all(fx("odd333.mp4"), &p, 1, &g_d), MD_OK);
    const md_video_info *info = NULL;
    md_video_decoder *dec = NULL;
    char err[256];
    CHECK_EQ_INT(md_video_decoder_open(fx("odd333.mp4"), &p, NULL, &dec, err, sizeof err), MD_OK);
    if (dec) {
        info = md_video_decoder_info(dec);
        CHECK_EQ_INT(info->width, 333);
        CHECK_EQ_INT(info->height, 187);
        CHECK_STR(info->codec, "h264");
    }
    md_video_decoder_close(dec);
}

static void test_fps_variants(void)
{
    const struct {
        double fps;
        long long num, den;
    } rates[] = {{2.5, 5, 2}, {0.5, 1, 2}, {30, 30, 1}, {3.0, 3, 1}};
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        md_video_params p = params_fps(rates[i].fps, 16);
        CHECK_EQ_INT(decode_all(fx("h264.mp4"), &p, 0, &g_d), MD_OK);
        CHECK_EQ_INT(g_d.n, g_d.expected);
        CHECK_EQ_INT(g_d.n, (long long)ceil(3.0 * rates[i].fps)); /* 3 s */
        CHECK_EQ_INT(check_selection(fx("h264.mp4"), &g_d, rates[i].num, rates[i].den, 0), 0);
    }
}

static void test_count_mode(void)
{
    md_video_params p = params_fps(1.0, 16);
    p.sampling = MD_VIDEO_SAMPLE_COUNT;
    p.count = 7;
    CHECK_EQ_INT(decode_all(fx("h264.mp4"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.expected, 7);
    CHECK_EQ_INT(g_d.n, 7);
    /* Middles of 7 equal spans of 3 s: 214, 643, ..., 2786 ms; frames every 100 ms. */
    for (int k = 0; k < g_d.n; k++) {
        long long target = (long long)((2 * k + 1) * 3000.0 / 14 + 0.5);
        CHECK(llabs(g_d.target[k] - target) <= 1);
        CHECK(g_d.ts[k] <= g_d.target[k] && g_d.target[k] - g_d.ts[k] < 100);
    }
    /* More samples than frames: frames repeat, never beyond the end. */
    p.count = 45;
    CHECK_EQ_INT(decode_all(fx("h264.mp4"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.n, 45);
    CHECK(g_d.ts[44] == 2900);
}

/* Exact mode lets the decoder skip non-reference frames no target picks; the picked frames must
 * be bit-identical to decoding everything. */
static void test_pixels_match_every_frame(void)
{
    const char *names[] = {"h264.mp4", "hevc.mkv", "mpeg4.avi", "vfr.mkv"};
    for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
        md_video_params p = params_fps(3.0, 24);
        CHECK_EQ_INT(decode_all(fx(names[f]), &p, 1, &g_d), MD_OK);
        p.sampling = MD_VIDEO_SAMPLE_ALL;
        CHECK_EQ_INT(decode_all(fx(names[f]), &p, 1, &g_d2), MD_OK);
        size_t plane3 = 3 * 24 * 24;
        int matched = 0;
        for (int k = 0; k < g_d.n; k++)
            for (int i = 0; i < g_d2.n; i++)
                if (g_d2.ts[i] == g_d.ts[k]) {
                    matched += memcmp(g_d.px + plane3 * k, g_d2.px + plane3 * i, sizeof(float) * plane3) == 0;
                    break;
                }
        CHECK_EQ_INT(matched, g_d.n);
        if (matched != g_d.n)
            fprintf(stderr, "  %s: %d of %d sampled frames equal the full decode\n", names[f], matched, g_d.n);
    }
}

/* Our RGB conversion is the ffmpeg CLI's (-pix_fmt rgb24), so a frame through the decoder equals
 * the CLI's frame through md_image_preprocess; for the rotated file the CLI turns the picture
 * itself (autorotate). */
static int cli_frame_tensor(const char *path, int index, int w, int h, int size, float *out)
{
    char sel[64], name[64];
    snprintf(sel, sizeof sel, "select=eq(n\\,%d)", index);
    snprintf(name, sizeof name, "frame%d.rgb", index);
    const char *args[] = {"-i", path, "-vf", sel, "-vsync", "0", "-frames:v", "1", "-pix_fmt", "rgb24",
                          "-f", "rawvideo", fx(name), NULL};
    if (run_ffmpeg(args) != 0)
        return -1;
    size_t len;
    unsigned char *rgb = tu_read_file(fx(name), &len);
    int rc = rgb && len == (size_t)w * h * 3 &&
                     md_image_preprocess(rgb, w, h, w * 3, 3, 0, size, NULL, NULL, out) == MD_OK
                 ? 0
                 : -1;
    free(rgb);
    return rc;
}

static void test_rgb_matches_ffmpeg_cli(void)
{
    md_video_params p = params_fps(1.0, 64);
    p.sampling = MD_VIDEO_SAMPLE_ALL;
    CHECK_EQ_INT(decode_all(fx("h264.mp4"), &p, 1, &g_d), MD_OK);
    static float want[3 * 64 * 64];
    CHECK_EQ_INT(cli_frame_tensor(fx("h264.mp4"), 7, 160, 120, 64, want), 0);
    CHECK(g_d.n > 7 && memcmp(g_d.px + 7 * 3 * 64 * 64, want, sizeof want) == 0);
    CHECK(g_d.n > 8 && memcmp(g_d.px + 8 * 3 * 64 * 64, want, sizeof want) != 0);
}

static void test_rotation(void)
{
    md_video_params p = params_fps(1.0, 64);
    md_video_decoder *dec = NULL;
    char err[256];
    CHECK_EQ_INT(md_video_decoder_open(fx("rot90.mp4"), &p, NULL, &dec, err, sizeof err), MD_OK);
    if (dec)
        CHECK_EQ_INT(md_video_decoder_info(dec)->rotation, 270);
    md_video_decoder_close(dec);
    CHECK_EQ_INT(decode_all(fx("rot90.mp4"), &p, 1, &g_d), MD_OK);
    static float want[3 * 64 * 64];
    /* The CLI's autorotated frame is 120 wide, 160 high. */
    CHECK_EQ_INT(cli_frame_tensor(fx("rot90.mp4"), 0, 120, 160, 64, want), 0);
    CHECK(g_d.n >= 1 && memcmp(g_d.px, want, sizeof want) == 0);
    CHECK_EQ_INT(decode_all(fx("h264.mp4"), &p, 1, &g_d2), MD_OK);
    CHECK(g_d2.n >= 1 && memcmp(g_d2.px, want, sizeof want) != 0);
}

static void test_keyframe_mode(void)
{
    /* Keyframes every 0.5 s, sampled at 1 fps: keyframe mode applies. */
    md_video_params p = params_fps(1.0, 16);
    p.keyframes_only = 1;
    CHECK_EQ_INT(decode_all(fx("g5.mp4"), &p, 1, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.keyframe_mode, 1);
    CHECK_EQ_INT(g_d.n, 4);
    CHECK_EQ_INT(g_d.n, g_d.expected);
    CHECK_EQ_INT(check_selection(fx("g5.mp4"), &g_d, 1, 1, 1), 0);
    /* Only the keyframes some target needs were decoded. */
    CHECK(g_d.stats.frames_decoded <= g_d.n);
    CHECK(g_d.stats.keyframes >= 8);
    /* At 1 fps with a keyframe every 0.5 s every target falls on a keyframe: the same pixels
     * as exact decoding. */
    p.keyframes_only = 0;
    CHECK_EQ_INT(decode_all(fx("g5.mp4"), &p, 1, &g_d2), MD_OK);
    CHECK_EQ_INT(g_d2.keyframe_mode, 0);
    CHECK(g_d2.n == g_d.n && memcmp(g_d.px, g_d2.px, sizeof(float) * 3 * 16 * 16 * (size_t)g_d.n) == 0);
    /* Count mode too. */
    p.keyframes_only = 1;
    p.sampling = MD_VIDEO_SAMPLE_COUNT;
    p.count = 5;
    CHECK_EQ_INT(decode_all(fx("g5.mp4"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.keyframe_mode, 1);
    CHECK_EQ_INT(g_d.n, 5);
    for (int k = 0; k < g_d.n; k++)
        CHECK(g_d.kf[k] == 1 && g_d.ts[k] % 500 == 0 && g_d.ts[k] <= g_d.target[k] && g_d.target[k] - g_d.ts[k] < 500);
    /* The same from Matroska, whose keyframes are counted by a scan rather than the index. */
    p.sampling = MD_VIDEO_SAMPLE_FPS;
    CHECK_EQ_INT(decode_all(fx("g5.mkv"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.keyframe_mode, 1);
    CHECK_EQ_INT(check_selection(fx("g5.mkv"), &g_d, 1, 1, 1), 0);
    /* Too few keyframes (one in 3 s at 4 fps): decoding stays exact. */
    p = params_fps(4.0, 16);
    p.keyframes_only = 1;
    CHECK_EQ_INT(decode_all(fx("h264.mp4"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.keyframe_mode, 0);
    CHECK_EQ_INT(check_selection(fx("h264.mp4"), &g_d, 4, 1, 0), 0);
}

static void test_batches(void)
{
    md_video_params p = params_fps(5.0, 8);
    p.batch = 4;
    md_video_decoder *dec = NULL;
    char err[256];
    CHECK_EQ_INT(md_video_decoder_open(fx("h264.mp4"), &p, NULL, &dec, err, sizeof err), MD_OK);
    if (!dec)
        return;
    CHECK_EQ_INT(md_video_decoder_expected(dec), 15);
    md_video_batch b;
    int sizes[8], n = 0;
    long long next = 0;
    while (md_video_decoder_next(dec, &b) == MD_OK && b.n > 0 && n < 8) {
        CHECK_EQ_INT(b.first_index, next);
        next += b.n;
        sizes[n++] = b.n;
    }
    CHECK_EQ_INT(n, 4);
    CHECK(n == 4 && sizes[0] == 4 && sizes[1] == 4 && sizes[2] == 4 && sizes[3] == 3);
    /* Done stays done. */
    CHECK_EQ_INT(md_video_decoder_next(dec, &b), MD_OK);
    CHECK_EQ_INT(b.n, 0);
    md_video_decoder_close(dec);
}

/* Resident memory now, in KiB (Linux /proc; the peak from getrusage elsewhere). */
static long rss_kb(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    if (resident > 0)
        return resident * (sysconf(_SC_PAGESIZE) / 1024);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* 20 minutes in constant memory: resident memory after the first samples and its highest point
 * over the other 19 minutes stay together. */
static void test_long_video_constant_memory(void)
{
    md_video_params p = params_fps(1.0, 32);
    md_video_decoder *dec = NULL;
    char err[256];
    CHECK_EQ_INT(md_video_decoder_open(fx("long.mp4"), &p, NULL, &dec, err, sizeof err), MD_OK);
    if (!dec)
        return;
    CHECK_EQ_INT(md_video_decoder_expected(dec), 1200);
    md_video_batch b;
    long long n = 0, last_ts = -1;
    long rss_early = 0, rss_end = 0;
    int ordered = 1;
    while (md_video_decoder_next(dec, &b) == MD_OK && b.n > 0) {
        for (int i = 0; i < b.n; i++) {
            ordered &= b.frames[i].ts_ms == (b.first_index + i) * 1000 && b.frames[i].ts_ms > last_ts;
            last_ts = b.frames[i].ts_ms;
        }
        n += b.n;
        long rss = rss_kb();
        if (!rss_early && n >= 64)
            rss_early = rss;
        if (rss > rss_end)
            rss_end = rss;
    }
    md_video_decoder_close(dec);
    CHECK_EQ_INT(n, 1200);
    CHECK(ordered);
    fprintf(stderr, "  1200 samples of 6000 frames: RSS %ld KiB after 64 samples, at most %ld KiB after\n",
            rss_early, rss_end);
    if (UNDER_SANITIZER)
        md_test_skip("RSS growth check not run: the sanitizer's allocator keeps freed memory");
    else
        CHECK(rss_end - rss_early < 2048);
}

/* ---- damaged files and errors ---- */

static void test_truncated(void)
{
    md_video_params p = params_fps(5.0, 16);
    md_status st = decode_all(fx("truncated.mp4"), &p, 0, &g_d);
    CHECK_EQ_INT(st, MD_OK);
    if (st != MD_OK)
        fprintf(stderr, "  %s\n", g_d.err);
    CHECK_EQ_INT(g_d.expected, 15);
    CHECK(g_d.n > 0 && g_d.n < 15); /* what was there */
    CHECK(g_d.stats.skipped_packets > 0);
    for (int k = 1; k < g_d.n; k++)
        CHECK(g_d.ts[k] >= g_d.ts[k - 1]);
}

static void test_corrupt_middle(void)
{
    md_video_params p = params_fps(5.0, 16);
    md_status st = decode_all(fx("flipped.mp4"), &p, 0, &g_d);
    CHECK_EQ_INT(st, MD_OK);
    if (st != MD_OK)
        fprintf(stderr, "  %s\n", g_d.err);
    /* The index is intact, so every target still gets a frame; the damage is counted. */
    CHECK_EQ_INT(g_d.n, 15);
    CHECK(g_d.stats.skipped_packets + g_d.stats.corrupt_frames > 0);
    fprintf(stderr, "  flipped bytes: %lld packets, %lld skipped, %lld frames with concealed errors\n",
            g_d.stats.packets, g_d.stats.skipped_packets, g_d.stats.corrupt_frames);
    for (int k = 1; k < g_d.n; k++)
        CHECK(g_d.ts[k] >= g_d.ts[k - 1]);
}

static void test_nothing_decodable(void)
{
    md_video_params p = params_fps(1.0, 16);
    md_status st = decode_all(fx("allbad.mp4"), &p, 0, &g_d);
    CHECK_EQ_INT(st, MD_ERR_MEDIA);
    CHECK(strstr(g_d.err, "no decodable frames") != NULL);
    CHECK_EQ_INT(g_d.n, 0);
    CHECK(g_d.stats.skipped_packets > 0);
}

static void expect_open_error(const char *path, md_status want, const char *needle)
{
    md_video_decoder *dec = (md_video_decoder *)(uintptr_t)1;
    char err[256] = "";
    md_video_params p = md_video_default_params();
    md_status st = md_video_decoder_open(path, &p, NULL, &dec, err, sizeof err);
    CHECK_EQ_INT(st, want);
    CHECK(dec == NULL);
    if (!strstr(err, needle)) {
        fprintf(stderr, "  %s: message \"%s\" lacks \"%s\"\n", path, err, needle);
        CHECK(0);
    }
}

static void test_open_errors(void)
{
    expect_open_error(fx("noise.mp4"), MD_ERR_MEDIA, "not a video file");
    expect_open_error(fx("empty.mp4"), MD_ERR_MEDIA, "empty");
    expect_open_error(fx("audio.m4a"), MD_ERR_MEDIA, "audio only");
    expect_open_error(fx("huge.y4m"), MD_ERR_MEDIA, "10000x10000 exceed the limit");
    expect_open_error(fx("unknown.avi"), MD_ERR_UNSUPPORTED, "unknown video codec (tag QQQQ)");
    expect_open_error(fx("still.png"), MD_ERR_MEDIA, "still image");
    expect_open_error(fx("missing.mp4"), MD_ERR_NOT_FOUND, "not found");
    expect_open_error(g_dir, MD_ERR_MEDIA, "not a regular file");
}

static void test_bad_params(void)
{
    md_video_decoder *dec = NULL;
    char err[256];
    md_video_params p = md_video_default_params();
    p.fps = 0;
    CHECK_EQ_INT(md_video_decoder_open(fx("h264.mp4"), &p, NULL, &dec, err, sizeof err), MD_ERR_INVALID);
    CHECK(strstr(err, "fps") != NULL);
    p = md_video_default_params();
    p.size = 0;
    CHECK_EQ_INT(md_video_decoder_open(fx("h264.mp4"), &p, NULL, &dec, err, sizeof err), MD_ERR_INVALID);
    p = md_video_default_params();
    p.batch = 0;
    CHECK_EQ_INT(md_video_decoder_open(fx("h264.mp4"), &p, NULL, &dec, err, sizeof err), MD_ERR_INVALID);
    p = md_video_default_params();
    p.std[1] = 0;
    CHECK_EQ_INT(md_video_decoder_open(fx("h264.mp4"), &p, NULL, &dec, err, sizeof err), MD_ERR_INVALID);
    CHECK_EQ_INT(md_video_decoder_open(NULL, &p, NULL, &dec, err, sizeof err), MD_ERR_INVALID);
    CHECK(dec == NULL);
    /* NULL params are the defaults. */
    CHECK_EQ_INT(md_video_decoder_open(fx("h264.mp4"), NULL, NULL, &dec, err, sizeof err), MD_OK);
    if (dec)
        CHECK_EQ_INT(md_video_decoder_expected(dec), 3);
    md_video_decoder_close(dec);
    md_video_decoder_close(NULL);
}

static int g_calls;
static int stop_after_20(void *ctx)
{
    (void)ctx;
    return ++g_calls > 20;
}

static void test_interrupt(void)
{
    md_video_params p = params_fps(10.0, 16);
    p.interrupt = stop_after_20;
    g_calls = 0;
    md_video_decoder *dec = NULL;
    char err[256];
    CHECK_EQ_INT(md_video_decoder_open(fx("h264.mp4"), &p, NULL, &dec, err, sizeof err), MD_OK);
    if (!dec)
        return;
    md_video_batch b;
    md_status st;
    int batches = 0;
    while ((st = md_video_decoder_next(dec, &b)) == MD_OK && b.n > 0)
        batches++;
    CHECK_EQ_INT(st, MD_ERR_CANCELLED);
    CHECK(batches < 2);
    CHECK_EQ_INT(b.n, 0);
    CHECK_STR(md_video_decoder_error(dec), "cancelled");
    CHECK_EQ_INT(md_video_decoder_next(dec, &b), MD_ERR_CANCELLED);
    md_video_decoder_close(dec);
}

static void test_load_image(void)
{
    static float a[3 * 64 * 64];
    char err[256];
    md_video_params p = params_fps(1.0, 64);
    CHECK_EQ_INT(decode_all(fx("h264.mp4"), &p, 1, &g_d), MD_OK);
    CHECK_EQ_INT(md_video_load_image(fx("h264.mp4"), 64, NULL, NULL, a, err, sizeof err), MD_OK);
    CHECK(g_d.n > 0 && memcmp(a, g_d.px, sizeof a) == 0); /* a video's first frame */
    CHECK_EQ_INT(md_video_load_image(fx("rot90.mp4"), 64, NULL, NULL, a, err, sizeof err), MD_OK);
    CHECK_EQ_INT(decode_all(fx("rot90.mp4"), &p, 1, &g_d), MD_OK);
    CHECK(g_d.n > 0 && memcmp(a, g_d.px, sizeof a) == 0); /* upright */
    CHECK_EQ_INT(md_video_load_image(fx("still.png"), 64, NULL, NULL, a, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_video_load_image(fx("noise.mp4"), 64, NULL, NULL, a, err, sizeof err), MD_ERR_MEDIA);
    CHECK_EQ_INT(md_video_load_image(fx("audio.m4a"), 64, NULL, NULL, a, err, sizeof err), MD_ERR_MEDIA);
    CHECK(strstr(err, "audio") != NULL);
    CHECK_EQ_INT(md_video_load_image(fx("empty.mp4"), 64, NULL, NULL, a, err, sizeof err), MD_ERR_MEDIA);
    CHECK_EQ_INT(md_video_load_image(fx("missing.png"), 64, NULL, NULL, a, err, sizeof err), MD_ERR_NOT_FOUND);
    CHECK_EQ_INT(md_video_load_image(fx("huge.y4m"), 64, NULL, NULL, a, err, sizeof err), MD_ERR_MEDIA);
    CHECK_EQ_INT(md_video_load_image(fx("still.png"), 0, NULL, NULL, a, err, sizeof err), MD_ERR_INVALID);
}

/* ---- hostile files (issue 11) ---- */

/* Files that open other files: refused by the decoder and by picture queries as by the probe;
 * opening them is allowed only when asked for. */
static void test_refuse_nested(void)
{
    const char *names[] = {"list.m3u8", "concat.txt", "dash.mpd", "cam.mlv"};
    static float a[3 * 32 * 32];
    char err[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        expect_open_error(fx(names[i]), MD_ERR_MEDIA, "refused");
        md_status st = md_video_load_image(fx(names[i]), 32, NULL, NULL, a, err, sizeof err);
        CHECK_EQ_INT(st, MD_ERR_MEDIA);
        if (!strstr(err, "refused")) {
            fprintf(stderr, "  load_image %s: %s \"%s\"\n", names[i], md_status_str(st), err);
            CHECK(0);
        }
    }
    /* Allowed, the playlist's segment (elsewhere) is what is decoded: 1 s. */
    md_video_params p = params_fps(1.0, 32);
    p.open.allow_nested = 1;
    CHECK_EQ_INT(decode_all(fx("list.m3u8"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.n, 1);
    md_video_open_opts allow = {.allow_nested = 1};
    CHECK_EQ_INT(md_video_load_image_ex(fx("concat.txt"), &allow, 32, NULL, NULL, a, err, sizeof err), MD_OK);
}

/* A file named like an image2 pattern is that one file, never the sequence it spells. */
static void test_image_pattern_is_one_file(void)
{
    static float lit[3 * 32 * 32], same[3 * 32 * 32], other[3 * 32 * 32];
    char err[256];
    CHECK_EQ_INT(md_video_load_image(fx("seq%03d.png"), 32, NULL, NULL, lit, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_video_load_image(fx("still.png"), 32, NULL, NULL, same, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_video_load_image(fx("seq001.png"), 32, NULL, NULL, other, err, sizeof err), MD_OK);
    CHECK(memcmp(lit, same, sizeof lit) == 0);
    CHECK(memcmp(lit, other, sizeof lit) != 0);
    /* Even with nested opens allowed. */
    md_video_open_opts allow = {.allow_nested = 1};
    CHECK_EQ_INT(md_video_load_image_ex(fx("seq%03d.png"), &allow, 32, NULL, NULL, lit, err, sizeof err), MD_OK);
    CHECK(memcmp(lit, same, sizeof lit) == 0);
}

/* 10,240 hours between two frames: the job expects and gets the frames' samples only, at once,
 * and the gap is reported. */
static void test_gap(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(md_video_probe(fx("gap.mkv"), &vi, NULL, NULL, err, sizeof err), MD_OK);
    CHECK_EQ_INT(vi.n_gaps, 1);
    for (int with_probe = 1; with_probe >= 0; with_probe--) {
        md_video_params p = params_fps(10.0, 16);
        md_video_decoder *dec = NULL;
        double t0 = now_s();
        CHECK_EQ_INT(md_video_decoder_open(fx("gap.mkv"), &p, with_probe ? &vi : NULL, &dec, err, sizeof err), MD_OK);
        if (!dec)
            return;
        long long expected = md_video_decoder_expected(dec);
        md_video_batch b;
        long long n = 0, before = 0, after = 0;
        md_status st;
        while ((st = md_video_decoder_next(dec, &b)) == MD_OK && b.n > 0)
            for (int i = 0; i < b.n; i++, n++) {
                before += b.frames[i].ts_ms < 500;
                after += b.frames[i].ts_ms >= 36864000500LL && b.frames[i].ts_ms < 36864001000LL;
            }
        double dt = now_s() - t0;
        md_video_decode_stats ds;
        md_video_decoder_stats(dec, &ds);
        md_video_decoder_close(dec);
        fprintf(stderr, "  gap.mkv (%s): expected %lld, %lld samples, %lld gap of %lld ms, %.3f s\n",
                with_probe ? "probed" : "no probe", expected, n, ds.gaps, ds.gap_ms, dt);
        CHECK_EQ_INT(st, MD_OK);
        /* Targets every 100 ms: 0..400 ms before the gap, 36,864,000.5..0.9 s after it. */
        CHECK_EQ_INT(n, 10);
        CHECK_EQ_INT(before, 5);
        CHECK_EQ_INT(after, 5);
        CHECK_EQ_INT(expected, 10);
        CHECK_EQ_INT(ds.gaps, 1);
        CHECK_EQ_INT(ds.gap_ms, 36864000000LL);
        CHECK_EQ_INT(ds.end_ms, 36864001000LL);
        CHECK_EQ_INT(ds.truncated, 0);
        CHECK(dt < 0.5);
    }
    /* At 1 fps no target but the first falls on a frame; keyframe mode is not used with gaps. */
    md_video_params p = params_fps(1.0, 16);
    p.keyframes_only = 1;
    CHECK_EQ_INT(decode_all(fx("gap.mkv"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.n, 1);
    CHECK_EQ_INT(g_d.keyframe_mode, 0);
    CHECK_EQ_INT(g_d.stats.gaps, 1);
    /* Every frame: all ten, the gap counted too. */
    p = params_fps(1.0, 16);
    p.sampling = MD_VIDEO_SAMPLE_ALL;
    CHECK_EQ_INT(decode_all(fx("gap.mkv"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.n, 10);
    CHECK_EQ_INT(g_d.stats.gaps, 1);
    /* An ordinary clip has no gap. */
    p = params_fps(1.0, 16);
    CHECK_EQ_INT(decode_all(fx("h264.mp4"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.stats.gaps, 0);
    CHECK_EQ_INT(g_d.stats.gap_ms, 0);
}

static atomic_int g_stop;
static int stop_flag(void *ctx)
{
    (void)ctx;
    return atomic_load(&g_stop);
}

/* Seconds from raising the interrupt after the first SKIP batches until next() stops
 * (cancelled, or done when it finishes first); < 0 when it was still delivering after LIMIT
 * seconds. *ST gets how it stopped. */
static double stop_latency(const char *path, md_video_params p, int skip, double limit, md_status *st)
{
    md_video_decoder *dec = NULL;
    char err[256];
    atomic_store(&g_stop, 0);
    p.interrupt = stop_flag;
    *st = md_video_decoder_open(path, &p, NULL, &dec, err, sizeof err);
    if (*st != MD_OK)
        return -1;
    md_video_batch b;
    for (int i = 0; i < skip && (i == 0 || (*st == MD_OK && b.n > 0)); i++)
        *st = md_video_decoder_next(dec, &b);
    double t0 = now_s(), dt = -1;
    atomic_store(&g_stop, 1);
    while (*st == MD_OK && b.n > 0 && now_s() - t0 < limit)
        *st = md_video_decoder_next(dec, &b);
    if (*st != MD_OK || b.n == 0)
        dt = now_s() - t0;
    md_video_decoder_close(dec);
    return dt;
}

/* A stop takes effect within 0.2 s wherever the decoder is: in the middle of a long video
 * sampled 1000 times a second, and on the gap file once the 5 samples before the gap are out
 * (the sampler then faced 368 M targets at 10 fps and never asked). */
static void test_interrupt_latency(void)
{
    md_status st;
    md_video_params p = params_fps(10.0, 16);
    p.batch = 1;
    double dt = stop_latency(fx("gap.mkv"), p, 8, 3.0, &st);
    fprintf(stderr, "  gap.mkv: stopped %.3f s after the interrupt (%s)\n", dt, md_status_str(st));
    CHECK(dt >= 0 && dt < 0.2);
    CHECK(st == MD_OK || st == MD_ERR_CANCELLED);
    p = params_fps(1000.0, 16);
    dt = stop_latency(fx("long.mp4"), p, 1, 3.0, &st);
    fprintf(stderr, "  long.mp4 at 1000 fps: stopped %.3f s after the interrupt (%s)\n", dt, md_status_str(st));
    CHECK(dt >= 0 && dt < 0.2);
    CHECK_EQ_INT(st, MD_ERR_CANCELLED);
}

/* An interrupt during the decoder's open (FFmpeg then stops with half-filled parameters) is a
 * cancellation, whichever of its first checks it comes at, and so is one right after it (the
 * first batch says so); a fuzzed h263 upload said "video has invalid dimensions 0x0" instead
 * (found by fuzz_http). */
static int g_open_checks, g_open_stop_at;
static int stop_at_check(void *ctx)
{
    (void)ctx;
    return ++g_open_checks >= g_open_stop_at;
}

static void test_interrupt_during_open(void)
{
    int cancelled = 0, tried = 0;
    for (g_open_stop_at = 1; g_open_stop_at <= 12; g_open_stop_at++) {
        md_video_params p = params_fps(1.0, 16);
        p.interrupt = stop_at_check;
        g_open_checks = 0;
        md_video_decoder *d = NULL;
        char err[256] = "";
        md_status st = md_video_decoder_open(fx("long.mp4"), &p, NULL, &d, err, sizeof err);
        if (st == MD_OK) {
            /* The stop came after the open's own work: the first batch says cancelled. */
            md_video_batch b;
            st = md_video_decoder_next(d, &b);
            snprintf(err, sizeof err, "%s", md_video_decoder_error(d));
        }
        md_video_decoder_close(d);
        if (g_open_checks < g_open_stop_at)
            break; /* asked fewer times than this: every earlier stop was tried */
        tried++;
        if (st != MD_ERR_CANCELLED)
            fprintf(stderr, "  stop at check %d: %s (%s)\n", g_open_stop_at, md_status_str(st), err);
        CHECK_EQ_INT(st, MD_ERR_CANCELLED);
        cancelled += st == MD_ERR_CANCELLED;
    }
    CHECK(tried > 0);
    CHECK_EQ_INT(cancelled, tried);
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* A 68-byte PNG claiming 16000 x 16000 is refused before anything that size is allocated (it
 * cost 746 MB per picture query); so is a picture wider than any codec allows. */
static void test_picture_limits(void)
{
    static float a[3 * 32 * 32];
    char err[256];
    md_video_info vi;
    long before = peak_rss_kb();
    double t0 = now_s();
    md_status st = md_video_load_image(fx("bomb.png"), 32, NULL, NULL, a, err, sizeof err);
    double dt = now_s() - t0;
    long grew = peak_rss_kb() - before;
    fprintf(stderr, "  bomb.png: %s \"%s\" in %.3f s, peak RSS +%ld KiB\n", md_status_str(st), err, dt, grew);
    CHECK_EQ_INT(st, MD_ERR_MEDIA);
    CHECK(strstr(err, "16000x16000 exceed the limit") != NULL);
    CHECK(grew < 64 * 1024);
    CHECK(dt < 0.5);
    CHECK_EQ_INT(md_video_probe(fx("bomb.png"), &vi, NULL, NULL, err, sizeof err), MD_ERR_MEDIA);
    CHECK(strstr(err, "16000x16000 exceed the limit") != NULL);
    CHECK(peak_rss_kb() - before < 64 * 1024);
    expect_open_error(fx("wide.y4m"), MD_ERR_MEDIA, "20000x8 exceed the limit of 16384 pixels per side");
    CHECK_EQ_INT(md_video_load_image(fx("wide.y4m"), 32, NULL, NULL, a, err, sizeof err), MD_ERR_MEDIA);
    CHECK(strstr(err, "per side") != NULL);
    /* max_pixels is a setting up to the limit, not past it. */
    md_video_params p = md_video_default_params();
    md_video_decoder *dec = NULL;
    p.max_pixels = MD_VIDEO_MAX_PIXELS + 1;
    CHECK_EQ_INT(md_video_decoder_open(fx("h264.mp4"), &p, NULL, &dec, err, sizeof err), MD_ERR_INVALID);
}

/* A truncated file says so, and how far its frames reach: the part that was indexed. */
static void test_truncated_reported(void)
{
    md_video_params p = params_fps(5.0, 16);
    CHECK_EQ_INT(decode_all(fx("truncated.mp4"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.stats.truncated, 1);
    /* 60 % of 3 s; the last frames may be damaged. */
    CHECK(g_d.stats.end_ms > 500 && g_d.stats.end_ms <= 1900);
    CHECK(g_d.n > 0 && g_d.ts[g_d.n - 1] < g_d.stats.end_ms);
    CHECK_EQ_INT(decode_all(fx("h264.mp4"), &p, 0, &g_d), MD_OK);
    CHECK_EQ_INT(g_d.stats.truncated, 0);
    CHECK_EQ_INT(g_d.stats.end_ms, 3000);
}

/* Closing a decoder gives its frames back: decoding a 1080p clip again and again leaves the
 * process no bigger (it grew ~12 MB here, ~30 MB a job for 4 s clips up to ~80 MB, with the
 * frames kept in the decoder's threads' malloc arenas). */
static void test_memory_released(void)
{
    if (UNDER_SANITIZER) {
        md_test_skip("resident memory not measured: the sanitizer's allocator keeps freed memory");
        return;
    }
    md_video_params p = params_fps(5.0, 224);
    long base = 0, worst = 0;
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(decode_all(fx("hd.mp4"), &p, 0, &g_d), MD_OK);
        long r = rss_kb();
        if (i == 0)
            base = r; /* after one run: codec tables and thread stacks are in */
        else if (r - base > worst)
            worst = r - base;
    }
    fprintf(stderr, "  hd.mp4 x4: RSS %ld KiB after the first, at most +%ld KiB after the others\n", base, worst);
    CHECK(g_d.n == 10);
    CHECK(worst < 8 * 1024);
}

/* ---- real footage ---- */

static int shared_media(const char *name, char *out, size_t outlen)
{
    const char *env = getenv("MD_SHARED_MEDIA");
    if (env && *env)
        snprintf(out, outlen, "%s/%s", env, name);
    else
        snprintf(out, outlen, "%s../shared/media/%s", g_root, name);
    return access(out, R_OK) == 0;
}

static int check_real(const char *path, int want_w, int want_h, int size)
{
    md_video_params p = params_fps(1.0, size);
    md_status st = decode_all(path, &p, 0, &g_d);
    CHECK_EQ_INT(st, MD_OK);
    if (st != MD_OK)
        return 0;
    CHECK_EQ_INT(g_d.n, g_d.expected);
    CHECK_EQ_INT(g_d.stats.skipped_packets, 0);
    CHECK_EQ_INT(check_selection(path, &g_d, 1, 1, 0), 0);
    md_video_decoder *dec = NULL;
    char err[256];
    if (md_video_decoder_open(path, &p, NULL, &dec, err, sizeof err) == MD_OK) {
        CHECK_EQ_INT(md_video_decoder_info(dec)->width, want_w);
        CHECK_EQ_INT(md_video_decoder_info(dec)->height, want_h);
    }
    md_video_decoder_close(dec);
    return 1;
}

static void run_real_clips(void)
{
    static const struct {
        const char *name;
        int w, h;
    } clips[] = {{"parakeet-ladder.mp4", 406, 720}, {"lion-monkey.mp4", 404, 720}};
    char path[512];
    char name[128];
    for (size_t i = 0; i < sizeof clips / sizeof clips[0]; i++) {
        snprintf(name, sizeof name, "real_clip %s", clips[i].name);
        if (!md_test_begin(name))
            continue;
        if (!shared_media(clips[i].name, path, sizeof path)) {
            md_test_skip("not found in $MD_SHARED_MEDIA or ../shared/media");
        } else {
            check_real(path, clips[i].w, clips[i].h, 224);
            fprintf(stderr, "  %s: %d samples\n", clips[i].name, g_d.n);
        }
        md_test_end(name);
    }
    const char *dog = "/usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4";
    snprintf(name, sizeof name, "real_clip VID_20191220_170832.mp4 1080p");
    if (!md_test_begin(name))
        return;
    if (access(dog, R_OK) != 0) {
        md_test_skip("forensics-samples-files not installed");
    } else {
        check_real(dog, 1920, 1080, 224);
        fprintf(stderr, "  VID_20191220_170832.mp4: %d samples\n", g_d.n);
    }
    md_test_end(name);
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    md_video_global_init();
    md_log_set_level(MD_LOG_ERROR); /* damaged fixtures make FFmpeg warn, on purpose */
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/md_test_decode.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (!find_root()) {
        fprintf(stderr, "not ok find_root: tests/fixtures/preprocess not found\n");
        md_t_failed++;
    } else {
        RUN(test_preprocess_matches_clip_image_processor);
    }
    RUN(test_preprocess_rotation);
    RUN(test_preprocess_mean_std);

    const char *version[] = {"ffprobe", "-version", NULL};
    char *v = capture(version);
    const char *fversion[] = {"-version", NULL};
    /* The decoder cases need ffmpeg and ffprobe: without them each is counted as skipped. A
     * failure to make the fixtures with working tools is a failure (the cases are not run). */
    if (!v || run_ffmpeg(fversion) != 0) {
        md_test_skip_rest("no working ffmpeg/ffprobe on PATH to make the fixtures");
    } else if (make_fixtures() != 0 || make_hostile_fixtures() != 0) {
        fprintf(stderr, "not ok make_fixtures\n");
        md_t_failed++;
        md_test_skip_rest("make_fixtures failed");
    }
    RUN(test_h264_mp4);
    RUN(test_edit_list);
    RUN(test_hevc_mkv);
    RUN(test_vp9_webm);
    RUN(test_mpeg4_avi);
    RUN(test_mjpeg_avi);
    RUN(test_msmpeg4_avi);
    RUN(test_vfr_mkv);
    RUN(test_nonzero_start);
    RUN(test_missing_timestamps);
    RUN(test_odd_and_tiny_sizes);
    RUN(test_fps_variants);
    RUN(test_count_mode);
    RUN(test_pixels_match_every_frame);
    RUN(test_rgb_matches_ffmpeg_cli);
    RUN(test_rotation);
    RUN(test_keyframe_mode);
    RUN(test_batches);
    RUN(test_long_video_constant_memory);
    RUN(test_truncated);
    RUN(test_corrupt_middle);
    RUN(test_nothing_decodable);
    RUN(test_open_errors);
    RUN(test_bad_params);
    RUN(test_interrupt);
    RUN(test_load_image);
    RUN(test_refuse_nested);
    RUN(test_image_pattern_is_one_file);
    RUN(test_gap);
    RUN(test_interrupt_latency);
    RUN(test_interrupt_during_open);
    RUN(test_picture_limits);
    RUN(test_truncated_reported);
    RUN(test_memory_released);
    run_real_clips();
    md_test_skip_rest(NULL);
    free(v);
    free(g_d.px);
    free(g_d2.px);
    tu_remove_dir(g_dir);
    return md_test_summary("test_decode");
}
