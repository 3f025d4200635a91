/*
** train.c — `anetrain train`: the training loop as the user sees it.
**
** Parses flags into TrainOptions (from train_options_default), prints the run's banner, hands
** the Trainer to the run loop (train/run.h: steps, metrics log, validation, checkpoints, the
** save on Ctrl-C so `--resume` continues exactly) with the progress line as its per-step
** callback, acts on how it ended (exit 130 on Ctrl-C, re-execution at the ANE compile budget),
** and prints an end-of-run summary.
*/
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../backend/ane/cost.h"
#include "../io/model_file.h"
#include "../train/run.h"
#include "../train/trainer.h"
#include "../util/blas.h"
#include "../util/dist.h"
#include "../util/fileio.h"
#include "../util/parallel.h"
#include "args.h"
#include "cli.h"
#include "progress.h"

/* The text of a macro's value, for the help (TRAIN_STRING(ANE_COMPILE_BUDGET_DEFAULT) is "119"). */
#define TRAIN_STRING_(x) #x
#define TRAIN_STRING(x) TRAIN_STRING_(x)

static const char *train_help =
    "usage: anetrain train [options]\n"
    "\n"
    "Trains a decoder-only transformer (Llama-2 family or Qwen3) on a token file and writes a\n"
    "resumable checkpoint plus a metrics log. Without --init the model starts from random\n"
    "weights (llama2.c's init: N(0, 0.02), residual projections scaled by 1/sqrt(2*layers)).\n"
    "\n"
    "Model (choose one source):\n"
    "  --model NAME|FILE     a preset (stories15m stories42m stories110m qwen3-0.6b tiny tiny-qwen3)\n"
    "                        or a HF config.json; default stories15m. Shape flags override fields:\n"
    "      --dim N --hidden-dim N --layers N --heads N --kv-heads N --head-dim N --vocab N\n"
    "      --max-seq N --rope-theta X --norm-eps X --rope interleaved|half --qk-norm --untied\n"
    "  --init PATH           start from trained weights: an anetrain checkpoint, a llama2.c .bin,\n"
    "                        or a HF directory (config.json + model.safetensors); fresh optimizer\n"
    "  --resume              continue the checkpoint at --out exactly where it stopped (weights,\n"
    "                        AdamW moments, step, data position, RNG). Give the same flags as the\n"
    "                        first run; the losses then match an uninterrupted run bit for bit.\n"
    "                        --init is ignored; --model/shape flags must match the checkpoint.\n"
    "\n"
    "Data:\n"
    "  --data FILE           token file (required): llama2.c/TinyStories raw uint16, or ANETOK\n"
    "                        (uint16/uint32 ids, made by anetrain); ids must be < vocab. A raw\n"
    "                        file that looks like text is refused: tokenize it first (`anetrain\n"
    "                        tokenize`), or give --data-is-tokens to read it as token ids anyway\n"
    "  --val-frac X          fraction at the end of the file held out for validation (default 0.05;\n"
    "                        0 disables validation)\n"
    "  --order random|sequential\n"
    "                        random windows (default) or, sequentially, row b of step s reads\n"
    "                        tokens [(s*B+b)*T, (s*B+b)*T+T+1) (times --accum micro-batches)\n"
    "\n"
    "Optimization (AdamW, warmup then cosine decay, as llama2.c's train.py):\n"
    "  --steps N             optimizer steps (default 1000)\n"
    "  --batch B             sequences per micro-batch (default 8)\n"
    "  --seq T               tokens per sequence (default min(256, model max_seq))\n"
    "  --accum N             micro-batches accumulated per step (default 1)\n"
    "  --lr X                peak learning rate (default 5e-4)\n"
    "  --min-lr X            learning rate at the last step (default lr/10)\n"
    "  --warmup N            linear warmup steps (default min(100, steps/10))\n"
    "  --wd X                decoupled weight decay on matrices and embeddings (default 0.1)\n"
    "  --beta1 X --beta2 X   AdamW betas (default 0.9, 0.95)\n"
    "  --eps X               AdamW epsilon (default 1e-8)\n"
    "  --clip X              clip the global gradient norm to X (default 1.0; 0 disables)\n"
    "  --seed S              seed for init and data order (default 1337)\n"
    "\n";

