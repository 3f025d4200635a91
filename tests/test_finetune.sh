#!/bin/sh
# End-to-end tests of `anetrain finetune` (LoRA) and of adapters in `anetrain convert`:
# a small model trained on one kind of text is fine-tuned on another kind; the validation
# loss on the new domain must fall; the adapter is a PEFT directory; merging it (convert
# --adapter) gives a model that scores what the fine-tune reported, the same from the
# llama2.c-style base (interleaved RoPE) and from its HF export (rotate-half), and as eval
# --adapter (unmerged); eval --int8 scores near fp32; a fine-tune with LoRA dropout over an int8
# base learns; the emulated ANE backend fine-tunes too (also with dropout); bad flags are
# refused with a reason;
# --resume (after Ctrl-C, and after a planned stop over an int8 base and on the emulated ANE)
# repeats the uninterrupted run's losses bit for bit, and refuses states that are not this run.
# Usage: sh tests/test_finetune.sh BUILD_DIR   (ends with "N passed, N failed")
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/anetrain
. "$(dirname "$0")/cli_lib.sh"
# eval_loss MODEL TOKENS: the loss `anetrain eval --json` prints
eval_loss() { "$BIN" eval --model "$1" --data "$2" --seq 64 --threads 2 --json 2>/dev/null | sed -E 's/.*"loss": ([^,]*),.*/\1/'; }
# eval_loss_with TOKENS FLAGS...: the same with any flags (--model, --adapter, --int8)
eval_loss_with() {
    tokens=$1
    shift
    "$BIN" eval --data "$tokens" --seq 64 --threads 2 --json "$@" 2>/dev/null | sed -E 's/.*"loss": ([^,]*),.*/\1/'
}
lt() { awk "BEGIN{exit !($1 < $2)}"; }

if ! "$BIN" finetune --help >"$W/out" 2>&1 || ! grep -q "usage: anetrain finetune" "$W/out"; then
    echo "FAIL $BIN has no finetune command"
    echo "0 passed, 1 failed"
    exit 1
fi
ok "help finetune"

# Two domains of synthetic English: A (animals at home) trains the base, B (ships and weather)
# is fine-tuned on. Same alphabet, different words and sentence shapes.
"$PY" - <<'EOF' || exit 2
import random
rng = random.Random(7)
def write(path, subjects, verbs, objects, tails, n):
    with open(path, "w") as f:
        for _ in range(n):
            s = " ".join("%s %s %s%s" % (rng.choice(subjects), rng.choice(verbs), rng.choice(objects), rng.choice(tails))
                         for _ in range(rng.randrange(2, 5)))
            f.write(s[0].upper() + s[1:] + "\n\n")
write("a.txt", ["the cat", "a dog", "the little bird", "my old horse", "the kitten"],
      ["sat on", "looked at", "slept near", "played with", "ran around"],
      ["the mat", "a red ball", "the warm fire", "the garden", "her bowl"], [".", ", and", " again.", " all day."], 3000)
write("b.txt", ["the captain", "our ship", "a storm", "the north wind", "every sailor"],
      ["steered toward", "fought against", "waited for", "drifted past", "shouted at"],
      ["the harbour", "grey waves", "the lighthouse", "a frozen coast", "the mainsail"],
      [";", " at dawn.", " through the night.", "!"], 1200)
EOF
expect_ok "tokenizer for both domains" "$BIN" tokenizer train --vocab 320 a.txt b.txt -o tok.json
expect_ok "tokenize domain A" "$BIN" tokenize --tokenizer tok.json a.txt -o a.bin
expect_ok "train the base on A" "$BIN" train --model tiny --vocab 320 --data a.bin --steps 150 --batch 8 --seq 64 \
    --lr 3e-3 --eval-every 0 --threads 2 --print-every 1000 --out base/model.ckpt
expect_ok "HF export of the base" "$BIN" convert base/model.ckpt base-hf
cp tok.json base-hf/tokenizer.json

