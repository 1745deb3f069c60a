#!/usr/bin/env python3
"""gen_unicode_tables.py - generate engine/unicode_tables.h for the CLIP tokenizer (engine/tokenizer.c).

The tokenizer must do what Hugging Face's CLIP tokenizer (the Rust `tokenizers` library behind
transformers' CLIPTokenizer / CLIPTokenizerFast) does, character for character:

  normalizer     NFC, then Replace(\\s+ -> " "), then Lowercase
  pre-tokenizer  Split(<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+)
                 then ByteLevel (GPT-2 regex, byte -> printable character map)

So it needs four Unicode properties, and needs them in the versions that library uses, which are
not one version: its regexes run on Oniguruma (\\p{L}, \\p{N}, \\s), Lowercase is Rust's
char::to_lowercase, and NFC comes from the unicode-normalization-alignments crate. Python's
unicodedata is yet another version (unidata_version below). Hence:

  * \\p{L}, \\p{N}, \\s and the lower-case mapping are read from the tokenizers library itself, by
    running its own Regex / Lowercase normalizer over every code point;
  * NFC data (canonical decompositions, combining classes, compositions, Hangul algorithmically
    in C) start from Python's unicodedata and are then checked code point by code point against
    the library's NFC/NFD; where the library's older tables differ, the library wins, and every
    difference is listed in the generated header.

Finally a Python model of the C algorithm, fed the generated tables, is compared with the
library on every code point and on random strings rich in combining marks.

Usage (needs the reference venv; takes about a minute):
  python3 -m venv /opt/mdref && /opt/mdref/bin/pip install torch transformers safetensors numpy pillow
  /opt/mdref/bin/python tests/tools/gen_unicode_tables.py [--out engine/unicode_tables.h]
"""
import argparse
import os
import random
import sys
import unicodedata

import tokenizers
from tokenizers import Regex, normalizers, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CPS = [c for c in range(0x110000) if not (0xD800 <= c <= 0xDFFF)]
SEP = "\x00"  # a starter that neither composes, decomposes, lower-cases nor matches \p{L}/\p{N}/\s

SBASE, LBASE, VBASE, TBASE = 0xAC00, 0x1100, 0x1161, 0x11A7
LCOUNT, VCOUNT, TCOUNT = 19, 21, 28
NCOUNT, SCOUNT = VCOUNT * TCOUNT, 19 * 21 * 28


def per_char(fn, cps):
    """Apply a tokenizers normalizer to each code point alone, in batches joined by SEP."""
    out = {c: fn(chr(c)) for c in cps if chr(c) == SEP}
    cps = [c for c in cps if chr(c) != SEP]
    CH = 8192
    for i in range(0, len(cps), CH):
        chunk = cps[i : i + CH]
        res = fn(SEP.join(chr(c) for c in chunk)).split(SEP)
        assert len(res) == len(chunk), (hex(chunk[0]), len(res), len(chunk))
        for c, r in zip(chunk, res):
            out[c] = r
    return out


def regex_set(pat):
    """Code points that the library's regex engine (Oniguruma) matches with PAT."""
    sp = pre_tokenizers.Split(Regex(pat), behavior="removed", invert=False)
    res = set()
    CH = 4096
    for i in range(0, len(CPS), CH):
        chunk = CPS[i : i + CH]
        kept = set(map(ord, "".join(p for p, _ in sp.pre_tokenize_str("".join(chr(c) for c in chunk)))))
        res.update(c for c in chunk if c not in kept)
    return res


def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def fmt_list(cps, n=12):
    cps = sorted(cps)
    s = " ".join(f"U+{c:04X}" for c in cps[:n])
    return (s + (f" ... ({len(cps)})" if len(cps) > n else "")) if cps else "none"


# ---- a Python model of the C NFC, driven by the generated tables ----------------------------

