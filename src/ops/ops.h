/*
** ops.h — the CPU reference ops: the numerical specification of anetrain.
**
** Every layer piece is a forward/backward pair, side by side. Activations are
** channel-first, [C][T] for one sequence (element (c,t) at c*T + t), exactly the ANE's
** [1,C,1,S] surface layout. Weight matrices are [out][in] row-major.
**
** Conventions:
**   - forward writes its outputs; backward ACCUMULATES (+=) into every gradient it is
**     given, parameters and activations alike (as llm.c does), except where a comment
**     says "writes" (rope rotates in place; cross-entropy may work in place).
**   - ops are single-threaded and pure; the backend parallelizes over rows, heads or
**     sequences by calling them on slices.
**   - ops with an `ld` argument (the _ld forms, rmsnorm_rstd/apply/backward_xhat, cross-
**     entropy) take rows of stride ld >= T and touch columns 0..T-1 only: the ANE backend's
**     [C][S] buffers (S = T padded). An unstrided form is its _ld one with ld = T, so both
**     layouts run the same arithmetic.
**   - the same source compiles twice: for `float` (ops_*, used everywhere) and, with
**     OPS_DOUBLE defined, for `double` (ops64_*, used by the finite-difference tests).
**     Declarations below are written once through the OPS() name macro.
**
** Shapes: T tokens, C channels, H query heads, KV key/value heads, D head dim,
** F hidden (SwiGLU) width, V vocabulary.
*/
#ifndef ANETRAIN_OPS_H
#define ANETRAIN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../model/config.h"

#ifdef OPS_DOUBLE
typedef double Real;
#define OPS(name) ops64_##name
#else
typedef float Real;
#define OPS(name) ops_##name
/* forward then backward in one: loss as forward, dlogits as backward (writes; may alias
** logits), without the intermediate normalized probabilities — one pass over [V][n] fewer. */
void OPS(cross_entropy_fused)(Real *loss, Real *dlogits, const Real *logits, const int32_t *targets,
                              const Real *dloss, int V, int n, int ld);

#endif

/* --- token embedding ------------------------------------------------------------
** x[c][t] = emb[tokens[t]][c].   emb [V][C], tokens [T], x [C][T]. Ids are checked by the
** caller (the data loader), never here. */
void OPS(embedding_forward)(Real *x, const int32_t *tokens, const Real *emb, int T, int C);
/* demb[tokens[t]][c] += dx[c][t]. */
void OPS(embedding_backward)(Real *demb, const Real *dx, const int32_t *tokens, int T, int C);
/* The same two with rows of stride ld >= T (x, dx [C][ld], as the ANE's padded [C][S] surfaces):
** only columns 0..T-1 are written or read. The forms above are these with ld = T. */
void OPS(embedding_forward_ld)(Real *x, const int32_t *tokens, const Real *emb, int T, int C, int ld);
void OPS(embedding_backward_ld)(Real *demb, const Real *dx, const int32_t *tokens, int T, int C, int ld);

/* --- RMSNorm over channels -------------------------------------------------------
** rstd[t] = 1/sqrt(mean_c x[c][t]^2 + eps);  out[c][t] = x[c][t] * rstd[t] * w[c].
** x, out [C][T]; w [C]; rstd [T] (saved for backward). Applied per head with C = D for
** Qwen3's q_norm/k_norm: one head's block of a [H*D][T] tensor is itself a [D][T] tensor.
** out may alias x. */
void OPS(rmsnorm_forward)(Real *out, Real *rstd, const Real *x, const Real *w, int C, int T, float eps);
/* dx += d out/dx^T dout;  dw += sum_t dout * x * rstd. */
void OPS(rmsnorm_backward)(Real *dx, Real *dw, const Real *dout, const Real *x, const Real *w, const Real *rstd,
                           int C, int T);

