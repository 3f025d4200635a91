/*
** lora.c — LoRA adapters on the model: names, layout, init, dropout masks, views, merge
** (see lora.h). The adapter's files are io/peft.c; its gradient and optimizer view are
** train/lora_grad.c.
**
** This module never touches the frozen base except through the copy lora_base_copy makes and
** the working buffer lora_merge writes (the merged reference form, lora.h). The dropout masks
** are defined here (lora.h).
*/
#include "lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/blas.h"

/* ================================================================ names and layout */

static const char *const module_names[LORA_MODULES] = {"q", "k", "v", "o", "gate", "up", "down"};
static const char *const module_peft[LORA_MODULES] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                      "gate_proj", "up_proj", "down_proj"};
/* The module's path inside a HF decoder layer. */
static const char *const module_path[LORA_MODULES] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                      "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                      "mlp.down_proj"};
/* Module m adapts layer matrix m (params.h: the same order). */
_Static_assert((int)LORA_MODULES == (int)LAYER_MATRICES, "one LoRA module per layer matrix");

#define LORA_ATTN ((1u << LORA_Q) | (1u << LORA_K) | (1u << LORA_V) | (1u << LORA_O))
#define LORA_MLP ((1u << LORA_GATE) | (1u << LORA_UP) | (1u << LORA_DOWN))

const char *lora_module_name(LoraModule m) { return m < LORA_MODULES ? module_names[m] : "?"; }
const char *lora_module_peft_name(LoraModule m) { return m < LORA_MODULES ? module_peft[m] : "?"; }
const char *lora_module_hf_path(LoraModule m) { return m < LORA_MODULES ? module_path[m] : "?"; }

int lora_module_by_name(const char *name, size_t len) {
    for (int m = 0; m < LORA_MODULES; m++) {
        if (strlen(module_names[m]) == len && strncmp(name, module_names[m], len) == 0) return m;
        if (strlen(module_peft[m]) == len && strncmp(name, module_peft[m], len) == 0) return m;
    }
    return -1;
}

