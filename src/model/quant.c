/*
** quant.c — per-output-channel symmetric int8 of the frozen layer matrices (see quant.h).
*/
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/fp16.h"

/* The int8 kinds are params.h's layer matrices; the loops below take them in kind order (the
** parameter buffer's), which is the order of their values in Int8Weights.q and .scale. */
int quant_kind_is_int8(TensorKind k) { return layer_matrix_of_kind(k) >= 0; }

/* The smallest fp16 value >= x (x >= 0 and finite, below fp16's max). */
static float fp16_ceil(float x) {
    float r = fp16_round(x, 0);
    if (r >= x) return r;
    /* one fp16 quantum up: the next representable value after r */
    uint16_t h = fp16_from_float(r);
    return fp16_to_float((uint16_t)(h + 1));
}

void quant_rows_int8(int8_t *q, float *scale, const float *w, int rows, int cols) {
    for (int o = 0; o < rows; o++) {
        const float *row = w + (size_t)o * cols;
        float maxabs = 0;
        for (int i = 0; i < cols; i++) maxabs = fmaxf(maxabs, fabsf(row[i]));
        int8_t *qr = q + (size_t)o * cols;
        if (maxabs == 0) {
            scale[o] = 0;
            memset(qr, 0, (size_t)cols);
            continue;
        }
        float s = fp16_ceil(fmaxf(maxabs / 127.0f, 0x1p-24f));
        scale[o] = s;
        for (int i = 0; i < cols; i++) {
            float v = nearbyintf(row[i] / s); /* the default rounding mode: half to even */
            qr[i] = (int8_t)(v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v));
        }
    }
}

void dequant_rows_int8(float *w, const int8_t *q, const float *scale, int rows, int cols) {
    for (int o = 0; o < rows; o++) {
        float s = scale[o];
        const int8_t *qr = q + (size_t)o * cols;
        float *wr = w + (size_t)o * cols;
        for (int i = 0; i < cols; i++) wr[i] = (float)qr[i] * s;
    }
}

int quant_int8_create(Int8Weights *out, const ParamLayout *pl, const float *params, Err *err) {
    memset(out, 0, sizeof *out);
    out->cfg = pl->cfg;
    for (TensorKind k = 0; k < T_COUNT; k++) {
        if (!quant_kind_is_int8(k)) continue;
        const TensorSpec *t = &pl->t[k];
        out->q_offset[k] = out->n_q;
        out->scale_offset[k] = out->n_scale;
        out->n_q += t->numel;
        out->n_scale += (size_t)t->layers * t->rows;
    }
    out->q = err_malloc(out->n_q ? out->n_q : 1, "int8 weights", err);
    out->scale = out->q ? err_malloc((out->n_scale ? out->n_scale : 1) * sizeof(float), "int8 scales", err) : NULL;
    if (!out->q || !out->scale) {
        quant_int8_free(out);
        return -1;
    }
    for (TensorKind k = 0; k < T_COUNT; k++) {
        if (!quant_kind_is_int8(k)) continue;
        const TensorSpec *t = &pl->t[k];
        for (int l = 0; l < t->layers; l++)
            quant_rows_int8(out->q + out->q_offset[k] + (size_t)l * t->rows * t->cols,
                            out->scale + out->scale_offset[k] + (size_t)l * t->rows,
                            params + t->offset + (size_t)l * t->rows * t->cols, t->rows, t->cols);
    }
    return 0;
}

void quant_int8_free(Int8Weights *qw) {
    free(qw->q);
    free(qw->scale);
    qw->q = NULL;
    qw->scale = NULL;
}

const int8_t *quant_int8_q(const Int8Weights *qw, TensorKind k, int layer) {
    int rows, cols;
    layer_matrix_shape(&qw->cfg, layer_matrix_of_kind(k), &rows, &cols);
    return qw->q + qw->q_offset[k] + (size_t)layer * rows * cols;
}

const float *quant_int8_scale(const Int8Weights *qw, TensorKind k, int layer) {
    int rows, cols;
    layer_matrix_shape(&qw->cfg, layer_matrix_of_kind(k), &rows, &cols);
    return qw->scale + qw->scale_offset[k] + (size_t)layer * rows;
}

void quant_int8_dequantize_into(const Int8Weights *qw, const ParamLayout *pl, float *params) {
    for (TensorKind k = 0; k < T_COUNT; k++) {
        if (!quant_kind_is_int8(k)) continue;
        const TensorSpec *t = &pl->t[k];
        for (int l = 0; l < t->layers; l++)
            dequant_rows_int8(params + t->offset + (size_t)l * t->rows * t->cols, quant_int8_q(qw, k, l),
                              quant_int8_scale(qw, k, l), t->rows, t->cols);
    }
}

size_t quant_int8_fp32_bytes(const ParamLayout *pl) {
    size_t n = 0;
    for (int m = 0; m < LAYER_MATRICES; m++) n += pl->t[layer_matrices[m].kind].numel;
    return n * sizeof(float);
}

size_t quant_int8_bytes(const Int8Weights *qw) { return qw->n_q + qw->n_scale * sizeof(float); }
