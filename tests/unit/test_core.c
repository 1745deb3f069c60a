/* test_core.c - unit tests of the engine's core: sha256, the settings table,
 * SQLite migrations and failure modes, and the library (uploads, dedupe,
 * delete, indexing server paths under allowed roots, job recovery). */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sqlite3.h>
#include <unistd.h>

#include "../../base/log.h"
#include "../../engine/momentd.h"
#include "../../engine/sha256.h"
#include "../../engine/store.h"
#include "../../engine/temporal.h"
#include "../../video/video.h"
#include "../../server/config.h"
#include "harness.h"
#include "testutil.h"

extern const char md_openapi_json[]; /* the embedded API description (build/embedded.c) */

/* Test paths live under a short mkdtemp directory; GCC cannot know that. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

static char g_tmp[PATH_MAX];


static void sha_hex(const char *s, char out[65])
{
    md_sha256 h;
    md_sha256_init(&h);
    md_sha256_update(&h, s, strlen(s));
    md_sha256_final_hex(&h, out);
}

static void test_sha256_vectors(void)
{
    char hex[65];
    /* FIPS 180-4 examples and the well-known empty-string digest. */
    sha_hex("", hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha_hex("abc", hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", hex);
    CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* One million 'a', fed in uneven pieces to exercise the buffering. */
    md_sha256 h;
    md_sha256_init(&h);
    char a[1000];
    memset(a, 'a', sizeof a);
    size_t fed = 0, step = 1;
    while (fed < 1000000) {
        size_t n = step < 1000000 - fed ? step : 1000000 - fed;
        n = n > sizeof a ? sizeof a : n;
        md_sha256_update(&h, a, n);
        fed += n;
        step = step * 7 % 997 + 1;
    }
    md_sha256_final_hex(&h, hex);
    CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_sha256_file(void)
{
    char p[PATH_MAX + 16], hex[65];
    snprintf(p, sizeof p, "%s/abc.bin", g_tmp);
    tu_write_file(p, "abc", 3);
    long long size = 0;
    CHECK_EQ_INT(md_sha256_file(p, hex, &size), MD_OK);
    CHECK_EQ_INT(size, 3);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    snprintf(p, sizeof p, "%s/missing.bin", g_tmp);
    CHECK_EQ_INT(md_sha256_file(p, hex, &size), MD_ERR_NOT_FOUND);
}

static md_status load_cfg(md_config *c, char **argv, int argc, char *err)
{
    return md_config_load(c, argc, argv, 0, err, 512);
}

static void test_config_defaults_and_precedence(void)
{
    md_config c;
    char err[512];
    unsetenv("MOMENTD_PORT");
    unsetenv("MOMENTD_CONFIG");
    CHECK_EQ_INT(load_cfg(&c, NULL, 0, err), MD_OK);
    CHECK_STR(c.bind, "127.0.0.1");
    CHECK_EQ_INT(c.port, 8080);
    CHECK_STR(c.data_dir, "./data");
    CHECK_EQ_INT(c.max_upload, 4LL << 30);
    CHECK_EQ_INT(c.n_allowed_roots, 0);
    CHECK_STR(c.api_key, "");
    md_config_free(&c);

    /* file < flags < environment */
    char file[PATH_MAX + 16];
    snprintf(file, sizeof file, "%s/m.conf", g_tmp);
    const char *text = "# comment\nport = 9001\nworkers=3\nmax_upload = 512M  # trailing comment\n"
                       "api_key = \"s3cret\"\nallowed_roots = /tmp, /\n";
    tu_write_file(file, text, strlen(text));
    char *argv[] = {"--config", file, "--port", "9002", "--bind=::1"};
    CHECK_EQ_INT(load_cfg(&c, argv, 5, err), MD_OK);
    CHECK_EQ_INT(c.port, 9002);
    CHECK_EQ_INT(c.workers, 3);
    CHECK_EQ_INT(c.max_upload, 512LL << 20);
    CHECK_STR(c.api_key, "s3cret");
    CHECK_STR(c.bind, "::1");
    CHECK_EQ_INT(c.n_allowed_roots, 2);
    md_config_free(&c);

    setenv("MOMENTD_PORT", "9003", 1);
    CHECK_EQ_INT(load_cfg(&c, argv, 5, err), MD_OK);
    CHECK_EQ_INT(c.port, 9003);
    md_config_free(&c);
    unsetenv("MOMENTD_PORT");

    char *dashes[] = {"--max-upload", "1K", "--data-dir", "/tmp/x"};
    CHECK_EQ_INT(load_cfg(&c, dashes, 4, err), MD_OK);
    CHECK_EQ_INT(c.max_upload, 1024);
    CHECK_STR(c.data_dir, "/tmp/x");
    md_config_free(&c);
}

/* Each bad value fails and the message names the setting. */
static void expect_bad(char **argv, int argc, const char *names)
{
    md_config c;
    char err[512] = "";
    md_status st = load_cfg(&c, argv, argc, err);
    CHECK_EQ_INT(st, MD_ERR_INVALID);
    if (!strstr(err, names)) {
        fprintf(stderr, "  message '%s' does not name '%s'\n", err, names);
        CHECK(0);
    }
    md_config_free(&c);
}

static void test_config_errors(void)
{
    char *a1[] = {"--port", "70000"};
    expect_bad(a1, 2, "'port'");
    char *a2[] = {"--port", "80x"};
    expect_bad(a2, 2, "'port'");
    char *a3[] = {"--workers", "0"};
    expect_bad(a3, 2, "'workers'");
    char *a4[] = {"--bind", "localhost:80"};
    expect_bad(a4, 2, "'bind'");
    char *a5[] = {"--max-upload", "12Q"};
    expect_bad(a5, 2, "'max_upload'");
    char *a6[] = {"--allowed-roots", "relative/dir"};
    expect_bad(a6, 2, "'allowed_roots'");
    char *a7[] = {"--allowed-roots", "/does/not/exist"};
    expect_bad(a7, 2, "'allowed_roots'");
    char *a8[] = {"--no-such-thing", "1"};
    expect_bad(a8, 2, "--no-such-thing");
    char *a9[] = {"--port"};
    expect_bad(a9, 1, "'port'");
    char *a10[] = {"--device", "tpu"};
    expect_bad(a10, 2, "'device'");
    char *a11[] = {"--cors-origins", "example.com"};
    expect_bad(a11, 2, "'cors_origins'");
    char *a12[] = {"--model-dir", "/does/not/exist"};
    expect_bad(a12, 2, "'model_dir'");
    char file[PATH_MAX + 16];
    snprintf(file, sizeof file, "%s/bad.conf", g_tmp);
    tu_write_file(file, "port = 1\nfrobnicate = 2\n", 24);
    char *a13[] = {"--config", file};
    expect_bad(a13, 2, "frobnicate");
    setenv("MOMENTD_WORKERS", "many", 1);
    expect_bad(NULL, 0, "MOMENTD_WORKERS");
    unsetenv("MOMENTD_WORKERS");
}

/* sample_fps is a double row: numbers in range pass, anything else names the setting. */
static void test_config_double_rows(void)
{
    md_config c;
    char err[512];
    CHECK_EQ_INT(load_cfg(&c, NULL, 0, err), MD_OK);
    CHECK(c.sample_fps == 1.0);
    md_config_free(&c);
    char *good[] = {"--sample-fps", "0.5"};
    CHECK_EQ_INT(load_cfg(&c, good, 2, err), MD_OK);
    CHECK(c.sample_fps == 0.5);
    md_config_free(&c);
    char lo[32], hi[32];
    snprintf(lo, sizeof lo, "%.17g", MD_SAMPLE_FPS_MIN);
    snprintf(hi, sizeof hi, "%.17g", MD_SAMPLE_FPS_MAX);
    char *edge_lo[] = {"--sample-fps", lo}, *edge_hi[] = {"--sample-fps", hi};
    CHECK_EQ_INT(load_cfg(&c, edge_lo, 2, err), MD_OK);
    CHECK(c.sample_fps == MD_SAMPLE_FPS_MIN);
    md_config_free(&c);
    CHECK_EQ_INT(load_cfg(&c, edge_hi, 2, err), MD_OK);
    CHECK(c.sample_fps == MD_SAMPLE_FPS_MAX);
    md_config_free(&c);
    const char *bad[] = {"abc", "", "1x", "0", "0.009", "30.5", "-1", "nan", "inf", "1e400", "-1e400"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *a[] = {"--sample-fps", (char *)bad[i]};
        expect_bad(a, 2, "'sample_fps'");
    }
    /* The range is printed from the row: the message says what is allowed. */
    char *a[] = {"--sample-fps", "31"};
    CHECK_EQ_INT(load_cfg(&c, a, 2, err), MD_ERR_INVALID);
    CHECK(strstr(err, "[0.01, 30]") != NULL);
    md_config_free(&c);
    setenv("MOMENTD_SAMPLE_FPS", "2.5", 1);
    CHECK_EQ_INT(load_cfg(&c, NULL, 0, err), MD_OK);
    CHECK(c.sample_fps == 2.5);
    md_config_free(&c);
    setenv("MOMENTD_SAMPLE_FPS", "NaN", 1);
    expect_bad(NULL, 0, "MOMENTD_SAMPLE_FPS");
    unsetenv("MOMENTD_SAMPLE_FPS");
}

/* The config rows take their ranges from momentd.h, and the cross-field check runs. */
static void test_config_limits_and_checks(void)
{
    md_config c;
    char err[512], v[32];
    snprintf(v, sizeof v, "%d", MD_WORKERS_MAX);
    char *w_ok[] = {"--workers", v};
    CHECK_EQ_INT(load_cfg(&c, w_ok, 2, err), MD_OK);
    CHECK_EQ_INT(c.workers, MD_WORKERS_MAX);
    md_config_free(&c);
    char v1[32];
    snprintf(v1, sizeof v1, "%d", MD_WORKERS_MAX + 1);
    char *w_bad[] = {"--workers", v1};
    expect_bad(w_bad, 2, "'workers'");
    snprintf(v, sizeof v, "%d", MD_WINDOW_FRAMES_MAX);
    char *win_ok[] = {"--window-frames", v, "--segment-frames", "4"};
    CHECK_EQ_INT(load_cfg(&c, win_ok, 4, err), MD_OK);
    CHECK_EQ_INT(c.window_frames, MD_WINDOW_FRAMES_MAX);
    md_config_free(&c);
    snprintf(v1, sizeof v1, "%d", MD_WINDOW_FRAMES_MAX + 4);
    char *win_bad[] = {"--window-frames", v1};
    expect_bad(win_bad, 2, "'window_frames'");
    snprintf(v1, sizeof v1, "%d", MD_SEGMENT_FRAMES_MAX + 1);
    char *seg_bad[] = {"--segment-frames", v1};
    expect_bad(seg_bad, 2, "'segment_frames'");
    snprintf(v1, sizeof v1, "%d", MD_JOB_RETRIES_MAX + 1);
    char *jr_bad[] = {"--job-retries", v1};
    expect_bad(jr_bad, 2, "'job_retries'");

    /* window_frames must be a multiple of segment_frames, whichever source set which. */
    char *mult_ok[] = {"--segment-frames", "8", "--window-frames", "24"};
    CHECK_EQ_INT(load_cfg(&c, mult_ok, 4, err), MD_OK);
    md_config_free(&c);
    char *mult_bad[] = {"--segment-frames", "8", "--window-frames", "20"};
    expect_bad(mult_bad, 4, "'window_frames'");
    CHECK_EQ_INT(load_cfg(&c, mult_bad, 4, err), MD_ERR_INVALID);
    CHECK(strstr(err, "multiple of segment_frames") != NULL);
    md_config_free(&c);
    setenv("MOMENTD_SEGMENT_FRAMES", "5", 1); /* the default window (32) is not a multiple of 5 */
    expect_bad(NULL, 0, "'window_frames'");
    unsetenv("MOMENTD_SEGMENT_FRAMES");
}

/* An md_search_query that passes, for the boundary tests to spoil one field at a time. */
static md_search_query good_query(void)
{
    md_search_query q = {.text = "a dog", .k = 10, .offset = 0, .min_score = -1};
    return q;
}

/* ST is MD_ERR_INVALID and E's message holds WANT1 and WANT2 (either may be NULL). */
static void expect_invalid(md_status st, const md_errbuf *e, const char *want1, const char *want2)
{
    CHECK_EQ_INT(st, MD_ERR_INVALID);
    const char *w[] = {want1, want2};
    for (int i = 0; i < 2; i++)
        if (w[i] && !strstr(e->msg, w[i])) {
            fprintf(stderr, "  message '%s' does not hold '%s'\n", e->msg, w[i]);
            CHECK(0);
        }
}

static void test_search_query_check(void)
{
    md_errbuf e;
    md_search_query q = good_query();
    CHECK_EQ_INT(md_search_query_check(&q, &e), MD_OK);
    const int ks[] = {MD_SEARCH_K_MIN - 1, MD_SEARCH_K_MIN, MD_SEARCH_K_MAX, MD_SEARCH_K_MAX + 1, -5, 1 << 30};
    const int k_ok[] = {0, 1, 1, 0, 0, 0};
    CHECK_EQ_INT(MD_SEARCH_K_MIN, 1);
    CHECK_EQ_INT(MD_SEARCH_K_MAX, 100);
    for (int i = 0; i < 6; i++) {
        q = good_query();
        q.k = ks[i];
        md_status st = md_search_query_check(&q, &e);
        if (k_ok[i])
            CHECK_EQ_INT(st, MD_OK);
        else
            expect_invalid(st, &e, "'k'", "1..100");
    }
    const int offs[] = {-1, 0, MD_SEARCH_OFFSET_MAX, MD_SEARCH_OFFSET_MAX + 1};
    for (int i = 0; i < 4; i++) {
        q = good_query();
        q.offset = offs[i];
        md_status st = md_search_query_check(&q, &e);
        if (i == 1 || i == 2)
            CHECK_EQ_INT(st, MD_OK);
        else
            expect_invalid(st, &e, "'offset'", "0..10000");
    }
    const double scores[] = {-1, 1, 0.25, -1.0001, 1.0001, NAN, INFINITY};
    for (int i = 0; i < 7; i++) {
        q = good_query();
        q.min_score = scores[i];
        md_status st = md_search_query_check(&q, &e);
        if (i < 3)
            CHECK_EQ_INT(st, MD_OK);
        else
            expect_invalid(st, &e, "'min_score'", NULL);
    }
    const double ts[] = {0, 5.5, MD_SEARCH_T_MAX, -0.001, MD_SEARCH_T_MAX * 2, NAN, -INFINITY};
    for (int i = 0; i < 7; i++) {
        q = good_query();
        q.text = NULL;
        q.video_id = 3;
        q.t_s = ts[i];
        md_status st = md_search_query_check(&q, &e);
        if (i < 3)
            CHECK_EQ_INT(st, MD_OK);
        else
            expect_invalid(st, &e, "'t'", NULL);
    }
    q = good_query();
    q.video_id = -1;
    q.text = NULL;
    expect_invalid(md_search_query_check(&q, &e), &e, "'video_id'", NULL);

    /* The query text: MD_MAX_QUERY_BYTES passes, one more byte does not, blank is empty. */
    char text[MD_MAX_QUERY_BYTES + 2];
    memset(text, 'a', MD_MAX_QUERY_BYTES + 1);
    text[MD_MAX_QUERY_BYTES + 1] = 0;
    q = good_query();
    q.text = text;
    expect_invalid(md_search_query_check(&q, &e), &e, "1001 bytes", "1000");
    text[MD_MAX_QUERY_BYTES] = 0;
    CHECK_EQ_INT(md_search_query_check(&q, &e), MD_OK);
    q.text = " \t\n";
    expect_invalid(md_search_query_check(&q, &e), &e, "empty", NULL);
    q.text = "";
    expect_invalid(md_search_query_check(&q, &e), &e, "empty", NULL);

    /* Exactly one query. */
    q = good_query();
    q.text = NULL;
    expect_invalid(md_search_query_check(&q, &e), &e, "give a query", NULL);
    q = good_query();
    q.image_path = "/tmp/x.jpg";
    expect_invalid(md_search_query_check(&q, &e), &e, "exactly one", NULL);

    /* The filter: up to MD_SEARCH_MAX_VIDEOS ids, each >= 1. */
    static long long ids[MD_SEARCH_MAX_VIDEOS + 1];
    for (int i = 0; i <= MD_SEARCH_MAX_VIDEOS; i++)
        ids[i] = i + 1;
    q = good_query();
    q.videos = ids;
    q.n_videos = MD_SEARCH_MAX_VIDEOS;
    CHECK_EQ_INT(md_search_query_check(&q, &e), MD_OK);
    q.n_videos = MD_SEARCH_MAX_VIDEOS + 1;
    expect_invalid(md_search_query_check(&q, &e), &e, "'video_ids'", "1000");
    q.n_videos = 2;
    ids[1] = 0;
    expect_invalid(md_search_query_check(&q, &e), &e, "'video_ids'", NULL);
    ids[1] = 2;
    q.videos = NULL;
    expect_invalid(md_search_query_check(&q, &e), &e, "'video_ids'", NULL);
    CHECK_EQ_INT(md_search_query_check(&q, NULL), MD_ERR_INVALID); /* E may be NULL */
}

static void test_ground_check(void)
{
    md_errbuf e;
    CHECK_EQ_INT(md_ground_check("the car turns left", MD_GROUND_TOP_N_MIN, &e), MD_OK);
    CHECK_EQ_INT(md_ground_check("the car turns left", MD_GROUND_TOP_N_MAX, &e), MD_OK);
    expect_invalid(md_ground_check("x", MD_GROUND_TOP_N_MIN - 1, &e), &e, "'top_n'", "1..100");
    expect_invalid(md_ground_check("x", MD_GROUND_TOP_N_MAX + 1, &e), &e, "'top_n'", "1..100");
    expect_invalid(md_ground_check(NULL, 5, &e), &e, "q", NULL);
    expect_invalid(md_ground_check("  ", 5, &e), &e, "empty", NULL);
    char text[MD_MAX_QUERY_BYTES + 2];
    memset(text, 'b', sizeof text - 1);
    text[sizeof text - 1] = 0;
    expect_invalid(md_ground_check(text, 5, &e), &e, "limit is 1000", NULL);
    text[MD_MAX_QUERY_BYTES] = 0;
    CHECK_EQ_INT(md_ground_check(text, 5, &e), MD_OK);
    /* top_n is checked before the text, so the first error names it. */
    expect_invalid(md_ground_check(NULL, 0, &e), &e, "'top_n'", NULL);
}

static void test_library_params_check(void)
{
    md_errbuf e;
    md_library_params p = md_library_default_params();
    CHECK_EQ_INT(md_library_params_check(&p, &e), MD_OK);
    /* The product ranges lie inside what the decoder and the temporal encoder accept. */
    CHECK(MD_SAMPLE_FPS_MIN > 0 && MD_SAMPLE_FPS_MAX <= MD_VIDEO_FPS_MAX);
    CHECK(MD_WINDOW_FRAMES_MAX <= MD_TEMPORAL_WINDOW_MAX);
    p.sample_fps = MD_SAMPLE_FPS_MIN;
    p.window_frames = MD_WINDOW_FRAMES_MAX;
    p.segment_frames = MD_SEGMENT_FRAMES_MAX;
    p.workers = MD_WORKERS_MAX;
    p.job_retries = MD_JOB_RETRIES_MAX;
    p.max_upload = MD_MAX_UPLOAD_MAX;
    CHECK_EQ_INT(md_library_params_check(&p, &e), MD_OK);
    p.sample_fps = MD_SAMPLE_FPS_MAX;
    p.window_frames = p.segment_frames = MD_WINDOW_FRAMES_MIN;
    p.workers = MD_WORKERS_MIN;
    p.job_retries = 0;
    p.max_upload = MD_MAX_UPLOAD_MIN;
    CHECK_EQ_INT(md_library_params_check(&p, &e), MD_OK);

#define BAD(field, value, name)                                                                            \
    do {                                                                                                    \
        md_library_params b = md_library_default_params();                                                  \
        b.field = value;                                                                                    \
        expect_invalid(md_library_params_check(&b, &e), &e, name, NULL);                                    \
    } while (0)
    BAD(data_dir, NULL, "'data_dir'");
    BAD(data_dir, "", "'data_dir'");
    BAD(workers, 0, "'workers'");
    BAD(workers, MD_WORKERS_MAX + 1, "'workers'");
    BAD(max_upload, 0, "'max_upload'");
    BAD(max_upload, MD_MAX_UPLOAD_MAX + 1, "'max_upload'");
    BAD(job_retries, -1, "'job_retries'");
    BAD(job_retries, MD_JOB_RETRIES_MAX + 1, "'job_retries'");
    BAD(debug_job_delay_ms, -1, "'debug_job_delay_ms'");
    BAD(debug_job_delay_ms, MD_DEBUG_JOB_DELAY_MS_MAX + 1, "'debug_job_delay_ms'");
    BAD(sample_fps, 0, "'sample_fps'");
    BAD(sample_fps, MD_SAMPLE_FPS_MIN / 2, "'sample_fps'");
    BAD(sample_fps, MD_SAMPLE_FPS_MAX + 0.5, "'sample_fps'");
    BAD(sample_fps, NAN, "'sample_fps'");
    BAD(sample_fps, INFINITY, "'sample_fps'");
    BAD(keyframes_only, 2, "'keyframes_only'");
    BAD(std[1], 0, "std");
    BAD(mean[2], NAN, "mean");
    BAD(segment_frames, 0, "'segment_frames'");
    BAD(segment_frames, MD_SEGMENT_FRAMES_MAX + 1, "'segment_frames'");
    BAD(window_frames, 0, "'window_frames'");
    BAD(window_frames, MD_WINDOW_FRAMES_MAX + 1, "'window_frames'");
    BAD(window_frames, 30, "multiple of 'segment_frames'"); /* the default k is 4 */
    BAD(n_allowed_roots, 1, "'allowed_roots'");             /* announced, none given */
#undef BAD
    const char *rel[1] = {"relative/dir"};
    p = md_library_default_params();
    p.allowed_roots = rel;
    p.n_allowed_roots = 1;
    expect_invalid(md_library_params_check(&p, &e), &e, "'allowed_roots'", NULL);
}

/* The API description repeats the request limits for clients: it must say what the check does. */
static void test_openapi_states_the_limits(void)
{
    cJSON *doc = cJSON_Parse(md_openapi_json);
    CHECK(doc != NULL);
    const struct {
        const char *path, *param;
        double min, max;
    } want[] = {
        {"/v1/search", "k", MD_SEARCH_K_MIN, MD_SEARCH_K_MAX},
        {"/v1/search", "offset", 0, MD_SEARCH_OFFSET_MAX},
        {"/v1/search", "min_score", MD_SEARCH_MIN_SCORE_MIN, MD_SEARCH_MIN_SCORE_MAX},
        {"/v1/videos/{id}/ground", "top_n", MD_GROUND_TOP_N_MIN, MD_GROUND_TOP_N_MAX},
    };
    for (size_t i = 0; doc && i < sizeof want / sizeof want[0]; i++) {
        cJSON *op = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "paths"), want[i].path), "get");
        cJSON *prm, *schema = NULL;
        cJSON_ArrayForEach(prm, cJSON_GetObjectItemCaseSensitive(op, "parameters"))
        {
            const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(prm, "name"));
            if (name && strcmp(name, want[i].param) == 0)
                schema = cJSON_GetObjectItemCaseSensitive(prm, "schema");
        }
        cJSON *mn = cJSON_GetObjectItemCaseSensitive(schema, "minimum");
        cJSON *mx = cJSON_GetObjectItemCaseSensitive(schema, "maximum");
        if (!cJSON_IsNumber(mn) || !cJSON_IsNumber(mx) || mn->valuedouble != want[i].min ||
            mx->valuedouble != want[i].max) {
            fprintf(stderr, "  openapi.json: %s '%s' does not say %g..%g\n", want[i].path, want[i].param,
                    want[i].min, want[i].max);
            CHECK(0);
        }
    }
    cJSON_Delete(doc);
}

