/*
** test_ane_int8_base.c — an int8 frozen base on the ANE backend (backend_ane_create_frozen with
** FrozenBase.int8, emulated device): the seven layer matrices staged once as their int8 values
** (exact in fp16) with a row-scale region each, the kernels computing y = s * (Q x) and
** dx = Q^T (s * dy). The reference is the CPU backend on the dequantized fp32 parameters
** (quant_int8_dequantize_into: exactly the weights the int8 base stands for).
**
**   - forward only, no adapter (FrozenBase {NULL, int8}), and with an adapter (adapter NULL; an
**     adapter with adapter_grads NULL) for tiny Llama (MHA tied interleaved; GQA 4/2 untied
**     rotate-half) and tiny-qwen3: loss and logits within fp16 tolerance of the CPU on the
**     dequantized weights (merged with the adapter where there is one); the parameter buffer the
**     ANE gets has NaN in all seven matrices, which therefore are never read;
**   - a LoRA step over the int8 base against the CPU's merged full-gradient path on the
**     dequantized weights projected with lora_grad: adapter gradient cosine >= 0.9999 overall and
**     >= 0.999 for every A and B of every layer;
**   - large FFN activations (rms_ffn weights 8), where the integers q themselves would overflow fp16
**     in Q x (checked: with ANE_INT8_STEP 1 this case gives NaN) and q 2^-7 does not;
**   - bytes staged: the base once (norm weights, int8 values as fp16, row scales), the adapter
**     every step; 2 compiles and 2 dispatches per layer and sequence;
**   - host memory: the Int8Weights are read at staging time (a change made after creation and
**     before the first step is what the step computes with) and the backend holds no fp32 copy
**     of the matrices (its heap use is that of the fp32-base backend, measured by the allocator);
**   - refusals: grads over an int8 base, an adapter given to a backend without one, an int8
**     base for another model, a scale that is not an fp16 value;
**   - the int8 kernels of stories110m and qwen3-0.6b, without and with LoRA, pass the
**     emulator's checker, their I/O is as planned, and a plan without int8 is the LoRA plan.
**
** -v prints the figures of every case.
*/
#include <limits.h>
#include <stdint.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#endif
#if defined(TEST_ASAN)
#include <stddef.h>
/* The sanitizer runtime's count of the heap (declared in sanitizer/allocator_interface.h, which
** not every compiler installation ships). */
size_t __sanitizer_get_current_allocated_bytes(void);
#elif defined(__linux__)
#include <malloc.h>
#endif

#include "backend/ane/emu/mil.h"
#include "backend/ane/kernels.h"
#include "backend/ane/mil_write.h"
#include "backend/backend.h"
#include "model/config.h"
#include "model/lora.h"
#include "model/params.h"
#include "model/quant.h"
#include "test.h"
#include "test_models.h"
#include "train/lora_grad.h"
#include "util/parallel.h"
#include "util/rng.h"

static int verbose;

static const TensorKind matrix_kinds[] = {T_WQ, T_WK, T_WV, T_WO, T_W1, T_W2, T_W3};

/* The int8 base of p (*q8), the dequantized fp32 model (returned: the reference's weights) and, in
** *poisoned, p with NaN in the seven matrices (what the ANE backend gets: they must not be read). */
static float *make_int8(const ParamLayout *lay, const float *p, Int8Weights *q8, float **poisoned) {
    Err err = {{0}};
    CHECK(quant_int8_create(q8, lay, p, &err) == 0, "%s", err.msg);
    float *deq = falloc(lay->n_floats);
    memcpy(deq, p, lay->n_floats * sizeof(float));
    quant_int8_dequantize_into(q8, lay, deq);
    *poisoned = falloc(lay->n_floats);
    memcpy(*poisoned, p, lay->n_floats * sizeof(float));
    for (size_t i = 0; i < sizeof matrix_kinds / sizeof matrix_kinds[0]; i++) {
        const TensorSpec *t = &lay->t[matrix_kinds[i]];
        for (size_t j = 0; j < t->numel; j++) (*poisoned)[t->offset + j] = NAN;
    }
    return deq;
}

