# cli_lib.sh — shared by the shell tests (test_cli.sh, test_generate.sh, test_finetune.sh):
# a scratch directory (removed on exit, and the working directory), pass/fail counters and
# the expect helpers. Source it after computing any path relative to the script.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 2
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -f "$W/err" ] && sed 's/^/     | /' "$W/err" | head -n 8; }

# expect_fail NAME PATTERN CMD...: CMD must exit non-zero and print PATTERN (grep -E) on stderr.
expect_fail() {
    name=$1 pattern=$2
    shift 2
    if "$@" >"$W/out" 2>"$W/err"; then bad "$name (exit 0)"; return; fi
    if grep -Eq -- "$pattern" "$W/err"; then ok "$name"; else bad "$name (message lacks: $pattern)"; fi
}

# expect_ok NAME CMD...: CMD must exit 0 (its output stays in $W/out and $W/err).
expect_ok() {
    name=$1
    shift
    if "$@" >"$W/out" 2>"$W/err"; then ok "$name"; else bad "$name (exit $?)"; tail -n 5 "$W/out"; fi
}

# json_field FILE KEY: the KEY value of the last line of a JSON-lines file that has it.
json_field() { grep "\"$2\"" "$1" | tail -n 1 | sed -E "s/.*\"$2\": ([^,}]*).*/\1/"; }

