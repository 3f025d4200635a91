/*
** finetune.c — `anetrain finetune`: LoRA fine-tuning of a model on a text file, as a user
** would ask for it: one command from text to a saved adapter.
**
**   text ──the model's tokenizer──▶ DIR/tokens.bin ──▶ validation loss before
**        ──▶ LoRA training (trainer.c with TrainOptions.lora) ──▶ validation loss after
**        ──▶ DIR/adapter_model.safetensors + DIR/adapter_config.json (PEFT's format)
**        + DIR/lora_state.ckpt (the training state: --resume continues it; checkpoint.h)
**
** The validation split is the last --val-frac of the tokens, as in `train`. The adapter loads
** into `anetrain sample --adapter DIR` and `anetrain convert MODEL OUT --adapter DIR` (merged),
** and into PEFT on the HF export of the model.
*/
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../data/documents.h"
#include "../data/examples.h"
#include "../data/tokenizer.h"
#include "../data/tokfile.h"
#include "../io/metrics_log.h"
#include "../io/model_file.h"
#include "../model/lora.h"
#include "../train/run.h"
#include "../train/trainer.h"
#include "../util/blas.h"
#include "../util/clock.h"
#include "../util/dist.h"
#include "../util/fileio.h"
#include "../util/parallel.h"
#include "args.h"
#include "jsonl.h"
#include "cli.h"
#include "progress.h"

static const char *finetune_help =
    "usage: anetrain finetune --init MODEL --data TEXT|FILE.jsonl|DIR [options]\n"
    "\n"
    "Fine-tunes MODEL on the text file TEXT with LoRA: the model's weights stay frozen and a\n"
    "low-rank adapter W + (alpha/r) B A is trained for some of its matrices (PEFT's LoRA). The\n"
    "text is tokenized with the model's tokenizer, the last --val-frac of it is held out, the\n"
    "validation loss is reported before and after training, and the adapter is saved in PEFT's\n"
    "format (loadable by PEFT on the HF export of MODEL, see `anetrain convert`).\n"
    "\n"
    "Model and data:\n"
    "  --init MODEL          the base model: a HF directory (config.json, model.safetensors, and\n"
    "                        its tokenizer.json), a llama2.c .bin, or an anetrain checkpoint\n"
    "  --tokenizer FILE      tokenizer.json or llama2.c tokenizer.bin; required unless MODEL is a\n"
    "                        HF directory holding a tokenizer.json\n"
    "  --data TEXT           the text to fine-tune on (UTF-8; any bytes are kept); or examples as\n"
    "                        JSON lines: FILE.jsonl, or DIR with train.jsonl (and valid.jsonl;\n"
    "                        see \"Examples\" below)\n"
    "  --format paragraphs|lines|file\n"
    "                        what one document is (default paragraphs: lines up to a blank line,\n"
    "                        newlines kept). Each document gets what the tokenizer adds at the\n"
    "                        start (Llama-2: BOS); tokenizers that add nothing (Qwen3) get EOS\n"
    "                        after each document instead, so documents stay apart.\n"
    "  --val-frac X          the fraction at the end held out for validation (default 0.1; JSON\n"
    "                        lines: of the examples, when there is no valid.jsonl)\n"
    "\n"
    "LoRA:\n"
    "  --lora-rank R         rank r of the adapters (default 8)\n"
    "  --lora-alpha X        alpha; the update is scaled by alpha/r (default 16)\n"
    "  --lora-targets LIST   matrices adapted in every layer, comma-separated from q, k, v, o\n"
    "                        (attention), gate, up, down (SwiGLU), or attn, mlp, all (default\n"
    "                        q,k,v,o). Norms and embeddings stay frozen.\n"
    "  --lora-dropout X      dropout probability in [0, 1) on the adapter path's input, as PEFT's\n"
    "                        lora_dropout (default 0; training steps only). Masks are a hash of\n"
    "                        the seed, step and position: runs repeat exactly (cpu and ane)\n"
    "  --int8                keep the frozen base's layer matrices as int8 (one scale per row),\n"
    "                        dequantized on the fly: about a quarter of their fp32 memory, at a\n"
    "                        small loss cost (see README)\n"
    "\n"
    "Resuming:\n"
    "  --resume              continue the run whose training state is DIR/lora_state.ckpt (--out)\n"
    "                        exactly where it stopped (adapter, AdamW moments, step, data position,\n"
    "                        loss scale); the losses then match an uninterrupted run bit for bit.\n"
    "                        --init and --data must give the same base and text (checked: the base's\n"
    "                        config and crc32, the training tokens' crc32; JSON lines: the training\n"
    "                        rows', so also --mask-prompt and the field flags). The LoRA flags, --int8,\n"
    "                        --seed, --batch, --seq, --accum and --val-frac come from the state:\n"
    "                        leave them out, or give the saved values (others are refused). Give\n"
    "                        the other flags (--steps, --lr, ...) as in the first run.\n"
    "\n";

