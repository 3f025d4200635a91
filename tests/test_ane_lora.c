/*
** test_ane_lora.c — LoRA over a frozen base on the ANE backend (backend_ane_create_frozen,
** emulated device) against the CPU backend's merged path, the reference: the CPU runs on
** W + s B A written into the parameters (lora_merge) and its full gradient projected onto the
** adapter (lora_grad) is what the unmerged ANE step must give.
**
**   - one step for tiny Llama (MHA tied interleaved; GQA 4/2 untied rotate-half) and tiny-qwen3
**     (GQA, q/k-norm, head_dim != dim/heads), with the targets attn (r 8), all (r 4, rsLoRA) and
**     mlp (r 8, a rank whose A of down folds with a partial row), at llama2.c's init with padding
**     and a batch of 2 (loss scale 1024) and at unit-variance weights: the loss within fp16
**     tolerance, the logits, the adapter gradient's cosine >= 0.9999 overall and >= 0.999 for
**     every A and B of every layer;
**   - the contract: the base is staged at the first step only (bytes_staged_weights), the
**     adapter every step (a changed adapter is honoured), 2 dispatches per layer and sequence,
**     the same results with the dA/dB jobs on the dW worker thread,
**     adapter_grads accumulate, forward-only gives the same loss, and what is refused: grads
**     with a frozen base, a missing adapter, an int8 base that is not this model's (an int8 base
**     itself is tested in test_ane_int8_base);
**   - LoRA dropout (p 0.25, all targets, r 4): one training step against the CPU backend's
**     frozen-base step with the same adapter and dropout seed (its masks, lora_dropout_mask):
**     the loss within fp16 tolerance and the adapter gradient's cosine as above, both away from
**     the step without dropout; a forward-only step ignores dropout (the dropout-0 loss);
**   - the LoRA kernels of stories110m and qwen3-0.6b at ranks 1, 4, 8 and 16, with and without
**     dropout masks, pass the emulator's checker (docs/ane-facts.md §1.7, §2), and their I/O is what
**     the plan says.
**
** -v prints every module's cosines.
*/
#include <stdint.h>

#include "backend/ane/emu/mil.h"
#include "backend/ane/kernels.h"
#include "backend/ane/mil_write.h"
#include "backend/backend.h"
#include "model/config.h"
#include "model/lora.h"
#include "model/params.h"
#include "test.h"
#include "test_models.h"
#include "train/lora_grad.h"
#include "util/parallel.h"
#include "util/rng.h"

static int verbose;

static int plan_max_width; /* 0: the device's 16384; test_dropout_matches_cpu also narrows it */

static Backend *make_frozen_overlap(const ParamLayout *lay, const LoraLayout *lo, int B, int T, int overlap,
                                    Err *err) {
    AneBackendOptions o;
    backend_ane_default_options(&o);
    o.device = "emu";
    o.compile_budget = 1000;
    o.overlap_dw = overlap;
    o.plan_max_width = plan_max_width;
    FrozenBase fb = {lo, NULL};
    return backend_ane_create_frozen(lay, &fb, B, T, &o, err);
}

static Backend *make_frozen(const ParamLayout *lay, const LoraLayout *lo, int B, int T, Err *err) {
    return make_frozen_overlap(lay, lo, B, T, -1, err);
}

/* The reference: the CPU backend on the merged weights, its full gradient projected onto the
** adapter. ga += grad_scale dloss/dadapter; returns the loss. */
static double cpu_reference(Backend *cpu, const ParamLayout *lay, const LoraLayout *lo, const float *base,
                            const float *adapter, float *ga, const int32_t *in, const int32_t *tg, int B, int T,
                            float scale, float *logits) {
    float *work = falloc(lay->n_floats), *copy = falloc(lo->n_base_floats), *g = falloc(lay->n_floats);
    memcpy(work, base, lay->n_floats * sizeof(float));
    lora_base_copy(lo, lay, base, copy);
    lora_merge(lo, lay, copy, adapter, work);
    double loss = NAN;
    Err err = {{0}};
    CHECK(backend_step(cpu, work, g, in, tg, B, T, scale, &loss, logits, &err) == 0, "cpu: %s", err.msg);
    lora_grad(lo, lay, g, adapter, ga);
    free(work), free(copy), free(g);
    return loss;
}

