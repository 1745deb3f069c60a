/* http.c - libmicrohttpd glue: route matching, authentication, CORS, request
 * bodies (JSON or streamed uploads), responses, the request log and the
 * request counters behind /metrics.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

/* ---- request counters and latency histograms ------------------------- */

#define MAX_COUNTERS 512
static struct counter {
    int route;
    unsigned int code;
    unsigned long long n;
    double seconds;
} g_counters[MAX_COUNTERS];
static int g_n_counters;

/* Upper bounds of the latency buckets, in seconds: from a cached health check (well under 1 ms)
 * to a multi-gigabyte upload (minutes); +Inf is implicit. */
static const double LATENCY_BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1,      2.5,   5,    10,    30,   60,  300};
#define N_BUCKETS (sizeof LATENCY_BUCKETS / sizeof LATENCY_BUCKETS[0])
#define MAX_ROUTES 64
/* Per route (index + 1; 0 is "no route matched"): requests per bucket (not cumulative: the
 * running sums are made when written), all requests, and their seconds. */
static struct histogram {
    unsigned long long bucket[N_BUCKETS];
    unsigned long long count;
    double sum;
} g_hist[MAX_ROUTES + 1];
static pthread_mutex_t g_counters_mu = PTHREAD_MUTEX_INITIALIZER;

void md_metrics_count(int route_index, unsigned int code, double seconds)
{
    assert(md_n_routes <= MAX_ROUTES && route_index < md_n_routes);
    pthread_mutex_lock(&g_counters_mu);
    int i = 0;
    for (; i < g_n_counters; i++)
        if (g_counters[i].route == route_index && g_counters[i].code == code)
            break;
    if (i == g_n_counters && g_n_counters < MAX_COUNTERS)
        g_counters[g_n_counters++] = (struct counter){route_index, code, 0, 0};
    if (i < MAX_COUNTERS) {
        g_counters[i].n++;
        g_counters[i].seconds += seconds;
    }
    struct histogram *h = &g_hist[route_index + 1];
    size_t b = 0;
    while (b < N_BUCKETS && seconds > LATENCY_BUCKETS[b])
        b++;
    if (b < N_BUCKETS)
        h->bucket[b]++;
    h->count++;
    h->sum += seconds;
    pthread_mutex_unlock(&g_counters_mu);
}

int md_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? *cap - *len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
        if (*buf && *len + (size_t)n < *cap) {
            *len += (size_t)n;
            return 0;
        }
        size_t nc = (*cap ? *cap * 2 : 4096) + (size_t)n;
        char *nb = realloc(*buf, nc);
        if (!nb) {
            if (*buf)
                (*buf)[*len] = 0; /* vsnprintf may have written a cut piece */
            return -1;
        }
        *buf = nb;
        *cap = nc;
    }
}

int md_metrics_write(char **buf, size_t *len, size_t *cap)
{
    int bad = md_appendf(buf, len, cap,
                         "# HELP momentd_http_requests_total HTTP requests by route and status.\n"
                         "# TYPE momentd_http_requests_total counter\n");
    pthread_mutex_lock(&g_counters_mu);
    for (int i = 0; i < g_n_counters; i++) {
        const struct counter *c = &g_counters[i];
        const char *m = c->route >= 0 ? md_routes[c->route].method : "";
        const char *p = c->route >= 0 ? md_routes[c->route].pattern : "unmatched";
        bad |= md_appendf(buf, len, cap, "momentd_http_requests_total{method=\"%s\",route=\"%s\",status=\"%u\"} %llu\n",
                          m, p, c->code, c->n);
    }
    bad |= md_appendf(buf, len, cap,
                      "# HELP momentd_http_request_seconds_total Time spent answering, by route and status.\n"
                      "# TYPE momentd_http_request_seconds_total counter\n");
    for (int i = 0; i < g_n_counters; i++) {
        const struct counter *c = &g_counters[i];
        const char *m = c->route >= 0 ? md_routes[c->route].method : "";
        const char *p = c->route >= 0 ? md_routes[c->route].pattern : "unmatched";
        bad |= md_appendf(buf, len, cap,
                          "momentd_http_request_seconds_total{method=\"%s\",route=\"%s\",status=\"%u\"} %.6f\n", m, p,
                          c->code, c->seconds);
    }
    /* Every route is listed, also before its first request (a histogram of zeros), so that a
     * dashboard's series exist from start-up; "unmatched" only once something did not match. */
    bad |= md_appendf(buf, len, cap,
                      "# HELP momentd_http_request_duration_seconds Time from the request's first byte of headers "
                      "to the end of the answer, by route.\n"
                      "# TYPE momentd_http_request_duration_seconds histogram\n");
    for (int r = -1; r < md_n_routes; r++) {
        const struct histogram *h = &g_hist[r + 1];
        if (r < 0 && h->count == 0)
            continue;
        const char *m = r >= 0 ? md_routes[r].method : "";
        const char *p = r >= 0 ? md_routes[r].pattern : "unmatched";
        unsigned long long cum = 0;
        for (size_t b = 0; b < N_BUCKETS; b++) {
            cum += h->bucket[b];
            bad |=
                md_appendf(buf, len, cap,
                           "momentd_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",le=\"%g\"} %llu\n",
                           m, p, LATENCY_BUCKETS[b], cum);
        }
        bad |= md_appendf(buf, len, cap,
                          "momentd_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",le=\"+Inf\"} %llu\n"
                          "momentd_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %.6f\n"
                          "momentd_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} %llu\n",
                          m, p, h->count, m, p, h->sum, m, p, h->count);
    }
    pthread_mutex_unlock(&g_counters_mu);
    return bad;
}

