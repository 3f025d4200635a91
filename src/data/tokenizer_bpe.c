/*
** tokenizer_bpe.c — the BPE model: the vocabulary and merge maps, the per-word merge loop and
** the per-thread word cache.
**
** A word is first split into symbols: its characters (SentencePiece style) or its bytes
** (byte-level style), each the id of its one-character piece, else byte-fallback tokens, else
** unk. Then the pair with the lowest priority (HF: merge rank; tokenizer.bin: minus the score
** of the merged piece), leftmost on ties, is merged, again and again until no adjacent pair
** is a merge. Pairs live in a binary heap and symbols in a doubly linked list over an array,
** so a word of n symbols costs O(n log n) (llama2.c rescans all pairs after every merge:
** O(n^2)). Heap entries are never removed: an entry whose left symbol or right neighbour has
** changed since it was pushed is stale and skipped when popped.
**
** This file must never read outside a word or trust a map it did not fill: every lookup is
** bounded by the table's mask and compares whole keys.
*/
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

enum {
    TOK_CACHE_MAX_WORD = 64,     /* longer words are rare and rarely repeat: not cached */
    TOK_CACHE_SLOTS = 1 << 16,   /* cleared when 3/4 full */
};

/* ---------------------------------------------------------------- hashing */

static uint64_t mix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

uint64_t tok_hash(const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, p, 8);
        h = (h ^ mix64(k)) * 0x9E3779B97F4A7C15ull;
        p += 8;
        n -= 8;
    }
    uint64_t k = 0;
    for (size_t i = 0; i < n; i++) k |= (uint64_t)p[i] << (8 * i);
    return mix64(h ^ k ^ 0x2545F4914F6CDD1Dull);
}

static uint32_t table_size_for(size_t count) {
    uint32_t size = 16;
    while (size < 2 * count + 1) size <<= 1;
    return size;
}

/* ---------------------------------------------------------------- vocabulary map */

int tok_vocab_index(Tokenizer *t, const uint8_t *in_vocab, Err *err) {
    size_t count = 0;
    for (int id = 0; id < t->n_vocab; id++)
        if ((t->attr[id] & TOK_ATTR_PRESENT) && (!in_vocab || in_vocab[id])) count++;
    uint32_t size = table_size_for(count);
    free(t->vmap);
    t->vmap = err_calloc(size, sizeof *t->vmap, "the vocabulary map", err);
    if (!t->vmap) return -1;
    t->vmap_mask = size - 1;
    for (int id = 0; id < t->n_vocab; id++) {
        if (!(t->attr[id] & TOK_ATTR_PRESENT) || (in_vocab && !in_vocab[id])) continue;
        const char *s = t->arena.p + t->piece_off[id];
        size_t n = t->piece_len[id];
        uint32_t i = (uint32_t)tok_hash(s, n) & t->vmap_mask;
        int dup = 0;
        while (t->vmap[i]) {
            uint32_t other = t->vmap[i] - 1;
            if (t->piece_len[other] == n && memcmp(t->arena.p + t->piece_off[other], s, n) == 0) {
                dup = 1; /* the lower id keeps the string */
                break;
            }
            i = (i + 1) & t->vmap_mask;
        }
        if (!dup) t->vmap[i] = (uint32_t)id + 1;
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        t->ascii_id[c] = tok_vocab_find(t, &ch, 1);
    }
    return 0;
}

int32_t tok_vocab_find(const Tokenizer *t, const char *s, size_t n) {
    if (!t->vmap) return -1;
    uint32_t i = (uint32_t)tok_hash(s, n) & t->vmap_mask;
    while (t->vmap[i]) {
        uint32_t id = t->vmap[i] - 1;
        if (t->piece_len[id] == n && memcmp(t->arena.p + t->piece_off[id], s, n) == 0) return (int32_t)id;
        i = (i + 1) & t->vmap_mask;
    }
    return -1;
}

/* ---------------------------------------------------------------- merge map */

