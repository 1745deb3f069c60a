/* decode.c - the streaming decoder (md_video_decoder_*) and md_video_load_image(): demux and decode
 * with libavformat/libavcodec, pick frames by presentation time, convert them to RGB with
 * libswscale and preprocess them into batches of CLIP-ready tensors (base/image.c).
 *
 * Pipeline, on two threads of the decoder's own (plus FFmpeg's frame threads), started by the
 * first md_video_decoder_next():
 *
 *   decoding thread: av_read_frame -> [keyframe mode: keep only the keyframes some target needs;
 *       exact mode: let the decoder drop non-reference frames no target can pick] -> send_packet,
 *       receive_frame -> time t (best-effort pts, made monotonic) -> sampler -> queue (4 frames)
 *   preprocessing thread: queue -> RGB (libswscale) -> tensor (base/image.c) -> batch buffer
 *   caller: md_video_decoder_next() takes a full batch buffer; there are two, so the threads
 *       decode the next batch while the caller encodes this one
 *
 * One mutex and condition variable guard the queue, the buffers and the first error; each thread
 * otherwise touches only its own state. close() sets `stop`, which every wait and FFmpeg's
 * interrupt callback check, and joins both threads.
 *
 * The sampler holds two frames: PREV, the frame shown now, and CUR, the one just decoded. Every
 * target before CUR's time gets PREV (the last frame at or before it); then CUR becomes PREV. At
 * the end PREV covers the targets up to its own end (time + duration). When CUR comes more than
 * MD_VIDEO_MAX_HOLD_MS after PREV, the distance is a gap: PREV covers only its own duration, the
 * targets in the gap are skipped in one step (first_target_from) and the gap is counted; so the
 * work is bounded by the frames decoded, whatever the timestamps claim. Frames are references
 * into the decoder's pool, so holding and queueing them copies nothing.
 *
 * Every loop polls the caller's interrupt: the sampler before each sample or skip, the reader
 * before each packet, our reads (probe.c) on every buffer fill; so a stop takes effect within
 * one packet's or one sample's work.
 *
 * Targets are computed in the stream's time base with exact rationals, rounded down, so "pts <=
 * target" is decided on integers the way ffprobe's pts values would decide it.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include "../base/log.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include <errno.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Decoding errors in a row without a frame after which the decoder is drained and stopped. */
#define MAX_DECODE_ERRORS 4096
/* Packet times remembered for skipping unpicked non-reference frames: more than any reorder
 * depth (H.264 allows 16). */
#define RECENT_PTS 32
/* Chosen frames waiting for preprocessing (references into the decoder's pool), and batch
 * buffers: one being filled, one with the caller. Together they bound the read-ahead. */
#define QUEUE 4
#define N_BUFS 2
/* Packets md_video_load_image() reads looking for its one frame (a video's first frame comes
 * within the first few; a file of only other streams must not be read to its end). */
#define MAX_IMAGE_PACKETS 4096

md_video_params md_video_default_params(void)
{
    md_video_params p = {0};
    p.sampling = MD_VIDEO_SAMPLE_FPS;
    p.fps = 1.0;
    p.count = 16;
    p.size = 224;
    memcpy(p.mean, md_image_clip_mean, sizeof p.mean);
    memcpy(p.std, md_image_clip_std, sizeof p.std);
    p.batch = 16;
    p.max_pixels = MD_VIDEO_MAX_PIXELS;
    return p;
}

/* A chosen frame on its way to preprocessing. */
typedef struct delivery {
    AVFrame *frame; /* own reference */
    long long serial;
    md_video_frame meta;
} delivery;

enum { BUF_FREE, BUF_READY, BUF_HELD };

typedef struct batch_buf {
    float *pixels;
    md_video_frame *frames;
    int n, state;
} batch_buf;

struct md_video_decoder {
    md_video_params p;
    md_video_info info;
    md_video_input *in;
    AVFormatContext *fmt;
    AVCodecContext *dec;
    int stream;
    AVRational tb;
    AVPacket *pkt;
    AVPacket *held;  /* keyframe mode: the latest keyframe, not yet known to be needed */
    int have_held;
    int pending;     /* pkt was refused with EAGAIN and is sent again first */

    AVFrame *cur, *prev;
    int have_cur, have_prev;
    int64_t cur_ts, prev_ts, cur_end, prev_end;
    long long cur_serial, prev_serial, serial;
    int64_t last_ts;
    int have_last;
    int64_t frame_step; /* nominal frame duration in tb, >= 1 */
    int64_t hold;       /* MD_VIDEO_MAX_HOLD_MS in tb, >= 1 */
    int cur_seen;       /* the sampler has looked at CUR (counted a gap before it) */
    int have_seen;      /* the frame it looked at before CUR (PREV, except in _ALL mode) */
    int64_t seen_ts, seen_end;
    int in_gap;         /* CUR comes after a gap: PREV covers only its own duration */
    int64_t last_pkt_end; /* end of the latest video packet read (AV_NOPTS_VALUE: none yet) */

    int64_t origin; /* stream time of 0 ms */
    int have_origin;
    AVRational interval; /* seconds between _FPS targets */
    int64_t duration;    /* ticks from origin to the end, -1 when unknown */
    long long limit;     /* number of targets (LLONG_MAX for _FPS) */
    long long k;         /* next target to deliver */
    long long kp;        /* keyframe planner: first target no sent keyframe covers yet */
    long long expected;
    int keyframe_mode;
    /* Exact mode: pts of the last packets sent, to tell frames no target can pick. */
    int64_t recent[RECENT_PTS];
    int n_recent;

    int input_done, flushed, decoder_done;
    int consecutive, decode_errors, stalls;
    int cancelled;               /* the caller's interrupt said stop */
    long long emitted;           /* deliveries queued */
    md_video_decode_stats stats; /* the decoding thread's; copies go to `shared` */

    /* The preprocessing thread's. */
    md_image_prep *prep;
    float *cache; /* tensor of the frame with serial cache_serial, for repeats */
    long long cache_serial;
    struct SwsContext *sws;
    uint8_t *rgb;
    size_t rgb_cap;

    /* Shared under mu: decoding thread -> queue -> preprocessing thread -> bufs -> caller. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sync_ready, started;
    pthread_t decode_thread, prep_thread;
    atomic_int stop; /* close or an error: every thread winds down */
    delivery queue[QUEUE];
    int q_head, q_len;
    int decode_done; /* no more deliveries */
    batch_buf bufs[N_BUFS];
    int b_fill, b_take, b_held; /* being filled, next for the caller, with the caller (-1) */
    int prep_done;              /* the last batch is out */
    long long taken;            /* frames handed to the caller */
    md_status failed;           /* the first error, MD_OK while none */
    char err[256];
    md_video_decode_stats shared;
};

/* ---- opening ------------------------------------------------------------------------------- */

/* FFmpeg's interrupt callback and our own poll: the caller's interrupt, or close/an error. */
static int interrupt_cb(void *opaque)
{
    md_video_decoder *d = opaque;
    if (!d->cancelled && d->p.interrupt && d->p.interrupt(d->p.interrupt_ctx))
        d->cancelled = 1;
    return d->cancelled || atomic_load(&d->stop);
}

/* The pre-scan's progress calls carry the caller's interrupt. */
static int probe_interrupt(void *opaque, long long done, long long total)
{
    (void)done;
    (void)total;
    return interrupt_cb(opaque);
}

/* Opens PATH as md_video_probe does (md_video_input_open), polling D's interrupt through
 * interrupt_cb when D is given. *FMT and *IN are NULL on failure. */
static md_status open_input(const char *path, const md_video_open_opts *opts, md_video_decoder *d,
                            AVFormatContext **fmt, md_video_input **in, char *err, size_t errlen)
{
    return md_video_input_open(path, opts, d ? interrupt_cb : NULL, d, fmt, in, NULL, err, errlen);
}