# ---- the user story: one command, tokenizer found in the HF directory
expect_ok "finetune on B" "$BIN" finetune --init base-hf --data b.txt --steps 60 --batch 8 --seq 64 --lr 3e-3 \
    --eval-every 20 --threads 2 --out ft
cp "$W/out" ft.out
before=$(sed -nE 's/.*val_loss ([0-9.]+) -> ([0-9.]+).*/\1/p' ft.out)
after=$(sed -nE 's/.*val_loss ([0-9.]+) -> ([0-9.]+).*/\2/p' ft.out)
if [ -n "$after" ] && lt "$after" "$before - 0.3"; then ok "validation loss on B falls ($before -> $after)"
else bad "validation loss on B falls ('$before' -> '$after')"; cat ft.out; fi
if [ -s ft/adapter_model.safetensors ] && [ -s ft/adapter_config.json ] && [ -s ft/tokens.bin ]; then ok "adapter files"
else bad "adapter files"; ls -l ft; fi
if grep -q "\"peft_type\":[[:space:]]*\"LORA\"" ft/adapter_config.json && grep -q "\"task_type\":[[:space:]]*\"CAUSAL_LM\"" ft/adapter_config.json &&
    grep -q '"q_proj"' ft/adapter_config.json && grep -q "\"r\":[[:space:]]*8," ft/adapter_config.json; then ok "PEFT adapter_config.json"
else bad "PEFT adapter_config.json"; cat ft/adapter_config.json; fi
if head -c 300 ft/adapter_model.safetensors | grep -q 'base_model.model.model.layers.0.self_attn.[a-z]_proj.lora_A.weight'; then
    ok "PEFT tensor names"; else bad "PEFT tensor names"; fi
if head -n 1 ft/metrics.jsonl | grep -q '^{"step": 0, "val_loss": ' && [ "$(grep -c '"val_loss"' ft/metrics.jsonl)" -eq 4 ] &&
    [ "$(wc -l < ft/metrics.jsonl)" -eq 61 ]; then ok "metrics log (val_loss before, every 20 steps)"
else bad "metrics log"; head -n 3 ft/metrics.jsonl; fi
if grep -Eq "trainable parameters" ft.out && grep -Eq "AdamW state" ft.out; then ok "report of trainable parameters and memory"
else bad "report of trainable parameters and memory"; fi

# ---- merging: the merged model scores on B what the base + adapter scored, from both RoPE styles
expect_ok "convert --adapter (checkpoint base, interleaved)" "$BIN" convert base/model.ckpt merged.bin --adapter ft
expect_ok "convert --adapter (HF base, rotate-half)" "$BIN" convert base-hf merged-hf --adapter ft
l_base=$(eval_loss base/model.ckpt ft/tokens.bin)
l_bin=$(eval_loss merged.bin ft/tokens.bin)
l_hf=$(eval_loss merged-hf ft/tokens.bin)
if [ -n "$l_bin" ] && lt "$l_bin" "$l_base - 0.3"; then ok "merged model is better on B ($l_base -> $l_bin)"
else bad "merged model is better on B ('$l_base' -> '$l_bin')"; fi
if [ -n "$l_hf" ] && awk "BEGIN{d=$l_bin-$l_hf; if(d<0)d=-d; exit !(d < 1e-5*$l_bin)}"; then
    ok "merged from either RoPE style scores the same ($l_bin, $l_hf)"
else bad "merged from either RoPE style scores the same ('$l_bin', '$l_hf')"; fi
# eval --adapter runs the adapter unmerged over the base: the merged model's score
l_adapter=$(eval_loss_with ft/tokens.bin --model base-hf --adapter ft)
if [ -n "$l_adapter" ] && awk "BEGIN{d=$l_adapter-$l_hf; if(d<0)d=-d; exit !(d < 1e-5*$l_hf)}"; then
    ok "eval --adapter (unmerged) scores as the merged model ($l_adapter, $l_hf)"
