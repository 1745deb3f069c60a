/* kernels_mamba.cu - the Mamba-1 path on the GPU: causal depthwise conv1d + SiLU, the selective
 * scan (either direction), the SiLU(z) gate of the two directions, mean pooling.
 *
 * The selective scan. For each channel and state, h_t = a_t h_{t-1} + b_t with a_t =
 * exp(dt_t A) and b_t = dt_t B_t u_t is a linear recurrence, and pairs compose associatively:
 * (a1, b1) then (a2, b2) is (a1 a2, a2 b1 + b2). As in the reference kernel of state-spaces/mamba
 * the sequence is cut into chunks, each chunk is scanned in parallel, and the state at the end of
 * a chunk is carried into the next as a prefix; the state stays in registers. The layout differs:
 * momentd's activations are token-major ([L, C] rows, as the matrix products leave them), so a
 * warp takes 32 neighbouring channels (every load and store is one 128-byte line across the warp)
 * and the block's SCAN_WARPS warps split a chunk along the sequence, each thread running
 * SCAN_ITEMS consecutive steps of its channel:
 *
 *   for each state n:  each thread composes its items into (A, B) -> shared memory -> each thread
 *                      composes the carried state with the pairs of the warps before it -> replays
 *                      its items from there, adding C_t[n] h_t to its outputs; the last warp's
 *                      final h is the next chunk's carry (double-buffered by chunk parity).
 *
 * So each exp is taken once per (step, channel, state), u / dt / y move once, B_t and C_t are
 * staged through shared memory once per chunk and read as broadcasts. One block per (batch,
 * group of 32 channels). */
#include <math.h>
#include <string.h>

#include <type_traits>

#include "cuda_internal.h"

/* ---------------------------------------------------------------- conv1d + SiLU */

__global__ void conv1d_silu_k(const float *x, int ldx, int batch, int L, int C, const float *w, const float *b, int K,
                              const float *prev, int reverse, float *y)
{
    const size_t total = (size_t)batch * L * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % C);
        const size_t bt = i / C;
        const int t = (int)(bt % L), bi = (int)(bt / L);
        const float *xb = x + (size_t)bi * L * ldx;
        float acc = b ? b[c] : 0.0f;
        for (int k = 0; k < K; k++) {
            /* In the direction's own order the input of step t' is s = t' - (K-1) + k. */
            const int s = (reverse ? L - 1 - t : t) - (K - 1) + k;
            float v;
            if (s >= 0)
                v = xb[(size_t)(reverse ? L - 1 - s : s) * ldx + c];
            else if (!reverse && prev)
                v = prev[((size_t)bi * (K - 1) + (K - 1 + s)) * C + c];
            else
                continue;
            acc = fmaf(w[(size_t)c * K + k], v, acc);
        }
        y[i] = acc / (1.0f + expf(-acc));
    }
}

md_status md_cu_conv1d_silu(const float *x, int ldx, int batch, int L, int C, const float *w, const float *b, int K,
                            const float *prev, int reverse, float *y)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    const size_t total = (size_t)batch * L * C;
    if (total == 0)
        return MD_OK;
    MD_LAUNCH(md_cu_blocks(total, 256), 256, 0, s, conv1d_silu_k)(x, ldx, batch, L, C, w, b, K, prev, reverse, y);
    return md_cu_check("conv1d_silu");
}

/* ---------------------------------------------------------------- the selective scan */

#define SCAN_WARPS 4
#define SCAN_ITEMS 16
#define SCAN_CHUNK (SCAN_WARPS * SCAN_ITEMS)
#define SCAN_MAX_N 64

