#!/usr/bin/env python3
"""gen_tokenizer_fixtures.py - reference token ids for engine/tokenizer.c from Hugging Face transformers.

Writes tests/fixtures/tokenizer/clip_ids_77.json: for ~200 hand-picked strings (punctuation,
digits, accents, CJK, emoji, very long, empty, whitespace-only, mixed case, contractions, URLs,
tabs/newlines, combining characters, Cyrillic, Arabic, zero-width and control characters, special
token strings, invalid UTF-8) plus 300 seeded random strings built to stress the same corners, the
ids that transformers' CLIP tokenizer gives with truncation=True, max_length=77, loaded from
tests/fixtures/clip-vocab (made by make_clip_vocab.py). Inputs are stored as base64 of their exact
bytes. Invalid UTF-8 is first decoded with errors="replace" (what the C tokenizer does with it).

The reference is transformers' default CLIP tokenizer, which in transformers 5 is CLIPTokenizer =
CLIPTokenizerFast (Rust `tokenizers`) and in 4.x CLIPTokenizerFast - what AutoTokenizer and
CLIPProcessor return. With --slow-python PY (a python with transformers 4.x installed, where the
old pure-Python CLIPTokenizer still exists) it also runs that slow tokenizer and the 4.x fast one
on the same strings and writes tests/fixtures/tokenizer/slow_vs_fast.md listing every difference.

Usage:
  python3 -m venv /opt/mdref && /opt/mdref/bin/pip install torch transformers safetensors numpy pillow
  /opt/mdref/bin/python tests/tools/gen_tokenizer_fixtures.py
  # optional slow-vs-fast record (transformers 4.x; ftfy deliberately not installed):
  python3 -m venv /tmp/tf4 && /tmp/tf4/bin/pip install transformers==4.57.1
  /opt/mdref/bin/python tests/tools/gen_tokenizer_fixtures.py --slow-python /tmp/tf4/bin/python
"""
import argparse
import base64
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VOCAB_DIR = os.path.join(ROOT, "tests", "fixtures", "clip-vocab")
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
CONTEXT = 77

LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
         "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris "
         "nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit "
         "esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt "
         "in culpa qui officia deserunt mollit anim id est laborum.")


