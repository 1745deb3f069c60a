/* test_backend_ops.c - every op of backend.h on seeded random inputs, on every available backend.
 *
 * The CPU backend is checked against plain double-precision loops written here (and, for
 * preprocessing and the selective scan, against the project's own references:
 * md_image_preprocess and md_mamba_selective_scan_ref). Every other backend (CUDA) is checked
 * against the CPU backend on the same inputs. Each case runs the op on buffers in the backend's
 * memory (alloc + upload), with every output poisoned first (all bytes 0xFF: NaN in F32, F16 and
 * BF16), so an element the op forgets to write shows up as NaN; every output is checked for NaN and
 * Inf before it is compared. The error is max |got - ref| / max |ref| over the output.
 *
 * Tolerances (CPU vs double loops / CUDA vs CPU):
 *   convert, im2col, embed_tokens, preprocess, topk, add        exact / exact
 *   gemm f32, f16 and bf16 inputs (F32 out)                      1e-5 / 1e-4 (tensor-core sums)
 *   gemm tf32                                                    1e-5 (the CPU runs F32) / 5e-3
 *   any F16 / BF16 output                                        one rounding: 1e-3 / 8e-3
 *   layernorm, add_layernorm, attention, conv1d_silu, score      1e-5 / 1e-5
 *   bias_act (gelu, gelu_tanh, quick_gelu), gate, pool, l2norm   1e-6 / 2e-6
 *   selective scan                                               1e-5 / 1e-4 (exp2f, chunked sums)
 * The CLIP towers' device path (engine/clip.c) is checked too: on the CPU backend in F32 it must
 * give the host path's embeddings to 1e-5; on CUDA in F16 a cosine >= 0.999 with the CPU's.
 *
 * Without a CUDA device the CUDA cases print "skipped" and count as skipped, never as passed.
 * MD_REQUIRE_CUDA=1 turns a missing device into a failure (tests/gpu/run.sh sets it). */
#define _XOPEN_SOURCE 700
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../engine/backend.h"
#include "../../engine/clip.h"
#include "../../engine/mamba.h"
#include "../../engine/safetensors.h"
#include "../../video/video.h"
#include "../gpu/mamba_dev.h"
#include "harness.h"
#include "testutil.h"

static const md_backend_i *CPU, *BE; /* the reference, the backend under test */

/* `make gpu-emu` builds this test with the CUDA kernels run by the emulator of tests/gpu/emu in
 * place of a GPU: the CUDA cases then check the kernels' arithmetic and indexing on the CPU. */
#ifdef MD_TEST_EMU
const md_backend_i *md_backend_cuda_emu(void);
#define CUDA_UNDER_TEST() md_backend_cuda_emu()
#else
#define CUDA_UNDER_TEST() md_backend_cuda()
#endif

/* ------------------------------------------------------------------ random inputs */

static uint64_t g_rng;
static void seed(uint64_t s) { g_rng = s * 0x9E3779B97F4A7C15ull + 1; }
static uint64_t rnd64(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static float frand(void) { return (float)((rnd64() >> 11) * (2.0 / 9007199254740992.0) - 1.0); }
static float *rand_f(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p + 4);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}

/* Host copy of N floats rounded to type T, and back to float (what the backend sees). */
static void *to_type(const float *x, size_t n, md_bt t)
{
    void *p = malloc(n * md_bt_size(t) + 4);
    CPU->convert(x, MD_BT_F32, p, t, n);
    return p;
}
static float *to_float(const void *x, size_t n, md_bt t)
{
    float *p = malloc(n * sizeof *p + 4);
    CPU->convert(x, t, p, MD_BT_F32, n);
    return p;
}
static float *rounded(const float *x, size_t n, md_bt t)
{
    void *a = to_type(x, n, t);
    float *f = to_float(a, n, t);
    free(a);
    return f;
}

/* ------------------------------------------------------------------ backend buffers */

static void *d_new(size_t bytes)
{
    void *p = NULL;
    md_status st = BE->alloc(bytes, &p);
    if (st != MD_OK)
        fprintf(stderr, "  %s alloc %zu: %s (%s)\n", BE->name, bytes, md_status_str(st), BE->last_error());
    CHECK_EQ_INT(st, MD_OK);
    return p;
}
static void *d_up(const void *h, size_t bytes)
{
    void *p = d_new(bytes);
    if (p)
        CHECK_EQ_INT(BE->upload(p, h, bytes), MD_OK);
    return p;
}
/* An output buffer full of NaN (0xFF bytes). */
static void *d_poison(size_t bytes)
{
    void *p = d_new(bytes);
    if (p)
        CHECK_EQ_INT(BE->fill(p, 0xFF, bytes), MD_OK);
    return p;
}
/* A host copy of a backend buffer, as floats (from type T). */
static float *d_get(const void *d, size_t n, md_bt t)
{
    void *h = malloc(n * md_bt_size(t) + 4);
    md_status st = BE->download(h, d, n * md_bt_size(t));
    if (st != MD_OK)
        fprintf(stderr, "  %s download: %s (%s)\n", BE->name, md_status_str(st), BE->last_error());
    CHECK_EQ_INT(st, MD_OK);
    float *f = to_float(h, n, t);
    free(h);
    return f;
}
static void d_free(void *p) { BE->free(p); }

/* Compares N outputs with the reference; prints one line; counts a failure. */
static void compare(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    double e = 0, s = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            if (!bad++)
                fprintf(stderr, "  %s %s: element %zu is %f (unwritten or overflow)\n", BE->name, what, i, got[i]);
            continue;
        }
        double d = fabs((double)got[i] - ref[i]);
        e = d > e ? d : e;
        s = fabs(ref[i]) > s ? fabs(ref[i]) : s;
    }
    double rel = s > 0 ? e / s : e;
    int ok = !bad && rel <= tol;
    fprintf(stderr, "  %-4s %-44s max rel err %.2e (tol %.0e)%s\n", BE->name, what, rel, tol,
            ok ? "" : bad ? "  NOT FINITE" : "  FAIL");
    CHECK(ok);
}

static int is_cpu(void) { return BE == CPU; }
static double tol(double cpu_vs_double, double dev_vs_cpu) { return is_cpu() ? cpu_vs_double : dev_vs_cpu; }

/* Runs OP through the backend table if it says it supports it; a backend that does not must
 * not crash when asked (it may lack the pointer): the case is then skipped for it. */
static int has(md_op op)
{
    if (BE->supports(op))
        return 1;
    fprintf(stderr, "  %-4s %-44s skipped (not supported)\n", BE->name, md_op_name(op));
    return 0;
}

/* ------------------------------------------------------------------ double references */

static double act_d(md_op act, double z)
{
    switch (act) {
    case MD_OP_GELU: return 0.5 * z * (1 + erf(z / sqrt(2.0)));
    case MD_OP_GELU_TANH: return 0.5 * z * (1 + tanh(sqrt(2 / M_PI) * (z + 0.044715 * z * z * z)));
    case MD_OP_QUICK_GELU: return z / (1 + exp(-1.702 * z));
    default: return z;
    }
}

static void ref_gemm(const float *x, int ldx, int m, int k, const float *w, const float *b, int n, float *y,
                     int acc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = (acc ? y[(size_t)i * n + j] : 0) + (b ? b[j] : 0);
            for (int c = 0; c < k; c++)
                s += (double)x[(size_t)i * ldx + c] * w[(size_t)j * k + c];
            y[(size_t)i * n + j] = (float)s;
        }
}

static void ref_layernorm(const float *x, int rows, int dim, const float *g, const float *b, double eps, float *y)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        double s = 0, ss = 0;
        for (int i = 0; i < dim; i++)
            s += xr[i];
        double mean = s / dim;
        for (int i = 0; i < dim; i++)
            ss += (xr[i] - mean) * (xr[i] - mean);
        for (int i = 0; i < dim; i++)
            y[(size_t)r * dim + i] = (float)((xr[i] - mean) / sqrt(ss / dim + eps) * g[i] + b[i]);
    }
}


/* ------------------------------------------------------------------ cases */

