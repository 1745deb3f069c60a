/* fuzz_http.c - libFuzzer target: the HTTP side, through the real daemon. server/'s parsers
 * (query strings and numbers, JSON request bodies, the option readers of handlers.c, multipart
 * bodies, routing) are static there, so this target runs what momentd's serve() runs - settings,
 * engine, data-directory lock, md_server on 127.0.0.1 port 0, library with the demo model, one
 * worker - inside the fuzzing process, and sends each input as a request over a socket. Slower
 * than calling a parser (one connection per input) but honest: a crash or sanitizer report on a
 * server thread aborts this process with the input that caused it.
 *
 * Input: the first byte picks the request, the rest is its variable part:
 *   0 GET /v1/search?REST         1 POST /v1/search, JSON body REST
 *   2 POST /v1/index, JSON REST   3 POST /v1/videos/1/ground, JSON REST
 *   4 GET /v1/videos/1/ground?REST  5 POST /v1/search, multipart body REST (a query picture)
 *   6 POST /v1/videos, multipart REST (an upload)   7 GET /v1/videos?REST
 *   8 any method and URL: REST's first byte picks the method (GET, POST, DELETE, PUT, HEAD,
 *     OPTIONS, PATCH), the rest is the path and query (routing, "{id}" segments, 404 / 405)
 *   9 POST /v1/videos, raw body REST
 * URLs are sent with bytes outside '!'..'~' (and '#') percent-encoded, so the request line stays
 * one line and the handler sees exactly REST's bytes; '%' itself is sent as is, so broken escapes
 * reach the server too. Multipart bodies use the boundary "fuzzbnd". Every request is complete
 * (a Content-Length that matches the body): MHD's own parsing of the request head is not what is
 * fuzzed here, and a partial request would only wait for its 120 s connection timeout.
 *
 * Checked for every answer: a status line arrives within 10 s; no 500 (an internal error on
 * request data is a bug); a JSON body parses. A created upload is deleted again, so that the data
 * directory (on tmpfs) stays small. */
#include "fuzz_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "cJSON.h"
#include "../../server/server.h"
#include "../../video/isolate.h"

static md_config g_cfg;
static md_server g_srv;
static md_dir_lock *g_lock;
static char g_dir[128];

static void stop_all(void)
{
    atomic_store(&g_srv.state, 2);
    md_server_stop(&g_srv);
    md_library_close(g_srv.lib);
    g_srv.lib = NULL;
    md_data_dir_unlock(g_lock);
    md_config_free(&g_cfg);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", g_dir);
}

#define DIE(...)                                                                                       \
    do {                                                                                               \
        fprintf(stderr, "fuzz_http: " __VA_ARGS__);                                                    \
        fputc('\n', stderr);                                                                           \
        abort();                                                                                       \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* The daemon's sandboxed video workers are this executable started again as
     * "/proc/self/exe __video-worker ..." (video/isolate.h): serve that before libFuzzer reads
     * the arguments, as momentd's main() does. */
    int wrc = md_video_worker_main(*argc, *argv);
    if (wrc >= 0)
        exit(wrc);
    char err[1024];
    md_errbuf e = {{0}};
    signal(SIGPIPE, SIG_IGN);
    fz_tmpdir("md-fuzz-http", g_dir);
    char *av[] = {"momentd", "--bind", "127.0.0.1", "--port", "0", "--data-dir", g_dir, "--workers", "1",
                  "--http-threads", "2", "--max-upload", "1M", "--device", "cpu", "--threads", "1",
                  "--job-retries", "0", NULL};
    if (md_config_load(&g_cfg, (int)(sizeof av / sizeof *av) - 1, av, 1, err, sizeof err) != MD_OK)
        DIE("settings: %s", err);
    fz_quiet();
    md_engine_params ep = {.device = g_cfg.device, .threads = (int)g_cfg.threads, .workers = (int)g_cfg.workers};
    if (md_engine_init(&ep, NULL, &e) != MD_OK)
        DIE("engine: %s", e.msg);
    if (md_data_dir_lock(g_cfg.data_dir, &g_lock, &e) != MD_OK)
        DIE("lock: %s", e.msg);
    g_srv.cfg = &g_cfg;
    g_srv.started_mono = md_mono_s();
    atomic_store(&g_srv.state, 0);
    if (md_server_start(&g_srv, &e) != MD_OK)
        DIE("server: %s", e.msg);
    md_library_params p = md_library_default_params();
    p.data_dir = g_cfg.data_dir;
    p.workers = (int)g_cfg.workers;
    p.max_upload = g_cfg.max_upload;
    p.job_retries = (int)g_cfg.job_retries;
    p.model_dir = g_cfg.model_dir;
    p.sample_fps = g_cfg.sample_fps;
    p.segment_frames = (int)g_cfg.segment_frames;
    p.window_frames = (int)g_cfg.window_frames;
    p.temporal_path = g_cfg.temporal;
    p.device = g_cfg.device;
    p.lock = g_lock;
    if (md_library_open(&p, &g_srv.lib, &e) != MD_OK || md_library_start(g_srv.lib, &e) != MD_OK)
        DIE("library: %s", e.msg);
    atomic_store(&g_srv.state, 1);
    atexit(stop_all);
    return 0;
}

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            DIE("out of memory");
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_query(buf *b, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] > ' ' && s[i] < 0x7f && s[i] != '#')
            put(b, &s[i], 1);
        else {
            char h[4];
            snprintf(h, sizeof h, "%%%02X", s[i]);
            put(b, h, 3);
        }
    }
}

