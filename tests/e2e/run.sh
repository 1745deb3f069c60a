#!/usr/bin/env bash
# tests/e2e/run.sh - end-to-end tests: start the real momentd on 127.0.0.1 port 0
# with temporary data directories, drive it with curl and check status codes and
# JSON (jq): health/openapi/metrics, uploads (raw, duplicate, multipart, concurrent,
# too large, not a video), listing and pagination, delete, errors (400/401/403/
# 404/405/413), indexing server paths, crash recovery after kill -9, SIGTERM,
# configuration errors, ids never reused, and the data directory lock.
#
#   bash tests/e2e/run.sh ./momentd        (from the repository root; `make e2e`)
#   E2E_ONLY=search,crash bash tests/e2e/run.sh ./momentd
#
# E2E_ONLY (comma-separated) runs only those sections, plus the ones they need
# (E2E_NEEDS below: e.g. `delete` needs `list`, which needs `uploads`, which needs
# the main daemon of `health`); the others are reported as skipped. Sections, in
# the order they run (each starts at a "# ====" banner with `if section NAME`):
#   health uploads list delete errors notvideo concurrent toolarge apikey index
#   crash sigterm config cors fulldisk search resume models temporal limits ids lock
#   httpedge metrics hostile jobs
# At the end one more check parses every JSON answer the suite received with a strict UTF-8
# JSON parser (lib.sh, e2e_check_json).
# An unknown name is an error (exit 2) that lists the valid ones.
#
# Real footage: ../shared/media (override with MD_SHARED_MEDIA) or the Debian
# package forensics-samples-files (deploy/install-deps.sh --test). E2E_KEEP=1
# keeps the temporary directory. Prints "ok - ..."/"not ok - ..."/"skip - ..."
# per check and ends with "e2e: N passed, M failed" (", K skipped" appended when
# a case or section did not run); exits non-zero when anything failed.
# shellcheck disable=SC2016  # jq filters are single-quoted on purpose ($x are jq variables)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"

if [[ $# -lt 1 || ! -x $1 ]]; then
    echo "usage: bash tests/e2e/run.sh ./momentd   (build it first with make)" >&2
    exit 2
fi
E2E_BIN=$(cd "$(dirname "$1")" && pwd -P)/$(basename "$1")

# Sections in the order they run, and the section whose state (daemon, ids, data
# dir) each one uses; e2e_select (lib.sh) reads E2E_ONLY against these.
E2E_SECTIONS=(health uploads list delete errors notvideo concurrent toolarge apikey index crash sigterm config cors
    fulldisk search resume models temporal limits ids lock httpedge metrics hostile jobs)
declare -A E2E_NEEDS=([uploads]=health [list]=uploads [delete]=list [errors]=health [notvideo]=health
    [concurrent]=health [sigterm]=health [models]=search)
e2e_select

for tool in curl jq ffmpeg ffprobe sha256sum; do
    if ! command -v "$tool" >/dev/null; then
        echo "not ok - tool '$tool' is installed (run deploy/install-deps.sh --test)"
        echo "e2e: 0 passed, 1 failed"
        exit 1
    fi
done

# ---- real clips ---------------------------------------------------------

MEDIA=${MD_SHARED_MEDIA:-$(dirname "$REPO")/shared/media}
FORENSICS=/usr/share/forensics-samples/original-files
pick() { # first existing file of the arguments
    local f
    for f in "$@"; do
        [[ -f $f ]] && { echo "$f"; return 0; }
    done
    return 0
}
CLIP1=$(pick "$MEDIA/parakeet-ladder.mp4" "$FORENSICS/movie1/VID_20191220_170832.mp4")
CLIP2=$(pick "$MEDIA/lion-monkey.mp4" "$FORENSICS/movie2/movie-hello.mp4")
if [[ -z $CLIP1 || -z $CLIP2 ]]; then
    echo "not ok - real test clips available (need $MEDIA/{parakeet-ladder,lion-monkey}.mp4 or" \
        "$FORENSICS/movie{1,2}/*.mp4: run deploy/install-deps.sh --test)"
    echo "e2e: 0 passed, 1 failed"
    exit 1
fi
echo "# clips: $CLIP1, $CLIP2"

# ---- temporary directory and cleanup -------------------------------------

# Canonical (pwd -P): the index tests compare paths against canonical allowed roots.
E2E_TMP=$(cd "$(mktemp -d "${TMPDIR:-/tmp}/momentd-e2e.XXXXXX")" && pwd -P)
TMP=$E2E_TMP
E2E_BODY=$TMP/body
E2E_HDRS=$TMP/headers
E2E_DONE=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ $E2E_DONE == 0 ]]; then
        not_ok "the e2e script runs to its end" "aborted with status $rc near line ${E2E_LINE:-?}"
        e2e_summary
        ((rc != 0)) || rc=1
    fi
    stop_all_daemons
    if [[ -n ${E2E_MOUNT:-} ]]; then umount "$E2E_MOUNT" 2>/dev/null || true; fi
    if [[ ${E2E_KEEP:-0} == 1 ]]; then
        echo "# kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'E2E_LINE=$LINENO' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers specific to these tests ---------------------------------------

# Expected values from ffprobe, never hard-coded.
probe_duration_ms() {
    ffprobe -v error -show_entries format=duration -of csv=p=0 "$1" | awk '{ printf "%d\n", $1 * 1000 + 0.5 }'
}
probe_wh() { # "W H" of the first video stream
    ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0 "$1" | tr ',' ' '
}
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# check_video_matches DESC VIDEO_ID FILE: GET /v1/videos/ID is ready and its
# duration (within 100 ms), width, height and codec match ffprobe's view of FILE.
check_video_matches() {
    local desc=$1 id=$2 file=$3 dur w h
    dur=$(probe_duration_ms "$file")
    read -r w h < <(probe_wh "$file") || true
    [[ -n $w && -n $h ]] || { w=-1 h=-1; }
    api GET "/v1/videos/$id"
    check_status "$desc: GET /v1/videos/$id" 200
    check_jq "$desc: status ready" '.status == "ready"'
    check_jq "$desc: duration_ms within 100 ms of ffprobe ($dur)" \
        '(.duration_ms | type == "number") and (.duration_ms - $d) >= -100 and (.duration_ms - $d) <= 100' \
        --argjson d "$dur"
    check_jq "$desc: width x height ${w}x$h as ffprobe" '.width == $w and .height == $h' \
        --argjson w "$w" --argjson h "$h"
    check_jq "$desc: codec h264" '.codec == "h264"'
}

# list_all: every video (one page of 1000) into $TMP/all.json.
list_all() {
    api GET "/v1/videos?limit=1000"
    cp "$E2E_BODY" "$TMP/all.json"
}

# Total number of videos per GET /v1/videos.
video_total() {
    api GET "/v1/videos?limit=1"
    jqb '.total'
}

T0=$SECONDS

# ---- fixtures made with ffmpeg ----------------------------------------------

mkdir -p "$TMP/media"
for n in 1 2 3; do
    # Different titles make different bytes, so three distinct videos.
    ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=64x48:rate=5 -t 1 -pix_fmt yuv420p -c:v libx264 \
        -metadata title="$n" "$TMP/media/out_$n.mp4"
done
ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -t 2 -pix_fmt yuv420p -c:v libx264 \
    -metadata title=concurrent "$TMP/media/concurrent.mp4"
ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=96x64:rate=10 -t 1 -pix_fmt yuv420p -c:v libx264 \
    -metadata title=outside "$TMP/media/outside.mp4"