static int plan_max_width; /* 0: the device's 16384; test_lora_step_matches_cpu_merged also narrows it */

static Backend *make_ane(const ParamLayout *lay, const LoraLayout *lo, const Int8Weights *q8, int B, int T,
                         Err *err) {
    AneBackendOptions o;
    backend_ane_default_options(&o);
    o.device = "emu";
    o.compile_budget = 1000;
    o.plan_max_width = plan_max_width;
    FrozenBase fb = {lo, q8};
    return backend_ane_create_frozen(lay, &fb, B, T, &o, err);
}

/* The reference: the CPU backend on base (+ the merged adapter when there is one); with ga, its
** full gradient projected onto the adapter, ga += grad_scale dloss/dadapter. Returns the loss. */
static double cpu_reference(Backend *cpu, const ParamLayout *lay, const LoraLayout *lo, const float *base,
                            const float *adapter, float *ga, const int32_t *in, const int32_t *tg, int B, int T,
                            float scale, float *logits) {
    float *work = falloc(lay->n_floats), *g = ga ? falloc(lay->n_floats) : NULL;
    memcpy(work, base, lay->n_floats * sizeof(float));
    if (adapter) {
        float *copy = falloc(lo->n_base_floats);
        lora_base_copy(lo, lay, base, copy);
        lora_merge(lo, lay, copy, adapter, work);
        free(copy);
    }
    double loss = NAN;
    Err err = {{0}};
    CHECK(backend_step(cpu, work, g, in, tg, B, T, scale, &loss, logits, &err) == 0, "cpu: %s", err.msg);
    if (ga) lora_grad(lo, lay, g, adapter, ga);
    free(work), free(g);
    return loss;
}

static double ane_run(Backend *be, const float *base, const float *adapter, float *ga, const int32_t *in,
                      const int32_t *tg, int B, int T, float scale, float *logits) {
    StepArgs a = {base, NULL, adapter, ga, in, tg, B, T, scale, logits, 0};
    double loss = NAN;
    Err err = {{0}};
    CHECK(be->step(be, &a, &loss, &err) == 0, "ane step: %s", err.msg);
    return loss;
}

/* max |a - b| / max |b| over n values. */
static double rel_max_diff(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e; /* NaN wins */
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0 ? d / m : d;
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
            CHECK(ca >= 0.999 && cb >= 0.999, "%s: %s layer %d: dA cosine %.6f, dB cosine %.6f", what,
                  lora_module_name((LoraModule)m), l, ca, cb);
            if (ca < *worst) *worst = ca;
            if (cb < *worst) *worst = cb;
        }
    }
    return all;
}

/* ------------------------------------------------------------------ forward only */

/* Logits: cosine > 0.9999 and max |diff| <= 1% of max |logit| (fp16 activations through the
** layers; test_ane_step bounds the fp32 base the same way). */
static void check_forward(const char *what, double la, double lc, const float *ga, const float *gc, size_t nl,
                          double *worst_rel) {
    double c = cosine(ga, gc, nl), r = rel_max_diff(ga, gc, nl);
    CHECK(fabs(la - lc) < LOSS_TOL(lc), "%s: loss %.6f vs cpu %.6f", what, la, lc);
    CHECK(c > 0.9999 && r <= 0.01, "%s: logits cosine %.6f, max difference %.2e of the largest", what, c, r);
    if (!(r <= *worst_rel)) *worst_rel = r; /* NaN wins */
    if (verbose) printf("     %s: loss cpu %.6f ane %.6f, logits cosine %.7f, max diff %.2e\n", what, lc, la, c, r);
}

