/*
** test_model_grad.c — the CPU backend's gradients against finite differences of its own loss.
**
** For small Llama and Qwen3 models (tied and untied classifier, MHA and GQA), every kind of
** parameter tensor gets random elements perturbed by +-h, +-2h; the fourth-order central
** difference of the returned (double) mean loss must match the backend's gradient within a
** float tolerance. Then the contract of Backend.step around the gradient: grads += grad_scale *
** dloss/dparams (scaling, accumulation into nonzero buffers, twice), forward-only gives the same
** loss, the loss is the mean cross-entropy of the logits it returns, and results are bitwise
** repeatable for a given thread count (1 and 2).
**
** The parameters are drawn at a scale where every layer matters (unit-variance activations
** through each matrix, norm weights near but not at 1), not llama2.c's 0.02, where gradients
** would be too small for float finite differences to measure.
*/
#include <stdint.h>

#include "backend/backend.h"
#include "model/config.h"
#include "model/params.h"
#include "test.h"
#include "util/parallel.h"
#include "util/rng.h"

enum { B = 2, T = 9 };

/* Fourth-order central differences, h = 2^-5 (x +- h, x +- 2h are exact in float). Measured on
** these models (4500 elements): errors at most 2.1e-5 absolute, 7e-3 relative. Plain central
** differences do worse at any h: 1.5e-2 at h = 2^-7, 1.4e-1 at h = 2^-9, the float rounding of
** the loss (~5e-7) divided by h; 9e-3 at h = 2^-5, where truncation takes over. */
#define FD_H 0x1p-5
#define FD_PER_KIND 16      /* elements checked per tensor kind */
#define FD_RTOL 2e-2        /* |a - n| / max(FD_FLOOR, |a| + |n|) */
#define FD_FLOOR 2e-3       /* below it, the error allowed is absolute: FD_RTOL * FD_FLOOR = 4e-5 */

static int verbose;
static double worst_fd_err;

typedef struct {
    const char *name, *preset;
    int tied, n_kv_heads, head_dim;
} Variant;

static const Variant variants[] = {
    {"tiny, tied, MHA 4/4, head_dim 8", "tiny", 1, 4, 8},
    {"tiny, untied, GQA 4/2, head_dim 8", "tiny", 0, 2, 8},
    {"tiny-qwen3, tied, GQA 4/2, head_dim 16", "tiny-qwen3", 1, 2, 16},
    {"tiny-qwen3, untied, MHA 4/4, head_dim 8", "tiny-qwen3", 0, 4, 8},
};

/* One model under test: its layout, parameters and one batch. */
typedef struct {
    const Variant *variant;
    ParamLayout layout;
    float *params;
    int32_t inputs[B * T], targets[B * T];
} Model;

static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof *p);
    if (!p) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(2);
    }
    return p;
}

