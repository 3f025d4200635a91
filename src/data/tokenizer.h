/*
** tokenizer.h — text to token ids and back, from the files people actually have.
**
** Two file formats, told apart by their first byte ('{' after optional whitespace: JSON):
**   tokenizer.json   HF tokenizers. The parts supported are those the Llama-2 and Qwen3 files
**                    use, and their close relatives:
**                      model          BPE (merges as "a b" or ["a","b"]; byte_fallback,
**                                     unk_token, fuse_unk, ignore_merges)
**                      normalizer     NFC, Prepend, Replace (String), Sequence of these
**                      pre_tokenizer  Split (Regex or String; Isolated, Removed,
**                                     MergedWithPrevious, MergedWithNext; invert), ByteLevel
**                                     (last), Metaspace, Sequence of these
**                      post_processor TemplateProcessing (single), ByteLevel, Sequence
**                      decoder        ByteLevel, Replace (String), ByteFallback, Fuse,
**                                     Strip (leading), Metaspace, Sequence of these
**                      added_tokens   (single_word unsupported)
**                    Anything else is refused with a message naming the file and the field.
**                    truncation and padding are ignored (we encode whole documents).
**   tokenizer.bin    llama2.c: int32 max_token_length, then per token float32 score, int32
**                    length, bytes. The vocabulary size is not stored: pass it as vocab_hint
**                    (0: read tokens up to the end of the file). Merges by score, as run.c.
**
** Encoding (tokenizer_encode), in HF's order: added tokens are cut out of the raw text; each
** remaining segment is normalized, pre-tokenized into words and each word is merged by BPE
** (a priority queue over a linked list: O(n log n) per word, words cached); add_special
** adds what the post-processor adds (Llama-2: BOS = 1 first; Qwen3: nothing).
**
** Text handling, documented and lossless:
**   - Any bytes are accepted. Invalid UTF-8 bytes are kept one by one: in SentencePiece-style
**     tokenizers they become byte-fallback tokens <0xNN>; in byte-level ones they are words of
**     their own (the regex never matches them) and become their byte-level tokens. NFC
**     normalizes the valid runs only. NUL bytes are ordinary characters (pass the length).
**   - decode(encode(s)) == s, except what the file's normalizer changes on purpose: Qwen3's
**     NFC (decode gives NFC(s)), and in the Llama-2 tokenizer.json a U+2581 '▁' already in the
**     text, which is indistinguishable from a space afterwards and decodes as ' '.
**   - Added tokens written in the text (<|im_start|>, <think>, ...) are matched as whole tokens,
**     leftmost-longest, as HF does — except in SentencePiece-style tokenizers (tokenizer.bin,
**     and tokenizer.json whose BPE model has byte_fallback), where "<s>" in the text is just
**     text, as in SentencePiece, llama2.c and llama-tokenizer-js. tokenizer_set_match_added
**     overrides the default.
**   - An empty text gives no ids, plus what add_special adds (HF: [1] for Llama-2;
**     llama-tokenizer-js returns [] instead).
**
** The regex of a Split pre-tokenizer is run by PCRE2 (UTF, UCP, JIT) with \s and \S spelled
** out as HF's regex engine (Oniguruma) defines them: tab, LF, VT, FF, CR, U+0085 and the
** Unicode separators (Zs, Zl, Zp). JavaScript ports (transformers.js) use JavaScript's \s
** instead, which drops U+0085 and adds U+FEFF, and cannot write (?i:...) groups; the JS
** dialect (tokenizer_set_regex_dialect) reproduces them, for comparing with those ports.
**
** Decoding turns each token into bytes (byte tokens into their raw byte, byte-level
** characters into their bytes, '▁' into ' '), never replacing invalid UTF-8 (HF would put
** U+FFFD there), and strips the leading space the normalizer added at the start of the
** sequence and after each BOS (as llama2.c's run.c does).
**
** Thread safety: a loaded Tokenizer is read-only; encode and decode may run on many threads
** at once. The setters must not run concurrently with anything else on the same tokenizer.
*/
#ifndef ANETRAIN_TOKENIZER_H
#define ANETRAIN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"

typedef struct Tokenizer Tokenizer;

/* A growable list of ids. Start from {0}; encode appends; free with token_ids_free. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} TokenIds;

void token_ids_free(TokenIds *ids);

/* Loads a tokenizer.json or a llama2.c tokenizer.bin (vocab_hint tokens; 0: all in the file;
** ignored for tokenizer.json). */
int tokenizer_load(const char *path, int vocab_hint, Tokenizer **out, Err *err);
void tokenizer_free(Tokenizer *tok);

/* Appends the ids of text[0..len) to out. add_special: add BOS etc. as the file's
** post-processor does. Fails only on out-of-memory, a regex engine error, or a byte the
** tokenizer cannot represent at all (no piece, no byte fallback, no unk: never with the
** Llama-2 or Qwen3 files). */
int tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, int add_special, TokenIds *out,
                     Err *err);

/* Encodes n documents on the thread pool (parallel.h); outs[i] receives the ids of texts[i]
** (appended), the same for any thread count. On error, reports the lowest failing document. */
int tokenizer_encode_many(const Tokenizer *tok, const char *const *texts, const size_t *lens, int n,
                          int add_special, TokenIds *outs, Err *err);

/* Decodes a whole sequence into a malloc'ed buffer (NUL-terminated; *len excludes the NUL and
** counts any NUL bytes inside). skip_special drops BOS, EOS, <|im_start|>, ... Fails on ids
** outside the vocabulary. */
char *tokenizer_decode(const Tokenizer *tok, const int32_t *ids, size_t n, int skip_special, size_t *len,
                       Err *err);

/* The bytes of one token for streaming output (like llama2.c's decode): byte tokens give their
** raw byte, and the leading space is stripped after BOS or at the start (prev_id < 0). The
** pointer is into the tokenizer (not NUL-terminated, may hold a NUL byte: use *len); NULL for
** an id outside the vocabulary. */
const char *tokenizer_decode_piece(const Tokenizer *tok, int prev_id, int id, size_t *len);

/* Max id + 1 (Qwen3: 151669; the model's embedding may be larger). */
int tokenizer_vocab_size(const Tokenizer *tok);
/* BOS: the first token the post-processor puts before a sequence, else "<s>", else -1.
** EOS: "</s>", else "<|endoftext|>", else -1 (Qwen3 chat models end turns with <|im_end|>:
** look it up with tokenizer_piece_to_id). */
int tokenizer_bos_id(const Tokenizer *tok);
int tokenizer_eos_id(const Tokenizer *tok);
/* The piece of id as written in the file (NULL if absent; not NUL-terminated). */
const char *tokenizer_id_to_piece(const Tokenizer *tok, int id, size_t *len);
/* The id of a piece (an added token's content or a vocabulary string), -1 if none. */
int tokenizer_piece_to_id(const Tokenizer *tok, const char *piece, size_t len);
/* 1 for control tokens (BOS, EOS, <|im_start|>, ...). */
int tokenizer_is_special(const Tokenizer *tok, int id);
/* One line: the file, its kind, its vocabulary, BOS and EOS. */
void tokenizer_describe(const Tokenizer *tok, char *buf, size_t size);

/* Overrides whether added tokens written in the text are matched as whole tokens. */
void tokenizer_set_match_added(Tokenizer *tok, int on);

enum { TOKENIZER_REGEX_HF = 0, TOKENIZER_REGEX_JS = 1 };
/* Selects how Split regexes read \s, \S and (?i:...): HF's (default) or JavaScript's. */
int tokenizer_set_regex_dialect(Tokenizer *tok, int dialect, Err *err);

#endif