ffmpeg -nostdin -v error -f lavfi -i sine=duration=1 "$TMP/media/audio.m4a"
head -c 5000 /dev/urandom >"$TMP/media/random.bin"
head -c 300000 /dev/urandom >"$TMP/media/big.bin"

# =============================================================================
if section health "1. health, openapi, metrics"; then
    if ! start_daemon main "$TMP/data"; then
        not_ok "main daemon starts and answers /v1/health" "see log above"
        E2E_DONE=1
        e2e_summary
        exit 1
    fi
    ok "main daemon starts on port ${D_PORT[main]} and answers /v1/health"

    api GET /v1/health
    check_status "GET /v1/health" 200
    check_jq "health: status ok, version and backend.name are strings" \
        '.status == "ok" and (.version | type == "string" and length > 0) and
         (.backend.name | type == "string" and length > 0)'
    api GET /v1/openapi.json
    check_status "GET /v1/openapi.json" 200
    check_jq "openapi.json is JSON with an 'openapi' member" 'has("openapi") and (.paths | type == "object")'
    api GET /metrics
    check_status "GET /metrics" 200
    check "metrics has momentd_videos" grep -q '^momentd_videos ' "$E2E_BODY"
    check "metrics has momentd_http_requests_total" grep -q '^momentd_http_requests_total{' "$E2E_BODY"
fi

# =============================================================================
if section uploads "2. uploads: raw, duplicate, multipart; jobs finish; probe matches ffprobe"; then
    api POST "/v1/videos?name=clip.mp4" --data-binary "@$CLIP1"
    check_status "raw upload of a real clip" 202
    check_jq "raw upload: video.id, job.id, name clip.mp4, duplicate false" \
        '(.video.id | type == "number") and (.job.id | type == "number") and
         .video.name == "clip.mp4" and .duplicate == false'
    V1=$(jqb '.video.id')
    J1=$(jqb '.job.id')

    api POST "/v1/videos?name=again.mp4" --data-binary "@$CLIP1"
    check_status "same bytes uploaded again" 200
    check_jq "second upload: same video id, duplicate true" '.video.id == $v and .duplicate == true' --argjson v "$V1"

    api POST /v1/videos -F "file=@$CLIP2"
    check_status "multipart upload of a second clip" 202
    check_jq "multipart upload: name from the file part ($(basename "$CLIP2")), duplicate false" \
        '.video.name == $n and .duplicate == false and (.video.id != $v)' \
        --arg n "$(basename "$CLIP2")" --argjson v "$V1"
    V2=$(jqb '.video.id')
    J2=$(jqb '.job.id')

    for pair in "$V1:$J1:$CLIP1" "$V2:$J2:$CLIP2"; do
        IFS=: read -r vid jid file <<<"$pair"
        wait_job "$jid" 30 || true
        check_eq "job $jid (video $vid) ends done within 30 s" "done" "$JOB_STATE"
        check_jq "job $jid: progress.percent 100" '.progress.percent == 100'
        check_video_matches "video $vid ($(basename "$file"))" "$vid" "$file"
    done
fi

