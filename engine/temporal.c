/* temporal.c - temporal.safetensors (load, validate, write, fresh identity init), the STORM token
 * arrangement, token reduction to segment embeddings, and the resumable stream (see temporal.h). */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mamba.h"
#include "safetensors.h"
#include "sha256.h"
#include "temporal.h"

struct md_temporal {
    md_mamba *m;
    md_temporal_info info;
};

/* ---- the tensor table: one list of (name, buffer, shape) used to load and to write ------- */

typedef struct tref {
    char name[96];
    float *data;
    int ndim;
    int64_t shape[3];
} tref;

/* Fills OUT (may be NULL: only counts) with M's tensors in file order; returns the count. */
static int model_trefs(const md_mamba *m, tref *out)
{
    const md_mamba_config *c = &m->cfg;
    const int64_t dm = c->d_model, di = md_mamba_d_inner(c), N = c->d_state, dc = c->d_conv, R = c->dt_rank;
    int n = 0;
#define ADD(ptr, nd, s0, s1, s2, ...)                                  \
    do {                                                               \
        if (out) {                                                     \
            snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);    \
            out[n].data = (ptr);                                       \
            out[n].ndim = (nd);                                        \
            out[n].shape[0] = (s0);                                    \
            out[n].shape[1] = (s1);                                    \
            out[n].shape[2] = (s2);                                    \
        }                                                              \
        n++;                                                           \
    } while (0)
    for (int i = 0; i < c->n_layers; i++) {
        const md_mamba_layer *l = &m->layers[i];
        ADD(l->norm_w, 1, dm, 0, 0, "layers.%d.norm.weight", i);
        ADD(l->norm_b, 1, dm, 0, 0, "layers.%d.norm.bias", i);
        ADD(l->in_proj_w, 2, 2 * di, dm, 0, "layers.%d.mixer.in_proj.weight", i);
        if (c->in_proj_bias)
            ADD(l->in_proj_b, 1, 2 * di, 0, 0, "layers.%d.mixer.in_proj.bias", i);
        for (int d = 0; d < ((c->dirs & MD_MAMBA_BWD) ? 2 : 1); d++) {
            const md_mamba_dir *p = &l->dir[d];
            const char *s = d ? "_b" : "";
            ADD(p->conv_w, 3, di, 1, dc, "layers.%d.mixer.conv1d%s.weight", i, s);
            ADD(p->conv_b, 1, di, 0, 0, "layers.%d.mixer.conv1d%s.bias", i, s);
            ADD(p->x_proj_w, 2, R + 2 * N, di, 0, "layers.%d.mixer.x_proj%s.weight", i, s);
            ADD(p->dt_proj_w, 2, di, R, 0, "layers.%d.mixer.dt_proj%s.weight", i, s);
            ADD(p->dt_proj_b, 1, di, 0, 0, "layers.%d.mixer.dt_proj%s.bias", i, s);
            ADD(p->A_log, 2, di, N, 0, "layers.%d.mixer.A%s_log", i, s);
            ADD(p->D, 1, di, 0, 0, "layers.%d.mixer.D%s", i, s);
        }
        ADD(l->out_proj_w, 2, dm, di, 0, "layers.%d.mixer.out_proj.weight", i);
        if (c->out_proj_bias)
            ADD(l->out_proj_b, 1, dm, 0, 0, "layers.%d.mixer.out_proj.bias", i);
    }
    if (c->final_norm) {
        ADD(m->norm_f_w, 1, dm, 0, 0, "norm_f.weight");
        ADD(m->norm_f_b, 1, dm, 0, 0, "norm_f.bias");
    }
#undef ADD
    return n;
}

