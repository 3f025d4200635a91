/*
** mil_write.c — the MIL text builder (mil_write.h).
**
** Statements are appended to one growing string; constants are declared at their first use
** and shared afterwards (a small table keyed by their literal text). The header, the function
** line and the closing lines are added by milw_finish. This file must never emit a construct
** docs/ane-facts.md §2 does not report as compiling (see the list in mil_write.h), with one
** exception the caller chooses: a per-channel scale in milw_affine_dequantize (docs/ane-facts.md §7
** question 7; per-tensor scales are the reported form).
*/
#include "mil_write.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "half.h"

/* ------------------------------------------------------------------ growing strings */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} Str;

static void str_addf(Str *b, const char *fmt, ...) ERR_PRINTF(2, 3);
static void str_addf(Str *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0) {
        b->oom = 1;
        return;
    }
    if (b->n + (size_t)need + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + (size_t)need + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}

/* ------------------------------------------------------------------ writer state */

enum { NAME_MAX_LEN = 24 };

/* A declared constant. key and name share one allocation, which never moves: callers keep the
** returned name while declaring more constants (milw_slice: begin, then size), and the array of
** Consts is reallocated as it grows. */
typedef struct {
    char *key;        /* "TYPE|LITERAL", e.g. "int32|int32(1)" */
    const char *name; /* "c<n>", inside key's allocation */
} Const;

struct MilW {
    Str body;
    int n_ops;
    char scope[16];
    int failed;
    char msg[512];
    int have_input;
    int in_C, in_S;
    char (*names)[NAME_MAX_LEN]; /* names[id] of every tensor value */
    unsigned char *kinds;        /* kinds[id]: KIND_* bits of every tensor value */
    int n_names, cap_names;
    int n_const_names;           /* counter for "c<n>" constant names */
    Const *consts;
    int n_consts, cap_consts;
    AneBlob *blobs;
    int n_blobs, cap_blobs;
};

static void fail(MilW *w, const char *fmt, ...) ERR_PRINTF(2, 3);
static void fail(MilW *w, const char *fmt, ...) {
    if (w->failed) return;
    w->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->msg, sizeof w->msg, fmt, ap);
    va_end(ap);
}

static const MilT BAD = {-1, 0, {0, 0, 0, 0}};

enum { KIND_INT8 = 1, KIND_CONST = 2 }; /* tensor<int8, ...>; a compile-time constant */

MilW *milw_create(void) {
    MilW *w = calloc(1, sizeof *w);
    if (w) strcpy(w->scope, "v");
    return w;
}

void milw_free_blobs(AneBlob *blobs, int n_blobs) {
    for (int i = 0; i < n_blobs; i++) {
        free((void *)blobs[i].path);
        free((void *)blobs[i].data);
    }
    free(blobs);
}

void milw_free(MilW *w) {
    if (!w) return;
    free(w->body.s);
    free(w->names);
    free(w->kinds);
    for (int i = 0; i < w->n_consts; i++) free(w->consts[i].key);
    free(w->consts);
    milw_free_blobs(w->blobs, w->n_blobs);
    free(w);
}

void milw_scope(MilW *w, const char *scope) {
    snprintf(w->scope, sizeof w->scope, "%s", scope && scope[0] ? scope : "v");
}

int milw_op_count(const MilW *w) { return w->n_ops; }

/* ------------------------------------------------------------------ helpers */

static int valid(const MilT *t) { return t->id >= 0 && t->rank >= 1 && t->rank <= MILW_MAX_RANK; }

static long long numel(const MilT *t) {
    long long n = 1;
    for (int i = 0; i < t->rank; i++) n *= t->d[i];
    return n;
}

static void shape_text(char *buf, size_t size, int rank, const int *d) {
    int k = snprintf(buf, size, "[");
    for (int i = 0; i < rank && k > 0 && (size_t)k < size; i++)
        k += snprintf(buf + k, size - (size_t)k, "%s%d", i ? ", " : "", d[i]);
    if (k > 0 && (size_t)k < size) snprintf(buf + k, size - (size_t)k, "]");
}

static const char *name_of(const MilW *w, MilT t) { return w->names[t.id]; }

static int is_int8(const MilW *w, MilT t) { return (w->kinds[t.id] & KIND_INT8) != 0; }

