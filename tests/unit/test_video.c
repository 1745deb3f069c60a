/* test_video.c - unit tests of video/probe.c (md_video_probe); the decoder is tested in test_decode.c.
 *
 * Fixtures are made at run time with the ffmpeg CLI (found via PATH) in a mkdtemp directory that
 * is removed at the end, so nothing binary is committed. Without ffmpeg the fixture cases are
 * counted as skipped and only the cases that need no encoder run. The shared sample clip is probed when
 * present: $MD_SHARED_MEDIA/parakeet-ladder.mp4, else ../shared/media/ beside the repository root.
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "testutil.h"

#include "../../base/log.h"
#include "../../base/status.h"
#include "../../video/video.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char g_dir[256];
static int g_have_ffmpeg;

static const char *fixture(const char *name)
{
    static char paths[16][512];
    static int next;
    char *p = paths[next++ % 16];
    snprintf(p, sizeof paths[0], "%s/%s", g_dir, name);
    return p;
}

/* Runs ffmpeg with ARGS (NULL-terminated, without the program name; up to ~250); 0 on success. */
static int run_ffmpeg(const char *const *args)
{
    const char *argv[256] = {"ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"};
    int n = 6;
    for (int i = 0; args[i] && n < 255; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid;
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return -1;
    /* Keep stdout for the summary line; ffmpeg's errors still reach stderr. */
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    /* posix_spawnp wants char *const[]; it does not modify the strings. */
    int rc = posix_spawnp(&pid, "ffmpeg", &fa, NULL, (char *const *)(uintptr_t)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    int ws;
    if (waitpid(pid, &ws, 0) < 0)
        return -1;
    return WIFEXITED(ws) && WEXITSTATUS(ws) == 0 ? 0 : -1;
}

static long long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* Copies the first half of SRC to DST, as an interrupted upload or copy leaves it. */
static int truncate_copy(const char *src, const char *dst)
{
    long long size = file_size(src);
    if (size <= 0)
        return -1;
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    int rc = -1;
    char *buf = malloc((size_t)size);
    if (in && out && buf && fread(buf, 1, (size_t)size, in) == (size_t)size &&
        fwrite(buf, 1, (size_t)(size / 2), out) == (size_t)(size / 2))
        rc = 0;
    free(buf);
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        rc = -1;
    return rc;
}


static int make_fixtures(void)
{
    const char *base[] = {"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "2",
                          "-c:v", "libx264", "-pix_fmt", "yuv420p", fixture("h264.mp4"), NULL};
    const char *fast[] = {"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "2",
                          "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
                          fixture("faststart.mp4"), NULL};
    const char *vp9[] = {"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "1",
                         "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                         "-b:v", "200k", fixture("vp9.webm"), NULL};
    const char *avi[] = {"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "1",
                         "-c:v", "mpeg4", fixture("mpeg4.avi"), NULL};
    const char *aud[] = {"-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac",
                         fixture("audio.m4a"), NULL};
    const char *av[] = {"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-f", "lavfi",
                        "-i", "sine=frequency=440", "-t", "2", "-c:v", "libx264", "-pix_fmt",
                        "yuv420p", "-c:a", "aac", fixture("av.mp4"), NULL};
    /* FFmpeg 5.1 has no -display_rotation; the rotate tag still sets the display matrix. */
    const char *rot[] = {"-i", fixture("h264.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                         fixture("rot90.mp4"), NULL};
    const char *mkv[] = {"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "6",
                         "-c:v", "libx264", "-pix_fmt", "yuv420p", fixture("six.mkv"), NULL};
    const char *png[] = {"-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", fixture("still.png"), NULL};
    const char *const *all[] = {base, fast, vp9, avi, aud, av, rot, mkv, png};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (run_ffmpeg(all[i]) != 0) {
            fprintf(stderr, "ffmpeg fixture %zu failed\n", i);
            return -1;
        }
    if (truncate_copy(fixture("faststart.mp4"), fixture("trunc_faststart.mp4")) != 0 ||
        truncate_copy(fixture("h264.mp4"), fixture("trunc_moov_last.mp4")) != 0 ||
        truncate_copy(fixture("six.mkv"), fixture("trunc.mkv")) != 0)
        return -1;
    return 0;
}

/* Hostile files (issue 11), made from the clips above:
 *   list.m3u8   an HLS playlist naming secret/clip.ts elsewhere on the machine by absolute path
 *   dash.mpd    a DASH manifest (ffmpeg's dash muxer) with its segments beside it
 *   concat.txt  a concat list naming h264.mp4 beside it (relative, so FFmpeg's "safe" allows it)
 *   cam.mlv     a Magic Lantern header; its demuxer opens cam.m00 beside it through io_open
 *   gap.mkv     10 frames, the last 5 shifted by 10,240 h (36,864,000 s): 12 KB
 *   sparse.mkv  200 tiny frames 59 s apart (just under the hold: no gaps): 3.3 h in 20 KB
 *   s64.mkv / s100.mkv  the 1 s clip mapped 64 / 100 times */
static int make_hostile_fixtures(void)
{
    char line[1024];
    if (mkdir(fixture("secret"), 0700) != 0)
        return -1;
    const char *ts[] = {"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "1", "-c:v", "libx264",
                        "-pix_fmt", "yuv420p", fixture("secret/clip.ts"), NULL};
    const char *dash[] = {"-i", fixture("h264.mp4"), "-c", "copy", "-f", "dash", fixture("dash.mpd"), NULL};
    const char *gap[] = {"-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-frames:v", "10", "-vf",
                         "setpts='if(gte(N,5),PTS+36864000/TB,PTS)'", "-vsync", "passthrough", "-c:v", "libx264",
                         "-pix_fmt", "yuv420p", fixture("gap.mkv"), NULL};
    const char *sparse[] = {"-f", "lavfi", "-i", "testsrc2=size=16x16:rate=1", "-frames:v", "200", "-vf",
                            "setpts=N*59/TB", "-vsync", "passthrough", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                            fixture("sparse.mkv"), NULL};
    const char *tiny[] = {"-f", "lavfi", "-i", "testsrc2=size=16x16:rate=1", "-t", "1", "-c:v", "libx264",
                          "-pix_fmt", "yuv420p", fixture("tiny.mkv"), NULL};
    const char *const *all[] = {ts, dash, gap, sparse, tiny};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (run_ffmpeg(all[i]) != 0) {
            fprintf(stderr, "ffmpeg hostile fixture %zu failed\n", i);
            return -1;
        }
    for (int want = 64; want <= 100; want += 36) {
        const char *args[256];
        int n = 0;
        char out[64];
        snprintf(out, sizeof out, "s%d.mkv", want);
        args[n++] = "-i";
        args[n++] = fixture("tiny.mkv");
        for (int i = 0; i < want; i++) {
            args[n++] = "-map";
            args[n++] = "0:v";
        }
        args[n++] = "-c";
        args[n++] = "copy";
        args[n++] = fixture(out);
        args[n] = NULL;
        if (run_ffmpeg(args) != 0)
            return -1;
    }
    snprintf(line, sizeof line, "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n%s\n#EXT-X-ENDLIST\n",
             fixture("secret/clip.ts"));
    if (tu_write_file(fixture("list.m3u8"), line, strlen(line)) != 0)
        return -1;
    snprintf(line, sizeof line, "ffconcat version 1.0\nfile 'h264.mp4'\n");
    if (tu_write_file(fixture("concat.txt"), line, strlen(line)) != 0)
        return -1;
    /* MLVI block: magic, size 52, version, GUID, file 0 of 1, no flags, no video or audio class,
     * no frames, 25/1 fps; then an empty NULL block. All little-endian. */
    static const unsigned char mlv[] = {
        'M', 'L', 'V', 'I', 52, 0, 0, 0, 'v', '2', '.', '0', 0, 0, 0, 0, 0x34, 0x12, 0, 0, 0, 0, 0, 0,
        0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0, 0, 0, 1, 0, 0, 0,
        'N', 'U', 'L', 'L', 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (tu_write_file(fixture("cam.mlv"), mlv, sizeof mlv) != 0 || tu_write_file(fixture("cam.m00"), mlv, 52) != 0)
        return -1;
    return 0;
}

static int make_plain_fixtures(void)
{
    /* A fixed LCG, not /dev/urandom: random bytes occasionally look like some format's magic. */
    static unsigned char noise[65536];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof noise; i++) {
        x = x * 1103515245u + 12345u;
        noise[i] = (unsigned char)(x >> 16);
    }
    if (tu_write_file(fixture("noise.mp4"), noise, sizeof noise) != 0 ||
        tu_write_file(fixture("empty.mp4"), noise, 0) != 0)
        return -1;
    return mkdir(fixture("adir.mp4"), 0700);
}


static md_status probe(const char *path, md_video_info *vi, char *err, size_t errlen)
{
    return md_video_probe(path, vi, NULL, NULL, err, errlen);
}

/* ---- cases that need no ffmpeg ---- */

static void test_missing_file(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(fixture("does-not-exist.mp4"), &vi, err, sizeof err), MD_ERR_NOT_FOUND);
    CHECK(err[0] != '\0');
    CHECK_EQ_INT(vi.duration_ms, -1);
    CHECK_EQ_INT(probe("/nonexistent-dir/x/y.mp4", &vi, err, sizeof err), MD_ERR_NOT_FOUND);
}

static void test_empty_file(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(fixture("empty.mp4"), &vi, err, sizeof err), MD_ERR_MEDIA);
    CHECK(strstr(err, "empty") != NULL);
}

static void test_random_bytes(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(fixture("noise.mp4"), &vi, err, sizeof err), MD_ERR_MEDIA);
    CHECK(err[0] != '\0');
    CHECK_EQ_INT(vi.width, 0);
}

static void test_directory(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(fixture("adir.mp4"), &vi, err, sizeof err), MD_ERR_MEDIA);
    CHECK(err[0] != '\0');
}

static void test_bad_arguments(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(md_video_probe(NULL, &vi, NULL, NULL, err, sizeof err), MD_ERR_INVALID);
    CHECK(err[0] != '\0');
    CHECK_EQ_INT(md_video_probe(fixture("empty.mp4"), NULL, NULL, NULL, err, sizeof err),
                 MD_ERR_INVALID);
    /* No error buffer at all must still be safe. */
    CHECK_EQ_INT(md_video_probe(fixture("noise.mp4"), &vi, NULL, NULL, NULL, 0), MD_ERR_MEDIA);
    /* A tiny buffer gets a truncated, terminated message. */
    char small[6];
    memset(small, 'x', sizeof small);
    CHECK_EQ_INT(probe(fixture("empty.mp4"), &vi, small, sizeof small), MD_ERR_MEDIA);
    CHECK_EQ_INT(strlen(small), sizeof small - 1);
}

/* ---- fixture cases ---- */

static void test_h264_mp4(void)
{
    md_video_info vi;
    char err[256] = "stale";
    md_status st = probe(fixture("h264.mp4"), &vi, err, sizeof err);
    CHECK_EQ_INT(st, MD_OK);
    CHECK_STR(err, "");
    CHECK(vi.duration_ms >= 1900 && vi.duration_ms <= 2100);
    CHECK_EQ_INT(vi.width, 160);
    CHECK_EQ_INT(vi.height, 120);
    CHECK(vi.fps > 9.99 && vi.fps < 10.01);
    CHECK_EQ_INT(vi.rotation, 0);
    CHECK_STR(vi.codec, "h264");
    CHECK(strstr(vi.format, "mp4") != NULL);
    CHECK_EQ_INT(vi.n_streams, 1);
    CHECK_EQ_INT(vi.n_video_streams, 1);
    CHECK_EQ_INT(vi.n_audio_streams, 0);
    CHECK_EQ_INT(vi.stream_index, 0);
    CHECK_EQ_INT(vi.n_video_packets, 20);
    CHECK_EQ_INT(vi.n_corrupt_packets, 0);
    CHECK_EQ_INT(vi.truncated, 0);
    CHECK_EQ_INT(vi.size_bytes, file_size(fixture("h264.mp4")));
    /* x264's default GOP (250) is longer than the clip: one keyframe, no gap. */
    CHECK_EQ_INT(vi.n_keyframes, 1);
    CHECK_EQ_INT(vi.max_keyframe_gap_ms, 0);
}

static void test_audio_and_video(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(fixture("av.mp4"), &vi, err, sizeof err), MD_OK);
    CHECK_EQ_INT(vi.n_streams, 2);
    CHECK_EQ_INT(vi.n_video_streams, 1);
    CHECK_EQ_INT(vi.n_audio_streams, 1);
    CHECK_STR(vi.codec, "h264");
    CHECK_EQ_INT(vi.n_video_packets, 20);
    CHECK_EQ_INT(vi.n_corrupt_packets, 0);
    CHECK_EQ_INT(vi.truncated, 0);
}

