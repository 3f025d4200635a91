/*
** test_lora.c — LoRA adapters (src/model/lora.c, io/peft.c, train/lora_grad.c) and LoRA runs of
** the trainer.
**
**   - target lists, layout, PEFT's init; a fresh adapter leaves the model bit for bit unchanged
**   - the merged weight computes the adapter path: W_eff x = W x + s B (A x), in double
**   - dA and dB through the CPU backend against finite differences of its loss, and the
**     projection against the same products in double
**   - PEFT files: names, shapes and config fields; save/load round trip bit exact (both RoPE
**     styles); errors for what PEFT would compute differently
**   - RoPE: merging the saved adapter into the HF export of an interleaved model gives the HF
**     export of the merged model (and the same logits)
**   - the trainer: frozen tensors never change, only adapter moments exist, the loss falls,
**     dropout on ane takes the cpu's steps (loss, gradient norm), int8 full training refused
**     with a reason
**   - resume: a LoRA run saved (trainer_save) and continued (lora_resume_path) takes the
**     uninterrupted run's steps bit for bit (cpu with dropout, cpu over an int8 base, ane with a
**     dynamic loss scale); bad states refused: truncated, corrupt, another base, contradicting
**     options, a full-training checkpoint as a LoRA state and the reverse
**   - a LoRA step on the ANE backend (emulated device) against the CPU backend
*/
#include <cjson/cJSON.h>
#include <stdint.h>
#include <unistd.h>

#include "backend/backend.h"
#include "data/tokfile.h"
#include "io/model_file.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/lora.h"
#include "model/quant.h"
#include "test.h"
#include "train/evaluate.h"
#include "train/lora_grad.h"
#include "train/trainer.h"
#include "util/fileio.h"
#include "util/parallel.h"
#include "util/rng.h"

static int verbose;
static char tmpdir[256];

static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof *p);
    if (!p) abort();
    return p;
}

typedef struct {
    const char *name, *preset;
    int tied, n_kv_heads, head_dim;
    RopeStyle rope;
} Variant;

static const Variant llama_interleaved = {"tiny llama, GQA 4/2, untied, interleaved", "tiny", 0, 2, 8, ROPE_INTERLEAVED};
static const Variant qwen3_half = {"tiny-qwen3, GQA 4/2, tied, rotate-half", "tiny-qwen3", 1, 2, 16, ROPE_HALF};

/* dim 32, hidden 64, 2 layers, 4 heads, vocab 64, unit-variance activations through every
** matrix (as test_model_grad: gradients large enough for float finite differences). */
static void make_model(const Variant *v, ParamLayout *pl, float **params, uint64_t seed) {
    ModelConfig cfg;
    Err err = {{0}};
    config_from_preset(&cfg, v->preset, &err);
    cfg.dim = 32;
    cfg.hidden_dim = 64;
    cfg.n_layers = 2;
    cfg.n_heads = 4;
    cfg.n_kv_heads = v->n_kv_heads;
    cfg.head_dim = v->head_dim;
    cfg.vocab_size = 64;
    cfg.tied = v->tied;
    cfg.rope_style = v->rope;
    CHECK(config_validate(&cfg, v->name, &err) == 0, "%s", err.msg);
    params_layout(pl, &cfg);
    float *p = falloc(pl->n_floats);
    Rng rng;
    rng_seed(&rng, seed);
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &pl->t[k];
        for (size_t i = 0; i < t->numel; i++) {
            double z = rng_normal(&rng);
            p[t->offset + i] = (float)(t->rows == 1 ? 1 + 0.2 * z : k == T_TOK_EMB ? 0.5 * z : z / sqrt((double)t->cols));
        }
    }
    *params = p;
}

/* A trained-looking adapter: A as PEFT's init, B ~ N(0, b_sd^2) (so dA and the delta are non-zero). */
static void random_adapter(const LoraLayout *lo, float *adapter, uint64_t seed, double b_sd) {
    Rng rng;
    rng_seed(&rng, seed);
    lora_init(lo, adapter, &rng);
    for (int m = 0; m < LORA_MODULES; m++) {
        if (!lo->t[m].present) continue;
        for (int l = 0; l < lo->model.n_layers; l++) {
            float *B = lora_B(lo, adapter, (LoraModule)m, l);
            for (int i = 0; i < lo->t[m].out * lo->cfg.rank; i++) B[i] = (float)(b_sd * rng_normal(&rng));
        }
    }
}

static LoraConfig lcfg(int rank, float alpha, const char *targets, int rslora) {
    LoraConfig c = {rank, alpha, 0.0f, rslora, 0};
    Err err = {{0}};
    CHECK(lora_parse_targets(targets, &c.targets, &err) == 0, "%s", err.msg);
    return c;
}

static void make_tokens(int32_t *in, int32_t *tg, int n, int V, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) in[i] = (int32_t)rng_below(&rng, (uint64_t)V);
    for (int i = 0; i < n; i++) tg[i] = (int32_t)rng_below(&rng, (uint64_t)V);
}

/* ------------------------------------------------------------------ layout, init */

static void test_targets_and_layout(void) {
    Err err = {{0}};
    unsigned t;
    CHECK(lora_parse_targets("q,k,v,o", &t, &err) == 0 && t == 0xf, "q,k,v,o -> %#x", t);
    CHECK(lora_parse_targets("all", &t, &err) == 0 && t == 0x7f, "all -> %#x", t);
    CHECK(lora_parse_targets("mlp,q_proj", &t, &err) == 0 && t == 0x71, "mlp,q_proj -> %#x", t);
    CHECK(lora_parse_targets("q,lm_head", &t, &err) != 0 && strstr(err.msg, "'lm_head'"), "bad target: %s", err.msg);
    CHECK(lora_parse_targets("", &t, &err) != 0, "empty list accepted");
    char buf[64];
    lora_targets_format(0x65, buf, sizeof buf);
    CHECK(strcmp(buf, "q,v,up,down") == 0, "format: %s", buf);

    ParamLayout pl;
    float *p;
    make_model(&qwen3_half, &pl, &p, 1);
    const ModelConfig *c = &pl.cfg;
    LoraLayout lo;
    LoraConfig cfg = lcfg(3, 6, "all", 0);
    CHECK(lora_layout(&lo, c, &cfg, "test", &err) == 0, "%s", err.msg);
    size_t L = (size_t)c->n_layers, C = (size_t)c->dim, F = (size_t)c->hidden_dim;
    size_t HD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    size_t want = L * 3 * ((C + HD) + 2 * (C + KD) + (HD + C) + 2 * (C + F) + (F + C));
    CHECK(lo.n_floats == want, "n_floats %zu, expected %zu", lo.n_floats, want);
    size_t base = 0;
    for (int m = 0; m < LORA_MODULES; m++) base += pl.t[lo.t[m].base].numel;
    CHECK(lo.n_base_floats == base, "n_base_floats %zu, expected %zu", lo.n_base_floats, base);
    CHECK(lo.t[LORA_K].out == (int)KD && lo.t[LORA_K].in == (int)C && lo.t[LORA_O].in == (int)HD &&
              lo.t[LORA_DOWN].in == (int)F && lo.t[LORA_DOWN].base == T_W2 && lo.t[LORA_UP].base == T_W3,
          "shapes of the modules");
    CHECK(lo.scale == 2.0f, "scale alpha/r = %g", (double)lo.scale);
    cfg.rslora = 1;
    lora_layout(&lo, c, &cfg, "test", &err);
    CHECK(fabs(lo.scale - 6 / sqrt(3.0)) < 1e-6, "rsLoRA scale %g", (double)lo.scale);
    /* the views tile the buffer: B of the last module ends it */
    float *buf0 = falloc(lo.n_floats);
    CHECK(lora_B(&lo, buf0, LORA_DOWN, 1) + (size_t)lo.t[LORA_DOWN].out * 3 == buf0 + lo.n_floats, "views tile");
    free(buf0);

    cfg.rank = 0;
    CHECK(lora_layout(&lo, c, &cfg, "test", &err) != 0 && strstr(err.msg, "rank"), "rank 0: %s", err.msg);
    cfg = lcfg(2, 0, "q", 0);
    CHECK(lora_layout(&lo, c, &cfg, "test", &err) != 0 && strstr(err.msg, "alpha"), "alpha 0: %s", err.msg);
    cfg = lcfg(2, 4, "q", 0);
    cfg.targets = 0;
    CHECK(lora_layout(&lo, c, &cfg, "test", &err) != 0, "no targets accepted");
    free(p);
}