static double ane_lora_step(Backend *be, const float *base, const float *adapter, float *ga, const int32_t *in,
                            const int32_t *tg, int B, int T, float scale, float *logits) {
    StepArgs a = {base, NULL, adapter, ga, in, tg, B, T, scale, logits, 0};
    double loss = NAN;
    Err err = {{0}};
    CHECK(be->step(be, &a, &loss, &err) == 0, "ane lora step: %s", err.msg);
    return loss;
}

/* Overall cosine >= 0.9999 and every A and B of every layer >= 0.999; returns the overall. */
static double check_adapter_grads(const char *what, const LoraLayout *lo, float *ane, float *cpu, double *worst) {
    double all = cosine(ane, cpu, lo->n_floats);
    CHECK(all >= 0.9999, "%s: adapter gradient cosine %.6f", what, all);
    for (int m = 0; m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo->t[m];
        if (!t->present) continue;
        for (int l = 0; l < lo->model.n_layers; l++) {
            size_t na = (size_t)lo->cfg.rank * t->in, nb = (size_t)t->out * lo->cfg.rank;
            double ca = cosine(lora_A(lo, ane, (LoraModule)m, l), lora_A(lo, cpu, (LoraModule)m, l), na);
            double cb = cosine(lora_B(lo, ane, (LoraModule)m, l), lora_B(lo, cpu, (LoraModule)m, l), nb);
            if (verbose) printf("       %-5s layer %d: dA cosine %.6f, dB cosine %.6f\n", lora_module_name((LoraModule)m), l, ca, cb);
            CHECK(ca >= 0.999 && cb >= 0.999, "%s: %s layer %d: dA cosine %.6f, dB cosine %.6f", what,
                  lora_module_name((LoraModule)m), l, ca, cb);
            if (ca < *worst) *worst = ca;
            if (cb < *worst) *worst = cb;
        }
    }
    return all;
}

/* ------------------------------------------------------------------ one step against the CPU */

static double worst_all = 1, worst_tensor = 1, worst_loss = 0;

static void step_vs_cpu(const Variant *v, const Targets *ts, int unit, int B, int T, float scale) {
    ParamLayout lay;
    make_layout(&lay, v);
    LoraLayout lo;
    make_layout_lora(&lo, &lay, ts);
    float *p = make_params(&lay, unit, 42), *ad = make_adapter(&lo, 50, 0.05);
    int32_t *in = malloc(sizeof(int32_t) * B * T), *tg = malloc(sizeof(int32_t) * B * T);
    make_tokens(in, tg, B * T, lay.cfg.vocab_size, 7);
    Err err = {{0}};
    Backend *cpu = backend_cpu_create(&lay, B, T, &err), *ane = make_frozen(&lay, &lo, B, T, &err);
    CHECK(cpu && ane, "backends: %s", err.msg);
    if (!cpu || !ane) return;
    float *gc = falloc(lo.n_floats), *ga = falloc(lo.n_floats);
    size_t nl = (size_t)B * lay.cfg.vocab_size * T;
    float *lc = falloc(nl), *la = falloc(nl);
    double loss_c = cpu_reference(cpu, &lay, &lo, p, ad, gc, in, tg, B, T, scale, lc);
    double loss_a = ane_lora_step(ane, p, ad, ga, in, tg, B, T, scale, la);
    char what[200];
    snprintf(what, sizeof what, "%s, %s r=%d%s, %s weights, B=%d T=%d", v->name, ts->targets, ts->rank,
             ts->rslora ? " rsLoRA" : "", unit ? "unit" : "llama2.c", B, T);
    CHECK(fabs(loss_a - loss_c) < LOSS_TOL(loss_c), "%s: loss %.6f vs cpu %.6f", what, loss_a, loss_c);
    CHECK(cosine(la, lc, nl) > 0.9999, "%s: logits cosine %.6f", what, cosine(la, lc, nl));
    double all = check_adapter_grads(what, &lo, ga, gc, &worst_tensor);
    if (verbose) printf("     %s: loss cpu %.6f ane %.6f, adapter gradient cosine %.6f\n", what, loss_c, loss_a, all);
    if (all < worst_all) worst_all = all;
    if (fabs(loss_a - loss_c) > worst_loss) worst_loss = fabs(loss_a - loss_c);
    free(gc), free(ga), free(lc), free(la), free(p), free(ad), free(in), free(tg);
    cpu->destroy(cpu);
    ane->destroy(ane);
}

