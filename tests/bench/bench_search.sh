#!/usr/bin/env bash
# bench_search.sh - query latency of momentd's segment index next to FAISS IndexFlatIP, on the same
# vectors and the same cores, printed as one Markdown table (`make bench-search`; not a test).
#
#   bash tests/bench/bench_search.sh [BENCH_BIN]        (default build/bench_search)
#
# For each data set (clustered, random) and size (10k, 100k, 1M segments of 512 values, inserted
# directly with md_index_add): bench_search builds the index and times momentd's search (int8 first
# pass + exact re-scoring + moments), its exact scan, and, with the first data set, text encoding
# (md_clip_embed_text) and text -> moments as one chain; it writes the vectors, queries and its rankings to a temporary
# directory, where bench_search_faiss.py builds IndexFlatIP from the same file and times it, and
# measures recall@10 against FAISS's exact float32 ranking. Both processes are pinned to the same
# cores (taskset), with OpenBLAS, OpenMP (FAISS) and momentd's scan each on BENCH_THREADS threads.
#
# The text encoder is a full-size CLIP ViT-B/32 with random weights (transformers' default
# CLIPConfig has openai/clip-vit-base-patch32's shapes), written with save_pretrained into the
# temporary directory at bench time together with the vocabulary from tests/fixtures/clip-vocab;
# never committed. Timing does not depend on the weights' values.
#
# Settings (environment): BENCH_THREADS (2), BENCH_SIZES ("10000 100000 1000000"),
# BENCH_DISTS ("clustered random"), BENCH_QUERIES (100), PYTHON (/opt/mdref/bin/python, which
# needs torch, transformers, numpy and faiss-cpu: python3 -m venv /opt/mdref &&
# /opt/mdref/bin/pip install torch transformers safetensors numpy pillow faiss-cpu).
# Needs about 2.5 GB of memory and 2 GB of temporary disk per million segments. About 3 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/build/bench_search}
PYTHON=${PYTHON:-/opt/mdref/bin/python}
THREADS=${BENCH_THREADS:-2}
SIZES=${BENCH_SIZES:-"10000 100000 1000000"}
DISTS=${BENCH_DISTS:-"clustered random"}
QUERIES=${BENCH_QUERIES:-100}

[ -x "$BIN" ] || { echo "bench_search.sh: $BIN not built (make bench-search)" >&2; exit 2; }
"$PYTHON" -c 'import faiss, torch, transformers' 2>/dev/null ||
    { echo "bench_search.sh: $PYTHON lacks faiss-cpu, torch or transformers (see the top of this file)" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench_search.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS
PIN=()
if command -v taskset >/dev/null && [ "$(nproc --all)" -ge "$THREADS" ]; then
    PIN=(taskset -c "0-$((THREADS - 1))")
fi

echo "bench_search: generating a random-weight CLIP ViT-B/32 in $tmp/model" >&2
"$PYTHON" - "$tmp/model" "$ROOT/tests/fixtures/clip-vocab" <<'EOF'
import shutil, sys
import torch
from transformers import CLIPConfig, CLIPModel
out, vocab = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
CLIPModel(CLIPConfig()).eval().save_pretrained(out)
for f in ("vocab.json", "merges.txt"):
    shutil.copy(f"{vocab}/{f}", out)
EOF

load0=$(cut -d' ' -f1-3 /proc/loadavg)
# Text encoding does not depend on the data: it is timed with the first data set only.
model=(--model "$tmp/model")
for dist in $DISTS; do
    for n in $SIZES; do
        run=$tmp/$dist-$n
        mkdir -p "$run"
        echo "bench_search: $dist, $n segments" >&2
        "${PIN[@]}" "$BIN" --n "$n" --dist "$dist" --dir "$run" "${model[@]}" --threads "$THREADS" \
            --queries "$QUERIES" >"$run/momentd.json"
        "${PIN[@]}" "$PYTHON" "$ROOT/tests/bench/bench_search_faiss.py" --dir "$run" --threads "$THREADS" \
            >"$run/faiss.json"
        rm -f "$run/vectors.f32"
    done
    model=()
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

"$PYTHON" - "$tmp" "$THREADS" "${PIN[*]:-none}" "$load0" "$load1" "$DISTS" "$SIZES" <<'EOF'
import json, os, platform, sys
tmp, threads, pin, load0, load1, dists, sizes = sys.argv[1:8]
rows = []
for dist in dists.split():
    for n in sizes.split():
        d = os.path.join(tmp, f"{dist}-{n}")
        m = json.load(open(os.path.join(d, "momentd.json")))
        m.update(json.load(open(os.path.join(d, "faiss.json"))))
        rows.append(m)
m0 = rows[0]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"CPU: {cpu}, {os.cpu_count()} logical CPUs; pinned: {pin}; load average before/after: {load0} / {load1}")
print(f"threads: momentd scan {m0['threads']} (kernel {m0['kernel']}), OpenBLAS for the text encoder 1 or "
      f"{m0['openblas_threads']} (the faster p50 is shown, threads in brackets, and used for text -> moments), FAISS {m0['faiss_version']} OpenMP 1 or {m0['faiss_max_threads']} (its faster p50 is shown, "
      f"threads in brackets); "
      f"{m0['queries']} queries per row, one per call, k = 10; times in ms")