/* The best video stream that is not cover art (ALLOW_COVER: cover art as a last resort), or a
 * message saying why there is none. */
static int pick_stream(AVFormatContext *fmt, int allow_cover, md_status *st, char *err, size_t errlen)
{
    int idx = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    if (idx >= 0 && (fmt->streams[idx]->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
        int cover = idx;
        idx = -1;
        for (unsigned i = 0; i < fmt->nb_streams && idx < 0; i++) {
            const AVStream *s = fmt->streams[i];
            if (s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO && !(s->disposition & AV_DISPOSITION_ATTACHED_PIC))
                idx = (int)i;
        }
        if (idx < 0 && allow_cover)
            idx = cover;
    }
    if (idx >= 0)
        return idx;
    int n_audio = 0;
    for (unsigned i = 0; i < fmt->nb_streams; i++)
        n_audio += fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO;
    if (fmt->nb_streams == 0)
        *st = md_errf(err, errlen, MD_ERR_MEDIA, "no video stream (no streams at all)");
    else if (n_audio > 0)
        *st = md_errf(err, errlen, MD_ERR_MEDIA, "no video stream (audio only: %d audio stream%s)", n_audio,
                               n_audio == 1 ? "" : "s");
    else
        *st = md_errf(err, errlen, MD_ERR_MEDIA, "no video stream (%u streams, none of them video)",
                               fmt->nb_streams);
    return -1;
}

/* Size limits and a decoder for stream IDX; *DEC opened with THREADS. */
static md_status open_codec(AVFormatContext *fmt, int idx, long long max_pixels, int threads, AVCodecContext **dec,
                            char *err, size_t errlen)
{
    const AVStream *vs = fmt->streams[idx];
    const AVCodecParameters *par = vs->codecpar;
    char reason[AV_ERROR_MAX_STRING_SIZE];
    *dec = NULL;
    if (par->width <= 0 || par->height <= 0 || av_image_check_size((unsigned)par->width, (unsigned)par->height, 0, NULL) < 0)
        return md_errf(err, errlen, MD_ERR_MEDIA, "video has invalid dimensions %dx%d", par->width,
                                par->height);
    if (par->width > MD_VIDEO_MAX_DIM || par->height > MD_VIDEO_MAX_DIM)
        return md_errf(err, errlen, MD_ERR_MEDIA, "video dimensions %dx%d exceed the limit of %d pixels per side",
                       par->width, par->height, MD_VIDEO_MAX_DIM);
    if ((long long)par->width * par->height > max_pixels)
        return md_errf(err, errlen, MD_ERR_MEDIA, "video dimensions %dx%d exceed the limit of %lld pixels",
                                par->width, par->height, max_pixels);
    const AVCodec *codec = avcodec_find_decoder(par->codec_id);
    if (!codec && par->codec_id == AV_CODEC_ID_NONE) {
        char tag[AV_FOURCC_MAX_STRING_SIZE];
        return md_errf(err, errlen, MD_ERR_UNSUPPORTED, "unknown video codec (tag %s)",
                                av_fourcc_make_string(tag, par->codec_tag));
    }
    if (!codec)
        return md_errf(err, errlen, MD_ERR_UNSUPPORTED, "no decoder for video codec '%s' in this FFmpeg build",
                                avcodec_get_name(par->codec_id));
    AVCodecContext *c = avcodec_alloc_context3(codec);
    if (!c)
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    int ret = avcodec_parameters_to_context(c, par);
    if (ret >= 0) {
        c->pkt_timebase = vs->time_base;
        c->thread_count = threads;
        c->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
        /* FFmpeg refuses a larger frame before allocating it (a stream may change size). */
        c->max_pixels = max_pixels;
        ret = avcodec_open2(c, codec, NULL);
    }
    if (ret < 0) {
        avcodec_free_context(&c);
        if (ret == AVERROR(ENOMEM))
            return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        av_strerror(ret, reason, sizeof reason);
        return md_errf(err, errlen, MD_ERR_UNSUPPORTED, "cannot open the %s decoder: %s", codec->name, reason);
    }
    *dec = c;
    return MD_OK;
}

static md_status check_params(const md_video_params *p, char *err, size_t errlen)
{
    if (p->sampling != MD_VIDEO_SAMPLE_FPS && p->sampling != MD_VIDEO_SAMPLE_ALL &&
        p->sampling != MD_VIDEO_SAMPLE_COUNT)
        return md_errf(err, errlen, MD_ERR_INVALID, "unknown sampling mode %d", (int)p->sampling);
    if (p->sampling == MD_VIDEO_SAMPLE_FPS && !(p->fps > 0 && p->fps <= MD_VIDEO_FPS_MAX))
        return md_errf(err, errlen, MD_ERR_INVALID, "fps must be in (0, %d], not %g", MD_VIDEO_FPS_MAX, p->fps);
    if (p->sampling == MD_VIDEO_SAMPLE_COUNT && (p->count < 1 || p->count > 1000000))
        return md_errf(err, errlen, MD_ERR_INVALID, "count must be in [1, 1000000], not %d", p->count);
    if (p->size < 1 || p->size > MD_VIDEO_MAX_SIZE)
        return md_errf(err, errlen, MD_ERR_INVALID, "size must be in [1, %d], not %d", MD_VIDEO_MAX_SIZE,
                                p->size);
    if (p->threads < 0 || p->threads > 64)
        return md_errf(err, errlen, MD_ERR_INVALID, "threads must be in [0, 64], not %d", p->threads);
    if (p->batch < 1 || p->batch > 1024)
        return md_errf(err, errlen, MD_ERR_INVALID, "batch must be in [1, 1024], not %d", p->batch);
    if (p->max_pixels < 1 || p->max_pixels > MD_VIDEO_MAX_PIXELS)
        return md_errf(err, errlen, MD_ERR_INVALID, "max_pixels must be in [1, %lld], not %lld", MD_VIDEO_MAX_PIXELS,
                       p->max_pixels);
    for (int c = 0; c < 3; c++)
        if (!(p->std[c] > 0) || p->mean[c] != p->mean[c])
            return md_errf(err, errlen, MD_ERR_INVALID, "std must be > 0 and mean a number");
    return MD_OK;
}

/* What the headers say, in md_video_info's terms (the scan-only fields stay 0). */
static void header_info(const AVFormatContext *fmt, int idx, md_video_info *info, long long size)
{
    const AVStream *vs = fmt->streams[idx];
    memset(info, 0, sizeof *info);
    info->duration_ms = -1;
    info->data_duration_ms = -1;
    info->width = vs->codecpar->width;
    info->height = vs->codecpar->height;
    if (vs->avg_frame_rate.num > 0 && vs->avg_frame_rate.den > 0)
        info->fps = av_q2d(vs->avg_frame_rate);
    info->rotation = md_video_stream_rotation(vs);
    av_strlcpy(info->codec, avcodec_get_name(vs->codecpar->codec_id), sizeof info->codec);
    av_strlcpy(info->format, fmt->iformat->name, sizeof info->format);
    info->n_streams = (int)fmt->nb_streams;
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        const AVStream *s = fmt->streams[i];
        if (s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO && !(s->disposition & AV_DISPOSITION_ATTACHED_PIC))
            info->n_video_streams++;
        else if (s->codecpar->codec_type == AVMEDIA_TYPE_AUDIO)
            info->n_audio_streams++;
    }
    info->stream_index = idx;
    if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0)
        info->duration_ms = (long long)av_rescale(fmt->duration, 1000, AV_TIME_BASE);
    else if (vs->duration != AV_NOPTS_VALUE && vs->duration > 0)
        info->duration_ms = (long long)av_rescale_q(vs->duration, vs->time_base, (AVRational){1, 1000});
    info->size_bytes = size;
}

/* Keyframe count, largest keyframe gap and the gaps in the timestamps from the container's index
 * when it lists every frame (mp4, mov, avi), so keyframe mode needs no scan there. 0 when the
 * index cannot tell. */
