/* video.h - the video module: probing files, and turning videos into the frames the encoder needs.
 *
 * Probing (probe.c) says what a file holds and whether it reads cleanly:
 *
 *     md_video_global_init();              // once, at start-up
 *     md_video_info info;
 *     char err[256];
 *     md_status st = md_video_probe("/data/clip.mp4", &info, NULL, NULL, err, sizeof err);
 *     if (st != MD_OK)
 *         md_warn("probe: %s: %s", md_status_str(st), err);
 *
 * A probe opens the file, reads its stream headers, then demuxes every packet once without
 * decoding, so it costs about one sequential read of the file. It never decodes frames itself
 * (avformat_find_stream_info may decode a few to learn stream parameters).
 *
 * Decoding (decode.c, with base/image.c) streams sampled, preprocessed frames in batches:
 *
 *     md_video_params p = md_video_default_params();      // 1 frame/s, 224 x 224, CLIP mean/std
 *     md_video_decoder *d;
 *     if (md_video_decoder_open(path, &p, &info, &d, err, sizeof err) != MD_OK) ...;
 *     long long total = md_video_decoder_expected(d);     // for progress, known up front
 *     md_video_batch b;
 *     while ((st = md_video_decoder_next(d, &b)) == MD_OK && b.n > 0)
 *         encode(b.pixels, b.n);                           // b.n x 3 x 224 x 224 floats
 *     md_video_decoder_close(d);
 *
 * A decoder works ahead of its caller on two threads of its own, started by the first
 * md_video_decoder_next(): one demuxes, decodes (with FFmpeg's frame threads) and picks frames,
 * the other converts picked frames to tensors; so decoding the next batch overlaps with whatever
 * the caller does with this one (encoding it). Memory is bounded whatever the length of the video:
 * two batches of tensors, four picked frames waiting for conversion, FFmpeg's frames in flight and
 * one RGB picture.
 *
 * Thread-safety: probes, decoders and md_video_load_image() calls are independent and may run
 * concurrently on any threads; they share no state. One decoder is used by one caller thread at a
 * time. md_video_global_init() must run once before any of them starts.
 *
 * Hostile files: every entry point (probe, decoder, picture) opens the file itself, once, as a
 * read-only descriptor that FFmpeg reads through; FFmpeg may open nothing else: playlists,
 * manifests, concat lists and other formats that name further files or URLs (hls, dash, concat,
 * imf, sdp, ...) are refused before they are parsed, a name is always one file (image2 patterns
 * such as "%03d" are never expanded), and any other attempt to open a file while reading
 * (external references, sibling files) refuses the whole file. md_video_open_opts.allow_nested
 * lifts that for trusted local archives. Size, stream and timeline limits are checked before a
 * decoder or buffer is allocated for them (the MD_VIDEO_MAX_* limits below), and a gap in the
 * timestamps costs no work: it produces no samples, however long it claims to be.
 *
 * Nothing outside video/ should include FFmpeg headers; this header deliberately does not.
 */
#ifndef MD_VIDEO_H
#define MD_VIDEO_H

#include "../base/image.h"
#include "../base/status.h"

#include <stddef.h>
#include <stdint.h>

/* ---- limits on what a file may ask for (each defined here only) ------------------------------ */

/* Largest coded picture accepted anywhere (probe, decoder, picture queries), checked on the
 * container's parameters before any decoder opens and given to FFmpeg's own decoders as their
 * max_pixels, so not even the parameter search of a probe allocates a larger frame: 8192 x 8192
 * (64 Mpx) is twice 8K UHD (7680 x 4320, 33 Mpx), and one RGB copy of it is already 192 MiB.
 * A 69-byte PNG can claim 16000 x 16000; it costs nothing. */
#define MD_VIDEO_MAX_PIXELS (8192LL * 8192LL)
/* Largest width or height: the largest any video codec level defines (HEVC/AV1 level 6.x,
 * 16384 wide), so a 100000 x 10 "video" is refused although its pixel count is small. */
#define MD_VIDEO_MAX_DIM 16384
/* Most streams a file may have. Real files have one video and a few audio/subtitle streams (a
 * multi-language film ~20); FFmpeg's parameter search opens a decoder for every stream, so a
 * 1000-stream file of 1 MB held 1.5 GB. More is refused (FFmpeg's max_streams stops the demuxer
 * from even creating them). */
