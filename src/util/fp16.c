/*
** fp16.c — array forms of the fp16 conversions (fp16.h) and the double-precision rounding
** used for MIL literals. Plain loops over restrict pointers, written so compilers vectorize
** them; no global state, no allocation.
*/
#include "fp16.h"

#include <math.h>

float fp16_round_double(double x, int flush) {
    float f = (float)x;
    if (isfinite(x) && isfinite(f) && (double)f != x) {
        /* Round to odd: truncate toward zero, then force the last bit on. With 24 bits kept
        ** (>= 11 + 2), rounding that to fp16 gives the correctly rounded result. */
        uint32_t u = fp16_f32_bits(f);
        if (fabs((double)f) > fabs(x)) u -= 1;
        u |= 1u;
        f = fp16_f32_from_bits(u);
    }
    return fp16_round(f, flush);
}

/* Loops run in blocks of a fixed 16 elements plus a scalar tail: a fixed trip count lets
** compilers vectorize even under GCC's cheapest -O2 cost model. */
enum { LANES = 16 };

void fp16_round_array(float *restrict x, size_t n, int flush) {
    size_t i = 0;
    if (flush) {
        for (; i + LANES <= n; i += LANES)
            for (size_t k = 0; k < LANES; k++) x[i + k] = fp16_round(x[i + k], 1);
        for (; i < n; i++) x[i] = fp16_round(x[i], 1);
    } else {
        for (; i + LANES <= n; i += LANES)
            for (size_t k = 0; k < LANES; k++) x[i + k] = fp16_round(x[i + k], 0);
        for (; i < n; i++) x[i] = fp16_round(x[i], 0);
    }
}

void fp16_to_float_array(float *restrict dst, const uint16_t *restrict src, size_t n, int flush) {
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (size_t k = 0; k < LANES; k++) dst[i + k] = fp16_to_float(src[i + k]);
    for (; i < n; i++) dst[i] = fp16_to_float(src[i]);
    if (flush) fp16_round_array(dst, n, 1);
}

void fp16_from_float_array(uint16_t *restrict dst, const float *restrict src, size_t n) {
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (size_t k = 0; k < LANES; k++) dst[i + k] = fp16_from_float(src[i + k]);
    for (; i < n; i++) dst[i] = fp16_from_float(src[i]);
}
