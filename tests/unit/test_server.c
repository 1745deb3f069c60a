/* test_server.c - unit tests of the HTTP layer: route matching, the route table against
 * server/openapi.json (both ways, and every operation's responses), the mapping of statuses to
 * HTTP codes and error codes, and the send path of http.c over a real socket: a libmicrohttpd
 * daemon on 127.0.0.1 port 0 whose handler fills an md_req the way a route handler does and
 * answers through md_send_response / md_reply_error; a plain socket client reads the raw
 * HTTP/1.1 response and compares status, Content-Length, Content-Type and every body byte. */
#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "../../server/server.h"
#include "harness.h"

static void test_match_pattern(void)
{
    long long p[MD_MAX_ROUTE_PARAMS] = {0};
    CHECK_EQ_INT(md_match_pattern("/v1/videos", "/v1/videos", p), 1);
    CHECK_EQ_INT(md_match_pattern("/v1/videos", "/v1/videos/", p), 0);
    CHECK_EQ_INT(md_match_pattern("/v1/videos", "/v1/video", p), 0);
    CHECK_EQ_INT(md_match_pattern("/v1/videos", "/v1/videosX", p), 0);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}", "/v1/videos/42", p), 1);
    CHECK_EQ_INT(p[0], 42);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}", "/v1/videos/abc", p), -1);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}", "/v1/videos/0", p), -1);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}", "/v1/videos/-3", p), -1);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}", "/v1/videos/99999999999999999999", p), -1);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}", "/v1/videos/", p), -1);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}", "/v1/videos/1/x", p), 0);
    CHECK_EQ_INT(md_match_pattern("/v1/jobs/{id}", "/v1/videos/1", p), 0);
    CHECK_EQ_INT(md_match_pattern("/metrics", "/", p), 0);
    /* An id inside the path, as the ground routes have it. */
    p[0] = 0;
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}/ground", "/v1/videos/7/ground", p), 1);
    CHECK_EQ_INT(p[0], 7);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}/ground", "/v1/videos/7", p), 0);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}/ground", "/v1/videos/7/groundx", p), 0);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}/ground", "/v1/videos/x/ground", p), -1);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}", "/v1/videos//", p), 0);
    CHECK_EQ_INT(md_match_pattern("/v1/videos/{id}", "", p), 0);
}

/* Every route is reachable: the URL made from its pattern ({id} -> 5) matches it, with the id
 * in params, and no other route of the same method (http.c takes the last match, so a second
 * one would shadow it). */
static void test_routes_reachable(void)
{
    CHECK(md_n_routes > 0);
    for (int i = 0; i < md_n_routes; i++) {
        char url[256] = "";
        const char *pat = md_routes[i].pattern;
        size_t ul = 0;
        int n_ids = 0;
        for (const char *c = pat; *c && ul + 2 < sizeof url;) {
            if (strncmp(c, "{id}", 4) == 0) {
                url[ul++] = '5';
                c += 4;
                n_ids++;
            } else {
                url[ul++] = *c++;
            }
        }
        url[ul] = 0;
        long long p[MD_MAX_ROUTE_PARAMS] = {0};
        CHECK_EQ_INT(md_match_pattern(pat, url, p), 1);
        if (n_ids)
            CHECK_EQ_INT(p[0], 5);
        for (int j = 0; j < md_n_routes; j++) {
            if (j == i || strcmp(md_routes[j].method, md_routes[i].method) != 0)
                continue;
            long long q[MD_MAX_ROUTE_PARAMS] = {0};
            if (md_match_pattern(md_routes[j].pattern, url, q) != 0) {
                fprintf(stderr, "  %s %s is also matched by %s\n", md_routes[i].method, url, md_routes[j].pattern);
                CHECK(0);
            }
        }
    }
}

static int route_in_table(const char *method, const char *path)
{
    for (int i = 0; i < md_n_routes; i++)
        if (strcasecmp(md_routes[i].method, method) == 0 && strcmp(md_routes[i].pattern, path) == 0)
            return 1;
    return 0;
}

/* Every operation documents at least one success (2xx) and every 4xx/5xx it documents has the
 * one error shape, #/components/schemas/Error as application/json. The one exception is
 * GET /v1/health's 503: it answers with the health object itself ({"status":"starting"}),
 * which load balancers read (handlers.c). */