static void case_memory(void)
{
    if (!has(MD_OP_MEMORY))
        return;
    const size_t n = 1 << 18;
    unsigned char *h = malloc(n), *g = malloc(n);
    for (size_t i = 0; i < n; i++)
        h[i] = (unsigned char)(i * 7 + 3);
    size_t used0 = 0, avail = 0;
    CHECK_EQ_INT(BE->mem_info(&used0, &avail), MD_OK);
    void *a = d_up(h, n), *b = d_new(n), *c = d_new(n);
    size_t used1 = 0;
    CHECK_EQ_INT(BE->mem_info(&used1, NULL), MD_OK);
    CHECK(used1 >= used0 + 3 * n);
    CHECK_EQ_INT(BE->copy(b, a, n), MD_OK);
    CHECK_EQ_INT(BE->fill(c, 0x5A, n), MD_OK);
    CHECK_EQ_INT(BE->synchronize(), MD_OK);
    CHECK_EQ_INT(BE->download(g, b, n), MD_OK);
    CHECK(memcmp(g, h, n) == 0);
    CHECK_EQ_INT(BE->download(g, c, n), MD_OK);
    CHECK(g[0] == 0x5A && g[n - 1] == 0x5A);
    /* The budget: an allocation beyond it is MD_ERR_NOMEM with a message, never a crash. */
    BE->set_mem_budget(used1 + n);
    void *big = NULL, *small = NULL;
    CHECK_EQ_INT(BE->alloc(2 * n, &big), MD_ERR_NOMEM);
    CHECK(big == NULL && BE->last_error()[0] != 0);
    fprintf(stderr, "  %-4s %-44s %s\n", BE->name, "budget refusal says", BE->last_error());
    CHECK_EQ_INT(BE->mem_info(NULL, &avail), MD_OK);
    CHECK(avail <= n);
    CHECK_EQ_INT(BE->alloc(n / 2, &small), MD_OK);
    BE->set_mem_budget(0);
    d_free(small);
    CHECK_EQ_INT(BE->alloc(0, &big), MD_OK);
    CHECK(big == NULL);
    BE->free(NULL);
    d_free(a);
    d_free(b);
    d_free(c);
    size_t used2 = 0;
    CHECK_EQ_INT(BE->mem_info(&used2, NULL), MD_OK);
    CHECK(used2 == used0);
    free(h);
    free(g);
    fprintf(stderr, "  %-4s %-44s ok\n", BE->name, "alloc/upload/copy/fill/download/budget");
}

static void case_convert(void)
{
    if (!has(MD_OP_CONVERT))
        return;
    seed(1);
    enum { N = 4099 };
    float *x = rand_f(N, 4);
    const float special[] = {0.0f, -0.0f, 1e-6f, -3e-8f, 65504.0f, 70000.0f, 1e-40f, 3.0e38f, 0.333333f};
    memcpy(x, special, sizeof special);
    for (int yt = MD_BT_F16; yt <= MD_BT_BF16; yt++) {
        uint16_t *want = malloc(N * 2);
        for (int i = 0; i < N; i++)
            want[i] = yt == MD_BT_F16 ? md_f32_to_f16(x[i]) : md_f32_to_bf16(x[i]);
        void *dx = d_up(x, N * 4), *dy = d_poison(N * 2);
        CHECK_EQ_INT(BE->convert(dx, MD_BT_F32, dy, (md_bt)yt, N), MD_OK);
        uint16_t *got = malloc(N * 2);
        CHECK_EQ_INT(BE->download(got, dy, N * 2), MD_OK);
        int same = memcmp(got, want, N * 2) == 0;
        /* and back to F32, exactly */
        void *dz = d_poison(N * 4);
        CHECK_EQ_INT(BE->convert(dy, (md_bt)yt, dz, MD_BT_F32, N), MD_OK);
        float *z = d_get(dz, N, MD_BT_F32);
        for (int i = 0; i < N; i++)
            same &= memcmp(&z[i], &(float){yt == MD_BT_F16 ? md_f16_to_f32(want[i]) : md_bf16_to_f32(want[i])}, 4) == 0;
        fprintf(stderr, "  %-4s %-44s %s\n", BE->name, yt == MD_BT_F16 ? "convert f32 <-> f16 (bits)" : "convert f32 <-> bf16 (bits)",
                same ? "exact" : "DIFFER");
        CHECK(same);
        d_free(dx);
        d_free(dy);
        d_free(dz);
        free(want);
        free(got);
        free(z);
    }
    free(x);
}

static void case_gemm(md_prec prec, md_bt yt, int acc, int withb, int m, int k, int n, int ldx)
{
    if (!has(md_prec_op(prec)))
        return;
    seed(100 + prec * 7 + yt * 3 + acc + withb * 2 + m);
    const md_bt it = md_prec_input(prec);
    float *x = rand_f((size_t)m * ldx, 1), *w = rand_f((size_t)n * k, 1), *b = rand_f(n, 1),
          *y0 = rand_f((size_t)m * n, 1);
    float *xr = rounded(x, (size_t)m * ldx, it), *wr = rounded(w, (size_t)n * k, it), *y0r = rounded(y0, (size_t)m * n, yt);
    void *xh = to_type(x, (size_t)m * ldx, it), *wh = to_type(w, (size_t)n * k, it), *yh = to_type(y0, (size_t)m * n, yt);
    float *ref = malloc((size_t)m * n * sizeof *ref);
    memcpy(ref, y0r, (size_t)m * n * sizeof *ref);
    if (is_cpu()) {
        ref_gemm(xr, ldx, m, k, wr, withb ? b : NULL, n, ref, acc);
        if (yt != MD_BT_F32) {
            float *t = rounded(ref, (size_t)m * n, yt);
            memcpy(ref, t, (size_t)m * n * sizeof *ref);
            free(t);
        }
    } else {
        void *yc = to_type(y0, (size_t)m * n, yt);
        CHECK_EQ_INT(CPU->gemm(prec, xh, ldx, m, k, wh, withb ? b : NULL, n, yc, yt, acc), MD_OK);
        float *t = to_float(yc, (size_t)m * n, yt);
        memcpy(ref, t, (size_t)m * n * sizeof *ref);
        free(t);
        free(yc);
    }
    const size_t is = md_bt_size(it), ys = md_bt_size(yt);
    void *dx = d_up(xh, (size_t)m * ldx * is), *dw = d_up(wh, (size_t)n * k * is), *db = d_up(b, (size_t)n * 4);
    void *dy = acc ? d_up(yh, (size_t)m * n * ys) : d_poison((size_t)m * n * ys);
    md_status st = BE->gemm(prec, dx, ldx, m, k, dw, withb ? db : NULL, n, dy, yt, acc);
    if (st != MD_OK)
        fprintf(stderr, "  %s gemm: %s\n", BE->name, BE->last_error());
    CHECK_EQ_INT(st, MD_OK);
    float *got = d_get(dy, (size_t)m * n, yt);
    char what[96];
    snprintf(what, sizeof what, "gemm %s->%s %dx%dx%d%s%s%s", md_prec_name(prec), md_bt_name(yt), m, k, n,
             acc ? " acc" : "", withb ? " bias" : "", ldx > k ? " ldx" : "");
    double t = yt != MD_BT_F32 ? tol(1e-3, 8e-3) : prec == MD_PREC_TF32 ? tol(1e-5, 5e-3) : tol(1e-5, 1e-4);
    compare(what, got, ref, (size_t)m * n, t);
    d_free(dx);
    d_free(dw);
    d_free(db);
    d_free(dy);
    free(x), free(w), free(b), free(y0), free(xr), free(wr), free(y0r), free(xh), free(wh), free(yh), free(ref);
    free(got);
}

static void case_bias_act(md_op act, md_bt xt, md_bt yt, int withb, int in_place)
{
    if (!has(MD_OP_BIAS_ACT))
        return;
    enum { R = 33, C = 97 };
    seed(200 + act * 5 + xt + yt * 3);
    float *x = rand_f(R * C, 4), *b = rand_f(C, 1);
    float *xr = rounded(x, R * C, xt);
    void *xh = to_type(x, R * C, xt);
    float *ref = malloc(R * C * sizeof *ref);
    if (is_cpu()) {
        for (int i = 0; i < R * C; i++)
            ref[i] = (float)act_d(act, (double)(withb ? xr[i] + b[i % C] : xr[i]));
        float *t = rounded(ref, R * C, yt);
        memcpy(ref, t, R * C * sizeof *ref);
        free(t);
    } else {
        void *yc = malloc(R * C * 4);
        CHECK_EQ_INT(CPU->bias_act(act, xh, xt, withb ? b : NULL, R, C, yc, yt), MD_OK);
        float *t = to_float(yc, R * C, yt);
        memcpy(ref, t, R * C * sizeof *ref);
        free(t);
        free(yc);
    }
    void *dx = d_up(xh, R * C * md_bt_size(xt)), *db = d_up(b, C * 4);
    void *dy = in_place ? dx : d_poison(R * C * md_bt_size(yt));
    CHECK_EQ_INT(BE->bias_act(act, dx, xt, withb ? db : NULL, R, C, dy, yt), MD_OK);
    float *got = d_get(dy, R * C, yt);
    char what[96];
    snprintf(what, sizeof what, "bias_act %s %s->%s%s%s", md_op_name(act), md_bt_name(xt), md_bt_name(yt),
             withb ? " bias" : "", in_place ? " in place" : "");
    compare(what, got, ref, R * C, yt != MD_BT_F32 || xt != MD_BT_F32 ? tol(1e-3, 8e-3) : tol(1e-6, 2e-6));
    d_free(dx);
    d_free(db);
    if (!in_place)
        d_free(dy);
    free(x), free(b), free(xr), free(xh), free(ref), free(got);
}