/* Keys are (left << 32 | right) + 1 so that 0 marks an empty slot. */
static uint64_t pair_key(int32_t left, int32_t right) {
    return ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
}

static uint32_t pair_slot(uint64_t key, uint32_t mask) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

int tok_merges_alloc(Tokenizer *t, size_t n, Err *err) {
    uint32_t size = table_size_for(n);
    free(t->mmap);
    t->mmap = err_calloc(size, sizeof *t->mmap, "the merge map", err);
    if (!t->mmap) return -1;
    t->mmap_mask = size - 1;
    t->n_merges = 0;
    return 0;
}

int tok_merges_put(Tokenizer *t, int32_t left, int32_t right, int32_t merged, float prio, int keep_first) {
    uint64_t key = pair_key(left, right);
    uint32_t i = pair_slot(key, t->mmap_mask);
    while (t->mmap[i].key) {
        if (t->mmap[i].key == key) {
            if (!keep_first) {
                t->mmap[i].prio = prio;
                t->mmap[i].merged = merged;
            }
            return 0;
        }
        i = (i + 1) & t->mmap_mask;
    }
    t->mmap[i].key = key;
    t->mmap[i].prio = prio;
    t->mmap[i].merged = merged;
    t->n_merges++;
    return 1;
}

const TokMerge *tok_merges_find(const Tokenizer *t, int32_t left, int32_t right) {
    if (!t->n_merges) return NULL;
    uint64_t key = pair_key(left, right);
    uint32_t i = pair_slot(key, t->mmap_mask);
    while (t->mmap[i].key) {
        if (t->mmap[i].key == key) return &t->mmap[i];
        i = (i + 1) & t->mmap_mask;
    }
    return NULL;
}

/* ---------------------------------------------------------------- per-thread state */

int tok_state_init(TokState *s, size_t text_hint, Err *err) {
    memset(s, 0, sizeof *s);
    uint32_t slots = 256; /* about one distinct word per 16 bytes of text, within bounds */
    while (slots < TOK_CACHE_SLOTS && slots < text_hint / 16) slots <<= 1;
    s->cache = err_calloc(slots, sizeof *s->cache, "the word cache", err);
    if (!s->cache) return -1;
    s->cache_mask = slots - 1;
    return 0;
}

void tok_state_free(TokState *s) {
    tokbuf_free(&s->t1);
    tokbuf_free(&s->t2);
    tokbuf_free(&s->p1);
    tokbuf_free(&s->p2);
    tokbuf_free(&s->scratch);
    tokbuf_free(&s->cache_keys);
    free(s->w1);
    free(s->w2);
    free(s->seg);
    free(s->sym);
    free(s->prev);
    free(s->next);
    free(s->heap);
    free(s->cache);
    free(s->cache_ids);
    if (s->md) pcre2_match_data_free(s->md);
    if (s->mctx) pcre2_match_context_free(s->mctx);
    if (s->jit) pcre2_jit_stack_free(s->jit);
    memset(s, 0, sizeof *s);
}

static int state_reserve_symbols(TokState *s, size_t n, Err *err) {
    if (n <= s->sym_cap) return 0;
    size_t cap = s->sym_cap ? s->sym_cap : 64;
    while (cap < n) cap *= 2;
    int32_t *sym = realloc(s->sym, cap * sizeof *sym);
    if (sym) s->sym = sym;
    int32_t *prev = realloc(s->prev, cap * sizeof *prev);
    if (prev) s->prev = prev;
    int32_t *next = realloc(s->next, cap * sizeof *next);
    if (next) s->next = next;
    if (!sym || !prev || !next) return err_set(err, "out of memory for a word of %zu symbols", n);
    s->sym_cap = cap;
    return 0;
}

/* ---------------------------------------------------------------- word cache */

static void cache_clear(TokState *s) {
    memset(s->cache, 0, (size_t)(s->cache_mask + 1) * sizeof *s->cache);
    s->cache_used = 0;
    s->cache_keys.n = 0;
    s->cache_ids_n = 0;
}

