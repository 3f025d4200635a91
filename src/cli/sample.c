/*
** sample.c — `anetrain sample` and `anetrain chat`: text from a model, streamed.
**
** sample is llama2.c's run.c generate mode on any model anetrain loads: the prompt (with
** BOS, as run.c encodes it) is fed through the KV cache, then tokens are sampled one at a
** time and printed as they come, the prompt first. At temperature 0 the tokens are run.c's.
**
** chat is the Qwen3 chat template (ChatML) written out explicitly, no Jinja engine: the
** template in tokenizer_config.json is only checked to be of that kind. Every turn renders
** the whole conversation as the template would, and the cache keeps the longest prefix it
** already holds, so only new text is fed.
**
** Both validate before any work: tokenizer vocabulary against the model's, prompt length
** against the context, flag ranges. Model, tokenizer and generator are loaded once.
*/
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../data/chat_template.h"
#include "../data/tokenizer.h"
#include "../generate/generate.h"
#include "../io/model_file.h"
#include "../io/peft.h"
#include "../model/quant.h"
#include "../util/blas.h"
#include "../util/fileio.h"
#include "../util/memory.h"
#include "../util/parallel.h" /* parallel_init, parallel_cpu_count */
#include "args.h"
#include "cli.h"

enum { DEFAULT_MAX_SEQ_CAP = 4096 };

static const char *sample_help =
    "usage: anetrain sample --model PATH --tokenizer FILE [options]\n"
    "\n"
    "Generates text from a model with a KV cache, like llama2.c's run.c: prints the prompt,\n"
    "then the continuation as it is generated (each piece flushed), then a newline; at the\n"
    "end 'achieved tok/s: X' on stderr (generated tokens per second after the first one;\n"
    "the prompt is fed in chunks beforehand and not counted).\n"
    "\n"
    "  --model PATH        an anetrain checkpoint, a llama2.c .bin, or a HF directory\n"
    "                      (config.json + model.safetensors)\n"
    "  --adapter DIR       a LoRA adapter (a PEFT directory, e.g. from `anetrain finetune`),\n"
    "                      merged into the weights as they load: W + (alpha/r) B A\n"
    "  --int8              generate with the int8 model: the layer matrices quantized per row\n"
    "                      (as eval --int8, finetune --int8) and dequantized once at load, so\n"
    "                      the output is the int8 model's (the generator keeps fp32 weights:\n"
    "                      no memory saved here); an --adapter is added after, unquantized\n"
    "  --tokenizer FILE    a HF tokenizer.json or a llama2.c tokenizer.bin (default: the HF\n"
    "                      directory's tokenizer.json). A tokenizer.bin must hold exactly the\n"
    "                      model's vocab_size pieces; a tokenizer.json may have fewer ids than\n"
    "                      the model (Qwen3: 151669 of 151936) but not more.\n"
    "  --prompt TEXT       text to continue (default empty: Llama-2 then starts from BOS alone).\n"
    "                      Encoded as run.c does, with BOS for Llama-2 tokenizers (Qwen3's adds\n"
    "                      none, so it needs a non-empty prompt). Any bytes are accepted and\n"
    "                      kept losslessly: bytes that are not valid UTF-8 become byte tokens\n"
    "                      (<0xNN>, or byte-level pieces) and are printed back unchanged.\n"
    "  --steps N           positions to run, the prompt's tokens included, exactly as run.c's\n"
    "                      -n (default 256; values above the context are lowered to it). The\n"
    "                      continuation has N - (prompt tokens) + 1 tokens unless a stop token\n"
    "                      comes first; N below the prompt's length is an error.\n"
    "  --temperature X     0: greedy argmax, whose tokens equal run.c's on the same model\n"
    "                      (default 1.0). X > 0: sample from softmax(logits / X).\n"
    "  --top-p X           nucleus sampling in (0, 1] (default 0.9; 1 = the whole distribution),\n"
    "                      computed as run.c does. Ignored at temperature 0.\n"
    "  --seed S            seed of the sampler (default: the current time, as run.c). The\n"
    "                      random numbers come from anetrain's generator, not run.c's, so only\n"
    "                      --temperature 0 reproduces run.c's tokens; a given seed always\n"
    "                      reproduces anetrain's.\n"
    "  --threads N         threads (default: all cores)\n"
    "  --max-seq N         positions the KV cache holds: the context (default the model's\n"
    "                      max_seq_len, at most 4096; up to max_seq_len when given)\n"
    "  --prefill N         prompt tokens per batched forward pass (default 64; 1 = one at a\n"
    "                      time, as run.c)\n"
    "\n";

