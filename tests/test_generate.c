/*
** test_generate.c — KV-cache generation against the CPU backend, and the sampler.
**
**   - logits at every position, fed one token at a time and in prefill chunks of several
**     sizes, equal the CPU backend's full forward pass ([B][V][T] logits) within 1e-4 of the
**     position's largest logit, for tiny (Llama MHA, interleaved RoPE), a GQA variant with an
**     untied classifier and rotate-half RoPE, and tiny-qwen3 (GQA, q/k-norm, head_dim != C/H),
**     with 1, 2 and 3 threads (uneven shares of every matrix);
**   - greedy decoding with the cache picks the same tokens as recomputing the full forward
**     pass over the whole sequence at every step;
**   - rewinding the cache and feeding another continuation equals a fresh generator;
**   - errors: a full context, an id outside the vocabulary, options out of range;
**   - the sampler: temperature 0 is the first argmax; the nucleus is the minimal prefix of the
**     sorted distribution whose mass exceeds top_p; draws stay inside it with the right
**     frequencies; selecting it without sorting every candidate gives run.c's full-sort result;
**     the same seed gives the same tokens.
*/
#include <stdint.h>

#include "backend/backend.h"
#include "generate/generate.h"
#include "model/config.h"
#include "model/params.h"
#include "util/blas.h"
#include "util/parallel.h"
#include "util/rng.h"
#include "test.h"

static void die(const char *what, const Err *err) {
    fprintf(stderr, "test setup failed: %s: %s\n", what, err ? err->msg : "");
    exit(2);
}

/* A model with random weights; norm weights around 1 (not exactly 1) so they matter. */
typedef struct {
    const char *name;
    ParamLayout layout;
    float *params;
} Model;

static void model_make(Model *m, const char *name, const ModelConfig *cfg, uint64_t seed) {
    Err err;
    m->name = name;
    if (config_validate(cfg, name, &err) != 0) die(name, &err);
    params_layout(&m->layout, cfg);
    m->params = malloc(m->layout.n_floats * sizeof(float));
    if (!m->params) die("malloc", NULL);
    Rng rng;
    rng_seed(&rng, seed);
    params_init(&m->layout, m->params, &rng);
    TensorKind norms[] = {T_RMS_ATT, T_RMS_FFN, T_RMS_FINAL, T_Q_NORM, T_K_NORM};
    for (size_t k = 0; k < sizeof norms / sizeof norms[0]; k++) {
        const TensorSpec *ts = &m->layout.t[norms[k]];
        if (!ts->present) continue;
        for (size_t i = 0; i < ts->numel; i++) m->params[ts->offset + i] = 1.0f + 0.3f * (float)rng_normal(&rng);
    }
    /* Larger matrices than the init's 0.02 make attention non-uniform and logits spread. */
    for (size_t i = 0; i < m->layout.n_floats; i++) m->params[i] *= 4.0f;
}

static void model_configs(Model models[3]) {
    Err err;
    ModelConfig tiny, gqa, qwen;
    if (config_from_preset(&tiny, "tiny", &err) || config_from_preset(&qwen, "tiny-qwen3", &err))
        die("preset", &err);
    gqa = tiny;
    gqa.n_kv_heads = 2;
    gqa.tied = 0;
    gqa.rope_style = ROPE_HALF;
    gqa.vocab_size = 300;
    model_make(&models[0], "tiny (MHA, interleaved)", &tiny, 11);
    model_make(&models[1], "GQA untied half-RoPE", &gqa, 12);
    model_make(&models[2], "tiny-qwen3", &qwen, 13);
}

static void model_free(Model *m) { free(m->params); }

