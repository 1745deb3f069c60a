/* test_clip.c - unit tests of the CLIP engine: the backend ops against plain reference loops,
 * the vision and text towers against transformers on tiny random checkpoints
 * (tests/fixtures/clip, made by tests/tools/gen_clip_fixtures.py), the demo checkpoint, the
 * embed-text / embed-image CLI, and failure injection on the model files (each a clear error,
 * never a crash; `make asan` runs this under AddressSanitizer).
 *
 * Tolerances: the reference outputs are computed by transformers in float32 from the stored
 * weights, so every model, F16 and BF16 files included, must match to f32 rounding:
 * max |c - r| / max |r| <= 1e-4 per embedding or token (relative to the vector's largest
 * element). The F16 model is also compared with torch computing in float16 (what a half-precision
 * run gives): <= 2e-2, a statement of how far fp16 arithmetic drifts, not of our accuracy. */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../engine/backend.h"
#include "../../engine/clip.h"
#include "../../engine/safetensors.h"
#include "cJSON.h"
#include "harness.h"
#include "testutil.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

#define FIX "tests/fixtures/clip"
#define TOL_F32 1e-4
#define TOL_F16_COMPUTE 2e-2

int md_cli_main(int argc, char **argv); /* cli/embed.c */

static char g_tmp[PATH_MAX];

/* ------------------------------------------------------------------ helpers */

static uint64_t g_rng = 88172645463325252ULL;
static float frand(void) /* uniform in [-1, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static void fill_rand(float *p, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
}

/* max |a - b| over N values divided by max |b| (the reference's scale); NaN/Inf give +Inf. */
static double rel_err(const float *a, const float *b, size_t n)
{
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        double d = fabs((double)a[i] - b[i]);
        e = d > e ? d : e;
        s = fabs(b[i]) > s ? fabs(b[i]) : s;
    }
    return s > 0 ? e / s : e;
}



static int copy_file(const char *src, const char *dst)
{
    size_t n;
    char *b = tu_read_file(src, &n);
    if (!b)
        return -1;
    tu_write_file(dst, b, n);
    free(b);
    return 0;
}

/* A float tensor of a reference file, converted; NULL if absent. Caller frees. */
static float *ref_tensor(md_safetensors *st, const char *name, size_t *numel)
{
    const md_st_tensor *t = md_safetensors_find(st, name);
    if (!t)
        return NULL;
    float *p = malloc(t->numel * sizeof *p + 1);
    if (p && md_st_to_f32(t, p) != MD_OK) {
        free(p);
        return NULL;
    }
    if (numel)
        *numel = t->numel;
    return p;
}

/* ------------------------------------------------------------------ backend ops */

/* Naive double-precision references. */
static void ref_linear(const float *x, int m, int k, const float *w, const float *b, int n, float *y, int acc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = b ? b[j] : 0;
            for (int q = 0; q < k; q++)
                s += (double)x[(size_t)i * k + q] * w[(size_t)j * k + q];
            y[(size_t)i * n + j] = (float)(acc ? y[(size_t)i * n + j] + s : s);
        }
}


/* Runs every op of BE on seeded random inputs and compares with the references above. */
static int check_backend_ops(const md_backend_i *be)
{
    int bad = 0;
    enum { M = 37, K = 45, N = 29, B = 3, T = 11, H = 4, HD = 8, D = H * HD };
    static float x[M * K], w[N * K], bias[N], y[M * N], r[M * N];
    static float qkv[B * T * 3 * D], ao[B * T * D], ar[B * T * D];
    char msg[128];
    fill_rand(x, sizeof x / sizeof *x, 1);
    fill_rand(w, sizeof w / sizeof *w, 1);
    fill_rand(bias, N, 1);
    for (int acc = 0; acc < 2; acc++)
        for (int withb = 0; withb < 2; withb++) {
            fill_rand(y, M * N, 1);
            memcpy(r, y, sizeof r);
            if (!be->supports(MD_OP_LINEAR)) {
                fprintf(stderr, "  %s linear: skipped (not supported)\n", be->name);
                continue;
            }
            be->linear(x, M, K, w, withb ? bias : NULL, N, y, acc);
            ref_linear(x, M, K, w, withb ? bias : NULL, N, r, acc);
            double e = rel_err(y, r, M * N);
            snprintf(msg, sizeof msg, "linear acc=%d bias=%d", acc, withb);
            fprintf(stderr, "  %s %-22s rel err %.2e (tol 1e-5)\n", be->name, msg, e);
            bad += !(e <= 1e-5);
        }
    /* layernorm, in place and not */
    if (be->supports(MD_OP_LAYERNORM)) {
        float g[K], bb[K];
        fill_rand(g, K, 1);
        fill_rand(bb, K, 1);
        for (int i = 0; i < M * K; i++)
            x[i] = x[i] * 3 + 5; /* an offset mean, as residual streams have */
        float *yy = malloc(sizeof x), *rr = malloc(sizeof x);
        for (int i = 0; i < M; i++) {
            double s = 0, ss = 0;
            for (int j = 0; j < K; j++)
                s += x[i * K + j];
            double mean = s / K;
            for (int j = 0; j < K; j++)
                ss += (x[i * K + j] - mean) * (x[i * K + j] - mean);
            for (int j = 0; j < K; j++)
                rr[i * K + j] = (float)((x[i * K + j] - mean) / sqrt(ss / K + 1e-5) * g[j] + bb[j]);
        }
        be->layernorm(x, M, K, g, bb, 1e-5f, yy);
        double e1 = rel_err(yy, rr, M * K);
        memcpy(yy, x, sizeof x);
        be->layernorm(yy, M, K, g, bb, 1e-5f, yy);
        double e2 = rel_err(yy, rr, M * K);
        fprintf(stderr, "  %s %-22s rel err %.2e / in place %.2e (tol 1e-5)\n", be->name, "layernorm", e1, e2);
        bad += !(e1 <= 1e-5 && e2 <= 1e-5);
        free(yy);
        free(rr);
    } else {
        fprintf(stderr, "  %s layernorm: skipped (not supported)\n", be->name);
    }
    /* activations */
    md_op acts[] = {MD_OP_GELU, MD_OP_GELU_TANH, MD_OP_QUICK_GELU};
    for (int a = 0; a < 3; a++) {
        if (!be->supports(acts[a])) {
            fprintf(stderr, "  %s %s: skipped (not supported)\n", be->name, md_op_name(acts[a]));
            continue;
        }
        float v[256], ref[256];
        for (int i = 0; i < 256; i++) {
            v[i] = (i - 128) / 16.0f;
            double z = v[i];
            ref[i] = (float)(acts[a] == MD_OP_GELU        ? 0.5 * z * (1 + erf(z / sqrt(2.0)))
                             : acts[a] == MD_OP_GELU_TANH ? 0.5 * z * (1 + tanh(sqrt(2 / M_PI) * (z + 0.044715 * z * z * z)))
                                                          : z / (1 + exp(-1.702 * z)));
        }
        be->activation(acts[a], v, 256);
        double e = rel_err(v, ref, 256);
        fprintf(stderr, "  %s %-22s rel err %.2e (tol 1e-6)\n", be->name, md_op_name(acts[a]), e);
        bad += !(e <= 1e-6);
    }
    /* attention, bidirectional and causal */
    for (int causal = 0; causal < 2 && be->supports(MD_OP_ATTENTION); causal++) {
        fill_rand(qkv, sizeof qkv / sizeof *qkv, 2);
        be->attention(qkv, B, T, H, HD, causal, ao);
        tu_ref_attention(qkv, B, T, H, HD, causal, ar);
        double e = rel_err(ao, ar, B * T * D);
        fprintf(stderr, "  %s attention causal=%d     rel err %.2e (tol 1e-5)\n", be->name, causal, e);
        bad += !(e <= 1e-5);
    }
    /* add, l2norm */
    if (be->supports(MD_OP_ADD) && be->supports(MD_OP_L2NORM)) {
        float p[2 * N], q[2 * N], s[2 * N];
        fill_rand(p, 2 * N, 1);
        fill_rand(q, 2 * N, 1);
        for (int i = 0; i < 2 * N; i++)
            s[i] = p[i] + q[i];
        be->add(p, q, 2 * N);
        bad += !(rel_err(p, s, 2 * N) == 0);
        be->l2norm(p, 2, N);
        for (int i = 0; i < 2; i++) {
            double n2 = 0;
            for (int j = 0; j < N; j++)
                n2 += (double)p[i * N + j] * p[i * N + j];
            bad += !(fabs(n2 - 1) < 1e-6);
        }
        float z[4] = {0};
        be->l2norm(z, 1, 4); /* zeros stay zeros, no NaN */
        bad += !(z[0] == 0 && z[3] == 0);
    }
    return bad;
}