/* The rest of the manual (one literal would pass the 4095 characters ISO C guarantees). */
static const char *sample_help_more =
    "Generation stops after --steps positions, or when the model emits a stop token: BOS (as\n"
    "run.c: in llama2.c data BOS starts the next document; EOS </s> is printed, not a stop),\n"
    "and for Qwen3 tokenizers <|endoftext|> and <|im_end|>. A stop token is not printed.\n"
    "Output is the decoded bytes of each token (after BOS the leading space is dropped, as\n"
    "run.c). As run.c, a one-byte piece that is an ASCII control character other than\n"
    "whitespace is not printed; unlike run.c, byte tokens 0x80-0xFF are printed (run.c drops\n"
    "them, garbling characters that the vocabulary spells with byte tokens, and all of\n"
    "Qwen3's non-ASCII one-byte pieces). Ids the tokenizer does not have (a model's padding\n"
    "rows) print nothing.\n"
    "  --runc-text         print exactly as run.c: drop every one-byte piece that is not\n"
    "                      printable ASCII or whitespace, so the text is byte for byte run.c's\n"
    "                      (to compare the two; the tokens are the same either way)\n"
    "\n"
    "Errors (a message and exit status 1): a tokenizer whose vocabulary does not fit the\n"
    "model, a prompt longer than the context, flags out of range.\n"
    "\n"
    "example:\n"
    "  anetrain sample --model stories15M.bin --tokenizer tokenizer.bin --prompt \"Once upon a time\" \\\n"
    "                  --steps 256 --temperature 0\n";

static const char *chat_help =
    "usage: anetrain chat --model PATH [options]\n"
    "\n"
    "Chats with a Qwen3 model (or any model whose tokenizer and template are ChatML). Reads\n"
    "one user message per line from stdin until end of input, or takes one --prompt, and\n"
    "streams each reply to stdout followed by a newline. At the end 'achieved tok/s: X' on\n"
    "stderr (reply tokens per second, the prompts' prefill not counted).\n"
    "\n"
    "The conversation is rendered as Qwen3's chat template renders it (checked to be of that\n"
    "kind in tokenizer_config.json, not interpreted: there is no Jinja engine here):\n"
    "    <|im_start|>system\\nSYSTEM<|im_end|>\\n           (only with --system)\n"
    "    <|im_start|>user\\nMESSAGE<|im_end|>\\n\n"
    "    <|im_start|>assistant\\nREPLY<|im_end|>\\n           (earlier replies; text up to a\n"
    "                                                     '</think>' and the newlines after\n"
    "                                                     it are dropped, as the template does)\n"
    "    <|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n    (the generation prompt)\n"
    "The empty think block is what the template adds with enable_thinking=false (Qwen3's\n"
    "non-thinking mode); --think leaves it out so the model may think first. A plain ChatML\n"
    "template (no enable_thinking) never gets the block. A reply ends at <|im_end|> or\n"
    "<|endoftext|> (not printed), after --steps tokens, or when the context is full; a\n"
    "conversation that no longer fits the context ends chat with an error (exit status 1).\n"
    "\n"
    "  --model PATH            an anetrain checkpoint, a llama2.c .bin, or a HF directory\n"
    "  --tokenizer FILE        the model's tokenizer.json (default: the HF directory's)\n"
    "  --tokenizer-config FILE tokenizer_config.json with the chat_template (default: the\n"
    "                          one next to the tokenizer file)\n"
    "  --adapter DIR           a LoRA adapter (e.g. `anetrain finetune` on chat examples),\n"
    "                          merged into the weights as they load, as `sample --adapter`\n"
    "  --int8                  the int8 model's weights, as `sample --int8`\n"
    "  --system TEXT           a system message first\n"
    "  --prompt TEXT           one user message: answer it and exit (stdin is not read)\n"
    "  --think                 thinking mode (enable_thinking=true): no empty think block\n"
    "  --steps N               most tokens per reply (default: until the end of the turn)\n"
    "  --temperature X         0 = greedy (default 0.7, Qwen3's advice for non-thinking mode)\n"
    "  --top-p X               nucleus in (0, 1] (default 0.8)\n"
    "  --seed S                sampler seed (default: the current time)\n"
    "  --threads N             threads (default: all cores)\n"
    "  --max-seq N             context for the whole conversation (default the model's\n"
    "                          max_seq_len, at most 4096)\n"
    "  --prefill N             prompt tokens per batched forward pass (default 64)\n"
    "\n"
    "Messages are any bytes (invalid UTF-8 is kept as byte-level tokens). Special tokens\n"
    "written in a message (<|im_start|>, ...) are read as those tokens, as HF does.\n"
    "\n"
    "example:\n"
    "  anetrain chat --model Qwen3-0.6B/ --system \"You are terse.\" --prompt \"Why is the sky blue?\"\n";

