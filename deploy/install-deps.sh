#!/bin/sh
# install-deps.sh - installs what momentd needs on Debian 12 (bookworm) or newer.
#
#   deploy/install-deps.sh          build and run dependencies
#   deploy/install-deps.sh --test   also what the test suite uses (jq, the ffmpeg CLI for
#                                   fixtures, real sample footage from Debian packages, and
#                                   clang with its libFuzzer runtime for make fuzz-regress,
#                                   systemd-analyze for make deploy-check)
#
# Uses sudo when not run as root. CUDA is optional and not installed here: when
# nvcc is present (e.g. /usr/local/cuda/bin/nvcc) `make` builds the CUDA backend too.
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PKGS="build-essential pkg-config ca-certificates curl
      libmicrohttpd-dev libavformat-dev libavcodec-dev libavutil-dev libswscale-dev
      libcjson-dev libsqlite3-dev libopenblas-dev"
if [ "${1:-}" = "--test" ]; then
    # forensics-samples-files: a real phone video, used when ../shared/media is absent.
    # clang + libclang-rt-dev: the fuzz targets (libFuzzer, ASan, UBSan runtimes; the runtimes are
    # only a Recommends of clang, which --no-install-recommends below would skip).
    PKGS="$PKGS ffmpeg jq python3 forensics-samples-files clang libclang-rt-dev systemd"
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "install-deps: all Debian packages present"
    exit 0
fi
echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
