/*
** mil_kernels.c — the arithmetic of every op the emulated ANE runs, with fp16 storage:
** operands are fp32 arrays holding fp16 values, each op computes in fp32 and rounds every
** result element to fp16 once (fp16_round: nearest-even, overflow to inf, subnormals kept
** unless flush_subnormals).
**
** Per op (x, y operands; "round" = fp16_round):
**   add/sub/mul      round(x op y) in fp32. fp32 has 24 >= 2*11+2 bits, so this equals the
**                    correctly rounded fp16 operation (no double-rounding error).
**   pow              round(powf(x, y)); y == -0.5 is 1/sqrtf(x), 0.5 sqrtf, 1 x, 2 x*x.
**   sigmoid          round(1 / (1 + expf(-x))).
**   softmax(axis)    fp32 throughout from the fp16 inputs: m = max, e = expf(x - m),
**                    round(e / sum(e)). Internals are fp32 in both accumulation modes.
**   reduce_sum       fp32 sum, rounded once (accumulate_fp32 = 1), or the running sum rounded
**                    to fp16 after every chunk of 32 addends (accumulate_fp32 = 0).
**   matmul, conv     BLAS sgemm on the fp32 copies (fp32 accumulation), rounded once; with
**                    accumulate_fp32 = 0 the K dimension is split into chunks of 32: the
**                    products and partial sums inside a chunk are fp32, the running sum is
**                    rounded to fp16 after each chunk (our model of fp16 accumulation).
**   quantize         q = clamp(rne(x / scale), -128, 127) stored as an exact float (+0 for
**                    zero: int8 has no -0); NaN -> 0, +-inf saturate. Rounding is of the exact
**                    quotient: CoreML's definition is clip(round(input / scale)) with numpy's
**                    round-half-even and saturation to the int8 range; its reference
**                    implementation divides in the input dtype (fp16), which would round the
**                    quotient to fp16 first, while the device's order is unknown: we take the
**                    single rounding of the mathematical quotient. The fp32 division gives it:
**                    a quotient of two fp16 values that is not a half-integer h (|h| <= 128)
**                    lies at least 2^-13 from h, far above fp32's error there (2^-17).
**   dequantize       round(q * scale) (exact in fp32: 8 x 11 significant bits).
**   sdpa             s = round(fp32(q k^T) * (1/sqrt(E))), p = softmax rows, round(p v).
**   slice, transpose, concat: exact copies. reshape and cast are aliases (mil_exec.c).
**
** Rounding-to-nearest of the FP environment is assumed (as in fp16.h). Big loops run on the
** thread pool (util/parallel.h), matrix products as fixed tiles of single-threaded BLAS calls on
** it (blas_sgemm_tiled: the result never depends on threads); nothing here allocates: per-op scratch is
** sized by mil_kernel_scratch_floats and allocated at compile time.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../../util/blas.h"
#include "../../../util/parallel.h"
#include "../../../util/fp16.h"
#include "mil.h"

enum { PAR_MIN = 1 << 15 };  /* elements below which a loop stays on the calling thread */
enum { ACC_CHUNK = 32 };     /* addends per fp16 rounding when accumulate_fp32 = 0 */
enum { COL_BLOCK = 64 };     /* columns processed together by strided reductions */

/* Runs fn over [0, n) on the pool when the work (n items of `weight` elements) is big. */
static void par_for(int64_t n, int64_t weight, ParallelFn fn, void *ctx) {
    if (n <= 0) return;
    if (n == 1 || n * weight < PAR_MIN || parallel_threads() <= 1)
        fn(ctx, 0, (int)n, 0);
    else
        parallel_for((int)n, fn, ctx);
}

static void strides_of(const MilType *t, int64_t *s) {
    int64_t acc = 1;
    for (int i = t->rank - 1; i >= 0; i--) {
        s[i] = acc;
        acc *= t->dims[i];
    }
}

/* ------------------------------------------------------------------ rounding in bulk */

typedef struct {
    float *x;
    int flush;
} RoundJob;

enum { ROUND_BLOCK = 4096 };

static void round_worker(void *ctx, int b, int e, int w) {
    (void)w;
    RoundJob *j = ctx;
    fp16_round_array(j->x + (size_t)b * ROUND_BLOCK, (size_t)(e - b) * ROUND_BLOCK, j->flush);
}

/* x[0..n) = round(x); blocks of 4096 on the pool. */
static void round_all(float *x, int64_t n, int flush) {
    int64_t blocks = n / ROUND_BLOCK;
    RoundJob j = {x, flush};
    par_for(blocks, ROUND_BLOCK, round_worker, &j);
    fp16_round_array(x + blocks * ROUND_BLOCK, (size_t)(n - blocks * ROUND_BLOCK), flush);
}

