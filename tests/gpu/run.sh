#!/usr/bin/env bash
# run.sh - the GPU checks and benchmarks of the CUDA backend, in one go (about 5 minutes on an
# H100/H200 with CUDA, PyTorch and transformers; no network needed).
#
#   bash tests/gpu/run.sh              on a machine with a GPU (make gpu-check)
#   bash tests/gpu/run.sh --dry-run    anywhere: every step that needs no GPU, on the CPU backend,
#                                      plus the CUDA kernels on the CPU emulator (make gpu-emu)
#
# Steps (each with a time limit; the table says what ran):
#   1. fails loudly (exit 2) when no GPU is visible (nvidia-smi), unless --dry-run;
#   2. builds (make -j) when the build dependencies are there, else unpacks the prebuilt
#      .gpu-bundle/payload.tar.xz (made by `bash tests/gpu/bundle.sh` where make works; carry it);
#   3. finds cuBLAS (the toolkit's lib64 or the nvidia-cublas wheel) for the backend's dlopen;
#   4. test_backend_ops with MD_REQUIRE_CUDA=1: every op on CUDA against the CPU (must not skip);
#      then, when compute-sanitizer exists, the same under memcheck (reported, 90 s at most);
#   5. segment embeddings of the real clips (MD_MEDIA, ../shared/media, or the bundle's): CUDA path
#      vs CPU path, cosine >= 0.999 per segment; GPU preprocessing bit for bit; the Mamba encoder
#      from ops on real tokens;
#   6. benchmarks against transformers + PyTorch fp16 on the same GPU: CLIP ViT-B/32 image
#      embeddings/s at batch 256 (random weights made here by transformers), the selective scan
#      against the memory-bandwidth floor, end-to-end indexing of a long 1080p h264 video (30 s of
#      looped footage played LOOPS times) with the stage breakdown.
# Prints a Markdown table and writes it, with the logs, to $OUT when OUT is set (else to
# $MD_GPU_WORK, default /tmp/momentd-gpu). Exit status: 0 when every check passed, 1 when one
# failed, 2 without a GPU.
#
# Settings (environment): MD_MEDIA (folder of sample .mp4 clips), MD_VIDEO_1080P (the 1080p clip),
# LOOPS (default 20: 10 minutes of video), PYTHON (a python3 with torch + transformers),
# MD_GPU_FORCE_BUNDLE=1 (use .gpu-bundle even where make works: to test that path).
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
WORK=${MD_GPU_WORK:-/tmp/momentd-gpu}
mkdir -p "$WORK"
RES="$WORK/gpu-results.md"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
: > "$RES"
T0=$(date +%s)
STATUS=0
LOOPS=${LOOPS:-20}
log() { echo "[run.sh +$(($(date +%s) - T0))s] $*" >&2; }
bad() { echo "run.sh: FAILED: $*" >&2; STATUS=1; echo "| **FAILED** | $* | |" >> "$RES"; }
row() { echo "$*" >> "$RES"; }
# run NAME LIMIT CMD...: runs CMD with a time limit, its stderr to logs/NAME.log, its stdout (table
# rows) to the table; returns CMD's status.
run() {
    local name=$1 limit=$2
    shift 2
    log "$name: $*"
    timeout "$limit" "$@" >> "$RES" 2> "$LOGS/$name.log"
    local rc=$?
    [ $rc -eq 124 ] && echo "(timed out after $limit s)" >> "$LOGS/$name.log"
    tail -n 3 "$LOGS/$name.log" >&2
    return $rc
}

# ---------------------------------------------------------------- 1. the GPU
if [ $DRY = 0 ]; then
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        echo "run.sh: no GPU is visible (nvidia-smi lists none): this script runs the CUDA checks and" \
             "benchmarks on a GPU machine; use --dry-run to check it without one" >&2
        exit 2
    fi
    GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
    DEV=cuda
else
    GPU="none (dry run on the CPU backend)"
    DEV=cpu
    export MD_CLIP_DEVICE_PATH=1 # the device path of the CLIP towers, on the CPU
fi

