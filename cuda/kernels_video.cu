/* kernels_video.cu - CLIP preprocessing on the GPU: uint8 RGB frames in, normalised planes out,
 * with the integer arithmetic of Pillow's bicubic resampling, so the result is bit for bit the
 * CPU's (video/preprocess.c, md_image_preprocess):
 *
 *   pass 1 (horizontal): for every source row the vertical pass reads, the S kept output columns
 *          = clip8((sum_x src[xmin + x] * hk[x] + 2^21) >> 22), or the kept columns copied when
 *          the width does not change;
 *   pass 2 (vertical):   out[c][i][j] = lut[c][clip8((sum_y tmp[ymin + y][j] * vk[y] + 2^21) >> 22)]
 *
 * The coefficient tables come from md_backend_bicubic_coeffs (Pillow's, computed on the host in
 * double exactly as the CPU does) and the 256-entry normalisation tables are computed on the host
 * with the CPU's formula, so both passes are exact integer work on the device. Only the pixels the
 * crop keeps are computed. Frames are done in groups so the intermediate stays small. */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define PREC_BITS 22

__device__ __forceinline__ unsigned char clip8(int v)
{
    v >>= PREC_BITS; /* arithmetic shift, as Pillow */
    return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* TMP[f][r][j][c] for rows r < n_rows (source row y_first + r) and kept columns j < S. */
__global__ void prep_h_k(const uint8_t *rgb, size_t stride, size_t fstride, int n_rows, int y_first, int S,
                         int need_h, int left, const int *hb, const int *hk, int hks, uint8_t *tmp)
{
    const int f = blockIdx.y;
    const size_t per = (size_t)n_rows * S;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < per; i += (size_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / S), j = (int)(i - (size_t)r * S);
        const uint8_t *row = rgb + f * fstride + (size_t)(y_first + r) * stride;
        uint8_t *t = tmp + ((size_t)f * per + i) * 3;
        if (!need_h) {
            const uint8_t *p = row + (size_t)(left + j) * 3;
            t[0] = p[0];
            t[1] = p[1];
            t[2] = p[2];
            continue;
        }
        const int xmin = hb[2 * j], xn = hb[2 * j + 1];
        const int *k = hk + (size_t)j * hks;
        const uint8_t *p = row + (size_t)xmin * 3;
        int s0 = 1 << (PREC_BITS - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < xn; x++, p += 3) {
            s0 += p[0] * k[x];
            s1 += p[1] * k[x];
            s2 += p[2] * k[x];
        }
        t[0] = clip8(s0);
        t[1] = clip8(s1);
        t[2] = clip8(s2);
    }
}

__global__ void prep_v_k(const uint8_t *tmp, int n_rows, int y_first, int S, int need_v, int top, const int *vb,
                         const int *vk, int vks, const float *lut, float *out)
{
    const int f = blockIdx.y;
    const size_t plane = (size_t)S * S;
    const uint8_t *tf = tmp + (size_t)f * n_rows * S * 3;
    float *of = out + (size_t)f * 3 * plane;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < plane; i += (size_t)gridDim.x * blockDim.x) {
        const int oi = (int)(i / S), j = (int)(i - (size_t)oi * S);
        unsigned char v0, v1, v2;
        if (!need_v) {
            const uint8_t *t = tf + ((size_t)(top + oi - y_first) * S + j) * 3;
            v0 = t[0];
            v1 = t[1];
            v2 = t[2];
        } else {
            const int ymin = vb[2 * oi], yn = vb[2 * oi + 1];
            const int *k = vk + (size_t)oi * vks;
            const uint8_t *t = tf + ((size_t)(ymin - y_first) * S + j) * 3;
            const size_t trow = (size_t)S * 3;
            int s0 = 1 << (PREC_BITS - 1), s1 = s0, s2 = s0;
            for (int y = 0; y < yn; y++, t += trow) {
                s0 += t[0] * k[y];
                s1 += t[1] * k[y];
                s2 += t[2] * k[y];
            }
            v0 = clip8(s0);
            v1 = clip8(s1);
            v2 = clip8(s2);
        }
        of[i] = lut[v0];
        of[plane + i] = lut[256 + v1];
        of[2 * plane + i] = lut[512 + v2];
    }
}