/* ------------------------------------------------------------------ gemm with fp16 storage */

/* C[M][N] (row stride ldc) = round(op(A) op(B)), A [M][K] (or [K][M] when ta), B [K][N] (or
** [N][K] when tb), with the accumulation rule of the header. */
static void gemm_round(const MilKernelOptions *o, int ta, int tb, int M, int N, int K, const float *A, int lda,
                       const float *B, int ldb, float *C, int ldc) {
    if (o->accumulate_fp32 || K <= ACC_CHUNK) {
        blas_sgemm_tiled(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc, 1);
        if (ldc == N) {
            round_all(C, (int64_t)M * N, o->flush_subnormals);
        } else {
            for (int i = 0; i < M; i++) fp16_round_array(C + (size_t)i * ldc, (size_t)N, o->flush_subnormals);
        }
        return;
    }
    for (int k0 = 0; k0 < K; k0 += ACC_CHUNK) {
        int kc = K - k0 < ACC_CHUNK ? K - k0 : ACC_CHUNK;
        const float *a = ta ? A + (size_t)k0 * lda : A + k0;
        const float *b = tb ? B + k0 : B + (size_t)k0 * ldb;
        blas_sgemm_tiled(ta, tb, M, N, kc, 1.0f, a, lda, b, ldb, k0 ? 1.0f : 0.0f, C, ldc, 1);
        for (int i = 0; i < M; i++) fp16_round_array(C + (size_t)i * ldc, (size_t)N, o->flush_subnormals);
    }
}

/* ------------------------------------------------------------------ strided copies */

typedef struct {
    float *dst;
    const float *src;
    int rank;               /* after coalescing, >= 1 */
    int64_t dims[MIL_MAX_RANK], ds[MIL_MAX_RANK], ss[MIL_MAX_RANK];
    int p;                  /* transpose mode: the dim whose source stride is 1 */
    int64_t tiles_p;        /* transpose mode: tiles along dim p */
} CopyJob;

enum { TILE = 32 };

/* Offsets of linear index idx over dims[0..n) (row-major) in two stride systems. */
static void offsets_of(int64_t idx, const int64_t *dims, int n, const int64_t *s1, const int64_t *s2, int64_t *o1,
                       int64_t *o2) {
    int64_t a = 0, b = 0;
    for (int i = n - 1; i >= 0; i--) {
        int64_t q = idx / dims[i], r = idx - q * dims[i];
        a += r * s1[i];
        b += r * s2[i];
        idx = q;
    }
    *o1 = a;
    *o2 = b;
}

/* Row mode: rows over dims[0..rank-1), each row dims[rank-1] elements with strides ds/ss. */
static void copy_rows_worker(void *ctx, int b, int e, int w) {
    (void)w;
    const CopyJob *j = ctx;
    int r = j->rank;
    int64_t n = j->dims[r - 1], dsi = j->ds[r - 1], ssi = j->ss[r - 1];
    for (int64_t row = b; row < e; row++) {
        int64_t od, os;
        offsets_of(row, j->dims, r - 1, j->ds, j->ss, &od, &os);
        float *d = j->dst + od;
        const float *s = j->src + os;
        if (dsi == 1 && ssi == 1) {
            memcpy(d, s, (size_t)n * sizeof *d);
        } else {
            for (int64_t i = 0; i < n; i++) d[i * dsi] = s[i * ssi];
        }
    }
}

/* Transpose mode: dst's last dim is contiguous, src's dim p is contiguous; tiles of 32x32. */
static void copy_tiles_worker(void *ctx, int b, int e, int w) {
    (void)w;
    const CopyJob *j = ctx;
    int r = j->rank, p = j->p;
    /* The outer dims: all but p and r-1, in order. */
    int64_t odims[MIL_MAX_RANK], ods[MIL_MAX_RANK], oss[MIL_MAX_RANK];
    int no = 0;
    for (int i = 0; i < r - 1; i++)
        if (i != p) odims[no] = j->dims[i], ods[no] = j->ds[i], oss[no] = j->ss[i], no++;
    int64_t np = j->dims[p], nl = j->dims[r - 1], dsp = j->ds[p], ssl = j->ss[r - 1];
    for (int64_t item = b; item < e; item++) {
        int64_t outer = item / j->tiles_p, tp = item % j->tiles_p;
        int64_t od, os;
        offsets_of(outer, odims, no, ods, oss, &od, &os);
        int64_t p0 = tp * TILE, p1 = p0 + TILE < np ? p0 + TILE : np;
        for (int64_t l0 = 0; l0 < nl; l0 += TILE) {
            int64_t l1 = l0 + TILE < nl ? l0 + TILE : nl;
            for (int64_t ip = p0; ip < p1; ip++) {
                float *d = j->dst + od + ip * dsp;
                const float *s = j->src + os + ip;
                for (int64_t il = l0; il < l1; il++) d[il] = s[il * ssl];
            }
        }
    }
}

