/*
** test_models.h — the small models the ANE tests run (test_ane_step, test_ane_lora,
** test_ane_int8_base): the three tiny variants (Llama MHA, Llama GQA untied, Qwen3), their
** weights at llama2.c's init or at unit variance, random tokens, LoRA target sets and adapters,
** and the shared tolerances. Header-only (static), included after test.h.
*/
#ifndef ANETRAIN_TEST_MODELS_H
#define ANETRAIN_TEST_MODELS_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "model/config.h"
#include "model/lora.h"
#include "model/params.h"
#include "util/rng.h"

/* |loss_ane - loss_cpu| <= LOSS_TOL(loss): measured at most 3.3e-3 at a loss of 45.6 (unit-variance
** weights give large logits) and 3e-4 near 6.2 (llama2.c init). */
#define LOSS_TOL(ref) (1e-3 + 2e-4 * fabs(ref))

typedef struct {
    const char *name, *preset;
    int tied, n_kv_heads;
    RopeStyle rope;
} Variant;

static const Variant variants[] = {
    {"tiny Llama (MHA 4/4, tied, interleaved)", "tiny", 1, 4, ROPE_INTERLEAVED},
    {"tiny Llama GQA 4/2, untied, rotate-half", "tiny", 0, 2, ROPE_HALF},
    {"tiny-qwen3 (GQA 4/2, q/k-norm, D=32)", "tiny-qwen3", 1, 2, ROPE_HALF},
};

/* A LoRA configuration the tests sweep. */
typedef struct {
    const char *targets;
    int rank;
    float alpha;
    int rslora;
} Targets;

static const Targets target_sets[] = {
    {"attn", 8, 16.0f, 0},
    {"all", 4, 8.0f, 1},
    {"mlp", 8, 16.0f, 0},
};

static inline float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof *p);
    if (!p) abort();
    return p;
}

static inline void make_layout(ParamLayout *lay, const Variant *v) {
    ModelConfig cfg;
    Err err = {{0}};
    config_from_preset(&cfg, v->preset, &err);
    cfg.tied = v->tied;
    cfg.n_kv_heads = v->n_kv_heads;
    cfg.rope_style = v->rope;
    params_layout(lay, &cfg);
}

/* llama2.c's init (unit 0), or unit-variance activations through every matrix (unit 1, as
** test_model_grad), norm weights near 1. */
static inline float *make_params(const ParamLayout *lay, int unit, uint64_t seed) {
    float *p = falloc(lay->n_floats);
    Rng rng;
    rng_seed(&rng, seed);
    params_init(lay, p, &rng);
    if (!unit) return p;
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &lay->t[k];
        if (!t->present) continue;
        float *x = p + t->offset;
        int is_norm = t->rows == 1;
        double sd = is_norm ? 0.1 : (k == T_TOK_EMB || k == T_WCLS ? 1.0 : 1.0 / sqrt((double)t->cols));
        for (size_t i = 0; i < t->numel; i++) x[i] = (float)((is_norm ? 1.0 : 0.0) + sd * rng_normal(&rng));
    }
    return p;
}

static inline void make_tokens(int32_t *in, int32_t *tg, int n, int V, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) in[i] = (int32_t)rng_below(&rng, (uint64_t)V);
    for (int i = 0; i < n; i++) tg[i] = (int32_t)rng_below(&rng, (uint64_t)V);
}

static inline void make_layout_lora(LoraLayout *lo, const ParamLayout *lay, const Targets *ts) {
    LoraConfig c = {ts->rank, ts->alpha, 0.0f, ts->rslora, 0};
    Err err = {{0}};
    CHECK(lora_parse_targets(ts->targets, &c.targets, &err) == 0, "%s", err.msg);
    CHECK(lora_layout(lo, &lay->cfg, &c, "test", &err) == 0, "%s", err.msg);
}

/* PEFT's init for A, and B ~ N(0, b_sd) so the adapter path is not zero. */
static inline float *make_adapter(const LoraLayout *lo, uint64_t seed, double b_sd) {
    float *a = falloc(lo->n_floats);
    Rng rng;
    rng_seed(&rng, seed);
    lora_init(lo, a, &rng);
    for (int m = 0; m < LORA_MODULES; m++) {
        if (!lo->t[m].present) continue;
        for (int l = 0; l < lo->model.n_layers; l++) {
            float *B = lora_B(lo, a, (LoraModule)m, l);
            for (int i = 0; i < lo->t[m].out * lo->cfg.rank; i++) B[i] = (float)(b_sd * rng_normal(&rng));
        }
    }
    return a;
}

/* Bytes one layer's base takes in its ANE surface as fp16: the norm weights, the seven matrices
** (over an int8 base their int8 values, one fp16 each) and, over an int8 base, one scale per
** output row of each matrix. */
static inline uint64_t base_bytes_per_layer(const ParamLayout *lay, int int8) {
    static const TensorKind norms[] = {T_RMS_ATT, T_RMS_FFN, T_Q_NORM, T_K_NORM};
    static const TensorKind matrices[] = {T_WQ, T_WK, T_WV, T_WO, T_W1, T_W3, T_W2};
    uint64_t n = 0;
    for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++)
        if (lay->t[norms[i]].present) n += (uint64_t)lay->t[norms[i]].cols;
    for (size_t i = 0; i < sizeof matrices / sizeof matrices[0]; i++) {
        const TensorSpec *t = &lay->t[matrices[i]];
        n += (uint64_t)t->rows * t->cols + (int8 ? (uint64_t)t->rows : 0);
    }
    return 2 * n;
}

static inline double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb ? 1 : 0);
}

#endif
