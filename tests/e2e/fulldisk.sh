#!/usr/bin/env bash
# tests/e2e/fulldisk.sh - indexing and deleting on a full disk (issue 11): a job whose writes fail
# because the disk filled up must not stay 'running' for ever (its end is written once there is
# room again, without counting a crash), and DELETE must work on a full disk (the upload's own
# file is removed first; the data directory's 4 MiB reserve is released for the database).
#
# Sourced by tests/e2e/run.sh inside its fulldisk section, which mounts a small tmpfs and calls
#     e2e_fulldisk_jobs MOUNT CLIP
# with lib.sh's globals set; it starts and stops its own daemon on MOUNT/data2.
# shellcheck shell=bash disable=SC2016  # jq filters are single-quoted on purpose

# fill_disk DIR: writes DIR/filler until the file system is full.
fill_disk() {
    dd if=/dev/zero of="$1/filler" bs=1M status=none 2>/dev/null || true
    # The last partial block: fill what is left to the byte.
    head -c 1048576 /dev/zero >>"$1/filler" 2>/dev/null || true
}

e2e_fulldisk_jobs() {
    local mount=$1 clip=$2 job vid
    # Jobs wait 1.5 s before they start: time to fill the disk under them.
    if ! start_daemon full2 "$mount/data2" --workers 1 --debug-job-delay-ms 1500; then
        not_ok "daemon for the indexing-on-a-full-disk case starts" "see log above"
        return 0
    fi
    ok "daemon for the indexing-on-a-full-disk case starts"
    check "the data directory keeps a 4 MiB reserve" test "$(stat -c %s "$mount/data2/.reserve" 2>/dev/null)" = 4194304
    api POST "/v1/videos?name=keep.mp4" --data-binary "@$clip"
    check_status "an upload before the disk fills" 202
    local keep
    keep=$(jqb '.video.id')
    wait_job "$(jqb '.job.id')" 60 done || true
    check_eq "it is indexed" "done" "$JOB_STATE"
    # A second upload whose job runs while the disk is full.
    api POST "/v1/videos?name=victim.mp4" --data-binary "@$TMP/media/out_2.mp4"
    check_status "a second upload" 202
    job=$(jqb '.job.id')
    vid=$(jqb '.video.id')
    fill_disk "$mount"
    check "the disk is full (under 64 KiB free)" test "$(df --output=avail -B1 "$mount" | tail -n 1)" -lt 65536
    sleep 4 # the job starts, cannot write, and cannot record its end
    api GET "/v1/health"
    check_status "the daemon keeps serving on a full disk" 200
    # DELETE works on the full disk.
    api DELETE "/v1/videos/$keep"
    check_status "DELETE of an indexed video on a full disk" 200
    api GET "/v1/videos/$keep"
    check_status "the deleted video is gone" 404
    rm -f "$mount/filler"
    # With room again, the job's end is written: failed (its writes failed), not running for ever.
    if wait_job "$job" 20; then
        ok "the job of the full disk ends once there is room (state $JOB_STATE)"
    else
        not_ok "the job of the full disk ends once there is room" "still '$JOB_STATE' after 20 s"
    fi
    check_eq "it ended failed" "failed" "$JOB_STATE"
    check_jq "its error says the disk was full" '.error | test("full|disk"; "i")'
    check_jq "and no crash was counted (attempts 1)" '.attempts == 1'
    api GET "/v1/videos/$vid"
    check_status "its video is still there" 200
    if stop_daemon full2; then :; fi
    check_eq "daemon exits 0 on SIGTERM after the full disk" 0 "$EXIT_RC"
    if grep -q "cannot record state" "$TMP"/*.log 2>/dev/null; then
        ok "the log says the job's end could not be written at first"
    else
        not_ok "the log says the job's end could not be written at first" "no 'cannot record state' line"
    fi
}

# Run alone (as root: it mounts a 32 MiB tmpfs): bash tests/e2e/fulldisk.sh ./momentd CLIP
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
    # shellcheck source=tests/e2e/lib.sh
    source "$HERE/lib.sh"
    if [[ $# -lt 2 || ! -x $1 || ! -f $2 ]]; then
        echo "usage: bash tests/e2e/fulldisk.sh ./momentd CLIP.mp4   (as root)" >&2
        exit 2
    fi
    E2E_BIN=$(cd "$(dirname "$1")" && pwd -P)/$(basename "$1")
    E2E_TMP=$(cd "$(mktemp -d "${TMPDIR:-/tmp}/momentd-fulldisk.XXXXXX")" && pwd -P)
    TMP=$E2E_TMP
    E2E_BODY=$E2E_TMP/body
    E2E_HDRS=$E2E_TMP/headers
    mkdir -p "$TMP/media" "$TMP/mnt"
    ffmpeg -v error -f lavfi -i testsrc2=size=160x120:rate=10 -t 6 -pix_fmt yuv420p "$TMP/media/out_2.mp4"
    mount -t tmpfs -o size=32m tmpfs "$TMP/mnt"
    trap 'stop_all_daemons; umount "$TMP/mnt" 2>/dev/null; rm -rf "$E2E_TMP"' EXIT
    e2e_fulldisk_jobs "$TMP/mnt" "$2"
    e2e_summary
    ((E2E_FAIL == 0))
fi