/* A valid fp16 operand; an int8 one is a generator bug: only dequantize takes it. */
static int fp16_arg(MilW *w, MilT t) {
    if (!valid(&t)) return 0;
    if (is_int8(w, t)) {
        fail(w, "%s is an int8 value; only dequantize takes int8 (docs/ane-facts.md §2.3)", name_of(w, t));
        return 0;
    }
    return 1;
}

static void type_text_of(const MilW *w, char *buf, size_t size, const MilT *t) {
    char sh[96];
    shape_text(sh, sizeof sh, t->rank, t->d);
    snprintf(buf, size, "tensor<%s, %s>", is_int8(w, *t) ? "int8" : "fp16", sh);
}

/* A new tensor value of the given shape; its name is "<scope>_<id>". */
static MilT new_value(MilW *w, int rank, const int *d) {
    if (w->n_names == w->cap_names) {
        int cap = w->cap_names ? 2 * w->cap_names : 256;
        char(*n)[NAME_MAX_LEN] = realloc(w->names, (size_t)cap * sizeof *n);
        if (n) w->names = n;
        unsigned char *k = n ? realloc(w->kinds, (size_t)cap) : NULL;
        if (!n || !k) {
            fail(w, "out of memory");
            return BAD;
        }
        w->kinds = k;
        w->cap_names = cap;
    }
    w->kinds[w->n_names] = 0;
    MilT t = {w->n_names++, rank, {1, 1, 1, 1}};
    for (int i = 0; i < rank; i++) t.d[i] = d[i];
    snprintf(w->names[t.id], NAME_MAX_LEN, "%s_%d", w->scope, t.id);
    return t;
}

/* The name of a constant with this type text and literal, declared now if new. */
static const char *constant(MilW *w, const char *type, const char *literal) {
    char key[512];
    snprintf(key, sizeof key, "%s|%s", type, literal);
    for (int i = 0; i < w->n_consts; i++)
        if (strcmp(w->consts[i].key, key) == 0) return w->consts[i].name;
    if (w->n_consts == w->cap_consts) {
        int cap = w->cap_consts ? 2 * w->cap_consts : 64;
        Const *c = realloc(w->consts, (size_t)cap * sizeof *c);
        if (!c) {
            fail(w, "out of memory");
            return "oom";
        }
        w->consts = c;
        w->cap_consts = cap;
    }
    Const *c = &w->consts[w->n_consts];
    size_t klen = strlen(key) + 1;
    c->key = malloc(klen + NAME_MAX_LEN);
    if (!c->key) {
        fail(w, "out of memory");
        return "oom";
    }
    memcpy(c->key, key, klen);
    snprintf(c->key + klen, NAME_MAX_LEN, "c%d", w->n_const_names++);
    c->name = c->key + klen;
    w->n_consts++;
    str_addf(&w->body, "        %s %s = const()[name = string(\"%s\"), val = %s];\n", type, c->name, c->name, literal);
    return c->name;
}

static const char *const_int(MilW *w, int v) {
    char lit[32];
    snprintf(lit, sizeof lit, "int32(%d)", v);
    return constant(w, "int32", lit);
}

static const char *const_bool(MilW *w, int v) { return constant(w, "bool", v ? "bool(true)" : "bool(false)"); }

static const char *const_ivec(MilW *w, int n, const int *v) {
    char type[32], lit[256];
    snprintf(type, sizeof type, "tensor<int32, [%d]>", n);
    int k = snprintf(lit, sizeof lit, "%s([", type);
    for (int i = 0; i < n; i++) k += snprintf(lit + k, sizeof lit - (size_t)k, "%s%d", i ? ", " : "", v[i]);
    snprintf(lit + k, sizeof lit - (size_t)k, "])");
    return constant(w, type, lit);
}

