/* backend_cpu.c - the CPU backend (the reference) and backend selection. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

static int cpu_supports(md_op op) { return op > MD_OP_NONE && op < MD_OP_COUNT; }

static md_status cpu_describe(char *buf, size_t len)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(buf, len, "CPU, %ld cores", n);
    return MD_OK;
}

static const md_backend_i CPU = {"cpu", cpu_supports, cpu_describe};

const md_backend_i *md_backend_cpu(void) { return &CPU; }

#ifndef MD_HAVE_CUDA
const md_backend_i *md_backend_cuda(void) { return NULL; }
#endif

md_status md_backend_select(const char *device, const md_backend_i **out, char *err, size_t errlen)
{
    const md_backend_i *cuda = strcmp(device, "cpu") == 0 ? NULL : md_backend_cuda();
    if (strcmp(device, "cuda") == 0 && !cuda) {
        snprintf(err, errlen,
#ifdef MD_HAVE_CUDA
                 "setting 'device': cuda requested but no CUDA device was found"
#else
                 "setting 'device': cuda requested but this momentd was built without CUDA (CPU only)"
#endif
        );
        return MD_ERR_UNAVAILABLE;
    }
    *out = cuda ? cuda : &CPU;
    return MD_OK;
}
