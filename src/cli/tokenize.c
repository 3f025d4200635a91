/*
** tokenize.c — `anetrain tokenize` (text files to token files, or ids as JSON lines) and
** `anetrain tokenizer train` (a BPE vocabulary learned from text, as a tokenizer.json).
**
** Both read documents the same way (data/documents.h's DocReader): one per line, one per file,
** or one per JSON line (a text field). Tokenizing goes chunk by chunk — up to CHUNK_BYTES of
** text or CHUNK_DOCS documents, encoded on the thread pool with tokenizer_encode_many, then
** written in document order — so memory stays bounded and the output is the same for any
** --threads. Token files are written
** as they grow into temporary files that replace the outputs only when everything succeeded.
**
** Text is never rejected for its bytes: invalid UTF-8 and NUL bytes go through the tokenizer,
** which keeps every byte (byte-fallback or byte-level tokens), so decoding gives the text back.
** A file that looks binary gets a warning, not silence. What is rejected, with the file and
** line: a missing, empty or unreadable input, a JSON line that does not parse, a missing or
** non-string text field.
*/
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/bpe_train.h"
#include "../data/documents.h"
#include "../data/tokenizer.h"
#include "../data/tokfile.h"
#include "../util/fileio.h"
#include "../util/parallel.h"
#include "args.h"
#include "progress.h"
#include "cli.h"

static const char *tokenize_help =
    "usage: anetrain tokenize --tokenizer FILE [options] INPUT... -o OUT.bin\n"
    "       anetrain tokenize --tokenizer FILE --ids-jsonl [options] INPUT...\n"
    "\n"
    "Turns text into a token file for `anetrain train`/`eval`: each document's ids, with what\n"
    "the tokenizer's post-processor adds (Llama-2 and trained vocabularies: BOS = <s> before\n"
    "each document, as llama2.c's TinyStories files; Qwen3: nothing), concatenated.\n"
    "\n"
    "  --tokenizer FILE      a HF tokenizer.json (Llama-2, Qwen3, or one made by `anetrain\n"
    "                        tokenizer train`) or a llama2.c tokenizer.bin (required)\n"
    "  --vocab-size N        ids to read from a tokenizer.bin (default: all in the file)\n"
    "  -o, --out FILE        the token file. Raw little-endian uint16 without a header (llama2.c's\n"
    "                        format) when every id fits, i.e. vocabularies up to 65,536 ids; else\n"
    "                        ANETOK with 4-byte ids (Qwen3). The summary says which.\n"
    "  --anetok              write ANETOK even when the ids fit 2 bytes (the header records the\n"
    "                        vocabulary size, which readers check)\n"
    "  --format lines|file|jsonl\n"
    "                        what a document is: a line (default; a final \\r is dropped with the\n"
    "                        \\n), a whole file (bytes as they are), or a JSON object per line\n"
    "                        whose --text-field holds the text (blank lines are skipped)\n"
    "  --text-field NAME     the field of --format jsonl (default text)\n"
    "  --val-frac X          send a fraction X (0..0.5) of the documents to a validation file:\n"
    "                        document i (from 0, empty ones not counted) goes there when\n"
    "                        floor((i+1)*X) > floor(i*X) — every 1/X-th document, spread evenly,\n"
    "                        floor(n*X) in all. Default 0: no validation file.\n"
    "  --val-out FILE        the validation file (default: OUT with -val before the extension,\n"
    "                        e.g. tokens.bin -> tokens-val.bin)\n"
    "  --eos                 also end each document with the tokenizer's EOS (</s>, or Qwen3's\n"
    "                        <|endoftext|>): separates documents when nothing starts them\n"
    "  --threads N           encoding threads (default: all cores); the output does not depend on it\n"
    "  --ids-jsonl           print, instead of writing files, each document's ids as a JSON array\n"
    "                        on one line of standard output (empty documents too: [1] for Llama-2)\n"
    "\n"
    "Documents: empty ones (empty lines) are not written to token files. Any bytes are accepted\n"
    "and kept: invalid UTF-8 becomes byte tokens (<0xNN>, or byte-level tokens in Qwen3), NUL is a\n"
    "byte like any other, and decoding gives the text back (two exceptions are the tokenizers' own\n"
    "normalizers: Qwen3's NFC, and U+2581 '▁', which SentencePiece-style tokenizers read as a space).\n"
    "An input with NUL bytes or more than 30% invalid UTF-8 in its first 64 KiB gets a warning\n"
    "that it looks binary. A missing or empty input, a JSON line that does not parse, or a missing\n"
    "text field is an error naming the file and line; nothing is written then.\n"
    "\n"
    "On a terminal a progress line (MB, MB/s, ETA) is drawn on stderr; a summary follows\n"
    "(documents, tokens, bytes, tokens per byte, files).\n"
    "\n"
    "examples:\n"
    "  anetrain tokenize --tokenizer tokenizer.json kjv.txt -o kjv.bin --val-frac 0.05\n"
    "  anetrain tokenize --tokenizer qwen3-tokenizer.json --format jsonl --eos data.jsonl -o q.bin\n"
    "  anetrain tokenize --tokenizer tokenizer.json --ids-jsonl some.txt\n";

