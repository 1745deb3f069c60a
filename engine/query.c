/* query.c - search across the library and grounding in one video: a query
 * (text, picture, or an indexed segment) becomes an embedding of the current
 * model, the segment index answers (search.h), and the answer is laid out as
 * JSON with the videos' names. */
#define _XOPEN_SOURCE 700
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../video/isolate.h"
#include "../video/video.h"
#include "library_internal.h"
#include "../base/log.h"

static double round3(double x) { return round(x * 1000.0) / 1000.0; }

/* {"name", "demo", "meaningful"} of the current model, for every answer. */
static cJSON *model_brief(md_library *lib)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "name", lib->model_name);
    cJSON_AddNumberToObject(m, "id", (double)lib->model_id);
    int demo = md_clip_is_demo(lib->clip);
    cJSON_AddBoolToObject(m, "demo", demo);
    cJSON_AddBoolToObject(m, "meaningful", !demo);
    if (demo)
        cJSON_AddStringToObject(m, "warning", "demo model with random weights: scores are not meaningful; "
                                              "configure model_dir with a real CLIP checkpoint");
    return m;
}

cJSON *md_library_model_json(md_library *lib)
{
    cJSON *m = cJSON_CreateObject();
    if (!lib || !lib->clip) {
        cJSON_AddStringToObject(m, "status", lib ? "none" : "loading");
        cJSON_AddBoolToObject(m, "meaningful", 0);
        return m;
    }
    int demo = md_clip_is_demo(lib->clip);
    cJSON_AddStringToObject(m, "status", "loaded");
    cJSON_AddStringToObject(m, "name", lib->model_name);
    cJSON_AddStringToObject(m, "dir", lib->model_dir);
    cJSON_AddBoolToObject(m, "demo", demo);
    cJSON_AddBoolToObject(m, "meaningful", !demo);
    cJSON_AddStringToObject(m, "description", md_clip_describe(lib->clip));
    cJSON_AddNumberToObject(m, "dim", md_clip_dim(lib->clip));
    cJSON_AddStringToObject(m, "weights_sha256", md_clip_weights_sha256(lib->clip));
    cJSON *t = cJSON_AddObjectToObject(m, "temporal");
    const md_temporal_info *ti = md_temporal_get_info(lib->temporal);
    cJSON_AddStringToObject(t, "path", lib->temporal_path);
    cJSON_AddBoolToObject(t, "trained", ti->trained);
    cJSON_AddBoolToObject(t, "identity", ti->identity);
    cJSON_AddNumberToObject(t, "layers", ti->cfg.n_layers);
    cJSON_AddStringToObject(t, "summary", lib->temporal_label);
    if (!ti->trained)
        cJSON_AddStringToObject(t, "message", "untrained temporal encoder: segment embeddings are the mean of their "
                                              "frames' CLIP embeddings until trained weights are configured");
    cJSON_AddNumberToObject(m, "segments", (double)md_index_count(lib->index));
    cJSON_AddNumberToObject(m, "index_bytes", (double)md_index_bytes(lib->index));
    cJSON_AddNumberToObject(m, "load_s", round3(lib->model_load_s));
    if (demo)
        cJSON_AddStringToObject(m, "message", "demo model with random weights: indexing and search work, but results "
                                              "are not meaningful; set model_dir to a CLIP checkpoint");
    return m;
}

/* Waits (at most MD_PICTURE_WAIT_S) for one of the MD_PICTURE_DECODES_MAX picture slots; 0 when
 * none came free. */
static int picture_slot_take(md_library *lib)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += MD_PICTURE_WAIT_S;
    int got = 1;
    pthread_mutex_lock(&lib->pic_mu);
    while (lib->pic_busy >= MD_PICTURE_DECODES_MAX && got)
        got = pthread_cond_timedwait(&lib->pic_cv, &lib->pic_mu, &until) == 0;
    if (lib->pic_busy < MD_PICTURE_DECODES_MAX) {
        lib->pic_busy++;
        got = 1;
    }
    pthread_mutex_unlock(&lib->pic_mu);
    return got;
}

