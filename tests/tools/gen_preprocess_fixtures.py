#!/usr/bin/env python3
"""gen_preprocess_fixtures.py - reference outputs of CLIP's image preprocessing for tests/unit/test_decode.c.

For each input picture (a lossless PNG, so FFmpeg and PIL see the very same RGB values) this runs
Hugging Face `CLIPImageProcessor` (the PIL backend: resize shortest side with PIL BICUBIC on the
uint8 image, center crop, rescale 1/255, normalise with CLIP's mean/std) and writes the resulting
tensor as raw little-endian float32, channel-first (3 x S x S), next to the PNG. cases.txt lists
one case per line: `name width height size`, inputs `name.png`, expected output `name.f32`.

Inputs: a 1280x720 crop of real phone footage (Debian package forensics-samples-files), FFmpeg test
patterns at odd sizes, seeded noise (upscaling), an RGBA picture (alpha is composited onto white,
as CLIPImageProcessor does), a grayscale picture, and sizes where PIL skips one resampling pass.

Recreate the Python environment with
    python3 -m venv /opt/mdref && /opt/mdref/bin/pip install torch transformers safetensors numpy pillow
and regenerate (needs the ffmpeg CLI and forensics-samples-files) from the repository root with
    /opt/mdref/bin/python tests/tools/gen_preprocess_fixtures.py
"""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

try:  # transformers >= 5 names the PIL implementation explicitly
    from transformers import CLIPImageProcessorPil as Processor
except ImportError:  # older transformers: CLIPImageProcessor is the PIL implementation
    from transformers import CLIPImageProcessor as Processor

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "preprocess")
DOG = "/usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4"


def ffmpeg_png(name, args):
    path = os.path.join(OUT, name + ".png")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, "-frames:v", "1",
                    "-pix_fmt", "rgb24", path], check=True)
    return path


def save_png(name, array, mode):
    path = os.path.join(OUT, name + ".png")
    Image.fromarray(array, mode).save(path, optimize=True)
    return path


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261126)
    cases = []  # (name, size)

    ffmpeg_png("dog_1280x720", ["-i", DOG, "-vf", "crop=1280:720:320:180"])
    cases.append(("dog_1280x720", 224))
    # testsrc2 rounds odd sizes down to even ones; crop to the odd size instead.
    ffmpeg_png("testsrc2_333x187", ["-f", "lavfi", "-i", "testsrc2=size=334x188", "-vf", "format=rgb24,crop=333:187:0:0"])
    cases.append(("testsrc2_333x187", 224))
    ffmpeg_png("mandelbrot_187x333", ["-f", "lavfi", "-i", "mandelbrot=size=187x333"])
    cases.append(("mandelbrot_187x333", 96))
    save_png("noise_16x16", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB")
    cases.append(("noise_16x16", 48))
    # S equal to the short side: PIL skips the vertical pass, only the width is resampled.
    save_png("noise_300x64", rng.integers(0, 256, (64, 300, 3), dtype=np.uint8), "RGB")
    cases.append(("noise_300x64", 64))
    # Already S x S: both passes skipped, the output is the normalised input.
    save_png("noise_64x64", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    cases.append(("noise_64x64", 64))
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    rgba[:, :, 3] = np.linspace(0, 255, 50, dtype=np.uint8)[None, :]  # fully clear to opaque
    rgba[:5, :, 3] = 0
    save_png("rgba_50x40", rgba, "RGBA")
    cases.append(("rgba_50x40", 32))
    gray = np.add.outer(np.arange(30) * 7, np.arange(40) * 5).astype(np.uint8)
    save_png("gray_40x30", gray, "L")
    cases.append(("gray_40x30", 24))

    mean = [0.48145466, 0.4578275, 0.40821073]
    std = [0.26862954, 0.26130258, 0.27577711]
    lines = []
    for name, size in cases:
        img = Image.open(os.path.join(OUT, name + ".png"))
        img.load()
        proc = Processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                         image_mean=mean, image_std=std)
        px = proc(images=img, return_tensors="np")["pixel_values"][0]
        assert px.shape == (3, size, size) and px.dtype == np.float32, (px.shape, px.dtype)
        px.astype("<f4").tofile(os.path.join(OUT, name + ".f32"))
        lines.append(f"{name} {img.width} {img.height} {size}")
        print(f"{name}: {img.mode} {img.width}x{img.height} -> 3x{size}x{size}", file=sys.stderr)
    with open(os.path.join(OUT, "cases.txt"), "w") as f:
        f.write("# name width height size: name.png -> CLIPImageProcessor -> name.f32 (float32 LE, 3xSxS)\n")
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