static uint64_t tref_numel(const tref *r)
{
    uint64_t n = 1;
    for (int i = 0; i < r->ndim; i++)
        n *= (uint64_t)r->shape[i];
    return n;
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

/* ---- loading ------------------------------------------------------------------------------ */

/* Metadata KEY as an int in [LO, HI]; absent: *OUT = DEF when !REQUIRED. */
static md_status meta_int(const md_safetensors *st, const char *path, const char *key, int required, int def, int lo,
                          int hi, int *out, char *err, size_t errlen)
{
    const char *v = md_safetensors_meta(st, key);
    if (!v) {
        if (!required) {
            *out = def;
            return MD_OK;
        }
        snprintf(err, errlen, "%s: metadata \"%s\" missing (a temporal encoder needs d_model, n_layers, d_state, "
                              "d_conv and expand in __metadata__)", path, key);
        return MD_ERR_INVALID;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        snprintf(err, errlen, "%s: metadata \"%s\" = \"%.40s\" is not an integer in [%d, %d]", path, key, v, lo, hi);
        return MD_ERR_INVALID;
    }
    *out = (int)x;
    return MD_OK;
}

static md_status read_config(const md_safetensors *st, const char *path, md_mamba_config *c, char *err,
                             size_t errlen)
{
    md_status rc;
    int dm, bid = -1;
    if ((rc = meta_int(st, path, "d_model", 1, 0, 1, MD_MAMBA_MAX_D_MODEL, &dm, err, errlen)) != MD_OK)
        return rc;
    md_mamba_config_default(c, dm);
    if ((rc = meta_int(st, path, "n_layers", 1, 0, 0, MD_MAMBA_MAX_LAYERS, &c->n_layers, err, errlen)) != MD_OK ||
        (rc = meta_int(st, path, "d_state", 1, 0, 1, MD_MAMBA_MAX_D_STATE, &c->d_state, err, errlen)) != MD_OK ||
        (rc = meta_int(st, path, "d_conv", 1, 0, 1, MD_MAMBA_MAX_D_CONV, &c->d_conv, err, errlen)) != MD_OK ||
        (rc = meta_int(st, path, "expand", 1, 0, 1, MD_MAMBA_MAX_EXPAND, &c->expand, err, errlen)) != MD_OK ||
        (rc = meta_int(st, path, "dt_rank", 0, (dm + 15) / 16, 1, dm * c->expand, &c->dt_rank, err, errlen)) !=
            MD_OK ||
        (rc = meta_int(st, path, "bidirectional", 0, -1, 0, 1, &bid, err, errlen)) != MD_OK)
        return rc;
    const char *eps = md_safetensors_meta(st, "norm_eps");
    if (eps) {
        char *end;
        float e = strtof(eps, &end);
        if (end == eps || *end || !(e > 0 && e < 1)) {
            snprintf(err, errlen, "%s: metadata \"norm_eps\" = \"%.40s\" is not a number in (0, 1)", path, eps);
            return MD_ERR_INVALID;
        }
        c->norm_eps = e;
    }
    /* Optional parts: layer 0 and norm_f decide, every other layer must agree (checked by the
     * tensor table: a missing one is "missing", an extra one "unexpected"). */
    int has_b = c->n_layers > 0 && md_safetensors_find(st, "layers.0.mixer.conv1d_b.weight") != NULL;
    if (bid >= 0 && c->n_layers > 0 && bid != has_b) {
        snprintf(err, errlen, "%s: metadata says bidirectional = %d but layers.0.mixer.conv1d_b.weight is %s", path,
                 bid, has_b ? "present" : "missing");
        return MD_ERR_INVALID;
    }
    c->dirs = (c->n_layers > 0 ? has_b : bid != 0) ? MD_MAMBA_BOTH : MD_MAMBA_FWD;
    c->in_proj_bias = c->n_layers > 0 && md_safetensors_find(st, "layers.0.mixer.in_proj.bias") != NULL;
    c->out_proj_bias = c->n_layers > 0 && md_safetensors_find(st, "layers.0.mixer.out_proj.bias") != NULL;
    c->final_norm = md_safetensors_find(st, "norm_f.weight") != NULL || md_safetensors_find(st, "norm_f.bias");
    return md_mamba_config_check(c, err, errlen);
}

static md_status load_tensor(const md_safetensors *st, const char *path, const tref *r, char *err, size_t errlen)
{
    const md_st_tensor *t = md_safetensors_find(st, r->name);
    if (!t) {
        snprintf(err, errlen, "%s: tensor %s missing", path, r->name);
        return MD_ERR_INVALID;
    }
    if (t->dtype != MD_DT_F32 && t->dtype != MD_DT_F16 && t->dtype != MD_DT_BF16) {
        snprintf(err, errlen, "%s: tensor %s has dtype %s (F32, F16 or BF16 expected)", path, r->name,
                 md_dtype_name(t->dtype));
        return MD_ERR_INVALID;
    }
    int same = t->ndim == r->ndim;
    for (int i = 0; same && i < r->ndim; i++)
        same = t->shape[i] == r->shape[i];
    if (!same) {
        char want[64], got[96];
        shape_str(want, sizeof want, r->ndim, r->shape);
        shape_str(got, sizeof got, t->ndim, t->shape);
        snprintf(err, errlen, "%s: tensor %s has shape %s, the metadata's config needs %s", path, r->name, got, want);
        return MD_ERR_INVALID;
    }
    md_status rc = md_st_to_f32(t, r->data);
    if (rc != MD_OK) {
        snprintf(err, errlen, "%s: tensor %s: cannot convert %s", path, r->name, md_dtype_name(t->dtype));
        return MD_ERR_INVALID;
    }
    /* NaN/Inf weights would make every segment embedding NaN (an index that matches nothing). */
    uint64_t first, bad = md_st_count_nonfinite(r->data, tref_numel(r), &first);
    if (bad) {
        snprintf(err, errlen, "%s: tensor %s has %llu non-finite value%s (NaN/Inf; the first at element %llu)", path,
                 r->name, (unsigned long long)bad, bad == 1 ? "" : "s", (unsigned long long)first);
        return MD_ERR_INVALID;
    }
    return MD_OK;
}

/* A_log beyond this makes A = -exp(A_log) overflow (and 0 * inf a NaN in the scan). */
#define MD_A_LOG_MAX 80.0f

static md_status fill_info(md_temporal *t, const char *sha, int trained, const char *description)
{
    md_temporal_info *in = &t->info;
    in->cfg = t->m->cfg;
    in->identity = md_mamba_is_identity(t->m);
    in->trained = trained;
    snprintf(in->sha256, sizeof in->sha256, "%s", sha);
    snprintf(in->description, sizeof in->description, "%s", description ? description : "");
    return MD_OK;
}

md_status md_temporal_load(const char *path, md_temporal **out, char *err, size_t errlen)
{
    *out = NULL;
    md_safetensors *st = NULL;
    md_mamba *m = NULL;
    md_temporal *t = NULL;
    tref *refs = NULL;
    md_mamba_config c;
    md_status rc = md_safetensors_open(path, &st, err, errlen);
    if (rc != MD_OK)
        goto out;
    if ((rc = read_config(st, path, &c, err, errlen)) != MD_OK)
        goto out;
    /* Before allocating: the file must be able to hold the config's tensors (2 bytes each at least). */
    if (md_mamba_param_count(&c) * 2 > md_safetensors_file_size(st)) {
        snprintf(err, errlen, "%s: %llu bytes cannot hold the %zu parameters its metadata describes (truncated?)", path,
                 (unsigned long long)md_safetensors_file_size(st), md_mamba_param_count(&c));
        rc = MD_ERR_INVALID;
        goto out;
    }
    if ((rc = md_mamba_new(&c, &m, err, errlen)) != MD_OK)
        goto out;
    int n = model_trefs(m, NULL);
    refs = calloc(n ? (size_t)n : 1, sizeof *refs);
    rc = MD_ERR_NOMEM;
    if (!refs)
        goto out;
    model_trefs(m, refs);
    for (int i = 0; i < n; i++)
        if ((rc = load_tensor(st, path, &refs[i], err, errlen)) != MD_OK)
            goto out;
    if (md_safetensors_count(st) != n) {
        /* Every expected name is present and names are unique, so some tensor is extra. */
        for (int j = 0; j < md_safetensors_count(st); j++) {
            const char *name = md_safetensors_at(st, j)->name;
            int known = 0;
            for (int i = 0; i < n && !known; i++)
                known = strcmp(refs[i].name, name) == 0;
            if (!known) {
                snprintf(err, errlen, "%s: unexpected tensor %s (not part of a %d-layer %s encoder)", path, name,
                         c.n_layers, c.dirs == MD_MAMBA_BOTH ? "bidirectional" : "forward");
                break;
            }
        }
        rc = MD_ERR_INVALID;
        goto out;
    }
    for (int i = 0; i < c.n_layers; i++)
        for (int d = 0; d < (c.dirs == MD_MAMBA_BOTH ? 2 : 1); d++) {
            const float *a = m->layers[i].dir[d].A_log;
            for (size_t j = 0; j < (size_t)md_mamba_d_inner(&c) * c.d_state; j++)
                if (a[j] > MD_A_LOG_MAX) {
                    snprintf(err, errlen, "%s: layers.%d.mixer.A%s_log has %g > %g (A = -exp(A_log) would overflow)",
                             path, i, d ? "_b" : "", (double)a[j], (double)MD_A_LOG_MAX);
                    rc = MD_ERR_INVALID;
                    goto out;
                }
        }
    md_mamba_prepare(m);
    char sha[65];
    long long size;
    if ((rc = md_sha256_file(path, sha, &size)) != MD_OK) {
        snprintf(err, errlen, "%s: cannot read it again to hash it", path);
        goto out;
    }
    rc = MD_ERR_NOMEM;
    if (!(t = calloc(1, sizeof *t)))
        goto out;
    t->m = m;
    m = NULL;
    const char *tr = md_safetensors_meta(st, "trained");
    fill_info(t, sha, tr && strcmp(tr, "1") == 0, md_safetensors_meta(st, "description"));
    *out = t;
    t = NULL;
    rc = MD_OK;
out:
    if (rc == MD_ERR_NOMEM && err && errlen && !err[0])
        snprintf(err, errlen, "%s: out of memory", path);
    md_temporal_free(t);
    free(refs);
    md_mamba_free(m);
    md_safetensors_free(st);
    return rc;
}

md_status md_temporal_from_model(md_mamba *m, md_temporal **out)
{
    *out = NULL;
    md_temporal *t = calloc(1, sizeof *t);
    if (!t)
        return MD_ERR_NOMEM;
    md_mamba_prepare(m);
    t->m = m;
    md_sha256 h;
    char sha[65];
    md_sha256_init(&h);
    md_sha256_update(&h, m->mem, m->mem_floats * sizeof *m->mem);
    md_sha256_final_hex(&h, sha);
    fill_info(t, sha, 0, "in-memory model");
    *out = t;
    return MD_OK;
}

void md_temporal_free(md_temporal *t)
{
    if (!t)
        return;
    md_mamba_free(t->m);
    free(t);
}

const md_temporal_info *md_temporal_get_info(const md_temporal *t) { return &t->info; }
md_mamba *md_temporal_model(md_temporal *t) { return t->m; }

/* ---- writing ------------------------------------------------------------------------------ */

md_status md_temporal_write(const char *path, const md_mamba *m, int trained, const char *description, char *err,
                            size_t errlen)
{
    const md_mamba_config *c = &m->cfg;
    int n = model_trefs(m, NULL);
    tref *refs = calloc(n ? (size_t)n : 1, sizeof *refs);
    md_st_write *ws = calloc(n ? (size_t)n : 1, sizeof *ws);
    md_status rc = MD_ERR_NOMEM;
    if (!refs || !ws) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    model_trefs(m, refs);
    for (int i = 0; i < n; i++) {
        ws[i].name = refs[i].name;
        ws[i].dtype = MD_DT_F32;
        ws[i].ndim = refs[i].ndim;
        for (int d = 0; d < refs[i].ndim; d++)
            ws[i].shape[d] = refs[i].shape[d];
        ws[i].data = refs[i].data;
    }
    char v[9][32];
    snprintf(v[0], sizeof v[0], "%d", c->d_model);
    snprintf(v[1], sizeof v[1], "%d", c->n_layers);
    snprintf(v[2], sizeof v[2], "%d", c->d_state);
    snprintf(v[3], sizeof v[3], "%d", c->d_conv);
    snprintf(v[4], sizeof v[4], "%d", c->expand);
    snprintf(v[5], sizeof v[5], "%d", c->dt_rank);
    snprintf(v[6], sizeof v[6], "%d", (c->dirs & MD_MAMBA_BWD) ? 1 : 0);
    snprintf(v[7], sizeof v[7], "%.9g", (double)c->norm_eps);
    snprintf(v[8], sizeof v[8], "%d", trained ? 1 : 0);
    const char *meta[] = {"format",   "momentd-temporal", "version", "1",     "d_model",       v[0],
                          "n_layers", v[1],               "d_state", v[2],    "d_conv",        v[3],
                          "expand",   v[4],               "dt_rank", v[5],    "bidirectional", v[6],
                          "norm_eps", v[7],               "trained", v[8],    "description",   description ? description : ""};
    rc = md_safetensors_write(path, ws, n, meta, (int)(sizeof meta / sizeof *meta / 2), err, errlen);
out:
    free(ws);
    free(refs);
    return rc;
}

/* splitmix64: a small seeded generator, so that init-temporal is reproducible. */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-bound, bound). */
static float uniform(uint64_t *s, double bound)
{
    double u = (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)((2.0 * u - 1.0) * bound);
}

