/* test_safetensors.c - unit tests of the safetensors reader and writer: round trips in every
 * float dtype, half/bfloat16 conversions, and one failure-injection case per header check
 * (each must be a clear MD_ERR_INVALID with a message, never a crash; run under ASan by `make asan`). */
#define _XOPEN_SOURCE 700
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../engine/safetensors.h"
#include "harness.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"

static char g_tmp[PATH_MAX];

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_tmp, name); }

/* Writes an 8-byte little-endian LEN (the header length field, which may lie), then HDR, then
 * NDATA bytes of 0x3f. */
static void write_raw(const char *path, uint64_t len, const char *hdr, size_t ndata)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    for (int i = 0; i < 8; i++)
        fputc((int)((len >> (8 * i)) & 0xff), f);
    fputs(hdr, f);
    for (size_t i = 0; i < ndata; i++)
        fputc(0x3f, f);
    fclose(f);
}

/* Opens a file made of HDR (its true length in the length field) and NDATA data bytes; expects
 * MD_ERR_INVALID and a message containing NEEDLE. */
static int expect_invalid(const char *hdr, size_t ndata, const char *needle)
{
    char p[PATH_MAX + 32], err[512] = "";
    path_in(p, sizeof p, "bad.safetensors");
    write_raw(p, strlen(hdr), hdr, ndata);
    md_safetensors *st = NULL;
    md_status rc = md_safetensors_open(p, &st, err, sizeof err);
    md_safetensors_free(st);
    int ok = rc == MD_ERR_INVALID && st == NULL && strstr(err, needle) != NULL;
    if (!ok)
        fprintf(stderr, "  header %s -> %s: %s (wanted '%s')\n", hdr, md_status_str(rc), err, needle);
    return ok;
}

static void test_round_trip(void)
{
    char p[PATH_MAX + 32], err[256] = "";
    path_in(p, sizeof p, "rt.safetensors");
    float a[6] = {1.5f, -2.25f, 0.0f, 3.0e-5f, 65504.0f, -1e-8f};
    uint16_t h[6], b[6];
    for (int i = 0; i < 6; i++) {
        h[i] = md_f32_to_f16(a[i]);
        b[i] = md_f32_to_bf16(a[i]);
    }
    int64_t ids[3] = {0, 1, 76};
    float scalar = 2.6592f;
    md_st_write w[] = {
        {"w.f32", MD_DT_F32, 2, {2, 3}, a},
        {"w.f16", MD_DT_F16, 2, {3, 2}, h},
        {"w.bf16", MD_DT_BF16, 1, {6}, b},
        {"position_ids", MD_DT_I64, 2, {1, 3}, ids},
        {"logit_scale", MD_DT_F32, 0, {0}, &scalar},
        {"empty", MD_DT_F32, 2, {0, 4}, NULL},
    };
    const char *meta[] = {"format", "pt"};
    CHECK_EQ_INT(md_safetensors_write(p, w, 6, meta, 1, err, sizeof err), MD_OK);
    md_safetensors *st = NULL;
    CHECK_EQ_INT(md_safetensors_open(p, &st, err, sizeof err), MD_OK);
    if (!st) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_EQ_INT(md_safetensors_count(st), 6);
    CHECK_STR(md_safetensors_meta(st, "format"), "pt");
    CHECK(md_safetensors_meta(st, "nope") == NULL);
    CHECK(md_safetensors_find(st, "nope") == NULL);
    CHECK_STR(md_safetensors_at(st, 0)->name, "w.f32"); /* header order is kept */
    float out[6];
    const md_st_tensor *t = md_safetensors_find(st, "w.f32");
    CHECK(t && t->dtype == MD_DT_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6);
    CHECK(t && md_st_to_f32(t, out) == MD_OK && memcmp(out, a, sizeof a) == 0);
    t = md_safetensors_find(st, "w.f16");
    CHECK(t && t->nbytes == 12 && md_st_to_f32(t, out) == MD_OK);
    for (int i = 0; t && i < 6; i++)
        CHECK(fabsf(out[i] - a[i]) <= fabsf(a[i]) * 1e-3f + 6e-8f);
    t = md_safetensors_find(st, "w.bf16");
    CHECK(t && md_st_to_f32(t, out) == MD_OK);
    for (int i = 0; t && i < 6; i++)
        CHECK(fabsf(out[i] - a[i]) <= fabsf(a[i]) * 8e-3f);
    t = md_safetensors_find(st, "position_ids");
    CHECK(t && t->dtype == MD_DT_I64 && md_st_to_f32(t, out) == MD_ERR_UNSUPPORTED);
    t = md_safetensors_find(st, "logit_scale");
    CHECK(t && t->ndim == 0 && t->numel == 1 && md_st_to_f32(t, out) == MD_OK && out[0] == scalar);
    t = md_safetensors_find(st, "empty");
    CHECK(t && t->numel == 0 && t->nbytes == 0);
    /* The header is padded to a multiple of 8, as the reference writer does. */
    CHECK_EQ_INT((md_safetensors_file_size(st) - 8 - (6 * 4 + 12 + 12 + 24 + 4)) % 8, 0);
    md_safetensors_free(st);
    md_safetensors_free(NULL);
}

