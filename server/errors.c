/* errors.c - the one place where an md_status becomes an HTTP status and an
 * error code for {"error":{"code":"...","message":"..."}}. Pure mappings: the
 * reply itself is built by http.c (md_reply_status, md_reply_error), which
 * calls these, so the dependency points one way. */
#include "server.h"

unsigned int md_http_status(md_status st)
{
    switch (st) {
    case MD_OK: return 200;
    case MD_ERR_INVALID: return 400;
    case MD_ERR_UNAUTHORIZED: return 401;
    case MD_ERR_FORBIDDEN: return 403;
    case MD_ERR_NOT_FOUND: return 404;
    case MD_ERR_CONFLICT: return 409;
    case MD_ERR_TOO_LARGE: return 413;
    case MD_ERR_MEDIA: return 422;
    case MD_ERR_UNSUPPORTED: return 422;
    case MD_ERR_CANCELLED: return 409;
    case MD_ERR_NOMEM: return 503;
    case MD_ERR_UNAVAILABLE: return 503;
    case MD_ERR_NO_SPACE: return 507;
    case MD_ERR_IO:
    case MD_ERR_DB:
    case MD_ERR_INTERNAL: return 500;
    }
    return 500;
}

const char *md_http_code(md_status st)
{
    switch (st) {
    case MD_ERR_INVALID: return "invalid_request";
    case MD_ERR_NO_SPACE: return "insufficient_storage";
    default: return md_status_str(st);
    }
}
