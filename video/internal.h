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

/* Clockwise quarter turns (0/90/180/270) from a stream's display matrix; 0 without one. */
int md_video_stream_rotation(const struct AVStream *st);


/* The checks before FFmpeg opens PATH, with messages clearer than FFmpeg's: missing
 * (MD_ERR_NOT_FOUND), unreadable (MD_ERR_IO), not a regular file or empty (MD_ERR_MEDIA).
 * *SIZE (may be NULL) gets the file size. */
md_status md_video_check_file(const char *path, long long *size, char *err, size_t errlen);

/* The status and message for an FFmpeg error RET from opening or probing a file
 * (MD_ERR_CANCELLED when CANCELLED). */
md_status md_video_open_error(int ret, int cancelled, char *err, size_t errlen);

#endif