/* dst[i...] = src[i...] over dims, both with arbitrary element strides. */
static void copy_nd(float *dst, const int64_t *dstr, const float *src, const int64_t *sstr, const int64_t *dims,
                    int rank) {
    CopyJob j;
    memset(&j, 0, sizeof j);
    j.dst = dst;
    j.src = src;
    for (int i = 0; i < rank; i++) {
        if (dims[i] == 1) continue;
        if (j.rank > 0 && j.ds[j.rank - 1] == dstr[i] * dims[i] && j.ss[j.rank - 1] == sstr[i] * dims[i]) {
            j.dims[j.rank - 1] *= dims[i]; /* merge into the previous dim */
            j.ds[j.rank - 1] = dstr[i];
            j.ss[j.rank - 1] = sstr[i];
            continue;
        }
        j.dims[j.rank] = dims[i];
        j.ds[j.rank] = dstr[i];
        j.ss[j.rank] = sstr[i];
        j.rank++;
    }
    if (j.rank == 0) {
        *dst = *src;
        return;
    }
    int r = j.rank;
    j.p = -1;
    if (j.ds[r - 1] == 1 && j.ss[r - 1] != 1)
        for (int i = 0; i < r - 1; i++)
            if (j.ss[i] == 1) j.p = i;
    if (j.p >= 0 && j.dims[r - 1] >= 4) {
        int64_t outer = 1;
        for (int i = 0; i < r - 1; i++)
            if (i != j.p) outer *= j.dims[i];
        j.tiles_p = (j.dims[j.p] + TILE - 1) / TILE;
        par_for(outer * j.tiles_p, TILE * j.dims[r - 1], copy_tiles_worker, &j);
        return;
    }
    int64_t rows = 1;
    for (int i = 0; i < r - 1; i++) rows *= j.dims[i];
    par_for(rows, j.dims[r - 1], copy_rows_worker, &j);
}

/* ------------------------------------------------------------------ elementwise binary */

typedef struct {
    MilOpKind kind;
    float *out;
    const float *x, *y;
    int rank;
    int64_t dims[MIL_MAX_RANK], xs[MIL_MAX_RANK], ys[MIL_MAX_RANK], os[MIL_MAX_RANK];
    float pow_y;     /* the exponent when y is a scalar const */
    int pow_scalar;
    int flush;
} BinJob;

/* The four stride cases (0 = broadcast, 1 = contiguous); contiguous ones in fixed blocks of
** 16 so compilers vectorize them at -O2. a, b: the operands; EXPR: the fp32 result. */
#define BIN_LOOP(EXPR)                                                                                              \
    do {                                                                                                            \
        int64_t i = 0;                                                                                              \
        if (sx == 1 && sy == 1) {                                                                                   \
            for (; i + 16 <= n; i += 16)                                                                            \
                for (int k = 0; k < 16; k++) { float a = x[i + k], b = y[i + k]; o[i + k] = (EXPR); }               \
            for (; i < n; i++) { float a = x[i], b = y[i]; o[i] = (EXPR); }                                         \
        } else if (sx == 1 && sy == 0) {                                                                            \
            for (; i + 16 <= n; i += 16)                                                                            \
                for (int k = 0; k < 16; k++) { float a = x[i + k], b = y[0]; o[i + k] = (EXPR); }                   \
            for (; i < n; i++) { float a = x[i], b = y[0]; o[i] = (EXPR); }                                         \
        } else if (sx == 0 && sy == 1) {                                                                            \
            for (; i + 16 <= n; i += 16)                                                                            \
                for (int k = 0; k < 16; k++) { float a = x[0], b = y[i + k]; o[i + k] = (EXPR); }                   \
            for (; i < n; i++) { float a = x[0], b = y[i]; o[i] = (EXPR); }                                         \
        } else {                                                                                                    \
            for (; i < n; i++) { float a = x[i * sx], b = y[i * sy]; o[i] = (EXPR); }                               \
        }                                                                                                           \
    } while (0)

