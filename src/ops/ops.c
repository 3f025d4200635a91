/*
** ops.c — CPU reference ops (see ops.h for the conventions and shapes).
**
** Compiled twice: as float (ops_*) and, with -DOPS_DOUBLE, as double (ops64_*) for the
** finite-difference tests. Nothing here allocates, threads or fails.
*/
#include "ops.h"

#include <math.h>
#include <string.h>

#include "../util/blas.h"

#ifdef OPS_DOUBLE
#define GEMM cblas_dgemm
#define EXP exp
#define SQRT sqrt
#define LOG log
#else
#define GEMM cblas_sgemm
#define EXP expf
#define SQRT sqrtf
#define LOG logf
#endif

/* ---------------------------------------------------------------- embedding */

void OPS(embedding_forward)(Real *x, const int32_t *tokens, const Real *emb, int T, int C) {
    for (int t = 0; t < T; t++) {
        const Real *row = emb + (size_t)tokens[t] * C;
        for (int c = 0; c < C; c++) x[(size_t)c * T + t] = row[c];
    }
}

void OPS(embedding_backward)(Real *demb, const Real *dx, const int32_t *tokens, int T, int C) {
    for (int t = 0; t < T; t++) {
        Real *row = demb + (size_t)tokens[t] * C;
        for (int c = 0; c < C; c++) row[c] += dx[(size_t)c * T + t];
    }
}

/* ---------------------------------------------------------------- RMSNorm */

void OPS(rmsnorm_forward)(Real *out, Real *rstd, const Real *x, const Real *w, int C, int T, float eps) {
    /* Sum of squares per column, accumulated row by row so the inner loop is contiguous. */
    for (int t = 0; t < T; t++) rstd[t] = 0;
    for (int c = 0; c < C; c++) {
        const Real *xr = x + (size_t)c * T;
        for (int t = 0; t < T; t++) rstd[t] += xr[t] * xr[t];
    }
    for (int t = 0; t < T; t++) rstd[t] = 1 / SQRT(rstd[t] / C + (Real)eps);
    for (int c = 0; c < C; c++) {
        const Real *xr = x + (size_t)c * T;
        Real *orow = out + (size_t)c * T;
        for (int t = 0; t < T; t++) orow[t] = xr[t] * rstd[t] * w[c];
    }
}

void OPS(rmsnorm_backward)(Real *dx, Real *dw, const Real *dout, const Real *x, const Real *w, const Real *rstd,
                           int C, int T) {
    /* With n = x*r (r = rstd) and y = n*w:
    **   dw_c += sum_t dy*n;   dx = r*(w*dy) - n * mean_c(w*dy*n) */
    enum { CHUNK = 256 };
    Real dot[CHUNK];
    for (int t0 = 0; t0 < T; t0 += CHUNK) {
        int n = T - t0 < CHUNK ? T - t0 : CHUNK;
        for (int t = 0; t < n; t++) dot[t] = 0;
        for (int c = 0; c < C; c++) {
            const Real *xr = x + (size_t)c * T + t0, *dr = dout + (size_t)c * T + t0;
            const Real *r = rstd + t0;
            Real wc = w[c], dwc = 0;
            for (int t = 0; t < n; t++) {
                Real normed = xr[t] * r[t];
                dwc += dr[t] * normed;
                dot[t] += wc * dr[t] * normed;
            }
            dw[c] += dwc;
        }
        for (int t = 0; t < n; t++) dot[t] /= C;
        for (int c = 0; c < C; c++) {
            const Real *xr = x + (size_t)c * T + t0, *dr = dout + (size_t)c * T + t0;
            const Real *r = rstd + t0;
            Real *dxr = dx + (size_t)c * T + t0;
            Real wc = w[c];
            for (int t = 0; t < n; t++) dxr[t] += r[t] * (wc * dr[t] - xr[t] * r[t] * dot[t]);
        }
    }
}

/* ---------------------------------------------------------------- linear */

void OPS(linear_forward)(Real *y, const Real *x, const Real *W, int O, int In, int T) {
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, O, T, In, 1, W, In, x, T, 0, y, T);
}

