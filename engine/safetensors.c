/* safetensors.c - safetensors reader (mmap, every header field checked) and writer. See safetensors.h. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cJSON.h"
#include "safetensors.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

/* The reference implementation refuses headers over 100 MB; so do we, before allocating. */
#define MAX_HEADER (100u * 1000u * 1000u)
/* JSON numbers are doubles: integers above 2^53 are not exact, so refuse them. */
#define MAX_EXACT 9007199254740992.0

struct md_safetensors {
    char path[512];
    void *map;
    uint64_t size;
    const uint8_t *data; /* start of the data area */
    uint64_t data_size;
    cJSON *root;         /* the parsed header; tensor names point into it */
    md_st_tensor *t;
    int n;
    int *by_name;        /* indices sorted by name, for md_safetensors_find */
};

static const struct {
    const char *name;
    size_t size;
} DTYPES[MD_DT_COUNT] = {
    [MD_DT_BOOL] = {"BOOL", 1}, [MD_DT_U8] = {"U8", 1},     [MD_DT_I8] = {"I8", 1},
    [MD_DT_F8_E5M2] = {"F8_E5M2", 1}, [MD_DT_F8_E4M3] = {"F8_E4M3", 1}, [MD_DT_I16] = {"I16", 2},
    [MD_DT_U16] = {"U16", 2}, [MD_DT_F16] = {"F16", 2},   [MD_DT_BF16] = {"BF16", 2},
    [MD_DT_I32] = {"I32", 4}, [MD_DT_U32] = {"U32", 4},   [MD_DT_F32] = {"F32", 4},
    [MD_DT_F64] = {"F64", 8}, [MD_DT_I64] = {"I64", 8},   [MD_DT_U64] = {"U64", 8},
};

const char *md_dtype_name(md_dtype dt) { return dt >= 0 && dt < MD_DT_COUNT ? DTYPES[dt].name : "?"; }
size_t md_dtype_size(md_dtype dt) { return dt >= 0 && dt < MD_DT_COUNT ? DTYPES[dt].size : 0; }

static int dtype_parse(const char *s, md_dtype *out)
{
    for (int i = 0; i < MD_DT_COUNT; i++)
        if (strcmp(s, DTYPES[i].name) == 0) {
            *out = (md_dtype)i;
            return 1;
        }
    return 0;
}


/* A JSON number that is a non-negative integer represented exactly. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d >= MAX_EXACT || d != floor(d))
        return 0;
    *out = (uint64_t)d;
    return 1;
}

static int cmp_offset(const void *a, const void *b, void *ctx)
{
    const md_st_tensor *t = ctx;
    const md_st_tensor *x = &t[*(const int *)a], *y = &t[*(const int *)b];
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int cmp_name(const void *a, const void *b, void *ctx)
{
    const md_st_tensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* qsort_r is not C11 and differs between libcs: a plain top-down merge sort over int indices
 * with a context pointer. */
