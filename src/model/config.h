/*
** config.h — the model is data, not code paths.
**
** One struct describes every model anetrain knows: the Llama-2 family (llama2.c's
** "stories" models and any HF Llama config) and Qwen3. They differ only in these
** fields. A config comes from a preset name, a HF config.json, a llama2.c header or
** our own checkpoint, and is always checked with config_validate before use.
*/
#ifndef ANETRAIN_CONFIG_H
#define ANETRAIN_CONFIG_H

#include "../util/err.h"

/* How RoPE pairs the channels of one head (D = head_dim):
**   ROPE_INTERLEAVED: (x[2i], x[2i+1]) rotate together — llama2.c and Meta checkpoints.
**   ROPE_HALF:        (x[i], x[i+D/2]) rotate together ("rotate_half") — HF Llama and Qwen3.
** Pair i turns by pos * theta^(-2i/D) in both; the two differ only in a fixed permutation
** of the rows of wq and wk (and of q_norm/k_norm), which import/export applies. */
typedef enum { ROPE_INTERLEAVED = 0, ROPE_HALF = 1 } RopeStyle;

typedef enum { FAMILY_LLAMA = 0, FAMILY_QWEN3 = 1 } ModelFamily;

typedef struct {
    ModelFamily family;
    int dim;          /* C: residual stream width (HF hidden_size) */
    int hidden_dim;   /* F: SwiGLU width (HF intermediate_size) */
    int n_layers;     /* L */
    int n_heads;      /* H: query heads */
    int n_kv_heads;   /* KV heads; H % KV == 0 (GQA when KV < H) */
    int head_dim;     /* D: per-head width; dim/n_heads for Llama, 128 for Qwen3 */
    int vocab_size;   /* V */
    int max_seq_len;  /* longest position the model is meant for (RoPE is computed, not tabled) */
    float rope_theta; /* 10000 for Llama-2, 1e6 for Qwen3 */
    float norm_eps;   /* RMSNorm epsilon: 1e-5 Llama-2, 1e-6 Qwen3 */
    int qk_norm;      /* 1: per-head RMSNorm on q and k before RoPE (Qwen3) */
    int tied;         /* 1: the classifier is the token embedding */
    RopeStyle rope_style;
} ModelConfig;

/* Fills cfg from a preset name: stories15m, stories42m, stories110m, qwen3-0.6b, and
** the small test shapes tiny (Llama MHA) and tiny-qwen3. Returns -1 for an unknown name
** (the message lists the known ones). */
int config_from_preset(ModelConfig *cfg, const char *name, Err *err);

/* Space-separated list of preset names, for --help. */
const char *config_preset_names(void);

/* Checks every field and their relations (positive sizes, H % KV == 0, even head_dim, ...).
** `source` names where the config came from (a file path or "preset X") for messages. */
int config_validate(const ModelConfig *cfg, const char *source, Err *err);

/* One line such as "llama dim=288 hidden=768 layers=6 heads=6/6 head_dim=48 vocab=32000 ...". */
void config_describe(const ModelConfig *cfg, char *buf, int size);

/* Parameter count (classifier counted once when tied). */
long long config_param_count(const ModelConfig *cfg);

/* FLOPs of one forward+backward over T tokens of one sequence (matmuls and attention). */
double config_train_flops_per_seq(const ModelConfig *cfg, int T);

/* 1 if a and b describe the same model (every field equal). */
int config_equal(const ModelConfig *a, const ModelConfig *b);
/* Describes the first field where `found` differs from `expected` as
** "field dim: expected 288, found 512"; returns 0 (and writes "") when they are equal.
** With size 0, buf may be NULL and nothing is written (only the answer). */
int config_difference(const ModelConfig *expected, const ModelConfig *found, char *buf, int size);

const char *config_family_name(ModelFamily f);
const char *config_rope_style_name(RopeStyle s);

#endif
