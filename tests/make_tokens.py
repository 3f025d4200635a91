"""Writes synthetic token files for the CLI tests (standard library only).

usage: make_tokens.py OUT KIND N VOCAB [SEED]
  KIND pattern  documents of a few fixed phrases with random choices, BOS=1 first:
                learnable, so training loss must fall well below log(VOCAB)
  KIND random   uniform ids in [0, VOCAB)
  KIND raw32    like pattern but as an ANETOK file with 4-byte ids
Raw files are llama2.c's format: little-endian uint16, no header.
"""
import random
import struct
import sys


def pattern_tokens(n, vocab, rng):
    phrases = [[rng.randrange(3, vocab) for _ in range(rng.randrange(4, 12))] for _ in range(12)]
    out = []
    while len(out) < n:
        out.append(1)
        for _ in range(rng.randrange(3, 8)):
            out.extend(phrases[rng.randrange(len(phrases))])
    return out[:n]


def main():
    path, kind, n, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 1)
    if kind == "random":
        ids = [rng.randrange(vocab) for _ in range(n)]
    else:
        ids = pattern_tokens(n, vocab, rng)
    with open(path, "wb") as f:
        if kind == "raw32":
            f.write(b"ANETOK1\0" + struct.pack("<IIIIQ", 1, 4, vocab, 0, n))
            f.write(struct.pack("<%dI" % n, *ids))
        else:
            f.write(struct.pack("<%dH" % n, *ids))


if __name__ == "__main__":
    main()
