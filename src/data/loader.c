/*
** loader.c — training and validation windows from one token stream (see loader.h).
**
** This module decides which tokens each row of a batch reads; nothing else. It must never
** let a window cross the train/validation boundary or run past the end of the stream, and
** it must never keep state outside LoaderState (the RNG and the row counter), because a
** resumed run rebuilds the loader from that state alone and must read the same rows.
**
** Precisely, with n_train training tokens and windows of T+1 tokens:
**   sequential  W = (n_train - 1) / T windows at stride T; row r reads window r % W, i.e.
**               tokens [w*T, w*T + T + 1) with w = r % W (the last one ends at W*T + 1 <= n_train).
**   random      row r reads [o, o + T + 1) with o drawn uniformly from [0, n_train - T - 1].
**   validation  window w reads [n_train + w*T, n_train + w*T + T + 1), w < (n_val - 1) / T.
*/
#include "loader.h"

#include <assert.h>
#include <math.h>
#include <string.h>

int loader_init(Loader *ld, const int32_t *tokens, size_t n_tokens, double val_frac, int B, int T, LoaderOrder order,
                uint64_t seed, const char *path, Err *err) {
    memset(ld, 0, sizeof *ld);
    if (!path) path = "(token stream)";
    if (B <= 0) return err_set(err, "%s: batch size B: expected a positive value, found %d", path, B);
    if (T <= 0) return err_set(err, "%s: sequence length T: expected a positive value, found %d", path, T);
    if (!(val_frac >= 0.0 && val_frac < 1.0))
        return err_set(err, "%s: val_frac: expected a value in [0, 1), found %g", path, val_frac);
    if (order != ORDER_RANDOM && order != ORDER_SEQUENTIAL)
        return err_set(err, "%s: order: expected random (0) or sequential (1), found %d", path, (int)order);

    size_t need = (size_t)T + 1;
    size_t n_val = val_frac == 0.0 ? 0 : (size_t)floor((double)n_tokens * val_frac);
    if (n_val > n_tokens) n_val = n_tokens; /* rounding cannot do this, but keep the split inside the data */
    size_t n_train = n_tokens - n_val;
    if (n_val > 0 && n_val < need)
        return err_set(err,
                       "%s: validation split (val_frac=%g of %zu tokens): expected at least T+1=%zu tokens, "
                       "found %zu",
                       path, val_frac, n_tokens, need, n_val);
    if (n_train < need)
        return err_set(err, "%s: data file shorter than one sequence: training split: expected at least T+1=%zu "
                       "tokens, found %zu",
                       path, need, n_train);

    ld->tokens = tokens;
    ld->n_train = n_train;
    ld->n_val = n_val;
    ld->B = B;
    ld->T = T;
    ld->order = order;
    rng_seed(&ld->state.rng, seed);
    ld->state.rows = 0;
    return 0;
}

/* Copies the window starting at token `start` into one row: inputs [T], targets [T]. */
static void loader_copy_window(const Loader *ld, size_t start, int32_t *inputs, int32_t *targets) {
    size_t T = (size_t)ld->T;
    memcpy(inputs, ld->tokens + start, T * sizeof *inputs);
    memcpy(targets, ld->tokens + start + 1, T * sizeof *targets);
}

/* Start of the next training row; advances the state by one row. */
static size_t loader_next_start(Loader *ld) {
    size_t T = (size_t)ld->T;
    uint64_t r = ld->state.rows++;
    if (ld->order == ORDER_RANDOM) return (size_t)rng_below(&ld->state.rng, (uint64_t)(ld->n_train - T));
    uint64_t windows = (uint64_t)((ld->n_train - 1) / T);
    return (size_t)(r % windows) * T;
}

void loader_next_train(Loader *ld, int32_t *inputs, int32_t *targets) {
    size_t T = (size_t)ld->T;
    for (int b = 0; b < ld->B; b++) {
        size_t start = loader_next_start(ld);
        loader_copy_window(ld, start, inputs + (size_t)b * T, targets + (size_t)b * T);
    }
}

void loader_skip_train(Loader *ld, uint64_t rows) {
    for (uint64_t i = 0; i < rows; i++) (void)loader_next_start(ld);
}

size_t loader_val_windows(const Loader *ld) {
    if (ld->n_val < (size_t)ld->T + 1) return 0;
    return (ld->n_val - 1) / (size_t)ld->T;
}

void loader_val_batch(const Loader *ld, size_t first_window, int n, int32_t *inputs, int32_t *targets) {
    size_t T = (size_t)ld->T;
    assert(n >= 0 && n <= ld->B);
    assert(first_window + (size_t)n <= loader_val_windows(ld));
    for (int b = 0; b < n; b++) {
        size_t start = ld->n_train + (first_window + (size_t)b) * T;
        loader_copy_window(ld, start, inputs + (size_t)b * T, targets + (size_t)b * T);
    }
}