/* Split in three: ISO C only promises string literals of 4095 characters. */
static const char *train_help_more =
    "Evaluation, output:\n"
    "  --eval-every N        validation loss every N steps and at the end (default 100; 0 = only\n"
    "                        at the end)\n"
    "  --eval-batches N      validation batches per evaluation (default 20; 0 = the whole split)\n"
    "  --eval-seq T          validate with windows of T tokens instead of --seq (e.g. the model's\n"
    "                        full context); the evaluation then builds a backend of its own each\n"
    "                        time, which on the ANE costs compiles (see --compile-budget)\n"
    "  --out PATH            checkpoint file (default out/model.ckpt; its directory is created)\n"
    "  --save-every N        also checkpoint every N steps (default 500; 0 = only at the end)\n"
    "  --check-every N       under mpirun: compare the crc32 of the weights across the processes\n"
    "                        every N steps and at the end; a difference stops the run with an\n"
    "                        error (default 100; 0 = at the end only)\n"
    "  --grad-comm fp32|bf16 under mpirun: the precision the gradients travel in between the\n"
    "                        processes (default fp32). bf16 halves the bytes: each process's\n"
    "                        gradients, and their rank-order fp32 sum, are rounded to bf16\n"
    "                        (every process still gets the same bits); no effect in one process\n"
    "  --log FILE            metrics log, one JSON object per step (default: metrics.jsonl next\n"
    "                        to --out); keys step, loss, lr, grad_norm, tokens, ms, and val_loss\n"
    "                        when computed. --resume appends to it.\n"
    "  --print-every N       when stderr is not a terminal, print a progress line every N steps\n"
    "                        (default 10); on a terminal the line is redrawn every step\n"
    "\n";

static const char *train_help_exec =
    "Execution:\n"
    "  --backend cpu|ane     cpu: fp32 reference with BLAS (default). ane: every layer's forward\n"
    "                        and backward-dx as fp16 MIL kernels on the Neural Engine (two kernels\n"
    "                        per layer, compiled once, weights packed into the input), weight\n"
    "                        gradients, classifier, loss and AdamW on the CPU in fp32. Prints an\n"
    "                        efficiency report and logs its counters per step.\n"
    "  --device auto|emu|darwin\n"
    "                        ANE device: the real one on macOS (darwin), else the emulator, which\n"
    "                        runs the same MIL in fp16 under the device's constraints (default\n"
    "                        auto; emu forces the emulator anywhere)\n"
    "  --emu-accumulate fp32|fp16\n"
    "                        emulator's matmul/sum accumulation (default fp32; fp16 rounds every\n"
    "                        32 addends, a pessimistic model of the unknown hardware)\n"
    "  --ane-limits strict|probed\n"
    "                        the device limits every kernel is checked against before it compiles,\n"
    "                        on the emulator and on a Mac alike (a refusal names the rule, the\n"
    "                        tensor and its shape; the rules and their sources: docs/ane-facts.md\n"
    "                        section 9). strict (default): what was measured to fail on real chips,\n"
    "                        extended to every tensor (no axis above 16384), plus the conventions\n"
    "                        every working reference follows (slices at multiples of 32, no\n"
    "                        exponent literals, no cast). probed: only what was measured to fail.\n"
    "  --compile-budget N    ANE compiles allowed per process (default " TRAIN_STRING(ANE_COMPILE_BUDGET_DEFAULT)
    ", the real device's\n"
    "                        limit; the emulator enforces it too). When the next compile would\n"
    "                        pass it, training saves the checkpoint and re-executes itself with\n"
    "                        the same flags plus --resume, continuing exactly where it was.\n"
    "  --overlap-dw auto|on|off\n"
    "                        run weight-gradient GEMMs in a worker thread while the device\n"
    "                        evaluates (default auto: on for the real device, off for the\n"
    "                        emulator, which already uses every core)\n"
    "  --threads N           threads for BLAS and the rest (default: all cores). Results are\n"
    "                        deterministic for a given seed and thread count.\n"
    "  --loss-scale dynamic|off|N\n"
    "                        multiply the loss gradient by a scale so small gradients survive\n"
    "                        fp16 (divided out before the update). dynamic (default for ane):\n"
    "                        start at 65536, halve and skip the step on inf/NaN gradients\n"
    "                        (weights untouched), double after --loss-scale-window clean\n"
    "                        steps (default 1000). off (default for cpu), or a fixed N.\n"
    "  --int8                refused: int8 weights cannot train. An int8 base is for LoRA\n"
    "                        (finetune --int8) and forward passes (eval, sample --int8).\n"
    "\n"
    "Ctrl-C finishes the current step, writes the checkpoint and exits; --resume continues.\n"
    "\n"
    "Data parallel (built with MPI): mpirun -np N anetrain train ... runs N processes, each with\n"
    "its own backend, on a global batch of N x batch x accum sequences (-np 2 --batch 4 trains on\n"
    "the sequences of --batch 4 --accum 2); the gradients are summed across them before the\n"
    "update. Process 0 alone prints and writes; --resume needs the same N.\n"
    "\n"
    "examples:\n"
    "  anetrain train --model stories15m --data tinystories.bin --steps 5000 --batch 16\n"
    "  anetrain train --init stories15M.bin --data mytext.bin --lr 1e-4 --steps 200\n"
    "  anetrain train --model stories15m --data tinystories.bin --steps 5000 --batch 16 --resume\n";

