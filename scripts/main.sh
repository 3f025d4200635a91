#!/bin/sh
# The main job on an embedded default, one command on a fresh Debian 12:
#   installs what is missing, extracts the King James Bible (Debian's bible-kjv, public
#   domain), learns a small BPE vocabulary on it, tokenizes it with a validation split,
#   trains a small Llama-style model for a few minutes on the best backend available (the
#   CPU on Linux), then prints samples and the validation loss, and says where things are.
# Environment: STEPS (default 600), VOCAB (default 2048), THREADS (default all cores),
#   OUT (default out/kjv), BACKEND (default cpu; ane uses the Neural Engine on a Mac).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh bible-kjv
make -j2
A=./build/anetrain
OUT=${OUT:-out/kjv}
STEPS=${STEPS:-600}
VOCAB=${VOCAB:-2048}
BACKEND=${BACKEND:-cpu}
mkdir -p "$OUT"
if [ ! -s "$OUT/kjv.txt" ]; then
    echo "== extracting the King James Bible to $OUT/kjv.txt (one verse per line)"
    bible -f Gen1:1-Rev22:21 | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$OUT/kjv.txt"
fi
echo "== learning a $VOCAB-piece BPE vocabulary"
$A tokenizer train --vocab "$VOCAB" "$OUT/kjv.txt" -o "$OUT/tokenizer.json"
echo "== tokenizing (one document per verse, 2% held out for validation)"
$A tokenize --tokenizer "$OUT/tokenizer.json" "$OUT/kjv.txt" -o "$OUT/train.bin" --val-frac 0.02 \
    --val-out "$OUT/val.bin"
echo "== training a 2M-parameter model ($STEPS steps)"
# The validation split is its own file, so train holds out nothing more (--val-frac 0);
# eval reports the held-out loss at the end.
$A train --data "$OUT/train.bin" --val-frac 0 --backend "$BACKEND" \
    --dim 192 --hidden-dim 512 --layers 4 --heads 6 --vocab "$VOCAB" --max-seq 256 \
    --seq 128 --batch 16 --steps "$STEPS" --lr 3e-3 --warmup 50 --eval-every 0 \
    --out "$OUT/model.ckpt" ${THREADS:+--threads "$THREADS"}
echo "== validation loss on the held-out verses"
$A eval --model "$OUT/model.ckpt" --data "$OUT/val.bin" --seq 128
$A plot "$OUT/metrics.jsonl" -o "$OUT/loss.svg" --title "anetrain: King James Bible"
echo "== samples"
for prompt in "And the LORD said unto Moses" "In the beginning" "Blessed are"; do
    $A sample --model "$OUT/model.ckpt" --tokenizer "$OUT/tokenizer.json" --prompt "$prompt" \
        --steps 60 --temperature 0.8 --top-p 0.9 --seed 7 2>/dev/null
    echo
done
echo
echo "model:     $OUT/model.ckpt  (anetrain convert $OUT/model.ckpt $OUT/model.bin -> llama2.c format)"
echo "tokenizer: $OUT/tokenizer.json"
echo "metrics:   $OUT/metrics.jsonl, loss curve: $OUT/loss.svg"
echo "next:      STEPS=5000 sh scripts/main.sh for a better model; README.md for your own text,"
echo "           bigger presets (--model stories15m) and TinyStories"
