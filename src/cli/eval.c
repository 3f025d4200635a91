/*
** eval.c — `anetrain eval`: loss and perplexity of a model on a token file.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend/backend.h"
#include "../data/tokfile.h"
#include "../io/model_file.h"
#include "../io/peft.h"
#include "../train/evaluate.h"
#include "../util/blas.h"
#include "../util/memory.h"
#include "../util/parallel.h"
#include "args.h"
#include "jsonl.h"
#include "progress.h"
#include "cli.h"

static const char *eval_help =
    "usage: anetrain eval --model PATH --data FILE|FILE.jsonl [options]\n"
    "\n"
    "Mean cross-entropy loss (nats per token) and perplexity of a model over a token file,\n"
    "read as consecutive non-overlapping windows of --seq tokens (each predicting its next\n"
    "token), from the start of the file; or over JSON-lines examples (FILE.jsonl, e.g. a\n"
    "fine-tuning test.jsonl), rendered and batched as `finetune` does (see finetune --help):\n"
    "one example per row of --seq, the mean over the counted tokens.\n"
    "\n"
    "  --model PATH      an anetrain checkpoint, a llama2.c .bin, or a HF directory\n"
    "  --adapter DIR     a LoRA adapter (PEFT directory, e.g. from `anetrain finetune`), run\n"
    "                    unmerged beside the weights\n"
    "  --int8            the model's layer matrices as int8 (one fp16-valued scale per row;\n"
    "                    cpu: dequantized on the fly, ane: int8 values with the scales applied in\n"
    "                    the kernels): the loss of the int8 model, and the memory it saves\n"
    "  --data FILE       token file (raw uint16 or ANETOK); ids must be < the model's vocab. A raw\n"
    "                    file that looks like text is refused: tokenize it first (`anetrain tokenize`)\n"
    "  --data-is-tokens  read --data as token ids even if it looks like text\n"
    "  --seq T           tokens per window (default min(256, model max_seq))\n"
    "  --batch B         windows evaluated together (default 8)\n"
    "  --max-windows N   evaluate at most N windows (default 0 = all)\n"
    "  --threads N       threads (default: all cores)\n"
    "  --backend cpu|ane the backend running the forward pass (default cpu; see train --help)\n"
    "  --device auto|emu|darwin   the ANE device for --backend ane (default auto)\n"
    "  --ane-limits strict|probed the device limits its kernels are checked against before they\n"
    "                    compile (default strict; see train --help)\n"
    "  --json            print one JSON object instead of text\n"
    "JSON lines (FILE.jsonl):\n"
    "  --tokenizer FILE  the model's tokenizer (default MODEL/tokenizer.json for a HF directory)\n"
    "  --mask-prompt     count only the completions (chat: the assistant replies), as finetune\n"
    "  --text-field K, --prompt-field K, --completion-field K, --tokenizer-config FILE\n"
    "                    as finetune\n";

static void show_progress(size_t done, size_t total) { fprintf(stderr, "\reval %zu/%zu windows", done, total); }
static void show_progress_examples(size_t done, size_t total) {
    fprintf(stderr, "\reval %zu/%zu examples", done, total);
}

/* eval --data FILE.jsonl: the examples rendered and laid out as finetune's rows; the loss is the
** mean over their counted tokens. params is the caller's. */
static int eval_jsonl(const char *data, const char *model, const char *tokenizer, const char *tokenizer_config,
                      const ExampleFields *fields, int mask_prompt, const ParamLayout *layout, float *params, int seq,
                      int batch, int int8, const char *backend, const char *device, AneLimits limits,
                      const char *adapter_dir, int json, Err *err) {
    const ModelConfig *cfg = &layout->cfg;
    char tok_path[1100];
    Tokenizer *tok = jsonl_tokenizer_load(model, tokenizer, cfg, tok_path, sizeof tok_path, err);
    if (!tok) return -1;
    JsonlFile f;
    int rc = jsonl_file_load(&f, data, fields, tok, tok_path, tokenizer_config, err);
    tokenizer_free(tok);
    if (rc != 0) return -1;
    if (!json) jsonl_file_print(&f, data, mask_prompt);
    for (size_t i = 0; i < f.r.n; i++)
        if (f.r.ids[i] >= cfg->vocab_size) {
            jsonl_file_free(&f);
            return err_set(err, "%s: token id %d is outside the model's vocabulary of %d", data, f.r.ids[i],
                           cfg->vocab_size);
        }
    ExampleBatches rows;
    if (example_batches_init(&rows, &f.r, 0, f.r.n_examples, batch, seq, mask_prompt, f.r.n ? f.r.ids[f.r.n - 1] : 0,
                             data, err) != 0) {
        jsonl_file_free(&f);
        return -1;
    }
    if ((size_t)batch > rows.n_kept) batch = (int)rows.n_kept;
    LoraLayout lora;
    float *adapter = NULL;
    Int8Weights q;
    memset(&q, 0, sizeof q);
    rc = adapter_dir && lora_load(adapter_dir, cfg, &lora, &adapter, err) != 0 ? err_wrap(err, "--adapter") : 0;
    if (rc == 0 && int8) rc = quant_int8_create(&q, layout, params, err);
    AneBackendOptions ane;
    backend_ane_default_options(&ane);
    ane.device = device;
    ane.limits = limits;
    FrozenBase frozen = {adapter ? &lora : NULL, int8 ? &q : NULL};
    Backend *be = rc == 0 ? backend_create_frozen(backend, layout, adapter || int8 ? &frozen : NULL, batch, seq, &ane,
                                                  err)
                          : NULL;
    if (rc == 0 && !be) rc = -1;
    int32_t *inputs = malloc((size_t)batch * seq * sizeof(int32_t));
    int32_t *targets = malloc((size_t)batch * seq * sizeof(int32_t));
    if (rc == 0 && (!inputs || !targets)) rc = err_set(err, "out of memory for a %d x %d batch", batch, seq);
    double loss = 0, t0 = now_seconds();
    long long counted = 0;
    if (rc == 0)
        rc = eval_examples_loss(be, params, adapter, &rows, 0, inputs, targets, &loss, &counted,
                                term_is_tty() ? show_progress_examples : NULL, err);
    if (term_is_tty()) fputc('\n', stderr);
    if (rc == 0) {
        if (json)
            printf("{\"loss\": %.9g, \"perplexity\": %.9g, \"tokens\": %lld, \"examples\": %zu, \"truncated\": %zu, "
                   "\"dropped\": %zu, \"seq\": %d, \"masked\": %s, \"int8\": %s}\n",
                   loss, exp(loss), counted, rows.n_kept, rows.n_truncated, rows.n_dropped, seq,
                   mask_prompt ? "true" : "false", int8 ? "true" : "false");
        else
            printf("loss %.4f  perplexity %.3f  over %lld counted tokens (%zu examples in rows of %d, %zu truncated, "
                   "%zu dropped) in %.1f s\n",
                   loss, exp(loss), counted, rows.n_kept, seq, rows.n_truncated, rows.n_dropped, now_seconds() - t0);
    }
    if (be) be->destroy(be);
    free(inputs);
    free(targets);
    free(adapter);
    if (int8) quant_int8_free(&q);
    example_batches_free(&rows);
    jsonl_file_free(&f);
    return rc;
}

