/*
** tokenizer_hf.c — reading a HF tokenizer.json into a Tokenizer.
**
** Every part the file names is either understood exactly or refused with a message that
** names the file, the field (model.type, pre_tokenizer.pretokenizers[0].pattern, ...), what
** was expected and what was found. Nothing in the file is trusted: ids are range-checked,
** merges must name pieces of model.vocab and produce one, and a regex must compile.
*/
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

enum { MAX_VOCAB = 1 << 26 };

/* ---------------------------------------------------------------- messages */

static void describe(const cJSON *v, char *buf, size_t size) {
    if (!v)
        snprintf(buf, size, "nothing (the field is missing)");
    else if (cJSON_IsNull(v))
        snprintf(buf, size, "null");
    else if (cJSON_IsTrue(v))
        snprintf(buf, size, "true");
    else if (cJSON_IsFalse(v))
        snprintf(buf, size, "false");
    else if (cJSON_IsNumber(v))
        snprintf(buf, size, "%.17g", v->valuedouble);
    else if (cJSON_IsString(v))
        snprintf(buf, size, "\"%.80s\"%s", v->valuestring, strlen(v->valuestring) > 80 ? "..." : "");
    else if (cJSON_IsArray(v))
        snprintf(buf, size, "an array of %d", cJSON_GetArraySize(v));
    else
        snprintf(buf, size, "an object");
}

static int bad(const Tokenizer *t, Err *err, const char *field, const char *expected, const cJSON *found) {
    char what[160];
    describe(found, what, sizeof what);
    return err_set(err, "%s: field %s: expected %s, found %s", t->path, field, expected, what);
}

static const cJSON *item(const cJSON *obj, const char *name) { return cJSON_GetObjectItemCaseSensitive(obj, name); }

/* The getters below write *out on every path (the default, NULL or -1 before the value is
** known), so a caller's variable is never read uninitialized, even where the compiler cannot
** see that an error return is -1. */

/* A field that may be missing or null (then *out = dflt). */
static int get_bool(const Tokenizer *t, const cJSON *obj, const char *name, int dflt, const char *where, int *out,
                    Err *err) {
    const cJSON *v = item(obj, name);
    *out = dflt;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v)) {
        char field[256];
        snprintf(field, sizeof field, "%s.%s", where, name);
        return bad(t, err, field, "true or false", v);
    }
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_string(const Tokenizer *t, const cJSON *obj, const char *name, const char *where, const char **out,
                      Err *err) {
    const cJSON *v = item(obj, name);
    *out = NULL;
    if (!cJSON_IsString(v)) {
        char field[256];
        snprintf(field, sizeof field, "%s.%s", where, name);
        return bad(t, err, field, "a string", v);
    }
    *out = v->valuestring;
    return 0;
}

/* An integer id in [0, MAX_VOCAB). */
static int get_id(const Tokenizer *t, const cJSON *v, const char *field, int32_t *out, Err *err) {
    *out = -1;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= MAX_VOCAB || v->valuedouble != floor(v->valuedouble))
        return bad(t, err, field, "an integer id in 0..67108863", v);
    *out = (int32_t)v->valuedouble;
    return 0;
}

