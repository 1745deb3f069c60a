/* cuda_emu.h - just enough of CUDA to compile cuda/kernels_*.cu as plain C++ and run every kernel
 * on the CPU (tests/gpu/emu/emu_backend.cc, `make gpu-emu`).
 *
 * A launch runs the blocks of its grid one after another; the threads of a block are fibers
 * (ucontext) that run until they finish or wait at a barrier: __syncthreads waits for the whole
 * block, the warp intrinsics (__shfl_sync, __shfl_xor_sync) exchange values between the 32 threads
 * of a warp through a barrier of the warp. A barrier that some threads never reach (divergent
 * __syncthreads or shuffles, undefined on a GPU) is reported as a failed launch. __shared__
 * arrays become function statics (one block runs at a time); the dynamic shared memory is filled
 * with 0xFF bytes (NaN) before each block, so a read of shared memory that no thread wrote shows
 * up. Launches are checked as the driver checks them (block size, grid size, shared memory beyond
 * 48 KiB without cudaFuncSetAttribute).
 *
 * What it checks: the kernels' arithmetic, indexing, block and warp cooperation, and the argument
 * mapping handed to cuBLAS (md_gemm_args, multiplied here by cuBLAS's column-major definition).
 * What it does not: timing, coalescing, races that only a GPU's scheduling exposes, cuBLAS
 * itself, backend_cuda.cu (memory, streams, staging). Emulated device memory is host memory. */
#ifndef MD_CUDA_EMU_H
#define MD_CUDA_EMU_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <functional>

extern "C" {
#include "../../../engine/safetensors.h"
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct md_emu_uint3 {
    unsigned x, y, z;
};
extern thread_local md_emu_uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

/* ---- types and conversions ---- */
struct __half {
    uint16_t x;
};
struct __nv_bfloat16 {
    uint16_t x;
};
struct __half2 {
    __half a, b;
};
struct float2 {
    float x, y;
};
struct uint4 {
    unsigned x, y, z, w;
};
static inline float __half2float(__half h) { return md_f16_to_f32(h.x); }
static inline __half __float2half_rn(float f) { return __half{md_f32_to_f16(f)}; }
static inline float __bfloat162float(__nv_bfloat16 h) { return md_bf16_to_f32(h.x); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{md_f32_to_bf16(f)}; }
static inline float2 __half22float2(__half2 h) { return float2{__half2float(h.a), __half2float(h.b)}; }
static inline unsigned __float_as_uint(float f)
{
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
using std::max;
using std::min;

static inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }

/* ---- block and warp cooperation ---- */
void __syncthreads(void);
float md_emu_shfl(float v, int src_lane);
static inline float __shfl_sync(unsigned, float v, int src) { return md_emu_shfl(v, src & 31); }
static inline float __shfl_xor_sync(unsigned, float v, int mask)
{
    return md_emu_shfl(v, (int)((threadIdx.x & 31) ^ (unsigned)mask));
}
void *md_emu_dyn_smem(void);
#define MD_EXTERN_SHARED(type, name) type *name = (type *)md_emu_dyn_smem()

/* ---- the runtime API the launchers use ---- */
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorInvalidConfiguration = 9 };
typedef void *cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
static inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t)
{
    memmove(d, s, n);
    return cudaSuccess;
}
static inline cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t)
{
    memset(d, v, n);
    return cudaSuccess;
}
static inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t);
cudaError_t cudaFreeAsync(void *p, cudaStream_t);
cudaError_t md_emu_set_smem_limit(const void *fn, int bytes);
template <class F> static inline cudaError_t cudaFuncSetAttribute(F fn, cudaFuncAttribute, int bytes)
{
    return md_emu_set_smem_limit((const void *)fn, bytes);
}

/* ---- launches ---- */
void md_emu_run(dim3 grid, dim3 block, size_t smem, const void *fn, const std::function<void()> &body);

template <class F> struct md_emu_launch {
    dim3 g, b;
    size_t sm;
    const void *fn;
    F f;
    template <class... A> void operator()(A... a) const
    {
        md_emu_run(g, b, sm, fn, [&]() { f(a...); });
    }
};
template <class F> static inline md_emu_launch<F> md_emu_make_launch(dim3 g, dim3 b, size_t sm, const void *fn, F f)
{
    return md_emu_launch<F>{g, b, sm, fn, f};
}
#define MD_LAUNCH(grid, block, smem, stream, ...)                                                            \
    ((void)(stream), md_emu_make_launch(dim3(grid), dim3(block), (size_t)(smem), (const void *)&__VA_ARGS__,  \
                                        [](auto... md_a) { __VA_ARGS__(md_a...); }))

#endif