/* ---- routing ---------------------------------------------------------- */

/* Matches URL against PATTERN; fills PARAMS for "{id}" segments. Returns 1 on
 * a match, 0 otherwise, -1 when the shape matches but an id is not a positive
 * integer (reported as 404 for that resource). */
int md_match_pattern(const char *pattern, const char *url, long long *params)
{
    const char *p = pattern, *u = url;
    int np = 0, bad_id = 0;
    while (*p && *u) {
        if (*p != '/' || *u != '/')
            return 0;
        p++, u++;
        size_t pl = strcspn(p, "/"), ul = strcspn(u, "/");
        if (pl == 4 && strncmp(p, "{id}", 4) == 0) {
            long long v = 0;
            int ok = ul > 0 && ul <= 18;
            for (size_t i = 0; ok && i < ul; i++) {
                if (u[i] < '0' || u[i] > '9')
                    ok = 0;
                else
                    v = v * 10 + (u[i] - '0');
            }
            if (!ok || v <= 0)
                bad_id = 1;
            if (np < MD_MAX_ROUTE_PARAMS)
                params[np++] = v;
        } else if (pl != ul || strncmp(p, u, pl) != 0) {
            return 0;
        }
        p += pl, u += ul;
    }
    if (*p || *u)
        return 0;
    return bad_id ? -1 : 1;
}

/* ---- responses -------------------------------------------------------- */

static int origin_allowed(md_server *srv, const char *origin)
{
    if (!origin)
        return 0;
    for (int i = 0; i < srv->cfg->n_cors_origins; i++)
        if (strcmp(srv->cfg->cors_origins[i], "*") == 0 || strcmp(srv->cfg->cors_origins[i], origin) == 0)
            return 1;
    return 0;
}

static void add_cors(md_req *r, struct MHD_Response *resp)
{
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!origin_allowed(r->srv, origin))
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Vary", "Origin");
}

/* Drops r's body, whatever kind it is: the one place that frees json, text, bytes and file. */
static void resp_clear(md_req *r)
{
    cJSON_Delete(r->json);
    r->json = NULL;
    if (!r->text_static)
        free(r->text);
    r->text = NULL;
    r->text_static = 0;
    r->text_type = NULL;
    if (r->resp_kind == MD_RESP_BYTES)
        free(r->resp_data);
    else if (r->resp_kind == MD_RESP_FILE && r->resp_fd >= 0)
        close(r->resp_fd);
    r->resp_kind = MD_RESP_NONE;
    r->resp_data = NULL;
    r->resp_len = 0;
    r->resp_fd = -1;
    r->resp_off = r->resp_flen = 0;
    r->resp_type = NULL;
}

void md_resp_take(md_req *r, void *data, size_t len, const char *type)
{
    assert(data || len == 0);
    resp_clear(r);
    r->resp_kind = MD_RESP_BYTES;
    r->resp_data = data;
    r->resp_len = len;
    r->resp_type = type;
}

md_status md_resp_bytes(md_req *r, const void *data, size_t len, const char *type)
{
    resp_clear(r);
    void *copy = malloc(len ? len : 1); /* malloc(0) may be NULL, which would read as failure */
    if (!copy)
        return MD_ERR_NOMEM;
    if (len)
        memcpy(copy, data, len);
    md_resp_take(r, copy, len, type);
    return MD_OK;
}

void md_resp_file(md_req *r, int fd, uint64_t offset, uint64_t len, const char *type)
{
    assert(fd >= 0);
    resp_clear(r);
    r->resp_kind = MD_RESP_FILE;
    r->resp_fd = fd;
    r->resp_off = offset;
    r->resp_flen = len;
    r->resp_type = type;
}

/* The MHD response for r's body; its buffer or file then belongs to the response (MHD frees or
 * closes it), else (NULL) it stays r's and resp_clear releases it. */
