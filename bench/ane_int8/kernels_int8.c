/*
** kernels_int8.c — the int8-weight (W8) and W8A8 linear kernels (see kernels_int8.h).
**
**   W8, scales per channel:   W = constexpr_affine_dequantize(q, scale[OC], axis 0)
**                             y = conv(x, W)
**   W8A8:                     xq = quantize(x, a) (int8); x' = dequantize(xq, a); y = conv(x', W)
**   ANE_INT8_SCALE_AFTER:     W = constexpr_affine_dequantize(q, m); y = conv(.., W) * r[1,OC,1,1]
*/
#include "kernels_int8.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fp16.h"
#include "backend/ane/mil_write.h"

/* The smallest fp16 value >= x (x >= 0, finite, below fp16's max); quant.c's rule. */
static float fp16_ceil(float x) {
    float r = fp16_round(x, 0);
    if (r >= x) return r;
    return fp16_to_float((uint16_t)(fp16_from_float(r) + 1));
}

float ane_int8_act_scale(const float *x, size_t n) {
    float maxabs = 0;
    for (size_t i = 0; i < n; i++) maxabs = fmaxf(maxabs, fabsf(x[i]));
    if (maxabs == 0) return 1.0f;
    return fp16_ceil(fmaxf(maxabs / 127.0f, 0x1p-24f));
}

static MilT linear(MilW *w, const AneInt8Linear *k, const char *prefix, float *ratio) {
    char file[64];
    MilT x = milw_input(w, k->IC, k->S);
    if (k->act_scale > 0) x = milw_dequantize(w, milw_quantize(w, x, k->act_scale), k->act_scale);
    int dims[4] = {k->OC, k->IC, 1, 1};
    snprintf(file, sizeof file, "%s_w.bin", prefix);
    if (k->placement == ANE_INT8_SCALE_PER_CHANNEL) {
        MilT W = milw_affine_dequantize(w, file, 4, dims, 0, k->q, k->scale, k->OC);
        return milw_conv(w, x, W);
    }
    /* Per-tensor scale m (the largest row scale, so no ratio exceeds 1), then r[o] = scale[o] / m. */
    float m = 0;
    for (int o = 0; o < k->OC; o++) m = fmaxf(m, k->scale[o]);
    if (m == 0) m = 1;
    for (int o = 0; o < k->OC; o++) ratio[o] = fp16_round(k->scale[o] / m, 0);
    MilT W = milw_affine_dequantize(w, file, 4, dims, 0, k->q, &m, 1);
    MilT y = milw_conv(w, x, W);
    int rdims[4] = {1, k->OC, 1, 1};
    snprintf(file, sizeof file, "%s_r.bin", prefix);
    return milw_mul(w, y, milw_blob(w, file, 4, rdims, ratio));
}

int ane_int8_linear_mil(const AneInt8Linear *k, const char *prefix, char **mil, AneBlob **blobs, int *n_blobs,
                        Err *err) {
    *mil = NULL;
    *blobs = NULL;
    *n_blobs = 0;
    if (k->OC < 1 || k->IC < 1 || k->S < 32 || k->S % 32)
        return err_set(err, "int8 linear: OC %d and IC %d must be positive and S %d a positive multiple of 32", k->OC,
                       k->IC, k->S);
    if (!(k->act_scale >= 0) || !isfinite(k->act_scale))
        return err_set(err, "int8 linear: act_scale %g must be finite and >= 0 (0: weight-only)", (double)k->act_scale);
    if (!prefix || strlen(prefix) > 32) return err_set(err, "int8 linear: blob prefix missing or longer than 32");
    float *ratio = malloc((size_t)k->OC * sizeof *ratio);
    MilW *w = milw_create();
    if (!ratio || !w) {
        free(ratio);
        milw_free(w);
        return err_set(err, "int8 linear: out of memory");
    }
    MilT out = linear(w, k, prefix, ratio);
    free(ratio);
    *mil = milw_finish(w, out, err);
    if (!*mil) {
        milw_free(w);
        return err_wrap(err, "int8 linear [%d x %d]", k->OC, k->IC);
    }
    milw_take_blobs(w, blobs, n_blobs);
    milw_free(w);
    return 0;
}
