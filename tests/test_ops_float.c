/*
** test_ops_float.c — the float ops (ops_*, what the program runs) against the double ops
** (ops64_*, which test_ops.c checks against finite differences), on the same inputs.
**
** Inputs are drawn as floats and widened, so both builds see exactly the same numbers; every
** output of every forward and backward must then agree within float rounding:
** |f - d| <= 1e-5 * (|d| + rms(d)), the rms term standing in for the magnitude of the terms
** that cancel in an element (a relative-only test would fail on legitimately near-zero sums).
*/
#include "ops/ops.h"

#include "test.h"
#include "util/rng.h"

/* The double build (ops.h with Real = double). ops.h can be included once per file since Real
** is one type per translation unit, so these are spelled out: keep them in step with ops.h. */
void ops64_embedding_forward(double *x, const int32_t *tokens, const double *emb, int T, int C);
void ops64_embedding_backward(double *demb, const double *dx, const int32_t *tokens, int T, int C);
void ops64_rmsnorm_forward(double *out, double *rstd, const double *x, const double *w, int C, int T, float eps);
void ops64_rmsnorm_backward(double *dx, double *dw, const double *dout, const double *x, const double *w,
                            const double *rstd, int C, int T);
void ops64_embedding_forward_ld(double *x, const int32_t *tokens, const double *emb, int T, int C, int ld);
void ops64_embedding_backward_ld(double *demb, const double *dx, const int32_t *tokens, int T, int C, int ld);
void ops64_rmsnorm_rstd(double *rstd, const double *x, int C, int T, int ld, float eps);
void ops64_rmsnorm_apply(double *out, const double *x, const double *rstd, const double *w, int C, int T, int ld);
void ops64_rmsnorm_backward_ld(double *dx, double *dw, const double *dout, const double *x, const double *w,
                               const double *rstd, int C, int T, int ld);
void ops64_rmsnorm_backward_xhat(double *dx, double *dw, const double *dout, const double *xhat, const double *w,
                                 const double *rstd, int C, int T, int ld);
void ops64_linear_forward(double *y, const double *x, const double *W, int O, int In, int T);
void ops64_linear_backward(double *dx, double *dW, const double *dy, const double *x, const double *W, int O, int In,
                           int T);
void ops64_linear_forward_tokens(double *yt, const double *x, const double *W, int O, int In, int T);
void ops64_linear_backward_tokens(double *dx, double *dW, const double *dyt, const double *x, const double *W, int O,
                                  int In, int T);
void ops64_rope_table(double *cos_tab, double *sin_tab, int T, int D, int pos0, double theta);
void ops64_rope_forward(double *x, const double *cos_tab, const double *sin_tab, int NH, int D, int T,
                        RopeStyle style);
void ops64_rope_backward(double *dx, const double *cos_tab, const double *sin_tab, int NH, int D, int T,
                         RopeStyle style);
void ops64_attention_forward(double *out, const double *q, const double *k, const double *v, int H, int KV, int D,
                             int T, int kv_begin, int kv_end, double *scratch);
void ops64_attention_backward(double *dq, double *dk, double *dv, const double *dout, const double *q,
                              const double *k, const double *v, int H, int KV, int D, int T, int kv_begin, int kv_end,
                              double *scratch);
void ops64_swiglu_forward(double *g, const double *h1, const double *h3, size_t n);
void ops64_swiglu_backward(double *dh1, double *dh3, const double *dg, const double *h1, const double *h3, size_t n);
void ops64_cross_entropy_forward(double *loss, double *probs, const double *logits, const int32_t *targets, int V,
                                 int n, int ld);
void ops64_cross_entropy_fused(double *loss, double *dlogits, const double *logits, const int32_t *targets,
                               const double *dloss, int V, int n, int ld);
void ops64_cross_entropy_backward(double *dlogits, const double *probs, const int32_t *targets, const double *dloss,
                                  int V, int n, int ld);
