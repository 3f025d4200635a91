/*
** mil.h — the emulated ANE's view of a MIL program, in three stages:
**
**   mil_parse   (mil_parse.c)  MIL text -> syntax tree (MilAst); syntax errors name line:column
**   mil_check   (mil_check.c)  syntax tree + weight blobs -> checked graph (MilGraph): every
**                              device constraint, shape inference, constants loaded
**   mil_program (mil_exec.c)   checked graph -> plan over preallocated buffers; runs it with
**                              fp16 storage semantics (mil_kernels.c does the arithmetic)
**
** MIL text and blobs are input: nothing in these stages may crash, exit or assert on them;
** every problem becomes an Err naming where it is and what was expected. The compile budget
** and the surfaces live one level up, in device.c.
**
** Shapes are row-major; rank 0 is a scalar (fp16 x = const()...). The emulator stores every
** floating tensor as fp32 holding fp16-representable values, int8 tensors as fp32 holding
** integers, and int32/bool/uint64 constants as int64.
*/
#ifndef ANETRAIN_ANE_EMU_MIL_H
#define ANETRAIN_ANE_EMU_MIL_H

#include <stddef.h>
#include <stdint.h>

#include "../../../util/err.h"
#include "../device.h"

enum { MIL_MAX_RANK = 5 }; /* coremltools' ANE limit (ext); every kernel we write uses <= 4 */

typedef enum {
    MIL_DT_INVALID = 0,
    MIL_DT_FP16, MIL_DT_FP32, MIL_DT_FP64, MIL_DT_BF16,
    MIL_DT_INT8, MIL_DT_UINT8, MIL_DT_INT16, MIL_DT_UINT16,
    MIL_DT_INT32, MIL_DT_UINT32, MIL_DT_INT64, MIL_DT_UINT64,
    MIL_DT_BOOL, MIL_DT_STRING
} MilDtype;

/* "fp16", "int32", ... ("?" for MIL_DT_INVALID). */
const char *mil_dtype_name(MilDtype dt);
/* The dtype keyword spelled by s[0..len), or MIL_DT_INVALID. */
MilDtype mil_dtype_from_name(const char *s, size_t len);

typedef struct {
    MilDtype dtype;
    int is_tensor; /* 0: a scalar type such as `fp16` (rank 0) */
    int rank;
    int64_t dims[MIL_MAX_RANK];
} MilType;

/* Writes e.g. "tensor<fp16, [1, 64, 1, 32]>" or "fp16" into buf; returns buf. */
char *mil_type_format(const MilType *t, char *buf, size_t size);

typedef struct {
    int line, col; /* 1-based; col counts bytes */
} MilPos;

/* ----------------------------------------------------------------- syntax tree */

typedef enum { MIL_EXPR_NAME, MIL_EXPR_LITERAL, MIL_EXPR_TUPLE } MilExprKind;

typedef struct MilExpr MilExpr;
struct MilExpr {
    MilExprKind kind;
    MilPos pos;
    const char *name;  /* NAME: the referenced value */
    /* LITERAL: fp16(0.5), int32(-1), bool(true), string("x"), true, tensor<..>([..]),
    ** tensor<..>(BLOBFILE(path=string(".."), offset=uint64(64))) */
    MilType type;
    int bare;          /* `true`/`false` written without bool(...) */
    double num;        /* numeric scalar (for integer dtypes also in inum) */
    int64_t inum;      /* integer and bool scalars */
    const char *str;   /* string scalar (escapes decoded) */
    int exp_spelled;   /* a float literal (or an item of an inline tensor) written in decimal exponent
                       ** notation, 1e-3: the first one is at exp_pos (mil_check's strict rule
                       ** fp16-literal-exponent; a hex float 0x1p-3 is not exponent notation) */
    MilPos exp_pos;
    int64_t n_items;   /* inline tensor: elements as written */
    double *items;
    int is_blob;       /* tensor from a BLOBFILE */
    const char *blob_path;
    uint64_t blob_offset;
    /* TUPLE: (a, b, ...) */
    int n_elems;
    MilExpr *elems;
};

