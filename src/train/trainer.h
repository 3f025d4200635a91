/*
** trainer.h — owns the order of a training step.
**
**   batch [B][T] from the loader
**     -> backend step (forward, loss, backward) per micro-batch, gradients accumulated
**     -> global-norm clipping -> AdamW on the fp32 master weights
**     -> now and then: validation loss, checkpoint
**
** The trainer never prints and never exits: the run loop (run.h) drives it step by step for
** `train` and `finetune`, and the CLI decides what the user sees. Everything is allocated in
** trainer_init.
**
** LoRA fine-tuning (TrainOptions.lora.rank > 0, see lora.h): the base model is frozen and
** only the adapter trains; the norm, clipping and AdamW see only the adapter's gradients; the
** AdamW moments exist for the adapter alone (m and v stay NULL). Loss scaling and accumulation
** work as in full training. params is the frozen base and the backend a frozen-base one
** (backend_create_frozen, on cpu and ane alike): each micro-batch passes the adapter,
** adapter_grads and a dropout seed in StepArgs, and the backend computes the adapter's gradients
** alone: there is no full gradient buffer (grads NULL) and no copy of the base. With
** TrainOptions.int8 the seven layer matrices are quantized at load (model/quant.h) and their fp32
** pages in params released (mem_release_pages): the backend reads the int8 ones (cpu: dequantized
** on the fly; ane: staged once as int8 values with per-row scales applied in the kernels).
** The dropout seed of micro-batch a of step k is lora_step_dropout_seed(seed, k, a): a function
** of the run's seed and the position in the run only.
**
** Resuming a LoRA run (TrainOptions.lora_resume_path): the base is loaded as for a fresh run
** (init_path, or a fresh cfg from the seed) and must be the one the run started from (its config
** and the crc32 of its fp32 parameters, checkpoint.h's LoRA training state); the adapter, its
** moments and the TrainState come from the file, and the LoRA config, int8, seed, batch, seq,
** accum, order, val_frac and the training split (JSON-lines examples: the training rows, as
** rendered, masked and truncated) must equal the saved ones (refused otherwise, naming the field). trainer_save of a LoRA run writes that state.
*/
#ifndef ANETRAIN_TRAINER_H
#define ANETRAIN_TRAINER_H

#include <stdint.h>

#include "../backend/backend.h"
#include "../data/examples.h"
#include "../data/loader.h"
#include "../data/tokfile.h"
#include "../model/lora.h"
#include "../model/params.h"
#include "checkpoint.h"
#include "optim.h"

/* Loss scaling for fp16 backends: the loss gradient is multiplied by the scale so small
** gradients survive fp16, and the weight gradients are divided by it before the update. */
typedef enum { LOSS_SCALE_OFF = 0, LOSS_SCALE_FIXED = 1, LOSS_SCALE_DYNAMIC = 2 } LossScaling;

typedef struct {
    /* model: exactly one source. resume_path set => continue that checkpoint (moments, state). */
    ModelConfig cfg;          /* used when init_path and resume_path are NULL (fresh init) */
    const char *init_path;    /* checkpoint, llama2.c .bin or HF directory: weights only */
    const char *resume_path;  /* our checkpoint with moments and state (full training only) */
    const char *lora_resume_path; /* LoRA runs: the training state (trainer_save) to continue */
    /* data */
    const char *data_path;
    double val_frac;
    LoaderOrder order;
    int batch, seq, accum; /* seq 0: min(256, the model's max_seq_len) */
    /* optimization */
    long steps, warmup;
    float lr, min_lr, clip;
    AdamWConfig adam;
    uint64_t seed;
    /* evaluation */
    int eval_batches; /* validation batches per evaluation; 0 = the whole split */
    /* loss scaling: DYNAMIC halves the scale and skips the step on inf/NaN gradients, and
    ** doubles it after loss_scale_window clean steps (as torch.cuda.amp.GradScaler) */
    LossScaling loss_scaling;
    float loss_scale_init;
    int loss_scale_window;
    /* execution: "cpu" (fp32 reference) or "ane" (MIL kernels on an ANE device, with `ane`);
    ** read with backend_kind_parse */
    const char *backend;
    AneBackendOptions ane;
    /* LoRA: rank 0 (the zeroed default) trains every parameter; rank > 0 trains an adapter
    ** with this config on the frozen model (needs init_path or a fresh cfg; no resume_path:
    ** lora_resume_path continues a LoRA run) */
    LoraConfig lora;
    /* 1: the frozen base's seven layer matrices as int8 (LoRA runs on the cpu backend only:
    ** int8 weights cannot train) */
    int int8;
    /* Fine-tuning examples (data/examples.h) instead of data_path's token stream: train_examples
    ** set, each batch is B examples, one per row (ExampleBatches: padded, sorted by length,
    ** batches shuffled per epoch), and each step's loss and gradients are the mean over its
    ** counted targets (train/masked.h; mask_prompt: completion tokens only). valid_examples
    ** (NULL: the last val_frac of train_examples, if val_frac > 0) validates, with the same mean.
    ** Not owned; they must outlive the trainer. A resume (lora_resume_path) needs the same rows:
    ** the state holds their counted targets and crc32 (Trainer.train_rows_crc32). */
    const RenderedExamples *train_examples, *valid_examples;
    const char *valid_path; /* the validation examples' file, for messages */
    int mask_prompt;
    /* Data parallel: 1 sends the gradients between the ranks as bf16 (dist_sum_bf16: half the
    ** bytes; each rank's gradients and their sum rounded to bf16), 0 (default) as fp32
    ** (dist_sum_f32). Nothing changes in one process. */
    int grad_comm_bf16;
} TrainOptions;