static const char *type_name(const cJSON *obj) {
    const cJSON *v = item(obj, "type");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* "<where>.type" must be one of the names in `expected` (for the message). */
static int bad_type(const Tokenizer *t, Err *err, const char *where, const char *expected, const cJSON *obj) {
    char field[256];
    snprintf(field, sizeof field, "%s.type", where);
    return bad(t, err, field, expected, cJSON_IsObject(obj) ? item(obj, "type") : obj);
}

static char *dup_n(const char *s, size_t n, Err *err) {
    char *p = err_malloc(n + 1, "a string", err);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* A {"String": s} pattern (Regex ones are refused where only String is supported). */
static int get_string_pattern(const Tokenizer *t, const cJSON *obj, const char *where, const char **out, Err *err) {
    const cJSON *p = item(obj, "pattern");
    *out = NULL;
    char field[256];
    snprintf(field, sizeof field, "%s.pattern", where);
    if (!cJSON_IsObject(p)) return bad(t, err, field, "an object {\"String\": ...}", p);
    const cJSON *s = item(p, "String");
    if (!cJSON_IsString(s)) {
        snprintf(field, sizeof field, "%s.pattern.String", where);
        return bad(t, err, field, "a string (Regex patterns are not supported here)", s ? s : item(p, "Regex"));
    }
    *out = s->valuestring;
    return 0;
}

/* ---------------------------------------------------------------- model, vocab, added tokens */

static int load_vocab(Tokenizer *t, const cJSON *root, const cJSON *model, uint8_t **in_vocab_out, Err *err) {
    const cJSON *vocab = item(model, "vocab");
    if (!cJSON_IsObject(vocab)) return bad(t, err, "model.vocab", "an object {piece: id}", vocab);
    const cJSON *added = item(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return bad(t, err, "added_tokens", "an array", added);
    int32_t max_id = -1, id;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        char field[160];
        snprintf(field, sizeof field, "model.vocab[\"%.60s\"]", e->string);
        if (get_id(t, e, field, &id, err)) return -1;
        if (id > max_id) max_id = id;
    }
    int k = 0;
    cJSON_ArrayForEach(e, added) {
        char field[64];
        snprintf(field, sizeof field, "added_tokens[%d].id", k++);
        if (!cJSON_IsObject(e)) return bad(t, err, field, "an object", e);
        if (get_id(t, item(e, "id"), field, &id, err)) return -1;
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) return bad(t, err, "model.vocab", "at least one piece", vocab);
    if (tok_alloc_ids(t, max_id + 1, err)) return -1;
    uint8_t *in_vocab = err_calloc((size_t)max_id + 1, 1, "the vocabulary", err);
    if (!in_vocab) return -1;
    *in_vocab_out = in_vocab;
    cJSON_ArrayForEach(e, vocab) {
        id = (int32_t)e->valuedouble;
        if (t->attr[id] & TOK_ATTR_PRESENT) {
            char field[160];
            snprintf(field, sizeof field, "model.vocab[\"%.60s\"]", e->string);
            char expected[200];
            snprintf(expected, sizeof expected, "an id no other piece has (\"%.60s\" has it)",
                     t->arena.p + t->piece_off[id]);
            return bad(t, err, field, expected, e);
        }
        if (tok_set_piece(t, id, e->string, strlen(e->string), err)) return -1;
        in_vocab[id] = 1;
    }
    /* added tokens */
    int n_added = cJSON_GetArraySize(added);
    if (n_added > 0) {
        t->added = err_calloc((size_t)n_added, sizeof *t->added, "added tokens", err);
        if (!t->added) return -1;
    }
    k = 0;
    cJSON_ArrayForEach(e, added) {
        char where[64], field[96];
        snprintf(where, sizeof where, "added_tokens[%d]", k++);
        id = (int32_t)item(e, "id")->valuedouble;
        const char *content;
        if (get_string(t, e, "content", where, &content, err)) return -1;
        size_t len = strlen(content);
        if (len == 0) {
            snprintf(field, sizeof field, "%s.content", where);
            return bad(t, err, field, "a non-empty string", item(e, "content"));
        }
        int special, lstrip, rstrip, single_word;
        if (get_bool(t, e, "special", 0, where, &special, err) || get_bool(t, e, "lstrip", 0, where, &lstrip, err) ||
            get_bool(t, e, "rstrip", 0, where, &rstrip, err) ||
            get_bool(t, e, "single_word", 0, where, &single_word, err))
            return -1;
        if (single_word) {
            snprintf(field, sizeof field, "%s.single_word", where);
            return bad(t, err, field, "false (single_word is not supported)", item(e, "single_word"));
        }
        if (t->attr[id] & TOK_ATTR_PRESENT) {
            if (t->piece_len[id] != len || memcmp(t->arena.p + t->piece_off[id], content, len) != 0) {
                snprintf(field, sizeof field, "%s.content", where);
                char expected[200];
                snprintf(expected, sizeof expected, "\"%.60s\" (model.vocab's piece for id %d)",
                         t->arena.p + t->piece_off[id], id);
                return bad(t, err, field, expected, item(e, "content"));
            }
        } else if (tok_set_piece(t, id, content, len, err)) {
            return -1;
        }
        t->attr[id] |= TOK_ATTR_ADDED | (special ? TOK_ATTR_SPECIAL : 0);
        TokAdded *a = &t->added[t->n_added];
        a->content = dup_n(content, len, err);
        if (!a->content) return -1;
        a->len = len;
        a->id = id;
        a->lstrip = lstrip;
        a->rstrip = rstrip;
        t->n_added++;
    }
    return 0;
}

static int load_merges(Tokenizer *t, const cJSON *model, Err *err) {
    const cJSON *merges = item(model, "merges");
    if (!merges || cJSON_IsNull(merges)) return tok_merges_alloc(t, 0, err);
    if (!cJSON_IsArray(merges)) return bad(t, err, "model.merges", "an array", merges);
    if (tok_merges_alloc(t, (size_t)cJSON_GetArraySize(merges), err)) return -1;
    TokBuf joined = {0};
    int rank = 0, rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, merges) {
        char field[64];
        snprintf(field, sizeof field, "model.merges[%d]", rank);
        const char *a, *b;
        size_t alen, blen;
        if (cJSON_IsString(e)) {
            a = e->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                rc = bad(t, err, field, "two pieces separated by one space", e);
                break;
            }
            alen = (size_t)(sp - a);
            b = sp + 1;
            blen = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            a = cJSON_GetArrayItem(e, 0)->valuestring;
            b = cJSON_GetArrayItem(e, 1)->valuestring;
            alen = strlen(a);
            blen = strlen(b);
        } else {
            rc = bad(t, err, field, "\"left right\" or [\"left\", \"right\"]", e);
            break;
        }
        int32_t ia = tok_vocab_find(t, a, alen), ib = tok_vocab_find(t, b, blen);
        if (ia < 0 || ib < 0) {
            const char *miss = ia < 0 ? a : b;
            size_t mlen = ia < 0 ? alen : blen;
            rc = err_set(err, "%s: field %s: expected pieces of model.vocab, found \"%.*s\" (not in model.vocab)", t->path,
                         field, (int)(mlen > 80 ? 80 : mlen), miss);
            break;
        }
        joined.n = 0;
        if (tokbuf_append(&joined, a, alen, err) || tokbuf_append(&joined, b, blen, err)) {
            rc = -1;
            break;
        }
        int32_t im = tok_vocab_find(t, joined.p, joined.n);
        if (im < 0) {
            rc = err_set(err, "%s: field %s: expected the merged piece \"%.80s\" in model.vocab, found it missing",
                         t->path, field, joined.p);
            break;
        }
        tok_merges_put(t, ia, ib, im, (float)rank, 0); /* a repeated pair takes its last rank, as HF */
        rank++;
    }
    tokbuf_free(&joined);
    return rc;
}

