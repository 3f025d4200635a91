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
#define EXP exp_vec
#define SQRT sqrtf
#define LOG logf

/* expf in plain arithmetic so that loops calling it vectorize (libm's expf is a call the
** compiler cannot vectorize without -ffast-math). x = n ln2 + r with |r| <= ln2/2 (ln2 split
** in two for an exact product), exp(r) by a degree-7 polynomial (Cephes' expf coefficients),
** times 2^n built in the exponent bits. Relative error below 2e-7 (about 2 ulp) over the
** whole range; inputs below -87.3 give 0 and above 88.7 are clamped (88.7 -> 3.3e38). */
static inline float exp_vec(float x) {
    float xc = x > 88.7f ? 88.7f : x;
    xc = xc < -87.3f ? -87.3f : xc;
    float n = floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.3f ? 0.0f : p * scale;
}
#endif

/* ---------------------------------------------------------------- row reductions */

/* Reductions over a contiguous row (softmax of attention and of the token-major
** cross-entropy) keep ROW_LANES independent partial results: a single running result is a
** chain of dependent operations, while the lanes vectorize without the compiler having to
** reassociate. The order is fixed by n alone, so results never depend on the thread count. */
enum { ROW_LANES = 16 };

static Real row_max(const Real *row, int n) {
    Real lane[ROW_LANES];
    for (int k = 0; k < ROW_LANES; k++) lane[k] = row[0];
    int i = 0;
    for (; i + ROW_LANES <= n; i += ROW_LANES)
        for (int k = 0; k < ROW_LANES; k++) lane[k] = row[i + k] > lane[k] ? row[i + k] : lane[k];
    Real mx = row[0];
    for (; i < n; i++) mx = row[i] > mx ? row[i] : mx;
    for (int k = 0; k < ROW_LANES; k++) mx = lane[k] > mx ? lane[k] : mx;
    return mx;
}

/* sum_i exp(row[i] - mx) over i < n. */
static Real row_sum_exp(const Real *row, int n, Real mx) {
    Real lane[ROW_LANES] = {0};
    int i = 0;
    for (; i + ROW_LANES <= n; i += ROW_LANES)
        for (int k = 0; k < ROW_LANES; k++) lane[k] += EXP(row[i + k] - mx);
    Real sum = 0;
    for (; i < n; i++) sum += EXP(row[i] - mx);
    for (int k = 0; k < ROW_LANES; k++) sum += lane[k];
    return sum;
}

/* row[i] = exp(row[i] - mx) in place; returns their sum (in the same order as row_sum_exp). */
static Real row_exp(Real *row, int n, Real mx) {
    Real lane[ROW_LANES] = {0};
    int i = 0;
    for (; i + ROW_LANES <= n; i += ROW_LANES)
        for (int k = 0; k < ROW_LANES; k++) {
            row[i + k] = EXP(row[i + k] - mx);
            lane[k] += row[i + k];
        }
    Real sum = 0;
    for (; i < n; i++) {
        row[i] = EXP(row[i] - mx);
        sum += row[i];
    }
    for (int k = 0; k < ROW_LANES; k++) sum += lane[k];
    return sum;
}

/* sum_i a[i] * b[i] over i < n, in the same lanes. */
static Real row_dot(const Real *a, const Real *b, int n) {
    Real lane[ROW_LANES] = {0};
    int i = 0;
    for (; i + ROW_LANES <= n; i += ROW_LANES)
        for (int k = 0; k < ROW_LANES; k++) lane[k] += a[i + k] * b[i + k];
    Real sum = 0;
    for (; i < n; i++) sum += a[i] * b[i];
    for (int k = 0; k < ROW_LANES; k++) sum += lane[k];
    return sum;
}

/* ---------------------------------------------------------------- embedding */

void OPS(embedding_forward)(Real *x, const int32_t *tokens, const Real *emb, int T, int C) {
    OPS(embedding_forward_ld)(x, tokens, emb, T, C, T);
}

void OPS(embedding_forward_ld)(Real *x, const int32_t *tokens, const Real *emb, int T, int C, int ld) {
    for (int t = 0; t < T; t++) {
        const Real *row = emb + (size_t)tokens[t] * C;
        for (int c = 0; c < C; c++) x[(size_t)c * ld + t] = row[c];
    }
}

