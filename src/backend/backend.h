/*
** backend.h — the seam between the trainer and whatever executes the model.
**
** A backend runs one micro-batch: the forward pass, the loss, and (when gradients are
** asked for) the backward pass, accumulating parameter gradients into the one gradient
** buffer laid out like the parameters. The trainer owns everything around it: data,
** accumulation, clipping, the optimizer, checkpoints. Backends: "cpu" (fp32 reference,
** backend/cpu.c) and "ane" (MIL kernels on an ANE device, backend/ane/ane.c).
*/
#ifndef ANETRAIN_BACKEND_H
#define ANETRAIN_BACKEND_H

#include <stdint.h>

#include "../model/params.h"
#include "../model/quant.h"
#include "../model/lora.h"
#include "../util/err.h"
#include "ane/device.h"

typedef struct Backend Backend;

/* The kinds of backend: the fp32 reference on the CPU, or MIL kernels on an ANE device. */
typedef enum { BACKEND_CPU = 0, BACKEND_ANE = 1 } BackendKind;

/* The one parser of a backend's name (--backend, TrainOptions.backend): "cpu" or "ane"; NULL is
** "cpu". Anything else fails with "expected cpu or ane, found '<s>'". */
int backend_kind_parse(const char *s, BackendKind *out, Err *err);
/* "cpu" or "ane". */
const char *backend_kind_name(BackendKind kind);

/* Efficiency counters of a backend, cumulative since it was created (a caller wanting per-step
** figures takes the difference of two snapshots). FLOPs count matmul-class work only (2 per
** multiply-add, as config_train_flops_per_seq); elementwise work is not counted. Times are
** wall-clock seconds on the thread that called step, except t_dw (the dW worker's busy time,
** which overlaps the others when the worker runs concurrently). */
typedef struct {
    uint64_t steps;           /* step() calls */
    uint64_t evaluations;     /* device evaluations (kernel dispatches) */
    uint64_t bytes_staged;    /* bytes the CPU wrote into device input surfaces (weights + activations) */
    uint64_t bytes_staged_weights; /* the weight part of bytes_staged */
    uint64_t bytes_read;      /* bytes the CPU read back from device output surfaces */
    uint64_t device_bytes_in, device_bytes_out; /* surface bytes the device read / wrote in evaluations */
    double flops_device, flops_cpu;
    uint64_t compiles, compile_failures;
    double compile_seconds;
    double t_device;          /* inside device evaluate calls */
    double t_stage;           /* converting and copying into input surfaces, reading outputs back */
    double t_cpu_ops;         /* other CPU work of the step: embedding, norms, classifier, loss, ... */
    double t_dw;              /* weight-gradient GEMMs (busy time of the dW worker) */
    double t_dw_wait;         /* time step spent waiting for the dW worker (the part not overlapped) */
    double t_total;           /* wall time inside step */
} BackendStats;

/* One micro-batch for Backend.step.
**
** Full training: params is the parameter buffer (laid out by the backend's ParamLayout); grads is
** NULL (forward only) or receives grads += grad_scale * dloss/dparams.
** Fine-tuning with a frozen base (a backend created with a FrozenBase holding a LoraLayout, see
** backend_*_create): params is the frozen base and grads must be NULL; adapter [lora.n_floats] is
** the adapter the step computes with, and adapter_grads is NULL (forward only) or receives
** adapter_grads += grad_scale * dloss/dadapter. dropout_seed picks this micro-batch's LoRA dropout
** masks (a pure function of the seed and the position, so a step is reproducible: lora_dropout_mask
** in model/lora.h). Dropout acts in training steps (adapter_grads set) only; a forward-only step is
** evaluation, without dropout, as PyTorch's eval mode.
** ANE: the base is staged once, at the first step, and again only when params is another buffer
** (its contents must not change in place); adapter NULL (forward only) computes params alone,
** e.g. a merged model evaluated on the same backend (over an int8 base: the int8 matrices with
** params' other tensors).
** Masked losses: a target < 0 (TARGET_IGNORE) is an ignored position (padding, or a prompt token
** under --mask-prompt; PyTorch's ignore_index): its loss is 0 and it gets no gradient, but the
** step still divides by B*T. A caller wanting the mean over the N counted positions of a whole
** optimizer step rescales: *loss * B*T / N, and grad_scale * B*T / N (train/masked.h). */
#define TARGET_IGNORE (-1)

typedef struct {
    const float *params;
    float *grads;
    const float *adapter;
    float *adapter_grads;
    const int32_t *inputs, *targets; /* [B][T] token ids (< vocab, checked by the caller); targets < 0 ignored */
    int B, T;                        /* B <= max_B, T <= max_T */
    float grad_scale;
    float *logits;                   /* NULL, or receives the logits [B][V][T] (channel-first per sequence) */
    uint64_t dropout_seed;
} StepArgs;

struct Backend {
    const char *name;  /* for messages: "cpu", "ane (emulated device)", ... */
    BackendKind kind;  /* what executes the steps (a backend zeroed at creation is cpu) */
    /* Runs one micro-batch (StepArgs); *loss receives the cross-entropy summed over the counted
    ** positions (targets >= 0) and divided by B*T: the mean over the B*T positions when all count. */
    int (*step)(Backend *self, const StepArgs *args, double *loss, Err *err);
    void (*destroy)(Backend *self);
    /* Optional (NULL for cpu): fills *out with the counters above. */
    void (*stats)(Backend *self, BackendStats *out);
};

/* Backend.step for full training (or a forward pass): the common case in one call. */
static inline int backend_step(Backend *be, const float *params, float *grads, const int32_t *inputs,
                               const int32_t *targets, int B, int T, float grad_scale, double *loss, float *logits,
                               Err *err) {
    StepArgs a = {params, grads, NULL, NULL, inputs, targets, B, T, grad_scale, logits, 0};
    return be->step(be, &a, loss, err);
}