/* The preset made small: dim 32, hidden 64, 2 layers, 4 heads, vocab 64. */
static int model_setup(Model *m, const Variant *v, uint64_t seed) {
    Err err = {{0}};
    ModelConfig cfg;
    if (config_from_preset(&cfg, v->preset, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    cfg.dim = 32;
    cfg.hidden_dim = 64;
    cfg.n_layers = 2;
    cfg.n_heads = 4;
    cfg.n_kv_heads = v->n_kv_heads;
    cfg.head_dim = v->head_dim;
    cfg.vocab_size = 64;
    cfg.tied = v->tied;
    if (config_validate(&cfg, v->name, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    m->variant = v;
    params_layout(&m->layout, &cfg);
    m->params = falloc(m->layout.n_floats);
    Rng rng;
    rng_seed(&rng, seed);
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &m->layout.t[k];
        float *x = m->params + t->offset;
        for (size_t i = 0; i < t->numel; i++) {
            double z = rng_normal(&rng);
            if (t->rows == 1) /* norm weights */
                x[i] = (float)(1 + 0.2 * z);
            else if (k == T_TOK_EMB) /* also the classifier when tied: logits of a few units */
                x[i] = (float)(0.5 * z);
            else
                x[i] = (float)(z / sqrt((double)t->cols));
        }
    }
    for (int i = 0; i < B * T; i++) {
        m->inputs[i] = (int32_t)rng_below(&rng, (uint64_t)cfg.vocab_size);
        m->targets[i] = (int32_t)rng_below(&rng, (uint64_t)cfg.vocab_size);
    }
    return 0;
}

/* One step; a failure is a failed check and a NaN loss. */
static double run_step(Backend *be, const Model *m, float *grads, float scale, float *logits) {
    Err err = {{0}};
    double loss = NAN;
    int rc = backend_step(be, m->params, grads, m->inputs, m->targets, B, T, scale, &loss, logits, &err);
    CHECK(rc == 0, "%s: step failed: %s", m->variant->name, err.msg);
    return rc == 0 ? loss : NAN;
}

static Backend *make_backend(const Model *m) {
    Err err = {{0}};
    Backend *be = backend_cpu_create(&m->layout, B, T, &err);
    CHECK(be != NULL, "%s: backend_cpu_create: %s", m->variant->name, err.msg);
    return be;
}

/* Root mean square of g over tensor kind k: the scale of its gradients. */
static double kind_rms(const Model *m, const float *g, int k) {
    const TensorSpec *t = &m->layout.t[k];
    double ss = 0;
    for (size_t i = 0; i < t->numel; i++) ss += (double)g[t->offset + i] * g[t->offset + i];
    return t->numel ? sqrt(ss / (double)t->numel) : 0;
}

/* ------------------------------------------------------------------ finite differences */

/* Element number `pick` of kind k to check: even picks uniform over the tensor; odd picks
** uniform among the elements whose analytic gradient is at least the kind's rms, so that every
** kind gets elements well above the finite differences' noise (for tok_emb: rows the batch
** uses, or with a tied classifier any row). A wrong analytic gradient still disagrees with the
** finite difference there, and the uniform half catches gradients missing where they belong. */
static size_t pick_element(const Model *m, const float *g, int k, int pick, double rms, Rng *rng) {
    const TensorSpec *t = &m->layout.t[k];
    size_t i = t->offset + (size_t)rng_below(rng, t->numel);
    for (int tries = 0; pick % 2 == 1 && tries < 100000 && fabs((double)g[i]) < rms; tries++)
        i = t->offset + (size_t)rng_below(rng, t->numel);
    return i;
}

static void fd_check_model(Backend *be, Model *m, const float *grads, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &m->layout.t[k];
        if (!t->present) continue;
        int bad = 0, significant = 0;
        double worst = 0, rms = kind_rms(m, grads, k);
        for (int s = 0; s < FD_PER_KIND; s++) {
            size_t i = pick_element(m, grads, k, s, rms, &rng);
            float p = m->params[i];
            double L[4];
            const double step[4] = {FD_H, -FD_H, 2 * FD_H, -2 * FD_H};
            for (int j = 0; j < 4; j++) {
                m->params[i] = (float)(p + step[j]);
                L[j] = run_step(be, m, NULL, 1, NULL);
            }
            m->params[i] = p;
            double num = (8 * (L[0] - L[1]) - (L[2] - L[3])) / (12 * FD_H), a = grads[i];
            double err = fabs(a - num) / fmax(FD_FLOOR, fabs(a) + fabs(num));
            if (verbose)
                printf("    %-9s [%6zu] analytic % .6e  fd % .6e  err %.2e\n", t->name, i - t->offset, a, num, err);
            if (!(err < FD_RTOL)) {
                if (bad < 3)
                    fprintf(stderr, "    %s: %s element %zu: analytic %.7g, finite difference %.7g (err %.3g)\n",
                            m->variant->name, t->name, i - t->offset, a, num, err);
                bad++;
            }
            significant += fabs(num) > 5 * FD_FLOOR;
            if (err > worst) worst = err;
        }
        if (worst > worst_fd_err) worst_fd_err = worst;
        CHECK(bad == 0, "%s: %s: %d of %d elements off (worst %.3g)", m->variant->name, t->name, bad, FD_PER_KIND,
              worst);
        CHECK(4 * significant >= FD_PER_KIND, "%s: %s: only %d of %d gradients above %g; the check says nothing",
              m->variant->name, t->name, significant, FD_PER_KIND, 5 * FD_FLOOR);
    }
}

/* ------------------------------------------------------------------ the step's contract */

/* got against want, kind by kind: |got - want| <= rtol * (|want| + rms of want over the kind),
** the rms term standing in for the size of the terms an element sums. */
static void check_grads_close(const char *what, const Model *m, const float *got, const float *want, double rtol) {
    double worst_all = 0;
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &m->layout.t[k];
        if (!t->present) continue;
        double rms = kind_rms(m, want, k), worst = 0;
        size_t worst_i = 0;
        int bad = 0;
        for (size_t j = 0; j < t->numel; j++) {
            size_t i = t->offset + j;
            double r = fabs((double)got[i] - want[i]) / (fabs((double)want[i]) + rms);
            if (!(r <= rtol)) bad++;
            if (!(r <= worst)) worst = r, worst_i = j;
        }
        CHECK(bad == 0, "%s: %s: %s: %d of %zu elements off; worst element %zu: found %.9g, expected %.9g",
              m->variant->name, what, t->name, bad, t->numel, worst_i, (double)got[t->offset + worst_i],
              (double)want[t->offset + worst_i]);
        if (worst > worst_all) worst_all = worst;
    }
    if (verbose) printf("    %s: worst %.3g (limit %g)\n", what, worst_all, rtol);
}

/* Mean over the batch of -log softmax(logits[b][:, t])[target], in double. */
static double mean_cross_entropy(const Model *m, const float *logits) {
    int V = m->layout.cfg.vocab_size;
    double total = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *col = logits + (size_t)b * V * T + t; /* [B][V][T] */
            double mx = -INFINITY, sum = 0;
            for (int v = 0; v < V; v++) mx = fmax(mx, col[(size_t)v * T]);
            for (int v = 0; v < V; v++) sum += exp(col[(size_t)v * T] - mx);
            total += mx + log(sum) - col[(size_t)m->targets[b * T + t] * T];
        }
    return total / (B * T);
}

