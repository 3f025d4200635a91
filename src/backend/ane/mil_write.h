/*
** mil_write.h — a small MIL text builder with typed helpers, so a kernel generator reads like
** the math it computes (kernels.c).
**
** It writes only the dialect docs/ane-facts.md §2 reports as compiling:
**   program(1.3), the buildInfo line of the seed (maderix/ANE, docs/ane-facts.md §2.1), one
**   `func main<ios18>` with exactly one input
**   tensor<fp16, [1, C, 1, S]> and one output, S a multiple of 32 (the caller's job; checked);
**   the statement form `TYPE NAME = OP(arg = name, ...)[name = string("NAME")];`;
**   every argument a named earlier value; every parameter an explicit const() (int32 scalars,
**   tensor<int32, [N]> vectors, bool, fp16 scalars: no literal shorthand), declared once and
**   shared; fp16 literals as exact hex floats, fp16(0x1.8p-3) (never exponent notation: the
**   strict limits' rule fp16-literal-exponent, docs/ane-facts.md §9); fp16 everywhere (no cast);
**   BLOBFILE constants as canonical single-blob MILBlob files
**   (64-byte storage header, 64-byte metadata record, fp16 data at 128; offset=uint64(64)).
** Ops: slice_by_size, reshape, transpose (only perm [0,1,3,2]), matmul (equal batch dims, no
** broadcast), add/sub/mul (numpy trailing broadcast), pow and mul/add/sub by an fp16 scalar,
** sigmoid, softmax, reduce_sum (keep_dims), concat (interleave false), 1x1 conv with a constant
** weight (groups 1, the seed's static-pipeline form).
** int8 (docs/ane-facts.md §2.2-2.3): constexpr_affine_dequantize of an int8 blob (dtype code 4) with a
** scalar or per-channel fp16 scale and zero_point int8(0) (per-channel is unverified on the
** device: docs/ane-facts.md §7 question 7); quantize (scalar fp16 scale, output_dtype "int8") giving an
** int8 value whose only use is dequantize (scalar fp16 scale). Every other op takes fp16 only.
**
** The writer infers every result type itself (the device requires declared types to equal the
** inferred ones) and checks shapes as it goes. A mistake is a bug in a kernel generator, not bad
** input: the first one is recorded, later calls return an invalid value, and milw_finish
** reports it. Tensors are at most rank 4; the name of every value is "<scope>_<n>".
*/
#ifndef ANETRAIN_ANE_MIL_WRITE_H
#define ANETRAIN_ANE_MIL_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "../../util/err.h"
#include "device.h"

enum { MILW_MAX_RANK = 4 };

/* A tensor value of the program being written: fp16, or int8 when made by milw_quantize (the
** writer remembers which). id < 0: invalid (after an error). */
typedef struct {
    int id;
    int rank;
    int d[MILW_MAX_RANK];
} MilT;

typedef struct MilW MilW;

MilW *milw_create(void);
/* Frees the writer and any blobs not taken with milw_take_blobs. */
void milw_free(MilW *w);

/* Values named after this get "<scope>_<n>" names (scope <= 15 chars; copied). */
void milw_scope(MilW *w, const char *scope);

/* The single input, tensor<fp16, [1, C, 1, S]> x. Call once, first. */
MilT milw_input(MilW *w, int C, int S);

