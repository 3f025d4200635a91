/*
** fuzz_state_common.h — comparing what a loader gave back (model configs, training states),
** field by field: structs are never compared with memcmp (their padding is not data).
*/
#ifndef ANETRAIN_FUZZ_STATE_COMMON_H
#define ANETRAIN_FUZZ_STATE_COMMON_H

#include "fuzz_common.h"
#include "model/config.h"
#include "train/checkpoint.h"

static inline void fuzz_check_config(const ModelConfig *a, const ModelConfig *b) {
    char diff[256];
    FUZZ_CHECK(!config_difference(a, b, diff, sizeof diff), "config: %s", diff);
    FUZZ_CHECK(fuzz_same_bits(&a->rope_theta, &b->rope_theta, sizeof(float)) &&
                   fuzz_same_bits(&a->norm_eps, &b->norm_eps, sizeof(float)),
               "rope_theta / norm_eps bits");
}

static inline void fuzz_check_state(const TrainState *a, const TrainState *b) {
    FUZZ_CHECK(a->step == b->step && a->tokens_seen == b->tokens_seen && a->clean_steps == b->clean_steps &&
                   a->skipped_steps == b->skipped_steps && a->loader.rows == b->loader.rows,
               "train state counters");
    FUZZ_CHECK(!memcmp(a->rng.s, b->rng.s, sizeof a->rng.s) && !memcmp(a->loader.rng.s, b->loader.rng.s, sizeof a->rng.s),
               "rng states");
    FUZZ_CHECK(fuzz_same_bits(&a->loss_scale, &b->loss_scale, sizeof(float)), "loss scale bits");
}

#endif
