/*
** cpu.c — the fp32 reference backend: one training micro-batch on the CPU.
**
** This file is the specification the ANE path is tested against, so it stays plain:
** the forward pass saves what the backward pass needs, in one allocation sized at
** creation; the backward pass walks the layers in reverse and accumulates gradients.
** Matmuls go to BLAS (threaded by the library); the rest is parallelized here over
** sequences, heads or column chunks with the deterministic pool of util/parallel.h.
**
** Per layer, for each sequence ([C][T] channel-first):
**   xn1 = rmsnorm(x) * rms_att          q = wq xn1, k = wk xn1, v = wv xn1
**   (qwen3) q, k = per-head rmsnorm      q, k = rope(q), rope(k)
**   att = attention(q, k, v)             x_mid = x + wo att
**   xn2 = rmsnorm(x_mid) * rms_ffn       g = silu(w1 xn2) * (w3 xn2)
**   x_next = x_mid + w2 g
** then xf = rmsnorm(x_L) * rms_final, logits = wcls xf, loss = cross-entropy.
**
** A frozen base (backend_cpu_create_frozen, FrozenBase in backend.h) changes only the seven
** linear layers of each layer and what the backward pass accumulates:
**   LoRA: a targeted linear y = W x also adds its adapter path, unmerged (PEFT's LoraLayer):
**           xd = x ⊙ mask                       mask: lora_dropout_mask (all ones when p = 0)
**           u  = A xd            [r][T]         saved per layer, module and sequence
**           y += s B u
**         and its backward (dy [O][T]):
**           dx += Wᵀ dy + mask ⊙ (Aᵀ du)        du = s Bᵀ dy [r][T]
**           dB += s dy uᵀ        dA += du xdᵀ
**         No gradient of any base tensor is formed: no dW GEMM, no embedding, classifier or
**         norm-weight gradient (the norms' dx needs a sum over channels that ops_rmsnorm_backward
**         also spends on dw; dw goes to a [C]-float sink that is never read).
**   int8: each of the seven matrices is dequantized (model/quant.h) into one [out][in] scratch
**         right before its GEMMs, in the forward and again in the backward pass; the fp32
**         copies of those matrices in StepArgs.params are never read.
** The classifier alone is computed token-major ([T][V], one 4V-byte row per position), so
** that each position's softmax runs in cache instead of striding through all of [V][T].
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../model/quant.h"
#include "../ops/ops.h"
#include "../util/blas.h"
#include "../util/parallel.h"
#include "backend.h"

/* Saved activations of all layers for max_B sequences; element counts per layer in comments. */
typedef struct {
    float *x;      /* [L+1][B][C][T] residual stream entering each layer; x[L] leaves the last */
    float *xn1;    /* [L][B][C][T] attention-norm output */
    float *rstd1;  /* [L][B][T] */
    float *q_raw;  /* [L][B][H*D][T] wq xn1 before q_norm (qk_norm only) */
    float *k_raw;  /* [L][B][KV*D][T] (qk_norm only) */
    float *rstd_q; /* [L][B][H][T] (qk_norm only) */
    float *rstd_k; /* [L][B][KV][T] (qk_norm only) */
    float *q;      /* [L][B][H*D][T] after norm and rope: what attention saw */
    float *k;      /* [L][B][KV*D][T] */
    float *v;      /* [L][B][KV*D][T] */
    float *att;    /* [L][B][H*D][T] attention output, input of wo */
    float *x_mid;  /* [L][B][C][T] */
    float *xn2;    /* [L][B][C][T] */
    float *rstd2;  /* [L][B][T] */
    float *h1;     /* [L][B][F][T] gate pre-activation */
    float *h3;     /* [L][B][F][T] up projection */
    float *g;      /* [L][B][F][T] silu(h1) * h3, input of w2 */
    float *xf;     /* [B][C][T] final norm output */
    float *rstd_f; /* [B][T] */
} Activations;

/* Gradient scratch for the backward pass (one layer at a time, all sequences). */
typedef struct {
    float *dx;     /* [B][C][T] gradient of the residual stream */
    float *dxn;    /* [B][C][T] gradient of a norm output */
    float *dq;     /* [B][H*D][T] */
    float *dk;     /* [B][KV*D][T] */
    float *dv;     /* [B][KV*D][T] */
    float *dqr;    /* [B][H*D][T] gradient of q_raw (qk_norm only) */
    float *dkr;    /* [B][KV*D][T] (qk_norm only) */
    float *datt;   /* [B][H*D][T] */
    float *dh1;    /* [B][F][T] */
    float *dh3;    /* [B][F][T] */
    float *dg;     /* [B][F][T] */
} Gradients;

typedef struct {
    Backend base;
    ParamLayout layout;
    int max_B, max_T;
    float *arena; /* the single allocation behind everything below */
    size_t arena_floats;
    Activations a;
    Gradients d;
    float *logits;   /* [T][V] token-major, one sequence at a time */
    float *losses;   /* [B][T] per-position loss */
    float *dloss;    /* [T] */
    float *rope_cos; /* [T][D/2] */
    float *rope_sin;
    int rope_T;      /* T the tables were built for */
    float *attn_scratch; /* [threads][2*T*T] */
    int n_scratch;
    /* Frozen base (backend_cpu_create_frozen); has_lora 0 and int8 NULL for full training. */
    int has_lora;
    LoraLayout lora;                  /* a copy of the adapter's layout */
    const Int8Weights *int8;          /* the caller's; outlives the backend */
    float *lora_u[LORA_MODULES];      /* [L][B][r][T] A drop(x) of targeted module m (NULL otherwise) */
    float *lora_mask;                 /* [maxIn][T] one sequence's dropout mask (dropout > 0 only) */
    float *lora_xd;                   /* [maxIn][T] drop(x); in backward, then Aᵀ du (dropout > 0 only) */
    float *lora_du;                   /* [r][T] s Bᵀ dy of one sequence */
    float *norm_dw_sink;              /* [max(C, D)] where a frozen step's norm backward puts dw (never read) */
    float *w_deq;                     /* [max out*in] the int8 matrix being used, dequantized (int8 only) */
} CpuBackend;

