/*
** test_ops.c — every backward in ops.h against finite differences of its own forward, in double.
**
** For an op y = f(x) and a random projection R of its output, L = sum(R * y) has the gradient
** backward(dout = R). Central differences of L must agree with it to a relative error below
** 1e-6, element by element: every element for small shapes, a random subset for larger ones.
** The ops run in double here (ops64_*, built from the same source with OPS_DOUBLE); the
** differences are fourth-order with h = 2^-13, whose error (~1e-12) leaves that tolerance
** meaningful even for gradient elements of 1e-5 (see fd_check).
**
** Besides the gradients: each forward against a direct formula (finite differences only prove
** that the backward matches the forward, not that the forward is right), the += convention of
** ops.h on buffers holding known nonzero values, the "writes" ops (rope, cross-entropy), the
** kv sub-range of attention, the ld > n slicing of cross-entropy, and the strided (ld > T) forms
** of the embedding and RMSNorm against their compact forms, bit for bit, padding untouched.
** Float vs double agreement is in test_ops_float.c (ops.h is included once per file).
*/
#define OPS_DOUBLE
#include "ops/ops.h"

#include "test.h"
#include "util/rng.h"

#define FD_H 0x1p-13  /* finite-difference step, ~1.2e-4: x +- h, x +- 2h are exact in double */
#define FD_RTOL 1e-6  /* per-element |a - n| / max(1e-8, |a| + |n|) */
#define FD_ALL 400    /* inputs up to this many elements are checked element by element... */
#define FD_SAMPLES 64 /* ...larger ones at this many distinct random elements */

static double worst_fd_rel; /* over the whole run, for the closing line */

/* ------------------------------------------------------------------ helpers */

static double *alloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof *p);
    if (!p) {
        fprintf(stderr, "out of memory (%zu doubles)\n", n);
        exit(2);
    }
    return p;
}

static double *dup(const double *x, size_t n) {
    double *p = alloc(n);
    memcpy(p, x, n * sizeof *p);
    return p;
}

/* x[i] = mean + std * N(0,1) */
static void fill(double *x, size_t n, double mean, double std, Rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = mean + std * rng_normal(rng);
}

/* An op's forward as the finite differences see it: forward(ctx) recomputes y[0..ny) from the
** inputs it reads, and L = sum(R * y). */
typedef struct {
    void (*forward)(void *ctx);
    void *ctx;
    const double *y, *R;
    size_t ny;
} Fd;

/* L(x) - L(x0) = sum R * (y - y0), compensated (Neumaier). Differencing against the unperturbed
** output y0 first means only the outputs an element actually moves carry rounding noise, instead
** of the rounding of the whole sum L (eps * |L| / h, which would swamp small gradients). */
static double fd_delta(const Fd *f, const double *y0) {
    f->forward(f->ctx);
    double s = 0, c = 0;
    for (size_t i = 0; i < f->ny; i++) {
        double term = f->R[i] * (f->y[i] - y0[i]), t = s + term;
        c += fabs(s) >= fabs(term) ? (s - t) + term : (term - t) + s;
        s = t;
    }
    return s + c;
}

/* Compares grad (analytic, n elements) with finite differences of L in x (which f reads).
** Fourth-order central differences, (8(L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / 12h: with
** h = 2^-13 the truncation error (~h^4) and the rounding (~eps/h) both stay near 1e-12, so
** the 1e-6 relative tolerance holds down to gradients of ~1e-5, where plain central differences
** with h = 1e-6 (rounding ~1e-10) fail on legitimately small elements.
** nonzero: also require that the check is not vacuous (a quarter of the finite differences
** above 1e-3); without it every checked element must have finite difference exactly 0. */
static void fd_check(const char *what, const Fd *f, double *x, size_t n, const double *grad, int nonzero, Rng *rng) {
    size_t count = n <= FD_ALL ? n : FD_SAMPLES;
    size_t *idx = malloc(n * sizeof *idx);
    f->forward(f->ctx);
    double *y0 = malloc(f->ny * sizeof *y0);
    if (!idx || !y0) exit(2);
    memcpy(y0, f->y, f->ny * sizeof *y0);
    for (size_t i = 0; i < n; i++) idx[i] = i;
    if (count < n) /* partial Fisher-Yates: count distinct random elements */
        for (size_t s = 0; s < count; s++) {
            size_t j = s + (size_t)rng_below(rng, n - s), tmp = idx[s];
            idx[s] = idx[j];
            idx[j] = tmp;
        }
    int bad = 0, significant = 0, nonzero_fd = 0;
    double worst = 0;
    for (size_t s = 0; s < count; s++) {
        size_t i = idx[s];
        double xi = x[i], L[4];
        const double step[4] = {FD_H, -FD_H, 2 * FD_H, -2 * FD_H};
        for (int k = 0; k < 4; k++) {
            x[i] = xi + step[k];
            L[k] = fd_delta(f, y0);
        }
        x[i] = xi;
        double num = (8 * (L[0] - L[1]) - (L[2] - L[3])) / (12 * FD_H), a = grad[i];
        double rel = fabs(a - num) / fmax(1e-8, fabs(a) + fabs(num));
        if (!(rel < FD_RTOL)) {
            if (bad < 5)
                fprintf(stderr, "    %s: element %zu: analytic %.12g, finite difference %.12g, rel %.3g\n", what, i, a,
                        num, rel);
            bad++;
        }
        significant += fabs(num) > 1e-3;
        nonzero_fd += num != 0;
        if (rel > worst) worst = rel;
    }
    f->forward(f->ctx); /* leave outputs and saved state as at the unperturbed inputs */
    free(idx);
    free(y0);
    if (worst > worst_fd_rel) worst_fd_rel = worst;
    CHECK(bad == 0, "%s: %d of %zu elements off (worst rel %.3g)", what, bad, count, worst);
    if (nonzero) /* a check over gradients that are all ~0 would pass whatever the backward did */
        CHECK(4 * significant >= (int)count, "%s: only %d of %zu gradients are above 1e-3; the check says nothing",
              what, significant, count);
    else
        CHECK(nonzero_fd == 0, "%s: expected no dependence, found %d nonzero finite differences", what, nonzero_fd);
}

/* ops.h's += convention: a backward into buffers holding `init` must give init + (the same
** backward into zeros). */
static void check_accumulated(const char *what, const double *got, const double *init, const double *grad, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double want = init[i] + grad[i];
        if (!(fabs(got[i] - want) <= 1e-12 * (fabs(init[i]) + fabs(grad[i]) + 1))) {
            if (bad < 5)
                fprintf(stderr, "    %s: element %zu: started at %.12g, gradient %.12g, found %.12g\n", what, i, init[i],
                        grad[i], got[i]);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %d of %zu elements are not initial value + gradient", what, bad, n);
}

/* Elementwise |got - want| <= tol * (|want| + 1). */
static void check_near(const char *what, const double *got, const double *want, size_t n, double tol) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(fabs(got[i] - want[i]) <= tol * (fabs(want[i]) + 1))) {
            if (bad < 5) fprintf(stderr, "    %s: element %zu: expected %.15g, found %.15g\n", what, i, want[i], got[i]);
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %d of %zu elements differ by more than %g", what, bad, n, tol);
}

/* Every element exactly equal to `value` (a sentinel an op must not touch). */
static void check_untouched(const char *what, const double *x, size_t n, double value) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += x[i] != value;
    CHECK(bad == 0, "%s: %d of %zu elements changed (expected all still %g)", what, bad, n, value);
}

static void set_all(double *x, size_t n, double value) {
    for (size_t i = 0; i < n; i++) x[i] = value;
}

/* ------------------------------------------------------------------ embedding */

typedef struct {
    double *x, *emb, *R;
    const int32_t *tokens;
    int T, C;
} EmbCtx;

static void emb_forward(void *p) {
    EmbCtx *c = p;
    ops64_embedding_forward(c->x, c->tokens, c->emb, c->T, c->C);
}

