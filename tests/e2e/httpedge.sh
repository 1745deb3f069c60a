#!/usr/bin/env bash
# tests/e2e/httpedge.sh - end-to-end checks of the HTTP edge against hostile input (issue 11):
#   e2e_httpedge DATA_DIR   multipart bodies with two file parts (upload and picture query) are
#                           refused with nothing left on disk; text that is not valid UTF-8 (names
#                           repaired with U+FFFD and cut on character boundaries; q/text refused
#                           naming the field; error messages repaired) so that every answer parses
#                           strictly; limits of the request head answered in the JSON error shape
#                           (414, 431), framing headers (Transfer-Encoding, Content-Length) checked;
#                           the cases libmicrohttpd answers by itself (server/http.c,
#                           md_server_start) keep their status codes.
#   e2e_metrics DATA_DIR CLIP
#                           /metrics: a latency histogram per route (cumulative buckets, +Inf equal
#                           to the count), indexing seconds per stage and decode failures by reason.
# Sourced by tests/e2e/run.sh (sections httpedge and metrics) with lib.sh's globals set (E2E_BIN,
# E2E_TMP, E2E_BODY, E2E_HDRS). Each function starts and stops its own daemon on 127.0.0.1.
# Raw requests go through one short Python program per request (raw_send), since curl cannot send
# most of them. Run alone:
#     bash tests/e2e/httpedge.sh ./momentd CLIP.mp4
# shellcheck shell=bash disable=SC2016  # jq filters and Python snippets are single-quoted on purpose

# raw_send DESC PYEXPR: sends the bytes of the Python expression PYEXPR to the selected daemon as
# they are, and reads until the daemon closes (10 s at most). Sets STATUS (000 when nothing came
# back) and RAW_ANSWERS (status lines in what came back); the head goes to $E2E_HDRS and the body
# to $E2E_BODY (everything after the first head), so check_status / check_error / check_jq work on
# it as on an api answer.
raw_send() {
    local out
    out=$(python3 - "$2" "${BASE##*:}" "$E2E_HDRS" "$E2E_BODY" <<'PY'
import socket, sys
req = eval(sys.argv[1])
s = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=10)
try:
    s.sendall(req)
except OSError:
    pass  # the daemon may answer and close before it has read everything
data = b""
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
except OSError:
    pass
s.close()
head, _, body = data.partition(b"\r\n\r\n")
open(sys.argv[3], "wb").write(head + b"\r\n")
open(sys.argv[4], "wb").write(body)
parts = head.split(b" ", 2)
status = parts[1].decode("latin-1") if data.startswith(b"HTTP/") and len(parts) > 1 else "000"
print(status, data.count(b"HTTP/1.1 "))
PY
    ) || out="000 0"
    read -r STATUS RAW_ANSWERS <<<"$out"
    # One answer's body is kept for the strict check; pipelined answers share the body file.
    if [[ $RAW_ANSWERS == 1 ]]; then e2e_keep_json "raw: $1"; fi
}

# check_py DESC PYEXPR: PYEXPR is true of the last answer parsed strictly (UTF-8 in strict mode,
# JSON without NaN), bound to j. jq cannot tell: it reads invalid UTF-8 as U+FFFD silently.
check_py() {
    local out
    if out=$(python3 - "$2" "$E2E_BODY" 2>&1 <<'PY'
import json, sys
def no_constant(c):
    raise ValueError("not JSON: " + c)
j = json.loads(open(sys.argv[2], "rb").read().decode("utf-8", "strict"), parse_constant=no_constant)
sys.exit(0 if eval(sys.argv[1]) else 1)
PY
    ); then
        ok "$1"
    else
        not_ok "$1" "python '$2' is not true of the answer parsed strictly ${out:+($out)}; body: $(body_excerpt)"
    fi
}

# edge_msg DESC REGEX: the last answer's error message matches REGEX (jq test, case-insensitive).
edge_msg() {
    check_jq "$1: the message says $2" '.error.message | test($re; "i")' --arg re "$2"
}