/* ------------------------------------------------------------------ shared setup */

typedef struct {
    const char *model, *tokenizer, *adapter;
    int threads, max_seq, prefill, steps;
    float temperature, top_p;
    uint64_t seed;
    int seed_given, max_seq_given;
    int int8;
} CommonArgs;

typedef struct {
    ParamLayout layout;
    float *params;
    Tokenizer *tok;
    Generator *gen;
    Sampler sampler;
    char tok_path[1100];
} Session;

static void session_free(Session *s) {
    gen_free(s->gen);
    sampler_free(&s->sampler);
    tokenizer_free(s->tok);
    free(s->params);
    memset(s, 0, sizeof *s);
}

/* 1 if the file's first non-blank byte is '{' (a tokenizer.json; else a tokenizer.bin). */
static int file_looks_json(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    int c;
    while ((c = fgetc(fp)) != EOF && isspace(c)) {
    }
    fclose(fp);
    return c == '{';
}

/* The tokenizer must cover the model's vocabulary: a tokenizer.bin piece for every row (the
** format has no count, so a different count means a different vocabulary), a tokenizer.json
** no id the model has no row for. */
static int tokenizer_check_vocab(const Tokenizer *tok, const char *path, int json, const ModelConfig *cfg,
                                 Err *err) {
    int n = tokenizer_vocab_size(tok);
    if (!json && n != cfg->vocab_size)
        return err_set(err,
                       "%s: vocabulary size: the model has vocab_size %d, this llama2.c tokenizer.bin holds %d "
                       "pieces (it must be the model's own tokenizer)",
                       path, cfg->vocab_size, n);
    if (json && n > cfg->vocab_size)
        return err_set(err,
                       "%s: vocabulary size: expected at most the model's vocab_size %d, found %d ids (ids >= %d "
                       "have no embedding: not this model's tokenizer)",
                       path, cfg->vocab_size, n, cfg->vocab_size);
    return 0;
}

/* Moves the weights into memory backed by transparent huge pages where the system has them
** (Linux). Decoding streams every weight once per token, and with 4 KiB pages the TLB misses
** cost up to a fifth of the speed; run.c gets large pages for free by mapping the file. The
** copy briefly doubles the weights' memory, so it is skipped unless twice that is free. */
static void params_to_huge_pages(Session *s) {
#if defined(_SC_AVPHYS_PAGES) /* free memory is knowable (Linux); elsewhere keep the weights where they are */
    size_t bytes = s->layout.n_floats * sizeof(float);
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0 || (double)pages * (double)page < 2.0 * (double)mem_huge_size(bytes)) return;
    float *p = mem_alloc_huge(bytes);
    if (!p) return;
    memcpy(p, s->params, bytes);
    free(s->params);
    s->params = p;