static struct MHD_Response *make_response(md_req *r, const char **type)
{
    struct MHD_Response *resp = NULL;
    *type = NULL;
    if (r->json) {
        char *body = cJSON_PrintUnformatted(r->json);
        if (!body) {
            r->code = 500;
            body = strdup("{\"error\":{\"code\":\"out_of_memory\",\"message\":\"cannot format the response\"}}");
        }
        /* MUST_COPY: our buffer is freed right below, whatever MHD does with it. */
        resp = MHD_create_response_from_buffer(body ? strlen(body) : 0, body ? body : (char *)"",
                                               MHD_RESPMEM_MUST_COPY);
        free(body);
        *type = "application/json";
    } else if (r->text) {
        size_t len = strlen(r->text);
        /* MUST_COPY: text is freed with the request (or static), not by MHD. */
        resp = MHD_create_response_from_buffer(len, r->text, MHD_RESPMEM_MUST_COPY);
        if (len)
            *type = r->text_type ? r->text_type : "text/plain; charset=utf-8";
    } else if (r->resp_kind == MD_RESP_BYTES) {
        /* MUST_FREE: the buffer is MHD's from here and freed once sent; the length is ours,
         * not strlen's. On failure MHD has not taken it (resp_clear frees it). */
        resp = MHD_create_response_from_buffer(r->resp_len, r->resp_data, MHD_RESPMEM_MUST_FREE);
        if (resp) {
            r->resp_data = NULL;
            r->resp_kind = MD_RESP_NONE;
        }
        *type = r->resp_type;
    } else if (r->resp_kind == MD_RESP_FILE) {
        /* MHD closes the fd when the response is destroyed. */
        resp = MHD_create_response_from_fd_at_offset64(r->resp_flen, r->resp_fd, r->resp_off);
        if (resp) {
            r->resp_fd = -1;
            r->resp_kind = MD_RESP_NONE;
        }
        *type = r->resp_type;
    } else {
        resp = MHD_create_response_from_buffer(0, (char *)"", MHD_RESPMEM_PERSISTENT);
    }
    return resp;
}

enum MHD_Result md_send_response(md_req *r)
{
    const char *type;
    struct MHD_Response *resp = make_response(r, &type);
    resp_clear(r); /* what MHD did not take is released now, not at the end of the request */
    if (!resp)
        return MHD_NO;
    if (type)
        MHD_add_response_header(resp, "Content-Type", type);
    if (r->allow)
        MHD_add_response_header(resp, "Allow", r->allow);
    if (r->code == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"momentd\"");
    add_cors(r, resp);
    enum MHD_Result ret = MHD_queue_response(r->conn, r->code, resp);
    MHD_destroy_response(resp);
    r->responded = 1;
    return ret;
}

/* ---- auth ------------------------------------------------------------- */

static int key_ok(md_req *r)
{
    const char *key = r->srv->cfg->api_key;
    if (!key || !key[0])
        return 1;
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    /* Compare in time independent of where the first difference is. */
    size_t kl = strlen(key), hl = strlen(h);
    unsigned char diff = kl != hl;
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < hl ? h[i] : 0);
    return diff == 0;
}

/* ---- bodies ----------------------------------------------------------- */

static void body_fail(md_req *r, md_status st, const char *msg)
{
    if (r->body_status != MD_OK)
        return;
    r->body_status = st;
    snprintf(r->body_err.msg, sizeof r->body_err.msg, "%s", msg);
    md_upload_abort(r->upload);
    r->upload = NULL;
}

/* The file part of a request goes to an md_upload (uploads) or to a
 * temporary file (query pictures). */
static void sink_begin(md_req *r, const char *filename)
{
    md_errbuf e;
    md_status st;
    if (r->mode == MD_BODY_UPLOAD) {
        if ((st = md_upload_begin(r->srv->lib, filename, &r->upload, &e)) != MD_OK)
            body_fail(r, st, e.msg);
        return;
    }
    snprintf(r->file_path, sizeof r->file_path, "%s/tmp/query-XXXXXX", r->srv->cfg->data_dir);
    if ((r->file_fd = mkstemp(r->file_path)) < 0) {
        r->file_path[0] = 0;
        body_fail(r, MD_ERR_IO, "cannot create a temporary file for the picture");
    }
}

static void sink_write(md_req *r, const char *data, size_t size)
{
    if (r->mode == MD_BODY_UPLOAD) {
        md_errbuf e;
        md_status st = md_upload_write(r->upload, data, size, &e);
        if (st != MD_OK)
            body_fail(r, st, e.msg);
        return;
    }
    if (r->file_size + (long long)size > MD_MAX_QUERY_FILE) {
        body_fail(r, MD_ERR_TOO_LARGE, "query picture larger than 32 MiB");
        return;
    }
    while (size) {
        ssize_t n = write(r->file_fd, data, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            body_fail(r, errno == ENOSPC ? MD_ERR_NO_SPACE : MD_ERR_IO, "cannot store the query picture");
            return;
        }
        data += n;
        size -= (size_t)n;
        r->file_size += n;
    }
}