static int load_model(Tokenizer *t, const cJSON *root, Err *err) {
    const cJSON *model = item(root, "model");
    if (!cJSON_IsObject(model)) return bad(t, err, "model", "an object", model);
    const char *type = type_name(model);
    if (!type || strcmp(type, "BPE") != 0) return bad(t, err, "model.type", "BPE", item(model, "type"));
    const cJSON *dropout = item(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return bad(t, err, "model.dropout", "null (BPE dropout is random)", dropout);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = item(model, affixes[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && v->valuestring[0] == '\0')) {
            char field[64];
            snprintf(field, sizeof field, "model.%s", affixes[i]);
            return bad(t, err, field, "null or \"\" (not supported)", v);
        }
    }
    if (get_bool(t, model, "byte_fallback", 0, "model", &t->byte_fallback, err) ||
        get_bool(t, model, "fuse_unk", 0, "model", &t->fuse_unk, err) ||
        get_bool(t, model, "ignore_merges", 0, "model", &t->ignore_merges, err))
        return -1;
    uint8_t *in_vocab = NULL;
    int rc = load_vocab(t, root, model, &in_vocab, err);
    if (rc == 0) rc = tok_vocab_index(t, in_vocab, err);
    free(in_vocab);
    if (rc) return -1;
    const cJSON *unk = item(model, "unk_token");
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsString(unk)) return bad(t, err, "model.unk_token", "a string or null", unk);
        t->unk_id = tok_vocab_find(t, unk->valuestring, strlen(unk->valuestring));
        if (t->unk_id < 0) return bad(t, err, "model.unk_token", "a piece of model.vocab", unk);
    }
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_id[b] = tok_vocab_find(t, s, 6);
        if (t->byte_id[b] >= 0 && t->byte_fallback) t->attr[t->byte_id[b]] |= TOK_ATTR_BYTE;
    }
    if (!t->byte_fallback)
        for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    return load_merges(t, model, err);
}

/* ---------------------------------------------------------------- normalizer */

static int add_norm(Tokenizer *t, TokNorm n, Err *err) {
    TokNorm *p = realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *p);
    if (!p) return err_set(err, "out of memory");
    t->norm = p;
    t->norm[t->n_norm++] = n;
    return 0;
}