/* The backend's logits for one sequence, transposed to [T][V]. */
static void backend_logits(const Model *m, const int32_t *tokens, int T, float *out) {
    Err err;
    int V = m->layout.cfg.vocab_size;
    Backend *be = backend_cpu_create(&m->layout, 1, T, &err);
    if (!be) die("backend", &err);
    int32_t *targets = calloc((size_t)T, sizeof *targets);
    float *lg = malloc((size_t)V * T * sizeof *lg);
    double loss;
    if (!targets || !lg) die("malloc", NULL);
    if (backend_step(be, m->params, NULL, tokens, targets, 1, T, 1.0f, &loss, lg, &err) != 0) die("backend step", &err);
    for (int v = 0; v < V; v++)
        for (int t = 0; t < T; t++) out[(size_t)t * V + v] = lg[(size_t)v * T + t];
    be->destroy(be);
    free(targets);
    free(lg);
}

/* max_v |a - b| / max_v |b| at each of T positions; returns the worst. */
static double worst_rel(const float *a, const float *b, int T, int V, int *where) {
    double worst = 0;
    for (int t = 0; t < T; t++) {
        double num = 0, den = 0;
        for (int v = 0; v < V; v++) {
            double d = fabs((double)a[(size_t)t * V + v] - b[(size_t)t * V + v]);
            num = d > num ? d : num;
            den = fabs(b[(size_t)t * V + v]) > den ? fabs(b[(size_t)t * V + v]) : den;
        }
        double r = den > 0 ? num / den : num;
        if (!(r <= worst)) {
            worst = r;
            *where = t;
        }
    }
    return worst;
}

static void random_tokens(int32_t *tokens, int T, int V, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    tokens[0] = 1;
    for (int t = 1; t < T; t++) tokens[t] = (int32_t)rng_below(&rng, (uint64_t)V);
}

/* ================================================================ logits */

static void test_logits_match_backend(void) {
    Model models[3];
    model_configs(models);
    enum { T = 40 };
    int chunks[] = {1, 7, 16, 64};
    for (int mi = 0; mi < 3; mi++) {
        const Model *m = &models[mi];
        int V = m->layout.cfg.vocab_size;
        int32_t tokens[T];
        random_tokens(tokens, T, V, 100 + mi);
        float *ref = malloc((size_t)T * V * sizeof *ref), *got = malloc((size_t)T * V * sizeof *got);
        if (!ref || !got) die("malloc", NULL);
        backend_logits(m, tokens, T, ref);
        for (int threads = 1; threads <= 3; threads++) {
            Err err;
            /* one token at a time, reading gen_logits after each */
            Generator *g;
            GenOptions opt = {0, 0, threads};
            if (gen_create(&g, &m->layout, m->params, &opt, &err) != 0) die("gen_create", &err);
            for (int t = 0; t < T; t++) {
                if (gen_feed(g, &tokens[t], 1, NULL, &err) != 0) die("gen_feed", &err);
                memcpy(got + (size_t)t * V, gen_logits(g), (size_t)V * sizeof(float));
            }
            CHECK(gen_pos(g) == T, "%s: pos %d after %d tokens", m->name, gen_pos(g), T);
            int where = -1;
            double r = worst_rel(got, ref, T, V, &where);
            CHECK(r <= 1e-4, "%s, %d threads, one token at a time: position %d differs by %.3g (relative)", m->name,
                  threads, where, r);
            gen_free(g);
            /* prefill in chunks, all logits at once; then the last logits via gen_logits */
            for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
                GenOptions o2 = {0, chunks[c], threads};
                if (gen_create(&g, &m->layout, m->params, &o2, &err) != 0) die("gen_create", &err);
                memset(got, 0, (size_t)T * V * sizeof *got);
                /* two calls, so a call boundary falls inside a chunk too */
                if (gen_feed(g, tokens, 13, got, &err) != 0 ||
                    gen_feed(g, tokens + 13, T - 13, got + 13 * V, &err) != 0)
                    die("gen_feed", &err);
                r = worst_rel(got, ref, T, V, &where);
                CHECK(r <= 1e-4, "%s, %d threads, chunk %d: position %d differs by %.3g (relative)", m->name, threads,
                      chunks[c], where, r);
                r = worst_rel(gen_logits(g), ref + (size_t)(T - 1) * V, 1, V, &where);
                CHECK(r <= 1e-4, "%s, chunk %d: gen_logits after prefill differs by %.3g", m->name, chunks[c], r);
                gen_free(g);
            }
        }
        free(ref);
        free(got);
    }
    for (int mi = 0; mi < 3; mi++) model_free(&models[mi]);
}

