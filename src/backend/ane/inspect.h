/*
** inspect.h — what a run would compile, without compiling it: every kernel of a plan with its
** MIL text, weight files and I/O shapes, the device limits' verdict on it (the emulator's checker,
** the same one every device runs before compiling) and its largest axis, and the plan's cost per
** step. `anetrain ane-plan` prints and dumps it; a doctor can run the same kernels on a device and
** compare them with ane_kernel_reference, their CPU reference.
**
** Nothing here compiles, evaluates or touches a device, and nothing counts against the compile
** budget.
*/
#ifndef ANETRAIN_ANE_INSPECT_H
#define ANETRAIN_ANE_INSPECT_H

#include <stdint.h>

#include "../../model/config.h"
#include "../../util/err.h"
#include "device.h"
#include "kernels.h"

typedef struct {
    AneKernel k;               /* name, I/O shapes, MIL text, blobs, FLOPs (kernels.h) */
    int pass;                  /* 1: the checker accepts it under the report's limits */
    char check[ERR_MSG_MAX];   /* the refusal when pass is 0 ("MIL L:C: ... rule NAME: ...") */
    const char *rule;          /* the rule broken, or NULL (also when refused for something else) */
    int64_t max_axis;          /* the largest axis of any tensor of the program (0 if unparsed) */
    char max_axis_value[64];   /* the value it belongs to, and its type */
    char max_axis_type[160];
    int n_ops, n_values;       /* statements checked (ops, all values) */
} AneKernelReport;

typedef struct {
    AneLayerPlan plan;
    int n_layers, batch;
    int training;              /* 1: training steps (layer_fwd and layer_bwd), 0: forward-only (eval) */
    AneLimits limits;
    int n_kernels;             /* the kernels a run compiles: ANE_KERNELS (a forward-only run compiles
                               ** layer_bwd too and never evaluates it, ane.c) */
    AneKernelReport kernels[ANE_KERNELS];
    AnePlanCost cost;          /* per step, batch sequences */
    int64_t max_axis;          /* over every kernel */
    int all_pass;
} AnePlanReport;

/* Plans cfg as spec says (ane_plan_make: a refusal is an error here), generates every kernel a
** run compiles and checks each under `limits`; a kernel the checker refuses is reported, not an
** error. Free with ane_plan_report_free. */
int ane_plan_inspect(const ModelConfig *cfg, const AnePlanSpec *spec, int batch, int training, AneLimits limits,
                     AnePlanReport *r, Err *err);
void ane_plan_report_free(AnePlanReport *r);

/* What kernel `id` of plan p computes, on the CPU in fp32 with the reference ops (src/ops), from
** the input surface `in` (fp16 [in_C][in_S], as staged for the device): out [out_C][S] (every
** column, padding included). A device's output should match it within fp16 error (the doctor's
** comparison; test_ane_kernels holds the emulator to it for full, LoRA + dropout and int8-base
** plans). reference.c. */
int ane_kernel_reference(const AneLayerPlan *p, AneKernelId id, const uint16_t *in, float *out, Err *err);

/* The device limit of docs/ane-facts.md §9 that kernel k comes closest to, in words, for the
** message of a compile the device refused: the input width (rule input-width, 16,384) and the
** largest axis of any tensor (rule axis-16384 under strict limits, axis-65536 under both), the
** nearest first, each as a fraction of its limit. A device compile can also fail for no rule the
** checker knows, intermittently (docs/ane-facts.md §8), which the text says too. Checks the
** program under probed limits to find its largest axis; compiles nothing. */
void ane_kernel_nearest_limit(const AneKernel *k, char *buf, size_t n);

/* Writes every kernel as the framework is given it (docs/ane-facts.md §1.5): DIR/<kernel>/model.mil and
** DIR/<kernel>/weights/<file> for each of its blobs ("@model_path/weights/<file>"), whole MILBlob
** files. DIR is created if needed (one level); files are written atomically. */
int ane_plan_dump(const AnePlanReport *r, const char *dir, Err *err);

#endif
