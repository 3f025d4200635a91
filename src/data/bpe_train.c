/*
** bpe_train.c — learning a byte-fallback BPE vocabulary (see bpe_train.h for what is learned
** and why the result encodes the same in every HF-compatible implementation).
**
** Four steps, in the order the data flows:
**   words     each document is normalized and cut into words, counted in a hash table
**   alphabet  characters by frequency, up to the coverage; each gets a piece
**   pairs     every word becomes a list of symbol ids; every pair of neighbours gets a count
**             and the list of words it occurs in
**   merges    the best pair is merged in the words that hold it, the counts of the pairs
**             around each replacement are updated, pairs with the new piece are pushed on the
**             heap, until the vocabulary is full
**
** This module must never write a piece that a loader would misread: pieces are valid UTF-8
** without NUL or ' ', never spell a reserved piece, and never hold "▁" after another character.
*/
#include "bpe_train.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../util/clock.h"
#include "../util/fileio.h"
#include "tokenizer_internal.h"

#define META "\xE2\x96\x81" /* U+2581 '▁', which stands for a space */
enum { META_LEN = 3 };

#define NO_WORD UINT32_MAX /* "no word" / "no pair" markers in uint32_t links */
#define NO_PAIR UINT32_MAX

typedef struct {
    int64_t count;
    int32_t a, b;
    uint32_t *words; /* words holding the pair (maybe stale, maybe repeated; checked when used) */
    uint32_t n_words, cap_words;
    uint32_t last_word; /* the last word appended, to skip repeats within one word */
    uint32_t stamp;     /* the merge step that last pushed it */
    int forbidden;      /* its piece would spell a reserved one */
} Pair;

typedef struct {
    int64_t count;
    int32_t a, b;
} HeapEnt;

typedef struct {
    uint32_t cp;
    uint64_t count;
} CharCount;

struct BpeTrainer {
    BpeTrainOptions opt;
    BpeTrainStats stats;
    int trained;
    TokBuf norm; /* one normalized document */

    /* words: bytes in word_bytes, counted; a hash table of index + 1 */
    TokBuf word_bytes;
    size_t *word_off;
    uint32_t *word_len;
    uint64_t *word_count, *word_hash;
    size_t n_words, cap_words;
    uint32_t *word_slots, word_mask;

    /* characters: code point + 1 -> occurrences (open addressing) */
    uint32_t *char_keys;
    uint64_t *char_counts;
    int32_t *char_ids;
    uint32_t char_mask, n_chars;

    /* pieces by id, each NUL-terminated in piece_bytes; a hash table of id + 1 */
    TokBuf piece_bytes;
    uint32_t *piece_off, *piece_len;
    int32_t *piece_chars;
    int n_pieces, cap_pieces;
    uint32_t *piece_slots, piece_mask;

    /* merges, in order: (left, right) */
    int32_t *merges;
    int n_merges, cap_merges;

    /* training state: word symbols (-1: a run of characters outside the alphabet) */
    int32_t *syms;
    size_t *sym_off;
    uint32_t *sym_len, *word_stamp;
    Pair *pairs;
    size_t n_pairs, cap_pairs;
    uint32_t *pair_slots, pair_mask;
    HeapEnt *heap;
    size_t n_heap, cap_heap;
    uint32_t *touched;
    size_t n_touched, cap_touched;
};

/* ---------------------------------------------------------------- small helpers */

/* Grows the array whose pointer is at pp (elem-sized items, capacity *cap) to hold at least
** need items. The pointer is read and written with memcpy: pp may point to any object pointer. */
static int grow(void *pp, size_t *cap, size_t need, size_t elem, const char *what, Err *err) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *p;
    memcpy(&p, pp, sizeof p);
    void *q = realloc(p, c * elem);
    if (!q) return err_set(err, "out of memory for %zu %s", c, what);
    memcpy(pp, &q, sizeof q);
    *cap = c;
    return 0;
}

static uint32_t slot_of(uint64_t hash, uint32_t mask) { return (uint32_t)(hash ^ hash >> 32) & mask; }

static uint64_t pair_hash(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) * 0x9E3779B97F4A7C15ull;
}