def curated():
    """(name, bytes) pairs. Text given as str is UTF-8 encoded; bytes are used as they are."""
    c = []

    def add(name, s):
        c.append((name, s if isinstance(s, bytes) else s.encode("utf-8")))

    # basic English, case
    for i, s in enumerate(["a photo of a cat", "A dog jumps into a pool", "the car turns left", "hello world",
                           "Hello, World!", "HELLO WORLD", "hElLo WoRlD", "a", "I", "CLIP", "iPhone",
                           "McDonald's", "NASA launches a rocket", "camelCaseWord", "snake_case_word",
                           "kebab-case-word", "ALL CAPS SENTENCE HERE", "Title Case Words Everywhere",
                           "a man riding a horse on the beach at sunset", "two people shaking hands"]):
        add(f"english-{i}", s)
    # punctuation
    for i, s in enumerate(["...", "!!!", "?!", "a,b,c", "(parenthesis)", "[brackets] {braces}",
                           "quotes \"double\" and 'single'", "semi;colon:colon", "100% sure & more", "a--b",
                           "a\u2014b em dash", "\u201csmart quotes\u201d \u2018single\u2019", "\u00abguillemets\u00bb",
                           "\u00bfQu\u00e9? \u00a1S\u00ed!", "\u2026ellipsis", "~`^|\\<>", "<>", "<|", "|>",
                           "end.", "x.y.z", "a_b-c.d/e\\f", "#hashtag @user $100", "*bold* _italic_"]):
        add(f"punct-{i}", s)
    # special token strings: found after NFC + lower case (the published checkpoints' "normalized" tokens)
    for i, s in enumerate(["<|startoftext|>", "<|endoftext|>", "<|StartOfText|>", "<|ENDOFTEXT|>",
                           "x<|endoftext|>y", "a <|startoftext|> b <|endoftext|> c", "<|startoftext|",
                           "<<|endoftext|>>", "!<|endoftext|>", "!<|EndOfText|>", "< |endoftext| >",
                           "<|endoftext|><|endoftext|><|startoftext|>", "caf\u00e9<|endoftext|>\u0301x",
                           "<|endoftext|>" * 90, "<|endoftext|>\u0338", "<\u0338|endoftext|>",
                           "<|END OF TEXT|>", "<|endoftext|\uff1e", "\u212a<|endoftext|>", "'s<|endoftext|>'s",
                           "a\t<|EndOfText|>\n", "<|start<|endoftext|>oftext|>"]):
        add(f"special-{i}", s)
    # digits
    for i, s in enumerate(["2024", "3.14159", "1,000,000", "007", "12:30pm", "9/11", "1st 2nd 3rd 4th", "x2",
                           "2x", "\u00bd \u00bc \u00be", "\u00b2\u00b3", "\u2460\u2461\u2462", "\u216b roman",
                           "\u0663\u0664\u0665 arabic-indic", "\u0967\u0968\u0969 devanagari",
                           "\uff11\uff12\uff13 fullwidth", "0x1F", "-5 +7", "1e10", "3d printing",
                           "\U0001d7d8\U0001d7d9 math digits", "\U00010d40\U00010d41 garay digits (Unicode 16)"]):
        add(f"digits-{i}", s)
    # accents, case mapping, NFC
    for i, s in enumerate(["caf\u00e9", "na\u00efve", "r\u00e9sum\u00e9", "Cr\u00e8me Br\u00fbl\u00e9e",
                           "S\u00e3o Paulo", "Z\u00fcrich", "\u00c5ngstr\u00f6m", "\u00d8resund", "stra\u00dfe",
                           "\u00c6\u00d8\u00c5", "\u0141\u00f3d\u017a", "\u0130stanbul", "\u0131i",
                           "\u01c4 \u01c5 \u01c6", "\u03a3\u0391\u03a3 \u039f\u0394\u039f\u03a3",
                           "\u01c5ungla", "cafe\u0301", "e\u0301\u0301", "a\u0328\u0301", "a\u0301\u0328",
                           "\u0301 leading mark", "\u212b angstrom sign", "\u212a kelvin", "\u2126 ohm",
                           "\u1e9b\u0323", "q\u0307\u0323", "\u1100\u1161\u11a8 hangul jamo", "\u1100\u1161 \u11a8",
                           "\ufb01 ligature", "\uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48",
                           "\uff21\uff22\uff23", "\u338f", "\u1f8f", "\u1ffc", "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
                           "\u0131\u011f\u00fc\u015f\u00f6\u00e7 \u0130\u011e\u00dc\u015e\u00d6\u00c7",
                           "\u13a0\u13a1\u13a2 cherokee", "\U00010400\U00010401 deseret",
                           "\u1c89\u1c8a tje (Unicode 16)", "\u00e9 vs e\u0301", "e\u0301\u0316",
                           "\u0344", "\u0958 devanagari qa", "\u2000\u2001 spaces", "\U000110ab kaithi",
                           "\U00011935\U00011930 dives akuru", "\U00011938"]):
        add(f"accents-{i}", s)
    # CJK
    for i, s in enumerate(["\u6771\u4eac\u30bf\u30ef\u30fc", "\u5317\u4eac\u6b22\u8fce\u4f60",
                           "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
                           "\u6f22\u5b57\u304b\u306a\u30ab\u30ca", "\u4e2d\u6587 English \u6df7\u5408",
                           "\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8", "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",
                           "\uff76\uff80\uff76\uff85 halfwidth", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
                           "\u3007\u4e00\u4e8c\u4e09", "\U00020000\U00020001 ext-b", "\U00030000 ext-g",
                           "\U0002ebf0 ext-i", "\u732b\u306e\u5199\u771f", "\u4e00\u500b\u4eba\u5728\u6d77\u908a\u8d70"]):
        add(f"cjk-{i}", s)
    # emoji and symbols
    for i, s in enumerate(["\U0001f642", "I \u2764\ufe0f NY", "\U0001f44d\U0001f3fd",
                           "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
                           "\U0001f1fa\U0001f1f8\U0001f1eb\U0001f1f7 flags", "\U0001f436\U0001f431",
                           "\U0001f600\U0001f603\U0001f604", "\u2615 coffee", "\u2728sparkles\u2728", "1\ufe0f\u20e3",
                           "\U0001f3f3\ufe0f\u200d\U0001f308", "party \U0001f389", "\U0001f916\U0001f9be",
                           "\u00a9\u00ae\u2122", "snowman \u2603", "math \u2211\u222b\u221a\u221e\u2248\u2260",
                           "currency \u20ac\u00a3\u00a5\u20b9\u20bf", "arrows \u2192\u2190\u2191\u2193",
                           "box \u250c\u2500\u2510", "braille \u2801\u2803", "music \U0001d11e",
                           "\U0001d400\U0001d401\U0001d402 math bold", "\u210c\u2111", "\ufdfa",
                           "\u24b6\u24d1 circled", "\u01c8 titlecase", "\ufffd replacement char"]):
        add(f"emoji-{i}", s)
    # empty and whitespace
    for i, s in enumerate(["", " ", "   ", "\t", "\n", "\r\n", " \t\n\r\x0b\x0c", "\u00a0", "\u3000",
                           "\u2028\u2029", "\u0085", "\u200b", "\ufeff", "\u180e", "\x1c\x1d\x1e\x1f",
                           "  leading and trailing  ", "multiple   spaces   between", "tab\tseparated\tvalues",
                           "new\nline\nseparated", "mixed \t\n whitespace", "\u2000\u2001\u2002\u200a",
                           "a\u00a0b", "a\u3000b", "a\x1cb", "a\u0085b", "a\u202fb\u205fc\u1680d"]):
        add(f"space-{i}", s)
    # contractions
    for i, s in enumerate(["don't", "DON'T", "I'm", "you're", "we've", "they'll", "he'd", "it's", "isn't",
                           "'s", "'S", "''s", "'tis", "rock'n'roll", "o'clock", "l'amour", "'re'", "'ve",
                           "'ll", "'d", "'m", "' s", "it\u2019s", "y'all'd've", "!'s", "'", "'x", "'r",
                           "'l", "'v"]):
        add(f"contraction-{i}", s)
    # URLs, paths
    for i, s in enumerate(["https://example.com/path?q=1&x=y#frag", "www.google.com", "user@example.com",
                           "http://localhost:8080/v1/search", "file:///tmp/a.mp4",
                           "C:\\Users\\me\\video.mp4", "https://www.youtube.com/watch?v=dQw4w9WgXcQ"]):
        add(f"url-{i}", s)
    # combining characters, other scripts
    for i, s in enumerate(["Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307l\u036e\u0312\u036bg\u0301\u0317\u034eo\u032f\u0313",
                           "a\u0300\u0301\u0302\u0303", "\u0915\u094d\u0937", "n\u0303 vs \u00f1",
                           "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", "\u041f\u0420\u0418\u0412\u0415\u0422",
                           "\u0401\u043b\u043a\u0430", "\u0423\u043a\u0440\u0430\u0457\u043d\u0430", "\u0402\u043e\u0440\u0452\u0435",
                           "\u0439 vs \u0438\u0306", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
                           "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
                           "\u0627\u0644\u0633\u0651\u064e\u0644\u0627\u0645", "\u0627\u0644\u0633\u064e\u0651\u0644\u0627\u0645",
                           "\u0641\u0627\u0631\u0633\u06cc \u06f1\u06f2\u06f3", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
                           "\u05e2\u05b4\u05d1\u05b0\u05e8\u05b4\u05d9\u05ea", "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
                           "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
                           "\u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd", "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
                           "\u0532\u0561\u0580\u0565\u0582", "\u1230\u120b\u121d", "\u0b47\u0b3e oriya", "\u0cc6\u0cc2 kannada",
                           "\u2c00\u2c01 glagolitic", "\u10a0 georgian capital"]):
        add(f"script-{i}", s)
    # zero-width and control characters
    for i, s in enumerate(["a\u200bb", "a\u200cb", "a\u200db", "a\u2060b", "\ufeffBOM start", "soft\u00adhyphen",
                           "\u202eRTL override", "\u200e\u200f marks", "\x01\x02\x03", "bell\x07", "\x7f DEL",
                           "\x1b[31mred\x1b[0m", "tab\x0bvertical"]):
        add(f"control-{i}", s)
    # invalid UTF-8 (decoded with errors="replace" by both sides)
    for i, s in enumerate([b"\xff", b"\xfe\xff", b"caf\xe9", b"\xc3", b"\xc3\x28", b"\xe2\x82", b"\xe2\x82\x28",
                           b"\xf0\x9f\x98", b"\xf0\x9f\x98\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\xaf",
                           b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80",
                           b"\xf5\x80", b"\x80\x80\x80", b"a\xffb\xfec", b"\xef\xbb\xbfBOM utf8",
                           b"\xf8\x88\x80\x80\x80", b"ok \xe2\x9c\x93 then \xe2\x9c bad", b"\xc3\xa9\xc3",
                           b"\xf0\x9f", b"\xf4\x8f\xbf\xbf end"]):
        add(f"invalid-{i}", s)
    # long inputs (truncation)
    add("long-lorem", LOREM)
    add("long-a-space", "a " * 100)
    add("long-75-tokens", "a " * 75)
    add("long-76-tokens", "a " * 76)
    add("long-74-tokens", "a " * 74)
    add("long-one-word", "word" * 100)
    add("long-letters", "a" * 5000)
    add("long-cjk", "\u732b\u306e\u5199\u771f" * 60)
    add("long-punct", "!?" * 300)
    add("long-digits", "1234567890" * 20)
    add("long-emoji", "\U0001f642\U0001f389" * 50)
    add("long-mixed", ("The quick brown fox, \u00e9t\u00e9 2024! \u6771\u4eac \U0001f642 don't " * 12))
    add("long-whitespace-then-text", " " * 3000 + "finally a word")
    add("long-lorem-newlines", LOREM.replace(" ", "\n"))
    return c


