#!/usr/bin/env bash
# tests/deploy/sandboxed-e2e.sh - the end-to-end suite with every daemon run inside an
# emulation of deploy/momentd.service's sandbox, without systemd (no PID 1 needed):
#
#   bash tests/deploy/sandboxed-e2e.sh ./momentd      (root; E2E_ONLY=... passes through)
#
# Each momentd the suite starts gets, in a new mount namespace (unshare(1), mount(8)):
#   ProtectSystem=strict     every mount read-only but the suite's temporary directory
#                            (the stand-in for StateDirectory=)
#   ProtectHome=yes          /home, /root, /run/user empty and inaccessible
#   PrivateTmp=yes           an empty /tmp and /var/tmp of its own
#   PrivateDevices=yes       a /dev with null, zero, full, random, urandom, shm only
#   ProtectProc=invisible ProcSubset=pid   a /proc of processes only
#   ProtectKernelTunables= ProtectControlGroups=   /sys read-only
#   CapabilityBoundingSet=   no capabilities (setpriv), though still uid 0: DynamicUser=
#                            and PrivateUsers= are not emulated
# then the seccomp filters of tests/deploy/sandbox-exec.c: the unit's SystemCallFilter=
# lines (expanded with systemd-analyze syscall-filter), SystemCallErrorNumber=EPERM,
# MemoryDenyWriteExecute=, RestrictAddressFamilies=, RestrictNamespaces=,
# RestrictRealtime=, NoNewPrivileges=. Needs: root, cc, libseccomp-dev, systemd
# (systemd-analyze), util-linux. Prints the suite's own lines and "e2e: N passed, M failed";
# a missing tool is a "not ok" and a failure, never a silent pass.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
UNIT=${UNIT:-$REPO/deploy/momentd.service}