typedef struct {
    TrainOptions opt;
    ParamLayout layout;
    float *params, *grads, *m, *v; /* each layout.n_floats */
    Backend *backend;
    TokFile data;
    Loader loader;
    TrainState state;
    int32_t *inputs, *targets; /* [B][T] */
    /* LoRA runs only (all NULL otherwise): the adapter's layout, and the adapter, its gradients
    ** and AdamW moments [lora.n_floats each]; lora_optim is the adapter's one-tensor layout for
    ** adamw_step. grads, m and v are NULL in LoRA runs. */
    LoraLayout lora;
    ParamLayout lora_optim;
    float *adapter, *adapter_grads, *adapter_m, *adapter_v;
    /* TrainOptions.int8: the base's int8 matrices (has_int8 1) and the fp32 bytes released */
    Int8Weights int8;
    int has_int8;
    size_t int8_released_bytes;
    /* LoRA runs: ckpt_crc32_words of the frozen base's fp32 parameters, as loaded */
    uint32_t base_crc32;
    /* TrainOptions.train_examples: its training rows and (has_valid_rows) validation rows; the
    ** micro-batch counter is loader.state.rows / batch */
    int has_examples, has_valid_rows;
    ExampleBatches train_rows, valid_rows;
    /* ... and what a LoRA training state records of the training rows (the examples' stand-in for
    ** the token stream's length and crc32): their counted targets, and ckpt_crc32_words over every
    ** sorted row's inputs [T] then targets [T] (ids, masking, truncation, padding and order) */
    uint64_t train_rows_counted;
    uint32_t train_rows_crc32;
    /* Data parallel (util/dist.h, set by trainer_init): this process's rank and the number of
    ** processes; micro_losses [world*accum + accum]: the step's micro-batch losses of every rank
    ** in global order, then this rank's own (world > 1 only, else NULL). */
    int rank, world;
    double *micro_losses;
} Trainer;

/* What one optimizer step did. */
typedef struct {
    long step;         /* 1-based number of the step just taken */
    double loss;       /* mean over its accum micro-batches */
    float lr;
    double grad_norm;  /* before clipping (unscaled); inf or NaN when skipped */
    long long tokens;  /* tokens seen so far in the run */
    float loss_scale;  /* the scale this step ran with */
    int skipped;       /* 1: inf/NaN gradients, weights untouched, scale halved */
    double t_optim;    /* seconds in the gradient norm and AdamW */
    double t_comm;     /* seconds in the ranks' gradient and loss reduction (0 in one process) */
} StepStats;

/* The defaults of a training run, in one place (`train`'s flags start from them; `finetune`
** changes a few): no model source, no data; val_frac 0.05, random order, batch 8, seq 256,
** accum 1, 1000 steps, warmup 0, lr 5e-4, min_lr 0, clip 1, AdamW (0.9, 0.95, 1e-8, weight decay
** 0.1), seed 1337, 20 validation batches, loss scaling off (initial scale 65536, window 1000),
** backend "cpu" with backend_ane_default_options, no LoRA, fp32. */
void train_options_default(TrainOptions *opt);