/* Without logits_all only the last position's logits are computed: the same values. */
static void test_prefill_last_logits_only(void) {
    Model models[3];
    model_configs(models);
    const Model *m = &models[2];
    int V = m->layout.cfg.vocab_size;
    enum { T = 30 };
    int32_t tokens[T];
    random_tokens(tokens, T, V, 7);
    float *ref = malloc((size_t)T * V * sizeof *ref);
    if (!ref) die("malloc", NULL);
    backend_logits(m, tokens, T, ref);
    Err err;
    Generator *g;
    GenOptions opt = {64, 8, 2};
    if (gen_create(&g, &m->layout, m->params, &opt, &err) != 0) die("gen_create", &err);
    if (gen_feed(g, tokens, T, NULL, &err) != 0) die("gen_feed", &err);
    int where;
    double r = worst_rel(gen_logits(g), ref + (size_t)(T - 1) * V, 1, V, &where);
    CHECK(r <= 1e-4, "last logits differ by %.3g", r);
    gen_free(g);
    free(ref);
    for (int mi = 0; mi < 3; mi++) model_free(&models[mi]);
}

/* ================================================================ greedy decoding */

static void test_greedy_cache_equals_recompute(void) {
    Model models[3];
    model_configs(models);
    enum { PROMPT = 5, NEW = 30 };
    for (int mi = 0; mi < 3; mi++) {
        const Model *m = &models[mi];
        int V = m->layout.cfg.vocab_size;
        int32_t seq[PROMPT + NEW], cached[NEW], recomputed[NEW];
        random_tokens(seq, PROMPT, V, 200 + mi);
        Err err;
        Generator *g;
        GenOptions opt = {0, 0, 2};
        if (gen_create(&g, &m->layout, m->params, &opt, &err) != 0) die("gen_create", &err);
        if (gen_feed(g, seq, PROMPT, NULL, &err) != 0) die("gen_feed", &err);
        for (int i = 0; i < NEW; i++) {
            cached[i] = sampler_argmax(gen_logits(g), V);
            if (gen_feed(g, &cached[i], 1, NULL, &err) != 0) die("gen_feed", &err);
        }
        gen_free(g);
        /* the full forward pass over the whole sequence at every step */
        float *lg = malloc((size_t)(PROMPT + NEW) * V * sizeof *lg);
        if (!lg) die("malloc", NULL);
        for (int i = 0; i < NEW; i++) {
            int T = PROMPT + i;
            backend_logits(m, seq, T, lg);
            recomputed[i] = sampler_argmax(lg + (size_t)(T - 1) * V, V);
            seq[T] = recomputed[i];
        }
        free(lg);
        int same = memcmp(cached, recomputed, sizeof cached) == 0, distinct = 0;
        for (int i = 1; i < NEW; i++) distinct += cached[i] != cached[i - 1];
        CHECK(same, "%s: greedy tokens with the cache differ from recomputing", m->name);
        CHECK(distinct > 3, "%s: degenerate test, the model repeats one token (%d changes)", m->name, distinct);
    }
    for (int mi = 0; mi < 3; mi++) model_free(&models[mi]);
}

/* ================================================================ rewind, errors */