/* The same with rows of stride ld >= T: x, out, dx, dout [C][ld], columns 0..T-1 only (the rest
** neither read nor written). The forward in its two halves: rstd [T] alone, and out from a saved
** rstd. rmsnorm_forward is rstd then apply with ld = T; rmsnorm_backward is backward_ld with
** ld = T (one implementation: the same results bit for bit). */
void OPS(rmsnorm_rstd)(Real *rstd, const Real *x, int C, int T, int ld, float eps);
void OPS(rmsnorm_apply)(Real *out, const Real *x, const Real *rstd, const Real *w, int C, int T, int ld);
/* Either dx or dw may be NULL (skipped); w is read only for dx. */
void OPS(rmsnorm_backward_ld)(Real *dx, Real *dw, const Real *dout, const Real *x, const Real *w, const Real *rstd,
                              int C, int T, int ld);
/* The backward from the normalized input xhat = x * rstd [C][ld] instead of x (what the ANE's
** forward keeps): the same formulas with x * rstd replaced by xhat. rstd is read only for dx
** (NULL with dx NULL). */
void OPS(rmsnorm_backward_xhat)(Real *dx, Real *dw, const Real *dout, const Real *xhat, const Real *w,
                                const Real *rstd, int C, int T, int ld);

/* --- linear layer (BLAS) ---------------------------------------------------------
** y = W x:  W [O][In] @ x [In][T] -> y [O][T]. */
void OPS(linear_forward)(Real *y, const Real *x, const Real *W, int O, int In, int T);
/* dx [In][T] += W^T dy;  dW [O][In] += dy x^T.  Either dx or dW may be NULL (skipped). */
void OPS(linear_backward)(Real *dx, Real *dW, const Real *dy, const Real *x, const Real *W, int O, int In, int T);

/* --- LoRA adapter path beside a linear layer (PEFT's LoraLayer, unmerged) -------------
** y += s B (A xd):  xd [In][T] is the adapter path's input (the layer input after LoRA
** dropout, which the caller applies), A [r][In], B [O][r], s the scaling. u [r][T] receives
** A xd (writes; the backward pass needs it), y [O][T] accumulates. */
void OPS(lora_forward)(Real *y, Real *u, const Real *xd, const Real *A, const Real *B, Real s, int O, int r, int In,
                       int T);
/* du = s Bᵀ dy (writes; scratch [r][T]);  dB += s dy uᵀ;  dA += du xdᵀ;  dxd += Aᵀ du (dxd may be
** NULL). dy [O][T]; u, xd as saved by lora_forward. */
void OPS(lora_backward)(Real *dxd, Real *dA, Real *dB, Real *du, const Real *dy, const Real *xd, const Real *u,
                        const Real *A, const Real *B, Real s, int O, int r, int In, int T);

/* The same layer with its output token-major, for wide outputs such as the classifier's
** logits: yt [T][O] = (W x)^T, row t holding position t's O outputs contiguously. x [In][T]
** stays channel-first. */
void OPS(linear_forward_tokens)(Real *yt, const Real *x, const Real *W, int O, int In, int T);
/* dx [In][T] += W^T dyt^T;  dW [O][In] += dyt^T x^T, for dyt [T][O]. Either may be NULL. */
void OPS(linear_backward_tokens)(Real *dx, Real *dW, const Real *dyt, const Real *x, const Real *W, int O, int In,
                                 int T);

/* --- rotary position embedding ---------------------------------------------------
** Table for positions pos0..pos0+T-1: angle[t][i] = (pos0+t) * theta^(-2i/D), i < D/2.
** cos_tab, sin_tab [T][D/2], computed in double precision. */
void OPS(rope_table)(Real *cos_tab, Real *sin_tab, int T, int D, int pos0, double theta);
/* Rotates each head of x [NH*D][T] in place, pairing channels by `style` (config.h). */
void OPS(rope_forward)(Real *x, const Real *cos_tab, const Real *sin_tab, int NH, int D, int T, RopeStyle style);
/* The transpose of a rotation is the rotation back: rotates dx [NH*D][T] in place by -angle (writes). */
void OPS(rope_backward)(Real *dx, const Real *cos_tab, const Real *sin_tab, int NH, int D, int T, RopeStyle style);