static void test_vp9_webm(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(fixture("vp9.webm"), &vi, err, sizeof err), MD_OK);
    CHECK_STR(vi.codec, "vp9");
    CHECK_STR(vi.format, "matroska,webm");
    CHECK_EQ_INT(vi.width, 160);
    CHECK_EQ_INT(vi.height, 120);
    CHECK_EQ_INT(vi.n_video_packets, 10);
    CHECK(vi.duration_ms >= 900 && vi.duration_ms <= 1100);
    CHECK_EQ_INT(vi.truncated, 0);
}

static void test_mpeg4_avi(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(fixture("mpeg4.avi"), &vi, err, sizeof err), MD_OK);
    CHECK_STR(vi.codec, "mpeg4");
    CHECK_STR(vi.format, "avi");
    CHECK_EQ_INT(vi.n_video_packets, 10);
    /* The mpeg4 encoder's GOP is 12 frames: keyframes at 0 only in 1 s. */
    CHECK_EQ_INT(vi.n_keyframes, 1);
    CHECK(vi.fps > 9.99 && vi.fps < 10.01);
    CHECK_EQ_INT(vi.truncated, 0);
}

static void test_audio_only(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(fixture("audio.m4a"), &vi, err, sizeof err), MD_ERR_MEDIA);
    CHECK(strstr(err, "audio") != NULL);
    CHECK(strstr(err, "no video stream") != NULL);
}

