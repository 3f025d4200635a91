/*
** cost.h — an ESTIMATE of what a training step's device side would take on real Neural Engines,
** from what the plan does per step (evaluations, FLOPs on the device, bytes through memory) and
** figures other projects published for M1, M4 and M5 (docs/ane-facts.md §10). It is arithmetic
** on public numbers, not a measurement: it exists so that two plans (say a fused layer and a
** split one) can be compared before a Mac runs them, and it must always be printed as an
** estimate.
**
** Model, per step, for one chip (lo: its best published figures, hi: its worst):
**     device ms = evaluations x overhead per evaluation
**               + FLOPs on the device / measured fp16 matmul throughput
**               + bytes through memory / the chip's memory bandwidth
** where bytes through memory = what the device reads and writes of its surfaces plus what the
** CPU stages into them and reads back. The CPU's own work (weight gradients, classifier, AdamW,
** norms) is left out: it overlaps with the device on a Mac and its speed there is not modelled.
*/
#ifndef ANETRAIN_ANE_COST_H
#define ANETRAIN_ANE_COST_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *chip;                   /* "M1", "M4", "M5" */
    double eval_ms_lo, eval_ms_hi;      /* per-evaluation overhead (dispatch: XPC + IOKit) */
    double tflops_lo, tflops_hi;        /* measured fp16 GEMM throughput (dynamic weights need matmul) */
    double mem_gbs;                     /* unified memory bandwidth, GB/s (Apple's specifications) */
    const char *sources;                /* where the figures come from (docs/ane-facts.md §10) */
} AneChipFigures;

/* What one training step does on the device side (per step, not per run). */
typedef struct {
    double evaluations;
    double flops_device;
    double bytes_memory;                /* device surface reads + writes + CPU staging + read-back */
} AneStepWork;

typedef struct {
    double ms_lo, ms_hi;                /* the device-side estimate's range */
    double ms_dispatch_hi, ms_compute_hi, ms_memory; /* its parts at the hi end */
} AneCostEstimate;

/* The chips with published figures; *n receives their count. */
const AneChipFigures *ane_cost_chips(int *n);
void ane_cost_estimate(const AneStepWork *work, const AneChipFigures *chip, AneCostEstimate *out);

/* The estimate for every chip as report lines, each starting with `indent`, into buf (cut at
** cap, always terminated). States that it is an estimate and what it leaves out. */
void ane_cost_format(const AneStepWork *work, const char *indent, char *buf, size_t cap);

/* The seed's (maderix/ANE) published stories110M figures on M4, for comparison next to an
** estimate: its whole step, and the device's share of a step in its benchmark report. */
#define ANE_SEED_STORIES110M_M4_MS 91.0
#define ANE_SEED_DEVICE_MS_LO 10.0
#define ANE_SEED_DEVICE_MS_HI 12.0

#endif
