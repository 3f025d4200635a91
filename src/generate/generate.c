/*
** generate.c — the forward pass of one sequence with a KV cache (see generate.h).
**
** The model is backend/cpu.c's, evaluated for a chunk of T new tokens at positions
** pos .. pos+T-1 of one sequence whose earlier keys and values sit in the cache:
**
**   x = tok_emb[tokens]                                    [T][C]
**   per layer l:
**     xn = rmsnorm(x) * rms_att                             (per token)
**     q = wq xn [T][H*D];  k = wk xn, v = wv xn -> cache[l][pos..pos+T-1]  [KV*D] rows
**     (qwen3) per-head rmsnorm of q and k;  rope(q), rope(k) at their absolute positions
**     att[t] = softmax(q_h . k_g[0..pos+t] / sqrt(D)) v_g  for head h, g = h / (H/KV)
**     x += wo att;  xn = rmsnorm(x) * rms_ffn;  x += w2 (silu(w1 xn) * (w3 xn))
**   logits = wcls (rmsnorm(x) * rms_final)                  [T][V] (or the last row only)
**
** Unlike the backends, activations here are token-major, [T][C]: generation works on one
** token's vector at a time, and a token's keys and values are then one contiguous row to
** append to the cache, [L][S][KV*D] as in run.c. The per-token pieces reuse the reference
** ops (rmsnorm, rope, swiglu with T = 1: a [C][1] tensor is a vector), so only the matmuls
** and the cached attention are written here.
**
** Speed: one decode step streams every weight once (memory-bound), ~45 matrix-vector
** products for stories15m, each too short to share out with a sleeping thread pool. So
** the generator runs as a team on the pool (parallel_team, util/parallel.h): the worker
** threads stay in the forward pass with the caller, each computing a fixed share of every
** matrix's rows (row by row with its own AVX2/NEON dot product for one token, single-threaded
** BLAS sgemm for a prompt chunk), meeting at the team's spin barriers where a step needs whole
** vectors: four per layer, because the attention block is shared out by KV group (a member's
** q, k, v rows, q/k-norm, RoPE and attention need nothing from the others). Between calls the
** pool's workers spin for about a millisecond, then sleep. In a one-token step every output
** element is computed by one thread in a fixed order: its logits do not depend on the thread
** count.
*/
#include "generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define GEN_AVX2 1
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define GEN_NEON 1
#endif

#include "../ops/ops.h"
#include "../util/memory.h"
#include "../util/blas.h"
#include "../util/parallel.h"

enum { GEN_DEFAULT_CHUNK = 64, GEN_MAX_THREADS = 256 };

/* ------------------------------------------------------------------ shares */

/* [begin, end) of member `tid`'s share of n items, in units of `align` items. */
static void share(int n, int members, int tid, int align, int *begin, int *end) {
    int units = (n + align - 1) / align;
    long long ub = (long long)units * tid / members, ue = (long long)units * (tid + 1) / members;
    *begin = (int)(ub * align < n ? ub * align : n);
    *end = (int)(ue * align < n ? ue * align : n);
}

/* ------------------------------------------------------------------ the generator */

struct Generator {
    ParamLayout layout;
    ParamViews w;
    int C, F, L, H, KV, D, V, QD, KD;
    int max_seq, max_chunk, pos;
    float *arena;
    float *key_cache;   /* [L][S][KV*D] */
    float *value_cache; /* [L][S][KV*D] */
    float *rope_cos;    /* [S][D/2] as ops_rope_table: the same values the backend uses */
    float *rope_sin;
    float *x;           /* [Tc][C] residual stream of the chunk */
    float *xn;          /* [n][Tc][C] normalized input: every member normalizes for itself */
    float *q;           /* [Tc][H*D] */
    float *att;         /* [Tc][H*D] attention output */
    float *h1;          /* [Tc][F] gate, then silu(gate) * up in place */
    float *h3;          /* [Tc][F] up */
    float *scores;      /* [n][S] attention probabilities, per member */
    float *logits;      /* [V] after the last fed token */
    /* the chunk being computed */
    int T;
    float *logits_all;  /* [T][V] or NULL */
    int threads;        /* team members asked for (the scratch is sized for them) */
};