static void test_still_image(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(fixture("still.png"), &vi, err, sizeof err), MD_ERR_MEDIA);
    CHECK(strstr(err, "still image") != NULL);
}

static void test_truncated_faststart(void)
{
    md_video_info vi;
    char err[256];
    md_status st = probe(fixture("trunc_faststart.mp4"), &vi, err, sizeof err);
    CHECK_EQ_INT(st, MD_OK);
    if (st != MD_OK)
        fprintf(stderr, "  err: %s\n", err);
    CHECK(vi.n_video_packets > 0);
    CHECK(vi.n_video_packets < 20 || vi.n_corrupt_packets > 0);
    CHECK(vi.n_corrupt_packets > 0);
    CHECK_EQ_INT(vi.truncated, 1);
    CHECK_EQ_INT(vi.width, 160);
}

static void test_truncated_moov_last(void)
{
    md_video_info vi;
    char err[256];
    /* Cut before its index (x264 writes the moov last): FFmpeg only says "Invalid data". */
    CHECK_EQ_INT(probe(fixture("trunc_moov_last.mp4"), &vi, err, sizeof err), MD_ERR_MEDIA);
    CHECK(strstr(err, "truncated or incomplete MP4 (no moov atom)") != NULL);
    CHECK(strstr(err, "'mdat'") != NULL); /* where it was cut */
    /* Random bytes named .mp4 are not called a truncated MP4. */
    CHECK_EQ_INT(probe(fixture("noise.mp4"), &vi, err, sizeof err), MD_ERR_MEDIA);
    CHECK(strstr(err, "not a video file") != NULL);
}

