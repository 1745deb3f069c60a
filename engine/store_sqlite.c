/* store_sqlite.c - the SQLite implementation of the storage interface (store.h); all of
 * momentd's SQL lives here.
 *
 * One file in the data directory, WAL mode, foreign keys on, a busy timeout so connections wait
 * for each other. Migrations are the files schema/NNN-name.sql compiled into the binary
 * (build/embedded.c); opening applies those numbered above PRAGMA user_version, each in its own
 * transaction with foreign keys off (so a migration can rebuild a table, SQLite's documented
 * procedure) and PRAGMA foreign_key_check before it commits, and refuses a database whose
 * version is newer than this binary knows.
 *
 * Segment embeddings are stored as BLOBs of DIM IEEE halves, little-endian whatever the host;
 * both directions of that layout are here and nowhere else.
 */
#define _XOPEN_SOURCE 700
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../base/log.h"
#include "store_impl.h"

/* Generated from schema/NNN-*.sql by the Makefile (build/embedded.c). */
extern const char *const md_migrations[];
extern const int md_n_migrations;

typedef struct sq {
    md_store base; /* first: store.c reaches the table through it */
    sqlite3 *db;
    char path[4096];
} sq;

#define SQ(s) ((sq *)(s))

static md_status status_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK: case SQLITE_DONE: case SQLITE_ROW: return MD_OK;
    case SQLITE_FULL: return MD_ERR_NO_SPACE;
    case SQLITE_NOMEM: return MD_ERR_NOMEM;
    case SQLITE_CONSTRAINT: return MD_ERR_CONFLICT;
    case SQLITE_IOERR: case SQLITE_CANTOPEN: case SQLITE_READONLY: return MD_ERR_IO;
    case SQLITE_BUSY: case SQLITE_LOCKED: return MD_ERR_UNAVAILABLE;
    default: return MD_ERR_DB;
    }
}