void OPS(embedding_backward)(Real *demb, const Real *dx, const int32_t *tokens, int T, int C) {
    OPS(embedding_backward_ld)(demb, dx, tokens, T, C, T);
}

void OPS(embedding_backward_ld)(Real *demb, const Real *dx, const int32_t *tokens, int T, int C, int ld) {
    for (int t = 0; t < T; t++) {
        Real *row = demb + (size_t)tokens[t] * C;
        for (int c = 0; c < C; c++) row[c] += dx[(size_t)c * ld + t];
    }
}

/* ---------------------------------------------------------------- RMSNorm */

void OPS(rmsnorm_forward)(Real *out, Real *rstd, const Real *x, const Real *w, int C, int T, float eps) {
    OPS(rmsnorm_rstd)(rstd, x, C, T, T, eps);
    OPS(rmsnorm_apply)(out, x, rstd, w, C, T, T);
}

void OPS(rmsnorm_rstd)(Real *rstd, const Real *x, int C, int T, int ld, float eps) {
    /* Sum of squares per column, accumulated row by row so the inner loop is contiguous. */
    for (int t = 0; t < T; t++) rstd[t] = 0;
    for (int c = 0; c < C; c++) {
        const Real *xr = x + (size_t)c * ld;
        for (int t = 0; t < T; t++) rstd[t] += xr[t] * xr[t];
    }
    for (int t = 0; t < T; t++) rstd[t] = 1 / SQRT(rstd[t] / C + (Real)eps);
}

void OPS(rmsnorm_apply)(Real *out, const Real *x, const Real *rstd, const Real *w, int C, int T, int ld) {
    for (int c = 0; c < C; c++) {
        const Real *xr = x + (size_t)c * ld;
        Real *orow = out + (size_t)c * ld;
        for (int t = 0; t < T; t++) orow[t] = xr[t] * rstd[t] * w[c];
    }
}

/* The backward of every form below, over columns 0..T-1 of [C][ld] tensors. x is the norm's
** input, or with x_is_xhat its normalized input xhat = x * rstd. dx or dw may be NULL (skipped;
** w is read for dx only, rstd for dx and for normalizing x). With n = x*r (r = rstd) and y = n*w:
**   dw_c += sum_t dy*n;   dx = r*(w*dy) - n * mean_c(w*dy*n)
** Columns go in chunks of CHUNK: dw_c adds one partial sum per chunk. Inlined into each form,
** whose constant x_is_xhat (and the loop-invariant NULL tests) the compiler hoists out. */
static inline void rmsnorm_backward_cols(Real *dx, Real *dw, const Real *dout, const Real *x, int x_is_xhat,
                                         const Real *w, const Real *rstd, int C, int T, int ld) {
    enum { CHUNK = 256 };
    Real dot[CHUNK];
    for (int t0 = 0; t0 < T; t0 += CHUNK) {
        int n = T - t0 < CHUNK ? T - t0 : CHUNK;
        for (int t = 0; t < n; t++) dot[t] = 0;
        for (int c = 0; c < C; c++) {
            const Real *xr = x + (size_t)c * ld + t0, *dr = dout + (size_t)c * ld + t0;
            const Real *r = rstd ? rstd + t0 : NULL;
            Real wc = dx ? w[c] : 0, dwc = 0;
            for (int t = 0; t < n; t++) {
                Real normed = x_is_xhat ? xr[t] : xr[t] * r[t];
                if (dw) dwc += dr[t] * normed;
                if (dx) dot[t] += wc * dr[t] * normed;
            }
            if (dw) dw[c] += dwc;
        }
        if (!dx) continue;
        for (int t = 0; t < n; t++) dot[t] /= C;
        for (int c = 0; c < C; c++) {
            const Real *xr = x + (size_t)c * ld + t0, *dr = dout + (size_t)c * ld + t0;
            const Real *r = rstd + t0;
            Real *dxr = dx + (size_t)c * ld + t0;
            Real wc = w[c];
            for (int t = 0; t < n; t++) {
                Real normed = x_is_xhat ? xr[t] : xr[t] * r[t];
                dxr[t] += r[t] * (wc * dr[t] - normed * dot[t]);
            }
        }
    }
}

void OPS(rmsnorm_backward)(Real *dx, Real *dw, const Real *dout, const Real *x, const Real *w, const Real *rstd,
                           int C, int T) {
    rmsnorm_backward_cols(dx, dw, dout, x, 0, w, rstd, C, T, T);
}