static int load_normalizer(Tokenizer *t, const cJSON *n, const char *where, Err *err) {
    if (!cJSON_IsObject(n)) return bad(t, err, where, "an object or null", n);
    const char *type = type_name(n);
    const char *expected = "one of NFC, Prepend, Replace, Sequence";
    if (!type) return bad_type(t, err, where, expected, n);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = item(n, "normalizers");
        char field[256];
        snprintf(field, sizeof field, "%s.normalizers", where);
        if (!cJSON_IsArray(list)) return bad(t, err, field, "an array", list);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", where, i++);
            if (load_normalizer(t, e, sub, err)) return -1;
        }
        return 0;
    }
    TokNorm st = {0};
    const char *a, *b;
    if (strcmp(type, "NFC") == 0) {
        st.type = NORM_NFC;
    } else if (strcmp(type, "Prepend") == 0) {
        if (get_string(t, n, "prepend", where, &a, err)) return -1;
        st.type = NORM_PREPEND;
        st.alen = strlen(a);
        st.a = dup_n(a, st.alen, err);
        if (!st.a) return -1;
    } else if (strcmp(type, "Replace") == 0) {
        if (get_string_pattern(t, n, where, &a, err) || get_string(t, n, "content", where, &b, err)) return -1;
        if (!*a) {
            char field[256];
            snprintf(field, sizeof field, "%s.pattern.String", where);
            return bad(t, err, field, "a non-empty string", item(item(n, "pattern"), "String"));
        }
        st.type = NORM_REPLACE;
        st.alen = strlen(a);
        st.blen = strlen(b);
        st.a = dup_n(a, st.alen, err);
        st.b = dup_n(b, st.blen, err);
        if (!st.a || !st.b) {
            free(st.a);
            free(st.b);
            return -1;
        }
    } else {
        return bad_type(t, err, where, expected, n);
    }
    if (add_norm(t, st, err)) {
        free(st.a);
        free(st.b);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- pre-tokenizer */

/* The regex GPT-2's ByteLevel pre-tokenizer splits with when use_regex is true. */
static const char GPT2_REGEX[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int add_pre(Tokenizer *t, TokPre p, const char *where, Err *err) {
    if (t->byte_level) {
        char field[256];
        snprintf(field, sizeof field, "%s.type", where);
        free(p.pattern);
        return err_set(err, "%s: field %s: expected nothing after a ByteLevel pre-tokenizer, found \"%s\"", t->path, field,
                       p.type == PRE_SPLIT ? "Split" : p.type == PRE_METASPACE ? "Metaspace" : "ByteLevel");
    }
    TokPre *q = realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *q);
    if (!q) {
        free(p.pattern);
        return err_set(err, "out of memory");
    }
    t->pre = q;
    t->pre[t->n_pre] = p;
    char field[256];
    snprintf(field, sizeof field, "%s.pattern", where);
    if (tok_compile_pre(t, &t->pre[t->n_pre], field, err)) {
        free(p.pattern);
        return -1;
    }
    t->n_pre++;
    if (p.type == PRE_BYTELEVEL) t->byte_level = 1;
    return 0;
}

static int load_pre_tokenizer(Tokenizer *t, const cJSON *n, const char *where, Err *err) {
    if (!cJSON_IsObject(n)) return bad(t, err, where, "an object or null", n);
    const char *type = type_name(n);
    const char *expected = "one of Split, ByteLevel, Metaspace, Sequence";
    if (!type) return bad_type(t, err, where, expected, n);
    char field[256];
    TokPre p = {0};
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = item(n, "pretokenizers");
        snprintf(field, sizeof field, "%s.pretokenizers", where);
        if (!cJSON_IsArray(list)) return bad(t, err, field, "an array", list);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", where, i++);
            if (load_pre_tokenizer(t, e, sub, err)) return -1;
        }
        return 0;
    } else if (strcmp(type, "Split") == 0) {
        p.type = PRE_SPLIT;
        const cJSON *pat = item(n, "pattern");
        snprintf(field, sizeof field, "%s.pattern", where);
        if (!cJSON_IsObject(pat)) return bad(t, err, field, "an object {\"Regex\": ...} or {\"String\": ...}", pat);
        const cJSON *re = item(pat, "Regex"), *str = item(pat, "String");
        const cJSON *src = cJSON_IsString(re) ? re : str;
        if (!cJSON_IsString(src) || (src == str && !*src->valuestring)) {
            snprintf(field, sizeof field, "%s.pattern.Regex", where);
            return bad(t, err, field, "a regex string (or pattern.String, a non-empty string)", re ? re : str);
        }
        p.is_regex = src == re;
        const cJSON *beh = item(n, "behavior");
        snprintf(field, sizeof field, "%s.behavior", where);
        static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext"};
        p.behavior = -1;
        for (int i = 0; i < 4 && cJSON_IsString(beh); i++)
            if (strcmp(beh->valuestring, names[i]) == 0) p.behavior = i;
        if (p.behavior < 0)
            return bad(t, err, field, "one of Isolated, Removed, MergedWithPrevious, MergedWithNext", beh);
        if (get_bool(t, n, "invert", 0, where, &p.invert, err)) return -1;
        p.pattern = dup_n(src->valuestring, strlen(src->valuestring), err);
        if (!p.pattern) return -1;
    } else if (strcmp(type, "ByteLevel") == 0) {
        p.type = PRE_BYTELEVEL;
        int use_regex;
        if (get_bool(t, n, "add_prefix_space", 1, where, &p.add_prefix_space, err) ||
            get_bool(t, n, "use_regex", 1, where, &use_regex, err))
            return -1;
        if (use_regex) {
            p.is_regex = 1;
            p.behavior = SPLIT_ISOLATED;
            p.pattern = dup_n(GPT2_REGEX, strlen(GPT2_REGEX), err);
            if (!p.pattern) return -1;
        }
    } else if (strcmp(type, "Metaspace") == 0) {
        p.type = PRE_METASPACE;
        const cJSON *r = item(n, "replacement");
        const char *repl = cJSON_IsString(r) ? r->valuestring : "\xe2\x96\x81";
        p.repl_len = strlen(repl);
        if ((r && !cJSON_IsString(r)) || p.repl_len == 0 || p.repl_len > 4 ||
            tok_utf8_valid((const uint8_t *)repl, p.repl_len) != p.repl_len) {
            snprintf(field, sizeof field, "%s.replacement", where);
            return bad(t, err, field, "one character", r);
        }
        memcpy(p.repl, repl, p.repl_len);
        const cJSON *scheme = item(n, "prepend_scheme");
        int add_prefix;
        if (get_bool(t, n, "add_prefix_space", 1, where, &add_prefix, err) || get_bool(t, n, "split", 1, where, &p.split, err))
            return -1;
        p.prepend_scheme = add_prefix ? META_ALWAYS : META_NEVER;
        if (scheme && !cJSON_IsNull(scheme)) {
            const char *s = cJSON_IsString(scheme) ? scheme->valuestring : "";
            p.prepend_scheme = strcmp(s, "always") == 0 ? META_ALWAYS
                               : strcmp(s, "first") == 0 ? META_FIRST
                               : strcmp(s, "never") == 0 ? META_NEVER
                                                         : -1;
            if (p.prepend_scheme < 0) {
                snprintf(field, sizeof field, "%s.prepend_scheme", where);
                return bad(t, err, field, "one of always, first, never", scheme);
            }
        }
    } else {
        return bad_type(t, err, where, expected, n);
    }
    return add_pre(t, p, where, err);
}

