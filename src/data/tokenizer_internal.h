/*
** tokenizer_internal.h — the Tokenizer's insides, shared by tokenizer.c (pipeline, decode,
** tokenizer.bin), tokenizer_hf.c (tokenizer.json) and tokenizer_bpe.c (maps, BPE, cache).
**
** A Tokenizer is immutable once loaded (the two setters aside), so any number of threads
** may encode with it at once; everything that changes while encoding lives in an EncodeState,
** one per thread.
*/
#ifndef ANETRAIN_TOKENIZER_INTERNAL_H
#define ANETRAIN_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"
#include "tokenizer.h"

/* ---------------------------------------------------------------- vocabulary */

enum {
    TOK_ATTR_PRESENT = 1, /* the id has a piece (ids may have gaps) */
    TOK_ATTR_SPECIAL = 2, /* control token: BOS, EOS, <|im_start|>, ... (skipped by decode on request) */
    TOK_ATTR_ADDED = 4,   /* from added_tokens: matched as a whole in text, decoded as its content */
    TOK_ATTR_BYTE = 8,    /* a byte-fallback token <0xNN> */
};

/* A growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} TokBuf;

int tokbuf_reserve(TokBuf *b, size_t extra, Err *err);
int tokbuf_append(TokBuf *b, const void *data, size_t n, Err *err);
void tokbuf_free(TokBuf *b);

/* An added token (HF added_tokens): matched as a whole in the raw text, before normalization. */
typedef struct {
    char *content;
    size_t len;
    int32_t id;
    int lstrip, rstrip; /* the match swallows whitespace on its left / right */
} TokAdded;

/* ---------------------------------------------------------------- pipeline steps */

enum { NORM_NFC, NORM_PREPEND, NORM_REPLACE };
typedef struct {
    int type;
    char *a, *b; /* PREPEND: a = the prefix; REPLACE: a = pattern, b = content */
    size_t alen, blen;
} TokNorm;

enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE };
enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT };
enum { META_ALWAYS, META_FIRST, META_NEVER };
typedef struct {
    int type;
    /* PRE_SPLIT (and PRE_BYTELEVEL with use_regex): */
    char *pattern;     /* as written in the file */
    int is_regex;      /* 0: pattern is a literal string */
    pcre2_code *re;    /* compiled for the current regex dialect */
    int behavior, invert;
    /* PRE_BYTELEVEL: */
    int add_prefix_space;
    /* PRE_METASPACE: */
    char repl[8];
    size_t repl_len;
    int prepend_scheme, split;
} TokPre;

/* ---------------------------------------------------------------- merges */

/* (left id, right id) -> merged id, with a priority: lower merges first. HF: the merge's
** rank; tokenizer.bin: minus the merged piece's score. Ties go to the leftmost pair. */
typedef struct {
    uint64_t key; /* (left << 32 | right) + 1; 0 = empty slot */
    float prio;
    int32_t merged;
} TokMerge;

/* ---------------------------------------------------------------- the tokenizer */

enum { TOK_KIND_JSON = 1, TOK_KIND_BIN = 2 };

struct Tokenizer {
    char path[1024];
    int kind;
    int n_vocab; /* max id + 1 */

    /* pieces, as written in the file, by id */
    TokBuf arena;
    uint32_t *piece_off, *piece_len;
    uint8_t *attr;
    float *score; /* tokenizer.bin only */

    /* decoded bytes by id (what the decoder turns the token into) */
    TokBuf dec_arena;
    uint32_t *dec_off, *dec_len;

    /* model.vocab: piece string -> id (open addressing, slot = id + 1, 0 = empty) */
    uint32_t *vmap;
    uint32_t vmap_mask;
    int32_t ascii_id[128]; /* single ASCII characters, the hot path of the initial split */

    TokMerge *mmap;
    uint32_t mmap_mask;
    size_t n_merges;

    /* the model */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;
    int32_t byte_id[256]; /* byte fallback tokens <0xNN>, -1 if absent */
    int byte_level;       /* the pre-tokenizer ends in ByteLevel: words are byte sequences */
    int32_t bl_id[256];   /* byte -> id of its byte-level character */

    /* added tokens */
    TokAdded *added;
    int n_added;
    int match_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */

    TokNorm *norm;
    int n_norm;
    TokPre *pre;
    int n_pre;
    int regex_dialect; /* TOKENIZER_REGEX_HF or TOKENIZER_REGEX_JS */