static void test_rewind(void) {
    Model models[3];
    model_configs(models);
    const Model *m = &models[1];
    int V = m->layout.cfg.vocab_size;
    enum { T = 20, KEEP = 8 };
    int32_t a[T], b[T];
    random_tokens(a, T, V, 31);
    random_tokens(b, T, V, 32);
    memcpy(b, a, KEEP * sizeof(int32_t));
    float *ref = malloc((size_t)T * V * sizeof *ref), *got = malloc((size_t)T * V * sizeof *got);
    if (!ref || !got) die("malloc", NULL);
    backend_logits(m, b, T, ref);
    Err err;
    Generator *g;
    GenOptions opt = {32, 4, 2};
    if (gen_create(&g, &m->layout, m->params, &opt, &err) != 0) die("gen_create", &err);
    if (gen_feed(g, a, T, NULL, &err) != 0) die("gen_feed", &err);
    gen_rewind(g, KEEP);
    CHECK(gen_pos(g) == KEEP, "pos %d after rewind to %d", gen_pos(g), KEEP);
    if (gen_feed(g, b + KEEP, T - KEEP, got + (size_t)KEEP * V, &err) != 0) die("gen_feed", &err);
    int where = -1;
    double r = worst_rel(got + (size_t)KEEP * V, ref + (size_t)KEEP * V, T - KEEP, V, &where);
    CHECK(r <= 1e-4, "after rewind: position %d differs by %.3g", KEEP + where, r);
    gen_free(g);
    free(ref);
    free(got);
    for (int mi = 0; mi < 3; mi++) model_free(&models[mi]);
}

static void test_errors(void) {
    Model models[3];
    model_configs(models);
    const Model *m = &models[0];
    Err err;
    Generator *g;
    GenOptions too_long = {m->layout.cfg.max_seq_len + 1, 0, 1};
    CHECK(gen_create(&g, &m->layout, m->params, &too_long, &err) != 0 && strstr(err.msg, "max_seq_len"),
          "max_seq above the model's accepted (%s)", err.msg);
    GenOptions opt = {10, 4, 2};
    if (gen_create(&g, &m->layout, m->params, &opt, &err) != 0) die("gen_create", &err);
    int32_t tokens[11] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    CHECK(gen_feed(g, tokens, 11, NULL, &err) != 0 && strstr(err.msg, "context"), "11 tokens fit 10: %s", err.msg);
    CHECK(gen_pos(g) == 0, "a failed feed moved pos to %d", gen_pos(g));
    CHECK(gen_feed(g, tokens, 10, NULL, &err) == 0, "10 tokens in 10: %s", err.msg);
    CHECK(gen_feed(g, tokens, 1, NULL, &err) != 0 && strstr(err.msg, "context full"), "full: %s", err.msg);
    gen_rewind(g, 0);
    int32_t bad[2] = {1, 512};
    CHECK(gen_feed(g, bad, 2, NULL, &err) != 0 && strstr(err.msg, "512"), "id 512 of 512 accepted: %s", err.msg);
    bad[1] = -1;
    CHECK(gen_feed(g, bad, 2, NULL, &err) != 0, "id -1 accepted");
    CHECK(gen_feed(g, bad, 0, NULL, &err) != 0, "zero tokens accepted");
    gen_free(g);
    CHECK(gen_bytes(&m->layout.cfg, &opt) > 2.0 * 10 * 2 * 64 * 4, "gen_bytes too small: %g",
          gen_bytes(&m->layout.cfg, &opt));
    for (int mi = 0; mi < 3; mi++) model_free(&models[mi]);
}

/* ================================================================ sampler */

static void test_sampler_argmax(void) {
    Err err;
    Sampler s;
    if (sampler_init(&s, 6, 0.0f, 0.9f, 1, &err) != 0) die("sampler", &err);
    float logits[6] = {0.1f, 3.0f, -2.0f, 3.0f, 2.9f, 0.0f};
    for (int i = 0; i < 5; i++) CHECK(sampler_sample(&s, logits) == 1, "temperature 0 is the first argmax");
    CHECK(sampler_argmax(logits, 6) == 1, "argmax tie goes to the first");
    float copy[6];
    memcpy(copy, logits, sizeof copy);
    sampler_free(&s);
    if (sampler_init(&s, 6, 1.0f, 0.5f, 1, &err) != 0) die("sampler", &err);
    sampler_sample(&s, logits);
    CHECK(memcmp(copy, logits, sizeof copy) == 0, "sampling changed the logits");
    sampler_free(&s);
    CHECK(sampler_init(&s, 6, -0.1f, 0.9f, 1, &err) != 0, "negative temperature accepted");
    CHECK(sampler_init(&s, 6, 1.0f, 0.0f, 1, &err) != 0, "top_p 0 accepted");
    CHECK(sampler_init(&s, 6, 1.0f, 1.01f, 1, &err) != 0, "top_p > 1 accepted");
    CHECK(sampler_init(&s, 6, NAN, 0.9f, 1, &err) != 0, "NaN temperature accepted");
}