/* The one-thread gradient and loss of each variant, for the two-thread run to compare with. */
static float *ref_grad[sizeof variants / sizeof variants[0]];
static double ref_loss[sizeof variants / sizeof variants[0]];

/* Fresh zero gradients, one step: the gradient at scale 1 (and its loss in *loss). */
static void gradient(Backend *be, const Model *m, float *g, double *loss) {
    memset(g, 0, m->layout.n_floats * sizeof *g);
    *loss = run_step(be, m, g, 1, NULL);
}

/* Everything at one thread; keeps the gradient in ref_grad[vi]. */
static void check_variant(int vi) {
    const Variant *v = &variants[vi];
    uint64_t seed = 1000 + (uint64_t)vi;
    Model m;
    if (model_setup(&m, v, seed) != 0) return;
    size_t n = m.layout.n_floats;
    int V = m.layout.cfg.vocab_size;
    if (verbose) printf("  %s: %zu parameters\n", v->name, n);

    parallel_init(1);
    Backend *be = make_backend(&m);
    if (!be) {
        free(m.params);
        return;
    }
    float *g = falloc(n), *g2 = falloc(n), *want = falloc(n), *logits = falloc((size_t)B * V * T);
    double loss, loss2;
    gradient(be, &m, g, &loss);
    CHECK(isfinite(loss) && loss > 0, "%s: loss %g", v->name, loss);

    /* the gradient is the derivative of the loss */
    fd_check_model(be, &m, g, seed + 1);

    /* forward only: the same loss, bit for bit; and it is the mean cross-entropy of the logits */
    loss2 = run_step(be, &m, NULL, 1, logits);
    CHECK(loss2 == loss, "%s: forward-only loss %.17g, with gradients %.17g", v->name, loss2, loss);
    double ce = mean_cross_entropy(&m, logits);
    CHECK(fabs(ce - loss) <= 1e-5 * loss, "%s: loss %.9g, mean cross-entropy of the returned logits %.9g", v->name,
          loss, ce);

    /* grads += grad_scale * gradient. A power of two scales every float operation exactly. */
    memset(g2, 0, n * sizeof *g2);
    run_step(be, &m, g2, 0.25f, NULL);
    for (size_t i = 0; i < n; i++) want[i] = 0.25f * g[i];
    CHECK(memcmp(g2, want, n * sizeof *g2) == 0, "%s: grad_scale 0.25 does not give exactly 0.25 x the gradient",
          v->name);
    memset(g2, 0, n * sizeof *g2);
    run_step(be, &m, g2, 0.3f, NULL);
    for (size_t i = 0; i < n; i++) want[i] = 0.3f * g[i];
    check_grads_close("grad_scale 0.3", &m, g2, want, 5e-5); /* 0.3/18 rounds differently from 1/18 */

    /* accumulation: two steps into buffers holding known nonzero values add twice the gradient */
    Rng rng;
    rng_seed(&rng, seed + 2);
    float *init = falloc(n);
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &m.layout.t[k];
        double rms = kind_rms(&m, g, k);
        for (size_t i = t->offset; i < t->offset + t->numel; i++) init[i] = (float)(3 * rms * rng_normal(&rng));
    }
    memcpy(g2, init, n * sizeof *g2);
    run_step(be, &m, g2, 1, NULL);
    for (size_t i = 0; i < n; i++) want[i] = init[i] + g[i];
    check_grads_close("one step into nonzero gradients", &m, g2, want, 1e-5);
    run_step(be, &m, g2, 1, NULL);
    for (size_t i = 0; i < n; i++) want[i] = init[i] + 2 * g[i];
    check_grads_close("two steps into nonzero gradients", &m, g2, want, 1e-5);

    /* repeatable bit for bit */
    gradient(be, &m, g2, &loss2);
    CHECK(loss2 == loss, "%s: 1 thread: loss %.17g, then %.17g", v->name, loss, loss2);
    CHECK(memcmp(g2, g, n * sizeof *g) == 0, "%s: 1 thread: gradients differ between two identical steps", v->name);

    be->destroy(be);
    ref_grad[vi] = g;
    ref_loss[vi] = loss;
    free(g2), free(want), free(logits), free(init), free(m.params);
}

