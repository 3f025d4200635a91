/*
** test_tiny_run.h — what test_trainer and test_run train on: a token file of 20,000 ids over a
** 64-piece vocabulary (id 1 every 7th position, random ids in [3, 63) between, seed 5), and
** TrainOptions for the "tiny" preset with that vocabulary at the defaults (train_options_default)
** but for batch 2 x 32, a 10% validation split and seed 7; each test sets the rest.
** Header-only (static), included after test.h.
*/
#ifndef ANETRAIN_TEST_TINY_RUN_H
#define ANETRAIN_TEST_TINY_RUN_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "data/tokfile.h"
#include "train/trainer.h"
#include "util/rng.h"

/* Writes the token file at path; exits (2) if it cannot. */
static void tiny_run_write_tokens(const char *path) {
    enum { N = 20000 };
    static int32_t ids[N];
    Rng rng;
    rng_seed(&rng, 5);
    for (int i = 0; i < N; i++) ids[i] = (int32_t)(i % 7 == 0 ? 1 : 3 + rng_below(&rng, 60));
    Err err;
    if (tokfile_save(path, ids, N, 0, 2, 0, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
}

/* The tiny model's options on the token file at data_path (which must outlive them). */
static TrainOptions tiny_run_options(const char *data_path) {
    TrainOptions o;
    train_options_default(&o);
    Err err;
    config_from_preset(&o.cfg, "tiny", &err);
    o.cfg.vocab_size = 64;
    o.data_path = data_path;
    o.val_frac = 0.1;
    o.batch = 2;
    o.seq = 32;
    o.seed = 7;
    return o;
}

#endif
