/* mamba.h - the Mamba-1 block (state-spaces/mamba), bidirectional as Vision Mamba v2, and a
 * pre-norm residual encoder of such blocks: the CPU reference of momentd's temporal encoder.
 *
 * Maths, per layer, on tokens x [L, d_model] (d_inner = expand * d_model):
 *
 *   u        = LayerNorm(x)                        (norm.weight, norm.bias, eps 1e-5)
 *   [x' | z] = u . in_proj^T (+ in_proj.bias)      [L, d_inner] each
 *   per direction (forward on x', backward on x' reversed, with its own *_b weights):
 *     c      = SiLU(causal depthwise conv1d(x') + conv1d.bias)      kernel d_conv
 *     [dt | B | C] = c . x_proj^T                  [L, dt_rank], [L, d_state], [L, d_state]
 *     delta  = softplus(dt . dt_proj^T + dt_proj.bias)               [L, d_inner]
 *     A      = -exp(A_log)                                          [d_inner, d_state]
 *     h_t    = exp(delta_t * A) * h_{t-1} + delta_t * B_t * c_t     (the selective scan)
 *     y_t    = C_t . h_t + D * c_t
 *   y        = SiLU(z) * y_fwd                     forward only
 *            = SiLU(z) * (y_fwd + flip(y_bwd)) / 2 bidirectional (Vision Mamba v2, averaged)
 *   x        = x + y . out_proj^T (+ out_proj.bias)
 * and after the last layer, when the model has one, x = LayerNorm_f(x).
 *
 * A layer whose out_proj (weight and bias) is exactly zero adds exactly zero, so it is skipped
 * unless md_mamba.force_compute is set: a fresh encoder (temporal.h) costs nothing.
 *
 * Streaming. A causal scan can be continued: md_mamba_state holds, per layer, the forward
 * direction's conv window (the last d_conv - 1 inputs of its conv1d) and SSM state h. Running a
 * sequence in pieces with the state carried gives the one-pass result (to float rounding) for a
 * forward-only model. The backward direction cannot be streamed (it needs the future), so it is
 * always window-local: it starts from zeros at each call's last token. A bidirectional model
 * streamed in windows is therefore "forward carried, backward per window", which is what the
 * temporal encoder does (temporal.h adds look-ahead overlap to give the backward scan context).
 * In a multi-layer model, layer i's input already depends on the windowing of layers < i.
 *
 * Usage:
 *
 *   md_mamba_config c; md_mamba_config_default(&c, 512); c.n_layers = 2;
 *   md_mamba *m; md_mamba_new(&c, &m, err, sizeof err);   // zeroed weights; fill m->layers[i]...
 *   md_mamba_prepare(m);                                   // after the weights are written
 *   md_mamba_forward(m, NULL, x, L, NULL, 0);              // x [L, d_model], in place
 *   md_mamba_free(m);
 *
 * Ownership: an md_mamba owns its weights (one allocation). Thread-safety: after md_mamba_prepare
 * a model is read-only; md_mamba_forward may run on any number of threads at once on different x,
 * state and workspace. The matrix products go through OpenBLAS (cblas_sgemm), which uses its own
 * threads; the scan and the element-wise steps split their work over as many threads of their own
 * (md_backend_cpu_set_threads), started and joined within each call.
 */
#ifndef MD_MAMBA_H
#define MD_MAMBA_H

#include <stddef.h>

#include "../base/status.h"

/* Directions of a mixer, a bit set. */
enum { MD_MAMBA_FWD = 1, MD_MAMBA_BWD = 2, MD_MAMBA_BOTH = 3 };

typedef struct md_mamba_config {
    int d_model;       /* token width (512 for CLIP ViT-B's joint space) */
    int n_layers;      /* blocks; >= 0 (0: the encoder is the identity, or norm_f only) */
    int d_state;       /* SSM state per channel, default 16 */
    int d_conv;        /* conv1d kernel, default 4 */
    int expand;        /* d_inner = expand * d_model, default 2 */
    int dt_rank;       /* default ceil(d_model / 16) */
    int dirs;          /* MD_MAMBA_FWD or MD_MAMBA_BOTH (default); MD_MAMBA_BWD only for tests */
    int in_proj_bias;  /* 1: in_proj has a bias (Mamba's default is none) */
    int out_proj_bias; /* 1: out_proj has a bias */
    int final_norm;    /* 1: LayerNorm norm_f after the last block */
    float norm_eps;    /* LayerNorm epsilon, default 1e-5 */
} md_mamba_config;

/* Limits checked by md_mamba_config_check (keep allocations sane for untrusted files). */
#define MD_MAMBA_MAX_D_MODEL 8192
#define MD_MAMBA_MAX_LAYERS 64
#define MD_MAMBA_MAX_D_STATE 256
#define MD_MAMBA_MAX_D_CONV 16
#define MD_MAMBA_MAX_EXPAND 8

/* The defaults above for D_MODEL, with n_layers 2, bidirectional, no biases, no final norm. */
void md_mamba_config_default(md_mamba_config *c, int d_model);
/* MD_ERR_INVALID with a message naming the bad field when C is out of range. */
md_status md_mamba_config_check(const md_mamba_config *c, char *err, size_t errlen);
/* Parameters C's weights file holds (A excluded: it is derived). C must be checked. */
size_t md_mamba_param_count(const md_mamba_config *c);
static inline int md_mamba_d_inner(const md_mamba_config *c) { return c->expand * c->d_model; }