static void test_init_leaves_model_unchanged(void) {
    ParamLayout pl;
    float *p;
    make_model(&llama_interleaved, &pl, &p, 2);
    LoraLayout lo;
    LoraConfig cfg = lcfg(4, 8, "all", 0);
    Err err = {{0}};
    CHECK(lora_layout(&lo, &pl.cfg, &cfg, "test", &err) == 0, "%s", err.msg);
    float *a = falloc(lo.n_floats), *base = falloc(lo.n_base_floats), *work = falloc(pl.n_floats);
    Rng rng;
    rng_seed(&rng, 3);
    lora_init(&lo, a, &rng);
    int a_ok = 1, b_ok = 1;
    double lo_v = 1, hi_v = -1;
    for (int m = 0; m < LORA_MODULES; m++)
        for (int l = 0; l < pl.cfg.n_layers; l++) {
            double bound = 1 / sqrt((double)lo.t[m].in);
            float *A = lora_A(&lo, a, (LoraModule)m, l), *B = lora_B(&lo, a, (LoraModule)m, l);
            for (int i = 0; i < 4 * lo.t[m].in; i++) {
                a_ok &= fabs(A[i]) <= bound;
                lo_v = fmin(lo_v, A[i] / bound);
                hi_v = fmax(hi_v, A[i] / bound);
            }
            for (int i = 0; i < lo.t[m].out * 4; i++) b_ok &= B[i] == 0;
        }
    CHECK(a_ok && lo_v < -0.95 && hi_v > 0.95, "A ~ U(-1/sqrt(in), 1/sqrt(in)): range [%g, %g] of the bound", lo_v,
          hi_v);
    CHECK(b_ok, "B starts at zero");
    lora_base_copy(&lo, &pl, p, base);
    memcpy(work, p, pl.n_floats * sizeof(float));
    lora_merge(&lo, &pl, base, a, work);
    CHECK(memcmp(work, p, pl.n_floats * sizeof(float)) == 0, "a fresh adapter changes the weights");
    ParamLayout ol;
    lora_optim_layout(&lo, &ol);
    size_t covered = 0;
    for (int k = 0; k < T_COUNT; k++) covered += ol.t[k].present ? ol.t[k].numel : 0;
    CHECK(covered == lo.n_floats && ol.t[T_TOK_EMB].decay == 1, "the optimizer's view covers the adapter");
    free(a), free(base), free(work), free(p);
}

/* ------------------------------------------------------------------ merge and gradients */

static void test_merge_is_the_adapter_path(void) {
    ParamLayout pl;
    float *p;
    make_model(&qwen3_half, &pl, &p, 4);
    LoraLayout lo;
    LoraConfig cfg = lcfg(5, 7, "all", 0);
    Err err = {{0}};
    lora_layout(&lo, &pl.cfg, &cfg, "test", &err);
    float *a = falloc(lo.n_floats), *base = falloc(lo.n_base_floats), *work = falloc(pl.n_floats),
          *exported = falloc(pl.n_floats);
    random_adapter(&lo, a, 5, 0.5);
    lora_base_copy(&lo, &pl, p, base);
    memcpy(work, p, pl.n_floats * sizeof(float));
    lora_merge(&lo, &pl, base, a, work);
    memcpy(exported, p, pl.n_floats * sizeof(float));
    lora_merge_into(&lo, &pl, exported, a);
    CHECK(memcmp(work, exported, pl.n_floats * sizeof(float)) == 0, "training merge and export merge differ");
    Rng rng;
    rng_seed(&rng, 6);
    double worst = 0;
    for (int m = 0; m < LORA_MODULES; m++)
        for (int l = 0; l < pl.cfg.n_layers; l++) {
            const LoraTensor *t = &lo.t[m];
            const float *W = params_tensor(&pl, p, t->base, l), *We = params_tensor(&pl, work, t->base, l);
            const float *A = lora_A(&lo, a, (LoraModule)m, l), *B = lora_B(&lo, a, (LoraModule)m, l);
            double x[128], ax[8], y_merged[128], y_path[128], scale = 0;
            for (int j = 0; j < t->in; j++) x[j] = rng_normal(&rng);
            for (int k = 0; k < 5; k++) {
                ax[k] = 0;
                for (int j = 0; j < t->in; j++) ax[k] += (double)A[k * t->in + j] * x[j];
            }
            for (int i = 0; i < t->out; i++) {
                double wx = 0, wex = 0, bax = 0;
                for (int j = 0; j < t->in; j++) {
                    wx += (double)W[(size_t)i * t->in + j] * x[j];
                    wex += (double)We[(size_t)i * t->in + j] * x[j];
                }
                for (int k = 0; k < 5; k++) bax += (double)B[i * 5 + k] * ax[k];
                y_merged[i] = wex;
                y_path[i] = wx + lo.scale * bax;
                scale = fmax(scale, fabs(y_path[i]));
            }
            for (int i = 0; i < t->out; i++) worst = fmax(worst, fabs(y_merged[i] - y_path[i]) / scale);
        }
    if (verbose) printf("     merged vs adapter path: worst %.2e\n", worst);
    CHECK(worst < 1e-5, "W_eff x vs W x + s B (A x): worst relative difference %.2e", worst);
    free(a), free(base), free(work), free(exported), free(p);
}

/* Fourth-order central differences as test_model_grad (h = 2^-5, float loss rounding ~5e-7). */
#define FD_H 0x1p-5
#define FD_RTOL 2e-2
#define FD_FLOOR 2e-3

enum { FB = 2, FT = 9 };

static double loss_at(Backend *be, const LoraLayout *lo, const ParamLayout *pl, const float *base, const float *a,
                      float *work, const int32_t *in, const int32_t *tg) {
    lora_merge(lo, pl, base, a, work);
    double loss = NAN;
    Err err = {{0}};
    CHECK(backend_step(be, work, NULL, in, tg, FB, FT, 1.0f, &loss, NULL, &err) == 0, "%s", err.msg);
    return loss;
}

/* The loss as a function of the adapter, for fd_compare. */
typedef double (*AdapterLoss)(void *ctx, const float *adapter);

typedef struct {
    Backend *be;
    const LoraLayout *lo;
    const ParamLayout *pl;
    const float *base;
    float *work;
    const int32_t *in, *tg;
} MergedLoss;

static double merged_loss(void *ctx, const float *a) {
    MergedLoss *c = ctx;
    return loss_at(c->be, c->lo, c->pl, c->base, a, c->work, c->in, c->tg);
}

/* The adapter gradient ga against fourth-order differences of loss(a): 6 elements of every A and
** B (half of them among the larger ones), each within FD_RTOL relative (FD_FLOOR absolute floor);
** and a quarter of them significant, so the check cannot pass vacuously. */
static void fd_compare(const char *name, const LoraLayout *lo, float *a, const float *ga, AdapterLoss loss, void *ctx,
                       uint64_t seed, double *worst_out) {
    Rng rng;
    rng_seed(&rng, seed);
    double worst = 0;
    int bad = 0, checked = 0, significant = 0;
    for (int m = 0; m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo->t[m];
        if (!t->present) continue;
        for (int which = 0; which < 2; which++) {
            size_t off = which ? t->b_offset : t->a_offset;
            size_t len = (size_t)lo->model.n_layers * lo->cfg.rank * (which ? t->out : t->in);
            double ss = 0;
            for (size_t i = 0; i < len; i++) ss += (double)ga[off + i] * ga[off + i];
            double rms = sqrt(ss / (double)len);
            for (int s = 0; s < 6; s++) {
                size_t i = off + rng_below(&rng, len);
                for (int tries = 0; s % 2 && tries < 10000 && fabs(ga[i]) < rms; tries++) i = off + rng_below(&rng, len);
                float keep = a[i];
                double L[4];
                const double step[4] = {FD_H, -FD_H, 2 * FD_H, -2 * FD_H};
                for (int j = 0; j < 4; j++) {
                    a[i] = (float)(keep + step[j]);
                    L[j] = loss(ctx, a);
                }
                a[i] = keep;
                double num = (8 * (L[0] - L[1]) - (L[2] - L[3])) / (12 * FD_H), an = ga[i];
                double e = fabs(an - num) / fmax(FD_FLOOR, fabs(an) + fabs(num));
                if (verbose)
                    printf("    %-5s %c [%5zu] analytic % .6e fd % .6e err %.2e\n", lora_module_name((LoraModule)m),
                           which ? 'B' : 'A', i - off, an, num, e);
                if (!(e < FD_RTOL)) {
                    if (bad < 3)
                        fprintf(stderr, "    %s: %s lora_%c element %zu: analytic %.7g, fd %.7g\n", name,
                                lora_module_name((LoraModule)m), which ? 'B' : 'A', i - off, an, num);
                    bad++;
                }
                worst = fmax(worst, e);
                significant += fabs(num) > 5 * FD_FLOOR;
                checked++;
            }
        }
    }
    CHECK(bad == 0, "%s: %d of %d adapter gradients off finite differences", name, bad, checked);
    CHECK(4 * significant >= checked, "%s: only %d of %d gradients are significant", name, significant, checked);
    *worst_out = worst;
}

