/*
** reference.c — what each kernel of a plan computes, on the CPU in fp32 with the reference ops
** (src/ops), from the same input surface the device reads (inspect.h, ane_kernel_reference).
**
** It follows kernels.c's math, not the model's: inputs are whatever the surface holds (rstd1,
** the taps, the weights as staged: an int8 base's q 2^-7 and s 2^7, s A with LoRA's scale and
** keep factor folded in, 0/1 masks), and every column of S is computed, padding included. The
** doctor compares a device's output with it; test_ane_kernels checks it against the emulator for
** every variant (full, LoRA with dropout, int8 base). Nothing here is on the training path.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../ops/ops.h"
#include "half.h"
#include "inspect.h"

/* ------------------------------------------------------------------ helpers */

typedef struct {
    const AneLayerPlan *p;
    const uint16_t *in;
    int S;
    float *pool[192]; /* every buffer, freed at the end */
    int n_pool, oom;
} Ref;

static float *buf(Ref *r, size_t n) {
    float *b = calloc(n ? n : 1, sizeof *b);
    if (!b || r->n_pool == (int)(sizeof r->pool / sizeof r->pool[0])) {
        free(b);
        r->oom = 1;
        return NULL;
    }
    return r->pool[r->n_pool++] = b;
}

/* Region id's values as floats (NULL if absent or out of memory). */
static float *reg(Ref *r, int id) {
    const AneRegion *g = &r->p->reg[id];
    if (!g->n) return NULL;
    uint16_t *h = malloc((size_t)g->n * sizeof *h);
    float *f = buf(r, (size_t)g->n);
    if (h && f) {
        ane_region_get_f16(r->p, r->in, id, h);
        half_to_f32(f, h, (size_t)g->n);
    } else {
        r->oom = 1;
    }
    free(h);
    return f;
}

/* y [O][S] = scale ⊙ (W x) (scale NULL: none) for x [In][S]. */
static void linear(Ref *r, float *y, const float *x, const float *W, const float *scale, int O, int In) {
    ops_linear_forward(y, x, W, O, In, r->S);
    for (int o = 0; scale && o < O; o++)
        for (int t = 0; t < r->S; t++) y[(size_t)o * r->S + t] *= scale[o];
}

/* dx [In][S] += W^T (scale ⊙ dy). */
static void linear_t(Ref *r, float *dx, const float *dy, const float *W, const float *scale, int O, int In) {
    const float *d = dy;
    float *tmp = NULL;
    if (scale) {
        tmp = buf(r, (size_t)O * r->S);
        if (!tmp) return;
        for (int o = 0; o < O; o++)
            for (int t = 0; t < r->S; t++) tmp[(size_t)o * r->S + t] = scale[o] * dy[(size_t)o * r->S + t];
        d = tmp;
    }
    ops_linear_backward(dx, NULL, d, NULL, W, O, In, r->S);
}

/* Module m's forward with its adapter (kernels.c lora_fwd): y += B u, u = (s A)(x * mask). */
static void lora_fwd(Ref *r, int m, const float *x, float *y, float *u) {
    const AneLayerPlan *p = r->p;
    if (!p->reg[AR_LORA_A + m].n) return;
    int out, in, R = p->lora_rank, S = r->S;
    ane_lora_module_shape(p, m, &out, &in);
    float *A = reg(r, AR_LORA_A + m), *B = reg(r, AR_LORA_B + m), *mask = reg(r, AR_LORA_MASK + m);
    float *xm = buf(r, (size_t)in * S), *t = buf(r, (size_t)out * S);
    if (!A || !B || !xm || !t) return;
    for (size_t i = 0; i < (size_t)in * S; i++) xm[i] = mask ? x[i] * mask[i] : x[i];
    ops_linear_forward(u, xm, A, R, in, S);
    ops_linear_forward(t, u, B, out, R, S);
    for (size_t i = 0; i < (size_t)out * S; i++) y[i] += t[i];
}