static void test_forward_matches_cpu_dequantized(void) {
    double worst_rel = 0, worst_loss = 0;
    for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++)
        for (int unit = 0; unit < 2; unit++) {
            const Variant *v = &variants[vi];
            ParamLayout lay;
            make_layout(&lay, v);
            enum { B = 2, T = 40 }; /* padded to S = 64 */
            float *p = make_params(&lay, unit, 42), *poison;
            Int8Weights q8;
            float *deq = make_int8(&lay, p, &q8, &poison);
            LoraLayout lo;
            make_layout_lora(&lo, &lay, &target_sets[1]);
            float *ad = make_adapter(&lo, 50, 0.05);
            int32_t in[B * T], tg[B * T];
            make_tokens(in, tg, B * T, lay.cfg.vocab_size, 7);
            Err err = {{0}};
            Backend *cpu = backend_cpu_create(&lay, B, T, &err), *plain = make_ane(&lay, NULL, &q8, B, T, &err);
            Backend *withlora = make_ane(&lay, &lo, &q8, B, T, &err);
            CHECK(cpu && plain && withlora, "backends: %s", err.msg);
            if (cpu && plain && withlora) {
                size_t nl = (size_t)B * lay.cfg.vocab_size * T;
                float *lc = falloc(nl), *la = falloc(nl);
                char what[200];
                double lref = cpu_reference(cpu, &lay, &lo, deq, NULL, NULL, in, tg, B, T, 1.0f, lc);
                double l = ane_run(plain, poison, NULL, NULL, in, tg, B, T, 1.0f, la);
                snprintf(what, sizeof what, "%s, %s weights, int8 base alone", v->name, unit ? "unit" : "llama2.c");
                check_forward(what, l, lref, la, lc, nl, &worst_rel);
                if (fabs(l - lref) > worst_loss) worst_loss = fabs(l - lref);
                memset(la, 0, nl * sizeof(float));
                l = ane_run(withlora, poison, NULL, NULL, in, tg, B, T, 1.0f, la);
                snprintf(what, sizeof what, "%s, %s weights, LoRA backend, adapter NULL", v->name,
                         unit ? "unit" : "llama2.c");
                check_forward(what, l, lref, la, lc, nl, &worst_rel);
                lref = cpu_reference(cpu, &lay, &lo, deq, ad, NULL, in, tg, B, T, 1.0f, lc);
                memset(la, 0, nl * sizeof(float));
                l = ane_run(withlora, poison, ad, NULL, in, tg, B, T, 1.0f, la);
                snprintf(what, sizeof what, "%s, %s weights, adapter all r=4, no adapter_grads", v->name,
                         unit ? "unit" : "llama2.c");
                check_forward(what, l, lref, la, lc, nl, &worst_rel);
                if (fabs(l - lref) > worst_loss) worst_loss = fabs(l - lref);
                free(lc), free(la);
            }
            if (cpu) cpu->destroy(cpu);
            if (plain) plain->destroy(plain);
            if (withlora) withlora->destroy(withlora);
            quant_int8_free(&q8);
            free(p), free(deq), free(poison), free(ad);
        }
    printf("     int8 base forward vs the CPU on the dequantized weights: worst loss difference %.1e, worst logit "
           "difference %.2e of the largest\n",
           worst_loss, worst_rel);
}

/* ------------------------------------------------------------------ a LoRA step */