/* Records "database error while WHAT: ..." as the store's message; returns the status for RC. */
static md_status fail(sq *s, int rc, const char *what)
{
    snprintf(s->base.err, sizeof s->base.err, "database error while %s: %s", what,
             s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    return status_of(rc);
}

/* Prepares SQL and binds one argument per letter of TYPES: 'i' long long, 'I' long long bound as
 * NULL when negative, 'd' double, 'D' double bound as NULL when not positive, 't' const char *
 * (NULL binds NULL; copied by SQLite), 'b' const void * then int length (borrowed until the
 * statement is finalised). Returns an SQLite code. */
static int prepare_v(sq *s, sqlite3_stmt **st, const char *sql, const char *types, va_list ap)
{
    *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
    for (int k = 0; rc == SQLITE_OK && types && types[k]; k++) {
        switch (types[k]) {
        case 'i': rc = sqlite3_bind_int64(*st, k + 1, va_arg(ap, long long)); break;
        case 'I': {
            long long v = va_arg(ap, long long);
            rc = v >= 0 ? sqlite3_bind_int64(*st, k + 1, v) : sqlite3_bind_null(*st, k + 1);
            break;
        }
        case 'd': rc = sqlite3_bind_double(*st, k + 1, va_arg(ap, double)); break;
        case 'D': {
            double v = va_arg(ap, double);
            rc = v > 0 ? sqlite3_bind_double(*st, k + 1, v) : sqlite3_bind_null(*st, k + 1);
            break;
        }
        case 't': {
            const char *t = va_arg(ap, const char *);
            rc = t ? sqlite3_bind_text(*st, k + 1, t, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(*st, k + 1);
            break;
        }
        case 'b': {
            const void *b = va_arg(ap, const void *);
            int n = va_arg(ap, int);
            rc = b ? sqlite3_bind_blob(*st, k + 1, b, n, SQLITE_STATIC) : sqlite3_bind_null(*st, k + 1);
            break;
        }
        default: rc = SQLITE_MISUSE; break;
        }
    }
    return rc;
}

static int prepare(sq *s, sqlite3_stmt **st, const char *sql, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    int rc = prepare_v(s, st, sql, types, ap);
    va_end(ap);
    return rc;
}

/* Runs a statement that returns no rows; SQLITE_DONE on success. *CHANGES (may be NULL) gets
 * the rows it changed. */
static int run(sq *s, int *changes, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st = NULL;
    va_list ap;
    va_start(ap, types);
    int rc = prepare_v(s, &st, sql, types, ap);
    va_end(ap);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = SQLITE_DONE; /* a RETURNING row nobody asked for */
    if (changes)
        *changes = rc == SQLITE_DONE ? sqlite3_changes(s->db) : 0;
    sqlite3_finalize(st);
    return rc;
}

static int exec(sq *s, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK && err)
        snprintf(err, errlen, "%s", msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return rc;
}

static int begin(sq *s) { return exec(s, "BEGIN IMMEDIATE", NULL, 0); }
static int commit(sq *s) { return exec(s, "COMMIT", NULL, 0); }
static void rollback(sq *s)
{
    if (!sqlite3_get_autocommit(s->db))
        exec(s, "ROLLBACK", NULL, 0);
}

static void text_col(sqlite3_stmt *st, int col, char *out, size_t len)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(out, len, "%s", t ? (const char *)t : "");
}

/* Doubles the array of records ARR (*CAP of them, 16 at first); NULL, with ARR freed, when memory
 * runs out. */
static void *grow(void *arr, int *cap, size_t size)
{
    int nc = *cap ? 2 * *cap : 16;
    void *na = realloc(arr, (size_t)nc * size);
    if (!na)
        free(arr);
    else
        *cap = nc;
    return na;
}

static md_job_state state_of(const char *t)
{
    if (!t)
        return MD_JOB_QUEUED;
    return strcmp(t, "running") == 0 ? MD_JOB_RUNNING
           : strcmp(t, "done") == 0  ? MD_JOB_DONE
           : strcmp(t, "failed") == 0 ? MD_JOB_FAILED
           : strcmp(t, "cancelled") == 0 ? MD_JOB_CANCELLED
                                      : MD_JOB_QUEUED;
}

/* ---- connections -------------------------------------------------------------------------- */

static int sq_version(md_store *base)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (prepare(s, &st, "PRAGMA user_version", NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int sq_latest_version(md_store *s) { return (void)s, md_n_migrations; }

/* Foreign keys off while migrating (a migration may rebuild a table that others reference; the
 * pragma is a no-op inside a transaction), checked before each commit, on again afterwards. */
static md_status migrate(sq *s, char *err, size_t errlen)
{
    md_status st = MD_OK;
    int have = sq_version(&s->base);
    if (have < 0) {
        snprintf(err, errlen, "%s: cannot read schema version: %s", s->path, sqlite3_errmsg(s->db));
        return MD_ERR_DB;
    }
    if (have > md_n_migrations) {
        snprintf(err, errlen, "%s: schema version %d is newer than this momentd knows (%d); upgrade momentd", s->path,
                 have, md_n_migrations);
        return MD_ERR_CONFLICT;
    }
    if (have == md_n_migrations)
        return MD_OK;
    char e[512] = "";
    if (exec(s, "PRAGMA foreign_keys=OFF", e, sizeof e) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", s->path, e);
        return MD_ERR_DB;
    }
    for (int v = have + 1; v <= md_n_migrations && st == MD_OK; v++) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v);
        int rc = begin(s);
        if (rc == SQLITE_OK)
            rc = exec(s, md_migrations[v - 1], e, sizeof e);
        if (rc == SQLITE_OK) {
            sqlite3_stmt *fk = NULL;
            rc = prepare(s, &fk, "PRAGMA foreign_key_check", NULL);
            if (rc == SQLITE_OK && (rc = sqlite3_step(fk)) == SQLITE_ROW) {
                snprintf(e, sizeof e, "foreign key check failed in table %s", sqlite3_column_text(fk, 0));
                rc = SQLITE_CONSTRAINT;
            } else if (rc == SQLITE_DONE) {
                rc = SQLITE_OK;
            }
            sqlite3_finalize(fk);
        }
        if (rc == SQLITE_OK)
            rc = exec(s, pragma, e, sizeof e);
        if (rc == SQLITE_OK)
            rc = commit(s);
        if (rc != SQLITE_OK) {
            rollback(s);
            snprintf(err, errlen, "%s: migration %03d failed: %s", s->path, v, e[0] ? e : sqlite3_errstr(rc));
            st = status_of(rc);
            break;
        }
        md_info("store: applied migration %03d to %s", v, s->path);
    }
    if (exec(s, "PRAGMA foreign_keys=ON", e, sizeof e) != SQLITE_OK && st == MD_OK) {
        snprintf(err, errlen, "%s: %s", s->path, e);
        st = MD_ERR_DB;
    }
    return st;
}

static void sq_close(md_store *base)
{
    sq *s = SQ(base);
    if (s->db) {
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        sqlite3_close_v2(s->db);
    }
    free(s);
}

static const md_store_i SQLITE_I;

static md_status sq_open(const char *path, md_store **out, char *err, size_t errlen)
{
    md_status st = MD_OK;
    sqlite3_stmt *q = NULL;
    sq *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s)
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    s->base.i = &SQLITE_I;
    snprintf(s->path, sizeof s->path, "%s", path);
    /* An empty file opens as an empty library, which looks like every video was lost: say so. */
    struct stat sb;
    if (stat(path, &sb) != 0)
        md_info("store: creating a new database at %s", path);
    else if (sb.st_size == 0)
        md_warn("store: %s is an empty file (0 bytes): starting a new, empty library in it; if your videos "
                "should be here, stop momentd and restore the database from a backup",
                path);
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open database: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        st = status_of(rc);
        goto out;
    }
    sqlite3_busy_timeout(s->db, 10000);
    sqlite3_extended_result_codes(s->db, 1);
    /* quick_check first: a file that is not a database, or a damaged one, is a clear start-up
     * error instead of a failure somewhere later. */
    char e[512] = "";
    if (exec(s, "PRAGMA journal_mode=WAL", e, sizeof e) != SQLITE_OK ||
        exec(s, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", e, sizeof e) != SQLITE_OK) {
        snprintf(err, errlen, "%s: not a usable SQLite database: %s", path, e);
        st = MD_ERR_DB;
        goto out;
    }
    if (prepare(s, &q, "PRAGMA quick_check", NULL) != SQLITE_OK || sqlite3_step(q) != SQLITE_ROW ||
        strcmp((const char *)sqlite3_column_text(q, 0), "ok") != 0) {
        snprintf(err, errlen, "%s: database is damaged: %s", path,
                 q && sqlite3_column_text(q, 0) ? (const char *)sqlite3_column_text(q, 0) : sqlite3_errmsg(s->db));
        st = MD_ERR_DB;
        goto out;
    }
    sqlite3_finalize(q); /* before migrating: a pending statement keeps tables from being dropped */
    q = NULL;
    if ((st = migrate(s, err, errlen)) != MD_OK)
        goto out;
    *out = &s->base;
    return MD_OK;
out:
    sqlite3_finalize(q);
    sq_close(&s->base);
    return st;
}

