/* probe.c - md_video_probe(): open a file with libavformat, describe its best video stream, then
 * demux every packet once (no decoding) to count packets and find truncation, corruption and gaps.
 * Also the way every entry point of video/ opens a file (md_video_input_*, internal.h), and
 * md_video_global_init(), which routes FFmpeg's log into md_log.
 *
 * Opening (md_video_input_open) is where hostile files are stopped, in this order:
 *   1. the path is opened once, read-only, by us; FFmpeg reads that descriptor through a custom
 *      AVIOContext (pread at its own position), so it never opens the main file by name and a
 *      file swapped after the check is not read; every read also polls the interrupt callback;
 *   2. the format is detected on those bytes, and formats that name other files or URLs (hls,
 *      dash, concat, ...) are refused before their header is parsed: their demuxers open nested
 *      inputs (some through a nested context that bypasses our io_open);
 *   3. AVFormatContext.io_open is the guard: it refuses every open but the file itself (same
 *      device and inode), and a refusal, once made, refuses the whole file; with a custom
 *      AVIOContext image2 reads the name as one file (pattern_type none), never a sequence;
 *   4. max_streams stops the demuxer creating more than MD_VIDEO_MAX_STREAMS + 1 streams, and
 *      stream counts and picture sizes are checked on the container's parameters before the
 *      parameter search, which then runs with decoders limited to MD_VIDEO_MAX_PIXELS.
 * While a file is being opened FFmpeg's first error line is kept (per thread, by the log
 * callback), so a failure can say "moov atom not found" or "max_streams" rather than only
 * "Invalid data found".
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
#include <libavutil/intreadwrite.h>

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROGRESS_INTERVAL_S 0.05
#define LOG_LINES_PER_SECOND 20
/* Allocations from this size up are mapped and unmapped on their own (see md_video_global_init). */
#define MMAP_THRESHOLD (1 << 20)
/* FFmpeg's own file protocol buffer size, so reads and probing behave as they did through it. */
#define IO_BUFFER_SIZE 32768
/* Top-level boxes walked when telling a cut mp4 from garbage (a real file has a handful). */
#define MAX_TOP_BOXES 4096
#define INPUT_MAGIC 0x6d64696eu /* "mdin" */
/* Packets held to put timestamps back in presentation order for the gap test: more than any
 * reorder depth (H.264 allows 16). */
#define REORDER 32

/* ---- opening a file (md_video_input) -------------------------------------------------------- */

/* While a file is being opened on this thread: FFmpeg's first error line, and which of our
 * limits FFmpeg's own messages said it hit (see av_log_cb). */
enum { HIT_PIXELS = 1, HIT_STREAMS = 2 };
static _Thread_local char *t_capture;
static _Thread_local size_t t_capture_len;
static _Thread_local int *t_capture_hits;

/* A read position in the file: the main AVIOContext has one, and so has each reopening of the
 * file itself that the guard allows. */
typedef struct io_view {
    md_video_input *in;
    int64_t pos;
} io_view;

struct md_video_input {
    uint32_t magic;       /* the guard checks it: a nested context may hand it another opaque */
    int fd;
    dev_t dev;
    ino_t ino;
    int64_t size;
    int (*interrupt)(void *);
    void *interrupt_ctx;
    int allow_nested;
    int opened;           /* avformat_open_input() succeeded: it owns the context now */
    AVIOContext *pb;      /* ours, never closed by libavformat (AVFMT_FLAG_CUSTOM_IO) */
    char format[32];      /* the detected demuxer, for messages */
    int refused;          /* opens the guard said no to */
    char refused_url[200];
    char ffmpeg_error[200];
    int hits;             /* HIT_* */
};

static int io_read(void *opaque, uint8_t *buf, int size)
{
    io_view *v = opaque;
    md_video_input *in = v->in;
    /* The file protocol polls the interrupt between reads; so do we. */
    if (in->interrupt && in->interrupt(in->interrupt_ctx))
        return AVERROR_EXIT;
    for (;;) {
        ssize_t n = pread(in->fd, buf, (size_t)size, (off_t)v->pos);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return AVERROR(errno);
        if (n == 0)
            return AVERROR_EOF;
        v->pos += n;
        return (int)n;
    }
}