# ---------------------------------------------------------------- 2. the programs
# The bundle (when carried) is unpacked either way: its footage serves the checks even where make
# works; its programs only where make cannot build.
if [ -f .gpu-bundle/payload.tar.xz ]; then
    rm -rf "$WORK/bundle" && mkdir -p "$WORK/bundle" && tar -C "$WORK/bundle" -xJf .gpu-bundle/payload.tar.xz ||
        log "cannot unpack .gpu-bundle/payload.tar.xz"
fi
BUNDLE=0
TEST_BIN=build/tests/test_backend_ops
BENCH_BIN=build/gpu/gpu_bench
NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
if [ -z "${MD_GPU_FORCE_BUNDLE:-}" ] && [ -n "$NVCC" ] && pkg-config --exists libmicrohttpd libavformat libavcodec libavutil libswscale libcjson sqlite3 openblas 2>/dev/null; then
    log "building (make -j$(nproc))"
    if ! make -j"$(nproc)" all "$TEST_BIN" "$BENCH_BIN" > "$LOGS/build.log" 2>&1; then
        tail -n 30 "$LOGS/build.log" >&2
        bad "make failed (logs/build.log)"
        exit 1
    fi
    grep -i "warning" "$LOGS/build.log" | head -5 >&2
elif [ -x "$WORK/bundle/bin/gpu_bench" ]; then
    log "build dependencies missing here: using the prebuilt .gpu-bundle ($(cat "$WORK/bundle/REVISION" 2>/dev/null))"
    BUNDLE=1
    TEST_BIN=$WORK/bundle/bin/test_backend_ops
    BENCH_BIN=$WORK/bundle/bin/gpu_bench
    export LD_LIBRARY_PATH="$WORK/bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    [ "$(cat "$WORK/bundle/REVISION" 2>/dev/null)" = "$(git rev-parse HEAD 2>/dev/null)" ] ||
        log "note: the bundle was built at $(cat "$WORK/bundle/REVISION" 2>/dev/null), the tree is at $(git rev-parse HEAD 2>/dev/null)"
else
    echo "run.sh: cannot build here (nvcc: ${NVCC:-none}; missing: $(for p in libmicrohttpd libavformat libavcodec libcjson sqlite3 openblas; do pkg-config --exists $p 2>/dev/null || echo -n "$p "; done))" \
         "and there is no .gpu-bundle/payload.tar.xz: run 'bash tests/gpu/bundle.sh' where make works and carry .gpu-bundle" >&2
    exit 1
fi

# ---------------------------------------------------------------- 3. cuBLAS
if [ $DRY = 0 ] && ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.13'; then
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
             $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, s) for p in nvidia.__path__ for s in ("cu13/lib", "cublas/lib")))' 2>/dev/null); do
        if [ -f "$d/libcublas.so.13" ]; then
            export MD_CUBLAS_LIB="$d/libcublas.so.13"
            export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            break
        fi
    done
    log "cuBLAS: ${MD_CUBLAS_LIB:-not found on the usual paths (the backend will say so)}"
fi

# ---------------------------------------------------------------- Python with torch + transformers
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for p in python3 /opt/mdref/bin/python; do
        if "$p" -c 'import torch, transformers' 2>/dev/null; then PY=$p; break; fi
    done
fi
FRAMES_PY=$(command -v python3 || echo "$PY")

row "| step | result | note |"
row "| --- | --- | --- |"
row "| GPU | $GPU | $(date -u +%Y-%m-%dT%H:%MZ), git $(git rev-parse --short HEAD 2>/dev/null)$( [ $BUNDLE = 1 ] && echo ", prebuilt bundle") |"
"$BENCH_BIN" --device $DEV info >> "$RES" 2> "$LOGS/info.log" || { cat "$LOGS/info.log" >&2; bad "the $DEV backend is not available: $(cat "$LOGS/info.log")"; }

