/*
** test_bpe_train.c — the BPE vocabulary trainer: deterministic output, the exact vocabulary
** size, merges that name pieces and make pieces, the id layout, the first merges of a tiny
** text worked out by hand, exact round trips through our encoder (with unseen characters,
** invalid UTF-8 and NUL), byte fallback, pieces that never spell reserved ones, the options,
** and every error.
**
** The comparison with an independent implementation (@lenml/tokenizers loading the written
** tokenizer.json) is in tests/test_tokenize.py.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/bpe_train.h"
#include "data/tokenizer.h"
#include "data/tokenizer_internal.h"
#include "test.h"
#include "util/fileio.h"
#include "util/parallel.h"

static char tmpdir[256];

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

/* ---------------------------------------------------------------- a varied generated corpus */

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33) % n;
}

static const char *const WORDS[] = {
    "the", "of", "and", "to", "in", "is", "was", "he", "she", "it", "that", "for", "on", "with", "as", "his",
    "her", "they", "at", "be", "this", "from", "have", "little", "girl", "named", "Lily", "loved", "play",
    "outside", "sunshine", "garden", "dragon", "castle", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
    "café", "naïve", "Zürich", "São", "Paulo", "internationalization", "don't", "it's", "e-mail", "3.14", "2024",
    "x=1;", "(a+b)", "#include", "<stdio.h>", "“quoted”", "—", "…", "日本語", "中文", "한국어", "Ελληνικά",
    "русский", "😀", "👍🏽", "\t", "a\tb",
};

static const char *const SYLLABLES[] = {
    "ka", "lo", "mi", "ne", "tor", "va", "shi", "qu", "ar", "ent", "ion", "ing", "pre", "con", "ly", "est",
    "ber", "gan", "zu", "wy", "ph", "th", "ou", "é", "ö", "ß", "ñ", "ж", "я", "の", "é", "1", "7",
};

/* Documents: prose-like lines of words (common ones, and made-up ones of 1-4 syllables),
** commas and full stops, some double spaces. */
static void corpus(uint64_t seed, int n_docs, char ***docs_out, size_t **lens_out) {
    rng_state = seed;
    char **docs = malloc((size_t)n_docs * sizeof *docs);
    size_t *lens = malloc((size_t)n_docs * sizeof *lens);
    for (int d = 0; d < n_docs; d++) {
        char buf[2048];
        size_t n = 0;
        int words = 3 + (int)rnd(25);
        for (int w = 0; w < words; w++) {
            char made[64] = "";
            const char *s = WORDS[rnd(sizeof WORDS / sizeof WORDS[0])];
            if (rnd(2)) {
                for (int k = 1 + (int)rnd(4); k > 0; k--) strcat(made, SYLLABLES[rnd(sizeof SYLLABLES / sizeof SYLLABLES[0])]);
                s = made;
            }
            size_t l = strlen(s);
            if (n + l + 4 >= sizeof buf) break;
            if (w) buf[n++] = ' ';
            if (rnd(20) == 0) buf[n++] = ' ';
            memcpy(buf + n, s, l);
            n += l;
            if (rnd(8) == 0) buf[n++] = ',';
        }
        buf[n++] = '.';
        docs[d] = malloc(n + 1);
        memcpy(docs[d], buf, n);
        docs[d][n] = '\0';
        lens[d] = n;
    }
    *docs_out = docs;
    *lens_out = lens;
}

static void corpus_free(char **docs, size_t *lens, int n) {
    for (int i = 0; i < n; i++) free(docs[i]);
    free(docs);
    free(lens);
}

/* Trains on the documents; NULL (with a failed check) on error. */
static BpeTrainer *train_docs(const BpeTrainOptions *o, char **docs, const size_t *lens, int n, BpeTrainStats *st) {
    BpeTrainer *t;
    Err err;
    if (bpe_trainer_new(o, &t, &err)) {
        CHECK(0, "bpe_trainer_new: %s", err.msg);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        int rc = bpe_trainer_add(t, docs[i], lens[i], &err);
        CHECK(rc == 0, "add: %s", err.msg);
    }
    BpeTrainStats s;
    if (bpe_trainer_train(t, st ? st : &s, &err)) {
        CHECK(0, "train: %s", err.msg);
        bpe_trainer_free(t);
        return NULL;
    }
    return t;
}