void OPS(rmsnorm_backward_ld)(Real *dx, Real *dw, const Real *dout, const Real *x, const Real *w, const Real *rstd,
                              int C, int T, int ld) {
    rmsnorm_backward_cols(dx, dw, dout, x, 0, w, rstd, C, T, ld);
}

void OPS(rmsnorm_backward_xhat)(Real *dx, Real *dw, const Real *dout, const Real *xhat, const Real *w,
                                const Real *rstd, int C, int T, int ld) {
    rmsnorm_backward_cols(dx, dw, dout, xhat, 1, w, rstd, C, T, ld);
}

/* ---------------------------------------------------------------- linear */

void OPS(linear_forward)(Real *y, const Real *x, const Real *W, int O, int In, int T) {
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, O, T, In, 1, W, In, x, T, 0, y, T);
}

void OPS(linear_backward)(Real *dx, Real *dW, const Real *dy, const Real *x, const Real *W, int O, int In, int T) {
    if (dx) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, In, T, O, 1, W, In, dy, T, 1, dx, T);
    if (dW) GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, O, In, T, 1, dy, T, x, T, 1, dW, In);
}

/* ---------------------------------------------------------------- LoRA adapter path */

void OPS(lora_forward)(Real *y, Real *u, const Real *xd, const Real *A, const Real *B, Real s, int O, int r, int In,
                       int T) {
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, T, In, 1, A, In, xd, T, 0, u, T); /* u = A xd */
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, O, T, r, s, B, r, u, T, 1, y, T);    /* y += s B u */
}

void OPS(lora_backward)(Real *dxd, Real *dA, Real *dB, Real *du, const Real *dy, const Real *xd, const Real *u,
                        const Real *A, const Real *B, Real s, int O, int r, int In, int T) {
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, O, r, T, s, dy, T, u, T, 1, dB, r);   /* dB += s dy uᵀ */
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, r, T, O, s, B, r, dy, T, 0, du, T);   /* du = s Bᵀ dy */
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, r, In, T, 1, du, T, xd, T, 1, dA, In); /* dA += du xdᵀ */
    if (dxd) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, In, T, r, 1, A, In, du, T, 1, dxd, T); /* dxd += Aᵀ du */
}

void OPS(linear_forward_tokens)(Real *yt, const Real *x, const Real *W, int O, int In, int T) {
    /* yt [T][O] = x^T [T][In] @ W^T [In][O] */
    GEMM(CblasRowMajor, CblasTrans, CblasTrans, T, O, In, 1, x, T, W, In, 0, yt, O);
}

void OPS(linear_backward_tokens)(Real *dx, Real *dW, const Real *dyt, const Real *x, const Real *W, int O, int In,
                                 int T) {
    /* dx [In][T] += W^T [In][O] @ dyt^T [O][T];  dW [O][In] += dyt^T [O][T] @ x^T [T][In] */
    if (dx) GEMM(CblasRowMajor, CblasTrans, CblasTrans, In, T, O, 1, W, In, dyt, O, 1, dx, T);
    if (dW) GEMM(CblasRowMajor, CblasTrans, CblasTrans, O, In, T, 1, dyt, O, x, T, 1, dW, In);
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

/* Causal attention is computed in blocks of ATTN_BLOCK queries: query rows [i0, i1) only see
** keys [0, i1), so each block's matmuls stop at column i1 and the masked upper triangle is
** never computed (about 40% of the attention FLOPs at T = 256). */
enum { ATTN_BLOCK = 64 };

/* Rows [i0, i1) of P = causal softmax of scale * q_h^T k_h (row = query), columns [0, i1):
** P[i][j] for j <= i, and 0 for i < j < i1. P is [T][T] row-major; other entries untouched. */
static void attention_probs_block(Real *P, const Real *qh, const Real *kh, int D, int T, Real scale, int i0,
                                  int i1) {
    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, i1 - i0, i1, D, scale, qh + i0, T, kh, T, 0, P + (size_t)i0 * T, T);
    for (int i = i0; i < i1; i++) {
        Real *row = P + (size_t)i * T;
        Real inv = 1 / row_exp(row, i + 1, row_max(row, i + 1));
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < i1; j++) row[j] = 0;
    }
}

