/* temporal.h - momentd's temporal encoder: temporal.safetensors, the STORM arrangement of CLIP
 * tokens, token reduction to segment embeddings, and streaming with resumable checkpoints.
 *
 * Arrangement (STORM, "Token-Efficient Long Video Understanding for Multimodal LLMs"): the
 * projected CLIP tokens of a window of T frames (per frame 1 CLS + P patch tokens of width D, the
 * CLIP projection dim, as md_clip_embed_images returns them: ln_post + visual projection on every
 * token, not normalised) are flattened frame-major (frame 0's CLS, its patches row-major, frame
 * 1's CLS, ...) into one sequence of T (1 + P) tokens and run through the encoder of mamba.h
 * (L bidirectional Mamba-1 blocks, x <- x + BiMamba(LN(x)), optional final LN).
 *
 * Token reduction, per frame f of the encoder's output:
 *   v_f = l2n(CLS_f) + patch_weight * l2n(mean over f's P patch tokens)   (spatial pooling)
 * per segment of k consecutive frames (test-time temporal sampling with stride s keeps the frames
 * at offsets 0, s, 2s, ... < k of the segment; s = 1 keeps all):
 *   e = l2n(mean of the kept v_f)                                          (temporal pooling)
 * where l2n(v) = v / ||v||_2 (a zero vector stays zero). With patch_weight 0 (the default) and the
 * identity encoder (out_proj zero, no norm_f) the CLS tokens come out unchanged, so e is exactly
 * the L2-normalised mean of the frames' CLIP image embeddings (CLIP's image_embeds are l2n of the
 * projected CLS token): CLIP mean pooling. Patch tokens are off by default because CLIP never
 * trained them into the joint space; a trained encoder may want them (patch_weight > 0).
 * Segment times: start = its first frame's timestamp; end = the next segment's start, or for the
 * last segment of the video its last frame's timestamp + frame_interval_ms. So segments are
 * contiguous and cover the sampled video.
 *
 * Storage: one D-dim vector per k frames instead of k (1 + P) D numbers: at ViT-B/32 (P = 49) and
 * k = 4, 200x fewer numbers than the raw tokens; at 1 frame/s, 900 segments of 512 fp16 numbers:
 * 0.9 MB per hour of video (the raw tokens would be 184 MB).
 *
 * Windows and streaming. Frames are pushed as they are decoded. A window of T frames is encoded
 * once the frame after it has arrived (its timestamp ends the window's last segment); the window
 * commits its first T - overlap frames (emits their segments) and the next window starts at the
 * first frame not committed, so the last `overlap` frames are look-ahead context for the backward
 * scan and are encoded again by the next window. What carries over between windows, per layer,
 * is the forward direction's conv window and SSM state after the committed frames (mamba.h); the
 * backward direction is window-local. md_temporal_stream_finish() encodes what is left (at most
 * T frames) as a last window that commits everything. A stream's result therefore depends on T
 * and overlap (not on how frames are batched into pushes); with the identity encoder it does not
 * depend on them at all.
 *
 * Checkpoints: md_temporal_stream_save() serialises what a restarted job needs to continue exactly
 * where the committed segments end: the carried state, the number of committed frames and
 * segments, the last committed timestamp, the parameters and the weights' hash. Frames pushed but
 * not committed are not in it: after md_temporal_stream_restore() the caller pushes again from
 * frame md_temporal_stream_next_frame(). Save right after committing the segments a push returned
 * and store both in one transaction; restoring then gives the same segments as an uninterrupted
 * run. Blob layout (native byte order, little-endian on every supported machine):
 *   "MDTSTATE" | u32 version 1 | u32 reserved 0 | 12 x i32: d_model n_layers d_inner d_state
 *   d_conv dirs tokens_per_frame T overlap k s zero | f32 patch_weight | u32 zero | char[64]
 *   weights sha256 hex | i64 next_frame next_segment last_pts_ms | u64 nfloats | f32[nfloats]
 *   conv then ssm state (mamba.h layout) | 32-byte SHA-256 of everything before it
 *
 * temporal.safetensors (F32, F16 or BF16 tensors; i = 0 .. n_layers - 1):
 *   layers.{i}.norm.weight, layers.{i}.norm.bias                 [d_model]
 *   layers.{i}.mixer.in_proj.weight                              [2 d_inner, d_model]
 *   layers.{i}.mixer.in_proj.bias            (optional)          [2 d_inner]
 *   layers.{i}.mixer.conv1d.weight                               [d_inner, 1, d_conv]
 *   layers.{i}.mixer.conv1d.bias                                 [d_inner]
 *   layers.{i}.mixer.x_proj.weight                               [dt_rank + 2 d_state, d_inner]
 *   layers.{i}.mixer.dt_proj.weight                              [d_inner, dt_rank]
 *   layers.{i}.mixer.dt_proj.bias                                [d_inner]
 *   layers.{i}.mixer.A_log                                       [d_inner, d_state]
 *   layers.{i}.mixer.D                                           [d_inner]
 *   backward direction (bidirectional models): layers.{i}.mixer.conv1d_b.weight, conv1d_b.bias,
 *     x_proj_b.weight, dt_proj_b.weight, dt_proj_b.bias, A_b_log, D_b (shapes as above)
 *   layers.{i}.mixer.out_proj.weight                             [d_model, d_inner]
 *   layers.{i}.mixer.out_proj.bias           (optional)          [d_model]
 *   norm_f.weight, norm_f.bias               (optional)          [d_model]
 * __metadata__ (strings): required d_model, n_layers, d_state, d_conv, expand (decimal integers);
 * optional dt_rank (default ceil(d_model / 16)), bidirectional ("1"/"0", must agree with the
 * tensors), norm_eps (default 1e-5), trained ("1" only for trained weights), format
 * ("momentd-temporal"), version, description. Optional parts are decided by layer 0 and norm_f
 * (bias present or not, backward tensors present or not) and every layer must agree. Every
 * tensor is checked against the metadata's shapes; a missing, misshaped, extra or non-finite
 * tensor, a missing or malformed metadata value, or a damaged file is MD_ERR_INVALID with a
 * message naming the file and the tensor or key.
 *
 * Note on the final norm: DESIGN.md lists a final LayerNorm, but a LayerNorm is never the identity
 * (it re-centres every token), so a fresh encoder (md_temporal_init_write) has none and is then
 * exactly the identity; files that carry norm_f apply it.
 *
 * Thread-safety: an md_temporal is read-only after loading and may be shared by any number of
 * streams on any threads; one stream is used by one thread at a time.
 */