void ops64_cross_entropy_rows_forward(double *loss, const double *logits, const int32_t *targets, int V, int n);
void ops64_cross_entropy_rows_fused(double *loss, double *dlogits, const double *logits, const int32_t *targets,
                                    const double *dloss, int V, int n);

#define AGREE_RTOL 1e-5

static double worst_ratio; /* max over the run of |f - d| / (|d| + rms(d)), for the closing line */

/* ------------------------------------------------------------------ helpers */

/* One input or output in both precisions. */
typedef struct {
    float *f;
    double *d;
    size_t n;
} Pair;

static Pair pair(size_t n) {
    Pair p = {calloc(n ? n : 1, sizeof(float)), calloc(n ? n : 1, sizeof(double)), n};
    if (!p.f || !p.d) {
        fprintf(stderr, "out of memory (%zu elements)\n", n);
        exit(2);
    }
    return p;
}

/* Random floats, the same values in both precisions. */
static Pair random_pair(size_t n, double mean, double std, Rng *rng) {
    Pair p = pair(n);
    for (size_t i = 0; i < n; i++) {
        p.f[i] = (float)(mean + std * rng_normal(rng));
        p.d[i] = p.f[i];
    }
    return p;
}

static void pair_free(Pair *p) {
    free(p->f);
    free(p->d);
}

static void check_agree(const char *what, const Pair *p) {
    double ss = 0;
    for (size_t i = 0; i < p->n; i++) ss += p->d[i] * p->d[i];
    double rms = sqrt(ss / (double)p->n), worst = 0;
    size_t worst_i = 0;
    int bad = 0;
    for (size_t i = 0; i < p->n; i++) {
        double ratio = fabs((double)p->f[i] - p->d[i]) / (fabs(p->d[i]) + rms);
        if (!(ratio <= AGREE_RTOL)) bad++;
        if (!(ratio <= worst)) worst = ratio, worst_i = i;
    }
    if (worst > worst_ratio) worst_ratio = worst;
    CHECK(rms > 0, "%s: the double result is all zeros; the comparison says nothing", what);
    CHECK(bad == 0, "%s: %d of %zu elements disagree; worst element %zu: float %.9g, double %.15g (rms %.3g)", what,
          bad, p->n, worst_i, (double)p->f[worst_i], p->d[worst_i], rms);
}

/* ------------------------------------------------------------------ the ops */

static void test_embedding(void) {
    enum { V = 50, C = 64, T = 33 };
    Rng rng;
    rng_seed(&rng, 101);
    int32_t tokens[T];
    for (int t = 0; t < T; t++) tokens[t] = (int32_t)rng_below(&rng, V / 4); /* many repeats */
    Pair emb = random_pair(V * C, 0, 1, &rng), x = pair(C * T), dx = random_pair(C * T, 0, 1, &rng);
    Pair demb = pair(V * C);
    ops_embedding_forward(x.f, tokens, emb.f, T, C);
    ops64_embedding_forward(x.d, tokens, emb.d, T, C);
    check_agree("embedding forward", &x);
    ops_embedding_backward(demb.f, dx.f, tokens, T, C);
    ops64_embedding_backward(demb.d, dx.d, tokens, T, C);
    check_agree("embedding backward demb", &demb);
    pair_free(&emb), pair_free(&x), pair_free(&dx), pair_free(&demb);
}