/* Module m's input gradient with its adapter (kernels.c lora_bwd): v = B^T dy, dx += mask * ((s A)^T v). */
static void lora_bwd(Ref *r, int m, const float *dy, float *dx, float *v) {
    const AneLayerPlan *p = r->p;
    if (!p->reg[AR_LORA_A + m].n) return;
    int out, in, R = p->lora_rank, S = r->S;
    ane_lora_module_shape(p, m, &out, &in);
    float *A = reg(r, AR_LORA_A + m), *B = reg(r, AR_LORA_B + m), *mask = reg(r, AR_LORA_MASK + m);
    float *t = buf(r, (size_t)in * S);
    if (!A || !B || !t) return;
    ops_linear_backward(v, NULL, dy, NULL, B, out, R, S);
    ops_linear_backward(t, NULL, v, NULL, A, R, in, S);
    for (size_t i = 0; i < (size_t)in * S; i++) dx[i] += mask ? mask[i] * t[i] : t[i];
}

/* Per-head RMSNorm statistics of x [NH*D][S] (kernels.c head_norm): rstd [NH][S], xhat = x * rstd. */
static void head_norm(const AneLayerPlan *p, int NH, int S, const float *x, float *xhat, float *rstd) {
    int D = p->D;
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < S; t++) {
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)x[((size_t)h * D + d) * S + t] * x[((size_t)h * D + d) * S + t];
            float rs = (float)(1.0 / sqrt(ss / D + p->eps));
            rstd[(size_t)h * S + t] = rs;
            for (int d = 0; d < D; d++) xhat[((size_t)h * D + d) * S + t] = x[((size_t)h * D + d) * S + t] * rs;
        }
}

/* RMSNorm backward from the normalized input (kernels.c norm_backward): over n rows of `groups`
** groups, dx = rstd * (g - xhat * mean(g xhat)), g = dxn * w[row]; rstd [groups][S]. */
static void norm_bwd(int groups, int n, int S, float *dx, const float *dxn, const float *xhat, const float *rstd,
                     const float *w) {
    for (int h = 0; h < groups; h++)
        for (int t = 0; t < S; t++) {
            double dot = 0;
            for (int c = 0; c < n; c++) {
                size_t i = ((size_t)h * n + c) * S + t;
                dot += (double)dxn[i] * w[c] * xhat[i];
            }
            float mean = (float)(dot / n);
            for (int c = 0; c < n; c++) {
                size_t i = ((size_t)h * n + c) * S + t;
                dx[i] = rstd[(size_t)h * S + t] * (dxn[i] * w[c] - xhat[i] * mean);
            }
        }
}

/* Copies rows [rows][S] into the output at channel off. */
static void put(float *out, int S, int off, const float *src, int rows) {
    memcpy(out + (size_t)off * S, src, (size_t)rows * S * sizeof *out);
}

/* ------------------------------------------------------------------ the kernels */