/* Examples from JSON lines (its own literal: see below). */
static const char *finetune_help_jsonl =
    "Examples (JSON lines, mlx-lm's formats): one example a line, the format detected from the first\n"
    "line and the same on every line:\n"
    "  {\"text\": T}                     tokens of T, then EOS\n"
    "  {\"prompt\": P, \"completion\": C}  tokens of P (with BOS if the tokenizer adds it), of C, EOS\n"
    "  {\"messages\": [{\"role\": R, \"content\": X}, ...]}   R system, user or assistant, rendered\n"
    "                        with the model's ChatML chat template (Qwen3: tokenizer_config.json,\n"
    "                        as `chat`; <|im_start|> and <|im_end|> are their token ids). A model\n"
    "                        without ChatML tokens (stories, our BPE) refuses messages.\n"
    "  A malformed line (bad JSON, a missing field, a wrong type, an unknown role, an empty\n"
    "  completion) is an error naming the file and line, and nothing is written.\n"
    "  --text-field K, --prompt-field K, --completion-field K   the keys (mlx-lm's text_feature,\n"
    "                        prompt_feature, completion_feature)\n"
    "  --mask-prompt         the loss counts only the completion (chat: each assistant reply and\n"
    "                        its <|im_end|>); without it every token of an example counts\n"
    "  --tokenizer-config FILE  the tokenizer_config.json with the chat template (default: beside\n"
    "                        the tokenizer)\n"
    "  Each example is one row of --seq tokens, right-padded (padding never counts; causal\n"
    "  attention keeps real tokens from seeing it). Longer examples are truncated to --seq, and\n"
    "  counted; an example with nothing left to count is dropped, and counted. Examples are\n"
    "  sorted by length into batches of --batch (a partial last batch is left out of training),\n"
    "  and the batches are shuffled every epoch from --seed. The loss of a step is the mean over\n"
    "  its counted tokens, all --accum micro-batches together; the validation loss likewise.\n"
    "  --test                also the loss on DIR/test.jsonl (the same rows and mean), before and\n"
    "                        after fine-tuning\n"
    "  `anetrain eval --data DIR/test.jsonl [--mask-prompt] [--adapter OUT]` scores examples alike.\n"
    "  Chat with tools (mlx-lm's \"tools\" key, unless empty) is refused: not rendered yet.\n"
    "\n";

/* The rest of the manual (one literal would pass the 4095 characters ISO C guarantees). */
static const char *finetune_help_more =
    "Optimization (AdamW on the adapter only; warmup then cosine decay):\n"
    "  --steps N             optimizer steps (default 200)\n"
    "  --batch B             sequences per micro-batch (default 8)\n"
    "  --seq T               tokens per sequence (default min(256, model max_seq))\n"
    "  --accum N             micro-batches per step (default 1)\n"
    "  --lr X                peak learning rate (default 2e-4)\n"
    "  --min-lr X            learning rate at the last step (default lr/10)\n"
    "  --warmup N            warmup steps (default min(20, steps/10))\n"
    "  --wd X                weight decay on the adapter (default 0)\n"
    "  --clip X              clip the adapter gradients' global norm (default 1; 0 disables)\n"
    "  --seed S              seed for the adapter's init and the data order (default 1337)\n"
    "\n"
    "Evaluation and output:\n"
    "  --eval-every N        validation loss every N steps (default 50; 0: before and after only)\n"
    "  --eval-batches N      validation batches per evaluation (default 20; 0: the whole split)\n"
    "  --out DIR             output directory (default out/finetune): adapter_model.safetensors,\n"
    "                        adapter_config.json, lora_state.ckpt (the training state, for\n"
    "                        --resume), tokens.bin (the tokenized text; not for JSON lines),\n"
    "                        metrics.jsonl\n"
    "  --log FILE            metrics log (default DIR/metrics.jsonl): a first line with step 0\n"
    "                        and the validation loss before training, then one JSON object per\n"
    "                        step as `train` writes (step, loss, lr, grad_norm, tokens, ms, and\n"
    "                        val_loss when computed); --resume appends to it\n"
    "  --save-every N        also write the training state every N steps (default 100; 0: only at\n"
    "                        the end and on Ctrl-C)\n"
    "  --print-every N       progress line every N steps when stderr is not a terminal (default 10)\n"
    "  --check-every N       under mpirun: compare the crc32 of the adapter across the processes\n"
    "                        every N steps and at the end (default 100; 0: at the end only)\n"
    "\n"
    "Execution:\n"
    "  --backend cpu|ane     as `train` (default cpu); ane runs each layer as fp16 MIL kernels\n"
    "  --device auto|emu|darwin   the ANE device (default auto)\n"
    "  --ane-limits strict|probed the device limits the kernels are checked against before they\n"
    "                        compile, as `train` (default strict: see train --help)\n"
    "  --loss-scale dynamic|off|N  as `train` (default: off on cpu, dynamic on ane)\n"
    "  --threads N           threads (default: all cores)\n"
    "  --grad-comm fp32|bf16 under mpirun: the adapter gradients sent between the processes as\n"
    "                        fp32 (default) or bf16 (half the bytes; see train --help)\n"
    "\n"
    "How it runs: the adapters run beside the frozen weights, unmerged\n"
    "(y = W x + (alpha/r) B A dropout(x)), and the backward pass computes the adapter's gradients\n"
    "only: no weight gradient GEMMs, no gradient or optimizer state for the frozen model. On the\n"
    "ane backend A and B are dynamic kernel inputs restaged every step while the frozen base is\n"
    "staged once; with LoRA dropout each module's 0/1 mask is one more kernel input per sequence.\n"
    "Ctrl-C finishes the current step, saves the adapter and the training state, and exits; the\n"
    "same command plus --resume continues.\n"
    "\n"
    "examples:\n"
    "  anetrain finetune --init Qwen3-0.6B/ --data my_text.txt --steps 300\n"
    "  anetrain finetune --init stories15M.bin --tokenizer tokenizer.bin --data stories.txt \\\n"
    "                    --lora-targets all --out out/ft\n"
    "  anetrain finetune --init stories15M.bin --tokenizer tokenizer.bin --data stories.txt \\\n"
    "                    --out out/ft --resume          # after Ctrl-C: continues exactly\n"
    "  anetrain sample --model stories15M.bin --tokenizer tokenizer.bin --adapter out/ft\n"
    "  anetrain convert stories15M.bin merged-hf --adapter out/ft     # merged, as a HF directory\n";