#else
    (void)s;
#endif
}

static int session_open(Session *s, const CommonArgs *a, float temperature, float top_p, Err *err) {
    memset(s, 0, sizeof *s);
    if (!a->model) return err_set(err, "--model: a model path is required");
    if (a->tokenizer) {
        snprintf(s->tok_path, sizeof s->tok_path, "%s", a->tokenizer);
    } else {
        snprintf(s->tok_path, sizeof s->tok_path, "%s/tokenizer.json", a->model);
        if (!path_is_dir(a->model) || !path_exists(s->tok_path))
            return err_set(err, "--tokenizer: required (a tokenizer.json or llama2.c tokenizer.bin; only a HF model "
                                "directory with a tokenizer.json provides one)");
    }
    parallel_init(a->threads); /* the generator runs as a team of this many on the pool */
    blas_set_threads(1); /* the generator's threads call BLAS, each on its own share */
    if (model_load_any(a->model, &s->layout, &s->params, err) != 0) return err_wrap(err, "--model");
    if (a->int8) { /* the int8 model's weights: quantized, then dequantized in place (quant.h) */
        Int8Weights q;
        if (quant_int8_create(&q, &s->layout, s->params, err) != 0) {
            session_free(s);
            return err_wrap(err, "--int8");
        }
        quant_int8_dequantize_into(&q, &s->layout, s->params);
        quant_int8_free(&q);
    }
    if (a->adapter && lora_apply(a->adapter, &s->layout, s->params, err) != 0) {
        session_free(s);
        return err_wrap(err, "--adapter");
    }
    params_to_huge_pages(s);
    const ModelConfig *cfg = &s->layout.cfg;
    int json = file_looks_json(s->tok_path);
    if (tokenizer_load(s->tok_path, 0, &s->tok, err) != 0 ||
        tokenizer_check_vocab(s->tok, s->tok_path, json, cfg, err) != 0) {
        session_free(s);
        return err_wrap(err, "--tokenizer");
    }
    GenOptions go = {a->max_seq, a->prefill, a->threads};
    if (!a->max_seq_given) go.max_seq = cfg->max_seq_len < DEFAULT_MAX_SEQ_CAP ? cfg->max_seq_len : DEFAULT_MAX_SEQ_CAP;
    if (a->max_seq_given && a->max_seq > cfg->max_seq_len) {
        err_set(err, "--max-seq: expected at most the model's max_seq_len %d, found %d", cfg->max_seq_len, a->max_seq);
        session_free(s);
        return -1;
    }
    if (sampler_init(&s->sampler, cfg->vocab_size, temperature, top_p, a->seed, err) != 0 ||
        gen_create(&s->gen, &s->layout, s->params, &go, err) != 0) {
        session_free(s);
        return -1;
    }
    return 0;
}

/* Stop tokens: BOS (run.c's rule) and the Qwen3 end markers, those the tokenizer has. */
typedef struct {
    int ids[3], n;
} StopSet;

static void stop_set_init(StopSet *st, const Tokenizer *tok) {
    st->n = 0;
    int bos = tokenizer_bos_id(tok);
    if (bos >= 0) st->ids[st->n++] = bos;
    const char *names[2] = {"<|endoftext|>", "<|im_end|>"};
    for (int i = 0; i < 2; i++) {
        int id = tokenizer_piece_to_id(tok, names[i], strlen(names[i]));
        if (id >= 0) st->ids[st->n++] = id;
    }
}

static int stop_set_has(const StopSet *st, int id) {
    for (int i = 0; i < st->n; i++)
        if (st->ids[i] == id) return 1;
    return 0;
}

/* 1: print as run.c's safe_printf exactly (--runc-text), dropping one-byte pieces >= 0x80 too. */
static int runc_text;