static void fill_uniform(float *v, size_t n, uint64_t *s, double bound)
{
    for (size_t i = 0; i < n; i++)
        v[i] = uniform(s, bound);
}

md_status md_temporal_init_write(const char *path, const md_mamba_config *cin, uint64_t seed, char *err,
                                 size_t errlen)
{
    md_mamba_config c = *cin;
    c.in_proj_bias = c.out_proj_bias = c.final_norm = 0;
    md_mamba *m = NULL;
    md_status rc = md_mamba_new(&c, &m, err, errlen);
    if (rc != MD_OK)
        return rc;
    const size_t dm = (size_t)c.d_model, di = (size_t)md_mamba_d_inner(&c), N = (size_t)c.d_state;
    uint64_t s = seed;
    for (int i = 0; i < c.n_layers; i++) {
        md_mamba_layer *l = &m->layers[i];
        for (size_t j = 0; j < dm; j++)
            l->norm_w[j] = 1.0f; /* norm_b stays 0 */
        fill_uniform(l->in_proj_w, 2 * di * dm, &s, 1.0 / sqrt((double)dm));
        for (int d = 0; d < ((c.dirs & MD_MAMBA_BWD) ? 2 : 1); d++) {
            md_mamba_dir *p = &l->dir[d];
            fill_uniform(p->conv_w, di * c.d_conv, &s, 1.0 / sqrt((double)c.d_conv));
            fill_uniform(p->conv_b, di, &s, 1.0 / sqrt((double)c.d_conv));
            fill_uniform(p->x_proj_w, (c.dt_rank + 2 * N) * di, &s, 1.0 / sqrt((double)di));
            fill_uniform(p->dt_proj_w, di * c.dt_rank, &s, 1.0 / sqrt((double)c.dt_rank));
            for (size_t j = 0; j < di; j++) {
                /* dt log-uniform in [1e-3, 1e-1] (floor 1e-4); the bias is its inverse softplus. */
                double u = (uniform(&s, 1.0) + 1.0) / 2.0;
                double dt = exp(u * (log(0.1) - log(0.001)) + log(0.001));
                dt = dt < 1e-4 ? 1e-4 : dt;
                p->dt_proj_b[j] = (float)(dt + log(-expm1(-dt)));
                p->D[j] = 1.0f;
                for (size_t n = 0; n < N; n++)
                    p->A_log[j * N + n] = (float)log((double)(n + 1));
            }
        }
        /* out_proj stays zero: the layer adds exactly nothing, the encoder is the identity. */
    }
    rc = md_temporal_write(path, m, 0, "fresh encoder: out_proj zero (identity, untrained)", err, errlen);
    md_mamba_free(m);
    return rc;
}