print()
print("| data | segments | momentd search p50 / p99 | exact scan p50 / p99 | FAISS IndexFlatIP p50 / p99 "
      "| FAISS / momentd (p50) | text encoding p50 / p99 | text -> moments p50 / p99 "
      "| recall@10 vs f32 (int8 alone) | int8 recall vs exact | max score error | index memory |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    text = f"{r['text_p50']:.1f} / {r['text_p99']:.1f} ({r['text_blas_threads']}) " \
        f"| {r['total_p50']:.1f} / {r['total_p99']:.1f}" \
        if r["text_queries"] else "(above) | (above)"
    print(f"| {r['dist']} | {r['n']:,} | {r['search_p50']:.2f} / {r['search_p99']:.2f} "
          f"| {r['exact_p50']:.2f} / {r['exact_p99']:.2f} | {r['faiss_p50']:.2f} / {r['faiss_p99']:.2f} ({r['faiss_threads']}) "
          f"| {r['faiss_p50'] / r['search_p50']:.1f}x | {text} | {r['recall']:.3f} ({r['raw_recall']:.3f}) "
          f"| {r['int8_recall']:.3f} | {r['max_err']:.1e} | {r['index_bytes'] / 2**20:,.0f} MiB |")
print()
big = max(rows, key=lambda r: r["n"])
dim = big["dim"]
print(f"memory per million segments (md_index_bytes at {big['n']:,} / {big['n']:,} x 1M): "
      f"{big['bytes_per_segment'] * 1e6 / 1e9:.2f} GB, of which {(3 * dim + 32) / 1e3:.2f} GB rows (fp16 + int8 + "
      f"scale + ids/times) and the rest growth slack; FAISS IndexFlatIP: {4 * dim / 1e3:.2f} GB (float32)")
print("max first-pass (int8) score error over the re-scored candidates: " +
      ", ".join(f"{r['dist']} {r['n']:,}: {r['max_int8_error']:.1e}" for r in rows) +
      f"; FAISS's own max score error: {max(r['faiss_max_err'] for r in rows):.1e}")
print("text encoding p50 with OpenBLAS on 1 / " + str(m0["openblas_threads"]) + " threads: " +
      ", ".join(f"{r['n']:,}: {r['text_p50_blas1']:.1f} / {r['text_p50_blasn']:.1f}" for r in rows if r["text_queries"]))
print("int8 first pass vs exact scan, worst over the queries: mean of the scores "
      f"{max(r['mean_err'] for r in rows):.1e}, standard deviation {max(r['std_rel_err'] for r in rows):.1e} (relative), "
      f"best moment's z {max(r['z_err'] for r in rows):.1e}")
EOF