/* ---- videos ------------------------------------------------------------------------------- */

#define VIDEO_COLS                                                                                              \
    "v.id, v.name, v.sha256, v.source, v.path, v.size_bytes, v.created_at, v.duration_ms, v.width, v.height, " \
    "v.fps, v.rotation, v.codec, v.format, v.n_streams, v.n_packets, v.n_corrupt, v.indexed_at, "             \
    "v.n_frames, v.n_segments, v.tokens_per_frame, v.embed_dim, v.temporal, j.id, j.state, j.error, "         \
    "v.file_dev, v.file_ino, v.file_mtime_ns, v.truncated, v.indexed_ms "
#define VIDEO_FROM "FROM videos v LEFT JOIN jobs j ON j.id = (SELECT max(id) FROM jobs WHERE video_id = v.id) "

static void read_video(sqlite3_stmt *st, md_video_rec *v)
{
    memset(v, 0, sizeof *v);
    v->id = sqlite3_column_int64(st, 0);
    text_col(st, 1, v->name, sizeof v->name);
    text_col(st, 2, v->sha256, sizeof v->sha256);
    const unsigned char *src = sqlite3_column_text(st, 3);
    v->source = src && strcmp((const char *)src, "upload") == 0 ? MD_SOURCE_UPLOAD : MD_SOURCE_PATH;
    text_col(st, 4, v->path, sizeof v->path);
    v->size_bytes = sqlite3_column_int64(st, 5);
    v->created_at_ms = sqlite3_column_int64(st, 6);
    v->probe.duration_ms = sqlite3_column_type(st, 7) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 7);
    v->probe.width = sqlite3_column_int(st, 8);
    v->probe.height = sqlite3_column_int(st, 9);
    v->probe.fps = sqlite3_column_type(st, 10) == SQLITE_NULL ? 0 : sqlite3_column_double(st, 10);
    v->probe.rotation = sqlite3_column_int(st, 11);
    text_col(st, 12, v->probe.codec, sizeof v->probe.codec);
    text_col(st, 13, v->probe.format, sizeof v->probe.format);
    v->probe.n_streams = sqlite3_column_int(st, 14);
    v->probe.n_packets = sqlite3_column_int64(st, 15);
    v->probe.n_corrupt = sqlite3_column_int64(st, 16);
    v->indexed_at_ms = sqlite3_column_type(st, 17) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 17);
    v->has_tokens = sqlite3_column_type(st, 18) != SQLITE_NULL;
    v->n_frames = sqlite3_column_int64(st, 18);
    v->n_segments = sqlite3_column_int64(st, 19);
    v->tokens_per_frame = sqlite3_column_int(st, 20);
    v->embed_dim = sqlite3_column_int(st, 21);
    text_col(st, 22, v->temporal, sizeof v->temporal);
    v->job_id = sqlite3_column_int64(st, 23);
    v->job_state = state_of((const char *)sqlite3_column_text(st, 24));
    text_col(st, 25, v->job_error, sizeof v->job_error);
    if (sqlite3_column_type(st, 26) != SQLITE_NULL)
        v->file = (md_file_id){.dev = sqlite3_column_int64(st, 26),
                               .ino = sqlite3_column_int64(st, 27),
                               .size = v->size_bytes,
                               .mtime_ns = sqlite3_column_int64(st, 28)};
    v->has_coverage = sqlite3_column_type(st, 29) != SQLITE_NULL;
    v->truncated = sqlite3_column_int(st, 29);
    v->indexed_ms = sqlite3_column_int64(st, 30);
}