static void test_step_matches_cpu_merged(void) {
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++)
        for (size_t t = 0; t < sizeof target_sets / sizeof target_sets[0]; t++) {
            step_vs_cpu(&variants[i], &target_sets[t], 0, 2, 40, 1024.0f); /* padded to S = 64 */
            step_vs_cpu(&variants[i], &target_sets[t], 1, 1, 64, 1.0f);
        }
    printf("     adapter gradient cosine: worst overall %.6f (limit 0.9999), worst single A/B %.6f (limit 0.999); "
           "worst loss difference %.1e\n",
           worst_all, worst_tensor, worst_loss);
}

/* ------------------------------------------------------------------ the contract */

static void test_contract(void) {
    const Variant *v = &variants[2];
    ParamLayout lay;
    make_layout(&lay, v);
    LoraLayout lo;
    make_layout_lora(&lo, &lay, &target_sets[1]);
    enum { B = 2, T = 48 };
    int L = lay.cfg.n_layers;
    const float scale = 1024.0f; /* llama2.c's init: fp16 gradients need the loss scale */
    float *p = make_params(&lay, 0, 5), *ad = make_adapter(&lo, 6, 0.05);
    int32_t in[B * T], tg[B * T];
    make_tokens(in, tg, B * T, lay.cfg.vocab_size, 9);
    Err err = {{0}};
    Backend *ane = make_frozen(&lay, &lo, B, T, &err), *cpu = backend_cpu_create(&lay, B, T, &err);
    CHECK(ane && cpu, "%s", err.msg);
    if (!ane || !cpu) return;
    size_t n = lo.n_floats;
    float *g1 = falloc(n), *g2 = falloc(n), *gc = falloc(n);
    BackendStats s0, s1, s2, s3;
    ane->stats(ane, &s0);
    double l1 = ane_lora_step(ane, p, ad, g1, in, tg, B, T, scale, NULL);
    ane->stats(ane, &s1);
    double l2 = ane_lora_step(ane, p, ad, g2, in, tg, B, T, scale, NULL);
    ane->stats(ane, &s2);
    uint64_t base = base_bytes_per_layer(&lay, 0) * L, adapter = 2 * (uint64_t)lo.n_floats;
    uint64_t w1 = s1.bytes_staged_weights - s0.bytes_staged_weights, w2 = s2.bytes_staged_weights - s1.bytes_staged_weights;
    printf("     weight bytes staged: first step %llu (base %llu + adapter %llu), next step %llu (the adapter)\n",
           (unsigned long long)w1, (unsigned long long)base, (unsigned long long)adapter, (unsigned long long)w2);
    CHECK(w1 == base + adapter, "first step stages the base and the adapter: %llu bytes, expected %llu",
          (unsigned long long)w1, (unsigned long long)(base + adapter));
    CHECK(w2 == adapter, "a later step stages the adapter alone: %llu bytes, expected %llu", (unsigned long long)w2,
          (unsigned long long)adapter);
    CHECK(s2.evaluations - s1.evaluations == (uint64_t)2 * L * B, "2 dispatches per layer and sequence (%llu)",
          (unsigned long long)(s2.evaluations - s1.evaluations));
    CHECK(s2.compiles == 2, "2 compiles (%llu)", (unsigned long long)s2.compiles);
    CHECK(l1 == l2 && memcmp(g1, g2, n * sizeof(float)) == 0, "the step is deterministic");
    Backend *worker = make_frozen_overlap(&lay, &lo, B, T, 1, &err); /* dA/dB jobs on the pool's background lane */
    CHECK(worker != NULL, "%s", err.msg);
    if (worker) {
        memset(g1, 0, n * sizeof(float));
        double lw = ane_lora_step(worker, p, ad, g1, in, tg, B, T, scale, NULL);
        CHECK(lw == l1 && memcmp(g1, g2, n * sizeof(float)) == 0, "the dW worker on and off give identical results");
        worker->destroy(worker);
        memcpy(g1, g2, n * sizeof(float));
    }
    /* accumulation */
    ane_lora_step(ane, p, ad, g1, in, tg, B, T, scale, NULL);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += fabsf(g1[i] - 2 * g2[i]) > 1e-5f * fabsf(g2[i]) + 1e-30f;
    CHECK(bad == 0, "adapter_grads accumulate (+=): %d values differ from twice one step", bad);
    /* forward only */
    double lf = ane_lora_step(ane, p, ad, NULL, in, tg, B, T, scale, NULL);
    CHECK(lf == l1, "forward-only loss %.9f vs %.9f", lf, l1);
    /* the adapter changes every step: a new one is staged and used (B negated: the opposite delta) */
    for (int m = 0; m < LORA_MODULES; m++)
        for (int l = 0; lo.t[m].present && l < L; l++) {
            float *Bm = lora_B(&lo, ad, (LoraModule)m, l);
            for (int i = 0; i < lo.t[m].out * lo.cfg.rank; i++) Bm[i] = -Bm[i];
        }
    memset(g1, 0, n * sizeof(float));
    ane->stats(ane, &s2);
    double la = ane_lora_step(ane, p, ad, g1, in, tg, B, T, scale, NULL);
    ane->stats(ane, &s3);
    double lc = cpu_reference(cpu, &lay, &lo, p, ad, gc, in, tg, B, T, scale, NULL);
    CHECK(fabs(la - lc) < LOSS_TOL(lc) && fabs(la - l1) > 1e-3, "after an adapter change: loss %.6f vs cpu %.6f "
          "(before %.6f)", la, lc, l1);
    double worst = 1;
    check_adapter_grads("after an adapter change", &lo, g1, gc, &worst);
    CHECK(s3.bytes_staged_weights - s2.bytes_staged_weights == adapter, "still the adapter alone");
    /* a smaller batch and sequence than allocated, a single token */
    int shapes[2][2] = {{1, 33}, {1, 1}};
    for (int i = 0; i < 2; i++) {
        memset(g1, 0, n * sizeof(float));
        memset(gc, 0, n * sizeof(float));
        la = ane_lora_step(ane, p, ad, g1, in, tg, shapes[i][0], shapes[i][1], scale, NULL);
        lc = cpu_reference(cpu, &lay, &lo, p, ad, gc, in, tg, shapes[i][0], shapes[i][1], scale, NULL);
        char what[64];
        snprintf(what, sizeof what, "B=%d T=%d", shapes[i][0], shapes[i][1]);
        CHECK(fabs(la - lc) < LOSS_TOL(lc), "%s: loss %.6f vs cpu %.6f", what, la, lc);
        check_adapter_grads(what, &lo, g1, gc, &worst);
    }
    /* refusals */
    float *full = falloc(lay.n_floats);
    StepArgs a = {p, full, ad, g1, in, tg, B, T, 1.0f, NULL, 0};
    double loss;
    CHECK(ane->step(ane, &a, &loss, &err) == -1 && strstr(err.msg, "grads: expected NULL over a frozen base"),
          "grads with a frozen base refused: %s", err.msg);
    a.grads = NULL;
    a.adapter = NULL;
    CHECK(ane->step(ane, &a, &loss, &err) == -1 && strstr(err.msg, "adapter is NULL"),
          "adapter_grads without an adapter refused: %s", err.msg);
    /* adapter NULL, forward only: params alone, e.g. the merged model evaluated on this backend
    ** (restaged: another buffer), then the frozen base again */
    {
        float *merged = falloc(lay.n_floats), *copy = falloc(lo.n_base_floats);
        memcpy(merged, p, lay.n_floats * sizeof(float));
        lora_base_copy(&lo, &lay, p, copy);
        lora_merge(&lo, &lay, copy, ad, merged);
        double before = ane_lora_step(ane, p, ad, NULL, in, tg, B, T, scale, NULL), lm = NAN, lcm = NAN;
        StepArgs e = {merged, NULL, NULL, NULL, in, tg, B, T, 1.0f, NULL, 0};
        CHECK(ane->step(ane, &e, &lm, &err) == 0, "%s", err.msg);
        CHECK(backend_step(cpu, merged, NULL, in, tg, B, T, 1.0f, &lcm, NULL, &err) == 0, "%s", err.msg);
        double after = ane_lora_step(ane, p, ad, NULL, in, tg, B, T, scale, NULL);
        CHECK(fabs(lm - lcm) < LOSS_TOL(lcm) && fabs(lm - before) < LOSS_TOL(lcm),
              "the merged model without an adapter: loss %.6f, cpu %.6f, unmerged %.6f", lm, lcm, before);
        CHECK(after == before, "the frozen base restaged after it: %.9f vs %.9f", after, before);
        free(merged), free(copy);
    }
    Int8Weights q8;
    memset(&q8, 0, sizeof q8);
    FrozenBase fb = {&lo, &q8};
    AneBackendOptions o;
    backend_ane_default_options(&o);
    o.device = "emu";
    CHECK(backend_ane_create_frozen(&lay, &fb, B, T, &o, &err) == NULL && strstr(err.msg, "int8 base is for a model"),
          "an empty int8 base (another model's) refused: %s", err.msg);
    ParamLayout other;
    make_layout(&other, &variants[0]);
    fb = (FrozenBase){&lo, NULL};
    CHECK(backend_ane_create_frozen(&other, &fb, B, T, &o, &err) == NULL && strstr(err.msg, "LoRA layout"),
          "an adapter for another model refused: %s", err.msg);
    /* a plain backend refuses an adapter */
    Backend *plain = backend_ane_create(&lay, B, T, &o, &err);
    CHECK(plain != NULL, "%s", err.msg);
    if (plain) {
        StepArgs pa = {p, full, ad, g1, in, tg, B, T, 1.0f, NULL, 0};
        CHECK(plain->step(plain, &pa, &loss, &err) == -1 && strstr(err.msg, "without one"),
              "an adapter given to a plain backend refused: %s", err.msg);
        /* the full step restages the whole base every step: what the frozen base saves */
        BackendStats f0, f1;
        plain->stats(plain, &f0);
        CHECK(backend_step(plain, p, full, in, tg, B, T, 1.0f, &loss, NULL, &err) == 0, "%s", err.msg);
        plain->stats(plain, &f1);
        CHECK(f1.bytes_staged_weights - f0.bytes_staged_weights == base, "a full step stages the base (%llu bytes)",
              (unsigned long long)(f1.bytes_staged_weights - f0.bytes_staged_weights));
        plain->destroy(plain);
    }
    free(full), free(g1), free(g2), free(gc), free(p), free(ad);
    ane->destroy(ane);
    cpu->destroy(cpu);
}