static void rmsnorm_case(int C, int T, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    Pair x = random_pair((size_t)C * T, 0, 2, &rng), w = random_pair(C, 1, 0.3, &rng);
    Pair dout = random_pair((size_t)C * T, 0, 1, &rng), out = pair((size_t)C * T), rstd = pair(T);
    Pair dx = pair((size_t)C * T), dw = pair(C);
    char what[96];
    ops_rmsnorm_forward(out.f, rstd.f, x.f, w.f, C, T, 1e-5f);
    ops64_rmsnorm_forward(out.d, rstd.d, x.d, w.d, C, T, 1e-5f);
    snprintf(what, sizeof what, "rmsnorm C=%d T=%d forward out", C, T);
    check_agree(what, &out);
    snprintf(what, sizeof what, "rmsnorm C=%d T=%d forward rstd", C, T);
    check_agree(what, &rstd);
    /* each backward on its own precision's saved rstd, as in a real step */
    ops_rmsnorm_backward(dx.f, dw.f, dout.f, x.f, w.f, rstd.f, C, T);
    ops64_rmsnorm_backward(dx.d, dw.d, dout.d, x.d, w.d, rstd.d, C, T);
    snprintf(what, sizeof what, "rmsnorm C=%d T=%d backward dx", C, T);
    check_agree(what, &dx);
    snprintf(what, sizeof what, "rmsnorm C=%d T=%d backward dw", C, T);
    check_agree(what, &dw);
    pair_free(&x), pair_free(&w), pair_free(&dout), pair_free(&out), pair_free(&rstd), pair_free(&dx), pair_free(&dw);
}

static void test_rmsnorm(void) {
    rmsnorm_case(64, 33, 111);
    rmsnorm_case(16, 300, 112); /* past the 256-column chunk */
}

/* The strided forms (rows of stride ld > T; the padding columns hold garbage that must not
** matter): rstd + apply, the backward from x and from xhat = x * rstd (its own precision's). */
static void rmsnorm_ld_case(int C, int T, int ld, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t n = (size_t)C * ld;
    Pair x = random_pair(n, 0, 2, &rng), w = random_pair(C, 1, 0.3, &rng), dout = random_pair(n, 0, 1, &rng);
    Pair out = pair(n), rstd = pair(T), xhat = pair(n), dx = pair(n), dw = pair(C), dxh = pair(n), dwh = pair(C);
    char what[96];
    ops_rmsnorm_rstd(rstd.f, x.f, C, T, ld, 1e-5f);
    ops64_rmsnorm_rstd(rstd.d, x.d, C, T, ld, 1e-5f);
    ops_rmsnorm_apply(out.f, x.f, rstd.f, w.f, C, T, ld);
    ops64_rmsnorm_apply(out.d, x.d, rstd.d, w.d, C, T, ld);
    snprintf(what, sizeof what, "rmsnorm_ld C=%d T=%d ld=%d rstd", C, T, ld);
    check_agree(what, &rstd);
    snprintf(what, sizeof what, "rmsnorm_ld C=%d T=%d ld=%d apply out", C, T, ld);
    check_agree(what, &out);
    ops_rmsnorm_backward_ld(dx.f, dw.f, dout.f, x.f, w.f, rstd.f, C, T, ld);
    ops64_rmsnorm_backward_ld(dx.d, dw.d, dout.d, x.d, w.d, rstd.d, C, T, ld);
    snprintf(what, sizeof what, "rmsnorm_ld C=%d T=%d ld=%d backward dx", C, T, ld);
    check_agree(what, &dx);
    snprintf(what, sizeof what, "rmsnorm_ld C=%d T=%d ld=%d backward dw", C, T, ld);
    check_agree(what, &dw);
    for (int c = 0; c < C; c++)
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)c * ld + t;
            xhat.f[i] = x.f[i] * rstd.f[t];
            xhat.d[i] = x.d[i] * rstd.d[t];
        }
    ops_rmsnorm_backward_xhat(dxh.f, dwh.f, dout.f, xhat.f, w.f, rstd.f, C, T, ld);
    ops64_rmsnorm_backward_xhat(dxh.d, dwh.d, dout.d, xhat.d, w.d, rstd.d, C, T, ld);
    snprintf(what, sizeof what, "rmsnorm_xhat C=%d T=%d ld=%d backward dx", C, T, ld);
    check_agree(what, &dxh);
    snprintf(what, sizeof what, "rmsnorm_xhat C=%d T=%d ld=%d backward dw", C, T, ld);
    check_agree(what, &dwh);
    Pair *all[] = {&x, &w, &dout, &out, &rstd, &xhat, &dx, &dw, &dxh, &dwh};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

