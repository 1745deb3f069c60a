/* probe.c - md_video_probe(): open a file with libavformat, describe its best video stream, then
 * demux every packet once (no decoding) to count packets and find truncation or corruption.
 * Also md_video_global_init(), which routes FFmpeg's log into md_log.
 *
 * Progress and cancellation share one path: the scan loop and libavformat's interrupt callback
 * both go through report(), so a caller's progress function is also asked while FFmpeg is busy
 * inside avformat_open_input()/avformat_find_stream_info(), and a cancel aborts those too.
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include "../base/log.h"

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define PROGRESS_INTERVAL_S 0.05
/* A truncated mp4 keeps its sample table, so every sample past the cut fails on its own; stop
 * after this many failures in a row rather than walking (and logging) each missing one. */
#define MAX_CONSECUTIVE_ERRORS 64
#define LOG_LINES_PER_SECOND 20

typedef struct probe_state {
    AVFormatContext *fmt;
    md_video_progress_fn progress;
    void *ctx;
    long long total;
    long long done;     /* last value reported; kept monotonic */
    double last_report; /* md_mono_s() of the last call, < 0 before the first */
    int cancelled;
} probe_state;

/* Calls the progress function when FORCE is set or ~50 ms have passed since the last call.
 * Returns 1 once the caller has asked to cancel. */
static int report(probe_state *ps, long long pos, int force)
{
    if (ps->cancelled)
        return 1;
    if (!ps->progress)
        return 0;
    if (pos > ps->total)
        pos = ps->total;
    if (pos > ps->done)
        ps->done = pos;
    double now = md_mono_s();
    if (!force && ps->last_report >= 0 && now - ps->last_report < PROGRESS_INTERVAL_S)
        return 0;
    ps->last_report = now;
    if (ps->progress(ps->ctx, ps->done, ps->total))
        ps->cancelled = 1;
    return ps->cancelled;
}

/* libavformat polls this during blocking work; non-zero makes it return AVERROR_EXIT. */
static int interrupt_cb(void *opaque)
{
    probe_state *ps = opaque;
    /* avio_tell() with no pending seek is pure arithmetic, safe even mid-read. */
    long long pos = ps->fmt && ps->fmt->pb ? (long long)avio_tell(ps->fmt->pb) : 0;
    return report(ps, pos, 0);
}

md_status md_video_open_error(int ret, int cancelled, char *err, size_t errlen)
{
    char reason[AV_ERROR_MAX_STRING_SIZE];
    if (cancelled)
        return md_errf(err, errlen, MD_ERR_CANCELLED, "cancelled");
    av_strerror(ret, reason, sizeof reason);
    if (ret == AVERROR(ENOENT) || ret == AVERROR(ENOTDIR))
        return md_errf(err, errlen, MD_ERR_NOT_FOUND, "file not found");
    if (ret == AVERROR(EACCES) || ret == AVERROR(EPERM))
        return md_errf(err, errlen, MD_ERR_IO, "cannot open file: %s", reason);
    if (ret == AVERROR(EIO))
        return md_errf(err, errlen, MD_ERR_IO, "cannot read file: %s", reason);
    if (ret == AVERROR(ENOMEM))
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    return md_errf(err, errlen, MD_ERR_MEDIA, "not a video file: %s", reason);
}

/* Display matrix -> clockwise quarter turns in degrees. av_display_rotation_get() answers in
 * counter-clockwise degrees (FFmpeg's own autorotate negates it the same way), and may return any
 * angle or NaN for a degenerate matrix; we snap to the nearest quarter turn. */
int md_video_stream_rotation(const AVStream *st)
{
    size_t size = 0;
    const uint8_t *sd = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (!sd || size < 9 * sizeof(int32_t))
        return 0;
    double ccw = av_display_rotation_get((const int32_t *)sd);
    if (isnan(ccw) || isinf(ccw))
        return 0;
    double q = -ccw / 90.0;
    long quarters = (long)(q < 0 ? q - 0.5 : q + 0.5);
    return (int)(((quarters % 4) + 4) % 4) * 90;
}

/* A packet's end timestamp in its stream's time base, or AV_NOPTS_VALUE. Saturating, since the
 * timestamps come from the file. */
static int64_t packet_end(const AVPacket *pkt)
{
    int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
    if (ts == AV_NOPTS_VALUE)
        return AV_NOPTS_VALUE;
    if (pkt->duration > 0 && ts < INT64_MAX - pkt->duration)
        ts += pkt->duration;
    return ts;
}

static long long ms_from(int64_t ts, AVRational tb)
{
    return (long long)av_rescale_q(ts, tb, (AVRational){1, 1000});
}