/* Runs SQL on the database file directly (the test's own connection: SQL stays out of the
 * engine's callers, not out of its tests). */
static int raw_sql(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    char *msg = NULL;
    int rc = sqlite3_open(db, &h);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(h, "PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(h, sql, NULL, NULL, &msg);
    sqlite3_free(msg); /* callers check the code: some expect a refusal */
    sqlite3_close(h);
    return rc;
}

static void test_store_migrations(void)
{
    char db[PATH_MAX + 16], err[512];
    snprintf(db, sizeof db, "%s/m.db", g_tmp);
    md_store *s = NULL;
    CHECK_EQ_INT(md_store_open(db, &s, err, sizeof err), MD_OK);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_EQ_INT(md_store_version(s), md_store_latest_version(s));
    CHECK(md_store_latest_version(s) >= 3);
    md_store_close(s);
    /* Foreign keys are on: a job for a missing video is refused. */
    CHECK(raw_sql(db, "INSERT INTO jobs (video_id, created_at, updated_at) VALUES (999, 0, 0)") == SQLITE_CONSTRAINT);
    /* WAL mode persisted. */
    sqlite3 *h = NULL;
    sqlite3_stmt *q = NULL;
    sqlite3_open(db, &h);
    sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &q, NULL);
    CHECK(sqlite3_step(q) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(q, 0), "wal") == 0);
    sqlite3_finalize(q);
    sqlite3_close(h);
    CHECK_EQ_INT(raw_sql(db, "PRAGMA user_version = 999"), SQLITE_OK);
    /* A database from the future is refused. */
    CHECK_EQ_INT(md_store_open(db, &s, err, sizeof err), MD_ERR_CONFLICT);
    CHECK(strstr(err, "newer") != NULL);
    CHECK(s == NULL);
}

