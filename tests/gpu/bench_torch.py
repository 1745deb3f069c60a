#!/usr/bin/env python3
"""bench_torch.py - the transformers + PyTorch side of the GPU benchmark (tests/gpu/run.sh).

    python3 tests/gpu/bench_torch.py make-checkpoint DIR
    python3 tests/gpu/bench_torch.py clip --clip DIR [--batch 256] [--iters 20] [--device cuda]

make-checkpoint: a full-size CLIP ViT-B/32 with random weights in the real Hugging Face layout
(transformers' default CLIPConfig has openai/clip-vit-base-patch32's shapes; seed 0), with the
tokenizer files of tests/fixtures/clip-vocab; the same as tests/bench/bench_clip.py's. Nothing is
downloaded.

clip: CLIP ViT-B/32 image embeddings per second (get_image_features) in fp16, eager, SDPA
attention, batch BATCH, the input already on the GPU; and the same with a float32 batch copied from
host memory each time (what a pipeline feeding decoded frames pays). Prints Markdown table rows.

Runs with the machine's python3 holding torch and transformers (the GPU image's, or the reference
venv: python3 -m venv /opt/mdref && /opt/mdref/bin/pip install torch transformers safetensors
numpy pillow). --device cpu makes a quick dry run possible without a GPU.
"""
import argparse
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = os.path.join(ROOT, "tests", "fixtures", "clip-vocab")


def make_checkpoint(d):
    import torch
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()
    model.save_pretrained(d)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(VOCAB, f), d)


def feats(x):
    return x.pooler_output if hasattr(x, "pooler_output") else x


def load(d, dtype, device):
    from transformers import CLIPModel
    try:
        m = CLIPModel.from_pretrained(d, dtype=dtype, attn_implementation="sdpa")
    except TypeError:  # transformers 4.x
        m = CLIPModel.from_pretrained(d, torch_dtype=dtype, attn_implementation="sdpa")
    return m.to(device).eval()


def bench_clip(a):
    import torch
    import transformers
    dev = torch.device(a.device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    model = load(a.clip, dtype, dev)
    size = model.config.vision_config.image_size
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    x = torch.randn(a.batch, 3, size, size, device=dev, dtype=dtype)
    xh = torch.randn(a.batch, 3, size, size, dtype=torch.float32)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print("| PyTorch %s, transformers %s | %s | %s, eager, sdpa |" % (torch.__version__, transformers.__version__, name,
                                                                      str(dtype).replace("torch.", "")))
    with torch.inference_mode():
        for _ in range(3):
            feats(model.get_image_features(pixel_values=x))
        sync()
        best = float("inf")
        for _ in range(a.iters):
            t0 = time.perf_counter()
            feats(model.get_image_features(pixel_values=x))
            sync()
            best = min(best, time.perf_counter() - t0)
        besth = float("inf")
        for _ in range(max(1, a.iters // 2)):
            t0 = time.perf_counter()
            feats(model.get_image_features(pixel_values=xh.to(dev).to(dtype)))
            sync()
            besth = min(besth, time.perf_counter() - t0)
    tag = "fp16" if dtype == torch.float16 else "fp32"
    print("| transformers CLIP ViT-B/32 %s, batch %d, input on the GPU | %.0f img/s | %.2f ms per batch |" %
          (tag, a.batch, a.batch / best, best * 1e3))
    print("| transformers CLIP ViT-B/32 %s, batch %d, from host float32 | %.0f img/s | %.2f ms per batch |" %
          (tag, a.batch, a.batch / besth, besth * 1e3))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-checkpoint")
    mk.add_argument("dir")
    cb = sub.add_parser("clip")
    cb.add_argument("--clip", required=True)
    cb.add_argument("--batch", type=int, default=256)
    cb.add_argument("--iters", type=int, default=20)
    cb.add_argument("--device", default="cuda")
    a = ap.parse_args()
    if a.cmd == "make-checkpoint":
        make_checkpoint(a.dir)
    else:
        bench_clip(a)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
