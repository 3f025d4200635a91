/*
** fuzz_state_common.h — comparing what a loader gave back (model configs, training states),
** field by field: structs are never compared with memcmp (their padding is not data).
*/
#ifndef ANETRAIN_FUZZ_STATE_COMMON_H
#define ANETRAIN_FUZZ_STATE_COMMON_H

#include "fuzz_common.h"
#include "model/config.h"
#include "train/checkpoint.h"
#include "util/fileio.h"

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

/* A copy of data with its checksums made right, so that the fuzzer reaches the checks behind
** them: the header's crc32 at crc_off (over the bytes before it), then `sections` sections of
** n_floats fp32 (the u64 at n_floats_off) each followed by its crc32, as far as they fit.
** NULL if the input is too short to hold the header. Layouts: io/checkpoint_file.h (checkpoint) and
** train/checkpoint.c's comment (LoRA training state). */
static inline uint8_t *fuzz_fix_checksums(const uint8_t *data, size_t size, size_t crc_off, size_t n_floats_off,
                                          int sections) {
    if (size < crc_off + 4) return NULL;
    uint8_t *p = malloc(size);
    if (!p) return NULL;
    memcpy(p, data, size);
    uint32_t crc = crc32_update(0, p, crc_off);
    for (int i = 0; i < 4; i++) p[crc_off + (size_t)i] = (uint8_t)(crc >> (8 * i));
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)p[n_floats_off + (size_t)i] << (8 * i);
    size_t at = crc_off + 4;
    for (int s = 0; s < sections && n <= (size - at) / 4; s++) {
        size_t bytes = (size_t)n * 4;
        if (size - at < bytes + 4) break;
        crc = crc32_update(0, p + at, bytes);
        for (int i = 0; i < 4; i++) p[at + bytes + (size_t)i] = (uint8_t)(crc >> (8 * i));
        at += bytes + 4;
    }
    return p;
}

/* One fuzzer input through one_input as it is, then again with its checksums made right
** (fuzz_fix_checksums' arguments), for the formats that guard their sections with crc32s. */
static inline void fuzz_with_fixed_checksums(int (*one_input)(const uint8_t *, size_t), const uint8_t *data,
                                             size_t size, size_t crc_off, size_t n_floats_off, int sections) {
    one_input(data, size);
    uint8_t *fixed = fuzz_fix_checksums(data, size, crc_off, n_floats_off, sections);
    if (fixed) one_input(fixed, size);
    free(fixed);
}

#endif