static void fd_check(const Variant *v, LoraConfig cfg) {
    ParamLayout pl;
    float *p;
    make_model(v, &pl, &p, 10);
    LoraLayout lo;
    Err err = {{0}};
    CHECK(lora_layout(&lo, &pl.cfg, &cfg, "test", &err) == 0, "%s", err.msg);
    float *a = falloc(lo.n_floats), *ga = falloc(lo.n_floats), *base = falloc(lo.n_base_floats);
    float *work = falloc(pl.n_floats), *grads = falloc(pl.n_floats);
    random_adapter(&lo, a, 11, 0.3);
    lora_base_copy(&lo, &pl, p, base);
    memcpy(work, p, pl.n_floats * sizeof(float));
    int32_t in[FB * FT], tg[FB * FT];
    make_tokens(in, tg, FB * FT, pl.cfg.vocab_size, 12);
    Backend *be = backend_cpu_create(&pl, FB, FT, &err);
    CHECK(be != NULL, "%s", err.msg);
    if (!be) return;
    lora_merge(&lo, &pl, base, a, work);
    double loss;
    CHECK(backend_step(be, work, grads, in, tg, FB, FT, 1.0f, &loss, NULL, &err) == 0, "%s", err.msg);
    lora_grad(&lo, &pl, grads, a, ga);

    /* the projection against the same products in double */
    double proj_worst = 0;
    for (int m = 0; m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo.t[m];
        for (int l = 0; t->present && l < pl.cfg.n_layers; l++) {
            const float *dW = params_tensor(&pl, grads, t->base, l);
            const float *A = lora_A(&lo, a, (LoraModule)m, l), *B = lora_B(&lo, a, (LoraModule)m, l);
            const float *dA = lora_A(&lo, ga, (LoraModule)m, l), *dB = lora_B(&lo, ga, (LoraModule)m, l);
            int r = cfg.rank;
            double num = 0, den = 0;
            for (int k = 0; k < r; k++)
                for (int j = 0; j < t->in; j++) {
                    double s = 0;
                    for (int i = 0; i < t->out; i++) s += (double)B[i * r + k] * dW[(size_t)i * t->in + j];
                    s *= lo.scale;
                    num += (dA[k * t->in + j] - s) * (dA[k * t->in + j] - s), den += s * s;
                }
            for (int i = 0; i < t->out; i++)
                for (int k = 0; k < r; k++) {
                    double s = 0;
                    for (int j = 0; j < t->in; j++) s += (double)dW[(size_t)i * t->in + j] * A[k * t->in + j];
                    s *= lo.scale;
                    num += (dB[i * r + k] - s) * (dB[i * r + k] - s), den += s * s;
                }
            proj_worst = fmax(proj_worst, sqrt(num / den));
        }
    }
    CHECK(proj_worst < 1e-5, "%s: projection vs double: relative error %.2e", v->name, proj_worst);

    MergedLoss ml = {be, &lo, &pl, base, work, in, tg};
    double worst;
    fd_compare(v->name, &lo, a, ga, merged_loss, &ml, 13, &worst);
    printf("     %s, r=%d: worst FD error %.2e (limit %.0e), projection %.1e\n", v->name, cfg.rank, worst, FD_RTOL,
           proj_worst);
    be->destroy(be);
    free(a), free(ga), free(base), free(work), free(grads), free(p);
}

static void test_grad_finite_differences(void) {
    fd_check(&llama_interleaved, lcfg(4, 8, "all", 0));
    fd_check(&qwen3_half, lcfg(3, 2, "q,k,v,o", 1));
}

/* ------------------------------------------------------------------ the frozen-base cpu backend */

/* A frozen-base training step's loss: adapter_grads go to a scratch buffer (LoRA dropout acts
** in training steps only), so the loss is that of the masks of `seed`. */
typedef struct {
    Backend *be;
    const float *params;
    float *scratch;
    size_t n;
    const int32_t *in, *tg;
    uint64_t seed;
} FrozenLoss;

static double frozen_loss(void *ctx, const float *a) {
    FrozenLoss *c = ctx;
    memset(c->scratch, 0, c->n * sizeof(float));
    StepArgs args = {c->params, NULL, a, c->scratch, c->in, c->tg, FB, FT, 1.0f, NULL, c->seed};
    double loss = NAN;
    Err err = {{0}};
    CHECK(c->be->step(c->be, &args, &loss, &err) == 0, "%s", err.msg);
    return loss;
}

/* The params an int8 backend is given: the fp32 copies of the seven matrices replaced by NaN,
** so any read of them shows in the loss. */
static float *params_without_int8_kinds(const ParamLayout *pl, const float *p) {
    float *q = falloc(pl->n_floats);
    memcpy(q, p, pl->n_floats * sizeof(float));
    for (int k = 0; k < T_COUNT; k++)
        if (quant_kind_is_int8((TensorKind)k))
            for (size_t i = 0; i < pl->t[k].numel; i++) q[pl->t[k].offset + i] = NAN;
    return q;
}

/* dA and dB of the unmerged step (backend_cpu_create_frozen) against finite differences of its
** own loss, with LoRA dropout (the same seed, so the same masks, at every evaluation) and
** optionally an int8 base; the step's determinism per seed and its contract around grads. */
static void fd_check_frozen(const Variant *v, LoraConfig cfg, int int8) {
    ParamLayout pl;
    float *p;
    make_model(v, &pl, &p, 20);
    LoraLayout lo;
    Err err = {{0}};
    CHECK(lora_layout(&lo, &pl.cfg, &cfg, "test", &err) == 0, "%s", err.msg);
    float *a = falloc(lo.n_floats), *ga = falloc(lo.n_floats), *ga2 = falloc(lo.n_floats),
          *scratch = falloc(lo.n_floats);
    random_adapter(&lo, a, 21, 0.3);
    int32_t in[FB * FT], tg[FB * FT];
    make_tokens(in, tg, FB * FT, pl.cfg.vocab_size, 22);
    Int8Weights q;
    memset(&q, 0, sizeof q);
    float *params = p;
    if (int8) {
        CHECK(quant_int8_create(&q, &pl, p, &err) == 0, "%s", err.msg);
        params = params_without_int8_kinds(&pl, p);
    }
    FrozenBase fb = {&lo, int8 ? &q : NULL};
    Backend *be = backend_cpu_create_frozen(&pl, &fb, FB, FT, &err);
    CHECK(be != NULL, "%s", err.msg);
    if (!be) return;
    const uint64_t seed = 0x5eed;
    double loss, loss2;
    StepArgs args = {params, NULL, a, ga, in, tg, FB, FT, 1.0f, NULL, seed};
    CHECK(be->step(be, &args, &loss, &err) == 0, "%s", err.msg);
    CHECK(isfinite(loss), "loss %g (an int8 step read the fp32 matrices?)", loss);
    /* the same seed: the same masks, bit for bit; another seed: other masks */
    args.adapter_grads = ga2;
    CHECK(be->step(be, &args, &loss2, &err) == 0 && loss2 == loss &&
              memcmp(ga, ga2, lo.n_floats * sizeof(float)) == 0,
          "a step is a pure function of its dropout seed");
    if (cfg.dropout > 0) {
        args.dropout_seed = seed + 1;
        memset(ga2, 0, lo.n_floats * sizeof(float));
        CHECK(be->step(be, &args, &loss2, &err) == 0 && loss2 != loss, "another seed, other masks (%.9f, %.9f)",
              loss, loss2);
    }
    /* forward only is evaluation: no dropout, whatever the seed; the same as a p = 0 backend */
    LoraLayout lo0 = lo;
    lo0.cfg.dropout = 0;
    FrozenBase fb0 = {&lo0, fb.int8};
    Backend *be0 = backend_cpu_create_frozen(&pl, &fb0, FB, FT, &err);
    if (be0) {
        double eval_p, eval_0;
        StepArgs e = {params, NULL, a, NULL, in, tg, FB, FT, 1.0f, NULL, seed};
        CHECK(be->step(be, &e, &eval_p, &err) == 0 && be0->step(be0, &e, &eval_0, &err) == 0 && eval_p == eval_0,
              "forward-only steps apply no dropout (%.9f vs %.9f)", eval_p, eval_0);
        be0->destroy(be0);
    }
    /* grads must be NULL over a frozen base */
    float *full = falloc(pl.n_floats);
    args.grads = full;
    CHECK(be->step(be, &args, &loss2, &err) != 0 && strstr(err.msg, "grads"), "full gradient refused: %s", err.msg);
    args.grads = NULL;
    args.adapter = NULL;
    CHECK(be->step(be, &args, &loss2, &err) != 0 && strstr(err.msg, "adapter"), "missing adapter refused: %s",
          err.msg);
    /* forward only without an adapter: the base alone, as with an adapter of zeros (B = 0) */
    {
        float *zero = falloc(lo.n_floats);
        double base_alone = NAN, zero_adapter = NAN;
        StepArgs e = {params, NULL, NULL, NULL, in, tg, FB, FT, 1.0f, NULL, seed};
        StepArgs z = {params, NULL, zero, NULL, in, tg, FB, FT, 1.0f, NULL, seed};
        CHECK(be->step(be, &e, &base_alone, &err) == 0 && be->step(be, &z, &zero_adapter, &err) == 0 &&
                  base_alone == zero_adapter,
              "a forward-only step without an adapter is the base alone (%.9f vs %.9f with a zero adapter): %s",
              base_alone, zero_adapter, err.msg);
        free(zero);
    }
    free(full);

    FrozenLoss fl = {be, params, scratch, lo.n_floats, in, tg, seed};
    char name[200];
    snprintf(name, sizeof name, "%s, unmerged, dropout %g%s", v->name, (double)cfg.dropout, int8 ? ", int8 base" : "");
    double worst;
    fd_compare(name, &lo, a, ga, frozen_loss, &fl, 23, &worst);
    printf("     %s, r=%d: worst FD error %.2e (limit %.0e)\n", name, cfg.rank, worst, FD_RTOL);
    be->destroy(be);
    if (int8) {
        quant_int8_free(&q);
        free(params);
    }
    free(a), free(ga), free(ga2), free(scratch), free(p);
}

static void test_frozen_finite_differences(void) {
    LoraConfig all = lcfg(4, 8, "all", 0), attn = lcfg(3, 2, "q,k,v,o", 1);
    all.dropout = 0.25f;
    attn.dropout = 0.5f;
    fd_check_frozen(&llama_interleaved, lcfg(4, 8, "all", 0), 0);
    fd_check_frozen(&llama_interleaved, all, 0);
    fd_check_frozen(&qwen3_half, attn, 0);
    fd_check_frozen(&llama_interleaved, all, 1);
    fd_check_frozen(&qwen3_half, lcfg(3, 2, "mlp,q", 0), 1);
}

static double max_rel_diff(const float *x, const float *y, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)x[i] - y[i]));
        m = fmax(m, fabs((double)y[i]));
    }
    return d / m;
}