md_status md_cu_preprocess(const uint8_t *rgb, int n, int w, int h, size_t stride, size_t fstride, int S,
                           const float mean[3], const float std[3], float *out)
{
    cudaStream_t st = md_cu_stream();
    if (!st)
        return MD_ERR_UNAVAILABLE;
    int rw, rh;
    if (n < 0 || S < 1 || stride < (size_t)w * 3 || md_backend_resize_dims(w, h, S, &rw, &rh) != MD_OK)
        return md_cu_failf(MD_ERR_INVALID, "cuda: preprocess: bad geometry %dx%d to %d", w, h, S);
    if (n == 0)
        return MD_OK;
    const int left = (rw - S) / 2, top = (rh - S) / 2, need_h = rw != w, need_v = rh != h;
    const int hks = md_backend_bicubic_coeffs(w, rw, left, S, NULL, NULL);
    const int vks = md_backend_bicubic_coeffs(h, rh, top, S, NULL, NULL);
    if (hks < 0 || vks < 0)
        return md_cu_failf(MD_ERR_INVALID, "cuda: preprocess: bad geometry %dx%d to %d", w, h, S);
    /* Host tables: [hb 2S | vb 2S | hk S*hks | vk S*vks] ints, then the 3 x 256 floats of lut. */
    const size_t n_int = (size_t)4 * S + (size_t)S * hks + (size_t)S * vks;
    const size_t tab_bytes = n_int * 4 + 3 * 256 * sizeof(float);
    char *host = (char *)malloc(tab_bytes);
    if (!host)
        return md_cu_failf(MD_ERR_NOMEM, "cuda: preprocess: out of host memory");
    int *hb = (int *)host, *vb = hb + 2 * S, *hk = vb + 2 * S, *vk = hk + (size_t)S * hks;
    float *lut = (float *)(host + n_int * 4);
    md_backend_bicubic_coeffs(w, rw, left, S, hb, (int32_t *)hk);
    md_backend_bicubic_coeffs(h, rh, top, S, vb, (int32_t *)vk);
    for (int c = 0; c < 3; c++)
        for (int u = 0; u < 256; u++) {
            /* numpy: (uint8 as float64 * (1/255)) cast to float32, then float32 (x - m) / s. */
            float x = (float)((double)u * (1.0 / 255.0));
            lut[c * 256 + u] = (x - mean[c]) / std[c];
        }
    /* Source rows the vertical pass reads: the true extent over every kept output row. */
    int y_first = need_v ? vb[0] : top, y_last = need_v ? vb[0] + vb[1] : top + S;
    for (int i = 0; need_v && i < S; i++) {
        if (vb[2 * i] < y_first)
            y_first = vb[2 * i];
        if (vb[2 * i] + vb[2 * i + 1] > y_last)
            y_last = vb[2 * i] + vb[2 * i + 1];
    }
    const int n_rows = y_last - y_first;
    /* Frames per group: the intermediate at most ~64 MiB. */
    const size_t per_frame = (size_t)n_rows * S * 3;
    int group = (int)((64u << 20) / (per_frame ? per_frame : 1));
    group = group < 1 ? 1 : group > n ? n : group > 65535 ? 65535 : group;
    void *dtab = nullptr, *dtmp = nullptr;
    const size_t tmp_bytes = per_frame * group;
    md_status rc = md_cu_scratch(tab_bytes, &dtab, "preprocess tables");
    if (rc == MD_OK)
        rc = md_cu_scratch(tmp_bytes, &dtmp, "preprocess intermediate");
    if (rc == MD_OK)
        rc = md_cu_fail(cudaMemcpyAsync(dtab, host, tab_bytes, cudaMemcpyHostToDevice, st), "preprocess tables");
    /* HOST must outlive the copy (pageable memory: the call returns once it is staged). */
    if (rc == MD_OK)
        rc = md_cu_fail(cudaStreamSynchronize(st), "preprocess tables");
    free(host);
    const int *dhb = (const int *)dtab, *dvb = dhb + 2 * S, *dhk = dvb + 2 * S, *dvk = dhk + (size_t)S * hks;
    const float *dlut = (const float *)((const char *)dtab + n_int * 4);
    for (int f0 = 0; rc == MD_OK && f0 < n; f0 += group) {
        const int g = n - f0 < group ? n - f0 : group;
        const uint8_t *src = rgb + (size_t)f0 * fstride;
        dim3 gh(md_cu_blocks(per_frame / 3, 256) > 4096 ? 4096 : md_cu_blocks(per_frame / 3, 256), g);
        MD_LAUNCH(gh, 256, 0, st, prep_h_k)(src, stride, fstride, n_rows, y_first, S, need_h, left, dhb, dhk, hks,
                                     (uint8_t *)dtmp);
        if ((rc = md_cu_check("preprocess (horizontal)")) != MD_OK)
            break;
        dim3 gv(md_cu_blocks((size_t)S * S, 256) > 4096 ? 4096 : md_cu_blocks((size_t)S * S, 256), g);
        MD_LAUNCH(gv, 256, 0, st, prep_v_k)((const uint8_t *)dtmp, n_rows, y_first, S, need_v, top, dvb, dvk, vks, dlut,
                                     out + (size_t)f0 * 3 * S * S);
        rc = md_cu_check("preprocess (vertical)");
    }
    md_cu_scratch_free(dtmp, tmp_bytes);
    md_cu_scratch_free(dtab, tab_bytes);
    return rc;
}