static void check_responses(const char *method, const char *path, const cJSON *responses)
{
    int n_ok = 0;
    const cJSON *resp;
    if (!cJSON_IsObject(responses)) {
        fprintf(stderr, "  %s %s has no responses\n", method, path);
        CHECK(0);
        return;
    }
    cJSON_ArrayForEach(resp, responses)
    {
        const char *code = resp->string;
        if (code[0] == '2')
            n_ok++;
        if (code[0] != '4' && code[0] != '5')
            continue;
        if (strcmp(path, "/v1/health") == 0 && strcmp(code, "503") == 0)
            continue;
        const cJSON *schema =
            cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(resp, "content"), "application/json"), "schema");
        const char *ref = cJSON_GetStringValue(cJSON_GetObjectItem(schema, "$ref"));
        if (!ref || strcmp(ref, "#/components/schemas/Error") != 0) {
            fprintf(stderr, "  %s %s: response %s is not the Error shape\n", method, path, code);
            CHECK(0);
        }
    }
    if (n_ok == 0) {
        fprintf(stderr, "  %s %s documents no 2xx response\n", method, path);
        CHECK(0);
    }
}

static void test_openapi_matches_routes(void)
{
    cJSON *doc = cJSON_Parse(md_openapi_json);
    CHECK(doc != NULL);
    if (!doc)
        return;
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(doc, "openapi")), "3.0.3");
    cJSON *paths = cJSON_GetObjectItem(doc, "paths"), *path;
    int n_doc = 0;
    cJSON_ArrayForEach(path, paths)
    {
        cJSON *op;
        cJSON_ArrayForEach(op, path)
        {
            if (strcmp(op->string, "parameters") == 0)
                continue;
            n_doc++;
            if (!route_in_table(op->string, path->string)) {
                fprintf(stderr, "  openapi has %s %s, the route table does not\n", op->string, path->string);
                CHECK(0);
            }
            check_responses(op->string, path->string, cJSON_GetObjectItem(op, "responses"));
        }
    }
    for (int i = 0; i < md_n_routes; i++) {
        char m[16];
        snprintf(m, sizeof m, "%s", md_routes[i].method);
        for (char *c = m; *c; c++)
            *c = (char)(*c - 'A' + 'a');
        cJSON *op = cJSON_GetObjectItem(cJSON_GetObjectItem(paths, md_routes[i].pattern), m);
        if (!op) {
            fprintf(stderr, "  route %s %s is missing from openapi.json\n", md_routes[i].method, md_routes[i].pattern);
            CHECK(0);
        }
    }
    CHECK_EQ_INT(n_doc, md_n_routes);
    /* The one error shape itself: {"error": {"code": string, "message": string}}, both required. */
    const cJSON *err = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "components"), "schemas"), "Error");
    const cJSON *inner = cJSON_GetObjectItem(cJSON_GetObjectItem(err, "properties"), "error");
    const cJSON *req = cJSON_GetObjectItem(inner, "required");
    CHECK_EQ_INT(cJSON_GetArraySize(req), 2);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetArrayItem(req, 0)), "code");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetArrayItem(req, 1)), "message");
    cJSON_Delete(doc);
}

static void test_status_mapping(void)
{
    CHECK_EQ_INT(md_http_status(MD_ERR_INVALID), 400);
    CHECK_EQ_INT(md_http_status(MD_ERR_UNAUTHORIZED), 401);
    CHECK_EQ_INT(md_http_status(MD_ERR_FORBIDDEN), 403);
    CHECK_EQ_INT(md_http_status(MD_ERR_NOT_FOUND), 404);
    CHECK_EQ_INT(md_http_status(MD_ERR_TOO_LARGE), 413);
    CHECK_EQ_INT(md_http_status(MD_ERR_MEDIA), 422);
    CHECK_EQ_INT(md_http_status(MD_ERR_NO_SPACE), 507);
    CHECK_EQ_INT(md_http_status(MD_ERR_UNAVAILABLE), 503);
    CHECK_EQ_INT(md_http_status(MD_ERR_DB), 500);
    CHECK_STR(md_http_code(MD_ERR_INVALID), "invalid_request");
    CHECK_STR(md_http_code(MD_ERR_NOT_FOUND), "not_found");
    CHECK_STR(md_http_code(MD_ERR_NO_SPACE), "insufficient_storage");
    /* Every status has a distinct, non-empty name. */
    for (int a = MD_OK; a <= MD_ERR_INTERNAL; a++) {
        CHECK(strlen(md_status_str((md_status)a)) > 0);
        for (int b = a + 1; b <= MD_ERR_INTERNAL; b++)
            CHECK(strcmp(md_status_str((md_status)a), md_status_str((md_status)b)) != 0);
    }
}

