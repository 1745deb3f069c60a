#!/usr/bin/env python3
"""mamba_ref.py - a plain PyTorch reference of momentd's temporal encoder (engine/mamba.c,
engine/temporal.c), written from the Mamba paper (Gu & Dao 2023, Algorithm 2) and the semantics of
state-spaces/mamba's `selective_scan_ref` / `mamba_inner_ref`, made bidirectional the way Vision
Mamba's "v2" block does it (hustvl/Vim): one in_proj and one out_proj shared by both directions, a
second conv1d / x_proj / dt_proj / A_log / D (the `*_b` tensors) for a scan over the reversed
sequence, whose output is flipped back; the two gated outputs are averaged before out_proj.

Everything here is float64 on the CPU and deliberately naive (a Python loop over time), so that it is
easy to check against the paper; the C engine is float32 and must match it to 1e-4 relative error
(measured as max|c - r| / max|r| over a whole output tensor).

Weights are a dict name -> tensor with the names of temporal.safetensors (see engine/temporal.h):

  layers.{i}.norm.weight / .bias               [d_model]
  layers.{i}.mixer.in_proj.weight              [2 d_inner, d_model]    (+ optional .bias)
  layers.{i}.mixer.conv1d.weight               [d_inner, 1, d_conv]    conv1d.bias [d_inner]
  layers.{i}.mixer.x_proj.weight               [dt_rank + 2 d_state, d_inner]
  layers.{i}.mixer.dt_proj.weight              [d_inner, dt_rank]      dt_proj.bias [d_inner]
  layers.{i}.mixer.A_log                       [d_inner, d_state]
  layers.{i}.mixer.D                           [d_inner]
  backward: conv1d_b.weight/.bias, x_proj_b.weight, dt_proj_b.weight/.bias, A_b_log, D_b
  layers.{i}.mixer.out_proj.weight             [d_model, d_inner]      (+ optional .bias)
  norm_f.weight / .bias                        [d_model]               (optional)

Streaming (what engine/mamba.h claims): the forward direction's conv window (the last d_conv - 1
inputs of the conv) and SSM state h are carried from one window to the next; the backward direction
is window-local (it starts from zeros at each window's last token), because a reverse scan cannot
be streamed. `encode_windows` reproduces exactly that, with look-ahead overlap.

No command-line use; imported by gen_mamba_fixtures.py. Recreate the venv with
  python3 -m venv /opt/mdref && /opt/mdref/bin/pip install torch transformers safetensors numpy pillow
"""
import math

import torch
import torch.nn.functional as F

FWD, BWD, BOTH = 1, 2, 3


def selective_scan(u, delta, A, B, C, D, h0=None, state_at=None):
    """The selective scan of one direction (selective_scan_ref semantics, one batch element,
    no z gate, delta already softplus'ed and biased).

    u, delta: [L, d_inner]; A: [d_inner, d_state] (negative); B, C: [L, d_state]; D: [d_inner].
    h0: [d_inner, d_state] initial state (zeros when None). Returns y [L, d_inner] and the state
    after the first `state_at` steps (None when state_at is None).

        h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t     (zero-order hold on A,
        y_t = C_t . h_t + D * u_t                                   Euler on B, as Mamba does)
    """
    L, d_inner = u.shape
    d_state = A.shape[1]
    h = torch.zeros(d_inner, d_state, dtype=u.dtype) if h0 is None else h0.clone()
    snap = h.clone() if state_at == 0 else None
    ys = []
    for t in range(L):
        dA = torch.exp(delta[t][:, None] * A)                      # [d_inner, d_state]
        dBu = delta[t][:, None] * B[t][None, :] * u[t][:, None]    # [d_inner, d_state]
        h = dA * h + dBu
        ys.append(h @ C[t])                                        # [d_inner]
        if state_at is not None and t + 1 == state_at:
            snap = h.clone()
    y = torch.stack(ys) if ys else u.new_zeros(0, d_inner)
    return y + u * D, snap