static void test_embedding(void) {
    enum { V = 6, C = 5, T = 9 };
    const int32_t tokens[T] = {3, 0, 3, 4, 1, 1, 2, 3, 0}; /* repeats; row 5 unused */
    Rng rng;
    rng_seed(&rng, 11);
    double *emb = alloc(V * C), *x = alloc(C * T), *R = alloc(C * T), *demb = alloc(V * C);
    fill(emb, V * C, 0, 1, &rng);
    fill(R, C * T, 0, 1, &rng);

    ops64_embedding_forward(x, tokens, emb, T, C);
    int bad = 0;
    for (int c = 0; c < C; c++)
        for (int t = 0; t < T; t++) bad += x[c * T + t] != emb[tokens[t] * C + c];
    CHECK(bad == 0, "embedding forward: %d of %d elements are not emb[tokens[t]][c]", bad, C * T);

    ops64_embedding_backward(demb, R, tokens, T, C);
    EmbCtx ctx = {x, emb, R, tokens, T, C};
    Fd fd = {emb_forward, &ctx, x, R, C * T};
    fd_check("embedding demb", &fd, emb, V * C, demb, 1, &rng);
    check_untouched("embedding demb row 5 (no token)", demb + 5 * C, C, 0);

    double *init = alloc(V * C), *acc;
    fill(init, V * C, 0, 3, &rng);
    acc = dup(init, V * C);
    ops64_embedding_backward(acc, R, tokens, T, C);
    check_accumulated("embedding demb +=", acc, init, demb, V * C);
    free(emb), free(x), free(R), free(demb), free(init), free(acc);
}

/* The strided form: x, dx [C][ld] with ld > T, columns T..ld-1 never touched. */
typedef struct {
    double *x, *emb;
    const int32_t *tokens;
    int T, C, ld;
} EmbLdCtx;

static void emb_forward_ld(void *p) {
    EmbLdCtx *c = p;
    ops64_embedding_forward_ld(c->x, c->tokens, c->emb, c->T, c->C, c->ld);
}

static void test_embedding_ld(void) {
    enum { V = 6, C = 5, T = 9, LD = 13 };
    const int32_t tokens[T] = {3, 0, 3, 4, 1, 1, 2, 3, 0};
    Rng rng;
    rng_seed(&rng, 12);
    double *emb = alloc(V * C), *x = alloc(C * LD), *R = alloc(C * LD), *demb = alloc(V * C);
    double *want = alloc(V * C), *compact = alloc(C * T);
    fill(emb, V * C, 0, 1, &rng);
    fill(R, C * LD, 0, 1, &rng);
    set_all(x, C * LD, 7);
    ops64_embedding_forward_ld(x, tokens, emb, T, C, LD);
    int bad = 0, touched = 0;
    for (int c = 0; c < C; c++) {
        for (int t = 0; t < T; t++) bad += x[c * LD + t] != emb[tokens[t] * C + c];
        for (int t = T; t < LD; t++) touched += x[c * LD + t] != 7;
    }
    CHECK(bad == 0, "embedding_ld forward: %d of %d elements are not emb[tokens[t]][c]", bad, C * T);
    CHECK(touched == 0, "embedding_ld forward: %d padding elements written", touched);

    /* R's padding columns are garbage the backward must not read: against the compact R */
    for (int c = 0; c < C; c++)
        for (int t = 0; t < T; t++) compact[c * T + t] = R[c * LD + t];
    ops64_embedding_backward_ld(demb, R, tokens, T, C, LD);
    ops64_embedding_backward(want, compact, tokens, T, C);
    check_near("embedding_ld demb vs the compact form", demb, want, V * C, 0);
    for (int c = 0; c < C; c++) /* the forward's padding holds no outputs: no weight in L */
        for (int t = T; t < LD; t++) R[c * LD + t] = 0;
    EmbLdCtx ctx = {x, emb, tokens, T, C, LD};
    Fd fd = {emb_forward_ld, &ctx, x, R, C * LD};
    fd_check("embedding_ld demb", &fd, emb, V * C, demb, 1, &rng);
    free(emb), free(x), free(R), free(demb), free(want), free(compact);
}

/* ------------------------------------------------------------------ RMSNorm */

/* NH blocks of [C][T] normalized separately with one shared weight: NH = 1 is the plain layer,
** NH > 1 with C = D is Qwen3's per-head q_norm/k_norm on a [NH*D][T] tensor. */
typedef struct {
    double *out, *rstd, *x, *w, *R;
    int NH, C, T;
    float eps;
} NormCtx;

static void norm_forward(void *p) {
    NormCtx *c = p;
    size_t blk = (size_t)c->C * c->T;
    for (int h = 0; h < c->NH; h++)
        ops64_rmsnorm_forward(c->out + h * blk, c->rstd + (size_t)h * c->T, c->x + h * blk, c->w, c->C, c->T, c->eps);
}

static void norm_backward(NormCtx *c, double *dx, double *dw) {
    size_t blk = (size_t)c->C * c->T;
    for (int h = 0; h < c->NH; h++)
        ops64_rmsnorm_backward(dx + h * blk, dw, c->R + h * blk, c->x + h * blk, c->w, c->rstd + (size_t)h * c->T, c->C,
                               c->T);
}

static void rmsnorm_case(const char *name, int NH, int C, int T, double x_std, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t n = (size_t)NH * C * T;
    double *x = alloc(n), *out = alloc(n), *R = alloc(n), *rstd = alloc((size_t)NH * T), *w = alloc(C);
    fill(x, n, 0, x_std, &rng);
    fill(w, C, 1, 0.3, &rng);
    fill(R, n, 0, 1, &rng);
    NormCtx ctx = {out, rstd, x, w, R, NH, C, T, 1e-5f};
    char what[160];

    /* forward: out = x * w / sqrt(mean_c x^2 + eps), per block and column */
    norm_forward(&ctx);
    double *want = alloc(n), *want_rstd = alloc((size_t)NH * T);
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < T; t++) {
            double ss = 0;
            for (int c = 0; c < C; c++) ss += x[((size_t)h * C + c) * T + t] * x[((size_t)h * C + c) * T + t];
            double r = 1 / sqrt(ss / C + (double)1e-5f);
            want_rstd[(size_t)h * T + t] = r;
            for (int c = 0; c < C; c++)
                want[((size_t)h * C + c) * T + t] = x[((size_t)h * C + c) * T + t] * r * w[c];
        }
    snprintf(what, sizeof what, "rmsnorm %s forward out", name);
    check_near(what, out, want, n, 1e-13);
    snprintf(what, sizeof what, "rmsnorm %s forward rstd", name);
    check_near(what, rstd, want_rstd, (size_t)NH * T, 1e-13);

    double *dx = alloc(n), *dw = alloc(C);
    norm_backward(&ctx, dx, dw);
    snprintf(what, sizeof what, "rmsnorm %s dx", name);
    Fd fd = {norm_forward, &ctx, out, R, n};
    fd_check(what, &fd, x, n, dx, 1, &rng);
    snprintf(what, sizeof what, "rmsnorm %s dw", name);
    fd_check(what, &fd, w, C, dw, 1, &rng);

    double *init_x = alloc(n), *init_w = alloc(C);
    fill(init_x, n, 0, 3, &rng);
    fill(init_w, C, 0, 3, &rng);
    double *acc_x = dup(init_x, n), *acc_w = dup(init_w, C);
    norm_backward(&ctx, acc_x, acc_w);
    snprintf(what, sizeof what, "rmsnorm %s dx +=", name);
    check_accumulated(what, acc_x, init_x, dx, n);
    snprintf(what, sizeof what, "rmsnorm %s dw +=", name);
    check_accumulated(what, acc_w, init_w, dw, C);
    free(x), free(out), free(R), free(rstd), free(w), free(want), free(want_rstd), free(dx), free(dw);
    free(init_x), free(init_w), free(acc_x), free(acc_w);
}

static void test_rmsnorm(void) {
    rmsnorm_case("C=6 T=5", 1, 6, 5, 1.0, 21);
    rmsnorm_case("near eps (x ~ 3e-3)", 1, 5, 4, 3e-3, 22);
    rmsnorm_case("per head D=4 x 3 heads T=7", 3, 4, 7, 1.0, 23);
    rmsnorm_case("T=300 (past the 256-column chunk)", 1, 3, 300, 1.0, 24);
}

/* The strided forms, as the ANE backend uses them: NH blocks of [C][ld] (ld > T, columns
** T..ld-1 hold garbage that nothing may read or write), forward as rstd + apply, backward
** from x (rmsnorm_backward_ld) and from xhat = x * rstd (rmsnorm_backward_xhat), each also
** with dx or dw alone. */
typedef struct {
    double *out, *rstd, *x, *w;
    int NH, C, T, ld;
    float eps;
} NormLdCtx;