else bad "eval --adapter (unmerged) scores as the merged model ('$l_adapter', '$l_hf')"; fi
# eval --int8: the int8 model's loss, close to fp32's, and the memory it saves
expect_ok "eval --int8" "$BIN" eval --model base/model.ckpt --data ft/tokens.bin --seq 64 --threads 2 --int8
l_int8=$(eval_loss_with ft/tokens.bin --model base/model.ckpt --int8)
if grep -q "int8 .*MiB saved" "$W/out" && [ -n "$l_int8" ] && awk "BEGIN{d=$l_int8-$l_base; if(d<0)d=-d; exit !(d > 0 && d < 0.02*$l_base)}"; then
    ok "int8 loss $l_int8 near fp32 $l_base, memory reported"
else bad "int8 loss '$l_int8' near fp32 '$l_base', memory reported"; cat "$W/out"; fi
# eval --int8 on the emulated ANE (int8 values staged, row scales in the kernels): the CPU's int8 loss
l_int8_ane=$(eval_loss_with ft/tokens.bin --model base/model.ckpt --int8 --backend ane --device emu)
if [ -n "$l_int8_ane" ] && awk "BEGIN{d=$l_int8_ane-$l_int8; if(d<0)d=-d; exit !(d < 2e-3*$l_int8)}"; then
    ok "eval --int8 on ane ($l_int8_ane) matches the cpu's int8 loss ($l_int8)"
else bad "eval --int8 on ane ('$l_int8_ane') matches the cpu's int8 loss ('$l_int8')"; cat "$W/out"; fi
expect_fail "convert --adapter: not an adapter" "adapter_config.json" "$BIN" convert base-hf x-hf --adapter base-hf

# ---- llama2.c-style base without a tokenizer, other targets, the emulated ANE backend
expect_fail "a .ckpt base needs --tokenizer" "--tokenizer: required" \
    "$BIN" finetune --init base/model.ckpt --data b.txt --steps 2 --out ft-x
expect_ok "finetune --backend ane (emulated)" "$BIN" finetune --init base/model.ckpt --tokenizer tok.json --data b.txt \
    --steps 12 --batch 4 --seq 64 --lr 3e-3 --lora-targets all --lora-rank 4 --eval-every 0 --eval-batches 4 \
    --backend ane --device emu --threads 2 --out ft-ane
cp "$W/out" ane.out
b2=$(sed -nE 's/.*val_loss ([0-9.]+) -> ([0-9.]+).*/\1/p' ane.out)
a2=$(sed -nE 's/.*val_loss ([0-9.]+) -> ([0-9.]+).*/\2/p' ane.out)
if [ -n "$a2" ] && lt "$a2" "$b2"; then ok "ANE fine-tune lowers the validation loss ($b2 -> $a2)"
else bad "ANE fine-tune lowers the validation loss ('$b2' -> '$a2')"; cat ane.out; fi
if grep -q '"gate_proj"' ft-ane/adapter_config.json && grep -q '"loss_scale"' ft-ane/metrics.jsonl; then
    ok "all targets; loss scaling logged on ane"; else bad "all targets; loss scaling logged on ane"; fi
expect_ok "finetune --lora-dropout 0.1 --backend ane (emulated)" "$BIN" finetune --init base/model.ckpt --tokenizer tok.json \
    --data b.txt --steps 12 --batch 4 --seq 64 --lr 3e-3 --lora-targets all --lora-rank 4 --eval-every 0 --eval-batches 4 \
    --lora-dropout 0.1 --backend ane --device emu --threads 2 --out ft-ane-drop
b4=$(sed -nE 's/.*val_loss ([0-9.]+) -> ([0-9.]+).*/\1/p' "$W/out")
a4=$(sed -nE 's/.*val_loss ([0-9.]+) -> ([0-9.]+).*/\2/p' "$W/out")
if [ -n "$a4" ] && lt "$a4" "$b4" && grep -q "^lora    dropout 0.1" "$W/out"; then
    ok "ANE fine-tune with dropout lowers the validation loss ($b4 -> $a4)"
