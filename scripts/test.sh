#!/bin/sh
# The test command: installs what the tests need (PyTorch and NumPy from Debian for the
# parity tests), builds, runs the suite, then runs it again under ASan+UBSan.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh python3-torch python3-numpy
make -j2 test
make -j2 sanitize