#define MD_VIDEO_MAX_STREAMS 64
/* A frame stands for at most this long: when the next frame comes later, the distance is a gap
 * in the timestamps, and the targets in it get no sample (a frame then covers only its own
 * duration). Real variable-frame-rate recordings hold a static screen for seconds; a camera
 * paused overnight or a hostile file claiming 10,000 hours between two frames is a gap. Gaps are
 * counted in md_video_decode_stats and md_video_info. */
#define MD_VIDEO_MAX_HOLD_MS 60000
/* Most sampled time per megabyte a file may claim, gaps not counted: 100 hours per MB is 23 bit/s,
 * 40 times below the sparsest real recordings (a static 160 x 120 screen capture at 1 frame/s
 * still costs ~1 kbit/s). A file claiming more is refused by the probe: its timestamps are broken
 * or hostile, and honouring them would cost hours of encoding per kilobyte. */
#define MD_VIDEO_MAX_HOURS_PER_MB 100

/* How a file may be opened; NULL or zeroed means the safe default. Plain data. */
typedef struct md_video_open_opts {
    /* 0 (default): refuse every file that makes FFmpeg open other files or URLs: playlists and
     * manifests (hls, dash), concat lists, IMF compositions, stream descriptions (sdp, rtsp),
     * demuxers that open their input by name themselves, and any file that asks for another file
     * while it is read (mov external data references, sibling files): MD_ERR_MEDIA "refused:
     * ...". 1: a trusted archive: such files may open other local files (the "file" protocol
     * only, as always); image2 patterns are still never expanded. */
    int allow_nested;
} md_video_open_opts;

typedef struct md_video_info {
    long long duration_ms; /* -1 when unknown; from the headers, else the scanned timestamps,
                              else packets / fps for raw streams without timestamps */
    int width, height;     /* coded size of the chosen video stream */
    double fps;            /* average frame rate, 0 when unknown */
    int rotation;          /* degrees clockwise from the display matrix, 0/90/180/270 */
    char codec[32];        /* e.g. "h264" */
    char format[64];       /* container short name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" */
    int n_streams;         /* all streams of the container */
    int n_video_streams;   /* video streams, cover art (attached pictures) not counted */
    int n_audio_streams;
    int stream_index;      /* container index of the chosen video stream */
    long long n_video_packets;   /* packets of the chosen stream seen by the scan */
    long long n_corrupt_packets; /* packets of any stream flagged AV_PKT_FLAG_CORRUPT, plus read
                                    errors skipped */
    int truncated;         /* 1 when the scan ended on read errors, or the container's index
                              lists more packets of the chosen stream than could be read */
    long long size_bytes;
    long long n_keyframes;         /* key packets of the chosen stream seen by the scan */
    long long max_keyframe_gap_ms; /* largest distance between consecutive keyframes; 0 with fewer
                                      than two */
    long long data_duration_ms;    /* what the file really holds: from the chosen stream's first
                                      packet to the end of its last one as read by the scan (for a
                                      truncated file, the part that can be indexed; with gaps, the
                                      gaps included); -1 without timestamps or without a scan */
    long long n_gaps;              /* gaps in the chosen stream's timestamps: consecutive packets
                                      more than MD_VIDEO_MAX_HOLD_MS apart */
    long long gap_ms;              /* their total length: time without frames, never sampled */
} md_video_info;

/* Progress callback: done/total in bytes of the file read so far; return non-zero to cancel.
 * Called on the probing thread; done never decreases and never exceeds total. */
typedef int (*md_video_progress_fn)(void *ctx, long long done, long long total);

