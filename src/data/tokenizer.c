/*
** tokenizer.c — the tokenizer's pipeline: loading (tokenizer.bin here, tokenizer.json in
** tokenizer_hf.c), encoding (added tokens, normalizer, pre-tokenizer, model, post-processor),
** decoding, and encoding many documents on the thread pool.
**
** This module must never lose a byte of the text it is given: whatever the input (invalid
** UTF-8, NUL bytes, control characters), every byte ends up in some token, and decode gives
** it back (see tokenizer.h for the two documented exceptions the files' normalizers make).
** It must never crash on a file either: every field read from disk is checked first.
*/
#include "tokenizer.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "../util/fileio.h"
#include "../util/parallel.h"
#include "tokenizer_internal.h"

/* ---------------------------------------------------------------- small helpers */

int tokbuf_reserve(TokBuf *b, size_t extra, Err *err) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return err_set(err, "out of memory allocating %zu bytes of text", cap);
    b->p = p;
    b->cap = cap;
    return 0;
}

int tokbuf_append(TokBuf *b, const void *data, size_t n, Err *err) {
    if (tokbuf_reserve(b, n, err)) return -1;
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

void tokbuf_free(TokBuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

void token_ids_free(TokenIds *ids) {
    free(ids->ids);
    memset(ids, 0, sizeof *ids);
}

int tok_ids_push(TokenIds *ids, int32_t id, Err *err) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *p = realloc(ids->ids, cap * sizeof *p);
        if (!p) return err_set(err, "out of memory for %zu token ids", cap);
        ids->ids = p;
        ids->cap = cap;
    }
    ids->ids[ids->n++] = id;
    return 0;
}

size_t tok_utf8_valid(const uint8_t *p, size_t n) {
    if (n == 0) return 0;
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && p[1] > 0x9F) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && p[1] > 0x8F) return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

size_t tok_utf8_put(char *out, uint32_t cp) {
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | cp >> 6);
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | cp >> 12);
        o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | cp >> 18);
    o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68
** bytes (0-32, 127-160, 173) for U+0100 onwards, in byte order. */
uint32_t tok_byte_level_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return (uint32_t)b;
    if (b <= 32) return 256u + (uint32_t)b;
    if (b <= 160) return 256u + 33u + (uint32_t)(b - 127);
    return 256u + 33u + 34u; /* 173 */
}

int tok_alloc_ids(Tokenizer *t, int n, Err *err) {
    t->n_vocab = n;
    t->piece_off = err_calloc((size_t)n, sizeof *t->piece_off, "piece offsets", err);
    t->piece_len = err_calloc((size_t)n, sizeof *t->piece_len, "piece lengths", err);
    t->dec_off = err_calloc((size_t)n, sizeof *t->dec_off, "decoded offsets", err);
    t->dec_len = err_calloc((size_t)n, sizeof *t->dec_len, "decoded lengths", err);
    t->attr = err_calloc((size_t)n, sizeof *t->attr, "token attributes", err);
    if (!t->piece_off || !t->piece_len || !t->dec_off || !t->dec_len || !t->attr) return -1;
    return 0;
}

int tok_set_piece(Tokenizer *t, int32_t id, const char *s, size_t n, Err *err) {
    if (n > 0xFFFFFFF0u || t->arena.n + n > 0xFFFFFFF0u)
        return err_set(err, "%s: the vocabulary's text is larger than 4 GB", t->path);
    t->piece_off[id] = (uint32_t)t->arena.n;
    t->piece_len[id] = (uint32_t)n;
    t->attr[id] |= TOK_ATTR_PRESENT;
    return tokbuf_append(&t->arena, s, n, err);
}

/* Records the decoded bytes of id. */
int tok_set_decoded(Tokenizer *t, int32_t id, const char *s, size_t n, Err *err) {
    t->dec_off[id] = (uint32_t)t->dec_arena.n;
    t->dec_len[id] = (uint32_t)n;
    return tokbuf_append(&t->dec_arena, s, n, err);
}

/* ---------------------------------------------------------------- regex dialects */

