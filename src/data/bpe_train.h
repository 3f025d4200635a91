/*
** bpe_train.h — learning a byte-fallback BPE vocabulary from text, written as a HF tokenizer.json.
**
** The result has the shape of the Llama-2 tokenizer.json (and of llama2.c's custom
** SentencePiece vocabularies), so tokenizer_load, HF tokenizers and transformers.js ports load
** it and give the same ids:
**   normalizer     Prepend "▁", then Replace " " with "▁"      (no pre-tokenizer)
**   model          BPE, byte_fallback, fuse_unk, unk_token "<unk>", merges as "left right"
**   post_processor TemplateProcessing: <s> before each sequence
**   decoder        Replace "▁" -> " ", ByteFallback, Fuse, Strip one leading space
**   ids            0 <unk>, 1 <s>, 2 </s> (added tokens, special), 3..258 <0x00>..<0xFF>,
**                  then the alphabet (single characters, most frequent first), then one piece
**                  per learned merge, in the order learned.
**
** Training is HF-style BPE over words with counts. A document is normalized as above and cut
** before every run of "▁" that follows another character ("▁the", "▁▁▁if", "▁"), which is where
** tokenizer.c cuts too; so no piece holds a "▁" after another character, merges never cross
** words, and BPE over the whole text (HF, transformers.js) equals BPE word by word (ours).
** The alphabet is the most frequent characters up to char_coverage of all character
** occurrences (SentencePiece's character_coverage), but at most half of the ids above the
** reserved ones (rounded up), so that text with thousands of rare characters still leaves half
** the vocabulary to merges; the other characters, NUL, and bytes that are not valid UTF-8 are
** left to the byte tokens and never merged. Then, until the vocabulary has
** vocab_size ids, the most frequent pair of neighbouring symbols is merged (ties: the pair
** with the lower left id, then the lower right id — deterministic for a given input, in any
** thread count). A pair is not merged if the piece would be longer than max_piece_chars
** characters or would spell a reserved piece ("<0x41>", "<s>": kept unambiguous). Two merges
** may make the same piece (HF does the same): the vocabulary then grows by one only.
**
** Pair counts are updated incrementally: each pair keeps the list of words it occurs in, a
** merge rewrites only those words and changes only the counts of the pairs around each
** replacement (so a long word without spaces costs one pass per merge, not a recount); the
** best pair comes from a max-heap whose stale entries are re-pushed with their current count
** when popped.
**
** This module never exits or prints; errors come back as Err (see err.h).
*/
#ifndef ANETRAIN_BPE_TRAIN_H
#define ANETRAIN_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"

enum {
    BPE_TRAIN_RESERVED = 259,      /* <unk>, <s>, </s> and the 256 byte tokens */
    BPE_TRAIN_MIN_VOCAB = 260,     /* the reserved ids and at least one piece */
    BPE_TRAIN_MAX_VOCAB = 1 << 18, /* 262,144 */
};

typedef struct {
    int vocab_size;       /* total ids, reserved ones included: [BPE_TRAIN_MIN_VOCAB, BPE_TRAIN_MAX_VOCAB] */
    double char_coverage; /* (0, 1]: share of character occurrences the alphabet covers (default 0.9995) */
    int max_piece_chars;  /* [2, 1024]: longest learned piece, in characters (default 16, as SentencePiece) */
} BpeTrainOptions;

void bpe_train_defaults(BpeTrainOptions *o, int vocab_size);

typedef struct {
    uint64_t documents, bytes;    /* what bpe_trainer_add saw */
    uint64_t words, distinct_words;
    uint64_t units, units_covered; /* character occurrences (invalid bytes count one each); those in the alphabet */
    int chars_seen, alphabet;     /* distinct characters; those given a piece */
    int merges;                   /* learned merges (>= pieces learned; see above) */
    int vocab_size;
    double seconds;               /* bpe_trainer_train */
} BpeTrainStats;

typedef struct BpeTrainer BpeTrainer;

int bpe_trainer_new(const BpeTrainOptions *o, BpeTrainer **out, Err *err);
void bpe_trainer_free(BpeTrainer *t);

/* Counts the words of one document (any bytes; an empty one counts as a document only).
** Fails on out-of-memory, or after bpe_trainer_train. */
int bpe_trainer_add(BpeTrainer *t, const char *text, size_t len, Err *err);

/* Chooses the alphabet and learns merges until the vocabulary has vocab_size ids. Fails if the
** text runs out of pairs to merge first (the message says how many ids it could make). */
int bpe_trainer_train(BpeTrainer *t, BpeTrainStats *stats, Err *err);

/* After training: the tokenizer.json text (malloc'ed, NUL-terminated), or NULL with err. */
char *bpe_trainer_json(const BpeTrainer *t, Err *err);
/* After training: writes the tokenizer.json to path atomically. */
int bpe_trainer_save(const BpeTrainer *t, const char *path, Err *err);

/* After training: the piece of an id (NUL-terminated; "<0x41>" for byte tokens), NULL if
** out of range; and the learned merges, (left id, right id) for i in [0, merges). */
const char *bpe_trainer_piece(const BpeTrainer *t, int id);
int bpe_trainer_merge(const BpeTrainer *t, int i, int32_t *left, int32_t *right);

#endif
