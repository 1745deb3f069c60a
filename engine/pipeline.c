/* pipeline.c - frames -> CLIP tokens -> temporal encoder -> segments ->
 * SQLite + index (see pipeline.h).
 *
 * Every sampled frame goes through the CLIP image tower, which returns all of
 * its projected tokens (CLS + patches); the temporal stream (temporal.h)
 * arranges them STORM-style, runs the Mamba encoder window by window and
 * reduces each window to one embedding per segment of k frames. Whenever a
 * window's segments come out they are stored with the stream's checkpoint and
 * the job's progress in one transaction, and added to the search index.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../base/log.h"
#include "../base/half.h"

#define EMBED_CHUNK 16 /* frames per CLIP call: bounds the token buffer */

struct md_pipeline {
    md_library *lib;
    md_store *db;
    long long video_id, job_id, total;
    int dim, S, tpf;
    long long resume; /* first frame not committed by an earlier run */
    long long pushed; /* frames handed to the stream by this run, counting from resume */
    long long embedded;
    md_temporal_stream *ts;
    md_segments out;
    float *tokens, *img; /* EMBED_CHUNK x tpf x dim, EMBED_CHUNK x dim */
    int64_t *pts;
    uint8_t *blob;
};

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

static md_status exec_bind2(md_store *db, const char *sql, long long a, long long b)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, a);
        sqlite3_bind_int64(st, 2, b);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? MD_OK : md_store_status(rc);
}

/* Restores the stream from the job's checkpoint when it matches what is
 * stored; otherwise clears this video's segments of this model and starts at
 * frame 0. Either way stored segments and stream state agree afterwards. */
static md_status restore(md_pipeline *p, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    md_status s = MD_OK;
    long long stored = 0;
    int restored = 0;
    int rc = sqlite3_prepare_v2(p->db->db,
                                "SELECT j.checkpoint, (SELECT count(*) FROM segments WHERE video_id = j.video_id "
                                "AND model_id = ?) FROM jobs j WHERE j.id = ?",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, p->lib->model_id);
        sqlite3_bind_int64(st, 2, p->job_id);
        if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            stored = sqlite3_column_int64(st, 1);
            const void *blob = sqlite3_column_blob(st, 0);
            int len = sqlite3_column_bytes(st, 0);
            char rerr[256];
            if (blob && len > 0 &&
                md_temporal_stream_restore(p->ts, blob, (size_t)len, rerr, sizeof rerr) == MD_OK &&
                md_temporal_stream_segments(p->ts) == stored)
                restored = 1;
            else if (blob && len > 0)
                md_warn("job %lld: checkpoint not usable (%s); indexing from the start", p->job_id,
                        md_temporal_stream_error(p->ts));
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) {
        snprintf(err, errlen, "cannot read the job's checkpoint: %s", sqlite3_errmsg(p->db->db));
        return md_store_status(rc);
    }
    if (restored) {
        p->resume = md_temporal_stream_next_frame(p->ts);
        md_info("job %lld: resuming after %lld committed segments (%lld frames)", p->job_id, stored, p->resume);
        return MD_OK;
    }
    if (stored) {
        /* Segments without a usable checkpoint (another job's, or an older run): start over cleanly. */
        pthread_mutex_lock(&p->lib->db_mu);
        s = exec_bind2(p->db, "DELETE FROM segments WHERE video_id = ? AND model_id = ?", p->video_id,
                       p->lib->model_id);
        if (s == MD_OK)
            md_index_remove_video(p->lib->index, p->video_id);
        pthread_mutex_unlock(&p->lib->db_mu);
        if (s != MD_OK)
            snprintf(err, errlen, "cannot clear old segments: %s", sqlite3_errmsg(p->db->db));
    }
    p->resume = 0;
    return s;
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
    p->dim = md_clip_dim(lib->clip);
    p->S = md_clip_image_size(lib->clip);
    p->tpf = 1 + md_clip_n_patches(lib->clip);
    md_temporal_params tp;
    md_temporal_params_default(&tp, p->tpf);
    tp.segment_frames = lib->p.segment_frames;
    tp.window_frames = lib->p.window_frames;
    tp.frame_interval_ms = (int64_t)llround(sample_interval_ms > 0 ? sample_interval_ms : 1000.0);
    if ((s = md_temporal_stream_new(lib->temporal, &tp, &p->ts, err, errlen)) != MD_OK)
        goto out;
    p->tokens = malloc((size_t)EMBED_CHUNK * p->tpf * p->dim * sizeof *p->tokens);
    p->img = malloc((size_t)EMBED_CHUNK * p->dim * sizeof *p->img);
    p->pts = malloc(EMBED_CHUNK * sizeof *p->pts);
    p->blob = malloc((size_t)p->dim * 2);
    if (!p->tokens || !p->img || !p->pts || !p->blob) {
        s = MD_ERR_NOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if ((s = restore(p, err, errlen)) != MD_OK)
        goto out;
    /* Progress in frames from the start, so clients see the total at once. */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           "UPDATE jobs SET progress_done = ?, progress_total = ?, progress_unit = 'frames', "
                           "updated_at = ? WHERE id = ? AND state = 'running'",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, p->resume);
        sqlite3_bind_int64(st, 2, total_frames > p->resume ? total_frames : p->resume);
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
long long md_pipeline_segments(const md_pipeline *p) { return md_temporal_stream_segments(p->ts); }
long long md_pipeline_frames_embedded(const md_pipeline *p) { return p->embedded; }
long long md_pipeline_frames(const md_pipeline *p) { return md_temporal_stream_frames_pushed(p->ts); }

