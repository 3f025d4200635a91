/*
** optim.h — AdamW over the one parameter buffer, global-norm clipping, the LR schedule.
**
** AdamW exactly as torch.optim.AdamW (decoupled decay: p -= lr*wd*p before the Adam
** update; bias corrections folded into the step size and the denominator). Weight decay
** applies only to tensors whose TensorSpec says `decay` (matrices and the embedding, as
** llama2.c's configure_optimizers). fp32 master weights; moments m and v share the layout.
*/
#ifndef ANETRAIN_OPTIM_H
#define ANETRAIN_OPTIM_H

#include <stddef.h>

#include "../model/params.h"

typedef struct {
    float beta1, beta2, eps, weight_decay;
} AdamWConfig;

/* One update with learning rate lr at 1-based step t. */
void adamw_step(const ParamLayout *layout, const AdamWConfig *cfg, float *params, const float *grads, float *m,
                float *v, float lr, long t);

/* Global L2 norm of the gradient buffer (accumulated in double). */
double grad_global_norm(const float *grads, size_t n);
/* If max_norm > 0 and norm > max_norm, scales grads by max_norm / (norm + 1e-6), as
** torch.nn.utils.clip_grad_norm_. Returns the norm before clipping. */
double grad_clip(float *grads, size_t n, float max_norm);

/* Learning rate at 0-based step: linear warmup over `warmup` steps ((step+1)/warmup * lr),
** then cosine decay from lr to min_lr at step total-1 (constant lr when min_lr == lr). */
float lr_schedule(long step, long total, long warmup, float lr, float min_lr);

#endif