/* with R: x += r + rb, then (Y_MODE 0: y separate, 1: y = x in place (F32), 2: no y). */
static void case_add_layernorm(md_bt rt, md_bt yt, int withr, int y_mode, int dim)
{
    if (!has(MD_OP_ADD_LAYERNORM))
        return;
    const int R = 19;
    seed(300 + rt + yt * 3 + withr * 7 + y_mode + dim);
    float *x = rand_f((size_t)R * dim, 3), *r = rand_f((size_t)R * dim, 1), *rb = rand_f(dim, 1),
          *g = rand_f(dim, 1), *b = rand_f(dim, 1);
    for (int i = 0; i < R * dim; i++)
        x[i] += 5; /* an offset mean, as residual streams have */
    float *rr = rounded(r, (size_t)R * dim, rt);
    void *rh = to_type(r, (size_t)R * dim, rt);
    float *xref = malloc((size_t)R * dim * 4), *yref = malloc((size_t)R * dim * 4);
    memcpy(xref, x, (size_t)R * dim * 4);
    if (is_cpu()) {
        if (withr)
            for (int i = 0; i < R * dim; i++)
                xref[i] = (float)((double)x[i] + rb[i % dim] + rr[i]);
        ref_layernorm(xref, R, dim, g, b, 1e-5, yref);
        float *t = rounded(yref, (size_t)R * dim, yt);
        memcpy(yref, t, (size_t)R * dim * 4);
        free(t);
    } else {
        void *yc = malloc((size_t)R * dim * 4);
        CHECK_EQ_INT(CPU->add_layernorm(xref, withr ? rh : NULL, rt, withr ? rb : NULL, R, dim, g, b, 1e-5f,
                                        y_mode == 2 ? NULL : y_mode == 1 ? (void *)xref : yc, yt),
                     MD_OK);
        float *t = y_mode == 1 ? NULL : to_float(yc, (size_t)R * dim, yt);
        if (t)
            memcpy(yref, t, (size_t)R * dim * 4);
        else
            memcpy(yref, xref, (size_t)R * dim * 4);
        free(t);
        free(yc);
    }
    void *dx = d_up(x, (size_t)R * dim * 4), *dr = d_up(rh, (size_t)R * dim * md_bt_size(rt)),
         *drb = d_up(rb, dim * 4), *dg = d_up(g, dim * 4), *db = d_up(b, dim * 4);
    void *dy = y_mode == 0 ? d_poison((size_t)R * dim * md_bt_size(yt)) : y_mode == 1 ? dx : NULL;
    CHECK_EQ_INT(BE->add_layernorm(dx, withr ? dr : NULL, rt, withr ? drb : NULL, R, dim, dg, db, 1e-5f, dy, yt), MD_OK);
    char what[96];
    snprintf(what, sizeof what, "add_layernorm %s%s->%s d=%d%s", withr ? "+r:" : "", withr ? md_bt_name(rt) : "",
             y_mode == 2 ? "none" : md_bt_name(yt), dim, y_mode == 1 ? " in place" : "");
    if (y_mode != 1 && withr) { /* the residual stream itself */
        float *gx = d_get(dx, (size_t)R * dim, MD_BT_F32);
        if (is_cpu() || y_mode == 2) {
            float *xr2 = malloc((size_t)R * dim * 4);
            for (int i = 0; i < R * dim; i++)
                xr2[i] = (float)((double)x[i] + rb[i % dim] + rr[i]);
            compare("add_layernorm residual x += r + rb", gx, xr2, (size_t)R * dim, tol(1e-6, 1e-6));
            free(xr2);
        }
        free(gx);
    }
    if (y_mode != 2) {
        float *got = d_get(dy, (size_t)R * dim, yt);
        compare(what, got, yref, (size_t)R * dim, yt != MD_BT_F32 ? tol(1e-3, 8e-3) : tol(1e-5, 1e-5));
        free(got);
    }
    d_free(dx), d_free(dr), d_free(drb), d_free(dg), d_free(db);
    if (y_mode == 0)
        d_free(dy);
    free(x), free(r), free(rb), free(g), free(b), free(rr), free(rh), free(xref), free(yref);
}

static void case_attention(md_bt qt, md_bt ot, int batch, int t, int heads, int hd, int causal, int withb)
{
    if (!has(MD_OP_ATTENTION_EX))
        return;
    seed(400 + qt + ot * 3 + t + hd + causal + withb);
    const size_t rows = (size_t)batch * t, d = (size_t)heads * hd;
    float *qkv = rand_f(rows * 3 * d, 2), *bias = rand_f(3 * d, 1);
    float *qr = rounded(qkv, rows * 3 * d, qt);
    void *qh = to_type(qkv, rows * 3 * d, qt);
    float *ref = malloc(rows * d * 4);
    if (withb)
        for (size_t i = 0; i < rows * 3 * d; i++)
            qr[i] += bias[i % (3 * d)]; /* the op adds the bias in F32 to the stored values */
    if (is_cpu()) {
        tu_ref_attention(qr, batch, t, heads, hd, causal, ref);
        float *tt = rounded(ref, rows * d, ot);
        memcpy(ref, tt, rows * d * 4);
        free(tt);
    } else {
        void *oc = malloc(rows * d * 4);
        CHECK_EQ_INT(CPU->attention_ex(qh, qt, withb ? bias : NULL, batch, t, heads, hd, causal, oc, ot), MD_OK);
        float *tt = to_float(oc, rows * d, ot);
        memcpy(ref, tt, rows * d * 4);
        free(tt);
        free(oc);
    }
    void *dq = d_up(qh, rows * 3 * d * md_bt_size(qt)), *dout = d_poison(rows * d * md_bt_size(ot)),
         *db = d_up(bias, 3 * d * 4);
    md_status st = BE->attention_ex(dq, qt, withb ? db : NULL, batch, t, heads, hd, causal, dout, ot);
    if (st != MD_OK)
        fprintf(stderr, "  %s attention: %s\n", BE->name, BE->last_error());
    CHECK_EQ_INT(st, MD_OK);
    float *got = d_get(dout, rows * d, ot);
    char what[96];
    snprintf(what, sizeof what, "attention %s->%s b=%d t=%d h=%d hd=%d%s%s", md_bt_name(qt), md_bt_name(ot), batch, t,
             heads, hd, causal ? " causal" : "", withb ? " bias" : "");
    compare(what, got, ref, rows * d, ot != MD_BT_F32 || qt != MD_BT_F32 ? tol(1e-3, 8e-3) : tol(1e-5, 1e-5));
    d_free(dq), d_free(dout), d_free(db);
    free(qkv), free(bias), free(qr), free(qh), free(ref), free(got);
}

static void case_embeddings(md_bt ct)
{
    if (!has(MD_OP_PATCH_EMBED) || !has(MD_OP_EMBED_TOKENS))
        return;
    enum { N = 3, S = 28, P = 7, G = S / P, NP = G * G, K = 3 * P * P, D = 24 };
    seed(500 + ct);
    float *px = rand_f((size_t)N * 3 * S * S, 2), *patches = rand_f((size_t)N * NP * D, 1), *cls = rand_f(D, 1),
          *pos = rand_f((NP + 1) * D, 1);
    float *ref = malloc((size_t)N * NP * K * 4), *xref = malloc((size_t)N * (NP + 1) * D * 4);
    for (int i = 0; i < N; i++)
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++)
                for (int ch = 0; ch < 3; ch++)
                    for (int y = 0; y < P; y++)
                        for (int x = 0; x < P; x++)
                            ref[(((size_t)i * G + gy) * G + gx) * K + (ch * P + y) * P + x] =
                                px[(((size_t)i * 3 + ch) * S + gy * P + y) * S + gx * P + x];
    float *t = rounded(ref, (size_t)N * NP * K, ct);
    memcpy(ref, t, (size_t)N * NP * K * 4);
    free(t);
    for (int i = 0; i < N; i++)
        for (int tk = 0; tk <= NP; tk++)
            for (int j = 0; j < D; j++)
                xref[((size_t)i * (NP + 1) + tk) * D + j] =
                    (tk ? patches[((size_t)i * NP + tk - 1) * D + j] : cls[j]) + pos[tk * D + j];
    void *dpx = d_up(px, (size_t)N * 3 * S * S * 4), *dcols = d_poison((size_t)N * NP * K * md_bt_size(ct));
    CHECK_EQ_INT(BE->im2col(dpx, N, S, P, dcols, ct), MD_OK);
    float *got = d_get(dcols, (size_t)N * NP * K, ct);
    char what[64];
    snprintf(what, sizeof what, "patch_embed (im2col) -> %s", md_bt_name(ct));
    compare(what, got, ref, (size_t)N * NP * K, 0);
    void *dp = d_up(patches, (size_t)N * NP * D * 4), *dc = d_up(cls, D * 4), *dpos = d_up(pos, (NP + 1) * D * 4),
         *dx = d_poison((size_t)N * (NP + 1) * D * 4);
    CHECK_EQ_INT(BE->embed_tokens(dp, dc, dpos, N, NP, D, dx), MD_OK);
    float *gx = d_get(dx, (size_t)N * (NP + 1) * D, MD_BT_F32);
    compare("embed_tokens (class + position)", gx, xref, (size_t)N * (NP + 1) * D, 0);
    d_free(dpx), d_free(dcols), d_free(dp), d_free(dc), d_free(dpos), d_free(dx);
    free(px), free(patches), free(cls), free(pos), free(ref), free(xref), free(got), free(gx);
}