static void norm_forward_ld(void *p) {
    NormLdCtx *c = p;
    size_t blk = (size_t)c->C * c->ld;
    for (int h = 0; h < c->NH; h++) {
        ops64_rmsnorm_rstd(c->rstd + (size_t)h * c->T, c->x + h * blk, c->C, c->T, c->ld, c->eps);
        ops64_rmsnorm_apply(c->out + h * blk, c->x + h * blk, c->rstd + (size_t)h * c->T, c->w, c->C, c->T, c->ld);
    }
}

/* form 0: from x; 1: from xhat (computed here from x and the saved rstd). */
static void norm_backward_ld(NormLdCtx *c, int form, double *dx, double *dw, const double *R, double *xhat) {
    size_t blk = (size_t)c->C * c->ld;
    for (int h = 0; h < c->NH; h++) {
        const double *r = c->rstd + (size_t)h * c->T;
        if (form == 0) {
            ops64_rmsnorm_backward_ld(dx ? dx + h * blk : NULL, dw, R + h * blk, c->x + h * blk, c->w, r, c->C, c->T,
                                      c->ld);
            continue;
        }
        for (int ch = 0; ch < c->C; ch++)
            for (int t = 0; t < c->T; t++) xhat[h * blk + (size_t)ch * c->ld + t] = c->x[h * blk + (size_t)ch * c->ld + t] * r[t];
        ops64_rmsnorm_backward_xhat(dx ? dx + h * blk : NULL, dw, R + h * blk, xhat + h * blk, dx ? c->w : NULL,
                                    dx ? r : NULL, c->C, c->T, c->ld);
    }
}

static void rmsnorm_ld_case(const char *name, int NH, int C, int T, int ld, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t n = (size_t)NH * C * ld, nc = (size_t)NH * C * T;
    double *x = alloc(n), *out = alloc(n), *R = alloc(n), *rstd = alloc((size_t)NH * T), *w = alloc(C);
    double *xhat = alloc(n);
    fill(x, n, 0, 1, &rng);
    fill(w, C, 1, 0.3, &rng);
    fill(R, n, 0, 1, &rng);
    set_all(out, n, 7);
    NormLdCtx ctx = {out, rstd, x, w, NH, C, T, ld, 1e-5f};
    char what[160];

    /* the compact copy through the unstrided ops: the same numbers bit for bit */
    double *cx = alloc(nc), *cR = alloc(nc), *cout = alloc(nc), *crstd = alloc((size_t)NH * T);
    for (size_t hc = 0; hc < (size_t)NH * C; hc++)
        for (int t = 0; t < T; t++) {
            cx[hc * T + t] = x[hc * ld + t];
            cR[hc * T + t] = R[hc * ld + t];
        }
    NormCtx cctx = {cout, crstd, cx, w, cR, NH, C, T, 1e-5f};
    norm_forward(&cctx);
    norm_forward_ld(&ctx);
    double *got = alloc(nc);
    int touched = 0;
    for (size_t hc = 0; hc < (size_t)NH * C; hc++) {
        for (int t = 0; t < T; t++) got[hc * T + t] = out[hc * ld + t];
        for (int t = T; t < ld; t++) touched += out[hc * ld + t] != 7;
    }
    snprintf(what, sizeof what, "rmsnorm_ld %s forward vs the compact form", name);
    check_near(what, got, cout, nc, 0);
    snprintf(what, sizeof what, "rmsnorm_ld %s rstd vs the compact form", name);
    check_near(what, rstd, crstd, (size_t)NH * T, 0);
    CHECK(touched == 0, "rmsnorm_ld %s forward: %d padding elements written", name, touched);

    double *cdx = alloc(nc), *cdw = alloc(C), *dx = alloc(n), *dw = alloc(C);
    norm_backward(&cctx, cdx, cdw);
    for (int form = 0; form < 2; form++) {
        const char *fname = form ? "xhat" : "x";
        set_all(dx, n, 0);
        set_all(dw, C, 0);
        for (size_t hc = 0; hc < (size_t)NH * C; hc++)
            for (int t = T; t < ld; t++) dx[hc * ld + t] = 7;
        norm_backward_ld(&ctx, form, dx, dw, R, xhat);
        touched = 0;
        for (size_t hc = 0; hc < (size_t)NH * C; hc++) {
            for (int t = 0; t < T; t++) got[hc * T + t] = dx[hc * ld + t];
            for (int t = T; t < ld; t++) touched += dx[hc * ld + t] != 7;
        }
        CHECK(touched == 0, "rmsnorm_ld %s backward (%s): %d padding elements of dx written", name, fname, touched);
        /* from x: the compact form's arithmetic exactly; from xhat: the same up to rounding */
        snprintf(what, sizeof what, "rmsnorm_ld %s dx (%s) vs the compact form", name, fname);
        check_near(what, got, cdx, nc, form ? 1e-13 : 0);
        snprintf(what, sizeof what, "rmsnorm_ld %s dw (%s) vs the compact form", name, fname);
        check_near(what, dw, cdw, C, form ? 1e-13 : 0);
        /* dx alone and dw alone: the same numbers as together */
        double *dx1 = alloc(n), *dw1 = alloc(C);
        for (size_t hc = 0; hc < (size_t)NH * C; hc++)
            for (int t = T; t < ld; t++) dx1[hc * ld + t] = 7;
        norm_backward_ld(&ctx, form, dx1, NULL, R, xhat);
        norm_backward_ld(&ctx, form, NULL, dw1, R, xhat);
        snprintf(what, sizeof what, "rmsnorm_ld %s dx alone (%s)", name, fname);
        check_near(what, dx1, dx, n, 0);
        snprintf(what, sizeof what, "rmsnorm_ld %s dw alone (%s)", name, fname);
        check_near(what, dw1, dw, C, 0);
        free(dx1), free(dw1);

        /* finite differences of the strided forward (padding outputs weigh nothing) */
        double *Rz = dup(R, n);
        for (size_t hc = 0; hc < (size_t)NH * C; hc++)
            for (int t = T; t < ld; t++) Rz[hc * ld + t] = 0;
        set_all(dx, n, 0);
        set_all(dw, C, 0);
        norm_backward_ld(&ctx, form, dx, dw, Rz, xhat);
        Fd fd = {norm_forward_ld, &ctx, out, Rz, n};
        snprintf(what, sizeof what, "rmsnorm_ld %s dx (%s)", name, fname);
        fd_check(what, &fd, x, n, dx, 1, &rng);
        snprintf(what, sizeof what, "rmsnorm_ld %s dw (%s)", name, fname);
        fd_check(what, &fd, w, C, dw, 1, &rng);
        free(Rz);
    }
    free(x), free(out), free(R), free(rstd), free(w), free(xhat), free(cx), free(cR), free(cout), free(crstd);
    free(got), free(cdx), free(cdw), free(dx), free(dw);
}

static void test_rmsnorm_ld(void) {
    rmsnorm_ld_case("C=6 T=5 ld=8", 1, 6, 5, 8, 25);
    rmsnorm_ld_case("per head D=4 x 3 heads T=7 ld=11", 3, 4, 7, 11, 26);
    rmsnorm_ld_case("C=3 T=300 ld=320 (past the 256-column chunk)", 1, 3, 300, 320, 27);
}

/* ------------------------------------------------------------------ linear */

typedef struct {
    double *y, *x, *W, *R;
    int O, In, T;
} LinCtx;

static void lin_forward(void *p) {
    LinCtx *c = p;
    ops64_linear_forward(c->y, c->x, c->W, c->O, c->In, c->T);
}