/* What --format accepts (data/documents.h). */
#define FINETUNE_FORMATS (DOC_FORMAT_BIT(DOC_PARAGRAPHS) | DOC_FORMAT_BIT(DOC_LINES) | DOC_FORMAT_BIT(DOC_FILE))

typedef struct {
    TrainOptions opt;
    const char *tokenizer, *format, *targets, *out, *log, *backend, *device, *loss_scale, *ane_limits;
    const char *tokenizer_config;
    const char *grad_comm; /* --grad-comm fp32|bf16 */
    int check_every;
    ExampleFields fields; /* JSON lines: the keys of text, prompt and completion */
    int eval_every, print_every, save_every, threads, resume, mask_prompt, format_given, test;
    int seq_given, warmup_given, min_lr_given;
    /* flags a --resume takes from the training state when they are left out */
    int rank_given, alpha_given, dropout_given, int8_given, seed_given, batch_given, accum_given, val_frac_given;
} FinetuneArgs;

static int parse_args(int argc, char **argv, FinetuneArgs *a, Err *err) {
    memset(a, 0, sizeof *a);
    TrainOptions *o = &a->opt;
    train_options_default(o); /* then what fine-tuning does otherwise: */
    o->val_frac = 0.1;
    o->steps = 200;
    o->lr = 2e-4f;
    o->adam = (AdamWConfig){0.9f, 0.999f, 1e-8f, 0.0f}; /* torch/HF defaults; no decay */
    o->lora = (LoraConfig){8, 16.0f, 0.0f, 0, 0};
    a->format = "paragraphs";
    a->out = "out/finetune";
    a->backend = o->backend;
    a->device = "auto";
    a->ane_limits = "strict";
    a->eval_every = 50;
    a->print_every = 10;
    a->save_every = 100;
    a->check_every = 100;
    a->threads = parallel_cpu_count();
    const double BIG = 1e9;
    const ArgSpec specs[] = {
        {"--init", ARG_STR, &o->init_path, 0, 0, NULL},
        {"--data", ARG_STR, &o->data_path, 0, 0, NULL},
        {"--tokenizer", ARG_STR, &a->tokenizer, 0, 0, NULL},
        {"--format", ARG_STR, &a->format, 0, 0, &a->format_given},
        {"--mask-prompt", ARG_BOOL, &a->mask_prompt, 0, 0, NULL},
        {"--test", ARG_BOOL, &a->test, 0, 0, NULL},
        {"--text-field", ARG_STR, &a->fields.text, 0, 0, NULL},
        {"--prompt-field", ARG_STR, &a->fields.prompt, 0, 0, NULL},
        {"--completion-field", ARG_STR, &a->fields.completion, 0, 0, NULL},
        {"--tokenizer-config", ARG_STR, &a->tokenizer_config, 0, 0, NULL},
        {"--val-frac", ARG_DOUBLE, &o->val_frac, 0.001, 0.9, &a->val_frac_given},
        {"--lora-rank", ARG_INT, &o->lora.rank, 1, 4096, &a->rank_given},
        {"--lora-alpha", ARG_FLOAT, &o->lora.alpha, 1e-6, 1e6, &a->alpha_given},
        {"--lora-targets", ARG_STR, &a->targets, 0, 0, NULL},
        {"--lora-dropout", ARG_FLOAT, &o->lora.dropout, 0, 0.999, &a->dropout_given},
        {"--int8", ARG_BOOL, &o->int8, 0, 0, &a->int8_given},
        {"--resume", ARG_BOOL, &a->resume, 0, 0, NULL},
        {"--steps", ARG_LONG, &o->steps, 0, BIG, NULL},
        {"--batch", ARG_INT, &o->batch, 1, 65536, &a->batch_given},
        {"--seq", ARG_INT, &o->seq, 1, 1 << 20, &a->seq_given},
        {"--accum", ARG_INT, &o->accum, 1, 65536, &a->accum_given},
        {"--lr", ARG_FLOAT, &o->lr, 1e-12, 10, NULL},
        {"--min-lr", ARG_FLOAT, &o->min_lr, 0, 10, &a->min_lr_given},
        {"--warmup", ARG_LONG, &o->warmup, 0, BIG, &a->warmup_given},
        {"--wd", ARG_FLOAT, &o->adam.weight_decay, 0, 10, NULL},
        {"--clip", ARG_FLOAT, &o->clip, 0, BIG, NULL},
        {"--seed", ARG_U64, &o->seed, 0, 0, &a->seed_given},
        {"--eval-every", ARG_INT, &a->eval_every, 0, BIG, NULL},
        {"--eval-batches", ARG_INT, &o->eval_batches, 0, BIG, NULL},
        {"--out", ARG_STR, &a->out, 0, 0, NULL},
        {"--log", ARG_STR, &a->log, 0, 0, NULL},
        {"--print-every", ARG_INT, &a->print_every, 1, BIG, NULL},
        {"--save-every", ARG_INT, &a->save_every, 0, BIG, NULL},
        {"--check-every", ARG_INT, &a->check_every, 0, BIG, NULL},
        {"--grad-comm", ARG_STR, &a->grad_comm, 0, 0, NULL},
        {"--backend", ARG_STR, &a->backend, 0, 0, NULL},
        {"--device", ARG_STR, &a->device, 0, 0, NULL},
        {"--ane-limits", ARG_STR, &a->ane_limits, 0, 0, NULL},
        {"--loss-scale", ARG_STR, &a->loss_scale, 0, 0, NULL},
        {"--threads", ARG_INT, &a->threads, 1, 256, NULL},
    };
    if (args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), NULL, 0, NULL, err) != 0) return -1;
    if (grad_comm_parse(a->grad_comm, &o->grad_comm_bf16, err) != 0) return -1;
    if (!o->init_path) return err_set(err, "--init: the base model is required (a HF directory, llama2.c .bin or checkpoint)");
    if (!o->data_path) return err_set(err, "--data: a text file, a .jsonl file or a directory of them is required");
    DocFormat format;
    if (doc_format_parse("--format", a->format, FINETUNE_FORMATS, &format, err) != 0) return -1;
    if (jsonl_is_data(o->data_path) && a->format_given)
        return err_set(err, "--format: %s holds JSON lines (one example a line), whose format is detected; --format "
                            "is for plain text", o->data_path);
    if (!jsonl_is_data(o->data_path) && (a->mask_prompt || a->fields.text || a->fields.prompt || a->fields.completion))
        return err_set(err, "%s: takes JSON-lines data (--data FILE.jsonl or a directory with train.jsonl), found "
                            "plain text %s",
                       a->mask_prompt ? "--mask-prompt" : "--text-field, --prompt-field and --completion-field",
                       o->data_path);
    if (a->test && !path_is_dir(o->data_path))
        return err_set(err, "--test: takes --data DIR holding test.jsonl, found %s", o->data_path);
    o->mask_prompt = a->mask_prompt;
    if (lora_parse_targets(a->targets ? a->targets : "q,k,v,o", &o->lora.targets, err) != 0) return -1;
    BackendKind kind;
    if (backend_kind_parse(a->backend, &kind, err) != 0) return err_wrap(err, "--backend");
    o->backend = a->backend;
    if (strcmp(a->device, "auto") && strcmp(a->device, "emu") && strcmp(a->device, "darwin"))
        return err_set(err, "--device: expected auto, emu or darwin, found '%s'", a->device);
    o->ane.device = a->device;
    if (ane_limits_parse("--ane-limits", a->ane_limits, &o->ane.limits, err) != 0) return -1;
    const char *ls = a->loss_scale ? a->loss_scale : kind == BACKEND_CPU ? "off" : "dynamic";
    if (!strcmp(ls, "off")) o->loss_scaling = LOSS_SCALE_OFF;
    else if (!strcmp(ls, "dynamic")) o->loss_scaling = LOSS_SCALE_DYNAMIC;
    else {
        char *end;
        double v = strtod(ls, &end);
        if (*ls == '\0' || *end != '\0' || !(v >= 1 && v <= 16777216.0))
            return err_set(err, "--loss-scale: expected dynamic, off or a number in [1, 16777216], found '%s'", ls);
        o->loss_scaling = LOSS_SCALE_FIXED;
        o->loss_scale_init = (float)v;
    }
    if (!a->warmup_given) o->warmup = o->steps / 10 < 20 ? o->steps / 10 : 20;
    if (!a->min_lr_given) o->min_lr = o->lr / 10;
    return 0;
}

