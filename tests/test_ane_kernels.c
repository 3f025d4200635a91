/*
** test_ane_kernels.c — the ANE backend's kernels (src/backend/ane/kernels.c) run through the
** whole emulated path (MIL text from the writer -> parser -> validator -> fp16 interpreter)
** against the CPU reference ops (src/ops) on the same inputs.
**
** For each model variant (Llama MHA with interleaved RoPE; Llama GQA 4/2 with rotate-half RoPE
** and a padded sequence; GQA 8/2; Qwen3 GQA with q/k-norm and head_dim != C/H; Qwen3 MHA; and
** the layouts of big models on small ones: h1/h3 in column blocks (F = 256 > C = 96), and input
** surfaces narrowed so the plan needs 2 and 4 times C rows with half-RoPE heads) the
** layer_fwd kernel gets random fp16 weights and activations, and every output tap is compared
** with the same quantity computed by ops_* in fp32 from the same (fp16-valued) inputs; then
** layer_bwd gets those taps and a random dy, and every output is compared with the reference
** backward. The error of a tap is max|ane - ref| / max|ref| over its real columns; the limit
** (TOL) is fp16-sized, set at about 3x the worst error measured (printed with -v). Padding
** columns of the gradients must be exactly zero.
**
** The tests can fail: a reference with the wrong GQA head mapping (query head h on KV head
** h mod KV, the bug of the seed, maderix/ANE: docs/ane-facts.md §6) or without the causal mask
** is checked to be far outside TOL.
*/
#include <stdint.h>

#include "backend/ane/device.h"
#include "backend/ane/emu/mil.h"
#include "backend/ane/half.h"
#include "backend/ane/inspect.h"
#include "backend/ane/kernel_check.h"
#include "backend/ane/kernels.h"
#include "backend/ane/mil_write.h"
#include "model/config.h"
#include "ops/ops.h"
#include "test.h"
#include "util/parallel.h"
#include "util/rng.h"

/* max|ane - ref| / max|ref|. Measured worst over all variants and taps (emulator defaults,
** fp32 accumulation): forward 1.6e-3, backward 1.5e-3, i.e. about 3 fp16 ulps of the largest
** value. */
#define TOL 5e-3

static int verbose;
static AneDevice *dev;
static double worst_fwd, worst_bwd;

typedef struct {
    const char *name;
    const char *preset;
    int n_heads, n_kv_heads, head_dim;
    RopeStyle rope;
    int T;
    double x_scale; /* std of the residual stream entering the layer */
    int dim, hidden; /* 0: the preset's */
    int max_width;   /* the plan's widest input surface (0: the device's 16384) */
    int want_rows;   /* the input surface's rows the plan must choose, as a multiple of dim (0: any) */
    int want_blocks; /* 1: h1 and h3 must be read in column blocks */
} Variant;

static const Variant variants[] = {
    {"llama MHA 4/4 D16 interleaved", "tiny", 4, 4, 16, ROPE_INTERLEAVED, 128, 1.0, 0, 0, 0, 0, 0},
    {"llama GQA 4/2 D16 half, T=40 (padded to 64)", "tiny", 4, 2, 16, ROPE_HALF, 40, 0.02, 0, 0, 0, 0, 0},
    {"llama GQA 8/2 D8 interleaved", "tiny", 8, 2, 8, ROPE_INTERLEAVED, 64, 3.0, 0, 0, 0, 0, 0},
    {"qwen3 GQA 4/2 D32 (Q=128 > C=64) half", "tiny-qwen3", 4, 2, 32, ROPE_HALF, 64, 1.0, 0, 0, 0, 0, 0},
    {"qwen3 MHA 4/4 D8 interleaved, T=50", "tiny-qwen3", 4, 4, 8, ROPE_INTERLEAVED, 50, 0.5, 0, 0, 0, 0, 0},
    {"llama C=96 F=256: h1, h3 in column blocks", "tiny", 4, 4, 24, ROPE_HALF, 64, 1.0, 96, 256, 0, 1, 1},
    {"llama GQA 4/2 half, input at most 1024 wide: 2C rows", "tiny", 4, 2, 16, ROPE_HALF, 64, 1.0, 0, 0, 1024, 2, 0},
    {"qwen3 GQA 4/2 half, input at most 512 wide: 4C rows, T=40", "tiny-qwen3", 4, 2, 32, ROPE_HALF, 40, 1.0, 0, 0,
     512, 4, 0},
};

/* ------------------------------------------------------------------ helpers */

static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof *p);
    if (!p) abort();
    return p;
}

static float h16(float x) { return fp16_round(x, 0); }

/* n fp16-valued normals of standard deviation sd (mean mu). */
static void fill(Rng *rng, float *v, size_t n, double mu, double sd) {
    for (size_t i = 0; i < n; i++) v[i] = h16((float)(mu + sd * rng_normal(rng)));
}

static void round_all(float *v, size_t n) {
    for (size_t i = 0; i < n; i++) v[i] = h16(v[i]);
}

/* Error of ane [rows][S] (first T columns) against ref [rows][T]. */
static double tap_error(const float *ane, int S, const float *ref, int rows, int T) {
    double emax = 0, rmax = 0;
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < T; t++) {
            double a = ane[(size_t)r * S + t], b = ref[(size_t)r * T + t];
            double e = isfinite(a) ? fabs(a - b) : INFINITY;
            if (e > emax) emax = e;
            if (fabs(b) > rmax) rmax = fabs(b);
        }
    return rmax > 0 ? emax / rmax : emax;
}

static void expect_tap(const char *variant, const char *tap, double err, double *worst) {
    if (verbose) printf("       %-8s %.2e\n", tap, err);
    if (err > *worst) *worst = err;
    CHECK(err <= TOL, "%s: tap %s error %.3e exceeds %.1e", variant, tap, err, TOL);
}

/* Compiles MIL, runs it on the input surface `in` (fp16 [C][in_S]), returns the output as floats. */
static float *run_kernel(const char *mil, const AneBlob *blobs, int nb, const uint16_t *in, size_t in_n,
                         size_t out_n, Err *err) {
    AneProgram *p = dev->compile(dev, mil, blobs, nb, err);
    if (!p) return NULL;
    AneShape si, so;
    dev->program_io(p, &si, &so);
    float *out = NULL;
    if ((size_t)si.channels * si.spatial != in_n || (size_t)so.channels * so.spatial != out_n) {
        err_set(err, "program I/O [%d x %d] -> [%d x %d] does not match the plan", si.channels, si.spatial,
                so.channels, so.spatial);
        dev->release(dev, p);
        return NULL;
    }
    AneSurface *s_in = dev->surface_create(dev, in_n * 2, err), *s_out = dev->surface_create(dev, out_n * 2, err);
    if (s_in && s_out) {
        memcpy(dev->surface_lock(dev, s_in, 0), in, in_n * 2);
        dev->surface_unlock(dev, s_in, 0);
        if (dev->evaluate(dev, p, s_in, s_out, err) == 0) {
            out = falloc(out_n);
            half_to_f32(out, dev->surface_lock(dev, s_out, 1), out_n);
            dev->surface_unlock(dev, s_out, 1);
        }
    }
    dev->surface_free(dev, s_in);
    dev->surface_free(dev, s_out);
    dev->release(dev, p);
    return out;
}