static int sink_open(const md_req *r) { return r->upload || r->file_path[0]; }

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                 const char *content_type, const char *transfer_encoding, const char *data,
                                 uint64_t off, size_t size)
{
    md_req *r = cls;
    (void)kind, (void)content_type, (void)transfer_encoding;
    if (r->body_status != MD_OK)
        return MHD_YES;
    if (!filename) {
        /* A form field: kept (small ones only) for handlers that take options this way. */
        if (!key || !r->form || off + size > 4096)
            return MHD_YES;
        cJSON *old = cJSON_GetObjectItemCaseSensitive(r->form, key);
        char buf[4097];
        size_t have = old && cJSON_IsString(old) ? strlen(old->valuestring) : 0;
        if (have + size > 4096)
            return MHD_YES;
        if (have)
            memcpy(buf, old->valuestring, have);
        memcpy(buf + have, data, size);
        buf[have + size] = 0;
        if (old)
            cJSON_ReplaceItemInObjectCaseSensitive(r->form, key, cJSON_CreateString(buf));
        else
            cJSON_AddStringToObject(r->form, key, buf);
        return MHD_YES;
    }
    /* A file part. libmicrohttpd gives each part's bytes with offsets from 0, so a call at offset
     * 0 after bytes were taken, or under another field or file name, starts a new part. Two
     * parts would be concatenated into one file: refused instead, naming both. */
    if (r->saw_file) {
        int same = r->part_next_off == off &&
                   (off != 0 || (strcmp(r->part_key, key ? key : "") == 0 && strcmp(r->part_filename, filename) == 0));
        if (!same) {
            char msg[700];
            snprintf(msg, sizeof msg,
                     "multipart %s has more than one file part ('%.200s', '%.200s'); send one %s per request",
                     r->mode == MD_BODY_UPLOAD ? "upload" : "query", r->part_filename, filename,
                     r->mode == MD_BODY_UPLOAD ? "file" : "picture");
            body_fail(r, MD_ERR_INVALID, msg);
            return MHD_YES;
        }
    } else {
        r->saw_file = 1;
        r->part_key = strdup(key ? key : "");
        r->part_filename = strdup(filename);
        if (!r->part_key || !r->part_filename) {
            body_fail(r, MD_ERR_NOMEM, "out of memory");
            return MHD_YES;
        }
        sink_begin(r, filename);
        if (r->body_status != MD_OK)
            return MHD_YES;
    }
    r->part_next_off = off + size;
    if (size)
        sink_write(r, data, size);
    return MHD_YES;
}

/* JSON must be UTF-8 (RFC 8259) and cJSON passes any bytes through, so a string that is not
 * would come back out in answers that strict clients cannot parse. Finds the first such string
 * in J (a value: returns 1, a member name: 2; 0 when there is none) and writes where it is into
 * PATH ("q", "paths[2]", "a.b"; "" for J itself), PLEN bytes of which are J's own path. */
static int json_bad_utf8(const cJSON *j, char *path, size_t cap, size_t plen)
{
    if (cJSON_IsString(j))
        return md_utf8_valid(j->valuestring, strlen(j->valuestring)) ? 0 : 1;
    int i = 0;
    for (const cJSON *c = j->child; c; c = c->next, i++) {
        int n;
        if (cJSON_IsObject(j)) {
            const char *k = c->string ? c->string : "";
            if (!md_utf8_valid(k, strlen(k)))
                return 2; /* PATH names the object the member is in */
            n = snprintf(path + plen, cap - plen, "%s%s", plen ? "." : "", k);
        } else {
            n = snprintf(path + plen, cap - plen, "[%d]", i);
        }
        size_t l = n < 0 ? plen : plen + (size_t)n < cap ? plen + (size_t)n : cap - 1;
        int bad = json_bad_utf8(c, path, cap, l);
        if (bad)
            return bad;
        path[plen] = 0;
    }
    return 0;
}