#ifndef MD_TEMPORAL_H
#define MD_TEMPORAL_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"
#include "../base/status.h"

typedef struct md_temporal md_temporal;

typedef struct md_temporal_info {
    md_mamba_config cfg;
    int identity;       /* the encoder maps tokens to themselves: segments are CLIP mean pooling */
    int trained;        /* the file's metadata says "trained": "1" */
    char sha256[65];    /* provenance: SHA-256 of the file (of the f32 weights for md_temporal_from_model) */
    char description[128];
} md_temporal_info;

/* Loads and validates PATH (see the top of this file). *OUT is the caller's (md_temporal_free).
 * MD_ERR_NOT_FOUND, MD_ERR_IO, MD_ERR_INVALID, MD_ERR_NOMEM, with a message in ERR. */
md_status md_temporal_load(const char *path, md_temporal **out, char *err, size_t errlen);
/* Wraps an in-memory model (takes ownership of M, prepares it). */
md_status md_temporal_from_model(md_mamba *m, md_temporal **out);
void md_temporal_free(md_temporal *t);
const md_temporal_info *md_temporal_get_info(const md_temporal *t);
/* The encoder itself; borrowed until md_temporal_free. Not const so tests and benchmarks can set
 * force_compute before any stream runs. */
md_mamba *md_temporal_model(md_temporal *t);

/* Writes M's weights as temporal.safetensors (F32) to PATH (via PATH.tmp + rename), with the
 * metadata above; TRAINED and DESCRIPTION (may be NULL) go into it as given. */
md_status md_temporal_write(const char *path, const md_mamba *m, int trained, const char *description, char *err,
                            size_t errlen);
/* Writes a fresh encoder for C to PATH: Mamba's initialisation (seeded by SEED: in_proj / x_proj
 * / conv uniform in +-1/sqrt(fan_in), dt_proj.weight in +-dt_rank^-0.5, dt_proj.bias the inverse
 * softplus of dt log-uniform in [1e-3, 1e-1], A_log = log(1..d_state), D = 1, norms 1 and 0) with
 * out_proj zero, no biases and no final norm, so the encoder is exactly the identity; metadata
 * trained "0". C's biases / final_norm are ignored. What `momentd init-temporal` runs. */
md_status md_temporal_init_write(const char *path, const md_mamba_config *c, uint64_t seed, char *err,
                                 size_t errlen);

/* What md_temporal_params_check accepts: a window of at most MD_TEMPORAL_WINDOW_MAX frames of at
 * most MD_TEMPORAL_TOKENS_MAX tokens each (their product is capped too, so the scan's buffers stay
 * within int indexing). The library's settings stay inside (engine/momentd.h, limits.c). */