e2e_httpedge() {
    local dd=$1 m total_before
    m=$E2E_TMP/edge-media
    mkdir -p "$m"
    head -c 3000 /dev/urandom >"$m/a.bin"
    head -c 4000 /dev/urandom >"$m/b.bin"
    head -c 2000 /dev/urandom >"$m/c.bin"
    ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=96x64:rate=1 -frames:v 1 -y "$m/p1.jpg"
    ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=64x96:rate=1 -frames:v 1 -y "$m/p2.jpg"
    cat "$m/a.bin" "$m/b.bin" >"$m/ab.bin"

    if ! start_daemon edge "$dd"; then
        not_ok "daemon for the HTTP edge checks starts" "see log above"
        return 0
    fi
    ok "daemon for the HTTP edge checks starts"

    echo "# httpedge: multipart bodies with two file parts"
    total_before=$(video_total)
    api POST /v1/videos -F "file=@$m/a.bin" -F "file2=@$m/b.bin"
    check_error "upload with two file parts (file, file2)" 400
    edge_msg "upload with two file parts" "more than one file part.*a\\.bin.*b\\.bin.*one file per request"
    api POST /v1/videos -F "file=@$m/a.bin" -F "file=@$m/b.bin"
    check_error "upload with two file parts under the same field name" 400
    edge_msg "upload with two file parts under one name" "more than one file part"
    api POST /v1/videos -F "file=@$m/a.bin;filename=same.bin" -F "file=@$m/b.bin;filename=same.bin"
    check_error "upload with two file parts of the same field and file name" 400
    check_eq "no video was made of two file parts (total unchanged)" "$total_before" "$(video_total)"
    check "no stored file holds both parts' bytes (videos/<sha256 of a+b>)" \
        test ! -e "$dd/videos/$(sha256sum "$m/ab.bin" | cut -d' ' -f1)"
    check_eq "data/tmp holds no files after the refused uploads" "" "$(find "$dd/tmp" -type f)"
    api POST /v1/videos -F "file=@$m/c.bin" -F "note=just a field"
    check_status "one file part and a text field: accepted" 202
    check_jq "one file part: size and sha256 are that file's" '.video.size_bytes == 2000 and .video.sha256 == $s' \
        --arg s "$(sha256sum "$m/c.bin" | cut -d' ' -f1)"
    api POST /v1/search -F "file=@$m/p1.jpg" -F "file=@$m/p2.jpg"
    check_error "picture query with two file parts" 400
    edge_msg "picture query with two file parts" "more than one file part.*p1\\.jpg.*p2\\.jpg.*one picture per request"
    check_eq "data/tmp holds no query picture afterwards" "" "$(find "$dd/tmp" -type f)"
    api POST /v1/search -F "file=@$m/p1.jpg" -F k=1
    check_status "picture query with one file part still answers 200" 200

    echo "# httpedge: text that is not valid UTF-8"
    api POST "/v1/videos?name=%FF%FEabc" --data-binary "@$m/a.bin"
    check_status "upload named %FF%FEabc is accepted" 202
    check_py "the name is stored repaired: U+FFFD U+FFFD abc" 'j["video"]["name"] == "\ufffd\ufffdabc"'
    # 254 ASCII bytes then 2-byte characters: byte 255 would be the first half of one.
    long=$(printf 'a%.0s' $(seq 254))$(printf '%%C3%%A9%.0s' $(seq 23))
    api POST "/v1/videos?name=$long" --data-binary "@$m/b.bin"
    check_status "upload with a 300-byte name is accepted" 202
    check_py "a 300-byte name is cut to 254 bytes, before the character that does not fit whole" \
        'j["video"]["name"] == "a" * 254'
    api POST "/v1/videos?name=a%01b%C2%85c%7Fd%E2%80%8Fe" --data-binary "@$m/ab.bin"
    check_py "control characters (C0, C1, DEL) are dropped from the name, other characters kept" \
        'j["video"]["name"] == "abcd\u200fe"'
    api POST /v1/videos -F "file=@$m/c.bin;filename=$(printf 'x\xff\xc3.bin')"
    check_status "multipart upload with a file name that is not UTF-8" 200
    check_py "its name is repaired too (duplicate bytes: the name stays the first one's)" \
        'j["video"]["name"] == "c.bin" and j["duplicate"] is True'
    head -c 1000 /dev/urandom >"$m/d.bin"
    api POST /v1/videos -F "file=@$m/d.bin;filename=$(printf 'x\xff\xc3.bin')"
    check_py "a multipart file name x\\xff\\xc3.bin is stored as x U+FFFD U+FFFD .bin" \
        'j["video"]["name"] == "x\ufffd\ufffd.bin"'
    api GET "/v1/videos?limit=1000"
    check_py "GET /v1/videos parses strictly with these names in it (5 videos)" \
        'len(j["videos"]) == 5 and any(v["name"] == "\ufffd\ufffdabc" for v in j["videos"])'

    api GET "/v1/search?q=%FF%FE"
    check_error "search with q=%FF%FE" 400
    edge_msg "search with q=%FF%FE" "'q'.*UTF-8"
    api GET "/v1/search?text=caf%C3"
    check_error "search with text=caf%C3 (cut character)" 400
    edge_msg "search with text=caf%C3" "'text'.*UTF-8"
    api POST /v1/search -H 'Content-Type: application/json' --data-binary "$(printf '{"q": "\xff dog"}')"
    check_error "search with a JSON body whose q is not UTF-8" 400
    edge_msg "JSON q not UTF-8" "'q'.*UTF-8"
    api POST /v1/search -F "file=@$m/p1.jpg" -F "q=$(printf '\xed\xa0\x80')"
    check_error "picture query with a multipart field q that is not UTF-8 (a surrogate)" 400
    edge_msg "multipart q not UTF-8" "'q'.*UTF-8"
    api GET "/v1/videos/1/ground?q=%C0%AF"
    check_error "grounding with q=%C0%AF (overlong)" 400
    edge_msg "grounding q not UTF-8" "'q'.*UTF-8"
    api POST /v1/index -H 'Content-Type: application/json' --data-binary "$(printf '{"paths": ["/ok", "/x\xfe"]}')"
    check_error "POST /v1/index with a path that is not UTF-8" 400
    edge_msg "index path not UTF-8" "'paths\\[1\\]'.*UTF-8"
    api POST /v1/index -H 'Content-Type: application/json' --data-binary "$(printf '{"p\xffaths": []}')"
    check_error "a JSON member name that is not UTF-8" 400
    edge_msg "JSON member name not UTF-8" "member name.*UTF-8"
    api GET "/v1/videos?limit=%FF"
    check_error "limit=%FF (the message quotes the value)" 400
    check_py "that error message is valid UTF-8 (the value repaired)" '"\ufffd" in j["error"]["message"]'
    api GET "/v1/search?q=caf%C3%A9+%F0%9F%90%B6"
    check_status "valid UTF-8 in q answers 200" 200
    check_py "q comes back as it was sent" 'j["query"]["text"] == "caf\u00e9 \U0001f436"'

    echo "# httpedge: the request head (raw requests)"
    local host='b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"'
    raw_send "a 30 KB URI" 'b"GET /v1/health?x=" + b"a" * 30000 + '"$host"
    check_status "a 30 KB request target (under the 32 KiB limit) answers" 200
    raw_send "a 40 KB URI" 'b"GET /v1/health?x=" + b"a" * 40000 + '"$host"
    check_error "a 40 KB request target" 414
    edge_msg "40 KB request target" "request target too long.*32768"
    raw_send "a 200 KB URI" 'b"GET /v1/videos?x=" + b"a" * 200000 + '"$host"
    check_error "a 200 KB request target" 414
    raw_send "3000 query arguments" 'b"GET /v1/health?" + b"&".join(b"a%d=1" % i for i in range(3000)) + '"$host"
    check_error "3000 query arguments" 414
    edge_msg "3000 query arguments" "3000 query arguments"
    raw_send "a 30 KB header" 'b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 30000 + b"\r\nConnection: close\r\n\r\n"'
    check_status "a 30 KB header (under the 32 KiB limit) answers" 200
    raw_send "a 40 KB header" 'b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000 + b"\r\nConnection: close\r\n\r\n"'
    check_error "a 40 KB header" 431
    # (a Cookie header costs twice its size in libmicrohttpd's pool, which copies it to parse it)
    raw_send "a 100 KB cookie" 'b"GET /v1/videos HTTP/1.1\r\nHost: x\r\nCookie: c=" + b"b" * 100000 + b"\r\nConnection: close\r\n\r\n"'
    check_error "a 100 KB Cookie header" 431
    raw_send "300 header fields" 'b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"Connection: close\r\n\r\n"'
    check_error "300 header fields" 431
    edge_msg "300 header fields" "fields.*200 fields"
    raw_send "two pipelined requests" 'b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"'
    check_eq "two pipelined requests on one connection get two answers (first: $STATUS)" "200 2" "$STATUS $RAW_ANSWERS"

    echo "# httpedge: framing headers"
    raw_send "Transfer-Encoding: gzip" 'b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabc"'
    check_error "Transfer-Encoding: gzip" 501
    edge_msg "Transfer-Encoding: gzip" "Transfer-Encoding 'gzip' is not supported"
    raw_send "chunked and Content-Length" 'b"POST /v1/index HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 15\r\nConnection: close\r\n\r\nf\r\n{\"paths\":[\"/\"]}\r\n0\r\n\r\n"'
    check_error "Transfer-Encoding: chunked together with Content-Length" 400
    edge_msg "chunked and Content-Length" "Transfer-Encoding and Content-Length"
    raw_send "two Content-Lengths" 'b"POST /v1/index HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nContent-Length: 7\r\nConnection: close\r\n\r\nabcde"'
    check_error "two Content-Length headers (5 and 7)" 400
    edge_msg "two Content-Length headers" "more than one Content-Length"
    raw_send "a 40 KB chunk extension" 'b"POST /v1/index HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nf;" + b"e" * 40000 + b"\r\n{\"paths\":[\"/\"]}\r\n0\r\n\r\n"'
    check_error "a chunk with a 40 KB extension reaches the handler (403: no allowed_roots), not a 500" 403
    raw_send "chunked upload" 'b"POST /v1/videos?name=chunked.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nabcde\r\n3\r\nfgh\r\n0\r\n\r\n"'
    check_status "a well-formed chunked upload is accepted" 202
    check_jq "the chunked upload holds its 8 bytes" '.video.size_bytes == 8'

    echo "# httpedge: what libmicrohttpd answers by itself (HTML; documented in md_server_start)"
    raw_send "a 1 MiB URI" 'b"GET /v1/health?x=" + b"a" * (1 << 20) + '"$host"
    check_status "a 1 MiB request target (beyond the connection pool): libmicrohttpd's 414" 414
    raw_send "Content-Length: abc" 'b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\nabc"'
    check_status "Content-Length: abc: libmicrohttpd's 400" 400
    raw_send "Content-Length beyond 64 bits" 'b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\nConnection: close\r\n\r\nabc"'
    check_status "a Content-Length beyond 64 bits: libmicrohttpd's 413" 413
    raw_send "bad chunk size" 'b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"'
    check_status "a chunk size that is not hexadecimal: libmicrohttpd's 400" 400
    raw_send "chunk size beyond 64 bits" 'b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n"'
    check_status "a chunk size beyond 64 bits: libmicrohttpd's 413" 413
    raw_send "HTTP/2.0" 'b"GET /v1/health HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n"'
    check_status "request line with HTTP/2.0: libmicrohttpd's 505" 505
    check_eq "data/tmp holds no files after the raw requests" "" "$(find "$dd/tmp" -type f)"
    api GET /v1/health
    check_status "the daemon is still healthy after the hostile requests" 200
    stop_daemon edge || true
    check_eq "the edge daemon exits 0 on SIGTERM" 0 "$EXIT_RC"
}