static void take_body(md_req *r, const char *data, size_t size)
{
    if (r->body_status != MD_OK)
        return; /* discard: an error is already decided */
    if (r->mode == MD_BODY_JSON) {
        if (r->body_len + size > MD_MAX_JSON_BODY) {
            body_fail(r, MD_ERR_TOO_LARGE, "JSON body larger than 1 MiB");
            return;
        }
        if (r->body_len + size + 1 > r->body_cap) {
            size_t nc = (r->body_len + size + 1) * 2;
            char *nb = realloc(r->body, nc);
            if (!nb) {
                body_fail(r, MD_ERR_NOMEM, "out of memory");
                return;
            }
            r->body = nb;
            r->body_cap = nc;
        }
        memcpy(r->body + r->body_len, data, size);
        r->body_len += size;
        r->body[r->body_len] = 0;
    } else if (r->mode == MD_BODY_UPLOAD || r->mode == MD_BODY_QUERY) {
        if (r->multipart) {
            if (MHD_post_process(r->pp, data, size) != MHD_YES)
                body_fail(r, MD_ERR_INVALID, "malformed multipart/form-data body");
        } else {
            sink_write(r, data, size);
        }
    }
}

/* Decides how to take the body from the route and the Content-Type. Returns 1
 * when a response was queued already. */
static int setup_body(md_req *r)
{
    md_server *srv = r->srv;
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
    int is_multipart = ct && strncasecmp(ct, "multipart/form-data", 19) == 0;
    r->mode = r->route->body;
    if (r->mode == MD_BODY_QUERY) {
        int picture = is_multipart || (ct && (strncasecmp(ct, "image/", 6) == 0 || strncasecmp(ct, "video/", 6) == 0 ||
                                              strncasecmp(ct, "application/octet-stream", 24) == 0));
        if (!picture)
            r->mode = MD_BODY_JSON;
    }
    if (r->mode != MD_BODY_UPLOAD && r->mode != MD_BODY_QUERY)
        return 0;
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    long long limit = r->mode == MD_BODY_UPLOAD ? srv->cfg->max_upload : MD_MAX_QUERY_FILE;
    if (cl && strtoll(cl, NULL, 10) > limit) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s of %s bytes is larger than the limit of %lld bytes%s",
                 r->mode == MD_BODY_UPLOAD ? "upload" : "query picture", cl, limit,
                 r->mode == MD_BODY_UPLOAD ? " (setting max_upload)" : "");
        md_reply_status(r, MD_ERR_TOO_LARGE, msg);
        return 1;
    }
    if (is_multipart) {
        r->multipart = 1;
        r->form = cJSON_CreateObject();
        r->pp = MHD_create_post_processor(r->conn, 64 * 1024, post_iter, r);
        if (!r->pp) {
            md_reply_status(r, MD_ERR_INVALID, "malformed multipart/form-data header (boundary missing?)");
            return 1;
        }
        return 0;
    }
    const char *name = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "name");
    r->saw_file = 1;
    sink_begin(r, name ? name : "upload");
    if (r->body_status != MD_OK) {
        md_reply_status(r, r->body_status, r->body_err.msg);
        return 1;
    }
    return 0;
}

/* ---- the request head ------------------------------------------------- */

struct head_stats {
    size_t bytes, n;    /* names + values, fields */
    int content_length; /* Content-Length fields */
};

static enum MHD_Result head_count(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                  const char *value, size_t value_size)
{
    struct head_stats *h = cls;
    (void)kind, (void)value;
    h->bytes += key_size + value_size + 2;
    h->n++;
    if (key && strcasecmp(key, "Content-Length") == 0)
        h->content_length++;
    return MHD_YES;
}

/* The head's limits (server.h) and the framing headers, checked before routing so that every
 * path gets the same answers. libmicrohttpd has parsed the head already; what it refuses itself
 * never gets here (md_server_start lists those cases). Returns 1 when a response was queued. */
static int check_head(md_req *r)
{
    struct head_stats q = {0}, h = {0};
    MHD_get_connection_values_n(r->conn, MHD_GET_ARGUMENT_KIND, head_count, &q);
    MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, head_count, &h);
    size_t url = strlen(r->url) + q.bytes;
    char msg[300];
    if (url > MD_MAX_URL_BYTES || q.n > MD_MAX_QUERY_ARGS) {
        snprintf(msg, sizeof msg,
                 "request target too long: %zu bytes and %zu query arguments (limits: %d bytes, %d arguments); "
                 "send long parameters in a JSON body",
                 url, q.n, MD_MAX_URL_BYTES, MD_MAX_QUERY_ARGS);
        md_reply_error(r, 414, "uri_too_long", msg);
        return 1;
    }
    if (h.bytes > MD_MAX_HEADER_BYTES || h.n > MD_MAX_HEADERS) {
        snprintf(msg, sizeof msg, "request headers too large: %zu bytes in %zu fields (limits: %d bytes, %d fields)",
                 h.bytes, h.n, MD_MAX_HEADER_BYTES, MD_MAX_HEADERS);
        md_reply_error(r, 431, "header_fields_too_large", msg);
        return 1;
    }
    /* libmicrohttpd reads a body framed by Transfer-Encoding and ignores Content-Length then, and
     * takes the first of several Content-Lengths: a request that two parsers could read in two
     * ways (request smuggling through a proxy) is refused, as RFC 9112 section 6.3 allows. */
    const char *te = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    if (h.content_length > 1) {
        md_reply_error(r, 400, "invalid_request", "more than one Content-Length header; send exactly one");
        return 1;
    }
    if (te && h.content_length) {
        md_reply_error(r, 400, "invalid_request",
                       "both Transfer-Encoding and Content-Length are set, which is ambiguous; send one of them");
        return 1;
    }
    if (te && strcasecmp(te, "chunked") != 0) {
        snprintf(msg, sizeof msg,
                 "Transfer-Encoding '%.100s' is not supported; send the body with a Content-Length or as "
                 "Transfer-Encoding: chunked",
                 te);
        md_reply_error(r, 501, "not_implemented", msg);
        return 1;
    }
    return 0;
}