/* Saves and loads back with our tokenizer. */
static Tokenizer *save_and_load(const BpeTrainer *t, const char *name) {
    Err err;
    const char *path = tmp_path(name);
    if (bpe_trainer_save(t, path, &err)) {
        CHECK(0, "save: %s", err.msg);
        return NULL;
    }
    Tokenizer *tok;
    if (tokenizer_load(path, 0, &tok, &err)) {
        CHECK(0, "load: %s", err.msg);
        return NULL;
    }
    return tok;
}

static TokenIds enc(const Tokenizer *t, const char *s, size_t n, int add_special) {
    TokenIds ids = {0};
    Err err;
    int rc = tokenizer_encode(t, s, n, add_special, &ids, &err);
    CHECK(rc == 0, "encode failed: %s", err.msg);
    return ids;
}

/* ---------------------------------------------------------------- tests */

static void test_deterministic(void) {
    char **docs;
    size_t *lens;
    corpus(1, 3000, &docs, &lens);
    BpeTrainOptions o;
    bpe_train_defaults(&o, 1024);
    BpeTrainer *a = train_docs(&o, docs, lens, 3000, NULL), *b = train_docs(&o, docs, lens, 3000, NULL);
    if (a && b) {
        Err err;
        char *ja = bpe_trainer_json(a, &err), *jb = bpe_trainer_json(b, &err);
        CHECK(ja && jb && strcmp(ja, jb) == 0, "two trainings on the same text differ");
        free(ja);
        free(jb);
    }
    bpe_trainer_free(a);
    bpe_trainer_free(b);
    corpus_free(docs, lens, 3000);
}