/* A frozen base, given to a backend at creation (NULL: every parameter trains, all fp32).
** lora: the adapter's layout; steps then compute every targeted matrix unmerged,
**     y = W x + s B A drop(x)     (drop: LoRA dropout on the adapter path's input, lora.cfg.dropout)
**   take the adapter in StepArgs, and accumulate gradients for the adapter only: no gradient of
**   any base tensor is computed, and no buffer for one exists.
** int8: the seven layer matrices as per-row int8 (model/quant.h), dequantized on the fly; the
**   fp32 copies of those matrices in StepArgs.params are then never read. Needs lora or
**   forward-only steps (int8 weights cannot train). The backend keeps the pointer: the
**   Int8Weights must outlive it and not change (ANE: read when the base is staged, at the first
**   step, into the device surfaces as int8 values and row scales; no fp32 copy is made). */
typedef struct {
    const LoraLayout *lora;
    const Int8Weights *int8;
} FrozenBase;

/* The one check of a step's arguments, run by every backend's step (backend: its name, for the
** message): params given; an adapter only when the backend was created over a LoRA base
** (has_lora), and given whenever adapter_grads is (a LoRA backend's step without an adapter is
** the base alone, forward only); no base gradient over a frozen base (LoRA or int8);
** 1 <= B <= max_B, 1 <= T <= max_T. */
int backend_step_args_check(const char *backend, const StepArgs *a, int has_lora, int int8, int max_B, int max_T,
                            Err *err);

/* Fails, naming `backend` and both shapes, when the adapter or the int8 base of frozen (which may
** be NULL) was made for a model whose layer shapes differ from layout's. */
int frozen_base_check(const FrozenBase *frozen, const ParamLayout *layout, const char *backend, Err *err);

/* The fp32 reference backend. Allocates every activation buffer for max_B x max_T now;
** nothing is allocated inside step. Per-thread scratch is sized for parallel_threads() at
** creation: step fails if the pool has grown since. */
Backend *backend_cpu_create(const ParamLayout *layout, int max_B, int max_T, Err *err);

/* Bytes the CPU backend would allocate for these sizes (for messages and --help). */
double backend_cpu_bytes(const ModelConfig *cfg, int max_B, int max_T);
/* The same over a frozen base (frozen may be NULL: backend_cpu_create). */
Backend *backend_cpu_create_frozen(const ParamLayout *layout, const FrozenBase *frozen, int max_B, int max_T,
                                   Err *err);

/* The ANE backend (backend/ane/ane.c): forward and backward-dx of every layer as MIL kernels
** with dynamic weights on an ANE device, weight gradients with BLAS on the CPU (in a worker
** thread overlapped with the device), classifier and loss on the CPU. */
typedef struct {
    const char *device;   /* "auto" (the real device where there is one, else the emulator), "emu", or
                          ** "darwin" (the real device; an error where it is not available) */
    int accumulate_fp32;  /* emulator: 1 (default) matmuls and sums accumulate in fp32; 0: rounded to
                          ** fp16 every 32 addends (a pessimistic model of fp16 accumulation) */
    int flush_subnormals; /* emulator: 1 flushes fp16 subnormal results to zero (default 0) */
    int compile_budget;   /* emulator: compiles allowed per process (default ANE_COMPILE_BUDGET_DEFAULT, as the real device) */
    int overlap_dw;       /* 1: dW GEMMs run in a worker thread while the device evaluates; 0: on the
                          ** calling thread after each layer's backward; -1 (default): 1 on a real
                          ** device, 0 on the emulator (whose device work already uses every core) */
    AneLimits limits;     /* the device limits every kernel is checked against before it compiles, on
                          ** both devices: ANE_LIMITS_STRICT (default) or ANE_LIMITS_PROBED
                          ** (docs/ane-facts.md §9; --ane-limits) */
    int plan_max_width;   /* the widest input surface the plan may use; 0 (default): the device's
                          ** 16384. Tests lower it to run the layouts of big models on small ones. */
} AneBackendOptions;

void backend_ane_default_options(AneBackendOptions *opt);

/* Programs backend_ane_create compiles (for any model: the layer forward and backward). */
#define ANE_BACKEND_COMPILES 2

/* Compiles so far in this process on any ANE device (emulated or real). The real device's
** compiler leaks resources and fails past about ANE_COMPILE_BUDGET_DEFAULT compiles per process, whatever was
** released; the emulator enforces the same budget. */
uint64_t backend_ane_process_compiles(void);

/* Compiles the kernels (ANE_BACKEND_COMPILES programs for any model) and allocates every surface and buffer for
** max_B sequences of up to max_T tokens; nothing is allocated inside step. opt may be NULL. */
Backend *backend_ane_create(const ParamLayout *layout, int max_B, int max_T, const AneBackendOptions *opt, Err *err);
/* The same over a frozen base (frozen may be NULL: backend_ane_create). */
Backend *backend_ane_create_frozen(const ParamLayout *layout, const FrozenBase *frozen, int max_B, int max_T,
                                   const AneBackendOptions *opt, Err *err);

/* Creates the backend `name` ("cpu" or "ane") for max_B x max_T; ane may be NULL (defaults). */
Backend *backend_create(const char *name, const ParamLayout *layout, int max_B, int max_T,
                        const AneBackendOptions *ane, Err *err);
/* The same over a frozen base (frozen may be NULL: backend_create). */
Backend *backend_create_frozen(const char *name, const ParamLayout *layout, const FrozenBase *frozen, int max_B,
                               int max_T, const AneBackendOptions *ane, Err *err);

#endif