/* First callback of a request: head limits, route, auth, declared size, body set-up.
 * Returns 1 when a response was queued already. */
static int begin_request(md_req *r)
{
    md_server *srv = r->srv;
    r->authorized = key_ok(r);
    if (check_head(r))
        return 1;
    int path_matched = 0, bad_id = 0;
    char allow_buf[128] = "";
    for (int i = 0; i < md_n_routes; i++) {
        long long params[MD_MAX_ROUTE_PARAMS] = {0};
        int m = md_match_pattern(md_routes[i].pattern, r->url, params);
        if (m == 0)
            continue;
        path_matched = 1;
        if (m < 0)
            bad_id = 1;
        size_t al = strlen(allow_buf);
        snprintf(allow_buf + al, sizeof allow_buf - al, "%s%s", al ? ", " : "", md_routes[i].method);
        if (strcmp(md_routes[i].method, r->method) == 0 ||
            (strcmp(r->method, "HEAD") == 0 && strcmp(md_routes[i].method, "GET") == 0)) {
            r->route = &md_routes[i];
            r->route_index = i;
            memcpy(r->params, params, sizeof params);
        }
    }
    if (!path_matched) {
        md_reply_error(r, 404, "not_found", "no such endpoint; see GET /v1/openapi.json");
        return 1;
    }
    if (strcmp(r->method, "OPTIONS") == 0) {
        /* CORS preflight: answered for every known path, without the API key. */
        r->code = 204;
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, (char *)"", MHD_RESPMEM_PERSISTENT);
        const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
        if (origin_allowed(srv, origin)) {
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
            MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow_buf);
            MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, Content-Type");
            MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
            MHD_add_response_header(resp, "Vary", "Origin");
        }
        MHD_add_response_header(resp, "Allow", allow_buf);
        MHD_queue_response(r->conn, 204, resp);
        MHD_destroy_response(resp);
        r->responded = 1;
        return 1;
    }
    if (!r->route) {
        char msg[256];
        snprintf(msg, sizeof msg, "method %s is not allowed here; allowed: %s", r->method, allow_buf);
        r->allow = strdup(allow_buf);
        md_reply_error(r, 405, "method_not_allowed", msg);
        return 1;
    }
    if (!r->route->public_route && !r->authorized) {
        md_reply_error(r, 401, "unauthorized", "missing or wrong API key: send 'Authorization: Bearer <api_key>'");
        return 1;
    }
    if (bad_id) {
        md_reply_error(r, 404, "not_found", "ids are positive integers; no such resource");
        return 1;
    }
    if (!r->route->public_route && atomic_load(&srv->state) != 1) {
        md_reply_status(r, MD_ERR_UNAVAILABLE, atomic_load(&srv->state) == 0 ? "momentd is starting; try again shortly"
                                                                             : "momentd is shutting down");
        return 1;
    }
    return setup_body(r);
}

/* ---- compute slots ---------------------------------------------------- */

#define COMPUTE_WAIT_S 30

/* Waits (COMPUTE_WAIT_S at most) for one of the compute slots (md_server): more searches at once
 * would only share the same cores and memory, slower each. MD_ERR_UNAVAILABLE when none frees up
 * in time. */
static md_status compute_take(md_server *srv, md_errbuf *e)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += COMPUTE_WAIT_S;
    int rc = 0;
    pthread_mutex_lock(&srv->compute_mu);
    while (srv->compute_busy >= srv->compute_slots && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&srv->compute_cv, &srv->compute_mu, &until);
    int got = srv->compute_busy < srv->compute_slots;
    if (got)
        srv->compute_busy++;
    pthread_mutex_unlock(&srv->compute_mu);
    if (!got)
        return md_fail(e, MD_ERR_UNAVAILABLE,
                       "too many searches at once (%d computed at a time, setting http_threads; this one waited "
                       "%d s); try again",
                       srv->compute_slots, COMPUTE_WAIT_S);
    return MD_OK;
}

