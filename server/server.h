/* server.h - the HTTP side of momentd: request state, the route table, and
 * the helpers handlers use to answer. Internal to server/.
 *
 * A request moves through http.c: the first callback matches the route and
 * checks method, API key and declared size; body callbacks feed either a JSON
 * buffer (capped) or an md_upload (streamed to disk, raw or multipart); the last
 * callback runs the route's handler, which fills r->code and r->json (or
 * r->text, or a binary body: md_resp_bytes/take/file) or returns a status
 * that errors.c turns into the one error shape.
 */
#ifndef MD_SERVER_H
#define MD_SERVER_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "../engine/momentd.h"
#include "config.h"

#define MD_MAX_JSON_BODY (1 << 20)
#define MD_MAX_ROUTE_PARAMS 2

/* Limits on the request head, checked in the first callback so that the answer is the one JSON
 * error shape (414, 431) rather than libmicrohttpd's HTML. libmicrohttpd parses the head inside a
 * per-connection memory pool (MD_MHD_CONNECTION_MEMORY) before any callback runs: the head's bytes
 * plus a 48-byte record per header and per query argument. A head that overflows the pool is
 * answered by libmicrohttpd itself (414/431 in HTML, see md_server_start), so the pool is made
 * much larger than these limits: heads up to about 200 KB with ordinary field counts reach our
 * check and get JSON. The pool is also the read buffer (half of it), and libmicrohttpd zeroes all
 * of it between requests on a kept-alive connection, so it costs that much resident memory per
 * such connection: 256 KiB x MHD_OPTION_CONNECTION_LIMIT (1024) = 256 MiB at worst. */
#define MD_MAX_URL_BYTES (32 * 1024)    /* path + query string, as decoded */
#define MD_MAX_QUERY_ARGS 2048          /* query-string arguments */
#define MD_MAX_HEADER_BYTES (32 * 1024) /* header names and values, together */
#define MD_MAX_HEADERS 200              /* header fields */
#define MD_MHD_CONNECTION_MEMORY (256 * 1024)

typedef struct md_server md_server;
typedef struct md_req md_req;

typedef enum {
    MD_BODY_NONE = 0, /* body ignored */
    MD_BODY_JSON,     /* buffered up to MD_MAX_JSON_BODY, parsed into r->body_json */
    MD_BODY_UPLOAD,   /* streamed into an md_upload: raw bytes or multipart/form-data */
    MD_BODY_QUERY     /* JSON (as MD_BODY_JSON), or a picture: multipart/form-data or a raw
                         image body, streamed to a temporary file (r->file_path, capped at
                         MD_MAX_QUERY_FILE); multipart form fields land in r->form */
} md_body_kind;

#define MD_MAX_QUERY_FILE (32LL << 20)

typedef md_status (*md_handler_fn)(md_req *r, md_errbuf *e);

/* A body other than JSON or text: any bytes with a length, or a range of an open file. */
typedef enum {
    MD_RESP_NONE = 0,
    MD_RESP_BYTES, /* resp_data, resp_len */
    MD_RESP_FILE   /* resp_fd from resp_off, resp_flen bytes */
} md_resp_kind;

typedef struct md_route {
    const char *method;
    const char *pattern; /* segments; "{id}" matches a positive integer */
    md_handler_fn fn;
    md_body_kind body;
    int public_route; /* answered without the API key */
    int compute;      /* CPU-heavy (text encoding, scoring): runs in one of http_threads compute slots */
} md_route;

extern const md_route md_routes[];
extern const int md_n_routes;

struct md_server {
    md_config *cfg;
    md_library *lib; /* NULL while starting */
    atomic_int state; /* 0 starting, 1 serving, 2 stopping */
    struct MHD_Daemon *mhd;
    unsigned short port;
    double started_mono;
    /* Compute slots (md_route.compute): such handlers run compute_slots at a time (setting
     * http_threads, 0: the CPU cores). Every connection has its own thread, so a search waiting
     * here, or running, never holds up another connection (an upload's bytes keep flowing), and
     * more searches than cores at once would only share the cores, each slower, and starve the
     * threads that move bytes. */
    pthread_mutex_t compute_mu;
    pthread_cond_t compute_cv;
    int compute_busy, compute_slots;
};

struct md_req {
    md_server *srv;
    struct MHD_Connection *conn;
    const char *method, *url;
    const md_route *route;
    int route_index; /* -1 when no route matched */
    long long params[MD_MAX_ROUTE_PARAMS];
    double t0;
    int authorized; /* no api_key is set, or the request carries it */

    /* body */
    char *body;
    size_t body_len, body_cap;
    cJSON *body_json;
    md_body_kind mode; /* what this request's body turned out to be */
    md_upload *upload;
    struct MHD_PostProcessor *pp;
    int multipart, saw_file;
    /* The multipart file part being received: its field name and file name (to tell a second
     * part from more bytes of the first) and the offset its next bytes must have. */
    char *part_key, *part_filename;
    uint64_t part_next_off;
    int file_fd;             /* MD_BODY_QUERY picture: temporary file, removed when the request ends */
    char file_path[4200];
    long long file_size;
    cJSON *form;             /* multipart form fields (name -> string) */
    md_status body_status; /* first error while receiving the body */
    md_errbuf body_err;