static md_status count_segment(void *ctx, long long video_id, int seq, long long start_ms, long long end_ms,
                               const uint16_t *emb)
{
    long long *n = ctx;
    (void)start_ms;
    (void)end_ms;
    /* The halves come back bit for bit: segment seq of video v holds v*1000 + seq + d. */
    for (int d = 0; d < 4; d++)
        if (emb[d] != (uint16_t)(video_id * 1000 + seq + d))
            return MD_ERR_INTERNAL;
    (*n)++;
    return MD_OK;
}

/* The storage interface end to end on records: videos, jobs, windows, segments, ids. */
static void test_store_records(void)
{
    char db[PATH_MAX + 16], err[512];
    snprintf(db, sizeof db, "%s/rec.db", g_tmp);
    md_store *s = NULL;
    CHECK_EQ_INT(md_store_open(db, &s, err, sizeof err), MD_OK);
    if (!s)
        return;
    char sha[3][65];
    sha_hex("a", sha[0]);
    sha_hex("b", sha[1]);
    sha_hex("c", sha[2]);
    long long va = 0, vb = 0, vc = 0, ja = 0, jb = 0, jc = 0, id = 0;
    md_video_new v = {.sha256 = sha[0], .name = "a.mp4", .path = "/x/a", .source = MD_SOURCE_UPLOAD, .size_bytes = 1};
    CHECK_EQ_INT(md_store_video_insert(s, &v, &va, &ja), MD_OK);
    v.sha256 = sha[1];
    v.name = "b.mp4";
    v.source = MD_SOURCE_PATH;
    CHECK_EQ_INT(md_store_video_insert(s, &v, &vb, &jb), MD_OK);
    CHECK(vb > va && jb > ja);
    /* The same bytes twice: a conflict, and find_sha knows them. */
    CHECK_EQ_INT(md_store_video_insert(s, &v, &id, NULL), MD_ERR_CONFLICT);
    CHECK(strstr(md_store_error(s), "adding a video") != NULL);
    CHECK_EQ_INT(md_store_video_find_sha(s, sha[1], &id), MD_OK);
    CHECK_EQ_INT(id, vb);
    md_video_rec rec;
    CHECK_EQ_INT(md_store_video_get(s, vb, &rec), MD_OK);
    CHECK_STR(rec.name, "b.mp4");
    CHECK(rec.source == MD_SOURCE_PATH && rec.job_id == jb && rec.job_state == MD_JOB_QUEUED);
    CHECK(rec.indexed_at_ms == 0 && !rec.has_tokens);
    /* Ids are never reused: delete the newest video, add another, its ids are larger. */
    md_video_source src;
    char path[256];
    CHECK_EQ_INT(md_store_video_delete(s, vb, &src, path, sizeof path), MD_OK);
    CHECK(src == MD_SOURCE_PATH);
    CHECK_STR(path, "/x/a");
    CHECK_EQ_INT(md_store_video_get(s, vb, &rec), MD_ERR_NOT_FOUND);
    md_job_rec jr;
    CHECK_EQ_INT(md_store_job_get(s, jb, &jr), MD_ERR_NOT_FOUND);
    v.sha256 = sha[2];
    CHECK_EQ_INT(md_store_video_insert(s, &v, &vc, &jc), MD_OK);
    CHECK(vc > vb && jc > jb);
    md_video_rec *list = NULL;
    int n = 0;
    long long total = 0;
    CHECK_EQ_INT(md_store_video_list(s, 10, 0, &list, &n, &total), MD_OK);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_INT(total, 2);
    CHECK(n == 2 && list[0].id == va && list[1].id == vc);
    free(list);

    /* A job: claimed once, progress, a window of segments, its checkpoint, done. */
    md_job_claim cl;
    CHECK_EQ_INT(md_store_job_claim(s, &cl), MD_OK);
    CHECK_EQ_INT(cl.job_id, ja);
    CHECK_STR(cl.path, "/x/a");
    int gone = -1;
    CHECK_EQ_INT(md_store_job_progress(s, ja, 3, 10, "frames", &gone), MD_OK);
    CHECK_EQ_INT(gone, 0);
    md_model_rec m = {.name = "t", .kind = "clip+temporal", .weights_sha256 = sha[0], .preprocess_hash = sha[1],
                      .temporal_sha256 = sha[2], .config = "{}", .dim = 4};
    long long model = 0, model2 = 0;
    CHECK_EQ_INT(md_store_model_register(s, &m, &model), MD_OK);
    CHECK_EQ_INT(md_store_model_register(s, &m, &model2), MD_OK);
    CHECK(model > 0 && model2 == model);
    uint16_t emb[2][4];
    md_segment_rec segs[2];
    for (int j = 0; j < 2; j++) {
        for (int d = 0; d < 4; d++)
            emb[j][d] = (uint16_t)(va * 1000 + j + d);
        segs[j] = (md_segment_rec){.seq = j, .start_ms = 4000 * j, .end_ms = 4000 * (j + 1), .emb = emb[j]};
    }
    md_window_rec w = {.job_id = ja, .video_id = va, .model_id = model, .progress_done = 8, .checkpoint = "ckpt",
                       .checkpoint_len = 4, .segs = segs, .n_segs = 2, .dim = 4};
    CHECK_EQ_INT(md_store_window_commit(s, &w), MD_OK);
    void *blob = NULL;
    size_t blen = 0;
    long long stored = 0;
    CHECK_EQ_INT(md_store_job_checkpoint(s, ja, model, &blob, &blen, &stored), MD_OK);
    CHECK(blob && blen == 4 && memcmp(blob, "ckpt", 4) == 0);
    CHECK_EQ_INT(stored, 2);
    free(blob);
    long long loaded = 0, bad = -1;
    CHECK_EQ_INT(md_store_segments_load(s, model, 4, count_segment, &loaded, &bad), MD_OK);
    CHECK_EQ_INT(loaded, 2);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(md_store_job_get(s, ja, &jr), MD_OK);
    CHECK(jr.state == MD_JOB_RUNNING && jr.progress_done == 8 && jr.progress_total == 10);
    CHECK_STR(jr.progress_unit, "frames");
    CHECK_EQ_INT(md_store_job_finish(s, ja, MD_JOB_DONE, NULL), MD_OK);
    CHECK_EQ_INT(md_store_job_get(s, ja, &jr), MD_OK);
    CHECK(jr.state == MD_JOB_DONE && jr.progress_done == jr.progress_total && jr.finished_at_ms > 0);
    /* A window of a job that is no longer running writes nothing. */
    w.progress_done = 12;
    CHECK_EQ_INT(md_store_window_commit(s, &w), MD_ERR_CANCELLED);
    CHECK_EQ_INT(md_store_job_progress(s, ja, 1, 10, NULL, &gone), MD_OK);
    CHECK_EQ_INT(gone, 1);
    loaded = 0;
    CHECK_EQ_INT(md_store_segments_load(s, model, 4, count_segment, &loaded, &bad), MD_OK);
    CHECK_EQ_INT(loaded, 2);
    /* The finished video without segments of another model is queued again for it. */
    m.preprocess_hash = sha[2];
    CHECK_EQ_INT(md_store_model_register(s, &m, &model2), MD_OK);
    CHECK(model2 != model);
    int queued = -1;
    CHECK_EQ_INT(md_store_jobs_queue_reindex(s, model2, &queued), MD_OK);
    CHECK_EQ_INT(queued, 1);
    md_store_stats st;
    CHECK_EQ_INT(md_store_stats_get(s, &st), MD_OK);
    CHECK(st.videos == 2 && st.jobs_done == 1 && st.jobs_queued == 2 && st.bytes_stored == 1 && st.bytes_indexed_paths == 1);
    md_store_close(s);
}

