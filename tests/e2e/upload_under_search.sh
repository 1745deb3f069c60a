#!/usr/bin/env bash
# tests/e2e/upload_under_search.sh - measures how long an upload takes alone and while 8 clients
# hammer GET /v1/search (issue 11, item 6). Not a pass/fail test: it prints both times and their
# ratio. Everything talks to one daemon on 127.0.0.1 (port 0) with a temporary data directory;
# every loop is bounded (the search clients stop after SEARCHES requests each or when the
# timed upload is done, whichever comes first: they are killed by PID).
#
#   bash tests/e2e/upload_under_search.sh ./momentd [MB] [extra serve flags...]
#
# SEARCHES (default 2000) bounds each client's requests, CLIENTS (default 8) their number.
# MB (default 50) is the size of the uploaded file (random bytes: the upload path is what is
# timed, not indexing; the job fails quickly as "not a video" afterwards). Two real clips are
# indexed first so that every search scores segments, not just encodes text.
# Prints lines "upload alone: S s", "upload under search load: S s (N searches answered)" and
# "ratio: R".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
if [[ $# -lt 1 || ! -x $1 ]]; then
    echo "usage: bash tests/e2e/upload_under_search.sh ./momentd [MB] [serve flags...]" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$1")" && pwd -P)/$(basename "$1")
MB=${2:-50}
shift $(($# >= 2 ? 2 : 1))
SEARCHES=${SEARCHES:-2000} # per client, an upper bound only
CLIENTS=${CLIENTS:-8}
MEDIA=${MD_SHARED_MEDIA:-$(dirname "$REPO")/shared/media}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/momentd-uus.XXXXXX")
PID=""
CPIDS=()
cleanup() {
    local p
    for p in "${CPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

"$BIN" serve --port 0 --bind 127.0.0.1 --data-dir "$TMP/data" "$@" >"$TMP/d.log" 2>&1 &
PID=$!
PORT=""
for ((i = 0; i < 100; i++)); do
    PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$TMP/d.log" 2>/dev/null | head -n1)
    [[ -n $PORT ]] && break
    sleep 0.1
done
[[ -n $PORT ]] || { echo "daemon did not start:"; tail "$TMP/d.log"; exit 1; }
B=http://127.0.0.1:$PORT
for ((i = 0; i < 100; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$B/v1/health") == 200 ]] && break
    sleep 0.1
done

# Two real clips, indexed, so that searches have segments to score.
for f in "$MEDIA/parakeet-ladder.mp4" "$MEDIA/lion-monkey.mp4"; do
    [[ -f $f ]] && curl -s -o /dev/null --data-binary "@$f" "$B/v1/videos?name=$(basename "$f")"
done
for ((i = 0; i < 600; i++)); do
    q=$(curl -s "$B/metrics" | sed -n 's/^momentd_jobs{state="\(queued\|running\)"} //p' | paste -sd+ | bc)
    [[ ${q:-0} == 0 ]] && break
    sleep 0.1
done
segs=$(curl -s "$B/v1/health" | jq -r '.model.segments // 0')

head -c $((MB << 20)) /dev/urandom >"$TMP/a.bin"
head -c $((MB << 20)) /dev/urandom >"$TMP/b.bin"

# Searches answered so far, from the daemon's own counter.
searches_done() {
    curl -s "$B/metrics" | awk '/^momentd_http_requests_total\{method="GET",route="\/v1\/search"/ { s += $2 } END { print s + 0 }'
}

# upload FILE: prints the seconds curl took (the daemon answers once the bytes are stored).
upload() {
    curl -s -o "$TMP/up.json" -w '%{time_total}' --max-time 300 --data-binary "@$1" "$B/v1/videos?name=$(basename "$1")"
}

alone=$(upload "$TMP/a.bin")

# Each client is one curl fetching SEARCHES URLs in turn over one kept-alive connection (URL
# globbing), as a load tool would: little client CPU, and each connection stays on one of the
# daemon's HTTP threads. They are stopped (by PID) once the timed upload is done.
for ((c = 0; c < CLIENTS; c++)); do
    curl -s -o /dev/null --max-time 600 "$B/v1/search?q=a+dog+jumps+into+a+pool&client=$c&n=[1-$SEARCHES]" \
        >/dev/null 2>&1 &
    CPIDS+=($!)
done
sleep 1 # the clients are running
t0=$(searches_done)
loaded=$(upload "$TMP/b.bin")
t1=$(searches_done)
for p in "${CPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${CPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
CPIDS=()
total=$((t1 - t0))

echo "segments indexed: $segs; file: $MB MiB; search clients: $CLIENTS"
echo "upload alone: $alone s"
echo "upload under search load: $loaded s ($total searches answered meanwhile)"
echo "ratio: $(echo "scale=1; $loaded / $alone" | bc)"