static void test_lora_step_matches_cpu_merged(void) {
    double worst_all = 1, worst_tensor = 1, worst_loss = 0;
    /* narrow 1: the input at most 1024 wide, so the plan folds every region into 2C rows (the layout
    ** of big models, docs/ane-facts.md §9); once per variant, all modules at llama2.c's init */
    for (int narrow = 0; narrow < 2; narrow++)
    for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++)
        for (size_t ti = narrow; ti < (narrow ? 2 : sizeof target_sets / sizeof target_sets[0]); ti++)
            for (int unit = 0; unit < 2 - narrow; unit++) {
                plan_max_width = narrow ? 1024 : 0;
                const Variant *v = &variants[vi];
                const Targets *ts = &target_sets[ti];
                ParamLayout lay;
                make_layout(&lay, v);
                LoraLayout lo;
                make_layout_lora(&lo, &lay, ts);
                int B = unit ? 1 : 2, T = unit ? 64 : 40;
                float scale = unit ? 1.0f : 1024.0f; /* llama2.c's init: fp16 gradients need the loss scale */
                float *p = make_params(&lay, unit, 42), *poison, *ad = make_adapter(&lo, 50, 0.05);
                Int8Weights q8;
                float *deq = make_int8(&lay, p, &q8, &poison);
                int32_t *in = malloc(sizeof(int32_t) * B * T), *tg = malloc(sizeof(int32_t) * B * T);
                make_tokens(in, tg, B * T, lay.cfg.vocab_size, 7);
                Err err = {{0}};
                Backend *cpu = backend_cpu_create(&lay, B, T, &err), *ane = make_ane(&lay, &lo, &q8, B, T, &err);
                CHECK(cpu && ane, "backends: %s", err.msg);
                if (cpu && ane) {
                    float *gc = falloc(lo.n_floats), *ga = falloc(lo.n_floats);
                    double lc = cpu_reference(cpu, &lay, &lo, deq, ad, gc, in, tg, B, T, scale, NULL);
                    double la = ane_run(ane, poison, ad, ga, in, tg, B, T, scale, NULL);
                    char what[200];
                    snprintf(what, sizeof what, "%s, int8 base, %s r=%d%s, %s weights, B=%d T=%d%s", v->name,
                             ts->targets, ts->rank, ts->rslora ? " rsLoRA" : "", unit ? "unit" : "llama2.c", B, T,
                             narrow ? ", input at most 1024 wide" : "");
                    if (narrow) {
                        AnePlanSpec spec = {T, lo.cfg.rank, lo.cfg.targets, 0, 1, plan_max_width};
                        AneLayerPlan pl;
                        CHECK(ane_plan_make(&pl, &lay.cfg, &spec, &err) == 0 && pl.in_C >= 2 * pl.C, "%s: %d rows",
                              what, pl.in_C);
                    }
                    CHECK(fabs(la - lc) < LOSS_TOL(lc), "%s: loss %.6f vs cpu %.6f", what, la, lc);
                    double all = check_adapter_grads(what, &lo, ga, gc, &worst_tensor);
                    if (verbose) printf("     %s: loss cpu %.6f ane %.6f, adapter gradient cosine %.6f\n", what, lc, la, all);
                    if (all < worst_all) worst_all = all;
                    if (fabs(la - lc) > worst_loss) worst_loss = fabs(la - lc);
                    free(gc), free(ga);
                }
                if (cpu) cpu->destroy(cpu);
                if (ane) ane->destroy(ane);
                quant_int8_free(&q8);
                free(p), free(deq), free(poison), free(ad), free(in), free(tg);
            }
    plan_max_width = 0;
    printf("     LoRA over an int8 base, adapter gradient cosine: worst overall %.6f (limit 0.9999), worst single A/B "
           "%.6f (limit 0.999); worst loss difference %.1e\n",
           worst_all, worst_tensor, worst_loss);
}

/* Activations of hundreds through the FFN (unit weights, rms_ffn weights 8): w2's input g is ~10^2
** to 10^3, so Q g with the integers q would be g / s ~ 10^5, past fp16's 65504; staged as q 2^-7
** (ANE_INT8_STEP) it is 128 times smaller and the step still matches the CPU. */
static void test_large_activations(void) {
    const Variant *v = &variants[0];
    ParamLayout lay;
    make_layout(&lay, v);
    LoraLayout lo;
    make_layout_lora(&lo, &lay, &target_sets[1]);
    enum { B = 1, T = 64 };
    float *p = make_params(&lay, 1, 21), *ad = make_adapter(&lo, 22, 0.05), *poison;
    const TensorSpec *rf = &lay.t[T_RMS_FFN];
    for (size_t i = 0; i < rf->numel; i++) p[rf->offset + i] *= 8.0f;
    Int8Weights q8;
    float *deq = make_int8(&lay, p, &q8, &poison);
    int32_t in[B * T], tg[B * T];
    make_tokens(in, tg, B * T, lay.cfg.vocab_size, 23);
    Err err = {{0}};
    Backend *cpu = backend_cpu_create(&lay, B, T, &err), *ane = make_ane(&lay, &lo, &q8, B, T, &err);
    CHECK(cpu && ane, "%s", err.msg);
    if (cpu && ane) {
        size_t nl = (size_t)B * lay.cfg.vocab_size * T;
        float *lc = falloc(nl), *la = falloc(nl), *gc = falloc(lo.n_floats), *ga = falloc(lo.n_floats);
        double worst_rel = 0, worst = 1;
        double lref = cpu_reference(cpu, &lay, &lo, deq, ad, NULL, in, tg, B, T, 1.0f, lc);
        double l = ane_run(ane, poison, ad, NULL, in, tg, B, T, 1.0f, la);
        check_forward("large FFN activations, forward", l, lref, la, lc, nl, &worst_rel);
        lref = cpu_reference(cpu, &lay, &lo, deq, ad, gc, in, tg, B, T, 1.0f, NULL);
        l = ane_run(ane, poison, ad, ga, in, tg, B, T, 1.0f, NULL);
        CHECK(fabs(l - lref) < LOSS_TOL(lref), "large FFN activations, LoRA step: loss %.6f vs cpu %.6f", l, lref);
        double all = check_adapter_grads("large FFN activations, LoRA step", &lo, ga, gc, &worst);
        printf("     large FFN activations: loss cpu %.4f ane %.4f, logits max difference %.2e of the largest, adapter "
               "gradient cosine %.6f\n",
               lref, l, worst_rel, all);
        free(lc), free(la), free(gc), free(ga);
    }
    if (cpu) cpu->destroy(cpu);
    if (ane) ane->destroy(ane);
    quant_int8_free(&q8);
    free(p), free(deq), free(poison), free(ad);
}