static int index_keyframes(AVStream *vs, md_video_info *info)
{
    int n = avformat_index_get_entries_count(vs);
    if (n <= 0 || vs->nb_frames <= 0 || n != vs->nb_frames)
        return 0;
    long long keys = 0, gap = 0, n_gaps = 0;
    int64_t last = AV_NOPTS_VALUE, prev = AV_NOPTS_VALUE;
    int64_t hold = av_rescale_q(MD_VIDEO_MAX_HOLD_MS, (AVRational){1, 1000}, vs->time_base);
    for (int i = 0; i < n; i++) {
        const AVIndexEntry *e = avformat_index_get_entry(vs, i);
        if (!e)
            continue;
        /* Index times are decode times, in order. */
        if (prev != AV_NOPTS_VALUE && md_video_sat_sub(e->timestamp, prev) > hold)
            n_gaps++;
        prev = e->timestamp;
        if (!(e->flags & AVINDEX_KEYFRAME))
            continue;
        keys++;
        /* Keyframes are not reordered among themselves. */
        if (last != AV_NOPTS_VALUE && e->timestamp > last)
            gap = FFMAX(gap, av_rescale_q(md_video_sat_sub(e->timestamp, last), vs->time_base, (AVRational){1, 1000}));
        last = e->timestamp;
    }
    info->n_keyframes = keys;
    info->max_keyframe_gap_ms = gap;
    info->n_gaps = n_gaps;
    return keys > 0;
}

static int is_still_image(const AVFormatContext *fmt)
{
    const char *name = fmt->iformat->name;
    size_t n = strlen(name);
    return strcmp(name, "image2") == 0 || (n > 5 && strcmp(name + n - 5, "_pipe") == 0);
}

/* Stream time of target K (from the origin), rounded down to a tick. */
static int64_t target_rel(const md_video_decoder *d, long long k)
{
    if (d->p.sampling == MD_VIDEO_SAMPLE_FPS)
        return av_rescale_rnd(k, (int64_t)d->interval.num * d->tb.den, (int64_t)d->interval.den * d->tb.num,
                              AV_ROUND_DOWN);
    return av_rescale_rnd(2 * (int64_t)k + 1, d->duration, 2 * (int64_t)d->p.count, AV_ROUND_DOWN);
}

static int64_t target_abs(const md_video_decoder *d, long long k)
{
    return md_video_sat_add(d->origin, target_rel(d, k));
}

/* The video's length in stream ticks from the origin: the stream's own duration, else the
 * container's less the stream's offset in it, else the probe's; -1 when none is known. */
static int header_duration_known(const AVFormatContext *fmt, const AVStream *vs)
{
    if (vs->duration != AV_NOPTS_VALUE && vs->duration > 0)
        return 1;
    /* A length guessed from the bitrate (raw streams) can be far off; the scan counts instead. */
    return fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0 &&
           fmt->duration_estimation_method != AVFMT_DURATION_FROM_BITRATE;
}

static int64_t video_duration(const md_video_decoder *d)
{
    const AVStream *vs = d->fmt->streams[d->stream];
    if (vs->duration != AV_NOPTS_VALUE && vs->duration > 0)
        return vs->duration;
    if (header_duration_known(d->fmt, vs)) {
        int64_t dur = av_rescale_q(d->fmt->duration, AV_TIME_BASE_Q, d->tb);
        if (d->fmt->start_time != AV_NOPTS_VALUE && vs->start_time != AV_NOPTS_VALUE) {
            int64_t off = vs->start_time - av_rescale_q(d->fmt->start_time, AV_TIME_BASE_Q, d->tb);
            if (off > 0 && off < dur)
                dur -= off;
        }
        return dur;
    }
    if (d->info.duration_ms > 0)
        return av_rescale_q(d->info.duration_ms, (AVRational){1, 1000}, d->tb);
    return -1;
}

static long long expected_frames(const md_video_decoder *d)
{
    switch (d->p.sampling) {
    case MD_VIDEO_SAMPLE_COUNT:
        return d->p.count;
    case MD_VIDEO_SAMPLE_FPS: {
        if (d->duration < 0)
            return -1;
        /* What a scan saw bounds the count: no more than the data holds, and nothing for the
         * gaps (without a scan data_duration_ms is -1 and gap_ms 0). */
        AVRational ms = {1, 1000};
        int64_t span = d->duration;
        if (d->info.data_duration_ms >= 0)
            span = FFMIN(span, av_rescale_q(d->info.data_duration_ms, ms, d->tb));
        if (d->info.gap_ms > 0)
            span = FFMAX(0, md_video_sat_sub(span, av_rescale_q(d->info.gap_ms, ms, d->tb)));
        /* Targets k >= 0 with floor(k * interval) < span: ceil(span / interval), and a video that
         * has a frame has at least one. */
        return FFMIN(d->limit, FFMAX(1, av_rescale_rnd(span, (int64_t)d->interval.den * d->tb.num,
                                                       (int64_t)d->interval.num * d->tb.den, AV_ROUND_UP)));
    }
    case MD_VIDEO_SAMPLE_ALL:
    default: {
        const AVStream *vs = d->fmt->streams[d->stream];
        if (d->info.n_video_packets > 0)
            return d->info.n_video_packets;
        if (vs->nb_frames > 0)
            return vs->nb_frames;
        if (d->duration > 0 && vs->avg_frame_rate.num > 0 && vs->avg_frame_rate.den > 0)
            return FFMAX(1, av_rescale_q(d->duration, d->tb, av_inv_q(vs->avg_frame_rate)));
        return -1;
    }
    }
}

/* Hands freed memory back to the system: the decoder's threads (ours and FFmpeg's) allocate in
 * malloc arenas of their own, which keep a video's frames after free() otherwise. */
static void release_memory(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

void md_video_decoder_close(md_video_decoder *d)
{
    if (!d)
        return;
    if (d->started) {
        pthread_mutex_lock(&d->mu);
        atomic_store(&d->stop, 1);
        pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->decode_thread, NULL);
        pthread_join(d->prep_thread, NULL);
    }
    for (int i = 0; i < d->q_len; i++)
        av_frame_free(&d->queue[(d->q_head + i) % QUEUE].frame);
    for (int i = 0; i < N_BUFS; i++) {
        free(d->bufs[i].pixels);
        free(d->bufs[i].frames);
    }
    if (d->sync_ready) {
        pthread_mutex_destroy(&d->mu);
        pthread_cond_destroy(&d->cv);
    }
    av_packet_free(&d->pkt);
    av_packet_free(&d->held);
    av_frame_free(&d->cur);
    av_frame_free(&d->prev);
    avcodec_free_context(&d->dec);
    md_video_input_close(d->in, &d->fmt);
    sws_freeContext(d->sws);
    md_image_prep_free(d->prep);
    free(d->cache);
    free(d->rgb);
    free(d);
    release_memory();
}