e2e_metrics() {
    local dd=$1 clip=$2 j1 j2 i
    if ! start_daemon metrics "$dd"; then
        not_ok "daemon for the metrics checks starts" "see log above"
        return 0
    fi
    ok "daemon for the metrics checks starts"
    api POST "/v1/videos?name=clip.mp4" --data-binary "@$clip"
    j1=$(jqb '.job.id')
    head -c 5000 /dev/urandom >"$E2E_TMP/metrics-noise.bin"
    api POST "/v1/videos?name=noise.bin" --data-binary "@$E2E_TMP/metrics-noise.bin"
    j2=$(jqb '.job.id')
    wait_job "$j1" 60 done || true
    check_eq "the clip's job ends done" done "$JOB_STATE"
    wait_job "$j2" 30 failed || true
    check_eq "the random bytes' job ends failed" failed "$JOB_STATE"
    for i in 1 2 3 4 5; do api GET "/v1/search?q=test+$i"; done
    check_status "five searches answered" 200
    api GET /metrics
    check_status "GET /metrics" 200
    check_eq "metrics are text/plain" "text/plain; version=0.0.4; charset=utf-8" "$(resp_header Content-Type)"
    local out
    if out=$(python3 - "$E2E_BODY" 2>&1 <<'PY'
import re, sys, math
text = open(sys.argv[1], encoding="utf-8").read()
types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
def fail(msg):
    print(msg); sys.exit(1)
for fam, t in (("momentd_http_request_duration_seconds", "histogram"),
               ("momentd_index_stage_seconds_total", "counter"), ("momentd_decode_failures_total", "counter")):
    if types.get(fam) != t:
        fail("# TYPE %s %s missing (got %r)" % (fam, t, types.get(fam)))
sample = re.compile(r'^([a-z_]+)\{((?:[^"}]|"[^"]*")*)\} (\S+)$')  # label values hold "{id}"
hist = {}
stages, reasons = {}, {}
for line in text.splitlines():
    m = sample.match(line)
    if not m:
        continue
    name, labels, value = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))), float(m.group(3))
    if not math.isfinite(value) or value < 0:
        fail("bad value: " + line)
    if name.startswith("momentd_http_request_duration_seconds_"):
        key = (labels.get("method"), labels.get("route"))
        h = hist.setdefault(key, {"b": []})
        if name.endswith("_bucket"):
            h["b"].append((labels["le"], value))
        else:
            h[name.rsplit("_", 1)[1]] = value
    elif name == "momentd_index_stage_seconds_total":
        stages[labels["stage"]] = value
    elif name == "momentd_decode_failures_total":
        reasons[labels["reason"]] = value
