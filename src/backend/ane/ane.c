/*
** ane.c — the ANE backend: one training micro-batch with every layer's forward and
** backward-dx on an ANE device (the emulator, or the real one behind the same seam), and the
** rest on the CPU.
**
** Per step (B sequences of T tokens, S = T padded to a multiple of 32):
**
**   stage weights   every layer's fp32 weights -> fp16 regions of that layer's input surface,
**                   which both of its kernels read. Restaged at every call: the trainer's AdamW
**                   changes them in place between calls and the interface carries no version.
**                   Measured: 45 ms of a 4.1 s stories110m step (1%), so a version counter
**                   would save little even with gradient accumulation.
**                   LoRA over a frozen base (backend_ane_create_frozen): the base is staged at
**                   the first step and kept (again only if params is another buffer); only the
**                   adapter's s A and B regions are staged every step. An int8 base
**                   (FrozenBase.int8): likewise once, its seven matrices as their int8 values
**                   and row scales read from the Int8Weights (kernels.c, "int8 base"); the
**                   parameter buffer's copies of those matrices are never read.
**   forward         embedding (CPU); per layer and sequence: rstd1 (CPU, fp32), stage x and
**                   rstd1, evaluate layer_fwd, keep its taps (fp16) and x_next (fp32)
**   head            final norm, classifier, cross-entropy and its gradient, classifier dx (CPU,
**                   BLAS); the classifier's dW is a dW job
**   backward        per layer (last first) and sequence: stage dy and the taps, evaluate
**                   layer_bwd, then on the CPU the residual gradient through both norms (fp32,
**                   from dxn2/dxn1) while the dW job of the layer runs
**   embedding       after the dW jobs drain (tied models share tok_emb with the classifier)
**
** dW jobs (a layer of a sequence, or a classifier sequence) are a few BLAS sgemms and
** elementwise loops over buffers nobody else writes while the job is in flight. With
** overlap_dw they run on the thread pool's background lane (parallel_async, util/parallel.h),
** in the order submitted, concurrently with the device; the pool runs a lane job's own use of
** it inline, so the job runs its products' tiles in order (blas_sgemm_tiled: the same result as
** on the pool; the BLAS library is single-threaded for the backend's life, see ane_step). Overlap
** pays when the device is not this CPU; on the emulator, whose device work already runs on
** every core, it only adds contention (bench_ane, 2 cores: stories15m 329 -> 728 ms/step), so
** its default (-1) turns it on for a real device only.
**
** LoRA over a frozen base: the kernels compute the adapter path unmerged (kernels.c, "LoRA") and
** return its taps u = (s A) x and v = B^T dy; a dW job then computes only dA = s v x^T and
** dB = dy u^T per targeted module (job_lora_layer). No gradient of any base tensor (matrices,
** norms, classifier, embedding) is computed, and StepArgs.grads must be NULL. LoRA dropout
** (p > 0) compiles the kernels with one more region per targeted module, its 0/1 mask [in][S]
** (ane_plan_lora_dropout), staged per layer and sequence before both kernels from
** lora_dropout_mask (the CPU backend's masks: same seed, layer, module, sequence index, channel,
** position); the keep factor 1/(1-p) is folded into the staged s A in fp32, so the masks are
** exact in fp16. The dA job masks its x itself (dA = s v (x * mask)^T). Forward-only steps stage
** masks of ones and s A without the factor: no dropout. bench_ane, stories110m 1x256, 2 busy cores, rank 8 on
** all seven modules against full training, alternating runs: weights staged 2.8 vs 169.9 MB per
** step, staging 18 vs 38-55 ms, dW 62-84 vs 570-770 ms, AdamW 2-6 vs 160-260 ms, the device the
** same within the noise (+1.6% FLOPs); a step 1.6-2.2 s vs 1.7-3.6 s.
**
** int8 base: forward-only steps (with or without an adapter) or LoRA steps; the backend keeps a
** pointer to the caller's Int8Weights and no copy of them (the surfaces hold them in fp16 as they
** hold the fp32 base). The kernels are the int8 variant of the same two (2 compiles).
**
** Gradient contract (backend.h): dloss is scaled by grad_scale before anything is rounded to
** fp16, so the scaled gradient is what flows through the device; weight gradients accumulate
** into grads in fp32 (scaled); nothing is clipped or unscaled here; an fp16 overflow on the
** device shows up as inf/NaN in grads.
**
** Nothing is allocated inside step. This file knows the kernels' layouts only through
** kernels.h and the device only through device.h.
*/
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../ops/ops.h"
#include "../../util/clock.h"
#include "../../util/blas.h"
#include "../../util/parallel.h"
#include "../backend.h"
#include "darwin.h"
#include "emu/emu.h"
#include "device.h"
#include "half.h"
#include "inspect.h"
#include "kernels.h"
#include "mil_write.h"

enum { N_SLOTS = 3 }; /* backward outputs in flight to the dW lane */

/* ------------------------------------------------------------------ state */

typedef enum { JOB_LAYER, JOB_CLS } JobKind;

/* One layer backward's results handed to a dW job. */
typedef struct {
    uint16_t *bout; /* [bwd_C][S] copy of layer_bwd's output */
    float *dy;      /* [C][S] d loss / d x_next (scaled) */
    float *dxm;     /* [C][S] d loss / d x_mid */
    unsigned long busy; /* ticket of the background job that reads it (parallel_async), 0: free */
} Slot;

typedef struct {
    JobKind kind;
    int layer, b, T, slot; /* slot: Slot index (JOB_LAYER) or dlogits buffer (JOB_CLS) */
} Job;

/* The worker's private fp32 scratch, [rows][S] each (Qwen3's only with q/k-norm). */
typedef struct {
    float *xn1, *att, *xn2, *g, *h3, *dh1, *dh3, *dq, *dk, *dv, *dxn1, *dxn2;
    float *tq, *tk, *rq, *rk, *dq_raw, *dk_raw;
    float *lu, *lv; /* LoRA only: one module's u and v taps [R][S] */
    float *lmask, *lxd; /* LoRA dropout only: one module's mask [in][T] and drop(x_m) [in][S] */
} WorkerScratch;

typedef struct AneBackend AneBackend;

/* A job queued on the background lane, with its backend. */
typedef struct {
    AneBackend *m;
    Job j;
} QueuedJob;

struct AneBackend {
    Backend base;
    ParamLayout layout;
    AneBackendOptions opt;
    AneDevice *dev;
    AneLayerPlan plan;
    int max_B, max_T, S;
    AneProgram *k_fwd, *k_bwd;
    AneSurface **in; /* [L] layer input surfaces (weights + activation regions) */
    uint16_t **bases; /* [L] their locked addresses while weights are staged */
    AneSurface *out_f, *out_b;
    size_t in_elems, fwd_elems, bwd_elems;

    /* CPU-side activations, stride S per row, padding columns 0 (rstd 1) */
    uint16_t *taps;  /* [L][max_B][fwd_C][S] layer_fwd outputs */
    float *x;        /* [L+1][max_B][C][S] residual stream (fp16 values after layer 0) */
    float *rstd1;    /* [L][max_B][S] */
    float *xf;       /* [max_B][C][S] final norm output */
    float *rstd_f;   /* [max_B][S] */
    float *dcur;     /* [max_B][C][S] d loss / d residual stream at the current layer */
    float *dxf;      /* [C][S] */
    float *f32a, *f32b, *f32c; /* [C][S] main-thread scratch */
    float *logit_buf[2]; /* [V][max_T] logits, then dlogits, ping-pong with the dW jobs */
    unsigned long logit_busy[2]; /* as Slot.busy */
    float *losses;   /* [max_B][max_T] */
    float *dloss;    /* [max_T] */

