/*
** optim.c — AdamW, gradient clipping and the learning-rate schedule (see optim.h).
*/
#include "optim.h"

#include <math.h>

#include "../util/parallel.h"

enum { BLOCK = 16384 }; /* floats per parallel task */

typedef struct {
    float *p, *m, *v;
    const float *g;
    size_t n;
    float beta1, beta2, eps;
    float decay_factor; /* 1 - lr*wd for decayed tensors, 1 otherwise */
    float step_size;    /* lr / (1 - beta1^t) */
    float bias2_sqrt;   /* sqrt(1 - beta2^t) */
} AdamWJob;

static void adamw_blocks(void *ctx, int begin, int end, int worker) {
    (void)worker;
    const AdamWJob *j = ctx;
    size_t lo = (size_t)begin * BLOCK, hi = (size_t)end * BLOCK;
    if (hi > j->n) hi = j->n;
    float b1 = j->beta1, b2 = j->beta2;
    for (size_t i = lo; i < hi; i++) {
        float g = j->g[i];
        float m = j->m[i] = b1 * j->m[i] + (1 - b1) * g;
        float v = j->v[i] = b2 * j->v[i] + (1 - b2) * g * g;
        float p = j->p[i] * j->decay_factor;
        j->p[i] = p - j->step_size * (m / (sqrtf(v) / j->bias2_sqrt + j->eps));
    }
}

void adamw_step(const ParamLayout *layout, const AdamWConfig *cfg, float *params, const float *grads, float *m,
                float *v, float lr, long t) {
    double bias1 = 1.0 - pow(cfg->beta1, (double)t), bias2 = 1.0 - pow(cfg->beta2, (double)t);
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *ts = &layout->t[k];
        if (!ts->present) continue;
        AdamWJob j = {params + ts->offset, m + ts->offset, v + ts->offset, grads + ts->offset, ts->numel,
                      cfg->beta1, cfg->beta2, cfg->eps,
                      ts->decay ? (float)(1.0 - (double)lr * cfg->weight_decay) : 1.0f,
                      (float)(lr / bias1), (float)sqrt(bias2)};
        parallel_for((int)((ts->numel + BLOCK - 1) / BLOCK), adamw_blocks, &j);
    }
}

double grad_global_norm(const float *grads, size_t n) {
    /* Sequential double accumulation: deterministic whatever the thread count. */
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)grads[i] * grads[i];
    return sqrt(sum);
}

double grad_clip(float *grads, size_t n, float max_norm) {
    double norm = grad_global_norm(grads, n);
    if (max_norm > 0 && norm > max_norm) {
        float coef = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < n; i++) grads[i] *= coef;
    }
    return norm;
}

float lr_schedule(long step, long total, long warmup, float lr, float min_lr) {
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    long decay_steps = total - warmup - 1;
    if (decay_steps <= 0) return lr;
    double ratio = (double)(step - warmup) / (double)decay_steps;
    if (ratio > 1) ratio = 1;
    double coeff = 0.5 * (1.0 + cos(3.14159265358979323846 * ratio));
    return (float)(min_lr + coeff * (lr - min_lr));
}
