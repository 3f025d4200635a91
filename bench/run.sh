#!/bin/sh
# run.sh BUILD_DIR — `make bench`: anetrain's CPU training step next to PyTorch's, in one run.
#
# Measures the machine's sgemm peak, then for each model runs our bench_train and
# bench/torch_step.py back to back (same shapes, threads and step), measures the peak again
# (a busy machine shows as two different peaks, and is called out), and ends with a
# comparison table. Without Debian's PyTorch (/usr/bin/python3 with python3-torch) it says
# so and prints only our rows.
#
# Environment knobs (defaults in brackets):
#   BENCH_MODELS   presets to run                         [stories15m stories110m]
#   BENCH_BATCH    sequences per step                     [1]
#   BENCH_SEQ      tokens per sequence                    [256]
#   BENCH_STEPS    timed steps per model (median shown)   [5]
#   BENCH_ROUNDS   rounds of ours-then-torch per model    [3]
#   BENCH_THREADS  threads for BLAS, our pool and torch   [all cores]
#   BENCH_PYTHON   interpreter for torch_step.py          [/usr/bin/python3]
#   BENCH_FT_MODEL model of the fine-tuning comparison    [stories110m]
#   BENCH_FT_REPS  rounds of it (fresh processes)         [3]
#   BENCH_DP_MODELS   models of the data-parallel section    [stories15m]
#   BENCH_DP_STEPS    steps per data-parallel run            [4]
#
# Where the time of a step goes: make BUILD/bench/profile_step, then run it (see its --help).
set -eu

BUILD=${1:?usage: sh bench/run.sh BUILD_DIR}
HERE=$(dirname "$0")
BIN=$BUILD/bench/bench_train
MODELS=${BENCH_MODELS:-stories15m stories110m}
B=${BENCH_BATCH:-1}
T=${BENCH_SEQ:-256}
STEPS=${BENCH_STEPS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
PY=${BENCH_PYTHON:-/usr/bin/python3}

if [ ! -x "$BIN" ]; then
    echo "run.sh: $BIN not found: build it first (make BUILD=$BUILD $BIN)" >&2
    exit 1
fi

ROWS=$(mktemp)
FTROWS=$(mktemp)
trap 'rm -f "$ROWS" "$FTROWS"' EXIT INT TERM

have_torch=0
torch_version=
if [ -x "$PY" ] && torch_version=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
    have_torch=1
fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo "machine    ${cpu:-unknown cpu}, $THREADS threads; load average$(uptime | sed 's/.*load average//')"
if [ $have_torch = 1 ]; then
    echo "peer       PyTorch $torch_version ($PY bench/torch_step.py)"
else
    echo "peer       PyTorch not found ($PY cannot import torch; apt-get install python3-torch): our rows only"
fi

peak_line=$("$BIN" --peak --peak-reps 5 --threads "$THREADS")
echo "$peak_line"
PEAK=$(echo "$peak_line" | awk '/^sgemm peak/ { print $3 }')
echo

# COMMON is split into words on purpose when used below.
COMMON="--batch $B --seq $T --steps $STEPS --threads $THREADS --no-header"
printf '%-8s %-12s %-7s %5s %9s %9s %8s %8s %6s %10s %8s\n' impl model BxT steps ms/step "best ms" tok/s \
    GFLOP/s %peak "fwd+bwd ms" "optim ms"
echo "($ROUNDS rounds; each row is one run's median of $STEPS steps)"
# Rounds alternate ours and torch, so a slow minute of the machine hits both (it drifts by
# 15-20% from minute to minute); the comparison takes the median over rounds.
r=0
while [ "$r" -lt "$ROUNDS" ]; do
    # shellcheck disable=SC2086
    for m in $MODELS; do
        "$BIN" --model "$m" --peak-gflops "$PEAK" $COMMON | tee -a "$ROWS"
        if [ $have_torch = 1 ]; then
            "$PY" "$HERE/torch_step.py" --model "$m" --peak-gflops "$PEAK" $COMMON | tee -a "$ROWS"
        fi
    done
    r=$((r + 1))
done

echo
# The peak again: other load on the machine during either measurement shows as a difference.
# The comparison below divides by the higher of the two, the machine's real capability.
PEAK2=$("$BIN" --peak --peak-reps 5 --threads "$THREADS" | awk '/^sgemm peak/ { print $3 }')
echo "sgemm peak again after the runs: $PEAK2 GFLOP/s; load average$(uptime | sed 's/.*load average//')"
awk -v a="$PEAK" -v b="$PEAK2" 'BEGIN {
    if (a < 0.9 * b || b < 0.9 * a)
        printf "warning: the two peaks differ by more than 10%%: the machine was busy, so the timings are noisy;\n" \
               "         the rows above used %s, the comparison uses %s GFLOP/s\n", a, (a > b ? a : b) }'
echo