static void test_rmsnorm_ld(void) {
    rmsnorm_ld_case(64, 33, 64, 113);
    rmsnorm_ld_case(16, 300, 320, 114); /* past the 256-column chunk */
}

static void test_embedding_ld(void) {
    enum { V = 50, C = 64, T = 33, LD = 64 };
    Rng rng;
    rng_seed(&rng, 102);
    int32_t tokens[T];
    for (int t = 0; t < T; t++) tokens[t] = (int32_t)rng_below(&rng, V / 4);
    Pair emb = random_pair(V * C, 0, 1, &rng), x = pair(C * LD), dx = random_pair(C * LD, 0, 1, &rng);
    Pair demb = pair(V * C);
    ops_embedding_forward_ld(x.f, tokens, emb.f, T, C, LD);
    ops64_embedding_forward_ld(x.d, tokens, emb.d, T, C, LD);
    check_agree("embedding_ld forward", &x);
    ops_embedding_backward_ld(demb.f, dx.f, tokens, T, C, LD);
    ops64_embedding_backward_ld(demb.d, dx.d, tokens, T, C, LD);
    check_agree("embedding_ld backward demb", &demb);
    pair_free(&emb), pair_free(&x), pair_free(&dx), pair_free(&demb);
}

static void test_linear(void) {
    enum { O = 48, In = 64, T = 33 };
    Rng rng;
    rng_seed(&rng, 121);
    Pair x = random_pair(In * T, 0, 1, &rng), W = random_pair(O * In, 0, 0.125, &rng);
    Pair dy = random_pair(O * T, 0, 1, &rng), y = pair(O * T), dx = pair(In * T), dW = pair(O * In);
    ops_linear_forward(y.f, x.f, W.f, O, In, T);
    ops64_linear_forward(y.d, x.d, W.d, O, In, T);
    check_agree("linear forward", &y);
    ops_linear_backward(dx.f, dW.f, dy.f, x.f, W.f, O, In, T);
    ops64_linear_backward(dx.d, dW.d, dy.d, x.d, W.d, O, In, T);
    check_agree("linear backward dx", &dx);
    check_agree("linear backward dW", &dW);
    pair_free(&x), pair_free(&W), pair_free(&dy), pair_free(&y), pair_free(&dx), pair_free(&dW);
}

static void test_linear_tokens(void) {
    enum { O = 48, In = 64, T = 33 };
    Rng rng;
    rng_seed(&rng, 122);
    Pair x = random_pair(In * T, 0, 1, &rng), W = random_pair(O * In, 0, 0.125, &rng);
    Pair dyt = random_pair(T * O, 0, 1, &rng), yt = pair(T * O), dx = pair(In * T), dW = pair(O * In);
    ops_linear_forward_tokens(yt.f, x.f, W.f, O, In, T);
    ops64_linear_forward_tokens(yt.d, x.d, W.d, O, In, T);
    check_agree("linear tokens forward", &yt);
    ops_linear_backward_tokens(dx.f, dW.f, dyt.f, x.f, W.f, O, In, T);
    ops64_linear_backward_tokens(dx.d, dW.d, dyt.d, x.d, W.d, O, In, T);
    check_agree("linear tokens backward dx", &dx);
    check_agree("linear tokens backward dW", &dW);
    pair_free(&x), pair_free(&W), pair_free(&dyt), pair_free(&yt), pair_free(&dx), pair_free(&dW);
}

