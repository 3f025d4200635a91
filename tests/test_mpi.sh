#!/bin/sh
# Data-parallel runs under MPI (issue #12), two processes of one thread each on this machine:
#   - util/dist.h's collectives (tests/tool_dist.c): the gradient sum is the rank-order sum, bit
#     for bit, on every rank;
#   - `-np 2 --batch 4` trains on the windows of one process's `--batch 4 --accum 2`: the metrics
#     log's first loss is the same bits, and every loss within a relative 1e-5 (the gradients are
#     summed in another order: a rank's gradient starts from zero where the single process adds
#     its second micro-batch onto the first one's sum; fp32 rounding, nothing more);
#   - --grad-comm bf16 trains with every rank identical, its losses within 2e-4 of fp32
#     communication's (train and finetune), its bytes in the banner and the summary;
#   - rank 0 alone writes: one checkpoint, one metrics log, one banner;
#   - --resume at -np 2 repeats the uninterrupted -np 2 run's losses bit for bit;
#   - --resume with another number of processes is refused, naming the field;
#   - an fp16 overflow (emulated ANE, dynamic loss scale) skips the step on both ranks, as in the
#     accum run;
#   - --check-every catches a rank whose weights differ (nudged by a test-only hook), in train and
#     in finetune (the adapter);
#   - finetune (LoRA, with dropout) at -np 2 matches its --accum 2 run as train does, and so does
#     a masked finetune on JSON-lines examples (the mean over both ranks' counted targets);
#   - a SIGTERM to one rank stops both at the same step, the checkpoint saved once.
# Without mpirun (or with a program built without MPI) it prints a skip line and passes;
# ANETRAIN_REQUIRE_MPI=1 (CI) makes that a failure.
# Usage: sh tests/test_mpi.sh BUILD_DIR   (ends with "N passed, N failed")
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/anetrain
TOOL_DIST=$(cd "$BUILD" && pwd)/tests/tool_dist
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$(dirname "$0")/cli_lib.sh"

skip() {
    if [ "${ANETRAIN_REQUIRE_MPI:-0}" = 1 ]; then
        echo "FAIL $1 (ANETRAIN_REQUIRE_MPI=1)"
        echo "0 passed, 1 failed"
        exit 1
    fi
    echo "skip test_mpi.sh: $1 (install openmpi-bin and libopenmpi-dev, then make)"
    echo "0 passed, 0 failed"
    exit 0
}
command -v mpirun >/dev/null 2>&1 || skip "no mpirun"
# MPI allocates once for the whole process lifetime: not the leaks the sanitizer run looks for.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export ASAN_OPTIONS
MPI="mpirun --allow-run-as-root --oversubscribe -np 2"

"$PY" "$ROOT/tests/make_tokens.py" pattern.bin pattern 60000 512 1 || exit 2
RUN="--model tiny --seq 64 --threads 1 --eval-every 0 --print-every 1 --data pattern.bin"
CONST="$RUN --lr 2e-3 --min-lr 2e-3 --warmup 0"

$MPI "$BIN" train $RUN --steps 1 --batch 4 --out probe/model.ckpt >"$W/out" 2>"$W/err"
grep -q "built without MPI" "$W/err" && skip "$BIN was built without MPI"

# ---- util/dist.h's collectives (tests/tool_dist.c): the rank-order sum bit for bit, or, gathers
if [ -x "$TOOL_DIST" ]; then
    if $MPI "$TOOL_DIST" >"$W/out" 2>"$W/err" && grep -q "^11 passed, 0 failed" "$W/out"; then ok "dist.h collectives (tool_dist)"
    else bad "dist.h collectives: $(grep -v '^ok' "$W/out" | head -n 3)"; fi
else bad "tool_dist not built ($TOOL_DIST)"; fi