static void test_truncated_mkv(void)
{
    md_video_info vi;
    char err[256];
    /* Matroska cut in half ends cleanly at a cluster boundary: no read error, but the segment
     * header still says 6 s. */
    CHECK_EQ_INT(probe(fixture("six.mkv"), &vi, err, sizeof err), MD_OK);
    CHECK_EQ_INT(vi.n_video_packets, 60);
    CHECK_EQ_INT(vi.truncated, 0);
    CHECK_EQ_INT(vi.data_duration_ms, 6000);
    CHECK_EQ_INT(probe(fixture("trunc.mkv"), &vi, err, sizeof err), MD_OK);
    CHECK(vi.n_video_packets > 0 && vi.n_video_packets < 60);
    CHECK_EQ_INT(vi.truncated, 1);
    CHECK(vi.duration_ms >= 5900 && vi.duration_ms <= 6100); /* what the headers claim */
    /* ... and what can be indexed: the frames that are there, 100 ms each (one more when the
     * cut leaves a frame whose packet is counted damaged). */
    CHECK(llabs(vi.data_duration_ms - vi.n_video_packets * 100) <= 100);
    CHECK(vi.data_duration_ms < 4500);
}

static void test_rotation(void)
{
    md_video_info vi;
    char err[256];
    /* ffprobe reports this file's display matrix as "rotation=90", which is FFmpeg's
     * counter-clockwise convention: ffmpeg's autorotate turns the picture 90 degrees
     * counter-clockwise (120x160, top-left corner moved to bottom-left), i.e. 270 clockwise. */
    CHECK_EQ_INT(probe(fixture("rot90.mp4"), &vi, err, sizeof err), MD_OK);
    CHECK_EQ_INT(vi.rotation, 270);
    CHECK_EQ_INT(vi.width, 160); /* coded size is unchanged by rotation */
    CHECK_EQ_INT(vi.height, 120);
}