md_status md_video_decoder_open(const char *path, const md_video_params *params, const md_video_info *probed,
                                md_video_decoder **out, char *err, size_t errlen)
{
    md_status st = MD_OK;
    md_video_decoder *d = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (out)
        *out = NULL;
    if (!path || !out)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: path and out are required", __func__);
    md_video_params p = params ? *params : md_video_default_params();
    if ((st = check_params(&p, err, errlen)) != MD_OK)
        return st;
    d = calloc(1, sizeof *d);
    if (!d)
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    d->p = p;
    d->stream = -1;
    d->b_held = -1;
    atomic_init(&d->stop, 0);
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        free(d);
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    }
    if (pthread_cond_init(&d->cv, NULL) != 0) {
        pthread_mutex_destroy(&d->mu);
        free(d);
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    }
    d->sync_ready = 1;
    d->last_pkt_end = AV_NOPTS_VALUE;
    d->stats.end_ms = -1;
    d->shared = d->stats;
    if ((st = open_input(path, &p.open, d, &d->fmt, &d->in, err, errlen)) != MD_OK)
        goto out;
    if ((d->stream = pick_stream(d->fmt, 0, &st, err, errlen)) < 0)
        goto out;
    const AVStream *vs = d->fmt->streams[d->stream];
    d->tb = vs->time_base;
    if (d->tb.num <= 0 || d->tb.den <= 0) {
        st = md_errf(err, errlen, MD_ERR_MEDIA, "video stream has an invalid time base");
        goto out;
    }
    if (is_still_image(d->fmt)) {
        st = md_errf(err, errlen, MD_ERR_MEDIA, "a still image (%s), not a video",
                              avcodec_get_name(vs->codecpar->codec_id));
        goto out;
    }
    if ((st = open_codec(d->fmt, d->stream, p.max_pixels, p.threads, &d->dec, err, errlen)) != MD_OK)
        goto out;

    struct stat sb;
    header_info(d->fmt, d->stream, &d->info, stat(path, &sb) == 0 ? (long long)sb.st_size : 0);
    if (probed) {
        d->info = *probed;
    } else {
        /* The scan is needed for a length the headers lack, for keyframe mode's count, and when
         * the headers claim more time than the file's size allows: only a scan tells a gap
         * (which costs nothing) from a claim the probe refuses. */
        int want_keys = p.keyframes_only && p.sampling != MD_VIDEO_SAMPLE_ALL && !index_keyframes(d->fmt->streams[d->stream], &d->info);
        int implausible = d->info.duration_ms > 0 &&
                          (double)d->info.duration_ms / 3.6e6 > (double)d->info.size_bytes / 1e6 * MD_VIDEO_MAX_HOURS_PER_MB;
        if (!header_duration_known(d->fmt, vs) || want_keys || implausible) {
            md_video_info scanned;
            if ((st = md_video_probe_ex(path, &p.open, &scanned, probe_interrupt, d, err, errlen)) != MD_OK)
                goto out;
            d->info = scanned;
        }
    }

    d->origin = vs->start_time;
    d->have_origin = vs->start_time != AV_NOPTS_VALUE;
    if (!d->have_origin)
        d->origin = 0;
    AVRational rate = vs->avg_frame_rate.num > 0 && vs->avg_frame_rate.den > 0 ? vs->avg_frame_rate : vs->r_frame_rate;
    d->frame_step = rate.num > 0 && rate.den > 0 ? av_rescale_q(1, av_inv_q(rate), d->tb) : 0;
    if (d->frame_step < 1)
        d->frame_step = 1;
    d->hold = FFMAX(1, av_rescale_q(MD_VIDEO_MAX_HOLD_MS, (AVRational){1, 1000}, d->tb));
    AVRational fq = av_d2q(p.fps, 1000000);
    d->interval = (AVRational){fq.den, fq.num};
    if (p.sampling == MD_VIDEO_SAMPLE_FPS && (fq.num <= 0 || fq.den <= 0)) {
        st = md_errf(err, errlen, MD_ERR_INVALID, "fps %g cannot be used", p.fps);
        goto out;
    }
    d->duration = video_duration(d);
    if (p.sampling == MD_VIDEO_SAMPLE_COUNT && d->duration <= 0) {
        st = md_errf(err, errlen, MD_ERR_MEDIA, "duration unknown: cannot spread %d frames over the video",
                              p.count);
        goto out;
    }
    /* _FPS: the targets whose times fit in int64 ticks with room to spare, so target arithmetic
     * never overflows whatever the file's timestamps. When even that count overflows (several
     * targets per tick), every target's time is below its number and all fit. */
    d->limit = p.sampling == MD_VIDEO_SAMPLE_COUNT
                   ? p.count
                   : av_rescale_rnd(INT64_MAX / 4, (int64_t)d->interval.den * d->tb.num,
                                    (int64_t)d->interval.num * d->tb.den, AV_ROUND_DOWN);
    if (d->limit < 1)
        d->limit = LLONG_MAX;
    d->expected = expected_frames(d);
    /* Keyframe mode holds a keyframe for its whole GOP: only when no GOP is longer than a frame
     * may stand (MD_VIDEO_MAX_HOLD_MS) and the timestamps have no gaps. */
    d->keyframe_mode = p.keyframes_only && p.sampling != MD_VIDEO_SAMPLE_ALL && d->expected > 0 &&
                       d->info.n_keyframes >= d->expected && d->info.max_keyframe_gap_ms <= MD_VIDEO_MAX_HOLD_MS &&
                       d->info.n_gaps == 0;

    size_t plane3 = 3 * (size_t)p.size * (size_t)p.size;
    d->pkt = av_packet_alloc();
    d->held = av_packet_alloc();
    d->cur = av_frame_alloc();
    d->prev = av_frame_alloc();
    d->prep = md_image_prep_new(p.size, p.mean, p.std);
    d->cache = malloc(sizeof(float) * plane3);
    int bufs_ok = 1;
    for (int i = 0; i < N_BUFS; i++) {
        d->bufs[i].pixels = malloc(sizeof(float) * plane3 * (size_t)p.batch);
        d->bufs[i].frames = calloc((size_t)p.batch, sizeof *d->bufs[i].frames);
        bufs_ok &= d->bufs[i].pixels && d->bufs[i].frames;
    }
    if (!d->pkt || !d->held || !d->cur || !d->prev || !d->prep || !d->cache || !bufs_ok) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    d->cache_serial = -1;
    *out = d;
    d = NULL;
out:
    /* An interrupt during the open makes FFmpeg stop early with half-filled parameters (0x0, no
     * stream): that is a cancellation, not a property of the file. */
    if (st != MD_OK && st != MD_ERR_CANCELLED && d && d->cancelled)
        st = md_errf(err, errlen, MD_ERR_CANCELLED, "cancelled");
    md_video_decoder_close(d);
    return st;
}

const md_video_info *md_video_decoder_info(const md_video_decoder *d)
{
    return &d->info;
}

long long md_video_decoder_expected(const md_video_decoder *d)
{
    return d->expected;
}

int md_video_decoder_keyframe_mode(const md_video_decoder *d)
{
    return d->keyframe_mode;
}

void md_video_decoder_stats(const md_video_decoder *d, md_video_decode_stats *stats)
{
    /* The lock is not part of the decoder's logical state. */
    pthread_mutex_t *mu = (pthread_mutex_t *)&d->mu;
    pthread_mutex_lock(mu);
    *stats = d->shared;
    pthread_mutex_unlock(mu);
}

const char *md_video_decoder_error(const md_video_decoder *d)
{
    return d->err;
}

/* ---- decoding ------------------------------------------------------------------------------ */

/* Records the first error and stops every thread. Takes mu. */
static md_status fail(md_video_decoder *d, md_status st, const char *msg)
{
    pthread_mutex_lock(&d->mu);
    if (d->failed == MD_OK) {
        d->failed = st;
        av_strlcpy(d->err, msg, sizeof d->err);
    }
    atomic_store(&d->stop, 1);
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    return st;
}

/* Sends PKT (NULL to drain). Damaged packets are counted, not fatal. */
static md_status send(md_video_decoder *d, const AVPacket *pkt)
{
    int ret = avcodec_send_packet(d->dec, pkt);
    if (ret == AVERROR(EAGAIN)) {
        d->pending = 1; /* only possible for d->pkt: the decoder wants frames taken out first */
        return MD_OK;
    }
    if (ret == AVERROR(ENOMEM))
        return fail(d, MD_ERR_NOMEM, "out of memory");
    if (ret < 0 && ret != AVERROR_EOF)
        d->stats.skipped_packets++;
    return MD_OK;
}