# the losses of a metrics log, one per line
losses() { sed -n -E 's/.*"loss": ([^,]*),.*/\1/p' "$1"; }
# same_first_close A B: the first losses are equal, all within a relative 1e-5, as many lines
same_first_close() {
    losses "$1" >"$W/a"
    losses "$2" >"$W/b"
    "$PY" - "$W/a" "$W/b" <<'PYEOF'
import sys
a = [float(x) for x in open(sys.argv[1])]
b = [float(x) for x in open(sys.argv[2])]
if len(a) != len(b) or not a: sys.exit("%d losses against %d" % (len(a), len(b)))
if a[0] != b[0]: sys.exit("step 1: %r != %r" % (a[0], b[0]))
for i, (x, y) in enumerate(zip(a, b)):
    if abs(x - y) > 1e-5 * abs(x): sys.exit("step %d: %r vs %r" % (i + 1, x, y))
PYEOF
}
# the log without the timings ("ms") and the validations (a run validates after its last step),
# for bit-for-bit comparisons
strip_ms() { sed -E 's/, "ms": [^,}]*//; s/, "val_loss": [^,}]*//' "$1"; }

# ---- (a) -np 2 --batch 4 == one process --batch 4 --accum 2
expect_ok "one process, --batch 4 --accum 2" "$BIN" train $RUN --steps 8 --lr 3e-3 --batch 4 --accum 2 --out one/model.ckpt
expect_ok "-np 2 --batch 4" $MPI "$BIN" train $RUN --steps 8 --lr 3e-3 --batch 4 --out two/model.ckpt
cp "$W/out" two.out
if msg=$(same_first_close one/metrics.jsonl two/metrics.jsonl 2>&1); then ok "-np 2 losses = the accum run's (step 1 bit for bit, all within 1e-5)"
else bad "-np 2 losses against the accum run: $msg"; fi
if [ "$(sed -n -E 's/.*"tokens": ([0-9]*),.*/\1/p' two/metrics.jsonl | tail -n 1)" = 4096 ]; then ok "tokens count the global batch"
else bad "tokens: $(tail -n 1 two/metrics.jsonl)"; fi

# ---- --grad-comm bf16: half the bytes; every rank still holds the same weights (the checks every
# 5 steps and before the save pass), and the losses stay within a relative 2e-4 of the fp32-comm
# run's (measured on this setup: at most 3.9e-5 over the 20 steps, 8e-6 at the last; the first
# step is the same bits, its loss computed before any exchange)
# close_within A B TOL: as many losses, each within a relative TOL; prints the largest difference
close_within() {
    losses "$1" >"$W/a"
    losses "$2" >"$W/b"
    "$PY" - "$W/a" "$W/b" "$3" <<'PYEOF'
import sys
a = [float(x) for x in open(sys.argv[1])]
b = [float(x) for x in open(sys.argv[2])]
tol = float(sys.argv[3])
if len(a) != len(b) or not a: sys.exit("%d losses against %d" % (len(a), len(b)))
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
if worst > tol: sys.exit("largest relative difference %.2e > %g" % (worst, tol))
print("%.1e" % worst)
PYEOF
}
expect_ok "-np 2 --grad-comm fp32, 20 steps" $MPI "$BIN" train $RUN --steps 20 --lr 3e-3 --batch 4 --out c32/model.ckpt
expect_ok "-np 2 --grad-comm bf16, 20 steps" $MPI "$BIN" train $RUN --steps 20 --lr 3e-3 --batch 4 --grad-comm bf16 \
    --check-every 5 --out c16/model.ckpt
cp "$W/out" c16.out
if grep -q '^ranks   2 processes .*; 0.3 MB of bf16 gradients summed per step (fp32: 0.5 MB)$' c16.out &&
   grep -q '^comm    [0-9.]* ms/step in the reductions (mean of 20 steps, .*0.26 MB of bf16 gradients a step' c16.out
