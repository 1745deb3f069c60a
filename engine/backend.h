/* backend.h - the compute backend interface: one table of function pointers.
 *
 * The CPU backend (backend_cpu.c) is always built and is the reference. The
 * CUDA backend (cuda/backend_cuda.cu) is built when nvcc is present
 * (MD_HAVE_CUDA) and offered only when a device is found at run time. An op a
 * backend lacks is reported by supports(), never a crash. Ops arrive with the
 * model issues; for now the table carries identity and device discovery.
 */
#ifndef MD_BACKEND_H
#define MD_BACKEND_H

#include <stddef.h>

#include "status.h"

typedef enum md_op {
    MD_OP_NONE = 0, /* ops are added here with their CPU reference and tests */
    MD_OP_COUNT
} md_op;

typedef struct md_backend_i {
    const char *name;                 /* "cpu" or "cuda" */
    int (*supports)(md_op op);        /* 1 when the backend implements OP */
    md_status (*describe)(char *buf, size_t len); /* device in words, e.g. "NVIDIA H100, 80 GiB" */
} md_backend_i;

/* The CPU backend: always available. */
const md_backend_i *md_backend_cpu(void);
/* The CUDA backend, or NULL when not built in or no device is present. */
const md_backend_i *md_backend_cuda(void);
/* Picks a backend for DEVICE ("auto", "cpu", "cuda"). "cuda" without a device is
 * MD_ERR_UNAVAILABLE with a message in ERR; "auto" falls back to the CPU. */
md_status md_backend_select(const char *device, const md_backend_i **out, char *err, size_t errlen);

#endif