typedef struct progress_log {
    int calls, monotonic, cancel_after;
    long long last_done, last_total;
} progress_log;

static int on_progress(void *ctx, long long done, long long total)
{
    progress_log *p = ctx;
    if (done < p->last_done || done > total)
        p->monotonic = 0;
    p->last_done = done;
    p->last_total = total;
    p->calls++;
    return p->cancel_after > 0 && p->calls >= p->cancel_after;
}

static void test_progress(void)
{
    md_video_info vi;
    char err[256];
    progress_log p = {.monotonic = 1};
    CHECK_EQ_INT(md_video_probe(fixture("h264.mp4"), &vi, on_progress, &p, err, sizeof err), MD_OK);
    CHECK(p.calls >= 1);
    CHECK(p.monotonic);
    CHECK_EQ_INT(p.last_total, file_size(fixture("h264.mp4")));
    CHECK_EQ_INT(p.last_done, p.last_total);
}

static void test_cancel(void)
{
    md_video_info vi;
    char err[256];
    progress_log p = {.monotonic = 1, .cancel_after = 1};
    CHECK_EQ_INT(md_video_probe(fixture("h264.mp4"), &vi, on_progress, &p, err, sizeof err),
                 MD_ERR_CANCELLED);
    CHECK_EQ_INT(p.calls, 1); /* never asked again once cancelled */
    CHECK(strstr(err, "cancel") != NULL);
    CHECK_EQ_INT(vi.width, 0);
}

static void test_cancel_on_final_call(void)
{
    md_video_info vi;
    char err[256];
    /* Call 1 comes when reading starts, the last when the scan is done; a tiny file is read
     * well within 50 ms, so cancelling on call 2 cancels at the end, or earlier under a slow
     * sanitizer build. Either way the result must not be MD_OK. */
    progress_log p = {.monotonic = 1, .cancel_after = 2};
    CHECK_EQ_INT(md_video_probe(fixture("h264.mp4"), &vi, on_progress, &p, err, sizeof err),
                 MD_ERR_CANCELLED);
    CHECK_EQ_INT(p.calls, 2);
    CHECK(p.monotonic);
}

#define N_THREADS 4

typedef struct probe_job {
    char path[512]; /* own copy: fixture()'s ring of buffers is not for threads */
    int want_truncated;
    int ok;
} probe_job;

static void *probe_thread(void *arg)
{
    probe_job *job = arg;
    md_video_info vi;
    char err[256];
    md_status st = probe(job->path, &vi, err, sizeof err);
    job->ok = st == MD_OK && vi.width == 160 &&
              (job->want_truncated ? vi.truncated == 1 : vi.n_video_packets == 20);
    return NULL;
}

static void test_concurrent(void)
{
    pthread_t th[N_THREADS];
    probe_job jobs[N_THREADS];
    int started = 0;
    /* Half read a damaged file, so FFmpeg logs from several threads at once too. */
    for (int i = 0; i < N_THREADS; i++) {
        jobs[i].want_truncated = i % 2;
        snprintf(jobs[i].path, sizeof jobs[i].path, "%s",
                 fixture(i % 2 ? "trunc_faststart.mp4" : "av.mp4"));
        jobs[i].ok = 0;
    }
    for (int i = 0; i < N_THREADS; i++)
        if (pthread_create(&th[i], NULL, probe_thread, &jobs[i]) == 0)
            started++;
        else
            break;
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(started, N_THREADS);
    for (int i = 0; i < started; i++)
        CHECK(jobs[i].ok);
}

/* ---- hostile files (issue 11) ---- */

/* Every format that opens other files is refused, naming what it is; allowed, the same files
 * read the other files (so the fixtures really do). */
