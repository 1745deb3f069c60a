/* pipeline.c - frames -> CLIP tokens -> temporal encoder -> segments -> the sink (see
 * pipeline.h).
 *
 * Every sampled frame goes through the CLIP image tower, which returns all of its projected
 * tokens (CLS + patches); the temporal stream (temporal.h) arranges them STORM-style, runs the
 * Mamba encoder window by window and reduces each window to one embedding per segment of k
 * frames. Whenever a window's segments come out they go to the sink as IEEE halves (what is
 * stored and what the index keeps), with the stream's checkpoint.
 */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../base/half.h"
#include "../base/log.h"

#define EMBED_CHUNK 16 /* frames per CLIP call: bounds the token buffer */

struct md_pipeline {
    md_pipeline_params pp;
    int dim, S, tpf;
    long long resume; /* first frame not committed by an earlier run */
    long long embedded;
    double embed_s, temporal_s; /* time in the CLIP tower and in the temporal stream */
    md_temporal_stream *ts;
    md_segments out;
    float *tokens, *img; /* EMBED_CHUNK x tpf x dim, EMBED_CHUNK x dim */
    int64_t *pts;
};

/* Restores the stream from the job's checkpoint when it matches what is stored; otherwise has
 * the sink clear this video's segments and starts at frame 0. Either way stored segments and
 * stream state agree afterwards. */
static md_status restore(md_pipeline *p, char *err, size_t errlen)
{
    const md_pipeline_sink *k = &p->pp.sink;
    void *blob = NULL;
    size_t len = 0;
    long long stored = 0;
    int restored = 0;
    md_status s = k->resume(k->ctx, &blob, &len, &stored, err, errlen);
    if (s != MD_OK)
        return s;
    if (blob) {
        char rerr[256];
        if (md_temporal_stream_restore(p->ts, blob, len, rerr, sizeof rerr) == MD_OK &&
            md_temporal_stream_segments(p->ts) == stored)
            restored = 1;
        else
            md_warn("job %lld: checkpoint not usable (%s); indexing from the start", p->pp.job_id,
                    md_temporal_stream_error(p->ts));
    }
    free(blob);
    if (restored) {
        p->resume = md_temporal_stream_next_frame(p->ts);
        md_info("job %lld: resuming after %lld committed segments (%lld frames)", p->pp.job_id, stored, p->resume);
        return MD_OK;
    }
    p->resume = 0;
    /* Segments without a usable checkpoint (another job's, or an older run): start over cleanly.
     * A stream whose restore failed half-way is rebuilt so that it starts from nothing. */
    if (stored && (s = k->clear(k->ctx, err, errlen)) != MD_OK)
        return s;
    if (blob || stored) {
        md_temporal_stream_free(p->ts);
        p->ts = NULL;
        md_temporal_params tp;
        md_temporal_params_default(&tp, p->tpf);
        tp.segment_frames = p->pp.segment_frames;
        tp.window_frames = p->pp.window_frames;
        tp.frame_interval_ms = (int64_t)llround(p->pp.sample_interval_ms > 0 ? p->pp.sample_interval_ms : 1000.0);
        return md_temporal_stream_new(p->pp.temporal, &tp, &p->ts, err, errlen);
    }
    return MD_OK;
}