/* ------------------------------------------------------------------ sizing */

typedef struct {
    size_t c, q, kv, f, hq, hkv; /* per-sequence element counts: C*T, H*D*T, KV*D*T, F*T, H*T, KV*T */
} Sizes;

static Sizes sizes_for(const ModelConfig *cfg, size_t T) {
    Sizes s;
    s.c = (size_t)cfg->dim * T;
    s.q = (size_t)cfg->n_heads * cfg->head_dim * T;
    s.kv = (size_t)cfg->n_kv_heads * cfg->head_dim * T;
    s.f = (size_t)cfg->hidden_dim * T;
    s.hq = (size_t)cfg->n_heads * T;
    s.hkv = (size_t)cfg->n_kv_heads * T;
    return s;
}

/* Walks the buffer list once; with base == NULL it only counts. Returns floats used. */
static size_t carve(CpuBackend *m, float *base) {
    const ModelConfig *cfg = &m->layout.cfg;
    size_t L = (size_t)cfg->n_layers, B = (size_t)m->max_B, T = (size_t)m->max_T;
    Sizes s = sizes_for(cfg, T);
    size_t used = 0;
#define TAKE(field, count)                                                                         \
    do {                                                                                           \
        size_t n_ = (count);                                                                       \
        if (base) field = n_ ? base + used : NULL;                                                 \
        used += (n_ + 15) & ~(size_t)15; /* keep every buffer 64-byte aligned */                   \
    } while (0)
    int qk = cfg->qk_norm;
    TAKE(m->a.x, (L + 1) * B * s.c);
    TAKE(m->a.xn1, L * B * s.c);
    TAKE(m->a.rstd1, L * B * T);
    TAKE(m->a.q_raw, qk ? L * B * s.q : 0);
    TAKE(m->a.k_raw, qk ? L * B * s.kv : 0);
    TAKE(m->a.rstd_q, qk ? L * B * s.hq : 0);
    TAKE(m->a.rstd_k, qk ? L * B * s.hkv : 0);
    TAKE(m->a.q, L * B * s.q);
    TAKE(m->a.k, L * B * s.kv);
    TAKE(m->a.v, L * B * s.kv);
    TAKE(m->a.att, L * B * s.q);
    TAKE(m->a.x_mid, L * B * s.c);
    TAKE(m->a.xn2, L * B * s.c);
    TAKE(m->a.rstd2, L * B * T);
    TAKE(m->a.h1, L * B * s.f);
    TAKE(m->a.h3, L * B * s.f);
    TAKE(m->a.g, L * B * s.f);
    TAKE(m->a.xf, B * s.c);
    TAKE(m->a.rstd_f, B * T);
    TAKE(m->d.dx, B * s.c);
    TAKE(m->d.dxn, B * s.c);
    TAKE(m->d.dq, B * s.q);
    TAKE(m->d.dk, B * s.kv);
    TAKE(m->d.dv, B * s.kv);
    TAKE(m->d.dqr, qk ? B * s.q : 0);
    TAKE(m->d.dkr, qk ? B * s.kv : 0);
    TAKE(m->d.datt, B * s.q);
    TAKE(m->d.dh1, B * s.f);
    TAKE(m->d.dh3, B * s.f);
    TAKE(m->d.dg, B * s.f);
    TAKE(m->logits, T * (size_t)cfg->vocab_size);
    TAKE(m->losses, B * T);
    TAKE(m->dloss, T);
    TAKE(m->rope_cos, T * (size_t)(cfg->head_dim / 2));
    TAKE(m->rope_sin, T * (size_t)(cfg->head_dim / 2));
    TAKE(m->attn_scratch, (size_t)m->n_scratch * 2 * T * T);
    /* frozen base only */
    size_t max_in = (size_t)(cfg->hidden_dim > cfg->dim ? cfg->hidden_dim : cfg->dim);
    if ((size_t)cfg->n_heads * cfg->head_dim > max_in) max_in = (size_t)cfg->n_heads * cfg->head_dim;
    int dropout = m->has_lora && m->lora.cfg.dropout > 0;
    size_t r = m->has_lora ? (size_t)m->lora.cfg.rank : 0;
    for (int mod = 0; mod < LORA_MODULES; mod++)
        TAKE(m->lora_u[mod], m->has_lora && m->lora.t[mod].present ? L * B * r * T : 0);
    TAKE(m->lora_mask, dropout ? max_in * T : 0);
    TAKE(m->lora_xd, dropout ? max_in * T : 0);
    TAKE(m->lora_du, r * T);
    int frozen = m->has_lora || m->int8;
    TAKE(m->norm_dw_sink, frozen ? (size_t)(cfg->dim > cfg->head_dim ? cfg->dim : cfg->head_dim) : 0);
    size_t max_w = 0;
    for (int mod = 0; mod < LORA_MODULES; mod++) {
        const TensorSpec *t = &m->layout.t[layer_matrices[mod].kind];
        size_t n = (size_t)t->rows * t->cols;
        if (n > max_w) max_w = n;
    }
    TAKE(m->w_deq, m->int8 ? max_w : 0);
#undef TAKE
    return used;
}