# ---------------------------------------------------------------- 4. every op against the CPU
REQ=1
[ $DRY = 1 ] && REQ=0
log "test_backend_ops (MD_REQUIRE_CUDA=$REQ)"
MD_REQUIRE_CUDA=$REQ timeout 300 "$TEST_BIN" > "$LOGS/test_backend_ops.log" 2>&1
rc=$?
SUMMARY=$(tail -n 1 "$LOGS/test_backend_ops.log")
grep -E "FAIL|NOT FINITE|DIFFER|not ok" "$LOGS/test_backend_ops.log" | head -20 >&2
row "| test_backend_ops (every op, CUDA vs CPU) | $SUMMARY | $(grep -c '^  cuda ' "$LOGS/test_backend_ops.log") CUDA comparisons; logs/test_backend_ops.log |"
[ $rc -eq 0 ] || bad "test_backend_ops: $SUMMARY"
if [ $DRY = 1 ] && [ $BUNDLE = 0 ]; then
    # Without a GPU: the CUDA kernels themselves, emulated on the CPU (tests/gpu/emu).
    log "make gpu-emu (the CUDA kernels on the CPU emulator)"
    timeout 300 make gpu-emu > "$LOGS/gpu-emu.log" 2>&1
    rc=$?
    row "| CUDA kernels on the CPU emulator (make gpu-emu) | $(tail -n 1 "$LOGS/gpu-emu.log") | $(grep -c '^  emu ' "$LOGS/gpu-emu.log") comparisons; logs/gpu-emu.log |"
    [ $rc -eq 0 ] || bad "make gpu-emu (logs/gpu-emu.log)"
fi
if [ $DRY = 0 ] && command -v compute-sanitizer >/dev/null 2>&1; then
    log "compute-sanitizer memcheck (90 s at most)"
    MD_REQUIRE_CUDA=1 timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$TEST_BIN" \
        > "$LOGS/memcheck.log" 2>&1
    rc=$?
    row "| compute-sanitizer memcheck of test_backend_ops | exit $rc | $(grep -m1 'ERROR SUMMARY' "$LOGS/memcheck.log") $( [ $rc -eq 124 ] && echo '(timed out: partial)') |"
    [ $rc -eq 9 ] && bad "memcheck found errors (logs/memcheck.log)"
fi

# ---------------------------------------------------------------- the CLIP checkpoint
CLIP="$WORK/clip-vit-b32"
if [ $DRY = 1 ]; then
    CLIP="$WORK/clip-demo"
    "$BENCH_BIN" --device cpu demo "$CLIP" 2>> "$LOGS/checkpoint.log"
elif [ ! -f "$CLIP/model.safetensors" ]; then
    if [ -n "$PY" ]; then
        log "random CLIP ViT-B/32 checkpoint (transformers)"
        timeout 120 "$PY" tests/gpu/bench_torch.py make-checkpoint "$CLIP" > "$LOGS/checkpoint.log" 2>&1 ||
            bad "could not make the checkpoint (logs/checkpoint.log)"
    else
        bad "no python3 with torch + transformers: no checkpoint, no PyTorch baseline"
    fi
fi