static md_status sq_video_insert(md_store *base, const md_video_new *v, long long *video_id, long long *job_id)
{
    sq *s = SQ(base);
    long long now = md_now_ms();
    int rc = begin(s);
    if (rc != SQLITE_OK)
        return fail(s, rc, "adding a video");
    /* An unknown identity (all 0) is stored as NULL: nothing to check against. */
    int known = v->file.dev || v->file.ino;
    rc = run(s, NULL,
             "INSERT INTO videos (sha256, name, source, path, size_bytes, created_at, file_dev, file_ino, file_mtime_ns) "
             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
             "ttttiiIII", v->sha256, v->name, md_video_source_name(v->source), v->path, v->size_bytes, now,
             known ? v->file.dev : -1LL, known ? v->file.ino : -1LL, known ? v->file.mtime_ns : -1LL);
    if (rc != SQLITE_DONE) {
        md_status st = fail(s, rc, "adding a video");
        rollback(s);
        return st;
    }
    *video_id = sqlite3_last_insert_rowid(s->db);
    rc = run(s, NULL, "INSERT INTO jobs (video_id, kind, state, created_at, updated_at) VALUES (?, 'index', 'queued', ?, ?)",
             "iii", *video_id, now, now);
    if (rc != SQLITE_DONE) {
        md_status st = fail(s, rc, "queueing a job");
        rollback(s);
        return st;
    }
    if (job_id)
        *job_id = sqlite3_last_insert_rowid(s->db);
    if ((rc = commit(s)) != SQLITE_OK) {
        md_status st = fail(s, rc, "committing a new video");
        rollback(s);
        return st;
    }
    return MD_OK;
}

static md_status sq_video_find_sha(md_store *base, const char *sha256, long long *id)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    *id = 0;
    int rc = prepare(s, &st, "SELECT id FROM videos WHERE sha256 = ?", "t", sha256);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? MD_OK : fail(s, rc, "looking up a hash");
}

static md_status sq_video_get(md_store *base, long long id, md_video_rec *out)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    md_status ret = MD_OK;
    int rc = prepare(s, &st, "SELECT " VIDEO_COLS VIDEO_FROM "WHERE v.id = ?", "i", id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_video(st, out);
    else if (rc == SQLITE_DONE)
        ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOT_FOUND, "no video with id %lld", id);
    else
        ret = fail(s, rc, "reading a video");
    sqlite3_finalize(st);
    return ret;
}

static md_status sq_video_list(md_store *base, long long limit, long long offset, md_video_rec **out, int *n,
                               long long *total)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    md_video_rec *arr = NULL;
    int cnt = 0, cap = 0;
    md_status ret = MD_OK;
    *out = NULL;
    *n = 0;
    int rc = prepare(s, &st, "SELECT count(*) FROM videos", NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        *total = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return fail(s, rc, "counting videos");
    rc = prepare(s, &st, "SELECT " VIDEO_COLS VIDEO_FROM "ORDER BY v.id LIMIT ? OFFSET ?", "ii", limit, offset);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap && !(arr = grow(arr, &cap, sizeof *arr))) {
            ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOMEM, "out of memory listing videos");
            goto out;
        }
        read_video(st, &arr[cnt++]);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE) {
        ret = fail(s, rc, "listing videos");
        goto out;
    }
    *out = arr;
    *n = cnt;
    arr = NULL;
out:
    sqlite3_finalize(st);
    free(arr);
    return ret;
}

static md_status sq_video_delete(md_store *base, long long id, md_video_source *source, char *path, size_t pathlen)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    md_status ret = MD_OK;
    int rc = prepare(s, &st, "DELETE FROM videos WHERE id = ? RETURNING source, path", "i", id);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *src = sqlite3_column_text(st, 0);
        *source = src && strcmp((const char *)src, "upload") == 0 ? MD_SOURCE_UPLOAD : MD_SOURCE_PATH;
        text_col(st, 1, path, pathlen);
        rc = sqlite3_step(st);
    } else if (rc == SQLITE_DONE) {
        ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOT_FOUND, "no video with id %lld", id);
    }
    sqlite3_finalize(st);
    if (ret == MD_OK && rc != SQLITE_DONE)
        ret = fail(s, rc, "deleting a video");
    return ret;
}

static md_status sq_video_set_probe(md_store *base, long long id, const md_probe_rec *p)
{
    sq *s = SQ(base);
    /* Unknown duration (-1) and frame rate (0) are stored as NULL ('I', 'D'), as the API shows them. */
    int rc = run(s, NULL,
                 "UPDATE videos SET duration_ms = ?, fps = ?, width = ?, height = ?, rotation = ?, codec = ?, "
                 "format = ?, n_streams = ?, n_packets = ?, n_corrupt = ?, indexed_at = ? WHERE id = ?",
                 "IDiiittiiiii", p->duration_ms, p->fps, (long long)p->width, (long long)p->height,
                 (long long)p->rotation, p->codec, p->format, (long long)p->n_streams, p->n_packets, p->n_corrupt,
                 md_now_ms(), id);
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "saving the probe");
}

static md_status sq_video_add_damage(md_store *base, long long id, long long n)
{
    sq *s = SQ(base);
    int rc = run(s, NULL, "UPDATE videos SET n_corrupt = max(coalesce(n_corrupt, 0), ?) WHERE id = ?", "ii", n, id);
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "recording damaged packets");
}

