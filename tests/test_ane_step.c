/*
** test_ane_step.c — the ANE backend (src/backend/ane/ane.c) on the emulated device against the
** CPU backend, the fp32 reference.
**
**   - a full training step for tiny Llama MHA (tied), Llama GQA 4/2 with an untied classifier
**     and rotate-half RoPE, and tiny-qwen3 (GQA, q/k-norm, head_dim != C/H), at llama2.c's
**     initialization and at unit-variance weights, with padding (T = 40 runs at S = 64) and a
**     batch of 2: the loss within fp16 tolerance, and every gradient tensor (per kind and per
**     layer) with cosine similarity > 0.999 to the reference;
**   - the Backend contract: grads accumulate (+=), forward-only gives the same loss, the
**     logits match, weights changed between calls are restaged, a smaller B and T than
**     allocated work; the same gradients with the dW worker on and off;
**   - loss scaling at the backend level: a deep, narrow model's fp16 gradients underflow to
**     zero for some tensors with grad_scale 1, and none do with grad_scale 1024; an overflow
**     (a huge grad_scale) reaches the gradients as inf/NaN instead of being hidden;
**   - a few hundred AdamW steps of a small model: the ANE backend's loss curve tracks the CPU's;
**   - the layouts the big models need (docs/ane-facts.md §9), on tiny ones: the input surface
**     narrowed so the plan folds every region into 2C and 4C rows, and h1/h3 read in column
**     blocks (F = 256 > C = 96), each a full step against the CPU at the same tolerances.
**
** -v prints every tensor's cosine and the measured errors.
*/
#include <stdint.h>

#include "backend/ane/kernels.h"
#include "backend/backend.h"
#include "model/config.h"
#include "model/params.h"
#include "test.h"
#include "test_models.h"
#include "train/optim.h"
#include "util/parallel.h"
#include "util/rng.h"

static int verbose;

#define COS_MIN 0.999
/* |loss_ane - loss_cpu| <= LOSS_TOL(loss): measured at most 3.3e-3 at a loss of 45.6 (unit-variance
** weights give large logits) and 3e-4 near 6.2 (llama2.c init). */
static int plan_max_width; /* 0: the device's 16384 (test_step_big_model_layouts lowers it) */

static Backend *make_ane_flush(const ParamLayout *lay, int B, int T, int overlap, int flush) {
    AneBackendOptions o;
    backend_ane_default_options(&o);
    o.device = "emu";
    o.compile_budget = 1000;
    o.overlap_dw = overlap;
    o.flush_subnormals = flush;
    o.plan_max_width = plan_max_width;
    Err err = {{0}};
    Backend *be = backend_ane_create(lay, B, T, &o, &err);
    CHECK(be != NULL, "backend_ane_create: %s", err.msg);
    return be;
}

static Backend *make_ane(const ParamLayout *lay, int B, int T, int overlap) {
    return make_ane_flush(lay, B, T, overlap, 0);
}

static Backend *make_cpu(const ParamLayout *lay, int B, int T) {
    Err err = {{0}};
    Backend *be = backend_cpu_create(lay, B, T, &err);
    CHECK(be != NULL, "backend_cpu_create: %s", err.msg);
    return be;
}

static double run(Backend *be, const float *params, float *grads, const int32_t *in, const int32_t *tg, int B, int T,
                  float scale, float *logits) {
    double loss = NAN;
    Err err = {{0}};
    int rc = backend_step(be, params, grads, in, tg, B, T, scale, &loss, logits, &err);
    CHECK(rc == 0, "%s step: %s", be->name, err.msg);
    return loss;
}

/* Cosine similarity and relative error of a against b over n values. */
static void compare(const float *a, const float *b, size_t n, double *cosine, double *rel) {
    double ab = 0, aa = 0, bb = 0, dd = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
        dd += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    }
    *cosine = aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb ? 1 : 0);
    *rel = bb > 0 ? sqrt(dd / bb) : sqrt(dd);
}