static void test_routes_are_unique(void)
{
    for (int i = 0; i < md_n_routes; i++)
        for (int j = i + 1; j < md_n_routes; j++)
            CHECK(!(strcmp(md_routes[i].method, md_routes[j].method) == 0 &&
                    strcmp(md_routes[i].pattern, md_routes[j].pattern) == 0));
}

/* ---- the send path over a socket ------------------------------------------------------- */

#define BIN_LEN 70000   /* more than one MHD write; starts with NUL bytes, so strlen() is 0 */
#define FILE_LEN 300000 /* several sendfile/read blocks */
#define FILE_OFF 1234
#define FILE_SPAN 200000

static unsigned char g_bin[BIN_LEN], g_filebytes[FILE_LEN];
static char g_file_path[64];
static md_config g_cfg;
static md_server g_srv = {.cfg = &g_cfg};
static int g_sent_fd = -1;       /* the fd /file handed over, to check it is closed afterwards */
static int g_err_fd_closed = -1; /* /file-then-error: was the fd closed by the error reply? */

static void fill_pattern(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)((i * 131u + seed + (i >> 8)) & 0xff);
    b[0] = b[1] = 0;
    b[n / 2] = 0;
}

/* What a route handler would do for URL, then the send that on_request does after it. */
static enum MHD_Result t_on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                    const char *version, const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    static int seen;
    (void)cls, (void)version, (void)upload_data, (void)upload_data_size;
    if (!*con_cls) { /* first call: headers only */
        *con_cls = &seen;
        return MHD_YES;
    }
    md_req r = {.srv = &g_srv, .conn = conn, .method = method, .url = url, .route_index = -1, .resp_fd = -1};
    r.code = 200;
    if (strcmp(url, "/bytes") == 0) {
        if (md_resp_bytes(&r, g_bin, BIN_LEN, "application/octet-stream") != MD_OK)
            r.code = 599;
    } else if (strcmp(url, "/take") == 0) {
        unsigned char *b = malloc(BIN_LEN);
        if (!b)
            return MHD_NO;
        memcpy(b, g_bin, BIN_LEN);
        md_resp_take(&r, b, BIN_LEN, "image/jpeg");
    } else if (strcmp(url, "/empty") == 0) {
        (void)md_resp_bytes(&r, NULL, 0, "application/octet-stream");
    } else if (strcmp(url, "/file") == 0 || strcmp(url, "/file-then-error") == 0) {
        int fd = open(g_file_path, O_RDONLY);
        if (fd < 0)
            return MHD_NO;
        r.code = 206;
        md_resp_file(&r, fd, FILE_OFF, FILE_SPAN, "video/mp4");
        if (strcmp(url, "/file") == 0) {
            g_sent_fd = fd;
        } else {
            md_reply_error(&r, 404, "not_found", "gone");
            g_err_fd_closed = fcntl(fd, F_GETFD) == -1 && errno == EBADF;
            return MHD_YES;
        }
    } else if (strcmp(url, "/json") == 0) {
        r.json = cJSON_CreateObject();
        cJSON_AddStringToObject(r.json, "name", "a b");
        cJSON_AddNumberToObject(r.json, "n", 3);
    } else if (strcmp(url, "/text") == 0) {
        r.text = strdup("momentd_videos 3\n");
        r.text_type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(url, "/bad-utf8-error") == 0) {
        /* A message quoting request bytes that are not UTF-8 (a value, a file name). */
        md_reply_error(&r, 400, "invalid_request", "'limit': '\xff\xfe' is not a number; caf\xc3");
        return MHD_YES;
    } else if (strcmp(url, "/json-over-bytes") == 0) {
        /* A body set later replaces an earlier one (the bytes are freed, ASan sees a leak else). */
        (void)md_resp_bytes(&r, g_bin, 10, "application/octet-stream");
        r.json = cJSON_CreateObject();
        r.code = 201;
    } else {
        md_reply_error(&r, 404, "not_found", "no such test path");
        return MHD_YES;
    }
    return md_send_response(&r);
}