# Comparison: one line per model from the rows above (columns: 5 ms/step, 6 best ms, 8 GFLOP/s):
# medians over the rounds of each run's median step, and the fastest step of all rounds ("best
# compares the fastest steps: on a shared machine it is the steadier of the two ratios).
awk -v models="$MODELS" -v p1="$PEAK" -v p2="$PEAK2" '
    function med(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $1 == "anetrain" { o[$2] = o[$2] " " $5; g[$2] = g[$2] " " $8
                       if (!($2 in ours_best) || $6 < ours_best[$2]) ours_best[$2] = $6 }
    $1 == "torch"    { tl[$2] = tl[$2] " " $5
                       if (!($2 in torch_best) || $6 < torch_best[$2]) torch_best[$2] = $6 }
    END {
        for (m in o) { ours[m] = med(o[m]); gflops[m] = med(g[m]) }
        for (m in tl) torch[m] = med(tl[m])
        peak = p1 > p2 ? p1 : p2
        printf "%-12s %13s %14s %8s %13s %11s\n", "model", "ours ms/step", "torch ms/step", "speedup", "best vs best",
               "ours %peak"
        n = split(models, list, " ")
        for (i = 1; i <= n; i++) {
            m = list[i]
            if (!(m in ours)) { printf "%-12s %13s\n", m, "(failed: see above)"; continue }
            pct = sprintf("%.1f%%", 100 * gflops[m] / peak)
            if (m in torch)
                printf "%-12s %13.1f %14.1f %7.2fx %12.2fx %11s\n", m, ours[m], torch[m], torch[m] / ours[m],
                       torch_best[m] / ours_best[m], pct
            else printf "%-12s %13.1f %14s %8s %13s %11s\n", m, ours[m], "-", "-", "-", pct
        }
    }' "$ROWS"

# Fine-tuning (issue #6): full fine-tuning vs LoRA rank 8 (q,k,v,o) vs LoRA over an int8 base,
# on the CPU backend. Each configuration runs in a fresh process (so ru_maxrss is its own peak
# RSS), the three alternate, BENCH_FT_REPS rounds, and the medians are shown.
FT_MODEL=${BENCH_FT_MODEL:-stories110m}
FT_REPS=${BENCH_FT_REPS:-3}
echo
echo "Fine-tuning $FT_MODEL on the CPU backend, ${B}x$T, $THREADS threads: full vs LoRA r8 (q,k,v,o) vs LoRA r8 over"
echo "an int8 base; a fresh process per run, $FT_REPS alternating rounds, medians (peak RSS: ru_maxrss, which"
echo "counts the fp32 weights an int8 run quantizes and releases; RSS after: resident at the end, the steady state):"
r=0
while [ "$r" -lt "$FT_REPS" ]; do
    for extra in "" "--lora 8" "--lora 8 --int8"; do
        # shellcheck disable=SC2086
        "$BIN" --model "$FT_MODEL" --peak-gflops "$PEAK" --rss $COMMON $extra >> "$FTROWS"
    done
    r=$((r + 1))
done
awk '
    function med(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { if (!($1 in ms)) order[++k] = $1
      ms[$1] = ms[$1] " " $5; tok[$1] = tok[$1] " " $7; rss[$1] = rss[$1] " " $12; now[$1] = now[$1] " " $13 }
    END {
        printf "%-14s %10s %8s %14s %16s %6s\n", "configuration", "ms/step", "tok/s", "peak RSS MiB", "RSS after MiB",
               "runs"
        for (i = 1; i <= k; i++) {
            c = order[i]
            printf "%-14s %10.1f %8.0f %14.1f %16.1f %6d\n", c == "anetrain" ? "full" : c, med(ms[c]), med(tok[c]),
                   med(rss[c]), med(now[c]), split(ms[c], tmp, " ")
        }
    }' "$FTROWS"

# The ANE backend on the emulated device, next to the CPU backend, with its efficiency report.
echo
echo "ANE backend on the emulated device (same shapes; the emulator runs the device's fp16 work on the CPU):"
"$BUILD/bench/bench_ane" --model "$(echo "$MODELS" | tr ' ' ,)" --batch "$B" --seq "$T" --steps "$STEPS" \
    --threads "$THREADS"

# The LoRA step's efficiency report (issue #6): rank 8 on q,k,v,o over the frozen base, fp32 and int8.
echo
echo "LoRA r8 (q,k,v,o) fine-tuning steps of $FT_MODEL, emulated ANE over a frozen base vs the CPU's frozen-base backend:"
"$BUILD/bench/bench_ane" --model "$FT_MODEL" --batch "$B" --seq "$T" --steps "$STEPS" --threads "$THREADS" \
    --lora-rank 8 --lora-targets q,k,v,o
"$BUILD/bench/bench_ane" --model "$FT_MODEL" --batch "$B" --seq "$T" --steps "$STEPS" --threads "$THREADS" \
    --lora-rank 8 --lora-targets q,k,v,o --int8

# Data parallel (issue #12): `anetrain train` at -np 1 and -np 2 (mpirun) on this machine, one
# thread a process, tokens/s (the global batch over the median step of the metrics log, the first
# step left out) and the reductions' mean ms/step (the summary's comm line); then, on paper, the
# gradient exchange over a real link between Macs.
echo
sh "$HERE/bench_dp.sh" "$BUILD"

# Text generation (KV cache) tokens/s, next to llama2.c's run.c when BENCH_RUNC names one.
echo
sh "$HERE/bench_sample.sh" "$BUILD"
