/* image.c - CLIP's image preprocessing on RGB24 pictures, bit for bit as Hugging Face
 * CLIPImageProcessor (its PIL implementation) does it:
 *
 *   1. resize so the shortest side is S: the long side becomes int(S * long / short), with PIL's
 *      BICUBIC resampling of the uint8 image (Pillow's Resample.c: separable, horizontal pass then
 *      vertical pass, Keys cubic with a = -0.5 whose support is stretched by the downscale factor
 *      so downscaling is antialiased, coefficients in 22-bit fixed point, each pass rounds and
 *      clips to uint8);
 *   2. center crop S x S at ((w - S) // 2, (h - S) // 2);
 *   3. x = float32(u * (1/255 in double)), then (x - mean) / std in float32, channel-first.
 *
 * Only the output pixels the crop keeps are computed: each resized pixel depends on its own
 * window of the source alone, so computing the kept ones is the same as resizing everything and
 * cropping, at half the cost or less. Step 3 is a 256-entry table per channel, exact because the
 * resized values are uint8.
 *
 * Rotation (the display matrix) is applied by walking the source with rotated strides, so the
 * resampler sees the picture as it is displayed without a rotated copy being made.
 *
 * Pictures with alpha are composited onto opaque white first, with PIL's alpha_composite integer
 * arithmetic, as CLIPImageProcessor's convert-to-RGB step does.
 */
#include "image.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

const float md_image_clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float md_image_clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

/* Pillow's bicubic_filter: Keys' cubic convolution kernel with a = -0.5, support 2. */
static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

