/*
** generate.h — inference for one sequence with a KV cache, and the sampler.
**
** A Generator holds the model's weights (borrowed, never copied or changed), a key/value
** cache for up to max_seq positions, and every activation buffer, all allocated once in
** gen_create. Feeding tokens runs the forward pass of exactly the model the CPU backend
** defines (backend/cpu.c: both RoPE styles, GQA head h -> KV head h / (H/KV), Qwen3's
** per-head q/k RMSNorm before RoPE, tied or untied classifier), one position at a time
** or, for a prompt, in chunks of up to max_chunk tokens with matrix-matrix products.
** tests/test_generate.c checks its logits against the backend's full forward pass.
**
** It never prints, never exits, and never allocates after gen_create. It must not be
** used from two threads at once; it runs as a team on the thread pool (util/parallel.h).
**
** The sampler turns logits into a token id the way llama2.c's run.c does: argmax at
** temperature 0, else softmax(logits / temperature) and nucleus (top-p) sampling, drawing
** from util/rng.h (so only temperature 0 reproduces run.c's tokens: its RNG differs).
*/
#ifndef ANETRAIN_GENERATE_H
#define ANETRAIN_GENERATE_H

#include <stdint.h>

#include "../model/params.h"
#include "../util/err.h"
#include "../util/rng.h"

/* ------------------------------------------------------------------ the generator */

typedef struct Generator Generator;

typedef struct {
    int max_seq;   /* KV cache positions; 0 = the model's max_seq_len. At most max_seq_len. */
    int max_chunk; /* tokens per prefill chunk; 0 = 64. 1 = feed prompts one token at a time. */
    int threads;   /* team members including the caller; 0 = the pool's size (parallel_init sets it).
                   ** At most parallel_threads() of them take part at each call. */
} GenOptions;

/* Allocates everything for layout's model; params (layout.n_floats floats) must outlive the
** generator. It starts no thread: call parallel_init with the threads wanted first (the CLI does
** from --threads). BLAS is used single-threaded from each member: call blas_set_threads(1) first
** when it matters for speed (the CLI does). */
int gen_create(Generator **out, const ParamLayout *layout, const float *params, const GenOptions *opt,
               Err *err);
void gen_free(Generator *g);

/* Bytes gen_create would allocate (the KV cache dominates: 2 * L * max_seq * KV*D floats). */
double gen_bytes(const ModelConfig *cfg, const GenOptions *opt);

/* Feeds tokens[0..n) at positions pos .. pos+n-1 (pos = gen_pos()), appending their keys and
** values to the cache, and leaves the logits after the last one in gen_logits(). With
** logits_all != NULL it also writes the logits at every fed position: logits_all [n][V].
** Fails (and feeds nothing) if the cache cannot hold n more positions or an id is not < V. */
int gen_feed(Generator *g, const int32_t *tokens, int n, float *logits_all, Err *err);

/* The logits [V] predicting the token after the last one fed (valid once something was fed). */
const float *gen_logits(const Generator *g);

/* Positions held by the cache (the next token is fed at this position). */
int gen_pos(const Generator *g);
int gen_max_seq(const Generator *g);
int gen_threads(const Generator *g); /* members taking part: min(threads, parallel_threads()) */

/* Forgets the positions >= pos (0 <= pos <= gen_pos()): the next token is fed at pos. The
** logits are stale until the next gen_feed. Used by chat to reuse a conversation's prefix. */
void gen_rewind(Generator *g, int pos);

/* ------------------------------------------------------------------ the sampler */

typedef struct {
    float p;    /* probability */
    int32_t id; /* token id */
} SamplerCandidate;

typedef struct {
    int vocab;              /* V: logits per call */
    float temperature;      /* 0: argmax */
    float top_p;            /* nucleus mass in (0, 1]; 1 samples from the whole distribution */
    Rng rng;
    float *probs;           /* [V] scratch: softmax(logits / temperature) */
    SamplerCandidate *cand; /* [V] scratch: the nucleus, most probable first */
} Sampler;

/* temperature >= 0 (finite), top_p in (0, 1]. The seed makes sampling reproducible. */
int sampler_init(Sampler *s, int vocab, float temperature, float top_p, uint64_t seed, Err *err);
void sampler_free(Sampler *s);

/* Next token id from logits [V] (not modified). Temperature 0: the first index of the maximum.
** Otherwise, as run.c: p = softmax(logits / temperature); then with top_p = 1 one uniform draw
** u in [0, 1) picks the first id whose cumulative probability exceeds u; with top_p < 1 the
** draw is made the same way inside the nucleus (sampler_nucleus), scaled to its mass. */
int sampler_sample(Sampler *s, const float *logits);

/* The first index of the largest of x[0..n). */
int sampler_argmax(const float *x, int n);

/* The nucleus of probs [V] (summing to 1) for s->top_p < 1, as run.c: the candidates with
** p >= (1 - top_p) / (V - 1) (the others cannot be in it) sorted by p descending, ties by
** lower id, cut after the shortest prefix whose mass exceeds top_p (the whole list if none
** does). Fills s->cand[0..n) and returns n (0 only if no candidate passed the cutoff). */
int sampler_nucleus(Sampler *s, const float *probs);

#endif
