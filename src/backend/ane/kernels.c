/*
** kernels.c — the MIL kernels of a training step with dynamic weights (see kernels.h).
**
** ===== Overview =====================================================================
**
** Shapes: C dim, F hidden, H query heads, KV kv heads, D head dim, Q = H*D, K = KV*D,
** S padded sequence (multiple of 32), r = H/KV. All I/O fp16, [1, rows, 1, cols].
**
**  kernel      input (one surface per layer)           output [1, rows, 1, S]
**  ----------  --------------------------------------  -----------------------------------------
**  layer_fwd   [1, in_C, 1, in_S]: x, rstd1 + weights   x_next C | att Q | xh2 C | rstd2 1 |
**              (wq wk wv wo w1 w3 w2, rms_att, rms_ffn,  h1 F | h3 F | q Q | k K | v K
**              q/k_norm)                                 (+ rstd_q H | rstd_k KV for Qwen3)
**  layer_bwd   the same surface: dy, xh2, rstd2, h1,    dxn2 C | dh1 F | dh3 F | dq Q | dk K |
**              h3, q, k, v (rstd_q, rstd_k) + weights   dv K | dxn1 C
**
**  Per evaluation (one sequence, S = 256):
**    model        input surface (weights)   fwd out    bwd out    fwd FLOPs  bwd FLOPs
**    stories15m   [288 x 6560]    3.8 (2.0) MB  1.7 MB   1.5 MB     0.59 G     0.70 G
**    stories110m  [768 x 12320]  18.9 (14.2) MB 4.5 MB   4.1 MB     3.83 G     4.13 G
**    qwen3-0.6b   [2048 x 9376]  38.4 (31.5) MB 7.4 MB   6.3 MB     8.59 G     9.40 G
**  (FLOPs: 2S(2QC + 2KC + 3FC) for the matmuls, plus 4 S^2 D H forward, 10 S^2 D H backward.)
**  `anetrain ane-plan` prints this for any model, sequence length and variant.
**
**  layer_fwd computes norm1 (x * rstd1 * w; rstd1 comes from the CPU, which has x in fp32
**  anyway), q/k/v, q/k-norm (Qwen3), RoPE (the model's convention), causal attention with the
**  additive mask and softmax (query head h uses KV head h / r), wo, the residual add, norm2
**  (its rstd computed here, pre-scaled by rstd1 so that no square overflows or underflows
**  fp16), w1/w3, SwiGLU, w2 and the second residual add.
**  layer_bwd computes w2^T dy, the SwiGLU backward, w1^T dh1 + w3^T dh3 = dxn2, norm2's
**  backward and the residual (dx_mid), wo^T dx_mid, attention backward (recomputing the
**  probabilities from q and k: cheaper than moving [H][S][S] across), the GQA reduction of
**  dk/dv, RoPE backward, q/k-norm backward (Qwen3), and wq^T dq + wk^T dk + wv^T dv = dxn1.
**
**  Dynamic weights: every weight lives in the input surface as a flattened [out][in] matrix
**  folded into the C rows (kernels.h), so staging is a straight fp32 -> fp16 copy of the
**  parameter buffer with no transpose, and the matmuls need none either: y = W x is
**  matmul(W [1,1,out,in], x [1,1,in,S]) and dx = W^T dy is the same call with transpose_x.
**  Channel-first activations are the right operand as they are. Kernels are compiled once per
**  model shape (2 compiles in all) and never again when the weights change.
**
**  What stays on the CPU, and why:
**   - embedding, final norm, classifier, cross-entropy (vocab 32000/151936: a [V][C] weight in
**     the input and a [V][S] output would dominate the bytes moved, and conv with 32000 input
**     channels is rejected by the device; the CPU does them with three BLAS calls);
**   - rstd1 (the CPU has x in fp32; one pass), norm1/norm2 backward and the residual gradient
**     stream (fp32, from dxn1/dxn2 which the CPU needs anyway for the norm weight gradients),
**     the q/k-norm backward for Qwen3 (likewise), g = silu(h1) h3 for dW2 (cheaper to recompute
**     than to move F rows);
**   - every weight gradient (BLAS, in a worker thread overlapped with the device) and AdamW.
**
**  Per layer and sequence: 2 dispatches (the seed, maderix/ANE: 10 for MHA and GQA alike,
**  docs/ane-facts.md §4.2).
**  Activation bytes across the boundary, in rows of S fp16 values (stories110m, C=Q=K=768,
**  F=2048): fwd in x + rstd1 769, out 8705; bwd in dy + taps 7937, out 7936: 25347 rows =
**  13.0 MB per layer at S=256 (156 MB per step for 12 layers), against the seed's 46848 rows =
**  24.0 MB (288 MB). Weights are staged once per step into one surface per layer that both
**  kernels read: 14.2 MB per layer (170 MB per step), the seed stages them into two kernels'
**  surfaces (340 MB). Measured by bench/bench_ane.c, which prints these per model.
**
** ===== Layout: kernels that fit the device's limits (docs/ane-facts.md §9) ================
**  The real compiler refuses an input wider than 16384 (measured) and an axis above 65536
**  (measured); the strict limits, our default, apply 16384 to every axis of every tensor, want
**  innermost-axis slices to begin at multiples of 32 and fp16 literals without exponents (the
**  conventions every working reference follows). Every kernel here passes them for every preset
**  at S = 256, 512 and 1024, full, LoRA and int8-base (test_ane_limits); the plan refuses, before
**  any compile, the shapes that cannot (ane_plan_make's messages).
**   - Regions start at columns that are multiples of 32, and each is whole rows (kernels.h):
**     a fold of its values into d rows, d the largest divisor of n up to the surface's rows;
**     activations [c][S] with c above the rows in column blocks of in_C channels when narrower
**     (stories110m's h1, h3: 3 blocks of S, 768 columns instead of 683 that needed a flatten);
**     small regions (norm weights, rstd rows, row scales, LoRA A and B) stacked in 32-column
**     shelves. Reading a region is one slice per block (+ a channel concat) and one reshape:
**     the old partial-row regions were flattened to [1, 1, 1, C width] (524544 for stories110m's
**     h1), which no device axis allows.
**   - The surface has C rows when that fits 16384 columns, else 2C, 4C, ... (the same fold into
**     more rows: [C][S] in 2C rows is S/2 wide and reads back with the same reshape). Qwen3-0.6B
**     at S = 256 needs 18720 columns of 1024 rows: it gets 9376 of 2048. Chosen over splitting a
**     layer into attention and FFN kernels (the other option) because it costs nothing in
**     the two measures that matter on the device: evaluations per step stay 2 per layer and
**     sequence (a split needs 4, and x_mid and its gradient cross the boundary once more each
**     way: for Qwen3-0.6B at S = 256, 56 more evaluations per sequence, at 0.07-0.23 ms each on
**     real chips (docs/ane-facts.md §8), and 56 MB more across the boundary), and the bytes staged are
**     the same values (only the padding to 32 columns is new: +1.6% of surface read by the
**     device for stories110m, +0.2% for Qwen3). Plausibility: a surface of 2048 x 9376 is inside
**     every measured limit, and the seed's own Qwen3 kernels read inputs of 8192 and 12288
**     channels (docs/ane-facts.md §4.2, sdpaBwd1/2). Still 2 compiles per model.
**   - Half RoPE's partner is two channel rolls (rope), not a reshape of each head to one row of
**     D S values (32768 for Qwen3 at S = 256). Interleaved RoPE keeps its [NH D / 2, 2 S] swap.
**   - fp16 constants are exact hex floats (mil_write.c).
**  A model the strict limits cannot fit at its sequence length (S above 16384, or r S, or the
**  output taps above 16384 rows, or a surface that fits no 16384 x 16384) is refused by
**  ane_plan_make with the dimension that does not fit; `--ane-limits probed` does not widen the
**  plans, it only checks fewer rules (for programs written elsewhere).
**
** ===== LoRA (a plan made by ane_plan_layer_lora with rank R > 0) ========================
**  Fine-tuning over a frozen base compiles a variant of both kernels (still 2 compiles; a plan
**  with R = 0 gives the plain kernels' MIL text unchanged). Each targeted module m (q k v o gate
**  up down, over wq wk wv wo w1 w3 w2) gets two more dynamic weight regions in the same surface,
**  after the base's: s A_m [R][in] (the LoRA scale folded in on the CPU in fp32, so the kernels
**  hold no scale constant and nothing of the scale is rounded to fp16 on its own) and B_m
**  [out][R]. The base regions are staged once (ane.c); these are restaged every step.
**    layer_fwd   y_m = W_m x_m + B_m u_m,  u_m = (s A_m) x_m [R][S]   (u_m is a tap: dB = dy u^T)
**    layer_bwd   dx_m = W_m^T dy_m + (s A_m)^T v_m,  v_m = B_m^T dy_m [R][S]   (tap: dA = s v x^T)
**  x_m: xn1 for q/k/v, att for o, xn2 for gate/up, g for down; dy_m the gradient of the module's
**  output (for q/k of Qwen3 the gradient before the head norm). The taps add R rows per module to
**  each output, after the plain taps. Every matmul is [1,1,R,in] x [1,1,in,S] or its transpose
**  (or [out,R] x [R,S]): no dimension the checker constrains, so any R >= 1 compiles unpadded
**  (tested for 1, 4, 8, 16). stories110m, R 8, all seven modules: 154 more input columns of 768
**  rows (+1.3%, 0.24 MB per layer), 56 more rows out of each kernel. Weight gradients of the base
**  are not computed at all; dA and dB are BLAS on the CPU from these taps (ane.c).
**  LoRA dropout (ane_plan_lora_dropout): one more activation region per targeted module after
**  all the others, MASK_m [in][S] of 0/1 (the keep factor 1/(1-p) is in s A_m, staged by ane.c),
**  and x_m becomes x_m * MASK_m before s A_m in layer_fwd, (s A_m)^T v_m becomes
**  MASK_m * ((s A_m)^T v_m) in layer_bwd. A plan without it gives the LoRA text unchanged.
**
** ===== int8 base (a plan made by ane_plan_layer_frozen with int8_base 1) ================
**  A frozen base whose seven matrices are per-row int8 (model/quant.h: W ~ s_o q_o, q in
**  [-127, 127], s an fp16 value) compiles a variant of both kernels, still with dynamic weights
**  and still 2 compiles (int8_base 0 gives the plain or LoRA text unchanged). The matrix regions
**  hold q * 2^-7 (ANE_INT8_STEP) instead of W, and seven more regions AR_SCALE + m hold the row
**  scales s_m * 2^7 [out] (both exact in fp16, so the base costs no rounding of its own: the fp16
**  weights of the plain kernels are round(W), these are exactly q and s). Every product applies
**  the scale on its output rows, the same [1,out,1,S] * [1,out,1,1] broadcast as the norm weights:
**    layer_fwd   y_m = s_m * (Q_m x_m)           (then + B_m u_m with LoRA)
**    layer_bwd   dx_m = Q_m^T (s_m * dy_m)       (then + (s A_m)^T v_m with LoRA)
**  Why 2^-7: Q x is y / s, and s is max|W_row| / 127, so y / s can be 1000 times y and overflow
**  fp16 where y does not; (q 2^-7) x is y / (128 s), about y / max|W_row|. Likewise s dy would be
**  ~1e-3 dy, into fp16's subnormals for small gradients; (128 s) dy is not (test_ane_int8_base:
**  with activations of hundreds in the FFN, the integers give NaN and q 2^-7 matches). The cost is one
**  elementwise multiply of [out][S] per matrix and direction (7 S (Q + 2K + 2C + 2F) in all, not
**  counted as FLOPs) and the scale columns: 11 for stories110m, 12 for qwen3-0.6b, which after
**  the padding of in_S to 32 add 0 or 32 columns (stories110m: 12128 -> 12160 without LoRA, 0
**  more with r 8 on all seven). The LoRA taps are those of the adapter alone, so the
**  dA/dB jobs and the taps are unchanged. The forward-only int8 kernels (bench/ane_int8/kernels_int8.c) instead
**  bake the weights in as constexpr_affine_dequantize constants, 4 compiles per layer.
**
** ===== Numerics ========================================================================
**  Norms: squares are formed of values already scaled to about 1 (x * rstd1 / sqrt(C) for
**  norm2, q / sqrt(D) for q/k-norm), so fp16 neither overflows (|x| > 256) nor underflows.
**  Attention: q is scaled by 1/sqrt(D) before QK^T; the mask is ANE_MASK_NEG; the softmax
**  backward is P * (dP - rowsum(P dP)). Gradients arrive scaled by the loss scale and are
**  never rescaled here, so an fp16 overflow shows as inf/NaN in the gradients.
*/
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/params.h"
#include "half.h"
#include "mil_write.h"

