/* kernels_nn.cu - the transformer kernels of the CUDA backend: type conversion, bias +
 * activation epilogues, the residual add fused with the next layernorm, fused attention, patch
 * embedding (im2col), class/position embeddings, add, l2norm. All math in F32 whatever the
 * storage type; the CPU versions in engine/backend_cpu.c are the references. */
#include <math.h>
#include <string.h>

#include <type_traits>

#include "cuda_internal.h"

#define FULL 0xffffffffu

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets it. SH: 32 floats. */
__device__ float block_sum(float v, float *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* SH may still be read by a previous call */
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float act_f(int act, float v)
{
    switch (act) {
    case MD_OP_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case MD_OP_GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case MD_OP_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
    default: return v;
    }
}

/* Calls F with a null pointer of the C++ type of T (float, __half, __nv_bfloat16). */
template <typename F> static md_status with_type(md_bt t, F f)
{
    switch (t) {
    case MD_BT_F16: return f((__half *)nullptr);
    case MD_BT_BF16: return f((__nv_bfloat16 *)nullptr);
    default: return f((float *)nullptr);
    }
}

/* ---------------------------------------------------------------- element-wise */

template <typename TI, typename TO> __global__ void convert_k(const TI *x, TO *y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        md_st(y, i, md_ld(x, i));
}

md_status md_cu_convert(const void *x, md_bt xt, void *y, md_bt yt, size_t n)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    if (n == 0)
        return MD_OK;
    if (xt == yt)
        return md_cu_fail(cudaMemcpyAsync(y, x, n * md_bt_size(xt), cudaMemcpyDeviceToDevice, s), "convert");
    return with_type(xt, [&](auto *ti) {
        return with_type(yt, [&](auto *to) {
            using TI = typename std::remove_pointer<decltype(ti)>::type;
            using TO = typename std::remove_pointer<decltype(to)>::type;
            MD_LAUNCH(md_cu_blocks(n, 256), 256, 0, s, convert_k<TI, TO>)((const TI *)x, (TO *)y, n);
            return md_cu_check("convert");
        });
    });
}

/* Without a bias: a flat grid-stride loop. With one: a block per row (grid-stride over rows), the
 * threads across the row's columns, so no element needs a division to find its column. */
template <typename TI, typename TO>
__global__ void bias_act_k(const TI *x, const float *b, size_t total, int cols, int act, TO *y)
{
    if (!b) {
        for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
            md_st(y, i, act_f(act, md_ld(x, i)));
        return;
    }
    const size_t rows = total / cols;
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x)
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const size_t i = r * cols + c;
            md_st(y, i, act_f(act, md_ld(x, i) + b[c]));
        }
}

md_status md_cu_bias_act(md_op act, const void *x, md_bt xt, const float *b, size_t total, int cols, void *y, md_bt yt)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    if (act != MD_OP_NONE && act != MD_OP_GELU && act != MD_OP_GELU_TANH && act != MD_OP_QUICK_GELU)
        return md_cu_failf(MD_ERR_UNSUPPORTED, "cuda: bias_act: %s is not an activation", md_op_name(act));
    if (total == 0)
        return MD_OK;
    return with_type(xt, [&](auto *ti) {
        return with_type(yt, [&](auto *to) {
            using TI = typename std::remove_pointer<decltype(ti)>::type;
            using TO = typename std::remove_pointer<decltype(to)>::type;
            const unsigned blocks = b ? (unsigned)(total / cols < 65535u * 16 ? total / cols : 65535u * 16)
                                      : md_cu_blocks(total, 256);
            MD_LAUNCH(blocks ? blocks : 1, 256, 0, s, bias_act_k<TI, TO>)((const TI *)x, b, total, cols, (int)act,
                                                                         (TO *)y);
            return md_cu_check("bias_act");
        });
    });
}

template <typename T> __global__ void bias_rows_k(T *y, const float *bias, int rows, int cols, int accumulate)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x)
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const size_t i = (size_t)r * cols + c;
            md_st(y, i, accumulate ? md_ld(y, i) + bias[c] : bias[c]);
        }
}

