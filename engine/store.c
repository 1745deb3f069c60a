/* store.c - SQLite connection set-up, schema migrations and row helpers. */
#define _XOPEN_SOURCE 700
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/log.h"

/* Generated from schema/NNN-*.sql by the Makefile (build/embedded.c). */
extern const char *const md_migrations[];
extern const int md_n_migrations;

int md_store_latest_version(void) { return md_n_migrations; }

md_status md_store_status(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW: return MD_OK;
    case SQLITE_FULL: return MD_ERR_NO_SPACE;
    case SQLITE_NOMEM: return MD_ERR_NOMEM;
    case SQLITE_CONSTRAINT: return MD_ERR_CONFLICT;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY: return MD_ERR_IO;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return MD_ERR_UNAVAILABLE;
    default: return MD_ERR_DB;
    }
}

md_status md_store_exec(md_store *s, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        if (err)
            snprintf(err, errlen, "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return md_store_status(rc);
    }
    return MD_OK;
}

md_status md_store_begin(md_store *s) { return md_store_exec(s, "BEGIN IMMEDIATE", NULL, 0); }
md_status md_store_commit(md_store *s) { return md_store_exec(s, "COMMIT", NULL, 0); }
void md_store_rollback(md_store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        md_store_exec(s, "ROLLBACK", NULL, 0);
}

int md_store_version(md_store *s)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static md_status migrate(md_store *s, char *err, size_t errlen)
{
    int have = md_store_version(s);
    if (have < 0) {
        snprintf(err, errlen, "%s: cannot read schema version: %s", s->path, sqlite3_errmsg(s->db));
        return MD_ERR_DB;
    }
    if (have > md_n_migrations) {
        snprintf(err, errlen, "%s: schema version %d is newer than this momentd knows (%d); upgrade momentd", s->path,
                 have, md_n_migrations);
        return MD_ERR_CONFLICT;
    }
    for (int v = have + 1; v <= md_n_migrations; v++) {
        char e[512];
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v);
        md_status st = md_store_begin(s);
        if (st == MD_OK)
            st = md_store_exec(s, md_migrations[v - 1], e, sizeof e);
        if (st == MD_OK)
            st = md_store_exec(s, pragma, e, sizeof e);
        if (st == MD_OK)
            st = md_store_commit(s);
        if (st != MD_OK) {
            md_store_rollback(s);
            snprintf(err, errlen, "%s: migration %03d failed: %s", s->path, v, e);
            return st;
        }
        md_info("store: applied migration %03d to %s", v, s->path);
    }
    return MD_OK;
}

md_status md_store_open(const char *path, md_store **out, char *err, size_t errlen)
{
    md_status st = MD_OK;
    md_store *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s)
        return MD_ERR_NOMEM;
    snprintf(s->path, sizeof s->path, "%s", path);
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open database: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        st = md_store_status(rc);
        goto out;
    }
    sqlite3_busy_timeout(s->db, 10000);
    sqlite3_extended_result_codes(s->db, 1);
    /* quick_check first: a file that is not a database, or a damaged one, is
     * a clear start-up error instead of a failure somewhere later. */
    char e[512] = "";
    if ((st = md_store_exec(s, "PRAGMA journal_mode=WAL", e, sizeof e)) != MD_OK ||
        (st = md_store_exec(s, "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON", e, sizeof e)) != MD_OK) {
        snprintf(err, errlen, "%s: not a usable SQLite database: %s", path, e);
        goto out;
    }
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &q, NULL) != SQLITE_OK || sqlite3_step(q) != SQLITE_ROW ||
        strcmp((const char *)sqlite3_column_text(q, 0), "ok") != 0) {
        snprintf(err, errlen, "%s: database is damaged: %s", path,
                 q && sqlite3_column_text(q, 0) ? (const char *)sqlite3_column_text(q, 0) : sqlite3_errmsg(s->db));
        sqlite3_finalize(q);
        st = MD_ERR_DB;
        goto out;
    }
    sqlite3_finalize(q);
    if ((st = migrate(s, err, errlen)) != MD_OK)
        goto out;
    *out = s;
    return MD_OK;
out:
    md_store_close(s);
    return st;
}

void md_store_close(md_store *s)
{
    if (!s)
        return;
    if (s->db) {
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        sqlite3_close_v2(s->db);
    }
    free(s);
}

cJSON *md_store_row_json(sqlite3_stmt *stmt)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    int n = sqlite3_column_count(stmt);
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(stmt, i);
        cJSON *v = NULL;
        switch (sqlite3_column_type(stmt, i)) {
        case SQLITE_INTEGER: v = cJSON_CreateNumber((double)sqlite3_column_int64(stmt, i)); break;
        case SQLITE_FLOAT: v = cJSON_CreateNumber(sqlite3_column_double(stmt, i)); break;
        case SQLITE_TEXT: v = cJSON_CreateString((const char *)sqlite3_column_text(stmt, i)); break;
        case SQLITE_NULL: v = cJSON_CreateNull(); break;
        default: continue;
        }
        if (!v || !cJSON_AddItemToObject(o, name, v)) {
            cJSON_Delete(v);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}
