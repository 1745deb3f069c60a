/* bench_decode.c - decodes, samples and preprocesses one whole video with the video module and
 * reports how long it took (the C half of `make bench-decode`; tests/bench/bench_decode.sh runs it
 * next to the ffmpeg CLI doing the same job).
 *
 *   bench_decode FILE exact|keyframe|iso-exact|iso-keyframe FPS SIZE THREADS
 *
 * iso-* runs the same job through decode isolation (video/isolate.h: md_video_iso_*, a sandboxed
 * worker process, default sandbox settings); this binary is its own worker, so main() hands a
 * worker invocation to md_video_worker_main() first.
 *
 * Prints one line of key=value pairs: seconds (wall, open to close, including the probe that
 * keyframe mode needs, and for iso-* the worker's start and exit), cpu_s (user + system of this
 * process and its reaped children, i.e. the worker), samples delivered, frames decoded, packets
 * read, keyframe_mode (whether keyframe-only decoding was in use), duration_s of the video. The
 * tensors are checked for NaN and otherwise dropped.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../../base/log.h"
#include "../../video/isolate.h"
#include "../../video/video.h"

static double cpu_s(void)
{
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    return (double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec + kids.ru_stime.tv_sec) +
           (self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
    int wrc = md_video_worker_main(argc, argv);
    if (wrc >= 0)
        return wrc;
    const char *mode = argc == 6 ? argv[2] : "";
    int iso = strncmp(mode, "iso-", 4) == 0;
    if (iso)
        mode += 4;
    if (strcmp(mode, "exact") != 0 && strcmp(mode, "keyframe") != 0) {
        fprintf(stderr, "usage: %s FILE exact|keyframe|iso-exact|iso-keyframe FPS SIZE THREADS\n", argv[0]);
        return 2;
    }
    md_video_global_init();
    md_video_params p = md_video_default_params();
    p.keyframes_only = strcmp(mode, "keyframe") == 0;
    p.fps = atof(argv[3]);
    p.size = atoi(argv[4]);
    p.threads = atoi(argv[5]);
    char err[256];
    md_video_decoder *d = NULL;
    md_video_iso *di = NULL;
    double c0 = cpu_s(), t0 = md_mono_s();
    md_status st = iso ? md_video_iso_decoder_open(NULL, argv[1], &p, NULL, &di, err, sizeof err)
                       : md_video_decoder_open(argv[1], &p, NULL, &d, err, sizeof err);
    if (st != MD_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[1], md_status_str(st), err);
        return 1;
    }
    md_video_batch b;
    long long samples = 0, nan = 0;
    while ((st = iso ? md_video_iso_next(di, &b) : md_video_decoder_next(d, &b)) == MD_OK && b.n > 0) {
        samples += b.n;
        size_t n = (size_t)b.n * 3 * (size_t)b.size * (size_t)b.size;
        for (size_t i = 0; i < n; i += 997)
            nan += isnan(b.pixels[i]);
    }
    md_video_decode_stats s;
    long long expected = iso ? md_video_iso_expected(di) : md_video_decoder_expected(d);
    int kf = iso ? md_video_iso_keyframe_mode(di) : md_video_decoder_keyframe_mode(d);
    double dur = (iso ? md_video_iso_info(di) : md_video_decoder_info(d))->duration_ms / 1000.0;
    if (iso)
        md_video_iso_stats(di, &s);
    else
        md_video_decoder_stats(d, &s);
    if (st != MD_OK)
        fprintf(stderr, "%s: %s: %s\n", argv[1], md_status_str(st),
                iso ? md_video_iso_error(di) : md_video_decoder_error(d));
    md_video_iso_close(di);
    md_video_decoder_close(d);
    double secs = md_mono_s() - t0, cpu = cpu_s() - c0;
    if (st != MD_OK)
        return 1;
    printf("seconds=%.3f cpu_s=%.3f samples=%lld expected=%lld decoded=%lld packets=%lld keyframe_mode=%d "
           "duration_s=%.3f nan=%lld\n",
           secs, cpu, samples, expected, s.frames_decoded, s.packets, kf, dur, nan);
    return nan ? 1 : 0;
}
