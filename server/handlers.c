/* handlers.c - the route table and its handlers. A handler parses and
 * validates the request, calls one engine function and serialises the answer;
 * errors go back as a status and message (see errors.c). Keep the table in
 * step with server/openapi.json (tests/unit/test_server.c checks both ways).
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* ---- helpers ---------------------------------------------------------- */

const char *md_query_str(md_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

static md_status opt_ll(md_req *r, const char *name, long long def, long long min, long long max, long long *out,
                        md_errbuf *e);
static md_status opt_str(md_req *r, const char *name, const char **out, md_errbuf *e);

static md_status reply_json(md_req *r, unsigned int code, cJSON *json)
{
    r->code = code;
    r->json = json;
    return MD_OK;
}

/* ---- handlers --------------------------------------------------------- */

static md_status h_health(md_req *r, md_errbuf *e)
{
    (void)e;
    md_server *srv = r->srv;
    int state = atomic_load(&srv->state);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", state == 1 ? "ok" : state == 0 ? "starting" : "stopping");
    cJSON_AddStringToObject(o, "version", MD_VERSION);
    /* Health is public (load balancers probe it without the key), but the rest says where the
     * data and model live and how much is indexed: only for requests that may see the library. */
    if (!r->authorized)
        return reply_json(r, state == 1 ? 200 : 503, o);
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

static md_status h_openapi(md_req *r, md_errbuf *e)
{
    (void)e;
    r->code = 200;
    r->text = (char *)md_openapi_json;
    r->text_static = 1;
    r->text_type = "application/json";
    return MD_OK;
}

static md_status h_metrics(md_req *r, md_errbuf *e)
{
    md_library_stats s;
    md_status st = md_library_stats_get(r->srv->lib, &s, e);
    if (st != MD_OK)
        return st;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int bad_head = md_metrics_write(&buf, &len, &cap);
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
    int bad = bad_head | md_appendf(&buf, &len, &cap, "%s", tail);
    bad |= md_appendf(&buf, &len, &cap,
                      "# HELP momentd_index_stage_seconds_total Seconds spent indexing, by stage "
                      "(all workers added up).\n# TYPE momentd_index_stage_seconds_total counter\n");
    for (int i = 0; i < MD_STAGE_COUNT; i++)
        bad |= md_appendf(&buf, &len, &cap, "momentd_index_stage_seconds_total{stage=\"%s\"} %.6f\n", md_stage_name(i),
                          s.stage_seconds[i]);
    bad |= md_appendf(&buf, &len, &cap,
                      "# HELP momentd_decode_failures_total Jobs whose file could not be indexed, "
                      "by reason.\n# TYPE momentd_decode_failures_total counter\n");
    for (int i = 0; i < MD_FAIL_COUNT; i++)
        bad |= md_appendf(&buf, &len, &cap, "momentd_decode_failures_total{reason=\"%s\"} %lld\n",
                          md_fail_reason_name(i), s.failures[i]);
    if (bad || !buf) {
        free(buf);
        return md_fail(e, MD_ERR_NOMEM, "out of memory");
    }
    r->code = 200;
    r->text = buf;
    r->text_type = "text/plain; version=0.0.4; charset=utf-8";
    return MD_OK;
}

static md_status h_upload(md_req *r, md_errbuf *e)
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

static md_status h_list_videos(md_req *r, md_errbuf *e)
{
    long long limit, offset;
    md_status st;
    if ((st = opt_ll(r, "limit", 50, 1, 1000, &limit, e)) != MD_OK ||
        (st = opt_ll(r, "offset", 0, 0, (long long)1 << 53, &offset, e)) != MD_OK)
        return st;
    cJSON *res;
    if ((st = md_library_list_videos(r->srv->lib, limit, offset, &res, e)) != MD_OK)
        return st;
    return reply_json(r, 200, res);
}

static md_status h_get_video(md_req *r, md_errbuf *e)
{
    cJSON *res;
    md_status st = md_library_get_video(r->srv->lib, r->params[0], &res, e);
    return st != MD_OK ? st : reply_json(r, 200, res);
}

static md_status h_delete_video(md_req *r, md_errbuf *e)
{
    md_status st = md_library_delete_video(r->srv->lib, r->params[0], e);
    if (st != MD_OK)
        return st;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "deleted", (double)r->params[0]);
    return reply_json(r, 200, o);
}

static md_status h_get_job(md_req *r, md_errbuf *e)
{
    cJSON *res;
    md_status st = md_library_get_job(r->srv->lib, r->params[0], &res, e);
    return st != MD_OK ? st : reply_json(r, 200, res);
}

static md_status h_list_jobs(md_req *r, md_errbuf *e)
{
    long long limit, offset, video_id;
    const char *state = NULL, *kind = NULL;
    md_status st;
    if ((st = opt_ll(r, "limit", 50, 1, 1000, &limit, e)) != MD_OK ||
        (st = opt_ll(r, "offset", 0, 0, (long long)1 << 53, &offset, e)) != MD_OK ||
        (st = opt_ll(r, "video_id", 0, 1, MD_ID_MAX, &video_id, e)) != MD_OK ||
        (st = opt_str(r, "state", &state, e)) != MD_OK || (st = opt_str(r, "kind", &kind, e)) != MD_OK)
        return st;
    static const char *const states[] = {"queued", "running", "done", "failed", "cancelled"};
    if (state) {
        int known = 0;
        for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
            known |= !strcmp(state, states[i]);
        if (!known)
            return md_fail(e, MD_ERR_INVALID, "'state' must be one of queued, running, done, failed, cancelled");
    }
    if (kind && !kind[0])
        kind = NULL;
    cJSON *res;
    if ((st = md_library_list_jobs(r->srv->lib, state, video_id, kind, limit, offset, &res, e)) != MD_OK)
        return st;
    return reply_json(r, 200, res);
}

static md_status h_cancel_job(md_req *r, md_errbuf *e)
{
    cJSON *res;
    md_status st = md_library_cancel_job(r->srv->lib, r->params[0], &res, e);
    return st != MD_OK ? st : reply_json(r, 200, res);
}

static md_status h_reindex_video(md_req *r, md_errbuf *e)
{
    cJSON *res;
    md_status st = md_library_reindex_video(r->srv->lib, r->params[0], &res, e);
    return st != MD_OK ? st : reply_json(r, 202, res);
}

static md_status h_index(md_req *r, md_errbuf *e)
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

/* Where option NAME of a request is: the member of the JSON body, typed (*JSON), else the
 * multipart form field or the query-string argument, as text (*TEXT); in that order. Returns 0
 * when absent; a JSON null counts as absent. */
static int opt_find(md_req *r, const char *name, const cJSON **json, const char **text)
{
    *json = NULL;
    *text = NULL;
    const cJSON *j = r->body_json ? cJSON_GetObjectItemCaseSensitive(r->body_json, name) : NULL;
    if (j && !cJSON_IsNull(j)) {
        *json = j;
        return 1;
    }
    j = r->form ? cJSON_GetObjectItemCaseSensitive(r->form, name) : NULL;
    if (cJSON_IsString(j)) {
        *text = j->valuestring;
        return 1;
    }
    *text = md_query_str(r, name);
    return *text != NULL;
}

/* Option NAME as a number: a JSON number is taken as it is (never printed and parsed back), a
 * JSON value of another type is an error; text is parsed. *GIVEN says whether it was there.
 * Ranges are the caller's: NaN and infinities come through, to fail its range check. */
static md_status opt_number(md_req *r, const char *name, int *given, double *out, md_errbuf *e)
{
    const cJSON *j;
    const char *v;
    if (!(*given = opt_find(r, name, &j, &v)))
        return MD_OK;
    if (j) {
        if (!cJSON_IsNumber(j))
            return md_fail(e, MD_ERR_INVALID, "'%s' must be a number", name);
        *out = j->valuedouble;
        return MD_OK;
    }
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end)
        return md_fail(e, MD_ERR_INVALID, "'%s': '%s' is not a number", name, v);
    *out = x;
    return MD_OK;
}