/* ---------------------------------------------------------------- text to tokens */

/* Tokenizes the documents (in chunks on the thread pool) into one id stream. sep >= 0 is
** appended after each document. */
static int encode_documents(const Tokenizer *tok, const DocList *d, int sep, TokenIds *all, Err *err) {
    enum { CHUNK = 4096 };
    TokenIds outs[CHUNK];
    for (size_t first = 0; first < d->n; first += CHUNK) {
        int n = (int)(d->n - first < CHUNK ? d->n - first : CHUNK);
        memset(outs, 0, sizeof outs[0] * (size_t)n);
        int rc = tokenizer_encode_many(tok, d->start + first, d->len + first, n, 1, outs, err);
        for (int i = 0; i < n; i++) {
            size_t need = all->n + outs[i].n + 1;
            if (rc == 0 && need > all->cap) {
                size_t cap = all->cap ? all->cap : 1 << 16;
                while (cap < need) cap *= 2;
                int32_t *ids = realloc(all->ids, cap * sizeof *ids);
                if (!ids) rc = err_set(err, "out of memory holding %zu token ids", need);
                else {
                    all->ids = ids;
                    all->cap = cap;
                }
            }
            if (rc == 0) {
                memcpy(all->ids + all->n, outs[i].ids, outs[i].n * sizeof *all->ids);
                all->n += outs[i].n;
                if (sep >= 0) all->ids[all->n++] = sep;
            }
            token_ids_free(&outs[i]);
        }
        if (rc != 0) return -1;
    }
    return 0;
}

