#!/usr/bin/env bash
# bench_decode.sh - decode + sample + preprocess throughput of momentd's video module (exact and
# keyframe mode) against the ffmpeg CLI doing the same job, side by side in one run. Not a test.
#
#   tests/bench/bench_decode.sh BENCH_BIN [WORKDIR]        (`make bench-decode` builds and runs it)
#
# Clips, made once in WORKDIR (default /tmp/momentd-bench-decode) and reused by later runs:
#   real-1080p  the forensics-samples-files phone video (1920x1080 H.264 High, 1.6 s, a keyframe
#               every ~1.15 s, no B-frames) looped by stream copy to 180 s
#   synth-360p  600 s of testsrc2 + temporal noise, 640x360 25 fps, x264 veryfast (B-frames,
#               a keyframe every 25 frames)
# The job: 1 frame per second, shortest side to 224 (bicubic), center crop 224x224, RGB.
#   ffmpeg CLI       ffmpeg -i CLIP -vf fps=1,scale=...:flags=bicubic,crop=224:224 -pix_fmt rgb24 -f rawvideo /dev/null
#   ffmpeg CLI nokey the same with -skip_frame nokey (the CLI's own keyframe-only decoding)
#   momentd exact    BENCH_BIN CLIP exact 1 224 0     (float32 CLIP tensors, PIL-exact resize)
#   momentd keyframe BENCH_BIN CLIP keyframe 1 224 0
#   isolated exact / isolated keyframe: the same two through decode isolation (video/isolate.h:
#                    a sandboxed worker process per video, default limits), BENCH_BIN CLIP iso-exact ...
# Every job runs REPEATS times (default 3), interleaved so load changes hit all alike; the table
# gives the median wall time. Threads: FFmpeg's automatic choice on both sides. A second table
# gives isolation's overhead: median wall and CPU time (this process and the worker) of each
# isolated job over its in-process twin, and the load average before and after.
# CLIPS="real-1080p" JOBS="exact iso-exact" (any subsets) run part of it.
set -euo pipefail

BIN=${1:?usage: bench_decode.sh BENCH_BIN [WORKDIR]}
WORK=${2:-/tmp/momentd-bench-decode}
REPEATS=${REPEATS:-3}
DOG=/usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4
mkdir -p "$WORK"

ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }

CLIPS=${CLIPS:-"real-1080p synth-360p"}
JOBS=${JOBS:-"cli cli-nokey exact keyframe iso-exact iso-keyframe"}

if grep -qw real-1080p <<<"$CLIPS" && [ ! -s "$WORK/real-1080p.mp4" ]; then
    [ -r "$DOG" ] || { echo "bench_decode: $DOG missing (apt install forensics-samples-files)" >&2; exit 1; }
    # 1.6 s x 113 = 180 s.
    ff -stream_loop 112 -i "$DOG" -an -c copy "$WORK/real-1080p.mp4"
fi
if grep -qw synth-360p <<<"$CLIPS" && [ ! -s "$WORK/synth-360p.mp4" ]; then
    echo "bench_decode: encoding the 10 min synthetic clip once (about a minute)" >&2
    ff -f lavfi -i testsrc2=size=640x360:rate=25 -t 600 -vf noise=alls=12:allf=t \
        -c:v libx264 -preset veryfast -g 25 -pix_fmt yuv420p "$WORK/synth-360p.mp4"
fi

# Shortest side to 224 keeping the aspect ratio (even long side), as CLIPImageProcessor resizes.
SCALE="scale='if(gt(iw,ih),-2,224)':'if(gt(iw,ih),224,-2)':flags=bicubic"
VF="fps=1,$SCALE,crop=224:224"

now() { date +%s.%N; }