/* Writes one token's text to stdout and flushes it. A one-byte piece that is an ASCII control
** character other than whitespace is skipped, as run.c's safe_printf does; a byte >= 0x80 is
** printed (it is part of a UTF-8 character), unless runc_text. */
static void print_piece(const Tokenizer *tok, int prev, int id) {
    size_t len;
    const char *p = tokenizer_decode_piece(tok, prev, id, &len);
    if (!p || len == 0) return;
    if (len == 1) {
        unsigned char c = (unsigned char)p[0];
        if ((c < 0x80 || runc_text) && !(c < 0x80 && (isprint(c) || isspace(c)))) return;
    }
    fwrite(p, 1, len, stdout);
    fflush(stdout);
}

static uint64_t default_seed(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000007ull + (uint64_t)ts.tv_nsec;
}

/* Flags both commands share; the ranges are checked by the parser, the rest after it. */
#define COMMON_SPECS(a)                                                                            \
    {"--model", ARG_STR, &(a).model, 0, 0, NULL}, {"--tokenizer", ARG_STR, &(a).tokenizer, 0, 0, NULL}, \
        {"--adapter", ARG_STR, &(a).adapter, 0, 0, NULL}, {"--int8", ARG_BOOL, &(a).int8, 0, 0, NULL}, \
        {"--steps", ARG_INT, &(a).steps, 1, 1 << 30, NULL},                                        \
        {"--temperature", ARG_FLOAT, &(a).temperature, 0, 1e6, NULL},                              \
        {"--top-p", ARG_FLOAT, &(a).top_p, 0, 1, NULL}, {"--seed", ARG_U64, &(a).seed, 0, 0, &(a).seed_given}, \
        {"--threads", ARG_INT, &(a).threads, 1, 256, NULL},                                        \
        {"--max-seq", ARG_INT, &(a).max_seq, 1, 1 << 30, &(a).max_seq_given},                      \
        {"--prefill", ARG_INT, &(a).prefill, 1, 65536, NULL}

static void common_defaults(CommonArgs *a) {
    memset(a, 0, sizeof *a);
    a->threads = parallel_cpu_count();
    a->prefill = 64;
    a->top_p = 0.9f;
    a->temperature = 1.0f;
}

/* ------------------------------------------------------------------ sample */