/* The finite fp16 value h as a C99 hex float, the spelling the seed writes (fp16(0x1p-3)):
** "0x1.8p-3", "-0x1p+0", "0x0p+0". Exact (an fp16 value has at most 11 significant bits, so
** three hex digits of fraction hold it, subnormals included) and never exponent notation, which
** the strict limits refuse (docs/ane-facts.md §9, rule fp16-literal-exponent). */
static void hex_fp16(char *buf, size_t size, float h) {
    const char *sign = signbit(h) ? "-" : "";
    if (!isfinite(h)) { /* never written: the callers refuse non-finite constants */
        snprintf(buf, size, "%s", isnan(h) ? "nan" : h < 0 ? "-inf" : "inf");
        return;
    }
    if (h == 0) {
        snprintf(buf, size, "%s0x0p+0", sign);
        return;
    }
    int e;
    double m = 2.0 * frexp(fabs((double)h), &e); /* |h| = m 2^(e-1), m in [1, 2) */
    unsigned frac = (unsigned)((m - 1.0) * 4096.0); /* 12 bits: exact */
    char digits[4];
    snprintf(digits, sizeof digits, "%03x", frac);
    for (int i = 2; i >= 0 && digits[i] == '0'; i--) digits[i] = '\0';
    snprintf(buf, size, "%s0x1%s%sp%+d", sign, digits[0] ? "." : "", digits, e - 1);
}

/* An fp16 scalar const: the value is rounded to fp16 here and written exactly, as a hex float. */
static const char *const_f16(MilW *w, double v) {
    float h = fp16_round_double(v, 0);
    if (!isfinite(h)) {
        fail(w, "fp16 constant %g is out of the fp16 range", v);
        return "bad";
    }
    char hex[32], lit[64];
    hex_fp16(hex, sizeof hex, h);
    snprintf(lit, sizeof lit, "fp16(%s)", hex);
    return constant(w, "fp16", lit);
}

/* Appends "TYPE NAME = op(" for a new value of shape (rank, d); the caller adds the arguments
** and closes with end_stmt. */
static MilT begin_stmt_kind(MilW *w, const char *op, int rank, const int *d, unsigned char kind) {
    MilT t = new_value(w, rank, d);
    if (!valid(&t)) return BAD;
    w->kinds[t.id] = kind;
    char type[128];
    type_text_of(w, type, sizeof type, &t);
    str_addf(&w->body, "        %s %s = %s(", type, name_of(w, t), op);
    return t;
}

static MilT begin_stmt(MilW *w, const char *op, int rank, const int *d) { return begin_stmt_kind(w, op, rank, d, 0); }

static void end_stmt(MilW *w, MilT t) {
    str_addf(&w->body, ")[name = string(\"%s\")];\n", name_of(w, t));
    w->n_ops++;
}

/* ------------------------------------------------------------------ the input */

MilT milw_input(MilW *w, int C, int S) {
    if (w->have_input) {
        fail(w, "milw_input called twice");
        return BAD;
    }
    if (C < 1 || S < 32 || S % 32) {
        fail(w, "input [1, %d, 1, %d]: channels must be positive and the width a positive multiple of 32", C, S);
        return BAD;
    }
    w->have_input = 1;
    w->in_C = C;
    w->in_S = S;
    char saved[16];
    memcpy(saved, w->scope, sizeof saved);
    int d[4] = {1, C, 1, S};
    MilT t = new_value(w, 4, d);
    if (valid(&t)) snprintf(w->names[t.id], NAME_MAX_LEN, "x");
    memcpy(w->scope, saved, sizeof saved);
    return t;
}

/* ------------------------------------------------------------------ data movement */

MilT milw_slice(MilW *w, MilT x, const int *begin, const int *size) {
    if (w->failed || !fp16_arg(w, x)) return BAD;
    for (int i = 0; i < x.rank; i++) {
        if (begin[i] < 0 || size[i] < 1 || begin[i] + size[i] > x.d[i]) {
            fail(w, "slice of %s: dim %d begin %d size %d exceeds %d", name_of(w, x), i, begin[i], size[i], x.d[i]);
            return BAD;
        }
    }
    const char *b = const_ivec(w, x.rank, begin), *s = const_ivec(w, x.rank, size);
    MilT t = begin_stmt(w, "slice_by_size", x.rank, size);
    str_addf(&w->body, "x = %s, begin = %s, size = %s", name_of(w, x), b, s);
    end_stmt(w, t);
    return t;
}