static md_status sq_video_set_coverage(md_store *base, long long id, int truncated, long long indexed_ms)
{
    sq *s = SQ(base);
    int rc = run(s, NULL, "UPDATE videos SET truncated = ?, indexed_ms = ? WHERE id = ?", "iIi", (long long)!!truncated,
                 indexed_ms, id);
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "recording what was indexed");
}

static md_status sq_video_set_tokens(md_store *base, long long id, long long n_frames, long long n_segments,
                                     int tokens_per_frame, int embed_dim, const char *temporal)
{
    sq *s = SQ(base);
    int rc = run(s, NULL,
                 "UPDATE videos SET n_frames = ?, n_segments = ?, tokens_per_frame = ?, embed_dim = ?, temporal = ? "
                 "WHERE id = ?",
                 "iiiiti", n_frames, n_segments, (long long)tokens_per_frame, (long long)embed_dim, temporal, id);
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "recording token counts");
}

/* ---- jobs --------------------------------------------------------------------------------- */

#define JOB_COLS                                                                                       \
    "id, video_id, kind, state, progress_done, progress_total, progress_unit, error, attempts, created_at, " \
    "updated_at, started_at, finished_at "

static void read_job(sqlite3_stmt *st, md_job_rec *out)
{
    memset(out, 0, sizeof *out);
    out->id = sqlite3_column_int64(st, 0);
    out->video_id = sqlite3_column_int64(st, 1);
    text_col(st, 2, out->kind, sizeof out->kind);
    out->state = state_of((const char *)sqlite3_column_text(st, 3));
    out->progress_done = sqlite3_column_int64(st, 4);
    out->progress_total = sqlite3_column_int64(st, 5);
    text_col(st, 6, out->progress_unit, sizeof out->progress_unit);
    text_col(st, 7, out->error, sizeof out->error);
    out->attempts = sqlite3_column_int(st, 8);
    out->created_at_ms = sqlite3_column_int64(st, 9);
    out->updated_at_ms = sqlite3_column_int64(st, 10);
    out->started_at_ms = sqlite3_column_int64(st, 11); /* NULL reads as 0: not yet */
    out->finished_at_ms = sqlite3_column_int64(st, 12);
}

static md_status sq_job_get(md_store *base, long long id, md_job_rec *out)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    md_status ret = MD_OK;
    int rc = prepare(s, &st, "SELECT " JOB_COLS "FROM jobs WHERE id = ?", "i", id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_job(st, out);
    else if (rc == SQLITE_DONE)
        ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOT_FOUND, "no job with id %lld", id);
    else
        ret = fail(s, rc, "reading a job");
    sqlite3_finalize(st);
    return ret;
}

static md_status sq_job_list(md_store *base, const md_job_query *q, md_job_rec **out, int *n, long long *total)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    md_job_rec *arr = NULL;
    int cnt = 0, cap = 0;
    md_status ret = MD_OK;
    const char *state = q->state >= 0 ? md_job_state_name((md_job_state)q->state) : NULL;
    *out = NULL;
    *n = 0;
    /* NULL filters match everything ("?1 IS NULL OR ..."), so one statement serves every query. */
#define JOB_WHERE "WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR video_id = ?2) AND (?3 IS NULL OR kind = ?3) "
    int rc = prepare(s, &st, "SELECT count(*) FROM jobs " JOB_WHERE, "tIt", state, q->video_id > 0 ? q->video_id : -1LL,
                     q->kind);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        *total = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return fail(s, rc, "counting jobs");
    rc = prepare(s, &st, "SELECT " JOB_COLS "FROM jobs " JOB_WHERE "ORDER BY id DESC LIMIT ?4 OFFSET ?5", "tItii",
                 state, q->video_id > 0 ? q->video_id : -1LL, q->kind, q->limit, q->offset);
#undef JOB_WHERE
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap && !(arr = grow(arr, &cap, sizeof *arr))) {
            ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOMEM, "out of memory listing jobs");
            goto out;
        }
        read_job(st, &arr[cnt++]);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE) {
        ret = fail(s, rc, "listing jobs");
        goto out;
    }
    *out = arr;
    *n = cnt;
    arr = NULL;
out:
    sqlite3_finalize(st);
    free(arr);
    return ret;
}

static md_status sq_job_cancel(md_store *base, long long id, md_job_state *state)
{
    sq *s = SQ(base);
    long long now = md_now_ms();
    int changes = 0;
    int rc = run(s, &changes,
                 "UPDATE jobs SET state = 'cancelled', finished_at = ?1, updated_at = ?1 "
                 "WHERE id = ?2 AND state IN ('queued', 'running')",
                 "ii", now, id);
    if (rc != SQLITE_DONE)
        return fail(s, rc, "cancelling a job");
    md_job_rec j;
    md_status ret = sq_job_get(base, id, &j);
    if (ret != MD_OK)
        return ret;
    *state = j.state;
    if (!changes)
        return md_errf(s->base.err, sizeof s->base.err, MD_ERR_CONFLICT, "job %lld has already ended (%s)", id,
                       md_job_state_name(j.state));
    return MD_OK;
}