static void test_half_conversions(void)
{
    CHECK_EQ_INT(md_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(md_f32_to_f16(-2.0f), 0xc000);
    CHECK_EQ_INT(md_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(md_f32_to_f16(65520.0f), 0x7c00); /* rounds up to Inf */
    CHECK_EQ_INT(md_f32_to_f16(1e-8f), 0x0000);
    CHECK_EQ_INT(md_f32_to_f16(5.9604645e-8f), 0x0001); /* smallest subnormal */
    CHECK_EQ_INT(md_f32_to_f16(1.0009766f), 0x3c01);
    CHECK_EQ_INT(md_f32_to_f16(1.00048828125f), 0x3c00); /* tie: to even */
    CHECK_EQ_INT(md_f32_to_f16(1.00146484375f), 0x3c02); /* tie: to even */
    CHECK(md_f16_to_f32(0x0001) == 5.9604645e-8f);
    CHECK(isinf(md_f16_to_f32(0xfc00)) && md_f16_to_f32(0xfc00) < 0);
    CHECK(isnan(md_f16_to_f32(0x7e00)));
    CHECK(isnan(md_f16_to_f32(md_f32_to_f16(NAN))));
    /* Every finite half survives half -> float -> half. */
    int bad = 0;
    for (uint32_t x = 0; x < 0x10000; x++) {
        if ((x & 0x7c00) == 0x7c00 && (x & 0x3ff))
            continue;
        if (md_f32_to_f16(md_f16_to_f32((uint16_t)x)) != x)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    bad = 0;
    for (uint32_t x = 0; x < 0x10000; x++) {
        if ((x & 0x7f80) == 0x7f80 && (x & 0x7f))
            continue;
        if (md_f32_to_bf16(md_bf16_to_f32((uint16_t)x)) != x)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(md_f32_to_bf16(1.00390625f), 0x3f80); /* tie: to even */
    CHECK_EQ_INT(md_f32_to_bf16(1.01171875f), 0x3f82);
}

static void test_corrupt_headers(void)
{
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    char p[PATH_MAX + 32], err[512];
    md_safetensors *st = NULL;
    path_in(p, sizeof p, "bad.safetensors");
    /* The control case opens. */
    write_raw(p, strlen(ok), ok, 8);
    CHECK_EQ_INT(md_safetensors_open(p, &st, err, sizeof err), MD_OK);
    md_safetensors_free(st);
    st = NULL;

    /* Missing file, too short, header length beyond the file, and a huge length. */
    path_in(p, sizeof p, "missing.safetensors");
    CHECK_EQ_INT(md_safetensors_open(p, &st, err, sizeof err), MD_ERR_NOT_FOUND);
    path_in(p, sizeof p, "short.safetensors");
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite("\x10\0\0", 1, 3, f);
        fclose(f);
    }
    CHECK_EQ_INT(md_safetensors_open(p, &st, err, sizeof err), MD_ERR_INVALID);
    CHECK(strstr(err, "too short") != NULL);
    path_in(p, sizeof p, "bad.safetensors");
    write_raw(p, strlen(ok) + 100, ok, 8);
    CHECK_EQ_INT(md_safetensors_open(p, &st, err, sizeof err), MD_ERR_INVALID);
    CHECK(strstr(err, "runs past the end") != NULL);
    write_raw(p, UINT64_MAX, ok, 8);
    CHECK_EQ_INT(md_safetensors_open(p, &st, err, sizeof err), MD_ERR_INVALID);
    CHECK(strstr(err, "runs past the end") != NULL);
    CHECK(st == NULL);

    /* Header contents. */
    CHECK(expect_invalid("[1,2,3]", 0, "not a JSON object"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",", 0, "not valid JSON"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}xx", 8, "trailing"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F99\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":3,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "shape"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0]"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "shape[0]"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                         "dimensions"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]}}",
                         8, "overflows"));
    /* Shape and offsets disagree; offsets outside the data (a truncated file); reversed; overlap. */
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 5, "run past the data"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "end 0 < begin 8"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "data_offsets"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,1e300]}}", 8, "data_offsets"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                         12, "overlap"));
    CHECK(expect_invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                         16, "twice"));
    CHECK(expect_invalid("{\"__metadata__\":{\"k\":1}}", 0, "not a string"));
    CHECK(expect_invalid("{\"a\":7}", 0, "not an object"));
    CHECK(expect_invalid("{\"\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "empty name"));

    /* A real file cut short: the writer's output minus its last bytes. */
    float a[16] = {0};
    md_st_write w[] = {{"x", MD_DT_F32, 2, {4, 4}, a}};
    path_in(p, sizeof p, "cut.safetensors");
    CHECK_EQ_INT(md_safetensors_write(p, w, 1, NULL, 0, err, sizeof err), MD_OK);
    CHECK_EQ_INT(truncate(p, 8 + 64 + 40), 0);
    CHECK_EQ_INT(md_safetensors_open(p, &st, err, sizeof err), MD_ERR_INVALID);
    CHECK(strstr(err, "cut.safetensors") != NULL);
    fprintf(stderr, "  truncated file: %s\n", err);
}

/* md_st_count_nonfinite: NaN (quiet, signalling, negative), +-Inf counted; the largest finite
 * values, subnormals and -0 not; the first index reported; N when there is none. */
static void test_count_nonfinite(void)
{
    static const uint32_t bits[] = {0x3f800000u, 0x7f7fffffu, 0xff7fffffu, 0x00000001u, 0x80000000u,
                                    0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7f800000u, 0xff800000u};
    float v[10];
    memcpy(v, bits, sizeof v);
    uint64_t first = 99;
    CHECK_EQ_INT(md_st_count_nonfinite(v, 10, &first), 5);
    CHECK_EQ_INT(first, 5);
    CHECK_EQ_INT(md_st_count_nonfinite(v, 5, &first), 0);
    CHECK_EQ_INT(first, 5);
    CHECK_EQ_INT(md_st_count_nonfinite(v + 9, 1, NULL), 1);
    CHECK_EQ_INT(md_st_count_nonfinite(v, 0, &first), 0);
    CHECK_EQ_INT(first, 0);
    /* F16 and BF16 infinities stay infinite after conversion, so the loaders see them. */
    md_st_write w[2] = {{"h", MD_DT_F16, 1, {3}, (const uint16_t[]){0x3c00, 0x7c00, 0xfe00}},
                        {"b", MD_DT_BF16, 1, {2}, (const uint16_t[]){0xff80, 0x3f80}}};
    char p[PATH_MAX + 32], err[256];
    path_in(p, sizeof p, "nonfinite.safetensors");
    CHECK_EQ_INT(md_safetensors_write(p, w, 2, NULL, 0, err, sizeof err), MD_OK);
    md_safetensors *st = NULL;
    CHECK_EQ_INT(md_safetensors_open(p, &st, err, sizeof err), MD_OK);
    if (!st)
        return;
    float f[3];
    CHECK_EQ_INT(md_st_to_f32(md_safetensors_find(st, "h"), f), MD_OK);
    CHECK_EQ_INT(md_st_count_nonfinite(f, 3, &first), 2);
    CHECK_EQ_INT(first, 1);
    CHECK_EQ_INT(md_st_to_f32(md_safetensors_find(st, "b"), f), MD_OK);
    CHECK_EQ_INT(md_st_count_nonfinite(f, 2, &first), 1);
    CHECK_EQ_INT(first, 0);
    md_safetensors_free(st);
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/md_st_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_round_trip);
    RUN(test_half_conversions);
    RUN(test_corrupt_headers);
    RUN(test_count_nonfinite);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_tmp);
    return md_test_summary("test_safetensors");
}
