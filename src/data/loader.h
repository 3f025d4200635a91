/*
** loader.h — batches of training windows from a token stream.
**
** A window of T+1 consecutive tokens gives inputs [0..T) and targets [1..T]. The token
** stream is split once: the first (1 - val_frac) of it trains, the rest validates (no
** window crosses the boundary). Two orders for training windows:
**   random      each row starts at a uniformly drawn offset (the loader's own RNG)
**   sequential  row r of the run (r = micro_step * B + b, counting every micro-batch since
**               step 0) reads tokens [r*T, r*T + T + 1) of the training split, wrapping
**               around to the start when the split is exhausted.
** Validation always reads the validation split sequentially from its start, so every
** evaluation sees the same windows. The loader state (RNG and row counter) is a few words
** that checkpoints store, so a resumed run reads exactly what an uninterrupted one would.
**
** Data parallel (N processes, dist.h): every rank holds the same loader (same seed) and reads
** the one stream of rows a single process reads. Step k's global batch is N x accum
** micro-batches of B rows, micro-batch g = r*accum + a (rank-major) being rank r's a-th: rank r
** skips (loader_skip_train) the r*accum*B rows before its own, reads its accum micro-batches, and
** skips the (N-1-r)*accum*B rows after them. So `-np N --batch B --accum A` trains on exactly
** the rows of one process with `--batch B --accum N*A`, in the same order, and every rank's
** loader state after a step is that process's (what a checkpoint stores).
*/
#ifndef ANETRAIN_LOADER_H
#define ANETRAIN_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"
#include "../util/rng.h"

typedef enum { ORDER_RANDOM = 0, ORDER_SEQUENTIAL = 1 } LoaderOrder;

typedef struct {
    Rng rng;          /* draws random window offsets */
    uint64_t rows;    /* training rows handed out so far */
} LoaderState;

typedef struct {
    const int32_t *tokens; /* not owned */
    size_t n_train;        /* tokens [0, n_train) train */
    size_t n_val;          /* tokens [n_train, n_train + n_val) validate */
    int B, T;
    LoaderOrder order;
    LoaderState state;
} Loader;

/* val_frac in [0, 1): 0 means no validation split. Fails (naming the file) when the training
** split holds fewer than T+1 tokens, or a requested validation split fewer than T+1. */
int loader_init(Loader *ld, const int32_t *tokens, size_t n_tokens, double val_frac, int B, int T, LoaderOrder order,
                uint64_t seed, const char *path, Err *err);

/* Fills inputs and targets [B][T] with the next training batch. */
void loader_next_train(Loader *ld, int32_t *inputs, int32_t *targets);

/* Advances the training stream by `rows` rows as if they were read (the same RNG draws). */
void loader_skip_train(Loader *ld, uint64_t rows);

/* Number of distinct validation windows of T+1 tokens (non-overlapping, stride T). */
size_t loader_val_windows(const Loader *ld);
/* Fills rows [0, n) with validation windows first_window .. first_window+n-1 (n <= B). */
void loader_val_batch(const Loader *ld, size_t first_window, int n, int32_t *inputs, int32_t *targets);

#endif
