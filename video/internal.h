/* internal.h - what the files of video/ share and nothing outside video/ may use: the
 * preprocessing context behind md_video_preprocess_rgb() and the decoder, and small FFmpeg helpers
 * (this header may include FFmpeg's; video.h must not).
 */
#ifndef MD_VIDEO_INTERNAL_H
#define MD_VIDEO_INTERNAL_H

#include "video.h"

#include <stddef.h>
#include <stdint.h>

struct AVStream;

extern const float md_video_clip_mean[3], md_video_clip_std[3];

/* Reusable preprocessing state for one output size and normalisation: the per-channel
 * normalisation tables, resampling coefficients cached for the last input geometry, and scratch
 * buffers. Not thread-safe; one per decoder. */
typedef struct md_video_prep {
    int size;
    float lut[3][256];
    int w, h;               /* display geometry the coefficients are for; 0 = none yet */
    int rw, rh, left, top;  /* resized size and the crop's corner in it */
    int *hb, *vb;           /* (first source pixel, count) per kept output column / row */
    int32_t *hk, *vk;       /* fixed-point weights, hks / vks per output */
    int hks, vks;
    uint8_t *tmp;           /* horizontal pass output */
    size_t tmp_cap;
    uint8_t *flat;          /* RGBA composited onto white */
    size_t flat_cap;
} md_video_prep;

/* NULL when out of memory or SIZE is out of range; MEAN/STD NULL mean CLIP's. */
md_video_prep *md_video_prep_new(int size, const float mean[3], const float std[3]);
void md_video_prep_free(md_video_prep *p);
/* RGB24 picture WIDTH x HEIGHT as stored (rows STRIDE bytes apart), turned ROTATION degrees
 * clockwise for display, to 3 x S x S floats at OUT. MD_ERR_INVALID for a rotation other than
 * 0/90/180/270. */
md_status md_video_prep_run(md_video_prep *p, const uint8_t *rgb, int width, int height, ptrdiff_t stride,
                            int rotation, float *out);
/* Composites an RGBA picture onto white into p's buffer; *RGB_OUT is borrowed until the next call. */
md_status md_video_prep_flatten(md_video_prep *p, const uint8_t *rgba, int width, int height, ptrdiff_t stride,
                                const uint8_t **rgb_out, ptrdiff_t *stride_out);

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
