#!/bin/sh
# bench_dp.sh BUILD_DIR — data-parallel training (issue #12), part of `make bench` (bench/run.sh).
#
# Measured on this machine: `anetrain train` (cpu backend, one thread a process, BENCH_BATCH x
# BENCH_SEQ a process and step) alone and under `mpirun -np 2`, for each of BENCH_DP_MODELS:
# tokens/s of the global batch (tokens a step over the median step time of the metrics log, the
# first step, which touches every page, left out) and the reductions' mean ms/step (the run's
# "comm" summary line: the gradient sum and the loss gather, the first step included). The two
# processes share this machine's cores and memory, so -np 2 shows the cost of the exchange
# rather than a speedup a second Mac would bring. bench_allreduce then times the exchange alone
# (dist_sum_f32 and dist_sum_bf16 of the model's gradient size, after a barrier; stories110m's
# too when it is not among the models). Without mpirun, or with an anetrain built
# without MPI, it prints one line saying so and measures nothing.
#
# On paper: the gradient exchange between Macs, printed from the formula of a ring allreduce
# (each process sends and receives 2(N-1)/N x the gradient bytes; dist_sum_f32 moves the same),
#     t_comm = 2 (N-1)/N x bytes / effective link bandwidth,
# for N = 2 and 4 over 10 GbE (about 1.1 GB/s effective) and Thunderbolt 4 IP networking (about
# 2.5 to 3 GB/s effective), for stories110m's full gradients and LoRA r8 adapters. Nothing is
# overlapped yet: a step takes its compute time (the same as one Mac's at the same per-process
# batch) plus t_comm.
#
# Environment knobs (defaults in brackets): BENCH_DP_MODELS [stories15m; stories110m adds about a
# minute and a half on a 2-core machine],
# BENCH_DP_STEPS [4], BENCH_BATCH [1], BENCH_SEQ [256], BENCH_PYTHON [python3: for the token file].
set -eu