def random_cases(n, seed=77):
    rng = random.Random(seed)
    pools = [
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
        list("0123456789"),
        list(" \t\n\r\x0b\x0c\u00a0\u3000\u2028\u0085\u1680\u202f"),
        list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
        ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'RE", "<|endoftext|>", "<|startoftext|>",
         "<|EndOfText|>", "<|", "|>"],
        [chr(c) for c in range(0x300, 0x370)] + ["\u0323", "\u0328", "\u0651", "\u064e", "\u05b4", "\u093c"],
        list("\u00e9\u00e8\u00ea\u00eb\u00c9\u00c5\u00d8\u00df\u0130\u0131\u01c5\u03a3\u03c2\u1e9e\u212b\u212a"),
        list("\u4e00\u4e8c\u4e09\u732b\u72ac\u3042\u30a2\ud55c\uad6d\u1100\u1161\u11a8"),
        ["\U0001f642", "\U0001f389", "\u2764\ufe0f", "\U0001f44d\U0001f3fd", "\u200d", "\U0001f1fa\U0001f1f8"],
        list("\u041f\u0440\u0438\u0432\u0435\u0442\u0645\u0631\u062d\u0628\u0627\u05e9\u05dc\u05d5\u05dd\u0e2a\u0e27"),
        list("\u200b\u200c\u200d\u2060\ufeff\u00ad\u202e\x01\x07\x1b\x1c\x7f\ufffd"),
        [chr(rng.randrange(0x20, 0x30000)) for _ in range(200)],
    ]
    bad_bytes = [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\x80", b"\xc0\xaf", b"\xf5"]
    out = []
    for i in range(n):
        parts = []
        for _ in range(rng.randint(1, 40)):
            pool = rng.choice(pools)
            s = rng.choice(pool)
            if pool is pools[0] and rng.random() < 0.7:
                s = "".join(rng.choice(pools[0]) for _ in range(rng.randint(1, 9)))
            parts.append(s.replace("\0", "").encode("utf-8", "surrogatepass"))
            if rng.random() < 0.03:
                parts.append(rng.choice(bad_bytes))
        b = b"".join(parts)
        # surrogate code points from the random pool are invalid UTF-8 too: keep them, they exercise the decoder
        out.append((f"random-{i}", b))
    return out


def tokenize_all(texts, which):
    """Token ids for TEXTS (str). WHICH: 'default' (transformers' default CLIP tokenizer),
    'slow' (transformers 4.x pure-Python CLIPTokenizer), 'fast' (CLIPTokenizerFast)."""
    import transformers
    if which == "default":
        from transformers import CLIPTokenizer as cls  # transformers 5: the Rust-backed tokenizer
        if int(transformers.__version__.split(".")[0]) < 5:
            from transformers import CLIPTokenizerFast as cls
    elif which == "slow":
        from transformers import CLIPTokenizer as cls
    else:
        from transformers import CLIPTokenizerFast as cls
    tok = cls.from_pretrained(VOCAB_DIR)
    ids = [tok(t, truncation=True, max_length=CONTEXT)["input_ids"] for t in texts]
    return ids, f"transformers {transformers.__version__} {type(tok).__name__}", tok


def emit_slow(inp, outp):
    """Child mode (run by --slow-python): slow and fast ids of the texts in INP, as JSON to OUTP."""
    texts = json.load(open(inp))
    slow, slow_name, _ = tokenize_all(texts, "slow")
    fast, fast_name, _ = tokenize_all(texts, "fast")
    try:
        import ftfy  # noqa: F401
        ftfy_state = "installed"
    except ImportError:
        ftfy_state = "not installed"
    json.dump({"slow": slow, "fast": fast, "slow_name": slow_name, "fast_name": fast_name, "ftfy": ftfy_state},
              open(outp, "w"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slow-python")
    ap.add_argument("--emit-slow", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.emit_slow:
        emit_slow(*a.emit_slow)
        return
    import tokenizers
    import transformers

    cases = curated()
    n_curated = len(cases)
    cases += random_cases(300)
    texts = [b.decode("utf-8", "replace") for _, b in cases]
    ids, name, tok = tokenize_all(texts, "default")
    for (n, _), t, i in zip(cases, texts, ids):
        assert 2 <= len(i) <= CONTEXT and i[0] == 49406 and i[-1] == 49407, (n, i)
    os.makedirs(OUT_DIR, exist_ok=True)
    doc = {
        "about": "CLIP token ids from Hugging Face transformers for engine/tokenizer.c; "
                 "made by tests/tools/gen_tokenizer_fixtures.py; input bytes are base64; invalid UTF-8 "
                 "was decoded with errors='replace' before tokenizing",
        "reference": f"{name}, tokenizers {tokenizers.__version__}, truncation=True, max_length={CONTEXT}",
        "vocab": "tests/fixtures/clip-vocab",
        "context_len": CONTEXT,
        "cases": [{"name": n, "b64": base64.b64encode(b).decode(), "ids": i} for (n, b), i in zip(cases, ids)],
    }
    path = os.path.join(OUT_DIR, "clip_ids_77.json")
    with open(path, "w") as f:
        f.write("{\n")
        for k in ("about", "reference", "vocab", "context_len"):
            f.write(f"  {json.dumps(k)}: {json.dumps(doc[k], ensure_ascii=True)},\n")
        f.write('  "cases": [\n')
        f.write(",\n".join("    " + json.dumps(c, ensure_ascii=True, separators=(",", ":")) for c in doc["cases"]))
        f.write("\n  ]\n}\n")
    long = sum(1 for i in ids if len(i) == CONTEXT)
    print(f"wrote {path}: {len(cases)} cases ({n_curated} curated, {len(cases) - n_curated} random, "
          f"{long} truncated at {CONTEXT}); reference {doc['reference']}")

    if a.slow_python:
        with tempfile.TemporaryDirectory() as d:
            inp, outp = os.path.join(d, "in.json"), os.path.join(d, "out.json")
            json.dump(texts, open(inp, "w"))
            subprocess.run([a.slow_python, os.path.abspath(__file__), "--emit-slow", inp, outp], check=True)
            r = json.load(open(outp))
        write_slow_report(cases, texts, ids, r, doc["reference"], tok)


def write_slow_report(cases, texts, ids, r, ref, tok):
    fast_same = sum(1 for x, y in zip(ids, r["fast"]) if x == y)
    diffs = [(c[0], t, x, y) for c, t, x, y in zip(cases, texts, ids, r["slow"]) if x != y]
    fast_diffs = [(c[0], t, x, y) for c, t, x, y in zip(cases, texts, ids, r["fast"]) if x != y]
    w = []
    w.append("# CLIP tokenizer: slow (Python) vs fast (Rust) on the fixture strings")
    w.append("")
    w.append("Generated by `tests/tools/gen_tokenizer_fixtures.py --slow-python ...`. The reference the C")
    w.append(f"tokenizer matches is {ref} (clip_ids_77.json). Compared here:")
    w.append(f"{r['slow_name']} (pure Python; ftfy {r['ftfy']}) and {r['fast_name']}.")
    w.append("")
    w.append(f"- {r['fast_name']}: {fast_same} of {len(ids)} strings identical to the reference.")
    w.append(f"- {r['slow_name']} (slow): {len(ids) - len(diffs)} of {len(ids)} identical, {len(diffs)} differ.")
    w.append("")
    w.append("Why the slow tokenizer differs. Without ftfy, transformers 4.x's slow CLIPTokenizer cleans text with")
    w.append("BERT's BasicTokenizer(strip_accents=False, do_split_on_punc=False) instead of the Rust pipeline's")
    w.append("NFC + whitespace collapse + lower case:")
    w.append("- it deletes control and format characters (Cc, Cf: zero-width space/joiner, BOM, soft hyphen,")
    w.append("  bidi marks, ESC, DEL, ...), U+0000 and U+FFFD - so replaced invalid UTF-8 vanishes - and every")
    w.append("  code point unassigned in Python's Unicode 14 (category Cn), e.g. Unicode 15/16 letters and digits;")
    w.append("- it treats U+001C..U+001F as whitespace (str.isspace), the Rust regex \\s does not;")
    w.append("- it puts spaces around every CJK ideograph, so each becomes its own word (different BPE);")
    w.append("- it lower-cases whole words with Python's str.lower(): final sigma becomes \u03c2;")
    w.append("- its regex is Python's `regex` module (another Unicode version) with IGNORECASE;")
    w.append("- special tokens: the Rust pipeline (the published checkpoints mark them \"normalized\") finds")
    w.append("  '<|startoftext|>' / '<|endoftext|>' anywhere in the NFC-normalised, lower-cased text, also inside")
    w.append("  a run of punctuation ('!<|EndOfText|>') but not when NFC changed it ('<|endoftext|>' + U+0338")
    w.append("  composes '>' into U+226F). The slow one splits exact spellings out of the raw text and, through")
    w.append("  its pre-seeded BPE cache, turns a regex token equal to one of them (any case) into the special id.")
    w.append("")
    if fast_diffs:
        w.append(f"## {r['fast_name']} vs the reference ({len(fast_diffs)})")
        w.append("")
        for n, t, x, y in fast_diffs:
            w.append(f"- `{n}` {json.dumps(t[:80])}: reference {x[:20]}, 4.x fast {y[:20]}")
        w.append("")
    rnd = [d[0] for d in diffs if d[0].startswith("random-")]
    diffs = [d for d in diffs if not d[0].startswith("random-")]
    w.append(f"## Random strings: {len(rnd)} of {sum(1 for c in cases if c[0].startswith('random-'))} differ")
    w.append("")
    w.append(", ".join(rnd))
    w.append("")
    w.append(f"## Every difference on the hand-picked strings ({len(diffs)})")
    w.append("")
    w.append("Tokens shown with the byte-level characters of the vocabulary (</w> ends a word), from two")
    w.append("before the first difference.")
    w.append("")
    for n, t, x, y in diffs:
        # First differing position, with some context.
        k = next((j for j in range(min(len(x), len(y))) if x[j] != y[j]), min(len(x), len(y)))
        lo = max(0, k - 2)
        w.append(f"- `{n}` {json.dumps(t[:60], ensure_ascii=True)}{'...' if len(t) > 60 else ''}")
        w.append(f"  - fast: ...{tok.convert_ids_to_tokens(x[lo:k + 4])}")
        w.append(f"  - slow: ...{tok.convert_ids_to_tokens(y[lo:k + 4])}")
    p = os.path.join(OUT_DIR, "slow_vs_fast.md")
    with open(p, "w") as f:
        f.write("\n".join(w) + "\n")
    print(f"wrote {p}: slow differs on {len(diffs) + len(rnd)} of {len(ids)}, 4.x fast on {len(fast_diffs)}")


if __name__ == "__main__":
    main()