/* ---- parameters and segments ---------------------------------------------------------------- */

void md_temporal_params_default(md_temporal_params *p, int tokens_per_frame)
{
    memset(p, 0, sizeof *p);
    p->tokens_per_frame = tokens_per_frame;
    p->window_frames = 32;
    p->overlap_frames = 0;
    p->segment_frames = 4;
    p->sample_stride = 1;
    p->patch_weight = 0.0f;
    p->frame_interval_ms = 0;
}

/* The limits as text, so that the messages below stay constant strings. */
#define MD_STR_(x) #x
#define MD_STR(x) MD_STR_(x)

md_status md_temporal_params_check(const md_temporal_params *p, char *err, size_t errlen)
{
    const char *why = NULL;
    if (p->tokens_per_frame < 1 || p->tokens_per_frame > MD_TEMPORAL_TOKENS_MAX)
        why = "tokens_per_frame must be in [1, " MD_STR(MD_TEMPORAL_TOKENS_MAX) "]";
    else if (p->window_frames < 1 || p->window_frames > MD_TEMPORAL_WINDOW_MAX)
        why = "window_frames (T) must be in [1, " MD_STR(MD_TEMPORAL_WINDOW_MAX) "]";
    else if ((int64_t)p->window_frames * p->tokens_per_frame > INT_MAX / 4)
        why = "window_frames * tokens_per_frame is too large";
    else if (p->overlap_frames < 0 || p->overlap_frames >= p->window_frames)
        why = "overlap_frames must be in [0, T)";
    else if (p->segment_frames < 1 || (p->window_frames - p->overlap_frames) % p->segment_frames)
        why = "segment_frames (k) must be >= 1 and divide T - overlap_frames";
    else if (p->sample_stride < 1 || p->sample_stride > p->segment_frames)
        why = "sample_stride (s) must be in [1, k]";
    else if (!isfinite(p->patch_weight) || p->patch_weight < 0)
        why = "patch_weight must be a finite number >= 0";
    else if (p->frame_interval_ms < 0)
        why = "frame_interval_ms must be >= 0";
    if (why) {
        snprintf(err, errlen, "temporal parameters: %s", why);
        return MD_ERR_INVALID;
    }
    return MD_OK;
}