typedef struct {
    const char *key;
    MilPos pos;
    MilExpr val;
} MilArg;

/* TYPE NAME = OP(args)[attrs]; */
typedef struct {
    MilPos pos; /* of TYPE, where the statement starts */
    MilType type;
    const char *name;
    MilPos name_pos;
    const char *op;
    MilPos op_pos;
    int n_args;
    MilArg *args;
    int n_attrs;
    MilArg *attrs;
} MilStmt;

typedef struct {
    MilType type;
    const char *name;
    MilPos pos;
} MilParam;

typedef struct {
    const char *name;
    MilPos pos;
} MilRet;

typedef struct MilArena MilArena;

typedef struct {
    MilArena *arena;        /* owns everything below */
    const char *version;    /* program(1.3) -> "1.3" */
    MilPos version_pos;
    const char *func_name;  /* "main" */
    MilPos func_pos;
    const char *opset;      /* "ios18" */
    MilPos opset_pos;
    int n_inputs;
    MilParam *inputs;
    int n_stmts;
    MilStmt *stmts;
    int n_outputs;
    MilRet *outputs;
    MilPos outputs_pos;     /* of the `->` */
} MilAst;

/* Parses MIL text (NUL-terminated). On error returns -1 with "MIL L:C: expected X, found Y"
** and leaves *ast empty. mil_ast_free releases everything (safe on an empty ast). */
int mil_parse(const char *text, MilAst *ast, Err *err);
void mil_ast_free(MilAst *ast);

/* ----------------------------------------------------------------- checked graph */

typedef enum {
    MIL_OP_CAST, MIL_OP_CONV, MIL_OP_MATMUL, MIL_OP_SLICE, MIL_OP_RESHAPE, MIL_OP_TRANSPOSE,
    MIL_OP_CONCAT, MIL_OP_SOFTMAX, MIL_OP_ADD, MIL_OP_SUB, MIL_OP_MUL, MIL_OP_POW,
    MIL_OP_REDUCE_SUM, MIL_OP_SIGMOID, MIL_OP_QUANTIZE, MIL_OP_DEQUANTIZE, MIL_OP_SDPA
} MilOpKind;

typedef struct {
    const char *name;   /* as declared (owned by the graph's AST) */
    MilPos pos;
    MilType type;
    int64_t numel;
    int is_const;       /* known at compile time (const, constexpr_affine_dequantize) */
    float *fdata;       /* const fp16/fp32/int8 data (fp16-rounded), numel floats; owned */
    int64_t *idata;     /* const int32/bool/uint64 data, numel values; owned */
    const char *sdata;  /* const string */
} MilValue;

typedef struct {
    MilOpKind kind;
    const char *name;   /* the statement's value name, for messages */
    MilPos pos;
    int out;            /* value index of the result */
    int x, y, z;        /* operand value indices, -1 when unused: x/y for binary ops and matmul,
                        ** x/weight(y) for conv, query/key/value (x/y/z) for sdpa */
    int n_values;       /* concat operands */
    int *values;        /* owned */
    int axis;           /* softmax, concat: normalised to [0, rank) */
    int transpose_x, transpose_y;
    int groups;         /* conv */
    unsigned axes_mask; /* reduce_sum: bit i set = axis i reduced */
    int keep_dims;
    int64_t begin[MIL_MAX_RANK]; /* slice_by_size */
    int perm[MIL_MAX_RANK];      /* transpose: out dim i = in dim perm[i] */
    float scale;        /* quantize, dequantize */
} MilOp;

typedef struct {
    MilAst ast;         /* the names point into it */
    int n_values;
    MilValue *values;
    int n_ops;          /* the ops to run, in program order (constants are values, not ops) */
    MilOp *ops;
    int input, output;  /* value indices */
} MilGraph;

/* ----------------------------------------------------------------- the rules (device limits) */

