/*
** int8_model.c — forward pass with int8 constant-weight kernels (see int8_model.h).
**
** One forward (forward() below) serves both the device and the fp32 CPU reference: only the
** four linear maps per layer differ (a callback). Shapes are the CPU backend's: activations
** channel-first [rows][T], weights [out][in].
*/
#include "int8_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"
#include "util/fp16.h"
#include "backend/ane/half.h"
#include "backend/ane/mil_write.h"

/* Kernel k of a layer: rows out of in, over the input named. */
enum { K_QKV, K_WO, K_W13, K_W2 };

typedef struct {
    AneProgram *prog;
    AneSurface *in, *out;
    int rows, cols; /* y [rows][T] = W [rows][cols] x [cols][T] */
} Kernel;

struct AneInt8Model {
    AneDevice *dev;
    int L, S;          /* S: T padded to a multiple of 32 */
    Kernel *k;         /* [L][4] */
    float *stage;      /* [max rows or cols][S] */
};

static void kernel_shape(const ModelConfig *c, int k, int *rows, int *cols) {
    int C = c->dim, F = c->hidden_dim, Q = c->n_heads * c->head_dim, K = c->n_kv_heads * c->head_dim;
    switch (k) {
    case K_QKV: *rows = Q + 2 * K, *cols = C; break;
    case K_WO: *rows = C, *cols = Q; break;
    case K_W13: *rows = 2 * F, *cols = C; break;
    default: *rows = C, *cols = F; break;
    }
}

/* The stacked int8 rows and scales of kernel k of layer l (q [rows][cols], scale [rows]). */
static void kernel_weights(const Int8Weights *qw, int l, int k, int rows, int cols, int8_t *q, float *scale) {
    static const TensorKind parts[4][3] = {{T_WQ, T_WK, T_WV}, {T_WO}, {T_W1, T_W3}, {T_W2}};
    static const int n_parts[4] = {3, 1, 2, 1};
    ParamLayout pl;
    params_layout(&pl, &qw->cfg);
    size_t r = 0;
    for (int p = 0; p < n_parts[k]; p++) {
        TensorKind t = parts[k][p];
        size_t n = (size_t)pl.t[t].rows;
        memcpy(q + r * cols, quant_int8_q(qw, t, l), n * cols);
        memcpy(scale + r, quant_int8_scale(qw, t, l), n * sizeof *scale);
        r += n;
    }
    (void)rows;
}

int ane_int8_model_kernels(const AneInt8Model *m) { return m->L * ANE_INT8_KERNELS_PER_LAYER; }

void ane_int8_model_free(AneInt8Model *m) {
    if (!m) return;
    for (int i = 0; m->k && i < m->L * ANE_INT8_KERNELS_PER_LAYER; i++) {
        Kernel *k = &m->k[i];
        if (k->prog) m->dev->release(m->dev, k->prog);
        if (k->in) m->dev->surface_free(m->dev, k->in);
        if (k->out) m->dev->surface_free(m->dev, k->out);
    }
    free(m->k);
    free(m->stage);
    free(m);
}