MilT milw_reshape(MilW *w, MilT x, int rank, const int *dims) {
    if (w->failed || !fp16_arg(w, x)) return BAD;
    if (rank < 1 || rank > MILW_MAX_RANK) {
        fail(w, "reshape of %s to rank %d", name_of(w, x), rank);
        return BAD;
    }
    MilT probe = {0, rank, {1, 1, 1, 1}};
    for (int i = 0; i < rank; i++) probe.d[i] = dims[i];
    if (numel(&probe) != numel(&x)) {
        char a[96], b[96];
        shape_text(a, sizeof a, x.rank, x.d);
        shape_text(b, sizeof b, rank, dims);
        fail(w, "reshape of %s %s to %s changes the element count", name_of(w, x), a, b);
        return BAD;
    }
    int same = rank == x.rank;
    for (int i = 0; same && i < rank; i++) same = dims[i] == x.d[i];
    if (same) return x; /* nothing to write */
    const char *sh = const_ivec(w, rank, dims);
    MilT t = begin_stmt(w, "reshape", rank, dims);
    str_addf(&w->body, "x = %s, shape = %s", name_of(w, x), sh);
    end_stmt(w, t);
    return t;
}

MilT milw_reshape4(MilW *w, MilT x, int a, int b, int c, int d) {
    int dims[4] = {a, b, c, d};
    return milw_reshape(w, x, 4, dims);
}

MilT milw_transpose(MilW *w, MilT x) {
    if (w->failed || !fp16_arg(w, x)) return BAD;
    if (x.rank != 4) {
        fail(w, "transpose of %s: only rank 4 with perm [0, 1, 3, 2] is used", name_of(w, x));
        return BAD;
    }
    int perm[4] = {0, 1, 3, 2}, d[4] = {x.d[0], x.d[1], x.d[3], x.d[2]};
    const char *p = const_ivec(w, 4, perm);
    MilT t = begin_stmt(w, "transpose", 4, d);
    str_addf(&w->body, "x = %s, perm = %s", name_of(w, x), p);
    end_stmt(w, t);
    return t;
}

MilT milw_concat(MilW *w, int axis, int n, const MilT *v) {
    if (w->failed) return BAD;
    if (n < 1) {
        fail(w, "concat of nothing");
        return BAD;
    }
    for (int i = 0; i < n; i++)
        if (!fp16_arg(w, v[i])) return BAD;
    int rank = v[0].rank, ax = axis < 0 ? axis + rank : axis;
    if (ax < 0 || ax >= rank) {
        fail(w, "concat axis %d out of range for rank %d", axis, rank);
        return BAD;
    }
    int d[4];
    for (int i = 0; i < rank; i++) d[i] = v[0].d[i];
    d[ax] = 0;
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < rank; i++) {
            if (v[k].rank != rank || (i != ax && v[k].d[i] != v[0].d[i])) {
                fail(w, "concat: %s does not match %s outside axis %d", name_of(w, v[k]), name_of(w, v[0]), ax);
                return BAD;
            }
        }
        d[ax] += v[k].d[ax];
    }
    const char *a = const_int(w, ax), *il = const_bool(w, 0);
    MilT t = begin_stmt(w, "concat", rank, d);
    str_addf(&w->body, "axis = %s, interleave = %s, values = (", a, il);
    for (int k = 0; k < n; k++) str_addf(&w->body, "%s%s", k ? ", " : "", name_of(w, v[k]));
    str_addf(&w->body, ")");
    end_stmt(w, t);
    return t;
}

/* ------------------------------------------------------------------ arithmetic */

MilT milw_matmul(MilW *w, MilT x, int tx, MilT y, int ty) {
    if (w->failed || !fp16_arg(w, x) || !fp16_arg(w, y)) return BAD;
    int r = x.rank;
    if (r < 2 || y.rank != r) {
        fail(w, "matmul %s x %s: ranks %d and %d (equal ranks >= 2 expected)", name_of(w, x), name_of(w, y), x.rank,
             y.rank);
        return BAD;
    }
    for (int i = 0; i < r - 2; i++) {
        if (x.d[i] != y.d[i]) {
            fail(w, "matmul %s x %s: batch dim %d differs (%d vs %d; no broadcast)", name_of(w, x), name_of(w, y), i,
                 x.d[i], y.d[i]);
            return BAD;
        }
    }
    int M = tx ? x.d[r - 1] : x.d[r - 2], Kx = tx ? x.d[r - 2] : x.d[r - 1];
    int Ky = ty ? y.d[r - 1] : y.d[r - 2], N = ty ? y.d[r - 2] : y.d[r - 1];
    if (Kx != Ky) {
        fail(w, "matmul %s x %s: inner dims %d and %d differ", name_of(w, x), name_of(w, y), Kx, Ky);
        return BAD;
    }
    int d[4];
    for (int i = 0; i < r - 2; i++) d[i] = x.d[i];
    d[r - 2] = M;
    d[r - 1] = N;
    const char *a = const_bool(w, tx), *b = const_bool(w, ty);
    MilT t = begin_stmt(w, "matmul", r, d);
    str_addf(&w->body, "transpose_x = %s, transpose_y = %s, x = %s, y = %s", a, b, name_of(w, x), name_of(w, y));
    end_stmt(w, t);
    return t;
}

