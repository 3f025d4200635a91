/*
** rng.h — a small deterministic random generator (xoshiro256** seeded by splitmix64).
**
** The whole state is four words, so checkpoints store it and a resumed run draws the
** same numbers an uninterrupted one would. Never use rand() anywhere in the project.
*/
#ifndef ANETRAIN_RNG_H
#define ANETRAIN_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

void rng_seed(Rng *rng, uint64_t seed);
uint64_t rng_next_u64(Rng *rng);
/* Uniform in [0, n) without modulo bias; n > 0. */
uint64_t rng_below(Rng *rng, uint64_t n);
/* Uniform float in [0, 1). */
float rng_uniform(Rng *rng);
/* Standard normal (Box-Muller, one value per call). */
double rng_normal(Rng *rng);

#endif
