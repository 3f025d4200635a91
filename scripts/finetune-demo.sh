#!/bin/sh
# Fine-tuning on instructions, one command after the main job (scripts/main.sh, which it runs
# first when its model is missing): makes prompt/completion examples from the King James Bible
# the main job trained on (the prompt is a verse's first half, the completion its second half),
# fine-tunes the main job's model on them with LoRA and --mask-prompt (the loss counts only the
# completions), prints the masked test loss before and after, and shows three completions of
# test verses by the base model and by the adapter.
#   test.jsonl:  every 50th verse (lines 50, 100, ...: the verses main.sh held out from the
#                base model, so neither the base nor the adapter has seen them), 2%
#   valid.jsonl: the verses halfway between (lines 25, 75, ...), 2%
#   train.jsonl: the other 96%
# Environment: STEPS (default 600), OUT (the main job's directory, default out/kjv), DEMO (this
#   demo's directory, default $OUT/finetune-demo), THREADS (default all cores), BACKEND
#   (default cpu; ane uses the Neural Engine on a Mac), SEQ (tokens per row, default 96),
#   ANETRAIN (the binary to run; default ./build/anetrain, built first). Relative paths are
#   from the repository's root.
set -eu
cd "$(dirname "$0")/.."
A=${ANETRAIN:-./build/anetrain}
SEQ=${SEQ:-96}
OUT=${OUT:-out/kjv}
DEMO=${DEMO:-$OUT/finetune-demo}
STEPS=${STEPS:-600}
BACKEND=${BACKEND:-cpu}
if [ ! -s "$OUT/model.ckpt" ] || [ ! -s "$OUT/tokenizer.json" ] || [ ! -s "$OUT/kjv.txt" ]; then
    echo "== no base model in $OUT: running the main job first (scripts/main.sh)"
    OUT=$OUT sh scripts/main.sh
fi
[ -n "${ANETRAIN:-}" ] || make -j2 >/dev/null
mkdir -p "$DEMO/data"

echo "== examples: a verse's first half as the prompt, its second half as the completion"
# Verses of fewer than 4 words are left out; the text holds no '"' or '\', escaped all the same.
# The completion starts without the space between the halves: this tokenizer (SentencePiece-style,
# as Llama-2's) begins every text it encodes with one, so the completion's first token is the
# one the model predicts after the prompt (a tokenizer that adds none, as Qwen3's, would want
# " " + the second half).
awk -v dir="$DEMO/data" '
function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return s }
{
    n = split($0, w, " ")
    if (n < 4) next
    half = int(n / 2)
    p = w[1]
    for (i = 2; i <= half; i++) p = p " " w[i]
    c = w[half + 1]
    for (i = half + 2; i <= n; i++) c = c " " w[i]
    line = "{\"prompt\": \"" esc(p) "\", \"completion\": \"" esc(c) "\"}"
    if (NR % 50 == 0) print line > (dir "/test.jsonl")
    else if (NR % 50 == 25) print line > (dir "/valid.jsonl")
    else print line > (dir "/train.jsonl")
}' "$OUT/kjv.txt"
wc -l "$DEMO/data/train.jsonl" "$DEMO/data/valid.jsonl" "$DEMO/data/test.jsonl" | sed '$d'
head -n 2 "$DEMO/data/train.jsonl"

echo "== fine-tuning $OUT/model.ckpt with LoRA and --mask-prompt ($STEPS steps)"
$A finetune --init "$OUT/model.ckpt" --tokenizer "$OUT/tokenizer.json" --data "$DEMO/data" --mask-prompt --test \
    --lora-targets all --lora-rank 8 --steps "$STEPS" --batch 16 --seq "$SEQ" --lr 2e-3 --eval-every 100 \
    --eval-batches 10 --save-every 0 --backend "$BACKEND" --out "$DEMO/adapter" ${THREADS:+--threads "$THREADS"} |
    tee "$DEMO/finetune.out"
test_line=$(grep '^test .*->' "$DEMO/finetune.out")

# sample does not stop at EOS (</s>, which ends each completion): the lines are cut there.
echo "== three test verses: the prompt, then the base model's and the adapter's greedy completions"
sed -n '1p;7p;13p' "$DEMO/data/test.jsonl" | while IFS= read -r ex; do
    prompt=$(printf '%s\n' "$ex" | sed -E 's/^\{"prompt": "(.*)", "completion": ".*"\}$/\1/')
    truth=$(printf '%s\n' "$ex" | sed -E 's/^.*"completion": "(.*)"\}$/\1/')
    echo "prompt:   $prompt"
    echo "verse:    ... $truth"
    for who in base adapter; do
        if [ "$who" = base ]; then extra=""; else extra="--adapter $DEMO/adapter"; fi
        got=$($A sample --model "$OUT/model.ckpt" --tokenizer "$OUT/tokenizer.json" $extra --prompt "$prompt" \
            --steps 80 --temperature 0 ${THREADS:+--threads "$THREADS"} 2>/dev/null | head -n 1 | sed 's|</s>.*||')
        printf '%-9s ...%s\n' "$who:" "${got#"$prompt"}"
    done
    echo
done
echo "masked test loss (completion tokens only), before -> after fine-tuning:"
echo "  ${test_line#test    }"
echo "adapter: $DEMO/adapter (PEFT LoRA); examples: $DEMO/data; log: $DEMO/adapter/metrics.jsonl"
echo "next:    anetrain eval --model $OUT/model.ckpt --tokenizer $OUT/tokenizer.json --adapter $DEMO/adapter \\"
echo "             --data $DEMO/data/test.jsonl --mask-prompt --seq $SEQ"