#define MD_TEMPORAL_WINDOW_MAX 4096
#define MD_TEMPORAL_TOKENS_MAX 4096

typedef struct md_temporal_params {
    int tokens_per_frame;      /* 1 + P: 50 for ViT-B/32 at 224 px; 1..MD_TEMPORAL_TOKENS_MAX */
    int window_frames;         /* T, default 32; 1..MD_TEMPORAL_WINDOW_MAX */
    int overlap_frames;        /* look-ahead frames re-encoded by the next window, default 0 */
    int segment_frames;        /* k, default 4; (T - overlap) must be a multiple of k */
    int sample_stride;         /* s in 1..k, default 1 (all frames of a segment) */
    float patch_weight;        /* weight of the pooled patch tokens, default 0 (CLS only) */
    int64_t frame_interval_ms; /* ends the video's last segment; 0: the spacing of the last two
                                  frames (0 for a one-frame video) */
} md_temporal_params;

/* The defaults above for TOKENS_PER_FRAME. */
void md_temporal_params_default(md_temporal_params *p, int tokens_per_frame);
md_status md_temporal_params_check(const md_temporal_params *p, char *err, size_t errlen);

typedef struct md_segment {
    int64_t index;       /* ordinal in the video, from 0 */
    int64_t first_frame; /* frames [first_frame, first_frame + n_frames) of the stream */
    int n_frames;
    int64_t start_ms, end_ms;
} md_segment;

/* A growing list of segments; zero-initialise it ({0}). Row i of emb ([n, dim]) is seg[i]'s
 * L2-normalised embedding. md_temporal_stream_push/finish append to it. */
typedef struct md_segments {
    int n, cap, dim;
    md_segment *seg;
    float *emb;
} md_segments;
void md_segments_clear(md_segments *s); /* n = 0, keeps the memory */
void md_segments_free(md_segments *s);  /* frees the arrays; S itself is the caller's */

typedef struct md_temporal_stream md_temporal_stream;

/* A stream over one video with T's encoder (borrowed until the stream is freed) and parameters P
 * (checked; P->tokens_per_frame * d_model floats per frame). *OUT is the caller's. */
md_status md_temporal_stream_new(md_temporal *t, const md_temporal_params *p, md_temporal_stream **out, char *err,
                                 size_t errlen);
void md_temporal_stream_free(md_temporal_stream *s);

/* Pushes N frames: TOKENS [n, tokens_per_frame, d_model] (frame-major, CLS first) and their
 * timestamps PTS_MS [n] (strictly increasing across the whole stream). FIRST_FRAME must be the
 * stream's next frame index (0 for a new stream, md_temporal_stream_next_frame() after a restore,
 * then counting on): a gap or a repeat is MD_ERR_INVALID, so a resumed job can neither skip nor
 * duplicate. Encodes every window that became complete and appends its segments to OUT.
 * MD_ERR_INVALID (bad index or timestamps, message in the stream's last error), MD_ERR_NOMEM. */
md_status md_temporal_stream_push(md_temporal_stream *s, int64_t first_frame, const float *tokens,
                                  const int64_t *pts_ms, int n, md_segments *out);
/* End of the video: encodes the remaining frames as the last window and appends its segments. */
md_status md_temporal_stream_finish(md_temporal_stream *s, md_segments *out);
/* The index of the first frame not committed: where pushing resumes after a restore. */
int64_t md_temporal_stream_next_frame(const md_temporal_stream *s);
/* Frames pushed so far (committed or buffered) and segments emitted. */
int64_t md_temporal_stream_frames_pushed(const md_temporal_stream *s);
int64_t md_temporal_stream_segments(const md_temporal_stream *s);
/* The last error message of S ("" when none); valid until the next call on S. */
const char *md_temporal_stream_error(const md_temporal_stream *s);

/* Checkpoint (layout at the top). *BLOB (malloc'd, *LEN bytes) is the caller's to free(). */
md_status md_temporal_stream_save(const md_temporal_stream *s, void **blob, size_t *len);
/* Replaces S's state with BLOB's; S must have been made with the same weights (hash) and
 * parameters. Drops any buffered frames. MD_ERR_INVALID (damaged blob) or MD_ERR_CONFLICT (other
 * weights or parameters), message in ERR (may be NULL) and in md_temporal_stream_error(). S is
 * unchanged on failure. */
md_status md_temporal_stream_restore(md_temporal_stream *s, const void *blob, size_t len, char *err, size_t errlen);

#endif