void md_segments_clear(md_segments *s) { s->n = 0; }

void md_segments_free(md_segments *s)
{
    if (!s)
        return;
    free(s->seg);
    free(s->emb);
    memset(s, 0, sizeof *s);
}

/* Appends SEG and EMB [s->dim]; the list takes DIM on first use. */
static md_status segments_add(md_segments *s, int dim, const md_segment *seg, const float *emb)
{
    if (s->dim == 0)
        s->dim = dim;
    if (s->dim != dim)
        return MD_ERR_INVALID;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        md_segment *ns = realloc(s->seg, (size_t)cap * sizeof *ns);
        if (!ns)
            return MD_ERR_NOMEM;
        s->seg = ns;
        float *ne = realloc(s->emb, (size_t)cap * dim * sizeof *ne);
        if (!ne)
            return MD_ERR_NOMEM;
        s->emb = ne;
        s->cap = cap;
    }
    s->seg[s->n] = *seg;
    memcpy(s->emb + (size_t)s->n * dim, emb, (size_t)dim * sizeof *emb);
    s->n++;
    return MD_OK;
}

/* v /= ||v|| (in double: CLIP embeddings are compared at 1e-6). */
static void l2n(float *v, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)v[i] * v[i];
    if (ss > 0) {
        float inv = (float)(1.0 / sqrt(ss));
        for (int i = 0; i < n; i++)
            v[i] *= inv;
    }
}

/* ---- the stream ------------------------------------------------------------------------------ */