static void test_vocab_layout_and_merges(void) {
    char **docs;
    size_t *lens;
    corpus(2, 4000, &docs, &lens);
    int sizes[] = {260, 300, 512, 2048};
    for (int k = 0; k < 4; k++) {
        BpeTrainOptions o;
        bpe_train_defaults(&o, sizes[k]);
        BpeTrainStats st;
        BpeTrainer *t = train_docs(&o, docs, lens, 4000, &st);
        if (!t) continue;
        int n = sizes[k];
        CHECK(st.vocab_size == n, "vocab %d: stats say %d", n, st.vocab_size);
        CHECK(bpe_trainer_piece(t, n - 1) != NULL && bpe_trainer_piece(t, n) == NULL, "vocab %d: ids 0..%d", n, n - 1);
        CHECK(!strcmp(bpe_trainer_piece(t, 0), "<unk>") && !strcmp(bpe_trainer_piece(t, 1), "<s>") &&
                  !strcmp(bpe_trainer_piece(t, 2), "</s>"),
              "vocab %d: specials", n);
        CHECK(!strcmp(bpe_trainer_piece(t, 3), "<0x00>") && !strcmp(bpe_trainer_piece(t, 3 + 0x41), "<0x41>") &&
                  !strcmp(bpe_trainer_piece(t, 258), "<0xFF>"),
              "vocab %d: byte tokens", n);
        CHECK(!strcmp(bpe_trainer_piece(t, 259), "\xE2\x96\x81"), "vocab %d: the most frequent character is '▁', found '%s'",
              n, bpe_trainer_piece(t, 259));
        /* every piece: valid UTF-8, no ' ', no '▁' after another character; single characters first */
        for (int id = 259; id < n; id++) {
            const char *p = bpe_trainer_piece(t, id);
            size_t len = strlen(p), chars = 0;
            int bad = 0, seen_other = 0;
            for (size_t i = 0; i < len;) {
                size_t u = tok_utf8_valid((const uint8_t *)p + i, len - i);
                if (u == 0 || p[i] == ' ') {
                    bad = 1;
                    break;
                }
                int meta = u == 3 && !memcmp(p + i, "\xE2\x96\x81", 3);
                if (meta && seen_other) bad = 1;
                if (!meta) seen_other = 1;
                i += u;
                chars++;
            }
            CHECK(!bad, "vocab %d: piece %d \"%s\" is not a valid piece", n, id, p);
            CHECK((id < 259 + st.alphabet) == (chars == 1), "vocab %d: piece %d \"%s\" out of place", n, id, p);
            CHECK(chars <= 16, "vocab %d: piece %d longer than 16 characters", n, id);
        }
        /* merges: parts are pieces, the result is a piece; the k-th new piece comes from a merge in order */
        int next_new = 259 + st.alphabet;
        CHECK(st.merges >= n - next_new, "vocab %d: %d merges for %d pieces", n, st.merges, n - next_new);
        for (int i = 0; i < st.merges; i++) {
            int32_t l, r;
            CHECK(bpe_trainer_merge(t, i, &l, &r) == 0, "merge %d", i);
            CHECK(l >= 259 && r >= 259 && l < n && r < n, "vocab %d: merge %d names ids %d %d", n, i, l, r);
            char joined[256];
            snprintf(joined, sizeof joined, "%s%s", bpe_trainer_piece(t, l), bpe_trainer_piece(t, r));
            int found = -1;
            for (int id = 259; id < n && found < 0; id++)
                if (!strcmp(bpe_trainer_piece(t, id), joined)) found = id;
            CHECK(found >= 0, "vocab %d: merge %d makes \"%s\", not a piece", n, i, joined);
            if (found == next_new) next_new++;
            CHECK(found < next_new, "vocab %d: merge %d makes piece %d before its turn", n, i, found);
        }
        CHECK(next_new == n, "vocab %d: merges make pieces up to %d", n, next_new);
        int32_t l, r;
        CHECK(bpe_trainer_merge(t, st.merges, &l, &r) != 0, "merge index past the end");
        /* the file loads, with the Llama-2 shape */
        char name[64];
        snprintf(name, sizeof name, "v%d.json", n);
        Tokenizer *tok = save_and_load(t, name);
        if (tok) {
            CHECK(tokenizer_vocab_size(tok) == n, "vocab %d: loaded %d ids", n, tokenizer_vocab_size(tok));
            CHECK(tokenizer_bos_id(tok) == 1 && tokenizer_eos_id(tok) == 2, "vocab %d: bos/eos", n);
            CHECK(tok->n_merges == (size_t)st.merges, "vocab %d: loaded %zu merges of %d", n, tok->n_merges, st.merges);
            CHECK(tok->wsplit_len > 0, "vocab %d: word splitting must be possible (no '▁' after a character)", n);
            TokenIds ids = enc(tok, "the", 3, 1);
            CHECK(ids.n >= 2 && ids.ids[0] == 1, "vocab %d: BOS first", n);
            token_ids_free(&ids);
            tokenizer_free(tok);
        }
        bpe_trainer_free(t);
    }
    corpus_free(docs, lens, 4000);
}

/* "ab cd": '▁' 259 (twice), then a b c d (once each, by code point) 260..263. All pairs count 1:
** the lowest ids go first. */
static void test_first_merges_by_hand(void) {
    BpeTrainOptions o;
    bpe_train_defaults(&o, 259 + 5 + 4);
    char *doc = "ab cd";
    size_t len = 5;
    BpeTrainStats st;
    BpeTrainer *t = train_docs(&o, &doc, &len, 1, &st);
    if (!t) return;
    CHECK(st.alphabet == 5 && st.words == 2 && st.distinct_words == 2, "alphabet %d, words %llu", st.alphabet,
          (unsigned long long)st.words);
    const char *want[4][2] = {{"\xE2\x96\x81", "a"}, {"\xE2\x96\x81", "c"}, {"\xE2\x96\x81" "a", "b"}, {"\xE2\x96\x81" "c", "d"}};
    for (int i = 0; i < 4; i++) {
        int32_t l, r;
        if (bpe_trainer_merge(t, i, &l, &r)) {
            CHECK(0, "merge %d missing", i);
            continue;
        }
        CHECK(!strcmp(bpe_trainer_piece(t, l), want[i][0]) && !strcmp(bpe_trainer_piece(t, r), want[i][1]),
              "merge %d: got \"%s\" \"%s\"", i, bpe_trainer_piece(t, l), bpe_trainer_piece(t, r));
    }
    CHECK(!strcmp(bpe_trainer_piece(t, 267), "\xE2\x96\x81" "cd"), "last piece");
    bpe_trainer_free(t);
    /* a more frequent pair wins over lower ids; a run of spaces starts a word ("▁▁y") */
    bpe_train_defaults(&o, 259 + 5 + 2);
    char *docs2[2] = {"ba ba ba ab", "x  y"};
    size_t lens2[2] = {11, 4};
    t = train_docs(&o, docs2, lens2, 2, &st);
    if (!t) return;
    CHECK(st.words == 6 && st.distinct_words == 4, "words %llu distinct %llu", (unsigned long long)st.words,
          (unsigned long long)st.distinct_words);
    const char *want2[2][2] = {{"\xE2\x96\x81", "b"}, {"\xE2\x96\x81" "b", "a"}};
    for (int i = 0; i < 2; i++) {
        int32_t l, r;
        CHECK(bpe_trainer_merge(t, i, &l, &r) == 0 && !strcmp(bpe_trainer_piece(t, l), want2[i][0]) &&
                  !strcmp(bpe_trainer_piece(t, r), want2[i][1]),
              "merge %d", i);
    }
    bpe_trainer_free(t);
}

