/*
** kernels_int8.h — ANE kernels with int8 constant weights (W8, weight-only) and with int8
** weights and int8 activations (W8A8), written with the MIL writer (mil_write.h).
**
** Both are one linear layer over channel-first activations:
**
**     x [1, IC, 1, S] fp16  ->  y [1, OC, 1, S] fp16,   y[o][s] = sum_i W'[o][i] x'[i][s]
**
** with the weight a constant baked into the kernel: per-row int8 q [OC][IC] and fp16 scales
** [OC] in quant.h's format, W'[o][i] = fp16(q[o][i] * scale[o]) (constexpr_affine_dequantize,
** axis 0, zero point 0, one rounding to fp16), then a 1x1 conv (the form the int8 benchmark and
** the static pipeline of the seed, maderix/ANE, use: docs/ane-facts.md §2.2-2.3, §4.4).
**
**   W8      x' = x.
**   W8A8    x' = dequantize(quantize(x, a), a): q_x = clamp(round_half_even(x / a), -128, 127)
**           (the mathematical quotient rounded once; see mil_kernels.c), x' = fp16(q_x * a).
**           The MIL is quantize -> dequantize -> conv(constexpr weight): the pattern CoreML uses
**           for activation quantization, which the compiler may fuse into an int8 x int8
**           product. The emulator runs it as written (fp16 values, fp32 accumulation); a device
**           accumulating q_x * q_w in int32 and rescaling once would differ by the fp16
**           rounding of x' and W' (relative 2^-11 each; measured in tests/test_ane_int8.c).
**
** The activation scale `a` is a compile-time constant (quantize's scale must be const, and a
** new scale means a new compile): static quantization, calibrated once on the CPU with
** ane_int8_act_scale (the smallest fp16 >= max|x| / 127 over calibration activations). Values
** beyond 127.5 a later saturate to +-127 a (-128 a below); the C reference in the tests models
** that exactly.
**
** Where the scales go (per-channel scales are unverified on the device, docs/ane-facts.md §7 Q7):
**   ANE_INT8_SCALE_PER_CHANNEL  the per-row scale vector inside constexpr_affine_dequantize:
**                               W' is exactly quant.h's dequantized weight rounded to fp16.
**   ANE_INT8_SCALE_AFTER        only constructs the seed ran: a per-tensor scale m = max_o
**                               scale[o] in constexpr_affine_dequantize, and the conv output
**                               multiplied by an fp16 blob r[o] = fp16(scale[o] / m) of shape
**                               [1, OC, 1, 1] (a broadcast the seed used). Two more roundings:
**                               y = fp16(fp16(sum_i fp16(q m) x') * r[o]).
**
** Compile cost: every int8 weight matrix is its own kernel (its weights are constants), so a
** model needs one compile per matrix kernel and layer, against the budget of about
** ANE_COMPILE_BUDGET_DEFAULT (device.h) per process (docs/ane-facts.md §1.8; emu.h).
*/
#ifndef ANETRAIN_ANE_KERNELS_INT8_H
#define ANETRAIN_ANE_KERNELS_INT8_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"
#include "backend/ane/device.h"

typedef enum { ANE_INT8_SCALE_PER_CHANNEL, ANE_INT8_SCALE_AFTER } AneInt8ScalePlacement;

typedef struct {
    int OC, IC, S;                    /* y [OC][S] = W' [OC][IC] x [IC][S]; S a multiple of 32 */
    const int8_t *q;                  /* [OC][IC] */
    const float *scale;               /* [OC], fp16 values >= 0 (quant_rows_int8) */
    AneInt8ScalePlacement placement;
    float act_scale;                  /* W8A8: the activation scale a > 0; 0: weight-only (W8) */
} AneInt8Linear;

/* The MIL text (*mil) and its blobs (*blobs, *n_blobs; free with milw_free_blobs) of the linear
** kernel described by k. Blob files are named "<prefix>_w.bin" (and "<prefix>_r.bin" for
** ANE_INT8_SCALE_AFTER); prefix at most 32 characters. Bad sizes are errors. */
int ane_int8_linear_mil(const AneInt8Linear *k, const char *prefix, char **mil, AneBlob **blobs, int *n_blobs,
                        Err *err);

/* A static activation scale for W8A8: the smallest fp16 value >= max|x| / 127 over x[0..n)
** (2^-24 when that is below fp16's smallest subnormal, 1 for an all-zero x). */
float ane_int8_act_scale(const float *x, size_t n);

#endif