static void sort_idx(int *idx, int *tmp, int n, int (*cmp)(const void *, const void *, void *), void *ctx)
{
    if (n < 2)
        return;
    int h = n / 2;
    sort_idx(idx, tmp, h, cmp, ctx);
    sort_idx(idx + h, tmp, n - h, cmp, ctx);
    int i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = cmp(&idx[j], &idx[i], ctx) < 0 ? idx[j++] : idx[i++];
    while (i < h)
        tmp[k++] = idx[i++];
    while (j < n)
        tmp[k++] = idx[j++];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

void md_safetensors_free(md_safetensors *st)
{
    if (!st)
        return;
    if (st->map && st->map != MAP_FAILED)
        munmap(st->map, st->size);
    cJSON_Delete(st->root);
    free(st->t);
    free(st->by_name);
    free(st);
}

static md_status parse_tensor(md_safetensors *st, const cJSON *e, md_st_tensor *t, char *err, size_t errlen)
{
    const char *p = st->path, *name = e->string;
    if (!cJSON_IsObject(e))
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': header entry is not an object", p, name);
    if (!name[0])
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: a tensor has an empty name", p);
    t->name = name;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': missing or non-string \"dtype\"", p, name);
    if (!dtype_parse(dt->valuestring, &t->dtype))
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': unknown dtype \"%.32s\"", p, name,
                    dt->valuestring);
    if (!cJSON_IsArray(sh))
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': missing or non-array \"shape\"", p, name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > MD_ST_MAX_DIMS)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': %d dimensions (at most %d)", p, name, nd,
                    MD_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, sh)
    {
        uint64_t v;
        if (!json_uint(d, &v))
            return md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': shape[%d] is not a non-negative integer", p,
                        name, i);
        if (v && numel > UINT64_MAX / v)
            return md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': shape overflows", p, name);
        numel *= v;
        t->shape[i++] = (int64_t)v;
    }
    size_t es = md_dtype_size(t->dtype);
    if (numel > UINT64_MAX / es)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': shape overflows", p, name);
    t->numel = numel;
    uint64_t b, en;
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !json_uint(cJSON_GetArrayItem(of, 0), &b) ||
        !json_uint(cJSON_GetArrayItem(of, 1), &en))
        return md_errf(err, errlen, MD_ERR_INVALID,
                    "%s: tensor '%s': \"data_offsets\" must be two non-negative integers [begin, end]", p, name);
    if (en < b)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': data_offsets end %llu < begin %llu", p, name,
                    (unsigned long long)en, (unsigned long long)b);
    if (en > st->data_size)
        return md_errf(err, errlen, MD_ERR_INVALID,
                    "%s: tensor '%s': data_offsets [%llu, %llu] run past the data (%llu bytes; file truncated?)", p,
                    name, (unsigned long long)b, (unsigned long long)en, (unsigned long long)st->data_size);
    if (en - b != numel * es)
        return md_errf(err, errlen, MD_ERR_INVALID,
                    "%s: tensor '%s': %llu bytes in data_offsets but shape x %s needs %llu", p, name,
                    (unsigned long long)(en - b), md_dtype_name(t->dtype), (unsigned long long)(numel * es));
    t->offset = b;
    t->nbytes = en - b;
    t->data = st->data + b;
    return MD_OK;
}