static int64_t io_seek(void *opaque, int64_t offset, int whence)
{
    io_view *v = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE:
        return v->in->size;
    case SEEK_SET:
        base = 0;
        break;
    case SEEK_CUR:
        base = v->pos;
        break;
    case SEEK_END:
        base = v->in->size;
        break;
    default:
        return AVERROR(EINVAL);
    }
    int64_t pos = md_video_sat_add(base, offset);
    if (pos < 0 || pos == INT64_MAX)
        return AVERROR(EINVAL);
    v->pos = pos;
    return pos;
}

/* A new AVIOContext reading IN from the start, or NULL when out of memory. */
static AVIOContext *io_new(md_video_input *in)
{
    io_view *v = av_mallocz(sizeof *v);
    uint8_t *buf = av_malloc(IO_BUFFER_SIZE);
    AVIOContext *pb = v && buf ? avio_alloc_context(buf, IO_BUFFER_SIZE, 0, v, io_read, NULL, io_seek) : NULL;
    if (!pb) {
        av_free(buf);
        av_free(v);
        return NULL;
    }
    v->in = in;
    return pb;
}

static void io_free(AVIOContext **pb)
{
    if (!*pb)
        return;
    av_free((*pb)->opaque);
    av_freep(&(*pb)->buffer); /* FFmpeg may have replaced the one we gave it */
    avio_context_free(pb);
}

/* AVFormatContext.io_open when nested opens are refused: the file itself (same inode, opened
 * for reading) is served from our descriptor; anything else is refused and remembered. */
static int guard_open(AVFormatContext *s, AVIOContext **pb, const char *url, int flags, AVDictionary **options)
{
    md_video_input *in = s->opaque;
    (void)options;
    *pb = NULL;
    if (!in || in->magic != INPUT_MAGIC)
        return AVERROR(EPERM); /* a nested context that copied our callback: refuse, not crash */
    const char *path = url;
    av_strstart(url, "file:", &path);
    struct stat sb;
    if (!(flags & AVIO_FLAG_WRITE) && stat(path, &sb) == 0 && sb.st_dev == in->dev && sb.st_ino == in->ino) {
        *pb = io_new(in);
        return *pb ? 0 : AVERROR(ENOMEM);
    }
    if (!in->refused++)
        av_strlcpy(in->refused_url, url, sizeof in->refused_url);
    md_debug("%s: refused to open %s for the %s demuxer", __func__, url, in->format);
    return AVERROR(EPERM);
}

static int guard_close(AVFormatContext *s, AVIOContext *pb)
{
    (void)s;
    if (pb && pb->read_packet == io_read) {
        io_free(&pb);
        return 0;
    }
    return avio_close(pb);
}

/* What a format that opens other files or URLs is, for the refusal message; NULL when it may be
 * read. Demuxers flagged AVFMT_NOFILE open their input by name themselves (image2 reads our
 * descriptor when it has one, see the top of the file). */
static const char *nested_format(const AVInputFormat *f)
{
    static const struct {
        const char *name, *what;
    } list[] = {
        {"hls", "a playlist (hls)"},
        {"dash", "a manifest (dash)"},
        {"concat", "a concat list (concat)"},
        {"imf", "an IMF composition (imf)"},
        {"vobsub", "a subtitle index (vobsub)"},
        {"sdp", "a stream description (sdp)"},
        {"rtsp", "a stream description (rtsp)"},
        {"rtp", "a stream description (rtp)"},
    };
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++)
        if (strcmp(f->name, list[i].name) == 0)
            return list[i].what;
    if ((f->flags & AVFMT_NOFILE) && strcmp(f->name, "image2") != 0)
        return "read by a demuxer that opens files by name itself";
    return NULL;
}

md_status md_video_input_check(const md_video_input *in, char *err, size_t errlen)
{
    if (!in || !in->refused)
        return MD_OK;
    return md_errf(err, errlen, MD_ERR_MEDIA,
                   "refused: this %s file asks to open another file (%s); files that open other files are not read",
                   in->format, in->refused_url);
}