void OPS(linear_backward)(Real *dx, Real *dW, const Real *dy, const Real *x, const Real *W, int O, int In, int T) {
    if (dx) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, In, T, O, 1, W, In, dy, T, 1, dx, T);
    if (dW) GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, O, In, T, 1, dy, T, x, T, 1, dW, In);
}

/* ---------------------------------------------------------------- RoPE */

void OPS(rope_table)(Real *cos_tab, Real *sin_tab, int T, int D, int pos0, double theta) {
    int half = D / 2;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            double angle = (double)(pos0 + t) * pow(theta, -2.0 * i / D);
            cos_tab[(size_t)t * half + i] = (Real)cos(angle);
            sin_tab[(size_t)t * half + i] = (Real)sin(angle);
        }
    }
}

/* Rotates every pair of every head by `sign` times the table's angle. */
static void rope_rotate(Real *x, const Real *cos_tab, const Real *sin_tab, int NH, int D, int T, RopeStyle style,
                        Real sign) {
    int half = D / 2;
    for (int h = 0; h < NH; h++) {
        Real *head = x + (size_t)h * D * T;
        for (int i = 0; i < half; i++) {
            int ca = style == ROPE_INTERLEAVED ? 2 * i : i;
            int cb = style == ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
            Real *ra = head + (size_t)ca * T, *rb = head + (size_t)cb * T;
            for (int t = 0; t < T; t++) {
                Real c = cos_tab[(size_t)t * half + i], s = sign * sin_tab[(size_t)t * half + i];
                Real a = ra[t], b = rb[t];
                ra[t] = a * c - b * s;
                rb[t] = a * s + b * c;
            }
        }
    }
}

void OPS(rope_forward)(Real *x, const Real *cos_tab, const Real *sin_tab, int NH, int D, int T, RopeStyle style) {
    rope_rotate(x, cos_tab, sin_tab, NH, D, T, style, 1);
}

void OPS(rope_backward)(Real *dx, const Real *cos_tab, const Real *sin_tab, int NH, int D, int T, RopeStyle style) {
    rope_rotate(dx, cos_tab, sin_tab, NH, D, T, style, -1);
}

/* ---------------------------------------------------------------- attention */

/* P = causal softmax of scale * q_h^T k_h; rows are queries. Entries above the diagonal are 0. */
static void attention_probs(Real *P, const Real *qh, const Real *kh, int D, int T, Real scale) {
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, T, D, scale, qh, T, kh, T, 0, P, T);
    for (int i = 0; i < T; i++) {
        Real *row = P + (size_t)i * T;
        Real mx = row[0];
        for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
        Real sum = 0;
        for (int j = 0; j <= i; j++) {
            row[j] = EXP(row[j] - mx);
            sum += row[j];
        }
        Real inv = 1 / sum;
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < T; j++) row[j] = 0;
    }
}

void OPS(attention_forward)(Real *out, const Real *q, const Real *k, const Real *v, int H, int KV, int D, int T,
                            int kv_begin, int kv_end, Real *scratch) {
    int group = H / KV;
    Real scale = 1 / SQRT((Real)D);
    size_t head = (size_t)D * T;
    for (int g = kv_begin; g < kv_end; g++) {
        for (int h = g * group; h < (g + 1) * group; h++) {
            attention_probs(scratch, q + h * head, k + g * head, D, T, scale);
            /* out_h [D][Tq] = v_g [D][Tk] @ P^T */
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, D, T, T, 1, v + g * head, T, scratch, T, 0, out + h * head,
                 T);
        }
    }
}