int trainer_init(Trainer *tr, const TrainOptions *opt, Err *err);
void trainer_free(Trainer *tr);
/* One optimizer step over `accum` micro-batches.
**
** Data parallel (world N > 1 processes, mpirun): the step is one of a single process with
** accum N x accum (loader.h says which rows each rank reads; rank r's micro-batch a is the global
** micro-batch g = r*accum + a, whose LoRA dropout seed is lora_step_dropout_seed(seed, step, g)).
** Each rank's micro-batches scale the loss gradient by loss_scale / (N*accum); the gradients
** (full training: all of them; LoRA: the adapter's) are then summed over the ranks in fp32, in
** rank order (dist_sum_f32, or dist_sum_bf16 with grad_comm_bf16: the same bits on every rank),
** before the norm, clipping and AdamW, so
** every rank applies the same update; an overflow (dynamic loss scaling) on any rank skips the
** step on all. The step's loss is the mean of all N*accum micro-batch losses, added in global
** order as the single process adds them, and tokens count the global batch. Its losses equal
** the single process's `--accum N*accum` run at the first step bit for bit; after that, within
** fp32 rounding: a rank's gradient starts from zero where the single process's micro-batch
** adds onto the previous ones' sum, so the additions associate differently. */
int trainer_step(Trainer *tr, StepStats *stats, Err *err);
/* 1 when the run has a validation split (windows of a token stream, or validation examples). */
int trainer_has_validation(const Trainer *tr);
/* Data parallel: compares the crc32 of the trained weights (full training: the parameters; LoRA:
** the adapter, and the frozen base's crc32 from trainer_init) across the ranks; fails, naming the
** first rank whose crc differs from rank 0's, when they no longer hold the same model. Every rank
** must call it at the same step. Nothing to compare (returns 0) in one process. */
int trainer_check_ranks(Trainer *tr, Err *err);
/* Mean loss over the validation split (or eval_batches batches of it), in windows of --seq
** tokens through the trainer's backend (examples: their rows, the mean over the counted
** targets). Fails if there is no split. */
int trainer_eval(Trainer *tr, double *val_loss, Err *err);
/* The same with windows of T tokens through `be` (created for batch x T), with inputs and
** targets holding batch x T ids: validation at another length (train --eval-seq). */
int trainer_eval_with(Trainer *tr, Backend *be, int T, int32_t *inputs, int32_t *targets, double *val_loss,
                      Err *err);
/* The mean loss over the counted targets of every example of r (a test set: rows as the
** training's, same --seq, --batch and masking) through the trainer's backend; *rows receives
** the rows' counts (kept, truncated, dropped, counted; no memory is left in it). */
int trainer_eval_examples(Trainer *tr, const RenderedExamples *r, const char *name, double *loss,
                          ExampleBatches *rows, Err *err);
/* Writes the resumable checkpoint (params, moments, state) to path; for a LoRA run, its LoRA
** training state (adapter, its moments, state, identity of the base; checkpoint.h). */
int trainer_save(Trainer *tr, const char *path, Err *err);
/* LoRA runs: writes the adapter as a PEFT directory (lora_save); base_model names the base. */
int trainer_save_adapter(Trainer *tr, const char *dir, const char *base_model, Err *err);
/* Bytes of gradients the ranks sum per step (full training: every parameter's; LoRA: the
** adapter's), at the exchange's precision: 4 (fp32) or 2 (grad_comm_bf16) bytes a value. Each
** process sends, and receives, 2 (N-1)/N of it (util/dist.c). */
size_t trainer_comm_bytes(const Trainer *tr);
/* Bytes of optimizer state (AdamW m and v) the run holds: 2 x 4 x (trainable parameters). */
size_t trainer_optimizer_bytes(const Trainer *tr);

/* The LoRA dropout seed (StepArgs.dropout_seed) of micro-batch `micro` of step `step` (0-based)
** of a run seeded `seed`:  sm(sm(sm(seed ^ 0x6c6f7261) ^ step) ^ micro)  with splitmix64's
** output function sm (lora.h). */
uint64_t lora_step_dropout_seed(uint64_t seed, uint64_t step, int micro);

#endif