struct md_temporal_stream {
    md_temporal *t;
    md_temporal_params p;
    int dim, tpf;
    md_mamba_state *state;
    md_mamba_ws *ws;      /* the encoder's scratch, kept between windows */
    float *buf;           /* [window_frames + 1][tpf][dim]: frames pushed, not committed */
    int64_t *pts;         /* [window_frames + 1] */
    int nbuf;
    float *work;          /* [window_frames * tpf][dim]: the window being encoded */
    float *acc, *v, *pm;  /* [dim] each: reduction scratch */
    int64_t next_frame;   /* index of buf[0] == frames committed */
    int64_t next_segment; /* segments emitted */
    int64_t prev_pts;     /* timestamp of frame next_frame - 1 (when next_frame > 0) */
    char err[256];
};

md_status md_temporal_stream_new(md_temporal *t, const md_temporal_params *p, md_temporal_stream **out, char *err,
                                 size_t errlen)
{
    *out = NULL;
    md_status rc = md_temporal_params_check(p, err, errlen);
    if (rc != MD_OK)
        return rc;
    md_temporal_stream *s = calloc(1, sizeof *s);
    if (!s)
        return MD_ERR_NOMEM;
    s->t = t;
    s->p = *p;
    s->dim = t->m->cfg.d_model;
    s->tpf = p->tokens_per_frame;
    size_t frame = (size_t)s->tpf * s->dim;
    s->buf = malloc((size_t)(p->window_frames + 1) * frame * sizeof *s->buf);
    s->pts = malloc((size_t)(p->window_frames + 1) * sizeof *s->pts);
    s->work = malloc((size_t)p->window_frames * frame * sizeof *s->work);
    s->acc = malloc(3 * (size_t)s->dim * sizeof *s->acc);
    s->ws = md_mamba_ws_new();
    if (!s->buf || !s->pts || !s->work || !s->acc || !s->ws || md_mamba_state_new(t->m, &s->state) != MD_OK) {
        md_temporal_stream_free(s);
        snprintf(err, errlen, "temporal stream: out of memory");
        return MD_ERR_NOMEM;
    }
    s->v = s->acc + s->dim;
    s->pm = s->v + s->dim;
    *out = s;
    return MD_OK;
}

void md_temporal_stream_free(md_temporal_stream *s)
{
    if (!s)
        return;
    md_mamba_state_free(s->state);
    md_mamba_ws_free(s->ws);
    free(s->acc);
    free(s->work);
    free(s->pts);
    free(s->buf);
    free(s);
}

int64_t md_temporal_stream_next_frame(const md_temporal_stream *s) { return s->next_frame; }
int64_t md_temporal_stream_frames_pushed(const md_temporal_stream *s) { return s->next_frame + s->nbuf; }
int64_t md_temporal_stream_segments(const md_temporal_stream *s) { return s->next_segment; }
const char *md_temporal_stream_error(const md_temporal_stream *s) { return s->err; }

/* The reduced vector of frame F of the encoded window X: l2n(CLS) + w * l2n(mean of patches). */
static void frame_vector(const md_temporal_stream *s, const float *x, int f, float *v)
{
    const float *fr = x + (size_t)f * s->tpf * s->dim;
    memcpy(v, fr, (size_t)s->dim * sizeof *v);
    l2n(v, s->dim);
    if (s->p.patch_weight != 0.0f && s->tpf > 1) {
        memset(s->pm, 0, (size_t)s->dim * sizeof *s->pm);
        for (int q = 1; q < s->tpf; q++)
            for (int i = 0; i < s->dim; i++)
                s->pm[i] += fr[(size_t)q * s->dim + i];
        for (int i = 0; i < s->dim; i++)
            s->pm[i] /= (float)(s->tpf - 1);
        l2n(s->pm, s->dim);
        for (int i = 0; i < s->dim; i++)
            v[i] += s->p.patch_weight * s->pm[i];
    }
}

/* Encodes the first NF buffered frames as one window, emits segments for the first COMMIT, and
 * drops those from the buffer. FINAL: the end of the video (the last segment ends at the last
 * frame's time + the frame interval). */