static void bin_row(const BinJob *j, float *restrict o, const float *restrict x, int64_t sx, const float *restrict y,
                    int64_t sy, int64_t n) {
    switch (j->kind) {
    case MIL_OP_ADD: BIN_LOOP(a + b); break;
    case MIL_OP_SUB: BIN_LOOP(a - b); break;
    case MIL_OP_MUL: BIN_LOOP(a * b); break;
    default:
        if (j->pow_scalar && j->pow_y == -0.5f) BIN_LOOP(((void)b, 1.0f / sqrtf(a)));
        else if (j->pow_scalar && j->pow_y == 0.5f) BIN_LOOP(((void)b, sqrtf(a)));
        else if (j->pow_scalar && j->pow_y == 1.0f) BIN_LOOP(((void)b, a));
        else if (j->pow_scalar && j->pow_y == 2.0f) BIN_LOOP(((void)b, a * a));
        else BIN_LOOP(powf(a, b));
        break;
    }
    fp16_round_array(o, (size_t)n, j->flush);
}

/* Works over linear output elements [b*B, e*B) in rows of the innermost dim. */
enum { BIN_BLOCK = 2048 };

static void bin_worker(void *ctx, int b, int e, int w) {
    (void)w;
    const BinJob *j = ctx;
    int r = j->rank;
    int64_t total = j->os[0] * j->dims[0];
    int64_t pos = (int64_t)b * BIN_BLOCK, end = (int64_t)e * BIN_BLOCK;
    if (end > total) end = total;
    int64_t inner = j->dims[r - 1];
    while (pos < end) {
        int64_t row = pos / inner, col = pos - row * inner;
        int64_t ox, oy;
        offsets_of(row, j->dims, r - 1, j->xs, j->ys, &ox, &oy);
        int64_t n = inner - col < end - pos ? inner - col : end - pos;
        bin_row(j, j->out + pos, j->x + ox + col * j->xs[r - 1], j->xs[r - 1], j->y + oy + col * j->ys[r - 1],
                j->ys[r - 1], n);
        pos += n;
    }
}

/* out = x (+|-|*|pow) y, numpy broadcasting: x, y broadcast to out's shape (rank <= 5). */
static void run_binary(const MilOp *op, const MilValue *vals, float *const *bufs, const MilKernelOptions *o) {
    const MilType *ot = &vals[op->out].type, *xt = &vals[op->x].type, *yt = &vals[op->y].type;
    BinJob j;
    memset(&j, 0, sizeof j);
    j.kind = op->kind;
    j.out = bufs[op->out];
    j.x = bufs[op->x];
    j.y = bufs[op->y];
    j.flush = o->flush_subnormals;
    if (op->kind == MIL_OP_POW && vals[op->y].is_const && vals[op->y].numel == 1) {
        j.pow_scalar = 1;
        j.pow_y = vals[op->y].fdata[0];
    }
    /* Strides of x and y over the output's dims (0 where broadcast), then coalesce. */
    int r = ot->rank;
    int64_t xs[MIL_MAX_RANK], ys[MIL_MAX_RANK], xstr[MIL_MAX_RANK], ystr[MIL_MAX_RANK];
    strides_of(xt, xstr);
    strides_of(yt, ystr);
    for (int i = 0; i < r; i++) {
        int ix = i - (r - xt->rank), iy = i - (r - yt->rank);
        xs[i] = ix >= 0 && xt->dims[ix] != 1 ? xstr[ix] : 0;
        ys[i] = iy >= 0 && yt->dims[iy] != 1 ? ystr[iy] : 0;
    }
    for (int i = 0; i < r; i++) {
        if (ot->dims[i] == 1) continue;
        int k = j.rank;
        if (k > 0 && j.xs[k - 1] == xs[i] * ot->dims[i] && j.ys[k - 1] == ys[i] * ot->dims[i]) {
            j.dims[k - 1] *= ot->dims[i];
            j.xs[k - 1] = xs[i];
            j.ys[k - 1] = ys[i];
            continue;
        }
        j.dims[k] = ot->dims[i];
        j.xs[k] = xs[i];
        j.ys[k] = ys[i];
        j.rank++;
    }
    if (j.rank == 0) { /* a single element */
        j.rank = 1;
        j.dims[0] = 1;
        j.xs[0] = j.ys[0] = 0;
    }
    int64_t acc = 1;
    for (int i = j.rank - 1; i >= 0; i--) {
        j.os[i] = acc;
        acc *= j.dims[i];
    }
    par_for((acc + BIN_BLOCK - 1) / BIN_BLOCK, BIN_BLOCK, bin_worker, &j);
}

/* ------------------------------------------------------------------ unary, quantize */