/* ------------------------------------------------------------------ dropout */

/* One training step of the ANE frozen base with dropout p against the CPU backend's frozen-base
** step (the unmerged reference that applies lora_dropout_mask itself), and a forward-only step
** against the ANE without dropout. */
static void dropout_vs_cpu(const Variant *v, int unit, int B, int T, float scale) {
    ParamLayout lay;
    make_layout(&lay, v);
    LoraLayout lo0, lo;
    make_layout_lora(&lo0, &lay, &target_sets[1]); /* all, r 4 */
    lo = lo0;
    lo.cfg.dropout = 0.25f;
    float *p = make_params(&lay, unit, 42), *ad = make_adapter(&lo, 50, 0.05);
    int32_t *in = malloc(sizeof(int32_t) * B * T), *tg = malloc(sizeof(int32_t) * B * T);
    make_tokens(in, tg, B * T, lay.cfg.vocab_size, 7);
    Err err = {{0}};
    FrozenBase fb = {&lo, NULL};
    Backend *cpu = backend_cpu_create_frozen(&lay, &fb, B, T, &err);
    CHECK(cpu != NULL, "cpu frozen: %s", err.msg);
    Backend *ane = make_frozen(&lay, &lo, B, T, &err);
    CHECK(ane != NULL, "ane frozen with dropout: %s", err.msg);
    Backend *ane0 = make_frozen(&lay, &lo0, B, T, &err);
    CHECK(ane0 != NULL, "ane frozen: %s", err.msg);
    float *gc = falloc(lo.n_floats), *ga = falloc(lo.n_floats), *g0 = falloc(lo.n_floats);
    char what[200];
    snprintf(what, sizeof what, "%s, all r=4 dropout 0.25, %s weights, B=%d T=%d", v->name,
             unit ? "unit" : "llama2.c", B, T);
    if (cpu && ane && ane0) {
        uint64_t seed = 12345;
        StepArgs ac = {p, NULL, ad, gc, in, tg, B, T, scale, NULL, seed};
        StepArgs aa = {p, NULL, ad, ga, in, tg, B, T, scale, NULL, seed};
        StepArgs a0 = {p, NULL, ad, g0, in, tg, B, T, scale, NULL, seed};
        double lc = NAN, la = NAN, l0 = NAN;
        CHECK(cpu->step(cpu, &ac, &lc, &err) == 0, "cpu: %s", err.msg);
        CHECK(ane->step(ane, &aa, &la, &err) == 0, "ane: %s", err.msg);
        CHECK(ane0->step(ane0, &a0, &l0, &err) == 0, "ane without dropout: %s", err.msg);
        CHECK(fabs(la - lc) < LOSS_TOL(lc), "%s: loss %.6f vs cpu %.6f", what, la, lc);
        double all = check_adapter_grads(what, &lo, ga, gc, &worst_tensor);
        double c0 = cosine(g0, gc, lo.n_floats);
        /* the masks matter: without them the step is another one */
        CHECK(fabs(l0 - lc) > LOSS_TOL(lc) && c0 < 0.99, "%s: dropout changes the step (loss %.6f vs %.6f "
              "without, gradient cosine %.6f)", what, lc, l0, c0);
        printf("     %s: loss cpu %.6f ane %.6f (without dropout %.6f), adapter gradient cosine %.6f (without "
               "dropout %.4f)\n", what, lc, la, l0, all, c0);
        /* forward only: no dropout, the dropout-0 backend's loss */
        StepArgs fa = {p, NULL, ad, NULL, in, tg, B, T, scale, NULL, seed}, f0 = fa;
        double lf = NAN, lf0 = NAN;
        CHECK(ane->step(ane, &fa, &lf, &err) == 0 && ane0->step(ane0, &f0, &lf0, &err) == 0, "%s", err.msg);
        CHECK(lf == lf0, "%s: a forward-only step ignores dropout (loss %.9f, without dropout %.9f)", what, lf, lf0);
    }
    free(gc), free(ga), free(g0), free(p), free(ad), free(in), free(tg);
    if (cpu) cpu->destroy(cpu);
    if (ane) ane->destroy(ane);
    if (ane0) ane0->destroy(ane0);
}