static const char *tokenizer_help =
    "usage: anetrain tokenizer train --vocab N [options] TEXT... -o tokenizer.json\n"
    "\n"
    "Learns a byte-fallback BPE vocabulary of N ids from text, SentencePiece-style like the\n"
    "Llama-2 tokenizer and llama2.c's custom ones (small vocabularies, 512-8192, suit small\n"
    "models), and writes a HF tokenizer.json in the Llama-2 file's shape: `anetrain tokenize`,\n"
    "HF tokenizers and transformers.js load it and give the same ids.\n"
    "\n"
    "  --vocab N             ids in all, 260..262144: 0 <unk>, 1 <s>, 2 </s>, 3..258 the byte\n"
    "                        tokens <0x00>..<0xFF>, then single characters (most frequent first),\n"
    "                        then one piece per learned merge (required)\n"
    "  -o, --out FILE        the tokenizer.json to write (required; written atomically)\n"
    "  --format lines|file|jsonl, --text-field NAME\n"
    "                        documents as in `anetrain tokenize` (default: one per line)\n"
    "  --coverage X          share of character occurrences the single-character pieces cover\n"
    "                        (default 0.9995, as SentencePiece), within at most half of the ids\n"
    "                        above 258; rarer characters are spelled with byte tokens and never\n"
    "                        merged\n"
    "  --max-piece N         longest learned piece in characters (default 16)\n"
    "  --threads N           threads for the check after training (default: all cores)\n"
    "\n"
    "How: spaces become U+2581 '▁' and one is put in front (the normalizer); the text is cut\n"
    "before each run of '▁' into words, which are counted; then the most frequent pair of\n"
    "neighbouring pieces inside words is merged, again and again (ties: the pair made of\n"
    "earlier ids), until the vocabulary has N ids. The result is deterministic. Afterwards the\n"
    "file is loaded back and the first 8 MB of the text are encoded to report tokens per byte.\n"
    "It is an error if the text runs out of pairs before N ids (give more text or a smaller N).\n"
    "\n"
    "examples:\n"
    "  bible -f Gen1:1-Rev22:21 | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' > kjv.txt\n"
    "  anetrain tokenizer train --vocab 4096 kjv.txt -o tokenizer.json\n"
    "  anetrain tokenize --tokenizer tokenizer.json kjv.txt -o kjv.bin --val-frac 0.05\n";

/* The document formats both commands read (data/documents.h). */
#define TOKENIZE_FORMATS (DOC_FORMAT_BIT(DOC_LINES) | DOC_FORMAT_BIT(DOC_FILE) | DOC_FORMAT_BIT(DOC_JSONL))

enum {
    CHUNK_BYTES = 8 << 20, /* text per encode_many call */
    CHUNK_DOCS = 32768,
    SNIFF_BYTES = 64 << 10, /* how much of a file the binary check reads */
    CHECK_BYTES = 8 << 20,  /* text the trainer's check encodes */
};

/* "-o" is the one short flag: spelled out so that the table parser sees it. */
static void expand_short_flags(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-o")) argv[i] = "--out";
}

/* ---------------------------------------------------------------- reading documents */

