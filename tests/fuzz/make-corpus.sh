#!/bin/bash
# make-corpus.sh - (re)writes the seed files of the fuzz corpus: what gen_seeds writes (model
# files, tokenizer files, texts, requests), the CLIP fixtures' config.json files, and tiny media
# files made with the ffmpeg CLI (several containers and codecs, a rotated one, audio only, a cut
# one, a picture). Files found by fuzzing (regressions, named crash-*) are left alone.
#
#   bash tests/fuzz/make-corpus.sh GEN_SEEDS CORPUS_DIR       (make fuzz-corpus runs it)
set -euo pipefail
gen=$1
out=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
for t in safetensors clip_config tokenizer_load tokenizer_encode temporal video_probe http; do
    mkdir -p "$out/fuzz_$t"
done
"$gen" "$out" "$root/tests/fixtures/preprocess/gray_40x30.png"

for d in "$root"/tests/fixtures/clip/*/; do
    [[ -f $d/config.json ]] && cp "$d/config.json" "$out/fuzz_clip_config/fixture-$(basename "$d").json"
done

v=$out/fuzz_video_probe
command -v ffmpeg >/dev/null || { echo "make-corpus: ffmpeg not found: media seeds not written" >&2; exit 1; }
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
src=(-f lavfi -i "testsrc=size=32x24:rate=4" -t 1)
ff "${src[@]}" -c:v libx264 -preset ultrafast -g 2 -pix_fmt yuv420p "$v/h264.mp4"
ff "${src[@]}" -c:v libx264 -preset ultrafast -pix_fmt yuv420p -metadata:s:v:0 rotate=90 "$v/h264-rotated.mov"
ff "${src[@]}" -f lavfi -i "sine=frequency=440:sample_rate=8000" -t 1 -c:v mpeg4 -c:a pcm_s16le "$v/mpeg4-audio.mkv"
ff "${src[@]}" -c:v mjpeg -q:v 20 "$v/mjpeg.avi"
ff "${src[@]}" -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f mpegts "$v/h264.ts"
ff -f lavfi -i "testsrc=size=16x16:rate=2" -t 1 -pix_fmt yuv420p "$v/raw.y4m"
ff -f lavfi -i "testsrc=size=16x16:rate=4" -t 1 "$v/anim.gif"
ff -f lavfi -i "sine=frequency=440:sample_rate=8000" -t 0.1 "$v/audio-only.wav"
cp "$root/tests/fixtures/preprocess/gray_40x30.png" "$v/picture.png"
# An mp4 whose moov (written last) is cut off, and one whose data is cut short after a faststart moov.
n=$(stat -c %s "$v/h264.mp4")
head -c $((n / 2)) "$v/h264.mp4" > "$v/h264-no-moov.mp4"
ff "${src[@]}" -c:v libx264 -preset ultrafast -pix_fmt yuv420p -movflags +faststart "$v/tmp-faststart.mp4"
n=$(stat -c %s "$v/tmp-faststart.mp4")
head -c $((n * 2 / 3)) "$v/tmp-faststart.mp4" > "$v/h264-data-cut.mp4"
rm -f "$v/tmp-faststart.mp4"
printf 'not a video' > "$v/text.txt"
: > "$v/empty"
du -sh "$out"