def direction(x, z, p, sfx, conv_state=None, h0=None, state_at=None):
    """One direction of the Mamba-1 mixer after in_proj: causal depthwise conv1d + SiLU, x_proj ->
    (dt, B, C), dt_proj + softplus, selective scan, D skip, SiLU(z) gate. `sfx` is "" (forward) or
    "_b" (backward: the caller passes the reversed sequence). conv_state: [d_conv - 1, d_inner], the
    inputs before x[0] (zeros when None). Returns the gated y [L, d_inner] and, when state_at is
    given, (conv_state, h) after the first state_at positions."""
    L, d_inner = x.shape
    w = p["conv1d%s.weight" % sfx]                   # [d_inner, 1, d_conv]
    d_conv = w.shape[2]
    pre = x.new_zeros(d_conv - 1, d_inner) if conv_state is None else conv_state
    xs = torch.cat([pre, x], 0)                      # [d_conv - 1 + L, d_inner]
    # Causal depthwise convolution: out[t] = b + sum_k w[:, k] * xs[t + k] (nn.Conv1d with
    # padding d_conv - 1, groups d_inner, truncated to the first L outputs).
    xc = F.conv1d(xs.t()[None], w, p["conv1d%s.bias" % sfx], groups=d_inner)[0].t()
    xc = F.silu(xc)
    dbl = xc @ p["x_proj%s.weight" % sfx].t()
    dt_rank = p["dt_proj%s.weight" % sfx].shape[1]
    d_state = (dbl.shape[1] - dt_rank) // 2
    dt, B, C = dbl[:, :dt_rank], dbl[:, dt_rank:dt_rank + d_state], dbl[:, dt_rank + d_state:]
    delta = F.softplus(dt @ p["dt_proj%s.weight" % sfx].t() + p["dt_proj%s.bias" % sfx])
    A = -torch.exp(p["A%s_log" % sfx])
    y, h = selective_scan(xc, delta, A, B, C, p["D%s" % sfx], h0, state_at)
    y = y * F.silu(z)
    if state_at is None:
        return y, None
    return y, (xs[state_at:state_at + d_conv - 1].clone(), h)


def mixer(u, p, dirs=BOTH, state=None, state_at=None):
    """The (bi)directional Mamba mixer on u [L, d_model] (already layer-normed); p holds the
    layer's `mixer.*` tensors without the prefix. dirs: FWD, BWD or BOTH (averaged). state: the
    forward direction's (conv_state, h) to start from; with state_at, also returns the forward
    state after state_at positions (None otherwise)."""
    xz = u @ p["in_proj.weight"].t()
    if "in_proj.bias" in p:
        xz = xz + p["in_proj.bias"]
    d_inner = xz.shape[1] // 2
    x, z = xz[:, :d_inner], xz[:, d_inner:]
    ys, new_state = [], None
    if dirs & FWD:
        cs, h0 = state if state is not None else (None, None)
        y, new_state = direction(x, z, p, "", cs, h0, state_at)
        ys.append(y)
    if dirs & BWD:
        yb, _ = direction(x.flip(0), z.flip(0), p, "_b")
        ys.append(yb.flip(0))
    y = sum(ys) / len(ys)
    out = y @ p["out_proj.weight"].t()
    if "out_proj.bias" in p:
        out = out + p["out_proj.bias"]
    return out, new_state


def layer_params(w, i):
    pre = "layers.%d.mixer." % i
    return {k[len(pre):]: v for k, v in w.items() if k.startswith(pre)}


def n_layers(w):
    return len({k.split(".")[1] for k in w if k.startswith("layers.")})


def encoder(x, w, dirs=BOTH, eps=1e-5, states=None, state_at=None):
    """x <- x + mixer(LayerNorm(x)) per layer, then norm_f when the weights have it.
    states: list (one per layer) of forward states to start from, or None; with state_at, returns
    the list of forward states after state_at positions too."""
    new_states = []
    for i in range(n_layers(w)):
        u = F.layer_norm(x, x.shape[1:], w["layers.%d.norm.weight" % i], w["layers.%d.norm.bias" % i], eps)
        out, st = mixer(u, layer_params(w, i), dirs, states[i] if states else None, state_at)
        x = x + out
        new_states.append(st)
    if "norm_f.weight" in w:
        x = F.layer_norm(x, x.shape[1:], w["norm_f.weight"], w["norm_f.bias"], eps)
    return x, new_states


def encode_windows(tokens, w, tpf, T, overlap, dirs=BOTH, eps=1e-5):
    """The streaming encoder of engine/temporal.h on tokens [n_frames * tpf, d_model]: windows of
    T frames; each window commits its first T - overlap frames (all of them for the last window)
    and the next window starts at the first uncommitted frame. The forward state of every layer
    after the committed frames is carried into the next window. Returns [n_frames * tpf, d_model]:
    each frame's tokens as computed by the window that committed it."""
    n_frames = tokens.shape[0] // tpf
    out = torch.empty_like(tokens)
    states, f0 = None, 0
    while f0 < n_frames:
        nf = min(T, n_frames - f0)
        # A window is processed when a frame after it exists (its timestamp ends the window's last
        # segment); otherwise it is the final window, processed by finish(), which commits all.
        final = f0 + nf >= n_frames
        commit = nf if final else T - overlap
        xw = tokens[f0 * tpf:(f0 + nf) * tpf]
        y, states = encoder(xw, w, dirs, eps, states, commit * tpf)
        out[f0 * tpf:(f0 + commit) * tpf] = y[:commit * tpf]
        f0 += commit
    return out