/* Warns when the start of a file does not look like text (the text is used all the same). */
static void sniff_binary(const char *cmd, const char *path, const uint8_t *p, size_t n) {
    if (n > SNIFF_BYTES) n = SNIFF_BYTES;
    size_t nul = 0, invalid = 0;
    for (size_t i = 0; i < n;) {
        if (p[i] < 0x80) {
            nul += p[i] == 0;
            i++;
            continue;
        }
        /* a valid multi-byte sequence, or one invalid byte (a sequence cut by the window is valid) */
        size_t len = p[i] >= 0xC2 && p[i] <= 0xDF ? 2 : p[i] >= 0xE0 && p[i] <= 0xEF ? 3 : p[i] >= 0xF0 && p[i] <= 0xF4 ? 4 : 0;
        size_t k = 1;
        while (len && k < len && i + k < n && (p[i + k] & 0xC0) == 0x80) k++;
        if (len && (k == len || i + k == n)) {
            i += k;
        } else {
            invalid++;
            i++;
        }
    }
    if (nul > 0)
        fprintf(stderr,
                "anetrain %s: warning: %s looks binary (%zu NUL bytes in the first %zu bytes); using it anyway: "
                "every byte is kept, as a token\n",
                cmd, path, nul, n);
    else if (invalid * 10 > n * 3)
        fprintf(stderr,
                "anetrain %s: warning: %s looks binary (%.0f%% of the first %zu bytes are not UTF-8); using it "
                "anyway: every byte is kept, as a token\n",
                cmd, path, 100.0 * (double)invalid / (double)n, n);
}

/* The DocReader's hooks of the two commands: each input's start is sniffed when opened. */
static void sniff_tokenize(void *ctx, const char *path, const uint8_t *data, size_t size) {
    (void)ctx;
    sniff_binary("tokenize", path, data, size);
}
static void sniff_tokenizer_train(void *ctx, const char *path, const uint8_t *data, size_t size) {
    (void)ctx;
    sniff_binary("tokenizer train", path, data, size);
}

/* A reader of the inputs (data/documents.h); sniff NULL, or JSON lines (whose texts are no file's
** bytes): no binary check. */
static void reader_init(DocReader *r, DocOpenHook sniff, const char *const *paths, int n, DocFormat format,
                        const char *field) {
    doc_reader_init(r, paths, n, format, field, format != DOC_JSONL ? sniff : NULL, NULL);
}

/* ---------------------------------------------------------------- writing token files */

/* A token file being written and the documents put into it (tokfile.h's TokWriter). */
typedef struct {
    TokWriter w;
    uint64_t n_docs;
} DocWriter;

static int writer_put(DocWriter *d, const int32_t *ids, size_t n, Err *err) {
    if (tokfile_writer_put(&d->w, ids, n, err) != 0) return -1;
    d->n_docs++;
    return 0;
}

/* OUT with "-val" before the extension of its file name (tokens.bin -> tokens-val.bin). */
static void default_val_path(const char *out, char *buf, size_t size) {
    const char *slash = strrchr(out, '/');
    const char *dot = strrchr(slash ? slash + 1 : out, '.');
    if (!dot || dot == (slash ? slash + 1 : out)) snprintf(buf, size, "%s-val", out);
    else snprintf(buf, size, "%.*s-val%s", (int)(dot - out), out, dot);
}

/* ---------------------------------------------------------------- ids as JSON lines */

typedef struct {
    char buf[1 << 16];
    size_t n;
} OutBuf;

static void out_flush(OutBuf *o) {
    fwrite(o->buf, 1, o->n, stdout);
    o->n = 0;
}