/* A database made by an older momentd (schema 2) keeps its rows and ids through migration 003,
 * and from then on deleted ids are not handed out again. */
static void test_store_migrates_old_ids(void)
{
    char db[PATH_MAX + 16], err[512];
    snprintf(db, sizeof db, "%s/old.db", g_tmp);
    char m1[PATH_MAX + 64], m2[PATH_MAX + 64];
    snprintf(m1, sizeof m1, "%sschema/001-init.sql", tu_repo_root());
    snprintf(m2, sizeof m2, "%sschema/002-temporal.sql", tu_repo_root());
    size_t n1 = 0, n2 = 0;
    char *s1 = tu_read_file(m1, &n1), *s2 = tu_read_file(m2, &n2);
    CHECK(s1 && s2);
    if (!s1 || !s2) {
        free(s1);
        free(s2);
        return;
    }
    CHECK_EQ_INT(raw_sql(db, s1), SQLITE_OK);
    CHECK_EQ_INT(raw_sql(db, s2), SQLITE_OK);
    free(s1);
    free(s2);
    char sql[2048], sha[4][65];
    for (int i = 0; i < 4; i++) {
        char x[2] = {(char)('p' + i), 0};
        sha_hex(x, sha[i]);
    }
    snprintf(sql, sizeof sql,
             "PRAGMA user_version = 2;"
             "INSERT INTO models (id, name, kind, weights_sha256, preprocess_hash, dim, created_at) "
             "VALUES (1, 'm', 'clip+temporal', 'w', 'p', 4, 1);"
             "INSERT INTO videos (id, sha256, name, source, path, size_bytes, created_at) VALUES "
             "(1, '%s', 'one', 'upload', '/v/1', 10, 1), (2, '%s', 'two', 'path', '/v/2', 20, 2);"
             "INSERT INTO jobs (id, video_id, state, created_at, updated_at, checkpoint) VALUES "
             "(1, 1, 'done', 1, 1, x'0102'), (2, 2, 'queued', 2, 2, NULL);"
             "INSERT INTO segments (video_id, model_id, seq, start_ms, end_ms, embedding) VALUES "
             "(1, 1, 0, 0, 4000, x'e8030000e9030000');",
             sha[0], sha[1]);
    CHECK_EQ_INT(raw_sql(db, sql), SQLITE_OK);
    md_store *s = NULL;
    CHECK_EQ_INT(md_store_open(db, &s, err, sizeof err), MD_OK);
    if (!s)
        return;
    CHECK_EQ_INT(md_store_version(s), md_store_latest_version(s));
    md_video_rec v;
    CHECK_EQ_INT(md_store_video_get(s, 1, &v), MD_OK);
    CHECK_STR(v.name, "one");
    CHECK_EQ_INT(v.job_id, 1);
    CHECK(v.job_state == MD_JOB_DONE);
    CHECK_EQ_INT(md_store_video_get(s, 2, &v), MD_OK);
    CHECK_STR(v.name, "two");
    void *blob = NULL;
    size_t blen = 0;
    long long stored = 0;
    CHECK_EQ_INT(md_store_job_checkpoint(s, 1, 1, &blob, &blen, &stored), MD_OK);
    CHECK(blob && blen == 2 && stored == 1);
    free(blob);
    /* Cascades still work on the rebuilt tables: deleting video 2 removes its job. */
    md_video_source src;
    char path[64];
    CHECK_EQ_INT(md_store_video_delete(s, 2, &src, path, sizeof path), MD_OK);
    md_job_rec j;
    CHECK_EQ_INT(md_store_job_get(s, 2, &j), MD_ERR_NOT_FOUND);
    long long nv = 0, nj = 0;
    md_video_new nw = {.sha256 = sha[2], .name = "three", .path = "/v/3", .source = MD_SOURCE_PATH, .size_bytes = 3};
    CHECK_EQ_INT(md_store_video_insert(s, &nw, &nv, &nj), MD_OK);
    CHECK_EQ_INT(nv, 3);
    CHECK_EQ_INT(nj, 3);
    md_store_close(s);
}