/* Option NAME as a whole number, DEF when absent. Out-of-int values saturate: every range such an
 * option feeds lies inside int (asserted below), so the engine's check still rejects them, by name. */
_Static_assert(MD_SEARCH_K_MAX < INT_MAX && MD_SEARCH_OFFSET_MAX < INT_MAX && MD_GROUND_TOP_N_MAX < INT_MAX,
               "request limits must lie inside int");
static md_status opt_int(md_req *r, const char *name, int def, int *out, md_errbuf *e)
{
    double x = 0;
    int given;
    md_status st = opt_number(r, name, &given, &x, e);
    if (st != MD_OK)
        return st;
    if (!given) {
        *out = def;
        return MD_OK;
    }
    if (x != trunc(x)) /* also NaN */
        return md_fail(e, MD_ERR_INVALID, "'%s' must be a whole number", name);
    *out = x < INT_MIN ? INT_MIN : x > INT_MAX ? INT_MAX : (int)x;
    return MD_OK;
}

/* Option NAME as a whole number in [MIN, MAX], DEF when absent: for the options whose range is
 * the handler's own (list paging, ids). */
static md_status opt_ll(md_req *r, const char *name, long long def, long long min, long long max, long long *out,
                        md_errbuf *e)
{
    double x = 0;
    int given;
    md_status st = opt_number(r, name, &given, &x, e);
    if (st != MD_OK)
        return st;
    if (!given) {
        *out = def;
        return MD_OK;
    }
    if (x != trunc(x))
        return md_fail(e, MD_ERR_INVALID, "'%s' must be a whole number", name);
    if (!(x >= (double)min && x <= (double)max))
        return md_fail(e, MD_ERR_INVALID, "'%s' must be %lld..%lld", name, min, max);
    *out = (long long)x;
    return MD_OK;
}