    /* dW jobs (on the pool's background lane with overlap_dw) */
    Slot slots[N_SLOTS];
    WorkerScratch ws;
    QueuedJob queue[N_SLOTS + 4]; /* submitted jobs, reused in turn: never one still in flight, as at most
                                  ** N_SLOTS + 2 jobs hold buffers (step waits for a buffer before reuse) */
    int q_next;
    unsigned long last_ticket; /* of the last job submitted to the lane */
    /* what the jobs read and write: set by step before any job is submitted */
    ParamViews w, dw;

    /* LoRA over a frozen base (backend_ane_create_frozen), else has_lora 0. The base is staged
    ** into the surfaces once, at the first step (base_staged: the params it came from; a step
    ** with another buffer restages it), the adapter at every step. */
    int has_lora;
    LoraLayout lora;
    const float *base_staged;
    const float *adapter;  /* this step's adapter and gradient (set before any job is submitted) */
    float *adapter_grads;
    /* LoRA dropout (lora.cfg.dropout > 0): the kernels have mask regions (ane_plan_lora_dropout).
    ** This step's p (0 in a forward-only step: the masks are then ones) and seed; mask_T [maxIn][T]
    ** and mask_S [maxIn][S] are the main thread's scratch for one module's mask. */
    int lora_dropout;
    float dropout;
    uint64_t dropout_seed;
    float *mask_T, *mask_S;
    /* An int8 frozen base (FrozenBase.int8, the caller's; read at staging time, never copied), else
    ** NULL. frozen: has_lora or int8, a base staged once and never trained. */
    const Int8Weights *int8;
    int frozen;

    /* counters */
    BackendStats st;
    double t_dw_worker; /* written by the lane's jobs; read once they are waited for (every step ends so) */
    int blas_held;      /* this backend holds the BLAS library single-threaded (blas_single_acquire) */
};


static size_t lbs(const AneBackend *m, int l, int b) { return (size_t)l * m->max_B + (size_t)b; }
static float *x_at(AneBackend *m, int l, int b) { return m->x + lbs(m, l, b) * m->plan.C * m->S; }
static float *r1_at(AneBackend *m, int l, int b) { return m->rstd1 + lbs(m, l, b) * m->S; }
static uint16_t *taps_at(AneBackend *m, int l, int b) { return m->taps + lbs(m, l, b) * m->plan.fwd_C * m->S; }
static uint16_t *tap(AneBackend *m, int l, int b, int id) {
    return taps_at(m, l, b) + (size_t)m->plan.fwd[id].off * m->S;
}

/* ------------------------------------------------------------------ small CPU pieces */

/* Padding columns [T, S) of a sequence's taps: 0, and 1 in the rstd rows. The backward then
** computes exactly zero there (tested in test_ane_kernels) whatever the forward produced in
** those columns, so nothing from them can reach the real keys through the attention backward. */
static void clean_tap_padding(const AneLayerPlan *p, uint16_t *taps, int T, int S) {
    if (T == S) return;
    for (int r = 0; r < p->fwd_C; r++) {
        int is_rstd = (r >= p->fwd[AF_RSTD2].off && r < p->fwd[AF_RSTD2].off + p->fwd[AF_RSTD2].rows) ||
                      (r >= p->fwd[AF_RSTDQ].off && r < p->fwd[AF_RSTDQ].off + p->fwd[AF_RSTDQ].rows) ||
                      (r >= p->fwd[AF_RSTDK].off && r < p->fwd[AF_RSTDK].off + p->fwd[AF_RSTDK].rows);
        uint16_t *row = taps + (size_t)r * S;
        for (int t = T; t < S; t++) row[t] = is_rstd ? 0x3C00 : 0; /* fp16 1.0 : +0 */
    }
}

/* A dW job's product, wherever it runs: on the pool when jobs run inline on the stepping thread,
** in order on the background lane otherwise (the pool runs a lane job's use of it inline, and is
** the emulator's then); the same result both ways (blas_sgemm_tiled). */
static void job_gemm(const AneBackend *m, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float *C, int ldc) {
    (void)m;
    blas_sgemm_tiled(ta, tb, M, N, K, alpha, A, lda, B, ldb, 1.0f, C, ldc, 1);
}

/* dW [O][In] += alpha dY [O][T] X^T, both with row stride S (only the T real columns). */
static void gemm_dw_scaled(const AneBackend *m, float *dW, float alpha, const float *dY, const float *X, int O, int In,
                           int T, int S) {
    job_gemm(m, 0, 1, O, In, T, alpha, dY, S, X, S, dW, In);
}

static void gemm_dw(const AneBackend *m, float *dW, const float *dY, const float *X, int O, int In, int T, int S) {
    gemm_dw_scaled(m, dW, 1.0f, dY, X, O, In, T, S);
}

/* ------------------------------------------------------------------ the dW jobs */

/* Qwen3's per-head norm backward on the CPU: from d(normed, weighted q) [NH*D][S] and the
** normalized taps (qhat, rstd), writes d q_raw and accumulates the norm weight gradient (dwn NULL:
** a frozen norm weight, none). Each head's block is a [D][S] tensor normalized on its own. */
static void head_norm_bwd(float *dq_raw, float *dwn, const float *dqn, const float *qhat, const float *rq,
                          const float *wn, int NH, int D, int T, int S) {
    memset(dq_raw, 0, (size_t)NH * D * S * sizeof *dq_raw);
    for (int h = 0; h < NH; h++) {
        size_t blk = (size_t)h * D * S;
        ops_rmsnorm_backward_xhat(dq_raw + blk, dwn, dqn + blk, qhat + blk, wn, rq + (size_t)h * S, D, T, S);
    }
}

static void f16_rows(float *dst, const uint16_t *src, int rows, int S) { half_to_f32(dst, src, (size_t)rows * S); }

/* dst[c][t] *= w[c] over [C][S]. */
static void scale_rows(float *x, const float *w, int C, int S) {
    for (int c = 0; c < C; c++)
        for (int t = 0; t < S; t++) x[(size_t)c * S + t] *= w[c];
}