static void rope_case(RopeStyle style, int pos0, double theta, uint64_t seed) {
    enum { NH = 3, D = 16, T = 37 };
    Rng rng;
    rng_seed(&rng, seed);
    Pair cs = pair(T * D / 2), sn = pair(T * D / 2), x = random_pair(NH * D * T, 0, 1, &rng);
    Pair dx = random_pair(NH * D * T, 0, 1, &rng);
    char what[96];
    ops_rope_table(cs.f, sn.f, T, D, pos0, theta);
    ops64_rope_table(cs.d, sn.d, T, D, pos0, theta);
    snprintf(what, sizeof what, "rope %s pos0=%d table cos", config_rope_style_name(style), pos0);
    check_agree(what, &cs);
    snprintf(what, sizeof what, "rope %s pos0=%d table sin", config_rope_style_name(style), pos0);
    check_agree(what, &sn);
    ops_rope_forward(x.f, cs.f, sn.f, NH, D, T, style);
    ops64_rope_forward(x.d, cs.d, sn.d, NH, D, T, style);
    snprintf(what, sizeof what, "rope %s pos0=%d forward", config_rope_style_name(style), pos0);
    check_agree(what, &x);
    ops_rope_backward(dx.f, cs.f, sn.f, NH, D, T, style);
    ops64_rope_backward(dx.d, cs.d, sn.d, NH, D, T, style);
    snprintf(what, sizeof what, "rope %s pos0=%d backward", config_rope_style_name(style), pos0);
    check_agree(what, &dx);
    pair_free(&cs), pair_free(&sn), pair_free(&x), pair_free(&dx);
}

static void test_rope(void) {
    rope_case(ROPE_INTERLEAVED, 0, 10000.0, 131);
    rope_case(ROPE_HALF, 1000, 1e6, 132);
}

static void attention_case(int H, int KV, int D, int T, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nq = (size_t)H * D * T, nkv = (size_t)KV * D * T;
    Pair q = random_pair(nq, 0, 1, &rng), k = random_pair(nkv, 0, 1, &rng), v = random_pair(nkv, 0, 1, &rng);
    Pair dout = random_pair(nq, 0, 1, &rng), out = pair(nq), dq = pair(nq), dk = pair(nkv), dv = pair(nkv);
    Pair scratch = pair((size_t)2 * T * T);
    char what[96];
    ops_attention_forward(out.f, q.f, k.f, v.f, H, KV, D, T, 0, KV, scratch.f);
    ops64_attention_forward(out.d, q.d, k.d, v.d, H, KV, D, T, 0, KV, scratch.d);
    snprintf(what, sizeof what, "attention H=%d KV=%d D=%d T=%d forward", H, KV, D, T);
    check_agree(what, &out);
    ops_attention_backward(dq.f, dk.f, dv.f, dout.f, q.f, k.f, v.f, H, KV, D, T, 0, KV, scratch.f);
    ops64_attention_backward(dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d, H, KV, D, T, 0, KV, scratch.d);
    snprintf(what, sizeof what, "attention H=%d KV=%d D=%d T=%d dq", H, KV, D, T);
    check_agree(what, &dq);
    snprintf(what, sizeof what, "attention H=%d KV=%d D=%d T=%d dk", H, KV, D, T);
    check_agree(what, &dk);
    snprintf(what, sizeof what, "attention H=%d KV=%d D=%d T=%d dv", H, KV, D, T);
    check_agree(what, &dv);
    pair_free(&q), pair_free(&k), pair_free(&v), pair_free(&dout), pair_free(&out), pair_free(&dq), pair_free(&dk);
    pair_free(&dv), pair_free(&scratch);
}

static void test_attention(void) {
    attention_case(4, 4, 16, 37, 141);
    attention_case(4, 2, 16, 37, 142);
    attention_case(4, 2, 16, 200, 143); /* several query blocks */
}

static void test_swiglu(void) {
    enum { N = 1000 };
    Rng rng;
    rng_seed(&rng, 151);
    Pair h1 = random_pair(N, 0, 3, &rng), h3 = random_pair(N, 0, 1, &rng), dg = random_pair(N, 0, 1, &rng);
    Pair g = pair(N), dh1 = pair(N), dh3 = pair(N);
    ops_swiglu_forward(g.f, h1.f, h3.f, N);
    ops64_swiglu_forward(g.d, h1.d, h3.d, N);
    check_agree("swiglu forward", &g);
    ops_swiglu_backward(dh1.f, dh3.f, dg.f, h1.f, h3.f, N);
    ops64_swiglu_backward(dh1.d, dh3.d, dg.d, h1.d, h3.d, N);
    check_agree("swiglu backward dh1", &dh1);
    check_agree("swiglu backward dh3", &dh3);
    pair_free(&h1), pair_free(&h3), pair_free(&dg), pair_free(&g), pair_free(&dh1), pair_free(&dh3);
}