/* Option NAME as a number, DEF when absent; the range is the engine's check. */
static md_status opt_num(md_req *r, const char *name, double def, double *out, md_errbuf *e)
{
    int given;
    md_status st = opt_number(r, name, &given, out, e);
    if (st == MD_OK && !given)
        *out = def;
    return st;
}

/* Option NAME as 0 or 1: a JSON boolean, or the number 0 or 1; DEF when absent. */
static md_status opt_bool(md_req *r, const char *name, int def, int *out, md_errbuf *e)
{
    const cJSON *j;
    const char *v;
    if (opt_find(r, name, &j, &v) && j && cJSON_IsBool(j)) {
        *out = cJSON_IsTrue(j);
        return MD_OK;
    }
    md_status st = opt_int(r, name, def, out, e);
    if (st == MD_OK && *out != 0 && *out != 1)
        return md_fail(e, MD_ERR_INVALID, "'%s' must be 0 or 1 (or false or true)", name);
    return st;
}

/* Option NAME as text, NULL when absent; a JSON value that is not a string is an error, and so
 * is text that is not valid UTF-8 (it would be echoed back in answers as invalid JSON). */
static md_status opt_str(md_req *r, const char *name, const char **out, md_errbuf *e)
{
    const cJSON *j;
    opt_find(r, name, &j, out);
    if (j) {
        if (!cJSON_IsString(j))
            return md_fail(e, MD_ERR_INVALID, "'%s' must be a string", name);
        *out = j->valuestring;
    }
    if (*out && !md_utf8_valid(*out, strlen(*out)))
        return md_fail(e, MD_ERR_INVALID, "'%s' is not valid UTF-8", name);
    return MD_OK;
}

/* video_ids: a JSON array of ids, or a comma-separated list in text. IDS holds
 * MD_SEARCH_MAX_VIDEOS + 1: parsing stops one past the limit, and md_search_query_check names
 * the excess. */
static md_status opt_ids(md_req *r, long long *ids, int *n, md_errbuf *e)
{
    const cJSON *j;
    const char *v;
    *n = 0;
    if (!opt_find(r, "video_ids", &j, &v))
        return MD_OK;
    if (j) {
        const cJSON *x;
        if (!cJSON_IsArray(j))
            return md_fail(e, MD_ERR_INVALID, "'video_ids' must be an array of video ids");
        cJSON_ArrayForEach(x, j)
        {
            if (*n > MD_SEARCH_MAX_VIDEOS)
                break;
            if (!cJSON_IsNumber(x) || !(x->valuedouble >= 1 && x->valuedouble <= (double)MD_ID_MAX) ||
                x->valuedouble != trunc(x->valuedouble))
                return md_fail(e, MD_ERR_INVALID, "'video_ids' must hold positive whole numbers");
            ids[(*n)++] = (long long)x->valuedouble;
        }
        return MD_OK;
    }
    while (*v && *n <= MD_SEARCH_MAX_VIDEOS) {
        char *end;
        errno = 0;
        long long id = strtoll(v, &end, 10);
        if (end == v || errno || id < 1 || (*end && *end != ','))
            return md_fail(e, MD_ERR_INVALID, "'video_ids' must be a comma-separated list of video ids");
        ids[(*n)++] = id;
        v = *end ? end + 1 : end;
    }
    return MD_OK;
}