double backend_cpu_bytes(const ModelConfig *cfg, int max_B, int max_T) {
    CpuBackend probe;
    memset(&probe, 0, sizeof probe);
    params_layout(&probe.layout, cfg);
    probe.max_B = max_B;
    probe.max_T = max_T;
    probe.n_scratch = parallel_threads();
    return 4.0 * (double)carve(&probe, NULL);
}

/* ------------------------------------------------------------------ parallel helpers */

/* A stage of per-sequence work run by the pool: each task is one sequence b. */
typedef struct {
    CpuBackend *m;
    const ParamViews *w;
    ParamViews *dw; /* gradient views (backward stages) */
    int layer, B, T;
    const int32_t *tokens;
    const int32_t *targets;
    /* frozen-base steps (StepArgs): the adapter, its gradients (NULL: forward only), the dropout
    ** seed and p (LoRA dropout acts in training steps only: 0 in a forward-only step) */
    const float *adapter;
    float *adapter_grads;
    uint64_t dropout_seed;
    float dropout;
} Stage;

typedef void (*SeqFn)(Stage *st, int b);

typedef struct {
    Stage *st;
    SeqFn fn;
} SeqJob;

static void seq_job_run(void *ctx, int begin, int end, int worker) {
    (void)worker;
    SeqJob *job = ctx;
    for (int b = begin; b < end; b++) job->fn(job->st, b);
}

static void for_each_seq(Stage *st, SeqFn fn) {
    SeqJob job = {st, fn};
    parallel_for(st->B, seq_job_run, &job);
}

/* Offsets of sequence b's slice of layer l's saved tensors. */
static size_t at(const Stage *st, int l, int b, size_t per_seq) {
    return ((size_t)l * st->m->max_B + (size_t)b) * per_seq;
}

/* ------------------------------------------------------------------ forward stages */

static void fwd_embed(Stage *st, int b) {
    const ModelConfig *cfg = &st->m->layout.cfg;
    Sizes s = sizes_for(cfg, st->T);
    ops_embedding_forward(st->m->a.x + at(st, 0, b, s.c), st->tokens + (size_t)b * st->T, st->w->tok_emb, st->T,
                          cfg->dim);
}

static void fwd_attn_norm(Stage *st, int b) {
    CpuBackend *m = st->m;
    const ModelConfig *cfg = &m->layout.cfg;
    int l = st->layer, T = st->T, C = cfg->dim;
    Sizes s = sizes_for(cfg, T);
    ops_rmsnorm_forward(m->a.xn1 + at(st, l, b, s.c), m->a.rstd1 + at(st, l, b, T), m->a.x + at(st, l, b, s.c),
                        st->w->rms_att + (size_t)l * C, C, T, cfg->norm_eps);
}

/* Per-head work (q/k norm, RoPE) runs inside the attention task of the head's KV group
** (attn_job_run), so it needs no round of the pool of its own. Head index hd < H is query
** head hd, else key head hd-H. */

/* One head of sequence b: (Qwen3) RMSNorm over the head's D channels, then RoPE. */
static void fwd_qk_rope(Stage *st, int b, int hd) {
    CpuBackend *m = st->m;
    const ModelConfig *cfg = &m->layout.cfg;
    int l = st->layer, T = st->T, D = cfg->head_dim, H = cfg->n_heads;
    Sizes s = sizes_for(cfg, T);
    int is_q = hd < H, h = is_q ? hd : hd - H;
    size_t off = (size_t)h * D * T;
    float *x = is_q ? m->a.q + at(st, l, b, s.q) + off : m->a.k + at(st, l, b, s.kv) + off;
    if (cfg->qk_norm) {
        const float *raw = is_q ? m->a.q_raw + at(st, l, b, s.q) + off : m->a.k_raw + at(st, l, b, s.kv) + off;
        float *rstd = is_q ? m->a.rstd_q + at(st, l, b, s.hq) + (size_t)h * T
                           : m->a.rstd_k + at(st, l, b, s.hkv) + (size_t)h * T;
        const float *w = (is_q ? st->w->q_norm : st->w->k_norm) + (size_t)l * D;
        ops_rmsnorm_forward(x, rstd, raw, w, D, T, cfg->norm_eps);
    }
    ops_rope_forward(x, m->rope_cos, m->rope_sin, 1, D, T, cfg->rope_style);
}

/* RoPE backward on one head of sequence b's dq or dk (the q/k norm backward accumulates into
** weights shared by all heads, so it runs serially in cpu_step). */
static void bwd_qk_rope(Stage *st, int b, int hd) {
    CpuBackend *m = st->m;
    const ModelConfig *cfg = &m->layout.cfg;
    int T = st->T, D = cfg->head_dim, H = cfg->n_heads;
    Sizes s = sizes_for(cfg, T);
    float *dx = hd < H ? m->d.dq + (size_t)b * s.q + (size_t)hd * D * T
                       : m->d.dk + (size_t)b * s.kv + (size_t)(hd - H) * D * T;
    ops_rope_backward(dx, m->rope_cos, m->rope_sin, 1, D, T, cfg->rope_style);
}