void OPS(attention_forward)(Real *out, const Real *q, const Real *k, const Real *v, int H, int KV, int D, int T,
                            int kv_begin, int kv_end, Real *scratch) {
    int group = H / KV;
    Real scale = 1 / SQRT((Real)D);
    size_t head = (size_t)D * T;
    for (int g = kv_begin; g < kv_end; g++) {
        for (int h = g * group; h < (g + 1) * group; h++) {
            for (int i0 = 0; i0 < T; i0 += ATTN_BLOCK) {
                int i1 = i0 + ATTN_BLOCK < T ? i0 + ATTN_BLOCK : T;
                attention_probs_block(scratch, q + h * head, k + g * head, D, T, scale, i0, i1);
                /* out_h[:, i0:i1] [D][Tq] = v_g[:, 0:i1] [D][Tk] @ P[i0:i1, 0:i1]^T */
                GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, D, i1 - i0, i1, 1, v + g * head, T,
                     scratch + (size_t)i0 * T, T, 0, out + h * head + i0, T);
            }
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
            for (int i0 = 0; i0 < T; i0 += ATTN_BLOCK) {
                int i1 = i0 + ATTN_BLOCK < T ? i0 + ATTN_BLOCK : T, n = i1 - i0;
                Real *Pb = P + (size_t)i0 * T, *dSb = dS + (size_t)i0 * T; /* rows i0..i1-1, columns 0..i1-1 */
                attention_probs_block(P, qh, kg, D, T, scale, i0, i1);
                /* dv_g[:, 0:i1] [D][Tk] += dout_h[:, i0:i1] [D][n] @ Pb [n][Tk] */
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, i1, n, 1, doh + i0, T, Pb, T, 1, dv + g * head, T);
                /* dPb [n][Tk] = dout_h[:, i0:i1]^T v_g[:, 0:i1] */
                GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, n, i1, D, 1, doh + i0, T, vg, T, 0, dSb, T);
                /* softmax backward: dS = P * (dP - sum_j dP*P), zero where P is masked */
                for (int i = i0; i < i1; i++) {
                    Real *prow = P + (size_t)i * T, *drow = dS + (size_t)i * T;
                    Real dot = row_dot(prow, drow, i + 1);
                    for (int j = 0; j <= i; j++) drow[j] = prow[j] * (drow[j] - dot);
                    for (int j = i + 1; j < i1; j++) drow[j] = 0;
                }
                /* dq_h[:, i0:i1] += scale * k_g[:, 0:i1] @ dSb^T;  dk_g[:, 0:i1] += scale * q_h[:, i0:i1] @ dSb */
                GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, D, n, i1, scale, kg, T, dSb, T, 1, dq + h * head + i0, T);
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, i1, n, scale, qh + i0, T, dSb, T, 1, dk + g * head,
                     T);
            }
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

enum { CE_CHUNK = 64 }; /* columns per pass: each pass streams the rows with a contiguous inner loop */

/* Columns t0..t0+m-1 (m <= CE_CHUNK): out[v][t] = exp(logits[v][t] - max_v logits[:, t]),
** loss[t] = logsumexp - logits[target][t], and scale[t] = 1 / sum_v out[v][t]. out may alias
** logits (the target's logit is read before it is overwritten). */
static void ce_exp_columns(Real *loss, Real *out, Real *scale, const Real *logits, const int32_t *targets, int V,
                           int m, int ld) {
    Real mx[CE_CHUNK], sum[CE_CHUNK];
    for (int t = 0; t < m; t++) {
        mx[t] = logits[t];
        sum[t] = 0;
    }
    for (int v = 1; v < V; v++) {
        const Real *row = logits + (size_t)v * ld;
        for (int t = 0; t < m; t++) mx[t] = row[t] > mx[t] ? row[t] : mx[t];
    }
    for (int t = 0; t < m; t++) loss[t] = targets[t] < 0 ? 0 : mx[t] - logits[(size_t)targets[t] * ld + t];
    for (int v = 0; v < V; v++) {
        const Real *row = logits + (size_t)v * ld;
        Real *orow = out + (size_t)v * ld;
        for (int t = 0; t < m; t++) {
            orow[t] = EXP(row[t] - mx[t]);
            sum[t] += orow[t];
        }
    }
    for (int t = 0; t < m; t++) {
        if (targets[t] >= 0) loss[t] += LOG(sum[t]); /* an ignored position's loss stays 0 */
        scale[t] = 1 / sum[t];
    }
}

