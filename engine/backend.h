/* backend.h - the compute backend interface: one table of function pointers.
 *
 * The CPU backend (backend_cpu.c) is always built and is the reference. The
 * CUDA backend (cuda/backend_cuda.cu) is built when nvcc is present
 * (MD_HAVE_CUDA) and offered only when a device is found at run time. An op a
 * backend lacks is reported by supports() and its pointer is NULL, never a
 * crash: callers check supports() once (md_clip_load does, and runs on the CPU
 * when an op is missing).
 *
 * The ops are the transformer building blocks of the CLIP towers. Tensors are
 * dense, row-major F32 in the backend's memory (host memory for the CPU);
 * shapes are given as [rows, cols]. Ops return MD_OK or a status for a backend
 * failure (never for our own bad arguments, which are asserted). Each op may
 * run on any thread; concurrent calls on different buffers are safe. The CPU
 * ops use OpenBLAS for matrix products, which runs them on its own threads
 * (OPENBLAS_NUM_THREADS, default all cores; see md_backend_cpu_set_threads).
 */
#ifndef MD_BACKEND_H
#define MD_BACKEND_H

#include <stddef.h>

#include "status.h"

typedef enum md_op {
    MD_OP_NONE = 0,
    MD_OP_LINEAR,     /* y[m,n] (+)= x[m,k] . w[n,k]^T + b[n]      (torch.nn.Linear; b may be NULL) */
    MD_OP_LAYERNORM,  /* y[r,:] = (x - mean) / sqrt(var + eps) * g + b, biased variance; y may be x */
    MD_OP_GELU,       /* x * 0.5 * (1 + erf(x / sqrt 2)), in place   (transformers "gelu") */
    MD_OP_GELU_TANH,  /* tanh approximation, in place   ("gelu_new", "gelu_pytorch_tanh", "gelu_fast") */
    MD_OP_QUICK_GELU, /* x * sigmoid(1.702 x), in place  ("quick_gelu", the OpenAI CLIP checkpoints) */
    MD_OP_ATTENTION,  /* multi-head scaled dot-product attention over a fused q|k|v buffer, see below */
    MD_OP_ADD,        /* y[n] += x[n] */
    MD_OP_L2NORM,     /* y[r,:] /= ||y[r,:]||_2 (rows of zeros stay zero) */
    MD_OP_COUNT
} md_op;

/* Name of OP for messages, e.g. "linear"; static. */
const char *md_op_name(md_op op);

typedef struct md_backend_i {
    const char *name;                 /* "cpu" or "cuda" */
    int (*supports)(md_op op);        /* 1 when the backend implements OP */
    md_status (*describe)(char *buf, size_t len); /* device in words, e.g. "NVIDIA H100, 80 GiB" */

    /* MD_OP_LINEAR. ACCUMULATE = 1 adds to y (residual connections), 0 overwrites it. */
    md_status (*linear)(const float *x, int m, int k, const float *w, const float *b, int n, float *y,
                        int accumulate);
    /* MD_OP_LAYERNORM over ROWS rows of DIM. */
    md_status (*layernorm)(const float *x, int rows, int dim, const float *g, const float *b, float eps, float *y);
    /* MD_OP_GELU, MD_OP_GELU_TANH or MD_OP_QUICK_GELU on N values in place. */
    md_status (*activation)(md_op op, float *x, size_t n);
    /* MD_OP_ATTENTION. QKV is [batch * t, 3 * heads * hd]: row i holds token i's query, key and
     * value, each split into HEADS heads of HD. OUT is [batch * t, heads * hd]. Scores are
     * q.k * hd^-0.5, softmax over keys (keys after the query are masked when CAUSAL), times v;
     * sequences of one batch never see each other. */
    md_status (*attention)(const float *qkv, int batch, int t, int heads, int hd, int causal, float *out);
    /* MD_OP_ADD. */
    md_status (*add)(float *y, const float *x, size_t n);
    /* MD_OP_L2NORM over ROWS rows of DIM, in place. */
    md_status (*l2norm)(float *y, int rows, int dim);
} md_backend_i;

/* The CPU backend: always available. */
const md_backend_i *md_backend_cpu(void);
/* Sets the threads OpenBLAS uses for the CPU backend's matrix products (process-wide; N <= 0
 * keeps OpenBLAS's own choice: OPENBLAS_NUM_THREADS, else all cores). Returns the count in use. */
int md_backend_cpu_set_threads(int n);
/* The CUDA backend, or NULL when not built in or no device is present. */
const md_backend_i *md_backend_cuda(void);
/* Picks a backend for DEVICE ("auto", "cpu", "cuda"). "cuda" without a device is
 * MD_ERR_UNAVAILABLE with a message in ERR; "auto" falls back to the CPU. */
md_status md_backend_select(const char *device, const md_backend_i **out, char *err, size_t errlen);

#endif