static const struct {
    const char *s;
    size_t n; /* 0: strlen */
} TEXTS[] = {
    {"the little girl named Lily loved to play outside.", 0},
    {"  leading spaces, trailing spaces   ", 0},
    {"a  b   c    d", 0},
    {"tabs\tand\nnewlines\r\nand\x0b controls\x01\x7f", 0},
    {"unseen: 中文字符 ⅷ ∮ 🦀 ǅ Ω", 0},
    {"invalid \xff\xfe UTF-8 \xc3 \xe2\x82 bytes \x80", 0},
    {"NUL\0inside", 10},
    {"<s> </s> <unk> <0x41> written in the text", 0},
    {"", 0},
    {" ", 0},
    {"x", 0},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
};

static void test_roundtrip_and_byte_fallback(void) {
    char **docs;
    size_t *lens;
    corpus(3, 3000, &docs, &lens);
    BpeTrainOptions o;
    bpe_train_defaults(&o, 700);
    BpeTrainer *t = train_docs(&o, docs, lens, 3000, NULL);
    Tokenizer *tok = t ? save_and_load(t, "rt.json") : NULL;
    if (tok) {
        for (size_t i = 0; i < sizeof TEXTS / sizeof TEXTS[0]; i++) {
            size_t n = TEXTS[i].n ? TEXTS[i].n : strlen(TEXTS[i].s);
            TokenIds ids = enc(tok, TEXTS[i].s, n, 1);
            Err err;
            size_t len = 0;
            char *back = tokenizer_decode(tok, ids.ids, ids.n, 1, &len, &err);
            CHECK(back && len == n && memcmp(back, TEXTS[i].s, n) == 0, "text %zu: decode(encode(s)) != s: \"%s\"", i,
                  back ? back : err.msg);
            /* HF encodes the whole normalized text as one word: our word split must not change ids */
            size_t saved = tok->wsplit_len;
            tok->wsplit_len = 0;
            TokenIds whole = enc(tok, TEXTS[i].s, n, 1);
            tok->wsplit_len = saved;
            CHECK(whole.n == ids.n && memcmp(whole.ids, ids.ids, ids.n * sizeof *ids.ids) == 0,
                  "text %zu: splitting into words changed the ids", i);
            free(back);
            token_ids_free(&ids);
            token_ids_free(&whole);
        }
        /* the training documents too (they hold double spaces and non-ASCII) */
        for (int d = 0; d < 3000; d += 7) {
            TokenIds ids = enc(tok, docs[d], lens[d], 0);
            size_t len;
            char *back = tokenizer_decode(tok, ids.ids, ids.n, 1, &len, NULL);
            CHECK(back && len == lens[d] && memcmp(back, docs[d], len) == 0, "document %d round trip", d);
            free(back);
            token_ids_free(&ids);
        }
        /* an unseen character: its UTF-8 bytes as byte tokens, after '▁' */
        TokenIds ids = enc(tok, "\xe2\x85\xb7", 3, 0); /* U+2177, not in the corpus */
        int32_t meta = tokenizer_piece_to_id(tok, "\xE2\x96\x81", 3);
        CHECK(ids.n == 4 && ids.ids[0] == meta && ids.ids[1] == 3 + 0xE2 && ids.ids[2] == 3 + 0x85 &&
                  ids.ids[3] == 3 + 0xB7,
              "byte fallback for an unseen character (%zu ids)", ids.n);
        token_ids_free(&ids);
        /* invalid UTF-8 and NUL: byte tokens */
        ids = enc(tok, "\xff\0", 2, 0);
        CHECK(ids.n == 3 && ids.ids[1] == 3 + 0xFF && ids.ids[2] == 3, "invalid byte and NUL as byte tokens");
        token_ids_free(&ids);
        /* a frequent word is one piece */
        ids = enc(tok, "the", 3, 0);
        CHECK(ids.n == 1, "\"the\" is one piece (%zu ids)", ids.n);
        token_ids_free(&ids);
        tokenizer_free(tok);
    }
    bpe_trainer_free(t);
    corpus_free(docs, lens, 3000);
}

