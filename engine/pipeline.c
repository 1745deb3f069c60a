/* pipeline.c - frames -> CLIP -> segments -> SQLite + index (see pipeline.h).
 *
 * A segment is k consecutive samples. Its embedding is what the temporal
 * encoder makes of the window's tokens; with the untrained (identity) encoder
 * that is exactly the L2-normalised mean of its frames' CLIP image embeddings,
 * which is what this file computes until trained temporal weights are given.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "safetensors.h"

#define WINDOW_SEGMENTS 8

struct md_pipeline {
    md_library *lib;
    md_store *db;
    long long video_id, job_id, total;
    int k, W, dim, S;
    double interval_ms;
    long long resume;       /* first sample index not committed by an earlier run */
    long long window_first; /* sample index of buf[0] */
    int n;                  /* frames in the window buffer */
    float *emb;             /* W x dim frame embeddings */
    long long *ts;          /* W sampling times */
    long long segs, embedded;
    uint8_t *blob;          /* dim x 2 bytes */
    float *seg;             /* dim */
};

/* Segments already stored for this video and model: the resume point. */
static md_status committed_segments(md_pipeline *p, long long *n, long long *last_end)
{
    sqlite3_stmt *st = NULL;
    *n = 0;
    *last_end = 0;
    int rc = sqlite3_prepare_v2(p->db->db,
                                "SELECT count(*), coalesce(max(seq), -1), coalesce(max(end_ms), 0) FROM segments "
                                "WHERE video_id = ? AND model_id = ?",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, p->video_id);
        sqlite3_bind_int64(st, 2, p->lib->model_id);
        if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            long long cnt = sqlite3_column_int64(st, 0), maxseq = sqlite3_column_int64(st, 1);
            *n = cnt == maxseq + 1 ? cnt : 0; /* a gap means something odd: start over */
            *last_end = sqlite3_column_int64(st, 2);
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? MD_OK : md_store_status(rc);
}

md_status md_pipeline_begin(md_library *lib, md_store *db, long long video_id, long long job_id,
                            long long total_frames, double sample_interval_ms, md_pipeline **out, char *err,
                            size_t errlen)
{
    md_status s = MD_OK;
    *out = NULL;
    md_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return MD_ERR_NOMEM;
    p->lib = lib;
    p->db = db;
    p->video_id = video_id;
    p->job_id = job_id;
    p->total = total_frames;
    p->k = lib->p.segment_frames > 0 ? lib->p.segment_frames : 4;
    p->W = p->k * WINDOW_SEGMENTS;
    p->dim = md_clip_dim(lib->clip);
    p->S = md_clip_image_size(lib->clip);
    p->interval_ms = sample_interval_ms > 0 ? sample_interval_ms : 1000.0;
    p->emb = malloc((size_t)p->W * p->dim * sizeof *p->emb);
    p->ts = malloc((size_t)p->W * sizeof *p->ts);
    p->blob = malloc((size_t)p->dim * 2);
    p->seg = malloc((size_t)p->dim * sizeof *p->seg);
    if (!p->emb || !p->ts || !p->blob || !p->seg) {
        s = MD_ERR_NOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    long long done, last_end;
    if ((s = committed_segments(p, &done, &last_end)) != MD_OK) {
        snprintf(err, errlen, "cannot read committed segments: %s", sqlite3_errmsg(db->db));
        goto out;
    }
    /* Only whole windows are committed before the end, so the resume point is
     * a window boundary; a finished video (partial last window) has nothing
     * left, which the caller sees as resume >= total. */
    p->segs = done;
    p->resume = done * p->k;
    p->window_first = p->resume;
    if (done)
        md_info("job %lld: resuming after %lld committed segments (%lld frames)", job_id, done, p->resume);
    /* Progress in frames from the start, so clients see the total at once. */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           "UPDATE jobs SET progress_done = ?, progress_total = ?, progress_unit = 'frames', "
                           "updated_at = ? WHERE id = ? AND state = 'running'",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, p->resume < total_frames ? p->resume : 0);
        sqlite3_bind_int64(st, 2, total_frames > 0 ? total_frames : 0);
        sqlite3_bind_int64(st, 3, md_now_ms());
        sqlite3_bind_int64(st, 4, job_id);
        sqlite3_step(st);
    }
    sqlite3_finalize(st);
    *out = p;
    return MD_OK;