def make_nfc(ccc, decomp, comp):
    def full_decomp(c, out):
        if SBASE <= c < SBASE + SCOUNT:
            s = c - SBASE
            out.append(LBASE + s // NCOUNT)
            out.append(VBASE + (s % NCOUNT) // TCOUNT)
            if s % TCOUNT:
                out.append(TBASE + s % TCOUNT)
            return
        d = decomp.get(c)
        if d is None:
            out.append(c)
            return
        full_decomp(d[0], out)
        if d[1]:
            full_decomp(d[1], out)

    def compose(a, b):
        if LBASE <= a < LBASE + LCOUNT and VBASE <= b < VBASE + VCOUNT:
            return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT
        if SBASE <= a < SBASE + SCOUNT and (a - SBASE) % TCOUNT == 0 and TBASE < b < TBASE + TCOUNT:
            return a + (b - TBASE)
        return comp.get((a, b))

    def nfc(s):
        buf = []
        for ch in s:
            full_decomp(ord(ch), buf)
        # canonical ordering: stable sort of each run of non-starters
        i = 0
        while i < len(buf):
            if ccc.get(buf[i], 0) == 0:
                i += 1
                continue
            j = i
            while j < len(buf) and ccc.get(buf[j], 0) != 0:
                j += 1
            buf[i:j] = sorted(buf[i:j], key=lambda c: ccc.get(c, 0))
            i = j
        if not buf:
            return ""
        out = [buf[0]]
        sp = 0
        last = ccc.get(buf[0], 0)
        if last != 0:
            last = 256
        for c in buf[1:]:
            cc = ccc.get(c, 0)
            x = compose(out[sp], c)
            if x is not None and (last < cc or last == 0):
                out[sp] = x
                continue
            if cc == 0:
                sp = len(out)
            last = cc
            out.append(c)
        return "".join(map(chr, out))

    return nfc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "engine", "unicode_tables.h"))
    a = ap.parse_args()
    notes = []

    # ---- character classes of the pre-tokenizer regex, from Oniguruma --------------------------
    L = regex_set(r"\p{L}")
    N = regex_set(r"\p{N}")
    S = regex_set(r"\s")
    assert not (L & N) and not (L & S) and not (N & S)
    pyL = {c for c in CPS if unicodedata.category(chr(c))[0] == "L"}
    pyN = {c for c in CPS if unicodedata.category(chr(c))[0] == "N"}
    pyS = {c for c in CPS if chr(c).isspace()}
    notes.append(f"\\p{{L}}: {len(L)} code points; unicodedata {unicodedata.unidata_version} has {len(pyL)}; "
                 f"library only: {fmt_list(L - pyL, 6)}; unicodedata only: {fmt_list(pyL - L, 6)}")
    notes.append(f"\\p{{N}}: {len(N)}; unicodedata {len(pyN)}; library only: {fmt_list(N - pyN, 6)}; "
                 f"unicodedata only: {fmt_list(pyN - N, 6)}")
    notes.append(f"\\s: {len(S)} ({fmt_list(S, 30)}); str.isspace() also has {fmt_list(pyS - S)}")

    # ---- lower case, from Rust's char::to_lowercase via the Lowercase normalizer ---------------
    low = per_char(normalizers.Lowercase().normalize_str, CPS)
    lower1 = {c: ord(r) for c, r in low.items() if len(r) == 1 and ord(r) != c}
    lowerm = {c: r for c, r in low.items() if len(r) > 1}
    assert all(len(r) >= 1 for r in low.values())
    assert set(lowerm) == {0x130} and lowerm[0x130] == "i\u0307", lowerm
    pylow = [c for c in CPS if chr(c).lower() != low[c]]
    notes.append(f"lower case: {len(lower1)} single mappings + U+0130 -> 0069 0307; differs from Python's "
                 f"str.lower() (per code point) at {fmt_list(pylow, 6)}")

    # ---- NFC: unicodedata, checked against the library's NFD/NFC ------------------------------
    decomp = {}
    for c in CPS:
        d = unicodedata.decomposition(chr(c))
        if d and not d.startswith("<"):
            p = [int(x, 16) for x in d.split()]
            assert 1 <= len(p) <= 2
            decomp[c] = (p[0], p[1] if len(p) == 2 else 0)
    ccc = {c: unicodedata.combining(chr(c)) for c in CPS if unicodedata.combining(chr(c))}

    tok_nfd = per_char(normalizers.NFD().normalize_str, CPS)
    dropped_decomp = []
    for c in CPS:
        py = unicodedata.normalize("NFD", chr(c))
        if tok_nfd[c] != py:
            if tok_nfd[c] == chr(c) and c in decomp:
                dropped_decomp.append(c)
                del decomp[c]
            else:
                sys.exit(f"NFD of U+{c:04X}: library {tok_nfd[c]!r}, unicodedata {py!r}: not handled")
    notes.append(f"NFC: canonical decompositions the library lacks (dropped): {fmt_list(dropped_decomp)}")

    # Combining classes: the library's tables are older, so marks added since have class 0 there.
    # Class zero or not is seen from reordering against U+0334 (ccc 1) and U+0345 (ccc 240).
    marks = sorted(ccc)
    probe = []
    for c in marks:
        probe.append("a" + chr(c) + "\u0334" if ccc[c] > 1 else "a\u0345" + chr(c))
    res = normalizers.NFD().normalize_str(SEP.join(probe)).split(SEP)
    zeroed = []
    for c, s, r in zip(marks, probe, res):
        if r == s:  # not reordered: the library gives c class 0
            zeroed.append(c)
            del ccc[c]
        elif r != unicodedata.normalize("NFD", s):
            sys.exit(f"ccc probe of U+{c:04X}: {r!r}")
    notes.append(f"NFC: marks with class 0 in the library (newer than its tables): {fmt_list(zeroed, 8)}")
    # The remaining classes must agree with every class value: reorder against one old mark per class.
    ref = {}
    for c in sorted(ccc):
        if c < 0x2000 or 0x3000 <= c < 0x3100:
            ref.setdefault(ccc[c], c)
    probe = [f"a{chr(c)}{chr(m)}" for c in sorted(ccc) for m in ref.values()]
    probe += [f"a{chr(m)}{chr(c)}" for c in sorted(ccc) for m in ref.values()]
    res = normalizers.NFD().normalize_str(SEP.join(probe)).split(SEP)
    bad = [s for s, r in zip(probe, res) if r != unicodedata.normalize("NFD", s)]
    if bad:
        sys.exit(f"combining classes disagree: {[hex(ord(x)) for x in bad[0]]} ... ({len(bad)})")

    comp = {}
    for c, (x, y) in decomp.items():
        if y and unicodedata.normalize("NFC", chr(c)) == chr(c):
            comp[(x, y)] = c
    pairs = sorted(comp)
    res = normalizers.NFC().normalize_str(SEP.join(chr(x) + chr(y) for x, y in pairs)).split(SEP)
    dropped_comp = [comp[p] for p, r in zip(pairs, res) if r != chr(comp[p])]
    for c in dropped_comp:
        del comp[decomp[c]]
    notes.append(f"NFC: compositions the library lacks (dropped): {fmt_list(dropped_comp)}")

    # ---- check the model of the C algorithm against the library -------------------------------
    nfc = make_nfc(ccc, decomp, comp)
    tok_nfc_fn = normalizers.NFC().normalize_str
    tok_nfc = per_char(tok_nfc_fn, CPS)
    bad = [c for c in CPS if nfc(chr(c)) != tok_nfc[c]]
    if bad:
        sys.exit(f"NFC model differs from the library on single code points: {fmt_list(bad)}")
    rng = random.Random(1234)
    starters = [c for c in list(decomp) + [x for x, _ in comp] if ccc.get(c, 0) == 0] + list(range(0x61, 0x7B))
    starters += list(range(0x1100, 0x1113)) + list(range(0xAC00, 0xAC40)) + list(range(0x1161, 0x1176))
    nonstart = sorted(set(ccc) | {y for _, y in comp} | set(range(0x11A8, 0x11C3)) | set(zeroed) |
                      set(dropped_decomp) | {0x11930, 0x11935})
    tests = []
    for _ in range(60000):
        n = rng.randint(1, 6)
        tests.append("".join(chr(rng.choice(starters) if rng.random() < 0.4 else rng.choice(nonstart))
                             for _ in range(n)))
    res = tok_nfc_fn(SEP.join(tests)).split(SEP)
    bad = [t for t, r in zip(tests, res) if nfc(t) != r]
    if bad:
        sys.exit(f"NFC model differs from the library on {len(bad)} random strings, e.g. "
                 f"{[hex(ord(x)) for x in bad[0]]}")
    notes.append(f"check: the C algorithm's model equals the library's NFC on all {len(CPS)} code points "
                 f"and {len(tests)} random mark-heavy strings")

    # ---- emit -------------------------------------------------------------------------------
    cls_ranges = [(s, e, 1) for s, e in ranges(L)] + [(s, e, 2) for s, e in ranges(N)] + \
                 [(s, e, 3) for s, e in ranges(S)]
    cls_ranges.sort()
    ccc_ranges = []
    for c in sorted(ccc):
        if ccc_ranges and ccc_ranges[-1][1] == c - 1 and ccc_ranges[-1][2] == ccc[c]:
            ccc_ranges[-1][1] = c
        else:
            ccc_ranges.append([c, c, ccc[c]])

    w = []
    w.append("/* unicode_tables.h - Unicode data for the CLIP tokenizer (engine/tokenizer.c). GENERATED, do not edit:")
    w.append(" *   /opt/mdref/bin/python tests/tools/gen_unicode_tables.py")
    w.append(f" * Source: tokenizers {tokenizers.__version__} (what transformers' CLIP tokenizer runs: Oniguruma")
    w.append(" * for \\p{L} \\p{N} \\s, Rust's char::to_lowercase, the unicode-normalization-alignments crate for")
    w.append(f" * NFC) probed code point by code point, and Python {sys.version.split()[0]} unicodedata "
             f"{unicodedata.unidata_version} for the")
    w.append(" * NFC data, corrected where the library's tables are older. Differences found:")
    for n in notes:
        w.append(" *   - " + n)
    w.append(" * Only tokenizer.c includes this file. */")
    w.append("#ifndef MD_UNICODE_TABLES_H")
    w.append("#define MD_UNICODE_TABLES_H")
    w.append("")
    w.append("#include <stdint.h>")
    w.append("")
    w.append("enum { MD_UC_OTHER = 0, MD_UC_LETTER = 1, MD_UC_NUMBER = 2, MD_UC_SPACE = 3 };")
    w.append("")

    def table(decl, rows, per_line):
        w.append(decl + " = {")
        for i in range(0, len(rows), per_line):
            w.append("    " + " ".join(rows[i : i + per_line]))
        w.append("};")
        w.append("")

    w.append("/* \\p{L} / \\p{N} / \\s as the library's Oniguruma sees them: sorted, disjoint ranges. */")
    w.append("typedef struct md_uc_class_range { uint32_t lo, hi; uint8_t cls; } md_uc_class_range;")
    table(f"static const md_uc_class_range md_uc_class[{len(cls_ranges)}]",
          [f"{{0x{s:X},0x{e:X},{k}}}," for s, e, k in cls_ranges], 5)
    w.append("/* Simple lower-case mappings (the one multi-character mapping, U+0130, is in the code). */")
    w.append("typedef struct md_uc_map { uint32_t cp, to; } md_uc_map;")
    table(f"static const md_uc_map md_uc_lower[{len(lower1)}]",
          [f"{{0x{c:X},0x{lower1[c]:X}}}," for c in sorted(lower1)], 6)
    w.append("/* Canonical combining classes, non-zero only: sorted ranges of one class. */")
    w.append("typedef struct md_uc_ccc_range { uint32_t lo, hi; uint8_t ccc; } md_uc_ccc_range;")
    table(f"static const md_uc_ccc_range md_uc_ccc[{len(ccc_ranges)}]",
          [f"{{0x{s:X},0x{e:X},{k}}}," for s, e, k in ccc_ranges], 5)
    w.append("/* One level of canonical decomposition (b == 0: a singleton), sorted by cp; Hangul is in code. */")
    w.append("typedef struct md_uc_decomp { uint32_t cp, a, b; } md_uc_decomp;")
    table(f"static const md_uc_decomp md_uc_decomp_tab[{len(decomp)}]",
          [f"{{0x{c:X},0x{decomp[c][0]:X},0x{decomp[c][1]:X}}}," for c in sorted(decomp)], 4)
    w.append("/* Primary composites: (a, b) -> cp, sorted by (a, b); Hangul is in code. */")
    w.append("typedef struct md_uc_comp { uint32_t a, b, cp; } md_uc_comp;")
    table(f"static const md_uc_comp md_uc_comp_tab[{len(comp)}]",
          [f"{{0x{x:X},0x{y:X},0x{comp[(x, y)]:X}}}," for x, y in sorted(comp)], 4)
    w.append("#endif")
    with open(a.out, "w") as f:
        f.write("\n".join(w) + "\n")
    for n in notes:
        print(n)
    print(f"wrote {a.out}: {len(cls_ranges)} class ranges, {len(lower1)} lower-case mappings, "
          f"{len(ccc_ranges)} ccc ranges, {len(decomp)} decompositions, {len(comp)} compositions")


if __name__ == "__main__":
    main()