/* Every tensor kind, each layer separately: cosine > COS_MIN. Returns the worst cosine. */
static double check_grads(const char *what, const ParamLayout *lay, const float *ane, const float *cpu) {
    double worst = 1;
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &lay->t[k];
        if (!t->present) continue;
        size_t per = (size_t)t->rows * t->cols;
        for (int l = 0; l < t->layers; l++) {
            double c, r;
            compare(ane + t->offset + l * per, cpu + t->offset + l * per, per, &c, &r);
            if (verbose) printf("       %-10s layer %d: cosine %.6f, rel err %.2e\n", t->name, l, c, r);
            if (c < worst) worst = c;
            CHECK(c > COS_MIN, "%s: %s layer %d: cosine %.6f (rel err %.2e)", what, t->name, l, c, r);
        }
    }
    return worst;
}

/* ------------------------------------------------------------------ the full step */

static double worst_cos = 1, worst_loss = 0;

static void step_vs_cpu_layout(const char *name, const ParamLayout *layout, int unit, int B, int T, float scale) {
    ParamLayout lay = *layout;
    float *p = make_params(&lay, unit, 42);
    int32_t *in = malloc(sizeof(int32_t) * B * T), *tg = malloc(sizeof(int32_t) * B * T);
    make_tokens(in, tg, B * T, lay.cfg.vocab_size, 7);
    Backend *cpu = make_cpu(&lay, B, T), *ane = make_ane(&lay, B, T, 1);
    if (!cpu || !ane) return;
    float *gc = falloc(lay.n_floats), *ga = falloc(lay.n_floats);
    size_t nl = (size_t)B * lay.cfg.vocab_size * T;
    float *lc = falloc(nl), *la = falloc(nl);
    double loss_c = run(cpu, p, gc, in, tg, B, T, scale, lc);
    double loss_a = run(ane, p, ga, in, tg, B, T, scale, la);
    char what[160];
    snprintf(what, sizeof what, "%s, %s weights, B=%d T=%d scale %g", name, unit ? "unit" : "llama2.c", B, T,
             (double)scale);
    if (verbose) printf("     %s: loss cpu %.6f ane %.6f\n", what, loss_c, loss_a);
    CHECK(fabs(loss_a - loss_c) < LOSS_TOL(loss_c), "%s: loss %.6f vs cpu %.6f", what, loss_a, loss_c);
    if (fabs(loss_a - loss_c) > worst_loss) worst_loss = fabs(loss_a - loss_c);
    double c, r;
    compare(la, lc, nl, &c, &r);
    CHECK(c > 0.9999, "%s: logits cosine %.6f", what, c);
    double wc = check_grads(what, &lay, ga, gc);
    if (wc < worst_cos) worst_cos = wc;
    free(gc), free(ga), free(lc), free(la), free(p), free(in), free(tg);
    cpu->destroy(cpu);
    ane->destroy(ane);
}

static void step_vs_cpu(const Variant *v, int unit, int B, int T, float scale) {
    ParamLayout lay;
    make_layout(&lay, v);
    step_vs_cpu_layout(v->name, &lay, unit, B, T, scale);
}

static void test_step_matches_cpu(void) {
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        step_vs_cpu(&variants[i], 0, 2, 40, 1024.0f); /* llama2.c init, padded to S = 64 */
        step_vs_cpu(&variants[i], 1, 1, 64, 1.0f);    /* unit-variance weights, no padding */
    }
    printf("     worst gradient cosine %.6f (limit %.3f), worst loss difference %.1e\n", worst_cos, COS_MIN,
           worst_loss);
}

/* The plan the backend makes for lay at T tokens with the current plan_max_width. */
static AneLayerPlan plan_of(const ParamLayout *lay, int T) {
    AnePlanSpec spec = {T, 0, 0, 0, 0, plan_max_width};
    AneLayerPlan p;
    Err err = {{0}};
    CHECK(ane_plan_make(&p, &lay->cfg, &spec, &err) == 0, "%s", err.msg);
    return p;
}

