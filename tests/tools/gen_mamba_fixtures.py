#!/usr/bin/env python3
"""gen_mamba_fixtures.py - small random temporal encoders + reference outputs for test_mamba.

Uses mamba_ref.py (float64 PyTorch, written from the Mamba paper and selective_scan_ref's
semantics). Every weight is random and non-zero. Writes to tests/fixtures/mamba/:

  block.safetensors       a valid temporal.safetensors: d_model 16, 1 layer, d_state 16, d_conv 4,
                          expand 2, dt_rank 1, bidirectional, no biases on in/out_proj, no norm_f
  block.ref.safetensors   for L in 1, 7, 33, 100:
                            u.L{L}          [L, 16] input of the mixer (and of the encoder)
                            mixer_fwd.L{L}  forward direction only (no averaging)
                            mixer_bwd.L{L}  backward direction only
                            mixer_both.L{L} both, averaged (Vision Mamba v2)
                            enc.L{L}        the encoder: u + mixer(LayerNorm(u))
  enc.safetensors         d_model 24, 3 layers, d_state 8, d_conv 3, expand 2, dt_rank 2 (not the
                          default ceil(24/16)), bidirectional, in_proj.bias and out_proj.bias,
                          norm_f: every optional part present, d_inner 48 (not a multiple of 16)
  enc.ref.safetensors     x.L{L}, enc.L{L} (both directions), enc_fwd.L{L} (forward only) for
                          L in 1, 7, 33, 100; and two streams of frames (tokens per frame 5 = CLS + a
                          2x2 patch grid) run by encode_windows + reduce_segments:
                            {s}.x        [n_frames * 5, 24]  tokens, frame-major, CLS first
                            {s}.pts      [n_frames] I64      timestamps (ms, irregular)
                            {s}.out      [n_frames * 5, 24]  streamed encoder output
                            {s}.seg_emb  [n_seg, 24]         segment embeddings
                            {s}.seg      [n_seg, 4] I64      start_ms, end_ms, first_frame, n_frames
                          with the stream's parameters in the metadata ({s}.T, .k, .s, .overlap,
                          .patch_weight, .interval_ms, .n_frames, .tpf).
                          streamA: T 8, overlap 2, k 2, s 1, patch_weight 0.5, 29 frames
                          streamB: T 8, overlap 0, k 4, s 2, patch_weight 0,   21 frames

Error measure of the tests: max|c - r| / max|r| per output tensor, at most 1e-4.

Recreate the reference venv, then run from the repository root:
  python3 -m venv /opt/mdref && /opt/mdref/bin/pip install torch transformers safetensors numpy pillow
  /opt/mdref/bin/python tests/tools/gen_mamba_fixtures.py
(written with torch 2.x; seeded, deterministic.)
"""
import math
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mamba_ref as R  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "fixtures", "mamba")
LENGTHS = [1, 7, 33, 100]


def save_weights(path, w, cfg):
    meta = {"format": "momentd-temporal", "version": "1", "trained": "0",
            "description": "random test weights (tests/tools/gen_mamba_fixtures.py)"}
    meta.update({k: str(v) for k, v in cfg.items()})
    save_file({k: v.float().contiguous() for k, v in w.items()}, path, metadata=meta)


def f32(t):
    return t.float().contiguous()


def block_case(g):
    cfg = dict(d_model=16, n_layers=1, d_state=16, d_conv=4, expand=2, dt_rank=1, bidirectional=1)
    w = R.random_weights(g, 16, 1, d_state=16, d_conv=4, expand=2, dt_rank=1)
    save_weights(os.path.join(OUT, "block.safetensors"), w, cfg)
    p = R.layer_params(w, 0)
    ref = {}
    for L in LENGTHS:
        u = torch.randn(L, 16, generator=g, dtype=torch.float64).float().double()
        ref["u.L%d" % L] = f32(u)
        for name, dirs in (("fwd", R.FWD), ("bwd", R.BWD), ("both", R.BOTH)):
            ref["mixer_%s.L%d" % (name, L)] = f32(R.mixer(u, p, dirs)[0])
        ref["enc.L%d" % L] = f32(R.encoder(u, w)[0])
    save_file(ref, os.path.join(OUT, "block.ref.safetensors"))


def enc_case(g):
    d = 24
    cfg = dict(d_model=d, n_layers=3, d_state=8, d_conv=3, expand=2, dt_rank=2, bidirectional=1)
    w = R.random_weights(g, d, 3, d_state=8, d_conv=3, expand=2, dt_rank=2, final_norm=True, in_bias=True,
                         out_bias=True)
    save_weights(os.path.join(OUT, "enc.safetensors"), w, cfg)
    ref, meta = {}, {}
    for L in LENGTHS:
        x = (torch.randn(L, d, generator=g, dtype=torch.float64) * 2).float().double()
        ref["x.L%d" % L] = f32(x)
        ref["enc.L%d" % L] = f32(R.encoder(x, w)[0])
        ref["enc_fwd.L%d" % L] = f32(R.encoder(x, w, R.FWD)[0])
    tpf = 5
    for name, T, overlap, k, s, pw, n in (("streamA", 8, 2, 2, 1, 0.5, 29), ("streamB", 8, 0, 4, 2, 0.0, 21)):
        x = (torch.randn(n * tpf, d, generator=g, dtype=torch.float64) * 2).float().double()
        pts = [i * 333 + (i * 7) % 5 for i in range(n)]
        interval = 333
        out = R.encode_windows(x, w, tpf, T, overlap)
        segs = R.reduce_segments(out, pts, tpf, k, s, pw, interval)
        ref[name + ".x"] = f32(x)
        ref[name + ".pts"] = torch.tensor(pts, dtype=torch.int64)
        ref[name + ".out"] = f32(out)
        ref[name + ".seg_emb"] = f32(torch.stack([e for (_, _, _, _, e) in segs]))
        ref[name + ".seg"] = torch.tensor([[a, b, c, m] for (a, b, c, m, _) in segs], dtype=torch.int64)
        for key, v in (("T", T), ("k", k), ("s", s), ("overlap", overlap), ("patch_weight", pw),
                       ("interval_ms", interval), ("n_frames", n), ("tpf", tpf)):
            meta["%s.%s" % (name, key)] = str(v)
    save_file(ref, os.path.join(OUT, "enc.ref.safetensors"), metadata=meta)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(20250505)
    block_case(g)
    enc_case(g)
    # Sanity: the float64 references agree with themselves across the streaming split (forward
    # only, one window boundary): two halves with carried state == one pass.
    w = {k: v for k, v in R.random_weights(g, 8, 2, d_state=4, d_conv=4).items()}
    x = torch.randn(37, 8, generator=g, dtype=torch.float64)
    full = R.encoder(x, w, R.FWD)[0]
    a, st = R.encoder(x[:20], w, R.FWD, state_at=20)
    b, _ = R.encoder(x[20:], w, R.FWD, states=st)
    assert R.rel_err(torch.cat([a, b]), full) < 1e-12, "reference streaming split"
    print("wrote", OUT)


if __name__ == "__main__":
    main()
