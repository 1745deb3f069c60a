/* backend_cuda.cu - the CUDA backend: device discovery now, kernels with the
 * model issues (each with a CPU reference and a case in the backend-ops test).
 * Built only when nvcc is present; returns NULL at run time without a device,
 * so the daemon falls back to the CPU. */
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "../engine/backend.h"
}

static int cuda_supports(md_op op)
{
    (void)op;
    return 0; /* no ops yet: callers fall back to the CPU for each op */
}

static md_status cuda_describe(char *buf, size_t len)
{
    int dev = 0;
    cudaDeviceProp prop;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
        return MD_ERR_UNAVAILABLE;
    snprintf(buf, len, "%s, %.0f GiB, sm_%d%d", prop.name, prop.totalGlobalMem / 1073741824.0, prop.major,
             prop.minor);
    return MD_OK;
}

/* Ops stay NULL (and unsupported) until their kernels land with a case in the backend-ops test;
 * md_clip_load() then runs the model on the CPU. */
static const md_backend_i CUDA_BACKEND = {
    "cuda", cuda_supports, cuda_describe, NULL, NULL, NULL, NULL, NULL, NULL,
};

extern "C" const md_backend_i *md_backend_cuda(void)
{
    int n = 0;
    /* cudaGetDeviceCount fails (no driver) or reports 0 on machines without a GPU. */
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        cudaGetLastError();
        return NULL;
    }
    return &CUDA_BACKEND;
}
