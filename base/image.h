/* image.h - CLIP's image preprocessing on pictures in memory (image.c): Pillow-exact bicubic
 * resize of the shortest side, center crop, normalisation, rotation and alpha. Pure C, no FFmpeg:
 * the decoder (video/) and the backends (the CPU reference and the CUDA kernel's coefficient
 * tables) both use it, so it sits in base/ below them.
 */
#ifndef MD_BASE_IMAGE_H
#define MD_BASE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define MD_IMAGE_MAX_SIZE 1024 /* largest output size S */

/* CLIP's normalisation (openai/clip-vit-*), used when a caller passes NULL mean/std. */
extern const float md_image_clip_mean[3], md_image_clip_std[3];

/* Reusable preprocessing state for one output size and normalisation: the per-channel
 * normalisation tables, resampling coefficients cached for the last input geometry, and scratch
 * buffers. Not thread-safe; one per decoder. */
typedef struct md_image_prep {
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
} md_image_prep;

/* NULL when out of memory or SIZE is out of range (1..MD_IMAGE_MAX_SIZE); MEAN/STD NULL mean CLIP's. */
md_image_prep *md_image_prep_new(int size, const float mean[3], const float std[3]);
void md_image_prep_free(md_image_prep *p);
/* RGB24 picture WIDTH x HEIGHT as stored (rows STRIDE bytes apart), turned ROTATION degrees
 * clockwise for display, to 3 x S x S floats at OUT. MD_ERR_INVALID for a rotation other than
 * 0/90/180/270. */
md_status md_image_prep_run(md_image_prep *p, const uint8_t *rgb, int width, int height, ptrdiff_t stride,
                            int rotation, float *out);
/* Composites an RGBA picture onto white into p's buffer; *RGB_OUT is borrowed until the next call. */
md_status md_image_prep_flatten(md_image_prep *p, const uint8_t *rgba, int width, int height, ptrdiff_t stride,
                                const uint8_t **rgb_out, ptrdiff_t *stride_out);

/* Preprocesses one picture held in memory: WIDTH x HEIGHT pixels as stored, rows STRIDE bytes
 * apart, CHANNELS 3 (RGB24) or 4 (RGBA, composited onto white), displayed turned ROTATION
 * (0/90/180/270) degrees clockwise. Resize shortest side to SIZE with PIL's bicubic filter,
 * center crop SIZE x SIZE, scale to [0, 1], normalise: bit-exact with Hugging Face
 * CLIPImageProcessor on the same picture. MD_ERR_INVALID for bad arguments, MD_ERR_NOMEM. */
md_status md_image_preprocess(const unsigned char *pixels, int width, int height, ptrdiff_t stride,
                                  int channels, int rotation, int size, const float mean[3], const float std[3],
                                  float *out_chw);

/* Pillow's bicubic resampling weights (precompute_coeffs + normalize_coeffs_8bpc, fixed point
 * with 22 fraction bits) for the N output positions starting at OUT0 of a resize of one axis from
 * IN_SIZE to OUT_SIZE: N (first input index, count) pairs into BOUNDS and N rows of KSIZE weights
 * into KK. Returns KSIZE (also when BOUNDS or KK is NULL, to size the tables first), or -1 for bad
 * arguments or no memory. Shared by the CPU preprocessing and the CUDA kernel's tables. */
int md_image_bicubic_coeffs(int in_size, int out_size, int out0, int n, int *bounds, int32_t *kk);

#endif