/* The code point of the valid UTF-8 sequence p[0..len). */
static uint32_t utf8_cp(const uint8_t *p, size_t len) {
    if (len == 1) return p[0];
    if (len == 2) return (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    if (len == 3) return (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    return (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 | (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
}

/* ---------------------------------------------------------------- options, lifetime */

void bpe_train_defaults(BpeTrainOptions *o, int vocab_size) {
    o->vocab_size = vocab_size;
    o->char_coverage = 0.9995;
    o->max_piece_chars = 16;
}

int bpe_trainer_new(const BpeTrainOptions *o, BpeTrainer **out, Err *err) {
    *out = NULL;
    if (o->vocab_size < BPE_TRAIN_MIN_VOCAB || o->vocab_size > BPE_TRAIN_MAX_VOCAB)
        return err_set(err, "vocab_size: expected %d..%d (259 ids are reserved: <unk>, <s>, </s> and 256 byte tokens), "
                            "found %d",
                       BPE_TRAIN_MIN_VOCAB, BPE_TRAIN_MAX_VOCAB, o->vocab_size);
    if (!(o->char_coverage > 0 && o->char_coverage <= 1))
        return err_set(err, "char_coverage: expected a number in (0, 1], found %g", o->char_coverage);
    if (o->max_piece_chars < 2 || o->max_piece_chars > 1024)
        return err_set(err, "max_piece_chars: expected 2..1024, found %d", o->max_piece_chars);
    BpeTrainer *t = err_calloc(1, sizeof *t, "the BPE trainer", err);
    if (!t) return -1;
    t->opt = *o;
    t->word_mask = (1u << 16) - 1;
    t->word_slots = err_calloc((size_t)t->word_mask + 1, sizeof *t->word_slots, "the word table", err);
    if (!t->word_slots) {
        bpe_trainer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

static void free_training_state(BpeTrainer *t) {
    for (size_t i = 0; i < t->n_pairs; i++) free(t->pairs[i].words);
    free(t->pairs);
    free(t->pair_slots);
    free(t->heap);
    free(t->touched);
    free(t->syms);
    free(t->sym_off);
    free(t->sym_len);
    free(t->word_stamp);
    t->pairs = NULL;
    t->pair_slots = NULL;
    t->heap = NULL;
    t->touched = NULL;
    t->syms = NULL;
    t->sym_off = NULL;
    t->sym_len = t->word_stamp = NULL;
    t->n_pairs = t->cap_pairs = t->n_heap = t->cap_heap = t->n_touched = t->cap_touched = 0;
}

static void free_words(BpeTrainer *t) {
    tokbuf_free(&t->word_bytes);
    tokbuf_free(&t->norm);
    free(t->word_off);
    free(t->word_len);
    free(t->word_count);
    free(t->word_hash);
    free(t->word_slots);
    free(t->char_keys);
    free(t->char_counts);
    free(t->char_ids);
    t->word_off = NULL;
    t->word_len = NULL;
    t->word_count = t->word_hash = NULL;
    t->word_slots = t->char_keys = NULL;
    t->char_counts = NULL;
    t->char_ids = NULL;
}

void bpe_trainer_free(BpeTrainer *t) {
    if (!t) return;
    free_training_state(t);
    free_words(t);
    tokbuf_free(&t->piece_bytes);
    free(t->piece_off);
    free(t->piece_len);
    free(t->piece_chars);
    free(t->piece_slots);
    free(t->merges);
    free(t);
}

/* ---------------------------------------------------------------- words */

static int word_table_grow(BpeTrainer *t, Err *err) {
    uint32_t size = (t->word_mask + 1) * 2;
    uint32_t *slots = err_calloc(size, sizeof *slots, "the word table", err);
    if (!slots) return -1;
    for (size_t w = 0; w < t->n_words; w++) {
        uint32_t i = slot_of(t->word_hash[w], size - 1);
        while (slots[i]) i = (i + 1) & (size - 1);
        slots[i] = (uint32_t)w + 1;
    }
    free(t->word_slots);
    t->word_slots = slots;
    t->word_mask = size - 1;
    return 0;
}

static int count_word(BpeTrainer *t, const char *w, size_t n, Err *err) {
    if (n > UINT32_MAX) return err_set(err, "a word of %zu bytes without a space: expected at most 4 GB", n);
    uint64_t h = tok_hash(w, n);
    uint32_t i = slot_of(h, t->word_mask);
    while (t->word_slots[i]) {
        size_t k = t->word_slots[i] - 1;
        if (t->word_hash[k] == h && t->word_len[k] == n && memcmp(t->word_bytes.p + t->word_off[k], w, n) == 0) {
            t->word_count[k]++;
            return 0;
        }
        i = (i + 1) & t->word_mask;
    }
    if (t->n_words >= NO_WORD - 1) return err_set(err, "more than 4 billion distinct words: expected fewer");
    size_t need = t->n_words + 1, cap = t->cap_words;
    if (need > cap) {
        size_t c1 = cap, c2 = cap, c3 = cap, c4 = cap;
        if (grow(&t->word_off, &c1, need, sizeof *t->word_off, "words", err) ||
            grow(&t->word_len, &c2, need, sizeof *t->word_len, "words", err) ||
            grow(&t->word_count, &c3, need, sizeof *t->word_count, "words", err) ||
            grow(&t->word_hash, &c4, need, sizeof *t->word_hash, "words", err))
            return -1;
        t->cap_words = c1;
    }
    size_t k = t->n_words++;
    t->word_off[k] = t->word_bytes.n;
    t->word_len[k] = (uint32_t)n;
    t->word_count[k] = 1;
    t->word_hash[k] = h;
    t->word_slots[i] = (uint32_t)k + 1;
    if (tokbuf_append(&t->word_bytes, w, n, err)) return -1;
    if (t->n_words * 2 > t->word_mask + 1) return word_table_grow(t, err);
    return 0;
}

int bpe_trainer_add(BpeTrainer *t, const char *text, size_t len, Err *err) {
    if (t->trained) return err_set(err, "bpe_trainer_add: the trainer has already been trained");
    t->stats.documents++;
    t->stats.bytes += len;
    if (len == 0) return 0;
    /* the normalizer: "▁" first, every ' ' becomes "▁" */
    TokBuf *b = &t->norm;
    b->n = 0;
    if (tokbuf_reserve(b, META_LEN + 3 * len, err)) return -1;
    memcpy(b->p, META, META_LEN);
    size_t n = META_LEN;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(b->p + n, META, META_LEN);
            n += META_LEN;
        } else {
            b->p[n++] = text[i];
        }
    }
    /* words: cut before each run of "▁" that follows another character (as tokenizer.c) */
    const char *s = b->p;
    size_t start = 0, i = 0;
    int prev_meta = 0;
    while (i < n) {
        if (s[i] == META[0] && i + META_LEN <= n && memcmp(s + i, META, META_LEN) == 0) {
            if (!prev_meta && i > start) {
                if (count_word(t, s + start, i - start, err)) return -1;
                t->stats.words++;
                start = i;
            }
            prev_meta = 1;
            i += META_LEN;
        } else {
            prev_meta = 0;
            i++;
        }
    }
    if (count_word(t, s + start, n - start, err)) return -1;
    t->stats.words++;
    return 0;
}

/* ---------------------------------------------------------------- pieces */

static int32_t piece_find(const BpeTrainer *t, const char *s, size_t n) {
    if (!t->piece_slots) return -1;
    uint32_t i = slot_of(tok_hash(s, n), t->piece_mask);
    while (t->piece_slots[i]) {
        uint32_t id = t->piece_slots[i] - 1;
        if (t->piece_len[id] == n && memcmp(t->piece_bytes.p + t->piece_off[id], s, n) == 0) return (int32_t)id;
        i = (i + 1) & t->piece_mask;
    }
    return -1;
}

static int piece_slots_rebuild(BpeTrainer *t, uint32_t size, Err *err) {
    uint32_t *slots = err_calloc(size, sizeof *slots, "the piece table", err);
    if (!slots) return -1;
    for (int id = 0; id < t->n_pieces; id++) {
        uint32_t i = slot_of(tok_hash(t->piece_bytes.p + t->piece_off[id], t->piece_len[id]), size - 1);
        while (slots[i]) i = (i + 1) & (size - 1);
        slots[i] = (uint32_t)id + 1;
    }
    free(t->piece_slots);
    t->piece_slots = slots;
    t->piece_mask = size - 1;
    return 0;
}

/* Appends a new piece (the caller has checked it is not there yet); returns its id or -1. */
static int32_t piece_add(BpeTrainer *t, const char *s, size_t n, int chars, Err *err) {
    if (t->n_pieces >= t->cap_pieces) {
        size_t c1 = (size_t)t->cap_pieces, c2 = c1, c3 = c1;
        size_t need = (size_t)t->n_pieces + 1;
        if (grow(&t->piece_off, &c1, need, sizeof *t->piece_off, "pieces", err) ||
            grow(&t->piece_len, &c2, need, sizeof *t->piece_len, "pieces", err) ||
            grow(&t->piece_chars, &c3, need, sizeof *t->piece_chars, "pieces", err))
            return -1;
        t->cap_pieces = (int)c1;
    }
    int32_t id = t->n_pieces++;
    t->piece_off[id] = (uint32_t)t->piece_bytes.n;
    t->piece_len[id] = (uint32_t)n;
    t->piece_chars[id] = chars;
    if (tokbuf_append(&t->piece_bytes, s, n, err) || tokbuf_append(&t->piece_bytes, "", 1, err)) return -1;
    if (!t->piece_slots || (uint32_t)t->n_pieces * 2 > t->piece_mask + 1) {
        uint32_t size = t->piece_slots ? (t->piece_mask + 1) * 2 : 1024;
        if (piece_slots_rebuild(t, size, err)) return -1;
    } else {
        uint32_t i = slot_of(tok_hash(s, n), t->piece_mask);
        while (t->piece_slots[i]) i = (i + 1) & t->piece_mask;
        t->piece_slots[i] = (uint32_t)id + 1;
    }
    return id;
}

const char *bpe_trainer_piece(const BpeTrainer *t, int id) {
    if (!t->trained || id < 0 || id >= t->n_pieces) return NULL;
    return t->piece_bytes.p + t->piece_off[id];
}

int bpe_trainer_merge(const BpeTrainer *t, int i, int32_t *left, int32_t *right) {
    if (!t->trained || i < 0 || i >= t->n_merges) return -1;
    *left = t->merges[2 * i];
    *right = t->merges[2 * i + 1];
    return 0;
}

/* ---------------------------------------------------------------- alphabet */

static int char_table_put(BpeTrainer *t, uint32_t cp, uint64_t count, Err *err) {
    if (!t->char_keys || (t->n_chars + 1) * 2 > t->char_mask + 1) {
        uint32_t size = t->char_keys ? (t->char_mask + 1) * 2 : 4096;
        uint32_t *keys = err_calloc(size, sizeof *keys, "the character table", err);
        uint64_t *counts = err_calloc(size, sizeof *counts, "the character table", err);
        if (!keys || !counts) {
            free(keys);
            free(counts);
            return -1;
        }
        for (uint32_t k = 0; t->char_keys && k <= t->char_mask; k++) {
            if (!t->char_keys[k]) continue;
            uint32_t i = slot_of(pair_hash((int32_t)t->char_keys[k], 0), size - 1);
            while (keys[i]) i = (i + 1) & (size - 1);
            keys[i] = t->char_keys[k];
            counts[i] = t->char_counts[k];
        }
        free(t->char_keys);
        free(t->char_counts);
        t->char_keys = keys;
        t->char_counts = counts;
        t->char_mask = size - 1;
    }
    uint32_t key = cp + 1, i = slot_of(pair_hash((int32_t)key, 0), t->char_mask);
    while (t->char_keys[i] && t->char_keys[i] != key) i = (i + 1) & t->char_mask;
    if (!t->char_keys[i]) {
        t->char_keys[i] = key;
        t->n_chars++;
    }
    t->char_counts[i] += count;
    return 0;
}

/* The slot of cp in the character table, or -1. */
static int64_t char_slot(const BpeTrainer *t, uint32_t cp) {
    if (!t->char_keys) return -1;
    uint32_t key = cp + 1, i = slot_of(pair_hash((int32_t)key, 0), t->char_mask);
    while (t->char_keys[i]) {
        if (t->char_keys[i] == key) return i;
        i = (i + 1) & t->char_mask;
    }
    return -1;
}

static int by_count_then_cp(const void *x, const void *y) {
    const CharCount *a = x, *b = y;
    if (a->count != b->count) return a->count > b->count ? -1 : 1;
    return a->cp < b->cp ? -1 : a->cp > b->cp;
}

/* Counts characters over the words, picks the alphabet and gives each of its characters a
** piece; char_ids[slot] is then its id, or -1. */
static int choose_alphabet(BpeTrainer *t, Err *err) {
    for (size_t w = 0; w < t->n_words; w++) {
        const uint8_t *p = (const uint8_t *)t->word_bytes.p + t->word_off[w];
        size_t n = t->word_len[w];
        uint64_t c = t->word_count[w];
        for (size_t i = 0; i < n;) {
            size_t len = tok_utf8_valid(p + i, n - i);
            t->stats.units += c;
            if (len == 0) {
                i++;
                continue;
            }
            if (char_table_put(t, utf8_cp(p + i, len), c, err)) return -1;
            i += len;
        }
    }
    t->stats.chars_seen = (int)t->n_chars;
    t->char_ids = err_malloc(((size_t)t->char_mask + 1) * sizeof *t->char_ids, "the character table", err);
    CharCount *list = err_malloc((size_t)t->n_chars * sizeof *list + 1, "the character list", err);
    if (!t->char_ids || !list) {
        free(list);
        return -1;
    }
    size_t n = 0;
    for (uint32_t k = 0; t->char_keys && k <= t->char_mask; k++) {
        t->char_ids[k] = -1;
        if (t->char_keys[k] && t->char_keys[k] != 1) /* not NUL: JSON keys cannot hold it */
            list[n++] = (CharCount){t->char_keys[k] - 1, t->char_counts[k]};
    }
    qsort(list, n, sizeof *list, by_count_then_cp);
    int room = (t->opt.vocab_size - BPE_TRAIN_RESERVED + 1) / 2; /* at least half the pieces are merges */
    double goal = t->opt.char_coverage * (double)t->stats.units;
    uint64_t covered = 0;
    int rc = 0;
    for (size_t k = 0; k < n && t->stats.alphabet < room; k++) {
        if ((double)covered >= goal) break;
        char s[4];
        size_t len = tok_utf8_put(s, list[k].cp);
        int32_t id = piece_add(t, s, len, 1, err);
        if (id < 0) {
            rc = -1;
            break;
        }
        t->char_ids[char_slot(t, list[k].cp)] = id;
        covered += list[k].count;
        t->stats.alphabet++;
    }
    t->stats.units_covered = covered;
    free(list);
    return rc;
}

/* ---------------------------------------------------------------- pairs */

static int allowed(const BpeTrainer *t, int32_t a, int32_t b) {
    return a >= 0 && b >= 0 && t->piece_chars[a] + t->piece_chars[b] <= t->opt.max_piece_chars;
}

static uint32_t pair_find(const BpeTrainer *t, int32_t a, int32_t b) {
    if (!t->pair_slots) return NO_PAIR;
    uint32_t i = slot_of(pair_hash(a, b), t->pair_mask);
    while (t->pair_slots[i]) {
        uint32_t k = t->pair_slots[i] - 1;
        if (t->pairs[k].a == a && t->pairs[k].b == b) return k;
        i = (i + 1) & t->pair_mask;
    }
    return NO_PAIR;
}

static int pair_slots_rebuild(BpeTrainer *t, uint32_t size, Err *err) {
    uint32_t *slots = err_calloc(size, sizeof *slots, "the pair table", err);
    if (!slots) return -1;
    for (size_t k = 0; k < t->n_pairs; k++) {
        uint32_t i = slot_of(pair_hash(t->pairs[k].a, t->pairs[k].b), size - 1);
        while (slots[i]) i = (i + 1) & (size - 1);
        slots[i] = (uint32_t)k + 1;
    }
    free(t->pair_slots);
    t->pair_slots = slots;
    t->pair_mask = size - 1;
    return 0;
}

/* The index of pair (a, b), added with count 0 if new; NO_PAIR on out-of-memory. */
static uint32_t pair_get(BpeTrainer *t, int32_t a, int32_t b, Err *err) {
    uint32_t k = pair_find(t, a, b);
    if (k != NO_PAIR) return k;
    if (t->n_pairs >= NO_PAIR - 1) {
        err_set(err, "more than 4 billion distinct pairs: expected fewer");
        return NO_PAIR;
    }
    if (grow(&t->pairs, &t->cap_pairs, t->n_pairs + 1, sizeof *t->pairs, "pairs", err)) return NO_PAIR;
    k = (uint32_t)t->n_pairs++;
    t->pairs[k] = (Pair){.a = a, .b = b, .last_word = NO_WORD};
    if (!t->pair_slots || t->n_pairs * 2 > (size_t)t->pair_mask + 1) {
        if (pair_slots_rebuild(t, t->pair_slots ? (t->pair_mask + 1) * 2 : 1u << 16, err)) return NO_PAIR;
    } else {
        uint32_t i = slot_of(pair_hash(a, b), t->pair_mask);
        while (t->pair_slots[i]) i = (i + 1) & t->pair_mask;
        t->pair_slots[i] = k + 1;
    }
    return k;
}

/* Records that word w holds pair k (once per run of calls for the same word). */
static int pair_add_word(BpeTrainer *t, uint32_t k, uint32_t w, Err *err) {
    Pair *p = &t->pairs[k];
    if (p->last_word == w) return 0;
    if (p->n_words == p->cap_words) {
        size_t cap = p->cap_words;
        if (grow(&p->words, &cap, (size_t)p->n_words + 1, sizeof *p->words, "word references", err)) return -1;
        if (cap > UINT32_MAX) cap = UINT32_MAX;
        p->cap_words = (uint32_t)cap;
    }
    p->words[p->n_words++] = w;
    p->last_word = w;
    return 0;
}

/* ---------------------------------------------------------------- the heap (max count, then min ids) */

static int heap_above(const HeapEnt *x, const HeapEnt *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int heap_push(BpeTrainer *t, HeapEnt e, Err *err) {
    if (grow(&t->heap, &t->cap_heap, t->n_heap + 1, sizeof *t->heap, "heap entries", err)) return -1;
    size_t i = t->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_above(&e, &t->heap[parent])) break;
        t->heap[i] = t->heap[parent];
        i = parent;
    }
    t->heap[i] = e;
    return 0;
}

static HeapEnt heap_pop(BpeTrainer *t) {
    HeapEnt *h = t->heap, top = h[0], last = h[--t->n_heap];
    size_t i = 0, n = t->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_above(&h[c + 1], &h[c])) c++;
        if (!heap_above(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = last;
    return top;
}

/* ---------------------------------------------------------------- training */

/* Turns each counted word into symbols (alphabet ids; -1 for a run of anything else). */
static int build_symbols(BpeTrainer *t, Err *err) {
    size_t total = t->word_bytes.n;
    t->syms = err_malloc((total ? total : 1) * sizeof *t->syms, "word symbols", err);
    t->sym_off = err_malloc((t->n_words ? t->n_words : 1) * sizeof *t->sym_off, "word symbols", err);
    t->sym_len = err_calloc(t->n_words ? t->n_words : 1, sizeof *t->sym_len, "word symbols", err);
    t->word_stamp = err_calloc(t->n_words ? t->n_words : 1, sizeof *t->word_stamp, "word symbols", err);
    if (!t->syms || !t->sym_off || !t->sym_len || !t->word_stamp) return -1;
    size_t used = 0;
    for (size_t w = 0; w < t->n_words; w++) {
        const uint8_t *p = (const uint8_t *)t->word_bytes.p + t->word_off[w];
        size_t n = t->word_len[w], k = 0;
        int32_t *s = t->syms + used;
        for (size_t i = 0; i < n;) {
            size_t len = tok_utf8_valid(p + i, n - i);
            int32_t id = -1;
            if (len == 0) {
                len = 1;
            } else {
                int64_t slot = char_slot(t, utf8_cp(p + i, len));
                if (slot >= 0) id = t->char_ids[slot];
            }
            if (id >= 0 || k == 0 || s[k - 1] >= 0) s[k++] = id;
            i += len;
        }
        int pairs = 0;
        for (size_t i = 0; i + 1 < k && !pairs; i++) pairs = allowed(t, s[i], s[i + 1]);
        t->sym_off[w] = used;
        t->sym_len[w] = pairs ? (uint32_t)k : 0; /* a word with nothing to merge is dropped */
        if (pairs) used += k;
    }
    return 0;
}

static int count_pairs(BpeTrainer *t, Err *err) {
    for (size_t w = 0; w < t->n_words; w++) {
        const int32_t *s = t->syms + t->sym_off[w];
        uint64_t c = t->word_count[w];
        for (uint32_t i = 0; i + 1 < t->sym_len[w]; i++) {
            if (!allowed(t, s[i], s[i + 1])) continue;
            uint32_t k = pair_get(t, s[i], s[i + 1], err);
            if (k == NO_PAIR || pair_add_word(t, k, (uint32_t)w, err)) return -1;
            t->pairs[k].count += (int64_t)c;
        }
    }
    for (size_t k = 0; k < t->n_pairs; k++)
        if (heap_push(t, (HeapEnt){t->pairs[k].count, t->pairs[k].a, t->pairs[k].b}, err)) return -1;
    return 0;
}

/* Adds delta (times the word's count) to pair (x, y) if it is one that is counted. A pair with
** m is new to the word: the word is recorded in its list, and the pair is pushed on the heap
** once per step (its count went up; other pairs' counts only go down, which the heap learns
** lazily). */
static int pair_change(BpeTrainer *t, int32_t x, int32_t y, int64_t delta, uint32_t w, int32_t m, uint32_t step,
                       Err *err) {
    if (!allowed(t, x, y)) return 0;
    uint32_t k = delta > 0 ? pair_get(t, x, y, err) : pair_find(t, x, y);
    if (k == NO_PAIR) return delta > 0 ? -1 : 0;
    t->pairs[k].count += delta;
    if (delta < 0 || (x != m && y != m)) return 0;
    if (pair_add_word(t, k, w, err)) return -1;
    if (t->pairs[k].stamp != step) {
        t->pairs[k].stamp = step;
        if (grow(&t->touched, &t->cap_touched, t->n_touched + 1, sizeof *t->touched, "pairs", err)) return -1;
        t->touched[t->n_touched++] = k;
    }
    return 0;
}

/* Replaces every (a, b) in word w by m, left to right, and updates the pair counts around each
** replacement, one at a time: ... L a b R ... becomes ... L m R, so (L, a), (a, b) and (b, R)
** lose the word's count and (L, m) and (m, R) gain it, where L is the symbol now on the left
** (m itself after an adjacent replacement). The cost is one pass over the word plus a few
** lookups per replacement, however long the word. */
static int merge_word(BpeTrainer *t, uint32_t w, int32_t a, int32_t b, int32_t m, uint32_t step, Err *err) {
    int32_t *s = t->syms + t->sym_off[w];
    uint32_t n = t->sym_len[w], j = 0;
    int64_t c = (int64_t)t->word_count[w];
    for (uint32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            int32_t left = j > 0 ? s[j - 1] : -1, right = i + 2 < n ? s[i + 2] : -1;
            if ((j > 0 && pair_change(t, left, a, -c, w, m, step, err)) || pair_change(t, a, b, -c, w, m, step, err) ||
                (right >= 0 && pair_change(t, b, right, -c, w, m, step, err)) ||
                (j > 0 && pair_change(t, left, m, c, w, m, step, err)) ||
                (right >= 0 && pair_change(t, m, right, c, w, m, step, err)))
                return -1;
            s[j++] = m;
            i += 2;
        } else {
            s[j++] = s[i++];
        }
    }
    t->sym_len[w] = j; /* unchanged when the reference was stale */
    return 0;
}

static int add_merge(BpeTrainer *t, int32_t a, int32_t b, Err *err) {
    size_t cap = (size_t)t->cap_merges;
    if (grow(&t->merges, &cap, 2 * ((size_t)t->n_merges + 1), sizeof *t->merges, "merges", err)) return -1;
    t->cap_merges = (int)cap;
    t->merges[2 * t->n_merges] = a;
    t->merges[2 * t->n_merges + 1] = b;
    t->n_merges++;
    return 0;
}

static int learn_merges(BpeTrainer *t, Err *err) {
    TokBuf joined = {0};
    uint32_t step = 0;
    int rc = 0;
    while (t->n_pieces < t->opt.vocab_size && t->n_heap > 0) {
        HeapEnt e = heap_pop(t);
        uint32_t k = pair_find(t, e.a, e.b);
        Pair *p = &t->pairs[k];
        if (p->forbidden || p->count <= 0) continue;
        if (p->count != e.count) { /* stale: counts only fall, except for pairs just pushed */
            if ((rc = heap_push(t, (HeapEnt){p->count, e.a, e.b}, err))) break;
            continue;
        }
        joined.n = 0;
        if ((rc = tokbuf_append(&joined, t->piece_bytes.p + t->piece_off[e.a], t->piece_len[e.a], err)) ||
            (rc = tokbuf_append(&joined, t->piece_bytes.p + t->piece_off[e.b], t->piece_len[e.b], err)))
            break;
        int32_t m = piece_find(t, joined.p, joined.n);
        if (m >= 0 && m < BPE_TRAIN_RESERVED) {
            p->forbidden = 1;
            continue;
        }
        if (m < 0) m = piece_add(t, joined.p, joined.n, t->piece_chars[e.a] + t->piece_chars[e.b], err);
        if (m < 0 || add_merge(t, e.a, e.b, err)) {
            rc = -1;
            break;
        }
        step++;
        uint32_t *words = p->words, n_words = p->n_words;
        p->words = NULL;
        p->n_words = p->cap_words = 0;
        p->last_word = NO_WORD;
        t->n_touched = 0;
        for (uint32_t i = 0; i < n_words && rc == 0; i++) {
            uint32_t w = words[i];
            if (t->word_stamp[w] == step) continue;
            t->word_stamp[w] = step;
            rc = merge_word(t, w, e.a, e.b, m, step, err);
        }
        free(words);
        for (size_t i = 0; i < t->n_touched && rc == 0; i++) {
            const Pair *q = &t->pairs[t->touched[i]];
            if (q->count > 0) rc = heap_push(t, (HeapEnt){q->count, q->a, q->b}, err);
        }
        if (rc) break;
    }
    tokbuf_free(&joined);
    return rc;
}

int bpe_trainer_train(BpeTrainer *t, BpeTrainStats *stats, Err *err) {
    if (t->trained) return err_set(err, "bpe_trainer_train: the trainer has already been trained");
    double t0 = now_seconds();
    t->stats.distinct_words = t->n_words;
    /* reserved pieces: never merged (their length is above any limit) */
    static const char *const specials[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++)
        if (piece_add(t, specials[i], strlen(specials[i]), 1 << 20, err) < 0) return -1;
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        if (piece_add(t, s, 6, 1 << 20, err) < 0) return -1;
    }
    int rc = choose_alphabet(t, err);
    if (rc == 0) rc = build_symbols(t, err);
    if (rc == 0) rc = count_pairs(t, err);
    if (rc == 0) rc = learn_merges(t, err);
    free_training_state(t);
    free_words(t);
    if (rc) return -1;
    t->trained = 1;
    t->stats.merges = t->n_merges;
    t->stats.vocab_size = t->n_pieces;
    t->stats.seconds = now_seconds() - t0;
    if (stats) *stats = t->stats;
    if (t->n_pieces < t->opt.vocab_size) {
        t->trained = 0;
        return err_set(err, "expected text enough for %d ids, found text for %d (259 reserved, %d characters, %d "
                            "merges; no pair of neighbouring pieces is left to merge): give more text or fewer ids",
                       t->opt.vocab_size, t->n_pieces, t->stats.alphabet, t->n_merges);
    }
    return 0;
}

/* ---------------------------------------------------------------- tokenizer.json */

/* Adds to obj and notes a failed allocation in *oom. */
static cJSON *add(cJSON *obj, const char *key, cJSON *item, int *oom) {
    if (!item || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        *oom = 1;
        return NULL;
    }
    return item;
}

static cJSON *push(cJSON *arr, cJSON *item, int *oom) {
    if (!item || !cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        *oom = 1;
        return NULL;
    }
    return item;
}

static cJSON *typed(const char *type, int *oom) {
    cJSON *o = cJSON_CreateObject();
    if (o) add(o, "type", cJSON_CreateString(type), oom);
    else *oom = 1;
    return o;
}

static cJSON *string_pattern(const char *s, int *oom) {
    cJSON *o = cJSON_CreateObject();
    if (o) add(o, "String", cJSON_CreateString(s), oom);
    else *oom = 1;
    return o;
}

/* {"SpecialToken": {"id": "<s>", "type_id": n}} or {"Sequence": {"id": "A", "type_id": n}} */
static cJSON *template_item(const char *kind, const char *id, int type_id, int *oom) {
    cJSON *o = cJSON_CreateObject(), *in = cJSON_CreateObject();
    if (!o || !in) {
        cJSON_Delete(o);
        cJSON_Delete(in);
        *oom = 1;
        return NULL;
    }
    add(in, "id", cJSON_CreateString(id), oom);
    add(in, "type_id", cJSON_CreateNumber(type_id), oom);
    add(o, kind, in, oom);
    return o;
}

static cJSON *build_json(const BpeTrainer *t, int *oom) {
    cJSON *root = cJSON_CreateObject();
    if (!root) {
        *oom = 1;
        return NULL;
    }
    add(root, "version", cJSON_CreateString("1.0"), oom);
    add(root, "truncation", cJSON_CreateNull(), oom);
    add(root, "padding", cJSON_CreateNull(), oom);
    cJSON *added = add(root, "added_tokens", cJSON_CreateArray(), oom);
    for (int id = 0; id < 3 && added; id++) {
        cJSON *a = push(added, cJSON_CreateObject(), oom);
        if (!a) break;
        add(a, "id", cJSON_CreateNumber(id), oom);
        add(a, "content", cJSON_CreateString(t->piece_bytes.p + t->piece_off[id]), oom);
        add(a, "single_word", cJSON_CreateFalse(), oom);
        add(a, "lstrip", cJSON_CreateFalse(), oom);
        add(a, "rstrip", cJSON_CreateFalse(), oom);
        add(a, "normalized", cJSON_CreateFalse(), oom);
        add(a, "special", cJSON_CreateTrue(), oom);
    }
    cJSON *norm = add(root, "normalizer", typed("Sequence", oom), oom);
    cJSON *norms = norm ? add(norm, "normalizers", cJSON_CreateArray(), oom) : NULL;
    if (norms) {
        cJSON *prep = push(norms, typed("Prepend", oom), oom);
        if (prep) add(prep, "prepend", cJSON_CreateString(META), oom);
        cJSON *repl = push(norms, typed("Replace", oom), oom);
        if (repl) {
            add(repl, "pattern", string_pattern(" ", oom), oom);
            add(repl, "content", cJSON_CreateString(META), oom);
        }
    }
    add(root, "pre_tokenizer", cJSON_CreateNull(), oom);
    cJSON *post = add(root, "post_processor", typed("TemplateProcessing", oom), oom);
    if (post) {
        cJSON *single = add(post, "single", cJSON_CreateArray(), oom);
        if (single) {
            push(single, template_item("SpecialToken", "<s>", 0, oom), oom);
            push(single, template_item("Sequence", "A", 0, oom), oom);
        }
        cJSON *pair = add(post, "pair", cJSON_CreateArray(), oom);
        if (pair) {
            push(pair, template_item("SpecialToken", "<s>", 0, oom), oom);
            push(pair, template_item("Sequence", "A", 0, oom), oom);
            push(pair, template_item("SpecialToken", "<s>", 1, oom), oom);
            push(pair, template_item("Sequence", "B", 1, oom), oom);
        }
        cJSON *specials = add(post, "special_tokens", cJSON_CreateObject(), oom);
        cJSON *bos = specials ? add(specials, "<s>", cJSON_CreateObject(), oom) : NULL;
        if (bos) {
            const int one[1] = {1};
            const char *const names[1] = {"<s>"};
            add(bos, "id", cJSON_CreateString("<s>"), oom);
            add(bos, "ids", cJSON_CreateIntArray(one, 1), oom);
            add(bos, "tokens", cJSON_CreateStringArray(names, 1), oom);
        }
    }
    cJSON *dec = add(root, "decoder", typed("Sequence", oom), oom);
    cJSON *decs = dec ? add(dec, "decoders", cJSON_CreateArray(), oom) : NULL;
    if (decs) {
        cJSON *repl = push(decs, typed("Replace", oom), oom);
        if (repl) {
            add(repl, "pattern", string_pattern(META, oom), oom);
            add(repl, "content", cJSON_CreateString(" "), oom);
        }
        push(decs, typed("ByteFallback", oom), oom);
        push(decs, typed("Fuse", oom), oom);
        cJSON *strip = push(decs, typed("Strip", oom), oom);
        if (strip) {
            add(strip, "content", cJSON_CreateString(" "), oom);
            add(strip, "start", cJSON_CreateNumber(1), oom);
            add(strip, "stop", cJSON_CreateNumber(0), oom);
        }
    }
    cJSON *model = add(root, "model", typed("BPE", oom), oom);
    if (model) {
        add(model, "dropout", cJSON_CreateNull(), oom);
        add(model, "unk_token", cJSON_CreateString("<unk>"), oom);
        add(model, "continuing_subword_prefix", cJSON_CreateNull(), oom);
        add(model, "end_of_word_suffix", cJSON_CreateNull(), oom);
        add(model, "fuse_unk", cJSON_CreateTrue(), oom);
        add(model, "byte_fallback", cJSON_CreateTrue(), oom);
        cJSON *vocab = add(model, "vocab", cJSON_CreateObject(), oom);
        for (int id = 0; id < t->n_pieces && vocab && !*oom; id++)
            add(vocab, t->piece_bytes.p + t->piece_off[id], cJSON_CreateNumber(id), oom);
        cJSON *merges = add(model, "merges", cJSON_CreateArray(), oom);
        TokBuf s = {0};
        for (int i = 0; i < t->n_merges && merges && !*oom; i++) {
            int32_t a = t->merges[2 * i], b = t->merges[2 * i + 1];
            s.n = 0;
            if (tokbuf_append(&s, t->piece_bytes.p + t->piece_off[a], t->piece_len[a], NULL) ||
                tokbuf_append(&s, " ", 1, NULL) ||
                tokbuf_append(&s, t->piece_bytes.p + t->piece_off[b], t->piece_len[b], NULL)) {
                *oom = 1;
                break;
            }
            push(merges, cJSON_CreateString(s.p), oom);
        }
        tokbuf_free(&s);
    }
    return root;
}

char *bpe_trainer_json(const BpeTrainer *t, Err *err) {
    if (!t->trained) {
        err_set(err, "bpe_trainer_json: train the vocabulary first");
        return NULL;
    }
    int oom = 0;
    cJSON *root = build_json(t, &oom);
    char *text = oom ? NULL : cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) err_set(err, "out of memory writing the tokenizer.json text (%d pieces, %d merges)", t->n_pieces,
                       t->n_merges);
    return text;
}

int bpe_trainer_save(const BpeTrainer *t, const char *path, Err *err) {
    char *text = bpe_trainer_json(t, err);
    if (!text) return -1;
    AtomicFile af;
    int rc = atomic_file_open(&af, path, err);
    if (rc == 0) {
        size_t n = strlen(text);
        if (atomic_file_write(&af, text, n, err) || atomic_file_write(&af, "\n", 1, err)) {
            atomic_file_abort(&af);
            rc = -1;
        } else {
            rc = atomic_file_commit(&af, err);
        }
    }
    free(text);
    return rc;
}