static md_status run_window(md_temporal_stream *s, int nf, int commit, int final, md_segments *out)
{
    const int D = s->dim, k = s->p.segment_frames;
    const size_t frame = (size_t)s->tpf * D;
    assert(nf >= 1 && nf <= s->nbuf && commit >= 1 && commit <= nf);
    assert(final || commit < s->nbuf);
    memcpy(s->work, s->buf, (size_t)nf * frame * sizeof *s->work);
    md_status rc = md_mamba_forward(s->t->m, s->ws, s->work, nf * s->tpf, s->state, commit * s->tpf);
    if (rc != MD_OK) {
        snprintf(s->err, sizeof s->err, "temporal encoder: %s", md_status_str(rc));
        return rc;
    }
    for (int f0 = 0; f0 < commit; f0 += k) {
        int n = commit - f0 < k ? commit - f0 : k;
        memset(s->acc, 0, (size_t)D * sizeof *s->acc);
        int kept = 0;
        for (int o = 0; o < n; o += s->p.sample_stride, kept++) {
            frame_vector(s, s->work, f0 + o, s->v);
            for (int i = 0; i < D; i++)
                s->acc[i] += s->v[i];
        }
        for (int i = 0; i < D; i++)
            s->acc[i] /= (float)kept;
        l2n(s->acc, D);
        md_segment seg = {.index = s->next_segment, .first_frame = s->next_frame + f0, .n_frames = n,
                          .start_ms = s->pts[f0]};
        if (f0 + n < s->nbuf) {
            seg.end_ms = s->pts[f0 + n];
        } else {
            assert(final);
            int64_t iv = s->p.frame_interval_ms;
            if (iv == 0 && s->nbuf >= 2)
                iv = s->pts[s->nbuf - 1] - s->pts[s->nbuf - 2];
            else if (iv == 0 && s->next_frame > 0)
                iv = s->pts[0] - s->prev_pts;
            seg.end_ms = s->pts[s->nbuf - 1] + iv;
        }
        if ((rc = segments_add(out, D, &seg, s->acc)) != MD_OK) {
            snprintf(s->err, sizeof s->err, "temporal stream: %s",
                     rc == MD_ERR_NOMEM ? "out of memory" : "segment list of another width");
            return rc;
        }
        s->next_segment++;
    }
    s->prev_pts = s->pts[commit - 1];
    s->nbuf -= commit;
    memmove(s->buf, s->buf + (size_t)commit * frame, (size_t)s->nbuf * frame * sizeof *s->buf);
    memmove(s->pts, s->pts + commit, (size_t)s->nbuf * sizeof *s->pts);
    s->next_frame += commit;
    return MD_OK;
}

md_status md_temporal_stream_push(md_temporal_stream *s, int64_t first_frame, const float *tokens,
                                  const int64_t *pts_ms, int n, md_segments *out)
{
    const int T = s->p.window_frames;
    const size_t frame = (size_t)s->tpf * s->dim;
    s->err[0] = 0;
    if (first_frame != md_temporal_stream_frames_pushed(s) || n < 0) {
        snprintf(s->err, sizeof s->err, "temporal stream: pushed frame %lld, expected frame %lld",
                 (long long)first_frame, (long long)md_temporal_stream_frames_pushed(s));
        return MD_ERR_INVALID;
    }
    for (int i = 0; i < n; i++) {
        int have_prev = s->nbuf > 0 || s->next_frame > 0;
        int64_t prev = s->nbuf > 0 ? s->pts[s->nbuf - 1] : s->prev_pts;
        if (have_prev && pts_ms[i] <= prev) {
            snprintf(s->err, sizeof s->err, "temporal stream: frame %lld at %lld ms is not after the previous frame "
                     "(%lld ms)", (long long)(first_frame + i), (long long)pts_ms[i], (long long)prev);
            return MD_ERR_INVALID;
        }
        memcpy(s->buf + (size_t)s->nbuf * frame, tokens + (size_t)i * frame, frame * sizeof *s->buf);
        s->pts[s->nbuf++] = pts_ms[i];
        /* A window is complete once the frame after it is known (it ends the last segment). */
        if (s->nbuf > T) {
            md_status rc = run_window(s, T, T - s->p.overlap_frames, 0, out);
            if (rc != MD_OK)
                return rc;
        }
    }
    return MD_OK;
}

md_status md_temporal_stream_finish(md_temporal_stream *s, md_segments *out)
{
    s->err[0] = 0;
    if (s->nbuf == 0)
        return MD_OK;
    return run_window(s, s->nbuf, s->nbuf, 1, out);
}

/* ---- checkpoints ------------------------------------------------------------------------------ */

#define MD_TS_MAGIC "MDTSTATE"
#define MD_TS_VERSION 1u
#define MD_TS_NCFG 12

static void stream_cfg(const md_temporal_stream *s, int32_t v[MD_TS_NCFG])
{
    const md_mamba_config *c = &s->t->m->cfg;
    int32_t w[MD_TS_NCFG] = {c->d_model,          c->n_layers,          md_mamba_d_inner(c),
                             c->d_state,          c->d_conv,            c->dirs,
                             s->tpf,              s->p.window_frames,   s->p.overlap_frames,
                             s->p.segment_frames, s->p.sample_stride,   0};
    memcpy(v, w, sizeof w);
}

/* Header: magic 8, version 4, reserved 4, cfg 48, patch_weight 4, zero 4, sha 64, 3 x i64 24,
 * nfloats 8. */
#define MD_TS_HEADER (8 + 4 + 4 + 4 * MD_TS_NCFG + 4 + 4 + 64 + 24 + 8)

