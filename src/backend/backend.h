/*
** backend.h — the seam between the trainer and whatever executes the model.
**
** A backend runs one micro-batch: the forward pass, the loss, and (when gradients are
** asked for) the backward pass, accumulating parameter gradients into the one gradient
** buffer laid out like the parameters. The trainer owns everything around it: data,
** accumulation, clipping, the optimizer, checkpoints. Backends: "cpu" (fp32 reference,
** backend/cpu.c); "ane" arrives with the ANE issue behind this same interface.
*/
#ifndef ANETRAIN_BACKEND_H
#define ANETRAIN_BACKEND_H

#include <stdint.h>

#include "../model/params.h"
#include "../util/err.h"

typedef struct Backend Backend;

struct Backend {
    const char *name;
    /* inputs, targets [B][T] token ids (< vocab, checked by the caller); B <= max_B, T <= max_T.
    ** Returns the mean cross-entropy over the B*T positions in *loss.
    ** grads == NULL: forward only. Otherwise grads += grad_scale * dloss/dparams.
    ** logits != NULL: also copies the logits out, [B][V][T] (channel-first per sequence). */
    int (*step)(Backend *self, const float *params, float *grads, const int32_t *inputs, const int32_t *targets,
                int B, int T, float grad_scale, double *loss, float *logits, Err *err);
    void (*destroy)(Backend *self);
};

/* The fp32 reference backend. Allocates every activation buffer for max_B x max_T now;
** nothing is allocated inside step. Per-thread scratch is sized for parallel_threads() at
** creation: step fails if the pool has grown since. */
Backend *backend_cpu_create(const ParamLayout *layout, int max_B, int max_T, Err *err);

/* Bytes the CPU backend would allocate for these sizes (for messages and --help). */
double backend_cpu_bytes(const ModelConfig *cfg, int max_B, int max_T);

#endif