/* The GPU's preprocessing algorithm (cuda/kernels_video.cu) written out in C over the same tables,
 * so that the tables and the two passes are checked against md_image_preprocess here. */
static void emulate_prep(const uint8_t *rgb, int w, int h, size_t stride, int S, const float mean[3],
                         const float std[3], float *out)
{
    int rw, rh;
    if (md_backend_resize_dims(w, h, S, &rw, &rh) != MD_OK)
        return;
    const int left = (rw - S) / 2, top = (rh - S) / 2, need_h = rw != w, need_v = rh != h;
    int hks = md_backend_bicubic_coeffs(w, rw, left, S, NULL, NULL), vks = md_backend_bicubic_coeffs(h, rh, top, S, NULL, NULL);
    int *hb = malloc(2 * S * sizeof *hb), *vb = malloc(2 * S * sizeof *vb);
    int32_t *hk = malloc((size_t)S * hks * 4), *vk = malloc((size_t)S * vks * 4);
    md_backend_bicubic_coeffs(w, rw, left, S, hb, hk);
    md_backend_bicubic_coeffs(h, rh, top, S, vb, vk);
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int u = 0; u < 256; u++)
            lut[c][u] = ((float)((double)u * (1.0 / 255.0)) - mean[c]) / std[c];
    int y0 = need_v ? vb[0] : top, y1 = need_v ? vb[0] + vb[1] : top + S;
    for (int i = 0; need_v && i < S; i++) {
        y0 = vb[2 * i] < y0 ? vb[2 * i] : y0;
        y1 = vb[2 * i] + vb[2 * i + 1] > y1 ? vb[2 * i] + vb[2 * i + 1] : y1;
    }
    const int nr = y1 - y0;
    uint8_t *tmp = malloc((size_t)nr * S * 3);
#define CLIP8(v) ((v) >> 22 < 0 ? 0 : (v) >> 22 > 255 ? 255 : (v) >> 22)
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < S; j++)
            for (int c = 0; c < 3; c++) {
                const uint8_t *row = rgb + (size_t)(y0 + r) * stride;
                int v;
                if (!need_h)
                    v = row[(left + j) * 3 + c];
                else {
                    int s = 1 << 21;
                    for (int x = 0; x < hb[2 * j + 1]; x++)
                        s += row[(hb[2 * j] + x) * 3 + c] * hk[(size_t)j * hks + x];
                    v = CLIP8(s);
                }
                tmp[((size_t)r * S + j) * 3 + c] = (uint8_t)v;
            }
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++)
            for (int c = 0; c < 3; c++) {
                int v;
                if (!need_v)
                    v = tmp[((size_t)(top + i - y0) * S + j) * 3 + c];
                else {
                    int s = 1 << 21;
                    for (int y = 0; y < vb[2 * i + 1]; y++)
                        s += tmp[((size_t)(vb[2 * i] + y - y0) * S + j) * 3 + c] * vk[(size_t)i * vks + y];
                    v = CLIP8(s);
                }
                out[((size_t)c * S + i) * S + j] = lut[c][v];
            }
#undef CLIP8
    free(hb), free(vb), free(hk), free(vk), free(tmp);
}

static void case_preprocess(int w, int h, int S, int n)
{
    if (!has(MD_OP_PREPROCESS))
        return;
    seed(600 + w + h + S);
    const size_t stride = (size_t)w * 3 + 5, fstride = stride * h + 11; /* padded rows and frames */
    uint8_t *rgb = malloc(fstride * n);
    for (size_t i = 0; i < fstride * n; i++)
        rgb[i] = (uint8_t)(rnd64() >> 40);
    /* part smooth (where rounding decides), part noise */
    for (int f = 0; f < n; f++)
        for (int y = 0; y < h / 2; y++)
            for (int x = 0; x < w * 3; x++)
                rgb[f * fstride + y * stride + x] = (uint8_t)((x / 3 * 255 / w + y * 255 / h + f * 40) & 255);
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    const size_t per = (size_t)3 * S * S;
    float *ref = malloc(per * n * 4);
    for (int f = 0; f < n; f++)
        CHECK_EQ_INT(md_image_preprocess(rgb + f * fstride, w, h, (ptrdiff_t)stride, 3, 0, S, mean, std,
                                             ref + f * per),
                     MD_OK);
    if (is_cpu()) { /* the GPU's algorithm, in C, against the reference */
        float *em = malloc(per * 4);
        emulate_prep(rgb, w, h, stride, S, mean, std, em);
        char what[96];
        snprintf(what, sizeof what, "preprocess GPU algorithm in C %dx%d->%d", w, h, S);
        compare(what, em, ref, per, 0);
        free(em);
    }
    void *drgb = d_up(rgb, fstride * n), *dout = d_poison(per * n * 4);
    md_status st = BE->preprocess(drgb, n, w, h, stride, fstride, S, mean, std, dout);
    if (st != MD_OK)
        fprintf(stderr, "  %s preprocess: %s\n", BE->name, BE->last_error());
    CHECK_EQ_INT(st, MD_OK);
    float *got = d_get(dout, per * n, MD_BT_F32);
    char what[96];
    snprintf(what, sizeof what, "preprocess %d x %dx%d->%d (bit-exact)", n, w, h, S);
    compare(what, got, ref, per * n, 0);
    d_free(drgb), d_free(dout);
    free(rgb), free(ref), free(got);
}

static void case_conv1d(int reverse, int withprev)
{
    if (!has(MD_OP_CONV1D_SILU))
        return;
    enum { B = 2, L = 37, C = 45, K = 4, LDX = 2 * C };
    seed(700 + reverse * 2 + withprev);
    float *x = rand_f((size_t)B * L * LDX, 2), *w = rand_f(C * K, 1), *b = rand_f(C, 1),
          *prev = rand_f((size_t)B * (K - 1) * C, 2);
    float *ref = malloc((size_t)B * L * C * 4);
    for (int bi = 0; bi < B; bi++)
        for (int t = 0; t < L; t++)
            for (int c = 0; c < C; c++) {
                double acc = b[c];
                for (int k = 0; k < K; k++) {
                    /* forward: x[t - (K-1) + k]; backward: x[t + (K-1) - k] */
                    int s = reverse ? t + (K - 1) - k : t - (K - 1) + k;
                    double v = 0;
                    if (s >= 0 && s < L)
                        v = x[((size_t)bi * L + s) * LDX + c];
                    else if (s < 0 && !reverse && withprev)
                        v = prev[((size_t)bi * (K - 1) + K - 1 + s) * C + c];
                    acc += (double)w[c * K + k] * v;
                }
                ref[((size_t)bi * L + t) * C + c] = (float)(acc / (1 + exp(-acc)));
            }
    void *dx = d_up(x, (size_t)B * L * LDX * 4), *dw = d_up(w, C * K * 4), *db = d_up(b, C * 4),
         *dp = d_up(prev, (size_t)B * (K - 1) * C * 4), *dy = d_poison((size_t)B * L * C * 4);
    CHECK_EQ_INT(BE->conv1d_silu(dx, LDX, B, L, C, dw, db, K, withprev ? dp : NULL, reverse, dy), MD_OK);
    float *got = d_get(dy, (size_t)B * L * C, MD_BT_F32);
    char what[64];
    snprintf(what, sizeof what, "conv1d_silu%s%s", reverse ? " reverse" : "", withprev ? " carried" : "");
    compare(what, got, ref, (size_t)B * L * C, tol(1e-5, 1e-5));
    d_free(dx), d_free(dw), d_free(db), d_free(dp), d_free(dy);
    free(x), free(w), free(b), free(prev), free(ref), free(got);
}