    /* post-processor: ids around a single sequence when add_special is set */
    int32_t *post_prefix, *post_suffix;
    int n_prefix, n_suffix;

    /* decoder: strip up to strip_count leading strip_char at the start of a sequence and after BOS */
    char strip_char[8];
    size_t strip_char_len;
    int strip_count;

    /* Word splitting inside a pre-tokenizer-less segment (SentencePiece style): when no piece
    ** holds wsplit preceded by another character, the text may be cut before every run of
    ** wsplit without changing the result, so that words can be cached. */
    char wsplit[8];
    size_t wsplit_len;

    int32_t bos_id, eos_id;
};

/* ---------------------------------------------------------------- per-thread encode state */

typedef struct {
    float prio;
    int32_t pos; /* index of the left symbol */
    int32_t left, right, merged;
} TokHeapEnt;

typedef struct {
    uint64_t hash;
    uint32_t key_off, key_len;
    uint32_t ids_off, n_ids;
} TokCacheEnt;

typedef struct {
    TokBuf t1, t2;        /* normalizer ping-pong */
    TokBuf p1, p2;        /* pre-tokenizer text ping-pong */
    size_t *w1, *w2;      /* pre-tokenizer pieces: pairs (offset, length) */
    size_t w1_cap, w2_cap;
    size_t *seg;          /* a Split's segments: triples (start, end, is delimiter) */
    size_t seg_cap;
    int32_t *sym, *prev, *next;
    size_t sym_cap;
    TokHeapEnt *heap;
    size_t heap_cap;
    TokBuf scratch;       /* byte-level string for ignore_merges lookups */
    /* word cache: word bytes -> ids */
    TokCacheEnt *cache;
    uint32_t cache_mask, cache_used;
    TokBuf cache_keys;
    int32_t *cache_ids;
    size_t cache_ids_n, cache_ids_cap;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
} TokState;

/* text_hint: about how many bytes will be encoded (sizes the word cache). */
int tok_state_init(TokState *s, size_t text_hint, Err *err);
void tok_state_free(TokState *s);

/* ---------------------------------------------------------------- tokenizer_bpe.c */

uint64_t tok_hash(const void *data, size_t n);
/* Builds vmap (and ascii_id) from the present ids with in_vocab[id] set (NULL: all of them;
** tokenizer.json: the ids of model.vocab, not the added tokens); a string held by several
** ids maps to the lowest. */
int tok_vocab_index(Tokenizer *t, const uint8_t *in_vocab, Err *err);
int32_t tok_vocab_find(const Tokenizer *t, const char *s, size_t n);
int tok_merges_alloc(Tokenizer *t, size_t n, Err *err);
/* Adds a merge; returns 1 if added, 0 if the pair was already there (the old one is kept
** when keep_first, else replaced). */
int tok_merges_put(Tokenizer *t, int32_t left, int32_t right, int32_t merged, float prio, int keep_first);
const TokMerge *tok_merges_find(const Tokenizer *t, int32_t left, int32_t right);
/* Encodes one pre-tokenized word (bytes) with the model and appends the ids. */
int tok_model_word(const Tokenizer *t, TokState *s, const char *w, size_t n, TokenIds *out, Err *err);

/* ---------------------------------------------------------------- shared helpers */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if the bytes there are not one. */
size_t tok_utf8_valid(const uint8_t *p, size_t n);
/* Appends the UTF-8 encoding of cp; returns its length. */
size_t tok_utf8_put(char *out, uint32_t cp);
/* The GPT-2 byte-level alphabet: the code point that stands for byte b. */
uint32_t tok_byte_level_cp(int b);
int tok_ids_push(TokenIds *ids, int32_t id, Err *err);
/* Sets the piece of id (copied into the arena). */
int tok_set_piece(Tokenizer *t, int32_t id, const char *s, size_t n, Err *err);
/* Sets the decoded bytes of id (copied into the decoded arena). */
int tok_set_decoded(Tokenizer *t, int32_t id, const char *s, size_t n, Err *err);
/* Allocates the per-id arrays for n ids (all absent). */
int tok_alloc_ids(Tokenizer *t, int n, Err *err);
/* Compiles a Split pattern for the tokenizer's current regex dialect. */
int tok_compile_pre(const Tokenizer *t, TokPre *p, const char *field, Err *err);

/* tokenizer_hf.c */
int tok_load_json(Tokenizer *t, const char *text, size_t len, Err *err);

#endif