static void test_refuse_nested(void)
{
    static const struct {
        const char *file, *needle;
    } cases[] = {{"list.m3u8", "playlist (hls)"},
                 {"dash.mpd", "manifest (dash)"},
                 {"concat.txt", "concat list"},
                 {"cam.mlv", "cam.m00"}};
    md_video_info vi;
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        md_status st = probe(fixture(cases[i].file), &vi, err, sizeof err);
        CHECK_EQ_INT(st, MD_ERR_MEDIA);
        if (!strstr(err, "refused") || !strstr(err, cases[i].needle)) {
            fprintf(stderr, "  %s: %s \"%s\"\n", cases[i].file, md_status_str(st), err);
            CHECK(0);
        }
        CHECK_EQ_INT(vi.width, 0);
    }
    md_video_open_opts allow = {.allow_nested = 1};
    CHECK_EQ_INT(md_video_probe_ex(fixture("list.m3u8"), &allow, &vi, NULL, NULL, err, sizeof err), MD_OK);
    CHECK_STR(vi.format, "hls");
    CHECK_EQ_INT(vi.n_video_packets, 10); /* secret/clip.ts, 1 s at 10 fps */
    CHECK_EQ_INT(md_video_probe_ex(fixture("concat.txt"), &allow, &vi, NULL, NULL, err, sizeof err), MD_OK);
    CHECK_EQ_INT(vi.n_video_packets, 20);
    /* The default options are the refusing ones. */
    md_video_open_opts zero = {0};
    CHECK_EQ_INT(md_video_probe_ex(fixture("list.m3u8"), &zero, &vi, NULL, NULL, err, sizeof err), MD_ERR_MEDIA);
    CHECK_EQ_INT(md_video_probe_ex(fixture("h264.mp4"), &zero, &vi, NULL, NULL, err, sizeof err), MD_OK);
}

/* A 10,240-hour jump between two frames is one gap: counted, measured, not refused. */
static void test_gap(void)
{
    md_video_info vi;
    char err[256];
    md_status st = probe(fixture("gap.mkv"), &vi, err, sizeof err);
    CHECK_EQ_INT(st, MD_OK);
    if (st != MD_OK)
        fprintf(stderr, "  gap.mkv: %s\n", err);
    CHECK_EQ_INT(vi.n_video_packets, 10);
    CHECK_EQ_INT(vi.duration_ms, 36864001000LL); /* the timeline is that long */
    CHECK_EQ_INT(vi.data_duration_ms, 36864001000LL);
    CHECK_EQ_INT(vi.n_gaps, 1);
    /* From the end of the frame at 0.4 s (0.5 s) to the one at 36,864,000.5 s. */
    CHECK_EQ_INT(vi.gap_ms, 36864000000LL);
    CHECK_EQ_INT(vi.truncated, 0);
    CHECK(vi.size_bytes < 20000);
    /* An ordinary clip has none. */
    CHECK_EQ_INT(probe(fixture("h264.mp4"), &vi, err, sizeof err), MD_OK);
    CHECK_EQ_INT(vi.n_gaps, 0);
    CHECK_EQ_INT(vi.gap_ms, 0);
    CHECK_EQ_INT(vi.data_duration_ms, 2000);
}

/* 3.3 hours in 20 KB without a gap (frames 59 s apart, just within the hold) is more sampled
 * time per byte than any recording has: refused, saying so. */
static void test_sampled_time_per_byte(void)
{
    md_video_info vi;
    char err[256];
    md_status st = probe(fixture("sparse.mkv"), &vi, err, sizeof err);
    CHECK_EQ_INT(st, MD_ERR_MEDIA);
    if (!strstr(err, "refused") || !strstr(err, "h per MB")) {
        fprintf(stderr, "  sparse.mkv: %s \"%s\"\n", md_status_str(st), err);
        CHECK(0);
    }
    CHECK_EQ_INT(vi.duration_ms, -1);
}

static void test_stream_limit(void)
{
    md_video_info vi;
    char err[256];
    md_status st = probe(fixture("s64.mkv"), &vi, err, sizeof err);
    CHECK_EQ_INT(st, MD_OK);
    CHECK_EQ_INT(vi.n_streams, MD_VIDEO_MAX_STREAMS);
    st = probe(fixture("s100.mkv"), &vi, err, sizeof err);
    CHECK_EQ_INT(st, MD_ERR_MEDIA);
    if (!strstr(err, "refused") || !strstr(err, "64 streams")) {
        fprintf(stderr, "  s100.mkv: %s \"%s\"\n", md_status_str(st), err);
        CHECK(0);
    }
}