static void test_cross_entropy(void) {
    enum { V = 100, N = 70, LD = 75, COL0 = 3 };
    Rng rng;
    rng_seed(&rng, 161);
    Pair logits = random_pair(V * LD, 0, 3, &rng), dloss = random_pair(N, 0, 1, &rng);
    Pair loss = pair(N), probs = pair(V * LD), dlogits = pair(V * LD);
    int32_t targets[N];
    for (int t = 0; t < N; t++) targets[t] = (int32_t)rng_below(&rng, V);
    ops_cross_entropy_forward(loss.f, probs.f + COL0, logits.f + COL0, targets, V, N, LD);
    ops64_cross_entropy_forward(loss.d, probs.d + COL0, logits.d + COL0, targets, V, N, LD);
    check_agree("cross-entropy forward loss", &loss);
    check_agree("cross-entropy forward probs", &probs);
    ops_cross_entropy_backward(dlogits.f + COL0, probs.f + COL0, targets, dloss.f, V, N, LD);
    ops64_cross_entropy_backward(dlogits.d + COL0, probs.d + COL0, targets, dloss.d, V, N, LD);
    check_agree("cross-entropy backward dlogits", &dlogits);
    Pair fused_loss = pair(N), fused = pair(V * LD);
    ops_cross_entropy_fused(fused_loss.f, fused.f + COL0, logits.f + COL0, targets, dloss.f, V, N, LD);
    ops64_cross_entropy_fused(fused_loss.d, fused.d + COL0, logits.d + COL0, targets, dloss.d, V, N, LD);
    check_agree("cross-entropy fused loss", &fused_loss);
    check_agree("cross-entropy fused dlogits", &fused);
    pair_free(&fused_loss), pair_free(&fused);
    pair_free(&logits), pair_free(&dloss), pair_free(&loss), pair_free(&probs), pair_free(&dlogits);
}

static void test_cross_entropy_rows(void) {
    enum { V = 1000, N = 9 }; /* V not a multiple of the 16-lane blocks: the tail runs too */
    Rng rng;
    rng_seed(&rng, 162);
    Pair logits = random_pair(N * V, 0, 3, &rng), dloss = random_pair(N, 0, 1, &rng);
    Pair loss = pair(N), fused_loss = pair(N), dlogits = pair(N * V);
    int32_t targets[N];
    for (int t = 0; t < N; t++) targets[t] = (int32_t)rng_below(&rng, V);
    ops_cross_entropy_rows_forward(loss.f, logits.f, targets, V, N);
    ops64_cross_entropy_rows_forward(loss.d, logits.d, targets, V, N);
    check_agree("cross-entropy rows forward loss", &loss);
    ops_cross_entropy_rows_fused(fused_loss.f, dlogits.f, logits.f, targets, dloss.f, V, N);
    ops64_cross_entropy_rows_fused(fused_loss.d, dlogits.d, logits.d, targets, dloss.d, V, N);
    check_agree("cross-entropy rows fused loss", &fused_loss);
    check_agree("cross-entropy rows fused dlogits", &dlogits);
    pair_free(&logits), pair_free(&dloss), pair_free(&loss), pair_free(&fused_loss), pair_free(&dlogits);
}