/* The first target at or after stream time P (d->limit when there is none). */
static long long first_target_from(const md_video_decoder *d, int64_t p)
{
    int64_t rel = md_video_sat_sub(p, d->origin);
    long long k;
    if (rel <= 0)
        return 0;
    if (d->p.sampling == MD_VIDEO_SAMPLE_FPS)
        k = av_rescale_rnd(rel, (int64_t)d->interval.den * d->tb.num, (int64_t)d->interval.num * d->tb.den,
                           AV_ROUND_UP);
    else
        k = av_rescale_rnd(rel, 2 * (int64_t)d->p.count, d->duration, AV_ROUND_UP);
    /* INT64_MIN is av_rescale_rnd's overflow: P lies beyond every target. Never walk there. */
    if (k < 0)
        return d->limit;
    if (d->p.sampling != MD_VIDEO_SAMPLE_FPS)
        k = k > 0 ? (k - 1) / 2 : 0;
    if (k > d->limit)
        k = d->limit;
    /* The estimate is within one of the answer either way; settle it on the exact targets. */
    while (k < d->limit && target_abs(d, k) < p)
        k++;
    while (k > 0 && k - 1 < d->limit && target_abs(d, k - 1) >= p)
        k--;
    return k < d->limit ? k : d->limit;
}

/* Keyframe mode: decides what to do with key packet d->pkt. Keyframe K is needed when some
 * target lies between it and the next keyframe (or before it, for the first one), which is known
 * once the next keyframe shows up: so the latest one is held, and sent when the next proves it
 * needed. Returns 1 when d->held was moved to d->pkt to be sent now. */
static int plan_keyframe(md_video_decoder *d)
{
    int64_t p = d->pkt->pts != AV_NOPTS_VALUE ? d->pkt->pts : d->pkt->dts;
    if (p == AV_NOPTS_VALUE)
        return 1; /* no time to plan with: decode it */
    if (!d->have_origin) {
        d->origin = p;
        d->have_origin = 1;
    }
    if (!d->have_held) {
        av_packet_move_ref(d->held, d->pkt);
        d->have_held = 1;
        return 0;
    }
    int needed = d->kp < d->limit && target_abs(d, d->kp) < p;
    if (needed) /* in one step: the keyframes may be hours apart */
        d->kp = FFMAX(d->kp, first_target_from(d, p));
    /* Swap: the new keyframe is held, the old one goes out (or is dropped) through d->pkt. */
    AVPacket *t = d->held;
    d->held = d->pkt;
    d->pkt = t;
    if (needed)
        return 1;
    av_packet_unref(d->pkt);
    return 0;
}

/* Exact mode: may the decoder drop packet PKT's frame if no other frame refers to it? Yes when
 * no target can pick it: a frame already sent is shown after it and no later than the first
 * target at or after it, or no target is left after it. In B-frame streams a non-reference
 * frame's successor in display order is mostly sent before it, so most such frames qualify;
 * they are then not decoded at all (AVDISCARD_NONREF: a frame others refer to is still decoded,
 * so every picked frame decodes exactly as without skipping). */
static int unpicked(md_video_decoder *d, const AVPacket *pkt)
{
    int64_t p = pkt->pts;
    if (p == AV_NOPTS_VALUE || !d->have_origin || (pkt->flags & AV_PKT_FLAG_KEY))
        return 0;
    long long k = first_target_from(d, p);
    if (k >= d->limit)
        return 1;
    int64_t t = target_abs(d, k);
    for (int i = 0; i < d->n_recent; i++)
        if (d->recent[i] > p && d->recent[i] <= t)
            return 1;
    return 0;
}

static void remember_pts(md_video_decoder *d, int64_t p)
{
    if (p == AV_NOPTS_VALUE)
        return;
    if (d->n_recent < RECENT_PTS) {
        d->recent[d->n_recent++] = p;
        return;
    }
    memmove(d->recent, d->recent + 1, sizeof d->recent[0] * (RECENT_PTS - 1));
    d->recent[RECENT_PTS - 1] = p;
}

/* Feeds the decoder one packet (or the drain). */
static md_status feed(md_video_decoder *d)
{
    md_status st;
    if (d->pending) {
        d->pending = 0;
        st = send(d, d->pkt);
        if (!d->pending)
            av_packet_unref(d->pkt);
        return st;
    }
    for (;;) {
        if (d->input_done) {
            /* The last keyframe is needed when a target lies between it and the end. */
            if (d->have_held && !(d->kp < d->limit && (d->duration < 0 || target_rel(d, d->kp) < d->duration))) {
                d->have_held = 0;
                av_packet_unref(d->held);
            }
            if (d->have_held) {
                d->have_held = 0;
                av_packet_move_ref(d->pkt, d->held);
                st = send(d, d->pkt);
                if (!d->pending)
                    av_packet_unref(d->pkt);
                return st;
            }
            d->flushed = 1;
            return send(d, NULL);
        }
        /* Before each read: a file of other streams' packets is read without a frame, and
         * buffered data needs no read callback. */
        if (interrupt_cb(d))
            return fail(d, MD_ERR_CANCELLED, "cancelled");
        int ret = av_read_frame(d->fmt, d->pkt);
        if (interrupt_cb(d)) {
            av_packet_unref(d->pkt);
            return fail(d, MD_ERR_CANCELLED, "cancelled");
        }
        char msg[sizeof d->err];
        if (md_video_input_check(d->in, msg, sizeof msg) != MD_OK) {
            av_packet_unref(d->pkt);
            return fail(d, MD_ERR_MEDIA, msg);
        }
        if (ret == AVERROR_EOF) {
            d->input_done = 1;
            continue;
        }
        if (ret == AVERROR(ENOMEM))
            return fail(d, MD_ERR_NOMEM, "out of memory");
        if (ret < 0) {
            if (ret != AVERROR(EAGAIN))
                d->stats.skipped_packets++;
            if (++d->consecutive >= MD_VIDEO_MAX_READ_ERRORS)
                d->input_done = 1;
            continue;
        }
        d->consecutive = 0;
        if (d->pkt->stream_index != d->stream) {
            av_packet_unref(d->pkt);
            continue;
        }
        d->stats.packets++;
        int64_t pts = d->pkt->pts != AV_NOPTS_VALUE ? d->pkt->pts : d->pkt->dts;
        if (pts != AV_NOPTS_VALUE) {
            int64_t end = md_video_sat_add(pts, d->pkt->duration > 0 ? d->pkt->duration : d->frame_step);
            if (d->last_pkt_end == AV_NOPTS_VALUE || end > d->last_pkt_end)
                d->last_pkt_end = end;
        }
        if (d->pkt->flags & AV_PKT_FLAG_KEY)
            d->stats.keyframes++;
        if (d->pkt->flags & AV_PKT_FLAG_CORRUPT)
            d->stats.corrupt_packets++;
        if (d->keyframe_mode) {
            if (!(d->pkt->flags & AV_PKT_FLAG_KEY) || !plan_keyframe(d)) {
                av_packet_unref(d->pkt);
                continue;
            }
        } else if (d->p.sampling != MD_VIDEO_SAMPLE_ALL) {
            /* Read per packet, also by frame threads (copied at submission). */
            d->dec->skip_frame = unpicked(d, d->pkt) ? AVDISCARD_NONREF : AVDISCARD_DEFAULT;
            remember_pts(d, d->pkt->pts);
        }
        st = send(d, d->pkt);
        if (!d->pending)
            av_packet_unref(d->pkt);
        return st;
    }
}

static int64_t frame_duration(const AVFrame *f)
{
#if LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(57, 30, 100)
    return f->duration;
#else
    return f->pkt_duration;
#endif
}