static md_status sq_video_reindex(md_store *base, long long video_id, long long *job_id)
{
    sq *s = SQ(base);
    long long now = md_now_ms();
    int changes = 0;
    int rc = begin(s);
    if (rc != SQLITE_OK)
        return fail(s, rc, "queueing a job");
    md_video_rec *v = malloc(sizeof *v);
    md_status ret = v ? sq_video_get(base, video_id, v) : MD_ERR_NOMEM;
    if (ret == MD_OK && v->job_id && (v->job_state == MD_JOB_QUEUED || v->job_state == MD_JOB_RUNNING))
        ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_CONFLICT, "video %lld is %s already (job %lld)", video_id,
                      v->job_state == MD_JOB_QUEUED ? "queued" : "being indexed", v->job_id);
    if (ret == MD_OK) {
        rc = run(s, &changes,
                 "INSERT INTO jobs (video_id, kind, state, created_at, updated_at) VALUES (?1, 'index', 'queued', ?2, ?2)",
                 "ii", video_id, now);
        if (rc != SQLITE_DONE)
            ret = fail(s, rc, "queueing a job");
        else
            *job_id = sqlite3_last_insert_rowid(s->db);
    }
    if (ret == MD_OK && (rc = commit(s)) != SQLITE_OK)
        ret = fail(s, rc, "committing a job");
    if (ret != MD_OK)
        rollback(s);
    if (ret == MD_ERR_NOMEM)
        md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOMEM, "out of memory");
    free(v);
    return ret;
}

static md_status sq_job_claim(md_store *base, md_job_claim *out)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    memset(out, 0, sizeof *out);
    /* One UPDATE ... RETURNING: two connections never take the same job. */
    int rc = prepare(s, &st,
                     "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?1, updated_at = ?1, "
                     "progress_done = 0 "
                     "WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1) "
                     "RETURNING id, video_id",
                     "i", md_now_ms());
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        out->job_id = sqlite3_column_int64(st, 0);
        out->video_id = sqlite3_column_int64(st, 1);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fail(s, rc, "claiming a job");
    if (!out->job_id)
        return MD_OK;
    rc = prepare(s, &st, "SELECT source, path, size_bytes, file_dev, file_ino, file_mtime_ns FROM videos WHERE id = ?",
                 "i", out->video_id);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *src = sqlite3_column_text(st, 0);
        out->source = src && strcmp((const char *)src, "upload") == 0 ? MD_SOURCE_UPLOAD : MD_SOURCE_PATH;
        text_col(st, 1, out->path, sizeof out->path);
        if (sqlite3_column_type(st, 3) != SQLITE_NULL)
            out->file = (md_file_id){.dev = sqlite3_column_int64(st, 3),
                                     .ino = sqlite3_column_int64(st, 4),
                                     .size = sqlite3_column_int64(st, 2),
                                     .mtime_ns = sqlite3_column_int64(st, 5)};
        rc = SQLITE_DONE;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "reading a claimed job's video");
}

static md_status sq_job_progress(md_store *base, long long job_id, long long done, long long total, const char *unit,
                                 int *gone)
{
    sq *s = SQ(base);
    int changes = 0;
    int rc = run(s, &changes,
                 "UPDATE jobs SET progress_done = ?, progress_total = ?, progress_unit = coalesce(?, progress_unit), "
                 "updated_at = ? WHERE id = ? AND state = 'running'",
                 "iitii", done, total, unit, md_now_ms(), job_id);
    if (gone)
        *gone = rc == SQLITE_DONE && changes == 0;
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "recording progress");
}

static md_status sq_job_finish(md_store *base, long long job_id, md_job_state state, const char *error)
{
    sq *s = SQ(base);
    long long now = md_now_ms();
    int rc = run(s, NULL,
                 "UPDATE jobs SET state = ?1, error = ?2, finished_at = ?3, updated_at = ?3, "
                 "progress_done = CASE WHEN ?1 = 'done' THEN progress_total ELSE progress_done END WHERE id = ?4",
                 "ttii", md_job_state_name(state), error, now, job_id);
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "recording the job's end");
}

static md_status sq_job_requeue(md_store *base, long long job_id)
{
    sq *s = SQ(base);
    int rc = run(s, NULL,
                 "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), updated_at = ? "
                 "WHERE id = ? AND state = 'running'",
                 "ii", md_now_ms(), job_id);
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "putting a job back in the queue");
}

static md_status sq_jobs_recover(md_store *base, int retries, md_store_recover_fn each, void *ctx)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, &st,
                     "UPDATE jobs SET state = CASE WHEN attempts > ?1 THEN 'failed' ELSE 'queued' END, "
                     "error = CASE WHEN attempts > ?1 THEN 'interrupted ' || attempts || ' times (the "
                     "daemon stopped while running it); giving up' ELSE NULL END, "
                     "finished_at = CASE WHEN attempts > ?1 THEN ?2 ELSE NULL END, updated_at = ?2 "
                     "WHERE state = 'running' RETURNING id, state",
                     "ii", (long long)retries, md_now_ms());
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (each)
            each(ctx, sqlite3_column_int64(st, 0), strcmp((const char *)sqlite3_column_text(st, 1), "queued") == 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "recovering jobs");
}

