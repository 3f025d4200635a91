#!/bin/sh
# check_layers.sh — dependencies in src/ point one way: a folder includes only the folders its
# line below allows (and itself). This list is the one place the layering is written down.
#
#   main      src/main.c: the program, on top of the commands
#   cli       one file per subcommand: flags and printing
#   train     trainer, optimizer, checkpoints, LoRA gradients, evaluation
#   backend   the backend interface, cpu.c, ane/ (planner, kernels, emu/, darwin.c)
#   generate  KV-cache inference and sampling
#   io        model files (any of them, our checkpoint's model part), safetensors, PEFT adapters,
#             metrics log (reads and writes the model's config, parameters and adapters, so it
#             sits above model)
#   ops       the CPU reference ops (their shapes come from the model's config)
#   model     config, parameter layout, LoRA layout/views/dropout masks/merge, int8 quantization
#   data      documents, tokenizers, token files, loader
#   util      errors, files, threads, BLAS, fp16, rng, clock, processes (dist: MPI)
#
# Each line lists exactly what the code uses (cli/ and train/ reach no ops/, say): a new
# dependency is added here on purpose, and only to a folder further down.
#
# Every `#include "..."` of every file in src/ is resolved the way the compiler resolves it
# (relative to the including file), to the top folder under src/ it names. One include is one
# check: it passes if it stays in its folder or reaches a folder on its folder's line. The one
# include that leaves src/ is the macOS bridge's test double (tests/fake_ane/, only compiled with
# -DANE_FAKE_FRAMEWORK -Itests), listed as `tests` on backend's line.
#
# Usage: sh tests/check_layers.sh [ROOT]   (ROOT: a tree holding src/ and tests/, default the
# repository). Prints each offending include as
#   file:line: <folder> includes <folder>/<file>, which is above it (allowed: ...)
# and ends with "N passed, N failed"; exits 1 if any failed.
ALLOWED='
main:     cli
cli:      train backend generate io model data util
train:    backend io model data util
backend:  ops model util tests
generate: ops model util
io:       model util
ops:      model util
model:    util
data:     util
util:
'
ROOT=${1:-$(dirname "$0")/..}
cd "$ROOT" || exit 2
[ -d src ] || { echo "$ROOT: no src/ folder"; echo "0 passed, 1 failed"; exit 1; }

files=$(find src -type f \( -name '*.c' -o -name '*.h' \) | sort)
{
    # The table, then every file that an include may resolve to, then the sources.
    printf '%s\n' "$ALLOWED" | sed -n 's/^\([a-z]*\):\(.*\)$/ALLOW \1 \2/p'
    find src tests -type f | sed 's/^/FILE /'
    echo "SOURCES"
    # shellcheck disable=SC2086
    grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' $files /dev/null
} | awk '
function norm(p,   n, parts, out, i, k, s) {
    n = split(p, parts, "/")
    k = 0
    for (i = 1; i <= n; i++) {
        if (parts[i] == "." || parts[i] == "") continue
        if (parts[i] == "..") { if (k == 0) return ""; k--; continue }
        out[++k] = parts[i]
    }
    s = ""
    for (i = 1; i <= k; i++) s = s (i > 1 ? "/" : "") out[i]
    return s
}
# The layer of a path in the tree: "main" for src/main.c, "tests" outside src/, else the top
# folder under src/.
function layer(path,   n, parts) {
    n = split(path, parts, "/")
    if (parts[1] != "src") return "tests"
    return n == 2 ? "main" : parts[2]
}
$1 == "ALLOW" {
    rank[$2] = ++nlayers
    order[nlayers] = $2
    list[$2] = ""
    for (i = 3; i <= NF; i++) { ok[$2 " " $i] = 1; list[$2] = list[$2] (i > 3 ? " " : "") $i }
    next
}
$1 == "FILE" { exists[$2] = 1; next }
$0 == "SOURCES" { sources = 1; next }
sources {
    # file:line:#include "path"
    file = $0; sub(/:.*/, "", file)
    rest = substr($0, length(file) + 2)
    line = rest; sub(/:.*/, "", line)
    inc = rest; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
    dir = file; sub(/\/[^\/]*$/, "", dir)
    target = norm(dir "/" inc)
    if (target == "" || !exists[target]) {
        t2 = norm("tests/" inc)
        target = t2 != "" && exists[t2] ? t2 : ""
    }
    from = layer(file)
    if (!(from in rank)) {
        printf "%s:%s: folder %s is not in the layer list of tests/check_layers.sh\n", file, line, from
        failed++
        next
    }
    if (target == "") {
        printf "%s:%s: includes \"%s\", which is no file in src/ (nor in tests/)\n", file, line, inc
        failed++
        next
    }
    to = layer(target)
    if (to == from || ok[from " " to]) { passed++; next }
    shown = target; sub(/^src\//, "", shown)
    where = (to in rank) && rank[to] < rank[from] ? "which is above it" : "which is not on its line"
    printf "%s:%s: %s includes %s, %s (allowed: %s)\n", file, line, from, shown, where,
           list[from] == "" ? "nothing but itself" : list[from]
    failed++
}
END {
    printf "%d passed, %d failed\n", passed, failed
    exit failed > 0
}
'
