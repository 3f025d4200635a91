/*
** lora.h — low-rank adapters (LoRA) on a frozen base model, in PEFT's convention.
**
** A targeted weight matrix W [out][in] of every layer computes with
**
**     W_eff = W + s * B A        A [r][in], B [out][r], s = alpha / r  (rsLoRA: alpha / sqrt(r))
**
** as PEFT's LoraLayer (lora_A, lora_B, scaling). A fresh adapter is initialized as PEFT's
** default: A Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)); B zeros, so the
** adapted model starts exactly as the base. Targets are the seven matrices of a layer:
**
**     module  q     k     v     o     gate  up    down
**     base    wq    wk    wv    wo    w1    w3    w2
**     PEFT    self_attn.{q,k,v,o}_proj       mlp.{gate,up,down}_proj
**
** How a step trains it: the backend (backend_*_create_frozen with a FrozenBase) takes the
** adapter and computes each targeted linear as y = W x + s B A drop(x), with the gradients of A
** and B alone (see backend/cpu.c, backend/ane/kernels.c); drop is LoRA dropout, a pure function
** of a seed and the position (lora_dropout_mask below; both backends).
** The merged form is kept as the reference the tests check the backends against: lora_merge
** writes W_eff of every targeted matrix into a copy of the parameters, a full-training backend
** returns the full gradient dL/dW_eff, and lora_grad (train/lora_grad.h) projects it onto the
** adapter:
**
**     dA = s Bᵀ dW        dB = s dW Aᵀ        (BLAS, per layer and module)
**
** All adapter tensors are one contiguous fp32 buffer with named views (like params.h), so
** the adapter's gradients and AdamW moments are each one buffer of the same layout:
**
**     for each targeted module m, in the order above:   A_m [L][r][in_m],  then  B_m [L][out_m][r]
**
** Files: PEFT's adapter directory, io/peft.h. The gradient projection and the optimizer's view
** of the adapter are training's: train/lora_grad.h.
*/
#ifndef ANETRAIN_MODEL_LORA_H
#define ANETRAIN_MODEL_LORA_H

#include <stddef.h>

#include "params.h"
#include "../util/err.h"
#include "../util/rng.h"

#define LORA_MAX_RANK 4096 /* the largest r lora_layout and the PEFT loader accept */

typedef enum { LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_MODULES } LoraModule;

#define LORA_ALL ((1u << LORA_MODULES) - 1) /* every module's bit */

typedef struct {
    int rank;          /* r; 0 means no adapter (full training) */
    float alpha;       /* lora_alpha */
    float dropout;     /* lora_dropout: p of the dropout on the adapter path's input (lora_dropout_mask) */
    int rslora;        /* 1: s = alpha / sqrt(r) (PEFT use_rslora) instead of alpha / r */
    unsigned targets;  /* bit m set: module m is adapted in every layer */
} LoraConfig;

/* One adapted module: the base matrix it adapts and where its A and B live in the buffer. */
typedef struct {
    int present;
    TensorKind base;   /* T_WQ, T_WK, T_WV, T_WO, T_W1, T_W3 or T_W2 */
    int out, in;       /* the base matrix's rows and columns */
    size_t a_offset;   /* A: [L][r][in] floats from the start of the adapter buffer */
    size_t b_offset;   /* B: [L][out][r] */
    size_t base_offset;/* this module's frozen base copy [L][out][in] in the base buffer */
} LoraTensor;

typedef struct {
    LoraConfig cfg;
    ModelConfig model;    /* the base model (shapes, RoPE style of the buffers) */
    float scale;          /* s */
    LoraTensor t[LORA_MODULES];
    size_t n_floats;      /* adapter buffer length (= trainable parameters) */
    size_t n_base_floats; /* frozen copy of the targeted base matrices (lora_base_copy) */
} LoraLayout;

/* "q", "k", ... and PEFT's "q_proj", ... */
const char *lora_module_name(LoraModule m);
const char *lora_module_peft_name(LoraModule m);
/* The module's path inside a HF decoder layer: "self_attn.q_proj", ..., "mlp.down_proj". */
const char *lora_module_hf_path(LoraModule m);
/* The module called name[0..len) (ours, "q", or PEFT's, "q_proj"), or -1. */
int lora_module_by_name(const char *name, size_t len);

/* Parses a comma-separated target list: q k v o gate up down, PEFT's names (q_proj, ...), or
** the groups attn (q,k,v,o), mlp (gate,up,down) and all. */
int lora_parse_targets(const char *list, unsigned *targets, Err *err);
/* "q,k,v,o" into buf. */
void lora_targets_format(unsigned targets, char *buf, size_t size);

/* Lays out the adapter of cfg on the model. Checks rank (1..4096), alpha (> 0), dropout in
** [0, 1) and targets (at least one). `what` names the source for messages ("--lora-rank" or a
** file). */
int lora_layout(LoraLayout *lo, const ModelConfig *model, const LoraConfig *cfg, const char *what, Err *err);

/* LoRA dropout (PEFT: nn.Dropout(p) on the adapter path's input, x -> A drop(x)), as a pure
** function so that nothing is stored and a step is reproducible from its seed. Element (c, t)
** (channel c, position t) of sequence `sequence`'s input to module m of layer `layer` is
**
**     h = sm(sm(sm(seed) ^ K1) ^ K2)      K1 = layer << 40 | m << 32 | sequence
**                                         K2 = c << 32 | t
**     sm(z) = splitmix64's output from state z: z += 0x9e3779b97f4a7c15;
**             z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9; z = (z ^ z >> 27) * 0x94d049bb133111eb;
**             z ^ z >> 31
**     dropped iff (h >> 40) < p * 2^24   (the top 24 bits as a uniform in [0, 1))
**
** and the mask value is 0 when dropped, else 1/(1-p) computed in float (inverted dropout, as
** PyTorch). p = 0 keeps every element with multiplier 1. `sequence` is the index within the
** micro-batch; seed is the step's StepArgs.dropout_seed. Each module has its own mask even
** where modules share an input (q, k, v), as PEFT's per-module dropout layers. */
uint64_t lora_splitmix(uint64_t z); /* sm above */
uint64_t lora_dropout_hash(uint64_t seed, int layer, LoraModule m, int sequence, int channel, int position);
/* Rows [c0, c1) of the mask [In][T] of (seed, layer, m, sequence) with probability p, as above. */
void lora_dropout_mask(float *mask, uint64_t seed, int layer, LoraModule m, int sequence, int c0, int c1, int T,
                       float p);

/* Views: A [r][in] and B [out][r] of module m in layer l. */
float *lora_A(const LoraLayout *lo, float *adapter, LoraModule m, int layer);
float *lora_B(const LoraLayout *lo, float *adapter, LoraModule m, int layer);

/* PEFT's default init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (Kaiming-uniform, a = sqrt(5)), B = 0. */
void lora_init(const LoraLayout *lo, float *adapter, Rng *rng);

/* Copies the targeted matrices of params into base [n_base_floats] (the frozen originals). */
void lora_base_copy(const LoraLayout *lo, const ParamLayout *pl, const float *params, float *base);

/* The working buffer for a step: every targeted matrix of params becomes base + s B A
** (sgemm on a copy of the frozen base). Other tensors of params are not touched. */
void lora_merge(const LoraLayout *lo, const ParamLayout *pl, const float *base, const float *adapter, float *params);

/* params += s B A for every targeted matrix, in place (merging for export or inference). */
void lora_merge_into(const LoraLayout *lo, const ParamLayout *pl, float *params, const float *adapter);

#endif
