/* store.h - the SQLite database of momentd: opening, migrations, small helpers.
 *
 * One md_store wraps one sqlite3 connection. A connection is used by one thread
 * at a time (callers that share one hold their own mutex); every thread that
 * works independently (each worker) opens its own. The database runs in WAL mode
 * with foreign keys on and a busy timeout, so connections wait for each other
 * instead of failing.
 *
 * Migrations are the files schema/NNN-name.sql, compiled into the binary
 * (build/embedded.c); md_store_open applies those whose number is above
 * PRAGMA user_version, each in its own transaction, and refuses a database
 * whose version is newer than this binary knows.
 */
#ifndef MD_STORE_H
#define MD_STORE_H

#include <sqlite3.h>
#include <stddef.h>

#include "cJSON.h"
#include "../base/status.h"

typedef struct md_store {
    sqlite3 *db;
    char path[4096];
} md_store;

/* Opens (creating if needed) the database at PATH and migrates it. On failure
 * *OUT is NULL and ERR says why. */
md_status md_store_open(const char *path, md_store **out, char *err, size_t errlen);
/* Closes the connection (runs a passive WAL checkpoint first). NULL is a no-op. */
void md_store_close(md_store *s);

/* Schema version of the open database (PRAGMA user_version). */
int md_store_version(md_store *s);
/* Highest migration compiled into this binary. */
int md_store_latest_version(void);

/* Runs SQL with no result rows. */
md_status md_store_exec(md_store *s, const char *sql, char *err, size_t errlen);
md_status md_store_begin(md_store *s);  /* BEGIN IMMEDIATE */
md_status md_store_commit(md_store *s);
void md_store_rollback(md_store *s);

/* Converts the current row of STMT into a JSON object, one member per column,
 * named by the column: INTEGER -> number, REAL -> number, TEXT -> string,
 * NULL -> null, BLOB -> omitted. Returns NULL on allocation failure. */
cJSON *md_store_row_json(sqlite3_stmt *stmt);

/* Maps a SQLite result code to an md_status (SQLITE_FULL -> MD_ERR_NO_SPACE ...). */
md_status md_store_status(int rc);

#endif