static MilT binary(MilW *w, const char *op, MilT x, MilT y) {
    if (w->failed || !fp16_arg(w, x) || !fp16_arg(w, y)) return BAD;
    if (x.rank != y.rank) {
        fail(w, "%s of %s and %s: ranks differ", op, name_of(w, x), name_of(w, y));
        return BAD;
    }
    int d[4];
    for (int i = 0; i < x.rank; i++) {
        if (x.d[i] != y.d[i] && x.d[i] != 1 && y.d[i] != 1) {
            fail(w, "%s of %s and %s: dim %d is %d vs %d (not broadcastable)", op, name_of(w, x), name_of(w, y), i,
                 x.d[i], y.d[i]);
            return BAD;
        }
        d[i] = x.d[i] > y.d[i] ? x.d[i] : y.d[i];
    }
    MilT t = begin_stmt(w, op, x.rank, d);
    str_addf(&w->body, "x = %s, y = %s", name_of(w, x), name_of(w, y));
    end_stmt(w, t);
    return t;
}

MilT milw_add(MilW *w, MilT x, MilT y) { return binary(w, "add", x, y); }
MilT milw_sub(MilW *w, MilT x, MilT y) { return binary(w, "sub", x, y); }
MilT milw_mul(MilW *w, MilT x, MilT y) { return binary(w, "mul", x, y); }

/* x op scalar (or scalar op x when scalar_first). */
static MilT with_scalar(MilW *w, const char *op, MilT x, double s, int scalar_first) {
    if (w->failed || !fp16_arg(w, x)) return BAD;
    const char *c = const_f16(w, s);
    if (w->failed) return BAD;
    MilT t = begin_stmt(w, op, x.rank, x.d);
    if (scalar_first) str_addf(&w->body, "x = %s, y = %s", c, name_of(w, x));
    else str_addf(&w->body, "x = %s, y = %s", name_of(w, x), c);
    end_stmt(w, t);
    return t;
}

MilT milw_add_s(MilW *w, MilT x, double s) { return with_scalar(w, "add", x, s, 0); }
MilT milw_mul_s(MilW *w, MilT x, double s) { return with_scalar(w, "mul", x, s, 0); }
MilT milw_rsub_s(MilW *w, double s, MilT x) { return with_scalar(w, "sub", x, s, 1); }
MilT milw_pow_s(MilW *w, MilT x, double e) { return with_scalar(w, "pow", x, e, 0); }

MilT milw_sigmoid(MilW *w, MilT x) {
    if (w->failed || !fp16_arg(w, x)) return BAD;
    MilT t = begin_stmt(w, "sigmoid", x.rank, x.d);
    str_addf(&w->body, "x = %s", name_of(w, x));
    end_stmt(w, t);
    return t;
}

MilT milw_softmax(MilW *w, MilT x, int axis) {
    if (w->failed || !fp16_arg(w, x)) return BAD;
    if (axis < -x.rank || axis >= x.rank) {
        fail(w, "softmax of %s: axis %d out of range", name_of(w, x), axis);
        return BAD;
    }
    const char *a = const_int(w, axis);
    MilT t = begin_stmt(w, "softmax", x.rank, x.d);
    str_addf(&w->body, "axis = %s, x = %s", a, name_of(w, x));
    end_stmt(w, t);
    return t;
}

MilT milw_reduce_sum(MilW *w, MilT x, int axis) {
    if (w->failed || !fp16_arg(w, x)) return BAD;
    int ax = axis < 0 ? axis + x.rank : axis;
    if (ax < 0 || ax >= x.rank) {
        fail(w, "reduce_sum of %s: axis %d out of range", name_of(w, x), axis);
        return BAD;
    }
    int d[4];
    for (int i = 0; i < x.rank; i++) d[i] = i == ax ? 1 : x.d[i];
    const char *a = const_ivec(w, 1, &axis), *k = const_bool(w, 1);
    MilT t = begin_stmt(w, "reduce_sum", x.rank, d);
    str_addf(&w->body, "axes = %s, keep_dims = %s, x = %s", a, k, name_of(w, x));
    end_stmt(w, t);
    return t;
}