/* ------------------------------------------------------------------ the plan */

/* Records region id's values: a logical [a][b] matrix, row-major (a or b 0: absent). Where they
** go is decided for all regions at once (plan_layout). */
static void set_region(AneLayerPlan *p, int id, long long a, long long b) {
    AneRegion *r = &p->reg[id];
    memset(r, 0, sizeof *r);
    if (a <= 0 || b <= 0) return;
    r->a = (int)a;
    r->b = (int)b;
    r->n = a * b;
}

static void add_tap(AneTap *taps, int id, int rows, int *ch) {
    taps[id].off = *ch;
    taps[id].rows = rows;
    *ch += rows;
}

int ane_plan_layer(AneLayerPlan *p, const ModelConfig *cfg, int T_max, Err *err) {
    return ane_plan_layer_lora(p, cfg, T_max, 0, 0, err);
}

/* Region AR_WQ + m holds layer matrix m (params.h), module m's base (lora.h). */
_Static_assert((int)AR_W2 - (int)AR_WQ + 1 == (int)LAYER_MATRICES && (int)ANE_LORA_MODULES == (int)LAYER_MATRICES,
               "one matrix region per layer matrix, in its order");

void ane_lora_module_shape(const AneLayerPlan *p, int m, int *out, int *in) {
    *out = p->reg[AR_WQ + m].a;
    *in = p->reg[AR_WQ + m].b;
}

const char *ane_region_name(int id) {
    static const char *const base[AR_WQ] = {"x",      "rstd1",  "dy",      "xh2",     "rstd2",  "h1",
                                            "h3",     "q",      "k",       "v",       "rstd_q", "rstd_k",
                                            "rms_att", "rms_ffn", "q_norm", "k_norm"};
    static const char *const per_module[4][ANE_LORA_MODULES] = {
        {"lora_A.q", "lora_A.k", "lora_A.v", "lora_A.o", "lora_A.gate", "lora_A.up", "lora_A.down"},
        {"lora_B.q", "lora_B.k", "lora_B.v", "lora_B.o", "lora_B.gate", "lora_B.up", "lora_B.down"},
        {"scale.q", "scale.k", "scale.v", "scale.o", "scale.gate", "scale.up", "scale.down"},
        {"mask.q", "mask.k", "mask.v", "mask.o", "mask.gate", "mask.up", "mask.down"}};
    if (id < 0 || id >= AR_COUNT) return "?";
    if (id < AR_WQ) return base[id];
    if (id < AR_LORA_A) return layer_matrices[id - AR_WQ].name;
    return per_module[(id - AR_LORA_A) / ANE_LORA_MODULES][(id - AR_LORA_A) % ANE_LORA_MODULES];
}

int ane_plan_layer_lora(AneLayerPlan *p, const ModelConfig *cfg, int T_max, int R, unsigned targets, Err *err) {
    return ane_plan_layer_frozen(p, cfg, T_max, R, targets, 0, err);
}

int ane_plan_layer_frozen(AneLayerPlan *p, const ModelConfig *cfg, int T_max, int R, unsigned targets, int int8_base,
                          Err *err) {
    AnePlanSpec spec = {T_max, R, targets, 0, int8_base, 0};
    return ane_plan_make(p, cfg, &spec, err);
}

/* ------------------------------------------------------------------ layout */

/* The order of the regions from the first column on: the activations of layer_fwd and of
** layer_bwd, the base's weights, the int8 row scales, each adapted module's A and B, the dropout
** masks (so a plan without scales, adapters or masks keeps the same offsets for the rest). */
static int region_order(int *order) {
    static const int base[] = {AR_X,     AR_RSTD1, AR_DY,    AR_XH2,     AR_RSTD2, AR_H1,    AR_H3,    AR_Q,
                               AR_K,     AR_V,     AR_RSTDQ, AR_RSTDK,   AR_RMS_ATT, AR_RMS_FFN, AR_QNORM, AR_KNORM,
                               AR_WQ,    AR_WK,    AR_WV,    AR_WO,      AR_W1,    AR_W3,    AR_W2};
    int n = 0;
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) order[n++] = base[i];
    for (int m = 0; m < ANE_LORA_MODULES; m++) order[n++] = AR_SCALE + m;
    for (int m = 0; m < ANE_LORA_MODULES; m++) {
        order[n++] = AR_LORA_A + m;
        order[n++] = AR_LORA_B + m;
    }
    for (int m = 0; m < ANE_LORA_MODULES; m++) order[n++] = AR_LORA_MASK + m;
    return n;
}

/* The largest divisor of n that is at most cap (>= 1). */
static long long largest_divisor(long long n, long long cap) {
    for (long long d = cap < n ? cap : n; d > 1; d--)
        if (n % d == 0) return d;
    return 1;
}

static long long align32(long long x) { return (x + 31) / 32 * 32; }

