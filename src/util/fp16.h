/*
** fp16.h — IEEE 754 binary16 ("half", fp16): the emulated ANE's storage, the staging of the
** ANE backend and int8 quantization's scales all round through these pure functions; so does
** bfloat16 (bf16_from_float, bf16_to_float), the data-parallel gradient exchange's format.
**
** The emulator keeps every tensor as fp32 arrays whose values are all exactly representable
** in fp16; fp16_round is the one rounding step applied to every op result. Conversions are
** bit manipulation in portable C (no F16C, no _Float16), correct for every input:
**   - round to nearest, ties to even (the only rounding mode the device is assumed to use);
**   - overflow: |x| >= 65520 (the tie between 65504 and 2^16) becomes +-inf;
**   - subnormals (|x| < 2^-14, quantum 2^-24) are kept, or flushed to a signed zero after
**     rounding when `flush` is set (a result that rounds up to 2^-14 is normal and stays);
**   - NaN stays NaN (quiet), with its sign; -0 stays -0.
** The subnormal path uses one fp32 addition, so it needs the default rounding mode
** (round-to-nearest) and no -ffast-math (which would also enable FTZ/DAZ).
**
** This module must never touch global state: everything here is a pure function.
*/
#ifndef ANETRAIN_FP16_H
#define ANETRAIN_FP16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FP16_MAX 65504.0f

static inline uint32_t fp16_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float fp16_f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The fp16 value nearest to f, as a float (see the rules above). Branch-free so loops over
** arrays vectorize. */
static inline float fp16_round(float f, int flush) {
    uint32_t u = fp16_f32_bits(f);
    uint32_t sign = u & 0x80000000u;
    uint32_t a = u ^ sign;
    /* Normal range: drop 13 mantissa bits, ties to even; a carry moves into the exponent. */
    uint32_t norm = (a + 0x00000FFFu + ((a >> 13) & 1u)) & 0xFFFFE000u;
    /* Subnormal range: in [0.5, 1) fp32's quantum is 2^-24, fp16's subnormal quantum. */
    uint32_t sub = fp16_f32_bits((fp16_f32_from_bits(a) + 0.5f) - 0.5f);
    uint32_t r = a < 0x38800000u ? sub : norm;       /* 2^-14 */
    r = a >= 0x477FF000u ? 0x7F800000u : r;         /* 65520 and above, and inf */
    r = a > 0x7F800000u ? (a | 0x00400000u) : r;    /* NaN: quiet */
    r = (flush && r < 0x38800000u) ? 0u : r;
    return fp16_f32_from_bits(r | sign);
}

/* fp16 bits of the value nearest to f. Branch-free, like fp16_round. */
static inline uint16_t fp16_from_float(float f) {
    uint32_t u = fp16_f32_bits(fp16_round(f, 0));
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7FFFFFFFu;
    uint32_t inf_nan = a == 0x7F800000u ? 0x7C00u : (0x7E00u | ((a >> 13) & 0x3FFu));
    uint32_t norm = (a - 0x38000000u) >> 13; /* rebias the exponent by 127 - 15 */
    /* Subnormal: an exact multiple of 2^-24 below 2^-14 (other inputs zeroed so the
    ** conversion stays in range). */
    float sub_f = fp16_f32_from_bits(a < 0x38800000u ? a : 0u) * 0x1p24f;
    uint32_t sub = (uint32_t)(int32_t)sub_f;
    uint32_t h = a >= 0x7F800000u ? inf_nan : (a >= 0x38800000u ? norm : sub);
    return (uint16_t)(h | sign);
}

/* The exact value of fp16 bits h. */
static inline float fp16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7FFFu;
    uint32_t inf_nan = 0x7F800000u | ((em & 0x3FFu) << 13);
    uint32_t norm = (em << 13) + 0x38000000u;
    uint32_t sub = fp16_f32_bits((float)(int32_t)em * 0x1p-24f);
    uint32_t is_sub = 0u - (uint32_t)(em < 0x0400u), is_big = 0u - (uint32_t)(em >= 0x7C00u); /* masks */
    uint32_t r = (norm & ~(is_sub | is_big)) | (sub & is_sub) | (inf_nan & is_big);
    return fp16_f32_from_bits(r | sign);
}

/* bfloat16 (bf16): the top 16 bits of a binary32 (8 exponent bits, 7 mantissa bits), the
** data-parallel gradient exchange's half-size format (util/dist.h). bf16_from_float rounds to
** nearest, ties to even; a value beyond bf16's largest finite one (about 3.39e38) becomes +-inf;
** subnormals round like normals (bf16 has fp32's exponent range); NaN stays NaN (quiet), with
** its sign. bf16_to_float is exact (a shift). */
static inline uint16_t bf16_from_float(float f) {
    uint32_t u = fp16_f32_bits(f);
    uint32_t nan = (u >> 16) | 0x0040u;
    uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : r);
}

static inline float bf16_to_float(uint16_t h) { return fp16_f32_from_bits((uint32_t)h << 16); }

/* The fp16 value nearest to a double, rounded once (a plain (float) cast first would round
** twice and can break ties the wrong way). For literals in MIL text. */
float fp16_round_double(double x, int flush);

/* x[i] = fp16_round(x[i], flush) for i < n. */
void fp16_round_array(float *x, size_t n, int flush);
/* dst[i] = fp16_to_float(src[i]) (then flushed if subnormal and flush is set). */
void fp16_to_float_array(float *dst, const uint16_t *src, size_t n, int flush);
/* dst[i] = fp16_from_float(src[i]). */
void fp16_from_float_array(uint16_t *dst, const float *src, size_t n);

#endif
