/* test_server.c - unit tests of the HTTP layer without sockets: route
 * matching, the route table against server/openapi.json (both ways), and the
 * mapping of statuses to HTTP codes and error codes. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

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
}

static int route_in_table(const char *method, const char *path)
{
    for (int i = 0; i < md_n_routes; i++)
        if (strcasecmp(md_routes[i].method, method) == 0 && strcmp(md_routes[i].pattern, path) == 0)
            return 1;
    return 0;
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
            /* Every operation documents at least one success and its errors use the one shape. */
            CHECK(cJSON_GetObjectItem(op, "responses") != NULL);
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

int main(int argc, char **argv)
{
    md_test_init(argc, argv);
    RUN(test_match_pattern);
    RUN(test_openapi_matches_routes);
    RUN(test_status_mapping);
    RUN(test_routes_are_unique);
    return md_test_summary("test_server");
}
