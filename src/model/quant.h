/*
** quant.h — int8 copies of a model's frozen layer matrices (per-output-channel, symmetric).
**
** The seven matrices of every layer (wq wk wv wo w1 w2 w3, [out][in] as in params.h) are stored
** as int8 with one scale per output row:
**
**     scale[o] = the smallest fp16 value >= max_i |W[o][i]| / 127        (0 for an all-zero row)
**     q[o][i]  = round_half_even(W[o][i] / scale[o])                     in [-127, 127]
**     W'[o][i] = q[o][i] * scale[o]                                      (dequantized)
**
** so |W - W'| <= scale[o] / 2 elementwise, and W' is computed exactly in fp32 and, since the scale
** is an fp16 value, is what the ANE's constexpr_affine_dequantize (zero point 0) produces before
** its one fp16 rounding. Rounding the scale up means no value is ever clamped. Rows whose
** max |W| / 127 is below fp16's smallest subnormal (2^-24) get that subnormal as their scale.
** The embedding, the classifier and the norm weights stay fp32 (in the parameter buffer).
**
** Memory: 1 byte per weight plus 4 bytes per row, against 4 bytes per weight in fp32.
*/
#ifndef ANETRAIN_QUANT_H
#define ANETRAIN_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"
#include "params.h"

/* 1 for the seven layer matrices quant.h stores as int8. */
int quant_kind_is_int8(TensorKind k);

typedef struct {
    ModelConfig cfg;
    int8_t *q;                       /* every int8 matrix, kind after kind: [L][out][in] each */
    float *scale;                    /* every scale, kind after kind: [L][out] each */
    size_t q_offset[T_COUNT];        /* where kind k starts in q (int8 kinds only) */
    size_t scale_offset[T_COUNT];    /* where kind k starts in scale */
    size_t n_q, n_scale;             /* lengths of q and scale */
} Int8Weights;

/* Quantizes the int8 kinds of params (laid out by pl) into *out (allocated here). */
int quant_int8_create(Int8Weights *out, const ParamLayout *pl, const float *params, Err *err);
void quant_int8_free(Int8Weights *qw);

/* Layer `layer` of int8 kind k: q [out][in] and scale [out]. */
const int8_t *quant_int8_q(const Int8Weights *qw, TensorKind k, int layer);
const float *quant_int8_scale(const Int8Weights *qw, TensorKind k, int layer);

/* One matrix [rows][cols]: quantize (rule above) and dequantize (w[o][i] = q[o][i] * scale[o]). */
void quant_rows_int8(int8_t *q, float *scale, const float *w, int rows, int cols);
void dequant_rows_int8(float *w, const int8_t *q, const float *scale, int rows, int cols);

/* Writes the dequantized int8 kinds into params (laid out like qw's model), leaving the other
** tensors as they are: the fp32 model that computes exactly what the int8 one does. */
void quant_int8_dequantize_into(const Int8Weights *qw, const ParamLayout *pl, float *params);

/* Bytes of the int8 kinds as fp32 and as int8 + scales (for reports). */
size_t quant_int8_fp32_bytes(const ParamLayout *pl);
size_t quant_int8_bytes(const Int8Weights *qw);

#endif