out:
    md_pipeline_free(p);
    return s;
}

long long md_pipeline_resume_frame(const md_pipeline *p) { return p->resume; }
long long md_pipeline_segments(const md_pipeline *p) { return p->segs; }
long long md_pipeline_frames_embedded(const md_pipeline *p) { return p->embedded; }

/* Stores segments of the buffered frames (all of them when FINAL, else whole
 * windows only) with the job's progress, in one transaction; then adds them
 * to the index. The library mutex orders this against a deletion of the video
 * so a deleted video never reappears in the index. */
static md_status commit_window(md_pipeline *p, long long end_ms, char *err, size_t errlen)
{
    md_library *lib = p->lib;
    md_status s = MD_OK;
    sqlite3_stmt *ins = NULL, *prog = NULL;
    int nseg = (p->n + p->k - 1) / p->k;
    if (!nseg)
        return MD_OK;
    float *segv = malloc((size_t)nseg * p->dim * sizeof *segv);
    long long *t0 = malloc((size_t)nseg * sizeof *t0), *t1 = malloc((size_t)nseg * sizeof *t1);
    if (!segv || !t0 || !t1) {
        s = MD_ERR_NOMEM;
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int j = 0; j < nseg; j++) {
        int a = j * p->k, b = a + p->k < p->n ? a + p->k : p->n;
        float *v = segv + (size_t)j * p->dim;
        memset(v, 0, (size_t)p->dim * sizeof *v);
        for (int f = a; f < b; f++)
            for (int d = 0; d < p->dim; d++)
                v[d] += p->emb[(size_t)f * p->dim + d];
        double norm = 0;
        for (int d = 0; d < p->dim; d++)
            norm += (double)v[d] * v[d];
        float inv = norm > 0 ? (float)(1.0 / sqrt(norm)) : 0;
        for (int d = 0; d < p->dim; d++)
            v[d] *= inv;
        t0[j] = p->ts[a];
        /* Sampling times are a grid: a segment ends where the next one starts. */
        long long next = (long long)llround((double)p->ts[b - 1] + p->interval_ms);
        t1[j] = b < p->n ? p->ts[b] : (end_ms > 0 && end_ms < next && end_ms > t0[j] ? end_ms : next);
    }

    pthread_mutex_lock(&lib->db_mu);
    if ((s = md_store_begin(p->db)) != MD_OK) {
        snprintf(err, errlen, "database busy: %s", sqlite3_errmsg(p->db->db));
        goto unlock;
    }
    int rc = sqlite3_prepare_v2(p->db->db,
                                "UPDATE jobs SET progress_done = ?, progress_total = ?, progress_unit = 'frames', "
                                "updated_at = ? WHERE id = ? AND state = 'running'",
                                -1, &prog, NULL);
    if (rc == SQLITE_OK) {
        long long done = p->window_first + p->n;
        sqlite3_bind_int64(prog, 1, done);
        sqlite3_bind_int64(prog, 2, p->total > done ? p->total : done);
        sqlite3_bind_int64(prog, 3, md_now_ms());
        sqlite3_bind_int64(prog, 4, p->job_id);
        rc = sqlite3_step(prog);
    }
    if (rc != SQLITE_DONE) {
        s = md_store_status(rc);
        snprintf(err, errlen, "cannot record progress: %s", sqlite3_errmsg(p->db->db));
        goto rollback;
    }
    if (sqlite3_changes(p->db->db) == 0) {
        s = MD_ERR_CANCELLED; /* the job is gone: its video was deleted */
        snprintf(err, errlen, "job no longer exists");
        goto rollback;
    }
    rc = sqlite3_prepare_v2(p->db->db,
                            "INSERT OR REPLACE INTO segments (video_id, model_id, seq, start_ms, end_ms, embedding) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            -1, &ins, NULL);
    for (int j = 0; rc == SQLITE_OK && j < nseg; j++) {
        const float *v = segv + (size_t)j * p->dim;
        for (int d = 0; d < p->dim; d++) {
            uint16_t h = md_f32_to_f16(v[d]);
            p->blob[2 * d] = (uint8_t)(h & 0xff);
            p->blob[2 * d + 1] = (uint8_t)(h >> 8);
        }
        sqlite3_reset(ins);
        sqlite3_bind_int64(ins, 1, p->video_id);
        sqlite3_bind_int64(ins, 2, lib->model_id);
        sqlite3_bind_int64(ins, 3, p->window_first / p->k + j);
        sqlite3_bind_int64(ins, 4, t0[j]);
        sqlite3_bind_int64(ins, 5, t1[j]);
        sqlite3_bind_blob(ins, 6, p->blob, p->dim * 2, SQLITE_STATIC);
        rc = sqlite3_step(ins);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    if (rc != SQLITE_OK) {
        s = md_store_status(rc);
        snprintf(err, errlen, "cannot store segments: %s", sqlite3_errmsg(p->db->db));
        goto rollback;
    }
    if ((s = md_store_commit(p->db)) != MD_OK) {
        snprintf(err, errlen, "cannot commit segments: %s", sqlite3_errmsg(p->db->db));
        goto rollback;
    }
    /* Searchable at once: the stored fp16 values, so the index equals what a restart loads. */
    for (int j = 0; j < nseg; j++) {
        float *v = segv + (size_t)j * p->dim;
        for (int d = 0; d < p->dim; d++)
            v[d] = md_f16_to_f32(md_f32_to_f16(v[d]));
        md_index_add(lib->index, p->video_id, (int)(p->window_first / p->k + j), t0[j], t1[j], v);
    }
    p->segs += nseg;
    p->window_first += p->n;
    p->n = 0;
    goto unlock;
rollback:
    md_store_rollback(p->db);
unlock:
    pthread_mutex_unlock(&lib->db_mu);
done:
    sqlite3_finalize(ins);
    sqlite3_finalize(prog);
    free(segv);
    free(t0);
    free(t1);
    return s;
}

/* Test hook (setting debug_job_delay_ms): a pause after each committed window,
 * so tests can stop the daemon between windows. */
static void debug_pause(md_pipeline *p)
{
    for (int waited = 0; waited < p->lib->p.debug_job_delay_ms; waited += 20) {
        pthread_mutex_lock(&p->lib->q_mu);
        int stop = p->lib->stopping;
        pthread_mutex_unlock(&p->lib->q_mu);
        if (stop)
            return;
        usleep(20000);
    }
}

md_status md_pipeline_push(md_pipeline *p, const md_video_batch *b, char *err, size_t errlen)
{
    if (b->size != p->S) {
        snprintf(err, errlen, "frames are %dx%d, the model wants %dx%d", b->size, b->size, p->S, p->S);
        return MD_ERR_INTERNAL;
    }
    int i0 = 0;
    while (i0 < b->n && b->first_index + i0 < p->resume)
        i0++; /* committed by an earlier run */
    size_t frame = (size_t)3 * p->S * p->S;
    while (i0 < b->n) {
        int take = b->n - i0, room = p->W - p->n;
        if (take > room)
            take = room;
        md_status s = md_clip_embed_images(p->lib->clip, b->pixels + (size_t)i0 * frame, take,
                                           p->emb + (size_t)p->n * p->dim, NULL, err, errlen);
        if (s != MD_OK)
            return s;
        for (int i = 0; i < take; i++)
            p->ts[p->n + i] = b->frames[i0 + i].target_ms;
        p->n += take;
        p->embedded += take;
        i0 += take;
        if (p->n == p->W) {
            if ((s = commit_window(p, -1, err, errlen)) != MD_OK)
                return s;
            debug_pause(p);
        }
    }
    return MD_OK;
}

md_status md_pipeline_finish(md_pipeline *p, long long end_ms, char *err, size_t errlen)
{
    return commit_window(p, end_ms, err, errlen);
}

void md_pipeline_free(md_pipeline *p)
{
    if (!p)
        return;
    free(p->emb);
    free(p->ts);
    free(p->blob);
    free(p->seg);
    free(p);
}