/* Decodes until d->cur holds a new frame (d->have_cur) or the decoder is drained. */
static md_status pump(md_video_decoder *d)
{
    for (;;) {
        if (interrupt_cb(d))
            return fail(d, MD_ERR_CANCELLED, "cancelled");
        int ret = avcodec_receive_frame(d->dec, d->cur);
        if (ret >= 0) {
            d->decode_errors = 0;
            d->stalls = 0;
            d->stats.frames_decoded++;
            if (d->cur->decode_error_flags || (d->cur->flags & AV_FRAME_FLAG_CORRUPT))
                d->stats.corrupt_frames++;
            if ((long long)d->cur->width * d->cur->height > d->p.max_pixels || d->cur->width <= 0 ||
                d->cur->height <= 0) {
                d->stats.frames_refused++;
                av_frame_unref(d->cur);
                continue;
            }
            int64_t ts = d->cur->best_effort_timestamp;
            if (ts == AV_NOPTS_VALUE)
                ts = d->have_last ? d->last_ts + d->frame_step : d->origin;
            if (d->have_last && ts < d->last_ts)
                ts = d->last_ts; /* keep presentation order monotonic on broken timestamps */
            if (!d->have_origin) {
                d->origin = ts;
                d->have_origin = 1;
            }
            int64_t dur = frame_duration(d->cur);
            d->last_ts = ts;
            d->have_last = 1;
            d->cur_ts = ts;
            /* A frame claiming to last longer than a frame may stand lasts that long. */
            d->cur_end = md_video_sat_add(ts, dur > 0 ? FFMIN(dur, d->hold) : d->frame_step);
            d->cur_serial = d->serial++;
            d->have_cur = 1;
            d->cur_seen = 0;
            long long end_ms = av_rescale_q(md_video_sat_sub(d->cur_end, d->origin), d->tb, (AVRational){1, 1000});
            if (end_ms > d->stats.end_ms)
                d->stats.end_ms = end_ms;
            return MD_OK;
        }
        if (ret == AVERROR_EOF) {
            d->decoder_done = 1;
            return MD_OK;
        }
        if (ret == AVERROR(ENOMEM))
            return fail(d, MD_ERR_NOMEM, "out of memory");
        if (ret != AVERROR(EAGAIN)) {
            d->stats.skipped_packets++;
            if (++d->decode_errors >= MAX_DECODE_ERRORS) {
                d->decoder_done = 1;
                return MD_OK;
            }
            continue;
        }
        if (d->flushed) { /* EAGAIN after the drain: nothing more will come */
            d->decoder_done = 1;
            return MD_OK;
        }
        /* The API promises a refused packet means frames are ready; never spin if one lies. */
        if (d->pending && ++d->stalls > MAX_DECODE_ERRORS)
            return fail(d, MD_ERR_INTERNAL, "the decoder neither takes packets nor gives frames");
        md_status st = feed(d);
        if (st != MD_OK)
            return st;
    }
}

static int sws_colorspace(const AVFrame *f)
{
    switch (f->colorspace) {
    case AVCOL_SPC_BT709:
        return SWS_CS_ITU709;
    case AVCOL_SPC_FCC:
        return SWS_CS_FCC;
    case AVCOL_SPC_SMPTE240M:
        return SWS_CS_SMPTE240M;
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL:
        return SWS_CS_BT2020;
    default:
        return SWS_CS_DEFAULT; /* BT.601, also FFmpeg's choice for untagged video */
    }
}

/* Converts F to packed RGB24 (RGBA composited onto white when F has alpha), as FFmpeg's scale
 * filter would: the frame's own colour matrix and range. *RGB is borrowed (F's data or the
 * decoder's buffer). */
static md_status frame_rgb(struct SwsContext **sws, uint8_t **buf, size_t *cap, md_image_prep *prep, const AVFrame *f,
                           const uint8_t **rgb, ptrdiff_t *stride)
{
    if (f->format == AV_PIX_FMT_RGB24 && f->linesize[0] > 0) {
        *rgb = f->data[0];
        *stride = f->linesize[0];
        return MD_OK;
    }
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get((enum AVPixelFormat)f->format);
    if (!desc || (desc->flags & AV_PIX_FMT_FLAG_HWACCEL))
        return MD_ERR_UNSUPPORTED;
    int alpha = (desc->flags & AV_PIX_FMT_FLAG_ALPHA) != 0;
    enum AVPixelFormat dst = alpha ? AV_PIX_FMT_RGBA : AV_PIX_FMT_RGB24;
    int w = f->width, h = f->height;
    /* The flags and colour handling of the ffmpeg CLI's own conversion (-pix_fmt rgb24), so our
     * RGB frames are the ones users get from it. */
    *sws = sws_getCachedContext(*sws, w, h, (enum AVPixelFormat)f->format, w, h, dst, SWS_BICUBIC, NULL, NULL, NULL);
    if (!*sws)
        return MD_ERR_UNSUPPORTED;
    if (!(desc->flags & AV_PIX_FMT_FLAG_RGB) && desc->nb_components >= 3) {
        const int *inv, *table;
        int src_range, dst_range, brightness, contrast, saturation;
        if (sws_getColorspaceDetails(*sws, (int **)&inv, &src_range, (int **)&table, &dst_range, &brightness, &contrast,
                                     &saturation) >= 0) {
            int full = f->color_range != AVCOL_RANGE_UNSPECIFIED ? f->color_range == AVCOL_RANGE_JPEG : src_range;
            const int *coef = sws_getCoefficients(sws_colorspace(f));
            sws_setColorspaceDetails(*sws, coef, full, coef, dst_range, brightness, contrast, saturation);
        }
    }
    int ls = FFALIGN(w * (alpha ? 4 : 3), 64);
    size_t need = (size_t)ls * (size_t)h + 64;
    if (need > *cap) {
        uint8_t *nb = realloc(*buf, need);
        if (!nb)
            return MD_ERR_NOMEM;
        *buf = nb;
        *cap = need;
    }
    uint8_t *dst_data[4] = {*buf, NULL, NULL, NULL};
    int dst_ls[4] = {ls, 0, 0, 0};
    if (sws_scale(*sws, (const uint8_t *const *)f->data, f->linesize, 0, h, dst_data, dst_ls) != h)
        return MD_ERR_MEDIA;
    if (alpha)
        return md_image_prep_flatten(prep, *buf, w, h, ls, rgb, stride);
    *rgb = *buf;
    *stride = ls;
    return MD_OK;
}

/* Preprocessing thread: F's tensor into OUT, or a copy of the last one when F is the same frame
 * again. MSG gets the reason on failure. */
static md_status convert(md_video_decoder *d, const AVFrame *f, long long serial, float *out, char *msg,
                         size_t msglen)
{
    size_t plane3 = 3 * (size_t)d->p.size * (size_t)d->p.size;
    if (serial == d->cache_serial) {
        memcpy(out, d->cache, sizeof(float) * plane3);
        return MD_OK;
    }
    const uint8_t *rgb;
    ptrdiff_t stride;
    md_status st = frame_rgb(&d->sws, &d->rgb, &d->rgb_cap, d->prep, f, &rgb, &stride);
    if (st == MD_OK)
        st = md_image_prep_run(d->prep, rgb, f->width, f->height, stride, d->info.rotation, out);
    if (st == MD_ERR_NOMEM) {
        snprintf(msg, msglen, "out of memory");
        return st;
    }
    if (st != MD_OK) {
        const char *name = av_get_pix_fmt_name((enum AVPixelFormat)f->format);
        snprintf(msg, msglen, "cannot convert a %dx%d %s frame to RGB", f->width, f->height, name ? name : "?");
        return MD_ERR_UNSUPPORTED;
    }
    if (d->p.sampling != MD_VIDEO_SAMPLE_ALL) {
        memcpy(d->cache, out, sizeof(float) * plane3);
        d->cache_serial = serial;
    }
    return MD_OK;
}

/* Decoding thread: queues frame F, shown at TS, for the sample at TARGET. Waits while the queue
 * is full; MD_ERR_CANCELLED once everything is stopping. */