/* ------------------------------------------------------------------ one layer, both kernels */

typedef struct {
    ModelConfig cfg;
    AneLayerPlan plan;
    int T, S;
    /* weights (fp16 values) */
    float *wq, *wk, *wv, *wo, *w1, *w2, *w3, *ra, *rf, *qn, *kn;
    /* reference forward, [rows][T] */
    float *x, *rstd1, *xn1, *q_raw, *k_raw, *rq, *rk, *q, *k, *v, *att, *xm, *xn2, *rstd2, *h1, *h3, *g, *xnext;
    float *qhat, *khat, *xh2;
} Layer;

static void layer_free(Layer *L) {
    float **all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3, &L->ra, &L->rf, &L->qn, &L->kn,
                     &L->x, &L->rstd1, &L->xn1, &L->q_raw, &L->k_raw, &L->rq, &L->rk, &L->q, &L->k, &L->v,
                     &L->att, &L->xm, &L->xn2, &L->rstd2, &L->h1, &L->h3, &L->g, &L->xnext, &L->qhat, &L->khat,
                     &L->xh2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(*all[i]);
}

/* Per-head RMSNorm of x [NH*D][T] into out (weight w), rstd [NH][T], xhat [NH*D][T] (no weight). */
static void head_norm(float *out, float *rstd, float *xhat, const float *x, const float *w, int NH, int D, int T,
                      float eps) {
    float *ones = falloc((size_t)D);
    for (int d = 0; d < D; d++) ones[d] = 1;
    for (int h = 0; h < NH; h++) {
        ops_rmsnorm_forward(out + (size_t)h * D * T, rstd + (size_t)h * T, x + (size_t)h * D * T, w, D, T, eps);
        ops_rmsnorm_forward(xhat + (size_t)h * D * T, rstd + (size_t)h * T, x + (size_t)h * D * T, ones, D, T, eps);
    }
    free(ones);
}

/* The reference forward of one layer on x [C][T], as cpu.c computes it. wrong_gqa: query head h
** uses KV head h mod KV (the seed's mapping) — only to show the comparison would catch it. */
static void reference_forward(Layer *L, int wrong_gqa, int no_mask) {
    const ModelConfig *c = &L->cfg;
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim, T = L->T;
    int Q = H * D, K = KV * D;
    float *rc = falloc((size_t)T * D / 2), *rs = falloc((size_t)T * D / 2), *scratch = falloc((size_t)2 * T * T);
    ops_rope_table(rc, rs, T, D, 0, c->rope_theta);
    ops_rmsnorm_forward(L->xn1, L->rstd1, L->x, L->ra, C, T, c->norm_eps);
    ops_linear_forward(L->q_raw, L->xn1, L->wq, Q, C, T);
    ops_linear_forward(L->k_raw, L->xn1, L->wk, K, C, T);
    ops_linear_forward(L->v, L->xn1, L->wv, K, C, T);
    if (c->qk_norm) {
        head_norm(L->q, L->rq, L->qhat, L->q_raw, L->qn, H, D, T, c->norm_eps);
        head_norm(L->k, L->rk, L->khat, L->k_raw, L->kn, KV, D, T, c->norm_eps);
    } else {
        memcpy(L->q, L->q_raw, sizeof(float) * Q * T);
        memcpy(L->k, L->k_raw, sizeof(float) * K * T);
    }
    ops_rope_forward(L->q, rc, rs, H, D, T, c->rope_style);
    ops_rope_forward(L->k, rc, rs, KV, D, T, c->rope_style);
    if (no_mask) { /* full (non-causal) softmax attention, by hand */
        for (int h = 0; h < H; h++) {
            const float *qh = L->q + (size_t)h * D * T, *kh = L->k + (size_t)(h / (H / KV)) * D * T,
                        *vh = L->v + (size_t)(h / (H / KV)) * D * T;
            for (int i = 0; i < T; i++) {
                double m = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    double s = 0;
                    for (int d = 0; d < D; d++) s += (double)qh[(size_t)d * T + i] * kh[(size_t)d * T + j];
                    scratch[j] = (float)(s / sqrt((double)D));
                    if (scratch[j] > m) m = scratch[j];
                }
                for (int j = 0; j < T; j++) sum += exp(scratch[j] - m);
                for (int d = 0; d < D; d++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++) acc += exp(scratch[j] - m) / sum * vh[(size_t)d * T + j];
                    L->att[(size_t)(h * D + d) * T + i] = (float)acc;
                }
            }
        }
    } else if (wrong_gqa) {
        for (int h = 0; h < H; h++) /* one query head at a time, against KV head h mod KV */
            ops_attention_forward(L->att + (size_t)h * D * T, L->q + (size_t)h * D * T, L->k + (size_t)(h % KV) * D * T,
                                  L->v + (size_t)(h % KV) * D * T, 1, 1, D, T, 0, 1, scratch);
    } else {
        ops_attention_forward(L->att, L->q, L->k, L->v, H, KV, D, T, 0, KV, scratch);
    }
    ops_linear_forward(L->xm, L->att, L->wo, C, Q, T);
    for (size_t i = 0; i < (size_t)C * T; i++) L->xm[i] += L->x[i];
    ops_rmsnorm_forward(L->xn2, L->rstd2, L->xm, L->rf, C, T, c->norm_eps);
    for (int ch = 0; ch < C; ch++)
        for (int t = 0; t < T; t++) L->xh2[(size_t)ch * T + t] = L->xm[(size_t)ch * T + t] * L->rstd2[t];
    ops_linear_forward(L->h1, L->xn2, L->w1, F, C, T);
    ops_linear_forward(L->h3, L->xn2, L->w3, F, C, T);
    ops_swiglu_forward(L->g, L->h1, L->h3, (size_t)F * T);
    ops_linear_forward(L->xnext, L->g, L->w2, C, F, T);
    for (size_t i = 0; i < (size_t)C * T; i++) L->xnext[i] += L->xm[i];
    free(rc);
    free(rs);
    free(scratch);
}

