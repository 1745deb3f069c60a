/* bench_decode.c - decodes, samples and preprocesses one whole video with the video module and
 * reports how long it took (the C half of `make bench-decode`; tests/bench/bench_decode.sh runs it
 * next to the ffmpeg CLI doing the same job).
 *
 *   bench_decode FILE exact|keyframe FPS SIZE THREADS
 *
 * Prints one line of key=value pairs: seconds (wall, open to close, including the probe that
 * keyframe mode needs), samples delivered, frames decoded, packets read, keyframe_mode (whether
 * keyframe-only decoding was in use), duration_s of the video. The tensors are checked for NaN
 * and otherwise dropped.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../base/log.h"
#include "../../video/video.h"

int main(int argc, char **argv)
{
    if (argc != 6 || (strcmp(argv[2], "exact") != 0 && strcmp(argv[2], "keyframe") != 0)) {
        fprintf(stderr, "usage: %s FILE exact|keyframe FPS SIZE THREADS\n", argv[0]);
        return 2;
    }
    md_video_global_init();
    md_video_params p = md_video_default_params();
    p.keyframes_only = strcmp(argv[2], "keyframe") == 0;
    p.fps = atof(argv[3]);
    p.size = atoi(argv[4]);
    p.threads = atoi(argv[5]);
    char err[256];
    md_video_decoder *d = NULL;
    double t0 = md_mono_s();
    md_status st = md_video_decoder_open(argv[1], &p, NULL, &d, err, sizeof err);
    if (st != MD_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[1], md_status_str(st), err);
        return 1;
    }
    md_video_batch b;
    long long samples = 0, nan = 0;
    while ((st = md_video_decoder_next(d, &b)) == MD_OK && b.n > 0) {
        samples += b.n;
        size_t n = (size_t)b.n * 3 * (size_t)b.size * (size_t)b.size;
        for (size_t i = 0; i < n; i += 997)
            nan += isnan(b.pixels[i]);
    }
    double secs = md_mono_s() - t0;
    if (st != MD_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[1], md_status_str(st), md_video_decoder_error(d));
        md_video_decoder_close(d);
        return 1;
    }
    md_video_decode_stats s;
    md_video_decoder_stats(d, &s);
    printf("seconds=%.3f samples=%lld expected=%lld decoded=%lld packets=%lld keyframe_mode=%d duration_s=%.3f "
           "nan=%lld\n",
           secs, samples, md_video_decoder_expected(d), s.frames_decoded, s.packets, md_video_decoder_keyframe_mode(d),
           md_video_decoder_info(d)->duration_ms / 1000.0, nan);
    md_video_decoder_close(d);
    return nan ? 1 : 0;
}