/* Migration 005 rebuilds jobs once more: the id of a deleted newest job is still never reused. */
static void test_store_migration_keeps_sequence(void)
{
    char db[PATH_MAX + 16], err[512], sql[1024], sha[3][65];
    snprintf(db, sizeof db, "%s/seq.db", g_tmp);
    for (int v = 1; v <= 4; v++) {
        static const char *files[4] = {"001-init.sql", "002-temporal.sql", "003-ids.sql", "004-file-identity.sql"};
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%sschema/%s", tu_repo_root(), files[v - 1]);
        char *text = tu_read_file(path, NULL);
        CHECK(text != NULL);
        if (!text)
            return;
        CHECK_EQ_INT(raw_sql(db, text), SQLITE_OK);
        free(text);
    }
    for (int i = 0; i < 3; i++) {
        char x[2] = {(char)('x' + i), 0};
        sha_hex(x, sha[i]);
    }
    snprintf(sql, sizeof sql,
             "PRAGMA user_version = 4;"
             "INSERT INTO videos (sha256, name, source, path, size_bytes, created_at) VALUES "
             "('%s', 'one', 'path', '/v/1', 1, 1), ('%s', 'two', 'path', '/v/2', 1, 1);"
             "INSERT INTO jobs (video_id, created_at, updated_at) VALUES (1, 1, 1), (2, 1, 1);"
             "DELETE FROM videos WHERE id = 2;",
             sha[0], sha[1]);
    CHECK_EQ_INT(raw_sql(db, sql), SQLITE_OK);
    md_store *s = NULL;
    CHECK_EQ_INT(md_store_open(db, &s, err, sizeof err), MD_OK);
    if (!s)
        return;
    md_video_new nv = {.sha256 = sha[2], .name = "three", .path = "/v/3", .source = MD_SOURCE_PATH, .size_bytes = 1};
    long long vid = 0, jid = 0;
    CHECK_EQ_INT(md_store_video_insert(s, &nv, &vid, &jid), MD_OK);
    CHECK_EQ_INT(vid, 3);
    CHECK_EQ_INT(jid, 3);
    md_store_close(s);
}