    /* response: r->code with one body, looked at in this order: json; text (NUL-terminated,
     * sent up to its NUL, copied at send time); or bytes/file, set only through md_resp_bytes,
     * md_resp_take or md_resp_file below. */
    unsigned int code;
    cJSON *json;
    char *text; /* alternative to json, with text_type */
    const char *text_type;
    int text_static; /* text is not ours to free */
    md_resp_kind resp_kind;
    void *resp_data;         /* MD_RESP_BYTES: owned by r (malloc'd) until sent */
    size_t resp_len;
    int resp_fd;             /* MD_RESP_FILE: owned by r until sent */
    uint64_t resp_off, resp_flen;
    const char *resp_type;   /* Content-Type of bytes/file; static storage */
    const char *allow;  /* Allow header for 405 */
    int responded;
};

/* Answers with the error shape {"error":{"code","message"}} for status ST (http.c, with the
 * mapping of errors.c). */
void md_reply_status(md_req *r, md_status st, const char *msg);
/* Same with an explicit HTTP code and error code, for HTTP-level errors (405, 404 route). */
void md_reply_error(md_req *r, unsigned int http, const char *code, const char *msg);
/* HTTP status for an md_status, and its error code (errors.c: pure mappings). */
unsigned int md_http_status(md_status st);
const char *md_http_code(md_status st);

/* Binary bodies. A handler sets one, sets r->code and returns MD_OK; http.c sends it after the
 * handler returns. Each replaces whatever body r had (JSON, text or an earlier one), and an
 * error reply (md_reply_status/md_reply_error) releases it again. TYPE is the Content-Type, a
 * string of static storage; the Content-Length is LEN, whatever the bytes are (NULs included).
 *
 * md_resp_bytes copies LEN bytes of DATA at once (DATA stays the caller's and may be freed or
 * go out of scope on return); MD_ERR_NOMEM when the copy cannot be made (r's body is then
 * none).
 * md_resp_take takes ownership of DATA (from malloc; NULL only with LEN 0): handed to MHD
 * with MHD_RESPMEM_MUST_FREE, which frees it once sent, or freed by http.c when the request
 * ends without it being sent.
 * md_resp_file takes ownership of FD, open for reading in blocking mode (as MHD requires):
 * LEN bytes from OFFSET go out through MHD_create_response_from_fd_at_offset64 (sendfile where
 * it can), and MHD closes FD when done with the response; if it is never sent, http.c closes
 * it. The caller checks that the range lies within the file: when the file ends early MHD
 * drops the connection and the client sees a short body. */
md_status md_resp_bytes(md_req *r, const void *data, size_t len, const char *type);
void md_resp_take(md_req *r, void *data, size_t len, const char *type);
void md_resp_file(md_req *r, int fd, uint64_t offset, uint64_t len, const char *type);

/* Queues r's response on r->conn: r->code with its body and headers (Content-Type, Allow,
 * WWW-Authenticate, CORS). The body's buffer or file goes to MHD (r no longer owns it).
 * Called once per request, by http.c after the handler (and by the error replies); declared
 * here so that a unit test can send through it from its own MHD daemon. */
enum MHD_Result md_send_response(md_req *r);

/* A query-string parameter, or NULL. */
const char *md_query_str(md_req *r, const char *name);

/* Matches URL against a route PATTERN; fills PARAMS for "{id}" segments.
 * 1: match, 0: no match, -1: the shape matches but an id is not a positive integer. */
int md_match_pattern(const char *pattern, const char *url, long long *params);

/* Metrics (http.c): counted per route and status, and a latency histogram per route
 * (MD_LATENCY_BUCKETS upper bounds, in seconds). Thread-safe. */
void md_metrics_count(int route_index, unsigned int code, double seconds);
/* Appends the request counters and histograms in Prometheus text format to *BUF (malloc'd, grown
 * with realloc; the caller frees it). Returns 0, or -1 when memory ran out (the text is cut). */
int md_metrics_write(char **buf, size_t *len, size_t *cap);
/* printf-style append to a growing buffer as above (*BUF NUL-terminated); 0, or -1 when the
 * buffer could not grow (nothing appended). */
int md_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The OpenAPI document compiled into the binary (build/embedded.c). */
extern const char md_openapi_json[];

/* Starts listening (SRV's cfg set; lib may still be NULL: requests then get 503). Every
 * connection is served by its own thread. md_server_stop stops accepting, waits for the requests
 * in progress and frees what start made; safe to call when start failed or never ran (SRV
 * zeroed). */
md_status md_server_start(md_server *srv, md_errbuf *e);
void md_server_stop(md_server *srv);

#endif