static void layer_init(Layer *L, const Variant *v, uint64_t seed) {
    memset(L, 0, sizeof *L);
    Err err = {{0}};
    if (config_from_preset(&L->cfg, v->preset, &err)) abort();
    L->cfg.n_heads = v->n_heads;
    L->cfg.n_kv_heads = v->n_kv_heads;
    L->cfg.head_dim = v->head_dim;
    L->cfg.rope_style = v->rope;
    if (v->dim) L->cfg.dim = v->dim;
    if (v->hidden) L->cfg.hidden_dim = v->hidden;
    L->T = v->T;
    AnePlanSpec spec = {v->T, 0, 0, 0, 0, v->max_width};
    CHECK(ane_plan_make(&L->plan, &L->cfg, &spec, &err) == 0, "%s", err.msg);
    CHECK(!v->want_rows || L->plan.in_C == v->want_rows * L->cfg.dim, "%s: the plan has %d rows, expected %d x %d",
          v->name, L->plan.in_C, v->want_rows, L->cfg.dim);
    CHECK(!v->want_blocks || (L->plan.reg[AR_H1].blocks > 1 && L->plan.reg[AR_H3].blocks > 1),
          "%s: h1 and h3 in column blocks (%d)", v->name, L->plan.reg[AR_H1].blocks);
    L->S = L->plan.S;
    const ModelConfig *c = &L->cfg;
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim, T = L->T;
    size_t Q = (size_t)H * D, K = (size_t)KV * D;
    Rng rng;
    rng_seed(&rng, seed);
    /* unit-variance activations through every matrix; norm weights near 1 */
    L->wq = falloc(Q * C), L->wk = falloc(K * C), L->wv = falloc(K * C), L->wo = falloc(C * Q);
    L->w1 = falloc((size_t)F * C), L->w3 = falloc((size_t)F * C), L->w2 = falloc((size_t)C * F);
    L->ra = falloc(C), L->rf = falloc(C), L->qn = falloc(D), L->kn = falloc(D);
    fill(&rng, L->wq, Q * C, 0, 1 / sqrt(C));
    fill(&rng, L->wk, K * C, 0, 1 / sqrt(C));
    fill(&rng, L->wv, K * C, 0, 1 / sqrt(C));
    fill(&rng, L->wo, C * Q, 0, 1 / sqrt((double)Q));
    fill(&rng, L->w1, (size_t)F * C, 0, 1 / sqrt(C));
    fill(&rng, L->w3, (size_t)F * C, 0, 1 / sqrt(C));
    fill(&rng, L->w2, (size_t)C * F, 0, 1 / sqrt(F));
    fill(&rng, L->ra, C, 1, 0.1);
    fill(&rng, L->rf, C, 1, 0.1);
    fill(&rng, L->qn, D, 1, 0.1);
    fill(&rng, L->kn, D, 1, 0.1);
    L->x = falloc((size_t)C * T);
    fill(&rng, L->x, (size_t)C * T, 0, v->x_scale);
    size_t n[] = {(size_t)T, (size_t)C * T, Q * T, K * T, (size_t)H * T, (size_t)KV * T, Q * T, K * T, K * T,
                  Q * T, (size_t)C * T, (size_t)C * T, (size_t)T, (size_t)F * T, (size_t)F * T, (size_t)F * T,
                  (size_t)C * T, Q * T, K * T, (size_t)C * T};
    float **dst[] = {&L->rstd1, &L->xn1, &L->q_raw, &L->k_raw, &L->rq, &L->rk, &L->q, &L->k, &L->v,
                     &L->att, &L->xm, &L->xn2, &L->rstd2, &L->h1, &L->h3, &L->g, &L->xnext, &L->qhat, &L->khat,
                     &L->xh2};
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++) *dst[i] = falloc(n[i]);
}

/* The layer's surface with every weight region and the forward activations (x, rstd1) staged
** the way the backend stages them: padding columns of x are 0 and of rstd1 are 1. */
static uint16_t *stage_forward(const Layer *L) {
    const AneLayerPlan *p = &L->plan;
    int C = p->C, S = p->S, T = L->T;
    uint16_t *in = calloc((size_t)p->in_C * p->in_S, sizeof *in);
    float *xs = falloc((size_t)C * S), *r1 = falloc((size_t)S);
    for (int ch = 0; ch < C; ch++) memcpy(xs + (size_t)ch * S, L->x + (size_t)ch * T, sizeof(float) * T);
    for (int t = 0; t < S; t++) r1[t] = t < T ? L->rstd1[t] : 1.0f;
    ane_region_put_f32(p, in, AR_X, xs);
    ane_region_put_f32(p, in, AR_RSTD1, r1);
    ane_region_put_f32(p, in, AR_RMS_ATT, L->ra);
    ane_region_put_f32(p, in, AR_RMS_FFN, L->rf);
    if (p->qk_norm) {
        ane_region_put_f32(p, in, AR_QNORM, L->qn);
        ane_region_put_f32(p, in, AR_KNORM, L->kn);
    }
    ane_region_put_f32(p, in, AR_WQ, L->wq);
    ane_region_put_f32(p, in, AR_WK, L->wk);
    ane_region_put_f32(p, in, AR_WV, L->wv);
    ane_region_put_f32(p, in, AR_WO, L->wo);
    ane_region_put_f32(p, in, AR_W1, L->w1);
    ane_region_put_f32(p, in, AR_W3, L->w3);
    ane_region_put_f32(p, in, AR_W2, L->w2);
    free(xs);
    free(r1);
    return in;
}

/* [rows][T] -> [rows][S] zero-padded fp16 values (rounded). */
static float *padded(const float *src, int rows, int T, int S) {
    float *d = falloc((size_t)rows * S);
    for (int r = 0; r < rows; r++)
        for (int t = 0; t < T; t++) d[(size_t)r * S + t] = h16(src[(size_t)r * T + t]);
    return d;
}