/* Every limit the checker enforces is a named rule; a program that breaks one is refused with
** "rule NAME: ..." naming the value and its type. docs/ane-facts.md §9 gives each rule's
** source. Hard rules and measured limits apply in every mode; conventions (what every working
** reference does, never shown to be required) only under ANE_LIMITS_STRICT. */
typedef enum {
    /* hard rules: the dialect the seed's programs use, checked in every mode */
    MIL_RULE_PROGRAM_FORM,        /* program(1.3), one function main<ios18> */
    MIL_RULE_ONE_INPUT,           /* exactly one input (multi-input requests fail with 0x1d) */
    MIL_RULE_ONE_OUTPUT,          /* exactly one output */
    MIL_RULE_IO_FP16,             /* fp16 input and output */
    MIL_RULE_IO_SHAPE,            /* input and output [1, C, 1, S] */
    MIL_RULE_IO_WIDTH_32,         /* S a multiple of 32 */
    MIL_RULE_KNOWN_OP,            /* an op of the reported set */
    MIL_RULE_NAMED_ARGS,          /* arguments name earlier values (no inline literal shorthand) */
    MIL_RULE_CONV_CONST_WEIGHT,   /* conv weights are constants */
    MIL_RULE_CONV_1X1,            /* conv: 1x1 kernel, strides and dilations 1, no pad */
    MIL_RULE_CONV_CHANNELS,       /* conv: at most MIL_CONV_MAX_INPUT_CHANNELS input channels */
    MIL_RULE_SDPA_NO_MASK,        /* scaled_dot_product_attention without attn_mask */
    MIL_RULE_CONCAT_NO_INTERLEAVE,/* concat with interleave = false */
    MIL_RULE_BLOB_FORMAT,         /* BLOBFILE constants in the MILBlob format */
    MIL_RULE_INT8_DEQUANTIZE_ONLY,/* an int8 tensor only feeds dequantize */
    MIL_RULE_QUANT_FORM,          /* (de)quantize: one fp16 scale, no zero_point or axis */
    MIL_RULE_FP16_RANGE,          /* fp16 literals are finite fp16 values (the parser's) */
    MIL_RULE_EMU_ELEMENTS,        /* the emulator's memory cap per tensor (not a device limit) */
    /* measured to fail on real chips: every mode */
    MIL_RULE_INPUT_WIDTH,         /* the input is at most MIL_MAX_INPUT_WIDTH wide */
    MIL_RULE_AXIS_65536,          /* no axis of any tensor above MIL_MAX_AXIS_PROBED */
    /* conventions: strict only */
    MIL_RULE_AXIS_16384,          /* no axis of any tensor above MIL_MAX_AXIS_STRICT */
    MIL_RULE_SLICE_ALIGN,         /* slice_by_size begins on the innermost axis at multiples of 32 */
    MIL_RULE_FP16_EXPONENT,       /* fp16 literals are not written in exponent notation */
    MIL_RULE_NO_CAST,             /* no cast (fp16 in, fp16 out, fp16 throughout) */
    MIL_RULE_COUNT
} MilRuleId;

typedef enum { MIL_RULE_HARD, MIL_RULE_MEASURED, MIL_RULE_CONVENTION } MilRuleKind;

typedef struct {
    const char *name;   /* "input-width", as printed in refusals */
    MilRuleKind kind;   /* MIL_RULE_CONVENTION: checked under ANE_LIMITS_STRICT only */
    const char *what;   /* the rule in one line */
    const char *source; /* where it comes from (public references; docs/ane-facts.md §9) */
} MilRule;

const MilRule *mil_rule(MilRuleId id);
/* The rule called name, or NULL. */
const MilRule *mil_rule_by_name(const char *name);
/* 1 when rule id is checked under `limits`. */
int mil_rule_applies(MilRuleId id, AneLimits limits);

#define MIL_MAX_INPUT_WIDTH 16384   /* rustane#13: 16384 compiles, 17920 fails (M3 Ultra) */
#define MIL_MAX_AXIS_PROBED 65536   /* ANEForge PR #57: an axis above 65536 fails to compile */
#define MIL_MAX_AXIS_STRICT 16384   /* strict: the measured input width, on every axis of every tensor */
#define MIL_SLICE_ALIGN 32          /* strict: innermost-axis slice offsets, as every reference writes them */

