#!/bin/sh
# The main job on an embedded default: installs what is missing, extracts the King James
# Bible (Debian's bible-kjv, public domain), turns it into byte-level tokens (one token per
# byte, BOS before each verse; a real BPE tokenizer arrives with `anetrain tokenize`),
# trains a small Llama-style model for a few minutes on the CPU, and reports the
# validation loss and where the model and metrics are.
# Environment: STEPS (default 1500), THREADS (default all cores), OUT (default out/kjv).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh bible-kjv
make -j2
OUT=${OUT:-out/kjv}
STEPS=${STEPS:-1500}
mkdir -p "$OUT"
if [ ! -s "$OUT/kjv.txt" ]; then
    echo "extracting the King James Bible to $OUT/kjv.txt"
    bible -f Gen1:1-Rev22:21 | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$OUT/kjv.txt"
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
"$PY" - "$OUT/kjv.txt" "$OUT/kjv-bytes.bin" <<'PYEOF'
import struct, sys
# Byte-level ids: 3 + byte (ids 0..2 are <unk>, <s>, </s> as in Llama-2), BOS = 1 per verse.
ids = []
for line in open(sys.argv[1], "rb"):
    line = line.rstrip(b"\n")
    if line:
        ids.append(1)
        ids.extend(3 + b for b in line + b"\n")
open(sys.argv[2], "wb").write(struct.pack("<%dH" % len(ids), *ids))
print("%s: %d tokens" % (sys.argv[2], len(ids)))
PYEOF
./build/anetrain train --data "$OUT/kjv-bytes.bin" \
    --dim 256 --hidden-dim 688 --layers 4 --heads 8 --vocab 259 --max-seq 256 \
    --seq 128 --batch 16 --steps "$STEPS" --lr 2e-3 --warmup 100 --eval-every 250 \
    --out "$OUT/model.ckpt" ${THREADS:+--threads "$THREADS"}
./build/anetrain plot "$OUT/metrics.jsonl" -o "$OUT/loss.svg" --title "anetrain: King James Bible, byte-level"
echo
echo "model:   $OUT/model.ckpt   (anetrain convert $OUT/model.ckpt $OUT/model.bin  ->  llama2.c format)"
echo "metrics: $OUT/metrics.jsonl, loss curve: $OUT/loss.svg"
