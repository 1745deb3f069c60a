/* status.c - names of md_status values (used in logs and error codes). */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>

const char *md_status_str(md_status s)
{
    switch (s) {
    case MD_OK: return "ok";
    case MD_ERR_INVALID: return "invalid";
    case MD_ERR_NOT_FOUND: return "not_found";
    case MD_ERR_FORBIDDEN: return "forbidden";
    case MD_ERR_UNAUTHORIZED: return "unauthorized";
    case MD_ERR_TOO_LARGE: return "too_large";
    case MD_ERR_CONFLICT: return "conflict";
    case MD_ERR_MEDIA: return "bad_media";
    case MD_ERR_UNSUPPORTED: return "unsupported";
    case MD_ERR_IO: return "io_error";
    case MD_ERR_NO_SPACE: return "no_space";
    case MD_ERR_NOMEM: return "out_of_memory";
    case MD_ERR_DB: return "database_error";
    case MD_ERR_CANCELLED: return "cancelled";
    case MD_ERR_UNAVAILABLE: return "unavailable";
    case MD_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}

md_status md_errf(char *err, size_t errlen, md_status st, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

md_status md_fail(md_errbuf *e, md_status st, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}