static void test_variant(const Variant *v, uint64_t seed) {
    Layer L;
    layer_init(&L, v, seed);
    const AneLayerPlan *p = &L.plan;
    const ModelConfig *c = &L.cfg;
    int C = c->dim, F = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim, T = L.T, S = L.S;
    int Q = H * D, K = KV * D;
    if (verbose)
        printf("     %s: input [%d x %d], fwd out %d rows, bwd out %d rows\n", v->name, p->in_C, p->in_S, p->fwd_C,
               p->bwd_C);
    reference_forward(&L, 0, 0);
    round_all(L.rstd1, (size_t)T); /* staged as fp16: the reference uses the same value */

    /* ---- layer_fwd ---- */
    Err err = {{0}};
    char *mil;
    AneBlob *blobs;
    int nb;
    CHECK(ane_kernel_fwd(p, &mil, &blobs, &nb, &err) == 0, "%s", err.msg);
    uint16_t *in = stage_forward(&L);
    size_t in_n = (size_t)p->in_C * p->in_S;
    float *out = run_kernel(mil, blobs, nb, in, in_n, (size_t)p->fwd_C * S, &err);
    CHECK(out != NULL, "%s: layer_fwd: %s", v->name, err.msg);
    free(mil);
    milw_free_blobs(blobs, nb);
    if (!out) {
        free(in);
        layer_free(&L);
        return;
    }
#define TAP(id) (out + (size_t)p->fwd[id].off * S)
    expect_tap(v->name, "x_next", tap_error(TAP(AF_XNEXT), S, L.xnext, C, T), &worst_fwd);
    expect_tap(v->name, "att", tap_error(TAP(AF_ATT), S, L.att, Q, T), &worst_fwd);
    expect_tap(v->name, "xh2", tap_error(TAP(AF_XH2), S, L.xh2, C, T), &worst_fwd);
    expect_tap(v->name, "rstd2", tap_error(TAP(AF_RSTD2), S, L.rstd2, 1, T), &worst_fwd);
    expect_tap(v->name, "h1", tap_error(TAP(AF_H1), S, L.h1, F, T), &worst_fwd);
    expect_tap(v->name, "h3", tap_error(TAP(AF_H3), S, L.h3, F, T), &worst_fwd);
    expect_tap(v->name, "q", tap_error(TAP(AF_Q), S, c->qk_norm ? L.qhat : L.q, Q, T), &worst_fwd);
    expect_tap(v->name, "k", tap_error(TAP(AF_K), S, c->qk_norm ? L.khat : L.k, K, T), &worst_fwd);
    expect_tap(v->name, "v", tap_error(TAP(AF_V), S, L.v, K, T), &worst_fwd);
    if (c->qk_norm) {
        expect_tap(v->name, "rstd_q", tap_error(TAP(AF_RSTDQ), S, L.rq, H, T), &worst_fwd);
        expect_tap(v->name, "rstd_k", tap_error(TAP(AF_RSTDK), S, L.rk, KV, T), &worst_fwd);
    }
    int finite = 1;
    for (size_t i = 0; i < (size_t)p->fwd_C * S; i++) finite &= isfinite(out[i]) != 0;
    CHECK(finite, "%s: layer_fwd output (padding included) is finite", v->name);
    /* The comparison can fail: the seed's GQA mapping, or attention without the causal mask. */
    if (KV < H || v == &variants[0]) {
        Layer W = L;
        W.att = falloc((size_t)Q * T);
        W.xm = falloc((size_t)C * T), W.xn2 = falloc((size_t)C * T), W.rstd2 = falloc((size_t)T);
        W.xh2 = falloc((size_t)C * T), W.h1 = falloc((size_t)F * T), W.h3 = falloc((size_t)F * T);
        W.g = falloc((size_t)F * T), W.xnext = falloc((size_t)C * T), W.xn1 = falloc((size_t)C * T);
        W.rstd1 = falloc((size_t)T), W.q_raw = falloc((size_t)Q * T), W.k_raw = falloc((size_t)K * T);
        W.q = falloc((size_t)Q * T), W.k = falloc((size_t)K * T), W.v = falloc((size_t)K * T);
        W.rq = falloc((size_t)H * T), W.rk = falloc((size_t)KV * T), W.qhat = falloc((size_t)Q * T);
        W.khat = falloc((size_t)K * T);
        reference_forward(&W, KV < H, KV == H);
        double e = tap_error(TAP(AF_ATT), S, W.att, Q, T);
        if (verbose) printf("       (att against a %s reference: %.2e)\n", KV < H ? "wrong-GQA" : "maskless", e);
        CHECK(e > 10 * TOL, "%s: a %s reference is only %.2e away: the test could not tell", v->name,
              KV < H ? "wrong-GQA" : "maskless", e);
        float **own[] = {&W.att, &W.xm, &W.xn2, &W.rstd2, &W.xh2, &W.h1, &W.h3, &W.g, &W.xnext, &W.xn1, &W.rstd1,
                         &W.q_raw, &W.k_raw, &W.q, &W.k, &W.v, &W.rq, &W.rk, &W.qhat, &W.khat};
        for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) free(*own[i]);
    }

    /* ---- layer_bwd: the reference forward's taps (fp16-rounded) and a random dy ---- */
    Rng rng;
    rng_seed(&rng, seed ^ 0xb0b);
    float *dy = falloc((size_t)C * T);
    fill(&rng, dy, (size_t)C * T, 0, 1.0);
    float *qtap = c->qk_norm ? L.qhat : L.q, *ktap = c->qk_norm ? L.khat : L.k;
    struct {
        int id;
        const float *src;
        int rows;
    } acts[] = {{AR_DY, dy, C},      {AR_XH2, L.xh2, C}, {AR_RSTD2, L.rstd2, 1}, {AR_H1, L.h1, F},
                {AR_H3, L.h3, F},    {AR_Q, qtap, Q},    {AR_K, ktap, K},        {AR_V, L.v, K},
                {AR_RSTDQ, L.rq, H}, {AR_RSTDK, L.rk, KV}};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        if (!p->reg[acts[i].id].n) continue;
        float *pd = padded(acts[i].src, acts[i].rows, T, S);
        if (acts[i].id == AR_RSTD2)
            for (int t = T; t < S; t++) pd[t] = 1.0f;
        ane_region_put_f32(p, in, acts[i].id, pd);
        free(pd);
    }
    /* The reference backward starts from exactly those fp16 values. */
    float *xh2 = falloc((size_t)C * T), *r2 = falloc((size_t)T), *h1 = falloc((size_t)F * T),
          *h3 = falloc((size_t)F * T), *qt = falloc((size_t)Q * T), *kt = falloc((size_t)K * T),
          *vv = falloc((size_t)K * T), *rq = falloc((size_t)H * T), *rk = falloc((size_t)KV * T);
    memcpy(xh2, L.xh2, sizeof(float) * C * T), memcpy(r2, L.rstd2, sizeof(float) * T);
    memcpy(h1, L.h1, sizeof(float) * F * T), memcpy(h3, L.h3, sizeof(float) * F * T);
    memcpy(qt, qtap, sizeof(float) * Q * T), memcpy(kt, ktap, sizeof(float) * K * T);
    memcpy(vv, L.v, sizeof(float) * K * T), memcpy(rq, L.rq, sizeof(float) * H * T);
    memcpy(rk, L.rk, sizeof(float) * KV * T);
    round_all(xh2, (size_t)C * T), round_all(r2, T), round_all(h1, (size_t)F * T), round_all(h3, (size_t)F * T);
    round_all(qt, (size_t)Q * T), round_all(kt, (size_t)K * T), round_all(vv, (size_t)K * T);
    round_all(rq, (size_t)H * T), round_all(rk, (size_t)KV * T);

    float *dg = falloc((size_t)F * T), *dh1 = falloc((size_t)F * T), *dh3 = falloc((size_t)F * T),
          *dxn2 = falloc((size_t)C * T), *dxm = falloc((size_t)C * T), *xm = falloc((size_t)C * T),
          *datt = falloc((size_t)Q * T), *dq = falloc((size_t)Q * T), *dk = falloc((size_t)K * T),
          *dv = falloc((size_t)K * T), *dqr = falloc((size_t)Q * T), *dkr = falloc((size_t)K * T),
          *dxn1 = falloc((size_t)C * T), *dummy = falloc((size_t)(D > C ? D : C)), *qa = falloc((size_t)Q * T),
          *ka = falloc((size_t)K * T), *rc = falloc((size_t)T * D / 2), *rs = falloc((size_t)T * D / 2),
          *scratch = falloc((size_t)2 * T * T);
    ops_rope_table(rc, rs, T, D, 0, c->rope_theta);
    ops_linear_backward(dg, NULL, dy, NULL, L.w2, C, F, T);
    ops_swiglu_backward(dh1, dh3, dg, h1, h3, (size_t)F * T);
    ops_linear_backward(dxn2, NULL, dh1, NULL, L.w1, F, C, T);
    ops_linear_backward(dxn2, NULL, dh3, NULL, L.w3, F, C, T);
    for (int ch = 0; ch < C; ch++) /* x_mid from the tap: xh2 / rstd2 */
        for (int t = 0; t < T; t++) xm[(size_t)ch * T + t] = xh2[(size_t)ch * T + t] / r2[t];
    memcpy(dxm, dy, sizeof(float) * C * T);
    ops_rmsnorm_backward(dxm, dummy, dxn2, xm, L.rf, r2, C, T);
    ops_linear_backward(datt, NULL, dxm, NULL, L.wo, C, Q, T);
    memcpy(qa, qt, sizeof(float) * Q * T), memcpy(ka, kt, sizeof(float) * K * T);
    if (c->qk_norm) { /* attention's q, k from the normalized taps: * weight, RoPE */
        for (int h = 0; h < H; h++)
            for (int d = 0; d < D; d++)
                for (int t = 0; t < T; t++) qa[((size_t)h * D + d) * T + t] *= L.qn[d];
        for (int h = 0; h < KV; h++)
            for (int d = 0; d < D; d++)
                for (int t = 0; t < T; t++) ka[((size_t)h * D + d) * T + t] *= L.kn[d];
        ops_rope_forward(qa, rc, rs, H, D, T, c->rope_style);
        ops_rope_forward(ka, rc, rs, KV, D, T, c->rope_style);
    }
    ops_attention_backward(dq, dk, dv, datt, qa, ka, vv, H, KV, D, T, 0, KV, scratch);
    ops_rope_backward(dq, rc, rs, H, D, T, c->rope_style);
    ops_rope_backward(dk, rc, rs, KV, D, T, c->rope_style);
    const float *dq_in = dq, *dk_in = dk;
    if (c->qk_norm) { /* dq is d(normed, weighted q); back through the per-head norm */
        for (int h = 0; h < H; h++) {
            float *xq = falloc((size_t)D * T);
            for (int d = 0; d < D; d++)
                for (int t = 0; t < T; t++) xq[(size_t)d * T + t] = qt[((size_t)h * D + d) * T + t] / rq[h * T + t];
            ops_rmsnorm_backward(dqr + (size_t)h * D * T, dummy, dq + (size_t)h * D * T, xq, L.qn, rq + (size_t)h * T,
                                 D, T);
            free(xq);
        }
        for (int h = 0; h < KV; h++) {
            float *xk = falloc((size_t)D * T);
            for (int d = 0; d < D; d++)
                for (int t = 0; t < T; t++) xk[(size_t)d * T + t] = kt[((size_t)h * D + d) * T + t] / rk[h * T + t];
            ops_rmsnorm_backward(dkr + (size_t)h * D * T, dummy, dk + (size_t)h * D * T, xk, L.kn, rk + (size_t)h * T,
                                 D, T);
            free(xk);
        }
        dq_in = dqr;
        dk_in = dkr;
    }
    ops_linear_backward(dxn1, NULL, dq_in, NULL, L.wq, Q, C, T);
    ops_linear_backward(dxn1, NULL, dk_in, NULL, L.wk, K, C, T);
    ops_linear_backward(dxn1, NULL, dv, NULL, L.wv, K, C, T);

    CHECK(ane_kernel_bwd(p, &mil, &blobs, &nb, &err) == 0, "%s", err.msg);
    float *bout = run_kernel(mil, blobs, nb, in, in_n, (size_t)p->bwd_C * S, &err);
    CHECK(bout != NULL, "%s: layer_bwd: %s", v->name, err.msg);
    free(mil);
    milw_free_blobs(blobs, nb);
    if (bout) {
#define BTAP(id) (bout + (size_t)p->bwd[id].off * S)
        expect_tap(v->name, "dxn2", tap_error(BTAP(AB_DXN2), S, dxn2, C, T), &worst_bwd);
        expect_tap(v->name, "dh1", tap_error(BTAP(AB_DH1), S, dh1, F, T), &worst_bwd);
        expect_tap(v->name, "dh3", tap_error(BTAP(AB_DH3), S, dh3, F, T), &worst_bwd);
        expect_tap(v->name, "dq", tap_error(BTAP(AB_DQ), S, dq, Q, T), &worst_bwd);
        expect_tap(v->name, "dk", tap_error(BTAP(AB_DK), S, dk, K, T), &worst_bwd);
        expect_tap(v->name, "dv", tap_error(BTAP(AB_DV), S, dv, K, T), &worst_bwd);
        expect_tap(v->name, "dxn1", tap_error(BTAP(AB_DXN1), S, dxn1, C, T), &worst_bwd);
        int pad_nonzero = 0;
        for (int r = 0; r < p->bwd_C; r++)
            for (int t = T; t < S; t++) pad_nonzero += bout[(size_t)r * S + t] != 0;
        CHECK(pad_nonzero == 0, "%s: %d gradient values in padding columns are not zero", v->name, pad_nonzero);
        free(bout);
    }
    float *frees[] = {dy, xh2, r2, h1, h3, qt, kt, vv, rq, rk, dg, dh1, dh3, dxn2, dxm, xm, datt, dq, dk, dv,
                      dqr, dkr, dxn1, dummy, qa, ka, rc, rs, scratch, out, (float *)in};
    for (size_t i = 0; i < sizeof frees / sizeof frees[0]; i++) free(frees[i]);
    layer_free(&L);
}

