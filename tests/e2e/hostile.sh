#!/usr/bin/env bash
# tests/e2e/hostile.sh - hostile media through the daemon (issue 11): what the video layer refuses
# or bounds (video/video.h "Hostile files") seen from the API, with decoding in the sandboxed
# worker processes the daemon uses by default.
#   - an HLS playlist naming a file elsewhere on the server: the job fails "refused", nothing of
#     the other file is indexed; the same playlist as a picture query is a 422;
#   - a file whose timestamps claim a 10,240 h gap: indexed in well under a second, bounded work;
#   - an mp4 cut in half (index first): "ready", truncated, indexed duration below the full one;
#   - a 68-byte PNG claiming 16000 x 16000 as a picture query: 422 at once, the daemon's memory
#     does not grow;
#   - the failures are counted by reason in /metrics.
#
# Sourced by tests/e2e/run.sh, which calls
#     e2e_hostile DATA_DIR
# with lib.sh's globals set; it starts and stops its own daemon.
# shellcheck shell=bash disable=SC2016  # jq filters are single-quoted on purpose

hostile_rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

e2e_hostile() {
    local data=$1 m=$E2E_TMP/hostile job t0 t1
    mkdir -p "$m/elsewhere"
    # Fixtures: a real clip elsewhere and a playlist naming it; a tiny file with a huge gap; a
    # faststart mp4 cut in half; a PNG whose header claims 16000 x 16000.
    ffmpeg -v error -y -f lavfi -i testsrc2=size=160x120:rate=10 -t 4 -c:v libx264 -f mpegts "$m/elsewhere/secret.ts"
    printf '#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\n%s\n#EXT-X-ENDLIST\n' "$m/elsewhere/secret.ts" >"$m/list.m3u8"
    ffmpeg -v error -y -f lavfi -i testsrc2=size=64x48:rate=5 -t 1 -c:v libx264 "$m/a.mkv"
    ffmpeg -v error -y -f lavfi -i testsrc2=size=64x48:rate=5 -t 1 -c:v libx264 -output_ts_offset 36864000 "$m/b.mkv"
    printf "file '%s'\nfile '%s'\n" "$m/a.mkv" "$m/b.mkv" >"$m/gap.txt"
    ffmpeg -v error -y -f concat -safe 0 -i "$m/gap.txt" -c copy "$m/gap.mkv"
    ffmpeg -v error -y -f lavfi -i testsrc2=size=160x120:rate=10 -t 12 -c:v libx264 -g 10 -movflags +faststart "$m/whole.mp4"
    head -c "$(($(stat -c %s "$m/whole.mp4") / 2))" "$m/whole.mp4" >"$m/cut.mp4"
    python3 - "$m/bomb.png" <<'PY'
import struct, sys, zlib
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
ihdr = struct.pack(">IIBBBBB", 16000, 16000, 8, 2, 0, 0, 0)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
PY
    if ! start_daemon hostile "$data" --workers 1; then
        not_ok "daemon for hostile media starts" "see log above"
        return 0
    fi
    ok "daemon for hostile media starts"

    api POST "/v1/videos?name=list.m3u8" --data-binary "@$m/list.m3u8"
    check_status "an HLS playlist naming another file is accepted as an upload" 202
    job=$(jqb '.job.id')
    wait_job "$job" 30 || true
    check_eq "its job fails" "failed" "$JOB_STATE"
    check_jq "it says the playlist was refused, not read" '.error | test("refused") and test("playlist|hls")'
    check_jq "nothing of the other file was indexed" '(.progress.done // 0) == 0'
    api POST /v1/search -F "file=@$m/list.m3u8"
    check_error "the playlist as a picture query" 422
    check_jq "the picture query says why" '.error.message | test("refused")'

    t0=$(date +%s.%N)
    api POST "/v1/videos?name=gap.mkv" --data-binary "@$m/gap.mkv"
    check_status "a tiny file claiming a 10,240 h gap" 202
    job=$(jqb '.job.id')
    wait_job "$job" 30 || true
    t1=$(date +%s.%N)
    check_eq "its job ends done (the gap costs nothing)" "done" "$JOB_STATE"
    check_jq "its work is bounded by the frames decoded (at most 30)" '.progress.total <= 30'
    check "it is indexed within 10 s of the upload ($(printf '%.2f' "$(echo "$t1 - $t0" | bc)") s)" \
        test "$(echo "$t1 - $t0 < 10" | bc)" = 1

    api POST "/v1/videos?name=cut.mp4" --data-binary "@$m/cut.mp4"
    check_status "an mp4 cut in half" 202
    local vid
    vid=$(jqb '.video.id')
    wait_job "$(jqb '.job.id')" 60 || true
    check_eq "its job ends done (indexed as far as it goes)" "done" "$JOB_STATE"
    api GET "/v1/videos/$vid"
    check_jq "the video says it is truncated" '.truncated == true'
    check_jq "and how much was indexed (under the header's duration)" \
        '(.indexed_duration_s | type) == "number" and .indexed_duration_s > 0 and .indexed_duration_s < .duration_s'
    api POST "/v1/videos?name=whole.mp4" --data-binary "@$m/whole.mp4"
    vid=$(jqb '.video.id')
    wait_job "$(jqb '.job.id')" 60 || true
    api GET "/v1/videos/$vid"
    check_jq "the whole file is not truncated" '.truncated == false and .indexed_duration_s >= 11.9'

    local pid=${D_PID[hostile]} before after
    before=$(hostile_rss_kb "$pid")
    api POST /v1/search -F "file=@$m/bomb.png"
    check_error "a 68-byte PNG claiming 16000 x 16000" 422
    check_jq "it says the picture is too large" '.error.message | test("exceed|limit")'
    after=$(hostile_rss_kb "$pid")
    check "the daemon's memory did not grow by 100 MB (${before} -> ${after} kB)" test $((after - before)) -lt 102400

    api GET /metrics
    if grep -q '^momentd_decode_failures_total{reason="refused"} [1-9]' "$E2E_BODY"; then
        ok "/metrics counts the refused file"
    else
        not_ok "/metrics counts the refused file" "$(grep momentd_decode_failures "$E2E_BODY" | head -c 300)"
    fi
    api GET /v1/health
    check_status "the daemon still serves after the hostile files" 200
    stop_daemon hostile || true
    check_eq "and exits 0 on SIGTERM" 0 "$EXIT_RC"
}

# Run alone: bash tests/e2e/hostile.sh ./momentd
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
    # shellcheck source=tests/e2e/lib.sh
    source "$HERE/lib.sh"
    if [[ $# -lt 1 || ! -x $1 ]]; then
        echo "usage: bash tests/e2e/hostile.sh ./momentd" >&2
        exit 2
    fi
    E2E_BIN=$(cd "$(dirname "$1")" && pwd -P)/$(basename "$1")
    E2E_TMP=$(cd "$(mktemp -d "${TMPDIR:-/tmp}/momentd-hostile.XXXXXX")" && pwd -P)
    TMP=$E2E_TMP
    E2E_BODY=$E2E_TMP/body
    E2E_HDRS=$E2E_TMP/headers
    trap 'stop_all_daemons; rm -rf "$E2E_TMP"' EXIT
    e2e_hostile "$E2E_TMP/data"
    e2e_summary
    ((E2E_FAIL == 0))
fi
