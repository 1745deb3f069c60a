/* video.h - probing video files with libavformat: what a file holds and whether it reads cleanly.
 *
 * Usage:
 *
 *     md_video_global_init();              // once, at start-up
 *     md_video_info info;
 *     char err[256];
 *     md_status st = md_video_probe("/data/clip.mp4", &info, NULL, NULL, err, sizeof err);
 *     if (st != MD_OK)
 *         md_warn("probe: %s: %s", md_status_str(st), err);
 *
 * A probe opens the file, reads its stream headers, then demuxes every packet once without
 * decoding, so it costs about one sequential read of the file. It never decodes frames itself
 * (avformat_find_stream_info may decode a few to learn stream parameters).
 *
 * Thread-safety: md_video_probe() calls are independent and may run concurrently on any threads;
 * they share no state. md_video_global_init() must run once before any probe starts.
 *
 * Nothing outside video/ should include FFmpeg headers; this header deliberately does not.
 */
#ifndef MD_VIDEO_H
#define MD_VIDEO_H

#include "../engine/status.h"

#include <stddef.h>

typedef struct md_video_info {
    long long duration_ms; /* -1 when unknown; from the headers, else the scanned timestamps,
                              else packets / fps for raw streams without timestamps */
    int width, height;     /* coded size of the chosen video stream */
    double fps;            /* average frame rate, 0 when unknown */
    int rotation;          /* degrees clockwise from the display matrix, 0/90/180/270 */
    char codec[32];        /* e.g. "h264" */
    char format[64];       /* container short name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" */
    int n_streams;         /* all streams of the container */
    int n_video_streams;   /* video streams, cover art (attached pictures) not counted */
    int n_audio_streams;
    int stream_index;      /* container index of the chosen video stream */
    long long n_video_packets;   /* packets of the chosen stream seen by the scan */
    long long n_corrupt_packets; /* packets of any stream flagged AV_PKT_FLAG_CORRUPT, plus read
                                    errors skipped */
    int truncated;         /* 1 when the scan ended on read errors, or the container's index
                              lists more packets of the chosen stream than could be read */
    long long size_bytes;
} md_video_info;

/* Progress callback: done/total in bytes of the file read so far; return non-zero to cancel.
 * Called on the probing thread; done never decreases and never exceeds total. */
typedef int (*md_video_progress_fn)(void *ctx, long long done, long long total);

/* Opens PATH with libavformat, picks the best video stream (av_find_best_stream), fills INFO,
 * then demuxes every packet once (no decoding) to count packets and detect truncation/corruption,
 * calling PROGRESS (may be NULL) at most every ~50 ms and at the end. The first call comes as soon
 * as reading starts, so a caller that has already cancelled is told so without waiting.
 *
 * Only the local "file" protocol is allowed: a playlist or concat file cannot make FFmpeg open
 * network URLs.
 *
 * A file whose index is intact but whose data is cut short succeeds with truncated = 1: the
 * packets that could be read are counted, and packets cut short or read errors are counted in
 * n_corrupt_packets; after many consecutive read errors the scan stops early. A file whose
 * headers are missing (an mp4 cut before its moov) is MD_ERR_MEDIA.
 *
 * Errors (never crash, never abort): MD_ERR_INVALID (NULL path or info), MD_ERR_NOT_FOUND (missing
 * file), MD_ERR_MEDIA with a human message in ERR such as "not a video file: <ffmpeg reason>" /
 * "no video stream (audio only: 1 audio stream)" / "empty file" / "video has invalid dimensions
 * 0x0", MD_ERR_CANCELLED when PROGRESS returned non-zero (including on its final call),
 * MD_ERR_NOMEM, MD_ERR_IO (permission denied, read failure). ERR (size ERRLEN; may be NULL when
 * ERRLEN is 0) always gets a NUL-terminated message on failure, truncated to fit, and is set to ""
 * on success. INFO is always fully written: zeroed with duration_ms = -1 on failure. */
md_status md_video_probe(const char *path, md_video_info *info, md_video_progress_fn progress,
                         void *ctx, char *err, size_t errlen);

/* Routes FFmpeg's own log output through md_log at warning level and above; call once at start-up,
 * before any thread uses FFmpeg. Messages beyond ~20 a second are dropped and counted, so a badly
 * damaged file cannot flood the log. */
void md_video_global_init(void);

#endif
