/* status.h - the one status type of momentd.
 *
 * Every fallible function returns an md_status and writes its results through
 * out-parameters. Long-lived objects keep a last-error message next to it; the
 * server maps a status to an HTTP status and error code in exactly one place
 * (server/errors.c). Keep the enum and md_status_str() in step.
 */
#ifndef MD_STATUS_H
#define MD_STATUS_H

typedef enum md_status {
    MD_OK = 0,
    MD_ERR_INVALID,      /* bad input from a user: request, setting, argument */
    MD_ERR_NOT_FOUND,    /* unknown id or missing file */
    MD_ERR_FORBIDDEN,    /* path outside the allowed roots */
    MD_ERR_UNAUTHORIZED, /* missing or wrong API key */
    MD_ERR_TOO_LARGE,    /* over a configured size limit */
    MD_ERR_CONFLICT,     /* state does not allow the operation */
    MD_ERR_MEDIA,        /* file is not a usable video */
    MD_ERR_UNSUPPORTED,  /* valid but not supported (codec, dtype, op) */
    MD_ERR_IO,           /* read/write/open failed */
    MD_ERR_NO_SPACE,     /* disk full */
    MD_ERR_NOMEM,        /* allocation failed */
    MD_ERR_DB,           /* SQLite failed */
    MD_ERR_CANCELLED,    /* work stopped because its object went away or shutdown */
    MD_ERR_UNAVAILABLE,  /* not ready yet / shutting down */
    MD_ERR_INTERNAL      /* a bug: should not happen */
} md_status;

#include <stddef.h>

/* Static, never NULL. */
const char *md_status_str(md_status s);

/* Formats a message into ERR (when ERR and ERRLEN are set) and returns ST:
 * "return md_errf(err, errlen, MD_ERR_INVALID, "%s: bad header", path);". */
md_status md_errf(char *err, size_t errlen, md_status st, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A message buffer for the engine's public functions (momentd.h), which take one to explain a
 * failure to their caller. */
typedef struct md_errbuf {
    char msg[1024];
} md_errbuf;

/* Sets E->msg (if E is not NULL) and returns ST, for "return md_fail(e, st, ...)". */
md_status md_fail(md_errbuf *e, md_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