# =============================================================================
if section list "3. list and pagination"; then
    SYN_IDS=()
    SYN_JOBS=()
    for n in 1 2 3; do
        api POST "/v1/videos?name=out_$n.mp4" --data-binary "@$TMP/media/out_$n.mp4"
        check_status "upload synthetic video out_$n.mp4" 202
        SYN_IDS+=("$(jqb '.video.id')")
        SYN_JOBS+=("$(jqb '.job.id')")
    done
    ALL_IDS=("$V1" "$V2" "${SYN_IDS[@]}")
    N_EXPECTED=${#ALL_IDS[@]}

    api GET "/v1/videos?limit=2&offset=0"
    check_status "GET /v1/videos?limit=2&offset=0" 200
    check_jq "first page: 2 videos, total $N_EXPECTED, limit 2, offset 0, next_offset 2" \
        '(.videos | length) == 2 and .total == $t and .limit == 2 and .offset == 0 and .next_offset == 2' \
        --argjson t "$N_EXPECTED"

    SEEN=()
    offset=0
    pages=0
    while [[ $offset != null && $pages -lt 20 ]]; do
        api GET "/v1/videos?limit=2&offset=$offset"
        [[ $STATUS == 200 ]] || break
        mapfile -t ids < <(jqb '.videos[].id')
        SEEN+=("${ids[@]}")
        offset=$(jqb '.next_offset')
        pages=$((pages + 1))
    done
    check_eq "walking pages of 2 ends with next_offset null after 3 pages" "null 3" "$offset $pages"
    seen_sorted=$(printf '%s\n' "${SEEN[@]}" | sort -n | tr '\n' ' ')
    want_sorted=$(printf '%s\n' "${ALL_IDS[@]}" | sort -n | tr '\n' ' ')
    check_eq "pages hold every video exactly once" "$want_sorted" "$seen_sorted"

    api GET "/v1/videos?limit=0"
    check_error "GET /v1/videos?limit=0" 400
    api GET "/v1/videos?limit=abc"
    check_error "GET /v1/videos?limit=abc" 400
    api GET "/v1/videos?offset=-1"
    check_error "GET /v1/videos?offset=-1" 400
fi

# =============================================================================
if section delete "4. delete"; then
    for j in "${SYN_JOBS[@]}"; do
        wait_job "$j" 30 || true
        check_eq "synthetic video job $j ends done" "done" "$JOB_STATE"
    done
    DEL=${SYN_IDS[0]}
    DEL_SHA=$(sha_of "$TMP/media/out_1.mp4")
    api GET "/v1/videos/$DEL"
    check_jq "video $DEL has the sha256 of its bytes" '.sha256 == $s' --arg s "$DEL_SHA"
    check "stored file data/videos/<sha256> exists before delete" test -f "$TMP/data/videos/$DEL_SHA"
    api DELETE "/v1/videos/$DEL"
    check_status "DELETE /v1/videos/$DEL" 200
    check_jq "delete answer names the id" '.deleted == $v' --argjson v "$DEL"
    api GET "/v1/videos/$DEL"
    check_error "GET of the deleted video" 404
    api DELETE "/v1/videos/$DEL"
    check_error "DELETE of the deleted video again" 404
    check "stored file data/videos/<sha256> is gone" test ! -e "$TMP/data/videos/$DEL_SHA"
    for v in "$V1" "$V2" "${SYN_IDS[1]}" "${SYN_IDS[2]}"; do
        api GET "/v1/videos/$v"
        check_status "other video $v still there" 200
    done
    api GET "/v1/videos?limit=1"
    check_jq "total is $((N_EXPECTED - 1)) after the delete" '.total == $t' --argjson t "$((N_EXPECTED - 1))"
fi

# =============================================================================
if section errors "5. errors"; then
    api GET /v1/nope
    check_error "GET of an unknown path" 404
    api GET /nope/at/all
    check_error "GET of an unknown path outside /v1" 404
    api PUT /v1/videos --data-binary x
    check_error "PUT /v1/videos" 405
    allow=$(resp_header Allow)
    if [[ $allow == *GET* && $allow == *POST* ]]; then
        ok "405 has an Allow header listing GET and POST ($allow)"
    else
        not_ok "405 has an Allow header listing GET and POST" "Allow: '$allow'"
    fi
    api POST /v1/index -H 'Content-Type: application/json' --data-binary '{"paths": ['
    check_error "POST /v1/index with malformed JSON" 400
    api POST /v1/index -H 'Content-Type: application/json' --data-binary ''
    check_error "POST /v1/index with an empty body" 400
    api GET /v1/videos/999999
    check_error "GET /v1/videos/999999" 404
    api GET /v1/videos/abc
    check_error "GET /v1/videos/abc" 404
    api DELETE /v1/videos/999999
    check_error "DELETE /v1/videos/999999" 404
    api GET /v1/jobs/999999
    check_error "GET /v1/jobs/999999" 404
    api POST /v1/index -H 'Content-Type: application/json' --data-binary '{"paths":["/tmp"]}'
    check_error "POST /v1/index with no allowed_roots configured" 403
fi

# =============================================================================
if section notvideo "8. uploads that are not videos"; then
    api POST "/v1/videos?name=noise.mp4" --data-binary "@$TMP/media/random.bin"
    check_status "upload of random bytes is accepted for probing" 202
    JN=$(jqb '.job.id')
    VN=$(jqb '.video.id')
    api POST "/v1/videos?name=tone.m4a" --data-binary "@$TMP/media/audio.m4a"
    check_status "upload of an audio-only file is accepted for probing" 202
    JA=$(jqb '.job.id')
    wait_job "$JN" 30 || true
    check_eq "random bytes: job ends failed" failed "$JOB_STATE"
    check_jq "random bytes: job error says it is not a video" \
        '(.error | type == "string") and (.error | ascii_downcase | test("not a video"))'
    api GET "/v1/videos/$VN"
    check_jq "random bytes: video status failed with the error" '.status == "failed" and (.error | length > 0)'
    wait_job "$JA" 30 || true
    check_eq "audio-only: job ends failed" failed "$JOB_STATE"
    check_jq "audio-only: job error mentions audio" '(.error | type == "string") and (.error | test("audio"))'
    api GET /v1/health
    check_status "daemon healthy after failed jobs" 200
fi

# =============================================================================
if section concurrent "11. concurrent uploads of the same bytes"; then
    CONC=$TMP/media/concurrent.mp4
    CONC_SHA=$(sha_of "$CONC")
    cpids=()
    for i in 1 2 3 4 5 6 7 8; do
        curl -sS -o "$TMP/conc.$i.json" -w '%{http_code}\n' --max-time 30 --data-binary "@$CONC" \
            "$BASE/v1/videos?name=concurrent.mp4" >"$TMP/conc.$i.code" 2>"$TMP/conc.$i.err" &
        cpids+=($!)
    done
    for p in "${cpids[@]}"; do wait "$p" || true; done # waits on these 8 only, never the daemons
    codes=$(cat "$TMP"/conc.*.code | sort | tr '\n' ' ')
    n202=$(cat "$TMP"/conc.*.code | grep -c '^202$' || true)
    nbad=$(cat "$TMP"/conc.*.code | grep -vc '^20[02]$' || true)
    check_eq "8 concurrent uploads all answer 200 or 202 ($codes)" 0 "$nbad"
    check_eq "exactly one concurrent upload answers 202" 1 "$n202"
    nnum=$(cat "$TMP"/conc.*.json | jq -r '.video.id | numbers' | wc -l || true)
    nids=$(cat "$TMP"/conc.*.json | jq -r '.video.id | numbers' | sort -u | wc -l || true)
    check_eq "all 8 answers name the same video id (8 numeric ids, 1 distinct)" "8 1" "$nnum $nids"
    list_all
    check_eq "exactly one video has that sha256" 1 "$(jq --arg s "$CONC_SHA" '[.videos[] | select(.sha256 == $s)] | length' "$TMP/all.json")"
fi

# =============================================================================
if section toolarge "6. 413 with --max-upload 100K (Content-Length and chunked)"; then
    if start_daemon small "$TMP/data2" --max-upload 100K; then
        ok "daemon with --max-upload 100K starts"
        api POST "/v1/videos?name=ok.mp4" --data-binary "@$TMP/media/out_2.mp4"
        check_status "upload under the limit is accepted" 202
        before=$(video_total)
        api POST "/v1/videos?name=big.bin" --data-binary "@$TMP/media/big.bin"
        check_error "300 KB upload with Content-Length" 413
        api POST "/v1/videos?name=big.bin" -H 'Transfer-Encoding: chunked' --data-binary "@$TMP/media/big.bin"
        check_error "300 KB chunked upload" 413
        api POST /v1/videos -F "file=@$TMP/media/big.bin"
        check_error "300 KB multipart upload" 413
        left=$(find "$TMP/data2/tmp" -type f | wc -l)
        check_eq "data2/tmp holds no files after the 413s" 0 "$left"
        check_eq "no video was created by the 413s (total unchanged)" "$before" "$(video_total)"
        stop_daemon small || true
        check_eq "daemon with --max-upload exits 0 on SIGTERM" 0 "$EXIT_RC"
    else
        not_ok "daemon with --max-upload 100K starts" "see log above"
    fi
fi

# =============================================================================
if section apikey "7. 401 with --api-key"; then
    if start_daemon keyed "$TMP/data3" --api-key s3cret; then
        ok "daemon with --api-key starts"
        api GET /v1/videos
        check_error "GET /v1/videos without a key" 401
        check "401 has a WWW-Authenticate header" test -n "$(resp_header WWW-Authenticate)"
        api GET /v1/videos -H 'Authorization: Bearer wrong'
        check_error "GET /v1/videos with a wrong key" 401
        api GET /v1/videos -H 'Authorization: Bearer s3cret'
        check_status "GET /v1/videos with the right key" 200
        api GET /metrics
        check_error "GET /metrics without a key" 401
        api POST "/v1/videos?name=x.mp4" --data-binary "@$TMP/media/out_3.mp4"
        check_error "upload without a key" 401
        api GET /v1/health
        check_status "GET /v1/health without a key" 200
        check_jq "health without a key shows only status and version (no paths, counts, model)" \
            'keys == ["status", "version"] and .status == "ok"'
        api GET /v1/health -H 'Authorization: Bearer wrong'
        check_status "GET /v1/health with a wrong key" 200
        check_jq "health with a wrong key shows only status and version" 'keys == ["status", "version"]'
        api GET /v1/health -H 'Authorization: Bearer s3cret'
        check_jq "health with the key shows the model, backend and workers" \
            '(.model.dir | type == "string") and (.backend.name | type == "string") and (.workers | type == "number")'
        stop_daemon keyed || true
    else
        not_ok "daemon with --api-key starts" "see log above"
    fi
fi

# =============================================================================
if section index "9. POST /v1/index with --allowed-roots"; then
    ARCH=$TMP/archive
    mkdir -p "$ARCH/sub" "$TMP/outside"
    cp "$CLIP1" "$ARCH/a.mp4"
    cp "$CLIP2" "$ARCH/sub/b.mp4"
    cp "$TMP/media/outside.mp4" "$TMP/outside/x.mp4"
    ln -s "$TMP/outside/x.mp4" "$ARCH/link.mp4"
    echo "not a video" >"$ARCH/notes.txt"
    if start_daemon index "$TMP/data4" --allowed-roots "$ARCH"; then
        ok "daemon with --allowed-roots starts"
        json() { jq -cn --arg p "$1" '{paths: [$p]}'; }
        api POST /v1/index -H 'Content-Type: application/json' --data-binary "$(json "$ARCH")"
        check_status "index the archive directory" 202
        check_jq "2 files queued (a.mp4 and sub/b.mp4)" \
            '(.queued | length) == 2 and ([.queued[].path] | sort) == [$a, $b]' \
            --arg a "$ARCH/a.mp4" --arg b "$ARCH/sub/b.mp4"
        check_jq "symlink leading outside the root is reported in skipped" \
            'any(.skipped[]; .path == $l and (.reason | test("outside")))' --arg l "$ARCH/link.mp4"
        check_jq "queued entries carry video and job ids" \
            '(.queued | length > 0) and all(.queued[]; (.video.id | type == "number") and (.job.id | type == "number"))'
        mapfile -t IJOBS < <(jqb '.queued[].job.id')
        declare -A IVID=()
        while read -r p v; do IVID[$p]=$v; done < <(jqb '.queued[] | "\(.path) \(.video.id)"')

        api POST /v1/index -H 'Content-Type: application/json' --data-binary "$(json "$ARCH")"
        check_status "index the archive again" 200
        check_jq "again: nothing queued, both files skipped as already known" \
            '(.queued | length) == 0 and
             ([.skipped[] | select(.reason | test("already known")) | .path] | sort) == [$a, $b]' \
            --arg a "$ARCH/a.mp4" --arg b "$ARCH/sub/b.mp4"

        api POST /v1/index -H 'Content-Type: application/json' --data-binary "$(json "$TMP/outside/x.mp4")"
        check_error "index a file outside the root" 403
        api POST /v1/index -H 'Content-Type: application/json' --data-binary "$(json "$ARCH/../outside/x.mp4")"
        check_error "index root/../outside (dot-dot escape)" 403
        api POST /v1/index -H 'Content-Type: application/json' --data-binary "$(json "$ARCH/link.mp4")"
        check_error "index the symlink that leads outside the root" 403
        api POST /v1/index -H 'Content-Type: application/json' \
            --data-binary "$(jq -cn --arg a "$ARCH/a.mp4" --arg o "$TMP/outside/x.mp4" '{paths: [$a, $o]}')"
        check_error "index an allowed and a forbidden path together" 403
        api POST /v1/index -H 'Content-Type: application/json' --data-binary '{"paths":["archive/a.mp4"]}'
        check_error "index a relative path" 400
        api POST /v1/index -H 'Content-Type: application/json' --data-binary '{"paths":"x"}'
        check_error "index with paths a string" 400
        api POST /v1/index -H 'Content-Type: application/json' --data-binary '{"paths":[]}'
        check_error "index with no paths" 400
        api POST /v1/index -H 'Content-Type: application/json' --data-binary "$(json "$ARCH/missing.mp4")"
        check_error "index a missing file inside the root" 404
        api GET "/v1/videos?limit=1"
        check_jq "only the 2 archive files became videos" '.total == 2'

        check_eq "2 archive jobs to wait for" 2 "${#IJOBS[@]}"
        for j in "${IJOBS[@]}"; do
            wait_job "$j" 30 || true
            check_eq "archive job $j ends done" "done" "$JOB_STATE"
        done
        check_video_matches "archive a.mp4" "${IVID[$ARCH/a.mp4]:-0}" "$CLIP1"
        check_jq "archive video keeps its path" '.source == "path" and .path == $p' --arg p "$ARCH/a.mp4"
        check "archive files stay in place" test -f "$ARCH/a.mp4" -a -f "$ARCH/sub/b.mp4"
        stop_daemon index || true
    else
        not_ok "daemon with --allowed-roots starts" "see log above"
    fi
fi

# =============================================================================
if section crash "10. kill -9 during a job, restart on the same data dir"; then
    if start_daemon crash "$TMP/data5" --debug-job-delay-ms 3000 --workers 1; then
        ok "daemon with --debug-job-delay-ms 3000 --workers 1 starts"
        api POST "/v1/videos?name=crash.mp4" --data-binary "@$CLIP1"
        check_status "upload before the crash" 202
        CJ=$(jqb '.job.id')
        CV=$(jqb '.video.id')
        wait_job "$CJ" 10 running || true
        check_eq "job $CJ is running" running "$JOB_STATE"
        # (stderr hidden: bash reports "Killed" for a child ended by a signal)
        { kill -KILL "${D_PID[crash]}" && wait_exit "${D_PID[crash]}" 10; } 2>/dev/null || true
        check_eq "kill -9 ends the daemon (status 137)" 137 "$EXIT_RC"
        : >"$TMP/data5/tmp/upload-abc123"
        if start_daemon crash "$TMP/data5" --debug-job-delay-ms 3000 --workers 1; then
            ok "daemon restarts on the same data dir (port ${D_PORT[crash]})"
            check "partial upload data/tmp/upload-abc123 was removed at start" test ! -e "$TMP/data5/tmp/upload-abc123"
            wait_job "$CJ" 30 || true
            check_eq "interrupted job $CJ finishes done after the restart" "done" "$JOB_STATE"
            check_jq "job $CJ: attempts >= 2" '.attempts >= 2'
            check_video_matches "video $CV after the crash" "$CV" "$CLIP1"
            stop_daemon crash || true
        else
            not_ok "daemon restarts on the same data dir" "see log above"
        fi
    else
        not_ok "daemon with --debug-job-delay-ms starts" "see log above"
    fi
fi

# =============================================================================
if section sigterm "12. SIGTERM"; then
    use_daemon main
    api GET /v1/health
    check_status "main daemon still healthy before SIGTERM" 200
    stop_daemon main TERM || true
    check_eq "SIGTERM: exits within 10 s with status 0" 0 "${EXIT_RC:-timeout}"
    check "log says 'stopped cleanly'" grep -q 'stopped cleanly' "${D_LOG[main]}"
fi

# =============================================================================
if section config "13. configuration errors"; then
    # check_config_error DESC WORD ARGS...: exits 2 and stderr mentions WORD.
    check_config_error() {
        local desc=$1 word=$2 rc=0
        shift 2
        timeout 10 "$E2E_BIN" "$@" --data-dir "$TMP/data-cfg" >"$TMP/cfg.out" 2>"$TMP/cfg.err" || rc=$?
        check_eq "$desc: exit status 2" 2 "$rc"
        if grep -q "$word" "$TMP/cfg.err"; then
            ok "$desc: stderr mentions '$word'"
        else
            not_ok "$desc: stderr mentions '$word'" "stderr: $(head -c 300 "$TMP/cfg.err")"
        fi
    }
    check_config_error "--port 99999" port --port 99999
    check_config_error "--bind nonsense" bind --bind nonsense
    check_config_error "--max-upload lots" max_upload --max-upload lots
    check_config_error "--workers 0" workers --workers 0
fi

# =============================================================================
if section cors "14. CORS for browser clients"; then
    if start_daemon cors "$TMP/data6" --cors-origins https://app.example.com; then
        ok "daemon with --cors-origins starts"
        api GET /v1/health -H 'Origin: https://app.example.com'
        check_eq "allowed origin gets Access-Control-Allow-Origin" "https://app.example.com" \
            "$(resp_header Access-Control-Allow-Origin)"
        api GET /v1/health -H 'Origin: https://evil.example.org'
        check_eq "other origins get no Access-Control-Allow-Origin" "" "$(resp_header Access-Control-Allow-Origin)"
        api OPTIONS /v1/videos -H 'Origin: https://app.example.com' -H 'Access-Control-Request-Method: POST'
        check_status "preflight OPTIONS answers 204" 204
        check "preflight lists POST in Access-Control-Allow-Methods" \
            grep -qi '^Access-Control-Allow-Methods:.*POST' "$E2E_HDRS"
        check "preflight allows the Authorization header" \
            grep -qi '^Access-Control-Allow-Headers:.*Authorization' "$E2E_HDRS"
        stop_daemon cors || true
    else
        not_ok "daemon with --cors-origins starts" "see log above"
    fi
fi

# =============================================================================
if section fulldisk "15. full disk: a small tmpfs as data dir"; then
    E2E_MOUNT=$TMP/full
    mkdir -p "$E2E_MOUNT"
    if mount -t tmpfs -o size=32m tmpfs "$E2E_MOUNT" 2>/dev/null; then
        if start_daemon full "$E2E_MOUNT/data"; then
            ok "daemon on a 32 MiB tmpfs starts"
            head -c 40000000 /dev/urandom >"$TMP/media/big40.bin"
            api POST "/v1/videos?name=big40.bin" --data-binary "@$TMP/media/big40.bin"
            check_error "upload larger than the free space" 507
            check_jq "507 message says the disk is full" '.error.message | test("disk full")'
            left=$(find "$E2E_MOUNT/data/tmp" "$E2E_MOUNT/data/videos" -type f | wc -l)
            check_eq "no partial file is left after the 507" 0 "$left"
            api GET /v1/health
            check_status "daemon still healthy after a full disk" 200
            api POST "/v1/videos?name=small.mp4" --data-binary "@$TMP/media/out_2.mp4"
            check_status "a small upload still works afterwards" 202
            stop_daemon full || true
            check_eq "daemon on a full disk exits 0 on SIGTERM" 0 "$EXIT_RC"
            # Indexing and deleting while the disk is full (tests/e2e/fulldisk.sh).
            rm -rf "$E2E_MOUNT/data"
            # shellcheck source=tests/e2e/fulldisk.sh
            source "$HERE/fulldisk.sh"
            e2e_fulldisk_jobs "$E2E_MOUNT" "$CLIP2"
        else
            not_ok "daemon on a 32 MiB tmpfs starts" "see log above"
        fi
        umount "$E2E_MOUNT" && E2E_MOUNT=""
    else
        skip "full-disk case (upload larger than the free space: 507, no partial file)" \
            "cannot mount a tmpfs here; needs root"
        E2E_MOUNT=""
    fi
fi

# =============================================================================
if section search "16. search, grounding, query by example (demo model)"; then
    if start_daemon search "$TMP/data7"; then
        ok "daemon for search starts"
        api GET /v1/health
        check_jq "health reports the demo model as not meaningful" \
            '.model.status == "loaded" and .model.demo == true and .model.meaningful == false'
        api POST "/v1/videos?name=one.mp4" --data-binary "@$CLIP1"
        s1=$(jqb '.video.id'); j1=$(jqb '.job.id')
        api POST "/v1/videos?name=two.mp4" --data-binary "@$CLIP2"
        s2=$(jqb '.video.id'); j2=$(jqb '.job.id')
        { wait_job "$j1" 60 "done" && wait_job "$j2" 60 "done"; } || true
        check_eq "both real clips are indexed" "done" "$JOB_STATE"
        check_jq "progress counts frames" '.progress.unit == "frames" and .progress.total > 0'
        d2=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$CLIP2")
        api GET "/v1/videos/$s2"
        check_jq "the video reports its token reduction and temporal encoder" \
            '.n_frames > 0 and .n_segments > 0 and .token_reduction.ratio > 1
             and .token_reduction.stored_vectors == .n_segments and (.temporal | test("untrained"))
             and .token_reduction.stored_bytes_per_hour > 0'
        api GET /v1/health
        check_jq "health says which temporal encoder is in use" \
            '.model.temporal.trained == false and .model.temporal.identity == true and (.model.temporal.path | length > 0)'

        api GET "/v1/search?q=a+dog+jumps+into+a+pool&k=5"
        check_status "text search answers 200" 200
        check_jq "text search JSON: query, model, took_ms, confident, moments" \
            '.query.type == "text" and .query.text == "a dog jumps into a pool" and .model.meaningful == false
             and (.model.warning | length > 0) and (.took_ms | type == "number") and (.confident | type == "boolean")
             and (.moments | length > 0)'
        check_jq "each moment has video, name, start < end, score, z and its segments" \
            '(.moments | length > 0) and all(.moments[]; (.video_id | type == "number") and (.video_name | type == "string") and .start < .["end"]
                 and (.score | type == "number") and (.z | type == "number") and (.segments | length > 0))'
        check_jq "demo model: no confident match, and it says so" '.confident == false and (.message | test("no confident"))'

        api POST /v1/search -H 'Content-Type: application/json' -d "{\"video_id\": $s2, \"t\": 5.5, \"k\": 3}"
        check_status "query by example answers 200" 200
        check_jq "query by example: the top hit is that video with a moment containing t" \
            '.moments[0].video_id == $v and .moments[0].start <= 5.5 and .moments[0]["end"] >= 5.5' \
            --argjson v "$s2"

        ffmpeg -v error -ss 3 -i "$CLIP2" -frames:v 1 -y "$TMP/media/frame.jpg"
        api POST /v1/search -F "file=@$TMP/media/frame.jpg" -F k=2
        check_status "query by picture (multipart) answers 200" 200
        check_jq "query by picture: a frame of a video finds that video first" \
            '.query.type == "image" and .moments[0].video_id == $v and (.moments | length) <= 2' \
            --argjson v "$s2"
        api POST "/v1/search?k=1" -H 'Content-Type: image/jpeg' --data-binary "@$TMP/media/frame.jpg"
        check_jq "query by picture (raw body) finds the same video" '.moments[0].video_id == $v' --argjson v "$s2"
        head -c 3000 /dev/urandom >"$TMP/media/junk.jpg"
        api POST /v1/search -F "file=@$TMP/media/junk.jpg"
        check_error "a picture that is not an image" 422
        check "no query picture is left in tmp/" test -z "$(find "$TMP/data7/tmp" -type f)"

        api GET "/v1/videos/$s2/ground?q=a+lion+climbs+a+tree&curve=1"
        check_status "grounding answers 200" 200
        check_jq "grounding JSON: moments with start/end, precision, confident, curve" \
            '(.moments | length > 0) and all(.moments[]; .start < .["end"]) and .precision_s > 0
             and (.confident | type == "boolean") and (.curve | length) == .segments'
        check_jq "segments are contiguous and cover the video" \
            '(.curve | length > 1) and .curve[0].start == 0
             and ([range(1; .curve | length) as $i | .curve[$i].start == .curve[$i - 1]["end"]] | all)
             and ((.curve[-1]["end"] - $d) | fabs) < 1.01' --argjson d "$d2"
        api POST "/v1/videos/$s2/ground" -H 'Content-Type: application/json' -d '{"q": "a lion", "top_n": 1}'
        check_jq "grounding by POST, top_n 1" '(.moments | length) == 1 and (has("curve") | not)'

        api GET "/v1/search?q="
        check_error "empty query" 400
        api GET "/v1/search?q=$(head -c 1200 /dev/zero | tr '\0' 'a')"
        check_error "over-long query" 400
        api GET /v1/search
        check_error "no query at all" 400
        api GET "/v1/search?q=x&k=0"
        check_error "k out of range" 400
        api POST /v1/search -H 'Content-Type: application/json' -d '{"q": 12}'
        check_error "q of the wrong JSON type" 400
        api POST /v1/search -H 'Content-Type: application/json' -d '{"video_id": 999, "t": 1}'
        check_error "query by example of an unknown video" 404
        api GET "/v1/videos/999/ground?q=x"
        check_error "grounding in an unknown video" 404
        api GET "/v1/videos/$s2/ground"
        check_error "grounding without q" 400

        api GET "/v1/search?q=anything&video_ids=$s1"
        check_jq "video_ids filter keeps only that video" '(.moments | length > 0) and all(.moments[]; .video_id == $v)' \
        --argjson v "$s1"
        api DELETE "/v1/videos/$s2"
        api GET "/v1/search?q=a+lion&k=20"
        check_jq "a deleted video is gone from results at once" '(.moments | length > 0) and all(.moments[]; .video_id != $v)' \
        --argjson v "$s2"
        api POST /v1/search -H 'Content-Type: application/json' -d "{\"video_id\": $s2, \"t\": 1}"
        check_error "query by example of a deleted video" 404
        stop_daemon search || true
        # Restart: the index is loaded from SQLite and answers the same.
        if start_daemon search "$TMP/data7"; then
            ok "daemon search restarted on the same data dir"
            api GET /v1/health
            check_jq "after a restart the index holds the remaining video's segments" '.model.segments > 0'
            api POST /v1/search -H 'Content-Type: application/json' -d "{\"video_id\": $s1, \"t\": 1}"
            check_jq "after a restart query by example still finds the video" '.moments[0].video_id == $v' --argjson v "$s1"
            stop_daemon search || true
        else
            not_ok "daemon search restarted on the same data dir" "see log above"
        fi
    else
        not_ok "daemon for search starts" "see log above"
    fi