md_status md_cu_bias_rows(void *y, md_bt yt, const float *bias, int rows, int cols, int accumulate)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    size_t total = (size_t)rows * cols;
    if (total == 0)
        return MD_OK;
    return with_type(yt, [&](auto *to) {
        using TO = typename std::remove_pointer<decltype(to)>::type;
        MD_LAUNCH(rows < 65535 * 16 ? rows : 65535 * 16, 256, 0, s, bias_rows_k<TO>)((TO *)y, bias, rows, cols,
                                                                                       accumulate);
        return md_cu_check("gemm bias");
    });
}

__global__ void add_k(float *y, const float *x, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

md_status md_cu_add(float *y, const float *x, size_t n)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    if (n == 0)
        return MD_OK;
    MD_LAUNCH(md_cu_blocks(n, 256), 256, 0, s, add_k)(y, x, n);
    return md_cu_check("add");
}

/* One warp per row. */
__global__ void l2norm_k(float *y, int rows, int dim)
{
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows)
        return;
    float *r = y + (size_t)row * dim;
    float ss = 0.0f;
    for (int i = lane; i < dim; i += 32)
        ss += r[i] * r[i];
    ss = warp_sum(ss);
    if (ss > 0.0f) {
        float inv = 1.0f / sqrtf(ss);
        for (int i = lane; i < dim; i += 32)
            r[i] *= inv;
    }
}

md_status md_cu_l2norm(float *y, int rows, int dim)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    if (rows == 0)
        return MD_OK;
    MD_LAUNCH((rows + 7) / 8, 256, 0, s, l2norm_k)(y, rows, dim);
    return md_cu_check("l2norm");
}

/* ---------------------------------------------------------------- residual + layernorm */

/* One block per row: x += r (+ rb); y = (x - mean) / sqrt(var + eps) * g + b with the variance
 * taken around the mean (two passes over the row, which stays in L1). */
template <typename TR, typename TY>
__global__ void add_layernorm_k(float *x, const TR *r, const float *rb, int dim, const float *g, const float *b,
                                float eps, TY *y)
{
    __shared__ float sh[32];
    const size_t off = (size_t)blockIdx.x * dim;
    float *xr = x + off;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i];
        if (r) {
            v = (rb ? v + rb[i] : v) + md_ld(r, off + i);
            xr[i] = v;
        }
        s += v;
    }
    if (!y)
        return;
    const float mean = block_sum(s, sh) / dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float d = xr[i] - mean;
        ss += d * d;
    }
    const float inv = rsqrtf(block_sum(ss, sh) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        md_st(y, off + i, (xr[i] - mean) * inv * g[i] + b[i]);
}

md_status md_cu_add_layernorm(float *x, const void *r, md_bt rt, const float *rb, int rows, int dim, const float *g,
                              const float *b, float eps, void *y, md_bt yt)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    if (rows == 0 || (!r && !y))
        return MD_OK;
    const int threads = dim >= 512 ? 256 : dim >= 128 ? 128 : 32;
    return with_type(rt, [&](auto *tr) {
        return with_type(yt, [&](auto *ty) {
            using TR = typename std::remove_pointer<decltype(tr)>::type;
            using TY = typename std::remove_pointer<decltype(ty)>::type;
            MD_LAUNCH(rows, threads, 0, s, add_layernorm_k<TR, TY>)(x, (const TR *)r, rb, dim, g, b, eps, (TY *)y);
            return md_cu_check("add_layernorm");
        });
    });
}

/* ---------------------------------------------------------------- attention */

/* Fused attention, flash style: a block of ATT_WARPS warps takes ATT_QPW queries per warp of one
 * (sequence, head) and streams the keys and values through shared memory in tiles of 32, keeping
 * for each query the running maximum, the softmax denominator and the output (lane c holds
 * output columns c, c + 32, c + 64, c + 96: hd <= 128) in registers. Lane j scores key j of the
 * tile; the output update broadcasts each key's probability with a shuffle. */