static void test_sampler_nucleus(void) {
    Err err;
    Sampler s;
    enum { V = 8 };
    /* ids 0..7 with probabilities in a shuffled order; sorted: 5 .40, 2 .25, 7 .15, 0 .10, 3 .05, 1 .03, 6 .02, 4 0 */
    float probs[V] = {0.10f, 0.03f, 0.25f, 0.05f, 0.0f, 0.40f, 0.02f, 0.15f};
    struct {
        float top_p;
        int n;
        int ids[V];
    } cases[] = {
        {0.30f, 1, {5}},       {0.60f, 2, {5, 2}},          {0.70f, 3, {5, 2, 7}},
        {0.88f, 4, {5, 2, 7, 0}}, {0.99f, 7, {5, 2, 7, 0, 3, 1, 6}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        if (sampler_init(&s, V, 1.0f, cases[c].top_p, 1, &err) != 0) die("sampler", &err);
        int n = sampler_nucleus(&s, probs);
        CHECK(n == cases[c].n, "top_p %.2f: nucleus of %d, expected %d", (double)cases[c].top_p, n, cases[c].n);
        for (int i = 0; i < n && i < cases[c].n; i++)
            CHECK(s.cand[i].id == cases[c].ids[i], "top_p %.2f: rank %d is id %d, expected %d", (double)cases[c].top_p,
                  i, s.cand[i].id, cases[c].ids[i]);
        sampler_free(&s);
    }
    /* Draws at temperature 1 from logits = log(probs): only nucleus ids, in proportion. */
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = probs[i] > 0 ? logf(probs[i]) : -1e30f;
    if (sampler_init(&s, V, 1.0f, 0.70f, 42, &err) != 0) die("sampler", &err);
    int count[V] = {0}, draws = 20000;
    for (int i = 0; i < draws; i++) count[sampler_sample(&s, logits)]++;
    CHECK(count[0] + count[1] + count[3] + count[4] + count[6] == 0, "drew outside the nucleus {5, 2, 7}");
    double mass = 0.40 + 0.25 + 0.15;
    CHECK_CLOSE(count[5] / (double)draws, 0.40 / mass, 0.02, 0, "frequency of id 5");
    CHECK_CLOSE(count[2] / (double)draws, 0.25 / mass, 0.02, 0, "frequency of id 2");
    CHECK_CLOSE(count[7] / (double)draws, 0.15 / mass, 0.02, 0, "frequency of id 7");
    sampler_free(&s);
    /* top_p 1: the whole distribution */
    if (sampler_init(&s, V, 1.0f, 1.0f, 43, &err) != 0) die("sampler", &err);
    memset(count, 0, sizeof count);
    for (int i = 0; i < draws; i++) count[sampler_sample(&s, logits)]++;
    for (int v = 0; v < V; v++) CHECK_CLOSE(count[v] / (double)draws, probs[v], 0.015, 0, "top_p 1 frequency");
    CHECK(count[4] == 0, "drew a zero-probability id");
    sampler_free(&s);
    /* temperature sharpens: at 0.05 the top id wins nearly always */
    if (sampler_init(&s, V, 0.05f, 1.0f, 44, &err) != 0) die("sampler", &err);
    memset(count, 0, sizeof count);
    for (int i = 0; i < 2000; i++) count[sampler_sample(&s, logits)]++;
    CHECK(count[5] > 1990, "temperature 0.05: top id %d of 2000", count[5]);
    sampler_free(&s);
    /* a tiny top_p on a uniform distribution leaves no candidate: argmax, no crash */
    float flat[V] = {0};
    if (sampler_init(&s, V, 1.0f, 1e-6f, 45, &err) != 0) die("sampler", &err);
    CHECK(sampler_sample(&s, flat) == 0, "uniform, tiny top_p: expected id 0");
    sampler_free(&s);
}

/* The nucleus computed by selection equals run.c's way, sorting every candidate, on random
** distributions: flat and peaked, with many exact ties, small and Qwen3-sized. */
static int cand_cmp(const void *a, const void *b) {
    const SamplerCandidate *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static void test_sampler_nucleus_random(void) {
    Err err;
    Rng rng;
    rng_seed(&rng, 99);
    int sizes[] = {1, 2, 50, 300, 5000, 151936};
    float top_ps[] = {0.1f, 0.5f, 0.9f, 0.999f};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int V = sizes[si];
        float *p = malloc((size_t)V * sizeof *p);
        SamplerCandidate *ref = malloc((size_t)V * sizeof *ref);
        if (!p || !ref) die("malloc", NULL);
        for (int trial = 0; trial < 6; trial++) {
            double sum = 0, sharp = trial % 3 == 0 ? 0.1 : trial % 3 == 1 ? 2.0 : 6.0;
            for (int i = 0; i < V; i++) {
                /* quantized so that many probabilities tie exactly */
                double z = trial % 2 ? floor(rng_normal(&rng) * 4) / 4 : rng_normal(&rng);
                p[i] = (float)exp(sharp * z);
                sum += p[i];
            }
            for (int i = 0; i < V; i++) p[i] = (float)(p[i] / sum);
            for (size_t pi = 0; pi < sizeof top_ps / sizeof top_ps[0]; pi++) {
                Sampler s;
                if (sampler_init(&s, V, 1.0f, top_ps[pi], 1, &err) != 0) die("sampler", &err);
                int n = sampler_nucleus(&s, p);
                /* reference: filter, sort everything, cut */
                float cutoff = V > 1 ? (1.0f - top_ps[pi]) / (float)(V - 1) : 0.0f;
                int m = 0, want;
                for (int i = 0; i < V; i++)
                    if (p[i] >= cutoff) ref[m++] = (SamplerCandidate){p[i], i};
                qsort(ref, (size_t)m, sizeof *ref, cand_cmp);
                float cum = 0;
                for (want = 0; want < m;) {
                    cum += ref[want++].p;
                    if (cum > top_ps[pi]) break;
                }
                int same = n == want;
                for (int i = 0; same && i < n; i++) same = s.cand[i].id == ref[i].id;
                CHECK(same, "V %d, trial %d, top_p %g: nucleus of %d, reference %d (or other ids)", V, trial,
                      (double)top_ps[pi], n, want);
                sampler_free(&s);
            }
        }
        free(p);
        free(ref);
    }
}

static void test_sampler_seed(void) {
    Err err;
    enum { V = 1000, N = 200 };
    float *logits = malloc(V * sizeof *logits);
    if (!logits) die("malloc", NULL);
    Rng rng;
    rng_seed(&rng, 5);
    for (int i = 0; i < V; i++) logits[i] = 2.0f * (float)rng_normal(&rng);
    int a[N], b[N], c[N];
    Sampler s;
    uint64_t seeds[3] = {7, 7, 8};
    int *outs[3] = {a, b, c};
    for (int k = 0; k < 3; k++) {
        if (sampler_init(&s, V, 0.8f, 0.9f, seeds[k], &err) != 0) die("sampler", &err);
        for (int i = 0; i < N; i++) outs[k][i] = sampler_sample(&s, logits);
        sampler_free(&s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0, "the same seed gave different tokens");
    CHECK(memcmp(a, c, sizeof a) != 0, "different seeds gave the same %d tokens", N);
    free(logits);
}

int main(void) {
    parallel_init(3); /* the generators below take 1, 2 or 3 members of the pool */
    blas_set_threads(1);
    RUN(test_logits_match_backend);
    RUN(test_prefill_last_logits_only);
    RUN(test_greedy_cache_equals_recompute);
    RUN(test_rewind);
    RUN(test_errors);
    RUN(test_sampler_argmax);
    RUN(test_sampler_nucleus);
    RUN(test_sampler_nucleus_random);
    RUN(test_sampler_seed);
    return TEST_SUMMARY();
}