/* Weight gradients of layer l for sequence b: the inputs of every linear layer come from the
** saved residual stream and the forward taps, the output gradients from the slot. */
static void job_layer(AneBackend *m, const Job *j) {
    const AneLayerPlan *p = &m->plan;
    int l = j->layer, b = j->b, T = j->T, S = m->S;
    int C = p->C, F = p->F, Q = p->Q, K = p->K, D = p->D;
    const Slot *s = &m->slots[j->slot];
    WorkerScratch *w = &m->ws;
    const ParamViews *P = &m->w;
    ParamViews *G = &m->dw;
    const uint16_t *bout = s->bout;
#define BOUT(id) (bout + (size_t)p->bwd[id].off * S)
    /* norm1: its weight gradient from x and rstd1, then xn1 = x * rstd1 * rms_att */
    const float *x = x_at(m, l, b), *r1 = r1_at(m, l, b);
    f16_rows(w->dxn1, BOUT(AB_DXN1), C, S);
    ops_rmsnorm_backward_ld(NULL, G->rms_att + (size_t)l * C, w->dxn1, x, NULL, r1, C, T, S);
    ops_rmsnorm_apply(w->xn1, x, r1, P->rms_att + (size_t)l * C, C, S, S);
    /* norm2: xhat2 is a tap */
    f16_rows(w->xn2, tap(m, l, b, AF_XH2), C, S);
    f16_rows(w->dxn2, BOUT(AB_DXN2), C, S);
    ops_rmsnorm_backward_xhat(NULL, G->rms_ffn + (size_t)l * C, w->dxn2, w->xn2, NULL, NULL, C, T, S);
    scale_rows(w->xn2, P->rms_ffn + (size_t)l * C, C, S);
    /* g = silu(h1) * h3, recomputed from the taps (cheaper than moving F more rows) */
    f16_rows(w->g, tap(m, l, b, AF_H1), F, S);
    f16_rows(w->h3, tap(m, l, b, AF_H3), F, S);
    for (size_t i = 0; i < (size_t)F * S; i++) {
        float h = w->g[i];
        w->g[i] = h / (1.0f + expf(-h)) * w->h3[i];
    }
    f16_rows(w->att, tap(m, l, b, AF_ATT), Q, S);
    f16_rows(w->dh1, BOUT(AB_DH1), F, S);
    f16_rows(w->dh3, BOUT(AB_DH3), F, S);
    f16_rows(w->dq, BOUT(AB_DQ), Q, S);
    f16_rows(w->dk, BOUT(AB_DK), K, S);
    f16_rows(w->dv, BOUT(AB_DV), K, S);
#undef BOUT
    const float *dq_raw = w->dq, *dk_raw = w->dk;
    if (p->qk_norm) { /* the device returned d(normed, weighted q, k): back through the head norms */
        f16_rows(w->tq, tap(m, l, b, AF_Q), Q, S);
        f16_rows(w->tk, tap(m, l, b, AF_K), K, S);
        f16_rows(w->rq, tap(m, l, b, AF_RSTDQ), p->H, S);
        f16_rows(w->rk, tap(m, l, b, AF_RSTDK), p->KV, S);
        head_norm_bwd(w->dq_raw, G->q_norm + (size_t)l * D, w->dq, w->tq, w->rq, P->q_norm + (size_t)l * D, p->H, D,
                      T, S);
        head_norm_bwd(w->dk_raw, G->k_norm + (size_t)l * D, w->dk, w->tk, w->rk, P->k_norm + (size_t)l * D, p->KV, D,
                      T, S);
        dq_raw = w->dq_raw;
        dk_raw = w->dk_raw;
    }
    gemm_dw(m, G->w2 + (size_t)l * C * F, s->dy, w->g, C, F, T, S);
    gemm_dw(m, G->w1 + (size_t)l * F * C, w->dh1, w->xn2, F, C, T, S);
    gemm_dw(m, G->w3 + (size_t)l * F * C, w->dh3, w->xn2, F, C, T, S);
    gemm_dw(m, G->wo + (size_t)l * C * Q, s->dxm, w->att, C, Q, T, S);
    gemm_dw(m, G->wq + (size_t)l * Q * C, dq_raw, w->xn1, Q, C, T, S);
    gemm_dw(m, G->wk + (size_t)l * K * C, dk_raw, w->xn1, K, C, T, S);
    gemm_dw(m, G->wv + (size_t)l * K * C, w->dv, w->xn1, K, C, T, S);
}

/* The adapter's gradients of layer l for sequence b (LoRA over a frozen base: no gradient of any
** base tensor). Module m computes y = W x + B u with u = (s A) x (the u tap), and the device
** returned v = B^T dy (the v tap), so with x and dy as the full-training job has them:
**     dB [out][R] += dy u^T = s dy (A x)^T        dA [R][in] += s v x^T = s (B^T dy) x^T
** x: xn1 for q, k, v; att for o; xn2 for gate, up; g for down. dy: d q_raw, d k_raw, dv; dx_mid;
** dh1, dh3; dy (the layer's output gradient). Only what the targeted modules need is converted. */
static void job_lora_layer(AneBackend *m, const Job *j) {
    const AneLayerPlan *p = &m->plan;
    const LoraLayout *lo = &m->lora;
    int l = j->layer, b = j->b, T = j->T, S = m->S, C = p->C, F = p->F, Q = p->Q, K = p->K, D = p->D;
    int R = lo->cfg.rank;
    const Slot *s = &m->slots[j->slot];
    WorkerScratch *w = &m->ws;
    const ParamViews *P = &m->w;
    const uint16_t *bout = s->bout;
#define BOUT(id) (bout + (size_t)p->bwd[id].off * S)
#define ON(mod) (lo->t[mod].present)
    if (ON(LORA_Q) || ON(LORA_K) || ON(LORA_V)) /* xn1 = x * rstd1 * rms_att */
        ops_rmsnorm_apply(w->xn1, x_at(m, l, b), r1_at(m, l, b), P->rms_att + (size_t)l * C, C, S, S);
    if (ON(LORA_GATE) || ON(LORA_UP)) { /* xn2 = xhat2 * rms_ffn */
        f16_rows(w->xn2, tap(m, l, b, AF_XH2), C, S);
        scale_rows(w->xn2, P->rms_ffn + (size_t)l * C, C, S);
    }
    if (ON(LORA_DOWN)) { /* g = silu(h1) * h3 */
        f16_rows(w->g, tap(m, l, b, AF_H1), F, S);
        f16_rows(w->h3, tap(m, l, b, AF_H3), F, S);
        for (size_t i = 0; i < (size_t)F * S; i++) {
            float h = w->g[i];
            w->g[i] = h / (1.0f + expf(-h)) * w->h3[i];
        }
    }
    if (ON(LORA_O)) f16_rows(w->att, tap(m, l, b, AF_ATT), Q, S);
    if (ON(LORA_GATE)) f16_rows(w->dh1, BOUT(AB_DH1), F, S);
    if (ON(LORA_UP)) f16_rows(w->dh3, BOUT(AB_DH3), F, S);
    if (ON(LORA_V)) f16_rows(w->dv, BOUT(AB_DV), K, S);
    const float *dq_raw = w->dq, *dk_raw = w->dk;
    if (ON(LORA_Q)) f16_rows(w->dq, BOUT(AB_DQ), Q, S);
    if (ON(LORA_K)) f16_rows(w->dk, BOUT(AB_DK), K, S);
    if (p->qk_norm && ON(LORA_Q)) { /* d q_raw through the (frozen) head norm */
        f16_rows(w->tq, tap(m, l, b, AF_Q), Q, S);
        f16_rows(w->rq, tap(m, l, b, AF_RSTDQ), p->H, S);
        head_norm_bwd(w->dq_raw, NULL, w->dq, w->tq, w->rq, P->q_norm + (size_t)l * D, p->H, D, T, S);
        dq_raw = w->dq_raw;
    }
    if (p->qk_norm && ON(LORA_K)) {
        f16_rows(w->tk, tap(m, l, b, AF_K), K, S);
        f16_rows(w->rk, tap(m, l, b, AF_RSTDK), p->KV, S);
        head_norm_bwd(w->dk_raw, NULL, w->dk, w->tk, w->rk, P->k_norm + (size_t)l * D, p->KV, D, T, S);
        dk_raw = w->dk_raw;
    }
    const float *xs[LORA_MODULES] = {w->xn1, w->xn1, w->xn1, w->att, w->xn2, w->xn2, w->g};
    const float *dys[LORA_MODULES] = {dq_raw, dk_raw, w->dv, s->dxm, w->dh1, w->dh3, s->dy};
    for (int mod = 0; mod < LORA_MODULES; mod++) {
        if (!ON(mod)) continue;
        const LoraTensor *t = &lo->t[mod];
        f16_rows(w->lu, tap(m, l, b, AF_LORA_U + mod), R, S);
        f16_rows(w->lv, BOUT(AB_LORA_V + mod), R, S);
        gemm_dw(m, lora_B(lo, m->adapter_grads, (LoraModule)mod, l), dys[mod], w->lu, t->out, R, T, S);
        const float *xd = xs[mod]; /* drop(x_m) = x_m * mask (lora_dropout_mask, values 0 or 1/(1-p)) */
        if (m->dropout > 0) {
            lora_dropout_mask(w->lmask, m->dropout_seed, l, (LoraModule)mod, b, 0, t->in, T, m->dropout);
            for (int c = 0; c < t->in; c++)
                for (int u = 0; u < T; u++)
                    w->lxd[(size_t)c * S + u] = xs[mod][(size_t)c * S + u] * w->lmask[(size_t)c * T + u];
            xd = w->lxd;
        }
        gemm_dw_scaled(m, lora_A(lo, m->adapter_grads, (LoraModule)mod, l), lo->scale, w->lv, xd, R, t->in, T, S);
    }
#undef ON
#undef BOUT
}