/* A 0-byte database file opens as a new library, with a warning that says so (the log). */
static void test_store_warns_on_empty_file(void)
{
    char db[PATH_MAX + 16], logf[PATH_MAX + 16], err[512];
    snprintf(db, sizeof db, "%s/empty.db", g_tmp);
    snprintf(logf, sizeof logf, "%s/empty.log", g_tmp);
    tu_write_file(db, "", 0);
    fflush(stderr);
    int saved = dup(2), fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(saved >= 0 && fd >= 0);
    if (saved < 0 || fd < 0)
        return;
    dup2(fd, 2);
    close(fd);
    md_store *s = NULL;
    md_status st = md_store_open(db, &s, err, sizeof err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    CHECK_EQ_INT(st, MD_OK);
    md_store_close(s);
    char *log = tu_read_file(logf, NULL);
    CHECK(log && strstr(log, "empty file (0 bytes)") && strstr(log, "empty.db"));
    free(log);
}

static void test_store_rejects_garbage(void)
{
    char db[PATH_MAX + 16], err[512] = "";
    snprintf(db, sizeof db, "%s/garbage.db", g_tmp);
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 131 + 7);
    tu_write_file(db, junk, sizeof junk);
    md_store *s = NULL;
    CHECK(md_store_open(db, &s, err, sizeof err) != MD_OK);
    CHECK(s == NULL);
    CHECK(strstr(err, "garbage.db") != NULL);
}

static md_library *open_lib(const char *dir, const char *root, md_errbuf *e)
{
    md_library_params p = md_library_default_params();
    p.data_dir = dir;
    p.workers = 1;
    p.max_upload = 1 << 20;
    const char *roots[1] = {root};
    p.allowed_roots = roots;
    p.n_allowed_roots = root ? 1 : 0;
    md_library *lib = NULL;
    if (md_library_open(&p, &lib, e) != MD_OK)
        fprintf(stderr, "  open_lib: %s\n", e->msg);
    return lib;
}

static long long json_int(cJSON *o, const char *a, const char *b)
{
    cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? (long long)x->valuedouble : -1;
}

static void test_library_upload_dedupe_delete(void)
{
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/lib1", g_tmp);
    md_errbuf e;
    md_library *lib = open_lib(dir, NULL, &e);
    CHECK(lib != NULL);
    if (!lib)
        return;
    /* Two uploads of the same bytes in different pieces give one video. */
    md_upload *u;
    cJSON *r1 = NULL, *r2 = NULL;
    int created;
    CHECK_EQ_INT(md_upload_begin(lib, "../../etc/clip.mp4", &u, &e), MD_OK);
    CHECK_EQ_INT(md_upload_write(u, "hello ", 6, &e), MD_OK);
    CHECK_EQ_INT(md_upload_write(u, "world", 5, &e), MD_OK);
    CHECK_EQ_INT(md_upload_finish(u, &r1, &created, &e), MD_OK);
    CHECK_EQ_INT(created, 1);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(r1, "video"), "name")), "clip.mp4");
    CHECK_EQ_INT(md_upload_begin(lib, "again.mp4", &u, &e), MD_OK);
    CHECK_EQ_INT(md_upload_write(u, "hello world", 11, &e), MD_OK);
    CHECK_EQ_INT(md_upload_finish(u, &r2, &created, &e), MD_OK);
    CHECK_EQ_INT(created, 0);
    long long id = json_int(r1, "video", "id");
    CHECK_EQ_INT(json_int(r2, "video", "id"), id);
    CHECK_EQ_INT(json_int(r1, "video", "size_bytes"), 11);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(r1, "video"), "sha256")),
              "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(r1, "job"), "state")), "queued");
    char stored[PATH_MAX + 128];
    snprintf(stored, sizeof stored, "%s/videos/b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9", dir);
    CHECK(access(stored, F_OK) == 0);
    cJSON_Delete(r1);
    cJSON_Delete(r2);

    /* Over the limit: refused, and the temporary file is gone after abort. */
    CHECK_EQ_INT(md_upload_begin(lib, "big", &u, &e), MD_OK);
    char *big = calloc(1, (1 << 20) + 1);
    CHECK_EQ_INT(md_upload_write(u, big, (1 << 20) + 1, &e), MD_ERR_TOO_LARGE);
    CHECK(strstr(e.msg, "max_upload") != NULL);
    md_upload_abort(u);
    free(big);
    char tmpdir[PATH_MAX + 16];
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp", dir);
    int n_tmp = 0;
    DIR *d = opendir(tmpdir);
    for (struct dirent *de; d && (de = readdir(d));)
        n_tmp += de->d_name[0] != '.';
    if (d)
        closedir(d);
    CHECK_EQ_INT(n_tmp, 0);

    /* Empty upload is an input error. */
    CHECK_EQ_INT(md_upload_begin(lib, "empty", &u, &e), MD_OK);
    CHECK_EQ_INT(md_upload_finish(u, &r1, &created, &e), MD_ERR_INVALID);

    cJSON *list = NULL;
    CHECK_EQ_INT(md_library_list_videos(lib, 10, 0, &list, &e), MD_OK);
    CHECK_EQ_INT(json_int(list, "total", NULL), 1);
    cJSON_Delete(list);

    CHECK_EQ_INT(md_library_delete_video(lib, id, &e), MD_OK);
    CHECK(access(stored, F_OK) != 0);
    CHECK_EQ_INT(md_library_delete_video(lib, id, &e), MD_ERR_NOT_FOUND);
    cJSON *v = NULL;
    CHECK_EQ_INT(md_library_get_video(lib, id, &v, &e), MD_ERR_NOT_FOUND);
    CHECK_EQ_INT(md_library_get_job(lib, 12345, &v, &e), MD_ERR_NOT_FOUND);
    md_library_close(lib);
}