static void test_kernels_all_variants(void) {
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) test_variant(&variants[i], 1000 + i);
    printf("     worst error: forward %.2e, backward %.2e (limit %.1e)\n", worst_fwd, worst_bwd, TOL);
}

/* The const statement defining `name` in ast, or NULL. */
static const MilStmt *const_of(const MilAst *ast, const char *name) {
    for (int i = 0; i < ast->n_stmts; i++)
        if (!strcmp(ast->stmts[i].name, name) && !strcmp(ast->stmts[i].op, "const")) return &ast->stmts[i];
    return NULL;
}

static const MilExpr *arg(const MilStmt *st, const char *key) {
    for (int i = 0; i < st->n_args; i++)
        if (!strcmp(st->args[i].key, key)) return &st->args[i].val;
    return NULL;
}

/* The literal value of const argument `key` of st (NULL if absent or not a const). */
static const MilExpr *const_arg(const MilAst *ast, const MilStmt *st, const char *key) {
    const MilExpr *e = arg(st, key);
    const MilStmt *c = e && e->kind == MIL_EXPR_NAME ? const_of(ast, e->name) : NULL;
    for (int i = 0; c && i < c->n_attrs; i++)
        if (!strcmp(c->attrs[i].key, "val")) return &c->attrs[i].val;
    return NULL;
}

