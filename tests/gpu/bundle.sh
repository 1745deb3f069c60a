#!/usr/bin/env bash
# bundle.sh - prebuilt GPU check programs for a GPU machine that cannot build momentd.
#
#   bash tests/gpu/bundle.sh            (here, where `make` works; writes .gpu-bundle/)
#
# The GPU machines lent to this project have CUDA, PyTorch and transformers but maybe not the
# -dev packages momentd builds against (libmicrohttpd, FFmpeg, cJSON, SQLite, OpenBLAS) and no
# network. This builds, with the CUDA code compiled here (sm_80/sm_90 + PTX), the two programs
# tests/gpu/run.sh needs, linked without FFmpeg and libmicrohttpd (they read raw frames from
# tests/gpu/frames.py instead of decoding), packs them with the shared libraries they need beyond
# glibc and libstdc++ (OpenBLAS, gfortran, quadmath, cJSON, SQLite) and the sample clips into
# .gpu-bundle/payload.tar.xz (about 15-25 MB). Carry `.gpu-bundle` with the run; run.sh unpacks it
# when `make` cannot build there. .gpu-bundle/ is kept out of git (.git/info/exclude).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUTD=.gpu-bundle
STAGE=$(mktemp -d /tmp/md-gpu-bundle.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
grep -qx '/.gpu-bundle/' .git/info/exclude 2>/dev/null || echo '/.gpu-bundle/' >> .git/info/exclude

make -j"$(nproc)" all >/dev/null
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
test -x "$NVCC" || { echo "bundle.sh: nvcc not found: the bundle must carry the CUDA backend" >&2; exit 1; }
CUDA_HOME=${NVCC%/bin/nvcc}
CFLAGS="-O2 -g -std=c11 -Wall -Wextra -Werror -pthread -DMD_HAVE_CUDA -DMD_GPU_NO_DECODER $(pkg-config --cflags libcjson sqlite3 openblas)"
OBJS="build/base/status.o build/base/log.o build/base/half.o build/base/image.o build/engine/backend_cpu.o build/engine/safetensors.o build/engine/sha256.o
      build/engine/tokenizer.o build/engine/tokenizer_load.o build/engine/clip.o build/engine/clip_load.o build/engine/demo_model.o build/engine/mamba.o build/engine/temporal.o $(ls build/cuda/*.o)"
LIBS="$(pkg-config --libs libcjson sqlite3 openblas) -lm -pthread -L$CUDA_HOME/lib64 -lcudart_static -ldl -lrt -lstdc++"
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/media"
# shellcheck disable=SC2086
cc $CFLAGS -o "$STAGE/bin/test_backend_ops" tests/unit/test_backend_ops.c $OBJS $LIBS
# shellcheck disable=SC2086
cc $CFLAGS -o "$STAGE/bin/gpu_bench" tests/gpu/gpu_bench.c $OBJS $LIBS

# Shared libraries beyond the C/C++ runtime that every Linux has.
for b in "$STAGE"/bin/*; do
    ldd "$b" | awk '/=> \//{print $3}'
done | sort -u | grep -Ev '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
    while read -r l; do cp -L "$l" "$STAGE/lib/"; done

# Footage: the sample clips, and a 1080p h264 clip of them looped (30 s, a keyframe each second so
# that keyframe mode applies at 1 frame/s; run.sh plays it in loops).
MEDIA=${MD_MEDIA:-../shared/media}
cp "$MEDIA"/*.mp4 "$STAGE/media/" 2>/dev/null || echo "bundle.sh: no sample clips under $MEDIA" >&2
if command -v ffmpeg >/dev/null && [ -f "$MEDIA/lion-monkey.mp4" ]; then
    ffmpeg -v error -y -stream_loop 3 -i "$MEDIA/lion-monkey.mp4" -t 30 -an -vf scale=1920:1080,setsar=1 \
        -c:v libx264 -preset fast -crf 23 -g 30 -pix_fmt yuv420p "$STAGE/media/clip-1080p.mp4"
fi
git rev-parse HEAD > "$STAGE/REVISION" 2>/dev/null || true
mkdir -p "$OUTD"
tar -C "$STAGE" -cf - . | xz -T0 -6 > "$OUTD/payload.tar.xz"
ls -la "$OUTD/payload.tar.xz" >&2
echo "bundle.sh: $OUTD/payload.tar.xz ($(du -h "$OUTD/payload.tar.xz" | cut -f1)); carry .gpu-bundle" >&2