static void test_dropout_matches_cpu(void) {
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        dropout_vs_cpu(&variants[i], 0, 2, 40, 1024.0f); /* padded to S = 64 */
        dropout_vs_cpu(&variants[i], 1, 1, 64, 1.0f);
    }
    /* The layout of big models (docs/ane-facts.md §9): the input at most 1024 wide, so the plan with
    ** the masks folds every region into more rows than C (checked on the plan the backend makes). */
    plan_max_width = 1024;
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        ParamLayout lay;
        make_layout(&lay, &variants[i]);
        LoraLayout lo;
        make_layout_lora(&lo, &lay, &target_sets[1]);
        AnePlanSpec spec = {40, lo.cfg.rank, lo.cfg.targets, 1, 0, plan_max_width};
        AneLayerPlan p;
        Err err = {{0}};
        CHECK(ane_plan_make(&p, &lay.cfg, &spec, &err) == 0 && p.in_C >= 2 * p.C, "%s: %d rows (%s)",
              variants[i].name, p.in_C, err.msg);
        dropout_vs_cpu(&variants[i], 0, 2, 40, 1024.0f);
    }
    plan_max_width = 0;
}

/* ------------------------------------------------------------------ the checker */

static void test_kernels_pass_the_checker(void) {
    const char *models[] = {"stories110m", "qwen3-0.6b"};
    const int ranks[] = {1, 4, 8, 16};
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        ModelConfig cfg;
        Err err = {{0}};
        config_from_preset(&cfg, models[mi], &err);
        AneLayerPlan plain;
        CHECK(ane_plan_layer(&plain, &cfg, 256, &err) == 0, "%s", err.msg);
        for (size_t ri = 0; ri < sizeof ranks / sizeof ranks[0]; ri++) {
            unsigned targets = ri % 2 ? 0x7fu : 0x0fu; /* all, attn */
            int nt = ri % 2 ? 7 : 4, R = ranks[ri];
            AneLayerPlan p, pd;
            CHECK(ane_plan_layer_lora(&p, &cfg, 256, R, targets, &err) == 0, "%s", err.msg);
            pd = p;
            CHECK(ane_plan_lora_dropout(&pd, &err) == 0, "%s", err.msg);
            CHECK(p.fwd_C == plain.fwd_C + nt * R && p.bwd_C == plain.bwd_C + nt * R,
                  "%s r=%d: taps %d/%d rows (plain %d/%d)", models[mi], R, p.fwd_C, p.bwd_C, plain.fwd_C, plain.bwd_C);
            long long mask_n = 0;
            for (int m = 0; m < ANE_LORA_MODULES; m++) mask_n += pd.reg[AR_LORA_MASK + m].n - p.reg[AR_LORA_MASK + m].n;
            CHECK(mask_n == (long long)p.S * (nt == 7 ? 5LL * p.C + p.Q + p.F : 3LL * p.C + p.Q) &&
                      pd.fwd_C == p.fwd_C && pd.bwd_C == p.bwd_C,
                  "%s r=%d: one [in][S] mask per module, the same taps", models[mi], R);
            for (int k = 0; k < 4; k++) {
                char *mil;
                AneBlob *blobs;
                int nb;
                const AneLayerPlan *kp = k < 2 ? &p : &pd;
                int rc = k % 2 ? ane_kernel_bwd(kp, &mil, &blobs, &nb, &err) : ane_kernel_fwd(kp, &mil, &blobs, &nb, &err);
                CHECK(rc == 0, "%s r=%d: %s", models[mi], R, err.msg);
                if (rc) continue;
                MilAst ast;
                MilGraph g;
                MilCheckOptions co = {0, 0, ANE_LIMITS_STRICT, NULL};
                rc = mil_parse(mil, &ast, &err);
                CHECK(rc == 0, "%s r=%d %s: parse: %s", models[mi], R, k % 2 ? "layer_bwd" : "layer_fwd", err.msg);
                if (rc == 0) {
                    rc = mil_check(&ast, blobs, nb, &co, &g, &err);
                    CHECK(rc == 0, "%s r=%d %s: the checker refuses: %s", models[mi], R, k % 2 ? "layer_bwd" : "layer_fwd",
                          err.msg);
                    if (rc == 0) {
                        const MilType *ti = &g.values[g.input].type, *to = &g.values[g.output].type;
                        CHECK(ti->dims[1] == kp->in_C && ti->dims[3] == kp->in_S &&
                                  to->dims[1] == (k % 2 ? kp->bwd_C : kp->fwd_C) && to->dims[3] == kp->S,
                              "%s r=%d%s: I/O as planned", models[mi], R, k < 2 ? "" : " dropout");
                        mil_graph_free(&g);
                    }
                }
                free(mil);
                milw_free_blobs(blobs, nb);
            }
            if (verbose)
                printf("     %s r=%d (%s): input [%d x %d] (+%d columns), taps fwd %d bwd %d\n", models[mi], R,
                       nt == 7 ? "all" : "attn", p.in_C, p.in_S, p.in_S - plain.in_S, p.fwd_C, p.bwd_C);
        }
    }
}

int main(int argc, char **argv) {
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    parallel_init(2);
    RUN(test_step_matches_cpu_merged);
    RUN(test_contract);
    RUN(test_dropout_matches_cpu);
    RUN(test_kernels_pass_the_checker);
    parallel_shutdown();
    return TEST_SUMMARY();
}
