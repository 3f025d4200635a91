/*
** half.h — fp32 <-> fp16 array conversions for staging data into device surfaces.
**
** Round to nearest even, overflow to inf, subnormals kept, NaN stays NaN: IEEE binary16, the
** same results as the emulator's portable conversions (util/fp16.h, pure functions reused here as
** the fallback). Where the CPU has a conversion instruction (x86 F16C, arm64 fcvt) it is used:
** staging converts every weight once per step, so this is on the hot path.
*/
#ifndef ANETRAIN_ANE_HALF_H
#define ANETRAIN_ANE_HALF_H

#include <stddef.h>
#include <stdint.h>

#include "../../util/fp16.h"

#if defined(__F16C__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HALF_F16C 1
#endif

/* dst[i] = fp16 bits of src[i]. */
static inline void half_from_f32(uint16_t *restrict dst, const float *restrict src, size_t n) {
    size_t i = 0;
#if defined(HALF_F16C)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(__aarch64__)
    for (; i < n; i++) {
        __fp16 h = (__fp16)src[i];
        uint16_t u;
        memcpy(&u, &h, sizeof u);
        dst[i] = u;
    }
#endif
    for (; i < n; i++) dst[i] = fp16_from_float(src[i]);
}

/* dst[i] = the value of fp16 bits src[i]. */
static inline void half_to_f32(float *restrict dst, const uint16_t *restrict src, size_t n) {
    size_t i = 0;
#if defined(HALF_F16C)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#elif defined(__aarch64__)
    for (; i < n; i++) {
        __fp16 h;
        memcpy(&h, src + i, sizeof h);
        dst[i] = (float)h;
    }
#endif
    for (; i < n; i++) dst[i] = fp16_to_float(src[i]);
}

#endif