typedef struct {
    TrainOptions opt;
    const char *model;
    const char *out, *log;
    int resume;
    int data_is_tokens; /* --data-is-tokens: skip the looks-like-text check */
    int eval_every, save_every, print_every, check_every;
    int threads;
    /* shape overrides: -1 (or NAN) = not given */
    int dim, hidden_dim, layers, heads, kv_heads, head_dim, vocab, max_seq, qk_norm, untied;
    float rope_theta, norm_eps;
    int rope; /* -1, ROPE_INTERLEAVED or ROPE_HALF */
    int seq_given, warmup_given, min_lr_given;
    const char *loss_scale;
    const char *grad_comm; /* --grad-comm fp32|bf16 */
    int eval_seq; /* 0: validate at --seq */
} TrainArgs;

/* --backend ane: --device, --emu-accumulate, --overlap-dw, --ane-limits into AneBackendOptions. */
static int parse_ane_flags(const char *device, const char *accumulate, const char *overlap, const char *limits,
                           AneBackendOptions *o, Err *err) {
    backend_ane_default_options(o);
    if (ane_limits_parse("--ane-limits", limits, &o->limits, err) != 0) return -1;
    o->device = device;
    if (strcmp(device, "auto") && strcmp(device, "emu") && strcmp(device, "darwin"))
        return err_set(err, "--device: expected auto, emu or darwin, found '%s'", device);
    if (!strcmp(accumulate, "fp32")) o->accumulate_fp32 = 1;
    else if (!strcmp(accumulate, "fp16")) o->accumulate_fp32 = 0;
    else return err_set(err, "--emu-accumulate: expected fp32 or fp16, found '%s'", accumulate);
    if (!strcmp(overlap, "auto")) o->overlap_dw = -1;
    else if (!strcmp(overlap, "on")) o->overlap_dw = 1;
    else if (!strcmp(overlap, "off")) o->overlap_dw = 0;
    else return err_set(err, "--overlap-dw: expected auto, on or off, found '%s'", overlap);
    return 0;
}

static int shape_flag_given(const TrainArgs *a) {
    return a->dim >= 0 || a->hidden_dim >= 0 || a->layers >= 0 || a->heads >= 0 || a->kv_heads >= 0 ||
           a->head_dim >= 0 || a->vocab >= 0 || a->max_seq >= 0 || a->qk_norm >= 0 || a->untied >= 0 ||
           !isnan(a->rope_theta) || !isnan(a->norm_eps) || a->rope >= 0;
}

/* Fills cfg from --model (preset or config.json) and the shape flags. */
static int build_config(const TrainArgs *a, ModelConfig *cfg, Err *err) {
    const char *model = a->model ? a->model : "stories15m";
    size_t len = strlen(model);
    if (path_is_dir(model) || (len > 5 && !strcmp(model + len - 5, ".json"))) {
        char path[1100];
        if (path_is_dir(model)) snprintf(path, sizeof path, "%s/config.json", model);
        else snprintf(path, sizeof path, "%s", model);
        if (hf_config_load(path, cfg, err) != 0) return -1;
    } else if (config_from_preset(cfg, model, err) != 0) {
        return -1;
    }
    if (a->dim >= 0) cfg->dim = a->dim;
    if (a->hidden_dim >= 0) cfg->hidden_dim = a->hidden_dim;
    if (a->layers >= 0) cfg->n_layers = a->layers;
    if (a->heads >= 0) cfg->n_heads = a->heads;
    if (a->kv_heads >= 0) cfg->n_kv_heads = a->kv_heads;
    else if (a->heads >= 0) cfg->n_kv_heads = a->heads;
    if (a->head_dim >= 0) cfg->head_dim = a->head_dim;
    else if (a->dim >= 0 || a->heads >= 0) cfg->head_dim = cfg->dim / cfg->n_heads;
    if (a->vocab >= 0) cfg->vocab_size = a->vocab;
    if (a->max_seq >= 0) cfg->max_seq_len = a->max_seq;
    if (a->qk_norm >= 0) cfg->qk_norm = a->qk_norm;
    if (a->untied >= 0) cfg->tied = !a->untied;
    if (!isnan(a->rope_theta)) cfg->rope_theta = a->rope_theta;
    if (!isnan(a->norm_eps)) cfg->norm_eps = a->norm_eps;
    if (a->rope >= 0) cfg->rope_style = (RopeStyle)a->rope;
    return config_validate(cfg, a->model ? a->model : "preset stories15m", err);
}

