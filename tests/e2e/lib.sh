# tests/e2e/lib.sh - helpers for the end-to-end tests (sourced by tests/e2e/run.sh):
# pass/fail counters and check functions, starting/stopping real momentd daemons
# on 127.0.0.1 port 0 (the port is read from the log), and `api`, a curl wrapper
# that leaves the status code in $STATUS and the body in $E2E_BODY (and keeps every JSON
# body for e2e_check_json, which parses them all strictly at the end).
#
# Every check prints "ok - DESCRIPTION" or "not ok - DESCRIPTION (DETAILS)", a
# case that cannot run here "skip - DESCRIPTION (REASON)"; e2e_summary prints
# "e2e: N passed, M failed" and ", K skipped" when K > 0. Every wait is bounded.
# e2e_select and section pick the sections E2E_ONLY names (see run.sh's header).
#
# Needs E2E_TMP (a temporary directory) and E2E_BIN (the momentd binary) set
# before start_daemon/api are used.
# shellcheck shell=bash disable=SC2034  # globals (D_LOG, EXIT_RC, ...) are read by run.sh

E2E_PASS=0
E2E_FAIL=0
E2E_SKIP=0
declare -A E2E_RUN=() # sections to run (e2e_select)
E2E_PIDS=()   # every daemon ever started, for the cleanup trap
E2E_NSTART=0
declare -A D_PID=() D_PORT=() D_LOG=()
BASE=""
STATUS=""
CURL_RC=0

# ---- counters and checks ------------------------------------------------

ok() {
    E2E_PASS=$((E2E_PASS + 1))
    echo "ok - $1"
}

not_ok() {
    E2E_FAIL=$((E2E_FAIL + 1))
    echo "not ok - $1 (${2:-failed})"
}

# skip DESC REASON: a case or section that did not run; counted, never as passed.
skip() {
    E2E_SKIP=$((E2E_SKIP + 1))
    echo "skip - $1 (${2:-skipped})"
}

# Short one-line excerpt of the last response body, for failure details.
body_excerpt() {
    if [[ -s ${E2E_BODY:-} ]]; then
        head -c 300 "$E2E_BODY" | tr '\n' ' '
    else
        echo "<empty body>"
    fi
}

# check DESC COMMAND...: passes when COMMAND succeeds.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc" "command failed: $*"; fi
}

# check_eq DESC EXPECTED ACTUAL
check_eq() {
    if [[ "$2" == "$3" ]]; then ok "$1"; else not_ok "$1" "expected '$2', got '$3'"; fi
}

# check_status DESC EXPECTED: compares $STATUS (from the last api call).
check_status() {
    if [[ "$STATUS" == "$2" ]]; then
        ok "$1"
    else
        not_ok "$1" "expected HTTP $2, got $STATUS (curl rc $CURL_RC); body: $(body_excerpt)"
    fi
}

# check_jq DESC FILTER [jq args...]: FILTER must be true for the last response body.
check_jq() {
    local desc=$1 filter=$2
    shift 2
    if jq -e "$@" "$filter" "$E2E_BODY" >/dev/null 2>&1; then
        ok "$desc"
    else
        not_ok "$desc" "jq '$filter' is not true; body: $(body_excerpt)"
    fi
}

# check_error DESC STATUS: the last response has STATUS and the body is exactly
# {"error":{"code":"...","message":"..."}} with both strings non-empty.
check_error() {
    check_status "$1: HTTP $2" "$2"
    check_jq "$1: body is {\"error\":{\"code\",\"message\"}}" \
        '(keys == ["error"]) and ((.error | keys) == ["code", "message"]) and
         (.error.code | type == "string" and length > 0) and
         (.error.message | type == "string" and length > 0)'
}

# jqb FILTER [jq args...]: prints FILTER applied to the last response body ("" on error).
jqb() {
    local filter=$1
    shift
    jq -r "$@" "$filter" "$E2E_BODY" 2>/dev/null || true
}

# Header value from the last response (case-insensitive name), without CR.
resp_header() {
    sed -n "s/^$1:[[:space:]]*//Ip" "$E2E_HDRS" | tr -d '\r' | head -n1
}

e2e_summary() {
    if ((E2E_SKIP > 0)); then
        echo "e2e: $E2E_PASS passed, $E2E_FAIL failed, $E2E_SKIP skipped"
    else
        echo "e2e: $E2E_PASS passed, $E2E_FAIL failed"
    fi
}

# ---- sections -----------------------------------------------------------