static void test_library_index_roots(void)
{
    char root[PATH_MAX + 16], outside[PATH_MAX + 16], dir[PATH_MAX + 16], p[PATH_MAX + 64], q[PATH_MAX + 64];
    snprintf(root, sizeof root, "%s/archive", g_tmp);
    snprintf(outside, sizeof outside, "%s/private", g_tmp);
    snprintf(dir, sizeof dir, "%s/lib2", g_tmp);
    mkdir(root, 0755);
    mkdir(outside, 0755);
    snprintf(p, sizeof p, "%s/sub", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/a.mp4", root);
    tu_write_file(p, "AAAA", 4);
    snprintf(p, sizeof p, "%s/sub/b.mkv", root);
    tu_write_file(p, "BBBB", 4);
    snprintf(p, sizeof p, "%s/sub/copy-of-a.mp4", root);
    tu_write_file(p, "AAAA", 4);
    snprintf(p, sizeof p, "%s/notes.txt", root);
    tu_write_file(p, "text", 4);
    snprintf(p, sizeof p, "%s/secret.mp4", outside);
    tu_write_file(p, "SSSS", 4);
    snprintf(q, sizeof q, "%s/escape.mp4", root);
    if (symlink(p, q) != 0)
        perror("symlink");

    md_errbuf e;
    char *canon_root = realpath(root, NULL);
    md_library *lib = open_lib(dir, canon_root, &e);
    free(canon_root);
    CHECK(lib != NULL);
    if (!lib)
        return;
    cJSON *res = NULL;
    const char *bad1[] = {p};
    CHECK_EQ_INT(md_library_index_paths(lib, bad1, 1, &res, &e), MD_ERR_FORBIDDEN);
    snprintf(q, sizeof q, "%s/../private/secret.mp4", root);
    const char *bad2[] = {q};
    CHECK_EQ_INT(md_library_index_paths(lib, bad2, 1, &res, &e), MD_ERR_FORBIDDEN);
    snprintf(q, sizeof q, "%s/escape.mp4", root);
    const char *bad3[] = {q};
    CHECK_EQ_INT(md_library_index_paths(lib, bad3, 1, &res, &e), MD_ERR_FORBIDDEN);
    const char *bad4[] = {"relative.mp4"};
    CHECK_EQ_INT(md_library_index_paths(lib, bad4, 1, &res, &e), MD_ERR_INVALID);
    /* A forbidden path among good ones queues nothing. */
    const char *mixed[] = {root, p};
    CHECK_EQ_INT(md_library_index_paths(lib, mixed, 2, &res, &e), MD_ERR_FORBIDDEN);
    cJSON *list = NULL;
    md_library_list_videos(lib, 10, 0, &list, &e);
    CHECK_EQ_INT(json_int(list, "total", NULL), 0);
    cJSON_Delete(list);

    const char *good[] = {root};
    CHECK_EQ_INT(md_library_index_paths(lib, good, 1, &res, &e), MD_OK);
    /* a.mp4 and sub/b.mkv queued; copy-of-a skipped by sha256; escape.mp4 skipped; notes.txt ignored. */
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(res, "queued")), 2);
    cJSON *skipped = cJSON_GetObjectItem(res, "skipped");
    CHECK_EQ_INT(cJSON_GetArraySize(skipped), 2);
    char *s = cJSON_PrintUnformatted(skipped);
    CHECK(s && strstr(s, "outside the allowed roots") && strstr(s, "already known"));
    free(s);
    cJSON_Delete(res);
    /* Again: everything already known. */
    CHECK_EQ_INT(md_library_index_paths(lib, good, 1, &res, &e), MD_OK);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(res, "queued")), 0);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(res, "skipped")), 4); /* 3 known + the symlink */
    cJSON_Delete(res);
    /* Deleting an indexed archive file's video never deletes the archive file. */
    CHECK_EQ_INT(md_library_delete_video(lib, 1, &e), MD_OK);
    snprintf(p, sizeof p, "%s/a.mp4", root);
    CHECK(access(p, F_OK) == 0);
    md_library_close(lib);
}

/* A job left 'running' by a crash is queued again at the next open, and
 * failed once it was interrupted more often than job_retries allows. */
/* Waits (at most 15 s) for job JOB to leave queued/running; its state and error go to STATE/ERR. */
static void wait_job_end(md_library *lib, long long job, char *state, size_t slen, char *err, size_t elen)
{
    md_errbuf e;
    state[0] = err[0] = 0;
    for (int i = 0; i < 750; i++) {
        cJSON *j = NULL;
        if (md_library_get_job(lib, job, &j, &e) == MD_OK) {
            const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(j, "state"));
            const char *er = cJSON_GetStringValue(cJSON_GetObjectItem(j, "error"));
            snprintf(state, slen, "%s", st ? st : "");
            snprintf(err, elen, "%s", er ? er : "");
        }
        cJSON_Delete(j);
        if (state[0] && strcmp(state, "queued") != 0 && strcmp(state, "running") != 0)
            return;
        usleep(20000);
    }
}

/* A file swapped for a symlink (or a directory on its path swapped, or the file changed) between
 * the index request and its job is refused by the job, never followed outside the roots. */
static void test_library_refuses_swapped_files(void)
{
    char root[PATH_MAX + 16], outside[PATH_MAX + 16], dir[PATH_MAX + 16], p[PATH_MAX + 64], q[PATH_MAX + 64];
    snprintf(root, sizeof root, "%s/swap-archive", g_tmp);
    snprintf(outside, sizeof outside, "%s/swap-private", g_tmp);
    snprintf(dir, sizeof dir, "%s/swap-lib", g_tmp);
    mkdir(root, 0755);
    mkdir(outside, 0755);
    snprintf(p, sizeof p, "%s/sub", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub", outside);
    mkdir(p, 0755);
    const char *names[3] = {"a.mp4", "sub/b.mp4", "c.mp4"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, names[i]);
        char body[8] = {'f', 'i', 'l', 'e', (char)('0' + i), 0};
        tu_write_file(p, body, 5);
        snprintf(p, sizeof p, "%s/%s", outside, names[i]);
        tu_write_file(p, "secret", 6);
    }
    char *canon = realpath(root, NULL);
    md_library_params lp = md_library_default_params();
    lp.data_dir = dir;
    lp.workers = 1;
    lp.debug_job_delay_ms = 400; /* each job waits before it opens its file: time to swap */
    const char *roots[1] = {canon};
    lp.allowed_roots = roots;
    lp.n_allowed_roots = 1;
    md_library *lib = NULL;
    md_errbuf e;
    CHECK_EQ_INT(md_library_open(&lp, &lib, &e), MD_OK);
    free(canon);
    if (!lib)
        return;
    const char *paths[1] = {root};
    cJSON *res = NULL;
    CHECK_EQ_INT(md_library_index_paths(lib, paths, 1, &res, &e), MD_OK);
    cJSON *queued = cJSON_GetObjectItem(res, "queued");
    CHECK_EQ_INT(cJSON_GetArraySize(queued), 3);
    long long jobs[3] = {0, 0, 0};
    cJSON *it;
    cJSON_ArrayForEach(it, queued)
    {
        const char *path = cJSON_GetStringValue(cJSON_GetObjectItem(it, "path"));
        long long jid = json_int(it, "job", "id");
        for (int i = 0; path && i < 3; i++) {
            size_t lp_ = strlen(path), ln = strlen(names[i]);
            if (lp_ > ln && strcmp(path + lp_ - ln, names[i]) == 0 && path[lp_ - ln - 1] == '/')
                jobs[i] = jid;
        }
    }
    cJSON_Delete(res);
    CHECK(jobs[0] > 0 && jobs[1] > 0 && jobs[2] > 0);
    /* a.mp4 becomes a symlink to the outside file; sub/ becomes a symlink to the outside sub/;
     * c.mp4 keeps its inode but changes its content. */
    snprintf(p, sizeof p, "%s/a.mp4", root);
    snprintf(q, sizeof q, "%s/a.mp4", outside);
    unlink(p);
    CHECK(symlink(q, p) == 0);
    snprintf(p, sizeof p, "%s/sub", root);
    snprintf(q, sizeof q, "%s/sub-moved", root);
    CHECK(rename(p, q) == 0);
    snprintf(q, sizeof q, "%s/sub", outside);
    CHECK(symlink(q, p) == 0);
    snprintf(p, sizeof p, "%s/c.mp4", root);
    FILE *f = fopen(p, "ab");
    CHECK(f != NULL);
    if (f) {
        fputs("more", f);
        fclose(f);
    }
    CHECK_EQ_INT(md_library_start(lib, &e), MD_OK);
    const char *want[3] = {"symbolic link", "symbolic link", "changed since it was added"};
    for (int i = 0; i < 3; i++) {
        char state[32], err[700];
        wait_job_end(lib, jobs[i], state, sizeof state, err, sizeof err);
        CHECK_STR(state, "failed");
        if (!strstr(err, want[i]))
            fprintf(stderr, "  %s: error '%s' (want '%s')\n", names[i], err, want[i]);
        CHECK(strstr(err, want[i]) != NULL);
    }
    md_library_stats st;
    CHECK_EQ_INT(md_library_stats_get(lib, &st, &e), MD_OK);
    CHECK_EQ_INT(st.failures[MD_FAIL_REFUSED], 3);
    CHECK(st.stage_seconds[MD_STAGE_PROBE] == 0); /* no file was probed: none was read */
    md_library_close(lib);
}