static struct MHD_Daemon *t_start(unsigned short *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                                            t_on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                            MHD_OPTION_END);
    const union MHD_DaemonInfo *di = d ? MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT) : NULL;
    *port = di ? di->port : 0;
    return d;
}

typedef struct {
    int status;
    long long content_length; /* -1: no header */
    char type[128];           /* Content-Type, "" when absent */
    unsigned char *raw;       /* the whole response as read; body points into it */
    const unsigned char *body;
    size_t body_len;
} http_resp;

/* Sends "METHOD PATH HTTP/1.1" with Connection: close to 127.0.0.1:PORT and reads the answer
 * to EOF (5 s timeout per read). 0 when a response with a header block was read. */
static int http_do(unsigned short port, const char *method, const char *path, http_resp *out)
{
    int rc = -1, s = -1;
    size_t cap = 1 << 20, len = 0;
    memset(out, 0, sizeof *out);
    out->content_length = -1;
    if (!(out->raw = malloc(cap + 1)))
        goto out;
    if ((s = socket(AF_INET, SOCK_STREAM, 0)) < 0)
        goto out;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
        goto out;
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method, path);
    if (write(s, req, (size_t)n) != n)
        goto out;
    for (;;) {
        if (len == cap) {
            unsigned char *nb = realloc(out->raw, cap * 2 + 1);
            if (!nb)
                goto out;
            out->raw = nb;
            cap *= 2;
        }
        ssize_t got = read(s, out->raw + len, cap - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            goto out; /* timeout or error: no complete response */
        if (got == 0)
            break;
        len += (size_t)got;
    }
    out->raw[len] = 0;
    const char *hdr_end = strstr((const char *)out->raw, "\r\n\r\n"); /* headers hold no NUL */
    if (!hdr_end || sscanf((const char *)out->raw, "HTTP/1.%*d %d", &out->status) != 1)
        goto out;
    for (const char *l = strstr((const char *)out->raw, "\r\n") + 2; l < hdr_end; l = strstr(l, "\r\n") + 2) {
        if (strncasecmp(l, "Content-Length:", 15) == 0)
            out->content_length = strtoll(l + 15, NULL, 10);
        else if (strncasecmp(l, "Content-Type:", 13) == 0)
            sscanf(l + 13, " %127[^\r]", out->type);
    }
    out->body = (const unsigned char *)hdr_end + 4;
    out->body_len = len - (size_t)(out->body - out->raw);
    rc = 0;
out:
    if (s >= 0)
        close(s);
    return rc;
}

/* The body is exactly WANT (LEN bytes) and Content-Length says LEN. */
static void check_body(const char *what, const http_resp *h, const void *want, size_t len)
{
    CHECK_EQ_INT(h->content_length, (long long)len);
    CHECK_EQ_INT(h->body_len, len);
    if (h->body_len == len && len && memcmp(h->body, want, len) != 0) {
        size_t i = 0;
        while (h->body[i] == ((const unsigned char *)want)[i])
            i++;
        fprintf(stderr, "  %s: body differs from byte %zu\n", what, i);
        CHECK(0);
    }
}

static void test_send_bytes_with_nul(void)
{
    unsigned short port;
    struct MHD_Daemon *d = t_start(&port);
    CHECK(d != NULL && port != 0);
    if (!d)
        return;
    http_resp h;
    CHECK_EQ_INT(http_do(port, "GET", "/bytes", &h), 0);
    CHECK_EQ_INT(h.status, 200);
    CHECK_STR(h.type, "application/octet-stream");
    check_body("copied bytes", &h, g_bin, BIN_LEN);
    free(h.raw);

    CHECK_EQ_INT(http_do(port, "GET", "/take", &h), 0);
    CHECK_EQ_INT(h.status, 200);
    CHECK_STR(h.type, "image/jpeg");
    check_body("owned bytes", &h, g_bin, BIN_LEN);
    free(h.raw);

    CHECK_EQ_INT(http_do(port, "GET", "/empty", &h), 0);
    CHECK_EQ_INT(h.status, 200);
    check_body("empty bytes", &h, "", 0);
    free(h.raw);

    /* HEAD: the same Content-Length, no body. */
    CHECK_EQ_INT(http_do(port, "HEAD", "/bytes", &h), 0);
    CHECK_EQ_INT(h.status, 200);
    CHECK_EQ_INT(h.content_length, BIN_LEN);
    CHECK_EQ_INT(h.body_len, 0);
    free(h.raw);
    MHD_stop_daemon(d);
}