static md_status emit(md_video_decoder *d, const AVFrame *f, long long serial, int64_t ts, int64_t target)
{
    AVFrame *ref = av_frame_alloc();
    if (!ref || av_frame_ref(ref, f) < 0) {
        av_frame_free(&ref);
        return fail(d, MD_ERR_NOMEM, "out of memory");
    }
    AVRational ms = {1, 1000};
    delivery dv = {.frame = ref, .serial = serial};
    dv.meta.ts_ms = av_rescale_q_rnd(ts - d->origin, d->tb, ms, AV_ROUND_NEAR_INF | AV_ROUND_PASS_MINMAX);
    dv.meta.target_ms = av_rescale_q_rnd(target - d->origin, d->tb, ms, AV_ROUND_NEAR_INF | AV_ROUND_PASS_MINMAX);
    dv.meta.keyframe_only = d->keyframe_mode;
    pthread_mutex_lock(&d->mu);
    while (d->q_len == QUEUE && !atomic_load(&d->stop))
        pthread_cond_wait(&d->cv, &d->mu);
    if (atomic_load(&d->stop)) {
        pthread_mutex_unlock(&d->mu);
        av_frame_free(&ref);
        return MD_ERR_CANCELLED;
    }
    d->queue[(d->q_head + d->q_len) % QUEUE] = dv;
    d->q_len++;
    d->emitted++;
    d->stats.frames_delivered = d->emitted;
    d->shared = d->stats;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    return MD_OK;
}

/* At the end PREV covers the targets before its own end, but not past the stated duration. In
 * keyframe mode the last keyframe stands for the rest of the video, as far as packets were read
 * and no longer than a frame may stand. */
static int64_t prev_cover_end(const md_video_decoder *d)
{
    int64_t end = d->prev_end;
    int64_t stated = d->duration > 0 ? md_video_sat_add(d->origin, d->duration) : INT64_MAX;
    if (d->keyframe_mode && d->duration > 0 && d->last_pkt_end != AV_NOPTS_VALUE) {
        int64_t rest = FFMIN(FFMIN(stated, d->last_pkt_end), md_video_sat_add(d->prev_ts, d->hold));
        if (rest > end)
            return rest;
    }
    if (end > stated)
        end = FFMAX(stated, md_video_sat_add(d->prev_ts, 1));
    return end;
}

/* The sampler's first look at a new CUR: a gap before it (more than MD_VIDEO_MAX_HOLD_MS after
 * PREV, or after the start for the first frame) is counted, and marks the targets up to CUR as
 * ones PREV does not cover beyond its own duration. */
static void note_gap(md_video_decoder *d)
{
    int64_t from = d->have_seen ? d->seen_ts : d->origin;
    int64_t covered = d->have_seen ? d->seen_end : d->origin;
    d->cur_seen = 1;
    d->in_gap = md_video_sat_sub(d->cur_ts, from) > d->hold;
    if (d->in_gap) {
        d->stats.gaps++;
        if (d->cur_ts > covered)
            d->stats.gap_ms += av_rescale_q(md_video_sat_sub(d->cur_ts, covered), d->tb, (AVRational){1, 1000});
    }
    d->seen_ts = d->cur_ts;
    d->seen_end = d->cur_end;
    d->have_seen = 1;
}

/* Decoding thread: the sampler (see the top of the file), until the video is done. */
static md_status run_sampler(md_video_decoder *d)
{
    const int all = d->p.sampling == MD_VIDEO_SAMPLE_ALL;
    md_status st = MD_OK;
    while (st == MD_OK) {
        if (interrupt_cb(d))
            return fail(d, MD_ERR_CANCELLED, "cancelled");
        if (d->have_cur && !d->cur_seen)
            note_gap(d);
        if (d->have_cur) {
            if (all) {
                st = emit(d, d->cur, d->cur_serial, d->cur_ts, d->cur_ts);
                av_frame_unref(d->cur);
                d->have_cur = 0;
                continue;
            }
            if (d->k < d->limit && target_abs(d, d->k) < d->cur_ts) {
                /* Targets in a gap: skipped all at once, up to CUR. */
                if (d->in_gap && (!d->have_prev || target_abs(d, d->k) >= d->prev_end)) {
                    d->k = FFMAX(d->k + 1, first_target_from(d, d->cur_ts));
                    continue;
                }
                /* Before the first frame nothing is shown; the first frame stands in. */
                if (d->have_prev)
                    st = emit(d, d->prev, d->prev_serial, d->prev_ts, target_abs(d, d->k));
                else
                    st = emit(d, d->cur, d->cur_serial, d->cur_ts, target_abs(d, d->k));
                d->k++;
                continue;
            }
            av_frame_unref(d->prev);
            av_frame_move_ref(d->prev, d->cur);
            d->prev_ts = d->cur_ts;
            d->prev_end = d->cur_end;
            d->prev_serial = d->cur_serial;
            d->have_prev = 1;
            d->have_cur = 0;
            continue;
        }
        if (d->decoder_done) {
            if (!all && d->have_prev && d->k < d->limit && target_abs(d, d->k) < prev_cover_end(d)) {
                st = emit(d, d->prev, d->prev_serial, d->prev_ts, target_abs(d, d->k));
                d->k++;
                continue;
            }
            break;
        }
        st = pump(d);
    }
    return st;
}

/* At the end: how far the frames reach, and whether the video stops short of its duration. */
static void finish_stats(md_video_decoder *d)
{
    AVRational ms = {1, 1000};
    if (d->have_prev && d->p.sampling != MD_VIDEO_SAMPLE_ALL) {
        long long reach = av_rescale_q(md_video_sat_sub(prev_cover_end(d), d->origin), d->tb, ms);
        if (reach > d->stats.end_ms)
            d->stats.end_ms = reach;
    }
    int truncated = d->info.truncated || d->consecutive >= MD_VIDEO_MAX_READ_ERRORS;
    const AVStream *vs = d->fmt->streams[d->stream];
    if (!truncated && d->duration > 0 && header_duration_known(d->fmt, vs)) {
        /* The probe's rule: the packets read end more than max(1 s, 5 %) before the duration. */
        int64_t slack = FFMAX(av_rescale_q(1000, ms, d->tb), d->duration / 20);
        int64_t data_end = d->last_pkt_end != AV_NOPTS_VALUE ? md_video_sat_sub(d->last_pkt_end, d->origin) : 0;
        truncated = data_end < d->duration - slack;
    }
    d->stats.truncated = truncated;
}