else bad "ANE fine-tune with dropout lowers the validation loss ('$b4' -> '$a4')"; cat "$W/out"; fi

# ---- LoRA dropout and an int8 base (cpu: unmerged)
expect_ok "finetune --lora-dropout 0.1 --int8" "$BIN" finetune --init base-hf --data b.txt --steps 40 --batch 8 --seq 64 \
    --lr 3e-3 --eval-every 0 --threads 2 --lora-dropout 0.1 --int8 --out ft-drop
cp "$W/out" drop.out
b3=$(sed -nE 's/.*val_loss ([0-9.]+) -> ([0-9.]+).*/\1/p' drop.out)
a3=$(sed -nE 's/.*val_loss ([0-9.]+) -> ([0-9.]+).*/\2/p' drop.out)
if [ -n "$a3" ] && lt "$a3" "$b3 - 0.3" && grep -q "dropout 0.1" drop.out && grep -q "^int8 .*released" drop.out; then
    ok "dropout + int8 fine-tune lowers the validation loss ($b3 -> $a3)"
else bad "dropout + int8 fine-tune lowers the validation loss ('$b3' -> '$a3')"; cat drop.out; fi
if grep -q '"lora_dropout":[[:space:]]*0.1,' ft-drop/adapter_config.json; then ok "lora_dropout in adapter_config.json"
else bad "lora_dropout in adapter_config.json"; cat ft-drop/adapter_config.json; fi

# ---- --resume: Ctrl-C mid-run (cpu, dropout 0.1, cosine schedule), then the same command plus
# --resume: the losses of the uninterrupted run, bit for bit, and the same adapter
losses() { grep -o '"loss": [^,]*' "$1"; }
RES="--init base-hf --data b.txt --batch 4 --seq 32 --lr 2e-3 --eval-every 0 --eval-batches 2 --threads 2 --print-every 1000 --save-every 0 --steps 800"
expect_ok "uninterrupted fine-tune (dropout 0.1)" "$BIN" finetune $RES --lora-dropout 0.1 --out res-full
"$BIN" finetune $RES --lora-dropout 0.1 --out res-sig >"$W/out" 2>"$W/err" &
pid=$!
i=0
while [ "$i" -lt 400 ] && [ "$(cat res-sig/metrics.jsonl 2>/dev/null | wc -l)" -lt 30 ]; do sleep 0.05; i=$((i + 1)); done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
n=$(wc -l < res-sig/metrics.jsonl)
if [ "$rc" -eq 130 ] && [ "$n" -lt 801 ] && grep -q "training state at step .*continue with the same command plus --resume" "$W/out" &&
    [ -s res-sig/lora_state.ckpt ] && [ -s res-sig/adapter_model.safetensors ]; then
    ok "Ctrl-C saves the adapter and the training state, exits 130 (at step $((n - 1)))"
else bad "Ctrl-C saves the adapter and the training state, exits 130 (rc $rc, $n log lines)"; cat "$W/out"; fi
# the dropout is not repeated: --resume takes it (and the rest of the LoRA config) from the state
expect_ok "finetune --resume after Ctrl-C" "$BIN" finetune $RES --out res-sig --resume
if grep -q "^resume  res-sig/lora_state.ckpt at step $((n - 1))" "$W/out" && grep -q "^lora    dropout 0.1" "$W/out"; then
    ok "resumed at the saved step with the saved dropout"; else bad "resumed at the saved step with the saved dropout"; cat "$W/out"; fi
if [ "$(losses res-full/metrics.jsonl)" = "$(losses res-sig/metrics.jsonl)" ] && [ "$(wc -l < res-sig/metrics.jsonl)" -eq 801 ]; then
    ok "Ctrl-C resume is bit-exact (800 losses)"
else bad "Ctrl-C resume is bit-exact"; diff res-full/metrics.jsonl res-sig/metrics.jsonl | head -n 4; fi
if cmp -s res-full/adapter_model.safetensors res-sig/adapter_model.safetensors && cmp -s res-full/lora_state.ckpt res-sig/lora_state.ckpt; then
    ok "the same adapter and training state as the uninterrupted run"; else bad "the same adapter and training state"; fi

