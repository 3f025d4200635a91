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
** The classifier alone is computed token-major ([T][V], one 4V-byte row per position), so
** that each position's softmax runs in cache instead of striding through all of [V][T].
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    if (threads > 1) blas_set_threads(1);
    parallel_tasks(st->B * st->m->layout.cfg.n_kv_heads, 1, attn_job_run, &job);
    if (threads > 1) blas_set_threads(threads);
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
    ops_rmsnorm_backward(m->d.dx + (size_t)b * s.c, st->dw->rms_final, m->d.dxn + (size_t)b * s.c,
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

static void add_into(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static int cpu_step(Backend *self, const float *params, float *grads, const int32_t *inputs, const int32_t *targets,
                    int B, int T, float grad_scale, double *loss_out, float *logits_out, Err *err) {
    CpuBackend *m = (CpuBackend *)self;
    const ModelConfig *cfg = &m->layout.cfg;
    if (B < 1 || B > m->max_B || T < 1 || T > m->max_T)
        return err_set(err, "cpu backend: batch %dx%d outside the allocated %dx%d", B, T, m->max_B, m->max_T);
    if (parallel_threads() > m->n_scratch)
        return err_set(err, "cpu backend: created for %d threads, now %d (create it after parallel_init)",
                       m->n_scratch, parallel_threads());
    int C = cfg->dim, F = cfg->hidden_dim, L = cfg->n_layers, V = cfg->vocab_size;
    int QD = cfg->n_heads * cfg->head_dim, KD = cfg->n_kv_heads * cfg->head_dim, D = cfg->head_dim;
    Sizes s = sizes_for(cfg, T);
    size_t LB = (size_t)m->max_B; /* layer stride in sequences */
    ParamViews w, dw;
    params_views(&m->layout, (float *)params, &w);
    if (grads) params_views(&m->layout, grads, &dw);
    Stage st = {m, &w, grads ? &dw : NULL, 0, B, T, inputs, targets};

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
        linear_fwd_all(&st, q_dst + lq, s.q, m->a.xn1 + lc, s.c, w.wq + (size_t)l * QD * C, QD, C);
        linear_fwd_all(&st, k_dst + lkv, s.kv, m->a.xn1 + lc, s.c, w.wk + (size_t)l * KD * C, KD, C);
        linear_fwd_all(&st, m->a.v + lkv, s.kv, m->a.xn1 + lc, s.c, w.wv + (size_t)l * KD * C, KD, C);
        run_attention(&st, 0);
        linear_fwd_all(&st, m->a.x_mid + lc, s.c, m->a.att + lq, s.q, w.wo + (size_t)l * C * QD, C, QD);
        for (int b = 0; b < B; b++) add_into(m->a.x_mid + lc + b * s.c, m->a.x + lc + b * s.c, s.c);
        for_each_seq(&st, fwd_ffn_norm);
        linear_fwd_all(&st, m->a.h1 + lf, s.f, m->a.xn2 + lc, s.c, w.w1 + (size_t)l * F * C, F, C);
        linear_fwd_all(&st, m->a.h3 + lf, s.f, m->a.xn2 + lc, s.c, w.w3 + (size_t)l * F * C, F, C);
        SwigluJob sw = {m->a.g + lf, NULL, NULL, m->a.h1 + lf, m->a.h3 + lf, NULL, (size_t)B * s.f, 0};
        run_swiglu(&sw);
        float *x_next = m->a.x + (size_t)(l + 1) * LB * s.c;
        linear_fwd_all(&st, x_next, s.c, m->a.g + lf, s.f, w.w2 + (size_t)l * C * F, C, F);
        for (int b = 0; b < B; b++) add_into(x_next + b * s.c, m->a.x_mid + lc + b * s.c, s.c);
    }
    for_each_seq(&st, fwd_final_norm);

    /* ---- classifier and loss, one sequence at a time (logits are [T][V] token-major); with
    ** gradients the classifier's backward runs right here so no [B][V][T] buffer is ever needed ---- */
    if (grads) memset(m->d.dxn, 0, (size_t)B * s.c * sizeof(float));
    double total = 0;
    for (int b = 0; b < B; b++) {
        const float *xf = m->a.xf + (size_t)b * s.c;
        ops_linear_forward_tokens(m->logits, xf, w.wcls, V, C, T);
        if (logits_out) transpose_logits(logits_out + (size_t)b * V * T, m->logits, T, V);
        if (grads)
            for (int t = 0; t < T; t++) m->dloss[t] = grad_scale / ((float)B * (float)T);
        LossJob job = {m, targets + (size_t)b * T, m->losses + (size_t)b * T, T, grads != NULL};
        parallel_tasks(T, LOSS_ROWS, loss_job_run, &job); /* with grads, the logits now hold dlogits */
        for (int t = 0; t < T; t++) total += m->losses[(size_t)b * T + t];
        if (!grads) continue;
        ops_linear_backward_tokens(m->d.dxn + (size_t)b * s.c, dw.wcls, m->logits, xf, w.wcls, V, C, T);
    }
    *loss_out = total / ((double)B * T);
    if (!grads) return 0;

    /* ---- backward ---- */
    memset(m->d.dx, 0, (size_t)B * s.c * sizeof(float));
    for (int b = 0; b < B; b++) bwd_final_norm(&st, b);
    for (int l = L - 1; l >= 0; l--) {
        st.layer = l;
        size_t lc = (size_t)l * LB * s.c, lq = (size_t)l * LB * s.q, lkv = (size_t)l * LB * s.kv,
               lf = (size_t)l * LB * s.f;
        /* FFN: dx is d loss / d x_next, which also flows unchanged to x_mid. */
        memset(m->d.dg, 0, (size_t)B * s.f * sizeof(float));
        linear_bwd_all(&st, m->d.dg, s.f, dw.w2 + (size_t)l * C * F, m->d.dx, s.c, m->a.g + lf, s.f,
                       w.w2 + (size_t)l * C * F, C, F);
        SwigluJob sw = {NULL, m->d.dh1, m->d.dh3, m->a.h1 + lf, m->a.h3 + lf, m->d.dg, (size_t)B * s.f, 1};
        run_swiglu(&sw);
        memset(m->d.dxn, 0, (size_t)B * s.c * sizeof(float));
        linear_bwd_all(&st, m->d.dxn, s.c, dw.w1 + (size_t)l * F * C, m->d.dh1, s.f, m->a.xn2 + lc, s.c,
                       w.w1 + (size_t)l * F * C, F, C);
        linear_bwd_all(&st, m->d.dxn, s.c, dw.w3 + (size_t)l * F * C, m->d.dh3, s.f, m->a.xn2 + lc, s.c,
                       w.w3 + (size_t)l * F * C, F, C);
        for (int b = 0; b < B; b++)
            ops_rmsnorm_backward(m->d.dx + b * s.c, dw.rms_ffn + (size_t)l * C, m->d.dxn + b * s.c,
                                 m->a.x_mid + lc + b * s.c, w.rms_ffn + (size_t)l * C, m->a.rstd2 + (size_t)l * LB * T + b * T,
                                 C, T);
        /* Attention: dx is now d loss / d x_mid, which also flows unchanged to x. */
        memset(m->d.datt, 0, (size_t)B * s.q * sizeof(float));
        linear_bwd_all(&st, m->d.datt, s.q, dw.wo + (size_t)l * C * QD, m->d.dx, s.c, m->a.att + lq, s.q,
                       w.wo + (size_t)l * C * QD, C, QD);
        memset(m->d.dq, 0, (size_t)B * s.q * sizeof(float));
        memset(m->d.dk, 0, (size_t)B * s.kv * sizeof(float));
        memset(m->d.dv, 0, (size_t)B * s.kv * sizeof(float));
        run_attention(&st, 1);
        float *dq_raw = m->d.dq, *dk_raw = m->d.dk;
        if (cfg->qk_norm) {
            /* The norm weights are shared by heads and sequences: accumulate serially. */
            memset(m->d.dqr, 0, (size_t)B * s.q * sizeof(float));
            memset(m->d.dkr, 0, (size_t)B * s.kv * sizeof(float));
            float *dwq = dw.q_norm + (size_t)l * D, *dwk = dw.k_norm + (size_t)l * D;
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
        memset(m->d.dxn, 0, (size_t)B * s.c * sizeof(float));
        linear_bwd_all(&st, m->d.dxn, s.c, dw.wq + (size_t)l * QD * C, dq_raw, s.q, m->a.xn1 + lc, s.c,
                       w.wq + (size_t)l * QD * C, QD, C);
        linear_bwd_all(&st, m->d.dxn, s.c, dw.wk + (size_t)l * KD * C, dk_raw, s.kv, m->a.xn1 + lc, s.c,
                       w.wk + (size_t)l * KD * C, KD, C);
        linear_bwd_all(&st, m->d.dxn, s.c, dw.wv + (size_t)l * KD * C, m->d.dv, s.kv, m->a.xn1 + lc, s.c,
                       w.wv + (size_t)l * KD * C, KD, C);
        for (int b = 0; b < B; b++)
            ops_rmsnorm_backward(m->d.dx + b * s.c, dw.rms_att + (size_t)l * C, m->d.dxn + b * s.c,
                                 m->a.x + lc + b * s.c, w.rms_att + (size_t)l * C, m->a.rstd1 + (size_t)l * LB * T + b * T,
                                 C, T);
    }
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
    if (max_B < 1 || max_T < 1) {
        err_set(err, "cpu backend: batch and sequence length must be positive (found %d x %d)", max_B, max_T);
        return NULL;
    }
    CpuBackend *m = err_calloc(1, sizeof *m, "cpu backend", err);
    if (!m) return NULL;
    m->base.name = "cpu";
    m->base.step = cpu_step;
    m->base.destroy = cpu_destroy;
    m->layout = *layout;
    m->max_B = max_B;
    m->max_T = max_T;
    m->n_scratch = parallel_threads();
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