static int parse_args(int argc, char **argv, TrainArgs *a, Err *err) {
    memset(a, 0, sizeof *a);
    TrainOptions *o = &a->opt;
    train_options_default(o);
    a->out = "out/model.ckpt";
    a->eval_every = 100;
    a->save_every = 500;
    a->check_every = 100;
    a->print_every = 10;
    a->threads = parallel_cpu_count();
    a->dim = a->hidden_dim = a->layers = a->heads = a->kv_heads = a->head_dim = a->vocab = a->max_seq = -1;
    a->rope_theta = a->norm_eps = NAN;
    const char *order = "random", *backend = o->backend, *rope = NULL;
    const char *device = "auto", *accumulate = "fp32", *overlap = "auto", *limits = "strict";
    int compile_budget = o->ane.compile_budget;
    int qk_norm = 0, untied = 0;
    const double BIG = 1e9;
    const ArgSpec specs[] = {
        {"--model", ARG_STR, &a->model, 0, 0, NULL},
        {"--init", ARG_STR, &o->init_path, 0, 0, NULL},
        {"--resume", ARG_BOOL, &a->resume, 0, 0, NULL},
        {"--data", ARG_STR, &o->data_path, 0, 0, NULL},
        {"--data-is-tokens", ARG_BOOL, &a->data_is_tokens, 0, 0, NULL},
        {"--val-frac", ARG_DOUBLE, &o->val_frac, 0, 0.999, NULL},
        {"--order", ARG_STR, &order, 0, 0, NULL},
        {"--steps", ARG_LONG, &o->steps, 0, BIG, NULL},
        {"--batch", ARG_INT, &o->batch, 1, 65536, NULL},
        {"--seq", ARG_INT, &o->seq, 1, 1 << 20, &a->seq_given},
        {"--accum", ARG_INT, &o->accum, 1, 65536, NULL},
        {"--lr", ARG_FLOAT, &o->lr, 1e-12, 10, NULL},
        {"--min-lr", ARG_FLOAT, &o->min_lr, 0, 10, &a->min_lr_given},
        {"--warmup", ARG_LONG, &o->warmup, 0, BIG, &a->warmup_given},
        {"--wd", ARG_FLOAT, &o->adam.weight_decay, 0, 10, NULL},
        {"--beta1", ARG_FLOAT, &o->adam.beta1, 0, 0.999999, NULL},
        {"--beta2", ARG_FLOAT, &o->adam.beta2, 0, 0.999999999, NULL},
        {"--eps", ARG_FLOAT, &o->adam.eps, 1e-30, 1, NULL},
        {"--clip", ARG_FLOAT, &o->clip, 0, BIG, NULL},
        {"--seed", ARG_U64, &o->seed, 0, 0, NULL},
        {"--eval-every", ARG_INT, &a->eval_every, 0, BIG, NULL},
        {"--eval-batches", ARG_INT, &o->eval_batches, 0, BIG, NULL},
        {"--eval-seq", ARG_INT, &a->eval_seq, 1, 1 << 20, NULL},
        {"--out", ARG_STR, &a->out, 0, 0, NULL},
        {"--save-every", ARG_INT, &a->save_every, 0, BIG, NULL},
        {"--check-every", ARG_INT, &a->check_every, 0, BIG, NULL},
        {"--grad-comm", ARG_STR, &a->grad_comm, 0, 0, NULL},
        {"--log", ARG_STR, &a->log, 0, 0, NULL},
        {"--print-every", ARG_INT, &a->print_every, 1, BIG, NULL},
        {"--backend", ARG_STR, &backend, 0, 0, NULL},
        {"--device", ARG_STR, &device, 0, 0, NULL},
        {"--emu-accumulate", ARG_STR, &accumulate, 0, 0, NULL},
        {"--overlap-dw", ARG_STR, &overlap, 0, 0, NULL},
        {"--ane-limits", ARG_STR, &limits, 0, 0, NULL},
        {"--compile-budget", ARG_INT, &compile_budget, 1, 1000000, NULL},
        {"--threads", ARG_INT, &a->threads, 1, 256, NULL},
        {"--loss-scale", ARG_STR, &a->loss_scale, 0, 0, NULL},
        {"--loss-scale-window", ARG_INT, &o->loss_scale_window, 1, BIG, NULL},
        {"--int8", ARG_BOOL, &o->int8, 0, 0, NULL},
        {"--dim", ARG_INT, &a->dim, 1, 1 << 16, NULL},
        {"--hidden-dim", ARG_INT, &a->hidden_dim, 1, 1 << 18, NULL},
        {"--layers", ARG_INT, &a->layers, 1, 1024, NULL},
        {"--heads", ARG_INT, &a->heads, 1, 1024, NULL},
        {"--kv-heads", ARG_INT, &a->kv_heads, 1, 1024, NULL},
        {"--head-dim", ARG_INT, &a->head_dim, 2, 4096, NULL},
        {"--vocab", ARG_INT, &a->vocab, 2, 1 << 24, NULL},
        {"--max-seq", ARG_INT, &a->max_seq, 1, 1 << 20, NULL},
        {"--rope-theta", ARG_FLOAT, &a->rope_theta, 1, 1e12, NULL},
        {"--norm-eps", ARG_FLOAT, &a->norm_eps, 1e-12, 1, NULL},
        {"--rope", ARG_STR, &rope, 0, 0, NULL},
        {"--qk-norm", ARG_BOOL, &qk_norm, 0, 0, NULL},
        {"--untied", ARG_BOOL, &untied, 0, 0, NULL},
    };
    if (args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), NULL, 0, NULL, err) != 0) return -1;
    a->qk_norm = qk_norm ? 1 : -1;
    a->untied = untied ? 1 : -1;
    a->rope = -1;
    if (rope && !strcmp(rope, "interleaved")) a->rope = ROPE_INTERLEAVED;
    else if (rope && !strcmp(rope, "half")) a->rope = ROPE_HALF;
    else if (rope) return err_set(err, "--rope: expected interleaved or half, found '%s'", rope);
    if (!strcmp(order, "random")) o->order = ORDER_RANDOM;
    else if (!strcmp(order, "sequential")) o->order = ORDER_SEQUENTIAL;
    else return err_set(err, "--order: expected random or sequential, found '%s'", order);
    BackendKind kind;
    if (backend_kind_parse(backend, &kind, err) != 0) return err_wrap(err, "--backend");
    o->backend = backend;
    if (parse_ane_flags(device, accumulate, overlap, limits, &o->ane, err) != 0) return -1;
    o->ane.compile_budget = compile_budget;
    const char *ls = a->loss_scale ? a->loss_scale : kind == BACKEND_CPU ? "off" : "dynamic";
    if (!strcmp(ls, "off")) o->loss_scaling = LOSS_SCALE_OFF;
    else if (!strcmp(ls, "dynamic")) o->loss_scaling = LOSS_SCALE_DYNAMIC;
    else {
        o->loss_scaling = LOSS_SCALE_FIXED;
        char *end;
        double v = strtod(ls, &end);
        if (*ls == '\0' || *end != '\0' || !(v >= 1 && v <= 16777216.0))
            return err_set(err, "--loss-scale: expected dynamic, off or a number in [1, 16777216], found '%s'", ls);
        o->loss_scale_init = (float)v;
    }
    if (grad_comm_parse(a->grad_comm, &o->grad_comm_bf16, err) != 0) return -1;
    if (!o->data_path) return err_set(err, "--data: a token file is required (see Data in --help)");
    if ((a->model || shape_flag_given(a)) && o->init_path)
        return err_set(err, "--model/shape flags and --init each choose the model: give only one");
    /* --resume takes the weights from the checkpoint at --out: --init is then moot, and
    ** --model/shape flags (the first run's flags, repeated) must describe the same model. */
    if (a->resume) o->init_path = NULL;
    if (!a->warmup_given) o->warmup = o->steps / 10 < 100 ? o->steps / 10 : 100;
    if (!a->min_lr_given) o->min_lr = o->lr / 10;
    return 0;
}