enum {
    SHELF = 32,     /* the width of a shelf of small regions stacked in rows */
    MAX_BLOCKS = 16 /* column blocks per region (slices + one concat) */
};

/* Places every present region in a surface of in_C rows and returns the columns used, or -1 when
** one region cannot be placed at all. Each region is, whichever is narrowest:
**   a fold: its n values row-major in d rows of n / d, d the largest divisor of n up to in_C (for
**     an activation [C][S] with in_C = C: C rows of S; with in_C = 2C: 2C rows of S/2);
**   column blocks (activations [c][S] with c > in_C): blocks of in_C channels, S columns each,
**     side by side, the last with c mod in_C rows (h1 of stories110m: 768 + 768 + 512 rows of S,
**     768 columns against 1024 for the fold of 2048 x 256 values into 512 rows);
**   a shelf row range (small regions whose fold would be under 32 columns wide, n a multiple of
**     32): n / 32 rows of 32, stacked with other small regions in one 32-column shelf, so the
**     alignment of every region's first column to 32 costs one shelf, not 31 columns each.
** Every region then starts at a column that is a multiple of 32 and is read back with slices
** whose innermost begin is that column (plus multiples of S), never a flatten. */
static long long layout(AneLayerPlan *p, int in_C) {
    int order[AR_COUNT], n_order = region_order(order);
    long long col = 0, shelf_off = -1, shelf_used = 0;
    for (int k = 0; k < n_order; k++) {
        AneRegion *r = &p->reg[order[k]];
        r->row = 0;
        if (!r->n) { /* absent: no columns, where the next region starts */
            r->off = (int)col;
            r->rows = r->width = r->blocks = 0;
            continue;
        }
        long long d = largest_divisor(r->n, in_C), w = r->n / d;
        long long nb = r->b % 32 == 0 && r->a > in_C ? (r->a + in_C - 1) / in_C : 0;
        if (w < SHELF && r->n % SHELF == 0 && r->n / SHELF <= in_C) {
            long long rows = r->n / SHELF;
            if (shelf_off < 0 || shelf_used + rows > in_C) {
                shelf_off = col;
                shelf_used = 0;
                col += SHELF;
            }
            r->off = (int)shelf_off;
            r->row = (int)shelf_used;
            r->rows = (int)rows;
            r->width = SHELF;
            r->blocks = 1;
            shelf_used += rows;
        } else if (nb > 1 && nb <= MAX_BLOCKS && nb * r->b < w) {
            r->off = (int)col;
            r->rows = in_C;
            r->width = r->b;
            r->blocks = (int)nb;
            col += align32(nb * r->b);
        } else {
            if (w > ANE_MAX_AXIS) return -1;
            r->off = (int)col;
            r->rows = (int)d;
            r->width = (int)w;
            r->blocks = 1;
            col += align32(w);
        }
        if (col > ANE_MAX_AXIS * 64LL) return -1;
    }
    return col;
}

/* The surface: C rows when they fit in max_width columns, else 2C, 4C, ... up to ANE_MAX_AXIS
** rows (kernels.c, "Layout"). */
static int plan_layout(AneLayerPlan *p, Err *err) {
    for (long long in_C = p->C; in_C <= ANE_MAX_AXIS; in_C *= 2) {
        long long width = layout(p, (int)in_C);
        if (width > 0 && width <= p->max_width) {
            p->in_C = (int)in_C;
            p->in_S = (int)width;
            return 0;
        }
    }
    long long total = 0;
    for (int id = 0; id < AR_COUNT; id++) total += p->reg[id].n;
    return err_set(err,
                   "ane plan: the layer's inputs (%lld fp16 values at S = %d) fit no input surface of at most %d rows "
                   "and %d columns (the device's input is at most 16384 wide, docs/ane-facts.md §9); a shorter "
                   "--seq, a lower LoRA rank or fewer LoRA modules would fit",
                   total, p->S, ANE_MAX_AXIS, p->max_width);
}

/* Refuses a shape whose kernels would have an axis above ANE_MAX_AXIS: `what` is found and the
** limit is expected. */
static int axis_fits(long long found, const char *what, Err *err) {
    if (found <= ANE_MAX_AXIS) return 0;
    return err_set(err,
                   "ane plan: %s is %lld; the kernels need it at most %d (the device limits, docs/ane-facts.md §9)",
                   what, found, ANE_MAX_AXIS);
}

int ane_plan_make(AneLayerPlan *p, const ModelConfig *cfg, const AnePlanSpec *spec, Err *err) {
    memset(p, 0, sizeof *p);
    int R = spec->lora_rank, T_max = spec->T_max;
    unsigned targets = spec->lora_targets;
    if (R < 0 || (R > 0 && !(targets & ((1u << ANE_LORA_MODULES) - 1))))
        return err_set(err, "ane plan: LoRA rank %d with targets 0x%x (expected rank 0, or rank > 0 and a module)", R,
                       targets);
    if (spec->lora_dropout && R == 0) return err_set(err, "ane plan: LoRA dropout masks need a LoRA rank");
    if (T_max < 1) return err_set(err, "ane plan: sequence length must be positive, found %d", T_max);
    if (cfg->n_kv_heads < 1 || cfg->n_heads % cfg->n_kv_heads)
        return err_set(err, "ane plan: n_heads %d is not a multiple of n_kv_heads %d", cfg->n_heads, cfg->n_kv_heads);
    if (cfg->head_dim % 2) return err_set(err, "ane plan: head_dim must be even, found %d", cfg->head_dim);
    if (spec->max_width < 0 || spec->max_width > ANE_MAX_AXIS)
        return err_set(err, "ane plan: max_width must be in 0..%d, found %d", ANE_MAX_AXIS, spec->max_width);
    p->max_width = spec->max_width ? spec->max_width : ANE_MAX_AXIS;
    p->C = cfg->dim;
    p->F = cfg->hidden_dim;
    p->H = cfg->n_heads;
    p->KV = cfg->n_kv_heads;
    p->D = cfg->head_dim;
    p->Q = p->H * p->D;
    p->K = p->KV * p->D;
    p->T_max = T_max;
    p->S = (T_max + 31) / 32 * 32;
    p->qk_norm = cfg->qk_norm;
    p->rope = cfg->rope_style;
    p->theta = cfg->rope_theta;
    p->eps = cfg->norm_eps;
    long long C = p->C, F = p->F, Q = p->Q, K = p->K, S = p->S, r = p->H / p->KV;
    /* every axis the kernels make: the model's rows (weights [out][in], taps), the scores [S][S],
    ** GQA's r query heads stacked [r S][S], the interleaved RoPE pairs [2 S] */
    if (axis_fits(C, "dim", err) || axis_fits(F, "hidden_dim", err) || axis_fits(Q, "n_heads * head_dim", err) ||
        axis_fits(S, "the padded sequence length S", err) ||
        axis_fits(r * S, "S times the query heads per KV head (GQA's stacked scores)", err) ||
        (p->rope == ROPE_INTERLEAVED && axis_fits(2 * S, "2 S (interleaved RoPE pairs)", err)))
        return -1;
    int qk = p->qk_norm, ch = 0;
    set_region(p, AR_X, C, S);
    set_region(p, AR_RSTD1, 1, S);
    set_region(p, AR_DY, C, S);
    set_region(p, AR_XH2, C, S);
    set_region(p, AR_RSTD2, 1, S);
    set_region(p, AR_H1, F, S);
    set_region(p, AR_H3, F, S);
    set_region(p, AR_Q, Q, S);
    set_region(p, AR_K, K, S);
    set_region(p, AR_V, K, S);
    set_region(p, AR_RSTDQ, qk ? p->H : 0, S);
    set_region(p, AR_RSTDK, qk ? p->KV : 0, S);
    set_region(p, AR_RMS_ATT, 1, C);
    set_region(p, AR_RMS_FFN, 1, C);
    set_region(p, AR_QNORM, qk, p->D);
    set_region(p, AR_KNORM, qk, p->D);
    for (int m = 0; m < LAYER_MATRICES; m++) { /* [out][in] */
        int out, in;
        layer_matrix_shape(cfg, m, &out, &in);
        set_region(p, AR_WQ + m, out, in);
    }
    p->int8_base = spec->int8_base != 0;
    p->lora_rank = R;
    for (int m = 0; m < ANE_LORA_MODULES; m++) {
        int out, in, on = R > 0 && (targets >> m & 1);
        ane_lora_module_shape(p, m, &out, &in);
        set_region(p, AR_SCALE + m, p->int8_base, out); /* row scales: absent without an int8 base */
        set_region(p, AR_LORA_A + m, on ? R : 0, in);
        set_region(p, AR_LORA_B + m, on ? out : 0, R);
        set_region(p, AR_LORA_MASK + m, on && spec->lora_dropout ? in : 0, S);
    }
    add_tap(p->fwd, AF_XNEXT, p->C, &ch);
    add_tap(p->fwd, AF_ATT, p->Q, &ch);
    add_tap(p->fwd, AF_XH2, p->C, &ch);
    add_tap(p->fwd, AF_RSTD2, 1, &ch);
    add_tap(p->fwd, AF_H1, p->F, &ch);
    add_tap(p->fwd, AF_H3, p->F, &ch);
    add_tap(p->fwd, AF_Q, p->Q, &ch);
    add_tap(p->fwd, AF_K, p->K, &ch);
    add_tap(p->fwd, AF_V, p->K, &ch);
    add_tap(p->fwd, AF_RSTDQ, qk ? p->H : 0, &ch);
    add_tap(p->fwd, AF_RSTDK, qk ? p->KV : 0, &ch);
    for (int m = 0; m < ANE_LORA_MODULES; m++) add_tap(p->fwd, AF_LORA_U + m, p->reg[AR_LORA_A + m].n ? R : 0, &ch);
    p->fwd_C = ch;
    ch = 0;
    add_tap(p->bwd, AB_DXN2, p->C, &ch);
    add_tap(p->bwd, AB_DH1, p->F, &ch);
    add_tap(p->bwd, AB_DH3, p->F, &ch);
    add_tap(p->bwd, AB_DQ, p->Q, &ch);
    add_tap(p->bwd, AB_DK, p->K, &ch);
    add_tap(p->bwd, AB_DV, p->K, &ch);
    add_tap(p->bwd, AB_DXN1, p->C, &ch);
    for (int m = 0; m < ANE_LORA_MODULES; m++) add_tap(p->bwd, AB_LORA_V + m, p->reg[AR_LORA_A + m].n ? R : 0, &ch);
    p->bwd_C = ch;
    if (axis_fits(p->fwd_C, "layer_fwd's output rows (the taps; a lower LoRA rank or fewer modules has fewer)", err) ||
        axis_fits(p->bwd_C, "layer_bwd's output rows", err))
        return -1;
    double lin = 2.0 * (double)S * (double)(Q * C + 2 * K * C + C * Q + 3 * F * C);
    for (int m = 0; m < ANE_LORA_MODULES; m++) /* the adapter path: A x then B u (backward: B^T dy, A^T v) */
        lin += 2.0 * (double)S * (double)(p->reg[AR_LORA_A + m].n + p->reg[AR_LORA_B + m].n);
    double att = 2.0 * (double)S * (double)S * (double)p->D * p->H; /* one S x S x D product per head */
    p->fwd_flops = lin + 2 * att;                                   /* QK^T, PV */
    p->bwd_flops = lin + 5 * att;                                   /* QK^T again, dV, dP, dQ, dK */
    return plan_layout(p, err);
}