/* --- causal self-attention (BLAS) ------------------------------------------------
** For query head h and its KV head h / (H/KV):
**   P = softmax(mask(q_h^T k_h / sqrt(D)))  [T][T], row = query, col = key, key <= query
**   out_h = v_h P^T                          [D][T]
** q, out [H*D][T]; k, v [KV*D][T]. Only KV heads kv_begin..kv_end-1 (and their query
** heads) are processed, so callers can split the work across threads without races.
** scratch holds T*T Reals. P is not stored: backward recomputes it (memory O(T^2), not
** O(L*H*T^2)). */
void OPS(attention_forward)(Real *out, const Real *q, const Real *k, const Real *v, int H, int KV, int D, int T,
                            int kv_begin, int kv_end, Real *scratch);
/* dq += , dk += , dv += the gradients of the above given dout [H*D][T]. scratch: 2*T*T Reals. */
void OPS(attention_backward)(Real *dq, Real *dk, Real *dv, const Real *dout, const Real *q, const Real *k,
                             const Real *v, int H, int KV, int D, int T, int kv_begin, int kv_end, Real *scratch);

/* --- SwiGLU ----------------------------------------------------------------------
** g = silu(h1) * h3, elementwise over n values (h1 = w1 x is the gate, h3 = w3 x the up). */
void OPS(swiglu_forward)(Real *g, const Real *h1, const Real *h3, size_t n);
/* dh1 += dg * h3 * silu'(h1);  dh3 += dg * silu(h1). */
void OPS(swiglu_backward)(Real *dh1, Real *dh3, const Real *dg, const Real *h1, const Real *h3, size_t n);

/* --- cross-entropy over the vocabulary -------------------------------------------
** logits, probs [V][ld], columns 0..n-1 of them (ld >= n lets a caller process a slice of
** a [V][T] tensor). loss[t] = -log softmax(logits[:, t])[targets[t]].  probs may alias
** logits (the softmax is then computed in place).
** An ignored position (targets[t] < 0: padding, or a prompt token under a masked loss; PyTorch's
** ignore_index) has loss[t] = 0 and, in every function here and below, dlogits[:, t] = 0 whatever
** dloss[t]; its probs are still the softmax. */
void OPS(cross_entropy_forward)(Real *loss, Real *probs, const Real *logits, const int32_t *targets, int V, int n,
                                int ld);
/* Writes dlogits[v][t] = dloss[t] * (probs[v][t] - [v == targets[t]]); dlogits may alias probs. */
void OPS(cross_entropy_backward)(Real *dlogits, const Real *probs, const int32_t *targets, const Real *dloss, int V,
                                 int n, int ld);

/* forward then backward in one: loss as forward, dlogits as backward (writes; may alias
** logits), without the intermediate normalized probabilities — one pass over [V][n] fewer. */
void OPS(cross_entropy_fused)(Real *loss, Real *dlogits, const Real *logits, const int32_t *targets,
                              const Real *dloss, int V, int n, int ld);

/* --- cross-entropy, token-major --------------------------------------------------
** The same loss over logits stored one row per position: logits [n][V], row t holding
** position t's V logits contiguously (what linear_forward_tokens writes). A row is 4V bytes,
** so its softmax passes run in cache. loss[t] = -log softmax(logits[t])[targets[t]]; an ignored
** position (targets[t] < 0) has loss[t] = 0 and dlogits[t] = 0. */
void OPS(cross_entropy_rows_forward)(Real *loss, const Real *logits, const int32_t *targets, int V, int n);
/* Loss as above, and (writes; dlogits may alias logits)
**   dlogits[t][v] = dloss[t] * (softmax(logits[t])[v] - [v == targets[t]]). */
void OPS(cross_entropy_rows_fused)(Real *loss, Real *dlogits, const Real *logits, const int32_t *targets,
                                   const Real *dloss, int V, int n);

#endif
