#!/usr/bin/env bash
# tests/e2e/limits.sh - end-to-end checks of the request and setting limits (engine/momentd.h,
# "Limits"): each bound is accepted at its edge and refused one step past it with a 400 (or exit
# status 2 for a setting) whose message names the field and its range; JSON numbers must be JSON
# numbers ({"k": "5"} is a 400), whole where a count is meant ({"k": 5.5} is a 400).
#
# Sourced by tests/e2e/run.sh, which then calls
#     e2e_limits DATA_DIR
# with lib.sh's globals set (E2E_BIN, E2E_TMP, E2E_BODY, E2E_HDRS); it starts and stops its own
# daemon (the demo model, no videos needed). Run alone, it sets those up itself:
#     bash tests/e2e/limits.sh ./momentd
# The numbers below are the constants of momentd.h; when one changes, change it here too.
# shellcheck shell=bash disable=SC2016  # jq filters are single-quoted on purpose

# limits_config_error DESC WORD ARGS...: momentd ARGS exits 2 and stderr mentions WORD.
limits_config_error() {
    local desc=$1 word=$2 rc=0
    shift 2
    timeout 10 "$E2E_BIN" "$@" --data-dir "$E2E_TMP/limits-cfg" >"$E2E_TMP/limits-cfg.out" \
        2>"$E2E_TMP/limits-cfg.err" || rc=$?
    check_eq "$desc: exit status 2" 2 "$rc"
    if grep -qF -- "$word" "$E2E_TMP/limits-cfg.err"; then
        ok "$desc: stderr mentions '$word'"
    else
        not_ok "$desc: stderr mentions '$word'" "stderr: $(head -c 300 "$E2E_TMP/limits-cfg.err")"
    fi
}

# limits_bad DESC REGEX: the last answer is the 400 error shape and its message matches REGEX.
limits_bad() {
    check_error "$1" 400
    check_jq "$1: the message says $2" '.error.message | test($re)' --arg re "$2"
}

# limits_json BODY: POST /v1/search with a JSON body.
limits_json() {
    api POST /v1/search -H 'Content-Type: application/json' -d "$1"
}