/* --log default: metrics.jsonl in --out's directory. */
static void default_log_path(const char *out, char *buf, size_t size) {
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", out);
    snprintf(buf, size, "%s/metrics.jsonl", dirname(copy));
}

/* Re-executes this program with the same arguments plus --resume (the compile-budget restart).
** Returns only if exec fails. ANETRAIN_RESTARTS counts the restarts, for the one-line notice. */
static int restart_process(int argc, char **argv, int restarts, Err *err) {
    char **args = calloc((size_t)argc + 3, sizeof *args);
    if (!args) return err_set(err, "restart: out of memory");
    int n = 0, has_resume = 0;
    args[n++] = (char *)cli_program;
    for (int i = 0; i < argc; i++) { /* argv[0] is "train" */
        has_resume |= !strcmp(argv[i], "--resume");
        args[n++] = argv[i];
    }
    if (!has_resume) args[n++] = "--resume";
    args[n] = NULL;
    char count[16];
    snprintf(count, sizeof count, "%d", restarts + 1);
    setenv("ANETRAIN_RESTARTS", count, 1);
    fflush(stdout);
    fflush(stderr);
    if (access("/proc/self/exe", X_OK) == 0) execv("/proc/self/exe", args); /* robust to a relative argv[0] */
    execvp(cli_program, args);
    int e = errno;
    free(args);
    return err_set(err, "restart: cannot re-execute %s: %s", cli_program, strerror(e));
}

