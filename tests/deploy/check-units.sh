#!/usr/bin/env bash
# tests/deploy/check-units.sh - the systemd units in deploy/ stay hardened and valid:
#
#   bash tests/deploy/check-units.sh
#
# - `systemd-analyze security --offline=yes` exposure: deploy/momentd.service at most
#   CPU_MAX (3.0, issue 11), deploy/momentd-gpu.service at most GPU_MAX (2.0: it measures
#   1.4, and 1.6 with the fallbacks its comments offer, MemoryDenyWriteExecute=no,
#   PrivateUsers=no, SupplementaryGroups=; dropping the syscall filter would make it 2.8)
# - `systemd-analyze verify` prints nothing for either (ExecStart= pointed at an existing
#   program, since /usr/local/bin/momentd need not be installed here)
# - momentd-gpu.service has every setting of momentd.service but the ones the GPU needs
#   changed (GPU_KEYS below), so the two cannot drift apart
# - the drop-in the unit's comments give for videos under /home verifies and keeps the
#   exposure at most CPU_MAX
# Needs systemd-analyze (Debian package systemd; no running systemd). Without it every
# check is "not ok": it never passes silently. Ends with "deploy: N passed, M failed".
set -uo pipefail

HERE=$(cd "${BASH_SOURCE[0]%/*}" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
CPU_UNIT=$REPO/deploy/momentd.service
GPU_UNIT=$REPO/deploy/momentd-gpu.service
CPU_MAX=${CPU_MAX:-3.0}
GPU_MAX=${GPU_MAX:-2.0}
# Settings momentd-gpu.service may set otherwise than momentd.service.
GPU_KEYS='Description PrivateDevices ProcSubset'

PASS=0 FAIL=0
ok() { echo "ok - $1"; PASS=$((PASS + 1)); }
not_ok() { echo "not ok - $1${2:+ ($2)}"; FAIL=$((FAIL + 1)); }
finish() { echo "deploy: $PASS passed, $FAIL failed"; [[ $FAIL -eq 0 ]]; exit; }

if ! command -v systemd-analyze >/dev/null; then
    not_ok "systemd-analyze is installed" "apt-get install -y systemd; no running systemd needed"
    for u in "$CPU_UNIT" "$GPU_UNIT"; do not_ok "${u##*/}: exposure and verify" "not checked"; done
    finish
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# exposure UNIT_FILE MAX [LABEL]: the overall exposure, compared with MAX
exposure() {
    local unit=$1 max=$2 label=${3:-${1##*/}} out n
    out=$(systemd-analyze security --offline=yes "$unit" 2>&1)
    n=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' <<<"$out" | tail -n1)
    if [[ -z $n ]]; then
        not_ok "$label: systemd-analyze security rates it" "$(tail -n3 <<<"$out" | tr '\n' ' ')"
    elif awk -v n="$n" -v m="$max" 'BEGIN { exit !(n <= m) }'; then
        ok "$label: exposure $n <= $max"
    else
        not_ok "$label: exposure $n <= $max" \
            "largest: $(grep '✗' <<<"$out" | awk '{ print $NF, $2 }' | sort -rn | head -n 6 | tr '\n' ';')"
    fi
}

# verify UNIT_FILE [LABEL]: systemd-analyze verify on a copy (with its NAME.d/ drop-ins)
verify() {
    local unit=$1 label=${2:-${1##*/}} dir out
    dir=$TMP/verify.$RANDOM
    mkdir -p "$dir"
    sed "s|^ExecStart=/usr/local/bin/momentd |ExecStart=$(command -v true) |" "$unit" >"$dir/${unit##*/}"
    [[ -d $unit.d ]] && cp -r "$unit.d" "$dir/"
    out=$(systemd-analyze verify "$dir/${unit##*/}" 2>&1)
    if [[ $? -eq 0 && -z $out ]]; then
        ok "$label: systemd-analyze verify is silent"
    else
        not_ok "$label: systemd-analyze verify is silent" "$(tr '\n' ' ' <<<"$out")"
    fi
}

for u in "$CPU_UNIT" "$GPU_UNIT"; do
    [[ -f $u ]] || { not_ok "${u##*/} exists"; continue; }
    grep -q '^ExecStart=/usr/local/bin/momentd serve ' "$u" ||
        not_ok "${u##*/}: ExecStart=/usr/local/bin/momentd serve ..." "verify would check another command"
done
exposure "$CPU_UNIT" "$CPU_MAX"
exposure "$GPU_UNIT" "$GPU_MAX"
verify "$CPU_UNIT"
verify "$GPU_UNIT"

# Every setting line of the CPU unit is in the GPU unit, but for GPU_KEYS.
settings() { grep -E '^[A-Za-z]+=' "$1" | sort -u; }
skip_re="^($(tr ' ' '|' <<<"$GPU_KEYS"))="
missing=$(comm -23 <(settings "$CPU_UNIT" | grep -Ev "$skip_re") <(settings "$GPU_UNIT"))
if [[ -z $missing ]]; then
    ok "momentd-gpu.service has every setting of momentd.service (but $GPU_KEYS)"
else
    not_ok "momentd-gpu.service has every setting of momentd.service (but $GPU_KEYS)" \
        "missing: $(tr '\n' ' ' <<<"$missing")"
fi
absent=""
for want in 'PrivateDevices=no' 'DevicePolicy=closed' 'DeviceAllow=char-nvidia* rw' 'DeviceAllow=/dev/nvidiactl rw' \
    'DeviceAllow=/dev/nvidia-uvm rw' 'ProcSubset=all' 'Conflicts=momentd.service'; do
    grep -qxF "$want" "$GPU_UNIT" || absent+="$want; "
done
if [[ -z $absent ]]; then
    ok "momentd-gpu.service opens the NVIDIA devices and /proc/driver (and conflicts with momentd.service)"
else
    not_ok "momentd-gpu.service opens the NVIDIA devices and /proc/driver" "missing: $absent"
fi

# The documented drop-in for videos under /home (momentd.service's header).
mkdir -p "$TMP/home/momentd.service.d"
cp "$CPU_UNIT" "$TMP/home/"
printf '[Service]\nProtectHome=tmpfs\nBindReadOnlyPaths=/home/alice/Videos\nSupplementaryGroups=media\n' \
    >"$TMP/home/momentd.service.d/home-videos.conf"
exposure "$TMP/home/momentd.service" "$CPU_MAX" "momentd.service + the /home drop-in"
verify "$TMP/home/momentd.service" "momentd.service + the /home drop-in"

finish