/* Loads the tokenizer for the model (checking its vocabulary fits), tokenizes the text file
** and writes the ids to tokens_path. Prints one line about it. */
static int prepare_tokens(const FinetuneArgs *a, const ModelConfig *cfg, const char *tokens_path, Err *err) {
    DocFormat format; /* parse_args checked the name */
    if (doc_format_parse("--format", a->format, FINETUNE_FORMATS, &format, err) != 0) return -1;
    char tok_path[1100];
    Tokenizer *tok = jsonl_tokenizer_load(a->opt.init_path, a->tokenizer, cfg, tok_path, sizeof tok_path, err);
    if (!tok) return -1;
    size_t size;
    char *text = file_read_all(a->opt.data_path, &size, err);
    if (!text) {
        tokenizer_free(tok);
        return err_wrap(err, "--data");
    }
    DocList docs = {0};
    TokenIds all = {0}, probe = {0};
    /* A tokenizer whose post-processor adds nothing (Qwen3) would run documents together: end
    ** each with EOS instead. */
    int sep = -1;
    int rc = tokenizer_encode(tok, "", 0, 1, &probe, err);
    if (rc == 0 && probe.n == 0) sep = tokenizer_eos_id(tok);
    if (rc == 0) rc = doc_list_split(&docs, format, text, size, err);
    if (rc == 0 && docs.n == 0)
        rc = err_set(err, "--data %s: expected some text, found %s", a->opt.data_path,
                     size ? "only blank lines" : "an empty file");
    if (rc == 0) rc = encode_documents(tok, &docs, sep, &all, err);
    if (rc == 0) {
        int id_bytes = cfg->vocab_size <= 65536 ? 2 : 4;
        rc = tokfile_save(tokens_path, all.ids, all.n, 1, id_bytes, (uint32_t)cfg->vocab_size, err);
    }
    if (rc == 0)
        printf("data    %s: %zu bytes, %zu %s, %zu tokens (%.2f bytes/token) -> %s\n", a->opt.data_path, size, docs.n,
               doc_format_name(format), all.n,
               all.n ? (double)size / (double)all.n : 0.0, tokens_path);
    doc_list_free(&docs);
    token_ids_free(&all);
    token_ids_free(&probe);
    free(text);
    tokenizer_free(tok);
    return rc;
}

/* ---------------------------------------------------------------- JSON lines to examples */

/* The examples of --data: DIR/train.jsonl (and DIR/valid.jsonl when present, DIR/test.jsonl
** with --test), or FILE.jsonl. */
typedef struct {
    char paths[3][1100]; /* train.jsonl, valid.jsonl, test.jsonl */
    int has[3];          /* which are read */
    JsonlFile f[3];
} JsonlData;

static void jsonl_data_free(JsonlData *d) {
    for (int k = 0; k < 3; k++) jsonl_file_free(&d->f[k]);
}

/* Reads and renders the examples with the model's tokenizer (and chat template); prints one line
** per file. Nothing is written: a malformed line fails here, naming its file and line. */
static int prepare_examples(const FinetuneArgs *a, const ModelConfig *cfg, JsonlData *d, Err *err) {
    memset(d, 0, sizeof *d);
    const char *data = a->opt.data_path;
    static const char *const names[3] = {"train", "valid", "test"};
    if (path_is_dir(data)) {
        for (int k = 0; k < 3; k++) snprintf(d->paths[k], sizeof d->paths[k], "%s/%s.jsonl", data, names[k]);
        if (!path_exists(d->paths[0]))
            return err_set(err, "--data %s: expected a train.jsonl in the directory, found none", data);
        d->has[1] = path_exists(d->paths[1]);
        if (a->test && !path_exists(d->paths[2]))
            return err_set(err, "--test: expected %s, found none", d->paths[2]);
        d->has[2] = a->test;
    } else {
        snprintf(d->paths[0], sizeof d->paths[0], "%s", data);
    }
    d->has[0] = 1;
    char tok_path[1100];
    Tokenizer *tok = jsonl_tokenizer_load(a->opt.init_path, a->tokenizer, cfg, tok_path, sizeof tok_path, err);
    if (!tok) return -1;
    int rc = 0;
    for (int k = 0; k < 3 && rc == 0; k++)
        if (d->has[k])
            if ((rc = jsonl_file_load(&d->f[k], d->paths[k], &a->fields, tok, tok_path, a->tokenizer_config, err)) == 0)
                jsonl_file_print(&d->f[k], d->paths[k], a->mask_prompt);
    tokenizer_free(tok);
    if (rc != 0) jsonl_data_free(d);
    return rc;
}