static void linear_case(int O, int In, int T, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nx = (size_t)In * T, ny = (size_t)O * T, nw = (size_t)O * In;
    double *x = alloc(nx), *W = alloc(nw), *y = alloc(ny), *R = alloc(ny);
    fill(x, nx, 0, 1, &rng);
    fill(W, nw, 0, 1, &rng);
    fill(R, ny, 0, 1, &rng);
    LinCtx ctx = {y, x, W, R, O, In, T};
    char what[160];

    ops64_linear_forward(y, x, W, O, In, T);
    double *want = alloc(ny);
    for (int o = 0; o < O; o++)
        for (int t = 0; t < T; t++) {
            double s = 0;
            for (int i = 0; i < In; i++) s += W[(size_t)o * In + i] * x[(size_t)i * T + t];
            want[(size_t)o * T + t] = s;
        }
    snprintf(what, sizeof what, "linear %dx%d T=%d forward", O, In, T);
    check_near(what, y, want, ny, 1e-13);

    double *dx = alloc(nx), *dW = alloc(nw);
    ops64_linear_backward(dx, dW, R, x, W, O, In, T);
    snprintf(what, sizeof what, "linear %dx%d T=%d dx", O, In, T);
    Fd fd = {lin_forward, &ctx, y, R, ny};
    fd_check(what, &fd, x, nx, dx, 1, &rng);
    snprintf(what, sizeof what, "linear %dx%d T=%d dW", O, In, T);
    fd_check(what, &fd, W, nw, dW, 1, &rng);

    double *init_x = alloc(nx), *init_w = alloc(nw);
    fill(init_x, nx, 0, 3, &rng);
    fill(init_w, nw, 0, 3, &rng);
    double *acc_x = dup(init_x, nx), *acc_w = dup(init_w, nw);
    ops64_linear_backward(acc_x, acc_w, R, x, W, O, In, T);
    snprintf(what, sizeof what, "linear %dx%d T=%d dx +=", O, In, T);
    check_accumulated(what, acc_x, init_x, dx, nx);
    snprintf(what, sizeof what, "linear %dx%d T=%d dW +=", O, In, T);
    check_accumulated(what, acc_w, init_w, dW, nw);

    /* Either gradient may be NULL; the other is the same as when both are asked for. */
    double *only_x = alloc(nx), *only_w = alloc(nw);
    ops64_linear_backward(only_x, NULL, R, x, W, O, In, T);
    ops64_linear_backward(NULL, only_w, R, x, W, O, In, T);
    snprintf(what, sizeof what, "linear %dx%d T=%d dx with dW NULL", O, In, T);
    check_near(what, only_x, dx, nx, 1e-14);
    snprintf(what, sizeof what, "linear %dx%d T=%d dW with dx NULL", O, In, T);
    check_near(what, only_w, dW, nw, 1e-14);
    free(x), free(W), free(y), free(R), free(want), free(dx), free(dW), free(init_x), free(init_w), free(acc_x);
    free(acc_w), free(only_x), free(only_w);
}

static void test_linear(void) {
    linear_case(5, 7, 3, 31);
    linear_case(3, 4, 1, 32);
    linear_case(40, 33, 17, 33); /* sampled */
}

/* ------------------------------------------------------------------ LoRA adapter path */

typedef struct {
    double *y, *u, *xd, *A, *B;
    const double *y_base;
    double s;
    int O, r, In, T;
} LoraCtx;

/* y = y_base + s B (A xd): the op accumulates into y, so the forward restarts from y_base. */
static void lora_fwd(void *p) {
    LoraCtx *c = p;
    memcpy(c->y, c->y_base, (size_t)c->O * c->T * sizeof(double));
    ops64_lora_forward(c->y, c->u, c->xd, c->A, c->B, c->s, c->O, c->r, c->In, c->T);
}

static void lora_case(int O, int r, int In, int T, double s, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nx = (size_t)In * T, ny = (size_t)O * T, na = (size_t)r * In, nb = (size_t)O * r, nu = (size_t)r * T;
    double *xd = alloc(nx), *A = alloc(na), *B = alloc(nb), *y = alloc(ny), *y_base = alloc(ny), *u = alloc(nu);
    double *R = alloc(ny), *du = alloc(nu);
    fill(xd, nx, 0, 1, &rng);
    fill(A, na, 0, 1, &rng);
    fill(B, nb, 0, 1, &rng);
    fill(y_base, ny, 0, 1, &rng);
    fill(R, ny, 0, 1, &rng);
    LoraCtx ctx = {y, u, xd, A, B, y_base, s, O, r, In, T};
    char what[160];

    lora_fwd(&ctx);
    double *want = alloc(ny), *want_u = alloc(nu);
    for (int k = 0; k < r; k++)
        for (int t = 0; t < T; t++) {
            double acc = 0;
            for (int i = 0; i < In; i++) acc += A[(size_t)k * In + i] * xd[(size_t)i * T + t];
            want_u[(size_t)k * T + t] = acc;
        }
    for (int o = 0; o < O; o++)
        for (int t = 0; t < T; t++) {
            double acc = 0;
            for (int k = 0; k < r; k++) acc += B[(size_t)o * r + k] * want_u[(size_t)k * T + t];
            want[(size_t)o * T + t] = y_base[(size_t)o * T + t] + s * acc;
        }
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d forward (y += s B A xd)", O, r, In, T);
    check_near(what, y, want, ny, 1e-13);
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d saved u = A xd", O, r, In, T);
    check_near(what, u, want_u, nu, 1e-13);

    double *dxd = alloc(nx), *dA = alloc(na), *dB = alloc(nb);
    ops64_lora_backward(dxd, dA, dB, du, R, xd, u, A, B, s, O, r, In, T);
    Fd fd = {lora_fwd, &ctx, y, R, ny};
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d dxd", O, r, In, T);
    fd_check(what, &fd, xd, nx, dxd, 1, &rng);
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d dA", O, r, In, T);
    fd_check(what, &fd, A, na, dA, 1, &rng);
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d dB", O, r, In, T);
    fd_check(what, &fd, B, nb, dB, 1, &rng);

    /* += into nonzero buffers; dxd NULL leaves dA and dB as they were */
    double *ix = alloc(nx), *ia = alloc(na), *ib = alloc(nb);
    fill(ix, nx, 0, 3, &rng);
    fill(ia, na, 0, 3, &rng);
    fill(ib, nb, 0, 3, &rng);
    double *ax = dup(ix, nx), *aa = dup(ia, na), *ab = dup(ib, nb);
    ops64_lora_backward(ax, aa, ab, du, R, xd, u, A, B, s, O, r, In, T);
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d dxd +=", O, r, In, T);
    check_accumulated(what, ax, ix, dxd, nx);
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d dA +=", O, r, In, T);
    check_accumulated(what, aa, ia, dA, na);
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d dB +=", O, r, In, T);
    check_accumulated(what, ab, ib, dB, nb);
    double *na_only = alloc(na), *nb_only = alloc(nb);
    ops64_lora_backward(NULL, na_only, nb_only, du, R, xd, u, A, B, s, O, r, In, T);
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d dA with dxd NULL", O, r, In, T);
    check_near(what, na_only, dA, na, 1e-14);
    snprintf(what, sizeof what, "lora O=%d r=%d In=%d T=%d dB with dxd NULL", O, r, In, T);
    check_near(what, nb_only, dB, nb, 1e-14);
    free(xd), free(A), free(B), free(y), free(y_base), free(u), free(R), free(du), free(want), free(want_u);
    free(dxd), free(dA), free(dB), free(ix), free(ia), free(ib), free(ax), free(aa), free(ab), free(na_only),
        free(nb_only);
}

static void test_lora(void) {
    lora_case(5, 2, 7, 3, 1.5, 41);
    lora_case(3, 1, 4, 1, 0.25, 42);
    lora_case(40, 4, 33, 17, 2.0, 43); /* sampled */
}

/* The token-major variants: yt [T][O] = (W x)^T for x [In][T]. */
static void lin_forward_tokens(void *p) {
    LinCtx *c = p;
    ops64_linear_forward_tokens(c->y, c->x, c->W, c->O, c->In, c->T);
}