/* One direction's weights. Shapes as in temporal.safetensors (row-major). */
typedef struct md_mamba_dir {
    float *conv_w;    /* [d_inner, d_conv]  (conv1d.weight [d_inner, 1, d_conv]) */
    float *conv_b;    /* [d_inner] */
    float *x_proj_w;  /* [dt_rank + 2 d_state, d_inner]: rows dt, then B, then C */
    float *dt_proj_w; /* [d_inner, dt_rank] */
    float *dt_proj_b; /* [d_inner] */
    float *A_log;     /* [d_inner, d_state] */
    float *D;         /* [d_inner] */
    float *A;         /* [d_inner, d_state] = -exp(A_log), derived by md_mamba_prepare */
    float *conv_wt;   /* [d_conv, d_inner]: conv_w transposed, derived by md_mamba_prepare */
} md_mamba_dir;

typedef struct md_mamba_layer {
    float *norm_w, *norm_b; /* [d_model] */
    float *in_proj_w;       /* [2 d_inner, d_model]: rows x, then z */
    float *in_proj_b;       /* [2 d_inner] or NULL */
    md_mamba_dir dir[2];    /* [0] forward, [1] backward (unset pointers when forward only) */
    float *out_proj_w;      /* [d_model, d_inner] */
    float *out_proj_b;      /* [d_model] or NULL */
    int zero_out;           /* derived: out_proj (and bias) exactly zero, the layer adds nothing */
} md_mamba_layer;

typedef struct md_mamba {
    md_mamba_config cfg;
    md_mamba_layer *layers;   /* cfg.n_layers */
    float *norm_f_w, *norm_f_b; /* [d_model], NULL without final_norm */
    int force_compute;        /* 1: run zero-out_proj layers too (tests, benchmarks) */
    float *mem;               /* every tensor above, one block */
    size_t mem_floats;
} md_mamba;

/* Allocates a model for C (checked) with every weight zero and the pointers set. *OUT is the
 * caller's (md_mamba_free). MD_ERR_INVALID (bad config, message in ERR), MD_ERR_NOMEM. */
md_status md_mamba_new(const md_mamba_config *c, md_mamba **out, char *err, size_t errlen);
void md_mamba_free(md_mamba *m);
/* Derives A = -exp(A_log) and the zero_out flags; call after writing the weights. */
void md_mamba_prepare(md_mamba *m);
/* 1 when the model maps every input to itself exactly: no final norm and every layer zero_out. */
int md_mamba_is_identity(const md_mamba *m);

/* The carried forward state of every layer. */
typedef struct md_mamba_state {
    int n_layers, d_inner, d_state, d_conv;
    float *conv; /* [n_layers][d_conv - 1][d_inner]: the last inputs of the conv, oldest first */
    float *ssm;  /* [n_layers][d_inner][d_state]: h */
} md_mamba_state;

/* A zero state (the start of a sequence) for M. *OUT is the caller's (md_mamba_state_free). */
md_status md_mamba_state_new(const md_mamba *m, md_mamba_state **out);
void md_mamba_state_free(md_mamba_state *s);
void md_mamba_state_reset(md_mamba_state *s);
/* Floats in conv and ssm together (for serialising). */
size_t md_mamba_state_floats(const md_mamba_state *s);

/* The selective scan of one direction:
 *   for t in 0..L-1:  h = exp(delta[t] * A) * h + delta[t] * B_t * u[t];  y[t] = C_t . h + D * u[t]
 * u, delta, y: [L, d_inner] (row stride d_inner); A: [d_inner, d_state]; B_t = B + t * ldbc and
 * C_t = C + t * ldbc ([d_state] each, so both can point into x_proj's output); D: [d_inner].
 * H: [d_inner, d_state] holds the state before step 0 (NULL: zeros) and, on return, the state
 * after the first H_AT steps (0 <= h_at <= L; h_at = L: the end).
 * md_mamba_selective_scan_ref is the plain loop (libm expf), the reference a GPU kernel is checked
 * against; md_mamba_selective_scan computes the same sums in the same order, 8 channels at a time
 * with a polynomial exp (a few float ulps from expf), on as many threads as OpenBLAS uses. */
void md_mamba_selective_scan_ref(int L, int d_inner, int d_state, const float *u, const float *delta,
                                 const float *A, const float *B, const float *C, int ldbc, const float *D, float *h,
                                 int h_at, float *y);
void md_mamba_selective_scan(int L, int d_inner, int d_state, const float *u, const float *delta, const float *A,
                             const float *B, const float *C, int ldbc, const float *D, float *h, int h_at,
                             float *y);

/* Scratch memory of md_mamba_mixer / md_mamba_forward, grown as needed and kept, so that encoding
 * window after window neither allocates nor page-faults each time. One per thread at a time; pass
 * NULL to those functions to have them allocate for the call. NULL from _new when out of memory. */
typedef struct md_mamba_ws md_mamba_ws;
md_mamba_ws *md_mamba_ws_new(void);
void md_mamba_ws_free(md_mamba_ws *ws);

/* The mixer of layer LAYER on U [L, d_model] (already normed): OUT [L, d_model] = y . out_proj^T
 * (+ bias), directions DIRS (a subset of the model's). When STATE is non-NULL the forward
 * direction starts from STATE's layer LAYER and leaves there its state after the first STATE_AT
 * tokens (0 <= state_at <= L). WS: scratch (NULL: allocated for the call). MD_ERR_NOMEM. */
md_status md_mamba_mixer(const md_mamba *m, md_mamba_ws *ws, int layer, int dirs, const float *u, int L,
                         md_mamba_state *state, int state_at, float *out);

/* The encoder, in place on X [L, d_model]: every layer, then norm_f. STATE / STATE_AT as for
 * md_mamba_mixer, for every layer (NULL: a stand-alone sequence). MD_ERR_NOMEM. */
md_status md_mamba_forward(const md_mamba *m, md_mamba_ws *ws, float *x, int L, md_mamba_state *state,
                           int state_at);

#endif