int cli_sample(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(sample_help, stdout);
        fputs(sample_help_more, stdout);
        return 0;
    }
    Err err = {{0}};
    CommonArgs a;
    common_defaults(&a);
    a.steps = 256;
    const char *prompt = "";
    const ArgSpec specs[] = {COMMON_SPECS(a), {"--prompt", ARG_STR, &prompt, 0, 0, NULL},
                             {"--runc-text", ARG_BOOL, &runc_text, 0, 0, NULL}};
    if (args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), NULL, 0, NULL, &err) != 0)
        return cli_fail("sample", &err);
    if (!(a.top_p > 0)) {
        err_set(&err, "--top-p: expected a value in (0, 1], found %g", (double)a.top_p);
        return cli_fail("sample", &err);
    }
    if (!a.seed_given) a.seed = default_seed();

    Session s;
    if (session_open(&s, &a, a.temperature, a.top_p, &err) != 0) return cli_fail("sample", &err);
    int ctx = gen_max_seq(s.gen);
    TokenIds ids = {0};
    int rc = 0;
    if (tokenizer_encode(s.tok, prompt, strlen(prompt), 1, &ids, &err) != 0) {
        err_wrap(&err, "--prompt");
        rc = cli_fail("sample", &err);
    } else if (ids.n == 0) {
        err_set(&err, "--prompt: expected some text: this tokenizer adds no BOS, so an empty prompt has no tokens");
        rc = cli_fail("sample", &err);
    } else if (ids.n > (size_t)ctx) {
        const ModelConfig *cfg = &s.layout.cfg;
        char why[160];
        if (a.max_seq_given) snprintf(why, sizeof why, "--max-seq %d", ctx);
        else if (ctx == cfg->max_seq_len) snprintf(why, sizeof why, "the model's max_seq_len");
        else snprintf(why, sizeof why, "the default cap; --max-seq can raise it to max_seq_len %d", cfg->max_seq_len);
        err_set(&err, "--prompt: %zu tokens, longer than the context of %d positions (%s)", ids.n, ctx, why);
        rc = cli_fail("sample", &err);
    }
    int steps = a.steps < ctx ? a.steps : ctx, n_prompt = (int)ids.n;
    if (rc == 0 && steps < n_prompt) {
        err_set(&err, "--steps %d: expected at least the prompt's %d tokens (steps counts the prompt, as run.c's -n)",
                steps, n_prompt);
        rc = cli_fail("sample", &err);
    }
    if (rc != 0) {
        token_ids_free(&ids);
        session_free(&s);
        return rc;
    }

    StopSet stops;
    stop_set_init(&stops, s.tok);
    /* The prompt as run.c prints it: every token's piece after the first (BOS); a prompt that
    ** does not start with BOS is printed whole. */
    int bos = tokenizer_bos_id(s.tok);
    for (int i = 0; i < n_prompt; i++)
        if (i > 0 || ids.ids[0] != bos) print_piece(s.tok, i > 0 ? ids.ids[i - 1] : -1, ids.ids[i]);
    if (gen_feed(s.gen, ids.ids, n_prompt, NULL, &err) != 0) rc = cli_fail("sample", &err);

    /* run.c's loop: at position pos (the last token fed) sample the next token, print it, and
    ** feed it while pos < steps. */
    int token = ids.ids[n_prompt - 1], pos = n_prompt - 1;
    long decoded = 0; /* single-token forward passes, timed as run.c: from the first one on */
    double t0 = 0;
    while (rc == 0 && pos < steps) {
        int next = sampler_sample(&s.sampler, gen_logits(s.gen));
        pos++;
        if (stop_set_has(&stops, next)) break;
        print_piece(s.tok, token, next);
        token = next;
        if (pos >= steps) break;
        if (t0 == 0) t0 = now_seconds();
        if (gen_feed(s.gen, &token, 1, NULL, &err) != 0) rc = cli_fail("sample", &err);
        decoded++;
    }
    printf("\n");
    fflush(stdout);
    double secs = t0 != 0 ? now_seconds() - t0 : 0;
    if (rc == 0 && secs > 0) fprintf(stderr, "achieved tok/s: %f\n", decoded / secs);
    token_ids_free(&ids);
    session_free(&s);
    return rc;
}

/* ------------------------------------------------------------------ chat */

/* A growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int buf_add(Buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static int buf_adds(Buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

typedef struct {
    int assistant; /* 0: user, 1: assistant (the system message is kept apart) */
    char *text;
    size_t len;
} Message;

typedef struct {
    const char *system;
    Message *msgs;
    int n, cap;
    int think_block; /* 1: the generation prompt ends with the empty think block */
} Conversation;

static int conv_add(Conversation *c, int assistant, const char *text, size_t len) {
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        Message *m = realloc(c->msgs, (size_t)cap * sizeof *m);
        if (!m) return -1;
        c->msgs = m;
        c->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return -1;
    memcpy(copy, text, len);
    copy[len] = '\0';
    c->msgs[c->n++] = (Message){assistant, copy, len};
    return 0;
}

static void conv_free(Conversation *c) {
    for (int i = 0; i < c->n; i++) free(c->msgs[i].text);
    free(c->msgs);
}

static int buf_emit(void *ctx, const char *text, size_t len, int counted) {
    (void)counted;
    return buf_add(ctx, text, len);
}

/* The conversation as Qwen3's template renders it with add_generation_prompt (see chat_help and
** data/chat_template.h). */
static int conv_render(const Conversation *c, Buf *out) {
    out->n = 0;
    int rc = buf_adds(out, "");
    ChatMessage *msgs = malloc(((size_t)c->n + 1) * sizeof *msgs);
    if (!msgs) return -1;
    int n = 0;
    if (c->system) msgs[n++] = (ChatMessage){CHAT_SYSTEM, c->system, strlen(c->system)};
    for (int i = 0; i < c->n; i++)
        msgs[n++] = (ChatMessage){c->msgs[i].assistant ? CHAT_ASSISTANT : CHAT_USER, c->msgs[i].text, c->msgs[i].len};
    rc |= chatml_render(msgs, n, 1, c->think_block, buf_emit, out);
    free(msgs);
    return rc ? -1 : 0;
}

