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

typedef struct {
    int flush_subnormals;   /* constants are rounded with the same rule as results */
    int64_t max_elements;   /* per tensor; 0 = MIL_DEFAULT_MAX_ELEMENTS */
} MilCheckOptions;

#define MIL_DEFAULT_MAX_ELEMENTS ((int64_t)1 << 28) /* 1 GiB of fp32 per tensor */
#define MIL_CONV_MAX_INPUT_CHANNELS 16384           /* maderix/ANE saw 32000 rejected (docs/ane-facts.md §2.5) */
#define MIL_IO_SPATIAL_MULTIPLE 32                  /* our conservative I/O rule */

/* Checks the parsed program against the device's constraints and builds the graph. Takes
** ownership of *ast (also on failure; *ast is left empty). Errors read "MIL L:C: ...". */
int mil_check(MilAst *ast, const AneBlob *blobs, int n_blobs, const MilCheckOptions *opt, MilGraph *g,
              Err *err);
void mil_graph_free(MilGraph *g);

/* ----------------------------------------------------------------- executable program */

typedef struct {
    int accumulate_fp32;    /* see AneEmuOptions */
    int flush_subnormals;
    int64_t max_elements;   /* per tensor; 0 = MIL_DEFAULT_MAX_ELEMENTS */
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