fi

# =============================================================================
if section resume "17. kill -9 between windows: indexing resumes without duplicate or missing segments"; then
    ffmpeg -v error -f lavfi -i testsrc2=size=96x64:rate=10 -t 150 -pix_fmt yuv420p -c:v libx264 -g 50 \
        "$TMP/media/long.mp4"
    if start_daemon resume "$TMP/data8" --workers 1 --debug-job-delay-ms 700; then
        api POST "/v1/videos?name=long.mp4" --data-binary "@$TMP/media/long.mp4"
        lv=$(jqb '.video.id'); lj=$(jqb '.job.id')
        got=0
        for ((i = 0; i < 200; i++)); do
            api GET "/v1/jobs/$lj"
            if [[ $(jqb '.progress.unit') == frames && $(jqb '.progress.done') -ge 32 && $(jqb '.state') == running ]]; then
                got=1
                break
            fi
            sleep 0.05
        done
        check_eq "the first window (32 frames) is committed while the job runs" 1 "$got"
        api GET "/v1/search?q=test+pattern&video_ids=$lv&k=100"
        check_jq "what is committed is already searchable" '.segments_scored >= 8'
        kill -9 "${D_PID[resume]}" 2>/dev/null || true
        wait "${D_PID[resume]}" 2>/dev/null || true
        if start_daemon resume "$TMP/data8" --workers 1; then
            ok "daemon resume restarted after kill -9"
            wait_job "$lj" 60 "done" || true
            check_eq "the interrupted job finishes after the restart" "done" "$JOB_STATE"
            check "the restart resumed after committed segments" grep -q "resuming after [1-9][0-9]* committed segments" \
                "${D_LOG[resume]}"
            api GET "/v1/videos/$lv/ground?q=test&curve=1"
            check_jq "150 s at 1 fps in segments of 4 frames: 38 segments, contiguous from 0 to 150 s, none twice" \
                '.segments == 38 and (.curve | length) == 38 and .curve[0].start == 0 and .curve[-1]["end"] == 150
                 and ([range(1; .curve | length) as $i | .curve[$i].start == .curve[$i - 1]["end"]] | all)'
            stop_daemon resume || true
        else
            not_ok "daemon resume restarted after kill -9" "see log above"
        fi
    else
        not_ok "daemon for the resume test starts" "see log above"
    fi
