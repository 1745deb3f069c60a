#!/usr/bin/env python3
"""gen_clip_fixtures.py - tiny random CLIP checkpoints + transformers reference outputs for test_clip.

Builds small random-weight `transformers.CLIPModel`s in several configurations, saves each with
`save_pretrained` (the real Hugging Face layout: config.json + model.safetensors; vocab.json and
merges.txt are symlinks to the real CLIP vocabulary in tests/fixtures/clip-vocab/, made by
make_clip_vocab.py), and records what transformers computes for them:

  tests/fixtures/clip/texts.json              the test strings and their token ids (CLIPTokenizer,
                                              truncation to 77), shared by every model
  tests/fixtures/clip/<name>/                 a checkpoint directory md_clip_load() reads as is
  tests/fixtures/clip/<name>.ref.safetensors  pixels [n,3,S,S] (CLIP-normalised seeded random),
                                              image_embeds [n,E] (L2-normalised, as CLIPModel),
                                              vision_tokens [n,1+P,E] (every token of the last
                                              layer -> post_layernorm -> visual_projection,
                                              not normalised), text_embeds [m,E] (L2-normalised);
                                              for the f16 model also *_f16compute: the same computed
                                              by torch in float16 (what a half-precision run gives);
                                              picture_image_embeds [1,E]: picture.png through
                                              CLIPImageProcessor (PIL) and the model, for the
                                              embed-image CLI test
  tests/fixtures/clip/picture.png             a 61x40 RGB picture (seeded, lossless)

References are computed in float32 from the weights as stored (an f16/bf16 file is upcast), with
eager attention, so the C engine must match them to f32 rounding.

Configurations (small: the 49,408 x width token table dominates the size):
  tiny-f32-quickgelu-oldeos  F32,  quick_gelu, eos_token_id 2 (pre-2023 configs: pool at argmax id),
                             text 32 wide / 4 heads / 2 layers, vision 32x32 px, patch 8, 32 wide
  tiny-f16-gelu-neweos       F16,  gelu (erf), eos_token_id 49407 (pool at the first EOS),
                             text 32/2/3, vision 48 px, patch 16, 48 wide / 4 heads / 3 layers,
                             layer_norm_eps 1e-6
  tiny-bf16-mixed            BF16, text quick_gelu 16 wide / 1 head / 1 layer, vision
                             gelu_pytorch_tanh 28 px, patch 14, 24 wide / 3 heads / 2 layers;
                             config carries text_config_dict/vision_config_dict as
                             openai/clip-vit-large-patch14's config.json does (they win; the
                             text_config/vision_config next to them hold wrong values on purpose)

Recreate the reference venv, then run from the repository root:
  python3 -m venv /opt/mdref && /opt/mdref/bin/pip install torch transformers safetensors numpy pillow
  /opt/mdref/bin/python tests/tools/gen_clip_fixtures.py
(written with transformers 5.x / torch 2.x; outputs are seeded and deterministic on one machine.)
"""
import json
import os
import shutil

import numpy as np
import torch
from safetensors.torch import save_file
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

try:  # transformers >= 5 names the PIL implementation explicitly
    from transformers import CLIPImageProcessorPil as Processor
except ImportError:  # older transformers: CLIPImageProcessor is the PIL implementation
    from transformers import CLIPImageProcessor as Processor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VOCAB = os.path.join(ROOT, "tests", "fixtures", "clip-vocab")
OUT = os.path.join(ROOT, "tests", "fixtures", "clip")
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]

TEXTS = [
    "a photo of a cat",
    "A dog jumps into the pool!",
    "",
    "   ",
    "the car turns left at 3:45pm, then stops.",
    "HELLO   World\t\n again",
    "naïve café résumé à la crème brûlée",
    "東京タワーの夜景",
    "北京欢迎你",
    "🙂🐶 dog emoji 🎉🎉",
    "don't won't it's they're we've I'd",
    "1234567890 3.14159 1,000,000 #42 @user",
    "&amp; <b>bold</b> \"quotes\" 'single'",
    "ÅÄÖ åäö ñ ç ß Ω",
    "a" * 300,
    " ".join(["word"] * 120),
    "mixed CASE and snake_case and kebab-case and CamelCase",
    "newline\nseparated\nlines",
    "Zürich – München — Köln … “quoted”",
    "<|startoftext|> literal special tokens <|endoftext|>",
]

CONFIGS = [
    dict(
        name="tiny-f32-quickgelu-oldeos",
        dtype=torch.float32,
        projection_dim=24,
        text=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                  hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                    image_size=32, patch_size=8, hidden_act="quick_gelu"),
    ),
    dict(
        name="tiny-f16-gelu-neweos",
        dtype=torch.float16,
        projection_dim=16,
        text=dict(hidden_size=32, intermediate_size=48, num_attention_heads=2, num_hidden_layers=3,
                  hidden_act="gelu", layer_norm_eps=1e-6, bos_token_id=49406, eos_token_id=49407,
                  pad_token_id=1),
        vision=dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_hidden_layers=3,
                    image_size=48, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-6),
    ),
    dict(
        name="tiny-bf16-mixed",
        dtype=torch.bfloat16,
        projection_dim=8,
        text=dict(hidden_size=16, intermediate_size=32, num_attention_heads=1, num_hidden_layers=1,
                  hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
        vision=dict(hidden_size=24, intermediate_size=40, num_attention_heads=3, num_hidden_layers=2,
                    image_size=28, patch_size=14, hidden_act="gelu_pytorch_tanh"),
        overlay=True,
    ),
]


