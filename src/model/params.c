/*
** params.c — the parameter buffer layout (see params.h) and llama2.c-style init.
*/
#include "params.h"

#include <math.h>

static const char *const tensor_names[T_COUNT] = {
    "tok_emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3",
    "rms_final", "wcls", "q_norm", "k_norm"};

static void spec(ParamLayout *p, TensorKind k, int present, int layers, int rows, int cols, int decay) {
    TensorSpec *t = &p->t[k];
    t->name = tensor_names[k];
    t->present = present;
    t->layers = layers;
    t->rows = rows;
    t->cols = cols;
    t->decay = decay;
    t->offset = p->n_floats;
    t->numel = present ? (size_t)layers * (size_t)rows * (size_t)cols : 0;
    p->n_floats += t->numel;
}

void params_layout(ParamLayout *p, const ModelConfig *cfg) {
    int C = cfg->dim, F = cfg->hidden_dim, L = cfg->n_layers, V = cfg->vocab_size;
    int q = cfg->n_heads * cfg->head_dim, kv = cfg->n_kv_heads * cfg->head_dim;
    p->cfg = *cfg;
    p->n_floats = 0;
    spec(p, T_TOK_EMB, 1, 1, V, C, 1);
    spec(p, T_RMS_ATT, 1, L, 1, C, 0);
    spec(p, T_WQ, 1, L, q, C, 1);
    spec(p, T_WK, 1, L, kv, C, 1);
    spec(p, T_WV, 1, L, kv, C, 1);
    spec(p, T_WO, 1, L, C, q, 1);
    spec(p, T_RMS_FFN, 1, L, 1, C, 0);
    spec(p, T_W1, 1, L, F, C, 1);
    spec(p, T_W2, 1, L, C, F, 1);
    spec(p, T_W3, 1, L, F, C, 1);
    spec(p, T_RMS_FINAL, 1, 1, 1, C, 0);
    spec(p, T_WCLS, !cfg->tied, 1, V, C, 1);
    spec(p, T_Q_NORM, cfg->qk_norm, L, 1, cfg->head_dim, 0);
    spec(p, T_K_NORM, cfg->qk_norm, L, 1, cfg->head_dim, 0);
}

float *params_tensor(const ParamLayout *p, float *base, TensorKind k, int layer) {
    const TensorSpec *t = &p->t[k];
    if (k == T_WCLS && !t->present) return base + p->t[T_TOK_EMB].offset;
    if (!t->present) return NULL;
    return base + t->offset + (size_t)layer * (size_t)t->rows * (size_t)t->cols;
}

void params_views(const ParamLayout *p, float *base, ParamViews *v) {
    v->tok_emb = params_tensor(p, base, T_TOK_EMB, 0);
    v->rms_att = params_tensor(p, base, T_RMS_ATT, 0);
    v->wq = params_tensor(p, base, T_WQ, 0);
    v->wk = params_tensor(p, base, T_WK, 0);
    v->wv = params_tensor(p, base, T_WV, 0);
    v->wo = params_tensor(p, base, T_WO, 0);
    v->rms_ffn = params_tensor(p, base, T_RMS_FFN, 0);
    v->w1 = params_tensor(p, base, T_W1, 0);
    v->w2 = params_tensor(p, base, T_W2, 0);
    v->w3 = params_tensor(p, base, T_W3, 0);
    v->rms_final = params_tensor(p, base, T_RMS_FINAL, 0);
    v->wcls = params_tensor(p, base, T_WCLS, 0);
    v->q_norm = params_tensor(p, base, T_Q_NORM, 0);
    v->k_norm = params_tensor(p, base, T_K_NORM, 0);
}

void params_init(const ParamLayout *p, float *base, Rng *rng) {
    double residual_std = 0.02 / sqrt(2.0 * p->cfg.n_layers);
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &p->t[k];
        if (!t->present) continue;
        float *x = base + t->offset;
        if (t->rows == 1) { /* norm weights */
            for (size_t i = 0; i < t->numel; i++) x[i] = 1.0f;
            continue;
        }
        double std = (k == T_WO || k == T_W3) ? residual_std : 0.02;
        for (size_t i = 0; i < t->numel; i++) x[i] = (float)(std * rng_normal(rng));
    }
}