int cli_eval(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(eval_help, stdout);
        return 0;
    }
    Err err = {{0}};
    const char *model = NULL, *data = NULL;
    int seq = 0, batch = 8, threads = parallel_cpu_count(), json = 0;
    const char *backend = "cpu", *device = "auto", *adapter_dir = NULL, *limits = "strict";
    int int8 = 0;
    long max_windows = 0;
    int data_is_tokens = 0, mask_prompt = 0;
    const char *tokenizer = NULL, *tokenizer_config = NULL;
    ExampleFields fields = {NULL, NULL, NULL};
    const ArgSpec specs[] = {
        {"--model", ARG_STR, &model, 0, 0, NULL},       {"--data", ARG_STR, &data, 0, 0, NULL},
        {"--data-is-tokens", ARG_BOOL, &data_is_tokens, 0, 0, NULL},
        {"--seq", ARG_INT, &seq, 1, 1 << 20, NULL},     {"--batch", ARG_INT, &batch, 1, 65536, NULL},
        {"--max-windows", ARG_LONG, &max_windows, 0, 1e12, NULL},
        {"--threads", ARG_INT, &threads, 1, 256, NULL}, {"--json", ARG_BOOL, &json, 0, 0, NULL},
        {"--backend", ARG_STR, &backend, 0, 0, NULL},   {"--device", ARG_STR, &device, 0, 0, NULL},
        {"--adapter", ARG_STR, &adapter_dir, 0, 0, NULL}, {"--int8", ARG_BOOL, &int8, 0, 0, NULL},
        {"--ane-limits", ARG_STR, &limits, 0, 0, NULL},
        {"--tokenizer", ARG_STR, &tokenizer, 0, 0, NULL}, {"--mask-prompt", ARG_BOOL, &mask_prompt, 0, 0, NULL},
        {"--text-field", ARG_STR, &fields.text, 0, 0, NULL}, {"--prompt-field", ARG_STR, &fields.prompt, 0, 0, NULL},
        {"--completion-field", ARG_STR, &fields.completion, 0, 0, NULL},
        {"--tokenizer-config", ARG_STR, &tokenizer_config, 0, 0, NULL},
    };
    if (args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), NULL, 0, NULL, &err) != 0)
        return cli_fail("eval", &err);
    if (!model) return err_set(&err, "--model: a model path is required"), cli_fail("eval", &err);
    AneLimits ane_limits;
    if (ane_limits_parse("--ane-limits", limits, &ane_limits, &err) != 0) return cli_fail("eval", &err);
    if (!data) return err_set(&err, "--data: a token file is required"), cli_fail("eval", &err);
    int jsonl = jsonl_is_data(data);
    if (jsonl && path_is_dir(data))
        return err_set(&err, "--data %s: expected a .jsonl file (e.g. DIR/test.jsonl), found a directory", data),
               cli_fail("eval", &err);
    if (!jsonl && (mask_prompt || tokenizer || tokenizer_config || fields.text || fields.prompt || fields.completion))
        return err_set(&err, "--mask-prompt, --tokenizer, --tokenizer-config and the --*-field flags take JSON-lines "
                             "data (--data FILE.jsonl), found %s", data),
               cli_fail("eval", &err);
    if (!jsonl && !data_is_tokens && tokfile_refuse_text(data, "--data", &err) != 0) return cli_fail("eval", &err);
    parallel_init(threads);
    blas_set_threads(threads);

    ParamLayout layout;
    float *params = NULL;
    if (model_load_any(model, &layout, &params, &err) != 0) return cli_fail("eval", &err);
    const ModelConfig *cfg = &layout.cfg;
    if (seq == 0) seq = cfg->max_seq_len < 256 ? cfg->max_seq_len : 256;
    if (seq > cfg->max_seq_len) {
        free(params);
        err_set(&err, "--seq: expected at most the model's max_seq_len %d, found %d", cfg->max_seq_len, seq);
        return cli_fail("eval", &err);
    }
    if (jsonl) {
        int rc = eval_jsonl(data, model, tokenizer, tokenizer_config, &fields, mask_prompt, &layout, params, seq, batch,
                            int8, backend, device, ane_limits, adapter_dir, json, &err);
        free(params);
        return rc == 0 ? 0 : cli_fail("eval", &err);
    }
    TokFile tf;
    if (tokfile_load(&tf, data, cfg->vocab_size, &err) != 0) {
        free(params);
        return cli_fail("eval", &err);
    }
    size_t windows = eval_windows(tf.n_tokens, seq);
    if (windows == 0) {
        err_set(&err, "%s: expected at least %d tokens (one window of --seq %d plus its target), found %zu", data,
                seq + 1, seq, tf.n_tokens);
        tokfile_free(&tf);
        free(params);
        return cli_fail("eval", &err);
    }
    if (max_windows > 0 && (size_t)max_windows < windows) windows = (size_t)max_windows;
    if ((size_t)batch > windows) batch = (int)windows;
    /* The adapter: unmerged over the frozen base. */
    LoraLayout lora;
    float *adapter = NULL;
    if (adapter_dir && lora_load(adapter_dir, cfg, &lora, &adapter, &err) != 0) {
        err_wrap(&err, "--adapter");
        tokfile_free(&tf);
        free(params);
        return cli_fail("eval", &err);
    }
    /* int8: quantized here, the fp32 pages of those matrices given back (never read again). */
    Int8Weights q;
    memset(&q, 0, sizeof q);
    if (int8) {
        if (quant_int8_create(&q, &layout, params, &err) != 0) {
            tokfile_free(&tf);
            free(params);
            free(adapter);
            return cli_fail("eval", &err);
        }
        for (int k = 0; k < T_COUNT; k++)
            if (quant_kind_is_int8((TensorKind)k))
                mem_release_pages(params + layout.t[k].offset, layout.t[k].numel * sizeof(float));
        if (!json)
            printf("int8    layer matrices %.1f MiB as int8 + scales instead of %.1f MiB fp32 (%.1f MiB saved)\n",
                   (double)quant_int8_bytes(&q) / 1048576.0, (double)quant_int8_fp32_bytes(&layout) / 1048576.0,
                   ((double)quant_int8_fp32_bytes(&layout) - (double)quant_int8_bytes(&q)) / 1048576.0);
    }
    AneBackendOptions ane;
    backend_ane_default_options(&ane);
    ane.device = device;
    ane.limits = ane_limits;
    FrozenBase frozen = {adapter ? &lora : NULL, int8 ? &q : NULL};
    Backend *be = backend_create_frozen(backend, &layout, adapter || int8 ? &frozen : NULL, batch, seq, &ane, &err);
    int32_t *inputs = malloc((size_t)batch * seq * sizeof(int32_t));
    int32_t *targets = malloc((size_t)batch * seq * sizeof(int32_t));
    int rc = 0;
    if (!be || !inputs || !targets) {
        if (be) err_set(&err, "out of memory for a %d x %d batch", batch, seq);
        rc = cli_fail("eval", &err);
    }
    double loss = 0, t0 = now_seconds();
    if (rc == 0 && eval_loss(be, params, adapter, tf.tokens, windows, batch, seq, inputs, targets, &loss,
                             term_is_tty() ? show_progress : NULL, &err) != 0)
        rc = cli_fail("eval", &err);
    if (term_is_tty()) fputc('\n', stderr);
    if (rc == 0) {
        double secs = now_seconds() - t0;
        size_t tokens = windows * (size_t)seq;
        if (json)
            printf("{\"loss\": %.9g, \"perplexity\": %.9g, \"tokens\": %zu, \"windows\": %zu, \"seq\": %d, "
                   "\"int8\": %s}\n",
                   loss, exp(loss), tokens, windows, seq, int8 ? "true" : "false");
        else
            printf("loss %.4f  perplexity %.3f  over %zu tokens (%zu windows of %d) in %.1f s\n", loss, exp(loss),
                   tokens, windows, seq, secs);
    }
    if (be) be->destroy(be);
    free(inputs);
    free(targets);
    tokfile_free(&tf);
    free(params);
    free(adapter);
    if (int8) quant_int8_free(&q);
    return rc;
}