/* ---------------------------------------------------------------- post-processor */

static int push_id(int32_t **list, int *n, int32_t id, Err *err) {
    int32_t *p = realloc(*list, (size_t)(*n + 1) * sizeof *p);
    if (!p) return err_set(err, "out of memory");
    *list = p;
    p[(*n)++] = id;
    return 0;
}

static int load_template(Tokenizer *t, const cJSON *n, const char *where, Err *err) {
    char field[256];
    const cJSON *single = item(n, "single"), *specials = item(n, "special_tokens");
    snprintf(field, sizeof field, "%s.single", where);
    if (!cJSON_IsArray(single)) return bad(t, err, field, "an array", single);
    int seen_a = 0, i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, single) {
        snprintf(field, sizeof field, "%s.single[%d]", where, i++);
        const cJSON *sp = item(e, "SpecialToken"), *seq = item(e, "Sequence");
        if (cJSON_IsObject(seq)) {
            const cJSON *id = item(seq, "id");
            if (seen_a || !cJSON_IsString(id) || strcmp(id->valuestring, "A") != 0)
                return bad(t, err, field, "one {\"Sequence\": {\"id\": \"A\"}}", e);
            seen_a = 1;
        } else if (cJSON_IsObject(sp)) {
            const cJSON *name = item(sp, "id");
            const cJSON *def = cJSON_IsString(name) ? item(specials, name->valuestring) : NULL;
            const cJSON *ids = def ? item(def, "ids") : NULL;
            if (!cJSON_IsArray(ids)) {
                snprintf(field, sizeof field, "%s.special_tokens", where);
                char expected[200];
                snprintf(expected, sizeof expected, "an entry with \"ids\" for \"%.60s\"",
                         cJSON_IsString(name) ? name->valuestring : "?");
                return bad(t, err, field, expected, specials);
            }
            const cJSON *x;
            int k = 0;
            cJSON_ArrayForEach(x, ids) {
                char f2[300];
                snprintf(f2, sizeof f2, "%s.special_tokens[\"%.60s\"].ids[%d]", where, name->valuestring, k++);
                int32_t id;
                if (get_id(t, x, f2, &id, err)) return -1;
                if (id >= t->n_vocab || !(t->attr[id] & TOK_ATTR_PRESENT)) return bad(t, err, f2, "an id of the vocabulary", x);
                if (seen_a ? push_id(&t->post_suffix, &t->n_suffix, id, err) : push_id(&t->post_prefix, &t->n_prefix, id, err))
                    return -1;
            }
        } else {
            return bad(t, err, field, "{\"SpecialToken\": ...} or {\"Sequence\": ...}", e);
        }
    }
    if (!seen_a) {
        snprintf(field, sizeof field, "%s.single", where);
        return bad(t, err, field, "a {\"Sequence\": {\"id\": \"A\"}} item", single);
    }
    return 0;
}