/* ------------------------------------------------------------------ blobs */

/* A canonical single-blob MILBlob file (docs/ane-facts.md §3): storage header {count 1, version 2},
** metadata record at 64 {sentinel 0xDEADBEEF, dtype code, u64 sizeInBytes, u64 data offset
** 128}, data at 128. The data bytes are left zero for the caller. */
static unsigned char *blob_file(uint32_t dtype_code, size_t bytes, size_t *size) {
    *size = 128 + bytes;
    unsigned char *b = calloc(1, *size);
    if (!b) return NULL;
    b[0] = 1; /* storage header: blob count 1, version 2 */
    b[4] = 2;
    b[64] = 0xEF, b[65] = 0xBE, b[66] = 0xAD, b[67] = 0xDE; /* metadata: sentinel 0xDEADBEEF */
    b[68] = (unsigned char)dtype_code;                       /* Float16 = 1, Int8 = 4 */
    for (int i = 0; i < 8; i++) b[72 + i] = (unsigned char)((uint64_t)bytes >> (8 * i)); /* sizeInBytes */
    b[80] = 128;                                                                        /* data offset */
    return b;
}

unsigned char *milw_blob_file_fp16(const float *data, size_t n, size_t *size) {
    unsigned char *b = blob_file(1, n * 2, size);
    if (b) half_from_f32((uint16_t *)(b + 128), data, n);
    return b;
}

unsigned char *milw_blob_file_int8(const int8_t *data, size_t n, size_t *size) {
    unsigned char *b = blob_file(4, n, size);
    if (b && n) memcpy(b + 128, data, n);
    return b;
}

/* Registers the blob file "@model_path/weights/<file>" (taking file_data) and writes its path
** into path; 0, or -1 after recording the failure (file_data freed). */
static int add_blob(MilW *w, const char *file, unsigned char *file_data, size_t size, char *path, size_t path_size) {
    snprintf(path, path_size, "@model_path/weights/%s", file);
    for (int i = 0; i < w->n_blobs; i++) {
        if (strcmp(w->blobs[i].path, path) == 0) {
            free(file_data);
            fail(w, "blob %s written twice", path);
            return -1;
        }
    }
    if (w->n_blobs == w->cap_blobs) {
        int cap = w->cap_blobs ? 2 * w->cap_blobs : 8;
        AneBlob *nb = realloc(w->blobs, (size_t)cap * sizeof *nb);
        if (!nb) {
            free(file_data);
            fail(w, "out of memory");
            return -1;
        }
        w->blobs = nb;
        w->cap_blobs = cap;
    }
    char *p = strdup(path);
    if (!file_data || !p) {
        free(file_data);
        free(p);
        fail(w, "out of memory");
        return -1;
    }
    w->blobs[w->n_blobs++] = (AneBlob){p, file_data, size};
    return 0;
}

static int blob_shape_ok(MilW *w, const char *file, int rank, const int *dims) {
    if (rank < 1 || rank > MILW_MAX_RANK) {
        fail(w, "blob %s: rank %d", file, rank);
        return 0;
    }
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 1) {
            fail(w, "blob %s: dim %d is %d", file, i, dims[i]);
            return 0;
        }
    }
    return 1;
}

MilT milw_blob(MilW *w, const char *file, int rank, const int *dims, const float *data) {
    if (w->failed || !blob_shape_ok(w, file, rank, dims)) return BAD;
    MilT probe = {0, rank, {1, 1, 1, 1}};
    for (int i = 0; i < rank; i++) probe.d[i] = dims[i];
    size_t n = (size_t)numel(&probe), size = 0;
    char path[128];
    unsigned char *file_data = milw_blob_file_fp16(data, n, &size);
    if (add_blob(w, file, file_data, size, path, sizeof path)) return BAD;
    /* A blob constant is declared like any tensor value, right here. */
    MilT t = new_value(w, rank, dims);
    if (!valid(&t)) return BAD;
    w->kinds[t.id] = KIND_CONST;
    char type[128];
    type_text_of(w, type, sizeof type, &t);
    str_addf(&w->body,
             "        %s %s = const()[name = string(\"%s\"), val = %s(BLOBFILE(path = string(\"%s\"), offset = "
             "uint64(64)))];\n",
             type, name_of(w, t), name_of(w, t), type, path);
    return t;
}