static void out_ids(OutBuf *o, const int32_t *ids, size_t n) {
    if (o->n + 2 > sizeof o->buf) out_flush(o);
    o->buf[o->n++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (o->n + 13 > sizeof o->buf) out_flush(o);
        char tmp[12];
        int k = 0;
        uint32_t v = (uint32_t)ids[i];
        do {
            tmp[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        if (i) o->buf[o->n++] = ',';
        while (k) o->buf[o->n++] = tmp[--k];
    }
    if (o->n + 2 > sizeof o->buf) out_flush(o);
    o->buf[o->n++] = ']';
    o->buf[o->n++] = '\n';
}

/* ---------------------------------------------------------------- chunks */

typedef struct {
    DocRef *docs;
    const char **texts;
    size_t *lens;
    TokenIds *ids;
    int n, cap;
    size_t bytes;
    DocArena arena; /* the texts of JSON lines */
} Chunk;

static int chunk_push(Chunk *c, DocRef d, Err *err) {
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 1024;
        DocRef *docs = realloc(c->docs, (size_t)cap * sizeof *docs);
        if (docs) c->docs = docs;
        const char **texts = realloc(c->texts, (size_t)cap * sizeof *texts);
        if (texts) c->texts = texts;
        size_t *lens = realloc(c->lens, (size_t)cap * sizeof *lens);
        if (lens) c->lens = lens;
        TokenIds *ids = realloc(c->ids, (size_t)cap * sizeof *ids);
        if (ids) {
            memset(ids + c->cap, 0, (size_t)(cap - c->cap) * sizeof *ids);
            c->ids = ids;
        }
        if (!docs || !texts || !lens || !ids) return err_set(err, "out of memory for %d documents", cap);
        c->cap = cap;
    }
    c->docs[c->n++] = d;
    c->bytes += d.len;
    return 0;
}

/* Points texts[] at the documents (the arena no longer moves). */
static void chunk_resolve(Chunk *c) {
    for (int i = 0; i < c->n; i++) {
        c->texts[i] = c->docs[i].ptr ? c->docs[i].ptr : c->arena.p + c->docs[i].off;
        c->lens[i] = c->docs[i].len;
        c->ids[i].n = 0;
    }
}

static void chunk_reset(Chunk *c) {
    for (int i = 0; i < c->n; i++)
        if (c->ids[i].cap > (1u << 20)) token_ids_free(&c->ids[i]); /* a huge document: give it back */
    c->n = 0;
    c->bytes = 0;
    c->arena.n = 0;
}

static void chunk_free(Chunk *c) {
    for (int i = 0; i < c->cap; i++) token_ids_free(&c->ids[i]);
    free(c->docs);
    free(c->texts);
    free(c->lens);
    free(c->ids);
    free(c->arena.p);
    memset(c, 0, sizeof *c);
}

static int chunk_full(const Chunk *c) { return c->bytes >= CHUNK_BYTES || c->n >= CHUNK_DOCS; }

/* ---------------------------------------------------------------- progress */

typedef struct {
    int tty, drawn;
    double t0, last; /* start; last drawn (the first line waits 0.2 s: early rates mean little) */
    uint64_t total;
} Progress;

static void progress_draw(Progress *p, const char *what, uint64_t done, uint64_t tokens, int final) {
    if (!p->tty) return;
    double now = now_seconds();
    if (!final && now - p->last < 0.2) return;
    p->last = now;
    p->drawn = 1;
    double el = now - p->t0, rate = el > 0 ? (double)done / el : 0;
    char eta[32];
    format_duration(rate > 0 ? (double)(p->total - done) / rate : -1, eta, sizeof eta);
    char toks[48] = "";
    if (tokens) snprintf(toks, sizeof toks, " | %llu tokens", (unsigned long long)tokens);
    fprintf(stderr, "\r%s %.1f/%.1f MB (%.0f%%) | %.1f MB/s%s | ETA %s\033[K", what, done / 1e6, p->total / 1e6,
            p->total ? 100.0 * (double)done / (double)p->total : 100.0, rate / 1e6, toks, eta);
    if (final) fputc('\n', stderr);
}

static void group_digits(uint64_t v, char *buf, size_t size) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v), k = 0;
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < size; i++) {
        buf[o++] = tmp[i];
        k = n - 1 - i;
        if (k > 0 && k % 3 == 0) buf[o++] = ',';
    }
    buf[o] = '\0';
}

/* ---------------------------------------------------------------- anetrain tokenize */

typedef struct {
    const char *tokenizer, *out, *val_out, *field;
    int vocab_size, threads, ids_jsonl, eos, anetok;
    DocFormat format;
    double val_frac;
    const char **inputs;
    int n_inputs;
    int val_frac_given;
} TokenizeArgs;

static int parse_tokenize(int argc, char **argv, TokenizeArgs *a, Err *err) {
    memset(a, 0, sizeof *a);
    a->field = "text";
    a->threads = parallel_cpu_count();
    const char *format = "lines";
    expand_short_flags(argc, argv);
    const ArgSpec specs[] = {
        {"--tokenizer", ARG_STR, &a->tokenizer, 0, 0, NULL},
        {"--vocab-size", ARG_INT, &a->vocab_size, 1, 1 << 26, NULL},
        {"--out", ARG_STR, &a->out, 0, 0, NULL},
        {"--anetok", ARG_BOOL, &a->anetok, 0, 0, NULL},
        {"--format", ARG_STR, &format, 0, 0, NULL},
        {"--text-field", ARG_STR, &a->field, 0, 0, NULL},
        {"--val-frac", ARG_DOUBLE, &a->val_frac, 0, 0.5, &a->val_frac_given},
        {"--val-out", ARG_STR, &a->val_out, 0, 0, NULL},
        {"--eos", ARG_BOOL, &a->eos, 0, 0, NULL},
        {"--threads", ARG_INT, &a->threads, 1, 256, NULL},
        {"--ids-jsonl", ARG_BOOL, &a->ids_jsonl, 0, 0, NULL},
    };
    a->inputs = malloc((size_t)(argc > 0 ? argc : 1) * sizeof *a->inputs);
    if (!a->inputs) return err_set(err, "out of memory");
    if (args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), a->inputs, argc, &a->n_inputs, err))
        return -1;
    if (doc_format_parse("--format", format, TOKENIZE_FORMATS, &a->format, err)) return -1;
    if (!a->tokenizer) return err_set(err, "--tokenizer: a tokenizer.json or tokenizer.bin is required");
    if (a->n_inputs == 0) return err_set(err, "expected at least one input text file, found none");
    if (a->ids_jsonl) {
        if (a->out || a->val_out || a->val_frac_given || a->anetok)
            return err_set(err, "--ids-jsonl prints ids to standard output: expected no -o/--out, --val-frac, "
                                "--val-out or --anetok with it");
    } else {
        if (!a->out) return err_set(err, "-o/--out: the token file to write is required (or --ids-jsonl to print ids)");
        if (a->val_out && a->val_frac <= 0)
            return err_set(err, "--val-out: expected --val-frac above 0 with it, found %s",
                           a->val_frac_given ? "--val-frac 0" : "no --val-frac");
    }
    return 0;
}

