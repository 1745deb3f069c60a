#!/usr/bin/env python3
"""bench_search_faiss.py - the FAISS side of `make bench-search` (tests/bench/bench_search.sh runs it
right after bench_search, on the same files and the same cores).

Reads what bench_search wrote into DIR:
  vectors.f32  N x dim float32, exactly the vectors momentd's index was given (row = insertion order)
  queries.f32  Q x dim float32
  top.i64, top.f32  Q x 10 momentd rows and scores (int8 first pass + exact re-scoring)
  raw.i64      Q x 10 rows ranked by the int8 first pass alone
  exact.i64    Q x 10 rows of momentd's exact scan over its stored halves (MD_SCAN_EXACT)
and prints one JSON object:
  faiss_p50 / faiss_p99   ms per query of IndexFlatIP.search, one query per call, k = 10, with the
                          OpenMP thread count (1 or THREADS) that gave FAISS the lower p50: one query
                          leaves little to share, and OpenMP's spinning barriers lose badly on busy
                          cores, so FAISS gets its better setting (faiss_threads; both in by_threads)
  recall / raw_recall     mean recall@10 of momentd's rows (and of the int8 pass alone) against
                          FAISS's exact float32 top 10 (misses here include near-ties that the
                          fp16 storage reorders)
  int8_recall             mean recall@10 of momentd's rows against its own exact scan: what the
                          int8 first pass alone costs
  max_err                 max |momentd score - float64 dot(query, vector)| over the returned rows
                          (fp16 storage + float accumulation)
  faiss_max_err           the same for FAISS's own scores (float32 accumulation)

Needs faiss-cpu in the reference venv: python3 -m venv /opt/mdref &&
/opt/mdref/bin/pip install torch transformers safetensors numpy pillow faiss-cpu
"""
import argparse
import json
import os
import time

import faiss
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args()

    x = np.memmap(os.path.join(a.dir, "vectors.f32"), dtype=np.float32, mode="r").reshape(-1, a.dim)
    q = np.fromfile(os.path.join(a.dir, "queries.f32"), dtype=np.float32).reshape(-1, a.dim)
    k = a.k
    top = np.fromfile(os.path.join(a.dir, "top.i64"), dtype=np.int64).reshape(-1, k)
    top_s = np.fromfile(os.path.join(a.dir, "top.f32"), dtype=np.float32).reshape(-1, k)
    raw = np.fromfile(os.path.join(a.dir, "raw.i64"), dtype=np.int64).reshape(-1, k)
    exact = np.fromfile(os.path.join(a.dir, "exact.i64"), dtype=np.int64).reshape(-1, k)

    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(a.dim)
    for i in range(0, x.shape[0], 1 << 16):  # in chunks: the memmap is never copied whole
        index.add(np.ascontiguousarray(x[i:i + (1 << 16)]))
    t_add = time.perf_counter() - t0

    def pct(times, p):
        return float(times[max(0, int(np.ceil(p / 100 * len(times))) - 1)])

    by_threads = {}
    for nt in sorted({1, a.threads}):
        faiss.omp_set_num_threads(nt)
        for i in range(3):  # warm-up
            index.search(q[i:i + 1], k)
        times, ids, scores = [], [], []
        for i in range(q.shape[0]):
            qi = q[i:i + 1]
            t = time.perf_counter()
            d, n = index.search(qi, k)
            times.append((time.perf_counter() - t) * 1e3)
            ids.append(n[0])
            scores.append(d[0])
        times = np.sort(np.array(times))
        by_threads[nt] = (round(pct(times, 50), 3), round(pct(times, 99), 3))
    best = min(by_threads, key=lambda nt: by_threads[nt][0])

    recall = np.mean([len(set(top[i]) & set(ids[i])) / k for i in range(len(ids))])
    raw_recall = np.mean([len(set(raw[i]) & set(ids[i])) / k for i in range(len(ids))])
    int8_recall = np.mean([len(set(top[i]) & set(exact[i])) / k for i in range(len(ids))])
    q64 = q.astype(np.float64)
    max_err = max(float(np.max(np.abs(x[top[i]].astype(np.float64) @ q64[i] - top_s[i]))) for i in range(len(ids)))
    faiss_err = max(float(np.max(np.abs(x[ids[i]].astype(np.float64) @ q64[i] - scores[i]))) for i in range(len(ids)))
    print(json.dumps({
        "faiss_version": faiss.__version__, "faiss_threads": best, "faiss_max_threads": a.threads,
        "by_threads": {str(nt): v for nt, v in by_threads.items()}, "faiss_add_s": round(t_add, 2),
        "faiss_p50": by_threads[best][0], "faiss_p99": by_threads[best][1],
        "recall": float(recall), "raw_recall": float(raw_recall), "int8_recall": float(int8_recall),
        "max_err": max_err, "faiss_max_err": faiss_err,
    }))


if __name__ == "__main__":
    main()
