#!/bin/sh
# test_check_layers.sh — the layering check (tests/check_layers.sh) fails where it must: on a
# copy of src/ in a temporary directory with an upward include, an include to a folder not on
# the includer's line, an include of no file, and a folder not in the list; and passes on the
# untouched copy. Ends with "N passed, N failed".
cd "$(dirname "$0")/.." || exit 2
passed=0
failed=0
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT

check() { # name, expected exit status, expected line (grep -F), output, status
    if [ "$5" -eq "$2" ] && printf '%s\n' "$4" | grep -qF -- "$3"; then
        echo "ok   $1"
        passed=$((passed + 1))
    else
        echo "FAIL $1: exit $5 (expected $2), expected a line with: $3"
        printf '%s\n' "$4" | sed 's/^/     /'
        failed=$((failed + 1))
    fi
}

fresh() {
    rm -rf "$tmp/src" "$tmp/tests"
    mkdir -p "$tmp/tests" && cp -R src "$tmp/src" && cp -R tests/fake_ane "$tmp/tests/fake_ane"
}

# Adds `#include "$2"` as the first line of $tmp/$1.
add_include() {
    { printf '#include "%s"\n' "$2"; cat "$tmp/$1"; } > "$tmp/x" && mv "$tmp/x" "$tmp/$1"
}

fresh
out=$(sh tests/check_layers.sh "$tmp" 2>&1); rc=$?
check "the copy as it is passes" 0 " 0 failed" "$out" $rc

fresh
add_include src/model/quant.c "../backend/backend.h"
out=$(sh tests/check_layers.sh "$tmp" 2>&1); rc=$?
check "model including backend fails" 1 \
    "src/model/quant.c:1: model includes backend/backend.h, which is above it (allowed: util)" "$out" $rc

fresh
add_include src/util/err.c "../train/trainer.h"
out=$(sh tests/check_layers.sh "$tmp" 2>&1); rc=$?
check "util including train fails" 1 \
    "src/util/err.c:1: util includes train/trainer.h, which is above it (allowed: nothing but itself)" "$out" $rc

fresh
add_include src/generate/sampler.c "../io/peft.h"
out=$(sh tests/check_layers.sh "$tmp" 2>&1); rc=$?
check "generate including io (not on its line) fails" 1 \
    "src/generate/sampler.c:1: generate includes io/peft.h, which is not on its line (allowed: ops model util)" \
    "$out" $rc

fresh
add_include src/data/loader.c "../model/gone.h"
out=$(sh tests/check_layers.sh "$tmp" 2>&1); rc=$?
check "an include of no file fails" 1 \
    "src/data/loader.c:1: includes \"../model/gone.h\", which is no file in src/ (nor in tests/)" "$out" $rc

fresh
mkdir "$tmp/src/extra" && printf '#include "../util/err.h"\n' > "$tmp/src/extra/x.c"
out=$(sh tests/check_layers.sh "$tmp" 2>&1); rc=$?
check "a folder not in the list fails" 1 \
    "src/extra/x.c:1: folder extra is not in the layer list of tests/check_layers.sh" "$out" $rc

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