/* hash is never 0 in a used slot (0 marks empty): callers pass hash | 1. */
static const TokCacheEnt *cache_find(const TokState *s, uint64_t hash, const char *w, size_t n) {
    uint32_t i = (uint32_t)hash & s->cache_mask;
    while (s->cache[i].hash) {
        const TokCacheEnt *e = &s->cache[i];
        if (e->hash == hash && e->key_len == n && memcmp(s->cache_keys.p + e->key_off, w, n) == 0) return e;
        i = (i + 1) & s->cache_mask;
    }
    return NULL;
}

static void cache_put(TokState *s, uint64_t hash, const char *w, size_t n, const int32_t *ids, size_t n_ids) {
    if (s->cache_used * 4 >= (s->cache_mask + 1) * 3) cache_clear(s);
    if (s->cache_ids_n + n_ids > s->cache_ids_cap) {
        size_t cap = s->cache_ids_cap ? s->cache_ids_cap * 2 : 1 << 16;
        while (cap < s->cache_ids_n + n_ids) cap *= 2;
        int32_t *p = realloc(s->cache_ids, cap * sizeof *p);
        if (!p) return; /* the cache is an optimization: skip on out-of-memory */
        s->cache_ids = p;
        s->cache_ids_cap = cap;
    }
    size_t key_off = s->cache_keys.n;
    if (tokbuf_append(&s->cache_keys, w, n, NULL)) return;
    uint32_t i = (uint32_t)hash & s->cache_mask;
    while (s->cache[i].hash) i = (i + 1) & s->cache_mask;
    TokCacheEnt *e = &s->cache[i];
    e->hash = hash;
    e->key_off = (uint32_t)key_off;
    e->key_len = (uint32_t)n;
    e->ids_off = (uint32_t)s->cache_ids_n;
    e->n_ids = (uint32_t)n_ids;
    memcpy(s->cache_ids + s->cache_ids_n, ids, n_ids * sizeof *ids);
    s->cache_ids_n += n_ids;
    s->cache_used++;
}

/* ---------------------------------------------------------------- heap of candidate merges */

static int heap_less(const TokHeapEnt *a, const TokHeapEnt *b) {
    return a->prio < b->prio || (a->prio == b->prio && a->pos < b->pos);
}

static int heap_push(TokState *s, size_t *n, TokHeapEnt e, Err *err) {
    if (*n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap + s->heap_cap / 2 : 256;
        TokHeapEnt *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return err_set(err, "out of memory for a merge queue of %zu entries", cap);
        s->heap = h;
        s->heap_cap = cap;
    }
    TokHeapEnt *h = s->heap;
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&e, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
    return 0;
}

static TokHeapEnt heap_pop(TokHeapEnt *h, size_t *n) {
    TokHeapEnt top = h[0];
    TokHeapEnt last = h[--(*n)];
    size_t i = 0, size = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= size) break;
        if (c + 1 < size && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (size) h[i] = last;
    return top;
}

/* Pushes the merge of symbol i with its right neighbour, if there is one. */
static int push_pair(const Tokenizer *t, TokState *s, size_t *hn, int32_t i, Err *err) {
    int32_t j = s->next[i];
    if (j < 0) return 0;
    const TokMerge *m = tok_merges_find(t, s->sym[i], s->sym[j]);
    if (!m) return 0;
    TokHeapEnt e = {m->prio, i, s->sym[i], s->sym[j], m->merged};
    return heap_push(s, hn, e, err);
}