/* The declared type of value `name` (a statement or the input). */
static const MilType *type_of(const MilAst *ast, const char *name) {
    for (int i = 0; i < ast->n_stmts; i++)
        if (!strcmp(ast->stmts[i].name, name)) return &ast->stmts[i].type;
    for (int i = 0; i < ast->n_inputs; i++)
        if (!strcmp(ast->inputs[i].name, name)) return &ast->inputs[i].type;
    return NULL;
}

/* Checks one kernel's text against the constructs docs/ane-facts.md §2 reports: returns the
** number of violations, printing the first few unless what is NULL. */
static int dialect_violations(const char *what, const char *mil) {
    MilAst ast;
    Err err = {{0}};
    if (mil_parse(mil, &ast, &err)) {
        if (what) fprintf(stderr, "  %s: %s\n", what, err.msg);
        return 1;
    }
    int bad = 0;
#define VIOLATION(...)                                                                                             \
    do {                                                                                                           \
        if (bad++ < 5 && what) {                                                                                   \
            fprintf(stderr, "  %s: %s (%s): ", what, st->name, st->op);                                          \
            fprintf(stderr, __VA_ARGS__);                                                                          \
            fprintf(stderr, "\n");                                                                                 \
        }                                                                                                          \
    } while (0)
    static const char *ops[] = {"const", "slice_by_size", "reshape", "transpose", "matmul", "add", "sub",
                                "mul",   "pow",           "sigmoid", "softmax",   "reduce_sum", "concat"};
    for (int i = 0; i < ast.n_stmts; i++) {
        const MilStmt *st = &ast.stmts[i];
        int known = 0;
        for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) known |= !strcmp(st->op, ops[k]);
        if (!known) VIOLATION("op outside the reported set");
        if (st->type.is_tensor && st->type.dtype != MIL_DT_FP16 && st->type.dtype != MIL_DT_INT32)
            VIOLATION("tensor type %s", mil_dtype_name(st->type.dtype));
        if (!strcmp(st->op, "slice_by_size")) {
            const MilExpr *b = const_arg(&ast, st, "begin");
            const MilType *xt = type_of(&ast, arg(st, "x")->name);
            if (!b || !xt || b->n_items != 4 || b->items[0] != 0 || b->items[2] != 0 || st->type.dims[2] != xt->dims[2])
                VIOLATION("slices along axis 0 or 2");
        } else if (!strcmp(st->op, "concat")) {
            const MilExpr *ax = const_arg(&ast, st, "axis");
            if (!ax || (ax->inum != 1 && ax->inum != 3)) VIOLATION("concat axis other than 1 or 3");
        } else if (!strcmp(st->op, "reduce_sum")) {
            const MilExpr *ax = const_arg(&ast, st, "axes");
            if (!ax || ax->n_items != 1 || (ax->items[0] != 1 && ax->items[0] != -1)) VIOLATION("axes not [1] or [-1]");
        } else if (!strcmp(st->op, "softmax")) {
            const MilExpr *ax = const_arg(&ast, st, "axis");
            if (!ax || (ax->inum != -1 && ax->inum != 1)) VIOLATION("softmax axis other than -1 or 1");
        } else if (!strcmp(st->op, "transpose")) {
            const MilExpr *pm = const_arg(&ast, st, "perm");
            if (!pm || pm->n_items != 4 || pm->items[0] != 0 || pm->items[1] != 1 || pm->items[2] != 3 ||
                pm->items[3] != 2)
                VIOLATION("perm other than [0, 1, 3, 2]");
        }
    }
#undef VIOLATION
    mil_ast_free(&ast);
    return bad;
}