md_status md_video_check_file(const char *path, long long *size, char *err, size_t errlen)
{
    char reason[AV_ERROR_MAX_STRING_SIZE];
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            return md_errf(err, errlen, MD_ERR_NOT_FOUND, "file not found");
        av_strerror(AVERROR(e), reason, sizeof reason);
        return md_errf(err, errlen, MD_ERR_IO, "cannot access file: %s", reason);
    }
    if (!S_ISREG(sb.st_mode))
        return md_errf(err, errlen, MD_ERR_MEDIA, "not a regular file");
    if (sb.st_size == 0)
        return md_errf(err, errlen, MD_ERR_MEDIA, "empty file");
    if (size)
        *size = (long long)sb.st_size;
    return MD_OK;
}

md_status md_video_probe(const char *path, md_video_info *info, md_video_progress_fn progress,
                         void *ctx, char *err, size_t errlen)
{
    md_status st = MD_OK;
    probe_state ps = {.progress = progress, .ctx = ctx, .last_report = -1};
    AVDictionary *opts = NULL;
    AVPacket *pkt = NULL;
    char *url = NULL;
    char reason[AV_ERROR_MAX_STRING_SIZE];
    int ret;

    if (err && errlen)
        err[0] = '\0';
    if (info) {
        memset(info, 0, sizeof *info);
        info->duration_ms = -1;
    }
    if (!path || !info)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: path and info are required", __func__);

    if ((st = md_video_check_file(path, &ps.total, err, errlen)) != MD_OK)
        return st;

    /* "file:" keeps a name such as "http:x" or "pipe:1" a local path; the whitelist stops a
     * playlist or concat file inside the file from reaching other protocols. */
    url = av_asprintf("file:%s", path);
    if (!url || av_dict_set(&opts, "protocol_whitelist", "file", 0) < 0) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    ps.fmt = avformat_alloc_context();
    if (!ps.fmt) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    ps.fmt->interrupt_callback.callback = interrupt_cb;
    ps.fmt->interrupt_callback.opaque = &ps;
    /* On failure this frees the context and sets ps.fmt to NULL. */
    ret = avformat_open_input(&ps.fmt, url, NULL, &opts);
    if (ret < 0) {
        st = md_video_open_error(ret, ps.cancelled, err, errlen);
        goto out;
    }
    ret = avformat_find_stream_info(ps.fmt, NULL);
    if (ret < 0) {
        if (ps.cancelled || ret == AVERROR(ENOMEM)) {
            st = md_video_open_error(ret, ps.cancelled, err, errlen);
            goto out;
        }
        /* Parameters may still be complete enough; the checks below decide. */
        av_strerror(ret, reason, sizeof reason);
        md_debug("%s: avformat_find_stream_info: %s", __func__, reason);
    }

    AVFormatContext *fmt = ps.fmt;
    int n_cover = 0;
    info->n_streams = (int)fmt->nb_streams;
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        const AVStream *s = fmt->streams[i];
        if (s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) {
            if (s->disposition & AV_DISPOSITION_ATTACHED_PIC)
                n_cover++;
            else
                info->n_video_streams++;
        } else if (s->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
            info->n_audio_streams++;
        }
    }

    int idx = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
    /* Cover art is a one-picture "video" stream; an audio file with a cover is still audio. */
    if (idx >= 0 && (fmt->streams[idx]->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
        idx = -1;
        for (unsigned i = 0; i < fmt->nb_streams && idx < 0; i++) {
            const AVStream *s = fmt->streams[i];
            if (s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
                !(s->disposition & AV_DISPOSITION_ATTACHED_PIC))
                idx = (int)i;
        }
    }
    if (idx < 0) {
        int other = info->n_streams - info->n_audio_streams - n_cover;
        if (info->n_streams == 0)
            st = md_errf(err, errlen, MD_ERR_MEDIA, "no video stream (no streams at all)");
        else if (other == 0 && info->n_audio_streams > 0)
            st = md_errf(err, errlen, MD_ERR_MEDIA,
                         "no video stream (audio only: %d audio stream%s%s)",
                         info->n_audio_streams, info->n_audio_streams == 1 ? "" : "s",
                         n_cover ? ", cover art" : "");
        else
            st = md_errf(err, errlen, MD_ERR_MEDIA,
                         "no video stream (%d stream%s: %d audio, %d other)", info->n_streams,
                         info->n_streams == 1 ? "" : "s", info->n_audio_streams, other);
        goto out;
    }

    const AVStream *vs = fmt->streams[idx];
    const AVCodecParameters *par = vs->codecpar;
    info->stream_index = idx;
    info->width = par->width;
    info->height = par->height;
    /* av_image_check_size also rejects sizes whose frame buffers would overflow an int. */
    if (par->width <= 0 || par->height <= 0 ||
        av_image_check_size((unsigned)par->width, (unsigned)par->height, 0, NULL) < 0) {
        st = md_errf(err, errlen, MD_ERR_MEDIA, "video has invalid dimensions %dx%d", par->width,
                     par->height);
        goto out;
    }
    if (vs->avg_frame_rate.num > 0 && vs->avg_frame_rate.den > 0)
        info->fps = av_q2d(vs->avg_frame_rate);
    info->rotation = md_video_stream_rotation(vs);
    snprintf(info->codec, sizeof info->codec, "%s", avcodec_get_name(par->codec_id));
    snprintf(info->format, sizeof info->format, "%s", fmt->iformat->name);
    /* A probe that succeeds promises the indexer can decode the frames. */
    if (par->codec_id == AV_CODEC_ID_NONE) {
        char tag[AV_FOURCC_MAX_STRING_SIZE];
        st = md_errf(err, errlen, MD_ERR_UNSUPPORTED, "unknown video codec (tag %s)",
                              av_fourcc_make_string(tag, par->codec_tag));
        goto out;
    }
    if (!avcodec_find_decoder(par->codec_id)) {
        st = md_errf(err, errlen, MD_ERR_UNSUPPORTED, "no decoder for video codec '%s' in this FFmpeg build",
                     info->codec);
        goto out;
    }
    /* Still images open through the image demuxers; they are not videos to search in. */
    size_t fl = strlen(info->format);
    if (strcmp(info->format, "image2") == 0 || (fl > 5 && strcmp(info->format + fl - 5, "_pipe") == 0)) {
        st = md_errf(err, errlen, MD_ERR_MEDIA, "a still image (%s), not a video", info->codec);
        goto out;
    }
    if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0)
        info->duration_ms = (long long)av_rescale(fmt->duration, 1000, AV_TIME_BASE);
    else if (vs->duration != AV_NOPTS_VALUE && vs->duration > 0)
        info->duration_ms = ms_from(vs->duration, vs->time_base);

    pkt = av_packet_alloc();
    if (!pkt) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* The video stream's own timestamps, used when the headers gave no duration. */
    int64_t first_ts = AV_NOPTS_VALUE, end_ts = AV_NOPTS_VALUE, last_key_ts = AV_NOPTS_VALUE;
    /* Where the data read so far ends, any stream, in AV_TIME_BASE units. */
    int64_t data_end_us = AV_NOPTS_VALUE;
    int consecutive = 0;
    for (;;) {
        ret = av_read_frame(fmt, pkt);
        if (ps.cancelled)
            break;
        if (ret == AVERROR_EOF)
            break;
        if (ret == AVERROR(ENOMEM)) {
            st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
            goto out;
        }
        if (ret < 0) {
            /* EAGAIN is not damage, but it must not spin forever either. */
            if (ret != AVERROR(EAGAIN))
                info->n_corrupt_packets++;
            if (++consecutive >= MAX_CONSECUTIVE_ERRORS)
                break;
            continue;
        }
        consecutive = 0;
        if (pkt->flags & AV_PKT_FLAG_CORRUPT)
            info->n_corrupt_packets++;
        int64_t end = packet_end(pkt);
        if (end != AV_NOPTS_VALUE && pkt->stream_index >= 0 &&
            (unsigned)pkt->stream_index < fmt->nb_streams) {
            int64_t end_us =
                av_rescale_q(end, fmt->streams[pkt->stream_index]->time_base, AV_TIME_BASE_Q);
            if (data_end_us == AV_NOPTS_VALUE || end_us > data_end_us)
                data_end_us = end_us;
        }
        if (pkt->stream_index == idx) {
            info->n_video_packets++;
            int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
            if (pkt->flags & AV_PKT_FLAG_KEY) {
                info->n_keyframes++;
                if (ts != AV_NOPTS_VALUE && last_key_ts != AV_NOPTS_VALUE && ts > last_key_ts &&
                    (last_key_ts >= 0 || ts < INT64_MAX + last_key_ts)) {
                    long long gap = ms_from(ts - last_key_ts, vs->time_base);
                    if (gap > info->max_keyframe_gap_ms)
                        info->max_keyframe_gap_ms = gap;
                }
                if (ts != AV_NOPTS_VALUE)
                    last_key_ts = ts;
            }
            if (ts != AV_NOPTS_VALUE) {
                if (first_ts == AV_NOPTS_VALUE || ts < first_ts)
                    first_ts = ts;
                if (end_ts == AV_NOPTS_VALUE || end > end_ts)
                    end_ts = end;
            }
        }
        av_packet_unref(pkt);
        if (report(&ps, fmt->pb ? (long long)avio_tell(fmt->pb) : 0, 0))
            break;
    }
    av_packet_unref(pkt);
    /* Truncation shows in one of three ways: the scan ended on errors rather than a clean end of
     * file; the container's index (complete up front in mp4 and avi, built while reading
     * elsewhere, so never larger than what was read) lists packets the file no longer holds; or
     * the data stops well short of a duration the headers stated (a cut matroska file ends
     * cleanly but its segment header still says the full length). A duration guessed from the
     * bitrate is too rough for that last test. */
    int indexed = avformat_index_get_entries_count(vs);
    info->truncated = consecutive > 0 || indexed > info->n_video_packets;
    if (!info->truncated && fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0 &&
        fmt->duration_estimation_method != AVFMT_DURATION_FROM_BITRATE &&
        data_end_us != AV_NOPTS_VALUE) {
        int64_t start = fmt->start_time != AV_NOPTS_VALUE ? fmt->start_time : 0;
        int64_t slack = FFMAX(AV_TIME_BASE, fmt->duration / 20);
        /* In double: both ends come from the file and may be anywhere in int64 range. */
        if ((double)data_end_us - (double)start < (double)(fmt->duration - slack))
            info->truncated = 1;
    }
    if (ps.cancelled || report(&ps, ps.total, 1)) {
        st = md_errf(err, errlen, MD_ERR_CANCELLED, "cancelled");
        goto out;
    }
    if (info->n_video_packets == 0) {
        st = md_errf(err, errlen, MD_ERR_MEDIA, "video stream has no readable packets%s",
                     info->n_corrupt_packets ? " (file truncated or corrupt)" : "");
        goto out;
    }
    if (info->duration_ms < 0 && first_ts != AV_NOPTS_VALUE && end_ts > first_ts &&
        (first_ts >= 0 || end_ts < INT64_MAX + first_ts))
        info->duration_ms = ms_from(end_ts - first_ts, vs->time_base);
    /* Raw elementary streams carry no timestamps at all; one packet is one frame there. */
    if (info->duration_ms < 0 && info->fps > 0)
        info->duration_ms = (long long)((double)info->n_video_packets * 1000.0 / info->fps + 0.5);
    info->size_bytes = ps.total;