static void fwd_ffn_norm(Stage *st, int b) {
    CpuBackend *m = st->m;
    const ModelConfig *cfg = &m->layout.cfg;
    int l = st->layer, T = st->T, C = cfg->dim;
    Sizes s = sizes_for(cfg, T);
    ops_rmsnorm_forward(m->a.xn2 + at(st, l, b, s.c), m->a.rstd2 + at(st, l, b, T), m->a.x_mid + at(st, l, b, s.c),
                        st->w->rms_ffn + (size_t)l * C, C, T, cfg->norm_eps);
}

static void fwd_final_norm(Stage *st, int b) {
    CpuBackend *m = st->m;
    const ModelConfig *cfg = &m->layout.cfg;
    int T = st->T, L = cfg->n_layers;
    Sizes s = sizes_for(cfg, T);
    ops_rmsnorm_forward(m->a.xf + (size_t)b * s.c, m->a.rstd_f + (size_t)b * T, m->a.x + at(st, L, b, s.c),
                        st->w->rms_final, cfg->dim, T, cfg->norm_eps);
}

/* Attention runs one task per (sequence, KV head) with BLAS single-threaded inside. The task
** also owns the per-head work of its heads (the KV head and the query heads that share it):
** q/k norm and RoPE before the forward, RoPE's backward after the backward. */
typedef struct {
    Stage *st;
    int backward;
} AttnJob;

static void attn_job_run(void *ctx, int begin, int end, int worker) {
    AttnJob *job = ctx;
    Stage *st = job->st;
    CpuBackend *m = st->m;
    const ModelConfig *cfg = &m->layout.cfg;
    int l = st->layer, T = st->T, H = cfg->n_heads, KV = cfg->n_kv_heads, D = cfg->head_dim, group = H / KV;
    Sizes s = sizes_for(cfg, T);
    float *scratch = m->attn_scratch + (size_t)worker * 2 * T * T; /* one slice per pool thread */
    for (int task = begin; task < end; task++) {
        int b = task / KV, g = task % KV;
        const float *q = m->a.q + at(st, l, b, s.q), *k = m->a.k + at(st, l, b, s.kv), *v = m->a.v + at(st, l, b, s.kv);
        if (!job->backward) {
            for (int h = g * group; h < (g + 1) * group; h++) fwd_qk_rope(st, b, h);
            fwd_qk_rope(st, b, H + g);
            ops_attention_forward(m->a.att + at(st, l, b, s.q), q, k, v, H, KV, D, T, g, g + 1, scratch);
        } else {
            ops_attention_backward(m->d.dq + (size_t)b * s.q, m->d.dk + (size_t)b * s.kv, m->d.dv + (size_t)b * s.kv,
                                   m->d.datt + (size_t)b * s.q, q, k, v, H, KV, D, T, g, g + 1, scratch);
            for (int h = g * group; h < (g + 1) * group; h++) bwd_qk_rope(st, b, h);
            bwd_qk_rope(st, b, H + g);
        }
    }
}

static void run_attention(Stage *st, int backward) {
    AttnJob job = {st, backward};
    int threads = parallel_threads();
    if (threads > 1) blas_single_acquire(); /* each pool thread's BLAS calls single-threaded */
    parallel_tasks(st->B * st->m->layout.cfg.n_kv_heads, 1, attn_job_run, &job);
    if (threads > 1) blas_single_release();
}

/* Cross-entropy over row chunks (positions) of one sequence's [T][V] logits, LOSS_ROWS at a time. */
enum { LOSS_ROWS = 8 };

typedef struct {
    CpuBackend *m;
    const int32_t *targets;
    float *losses;
    int T;
    int backward; /* 1: also turn the logits into dlogits (needs m->dloss) */
} LossJob;

static void loss_job_run(void *ctx, int begin, int end, int worker) {
    (void)worker;
    LossJob *job = ctx;
    CpuBackend *m = job->m;
    int V = m->layout.cfg.vocab_size;
    float *rows = m->logits + (size_t)begin * V;
    if (!job->backward)
        ops_cross_entropy_rows_forward(job->losses + begin, rows, job->targets + begin, V, end - begin);
    else /* loss and, in place, dlogits */
        ops_cross_entropy_rows_fused(job->losses + begin, rows, rows, job->targets + begin, m->dloss + begin, V,
                                     end - begin);
}

/* out [V][T] = in^T for in [T][V]: the token-major logits in the documented [V][T] layout. */
static void transpose_logits(float *out, const float *in, int T, int V) {
    enum { TILE = 32 };
    for (int v0 = 0; v0 < V; v0 += TILE)
        for (int t0 = 0; t0 < T; t0 += TILE) {
            int v1 = v0 + TILE < V ? v0 + TILE : V, t1 = t0 + TILE < T ? t0 + TILE : T;
            for (int v = v0; v < v1; v++)
                for (int t = t0; t < t1; t++) out[(size_t)v * T + t] = in[(size_t)t * V + v];
        }
}

/* SwiGLU over all sequences of a layer: elementwise, so split into fixed chunks of the flat
** [B][F][T] range (this keeps both cores busy even at batch 1). */
enum { SWIGLU_CHUNK = 16384 };

typedef struct {
    float *g, *dh1, *dh3;
    const float *h1, *h3, *dg;
    size_t n;
    int backward;
} SwigluJob;

static void swiglu_job_run(void *ctx, int begin, int end, int worker) {
    (void)worker;
    SwigluJob *j = ctx;
    size_t lo = (size_t)begin * SWIGLU_CHUNK, hi = (size_t)end * SWIGLU_CHUNK;
    if (hi > j->n) hi = j->n;
    if (!j->backward) {
        ops_swiglu_forward(j->g + lo, j->h1 + lo, j->h3 + lo, hi - lo);
    } else {
        memset(j->dh1 + lo, 0, (hi - lo) * sizeof(float));
        memset(j->dh3 + lo, 0, (hi - lo) * sizeof(float));
        ops_swiglu_backward(j->dh1 + lo, j->dh3 + lo, j->dg + lo, j->h1 + lo, j->h3 + lo, hi - lo);
    }
}

