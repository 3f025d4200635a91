/*
** optim.c — AdamW, gradient norm and clipping coefficient, learning-rate schedule.
**
** The optimizer is one streaming pass over four buffers of every parameter (p, g, m, v):
** memory-bound, so it is written to vectorize (restrict locals, no calls in the loop) and
** split across the thread pool in fixed blocks, handed out on demand (parallel_tasks).
*/
#include "optim.h"

#include <math.h>

#include "../util/parallel.h"

enum { BLOCK = 1 << 16 }; /* floats per parallel task; also the norm's summation unit */
enum { NORM_LANES = 32 };  /* independent partial sums per block in grad_global_norm */

typedef struct {
    float *p, *m, *v;
    const float *g;
    size_t n;
    float beta1, beta2, eps;
    float grad_scale;   /* clip coefficient */
    float decay_factor; /* 1 - lr*wd for decayed tensors, 1 otherwise */
    float step_size;    /* lr / (1 - beta1^t) */
    float bias2_sqrt;   /* sqrt(1 - beta2^t) */
} AdamWJob;

static void adamw_blocks(void *ctx, int begin, int end, int worker) {
    (void)worker;
    const AdamWJob *j = ctx;
    size_t lo = (size_t)begin * BLOCK, hi = (size_t)end * BLOCK;
    if (hi > j->n) hi = j->n;
    float *restrict p = j->p, *restrict m = j->m, *restrict v = j->v;
    const float *restrict g = j->g;
    const float b1 = j->beta1, b2 = j->beta2, eps = j->eps, scale = j->grad_scale, decay = j->decay_factor;
    const float step_size = j->step_size, bias2_sqrt = j->bias2_sqrt;
    for (size_t i = lo; i < hi; i++) {
        float gi = g[i] * scale;
        float mi = m[i] = b1 * m[i] + (1 - b1) * gi;
        float vi = v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        p[i] = p[i] * decay - step_size * (mi / (sqrtf(vi) / bias2_sqrt + eps));
    }
}

void adamw_step(const ParamLayout *layout, const AdamWConfig *cfg, float *params, const float *grads, float *m,
                float *v, float lr, long t, float grad_scale) {
    double bias1 = 1.0 - pow(cfg->beta1, (double)t), bias2 = 1.0 - pow(cfg->beta2, (double)t);
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *ts = &layout->t[k];
        if (!ts->present) continue;
        AdamWJob j = {params + ts->offset, m + ts->offset, v + ts->offset, grads + ts->offset, ts->numel,
                      cfg->beta1, cfg->beta2, cfg->eps, grad_scale,
                      ts->decay ? (float)(1.0 - (double)lr * cfg->weight_decay) : 1.0f,
                      (float)(lr / bias1), (float)sqrt(bias2)};
        parallel_tasks((int)((ts->numel + BLOCK - 1) / BLOCK), 1, adamw_blocks, &j);
    }
}

typedef struct {
    const float *g;
    size_t n;
    double *partial; /* one sum per block */
} NormJob;

static void norm_blocks(void *ctx, int begin, int end, int worker) {
    (void)worker;
    NormJob *j = ctx;
    for (int b = begin; b < end; b++) {
        size_t lo = (size_t)b * BLOCK, hi = lo + BLOCK < j->n ? lo + BLOCK : j->n;
        /* Squares summed in double, exact enough for any model, in NORM_LANES independent
        ** partial sums: one running sum is a chain of dependent adds that runs at a fraction
        ** of memory speed, while the lanes vectorize. The order is fixed by the block, never
        ** by the thread count, so the norm is the same for any number of threads. */
        const float *restrict g = j->g;
        double lane[NORM_LANES] = {0};
        size_t i = lo;
        for (; i + NORM_LANES <= hi; i += NORM_LANES)
            for (int k = 0; k < NORM_LANES; k++) lane[k] += (double)g[i + k] * g[i + k];
        double sum = 0;
        for (; i < hi; i++) sum += (double)g[i] * g[i];
        for (int k = 0; k < NORM_LANES; k++) sum += lane[k];
        j->partial[b] = sum;
    }
}

double grad_global_norm(const float *grads, size_t n) {
    enum { MAX_STACK_BLOCKS = 4096 };
    size_t blocks = (n + BLOCK - 1) / BLOCK;
    double stack[MAX_STACK_BLOCKS];
    double total = 0;
    /* Models beyond 4096 blocks (268M floats) are summed in rounds of 4096 blocks. */
    for (size_t first = 0; first < blocks; first += MAX_STACK_BLOCKS) {
        size_t count = blocks - first < MAX_STACK_BLOCKS ? blocks - first : MAX_STACK_BLOCKS;
        size_t lo = first * BLOCK, len = n - lo < count * BLOCK ? n - lo : count * BLOCK;
        NormJob j = {grads + lo, len, stack};
        parallel_tasks((int)count, 1, norm_blocks, &j);
        for (size_t b = 0; b < count; b++) total += stack[b];
    }
    return sqrt(total);
}

float grad_clip_coef(double norm, float max_norm) {
    if (!(max_norm > 0)) return 1.0f;
    double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
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