static int load_post(Tokenizer *t, const cJSON *n, const char *where, Err *err) {
    if (!cJSON_IsObject(n)) return bad(t, err, where, "an object or null", n);
    const char *type = type_name(n);
    const char *expected = "one of TemplateProcessing, ByteLevel, Sequence";
    if (!type) return bad_type(t, err, where, expected, n);
    if (strcmp(type, "ByteLevel") == 0) return 0; /* only moves offsets */
    if (strcmp(type, "TemplateProcessing") == 0) return load_template(t, n, where, err);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = item(n, "processors");
        char field[256];
        snprintf(field, sizeof field, "%s.processors", where);
        if (!cJSON_IsArray(list)) return bad(t, err, field, "an array", list);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.processors[%d]", where, i++);
            if (load_post(t, e, sub, err)) return -1;
        }
        return 0;
    }
    return bad_type(t, err, where, expected, n);
}

/* ---------------------------------------------------------------- decoder */

/* The decoder is applied per token at load time: each id gets its decoded bytes. Steps after
** Fuse see the whole text; of those, only a leading Strip (and one-character Replace, which
** gives the same either way) is supported, and it becomes the sequence-level strip. */
enum { DEC_BYTELEVEL, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_STRIP };
typedef struct {
    int type;
    const char *a, *b; /* REPLACE: pattern, content; STRIP: the character */
    int start, stop;
} DecStep;

typedef struct {
    DecStep steps[32];
    int n;
    int fused;
} DecPlan;

static int get_count(const Tokenizer *t, const cJSON *n, const char *name, const char *where, int *out, Err *err) {
    const cJSON *v = item(n, name);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1000 || v->valuedouble != floor(v->valuedouble)) {
        char field[256];
        snprintf(field, sizeof field, "%s.%s", where, name);
        return bad(t, err, field, "a count in 0..1000", v);
    }
    *out = (int)v->valuedouble;
    return 0;
}