static void test_step_big_model_layouts(void) {
    const int widths[] = {1024, 512};
    double cos0 = worst_cos, loss0 = worst_loss;
    worst_cos = 1, worst_loss = 0;
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++)
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
            ParamLayout lay;
            make_layout(&lay, &variants[i]);
            plan_max_width = widths[wi];
            AneLayerPlan p = plan_of(&lay, 40);
            char name[160];
            snprintf(name, sizeof name, "%s, input at most %d wide: [%d x %d]", variants[i].name, widths[wi], p.in_C,
                     p.in_S);
            CHECK(p.in_C >= 2 * p.C, "%s: more rows than C", name);
            step_vs_cpu_layout(name, &lay, 0, 2, 40, 1024.0f);
        }
    plan_max_width = 0;
    ModelConfig cfg;
    Err err = {{0}};
    config_from_preset(&cfg, "tiny", &err);
    cfg.dim = 96, cfg.hidden_dim = 256, cfg.head_dim = 24, cfg.rope_style = ROPE_HALF;
    ParamLayout lay;
    params_layout(&lay, &cfg);
    AneLayerPlan p = plan_of(&lay, 64);
    CHECK(p.reg[AR_H1].blocks > 1 && p.reg[AR_H3].blocks > 1, "h1, h3 in column blocks (%d)", p.reg[AR_H1].blocks);
    step_vs_cpu_layout("tiny C=96 F=256, half RoPE: h1, h3 in column blocks", &lay, 0, 2, 64, 1024.0f);
    step_vs_cpu_layout("tiny C=96 F=256, half RoPE: h1, h3 in column blocks", &lay, 1, 1, 64, 1.0f);
    printf("     worst gradient cosine %.6f (limit %.3f), worst loss difference %.1e\n", worst_cos, COS_MIN,
           worst_loss);
    if (cos0 < worst_cos) worst_cos = cos0;
    if (loss0 > worst_loss) worst_loss = loss0;
}

/* ------------------------------------------------------------------ the contract */