/* The scan in double (with the fused softplus and bias), as mamba.h states it. */
static void ref_scan(const md_scan_args *a, float *h_out)
{
    for (int bi = 0; bi < a->batch; bi++)
        for (int c = 0; c < a->C; c++) {
            double h[64];
            for (int n = 0; n < a->N; n++)
                h[n] = a->h ? a->h[((size_t)bi * a->C + c) * a->N + n] : 0;
            for (int i = 0; i < a->L; i++) {
                int t = a->reverse ? a->L - 1 - i : i;
                size_t row = (size_t)bi * a->L + t;
                double dt = (double)a->delta[row * a->ldd + c] + (a->delta_bias ? a->delta_bias[c] : 0);
                if (a->delta_softplus)
                    dt = dt > 20 ? dt : log1p(exp(dt));
                double u = a->u[row * a->ldu + c], acc = 0;
                for (int n = 0; n < a->N; n++) {
                    h[n] = exp(dt * a->A[(size_t)c * a->N + n]) * h[n] + dt * a->B[row * a->ldbc + n] * u;
                    acc += a->Cm[row * a->ldbc + n] * h[n];
                }
                a->y[row * a->ldy + c] = (float)(acc + (a->D ? a->D[c] * u : 0));
                if (h_out && i + 1 == a->h_at)
                    for (int n = 0; n < a->N; n++)
                        h_out[((size_t)bi * a->C + c) * a->N + n] = (float)h[n];
            }
        }
}

static void case_scan(int batch, int L, int C, int N, int reverse, int fused, int with_h, int h_at)
{
    if (!has(MD_OP_SCAN))
        return;
    seed(800 + L + C + N + reverse + fused * 3 + with_h);
    const int ld = 2 * C, ldbc = 8 + 2 * N; /* u and delta inside wider rows, B|C inside x_proj rows */
    const size_t rows = (size_t)batch * L, hn = (size_t)batch * C * N;
    float *u = rand_f(rows * ld, 2), *delta = rand_f(rows * ld, 2), *bc = rand_f(rows * ldbc, 1),
          *A = rand_f((size_t)C * N, 1), *D = rand_f(C, 1), *bias = rand_f(C, 1), *h0 = rand_f(hn, 1);
    for (size_t i = 0; i < (size_t)C * N; i++)
        A[i] = -expf(logf((float)(i % N + 1)) + 0.1f * A[i]); /* Mamba's S4D-real init, jittered */
    if (!fused)
        for (size_t i = 0; i < rows * ld; i++)
            delta[i] = 0.001f + 0.05f * (1 + delta[i]); /* already positive step sizes */
    float *ref = malloc(rows * C * 4), *href = malloc(hn * 4);
    memcpy(href, h0, hn * 4);
    md_scan_args r = {batch, L, C, N, u, ld, delta, ld, fused ? bias : NULL, fused, A, bc + 8, bc + 8 + N,
                      ldbc, D, reverse, with_h ? href : NULL, h_at, ref, C};
    if (is_cpu()) {
        md_scan_args r2 = r;
        r2.h = with_h ? h0 : NULL; /* ref_scan reads the start state from H, writes the end to href */
        ref_scan(&r2, with_h ? href : NULL);
        if (!reverse && !fused && batch == 1 && !with_h) {
            /* and the project's reference scan, which the CPU op must equal in substance */
            float *y2 = malloc((size_t)L * C * 4), *ud = malloc((size_t)L * C * 4), *dd = malloc((size_t)L * C * 4);
            for (int t = 0; t < L; t++)
                for (int c = 0; c < C; c++) {
                    ud[(size_t)t * C + c] = u[(size_t)t * ld + c];
                    dd[(size_t)t * C + c] = delta[(size_t)t * ld + c];
                }
            md_mamba_selective_scan_ref(L, C, N, ud, dd, A, bc + 8, bc + 8 + N, ldbc, D, NULL, L, y2);
            compare("scan: md_mamba_selective_scan_ref vs double", y2, ref, (size_t)L * C, 1e-5);
            free(y2), free(ud), free(dd);
        }
    } else {
        CHECK_EQ_INT(CPU->scan(&r), MD_OK); /* href: from h0 to the state after h_at steps */
    }
    void *du = d_up(u, rows * ld * 4), *dd = d_up(delta, rows * ld * 4), *dbc = d_up(bc, rows * ldbc * 4),
         *dA = d_up(A, (size_t)C * N * 4), *dD = d_up(D, C * 4), *dbias = d_up(bias, C * 4), *dh = d_up(h0, hn * 4),
         *dy = d_poison(rows * C * 4);
    md_scan_args g = {batch, L, C, N, du, ld, dd, ld, fused ? dbias : NULL, fused, dA, (float *)dbc + 8,
                      (float *)dbc + 8 + N, ldbc, dD, reverse, with_h ? dh : NULL, h_at, dy, C};
    md_status st = BE->scan(&g);
    if (st != MD_OK)
        fprintf(stderr, "  %s scan: %s\n", BE->name, BE->last_error());
    CHECK_EQ_INT(st, MD_OK);
    float *got = d_get(dy, rows * C, MD_BT_F32);
    char what[96];
    snprintf(what, sizeof what, "scan b=%d L=%d C=%d N=%d%s%s%s", batch, L, C, N, reverse ? " rev" : "",
             fused ? " softplus+bias" : "", with_h ? " state" : "");
    compare(what, got, ref, rows * C, tol(1e-5, 1e-4));
    if (with_h) {
        float *gh = d_get(dh, hn, MD_BT_F32);
        snprintf(what, sizeof what, "scan state after %d of %d steps", h_at, L);
        compare(what, gh, href, hn, tol(1e-5, 1e-4));
        free(gh);
    }
    d_free(du), d_free(dd), d_free(dbc), d_free(dA), d_free(dD), d_free(dbias), d_free(dh), d_free(dy);
    free(u), free(delta), free(bc), free(A), free(D), free(bias), free(h0), free(ref), free(href), free(got);
}

static void case_gate_pool(void)
{
    if (!has(MD_OP_GATE) || !has(MD_OP_POOL))
        return;
    enum { R = 41, C = 70, LDZ = 2 * C, G = 5, K = 4, LDX = 3 * C };
    seed(900);
    float *z = rand_f(R * LDZ, 4), *a = rand_f(R * C, 1), *b = rand_f(R * C, 1), *x = rand_f(G * K * LDX, 1);
    float *ref = malloc(R * C * 4), *pref = malloc(G * C * 4);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            double zv = z[r * LDZ + c];
            ref[r * C + c] = (float)(((double)a[r * C + c] + b[r * C + c]) * 0.5 * zv / (1 + exp(-zv)));
        }
    for (int g = 0; g < G; g++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int i = 0; i < K; i++)
                s += x[(g * K + i) * LDX + c];
            pref[g * C + c] = (float)(s / K);
        }
    void *dz = d_up(z, R * LDZ * 4), *da = d_up(a, R * C * 4), *db = d_up(b, R * C * 4), *dy = d_poison(R * C * 4),
         *dx = d_up(x, G * K * LDX * 4), *dp = d_poison(G * C * 4);
    CHECK_EQ_INT(BE->gate(dz, LDZ, da, db, R, C, 0.5f, dy), MD_OK);
    float *got = d_get(dy, R * C, MD_BT_F32);
    compare("gate SiLU(z) * (a + b) / 2", got, ref, R * C, tol(1e-6, 2e-6));
    CHECK_EQ_INT(BE->gate(dz, LDZ, da, NULL, R, C, 1.0f, da), MD_OK); /* in place, one direction */
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            double zv = z[r * LDZ + c];
            ref[r * C + c] = (float)((double)a[r * C + c] * zv / (1 + exp(-zv)));
        }
    float *g2 = d_get(da, R * C, MD_BT_F32);
    compare("gate SiLU(z) * a in place", g2, ref, R * C, tol(1e-6, 2e-6));
    CHECK_EQ_INT(BE->pool(dx, LDX, G, K, C, dp), MD_OK);
    float *gp = d_get(dp, G * C, MD_BT_F32);
    compare("pool (mean over groups of rows)", gp, pref, G * C, tol(1e-6, 2e-6));
    d_free(dz), d_free(da), d_free(db), d_free(dy), d_free(dx), d_free(dp);
    free(z), free(a), free(b), free(x), free(ref), free(pref), free(got), free(g2), free(gp);
}

static int cmp_desc(const void *pa, const void *pb)
{
    const double *a = pa, *b = pb; /* (value, index) pairs */
    if (a[0] != b[0])
        return a[0] > b[0] ? -1 : 1;
    return a[1] < b[1] ? -1 : a[1] > b[1];
}