then ok "--grad-comm bf16: the banner and the summary count bf16 bytes"
else bad "--grad-comm bf16 banner/summary: $(grep -E '^(ranks|comm)' c16.out)"; fi
if msg=$(close_within c32/metrics.jsonl c16/metrics.jsonl 2e-4 2>&1); then
    ok "--grad-comm bf16: the losses within 2e-4 of fp32 communication's (largest relative difference $msg)"
else bad "--grad-comm bf16 against fp32: $msg"; fi
expect_fail "--grad-comm takes fp32 or bf16" "--grad-comm: expected fp32 or bf16, found 'fp16'" \
    "$BIN" train $RUN --steps 1 --batch 4 --grad-comm fp16 --out bad/model.ckpt

# ---- (b) rank 0 alone writes; resume at -np 2
if [ "$(ls two | tr '\n' ' ')" = "metrics.jsonl model.ckpt " ] && [ "$(wc -l <two/metrics.jsonl)" -eq 8 ] &&
   [ "$(grep -c '^model ' two.out)" -eq 1 ] && [ "$(grep -c '^done ' two.out)" -eq 1 ] &&
   grep -q '^ranks   2 processes' two.out; then ok "one checkpoint, one log, one banner"
else bad "rank 0 alone writes: $(ls two | tr '\n' ' '), $(wc -l <two/metrics.jsonl) log lines, $(grep -c '^model ' two.out) banners"; fi
expect_ok "-np 2 uninterrupted" $MPI "$BIN" train $CONST --steps 6 --batch 4 --out full/model.ckpt
expect_ok "-np 2 first 3 steps" $MPI "$BIN" train $CONST --steps 3 --batch 4 --out part/model.ckpt
expect_ok "-np 2 --resume to 6" $MPI "$BIN" train $CONST --steps 6 --batch 4 --out part/model.ckpt --resume
if [ -n "$(strip_ms full/metrics.jsonl)" ] && [ "$(strip_ms full/metrics.jsonl)" = "$(strip_ms part/metrics.jsonl)" ] &&
   cmp -s full/model.ckpt part/model.ckpt; then ok "-np 2 resume = uninterrupted (log and checkpoint bit for bit)"
else bad "-np 2 resume differs from the uninterrupted run"; diff full/metrics.jsonl part/metrics.jsonl | head -n 4; fi

# ---- (c) another number of processes is refused
expect_fail "one process refuses a -np 2 checkpoint" "field ranks: saved by a run of 2 processes, resumed by 1" \
    "$BIN" train $CONST --steps 8 --batch 4 --out part/model.ckpt --resume
expect_fail "-np 2 refuses a one-process checkpoint" "field ranks: saved by a run of 1 process, resumed by 2" \
    $MPI "$BIN" train $RUN --steps 10 --lr 3e-3 --batch 4 --accum 2 --out one/model.ckpt --resume

# ---- overflow agreement: on the emulated ANE (fp16) a loss scale doubled every step overflows;
# the step is skipped on both ranks (the weights check before the save would fail otherwise), at
# the step the accum run skips, with the same scales
OVF="$RUN --steps 10 --lr 3e-3 --backend ane --device emu --loss-scale dynamic --loss-scale-window 1"
expect_ok "fp16 overflow, one process --accum 2" "$BIN" train $OVF --batch 4 --accum 2 --out ovf1/model.ckpt
expect_ok "fp16 overflow, -np 2 (ranks still agree at the end)" $MPI "$BIN" train $OVF --batch 4 --out ovf2/model.ckpt
scales() { sed -n -E 's/.*"loss_scale": ([^,]*), "skipped": ([a-z]*).*/\1 \2/p' "$1"; }
if scales ovf2/metrics.jsonl | grep -q true && [ "$(scales ovf1/metrics.jsonl)" = "$(scales ovf2/metrics.jsonl)" ]; then
    ok "an overflow skips the step on every rank, as in the accum run"