# planned stop and --resume with more steps (constant lr: --steps does not change the schedule), over
# an int8 base with dropout; --int8 and --lora-dropout left out on resume
CONST="--init base-hf --data b.txt --batch 4 --seq 32 --lr 2e-3 --min-lr 2e-3 --warmup 0 --eval-every 0 --eval-batches 2 --threads 2 --print-every 1000 --lora-targets all --lora-rank 4"
expect_ok "int8 fine-tune, 40 steps" "$BIN" finetune $CONST --int8 --lora-dropout 0.05 --steps 40 --out res-i8-full
expect_ok "int8 fine-tune, 15 steps" "$BIN" finetune $CONST --int8 --lora-dropout 0.05 --steps 15 --out res-i8
expect_ok "int8 fine-tune --resume to 40 steps" "$BIN" finetune $CONST --steps 40 --out res-i8 --resume
if grep -q "^int8 " "$W/out" && [ "$(losses res-i8-full/metrics.jsonl)" = "$(losses res-i8/metrics.jsonl)" ]; then
    ok "int8 + dropout resume is bit-exact"
else bad "int8 + dropout resume is bit-exact"; diff res-i8-full/metrics.jsonl res-i8/metrics.jsonl | head -n 4; fi
# the emulated ANE (fp16, dynamic loss scale, its state saved)
ANE_RES="$CONST --backend ane --device emu"
expect_ok "ane fine-tune, 8 steps" "$BIN" finetune $ANE_RES --steps 8 --out res-ane-full
expect_ok "ane fine-tune, 3 steps" "$BIN" finetune $ANE_RES --steps 3 --out res-ane
expect_ok "ane fine-tune --resume to 8 steps" "$BIN" finetune $ANE_RES --steps 8 --out res-ane --resume
if [ "$(losses res-ane-full/metrics.jsonl)" = "$(losses res-ane/metrics.jsonl)" ] &&
    [ "$(grep -o '"loss_scale": [^,]*' res-ane-full/metrics.jsonl)" = "$(grep -o '"loss_scale": [^,]*' res-ane/metrics.jsonl)" ]; then
    ok "ane resume is bit-exact (losses and loss scales)"
else bad "ane resume is bit-exact"; diff res-ane-full/metrics.jsonl res-ane/metrics.jsonl | head -n 4; fi

# what --resume refuses, and why
expect_fail "--resume without a state" "no training state res-none/lora_state.ckpt" \
    "$BIN" finetune $RES --out res-none --resume
expect_fail "--resume with another rank" "--lora-rank: expected 8 .the run being resumed, res-sig/lora_state.ckpt., found 4" \
    "$BIN" finetune $RES --out res-sig --resume --lora-rank 4
expect_fail "--resume with other targets" "--lora-targets: expected q,k,v,o .*found q,v" \
    "$BIN" finetune $RES --out res-sig --resume --lora-targets q,v
expect_fail "--resume with another dropout" "--lora-dropout: expected 0.1 .*found 0.2" \
    "$BIN" finetune $RES --out res-sig --resume --lora-dropout 0.2
expect_fail "--resume with --int8 on an fp32 run" "--int8: expected 0 .*found 1" \
    "$BIN" finetune $RES --out res-sig --resume --int8
expect_fail "--resume with another seed" "--seed: expected 1337 .*found 5" "$BIN" finetune $RES --out res-sig --resume --seed 5
expect_fail "--resume with another batch" "--batch: expected 4 .*found 8" "$BIN" finetune $RES --out res-sig --resume --batch 8
expect_fail "--resume with another seq" "--seq: expected 32 .*found 64" "$BIN" finetune $RES --out res-sig --resume --seq 64
expect_fail "--resume over another base config (the interleaved original of the HF base)" \
    "not the base model this run started from.*field rope_style" \
    "$BIN" finetune $RES --out res-sig --resume --init base/model.ckpt --tokenizer tok.json