/* The classifier's weight gradient for sequence b: dWcls [V][C] += dlogits [V][T] xf^T. */
static void job_cls(AneBackend *m, const Job *j) {
    const ModelConfig *cfg = &m->layout.cfg;
    job_gemm(m, 0, 1, cfg->vocab_size, cfg->dim, j->T, 1.0f, m->logit_buf[j->slot], j->T,
             m->xf + (size_t)j->b * cfg->dim * m->S, m->S, m->dw.wcls, cfg->dim);
}

static void job_run(AneBackend *m, const Job *j) {
    if (j->kind == JOB_LAYER && m->has_lora) job_lora_layer(m, j);
    else if (j->kind == JOB_LAYER) job_layer(m, j);
    else job_cls(m, j);
}

/* One job on the background lane. */
static void lane_job(void *ctx) {
    const QueuedJob *q = ctx;
    double t0 = now_seconds();
    job_run(q->m, &q->j);
    q->m->t_dw_worker += now_seconds() - t0;
}

/* Runs the job now (overlap off) or queues it on the pool's background lane; the buffers it
** reads stay busy until it is waited for (wait_for). */
static void submit(AneBackend *m, Job j) {
    if (!m->opt.overlap_dw) {
        double t0 = now_seconds();
        job_run(m, &j);
        m->st.t_dw += now_seconds() - t0;
        return;
    }
    int cap = (int)(sizeof m->queue / sizeof m->queue[0]);
    int q = m->q_next;
    m->q_next = (q + 1) % cap;
    m->queue[q].m = m;
    m->queue[q].j = j;
    m->last_ticket = parallel_async(lane_job, &m->queue[q]);
    if (j.kind == JOB_LAYER) m->slots[j.slot].busy = m->last_ticket;
    else m->logit_busy[j.slot] = m->last_ticket;
}

/* Waits until the job holding *busy (a buffer) is done and marks the buffer free, or until every
** job submitted is done (busy NULL). */
static void wait_for(AneBackend *m, unsigned long *busy) {
    if (!m->opt.overlap_dw) return;
    double t0 = now_seconds();
    unsigned long ticket = busy ? *busy : m->last_ticket;
    if (ticket) parallel_async_wait(ticket);
    if (busy) *busy = 0;
    m->st.t_dw_wait += now_seconds() - t0;
}

/* ------------------------------------------------------------------ staging */

typedef struct {
    AneBackend *m;
    uint16_t **base; /* [L] locked input surfaces */
} StageJob;

static const int weight_regions[] = {AR_RMS_ATT,   AR_RMS_FFN,   AR_QNORM,     AR_KNORM,     AR_WQ,
                                     AR_WK,        AR_WV,        AR_WO,        AR_W1,        AR_W3,
                                     AR_W2,        AR_SCALE + 0, AR_SCALE + 1, AR_SCALE + 2, AR_SCALE + 3,
                                     AR_SCALE + 4, AR_SCALE + 5, AR_SCALE + 6};
enum { N_WEIGHT_REGIONS = sizeof weight_regions / sizeof weight_regions[0] };

/* The parameters of region `id` of layer l. */
static const float *weight_src(const AneBackend *m, int id, int l) {
    const AneLayerPlan *p = &m->plan;
    const ParamViews *w = &m->w;
    switch (id) {
    case AR_RMS_ATT: return w->rms_att + (size_t)l * p->C;
    case AR_RMS_FFN: return w->rms_ffn + (size_t)l * p->C;
    case AR_QNORM: return w->q_norm + (size_t)l * p->D;
    case AR_KNORM: return w->k_norm + (size_t)l * p->D;
    default: return layer_matrix(w, &m->layout.cfg, id - AR_WQ, l); /* AR_WQ + matrix m (kernels.h) */
    }
}

/* Module index of a matrix region (AR_WQ + m is layer matrix m, params.h), or -1. */
static int matrix_module(int id) { return id >= AR_WQ && id <= AR_W2 ? id - AR_WQ : -1; }

/* Region `id` of layer l into its surface. Over an int8 base the seven matrices come from the
** Int8Weights (q * ANE_INT8_STEP, and the row scales s / ANE_INT8_STEP, all exact in fp16), never
** from the parameter buffer; the rest is fp32 -> fp16 from params. */
static void stage_weights_worker(void *ctx, int begin, int end, int worker) {
    (void)worker;
    StageJob *j = ctx;
    const AneBackend *m = j->m;
    for (int task = begin; task < end; task++) {
        int l = task / N_WEIGHT_REGIONS, id = weight_regions[task % N_WEIGHT_REGIONS];
        if (!m->plan.reg[id].n) continue;
        int mod = matrix_module(id);
        if (id >= AR_SCALE && id < AR_SCALE + ANE_LORA_MODULES)
            ane_region_put_f32_scaled(&m->plan, j->base[l], id,
                                      quant_int8_scale(m->int8, layer_matrices[id - AR_SCALE].kind, l),
                                      1.0f / ANE_INT8_STEP);
        else if (mod >= 0 && m->int8)
            ane_region_put_i8(&m->plan, j->base[l], id, quant_int8_q(m->int8, layer_matrices[mod].kind, l));
        else
            ane_region_put_f32(&m->plan, j->base[l], id, weight_src(m, id, l));
    }
}

/* The adapter of every layer: region AR_LORA_A + m gets s A_m (the scale folded in in fp32; in a
** training step with dropout p, also the keep factor 1/(1-p) of the masks),
** AR_LORA_B + m gets B_m; without an adapter (NULL), zeros. Tasks: layer x (A or B) x module. */
static void stage_adapter_worker(void *ctx, int begin, int end, int worker) {
    (void)worker;
    StageJob j = *(StageJob *)ctx;
    const LoraLayout *lo = &j.m->lora;
    const AneLayerPlan *p = &j.m->plan;
    float *adapter = (float *)j.m->adapter; /* lora_A/lora_B take a mutable buffer; nothing is written */
    for (int task = begin; task < end; task++) {
        int l = task / (2 * LORA_MODULES), is_b = task / LORA_MODULES % 2, mod = task % LORA_MODULES;
        if (!lo->t[mod].present) continue;
        if (!adapter)
            ane_region_zero(p, j.base[l], (is_b ? AR_LORA_B : AR_LORA_A) + mod);
        else if (is_b)
            ane_region_put_f32(&j.m->plan, j.base[l], AR_LORA_B + mod, lora_B(lo, adapter, (LoraModule)mod, l));
        else /* with dropout, s A / (1-p): the masks hold 0/1, exact in fp16 */
            ane_region_put_f32_scaled(&j.m->plan, j.base[l], AR_LORA_A + mod, lora_A(lo, adapter, (LoraModule)mod, l),
                                      j.m->dropout > 0 ? lo->scale * (1.0f / (1.0f - j.m->dropout)) : lo->scale);
    }
}