/* ------------------------------------------------------------------ the contract */

static void test_staging(void) {
    const Variant *v = &variants[2];
    ParamLayout lay;
    make_layout(&lay, v);
    LoraLayout lo;
    make_layout_lora(&lo, &lay, &target_sets[1]);
    enum { B = 2, T = 48 };
    int L = lay.cfg.n_layers;
    float *p = make_params(&lay, 0, 5), *poison, *ad = make_adapter(&lo, 6, 0.05);
    Int8Weights q8;
    float *deq = make_int8(&lay, p, &q8, &poison);
    int32_t in[B * T], tg[B * T];
    make_tokens(in, tg, B * T, lay.cfg.vocab_size, 9);
    Err err = {{0}};
    Backend *ane = make_ane(&lay, &lo, &q8, B, T, &err), *fwd = make_ane(&lay, NULL, &q8, B, T, &err);
    CHECK(ane && fwd, "%s", err.msg);
    if (!ane || !fwd) return;
    size_t n = lo.n_floats;
    float *g1 = falloc(n), *g2 = falloc(n);
    BackendStats s0, s1, s2;
    ane->stats(ane, &s0);
    double l1 = ane_run(ane, poison, ad, g1, in, tg, B, T, 1024.0f, NULL);
    ane->stats(ane, &s1);
    double l2 = ane_run(ane, poison, ad, g2, in, tg, B, T, 1024.0f, NULL);
    ane->stats(ane, &s2);
    uint64_t base = base_bytes_per_layer(&lay, 1) * L, adapter = 2 * (uint64_t)lo.n_floats;
    uint64_t w1 = s1.bytes_staged_weights - s0.bytes_staged_weights, w2 = s2.bytes_staged_weights - s1.bytes_staged_weights;
    printf("     weight bytes staged over the int8 base: first step %llu (base %llu, of which scales %llu, + adapter "
           "%llu), next step %llu; the fp32 base would be %llu\n",
           (unsigned long long)w1, (unsigned long long)base,
           (unsigned long long)(base - base_bytes_per_layer(&lay, 0) * L), (unsigned long long)adapter,
           (unsigned long long)w2, (unsigned long long)(base_bytes_per_layer(&lay, 0) * L));
    CHECK(w1 == base + adapter, "first step stages the int8 base and the adapter: %llu bytes, expected %llu",
          (unsigned long long)w1, (unsigned long long)(base + adapter));
    CHECK(w2 == adapter, "a later step stages the adapter alone: %llu bytes, expected %llu", (unsigned long long)w2,
          (unsigned long long)adapter);
    CHECK(s2.evaluations - s1.evaluations == (uint64_t)2 * L * B, "2 dispatches per layer and sequence (%llu)",
          (unsigned long long)(s2.evaluations - s1.evaluations));
    CHECK(s2.compiles == 2, "2 compiles (%llu)", (unsigned long long)s2.compiles);
    CHECK(l1 == l2 && memcmp(g1, g2, n * sizeof(float)) == 0, "the step is deterministic");
    /* forward-only without an adapter: the base once, then nothing */
    BackendStats f0, f1, f2;
    fwd->stats(fwd, &f0);
    ane_run(fwd, poison, NULL, NULL, in, tg, B, T, 1.0f, NULL);
    fwd->stats(fwd, &f1);
    ane_run(fwd, poison, NULL, NULL, in, tg, B, T, 1.0f, NULL);
    fwd->stats(fwd, &f2);
    CHECK(f1.bytes_staged_weights - f0.bytes_staged_weights == base &&
              f2.bytes_staged_weights == f1.bytes_staged_weights && f2.compiles == 2,
          "forward-only over the int8 base: %llu weight bytes at the first step (expected %llu), %llu later, %llu "
          "compiles",
          (unsigned long long)(f1.bytes_staged_weights - f0.bytes_staged_weights), (unsigned long long)base,
          (unsigned long long)(f2.bytes_staged_weights - f1.bytes_staged_weights), (unsigned long long)f2.compiles);
    /* refusals */
    double loss;
    float *full = falloc(lay.n_floats);
    StepArgs a = {poison, full, NULL, NULL, in, tg, B, T, 1.0f, NULL, 0};
    CHECK(fwd->step(fwd, &a, &loss, &err) == -1 && strstr(err.msg, "int8 weights do not train"),
          "grads over an int8 base refused: %s", err.msg);
    a.grads = NULL;
    a.adapter = ad;
    CHECK(fwd->step(fwd, &a, &loss, &err) == -1 && strstr(err.msg, "without one"),
          "an adapter given to an int8 backend without LoRA refused: %s", err.msg);
    ParamLayout other;
    make_layout(&other, &variants[0]);
    CHECK(make_ane(&other, NULL, &q8, B, T, &err) == NULL && strstr(err.msg, "int8 base is for a model"),
          "an int8 base for another model refused: %s", err.msg);
    float keep = q8.scale[3];
    q8.scale[3] = 1.0f / 3.0f; /* not an fp16 value */
    CHECK(make_ane(&lay, &lo, &q8, B, T, &err) == NULL && strstr(err.msg, "row 3") && strstr(err.msg, "fp16"),
          "a scale that is not an fp16 value refused: %s", err.msg);
    q8.scale[3] = keep;
    ane->destroy(ane);
    fwd->destroy(fwd);
    quant_int8_free(&q8);
    free(p), free(deq), free(poison), free(ad), free(g1), free(g2), free(full);
}