expect_ok "another base of the same shape" "$BIN" train --model tiny --vocab 320 --data a.bin --steps 3 --batch 8 --seq 64 \
    --eval-every 0 --threads 2 --print-every 1000 --seed 5 --out other/model.ckpt
expect_ok "its HF export" "$BIN" convert other/model.ckpt other-hf
cp tok.json other-hf/tokenizer.json
expect_fail "--resume over another base" "field base_crc32: expected [0-9a-f]{8} .*other-hf.*not the base model" \
    "$BIN" finetune $RES --out res-sig --resume --init other-hf
expect_fail "--resume on other text" "train_crc32.*not the data this run trained on" \
    "$BIN" finetune $RES --out res-sig --resume --data a.txt
mkdir -p res-bad
cp res-sig/lora_state.ckpt res-bad/lora_state.ckpt
"$PY" -c "
import sys
b = bytearray(open('res-bad/lora_state.ckpt', 'rb').read()); b[1000] ^= 0xff
open('res-bad/lora_state.ckpt', 'wb').write(b)"
expect_fail "--resume of a corrupt state" "res-bad/lora_state.ckpt: section adapter: checksum mismatch" \
    "$BIN" finetune $RES --out res-bad --resume
head -c 5000 res-sig/lora_state.ckpt > res-bad/lora_state.ckpt
expect_fail "--resume of a truncated state" "res-bad/lora_state.ckpt: truncated: expected [0-9]+ bytes, found 5000" \
    "$BIN" finetune $RES --out res-bad --resume
cp base/model.ckpt res-bad/lora_state.ckpt
expect_fail "--resume of a full-training checkpoint" "not a LoRA training state.*full-training checkpoint" \
    "$BIN" finetune $RES --out res-bad --resume
expect_fail "train --resume of a LoRA state" "res-sig/lora_state.ckpt: not a checkpoint.*LoRA run's training state" \
    "$BIN" train --model tiny --vocab 320 --data a.bin --steps 3 --out res-sig/lora_state.ckpt --resume
if find . -name '*.tmp.*' | grep -q .; then bad "no temporary files left"; else ok "no temporary files left"; fi

# ---- what is refused, and why
expect_fail "dropout 1 is refused" "--lora-dropout: expected" "$BIN" finetune --init base-hf --data b.txt --lora-dropout 1
expect_fail "negative dropout is refused" "--lora-dropout: expected" \
    "$BIN" finetune --init base-hf --data b.txt --lora-dropout -0.1
expect_fail "train --int8 is refused: int8 weights cannot train" "--int8: int8 weights cannot train" \
    "$BIN" train --model tiny --vocab 320 --data a.bin --steps 2 --int8 --out x.ckpt
expect_fail "unknown target" "lora-targets.*'lm_head'" "$BIN" finetune --init base-hf --data b.txt --lora-targets q,lm_head
expect_fail "missing --data" "--data" "$BIN" finetune --init base-hf
expect_fail "missing text file" "nope.txt" "$BIN" finetune --init base-hf --data nope.txt --out ft-x
printf '\n\n  \n' > blank.txt
expect_fail "blank text" "blank" "$BIN" finetune --init base-hf --data blank.txt --out ft-x
head -c 500 b.txt > short.txt
expect_fail "text too short for a validation window" "validation split" \
    "$BIN" finetune --init base-hf --data short.txt --seq 64 --out ft-x

# ---- sample --adapter, once `anetrain sample` has the flag
if "$BIN" sample --help 2>/dev/null | grep -q -- "--adapter"; then
    expect_ok "sample --adapter" "$BIN" sample --model base-hf --adapter ft --prompt "The captain" --steps 24 \
        --temperature 0
fi
expect_ok "sample --int8 --adapter" "$BIN" sample --model base-hf --adapter ft --int8 --prompt "The captain" --steps 24 \
    --temperature 0

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