/* The writer's text is what docs/ane-facts.md §2 reports: one fp16 input, explicit consts, no cast,
** canonical blobs, and only the axes and permutations the seed's kernels use. */
static void test_mil_dialect(void) {
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        Layer L;
        layer_init(&L, &variants[v], 7);
        char *mil;
        AneBlob *blobs;
        int nb;
        Err err = {{0}};
        for (int k = 0; k < 2; k++) {
            int rc = k ? ane_kernel_bwd(&L.plan, &mil, &blobs, &nb, &err)
                       : ane_kernel_fwd(&L.plan, &mil, &blobs, &nb, &err);
            CHECK(rc == 0, "%s", err.msg);
            if (rc) continue;
            const char *hdr = "program(1.3)\n[buildInfo = dict<string, string>(";
            char want_in[64];
            snprintf(want_in, sizeof want_in, "func main<ios18>(tensor<fp16, [1, %d, 1, %d]> x) {", L.plan.in_C,
                     L.plan.in_S);
            CHECK(strncmp(mil, hdr, strlen(hdr)) == 0, "header");
            CHECK(strstr(mil, want_in) != NULL && L.plan.in_S % 32 == 0, "one fp16 input [1, C, 1, in_S]");
            CHECK(strstr(mil, "cast(") == NULL && strstr(mil, "fp32") == NULL, "no cast, no fp32");
            CHECK(strstr(mil, "= true") == NULL && strstr(mil, "= false") == NULL, "no literal shorthand");
            CHECK(dialect_violations(variants[v].name, mil) == 0, "%s %s: only reported constructs", variants[v].name,
                  k ? "layer_bwd" : "layer_fwd");
            CHECK(nb == 3 + 2 * L.cfg.qk_norm, "mask, RoPE tables (and q/k-norm ones) as blobs (found %d)", nb);
            for (int i = 0; i < nb; i++) {
                const unsigned char *b = blobs[i].data;
                CHECK(b[0] == 1 && b[4] == 2 && b[64] == 0xEF && b[67] == 0xDE && b[68] == 1 && b[80] == 128 &&
                          blobs[i].size % 2 == 0,
                      "blob %s is a canonical MILBlob file", blobs[i].path);
            }
            free(mil);
            milw_free_blobs(blobs, nb);
        }
        layer_free(&L);
    }
    /* The checker itself can fail: axis-2 slicing and reduction, as a first draft of the
    ** q/k-norm and RoPE kernels had them. */
    Err err = {{0}};
    MilW *w = milw_create();
    MilT x = milw_input(w, 4, 32);
    MilT x4 = milw_reshape4(w, x, 1, 2, 2, 32);
    int b0[4] = {0, 0, 1, 0}, sz[4] = {1, 2, 1, 32};
    MilT parts[2] = {milw_slice(w, x4, b0, sz), milw_reduce_sum(w, x4, 2)};
    char *t = milw_finish(w, milw_reshape4(w, milw_concat(w, 2, 2, parts), 1, 4, 1, 32), &err);
    CHECK(t && dialect_violations(NULL, t) == 3, "axis-2 slice, reduce and concat are flagged");
    free(t);
    milw_free(w);
    /* The writer refuses shapes that do not fit, naming the values. */
    w = milw_create();
    x = milw_input(w, 8, 32);
    MilT a = milw_reshape4(w, x, 1, 1, 8, 32), b = milw_reshape4(w, x, 1, 1, 16, 16);
    MilT y = milw_matmul(w, a, 0, b, 0);
    t = milw_finish(w, y, &err);
    CHECK(t == NULL && strstr(err.msg, "inner dims 32 and 16 differ"), "matmul mismatch reported: %s", err.msg);
    free(t);
    milw_free(w);
}

/* The layout invariants of plan p (kernels.h): every present region starts at a column that is a
** multiple of 32, lies inside the [in_C][in_S] surface, divides into whole rows (no partial row:
** nothing is flattened to be read), and overlaps no other; absent regions take no columns; the
** surface is at most 16384 wide and tall, its rows a power-of-two multiple of C. */
static void check_layout(const char *what, const AneLayerPlan *p) {
    CHECK(p->in_S % 32 == 0 && p->in_S <= ANE_MAX_AXIS && p->in_C <= ANE_MAX_AXIS && p->in_C % p->C == 0 &&
              ((p->in_C / p->C) & (p->in_C / p->C - 1)) == 0,
          "%s: surface [%d x %d] for C = %d", what, p->in_C, p->in_S, p->C);
    for (int i = 0; i < AR_COUNT; i++) {
        const AneRegion *r = &p->reg[i];
        if (!r->n) {
            CHECK(r->width == 0 && r->blocks == 0, "%s: absent region %d takes no columns", what, i);
            continue;
        }
        long long per = (long long)r->rows * r->width, last = r->n - (r->blocks - 1) * per;
        CHECK(r->off % 32 == 0 && r->rows >= 1 && r->width >= 1 && r->blocks >= 1 && r->n == (long long)r->a * r->b,
              "%s: region %d at column %d, %d x %d in %d blocks, %lld values", what, i, r->off, r->rows, r->width,
              r->blocks, r->n);
        CHECK(last > 0 && last <= per && last % r->width == 0, "%s: region %d divides into whole rows", what, i);
        CHECK(r->row + r->rows <= p->in_C && r->off + (long long)r->blocks * r->width <= p->in_S,
              "%s: region %d inside the surface", what, i);
        for (int j = 0; j < i; j++) {
            const AneRegion *o = &p->reg[j];
            if (!o->n) continue;
            int cols = r->off < o->off + o->blocks * o->width && o->off < r->off + r->blocks * r->width;
            int rows = r->row < o->row + o->rows && o->row < r->row + r->rows;
            CHECK(!(cols && rows), "%s: regions %d and %d overlap", what, i, j);
        }
    }
}

/* The plan's layout for every preset and variant, and the value order of each kind of region
** (a fold, a shelf of small regions, column blocks) through put and get. */
static void test_plan_layout(void) {
    ModelConfig cfg;
    Err err = {{0}};
    const char *models[] = {"stories15m", "stories42m", "stories110m", "qwen3-0.6b", "tiny", "tiny-qwen3"};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        config_from_preset(&cfg, models[m], &err);
        for (int v = 0; v < 4; v++) {
            AnePlanSpec spec = {256, v ? 8 : 0, v == 2 ? 0x7fu : 0x0fu, v == 2, v == 3, 0};
            AneLayerPlan p;
            char what[64];
            snprintf(what, sizeof what, "%s variant %d", models[m], v);
            CHECK(ane_plan_make(&p, &cfg, &spec, &err) == 0, "%s: %s", what, err.msg);
            check_layout(what, &p);
            if (verbose && v == 0)
                printf("     %-12s input [%d x %d] (%.1f MB), fwd out %d rows, bwd out %d rows\n", models[m], p.in_C,
                       p.in_S, 2.0 * p.in_C * p.in_S / 1e6, p.fwd_C, p.bwd_C);
        }
    }
    /* The variants of the kernel tests (column blocks, 2C and 4C rows). */
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        Layer L;
        layer_init(&L, &variants[v], 1);
        check_layout(variants[v].name, &L.plan);
        layer_free(&L);
    }
    /* The value order: put 1, 2, 3, ... into every region of a surface, read each back, and find
    ** a few values where kernels.h says they are. */
    config_from_preset(&cfg, "tiny", &err);
    cfg.dim = 96, cfg.hidden_dim = 256, cfg.head_dim = 24;
    AnePlanSpec spec = {40, 4, 0x7fu, 1, 1, 0};
    AneLayerPlan p;
    CHECK(ane_plan_make(&p, &cfg, &spec, &err) == 0, "%s", err.msg);
    check_layout("round trip plan", &p);
    uint16_t *s = calloc((size_t)p.in_C * p.in_S, 2);
    int bad = 0, kinds[3] = {0, 0, 0};
    for (int id = 0; id < AR_COUNT; id++) {
        const AneRegion *r = &p.reg[id];
        if (!r->n) continue;
        float *v = falloc((size_t)r->n);
        uint16_t *back = calloc((size_t)r->n, 2);
        for (long long i = 0; i < r->n; i++) v[i] = (float)(i % 2000 + 1);
        ane_region_put_f32(&p, s, id, v);
        ane_region_get_f16(&p, s, id, back);
        for (long long i = 0; i < r->n; i++) bad += fp16_to_float(back[i]) != v[i];
        /* value i of block j at row + (i mod rows*width) / width, column off + j width + i mod width */
        long long per = (long long)r->rows * r->width, i = r->n - 1, j = i / per, k = i % per;
        size_t at = (size_t)(r->row + k / r->width) * p.in_S + (size_t)(r->off + j * r->width + k % r->width);
        bad += fp16_to_float(s[at]) != v[i] || fp16_to_float(s[(size_t)r->row * p.in_S + r->off]) != 1.0f;
        kinds[r->blocks > 1 ? 2 : r->row > 0 || r->width == 32 ? 1 : 0]++;
        free(v);
        free(back);
    }
    /* zeroing one region leaves the others */
    ane_region_zero(&p, s, AR_LORA_A + 1);
    uint16_t *back = calloc((size_t)p.reg[AR_LORA_B + 1].n, 2);
    ane_region_get_f16(&p, s, AR_LORA_B + 1, back);
    bad += fp16_to_float(back[0]) != 1.0f;
    ane_region_get_f16(&p, s, AR_LORA_A + 1, back);
    bad += back[0] != 0;
    CHECK(bad == 0 && kinds[0] && kinds[1] && kinds[2], "round trips (%d bad) over folds %d, shelf regions %d, column "
          "blocks %d", bad, kinds[0], kinds[1], kinds[2]);
    free(s);
    free(back);
    /* Refusals before any compile, naming what does not fit. */
    config_from_preset(&cfg, "tiny", &err);
    AnePlanSpec big = {20000, 0, 0, 0, 0, 0};
    CHECK(ane_plan_make(&p, &cfg, &big, &err) != 0 && strstr(err.msg, "the padded sequence length S is 20000"),
          "%s", err.msg);
    AnePlanSpec narrow = {64, 0, 0, 0, 1, 32}; /* the scales [172] need columns of their own besides a shelf */
    CHECK(ane_plan_make(&p, &cfg, &narrow, &err) != 0 && strstr(err.msg, "fit no input surface"), "%s", err.msg);
    AnePlanSpec rank = {64, 4096, 0x7fu, 0, 0, 0};
    CHECK(ane_plan_make(&p, &cfg, &rank, &err) != 0 && strstr(err.msg, "layer_fwd's output rows"), "%s", err.msg);
}