int md_image_bicubic_coeffs(int in_size, int out_size, int out0, int n, int *bounds, int32_t *kk)
{
    if (in_size < 1 || out_size < 1 || n < 0 || out0 < 0 || out0 + n > out_size)
        return -1;
    /* Pillow takes the box edges as float; (double)(in1 - in0) is in_size exactly. */
    const float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    if (!bounds || !kk)
        return ksize;
    double *k = malloc(sizeof(double) * (size_t)ksize);
    if (!k)
        return -1;
    for (int i = 0; i < n; i++) {
        int xx = out0 + i;
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5); /* truncation, as Pillow */
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        int x;
        for (x = 0; x < xmax; x++) {
            double w = bicubic((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0)
                k[x] /= ww;
        for (; x < ksize; x++)
            k[x] = 0;
        int32_t *ki = kk + (size_t)i * (size_t)ksize;
        for (x = 0; x < ksize; x++)
            ki[x] = k[x] < 0 ? (int32_t)(-0.5 + k[x] * (1 << PRECISION_BITS))
                             : (int32_t)(0.5 + k[x] * (1 << PRECISION_BITS));
        bounds[2 * i] = xmin;
        bounds[2 * i + 1] = xmax;
    }
    free(k);
    return ksize;
}

/* md_image_bicubic_coeffs into freshly allocated tables (the caller frees both). */
static int coeffs(int in_size, int out_size, int out0, int n, int **bounds_out, int32_t **kk_out)
{
    int ksize = md_image_bicubic_coeffs(in_size, out_size, out0, n, NULL, NULL);
    if (ksize < 0)
        return -1;
    int *bounds = malloc(sizeof(int) * 2 * (size_t)(n ? n : 1));
    int32_t *kk = malloc(sizeof(int32_t) * (size_t)ksize * (size_t)(n ? n : 1));
    if (!bounds || !kk || md_image_bicubic_coeffs(in_size, out_size, out0, n, bounds, kk) < 0) {
        free(bounds);
        free(kk);
        return -1;
    }
    *bounds_out = bounds;
    *kk_out = kk;
    return ksize;
}

static inline uint8_t clip8(int32_t v)
{
    v >>= PRECISION_BITS; /* arithmetic shift, as Pillow's lookup table index */
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

void md_image_prep_free(md_image_prep *p)
{
    if (!p)
        return;
    free(p->hb);
    free(p->hk);
    free(p->vb);
    free(p->vk);
    free(p->tmp);
    free(p->flat);
    free(p);
}

md_image_prep *md_image_prep_new(int size, const float mean[3], const float std[3])
{
    if (size < 1 || size > MD_IMAGE_MAX_SIZE)
        return NULL;
    md_image_prep *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->size = size;
    for (int c = 0; c < 3; c++) {
        float m = mean ? mean[c] : md_image_clip_mean[c];
        float s = std ? std[c] : md_image_clip_std[c];
        for (int u = 0; u < 256; u++) {
            /* numpy: (uint8 as float64 * (1/255)) cast to float32, then float32 (x - m) / s. */
            float x = (float)((double)u * (1.0 / 255.0));
            p->lut[c][u] = (x - m) / s;
        }
    }
    return p;
}

/* Makes sure the coefficient tables match a W x H (display orientation) picture. */
static md_status prep_geometry(md_image_prep *p, int w, int h)
{
    if (p->w == w && p->h == h && p->hk && p->vk)
        return MD_OK;
    free(p->hb);
    free(p->hk);
    free(p->vb);
    free(p->vk);
    p->hb = p->vb = NULL;
    p->hk = p->vk = NULL;
    p->w = p->h = 0;
    int S = p->size;
    /* get_resize_output_image_size(default_to_square=False): the short side becomes S, the long
     * one int(S * long / short), both divisions exact in double as in Python. */
    long long rw, rh;
    if (w <= h) {
        rw = S;
        rh = (long long)((double)((long long)S * h) / (double)w);
    } else {
        rh = S;
        rw = (long long)((double)((long long)S * w) / (double)h);
    }
    if (rw < S || rh < S || rw > INT32_MAX || rh > INT32_MAX)
        return MD_ERR_INVALID;
    p->rw = (int)rw;
    p->rh = (int)rh;
    p->left = (p->rw - S) / 2;
    p->top = (p->rh - S) / 2;
    p->hks = coeffs(w, p->rw, p->left, S, &p->hb, &p->hk);
    if (p->hks < 0)
        return MD_ERR_NOMEM;
    p->vks = coeffs(h, p->rh, p->top, S, &p->vb, &p->vk);
    if (p->vks < 0)
        return MD_ERR_NOMEM;
    p->w = w;
    p->h = h;
    return MD_OK;
}

static md_status grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return MD_OK;
    uint8_t *nb = realloc(*buf, need);
    if (!nb)
        return MD_ERR_NOMEM;
    *buf = nb;
    *cap = need;
    return MD_OK;
}

md_status md_image_prep_run(md_image_prep *p, const uint8_t *rgb, int width, int height, ptrdiff_t stride,
                            int rotation, float *out)
{
    if (!p || !rgb || !out || width <= 0 || height <= 0)
        return MD_ERR_INVALID;
    /* Display geometry and the source walk for it: pixel (X, Y) of the displayed picture is at
     * origin + X * sx + Y * sy. Rotation is clockwise. */
    const uint8_t *origin = rgb;
    ptrdiff_t sx = 3, sy = stride;
    int w = width, h = height;
    switch (rotation) {
    case 0:
        break;
    case 90: /* the stored top-left corner ends up top-right */
        w = height;
        h = width;
        origin = rgb + (ptrdiff_t)(height - 1) * stride;
        sx = -stride;
        sy = 3;
        break;
    case 180:
        origin = rgb + (ptrdiff_t)(height - 1) * stride + 3 * (ptrdiff_t)(width - 1);
        sx = -3;
        sy = -stride;
        break;
    case 270: /* the stored top-left corner ends up bottom-left */
        w = height;
        h = width;
        origin = rgb + 3 * (ptrdiff_t)(width - 1);
        sx = stride;
        sy = -3;
        break;
    default:
        return MD_ERR_INVALID;
    }
    md_status st = prep_geometry(p, w, h);
    if (st != MD_OK)
        return st;

    const int S = p->size;
    const int need_h = p->rw != w, need_v = p->rh != h;
    /* Rows of the displayed picture the vertical pass reads (all of it when there is none). */
    int y_first = need_v ? p->vb[0] : p->top;
    int y_last = need_v ? p->vb[2 * (S - 1)] + p->vb[2 * (S - 1) + 1] : p->top + S;
    for (int i = 0; need_v && i < S; i++) {
        /* Bounds are not monotonic in every corner case; take the true extent. */
        if (p->vb[2 * i] < y_first)
            y_first = p->vb[2 * i];
        if (p->vb[2 * i] + p->vb[2 * i + 1] > y_last)
            y_last = p->vb[2 * i] + p->vb[2 * i + 1];
    }
    int n_rows = y_last - y_first;

    /* Horizontal pass into tmp: n_rows x S pixels, RGB interleaved. Without one, tmp is the
     * source's kept columns copied, so the vertical pass reads one layout either way. */
    size_t need = (size_t)n_rows * (size_t)S * 3;
    if ((st = grow(&p->tmp, &p->tmp_cap, need)) != MD_OK)
        return st;
    for (int r = 0; r < n_rows; r++) {
        const uint8_t *row = origin + (ptrdiff_t)(y_first + r) * sy;
        uint8_t *t = p->tmp + (size_t)r * (size_t)S * 3;
        if (!need_h) {
            for (int j = 0; j < S; j++) {
                const uint8_t *s = row + (ptrdiff_t)(p->left + j) * sx;
                t[3 * j] = s[0];
                t[3 * j + 1] = s[1];
                t[3 * j + 2] = s[2];
            }
            continue;
        }
        for (int j = 0; j < S; j++) {
            const int32_t *k = p->hk + (size_t)j * (size_t)p->hks;
            int xmin = p->hb[2 * j], xn = p->hb[2 * j + 1];
            const uint8_t *s = row + (ptrdiff_t)xmin * sx;
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xn; x++, s += sx) {
                s0 += s[0] * k[x];
                s1 += s[1] * k[x];
                s2 += s[2] * k[x];
            }
            t[3 * j] = clip8(s0);
            t[3 * j + 1] = clip8(s1);
            t[3 * j + 2] = clip8(s2);
        }
    }

    /* Vertical pass, straight into the normalised planes. */
    const size_t plane = (size_t)S * (size_t)S;
    const size_t trow = (size_t)S * 3;
    for (int i = 0; i < S; i++) {
        float *o0 = out + (size_t)i * S, *o1 = o0 + plane, *o2 = o1 + plane;
        if (!need_v) {
            const uint8_t *t = p->tmp + (size_t)(p->top + i - y_first) * trow;
            for (int j = 0; j < S; j++) {
                o0[j] = p->lut[0][t[3 * j]];
                o1[j] = p->lut[1][t[3 * j + 1]];
                o2[j] = p->lut[2][t[3 * j + 2]];
            }
            continue;
        }
        const int32_t *k = p->vk + (size_t)i * (size_t)p->vks;
        int ymin = p->vb[2 * i], yn = p->vb[2 * i + 1];
        const uint8_t *t0 = p->tmp + (size_t)(ymin - y_first) * trow;
        for (int j = 0; j < S; j++) {
            const uint8_t *t = t0 + 3 * j;
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int y = 0; y < yn; y++, t += trow) {
                s0 += t[0] * k[y];
                s1 += t[1] * k[y];
                s2 += t[2] * k[y];
            }
            o0[j] = p->lut[0][clip8(s0)];
            o1[j] = p->lut[1][clip8(s1)];
            o2[j] = p->lut[2][clip8(s2)];
        }
    }
    return MD_OK;
}