/* ------------------------------------------------------------------ host memory */

/* Heap bytes in use (the allocator's own count), or -1 where this test cannot ask for it. */
static long long heap_in_use(void) {
#if defined(TEST_ASAN)
    return (long long)__sanitizer_get_current_allocated_bytes();
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    return (long long)(mi.uordblks + mi.hblkhd);
#else
    return -1;
#endif
}

/* Heap held by a LoRA backend over this base (fp32: q8 NULL) after its first step. */
static long long backend_heap(const ParamLayout *lay, const LoraLayout *lo, const Int8Weights *q8, const float *params,
                              const float *ad, float *ga, const int32_t *in, const int32_t *tg, int B, int T) {
    long long before = heap_in_use();
    Err err = {{0}};
    Backend *be = make_ane(lay, lo, q8, B, T, &err);
    CHECK(be != NULL, "%s", err.msg);
    if (!be) return -1;
    ane_run(be, params, ad, ga, in, tg, B, T, 1.0f, NULL);
    long long held = heap_in_use() - before;
    be->destroy(be);
    return held;
}

/* Heap held after the first step by the LoRA backend over the int8 base minus that over the fp32
** base, for tiny Llama with n_layers layers; *copy: the bytes of an fp32 copy of its matrices. */
static long long heap_difference(int n_layers, long long *copy) {
    ParamLayout lay;
    ModelConfig cfg;
    Err err = {{0}};
    config_from_preset(&cfg, "tiny", &err);
    cfg.n_layers = n_layers;
    params_layout(&lay, &cfg);
    LoraLayout lo;
    make_layout_lora(&lo, &lay, &target_sets[0]);
    enum { B = 1, T = 32 };
    float *p = make_params(&lay, 1, 11), *poison, *ad = make_adapter(&lo, 12, 0.05), *ga = falloc(lo.n_floats);
    Int8Weights q8;
    float *deq = make_int8(&lay, p, &q8, &poison);
    int32_t in[B * T], tg[B * T];
    make_tokens(in, tg, B * T, lay.cfg.vocab_size, 13);
    /* A first backend warms up what the process allocates once (the pool, BLAS, caches). */
    backend_heap(&lay, &lo, &q8, poison, ad, ga, in, tg, B, T);
    long long h_fp32 = backend_heap(&lay, &lo, NULL, p, ad, ga, in, tg, B, T);
    long long h_int8 = backend_heap(&lay, &lo, &q8, poison, ad, ga, in, tg, B, T);
    *copy = (long long)quant_int8_fp32_bytes(&lay);
    if (verbose) printf("     %d layers: heap held after the first step: fp32 base %lld bytes, int8 base %lld bytes\n",
                        n_layers, h_fp32, h_int8);
    quant_int8_free(&q8);
    free(p), free(deq), free(poison), free(ad), free(ga);
    return h_fp32 < 0 || h_int8 < 0 ? LLONG_MIN : h_int8 - h_fp32;
}