int lora_parse_targets(const char *list, unsigned *targets, Err *err) {
    *targets = 0;
    const char *p = list;
    while (1) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int m = lora_module_by_name(p, len);
        if (m >= 0) *targets |= 1u << m;
        else if (len == 3 && strncmp(p, "all", 3) == 0) *targets |= LORA_ALL;
        else if (len == 4 && strncmp(p, "attn", 4) == 0) *targets |= LORA_ATTN;
        else if (len == 3 && strncmp(p, "mlp", 3) == 0) *targets |= LORA_MLP;
        else
            return err_set(err,
                           "--lora-targets: expected a comma-separated list of q, k, v, o, gate, up, down (or "
                           "attn, mlp, all), found '%.*s' in '%s'",
                           (int)len, p, list);
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

void lora_targets_format(unsigned targets, char *buf, size_t size) {
    size_t used = 0;
    if (size) buf[0] = '\0';
    for (int m = 0; m < LORA_MODULES && used < size; m++) {
        if (!(targets & (1u << m))) continue;
        int n = snprintf(buf + used, size - used, "%s%s", used ? "," : "", module_names[m]);
        if (n < 0) return;
        used += (size_t)n;
    }
}

int lora_layout(LoraLayout *lo, const ModelConfig *model, const LoraConfig *cfg, const char *what, Err *err) {
    memset(lo, 0, sizeof *lo);
    if (cfg->rank < 1 || cfg->rank > LORA_MAX_RANK)
        return err_set(err, "%s: rank r: expected an integer in [1, %d], found %d", what, LORA_MAX_RANK, cfg->rank);
    if (!(cfg->alpha > 0) || !isfinite(cfg->alpha))
        return err_set(err, "%s: lora_alpha: expected a number > 0, found %g", what, (double)cfg->alpha);
    if (!(cfg->dropout >= 0 && cfg->dropout < 1))
        return err_set(err, "%s: lora_dropout: expected a value in [0, 1), found %g", what, (double)cfg->dropout);
    if ((cfg->targets & LORA_ALL) == 0 || (cfg->targets & ~LORA_ALL) != 0)
        return err_set(err, "%s: target modules: expected at least one of q, k, v, o, gate, up, down, found none",
                       what);
    lo->cfg = *cfg;
    lo->model = *model;
    lo->scale = cfg->rslora ? (float)(cfg->alpha / sqrt((double)cfg->rank)) : cfg->alpha / (float)cfg->rank;
    ParamLayout pl;
    params_layout(&pl, model);
    size_t L = (size_t)model->n_layers, r = (size_t)cfg->rank, off = 0, base_off = 0;
    for (int m = 0; m < LORA_MODULES; m++) {
        if (!(cfg->targets & (1u << m))) continue;
        LoraTensor *t = &lo->t[m];
        const TensorSpec *ts = &pl.t[layer_matrices[m].kind];
        t->present = 1;
        t->base = layer_matrices[m].kind;
        t->out = ts->rows;
        t->in = ts->cols;
        t->a_offset = off;
        off += L * r * (size_t)t->in;
        t->b_offset = off;
        off += L * (size_t)t->out * r;
        t->base_offset = base_off;
        base_off += ts->numel;
    }
    lo->n_floats = off;
    lo->n_base_floats = base_off;
    return 0;
}

/* splitmix64's output from state z (see lora.h). */
uint64_t lora_splitmix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t dropout_row_key(uint64_t seed, int layer, LoraModule m, int sequence) {
    uint64_t k1 = ((uint64_t)(uint32_t)layer << 40) | ((uint64_t)m << 32) | (uint64_t)(uint32_t)sequence;
    return lora_splitmix(lora_splitmix(seed) ^ k1);
}

uint64_t lora_dropout_hash(uint64_t seed, int layer, LoraModule m, int sequence, int channel, int position) {
    uint64_t k2 = ((uint64_t)(uint32_t)channel << 32) | (uint64_t)(uint32_t)position;
    return lora_splitmix(dropout_row_key(seed, layer, m, sequence) ^ k2);
}

void lora_dropout_mask(float *mask, uint64_t seed, int layer, LoraModule m, int sequence, int c0, int c1, int T,
                       float p) {
    if (p == 0) {
        for (size_t i = (size_t)c0 * T; i < (size_t)c1 * T; i++) mask[i] = 1.0f;
        return;
    }
    uint64_t row = dropout_row_key(seed, layer, m, sequence);
    uint64_t threshold = (uint64_t)ceil((double)p * 16777216.0); /* (h >> 40) < p 2^24 <=> < ceil(p 2^24) */
    float keep = 1.0f / (1.0f - p);
    for (int c = c0; c < c1; c++) {
        float *mr = mask + (size_t)c * T;
        for (int t = 0; t < T; t++) {
            uint64_t h = lora_splitmix(row ^ (((uint64_t)(uint32_t)c << 32) | (uint64_t)(uint32_t)t));
            mr[t] = (h >> 40) < threshold ? 0.0f : keep;
        }
    }
}

float *lora_A(const LoraLayout *lo, float *adapter, LoraModule m, int layer) {
    const LoraTensor *t = &lo->t[m];
    return adapter + t->a_offset + (size_t)layer * (size_t)lo->cfg.rank * (size_t)t->in;
}

float *lora_B(const LoraLayout *lo, float *adapter, LoraModule m, int layer) {
    const LoraTensor *t = &lo->t[m];
    return adapter + t->b_offset + (size_t)layer * (size_t)t->out * (size_t)lo->cfg.rank;
}

void lora_init(const LoraLayout *lo, float *adapter, Rng *rng) {
    int L = lo->model.n_layers, r = lo->cfg.rank;
    for (int m = 0; m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo->t[m];
        if (!t->present) continue;
        /* kaiming_uniform_(a=sqrt(5)): gain sqrt(2/(1+5)), bound gain*sqrt(3/fan_in) = 1/sqrt(in) */
        float bound = (float)(1.0 / sqrt((double)t->in));
        for (int l = 0; l < L; l++) {
            float *A = lora_A(lo, adapter, (LoraModule)m, l);
            for (size_t i = 0; i < (size_t)r * (size_t)t->in; i++) A[i] = (2.0f * rng_uniform(rng) - 1.0f) * bound;
            memset(lora_B(lo, adapter, (LoraModule)m, l), 0, (size_t)t->out * (size_t)r * sizeof(float));
        }
    }
}

/* ================================================================ merge */

static const float *base_matrix(const LoraLayout *lo, const float *base, LoraModule m, int l) {
    const LoraTensor *t = &lo->t[m];
    return base + t->base_offset + (size_t)l * (size_t)t->out * (size_t)t->in;
}

void lora_base_copy(const LoraLayout *lo, const ParamLayout *pl, const float *params, float *base) {
    for (int m = 0; m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo->t[m];
        if (!t->present) continue;
        const TensorSpec *ts = &pl->t[t->base];
        memcpy(base + t->base_offset, params + ts->offset, ts->numel * sizeof(float));
    }
}

/* W [out][in] += s B [out][r] A [r][in] */
static void add_delta(const LoraLayout *lo, const LoraTensor *t, float *W, const float *A, const float *B) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t->out, t->in, lo->cfg.rank, lo->scale, B, lo->cfg.rank, A,
                t->in, 1.0f, W, t->in);
}

void lora_merge(const LoraLayout *lo, const ParamLayout *pl, const float *base, const float *adapter, float *params) {
    for (int m = 0; m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo->t[m];
        if (!t->present) continue;
        for (int l = 0; l < lo->model.n_layers; l++) {
            float *W = params_tensor(pl, params, t->base, l);
            memcpy(W, base_matrix(lo, base, (LoraModule)m, l), (size_t)t->out * (size_t)t->in * sizeof(float));
            add_delta(lo, t, W, lora_A(lo, (float *)adapter, (LoraModule)m, l),
                      lora_B(lo, (float *)adapter, (LoraModule)m, l));
        }
    }
}

void lora_merge_into(const LoraLayout *lo, const ParamLayout *pl, float *params, const float *adapter) {
    for (int m = 0; m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo->t[m];
        if (!t->present) continue;
        for (int l = 0; l < lo->model.n_layers; l++)
            add_delta(lo, t, params_tensor(pl, params, t->base, l), lora_A(lo, (float *)adapter, (LoraModule)m, l),
                      lora_B(lo, (float *)adapter, (LoraModule)m, l));
    }
}
