/*
** cost.c — the per-chip figures and the device-side step estimate of cost.h. Every number here
** is a published one, with its source in docs/ane-facts.md §10; change them there first.
*/
#include "cost.h"

#include <stdio.h>

static const AneChipFigures chips[] = {
    /* M1: the overhead floor of about 0.23 ms (sbryngelson/ane-guide, ch. 9); fp16 GEMM
    ** 2.7-4.6 TFLOP/s (ANEForge bench/results/ROOFLINES.md); 68.25 GB/s (M1's 128-bit LPDDR4X-4266). */
    {"M1", 0.23, 0.23, 2.7, 4.6, 68.25, "overhead: sbryngelson/ane-guide ch. 9; GEMM: ANEForge ROOFLINES.md; memory: LPDDR4X-4266"},
    /* M4: 0.095 ms of XPC + IOKit per op (maderix's article, part 2) to 0.117 ms (maderix/ANE#44);
    ** fp16 GEMM 5.4 TFLOP/s (ANEForge); 120 GB/s (Apple, M4). */
    {"M4", 0.095, 0.117, 5.4, 5.4, 120.0, "overhead: maderix article part 2, maderix/ANE#44; GEMM: ANEForge; memory: Apple"},
    /* M5: about 0.07 ms at every QoS (maderix/ANE#2, the seed's m5result.md); fp16 GEMM 8.7
    ** TFLOP/s (ANEForge); 153 GB/s (Apple, M5). */
    {"M5", 0.07, 0.07, 8.7, 8.7, 153.0, "overhead: maderix/ANE#2; GEMM: ANEForge; memory: Apple"},
};

const AneChipFigures *ane_cost_chips(int *n) {
    *n = (int)(sizeof chips / sizeof chips[0]);
    return chips;
}

void ane_cost_estimate(const AneStepWork *work, const AneChipFigures *chip, AneCostEstimate *out) {
    double memory = work->bytes_memory / (chip->mem_gbs * 1e9) * 1e3;
    double compute_lo = work->flops_device / (chip->tflops_hi * 1e12) * 1e3;
    double compute_hi = work->flops_device / (chip->tflops_lo * 1e12) * 1e3;
    out->ms_lo = work->evaluations * chip->eval_ms_lo + compute_lo + memory;
    out->ms_hi = work->evaluations * chip->eval_ms_hi + compute_hi + memory;
    out->ms_dispatch_hi = work->evaluations * chip->eval_ms_hi;
    out->ms_compute_hi = compute_hi;
    out->ms_memory = memory;
}

void ane_cost_format(const AneStepWork *work, const char *indent, char *buf, size_t cap) {
    size_t used = 0;
    int n;
    const AneChipFigures *c = ane_cost_chips(&n);
#define APPEND(...)                                                                                \
    do {                                                                                           \
        if (used < cap) {                                                                          \
            int w_ = snprintf(buf + used, cap - used, __VA_ARGS__);                                \
            used += w_ > 0 ? (size_t)w_ : 0;                                                       \
        }                                                                                          \
    } while (0)
    if (cap) buf[0] = 0;
    APPEND("%sESTIMATE, not a measurement, of this step's device side on real chips: %.0f evaluations, %.2f GFLOP,\n"
           "%s%.1f MB through memory per step, with published per-chip figures (docs/ane-facts.md section 10);\n"
           "%sthe CPU's work (dW, classifier, optimizer) is not included\n",
           indent, work->evaluations, work->flops_device / 1e9, indent, work->bytes_memory / 1e6, indent);
    for (int i = 0; i < n; i++) {
        AneCostEstimate e;
        ane_cost_estimate(work, &c[i], &e);
        APPEND("%s  %-3s %7.1f - %7.1f ms  (at most: dispatch %.1f, matmul %.1f; memory %.1f)\n", indent, c[i].chip,
               e.ms_lo, e.ms_hi, e.ms_dispatch_hi, e.ms_compute_hi, e.ms_memory);
    }
    APPEND("%s  for scale: the seed (maderix/ANE) measured %.0f ms per stories110M step on M4, of which its "
           "device took %.0f-%.0f ms\n",
           indent, ANE_SEED_STORIES110M_M4_MS, ANE_SEED_DEVICE_MS_LO, ANE_SEED_DEVICE_MS_HI);
#undef APPEND
    if (used >= cap && cap) buf[cap - 1] = 0;
}