/* ------------------------------------------------------------------ kernels */

#if GEN_AVX2
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* x . y over n floats, with four independent vector sums (a single sequential stream per
** call: on the machines measured, interleaving several rows slowed the prefetchers down). */
static float dot(const float *x, const float *y, int n) {
    int j = 0;
    float s = 0;
#if GEN_AVX2
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps(), c = _mm256_setzero_ps(), d = _mm256_setzero_ps();
    for (; j + 32 <= n; j += 32) {
        a = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j), a);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(x + j + 8), _mm256_loadu_ps(y + j + 8), b);
        c = _mm256_fmadd_ps(_mm256_loadu_ps(x + j + 16), _mm256_loadu_ps(y + j + 16), c);
        d = _mm256_fmadd_ps(_mm256_loadu_ps(x + j + 24), _mm256_loadu_ps(y + j + 24), d);
    }
    for (; j + 8 <= n; j += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j), a);
    s = hsum8(_mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
#elif GEN_NEON
    float32x4_t a = vdupq_n_f32(0), b = vdupq_n_f32(0), c = vdupq_n_f32(0), d = vdupq_n_f32(0);
    for (; j + 16 <= n; j += 16) {
        a = vfmaq_f32(a, vld1q_f32(x + j), vld1q_f32(y + j));
        b = vfmaq_f32(b, vld1q_f32(x + j + 4), vld1q_f32(y + j + 4));
        c = vfmaq_f32(c, vld1q_f32(x + j + 8), vld1q_f32(y + j + 8));
        d = vfmaq_f32(d, vld1q_f32(x + j + 12), vld1q_f32(y + j + 12));
    }
    for (; j + 4 <= n; j += 4) a = vfmaq_f32(a, vld1q_f32(x + j), vld1q_f32(y + j));
    s = vaddvq_f32(vaddq_f32(vaddq_f32(a, b), vaddq_f32(c, d)));
#else
    float acc[8] = {0};
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) acc[k] += x[j + k] * y[j + k];
    for (int k = 0; k < 8; k++) s += acc[k];
#endif
    for (; j < n; j++) s += x[j] * y[j];
    return s;
}

/* y[r] (+)= W[r] . x for rows r0..r1-1:  W [rows][n] @ x [n] -> y. Row after row, so each
** thread streams one contiguous block of the weights. */
static void matvec_rows(float *y, const float *W, const float *x, int r0, int r1, int n, int accumulate) {
    for (int r = r0; r < r1; r++) {
        float s = dot(W + (size_t)r * n, x, n);
        y[r] = accumulate ? y[r] + s : s;
    }
}

/* Rows r0..r1-1 of a linear layer for T tokens, token-major:
**   Y[t][r] (+)= sum_i W[r][i] X[t][i]    W [O][In], X [T][ldx], Y [T][ldy].
** One token: the vector kernel. More: single-threaded BLAS on this member's rows. */
static void linear_rows(float *Y, int ldy, const float *W, const float *X, int ldx, int T, int In, int r0, int r1,
                        int accumulate) {
    if (r0 >= r1) return;
    if (T == 1) {
        matvec_rows(Y, W, X, r0, r1, In, accumulate);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, r1 - r0, In, 1.0f, X, ldx, W + (size_t)r0 * In, In,
                accumulate ? 1.0f : 0.0f, Y + r0, ldy);
}

/* One query head at absolute position p attending to cache positions 0..p:
**   out [D] = sum_j softmax_j(q . k_j / sqrt(D)) v_j,  k_j, v_j = rows of KV head g. */
static void attend(float *out, const float *q, const float *kc, const float *vc, int KD, int D, int g, int p,
                   float *scores) {
    float scale = 1.0f / sqrtf((float)D);
    const float *k = kc + (size_t)g * D, *v = vc + (size_t)g * D;
    float mx = -INFINITY;
    for (int j = 0; j <= p; j++) {
        scores[j] = scale * dot(q, k + (size_t)j * KD, D);
        mx = scores[j] > mx ? scores[j] : mx;
    }
    float sum = 0;
    for (int j = 0; j <= p; j++) {
        scores[j] = expf(scores[j] - mx);
        sum += scores[j];
    }
    float inv = 1 / sum;
    for (int j = 0; j <= p; j++) scores[j] *= inv;
    memset(out, 0, (size_t)D * sizeof(float));
    for (int j = 0; j <= p; j++) {
        const float *vj = v + (size_t)j * KD;
        float a = scores[j];
        for (int d = 0; d < D; d++) out[d] += a * vj[d];
    }
}