# e2e_select: fills E2E_RUN from E2E_ONLY (comma-separated section names; unset
# or empty: every section of E2E_SECTIONS), then adds what each chosen section
# needs (E2E_NEEDS[name] = an earlier section), transitively. An unknown name
# prints the valid ones and exits 2.
e2e_select() {
    local name names=() added=() changed=1 n known
    if [[ -z ${E2E_ONLY:-} ]]; then
        for name in "${E2E_SECTIONS[@]}"; do E2E_RUN[$name]=1; done
        return 0
    fi
    IFS=, read -ra names <<<"$E2E_ONLY"
    for name in "${names[@]}"; do
        name=${name//[[:space:]]/}
        [[ -n $name ]] || continue
        known=0
        for n in "${E2E_SECTIONS[@]}"; do [[ $n == "$name" ]] && known=1; done
        if ((known == 0)); then
            echo "E2E_ONLY: unknown section '$name'; valid sections: ${E2E_SECTIONS[*]}" >&2
            exit 2
        fi
        E2E_RUN[$name]=1
    done
    if ((${#E2E_RUN[@]} == 0)); then
        echo "E2E_ONLY='$E2E_ONLY' names no section; valid sections: ${E2E_SECTIONS[*]}" >&2
        exit 2
    fi
    while ((changed)); do
        changed=0
        for name in "${!E2E_RUN[@]}"; do
            n=${E2E_NEEDS[$name]:-}
            if [[ -n $n && -z ${E2E_RUN[$n]:-} ]]; then
                E2E_RUN[$n]=1
                added+=("$n")
                changed=1
            fi
        done
    done
    echo "# E2E_ONLY=$E2E_ONLY${added[*]:+ (with ${added[*]}: needed by them)}"
}

# section NAME TITLE: true when NAME is to run (prints "# TITLE"); otherwise
# records the section as skipped and is false.
section() {
    if [[ -n ${E2E_RUN[$1]:-} ]]; then
        echo "# $2"
        return 0
    fi
    skip "section $1: $2" "not in E2E_ONLY"
    return 1
}

# ---- HTTP ---------------------------------------------------------------

# api METHOD PATH [curl args...]: request $BASE$PATH. Sets STATUS (000 when no
# answer), CURL_RC; the body is in $E2E_BODY, the headers in $E2E_HDRS. A JSON body
# is kept for e2e_check_json.
api() {
    local method=$1 path=$2
    shift 2
    : >"$E2E_BODY"
    : >"$E2E_HDRS"
    CURL_RC=0
    STATUS=$(curl -sS -o "$E2E_BODY" -D "$E2E_HDRS" -w '%{http_code}' --max-time 30 \
        -X "$method" "$@" "$BASE$path" 2>"$E2E_TMP/curl.err") || CURL_RC=$?
    [[ -n $STATUS ]] || STATUS=000
    e2e_keep_json "$method $path"
}

# ---- every JSON answer parses strictly ------------------------------------

# jq and curl take invalid UTF-8 without a word (jq replaces it), so a strict client's view is
# checked apart: each JSON body the suite receives is kept (e2e_keep_json, from api) and all are
# parsed in one Python run at the end (e2e_check_json), as UTF-8 in strict mode and as strict
# JSON (no NaN or Infinity).
E2E_JSON_N=0
E2E_JSON_DIR=""

# e2e_keep_json WHAT: keeps $E2E_BODY when $E2E_HDRS says it is application/json (the last
# Content-Type, after any 100 Continue). WHAT names the request in a failure.
e2e_keep_json() {
    local line ct=""
    [[ -s $E2E_BODY ]] || return 0
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        if [[ ${line,,} == content-type:* ]]; then ct=${line#*:}; fi
    done <"$E2E_HDRS"
    [[ ${ct,,} == *application/json* ]] || return 0
    if [[ -z $E2E_JSON_DIR ]]; then
        E2E_JSON_DIR=$E2E_TMP/json-answers
        mkdir -p "$E2E_JSON_DIR"
    fi
    E2E_JSON_N=$((E2E_JSON_N + 1))
    cp "$E2E_BODY" "$E2E_JSON_DIR/$E2E_JSON_N.json"
    printf '%s\t%s\t%s\n' "$E2E_JSON_N" "$STATUS" "${1//$'\t'/ }" >>"$E2E_JSON_DIR/index"
}

# e2e_check_json: one check over every kept JSON answer; fails naming the first that a strict
# parser refuses. Skipped when no JSON answer was received (E2E_ONLY=config).
e2e_check_json() {
    local desc="every JSON answer of the suite parses as strict UTF-8 JSON" out
    if ((E2E_JSON_N == 0)); then
        skip "$desc" "no JSON answer was received"
        return 0
    fi
    if out=$(python3 - "$E2E_JSON_DIR" 2>&1 <<'PY'
import json, sys, os
d = sys.argv[1]
n = 0
def no_constant(c):
    raise ValueError("not JSON: " + c)
for line in open(os.path.join(d, "index"), encoding="utf-8", errors="replace"):
    i, status, what = line.rstrip("\n").split("\t", 2)
    raw = open(os.path.join(d, i + ".json"), "rb").read()
    try:
        json.loads(raw.decode("utf-8", "strict"), parse_constant=no_constant)
    except Exception as e:
        print("answer %s (HTTP %s to %s): %s; body starts %r" % (i, status, what[:120], e, raw[:160]))
        sys.exit(1)
    n += 1
print(n)
PY
    ); then
        ok "$desc: $out answers"
    else
        not_ok "$desc" "$out"
    fi
}

# wait_job ID TIMEOUT_S [STATE]: polls GET /v1/jobs/ID until its state is STATE
# (default: done or failed) or TIMEOUT_S passes. Sets JOB_STATE; the last job
# JSON stays in $E2E_BODY. Returns 0 when the wanted state was reached.
wait_job() {
    local id=$1 timeout=$2 want=${3:-}
    local i n=$((timeout * 10))
    JOB_STATE=""
    for ((i = 0; i < n; i++)); do
        api GET "/v1/jobs/$id"
        JOB_STATE=$(jqb '.state')
        if [[ -n $want ]]; then
            [[ $JOB_STATE == "$want" ]] && return 0
        else
            [[ $JOB_STATE == "done" || $JOB_STATE == "failed" ]] && return 0
        fi
        sleep 0.1
    done
    return 1
}

# ---- daemons ------------------------------------------------------------

# proc_alive PID: running and not a zombie (an exited child stays a zombie
# until reaped, and kill -0 still succeeds on it).
proc_alive() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    [[ ${s%% *} != Z ]]
}

use_daemon() {
    BASE="http://127.0.0.1:${D_PORT[$1]}"
}

# start_daemon NAME DATA_DIR [flags...]: starts momentd in the background with
# its output in a fresh log, reads the port from "listening on http://127.0.0.1:PORT",
# waits (10 s at most) for /v1/health to answer 200 and selects it with use_daemon.
# Returns 1 (after printing the log's tail) when that does not happen.
start_daemon() {
    local name=$1 data_dir=$2
    shift 2
    E2E_NSTART=$((E2E_NSTART + 1))
    local log="$E2E_TMP/$name.$E2E_NSTART.log" pid port="" code i
    "$E2E_BIN" serve --port 0 --bind 127.0.0.1 --data-dir "$data_dir" "$@" >"$log" 2>&1 &
    pid=$!
    E2E_PIDS+=("$pid")
    D_PID[$name]=$pid
    D_LOG[$name]=$log
    D_PORT[$name]=""
    for ((i = 0; i < 100; i++)); do
        port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$log" | head -n1)
        [[ -n $port ]] && break
        proc_alive "$pid" || break
        sleep 0.1
    done
    if [[ -z $port ]]; then
        echo "# daemon '$name' did not log its port within 10 s; log tail:"
        tail -n 20 "$log" | sed 's/^/#   /'
        return 1
    fi
    D_PORT[$name]=$port
    use_daemon "$name"
    for ((i = 0; i < 100; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/v1/health" 2>/dev/null) || true
        [[ $code == 200 ]] && return 0
        proc_alive "$pid" || break
        sleep 0.1
    done
    echo "# daemon '$name' (port $port) did not answer /v1/health with 200 within 10 s; log tail:"
    tail -n 20 "$log" | sed 's/^/#   /'
    return 1
}

# wait_exit PID TIMEOUT_S: waits for PID (a child of this shell) to exit, then
# reaps it. Sets EXIT_RC (the exit status; empty if it did not exit in time).
wait_exit() {
    local pid=$1 timeout=$2 i
    EXIT_RC=""
    for ((i = 0; i < timeout * 20; i++)); do
        proc_alive "$pid" || break
        sleep 0.05
    done
    proc_alive "$pid" && return 1
    EXIT_RC=0
    { wait "$pid"; } 2>/dev/null || EXIT_RC=$? # braces: also hides bash's "Killed" notice
    return 0
}

# stop_daemon NAME [SIGNAL]: sends SIGNAL (default TERM) and waits 10 s at most;
# kills it with SIGKILL if still running. Sets EXIT_RC (empty when it had to be killed).
stop_daemon() {
    local pid=${D_PID[$1]} sig=${2:-TERM}
    kill "-$sig" "$pid" 2>/dev/null || true
    if ! wait_exit "$pid" 10; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        EXIT_RC=""
        return 1
    fi
}

# Stops every daemon still running (the cleanup trap calls it).
stop_all_daemons() {
    local pid i
    for pid in "${E2E_PIDS[@]}"; do
        proc_alive "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${E2E_PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            proc_alive "$pid" || break
            sleep 0.1
        done
        proc_alive "$pid" && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    done
    return 0
}