static md_status sq_jobs_queue_reindex(md_store *base, long long model_id, int *n_queued)
{
    sq *s = SQ(base);
    long long now = md_now_ms();
    int changes = 0;
    int rc = run(s, &changes,
                 "INSERT INTO jobs (video_id, kind, state, created_at, updated_at) "
                 "SELECT v.id, 'index', 'queued', ?1, ?1 FROM videos v "
                 "WHERE (SELECT state FROM jobs WHERE video_id = v.id ORDER BY id DESC LIMIT 1) = 'done' "
                 "AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.video_id = v.id AND s.model_id = ?2)",
                 "ii", now, model_id);
    *n_queued = changes;
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "queueing re-indexing");
}

static md_status sq_job_checkpoint(md_store *base, long long job_id, long long model_id, void **blob, size_t *len,
                                   long long *stored)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    md_status ret = MD_OK;
    *blob = NULL;
    *len = 0;
    *stored = 0;
    int rc = prepare(s, &st,
                     "SELECT j.checkpoint, (SELECT count(*) FROM segments WHERE video_id = j.video_id AND model_id = ?) "
                     "FROM jobs j WHERE j.id = ?",
                     "ii", model_id, job_id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *stored = sqlite3_column_int64(st, 1);
        const void *b = sqlite3_column_blob(st, 0);
        int n = sqlite3_column_bytes(st, 0);
        if (b && n > 0) {
            if (!(*blob = malloc((size_t)n)))
                ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOMEM, "out of memory reading a checkpoint");
            else {
                memcpy(*blob, b, (size_t)n);
                *len = (size_t)n;
            }
        }
    } else if (rc == SQLITE_DONE) {
        ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOT_FOUND, "no job with id %lld", job_id);
    } else {
        ret = fail(s, rc, "reading the job's checkpoint");
    }
    sqlite3_finalize(st);
    return ret;
}

/* ---- segments and models ------------------------------------------------------------------ */

static md_status sq_window_commit(md_store *base, const md_window_rec *w)
{
    sq *s = SQ(base);
    sqlite3_stmt *ins = NULL;
    md_status ret = MD_OK;
    uint8_t *blob = NULL;
    int changes = 0;
    int rc = begin(s);
    if (rc != SQLITE_OK)
        return fail(s, rc, "starting a window's transaction");
    rc = run(s, &changes,
             "UPDATE jobs SET progress_done = ?, progress_total = max(progress_total, ?), progress_unit = 'frames', "
             "checkpoint = ?, updated_at = ? WHERE id = ? AND state = 'running'",
             "iibii", w->progress_done, w->progress_done, w->checkpoint, (int)w->checkpoint_len, md_now_ms(),
             w->job_id);
    if (rc != SQLITE_DONE) {
        ret = fail(s, rc, "recording progress");
        goto out;
    }
    if (changes == 0) {
        ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_CANCELLED, "job %lld no longer exists", w->job_id);
        goto out;
    }
    if (!(blob = malloc((size_t)w->dim * 2))) {
        ret = md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOMEM, "out of memory storing segments");
        goto out;
    }
    rc = prepare(s, &ins, "INSERT INTO segments (video_id, model_id, seq, start_ms, end_ms, embedding) "
                          "VALUES (?, ?, ?, ?, ?, ?)", NULL);
    for (int j = 0; rc == SQLITE_OK && j < w->n_segs; j++) {
        const md_segment_rec *g = &w->segs[j];
        for (int d = 0; d < w->dim; d++) { /* little-endian, whatever the host */
            blob[2 * d] = (uint8_t)(g->emb[d] & 0xff);
            blob[2 * d + 1] = (uint8_t)(g->emb[d] >> 8);
        }
        sqlite3_reset(ins);
        sqlite3_bind_int64(ins, 1, w->video_id);
        sqlite3_bind_int64(ins, 2, w->model_id);
        sqlite3_bind_int64(ins, 3, g->seq);
        sqlite3_bind_int64(ins, 4, g->start_ms);
        sqlite3_bind_int64(ins, 5, g->end_ms);
        sqlite3_bind_blob(ins, 6, blob, w->dim * 2, SQLITE_STATIC);
        rc = sqlite3_step(ins);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    if (rc != SQLITE_OK) {
        ret = fail(s, rc, "storing segments");
        goto out;
    }
    if ((rc = commit(s)) != SQLITE_OK)
        ret = fail(s, rc, "committing segments");
out:
    sqlite3_finalize(ins);
    free(blob);
    if (ret != MD_OK)
        rollback(s);
    return ret;
}

static md_status sq_segments_clear(md_store *base, long long video_id, long long model_id)
{
    sq *s = SQ(base);
    int rc = run(s, NULL, "DELETE FROM segments WHERE video_id = ? AND model_id = ?", "ii", video_id, model_id);
    return rc == SQLITE_DONE ? MD_OK : fail(s, rc, "clearing old segments");
}