/* ---------------------------------------------------------------- the run */

/* --resume: the LoRA config, int8 and the data stream's shape come from the training state rs
** at path; a flag given with another value than the saved one is refused. */
static int take_flags_from_state(FinetuneArgs *a, const LoraRunState *rs, const char *path, Err *err) {
    TrainOptions *o = &a->opt;
#define SAVED_INT(flag, given, field, saved)                                                                         \
    if ((given) && (long long)(field) != (long long)(saved))                                                       \
        return err_set(err, flag ": expected %lld (the run being resumed, %s), found %lld; leave the flag out",     \
                       (long long)(saved), path, (long long)(field));                                               \
    field = saved;
#define SAVED_REAL(flag, given, field, saved)                                                                        \
    if ((given) && (double)(field) != (double)(saved))                                                             \
        return err_set(err, flag ": expected %g (the run being resumed, %s), found %g; leave the flag out",         \
                       (double)(saved), path, (double)(field));                                                     \
    field = saved;
    SAVED_INT("--lora-rank", a->rank_given, o->lora.rank, rs->lora.rank)
    SAVED_REAL("--lora-alpha", a->alpha_given, o->lora.alpha, rs->lora.alpha)
    SAVED_REAL("--lora-dropout", a->dropout_given, o->lora.dropout, rs->lora.dropout)
    SAVED_INT("--int8", a->int8_given, o->int8, rs->int8)
    SAVED_INT("--batch", a->batch_given, o->batch, rs->batch)
    SAVED_INT("--seq", a->seq_given, o->seq, rs->seq)
    SAVED_INT("--accum", a->accum_given, o->accum, rs->accum)
    SAVED_REAL("--val-frac", a->val_frac_given, o->val_frac, rs->val_frac)
    if (a->seed_given && o->seed != rs->seed)
        return err_set(err, "--seed: expected %llu (the run being resumed, %s), found %llu; leave the flag out",
                       (unsigned long long)rs->seed, path, (unsigned long long)o->seed);
    o->seed = rs->seed;
#undef SAVED_INT
#undef SAVED_REAL
    if (a->targets && o->lora.targets != rs->lora.targets) {
        char want[64], found[64];
        lora_targets_format(rs->lora.targets, want, sizeof want);
        lora_targets_format(o->lora.targets, found, sizeof found);
        return err_set(err, "--lora-targets: expected %s (the run being resumed, %s), found %s; leave the flag out",
                       want, path, found);
    }
    o->lora.targets = rs->lora.targets;
    o->lora.rslora = rs->lora.rslora;
    o->order = rs->order;
    return 0;
}