typedef struct {
    uint64_t docs, empty, bytes, tokens;
} Totals;

int cli_tokenize(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(tokenize_help, stdout);
        return 0;
    }
    Err err = {{0}};
    TokenizeArgs a;
    int rc = parse_tokenize(argc, argv, &a, &err);
    uint64_t total_bytes = 0;
    if (rc == 0) rc = doc_inputs_check(a.inputs, a.n_inputs, &total_bytes, &err);
    if (rc) {
        free(a.inputs);
        return cli_fail("tokenize", &err);
    }
    parallel_init(a.threads);
    Tokenizer *tok = NULL;
    if (tokenizer_load(a.tokenizer, a.vocab_size, &tok, &err)) {
        free(a.inputs);
        return cli_fail("tokenize", &err);
    }
    int vocab = tokenizer_vocab_size(tok), eos = tokenizer_eos_id(tok);
    if (a.eos && eos < 0) {
        err_set(&err, "--eos: %s has no EOS token (</s> or <|endoftext|>)", a.tokenizer);
        tokenizer_free(tok);
        free(a.inputs);
        return cli_fail("tokenize", &err);
    }
    int id_bytes = vocab <= 65536 ? 2 : 4, headered = a.anetok || id_bytes == 4;
    char val_path[1100] = "";
    static volatile sig_atomic_t never; /* --ids-jsonl (stdout): Ctrl-C ends it as usual */
    volatile sig_atomic_t *stop = &never;
    if (!a.ids_jsonl) { /* the inputs are checked: now every output path, before any work (see train.c) */
        rc = output_file_check(a.out, "-o/--out", &err);
        if (rc == 0 && a.val_frac > 0) {
            if (a.val_out) snprintf(val_path, sizeof val_path, "%s", a.val_out);
            else default_val_path(a.out, val_path, sizeof val_path);
            rc = output_file_check(val_path, a.val_out ? "--val-out" : "--val-out (default: -o/--out with -val)", &err);
        }
        if (rc == 0 && val_path[0] && !strcmp(val_path, a.out))
            rc = err_set(&err, "--val-out %s: expected another file than -o/--out", val_path);
        if (rc) {
            tokenizer_free(tok);
            free(a.inputs);
            return cli_fail("tokenize", &err);
        }
    }

    static DocWriter train_w, val_w; /* large buffers: not on the stack */
    int have_val = val_path[0] != '\0';
    if (!a.ids_jsonl) {
        uint32_t v = (uint32_t)vocab;
        if (dir_ensure_parent(a.out, &err) || tokfile_writer_open(&train_w.w, a.out, headered, id_bytes, v, &err) ||
            (have_val && (dir_ensure_parent(val_path, &err) ||
                          tokfile_writer_open(&val_w.w, val_path, headered, id_bytes, v, &err)))) {
            tokfile_writer_abort(&train_w.w);
            tokfile_writer_abort(&val_w.w);
            tokenizer_free(tok);
            free(a.inputs);
            return cli_fail("tokenize", &err);
        }
        stop = catch_stop_signals();
    }
    static OutBuf out;
    DocReader r;
    reader_init(&r, sniff_tokenize, a.inputs, a.n_inputs, a.format, a.field);
    Chunk c = {0};
    Totals tot = {0};
    double t_start = now_seconds();
    Progress prog = {term_is_tty() && !a.ids_jsonl, 0, t_start, t_start, total_bytes};
    uint64_t val_docs = 0; /* index of the next non-empty document, for the split */
    int more = 1;
    rc = 0;
    while (more && rc == 0 && !*stop) {
        DocRef d;
        int got = doc_reader_next(&r, &c.arena, &d, &err);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got > 0 && chunk_push(&c, d, &err)) {
            rc = -1;
            break;
        }
        more = got > 0;
        if (c.n == 0 || (more && !chunk_full(&c))) continue;
        chunk_resolve(&c);
        if (tokenizer_encode_many(tok, c.texts, c.lens, c.n, 1, c.ids, &err)) {
            rc = -1;
            break;
        }
        for (int i = 0; i < c.n && rc == 0; i++) {
            TokenIds *ids = &c.ids[i];
            if (a.eos) {
                if (ids->n == ids->cap) {
                    size_t cap = ids->cap ? 2 * ids->cap : 16;
                    int32_t *q = realloc(ids->ids, cap * sizeof *q);
                    if (!q) {
                        rc = err_set(&err, "out of memory");
                        break;
                    }
                    ids->ids = q;
                    ids->cap = cap;
                }
                ids->ids[ids->n++] = eos;
            }
            if (a.ids_jsonl) {
                out_ids(&out, ids->ids, ids->n);
                tot.docs++;
                tot.tokens += ids->n;
                tot.bytes += c.lens[i];
                continue;
            }
            if (c.lens[i] == 0) {
                tot.empty++;
                continue;
            }
            int to_val = have_val && floor((double)(val_docs + 1) * a.val_frac) > floor((double)val_docs * a.val_frac);
            val_docs++;
            rc = writer_put(to_val ? &val_w : &train_w, ids->ids, ids->n, &err);
            tot.docs++;
            tot.tokens += ids->n;
            tot.bytes += c.lens[i];
        }
        chunk_reset(&c);
        doc_reader_release(&r);
        if (a.ids_jsonl) out_flush(&out);
        progress_draw(&prog, "tokenize", r.done, tot.tokens, 0);
    }
    if (a.ids_jsonl) out_flush(&out);
    if (rc == 0 && !*stop) progress_draw(&prog, "tokenize", r.done, tot.tokens, 1);
    else if (prog.drawn) fputc('\n', stderr);
    doc_reader_free(&r);
    chunk_free(&c);
    free(a.inputs);
    double seconds = now_seconds() - prog.t0;
    char desc[1400];
    tokenizer_describe(tok, desc, sizeof desc);
    TokenIds probe = {0};
    int adds_nothing = tokenizer_encode(tok, "", 0, 1, &probe, NULL) == 0 && probe.n == 0;
    token_ids_free(&probe);
    tokenizer_free(tok);
    if (*stop && rc == 0) {
        tokfile_writer_abort(&train_w.w);
        tokfile_writer_abort(&val_w.w);
        fprintf(stderr, "anetrain tokenize: interrupted: nothing written\n");
        return 130;
    }
    if (rc == 0 && !a.ids_jsonl) {
        if (tot.docs == 0)
            rc = err_set(&err, "expected text, found only empty %s in %d input%s",
                         a.format == DOC_JSONL ? "texts" : "lines", a.n_inputs, a.n_inputs == 1 ? "" : "s");
        else if (have_val && val_w.n_docs == 0)
            rc = err_set(&err, "--val-frac %g: %llu documents give none to validation: expected at least one (raise "
                               "--val-frac or give more documents)",
                         a.val_frac, (unsigned long long)tot.docs);
    }
    if (rc == 0 && !a.ids_jsonl) {
        rc = tokfile_writer_commit(&train_w.w, &err);
        if (rc == 0 && have_val) rc = tokfile_writer_commit(&val_w.w, &err);
    }
    if (rc) {
        tokfile_writer_abort(&train_w.w);
        tokfile_writer_abort(&val_w.w);
        return cli_fail("tokenize", &err);
    }
    if (a.ids_jsonl) return 0;

    char n1[32], n2[32], n3[32];
    const char *fmt = headered ? (id_bytes == 2 ? "ANETOK, 2-byte ids" : "ANETOK, 4-byte ids (the vocabulary is over 65,536)")
                               : "raw uint16 (llama2.c format)";
    printf("tokenizer %s\n", desc);
    group_digits(tot.bytes, n1, sizeof n1);
    group_digits(tot.docs, n2, sizeof n2);
    printf("input     %d file%s, %s bytes of text in %s document%s (%s)", a.n_inputs, a.n_inputs == 1 ? "" : "s", n1,
           n2, tot.docs == 1 ? "" : "s",
           a.format == DOC_LINES ? "one per line" : a.format == DOC_FILE ? "one per file" : "JSON lines");
    if (tot.empty) printf("; %llu empty skipped", (unsigned long long)tot.empty);
    printf("\n");
    group_digits(tot.tokens, n3, sizeof n3);
    printf("tokens    %s, %.3f tokens/byte (%.2f bytes/token)%s\n", n3, (double)tot.tokens / (double)tot.bytes,
           (double)tot.bytes / (double)tot.tokens, a.eos ? ", EOS after each document" : "");
    group_digits(train_w.w.n_tokens, n1, sizeof n1);
    group_digits(train_w.n_docs, n2, sizeof n2);
    printf("output    %s: %s tokens, %s documents, %s\n", a.out, n1, n2, fmt);
    if (have_val) {
        group_digits(val_w.w.n_tokens, n1, sizeof n1);
        group_digits(val_w.n_docs, n2, sizeof n2);
        printf("          %s: %s tokens, %s documents (validation: 1 document in %.3g)\n", val_path, n1, n2,
               1.0 / a.val_frac);
    }
    printf("time      %.2f s, %.2f MB/s on %d thread%s\n", seconds, seconds > 0 ? tot.bytes / 1e6 / seconds : 0.0,
           a.threads, a.threads == 1 ? "" : "s");
    if (adds_nothing && !a.eos)
        printf("note      this tokenizer adds no BOS: documents follow each other without a separator "
               "(--eos ends each with EOS)\n");
    return 0;
}