/* Reads one line from fp without its line ending into *line (getline's buffer). -1 at EOF. */
static long read_line(FILE *fp, char **line, size_t *cap) {
    ssize_t n = getline(line, cap, fp);
    if (n < 0) return -1;
    while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r')) (*line)[--n] = '\0';
    return (long)n;
}

typedef struct {
    Session *s;
    StopSet stops;
    TokenIds cached;  /* the tokens whose keys and values the cache holds, in order */
    TokenIds rendered;
    TokenIds reply;
    Buf text;
    int steps;        /* most tokens per reply; 0 = no limit */
    long tokens;      /* reply tokens generated, for the tok/s figure */
    double seconds;   /* time spent generating them, after each reply's first token */
} ChatState;

static int ids_push(TokenIds *t, int32_t id) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        int32_t *p = realloc(t->ids, cap * sizeof *p);
        if (!p) return -1;
        t->ids = p;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return 0;
}

/* One assistant turn: render, feed what the cache lacks, generate and stream the reply, and
** append it to the conversation. */
static int chat_turn(ChatState *st, Conversation *conv, Err *err) {
    Session *s = st->s;
    int ctx = gen_max_seq(s->gen);
    if (conv_render(conv, &st->text) != 0) return err_set(err, "out of memory rendering the conversation");
    st->rendered.n = 0;
    if (tokenizer_encode(s->tok, st->text.p, st->text.n, 0, &st->rendered, err) != 0) return -1;
    size_t n = st->rendered.n;
    if (n >= (size_t)ctx)
        return err_set(err, "the conversation is %zu tokens, the context holds %d (--max-seq; at most max_seq_len %d)",
                       n, ctx, s->layout.cfg.max_seq_len);
    /* Keep the cached prefix the new rendering shares; feed at least the last token. */
    size_t keep = 0;
    while (keep < st->cached.n && keep < n && st->cached.ids[keep] == st->rendered.ids[keep]) keep++;
    if (keep == n) keep = n - 1;
    gen_rewind(s->gen, (int)keep);
    st->cached.n = keep;
    if (gen_feed(s->gen, st->rendered.ids + keep, (int)(n - keep), NULL, err) != 0) return -1;
    for (size_t i = keep; i < n; i++)
        if (ids_push(&st->cached, st->rendered.ids[i])) return err_set(err, "out of memory");

    st->reply.n = 0;
    int prev = st->rendered.ids[n - 1];
    double t0 = 0;
    for (;;) {
        int next = sampler_sample(&s->sampler, gen_logits(s->gen));
        if (stop_set_has(&st->stops, next)) break;
        /* ids past the tokenizer's (the model's padding rows) have no text: not in the reply */
        if (next < tokenizer_vocab_size(s->tok) && ids_push(&st->reply, next)) return err_set(err, "out of memory");
        print_piece(s->tok, prev, next);
        prev = next;
        if (st->steps > 0 && st->reply.n >= (size_t)st->steps) break;
        if (gen_pos(s->gen) >= ctx) {
            fprintf(stderr, "\n[context full: %d positions; the reply is cut here]", ctx);
            break;
        }
        if (t0 == 0) t0 = now_seconds();
        else st->tokens++;
        if (gen_feed(s->gen, &prev, 1, NULL, err) != 0) return -1;
        if (ids_push(&st->cached, prev)) return err_set(err, "out of memory");
    }
    if (t0 != 0) {
        st->tokens++;
        st->seconds += now_seconds() - t0;
    }
    printf("\n");
    fflush(stdout);
    size_t len;
    char *reply = tokenizer_decode(s->tok, st->reply.ids, st->reply.n, 0, &len, err);
    if (!reply) return -1;
    int rc = conv_add(conv, 1, reply, len);
    free(reply);
    return rc ? err_set(err, "out of memory") : 0;
}