static int run(FinetuneArgs *a, Err *err) {
    TrainOptions *o = &a->opt;
    char tokens_path[1100], log_path[1100], state_path[1100], adapter_path[1100], config_path[1100];
    snprintf(tokens_path, sizeof tokens_path, "%s/tokens.bin", a->out);
    snprintf(state_path, sizeof state_path, "%s/lora_state.ckpt", a->out);
    snprintf(adapter_path, sizeof adapter_path, "%s/adapter_model.safetensors", a->out);
    snprintf(config_path, sizeof config_path, "%s/adapter_config.json", a->out);
    if (a->log) snprintf(log_path, sizeof log_path, "%s", a->log);
    else snprintf(log_path, sizeof log_path, "%s/metrics.jsonl", a->out);
    if (a->resume) {
        if (!path_exists(state_path))
            return err_set(err, "--resume: no training state %s to resume (run without --resume first)", state_path);
        LoraRunState saved;
        if (lora_state_load(state_path, &saved, NULL, NULL, NULL, NULL, err) != 0) return err_wrap(err, "--resume");
        if (take_flags_from_state(a, &saved, state_path, err) != 0) return -1;
        o->lora_resume_path = state_path;
    }

    /* The base model's config (for the tokenizer and the default --seq); the trainer loads the weights. */
    ModelConfig cfg;
    if (model_config_load_any(o->init_path, &cfg, err) != 0) return err_wrap(err, "--init");
    if (!a->seq_given && !a->resume && cfg.max_seq_len < o->seq) o->seq = cfg.max_seq_len;
    /* Every output path before any work (see train.c), then the directory. */
    if (output_dir_check(a->out, "--out", "adapter_model.safetensors", err) != 0 ||
        output_file_check(tokens_path, "--out", err) != 0 || output_file_check(state_path, "--out", err) != 0 ||
        output_file_check(adapter_path, "--out", err) != 0 || output_file_check(config_path, "--out", err) != 0 ||
        output_file_check(log_path, a->log ? "--log" : "--out", err) != 0)
        return -1;
    JsonlData jd;
    int jsonl = jsonl_is_data(o->data_path);
    if (jsonl) { /* read and rendered before anything is written (by every rank alike) */
        if (prepare_examples(a, &cfg, &jd, err) != 0) return -1;
        o->train_examples = &jd.f[0].r;
        o->valid_examples = jd.has[1] ? &jd.f[1].r : NULL;
        o->data_path = jd.paths[0];
        o->valid_path = jd.paths[1];
        if (dir_ensure_all(a->out, err) != 0) {
            jsonl_data_free(&jd);
            return -1;
        }
    } else {
        if (dir_ensure_all(a->out, err) != 0) return -1;
        /* data parallel: rank 0 writes the token file, the others read it once it is complete */
        if (dist_rank() == 0 && prepare_tokens(a, &cfg, tokens_path, err) != 0) return -1;
        if (dist_barrier(err) != 0) return -1;
        o->data_path = tokens_path;
    }

    Trainer tr;
    if (trainer_init(&tr, o, err) != 0) {
        if (jsonl) jsonl_data_free(&jd);
        return -1;
    }
    /* tests/test_mpi.sh: one rank's adapter nudged, which the weights check must catch */
    const char *perturb = getenv("ANETRAIN_TEST_PERTURB_RANK");
    if (perturb && tr.world > 1 && atoi(perturb) == tr.rank) tr.adapter[0] += 1e-3f;
    FILE *log = dist_rank() == 0 ? fopen(log_path, a->resume ? "a" : "w") : NULL; /* rank 0 alone writes */
    if (dist_rank() == 0 && !log) {
        trainer_free(&tr);
        if (jsonl) jsonl_data_free(&jd);
        return err_set(err, "--log %s: cannot open for writing: %s", log_path, strerror(errno));
    }
    char desc[512], targets[64];
    config_describe(&cfg, desc, sizeof desc);
    lora_targets_format(o->lora.targets, targets, sizeof targets);
    long long total = config_param_count(&cfg);
    double full_state = 2.0 * sizeof(float) * (double)tr.layout.n_floats;
    printf("model   %s: %s\n", o->init_path, desc);
    if (jsonl) {
        const ExampleBatches *t = &tr.train_rows, *v = &tr.valid_rows;
        printf("split   %zu training examples (%zu batches of %d, sorted by length), %zu validation examples (%s)\n",
               t->n_kept, t->n_batches, o->batch, tr.has_valid_rows ? v->n_kept : 0,
               o->valid_examples ? "valid.jsonl" : tr.has_valid_rows ? "the last --val-frac of the training file"
                                                                     : "none");
        printf("rows    one example per row of --seq %d, right-padded; %zu truncated, %zu dropped (no %s "
               "within --seq); %lld training targets counted\n",
               o->seq, t->n_truncated + v->n_truncated, t->n_dropped + v->n_dropped,
               o->mask_prompt ? "completion token" : "target", (long long)t->n_counted);
    } else {
        printf("split   %zu training tokens, %zu validation tokens (last %.0f%%)\n", tr.loader.n_train, tr.loader.n_val,
               o->val_frac * 100);
    }
    printf("lora    r=%d alpha=%g (scale %g) on %s of %d layers: %zu trainable parameters (%.3f%% of %lld)\n",
           o->lora.rank, (double)o->lora.alpha, (double)tr.lora.scale, targets, cfg.n_layers, tr.lora.n_floats,
           100.0 * (double)tr.lora.n_floats / (double)total, total);
    if (o->lora.dropout > 0) printf("lora    dropout %g on the adapter path's input\n", (double)o->lora.dropout);
    printf("memory  AdamW state %.2f MiB (full fine-tuning: %.1f MiB)", (double)trainer_optimizer_bytes(&tr) / 1048576.0,
           full_state / 1048576.0);
    printf("; no base gradient\n");
    if (tr.has_int8)
        printf("int8    layer matrices %.1f MiB as int8 + scales (fp32: %.1f MiB; %.1f MiB of fp32 pages released)\n",
               (double)quant_int8_bytes(&tr.int8) / 1048576.0, (double)quant_int8_fp32_bytes(&tr.layout) / 1048576.0,
               (double)tr.int8_released_bytes / 1048576.0);
    printf("batch   %d x %d tokens x %d accum; %ld steps, lr %.2e -> %.2e, warmup %ld; backend %s, %d threads\n",
           o->batch, o->seq, o->accum, o->steps, (double)o->lr, (double)o->min_lr, o->warmup, tr.backend->name,
           a->threads);
    if (tr.world > 1)
        printf("ranks   %d processes (MPI): global batch %d ranks x %d x %d tokens x %d accum; %.2f MB of %s "
               "adapter gradients summed per step\n", tr.world, tr.world, o->batch, o->seq, o->accum,
               (double)trainer_comm_bytes(&tr) / 1e6, o->grad_comm_bf16 ? "bf16" : "fp32");
    if (a->resume) printf("resume  %s at step %lld\n", state_path, (long long)tr.state.step);
    fflush(stdout);

    double val_before, test_before = 0;
    if (trainer_eval(&tr, &val_before, err) != 0) goto fail;
    if (jsonl && jd.has[2]) {
        ExampleBatches rows;
        if (trainer_eval_examples(&tr, &jd.f[2].r, jd.paths[2], &test_before, &rows, err) != 0) goto fail;
        printf("test    %s: %zu examples (%zu truncated, %zu dropped), %lld targets counted: loss %.4f "
               "(perplexity %.2f) %s\n",
               jd.paths[2], rows.n_kept, rows.n_truncated, rows.n_dropped, rows.n_counted, test_before,
               exp(test_before), a->resume ? "at resume" : "before fine-tuning");
    }
    if (a->resume) {
        /* the log already holds this run's lines up to the saved step */
        printf("step %lld: val_loss %.4f (perplexity %.2f) at resume\n", (long long)tr.state.step, val_before,
               exp(val_before));
    } else {
        printf("step 0: val_loss %.4f (perplexity %.2f) before fine-tuning\n", val_before, exp(val_before));
        if (log) metrics_log_write_val(log, 0, val_before);
    }
    if (log) fflush(log);
    fflush(stdout);

    volatile sig_atomic_t *stop = catch_stop_signals();
    int tty = term_is_tty();
    StepProgress progress = {o->steps, (double)o->batch * o->seq * o->accum * tr.world, a->print_every, tty, 0, 0};
    RunOptions ro = {.eval_every = a->eval_every, .save_every = a->save_every, .eval_on_stop = 1,
                     .check_every = a->check_every, .save_path = state_path, .log = log, .log_path = log_path,
                     .stop = stop,
                     .on_step = progress_on_step, .ctx = &progress};
    RunReport rep;
    RunStatus status = run_training(&tr, &ro, &rep, err);
    if (tty && rep.steps_done > 0) fputc('\n', stderr);
    if (status != RUN_DONE && status != RUN_INTERRUPTED) goto fail;
    int stopped = status == RUN_INTERRUPTED; /* on every rank alike (the stop is agreed) */
    if (tr.rank == 0 && trainer_save_adapter(&tr, a->out, o->init_path, err) != 0) goto fail;
    if (jsonl && jd.has[2]) {
        ExampleBatches rows;
        double test_after;
        if (trainer_eval_examples(&tr, &jd.f[2].r, jd.paths[2], &test_after, &rows, err) != 0) goto fail;
        printf("test    %s: loss %.4f -> %.4f (perplexity %.2f -> %.2f)\n", jd.paths[2], test_before, test_after,
               exp(test_before), exp(test_after));
    }
    if (log) fclose(log);
    char dur[32];
    format_duration(now_seconds() - rep.t_start, dur, sizeof dur);
    long done = rep.steps_done;
    double val_after = done == 0 ? val_before : rep.last_val;
    printf("%s %ld steps in %s: val_loss %.4f -> %.4f (perplexity %.2f -> %.2f)\n",
           stopped ? "stopped after" : "done   ", done, dur, val_before, val_after, exp(val_before),
           exp(val_after));
    progress_print_comm(&tr, &rep);
    printf("saved   %s/adapter_model.safetensors, %s/adapter_config.json (PEFT LoRA); metrics %s\n", a->out, a->out,
           log_path);
    if (stopped)
        printf("        %s (training state at step %lld); continue with the same command plus --resume\n",
               state_path, (long long)tr.state.step);
    else
        printf("        %s (training state at step %lld; --resume with more --steps continues)\n", state_path,
               (long long)tr.state.step);
    printf("use     anetrain sample --model %s --adapter %s ...\n", o->init_path, a->out);
    printf("        anetrain convert %s MERGED --adapter %s   (the adapter merged into the weights)\n", o->init_path,
           a->out);
    trainer_free(&tr);
    if (jsonl) jsonl_data_free(&jd);
    return stopped ? 130 : 0;
fail:
    if (log) fclose(log);
    trainer_free(&tr);
    if (jsonl) jsonl_data_free(&jd);
    return -1;
}

int cli_finetune(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(finetune_help, stdout);
        fputs(finetune_help_jsonl, stdout);
        fputs(finetune_help_more, stdout);
        return 0;
    }
    Err err = {{0}};
    FinetuneArgs a;
    if (parse_args(argc, argv, &a, &err) != 0) return cli_fail("finetune", &err);
    if (cli_join_ranks(&err) != 0) return cli_fail("finetune", &err);
    parallel_init(a.threads);
    blas_set_threads(a.threads);
    int rc = run(&a, &err);
    if (rc < 0) return cli_fail("finetune", &err);
    dist_finalize(); /* 0 or 130: every rank ends the same way (the stop is agreed) */
    return rc;
}