/* ------------------------------------------------------------------ int8 */

MilT milw_affine_dequantize(MilW *w, const char *file, int rank, const int *dims, int axis, const int8_t *q,
                            const float *scale, int n_scale) {
    if (w->failed || !blob_shape_ok(w, file, rank, dims)) return BAD;
    int ax = axis < 0 ? axis + rank : axis;
    if (ax < 0 || ax >= rank) {
        fail(w, "constexpr_affine_dequantize %s: axis %d out of range for rank %d", file, axis, rank);
        return BAD;
    }
    if (n_scale != 1 && n_scale != dims[ax]) {
        fail(w, "constexpr_affine_dequantize %s: %d scales, expected 1 or %d (dims[%d])", file, n_scale, dims[ax], ax);
        return BAD;
    }
    /* Scales as exact hex-float fp16 literals (hex_fp16); a non-finite one is refused below. */
    Str lit = {0};
    char hex[32];
    if (n_scale == 1) {
        hex_fp16(hex, sizeof hex, fp16_round_double(scale[0], 0));
        str_addf(&lit, "fp16(%s)", hex);
    } else {
        str_addf(&lit, "tensor<fp16, [%d]>([", n_scale);
        for (int i = 0; i < n_scale; i++) {
            hex_fp16(hex, sizeof hex, fp16_round_double(scale[i], 0));
            str_addf(&lit, "%s%s", i ? ", " : "", hex);
        }
        str_addf(&lit, "])");
    }
    for (int i = 0; i < n_scale && !lit.oom; i++) {
        float h = fp16_round_double(scale[i], 0);
        if (!isfinite(h) || h < 0) {
            free(lit.s);
            fail(w, "constexpr_affine_dequantize %s: scale %d is %g (finite, >= 0 and in fp16 range expected)", file, i,
                 (double)scale[i]);
            return BAD;
        }
    }
    if (lit.oom) {
        free(lit.s);
        fail(w, "out of memory");
        return BAD;
    }
    MilT probe = {0, rank, {1, 1, 1, 1}};
    for (int i = 0; i < rank; i++) probe.d[i] = dims[i];
    size_t n = (size_t)numel(&probe), size = 0;
    char path[128];
    unsigned char *file_data = milw_blob_file_int8(q, n, &size);
    if (add_blob(w, file, file_data, size, path, sizeof path)) {
        free(lit.s);
        return BAD;
    }
    MilT t = new_value(w, rank, dims);
    if (!valid(&t)) {
        free(lit.s);
        return BAD;
    }
    w->kinds[t.id] = KIND_CONST;
    char type[128], sh[96];
    type_text_of(w, type, sizeof type, &t);
    shape_text(sh, sizeof sh, rank, dims);
    str_addf(&w->body,
             "        %s %s = constexpr_affine_dequantize()[axis = int32(%d), name = string(\"%s\"), quantized_data = "
             "tensor<int8, %s>(BLOBFILE(path = string(\"%s\"), offset = uint64(64))), scale = %s, zero_point = "
             "int8(0)];\n",
             type, name_of(w, t), ax, name_of(w, t), sh, path, lit.s);
    free(lit.s);
    return t;
}

MilT milw_quantize(MilW *w, MilT x, double scale) {
    if (w->failed || !fp16_arg(w, x)) return BAD;
    if (!(scale > 0)) {
        fail(w, "quantize of %s: scale %g must be positive", name_of(w, x), scale);
        return BAD;
    }
    const char *s = const_f16(w, scale), *dt = constant(w, "string", "string(\"int8\")");
    if (w->failed) return BAD;
    MilT t = begin_stmt_kind(w, "quantize", x.rank, x.d, KIND_INT8);
    str_addf(&w->body, "input = %s, output_dtype = %s, scale = %s", name_of(w, x), dt, s);
    end_stmt(w, t);
    return t;
}

