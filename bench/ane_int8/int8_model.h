/*
** int8_model.h — a whole model's forward pass with every layer matrix an int8 constant in its
** own compiled ANE kernel (kernels_int8.h), for measuring what int8 costs in accuracy and in
** compiles. Inference only (no backward): the loss of a sequence.
**
** Per layer, four kernels (rows of matrices that read the same input are stacked, so one
** kernel serves them):
**     qkv   [Q + 2K][C]  on xn1        (wq, wk, wv)
**     wo    [C][Q]       on att
**     w13   [2F][C]      on xn2        (w1, w3)
**     w2    [C][F]       on g
** so 4 L compiles per model: stories15m 24, stories110m 48, qwen3-0.6b 112 of the about
** ANE_COMPILE_BUDGET_DEFAULT (device.h) a process may do (docs/ane-facts.md §1.8). Everything
** else (embedding, norms, RoPE, attention, SwiGLU, the residuals, the classifier and the loss)
** runs on the CPU in fp32 with src/ops, exactly as the CPU backend does; activations cross as
** fp16 (the kernels' I/O).
**
** W8A8: each kernel quantizes its input with a static scale (kernels_int8.h) calibrated by
** ane_int8_model_calibrate: the largest |input| of that kernel over a forward pass of the fp32
** model on calibration tokens, over 127, rounded up to fp16.
*/
#ifndef ANETRAIN_ANE_INT8_MODEL_H
#define ANETRAIN_ANE_INT8_MODEL_H

#include <stdint.h>

#include "model/params.h"
#include "model/quant.h"
#include "util/err.h"
#include "backend/ane/device.h"
#include "kernels_int8.h"

enum { ANE_INT8_KERNELS_PER_LAYER = 4 };

typedef struct AneInt8Model AneInt8Model;

/* Compiles the 4 L kernels on dev for sequences of up to T tokens. act_scales: NULL for
** weight-only int8, else [L][4] activation scales (W8A8). The model keeps pointers to nothing
** passed here except dev. */
AneInt8Model *ane_int8_model_create(AneDevice *dev, const ParamLayout *pl, const Int8Weights *qw,
                                    const float *act_scales, AneInt8ScalePlacement placement, int T, Err *err);
void ane_int8_model_free(AneInt8Model *m);
/* Kernels compiled by create (4 L). */
int ane_int8_model_kernels(const AneInt8Model *m);

/* Mean cross-entropy over the T positions of one sequence: inputs[t] predicts targets[t]. The
** non-matrix tensors (embedding, norms, classifier) are read from params (laid out by pl). */
int ane_int8_model_loss(AneInt8Model *m, const ParamLayout *pl, const float *params, const int32_t *inputs,
                        const int32_t *targets, int T, double *loss, Err *err);

/* The same forward with fp32 matrices from params on the CPU (a reference for the kernels and
** a check of this file against the CPU backend). act_scales not NULL: each matrix's input x is
** first quantized as the W8A8 kernel does (x' = fp16(clamp(rne(fp16(x) / a), -128, 127) a),
** a = act_scales[l * 4 + k]), the CPU reference of the same quantization. act_max not NULL:
** records act_max[l * 4 + k] = max(act_max[...], max |input of kernel k of layer l|). */
int ane_int8_model_loss_cpu(const ParamLayout *pl, const float *params, const int32_t *inputs,
                            const int32_t *targets, int T, const float *act_scales, float *act_max, double *loss,
                            Err *err);

/* act_scales[i] = the smallest fp16 >= act_max[i] / 127 (1 when act_max[i] is 0), i < 4 L. */
void ane_int8_act_scales(float *act_scales, const float *act_max, int n);

#endif