/* Text full of reserved spellings inside words: the pairs that would spell "<s>", "<0x41>",
** ... are frequent but must never be merged (their parts are). */
static void test_reserved_spellings(void) {
    enum { N = 200 };
    char *docs[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        docs[i] = i % 2 ? "x<s>y<0x41>z</s>w<unk>" : "q<0x0A>q</s>";
        lens[i] = strlen(docs[i]);
    }
    BpeTrainOptions o;
    bpe_train_defaults(&o, 300);
    o.char_coverage = 1;
    BpeTrainer *t = train_docs(&o, docs, lens, N, NULL);
    if (!t) return;
    int has_lt = 0, has_s_gt = 0;
    for (int id = 259; id < 300; id++) {
        const char *p = bpe_trainer_piece(t, id);
        int reserved = !strcmp(p, "<s>") || !strcmp(p, "</s>") || !strcmp(p, "<unk>") ||
                       (strlen(p) == 6 && !strncmp(p, "<0x", 3) && p[5] == '>');
        CHECK(!reserved, "piece %d spells a reserved piece: %s", id, p);
        has_lt |= !strcmp(p, "<");
        has_s_gt |= !strcmp(p, "s>");
    }
    CHECK(has_lt && has_s_gt, "the parts of \"<s>\" are pieces (the test text exercises the rule)");
    Tokenizer *tok = save_and_load(t, "reserved.json");
    if (tok) {
        for (int k = 0; k < 2; k++) {
            TokenIds ids = enc(tok, docs[k], lens[k], 1);
            size_t len;
            char *back = tokenizer_decode(tok, ids.ids, ids.n, 1, &len, NULL);
            CHECK(back && len == lens[k] && !memcmp(back, docs[k], len), "reserved spellings round trip");
            for (size_t i = 1; i < ids.n; i++) CHECK(ids.ids[i] >= 259, "id %d in the text's ids", ids.ids[i]);
            free(back);
            token_ids_free(&ids);
        }
        tokenizer_free(tok);
    }
    bpe_trainer_free(t);
}

static void test_options(void) {
    char **docs;
    size_t *lens;
    corpus(4, 2000, &docs, &lens);
    /* max_piece_chars */
    BpeTrainOptions o;
    bpe_train_defaults(&o, 800);
    o.max_piece_chars = 4;
    BpeTrainStats st;
    BpeTrainer *t = train_docs(&o, docs, lens, 2000, &st);
    for (int id = 259; t && id < 800; id++) {
        const char *p = bpe_trainer_piece(t, id);
        size_t chars = 0;
        for (size_t i = 0; p[i]; i++) chars += ((unsigned char)p[i] & 0xC0) != 0x80;
        CHECK(chars <= 4, "piece %d \"%s\" longer than --max-piece 4", id, p);
    }
    bpe_trainer_free(t);
    /* coverage 1: every character of the text (none is NUL) is a piece */
    bpe_train_defaults(&o, 1000);
    o.char_coverage = 1;
    t = train_docs(&o, docs, lens, 2000, &st);
    CHECK(st.alphabet == st.chars_seen && st.units_covered == st.units, "coverage 1: %d of %d characters", st.alphabet,
          st.chars_seen);
    bpe_trainer_free(t);
    /* a small coverage leaves rare characters out */
    o.char_coverage = 0.9;
    t = train_docs(&o, docs, lens, 2000, &st);
    CHECK(st.alphabet < st.chars_seen && (double)st.units_covered >= 0.9 * (double)st.units,
          "coverage 0.9: %d of %d characters", st.alphabet, st.chars_seen);
    bpe_trainer_free(t);
    /* a vocabulary too small for the alphabet: the most frequent characters in half of it, merges in the rest */
    bpe_train_defaults(&o, 269);
    t = train_docs(&o, docs, lens, 2000, &st);
    CHECK(st.alphabet == 5 && st.merges >= 5 && st.vocab_size == 269, "vocab 269: alphabet %d merges %d", st.alphabet,
          st.merges);
    bpe_trainer_free(t);
    corpus_free(docs, lens, 2000);
}