e2e_limits() {
    local data_dir=$1 long ids
    echo "# limits: settings"
    limits_config_error "--sample-fps 31" "'sample_fps'" --sample-fps 31
    limits_config_error "--sample-fps 31 states the range" "[0.01, 30]" --sample-fps 31
    limits_config_error "--sample-fps 1e400" "'sample_fps'" --sample-fps 1e400
    limits_config_error "--sample-fps nan" "'sample_fps'" --sample-fps nan
    limits_config_error "--window-frames 1025" "'window_frames'" --window-frames 1025
    limits_config_error "--window-frames 30 (not a multiple of 4)" "multiple of segment_frames" --window-frames 30

    echo "# limits: search and grounding requests"
    if ! start_daemon limits "$data_dir" --sample-fps 0.01; then
        not_ok "daemon for the limit checks starts (at the lowest sample_fps)" "see log above"
        return 0
    fi
    ok "daemon for the limit checks starts (at the lowest sample_fps)"

    api GET "/v1/search?q=x&k=100"
    check_status "k=100 (the largest) answers 200" 200
    api GET "/v1/search?q=x&k=1"
    check_status "k=1 (the smallest) answers 200" 200
    api GET "/v1/search?q=x&k=101"
    limits_bad "k=101" "'k'.*1\\.\\.100"
    api GET "/v1/search?q=x&k=0"
    limits_bad "k=0" "'k'.*1\\.\\.100"
    api GET "/v1/search?q=x&k=5.5"
    limits_bad "k=5.5 in the query string" "'k'.*whole"
    api GET "/v1/search?q=x&k=five"
    limits_bad "k=five in the query string" "'k'"

    limits_json '{"q": "x", "k": 100}'
    check_status "JSON k 100 answers 200" 200
    check_jq "JSON k 100: an answer, not an error" 'has("moments")'
    limits_json '{"q": "x", "k": 101}'
    limits_bad "JSON k 101" "'k'.*1\\.\\.100"
    limits_json '{"q": "x", "k": "5"}'
    limits_bad "JSON k as a string" "'k' must be a number"
    limits_json '{"q": "x", "k": 5.5}'
    limits_bad "JSON k 5.5" "'k'.*whole"
    limits_json '{"q": "x", "k": true}'
    limits_bad "JSON k true" "'k' must be a number"
    limits_json '{"q": "x", "k": 1e400}'
    limits_bad "JSON k 1e400" "'k'"
    limits_json '{"q": "x", "k": -3000000000}'
    limits_bad "JSON k beyond int" "'k'.*1\\.\\.100"
    limits_json '{"q": "x", "k": null}'
    check_status "JSON k null is the default" 200

    limits_json '{"q": "x", "offset": 10000}'
    check_status "offset 10000 (the deepest) answers 200" 200
    limits_json '{"q": "x", "offset": 10001}'
    limits_bad "offset 10001" "'offset'.*0\\.\\.10000"
    limits_json '{"q": "x", "offset": -1}'
    limits_bad "offset -1" "'offset'"
    limits_json '{"q": "x", "min_score": 1}'
    check_status "min_score 1 answers 200" 200
    limits_json '{"q": "x", "min_score": 1.5}'
    limits_bad "min_score 1.5" "'min_score'"
    limits_json '{"q": "x", "min_score": "0.5"}'
    limits_bad "min_score as a string" "'min_score' must be a number"
    limits_json '{"video_id": 1, "t": -1}'
    limits_bad "t -1" "'t'"

    long=$(head -c 1000 /dev/zero | tr '\0' 'a')
    api GET "/v1/search?q=$long"
    check_status "a query of 1000 bytes (the limit) answers 200" 200
    api GET "/v1/search?q=${long}a"
    limits_bad "a query of 1001 bytes" "1001 bytes.*1000"

    ids=$(seq -s, 1 1000)
    limits_json "{\"q\": \"x\", \"video_ids\": [$ids]}"
    check_status "a filter of 1000 video ids (the limit) answers 200" 200
    limits_json "{\"q\": \"x\", \"video_ids\": [$ids,1001]}"
    limits_bad "a filter of 1001 video ids (JSON)" "'video_ids'.*1000"
    api GET "/v1/search?q=x&video_ids=$ids,1001"
    limits_bad "a filter of 1001 video ids (query string)" "'video_ids'.*1000"

    api GET "/v1/videos/1/ground?q=x&top_n=101"
    limits_bad "top_n 101" "'top_n'.*1\\.\\.100"
    api GET "/v1/videos/1/ground?q=x&top_n=0"
    limits_bad "top_n 0" "'top_n'.*1\\.\\.100"
    api POST /v1/videos/1/ground -H 'Content-Type: application/json' -d '{"q": "x", "top_n": "3"}'
    limits_bad "JSON top_n as a string" "'top_n' must be a number"
    api POST /v1/videos/1/ground -H 'Content-Type: application/json' -d '{"q": "x", "curve": "1"}'
    limits_bad "JSON curve as a string" "'curve'"
    api POST /v1/videos/1/ground -H 'Content-Type: application/json' -d '{"q": "x", "top_n": 100, "curve": true}'
    check_error "top_n 100 passes the check (then: no such video)" 404
    stop_daemon limits || true
}

# Run alone: the set-up run.sh would do, then the checks.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
    # shellcheck source=tests/e2e/lib.sh
    source "$HERE/lib.sh"
    if [[ $# -lt 1 || ! -x $1 ]]; then
        echo "usage: bash tests/e2e/limits.sh ./momentd" >&2
        exit 2
    fi
    E2E_BIN=$(cd "$(dirname "$1")" && pwd -P)/$(basename "$1")
    E2E_TMP=$(cd "$(mktemp -d "${TMPDIR:-/tmp}/momentd-limits.XXXXXX")" && pwd -P)
    E2E_BODY=$E2E_TMP/body
    E2E_HDRS=$E2E_TMP/headers
    trap 'stop_all_daemons; rm -rf "$E2E_TMP"' EXIT
    e2e_limits "$E2E_TMP/data"
    e2e_summary
    ((E2E_FAIL == 0))
fi