/* Every layer's weights into its surface, fp32 -> fp16 (on the pool: nothing evaluates now).
** Full training: every weight, every step. A frozen base (LoRA, int8, or both): the base only when
** params is not the buffer already staged (so once), the adapter every step. */
static void stage_weights(AneBackend *m, const float *params) {
    int L = m->layout.cfg.n_layers;
    int base = !m->frozen || params != m->base_staged;
    for (int l = 0; l < L; l++) m->bases[l] = m->dev->surface_lock(m->dev, m->in[l], 0);
    StageJob j = {m, m->bases};
    uint64_t bytes = 0;
    if (base) {
        parallel_for(L * N_WEIGHT_REGIONS, stage_weights_worker, &j);
        for (int i = 0; i < N_WEIGHT_REGIONS; i++) bytes += 2 * (uint64_t)m->plan.reg[weight_regions[i]].n;
        m->base_staged = m->frozen ? params : NULL;
    }
    if (m->has_lora) {
        parallel_for(L * 2 * LORA_MODULES, stage_adapter_worker, &j);
        for (int i = 0; i < 2 * LORA_MODULES; i++) bytes += 2 * (uint64_t)m->plan.reg[AR_LORA_A + i].n;
    }
    for (int l = 0; l < L; l++) m->dev->surface_unlock(m->dev, m->in[l], 0);
    m->st.bytes_staged += bytes * L;
    m->st.bytes_staged_weights += bytes * L;
}

static void put32(AneBackend *m, uint16_t *base, int id, const float *src) {
    ane_region_put_f32(&m->plan, base, id, src);
    m->st.bytes_staged += 2 * (uint64_t)m->plan.reg[id].n;
}

static void put16(AneBackend *m, uint16_t *base, int id, const uint16_t *src) {
    ane_region_put_f16(&m->plan, base, id, src);
    m->st.bytes_staged += 2 * (uint64_t)m->plan.reg[id].n;
}

typedef struct {
    AneBackend *m;
    int layer, mod, b, T;
} MaskJob;

/* Rows [begin, end) of one module's mask into mask_S [in][S]: 1 where lora_dropout_mask keeps
** (its value 1/(1-p) is in s A), 0 where it drops and in the padding; all ones (t < T) in a
** forward-only step. */
static void mask_rows_worker(void *ctx, int begin, int end, int worker) {
    (void)worker;
    const MaskJob *j = ctx;
    AneBackend *m = j->m;
    int T = j->T, S = m->S;
    int drop = m->dropout > 0;
    if (drop)
        lora_dropout_mask(m->mask_T, m->dropout_seed, j->layer, (LoraModule)j->mod, j->b, begin, end, T, m->dropout);
    for (int c = begin; c < end; c++) {
        const float *keep = m->mask_T + (size_t)c * T;
        float *row = m->mask_S + (size_t)c * S;
        for (int t = 0; t < S; t++) row[t] = t < T && (!drop || keep[t] != 0) ? 1.0f : 0.0f;
    }
}

/* Every targeted module's dropout mask of sequence b in layer l into the surface (locked at base). */
static void stage_masks(AneBackend *m, uint16_t *base, int l, int b, int T) {
    for (int mod = 0; mod < LORA_MODULES; mod++) {
        if (!m->lora.t[mod].present) continue;
        MaskJob j = {m, l, mod, b, T};
        parallel_for(m->lora.t[mod].in, mask_rows_worker, &j);
        put32(m, base, AR_LORA_MASK + mod, m->mask_S);
    }
}

static int evaluate(AneBackend *m, AneProgram *k, AneSurface *in, AneSurface *out, const char *what, int l, int b,
                    Err *err) {
    double t0 = now_seconds();
    int rc = m->dev->evaluate(m->dev, k, in, out, err);
    m->st.t_device += now_seconds() - t0;
    if (rc) return err_wrap(err, "ane backend: %s of layer %d, sequence %d", what, l, b);
    return 0;
}

/* ------------------------------------------------------------------ the step */

typedef struct {
    float *logits; /* [V][T], in place: probabilities, then dlogits */
    const int32_t *targets;
    float *losses;
    const float *dloss;
    int V, T, backward;
} LossJob;

static void loss_worker(void *ctx, int begin, int end, int worker) {
    (void)worker;
    LossJob *j = ctx;
    float *cols = j->logits + begin;
    if (j->backward)
        ops_cross_entropy_fused(j->losses + begin, cols, cols, j->targets + begin, j->dloss + begin, j->V, end - begin,
                                j->T);
    else
        ops_cross_entropy_forward(j->losses + begin, cols, cols, j->targets + begin, j->V, end - begin, j->T);
}