static void *decode_main(void *arg)
{
    md_video_decoder *d = arg;
    md_status st = run_sampler(d);
    if (st == MD_OK)
        finish_stats(d);
    /* Let the decoder's frames go now rather than at close. */
    av_frame_unref(d->prev);
    av_frame_unref(d->cur);
    d->have_prev = d->have_cur = 0;
    pthread_mutex_lock(&d->mu);
    d->shared = d->stats; /* final before anyone can see the end or this error */
    if (st == MD_OK && d->emitted == 0 && d->failed == MD_OK) {
        d->failed = MD_ERR_MEDIA;
        snprintf(d->err, sizeof d->err, "no decodable frames (%lld packets read, %lld damaged packets skipped)",
                 d->stats.packets, d->stats.skipped_packets);
        atomic_store(&d->stop, 1);
    }
    d->decode_done = 1;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* Preprocessing thread: queued frames into batch buffers, each published when full or at the
 * end. Holds mu except while converting. */
static void *prep_main(void *arg)
{
    md_video_decoder *d = arg;
    const size_t plane3 = 3 * (size_t)d->p.size * (size_t)d->p.size;
    char msg[160];
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!atomic_load(&d->stop) && d->q_len == 0 && !d->decode_done)
            pthread_cond_wait(&d->cv, &d->mu);
        if (atomic_load(&d->stop))
            break;
        batch_buf *b = &d->bufs[d->b_fill]; /* free: waited for below */
        if (d->q_len == 0) {                /* the decoding thread is done and all is converted */
            if (b->n > 0) {
                b->state = BUF_READY;
                d->b_fill = (d->b_fill + 1) % N_BUFS;
            }
            d->prep_done = 1;
            pthread_cond_broadcast(&d->cv);
            break;
        }
        delivery dv = d->queue[d->q_head];
        d->q_head = (d->q_head + 1) % QUEUE;
        d->q_len--;
        pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->mu);
        md_status st = convert(d, dv.frame, dv.serial, b->pixels + plane3 * (size_t)b->n, msg, sizeof msg);
        av_frame_free(&dv.frame);
        if (st != MD_OK) {
            fail(d, st, msg);
            return NULL;
        }
        pthread_mutex_lock(&d->mu);
        b->frames[b->n++] = dv.meta;
        if (b->n == d->p.batch) {
            b->state = BUF_READY;
            d->b_fill = (d->b_fill + 1) % N_BUFS;
            pthread_cond_broadcast(&d->cv);
            while (!atomic_load(&d->stop) && d->bufs[d->b_fill].state != BUF_FREE)
                pthread_cond_wait(&d->cv, &d->mu);
            d->bufs[d->b_fill].n = 0;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

md_status md_video_decoder_next(md_video_decoder *d, md_video_batch *b)
{
    memset(b, 0, sizeof *b);
    if (!d)
        return MD_ERR_INVALID;
    b->size = d->p.size;
    pthread_mutex_lock(&d->mu);
    if (!d->started && d->failed == MD_OK) {
        /* Started by the first call, so opening alone (to read the info) costs no decoding. */
        if (pthread_create(&d->decode_thread, NULL, decode_main, d) != 0) {
            d->failed = MD_ERR_NOMEM;
            av_strlcpy(d->err, "cannot start the decoding thread", sizeof d->err);
        } else if (pthread_create(&d->prep_thread, NULL, prep_main, d) != 0) {
            d->failed = MD_ERR_NOMEM;
            av_strlcpy(d->err, "cannot start the preprocessing thread", sizeof d->err);
            atomic_store(&d->stop, 1);
            pthread_cond_broadcast(&d->cv);
            pthread_mutex_unlock(&d->mu);
            pthread_join(d->decode_thread, NULL);
            return MD_ERR_NOMEM;
        } else {
            d->started = 1;
        }
    }
    if (d->b_held >= 0) {
        d->bufs[d->b_held].state = BUF_FREE;
        d->b_held = -1;
        pthread_cond_broadcast(&d->cv);
    }
    md_status st = MD_OK;
    for (;;) {
        if (d->failed != MD_OK) {
            /* Wait for the decoding thread to settle, so the statistics are final. */
            while (d->started && !d->decode_done)
                pthread_cond_wait(&d->cv, &d->mu);
            st = d->failed;
            break;
        }
        batch_buf *t = &d->bufs[d->b_take];
        if (t->state == BUF_READY) {
            t->state = BUF_HELD;
            d->b_held = d->b_take;
            d->b_take = (d->b_take + 1) % N_BUFS;
            b->n = t->n;
            b->pixels = t->pixels;
            b->frames = t->frames;
            b->first_index = d->taken;
            d->taken += t->n;
            break;
        }
        if (d->prep_done) { /* done: n stays 0 */
            b->first_index = d->taken;
            break;
        }
        pthread_cond_wait(&d->cv, &d->mu);
    }
    pthread_mutex_unlock(&d->mu);
    return st;
}

/* ---- single pictures ----------------------------------------------------------------------- */

md_status md_video_load_image(const char *path, int size, const float mean[3], const float std[3], float *out_chw,
                              char *err, size_t errlen)
{
    return md_video_load_image_ex(path, NULL, size, mean, std, out_chw, err, errlen);
}

md_status md_video_load_image_ex(const char *path, const md_video_open_opts *opts, int size, const float mean[3],
                                 const float std[3], float *out_chw, char *err, size_t errlen)
{
    md_status st = MD_OK;
    md_video_input *in = NULL;
    AVFormatContext *fmt = NULL;
    AVCodecContext *dec = NULL;
    AVPacket *pkt = NULL;
    AVFrame *frame = NULL;
    md_image_prep *prep = NULL;
    struct SwsContext *sws = NULL;
    uint8_t *buf = NULL;
    size_t cap = 0;
    if (err && errlen)
        err[0] = '\0';
    if (!path || !out_chw)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: path and out_chw are required", __func__);
    if (size < 1 || size > MD_VIDEO_MAX_SIZE)
        return md_errf(err, errlen, MD_ERR_INVALID, "size must be in [1, %d], not %d", MD_VIDEO_MAX_SIZE,
                                size);
    for (int c = 0; std && c < 3; c++)
        if (!(std[c] > 0))
            return md_errf(err, errlen, MD_ERR_INVALID, "std must be > 0");
    if ((st = open_input(path, opts, NULL, &fmt, &in, err, errlen)) != MD_OK)
        goto out;
    int idx = pick_stream(fmt, 1, &st, err, errlen);
    if (idx < 0)
        goto out;
    if ((st = open_codec(fmt, idx, MD_VIDEO_MAX_PIXELS, 1, &dec, err, errlen)) != MD_OK)
        goto out;
    pkt = av_packet_alloc();
    frame = av_frame_alloc();
    prep = md_image_prep_new(size, mean, std);
    if (!pkt || !frame || !prep) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    int got = 0, flushed = 0, errors = 0, packets = 0;
    while (!got) {
        int ret = avcodec_receive_frame(dec, frame);
        if (ret >= 0) {
            got = 1;
            break;
        }
        if (ret == AVERROR_EOF || (ret == AVERROR(EAGAIN) && flushed))
            break;
        if (ret != AVERROR(EAGAIN) && ++errors > MD_VIDEO_MAX_READ_ERRORS)
            break;
        if (ret != AVERROR(EAGAIN))
            continue;
        for (;;) {
            ret = ++packets > MAX_IMAGE_PACKETS ? AVERROR_EOF : av_read_frame(fmt, pkt);
            if (ret == AVERROR(ENOMEM)) {
                st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
                goto out;
            }
            if ((st = md_video_input_check(in, err, errlen)) != MD_OK)
                goto out;
            if (ret < 0 && ret != AVERROR_EOF && ++errors <= MD_VIDEO_MAX_READ_ERRORS)
                continue;
            if (ret < 0) {
                avcodec_send_packet(dec, NULL);
                flushed = 1;
                break;
            }
            if (pkt->stream_index != idx) {
                av_packet_unref(pkt);
                continue;
            }
            avcodec_send_packet(dec, pkt); /* a damaged packet just yields no frame */
            av_packet_unref(pkt);
            break;
        }
    }
    if (!got) {
        st = md_errf(err, errlen, MD_ERR_MEDIA, "no decodable frame");
        goto out;
    }
    if ((long long)frame->width * frame->height > MD_VIDEO_MAX_PIXELS) {
        st = md_errf(err, errlen, MD_ERR_MEDIA, "picture dimensions %dx%d are too large", frame->width,
                              frame->height);
        goto out;
    }
    const uint8_t *rgb;
    ptrdiff_t stride;
    st = frame_rgb(&sws, &buf, &cap, prep, frame, &rgb, &stride);
    if (st == MD_OK)
        st = md_image_prep_run(prep, rgb, frame->width, frame->height, stride,
                               md_video_stream_rotation(fmt->streams[idx]), out_chw);
    if (st != MD_OK)
        md_errf(err, errlen, st, "cannot convert a %dx%d %s picture", frame->width, frame->height,
                         av_get_pix_fmt_name((enum AVPixelFormat)frame->format) ? av_get_pix_fmt_name(frame->format)
                                                                                 : "?");
out:
    sws_freeContext(sws);
    free(buf);
    md_image_prep_free(prep);
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    md_video_input_close(in, &fmt);
    release_memory();
    if (st != MD_OK && err && errlen && !err[0])
        md_errf(err, errlen, st, "%s", md_status_str(st));
    return st;
}