int cli_chat(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(chat_help, stdout);
        return 0;
    }
    Err err = {{0}};
    CommonArgs a;
    common_defaults(&a);
    a.steps = 0;
    a.temperature = 0.7f;
    a.top_p = 0.8f;
    const char *config = NULL, *system = NULL, *prompt = NULL;
    int think = 0;
    const ArgSpec specs[] = {
        COMMON_SPECS(a),
        {"--tokenizer-config", ARG_STR, &config, 0, 0, NULL},
        {"--system", ARG_STR, &system, 0, 0, NULL},
        {"--prompt", ARG_STR, &prompt, 0, 0, NULL},
        {"--think", ARG_BOOL, &think, 0, 0, NULL},
    };
    if (args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), NULL, 0, NULL, &err) != 0)
        return cli_fail("chat", &err);
    if (!(a.top_p > 0)) {
        err_set(&err, "--top-p: expected a value in (0, 1], found %g", (double)a.top_p);
        return cli_fail("chat", &err);
    }
    if (!a.seed_given) a.seed = default_seed();

    /* The template first: it is cheap, and a wrong file should not wait for a model load. */
    char config_path[1200];
    if (config) {
        snprintf(config_path, sizeof config_path, "%s", config);
    } else {
        const char *tok = a.tokenizer ? a.tokenizer : a.model;
        if (!tok) return err_set(&err, "--model: a model path is required"), cli_fail("chat", &err);
        char dir[1100];
        snprintf(dir, sizeof dir, "%s", tok);
        if (!path_is_dir(dir)) {
            char *slash = strrchr(dir, '/');
            if (slash) *slash = '\0';
            else snprintf(dir, sizeof dir, ".");
        }
        snprintf(config_path, sizeof config_path, "%s/tokenizer_config.json", dir);
        if (!path_exists(config_path))
            return err_set(&err, "--tokenizer-config: %s: no such file (give the tokenizer_config.json that holds the "
                                 "chat template)", config_path),
                   cli_fail("chat", &err);
    }
    int qwen3 = 0;
    if (chat_template_check(config_path, &qwen3, &err) != 0) return cli_fail("chat", &err);

    Session s;
    if (session_open(&s, &a, a.temperature, a.top_p, &err) != 0) return cli_fail("chat", &err);
    const char *markers[2] = {"<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 2; i++) {
        int id = tokenizer_piece_to_id(s.tok, markers[i], strlen(markers[i]));
        if (id < 0) {
            err_set(&err, "--tokenizer: %s: expected the ChatML token %s, found none (not a Qwen3 tokenizer)",
                    s.tok_path, markers[i]);
            session_free(&s);
            return cli_fail("chat", &err);
        }
    }
    ChatState st;
    memset(&st, 0, sizeof st);
    st.s = &s;
    st.steps = a.steps;
    stop_set_init(&st.stops, s.tok);
    Conversation conv = {system, NULL, 0, 0, qwen3 && !think};
    int interactive = !prompt && isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        const char *msg;
        size_t len;
        if (prompt) {
            if (conv.n > 0) break;
            msg = prompt;
            len = strlen(prompt);
        } else {
            if (interactive) fputs("> ", stderr);
            long n = read_line(stdin, &line, &cap);
            if (n < 0) break;
            if (n == 0) continue;
            msg = line;
            len = (size_t)n;
        }
        if (conv_add(&conv, 0, msg, len) != 0) {
            err_set(&err, "out of memory");
            rc = cli_fail("chat", &err);
            break;
        }
        if (chat_turn(&st, &conv, &err) != 0) {
            rc = cli_fail("chat", &err);
            break;
        }
    }
    if (interactive && rc == 0) fputc('\n', stderr);
    if (rc == 0 && st.seconds > 0) fprintf(stderr, "achieved tok/s: %f\n", st.tokens / st.seconds);
    free(line);
    free(st.cached.ids);
    free(st.rendered.ids);
    free(st.reply.ids);
    free(st.text.p);
    conv_free(&conv);
    session_free(&s);
    return rc;
}