typedef struct {
    const MilOp *op;
    float *out;
    const float *x;
    int64_t n;
    int flush;
} UnaryJob;

static void unary_worker(void *ctx, int b, int e, int w) {
    (void)w;
    const UnaryJob *j = ctx;
    int64_t lo = (int64_t)b * BIN_BLOCK, hi = (int64_t)e * BIN_BLOCK;
    if (hi > j->n) hi = j->n;
    float *o = j->out;
    const float *x = j->x;
    float s = j->op->scale;
    switch (j->op->kind) {
    case MIL_OP_SIGMOID:
        for (int64_t i = lo; i < hi; i++) o[i] = 1.0f / (1.0f + expf(-x[i]));
        fp16_round_array(o + lo, (size_t)(hi - lo), j->flush);
        break;
    case MIL_OP_QUANTIZE:
        for (int64_t i = lo; i < hi; i++) {
            float v = x[i] / s;
            v = v < -128.0f ? -128.0f : v;
            v = v > 127.0f ? 127.0f : v;
            v = (v + 0x1.8p23f) - 0x1.8p23f; /* round to nearest even, exact for |v| < 2^22 */
            o[i] = v == v ? v + 0.0f : 0.0f; /* NaN -> 0; -0 + 0 = +0 */
        }
        break;
    case MIL_OP_DEQUANTIZE:
        for (int64_t i = lo; i < hi; i++) o[i] = x[i] * s;
        fp16_round_array(o + lo, (size_t)(hi - lo), j->flush);
        break;
    default:
        break;
    }
}

/* out = f(x), same shape: sigmoid, quantize (fp16 -> int8 values), dequantize (int8 -> fp16). */
static void run_unary(const MilOp *op, const MilValue *vals, float *const *bufs, const MilKernelOptions *o) {
    int64_t n = vals[op->out].numel;
    UnaryJob j = {op, bufs[op->out], bufs[op->x], n, o->flush_subnormals};
    par_for((n + BIN_BLOCK - 1) / BIN_BLOCK, BIN_BLOCK, unary_worker, &j);
}

/* ------------------------------------------------------------------ softmax */

typedef struct {
    float *out;
    const float *x;
    int64_t outer, n, inner, blocks;
    int flush;
} SoftmaxJob;

/* inner == 1: items are rows of n contiguous elements. */
static void softmax_rows_worker(void *ctx, int b, int e, int w) {
    (void)w;
    const SoftmaxJob *j = ctx;
    int64_t n = j->n;
    for (int64_t r = b; r < e; r++) {
        const float *x = j->x + r * n;
        float *o = j->out + r * n;
        float m = -INFINITY;
        for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
        if (m == -INFINITY) m = 0.0f; /* all -inf: exp gives 0s, the division NaNs, as IEEE says */
        float sum = 0.0f;
        for (int64_t i = 0; i < n; i++) {
            o[i] = expf(x[i] - m);
            sum += o[i];
        }
        for (int64_t i = 0; i < n; i++) o[i] = o[i] / sum;
        fp16_round_array(o, (size_t)n, j->flush);
    }
}

/* inner > 1: items are (outer, block of up to 64 columns); rows of the block are strided. */
static void softmax_cols_worker(void *ctx, int b, int e, int w) {
    (void)w;
    const SoftmaxJob *j = ctx;
    int64_t n = j->n, inner = j->inner;
    for (int64_t item = b; item < e; item++) {
        int64_t ou = item / j->blocks, c0 = (item % j->blocks) * COL_BLOCK;
        int64_t cw = inner - c0 < COL_BLOCK ? inner - c0 : COL_BLOCK;
        const float *x = j->x + ou * n * inner + c0;
        float *o = j->out + ou * n * inner + c0;
        float m[COL_BLOCK], sum[COL_BLOCK];
        for (int64_t c = 0; c < cw; c++) m[c] = -INFINITY, sum[c] = 0.0f;
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < cw; c++) m[c] = x[r * inner + c] > m[c] ? x[r * inner + c] : m[c];
        for (int64_t c = 0; c < cw; c++) m[c] = m[c] == -INFINITY ? 0.0f : m[c];
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < cw; c++) {
                float v = expf(x[r * inner + c] - m[c]);
                o[r * inner + c] = v;
                sum[c] += v;
            }
        for (int64_t r = 0; r < n; r++) {
            for (int64_t c = 0; c < cw; c++) o[r * inner + c] /= sum[c];
            fp16_round_array(o + r * inner, (size_t)cw, j->flush);
        }
    }
}