static void picture_slot_give(md_library *lib)
{
    pthread_mutex_lock(&lib->pic_mu);
    lib->pic_busy--;
    pthread_cond_signal(&lib->pic_cv);
    pthread_mutex_unlock(&lib->pic_mu);
}

/* 1 when VIDEO_ID exists. */
static int video_exists(md_library *lib, long long id)
{
    md_video_rec *v = malloc(sizeof *v);
    if (!v)
        return 0;
    pthread_mutex_lock(&lib->db_mu);
    int found = md_store_video_get(lib->db, id, v) == MD_OK;
    pthread_mutex_unlock(&lib->db_mu);
    free(v);
    return found;
}

/* Embeds the query of Q (checked by md_search_query_check) into EMB (dim floats). Fills QJ with
 * what the query was. */
static md_status embed_query(md_library *lib, const md_search_query *q, float *emb, cJSON *qj, md_errbuf *e)
{
    char err[512] = "";
    md_status s;
    if (q->text) {
        int ids[MD_CLIP_MAX_TOKENS], n_ids = 0;
        if ((s = md_clip_embed_text(lib->clip, q->text, emb, ids, &n_ids, err, sizeof err)) != MD_OK)
            return md_fail(e, s, "cannot encode the query: %s", err);
        cJSON_AddStringToObject(qj, "type", "text");
        cJSON_AddStringToObject(qj, "text", q->text);
        cJSON_AddNumberToObject(qj, "tokens", n_ids);
        return MD_OK;
    }
    if (q->image_path) {
        int S = md_clip_image_size(lib->clip);
        float *px = malloc((size_t)3 * S * S * sizeof *px);
        if (!px)
            return md_fail(e, MD_ERR_NOMEM, "out of memory");
        /* Decoding a picture can take hundreds of MB however small the upload: a few at a time. */
        if (!picture_slot_take(lib)) {
            free(px);
            return md_fail(e, MD_ERR_UNAVAILABLE, "too many picture queries at once (%d decode at a time); try again",
                           MD_PICTURE_DECODES_MAX);
        }
        if (lib->p.decode_in_process) {
            s = md_video_load_image(q->image_path, S, lib->p.mean, lib->p.std, px, err, sizeof err);
        } else {
            md_video_sandbox sb = md_video_sandbox_default();
            sb.watchdog_s = 10; /* a picture has no progress ticks: this bounds the whole decode */
            if (lib->p.decode_mem_limit)
                sb.mem_limit_bytes = lib->p.decode_mem_limit > 0 ? lib->p.decode_mem_limit : 0; /* < 0: none */
            s = md_video_iso_load_image(&sb, q->image_path, S, lib->p.mean, lib->p.std, px, err, sizeof err);
        }
        picture_slot_give(lib);
        if (s == MD_OK)
            s = md_clip_embed_images(lib->clip, px, 1, emb, NULL, err, sizeof err);
        free(px);
        if (s != MD_OK)
            return md_fail(e, s == MD_ERR_NOT_FOUND ? MD_ERR_MEDIA : s, "cannot use the uploaded picture: %s", err);
        cJSON_AddStringToObject(qj, "type", "image");
        return MD_OK;
    }
    if (!video_exists(lib, q->video_id))
        return md_fail(e, MD_ERR_NOT_FOUND, "no video with id %lld", q->video_id);
    long long t_ms = (long long)llround(q->t_s * 1000.0), a, b;
    if (md_index_lookup(lib->index, q->video_id, t_ms, emb, &a, &b) != MD_OK)
        return md_fail(e, MD_ERR_NOT_FOUND, "video %lld has no indexed segment at t=%.3f s (not indexed yet, or past its end)",
                       q->video_id, q->t_s);
    cJSON_AddStringToObject(qj, "type", "example");
    cJSON_AddNumberToObject(qj, "video_id", (double)q->video_id);
    cJSON_AddNumberToObject(qj, "t", q->t_s);
    cJSON_AddNumberToObject(qj, "segment_start", a / 1000.0);
    cJSON_AddNumberToObject(qj, "segment_end", b / 1000.0);
    return MD_OK;
}