static void compute_give(md_server *srv)
{
    pthread_mutex_lock(&srv->compute_mu);
    srv->compute_busy--;
    pthread_cond_signal(&srv->compute_cv);
    pthread_mutex_unlock(&srv->compute_mu);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    md_server *srv = cls;
    md_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->srv = srv;
        r->conn = conn;
        r->method = method;
        r->url = url;
        r->route_index = -1;
        r->file_fd = -1;
        r->resp_fd = -1;
        r->t0 = md_mono_s();
        *con_cls = r;
        begin_request(r); /* may answer at once (404, 405, 401, 413): MHD then drops the body */
        return MHD_YES;
    }
    if (r->responded) {
        *upload_data_size = 0; /* early answer given: MHD discards the rest */
        return MHD_YES;
    }
    if (*upload_data_size) {
        take_body(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }

    /* Whole body received. */
    if (r->body_status != MD_OK) {
        md_reply_status(r, r->body_status, r->body_err.msg);
        return MHD_YES;
    }
    if (r->mode == MD_BODY_JSON) {
        if (!r->body_len) {
            md_reply_status(r, MD_ERR_INVALID, "request body is empty; expected JSON");
            return MHD_YES;
        }
        r->body_json = cJSON_ParseWithLength(r->body, r->body_len);
        if (!r->body_json) {
            char msg[160];
            const char *at = cJSON_GetErrorPtr();
            long off = at && at >= r->body && at <= r->body + r->body_len ? (long)(at - r->body) : -1;
            snprintf(msg, sizeof msg, "malformed JSON body (near byte %ld)", off);
            md_reply_status(r, MD_ERR_INVALID, msg);
            return MHD_YES;
        }
        char where[256] = "";
        int bad = json_bad_utf8(r->body_json, where, sizeof where, 0);
        if (bad) {
            char msg[400];
            if (bad == 2)
                snprintf(msg, sizeof msg, "a member name in the JSON body%s%s%s is not valid UTF-8",
                         where[0] ? " (in '" : "", where, where[0] ? "')" : "");
            else if (where[0])
                snprintf(msg, sizeof msg, "'%s' in the JSON body is not valid UTF-8", where);
            else
                snprintf(msg, sizeof msg, "the JSON body is a string that is not valid UTF-8");
            md_reply_status(r, MD_ERR_INVALID, msg);
            return MHD_YES;
        }
    }
    if (r->mode == MD_BODY_UPLOAD || r->mode == MD_BODY_QUERY) {
        if (r->multipart && r->pp) {
            MHD_destroy_post_processor(r->pp);
            r->pp = NULL;
            if (r->body_status != MD_OK) {
                md_reply_status(r, r->body_status, r->body_err.msg);
                return MHD_YES;
            }
        }
        if (!sink_open(r)) {
            md_reply_status(r, MD_ERR_INVALID, r->mode == MD_BODY_UPLOAD
                                                   ? "multipart body has no file part (send -F file=@video.mp4)"
                                                   : "multipart body has no file part (send -F file=@picture.jpg)");
            return MHD_YES;
        }
        if (r->file_fd >= 0 && r->file_path[0]) {
            close(r->file_fd);
            r->file_fd = -1;
        }
    }
    md_errbuf e = {{0}};
    md_status st;
    if (r->route->compute) {
        if ((st = compute_take(r->srv, &e)) == MD_OK) {
            st = r->route->fn(r, &e);
            compute_give(r->srv);
        }
    } else {
        st = r->route->fn(r, &e);
    }
    if (st != MD_OK)
        md_reply_status(r, st, e.msg[0] ? e.msg : md_status_str(st));
    else
        md_send_response(r);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn;
    md_req *r = *con_cls;
    if (!r)
        return;
    double dt = md_mono_s() - r->t0;
    if (r->responded) {
        md_metrics_count(r->route_index, r->code, dt);
        md_info("http: %s %s %u %.1f ms", r->method, r->url, r->code, dt * 1000);
    } else {
        md_info("http: %s %s aborted by client (%d) after %.1f ms", r->method, r->url, (int)toe, dt * 1000);
    }
    if (r->pp)
        MHD_destroy_post_processor(r->pp);
    md_upload_abort(r->upload); /* an upload still open here was never finished: drop its bytes */
    if (r->file_fd >= 0)
        close(r->file_fd);
    if (r->file_path[0])
        unlink(r->file_path);
    cJSON_Delete(r->form);
    free(r->part_key);
    free(r->part_filename);
    free(r->body);
    cJSON_Delete(r->body_json);
    resp_clear(r); /* a body never sent (the client went away first) */
    free((char *)r->allow);
    free(r);
    *con_cls = NULL;
}