out:
    av_packet_free(&pkt);
    avformat_close_input(&ps.fmt);
    av_dict_free(&opts);
    av_free(url);
    if (st != MD_OK) {
        memset(info, 0, sizeof *info);
        info->duration_ms = -1;
        if (err && errlen && !err[0])
            md_errf(err, errlen, st, "%s", md_status_str(st));
    }
    return st;
}

/* Global, so a flood from one bad file is capped across all threads; races between threads only
 * blur the count by a line or two. */
static atomic_llong g_log_second;
static atomic_int g_log_lines;
static atomic_llong g_log_dropped;

static void log_line(int level, const char *line)
{
    long long sec = (long long)md_mono_s();
    long long prev = atomic_load(&g_log_second);
    if (sec != prev && atomic_compare_exchange_strong(&g_log_second, &prev, sec)) {
        atomic_store(&g_log_lines, 0);
        long long dropped = atomic_exchange(&g_log_dropped, 0);
        if (dropped)
            md_warn("ffmpeg: %lld log messages dropped", dropped);
    }
    if (atomic_fetch_add(&g_log_lines, 1) >= LOG_LINES_PER_SECOND) {
        atomic_fetch_add(&g_log_dropped, 1);
        return;
    }
    /* A damaged upload is a warning for the daemon, not its own error; only FFmpeg's fatal
     * levels are ours. */
    md_log(level <= AV_LOG_FATAL ? MD_LOG_ERROR : MD_LOG_WARN, "ffmpeg: %s", line);
}