static void ref_fwd(Ref *r, float *out) {
    const AneLayerPlan *p = r->p;
    int C = p->C, F = p->F, H = p->H, KV = p->KV, D = p->D, Q = p->Q, K = p->K, S = r->S;
    float *x = reg(r, AR_X), *r1 = reg(r, AR_RSTD1), *ra = reg(r, AR_RMS_ATT), *rf = reg(r, AR_RMS_FFN);
    float *sc[ANE_LORA_MODULES];
    for (int m = 0; m < ANE_LORA_MODULES; m++) sc[m] = reg(r, AR_SCALE + m);
    float *xn = buf(r, (size_t)C * S), *q = buf(r, (size_t)Q * S), *k = buf(r, (size_t)K * S);
    float *v = buf(r, (size_t)K * S), *att = buf(r, (size_t)Q * S), *xm = buf(r, (size_t)C * S);
    float *xh2 = buf(r, (size_t)C * S), *r2 = buf(r, (size_t)S), *xn2 = buf(r, (size_t)C * S);
    float *h1 = buf(r, (size_t)F * S), *h3 = buf(r, (size_t)F * S), *g = buf(r, (size_t)F * S);
    float *fo = buf(r, (size_t)C * S), *o = buf(r, (size_t)C * S), *qt = buf(r, (size_t)Q * S),
          *kt = buf(r, (size_t)K * S);
    float *rq = buf(r, (size_t)H * S), *rk = buf(r, (size_t)KV * S),
          *u = buf(r, (size_t)ANE_LORA_MODULES * p->lora_rank * S);
    float *rc = buf(r, (size_t)S * D / 2), *rs = buf(r, (size_t)S * D / 2), *scratch = buf(r, (size_t)2 * S * S);
    float *wq = reg(r, AR_WQ), *wk = reg(r, AR_WK), *wv = reg(r, AR_WV), *wo = reg(r, AR_WO);
    float *w1 = reg(r, AR_W1), *w3 = reg(r, AR_W3), *w2 = reg(r, AR_W2);
    if (r->oom) return;
#define U(m) (u + (size_t)(m) * p->lora_rank * S)
    for (int c = 0; c < C; c++)
        for (int t = 0; t < S; t++) xn[(size_t)c * S + t] = x[(size_t)c * S + t] * r1[t] * ra[c];
    linear(r, q, xn, wq, sc[0], Q, C);
    linear(r, k, xn, wk, sc[1], K, C);
    linear(r, v, xn, wv, sc[2], K, C);
    lora_fwd(r, 0, xn, q, U(0));
    lora_fwd(r, 1, xn, k, U(1));
    lora_fwd(r, 2, xn, v, U(2));
    if (p->qk_norm) { /* taps: the normalized q, k before the weight; then * weight */
        float *qn = reg(r, AR_QNORM), *kn = reg(r, AR_KNORM);
        if (r->oom) return;
        head_norm(p, H, S, q, qt, rq);
        head_norm(p, KV, S, k, kt, rk);
        for (int h = 0; h < H; h++)
            for (int d = 0; d < D; d++)
                for (int t = 0; t < S; t++) q[((size_t)h * D + d) * S + t] = qt[((size_t)h * D + d) * S + t] * qn[d];
        for (int h = 0; h < KV; h++)
            for (int d = 0; d < D; d++)
                for (int t = 0; t < S; t++) k[((size_t)h * D + d) * S + t] = kt[((size_t)h * D + d) * S + t] * kn[d];
    }
    ops_rope_table(rc, rs, S, D, 0, p->theta);
    ops_rope_forward(q, rc, rs, H, D, S, p->rope);
    ops_rope_forward(k, rc, rs, KV, D, S, p->rope);
    if (!p->qk_norm) {
        memcpy(qt, q, sizeof(float) * Q * S);
        memcpy(kt, k, sizeof(float) * K * S);
    }
    ops_attention_forward(att, q, k, v, H, KV, D, S, 0, KV, scratch);
    linear(r, o, att, wo, sc[3], C, Q);
    lora_fwd(r, 3, att, o, U(3));
    for (size_t i = 0; i < (size_t)C * S; i++) xm[i] = x[i] + o[i];
    for (int t = 0; t < S; t++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)xm[(size_t)c * S + t] * xm[(size_t)c * S + t];
        r2[t] = (float)(1.0 / sqrt(ss / C + p->eps));
    }
    for (int c = 0; c < C; c++)
        for (int t = 0; t < S; t++) {
            xh2[(size_t)c * S + t] = xm[(size_t)c * S + t] * r2[t];
            xn2[(size_t)c * S + t] = xh2[(size_t)c * S + t] * rf[c];
        }
    linear(r, h1, xn2, w1, sc[4], F, C);
    linear(r, h3, xn2, w3, sc[5], F, C);
    lora_fwd(r, 4, xn2, h1, U(4));
    lora_fwd(r, 5, xn2, h3, U(5));
    ops_swiglu_forward(g, h1, h3, (size_t)F * S);
    linear(r, fo, g, w2, sc[6], C, F);
    lora_fwd(r, 6, g, fo, U(6));
    for (size_t i = 0; i < (size_t)C * S; i++) fo[i] += xm[i];
    put(out, S, p->fwd[AF_XNEXT].off, fo, C);
    put(out, S, p->fwd[AF_ATT].off, att, Q);
    put(out, S, p->fwd[AF_XH2].off, xh2, C);
    put(out, S, p->fwd[AF_RSTD2].off, r2, 1);
    put(out, S, p->fwd[AF_H1].off, h1, F);
    put(out, S, p->fwd[AF_H3].off, h3, F);
    put(out, S, p->fwd[AF_Q].off, qt, Q);
    put(out, S, p->fwd[AF_K].off, kt, K);
    put(out, S, p->fwd[AF_V].off, v, K);
    if (p->qk_norm) {
        put(out, S, p->fwd[AF_RSTDQ].off, rq, H);
        put(out, S, p->fwd[AF_RSTDK].off, rk, KV);
    }
    for (int m = 0; m < ANE_LORA_MODULES; m++)
        if (p->fwd[AF_LORA_U + m].rows) put(out, S, p->fwd[AF_LORA_U + m].off, U(m), p->lora_rank);