void md_reply_status(md_req *r, md_status st, const char *msg)
{
    md_reply_error(r, md_http_status(st), md_http_code(st), msg);
}

void md_reply_error(md_req *r, unsigned int http, const char *code, const char *msg)
{
    /* Messages quote the request (a value that is not a number, a method, a file name): its bytes
     * are repaired here, once for every error, so that the answer is valid UTF-8 JSON. Each bad
     * byte may become 3, hence the size. */
    size_t ml = strlen(msg);
    char *fixed = malloc(3 * ml + 1);
    if (fixed)
        md_utf8_repair(msg, ml, fixed, 3 * ml + 1);
    cJSON *o = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(err, "code", code);
    cJSON_AddStringToObject(err, "message", fixed ? fixed : "(message lost: out of memory)");
    free(fixed);
    resp_clear(r); /* whatever body the handler had set is dropped for the error */
    r->json = o;
    r->code = http;
    md_send_response(r);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t l = strlen(msg);
    while (l && (msg[l - 1] == '\n' || msg[l - 1] == '\r'))
        msg[--l] = 0;
    md_warn("libmicrohttpd: %s", msg);
}

md_status md_server_start(md_server *srv, md_errbuf *e)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    /* A thread per connection rather than a pool of event loops: in a pool each thread serves
     * its connections one at a time, so an upload sharing a thread with searches got its next
     * bytes read only between two searches (50 MB took 43-106 s instead of 0.3-0.5 s with 8
     * searching clients and 2 threads; tests/e2e/upload_under_search.sh). CPU-heavy handlers
     * are bounded separately (compute slots). */
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                         MHD_USE_ERROR_LOG | MHD_USE_ITC;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, srv->cfg->bind, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)srv->cfg->port);
    } else if (inet_pton(AF_INET6, srv->cfg->bind, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)srv->cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        return md_fail(e, MD_ERR_INVALID, "setting 'bind': '%s' is not an IP address", srv->cfg->bind);
    }
    /* The logger goes first so that MHD's own start-up messages use it too.
     *
     * Every answer goes out in the one JSON error shape, except those libmicrohttpd 0.9.75 sends
     * by itself, in HTML, because it decides them while parsing, before (or instead of) calling
     * on_request, and it has no hook to shape them:
     *   - a request head that does not fit the connection's memory pool (MD_MHD_CONNECTION_MEMORY,
     *     raised from the default 32 KiB so that heads far past our own limits still reach
     *     check_head): 414 for the request line, 431 for headers or trailers;
     *   - a Content-Length that is not a number (400) or does not fit 64 bits (413), checked
     *     when the headers are parsed; 0.9.75 sends that answer's header block twice (its parser
     *     queues the error and then carries on to the normal reply);
     *   - chunked framing: a bad chunk-size line (400), a chunk size past 64 bits (413), a
     *     chunk-size line longer than the free read buffer (500 "ask the developer": the buffer
     *     is full and holds nothing we could consume);
     *   - a malformed request line or header line (400, or the connection is closed), an HTTP
     *     version other than 1.0/1.1 (505).
     * tests/e2e/httpedge.sh sends each of these and checks the status. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* compute_take's deadline */
    pthread_mutex_init(&srv->compute_mu, NULL);
    pthread_cond_init(&srv->compute_cv, &ca);
    pthread_condattr_destroy(&ca);
    srv->compute_busy = 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    srv->compute_slots = srv->cfg->http_threads > 0 ? (int)srv->cfg->http_threads : cores > 0 ? (int)cores : 1;
    srv->mhd = MHD_start_daemon(flags, (uint16_t)srv->cfg->port, NULL, NULL, on_request, srv,
                                MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_TIMEOUT,
                                (unsigned int)120, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)1024,
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MD_MHD_CONNECTION_MEMORY, MHD_OPTION_END);
    if (!srv->mhd) {
        pthread_cond_destroy(&srv->compute_cv);
        pthread_mutex_destroy(&srv->compute_mu);
        return md_fail(e, MD_ERR_IO, "settings 'bind'/'port': cannot listen on %s port %lld (in use, or not allowed)",
                       srv->cfg->bind, srv->cfg->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : (unsigned short)srv->cfg->port;
    return MD_OK;
}

void md_server_stop(md_server *srv)
{
    if (!srv->mhd)
        return;
    /* Stop accepting first, so nothing new arrives while requests finish. */
    MHD_quiesce_daemon(srv->mhd);
    MHD_stop_daemon(srv->mhd); /* joins every connection thread: no compute slot is in use after */
    srv->mhd = NULL;
    pthread_cond_destroy(&srv->compute_cv);
    pthread_mutex_destroy(&srv->compute_mu);
}