static int step_run(AneBackend *m, const StepArgs *args, double *loss_out, Err *err) {
    const float *params = args->params;
    float *grads = args->grads, *logits_out = args->logits;
    const int32_t *inputs = args->inputs, *targets = args->targets;
    int B = args->B, T = args->T;
    float grad_scale = args->grad_scale;
    if (backend_step_args_check("ane", args, m->has_lora, m->int8 != NULL, m->max_B, m->max_T, err) != 0) return -1;
    int backward = grads || args->adapter_grads; /* taps kept, backward run */
    const ModelConfig *cfg = &m->layout.cfg;
    const AneLayerPlan *p = &m->plan;
    AneDevice *dev = m->dev;
    double t_start = now_seconds();
    int C = p->C, L = cfg->n_layers, V = cfg->vocab_size, S = m->S;
    size_t CS = (size_t)C * S;
    params_views(&m->layout, (float *)params, &m->w);
    if (grads) params_views(&m->layout, grads, &m->dw);
    m->adapter = args->adapter;
    m->adapter_grads = args->adapter_grads;
    m->dropout = m->lora_dropout && args->adapter_grads ? m->lora.cfg.dropout : 0.0f; /* training steps only */
    m->dropout_seed = args->dropout_seed;
    const ParamViews *w = &m->w;
    m->st.steps++;

    double t0 = now_seconds();
    stage_weights(m, params);
    m->st.t_stage += now_seconds() - t0;

    /* ---- forward ---- */
    for (int b = 0; b < B; b++) {
        float *x0 = x_at(m, 0, b);
        memset(x0, 0, CS * sizeof(float));
        ops_embedding_forward_ld(x0, inputs + (size_t)b * T, w->tok_emb, T, C, S);
    }
    for (int l = 0; l < L; l++) {
        for (int b = 0; b < B; b++) {
            float *x = x_at(m, l, b), *r1 = r1_at(m, l, b), *xn = x_at(m, l + 1, b);
            ops_rmsnorm_rstd(r1, x, C, T, S, cfg->norm_eps);
            for (int t = T; t < S; t++) r1[t] = 1.0f; /* padding */
            t0 = now_seconds();
            uint16_t *base = dev->surface_lock(dev, m->in[l], 0);
            put32(m, base, AR_X, x);
            put32(m, base, AR_RSTD1, r1);
            if (m->lora_dropout) stage_masks(m, base, l, b, T);
            dev->surface_unlock(dev, m->in[l], 0);
            m->st.t_stage += now_seconds() - t0;
            if (evaluate(m, m->k_fwd, m->in[l], m->out_f, "layer_fwd", l, b, err)) return -1;
            t0 = now_seconds();
            const uint16_t *o = dev->surface_lock(dev, m->out_f, 1);
            if (backward) { /* keep every tap for the backward */
                memcpy(taps_at(m, l, b), o, m->fwd_elems * 2);
                clean_tap_padding(p, taps_at(m, l, b), T, S);
                m->st.bytes_read += m->fwd_elems * 2;
            } else {
                m->st.bytes_read += CS * 2;
            }
            half_to_f32(xn, o + (size_t)p->fwd[AF_XNEXT].off * S, CS);
            dev->surface_unlock(dev, m->out_f, 1);
            for (int c = 0; c < C; c++) memset(xn + (size_t)c * S + T, 0, (size_t)(S - T) * sizeof(float));
            m->st.t_stage += now_seconds() - t0;
        }
    }
    m->st.flops_device += (double)B * L * p->fwd_flops;

    /* ---- head: final norm, classifier, loss; with grads its backward too ---- */
    double total = 0;
    int lb = 0; /* logits buffer in use */
    for (int b = 0; b < B; b++) {
        float *xf = m->xf + (size_t)b * CS, *rf = m->rstd_f + (size_t)b * S;
        ops_rmsnorm_forward(xf, rf, x_at(m, L, b), w->rms_final, C, S, cfg->norm_eps); /* padding: x = 0 -> 0 */
        wait_for(m, &m->logit_busy[lb]);
        float *lg = m->logit_buf[lb];
        blas_sgemm_tiled(0, 0, V, T, C, 1.0f, w->wcls, C, xf, S, 0.0f, lg, T, 1);
        if (logits_out) memcpy(logits_out + (size_t)b * V * T, lg, (size_t)V * T * sizeof(float));
        for (int t = 0; t < T; t++) m->dloss[t] = grad_scale / ((float)B * (float)T);
        LossJob lj = {lg, targets + (size_t)b * T, m->losses + (size_t)b * T, m->dloss, V, T, backward};
        parallel_for(T, loss_worker, &lj);
        for (int t = 0; t < T; t++) total += m->losses[(size_t)b * T + t];
        m->st.flops_cpu += 2.0 * V * C * T;
        if (!backward) continue;
        /* dxf = wcls^T dlogits; dWcls on the worker (frozen base: none); final norm backward */
        memset(m->dxf, 0, CS * sizeof(float));
        blas_sgemm_tiled(1, 0, C, T, V, 1.0f, w->wcls, C, lg, T, 0.0f, m->dxf, S, 1);
        float *d = m->dcur + (size_t)b * CS;
        memset(d, 0, CS * sizeof(float));
        if (m->has_lora) { /* the input gradient alone */
            ops_rmsnorm_backward_ld(d, NULL, m->dxf, x_at(m, L, b), w->rms_final, rf, C, T, S);
            m->st.flops_cpu += 2.0 * V * C * T;
            continue;
        }
        submit(m, (Job){JOB_CLS, 0, b, T, lb});
        lb ^= 1;
        ops_rmsnorm_backward(d, m->dw.rms_final, m->dxf, x_at(m, L, b), w->rms_final, rf, C, S);
        m->st.flops_cpu += 4.0 * V * C * T;
    }
    *loss_out = total / ((double)B * T);
    if (!backward) {
        m->st.t_total += now_seconds() - t_start;
        return 0;
    }

    /* ---- backward ---- */
    int si = 0;
    double dw_flops = 2.0 * T * ((double)p->Q * C + 2.0 * p->K * C + (double)C * p->Q + 3.0 * p->F * C);
    if (m->has_lora) { /* dA and dB: R x (in + out) per module */
        dw_flops = 0;
        for (int i = 0; i < LORA_MODULES; i++)
            if (m->lora.t[i].present) dw_flops += 2.0 * T * m->lora.cfg.rank * (m->lora.t[i].in + m->lora.t[i].out);
    }
    for (int l = L - 1; l >= 0; l--) {
        const float *wa = w->rms_att + (size_t)l * C, *wf = w->rms_ffn + (size_t)l * C;
        for (int b = 0; b < B; b++) {
            float *d = m->dcur + (size_t)b * CS;
            t0 = now_seconds();
            uint16_t *base = dev->surface_lock(dev, m->in[l], 0);
            put32(m, base, AR_DY, d);
            static const struct {
                int reg, tap;
            } from_taps[] = {{AR_XH2, AF_XH2}, {AR_RSTD2, AF_RSTD2}, {AR_H1, AF_H1}, {AR_H3, AF_H3},
                             {AR_Q, AF_Q},     {AR_K, AF_K},         {AR_V, AF_V},   {AR_RSTDQ, AF_RSTDQ},
                             {AR_RSTDK, AF_RSTDK}};
            for (size_t i = 0; i < sizeof from_taps / sizeof from_taps[0]; i++)
                if (p->reg[from_taps[i].reg].n) put16(m, base, from_taps[i].reg, tap(m, l, b, from_taps[i].tap));
            if (m->lora_dropout) stage_masks(m, base, l, b, T); /* the forward of later sequences overwrote them */
            dev->surface_unlock(dev, m->in[l], 0);
            m->st.t_stage += now_seconds() - t0;
            if (evaluate(m, m->k_bwd, m->in[l], m->out_b, "layer_bwd", l, b, err)) {
                wait_for(m, NULL); /* no job may outlive the step */
                return -1;
            }
            Slot *sl = &m->slots[si];
            wait_for(m, &sl->busy);
            t0 = now_seconds();
            memcpy(sl->bout, dev->surface_lock(dev, m->out_b, 1), m->bwd_elems * 2);
            dev->surface_unlock(dev, m->out_b, 1);
            m->st.bytes_read += m->bwd_elems * 2;
            m->st.t_stage += now_seconds() - t0;
            /* The residual gradient in fp32, in place in d (its padding stays 0): dy, then
            ** dx_mid = dy + norm2'(dxn2) from the xhat2 and rstd2 taps, then dx = dx_mid + norm1'(dxn1). */
            memcpy(sl->dy, d, CS * sizeof(float));
            float *dxn = m->f32a, *xh = m->f32b, *rs = m->f32c;
            half_to_f32(dxn, sl->bout + (size_t)p->bwd[AB_DXN2].off * S, CS);
            half_to_f32(xh, tap(m, l, b, AF_XH2), CS);
            half_to_f32(rs, tap(m, l, b, AF_RSTD2), (size_t)S);
            ops_rmsnorm_backward_xhat(d, NULL, dxn, xh, wf, rs, C, T, S);
            memcpy(sl->dxm, d, CS * sizeof(float));
            half_to_f32(dxn, sl->bout + (size_t)p->bwd[AB_DXN1].off * S, CS);
            ops_rmsnorm_backward_ld(d, NULL, dxn, x_at(m, l, b), wa, r1_at(m, l, b), C, T, S);
            submit(m, (Job){JOB_LAYER, l, b, T, si});
            si = (si + 1) % N_SLOTS;
            m->st.flops_cpu += dw_flops;
        }
    }
    m->st.flops_device += (double)B * L * p->bwd_flops;
    wait_for(m, NULL);
    for (int b = 0; !m->has_lora && b < B; b++) { /* embedding backward: after the worker (tied: the same rows as wcls) */
        ops_embedding_backward_ld(m->dw.tok_emb, m->dcur + (size_t)b * CS, inputs + (size_t)b * T, T, C, S);
    }
    m->st.t_total += now_seconds() - t_start;
    return 0;
}

/* Every matrix product of a step (the emulator's, the classifier's, the dW jobs') is a
** blas_sgemm_tiled grid of single-threaded BLAS calls, so its result never depends on how many
** threads run, on whether the dW worker overlaps, or on whether gradients are computed: the
** library is single-threaded for the backend's whole life (blas_single_acquire at creation,
** released at destruction), never switched per step. */
static int ane_step(Backend *self, const StepArgs *args, double *loss_out, Err *err) {
    return step_run((AneBackend *)self, args, loss_out, err);
}

/* ------------------------------------------------------------------ stats, lifetime */

static void ane_stats(Backend *self, BackendStats *out) {
    AneBackend *m = (AneBackend *)self;
    *out = m->st;
    const AneCounters *c = &m->dev->counters;
    out->evaluations = c->evaluations;
    out->device_bytes_in = c->bytes_in;
    out->device_bytes_out = c->bytes_out;
    out->compiles = c->compiles;
    out->compile_failures = c->compile_failures;
    out->compile_seconds = c->compile_seconds;
    double inline_dw = m->st.t_dw;
    if (m->opt.overlap_dw) {
        out->t_dw = m->t_dw_worker;
        inline_dw = 0;
    }
    out->t_cpu_ops = m->st.t_total - m->st.t_device - m->st.t_stage - m->st.t_dw_wait - inline_dw;
    if (out->t_cpu_ops < 0) out->t_cpu_ops = 0;
}