static void test_host_memory(void) {
    const Variant *v = &variants[0];
    ParamLayout lay;
    make_layout(&lay, v);
    LoraLayout lo;
    make_layout_lora(&lo, &lay, &target_sets[0]);
    enum { B = 1, T = 32 };
    float *p = make_params(&lay, 1, 11), *poison, *ad = make_adapter(&lo, 12, 0.05);
    Int8Weights q8;
    float *deq = make_int8(&lay, p, &q8, &poison);
    int32_t in[B * T], tg[B * T];
    make_tokens(in, tg, B * T, lay.cfg.vocab_size, 13);
    Err err = {{0}};
    Backend *cpu = backend_cpu_create(&lay, B, T, &err), *ane = make_ane(&lay, &lo, &q8, B, T, &err);
    CHECK(cpu && ane, "%s", err.msg);
    /* The int8 values are read at the first step, not copied at creation: change them in between
    ** (the first row of wq negated, and the dequantized reference with it) and the step follows. */
    if (cpu && ane) {
        int8_t *q = q8.q + q8.q_offset[T_WQ];
        for (int i = 0; i < lay.cfg.dim; i++) q[i] = (int8_t)-q[i];
        float *deq2 = falloc(lay.n_floats);
        memcpy(deq2, p, lay.n_floats * sizeof(float));
        quant_int8_dequantize_into(&q8, &lay, deq2);
        double before = cpu_reference(cpu, &lay, &lo, deq, ad, NULL, in, tg, B, T, 1.0f, NULL);
        double lc = cpu_reference(cpu, &lay, &lo, deq2, ad, NULL, in, tg, B, T, 1.0f, NULL);
        double la = ane_run(ane, poison, ad, NULL, in, tg, B, T, 1.0f, NULL);
        CHECK(fabs(la - lc) < LOSS_TOL(lc) && fabs(la - before) > 10 * fabs(la - lc),
              "int8 values changed before the first step: loss %.6f, cpu %.6f (unchanged base %.6f)", la, lc, before);
        free(deq2);
    }
    if (cpu) cpu->destroy(cpu);
    if (ane) ane->destroy(ane);
    quant_int8_free(&q8);
    free(p), free(deq), free(poison), free(ad);

    /* No fp32 copy of the matrices: the heap the int8 backend holds beyond the fp32-base backend
    ** (which holds no copy of params either) does not grow with the layers as a copy would. The
    ** difference has a part that does not depend on the layers (the int8 kernels have more ops, so
    ** more intermediate values in the emulator's programs); 2 and 6 layers separate the two. */
    long long copy2, copy6;
    long long d2 = heap_difference(2, &copy2), d6 = heap_difference(6, &copy6);
    if (d2 == LLONG_MIN || d6 == LLONG_MIN) {
        printf("     host memory: not measured (this allocator gives no count of its heap; not counted as a check)\n");
    } else {
        long long per_layer = (d6 - d2) / 4, copy_per_layer = (copy6 - copy2) / 4;
        printf("     heap held by the int8 backend beyond the fp32-base one: %lld bytes at 2 layers, %lld at 6: %lld per "
               "layer (an fp32 copy of the matrices: %lld per layer)\n",
               d2, d6, per_layer, copy_per_layer);
        CHECK(per_layer < copy_per_layer / 8, "the int8 backend holds %lld more bytes per layer (a copy: %lld)",
              per_layer, copy_per_layer);
    }
}