int ane_plan_lora_dropout(AneLayerPlan *p, Err *err) {
    AneLayerPlan q = *p;
    for (int m = 0; m < ANE_LORA_MODULES; m++) {
        int out, in;
        ane_lora_module_shape(&q, m, &out, &in);
        set_region(&q, AR_LORA_MASK + m, q.reg[AR_LORA_A + m].n ? in : 0, q.S);
    }
    if (plan_layout(&q, err)) return -1;
    *p = q;
    return 0;
}

/* ------------------------------------------------------------------ regions of a surface */

/* The surface index of value i of region r, the first of a run of r->width values in one row
** (the layout divides every region into whole rows). */
static size_t value_at(const AneLayerPlan *p, const AneRegion *r, long long i) {
    long long per = (long long)r->rows * r->width, j = i / per, k = i % per;
    return (size_t)(r->row + k / r->width) * (size_t)p->in_S + (size_t)r->off + (size_t)(j * r->width + k % r->width);
}

void ane_region_put_f32(const AneLayerPlan *p, uint16_t *surface, int id, const float *src) {
    const AneRegion *r = &p->reg[id];
    for (long long i = 0; i < r->n; i += r->width) {
        long long cnt = r->n - i < r->width ? r->n - i : r->width;
        half_from_f32(surface + value_at(p, r, i), src + i, (size_t)cnt);
    }
}

void ane_region_put_f32_scaled(const AneLayerPlan *p, uint16_t *surface, int id, const float *src, float scale) {
    const AneRegion *r = &p->reg[id];
    enum { CHUNK = 256 };
    float buf[CHUNK];
    for (long long i = 0; i < r->n; i += r->width) {
        long long cnt = r->n - i < r->width ? r->n - i : r->width;
        uint16_t *dst = surface + value_at(p, r, i);
        for (long long j = 0; j < cnt; j += CHUNK) {
            int n = cnt - j < CHUNK ? (int)(cnt - j) : CHUNK;
            for (int k = 0; k < n; k++) buf[k] = src[i + j + k] * scale;
            half_from_f32(dst + j, buf, (size_t)n);
        }
    }
}

void ane_region_put_f16(const AneLayerPlan *p, uint16_t *surface, int id, const uint16_t *src) {
    const AneRegion *r = &p->reg[id];
    for (long long i = 0; i < r->n; i += r->width) {
        long long cnt = r->n - i < r->width ? r->n - i : r->width;
        memcpy(surface + value_at(p, r, i), src + i, (size_t)cnt * sizeof *src);
    }
}

void ane_region_put_i8(const AneLayerPlan *p, uint16_t *surface, int id, const int8_t *src) {
    uint16_t lut[256]; /* fp16 bits of q * ANE_INT8_STEP for q = -128..127 (exact) */
    for (int q = -128; q < 128; q++) lut[q + 128] = fp16_from_float((float)q * ANE_INT8_STEP);
    const AneRegion *r = &p->reg[id];
    for (long long i = 0; i < r->n; i += r->width) {
        long long cnt = r->n - i < r->width ? r->n - i : r->width;
        uint16_t *dst = surface + value_at(p, r, i);
        for (long long j = 0; j < cnt; j++) dst[j] = lut[src[i + j] + 128];
    }
}

void ane_region_get_f16(const AneLayerPlan *p, const uint16_t *surface, int id, uint16_t *dst) {
    const AneRegion *r = &p->reg[id];
    for (long long i = 0; i < r->n; i += r->width) {
        long long cnt = r->n - i < r->width ? r->n - i : r->width;
        memcpy(dst + i, surface + value_at(p, r, i), (size_t)cnt * sizeof *dst);
    }
}

void ane_region_zero(const AneLayerPlan *p, uint16_t *surface, int id) {
    const AneRegion *r = &p->reg[id];
    for (long long i = 0; i < r->n; i += r->width) {
        long long cnt = r->n - i < r->width ? r->n - i : r->width;
        memset(surface + value_at(p, r, i), 0, (size_t)cnt * sizeof *surface);
    }
}

/* ------------------------------------------------------------------ building blocks */

/* Region `id` of the input X read as a tensor of shape dims (product = the region's n): one
** slice per block (concatenated on channels when there are several), then one reshape. */
static MilT region(MilW *w, MilT X, const AneLayerPlan *p, int id, int a, int b, int c, int d) {
    const AneRegion *r = &p->reg[id];
    MilT parts[MAX_BLOCKS];
    long long left = r->n, per = (long long)r->rows * r->width;
    for (int j = 0; j < r->blocks; j++) {
        int rows = left >= per ? r->rows : (int)(left / r->width);
        int begin[4] = {0, r->row, 0, r->off + j * r->width}, size[4] = {1, rows, 1, r->width};
        parts[j] = milw_slice(w, X, begin, size);
        left -= (long long)rows * r->width;
    }
    MilT s = r->blocks > 1 ? milw_concat(w, 1, r->blocks, parts) : parts[0];
    return milw_reshape4(w, s, a, b, c, d);
}