AneInt8Model *ane_int8_model_create(AneDevice *dev, const ParamLayout *pl, const Int8Weights *qw,
                                    const float *act_scales, AneInt8ScalePlacement placement, int T, Err *err) {
    const ModelConfig *c = &pl->cfg;
    if (T < 1) {
        err_set(err, "int8 model: T must be >= 1, found %d", T);
        return NULL;
    }
    AneInt8Model *m = calloc(1, sizeof *m);
    if (!m) {
        err_set(err, "int8 model: out of memory");
        return NULL;
    }
    m->dev = dev;
    m->L = c->n_layers;
    m->S = (T + 31) / 32 * 32;
    int n = m->L * ANE_INT8_KERNELS_PER_LAYER, max_dim = 0;
    for (int k = 0; k < ANE_INT8_KERNELS_PER_LAYER; k++) {
        int rows, cols;
        kernel_shape(c, k, &rows, &cols);
        max_dim = rows > max_dim ? rows : max_dim;
        max_dim = cols > max_dim ? cols : max_dim;
    }
    m->k = calloc((size_t)n, sizeof *m->k);
    m->stage = malloc((size_t)max_dim * m->S * sizeof *m->stage);
    int8_t *q = malloc((size_t)max_dim * max_dim);
    float *scale = malloc((size_t)max_dim * sizeof *scale);
    if (!m->k || !m->stage || !q || !scale) {
        err_set(err, "int8 model: out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        int l = i / ANE_INT8_KERNELS_PER_LAYER, kk = i % ANE_INT8_KERNELS_PER_LAYER;
        Kernel *k = &m->k[i];
        kernel_shape(c, kk, &k->rows, &k->cols);
        kernel_weights(qw, l, kk, k->rows, k->cols, q, scale);
        AneInt8Linear spec = {k->rows, k->cols, m->S, q, scale, placement, act_scales ? act_scales[i] : 0};
        char prefix[32], *mil = NULL;
        AneBlob *blobs = NULL;
        int nb = 0;
        snprintf(prefix, sizeof prefix, "l%d_k%d", l, kk);
        if (ane_int8_linear_mil(&spec, prefix, &mil, &blobs, &nb, err)) goto fail;
        k->prog = dev->compile(dev, mil, blobs, nb, err);
        free(mil);
        milw_free_blobs(blobs, nb);
        if (!k->prog) {
            err_wrap(err, "int8 model: layer %d kernel %d", l, kk);
            goto fail;
        }
        k->in = dev->surface_create(dev, (size_t)k->cols * m->S * 2, err);
        k->out = k->in ? dev->surface_create(dev, (size_t)k->rows * m->S * 2, err) : NULL;
        if (!k->out) goto fail;
    }
    free(q);
    free(scale);
    return m;
fail:
    free(q);
    free(scale);
    ane_int8_model_free(m);
    return NULL;
}

/* ------------------------------------------------------------------ the forward */

/* y [rows][T] = W_k x [cols][T] for kernel k of layer l. */
typedef int (*LinearFn)(void *ctx, int l, int k, float *y, const float *x, int T, Err *err);

static int device_linear(void *ctx, int l, int kk, float *y, const float *x, int T, Err *err) {
    AneInt8Model *m = ctx;
    Kernel *k = &m->k[l * ANE_INT8_KERNELS_PER_LAYER + kk];
    AneDevice *dev = m->dev;
    int S = m->S;
    /* [cols][T] -> [cols][S], zero padding columns, fp16 */
    memset(m->stage, 0, (size_t)k->cols * S * sizeof *m->stage);
    for (int r = 0; r < k->cols; r++) memcpy(m->stage + (size_t)r * S, x + (size_t)r * T, (size_t)T * sizeof *x);
    half_from_f32(dev->surface_lock(dev, k->in, 0), m->stage, (size_t)k->cols * S);
    dev->surface_unlock(dev, k->in, 0);
    if (dev->evaluate(dev, k->prog, k->in, k->out, err)) return err_wrap(err, "int8 model: layer %d kernel %d", l, kk);
    const uint16_t *o = dev->surface_lock(dev, k->out, 1);
    for (int r = 0; r < k->rows; r++) half_to_f32(y + (size_t)r * T, o + (size_t)r * S, (size_t)T);
    dev->surface_unlock(dev, k->out, 1);
    return 0;
}

typedef struct {
    const ParamLayout *pl;
    const float *params;
    const float *act_scales;
    float *act_max;
    float *xq; /* [max cols][T] quantized input when act_scales */
} CpuCtx;

/* round half to even of the exact quotient, saturated (mil_kernels.c's quantize, in double). */
static float quantize_value(float x, float a) {
    double v = (double)fp16_round(x, 0) / a;
    if (v != v) return 0;
    v = v < -128 ? -128 : v > 127 ? 127 : v;
    double f = floor(v), d = v - f;
    double r = d > 0.5 ? f + 1 : d < 0.5 ? f : (fmod(f, 2) == 0 ? f : f + 1);
    return fp16_round_double(r * a + 0.0, 0);
}

static int cpu_linear(void *ctx, int l, int k, float *y, const float *x, int T, Err *err) {
    (void)err;
    CpuCtx *c = ctx;
    static const TensorKind parts[4][3] = {{T_WQ, T_WK, T_WV}, {T_WO}, {T_W1, T_W3}, {T_W2}};
    static const int n_parts[4] = {3, 1, 2, 1};
    int rows, cols;
    kernel_shape(&c->pl->cfg, k, &rows, &cols);
    if (c->act_max) {
        float mx = c->act_max[l * ANE_INT8_KERNELS_PER_LAYER + k];
        for (size_t i = 0; i < (size_t)cols * T; i++) mx = fmaxf(mx, fabsf(x[i]));
        c->act_max[l * ANE_INT8_KERNELS_PER_LAYER + k] = mx;
    }
    if (c->act_scales) {
        float a = c->act_scales[l * ANE_INT8_KERNELS_PER_LAYER + k];
        for (size_t i = 0; i < (size_t)cols * T; i++) c->xq[i] = quantize_value(x[i], a);
        x = c->xq;
    }
    size_t r = 0;
    for (int p = 0; p < n_parts[k]; p++) {
        TensorKind t = parts[k][p];
        int n = c->pl->t[t].rows;
        ops_linear_forward(y + r * T, x, params_tensor(c->pl, (float *)c->params, t, l), n, cols, T);
        r += (size_t)n;
    }
    (void)rows;
    return 0;
}

static int forward(const ParamLayout *pl, const float *params, const int32_t *inputs, const int32_t *targets, int T,
                   LinearFn lin, void *ctx, double *loss_out, Err *err) {
    const ModelConfig *c = &pl->cfg;
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim, V = c->vocab_size;
    int Q = H * D, K = KV * D;
    ParamViews w;
    params_views(pl, (float *)params, &w);
    size_t n_x = (size_t)C * T;
    float *x = malloc(n_x * sizeof *x), *xn = malloc(n_x * sizeof *xn), *o = malloc(n_x * sizeof *o);
    float *qkv = malloc((size_t)(Q + 2 * K) * T * sizeof *qkv), *att = malloc((size_t)Q * T * sizeof *att);
    float *h = malloc((size_t)2 * F * T * sizeof *h), *g = malloc((size_t)F * T * sizeof *g);
    float *rstd = malloc((size_t)T * sizeof *rstd), *scratch = malloc((size_t)T * T * sizeof *scratch);
    float *rc = malloc((size_t)T * (D / 2) * sizeof *rc), *rs = malloc((size_t)T * (D / 2) * sizeof *rs);
    float *logits = malloc((size_t)V * T * sizeof *logits), *losses = malloc((size_t)T * sizeof *losses);
    float *normed = malloc((size_t)(Q > K ? Q : K) * T * sizeof *normed);
    int rc_ = -1;
    if (!x || !xn || !o || !qkv || !att || !h || !g || !rstd || !scratch || !rc || !rs || !logits || !losses ||
        !normed) {
        err_set(err, "int8 model forward: out of memory");
        goto done;
    }
    ops_rope_table(rc, rs, T, D, 0, c->rope_theta);
    ops_embedding_forward(x, inputs, w.tok_emb, T, C);
    for (int l = 0; l < c->n_layers; l++) {
        ops_rmsnorm_forward(xn, rstd, x, w.rms_att + (size_t)l * C, C, T, c->norm_eps);
        if (lin(ctx, l, K_QKV, qkv, xn, T, err)) goto done;
        float *q = qkv, *k = qkv + (size_t)Q * T, *v = qkv + (size_t)(Q + K) * T;
        if (c->qk_norm) {
            for (int hh = 0; hh < H; hh++)
                ops_rmsnorm_forward(normed + (size_t)hh * D * T, rstd, q + (size_t)hh * D * T,
                                    w.q_norm + (size_t)l * D, D, T, c->norm_eps);
            memcpy(q, normed, (size_t)Q * T * sizeof *q);
            for (int hh = 0; hh < KV; hh++)
                ops_rmsnorm_forward(normed + (size_t)hh * D * T, rstd, k + (size_t)hh * D * T,
                                    w.k_norm + (size_t)l * D, D, T, c->norm_eps);
            memcpy(k, normed, (size_t)K * T * sizeof *k);
        }
        ops_rope_forward(q, rc, rs, H, D, T, c->rope_style);
        ops_rope_forward(k, rc, rs, KV, D, T, c->rope_style);
        ops_attention_forward(att, q, k, v, H, KV, D, T, 0, KV, scratch);
        if (lin(ctx, l, K_WO, o, att, T, err)) goto done;
        for (size_t i = 0; i < n_x; i++) x[i] += o[i]; /* x is now x_mid */
        ops_rmsnorm_forward(xn, rstd, x, w.rms_ffn + (size_t)l * C, C, T, c->norm_eps);
        if (lin(ctx, l, K_W13, h, xn, T, err)) goto done;
        ops_swiglu_forward(g, h, h + (size_t)F * T, (size_t)F * T);
        if (lin(ctx, l, K_W2, o, g, T, err)) goto done;
        for (size_t i = 0; i < n_x; i++) x[i] += o[i];
    }
    ops_rmsnorm_forward(xn, rstd, x, w.rms_final, C, T, c->norm_eps);
    ops_linear_forward(logits, xn, w.wcls, V, C, T);
    ops_cross_entropy_forward(losses, logits, logits, targets, V, T, T);
    double total = 0;
    for (int t = 0; t < T; t++) total += losses[t];
    *loss_out = total / T;
    rc_ = 0;
done:
    free(x), free(xn), free(o), free(qkv), free(att), free(h), free(g), free(rstd), free(scratch);
    free(rc), free(rs), free(logits), free(losses), free(normed);
    return rc_;
}

int ane_int8_model_loss(AneInt8Model *m, const ParamLayout *pl, const float *params, const int32_t *inputs,
                        const int32_t *targets, int T, double *loss, Err *err) {
    if (T < 1 || T > m->S || pl->cfg.n_layers != m->L)
        return err_set(err, "int8 model: T %d outside 1..%d or a model of %d layers (compiled for %d)", T, m->S,
                       pl->cfg.n_layers, m->L);
    return forward(pl, params, inputs, targets, T, device_linear, m, loss, err);
}

int ane_int8_model_loss_cpu(const ParamLayout *pl, const float *params, const int32_t *inputs,
                            const int32_t *targets, int T, const float *act_scales, float *act_max, double *loss,
                            Err *err) {
    const ModelConfig *cf = &pl->cfg;
    int max_cols = cf->dim > cf->hidden_dim ? cf->dim : cf->hidden_dim;
    if (cf->n_heads * cf->head_dim > max_cols) max_cols = cf->n_heads * cf->head_dim;
    CpuCtx c = {pl, params, act_scales, act_max, NULL};
    if (act_scales && !(c.xq = malloc((size_t)max_cols * T * sizeof *c.xq)))
        return err_set(err, "int8 model forward: out of memory");
    int rc = forward(pl, params, inputs, targets, T, cpu_linear, &c, loss, err);
    free(c.xq);
    return rc;
}

void ane_int8_act_scales(float *act_scales, const float *act_max, int n) {
    for (int i = 0; i < n; i++) act_scales[i] = ane_int8_act_scale(&act_max[i], 1);
}