# run_job NAME CLIP -> prints "seconds samples"
run_job() {
    local job=$1 clip=$2 t0 t1 out samples
    t0=$(now)
    case $job in
    cli)
        ff -i "$clip" -vf "$VF" -pix_fmt rgb24 -f rawvideo "$WORK/out.rgb"
        samples=$(( $(stat -c %s "$WORK/out.rgb") / (224 * 224 * 3) )) ;;
    cli-nokey)
        ff -skip_frame nokey -i "$clip" -vf "$VF" -pix_fmt rgb24 -f rawvideo "$WORK/out.rgb"
        samples=$(( $(stat -c %s "$WORK/out.rgb") / (224 * 224 * 3) )) ;;
    exact | keyframe | iso-exact | iso-keyframe)
        out=$("$BIN" "$clip" "$job" 1 224 0)
        samples=$(sed -n 's/.*samples=\([0-9]*\).*/\1/p' <<<"$out")
        CPU_OF[$job]=$(sed -n 's/.*cpu_s=\([0-9.]*\).*/\1/p' <<<"$out")
        if [ "${job#iso-}" = keyframe ] && ! grep -q 'keyframe_mode=1' <<<"$out"; then
            echo "bench_decode: keyframe mode not used on $clip: $out" >&2
        fi ;;
    esac
    t1=$(now)
    rm -f "$WORK/out.rgb"
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') $samples"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A TIMES SAMPLES CPUS CPU_OF
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPEATS"); do
    for c in $CLIPS; do
        for j in $JOBS; do
            CPU_OF[$j]=
            run_job "$j" "$WORK/$c.mp4" > "$WORK/job.out"
            read -r secs samples < "$WORK/job.out"
            TIMES[$c.$j]="${TIMES[$c.$j]:-} $secs"
            CPUS[$c.$j]="${CPUS[$c.$j]:-} ${CPU_OF[$j]:-}"
            SAMPLES[$c.$j]=$samples
        done
    done
    echo "bench_decode: round $rep of $REPEATS done" >&2
done

label() {
    case $1 in
    cli) echo "ffmpeg CLI (exact)" ;;
    cli-nokey) echo "ffmpeg CLI -skip_frame nokey" ;;
    exact) echo "momentd exact" ;;
    keyframe) echo "momentd keyframe" ;;
    iso-exact) echo "momentd exact, isolated" ;;
    iso-keyframe) echo "momentd keyframe, isolated" ;;
    esac
}
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo
echo "Decode + sample (1 fps) + preprocess (224x224): median of $REPEATS runs, $(nproc) cores ($CPU), $(ffmpeg -version | head -1 | cut -d' ' -f1-3)"
echo
echo "| clip | job | wall s | video frames/s | realtime x | samples | speed vs ffmpeg CLI |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for c in $CLIPS; do
    clip="$WORK/$c.mp4"
    frames=$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$clip")
    dur=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$clip")
    base=$(tr ' ' '\n' <<<"${TIMES[$c.cli]:-}" | grep . | median || true)
    for j in $JOBS; do
        t=$(tr ' ' '\n' <<<"${TIMES[$c.$j]}" | grep . | median)
        awk -v c="$c" -v j="$(label "$j")" -v t="$t" -v f="$frames" -v d="$dur" -v s="${SAMPLES[$c.$j]}" -v b="${base:-0}" \
            'BEGIN { printf "| %s | %s | %.2f | %.0f | %.1f | %s | %s |\n", c, j, t, f / t, d / t, s, (b > 0 ? sprintf("%.2fx", b / t) : "-") }'
    done
done
if grep -q 'iso-' <<<"$JOBS"; then
    echo
    echo "Isolation overhead (median of $REPEATS; load average $LOAD_BEFORE before, $LOAD_AFTER after):"
    echo
    echo "| clip | job | in-process wall s | isolated wall s | wall overhead | in-process CPU s | isolated CPU s | CPU overhead |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for c in $CLIPS; do
        for j in exact keyframe; do
            grep -qw "$j" <<<"$JOBS" && grep -qw "iso-$j" <<<"$JOBS" || continue
            a=$(tr ' ' '\n' <<<"${TIMES[$c.$j]}" | grep . | median || true)
            b=$(tr ' ' '\n' <<<"${TIMES[$c.iso-$j]}" | grep . | median || true)
            ca=$(tr ' ' '\n' <<<"${CPUS[$c.$j]}" | grep . | median || true)
            cb=$(tr ' ' '\n' <<<"${CPUS[$c.iso-$j]}" | grep . | median || true)
            awk -v c="$c" -v j="$j" -v a="$a" -v b="$b" -v ca="$ca" -v cb="$cb" \
                'BEGIN { printf "| %s | %s | %.2f | %.2f | %+.1f %% | %.2f | %.2f | %+.1f %% |\n", c, j, a, b, 100 * (b / a - 1), ca, cb, 100 * (cb / ca - 1) }'
        done
    done
fi
echo
echo "Command: make bench-decode (tests/bench/bench_decode.sh), clips in $WORK"
