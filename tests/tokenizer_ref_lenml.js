// tokenizer_ref_lenml.js — reference token ids from @lenml/tokenizers (a dependency-free port of
// transformers.js' tokenizers) loading any HF tokenizer.json, for tests/test_tokenize.py.
//
//   node tests/tokenizer_ref_lenml.js TOKENIZER.json TEXTS.jsonl
//
// TEXTS holds one JSON string per line; for each line this prints the ids of
// encode(text, {add_special_tokens: true}) as a JSON array on one line, in the same format as
// tests/tool_tokenize.c. The tokenizer is built with TokenizerLoader.fromPreTrained and the
// generic class (tokenizer_config {"tokenizer_class": "PreTrainedTokenizer"}), so nothing but the
// tokenizer.json decides how text is encoded (the Llama class would change the normalizer when
// "legacy" is false). Like transformers.js, it matches added tokens ("<s>", "</s>", "<unk>")
// written in the text, which SentencePiece-style tokenizers (and ours) read as plain text.
//
// The package is looked up in $ANETRAIN_NODE_PATH/node_modules (default
// $HOME/.cache/anetrain/node), where
//   npm install --prefix "$ANETRAIN_NODE_PATH" @lenml/tokenizers@3.7.2
// puts it. Exit status 3 means the package is missing.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

const prefix = process.env.ANETRAIN_NODE_PATH || path.join(os.homedir(), ".cache", "anetrain", "node");
const dir = path.join(prefix, "node_modules", "@lenml", "tokenizers");

function main() {
  const [tokenizerPath, textsPath] = process.argv.slice(2);
  if (!tokenizerPath || !textsPath) {
    process.stderr.write("usage: node tokenizer_ref_lenml.js TOKENIZER.json TEXTS.jsonl\n");
    process.exit(2);
  }
  if (!fs.existsSync(dir)) {
    process.stderr.write(`tokenizer_ref_lenml.js: missing ${dir}\n`);
    process.exit(3);
  }
  const { TokenizerLoader } = require(dir);
  const tokenizerJSON = JSON.parse(fs.readFileSync(tokenizerPath, "utf8"));
  const tok = TokenizerLoader.fromPreTrained({
    tokenizerJSON,
    tokenizerConfig: { tokenizer_class: "PreTrainedTokenizer" },
  });
  const lines = fs.readFileSync(textsPath, "utf8").split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const out = [];
  for (const line of lines) {
    const ids = tok.encode(JSON.parse(line), { add_special_tokens: true });
    out.push(JSON.stringify(Array.from(ids)));
  }
  process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
}

main();