if len(hist) < 13:
    fail("histograms for %d routes, expected every route (13+)" % len(hist))
for key, h in hist.items():
    b = h["b"]
    if not b or b[-1][0] != "+Inf":
        fail("%s: no +Inf bucket last" % (key,))
    les = [float(le) for le, _ in b[:-1]]
    if les != sorted(les) or len(set(les)) != len(les):
        fail("%s: le not increasing: %s" % (key, les))
    counts = [v for _, v in b]
    if any(y < x for x, y in zip(counts, counts[1:])):
        fail("%s: buckets not cumulative: %s" % (key, counts))
    if "count" not in h or "sum" not in h or b[-1][1] != h["count"]:
        fail("%s: +Inf %s != _count %s (or _sum missing)" % (key, b[-1][1], h.get("count")))
if hist.get(("GET", "/v1/search"), {}).get("count") != 5:
    fail("GET /v1/search histogram count %s, expected the 5 searches" % hist.get(("GET", "/v1/search"), {}).get("count"))
if hist.get(("GET", "/v1/health"), {}).get("count", 0) < 1:
    fail("GET /v1/health histogram is empty (start_daemon polled it)")
want_st = ["probe", "decode", "embed", "temporal", "store"]
want_re = ["not_media", "truncated", "unsupported", "refused", "missing", "limit", "storage", "other"]
if sorted(stages) != sorted(want_st):
    fail("stages %s, expected %s" % (sorted(stages), want_st))