static void test_errors(void) {
    BpeTrainOptions o;
    BpeTrainer *t = NULL;
    Err err;
    int bad_vocab[] = {0, 259, BPE_TRAIN_MAX_VOCAB + 1, -5};
    for (int i = 0; i < 4; i++) {
        bpe_train_defaults(&o, bad_vocab[i]);
        CHECK(bpe_trainer_new(&o, &t, &err) != 0 && t == NULL && strstr(err.msg, "vocab_size"), "vocab %d: %s",
              bad_vocab[i], err.msg);
    }
    bpe_train_defaults(&o, 512);
    o.char_coverage = 0;
    CHECK(bpe_trainer_new(&o, &t, &err) != 0 && strstr(err.msg, "char_coverage"), "coverage 0");
    o.char_coverage = 1.5;
    CHECK(bpe_trainer_new(&o, &t, &err) != 0 && strstr(err.msg, "char_coverage"), "coverage 1.5");
    bpe_train_defaults(&o, 512);
    o.max_piece_chars = 1;
    CHECK(bpe_trainer_new(&o, &t, &err) != 0 && strstr(err.msg, "max_piece_chars"), "max piece 1");
    /* too little text for the vocabulary; nothing at all */
    bpe_train_defaults(&o, 4096);
    CHECK(bpe_trainer_new(&o, &t, &err) == 0, "%s", err.msg);
    bpe_trainer_add(t, "a short text", 12, &err);
    CHECK(bpe_trainer_train(t, NULL, &err) != 0 && strstr(err.msg, "4096 ids"), "too little text: %s", err.msg);
    CHECK(bpe_trainer_json(t, &err) == NULL, "no json after a failed training");
    bpe_trainer_free(t);
    CHECK(bpe_trainer_new(&o, &t, &err) == 0, "%s", err.msg);
    CHECK(bpe_trainer_add(t, "", 0, &err) == 0, "an empty document is fine");
    CHECK(bpe_trainer_train(t, NULL, &err) != 0 && strstr(err.msg, "259"), "no text: %s", err.msg);
    bpe_trainer_free(t);
    /* out of order */
    bpe_train_defaults(&o, 262);
    CHECK(bpe_trainer_new(&o, &t, &err) == 0, "%s", err.msg);
    CHECK(bpe_trainer_json(t, &err) == NULL && bpe_trainer_piece(t, 0) == NULL, "nothing before training");
    bpe_trainer_add(t, "abc abc", 7, &err);
    CHECK(bpe_trainer_train(t, NULL, &err) == 0, "%s", err.msg);
    CHECK(bpe_trainer_add(t, "more", 4, &err) != 0, "add after training");
    CHECK(bpe_trainer_train(t, NULL, &err) != 0, "training twice");
    CHECK(bpe_trainer_save(t, "/nonexistent-dir/x.json", &err) != 0 && strstr(err.msg, "/nonexistent-dir/x.json"),
          "save to a missing directory: %s", err.msg);
    bpe_trainer_free(t);
    bpe_trainer_free(NULL);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/anetrain-test-bpe-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    RUN(test_deterministic);
    RUN(test_vocab_layout_and_merges);
    RUN(test_first_merges_by_hand);
    RUN(test_roundtrip_and_byte_fallback);
    RUN(test_reserved_spellings);
    RUN(test_options);
    RUN(test_errors);
    parallel_shutdown();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return TEST_SUMMARY();
}
