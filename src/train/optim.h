/*
** optim.h — AdamW over the one parameter buffer, global-norm clipping, the LR schedule.
**
** AdamW exactly as torch.optim.AdamW (decoupled decay: p -= lr*wd*p before the Adam
** update; bias corrections folded into the step size and the denominator). Weight decay
** applies only to tensors whose TensorSpec says `decay` (matrices and the embedding, as
** llama2.c's configure_optimizers). fp32 master weights; moments m and v share the layout.
**
** Clipping as torch.nn.utils.clip_grad_norm_, but without a separate pass over the
** gradients: the clip coefficient is handed to adamw_step, which scales each gradient as it
** reads it (the same float multiply torch does in place, so the result is identical).
*/
#ifndef ANETRAIN_OPTIM_H
#define ANETRAIN_OPTIM_H

#include <stddef.h>

#include "../model/params.h"

typedef struct {
    float beta1, beta2, eps, weight_decay;
} AdamWConfig;

/* Global L2 norm of the gradient buffer: double partial sums over fixed blocks, added in
** block order, so the result does not depend on the thread count. */
double grad_global_norm(const float *grads, size_t n);

/* torch's clip coefficient: max_norm / (norm + 1e-6) when that is below 1, else 1 (also 1
** when max_norm <= 0, i.e. clipping disabled). */
float grad_clip_coef(double norm, float max_norm);

/* One AdamW update with learning rate lr at 1-based step t, using grads * grad_scale as
** the gradient (grad_scale carries the clip coefficient; 1 for none). */
void adamw_step(const ParamLayout *layout, const AdamWConfig *cfg, float *params, const float *grads, float *m,
                float *v, float lr, long t, float grad_scale);

/* Learning rate at 0-based step: linear warmup over `warmup` steps ((step+1)/warmup * lr),
** then cosine decay from lr to min_lr at step total-1 (constant lr when min_lr == lr). */
float lr_schedule(long step, long total, long warmup, float lr, float min_lr);

#endif