# ---------------------------------------------------------------- 5. segment embeddings, CUDA vs CPU
MEDIA=${MD_MEDIA:-}
for m in ../shared/media "$WORK/bundle/media" .gpu-bundle/media; do
    [ -z "$MEDIA" ] && ls "$m"/*.mp4 >/dev/null 2>&1 && MEDIA=$m
done
if [ -n "$MEDIA" ] && [ -f "$CLIP/model.safetensors" ]; then
    for v in lion-monkey parakeet-ladder; do
        [ -f "$MEDIA/$v.mp4" ] || continue
        "$FRAMES_PY" tests/gpu/frames.py "$MEDIA/$v.mp4" --fps 4 -o "$WORK/$v.rgb" 2>> "$LOGS/frames.log" ||
            { bad "frames.py could not decode $v.mp4 (logs/frames.log)"; continue; }
        row "| segcheck $v.mp4 (4 frames/s) | | |"
        run "segcheck-$v" 300 "$BENCH_BIN" --device $DEV segcheck --clip "$CLIP" --frames "$WORK/$v.rgb" ||
            bad "segcheck $v: segment embeddings or preprocessing differ (logs/segcheck-$v.log)"
    done
else
    bad "no sample clips (MD_MEDIA, ../shared/media or the bundle's media/) or no checkpoint: segment check not run"
fi

# ---------------------------------------------------------------- 6. benchmarks
if [ -f "$CLIP/model.safetensors" ]; then
    B=256
    [ $DRY = 1 ] && B=4
    run clip-f16 240 "$BENCH_BIN" --device $DEV clip --clip "$CLIP" --batch $B --iters 10 --prec f16 || bad "clip benchmark f16"
    [ $DRY = 0 ] && { run clip-tf32 240 "$BENCH_BIN" --device $DEV clip --clip "$CLIP" --batch $B --iters 5 --prec tf32 || bad "clip benchmark tf32"; }
    if [ -n "$PY" ]; then
        TDEV=cuda
        [ $DRY = 1 ] && TDEV=cpu
        run torch 240 "$PY" tests/gpu/bench_torch.py clip --clip "$CLIP" --batch $B --iters 10 --device $TDEV ||
            bad "PyTorch benchmark (logs/torch.log)"
    fi
fi
if [ $DRY = 0 ]; then
    run scan 120 "$BENCH_BIN" --device $DEV scan --batch 16 --L 1600 --C 1024 --N 16 || bad "scan benchmark"
    run scan-b1 120 "$BENCH_BIN" --device $DEV scan --batch 1 --L 1600 --C 1024 --N 16 || bad "scan benchmark (one window)"
else
    run scan 120 "$BENCH_BIN" --device cpu scan --batch 1 --L 200 --C 64 --N 16 --iters 2 || bad "scan (dry run)"
fi
V1080=${MD_VIDEO_1080P:-}
for v in build/bench/clip-1080p.mp4 "$WORK/bundle/media/clip-1080p.mp4" "$MEDIA/clip-1080p.mp4"; do
    [ -z "$V1080" ] && [ -f "$v" ] && V1080=$v
done
if [ -z "$V1080" ] && command -v ffmpeg >/dev/null 2>&1 && [ -f "$MEDIA/lion-monkey.mp4" ]; then
    V1080=$WORK/clip-1080p.mp4
    ffmpeg -v error -y -stream_loop 3 -i "$MEDIA/lion-monkey.mp4" -t 30 -an -vf scale=1920:1080,setsar=1 \
        -c:v libx264 -preset fast -crf 23 -g 30 -pix_fmt yuv420p "$V1080" || V1080=
fi
if [ -n "$V1080" ] && [ -f "$CLIP/model.safetensors" ]; then
    L=$LOOPS
    [ $DRY = 1 ] && L=1
    row "| e2e video | $V1080 played $L times | 1080p h264, 1 frame/s |"
    if [ $BUNDLE = 0 ]; then
        run e2e-exact 300 "$BENCH_BIN" --device $DEV e2e --clip "$CLIP" --video "$V1080" --loops "$L" || bad "e2e (exact)"
        run e2e-keyframes 300 "$BENCH_BIN" --device $DEV e2e --clip "$CLIP" --video "$V1080" --loops "$L" --keyframes ||
            bad "e2e (keyframes)"
    else
        log "e2e-frames: frames.py | gpu_bench e2e --frames -"
        timeout 300 bash -c "'$FRAMES_PY' tests/gpu/frames.py '$V1080' --fps 1 --loops $L 2> '$LOGS/e2e-frames-decoder.log' |
            '$BENCH_BIN' --device $DEV e2e --clip '$CLIP' --frames -" >> "$RES" 2> "$LOGS/e2e-frames.log" || bad "e2e (frames)"
        row "| e2e decoder (frames.py, all frames decoded) | $(tail -n 1 "$LOGS/e2e-frames-decoder.log") | |"
    fi
else
    bad "no 1080p clip (MD_VIDEO_1080P, build/bench/clip-1080p.mp4, the bundle's, or ffmpeg to make one): e2e not run"
fi

# ---------------------------------------------------------------- the table
{
    echo
    echo "Command: bash tests/gpu/run.sh$( [ $DRY = 1 ] && echo ' --dry-run') ($(($(date +%s) - T0)) s)"
} >> "$RES"
echo
cat "$RES"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$RES" "$OUT/gpu-results.md"
    # the logs, in one file (the tool brings back at most 8 files)
    for f in "$LOGS"/*.log; do echo "===== $(basename "$f")"; tail -n 400 "$f"; done > "$OUT/gpu-logs.txt"
fi
[ $STATUS = 0 ] && log "all checks passed" || log "some checks FAILED"
exit $STATUS
