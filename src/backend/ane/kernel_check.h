/*
** kernel_check.h — one kernel of a plan run on a device and compared with its CPU reference:
** compile it, stage random inputs of the right kind, evaluate it, time it, and measure its error
** against ane_kernel_reference (inspect.h). `anetrain doctor` runs it in a child process per
** kernel; tests run it in-process against the emulator and the fake framework.
**
** It compiles (one compile of the device's budget per call) and prints nothing.
*/
#ifndef ANETRAIN_ANE_KERNEL_CHECK_H
#define ANETRAIN_ANE_KERNEL_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "../../util/err.h"
#include "device.h"
#include "kernels.h"

/* How far a check got (a failure happened in the stage named by `reached`). */
typedef enum {
    ANE_CHECK_COMPILE,   /* compiling (or checking the program's I/O against the plan) */
    ANE_CHECK_EVALUATE,  /* surfaces, staging, evaluating, reading back */
    ANE_CHECK_COMPARE,   /* the CPU reference */
    ANE_CHECK_DONE
} AneCheckStage;

const char *ane_check_stage_name(AneCheckStage s); /* "compiling", "evaluating", ... */

typedef struct {
    AneCheckStage reached;
    double compile_ms;
    double eval_ms;       /* one evaluation: the mean of the timed ones (or the checked one's) */
    double max_error;     /* the worst output tap's max|device - cpu| / max|cpu| over all S columns;
                          ** infinite when the device gave a non-finite value */
    char worst_tap[24];   /* its name ("x_next", "dk", "u.q", ...) */
} AneKernelCheck;

/* Fills every region of plan p's input surface `in` (fp16 [in_C][in_S], zeroed by the caller)
** with random values of its kind, as tests/test_ane_kernels.c does: weights of standard
** deviation 1/sqrt(fan-in), norm weights, rstd values and int8 row scales near 1 (positive),
** LoRA A and B of 0.2, 0/1 dropout masks, activations of 1. */
int ane_plan_random_inputs(const AneLayerPlan *p, uint16_t *in, uint64_t seed, Err *err);

/* Compiles kernel k (kernel `id` of plan p, from ane_kernel_make) on dev, evaluates it once on
** random inputs (ane_plan_random_inputs) and then `evals` more times (timed), and compares the
** checked output with ane_kernel_reference. 0 when it ran to the end (c->reached DONE; the error
** may still be above any tolerance: the caller judges), -1 with err and c->reached the stage that
** failed. */
int ane_kernel_check(AneDevice *dev, const AneLayerPlan *p, AneKernelId id, const AneKernel *k, int evals,
                     AneKernelCheck *c, Err *err);

/* Compiles mil (with its blobs) on dev, checks its I/O holds n_in -> n_out values, copies `in`
** into its input surface, evaluates once, then `evals` more times (timed), and reads the output
** into out (n_out floats). The stage reached, compile_ms and eval_ms go to c. */
int ane_program_run(AneDevice *dev, const char *mil, const AneBlob *blobs, int n_blobs, const uint16_t *in, size_t n_in,
                    float *out, size_t n_out, int evals, AneKernelCheck *c, Err *err);

#endif
