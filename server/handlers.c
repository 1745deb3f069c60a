/* handlers.c - the route table and its handlers. A handler parses and
 * validates the request, calls one engine function and serialises the answer;
 * errors go back as a status and message (see errors.c). Keep the table in
 * step with server/openapi.json (tests/unit/test_server.c checks both ways).
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/log.h"
#include "server.h"

/* ---- helpers ---------------------------------------------------------- */

const char *md_query_str(md_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

md_status md_query_int(md_req *r, const char *name, long long def, long long min, long long max, long long *out,
                       md_error *e)
{
    const char *v = md_query_str(r, name);
    if (!v) {
        *out = def;
        return MD_OK;
    }
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno)
        return md_fail(e, MD_ERR_INVALID, "query parameter '%s': '%s' is not a whole number", name, v);
    if (x < min || x > max)
        return md_fail(e, MD_ERR_INVALID, "query parameter '%s': %lld is out of range [%lld, %lld]", name, x, min, max);
    *out = x;
    return MD_OK;
}

static md_status reply_json(md_req *r, unsigned int code, cJSON *json)
{
    r->code = code;
    r->json = json;
    return MD_OK;
}

/* ---- handlers --------------------------------------------------------- */

static md_status h_health(md_req *r, md_error *e)
{
    (void)e;
    md_server *srv = r->srv;
    int state = atomic_load(&srv->state);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", state == 1 ? "ok" : state == 0 ? "starting" : "stopping");
    cJSON_AddStringToObject(o, "version", MD_VERSION);
    cJSON *b = cJSON_AddObjectToObject(o, "backend");
    char dev[256] = "";
    if (srv->backend) {
        srv->backend->describe(dev, sizeof dev);
        cJSON_AddStringToObject(b, "name", srv->backend->name);
    } else {
        cJSON_AddNullToObject(b, "name");
    }
    cJSON_AddStringToObject(b, "device", dev);
#ifdef MD_HAVE_CUDA
    cJSON_AddTrueToObject(b, "cuda_built");
#else
    cJSON_AddFalseToObject(b, "cuda_built");
#endif
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    /* The model pipeline arrives with later issues; until then jobs only probe videos. */
    cJSON_AddStringToObject(m, "status", "none");
    cJSON_AddBoolToObject(m, "meaningful", 0);
    cJSON_AddStringToObject(m, "message",
                            "no embedding model in this build yet: indexing probes videos (duration, streams) only");
    cJSON_AddNumberToObject(o, "uptime_s", (double)(long long)((md_mono_s() - srv->started_mono) * 10) / 10);
    cJSON_AddNumberToObject(o, "workers", (double)srv->cfg->workers);
    return reply_json(r, state == 1 ? 200 : 503, o);
}

static md_status h_openapi(md_req *r, md_error *e)
{
    (void)e;
    r->code = 200;
    r->text = (char *)md_openapi_json;
    r->text_static = 1;
    r->text_type = "application/json";
    return MD_OK;
}

static md_status h_metrics(md_req *r, md_error *e)
{
    md_library_stats s;
    md_status st = md_library_stats_get(r->srv->lib, &s, e);
    if (st != MD_OK)
        return st;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    md_metrics_write(&buf, &len, &cap);
    char tail[2048];
    snprintf(tail, sizeof tail,
             "# HELP momentd_jobs Jobs by state.\n# TYPE momentd_jobs gauge\n"
             "momentd_jobs{state=\"queued\"} %lld\nmomentd_jobs{state=\"running\"} %lld\n"
             "momentd_jobs{state=\"done\"} %lld\nmomentd_jobs{state=\"failed\"} %lld\n"
             "# HELP momentd_queue_depth Jobs waiting for a worker.\n# TYPE momentd_queue_depth gauge\n"
             "momentd_queue_depth %lld\n"
             "# HELP momentd_videos Videos in the library.\n# TYPE momentd_videos gauge\nmomentd_videos %lld\n"
             "# HELP momentd_bytes_stored Bytes of uploaded videos kept in data_dir.\n"
             "# TYPE momentd_bytes_stored gauge\nmomentd_bytes_stored %lld\n"
             "# HELP momentd_bytes_indexed_in_place Bytes of archive files indexed where they are.\n"
             "# TYPE momentd_bytes_indexed_in_place gauge\nmomentd_bytes_indexed_in_place %lld\n"
             "# HELP momentd_up 1 while serving.\n# TYPE momentd_up gauge\nmomentd_up 1\n",
             s.jobs_queued, s.jobs_running, s.jobs_done, s.jobs_failed, s.jobs_queued, s.videos, s.bytes_stored,
             s.bytes_indexed_paths);
    size_t tl = strlen(tail);
    char *nb = realloc(buf, len + tl + 1);
    if (!nb) {
        free(buf);
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    }
    memcpy(nb + len, tail, tl + 1);
    r->code = 200;
    r->text = nb;
    r->text_type = "text/plain; version=0.0.4; charset=utf-8";
    return MD_OK;
}