/* Causal mask [1, 1, S, S] and RoPE tables [1, 1, D, S] as blob constants: cos, and the sin of
** the partner term signed per pair member. Interleaved: sinv[0] is that table. Half: it is split
** by the member of the pair, sinv[0] on the first half of head_dim's rows (0 on the second) and
** sinv[1] on the second (0 on the first), one blob [1, 1, D, 2 S] sliced at column S (see rope). */
static void tables(MilW *w, const AneLayerPlan *p, MilT *mask, MilT *cosv, MilT sinv[2]) {
    int S = p->S, D = p->D, half = D / 2, halves = p->rope == ROPE_HALF ? 2 : 1;
    float *m = malloc(sizeof(float) * (size_t)S * S), *c = malloc(sizeof(float) * (size_t)D * S),
          *s = calloc((size_t)D * S * halves, sizeof(float));
    if (m && c && s) {
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) m[(size_t)i * S + j] = j <= i ? 0.0f : ANE_MASK_NEG;
        for (int d = 0; d < D; d++) {
            int pair = p->rope == ROPE_INTERLEAVED ? d / 2 : d % half;
            int first = p->rope == ROPE_INTERLEAVED ? d % 2 == 0 : d < half;
            float *srow = s + (size_t)d * S * halves + (halves == 2 && !first ? S : 0);
            for (int t = 0; t < S; t++) {
                double angle = (double)t * pow(p->theta, -2.0 * pair / D);
                c[(size_t)d * S + t] = (float)cos(angle);
                srow[t] = (float)(first ? -sin(angle) : sin(angle));
            }
        }
        int dm[4] = {1, 1, S, S}, dt[4] = {1, 1, D, S}, ds[4] = {1, 1, D, S * halves};
        *mask = milw_blob(w, "mask.bin", 4, dm, m);
        *cosv = milw_blob(w, "rope_cos.bin", 4, dt, c);
        sinv[0] = milw_blob(w, "rope_sin.bin", 4, ds, s);
        sinv[1] = sinv[0];
        if (halves == 2) {
            int b0[4] = {0, 0, 0, 0}, b1[4] = {0, 0, 0, S};
            sinv[1] = milw_slice(w, sinv[0], b1, dt);
            sinv[0] = milw_slice(w, sinv[0], b0, dt);
        }
    } else { /* out of memory: an invalid blob makes milw_finish fail */
        int bad[1] = {0};
        *mask = *cosv = sinv[0] = sinv[1] = milw_blob(w, "oom.bin", 0, bad, NULL);
    }
    free(m);
    free(c);
    free(s);
}

/* Interleaved RoPE: the partner of every channel in its pair, x [1, NH, D, S] -> [1, NH, D, S],
** (2i, 2i+1) -> (2i+1, 2i): a pair's two channels are adjacent rows of S, so one reshape to
** [1, NH D / 2, 1, 2 S] and two slices at columns 0 and S (multiples of 32) swap them. */
static MilT rope_partner(MilW *w, const AneLayerPlan *p, MilT x) {
    int NH = x.d[1], D = p->D, S = x.d[3], rows = NH * D / 2;
    MilT y = milw_reshape4(w, x, 1, rows, 1, 2 * S);
    int b0[4] = {0, 0, 0, 0}, b1[4] = {0, 0, 0, S}, sz[4] = {1, rows, 1, S};
    MilT v[2] = {milw_slice(w, y, b1, sz), milw_slice(w, y, b0, sz)};
    return milw_reshape4(w, milw_concat(w, 3, 2, v), 1, NH, D, S);
}

/* x [1, n, 1, S] rolled by k channels: row c holds x[(c + k) mod n]. Two channel slices and a
** channel concat. */
static MilT roll_channels(MilW *w, MilT x, int k) {
    int n = x.d[1], S = x.d[3];
    int b1[4] = {0, k, 0, 0}, s1[4] = {1, n - k, 1, S}, b0[4] = {0, 0, 0, 0}, s0[4] = {1, k, 1, S};
    MilT v[2] = {milw_slice(w, x, b1, s1), milw_slice(w, x, b0, s0)};
    return milw_concat(w, 1, 2, v);
}

/* Sum over dim 2 of x [1, NH, D, S] -> [1, NH, 1, S], as a matmul with a row of ones (the fact
** sheet reports reduce_sum over axes 1 and -1 only). */
static MilT sum_heads(MilW *w, MilT x, MilT ones) { return milw_matmul(w, ones, 0, x, 0); }

/* RoPE forward x*cos + partner(x)*sin, or its transpose (backward) x*cos - partner(x)*sin, on
** x [1, NH, D, S].
** Half RoPE pairs channel d of a head with d + D/2. Its partner is no longer built by flattening
** a head to one row of D S values (an axis of 32768 for Qwen3 at S = 256, over the device's
** 16384: docs/ane-facts.md §9): with the heads' rows as channels [1, NH D, 1, S], the first half
** of every head needs row c + D/2 and the second half row c - D/2, i.e. the rows rolled by +D/2
** and by -D/2 (each two channel slices and a concat, no axis above NH D); each roll is multiplied
** by the sin table of its half, which is 0 on the other half, so
**     partner(x) * sin = roll(x, +D/2) * sinv[0] + roll(x, -D/2) * sinv[1]
** exactly (one of the two terms is an exact 0; the result equals the old partner's bit for bit).
** The slices are on the channel axis, which the seed's kernels slice too; none on axis 2. */
static MilT rope(MilW *w, const AneLayerPlan *p, MilT x, MilT cosv, const MilT *sinv, int backward) {
    MilT a = milw_mul(w, x, cosv), b;
    if (p->rope == ROPE_HALF) {
        int NH = x.d[1], D = p->D, S = x.d[3], n = NH * D;
        MilT rows = milw_reshape4(w, x, 1, n, 1, S);
        MilT up = milw_reshape4(w, roll_channels(w, rows, D / 2), 1, NH, D, S);
        MilT down = milw_reshape4(w, roll_channels(w, rows, n - D / 2), 1, NH, D, S);
        b = milw_add(w, milw_mul(w, up, sinv[0]), milw_mul(w, down, sinv[1]));
    } else {
        b = milw_mul(w, rope_partner(w, p, x), sinv[0]);
    }
    return backward ? milw_sub(w, a, b) : milw_add(w, a, b);
}

/* RMSNorm statistics over dim 2 of x [1, NH, D, S] (Qwen3's per-head q/k-norm):
** *rstd = (mean_d x^2 + eps)^-1/2 [1, NH, 1, S]; returns xhat = x * rstd. ones: [1, NH, 1, D]. */
static MilT head_norm(MilW *w, const AneLayerPlan *p, MilT x, MilT ones, MilT *rstd) {
    MilT xs = milw_mul_s(w, x, 1.0 / sqrt((double)p->D)); /* squares of values near 1: no under/overflow */
    MilT ms = sum_heads(w, milw_mul(w, xs, xs), ones);
    *rstd = milw_pow_s(w, milw_add_s(w, ms, p->eps), -0.5);
    return milw_mul(w, x, *rstd);
}

/* Backward of xn = xhat * wn, given d xn: returns d x = rstd * (g - xhat * mean(g * xhat)) with
** g = dxn * wn, the mean over the n channels of dim 1 (the model norms, [1, C, 1, S]) or, with
** ones, of dim 2 (the head norms, [1, NH, D, S]). */
static MilT norm_backward(MilW *w, MilT dxn, MilT xhat, MilT rstd, MilT wn, int n, const MilT *ones) {
    MilT g = milw_mul(w, dxn, wn);
    MilT gx = milw_mul_s(w, milw_mul(w, g, xhat), 1.0 / n);
    MilT dot = ones ? sum_heads(w, gx, *ones) : milw_reduce_sum(w, gx, 1);
    return milw_mul(w, milw_sub(w, g, milw_mul(w, xhat, dot)), rstd);
}

/* A [1, NH, 1, D] blob of ones named file. */
static MilT ones_blob(MilW *w, const char *file, int NH, int D) {
    float *v = malloc(sizeof(float) * (size_t)NH * D);
    int d[4] = {1, NH, 1, D}, bad[1] = {0};
    if (!v) return milw_blob(w, "oom.bin", 0, bad, NULL); /* records the failure */
    for (int i = 0; i < NH * D; i++) v[i] = 1.0f;
    MilT t = milw_blob(w, file, 4, d, v);
    free(v);
    return t;
}

/* Causal attention probabilities from q [1, H, D, S] and k [1, KV, D, S] (after RoPE):
** P [1, H, S, S], row = query, col = key, query head h with KV head h / r. */
static MilT probs(MilW *w, const AneLayerPlan *p, MilT q, MilT k, MilT mask) {
    int H = p->H, KV = p->KV, D = p->D, S = p->S, r = H / KV;
    MilT qs = milw_mul_s(w, q, 1.0 / sqrt((double)D));
    MilT sc;
    if (r == 1) {
        sc = milw_matmul(w, qs, 1, k, 0); /* [1,H,S,S] = qs^T k */
    } else {
        /* The r query heads of a KV head are consecutive: stack them as r*S rows. */
        MilT q5 = milw_reshape4(w, milw_transpose(w, qs), 1, KV, r * S, D);
        sc = milw_reshape4(w, milw_matmul(w, q5, 0, k, 0), 1, H, S, S);
    }
    return milw_softmax(w, milw_add(w, sc, mask), -1);
}

/* ------------------------------------------------------------------ LoRA */

/* Whether the plan adapts module m (q k v o gate up down). */
static int lora_on(const AneLayerPlan *p, int m) { return p->reg[AR_LORA_A + m].n > 0; }

/* Module m's output with its adapter: y + B_m ((s A_m) x), x [1, 1, in, S], y [1, 1, out, S];
** *u receives the tap u = (s A_m) x as [1, R, 1, S]. Without an adapter on m, y itself. With a
** dropout mask region (ane_plan_lora_dropout), x is x * MASK_m. */
static MilT lora_fwd(MilW *w, MilT X, const AneLayerPlan *p, int m, MilT x, MilT y, MilT *u) {
    if (!lora_on(p, m)) return y;
    int R = p->lora_rank, out, in;
    ane_lora_module_shape(p, m, &out, &in);
    if (p->reg[AR_LORA_MASK + m].n) x = milw_mul(w, x, region(w, X, p, AR_LORA_MASK + m, 1, 1, in, p->S));
    MilT um = milw_matmul(w, region(w, X, p, AR_LORA_A + m, 1, 1, R, in), 0, x, 0); /* [1, 1, R, S] */
    *u = milw_reshape4(w, um, 1, R, 1, p->S);
    return milw_add(w, y, milw_matmul(w, region(w, X, p, AR_LORA_B + m, 1, 1, out, R), 0, um, 0));
}

/* Module m's input gradient with its adapter: dx + (s A_m)^T (B_m^T dy), dy [1, 1, out, S],
** dx [1, 1, in, S]; *v receives the tap v = B_m^T dy as [1, R, 1, S]. Without one, dx itself.
** With a dropout mask region, the adapter's term is MASK_m * ((s A_m)^T v). */
static MilT lora_bwd(MilW *w, MilT X, const AneLayerPlan *p, int m, MilT dy, MilT dx, MilT *v) {
    if (!lora_on(p, m)) return dx;
    int R = p->lora_rank, out, in;
    ane_lora_module_shape(p, m, &out, &in);
    MilT vm = milw_matmul(w, region(w, X, p, AR_LORA_B + m, 1, 1, out, R), 1, dy, 0); /* [1, 1, R, S] */
    *v = milw_reshape4(w, vm, 1, R, 1, p->S);
    MilT dxd = milw_matmul(w, region(w, X, p, AR_LORA_A + m, 1, 1, R, in), 1, vm, 0); /* [1, 1, in, S] */
    if (p->reg[AR_LORA_MASK + m].n) dxd = milw_mul(w, dxd, region(w, X, p, AR_LORA_MASK + m, 1, 1, in, p->S));
    return milw_add(w, dx, dxd);
}

/* ------------------------------------------------------------------ int8 base */

/* y [1, 1, out, S] with module m's row scale applied when the base is int8: s_m [out] multiplies
** row o (forward: the output of Q_m x; backward: dy_m before Q_m^T). The scale is read as
** [1, out, 1, 1] and the rows as [1, out, 1, S], the broadcast the seed uses for norm weights
** (docs/ane-facts.md §2.3: [1,C,1,S]*[1,C,1,1]). Without an int8 base, y itself (no op written). */
static MilT int8_rows(MilW *w, MilT X, const AneLayerPlan *p, int m, MilT y) {
    if (!p->int8_base) return y;
    int out, in;
    ane_lora_module_shape(p, m, &out, &in);
    MilT s = region(w, X, p, AR_SCALE + m, 1, out, 1, 1);
    MilT rows = milw_reshape4(w, y, 1, out, 1, p->S);
    return milw_reshape4(w, milw_mul(w, rows, s), 1, 1, out, p->S);
}

/* ------------------------------------------------------------------ layer_fwd */

/* FLOPs per sequence: 2S(2QC + 2KC + 3FC) + 4 S^2 D H. Input [1, C, 1, in_S] (bytes 2 C in_S),
** output [1, fwd_C, 1, S] (bytes 2 fwd_C S). */
static MilT layer_fwd(MilW *w, const AneLayerPlan *p) {
    int C = p->C, F = p->F, H = p->H, KV = p->KV, D = p->D, Q = p->Q, K = p->K, S = p->S, r = H / KV;
    MilT X = milw_input(w, p->in_C, p->in_S);
    MilT mask, cosv, sinv[2];
    milw_scope(w, "tab");
    tables(w, p, &mask, &cosv, sinv);

    milw_scope(w, "norm1"); /* xn1 = x * rstd1 * rms_att */
    MilT x = region(w, X, p, AR_X, 1, C, 1, S);
    MilT r1 = region(w, X, p, AR_RSTD1, 1, 1, 1, S);
    MilT xn = milw_mul(w, milw_mul(w, x, r1), region(w, X, p, AR_RMS_ATT, 1, C, 1, 1));
    MilT xn4 = milw_reshape4(w, xn, 1, 1, C, S);

    milw_scope(w, "qkv"); /* q = wq xn1 [Q][S], k, v = wk xn1, wv xn1 [K][S] */
    MilT q = milw_matmul(w, region(w, X, p, AR_WQ, 1, 1, Q, C), 0, xn4, 0);
    MilT k = milw_matmul(w, region(w, X, p, AR_WK, 1, 1, K, C), 0, xn4, 0);
    MilT v = milw_matmul(w, region(w, X, p, AR_WV, 1, 1, K, C), 0, xn4, 0);
    if (p->int8_base) {
        q = int8_rows(w, X, p, 0, q);
        k = int8_rows(w, X, p, 1, k);
        v = int8_rows(w, X, p, 2, v);
    }
    MilT lu[ANE_LORA_MODULES]; /* LoRA taps u_m */
    if (p->lora_rank) {
        q = lora_fwd(w, X, p, 0, xn4, q, &lu[0]);
        k = lora_fwd(w, X, p, 1, xn4, k, &lu[1]);
        v = lora_fwd(w, X, p, 2, xn4, v, &lu[2]);
    }
    MilT q4 = milw_reshape4(w, q, 1, H, D, S), k4 = milw_reshape4(w, k, 1, KV, D, S);
    MilT v4 = milw_reshape4(w, v, 1, KV, D, S);
    MilT q_tap = q4, k_tap = k4, rq = {-1, 0, {0}}, rk = {-1, 0, {0}};
    if (p->qk_norm) {
        milw_scope(w, "qknorm");
        MilT ones_q = ones_blob(w, "ones_q.bin", H, D), ones_k = ones_blob(w, "ones_k.bin", KV, D);
        MilT qh = head_norm(w, p, q4, ones_q, &rq), kh = head_norm(w, p, k4, ones_k, &rk);
        q_tap = qh;
        k_tap = kh;
        q4 = milw_mul(w, qh, region(w, X, p, AR_QNORM, 1, 1, D, 1));
        k4 = milw_mul(w, kh, region(w, X, p, AR_KNORM, 1, 1, D, 1));
    }
    milw_scope(w, "rope");
    q4 = rope(w, p, q4, cosv, sinv, 0);
    k4 = rope(w, p, k4, cosv, sinv, 0);
    if (!p->qk_norm) {
        q_tap = q4;
        k_tap = k4;
    }

    milw_scope(w, "attn"); /* att_h = v_{h/r} P_h^T, [D][S] per head */
    MilT P = probs(w, p, q4, k4, mask), att4;
    if (r == 1) {
        att4 = milw_matmul(w, v4, 0, P, 1);
    } else {
        MilT o5 = milw_matmul(w, milw_reshape4(w, P, 1, KV, r * S, S), 0, v4, 1); /* [1,KV,r*S,D] */
        att4 = milw_transpose(w, milw_reshape4(w, o5, 1, H, S, D));
    }
    MilT att = milw_reshape4(w, att4, 1, 1, Q, S);

    milw_scope(w, "wo"); /* x_mid = x + wo att */
    MilT o = milw_matmul(w, region(w, X, p, AR_WO, 1, 1, C, Q), 0, att, 0);
    if (p->int8_base) o = int8_rows(w, X, p, 3, o);
    if (p->lora_rank) o = lora_fwd(w, X, p, 3, att, o, &lu[3]);
    MilT xm = milw_add(w, x, milw_reshape4(w, o, 1, C, 1, S));

    milw_scope(w, "norm2"); /* rstd2 = rstd1 / sqrt(mean((x_mid rstd1)^2) + eps rstd1^2) */
    MilT u = milw_mul_s(w, milw_mul(w, xm, r1), 1.0 / sqrt((double)C));
    MilT m2 = milw_reduce_sum(w, milw_mul(w, u, u), 1);
    MilT e = milw_mul_s(w, r1, sqrt((double)p->eps)); /* rstd1 sqrt(eps) <= 1 */
    MilT r2 = milw_mul(w, milw_pow_s(w, milw_add(w, m2, milw_mul(w, e, e)), -0.5), r1);
    MilT xh2 = milw_mul(w, xm, r2);
    MilT xn2 = milw_reshape4(w, milw_mul(w, xh2, region(w, X, p, AR_RMS_FFN, 1, C, 1, 1)), 1, 1, C, S);

    milw_scope(w, "ffn"); /* x_next = x_mid + w2 (silu(w1 xn2) * w3 xn2) */
    MilT h1 = milw_matmul(w, region(w, X, p, AR_W1, 1, 1, F, C), 0, xn2, 0);
    MilT h3 = milw_matmul(w, region(w, X, p, AR_W3, 1, 1, F, C), 0, xn2, 0);
    if (p->int8_base) {
        h1 = int8_rows(w, X, p, 4, h1);
        h3 = int8_rows(w, X, p, 5, h3);
    }
    if (p->lora_rank) {
        h1 = lora_fwd(w, X, p, 4, xn2, h1, &lu[4]);
        h3 = lora_fwd(w, X, p, 5, xn2, h3, &lu[5]);
    }
    MilT g = milw_mul(w, milw_mul(w, h1, milw_sigmoid(w, h1)), h3);
    MilT fo = milw_matmul(w, region(w, X, p, AR_W2, 1, 1, C, F), 0, g, 0);
    if (p->int8_base) fo = int8_rows(w, X, p, 6, fo);
    if (p->lora_rank) fo = lora_fwd(w, X, p, 6, g, fo, &lu[6]);
    MilT xnext = milw_add(w, xm, milw_reshape4(w, fo, 1, C, 1, S));

    milw_scope(w, "out");
    MilT outs[AF_COUNT];
    int n = 0;
    outs[n++] = xnext;
    outs[n++] = milw_reshape4(w, att, 1, Q, 1, S);
    outs[n++] = xh2;
    outs[n++] = r2;
    outs[n++] = milw_reshape4(w, h1, 1, F, 1, S);
    outs[n++] = milw_reshape4(w, h3, 1, F, 1, S);
    outs[n++] = milw_reshape4(w, q_tap, 1, Q, 1, S);
    outs[n++] = milw_reshape4(w, k_tap, 1, K, 1, S);
    outs[n++] = milw_reshape4(w, v4, 1, K, 1, S);
    if (p->qk_norm) {
        outs[n++] = rq; /* [1, H, 1, S] */
        outs[n++] = rk;
    }
    for (int m = 0; m < ANE_LORA_MODULES; m++)
        if (lora_on(p, m)) outs[n++] = lu[m];
    return milw_concat(w, 1, n, outs);
}

/* ------------------------------------------------------------------ layer_bwd */

/* FLOPs per sequence: 2S(2QC + 2KC + 3FC) + 10 S^2 D H. Same input surface as layer_fwd;
** output [1, bwd_C, 1, S]. */
static MilT layer_bwd(MilW *w, const AneLayerPlan *p) {
    int C = p->C, F = p->F, H = p->H, KV = p->KV, D = p->D, Q = p->Q, K = p->K, S = p->S, r = H / KV;
    MilT X = milw_input(w, p->in_C, p->in_S);
    MilT mask, cosv, sinv[2];
    milw_scope(w, "tab");
    tables(w, p, &mask, &cosv, sinv);

    milw_scope(w, "ffn"); /* dg = w2^T dy; SwiGLU backward; dxn2 = w1^T dh1 + w3^T dh3 */
    MilT dy = region(w, X, p, AR_DY, 1, C, 1, S);
    MilT dg;
    if (p->int8_base) { /* int8 base: dx = Q^T (s * dy), here and at every matrix below */
        MilT dys = int8_rows(w, X, p, 6, milw_reshape4(w, dy, 1, 1, C, S));
        dg = milw_matmul(w, region(w, X, p, AR_W2, 1, 1, C, F), 1, dys, 0);
    } else
        dg = milw_matmul(w, region(w, X, p, AR_W2, 1, 1, C, F), 1, milw_reshape4(w, dy, 1, 1, C, S), 0);
    /* LoRA taps v_m. The adapter path reshapes its operands itself, so that the plain kernel's text
    ** stays exactly what it was (the order of the ops above depends on the compiler's order of
    ** evaluating arguments, which must not change). */
    MilT lv[ANE_LORA_MODULES];
    if (p->lora_rank) dg = lora_bwd(w, X, p, 6, milw_reshape4(w, dy, 1, 1, C, S), dg, &lv[6]);
    MilT h1 = region(w, X, p, AR_H1, 1, 1, F, S), h3 = region(w, X, p, AR_H3, 1, 1, F, S);
    MilT sg = milw_sigmoid(w, h1), si = milw_mul(w, h1, sg);
    MilT dh3 = milw_mul(w, dg, si);
    /* silu'(h) = s + silu(h) (1 - s) */
    MilT dsilu = milw_add(w, sg, milw_mul(w, si, milw_rsub_s(w, 1.0, sg)));
    MilT dh1 = milw_mul(w, milw_mul(w, dg, h3), dsilu);
    MilT dxn2;
    if (p->int8_base) {
        MilT dh1s = int8_rows(w, X, p, 4, dh1), dh3s = int8_rows(w, X, p, 5, dh3);
        MilT a1 = milw_matmul(w, region(w, X, p, AR_W1, 1, 1, F, C), 1, dh1s, 0);
        MilT a3 = milw_matmul(w, region(w, X, p, AR_W3, 1, 1, F, C), 1, dh3s, 0);
        dxn2 = milw_add(w, a1, a3);
    } else
        dxn2 = milw_add(w, milw_matmul(w, region(w, X, p, AR_W1, 1, 1, F, C), 1, dh1, 0),
                        milw_matmul(w, region(w, X, p, AR_W3, 1, 1, F, C), 1, dh3, 0));
    if (p->lora_rank) {
        dxn2 = lora_bwd(w, X, p, 4, dh1, dxn2, &lv[4]);
        dxn2 = lora_bwd(w, X, p, 5, dh3, dxn2, &lv[5]);
    }
    dxn2 = milw_reshape4(w, dxn2, 1, C, 1, S);

    milw_scope(w, "norm2"); /* dx_mid = dy + norm2 backward */
    MilT xh2 = region(w, X, p, AR_XH2, 1, C, 1, S), r2 = region(w, X, p, AR_RSTD2, 1, 1, 1, S);
    MilT dxm = milw_add(w, dy, norm_backward(w, dxn2, xh2, r2, region(w, X, p, AR_RMS_FFN, 1, C, 1, 1), C, NULL));

    milw_scope(w, "wo"); /* datt = wo^T dx_mid */
    MilT datt;
    if (p->int8_base) {
        MilT dxms = int8_rows(w, X, p, 3, milw_reshape4(w, dxm, 1, 1, C, S));
        datt = milw_matmul(w, region(w, X, p, AR_WO, 1, 1, C, Q), 1, dxms, 0);
    } else
        datt = milw_matmul(w, region(w, X, p, AR_WO, 1, 1, C, Q), 1, milw_reshape4(w, dxm, 1, 1, C, S), 0);
    if (p->lora_rank) datt = lora_bwd(w, X, p, 3, milw_reshape4(w, dxm, 1, 1, C, S), datt, &lv[3]);
    MilT dO = milw_reshape4(w, datt, 1, H, D, S);

    milw_scope(w, "attn"); /* q, k after RoPE again (Qwen3: from the normalized taps) */
    MilT q = region(w, X, p, AR_Q, 1, H, D, S), k = region(w, X, p, AR_K, 1, KV, D, S);
    MilT v = region(w, X, p, AR_V, 1, KV, D, S);
    MilT wqn = {-1, 0, {0}}, wkn = {-1, 0, {0}};
    if (p->qk_norm) {
        wqn = region(w, X, p, AR_QNORM, 1, 1, D, 1);
        wkn = region(w, X, p, AR_KNORM, 1, 1, D, 1);
        q = rope(w, p, milw_mul(w, q, wqn), cosv, sinv, 0);
        k = rope(w, p, milw_mul(w, k, wkn), cosv, sinv, 0);
    }
    MilT P = probs(w, p, q, k, mask);
    MilT dv, dP;
    if (r == 1) {
        dv = milw_matmul(w, dO, 0, P, 0); /* dv_h [D][S] = dO_h P_h */
        dP = milw_matmul(w, dO, 1, v, 0); /* dP_h [S][S] = dO_h^T v_h */
    } else {
        MilT dO5 = milw_reshape4(w, milw_transpose(w, dO), 1, KV, r * S, D);
        dv = milw_matmul(w, dO5, 1, milw_reshape4(w, P, 1, KV, r * S, S), 0); /* sums the r heads */
        dP = milw_reshape4(w, milw_matmul(w, dO5, 0, v, 0), 1, H, S, S);
    }
    /* softmax backward, then the 1/sqrt(D) of the scores */
    MilT dd = milw_sub(w, dP, milw_reduce_sum(w, milw_mul(w, P, dP), -1));
    MilT dS = milw_mul_s(w, milw_mul(w, P, dd), 1.0 / sqrt((double)D));
    MilT dq, dk;
    if (r == 1) {
        dq = milw_matmul(w, k, 0, dS, 1); /* dq_h [D][S] = k_h dS_h^T */
        dk = milw_matmul(w, q, 0, dS, 0); /* dk_h [D][S] = q_h dS_h */
    } else {
        MilT dS5 = milw_reshape4(w, dS, 1, KV, r * S, S);
        MilT dq5 = milw_matmul(w, dS5, 0, k, 1); /* [1, KV, r*S, D] */
        dq = milw_transpose(w, milw_reshape4(w, dq5, 1, H, S, D));
        MilT q5 = milw_reshape4(w, milw_transpose(w, q), 1, KV, r * S, D);
        dk = milw_matmul(w, q5, 1, dS5, 0); /* sums the r heads */
    }

    milw_scope(w, "rope");
    dq = rope(w, p, dq, cosv, sinv, 1);
    dk = rope(w, p, dk, cosv, sinv, 1);
    MilT dq_out = dq, dk_out = dk, dq_raw = dq, dk_raw = dk;
    if (p->qk_norm) {
        milw_scope(w, "qknorm");
        MilT qh = region(w, X, p, AR_Q, 1, H, D, S), kh = region(w, X, p, AR_K, 1, KV, D, S);
        MilT rq = region(w, X, p, AR_RSTDQ, 1, H, 1, S), rk = region(w, X, p, AR_RSTDK, 1, KV, 1, S);
        MilT ones_q = ones_blob(w, "ones_q.bin", H, D), ones_k = ones_blob(w, "ones_k.bin", KV, D);
        dq_raw = norm_backward(w, dq, qh, rq, wqn, D, &ones_q);
        dk_raw = norm_backward(w, dk, kh, rk, wkn, D, &ones_k);
    }

    milw_scope(w, "qkv"); /* dxn1 = wq^T dq + wk^T dk + wv^T dv */
    MilT a, b, c;
    if (p->int8_base) {
        MilT dqs = int8_rows(w, X, p, 0, milw_reshape4(w, dq_raw, 1, 1, Q, S));
        a = milw_matmul(w, region(w, X, p, AR_WQ, 1, 1, Q, C), 1, dqs, 0);
        MilT dks = int8_rows(w, X, p, 1, milw_reshape4(w, dk_raw, 1, 1, K, S));
        b = milw_matmul(w, region(w, X, p, AR_WK, 1, 1, K, C), 1, dks, 0);
        MilT dvs = int8_rows(w, X, p, 2, milw_reshape4(w, dv, 1, 1, K, S));
        c = milw_matmul(w, region(w, X, p, AR_WV, 1, 1, K, C), 1, dvs, 0);
    } else {
        a = milw_matmul(w, region(w, X, p, AR_WQ, 1, 1, Q, C), 1, milw_reshape4(w, dq_raw, 1, 1, Q, S), 0);
        b = milw_matmul(w, region(w, X, p, AR_WK, 1, 1, K, C), 1, milw_reshape4(w, dk_raw, 1, 1, K, S), 0);
        c = milw_matmul(w, region(w, X, p, AR_WV, 1, 1, K, C), 1, milw_reshape4(w, dv, 1, 1, K, S), 0);
    }
    MilT sum = milw_add(w, milw_add(w, a, b), c);
    if (p->lora_rank) {
        sum = lora_bwd(w, X, p, 0, milw_reshape4(w, dq_raw, 1, 1, Q, S), sum, &lv[0]);
        sum = lora_bwd(w, X, p, 1, milw_reshape4(w, dk_raw, 1, 1, K, S), sum, &lv[1]);
        sum = lora_bwd(w, X, p, 2, milw_reshape4(w, dv, 1, 1, K, S), sum, &lv[2]);
    }
    MilT dxn1 = milw_reshape4(w, sum, 1, C, 1, S);

    milw_scope(w, "out");
    MilT outs[AB_COUNT] = {
        dxn2,
        milw_reshape4(w, dh1, 1, F, 1, S),
        milw_reshape4(w, dh3, 1, F, 1, S),
        milw_reshape4(w, dq_out, 1, Q, 1, S),
        milw_reshape4(w, dk_out, 1, K, 1, S),
        milw_reshape4(w, dv, 1, K, 1, S),
        dxn1,
    };
    int n = AB_LORA_V;
    for (int m = 0; m < ANE_LORA_MODULES; m++)
        if (lora_on(p, m)) outs[n++] = lv[m];
    return milw_concat(w, 1, n, outs);
}

/* ------------------------------------------------------------------ entry points */

static int generate(const AneLayerPlan *p, MilT (*gen)(MilW *, const AneLayerPlan *), const char *what, char **mil,
                    AneBlob **blobs, int *n_blobs, Err *err) {
    *mil = NULL;
    *blobs = NULL;
    *n_blobs = 0;
    MilW *w = milw_create();
    if (!w) return err_set(err, "%s: out of memory", what);
    MilT out = gen(w, p);
    *mil = milw_finish(w, out, err);
    if (!*mil) {
        milw_free(w);
        return err_wrap(err, "%s", what);
    }
    milw_take_blobs(w, blobs, n_blobs);
    milw_free(w);
    return 0;
}

int ane_kernel_fwd(const AneLayerPlan *p, char **mil, AneBlob **blobs, int *n_blobs, Err *err) {
    return generate(p, layer_fwd, "layer_fwd", mil, blobs, n_blobs, err);
}

int ane_kernel_bwd(const AneLayerPlan *p, char **mil, AneBlob **blobs, int *n_blobs, Err *err) {
    return generate(p, layer_bwd, "layer_bwd", mil, blobs, n_blobs, err);
}

int ane_kernel_make(const AneLayerPlan *p, AneKernelId id, AneKernel *k, Err *err) {
    memset(k, 0, sizeof *k);
    if (id != ANE_KERNEL_LAYER_FWD && id != ANE_KERNEL_LAYER_BWD)
        return err_set(err, "ane kernel: id %d is not a kernel of the plan (0..%d)", (int)id, ANE_KERNELS - 1);
    int bwd = id == ANE_KERNEL_LAYER_BWD;
    k->name = bwd ? "layer_bwd" : "layer_fwd";
    k->in = (AneShape){p->in_C, p->in_S};
    k->out = (AneShape){bwd ? p->bwd_C : p->fwd_C, p->S};
    k->flops = bwd ? p->bwd_flops : p->fwd_flops;
    k->training_only = bwd;
    return bwd ? ane_kernel_bwd(p, &k->mil, &k->blobs, &k->n_blobs, err)
               : ane_kernel_fwd(p, &k->mil, &k->blobs, &k->n_blobs, err);
}

void ane_kernel_free(AneKernel *k) {
    if (!k) return;
    free(k->mil);
    milw_free_blobs(k->blobs, k->n_blobs);
    memset(k, 0, sizeof *k);
}

void ane_plan_cost(const AneLayerPlan *p, int n_layers, int B, int training, AnePlanCost *c) {
    static const int fwd_acts[] = {AR_X, AR_RSTD1};
    static const int bwd_acts[] = {AR_DY, AR_XH2, AR_RSTD2, AR_H1, AR_H3, AR_Q, AR_K, AR_V, AR_RSTDQ, AR_RSTDK};
    memset(c, 0, sizeof *c);
    double LB = (double)n_layers * B, S = p->S, base = 0, adapter = 0, fwd = 0, bwd = 0, masks = 0;
    for (int id = AR_RMS_ATT; id <= AR_W2; id++) base += 2.0 * (double)p->reg[id].n;
    for (int m = 0; m < ANE_LORA_MODULES; m++) {
        base += 2.0 * (double)p->reg[AR_SCALE + m].n;
        adapter += 2.0 * (double)(p->reg[AR_LORA_A + m].n + p->reg[AR_LORA_B + m].n);
        masks += 2.0 * (double)p->reg[AR_LORA_MASK + m].n; /* staged before each kernel */
    }
    for (size_t i = 0; i < sizeof fwd_acts / sizeof fwd_acts[0]; i++) fwd += 2.0 * (double)p->reg[fwd_acts[i]].n;
    for (size_t i = 0; i < sizeof bwd_acts / sizeof bwd_acts[0]; i++) bwd += 2.0 * (double)p->reg[bwd_acts[i]].n;
    int frozen = p->lora_rank > 0 || p->int8_base;
    c->evals_per_layer_seq = training ? 2 : 1;
    c->evals = (long long)LB * c->evals_per_layer_seq;
    c->weight_bytes = n_layers * (frozen ? adapter : base + adapter);
    c->base_bytes_once = frozen ? n_layers * base : 0;
    c->act_bytes = LB * (fwd + masks + (training ? bwd + masks : 0));
    c->read_bytes = LB * 2.0 * S * (training ? (double)p->fwd_C + p->bwd_C : (double)p->C);
    c->surface_bytes_in = (double)c->evals * 2.0 * p->in_C * p->in_S;
    c->surface_bytes_out = LB * 2.0 * S * ((double)p->fwd_C + (training ? p->bwd_C : 0));
    c->flops = LB * (p->fwd_flops + (training ? p->bwd_flops : 0));
}