/* PIL's alpha_composite of RGBA over opaque white (AlphaComposite.c, PRECISION_BITS 7): the
 * premultiplying runs in integers with a rounding divide by 255. */
#define SHIFTFORDIV255(a) ((((a) >> 8) + (a)) >> 8)

md_status md_image_prep_flatten(md_image_prep *p, const uint8_t *rgba, int width, int height, ptrdiff_t stride,
                                const uint8_t **rgb_out, ptrdiff_t *stride_out)
{
    size_t need = (size_t)width * (size_t)height * 3;
    md_status st = grow(&p->flat, &p->flat_cap, need);
    if (st != MD_OK)
        return st;
    for (int y = 0; y < height; y++) {
        const uint8_t *s = rgba + (ptrdiff_t)y * stride;
        uint8_t *d = p->flat + (size_t)y * (size_t)width * 3;
        for (int x = 0; x < width; x++, s += 4, d += 3) {
            uint32_t a = s[3];
            if (a == 0) {
                d[0] = d[1] = d[2] = 255;
                continue;
            }
            /* dst is white and opaque: blend = 255 * (255 - a), outa255 = a * 255 + blend. */
            uint32_t blend = 255u * (255u - a);
            uint32_t outa255 = a * 255u + blend;
            uint32_t coef1 = a * 255u * 255u * (1u << 7) / outa255;
            uint32_t coef2 = 255u * (1u << 7) - coef1;
            for (int c = 0; c < 3; c++) {
                uint32_t tmp = s[c] * coef1 + 255u * coef2;
                d[c] = (uint8_t)(SHIFTFORDIV255(tmp + (0x80u << 7)) >> 7);
            }
        }
    }
    *rgb_out = p->flat;
    *stride_out = (ptrdiff_t)width * 3;
    return MD_OK;
}

md_status md_image_preprocess(const unsigned char *pixels, int width, int height, ptrdiff_t stride,
                                  int channels, int rotation, int size, const float mean[3], const float std[3],
                                  float *out_chw)
{
    if (!pixels || !out_chw || width <= 0 || height <= 0 || (channels != 3 && channels != 4) ||
        size < 1 || size > MD_IMAGE_MAX_SIZE || stride < (ptrdiff_t)width * channels)
        return MD_ERR_INVALID;
    md_image_prep *p = md_image_prep_new(size, mean, std);
    if (!p)
        return MD_ERR_NOMEM;
    md_status st = MD_OK;
    const uint8_t *rgb = pixels;
    ptrdiff_t rs = stride;
    if (channels == 4)
        st = md_image_prep_flatten(p, pixels, width, height, stride, &rgb, &rs);
    if (st == MD_OK)
        st = md_image_prep_run(p, rgb, width, height, rs, rotation, out_chw);
    md_image_prep_free(p);
    return st;
}