def l2n(v):
    n = v.norm()
    return v / n if n > 0 else v


def reduce_segments(enc, pts_ms, tpf, k, s, patch_weight, interval_ms):
    """Token reduction of engine/temporal.h: per frame v_f = l2n(CLS_f) + patch_weight *
    l2n(mean of its patch tokens); per segment of k consecutive frames (the last may be shorter),
    the frames at offsets 0, s, 2s, ... are averaged and L2-normalised. Start = first frame's time;
    end = the next segment's start, or the last frame's time + interval_ms for the last segment.
    Returns a list of (start_ms, end_ms, first_frame, n_frames, embedding)."""
    n_frames = enc.shape[0] // tpf
    segs = []
    for f0 in range(0, n_frames, k):
        n = min(k, n_frames - f0)
        acc = torch.zeros(enc.shape[1], dtype=enc.dtype)
        for o in range(0, n, s):
            fr = enc[(f0 + o) * tpf:(f0 + o + 1) * tpf]
            v = l2n(fr[0])
            if patch_weight != 0 and tpf > 1:
                v = v + patch_weight * l2n(fr[1:].mean(0))
            acc += v
        end = pts_ms[f0 + n] if f0 + n < n_frames else pts_ms[n_frames - 1] + interval_ms
        segs.append((pts_ms[f0], end, f0, n, l2n(acc)))
    return segs


def rel_err(a, b):
    """The error measure of the tests: max|a - b| / max|b|."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def random_weights(g, d_model, n_layers, d_state=16, d_conv=4, expand=2, dt_rank=None, bidirectional=True,
                   final_norm=False, in_bias=False, out_bias=False):
    """Random non-zero float32 weights of every tensor (so that a wrong index anywhere shows): the
    Mamba initialisation's scales, with A_log / dt_proj.bias / D / norms perturbed too, and dt in
    [0.001, 0.1] (Mamba's dt_min, dt_max), so the state carries information over many steps."""
    d_inner = expand * d_model
    dt_rank = dt_rank or math.ceil(d_model / 16)
    w = {}

    def U(shape, bound):
        return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * bound

    for i in range(n_layers):
        pre = "layers.%d." % i
        w[pre + "norm.weight"] = 1 + U((d_model,), 0.3)
        w[pre + "norm.bias"] = U((d_model,), 0.2)
        m = pre + "mixer."
        w[m + "in_proj.weight"] = U((2 * d_inner, d_model), 1 / math.sqrt(d_model))
        if in_bias:
            w[m + "in_proj.bias"] = U((2 * d_inner,), 0.2)
        for sfx in ("", "_b") if bidirectional else ("",):
            w[m + "conv1d%s.weight" % sfx] = U((d_inner, 1, d_conv), 1 / math.sqrt(d_conv))
            w[m + "conv1d%s.bias" % sfx] = U((d_inner,), 1 / math.sqrt(d_conv))
            w[m + "x_proj%s.weight" % sfx] = U((dt_rank + 2 * d_state, d_inner), 1 / math.sqrt(d_inner))
            w[m + "dt_proj%s.weight" % sfx] = U((d_inner, dt_rank), dt_rank ** -0.5)
            dt = torch.exp(torch.rand(d_inner, generator=g, dtype=torch.float64) * (math.log(0.1) - math.log(0.001))
                           + math.log(0.001))
            w[m + "dt_proj%s.bias" % sfx] = dt + torch.log(-torch.expm1(-dt))    # inverse softplus
            A = torch.arange(1, d_state + 1, dtype=torch.float64).repeat(d_inner, 1)
            w[m + "A%s_log" % sfx] = torch.log(A) + U((d_inner, d_state), 0.5)
            w[m + "D%s" % sfx] = 1 + U((d_inner,), 0.5)
        w[m + "out_proj.weight"] = U((d_model, d_inner), 1 / math.sqrt(d_inner))
        if out_bias:
            w[m + "out_proj.bias"] = U((d_model,), 0.2)
    if final_norm:
        w["norm_f.weight"] = 1 + U((d_model,), 0.3)
        w["norm_f.bias"] = U((d_model,), 0.2)
    # Round to float32 (what the file stores); the reference then computes in float64 from these.
    return {k: v.float().double() for k, v in w.items()}