/* out[v][t] *= scale[t] over columns 0..m-1. */
static void ce_scale_columns(Real *out, const Real *scale, int V, int m, int ld) {
    for (int v = 0; v < V; v++) {
        Real *orow = out + (size_t)v * ld;
        for (int t = 0; t < m; t++) orow[t] *= scale[t];
    }
}

void OPS(cross_entropy_forward)(Real *loss, Real *probs, const Real *logits, const int32_t *targets, int V, int n,
                                int ld) {
    Real scale[CE_CHUNK];
    for (int t0 = 0; t0 < n; t0 += CE_CHUNK) {
        int m = n - t0 < CE_CHUNK ? n - t0 : CE_CHUNK;
        ce_exp_columns(loss + t0, probs + t0, scale, logits + t0, targets + t0, V, m, ld);
        ce_scale_columns(probs + t0, scale, V, m, ld);
    }
}

void OPS(cross_entropy_fused)(Real *loss, Real *dlogits, const Real *logits, const int32_t *targets,
                              const Real *dloss, int V, int n, int ld) {
    Real scale[CE_CHUNK];
    for (int t0 = 0; t0 < n; t0 += CE_CHUNK) {
        int m = n - t0 < CE_CHUNK ? n - t0 : CE_CHUNK;
        ce_exp_columns(loss + t0, dlogits + t0, scale, logits + t0, targets + t0, V, m, ld);
        for (int t = 0; t < m; t++) /* exp -> dloss * probs; 0 at an ignored position */
            scale[t] = targets[t0 + t] < 0 ? 0 : scale[t] * dloss[t0 + t];
        ce_scale_columns(dlogits + t0, scale, V, m, ld);
        for (int t = 0; t < m; t++)
            if (targets[t0 + t] >= 0) dlogits[(size_t)targets[t0 + t] * ld + t0 + t] -= dloss[t0 + t];
    }
}

void OPS(cross_entropy_backward)(Real *dlogits, const Real *probs, const int32_t *targets, const Real *dloss, int V,
                                 int n, int ld) {
    for (int v = 0; v < V; v++) {
        const Real *prow = probs + (size_t)v * ld;
        Real *drow = dlogits + (size_t)v * ld;
        for (int t = 0; t < n; t++) drow[t] = dloss[t] * prow[t];
    }
    for (int t = 0; t < n; t++) {
        if (targets[t] >= 0) {
            dlogits[(size_t)targets[t] * ld + t] -= dloss[t];
        } else { /* an ignored position: no gradient */
            for (int v = 0; v < V; v++) dlogits[(size_t)v * ld + t] = 0;
        }
    }
}

/* ---------------------------------------------------------------- cross-entropy, token-major */

void OPS(cross_entropy_rows_forward)(Real *loss, const Real *logits, const int32_t *targets, int V, int n) {
    for (int t = 0; t < n; t++) {
        if (targets[t] < 0) { /* ignored */
            loss[t] = 0;
            continue;
        }
        const Real *row = logits + (size_t)t * V;
        Real mx = row_max(row, V);
        loss[t] = mx - row[targets[t]] + LOG(row_sum_exp(row, V, mx));
    }
}

void OPS(cross_entropy_rows_fused)(Real *loss, Real *dlogits, const Real *logits, const int32_t *targets,
                                   const Real *dloss, int V, int n) {
    for (int t = 0; t < n; t++) {
        Real *row = dlogits + (size_t)t * V;
        const Real *in = logits + (size_t)t * V;
        if (targets[t] < 0) { /* ignored: no loss, no gradient */
            loss[t] = 0;
            memset(row, 0, (size_t)V * sizeof *row);
            continue;
        }
        if (row != in) memcpy(row, in, (size_t)V * sizeof *row);
        Real mx = row_max(row, V);
        Real target_logit = row[targets[t]];
        Real sum = row_exp(row, V, mx); /* row = exp(logit - max) */
        loss[t] = mx - target_logit + LOG(sum);
        Real scale = dloss[t] / sum; /* exp -> dloss * probs */
        for (int v = 0; v < V; v++) row[v] *= scale;
        row[targets[t]] -= dloss[t];
    }
}
