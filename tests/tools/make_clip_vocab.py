#!/usr/bin/env python3
"""make_clip_vocab.py - derive CLIP's Hugging Face vocab.json + merges.txt from OpenAI's BPE file.

OpenAI's CLIP ships its byte-level BPE as bpe_simple_vocab_16e6.txt.gz (MIT; a copy lies in
../shared/data with LICENSE-CLIP-vocab.txt, and the same file is package data of PyPI wheels such
as open_clip_torch and clip-anytorch). Hugging Face CLIP checkpoints (openai/clip-vit-base-patch32
and friends) carry the same vocabulary as vocab.json + merges.txt, derived exactly as CLIP's own
simple_tokenizer.py builds its encoder:

  ids 0..255        the 256 byte-level symbols of bytes_to_unicode(), in that function's order
  ids 256..511      the same symbols followed by "</w>"
  ids 512..49405    one token per merge: the concatenation of the pair, for the first 48,894
                    merge lines after the header line (49152 - 256 - 2 merges)
  ids 49406, 49407  "<|startoftext|>", "<|endoftext|>"                     (49,408 tokens)

merges.txt is "#version: 0.2" followed by those 48,894 merge lines ("a b", one per line).
tokenizer_config.json is the one the published checkpoints carry. It matters for one detail: its
special tokens are "normalized", so transformers finds "<|startoftext|>" / "<|endoftext|>" in the
text after NFC + whitespace collapse + lower case (e.g. "<|EndOfText|>" becomes <|endoftext|>);
transformers 5 building a CLIPTokenizer from vocab.json + merges.txt alone would not.

Usage (no third-party packages needed to derive the files):
  python3 tests/tools/make_clip_vocab.py [--src ../shared/data/bpe_simple_vocab_16e6.txt.gz]
                                         [--out tests/fixtures/clip-vocab] [--check]
--check also loads the result in transformers' CLIPTokenizer / CLIPTokenizerFast and compares a
few encodings with CLIP's reference algorithm; it needs the reference venv:
  python3 -m venv /opt/mdref && /opt/mdref/bin/pip install torch transformers safetensors numpy pillow
  /opt/mdref/bin/python tests/tools/make_clip_vocab.py --check
"""
import argparse
import gzip
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_SRC = os.path.join(ROOT, "..", "shared", "data", "bpe_simple_vocab_16e6.txt.gz")
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "clip-vocab")
N_MERGES = 49152 - 256 - 2  # as CLIP's simple_tokenizer.py: merges[1:49152-256-2+1]

# As in openai/clip-vit-base-patch32 (and -patch16, -large-patch14).
SPECIAL = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": True}
TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "added_tokens_decoder": {
        "49406": {"content": "<|startoftext|>", **SPECIAL},
        "49407": {"content": "<|endoftext|>", **SPECIAL},
    },
    "bos_token": "<|startoftext|>",
    "clean_up_tokenization_spaces": True,
    "do_lower_case": True,
    "eos_token": "<|endoftext|>",
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "<|endoftext|>",
    "processor_class": "CLIPProcessor",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}


def bytes_to_unicode():
    """GPT-2 / CLIP byte -> printable unicode character map (same order as CLIP's)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(n) for n in cs]))


def derive(src):
    lines = gzip.open(src).read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    if len(merges) != N_MERGES:
        sys.exit(f"{src}: only {len(merges)} merge lines, expected {N_MERGES}")
    pairs = []
    for i, m in enumerate(merges):
        p = m.split(" ")
        if len(p) != 2 or not p[0] or not p[1]:
            sys.exit(f"{src}: merge line {i + 2} is not 'a b': {m!r}")
        pairs.append(p)
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(p) for p in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != 49408 or len(set(vocab)) != len(vocab):
        sys.exit(f"derived vocabulary has {len(vocab)} tokens ({len(set(vocab))} distinct), expected 49408")
    return {t: i for i, t in enumerate(vocab)}, ["#version: 0.2"] + [" ".join(p) for p in pairs]


def check(out):
    """Load the files in transformers and compare with CLIP's reference BPE on a few strings."""
    import transformers
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    texts = ["a photo of a cat", "A dog jumps into the pool!", "naïve café, 東京 2024 🙂", "don't stop"]
    for cls in (CLIPTokenizer, CLIPTokenizerFast):
        tok = cls.from_pretrained(out)
        assert len(tok) == 49408, len(tok)
        assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407 and tok.pad_token_id == 49407
        for t in texts:
            ids = tok(t)["input_ids"]
            assert ids[0] == 49406 and ids[-1] == 49407, ids
        # the published checkpoints' normalized special tokens
        assert tok("<|EndOfText|>")["input_ids"] == [49406, 49407, 49407], tok("<|EndOfText|>")["input_ids"]
        print(f"{cls.__name__} (transformers {transformers.__version__}): loads, 49408 tokens, bos/eos/pad ok;",
              "'a photo of a cat' ->", tok("a photo of a cat")["input_ids"])
    # The well-known ids of 'a photo of a cat' in every CLIP checkpoint.
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=DEFAULT_SRC)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    vocab, merges = derive(a.src)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(a.out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(merges) + "\n")
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
        f.write("\n")
    lic = os.path.join(os.path.dirname(a.src), "LICENSE-CLIP-vocab.txt")
    if os.path.exists(lic):
        shutil.copyfile(lic, os.path.join(a.out, "LICENSE-CLIP-vocab.txt"))
    print(f"wrote {a.out}/vocab.json ({len(vocab)} tokens), merges.txt ({len(merges) - 1} merges), "
          "tokenizer_config.json")
    if a.check:
        check(a.out)


if __name__ == "__main__":
    main()