/* ------------------------------------------------------------------ the forward pass */

/* Member tid's part (of n) of the forward pass over the chunk g->T tokens at g->pos. g->x holds
** the embeddings. Ends at a barrier, so when member 0 returns the chunk is done. */
static void forward_chunk(void *ctx, int tid, int n) {
    Generator *g = ctx;
    const ParamViews *w = &g->w;
    int T = g->T, pos0 = g->pos;
    int C = g->C, F = g->F, H = g->H, KV = g->KV, D = g->D, QD = g->QD, KD = g->KD, V = g->V;
    const ModelConfig *cfg = &g->layout.cfg;
    float eps = cfg->norm_eps;
    float *xn = g->xn + (size_t)tid * g->max_chunk * C;
    float *scores = g->scores + (size_t)tid * g->max_seq;
    float rstd;
    /* Attention is split by KV group: a member computes the q rows of its groups' query heads
    ** and the k, v rows of its groups, and then everything up to the attention output needs
    ** nothing from other members (earlier positions are in the cache already). */
    int g0, g1, group = H / KV, c0, c1, f0, f1;
    share(KV, n, tid, 1, &g0, &g1);
    share(C, n, tid, 16, &c0, &c1); /* 64-byte units: no cache line written by two members */
    share(F, n, tid, 16, &f0, &f1);
    int h0 = g0 * group, h1 = g1 * group;
    for (int l = 0; l < g->L; l++) {
        float *kc = g->key_cache + (size_t)l * g->max_seq * KD, *vc = g->value_cache + (size_t)l * g->max_seq * KD;
        /* attention: q, k, v of this member's heads; k and v straight into the cache */
        for (int t = 0; t < T; t++)
            ops_rmsnorm_forward(xn + (size_t)t * C, &rstd, g->x + (size_t)t * C, w->rms_att + (size_t)l * C, C, 1, eps);
        linear_rows(g->q, QD, w->wq + (size_t)l * QD * C, xn, C, T, C, h0 * D, h1 * D, 0);
        linear_rows(kc + (size_t)pos0 * KD, KD, w->wk + (size_t)l * KD * C, xn, C, T, C, g0 * D, g1 * D, 0);
        linear_rows(vc + (size_t)pos0 * KD, KD, w->wv + (size_t)l * KD * C, xn, C, T, C, g0 * D, g1 * D, 0);
        for (int t = 0; t < T; t++) {
            int p = pos0 + t;
            const float *cs = g->rope_cos + (size_t)p * (D / 2), *sn = g->rope_sin + (size_t)p * (D / 2);
            float *qt = g->q + (size_t)t * QD, *kt = kc + (size_t)p * KD;
            for (int h = h0; h < h1; h++) { /* (qwen3) q norm, then rope */
                if (cfg->qk_norm)
                    ops_rmsnorm_forward(qt + h * D, &rstd, qt + h * D, w->q_norm + (size_t)l * D, D, 1, eps);
                ops_rope_forward(qt + h * D, cs, sn, 1, D, 1, cfg->rope_style);
            }
            for (int h = g0; h < g1; h++) {
                if (cfg->qk_norm)
                    ops_rmsnorm_forward(kt + h * D, &rstd, kt + h * D, w->k_norm + (size_t)l * D, D, 1, eps);
                ops_rope_forward(kt + h * D, cs, sn, 1, D, 1, cfg->rope_style);
            }
        }
        for (int t = 0; t < T; t++)
            for (int h = h0; h < h1; h++)
                attend(g->att + (size_t)t * QD + (size_t)h * D, g->q + (size_t)t * QD + (size_t)h * D, kc, vc, KD, D,
                       h / group, pos0 + t, scores);
        parallel_team_barrier();
        /* x += wo att */
        linear_rows(g->x, C, w->wo + (size_t)l * C * QD, g->att, QD, T, QD, c0, c1, 1);
        parallel_team_barrier();
        /* feed-forward: this member's rows of the gate and up, SwiGLU on them, then x += w2 g */
        for (int t = 0; t < T; t++)
            ops_rmsnorm_forward(xn + (size_t)t * C, &rstd, g->x + (size_t)t * C, w->rms_ffn + (size_t)l * C, C, 1, eps);
        linear_rows(g->h1, F, w->w1 + (size_t)l * F * C, xn, C, T, C, f0, f1, 0);
        linear_rows(g->h3, F, w->w3 + (size_t)l * F * C, xn, C, T, C, f0, f1, 0);
        for (int t = 0; t < T && f0 < f1; t++)
            ops_swiglu_forward(g->h1 + (size_t)t * F + f0, g->h1 + (size_t)t * F + f0, g->h3 + (size_t)t * F + f0,
                               (size_t)(f1 - f0));
        parallel_team_barrier();
        linear_rows(g->x, C, w->w2 + (size_t)l * C * F, g->h1, F, T, F, c0, c1, 1);
        parallel_team_barrier();
    }
    /* classifier: every position when asked for, else the last one */
    int t_first = g->logits_all ? 0 : T - 1;
    for (int t = t_first; t < T; t++)
        ops_rmsnorm_forward(xn + (size_t)t * C, &rstd, g->x + (size_t)t * C, w->rms_final, C, 1, eps);
    int v0, v1;
    share(V, n, tid, 16, &v0, &v1);
    linear_rows(g->logits_all ? g->logits_all : g->logits, V, w->wcls, xn + (size_t)t_first * C, C, T - t_first, C,
                v0, v1, 0);
    parallel_team_barrier();
}