static void test_contract(void) {
    const Variant *v = &variants[1];
    ParamLayout lay;
    make_layout(&lay, v);
    float *p = make_params(&lay, 1, 5);
    enum { B = 2, T = 48 };
    int32_t in[B * T], tg[B * T];
    make_tokens(in, tg, B * T, lay.cfg.vocab_size, 9);
    Backend *ane = make_ane(&lay, B, T, 1), *sync = make_ane(&lay, B, T, 0), *cpu = make_cpu(&lay, B, T);
    if (!ane || !sync || !cpu) return;
    size_t n = lay.n_floats;
    float *g1 = falloc(n), *g2 = falloc(n), *g3 = falloc(n), *gc = falloc(n);
    double l1 = run(ane, p, g1, in, tg, B, T, 1.0f, NULL);
    /* the same with the dW worker off: identical (the same arithmetic, in another thread) */
    double l2 = run(sync, p, g2, in, tg, B, T, 1.0f, NULL);
    CHECK(l1 == l2 && memcmp(g1, g2, n * sizeof(float)) == 0, "dW worker on and off give identical results");
    /* ... and so does one thread instead of two: every product is a fixed grid of tiles
    ** (blas_sgemm_tiled), whatever BLAS kernel OPENBLAS_CORETYPE picks */
    int threads = parallel_threads();
    parallel_init(1);
    memset(g3, 0, n * sizeof(float));
    double l3 = run(sync, p, g3, in, tg, B, T, 1.0f, NULL);
    parallel_init(threads);
    CHECK(l3 == l1 && memcmp(g3, g1, n * sizeof(float)) == 0, "1 and %d threads give identical results", threads);
    memset(g3, 0, n * sizeof(float));
    /* accumulation: a second call adds the same again */
    run(ane, p, g1, in, tg, B, T, 1.0f, NULL);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += fabsf(g1[i] - 2 * g2[i]) > 1e-5f * fabsf(g2[i]) + 1e-30f;
    CHECK(bad == 0, "grads accumulate (+=): %d values differ from twice one step", bad);
    /* forward only: the same loss, grads untouched */
    double lf = run(ane, p, NULL, in, tg, B, T, 1.0f, NULL);
    CHECK(lf == l1, "forward-only loss %.9f vs %.9f", lf, l1);
    /* grad_scale is linear (up to fp16 rounding of the scaled values): 8x the scale, 8x the grads */
    run(ane, p, g3, in, tg, B, T, 8.0f, NULL);
    for (size_t i = 0; i < n; i++) g3[i] /= 8;
    double c, r;
    compare(g3, g2, n, &c, &r);
    CHECK(c > 0.99999 && r < 5e-3, "grad_scale 8 gives 8x the gradients: cosine %.7f rel %.2e", c, r);
    /* weights changed in place between calls are restaged: compare with the CPU after a change */
    for (size_t i = 0; i < n; i++) p[i] *= 1.1f;
    memset(g1, 0, n * sizeof(float));
    double la = run(ane, p, g1, in, tg, B, T, 1.0f, NULL), lc = run(cpu, p, gc, in, tg, B, T, 1.0f, NULL);
    CHECK(fabs(la - lc) < LOSS_TOL(lc), "after a weight change: loss %.6f vs cpu %.6f", la, lc);
    check_grads("after a weight change", &lay, g1, gc);
    /* a smaller batch and sequence than allocated */
    memset(g1, 0, n * sizeof(float));
    memset(gc, 0, n * sizeof(float));
    la = run(ane, p, g1, in, tg, 1, 33, 1.0f, NULL);
    lc = run(cpu, p, gc, in, tg, 1, 33, 1.0f, NULL);
    CHECK(fabs(la - lc) < LOSS_TOL(lc), "B=1 T=33 in a 2x48 backend: loss %.6f vs cpu %.6f", la, lc);
    check_grads("B=1 T=33", &lay, g1, gc);
    /* a single token (S = 32: 31 padding columns) */
    memset(g1, 0, n * sizeof(float));
    memset(gc, 0, n * sizeof(float));
    la = run(ane, p, g1, in, tg, 1, 1, 1.0f, NULL);
    lc = run(cpu, p, gc, in, tg, 1, 1, 1.0f, NULL);
    CHECK(fabs(la - lc) < LOSS_TOL(lc), "B=1 T=1: loss %.6f vs cpu %.6f", la, lc);
    check_grads("B=1 T=1", &lay, g1, gc);
    Err err = {{0}};
    double loss;
    CHECK(backend_step(ane, p, g1, in, tg, 3, T, 1.0f, &loss, NULL, &err) == -1 && strstr(err.msg, "outside"),
          "a batch larger than allocated is refused: %s", err.msg);
    /* stats: 2 compiles; per step 2 evaluations per layer and sequence */
    BackendStats st;
    CHECK(ane->stats != NULL && cpu->stats == NULL, "stats hook: ane has one, cpu not");
    ane->stats(ane, &st);
    int L = lay.cfg.n_layers;
    /* steps so far: 2 full (B=2), 1 forward-only (B=2), 1 full (8x), 1 full, 2 full (B=1) */
    uint64_t evals = (uint64_t)L * (2 * 2 * 2 + 2 + 2 * 2 + 2 * 2 + 2 * 1 + 2 * 1);
    CHECK(st.compiles == 2 && st.evaluations == evals && st.steps == 7, "stats: %llu compiles, %llu evaluations "
          "(expected %llu), %llu steps", (unsigned long long)st.compiles, (unsigned long long)st.evaluations,
          (unsigned long long)evals, (unsigned long long)st.steps);
    CHECK(st.bytes_staged > st.bytes_staged_weights && st.bytes_read > 0 && st.flops_device > 0 && st.flops_cpu > 0,
          "stats: bytes and flops counted");
    CHECK(st.t_total >= st.t_device && st.t_device > 0, "stats: times");
    free(g1), free(g2), free(g3), free(gc), free(p);
    ane->destroy(ane);
    sync->destroy(sync);
    cpu->destroy(cpu);
}

/* ------------------------------------------------------------------ loss scaling */

/* Fraction of values that are exactly zero in a while nonzero in the reference b. */
static double zero_fraction(const float *a, const float *b, size_t n) {
    size_t z = 0, nz = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] == 0) continue;
        nz++;
        z += a[i] == 0;
    }
    return nz ? (double)z / nz : 0;
}