#define ATT_WARPS 4
#define ATT_QPW 4
#define ATT_KT 32
#define ATT_QB (ATT_WARPS * ATT_QPW)

template <typename TQ, typename TO>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_k(const TQ *qkv, const float *bias, int t, int heads, int hd, int causal, float scale, TO *out)
{
    MD_EXTERN_SHARED(float, sm);
    const int hdp = hd + 1; /* padded key rows: lane j reading row j, column c hits distinct banks */
    float *ks = sm, *vs = ks + ATT_KT * hdp, *qs = vs + ATT_KT * hd;
    const int bi = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_QB;
    const int d = heads * hd, ld = 3 * d;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t base = (size_t)bi * t * ld;

    for (int i = threadIdx.x; i < ATT_QB * hd; i += blockDim.x) {
        int qi = i / hd, c = i - qi * hd, row = q0 + qi;
        qs[i] = row < t ? (md_ld(qkv, base + (size_t)row * ld + h * hd + c) + (bias ? bias[h * hd + c] : 0.0f)) * scale
                        : 0.0f;
    }
    float m[ATT_QPW], l[ATT_QPW], o[ATT_QPW][4];
#pragma unroll
    for (int qq = 0; qq < ATT_QPW; qq++) {
        m[qq] = -INFINITY;
        l[qq] = 0.0f;
#pragma unroll
        for (int r = 0; r < 4; r++)
            o[qq][r] = 0.0f;
    }
    const int qlast = min(t, q0 + ATT_QB) - 1;
    const int kend = causal ? qlast + 1 : t;
    for (int k0 = 0; k0 < kend; k0 += ATT_KT) {
        __syncthreads(); /* the previous tile is consumed (and the queries are loaded) */
        for (int i = threadIdx.x; i < ATT_KT * hd; i += blockDim.x) {
            int j = i / hd, c = i - j * hd, key = k0 + j;
            float kv = 0.0f, vv = 0.0f;
            if (key < t) {
                size_t rowo = base + (size_t)key * ld + h * hd + c;
                kv = md_ld(qkv, rowo + d);
                vv = md_ld(qkv, rowo + 2 * d);
                if (bias) {
                    kv += bias[d + h * hd + c];
                    vv += bias[2 * d + h * hd + c];
                }
            }
            ks[j * hdp + c] = kv;
            vs[j * hd + c] = vv;
        }
        __syncthreads();
#pragma unroll
        for (int qq = 0; qq < ATT_QPW; qq++) {
            const int qi = warp * ATT_QPW + qq, row = q0 + qi;
            if (row >= t) /* warp-uniform */
                continue;
            const int key = k0 + lane;
            const bool valid = key < t && (!causal || key <= row);
            float sc = -INFINITY;
            if (valid) {
                const float *qv = qs + qi * hd, *kv = ks + lane * hdp;
                float acc = 0.0f;
                for (int c = 0; c < hd; c++)
                    acc = fmaf(qv[c], kv[c], acc);
                sc = acc;
            }
            const float tmax = warp_max(sc);
            if (tmax == -INFINITY) /* every key of this tile is masked for this query */
                continue;
            const float mnew = fmaxf(m[qq], tmax);
            const float corr = expf(m[qq] - mnew); /* 0 on the first tile (m = -inf) */
            const float p = valid ? expf(sc - mnew) : 0.0f;
            l[qq] = l[qq] * corr + warp_sum(p);
#pragma unroll
            for (int r = 0; r < 4; r++)
                o[qq][r] *= corr;
            const int jn = min(ATT_KT, t - k0);
            for (int j = 0; j < jn; j++) {
                const float pj = __shfl_sync(FULL, p, j);
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    const int c = lane + 32 * r;
                    if (c < hd)
                        o[qq][r] = fmaf(pj, vs[j * hd + c], o[qq][r]);
                }
            }
            m[qq] = mnew;
        }
    }