/* Unmerged vs merged: the logits of the frozen-base backend equal the plain backend's on the
** merged weights, and its adapter gradients equal the full gradient projected by lora_grad (the
** old path), on the same inputs. The int8 base: its logits equal the fp32 backend's on the
** dequantized weights (quant_int8_dequantize_into), with and without an adapter. */
static void test_frozen_vs_merged_and_int8(void) {
    const Variant *vs[2] = {&llama_interleaved, &qwen3_half};
    for (int vi = 0; vi < 2; vi++) {
        const Variant *v = vs[vi];
        ParamLayout pl;
        float *p;
        make_model(v, &pl, &p, 30);
        LoraLayout lo;
        LoraConfig cfg = lcfg(4, 8, vi ? "q,v,up,down" : "all", 0);
        Err err = {{0}};
        CHECK(lora_layout(&lo, &pl.cfg, &cfg, "test", &err) == 0, "%s", err.msg);
        size_t NL = (size_t)FB * pl.cfg.vocab_size * FT;
        float *a = falloc(lo.n_floats), *ga = falloc(lo.n_floats), *gp = falloc(lo.n_floats);
        float *merged = falloc(pl.n_floats), *grads = falloc(pl.n_floats), *deq = falloc(pl.n_floats);
        float *l_frozen = falloc(NL), *l_merged = falloc(NL), *l_int8 = falloc(NL), *l_deq = falloc(NL);
        random_adapter(&lo, a, 31, 0.3);
        int32_t in[FB * FT], tg[FB * FT];
        make_tokens(in, tg, FB * FT, pl.cfg.vocab_size, 32);
        memcpy(merged, p, pl.n_floats * sizeof(float));
        lora_merge_into(&lo, &pl, merged, a);
        FrozenBase fb = {&lo, NULL};
        Backend *frozen = backend_cpu_create_frozen(&pl, &fb, FB, FT, &err);
        Backend *plain = backend_cpu_create(&pl, FB, FT, &err);
        CHECK(frozen && plain, "%s", err.msg);
        if (!frozen || !plain) return;
        double lf, lm;
        StepArgs fa = {p, NULL, a, ga, in, tg, FB, FT, 1.0f, l_frozen, 7};
        CHECK(frozen->step(frozen, &fa, &lf, &err) == 0, "%s", err.msg);
        CHECK(backend_step(plain, merged, grads, in, tg, FB, FT, 1.0f, &lm, l_merged, &err) == 0, "%s", err.msg);
        lora_grad(&lo, &pl, grads, a, gp);
        double dl = max_rel_diff(l_frozen, l_merged, NL), dg = max_rel_diff(ga, gp, lo.n_floats);
        printf("     %s: unmerged vs merged logits %.2e, adapter gradients vs lora_grad's projection %.2e (of the "
               "largest)\n", v->name, dl, dg);
        CHECK(dl < 1e-5 && fabs(lf - lm) < 1e-5 * lm, "logits differ by %.2e (loss %.9f vs %.9f)", dl, lf, lm);
        CHECK(dg < 1e-4, "adapter gradients differ from the projection by %.2e", dg);

        /* int8: forward only, without and with the adapter */
        Int8Weights q;
        CHECK(quant_int8_create(&q, &pl, p, &err) == 0, "%s", err.msg);
        memcpy(deq, p, pl.n_floats * sizeof(float));
        quant_int8_dequantize_into(&q, &pl, deq);
        float *nan_params = params_without_int8_kinds(&pl, p);
        FrozenBase fq = {NULL, &q}, fql = {&lo, &q};
        Backend *bq = backend_cpu_create_frozen(&pl, &fq, FB, FT, &err);
        Backend *bql = backend_cpu_create_frozen(&pl, &fql, FB, FT, &err);
        CHECK(bq && bql, "%s", err.msg);
        if (bq && bql) {
            double l1, l2;
            CHECK(backend_step(bq, nan_params, NULL, in, tg, FB, FT, 1.0f, &l1, l_int8, &err) == 0, "%s", err.msg);
            CHECK(backend_step(plain, deq, NULL, in, tg, FB, FT, 1.0f, &l2, l_deq, &err) == 0, "%s", err.msg);
            double d8 = max_rel_diff(l_int8, l_deq, NL);
            CHECK(d8 < 1e-6 && fabs(l1 - l2) < 1e-6 * l2, "int8 logits vs fp32 on dequantized weights: %.2e", d8);
            StepArgs qa = {nan_params, NULL, a, NULL, in, tg, FB, FT, 1.0f, l_int8, 0};
            StepArgs da = {deq, NULL, a, NULL, in, tg, FB, FT, 1.0f, l_deq, 0};
            CHECK(bql->step(bql, &qa, &l1, &err) == 0 && frozen->step(frozen, &da, &l2, &err) == 0, "%s", err.msg);
            double d8l = max_rel_diff(l_int8, l_deq, NL);
            CHECK(d8l < 1e-6, "int8 + LoRA logits vs fp32 + LoRA on dequantized weights: %.2e", d8l);
            printf("     %s: int8 base vs fp32 on the dequantized weights: logits %.2e, with the adapter %.2e\n",
                   v->name, d8, d8l);
            /* int8 weights cannot train */
            CHECK(backend_step(bq, nan_params, grads, in, tg, FB, FT, 1.0f, &l1, NULL, &err) != 0 &&
                      strstr(err.msg, "int8"), "an int8 training step refused: %s", err.msg);
        }
        if (bq) bq->destroy(bq);
        if (bql) bql->destroy(bql);
        quant_int8_free(&q);
        frozen->destroy(frozen);
        plain->destroy(plain);
        free(a), free(ga), free(gp), free(merged), free(grads), free(deq), free(nan_params);
        free(l_frozen), free(l_merged), free(l_int8), free(l_deq), free(p);
    }
}

/* The dropout masks: values 0 or 1/(1-p), the rate, one mask per (seed, layer, module, sequence),
** rows computed independently of the split, lora_dropout_hash agreeing with the mask. */
static void test_dropout_masks(void) {
    enum { IN = 96, TT = 64 };
    static float m1[IN * TT], m2[IN * TT];
    const float p = 0.3f, keep = 1.0f / (1.0f - p);
    lora_dropout_mask(m1, 42, 3, LORA_V, 1, 0, IN, TT, p);
    int dropped = 0, other = 0, hash_bad = 0;
    for (int i = 0; i < IN * TT; i++) {
        dropped += m1[i] == 0;
        other += m1[i] != 0 && m1[i] != keep;
        uint64_t h = lora_dropout_hash(42, 3, LORA_V, 1, i / TT, i % TT);
        hash_bad += ((double)(h >> 40) < p * 16777216.0) != (m1[i] == 0);
    }
    double rate = (double)dropped / (IN * TT);
    printf("     p = %.2f: dropped %.4f of %d elements\n", (double)p, rate, IN * TT);
    CHECK(other == 0 && hash_bad == 0, "mask values 0 or 1/(1-p) (%d others), as the hash says (%d not)", other,
          hash_bad);
    CHECK(fabs(rate - p) < 0.02, "drop rate %.4f for p %.2f", rate, (double)p);
    lora_dropout_mask(m2, 42, 3, LORA_V, 1, 0, IN / 3, TT, p);
    lora_dropout_mask(m2, 42, 3, LORA_V, 1, IN / 3, IN, TT, p);
    CHECK(memcmp(m1, m2, sizeof m1) == 0, "rows do not depend on how they are split");
    const struct {
        uint64_t seed;
        int layer;
        LoraModule m;
        int seq;
    } others[] = {{43, 3, LORA_V, 1}, {42, 2, LORA_V, 1}, {42, 3, LORA_K, 1}, {42, 3, LORA_V, 0}};
    for (int k = 0; k < 4; k++) {
        lora_dropout_mask(m2, others[k].seed, others[k].layer, others[k].m, others[k].seq, 0, IN, TT, p);
        int same = 0;
        for (int i = 0; i < IN * TT; i++) same += (m1[i] == 0) == (m2[i] == 0);
        double agree = (double)same / (IN * TT), expect = p * p + (1 - p) * (1 - p);
        CHECK(fabs(agree - expect) < 0.03, "mask %d is independent of the first: agreement %.3f (expected %.3f)", k,
              agree, expect);
    }
    lora_dropout_mask(m2, 42, 3, LORA_V, 1, 0, IN, TT, 0.0f);
    int ones = 0;
    for (int i = 0; i < IN * TT; i++) ones += m2[i] == 1.0f;
    CHECK(ones == IN * TT, "p = 0 keeps everything unscaled");
}

/* ------------------------------------------------------------------ files */