/* x viewed as [outer][n][inner]: softmax over n for each (outer, inner). */
static void softmax_run(float *out, const float *x, int64_t outer, int64_t n, int64_t inner, int flush) {
    SoftmaxJob j = {out, x, outer, n, inner, 0, flush};
    if (inner == 1) {
        par_for(outer, n, softmax_rows_worker, &j);
    } else {
        j.blocks = (inner + COL_BLOCK - 1) / COL_BLOCK;
        par_for(outer * j.blocks, n * COL_BLOCK, softmax_cols_worker, &j);
    }
}

/* out = softmax(x) along op->axis, same shape. */
static void run_softmax(const MilOp *op, const MilValue *vals, float *const *bufs, const MilKernelOptions *o) {
    const MilType *t = &vals[op->x].type;
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < op->axis; i++) outer *= t->dims[i];
    for (int i = op->axis + 1; i < t->rank; i++) inner *= t->dims[i];
    softmax_run(bufs[op->out], bufs[op->x], outer, t->dims[op->axis], inner, o->flush_subnormals);
}

/* ------------------------------------------------------------------ reduce_sum */

typedef struct {
    float *out;
    const float *x;
    int nk, nr;                  /* kept dims (excluding the block dim in block mode), reduced dims */
    int64_t kd[MIL_MAX_RANK], ks[MIL_MAX_RANK], kos[MIL_MAX_RANK]; /* dims, input strides, output strides */
    int64_t rd[MIL_MAX_RANK], rs[MIL_MAX_RANK];
    int64_t n_red;
    int64_t width;               /* block mode: the innermost (contiguous, kept) dim; else 1 */
    int64_t blocks;              /* column blocks per kept row */
    int acc32, flush;
} ReduceJob;

static void reduce_worker(void *ctx, int b, int e, int w) {
    (void)w;
    const ReduceJob *j = ctx;
    for (int64_t item = b; item < e; item++) {
        int64_t row = item / j->blocks, c0 = (item % j->blocks) * COL_BLOCK;
        int64_t cw = j->width - c0 < COL_BLOCK ? j->width - c0 : COL_BLOCK;
        int64_t ox, oo;
        offsets_of(row, j->kd, j->nk, j->ks, j->kos, &ox, &oo);
        const float *x = j->x + ox + c0;
        float acc[COL_BLOCK];
        for (int64_t c = 0; c < cw; c++) acc[c] = 0.0f;
        int64_t idx[MIL_MAX_RANK] = {0}, off = 0;
        for (int64_t t = 0; t < j->n_red; t++) {
            for (int64_t c = 0; c < cw; c++) acc[c] += x[off + c];
            if (!j->acc32 && (t + 1) % ACC_CHUNK == 0)
                for (int64_t c = 0; c < cw; c++) acc[c] = fp16_round(acc[c], j->flush);
            /* odometer over the reduced dims */
            for (int d = j->nr - 1; d >= 0; d--) {
                off += j->rs[d];
                if (++idx[d] < j->rd[d]) break;
                off -= j->rs[d] * j->rd[d];
                idx[d] = 0;
            }
        }
        float *o = j->out + oo + c0;
        for (int64_t c = 0; c < cw; c++) o[c] = fp16_round(acc[c], j->flush);
    }
}

/* out = sum of x over the axes in op->axes_mask: kept dims in order (reduced ones as 1 with
** keep_dims, which does not change the layout). */
static void run_reduce_sum(const MilOp *op, const MilValue *vals, float *const *bufs, const MilKernelOptions *o) {
    const MilType *t = &vals[op->x].type;
    ReduceJob j;
    memset(&j, 0, sizeof j);
    j.out = bufs[op->out];
    j.x = bufs[op->x];
    j.acc32 = o->accumulate_fp32;
    j.flush = o->flush_subnormals;
    int64_t s[MIL_MAX_RANK];
    strides_of(t, s);
    int r = t->rank, last_kept = !(op->axes_mask & (1u << (r - 1)));
    j.width = last_kept ? t->dims[r - 1] : 1;
    j.n_red = 1;
    for (int i = 0; i < r; i++) {
        if (op->axes_mask & (1u << i)) {
            j.rd[j.nr] = t->dims[i];
            j.rs[j.nr] = s[i];
            j.nr++;
            j.n_red *= t->dims[i];
        } else if (!(last_kept && i == r - 1)) {
            j.kd[j.nk] = t->dims[i];
            j.ks[j.nk] = s[i];
            j.nk++;
        }
    }
    /* Output strides of the kept dims (the output is the kept dims in order, row-major). */
    int64_t acc = j.width;
    for (int i = j.nk - 1; i >= 0; i--) {
        j.kos[i] = acc;
        acc *= j.kd[i];
    }
    int64_t rows = acc / j.width;
    j.blocks = (j.width + COL_BLOCK - 1) / COL_BLOCK;
    par_for(rows * j.blocks, j.n_red * (j.width < COL_BLOCK ? j.width : COL_BLOCK), reduce_worker, &j);
}

