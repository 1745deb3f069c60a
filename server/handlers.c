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

#include "server.h"

/* ---- helpers ---------------------------------------------------------- */

const char *md_query_str(md_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

static md_status opt_int(md_req *r, const char *name, long long def, long long min, long long max, long long *out,
                         md_error *e);

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
    md_engine_info info;
    md_engine_get_info(&info);
    if (info.backend[0])
        cJSON_AddStringToObject(b, "name", info.backend);
    else
        cJSON_AddNullToObject(b, "name");
    cJSON_AddStringToObject(b, "device", info.device);
    cJSON_AddBoolToObject(b, "cuda_built", info.cuda_built);
    cJSON_AddItemToObject(o, "model", md_library_model_json(srv->lib));
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
    if ((st = opt_int(r, "limit", 50, 1, 1000, &limit, e)) != MD_OK ||
        (st = opt_int(r, "offset", 0, 0, (long long)1 << 53, &offset, e)) != MD_OK)
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

/* ---- search and grounding -------------------------------------------- */

/* A request option from the JSON body, the multipart form or the query string
 * (in that order), as text; NULL when absent. BUF holds numbers printed from JSON. */
static const char *opt(md_req *r, const char *name, char *buf, size_t len)
{
    cJSON *j = r->body_json ? cJSON_GetObjectItemCaseSensitive(r->body_json, name) : NULL;
    if (cJSON_IsString(j))
        return j->valuestring;
    if (cJSON_IsNumber(j)) {
        snprintf(buf, len, "%.17g", j->valuedouble);
        return buf;
    }
    if (cJSON_IsBool(j))
        return cJSON_IsTrue(j) ? "1" : "0";
    if (j && !cJSON_IsNull(j))
        return ""; /* wrong JSON type: parsed as invalid below */
    j = r->form ? cJSON_GetObjectItemCaseSensitive(r->form, name) : NULL;
    if (cJSON_IsString(j))
        return j->valuestring;
    return md_query_str(r, name);
}

static md_status opt_int(md_req *r, const char *name, long long def, long long min, long long max, long long *out,
                         md_error *e)
{
    char buf[64];
    const char *v = opt(r, name, buf, sizeof buf);
    if (!v) {
        *out = def;
        return MD_OK;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || x != (double)(long long)x)
        return md_fail(e, MD_ERR_INVALID, "'%s': '%s' is not a whole number", name, v);
    if (x < (double)min || x > (double)max)
        return md_fail(e, MD_ERR_INVALID, "'%s': %s is out of range [%lld, %lld]", name, v, min, max);
    *out = (long long)x;
    return MD_OK;
}

static md_status opt_num(md_req *r, const char *name, double def, double min, double max, double *out, md_error *e)
{
    char buf[64];
    const char *v = opt(r, name, buf, sizeof buf);
    if (!v) {
        *out = def;
        return MD_OK;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !(x >= min && x <= max))
        return md_fail(e, MD_ERR_INVALID, "'%s': '%s' is not a number in [%g, %g]", name, v, min, max);
    *out = x;
    return MD_OK;
}

#define MAX_FILTER_VIDEOS 1000

/* video_ids: a JSON array of ids or a comma-separated list. */
static md_status opt_ids(md_req *r, long long *ids, int *n, md_error *e)
{
    *n = 0;
    cJSON *j = r->body_json ? cJSON_GetObjectItemCaseSensitive(r->body_json, "video_ids") : NULL;
    if (j && !cJSON_IsNull(j)) {
        cJSON *x;
        if (!cJSON_IsArray(j))
            return md_fail(e, MD_ERR_INVALID, "'video_ids' must be an array of video ids");
        cJSON_ArrayForEach(x, j)
        {
            if (!cJSON_IsNumber(x) || x->valuedouble < 1 || x->valuedouble != (double)(long long)x->valuedouble)
                return md_fail(e, MD_ERR_INVALID, "'video_ids' must hold positive whole numbers");
            if (*n >= MAX_FILTER_VIDEOS)
                return md_fail(e, MD_ERR_INVALID, "'video_ids' holds more than %d ids", MAX_FILTER_VIDEOS);
            ids[(*n)++] = (long long)x->valuedouble;
        }
        return MD_OK;
    }
    char buf[8];
    const char *v = opt(r, "video_ids", buf, sizeof buf);
    while (v && *v) {
        char *end;
        errno = 0;
        long long id = strtoll(v, &end, 10);
        if (end == v || errno || id < 1 || (*end && *end != ','))
            return md_fail(e, MD_ERR_INVALID, "'video_ids' must be a comma-separated list of video ids");
        if (*n >= MAX_FILTER_VIDEOS)
            return md_fail(e, MD_ERR_INVALID, "'video_ids' holds more than %d ids", MAX_FILTER_VIDEOS);
        ids[(*n)++] = id;
        v = *end ? end + 1 : end;
    }
    return MD_OK;
}

static md_status h_search(md_req *r, md_error *e)
{
    long long ids[MAX_FILTER_VIDEOS];
    md_search_query q = {0};
    long long k, offset, video_id;
    double t, min_score;
    md_status st;
    char buf[64];
    if (r->body_json && !cJSON_IsObject(r->body_json))
        return md_fail(e, MD_ERR_INVALID, "expected a JSON object such as {\"q\": \"a dog jumps into a pool\"}");
    if ((st = opt_int(r, "k", 10, 1, 100, &k, e)) != MD_OK || (st = opt_int(r, "offset", 0, 0, 10000, &offset, e)) != MD_OK ||
        (st = opt_num(r, "min_score", -1, -1, 1, &min_score, e)) != MD_OK ||
        (st = opt_int(r, "video_id", 0, 1, (long long)1 << 53, &video_id, e)) != MD_OK ||
        (st = opt_num(r, "t", 0, 0, 1e9, &t, e)) != MD_OK || (st = opt_ids(r, ids, &q.n_videos, e)) != MD_OK)
        return st;
    for (const char *key = "q"; key; key = strcmp(key, "q") == 0 ? "text" : NULL) {
        cJSON *j = r->body_json ? cJSON_GetObjectItemCaseSensitive(r->body_json, key) : NULL;
        if (j && !cJSON_IsString(j) && !cJSON_IsNull(j))
            return md_fail(e, MD_ERR_INVALID, "'%s' must be a string", key);
    }
    q.text = opt(r, "q", buf, sizeof buf);
    if (!q.text)
        q.text = opt(r, "text", buf, sizeof buf);
    if (r->mode == MD_BODY_QUERY) {
        q.image_path = r->file_path;
        q.text = NULL;
    }
    if (video_id && q.text && !q.text[0])
        q.text = NULL;
    q.video_id = video_id;
    q.t_s = t;
    q.k = (int)k;
    q.offset = (int)offset;
    q.min_score = min_score;
    q.videos = q.n_videos ? ids : NULL;
    if (!q.text && !q.image_path && !q.video_id)
        return md_fail(e, MD_ERR_INVALID, "give a query: q=TEXT, a picture (multipart 'file'), or video_id and t");
    if (video_id && !opt(r, "t", buf, sizeof buf))
        return md_fail(e, MD_ERR_INVALID, "'video_id' needs 't' (seconds into that video)");
    cJSON *res;
    if ((st = md_library_search(r->srv->lib, &q, &res, e)) != MD_OK)
        return st;
    return reply_json(r, 200, res);
}

static md_status h_ground(md_req *r, md_error *e)
{
    long long top_n, curve;
    md_status st;
    char buf[64];
    if (r->body_json && !cJSON_IsObject(r->body_json))
        return md_fail(e, MD_ERR_INVALID, "expected a JSON object such as {\"q\": \"the car turns left\"}");
    if ((st = opt_int(r, "top_n", 5, 1, 100, &top_n, e)) != MD_OK ||
        (st = opt_int(r, "curve", 0, 0, 1, &curve, e)) != MD_OK)
        return st;
    cJSON *jq = r->body_json ? cJSON_GetObjectItemCaseSensitive(r->body_json, "q") : NULL;
    if (jq && !cJSON_IsString(jq))
        return md_fail(e, MD_ERR_INVALID, "'q' must be a string");
    const char *text = opt(r, "q", buf, sizeof buf);
    if (!text)
        text = opt(r, "text", buf, sizeof buf);
    if (!text)
        return md_fail(e, MD_ERR_INVALID, "give the query text as q");
    cJSON *res;
    if ((st = md_library_ground(r->srv->lib, r->params[0], text, (int)top_n, (int)curve, &res, e)) != MD_OK)
        return st;
    return reply_json(r, 200, res);
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
    {"GET", "/v1/search", h_search, MD_BODY_NONE, 0},
    {"POST", "/v1/search", h_search, MD_BODY_QUERY, 0},
    {"GET", "/v1/videos/{id}/ground", h_ground, MD_BODY_NONE, 0},
    {"POST", "/v1/videos/{id}/ground", h_ground, MD_BODY_JSON, 0},
};
const int md_n_routes = (int)(sizeof md_routes / sizeof md_routes[0]);
