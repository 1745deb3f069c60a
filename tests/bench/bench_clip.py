#!/usr/bin/env python3
"""bench_clip.py - momentd's CLIP encoders vs transformers + PyTorch on the CPU, side by side (`make bench-clip`).

Builds a full-size CLIP ViT-B/32 with random weights in the real Hugging Face layout
(transformers' default CLIPConfig has exactly openai/clip-vit-base-patch32's shapes; saved with
save_pretrained into a temporary directory together with the real vocabulary from
tests/fixtures/clip-vocab; never committed), then times, in fp32 with the same thread count:

  images/s at batch 1 (one image per call) and at batch B (one call), text latency for
  "a photo of a cat" (one call), best of --repeats runs, the two sides interleaved,

for momentd (the C binary BIN, which loads the directory with md_clip_load) and for
transformers (attn_implementation "sdpa", torch.inference_mode). It also reports how far the C
embeddings are from transformers' (max |c - t| / max |t| over all image and text embeddings): a
full-size correctness check. Prints a Markdown table.

Needs the reference venv (python3 -m venv /opt/mdref && /opt/mdref/bin/pip install torch
transformers safetensors numpy pillow); run from the repository root:
  make bench-clip [BENCH_THREADS=N]
  /opt/mdref/bin/python tests/bench/bench_clip.py --bin build/bench_clip --threads 2
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time

import numpy as np
import torch
import transformers
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(ROOT, "tests", "fixtures", "clip-vocab")
TEXT = "a photo of a cat"


def make_checkpoint(d):
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()
    model.save_pretrained(d)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(VOCAB, f), d)


def feats(x):
    return x.pooler_output if hasattr(x, "pooler_output") else x


class TorchBench:
    def __init__(self, d, px, threads):
        torch.set_num_threads(threads)
        self.model = CLIPModel.from_pretrained(d, attn_implementation="sdpa").eval()
        self.ids = torch.tensor([CLIPTokenizer.from_pretrained(d)(TEXT)["input_ids"]])
        self.px = px
        self.best = {"img_per_s_b1": 0.0, "img_per_s_bn": 0.0, "text_ms": float("inf")}
        with torch.inference_mode():
            feats(self.model.get_image_features(pixel_values=px[:1]))  # warm-up

    def run(self):
        m, px, n = self.model, self.px, self.px.shape[0]
        with torch.inference_mode():
            t = time.perf_counter()
            for i in range(n):
                feats(m.get_image_features(pixel_values=px[i : i + 1]))
            b1 = n / (time.perf_counter() - t)
            t = time.perf_counter()
            img = feats(m.get_image_features(pixel_values=px))
            bn = n / (time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(10):
                txt = feats(m.get_text_features(input_ids=self.ids))
            tm = (time.perf_counter() - t) / 10 * 1e3
        b = self.best
        b["img_per_s_b1"], b["img_per_s_bn"], b["text_ms"] = max(b["img_per_s_b1"], b1), max(b["img_per_s_bn"], bn), min(b["text_ms"], tm)
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return np.concatenate([img.numpy(), txt.numpy()])


def best_of(runs):
    return {"load_s": min(r["load_s"] for r in runs), "img_per_s_b1": max(r["img_per_s_b1"] for r in runs),
            "img_per_s_bn": max(r["img_per_s_bn"] for r in runs), "text_ms": min(r["text_ms"] for r in runs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bench_clip"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", help="write the checkpoint here and keep it")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="momentd-bench-")
    try:
        d = a.keep or os.path.join(tmp, "clip-vit-base-patch32-random")
        os.makedirs(d, exist_ok=True)
        make_checkpoint(d)
        g = np.random.default_rng(1)
        px = g.standard_normal((a.batch, 3, 224, 224)).astype(np.float32)
        pxf, outf = os.path.join(tmp, "pixels.f32"), os.path.join(tmp, "out.f32")
        px.tofile(pxf)
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(a.threads))
        tb = TorchBench(d, torch.from_numpy(px), a.threads)
        runs, err = [], 0.0
        # Interleaved, best of REPEATS each: load on a shared machine hits both sides alike.
        for _ in range(a.repeats):
            r = subprocess.run([a.bin, d, str(a.threads), pxf, str(a.batch), outf, "1"], env=env, check=True,
                               capture_output=True, text=True)
            runs.append(json.loads(r.stdout))
            cemb = np.fromfile(outf, dtype=np.float32).reshape(a.batch + 1, -1)
            temb = tb.run()
            err = max(err, np.abs(cemb - temb).max() / np.abs(temb).max())
        c, t = best_of(runs), tb.best
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"CLIP ViT-B/32 (random weights, real layout), fp32, {a.threads} threads, {cpu}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}\n")
    print("| | momentd (C, OpenBLAS) | transformers + PyTorch | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| images/s, batch 1 | {c['img_per_s_b1']:.1f} | {t['img_per_s_b1']:.1f} | "
          f"{c['img_per_s_b1'] / t['img_per_s_b1']:.2f}x |")
    print(f"| images/s, batch {a.batch} | {c['img_per_s_bn']:.1f} | {t['img_per_s_bn']:.1f} | "
          f"{c['img_per_s_bn'] / t['img_per_s_bn']:.2f}x |")
    print(f"| text latency, ms (\"{TEXT}\") | {c['text_ms']:.1f} | {t['text_ms']:.1f} | "
          f"{t['text_ms'] / c['text_ms']:.2f}x |")
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"\nload average at the end: {load} on {os.cpu_count()} cores. momentd load (parse, convert, sha256 of 605 MB): {c['load_s']:.2f} s; "
          f"max relative difference of the embeddings vs transformers: {err:.1e}")


if __name__ == "__main__":
    main()