/* ------------------------------------------------------------------ matmul, conv, sdpa */

/* Element offsets of batch index b of `t` (a matmul operand) broadcast to the output batch. */
static void matmul_batch_strides(const MilType *ot, const MilType *t, int64_t *bs) {
    int rb = ot->rank - 2, tb = t->rank - 2;
    int64_t s[MIL_MAX_RANK];
    strides_of(t, s);
    for (int i = 0; i < rb; i++) {
        int k = i - (rb - tb);
        bs[i] = k >= 0 && t->dims[k] != 1 ? s[k] : 0;
    }
}

/* x [bx..., M, K] (or [bx..., K, M] with transpose_x) @ y [by..., K, N] (or [by..., N, K]) ->
** out [b..., M, N], batch dims broadcast; one sgemm per output batch. */
static void run_matmul(const MilOp *op, const MilValue *vals, float *const *bufs, const MilKernelOptions *o) {
    const MilType *ot = &vals[op->out].type, *xt = &vals[op->x].type, *yt = &vals[op->y].type;
    int rb = ot->rank - 2;
    int M = (int)ot->dims[rb], N = (int)ot->dims[rb + 1];
    int K = (int)(op->transpose_x ? xt->dims[xt->rank - 2] : xt->dims[xt->rank - 1]);
    int64_t xb[MIL_MAX_RANK], yb[MIL_MAX_RANK], batches = 1;
    matmul_batch_strides(ot, xt, xb);
    matmul_batch_strides(ot, yt, yb);
    for (int i = 0; i < rb; i++) batches *= ot->dims[i];
    int lda = (int)xt->dims[xt->rank - 1], ldb = (int)yt->dims[yt->rank - 1];
    for (int64_t bi = 0; bi < batches; bi++) {
        int64_t ox, oy;
        offsets_of(bi, ot->dims, rb, xb, yb, &ox, &oy);
        gemm_round(o, op->transpose_x, op->transpose_y, M, N, K, bufs[op->x] + ox, lda, bufs[op->y] + oy, ldb,
                   bufs[op->out] + bi * (int64_t)M * N, N);
    }
}

/* 1x1 conv: x [N, IC, H, W], weight [OC, IC/g, 1, 1] -> out [N, OC, H, W]; per image and group
** out[g] [OC/g][H*W] = W[g] [OC/g][IC/g] @ x[g] [IC/g][H*W]. */
static void run_conv(const MilOp *op, const MilValue *vals, float *const *bufs, const MilKernelOptions *o) {
    const MilType *xt = &vals[op->x].type, *wt = &vals[op->y].type;
    int64_t nb = xt->dims[0], ic = xt->dims[1], hw = xt->dims[2] * xt->dims[3], oc = wt->dims[0];
    int g = op->groups;
    int icg = (int)(ic / g), ocg = (int)(oc / g);
    for (int64_t n = 0; n < nb; n++)
        for (int k = 0; k < g; k++)
            gemm_round(o, 0, 0, ocg, (int)hw, icg, bufs[op->y] + (int64_t)k * ocg * icg, icg,
                       bufs[op->x] + (n * ic + (int64_t)k * icg) * hw, (int)hw,
                       bufs[op->out] + (n * oc + (int64_t)k * ocg) * hw, (int)hw);
}

/* q [B..., L, E], k [B..., S, E], v [B..., S, Ev] -> out [B..., L, Ev]; scratch [L][S] scores. */
static void run_sdpa(const MilOp *op, const MilValue *vals, float *const *bufs, float *scratch,
                     const MilKernelOptions *o) {
    const MilType *qt = &vals[op->x].type, *kt = &vals[op->y].type, *vt = &vals[op->z].type;
    int r = qt->rank;
    int L = (int)qt->dims[r - 2], E = (int)qt->dims[r - 1], S = (int)kt->dims[r - 2], Ev = (int)vt->dims[r - 1];
    int64_t batches = vals[op->out].numel / ((int64_t)L * Ev);
    float scale = 1.0f / sqrtf((float)E);
    for (int64_t b = 0; b < batches; b++) {
        const float *q = bufs[op->x] + b * L * E, *k = bufs[op->y] + b * S * E, *v = bufs[op->z] + b * S * Ev;
        /* scores in fp32, scaled, then one rounding */
        if (o->accumulate_fp32) {
            blas_sgemm_tiled(0, 1, L, S, E, scale, q, E, k, E, 0.0f, scratch, S, 1);
            round_all(scratch, (int64_t)L * S, o->flush_subnormals);
        } else {
            gemm_round(o, 0, 1, L, S, E, q, E, k, E, scratch, S);
            for (int64_t i = 0; i < (int64_t)L * S; i++) scratch[i] *= scale;
            round_all(scratch, (int64_t)L * S, o->flush_subnormals);
        }
        softmax_run(scratch, scratch, L, S, 1, o->flush_subnormals);
        gemm_round(o, 0, 0, L, Ev, S, scratch, S, v, Ev, bufs[op->out] + b * L * Ev, Ev);
    }
}