static void test_save_load_roundtrip(void) {
    const Variant *vs[2] = {&llama_interleaved, &qwen3_half};
    for (int vi = 0; vi < 2; vi++) {
        ParamLayout pl;
        float *p;
        make_model(vs[vi], &pl, &p, 20);
        LoraLayout lo, lo2;
        LoraConfig cfg = lcfg(3, 0.75f, vi ? "q,k,down" : "all", vi);
        cfg.dropout = 0.05f; /* kept in the file (only training refuses it) */
        Err err = {{0}};
        lora_layout(&lo, &pl.cfg, &cfg, "test", &err);
        float *a = falloc(lo.n_floats), *b = NULL;
        random_adapter(&lo, a, 21, 1.0);
        char dir[400];
        snprintf(dir, sizeof dir, "%s/adapter%d", tmpdir, vi);
        CHECK(lora_save(dir, &lo, a, "some/base", &err) == 0, "save: %s", err.msg);
        CHECK(lora_load(dir, &pl.cfg, &lo2, &b, &err) == 0, "load: %s", err.msg);
        if (!b) continue;
        CHECK(lo2.n_floats == lo.n_floats && memcmp(a, b, lo.n_floats * sizeof(float)) == 0,
              "%s: round trip is not bit exact", vs[vi]->name);
        CHECK(lo2.cfg.rank == 3 && lo2.cfg.alpha == 0.75f && lo2.cfg.dropout == 0.05f && lo2.cfg.rslora == vi &&
                  lo2.cfg.targets == cfg.targets && lo2.scale == lo.scale,
              "config round trip: r %d alpha %g dropout %g rslora %d targets %#x", lo2.cfg.rank,
              (double)lo2.cfg.alpha, (double)lo2.cfg.dropout, lo2.cfg.rslora, lo2.cfg.targets);
        /* PEFT's names and shapes */
        char path[500];
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        StFile f;
        if (st_open(&f, path, &err) == 0) {
            const StTensor *ta = st_find(&f, "base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight");
            const StTensor *tb = st_find(&f, "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
            CHECK(ta && ta->rank == 2 && ta->shape[0] == 3 && ta->shape[1] == pl.cfg.dim, "k_proj lora_A [r][in]");
            CHECK(tb && tb->rank == 2 && tb->shape[0] == pl.cfg.dim && tb->shape[1] == 3, "down_proj lora_B [out][r]");
            CHECK(f.n_tensors == 2 * pl.cfg.n_layers * (vi ? 3 : 7), "tensor count %d", f.n_tensors);
            st_close(&f);
        } else {
            CHECK(0, "%s", err.msg);
        }
        snprintf(path, sizeof path, "%s/adapter_config.json", dir);
        size_t size;
        char *text = file_read_all(path, &size, &err);
        cJSON *root = text ? cJSON_Parse(text) : NULL;
        CHECK(root != NULL, "adapter_config.json parses");
        if (root) {
            const cJSON *tm = cJSON_GetObjectItem(root, "target_modules");
            CHECK(!strcmp(cJSON_GetObjectItem(root, "peft_type")->valuestring, "LORA") &&
                      !strcmp(cJSON_GetObjectItem(root, "task_type")->valuestring, "CAUSAL_LM") &&
                      !strcmp(cJSON_GetObjectItem(root, "bias")->valuestring, "none") &&
                      cJSON_IsFalse(cJSON_GetObjectItem(root, "fan_in_fan_out")) &&
                      cJSON_GetObjectItem(root, "r")->valuedouble == 3 &&
                      cJSON_GetObjectItem(root, "lora_alpha")->valuedouble == 0.75 &&
                      cJSON_GetObjectItem(root, "lora_dropout")->valuedouble == 0.05 &&
                      !strcmp(cJSON_GetObjectItem(root, "base_model_name_or_path")->valuestring, "some/base") &&
                      cJSON_IsArray(tm) && cJSON_GetArraySize(tm) == (vi ? 3 : 7) &&
                      !strcmp(cJSON_GetArrayItem(tm, 0)->valuestring, "q_proj"),
                  "adapter_config.json fields");
        }
        cJSON_Delete(root);
        free(text);
        free(a), free(b), free(p);
    }
}

/* Writes dir/adapter_config.json with `extra` JSON members after a valid LoRA config. */
static void write_config(const char *dir, const char *members) {
    char path[500];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "{%s}\n", members);
    fclose(f);
}

static void test_load_refuses_what_it_cannot_compute(void) {
    ParamLayout pl;
    float *p;
    make_model(&qwen3_half, &pl, &p, 30);
    LoraLayout lo;
    LoraConfig cfg = lcfg(2, 4, "q,v", 0);
    Err err = {{0}};
    lora_layout(&lo, &pl.cfg, &cfg, "test", &err);
    float *a = falloc(lo.n_floats), *b = NULL;
    random_adapter(&lo, a, 31, 1.0);
    char dir[400];
    snprintf(dir, sizeof dir, "%s/bad", tmpdir);
    CHECK(lora_save(dir, &lo, a, NULL, &err) == 0, "%s", err.msg);
    const char *base = "\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\", \"v_proj\"]";
    struct {
        const char *members, *expect;
    } cases[] = {
        {"\"peft_type\": \"IA3\", \"target_modules\": [\"q_proj\"]", "peft_type"},
        {"\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": \".*q_proj\"", "regular"},
        {"\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"q_proj\", \"lm_head\"]", "lm_head"},
        {"\"peft_type\": \"LORA\", \"r\": 2.5, \"target_modules\": [\"q_proj\"]", "field r"},
        {NULL, "use_dora"},
        {NULL, "fan_in_fan_out"},
        {NULL, "rank_pattern"},
        {NULL, "layers_to_transform"},
        {NULL, "bias"},
        {"\"peft_type\": \"LORA\", \"r\": 3, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\", \"v_proj\"]",
         "expected shape [3, 32], found rank 2 [2, 32]"},
        {"\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\"]", "unexpected"},
        {"\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"q_proj\", \"v_proj\", "
         "\"o_proj\"]",
         "o_proj.lora_A.weight: missing"},
    };
    const char *extras[] = {"\"use_dora\": true", "\"fan_in_fan_out\": true", "\"rank_pattern\": {\"q_proj\": 4}",
                            "\"layers_to_transform\": [0]", "\"bias\": \"all\""};
    int e = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char members[600];
        if (cases[i].members) snprintf(members, sizeof members, "%s", cases[i].members);
        else snprintf(members, sizeof members, "%s, %s", base, extras[e++]);
        write_config(dir, members);
        int rc = lora_load(dir, &pl.cfg, &lo, &b, &err);
        CHECK(rc != 0 && strstr(err.msg, cases[i].expect), "config {%s}: expected an error with '%s', got %s",
              members, cases[i].expect, rc ? err.msg : "success");
        if (rc == 0) free(b), b = NULL;
        if (verbose) printf("     %s\n", err.msg);
    }
    write_config(dir, base);
    CHECK(lora_load(dir, &pl.cfg, &lo, &b, &err) == 0, "the valid config: %s", err.msg);
    free(b);
    snprintf(dir, sizeof dir, "%s/none", tmpdir);
    CHECK(lora_load(dir, &pl.cfg, &lo, &b, &err) != 0 && strstr(err.msg, "adapter_config.json"), "missing dir: %s",
          err.msg);
    free(a), free(p);
}

/* The adapter saved from an interleaved model, merged into that model's HF export, is the HF
** export of the merged model; and their logits agree. */
static void test_rope_export_consistency(void) {
    ParamLayout pl;
    float *p;
    make_model(&llama_interleaved, &pl, &p, 40);
    LoraLayout lo;
    LoraConfig cfg = lcfg(4, 8, "all", 0);
    Err err = {{0}};
    lora_layout(&lo, &pl.cfg, &cfg, "test", &err);
    float *a = falloc(lo.n_floats);
    random_adapter(&lo, a, 41, 0.5);
    float *merged = falloc(pl.n_floats);
    memcpy(merged, p, pl.n_floats * sizeof(float));
    lora_merge_into(&lo, &pl, merged, a);

    char d_base[400], d_merged[400], d_adapter[400];
    snprintf(d_base, sizeof d_base, "%s/hf-base", tmpdir);
    snprintf(d_merged, sizeof d_merged, "%s/hf-merged", tmpdir);
    snprintf(d_adapter, sizeof d_adapter, "%s/adapter-rope", tmpdir);
    CHECK(hf_save(d_base, &pl, p, &err) == 0, "%s", err.msg);
    CHECK(hf_save(d_merged, &pl, merged, &err) == 0, "%s", err.msg);
    CHECK(lora_save(d_adapter, &lo, a, d_base, &err) == 0, "%s", err.msg);
    ParamLayout hl1, hl2;
    float *h_merged = NULL, *h_base = NULL;
    CHECK(hf_load(d_merged, &hl1, &h_merged, &err) == 0, "%s", err.msg);
    CHECK(hf_load(d_base, &hl2, &h_base, &err) == 0, "%s", err.msg);
    if (!h_merged || !h_base) return;
    CHECK(hl2.cfg.rope_style == ROPE_HALF, "the HF export is rotate-half");
    CHECK(lora_apply(d_adapter, &hl2, h_base, &err) == 0, "%s", err.msg);
    double worst = 0, wmax = 0;
    for (size_t i = 0; i < pl.n_floats; i++) {
        worst = fmax(worst, fabs((double)h_base[i] - h_merged[i]));
        wmax = fmax(wmax, fabs((double)h_merged[i]));
    }
    printf("     HF export of the merged model vs the adapter merged into the HF export: max |diff| %.2e (of %.2g)\n",
           worst, wmax);
    CHECK(worst <= 1e-6 * wmax, "max difference %.3g", worst);
    /* The same logits, both ways: our interleaved merged model and HF base + adapter. */
    enum { B = 2, T = 11 };
    int32_t in[B * T], tg[B * T];
    make_tokens(in, tg, B * T, pl.cfg.vocab_size, 42);
    Backend *b1 = backend_cpu_create(&pl, B, T, &err), *b2 = backend_cpu_create(&hl2, B, T, &err);
    size_t nl = (size_t)B * pl.cfg.vocab_size * T;
    float *l1 = falloc(nl), *l2 = falloc(nl);
    double loss1, loss2;
    if (b1 && b2) {
        backend_step(b1, merged, NULL, in, tg, B, T, 1, &loss1, l1, &err);
        backend_step(b2, h_base, NULL, in, tg, B, T, 1, &loss2, l2, &err);
        double d = 0, s = 0;
        for (size_t i = 0; i < nl; i++) d = fmax(d, fabs((double)l1[i] - l2[i])), s = fmax(s, fabs((double)l1[i]));
        CHECK(d < 1e-5 * s, "logits: max |diff| %.3g of %.3g", d, s);
        CHECK(fabs(loss1 - loss2) < 1e-5 * loss1, "loss %.9f vs %.9f", loss1, loss2);
        /* and loading into the interleaved model inverts the permutation exactly */
        float *again = falloc(pl.n_floats);
        memcpy(again, p, pl.n_floats * sizeof(float));
        CHECK(lora_apply(d_adapter, &pl, again, &err) == 0, "%s", err.msg);
        CHECK(memcmp(again, merged, pl.n_floats * sizeof(float)) == 0, "interleaved load is not the inverse");
        free(again);
    }
    if (b1) b1->destroy(b1);
    if (b2) b2->destroy(b2);
    free(l1), free(l2), free(a), free(merged), free(h_merged), free(h_base), free(p);
}