static void run_swiglu(SwigluJob *job) {
    parallel_tasks((int)((job->n + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK), 1, swiglu_job_run, job);
}

/* ------------------------------------------------------------------ backward stages */

static void bwd_final_norm(Stage *st, int b) {
    CpuBackend *m = st->m;
    const ModelConfig *cfg = &m->layout.cfg;
    int T = st->T;
    Sizes s = sizes_for(cfg, T);
    /* dx was zeroed; dxn holds d loss / d xf for sequence b. rms_final's gradient is shared by
    ** all sequences, so this stage runs serially (see cpu_step). */
    ops_rmsnorm_backward(m->d.dx + (size_t)b * s.c, st->dw ? st->dw->rms_final : m->norm_dw_sink,
                         m->d.dxn + (size_t)b * s.c,
                         m->a.x + at(st, cfg->n_layers, b, s.c), st->w->rms_final, m->a.rstd_f + (size_t)b * T,
                         cfg->dim, T);
}

/* ------------------------------------------------------------------ the step */

/* Runs a linear layer's forward for every sequence: y_b = W x_b. */
static void linear_fwd_all(const Stage *st, float *y, size_t y_stride, const float *x, size_t x_stride,
                           const float *W, int O, int In) {
    for (int b = 0; b < st->B; b++)
        ops_linear_forward(y + (size_t)b * y_stride, x + (size_t)b * x_stride, W, O, In, st->T);
}

/* dx_b += W^T dy_b (dx may be NULL) and dW += sum_b dy_b x_b^T. */
static void linear_bwd_all(const Stage *st, float *dx, size_t dx_stride, float *dW, const float *dy, size_t dy_stride,
                           const float *x, size_t x_stride, const float *W, int O, int In) {
    for (int b = 0; b < st->B; b++)
        ops_linear_backward(dx ? dx + (size_t)b * dx_stride : NULL, dW, dy + (size_t)b * dy_stride,
                            x + (size_t)b * x_stride, W, O, In, st->T);
}

/* ------------------------------------------------------------------ the seven linear layers of a layer
** Each runs through linear_fwd / linear_bwd: the base matrix W (fp32, or dequantized int8) and,
** when the module is adapted, the unmerged LoRA path beside it (see the header). */

typedef struct {
    float *w;
    const int8_t *q;
    const float *scale;
    int cols;
} DequantJob;

static void dequant_job_run(void *ctx, int begin, int end, int worker) {
    (void)worker;
    DequantJob *j = ctx;
    size_t off = (size_t)begin * j->cols;
    dequant_rows_int8(j->w + off, j->q + off, j->scale + begin, end - begin, j->cols);
}

/* Layer st->layer's base matrix of module mod (layer matrix mod, params.h), fp32 [out][in]: a
** view of the parameters, or (int8 base) the int8 matrix dequantized into m->w_deq, valid until
** the next call. */
static const float *base_matrix(const Stage *st, LoraModule mod) {
    CpuBackend *m = st->m;
    TensorKind k = layer_matrices[mod].kind;
    const TensorSpec *t = &m->layout.t[k];
    if (!m->int8) return layer_matrix(st->w, &m->layout.cfg, mod, st->layer);
    DequantJob job = {m->w_deq, quant_int8_q(m->int8, k, st->layer), quant_int8_scale(m->int8, k, st->layer), t->cols};
    parallel_for(t->rows, dequant_job_run, &job);
    return m->w_deq;
}

/* One sequence's LoRA dropout: rows of mask [In][T] (lora_dropout_mask) and xd = x ⊙ mask. */
typedef struct {
    const Stage *st;
    LoraModule mod;
    int b;
    const float *x; /* [In][T], or NULL: the mask only */
    float *mask, *xd;
} MaskJob;

static void mask_job_run(void *ctx, int begin, int end, int worker) {
    (void)worker;
    MaskJob *j = ctx;
    const Stage *st = j->st;
    int T = st->T;
    lora_dropout_mask(j->mask, st->dropout_seed, st->layer, j->mod, j->b, begin, end, T, st->dropout);
    if (!j->x) return;
    for (size_t i = (size_t)begin * T; i < (size_t)end * T; i++) j->xd[i] = j->x[i] * j->mask[i];
}

/* The adapter path's input of sequence b: x itself without dropout, else m->lora_xd (and the
** mask in m->lora_mask). */
static const float *lora_input(const Stage *st, LoraModule mod, int b, const float *x) {
    CpuBackend *m = st->m;
    if (!(st->dropout > 0)) return x;
    MaskJob job = {st, mod, b, x, m->lora_mask, m->lora_xd};
    parallel_for(m->lora.t[mod].in, mask_job_run, &job);
    return m->lora_xd;
}

/* y_b = W x_b, then (adapted module) u_b = A drop(x_b) [r][T] saved, y_b += s B u_b.
** x [B][In][T], y [B][O][T] with the given per-sequence strides. */
static void linear_fwd(const Stage *st, LoraModule mod, float *y, size_t y_stride, const float *x, size_t x_stride) {
    CpuBackend *m = st->m;
    const TensorSpec *t = &m->layout.t[layer_matrices[mod].kind];
    int O = t->rows, In = t->cols, T = st->T;
    linear_fwd_all(st, y, y_stride, x, x_stride, base_matrix(st, mod), O, In);
    if (!m->has_lora || !m->lora.t[mod].present || !st->adapter) return; /* no adapter: the base alone */
    int r = m->lora.cfg.rank;
    const float *A = lora_A(&m->lora, (float *)st->adapter, mod, st->layer);
    const float *Bm = lora_B(&m->lora, (float *)st->adapter, mod, st->layer);
    for (int b = 0; b < st->B; b++) {
        const float *xd = lora_input(st, mod, b, x + (size_t)b * x_stride);
        ops_lora_forward(y + (size_t)b * y_stride, m->lora_u[mod] + at(st, st->layer, b, (size_t)r * T), xd, A, Bm,
                         m->lora.scale, O, r, In, T);
    }
}

/* The backward of linear_fwd, dy [B][O][T] -> dx [B][In][T] (accumulated; NULL: not needed):
**   dx_b += Wᵀ dy_b;  full training: dW += sum_b dy_b x_bᵀ (into st->dw);
**   adapted module: du = s Bᵀ dy_b, dB += s dy_b u_bᵀ, dA += du drop(x_b)ᵀ, dx_b += mask ⊙ Aᵀ du. */
static void linear_bwd(const Stage *st, LoraModule mod, float *dx, size_t dx_stride, const float *dy, size_t dy_stride,
                       const float *x, size_t x_stride) {
    CpuBackend *m = st->m;
    const TensorSpec *t = &m->layout.t[layer_matrices[mod].kind];
    int O = t->rows, In = t->cols, T = st->T;
    float *dW = st->dw ? layer_matrix(st->dw, &m->layout.cfg, mod, st->layer) : NULL;
    if (dx || dW) linear_bwd_all(st, dx, dx_stride, dW, dy, dy_stride, x, x_stride, base_matrix(st, mod), O, In);
    if (!m->has_lora || !m->lora.t[mod].present) return;
    int r = m->lora.cfg.rank, dropout = st->dropout > 0;
    const float *A = lora_A(&m->lora, (float *)st->adapter, mod, st->layer);
    const float *Bm = lora_B(&m->lora, (float *)st->adapter, mod, st->layer);
    float *dA = lora_A(&m->lora, st->adapter_grads, mod, st->layer);
    float *dB = lora_B(&m->lora, st->adapter_grads, mod, st->layer);
    for (int b = 0; b < st->B; b++) {
        const float *xd = lora_input(st, mod, b, x + (size_t)b * x_stride);
        float *dx_b = dx ? dx + (size_t)b * dx_stride : NULL;
        ops_lora_backward(dropout ? NULL : dx_b, dA, dB, m->lora_du, dy + (size_t)b * dy_stride, xd,
                          m->lora_u[mod] + at(st, st->layer, b, (size_t)r * T), A, Bm, m->lora.scale, O, r, In, T);
        if (!dropout || !dx_b) continue;
        /* d drop(x) = Aᵀ du into lora_xd (free again), then dx_b += mask ⊙ d drop(x) */
        memset(m->lora_xd, 0, (size_t)In * T * sizeof(float));
        ops_linear_backward(m->lora_xd, NULL, m->lora_du, NULL, A, r, In, T);
        for (size_t i = 0; i < (size_t)In * T; i++) dx_b[i] += m->lora_mask[i] * m->lora_xd[i];
    }
}

static void add_into(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static int cpu_step(Backend *self, const StepArgs *args, double *loss_out, Err *err) {
    CpuBackend *m = (CpuBackend *)self;
    const float *params = args->params;
    float *grads = args->grads, *logits_out = args->logits;
    const int32_t *inputs = args->inputs, *targets = args->targets;
    int B = args->B, T = args->T;
    float grad_scale = args->grad_scale;
    if (backend_step_args_check("cpu", args, m->has_lora, m->int8 != NULL, m->max_B, m->max_T, err) != 0) return -1;
    const ModelConfig *cfg = &m->layout.cfg;
    if (parallel_threads() > m->n_scratch)
        return err_set(err, "cpu backend: created for %d threads, now %d (create it after parallel_init)",
                       m->n_scratch, parallel_threads());
    int C = cfg->dim, L = cfg->n_layers, V = cfg->vocab_size, D = cfg->head_dim;
    Sizes s = sizes_for(cfg, T);
    size_t LB = (size_t)m->max_B; /* layer stride in sequences */
    ParamViews w, dw;
    params_views(&m->layout, (float *)params, &w);
    if (grads) params_views(&m->layout, grads, &dw);
    Stage st = {m, &w, grads ? &dw : NULL, 0, B, T, inputs, targets, args->adapter, args->adapter_grads,
                args->dropout_seed, m->has_lora && args->adapter_grads ? m->lora.cfg.dropout : 0.0f};
    /* backward: full training (grads) or the adapter's gradients over a frozen base; in the
    ** latter, frozen_bwd: no gradient of any base tensor, norms' dw into a sink */
    int backward = grads != NULL || args->adapter_grads != NULL, frozen_bwd = backward && !grads;

    if (m->rope_T != T) {
        ops_rope_table(m->rope_cos, m->rope_sin, T, D, 0, cfg->rope_theta);
        m->rope_T = T;
    }

    /* ---- forward ---- */
    for_each_seq(&st, fwd_embed);
    for (int l = 0; l < L; l++) {
        st.layer = l;
        size_t lc = (size_t)l * LB * s.c, lq = (size_t)l * LB * s.q, lkv = (size_t)l * LB * s.kv,
               lf = (size_t)l * LB * s.f;
        for_each_seq(&st, fwd_attn_norm);
        float *q_dst = cfg->qk_norm ? m->a.q_raw : m->a.q, *k_dst = cfg->qk_norm ? m->a.k_raw : m->a.k;
        linear_fwd(&st, LORA_Q, q_dst + lq, s.q, m->a.xn1 + lc, s.c);    /* [H*D][T] */
        linear_fwd(&st, LORA_K, k_dst + lkv, s.kv, m->a.xn1 + lc, s.c);  /* [KV*D][T] */
        linear_fwd(&st, LORA_V, m->a.v + lkv, s.kv, m->a.xn1 + lc, s.c); /* [KV*D][T] */
        run_attention(&st, 0);
        linear_fwd(&st, LORA_O, m->a.x_mid + lc, s.c, m->a.att + lq, s.q); /* [C][T] */
        for (int b = 0; b < B; b++) add_into(m->a.x_mid + lc + b * s.c, m->a.x + lc + b * s.c, s.c);
        for_each_seq(&st, fwd_ffn_norm);
        linear_fwd(&st, LORA_GATE, m->a.h1 + lf, s.f, m->a.xn2 + lc, s.c); /* [F][T] */
        linear_fwd(&st, LORA_UP, m->a.h3 + lf, s.f, m->a.xn2 + lc, s.c);   /* [F][T] */
        SwigluJob sw = {m->a.g + lf, NULL, NULL, m->a.h1 + lf, m->a.h3 + lf, NULL, (size_t)B * s.f, 0};
        run_swiglu(&sw);
        float *x_next = m->a.x + (size_t)(l + 1) * LB * s.c;
        linear_fwd(&st, LORA_DOWN, x_next, s.c, m->a.g + lf, s.f); /* [C][T] */
        for (int b = 0; b < B; b++) add_into(x_next + b * s.c, m->a.x_mid + lc + b * s.c, s.c);
    }
    for_each_seq(&st, fwd_final_norm);

    /* ---- classifier and loss, one sequence at a time (logits are [T][V] token-major); with
    ** gradients the classifier's backward runs right here so no [B][V][T] buffer is ever needed ---- */
    if (backward) memset(m->d.dxn, 0, (size_t)B * s.c * sizeof(float));
    double total = 0;
    for (int b = 0; b < B; b++) {
        const float *xf = m->a.xf + (size_t)b * s.c;
        ops_linear_forward_tokens(m->logits, xf, w.wcls, V, C, T);
        if (logits_out) transpose_logits(logits_out + (size_t)b * V * T, m->logits, T, V);
        if (backward)
            for (int t = 0; t < T; t++) m->dloss[t] = grad_scale / ((float)B * (float)T);
        LossJob job = {m, targets + (size_t)b * T, m->losses + (size_t)b * T, T, backward};
        parallel_tasks(T, LOSS_ROWS, loss_job_run, &job); /* with grads, the logits now hold dlogits */
        for (int t = 0; t < T; t++) total += m->losses[(size_t)b * T + t];
        if (!backward) continue;
        ops_linear_backward_tokens(m->d.dxn + (size_t)b * s.c, grads ? dw.wcls : NULL, m->logits, xf, w.wcls, V, C,
                                   T);
    }
    *loss_out = total / ((double)B * T);
    if (!backward) return 0;

    /* ---- backward ---- */
    memset(m->d.dx, 0, (size_t)B * s.c * sizeof(float));
    for (int b = 0; b < B; b++) bwd_final_norm(&st, b);
    for (int l = L - 1; l >= 0; l--) {
        st.layer = l;
        size_t lc = (size_t)l * LB * s.c, lq = (size_t)l * LB * s.q, lkv = (size_t)l * LB * s.kv,
               lf = (size_t)l * LB * s.f;
        /* FFN: dx is d loss / d x_next, which also flows unchanged to x_mid. */
        memset(m->d.dg, 0, (size_t)B * s.f * sizeof(float));
        linear_bwd(&st, LORA_DOWN, m->d.dg, s.f, m->d.dx, s.c, m->a.g + lf, s.f); /* dg [F][T] */
        SwigluJob sw = {NULL, m->d.dh1, m->d.dh3, m->a.h1 + lf, m->a.h3 + lf, m->d.dg, (size_t)B * s.f, 1};
        run_swiglu(&sw);
        memset(m->d.dxn, 0, (size_t)B * s.c * sizeof(float));
        linear_bwd(&st, LORA_GATE, m->d.dxn, s.c, m->d.dh1, s.f, m->a.xn2 + lc, s.c); /* dxn [C][T] */
        linear_bwd(&st, LORA_UP, m->d.dxn, s.c, m->d.dh3, s.f, m->a.xn2 + lc, s.c);
        for (int b = 0; b < B; b++)
            ops_rmsnorm_backward(m->d.dx + b * s.c, frozen_bwd ? m->norm_dw_sink : dw.rms_ffn + (size_t)l * C,
                                 m->d.dxn + b * s.c,
                                 m->a.x_mid + lc + b * s.c, w.rms_ffn + (size_t)l * C, m->a.rstd2 + (size_t)l * LB * T + b * T,
                                 C, T);
        /* Attention: dx is now d loss / d x_mid, which also flows unchanged to x. */
        memset(m->d.datt, 0, (size_t)B * s.q * sizeof(float));
        linear_bwd(&st, LORA_O, m->d.datt, s.q, m->d.dx, s.c, m->a.att + lq, s.q); /* datt [H*D][T] */
        memset(m->d.dq, 0, (size_t)B * s.q * sizeof(float));
        memset(m->d.dk, 0, (size_t)B * s.kv * sizeof(float));
        memset(m->d.dv, 0, (size_t)B * s.kv * sizeof(float));
        run_attention(&st, 1);
        float *dq_raw = m->d.dq, *dk_raw = m->d.dk;
        if (cfg->qk_norm) {
            /* The norm weights are shared by heads and sequences: accumulate serially. */
            memset(m->d.dqr, 0, (size_t)B * s.q * sizeof(float));
            memset(m->d.dkr, 0, (size_t)B * s.kv * sizeof(float));
            float *dwq = frozen_bwd ? m->norm_dw_sink : dw.q_norm + (size_t)l * D;
            float *dwk = frozen_bwd ? m->norm_dw_sink : dw.k_norm + (size_t)l * D;
            const float *wqn = w.q_norm + (size_t)l * D, *wkn = w.k_norm + (size_t)l * D;
            for (int b = 0; b < B; b++) {
                size_t oq = lq + b * s.q, ok = lkv + b * s.kv;
                size_t orq = (size_t)l * LB * s.hq + b * s.hq, ork = (size_t)l * LB * s.hkv + b * s.hkv;
                for (int h = 0; h < cfg->n_heads; h++)
                    ops_rmsnorm_backward(m->d.dqr + b * s.q + (size_t)h * D * T, dwq, m->d.dq + b * s.q + (size_t)h * D * T,
                                         m->a.q_raw + oq + (size_t)h * D * T, wqn, m->a.rstd_q + orq + (size_t)h * T, D,
                                         T);
                for (int h = 0; h < cfg->n_kv_heads; h++)
                    ops_rmsnorm_backward(m->d.dkr + b * s.kv + (size_t)h * D * T, dwk,
                                         m->d.dk + b * s.kv + (size_t)h * D * T, m->a.k_raw + ok + (size_t)h * D * T,
                                         wkn, m->a.rstd_k + ork + (size_t)h * T, D, T);
            }
            dq_raw = m->d.dqr;
            dk_raw = m->d.dkr;
        }
        /* Over a frozen base, layer 0's input gradient feeds only the (frozen) embedding: skip it. */
        float *dxn = frozen_bwd && l == 0 ? NULL : m->d.dxn;
        memset(m->d.dxn, 0, (size_t)B * s.c * sizeof(float));
        linear_bwd(&st, LORA_Q, dxn, s.c, dq_raw, s.q, m->a.xn1 + lc, s.c); /* dxn [C][T] */
        linear_bwd(&st, LORA_K, dxn, s.c, dk_raw, s.kv, m->a.xn1 + lc, s.c);
        linear_bwd(&st, LORA_V, dxn, s.c, m->d.dv, s.kv, m->a.xn1 + lc, s.c);
        if (!dxn) break;
        for (int b = 0; b < B; b++)
            ops_rmsnorm_backward(m->d.dx + b * s.c, frozen_bwd ? m->norm_dw_sink : dw.rms_att + (size_t)l * C,
                                 m->d.dxn + b * s.c,
                                 m->a.x + lc + b * s.c, w.rms_att + (size_t)l * C, m->a.rstd1 + (size_t)l * LB * T + b * T,
                                 C, T);
    }
    if (frozen_bwd) return 0;
    for (int b = 0; b < B; b++)
        ops_embedding_backward(dw.tok_emb, m->d.dx + (size_t)b * s.c, inputs + (size_t)b * T, T, C);
    return 0;
}

static void cpu_destroy(Backend *self) {
    CpuBackend *m = (CpuBackend *)self;
    if (!m) return;
    free(m->arena);
    free(m);
}

Backend *backend_cpu_create(const ParamLayout *layout, int max_B, int max_T, Err *err) {
    return backend_cpu_create_frozen(layout, NULL, max_B, max_T, err);
}

Backend *backend_cpu_create_frozen(const ParamLayout *layout, const FrozenBase *frozen, int max_B, int max_T,
                                   Err *err) {
    if (max_B < 1 || max_T < 1) {
        err_set(err, "cpu backend: batch and sequence length must be positive (found %d x %d)", max_B, max_T);
        return NULL;
    }
    const LoraLayout *lora = frozen ? frozen->lora : NULL;
    const Int8Weights *int8 = frozen ? frozen->int8 : NULL;
    if (frozen_base_check(frozen, layout, "cpu", err) != 0) return NULL;
    CpuBackend *m = err_calloc(1, sizeof *m, "cpu backend", err);
    if (!m) return NULL;
    m->base.name = "cpu";
    m->base.kind = BACKEND_CPU;
    m->base.step = cpu_step;
    m->base.destroy = cpu_destroy;
    m->layout = *layout;
    m->max_B = max_B;
    m->max_T = max_T;
    m->n_scratch = parallel_threads();
    if (lora) {
        m->has_lora = 1;
        m->lora = *lora;
    }
    m->int8 = int8;
    m->arena_floats = carve(m, NULL);
    m->arena = err_malloc(m->arena_floats * sizeof(float) + 64, "cpu backend activations", err);
    if (!m->arena) {
        err_wrap(err, "model needs %.1f MiB of activations for batch %d x %d tokens",
                 (double)m->arena_floats * 4 / 1048576.0, max_B, max_T);
        free(m);
        return NULL;
    }
    memset(m->arena, 0, m->arena_floats * sizeof(float));
    carve(m, m->arena);
    m->rope_T = 0;
    return &m->base;
}