/* Opens PATH (read-only, by itself: see "Hostile files" above) with libavformat, picks the best
 * video stream (av_find_best_stream), fills INFO,
 * then demuxes every packet once (no decoding) to count packets and detect truncation/corruption,
 * calling PROGRESS (may be NULL) at most every ~50 ms and at the end. The first call comes as soon
 * as reading starts, so a caller that has already cancelled is told so without waiting.
 *
 * FFmpeg may open no other file or URL (md_video_open_opts), and never a network URL.
 *
 * A file whose index is intact but whose data is cut short succeeds with truncated = 1 and
 * data_duration_ms the part that can be indexed (duration_ms stays what the headers claim): the
 * packets that could be read are counted, and packets cut short or read errors are counted in
 * n_corrupt_packets; after many consecutive read errors the scan stops early. A file whose
 * headers are missing is MD_ERR_MEDIA: "truncated or incomplete MP4 (no moov atom)" for an mp4 cut
 * before its index.
 *
 * Errors (never crash, never abort): MD_ERR_INVALID (NULL path or info), MD_ERR_NOT_FOUND (missing
 * file), MD_ERR_MEDIA with a human message in ERR such as "not a video file: <ffmpeg reason>" /
 * "no video stream (audio only: 1 audio stream)" / "empty file" / "video has invalid dimensions
 * 0x0" / "video dimensions WxH exceed the limit of N pixels" (MD_VIDEO_MAX_PIXELS, _MAX_DIM) /
 * "refused: ..." (a file that opens other files, more than MD_VIDEO_MAX_STREAMS streams, more
 * sampled time than MD_VIDEO_MAX_HOURS_PER_MB allows), MD_ERR_CANCELLED when PROGRESS returned non-zero (including on its final call),
 * MD_ERR_NOMEM, MD_ERR_IO (permission denied, read failure). ERR (size ERRLEN; may be NULL when
 * ERRLEN is 0) always gets a NUL-terminated message on failure, truncated to fit, and is set to ""
 * on success. INFO is always fully written: zeroed with duration_ms = -1 on failure. */
md_status md_video_probe(const char *path, md_video_info *info, md_video_progress_fn progress,
                         void *ctx, char *err, size_t errlen);

/* md_video_probe() with open options (NULL: the defaults, what md_video_probe() uses). */
md_status md_video_probe_ex(const char *path, const md_video_open_opts *opts, md_video_info *info,
                            md_video_progress_fn progress, void *ctx, char *err, size_t errlen);

/* Routes FFmpeg's own log output through md_log at warning level and above; call once at start-up,
 * before any thread uses FFmpeg. Messages beyond ~20 a second are dropped and counted, so a badly
 * damaged file cannot flood the log. It also lets an open that fails quote FFmpeg's own reason
 * (e.g. "ffmpeg: moov atom not found") in its message. Process-wide side effect (glibc): blocks
 * of 1 MiB and more are mapped on their own (mallopt M_MMAP_THRESHOLD), so the frames a decoder
 * frees go back to the system at close instead of staying in its threads' malloc arenas. */
void md_video_global_init(void);

/* ---- decoding, sampling, preprocessing ----------------------------------------------------- */

#define MD_VIDEO_MAX_SIZE MD_IMAGE_MAX_SIZE /* largest output size S (base/image.h) */
/* The fastest sampling the decoder accepts (_FPS wants fps in (0, MD_VIDEO_FPS_MAX]): beyond it a
 * sample interval is under a millisecond, finer than the times it reports. */
#define MD_VIDEO_FPS_MAX 1000

/* Which frames a decoder delivers. Times are the video stream's presentation times relative to
 * its start (the first frame is at 0 ms). */
typedef enum md_video_sampling {
    /* One frame per 1/fps seconds: for each target time t_k = k / fps (k = 0, 1, ...) before the
     * end of the video, the frame shown at t_k, i.e. the last frame whose presentation time is
     * <= t_k (the first frame for targets before it). A frame is delivered again for every
     * target it covers (sampling faster than the video's frame rate repeats frames), but for no
     * longer than MD_VIDEO_MAX_HOLD_MS: targets in a gap get nothing (see md_video_decode_stats). */
    MD_VIDEO_SAMPLE_FPS = 0,
    /* Every decoded frame, in presentation order. */
    MD_VIDEO_SAMPLE_ALL,
    /* COUNT frames evenly over the duration D: the frame shown at t_k = (k + 0.5) * D / COUNT,
     * the middle of each of COUNT equal spans; fewer when some t_k fall in gaps. */
    MD_VIDEO_SAMPLE_COUNT
} md_video_sampling;

/* Return non-zero to stop: md_video_decoder_next() then returns MD_ERR_CANCELLED. Called every few
 * milliseconds (between packets, and while FFmpeg blocks on reading) from the decoder's own
 * decoding thread, and from the caller's thread inside md_video_decoder_open(): it must be
 * thread-safe. */
typedef int (*md_video_interrupt_fn)(void *ctx);