/* Jobs as the API lists, cancels and queues them again. */
static void test_library_jobs_cancel_reindex(void)
{
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/jobs-lib", g_tmp);
    md_errbuf e;
    md_library *lib = open_lib(dir, NULL, &e); /* workers not started: jobs stay queued */
    CHECK(lib != NULL);
    if (!lib)
        return;
    long long vids[3], jobs[3];
    for (int i = 0; i < 3; i++) {
        md_upload *u;
        cJSON *r = NULL;
        int created;
        char body[8] = {'v', (char)('0' + i), 0};
        md_upload_begin(lib, "v.mp4", &u, &e);
        md_upload_write(u, body, 2, &e);
        CHECK_EQ_INT(md_upload_finish(u, &r, &created, &e), MD_OK);
        vids[i] = json_int(r, "video", "id");
        jobs[i] = json_int(r, "job", "id");
        cJSON_Delete(r);
    }
    cJSON *r = NULL;
    CHECK_EQ_INT(md_library_list_jobs(lib, "queued", 0, NULL, 2, 0, &r, &e), MD_OK);
    CHECK_EQ_INT(json_int(r, "total", NULL), 3);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(r, "jobs")), 2);
    CHECK_EQ_INT(json_int(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "jobs"), 0), "id", NULL), jobs[2]); /* newest first */
    CHECK_EQ_INT(json_int(r, "next_offset", NULL), 2);
    cJSON_Delete(r);
    CHECK_EQ_INT(md_library_list_jobs(lib, NULL, vids[1], NULL, 10, 0, &r, &e), MD_OK);
    CHECK_EQ_INT(json_int(r, "total", NULL), 1);
    cJSON_Delete(r);
    CHECK_EQ_INT(md_library_list_jobs(lib, "exploded", 0, NULL, 10, 0, &r, &e), MD_ERR_INVALID);
    CHECK(strstr(e.msg, "'state'") != NULL);
    /* Cancel a queued job: at once. Again: a conflict. Unknown: not found. */
    CHECK_EQ_INT(md_library_cancel_job(lib, jobs[0], &r, &e), MD_OK);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(r, "state")), "cancelled");
    cJSON_Delete(r);
    CHECK_EQ_INT(md_library_cancel_job(lib, jobs[0], &r, &e), MD_ERR_CONFLICT);
    CHECK(strstr(e.msg, "already ended (cancelled)") != NULL);
    CHECK_EQ_INT(md_library_cancel_job(lib, 999999, &r, &e), MD_ERR_NOT_FOUND);
    CHECK_EQ_INT(md_library_get_video(lib, vids[0], &r, &e), MD_OK);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(r, "status")), "cancelled");
    cJSON_Delete(r);
    /* Reindex: the cancelled video gets a new queued job; a queued one is a conflict. */
    CHECK_EQ_INT(md_library_reindex_video(lib, vids[0], &r, &e), MD_OK);
    long long nj = json_int(r, "job", "id");
    CHECK(nj > jobs[2]);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "job"), "state")), "queued");
    cJSON_Delete(r);
    CHECK_EQ_INT(md_library_reindex_video(lib, vids[0], &r, &e), MD_ERR_CONFLICT);
    CHECK_EQ_INT(md_library_reindex_video(lib, 999999, &r, &e), MD_ERR_NOT_FOUND);
    CHECK_EQ_INT(md_library_list_jobs(lib, "cancelled", 0, NULL, 10, 0, &r, &e), MD_OK);
    CHECK_EQ_INT(json_int(r, "total", NULL), 1);
    cJSON_Delete(r);
    md_library_close(lib);
}

/* One library per data directory: a second open is refused, naming the directory and the PID
 * holding it, and closing the first releases it. */
static void test_library_lock(void)
{
    char dir[PATH_MAX + 16], pid[32];
    snprintf(dir, sizeof dir, "%s/locked", g_tmp);
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    md_errbuf e;
    md_library *a = open_lib(dir, NULL, &e), *b = NULL;
    CHECK(a != NULL);
    md_library_params p = md_library_default_params();
    p.data_dir = dir;
    p.workers = 1;
    CHECK_EQ_INT(md_library_open(&p, &b, &e), MD_ERR_CONFLICT);
    CHECK(b == NULL);
    CHECK(strstr(e.msg, dir) != NULL);
    CHECK(strstr(e.msg, pid) != NULL);
    md_library_close(a);
    CHECK_EQ_INT(md_library_open(&p, &b, &e), MD_OK);
    md_library_close(b);
}

static void test_library_recovers_jobs(void)
{
    char dir[PATH_MAX + 16], db[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/lib3", g_tmp);
    md_errbuf e;
    md_library *lib = open_lib(dir, NULL, &e);
    md_upload *u;
    cJSON *r;
    int created;
    md_upload_begin(lib, "x", &u, &e);
    md_upload_write(u, "xyz", 3, &e);
    md_upload_finish(u, &r, &created, &e);
    cJSON_Delete(r);
    md_upload_begin(lib, "y", &u, &e);
    md_upload_write(u, "xyzw", 4, &e);
    md_upload_finish(u, &r, &created, &e);
    cJSON_Delete(r);
    md_library_close(lib);
    snprintf(db, sizeof db, "%s/momentd.db", dir);
    CHECK_EQ_INT(raw_sql(db, "UPDATE jobs SET state='running', attempts=1 WHERE id=1; "
                             "UPDATE jobs SET state='running', attempts=4 WHERE id=2"),
                 SQLITE_OK);
    lib = open_lib(dir, NULL, &e);
    cJSON *j = NULL;
    CHECK_EQ_INT(md_library_get_job(lib, 1, &j, &e), MD_OK);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "state")), "queued");
    cJSON_Delete(j);
    CHECK_EQ_INT(md_library_get_job(lib, 2, &j, &e), MD_OK);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(j, "state")), "failed");
    CHECK(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(j, "error")), "interrupted") != NULL);
    cJSON_Delete(j);
    md_library_stats st;
    CHECK_EQ_INT(md_library_stats_get(lib, &st, &e), MD_OK);
    CHECK_EQ_INT(st.jobs_queued, 1);
    CHECK_EQ_INT(st.jobs_failed, 1);
    CHECK_EQ_INT(st.videos, 2);
    CHECK_EQ_INT(st.bytes_stored, 7);
    md_library_close(lib);
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    md_log_set_level(MD_LOG_WARN);
    snprintf(g_tmp, sizeof g_tmp, "%s/momentd-core-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_sha256_vectors);
    RUN(test_sha256_file);
    RUN(test_config_defaults_and_precedence);
    RUN(test_config_errors);
    RUN(test_config_double_rows);
    RUN(test_config_limits_and_checks);
    RUN(test_search_query_check);
    RUN(test_ground_check);
    RUN(test_library_params_check);
    RUN(test_openapi_states_the_limits);
    RUN(test_store_migrations);
    RUN(test_store_records);
    RUN(test_store_migrates_old_ids);
    RUN(test_store_migration_keeps_sequence);
    RUN(test_store_warns_on_empty_file);
    RUN(test_store_rejects_garbage);
    RUN(test_library_upload_dedupe_delete);
    RUN(test_library_index_roots);
    RUN(test_library_refuses_swapped_files);
    RUN(test_library_jobs_cancel_reindex);
    RUN(test_library_lock);
    RUN(test_library_recovers_jobs);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_tmp);
    return md_test_summary("test_core");
}