md_status md_temporal_stream_save(const md_temporal_stream *s, void **blob, size_t *len)
{
    *blob = NULL;
    *len = 0;
    const md_mamba_state *st = s->state;
    size_t nc = (size_t)st->n_layers * (st->d_conv - 1) * st->d_inner;
    size_t nf = md_mamba_state_floats(st);
    size_t n = MD_TS_HEADER + nf * sizeof(float) + 32;
    unsigned char *b = malloc(n), *p = b;
    if (!b)
        return MD_ERR_NOMEM;
    uint32_t ver = MD_TS_VERSION, zero = 0;
    int32_t cfg[MD_TS_NCFG];
    stream_cfg(s, cfg);
    int64_t counters[3] = {s->next_frame, s->next_segment, s->next_frame > 0 ? s->prev_pts : 0};
    uint64_t nf64 = nf;
#define PUT(src, bytes)         \
    do {                        \
        memcpy(p, (src), bytes); \
        p += (bytes);           \
    } while (0)
    PUT(MD_TS_MAGIC, 8);
    PUT(&ver, 4);
    PUT(&zero, 4);
    PUT(cfg, sizeof cfg);
    PUT(&s->p.patch_weight, 4);
    PUT(&zero, 4);
    PUT(s->t->info.sha256, 64);
    PUT(counters, sizeof counters);
    PUT(&nf64, 8);
    PUT(st->conv, nc * sizeof(float));
    PUT(st->ssm, (nf - nc) * sizeof(float));
#undef PUT
    md_sha256 h;
    md_sha256_init(&h);
    md_sha256_update(&h, b, (size_t)(p - b));
    md_sha256_final(&h, p);
    p += 32;
    assert((size_t)(p - b) == n);
    *blob = b;
    *len = n;
    return MD_OK;
}

static md_status restore(md_temporal_stream *s, const void *blob, size_t len, char *err, size_t errlen)
{
    const unsigned char *b = blob, *p = b;
    md_mamba_state *st = s->state;
    size_t nc = (size_t)st->n_layers * (st->d_conv - 1) * st->d_inner;
    size_t nf = md_mamba_state_floats(st);
    if (len < MD_TS_HEADER + 32 || memcmp(b, MD_TS_MAGIC, 8) != 0) {
        snprintf(err, errlen, "temporal checkpoint: not a checkpoint (%zu bytes)", len);
        return MD_ERR_INVALID;
    }
    uint8_t digest[32];
    md_sha256 h;
    md_sha256_init(&h);
    md_sha256_update(&h, b, len - 32);
    md_sha256_final(&h, digest);
    if (memcmp(digest, b + len - 32, 32) != 0) {
        snprintf(err, errlen, "temporal checkpoint: checksum mismatch (damaged or truncated)");
        return MD_ERR_INVALID;
    }
    uint32_t ver;
    int32_t cfg[MD_TS_NCFG], want[MD_TS_NCFG];
    float pw;
    char sha[65] = {0};
    int64_t counters[3];
    uint64_t nf64;
    memcpy(&ver, p + 8, 4);
    p += 16;
    memcpy(cfg, p, sizeof cfg);
    p += sizeof cfg;
    memcpy(&pw, p, 4);
    p += 8;
    memcpy(sha, p, 64);
    p += 64;
    memcpy(counters, p, sizeof counters);
    p += sizeof counters;
    memcpy(&nf64, p, 8);
    p += 8;
    if (ver != MD_TS_VERSION) {
        snprintf(err, errlen, "temporal checkpoint: version %u, this build reads %u", ver, MD_TS_VERSION);
        return MD_ERR_INVALID;
    }
    stream_cfg(s, want);
    if (strcmp(sha, s->t->info.sha256) != 0) {
        snprintf(err, errlen, "temporal checkpoint: made with other weights (%.12s, these are %.12s)", sha,
                 s->t->info.sha256);
        return MD_ERR_CONFLICT;
    }
    if (memcmp(cfg, want, sizeof cfg) != 0 || pw != s->p.patch_weight) {
        snprintf(err, errlen, "temporal checkpoint: made with other parameters (window, overlap, segment, stride, "
                              "patch weight or tokens per frame)");
        return MD_ERR_CONFLICT;
    }
    if (nf64 != nf || len != MD_TS_HEADER + nf * sizeof(float) + 32 || counters[0] < 0 || counters[1] < 0) {
        snprintf(err, errlen, "temporal checkpoint: inconsistent sizes or counters");
        return MD_ERR_INVALID;
    }
    memcpy(st->conv, p, nc * sizeof(float));
    memcpy(st->ssm, p + nc * sizeof(float), (nf - nc) * sizeof(float));
    s->next_frame = counters[0];
    s->next_segment = counters[1];
    s->prev_pts = counters[2];
    s->nbuf = 0;
    s->err[0] = 0;
    return MD_OK;
}

md_status md_temporal_stream_restore(md_temporal_stream *s, const void *blob, size_t len, char *err, size_t errlen)
{
    s->err[0] = 0;
    md_status rc = restore(s, blob, len, s->err, sizeof s->err);
    if (err && errlen)
        snprintf(err, errlen, "%s", s->err);
    return rc;
}