def randomise(model, gen):
    """Weights with O(1) activations and non-uniform attention (the default init is too tame)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            if p.ndim == 1:
                norm_w = name.endswith("weight") and ("norm" in name or "layrnorm" in name)
                r = torch.randn(p.shape, generator=gen) * 0.2
                p.copy_(1.0 + r if norm_w else (r * 2.5 if "class_embedding" in name else r))
            elif "embedding" in name and p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))


def pixels_for(n, size, seed):
    g = np.random.default_rng(seed)
    u = g.random((n, 3, size, size), dtype=np.float64)
    m = np.array(MEAN).reshape(1, 3, 1, 1)
    s = np.array(STD).reshape(1, 3, 1, 1)
    return torch.tensor(((u - m) / s).astype(np.float32))


@torch.no_grad()
def reference(model, pixels, ids_list):
    vm = model.vision_model
    last = vm(pixel_values=pixels).last_hidden_state
    tokens = model.visual_projection(vm.post_layernorm(last))
    img = model.visual_projection(vm.post_layernorm(last[:, 0, :]))
    img = img / img.norm(p=2, dim=-1, keepdim=True)
    txt = []
    for ids in ids_list:
        t = torch.tensor([ids])
        pooled = model.text_model(input_ids=t).pooler_output
        e = model.text_projection(pooled)[0]
        txt.append(e / e.norm(p=2))
    return img.float(), tokens.float(), (torch.stack(txt).float() if txt else None)


def write_config_overlay(path, cfg):
    """Rewrite config.json as openai/clip-vit-large-patch14 has it: text_config_dict and
    vision_config_dict next to text_config/vision_config. transformers then builds each tower's
    config from its defaults plus *_config_dict alone (CLIPConfig.__post_init__ updates
    text_config with the full defaulted dict), so the values in text_config/vision_config that
    are set wrong here must be ignored."""
    with open(path) as f:
        c = json.load(f)
    c["text_config_dict"] = dict(vocab_size=49408, max_position_embeddings=77, **cfg["text"])
    c["vision_config_dict"] = dict(cfg["vision"])
    c["text_config"]["hidden_size"] = 999
    c["text_config"]["num_hidden_layers"] = 7
    c["vision_config"]["patch_size"] = 3
    c["vision_config"]["layer_norm_eps"] = 0.5
    with open(path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")


def make_picture(path):
    """Smooth gradients plus a few blocks and seeded noise: every resampling tap matters."""
    g = np.random.default_rng(7)
    y, x = np.mgrid[0:40, 0:61]
    img = np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).astype(np.int32)
    img[8:20, 10:30] = [250, 30, 40]
    img[25:38, 35:58] = [20, 200, 90]
    img = np.clip(img + g.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(path, optimize=True)
    return Image.open(path).convert("RGB")


def main():
    torch.manual_seed(0)
    tok = CLIPTokenizer.from_pretrained(VOCAB)
    ids_list = [tok(t, truncation=True, max_length=77)["input_ids"] for t in TEXTS]
    os.makedirs(OUT, exist_ok=True)
    picture = make_picture(os.path.join(OUT, "picture.png"))
    with open(os.path.join(OUT, "texts.json"), "w", encoding="utf-8") as f:
        rows = [json.dumps({"text": t, "ids": i}, ensure_ascii=False) for t, i in zip(TEXTS, ids_list)]
        f.write('{"texts": [\n' + ",\n".join(rows) + "\n]}\n")
    for k, c in enumerate(CONFIGS):
        gen = torch.Generator().manual_seed(1000 + k)
        text = dict(vocab_size=49408, max_position_embeddings=77, **c["text"])
        config = CLIPConfig(text_config=text, vision_config=c["vision"], projection_dim=c["projection_dim"])
        config._attn_implementation = "eager"
        model = CLIPModel(config).eval()
        randomise(model, gen)
        d = os.path.join(OUT, c["name"])
        shutil.rmtree(d, ignore_errors=True)
        model.to(c["dtype"]).save_pretrained(d)
        for extra in os.listdir(d):
            if extra not in ("config.json", "model.safetensors"):
                os.remove(os.path.join(d, extra))
        if c.get("overlay"):
            write_config_overlay(os.path.join(d, "config.json"), c)
        for v in ("vocab.json", "merges.txt"):
            os.symlink(os.path.join("..", "..", "clip-vocab", v), os.path.join(d, v))

        ref_model = CLIPModel.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        size = c["vision"]["image_size"]
        pixels = pixels_for(3, size, 2000 + k)
        img, tokens, txt = reference(ref_model, pixels, ids_list)
        out = {"pixels": pixels, "image_embeds": img, "vision_tokens": tokens, "text_embeds": txt}
        proc = Processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        ppx = proc(images=picture, return_tensors="pt")["pixel_values"].float()
        out["picture_image_embeds"] = reference(ref_model, ppx, [])[0]
        if c["dtype"] == torch.float16:
            half = CLIPModel.from_pretrained(d, dtype=torch.float16, attn_implementation="eager").eval()
            himg, htok, htxt = reference(half, pixels.half(), ids_list)
            out.update(image_embeds_f16compute=himg, vision_tokens_f16compute=htok, text_embeds_f16compute=htxt)
        save_file({k2: v.contiguous() for k2, v in out.items()}, os.path.join(OUT, c["name"] + ".ref.safetensors"))
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{c['name']}: {n_params} parameters, {c['dtype']}, image {tuple(img.shape)}, tokens "
              f"{tuple(tokens.shape)}, text {tuple(txt.shape)}, |tokens|max {tokens.abs().max():.3f}")


if __name__ == "__main__":
    main()