static void linear_tokens_case(int O, int In, int T, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nx = (size_t)In * T, ny = (size_t)O * T, nw = (size_t)O * In;
    double *x = alloc(nx), *W = alloc(nw), *yt = alloc(ny), *Rt = alloc(ny);
    fill(x, nx, 0, 1, &rng);
    fill(W, nw, 0, 1, &rng);
    fill(Rt, ny, 0, 1, &rng);
    LinCtx ctx = {yt, x, W, Rt, O, In, T};
    char what[160];

    set_all(yt, ny, -7.25); /* forward writes every element */
    ops64_linear_forward_tokens(yt, x, W, O, In, T);
    double *want = alloc(ny);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int i = 0; i < In; i++) s += W[(size_t)o * In + i] * x[(size_t)i * T + t];
            want[(size_t)t * O + o] = s;
        }
    snprintf(what, sizeof what, "linear tokens %dx%d T=%d forward", O, In, T);
    check_near(what, yt, want, ny, 1e-13);

    double *dx = alloc(nx), *dW = alloc(nw);
    ops64_linear_backward_tokens(dx, dW, Rt, x, W, O, In, T);
    Fd fd = {lin_forward_tokens, &ctx, yt, Rt, ny};
    snprintf(what, sizeof what, "linear tokens %dx%d T=%d dx", O, In, T);
    fd_check(what, &fd, x, nx, dx, 1, &rng);
    snprintf(what, sizeof what, "linear tokens %dx%d T=%d dW", O, In, T);
    fd_check(what, &fd, W, nw, dW, 1, &rng);

    /* the same gradients as the channel-first op given dy = Rt^T */
    double *R = alloc(ny), *cf_dx = alloc(nx), *cf_dW = alloc(nw);
    for (int t = 0; t < T; t++)
        for (int o = 0; o < O; o++) R[(size_t)o * T + t] = Rt[(size_t)t * O + o];
    ops64_linear_backward(cf_dx, cf_dW, R, x, W, O, In, T);
    snprintf(what, sizeof what, "linear tokens %dx%d T=%d dx vs channel-first", O, In, T);
    check_near(what, dx, cf_dx, nx, 1e-13);
    snprintf(what, sizeof what, "linear tokens %dx%d T=%d dW vs channel-first", O, In, T);
    check_near(what, dW, cf_dW, nw, 1e-13);

    double *init_x = alloc(nx), *init_w = alloc(nw);
    fill(init_x, nx, 0, 3, &rng);
    fill(init_w, nw, 0, 3, &rng);
    double *acc_x = dup(init_x, nx), *acc_w = dup(init_w, nw);
    ops64_linear_backward_tokens(acc_x, acc_w, Rt, x, W, O, In, T);
    snprintf(what, sizeof what, "linear tokens %dx%d T=%d dx +=", O, In, T);
    check_accumulated(what, acc_x, init_x, dx, nx);
    snprintf(what, sizeof what, "linear tokens %dx%d T=%d dW +=", O, In, T);
    check_accumulated(what, acc_w, init_w, dW, nw);

    double *only_x = alloc(nx), *only_w = alloc(nw);
    ops64_linear_backward_tokens(only_x, NULL, Rt, x, W, O, In, T);
    ops64_linear_backward_tokens(NULL, only_w, Rt, x, W, O, In, T);
    snprintf(what, sizeof what, "linear tokens %dx%d T=%d dx with dW NULL", O, In, T);
    check_near(what, only_x, dx, nx, 1e-14);
    snprintf(what, sizeof what, "linear tokens %dx%d T=%d dW with dx NULL", O, In, T);
    check_near(what, only_w, dW, nw, 1e-14);
    free(x), free(W), free(yt), free(Rt), free(want), free(dx), free(dW), free(R), free(cf_dx), free(cf_dW);
    free(init_x), free(init_w), free(acc_x), free(acc_w), free(only_x), free(only_w);
}

static void test_linear_tokens(void) {
    linear_tokens_case(5, 7, 3, 34);
    linear_tokens_case(3, 4, 1, 35);
    linear_tokens_case(40, 33, 17, 36); /* sampled */
}

/* ------------------------------------------------------------------ RoPE */

typedef struct {
    double *x, *work, *cos_tab, *sin_tab, *R;
    int NH, D, T;
    RopeStyle style;
} RopeCtx;

/* rope rotates in place, so the forward works on a copy of the input */
static void rope_fwd(void *p) {
    RopeCtx *c = p;
    memcpy(c->work, c->x, (size_t)c->NH * c->D * c->T * sizeof *c->work);
    ops64_rope_forward(c->work, c->cos_tab, c->sin_tab, c->NH, c->D, c->T, c->style);
}

static void rope_case(RopeStyle style, int NH, int D, int T, int pos0, double theta, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    int half = D / 2;
    size_t n = (size_t)NH * D * T;
    double *x = alloc(n), *work = alloc(n), *R = alloc(n), *cs = alloc((size_t)T * half), *sn = alloc((size_t)T * half);
    fill(x, n, 0, 1, &rng);
    fill(R, n, 0, 1, &rng);
    char name[96], what[160];
    snprintf(name, sizeof name, "rope %s NH=%d D=%d T=%d pos0=%d theta=%g", config_rope_style_name(style), NH, D, T,
             pos0, theta);

    /* table: angle[t][i] = (pos0 + t) * theta^(-2i/D) */
    ops64_rope_table(cs, sn, T, D, pos0, theta);
    double *want_c = alloc((size_t)T * half), *want_s = alloc((size_t)T * half);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double angle = (pos0 + t) * pow(theta, -2.0 * i / D);
            want_c[(size_t)t * half + i] = cos(angle);
            want_s[(size_t)t * half + i] = sin(angle);
        }
    snprintf(what, sizeof what, "%s table cos", name);
    check_near(what, cs, want_c, (size_t)T * half, 1e-14);
    snprintf(what, sizeof what, "%s table sin", name);
    check_near(what, sn, want_s, (size_t)T * half, 1e-14);

    /* forward: pair (a, b) = channels (2i, 2i+1) interleaved or (i, i + D/2) half turns by angle[t][i] */
    RopeCtx ctx = {x, work, cs, sn, R, NH, D, T, style};
    rope_fwd(&ctx);
    double *want = dup(x, n);
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < half; i++) {
            int ca = style == ROPE_INTERLEAVED ? 2 * i : i, cb = style == ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
            for (int t = 0; t < T; t++) {
                double angle = (pos0 + t) * pow(theta, -2.0 * i / D);
                double a = x[((size_t)h * D + ca) * T + t], b = x[((size_t)h * D + cb) * T + t];
                want[((size_t)h * D + ca) * T + t] = a * cos(angle) - b * sin(angle);
                want[((size_t)h * D + cb) * T + t] = a * sin(angle) + b * cos(angle);
            }
        }
    snprintf(what, sizeof what, "%s forward", name);
    check_near(what, work, want, n, 1e-13);

    /* backward rotates dout in place (writes): the result is the gradient with respect to x */
    double *g = dup(R, n);
    ops64_rope_backward(g, cs, sn, NH, D, T, style);
    snprintf(what, sizeof what, "%s dx", name);
    Fd fd = {rope_fwd, &ctx, work, R, n};
    fd_check(what, &fd, x, n, g, 1, &rng);

    /* the transpose of a rotation is its inverse: backward(forward(x)) = x */
    double *round_trip = dup(x, n);
    ops64_rope_forward(round_trip, cs, sn, NH, D, T, style);
    ops64_rope_backward(round_trip, cs, sn, NH, D, T, style);
    snprintf(what, sizeof what, "%s backward(forward(x)) = x", name);
    check_near(what, round_trip, x, n, 1e-14);
    free(x), free(work), free(R), free(cs), free(sn), free(want_c), free(want_s), free(want), free(g), free(round_trip);
}

static void test_rope(void) {
    rope_case(ROPE_INTERLEAVED, 3, 8, 7, 5, 10000.0, 41);
    rope_case(ROPE_HALF, 3, 8, 7, 5, 10000.0, 42);
    rope_case(ROPE_INTERLEAVED, 2, 6, 5, 123, 1e6, 43); /* D/2 odd */
    rope_case(ROPE_HALF, 2, 6, 5, 123, 1e6, 44);
    rope_case(ROPE_HALF, 1, 4, 1, 9, 10000.0, 45); /* one token */
    rope_case(ROPE_INTERLEAVED, 2, 68, 70, 3, 10000.0, 46); /* past the 32x32 table tiles, with tails */
    rope_case(ROPE_HALF, 1, 68, 70, 3, 1e6, 47);
}

/* ------------------------------------------------------------------ attention */

typedef struct {
    double *out, *q, *k, *v, *R, *scratch;
    int H, KV, D, T;
} AttnCtx;