#pragma unroll
    for (int qq = 0; qq < ATT_QPW; qq++) {
        const int row = q0 + warp * ATT_QPW + qq;
        if (row >= t)
            continue;
        const float inv = 1.0f / l[qq];
        TO *orow = out + ((size_t)bi * t + row) * d + h * hd;
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int c = lane + 32 * r;
            if (c < hd)
                md_st(orow, c, o[qq][r] * inv);
        }
    }
}

md_status md_cu_attention(const void *qkv, md_bt qt, const float *bias, int batch, int t, int heads, int hd,
                          int causal, void *out, md_bt ot)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    if (hd > 128 || hd < 1)
        return md_cu_failf(MD_ERR_UNSUPPORTED, "cuda: attention with head size %d (1 to 128 supported)", hd);
    if (batch > 65535 || heads > 65535)
        return md_cu_failf(MD_ERR_UNSUPPORTED, "cuda: attention over %d sequences of %d heads", batch, heads);
    if (batch == 0 || t == 0)
        return MD_OK;
    const size_t smem = (size_t)(ATT_KT * (hd + 1) + ATT_KT * hd + ATT_QB * hd) * sizeof(float);
    dim3 grid((t + ATT_QB - 1) / ATT_QB, heads, batch);
    const float scale = 1.0f / sqrtf((float)hd);
    return with_type(qt, [&](auto *tq) {
        return with_type(ot, [&](auto *to) {
            using TQ = typename std::remove_pointer<decltype(tq)>::type;
            using TO = typename std::remove_pointer<decltype(to)>::type;
            MD_LAUNCH(grid, ATT_WARPS * 32, smem, s, attention_k<TQ, TO>)((const TQ *)qkv, bias, t, heads, hd, causal, scale,
                                                                   (TO *)out);
            return md_cu_check("attention");
        });
    });
}

/* ---------------------------------------------------------------- patch and token embeddings */

/* One thread per element of the patch rows [n * g * g, 3 p p]. */
template <typename TC> __global__ void im2col_k(const float *px, int n, int s, int p, int g, TC *cols)
{
    const int k = 3 * p * p;
    const size_t total = (size_t)n * g * g * k;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / k;
        int col = (int)(i - row * k);
        int gx = (int)(row % g), gy = (int)(row / g % g), img = (int)(row / ((size_t)g * g));
        int ch = col / (p * p), rem = col - ch * p * p, y = rem / p, x = rem - y * p;
        md_st(cols, i, px[(((size_t)img * 3 + ch) * s + (size_t)gy * p + y) * s + (size_t)gx * p + x]);
    }
}

md_status md_cu_im2col(const float *px, int n, int s, int p, void *cols, md_bt ct)
{
    cudaStream_t st = md_cu_stream();
    if (!st)
        return MD_ERR_UNAVAILABLE;
    const int g = s / p;
    const size_t total = (size_t)n * g * g * 3 * p * p;
    if (total == 0)
        return MD_OK;
    return with_type(ct, [&](auto *tc) {
        using TC = typename std::remove_pointer<decltype(tc)>::type;
        MD_LAUNCH(md_cu_blocks(total, 256), 256, 0, st, im2col_k<TC>)(px, n, s, p, g, (TC *)cols);
        return md_cu_check("patch_embed");
    });
}

__global__ void embed_tokens_k(const float *patches, const float *cls, const float *pos, int n, int np, int d, float *x)
{
    const size_t T = (size_t)np + 1, total = (size_t)n * T * d;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t img = i / (T * d), rem = i - img * T * d, t = rem / d, j = rem - t * d;
        float v = t == 0 ? cls[j] : patches[(img * np + t - 1) * d + j];
        x[i] = v + pos[t * d + j];
    }
}

md_status md_cu_embed_tokens(const float *patches, const float *cls, const float *pos, int n, int np, int d, float *x)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    const size_t total = (size_t)n * (np + 1) * d;
    if (total == 0)
        return MD_OK;
    MD_LAUNCH(md_cu_blocks(total, 256), 256, 0, s, embed_tokens_k)(patches, cls, pos, n, np, d, x);
    return md_cu_check("embed_tokens");
}