/* FFmpeg sometimes builds one line from several av_log() calls ("Packet corrupt (...)" then
 * "."), so pieces are gathered per thread until the newline; FFmpeg's own prefix state is shared
 * between threads and unsafe, hence our own. */
static _Thread_local char t_pending[1024];
static _Thread_local int t_print_prefix = 1;
static _Thread_local int t_pending_level = AV_LOG_WARNING;

static void av_log_cb(void *avcl, int level, const char *fmt, va_list vl)
{
    level &= 0xff; /* the upper bits carry a colour tint */
    if (level > AV_LOG_WARNING)
        return;

    size_t used = strlen(t_pending);
    if (!used || level < t_pending_level)
        t_pending_level = level;
    av_log_format_line2(avcl, level, fmt, vl, t_pending + used, sizeof t_pending - used,
                        &t_print_prefix);
    size_t n = strlen(t_pending);
    int complete = n && t_pending[n - 1] == '\n';
    if (!complete && n < sizeof t_pending - 1)
        return;
    while (n && (t_pending[n - 1] == '\n' || t_pending[n - 1] == '\r' || t_pending[n - 1] == ' '))
        t_pending[--n] = '\0';
    if (n)
        log_line(t_pending_level, t_pending);
    t_pending[0] = '\0';
    t_print_prefix = 1;
}

void md_video_global_init(void)
{
    av_log_set_level(AV_LOG_WARNING);
    av_log_set_callback(av_log_cb);
}