/* ------------------------------------------------------------------ the trainer */

static char data_path[300];

/* A learnable stream: runs counting up through a cycle of 50 ids, restarted at random. */
static void make_data(void) {
    snprintf(data_path, sizeof data_path, "%s/tokens.bin", tmpdir);
    enum { N = 30000 };
    static int32_t ids[N];
    Rng rng;
    rng_seed(&rng, 5);
    int cur = 0;
    for (int i = 0; i < N; i++) {
        if (rng_below(&rng, 40) == 0) cur = (int)rng_below(&rng, 50);
        ids[i] = 3 + cur;
        cur = (cur + 1) % 50;
    }
    Err err;
    if (tokfile_save(data_path, ids, N, 0, 2, 0, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
}

static TrainOptions lora_options(const char *backend) {
    TrainOptions o;
    memset(&o, 0, sizeof o);
    Err err;
    config_from_preset(&o.cfg, "tiny", &err);
    o.cfg.vocab_size = 64;
    o.data_path = data_path;
    o.val_frac = 0.1;
    o.order = ORDER_RANDOM;
    o.batch = 2;
    o.seq = 32;
    o.accum = 2;
    o.steps = 40;
    o.warmup = 0;
    o.lr = 1e-2f;
    o.min_lr = 1e-2f;
    o.clip = 1.0f;
    o.adam = (AdamWConfig){0.9f, 0.999f, 1e-8f, 0.0f};
    o.seed = 9;
    o.eval_batches = 4;
    o.backend = backend;
    backend_ane_default_options(&o.ane);
    o.ane.device = "emu";
    o.lora = lcfg(4, 8, "q,v,o,down", 0);
    return o;
}

/* Trains a LoRA run of o for o.steps; returns 0 and the val losses before and after. */
static int lora_run(const TrainOptions *o, Trainer *tr, double *val0, double *val1, double *first, double *last) {
    Err err = {{0}};
    if (trainer_init(tr, o, &err) != 0) {
        CHECK(0, "trainer_init: %s", err.msg);
        return -1;
    }
    *first = *last = 0;
    CHECK(trainer_eval(tr, val0, &err) == 0, "%s", err.msg);
    for (int s = 0; s < o->steps; s++) {
        StepStats st;
        if (trainer_step(tr, &st, &err) != 0) {
            CHECK(0, "step: %s", err.msg);
            return -1;
        }
        if (s < 5) *first += st.loss / 5;
        if (s >= o->steps - 5) *last += st.loss / 5;
    }
    CHECK(trainer_eval(tr, val1, &err) == 0, "%s", err.msg);
    return 0;
}

static void test_trainer_trains_only_the_adapter(void) {
    TrainOptions o = lora_options("cpu");
    Trainer tr;
    Err err = {{0}};
    if (trainer_init(&tr, &o, &err) != 0) {
        CHECK(0, "trainer_init: %s", err.msg);
        return;
    }
    size_t n = tr.layout.n_floats;
    float *before = falloc(n), *check = falloc(n);
    memcpy(before, tr.params, n * sizeof(float));
    trainer_free(&tr);
    double val0, val1, first, last;
    if (lora_run(&o, &tr, &val0, &val1, &first, &last) != 0) {
        trainer_free(&tr);
        free(before), free(check);
        return;
    }
    CHECK(tr.m == NULL && tr.v == NULL, "no moments for the frozen model");
    CHECK(tr.adapter_m && tr.adapter_v && trainer_optimizer_bytes(&tr) == 8 * tr.lora.n_floats,
          "moments for the adapter alone (%zu bytes for %zu adapter floats; full: %zu)", trainer_optimizer_bytes(&tr),
          tr.lora.n_floats, 8 * tr.layout.n_floats);
    CHECK(tr.grads == NULL, "unmerged: no full gradient buffer");
    printf("     %zu adapter parameters of %zu: train loss %.3f -> %.3f, val_loss %.3f -> %.3f\n", tr.lora.n_floats, n,
           first, last, val0, val1);
    CHECK(val1 < val0 - 0.3 && last < first - 0.3, "the adapter learns (val %.3f -> %.3f)", val0, val1);
    CHECK(memcmp(before, tr.params, n * sizeof(float)) == 0, "the frozen base changed");
    char dir[400];
    snprintf(dir, sizeof dir, "%s/trained.lora", tmpdir);
    CHECK(trainer_save(&tr, dir, &err) == 0, "trainer_save writes the LoRA training state: %s", err.msg);
    LoraRunState saved;
    CHECK(lora_state_load(dir, &saved, NULL, NULL, NULL, NULL, &err) == 0 && saved.state.step == o.steps &&
              saved.lora.rank == o.lora.rank && saved.base_crc32 == tr.base_crc32,
          "the state's header: %s", err.msg);
    snprintf(dir, sizeof dir, "%s/trained", tmpdir);
    CHECK(trainer_save_adapter(&tr, dir, "tiny", &err) == 0, "%s", err.msg);
    /* the saved adapter merged into the base evaluates as the trained run (merged vs unmerged) */
    memcpy(check, before, n * sizeof(float));
    CHECK(lora_apply(dir, &tr.layout, check, &err) == 0, "%s", err.msg);
    Backend *plain = backend_cpu_create(&tr.layout, o.batch, o.seq, &err);
    CHECK(plain != NULL, "%s", err.msg);
    if (plain) {
        double val_merged;
        CHECK(eval_loss(plain, check, NULL, tr.data.tokens + tr.loader.n_train,
                        (size_t)o.eval_batches * o.batch, o.batch, o.seq, tr.inputs, tr.targets, &val_merged, NULL,
                        &err) == 0, "%s", err.msg);
        CHECK(fabs(val_merged - val1) < 1e-5 * val1, "merged model val_loss %.7f vs the unmerged run's %.7f",
              val_merged, val1);
        plain->destroy(plain);
    }
    trainer_free(&tr);
    free(before), free(check);

    o.resume_path = "whatever.ckpt";
    CHECK(trainer_init(&tr, &o, &err) != 0 && strstr(err.msg, "lora_resume_path"),
          "a full-training resume_path refused for LoRA: %s", err.msg);
    o.resume_path = NULL;
    TrainOptions oa = lora_options("ane"), oc = lora_options("cpu");
    oa.lora.dropout = oc.lora.dropout = 0.1f; /* dropout on ane: the cpu's masks, the cpu's steps */
    Trainer tc;
    if (trainer_init(&tr, &oa, &err) != 0) {
        CHECK(0, "ane LoRA run with dropout: %s", err.msg);
    } else {
        if (trainer_init(&tc, &oc, &err) != 0) {
            CHECK(0, "cpu LoRA run with dropout: %s", err.msg);
        } else {
            /* step 1: B = 0, only the gradient sees the masks; step 2: the loss too. Measured: gradient
            ** norms 1.3e-4 and 1.9e-4 apart (relative); without the masks on the cpu, 1.2e-2 and 1.4e-2. */
            for (int k = 0; k < 2; k++) {
                StepStats sa, sc;
                CHECK(trainer_step(&tr, &sa, &err) == 0 && trainer_step(&tc, &sc, &err) == 0, "%s", err.msg);
                CHECK(fabs(sa.loss - sc.loss) < 1e-3 + 2e-4 * sc.loss &&
                          fabs(sa.grad_norm - sc.grad_norm) < 2e-3 * sc.grad_norm,
                      "ane vs cpu with dropout, step %d: loss %.6f vs %.6f, gradient norm %.6g vs %.6g", k + 1, sa.loss,
                      sc.loss, sa.grad_norm, sc.grad_norm);
            }
            trainer_free(&tc);
        }
        trainer_free(&tr);
    }
    oa.lora.dropout = 0;
    oa.int8 = 1; /* an int8 base on ane: staged as int8 values with per-row scales */
    if (trainer_init(&tr, &oa, &err) != 0) {
        CHECK(0, "ane over an int8 base: %s", err.msg);
    } else {
        StepStats s;
        CHECK(tr.has_int8 && !tr.grads, "ane LoRA run over an int8 base, no full gradient");
        CHECK(trainer_step(&tr, &s, &err) == 0 && isfinite(s.loss), "ane int8 step: %s", err.msg);
        trainer_free(&tr);
    }
    TrainOptions full = lora_options("cpu");
    full.lora.rank = 0;
    full.int8 = 1;
    CHECK(trainer_init(&tr, &full, &err) != 0 && strstr(err.msg, "--int8") && strstr(err.msg, "cannot train"),
          "int8 full training refused: %s", err.msg);
}

/* LoRA dropout trains (p = 0.1 on every module) and the run is a pure function of its seed:
** two runs give bit-identical adapters; another seed other masks. With an int8 base too. */
static void test_trainer_dropout_and_int8(void) {
    for (int int8 = 0; int8 < 2; int8++) {
        TrainOptions o = lora_options("cpu");
        o.lora = lcfg(4, 8, "all", 0);
        o.lora.dropout = 0.1f;
        o.int8 = int8;
        o.steps = 30;
        Trainer t1, t2;
        double v0, v1, f, l, w0, w1, g, h;
        if (lora_run(&o, &t1, &v0, &v1, &f, &l) != 0) {
            trainer_free(&t1);
            return;
        }
        printf("     dropout 0.1%s: train loss %.3f -> %.3f, val_loss %.3f -> %.3f; int8 base %.2f MiB, fp32 pages "
               "released %.2f MiB\n",
               int8 ? ", int8 base" : "", f, l, v0, v1, t1.has_int8 ? quant_int8_bytes(&t1.int8) / 1048576.0 : 0.0,
               t1.int8_released_bytes / 1048576.0);
        CHECK(v1 < v0 - 0.3, "the adapter learns with dropout%s (val %.3f -> %.3f)", int8 ? " (int8 base)" : "", v0,
              v1);
        CHECK(!int8 || (t1.has_int8 && t1.int8_released_bytes > 0), "int8 run: quantized, fp32 pages released");
        if (lora_run(&o, &t2, &w0, &w1, &g, &h) == 0)
            CHECK(memcmp(t1.adapter, t2.adapter, t1.lora.n_floats * sizeof(float)) == 0 && w1 == v1,
                  "the same seed gives the same run");
        trainer_free(&t2);
        o.lora.dropout = 0.0f;
        if (lora_run(&o, &t2, &w0, &w1, &g, &h) == 0)
            CHECK(memcmp(t1.adapter, t2.adapter, t1.lora.n_floats * sizeof(float)) != 0,
                  "dropout 0.1 changes the run (vs 0)");
        trainer_free(&t2);
        trainer_free(&t1);
    }
}

/* One LoRA step on the ANE backend (emulated device, fp16, loss scale 1024) against the CPU
** backend from the same adapter (B made non-zero so that dA is), then a few steps together.
** B ~ N(0, 0.05^2) is a fine-tuned adapter's size. With B ~ N(0, 0.2^2) on every matrix of this
** 2-layer model, attention gets so sharp on some batches that the gradient grows 6-fold through
** the layers; there the ANE's gradients come out up to 3% smaller than the CPU's (cosine still
** 0.99997), a property of the fp16 backend in that regime, not of the adapter. */
static void ane_step_vs_cpu(int int8) {
    TrainOptions oc = lora_options("cpu"), oa = lora_options("ane");
    oc.lora = oa.lora = lcfg(4, 8, "all", 0);
    oc.int8 = oa.int8 = int8; /* the same int8 base on both (cpu: dequantized; ane: int8 values, row scales) */
    oa.loss_scaling = LOSS_SCALE_FIXED;
    oa.loss_scale_init = 1024.0f;
    oc.lr = oa.lr = oc.min_lr = oa.min_lr = 2e-3f;
    Trainer tc, ta;
    Err err = {{0}};
    if (trainer_init(&tc, &oc, &err) != 0) {
        CHECK(0, "cpu: %s", err.msg);
        return;
    }
    if (trainer_init(&ta, &oa, &err) != 0) {
        CHECK(0, "ane: %s", err.msg);
        trainer_free(&tc);
        return;
    }
    CHECK(memcmp(tc.adapter, ta.adapter, tc.lora.n_floats * sizeof(float)) == 0, "the same initial adapter");
    CHECK(!ta.grads && !tc.grads, "both train the adapter unmerged over a frozen base (no full gradient)");
    random_adapter(&tc.lora, tc.adapter, 50, 0.05);
    memcpy(ta.adapter, tc.adapter, tc.lora.n_floats * sizeof(float));
    StepStats sc, sa;
    CHECK(trainer_step(&tc, &sc, &err) == 0, "cpu step: %s", err.msg);
    CHECK(trainer_step(&ta, &sa, &err) == 0, "ane step: %s", err.msg);
    /* adapter_grads are scaled by the loss scale (the update divides it out) */
    double dot = 0, na = 0, nc = 0, diff = 0;
    for (size_t i = 0; i < tc.lora.n_floats; i++) {
        double a = ta.adapter_grads[i] / 1024.0, c = tc.adapter_grads[i];
        dot += a * c, na += a * a, nc += c * c, diff += (a - c) * (a - c);
    }
    double cosine = dot / sqrt(na * nc), rel = sqrt(diff / nc);
    printf("     %s base, one step: loss cpu %.6f ane %.6f (diff %.1e); adapter gradient cosine %.6f, "
           "relative error %.2e; norm cpu %.5f ane %.5f\n",
           int8 ? "int8" : "fp32", sc.loss, sa.loss, fabs(sa.loss - sc.loss), cosine, rel, sc.grad_norm, sa.grad_norm);
    CHECK(fabs(sa.loss - sc.loss) < 1e-3 + 2e-4 * sc.loss, "loss %.6f vs cpu %.6f", sa.loss, sc.loss);
    CHECK(cosine > 0.999, "adapter gradient cosine %.6f", cosine);
    CHECK(fabs(sa.grad_norm - sc.grad_norm) < 0.01 * sc.grad_norm, "grad norm %.6f vs %.6f", sa.grad_norm,
          sc.grad_norm);
    double worst = 0;
    for (int s = 1; s < 8; s++) {
        CHECK(trainer_step(&tc, &sc, &err) == 0 && trainer_step(&ta, &sa, &err) == 0, "%s", err.msg);
        worst = fmax(worst, fabs(sa.loss - sc.loss) / sc.loss);
    }
    printf("     8 steps: loss cpu %.4f ane %.4f, largest relative gap %.2e\n", sc.loss, sa.loss, worst);
    CHECK(worst < 0.01, "the ANE run stays within 1%% of the CPU's (worst %.2e)", worst);
    trainer_free(&tc);
    trainer_free(&ta);
}

/* Runs o for `first` steps, saves (trainer_save) to path, frees; a new trainer continues from
** path up to o.steps. Losses, norms and scales go to loss[o.steps] etc.; the final adapter and
** moments stay in *tr. */
typedef struct {
    double loss[16], norm[16];
    float scale[16];
    int skipped;
} StepLog;

static int run_steps(Trainer *tr, long upto, StepLog *log) {
    Err err = {{0}};
    while (tr->state.step < upto) {
        StepStats st;
        if (trainer_step(tr, &st, &err) != 0) {
            CHECK(0, "step: %s", err.msg);
            return -1;
        }
        log->loss[st.step - 1] = st.loss;
        log->norm[st.step - 1] = st.grad_norm;
        log->scale[st.step - 1] = st.loss_scale;
        log->skipped += st.skipped;
    }
    return 0;
}

static void lora_resume_case(const char *what, TrainOptions o, long first) {
    char path[400];
    snprintf(path, sizeof path, "%s/resume-%s.lora", tmpdir, what);
    Err err = {{0}};
    Trainer full, half;
    StepLog lf, lh;
    memset(&lf, 0, sizeof lf);
    memset(&lh, 0, sizeof lh);
    if (trainer_init(&full, &o, &err) != 0) {
        CHECK(0, "%s: %s", what, err.msg);
        return;
    }
    if (run_steps(&full, o.steps, &lf) != 0) {
        trainer_free(&full);
        return;
    }
    if (trainer_init(&half, &o, &err) != 0) {
        CHECK(0, "%s: %s", what, err.msg);
        trainer_free(&full);
        return;
    }
    int ok = run_steps(&half, first, &lh) == 0;
    double val_saved = 0, val_resumed = -1;
    if (ok) CHECK(trainer_eval(&half, &val_saved, &err) == 0, "%s", err.msg);
    ok = ok && trainer_save(&half, path, &err) == 0;
    CHECK(ok, "%s: save after %ld steps: %s", what, first, err.msg);
    trainer_free(&half);
    if (!ok) {
        trainer_free(&full);
        return;
    }
    o.lora_resume_path = path;
    if (trainer_init(&half, &o, &err) != 0) {
        CHECK(0, "%s: resume: %s", what, err.msg);
        trainer_free(&full);
        return;
    }
    CHECK(half.state.step == first, "%s: resumed at step %lld, expected %ld", what, (long long)half.state.step, first);
    CHECK(trainer_eval(&half, &val_resumed, &err) == 0 && val_resumed == val_saved,
          "%s: the resumed adapter evaluates as the saved one (%.9g vs %.9g)", what, val_resumed, val_saved);
    if (run_steps(&half, o.steps, &lh) == 0) {
        size_t n = full.lora.n_floats;
        int same = memcmp(lf.loss, lh.loss, sizeof lf.loss) == 0 && memcmp(lf.norm, lh.norm, sizeof lf.norm) == 0 &&
                   memcmp(lf.scale, lh.scale, sizeof lf.scale) == 0;
        printf("     %s: %ld + %ld steps, loss %.6f -> %.6f, loss scale %g -> %g, %d skipped: %s\n", what, first,
               o.steps - first, lf.loss[0], lf.loss[o.steps - 1], (double)lf.scale[0], (double)lf.scale[o.steps - 1],
               lf.skipped, same ? "bit for bit" : "DIFFERENT");
        for (long i = 0; i < o.steps && !same; i++)
            if (lf.loss[i] != lh.loss[i]) printf("       step %ld: loss %.9g vs %.9g\n", i + 1, lf.loss[i], lh.loss[i]);
        CHECK(same, "%s: the resumed run's losses, norms and scales equal the uninterrupted run's", what);
        CHECK(memcmp(full.adapter, half.adapter, n * sizeof(float)) == 0 &&
                  memcmp(full.adapter_m, half.adapter_m, n * sizeof(float)) == 0 &&
                  memcmp(full.adapter_v, half.adapter_v, n * sizeof(float)) == 0,
              "%s: the same adapter and moments at the end", what);
        CHECK(memcmp(&full.state, &half.state, sizeof full.state) == 0, "%s: the same TrainState at the end", what);
    }
    trainer_free(&half);
    trainer_free(&full);
}

static TrainOptions resume_options(const char *backend) {
    TrainOptions o = lora_options(backend);
    o.lora = lcfg(4, 8, "all", 0);
    o.steps = 10;
    o.min_lr = 1e-3f; /* cosine decay: the schedule depends on the step */
    o.warmup = 2;
    return o;
}

static void test_trainer_resume_cpu_dropout(void) {
    TrainOptions o = resume_options("cpu");
    o.lora.dropout = 0.1f;
    lora_resume_case("cpu, dropout 0.1", o, 4);
}

static void test_trainer_resume_cpu_int8(void) {
    TrainOptions o = resume_options("cpu");
    o.lora.dropout = 0.05f;
    o.int8 = 1;
    lora_resume_case("cpu, int8 base, dropout 0.05", o, 7);
}

/* fp16 on the emulated device with a dynamic loss scale that grows every 3 clean steps, then one
** starting at 2^24 that overflows (skipped steps, the scale halved): the scale, its clean-step
** count and the skipped steps (AdamW's t) must survive the save. */
static void test_trainer_resume_ane(void) {
    TrainOptions o = resume_options("ane");
    o.loss_scaling = LOSS_SCALE_DYNAMIC;
    o.loss_scale_init = 4096.0f;
    o.loss_scale_window = 3;
    lora_resume_case("ane, dynamic loss scale", o, 5);
    o.loss_scale_init = 16777216.0f; /* 2^24: fp16 overflows, steps are skipped and the scale halves */
    lora_resume_case("ane, overflowing loss scale", o, 4);
}

/* Writes path's first `keep` bytes, with byte `flip` (if >= 0) inverted, to out. */
static void copy_damaged(const char *path, const char *out, long keep, long flip) {
    size_t n;
    Err err;
    char *b = file_read_all(path, &n, &err);
    if (!b) abort();
    if (flip >= 0) b[flip] = (char)~b[flip];
    FILE *fp = fopen(out, "wb");
    if (!fp) abort();
    fwrite(b, 1, keep < 0 ? n : (size_t)keep, fp);
    fclose(fp);
    free(b);
}

/* trainer_init(o) must fail with a message holding both needles. */
static void expect_refused(const char *what, const TrainOptions *o, const char *needle, const char *needle2) {
    Trainer tr;
    Err err = {{0}};
    if (trainer_init(&tr, o, &err) == 0) {
        CHECK(0, "%s: resumed, expected a refusal", what);
        trainer_free(&tr);
        return;
    }
    CHECK(strstr(err.msg, needle) && (!needle2 || strstr(err.msg, needle2)), "%s refused: %s", what, err.msg);
    if (verbose) printf("     %s: %s\n", what, err.msg);
}

static void test_trainer_resume_refusals(void) {
    TrainOptions o = resume_options("cpu");
    o.steps = 3;
    char state[400], base[400], other[400], bad[400];
    snprintf(state, sizeof state, "%s/refuse.lora", tmpdir);
    snprintf(base, sizeof base, "%s/refuse-base.ckpt", tmpdir);
    snprintf(other, sizeof other, "%s/refuse-other.ckpt", tmpdir);
    snprintf(bad, sizeof bad, "%s/refuse-bad.lora", tmpdir);
    Trainer tr;
    Err err = {{0}};
    StepLog lg;
    if (trainer_init(&tr, &o, &err) != 0) {
        CHECK(0, "%s", err.msg);
        return;
    }
    int ok = run_steps(&tr, 3, &lg) == 0 && trainer_save(&tr, state, &err) == 0 &&
             ckpt_save(base, &tr.layout, tr.params, NULL, NULL, NULL, &err) == 0;
    if (ok) { /* the same base but one weight */
        tr.params[tr.layout.t[T_WQ].offset + 5] += 1e-3f;
        ok = ckpt_save(other, &tr.layout, tr.params, NULL, NULL, NULL, &err) == 0;
    }
    trainer_free(&tr);
    CHECK(ok, "%s", err.msg);
    if (!ok) return;
    TrainOptions r = o;
    r.lora_resume_path = state;
    r.steps = 5;
    /* the base from a file instead of the seed: the same parameters, so it resumes */
    TrainOptions from_file = r;
    from_file.init_path = base;
    if (trainer_init(&tr, &from_file, &err) != 0) CHECK(0, "the same base from a checkpoint file: %s", err.msg);
    else {
        CHECK(tr.state.step == 3, "resumed at step 3 from --init %s", base);
        trainer_free(&tr);
    }
    from_file.init_path = other;
    expect_refused("another base (one weight changed)", &from_file, "base_crc32", "not the base model");
    TrainOptions t = r;
    t.cfg.hidden_dim += 32;
    expect_refused("another base config", &t, "field hidden_dim", "not the base model");
    t = r, t.lora.rank = 8;
    expect_refused("another rank", &t, "field rank: expected 8, found 4", NULL);
    t = r, t.lora.alpha = 16;
    expect_refused("another alpha", &t, "field alpha", NULL);
    t = r, t.lora.dropout = 0.2f;
    expect_refused("another dropout", &t, "field dropout", NULL);
    t = r, t.lora = lcfg(4, 8, "q,v", 0);
    expect_refused("other targets", &t, "field targets: expected q,v", NULL);
    t = r, t.int8 = 1;
    expect_refused("int8 on an fp32 run", &t, "field int8: expected 1, found 0", NULL);
    t = r, t.seed = 10; /* the fresh base is seeded too: caught as another base */
    expect_refused("another seed (fresh base)", &t, "not the base model", NULL);
    t = from_file, t.init_path = base, t.seed = 10;
    expect_refused("another seed", &t, "field seed: expected 10, found 9", NULL);
    t = r, t.batch = 3;
    expect_refused("another batch", &t, "field batch", NULL);
    t = r, t.seq = 16;
    expect_refused("another seq", &t, "field seq", NULL);
    t = r, t.accum = 1;
    expect_refused("another accum", &t, "field accum", NULL);
    t = r, t.val_frac = 0.2;
    expect_refused("another val_frac", &t, "field val_frac", NULL);
    size_t n_bytes;
    char *bytes = file_read_all(state, &n_bytes, &err);
    CHECK(bytes != NULL, "%s", err.msg);
    free(bytes);
    t = r, t.lora_resume_path = bad;
    copy_damaged(state, bad, (long)n_bytes - 100, -1);
    expect_refused("truncated state", &t, bad, "truncated");
    copy_damaged(state, bad, 100, -1);
    expect_refused("truncated header", &t, bad, "truncated header");
    copy_damaged(state, bad, -1, 300);
    expect_refused("corrupt adapter", &t, "section adapter: checksum mismatch", bad);
    copy_damaged(state, bad, -1, (long)n_bytes - 10);
    expect_refused("corrupt v", &t, "section v: checksum mismatch", bad);
    copy_damaged(state, bad, -1, 180);
    expect_refused("corrupt header", &t, "section header: checksum mismatch", bad);
    t.lora_resume_path = base;
    expect_refused("a full-training checkpoint as a LoRA state", &t, "full-training checkpoint", base);
    t = r, t.lora.rank = 0, t.lora_resume_path = NULL, t.resume_path = state;
    expect_refused("a LoRA state as a full-training checkpoint", &t, "LoRA run's training state", state);
    t = r, t.lora.rank = 0;
    expect_refused("lora_resume_path without LoRA", &t, "LoRA run", NULL);
    t = r, t.lora_resume_path = "/nonexistent/x.lora";
    expect_refused("no state file", &t, "/nonexistent/x.lora", "cannot open");
}

static void test_ane_step_vs_cpu(void) { ane_step_vs_cpu(0); }
static void test_ane_step_vs_cpu_int8_base(void) { ane_step_vs_cpu(1); }

int main(int argc, char **argv) {
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/anetrain-lora-XXXXXX");
    if (!mkdtemp(tmpdir)) return 2;
    parallel_init(2);
    make_data();
    RUN(test_targets_and_layout);
    RUN(test_init_leaves_model_unchanged);
    RUN(test_merge_is_the_adapter_path);
    RUN(test_grad_finite_differences);
    RUN(test_dropout_masks);
    RUN(test_frozen_finite_differences);
    RUN(test_frozen_vs_merged_and_int8);
    RUN(test_save_load_roundtrip);
    RUN(test_load_refuses_what_it_cannot_compute);
    RUN(test_rope_export_consistency);
    RUN(test_trainer_trains_only_the_adapter);
    RUN(test_trainer_dropout_and_int8);
    RUN(test_ane_step_vs_cpu);
    RUN(test_ane_step_vs_cpu_int8_base);
    RUN(test_trainer_resume_cpu_dropout);
    RUN(test_trainer_resume_cpu_int8);
    RUN(test_trainer_resume_ane);
    RUN(test_trainer_resume_refusals);
    parallel_shutdown();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return TEST_SUMMARY();
}