static void case_score_topk(long long n, int dim, int k, int ties)
{
    if (!has(MD_OP_SCORE) || !has(MD_OP_TOPK))
        return;
    seed(1000 + n + dim + k + ties);
    uint16_t *e = malloc((size_t)n * dim * 2);
    float *q = rand_f(dim, 1);
    for (size_t i = 0; i < (size_t)n * dim; i++)
        e[i] = md_f32_to_f16(frand() / sqrtf((float)dim));
    float *ref = malloc((size_t)n * 4);
    for (long long i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < dim; j++)
            s += (double)md_f16_to_f32(e[(size_t)i * dim + j]) * q[j];
        ref[i] = (float)s;
    }
    void *de = d_up(e, (size_t)n * dim * 2), *dq = d_up(q, dim * 4), *ds = d_poison((size_t)n * 4);
    CHECK_EQ_INT(BE->score(de, n, dim, dq, ds), MD_OK);
    float *got = d_get(ds, n, MD_BT_F32);
    char what[96];
    snprintf(what, sizeof what, "score %lld x %d f16", n, dim);
    compare(what, got, ref, n, tol(1e-5, 1e-5));
    /* top-k on the reference scores (so both backends rank the same values); quantised to force ties */
    if (ties)
        for (long long i = 0; i < n; i++)
            ref[i] = roundf(ref[i] * 20) / 20;
    double *pairs = malloc((size_t)n * 2 * sizeof *pairs);
    for (long long i = 0; i < n; i++)
        pairs[2 * i] = ref[i], pairs[2 * i + 1] = (double)i;
    qsort(pairs, n, 2 * sizeof *pairs, cmp_desc);
    void *dr = d_up(ref, (size_t)n * 4), *di = d_poison((size_t)k * 8), *dv = d_poison((size_t)k * 4);
    md_status st = BE->topk(dr, n, k, di, dv);
    if (st != MD_OK)
        fprintf(stderr, "  %s topk: %s\n", BE->name, BE->last_error());
    CHECK_EQ_INT(st, MD_OK);
    long long *gi = malloc((size_t)k * 8);
    float *gv = malloc((size_t)k * 4);
    CHECK_EQ_INT(BE->download(gi, di, (size_t)k * 8), MD_OK);
    CHECK_EQ_INT(BE->download(gv, dv, (size_t)k * 4), MD_OK);
    int same = 1;
    for (int i = 0; i < k; i++)
        same &= gi[i] == (long long)pairs[2 * i + 1] && gv[i] == (float)pairs[2 * i];
    fprintf(stderr, "  %-4s top %-4d of %-8lld%s%-26s %s\n", BE->name, k, n, ties ? " with ties" : "", "",
            same ? "exact" : "DIFFER");
    CHECK(same);
    d_free(de), d_free(dq), d_free(ds), d_free(dr), d_free(di), d_free(dv);
    free(e), free(q), free(ref), free(got), free(pairs), free(gi), free(gv);
}

/* The F32 ops of the first group, called with host pointers (test_clip.c's way), and their
 * results against the CPU's. */
static void case_legacy_host_pointers(void)
{
    enum { M = 37, K = 45, N = 29, B = 3, T = 11, H = 4, HD = 8, D = H * HD };
    seed(1100);
    float *x = rand_f(M * K, 1), *w = rand_f(N * K, 1), *b = rand_f(N, 1), *y = rand_f(M * N, 1);
    float *r = malloc(M * N * 4);
    memcpy(r, y, M * N * 4);
    if (BE->supports(MD_OP_LINEAR)) {
        CHECK_EQ_INT(BE->linear(x, M, K, w, b, N, y, 1), MD_OK);
        if (is_cpu())
            ref_gemm(x, K, M, K, w, b, N, r, 1);
        else
            CPU->linear(x, M, K, w, b, N, r, 1);
        compare("linear (host pointers) acc bias", y, r, M * N, tol(1e-5, 1e-5));
    }
    float *g = rand_f(K, 1), *bb = rand_f(K, 1), *ln = malloc(M * K * 4), *lr = malloc(M * K * 4);
    if (BE->supports(MD_OP_LAYERNORM)) {
        CHECK_EQ_INT(BE->layernorm(x, M, K, g, bb, 1e-5f, ln), MD_OK);
        ref_layernorm(x, M, K, g, bb, 1e-5, lr);
        compare("layernorm (host pointers)", ln, lr, M * K, 1e-5);
        memcpy(ln, x, M * K * 4);
        CHECK_EQ_INT(BE->layernorm(ln, M, K, g, bb, 1e-5f, ln), MD_OK);
        compare("layernorm (host pointers) in place", ln, lr, M * K, 1e-5);
    }
    md_op acts[] = {MD_OP_GELU, MD_OP_GELU_TANH, MD_OP_QUICK_GELU};
    for (int a = 0; a < 3; a++) {
        if (!BE->supports(acts[a]))
            continue;
        float v[256], ref[256];
        for (int i = 0; i < 256; i++) {
            v[i] = (i - 128) / 16.0f;
            ref[i] = (float)act_d(acts[a], v[i]);
        }
        CHECK_EQ_INT(BE->activation(acts[a], v, 256), MD_OK);
        char what[64];
        snprintf(what, sizeof what, "%s (host pointers)", md_op_name(acts[a]));
        compare(what, v, ref, 256, 1e-6);
    }
    float *qkv = rand_f(B * T * 3 * D, 2), *ao = malloc(B * T * D * 4), *ar = malloc(B * T * D * 4);
    for (int causal = 0; causal < 2 && BE->supports(MD_OP_ATTENTION); causal++) {
        CHECK_EQ_INT(BE->attention(qkv, B, T, H, HD, causal, ao), MD_OK);
        tu_ref_attention(qkv, B, T, H, HD, causal, ar);
        compare(causal ? "attention (host pointers) causal" : "attention (host pointers)", ao, ar, B * T * D, 1e-5);
    }
    if (BE->supports(MD_OP_ADD) && BE->supports(MD_OP_L2NORM)) {
        float p[2 * N], q2[2 * N], s[2 * N];
        memcpy(p, b, sizeof p / 2);
        memcpy(p + N, b, sizeof p / 2);
        for (int i = 0; i < 2 * N; i++)
            q2[i] = frand(), s[i] = p[i] + q2[i];
        CHECK_EQ_INT(BE->add(p, q2, 2 * N), MD_OK);
        compare("add (host pointers)", p, s, 2 * N, 0);
        CHECK_EQ_INT(BE->l2norm(p, 2, N), MD_OK);
        for (int i = 0; i < 2; i++) {
            double n2 = 0;
            for (int j = 0; j < N; j++)
                n2 += (double)p[i * N + j] * p[i * N + j];
            CHECK(fabs(n2 - 1) < 1e-6);
        }
        float zz[4] = {0};
        CHECK_EQ_INT(BE->l2norm(zz, 1, 4), MD_OK); /* zeros stay zeros, no NaN */
        CHECK(zz[0] == 0 && zz[3] == 0);
        fprintf(stderr, "  %-4s %-44s ok\n", BE->name, "l2norm (host pointers)");
    }
    free(x), free(w), free(b), free(y), free(r), free(g), free(bb), free(ln), free(lr), free(qkv), free(ao), free(ar);
}

/* Shapes a backend does not handle are an error with a message, never a crash. */
static void case_refusals(void)
{
    if (is_cpu())
        return;
    void *q = d_new(3 * 256 * 4), *o = d_new(256 * 4);
    md_status st = BE->attention_ex(q, MD_BT_F32, NULL, 1, 1, 1, 256, 0, o, MD_BT_F32);
    fprintf(stderr, "  %-4s %-44s %s: %s\n", BE->name, "attention head size 256", md_status_str(st), BE->last_error());
    CHECK(st == MD_OK || st == MD_ERR_UNSUPPORTED);
    CHECK_EQ_INT(BE->gemm(MD_PREC_F32, q, 4, 2, 4, q, NULL, 4, o, MD_BT_F16, 0), MD_ERR_UNSUPPORTED);
    CHECK(BE->last_error()[0] != 0);
    d_free(q), d_free(o);
}

/* ------------------------------------------------------------------ the Mamba encoder from ops */