md_status md_safetensors_open(const char *path, md_safetensors **out, char *err, size_t errlen)
{
    md_status rc = MD_OK;
    int fd = -1;
    int *ord = NULL, *scratch = NULL;
    md_safetensors *st = NULL;
    *out = NULL;
    if (err && errlen)
        err[0] = 0;

    st = calloc(1, sizeof *st);
    if (!st)
        return md_errf(err, errlen, MD_ERR_NOMEM, "%s: out of memory", path);
    snprintf(st->path, sizeof st->path, "%s", path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = md_errf(err, errlen, errno == ENOENT ? MD_ERR_NOT_FOUND : MD_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = md_errf(err, errlen, MD_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    st->size = (uint64_t)sb.st_size;
    if (st->size < 8) {
        rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: %llu bytes: too short for a safetensors file (truncated?)", path,
                  (unsigned long long)st->size);
        goto out;
    }
    st->map = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        rc = md_errf(err, errlen, MD_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        goto out;
    }
    const uint8_t *m = st->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | m[i];
    if (hlen > st->size - 8) {
        rc = md_errf(err, errlen, MD_ERR_INVALID,
                  "%s: header length %llu runs past the end of the file (%llu bytes; truncated or not safetensors)",
                  path, (unsigned long long)hlen, (unsigned long long)st->size);
        goto out;
    }
    if (hlen > MAX_HEADER) {
        rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: header length %llu is over the 100 MB limit", path,
                  (unsigned long long)hlen);
        goto out;
    }
    if (hlen < 2 || m[8] != '{') {
        rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: header is not a JSON object (not a safetensors file?)", path);
        goto out;
    }
    st->data = m + 8 + hlen;
    st->data_size = st->size - 8 - hlen;
    const char *end = NULL;
    st->root = cJSON_ParseWithLengthOpts((const char *)m + 8, (size_t)hlen, &end, 0);
    if (!st->root || !cJSON_IsObject(st->root)) {
        rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: header is not valid JSON (near byte %lld of %llu)", path,
                  end ? (long long)(end - (const char *)m - 8) : -1LL, (unsigned long long)hlen);
        goto out;
    }
    /* Only padding may follow the object. */
    for (const char *c = end; c && c < (const char *)m + 8 + hlen; c++)
        if (*c != ' ' && *c != '\n' && *c != '\r' && *c != '\t' && *c != 0) {
            rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: trailing bytes after the header's JSON object", path);
            goto out;
        }

    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, st->root) if (strcmp(e->string, "__metadata__") != 0) n++;
    st->t = calloc((size_t)n + 1, sizeof *st->t);
    st->by_name = calloc((size_t)n + 1, sizeof *st->by_name);
    ord = calloc((size_t)n + 1, sizeof *ord);
    scratch = calloc((size_t)n + 1, sizeof *scratch);
    if (!st->t || !st->by_name || !ord || !scratch) {
        rc = md_errf(err, errlen, MD_ERR_NOMEM, "%s: out of memory for %d tensors", path, n);
        goto out;
    }
    cJSON_ArrayForEach(e, st->root)
    {
        if (strcmp(e->string, "__metadata__") == 0) {
            const cJSON *kv;
            if (!cJSON_IsObject(e)) {
                rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: \"__metadata__\" is not an object", path);
                goto out;
            }
            cJSON_ArrayForEach(kv, e) if (!cJSON_IsString(kv))
            {
                rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: \"__metadata__\" value of '%s' is not a string", path,
                          kv->string);
                goto out;
            }
            continue;
        }
        if ((rc = parse_tensor(st, e, &st->t[st->n], err, errlen)) != MD_OK)
            goto out;
        st->by_name[st->n] = st->n;
        st->n++;
    }

    /* Overlaps: sort by begin offset; each non-empty tensor must start at or after the previous
     * non-empty one's end. */
    for (int i = 0; i < st->n; i++)
        ord[i] = i;
    sort_idx(ord, scratch, st->n, cmp_offset, st->t);
    const md_st_tensor *prev = NULL;
    for (int i = 0; i < st->n && rc == MD_OK; i++) {
        const md_st_tensor *t = &st->t[ord[i]];
        if (!t->nbytes)
            continue;
        if (prev && t->offset < prev->offset + prev->nbytes)
            rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: tensors '%s' and '%s' overlap in the data area", path,
                      prev->name, t->name);
        prev = t;
    }
    /* Names are unique. */
    sort_idx(st->by_name, scratch, st->n, cmp_name, st->t);
    for (int i = 1; i < st->n && rc == MD_OK; i++)
        if (strcmp(st->t[st->by_name[i]].name, st->t[st->by_name[i - 1]].name) == 0)
            rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s' appears twice in the header", path,
                      st->t[st->by_name[i]].name);
    if (rc != MD_OK)
        goto out;

    *out = st;
    st = NULL;
out:
    if (fd >= 0)
        close(fd);
    free(ord);
    free(scratch);
    md_safetensors_free(st);
    return rc;
}

int md_safetensors_count(const md_safetensors *st) { return st->n; }

const md_st_tensor *md_safetensors_at(const md_safetensors *st, int i)
{
    return i >= 0 && i < st->n ? &st->t[i] : NULL;
}

const md_st_tensor *md_safetensors_find(const md_safetensors *st, const char *name)
{
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const md_st_tensor *t = &st->t[st->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *md_safetensors_meta(const md_safetensors *st, const char *key)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(st->root, "__metadata__");
    const cJSON *v = m ? cJSON_GetObjectItemCaseSensitive(m, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

uint64_t md_safetensors_file_size(const md_safetensors *st) { return st->size; }

md_status md_st_to_f32(const md_st_tensor *t, float *dst)
{
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case MD_DT_F32:
        memcpy(dst, p, t->numel * 4);
        return MD_OK;
    case MD_DT_F16:
        for (uint64_t i = 0; i < t->numel; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            dst[i] = md_f16_to_f32(h);
        }
        return MD_OK;
    case MD_DT_BF16:
        for (uint64_t i = 0; i < t->numel; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            dst[i] = md_bf16_to_f32(h);
        }
        return MD_OK;
    default:
        return MD_ERR_UNSUPPORTED;
    }
}

uint64_t md_st_count_nonfinite(const float *v, uint64_t n, uint64_t *first)
{
    /* Exponent bits all ones is Inf or NaN; integer compares vectorise, isfinite() calls may not. */
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof u);
        bad += (u & 0x7f800000u) == 0x7f800000u;
    }
    if (first) {
        uint64_t i = 0;
        for (; bad && i < n; i++) {
            uint32_t u;
            memcpy(&u, &v[i], sizeof u);
            if ((u & 0x7f800000u) == 0x7f800000u)
                break;
        }
        *first = bad ? i : n;
    }
    return bad;
}