/* Walks an ISO BMFF file's top-level boxes: 1 when one is a moov, 0 when none is (CUT gets the
 * type of a box cut short by the end of the file, "" when none is), -1 when the file does not
 * start like one at all (random bytes that FFmpeg took for mp4 by their name). Cheap: one small
 * read per box. */
static int mp4_has_moov(const md_video_input *in, char cut[5])
{
    static const char *const first[] = {"ftyp", "styp", "moov", "mdat", "free", "skip", "wide", "pnot", "uuid"};
    int64_t pos = 0;
    cut[0] = '\0';
    for (int boxes = 0; boxes < MAX_TOP_BOXES && pos + 8 <= in->size; boxes++) {
        uint8_t h[16];
        ssize_t n = pread(in->fd, h, sizeof h, (off_t)pos);
        if (n < 8)
            break;
        if (boxes == 0) {
            int known = 0;
            for (size_t i = 0; i < sizeof first / sizeof first[0]; i++)
                known |= !memcmp(h + 4, first[i], 4);
            if (!known)
                return -1;
        }
        uint64_t len = AV_RB32(h);
        if (len == 1) {
            if (n < 16)
                break;
            len = AV_RB64(h + 8);
        } else if (len == 0) {
            len = (uint64_t)(in->size - pos); /* extends to the end of the file */
        }
        if (!memcmp(h + 4, "moov", 4))
            return 1;
        if (len < 8 || len > (uint64_t)(in->size - pos)) {
            for (int i = 0; i < 4; i++)
                cut[i] = h[4 + i] >= 0x20 && h[4 + i] < 0x7f ? (char)h[4 + i] : '?';
            cut[4] = '\0';
            break;
        }
        pos += (int64_t)len;
    }
    return 0;
}

/* The status and message for avformat_open_input()'s failure RET. */
static md_status open_failed(md_video_input *in, int ret, int cancelled, char *err, size_t errlen)
{
    char cut[5];
    md_status st;
    if (cancelled)
        return md_errf(err, errlen, MD_ERR_CANCELLED, "cancelled");
    if (in->refused)
        return md_video_input_check(in, err, errlen);
    if (in->hits & HIT_STREAMS)
        return md_errf(err, errlen, MD_ERR_MEDIA, "refused: the file has more than %d streams", MD_VIDEO_MAX_STREAMS);
    if (ret == AVERROR_INVALIDDATA && av_strstart(in->format, "mov,", NULL) && mp4_has_moov(in, cut) == 0) {
        if (cut[0])
            return md_errf(err, errlen, MD_ERR_MEDIA,
                           "truncated or incomplete MP4 (no moov atom): the file ends inside its '%s' box", cut);
        return md_errf(err, errlen, MD_ERR_MEDIA, "truncated or incomplete MP4 (no moov atom)");
    }
    st = md_video_open_error(ret, 0, err, errlen);
    if (st == MD_ERR_MEDIA && in->ffmpeg_error[0] && err && errlen) {
        size_t used = strlen(err);
        snprintf(err + used, errlen - used, " (ffmpeg: %s)", in->ffmpeg_error);
    }
    return st;
}

/* Streams and picture sizes FMT may have; checked before and after the parameter search. */
static md_status check_limits(const AVFormatContext *fmt, char *err, size_t errlen)
{
    if (fmt->nb_streams > MD_VIDEO_MAX_STREAMS)
        return md_errf(err, errlen, MD_ERR_MEDIA, "refused: the file has %s%u streams (the limit is %d)",
                       fmt->nb_streams >= (unsigned)fmt->max_streams ? "at least " : "", fmt->nb_streams,
                       MD_VIDEO_MAX_STREAMS);
    for (unsigned i = 0; i < fmt->nb_streams; i++) {
        const AVStream *s = fmt->streams[i];
        const AVCodecParameters *par = s->codecpar;
        if (par->codec_type != AVMEDIA_TYPE_VIDEO || (s->disposition & AV_DISPOSITION_ATTACHED_PIC))
            continue;
        if (par->width > MD_VIDEO_MAX_DIM || par->height > MD_VIDEO_MAX_DIM)
            return md_errf(err, errlen, MD_ERR_MEDIA, "video dimensions %dx%d exceed the limit of %d pixels per side",
                           par->width, par->height, MD_VIDEO_MAX_DIM);
        if ((long long)par->width * par->height > MD_VIDEO_MAX_PIXELS)
            return md_errf(err, errlen, MD_ERR_MEDIA, "video dimensions %dx%d exceed the limit of %lld pixels",
                           par->width, par->height, MD_VIDEO_MAX_PIXELS);
    }
    return MD_OK;
}