static void ane_destroy(Backend *self) {
    AneBackend *m = (AneBackend *)self;
    if (!m) return;
    if (m->opt.overlap_dw) wait_for(m, NULL); /* no job may outlive the buffers (every step drains already) */
    if (m->blas_held) blas_single_release();
    if (m->dev) {
        AneDevice *d = m->dev;
        for (int l = 0; m->in && l < m->layout.cfg.n_layers; l++) d->surface_free(d, m->in[l]);
        d->surface_free(d, m->out_f);
        d->surface_free(d, m->out_b);
        if (m->k_fwd) d->release(d, m->k_fwd);
        if (m->k_bwd) d->release(d, m->k_bwd);
        d->destroy(d);
    }
    free(m->in);
    free(m->bases);
    float *fs[] = {m->x, m->rstd1, m->xf, m->rstd_f, m->dcur, m->dxf, m->f32a, m->f32b, m->f32c, m->logit_buf[0],
                   m->logit_buf[1], m->losses, m->dloss, m->mask_T, m->mask_S};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) free(fs[i]);
    free(m->taps);
    for (int i = 0; i < N_SLOTS; i++) {
        free(m->slots[i].bout);
        free(m->slots[i].dy);
        free(m->slots[i].dxm);
    }
    float **ws[] = {&m->ws.xn1, &m->ws.att, &m->ws.xn2, &m->ws.g,  &m->ws.h3, &m->ws.dh1, &m->ws.dh3,
                    &m->ws.dq,  &m->ws.dk,  &m->ws.dv,  &m->ws.dxn1, &m->ws.dxn2, &m->ws.tq, &m->ws.tk,
                    &m->ws.rq,  &m->ws.rk,  &m->ws.dq_raw, &m->ws.dk_raw, &m->ws.lu, &m->ws.lv,
                    &m->ws.lmask, &m->ws.lxd};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) free(*ws[i]);
    free(m);
}

void backend_ane_default_options(AneBackendOptions *opt) {
    opt->device = "auto";
    opt->accumulate_fp32 = 1;
    opt->flush_subnormals = 0;
    opt->compile_budget = ANE_COMPILE_BUDGET_DEFAULT;
    opt->overlap_dw = -1;
    opt->limits = ANE_LIMITS_STRICT;
    opt->plan_max_width = 0;
}

uint64_t backend_ane_process_compiles(void) { return ane_emu_process_compiles() + ane_darwin_process_compiles(); }

static AneDevice *make_device(const AneBackendOptions *o, Err *err) {
    int want_emu = !strcmp(o->device, "emu"), want_darwin = !strcmp(o->device, "darwin");
    if (!want_emu && !want_darwin && strcmp(o->device, "auto") != 0) {
        err_set(err, "--device: expected auto, emu or darwin, found '%s'", o->device);
        return NULL;
    }
    if (want_darwin || (!want_emu && ane_darwin_available())) {
        /* darwin forces the real device: where it is missing, its constructor says why. */
        AneDarwinOptions d;
        ane_darwin_default_options(&d);
        d.compile_budget = o->compile_budget;
        d.limits = o->limits;
        return ane_darwin_create(&d, err);
    }
    AneEmuOptions e;
    ane_emu_default_options(&e);
    e.compile_budget = o->compile_budget;
    e.accumulate_fp32 = o->accumulate_fp32;
    e.flush_subnormals = o->flush_subnormals;
    e.limits = o->limits;
    return ane_emu_create(&e, err);
}

/* Compiles layer_fwd or layer_bwd. A refusal names the kernel, its I/O and the device limit it
** comes nearest to (ane_kernel_nearest_limit): on a real chip the compiler's own message says
** little. Nothing has been written to disk yet when this runs (backend creation comes first). */
static int compile_kernel(AneBackend *m, int bwd, AneProgram **out, Err *err) {
    AneKernel k;
    *out = NULL;
    if (ane_kernel_make(&m->plan, bwd ? ANE_KERNEL_LAYER_BWD : ANE_KERNEL_LAYER_FWD, &k, err)) return -1;
    *out = m->dev->compile(m->dev, k.mil, k.blobs, k.n_blobs, err);
    if (!*out) {
        char nearest[ERR_MSG_MAX], device[ERR_MSG_MAX];
        ane_kernel_nearest_limit(&k, nearest, sizeof nearest);
        memcpy(device, err ? err->msg : "", err ? sizeof device : 1);
        /* the device's message first: the nearest limit is what a long message may lose */
        err_set(err, "ane backend: compiling %s (input [1, %d, 1, %d] -> output [1, %d, 1, %d]): %s; %s", k.name,
                k.in.channels, k.in.spatial, k.out.channels, k.out.spatial, device, nearest);
        ane_kernel_free(&k);
        return -1;
    }
    ane_kernel_free(&k);
    AneShape si, so;
    m->dev->program_io(*out, &si, &so);
    int want_out = bwd ? m->plan.bwd_C : m->plan.fwd_C;
    if (si.channels != m->plan.in_C || si.spatial != m->plan.in_S || so.channels != want_out || so.spatial != m->S)
        return err_set(err, "ane backend: %s compiled with I/O [%d x %d] -> [%d x %d], the plan says [%d x %d] -> "
                            "[%d x %d]",
                       bwd ? "layer_bwd" : "layer_fwd", si.channels, si.spatial, so.channels, so.spatial, m->plan.in_C,
                       m->plan.in_S, want_out, m->S);
    return 0;
}

static float *falloc(size_t n, int *fail) {
    float *p = calloc(n ? n : 1, sizeof *p);
    if (!p) *fail = 1;
    return p;
}

Backend *backend_ane_create(const ParamLayout *layout, int max_B, int max_T, const AneBackendOptions *opt, Err *err) {
    return backend_ane_create_frozen(layout, NULL, max_B, max_T, opt, err);
}

/* An int8 base that fits the model's shapes (frozen_base_check) also fits its buffers, and its
** scales are what the kernels can hold: fp16 values (quant.h), finite, >= 0, and still finite in
** fp16 once divided by ANE_INT8_STEP. */
static int check_int8(const Int8Weights *q8, const ParamLayout *layout, Err *err) {
    if (!q8->q || !q8->scale) return err_set(err, "ane backend: the int8 base has no values (quant_int8_create makes them)");
    for (int i = 0; i < ANE_LORA_MODULES; i++) {
        TensorKind k = layer_matrices[i].kind;
        const TensorSpec *t = &layout->t[k];
        size_t rows = (size_t)t->layers * t->rows;
        if (q8->q_offset[k] + t->numel > q8->n_q || q8->scale_offset[k] + rows > q8->n_scale)
            return err_set(err, "ane backend: the int8 base's %s (%zu values, %zu scales) does not fit its buffers "
                                "(%zu values, %zu scales)",
                           t->name, t->numel, rows, q8->n_q, q8->n_scale);
        const float *sc = q8->scale + q8->scale_offset[k];
        for (size_t r = 0; r < rows; r++) {
            float v = sc[r], staged = v / ANE_INT8_STEP;
            if (!(v >= 0) || fp16_round(v, 0) != v || !(staged <= 65504.0f))
                return err_set(err, "ane backend: the int8 base's %s layer %zu row %zu has scale %g (expected an fp16 "
                                    "value in [0, %g])",
                               t->name, r / (size_t)t->rows, r % (size_t)t->rows, (double)v, 65504.0 * ANE_INT8_STEP);
        }
    }
    return 0;
}