else bad "overflow agreement: $(scales ovf1/metrics.jsonl | tr '\n' ' ') against $(scales ovf2/metrics.jsonl | tr '\n' ' ')"; fi

# ---- the weights check: one rank's weights nudged (a test-only hook) is caught at the next check
expect_fail "a rank with other weights is caught by --check-every" \
    "the processes diverged: after step 2 the crc32 of the weights is [0-9a-f]{8} on rank 0 but [0-9a-f]{8} on rank 1" \
    $MPI -x ANETRAIN_TEST_PERTURB_RANK=1 "$BIN" train $CONST --steps 5 --batch 4 --check-every 2 --out perturbed/model.ckpt
if [ ! -e perturbed/model.ckpt ]; then ok "no checkpoint of a diverged run"; else bad "a diverged run saved its checkpoint"; fi

# ---- (d) finetune (LoRA with dropout) at -np 2 == its --accum 2 run
"$PY" - <<'PYEOF' || exit 2
import random
rng = random.Random(3)
words = ["the", "ship", "sailed", "past", "a", "grey", "harbour", "at", "dawn", "wind", "rose", "and", "fell"]
with open("text.txt", "w") as f:
    for _ in range(600):
        f.write(" ".join(rng.choice(words) for _ in range(rng.randrange(6, 14))).capitalize() + ".\n\n")
PYEOF
expect_ok "tokenizer" "$BIN" tokenizer train --vocab 300 text.txt -o tok.json
FT="--init base/model.ckpt --tokenizer tok.json --data text.txt --steps 6 --seq 32 --lr 3e-3 --lora-dropout 0.1
    --eval-every 0 --threads 1 --print-every 1"
"$PY" "$ROOT/tests/make_tokens.py" pattern300.bin pattern 20000 300 1 || exit 2
expect_ok "base model" "$BIN" train --model tiny --vocab 300 --data pattern300.bin --steps 1 --seq 32 --threads 1 \
    --out base/model.ckpt
expect_ok "finetune, one process, --batch 4 --accum 2" "$BIN" finetune $FT --batch 4 --accum 2 --out ft1
expect_ok "finetune -np 2 --batch 4" $MPI "$BIN" finetune $FT --batch 4 --out ft2
if msg=$(same_first_close ft1/metrics.jsonl ft2/metrics.jsonl 2>&1); then ok "finetune -np 2 losses = the accum run's"
else bad "finetune -np 2 against the accum run: $msg"; fi
if [ -f ft2/adapter_model.safetensors ] && [ -f ft2/lora_state.ckpt ]; then ok "finetune -np 2 saved the adapter"
else bad "finetune -np 2: $(ls ft2 | tr '\n' ' ')"; fi
# the adapter's gradients as bf16, its crc compared every 2 steps (finetune --check-every)
expect_ok "finetune -np 2 --grad-comm bf16 --check-every 2" $MPI "$BIN" finetune $FT --batch 4 --grad-comm bf16 \
    --check-every 2 --out ft16
cp "$W/out" ft16.out
if msg=$(close_within ft2/metrics.jsonl ft16/metrics.jsonl 2e-4 2>&1) &&
   grep -q 'MB of bf16 adapter gradients summed per step' ft16.out && grep -q '^comm    .* of bf16 gradients' ft16.out; then
    ok "finetune --grad-comm bf16: losses within 2e-4 of fp32 communication's ($msg)"
else bad "finetune --grad-comm bf16: ${msg:-} $(grep -E '^(ranks|comm)' ft16.out)"; fi
expect_fail "finetune: a rank with another adapter is caught by --check-every" \
    "the processes diverged: after step 2 the crc32 of the adapter is [0-9a-f]{8} on rank 0 but [0-9a-f]{8} on rank 1" \
    $MPI -x ANETRAIN_TEST_PERTURB_RANK=1 "$BIN" finetune $FT --batch 4 --check-every 2 --out ftp