#undef U
}

static void ref_bwd(Ref *r, float *out) {
    const AneLayerPlan *p = r->p;
    int C = p->C, F = p->F, H = p->H, KV = p->KV, D = p->D, Q = p->Q, K = p->K, S = r->S;
    float *dy = reg(r, AR_DY), *xh2 = reg(r, AR_XH2), *r2 = reg(r, AR_RSTD2), *h1 = reg(r, AR_H1), *h3 = reg(r, AR_H3);
    float *qh = reg(r, AR_Q), *kh = reg(r, AR_K), *v = reg(r, AR_V), *rf = reg(r, AR_RMS_FFN);
    float *sc[ANE_LORA_MODULES];
    for (int m = 0; m < ANE_LORA_MODULES; m++) sc[m] = reg(r, AR_SCALE + m);
    float *wq = reg(r, AR_WQ), *wk = reg(r, AR_WK), *wv = reg(r, AR_WV), *wo = reg(r, AR_WO);
    float *w1 = reg(r, AR_W1), *w3 = reg(r, AR_W3), *w2 = reg(r, AR_W2);
    float *dg = buf(r, (size_t)F * S), *dh1 = buf(r, (size_t)F * S), *dh3 = buf(r, (size_t)F * S);
    float *dxn2 = buf(r, (size_t)C * S), *dxm = buf(r, (size_t)C * S), *datt = buf(r, (size_t)Q * S);
    float *q = buf(r, (size_t)Q * S), *k = buf(r, (size_t)K * S), *dq = buf(r, (size_t)Q * S);
    float *dk = buf(r, (size_t)K * S), *dv = buf(r, (size_t)K * S), *dqr = buf(r, (size_t)Q * S);
    float *dkr = buf(r, (size_t)K * S), *dxn1 = buf(r, (size_t)C * S);
    float *lv = buf(r, (size_t)ANE_LORA_MODULES * p->lora_rank * S);
    float *rc = buf(r, (size_t)S * D / 2), *rs = buf(r, (size_t)S * D / 2), *scratch = buf(r, (size_t)2 * S * S);
    if (r->oom) return;
#define V(m) (lv + (size_t)(m) * p->lora_rank * S)
    linear_t(r, dg, dy, w2, sc[6], C, F);
    lora_bwd(r, 6, dy, dg, V(6));
    for (size_t i = 0; i < (size_t)F * S; i++) { /* the SwiGLU backward as kernels.c writes it */
        float sg = 1.0f / (1.0f + expf(-h1[i])), si = h1[i] * sg;
        dh3[i] = dg[i] * si;
        dh1[i] = dg[i] * h3[i] * (sg + si * (1.0f - sg));
    }
    linear_t(r, dxn2, dh1, w1, sc[4], F, C);
    linear_t(r, dxn2, dh3, w3, sc[5], F, C);
    lora_bwd(r, 4, dh1, dxn2, V(4));
    lora_bwd(r, 5, dh3, dxn2, V(5));
    norm_bwd(1, C, S, dxm, dxn2, xh2, r2, rf);
    for (size_t i = 0; i < (size_t)C * S; i++) dxm[i] += dy[i];
    linear_t(r, datt, dxm, wo, sc[3], C, Q);
    lora_bwd(r, 3, dxm, datt, V(3));
    float *qn = NULL, *kn = NULL;
    memcpy(q, qh, sizeof(float) * Q * S);
    memcpy(k, kh, sizeof(float) * K * S);
    ops_rope_table(rc, rs, S, D, 0, p->theta);
    if (p->qk_norm) { /* the taps are normalized: * weight, then RoPE */
        qn = reg(r, AR_QNORM), kn = reg(r, AR_KNORM);
        if (r->oom) return;
        for (int h = 0; h < H; h++)
            for (int d = 0; d < D; d++)
                for (int t = 0; t < S; t++) q[((size_t)h * D + d) * S + t] *= qn[d];
        for (int h = 0; h < KV; h++)
            for (int d = 0; d < D; d++)
                for (int t = 0; t < S; t++) k[((size_t)h * D + d) * S + t] *= kn[d];
        ops_rope_forward(q, rc, rs, H, D, S, p->rope);
        ops_rope_forward(k, rc, rs, KV, D, S, p->rope);
    }
    ops_attention_backward(dq, dk, dv, datt, q, k, v, H, KV, D, S, 0, KV, scratch);
    ops_rope_backward(dq, rc, rs, H, D, S, p->rope);
    ops_rope_backward(dk, rc, rs, KV, D, S, p->rope);
    const float *dq_raw = dq, *dk_raw = dk;
    if (p->qk_norm) {
        float *rq = reg(r, AR_RSTDQ), *rk = reg(r, AR_RSTDK);
        if (r->oom) return;
        norm_bwd(H, D, S, dqr, dq, qh, rq, qn);
        norm_bwd(KV, D, S, dkr, dk, kh, rk, kn);
        dq_raw = dqr, dk_raw = dkr;
    }
    linear_t(r, dxn1, dq_raw, wq, sc[0], Q, C);
    linear_t(r, dxn1, dk_raw, wk, sc[1], K, C);
    linear_t(r, dxn1, dv, wv, sc[2], K, C);
    lora_bwd(r, 0, dq_raw, dxn1, V(0));
    lora_bwd(r, 1, dk_raw, dxn1, V(1));
    lora_bwd(r, 2, dv, dxn1, V(2));
    put(out, S, p->bwd[AB_DXN2].off, dxn2, C);
    put(out, S, p->bwd[AB_DH1].off, dh1, F);
    put(out, S, p->bwd[AB_DH3].off, dh3, F);
    put(out, S, p->bwd[AB_DQ].off, dq, Q);
    put(out, S, p->bwd[AB_DK].off, dk, K);
    put(out, S, p->bwd[AB_DV].off, dv, K);
    put(out, S, p->bwd[AB_DXN1].off, dxn1, C);
    for (int m = 0; m < ANE_LORA_MODULES; m++)
        if (p->bwd[AB_LORA_V + m].rows) put(out, S, p->bwd[AB_LORA_V + m].off, V(m), p->lora_rank);
#undef V
}

int ane_kernel_reference(const AneLayerPlan *p, AneKernelId id, const uint16_t *in, float *out, Err *err) {
    if (id != ANE_KERNEL_LAYER_FWD && id != ANE_KERNEL_LAYER_BWD)
        return err_set(err, "ane reference: id %d is not a kernel of the plan (0..%d)", (int)id, ANE_KERNELS - 1);
    Ref r = {p, in, p->S, {0}, 0, 0};
    int rows = id == ANE_KERNEL_LAYER_BWD ? p->bwd_C : p->fwd_C;
    memset(out, 0, (size_t)rows * p->S * sizeof *out);
    if (id == ANE_KERNEL_LAYER_BWD) ref_bwd(&r, out);
    else ref_fwd(&r, out);
    for (int i = 0; i < r.n_pool; i++) free(r.pool[i]);
    if (r.oom)
        return err_set(err, "ane reference: out of memory for %s at S = %d", id ? "layer_bwd" : "layer_fwd", p->S);
    return 0;
}
