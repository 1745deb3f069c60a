/* fuzz_temporal.c - libFuzzer target: md_temporal_load (temporal.safetensors: safetensors with
 * Mamba tensor names and __metadata__ settings) on arbitrary bytes.
 *
 * A file that loads must describe a sane encoder (the config inside mamba.h's limits, no
 * non-finite weight), and the encoder must run: a stream of three frames of two tokens, in
 * windows of 4 frames and segments of 2, gives segments of width d_model. Whether their values
 * are finite is not checked (finite weights can still overflow); that no read or write goes
 * astray for any shape the metadata allows is. A refused file needs a message. */
#include "fuzz_common.h"

#include "../../engine/temporal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    char path[64], err[512] = "";
    md_temporal *t = NULL;
    md_status rc = md_temporal_load(fz_memfile(&fd, path, data, size), &t, err, sizeof err);
    fz_report(rc, err);
    if (rc != MD_OK) {
        FZ_ASSERT(t == NULL && err[0]);
        return 0;
    }
    const md_temporal_info *in = md_temporal_get_info(t);
    const md_mamba_config *c = &in->cfg;
    FZ_ASSERT(c->d_model >= 1 && c->d_model <= MD_MAMBA_MAX_D_MODEL);
    FZ_ASSERT(c->n_layers >= 0 && c->n_layers <= MD_MAMBA_MAX_LAYERS);
    FZ_ASSERT(c->d_state >= 1 && c->d_state <= MD_MAMBA_MAX_D_STATE && c->d_conv >= 1 && c->d_conv <= MD_MAMBA_MAX_D_CONV);
    FZ_ASSERT(c->expand >= 1 && c->expand <= MD_MAMBA_MAX_EXPAND && c->dt_rank >= 1);
    FZ_ASSERT(strlen(in->sha256) == 64);

    md_temporal_params p;
    md_temporal_params_default(&p, 2);
    p.window_frames = 4;
    p.segment_frames = 2;
    md_temporal_stream *s = NULL;
    FZ_ASSERT(md_temporal_stream_new(t, &p, &s, err, sizeof err) == MD_OK);
    const size_t per_frame = 2 * (size_t)c->d_model;
    float *tok = malloc(3 * per_frame * sizeof *tok);
    FZ_ASSERT(tok);
    for (size_t i = 0; i < 3 * per_frame; i++)
        tok[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f; /* fixed values in [-1, 1] */
    const int64_t pts[3] = {0, 1000, 2000};
    md_segments out = {0};
    FZ_ASSERT(md_temporal_stream_push(s, 0, tok, pts, 3, &out) == MD_OK);
    FZ_ASSERT(md_temporal_stream_finish(s, &out) == MD_OK);
    FZ_ASSERT(out.n == 2 && out.dim == c->d_model);
    FZ_ASSERT(out.seg[0].start_ms == 0 && out.seg[1].start_ms == 2000 && out.seg[1].end_ms == 3000);
    md_segments_free(&out);
    md_temporal_stream_free(s);
    free(tok);
    md_temporal_free(t);
    return 0;
}