/* What the checker saw, for reports (ane-plan, doctor): filled in on success and on failure. */
typedef struct {
    const char *rule;         /* the rule a refused program broke (NULL: accepted, or refused for
                              ** something that is not a limit, e.g. an undefined name) */
    int64_t max_axis;         /* the largest axis of any tensor checked so far */
    char max_axis_value[64];  /* the value it belongs to */
    MilType max_axis_type;
    int n_ops, n_values;
} MilCheckReport;

typedef struct {
    int flush_subnormals;     /* constants are rounded with the same rule as results */
    int64_t max_elements;     /* per tensor; 0 = MIL_DEFAULT_MAX_ELEMENTS */
    AneLimits limits;         /* ANE_LIMITS_STRICT (0, the default) or ANE_LIMITS_PROBED */
    MilCheckReport *report;   /* optional */
} MilCheckOptions;

#define MIL_DEFAULT_MAX_ELEMENTS ((int64_t)1 << 28) /* 1 GiB of fp32 per tensor */
#define MIL_CONV_MAX_INPUT_CHANNELS 16384           /* maderix/ANE saw 32000 rejected (docs/ane-facts.md §2.5) */
#define MIL_IO_SPATIAL_MULTIPLE 32                  /* our conservative I/O rule */

/* Checks the parsed program against the device's constraints and builds the graph. Takes
** ownership of *ast (also on failure; *ast is left empty). Errors read "MIL L:C: ...". */
int mil_check(MilAst *ast, const AneBlob *blobs, int n_blobs, const MilCheckOptions *opt, MilGraph *g,
              Err *err);
void mil_graph_free(MilGraph *g);

/* Parses and checks MIL text without keeping the graph (the darwin device's preflight, ane-plan):
** 0 when the program passes, with its I/O shapes in *in and *out (either may be NULL). */
int mil_check_text(const char *text, const AneBlob *blobs, int n_blobs, const MilCheckOptions *opt, AneShape *in,
                   AneShape *out, Err *err);

/* ----------------------------------------------------------------- executable program */

typedef struct {
    int accumulate_fp32;    /* see AneEmuOptions */
    int flush_subnormals;
    int64_t max_elements;   /* per tensor; 0 = MIL_DEFAULT_MAX_ELEMENTS */
    AneLimits limits;       /* the checker's rules (default ANE_LIMITS_STRICT) */
} MilOptions;

typedef struct MilProgram MilProgram;

/* Parses, checks and plans: every buffer is allocated here. */
MilProgram *mil_program_compile(const char *text, const AneBlob *blobs, int n_blobs, const MilOptions *opt,
                                Err *err);
/* in: fp16 [1,C,1,S] of the input; out: fp16 of the output. No allocation. Not re-entrant:
** one program must not run on two threads at once. */
int mil_program_run(MilProgram *p, const uint16_t *in, uint16_t *out, Err *err);
void mil_program_io(const MilProgram *p, AneShape *in, AneShape *out);
/* Bytes of the intermediate buffers and of the constants (for reports and tests). */
size_t mil_program_buffer_bytes(const MilProgram *p);
size_t mil_program_const_bytes(const MilProgram *p);
void mil_program_free(MilProgram *p);

/* ----------------------------------------------------------------- kernels (mil_kernels.c) */

/* The arithmetic of one op over buffers planned by mil_exec.c; `vals` gives shapes and
** `bufs` the data of every value. scratch: per-op buffer sized by mil_kernel_scratch. */
typedef struct {
    int accumulate_fp32;
    int flush_subnormals;
} MilKernelOptions;

size_t mil_kernel_scratch_floats(const MilOp *op, const MilValue *vals);
void mil_kernel_run(const MilOp *op, const MilValue *vals, float *const *bufs, float *scratch,
                    const MilKernelOptions *opt);

#endif