static md_status h_search(md_req *r, md_errbuf *e)
{
    long long ids[MD_SEARCH_MAX_VIDEOS + 1];
    md_search_query q = {0};
    long long video_id;
    md_status st;
    if (r->body_json && !cJSON_IsObject(r->body_json))
        return md_fail(e, MD_ERR_INVALID, "expected a JSON object such as {\"q\": \"a dog jumps into a pool\"}");
    if ((st = opt_int(r, "k", 10, &q.k, e)) != MD_OK || (st = opt_int(r, "offset", 0, &q.offset, e)) != MD_OK ||
        (st = opt_num(r, "min_score", -1, &q.min_score, e)) != MD_OK ||
        (st = opt_ll(r, "video_id", 0, 1, MD_ID_MAX, &video_id, e)) != MD_OK ||
        (st = opt_num(r, "t", 0, &q.t_s, e)) != MD_OK || (st = opt_ids(r, ids, &q.n_videos, e)) != MD_OK ||
        (st = opt_str(r, "q", &q.text, e)) != MD_OK || (!q.text && (st = opt_str(r, "text", &q.text, e)) != MD_OK))
        return st;
    if (r->mode == MD_BODY_QUERY) {
        q.image_path = r->file_path;
        q.text = NULL;
    }
    if (video_id && q.text && !q.text[0])
        q.text = NULL;
    q.video_id = video_id;
    q.videos = q.n_videos ? ids : NULL;
    if ((st = md_search_query_check(&q, e)) != MD_OK)
        return st;
    const cJSON *tj;
    const char *tv;
    if (video_id && !opt_find(r, "t", &tj, &tv))
        return md_fail(e, MD_ERR_INVALID, "'video_id' needs 't' (seconds into that video)");
    cJSON *res;
    if ((st = md_library_search(r->srv->lib, &q, &res, e)) != MD_OK)
        return st;
    return reply_json(r, 200, res);
}

static md_status h_ground(md_req *r, md_errbuf *e)
{
    int top_n, curve;
    const char *text = NULL;
    md_status st;
    if (r->body_json && !cJSON_IsObject(r->body_json))
        return md_fail(e, MD_ERR_INVALID, "expected a JSON object such as {\"q\": \"the car turns left\"}");
    if ((st = opt_int(r, "top_n", 5, &top_n, e)) != MD_OK || (st = opt_bool(r, "curve", 0, &curve, e)) != MD_OK ||
        (st = opt_str(r, "q", &text, e)) != MD_OK || (!text && (st = opt_str(r, "text", &text, e)) != MD_OK) ||
        (st = md_ground_check(text, top_n, e)) != MD_OK)
        return st;
    cJSON *res;
    if ((st = md_library_ground(r->srv->lib, r->params[0], text, top_n, curve, &res, e)) != MD_OK)
        return st;
    return reply_json(r, 200, res);
}

/* The routes. Order matters only for the Allow header. */
const md_route md_routes[] = {
    {"GET", "/v1/health", h_health, MD_BODY_NONE, 1, 0},
    {"GET", "/v1/openapi.json", h_openapi, MD_BODY_NONE, 1, 0},
    {"GET", "/metrics", h_metrics, MD_BODY_NONE, 0, 0},
    {"POST", "/v1/videos", h_upload, MD_BODY_UPLOAD, 0, 0},
    {"GET", "/v1/videos", h_list_videos, MD_BODY_NONE, 0, 0},
    {"GET", "/v1/videos/{id}", h_get_video, MD_BODY_NONE, 0, 0},
    {"DELETE", "/v1/videos/{id}", h_delete_video, MD_BODY_NONE, 0, 0},
    {"POST", "/v1/index", h_index, MD_BODY_JSON, 0, 0},
    {"POST", "/v1/videos/{id}/reindex", h_reindex_video, MD_BODY_NONE, 0, 0},
    {"GET", "/v1/jobs", h_list_jobs, MD_BODY_NONE, 0, 0},
    {"GET", "/v1/jobs/{id}", h_get_job, MD_BODY_NONE, 0, 0},
    {"POST", "/v1/jobs/{id}/cancel", h_cancel_job, MD_BODY_NONE, 0, 0},
    {"GET", "/v1/search", h_search, MD_BODY_NONE, 0, 1},
    {"POST", "/v1/search", h_search, MD_BODY_QUERY, 0, 1},
    {"GET", "/v1/videos/{id}/ground", h_ground, MD_BODY_NONE, 0, 1},
    {"POST", "/v1/videos/{id}/ground", h_ground, MD_BODY_JSON, 0, 1},
};
const int md_n_routes = (int)(sizeof md_routes / sizeof md_routes[0]);