static void attn_forward(void *p) {
    AttnCtx *c = p;
    ops64_attention_forward(c->out, c->q, c->k, c->v, c->H, c->KV, c->D, c->T, 0, c->KV, c->scratch);
}

/* out_h[:, i] = sum_{j <= i} softmax_j(q_h[:, i] . k_g[:, j] / sqrt(D)) v_g[:, j], g = h / (H/KV) */
static void attention_direct(double *out, const double *q, const double *k, const double *v, int H, int KV, int D,
                             int T) {
    double *p = alloc(T);
    for (int h = 0; h < H; h++) {
        int g = h / (H / KV);
        const double *qh = q + (size_t)h * D * T, *kg = k + (size_t)g * D * T, *vg = v + (size_t)g * D * T;
        for (int i = 0; i < T; i++) {
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j <= i; j++) {
                double s = 0;
                for (int d = 0; d < D; d++) s += qh[(size_t)d * T + i] * kg[(size_t)d * T + j];
                p[j] = s / sqrt((double)D);
                mx = fmax(mx, p[j]);
            }
            for (int j = 0; j <= i; j++) sum += p[j] = exp(p[j] - mx);
            for (int d = 0; d < D; d++) {
                double o = 0;
                for (int j = 0; j <= i; j++) o += p[j] / sum * vg[(size_t)d * T + j];
                out[((size_t)h * D + d) * T + i] = o;
            }
        }
    }
    free(p);
}

static void attention_case(int H, int KV, int D, int T, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t nq = (size_t)H * D * T, nkv = (size_t)KV * D * T, head = (size_t)D * T;
    double *q = alloc(nq), *k = alloc(nkv), *v = alloc(nkv), *out = alloc(nq), *R = alloc(nq);
    double *scratch = alloc((size_t)2 * T * T); /* exactly what backward needs (forward: T*T) */
    fill(q, nq, 0, 1, &rng);
    fill(k, nkv, 0, 1, &rng);
    fill(v, nkv, 0, 1, &rng);
    fill(R, nq, 0, 1, &rng);
    char name[96], what[200];
    snprintf(name, sizeof name, "attention H=%d KV=%d D=%d T=%d", H, KV, D, T);
    AttnCtx ctx = {out, q, k, v, R, scratch, H, KV, D, T};

    double *fwd_scratch = alloc((size_t)T * T);
    ops64_attention_forward(out, q, k, v, H, KV, D, T, 0, KV, fwd_scratch);
    free(fwd_scratch);
    double *want = alloc(nq);
    attention_direct(want, q, k, v, H, KV, D, T);
    snprintf(what, sizeof what, "%s forward", name);
    check_near(what, out, want, nq, 1e-13);

    double *dq = alloc(nq), *dk = alloc(nkv), *dv = alloc(nkv);
    ops64_attention_backward(dq, dk, dv, R, q, k, v, H, KV, D, T, 0, KV, scratch);
    snprintf(what, sizeof what, "%s dq", name);
    Fd fd = {attn_forward, &ctx, out, R, nq};
    fd_check(what, &fd, q, nq, dq, T > 1, &rng); /* one token: out = v whatever q and k are */
    snprintf(what, sizeof what, "%s dk", name);
    fd_check(what, &fd, k, nkv, dk, T > 1, &rng);
    snprintf(what, sizeof what, "%s dv", name);
    fd_check(what, &fd, v, nkv, dv, 1, &rng);

    double *iq = alloc(nq), *ik = alloc(nkv), *iv = alloc(nkv);
    fill(iq, nq, 0, 3, &rng);
    fill(ik, nkv, 0, 3, &rng);
    fill(iv, nkv, 0, 3, &rng);
    double *aq = dup(iq, nq), *ak = dup(ik, nkv), *av = dup(iv, nkv);
    ops64_attention_backward(aq, ak, av, R, q, k, v, H, KV, D, T, 0, KV, scratch);
    snprintf(what, sizeof what, "%s dq +=", name);
    check_accumulated(what, aq, iq, dq, nq);
    snprintf(what, sizeof what, "%s dk +=", name);
    check_accumulated(what, ak, ik, dk, nkv);
    snprintf(what, sizeof what, "%s dv +=", name);
    check_accumulated(what, av, iv, dv, nkv);

    /* KV sub-ranges: [g, g+1) touches exactly KV head g and its query heads, and gives the
    ** full-range values there; the ranges one by one add up to the full range. */
    int group = H / KV;
    double *sub = alloc(nq);
    for (int g = 0; g < KV; g++) {
        set_all(sub, nq, 7.25);
        ops64_attention_forward(sub, q, k, v, H, KV, D, T, g, g + 1, scratch);
        snprintf(what, sizeof what, "%s forward kv [%d,%d) query heads before", name, g, g + 1);
        check_untouched(what, sub, g * group * head, 7.25);
        snprintf(what, sizeof what, "%s forward kv [%d,%d) query heads after", name, g, g + 1);
        check_untouched(what, sub + (g + 1) * group * head, (KV - g - 1) * group * head, 7.25);
        snprintf(what, sizeof what, "%s forward kv [%d,%d) its query heads", name, g, g + 1);
        check_near(what, sub + g * group * head, out + g * group * head, group * head, 1e-14);

        double *sq = dup(iq, nq), *sk = dup(ik, nkv), *sv = dup(iv, nkv);
        ops64_attention_backward(sq, sk, sv, R, q, k, v, H, KV, D, T, g, g + 1, scratch);
        for (int h = 0; h < H; h++) {
            snprintf(what, sizeof what, "%s backward kv [%d,%d) dq head %d", name, g, g + 1, h);
            if (h / group == g)
                check_accumulated(what, sq + h * head, iq + h * head, dq + h * head, head);
            else
                CHECK(memcmp(sq + h * head, iq + h * head, head * sizeof *sq) == 0, "%s: changed", what);
        }
        for (int kh = 0; kh < KV; kh++) {
            snprintf(what, sizeof what, "%s backward kv [%d,%d) dk/dv head %d", name, g, g + 1, kh);
            if (kh == g) {
                check_accumulated(what, sk + kh * head, ik + kh * head, dk + kh * head, head);
                check_accumulated(what, sv + kh * head, iv + kh * head, dv + kh * head, head);
            } else {
                CHECK(memcmp(sk + kh * head, ik + kh * head, head * sizeof *sk) == 0, "%s: dk changed", what);
                CHECK(memcmp(sv + kh * head, iv + kh * head, head * sizeof *sv) == 0, "%s: dv changed", what);
            }
        }
        free(sq), free(sk), free(sv);
    }
    free(q), free(k), free(v), free(out), free(R), free(scratch), free(want), free(dq), free(dk), free(dv);
    free(iq), free(ik), free(iv), free(aq), free(ak), free(av), free(sub);
}

static void test_attention(void) {
    attention_case(3, 3, 4, 7, 51);  /* MHA */
    attention_case(4, 2, 4, 13, 52); /* GQA */
    attention_case(4, 1, 6, 7, 53);  /* MQA, D not a power of two */
    attention_case(2, 2, 4, 1, 54);  /* one token: out = v */
    attention_case(2, 1, 4, 150, 55); /* three query blocks of 64, the last partial */
}

/* ------------------------------------------------------------------ SwiGLU */

typedef struct {
    double *g, *h1, *h3, *R;
    size_t n;
} GluCtx;

static void glu_forward(void *p) {
    GluCtx *c = p;
    ops64_swiglu_forward(c->g, c->h1, c->h3, c->n);
}