/* ane_kernel_reference (inspect.h, the doctor's CPU reference) against the emulator, on input
** surfaces of random values, for plans of every kind: plain (Llama MHA, GQA with half RoPE,
** Qwen3 with q/k-norm), LoRA on all modules with dropout masks, an int8 base with LoRA, and a
** plan folded into more rows than C. Every tap of both kernels, every column. */
static void test_reference_matches_emulator(void) {
    typedef struct {
        const char *name, *preset;
        int kv, rope, rank, dropout, int8, max_width;
    } Case;
    const Case cases[] = {
        {"tiny MHA interleaved", "tiny", 4, ROPE_INTERLEAVED, 0, 0, 0, 0},
        {"tiny GQA half, LoRA all r4 + dropout", "tiny", 2, ROPE_HALF, 4, 1, 0, 0},
        {"tiny-qwen3, int8 base + LoRA all r4", "tiny-qwen3", 2, ROPE_HALF, 4, 0, 1, 0},
        {"tiny-qwen3 LoRA + dropout + int8, input at most 512 wide", "tiny-qwen3", 2, ROPE_HALF, 4, 1, 1, 512},
    };
    double worst = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const Case *c = &cases[ci];
        ModelConfig cfg;
        Err err = {{0}};
        config_from_preset(&cfg, c->preset, &err);
        cfg.n_kv_heads = c->kv;
        cfg.rope_style = (RopeStyle)c->rope;
        AnePlanSpec spec = {64, c->rank, c->rank ? 0x7fu : 0, c->dropout, c->int8, c->max_width};
        AneLayerPlan p;
        CHECK(ane_plan_make(&p, &cfg, &spec, &err) == 0, "%s: %s", c->name, err.msg);
        int S = p.S;
        uint16_t *in = calloc((size_t)p.in_C * p.in_S, sizeof *in);
        /* a value of the right kind in every region, as the doctor stages them */
        CHECK(ane_plan_random_inputs(&p, in, 77 + ci, &err) == 0, "%s", err.msg);
        for (int id = 0; id < ANE_KERNELS; id++) {
            AneKernel k;
            CHECK(ane_kernel_make(&p, (AneKernelId)id, &k, &err) == 0, "%s", err.msg);
            size_t out_n = (size_t)k.out.channels * S;
            float *dev_out = run_kernel(k.mil, k.blobs, k.n_blobs, in, (size_t)p.in_C * p.in_S, out_n, &err);
            CHECK(dev_out != NULL, "%s %s: %s", c->name, k.name, err.msg);
            float *ref = falloc(out_n);
            CHECK(ane_kernel_reference(&p, (AneKernelId)id, in, ref, &err) == 0, "%s", err.msg);
            const AneTap *taps = id ? p.bwd : p.fwd;
            int n_taps = id ? AB_COUNT : AF_COUNT;
            for (int t = 0; dev_out && t < n_taps; t++) {
                if (!taps[t].rows) continue;
                double e = tap_error(dev_out + (size_t)taps[t].off * S, S, ref + (size_t)taps[t].off * S, taps[t].rows, S);
                /* tap_error's reference is [rows][T]: here T = S, the same stride */
                if (e > worst) worst = e;
                if (verbose) printf("       %-50s %s tap %2d: %.2e\n", c->name, k.name, t, e);
                CHECK(e <= TOL, "%s %s tap %d: reference error %.3e exceeds %.1e", c->name, k.name, t, e, TOL);
            }
            free(dev_out);
            free(ref);
            ane_kernel_free(&k);
        }
        free(in);
    }
    printf("     worst error of the emulator against ane_kernel_reference: %.2e (limit %.1e)\n", worst, TOL);
}

int main(int argc, char **argv) {
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    parallel_init(2);
    AneEmuOptions o;
    ane_emu_default_options(&o);
    o.compile_budget = 1000;
    /* ANETRAIN_EMU_ACC16=1: the emulator's pessimistic fp16 accumulation (for measuring; the
    ** tolerance is for the default, fp32 accumulation) */
    const char *acc16 = getenv("ANETRAIN_EMU_ACC16");
    if (acc16 && acc16[0] == '1') o.accumulate_fp32 = 0;
    Err err = {{0}};
    dev = ane_emu_create(&o, &err);
    if (!dev) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(test_plan_layout);
    RUN(test_mil_dialect);
    RUN(test_kernels_all_variants);
    RUN(test_reference_matches_emulator);
    dev->destroy(dev);
    parallel_shutdown();
    return TEST_SUMMARY();
}