/* \s as Oniguruma (HF tokenizers) defines it, and as JavaScript does. */
static const char SPACE_HF[] = "\\t\\n\\x0B\\f\\r\\x{85}\\p{Zs}\\x{2028}\\x{2029}";
static const char SPACE_JS[] = "\\t\\n\\x0B\\f\\r\\p{Zs}\\x{2028}\\x{2029}\\x{FEFF}";
/* transformers.js rewrites this group, which JavaScript cannot write, into a case-sensitive one. */
static const char CONTRACTIONS_CI[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
static const char CONTRACTIONS_JS[] = "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))";

/* Rewrites \s and \S into explicit classes for the dialect (PCRE2's own \s also matches
** U+180E). \S inside a character class cannot be written that way and is refused. */
static char *regex_translate(const char *src, int dialect, const char *path, const char *field, Err *err) {
    const char *space = dialect == TOKENIZER_REGEX_JS ? SPACE_JS : SPACE_HF;
    TokBuf out = {0};
    int in_class = 0;
    size_t n = strlen(src);
    for (size_t i = 0; i < n;) {
        if (dialect == TOKENIZER_REGEX_JS && !in_class && strncmp(src + i, CONTRACTIONS_CI, strlen(CONTRACTIONS_CI)) == 0) {
            if (tokbuf_append(&out, CONTRACTIONS_JS, strlen(CONTRACTIONS_JS), err)) goto fail;
            i += strlen(CONTRACTIONS_CI);
            continue;
        }
        char c = src[i];
        if (c == '\\' && i + 1 < n) {
            char e = src[i + 1];
            int rc = 0;
            if (e == 's') {
                if (!in_class) rc |= tokbuf_append(&out, "[", 1, err);
                rc |= tokbuf_append(&out, space, strlen(space), err);
                if (!in_class) rc |= tokbuf_append(&out, "]", 1, err);
            } else if (e == 'S') {
                if (in_class) {
                    err_set(err, "%s: field %s: expected a regex without \\S inside [...], found %s", path, field, src);
                    goto fail;
                }
                rc |= tokbuf_append(&out, "[^", 2, err);
                rc |= tokbuf_append(&out, space, strlen(space), err);
                rc |= tokbuf_append(&out, "]", 1, err);
            } else if (e == 'Q') { /* \Q...\E is literal: copy it as is */
                const char *end = strstr(src + i + 2, "\\E");
                size_t stop = end ? (size_t)(end - src) + 2 : n;
                rc |= tokbuf_append(&out, src + i, stop - i, err);
                i = stop;
                if (rc) goto fail;
                continue;
            } else {
                rc |= tokbuf_append(&out, src + i, 2, err);
            }
            if (rc) goto fail;
            i += 2;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            size_t start = i++;
            if (i < n && src[i] == '^') i++;
            if (i < n && src[i] == ']') i++; /* a ']' first in a class is literal */
            if (tokbuf_append(&out, src + start, i - start, err)) goto fail;
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && src[i + 1] == ':') { /* [:alpha:] */
            const char *end = strstr(src + i + 2, ":]");
            size_t stop = end ? (size_t)(end - src) + 2 : i + 1;
            if (tokbuf_append(&out, src + i, stop - i, err)) goto fail;
            i = stop;
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        if (tokbuf_append(&out, &c, 1, err)) goto fail;
        i++;
    }
    if (tokbuf_append(&out, "", 0, err)) goto fail;
    return out.p;
fail:
    tokbuf_free(&out);
    return NULL;
}

int tok_compile_pre(const Tokenizer *t, TokPre *p, const char *field, Err *err) {
    if (p->re) pcre2_code_free(p->re);
    p->re = NULL;
    if (!p->pattern) return 0;
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    char *pat;
    if (p->is_regex) {
        pat = regex_translate(p->pattern, t->regex_dialect, t->path, field, err);
        if (!pat) return -1;
        opts |= PCRE2_UCP;
    } else {
        pat = p->pattern;
        opts |= PCRE2_LITERAL;
    }
    int code;
    PCRE2_SIZE where;
    p->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &code, &where, NULL);
    if (pat != p->pattern) free(pat);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return err_set(err, "%s: field %s: expected a regex PCRE2 can compile, found %s (%s at offset %zu)", t->path,
                       field, p->pattern, (const char *)msg, (size_t)where);
    }
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* without JIT, pcre2_match interprets */
    return 0;
}