/* ---- the shared sample clip ---- */

static int shared_clip(char *out, size_t outlen)
{
    const char *env = getenv("MD_SHARED_MEDIA");
    if (env && *env) {
        snprintf(out, outlen, "%s/parakeet-ladder.mp4", env);
        return access(out, R_OK) == 0;
    }
    /* The repository root is where base/status.h is, from the current directory upwards. */
    char up[64] = "";
    for (int depth = 0; depth < 5; depth++) {
        char probe_path[128];
        snprintf(probe_path, sizeof probe_path, "%sbase/status.h", up);
        if (access(probe_path, F_OK) == 0) {
            snprintf(out, outlen, "%s../shared/media/parakeet-ladder.mp4", up);
            return access(out, R_OK) == 0;
        }
        strcat(up, "../");
    }
    return 0;
}

static char g_clip[512];

static void test_shared_clip(void)
{
    md_video_info vi;
    char err[256];
    CHECK_EQ_INT(probe(g_clip, &vi, err, sizeof err), MD_OK);
    CHECK_STR(vi.codec, "h264");
    /* ffprobe: width=406 height=720, coded_width=406 coded_height=720, no display matrix. */
    CHECK_EQ_INT(vi.width, 406);
    CHECK_EQ_INT(vi.height, 720);
    CHECK_EQ_INT(vi.rotation, 0);
    CHECK(vi.duration_ms >= 8100 && vi.duration_ms <= 8300); /* 8.166667 s */
    CHECK(vi.fps > 29.9 && vi.fps < 30.1);
    CHECK(vi.n_video_packets > 200);
    CHECK_EQ_INT(vi.n_corrupt_packets, 0);
    CHECK_EQ_INT(vi.truncated, 0);
    /* ffprobe -show_entries packet=pts_time,flags: keyframes at 0 and 5.333 s. */
    CHECK_EQ_INT(vi.n_keyframes, 2);
    CHECK_EQ_INT(vi.max_keyframe_gap_ms, 5333);
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    md_video_global_init();
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/md_test_video.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (make_plain_fixtures() != 0) {
        fprintf(stderr, "cannot write fixtures in %s\n", g_dir);
        md_t_failed++;
    }

    RUN(test_missing_file);
    RUN(test_empty_file);
    RUN(test_random_bytes);
    RUN(test_directory);
    RUN(test_bad_arguments);

    const char *version[] = {"-version", NULL};
    g_have_ffmpeg = run_ffmpeg(version) == 0;
    /* The fixture cases need ffmpeg: without it each is counted as skipped. A failure to make
     * the fixtures with a working ffmpeg is a failure (and the cases are not run). */
    if (!g_have_ffmpeg) {
        md_test_skip_rest("no working ffmpeg on PATH to make the fixtures");
    } else if (make_fixtures() != 0 || make_hostile_fixtures() != 0) {
        fprintf(stderr, "not ok make_fixtures\n");
        md_t_failed++;
        md_test_skip_rest("make_fixtures failed");
    }
    RUN(test_h264_mp4);
    RUN(test_audio_and_video);
    RUN(test_vp9_webm);
    RUN(test_mpeg4_avi);
    RUN(test_audio_only);
    RUN(test_still_image);
    RUN(test_truncated_faststart);
    RUN(test_truncated_moov_last);
    RUN(test_truncated_mkv);
    RUN(test_rotation);
    RUN(test_progress);
    RUN(test_cancel);
    RUN(test_cancel_on_final_call);
    RUN(test_concurrent);
    RUN(test_refuse_nested);
    RUN(test_gap);
    RUN(test_sampled_time_per_byte);
    RUN(test_stream_limit);
    md_test_skip_rest(NULL);

    if (shared_clip(g_clip, sizeof g_clip))
        RUN(test_shared_clip);
    else
        SKIP(test_shared_clip, "parakeet-ladder.mp4 not found ($MD_SHARED_MEDIA or ../shared/media)");

    tu_remove_dir(g_dir);
    return md_test_summary("test_video");
}