/* Stores the segments the stream emitted, its checkpoint and the job's
 * progress in one transaction, then adds the segments to the index. Holding
 * the library mutex orders this against a deletion of the video, so a deleted
 * video never reappears in the index. */
static md_status commit_segments(md_pipeline *p, char *err, size_t errlen)
{
    md_library *lib = p->lib;
    md_status s = MD_OK;
    sqlite3_stmt *ins = NULL, *prog = NULL;
    void *ckpt = NULL;
    size_t ckpt_len = 0;
    if (p->out.n == 0)
        return MD_OK;
    if ((s = md_temporal_stream_save(p->ts, &ckpt, &ckpt_len)) != MD_OK) {
        snprintf(err, errlen, "cannot checkpoint the temporal stream");
        return s;
    }
    /* Halves, as stored: the index gets the same bits, so it equals what a restart loads. */
    uint16_t *half = malloc((size_t)p->out.n * p->dim * sizeof *half);
    if (!half) {
        free(ckpt);
        snprintf(err, errlen, "out of memory");
        return MD_ERR_NOMEM;
    }
    for (size_t i = 0; i < (size_t)p->out.n * p->dim; i++)
        half[i] = md_f32_to_f16(p->out.emb[i]);
    pthread_mutex_lock(&lib->db_mu);
    if ((s = md_store_begin(p->db)) != MD_OK) {
        snprintf(err, errlen, "database busy: %s", sqlite3_errmsg(p->db->db));
        goto unlock;
    }
    int rc = sqlite3_prepare_v2(p->db->db,
                                "UPDATE jobs SET progress_done = ?, progress_total = max(progress_total, ?), "
                                "progress_unit = 'frames', checkpoint = ?, updated_at = ? "
                                "WHERE id = ? AND state = 'running'",
                                -1, &prog, NULL);
    if (rc == SQLITE_OK) {
        long long done = md_temporal_stream_next_frame(p->ts);
        sqlite3_bind_int64(prog, 1, done);
        sqlite3_bind_int64(prog, 2, done);
        sqlite3_bind_blob(prog, 3, ckpt, (int)ckpt_len, SQLITE_STATIC);
        sqlite3_bind_int64(prog, 4, md_now_ms());
        sqlite3_bind_int64(prog, 5, p->job_id);
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
                            "INSERT INTO segments (video_id, model_id, seq, start_ms, end_ms, embedding) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            -1, &ins, NULL);
    for (int j = 0; rc == SQLITE_OK && j < p->out.n; j++) {
        const uint16_t *v = half + (size_t)j * p->dim;
        for (int d = 0; d < p->dim; d++) { /* little-endian, whatever the host */
            p->blob[2 * d] = (uint8_t)(v[d] & 0xff);
            p->blob[2 * d + 1] = (uint8_t)(v[d] >> 8);
        }
        sqlite3_reset(ins);
        sqlite3_bind_int64(ins, 1, p->video_id);
        sqlite3_bind_int64(ins, 2, lib->model_id);
        sqlite3_bind_int64(ins, 3, p->out.seg[j].index);
        sqlite3_bind_int64(ins, 4, p->out.seg[j].start_ms);
        sqlite3_bind_int64(ins, 5, p->out.seg[j].end_ms);
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
    for (int j = 0; j < p->out.n; j++)
        md_index_add_f16(lib->index, p->video_id, (int)p->out.seg[j].index, p->out.seg[j].start_ms,
                         p->out.seg[j].end_ms, half + (size_t)j * p->dim);
    md_segments_clear(&p->out);
    goto unlock;
rollback:
    md_store_rollback(p->db);
unlock:
    pthread_mutex_unlock(&lib->db_mu);
    sqlite3_finalize(ins);
    sqlite3_finalize(prog);
    free(ckpt);
    free(half);
    return s;
}

md_status md_pipeline_push(md_pipeline *p, const md_video_batch *b, char *err, size_t errlen)
{
    md_status s;
    if (b->size != p->S) {
        snprintf(err, errlen, "frames are %dx%d, the model wants %dx%d", b->size, b->size, p->S, p->S);
        return MD_ERR_INTERNAL;
    }
    int i0 = 0;
    while (i0 < b->n && b->first_index + i0 < p->resume)
        i0++; /* committed by an earlier run */
    size_t frame = (size_t)3 * p->S * p->S;
    while (i0 < b->n) {
        int take = b->n - i0 < EMBED_CHUNK ? b->n - i0 : EMBED_CHUNK;
        if ((s = md_clip_embed_images(p->lib->clip, b->pixels + (size_t)i0 * frame, take, p->img, p->tokens, err,
                                      errlen)) != MD_OK)
            return s;
        for (int i = 0; i < take; i++)
            p->pts[i] = b->frames[i0 + i].target_ms;
        s = md_temporal_stream_push(p->ts, b->first_index + i0, p->tokens, p->pts, take, &p->out);
        if (s != MD_OK) {
            snprintf(err, errlen, "temporal encoder: %s", md_temporal_stream_error(p->ts));
            return s;
        }
        p->embedded += take;
        i0 += take;
        if (p->out.n) {
            if ((s = commit_segments(p, err, errlen)) != MD_OK)
                return s;
            debug_pause(p);
        }
    }
    return MD_OK;
}

md_status md_pipeline_finish(md_pipeline *p, long long end_ms, char *err, size_t errlen)
{
    (void)end_ms; /* the stream ends the last segment one sample interval after its last frame */
    md_status s = md_temporal_stream_finish(p->ts, &p->out);
    if (s != MD_OK) {
        snprintf(err, errlen, "temporal encoder: %s", md_temporal_stream_error(p->ts));
        return s;
    }
    return commit_segments(p, err, errlen);
}

void md_pipeline_free(md_pipeline *p)
{
    if (!p)
        return;
    md_temporal_stream_free(p->ts);
    md_segments_free(&p->out);
    free(p->tokens);
    free(p->img);
    free(p->pts);
    free(p->blob);
    free(p);
}