/* Merges s->sym[0..n) in place (the linked list); returns the number of symbols left, which
** are then read by following next from 0. */
static int bpe_merge(const Tokenizer *t, TokState *s, size_t n, Err *err) {
    for (size_t i = 0; i < n; i++) {
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    if (n < 2 || !t->n_merges) return 0;
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (push_pair(t, s, &hn, (int32_t)i, err)) return -1;
    while (hn) {
        TokHeapEnt e = heap_pop(s->heap, &hn);
        int32_t i = e.pos;
        if (s->sym[i] != e.left) continue;
        int32_t j = s->next[i];
        if (j < 0 || s->sym[j] != e.right) continue;
        s->sym[i] = e.merged;
        s->sym[j] = -1;
        s->next[i] = s->next[j];
        if (s->next[j] >= 0) s->prev[s->next[j]] = i;
        if (s->prev[i] >= 0 && push_pair(t, s, &hn, s->prev[i], err)) return -1;
        if (push_pair(t, s, &hn, i, err)) return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- one word */

/* Appends the symbols of one unit (a character, or a byte in byte-level words) that has no
** piece of its own: its byte-fallback tokens, else unk (fused with a previous unk if asked). */
static int push_unknown(const Tokenizer *t, TokState *s, size_t *n, const uint8_t *u, size_t ulen, Err *err) {
    if (t->byte_fallback) {
        size_t k = 0;
        while (k < ulen && t->byte_id[u[k]] >= 0) k++;
        if (k == ulen) {
            for (k = 0; k < ulen; k++) s->sym[(*n)++] = t->byte_id[u[k]];
            return 0;
        }
    }
    if (t->unk_id < 0)
        return err_set(err, "%s: no token for the bytes 0x%02X... in the text, and the model has no byte "
                            "fallback and no unk_token",
                       t->path, u[0]);
    if (t->fuse_unk && *n > 0 && s->sym[*n - 1] == t->unk_id) return 0;
    s->sym[(*n)++] = t->unk_id;
    return 0;
}

int tok_model_word(const Tokenizer *t, TokState *s, const char *w, size_t n, TokenIds *out, Err *err) {
    if (n == 0) return 0;
    if (n > 0x7FFFFFF0u) /* symbols are int32 indices */
        return err_set(err, "%s: a word of %zu bytes without a break: expected at most 2 GB", t->path, n);
    uint64_t hash = 0;
    if (n <= TOK_CACHE_MAX_WORD) {
        hash = tok_hash(w, n) | 1;
        const TokCacheEnt *e = cache_find(s, hash, w, n);
        if (e) {
            for (uint32_t k = 0; k < e->n_ids; k++)
                if (tok_ids_push(out, s->cache_ids[e->ids_off + k], err)) return -1;
            return 0;
        }
    }
    const uint8_t *u = (const uint8_t *)w;
    if (t->ignore_merges) { /* a word that is a piece is that piece */
        int32_t id;
        if (t->byte_level) {
            s->scratch.n = 0;
            if (tokbuf_reserve(&s->scratch, 2 * n, err)) return -1;
            for (size_t i = 0; i < n; i++)
                s->scratch.n += tok_utf8_put(s->scratch.p + s->scratch.n, tok_byte_level_cp(u[i]));
            id = tok_vocab_find(t, s->scratch.p, s->scratch.n);
        } else {
            id = tok_vocab_find(t, w, n);
        }
        if (id >= 0) return tok_ids_push(out, id, err);
    }
    if (state_reserve_symbols(s, n, err)) return -1;
    size_t ns = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++) {
            if (t->bl_id[u[i]] >= 0)
                s->sym[ns++] = t->bl_id[u[i]];
            else if (push_unknown(t, s, &ns, u + i, 1, err))
                return -1;
        }
    } else {
        for (size_t i = 0; i < n;) {
            size_t len = tok_utf8_valid(u + i, n - i);
            if (len == 0) len = 1; /* an invalid byte is a unit of its own */
            int32_t id = len == 1 && u[i] < 128 ? t->ascii_id[u[i]] : tok_vocab_find(t, w + i, len);
            if (id >= 0)
                s->sym[ns++] = id;
            else if (push_unknown(t, s, &ns, u + i, len, err))
                return -1;
            i += len;
        }
    }
    if (bpe_merge(t, s, ns, err)) return -1;
    size_t first = out->n;
    for (int32_t i = 0; i >= 0 && ns > 0; i = s->next[i])
        if (tok_ids_push(out, s->sym[i], err)) return -1;
    if (hash) cache_put(s, hash, w, n, out->ids + first, out->n - first);
    return 0;
}
