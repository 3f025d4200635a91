#!/bin/sh
# bench_sample.sh BUILD_DIR — decode speed of `anetrain sample` (tokens/s, greedy, KV cache)
# for stories15m- and stories110m-shaped models with random weights, side by side with
# llama2.c's run.c on the very same .bin when a run binary is available.
#
# Each model is run BENCH_SAMPLE_RUNS times, alternating ours and run.c so that both see the
# same machine load; the table shows the best and the median of the "achieved tok/s" each
# program prints (the same definition in both: tokens after the first one, per second).
# The load average is printed before and after: on a shared machine only the best figures
# are comparable. The greedy texts are compared too (they must be identical; --runc-text
# makes ours print exactly as run.c, which drops byte tokens 0x80-0xFF).
#
# Environment knobs (defaults in brackets):
#   BENCH_SAMPLE_MODELS  presets                                   [stories15m stories110m]
#   BENCH_SAMPLE_RUNS    runs per program and model                [5]
#   BENCH_SAMPLE_STEPS   positions per run (run.c's -n)            [256]
#   BENCH_THREADS        threads for both (OMP_NUM_THREADS)        [2]
#   BENCH_RUNC           llama2.c's run binary (optional)          [/tmp/llama2c/run]
#   BENCH_SAMPLE_DIR     where the random .bin models are kept     [BUILD_DIR/bench-models]
# The tokenizer is the repository's tests/data/llama2-tokenizer.bin (tests/data/README.md).
set -u

BUILD=${1:?usage: sh bench/bench_sample.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
BIN=$BUILD/anetrain
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODELS=${BENCH_SAMPLE_MODELS:-stories15m stories110m}
RUNS=${BENCH_SAMPLE_RUNS:-5}
STEPS=${BENCH_SAMPLE_STEPS:-256}
THREADS=${BENCH_THREADS:-2}
RUNC=${BENCH_RUNC:-/tmp/llama2c/run}
DIR=${BENCH_SAMPLE_DIR:-$BUILD/bench-models}
TOK=$ROOT/tests/data/llama2-tokenizer.bin
PROMPT="Once upon a time"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

[ -x "$BIN" ] || { echo "bench_sample.sh: $BIN not found: build it first (make BUILD=... )" >&2; exit 1; }
[ -f "$TOK" ] || { echo "bench_sample.sh: $TOK not found (it is part of the repository)" >&2; exit 1; }
have_runc=0
if [ -x "$RUNC" ]; then have_runc=1; fi
mkdir -p "$DIR" || exit 1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT INT TERM

# A random model per preset, made once: the initialization (train --steps 0) as a llama2.c .bin.
for m in $MODELS; do
    [ -f "$DIR/$m.bin" ] && continue
    echo "making $DIR/$m.bin (random weights)"
    [ -f "$W/tokens.bin" ] || "$PY" "$ROOT/tests/make_tokens.py" "$W/tokens.bin" pattern 4000 32000 1 || exit 1
    "$BIN" train --model "$m" --data "$W/tokens.bin" --steps 0 --batch 1 --seq 32 --val-frac 0 --eval-every 0 \
        --threads "$THREADS" --out "$W/$m/model.ckpt" >"$W/log" 2>&1 &&
        "$BIN" convert "$W/$m/model.ckpt" "$DIR/$m.bin" >>"$W/log" 2>&1 ||
        { cat "$W/log"; echo "bench_sample.sh: could not make the $m model" >&2; exit 1; }
done

# tok/s printed on stderr by either program ("achieved tok/s: X"), or "-" if none.
tps() { sed -n 's/^achieved tok\/s: \([0-9.]*\).*/\1/p' "$1" | tail -n 1 | grep . || echo "-"; }
# best and median of a list of numbers ("-" entries ignored)
stats() { echo "$1" | tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g |
    awk '{ a[NR] = $1 } END { if (NR == 0) print "- -"; else printf "%.1f %.1f\n", a[NR], a[int((NR + 1) / 2)] }'; }

echo "anetrain sample vs llama2.c run.c: greedy, $STEPS positions, prompt \"$PROMPT\", $THREADS threads, $RUNS runs each"
[ "$have_runc" -eq 1 ] || echo "(run.c not found at $RUNC: set BENCH_RUNC to compare; showing ours only)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
ROWS=""
for m in $MODELS; do
    ours="" theirs="" same="-"
    for i in $(seq "$RUNS"); do
        "$BIN" sample --model "$DIR/$m.bin" --tokenizer "$TOK" --prompt "$PROMPT" --steps "$STEPS" --temperature 0 \
            --threads "$THREADS" --runc-text >"$W/ours.txt" 2>"$W/ours.err"
        ours="$ours $(tps "$W/ours.err")"
        if [ "$have_runc" -eq 1 ]; then
            OMP_NUM_THREADS=$THREADS "$RUNC" "$DIR/$m.bin" -z "$TOK" -t 0 -n "$STEPS" -i "$PROMPT" >"$W/runc.txt" 2>"$W/runc.err"
            theirs="$theirs $(tps "$W/runc.err")"
            if cmp -s "$W/ours.txt" "$W/runc.txt"; then [ "$same" = "no" ] || same=yes; else same=no; fi
        fi
    done
    ROWS="$ROWS$m $(stats "$ours") $(stats "$theirs") $same
"
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
echo
printf '%-12s %14s %14s %14s %14s %8s %10s\n' model "ours best" "ours median" "run.c best" "run.c median" "ratio" "same text"
printf '%s' "$ROWS" | while read -r m ob om rb rm same; do
    ratio=$(awk -v a="$ob" -v b="$rb" 'BEGIN { if (b + 0 > 0 && a + 0 > 0) printf "%.2fx", a / b; else print "-" }')
    printf '%-12s %14s %14s %14s %14s %8s %10s\n' "$m" "$ob" "$om" "$rb" "$rm" "$ratio" "$same"
done
echo "(tok/s; ratio = ours best / run.c best)"