/* ------------------------------------------------------------------ copies */

/* out = x[begin : begin + out dims], any axes. */
static void run_slice(const MilOp *op, const MilValue *vals, float *const *bufs) {
    const MilType *xt = &vals[op->x].type, *ot = &vals[op->out].type;
    int64_t xs[MIL_MAX_RANK], os[MIL_MAX_RANK], off = 0;
    strides_of(xt, xs);
    strides_of(ot, os);
    for (int i = 0; i < xt->rank; i++) off += op->begin[i] * xs[i];
    copy_nd(bufs[op->out], os, bufs[op->x] + off, xs, ot->dims, ot->rank);
}

/* out dim i = x dim perm[i]. */
static void run_transpose(const MilOp *op, const MilValue *vals, float *const *bufs) {
    const MilType *xt = &vals[op->x].type, *ot = &vals[op->out].type;
    int64_t xs[MIL_MAX_RANK], ps[MIL_MAX_RANK], os[MIL_MAX_RANK];
    strides_of(xt, xs);
    strides_of(ot, os);
    for (int i = 0; i < ot->rank; i++) ps[i] = xs[op->perm[i]];
    copy_nd(bufs[op->out], os, bufs[op->x], ps, ot->dims, ot->rank);
}

/* out = values stacked along op->axis, in order (interleave false). */
static void run_concat(const MilOp *op, const MilValue *vals, float *const *bufs) {
    const MilType *ot = &vals[op->out].type;
    int64_t os[MIL_MAX_RANK], at = 0;
    strides_of(ot, os);
    for (int i = 0; i < op->n_values; i++) {
        const MilType *it = &vals[op->values[i]].type;
        int64_t is[MIL_MAX_RANK];
        strides_of(it, is);
        copy_nd(bufs[op->out] + at * os[op->axis], os, bufs[op->values[i]], is, it->dims, it->rank);
        at += it->dims[op->axis];
    }
}

/* ------------------------------------------------------------------ entry points */

size_t mil_kernel_scratch_floats(const MilOp *op, const MilValue *vals) {
    if (op->kind == MIL_OP_SDPA) {
        const MilType *qt = &vals[op->x].type, *kt = &vals[op->y].type;
        return (size_t)(qt->dims[qt->rank - 2] * kt->dims[kt->rank - 2]);
    }
    return 0;
}

void mil_kernel_run(const MilOp *op, const MilValue *vals, float *const *bufs, float *scratch,
                    const MilKernelOptions *o) {
    switch (op->kind) {
    case MIL_OP_ADD:
    case MIL_OP_SUB:
    case MIL_OP_MUL:
    case MIL_OP_POW: run_binary(op, vals, bufs, o); break;
    case MIL_OP_SIGMOID:
    case MIL_OP_QUANTIZE:
    case MIL_OP_DEQUANTIZE: run_unary(op, vals, bufs, o); break;
    case MIL_OP_SOFTMAX: run_softmax(op, vals, bufs, o); break;
    case MIL_OP_REDUCE_SUM: run_reduce_sum(op, vals, bufs, o); break;
    case MIL_OP_MATMUL: run_matmul(op, vals, bufs, o); break;
    case MIL_OP_CONV: run_conv(op, vals, bufs, o); break;
    case MIL_OP_SDPA: run_sdpa(op, vals, bufs, scratch, o); break;
    case MIL_OP_SLICE: run_slice(op, vals, bufs); break;
    case MIL_OP_TRANSPOSE: run_transpose(op, vals, bufs); break;
    case MIL_OP_CONCAT: run_concat(op, vals, bufs); break;
    case MIL_OP_CAST:
    case MIL_OP_RESHAPE: break; /* aliases: the plan gives out the same buffer as x */
    }
}