static void put_body_req(buf *b, const char *method_path, const char *type, const uint8_t *body, size_t n)
{
    char h[256];
    snprintf(h, sizeof h, "%s HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Type: %s\r\n"
             "Content-Length: %zu\r\n\r\n", method_path, type, n);
    puts_(b, h);
    put(b, body, n);
}

/* Sends REQ, reads the whole answer (the server closes: Connection: close) into *ANS. */
static void exchange(const buf *req, buf *ans)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        DIE("socket: %s", strerror(errno));
    struct timeval tv = {10, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g_srv.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0)
        DIE("connect to port %u: %s", g_srv.port, strerror(errno));
    size_t off = 0;
    while (off < req->n) {
        ssize_t w = send(s, req->p + off, req->n - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may answer early (413, 400) and close: read what it said */
        off += (size_t)w;
    }
    shutdown(s, SHUT_WR);
    char tmp[8192];
    for (;;) {
        ssize_t r = recv(s, tmp, sizeof tmp, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            DIE("no complete answer within 10 s (%zu bytes so far)", ans->n);
        if (r <= 0)
            break;
        put(ans, tmp, (size_t)r);
    }
    close(s);
}

static void delete_upload(const char *json)
{
    cJSON *j = cJSON_Parse(json);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "video"), "id");
    if (cJSON_IsNumber(id)) {
        char line[128];
        snprintf(line, sizeof line, "DELETE /v1/videos/%lld HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n",
                 (long long)id->valuedouble);
        buf req = {0}, ans = {0};
        puts_(&req, line);
        exchange(&req, &ans);
        free(req.p);
        free(ans.p);
    }
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const int kind = data[0] % 10;
    const uint8_t *rest = data + 1;
    const size_t n = size - 1;
    static const char *const MP = "multipart/form-data; boundary=fuzzbnd";
    buf req = {0}, ans = {0};
    switch (kind) {
    case 0:
    case 4:
    case 7:
        puts_(&req, kind == 0 ? "GET /v1/search?" : kind == 4 ? "GET /v1/videos/1/ground?" : "GET /v1/videos?");
        put_query(&req, rest, n);
        puts_(&req, " HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n");
        break;
    case 1:
        put_body_req(&req, "POST /v1/search", "application/json", rest, n);
        break;
    case 2:
        put_body_req(&req, "POST /v1/index", "application/json", rest, n);
        break;
    case 3:
        put_body_req(&req, "POST /v1/videos/1/ground", "application/json", rest, n);
        break;
    case 5:
        put_body_req(&req, "POST /v1/search", MP, rest, n);
        break;
    case 6:
        put_body_req(&req, "POST /v1/videos", MP, rest, n);
        break;
    case 8: {
        static const char *const METHODS[] = {"GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS", "PATCH"};
        puts_(&req, METHODS[n ? rest[0] % 7 : 0]);
        puts_(&req, " /");
        if (n)
            put_query(&req, rest + 1, n - 1);
        puts_(&req, " HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        break;
    }
    default:
        put_body_req(&req, "POST /v1/videos?name=fuzz.mp4", "application/octet-stream", rest, n);
        break;
    }
    exchange(&req, &ans);

    int code = 0;
    if (ans.n >= 12 && memcmp(ans.p, "HTTP/1.", 7) == 0)
        code = atoi(ans.p + 9);
    if (code == 0)
        DIE("kind %d: no status line in the answer (%zu bytes)", kind, ans.n);
    const char *body = ans.p ? strstr(ans.p, "\r\n\r\n") : NULL;
    body = body ? body + 4 : NULL;
    if (fz_verbose())
        fprintf(stderr, "fuzz: kind %d: %d %.200s\n", kind, code, body ? body : "");
    if (code == 500)
        DIE("kind %d: 500 answer: %.300s", kind, body ? body : "");
    if (body && ans.p && strstr(ans.p, "Content-Type: application/json") && body < ans.p + ans.n) {
        cJSON *j = cJSON_Parse(body);
        if (!j)
            DIE("kind %d: a JSON answer that does not parse: %.300s", kind, body);
        cJSON_Delete(j);
    }
    if (code == 202 && (kind == 6 || kind == 9) && body)
        delete_upload(body);
    free(req.p);
    free(ans.p);
    return 0;
}