/* Per tensor kind and layer of ane against the reference: the largest fraction of values
** that are exactly zero where the reference is not, and the lowest cosine. */
static void underflow_report(const ParamLayout *lay, const float *ane, const float *ref, double *zeros,
                             const char **zname, double *cos_min, const char **cname) {
    *zeros = 0, *cos_min = 1, *zname = *cname = "-";
    static char zbuf[32], cbuf[32];
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &lay->t[k];
        if (!t->present) continue;
        size_t per = (size_t)t->rows * t->cols;
        for (int l = 0; l < t->layers; l++) {
            size_t off = t->offset + l * per;
            double z = zero_fraction(ane + off, ref + off, per), c, r;
            compare(ane + off, ref + off, per, &c, &r);
            if (z > *zeros) *zeros = z, snprintf(zbuf, sizeof zbuf, "%s[%d]", t->name, l), *zname = zbuf;
            if (c < *cos_min) *cos_min = c, snprintf(cbuf, sizeof cbuf, "%s[%d]", t->name, l), *cname = cbuf;
        }
    }
}

/* A deep, narrow model at llama2.c's init (16 layers of width 32, B=2, T=64): its activation
** gradients on the device fall below fp16's normal range (~6e-5) without loss scaling. Whether
** the real ANE keeps fp16 subnormals is unknown (docs/ane-facts.md §7), so both device models run:
**   gradual underflow (the emulator's default): precision is lost, wq/wk go off;
**   flushing subnormals: whole gradient tensors (wq, wk, rms_att) come back exactly zero.
** With grad_scale 1024 neither happens. */
static void test_loss_scaling_underflow(void) {
    ModelConfig cfg;
    Err err = {{0}};
    config_from_preset(&cfg, "tiny", &err);
    cfg.dim = 32, cfg.hidden_dim = 64, cfg.n_layers = 16, cfg.n_heads = 2, cfg.n_kv_heads = 2, cfg.head_dim = 16;
    ParamLayout lay;
    params_layout(&lay, &cfg);
    float *p = falloc(lay.n_floats);
    Rng rng;
    rng_seed(&rng, 3);
    params_init(&lay, p, &rng);
    enum { B = 2, T = 64 };
    int32_t in[B * T], tg[B * T];
    make_tokens(in, tg, B * T, cfg.vocab_size, 11);
    Backend *cpu = make_cpu(&lay, B, T);
    size_t n = lay.n_floats;
    float *gc = falloc(n), *g = falloc(n);
    run(cpu, p, gc, in, tg, B, T, 1.0f, NULL);
    const float scale = 1024.0f;
    for (int flush = 0; flush < 2; flush++) {
        Backend *ane = make_ane_flush(&lay, B, T, 1, flush);
        if (!ane) break;
        double z1, c1, zs, cs;
        const char *zn1, *cn1, *zns, *cns;
        memset(g, 0, n * sizeof(float));
        run(ane, p, g, in, tg, B, T, 1.0f, NULL);
        underflow_report(&lay, g, gc, &z1, &zn1, &c1, &cn1);
        char n1[64];
        snprintf(n1, sizeof n1, "%s", cn1);
        memset(g, 0, n * sizeof(float));
        run(ane, p, g, in, tg, B, T, scale, NULL);
        for (size_t i = 0; i < n; i++) g[i] /= scale;
        underflow_report(&lay, g, gc, &zs, &zns, &cs, &cns);
        printf("     %s: grad_scale 1: worst cosine %.4f (%s), %.0f%% zeros (%s); grad_scale %g: worst cosine "
               "%.5f (%s), %.2f%% zeros\n",
               flush ? "flushing device" : "gradual underflow", c1, n1, 100 * z1, zn1, (double)scale, cs, cns,
               100 * zs);
        if (flush) {
            CHECK(z1 > 0.99, "flushing: without scaling some gradient tensor is all zeros (worst %.1f%%)", 100 * z1);
            CHECK(zs < 0.01 && cs > 0.99, "flushing: with scale %g none underflows (%.2f%% zeros, cosine %.5f)",
                  (double)scale, 100 * zs, cs);
        } else {
            CHECK(c1 < 0.9995, "gradual: without scaling the gradients lose precision (worst cosine %.5f)", c1);
            CHECK(cs > 0.9999 && zs == 0, "gradual: with scale %g they do not (cosine %.6f)", (double)scale, cs);
        }
        if (!flush) { /* overflow: a scale far beyond fp16's range must show as inf/NaN in the gradients */
            memset(g, 0, n * sizeof(float));
            run(ane, p, g, in, tg, B, T, 1e9f, NULL);
            size_t nonfinite = 0;
            for (size_t i = 0; i < n; i++) nonfinite += !isfinite(g[i]);
            CHECK(nonfinite > 0, "an fp16 overflow reaches the gradients as inf/NaN (%zu non-finite)", nonfinite);
        }
        ane->destroy(ane);
    }
    free(gc), free(g), free(p);
    cpu->destroy(cpu);
}