/* The end-of-run efficiency report: per-step averages of the training steps. */
static void print_efficiency(const char *backend, const BackendStats *d, const BackendStats *lifetime, long steps,
                             double t_optim, double wall) {
    if (steps <= 0) return;
    double n = (double)steps, flops = d->flops_device + d->flops_cpu;
    printf("efficiency report, %s, per training step (mean of %ld):\n", backend, steps);
    printf("  device     %.1f evaluations; %.1f MB staged in (%.1f MB weights), %.1f MB read back\n",
           (double)d->evaluations / n, (double)d->bytes_staged / n / 1e6, (double)d->bytes_staged_weights / n / 1e6,
           (double)d->bytes_read / n / 1e6);
    printf("  FLOPs      %.2f G on the device, %.2f G on the CPU (CPU share %.0f%%)\n", d->flops_device / n / 1e9,
           d->flops_cpu / n / 1e9, flops > 0 ? 100.0 * d->flops_cpu / flops : 0.0);
    printf("  compiles   %llu (%.3f s; %llu during training steps), %llu failed\n",
           (unsigned long long)lifetime->compiles, lifetime->compile_seconds, (unsigned long long)d->compiles,
           (unsigned long long)lifetime->compile_failures);
    printf("  time       %.0f ms/step: device %.0f, staging %.0f, CPU ops %.0f, dW %.0f (waited %.0f), optimizer %.0f\n",
           wall / n * 1e3, d->t_device / n * 1e3, d->t_stage / n * 1e3, d->t_cpu_ops / n * 1e3, d->t_dw / n * 1e3,
           d->t_dw_wait / n * 1e3, t_optim / n * 1e3);
    AneStepWork work = {(double)d->evaluations / n, d->flops_device / n,
                        (double)(d->device_bytes_in + d->device_bytes_out + d->bytes_staged + d->bytes_read) / n};
    char estimate[1024];
    ane_cost_format(&work, "  ", estimate, sizeof estimate);
    fputs(estimate, stdout);
}

/* Data parallel: the "ranks" banner line (the global batch, the bytes summed per step, at
** --grad-comm's precision). */
static void print_ranks(const Trainer *tr) {
    const TrainOptions *o = &tr->opt;
    size_t n = tr->adapter ? tr->lora.n_floats : tr->layout.n_floats;
    char fp32[40] = "";
    if (o->grad_comm_bf16) snprintf(fp32, sizeof fp32, " (fp32: %.1f MB)", (double)n * sizeof(float) / 1e6);
    printf("ranks   %d processes (MPI): global batch %d ranks x %d x %d tokens x %d accum = %lld tokens/step; "
           "%.1f MB of %s gradients summed per step%s\n",
           tr->world, tr->world, o->batch, o->seq, o->accum, (long long)tr->world * o->batch * o->seq * o->accum,
           (double)trainer_comm_bytes(tr) / 1e6, o->grad_comm_bf16 ? "bf16" : "fp32", fp32);
}

