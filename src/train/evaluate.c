/*
** evaluate.c — windowed evaluation loss (see evaluate.h).
*/
#include "evaluate.h"

#include <string.h>

size_t eval_windows(size_t n_tokens, int T) { return n_tokens > (size_t)T ? (n_tokens - 1) / (size_t)T : 0; }

int eval_loss(Backend *backend, const float *params, const float *adapter, const int32_t *tokens, size_t n_windows,
              int B, int T, int32_t *inputs, int32_t *targets, double *loss,
              void (*progress)(size_t done, size_t total), Err *err) {
    if (n_windows == 0) return err_set(err, "evaluation: no window of %d tokens to evaluate", T + 1);
    double total = 0;
    for (size_t w = 0; w < n_windows; w += (size_t)B) {
        int nb = n_windows - w < (size_t)B ? (int)(n_windows - w) : B;
        for (int b = 0; b < nb; b++) {
            const int32_t *src = tokens + (w + (size_t)b) * (size_t)T;
            memcpy(inputs + (size_t)b * T, src, (size_t)T * sizeof(int32_t));
            memcpy(targets + (size_t)b * T, src + 1, (size_t)T * sizeof(int32_t));
        }
        double l;
        StepArgs args = {params, NULL, adapter, NULL, inputs, targets, nb, T, 1.0f, NULL, 0};
        if (backend->step(backend, &args, &l, err) != 0) return -1;
        total += l * nb;
        if (progress) progress(w + (size_t)nb, n_windows);
    }
    *loss = total / (double)n_windows;
    return 0;
}

int eval_examples_loss(Backend *backend, const float *params, const float *adapter, const ExampleBatches *rows,
                       size_t max_batches, int32_t *inputs, int32_t *targets, double *loss, long long *counted,
                       void (*progress)(size_t done, size_t total), Err *err) {
    int B = rows->B, T = rows->T;
    double total = 0;
    long long n = 0;
    size_t batches = 0;
    for (size_t first = 0; first < rows->n_kept; first += (size_t)B) {
        if (max_batches > 0 && batches++ == max_batches) break;
        int nb = rows->n_kept - first < (size_t)B ? (int)(rows->n_kept - first) : B;
        n += example_batches_fill(rows, first, nb, inputs, targets);
        double l;
        StepArgs args = {params, NULL, adapter, NULL, inputs, targets, nb, T, 1.0f, NULL, 0};
        if (backend->step(backend, &args, &l, err) != 0) return -1;
        total += l * nb * T; /* the batch's loss summed over its counted targets (backend.h) */
        if (progress) progress(first + (size_t)nb, rows->n_kept);
    }
    *loss = total / (double)n; /* n > 0: every kept row counts a target */
    if (counted) *counted = n;
    return 0;
}
