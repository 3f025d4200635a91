/*
** sampler.c — logits to a token id: argmax, temperature, nucleus (top-p), as llama2.c's run.c.
**
** The arithmetic follows run.c step by step (divide by the temperature, softmax with the
** maximum subtracted, the (1 - top_p) / (V - 1) pre-filter, the cumulative search) so that
** the same probabilities and the same uniform number pick the same token. The uniform
** number comes from util/rng.h, not run.c's xorshift: only temperature 0 (argmax, no random
** number at all) reproduces run.c's tokens. Ties in the sort go to the lower id (run.c's
** qsort leaves them in an unspecified order), so results never depend on the C library.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"

int sampler_init(Sampler *s, int vocab, float temperature, float top_p, uint64_t seed, Err *err) {
    memset(s, 0, sizeof *s);
    if (vocab < 1) return err_set(err, "sampler: vocabulary size: expected >= 1, found %d", vocab);
    if (!(temperature >= 0) || !isfinite(temperature))
        return err_set(err, "--temperature: expected a finite value >= 0, found %g", (double)temperature);
    if (!(top_p > 0 && top_p <= 1)) return err_set(err, "--top-p: expected a value in (0, 1], found %g", (double)top_p);
    s->vocab = vocab;
    s->temperature = temperature;
    s->top_p = top_p;
    rng_seed(&s->rng, seed);
    s->probs = err_malloc((size_t)vocab * sizeof *s->probs, "sampler probabilities", err);
    s->cand = err_malloc((size_t)vocab * sizeof *s->cand, "sampler candidates", err);
    if (!s->probs || !s->cand) {
        sampler_free(s);
        return -1;
    }
    return 0;
}

void sampler_free(Sampler *s) {
    free(s->probs);
    free(s->cand);
    s->probs = NULL;
    s->cand = NULL;
}

int sampler_argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int by_prob_desc(const void *a, const void *b) {
    const SamplerCandidate *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* 1 if candidate a comes before b in the nucleus order: higher probability, then lower id. */
static int before(const SamplerCandidate *a, const SamplerCandidate *b) {
    return a->p > b->p || (a->p == b->p && a->id < b->id);
}

/* Rearranges c[0..n) so that c[0..k) are the k first in nucleus order (in any order): a
** quickselect with a median-of-three pivot. The order is total (ids differ), so the set is
** exactly the first k of a full sort. */
static void select_first(SamplerCandidate *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        SamplerCandidate a = c[lo], b = c[mid], d = c[hi], pivot;
        if (before(&a, &b)) pivot = before(&b, &d) ? b : (before(&a, &d) ? d : a);
        else pivot = before(&a, &d) ? a : (before(&b, &d) ? d : b);
        int i = lo, j = hi;
        while (i <= j) {
            while (before(&c[i], &pivot)) i++;
            while (before(&pivot, &c[j])) j--;
            if (i <= j) {
                SamplerCandidate t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

int sampler_nucleus(Sampler *s, const float *probs) {
    int V = s->vocab, n = 0;
    /* A token below the cutoff cannot be in the nucleus: even if all of them were, their mass
    ** would be < 1 - top_p. Filtering first keeps the sort short. */
    float cutoff = V > 1 ? (1.0f - s->top_p) / (float)(V - 1) : 0.0f;
    for (int i = 0; i < V; i++)
        if (probs[i] >= cutoff) s->cand[n++] = (SamplerCandidate){probs[i], i};
    /* Sorting all candidates (run.c's way) costs milliseconds for a flat distribution over
    ** Qwen3's 151936 ids; the nucleus is usually short. So sort only the first k (selected in
    ** linear time), growing k until the cumulative sum, added in sorted order as run.c does,
    ** exceeds top_p: the same ids in the same order as sorting everything. */
    for (int k = n < 256 ? n : 256;; k = k > n / 4 ? n : 4 * k) {
        if (k < n) select_first(s->cand, n, k);
        qsort(s->cand, (size_t)k, sizeof *s->cand, by_prob_desc);
        float cumulative = 0;
        for (int i = 0; i < k; i++) {
            cumulative += s->cand[i].p;
            if (cumulative > s->top_p) return i + 1;
        }
        if (k == n) return n;
    }
}

int sampler_sample(Sampler *s, const float *logits) {
    int V = s->vocab;
    if (s->temperature == 0) return sampler_argmax(logits, V);
    float *p = s->probs, mx = logits[0] / s->temperature, sum = 0;
    for (int i = 0; i < V; i++) {
        p[i] = logits[i] / s->temperature;
        mx = p[i] > mx ? p[i] : mx;
    }
    for (int i = 0; i < V; i++) {
        p[i] = expf(p[i] - mx);
        sum += p[i];
    }
    for (int i = 0; i < V; i++) p[i] /= sum;
    float coin = rng_uniform(&s->rng);
    if (s->top_p >= 1) {
        float cdf = 0;
        for (int i = 0; i < V; i++) {
            cdf += p[i];
            if (coin < cdf) return i;
        }
        return V - 1; /* rounding: the sum fell short of coin */
    }
    int n = sampler_nucleus(s, p);
    if (n == 0) return sampler_argmax(p, V); /* only when top_p < 1/V and p is uniform */
    float mass = 0;
    for (int i = 0; i < n; i++) mass += s->cand[i].p;
    float r = coin * mass, cdf = 0;
    for (int i = 0; i < n; i++) {
        cdf += s->cand[i].p;
        if (r < cdf) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