/* ---------------------------------------------------------------- anetrain tokenizer train */

int cli_tokenizer(int argc, char **argv) {
    if (argc < 2 || args_want_help(argc, argv)) {
        fputs(tokenizer_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    Err err = {{0}};
    if (strcmp(argv[1], "train") != 0) {
        err_set(&err, "expected a subcommand, train, found '%s'", argv[1]);
        return cli_fail("tokenizer", &err);
    }
    argc--;
    argv++;
    expand_short_flags(argc, argv);
    BpeTrainOptions opt;
    bpe_train_defaults(&opt, 0);
    const char *out = NULL, *format_s = "lines", *field = "text";
    int threads = parallel_cpu_count(), vocab_given = 0, n_inputs = 0;
    DocFormat format = DOC_LINES;
    const ArgSpec specs[] = {
        {"--vocab", ARG_INT, &opt.vocab_size, BPE_TRAIN_MIN_VOCAB, BPE_TRAIN_MAX_VOCAB, &vocab_given},
        {"--out", ARG_STR, &out, 0, 0, NULL},
        {"--format", ARG_STR, &format_s, 0, 0, NULL},
        {"--text-field", ARG_STR, &field, 0, 0, NULL},
        {"--coverage", ARG_DOUBLE, &opt.char_coverage, 1e-9, 1, NULL},
        {"--max-piece", ARG_INT, &opt.max_piece_chars, 2, 1024, NULL},
        {"--threads", ARG_INT, &threads, 1, 256, NULL},
    };
    const char **inputs = malloc((size_t)argc * sizeof *inputs);
    if (!inputs) return err_set(&err, "out of memory"), cli_fail("tokenizer train", &err);
    uint64_t total_bytes = 0;
    int rc = args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), inputs, argc, &n_inputs, &err);
    if (rc == 0) rc = doc_format_parse("--format", format_s, TOKENIZE_FORMATS, &format, &err);
    if (rc == 0 && !vocab_given)
        rc = err_set(&err, "--vocab: the vocabulary size is required (%d..%d; 512-8192 suit small models)",
                     BPE_TRAIN_MIN_VOCAB, BPE_TRAIN_MAX_VOCAB);
    if (rc == 0 && !out) rc = err_set(&err, "-o/--out: the tokenizer.json to write is required");
    if (rc == 0) rc = doc_inputs_check(inputs, n_inputs, &total_bytes, &err);
    if (rc == 0) rc = output_file_check(out, "-o/--out", &err); /* before the work (see train.c) */
    BpeTrainer *bt = NULL;
    if (rc == 0) rc = bpe_trainer_new(&opt, &bt, &err);
    if (rc) {
        free(inputs);
        return cli_fail("tokenizer train", &err);
    }
    parallel_init(threads);
    double t0 = now_seconds();
    Progress prog = {term_is_tty(), 0, t0, t0, total_bytes};
    DocReader r;
    reader_init(&r, sniff_tokenizer_train, inputs, n_inputs, format, field);
    DocArena arena = {0};
    uint64_t text_bytes = 0;
    for (;;) {
        DocRef d;
        arena.n = 0;
        int got = doc_reader_next(&r, &arena, &d, &err);
        if (got <= 0) {
            rc = got;
            break;
        }
        if ((rc = bpe_trainer_add(bt, d.ptr ? d.ptr : arena.p + d.off, d.len, &err))) break;
        text_bytes += d.len;
        doc_reader_release(&r);
        progress_draw(&prog, "counting words", r.done, 0, 0);
    }
    doc_reader_free(&r);
    if (prog.drawn) fprintf(stderr, "\r\033[K");
    double t_count = now_seconds() - t0;
    BpeTrainStats st = {0};
    if (rc == 0 && text_bytes == 0)
        rc = err_set(&err, "expected text, found only empty %s", format == DOC_JSONL ? "texts" : "lines");
    if (rc == 0 && bpe_trainer_train(bt, &st, &err)) rc = err_wrap(&err, "--vocab %d", opt.vocab_size);
    if (rc == 0) rc = dir_ensure_parent(out, &err);
    if (rc == 0) rc = bpe_trainer_save(bt, out, &err);
    bpe_trainer_free(bt);
    if (rc) {
        free(arena.p);
        free(inputs);
        return cli_fail("tokenizer train", &err);
    }
    /* The check: the file loads, and what it makes of the start of the text. */
    Tokenizer *tok = NULL;
    uint64_t chk_bytes = 0, chk_tokens = 0;
    rc = tokenizer_load(out, 0, &tok, &err);
    if (rc == 0) {
        reader_init(&r, NULL, inputs, n_inputs, format, field);
        Chunk c = {0};
        int more = 1;
        while (more && rc == 0) {
            DocRef d;
            int got = doc_reader_next(&r, &c.arena, &d, &err);
            if (got < 0) rc = -1;
            more = got > 0 && chk_bytes + c.bytes < CHECK_BYTES;
            if (got > 0 && chunk_push(&c, d, &err)) rc = -1;
            if (rc || c.n == 0 || (more && !chunk_full(&c))) continue;
            chunk_resolve(&c);
            rc = tokenizer_encode_many(tok, c.texts, c.lens, c.n, 0, c.ids, &err);
            for (int i = 0; i < c.n && rc == 0; i++) chk_tokens += c.ids[i].n;
            chk_bytes += c.bytes;
            chunk_reset(&c);
            doc_reader_release(&r);
        }
        doc_reader_free(&r);
        chunk_free(&c);
        tokenizer_free(tok);
    }
    free(arena.p);
    free(inputs);
    if (rc) {
        err_wrap(&err, "checking the written %s", out);
        return cli_fail("tokenizer train", &err);
    }
    char n1[32], n2[32], n3[32];
    group_digits(st.bytes, n1, sizeof n1);
    group_digits(st.documents, n2, sizeof n2);
    group_digits(st.words, n3, sizeof n3);
    printf("text       %d file%s: %s bytes, %s document%s, %s words (%llu distinct); counted in %.2f s\n", n_inputs,
           n_inputs == 1 ? "" : "s", n1, n2, st.documents == 1 ? "" : "s", n3, (unsigned long long)st.distinct_words,
           t_count);
    printf("alphabet   %d of %d characters, covering %.4f%% of character occurrences (--coverage %g); the rest "
           "are spelled with byte tokens\n",
           st.alphabet, st.chars_seen, st.units ? 100.0 * (double)st.units_covered / (double)st.units : 100.0,
           opt.char_coverage);
    printf("vocabulary %d ids: 259 reserved (<unk> <s> </s>, 256 bytes), %d characters, %d pieces from %d merges; "
           "learned in %.2f s\n",
           st.vocab_size, st.alphabet, st.vocab_size - BPE_TRAIN_RESERVED - st.alphabet, st.merges, st.seconds);
    group_digits(chk_tokens, n3, sizeof n3);
    printf("check      %s loads; the first %.2f MB of text make %s tokens: %.3f tokens/byte (%.2f bytes/token, "
           "without BOS)\n",
           out, chk_bytes / 1e6, n3, chk_bytes ? (double)chk_tokens / (double)chk_bytes : 0.0,
           chk_tokens ? (double)chk_bytes / (double)chk_tokens : 0.0);
    printf("saved      %s; next: anetrain tokenize --tokenizer %s TEXT... -o tokens.bin\n", out, out);
    return 0;
}