fail() { echo "not ok - $1"; echo "e2e: 0 passed, 1 failed"; exit 1; }
[[ $# -ge 1 && -x $1 ]] || { echo "usage: bash tests/deploy/sandboxed-e2e.sh ./momentd" >&2; exit 2; }
BIN=$(cd "$(dirname "$1")" && pwd -P)/$(basename "$1")
[[ $(id -u) -eq 0 ]] || fail "running as root (mount namespaces; CI and the dev machines are root)"
for tool in cc systemd-analyze unshare mount setpriv findmnt; do
    command -v "$tool" >/dev/null || fail "tool '$tool' is installed (apt-get install -y systemd util-linux gcc)"
done
[[ -e /usr/include/seccomp.h ]] || fail "libseccomp-dev is installed (apt-get install -y libseccomp-dev)"

SBX=$(mktemp -d "${TMPDIR:-/tmp}/momentd-sbx.XXXXXX")
trap '[[ -n ${SBX_KEEP:-} ]] || rm -rf "$SBX"' EXIT
cc -O2 -Wall -Wextra -Werror -o "$SBX/sandbox-exec" "$HERE/sandbox-exec.c" -lseccomp ||
    fail "tests/deploy/sandbox-exec.c builds"

# The unit's SystemCallFilter= lines, in order: a plain list adds to the allow list, a
# "~" list takes away from it (what systemd does when the first line is an allow list).
expand() { # NAME: the syscalls of a name or @group, nested groups expanded
    case $1 in
        @*) systemd-analyze syscall-filter "$1" | sed '1d; s/^ *//; /^#/d; /^$/d' |
            while read -r s; do expand "$s"; done ;;
        *) echo "$1" ;;
    esac
}
: >"$SBX/allow"
n=0
while IFS= read -r line; do
    value=${line#SystemCallFilter=}
    if [[ $value == "~"* ]]; then
        for s in ${value#\~}; do expand "$s"; done | sort -u >"$SBX/deny"
        sort -u "$SBX/allow" | comm -23 - "$SBX/deny" >"$SBX/allow.new"
    else
        { cat "$SBX/allow"; for s in $value; do expand "$s"; done; } | sort -u >"$SBX/allow.new"
    fi
    mv "$SBX/allow.new" "$SBX/allow"
    n=$((n + 1))
done < <(grep '^SystemCallFilter=' "$UNIT")
[[ $n -gt 0 ]] || fail "$UNIT has SystemCallFilter= lines"
echo "# sandbox: $(wc -l <"$SBX/allow") syscalls allowed by $(basename "$UNIT")'s SystemCallFilter="

# The suite's temporary directory W plays the state directory. The sandbox's own tools sit
# in W/.sandbox: the private /tmp hides everything else under $SBX.
W=$SBX/e2e T=$SBX/e2e/.sandbox
mkdir -p "$T"
mv "$SBX/sandbox-exec" "$SBX/allow" "$T/"
cat >"$T/enter" <<'EOF'
# bash enter W PROGRAM [ARGS...]: PROGRAM in the sandbox, with W writable
set -e
W=$1; shift
exec 9<"$W"
# ProtectSystem=strict (+ ProtectKernelTunables, ProtectControlGroups: /sys read-only)
findmnt -rn -o TARGET | sort -u | while read -r m; do
    case $m in /proc*|/dev*|/run*|/mnt*|/media*|"$W"/*) continue ;; esac
    mount -o remount,bind,ro "$m" 2>/dev/null || true
done
# ProtectHome=yes
for d in /home /root /run/user; do
    if [[ -d $d ]]; then mount -t tmpfs -o ro,mode=000,nosuid,nodev,noexec tmpfs "$d"; fi
done
# PrivateTmp=yes; W (opened above) comes back at its own path, writable
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d"; done
mkdir -p "$W"
mount --no-canonicalize --rbind /proc/self/fd/9 "$W"
mount -o remount,bind,rw "$W"
exec 9<&-
# PrivateDevices=yes
declare -A fd
for n in null zero full random urandom; do exec {f}<>"/dev/$n"; fd[$n]=$f; done
mount -t tmpfs -o mode=755,nosuid,noexec tmpfs /dev
for n in "${!fd[@]}"; do touch "/dev/$n"; mount --no-canonicalize --bind "/proc/self/fd/${fd[$n]}" "/dev/$n"; done
mkdir /dev/shm && mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin && ln -s /proc/self/fd/1 /dev/stdout && ln -s /proc/self/fd/2 /dev/stderr
mount -o remount,bind,ro /dev
for n in "${!fd[@]}"; do exec {fd[$n]}<&-; done
# ProtectProc=invisible ProcSubset=pid
mount -t proc -o subset=pid,hidepid=invisible,nosuid,nodev,noexec proc /proc
exec setpriv --bounding-set=-all --inh-caps=-all -- "$W/.sandbox/sandbox-exec" "$W/.sandbox/allow" "$@"
EOF
cat >"$SBX/momentd" <<EOF
#!/usr/bin/env bash
# momentd inside the emulated unit sandbox (generated by tests/deploy/sandboxed-e2e.sh)
exec unshare --mount --propagation slave bash "$T/enter" "$W" "$BIN" "\$@"
EOF
chmod 755 "$SBX/momentd"
in_sandbox() { unshare --mount --propagation slave bash "$T/enter" "$W" "$@"; }

# A sandbox that lets through what it should refuse tests nothing: probe it first.
if [[ -x /usr/bin/python3 ]]; then # (not a shim under /root: ProtectHome hides it)
    probe=$(in_sandbox /usr/bin/python3 -c '
import ctypes, mmap, os, socket
bad = []
def refused(what, f):
    try:
        f()
        bad.append(what)
    except OSError:
        pass
refused("W+X mmap", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC))
refused("AF_NETLINK socket", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
refused("setuid", lambda: os.setuid(1))
refused("writing under /usr", lambda: open("/usr/momentd-sandbox-probe", "w"))
refused("listing /home", lambda: os.listdir("/home"))
refused("reading /proc/meminfo", lambda: open("/proc/meminfo").read())
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == 0:
    bad.append("unshare(CLONE_NEWUSER)")
if [d for d in os.listdir("/dev") if d.startswith(("sd", "nvme", "kmsg", "mem", "nvidia"))]:
    bad.append("host devices")
pid = os.fork()
if pid == 0:
    os.execv("/bin/true", ["true"])
if os.waitpid(pid, 0)[1] != 0:
    bad.append("fork+exec failed")
print("allowed: " + ", ".join(bad) if bad else "refuses what it should, forks and execs")
' 2>&1) || fail "the sandbox probe runs: $probe"
    [[ $probe == refuses* ]] || fail "the sandbox refuses what the unit refuses ($probe)"
    echo "# sandbox: $probe"
fi
probe=$("$SBX/momentd" version 2>&1) || fail "momentd version runs in the sandbox: $probe"
echo "# sandbox: $probe"
TMPDIR=$W bash "$REPO/tests/e2e/run.sh" "$SBX/momentd"