/* Ignored positions (targets < 0, PyTorch's ignore_index): loss 0 and no gradient, in all five
** functions, whatever dloss; every other position exactly as with a real target there. */
static void test_cross_entropy_ignored(void) {
    enum { V = 37, N = 70, LD = 73 };
    Rng rng;
    rng_seed(&rng, 163);
    float *logits = malloc(sizeof(float) * V * LD), *probs = malloc(sizeof(float) * V * LD);
    float *d_all = malloc(sizeof(float) * V * LD), *d_ign = malloc(sizeof(float) * V * LD);
    float *p_ign = malloc(sizeof(float) * V * LD);
    float loss_all[N], loss_ign[N], dloss[N];
    int32_t t_all[N], t_ign[N];
    for (int i = 0; i < V * LD; i++) logits[i] = 3.0f * (float)rng_normal(&rng);
    for (int t = 0; t < N; t++) {
        t_all[t] = (int32_t)rng_below(&rng, V);
        t_ign[t] = t % 3 == 1 || t > 60 ? -1 : t_all[t];
        dloss[t] = 0.5f + (float)t;
    }
    for (int form = 0; form < 5; form++) {
        int rows = form >= 3; /* rows: [N][V] token-major */
        memcpy(d_all, logits, sizeof(float) * V * LD);
        memcpy(d_ign, logits, sizeof(float) * V * LD);
        if (form == 0) {
            ops_cross_entropy_forward(loss_all, d_all, logits, t_all, V, N, LD);
            ops_cross_entropy_forward(loss_ign, d_ign, logits, t_ign, V, N, LD);
        } else if (form == 1) {
            ops_cross_entropy_forward(loss_all, probs, logits, t_all, V, N, LD);
            memcpy(p_ign, probs, sizeof(float) * V * LD);
            ops_cross_entropy_backward(d_all, probs, t_all, dloss, V, N, LD);
            ops_cross_entropy_backward(d_ign, p_ign, t_ign, dloss, V, N, LD);
            ops_cross_entropy_forward(loss_ign, p_ign, logits, t_ign, V, N, LD);
        } else if (form == 2) {
            ops_cross_entropy_fused(loss_all, d_all, logits, t_all, dloss, V, N, LD);
            ops_cross_entropy_fused(loss_ign, d_ign, logits, t_ign, dloss, V, N, LD);
        } else if (form == 3) {
            ops_cross_entropy_rows_forward(loss_all, logits, t_all, V, N);
            ops_cross_entropy_rows_forward(loss_ign, logits, t_ign, V, N);
        } else {
            ops_cross_entropy_rows_fused(loss_all, d_all, logits, t_all, dloss, V, N);
            ops_cross_entropy_rows_fused(loss_ign, d_ign, logits, t_ign, dloss, V, N);
        }
        int grads = form == 1 || form == 2 || form == 4;
        int bad_loss = 0, bad_grad = 0;
        for (int t = 0; t < N; t++) {
            if (t_ign[t] < 0) bad_loss += loss_ign[t] != 0.0f;
            else bad_loss += memcmp(&loss_ign[t], &loss_all[t], sizeof(float)) != 0;
            if (!grads) continue;
            for (int v = 0; v < V; v++) {
                size_t i = rows ? (size_t)t * V + v : (size_t)v * LD + t;
                if (t_ign[t] < 0) bad_grad += d_ign[i] != 0.0f;
                else bad_grad += memcmp(&d_ign[i], &d_all[i], sizeof(float)) != 0;
            }
        }
        CHECK(bad_loss == 0, "form %d: %d losses wrong", form, bad_loss);
        CHECK(bad_grad == 0, "form %d: %d dlogits wrong", form, bad_grad);
    }
    free(logits), free(probs), free(d_all), free(d_ign), free(p_ign);
}

int main(void) {
    RUN(test_embedding);
    RUN(test_embedding_ld);
    RUN(test_rmsnorm);
    RUN(test_rmsnorm_ld);
    RUN(test_linear);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_swiglu);
    RUN(test_cross_entropy);
    RUN(test_linear_tokens);
    RUN(test_cross_entropy_rows);
    RUN(test_cross_entropy_ignored);
    printf("worst float/double disagreement: %.3g of (|d| + rms) (limit %g)\n", worst_ratio, AGREE_RTOL);
    return TEST_SUMMARY();
}
