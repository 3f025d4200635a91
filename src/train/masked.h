/*
** masked.h — the mean of a masked loss over the counted tokens of a whole optimizer step.
**
** A backend divides each micro-batch's loss (and scales its gradients) by its B*T positions,
** ignored ones included (backend.h: targets < 0 add nothing). With n_counted the number of
** targets >= 0 over every micro-batch of the step (all `accum` of them), the step's loss is the
** mean over its counted tokens, as PyTorch's cross_entropy(ignore_index) over the whole step,
** when each micro-batch runs with
**     grad_scale = loss_scale * B*T / n_counted        (the backend divides by B*T again)
** and its loss is multiplied by B*T / n_counted; the step's loss is then the sum of these.
** n_counted 0 (nothing to learn from) is the caller's to refuse.
*/
#ifndef ANETRAIN_MASKED_H
#define ANETRAIN_MASKED_H

#include <stddef.h>
#include <stdint.h>

/* Targets >= 0 among targets[0, n). */
static inline long long masked_count(const int32_t *targets, size_t n) {
    long long k = 0;
    for (size_t i = 0; i < n; i++) k += targets[i] >= 0;
    return k;
}

/* What the B*T-position mean of a micro-batch is multiplied by (loss and grad_scale alike). */
static inline double masked_factor(int B, int T, long long n_counted) {
    return (double)B * (double)T / (double)n_counted;
}

#endif