static md_status sq_segments_load(md_store *base, long long model_id, int dim, md_store_segment_fn fn, void *ctx,
                                  long long *bad)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    md_status ret = MD_OK;
    uint16_t *v = malloc((size_t)dim * sizeof *v);
    *bad = 0;
    if (!v)
        return md_errf(s->base.err, sizeof s->base.err, MD_ERR_NOMEM, "out of memory loading segments");
    int rc = prepare(s, &st,
                     "SELECT video_id, seq, start_ms, end_ms, embedding FROM segments WHERE model_id = ? "
                     "ORDER BY video_id, seq",
                     "i", model_id);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        rc = SQLITE_OK;
        const unsigned char *b = sqlite3_column_blob(st, 4);
        if (!b || sqlite3_column_bytes(st, 4) != dim * 2) {
            (*bad)++; /* a damaged row loses that segment, never the start-up */
            continue;
        }
        for (int i = 0; i < dim; i++)
            v[i] = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
        md_status fs = fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_int(st, 1), sqlite3_column_int64(st, 2),
                          sqlite3_column_int64(st, 3), v);
        if (fs == MD_ERR_INVALID)
            (*bad)++; /* the row's values are unusable (the index refused them) */
        else if (fs != MD_OK) {
            ret = md_errf(s->base.err, sizeof s->base.err, fs, "loading segments: %s", md_status_str(fs));
            break;
        }
    }
    if (ret == MD_OK && rc != SQLITE_DONE)
        ret = fail(s, rc, "reading segments");
    sqlite3_finalize(st);
    free(v);
    return ret;
}

static md_status sq_model_register(md_store *base, const md_model_rec *m, long long *model_id)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    int rc = prepare(s, &st,
                     "INSERT INTO models (name, kind, weights_sha256, preprocess_hash, dim, config, created_at, "
                     "temporal_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                     "ON CONFLICT (weights_sha256, preprocess_hash) DO UPDATE SET name = excluded.name RETURNING id",
                     "ttttitit", m->name, m->kind, m->weights_sha256, m->preprocess_hash, (long long)m->dim, m->config,
                     md_now_ms(), m->temporal_sha256);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        *model_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? MD_OK : fail(s, rc, "recording the model");
}

static md_status sq_stats_get(md_store *base, md_store_stats *out)
{
    sq *s = SQ(base);
    sqlite3_stmt *st = NULL;
    memset(out, 0, sizeof *out);
    int rc = prepare(s, &st,
                     "SELECT (SELECT count(*) FROM jobs WHERE state = 'queued'), "
                     "(SELECT count(*) FROM jobs WHERE state = 'running'), "
                     "(SELECT count(*) FROM jobs WHERE state = 'done'), "
                     "(SELECT count(*) FROM jobs WHERE state = 'failed'), "
                     "(SELECT count(*) FROM videos), "
                     "(SELECT coalesce(sum(size_bytes), 0) FROM videos WHERE source = 'upload'), "
                     "(SELECT coalesce(sum(size_bytes), 0) FROM videos WHERE source = 'path')",
                     NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        out->jobs_queued = sqlite3_column_int64(st, 0);
        out->jobs_running = sqlite3_column_int64(st, 1);
        out->jobs_done = sqlite3_column_int64(st, 2);
        out->jobs_failed = sqlite3_column_int64(st, 3);
        out->videos = sqlite3_column_int64(st, 4);
        out->bytes_stored = sqlite3_column_int64(st, 5);
        out->bytes_indexed_paths = sqlite3_column_int64(st, 6);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? MD_OK : fail(s, rc, "reading statistics");
}

static const md_store_i SQLITE_I = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .version = sq_version,
    .latest_version = sq_latest_version,
    .video_insert = sq_video_insert,
    .video_find_sha = sq_video_find_sha,
    .video_get = sq_video_get,
    .video_list = sq_video_list,
    .video_delete = sq_video_delete,
    .video_set_probe = sq_video_set_probe,
    .video_add_damage = sq_video_add_damage,
    .video_set_coverage = sq_video_set_coverage,
    .video_set_tokens = sq_video_set_tokens,
    .job_get = sq_job_get,
    .job_claim = sq_job_claim,
    .job_list = sq_job_list,
    .job_cancel = sq_job_cancel,
    .video_reindex = sq_video_reindex,
    .job_progress = sq_job_progress,
    .job_finish = sq_job_finish,
    .job_requeue = sq_job_requeue,
    .jobs_recover = sq_jobs_recover,
    .jobs_queue_reindex = sq_jobs_queue_reindex,
    .job_checkpoint = sq_job_checkpoint,
    .window_commit = sq_window_commit,
    .segments_clear = sq_segments_clear,
    .segments_load = sq_segments_load,
    .model_register = sq_model_register,
    .stats_get = sq_stats_get,
};

const md_store_i *md_store_sqlite(void) { return &SQLITE_I; }