typedef struct md_video_params {
    md_video_sampling sampling; /* MD_VIDEO_SAMPLE_FPS */
    double fps;                 /* frames per second of video for _FPS: 1.0, in (0, MD_VIDEO_FPS_MAX] */
    int count;                  /* frames for _COUNT: 16, in [1, 1000000] */
    /* Fast archive mode for _FPS and _COUNT: decode keyframes only, when the video has at least
     * as many keyframes as samples (its mean keyframe interval is at most the sample interval);
     * otherwise decoding stays exact and md_video_decoder_keyframe_mode() says 0. Each target then
     * gets the last keyframe at or before it, delivered with that keyframe's own time and
     * keyframe_only = 1: the time error is below the largest keyframe gap
     * (md_video_info.max_keyframe_gap_ms), and only one frame in every GOP is decoded. Only
     * when that gap is at most MD_VIDEO_MAX_HOLD_MS and the timestamps have no gaps. */
    int keyframes_only;        /* 0 */
    int size;                  /* output size S: 224, in [1, MD_VIDEO_MAX_SIZE] */
    float mean[3], std[3];     /* CLIP's: 0.48145466, 0.4578275, 0.40821073 / 0.26862954,
                                  0.26130258, 0.27577711; std must be > 0 */
    int threads;               /* decoding threads: 0 = FFmpeg picks (one per core), else 1..64 */
    int batch;                 /* frames per batch: 16, in [1, 1024] */
    long long max_pixels;      /* larger coded frames are refused: MD_VIDEO_MAX_PIXELS, in
                                  [1, MD_VIDEO_MAX_PIXELS] */
    md_video_interrupt_fn interrupt; /* NULL: never interrupted */
    void *interrupt_ctx;
    md_video_open_opts open;   /* how the file may be opened: zeroed, the safe default */
} md_video_params;

md_video_params md_video_default_params(void);

typedef struct md_video_frame {
    long long ts_ms;     /* presentation time of the delivered frame (rounded to ms; may be < 0
                            for a frame shown before the stream's start time) */
    long long target_ms; /* the sampling time it was chosen for (= ts_ms for _ALL) */
    int keyframe_only;   /* 1 in keyframe mode: the last keyframe at or before target_ms, not
                            the exact frame shown then */
} md_video_frame;

/* Borrowed from the decoder until the next md_video_decoder_next() or close. */
typedef struct md_video_batch {
    int n;                        /* frames in the batch; 0 once the video is done */
    int size;                     /* S */
    long long first_index;        /* sample number of frames[0], counting from 0 */
    const float *pixels;          /* n x 3 x S x S float32: per frame planar R, G, B planes of
                                     S rows of S, CLIP-normalised, frames contiguous */
    const md_video_frame *frames; /* n entries */
} md_video_batch;

typedef struct md_video_decode_stats {
    long long packets;         /* packets of the video stream read */
    long long keyframes;       /* of which keyframes */
    long long skipped_packets; /* damaged packets skipped: read errors, and packets the decoder
                                  rejected (what could be decoded still was) */
    long long corrupt_packets; /* packets the demuxer flagged corrupt (still decoded) */
    long long corrupt_frames;  /* frames the decoder concealed errors in (still delivered) */
    long long frames_decoded;
    long long frames_delivered;
    long long frames_refused;  /* decoded frames refused: size changed to beyond max_pixels */
    long long gaps;            /* gaps between consecutive decoded frames (more than
                                  MD_VIDEO_MAX_HOLD_MS apart, or the first frame that far after
                                  the start): no samples were taken in them */
    long long gap_ms;          /* their total length, from the end of the frame before each gap
                                  to the next frame */
    long long end_ms;          /* end of the last decoded frame (its time plus its duration), ms
                                  from the start: the length actually indexed; -1 before the
                                  first frame */
    int truncated;             /* 1 when the video stops short of its stated duration: read
                                  errors at the end, the probe said so, or the last frame ends
                                  more than max(1 s, 5 %) before that duration */
} md_video_decode_stats;

typedef struct md_video_decoder md_video_decoder;