Backend *backend_ane_create_frozen(const ParamLayout *layout, const FrozenBase *frozen, int max_B, int max_T,
                                   const AneBackendOptions *opt, Err *err) {
    const Int8Weights *int8 = frozen ? frozen->int8 : NULL;
    const LoraLayout *lora = frozen ? frozen->lora : NULL;
    if (frozen_base_check(frozen, layout, "ane", err) != 0 || (int8 && check_int8(int8, layout, err))) return NULL;
    if (max_B < 1 || max_T < 1) {
        err_set(err, "ane backend: batch and sequence length must be positive (found %d x %d)", max_B, max_T);
        return NULL;
    }
    AneBackend *m = err_calloc(1, sizeof *m, "ane backend", err);
    if (!m) return NULL;
    m->base.name = "ane";
    m->base.kind = BACKEND_ANE;
    m->base.step = ane_step;
    m->base.destroy = ane_destroy;
    m->base.stats = ane_stats;
    blas_single_acquire(); /* once for the backend's life: see ane_step */
    m->blas_held = 1;
    m->layout = *layout;
    backend_ane_default_options(&m->opt);
    if (opt) m->opt = *opt;
    if (!m->opt.device) m->opt.device = "auto";
    m->max_B = max_B;
    m->max_T = max_T;
    const ModelConfig *cfg = &layout->cfg;
    if (lora) {
        m->has_lora = 1;
        m->lora = *lora;
    }
    m->int8 = int8;
    m->frozen = lora || int8;
    /* with LoRA dropout, the mask regions: a third kernel variant, still 2 compiles */
    m->lora_dropout = lora && lora->cfg.dropout > 0;
    AnePlanSpec spec = {max_T, lora ? lora->cfg.rank : 0, lora ? lora->cfg.targets : 0, m->lora_dropout, int8 != NULL,
                        m->opt.plan_max_width};
    if (ane_plan_make(&m->plan, cfg, &spec, err)) goto fail;
    for (int i = 0; lora && i < LORA_MODULES; i++) { /* the plan's module shapes are the adapter's */
        int out, in;
        ane_lora_module_shape(&m->plan, i, &out, &in);
        if (lora->t[i].present && (lora->t[i].out != out || lora->t[i].in != in)) {
            err_set(err, "ane backend: LoRA module %s is [%d][%d], the model's matrix is [%d][%d]",
                    lora_module_name((LoraModule)i), lora->t[i].out, lora->t[i].in, out, in);
            goto fail;
        }
    }
    m->S = m->plan.S;
    m->dev = make_device(&m->opt, err);
    if (!m->dev) goto fail;
    m->base.name = strcmp(m->dev->name, "emu") == 0 ? "ane (emulated device)" : "ane (Apple Neural Engine)";
    /* auto: overlap only when the device is not this CPU. The emulator already runs the device's
    ** work on every core (pool + BLAS threads), so a concurrent dW thread only adds contention
    ** (bench_ane, 2 cores: stories15m 329 -> 728 ms/step, stories110m 4.08 -> 4.45 s). */
    if (m->opt.overlap_dw < 0) m->opt.overlap_dw = strcmp(m->dev->name, "emu") != 0;
    if (compile_kernel(m, 0, &m->k_fwd, err) || compile_kernel(m, 1, &m->k_bwd, err)) goto fail;

    const AneLayerPlan *p = &m->plan;
    int L = cfg->n_layers, S = m->S, C = p->C, V = cfg->vocab_size;
    size_t CS = (size_t)C * S;
    m->in_elems = (size_t)p->in_C * p->in_S;
    m->fwd_elems = (size_t)p->fwd_C * S;
    m->bwd_elems = (size_t)p->bwd_C * S;
    m->in = calloc((size_t)L, sizeof *m->in);
    m->bases = calloc((size_t)L, sizeof *m->bases);
    if (!m->in || !m->bases) goto oom;
    for (int l = 0; l < L; l++) {
        m->in[l] = m->dev->surface_create(m->dev, m->in_elems * 2, err);
        if (!m->in[l]) goto fail;
        memset(m->dev->surface_lock(m->dev, m->in[l], 0), 0, m->in_elems * 2);
        m->dev->surface_unlock(m->dev, m->in[l], 0);
    }
    m->out_f = m->dev->surface_create(m->dev, m->fwd_elems * 2, err);
    m->out_b = m->dev->surface_create(m->dev, m->bwd_elems * 2, err);
    if (!m->out_f || !m->out_b) goto fail;

    int fail = 0;
    size_t LB = (size_t)L * max_B;
    m->taps = calloc(LB * m->fwd_elems, sizeof *m->taps);
    if (!m->taps) fail = 1;
    m->x = falloc((LB + max_B) * CS, &fail);
    m->rstd1 = falloc(LB * S, &fail);
    m->xf = falloc((size_t)max_B * CS, &fail);
    m->rstd_f = falloc((size_t)max_B * S, &fail);
    m->dcur = falloc((size_t)max_B * CS, &fail);
    m->dxf = falloc(CS, &fail);
    m->f32a = falloc(CS, &fail);
    m->f32b = falloc(CS, &fail);
    m->f32c = falloc(CS, &fail);
    m->logit_buf[0] = falloc((size_t)V * max_T, &fail);
    m->logit_buf[1] = falloc((size_t)V * max_T, &fail);
    m->losses = falloc((size_t)max_B * max_T, &fail);
    m->dloss = falloc((size_t)max_T, &fail);
    for (int i = 0; i < N_SLOTS; i++) {
        m->slots[i].bout = calloc(m->bwd_elems, sizeof(uint16_t));
        if (!m->slots[i].bout) fail = 1;
        m->slots[i].dy = falloc(CS, &fail);
        m->slots[i].dxm = falloc(CS, &fail);
    }
    size_t FS = (size_t)p->F * S, QS = (size_t)p->Q * S, KS = (size_t)p->K * S;
    int qk = p->qk_norm;
    WorkerScratch *ws = &m->ws;
    ws->xn1 = falloc(CS, &fail), ws->att = falloc(QS, &fail), ws->xn2 = falloc(CS, &fail);
    ws->g = falloc(FS, &fail), ws->h3 = falloc(FS, &fail), ws->dh1 = falloc(FS, &fail), ws->dh3 = falloc(FS, &fail);
    ws->dq = falloc(QS, &fail), ws->dk = falloc(KS, &fail), ws->dv = falloc(KS, &fail);
    ws->dxn1 = falloc(CS, &fail), ws->dxn2 = falloc(CS, &fail);
    ws->tq = falloc(qk ? QS : 0, &fail), ws->tk = falloc(qk ? KS : 0, &fail);
    ws->rq = falloc(qk ? (size_t)p->H * S : 0, &fail), ws->rk = falloc(qk ? (size_t)p->KV * S : 0, &fail);
    ws->dq_raw = falloc(qk ? QS : 0, &fail), ws->dk_raw = falloc(qk ? KS : 0, &fail);
    size_t RS = lora ? (size_t)lora->cfg.rank * S : 0;
    ws->lu = falloc(RS, &fail), ws->lv = falloc(RS, &fail);
    size_t max_in = 0; /* LoRA dropout: the widest targeted module input */
    for (int i = 0; m->lora_dropout && i < LORA_MODULES; i++)
        if (lora->t[i].present && (size_t)lora->t[i].in > max_in) max_in = (size_t)lora->t[i].in;
    ws->lmask = falloc(max_in * max_T, &fail), ws->lxd = falloc(max_in * S, &fail);
    m->mask_T = falloc(max_in * max_T, &fail), m->mask_S = falloc(max_in * S, &fail);
    if (fail) goto oom;

    return &m->base;
oom:
    err_set(err, "ane backend: out of memory for batch %d x %d (taps %.1f MiB per layer and sequence)", max_B, max_T,
            (double)m->fwd_elems * 2 / 1048576.0);
fail:
    ane_destroy(&m->base);
    return NULL;
}