if sorted(reasons) != sorted(want_re):
    fail("reasons %s, expected %s" % (sorted(reasons), want_re))
print("%d route histograms; stage seconds %s; failures %s" % (len(hist), stages, {k: v for k, v in reasons.items() if v}))
PY
    ); then
        ok "metrics: a histogram per route (cumulative, +Inf = count, search count 5), every stage and reason: $out"
    else
        not_ok "metrics: a histogram per route, every stage and failure reason" "$out"
    fi
    check "metrics: some indexing time is counted after a clip was indexed" \
        awk '/^momentd_index_stage_seconds_total\{/ { s += $2 } END { exit !(s > 0) }' "$E2E_BODY"
    check "metrics: the random bytes count as a not_media failure" \
        grep -q '^momentd_decode_failures_total{reason="not_media"} [1-9]' "$E2E_BODY"
    stop_daemon metrics || true
}

# Run alone: the set-up run.sh would do, then the checks.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
    # shellcheck source=tests/e2e/lib.sh
    source "$HERE/lib.sh"
    if [[ $# -lt 2 || ! -x $1 || ! -f $2 ]]; then
        echo "usage: bash tests/e2e/httpedge.sh ./momentd CLIP.mp4" >&2
        exit 2
    fi
    E2E_BIN=$(cd "$(dirname "$1")" && pwd -P)/$(basename "$1")
    E2E_TMP=$(cd "$(mktemp -d "${TMPDIR:-/tmp}/momentd-httpedge.XXXXXX")" && pwd -P)
    E2E_BODY=$E2E_TMP/body
    E2E_HDRS=$E2E_TMP/headers
    trap 'stop_all_daemons; rm -rf "$E2E_TMP"' EXIT
    video_total() {
        api GET "/v1/videos?limit=1"
        jqb '.total'
    }
    e2e_httpedge "$E2E_TMP/data"
    e2e_metrics "$E2E_TMP/data-metrics" "$2"
    e2e_check_json
    e2e_summary
    ((E2E_FAIL == 0))
fi