md_status md_safetensors_write(const char *path, const md_st_write *ts, int n, const char *const *meta_kv,
                               int n_meta, char *err, size_t errlen)
{
    md_status rc = MD_OK;
    cJSON *root = cJSON_CreateObject(), *meta = NULL;
    char *hdr = NULL, tmp[4096];
    FILE *f = NULL;
    uint64_t off = 0;
    if (!root)
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    if (n_meta > 0) {
        meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; meta && i < n_meta; i++)
            if (!cJSON_AddStringToObject(meta, meta_kv[2 * i], meta_kv[2 * i + 1]))
                meta = NULL;
        if (!meta) {
            rc = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    for (int i = 0; i < n; i++) {
        const md_st_write *w = &ts[i];
        uint64_t numel = 1;
        if (!w->name || !w->name[0] || strcmp(w->name, "__metadata__") == 0 ||
            cJSON_GetObjectItemCaseSensitive(root, w->name)) {
            rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor %d: empty, reserved or duplicate name", path, i);
            goto out;
        }
        if (w->ndim < 0 || w->ndim > MD_ST_MAX_DIMS || w->dtype < 0 || w->dtype >= MD_DT_COUNT) {
            rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': bad dtype or ndim", path, w->name);
            goto out;
        }
        cJSON *e = cJSON_AddObjectToObject(root, w->name), *sh = NULL, *of = NULL;
        if (e && cJSON_AddStringToObject(e, "dtype", md_dtype_name(w->dtype)))
            sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; sh && d < w->ndim; d++) {
            if (w->shape[d] < 0) {
                rc = md_errf(err, errlen, MD_ERR_INVALID, "%s: tensor '%s': negative dimension", path, w->name);
                goto out;
            }
            numel *= (uint64_t)w->shape[d];
            cJSON *num = cJSON_CreateNumber((double)w->shape[d]);
            if (!num || !cJSON_AddItemToArray(sh, num))
                sh = NULL;
        }
        uint64_t nb = numel * md_dtype_size(w->dtype);
        if (sh)
            of = cJSON_AddArrayToObject(e, "data_offsets");
        if (of) {
            cJSON *a = cJSON_CreateNumber((double)off), *b = cJSON_CreateNumber((double)(off + nb));
            if (!a || !b || !cJSON_AddItemToArray(of, a) || !cJSON_AddItemToArray(of, b))
                of = NULL;
        }
        if (!of) {
            rc = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
            goto out;
        }
        off += nb;
    }
    hdr = cJSON_PrintUnformatted(root);
    if (!hdr) {
        rc = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) {
        rc = md_errf(err, errlen, MD_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(hdr, 1, hl, f) == hl;
    for (size_t i = hl; ok && i < padded; i++)
        ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < ts[i].ndim; d++)
            numel *= (uint64_t)ts[i].shape[d];
        size_t nb = (size_t)(numel * md_dtype_size(ts[i].dtype));
        ok = nb == 0 || fwrite(ts[i].data, 1, nb, f) == nb;
    }
    int werr = ok ? 0 : errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        werr = errno;
    }
    f = NULL;
    if (!ok || rename(tmp, path) != 0) {
        if (ok)
            werr = errno;
        unlink(tmp);
        rc = md_errf(err, errlen, werr == ENOSPC ? MD_ERR_NO_SPACE : MD_ERR_IO, "%s: write: %s", path,
                  strerror(werr));
        goto out;
    }
out:
    if (f)
        fclose(f);
    free(hdr);
    cJSON_Delete(root);
    return rc;
}
