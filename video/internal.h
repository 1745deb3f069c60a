/* internal.h - what the files of video/ share and nothing outside video/ may use: the
 * small FFmpeg helpers of the decoder and the probe
 * (this header may include FFmpeg's; video.h must not).
 */
#ifndef MD_VIDEO_INTERNAL_H
#define MD_VIDEO_INTERNAL_H

#include "video.h"

#include <stddef.h>
#include <stdint.h>

struct AVStream;
struct AVFormatContext;

/* Read errors in a row after which the rest of a file is given up (probe, decoder, pictures): a
 * truncated mp4 keeps its sample table, so every sample past the cut fails on its own. */
#define MD_VIDEO_MAX_READ_ERRORS 64

/* Clockwise quarter turns (0/90/180/270) from a stream's display matrix; 0 without one. */
int md_video_stream_rotation(const struct AVStream *st);


/* The checks before FFmpeg opens PATH, with messages clearer than FFmpeg's: missing
 * (MD_ERR_NOT_FOUND), unreadable (MD_ERR_IO), not a regular file or empty (MD_ERR_MEDIA).
 * *SIZE (may be NULL) gets the file size. */
md_status md_video_check_file(const char *path, long long *size, char *err, size_t errlen);

/* The status and message for an FFmpeg error RET from opening or probing a file
 * (MD_ERR_CANCELLED when CANCELLED). */
md_status md_video_open_error(int ret, int cancelled, char *err, size_t errlen);

/* An open file as FFmpeg reads it (probe.c): our own read-only descriptor behind a custom
 * AVIOContext, the guard that refuses every other open, and FFmpeg's first error line. */
typedef struct md_video_input md_video_input;

/* Opens PATH for demuxing the way every entry point must (video.h, "Hostile files"): checks the
 * file (md_video_check_file), opens it once, detects its format and refuses the ones that open
 * other files (unless OPTS->allow_nested; OPTS NULL is the default), opens the demuxer with
 * MD_VIDEO_MAX_STREAMS, refuses pictures beyond MD_VIDEO_MAX_PIXELS / _MAX_DIM before the
 * parameter search, and runs that search with decoders limited the same way. INTERRUPT (may be
 * NULL) is FFmpeg's interrupt callback, also polled on every read. *FMT is set as soon as the
 * context exists (so INTERRUPT may look at it) and is NULL again on failure; *IN owns the
 * descriptor; *SIZE (may be NULL) gets the file size. Release both with md_video_input_close(). */
md_status md_video_input_open(const char *path, const md_video_open_opts *opts, int (*interrupt)(void *),
                              void *interrupt_ctx, struct AVFormatContext **fmt, md_video_input **in,
                              long long *size, char *err, size_t errlen);

/* MD_ERR_MEDIA "refused: ..." once the file has asked FFmpeg to open another file (the guard said
 * no), else MD_OK. Reading goes on after a refusal, so callers check this after each stage. */
md_status md_video_input_check(const md_video_input *in, char *err, size_t errlen);

/* Closes *FMT (set to NULL) and then IN; either may be NULL. */
void md_video_input_close(md_video_input *in, struct AVFormatContext **fmt);

/* Stream-time arithmetic that saturates instead of overflowing: timestamps come from the file and
 * may be anywhere in int64 range. */
static inline int64_t md_video_sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

static inline int64_t md_video_sat_sub(int64_t a, int64_t b)
{
    if (b < 0 && a > INT64_MAX + b)
        return INT64_MAX;
    if (b > 0 && a < INT64_MIN + b)
        return INT64_MIN;
    return a - b;
}

#endif