static void test_swiglu(void) {
    enum { N = 23 };
    Rng rng;
    rng_seed(&rng, 61);
    double *h1 = alloc(N), *h3 = alloc(N), *g = alloc(N), *R = alloc(N), *want = alloc(N);
    fill(h1, N, 0, 2.5, &rng);
    fill(h3, N, 0, 1, &rng);
    fill(R, N, 0, 1, &rng);
    h1[0] = -12, h1[1] = 12, h1[2] = 0; /* the tails of the sigmoid and its middle */
    ops64_swiglu_forward(g, h1, h3, N);
    for (int i = 0; i < N; i++) want[i] = h1[i] / (1 + exp(-h1[i])) * h3[i];
    check_near("swiglu forward", g, want, N, 1e-15);

    double *dh1 = alloc(N), *dh3 = alloc(N);
    ops64_swiglu_backward(dh1, dh3, R, h1, h3, N);
    GluCtx ctx = {g, h1, h3, R, N};
    Fd fd = {glu_forward, &ctx, g, R, N};
    fd_check("swiglu dh1", &fd, h1, N, dh1, 1, &rng);
    fd_check("swiglu dh3", &fd, h3, N, dh3, 1, &rng);

    double *i1 = alloc(N), *i3 = alloc(N);
    fill(i1, N, 0, 3, &rng);
    fill(i3, N, 0, 3, &rng);
    double *a1 = dup(i1, N), *a3 = dup(i3, N);
    ops64_swiglu_backward(a1, a3, R, h1, h3, N);
    check_accumulated("swiglu dh1 +=", a1, i1, dh1, N);
    check_accumulated("swiglu dh3 +=", a3, i3, dh3, N);
    free(h1), free(h3), free(g), free(R), free(want), free(dh1), free(dh3), free(i1), free(i3), free(a1), free(a3);
}

/* ------------------------------------------------------------------ cross-entropy */

/* Columns col0 .. col0+n-1 of a [V][ld] tensor; the output is loss[n], L = sum_t R[t] * loss[t]. */
typedef struct {
    double *loss, *probs, *logits, *R;
    const int32_t *targets;
    int V, n, ld, col0;
} CeCtx;

static void ce_forward(void *p) {
    CeCtx *c = p;
    ops64_cross_entropy_forward(c->loss, c->probs + c->col0, c->logits + c->col0, c->targets, c->V, c->n, c->ld);
}

static void cross_entropy_case(int V, int n, int ld, int col0, double spread, double offset, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t all = (size_t)V * ld;
    double *logits = alloc(all), *probs = alloc(all), *loss = alloc(n), *R = alloc(n), *want = alloc(n);
    int32_t *targets = malloc((size_t)n * sizeof *targets);
    if (!targets) exit(2);
    fill(logits, all, offset, spread, &rng);
    fill(R, n, 0, 1, &rng);
    for (int t = 0; t < n; t++) targets[t] = (int32_t)rng_below(&rng, (uint64_t)V);
    char name[96], what[200];
    snprintf(name, sizeof name, "cross-entropy V=%d n=%d ld=%d col0=%d", V, n, ld, col0);
    CeCtx ctx = {loss, probs, logits, R, targets, V, n, ld, col0};

    /* forward against a direct log-sum-exp (shifted only when the logits would overflow exp) */
    set_all(probs, all, -5.5);
    ce_forward(&ctx);
    double *want_p = alloc(all);
    set_all(want_p, all, -5.5);
    for (int t = 0; t < n; t++) {
        int col = col0 + t;
        double sum = 0;
        for (int v = 0; v < V; v++) sum += exp(logits[(size_t)v * ld + col] - offset);
        double lse = offset + log(sum);
        want[t] = lse - logits[(size_t)targets[t] * ld + col];
        for (int v = 0; v < V; v++) want_p[(size_t)v * ld + col] = exp(logits[(size_t)v * ld + col] - lse);
    }
    snprintf(what, sizeof what, "%s forward loss", name);
    check_near(what, loss, want, n, 1e-12);
    snprintf(what, sizeof what, "%s forward probs (outside the slice untouched)", name);
    check_near(what, probs, want_p, all, 1e-13);

    /* backward writes dlogits = dloss * (probs - onehot); columns outside the slice stay as they are */
    double *grad = alloc(all);
    ops64_cross_entropy_backward(grad + col0, probs + col0, targets, R, V, n, ld);
    snprintf(what, sizeof what, "%s dlogits", name);
    Fd fd = {ce_forward, &ctx, loss, R, (size_t)n};
    fd_check(what, &fd, logits, all, grad, 1, &rng);
    double *written = alloc(all);
    set_all(written, all, 9.75);
    ops64_cross_entropy_backward(written + col0, probs + col0, targets, R, V, n, ld);
    int bad = 0, outside = 0;
    for (int v = 0; v < V; v++)
        for (int c = 0; c < ld; c++) {
            size_t i = (size_t)v * ld + c;
            if (c < col0 || c >= col0 + n)
                outside += written[i] != 9.75;
            else
                bad += written[i] != grad[i];
        }
    CHECK(bad == 0, "%s backward writes: %d elements depend on what the buffer held", name, bad);
    CHECK(outside == 0, "%s backward: %d elements outside the columns changed", name, outside);

    /* in place, as the backend runs it: probs over the logits, then dlogits over the probs */
    double *inplace = dup(logits, all), *loss2 = alloc(n);
    ops64_cross_entropy_forward(loss2, inplace + col0, inplace + col0, targets, V, n, ld);
    bad = 0;
    for (int v = 0; v < V; v++)
        for (int c = 0; c < ld; c++) {
            size_t i = (size_t)v * ld + c;
            bad += (c < col0 || c >= col0 + n) ? inplace[i] != logits[i] : inplace[i] != probs[i];
        }
    CHECK(bad == 0, "%s forward in place: %d elements differ from the separate-buffer run", name, bad);
    CHECK(memcmp(loss2, loss, (size_t)n * sizeof *loss) == 0, "%s forward in place: losses differ", name);
    ops64_cross_entropy_backward(inplace + col0, inplace + col0, targets, R, V, n, ld);
    bad = 0;
    for (int v = 0; v < V; v++)
        for (int c = col0; c < col0 + n; c++) bad += inplace[(size_t)v * ld + c] != grad[(size_t)v * ld + c];
    CHECK(bad == 0, "%s backward in place: %d elements differ from the separate-buffer run", name, bad);

    /* fused forward+backward, in place as the backend runs it: same loss, same dlogits */
    double *fused = dup(logits, all), *loss3 = alloc(n);
    ops64_cross_entropy_fused(loss3, fused + col0, fused + col0, targets, R, V, n, ld);
    snprintf(what, sizeof what, "%s fused loss", name);
    check_near(what, loss3, loss, n, 1e-13);
    int far = 0;
    for (int v = 0; v < V; v++)
        for (int c = 0; c < ld; c++) {
            size_t i = (size_t)v * ld + c;
            if (c < col0 || c >= col0 + n) far += fused[i] != logits[i];
            else far += fabs(fused[i] - grad[i]) > 1e-13 * (1 + fabs(grad[i]));
        }
    CHECK(far == 0, "%s fused: %d dlogits differ from forward+backward (or columns outside changed)", name, far);
    free(fused), free(loss3);

    free(logits), free(probs), free(loss), free(R), free(want), free(targets), free(want_p), free(grad);
    free(written), free(inplace), free(loss2);
}

static void test_cross_entropy(void) {
    cross_entropy_case(7, 5, 5, 0, 1.5, 0, 71);
    cross_entropy_case(9, 6, 12, 3, 1.5, 0, 72);   /* a slice of a wider tensor */
    cross_entropy_case(5, 70, 75, 2, 1.5, 0, 73);  /* past the 64-column chunk; sampled */
    cross_entropy_case(6, 4, 7, 1, 2.0, 800, 74);  /* exp(800) overflows: needs the max shift */
}

/* ------------------------------------------------------------------ cross-entropy, token-major */

/* logits [n][V], one row per position; the output is loss[n], L = sum_t R[t] * loss[t]. */
typedef struct {
    double *loss, *logits;
    const int32_t *targets;
    int V, n;
} CeRowsCtx;

static void ce_rows_forward(void *p) {
    CeRowsCtx *c = p;
    ops64_cross_entropy_rows_forward(c->loss, c->logits, c->targets, c->V, c->n);
}