static void test_send_file_range(void)
{
    unsigned short port;
    g_sent_fd = -1;
    struct MHD_Daemon *d = t_start(&port);
    CHECK(d != NULL && port != 0);
    if (!d)
        return;
    http_resp h;
    CHECK_EQ_INT(http_do(port, "GET", "/file", &h), 0);
    CHECK_EQ_INT(h.status, 206);
    CHECK_STR(h.type, "video/mp4");
    check_body("file range", &h, g_filebytes + FILE_OFF, FILE_SPAN);
    free(h.raw);
    /* Once the daemon is gone the response is destroyed: MHD has closed the fd it was given
     * (nothing in this process opens a file in between, so the number is not reused). */
    MHD_stop_daemon(d);
    CHECK(g_sent_fd >= 0);
    CHECK(g_sent_fd >= 0 && fcntl(g_sent_fd, F_GETFD) == -1 && errno == EBADF);
}

/* An error reply after a binary body was set: the error goes out, the fd is closed at once. */
static void test_error_replaces_body(void)
{
    unsigned short port;
    g_err_fd_closed = -1;
    struct MHD_Daemon *d = t_start(&port);
    CHECK(d != NULL && port != 0);
    if (!d)
        return;
    http_resp h;
    CHECK_EQ_INT(http_do(port, "GET", "/file-then-error", &h), 0);
    CHECK_EQ_INT(h.status, 404);
    CHECK_STR(h.type, "application/json");
    const char *want = "{\"error\":{\"code\":\"not_found\",\"message\":\"gone\"}}";
    check_body("error after a file body", &h, want, strlen(want));
    CHECK_EQ_INT(g_err_fd_closed, 1);
    free(h.raw);

    CHECK_EQ_INT(http_do(port, "GET", "/json-over-bytes", &h), 0);
    CHECK_EQ_INT(h.status, 201);
    CHECK_STR(h.type, "application/json");
    check_body("JSON set after bytes", &h, "{}", 2);
    free(h.raw);
    MHD_stop_daemon(d);
}

/* JSON and text answers as before: exact bytes, their Content-Type, strlen as the length. */
static void test_send_json_and_text(void)
{
    unsigned short port;
    struct MHD_Daemon *d = t_start(&port);
    CHECK(d != NULL && port != 0);
    if (!d)
        return;
    http_resp h;
    CHECK_EQ_INT(http_do(port, "GET", "/json", &h), 0);
    CHECK_EQ_INT(h.status, 200);
    CHECK_STR(h.type, "application/json");
    const char *want = "{\"name\":\"a b\",\"n\":3}";
    check_body("json", &h, want, strlen(want));
    free(h.raw);

    CHECK_EQ_INT(http_do(port, "GET", "/text", &h), 0);
    CHECK_EQ_INT(h.status, 200);
    CHECK_STR(h.type, "text/plain; version=0.0.4; charset=utf-8");
    check_body("text", &h, "momentd_videos 3\n", 17);
    free(h.raw);

    CHECK_EQ_INT(http_do(port, "GET", "/nope", &h), 0);
    CHECK_EQ_INT(h.status, 404);
    want = "{\"error\":{\"code\":\"not_found\",\"message\":\"no such test path\"}}";
    check_body("error", &h, want, strlen(want));
    free(h.raw);
    MHD_stop_daemon(d);
}

/* Error messages go out as valid UTF-8 whatever bytes they quote: each bad sequence U+FFFD. */
static void test_error_message_repaired(void)
{
    unsigned short port;
    struct MHD_Daemon *d = t_start(&port);
    CHECK(d != NULL && port != 0);
    if (!d)
        return;
    http_resp h;
    CHECK_EQ_INT(http_do(port, "GET", "/bad-utf8-error", &h), 0);
    CHECK_EQ_INT(h.status, 400);
    const char *want = "{\"error\":{\"code\":\"invalid_request\",\"message\":\"'limit': '\xef\xbf\xbd\xef\xbf\xbd' "
                       "is not a number; caf\xef\xbf\xbd\"}}";
    check_body("repaired error", &h, want, strlen(want));
    CHECK(md_utf8_valid((const char *)h.body, h.body_len));
    free(h.raw);
    MHD_stop_daemon(d);
}