md_status md_pipeline_begin(const md_pipeline_params *pp, md_pipeline **out, char *err, size_t errlen)
{
    md_status s = MD_OK;
    *out = NULL;
    md_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    p->pp = *pp;
    p->dim = md_clip_dim(pp->clip);
    p->S = md_clip_image_size(pp->clip);
    p->tpf = 1 + md_clip_n_patches(pp->clip);
    md_temporal_params tp;
    md_temporal_params_default(&tp, p->tpf);
    tp.segment_frames = pp->segment_frames;
    tp.window_frames = pp->window_frames;
    tp.frame_interval_ms = (int64_t)llround(pp->sample_interval_ms > 0 ? pp->sample_interval_ms : 1000.0);
    if ((s = md_temporal_stream_new(pp->temporal, &tp, &p->ts, err, errlen)) != MD_OK)
        goto out;
    p->tokens = malloc((size_t)EMBED_CHUNK * p->tpf * p->dim * sizeof *p->tokens);
    p->img = malloc((size_t)EMBED_CHUNK * p->dim * sizeof *p->img);
    p->pts = malloc(EMBED_CHUNK * sizeof *p->pts);
    if (!p->tokens || !p->img || !p->pts) {
        s = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((s = restore(p, err, errlen)) != MD_OK)
        goto out;
    /* Progress in frames from the start, so clients see the total at once. */
    if (pp->sink.started)
        pp->sink.started(pp->sink.ctx, p->resume, pp->total_frames > p->resume ? pp->total_frames : p->resume);
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
void md_pipeline_times(const md_pipeline *p, double *embed_s, double *temporal_s)
{
    *embed_s = p->embed_s;
    *temporal_s = p->temporal_s;
}

/* Hands the segments the stream emitted, as halves, to the sink with the stream's checkpoint. */
static md_status commit_segments(md_pipeline *p, char *err, size_t errlen)
{
    md_status s = MD_OK;
    void *ckpt = NULL;
    size_t ckpt_len = 0;
    uint16_t *half = NULL;
    md_segment_rec *segs = NULL;
    if (p->out.n == 0)
        return MD_OK;
    if ((s = md_temporal_stream_save(p->ts, &ckpt, &ckpt_len)) != MD_OK)
        return md_errf(err, errlen, s, "cannot checkpoint the temporal stream");
    half = malloc((size_t)p->out.n * p->dim * sizeof *half);
    segs = malloc((size_t)p->out.n * sizeof *segs);
    if (!half || !segs) {
        s = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < (size_t)p->out.n * p->dim; i++)
        half[i] = md_f32_to_f16(p->out.emb[i]);
    for (int j = 0; j < p->out.n; j++)
        segs[j] = (md_segment_rec){.seq = (int)p->out.seg[j].index,
                                   .start_ms = p->out.seg[j].start_ms,
                                   .end_ms = p->out.seg[j].end_ms,
                                   .emb = half + (size_t)j * p->dim};
    s = p->pp.sink.commit(p->pp.sink.ctx, segs, p->out.n, p->dim, md_temporal_stream_next_frame(p->ts), ckpt,
                          ckpt_len, err, errlen);
    if (s == MD_OK)
        md_segments_clear(&p->out);
out:
    free(segs);
    free(half);
    free(ckpt);
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
        double t0 = md_mono_s();
        s = md_clip_embed_images(p->pp.clip, b->pixels + (size_t)i0 * frame, take, p->img, p->tokens, err, errlen);
        double t1 = md_mono_s();
        p->embed_s += t1 - t0;
        if (s != MD_OK)
            return s;
        for (int i = 0; i < take; i++)
            p->pts[i] = b->frames[i0 + i].target_ms;
        s = md_temporal_stream_push(p->ts, b->first_index + i0, p->tokens, p->pts, take, &p->out);
        p->temporal_s += md_mono_s() - t1;
        if (s != MD_OK) {
            snprintf(err, errlen, "temporal encoder: %s", md_temporal_stream_error(p->ts));
            return s;
        }
        p->embedded += take;
        i0 += take;
        if (p->out.n && (s = commit_segments(p, err, errlen)) != MD_OK)
            return s;
    }
    return MD_OK;
}

/* The stream ends the last segment one sample interval after its last frame. */
md_status md_pipeline_finish(md_pipeline *p, char *err, size_t errlen)
{
    double t0 = md_mono_s();
    md_status s = md_temporal_stream_finish(p->ts, &p->out);
    p->temporal_s += md_mono_s() - t0;
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
    free(p);
}