static void cross_entropy_rows_case(int V, int n, double spread, double offset, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    size_t all = (size_t)V * n;
    double *logits = alloc(all), *loss = alloc(n), *R = alloc(n), *want = alloc(n);
    int32_t *targets = malloc((size_t)n * sizeof *targets);
    if (!targets) exit(2);
    fill(logits, all, offset, spread, &rng);
    fill(R, n, 0, 1, &rng);
    for (int t = 0; t < n; t++) targets[t] = (int32_t)rng_below(&rng, (uint64_t)V);
    char name[96], what[200];
    snprintf(name, sizeof name, "cross-entropy rows V=%d n=%d", V, n);
    CeRowsCtx ctx = {loss, logits, targets, V, n};

    /* forward against a direct log-sum-exp (shifted only when the logits would overflow exp) */
    double *keep = dup(logits, all);
    ce_rows_forward(&ctx);
    CHECK(memcmp(keep, logits, all * sizeof *keep) == 0, "%s forward: changed its input", name);
    double *want_grad = alloc(all);
    for (int t = 0; t < n; t++) {
        const double *row = logits + (size_t)t * V;
        double sum = 0;
        for (int v = 0; v < V; v++) sum += exp(row[v] - offset);
        double lse = offset + log(sum);
        want[t] = lse - row[targets[t]];
        for (int v = 0; v < V; v++) want_grad[(size_t)t * V + v] = R[t] * (exp(row[v] - lse) - (v == targets[t]));
    }
    snprintf(what, sizeof what, "%s forward loss", name);
    check_near(what, loss, want, n, 1e-12);

    /* the same loss as the channel-first op on the transposed logits */
    double *cols = alloc(all), *probs = alloc(all), *loss_cols = alloc(n);
    for (int t = 0; t < n; t++)
        for (int v = 0; v < V; v++) cols[(size_t)v * n + t] = logits[(size_t)t * V + v];
    ops64_cross_entropy_forward(loss_cols, probs, cols, targets, V, n, n);
    snprintf(what, sizeof what, "%s loss vs channel-first", name);
    check_near(what, loss, loss_cols, n, 1e-13);

    /* fused, into a separate buffer (every element written) */
    double *grad = alloc(all), *loss2 = alloc(n);
    set_all(grad, all, 9.75);
    ops64_cross_entropy_rows_fused(loss2, grad, logits, targets, R, V, n);
    CHECK(memcmp(keep, logits, all * sizeof *keep) == 0, "%s fused: changed its input", name);
    snprintf(what, sizeof what, "%s fused loss", name);
    check_near(what, loss2, loss, n, 1e-13);
    snprintf(what, sizeof what, "%s fused dlogits vs direct", name);
    check_near(what, grad, want_grad, all, 1e-13);
    snprintf(what, sizeof what, "%s fused dlogits", name);
    Fd fd = {ce_rows_forward, &ctx, loss, R, (size_t)n};
    fd_check(what, &fd, logits, all, grad, 1, &rng);

    /* in place, as the backend runs it: the same loss and dlogits, bit for bit */
    double *inplace = dup(logits, all), *loss3 = alloc(n);
    ops64_cross_entropy_rows_fused(loss3, inplace, inplace, targets, R, V, n);
    CHECK(memcmp(loss3, loss2, (size_t)n * sizeof *loss3) == 0, "%s fused in place: losses differ", name);
    CHECK(memcmp(inplace, grad, all * sizeof *grad) == 0, "%s fused in place: dlogits differ", name);

    free(logits), free(loss), free(R), free(want), free(targets), free(keep), free(want_grad), free(cols);
    free(probs), free(loss_cols), free(grad), free(loss2), free(inplace), free(loss3);
}

static void test_cross_entropy_rows(void) {
    cross_entropy_rows_case(7, 5, 1.5, 0, 81);
    cross_entropy_rows_case(40, 3, 1.5, 0, 82);   /* rows past the 16-lane blocks, with a tail */
    cross_entropy_rows_case(48, 2, 1.5, 0, 83);   /* whole lane blocks only */
    cross_entropy_rows_case(300, 4, 1.5, 0, 84);  /* sampled */
    cross_entropy_rows_case(37, 4, 2.0, 800, 85); /* exp(800) overflows: needs the max shift */
}

/* Logits 2000 apart: without the max shift exp overflows to inf or underflows every term to 0. */
static void test_cross_entropy_extremes(void) {
    enum { V = 4, N = 3 };
    /* [V][N]: one row per vocabulary entry, one column per position */
    const double logits[V * N] = {
        0,     -1000,    1000,
        1000,  -1001,    1000,
        -1000, -999.5,   1000,
        999,   -1000.25, 1000,
    };
    const int32_t targets[N] = {3, 0, 2};
    const double want[N] = {1 + log(1 + exp(-1.0)),
                            0.5 + log(exp(-0.5) + exp(-1.5) + 1 + exp(-0.75)), log(4.0)};
    double loss[N], probs[V * N], dlogits[V * N];
    const double dloss[N] = {1, 1, 1};
    ops64_cross_entropy_forward(loss, probs, logits, targets, V, N, N);
    check_near("cross-entropy extreme logits: loss", loss, want, N, 1e-13);
    ops64_cross_entropy_backward(dlogits, probs, targets, dloss, V, N, N);
    for (int t = 0; t < N; t++) {
        double sum = 0, dsum = 0;
        int finite = 1;
        for (int v = 0; v < V; v++) {
            finite &= isfinite(probs[v * N + t]) && isfinite(dlogits[v * N + t]);
            sum += probs[v * N + t];
            dsum += dlogits[v * N + t];
        }
        CHECK(finite, "cross-entropy extreme logits column %d: non-finite probs or gradient", t);
        CHECK(fabs(sum - 1) < 1e-14, "cross-entropy extreme logits column %d: probs sum to %.17g", t, sum);
        CHECK(fabs(dsum) < 1e-14, "cross-entropy extreme logits column %d: dlogits sum to %.17g, expected 0", t, dsum);
    }
    CHECK(fabs(probs[1 * N + 0] - 1 / (1 + exp(-1.0))) < 1e-15, "column 0: p(row 1) = %.17g", probs[1 * N + 0]);
    CHECK(probs[2 * N + 0] == 0, "column 0: p(row 2) = %g, expected 0 (exp(-2000))", probs[2 * N + 0]);
}

/* Token-major: logits 2000 apart, the max in a lane block and in the tail, one row all equal. */
static void test_cross_entropy_rows_extremes(void) {
    enum { V = 20, N = 3 };
    double logits[N * V], loss[N], dlogits[N * V];
    const double dloss[N] = {1, 1, 1};
    const int32_t targets[N] = {3, 19, 0};
    for (int v = 0; v < V; v++) {
        logits[0 * V + v] = v == 2 ? 1000 : v == 3 ? 999 : -1000; /* max inside the first 16 */
        logits[1 * V + v] = v == 18 ? -999.5 : -1000;              /* max in the 4-element tail */
        logits[2 * V + v] = 1000;                                  /* all equal */
    }
    const double want[N] = {1 + log(1 + exp(-1.0)), 0.5 + log(exp(-0.5) * (V - 1) + 1),
                            log((double)V)};
    ops64_cross_entropy_rows_forward(loss, logits, targets, V, N);
    check_near("cross-entropy rows extreme logits: loss", loss, want, N, 1e-13);
    ops64_cross_entropy_rows_fused(loss, dlogits, logits, targets, dloss, V, N);
    check_near("cross-entropy rows extreme logits: fused loss", loss, want, N, 1e-13);
    for (int t = 0; t < N; t++) {
        double dsum = 0;
        int finite = 1;
        for (int v = 0; v < V; v++) {
            finite &= isfinite(dlogits[t * V + v]);
            dsum += dlogits[t * V + v];
        }
        CHECK(finite, "cross-entropy rows extreme logits row %d: non-finite gradient", t);
        CHECK(fabs(dsum) < 1e-14, "cross-entropy rows extreme logits row %d: dlogits sum to %.17g, expected 0", t, dsum);
    }
    CHECK(fabs(dlogits[0 * V + 2] - 1 / (1 + exp(-1.0))) < 1e-15, "row 0: p(2) = %.17g", dlogits[0 * V + 2]);
    CHECK(dlogits[0 * V + 0] == 0, "row 0: p(0) = %g, expected 0 (exp(-2000))", dlogits[0 * V + 0]);
}

int main(void) {
    RUN(test_embedding);
    RUN(test_embedding_ld);
    RUN(test_rmsnorm);
    RUN(test_rmsnorm_ld);
    RUN(test_linear);
    RUN(test_lora);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_swiglu);
    RUN(test_cross_entropy);
    RUN(test_cross_entropy_extremes);
    RUN(test_linear_tokens);
    RUN(test_cross_entropy_rows);
    RUN(test_cross_entropy_rows_extremes);
    printf("worst finite-difference relative error: %.3g (limit %g)\n", worst_fd_rel, FD_RTOL);
    return TEST_SUMMARY();
}