static void test_backend_ops(void)
{
    CHECK_EQ_INT(check_backend_ops(md_backend_cpu()), 0);
    const md_backend_i *cuda = md_backend_cuda();
    int any = 0;
    for (int op = MD_OP_NONE + 1; cuda && op < MD_OP_COUNT; op++)
        any |= cuda->supports((md_op)op);
    /* The CPU half ran above (and fails the case when wrong); without the CUDA half the case
     * counts as skipped, not passed. */
    if (!cuda)
        md_test_skip("CPU checked; CUDA half not run: no CUDA device or not built with CUDA");
    else if (!any)
        md_test_skip("CPU checked; CUDA half not run: the CUDA backend implements no op yet");
    else
        CHECK_EQ_INT(check_backend_ops(cuda), 0);
    CHECK_STR(md_op_name(MD_OP_ATTENTION), "attention");
}

/* ------------------------------------------------------------------ transformers fixtures */

typedef struct texts {
    cJSON *root;
    int n;
    const char *text[64];
    int ids[64][MD_CLIP_MAX_TOKENS];
    int n_ids[64];
} texts;

static int load_texts(texts *t)
{
    char *s = tu_read_file(FIX "/texts.json", NULL);
    memset(t, 0, sizeof *t);
    t->root = s ? cJSON_Parse(s) : NULL;
    free(s);
    const cJSON *arr = cJSON_GetObjectItem(t->root, "texts"), *e;
    cJSON_ArrayForEach(e, arr)
    {
        if (t->n >= 64)
            break;
        const cJSON *ids = cJSON_GetObjectItem(e, "ids"), *id;
        t->text[t->n] = cJSON_GetStringValue(cJSON_GetObjectItem(e, "text"));
        cJSON_ArrayForEach(id, ids) if (t->n_ids[t->n] < MD_CLIP_MAX_TOKENS) t->ids[t->n][t->n_ids[t->n]++] =
            (int)id->valuedouble;
        t->n++;
    }
    return t->n > 0 && t->text[0] ? 0 : -1;
}