/* tests/gpu/mamba_dev.h (the encoder composed from backend ops) against md_mamba_forward. */
static void case_mamba_dev(int dirs, int final_norm, int L)
{
    if (!has(MD_OP_SCAN) || !has(MD_OP_CONV1D_SILU) || !has(MD_OP_GATE))
        return;
    md_mamba_config c;
    md_mamba_config_default(&c, 48);
    c.n_layers = 2;
    c.dirs = dirs;
    c.in_proj_bias = c.out_proj_bias = 1;
    c.final_norm = final_norm;
    md_mamba *m = NULL;
    char err[256];
    CHECK_EQ_INT(md_mamba_new(&c, &m, err, sizeof err), MD_OK);
    if (!m)
        return;
    seed(1300 + dirs + L);
    const int di = md_mamba_d_inner(&c);
    for (size_t i = 0; i < m->mem_floats; i++)
        m->mem[i] = frand() / sqrtf((float)di);
    for (int i = 0; i < c.n_layers; i++) {
        md_mamba_layer *l = &m->layers[i];
        for (int j = 0; j < c.d_model; j++)
            l->norm_w[j] = 1.0f + 0.1f * frand();
        for (int dd = 0; dd < 2; dd++)
            if (dirs & (dd ? MD_MAMBA_BWD : MD_MAMBA_FWD))
                for (int j = 0; j < di; j++) {
                    l->dir[dd].dt_proj_b[j] = logf(expm1f(0.001f + 0.05f * (1 + frand())));
                    for (int n = 0; n < c.d_state; n++)
                        l->dir[dd].A_log[j * c.d_state + n] = logf((float)(n + 1));
                }
    }
    md_mamba_prepare(m);
    m->force_compute = 1;
    float *x = rand_f((size_t)L * c.d_model, 1), *ref = malloc((size_t)L * c.d_model * 4);
    memcpy(ref, x, (size_t)L * c.d_model * 4);
    CHECK_EQ_INT(md_mamba_forward(m, NULL, ref, L, NULL, 0), MD_OK);
    md_mamba_dev *d = NULL;
    CHECK_EQ_INT(md_mamba_dev_new(BE, m, MD_PREC_F32, &d), MD_OK);
    float *dx = d_up(x, (size_t)L * c.d_model * 4);
    md_status st = d ? md_mamba_dev_forward(d, dx, L) : MD_ERR_INTERNAL;
    if (st != MD_OK)
        fprintf(stderr, "  %s mamba: %s\n", BE->name, BE->last_error());
    CHECK_EQ_INT(st, MD_OK);
    float *got = d_get(dx, (size_t)L * c.d_model, MD_BT_F32);
    char what[96];
    snprintf(what, sizeof what, "mamba encoder from ops L=%d %s%s vs md_mamba_forward", L,
             dirs == MD_MAMBA_BOTH ? "bidir" : "fwd", final_norm ? " norm_f" : "");
    compare(what, got, ref, (size_t)L * c.d_model, tol(2e-5, 1e-4));
    d_free(dx);
    md_mamba_dev_free(d);
    md_mamba_free(m);
    free(x), free(ref), free(got);
}

/* ------------------------------------------------------------------ the CLIP towers' device path */

static char g_dir[PATH_MAX];

/* Several threads embedding with one model on the device path at once: each call takes the kept
 * scratch buffer or its own, and (CUDA) runs on its thread's stream. */
typedef struct clip_job {
    md_clip *m;
    const float *px;
    int n, E, rounds;
    float *out;
    md_status st;
} clip_job;

static void *clip_job_run(void *p)
{
    clip_job *j = p;
    char err[256];
    for (int r = 0; r < j->rounds && j->st == MD_OK; r++)
        j->st = md_clip_embed_images(j->m, j->px, j->n, j->out, NULL, err, sizeof err);
    return NULL;
}

static void clip_threads(md_clip *dev, const float *px, int n, int E, const float *want)
{
    enum { NT = 3 };
    clip_job jobs[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
        jobs[i] = (clip_job){dev, px, n, E, 3, malloc((size_t)n * E * 4), MD_OK};
        pthread_create(&th[i], NULL, clip_job_run, &jobs[i]);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(jobs[i].st, MD_OK);
        char what[64];
        snprintf(what, sizeof what, "clip device path, thread %d of %d at once", i + 1, NT);
        compare(what, jobs[i].out, want, (size_t)n * E, 1e-6);
        free(jobs[i].out);
    }
}

/* Embeddings of the demo model through BE's device path, against the CPU's host path. */
static void case_clip_device_path(const char *prec)
{
    char err[512] = "";
    md_clip *host = NULL, *dev = NULL;
    /* F32 must give the host path's numbers (1e-5); F16/BF16/TF32 a cosine >= 0.999. */
    const int exact = strcmp(prec, "f32") == 0;
    CHECK_EQ_INT(md_clip_load(g_dir, CPU, &host, err, sizeof err), MD_OK);
    /* On the CPU the device path is forced. */
    if (is_cpu())
        setenv("MD_CLIP_DEVICE_PATH", "1", 1);
    setenv("MD_CUDA_PRECISION", prec, 1);
    md_status st = md_clip_load(g_dir, BE, &dev, err, sizeof err);
    unsetenv("MD_CLIP_DEVICE_PATH");
    if (st != MD_OK)
        fprintf(stderr, "  %s clip load: %s\n", BE->name, err);
    CHECK_EQ_INT(st, MD_OK);
    if (!host || !dev)
        goto out;
    CHECK(md_clip_backend(dev) == BE);
    CHECK(strstr(md_clip_describe(dev), " on ") != NULL); /* the device path is in use */
    fprintf(stderr, "  %-4s %-44s %s\n", BE->name, "clip:", md_clip_describe(dev));
    {
        const int n = 5, S = md_clip_image_size(host), E = md_clip_dim(host), T = md_clip_n_patches(host) + 1;
        seed(1200);
        float *px = rand_f((size_t)n * 3 * S * S, 2);
        float *e1 = malloc((size_t)n * E * 4), *e2 = malloc((size_t)n * E * 4), *t1 = malloc((size_t)n * T * E * 4),
              *t2 = malloc((size_t)n * T * E * 4), *e3 = malloc((size_t)n * E * 4);
        CHECK_EQ_INT(md_clip_embed_images(host, px, n, e1, t1, err, sizeof err), MD_OK);
        md_clip_set_max_batch(dev, 2); /* several chunks */
        st = md_clip_embed_images(dev, px, n, e2, t2, err, sizeof err);
        if (st != MD_OK)
            fprintf(stderr, "  %s clip images: %s\n", BE->name, err);
        CHECK_EQ_INT(st, MD_OK);
        CHECK_EQ_INT(md_clip_embed_images(dev, px, n, e3, NULL, err, sizeof err), MD_OK);
        if (exact)
            clip_threads(dev, px, n, E, e3);
        double worst = 1;
        for (int i = 0; i < n; i++) {
            double c = 0, c3 = 0;
            for (int j = 0; j < E; j++)
                c += (double)e1[i * E + j] * e2[i * E + j], c3 += (double)e1[i * E + j] * e3[i * E + j];
            worst = c < worst ? c : worst;
            worst = c3 < worst ? c3 : worst;
        }
        if (exact) {
            compare("clip device path (f32): image embeddings", e2, e1, (size_t)n * E, 1e-5);
            compare("clip device path (f32): image embeddings, no tokens", e3, e1, (size_t)n * E, 1e-5);
            compare("clip device path (f32): every token", t2, t1, (size_t)n * T * E, 1e-5);
        } else {
            fprintf(stderr, "  %-4s clip device path (%-4s): image embeddings      worst cosine %.6f (>= 0.999)\n", BE->name,
                    prec, worst);
            CHECK(worst >= 0.999);
        }
        float a1[1024], a2[1024];
        CHECK(E <= 1024);
        CHECK_EQ_INT(md_clip_embed_text(host, "a dog jumps into a pool", a1, NULL, NULL, err, sizeof err), MD_OK);
        CHECK_EQ_INT(md_clip_embed_text(dev, "a dog jumps into a pool", a2, NULL, NULL, err, sizeof err), MD_OK);
        double c = 0;
        for (int j = 0; j < E; j++)
            c += (double)a1[j] * a2[j];
        if (exact)
            compare("clip device path (f32): text embedding", a2, a1, E, 1e-5);
        else {
            fprintf(stderr, "  %-4s clip device path (%-4s): text embedding        cosine %.6f (>= 0.999)\n", BE->name, prec,
                    c);
            CHECK(c >= 0.999);
        }
        /* A budget too small for one image: a clear error, and the model still works after. A model
         * whose weights do not fit under the budget runs on the CPU instead. */
        md_clip *fresh = NULL, *small = NULL;
        if (is_cpu())
            setenv("MD_CLIP_DEVICE_PATH", "1", 1);
        CHECK_EQ_INT(md_clip_load(g_dir, BE, &fresh, err, sizeof err), MD_OK);
        size_t used = 0;
        BE->mem_info(&used, NULL);
        BE->set_mem_budget(used + 4096);
        CHECK_EQ_INT(md_clip_load(g_dir, BE, &small, err, sizeof err), MD_OK);
        unsetenv("MD_CLIP_DEVICE_PATH");
        if (small)
            CHECK(md_clip_backend(small) == CPU && strstr(md_clip_describe(small), " on ") == NULL);
        if (fresh) {
            CHECK(strstr(md_clip_describe(fresh), " on ") != NULL); /* the device path is in use */
            st = md_clip_embed_images(fresh, px, 1, e2, NULL, err, sizeof err);
            fprintf(stderr, "  %-4s %-44s %s: %s\n", BE->name, "clip with a tiny memory budget", md_status_str(st), err);
            CHECK_EQ_INT(st, MD_ERR_NOMEM);
            BE->set_mem_budget(0);
            CHECK_EQ_INT(md_clip_embed_images(fresh, px, 1, e2, NULL, err, sizeof err), MD_OK);
        }
        BE->set_mem_budget(0);
        md_clip_free(fresh);
        md_clip_free(small);
        unsetenv("MD_CUDA_PRECISION");
        free(px), free(e1), free(e2), free(e3), free(t1), free(t2);
    }
out:
    unsetenv("MD_CUDA_PRECISION");
    md_clip_free(host);
    md_clip_free(dev);
}

