/*
** params.c — the parameter buffer layout (see params.h) and llama2.c-style init.
*/
#include "params.h"

#include <math.h>
#include <stddef.h>

static const char *const tensor_names[T_COUNT] = {
    "tok_emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3",
    "rms_final", "wcls", "q_norm", "k_norm"};

const LayerMatrix layer_matrices[LAYER_MATRICES] = {
    {"wq", T_WQ, offsetof(ParamViews, wq)}, {"wk", T_WK, offsetof(ParamViews, wk)},
    {"wv", T_WV, offsetof(ParamViews, wv)}, {"wo", T_WO, offsetof(ParamViews, wo)},
    {"w1", T_W1, offsetof(ParamViews, w1)}, {"w3", T_W3, offsetof(ParamViews, w3)},
    {"w2", T_W2, offsetof(ParamViews, w2)}};

void layer_matrix_shape(const ModelConfig *cfg, int m, int *rows, int *cols) {
    int C = cfg->dim, F = cfg->hidden_dim;
    int q = cfg->n_heads * cfg->head_dim, kv = cfg->n_kv_heads * cfg->head_dim;
    switch (layer_matrices[m].kind) {
    case T_WQ: *rows = q, *cols = C; break;
    case T_WK:
    case T_WV: *rows = kv, *cols = C; break;
    case T_WO: *rows = C, *cols = q; break;
    case T_W1:
    case T_W3: *rows = F, *cols = C; break;
    default: *rows = C, *cols = F; break; /* w2 */
    }
}

float *layer_matrix(const ParamViews *v, const ModelConfig *cfg, int m, int layer) {
    int rows, cols;
    layer_matrix_shape(cfg, m, &rows, &cols);
    float *const *view = (float *const *)(const void *)((const char *)v + layer_matrices[m].view);
    return *view + (size_t)layer * (size_t)rows * (size_t)cols;
}

int layer_matrix_of_kind(TensorKind k) {
    for (int m = 0; m < LAYER_MATRICES; m++)
        if (layer_matrices[m].kind == k) return m;
    return -1;
}

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

/* A layer matrix: L stacked copies of its layer_matrix_shape, with weight decay. */
static void spec_matrix(ParamLayout *p, TensorKind k) {
    int rows, cols;
    layer_matrix_shape(&p->cfg, layer_matrix_of_kind(k), &rows, &cols);
    spec(p, k, 1, p->cfg.n_layers, rows, cols, 1);
}

void params_layout(ParamLayout *p, const ModelConfig *cfg) {
    int C = cfg->dim, L = cfg->n_layers, V = cfg->vocab_size;
    p->cfg = *cfg;
    p->n_floats = 0;
    spec(p, T_TOK_EMB, 1, 1, V, C, 1);
    spec(p, T_RMS_ATT, 1, L, 1, C, 0);
    spec_matrix(p, T_WQ);
    spec_matrix(p, T_WK);
    spec_matrix(p, T_WV);
    spec_matrix(p, T_WO);
    spec(p, T_RMS_FFN, 1, L, 1, C, 0);
    spec_matrix(p, T_W1);
    spec_matrix(p, T_W2);
    spec_matrix(p, T_W3);
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
