/* kernels_search.cu - search scoring on the GPU: the matrix-vector product of every stored F16
 * segment embedding with the query, and the top k of the scores.
 *
 * Scoring is memory-bound: one warp per row, 16-byte loads (8 halves) when the rows allow it.
 *
 * Top-k is a radix select on unique 64-bit keys (the score's bits made order-preserving, then the
 * complement of the index, so ties go to the lower index as on the CPU): 8 passes of an 8-bit
 * histogram over the keys that still match the selected prefix find the k-th largest key exactly;
 * the keys at or above it (exactly k of them) are gathered and ranked in one block. */
#include <math.h>
#include <string.h>

#include <type_traits>

#include "cuda_internal.h"

/* ---------------------------------------------------------------- scores */

__global__ void score_k(const uint16_t *e, long long n, int dim, const float *q, float *s)
{
    const long long row = blockIdx.x * (long long)(blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= n)
        return;
    const __half *r = (const __half *)(e + (size_t)row * dim);
    float acc = 0.0f;
    if ((dim & 7) == 0 && ((uintptr_t)r & 15) == 0) {
        for (int j = lane * 8; j < dim; j += 256) {
            uint4 v = *(const uint4 *)(r + j);
            const __half2 *h2 = (const __half2 *)&v;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float2 f = __half22float2(h2[k]);
                acc = fmaf(f.x, q[j + 2 * k], acc);
                acc = fmaf(f.y, q[j + 2 * k + 1], acc);
            }
        }
    } else {
        for (int j = lane; j < dim; j += 32)
            acc = fmaf(__half2float(r[j]), q[j], acc);
    }
    for (int o = 16; o > 0; o >>= 1)
        acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0)
        s[row] = acc;
}

md_status md_cu_score(const uint16_t *e, long long n, int dim, const float *q, float *s)
{
    cudaStream_t st = md_cu_stream();
    if (!st)
        return MD_ERR_UNAVAILABLE;
    if (n <= 0)
        return MD_OK;
    const long long blocks = (n + 7) / 8;
    if (blocks > 0x7fffffffLL)
        return md_cu_failf(MD_ERR_UNSUPPORTED, "cuda: score over %lld rows", n);
    MD_LAUNCH((unsigned)blocks, 256, 0, st, score_k)(e, n, dim, q, s);
    return md_cu_check("score");
}

/* ---------------------------------------------------------------- top k */

__device__ __forceinline__ unsigned long long topk_key(float v, long long i)
{
    if (v == 0.0f)
        v = 0.0f; /* -0 ranks as +0, as the CPU's comparisons do */
    unsigned u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)u << 32) | (0xffffffffu - (unsigned)i);
}

struct topk_state {
    unsigned long long prefix, mask;
    unsigned remaining;
    unsigned count; /* gathered keys */
    unsigned hist[256];
};

__global__ void topk_hist_k(const float *s, long long n, topk_state *st, int shift)
{
    __shared__ unsigned h[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x)
        h[i] = 0;
    __syncthreads();
    const unsigned long long prefix = st->prefix, mask = st->mask;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned long long k = topk_key(s[i], i);
        if ((k & mask) == prefix)
            atomicAdd(&h[(k >> shift) & 255], 1u);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 256; i += blockDim.x)
        if (h[i])
            atomicAdd(&st->hist[i], h[i]);
}

/* One thread: picks the digit holding the REMAINING-th largest key, narrows the prefix. */
__global__ void topk_pick_k(topk_state *st, int shift)
{
    unsigned above = 0;
    int d = 255;
    for (; d > 0; d--) {
        if (above + st->hist[d] >= st->remaining)
            break;
        above += st->hist[d];
    }
    st->remaining -= above;
    st->prefix |= (unsigned long long)d << shift;
    st->mask |= 255ull << shift;
    for (int i = 0; i < 256; i++)
        st->hist[i] = 0;
}

__global__ void topk_gather_k(const float *s, long long n, topk_state *st, unsigned long long *cand)
{
    const unsigned long long kth = st->prefix;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        unsigned long long k = topk_key(s[i], i);
        if (k >= kth)
            cand[atomicAdd(&st->count, 1u)] = k;
    }
}

/* One block: each key's rank is the number of larger keys (all keys are distinct). */
__global__ void topk_rank_k(const float *s, const unsigned long long *cand, int k, long long *idx, float *val)
{
    MD_EXTERN_SHARED(unsigned long long, ck);
    for (int i = threadIdx.x; i < k; i += blockDim.x)
        ck[i] = cand[i];
    __syncthreads();
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        const unsigned long long me = ck[i];
        int rank = 0;
        for (int j = 0; j < k; j++)
            rank += ck[j] > me;
        const long long at = (long long)(0xffffffffu - (unsigned)(me & 0xffffffffu));
        idx[rank] = at;
        val[rank] = s[at];
    }
}

md_status md_cu_topk(const float *s, long long n, int k, long long *idx, float *val)
{
    cudaStream_t st = md_cu_stream();
    if (!st)
        return MD_ERR_UNAVAILABLE;
    if (k < 0 || k > MD_TOPK_MAX || k > n)
        return md_cu_failf(MD_ERR_INVALID, "cuda: top %d of %lld", k, n);
    if (n >= 0xffffffffLL)
        return md_cu_failf(MD_ERR_UNSUPPORTED, "cuda: top-k over %lld scores (fewer than 2^32 supported)", n);
    if (k == 0)
        return MD_OK;
    void *mem = nullptr;
    const size_t bytes = sizeof(topk_state) + (size_t)k * sizeof(unsigned long long);
    md_status rc = md_cu_scratch(bytes, &mem, "topk");
    if (rc != MD_OK)
        return rc;
    topk_state *state = (topk_state *)mem;
    unsigned long long *cand = (unsigned long long *)((char *)mem + sizeof(topk_state));
    topk_state init;
    memset(&init, 0, sizeof init);
    init.remaining = (unsigned)k;
    rc = md_cu_fail(cudaMemcpyAsync(state, &init, sizeof init, cudaMemcpyHostToDevice, st), "topk");
    /* INIT is on the stack: make sure the copy has read it. */
    if (rc == MD_OK)
        rc = md_cu_fail(cudaStreamSynchronize(st), "topk");
    const unsigned blocks = md_cu_blocks((size_t)n, 256) > 1024 ? 1024 : md_cu_blocks((size_t)n, 256);
    for (int shift = 56; rc == MD_OK && shift >= 0; shift -= 8) {
        MD_LAUNCH(blocks, 256, 0, st, topk_hist_k)(s, n, state, shift);
        MD_LAUNCH(1, 1, 0, st, topk_pick_k)(state, shift);
        rc = md_cu_check("topk select");
    }
    if (rc == MD_OK) {
        MD_LAUNCH(blocks, 256, 0, st, topk_gather_k)(s, n, state, cand);
        MD_LAUNCH(1, 1024, (size_t)k * sizeof(unsigned long long), st, topk_rank_k)(s, cand, k, idx, val);
        rc = md_cu_check("topk gather");
    }
    md_cu_scratch_free(mem, bytes);
    return rc;
}
