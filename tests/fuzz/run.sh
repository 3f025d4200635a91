#!/bin/sh
# Runs the libFuzzer harnesses built by `make fuzz` in BUILD/fuzz (default build-fuzz):
#   1. writes the seed corpora with the project's writers (make_seeds),
#   2. replays every input in tests/fuzz/regressions/<harness>/ (inputs that once crashed or
#      hung: each must now pass within FUZZ_TIMEOUT seconds),
#   3. fuzzes each harness for FUZZ_SECONDS seconds (0: runs the corpus once), FUZZ_TIMEOUT
#      seconds allowed per input, with tests/fuzz/dict/<harness>.dict when there is one. New
#      inputs go to BUILD/fuzz/corpus/<harness>/, crashes and hangs to BUILD/fuzz/artifacts/.
# Prints one line per replay and per run (exec count and time), and "N passed, N failed".
# FUZZ_ONLY="a b" limits the run to those harnesses.
BUILD=${1:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-20}
TIMEOUT=${FUZZ_TIMEOUT:-5}
cd "$(dirname "$0")/../.." || exit 2
F=$BUILD/fuzz
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }

if ! "$F/make_seeds" "$F/seeds" >"$F/make_seeds.log" 2>&1; then
    cat "$F/make_seeds.log"
    bad "make_seeds"
    echo "$passed passed, $failed failed"
    exit 1
fi
mkdir -p "$F/artifacts" "$F/logs"
# The harnesses write a few files per input: a memory file system when there is one is faster.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
# libFuzzer options shared by the replay and the runs; leaks are errors too.
OPTS="-timeout=$TIMEOUT -rss_limit_mb=2048 -malloc_limit_mb=2048 -detect_leaks=1"
names=${FUZZ_ONLY:-$(cd "$F" && ls fuzz_* | grep -v '[.]' | sed 's/^fuzz_//')}
for name in $names; do
    bin=$F/fuzz_$name
    [ -x "$bin" ] || { bad "$name: no harness binary $bin"; continue; }
    reg=tests/fuzz/regressions/$name
    if [ -d "$reg" ] && [ -n "$(ls "$reg")" ]; then
        n=$(ls "$reg" | wc -l)
        if "$bin" $OPTS "$reg"/* >"$F/logs/$name-regressions.log" 2>&1; then ok "$name: $n regression input(s) replayed"
        else
            bad "$name: a regression input fails again (log: $F/logs/$name-regressions.log)"
            grep -E "ERROR|SUMMARY|fuzz check failed|Running:" "$F/logs/$name-regressions.log" | tail -n 6 | sed 's/^/     | /'
        fi
    fi
    mkdir -p "$F/corpus/$name"
    dict=tests/fuzz/dict/$name.dict
    set -- $OPTS -print_final_stats=1 -artifact_prefix="$F/artifacts/$name-"
    [ -f "$dict" ] && set -- "$@" -dict="$dict"
    if [ "$SECONDS_EACH" -gt 0 ]; then set -- "$@" -max_total_time="$SECONDS_EACH"; else set -- "$@" -runs=0; fi
    log=$F/logs/$name.log
    if "$bin" "$@" "$F/corpus/$name" "$F/seeds/$name" >"$log" 2>&1; then
        execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
        secs=$(grep -E '^stat::total_time_in_seconds|Done [0-9]+ runs in' "$log" | tail -n 1 | grep -oE '[0-9]+' | tail -n 1)
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1)
        ok "$name: ${execs:-?} execs in ${SECONDS_EACH}s, ${cov:-cov: ?}, corpus $(ls "$F/corpus/$name" | wc -l) + $(ls "$F/seeds/$name" | wc -l) seeds"
    else
        bad "$name: crash, hang or leak (log: $log)"
        grep -E "ERROR|SUMMARY|fuzz check failed|Test unit written|timeout" "$log" | head -n 8 | sed 's/^/     | /'
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