/* ------------------------------------------------------------------ create, feed */

static int resolve_options(const ModelConfig *cfg, const GenOptions *opt, int *max_seq, int *max_chunk,
                           int *threads, Err *err) {
    *max_seq = opt && opt->max_seq > 0 ? opt->max_seq : cfg->max_seq_len;
    if (opt && opt->max_seq < 0) return err_set(err, "generator: max_seq: expected >= 0, found %d", opt->max_seq);
    if (*max_seq > cfg->max_seq_len)
        return err_set(err, "generator: max_seq: expected at most the model's max_seq_len %d, found %d",
                       cfg->max_seq_len, *max_seq);
    *max_chunk = opt && opt->max_chunk > 0 ? opt->max_chunk : GEN_DEFAULT_CHUNK;
    if (*max_chunk > *max_seq) *max_chunk = *max_seq;
    *threads = opt && opt->threads > 0 ? opt->threads : parallel_threads();
    if (*threads > GEN_MAX_THREADS) *threads = GEN_MAX_THREADS;
    return 0;
}

/* Carves the arena (base == NULL: only counts). Returns floats used. */
static size_t carve(Generator *g, float *base, int threads) {
    size_t S = (size_t)g->max_seq, Tc = (size_t)g->max_chunk, used = 0;
#define TAKE(field, count)                                                                         \
    do {                                                                                           \
        size_t n_ = (count);                                                                       \
        if (base) field = base + used;                                                             \
        used += (n_ + 15) & ~(size_t)15; /* 64-byte aligned buffers */                             \
    } while (0)
    TAKE(g->key_cache, (size_t)g->L * S * g->KD);
    TAKE(g->value_cache, (size_t)g->L * S * g->KD);
    TAKE(g->rope_cos, S * (size_t)(g->D / 2));
    TAKE(g->rope_sin, S * (size_t)(g->D / 2));
    TAKE(g->x, Tc * g->C);
    TAKE(g->xn, (size_t)threads * Tc * g->C);
    TAKE(g->q, Tc * g->QD);
    TAKE(g->att, Tc * g->QD);
    TAKE(g->h1, Tc * g->F);
    TAKE(g->h3, Tc * g->F);
    TAKE(g->scores, (size_t)threads * S);
    TAKE(g->logits, (size_t)g->V);
#undef TAKE
    return used;
}