static int load_decoder(Tokenizer *t, const cJSON *n, const char *where, DecPlan *plan, Err *err) {
    if (!cJSON_IsObject(n)) return bad(t, err, where, "an object or null", n);
    const char *type = type_name(n);
    const char *expected = "one of ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence";
    if (!type) return bad_type(t, err, where, expected, n);
    char field[256];
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = item(n, "decoders");
        snprintf(field, sizeof field, "%s.decoders", where);
        if (!cJSON_IsArray(list)) return bad(t, err, field, "an array", list);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, list) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.decoders[%d]", where, i++);
            if (load_decoder(t, e, sub, plan, err)) return -1;
        }
        return 0;
    }
    if (plan->n + 2 > (int)(sizeof plan->steps / sizeof plan->steps[0]))
        return err_set(err, "%s: field %s: expected at most 30 decoders, found more", t->path, where);
    DecStep st = {0};
    if (strcmp(type, "Fuse") == 0) {
        plan->fused = 1;
        return 0;
    } else if (strcmp(type, "ByteLevel") == 0 || strcmp(type, "ByteFallback") == 0) {
        st.type = type[4] == 'L' ? DEC_BYTELEVEL : DEC_BYTEFALLBACK;
        if (plan->fused) return bad_type(t, err, where, "a per-token decoder before Fuse", n);
    } else if (strcmp(type, "Replace") == 0) {
        st.type = DEC_REPLACE;
        if (get_string_pattern(t, n, where, &st.a, err) || get_string(t, n, "content", where, &st.b, err)) return -1;
        if (!*st.a || (plan->fused && tok_utf8_valid((const uint8_t *)st.a, strlen(st.a)) != strlen(st.a))) {
            snprintf(field, sizeof field, "%s.pattern.String", where);
            return bad(t, err, field, plan->fused ? "one character (after Fuse)" : "a non-empty string",
                       item(item(n, "pattern"), "String"));
        }
    } else if (strcmp(type, "Strip") == 0) {
        st.type = DEC_STRIP;
        if (get_string(t, n, "content", where, &st.a, err) || get_count(t, n, "start", where, &st.start, err) ||
            get_count(t, n, "stop", where, &st.stop, err))
            return -1;
        size_t len = strlen(st.a);
        if (len == 0 || len > 4 || tok_utf8_valid((const uint8_t *)st.a, len) != len) {
            snprintf(field, sizeof field, "%s.content", where);
            return bad(t, err, field, "one character", item(n, "content"));
        }
        if (plan->fused) {
            if (st.stop != 0) {
                snprintf(field, sizeof field, "%s.stop", where);
                return bad(t, err, field, "0 (stripping the end of the text is not supported)", item(n, "stop"));
            }
            memcpy(t->strip_char, st.a, len);
            t->strip_char_len = len;
            t->strip_count = st.start;
            return 0;
        }
    } else if (strcmp(type, "Metaspace") == 0) {
        const cJSON *r = item(n, "replacement");
        st.type = DEC_REPLACE;
        st.a = cJSON_IsString(r) ? r->valuestring : "\xe2\x96\x81";
        st.b = " ";
        size_t len = strlen(st.a); /* as the pre-tokenizer's: an empty one would never advance */
        if ((r && !cJSON_IsString(r)) || len == 0 || len > 4 || tok_utf8_valid((const uint8_t *)st.a, len) != len) {
            snprintf(field, sizeof field, "%s.replacement", where);
            return bad(t, err, field, "one character", r);
        }
        int add_prefix;
        if (get_bool(t, n, "add_prefix_space", 1, where, &add_prefix, err)) return -1;
        const cJSON *scheme = item(n, "prepend_scheme");
        if (cJSON_IsString(scheme)) add_prefix = strcmp(scheme->valuestring, "never") != 0;
        if (add_prefix) {
            t->strip_char[0] = ' ';
            t->strip_char_len = 1;
            t->strip_count = 1;
        }
    } else {
        return bad_type(t, err, where, expected, n);
    }
    plan->steps[plan->n++] = st;
    return 0;
}

/* The decoded bytes of every id: added tokens are their content; the others go through the
** per-token steps. */
static int build_decoded(Tokenizer *t, const DecPlan *plan, Err *err) {
    int16_t inv[324]; /* byte-level code point -> byte */
    for (int i = 0; i < 324; i++) inv[i] = -1;
    for (int b = 0; b < 256; b++) inv[tok_byte_level_cp(b)] = (int16_t)b;
    TokBuf x = {0}, y = {0};
    int rc = 0;
    for (int id = 0; id < t->n_vocab && rc == 0; id++) {
        if (!(t->attr[id] & TOK_ATTR_PRESENT)) continue;
        x.n = 0;
        if ((rc = tokbuf_append(&x, t->arena.p + t->piece_off[id], t->piece_len[id], err))) break;
        for (int k = 0; k < plan->n && !(t->attr[id] & TOK_ATTR_ADDED) && rc == 0; k++) {
            const DecStep *st = &plan->steps[k];
            const uint8_t *u = (const uint8_t *)x.p;
            y.n = 0;
            if ((rc = tokbuf_reserve(&y, x.n + 8, err))) break;
            if (st->type == DEC_BYTELEVEL) {
                int all = 1;
                for (size_t i = 0; i < x.n && all;) {
                    size_t len = tok_utf8_valid(u + i, x.n - i);
                    uint32_t cp = 0;
                    if (len == 2) cp = (uint32_t)(u[i] & 0x1F) << 6 | (u[i + 1] & 0x3F);
                    else if (len == 1) cp = u[i];
                    if (len == 0 || len > 2 || cp >= 324 || inv[cp] < 0) {
                        all = 0;
                        break;
                    }
                    y.p[y.n++] = (char)inv[cp];
                    i += len;
                }
                if (!all) continue; /* HF keeps such a token's text as it is */
            } else if (st->type == DEC_BYTEFALLBACK) {
                int b = -1;
                if (x.n == 6 && memcmp(x.p, "<0x", 3) == 0 && x.p[5] == '>') {
                    int hi = x.p[3], lo = x.p[4];
                    hi = hi >= '0' && hi <= '9' ? hi - '0' : hi >= 'A' && hi <= 'F' ? hi - 'A' + 10 : hi >= 'a' && hi <= 'f' ? hi - 'a' + 10 : -1;
                    lo = lo >= '0' && lo <= '9' ? lo - '0' : lo >= 'A' && lo <= 'F' ? lo - 'A' + 10 : lo >= 'a' && lo <= 'f' ? lo - 'a' + 10 : -1;
                    if (hi >= 0 && lo >= 0) b = hi * 16 + lo;
                }
                if (b < 0) continue;
                y.p[y.n++] = (char)b;
            } else if (st->type == DEC_REPLACE) {
                size_t alen = strlen(st->a), blen = strlen(st->b);
                if (alen == 0) rc = tokbuf_append(&y, x.p, x.n, err); /* refused by the loaders: never loop */
                for (size_t i = 0; i < x.n && alen > 0 && rc == 0;) {
                    if (i + alen <= x.n && memcmp(x.p + i, st->a, alen) == 0) {
                        if ((rc = tokbuf_append(&y, st->b, blen, err))) break;
                        i += alen;
                    } else {
                        if ((rc = tokbuf_append(&y, x.p + i, 1, err))) break;
                        i++;
                    }
                }
            } else { /* DEC_STRIP, per token */
                size_t clen = strlen(st->a), s0 = 0, s1 = x.n;
                for (int c = 0; c < st->start && s0 + clen <= s1 && memcmp(x.p + s0, st->a, clen) == 0; c++) s0 += clen;
                for (int c = 0; c < st->stop && s1 >= s0 + clen && memcmp(x.p + s1 - clen, st->a, clen) == 0; c++) s1 -= clen;
                if ((rc = tokbuf_append(&y, x.p + s0, s1 - s0, err))) break;
            }
            TokBuf tmp = x;
            x = y;
            y = tmp;
        }
        if (rc == 0) rc = tok_set_decoded(t, id, x.p, x.n, err);
    }
    tokbuf_free(&x);
    tokbuf_free(&y);
    return rc;
}