/* x[begin : begin + size] over every dim (rank of x). */
MilT milw_slice(MilW *w, MilT x, const int *begin, const int *size);
/* Row-major reinterpretation to `rank` dims (same element count). */
MilT milw_reshape(MilW *w, MilT x, int rank, const int *dims);
/* Convenience: reshape to the rank-4 shape [a, b, c, d]. */
MilT milw_reshape4(MilW *w, MilT x, int a, int b, int c, int d);
/* Swaps the last two dims (perm [0, 1, 3, 2] at rank 4). */
MilT milw_transpose(MilW *w, MilT x);
/* op(x) @ op(y) over the last two dims; batch dims must be equal. */
MilT milw_matmul(MilW *w, MilT x, int transpose_x, MilT y, int transpose_y);
/* Elementwise with numpy trailing broadcast (ranks equal). */
MilT milw_add(MilW *w, MilT x, MilT y);
MilT milw_sub(MilW *w, MilT x, MilT y);
MilT milw_mul(MilW *w, MilT x, MilT y);
/* With an fp16 scalar const (rounded to fp16 by the writer). */
MilT milw_add_s(MilW *w, MilT x, double s);
MilT milw_mul_s(MilW *w, MilT x, double s);
MilT milw_rsub_s(MilW *w, double s, MilT x); /* s - x: the scalar on the x side, as the seed writes it */
MilT milw_pow_s(MilW *w, MilT x, double e);
MilT milw_sigmoid(MilW *w, MilT x);
/* softmax along `axis` (negative counts from the end). */
MilT milw_softmax(MilW *w, MilT x, int axis);
/* Sum over one axis, keep_dims true. */
MilT milw_reduce_sum(MilW *w, MilT x, int axis);
/* Concatenation of n values along `axis` (interleave false). */
MilT milw_concat(MilW *w, int axis, int n, const MilT *values);
/* A constant fp16 tensor stored in its own blob file "@model_path/weights/<file>" (file is a
** short name such as "mask.bin"); data holds the product of dims floats, rounded to fp16. */
MilT milw_blob(MilW *w, const char *file, int rank, const int *dims, const float *data);

/* 1x1 conv (groups 1, strides 1, no pad): x [1, IC, H, W], weight [OC, IC, 1, 1] a constant
** (milw_blob or milw_affine_dequantize) -> [1, OC, H, W]; out[o] = sum_i weight[o][i] x[i]. */
MilT milw_conv(MilW *w, MilT x, MilT weight);

/* A constant fp16 tensor w = q * scale (zero point 0) from int8 data q (product of dims values,
** row-major) stored in its own int8 blob file "@model_path/weights/<file>":
** constexpr_affine_dequantize with axis `axis` and n_scale = 1 (one scale) or dims[axis]
** (scale[c] for channel c along axis; per-row int8 weights [OC, IC, 1, 1] use axis 0). Scales
** are rounded to fp16 and must be finite and >= 0. */
MilT milw_affine_dequantize(MilW *w, const char *file, int rank, const int *dims, int axis, const int8_t *q,
                            const float *scale, int n_scale);
/* int8 q = clamp(round_half_even(x / scale), -128, 127); scale > 0 (rounded to fp16). */
MilT milw_quantize(MilW *w, MilT x, double scale);
/* fp16 q * scale of an int8 value q from milw_quantize; scale >= 0 (rounded to fp16). */
MilT milw_dequantize(MilW *w, MilT q, double scale);

/* Closes the program with `out` as its output and returns the MIL text (malloc'd), or NULL
** with the first recorded error. The output must be [1, C, 1, S] with S a multiple of 32. */
char *milw_finish(MilW *w, MilT out, Err *err);

/* Moves the blobs written so far to the caller (arrays and data malloc'd; free with
** milw_free_blobs). */
void milw_take_blobs(MilW *w, AneBlob **blobs, int *n_blobs);
void milw_free_blobs(AneBlob *blobs, int n_blobs);

/* Number of statements (ops, not consts) written so far, for reports and tests. */
int milw_op_count(const MilW *w);

/* A canonical single-blob MILBlob file (docs/ane-facts.md §3) holding n fp16 values; malloc'd, *size set. */
unsigned char *milw_blob_file_fp16(const float *data, size_t n, size_t *size);
/* The same for n int8 values: dtype code 4 (Int8), sizeInBytes n, data at 128. */
unsigned char *milw_blob_file_int8(const int8_t *data, size_t n, size_t *size);

#endif