/* ------------------------------------------------------------------ the checker */

static void test_kernels_pass_the_checker(void) {
    const char *models[] = {"stories110m", "qwen3-0.6b"};
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++)
        for (int R = 0; R <= 8; R += 8) {
            ModelConfig cfg;
            Err err = {{0}};
            config_from_preset(&cfg, models[mi], &err);
            AneLayerPlan p, fp;
            unsigned targets = R ? 0x7fu : 0;
            CHECK(ane_plan_layer_frozen(&p, &cfg, 256, R, targets, 1, &err) == 0, "%s", err.msg);
            CHECK(ane_plan_layer_frozen(&fp, &cfg, 256, R, targets, 0, &err) == 0, "%s", err.msg);
            AneLayerPlan lp;
            CHECK(ane_plan_layer_lora(&lp, &cfg, 256, R, targets, &err) == 0 && memcmp(&lp, &fp, sizeof lp) == 0,
                  "%s r=%d: a plan without int8 is the LoRA plan", models[mi], R);
            long long scales = 0;
            for (int m = 0; m < ANE_LORA_MODULES; m++) scales += p.reg[AR_SCALE + m].n;
            CHECK(p.fwd_C == fp.fwd_C && p.bwd_C == fp.bwd_C && scales == (long long)p.Q + 2LL * p.K + 2LL * p.C + 2LL * p.F,
                  "%s r=%d: the same taps, one scale per output row (%lld)", models[mi], R, scales);
            for (int k = 0; k < 2; k++) {
                char *mil;
                AneBlob *blobs;
                int nb;
                int rc = k ? ane_kernel_bwd(&p, &mil, &blobs, &nb, &err) : ane_kernel_fwd(&p, &mil, &blobs, &nb, &err);
                CHECK(rc == 0, "%s r=%d: %s", models[mi], R, err.msg);
                if (rc) continue;
                MilAst ast;
                MilGraph g;
                MilCheckOptions co = {0, 0, ANE_LIMITS_STRICT, NULL};
                rc = mil_parse(mil, &ast, &err);
                CHECK(rc == 0, "%s r=%d %s: parse: %s", models[mi], R, k ? "layer_bwd" : "layer_fwd", err.msg);
                if (rc == 0) {
                    rc = mil_check(&ast, blobs, nb, &co, &g, &err);
                    CHECK(rc == 0, "%s r=%d int8 %s: the checker refuses: %s", models[mi], R,
                          k ? "layer_bwd" : "layer_fwd", err.msg);
                    if (rc == 0) {
                        const MilType *ti = &g.values[g.input].type, *to = &g.values[g.output].type;
                        CHECK(ti->dims[1] == p.in_C && ti->dims[3] == p.in_S && to->dims[1] == (k ? p.bwd_C : p.fwd_C) &&
                                  to->dims[3] == p.S,
                              "%s r=%d: I/O as planned", models[mi], R);
                        mil_graph_free(&g);
                    }
                }
                free(mil);
                milw_free_blobs(blobs, nb);
            }
            if (verbose)
                printf("     %s int8 r=%d: input [%d x %d] (+%d columns for the scales)\n", models[mi], R, p.in_C, p.in_S,
                       p.in_S - fp.in_S);
        }
}

int main(int argc, char **argv) {
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    parallel_init(2);
    RUN(test_forward_matches_cpu_dequantized);
    RUN(test_lora_step_matches_cpu_merged);
    RUN(test_large_activations);
    RUN(test_staging);
    RUN(test_host_memory);
    RUN(test_kernels_pass_the_checker);
    parallel_shutdown();
    return TEST_SUMMARY();
}