static void check_model(const char *name, const texts *tx)
{
    char dir[PATH_MAX], refp[PATH_MAX], err[512] = "";
    snprintf(dir, sizeof dir, FIX "/%s", name);
    snprintf(refp, sizeof refp, FIX "/%s.ref.safetensors", name);
    md_clip *m = NULL;
    md_safetensors *ref = NULL;
    float *px = NULL, *ie = NULL, *vt = NULL, *te = NULL, *out = NULL, *tok = NULL, *one = NULL;
    md_status st = md_clip_load(dir, md_backend_cpu(), &m, err, sizeof err);
    CHECK_EQ_INT(st, MD_OK);
    if (st != MD_OK) {
        fprintf(stderr, "  %s: %s\n", name, err);
        return;
    }
    fprintf(stderr, "  %s: %s\n", name, md_clip_describe(m));
    CHECK_EQ_INT(md_clip_is_demo(m), 0);
    CHECK_EQ_INT(strlen(md_clip_weights_sha256(m)), 64);
    CHECK_EQ_INT(md_safetensors_open(refp, &ref, err, sizeof err), MD_OK);
    if (!ref)
        goto out;
    size_t npx, nie, nvt, nte;
    px = ref_tensor(ref, "pixels", &npx);
    ie = ref_tensor(ref, "image_embeds", &nie);
    vt = ref_tensor(ref, "vision_tokens", &nvt);
    te = ref_tensor(ref, "text_embeds", &nte);
    CHECK(px && ie && vt && te);
    if (!px || !ie || !vt || !te)
        goto out;
    const int E = md_clip_dim(m), S = md_clip_image_size(m), T = 1 + md_clip_n_patches(m);
    const int n = (int)(npx / (3 * (size_t)S * S));
    CHECK_EQ_INT(nie, (size_t)n * E);
    CHECK_EQ_INT(nvt, (size_t)n * T * E);
    CHECK_EQ_INT(nte, (size_t)tx->n * E);
    if (nie != (size_t)n * E || nvt != (size_t)n * T * E || nte != (size_t)tx->n * E)
        goto out;

    /* Images, with and without the tokens, batched and one at a time. */
    out = malloc(nie * sizeof *out);
    tok = malloc(nvt * sizeof *tok);
    one = malloc((size_t)E * sizeof *one);
    CHECK_EQ_INT(md_clip_embed_images(m, px, n, out, tok, err, sizeof err), MD_OK);
    double e_img = rel_err(out, ie, nie), e_tok = 0;
    for (int i = 0; i < n * T; i++) {
        double e = rel_err(tok + (size_t)i * E, vt + (size_t)i * E, E);
        e_tok = e > e_tok ? e : e_tok;
    }
    double e_single = 0;
    for (int i = 0; i < n; i++) {
        CHECK_EQ_INT(md_clip_embed_images(m, px + (size_t)i * 3 * S * S, 1, one, NULL, err, sizeof err), MD_OK);
        double e = rel_err(one, ie + (size_t)i * E, E);
        e_single = e > e_single ? e : e_single;
    }
    /* In chunks of two (3 images: a full chunk and a partial one). */
    md_clip_set_max_batch(m, 2);
    float *out2 = malloc(nie * sizeof *out2), *tok2 = malloc(nvt * sizeof *tok2);
    CHECK_EQ_INT(md_clip_embed_images(m, px, n, out2, tok2, err, sizeof err), MD_OK);
    double e_chunk = rel_err(out2, ie, nie), e_chunk_tok = rel_err(tok2, tok, nvt);
    md_clip_set_max_batch(m, 0);
    free(out2);
    free(tok2);
    fprintf(stderr, "  %s: image_embeds rel err %.2e (one at a time %.2e, in chunks of 2 %.2e), vision tokens %.2e (tol %.0e)\n",
            name, e_img, e_single, e_chunk, e_tok, TOL_F32);
    CHECK(e_img <= TOL_F32 && e_single <= TOL_F32 && e_tok <= TOL_F32 && e_chunk <= TOL_F32 && e_chunk_tok <= 1e-6);

    /* Text: from the reference ids, and from the strings through the tokenizer. */
    double e_txt = 0, e_txt2 = 0;
    int id_mismatch = 0;
    for (int i = 0; i < tx->n; i++) {
        CHECK_EQ_INT(md_clip_embed_tokens(m, tx->ids[i], tx->n_ids[i], one, err, sizeof err), MD_OK);
        double e = rel_err(one, te + (size_t)i * E, E);
        e_txt = e > e_txt ? e : e_txt;
        int ids[MD_CLIP_MAX_TOKENS], nid = -1;
        CHECK_EQ_INT(md_clip_embed_text(m, tx->text[i], one, ids, &nid, err, sizeof err), MD_OK);
        if (nid != tx->n_ids[i] || memcmp(ids, tx->ids[i], (size_t)nid * sizeof *ids) != 0) {
            id_mismatch++;
            fprintf(stderr, "  ids differ for \"%.40s\" (%d vs %d ids)\n", tx->text[i], nid, tx->n_ids[i]);
        }
        e = rel_err(one, te + (size_t)i * E, E);
        e_txt2 = e > e_txt2 ? e : e_txt2;
    }
    fprintf(stderr, "  %s: text_embeds rel err %.2e from ids, %.2e from strings (tol %.0e); %d/%d id sequences exact\n",
            name, e_txt, e_txt2, TOL_F32, tx->n - id_mismatch, tx->n);
    CHECK(e_txt <= TOL_F32 && e_txt2 <= TOL_F32);
    CHECK_EQ_INT(id_mismatch, 0);

    /* The F16 model against torch's own float16 arithmetic (a looser, stated tolerance). */
    float *ie16 = ref_tensor(ref, "image_embeds_f16compute", NULL), *te16 = ref_tensor(ref, "text_embeds_f16compute", NULL);
    if (ie16 && te16) {
        double e1 = rel_err(out, ie16, nie), e2 = 0;
        for (int i = 0; i < tx->n; i++) {
            md_clip_embed_tokens(m, tx->ids[i], tx->n_ids[i], one, err, sizeof err);
            double e = rel_err(one, te16 + (size_t)i * E, E);
            e2 = e > e2 ? e : e2;
        }
        fprintf(stderr, "  %s: vs torch float16 compute: image %.2e, text %.2e (tol %.0e)\n", name, e1, e2,
                TOL_F16_COMPUTE);
        CHECK(e1 <= TOL_F16_COMPUTE && e2 <= TOL_F16_COMPUTE);
    }
    free(ie16);
    free(te16);

    /* Bad arguments are errors, not crashes. */
    int bad_ids[2] = {49406, 49408};
    CHECK_EQ_INT(md_clip_embed_tokens(m, bad_ids, 2, one, err, sizeof err), MD_ERR_INVALID);
    CHECK_EQ_INT(md_clip_embed_tokens(m, bad_ids, 0, one, err, sizeof err), MD_ERR_INVALID);
    int many[200] = {0};
    CHECK_EQ_INT(md_clip_embed_tokens(m, many, 200, one, err, sizeof err), MD_ERR_INVALID);
    CHECK_EQ_INT(md_clip_embed_images(m, px, 0, out, NULL, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_embed_images(m, NULL, 1, out, NULL, err, sizeof err), MD_ERR_INVALID);
out:
    free(px);
    free(ie);
    free(vt);
    free(te);
    free(out);
    free(tok);
    free(one);
    md_safetensors_free(ref);
    md_clip_free(m);
}

static void test_models_vs_transformers(void)
{
    texts tx;
    CHECK_EQ_INT(load_texts(&tx), 0);
    if (tx.n == 0)
        return;
    check_model("tiny-f32-quickgelu-oldeos", &tx);
    check_model("tiny-f16-gelu-neweos", &tx);
    check_model("tiny-bf16-mixed", &tx);
    cJSON_Delete(tx.root);
}

/* The two pooling rules of transformers differ when the end token is not the largest id or not
 * the first end token: an old-style config (eos_token_id 2) pools at the largest id. */
static void test_pooling_rules(void)
{
    char err[512];
    md_clip *m = NULL;
    CHECK_EQ_INT(md_clip_load(FIX "/tiny-f32-quickgelu-oldeos", NULL, &m, err, sizeof err), MD_OK);
    if (!m)
        return;
    int E = md_clip_dim(m);
    float a[64], b[64];
    /* argmax of ids: position 2 (id 49000) -> same as the prefix ending there. */
    int ids[4] = {49406, 320, 49000, 1125}, pre[3] = {49406, 320, 49000};
    CHECK_EQ_INT(md_clip_embed_tokens(m, ids, 4, a, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_embed_tokens(m, pre, 3, b, err, sizeof err), MD_OK);
    CHECK(rel_err(a, b, E) < 1e-6); /* causal: later tokens do not change earlier rows */
    md_clip_free(m);
    m = NULL;
    CHECK_EQ_INT(md_clip_load(FIX "/tiny-f16-gelu-neweos", NULL, &m, err, sizeof err), MD_OK);
    if (!m)
        return;
    E = md_clip_dim(m);
    /* first eos (49407) at position 1, though 49407 appears again later */
    int ids2[5] = {49406, 49407, 320, 49407, 1125}, pre2[2] = {49406, 49407};
    CHECK_EQ_INT(md_clip_embed_tokens(m, ids2, 5, a, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_embed_tokens(m, pre2, 2, b, err, sizeof err), MD_OK);
    CHECK(rel_err(a, b, E) < 1e-6);
    /* no eos at all: position 0 */
    int ids3[3] = {49406, 320, 1125}, pre3[1] = {49406};
    CHECK_EQ_INT(md_clip_embed_tokens(m, ids3, 3, a, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_embed_tokens(m, pre3, 1, b, err, sizeof err), MD_OK);
    CHECK(rel_err(a, b, E) < 1e-6);
    md_clip_free(m);
}

/* Several threads share one model (the daemon's workers and HTTP threads do). */
typedef struct conc_job {
    md_clip *m;
    const float *px, *want_img, *want_txt;
    int n, bad;
} conc_job;

static void *conc_worker(void *arg)
{
    conc_job *j = arg;
    const int E = md_clip_dim(j->m);
    float img[8 * 64], txt[64];
    char err[256];
    for (int it = 0; it < 8; it++) {
        if (md_clip_embed_images(j->m, j->px, j->n, img, NULL, err, sizeof err) != MD_OK ||
            rel_err(img, j->want_img, (size_t)j->n * E) > 1e-5)
            j->bad++;
        if (md_clip_embed_text(j->m, "a dog jumps into the pool", txt, NULL, NULL, err, sizeof err) != MD_OK ||
            rel_err(txt, j->want_txt, E) > 1e-5)
            j->bad++;
    }
    return NULL;
}

static void test_concurrent_calls(void)
{
    char err[256];
    md_clip *m = NULL;
    md_safetensors *ref = NULL;
    CHECK_EQ_INT(md_clip_load(FIX "/tiny-f16-gelu-neweos", NULL, &m, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_safetensors_open(FIX "/tiny-f16-gelu-neweos.ref.safetensors", &ref, err, sizeof err), MD_OK);
    if (!m || !ref) {
        md_clip_free(m);
        md_safetensors_free(ref);
        return;
    }
    float *px = ref_tensor(ref, "pixels", NULL), img[3 * 64], txt[64];
    CHECK_EQ_INT(md_clip_embed_images(m, px, 3, img, NULL, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_embed_text(m, "a dog jumps into the pool", txt, NULL, NULL, err, sizeof err), MD_OK);
    enum { NT = 4 };
    pthread_t th[NT];
    conc_job jobs[NT];
    for (int i = 0; i < NT; i++) {
        jobs[i] = (conc_job){m, px, img, txt, 3, 0};
        pthread_create(&th[i], NULL, conc_worker, &jobs[i]);
    }
    int bad = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        bad += jobs[i].bad;
    }
    CHECK_EQ_INT(bad, 0);
    free(px);
    md_safetensors_free(ref);
    md_clip_free(m);
}

/* ------------------------------------------------------------------ demo model */

static void test_demo_round_trip(void)
{
    char d1[PATH_MAX + 16], d2[PATH_MAX + 16], d3[PATH_MAX + 16], err[512] = "";
    snprintf(d1, sizeof d1, "%s/demo1", g_tmp);
    snprintf(d2, sizeof d2, "%s/demo2", g_tmp);
    snprintf(d3, sizeof d3, "%s/demo3", g_tmp);
    CHECK_EQ_INT(md_clip_write_demo(d1, 42, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_write_demo(d2, 42, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_write_demo(d3, 43, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_write_demo(d1, 42, err, sizeof err), MD_OK); /* rewriting is fine */
    md_clip *a = NULL, *b = NULL, *c = NULL;
    CHECK_EQ_INT(md_clip_load(d1, md_backend_cpu(), &a, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_load(d2, md_backend_cpu(), &b, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_load(d3, md_backend_cpu(), &c, err, sizeof err), MD_OK);
    if (!a || !b || !c) {
        fprintf(stderr, "  %s\n", err);
        goto out;
    }
    fprintf(stderr, "  demo: %s\n", md_clip_describe(a));
    CHECK_EQ_INT(md_clip_is_demo(a), 1);
    CHECK_EQ_INT(md_clip_dim(a), 512);
    CHECK_EQ_INT(md_clip_image_size(a), 224);
    CHECK_EQ_INT(md_clip_n_patches(a), 49);
    CHECK(strstr(md_clip_describe(a), "DEMO") != NULL);
    CHECK_STR(md_clip_weights_sha256(a), md_clip_weights_sha256(b)); /* same seed, same bytes */
    CHECK(strcmp(md_clip_weights_sha256(a), md_clip_weights_sha256(c)) != 0);

    float ea[512], ec[512], ef[512];
    int ids[MD_CLIP_MAX_TOKENS], n = 0;
    CHECK_EQ_INT(md_clip_embed_text(a, "ab", ea, ids, &n, err, sizeof err), MD_OK);
    /* byte-level vocabulary, no merges: <|startoftext|> 'a' 'b</w>' <|endoftext|> */
    CHECK_EQ_INT(n, 4);
    CHECK(n == 4 && ids[0] == 512 && ids[1] == 'a' - '!' && ids[2] == 256 + 'b' - '!' && ids[3] == 513);
    CHECK_EQ_INT(md_clip_embed_text(c, "ab", ec, NULL, NULL, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_embed_text(a, "a dog jumps into a pool", ef, NULL, NULL, err, sizeof err), MD_OK);
    double n2 = 0, dot_ac = 0, dot_af = 0;
    for (int i = 0; i < 512; i++) {
        n2 += (double)ea[i] * ea[i];
        dot_ac += (double)ea[i] * ec[i];
        dot_af += (double)ea[i] * ef[i];
    }
    CHECK(fabs(n2 - 1) < 1e-5);
    CHECK(dot_ac < 0.99 && dot_af < 0.99); /* seeds and texts change the output */

    /* A long text is truncated to 77 tokens, ending with <|endoftext|>. */
    char longtext[600];
    memset(longtext, 'x', sizeof longtext - 1);
    longtext[sizeof longtext - 1] = 0;
    CHECK_EQ_INT(md_clip_embed_text(a, longtext, ea, ids, &n, err, sizeof err), MD_OK);
    CHECK(n == 77 && ids[76] == 513);

    /* Whatever backend "auto" picks, the model runs on one that implements every op it uses
     * (the CUDA table has none yet: md_clip_load falls back to the CPU). */
    const md_backend_i *be = NULL;
    CHECK_EQ_INT(md_backend_select("auto", &be, err, sizeof err), MD_OK);
    md_clip *ab = NULL;
    CHECK_EQ_INT(md_clip_load(d1, be, &ab, err, sizeof err), MD_OK);
    if (ab) {
        const md_backend_i *used = md_clip_backend(ab);
        fprintf(stderr, "  demo with device auto: selected %s, model runs on %s\n", be->name, used->name);
        for (int op = MD_OP_NONE + 1; op < MD_OP_COUNT; op++)
            CHECK(used->supports((md_op)op));
        float eb[512];
        CHECK_EQ_INT(md_clip_embed_text(ab, "ab", eb, NULL, NULL, err, sizeof err), MD_OK);
        CHECK(rel_err(eb, ec, 512) > 0); /* d1 is seed 42, ec came from seed 43 */
    }
    md_clip_free(ab);

    /* Images: two different inputs, batched, normalised, tokens' CLS row = image embedding. */
    size_t px = 3 * 224 * 224;
    float *pix = malloc(2 * px * sizeof *pix), *emb = malloc(2 * 512 * sizeof *emb),
          *tok = malloc(2 * 50 * 512 * sizeof *tok);
    fill_rand(pix, 2 * px, 2);
    CHECK_EQ_INT(md_clip_embed_images(a, pix, 2, emb, tok, err, sizeof err), MD_OK);
    double d01 = 0, n0 = 0, nt = 0;
    for (int i = 0; i < 512; i++) {
        d01 += (double)emb[i] * emb[512 + i];
        n0 += (double)emb[i] * emb[i];
        nt += (double)tok[i] * tok[i];
    }
    CHECK(fabs(n0 - 1) < 1e-5 && d01 < 0.999);
    double cosv = 0;
    for (int i = 0; i < 512; i++)
        cosv += tok[i] / sqrt(nt) * emb[i];
    CHECK(fabs(cosv - 1) < 1e-5);
    free(pix);
    free(emb);
    free(tok);
out:
    md_clip_free(a);
    md_clip_free(b);
    md_clip_free(c);
    md_clip_free(NULL);
}

/* ------------------------------------------------------------------ failure injection */

/* Rewrites SRC's header through MUTATE (on the parsed JSON) into DST, data bytes unchanged. */
static int rewrite_header(const char *src, const char *dst, void (*mutate)(cJSON *))
{
    size_t n;
    unsigned char *b = (unsigned char *)tu_read_file(src, &n);
    if (!b || n < 8)
        return -1;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | b[i];
    cJSON *h = cJSON_ParseWithLength((const char *)b + 8, hl);
    mutate(h);
    char *s = cJSON_PrintUnformatted(h);
    size_t sl = strlen(s), pad = (sl + 7) / 8 * 8;
    FILE *f = fopen(dst, "wb");
    for (int i = 0; i < 8; i++)
        fputc((int)((pad >> (8 * i)) & 0xff), f);
    fputs(s, f);
    for (size_t i = sl; i < pad; i++)
        fputc(' ', f);
    fwrite(b + 8 + hl, 1, n - 8 - hl, f);
    fclose(f);
    free(s);
    cJSON_Delete(h);
    free(b);
    return 0;
}

#define T_FC1 "vision_model.encoder.layers.1.mlp.fc1.weight"
#define T_FC2 "vision_model.encoder.layers.1.mlp.fc2.weight"

static void mut_drop(cJSON *h) { cJSON_DeleteItemFromObject(h, "text_projection.weight"); }
static void mut_dtype_i32(cJSON *h)
{
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(h, T_FC1), "dtype", cJSON_CreateString("I32"));
}
static void mut_dtype_bad(cJSON *h)
{
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(h, T_FC1), "dtype", cJSON_CreateString("Q4_K"));
}
static void mut_overlap(cJSON *h)
{
    cJSON *a = cJSON_GetObjectItem(h, T_FC1), *b = cJSON_GetObjectItem(h, T_FC2);
    cJSON_ReplaceItemInObject(b, "data_offsets", cJSON_Duplicate(cJSON_GetObjectItem(a, "data_offsets"), 1));
}
static void mut_outside(cJSON *h)
{
    cJSON *o = cJSON_GetObjectItem(cJSON_GetObjectItem(h, T_FC1), "data_offsets");
    double b = cJSON_GetArrayItem(o, 0)->valuedouble + 1e9, e = cJSON_GetArrayItem(o, 1)->valuedouble + 1e9;
    cJSON_ReplaceItemInArray(o, 0, cJSON_CreateNumber(b));
    cJSON_ReplaceItemInArray(o, 1, cJSON_CreateNumber(e));
}
static void mut_shape_lie(cJSON *h) /* shape and byte count disagree */
{
    cJSON *sh = cJSON_GetObjectItem(cJSON_GetObjectItem(h, T_FC1), "shape");
    cJSON_ReplaceItemInArray(sh, 0, cJSON_CreateNumber(cJSON_GetArrayItem(sh, 0)->valuedouble * 2));
}
static void mut_shape_swap(cJSON *h) /* consistent file, wrong shape for the config */
{
    cJSON *sh = cJSON_GetObjectItem(cJSON_GetObjectItem(h, T_FC1), "shape");
    double a = cJSON_GetArrayItem(sh, 0)->valuedouble, b = cJSON_GetArrayItem(sh, 1)->valuedouble;
    cJSON_ReplaceItemInArray(sh, 0, cJSON_CreateNumber(b));
    cJSON_ReplaceItemInArray(sh, 1, cJSON_CreateNumber(a));
}

/* Copies the demo checkpoint BASE into a fresh directory NAME under g_tmp. */
static void fresh_copy(const char *base, const char *name, char *out, size_t outlen)
{
    const char *files[] = {"config.json", "model.safetensors", "vocab.json", "merges.txt"};
    snprintf(out, outlen, "%s/%s", g_tmp, name);
    mkdir(out, 0755);
    for (int i = 0; i < 4; i++) {
        char s[PATH_MAX + 64], d[PATH_MAX + 64];
        snprintf(s, sizeof s, "%s/%s", base, files[i]);
        snprintf(d, sizeof d, "%s/%s", out, files[i]);
        copy_file(s, d);
    }
}

/* Loading DIR fails with WANT and a message containing NEEDLE. */
static int expect_load_error(const char *dir, md_status want, const char *needle, const char *what)
{
    char err[512] = "";
    md_clip *m = NULL;
    md_status st = md_clip_load(dir, md_backend_cpu(), &m, err, sizeof err);
    int ok = st == want && m == NULL && strstr(err, needle) != NULL;
    fprintf(stderr, "  %-34s -> %s: %s\n", what, md_status_str(st), err);
    if (!ok)
        fprintf(stderr, "  FAIL: wanted %s and '%s'\n", md_status_str(want), needle);
    md_clip_free(m);
    return ok;
}

static void set_config(const char *dir, const char *path_in_json, const char *value_json)
{
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *s = tu_read_file(p, NULL);
    cJSON *c = cJSON_Parse(s), *obj = c;
    free(s);
    char key[128];
    snprintf(key, sizeof key, "%s", path_in_json);
    char *dot = strchr(key, '.');
    if (dot) {
        *dot = 0;
        obj = cJSON_GetObjectItem(c, key);
        memmove(key, dot + 1, strlen(dot + 1) + 1);
    }
    cJSON_DeleteItemFromObject(obj, key);
    cJSON_AddItemToObject(obj, key, cJSON_Parse(value_json));
    s = cJSON_Print(c);
    tu_write_file(p, s, strlen(s));
    free(s);
    cJSON_Delete(c);
}

static void test_corrupt_models(void)
{
    char base[PATH_MAX + 16], d[PATH_MAX + 64], p[PATH_MAX + 96], src[PATH_MAX + 96], err[256];
    snprintf(base, sizeof base, "%s/base", g_tmp);
    CHECK_EQ_INT(md_clip_write_demo(base, 7, err, sizeof err), MD_OK);
    snprintf(src, sizeof src, "%s/model.safetensors", base);

    CHECK(expect_load_error("/nonexistent/momentd-model", MD_ERR_NOT_FOUND, "not a model directory", "missing directory"));
    fresh_copy(base, "noconfig", d, sizeof d);
    snprintf(p, sizeof p, "%s/config.json", d);
    unlink(p);
    CHECK(expect_load_error(d, MD_ERR_NOT_FOUND, "config.json", "missing config.json"));
    fresh_copy(base, "badjson", d, sizeof d);
    snprintf(p, sizeof p, "%s/config.json", d);
    tu_write_file(p, "{\"text_config\": {\"hidden_size\": 64,,}", 37);
    CHECK(expect_load_error(d, MD_ERR_INVALID, "not a JSON object", "malformed config.json"));
    fresh_copy(base, "heads", d, sizeof d);
    set_config(d, "vision_config.num_attention_heads", "5");
    CHECK(expect_load_error(d, MD_ERR_INVALID, "not a multiple", "heads do not divide width"));
    fresh_copy(base, "act", d, sizeof d);
    set_config(d, "text_config.hidden_act", "\"relu\"");
    CHECK(expect_load_error(d, MD_ERR_UNSUPPORTED, "relu", "unsupported hidden_act"));
    fresh_copy(base, "neg", d, sizeof d);
    set_config(d, "text_config.num_hidden_layers", "-1");
    CHECK(expect_load_error(d, MD_ERR_INVALID, "out of range", "negative layer count"));
    fresh_copy(base, "eps", d, sizeof d);
    set_config(d, "vision_config.layer_norm_eps", "1e-76"); /* > 0, but 0 as a float (fuzz_clip_config) */
    CHECK(expect_load_error(d, MD_ERR_INVALID, "layer_norm_eps", "layer_norm_eps 0 as a float"));
    fresh_copy(base, "str", d, sizeof d);
    set_config(d, "projection_dim", "\"512\"");
    CHECK(expect_load_error(d, MD_ERR_INVALID, "projection_dim", "projection_dim a string"));
    fresh_copy(base, "type", d, sizeof d);
    set_config(d, "model_type", "\"siglip\"");
    CHECK(expect_load_error(d, MD_ERR_UNSUPPORTED, "siglip", "other model_type"));
    fresh_copy(base, "imgsize", d, sizeof d);
    set_config(d, "vision_config.image_size", "256");
    CHECK(expect_load_error(d, MD_ERR_INVALID, "position_embedding", "image_size vs position table"));
    fresh_copy(base, "width", d, sizeof d);
    set_config(d, "text_config.hidden_size", "128");
    CHECK(expect_load_error(d, MD_ERR_INVALID, "shape", "config width vs tensors"));
    fresh_copy(base, "layers", d, sizeof d);
    set_config(d, "vision_config.num_hidden_layers", "3");
    CHECK(expect_load_error(d, MD_ERR_INVALID, "layers.2", "more layers than tensors"));

    fresh_copy(base, "nomodel", d, sizeof d);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    unlink(p);
    CHECK(expect_load_error(d, MD_ERR_NOT_FOUND, "no model.safetensors", "missing model.safetensors"));
    snprintf(p, sizeof p, "%s/pytorch_model.bin", d);
    tu_write_file(p, "PK", 2);
    CHECK(expect_load_error(d, MD_ERR_NOT_FOUND, "pytorch_model.bin", "only pytorch_model.bin"));
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    tu_write_file(p, "{}", 2);
    CHECK(expect_load_error(d, MD_ERR_UNSUPPORTED, "sharded", "sharded checkpoint"));

    /* Truncations: in the data, inside the header, inside the length field. */
    struct stat sb;
    stat(src, &sb);
    long long cuts[] = {sb.st_size - 1, sb.st_size / 2, 100, 5, 0};
    for (int i = 0; i < 5; i++) {
        char name[32], what[64];
        snprintf(name, sizeof name, "cut%d", i);
        fresh_copy(base, name, d, sizeof d);
        snprintf(p, sizeof p, "%s/model.safetensors", d);
        CHECK_EQ_INT(truncate(p, cuts[i]), 0);
        snprintf(what, sizeof what, "model.safetensors cut to %lld bytes", cuts[i]);
        CHECK(expect_load_error(d, MD_ERR_INVALID, "model.safetensors", what));
    }
    /* The header length field lies (beyond the file). */
    fresh_copy(base, "hdrlen", d, sizeof d);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    int fd = open(p, O_WRONLY);
    unsigned char big[8] = {0, 0, 0, 0, 1, 0, 0, 0};
    CHECK_EQ_INT(pwrite(fd, big, 8, 0), 8);
    close(fd);
    CHECK(expect_load_error(d, MD_ERR_INVALID, "header length", "header length beyond the file"));

    struct {
        void (*fn)(cJSON *);
        md_status want;
        const char *needle, *what;
    } muts[] = {
        {mut_drop, MD_ERR_INVALID, "'text_projection.weight' is missing", "missing tensor"},
        {mut_dtype_i32, MD_ERR_UNSUPPORTED, "dtype I32", "integer dtype for a weight"},
        {mut_dtype_bad, MD_ERR_INVALID, "unknown dtype", "unknown dtype"},
        {mut_overlap, MD_ERR_INVALID, "overlap", "overlapping offsets"},
        {mut_outside, MD_ERR_INVALID, "run past the data", "offsets outside the data"},
        {mut_shape_lie, MD_ERR_INVALID, "needs", "shape vs byte count"},
        {mut_shape_swap, MD_ERR_INVALID, "config.json implies", "shape vs config"},
    };
    for (size_t i = 0; i < sizeof muts / sizeof *muts; i++) {
        char name[32];
        snprintf(name, sizeof name, "mut%zu", i);
        fresh_copy(base, name, d, sizeof d);
        snprintf(p, sizeof p, "%s/model.safetensors", d);
        CHECK_EQ_INT(rewrite_header(src, p, muts[i].fn), 0);
        CHECK(expect_load_error(d, muts[i].want, muts[i].needle, muts[i].what));
    }

    /* Tokenizer files. */
    fresh_copy(base, "novocab", d, sizeof d);
    snprintf(p, sizeof p, "%s/vocab.json", d);
    unlink(p);
    CHECK(expect_load_error(d, MD_ERR_NOT_FOUND, "vocab.json", "missing vocab.json"));
    fresh_copy(base, "badvocab", d, sizeof d);
    snprintf(p, sizeof p, "%s/vocab.json", d);
    tu_write_file(p, "[1,2", 4);
    CHECK(expect_load_error(d, MD_ERR_INVALID, "vocab.json", "malformed vocab.json"));
    fresh_copy(base, "bigvocab", d, sizeof d);
    set_config(d, "text_config.vocab_size", "100");
    CHECK(expect_load_error(d, MD_ERR_INVALID, "token_embedding", "vocab_size vs tensors"));

    /* The pristine copy still loads: the failures above came from the injected faults. */
    fresh_copy(base, "pristine", d, sizeof d);
    md_clip *m = NULL;
    CHECK_EQ_INT(md_clip_load(d, NULL, &m, err, sizeof err), MD_OK);
    md_clip_free(m);
}

/* Overwrites elements IDX[0..N) of tensor NAME in DIR/model.safetensors with the F32 bit pattern
 * BITS (the demo model is F32); 0 on success. */
static int poke_f32(const char *dir, const char *name, const uint64_t *idx, int n, uint32_t bits)
{
    char p[PATH_MAX + 32], err[256];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    md_safetensors *st = NULL;
    if (md_safetensors_open(p, &st, err, sizeof err) != MD_OK) {
        fprintf(stderr, "  poke: %s\n", err);
        return -1;
    }
    const md_st_tensor *t = md_safetensors_find(st, name);
    int ok = t && t->dtype == MD_DT_F32;
    uint64_t off = ok ? t->offset : 0, numel = ok ? t->numel : 0;
    md_safetensors_free(st);
    int fd = ok ? open(p, O_RDWR) : -1;
    unsigned char le[8];
    ok = fd >= 0 && pread(fd, le, 8, 0) == 8;
    uint64_t data_at = 8; /* the data area follows the 8-byte length and the header */
    for (int i = 0; i < 8; i++)
        data_at += (uint64_t)le[i] << (8 * i);
    for (int i = 0; ok && i < n; i++)
        ok = idx[i] < numel && pwrite(fd, &bits, 4, (off_t)(data_at + off + 4 * idx[i])) == 4;
    if (fd >= 0)
        close(fd);
    return ok ? 0 : -1;
}

/* NaN or Inf weights are refused at load, naming the tensor and how many values are bad: before,
 * such a checkpoint loaded and every embedding came out NaN (indexing "done", nothing found). */
static void test_nonfinite_weights(void)
{
    char base[PATH_MAX + 16], d[PATH_MAX + 64], err[256];
    snprintf(base, sizeof base, "%s/nf-base", g_tmp);
    CHECK_EQ_INT(md_clip_write_demo(base, 11, err, sizeof err), MD_OK);

    static const uint64_t three[] = {0, 17, 40};
    fresh_copy(base, "nf-nan", d, sizeof d);
    CHECK_EQ_INT(poke_f32(d, "vision_model.embeddings.patch_embedding.weight", three, 3, 0x7fc00000u), 0);
    CHECK(expect_load_error(d, MD_ERR_INVALID,
                            "model.safetensors: tensor 'vision_model.embeddings.patch_embedding.weight' has 3 "
                            "non-finite values (NaN/Inf; the first at element 0)",
                            "3 NaNs in the patch embedding"));

    static const uint64_t one[] = {5};
    fresh_copy(base, "nf-inf", d, sizeof d);
    CHECK_EQ_INT(poke_f32(d, "text_projection.weight", one, 1, 0xff800000u), 0); /* -Inf */
    CHECK(expect_load_error(d, MD_ERR_INVALID,
                            "tensor 'text_projection.weight' has 1 non-finite value (NaN/Inf; the first at element 5)",
                            "-Inf in the text projection"));

    /* A q/k/v weight goes into the fused block at an offset: the check covers it there too. */
    static const uint64_t last[] = {63};
    fresh_copy(base, "nf-v", d, sizeof d);
    CHECK_EQ_INT(poke_f32(d, "text_model.encoder.layers.1.self_attn.v_proj.bias", last, 1, 0x7f800000u), 0);
    CHECK(expect_load_error(d, MD_ERR_INVALID, "'text_model.encoder.layers.1.self_attn.v_proj.bias' has 1 non-finite",
                            "+Inf in a fused v bias"));

    /* Large but finite values still load. */
    fresh_copy(base, "nf-big", d, sizeof d);
    CHECK_EQ_INT(poke_f32(d, "text_projection.weight", one, 1, 0x7f7fffffu), 0); /* FLT_MAX */
    md_clip *m = NULL;
    CHECK_EQ_INT(md_clip_load(d, NULL, &m, err, sizeof err), MD_OK);
    md_clip_free(m);
}

/* A config.json as the hub's openai/clip-vit-base-patch32 has it (written by transformers 4.x):
 * every PretrainedConfig key in the tower dicts (nulls, id2label, generation settings),
 * "text_config_dict": null, eos_token_id 2, bos 0, pad 1; image_size as [h, w]. It must load,
 * and (end token = largest id) pool exactly as the demo's own config does. */
static void test_hub_style_config(void)
{
    char d[PATH_MAX + 16], p[PATH_MAX + 32], err[512];
    snprintf(d, sizeof d, "%s/hubstyle", g_tmp);
    CHECK_EQ_INT(md_clip_write_demo(d, 5, err, sizeof err), MD_OK);
    md_clip *a = NULL, *b = NULL;
    CHECK_EQ_INT(md_clip_load(d, NULL, &a, err, sizeof err), MD_OK);
    snprintf(p, sizeof p, "%s/config.json", d);
    const char *cfg =
        "{\"_name_or_path\": \"openai/clip-vit-base-patch32\", \"architectures\": [\"CLIPModel\"],\n"
        " \"initializer_factor\": 1.0, \"logit_scale_init_value\": 2.6592, \"model_type\": \"clip\",\n"
        " \"projection_dim\": 512,\n"
        " \"text_config\": {\"_name_or_path\": \"\", \"add_cross_attention\": false, \"architectures\": null,\n"
        "   \"attention_dropout\": 0.0, \"bad_words_ids\": null, \"bos_token_id\": 0, \"chunk_size_feed_forward\": 0,\n"
        "   \"dropout\": 0.0, \"eos_token_id\": 2, \"hidden_act\": \"quick_gelu\", \"hidden_size\": 64,\n"
        "   \"id2label\": {\"0\": \"LABEL_0\", \"1\": \"LABEL_1\"}, \"initializer_range\": 0.02,\n"
        "   \"intermediate_size\": 256, \"layer_norm_eps\": 1e-05, \"max_length\": 20,\n"
        "   \"max_position_embeddings\": 77, \"model_type\": \"clip_text_model\", \"num_attention_heads\": 4,\n"
        "   \"num_hidden_layers\": 2, \"pad_token_id\": 1, \"projection_dim\": 512, \"torch_dtype\": null,\n"
        "   \"transformers_version\": \"4.21.0.dev0\", \"vocab_size\": 514},\n"
        " \"text_config_dict\": null, \"torch_dtype\": \"float32\", \"transformers_version\": null,\n"
        " \"vision_config\": {\"_name_or_path\": \"\", \"attention_dropout\": 0.0, \"dropout\": 0.0,\n"
        "   \"hidden_act\": \"quick_gelu\", \"hidden_size\": 64, \"image_size\": [224, 224],\n"
        "   \"intermediate_size\": 256, \"layer_norm_eps\": 1e-05, \"model_type\": \"clip_vision_model\",\n"
        "   \"num_attention_heads\": 4, \"num_channels\": 3, \"num_hidden_layers\": 2, \"patch_size\": 32,\n"
        "   \"projection_dim\": 512, \"transformers_version\": \"4.21.0.dev0\"},\n"
        " \"vision_config_dict\": null}\n";
    tu_write_file(p, cfg, strlen(cfg));
    CHECK_EQ_INT(md_clip_load(d, NULL, &b, err, sizeof err), MD_OK);
    if (!a || !b) {
        fprintf(stderr, "  %s\n", err);
        goto out;
    }
    CHECK_EQ_INT(md_clip_is_demo(b), 0); /* the marker is gone with the demo's config */
    CHECK_EQ_INT(md_clip_image_size(b), 224);
    float ea[512], eb[512];
    CHECK_EQ_INT(md_clip_embed_text(a, "a dog", ea, NULL, NULL, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_clip_embed_text(b, "a dog", eb, NULL, NULL, err, sizeof err), MD_OK);
    CHECK(rel_err(eb, ea, 512) == 0);
out:
    md_clip_free(a);
    md_clip_free(b);
}

/* ------------------------------------------------------------------ CLI */

/* Runs md_cli_main with ARGV, stdout captured; returns its exit code and the parsed JSON. */
static int run_cli(int argc, char **argv, cJSON **json)
{
    char out[PATH_MAX + 16];
    snprintf(out, sizeof out, "%s/cli.out", g_tmp);
    fflush(stdout);
    int saved = dup(1), fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    close(fd);
    int rc = md_cli_main(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    char *s = tu_read_file(out, NULL);
    *json = s ? cJSON_Parse(s) : NULL;
    free(s);
    return rc;
}

static void test_cli(void)
{
    char dir[] = FIX "/tiny-f32-quickgelu-oldeos";
    char *a1[] = {"momentd", "embed-text", "--model", dir, "a photo of a cat", NULL};
    cJSON *j = NULL;
    CHECK_EQ_INT(run_cli(5, a1, &j), 0);
    cJSON *ids = cJSON_GetObjectItem(j, "ids"), *emb = cJSON_GetObjectItem(j, "embedding");
    CHECK_EQ_INT(cJSON_GetArraySize(ids), 7);
    CHECK_EQ_INT(cJSON_GetArraySize(emb), 24);
    CHECK(cJSON_GetArrayItem(ids, 5) && cJSON_GetArrayItem(ids, 5)->valuedouble == 2368);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "tokens")), 7);
    CHECK(cJSON_IsString(cJSON_GetObjectItem(j, "weights_sha256")));
    cJSON_Delete(j);

    /* embed-image on picture.png: FFmpeg decode + CLIP preprocessing (video/) + the vision tower
     * must give what CLIPImageProcessor + transformers give. */
    char *a2[] = {"momentd", "embed-image", "--model", dir, FIX "/picture.png", "--tokens", NULL};
    CHECK_EQ_INT(run_cli(6, a2, &j), 0);
    emb = cJSON_GetObjectItem(j, "embedding");
    CHECK_EQ_INT(cJSON_GetArraySize(emb), 24);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "vision_tokens")), 17);
    float got[24] = {0};
    for (int i = 0; i < 24 && i < cJSON_GetArraySize(emb); i++)
        got[i] = (float)cJSON_GetArrayItem(emb, i)->valuedouble;
    md_safetensors *ref = NULL;
    char err[256];
    CHECK_EQ_INT(md_safetensors_open(FIX "/tiny-f32-quickgelu-oldeos.ref.safetensors", &ref, err, sizeof err), MD_OK);
    size_t n = 0;
    float *want = ref ? ref_tensor(ref, "picture_image_embeds", &n) : NULL;
    CHECK(want && n == 24);
    if (want && n == 24) {
        double e = rel_err(got, want, 24);
        fprintf(stderr, "  embed-image picture.png vs CLIPImageProcessor + transformers: rel err %.2e (tol %.0e)\n", e,
                TOL_F32);
        CHECK(e <= TOL_F32);
    }
    free(want);
    md_safetensors_free(ref);
    cJSON_Delete(j);

    /* Errors: unknown model dir, missing file, missing arguments: non-zero, no crash. */
    char *a3[] = {"momentd", "embed-text", "--model", "/nonexistent", "x", NULL};
    CHECK(run_cli(5, a3, &j) != 0);
    cJSON_Delete(j);
    char *a4[] = {"momentd", "embed-image", "--model", dir, "/nonexistent.png", NULL};
    CHECK(run_cli(5, a4, &j) != 0);
    cJSON_Delete(j);
    char *a5[] = {"momentd", "embed-text", NULL};
    CHECK(run_cli(2, a5, &j) != 0);
    cJSON_Delete(j);
    char *a6[] = {"momentd", "serve", NULL};
    CHECK_EQ_INT(run_cli(2, a6, &j), -1); /* not a CLI command: main() goes on */
    cJSON_Delete(j);
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/md_clip_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_backend_ops);
    RUN(test_models_vs_transformers);
    RUN(test_pooling_rules);
    RUN(test_concurrent_calls);
    RUN(test_demo_round_trip);
    RUN(test_corrupt_models);
    RUN(test_nonfinite_weights);
    RUN(test_hub_style_config);
    RUN(test_cli);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_tmp);
    return md_test_summary("test_clip");
}