MilT milw_dequantize(MilW *w, MilT q, double scale) {
    if (w->failed || !valid(&q)) return BAD;
    if (!is_int8(w, q)) {
        fail(w, "dequantize of %s: the input must be int8 (from milw_quantize)", name_of(w, q));
        return BAD;
    }
    if (!(scale >= 0)) {
        fail(w, "dequantize of %s: scale %g must be non-negative", name_of(w, q), scale);
        return BAD;
    }
    const char *s = const_f16(w, scale);
    if (w->failed) return BAD;
    MilT t = begin_stmt(w, "dequantize", q.rank, q.d);
    str_addf(&w->body, "input = %s, scale = %s", name_of(w, q), s);
    end_stmt(w, t);
    return t;
}

MilT milw_conv(MilW *w, MilT x, MilT weight) {
    if (w->failed || !fp16_arg(w, x) || !fp16_arg(w, weight)) return BAD;
    if (!(w->kinds[weight.id] & KIND_CONST)) {
        fail(w, "conv weight %s must be a constant (milw_blob or milw_affine_dequantize)", name_of(w, weight));
        return BAD;
    }
    if (x.rank != 4 || x.d[0] != 1 || weight.rank != 4 || weight.d[2] != 1 || weight.d[3] != 1 ||
        weight.d[1] != x.d[1]) {
        fail(w, "conv of %s [%d, %d, %d, %d] with weight %s [%d, %d, %d, %d]: expected x [1, IC, H, W] and weight "
             "[OC, IC, 1, 1]", name_of(w, x), x.d[0], x.d[1], x.d[2], x.d[3], name_of(w, weight), weight.d[0],
             weight.d[1], weight.d[2], weight.d[3]);
        return BAD;
    }
    int two[2] = {1, 1}, zero4[4] = {0, 0, 0, 0};
    const char *st = const_ivec(w, 2, two), *dl = const_ivec(w, 2, two), *pd = const_ivec(w, 4, zero4);
    const char *pt = constant(w, "string", "string(\"valid\")"), *g = const_int(w, 1);
    int d[4] = {1, weight.d[0], x.d[2], x.d[3]};
    MilT t = begin_stmt(w, "conv", 4, d);
    str_addf(&w->body, "dilations = %s, groups = %s, pad = %s, pad_type = %s, strides = %s, weight = %s, x = %s", dl, g,
             pd, pt, st, name_of(w, weight), name_of(w, x));
    end_stmt(w, t);
    return t;
}

void milw_take_blobs(MilW *w, AneBlob **blobs, int *n_blobs) {
    *blobs = w->blobs;
    *n_blobs = w->n_blobs;
    w->blobs = NULL;
    w->n_blobs = w->cap_blobs = 0;
}

/* ------------------------------------------------------------------ the program */

#define MIL_HEADER                                                                                                 \
    "program(1.3)\n[buildInfo = dict<string, string>({{\"coremlc-component-MIL\", \"3510.2.1\"}, "                 \
    "{\"coremlc-version\", \"3505.4.1\"}, {\"coremltools-component-milinternal\", \"\"}, "                         \
    "{\"coremltools-version\", \"9.0\"}})]\n{\n"

char *milw_finish(MilW *w, MilT out, Err *err) {
    if (!w->failed && !w->have_input) fail(w, "no input declared");
    if (!w->failed && valid(&out) &&
        (out.rank != 4 || out.d[0] != 1 || out.d[2] != 1 || out.d[3] % 32 != 0 || out.id == 0))
        fail(w, "output %s must be a computed [1, C, 1, S] with S a multiple of 32, found [%d, %d, %d, %d]",
             name_of(w, out), out.d[0], out.d[1], out.d[2], out.d[3]);
    if (!w->failed && !valid(&out)) fail(w, "invalid output value");
    if (!w->failed && is_int8(w, out)) fail(w, "output %s is int8; outputs must be fp16", name_of(w, out));
    if (!w->failed && w->body.oom) fail(w, "out of memory");
    if (w->failed) {
        err_set(err, "MIL writer: %s", w->msg);
        return NULL;
    }
    Str s = {0};
    str_addf(&s, "%s", MIL_HEADER);
    str_addf(&s, "    func main<ios18>(tensor<fp16, [1, %d, 1, %d]> x) {\n", w->in_C, w->in_S);
    str_addf(&s, "%s", w->body.s ? w->body.s : "");
    str_addf(&s, "    } -> (%s);\n}\n", name_of(w, out));
    if (s.oom) {
        free(s.s);
        err_set(err, "MIL writer: out of memory");
        return NULL;
    }
    return s.s;
}
