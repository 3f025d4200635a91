#!/bin/sh
# Installs what anetrain needs to build and test on Debian/Ubuntu (run as root or with sudo).
# On macOS nothing is needed beyond the Xcode command line tools (Accelerate is built in)
# and cJSON, PCRE2, utf8proc (brew install cjson pcre2 utf8proc); Open MPI for data-parallel
# runs across processes and Macs is optional (brew install open-mpi).
set -eu
if [ "$(uname -s)" = Darwin ]; then
    command -v brew >/dev/null && brew list cjson pcre2 utf8proc >/dev/null 2>&1 || echo "install: brew install cjson pcre2 utf8proc"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
# libopenmpi-dev and openmpi-bin: data-parallel runs (mpirun) and their tests (tests/test_mpi.sh)
PKGS="build-essential clang pkg-config libopenblas-dev libcjson-dev zlib1g-dev libpcre2-dev libutf8proc-dev libopenmpi-dev openmpi-bin python3 $*"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi
