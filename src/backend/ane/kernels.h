/*
** kernels.h — the ANE kernels of a training step: their input and output layouts (the plan)
** and the generators of their MIL text (kernels.c; the README-style overview is at its top).
**
** Two kernels per layer, compiled once per model shape and shared by every layer:
**   layer_fwd   x, rstd1 + the layer's weights  ->  x_next and the taps backward needs
**   layer_bwd   dy + forward taps + weights     ->  dxn2, dh1, dh3, dq, dk, dv, dxn1
** Both read the same input layout: one surface per layer, [1, in_C, 1, in_S] (in_C = C, or a
** power-of-two multiple of C when C rows would make the surface wider than 16384), whose columns
** hold regions. Region r holds n values (an activation [c][S], a weight [out][in], a vector)
** row-major in `blocks` blocks of `rows` x `width` side by side: value i is in block
** j = i / (rows * width), at row `row` + (i % (rows * width)) / width, column
** off + j * width + i % width (the last block may have fewer rows). Every region starts at a
** column that is a multiple of 32, rows * width divides its values exactly (no partial row), and
** the kernels read it back with one slice per block (+ a channel concat) and one reshape, so no
** axis exceeds the surface's (kernels.c, "Layout"; docs/ane-facts.md §9). Weights are staged
** once per step into their regions and stay while the activation regions are rewritten per
** sequence (LoRA over a frozen base: the base once for the run, the adapter's A and B regions
** every step; an int8 base: its int8 values and row scales once). Outputs are channel
** concatenations of [rows][S] taps. S is the padded sequence length, a multiple of 32.
*/
#ifndef ANETRAIN_ANE_KERNELS_H
#define ANETRAIN_ANE_KERNELS_H

#include <stdint.h>

#include "../../model/config.h"
#include "../../util/err.h"
#include "device.h"

/* Input regions of a layer's surface. */
typedef enum {
    /* layer_fwd activations */
    AR_X,        /* [C][S] the residual stream entering the layer */
    AR_RSTD1,    /* [S] 1/rms of x (computed on the CPU in fp32; padding columns hold 1) */
    /* layer_bwd activations */
    AR_DY,       /* [C][S] d loss / d x_next (scaled by the loss scale) */
    AR_XH2,      /* [C][S] x_mid * rstd2 (forward tap) */
    AR_RSTD2,    /* [S] */
    AR_H1,       /* [F][S] w1 xn2 */
    AR_H3,       /* [F][S] w3 xn2 */
    AR_Q,        /* [H*D][S] Llama: q after RoPE; Qwen3: qhat = q_raw * rstd_q (before weight, RoPE) */
    AR_K,        /* [KV*D][S] likewise */
    AR_V,        /* [KV*D][S] */
    AR_RSTDQ,    /* [H][S] Qwen3 only */
    AR_RSTDK,    /* [KV][S] Qwen3 only */
    /* weights, [out][in] as in the parameter buffer */
    AR_RMS_ATT,  /* [C] */
    AR_RMS_FFN,  /* [C] */
    AR_QNORM,    /* [D] Qwen3 only */
    AR_KNORM,    /* [D] Qwen3 only */
    AR_WQ,       /* [H*D][C] */
    AR_WK,       /* [KV*D][C] */
    AR_WV,       /* [KV*D][C] */
    AR_WO,       /* [C][H*D] */
    AR_W1,       /* [F][C] */
    AR_W3,       /* [F][C] */
    AR_W2,       /* [C][F] */
    /* LoRA adapters (only in a plan made with a rank, ane_plan_layer_lora; absent otherwise), in
    ** the module order of model/lora.h (q k v o gate up down = wq wk wv wo w1 w3 w2):
    ** A_m [R][in] holds s * A (the LoRA scale folded in on the CPU, in fp32), B_m [out][R] */
    AR_LORA_A,                 /* AR_LORA_A + m: s A_m */
    AR_LORA_B = AR_LORA_A + 7, /* AR_LORA_B + m: B_m */
    /* An int8 frozen base (only in a plan made with int8_base, ane_plan_layer_frozen; absent
    ** otherwise): the seven matrix regions above then hold q * ANE_INT8_STEP (the int8 values,
    ** exact in fp16), and the row scales of matrix m (same module order) s_m / ANE_INT8_STEP [out] */
    AR_SCALE = AR_LORA_B + 7,  /* AR_SCALE + m: per-output-row scale of module m's matrix */
    /* LoRA dropout masks (only in a plan given them by ane_plan_lora_dropout; absent otherwise),
    ** activations rewritten per sequence: MASK_m [in][S] holds 0 (dropped, and the padding
    ** columns) or 1, the keep factor 1/(1-p) being folded into s A_m on the CPU */
    AR_LORA_MASK = AR_SCALE + 7, /* AR_LORA_MASK + m: module m's 0/1 dropout mask */
    AR_COUNT = AR_LORA_MASK + 7
} AneRegionId;

enum { AR_FIRST_WEIGHT = AR_RMS_ATT, ANE_LORA_MODULES = 7 };

/* Output taps of layer_fwd, in channel order. */
typedef enum {
    AF_XNEXT,  /* [C] x_next = x_mid + w2 g */
    AF_ATT,    /* [H*D] attention output (input of wo; for dWo) */
    AF_XH2,    /* [C] x_mid * rstd2 (ffn norm input, normalized) */
    AF_RSTD2,  /* [1] */
    AF_H1,     /* [F] */
    AF_H3,     /* [F] */
    AF_Q,      /* [H*D] as AR_Q */
    AF_K,      /* [KV*D] */
    AF_V,      /* [KV*D] */
    AF_RSTDQ,  /* [H] Qwen3 only */
    AF_RSTDK,  /* [KV] Qwen3 only */
    AF_LORA_U, /* AF_LORA_U + m: [R] u_m = (s A_m) x_m, the adapter's low-rank activation (LoRA only) */
    AF_COUNT = AF_LORA_U + ANE_LORA_MODULES
} AneFwdTap;

/* Output of layer_bwd, in channel order. */
typedef enum {
    AB_DXN2,  /* [C] d loss / d xn2 (ffn norm output) */
    AB_DH1,   /* [F] */
    AB_DH3,   /* [F] */
    AB_DQ,    /* [H*D] Llama: d q_raw; Qwen3: d of the normed, weighted q before RoPE */
    AB_DK,    /* [KV*D] likewise */
    AB_DV,    /* [KV*D] */
    AB_DXN1,  /* [C] d loss / d xn1 (attention norm output) */
    AB_LORA_V, /* AB_LORA_V + m: [R] v_m = B_m^T dy_m, dy_m the gradient of module m's output (LoRA only) */
    AB_COUNT = AB_LORA_V + ANE_LORA_MODULES
} AneBwdTap;

typedef struct {
    long long n;    /* values held (0: region absent) */
    int off;        /* first column, a multiple of 32 */
    int row;        /* first row */
    int rows;       /* rows of a block (the last block: the rest of the values) */
    int width;      /* columns of a block */
    int blocks;     /* blocks side by side: 1 for a plain fold; an activation [c][S] with c above the
                    ** surface's rows is read in blocks of in_C channels */
    int a, b;       /* the values' logical shape [a][b] (row-major): [c][S], [out][in], [1][len] */
} AneRegion;

typedef struct {
    int off, rows;  /* channel range in the output (rows 0: absent) */
} AneTap;

typedef struct {
    int C, F, H, KV, D, Q, K; /* Q = H*D, K = KV*D */
    int S;                    /* padded sequence length (multiple of 32) */
    int T_max;                /* the longest real sequence (<= S) */
    int qk_norm;
    int lora_rank;            /* R: 0 without adapters */
    int int8_base;            /* 1: the seven matrices are int8 values with row scales (kernels.c, "int8 base") */
    RopeStyle rope;
    double theta;
    float eps;
    int in_C, in_S;           /* input [1, in_C, 1, in_S] */
    int max_width;            /* the widest input the plan may use (ANE_MAX_AXIS unless a test lowers it) */
    AneRegion reg[AR_COUNT];
    int fwd_C;                /* layer_fwd output [1, fwd_C, 1, S] */
    AneTap fwd[AF_COUNT];
    int bwd_C;                /* layer_bwd output [1, bwd_C, 1, S] */
    AneTap bwd[AB_COUNT];
    double fwd_flops, bwd_flops; /* per evaluation (one sequence), matmul-class, at width S */
} AneLayerPlan;

/* The largest axis the plan lets any tensor have, input width and rows included: the measured
** input width, which the strict limits apply to every axis (docs/ane-facts.md §9). */
#define ANE_MAX_AXIS 16384

/* What a plan is made for: every variant of the two kernels. */
typedef struct {
    int T_max;             /* the longest sequence; S = T_max rounded up to 32 */
    int lora_rank;         /* R > 0: LoRA adapters on the modules of lora_targets (bit m: module m in the
                           ** order q k v o gate up down); 0: none */
    unsigned lora_targets;
    int lora_dropout;      /* 1 (with a rank): a 0/1 dropout mask region per adapted module */
    int int8_base;         /* 1: the seven matrices are int8 values with row scales */
    int max_width;         /* the widest input surface allowed; 0: ANE_MAX_AXIS. Tests lower it to make
                           ** small models use the layouts of big ones (more rows, column blocks). */
} AnePlanSpec;

/* Lays out both kernels of cfg as spec says, or refuses with the reason (a sequence, a model
** dimension or the output taps beyond ANE_MAX_AXIS, or regions that fit no surface of at most
** ANE_MAX_AXIS rows and max_width columns) before anything is compiled. */
int ane_plan_make(AneLayerPlan *p, const ModelConfig *cfg, const AnePlanSpec *spec, Err *err);

/* Lays out the kernels of cfg for sequences of up to T_max tokens. */
int ane_plan_layer(AneLayerPlan *p, const ModelConfig *cfg, int T_max, Err *err);
/* The same with LoRA adapters of rank R on the modules whose bit is set in targets (bit m: module
** m in the order q k v o gate up down): their A and B regions, u and v taps, and the adapter path
** in both kernels (kernels.c, "LoRA"). R 0 is ane_plan_layer: the same plan and MIL text. */
int ane_plan_layer_lora(AneLayerPlan *p, const ModelConfig *cfg, int T_max, int R, unsigned targets, Err *err);
/* The same over an int8 frozen base when int8_base is 1: the AR_SCALE regions, and every matrix
** product of both kernels applies its row scale (kernels.c, "int8 base"). int8_base 0 is
** ane_plan_layer_lora: the same plan and MIL text. */
int ane_plan_layer_frozen(AneLayerPlan *p, const ModelConfig *cfg, int T_max, int R, unsigned targets, int int8_base,
                          Err *err);
/* Adds a dropout mask region AR_LORA_MASK + m [in][S] after every other region for each module m
** the LoRA plan p adapts: both kernels then multiply the adapter path's input by it (layer_fwd:
** u_m = (s A_m)(x_m * MASK_m); layer_bwd: dx_m += MASK_m * ((s A_m)^T v_m)). A plan without it
** gives the LoRA text unchanged. p must have a rank > 0. The plan is laid out again (the masks
** may need more rows); -1 when it no longer fits (p unchanged). */
int ane_plan_lora_dropout(AneLayerPlan *p, Err *err);
/* The name of region id ("x", "wq", "lora_A.gate", "scale.down", "mask.q", ...), for reports. */
const char *ane_region_name(int id);
/* Module m's base matrix shape [out][in] in the plan (m in the order above). */
void ane_lora_module_shape(const AneLayerPlan *p, int m, int *out, int *in);

/* MIL text and weight blobs (causal mask, RoPE tables) of each kernel; free the text with free
** and the blobs with milw_free_blobs. */
int ane_kernel_fwd(const AneLayerPlan *p, char **mil, AneBlob **blobs, int *n_blobs, Err *err);
int ane_kernel_bwd(const AneLayerPlan *p, char **mil, AneBlob **blobs, int *n_blobs, Err *err);

/* Writes region `id` of a layer's input surface (fp16, [C][in_S] row-major) from n values:
** fp32 (converted, round to nearest even) or fp16 bits (copied). */
void ane_region_put_f32(const AneLayerPlan *p, uint16_t *surface, int id, const float *src);
void ane_region_put_f16(const AneLayerPlan *p, uint16_t *surface, int id, const uint16_t *src);
/* As ane_region_put_f32 with every value multiplied by scale in fp32 before rounding. */
void ane_region_put_f32_scaled(const AneLayerPlan *p, uint16_t *surface, int id, const float *src, float scale);
/* Writes matrix region `id` of an int8 base from int8 values: q * ANE_INT8_STEP, exact in fp16. */
void ane_region_put_i8(const AneLayerPlan *p, uint16_t *surface, int id, const int8_t *src);
/* Reads region `id` back as n fp16 values (for tests). */
void ane_region_get_f16(const AneLayerPlan *p, const uint16_t *surface, int id, uint16_t *dst);
/* Zeroes region `id`. */
void ane_region_zero(const AneLayerPlan *p, uint16_t *surface, int id);

/* ===== What a run compiles (ane-plan, doctor, tests) =====================================
** A run compiles ANE_KERNELS programs per model (whatever the number of layers), in this order;
** each is evaluated once per layer and sequence (layer_bwd only in training steps). */
typedef enum { ANE_KERNEL_LAYER_FWD, ANE_KERNEL_LAYER_BWD, ANE_KERNELS } AneKernelId;

typedef struct {
    const char *name;   /* "layer_fwd", "layer_bwd" */
    AneShape in, out;   /* [1, channels, 1, spatial] fp16 surfaces */
    char *mil;          /* the MIL text (malloc'd) */
    AneBlob *blobs;     /* its weight files (causal mask, RoPE tables, ...) */
    int n_blobs;
    double flops;       /* matmul-class FLOPs per evaluation */
    int training_only;  /* 1: evaluated in training steps only (forward-only steps skip it) */
} AneKernel;

/* Generates kernel `id` of plan p; free it with ane_kernel_free. */
int ane_kernel_make(const AneLayerPlan *p, AneKernelId id, AneKernel *k, Err *err);
void ane_kernel_free(AneKernel *k);

/* What a step moves across the device boundary, for a model of n_layers layers, batch B, as
** ane.c stages it (bytes are fp16). The base of a frozen plan (LoRA or int8) is staged once per
** run, not per step. */
typedef struct {
    long long evals_per_layer_seq;  /* 2 in training, 1 forward-only */
    long long evals;                /* per step: n_layers * B * evals_per_layer_seq */
    double weight_bytes;            /* weights staged per step (a frozen base: the adapter alone) */
    double base_bytes_once;         /* a frozen base, staged at the first step (0 otherwise) */
    double act_bytes;               /* activations staged per step (x, rstd1, dy, taps, masks) */
    double read_bytes;              /* outputs read back per step */
    double surface_bytes_in;        /* input surfaces the device reads per step (whole surfaces) */
    double surface_bytes_out;       /* output surfaces it writes */
    double flops;                   /* device FLOPs per step */
} AnePlanCost;

void ane_plan_cost(const AneLayerPlan *p, int n_layers, int B, int training, AnePlanCost *c);

/* The additive mask value for keys after the query (large enough that exp underflows to 0 in
** fp32, small enough that adding a score cannot overflow fp16 to -inf). */
#define ANE_MASK_NEG (-30000.0f)

/* An int8 base's matrix values are staged as q * ANE_INT8_STEP and its row scales as
** s / ANE_INT8_STEP: both exact in fp16 (|q| <= 127 has at most 7 significant bits; a power of two
** only moves an fp16 scale's exponent), and the products W x then have the size of y / max|W_row|
** instead of y / s, 128 times smaller, far from fp16's 65504 (kernels.c, "int8 base"). */
#define ANE_INT8_STEP (1.0f / 128.0f)

#endif