/* Every variant again with two threads: bitwise repeatable, and the same gradient as one
** thread within float rounding. The pool grows from 1 to 2 threads once, here, and each backend
** is created after that: the backend sizes its per-thread attention scratch at creation, and a
** pool grown again after running jobs replays its last job on the new workers (parallel.c). */
static void test_two_threads(void) {
    CHECK(parallel_init(2) == 0 && parallel_threads() == 2, "parallel_init(2) failed");
    for (int vi = 0; vi < (int)(sizeof variants / sizeof variants[0]); vi++) {
        const Variant *v = &variants[vi];
        Model m;
        if (!ref_grad[vi]) {
            CHECK(0, "%s: no one-thread result to compare with", v->name);
            continue;
        }
        if (model_setup(&m, v, 1000 + (uint64_t)vi) != 0) continue;
        size_t n = m.layout.n_floats;
        Backend *be = make_backend(&m);
        if (be) {
            float *g = falloc(n), *g2 = falloc(n);
            double loss, loss2;
            gradient(be, &m, g, &loss);
            for (int r = 0; r < 2; r++) {
                gradient(be, &m, g2, &loss2);
                CHECK(loss2 == loss, "%s: 2 threads: loss %.17g, then %.17g", v->name, loss, loss2);
                CHECK(memcmp(g2, g, n * sizeof *g) == 0, "%s: 2 threads: gradients differ between identical steps",
                      v->name);
            }
            CHECK(fabs(loss - ref_loss[vi]) <= 1e-6 * ref_loss[vi], "%s: loss %.9g with 2 threads, %.9g with 1",
                  v->name, loss, ref_loss[vi]);
            check_grads_close("2 threads against 1", &m, g, ref_grad[vi], 5e-5);
            free(g), free(g2);
            be->destroy(be);
        }
        free(m.params);
    }
}

static void test_llama_tied_mha(void) { check_variant(0); }
static void test_llama_untied_gqa(void) { check_variant(1); }
static void test_qwen3_tied_gqa(void) { check_variant(2); }
static void test_qwen3_untied_mha(void) { check_variant(3); }

int main(void) {
    verbose = getenv("TEST_VERBOSE") != NULL;
    parallel_init(1);
    RUN(test_llama_tied_mha);
    RUN(test_llama_untied_gqa);
    RUN(test_qwen3_tied_gqa);
    RUN(test_qwen3_untied_mha);
    RUN(test_two_threads);
    printf("worst finite-difference error: %.3g (limit %g, floor %g)\n", worst_fd_err, FD_RTOL, FD_FLOOR);
    parallel_shutdown();
    for (size_t i = 0; i < sizeof ref_grad / sizeof ref_grad[0]; i++) free(ref_grad[i]);
    return TEST_SUMMARY();
}