md_status md_video_input_open(const char *path, const md_video_open_opts *opts, int (*interrupt)(void *),
                              void *interrupt_ctx, AVFormatContext **fmt, md_video_input **out, long long *size,
                              char *err, size_t errlen)
{
    md_status st = MD_OK;
    md_video_input *in = NULL;
    AVDictionary *o = NULL, **so = NULL;
    unsigned n_so = 0;
    char *url = NULL;
    const AVInputFormat *ifmt = NULL;
    const char *why;
    char *saved_capture = t_capture;
    size_t saved_capture_len = t_capture_len;
    int *saved_hits = t_capture_hits;
    struct stat sb;
    int ret;

    *fmt = NULL;
    *out = NULL;
    if ((st = md_video_check_file(path, NULL, err, errlen)) != MD_OK)
        return st;
    in = av_mallocz(sizeof *in);
    if (!in)
        return md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
    in->magic = INPUT_MAGIC;
    in->interrupt = interrupt;
    in->interrupt_ctx = interrupt_ctx;
    in->allow_nested = opts && opts->allow_nested;
    /* O_NONBLOCK: a path swapped for a FIFO after the check must not block the open. */
    in->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (in->fd < 0) {
        int e = errno;
        av_free(in);
        if (e == ENOENT || e == ENOTDIR)
            return md_errf(err, errlen, MD_ERR_NOT_FOUND, "file not found");
        return md_errf(err, errlen, MD_ERR_IO, "cannot open file: %s", strerror(e));
    }
    if (fstat(in->fd, &sb) != 0) {
        st = md_errf(err, errlen, MD_ERR_IO, "cannot access file: %s", strerror(errno));
        goto out;
    }
    /* The file checked above may have been replaced since. */
    if (!S_ISREG(sb.st_mode) || sb.st_size == 0) {
        st = md_errf(err, errlen, MD_ERR_MEDIA, S_ISREG(sb.st_mode) ? "empty file" : "not a regular file");
        goto out;
    }
    in->dev = sb.st_dev;
    in->ino = sb.st_ino;
    in->size = (int64_t)sb.st_size;
    in->pb = io_new(in);
    /* "file:" keeps a name such as "http:x" a local path where a demuxer resolves names
     * against ours. */
    url = av_asprintf("file:%s", path);
    AVFormatContext *f = avformat_alloc_context();
    if (!in->pb || !url || !f || av_dict_set(&o, "protocol_whitelist", "file", 0) < 0 ||
        (!in->allow_nested && av_dict_set(&o, "enable_drefs", "0", 0) < 0)) {
        avformat_free_context(f);
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    f->pb = in->pb;
    f->opaque = in;
    f->interrupt_callback.callback = interrupt;
    f->interrupt_callback.opaque = interrupt_ctx;
    /* One more than allowed, so a file just over the limit opens and is refused by count with a
     * clear message; far over it, the demuxer stops at the cap. */
    f->max_streams = MD_VIDEO_MAX_STREAMS + 1;
    if (!in->allow_nested) {
        f->io_open = guard_open;
        f->io_close2 = guard_close;
    }
    *fmt = f;
    t_capture = in->ffmpeg_error;
    t_capture_len = sizeof in->ffmpeg_error;
    t_capture_hits = &in->hits;

    ret = av_probe_input_buffer2(in->pb, &ifmt, url, f, 0, 0);
    if (ret < 0) {
        st = open_failed(in, ret, ret == AVERROR_EXIT && interrupt && interrupt(interrupt_ctx), err, errlen);
        goto out;
    }
    av_strlcpy(in->format, ifmt->name, sizeof in->format);
    if (!in->allow_nested && (why = nested_format(ifmt))) {
        st = md_errf(err, errlen, MD_ERR_MEDIA,
                     "refused: this file is %s, which opens other files or URLs; such files are not read", why);
        goto out;
    }
    /* A demuxer flagged AVFMT_NOFILE (image2) is found again from the bytes already buffered;
     * handing it over would only make FFmpeg warn that it ignores our AVIOContext. */
    ret = avformat_open_input(fmt, url, (ifmt->flags & AVFMT_NOFILE) ? NULL : ifmt, &o);
    if (ret < 0) { /* *fmt was freed (our AVIOContext not) */
        st = open_failed(in, ret, ret == AVERROR_EXIT && interrupt && interrupt(interrupt_ctx), err, errlen);
        goto out;
    }
    in->opened = 1;
    if (!in->allow_nested && (why = nested_format((*fmt)->iformat))) {
        st = md_errf(err, errlen, MD_ERR_MEDIA,
                     "refused: this file is %s, which opens other files or URLs; such files are not read", why);
        goto out;
    }
    if ((st = md_video_input_check(in, err, errlen)) != MD_OK || (st = check_limits(*fmt, err, errlen)) != MD_OK)
        goto out;
    /* The parameter search decodes a frame or two of streams whose headers leave their size
     * open (PNG, MPEG-TS); its decoders get our pixel limit, so a header claiming 16000 x 16000
     * is an error there, not a 746 MB frame. */
    n_so = (*fmt)->nb_streams;
    so = n_so ? av_calloc(n_so, sizeof *so) : NULL;
    if (n_so && !so) {
        st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (unsigned i = 0; i < n_so; i++)
        if (av_dict_set_int(&so[i], "max_pixels", MD_VIDEO_MAX_PIXELS, 0) < 0) {
            st = md_errf(err, errlen, MD_ERR_NOMEM, "out of memory");
            goto out;
        }
    ret = avformat_find_stream_info(*fmt, so);
    if (ret < 0) {
        int cancelled = ret == AVERROR_EXIT && interrupt && interrupt(interrupt_ctx);
        if (cancelled || ret == AVERROR(ENOMEM)) {
            st = md_video_open_error(ret, cancelled, err, errlen);
            goto out;
        }
        /* Parameters may still be complete enough; the callers' checks decide. */
        char reason[AV_ERROR_MAX_STRING_SIZE];
        av_strerror(ret, reason, sizeof reason);
        md_debug("%s: avformat_find_stream_info: %s", __func__, reason);
    }
    if ((st = md_video_input_check(in, err, errlen)) != MD_OK || (st = check_limits(*fmt, err, errlen)) != MD_OK)
        goto out;
    /* A picture whose header was too large for the search's decoders has no size now; say why
     * rather than "invalid dimensions 0x0". */
    if (in->hits & HIT_PIXELS) {
        unsigned w, h;
        if (sscanf(in->ffmpeg_error, "Picture size %ux%u", &w, &h) == 2)
            st = md_errf(err, errlen, MD_ERR_MEDIA, "picture dimensions %ux%u exceed the limit of %lld pixels", w, h,
                         MD_VIDEO_MAX_PIXELS);
        else
            st = md_errf(err, errlen, MD_ERR_MEDIA, "picture dimensions exceed the limit of %lld pixels (ffmpeg: %s)",
                         MD_VIDEO_MAX_PIXELS, in->ffmpeg_error);
        goto out;
    }
    if (size)
        *size = in->size;
    *out = in;
    in = NULL;
out:
    t_capture = saved_capture;
    t_capture_len = saved_capture_len;
    t_capture_hits = saved_hits;
    for (unsigned i = 0; i < n_so; i++)
        av_dict_free(&so[i]);
    av_free(so);
    av_dict_free(&o);
    av_free(url);
    if (st != MD_OK)
        md_video_input_close(in, fmt);
    return st;
}

void md_video_input_close(md_video_input *in, AVFormatContext **fmt)
{
    if (fmt && *fmt) {
        if (in && !in->opened) { /* not opened: avformat_close_input would close our AVIOContext */
            avformat_free_context(*fmt);
            *fmt = NULL;
        } else {
            avformat_close_input(fmt);
        }
    }
    if (!in)
        return;
    io_free(&in->pb);
    if (in->fd >= 0)
        close(in->fd);
    av_free(in);
}

/* ---- probing -------------------------------------------------------------------------------- */

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

/* libavformat polls this during blocking work, and our reads on every buffer fill; non-zero
 * makes it return AVERROR_EXIT. */
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
    if (pkt->duration > 0)
        ts = md_video_sat_add(ts, pkt->duration);
    return ts;
}

static long long ms_from(int64_t ts, AVRational tb)
{
    return (long long)av_rescale_q(ts, tb, (AVRational){1, 1000});
}

/* The gap test on packet times: they come in decode order, so the last REORDER of them are held
 * and released smallest first, in presentation order as the decoder will show them; two frames
 * in a row more than the hold apart are a gap (as in decode.c's sampler), from the end of the
 * first to the second. */
typedef struct gap_scan {
    int64_t ts[REORDER], end[REORDER];
    int n;
    int64_t prev, prev_end; /* the last frame released */
    int64_t hold;
    AVRational tb;
} gap_scan;

static void gap_pop(gap_scan *g, md_video_info *info)
{
    int m = 0;
    for (int i = 1; i < g->n; i++)
        if (g->ts[i] < g->ts[m])
            m = i;
    int64_t ts = g->ts[m], end = g->end[m];
    g->ts[m] = g->ts[--g->n];
    g->end[m] = g->end[g->n];
    if (g->prev != AV_NOPTS_VALUE && md_video_sat_sub(ts, g->prev) > g->hold) {
        info->n_gaps++;
        if (ts > g->prev_end)
            info->gap_ms += ms_from(md_video_sat_sub(ts, g->prev_end), g->tb);
    }
    if (g->prev == AV_NOPTS_VALUE || ts >= g->prev) {
        g->prev = ts;
        g->prev_end = FFMIN(end, md_video_sat_add(ts, g->hold)); /* a frame stands no longer */
    }
}

static void gap_push(gap_scan *g, md_video_info *info, int64_t ts, int64_t end)
{
    if (g->n == REORDER)
        gap_pop(g, info);
    g->ts[g->n] = ts;
    g->end[g->n++] = end != AV_NOPTS_VALUE && end > ts ? end : ts;
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
    return md_video_probe_ex(path, NULL, info, progress, ctx, err, errlen);
}

static void info_reset(md_video_info *info)
{
    memset(info, 0, sizeof *info);
    info->duration_ms = -1;
    info->data_duration_ms = -1;
}

md_status md_video_probe_ex(const char *path, const md_video_open_opts *opts, md_video_info *info,
                            md_video_progress_fn progress, void *ctx, char *err, size_t errlen)
{
    md_status st = MD_OK;
    probe_state ps = {.progress = progress, .ctx = ctx, .last_report = -1};
    md_video_input *in = NULL;
    AVPacket *pkt = NULL;
    int ret;

    if (err && errlen)
        err[0] = '\0';
    if (info)
        info_reset(info);
    if (!path || !info)
        return md_errf(err, errlen, MD_ERR_INVALID, "%s: path and info are required", __func__);

    if ((st = md_video_input_open(path, opts, interrupt_cb, &ps, &ps.fmt, &in, &ps.total, err, errlen)) != MD_OK)
        goto out;

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
    /* Gaps: a packet more than the hold after the latest one so far (B-frames are reordered by a
     * few frames only, so decode order is good enough for spans of a minute). */
    gap_scan gs = {.hold = FFMAX(1, av_rescale_q(MD_VIDEO_MAX_HOLD_MS, (AVRational){1, 1000}, vs->time_base)),
                   .tb = vs->time_base,
                   .prev = AV_NOPTS_VALUE};
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
            if (++consecutive >= MD_VIDEO_MAX_READ_ERRORS || report(&ps, (long long)avio_tell(fmt->pb), 0))
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
                if (ts != AV_NOPTS_VALUE && last_key_ts != AV_NOPTS_VALUE && ts > last_key_ts) {
                    long long gap = ms_from(md_video_sat_sub(ts, last_key_ts), vs->time_base);
                    if (gap > info->max_keyframe_gap_ms)
                        info->max_keyframe_gap_ms = gap;
                }
                if (ts != AV_NOPTS_VALUE)
                    last_key_ts = ts;
            }
            if (ts != AV_NOPTS_VALUE) {
                gap_push(&gs, info, ts, end);
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
    while (gs.n)
        gap_pop(&gs, info);
    if (!ps.cancelled && (st = md_video_input_check(in, err, errlen)) != MD_OK)
        goto out;
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
    if (first_ts != AV_NOPTS_VALUE && end_ts > first_ts)
        info->data_duration_ms = ms_from(md_video_sat_sub(end_ts, first_ts), vs->time_base);
    if (info->duration_ms < 0 && info->data_duration_ms > 0)
        info->duration_ms = info->data_duration_ms;
    /* Raw elementary streams carry no timestamps at all; one packet is one frame there. */
    if (info->duration_ms < 0 && info->fps > 0)
        info->duration_ms = (long long)((double)info->n_video_packets * 1000.0 / info->fps + 0.5);
    info->size_bytes = ps.total;
    /* The time that would be sampled: what the headers claim, or less when the data holds less,
     * without the gaps (they get no samples). */
    long long span = info->duration_ms;
    if (info->data_duration_ms >= 0 && (span < 0 || info->data_duration_ms < span))
        span = info->data_duration_ms;
    double sampled_h = (double)FFMAX(0, span - info->gap_ms) / 3.6e6;
    if (sampled_h > (double)info->size_bytes / 1e6 * MD_VIDEO_MAX_HOURS_PER_MB) {
        st = md_errf(err, errlen, MD_ERR_MEDIA,
                     "refused: the file claims %.1f h of video in %lld bytes, more than %d h per MB, which no "
                     "real recording has: its timestamps are broken or hostile",
                     sampled_h, info->size_bytes, MD_VIDEO_MAX_HOURS_PER_MB);
        goto out;
    }

out:
    av_packet_free(&pkt);
    md_video_input_close(in, &ps.fmt);
    if (st != MD_OK) {
        info_reset(info);
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
    /* An open in progress on this thread keeps FFmpeg's first error line for its message, and
     * notes the error lines of our limits (av_image_check_size2, avformat_new_stream). The
     * pixel line is the one to quote when both come. */
    if (level <= AV_LOG_ERROR && t_capture && t_capture_len && t_capture_hits) {
        char line[256];
        va_list cp;
        va_copy(cp, vl);
        vsnprintf(line, sizeof line, fmt, cp);
        va_end(cp);
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        int hit = strstr(line, "max pixel count") ? HIT_PIXELS : strstr(line, "max_streams") ? HIT_STREAMS : 0;
        if (!t_capture[0] || (hit == HIT_PIXELS && !(*t_capture_hits & HIT_PIXELS)))
            av_strlcpy(t_capture, line, t_capture_len);
        *t_capture_hits |= hit;
    }

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
#ifdef __GLIBC__
    /* Decoded frames (a 1080p frame is 3 MB) are allocated and freed by the decoder's threads,
     * each in a malloc arena of its own. glibc raises its mmap threshold to the largest block
     * freed, after which frames come from those arenas, and malloc_trim() cannot shrink the
     * top of an arena that is not the main one: every job left ~30 MB more resident, up to
     * ~80 MB for 1080p. A fixed threshold keeps large blocks mapped on their own, so closing a
     * decoder gives them back to the system. */
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
#endif
}