/* Adds "video_name" to each moment (null for a video deleted meanwhile). */
static void add_names(md_library *lib, cJSON *moments)
{
    md_video_rec *v = malloc(sizeof *v);
    cJSON *m;
    pthread_mutex_lock(&lib->db_mu);
    cJSON_ArrayForEach(m, moments)
    {
        long long id = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(m, "video_id"));
        if (v && md_store_video_get(lib->db, id, v) == MD_OK)
            cJSON_AddStringToObject(m, "video_name", v->name);
        else
            cJSON_AddNullToObject(m, "video_name");
    }
    pthread_mutex_unlock(&lib->db_mu);
    free(v);
}

md_status md_library_search(md_library *lib, const md_search_query *q, cJSON **out, md_errbuf *e)
{
    md_status s;
    cJSON *res = NULL;
    float *emb = NULL;
    *out = NULL;
    if (!lib->clip)
        return md_fail(e, MD_ERR_UNAVAILABLE, "no model is loaded");
    if ((s = md_search_query_check(q, e)) != MD_OK)
        return s;
    double t0 = md_mono_s();
    int dim = md_clip_dim(lib->clip);
    if (!(emb = malloc((size_t)dim * sizeof *emb)) || !(res = cJSON_CreateObject())) {
        s = md_fail(e, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    cJSON *qj = cJSON_AddObjectToObject(res, "query");
    if ((s = embed_query(lib, q, emb, qj, e)) != MD_OK)
        goto out;
    double t1 = md_mono_s();
    md_search_params sp = md_search_default_params();
    sp.k = q->k;
    sp.offset = q->offset;
    sp.min_score = (float)q->min_score;
    sp.videos = q->videos;
    sp.n_videos = q->n_videos;
    md_search_result r;
    if ((s = md_index_search(lib->index, emb, &sp, &r)) != MD_OK) {
        md_fail(e, s, "search failed: %s", md_status_str(s));
        goto out;
    }
    double t2 = md_mono_s();
    cJSON_AddItemToObject(res, "model", model_brief(lib));
    cJSON_AddNumberToObject(res, "took_ms", round3((t2 - t0) * 1000));
    cJSON_AddNumberToObject(res, "took_ms_encode", round3((t1 - t0) * 1000));
    cJSON_AddNumberToObject(res, "segments_scored", (double)r.scored);
    cJSON_AddBoolToObject(res, "confident", r.confident);
    if (!r.confident)
        cJSON_AddStringToObject(res, "message", r.scored ? "no confident match: nothing stands out from the rest of the "
                                                           "library; the moments below are the closest anyway"
                                                         : "nothing is indexed yet");
    cJSON_AddNumberToObject(res, "z_needed", round3(r.z_needed));
    cJSON_AddNumberToObject(res, "total", r.total);
    cJSON_AddNumberToObject(res, "offset", q->offset);
    cJSON *arr = cJSON_AddArrayToObject(res, "moments");
    for (int i = 0; i < r.n; i++) {
        md_moment *m = &r.moments[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "video_id", (double)m->video_id);
        cJSON_AddNumberToObject(o, "start", m->start_ms / 1000.0);
        cJSON_AddNumberToObject(o, "end", m->end_ms / 1000.0);
        cJSON_AddNumberToObject(o, "score", round3(m->score * 1.0));
        cJSON_AddNumberToObject(o, "z", round3(m->z));
        cJSON *segs = cJSON_AddArrayToObject(o, "segments");
        for (int j = 0; j < m->n_segs; j++) {
            md_segment_hit *h = &r.segs[m->seg0 + j];
            cJSON *so = cJSON_CreateObject();
            cJSON_AddNumberToObject(so, "seq", h->seq);
            cJSON_AddNumberToObject(so, "start", h->start_ms / 1000.0);
            cJSON_AddNumberToObject(so, "end", h->end_ms / 1000.0);
            cJSON_AddNumberToObject(so, "score", round3(h->score));
            cJSON_AddItemToArray(segs, so);
        }
        cJSON_AddItemToArray(arr, o);
    }
    md_search_result_free(&r);
    add_names(lib, arr);
    *out = res;
    res = NULL;
out:
    free(emb);
    cJSON_Delete(res);
    return s;
}

md_status md_library_ground(md_library *lib, long long video_id, const char *text, int top_n, int with_curve,
                            cJSON **out, md_errbuf *e)
{
    md_status s;
    cJSON *res = NULL;
    float *emb = NULL;
    char err[512];
    *out = NULL;
    if (!lib->clip)
        return md_fail(e, MD_ERR_UNAVAILABLE, "no model is loaded");
    if ((s = md_ground_check(text, top_n, e)) != MD_OK)
        return s;
    if (!video_exists(lib, video_id))
        return md_fail(e, MD_ERR_NOT_FOUND, "no video with id %lld", video_id);
    double t0 = md_mono_s();
    int dim = md_clip_dim(lib->clip), n_ids = 0;
    int ids[MD_CLIP_MAX_TOKENS];
    if (!(emb = malloc((size_t)dim * sizeof *emb)) || !(res = cJSON_CreateObject())) {
        s = md_fail(e, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((s = md_clip_embed_text(lib->clip, text, emb, ids, &n_ids, err, sizeof err)) != MD_OK) {
        md_fail(e, s, "cannot encode the query: %s", err);
        goto out;
    }
    md_ground_params gp = md_ground_default_params();
    gp.top_n = top_n;
    gp.with_curve = with_curve;
    md_ground_result g;
    if ((s = md_index_ground(lib->index, video_id, emb, &gp, &g)) != MD_OK) {
        if (s == MD_ERR_NOT_FOUND)
            md_fail(e, MD_ERR_CONFLICT, "video %lld has no indexed segments yet (is its job done?)", video_id);
        else
            md_fail(e, s, "grounding failed: %s", md_status_str(s));
        s = s == MD_ERR_NOT_FOUND ? MD_ERR_CONFLICT : s;
        goto out;
    }
    cJSON_AddNumberToObject(res, "video_id", (double)video_id);
    cJSON *qj = cJSON_AddObjectToObject(res, "query");
    cJSON_AddStringToObject(qj, "text", text);
    cJSON_AddNumberToObject(qj, "tokens", n_ids);
    cJSON_AddItemToObject(res, "model", model_brief(lib));
    cJSON_AddNumberToObject(res, "took_ms", round3((md_mono_s() - t0) * 1000));
    cJSON_AddNumberToObject(res, "segments", g.n_segments);
    cJSON_AddNumberToObject(res, "precision_s", g.precision_ms / 1000.0);
    cJSON_AddNumberToObject(res, "threshold", round3(g.threshold));
    cJSON_AddBoolToObject(res, "confident", g.confident);
    if (!g.confident)
        cJSON_AddStringToObject(res, "message", "no confident match: no part of this video stands out for this query; "
                                                "the moments below are the closest anyway");
    cJSON *arr = cJSON_AddArrayToObject(res, "moments");
    for (int i = 0; i < g.n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "start", g.moments[i].start_ms / 1000.0);
        cJSON_AddNumberToObject(o, "end", g.moments[i].end_ms / 1000.0);
        cJSON_AddNumberToObject(o, "score", round3(g.moments[i].score));
        cJSON_AddNumberToObject(o, "z", round3(g.moments[i].z));
        cJSON_AddItemToArray(arr, o);
    }
    if (with_curve && g.raw) {
        cJSON *c = cJSON_AddArrayToObject(res, "curve");
        for (int i = 0; i < g.n_segments; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "start", g.start_ms[i] / 1000.0);
            cJSON_AddNumberToObject(o, "end", g.end_ms[i] / 1000.0);
            cJSON_AddNumberToObject(o, "raw", round3(g.raw[i]));
            cJSON_AddNumberToObject(o, "smooth", round3(g.smooth[i]));
            cJSON_AddItemToArray(c, o);
        }
    }
    md_ground_result_free(&g);
    *out = res;
    res = NULL;
out:
    free(emb);
    cJSON_Delete(res);
    return s;
}