static md_status h_upload(md_req *r, md_error *e)
{
    cJSON *res = NULL;
    int created = 0;
    md_upload *u = r->upload;
    r->upload = NULL; /* finish frees it in every case */
    md_status st = md_upload_finish(u, &res, &created, e);
    if (st != MD_OK)
        return st;
    cJSON_AddBoolToObject(res, "duplicate", !created);
    return reply_json(r, created ? 202 : 200, res);
}

static md_status h_list_videos(md_req *r, md_error *e)
{
    long long limit, offset;
    md_status st;
    if ((st = md_query_int(r, "limit", 50, 1, 1000, &limit, e)) != MD_OK ||
        (st = md_query_int(r, "offset", 0, 0, (long long)1 << 53, &offset, e)) != MD_OK)
        return st;
    cJSON *res;
    if ((st = md_library_list_videos(r->srv->lib, limit, offset, &res, e)) != MD_OK)
        return st;
    return reply_json(r, 200, res);
}

static md_status h_get_video(md_req *r, md_error *e)
{
    cJSON *res;
    md_status st = md_library_get_video(r->srv->lib, r->params[0], &res, e);
    return st != MD_OK ? st : reply_json(r, 200, res);
}

static md_status h_delete_video(md_req *r, md_error *e)
{
    md_status st = md_library_delete_video(r->srv->lib, r->params[0], e);
    if (st != MD_OK)
        return st;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "deleted", (double)r->params[0]);
    return reply_json(r, 200, o);
}

static md_status h_get_job(md_req *r, md_error *e)
{
    cJSON *res;
    md_status st = md_library_get_job(r->srv->lib, r->params[0], &res, e);
    return st != MD_OK ? st : reply_json(r, 200, res);
}

static md_status h_index(md_req *r, md_error *e)
{
    cJSON *paths = cJSON_GetObjectItemCaseSensitive(r->body_json, "paths");
    if (!cJSON_IsObject(r->body_json) || !cJSON_IsArray(paths))
        return md_fail(e, MD_ERR_INVALID, "expected a JSON object {\"paths\": [\"/absolute/path\", ...]}");
    int n = cJSON_GetArraySize(paths);
    if (n == 0 || n > 1000)
        return md_fail(e, MD_ERR_INVALID, "'paths' must hold 1 to 1000 paths (it has %d)", n);
    const char **list = calloc((size_t)n, sizeof *list);
    if (!list)
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    int i = 0;
    cJSON *p;
    cJSON_ArrayForEach(p, paths)
    {
        if (!cJSON_IsString(p) || !p->valuestring[0]) {
            free(list);
            return md_fail(e, MD_ERR_INVALID, "'paths[%d]' must be a non-empty string", i);
        }
        list[i++] = p->valuestring;
    }
    cJSON *res;
    md_status st = md_library_index_paths(r->srv->lib, list, n, &res, e);
    free(list);
    if (st != MD_OK)
        return st;
    int queued = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(res, "queued"));
    return reply_json(r, queued ? 202 : 200, res);
}

/* The routes. Order matters only for the Allow header. */
const md_route md_routes[] = {
    {"GET", "/v1/health", h_health, MD_BODY_NONE, 1},
    {"GET", "/v1/openapi.json", h_openapi, MD_BODY_NONE, 1},
    {"GET", "/metrics", h_metrics, MD_BODY_NONE, 0},
    {"POST", "/v1/videos", h_upload, MD_BODY_UPLOAD, 0},
    {"GET", "/v1/videos", h_list_videos, MD_BODY_NONE, 0},
    {"GET", "/v1/videos/{id}", h_get_video, MD_BODY_NONE, 0},
    {"DELETE", "/v1/videos/{id}", h_delete_video, MD_BODY_NONE, 0},
    {"POST", "/v1/index", h_index, MD_BODY_JSON, 0},
    {"GET", "/v1/jobs/{id}", h_get_job, MD_BODY_NONE, 0},
};
const int md_n_routes = (int)(sizeof md_routes / sizeof md_routes[0]);