/* The latency histogram: every route listed, buckets cumulative and non-decreasing, +Inf equal
 * to _count, a request counted in the first bucket whose bound is >= its time. */
static void test_metrics_histogram(void)
{
    int search = -1;
    for (int i = 0; i < md_n_routes; i++)
        if (strcmp(md_routes[i].method, "GET") == 0 && strcmp(md_routes[i].pattern, "/v1/search") == 0)
            search = i;
    CHECK(search >= 0);
    if (search < 0)
        return;
    md_metrics_count(search, 200, 0.003);  /* le 0.005 */
    md_metrics_count(search, 200, 0.005);  /* le 0.005: bounds are inclusive */
    md_metrics_count(search, 400, 0.7);    /* le 1 */
    md_metrics_count(search, 200, 1000.0); /* past the last bound: +Inf only */
    char *buf = NULL;
    size_t len = 0, cap = 0;
    CHECK_EQ_INT(md_metrics_write(&buf, &len, &cap), 0);
    CHECK(buf != NULL);
    if (!buf)
        return;
    CHECK(strstr(buf, "# TYPE momentd_http_request_duration_seconds histogram\n") != NULL);
    const char *pfx = "momentd_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/search\",le=\"";
    struct {
        const char *le;
        long long n;
    } want[] = {{"0.0025", 0}, {"0.005", 2}, {"0.5", 2}, {"1", 3}, {"300", 3}, {"+Inf", 4}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char line[256];
        snprintf(line, sizeof line, "%s%s\"} %lld\n", pfx, want[i].le, want[i].n);
        if (!strstr(buf, line)) {
            fprintf(stderr, "  missing: %s", line);
            CHECK(0);
        }
    }
    CHECK(strstr(buf, "momentd_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/search\"} 4\n") != NULL);
    CHECK(strstr(buf, "momentd_http_request_duration_seconds_sum{method=\"GET\",route=\"/v1/search\"} 1000.708000\n") !=
          NULL);
    /* Every route has its series, also one never requested; buckets never decrease. */
    int routes = 0;
    for (int i = 0; i < md_n_routes; i++) {
        char line[256];
        snprintf(line, sizeof line, "momentd_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} ",
                 md_routes[i].method, md_routes[i].pattern);
        routes += strstr(buf, line) != NULL;
    }
    CHECK_EQ_INT(routes, md_n_routes);
    long long prev = -1;
    const char *key = NULL;
    for (char *l = buf; (l = strstr(l, "momentd_http_request_duration_seconds_bucket{")); l++) {
        const char *le = strstr(l, ",le=");
        long long v = strtoll(strchr(l, '}') ? strstr(l, "} ") + 2 : l, NULL, 10);
        if (!key || strncmp(key, l, (size_t)(le - l)) != 0)
            prev = -1; /* a new route's series */
        CHECK(v >= prev);
        prev = v;
        key = l;
    }
    free(buf);
}

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    RUN(test_match_pattern);
    RUN(test_openapi_matches_routes);
    RUN(test_status_mapping);
    RUN(test_routes_are_unique);
    RUN(test_routes_reachable);
    RUN(test_metrics_histogram);

    fill_pattern(g_bin, BIN_LEN, 7);
    fill_pattern(g_filebytes, FILE_LEN, 11);
    snprintf(g_file_path, sizeof g_file_path, "/tmp/md_test_server.XXXXXX");
    int fd = mkstemp(g_file_path);
    if (fd < 0 || write(fd, g_filebytes, FILE_LEN) != FILE_LEN) {
        perror("test file");
        fprintf(stderr, "not ok writing %s\n", g_file_path);
        md_t_failed++;
        md_test_skip_rest("no test file to send");
    }
    if (fd >= 0)
        close(fd);
    RUN(test_send_bytes_with_nul);
    RUN(test_send_file_range);
    RUN(test_error_replaces_body);
    RUN(test_send_json_and_text);
    RUN(test_error_message_repaired);
    md_test_skip_rest(NULL);
    unlink(g_file_path);
    return md_test_summary("test_server");
}