int cli_train(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(train_help, stdout);
        fputs(train_help_more, stdout);
        fputs(train_help_exec, stdout);
        return 0;
    }
    Err err = {{0}};
    TrainArgs a;
    if (parse_args(argc, argv, &a, &err) != 0) return cli_fail("train", &err);
    if (cli_join_ranks(&err) != 0) return cli_fail("train", &err);
    int rank0 = dist_rank() == 0;
    TrainOptions *o = &a.opt;
    if (!a.data_is_tokens && tokfile_refuse_text(o->data_path, "--data", &err) != 0) return cli_fail("train", &err);
    int model_flags = a.model || shape_flag_given(&a);
    if (!o->init_path && (!a.resume || model_flags) && build_config(&a, &o->cfg, &err) != 0)
        return cli_fail("train", &err);
    if (a.resume) {
        if (!path_exists(a.out)) {
            err_set(&err, "--resume: no checkpoint at --out %s to resume (run without --resume first)", a.out);
            return cli_fail("train", &err);
        }
        o->resume_path = a.out;
    }
    if (!a.seq_given) o->seq = 0; /* trainer_init picks min(256, the model's max_seq_len) */
    parallel_init(a.threads);
    blas_set_threads(a.threads);

    Trainer tr;
    if (trainer_init(&tr, o, &err) != 0) return cli_fail("train", &err);
    o->seq = tr.opt.seq;
    /* tests/test_mpi.sh: one rank's weights nudged, which the weights check must catch */
    const char *perturb = getenv("ANETRAIN_TEST_PERTURB_RANK");
    if (perturb && tr.world > 1 && atoi(perturb) == tr.rank) tr.params[0] += 1e-3f;
    char diff[256];
    if (a.resume && model_flags && config_difference(&o->cfg, &tr.layout.cfg, diff, sizeof diff)) {
        err_set(&err, "--resume: the checkpoint %s is not the model the flags describe (%s)", a.out, diff);
        trainer_free(&tr);
        return cli_fail("train", &err);
    }
    if (a.eval_seq > tr.layout.cfg.max_seq_len) {
        err_set(&err, "--eval-seq: expected at most the model's max_seq_len %d, found %d", tr.layout.cfg.max_seq_len,
                a.eval_seq);
        trainer_free(&tr);
        return cli_fail("train", &err);
    }
    /* Every input has been checked; now every output path, before any work: a run must never
    ** train and then find it cannot save (a directory given as --out, a path too long, a
    ** directory it cannot write). Only then are the output directories created. */
    char log_path[1100];
    if (a.log) snprintf(log_path, sizeof log_path, "%s", a.log);
    else default_log_path(a.out, log_path, sizeof log_path);
    if (output_file_check(a.out, "--out", &err) != 0 ||
        output_file_check(log_path, a.log ? "--log" : "--log (default: metrics.jsonl beside --out)", &err) != 0 ||
        (!strcmp(log_path, a.out) && err_set(&err, "--log %s: expected another file than the checkpoint --out", log_path)) ||
        dir_ensure_parent(a.out, &err) != 0 || dir_ensure_parent(log_path, &err) != 0) {
        trainer_free(&tr);
        return cli_fail("train", &err);
    }
    FILE *log = rank0 ? fopen(log_path, a.resume ? "a" : "w") : NULL;
    if (rank0 && !log) {
        err_set(&err, "--log %s: cannot open for writing: %s", log_path, strerror(errno));
        trainer_free(&tr);
        return cli_fail("train", &err);
    }

    const char *restarts_env = getenv("ANETRAIN_RESTARTS");
    int restarts = restarts_env ? atoi(restarts_env) : 0;
    char desc[512];
    config_describe(&tr.layout.cfg, desc, sizeof desc);
    if (restarts > 0 && a.resume) {
        printf("restart %d: continuing at step %lld with a fresh compile budget\n", restarts,
               (long long)tr.state.step);
    } else {
        printf("model   %s\n", desc);
        printf("data    %s: %zu tokens (%zu train, %zu validation), %s order\n", o->data_path, tr.data.n_tokens,
               tr.loader.n_train, tr.loader.n_val, o->order == ORDER_RANDOM ? "random" : "sequential");
        printf("batch   %d x %d tokens x %d accum = %d tokens/step; %ld steps, lr %.2e -> %.2e, warmup %ld\n", o->batch,
               o->seq, o->accum, o->batch * o->seq * o->accum, o->steps, (double)o->lr, (double)o->min_lr, o->warmup);
        if (tr.backend->kind == BACKEND_ANE)
            printf("backend %s, BLAS %s, %d threads\n", tr.backend->name, blas_name(), a.threads);
        else
            printf("backend cpu (%s), %d threads; activations %.0f MiB\n", blas_name(), a.threads,
                   backend_cpu_bytes(&tr.layout.cfg, o->batch, o->seq) / 1048576.0);
        if (tr.world > 1) print_ranks(&tr);
        if (a.resume) printf("resume  %s at step %lld\n", a.out, (long long)tr.state.step);
        printf("out     %s (checkpoint), %s (metrics)\n", a.out, log_path);
    }
    fflush(stdout);

    volatile sig_atomic_t *stop = catch_stop_signals();
    int tty = term_is_tty();
    StepProgress progress = {o->steps, (double)o->batch * o->seq * o->accum * tr.world, a.print_every, tty, 1,
                             o->loss_scaling != LOSS_SCALE_OFF};
    RunOptions run = {.eval_every = a.eval_every, .save_every = a.save_every, .eval_seq = a.eval_seq,
                      .log_efficiency = 1, .check_every = a.check_every, .save_path = a.out, .log = log,
                      .log_path = log_path,
                      .stop = stop, .on_step = progress_on_step, .ctx = &progress};
    RunReport rep;
    RunStatus status = run_training(&tr, &run, &rep, &err);
    int rc = 0;
    if (status == RUN_RESTART) {
        /* The device's compiler would refuse the next evaluation: the checkpoint is saved,
        ** continue in a fresh process. */
        if (tty) fputc('\n', stderr);
        printf("compile budget: %llu of %d compiles used, the evaluation after step %ld needs %d more: checkpoint "
               "saved at step %lld, restarting to continue\n",
               rep.compiles_used, o->ane.compile_budget, rep.restart_step, ANE_BACKEND_COMPILES,
               (long long)tr.state.step);
        if (log) fclose(log);
        log = NULL;
        restart_process(argc, argv, restarts, &err);
        rc = cli_fail("train", &err); /* only reached if exec failed */
    } else if (status == RUN_DIVERGED) {
        if (tty) fputc('\n', stderr);
        fprintf(stderr, "anetrain train: error: %s\n", err.msg);
        rc = 1;
    } else if (status == RUN_ERROR) {
        rc = cli_fail("train", &err);
    }
    if (tty && rep.steps_done > 0) fputc('\n', stderr);
    if (log) fclose(log);
    if (rc == 0) {
        double elapsed = now_seconds() - rep.t_start;
        char dur[32];
        format_duration(elapsed, dur, sizeof dur);
        if (status == RUN_INTERRUPTED) {
            printf("interrupted at step %lld: checkpoint saved to %s; continue with the same command plus --resume\n",
                   (long long)tr.state.step, a.out);
            rc = 130;
        } else {
            printf("done    %ld steps (%lld tokens) in %s, %.0f tok/s", rep.steps_done, rep.tokens, dur,
                   elapsed > 0 ? rep.tokens / elapsed : 0.0);
            if (rep.last_loss_n) printf("; train loss %.4f (mean of last %d)", rep.last_loss_sum / rep.last_loss_n,
                                         rep.last_loss_n);
            if (!isnan(rep.last_val))
                printf("; val_loss %.4f (best %.4f at step %ld)", rep.last_val, rep.best_val, rep.best_val_step);
            printf("\n");
            progress_print_comm(&tr, &rep);
            if (tr.backend->stats) {
                BackendStats lifetime;
                tr.backend->stats(tr.backend, &lifetime);
                print_efficiency(tr.backend->name, &rep.train_stats, &lifetime, rep.steps_done, rep.t_optim,
                                 rep.t_wall);
            }
            printf("saved   %s (checkpoint), %s (metrics); plot with: anetrain plot %s\n", a.out, log_path,
                   log_path);
        }
    }
    trainer_free(&tr);
    /* every rank ends the same way (the status is agreed); a failure on one ends them all */
    if (rc == 0 || rc == 130) dist_finalize();
    else dist_abort(rc);
    return rc;
}