/* ------------------------------------------------------------------ driver */

static void run_all(void)
{
    case_memory();
    case_convert();
    for (int p = MD_PREC_F32; p <= MD_PREC_BF16; p++) {
        md_bt it = md_prec_input((md_prec)p);
        case_gemm((md_prec)p, MD_BT_F32, 0, 1, 37, 45, 29, 45);
        case_gemm((md_prec)p, MD_BT_F32, 1, 1, 64, 256, 96, 256);
        case_gemm((md_prec)p, MD_BT_F32, 1, 0, 50, 64, 40, 3 * 64);
        case_gemm((md_prec)p, MD_BT_F32, 0, 0, 200, 768, 128, 768);
        if (it != MD_BT_F32) {
            case_gemm((md_prec)p, it, 0, 1, 64, 128, 72, 128);
            case_gemm((md_prec)p, it, 1, 0, 33, 64, 48, 64);
        }
    }
    md_op acts[] = {MD_OP_NONE, MD_OP_GELU, MD_OP_GELU_TANH, MD_OP_QUICK_GELU};
    for (int a = 0; a < 4; a++)
        case_bias_act(acts[a], MD_BT_F32, MD_BT_F32, 1, 0);
    case_bias_act(MD_OP_QUICK_GELU, MD_BT_F16, MD_BT_F16, 1, 1);
    case_bias_act(MD_OP_GELU, MD_BT_BF16, MD_BT_BF16, 1, 0);
    case_bias_act(MD_OP_NONE, MD_BT_F32, MD_BT_F16, 0, 0);
    case_add_layernorm(MD_BT_F32, MD_BT_F32, 0, 0, 45);
    case_add_layernorm(MD_BT_F32, MD_BT_F32, 1, 0, 768);
    case_add_layernorm(MD_BT_F16, MD_BT_F16, 1, 0, 512);
    case_add_layernorm(MD_BT_BF16, MD_BT_BF16, 1, 0, 100);
    case_add_layernorm(MD_BT_F32, MD_BT_F32, 1, 1, 64);
    case_add_layernorm(MD_BT_F32, MD_BT_F32, 1, 2, 64);
    case_attention(MD_BT_F32, MD_BT_F32, 3, 11, 4, 8, 0, 0);
    case_attention(MD_BT_F32, MD_BT_F32, 2, 50, 3, 64, 0, 1);
    case_attention(MD_BT_F32, MD_BT_F32, 1, 77, 2, 64, 1, 1);
    case_attention(MD_BT_F16, MD_BT_F16, 4, 50, 2, 64, 0, 1);
    case_attention(MD_BT_BF16, MD_BT_F32, 2, 40, 2, 96, 1, 0);
    case_attention(MD_BT_F32, MD_BT_F32, 1, 70, 1, 128, 0, 0);
    case_embeddings(MD_BT_F32);
    case_embeddings(MD_BT_F16);
    case_preprocess(64, 48, 24, 2);      /* downscale, landscape */
    case_preprocess(37, 91, 32, 1);      /* portrait, odd sizes */
    case_preprocess(20, 15, 32, 2);      /* upscale */
    case_preprocess(32, 60, 32, 1);      /* width unchanged: no horizontal pass */
    case_preprocess(320, 180, 56, 3);    /* 16:9 */
    case_conv1d(0, 0);
    case_conv1d(0, 1);
    case_conv1d(1, 0);
    case_scan(1, 150, 70, 16, 0, 0, 0, 150);
    case_scan(2, 150, 70, 16, 1, 1, 0, 150);
    case_scan(2, 100, 40, 16, 0, 1, 1, 77);
    case_scan(1, 70, 33, 4, 0, 1, 1, 0);
    case_scan(1, 9, 64, 64, 1, 0, 1, 9);
    case_gate_pool();
    case_score_topk(3000, 512, 10, 0);
    case_score_topk(5000, 100, 1000, 1);
    case_score_topk(257, 64, 257, 1);
    case_mamba_dev(MD_MAMBA_BOTH, 1, 150);
    case_mamba_dev(MD_MAMBA_FWD, 0, 70);
    case_legacy_host_pointers();
    case_refusals();
    const char *precs[] = {"f32", "f16", "bf16", "tf32"};
#ifdef MD_TEST_EMU
    const int nprec = getenv("MD_EMU_CLIP_ALL") ? 4 : 1; /* each tower run costs the emulator about a minute */
#else
    const int nprec = 4;
#endif
    for (int i = 0; i < nprec; i++)
        case_clip_device_path(precs[i]);
}

static void test_cpu(void)
{
    BE = CPU;
    run_all();
}

static void test_cuda(void)
{
    BE = CUDA_UNDER_TEST();
    char d[256] = "";
    if (BE->describe(d, sizeof d) == MD_OK)
        fprintf(stderr, "  cuda device: %s\n", d);
    for (int op = MD_OP_NONE + 1; op < MD_OP_COUNT; op++)
        if (!BE->supports((md_op)op))
            fprintf(stderr, "  cuda lacks %s\n", md_op_name((md_op)op));
    run_all();
    /* Every CUDA call above ran on this thread's stream; it must still be healthy. */
    CHECK_EQ_INT(BE->synchronize(), MD_OK);
}

static void test_table(void)
{
    /* Every supported op has its function; names are unique and known. */
    const md_backend_i *bs[2] = {CPU, CUDA_UNDER_TEST()};
    for (int i = 0; i < 2; i++) {
        const md_backend_i *b = bs[i];
        if (!b)
            continue;
        CHECK(b->supports && b->describe && b->last_error && b->alloc && b->free && b->upload && b->download);
        void *const fns[] = {(void *)b->linear, (void *)b->layernorm, (void *)b->activation, (void *)b->attention,
                             (void *)b->add, (void *)b->l2norm, (void *)b->convert, (void *)b->gemm,
                             (void *)b->bias_act, (void *)b->add_layernorm, (void *)b->attention_ex,
                             (void *)b->im2col, (void *)b->embed_tokens, (void *)b->preprocess,
                             (void *)b->conv1d_silu, (void *)b->scan, (void *)b->gate, (void *)b->pool,
                             (void *)b->score, (void *)b->topk};
        for (size_t j = 0; j < sizeof fns / sizeof *fns; j++)
            CHECK(fns[j] != NULL);
    }
    for (int op = 0; op < MD_OP_COUNT; op++)
        CHECK(strcmp(md_op_name((md_op)op), "?") != 0);
    CHECK_STR(md_op_name(MD_OP_SCAN), "selective_scan");
    md_prec p;
    CHECK_EQ_INT(md_prec_parse("bf16", &p), MD_OK);
    CHECK(p == MD_PREC_BF16 && md_prec_input(p) == MD_BT_BF16 && md_prec_op(p) == MD_OP_GEMM_BF16);
    CHECK_EQ_INT(md_prec_parse("fp8", &p), MD_ERR_INVALID);
    const md_backend_i *sel = NULL;
    char err[256] = "";
    CHECK_EQ_INT(md_backend_select("cpu", &sel, err, sizeof err), MD_OK);
    CHECK(sel == CPU);
    if (!md_backend_cuda()) {
        CHECK_EQ_INT(md_backend_select("cuda", &sel, err, sizeof err), MD_ERR_UNAVAILABLE);
        CHECK(strstr(err, "cuda") != NULL);
    }
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    CPU = md_backend_cpu();
    md_backend_cpu_set_threads(2);
    snprintf(g_dir, sizeof g_dir, "/tmp/md-backend-ops-%d", (int)getpid());
    char err[512];
    if (md_clip_write_demo(g_dir, 11, err, sizeof err) != MD_OK) {
        fprintf(stderr, "demo model: %s\n", err);
        return 1;
    }
    RUN(test_table);
    RUN(test_cpu);
    if (CUDA_UNDER_TEST()) {
        RUN(test_cuda);
    } else {
        SKIP(test_cuda, md_backend_cuda_why());
        if (getenv("MD_REQUIRE_CUDA") && strcmp(getenv("MD_REQUIRE_CUDA"), "1") == 0) {
            fprintf(stderr, "not ok test_cuda: MD_REQUIRE_CUDA=1 but no usable CUDA device\n");
            md_t_failed++;
        }
    }
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return md_test_summary("test_backend_ops");
}
