/* nolibav.c - what the GPU bundle's programs need from video/ besides preprocess.c, for a build
 * linked without FFmpeg (tests/gpu/bundle.sh): CLIP's normalisation constants, the values of
 * video/decode.c (which cannot be linked without libavcodec). */
const float md_video_clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float md_video_clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
