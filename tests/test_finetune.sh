#!/bin/sh
# End-to-end tests of `anetrain finetune` (LoRA) and of adapters in `anetrain convert`:
# a small model trained on one kind of text is fine-tuned on another kind; the validation
# loss on the new domain must fall; the adapter is a PEFT directory; merging it (convert
# --adapter) gives a model that scores what the fine-tune reported, the same from the
# llama2.c-style base (interleaved RoPE) and from its HF export (rotate-half), and as eval
# --adapter (unmerged); eval --int8 scores near fp32; a fine-tune with LoRA dropout over an int8
# base learns; the emulated ANE backend fine-tunes too; bad flags are refused with a reason.
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

# ---- what is refused, and why
expect_fail "dropout on the ane backend is refused with the reason" "LoRA dropout 0.1 is not supported .the masks would be" \
    "$BIN" finetune --init base-hf --data b.txt --lora-dropout 0.1 --backend ane --device emu --out ft-x
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