/* Opens PATH with libavformat (as md_video_probe does, with PARAMS->open), picks the best
 * video stream and sets up its decoder (frame and slice threads). PROBED is optional: the result
 * of md_video_probe() on the same file, used for the duration when the headers give none, the
 * packet count of _ALL and the keyframe count of keyframe mode; without it open runs that probe
 * itself when it needs one. PARAMS NULL means md_video_default_params().
 *
 * On success *OUT owns the open file; release it with md_video_decoder_close(). Errors (ERR gets a
 * message, *OUT is NULL): MD_ERR_INVALID (bad arguments or parameters, named in ERR), and for
 * the file the same statuses and messages as md_video_probe(), plus MD_ERR_MEDIA "video
 * dimensions WxH exceed the limit of N pixels", MD_ERR_UNSUPPORTED when no decoder exists for
 * the codec, MD_ERR_MEDIA "duration unknown" for _COUNT on a file whose duration cannot be
 * found, MD_ERR_CANCELLED when PARAMS->interrupt stopped it. */
md_status md_video_decoder_open(const char *path, const md_video_params *params, const md_video_info *probed,
                                md_video_decoder **out, char *err, size_t errlen);

/* What the decoder knows of the file: PROBED's copy when given, else the headers (the scan-only
 * fields are then 0). Borrowed until close. */
const md_video_info *md_video_decoder_info(const md_video_decoder *d);

/* Frames the decoder expects to deliver, known at open: the targets before the end for _FPS,
 * COUNT for _COUNT, the stream's frame count (or duration x frame rate) for _ALL; -1 when the
 * duration cannot be known. With a probe's md_video_info (PROBED, or the decoder's own scan) _FPS
 * counts only the time the data covers: at most data_duration_ms, less the gaps; so a small file
 * whose timestamps claim hours expects a few frames. A damaged or truncated file delivers fewer;
 * a file whose headers understate its length may deliver more. */
long long md_video_decoder_expected(const md_video_decoder *d);

/* 1 when keyframe-only decoding is in use (see md_video_params.keyframes_only). */
int md_video_decoder_keyframe_mode(const md_video_decoder *d);

/* Fills *BATCH with the next frames, up to params.batch of them (fewer only in the last batch);
 * BATCH->n == 0 (and MD_OK) once the video is done. Blocks until a batch is ready; the previous
 * batch's memory goes back to the decoder. Damaged data is skipped and counted
 * (md_video_decoder_stats), never an error. Errors: MD_ERR_CANCELLED (interrupted), MD_ERR_NOMEM,
 * MD_ERR_UNSUPPORTED (a frame format libswscale cannot convert), MD_ERR_MEDIA "no decodable frames
 * ..." when the whole video held none; after an error BATCH->n is 0, batches not yet taken are
 * dropped, the message is in md_video_decoder_error() and further calls return the same error. */
md_status md_video_decoder_next(md_video_decoder *d, md_video_batch *batch);

/* Counts so far; final once md_video_decoder_next() has returned the end or an error. */
void md_video_decoder_stats(const md_video_decoder *d, md_video_decode_stats *stats);

/* The last error message, "" when none. Borrowed until close. */
const char *md_video_decoder_error(const md_video_decoder *d);

/* Stops and joins the decoder's threads, frees everything and hands the freed memory back to the
 * system (malloc_trim where glibc has it; with md_video_global_init() large frames are unmapped as
 * they are freed); NULL is a no-op. Safe at any point, also mid-video. */
void md_video_decoder_close(md_video_decoder *d);

/* Decodes the first frame of any picture or video FFmpeg reads (PNG, JPEG, WebP, a video's first
 * frame, ...), turns it upright by its display matrix, and preprocesses it exactly as the decoder
 * does into OUT_CHW (3 x SIZE x SIZE floats, caller-owned). MEAN/STD NULL mean CLIP's. Alpha is
 * composited onto white, as CLIPImageProcessor does. The file is opened with the default
 * md_video_open_opts (nothing else may be opened), pictures beyond MD_VIDEO_MAX_PIXELS are refused
 * before anything is decoded, and at most a few thousand packets are read looking for a frame.
 * Errors as md_video_decoder_open(), plus MD_ERR_MEDIA "no decodable frame". */
md_status md_video_load_image(const char *path, int size, const float mean[3], const float std[3], float *out_chw,
                              char *err, size_t errlen);

/* md_video_load_image() with open options (NULL: the defaults). */
md_status md_video_load_image_ex(const char *path, const md_video_open_opts *opts, int size, const float mean[3],
                                 const float std[3], float *out_chw, char *err, size_t errlen);

#endif