BUILD=${1:?usage: sh bench/bench_dp.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(cd "$BUILD" && pwd)/anetrain
ALLREDUCE=$(cd "$BUILD" && pwd)/bench/bench_allreduce
MODELS=${BENCH_DP_MODELS:-stories15m}
STEPS=${BENCH_DP_STEPS:-4}
B=${BENCH_BATCH:-1}
T=${BENCH_SEQ:-256}
PY=${BENCH_PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || PY=python3

echo "Data parallel (MPI): anetrain train on the cpu backend, ${B}x$T a process, 1 thread a process, $STEPS steps:"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
MPI="mpirun --allow-run-as-root --oversubscribe -np 2"
measured=1
if ! command -v mpirun >/dev/null 2>&1; then
    echo "  skipped: no mpirun (apt-get install openmpi-bin libopenmpi-dev, or brew install open-mpi; then make)"
    measured=0
fi
if [ $measured = 1 ]; then
    "$PY" "$HERE/../tests/make_tokens.py" "$TMP/tok.bin" pattern 400000 32000 1
    if $MPI "$BIN" train --model tiny --vocab 32000 --data "$TMP/tok.bin" --steps 1 --batch 1 --seq 16 --threads 1 \
        --val-frac 0 --eval-every 0 --out "$TMP/probe/model.ckpt" >"$TMP/probe.out" 2>&1; then :
    else
        if grep -q "built without MPI" "$TMP/probe.out"; then
            echo "  skipped: $BIN was built without MPI (install Open MPI, then make)"
        else
            echo "  skipped: mpirun -np 2 failed: $(tail -n 1 "$TMP/probe.out")"
        fi
        measured=0
    fi
fi
if [ $measured = 1 ]; then
    printf '  %-12s %4s %12s %12s %10s %16s %14s\n' model np "tokens/step" "median ms" "tok/s" "comm ms/step" "MB/step fp32"
    for m in $MODELS; do
        for np in 1 2; do
            out="$TMP/$m-$np"
            set -- "$BIN" train --model "$m" --data "$TMP/tok.bin" --steps "$STEPS" --batch "$B" --seq "$T" \
                --threads 1 --val-frac 0 --eval-every 0 --save-every 0 --warmup 0 --print-every 1000 \
                --out "$out/model.ckpt"
            if [ "$np" = 1 ]; then "$@" >"$out.out" 2>&1 || { echo "  $m -np 1 failed: $(tail -n 1 "$out.out")"; continue; }
            else $MPI "$@" </dev/null >"$out.out" 2>&1 || { echo "  $m -np 2 failed: $(tail -n 1 "$out.out")"; continue; }; fi
            comm=$(sed -n -E 's/^comm +([0-9.]+) ms\/step.*/\1/p' "$out.out")
            mb=$(sed -n -E 's/^ranks .*; ([0-9.]+) MB of fp32 gradients.*/\1/p' "$out.out")
            sed -n -E 's/.*"ms": ([0-9.]+).*/\1/p' "$out/metrics.jsonl" | tail -n +2 |
                awk -v m="$m" -v np="$np" -v tok="$((np * B * T))" -v comm="${comm:--}" -v mb="${mb:--}" '
                    { v[++n] = $1 }
                    END {
                        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
                        med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
                        printf "  %-12s %4d %12d %12.0f %10.0f %16s %14s\n", m, np, tok, med, (med > 0 ? tok / med * 1000 : 0),
                               comm, mb }'
            rm -rf "$out"
            if [ "$np" = 2 ] && [ -n "$mb" ]; then echo "$m $mb" >>"$TMP/sizes"; fi
        done
    done
    echo "  (two processes on one machine share its cores and memory bus: this is the exchange's cost, not a"
    echo "  second Mac's speedup. comm is the mean over every step, the first one included, and counts the"
    echo "  wait for the slower process too; the exchange alone, after a barrier, with bench_allreduce:)"
    if [ -x "$ALLREDUCE" ] && [ -s "$TMP/sizes" ]; then
        while read -r m mb; do
            floats=$(awk -v mb="$mb" 'BEGIN { printf "%d", mb * 1e6 / 4 }')
            $MPI "$ALLREDUCE" "$floats" 3 </dev/null 2>&1 | sed "s/^/  $m: /"
        done <"$TMP/sizes"
        # stories110m's exchange (109,530,624 fp32 gradients, see below) even when it does not train here
        if ! grep -q '^stories110m ' "$TMP/sizes"; then
            $MPI "$ALLREDUCE" 109530624 3 </dev/null 2>&1 | sed "s/^/  stories110m: /"
        fi
    else
        echo "  ($ALLREDUCE not built: make BUILD=$BUILD $ALLREDUCE)"
    fi
fi

# On paper. stories110m: dim 768, hidden 2048, 12 layers, vocab 32000, tied embeddings:
# 32000*768 + 12*(4*768^2 + 3*768*2048 + 2*768) + 768 = 109,530,624 parameters. LoRA r8 adds
# r*(in+out) per adapted matrix: q,k,v,o (768x768 each) 4*8*1536 = 49,152 a layer; all seven
# (gate, up 768->2048, down 2048->768 too) 49,152 + 3*8*2816 = 116,736 a layer.
echo
echo "On paper: gradient exchange per step between Macs, ring allreduce t = 2(N-1)/N x bytes / bandwidth"
echo "(10 GbE: 1.1 GB/s effective; Thunderbolt 4 IP: 2.5-3 GB/s effective; nothing overlapped yet, so a"
echo "step takes one Mac's compute time at the same per-process batch plus t):"
awk 'BEGIN {
    full = 32000 * 768 + 12 * (4 * 768 * 768 + 3 * 768 * 2048 + 2 * 768) + 768
    n_rows = split("stories110m full, fp32|stories110m full, --grad-comm bf16|LoRA r8 q,k,v,o, fp32|LoRA r8 all seven, fp32", name, "|")
    bytes[1] = full * 4; bytes[2] = full * 2; bytes[3] = 12 * 49152 * 4; bytes[4] = 12 * 116736 * 4
    printf "  %-36s %10s %3s %14s %22s\n", "gradients", "MB/step", "N", "10 GbE ms", "Thunderbolt 4 ms"
    for (i = 1; i <= n_rows; i++)
        for (N = 2; N <= 4; N += 2) {
            moved = 2 * (N - 1) / N * bytes[i]
            printf "  %-36s %10.1f %3d %14.1f %14.1f - %5.1f\n", name[i], bytes[i] / 1e6, N, moved / 1.1e9 * 1e3,
                   moved / 3e9 * 1e3, moved / 2.5e9 * 1e3
        }
    printf "  (the issue gives about 440 MB for stories110m full and about 4.5 MB for LoRA r8: the full figure\n"
    printf "  is the one above; LoRA r8 is 2.4 MB on q,k,v,o and 5.6 MB on all seven matrices of stories110m)\n"
}'