/* ---------------------------------------------------------------- the file */

/* The id of an added token (only those: Qwen3 has "<s>" as an ordinary piece), or -1. */
static int32_t added_id(const Tokenizer *t, const char *content) {
    for (int k = 0; k < t->n_added; k++)
        if (strcmp(t->added[k].content, content) == 0) return t->added[k].id;
    return -1;
}

static int load_root(Tokenizer *t, const cJSON *root, Err *err) {
    if (!cJSON_IsObject(root)) return bad(t, err, "(top level)", "an object", root);
    if (load_model(t, root, err)) return -1;
    const cJSON *n = item(root, "normalizer");
    if (n && !cJSON_IsNull(n) && load_normalizer(t, n, "normalizer", err)) return -1;
    n = item(root, "pre_tokenizer");
    if (n && !cJSON_IsNull(n) && load_pre_tokenizer(t, n, "pre_tokenizer", err)) return -1;
    n = item(root, "post_processor");
    if (n && !cJSON_IsNull(n) && load_post(t, n, "post_processor", err)) return -1;
    DecPlan plan = {0};
    n = item(root, "decoder");
    if (n && !cJSON_IsNull(n) && load_decoder(t, n, "decoder", &plan, err)) return -1;
    if (build_decoded(t, &plan, err)) return -1;

    /* SentencePiece-style (byte fallback) tokenizers do not read "<s>" in text as BOS */
    t->match_added = !t->byte_fallback;
    t->bos_id = t->n_prefix > 0 ? t->post_prefix[0] : added_id(t, "<s>");
    t->eos_id = added_id(t, "</s>");
    if (t->eos_id < 0) t->eos_id = added_id(t, "<|endoftext|>");
    if (t->bos_id >= 0) t->attr[t->bos_id] |= TOK_ATTR_SPECIAL;
    /* words of pre-tokenizer-less segments are cut before runs of what spaces became */
    t->wsplit[0] = ' ';
    t->wsplit_len = 1;
    for (int k = 0; k < t->n_norm; k++) {
        const TokNorm *st = &t->norm[k];
        if (st->type == NORM_REPLACE && st->alen == 1 && st->a[0] == ' ' && st->blen > 0 && st->blen < sizeof t->wsplit) {
            memcpy(t->wsplit, st->b, st->blen);
            t->wsplit_len = st->blen;
        }
    }
    return 0;
}

int tok_load_json(Tokenizer *t, const char *text, size_t len, Err *err) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        const char *where = cJSON_GetErrorPtr();
        size_t off = where && where >= text && where <= text + len ? (size_t)(where - text) : 0;
        return err_set(err, "%s: expected valid JSON, found a syntax error near byte %zu", t->path, off);
    }
    int rc = load_root(t, root, err);
    cJSON_Delete(root);
    return rc;
}