# ---- JSON-lines examples with --mask-prompt at -np 2 == their --accum 2 run: the masked mean is
# over the counted targets of both ranks' rows (each rank counts the whole global step's)
"$PY" - <<'PYEOF' || exit 2
import json, os, random
rng = random.Random(5)
words = ["the", "ship", "sailed", "past", "a", "grey", "harbour", "at", "dawn", "wind", "rose", "and", "fell"]
os.makedirs("pc", exist_ok=True)
with open("pc/train.jsonl", "w") as f:
    for _ in range(120):
        w = [rng.choice(words) for _ in range(rng.randrange(4, 12))]
        k = rng.randrange(1, len(w))
        f.write(json.dumps({"prompt": " ".join(w[:k]), "completion": " " + " ".join(w[k:]) + "."}) + "\n")
PYEOF
FTJ="--init base/model.ckpt --tokenizer tok.json --data pc --mask-prompt --steps 6 --seq 32 --lr 3e-3 --val-frac 0.1
    --eval-every 3 --threads 1 --print-every 1"
expect_ok "finetune jsonl --mask-prompt, one process, --batch 4 --accum 2" "$BIN" finetune $FTJ --batch 4 --accum 2 \
    --out fj1
expect_ok "finetune jsonl --mask-prompt -np 2 --batch 4" $MPI "$BIN" finetune $FTJ --batch 4 --out fj2
if msg=$(same_first_close fj1/metrics.jsonl fj2/metrics.jsonl 2>&1); then
    ok "finetune jsonl -np 2 masked losses = the accum run's"
else bad "finetune jsonl -np 2 against the accum run: $msg"; fi
v1=$(json_field fj1/metrics.jsonl val_loss)
v2=$(json_field fj2/metrics.jsonl val_loss)
if [ -n "$v1" ] && [ -n "$v2" ] && awk "BEGIN{d = $v1 - $v2; if (d < 0) d = -d; exit !(d <= 1e-5 * $v1)}"; then
    ok "finetune jsonl -np 2: the masked validation loss within 1e-5 ($v1, $v2)"
else bad "finetune jsonl -np 2: masked validation loss $v2, one process $v1"; fi

# ---- a SIGTERM to one rank stops every rank at the same step
$MPI "$BIN" train $CONST --steps 100000 --batch 4 --out sig/model.ckpt >sig.out 2>sig.err &
mpipid=$!
rankpid=""
for _ in $(seq 1 100); do
    sleep 0.1
    [ -s sig/metrics.jsonl ] || continue
    # one of the two ranks: a process of this test's mpirun (its child or grandchild) running anetrain
    rankpid=$(ps -eo pid=,ppid=,comm= | awk -v top="$mpipid" '
        { parent[$1] = $2; name[$1] = $3 }
        END { for (p in name) if (name[p] == "anetrain") { q = parent[p]; while (q > 1 && q != top) q = parent[q];
              if (q == top) { print p; exit } } }')
    [ -n "$rankpid" ] && break
done
if [ -n "$rankpid" ]; then kill -TERM "$rankpid"; fi
wait "$mpipid"
rc=$?
last=$(sed -n -E 's/.*"step": ([0-9]*),.*/\1/p' sig/metrics.jsonl | tail -n 1)
if [ -n "$rankpid" ] && [ "$rc" -eq 130 ] && grep -q "^interrupted at step $last: checkpoint saved" sig.out &&
   [ "$(grep -c '^interrupted' sig.out)" -eq 1 ] &&
   "$BIN" train $CONST --steps "$last" --batch 4 --out sig/model.ckpt --resume 2>&1 | grep -q "field ranks: saved by a run of 2"; then
    ok "SIGTERM to one rank: both stop at step $last, one checkpoint"
else bad "SIGTERM to one rank (pid ${rankpid:-none}, exit $rc, last logged step ${last:-none}): $(tail -n 2 sig.out sig.err)"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