int tokenizer_set_regex_dialect(Tokenizer *tok, int dialect, Err *err) {
    if (dialect != TOKENIZER_REGEX_HF && dialect != TOKENIZER_REGEX_JS)
        return err_set(err, "tokenizer_set_regex_dialect: expected TOKENIZER_REGEX_HF or _JS, found %d", dialect);
    tok->regex_dialect = dialect;
    for (int i = 0; i < tok->n_pre; i++) {
        char field[64];
        snprintf(field, sizeof field, "pre_tokenizer[%d].pattern", i);
        if (tok_compile_pre(tok, &tok->pre[i], field, err)) return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- finishing a load */

/* Decides whether segments without a pre-tokenizer may be cut into words before runs of
** t->wsplit (see tokenizer_internal.h): only if no piece has wsplit after another character. */
static void decide_word_split(Tokenizer *t) {
    size_t w = t->wsplit_len;
    if (!w || t->n_pre) {
        t->wsplit_len = 0;
        return;
    }
    for (int id = 0; id < t->n_vocab; id++) {
        if (!(t->attr[id] & TOK_ATTR_PRESENT)) continue;
        const char *s = t->arena.p + t->piece_off[id];
        size_t n = t->piece_len[id];
        int prev_sep = 0;
        for (size_t i = 0; i < n;) {
            if (i + w <= n && memcmp(s + i, t->wsplit, w) == 0) {
                if (i > 0 && !prev_sep) {
                    t->wsplit_len = 0;
                    return;
                }
                prev_sep = 1;
                i += w;
            } else {
                prev_sep = 0;
                i++;
            }
        }
    }
}

/* ---------------------------------------------------------------- tokenizer.bin */

static uint32_t get_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* The byte of a "<0xNN>" piece, or -1. */
static int byte_piece(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hexval((unsigned char)s[3]), lo = hexval((unsigned char)s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int load_bin(Tokenizer *t, const uint8_t *d, size_t size, int vocab_hint, Err *err) {
    if (size < 4)
        return err_set(err, "%s: field max_token_length: expected 4 bytes, found %zu (file truncated)", t->path, size);
    int32_t max_len = (int32_t)get_u32le(d);
    if (max_len <= 0 || max_len > (1 << 20))
        return err_set(err, "%s: field max_token_length: expected 1..1048576, found %d (not a llama2.c tokenizer.bin?)",
                       t->path, max_len);
    /* pass 1: check every field and count the tokens */
    size_t off = 4;
    int n = 0;
    for (;;) {
        if (vocab_hint > 0 && n == vocab_hint) break;
        if (off == size) {
            if (vocab_hint > 0)
                return err_set(err, "%s: token %d: expected %d tokens (the vocab size), found the end of the file after %d "
                               "(truncated file, or a vocab size larger than this tokenizer's)",
                               t->path, n, vocab_hint, n);
            break;
        }
        if (size - off < 8)
            return err_set(err, "%s: token %d: expected 8 bytes (score, length), found %zu (file truncated)", t->path, n,
                           size - off);
        float score;
        memcpy(&score, d + off, 4);
        int32_t len = (int32_t)get_u32le(d + off + 4);
        if (!isfinite(score))
            return err_set(err, "%s: token %d: field score: expected a finite number, found %g", t->path, n, score);
        if (len < 0 || len > max_len)
            return err_set(err, "%s: token %d: field length: expected 0..%d (max_token_length), found %d", t->path, n,
                           max_len, len);
        if (size - off - 8 < (size_t)len)
            return err_set(err, "%s: token %d: expected %d bytes of text, found %zu (file truncated)", t->path, n, len,
                           size - off - 8);
        off += 8 + (size_t)len;
        if (n == 0x7FFFFFFF) return err_set(err, "%s: expected fewer than 2^31 tokens", t->path);
        n++;
    }
    if (n == 0) return err_set(err, "%s: expected at least one token, found none", t->path);
    if (tok_alloc_ids(t, n, err)) return -1;
    t->score = err_malloc((size_t)n * sizeof *t->score, "token scores", err);
    if (!t->score) return -1;
    /* pass 2: fill */
    off = 4;
    for (int id = 0; id < n; id++) {
        memcpy(&t->score[id], d + off, 4);
        uint32_t len = get_u32le(d + off + 4);
        const char *s = (const char *)d + off + 8;
        if (tok_set_piece(t, id, s, len, err)) return -1;
        int b = byte_piece(s, len);
        if (b >= 0 && t->byte_id[b] < 0) {
            t->byte_id[b] = id;
            t->attr[id] |= TOK_ATTR_BYTE;
        }
        off += 8 + len;
    }
    /* llama2.c's convention (SentencePiece's): 0 <unk>, 1 BOS, 2 EOS */
    for (int id = 0; id < 3 && id < n; id++) t->attr[id] |= TOK_ATTR_SPECIAL;
    t->unk_id = 0;
    t->bos_id = n > 1 ? 1 : -1;
    t->eos_id = n > 2 ? 2 : -1;
    t->byte_fallback = 1;
    if (tok_vocab_index(t, NULL, err)) return -1;
    /* merges: every split of a piece into two pieces, by the merged piece's score */
    size_t bound = 0;
    for (int id = 0; id < n; id++) bound += t->piece_len[id] > 1 ? t->piece_len[id] - 1 : 0;
    if (tok_merges_alloc(t, bound, err)) return -1;
    for (int id = 0; id < n; id++) {
        if (t->attr[id] & (TOK_ATTR_SPECIAL | TOK_ATTR_BYTE)) continue;
        const char *s = t->arena.p + t->piece_off[id];
        size_t len = t->piece_len[id];
        if (tok_vocab_find(t, s, len) != id) continue; /* a duplicate string: the lowest id is used */
        for (size_t k = 1; k < len; k++) {
            int32_t a = tok_vocab_find(t, s, k), b = tok_vocab_find(t, s + k, len - k);
            if (a < 0 || b < 0 || (t->attr[a] & (TOK_ATTR_SPECIAL | TOK_ATTR_BYTE)) ||
                (t->attr[b] & (TOK_ATTR_SPECIAL | TOK_ATTR_BYTE)))
                continue;
            tok_merges_put(t, a, b, id, -t->score[id], 1);
        }
    }
    /* pipeline: a space before non-empty text (spaces are ' ' in this format); BOS first */
    t->norm = err_calloc(1, sizeof *t->norm, "the normalizer", err);
    if (!t->norm) return -1;
    t->n_norm = 1;
    t->norm[0].type = NORM_PREPEND;
    t->norm[0].a = strdup(" ");
    t->norm[0].alen = 1;
    if (!t->norm[0].a) return err_set(err, "out of memory");
    if (t->bos_id >= 0) {
        t->post_prefix = err_malloc(sizeof *t->post_prefix, "the post-processor", err);
        if (!t->post_prefix) return -1;
        t->post_prefix[0] = t->bos_id;
        t->n_prefix = 1;
    }
    for (int id = 0; id < n; id++) {
        const char *s = t->arena.p + t->piece_off[id];
        int b = (t->attr[id] & TOK_ATTR_BYTE) ? byte_piece(s, t->piece_len[id]) : -1;
        char byte = (char)b;
        if (b >= 0 ? tok_set_decoded(t, id, &byte, 1, err) : tok_set_decoded(t, id, s, t->piece_len[id], err)) return -1;
    }
    t->strip_char[0] = ' ';
    t->strip_char_len = 1;
    t->strip_count = 1;
    t->wsplit[0] = ' ';
    t->wsplit_len = 1;
    return 0;
}

/* ---------------------------------------------------------------- load and free */

int tokenizer_load(const char *path, int vocab_hint, Tokenizer **out, Err *err) {
    *out = NULL;
    Tokenizer *t = err_calloc(1, sizeof *t, "the tokenizer", err);
    if (!t) return -1;
    snprintf(t->path, sizeof t->path, "%s", path);
    for (int b = 0; b < 256; b++) t->byte_id[b] = t->bl_id[b] = -1;
    t->unk_id = t->bos_id = t->eos_id = -1;
    size_t size;
    char *data = file_read_all(path, &size, err);
    if (!data) {
        tokenizer_free(t);
        return -1;
    }
    size_t i = 0;
    while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r')) i++;
    int rc;
    /* JSON starts with '{' (or '[': then it is refused as JSON) and holds no NUL byte, while
    ** a tokenizer.bin starts with a little-endian int32: 0x7B is '{', but then NULs follow. */
    if (i < size && (data[i] == '{' || data[i] == '[') && !memchr(data, 0, size < 4 ? size : 4)) {
        t->kind = TOK_KIND_JSON;
        rc = tok_load_json(t, data, size, err);
    } else {
        t->kind = TOK_KIND_BIN;
        if (vocab_hint < 0) {
            rc = err_set(err, "%s: vocab size: expected 0 (all tokens in the file) or more, found %d", path, vocab_hint);
        } else {
            rc = load_bin(t, (const uint8_t *)data, size, vocab_hint, err);
        }
    }
    free(data);
    if (rc == 0) {
        decide_word_split(t);
        for (int b = 0; b < 256; b++) {
            if (t->byte_level) {
                char s[4];
                size_t n = tok_utf8_put(s, tok_byte_level_cp(b));
                t->bl_id[b] = tok_vocab_find(t, s, n);
            }
            for (int k = 0; k < t->n_added; k++)
                if ((unsigned char)t->added[k].content[0] == b) t->added_first[b] = 1;
        }
    }
    if (rc) {
        tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    tokbuf_free(&t->arena);
    tokbuf_free(&t->dec_arena);
    free(t->piece_off);
    free(t->piece_len);
    free(t->dec_off);
    free(t->dec_len);
    free(t->attr);
    free(t->score);
    free(t->vmap);
    free(t->mmap);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (int i = 0; i < t->n_pre; i++) {
        free(t->pre[i].pattern);
        if (t->pre[i].re) pcre2_code_free(t->pre[i].re);
    }
    free(t->pre);
    free(t->post_prefix);
    free(t->post_suffix);
    free(t);
}

/* ---------------------------------------------------------------- normalizers */

/* NFC of text[0..n) into out. A cut right before an ASCII character never changes NFC (no
** ASCII character decomposes, takes part in reordering, or is the second of a composition),
** and text made only of code points below U+0300 (lead bytes below 0xCC) is already NFC, so
** only the stretches of non-ASCII bytes with a lead byte >= 0xCC, plus the ASCII character
** before them, go through utf8proc; invalid bytes pass through as they are. */
static int normalize_nfc(const char *text, size_t n, TokBuf *out, Err *err) {
    const uint8_t *u = (const uint8_t *)text;
    out->n = 0;
    if (tokbuf_reserve(out, n, err)) return -1;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && u[j] < 0x80) j++;
        if (j == n) {
            if (tokbuf_append(out, text + i, n - i, err)) return -1;
            break;
        }
        /* the non-ASCII stretch [j, k), with the ASCII character before it */
        size_t k = j;
        int changes = 0;
        while (k < n && u[k] >= 0x80) changes |= u[k++] >= 0xCC;
        size_t start = j > i ? j - 1 : j;
        if (tokbuf_append(out, text + i, start - i, err)) return -1;
        if (!changes) {
            if (tokbuf_append(out, text + start, k - start, err)) return -1;
        } else {
            size_t p = start;
            while (p < k) { /* valid runs through utf8proc, invalid bytes as they are */
                size_t q = p;
                size_t len;
                while (q < k && (len = tok_utf8_valid(u + q, k - q)) > 0) q += len;
                if (q > p) {
                    utf8proc_uint8_t *nfc = NULL;
                    utf8proc_ssize_t m = utf8proc_map(u + p, (utf8proc_ssize_t)(q - p), &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
                    if (m < 0) {
                        free(nfc);
                        return err_set(err, "NFC normalization failed: %s", utf8proc_errmsg(m));
                    }
                    int rc = tokbuf_append(out, nfc, (size_t)m, err);
                    free(nfc);
                    if (rc) return -1;
                    p = q;
                }
                if (p < k && tok_utf8_valid(u + p, k - p) == 0) {
                    if (tokbuf_append(out, text + p, 1, err)) return -1;
                    p++;
                }
            }
        }
        i = k;
    }
    return 0;
}

static int nfc_may_change(const char *text, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)text[i] >= 0xCC) return 1;
    return 0;
}

static int normalize_replace(const char *text, size_t n, const TokNorm *r, TokBuf *out, Err *err) {
    out->n = 0;
    if (tokbuf_reserve(out, n, err)) return -1;
    size_t i = 0;
    while (i < n) {
        const char *hit = r->alen ? mem_find(text + i, n - i, r->a, r->alen) : NULL;
        size_t stop = hit ? (size_t)(hit - text) : n;
        if (tokbuf_append(out, text + i, stop - i, err)) return -1;
        if (!hit) break;
        if (tokbuf_append(out, r->b, r->blen, err)) return -1;
        i = stop + r->alen;
    }
    return 0;
}

/* Runs the normalizer; *text / *n then point at the result (the input or a state buffer). */
static int normalize(const Tokenizer *t, TokState *s, const char **text, size_t *n, Err *err) {
    TokBuf *bufs[2] = {&s->t1, &s->t2};
    int which = 0;
    for (int k = 0; k < t->n_norm; k++) {
        const TokNorm *st = &t->norm[k];
        TokBuf *out = bufs[which];
        if (st->type == NORM_NFC) {
            if (!nfc_may_change(*text, *n)) continue;
            if (normalize_nfc(*text, *n, out, err)) return -1;
        } else if (st->type == NORM_PREPEND) {
            if (*n == 0) continue;
            out->n = 0;
            if (tokbuf_append(out, st->a, st->alen, err) || tokbuf_append(out, *text, *n, err)) return -1;
        } else {
            if (!mem_find(*text, *n, st->a, st->alen)) continue;
            if (normalize_replace(*text, *n, st, out, err)) return -1;
        }
        *text = out->p;
        *n = out->n;
        which ^= 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- pre-tokenizers */

/* Pieces are (offset, length) pairs into one text. */
static int pieces_push(size_t **w, size_t *cap, size_t *count, size_t off, size_t len, Err *err) {
    if (2 * (*count + 1) > *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        size_t *p = realloc(*w, c * sizeof *p);
        if (!p) return err_set(err, "out of memory for %zu words", c / 2);
        *w = p;
        *cap = c;
    }
    (*w)[2 * *count] = off;
    (*w)[2 * *count + 1] = len;
    (*count)++;
    return 0;
}

static int ensure_match_data(TokState *s, Err *err) {
    if (s->md) return 0;
    s->md = pcre2_match_data_create(1, NULL);
    s->mctx = pcre2_match_context_create(NULL);
    s->jit = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, NULL);
    if (!s->md || !s->mctx || !s->jit) return err_set(err, "out of memory for the regex engine");
    pcre2_jit_stack_assign(s->mctx, NULL, s->jit);
    return 0;
}

/* Splits the piece text[off, off+len) by a regex step, appending pieces to list (w, cap,
** count). The piece is first cut into segments, alternately gaps and matches; matches are
** the delimiters (gaps are, with invert). Then, as HF's split: Isolated keeps every segment,
** Removed drops the delimiters, MergedWithPrevious / MergedWithNext glue a delimiter to the
** gap before / after it (a delimiter next to another delimiter stays alone). */
static int split_piece(const Tokenizer *t, TokState *s, const TokPre *p, const char *text, size_t off, size_t len,
                       size_t **w, size_t *cap, size_t *count, Err *err) {
    const PCRE2_SPTR subj = (PCRE2_SPTR)(text + off);
    size_t nseg = 0, pos = 0, last = 0;
    for (;;) {
        size_t ms = len, me = len;
        int found = 0;
        while (pos <= len) {
            int rc = pcre2_match(p->re, subj, len, pos, 0, s->md, s->mctx);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return err_set(err, "%s: the pre-tokenizer regex failed on a text of %zu bytes: %s", t->path, len,
                               (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
            if (ov[1] > ov[0]) {
                ms = ov[0];
                me = ov[1];
                found = 1;
                break;
            }
            if (ov[0] >= len) break;
            size_t step = tok_utf8_valid((const uint8_t *)text + off + ov[0], len - ov[0]); /* empty: move on */
            pos = ov[0] + (step ? step : 1);
        }
        if (3 * (nseg + 2) > s->seg_cap) {
            size_t c = s->seg_cap ? 2 * s->seg_cap : 3 * 256;
            while (c < 3 * (nseg + 2)) c *= 2;
            size_t *g = realloc(s->seg, c * sizeof *g);
            if (!g) return err_set(err, "out of memory splitting a text of %zu bytes", len);
            s->seg = g;
            s->seg_cap = c;
        }
        if (ms > last) { /* the gap before the match (or the rest) */
            s->seg[3 * nseg] = last;
            s->seg[3 * nseg + 1] = ms;
            s->seg[3 * nseg + 2] = p->invert != 0;
            nseg++;
        }
        if (!found) break;
        s->seg[3 * nseg] = ms;
        s->seg[3 * nseg + 1] = me;
        s->seg[3 * nseg + 2] = p->invert == 0;
        nseg++;
        last = pos = me;
    }
    const size_t *g = s->seg;
    size_t pending = 0;
    int have_pending = 0;
    for (size_t k = 0; k < nseg; k++) {
        size_t a = g[3 * k], b = g[3 * k + 1];
        int delim = (int)g[3 * k + 2];
        if (delim && p->behavior == SPLIT_REMOVED) continue;
        if (delim && p->behavior == SPLIT_MERGED_PREV && k > 0 && !g[3 * (k - 1) + 2]) {
            (*w)[2 * (*count - 1) + 1] = off + b - (*w)[2 * (*count - 1)]; /* the gap before was the last piece */
            continue;
        }
        if (delim && p->behavior == SPLIT_MERGED_NEXT && k + 1 < nseg && !g[3 * (k + 1) + 2]) {
            pending = a;
            have_pending = 1;
            continue;
        }
        if (have_pending) a = pending;
        have_pending = 0;
        if (pieces_push(w, cap, count, off + a, b - a, err)) return -1;
    }
    return 0;
}

/* Metaspace on one piece: spaces become the replacement, which is also prepended (always, or
** to the first piece of the text) and then, with split, starts a new piece each time. The
** text goes to out, the pieces to (w, cap, count). */
static int metaspace_piece(const TokPre *p, const char *text, size_t off, size_t len, int first, TokBuf *out,
                           size_t **w, size_t *cap, size_t *count, Err *err) {
    size_t start = out->n;
    int prepend = p->prepend_scheme == META_ALWAYS || (p->prepend_scheme == META_FIRST && first);
    if (prepend && !(len >= p->repl_len && memcmp(text + off, p->repl, p->repl_len) == 0))
        if (tokbuf_append(out, p->repl, p->repl_len, err)) return -1;
    for (size_t i = 0; i < len; i++) {
        int rc = text[off + i] == ' ' ? tokbuf_append(out, p->repl, p->repl_len, err)
                                      : tokbuf_append(out, text + off + i, 1, err);
        if (rc) return -1;
    }
    size_t end = out->n, piece = start;
    if (p->split) {
        for (size_t i = start + 1; i + p->repl_len <= end; i++) {
            if (memcmp(out->p + i, p->repl, p->repl_len) == 0) {
                if (pieces_push(w, cap, count, piece, i - piece, err)) return -1;
                piece = i;
            }
        }
    }
    if (end > piece && pieces_push(w, cap, count, piece, end - piece, err)) return -1;
    return 0;
}

/* Runs the pre-tokenizer over text[0..n); then the words are (*base + off, len) for the pairs
** (off, len) in *words[0..*n_words). Two piece lists and two text buffers take turns: a step
** reads one and writes the other. Split steps only cut (pieces stay in the same text);
** Metaspace and ByteLevel's prefix space rewrite the text. */
static int pre_tokenize(const Tokenizer *t, TokState *s, const char *text, size_t n, int seg_index, const char **base,
                        size_t **words, size_t *n_words, Err *err) {
    size_t **lists[2] = {&s->w1, &s->w2};
    size_t *caps[2] = {&s->w1_cap, &s->w2_cap};
    TokBuf *texts[2] = {&s->p1, &s->p2};
    int li = 0, ti = 0;
    size_t count = 0;
    if (pieces_push(lists[0], caps[0], &count, 0, n, err)) return -1;
    const char *cur = text;
    for (int k = 0; k < t->n_pre; k++) {
        const TokPre *p = &t->pre[k];
        if (p->type == PRE_METASPACE || (p->type == PRE_BYTELEVEL && p->add_prefix_space)) {
            TokBuf *out = texts[ti];
            ti ^= 1;
            out->n = 0;
            size_t out_n = 0;
            const size_t *in = *lists[li];
            for (size_t i = 0; i < count; i++) {
                size_t off = in[2 * i], len = in[2 * i + 1];
                if (p->type == PRE_METASPACE) {
                    if (metaspace_piece(p, cur, off, len, seg_index == 0 && i == 0, out, lists[li ^ 1], caps[li ^ 1],
                                        &out_n, err))
                        return -1;
                } else {
                    size_t start = out->n;
                    if ((len == 0 || cur[off] != ' ') && tokbuf_append(out, " ", 1, err)) return -1;
                    if (tokbuf_append(out, cur + off, len, err)) return -1;
                    if (pieces_push(lists[li ^ 1], caps[li ^ 1], &out_n, start, out->n - start, err)) return -1;
                }
            }
            cur = out->p;
            li ^= 1;
            count = out_n;
        }
        if (p->re) {
            if (ensure_match_data(s, err)) return -1;
            size_t out_n = 0;
            for (size_t i = 0; i < count; i++) {
                const size_t *in = *lists[li]; /* re-read: the output list may not alias it, but stay safe */
                if (split_piece(t, s, p, cur, in[2 * i], in[2 * i + 1], lists[li ^ 1], caps[li ^ 1], &out_n, err))
                    return -1;
            }
            li ^= 1;
            count = out_n;
        }
    }
    *base = cur;
    *words = *lists[li];
    *n_words = count;
    return 0;
}

/* ---------------------------------------------------------------- encoding */

/* Encodes one segment of text that holds no added token. */
static int encode_segment(const Tokenizer *t, TokState *s, const char *text, size_t n, int seg_index, TokenIds *out,
                          Err *err) {
    if (n == 0) return 0;
    if (normalize(t, s, &text, &n, err)) return -1;
    if (n == 0) return 0;
    if (t->n_pre == 0) {
        if (!t->wsplit_len) return tok_model_word(t, s, text, n, out, err);
        /* cut before each run of wsplit that follows another character */
        const char *sep = t->wsplit;
        size_t w = t->wsplit_len, start = 0, i = 0;
        int prev_sep = 0;
        while (i < n) {
            if (text[i] == sep[0] && i + w <= n && memcmp(text + i, sep, w) == 0) {
                if (!prev_sep && i > start) {
                    if (tok_model_word(t, s, text + start, i - start, out, err)) return -1;
                    start = i;
                }
                prev_sep = 1;
                i += w;
            } else {
                prev_sep = 0;
                i++;
            }
        }
        return tok_model_word(t, s, text + start, n - start, out, err);
    }
    const char *base;
    size_t *words, n_words;
    if (pre_tokenize(t, s, text, n, seg_index, &base, &words, &n_words, err)) return -1;
    for (size_t i = 0; i < n_words; i++)
        if (tok_model_word(t, s, base + words[2 * i], words[2 * i + 1], out, err)) return -1;
    return 0;
}

static int is_space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* The longest added token at text[pos..], or NULL. */
static const TokAdded *match_added(const Tokenizer *t, const char *text, size_t len, size_t pos) {
    const TokAdded *best = NULL;
    for (int k = 0; k < t->n_added; k++) {
        const TokAdded *a = &t->added[k];
        if (a->len <= len - pos && (!best || a->len > best->len) && memcmp(text + pos, a->content, a->len) == 0)
            best = a;
    }
    return best;
}

static int encode_with(const Tokenizer *t, TokState *s, const char *text, size_t len, int add_special, TokenIds *out,
                       Err *err) {
    if (add_special)
        for (int k = 0; k < t->n_prefix; k++)
            if (tok_ids_push(out, t->post_prefix[k], err)) return -1;
    size_t start = 0;
    int seg_index = 0;
    if (t->match_added && t->n_added) {
        for (size_t pos = 0; pos < len;) {
            const TokAdded *a = t->added_first[(unsigned char)text[pos]] ? match_added(t, text, len, pos) : NULL;
            if (!a) {
                pos++;
                continue;
            }
            size_t ms = pos, me = pos + a->len;
            if (a->lstrip)
                while (ms > start && is_space_byte(text[ms - 1])) ms--;
            if (a->rstrip)
                while (me < len && is_space_byte(text[me])) me++;
            if (encode_segment(t, s, text + start, ms - start, seg_index++, out, err)) return -1;
            if (tok_ids_push(out, a->id, err)) return -1;
            pos = start = me;
        }
    }
    if (encode_segment(t, s, text + start, len - start, seg_index, out, err)) return -1;
    if (add_special)
        for (int k = 0; k < t->n_suffix; k++)
            if (tok_ids_push(out, t->post_suffix[k], err)) return -1;
    return 0;
}

int tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, int add_special, TokenIds *out, Err *err) {
    TokState s;
    if (tok_state_init(&s, len, err)) return -1;
    int rc = encode_with(tok, &s, text, len, add_special, out, err);
    tok_state_free(&s);
    return rc;
}

/* Workers take documents in blocks from a shared counter (documents differ in length, so
** fixed chunks would leave threads idle), and encode into a local list: neighbouring
** documents' TokenIds share cache lines. A worker's state is padded for the same reason. */
enum { MANY_BLOCK = 8 };

typedef struct {
    TokState s;
    char pad[128];
} PaddedState;

typedef struct {
    const Tokenizer *tok;
    const char *const *texts;
    const size_t *lens;
    int n, add_special;
    TokenIds *outs;
    PaddedState *states;
    Err *errs;       /* one per worker */
    int *err_doc;    /* one per worker: the lowest failing document, or -1 */
    atomic_int next; /* the first document of the next block */
} ManyJob;

static void encode_many_worker(void *ctx, int begin, int end, int worker) {
    ManyJob *job = ctx;
    (void)begin;
    (void)end;
    TokState *s = &job->states[worker].s;
    for (;;) {
        int first = atomic_fetch_add(&job->next, MANY_BLOCK);
        if (first >= job->n) break;
        int last = first + MANY_BLOCK < job->n ? first + MANY_BLOCK : job->n;
        for (int d = first; d < last; d++) {
            TokenIds ids = job->outs[d];
            Err e;
            if (encode_with(job->tok, s, job->texts[d], job->lens[d], job->add_special, &ids, &e) &&
                job->err_doc[worker] < 0) {
                job->err_doc[worker] = d;
                job->errs[worker] = e;
            }
            job->outs[d] = ids;
        }
    }
}

int tokenizer_encode_many(const Tokenizer *tok, const char *const *texts, const size_t *lens, int n, int add_special,
                          TokenIds *outs, Err *err) {
    if (n <= 0) return 0;
    int nt = parallel_threads();
    if (nt > n) nt = n;
    ManyJob job = {.tok = tok, .texts = texts, .lens = lens, .n = n, .add_special = add_special, .outs = outs};
    atomic_init(&job.next, 0);
    int pool = parallel_threads(); /* states are indexed by worker, which can be any pool slot */
    job.states = err_calloc((size_t)pool, sizeof *job.states, "encode states", err);
    job.errs = err_calloc((size_t)pool, sizeof *job.errs, "encode errors", err);
    job.err_doc = err_calloc((size_t)pool, sizeof *job.err_doc, "encode errors", err);
    int rc = 0;
    if (!job.states || !job.errs || !job.err_doc) {
        rc = -1;
        goto done;
    }
    for (int w = 0; w < pool; w++) {
        job.err_doc[w] = -1;
        if (tok_state_init(&job.states[w].s, 1u << 20, err)) {
            rc = -1;
            goto done;
        }
    }
    parallel_for(nt, encode_many_worker, &job);
    int worst = -1;
    for (int w = 0; w < pool; w++)
        if (job.err_doc[w] >= 0 && (worst < 0 || job.err_doc[w] < job.err_doc[worst])) worst = w;
    if (worst >= 0) {
        if (err) *err = job.errs[worst];
        err_wrap(err, "document %d", job.err_doc[worst]);
        rc = -1;
    }
done:
    if (job.states)
        for (int w = 0; w < pool; w++) tok_state_free(&job.states[w].s);
    free(job.states);
    free(job.errs);
    free(job.err_doc);
    return rc;
}

/* ---------------------------------------------------------------- decoding */

/* Strips up to *budget leading strip characters from piece; the budget ends at the first
** other character. */
static void strip_leading(const Tokenizer *t, const char **p, size_t *n, int *budget) {
    size_t w = t->strip_char_len;
    while (*budget > 0 && *n > 0) {
        if (*n >= w && memcmp(*p, t->strip_char, w) == 0) {
            *p += w;
            *n -= w;
            (*budget)--;
        } else {
            *budget = 0;
        }
    }
}

static int id_ok(const Tokenizer *t, int id) { return id >= 0 && id < t->n_vocab && (t->attr[id] & TOK_ATTR_PRESENT); }

char *tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, int skip_special, size_t *len, Err *err) {
    TokBuf b = {0};
    if (tokbuf_reserve(&b, n * 4, err)) return NULL;
    int budget = t->strip_count;
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (!id_ok(t, id)) {
            err_set(err, "%s: decode: token %zu: expected an id in the vocabulary (0..%d), found %d", t->path, i,
                    t->n_vocab - 1, id);
            tokbuf_free(&b);
            return NULL;
        }
        if (!(skip_special && (t->attr[id] & TOK_ATTR_SPECIAL))) {
            const char *p = t->dec_arena.p + t->dec_off[id];
            size_t pn = t->dec_len[id];
            strip_leading(t, &p, &pn, &budget);
            if (tokbuf_append(&b, p, pn, err)) {
                tokbuf_free(&b);
                return NULL;
            }
        }
        if (id == t->bos_id) budget = t->strip_count;
    }
    if (tokbuf_append(&b, "", 0, err)) {
        tokbuf_free(&b);
        return NULL;
    }
    if (len) *len = b.n;
    return b.p;
}

const char *tokenizer_decode_piece(const Tokenizer *t, int prev_id, int id, size_t *len) {
    if (!id_ok(t, id)) return NULL;
    const char *p = t->dec_arena.p + t->dec_off[id];
    size_t n = t->dec_len[id];
    int budget = prev_id < 0 || prev_id == t->bos_id ? t->strip_count : 0;
    strip_leading(t, &p, &n, &budget);
    *len = n;
    return p;
}

/* ---------------------------------------------------------------- lookups */

int tokenizer_vocab_size(const Tokenizer *t) { return t->n_vocab; }
int tokenizer_bos_id(const Tokenizer *t) { return t->bos_id; }
int tokenizer_eos_id(const Tokenizer *t) { return t->eos_id; }

const char *tokenizer_id_to_piece(const Tokenizer *t, int id, size_t *len) {
    if (!id_ok(t, id)) return NULL;
    *len = t->piece_len[id];
    return t->arena.p + t->piece_off[id];
}

int tokenizer_piece_to_id(const Tokenizer *t, const char *piece, size_t len) {
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].len == len && memcmp(t->added[k].content, piece, len) == 0) return t->added[k].id;
    return tok_vocab_find(t, piece, len);
}

int tokenizer_is_special(const Tokenizer *t, int id) { return id_ok(t, id) && (t->attr[id] & TOK_ATTR_SPECIAL); }

void tokenizer_set_match_added(Tokenizer *t, int on) { t->match_added = on != 0; }

void tokenizer_describe(const Tokenizer *t, char *buf, size_t size) {
    const char *kind = t->kind == TOK_KIND_BIN ? "llama2.c tokenizer.bin (BPE by score)"
                       : t->byte_level         ? "tokenizer.json (byte-level BPE)"
                                               : "tokenizer.json (BPE)";
    snprintf(buf, size, "%s: %s, %d ids, %zu merges, %d added tokens, bos %d, eos %d", t->path, kind, t->n_vocab,
             t->n_merges, t->n_added, t->bos_id, t->eos_id);
}