/* ------------------------------------------------------------------ training */

/* 300 AdamW steps of tiny-qwen3 on a repeating pattern, both backends from the same init: the
** ANE backend's loss follows the CPU's. The ANE run uses a fixed loss scale of 256 (unscaled
** before AdamW, as the trainer does). */
static void test_training_tracks_cpu(void) {
    const Variant *v = &variants[2];
    ParamLayout lay;
    make_layout(&lay, v);
    enum { B = 2, T = 32, STEPS = 300 };
    const float loss_scale = 256.0f;
    float *pc = make_params(&lay, 0, 77), *pa = falloc(lay.n_floats);
    memcpy(pa, pc, lay.n_floats * sizeof(float));
    size_t n = lay.n_floats;
    float *gc = falloc(n), *ga = falloc(n), *mc = falloc(n), *vc = falloc(n), *ma = falloc(n), *va = falloc(n);
    Backend *cpu = make_cpu(&lay, B, T), *ane = make_ane(&lay, B, T, 1);
    if (!cpu || !ane) return;
    AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
    int32_t in[B * T], tg[B * T];
    Rng rng;
    rng_seed(&rng, 1);
    double first_c = 0, last_c = 0, last_a = 0, worst_gap = 0;
    int worst_step = 0;
    for (int s = 0; s < STEPS; s++) {
        /* a learnable stream: token i+1 follows token i in a cycle of 97 */
        for (int b = 0; b < B; b++) {
            int start = (int)rng_below(&rng, 97);
            for (int t = 0; t < T; t++) {
                in[b * T + t] = (start + t) % 97 + 3;
                tg[b * T + t] = (start + t + 1) % 97 + 3;
            }
        }
        memset(gc, 0, n * sizeof(float));
        memset(ga, 0, n * sizeof(float));
        double lc = run(cpu, pc, gc, in, tg, B, T, 1.0f, NULL);
        double la = run(ane, pa, ga, in, tg, B, T, loss_scale, NULL);
        float lr = lr_schedule(s, STEPS, 20, 3e-3f, 3e-4f);
        adamw_step(&lay, &ac, pc, gc, mc, vc, lr, s + 1, grad_clip_coef(grad_global_norm(gc, n), 1.0f));
        double norm_a = grad_global_norm(ga, n) / loss_scale;
        adamw_step(&lay, &ac, pa, ga, ma, va, lr, s + 1, grad_clip_coef(norm_a, 1.0f) / loss_scale);
        if (s == 0) first_c = lc;
        double gap = fabs(la - lc) / lc;
        if (gap > worst_gap) worst_gap = gap, worst_step = s;
        last_c = lc, last_a = la;
        if (verbose && s % 50 == 0) printf("       step %3d: loss cpu %.4f ane %.4f\n", s, lc, la);
    }
    printf("     %d steps: loss cpu %.3f -> %.4f, ane %.4f; largest relative gap %.2f%% (step %d)\n", STEPS, first_c,
           last_c, last_a, 100 * worst_gap, worst_step);
    CHECK(last_c < 0.25 * first_c, "the CPU run learns (%.3f -> %.3f)", first_c, last_c);
    CHECK(worst_gap < 0.05, "the ANE loss stays within 5%% of the CPU's (worst %.2f%% at step %d)", 100 * worst_gap,
          worst_step);
    free(pc), free(pa), free(gc), free(ga), free(mc), free(vc), free(ma), free(va);
    cpu->destroy(cpu);
    ane->destroy(ane);
}

int main(int argc, char **argv) {
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    parallel_init(2);
    RUN(test_step_matches_cpu);
    RUN(test_step_big_model_layouts);
    RUN(test_contract);
    RUN(test_loss_scaling_underflow);
    RUN(test_training_tracks_cpu);
    parallel_shutdown();
    return TEST_SUMMARY();
}