static void set_shapes(Generator *g, const ModelConfig *cfg) {
    g->C = cfg->dim;
    g->F = cfg->hidden_dim;
    g->L = cfg->n_layers;
    g->H = cfg->n_heads;
    g->KV = cfg->n_kv_heads;
    g->D = cfg->head_dim;
    g->V = cfg->vocab_size;
    g->QD = g->H * g->D;
    g->KD = g->KV * g->D;
}

double gen_bytes(const ModelConfig *cfg, const GenOptions *opt) {
    Generator probe;
    memset(&probe, 0, sizeof probe);
    int threads = 1;
    if (resolve_options(cfg, opt, &probe.max_seq, &probe.max_chunk, &threads, NULL) != 0) return 0;
    set_shapes(&probe, cfg);
    return 4.0 * (double)carve(&probe, NULL, threads);
}

/* The arena is read in full at every step: huge pages where the system has them. */
static float *arena_alloc(size_t bytes) { return mem_alloc_huge(bytes); }

int gen_create(Generator **out, const ParamLayout *layout, const float *params, const GenOptions *opt, Err *err) {
    *out = NULL;
    const ModelConfig *cfg = &layout->cfg;
    if (config_validate(cfg, "generator", err) != 0) return -1;
    Generator *g = err_calloc(1, sizeof *g, "generator", err);
    if (!g) return -1;
    int threads = 1;
    if (resolve_options(cfg, opt, &g->max_seq, &g->max_chunk, &threads, err) != 0) {
        free(g);
        return -1;
    }
    g->layout = *layout;
    params_views(&g->layout, (float *)params, &g->w);
    set_shapes(g, cfg);
    size_t floats = carve(g, NULL, threads);
    g->arena = arena_alloc(floats * sizeof(float));
    if (!g->arena) {
        err_set(err, "out of memory for the generator's KV cache and activations");
        err_wrap(err, "generating with a context of %d positions needs %.1f MiB (lower --max-seq)", g->max_seq,
                 (double)floats * 4 / 1048576.0);
        free(g);
        return -1;
    }
    carve(g, g->arena, threads);
    memset(g->arena, 0, floats * sizeof(float)); /* touch it now, not in the first steps */
    ops_rope_table(g->rope_cos, g->rope_sin, g->max_seq, g->D, 0, cfg->rope_theta);

    g->threads = threads;
    *out = g;
    return 0;
}

void gen_free(Generator *g) {
    if (!g) return;
    free(g->arena);
    free(g);
}

int gen_feed(Generator *g, const int32_t *tokens, int n, float *logits_all, Err *err) {
    if (n < 1) return err_set(err, "generator: expected at least one token to feed, found %d", n);
    if (n > g->max_seq - g->pos)
        return err_set(err, "context full: %d positions held, %d more do not fit in the context of %d", g->pos, n,
                       g->max_seq);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= g->V)
            return err_set(err, "token %d: id %d outside the model's vocabulary [0, %d)", i, tokens[i], g->V);
    for (int done = 0; done < n;) {
        int T = n - done < g->max_chunk ? n - done : g->max_chunk;
        for (int t = 0; t < T; t++)
            memcpy(g->x + (size_t)t * g->C, g->w.tok_emb + (size_t)tokens[done + t] * g->C,
                   (size_t)g->C * sizeof(float));
        g->T = T;
        g->logits_all = logits_all ? logits_all + (size_t)done * g->V : NULL;
        parallel_team(g->threads, forward_chunk, g);
        if (logits_all)
            memcpy(g->logits, logits_all + (size_t)(done + T - 1) * g->V, (size_t)g->V * sizeof(float));
        g->pos += T;
        done += T;
    }
    g->logits_all = NULL;
    return 0;
}

const float *gen_logits(const Generator *g) { return g->logits; }
int gen_pos(const Generator *g) { return g->pos; }
int gen_max_seq(const Generator *g) { return g->max_seq; }
int gen_threads(const Generator *g) { return g->threads < parallel_threads() ? g->threads : parallel_threads(); }

void gen_rewind(Generator *g, int pos) {
    if (pos < 0) pos = 0;
    if (pos < g->pos) g->pos = pos;
}