__device__ __forceinline__ float softplus_f(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

__global__ void __launch_bounds__(SCAN_WARPS * 32) scan_k(md_scan_args a)
{
    MD_EXTERN_SHARED(float, sm);
    const int N = a.N, L = a.L;
    /* Shared: Bs, Cs [SCAN_CHUNK][N]; aggA, aggB [N][SCAN_WARPS][32]; carry [2][N][32]. */
    float *Bs = sm, *Cs = Bs + SCAN_CHUNK * N, *aggA = Cs + SCAN_CHUNK * N, *aggB = aggA + N * SCAN_WARPS * 32,
          *carry = aggB + N * SCAN_WARPS * 32;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int bi = blockIdx.y, c = blockIdx.x * 32 + lane;
    const bool chan = c < a.C;
    const size_t row0 = (size_t)bi * L;

    for (int n = warp; n < N; n += SCAN_WARPS)
        carry[n * 32 + lane] = chan && a.h ? a.h[((size_t)bi * a.C + c) * N + n] : 0.0f;
    const float dbias = chan && a.delta_bias ? a.delta_bias[c] : 0.0f;
    const float Dc = chan && a.D ? a.D[c] : 0.0f;
    const float LOG2E = 1.4426950408889634f;

    int par = 0;
    for (int s0 = 0; s0 < L; s0 += SCAN_CHUNK, par ^= 1) {
        __syncthreads(); /* the previous chunk is done with Bs, Cs and agg (and the carry is in) */
        for (int i = threadIdx.x; i < SCAN_CHUNK * N; i += blockDim.x) {
            const int j = i / N, n = i - j * N, s = s0 + j;
            float bv = 0.0f, cv = 0.0f;
            if (s < L) {
                const size_t row = row0 + (a.reverse ? L - 1 - s : s);
                bv = a.B[row * a.ldbc + n];
                cv = a.Cm[row * a.ldbc + n];
            }
            Bs[i] = bv;
            Cs[i] = cv;
        }
        float u[SCAN_ITEMS], dt[SCAN_ITEMS], y[SCAN_ITEMS];
        const int first = s0 + warp * SCAN_ITEMS;
#pragma unroll
        for (int i = 0; i < SCAN_ITEMS; i++) {
            const int s = first + i;
            u[i] = 0.0f;
            dt[i] = 0.0f;
            if (chan && s < L) {
                const size_t row = row0 + (a.reverse ? L - 1 - s : s);
                u[i] = a.u[row * a.ldu + c];
                float d = a.delta[row * a.ldd + c] + dbias;
                dt[i] = a.delta_softplus ? softplus_f(d) : d;
            }
            y[i] = Dc * u[i];
        }
        __syncthreads();
        for (int n = 0; n < N; n++) {
            const float A2 = chan ? a.A[(size_t)c * N + n] * LOG2E : 0.0f;
            float ea[SCAN_ITEMS], eb[SCAN_ITEMS];
            float pa = 1.0f, pb = 0.0f;
#pragma unroll
            for (int i = 0; i < SCAN_ITEMS; i++) {
                /* Steps past the end are (1, 0): the identity. */
                ea[i] = first + i < L ? exp2f(dt[i] * A2) : 1.0f;
                eb[i] = dt[i] * u[i] * Bs[(warp * SCAN_ITEMS + i) * N + n];
                pb = fmaf(ea[i], pb, eb[i]);
                pa *= ea[i];
            }
            float *agA = aggA + n * SCAN_WARPS * 32, *agB = aggB + n * SCAN_WARPS * 32;
            agA[warp * 32 + lane] = pa;
            agB[warp * 32 + lane] = pb;
            __syncthreads();
            float h = carry[(par * N + n) * 32 + lane];
            for (int w = 0; w < warp; w++)
                h = fmaf(agA[w * 32 + lane], h, agB[w * 32 + lane]);
#pragma unroll
            for (int i = 0; i < SCAN_ITEMS; i++) {
                h = fmaf(ea[i], h, eb[i]);
                y[i] = fmaf(Cs[(warp * SCAN_ITEMS + i) * N + n], h, y[i]);
                if (a.h && chan && first + i + 1 == a.h_at)
                    a.h[((size_t)bi * a.C + c) * N + n] = h;
            }
            if (warp == SCAN_WARPS - 1)
                carry[((par ^ 1) * N + n) * 32 + lane] = h;
        }
#pragma unroll
        for (int i = 0; i < SCAN_ITEMS; i++) {
            const int s = first + i;
            if (chan && s < L)
                a.y[(row0 + (a.reverse ? L - 1 - s : s)) * a.ldy + c] = y[i];
        }
    }
}

md_status md_cu_scan(const md_scan_args *a)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    if (a->N < 1 || a->N > SCAN_MAX_N)
        return md_cu_failf(MD_ERR_UNSUPPORTED, "cuda: selective scan with d_state %d (1 to %d supported)", a->N,
                           SCAN_MAX_N);
    if (a->batch > 65535)
        return md_cu_failf(MD_ERR_UNSUPPORTED, "cuda: selective scan over %d sequences", a->batch);
    if (a->batch == 0 || a->L == 0 || a->C == 0)
        return MD_OK;
    const size_t smem = (size_t)a->N * (2 * SCAN_CHUNK + 2 * SCAN_WARPS * 32 + 2 * 32) * sizeof(float);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(scan_k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess)
            return md_cu_fail(e, "selective scan (shared memory)");
    }
    dim3 grid((a->C + 31) / 32, a->batch);
    MD_LAUNCH(grid, SCAN_WARPS * 32, smem, s, scan_k)(*a);
    return md_cu_check("selective scan");
}

/* ---------------------------------------------------------------- gate, pooling */

__global__ void gate_k(const float *z, int ldz, const float *a, const float *b, int rows, int cols, float scale, float *y)
{
    const size_t total = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / cols, c = i - r * cols;
        const float zv = z[r * ldz + c];
        const float s = b ? a[i] + b[i] : a[i];
        y[i] = s * scale * (zv / (1.0f + expf(-zv)));
    }
}

md_status md_cu_gate(const float *z, int ldz, const float *a, const float *b, int rows, int cols, float scale, float *y)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    const size_t total = (size_t)rows * cols;
    if (total == 0)
        return MD_OK;
    MD_LAUNCH(md_cu_blocks(total, 256), 256, 0, s, gate_k)(z, ldz, a, b, rows, cols, scale, y);
    return md_cu_check("gate");
}

__global__ void pool_k(const float *x, int ldx, int groups, int k, int dim, float *y)
{
    const size_t total = (size_t)groups * dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t g = i / dim, j = i - g * dim;
        float s = 0.0f;
        for (int r = 0; r < k; r++)
            s += x[(g * k + r) * ldx + j];
        y[i] = s / k;
    }
}

md_status md_cu_pool(const float *x, int ldx, int groups, int k, int dim, float *y)
{
    cudaStream_t s = md_cu_stream();
    if (!s)
        return MD_ERR_UNAVAILABLE;
    const size_t total = (size_t)groups * dim;
    if (total == 0 || k == 0)
        return MD_OK;
    MD_LAUNCH(md_cu_blocks(total, 256), 256, 0, s, pool_k)(x, ldx, groups, k, dim, y);
    return md_cu_check("pool");
}
