/*
** params.h — one contiguous fp32 buffer for all parameters, with named views.
**
** The same layout serves parameters, gradients and each AdamW moment, so clipping,
** checkpointing and the optimizer are single loops over one buffer. The order follows
** llama2.c's checkpoint (all layers of one kind together), then the extras:
**
**   tok_emb   [V][C]
**   rms_att   [L][C]
**   wq        [L][H*D][C]       weight matrices are [out][in] row-major,
**   wk        [L][KV*D][C]      as in llama2.c and safetensors files
**   wv        [L][KV*D][C]
**   wo        [L][C][H*D]
**   rms_ffn   [L][C]
**   w1        [L][F][C]         gate (HF gate_proj)
**   w2        [L][C][F]         down (HF down_proj)
**   w3        [L][F][C]         up   (HF up_proj)
**   rms_final [C]
**   wcls      [V][C]            only when untied; otherwise wcls views tok_emb
**   q_norm    [L][D]            only with qk_norm (Qwen3)
**   k_norm    [L][D]
*/
#ifndef ANETRAIN_PARAMS_H
#define ANETRAIN_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "../util/rng.h"
#include "config.h"

typedef enum {
    T_TOK_EMB, T_RMS_ATT, T_WQ, T_WK, T_WV, T_WO, T_RMS_FFN, T_W1, T_W2, T_W3,
    T_RMS_FINAL, T_WCLS, T_Q_NORM, T_K_NORM, T_COUNT
} TensorKind;

/* One kind of tensor in the buffer: `layers` stacked copies of a [rows][cols] matrix
** (a vector has rows == 1). `present` is 0 for wcls when tied and the norms without qk_norm. */
typedef struct {
    const char *name;  /* our short name, e.g. "wq" */
    int present;
    int layers;        /* 1 for tensors outside the layer stack */
    int rows, cols;
    size_t offset;     /* in floats from the start of the buffer */
    size_t numel;      /* layers * rows * cols */
    int decay;         /* 1: AdamW weight decay applies (matrices and embeddings, as llama2.c) */
} TensorSpec;

typedef struct {
    ModelConfig cfg;
    TensorSpec t[T_COUNT];
    size_t n_floats; /* total length of the buffer */
} ParamLayout;

/* Typed views into one buffer laid out by a ParamLayout. Layer l of wq is wq + l*H*D*C. */
typedef struct {
    float *tok_emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3;
    float *rms_final, *wcls, *q_norm, *k_norm;
} ParamViews;

/* The seven weight matrices of a layer, in the order HF lists a decoder layer's projections
** (q k v o gate up down), which is also LoRA's module order (lora.h: module m adapts matrix m)
** and the ANE plan's (backend/ane/kernels.h). This table is the one place that order is written:
**
**     m   name  shape        HF
**     0   wq    [H*D][C]     self_attn.q_proj
**     1   wk    [KV*D][C]    self_attn.k_proj
**     2   wv    [KV*D][C]    self_attn.v_proj
**     3   wo    [C][H*D]     self_attn.o_proj
**     4   w1    [F][C]       mlp.gate_proj
**     5   w3    [F][C]       mlp.up_proj
**     6   w2    [C][F]       mlp.down_proj
** (the buffer itself stores them in llama2.c's order, above).
*/
enum { LAYER_MATRICES = 7 };
typedef struct {
    const char *name; /* "wq", ... (the TensorSpec's name) */
    TensorKind kind;  /* T_WQ, ... */
    size_t view;      /* offsetof(ParamViews, wq), ...: where its [L][rows][cols] view is */
} LayerMatrix;

extern const LayerMatrix layer_matrices[LAYER_MATRICES];

/* The shape [rows][cols] of matrix m (one layer's) of a model with config cfg. */
void layer_matrix_shape(const ModelConfig *cfg, int m, int *rows, int *cols);
/* Layer `layer` of matrix m in the views v: [rows][cols] (layer_matrix_shape). */
float *layer_matrix(const ParamViews *v, const ModelConfig *cfg, int m, int layer);
/* Index m of kind k in layer_matrices, or -1 if k is not a layer matrix. */
int layer_matrix_of_kind(TensorKind k);

void params_layout(ParamLayout *layout, const ModelConfig *cfg);
void params_views(const ParamLayout *layout, float *base, ParamViews *views);

/* Pointer to layer `layer` of tensor kind k inside base (layer 0 for non-layer tensors). */
float *params_tensor(const ParamLayout *layout, float *base, TensorKind k, int layer);

/* Initializes as llama2.c's model.py: N(0, 0.02) for matrices and the embedding,
** N(0, 0.02/sqrt(2L)) for wo and w3, ones for every norm weight. */
void params_init(const ParamLayout *layout, float *base, Rng *rng);

#endif
