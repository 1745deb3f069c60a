/* test_core.c - unit tests of the engine's core: sha256, the settings table,
 * SQLite migrations and failure modes, and the library (uploads, dedupe,
 * delete, indexing server paths under allowed roots, job recovery). */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../base/log.h"
#include "../../engine/momentd.h"
#include "../../engine/sha256.h"
#include "../../engine/store.h"
#include "../../server/config.h"
#include "harness.h"
#include "testutil.h"

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

static void test_store_migrations(void)
{
    char db[PATH_MAX + 16], err[512];
    snprintf(db, sizeof db, "%s/m.db", g_tmp);
    md_store *s = NULL;
    CHECK_EQ_INT(md_store_open(db, &s, err, sizeof err), MD_OK);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_EQ_INT(md_store_version(s), md_store_latest_version());
    CHECK(md_store_latest_version() >= 1);
    /* Foreign keys are on: a job for a missing video is refused. */
    CHECK(md_store_exec(s, "INSERT INTO jobs (video_id, created_at, updated_at) VALUES (999, 0, 0)", err,
                        sizeof err) == MD_ERR_CONFLICT);
    /* WAL mode persisted. */
    sqlite3_stmt *q;
    sqlite3_prepare_v2(s->db, "PRAGMA journal_mode", -1, &q, NULL);
    CHECK(sqlite3_step(q) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(q, 0), "wal") == 0);
    sqlite3_finalize(q);
    CHECK_EQ_INT(md_store_exec(s, "PRAGMA user_version = 999", err, sizeof err), MD_OK);
    md_store_close(s);
    /* Reopening is idempotent, and a database from the future is refused. */
    CHECK_EQ_INT(md_store_open(db, &s, err, sizeof err), MD_ERR_CONFLICT);
    CHECK(strstr(err, "newer") != NULL);
    CHECK(s == NULL);
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

static md_library *open_lib(const char *dir, const char *root, md_error *e)
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
    md_error e;
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

    md_error e;
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
static void test_library_recovers_jobs(void)
{
    char dir[PATH_MAX + 16], db[PATH_MAX + 32], err[512];
    snprintf(dir, sizeof dir, "%s/lib3", g_tmp);
    md_error e;
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
    md_store *s = NULL;
    CHECK_EQ_INT(md_store_open(db, &s, err, sizeof err), MD_OK);
    CHECK_EQ_INT(md_store_exec(s, "UPDATE jobs SET state='running', attempts=1 WHERE id=1; "
                                  "UPDATE jobs SET state='running', attempts=4 WHERE id=2",
                               err, sizeof err),
                 MD_OK);
    md_store_close(s);
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
    RUN(test_store_migrations);
    RUN(test_store_rejects_garbage);
    RUN(test_library_upload_dedupe_delete);
    RUN(test_library_index_roots);
    RUN(test_library_recovers_jobs);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_tmp);
    return md_test_summary("test_core");
}
