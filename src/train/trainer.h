/*
** trainer.h — owns the order of a training step.
**
**   batch [B][T] from the loader
**     -> backend step (forward, loss, backward) per micro-batch, gradients accumulated
**     -> global-norm clipping -> AdamW on the fp32 master weights
**     -> now and then: validation loss, checkpoint
**
** The trainer never prints and never exits: the CLI (cli/train.c) drives it step by step
** and decides what the user sees. Everything is allocated in trainer_init.
**
** LoRA fine-tuning (TrainOptions.lora.rank > 0, see lora.h): the base model is frozen and
** only the adapter trains. params is then the working buffer the backend runs on, whose
** targeted matrices are W + s B A (refreshed after every update from the frozen copy
** lora_base); the backend's full gradient is projected onto the adapter; the norm, clipping
** and AdamW see only the adapter's gradients; the AdamW moments exist for the adapter alone
** (m and v stay NULL). Loss scaling and accumulation work as in full training.
** On the ANE backend the adapter is not merged for the step: the backend runs over a frozen base
** (backend_ane_create_frozen) on frozen_params, a copy of the base, with the adapter passed as
** is, and returns the adapter's gradients itself (no full gradient buffer: grads is NULL);
** params is still kept merged, for validation and everything else that reads it.
*/
#ifndef ANETRAIN_TRAINER_H
#define ANETRAIN_TRAINER_H

#include <stdint.h>

#include "../backend/backend.h"
#include "../data/loader.h"
#include "../data/tokfile.h"
#include "../model/params.h"
#include "checkpoint.h"
#include "lora.h"
#include "optim.h"

/* Loss scaling for fp16 backends: the loss gradient is multiplied by the scale so small
** gradients survive fp16, and the weight gradients are divided by it before the update. */
typedef enum { LOSS_SCALE_OFF = 0, LOSS_SCALE_FIXED = 1, LOSS_SCALE_DYNAMIC = 2 } LossScaling;

typedef struct {
    /* model: exactly one source. resume_path set => continue that checkpoint (moments, state). */
    ModelConfig cfg;          /* used when init_path and resume_path are NULL (fresh init) */
    const char *init_path;    /* checkpoint, llama2.c .bin or HF directory: weights only */
    const char *resume_path;  /* our checkpoint with moments and state */
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
    /* execution: "cpu" (fp32 reference) or "ane" (MIL kernels on an ANE device, with `ane`) */
    const char *backend;
    AneBackendOptions ane;
    /* LoRA: rank 0 (the zeroed default) trains every parameter; rank > 0 trains an adapter
    ** with this config on the frozen model (needs init_path or a fresh cfg; no resume_path) */
    LoraConfig lora;
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
    /* LoRA runs only (all NULL otherwise): the adapter's layout, the frozen copies of the
    ** targeted matrices [lora.n_base_floats], and the adapter, its gradients and AdamW moments
    ** [lora.n_floats each]; lora_optim is the adapter's one-tensor layout for adamw_step. */
    LoraLayout lora;
    ParamLayout lora_optim;
    float *lora_base, *adapter, *adapter_grads, *adapter_m, *adapter_v;
    float *frozen_params; /* LoRA on the ANE backend: the base [layout.n_floats] its steps run on */
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
} StepStats;

int trainer_init(Trainer *tr, const TrainOptions *opt, Err *err);
void trainer_free(Trainer *tr);
/* One optimizer step over `accum` micro-batches. */
int trainer_step(Trainer *tr, StepStats *stats, Err *err);
/* Mean loss over the validation split (or eval_batches batches of it), in windows of --seq
** tokens through the trainer's backend. Fails if there is no split. */
int trainer_eval(Trainer *tr, double *val_loss, Err *err);
/* The same with windows of T tokens through `be` (created for batch x T), with inputs and
** targets holding batch x T ids: validation at another length (train --eval-seq). */
int trainer_eval_with(Trainer *tr, Backend *be, int T, int32_t *inputs, int32_t *targets, double *val_loss,
                      Err *err);
/* Writes the resumable checkpoint (params, moments, state) to path. Not for LoRA runs. */
int trainer_save(Trainer *tr, const char *path, Err *err);
/* LoRA runs: writes the adapter as a PEFT directory (lora_save); base_model names the base. */
int trainer_save_adapter(Trainer *tr, const char *dir, const char *base_model, Err *err);
/* Bytes of optimizer state (AdamW m and v) the run holds: 2 x 4 x (trainable parameters). */
size_t trainer_optimizer_bytes(const Trainer *tr);

/* Creates the backend `name` ("cpu" or "ane") for max_B x max_T; ane may be NULL (defaults). */
Backend *backend_create(const char *name, const ParamLayout *layout, int max_B, int max_T,
                        const AneBackendOptions *ane, Err *err);

/* Loads weights from any model file anetrain reads (checkpoint, llama2.c .bin, HF directory).
** Used by train --init, eval, convert and sample. */
int model_load_any(const char *path, ParamLayout *layout, float **params, Err *err);

#endif