fi

# =============================================================================
if section models "18. another model: videos are re-indexed, embedding spaces never mixed; a bad model stops start-up"; then
    TINY=$REPO/tests/fixtures/clip/tiny-f32-quickgelu-oldeos
    if start_daemon other "$TMP/data7" --model-dir "$TINY"; then
        ok "daemon other started with the tiny model on the search data dir"
        api GET /v1/health
        check_jq "health names the configured model" '.model.name == "tiny-f32-quickgelu-oldeos" and .model.demo == false'
        check "no segments of the demo model are loaded for it" grep -q "model: 0 segments loaded" "${D_LOG[other]}"
        check "the log says videos were queued for re-indexing" grep -q "queued for re-indexing" "${D_LOG[other]}"
        api GET "/v1/videos/$s1"
        rj=$(jqb '.job_id')
        wait_job "$rj" 60 "done" || true
        check_eq "the re-indexing job finishes" "done" "$JOB_STATE"
        api POST /v1/search -H 'Content-Type: application/json' -d "{\"video_id\": $s1, \"t\": 1}"
        check_jq "search works in the new model's space" '.moments[0].video_id == $v and .model.name == "tiny-f32-quickgelu-oldeos"' \
            --argjson v "$s1"
        stop_daemon other || true
    else
        not_ok "daemon other started with the tiny model on the search data dir" "see log above"
    fi
    mkdir -p "$TMP/badmodel"
    cp "$TINY"/* "$TMP/badmodel/"
    head -c 5000 "$TINY/model.safetensors" >"$TMP/badmodel/model.safetensors"
    rc=0
    "$E2E_BIN" serve --port 0 --data-dir "$TMP/data9" --model-dir "$TMP/badmodel" >"$TMP/bad.out" 2>"$TMP/bad.err" || rc=$?
    check "a truncated model file stops start-up with a non-zero status" test "$rc" -ne 0
    check "the message names the model and what is wrong" grep -qi "model.*badmodel.*\(truncat\|short\|size\|beyond\)" "$TMP/bad.err"
fi

# =============================================================================
if section temporal "19. init-temporal"; then
    rc=0
    "$E2E_BIN" init-temporal --d-model 512 --layers 1 "$TMP/t.safetensors" >"$TMP/it.out" 2>&1 || rc=$?
    check_eq "init-temporal writes a fresh encoder" 0 "$rc"
    E2E_BODY_SAVE=$E2E_BODY; E2E_BODY=$TMP/it.out
    check_jq "init-temporal prints what it wrote" '.identity == true and .trained == false and .layers == 1'
    E2E_BODY=$E2E_BODY_SAVE
    rc=0
    "$E2E_BIN" init-temporal "$TMP/t.safetensors" >/dev/null 2>&1 || rc=$?
    check_eq "init-temporal refuses to overwrite without --force" 1 "$rc"
    if start_daemon pinned "$TMP/data10" --temporal "$TMP/t.safetensors"; then
        ok "daemon pinned started with --temporal"
        api GET /v1/health
        check_jq "a pinned temporal file is used" '.model.temporal.path == $p and .model.temporal.layers == 1' \
            --arg p "$TMP/t.safetensors"
        stop_daemon pinned || true
    else
        not_ok "daemon pinned started with --temporal" "see log above"
    fi
    head -c 3000 "$TMP/t.safetensors" >"$TMP/t-bad.safetensors"
    rc=0
    "$E2E_BIN" serve --port 0 --data-dir "$TMP/data11" --temporal "$TMP/t-bad.safetensors" >/dev/null 2>"$TMP/tbad.err" || rc=$?
    check "a damaged temporal file stops start-up" test "$rc" -ne 0
    check "the message names the temporal file" grep -q "t-bad.safetensors" "$TMP/tbad.err"
fi

# =============================================================================
if section limits "20. request and setting limits at their edges (tests/e2e/limits.sh)"; then
    # shellcheck source=tests/e2e/limits.sh
    source "$HERE/limits.sh"
    e2e_limits "$TMP/data-limits"
fi

# =============================================================================
if section ids "21. ids are never reused: not after a delete of the newest, not after a restart"; then
    # id_lt A B: both are integers and A < B.
    id_lt() { [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] && (($1 < $2)); }
    # upload_id NAME FILE: uploads FILE and waits for its job; sets UP_V, UP_J and
    # UP_DUP to the answer's video id, job id and duplicate flag.
    upload_id() {
        api POST "/v1/videos?name=$1" --data-binary "@$2"
        check_status "upload $1" 202
        UP_V=$(jqb '.video.id')
        UP_J=$(jqb '.job.id')
        UP_DUP=$(jqb '.duplicate')
        wait_job "$UP_J" 30 "done" || true
        check_eq "job of $1 ends done" "done" "$JOB_STATE"
    }
    IDD=$TMP/data-ids
    if start_daemon ids "$IDD"; then
        ok "daemon for the id checks starts"
        upload_id a.mp4 "$TMP/media/out_1.mp4"
        ia=$UP_V ja=$UP_J
        upload_id b.mp4 "$TMP/media/out_2.mp4"
        ib=$UP_V jb=$UP_J
        check "video ids grow: A $ia < B $ib" id_lt "$ia" "$ib"
        check "job ids grow: A's $ja < B's $jb" id_lt "$ja" "$jb"
        # B is the newest row: a plain SQLite rowid would hand its id to the next insert.
        api DELETE "/v1/videos/$ib"
        check_status "DELETE video B ($ib), the newest" 200
        upload_id c.mp4 "$TMP/media/out_3.mp4"
        ic=$UP_V jc=$UP_J
        check "video C gets an id above deleted B's ($ib < $ic)" id_lt "$ib" "$ic"
        check "job of C gets an id above B's job ($jb < $jc)" id_lt "$jb" "$jc"
        api GET "/v1/videos/$ib"
        check_error "GET /v1/videos/$ib (deleted B) after C's upload" 404
        api GET "/v1/videos/$ic"
        check_jq "GET /v1/videos/$ic is C" '.id == $c and .name == "c.mp4"' --argjson c "${ic:-0}"
        api GET "/v1/videos/$ia"
        check_jq "video A ($ia) is still A" '.id == $a and .name == "a.mp4"' --argjson a "${ia:-0}"
        # Delete the newest again, restart, and upload B's bytes once more: a new video with a
        # new id, above every id handed out before the restart.
        api DELETE "/v1/videos/$ic"
        check_status "DELETE video C ($ic), the newest" 200
        stop_daemon ids || true
        check_eq "id daemon exits 0 on SIGTERM" 0 "$EXIT_RC"
        if start_daemon ids "$IDD"; then
            ok "daemon for the id checks restarts on the same data dir"
            upload_id b-again.mp4 "$TMP/media/out_2.mp4"
            check_eq "B's bytes after B's delete make a new video (duplicate false)" false "$UP_DUP"
            check "after the restart the new video's id is above deleted C's ($ic < $UP_V)" id_lt "$ic" "$UP_V"
            check "after the restart the new job's id is above C's job ($jc < $UP_J)" id_lt "$jc" "$UP_J"
            for v in "$ib" "$ic"; do
                api GET "/v1/videos/$v"
                check_error "GET /v1/videos/$v (deleted) after the restart" 404
            done
            stop_daemon ids || true
        else
            not_ok "daemon for the id checks restarts on the same data dir" "see log above"
        fi
    else
        not_ok "daemon for the id checks starts" "see log above"
    fi
fi

# =============================================================================
if section lock "22. one daemon per data dir: a second one exits 2 naming the dir and the PID; kill -9 frees it"; then
    LD=$TMP/data-lock
    if start_daemon lock "$LD"; then
        ok "first daemon on the data dir starts"
        first=${D_PID[lock]}
        rc=0
        timeout 5 "$E2E_BIN" serve --port 0 --bind 127.0.0.1 --data-dir "$LD" >"$TMP/lock2.out" 2>"$TMP/lock2.err" ||
            rc=$?
        check_eq "a second daemon on the same data dir exits with status 2 within 5 s" 2 "$rc"
        # The start-up banner ("INFO ... starting: data_dir D") names D anyway: only the
        # other lines count, those that say why it stopped.
        grep -v ' INFO ' "$TMP/lock2.err" >"$TMP/lock2.why" || true
        if grep -qF -- "$LD" "$TMP/lock2.why"; then
            ok "its stderr names the data dir"
        else
            not_ok "its stderr names the data dir" "stderr: $(head -c 300 "$TMP/lock2.err")"
        fi
        if grep -qw -- "$first" "$TMP/lock2.why"; then
            ok "its stderr names the PID of the first daemon ($first)"
        else
            not_ok "its stderr names the PID of the first daemon ($first)" "stderr: $(head -c 300 "$TMP/lock2.err")"
        fi
        # With the same settings (same port too) the answer is still the directory, not the port:
        # the lock is taken before listening.
        rc=0
        timeout 5 "$E2E_BIN" serve --port "${D_PORT[lock]}" --bind 127.0.0.1 --data-dir "$LD" \
            >"$TMP/lock3.out" 2>"$TMP/lock3.err" || rc=$?
        check_eq "a second daemon with the same port and data dir exits with status 2" 2 "$rc"
        if grep -q "in use by another momentd (pid $first)" "$TMP/lock3.err"; then
            ok "it says the data dir is in use by the first daemon, not that the port is taken"
        else
            not_ok "it says the data dir is in use by the first daemon, not that the port is taken" \
                "stderr: $(head -c 300 "$TMP/lock3.err")"
        fi
        api GET /v1/health
        check_status "the first daemon still answers after the second gave up" 200
        # (stderr hidden: bash reports "Killed" for a child ended by a signal)
        { kill -KILL "$first" && wait_exit "$first" 10; } 2>/dev/null || true
        check_eq "kill -9 ends the first daemon (status 137)" 137 "$EXIT_RC"
        if start_daemon lock "$LD"; then
            ok "after kill -9 of the first, a new daemon on the same data dir starts"
            stop_daemon lock || true
            check_eq "it exits 0 on SIGTERM" 0 "$EXIT_RC"
        else
            not_ok "after kill -9 of the first, a new daemon on the same data dir starts" "see log above"
        fi
    else
        not_ok "first daemon on the data dir starts" "see log above"
    fi
fi

# =============================================================================
if section httpedge "23. the HTTP edge: multipart parts, UTF-8, request-head limits, framing (tests/e2e/httpedge.sh)"; then
    # shellcheck source=tests/e2e/httpedge.sh
    source "$HERE/httpedge.sh"
    e2e_httpedge "$TMP/data-edge"
fi

# =============================================================================
if section metrics "24. /metrics: latency histograms per route, indexing seconds per stage, failures by reason"; then
    # shellcheck source=tests/e2e/httpedge.sh
    source "$HERE/httpedge.sh"
    e2e_metrics "$TMP/data-metrics" "$CLIP2"
fi

# =============================================================================
if section hostile "25. hostile media through the sandboxed decoders (tests/e2e/hostile.sh)"; then
    # shellcheck source=tests/e2e/hostile.sh
    source "$HERE/hostile.sh"
    e2e_hostile "$TMP/data-hostile"
fi

# =============================================================================
if section jobs "26. jobs: list and filter, cancel a queued and a running job, reindex"; then
    # One worker, and every job waits 2 s in running before its first window: the first upload's
    # job runs while the other two wait in the queue.
    if start_daemon jobs "$TMP/data-jobs" --workers 1 --debug-job-delay-ms 2000; then
        ok "daemon with --workers 1 --debug-job-delay-ms 2000 starts"
        JV=() JJ=()
        for n in 1 2 3; do
            api POST "/v1/videos?name=jobs_$n.mp4" --data-binary "@$TMP/media/out_$n.mp4"
            check_status "jobs: upload out_$n.mp4 queues a job" 202
            JV+=("$(jqb '.video.id')")
            JJ+=("$(jqb '.job.id')")
        done
        j1=${JJ[0]} j2=${JJ[1]} j3=${JJ[2]} v1=${JV[0]} v2=${JV[1]} v3=${JV[2]}
        api GET /v1/jobs
        check_status "GET /v1/jobs" 200
        check_jq "list: 3 jobs of total 3, newest first, one page" \
            '(.jobs | length) == 3 and .total == 3 and .limit == 50 and .offset == 0 and .next_offset == null
             and [.jobs[].id] == [$c, $b, $a] and $a < $b and $b < $c' \
            --argjson a "$j1" --argjson b "$j2" --argjson c "$j3"
        api GET "/v1/jobs?limit=2"
        check_jq "list limit=2: the two newest, next_offset 2" \
            '(.jobs | length) == 2 and .total == 3 and .limit == 2 and .next_offset == 2 and [.jobs[].id] == [$c, $b]' \
            --argjson b "$j2" --argjson c "$j3"
        api GET "/v1/jobs?limit=2&offset=2"
        check_jq "list limit=2&offset=2: the oldest, next_offset null" \
            '(.jobs | length) == 1 and .total == 3 and .offset == 2 and .next_offset == null and .jobs[0].id == $a' \
            --argjson a "$j1"
        api GET "/v1/jobs?state=queued"
        check_jq "state=queued: non-empty, all queued, holds the two waiting jobs" \
            '(.jobs | length) > 0 and .total == (.jobs | length) and all(.jobs[]; .state == "queued")
             and ([.jobs[].id] | index($b) != null and index($c) != null)' \
            --argjson b "$j2" --argjson c "$j3"
        api GET "/v1/jobs?video_id=$v2"
        check_jq "video_id=$v2: exactly that video's job" \
            '(.jobs | length) == 1 and .total == 1 and .jobs[0].id == $b and .jobs[0].video_id == $v' \
            --argjson b "$j2" --argjson v "$v2"
        api GET "/v1/jobs?kind=index&limit=1000"
        check_jq "kind=index: non-empty, all three, all of kind index" \
            '(.jobs | length) == 3 and .total == 3 and all(.jobs[]; .kind == "index")'
        api GET "/v1/jobs?kind=nosuchkind"
        check_jq "kind=nosuchkind: none" '.jobs == [] and .total == 0 and .next_offset == null'

        # A running job: marked cancelled at once; its worker stops at its next window.
        if wait_job "$j1" 10 running; then
            ok "job $j1 is running"
            api POST "/v1/jobs/$j1/cancel"
            check_status "cancel running job $j1" 200
            check_jq "cancel running job: the job, state cancelled" '.id == $a and .state == "cancelled"' --argjson a "$j1"
            got=0
            for ((i = 0; i < 100; i++)); do
                grep -q "job $j1: cancelled" "${D_LOG[jobs]}" && { got=1; break; }
                sleep 0.1
            done
            check_eq "the daemon logs 'job $j1: cancelled' when its worker stops" 1 "$got"
            sleep 2
            api GET "/v1/jobs/$j1"
            check_jq "job $j1 stays cancelled (not done) after its worker stopped" '.state == "cancelled"'
            api GET "/v1/videos/$v1"
            check_jq "video $v1 shows status cancelled" '.status == "cancelled"'
        else
            not_ok "job $j1 is running" "state '$JOB_STATE' after 10 s"
        fi

        # A queued job: cancelled at once; a second cancel is a conflict.
        api GET "/v1/jobs/$j3"
        check_jq "job $j3 is still queued (job $j2 holds the one worker)" '.state == "queued"'
        api POST "/v1/jobs/$j3/cancel"
        check_status "cancel queued job $j3" 200
        check_jq "cancel queued job: the job, state cancelled" '.id == $c and .state == "cancelled"' --argjson c "$j3"
        api POST "/v1/jobs/$j3/cancel"
        check_error "cancel job $j3 again" 409
        api GET "/v1/videos/$v3"
        check_jq "video $v3 shows status cancelled" '.status == "cancelled"'
        api GET "/v1/jobs?state=cancelled"
        check_jq "state=cancelled: non-empty, exactly jobs $j3 and $j1" \
            '(.jobs | length) > 0 and all(.jobs[]; .state == "cancelled") and [.jobs[].id] == [$c, $a]' \
            --argjson a "$j1" --argjson c "$j3"

        # Reindex: a new job, with an id above every earlier one; again while queued is a conflict.
        api POST "/v1/videos/$v3/reindex"
        check_status "reindex cancelled video $v3" 202
        check_jq "reindex: {video, job}, a new job above every earlier id" \
            '.video.id == $v and .job.video_id == $v and .job.state == "queued" and .job.id > $c and .job.id > $b
             and .job.id > $a' --argjson v "$v3" --argjson a "$j1" --argjson b "$j2" --argjson c "$j3"
        jr=$(jqb '.job.id')
        api POST "/v1/videos/$v3/reindex"
        check_error "reindex video $v3 again while it is queued" 409
        api GET /v1/jobs
        check_jq "list: 4 jobs now, the reindex job first" '(.jobs | length) == 4 and .total == 4 and .jobs[0].id == $r' \
            --argjson r "${jr:-0}"

        # Unknown ids and bad parameters.
        api POST /v1/jobs/999999/cancel
        check_error "cancel unknown job" 404
        api POST /v1/videos/999999/reindex
        check_error "reindex unknown video" 404
        api GET "/v1/jobs?state=bogus"
        check_error "GET /v1/jobs?state=bogus" 400
        check_jq "the message names 'state'" '.error.message | contains("state")'
        for q in video_id=0 limit=0 limit=1001 offset=-1 limit=abc; do
            api GET "/v1/jobs?$q"
            check_error "GET /v1/jobs?$q" 400
        done

        # The queue goes on: the reindexed video gets indexed.
        wait_job "$j2" 30 done || true
        check_eq "job $j2 finishes done" done "$JOB_STATE"
        wait_job "${jr:-0}" 30 done || true
        check_eq "reindex job $jr finishes done" done "$JOB_STATE"
        api GET "/v1/videos/$v3"
        check_jq "video $v3 is ready after the reindex" '.status == "ready"'
        stop_daemon jobs || true
    else
        not_ok "daemon with --workers 1 --debug-job-delay-ms 2000 starts" "see log above"
    fi
fi

# =============================================================================
if [[ ${MD_E2E_SANITIZED:-0} == 1 ]]; then
    echo "# sanitizer reports in the daemon logs"
    bad=$(grep -l "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" "$TMP"/*.log 2>/dev/null || true)
    check_eq "no AddressSanitizer, UBSan or leak report in any daemon log" "" "$bad"
    [[ -z $bad ]] || grep -h -A12 "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" $bad | head -60
fi

# =============================================================================
e2e_check_json
echo "# runtime $((SECONDS - T0)) s"
if ((E2E_FAIL > 0)); then
    for log in "$TMP"/*.log; do
        [[ -f $log ]] || continue # no daemon was started (E2E_ONLY=config)
        echo "# --- tail of $(basename "$log")"
        tail -n 15 "$log" | sed 's/^/#   /'
    done
fi
E2E_DONE=1
e2e_summary
((E2E_FAIL == 0))