void OPS(attention_backward)(Real *dq, Real *dk, Real *dv, const Real *dout, const Real *q, const Real *k,
                             const Real *v, int H, int KV, int D, int T, int kv_begin, int kv_end, Real *scratch) {
    int group = H / KV;
    Real scale = 1 / SQRT((Real)D);
    size_t head = (size_t)D * T;
    Real *P = scratch, *dS = scratch + (size_t)T * T;
    for (int g = kv_begin; g < kv_end; g++) {
        for (int h = g * group; h < (g + 1) * group; h++) {
            const Real *qh = q + h * head, *kg = k + g * head, *vg = v + g * head, *doh = dout + h * head;
            attention_probs(P, qh, kg, D, T, scale);
            /* dv_g [D][Tk] += dout_h [D][Tq] @ P [Tq][Tk] */
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, T, T, 1, doh, T, P, T, 1, dv + g * head, T);
            /* dP [Tq][Tk] = dout_h^T v_g */
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, T, T, D, 1, doh, T, vg, T, 0, dS, T);
            /* softmax backward: dS = P * (dP - sum_j dP*P) (zero above the diagonal since P is) */
            for (int i = 0; i < T; i++) {
                Real *prow = P + (size_t)i * T, *drow = dS + (size_t)i * T;
                Real dot = 0;
                for (int j = 0; j <= i; j++) dot += prow[j] * drow[j];
                for (int j = 0; j <= i; j++) drow[j] = prow[j] * (drow[j] - dot);
                for (int j = i + 1; j < T; j++) drow[j] = 0;
            }
            /* dq_h [D][Tq] += scale * k_g [D][Tk] @ dS^T;  dk_g [D][Tk] += scale * q_h [D][Tq] @ dS */
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, D, T, T, scale, kg, T, dS, T, 1, dq + h * head, T);
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, T, T, scale, qh, T, dS, T, 1, dk + g * head, T);
        }
    }
}

/* ---------------------------------------------------------------- SwiGLU */

void OPS(swiglu_forward)(Real *g, const Real *h1, const Real *h3, size_t n) {
    for (size_t i = 0; i < n; i++) {
        Real s = 1 / (1 + EXP(-h1[i]));
        g[i] = h1[i] * s * h3[i];
    }
}

void OPS(swiglu_backward)(Real *dh1, Real *dh3, const Real *dg, const Real *h1, const Real *h3, size_t n) {
    for (size_t i = 0; i < n; i++) {
        Real s = 1 / (1 + EXP(-h1[i]));
        Real silu = h1[i] * s;
        dh1[i] += dg[i] * h3[i] * s * (1 + h1[i] * (1 - s));
        dh3[i] += dg[i] * silu;
    }
}

/* ---------------------------------------------------------------- cross-entropy */

void OPS(cross_entropy_forward)(Real *loss, Real *probs, const Real *logits, const int32_t *targets, int V, int n,
                                int ld) {
    enum { CHUNK = 64 };
    Real mx[CHUNK], sum[CHUNK];
    /* Columns in chunks: each pass streams the rows of the chunk with a contiguous inner loop. */
    for (int t0 = 0; t0 < n; t0 += CHUNK) {
        int m = n - t0 < CHUNK ? n - t0 : CHUNK;
        for (int t = 0; t < m; t++) {
            mx[t] = logits[t0 + t];
            sum[t] = 0;
        }
        for (int v = 1; v < V; v++) {
            const Real *row = logits + (size_t)v * ld + t0;
            for (int t = 0; t < m; t++) mx[t] = row[t] > mx[t] ? row[t] : mx[t];
        }
        for (int t = 0; t < m; t++) loss[t0 + t] = mx[t] - logits[(size_t)targets[t0 + t] * ld + t0 + t];
        for (int v = 0; v < V; v++) {
            const Real *row = logits + (size_t)v * ld + t0;
            Real *prow = probs + (size_t)v * ld + t0;
            for (int t = 0; t < m; t++) {
                prow[t] = EXP(row[t] - mx[t]);
                sum[t] += prow[t];
            }
        }
        for (int t = 0; t < m; t++) {
            loss[t0 + t] += LOG(sum[t]);
            sum[t] = 1 / sum[t];
        }
        for (int v = 0; v < V; v++) {
            Real *prow = probs + (size_t)v * ld + t0;
            for (int t = 0; t < m; t++) prow[t] *= sum[t];
        }
    }
}

void OPS(cross_entropy_backward)(Real *dlogits, const Real *probs, const int32_t *targets, const Real *dloss, int V,
                                 int n, int ld) {
    for (int v = 0; v < V; v++) {
        const Real *prow = probs + (size_t)v * ld;
        Real *drow = dlogits + (size_t)v * ld;
        for (int t = 0; t < n; t++) drow[t] = dloss[t] * prow[t];
    }
    for (int t = 0; t < n; t++) dlogits[(size_t)targets[t] * ld + t] -= dloss[t];
}
