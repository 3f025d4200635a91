/*
** mil_check.c — the device's constraints and shape inference: syntax tree + weight blobs ->
** checked graph (mil.h), or an error naming the statement, its line:column, what was expected
** and what was found.
**
** What is checked (docs/ane-facts.md §1.7, §2, §3; the conservative choices are ours and marked):
**   program(1.3), one function `main<ios18>`;
**   exactly one input and one output, both tensor<fp16, [1, C, 1, S]> with S a multiple of 32
**     (ours: every I/O width the seed uses is; the writer guarantees it);
**   every op in the supported set with exactly the argument names of §2.3 (op_specs below);
**     every listed argument is required (as the seed always writes them), except matmul's
**     transpose_x/transpose_y (default false, omitted in a seed test); each statement carries
**     [name = string("...")] (any string; it need not equal the value's name);
**   arguments are names of earlier values (ours: inline literals such as transpose_y = true
**     are rejected: only named const values are reported as compiling); parameters that must
**     be known at compile time (axes, perms, shapes, flags, scales) name const values;
**   no name defined twice; the declared type of every statement equals the inferred one;
**   numpy-style trailing broadcasting for add/sub/mul/pow;
**   conv: const weight ("Can't use dynamic weight with conv"), 1x1 kernel, strides/dilations 1,
**     zero pad, pad_type "valid", at most 16384 input channels (ours; 32000 was rejected);
**   scaled_dot_product_attention: accepted only without attn_mask (the hardware ignores the
**     mask, §2.5: a masked SDPA would silently compute unmasked attention);
**   concat: interleave must be false;
**   BLOBFILE: the path is among the blobs given; storage header version 2, count >= 1;
**     the MIL offset is 64-aligned and points at a metadata record with sentinel 0xDEADBEEF,
**     the dtype code of the declared tensor, sizeInBytes = elements x element size, and a
**     64-aligned data offset past the record with the data inside the blob (ours: alignment);
**   fp16 literals in range; tensors of at most MilCheckOptions.max_elements elements;
**   int8 (docs/ane-facts.md §2.2-2.3, CoreML's iOS16 constexpr_affine_dequantize and iOS17
**     quantize/dequantize definitions for the argument rules):
**     quantize(input, output_dtype = "int8", scale) and dequantize(input, scale) take a scalar
**       scale of the input's (quantize) or fp16 (dequantize) dtype, finite, > 0 for quantize
**       and >= 0 for dequantize (ours: negative scales rejected); CoreML's optional
**       zero_point and axis are rejected (the seed never used them);
**     an int8 tensor (from quantize or a const) can only be the input of dequantize: not of
**       arithmetic, data movement or the output (ours: the only int8 use the facts show);
**     constexpr_affine_dequantize: quantized_data an int8 tensor literal (inline or BLOBFILE
**       with dtype code 4), axis in range, scale fp16 and zero_point int8, each a scalar or a
**       rank-1 vector of quantized_data.shape[axis] values (per-channel: accepted although
**       unverified on the device, docs/ane-facts.md §7 question 7; see docs/macos.md).
**
** Limits are named rules (mil.h MilRuleId; docs/ane-facts.md §9 gives each one's source): a
** refusal reads "rule NAME: ..." with the value's name and type. Hard rules (the above) and the
** limits measured on real chips apply in every mode: the input at most 16384 wide
** (input-width) and no axis of any tensor above 65536 (axis-65536). Under ANE_LIMITS_STRICT
** (the default) the conventions of every working reference apply too: no axis above 16384
** (axis-16384), slice_by_size begins on the innermost axis at multiples of 32 (slice-align-32,
** precisely: begin[rank - 1] % 32 == 0 for every slice, whatever its other axes), no fp16
** literal in exponent notation (fp16-literal-exponent: the parser remembers the spelling), no
** cast (no-cast). ANE_LIMITS_PROBED keeps the hard rules and the measured limits only.
**
** Constants are materialised here (fp16-rounded floats; int32/bool as int64). This file
** must never crash or exit on any input; it allocates only what the declared types ask for,
** after the element limit has been checked.
*/
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../util/fp16.h"
#include "mil.h"

/* ------------------------------------------------------------------ the rules */

static const MilRule rules[MIL_RULE_COUNT] = {
    [MIL_RULE_PROGRAM_FORM] = {"program-form", MIL_RULE_HARD, "program(1.3) with one function main<ios18>",
                               "maderix/ANE training_dynamic/mil_dynamic.h (MIL_HDR); docs/ane-facts.md §2.1"},
    [MIL_RULE_ONE_INPUT] = {"one-input", MIL_RULE_HARD, "exactly one input; pack inputs along the spatial axis",
                            "maderix/ANE README: multi-input requests fail with 0x1d; docs/ane-facts.md §1.7"},
    [MIL_RULE_ONE_OUTPUT] = {"one-output", MIL_RULE_HARD, "exactly one output; concatenate results on channels",
                             "maderix/ANE training code (io.h, mil_dynamic.h); multiple outputs never verified"},
    [MIL_RULE_IO_FP16] = {"io-fp16", MIL_RULE_HARD, "fp16 input and output",
                          "maderix/ANE training_dynamic (fp16 I/O throughout); docs/ane-facts.md §2.1"},
    [MIL_RULE_IO_SHAPE] = {"io-shape", MIL_RULE_HARD, "input and output are rank 4 [1, C, 1, S]",
                           "maderix/ANE io.h (every surface is [1, C, 1, S]); docs/ane-facts.md §2.4"},
    [MIL_RULE_IO_WIDTH_32] = {"io-width-32", MIL_RULE_HARD, "I/O width S a multiple of 32",
                              "ours: every I/O width maderix/ANE uses is (docs/ane-facts.md §7 question 3)"},
    [MIL_RULE_KNOWN_OP] = {"known-op", MIL_RULE_HARD, "ops of the reported set with their argument names",
                           "the ops maderix/ANE writes (docs/ane-facts.md §2.3)"},
    [MIL_RULE_NAMED_ARGS] = {"named-args", MIL_RULE_HARD,
                             "arguments name const values; no inline literal (scalar) shorthand",
                             "ours: maderix/ANE mil_dynamic.h declares every parameter (docs/ane-facts.md §2.1)"},
    [MIL_RULE_CONV_CONST_WEIGHT] = {"conv-const-weight", MIL_RULE_HARD, "conv weights are constants",
                                    "maderix/ANE test_weight_patch.m: \"Can't use dynamic weight with conv\""},
    [MIL_RULE_CONV_1X1] = {"conv-1x1", MIL_RULE_HARD, "conv: 1x1 kernel, strides and dilations 1, no pad, valid",
                           "maderix/ANE stories_mil.h (docs/ane-facts.md §2.3)"},
    [MIL_RULE_CONV_CHANNELS] = {"conv-input-channels", MIL_RULE_HARD, "conv: at most 16384 input channels",
                                "maderix/ANE ane_classifier.h: 32000 input channels rejected; 16384 is ours"},
    [MIL_RULE_SDPA_NO_MASK] = {"sdpa-no-mask", MIL_RULE_HARD, "scaled_dot_product_attention without attn_mask",
                               "maderix/ANE README, test_ane_sdpa5.m: the hardware ignores the mask"},
    [MIL_RULE_CONCAT_NO_INTERLEAVE] = {"concat-no-interleave", MIL_RULE_HARD, "concat with interleave = false",
                                       "maderix/ANE mil_dynamic.h (only interleave=false)"},
    [MIL_RULE_BLOB_FORMAT] = {"blob-format", MIL_RULE_HARD, "BLOBFILE constants are MILBlob files of the declared type",
                              "maderix/ANE io.h build_blob; apple/coremltools MILBlob StorageFormat.hpp"},
    [MIL_RULE_INT8_DEQUANTIZE_ONLY] = {"int8-dequantize-only", MIL_RULE_HARD,
                                       "an int8 tensor is only the input of dequantize",
                                       "maderix/ANE ane_int8_bench.m (quantize -> dequantize)"},
    [MIL_RULE_QUANT_FORM] = {"quantize-form", MIL_RULE_HARD,
                             "quantize/dequantize/constexpr_affine_dequantize: fp16 scales, no zero_point or axis",
                             "maderix/ANE ane_int8_bench.m (scalar fp16 scale, zero_point int8(0))"},
    [MIL_RULE_FP16_RANGE] = {"fp16-literal-range", MIL_RULE_HARD, "fp16 literals are finite fp16 values",
                             "ours"},
    [MIL_RULE_EMU_ELEMENTS] = {"emu-tensor-elements", MIL_RULE_HARD,
                               "the emulator's memory cap: at most 2^28 elements per tensor (not a device limit)",
                               "ours"},
    [MIL_RULE_INPUT_WIDTH] = {"input-width", MIL_RULE_MEASURED, "the input is at most 16384 wide",
                              "ncdrone/rustane#13 (M3 Ultra, macOS 26.3.1: 16384 compiles, 17920 fails); "
                              "rustane PR #15"},
    [MIL_RULE_AXIS_65536] = {"axis-65536", MIL_RULE_MEASURED, "no axis of any tensor above 65536",
                             "sbryngelson/ANEForge PR #57 (an axis S*dh > 65536 failed to compile)"},
    [MIL_RULE_AXIS_16384] = {"axis-16384", MIL_RULE_CONVENTION, "no axis of any tensor above 16384",
                             "ours: rustane#13's measured input width on every axis of every tensor"},
    [MIL_RULE_SLICE_ALIGN] = {"slice-align-32", MIL_RULE_CONVENTION,
                              "slice_by_size begin on the innermost axis is a multiple of 32",
                              "the working references' convention (docs/ane-facts.md §8)"},
    [MIL_RULE_FP16_EXPONENT] = {"fp16-literal-exponent", MIL_RULE_CONVENTION,
                                "fp16 literals written as %f or hex floats, never in exponent notation",
                                "the working references' convention (docs/ane-facts.md §8; fp16(0x1p-3) in "
                                "maderix/ANE ane_int8_bench.m)"},
    [MIL_RULE_NO_CAST] = {"no-cast", MIL_RULE_CONVENTION, "no cast: fp16 in, fp16 throughout, fp16 out",
                          "maderix/ANE training_dynamic writes none (cast only in the inmem_*.m probes)"},
};

const MilRule *mil_rule(MilRuleId id) { return id >= 0 && id < MIL_RULE_COUNT ? &rules[id] : NULL; }

const MilRule *mil_rule_by_name(const char *name) {
    for (int i = 0; name && i < MIL_RULE_COUNT; i++)
        if (strcmp(rules[i].name, name) == 0) return &rules[i];
    return NULL;
}

int mil_rule_applies(MilRuleId id, AneLimits limits) {
    return id >= 0 && id < MIL_RULE_COUNT && (rules[id].kind != MIL_RULE_CONVENTION || limits == ANE_LIMITS_STRICT);
}

const char *ane_limits_name(AneLimits limits) { return limits == ANE_LIMITS_PROBED ? "probed" : "strict"; }

int ane_limits_parse(const char *flag, const char *s, AneLimits *out, Err *err) {
    if (s && strcmp(s, "strict") == 0) *out = ANE_LIMITS_STRICT;
    else if (s && strcmp(s, "probed") == 0) *out = ANE_LIMITS_PROBED;
    else return err_set(err, "%s: expected strict or probed, found '%s'", flag, s ? s : "");
    return 0;
}

/* ------------------------------------------------------------------ checker state */

typedef struct {
    MilGraph *g;
    const AneBlob *blobs;
    int n_blobs;
    int flush;
    int64_t max_elements;
    AneLimits limits;
    MilCheckReport *report; /* never NULL while checking (a local one when the caller gave none) */
    Err *err;
    int *slots;         /* open-addressing table of value names -> value index, -1 empty */
    int n_slots;
    const MilStmt *stmt; /* the statement being checked, for messages */
} Checker;

static int check_fail(Checker *C, MilPos pos, const char *fmt, ...) ERR_PRINTF(3, 4);
static int check_fail(Checker *C, MilPos pos, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (C->stmt)
        return err_set(C->err, "MIL %d:%d: value '%s' (%s): %s", pos.line, pos.col, C->stmt->name, C->stmt->op, msg);
    return err_set(C->err, "MIL %d:%d: %s", pos.line, pos.col, msg);
}

/* A refusal for breaking rule `rule`: "rule NAME: ..." (conventions say they are strict-only). */
static int check_rule(Checker *C, MilPos pos, MilRuleId rule, const char *fmt, ...) ERR_PRINTF(4, 5);
static int check_rule(Checker *C, MilPos pos, MilRuleId rule, const char *fmt, ...) {
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    C->report->rule = rules[rule].name;
    return check_fail(
        C, pos, "rule %s: %s%s", rules[rule].name, msg,
        rules[rule].kind == MIL_RULE_CONVENTION ? " (strict limits; --ane-limits probed does not check it)" : "");
}

static int rule_on(const Checker *C, MilRuleId rule) { return mil_rule_applies(rule, C->limits); }

static const char *type_str(const MilType *t, char *buf, size_t n) { return mil_type_format(t, buf, n); }

/* ------------------------------------------------------------------ names */

static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int name_lookup(const Checker *C, const char *name) {
    uint32_t mask = (uint32_t)C->n_slots - 1;
    for (uint32_t i = name_hash(name) & mask;; i = (i + 1) & mask) {
        int v = C->slots[i];
        if (v < 0) return -1;
        if (strcmp(C->g->values[v].name, name) == 0) return v;
    }
}

static void name_insert(Checker *C, int v) {
    uint32_t mask = (uint32_t)C->n_slots - 1;
    uint32_t i = name_hash(C->g->values[v].name) & mask;
    while (C->slots[i] >= 0) i = (i + 1) & mask;
    C->slots[i] = v;
}

/* ------------------------------------------------------------------ types */

static int dt_is_float(MilDtype d) { return d == MIL_DT_FP16 || d == MIL_DT_FP32; }

static int types_equal(const MilType *a, const MilType *b) {
    if (a->dtype != b->dtype || a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i]) return 0;
    return 1;
}

static MilType type_make(MilDtype dt, int rank, const int64_t *dims) {
    MilType t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.is_tensor = rank > 0;
    t.rank = rank;
    for (int i = 0; i < rank; i++) t.dims[i] = dims[i];
    return t;
}

/* Element count, or -1 when above max (checked as it multiplies, so it cannot overflow). */
static int64_t type_numel(const MilType *t, int64_t max) {
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) {
        if (t->dims[i] < 1 || n > max / t->dims[i]) return -1;
        n *= t->dims[i];
    }
    return n;
}

/* ------------------------------------------------------------------ values */

/* The axis rules for value `name` of type t (the input when is_input; it is value 0): the
** measured input width, the measured 65536 per axis, and under strict limits 16384 per axis.
** Also keeps the largest axis seen for the report. */
static int check_axes(Checker *C, const char *name, MilPos pos, const MilType *t, int is_input) {
    char tb[160];
    MilCheckReport *r = C->report;
    for (int i = 0; i < t->rank; i++) {
        if (t->dims[i] > r->max_axis) {
            r->max_axis = t->dims[i];
            snprintf(r->max_axis_value, sizeof r->max_axis_value, "%s", name);
            r->max_axis_type = *t;
        }
    }
    if (is_input && t->rank >= 1 && t->dims[t->rank - 1] > MIL_MAX_INPUT_WIDTH)
        return check_rule(C, pos, MIL_RULE_INPUT_WIDTH,
                          "input '%s' %s is %lld wide; the device compiles inputs up to %d wide (17920 failed on an "
                          "M3 Ultra)",
                          name, type_str(t, tb, sizeof tb), (long long)t->dims[t->rank - 1], MIL_MAX_INPUT_WIDTH);
    for (int pass = 0; pass < 2; pass++) {
        MilRuleId rule = pass ? MIL_RULE_AXIS_16384 : MIL_RULE_AXIS_65536;
        int64_t max = pass ? MIL_MAX_AXIS_STRICT : MIL_MAX_AXIS_PROBED;
        if (!rule_on(C, rule)) continue;
        for (int i = 0; i < t->rank; i++)
            if (t->dims[i] > max)
                return check_rule(C, pos, rule, "tensor '%s' %s has axis %d of %lld, above %lld", name,
                                  type_str(t, tb, sizeof tb), i, (long long)t->dims[i], (long long)max);
    }
    return 0;
}

/* Adds a value named by the current statement (or the input) with type t. */
static int value_add(Checker *C, const char *name, MilPos pos, const MilType *t) {
    if (name_lookup(C, name) >= 0) {
        const MilValue *old = &C->g->values[name_lookup(C, name)];
        return check_fail(C, pos, "'%s' is already defined at %d:%d; every name must be defined once", name,
                          old->pos.line, old->pos.col);
    }
    if (check_axes(C, name, pos, t, C->g->n_values == 0)) return -1;
    int64_t n = type_numel(t, C->max_elements);
    if (n < 0) {
        char tb[160];
        return check_rule(C, pos, MIL_RULE_EMU_ELEMENTS,
                          "%s has more elements than the emulator's limit of %lld per tensor",
                          type_str(t, tb, sizeof tb), (long long)C->max_elements);
    }
    int v = C->g->n_values++;
    MilValue *val = &C->g->values[v];
    memset(val, 0, sizeof *val);
    val->name = name;
    val->pos = pos;
    val->type = *t;
    val->numel = n;
    name_insert(C, v);
    return v;
}

/* ------------------------------------------------------------------ blobs (docs/ane-facts.md §3) */

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static const char *blob_dtype_name(uint32_t code) {
    switch (code) {
    case 1: return "fp16";
    case 2: return "fp32";
    case 3: return "uint8";
    case 4: return "int8";
    case 5: return "bf16";
    default: return "unknown";
    }
}

/* Validates the BLOBFILE tensor `lit` (numel elements): the blob is given, its storage header
** and metadata record are well-formed and match the declared type. *src gets its data. */
static int blob_locate(Checker *C, const MilExpr *lit, int64_t numel, const unsigned char **src) {
    uint32_t code;
    size_t esize;
    switch (lit->type.dtype) {
    case MIL_DT_FP16: code = 1, esize = 2; break;
    case MIL_DT_FP32: code = 2, esize = 4; break;
    case MIL_DT_INT8: code = 4, esize = 1; break;
    default:
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "BLOBFILE tensors of dtype %s are not supported (fp16, fp32, int8)",
                          mil_dtype_name(lit->type.dtype));
    }
    const AneBlob *b = NULL;
    for (int i = 0; i < C->n_blobs; i++)
        if (C->blobs[i].path && strcmp(C->blobs[i].path, lit->blob_path) == 0) b = &C->blobs[i];
    if (!b) {
        char given[256] = "";
        size_t n = 0;
        for (int i = 0; i < C->n_blobs && i < 4 && n < sizeof given; i++) {
            int w = snprintf(given + n, sizeof given - n, "%s\"%s\"", i ? ", " : "",
                             C->blobs[i].path ? C->blobs[i].path : "(null)");
            n += w < 0 ? 0 : (size_t)w;
        }
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "BLOBFILE path \"%s\" is not among the %d weight blob(s) given to compile%s%s%s",
                          lit->blob_path, C->n_blobs, C->n_blobs ? " (" : "", given,
                          C->n_blobs > 4 ? ", ...)" : (C->n_blobs ? ")" : ""));
    }
    const unsigned char *d = b->data;
    size_t size = b->size;
    const char *path = lit->blob_path;
    if (!d || size < 64)
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "blob \"%s\" is %zu bytes, shorter than the 64-byte storage header", path, d ? size : 0);
    if (rd32(d) < 1)
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "blob \"%s\": storage header blob count is 0, expected >= 1", path);
    if (rd32(d + 4) != 2)
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT, "blob \"%s\": storage header version is %u, expected 2",
                          path, rd32(d + 4));
    uint64_t off = lit->blob_offset;
    if (off < 64 || off % 64 != 0)
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "blob \"%s\": offset=uint64(%llu) must point at a 64-byte-aligned metadata record after "
                          "the 64-byte storage header (offset 64 for a single-blob file)",
                          path, (unsigned long long)off);
    if (off > size || size - off < 64)
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "blob \"%s\": the metadata record at offset %llu runs past the end (%zu bytes)", path,
                          (unsigned long long)off, size);
    const unsigned char *m = d + off;
    if (rd32(m) != 0xDEADBEEFu)
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "blob \"%s\" at offset %llu: metadata sentinel is 0x%08X, expected 0xDEADBEEF", path,
                          (unsigned long long)off, rd32(m));
    if (rd32(m + 4) != code) {
        char tb[160];
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "blob \"%s\" at offset %llu: dtype code is %u (%s), but the MIL declares %s (code %u)", path,
                          (unsigned long long)off, rd32(m + 4), blob_dtype_name(rd32(m + 4)),
                          type_str(&lit->type, tb, sizeof tb), code);
    }
    uint64_t bytes = (uint64_t)numel * esize;
    if (rd64(m + 8) != bytes) {
        char tb[160];
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "blob \"%s\" at offset %llu: sizeInBytes is %llu, but %s needs %llu bytes", path,
                          (unsigned long long)off, (unsigned long long)rd64(m + 8), type_str(&lit->type, tb, sizeof tb),
                          (unsigned long long)bytes);
    }
    uint64_t data_off = rd64(m + 16);
    if (data_off < off + 64 || data_off % 64 != 0)
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "blob \"%s\" at offset %llu: data offset is %llu, expected a 64-byte-aligned offset at or "
                          "after %llu (the end of the metadata record)",
                          path, (unsigned long long)off, (unsigned long long)data_off, (unsigned long long)(off + 64));
    if (data_off > size || bytes > size - data_off)
        return check_rule(C, lit->pos, MIL_RULE_BLOB_FORMAT,
                          "blob \"%s\": %llu data bytes at offset %llu run past the end of the blob (%zu bytes)", path,
                          (unsigned long long)bytes, (unsigned long long)data_off, size);
    *src = d + data_off;
    return 0;
}

/* Decodes a located blob of dtype dt (fp16, fp32 or int8) into fp16-rounded floats. */
static void blob_decode(const Checker *C, MilDtype dt, const unsigned char *src, int64_t numel, float *dst) {
    for (int64_t i = 0; i < numel; i++) {
        if (dt == MIL_DT_FP16)
            dst[i] = fp16_round(fp16_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8)), C->flush);
        else if (dt == MIL_DT_FP32)
            dst[i] = fp16_round(fp16_f32_from_bits(rd32(src + 4 * i)), C->flush);
        else
            dst[i] = (float)(int8_t)src[i];
    }
}

/* ------------------------------------------------------------------ literals */

static float lit_round(const Checker *C, double v) { return fp16_round_double(v, C->flush); }

/* Materialises literal `lit` (already known to have the type of value v) into v. Everything
** is validated before the data is allocated. */
static int literal_store(Checker *C, const MilExpr *lit, int v) {
    MilValue *val = &C->g->values[v];
    const MilType *t = &val->type;
    int64_t n = val->numel;
    char tb[160];
    int is_float = t->dtype == MIL_DT_FP16 || t->dtype == MIL_DT_FP32 || t->dtype == MIL_DT_INT8;
    int is_int = t->dtype == MIL_DT_INT32 || t->dtype == MIL_DT_BOOL || t->dtype == MIL_DT_UINT64;
    if (t->dtype == MIL_DT_STRING) {
        if (t->is_tensor) return check_fail(C, lit->pos, "string tensors are not supported");
        val->sdata = lit->str;
        val->is_const = 1;
        return 0;
    }
    if (!is_float && !is_int)
        return check_fail(C, lit->pos,
                          "constants of dtype %s are not supported (fp16, fp32, int8, int32, bool, string)",
                          mil_dtype_name(t->dtype));
    if (t->dtype == MIL_DT_FP16 && lit->exp_spelled && rule_on(C, MIL_RULE_FP16_EXPONENT))
        return check_rule(C, lit->exp_pos, MIL_RULE_FP16_EXPONENT,
                          "const '%s' %s has an fp16 literal in exponent notation; write it as a decimal (%%f) or a "
                          "hex float such as 0x1p-3",
                          val->name, type_str(t, tb, sizeof tb));
    const unsigned char *blob = NULL;
    if (lit->type.is_tensor && lit->is_blob) {
        if (!is_float)
            return check_fail(C, lit->pos, "BLOBFILE tensors of dtype %s are not supported", mil_dtype_name(t->dtype));
        if (blob_locate(C, lit, n, &blob)) return -1;
    } else if (lit->type.is_tensor && lit->n_items != n) {
        return check_fail(C, lit->pos, "the literal has %lld elements, but %s needs %lld", (long long)lit->n_items,
                          type_str(t, tb, sizeof tb), (long long)n);
    }
    if (is_float) val->fdata = malloc((size_t)n * sizeof *val->fdata);
    else val->idata = malloc((size_t)n * sizeof *val->idata);
    if (!val->fdata && !val->idata)
        return check_fail(C, lit->pos, "out of memory for %lld constant elements", (long long)n);
    val->is_const = 1;
    if (blob) {
        blob_decode(C, t->dtype, blob, n, val->fdata);
    } else if (!lit->type.is_tensor) {
        if (is_int) val->idata[0] = lit->inum;
        else val->fdata[0] = t->dtype == MIL_DT_INT8 ? (float)lit->inum : lit_round(C, lit->num);
    } else {
        for (int64_t i = 0; i < n; i++) {
            if (is_int) val->idata[i] = (int64_t)lit->items[i];
            else val->fdata[i] = t->dtype == MIL_DT_INT8 ? (float)lit->items[i] : lit_round(C, lit->items[i]);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ op table (docs/ane-facts.md §2.3) */

enum { ARG_REQ = 1, ARG_CONST = 2, ARG_TUPLE = 4 };
enum { MAX_ARGS = 8 };

typedef struct {
    const char *name;
    int flags;
} ArgSpec;

typedef struct {
    const char *op;
    MilOpKind kind;
    ArgSpec args[MAX_ARGS];
} OpSpec;

static const OpSpec op_specs[] = {
    {"cast", MIL_OP_CAST, {{"x", ARG_REQ}, {"dtype", ARG_REQ | ARG_CONST}}},
    {"conv", MIL_OP_CONV,
     {{"x", ARG_REQ}, {"weight", ARG_REQ}, {"strides", ARG_REQ | ARG_CONST}, {"pad_type", ARG_REQ | ARG_CONST},
      {"pad", ARG_REQ | ARG_CONST}, {"dilations", ARG_REQ | ARG_CONST}, {"groups", ARG_REQ | ARG_CONST}}},
    {"matmul", MIL_OP_MATMUL,
     {{"x", ARG_REQ}, {"y", ARG_REQ}, {"transpose_x", ARG_CONST}, {"transpose_y", ARG_CONST}}},
    {"slice_by_size", MIL_OP_SLICE, {{"x", ARG_REQ}, {"begin", ARG_REQ | ARG_CONST}, {"size", ARG_REQ | ARG_CONST}}},
    {"reshape", MIL_OP_RESHAPE, {{"x", ARG_REQ}, {"shape", ARG_REQ | ARG_CONST}}},
    {"transpose", MIL_OP_TRANSPOSE, {{"x", ARG_REQ}, {"perm", ARG_REQ | ARG_CONST}}},
    {"concat", MIL_OP_CONCAT,
     {{"values", ARG_REQ | ARG_TUPLE}, {"axis", ARG_REQ | ARG_CONST}, {"interleave", ARG_REQ | ARG_CONST}}},
    {"softmax", MIL_OP_SOFTMAX, {{"x", ARG_REQ}, {"axis", ARG_REQ | ARG_CONST}}},
    {"add", MIL_OP_ADD, {{"x", ARG_REQ}, {"y", ARG_REQ}}},
    {"sub", MIL_OP_SUB, {{"x", ARG_REQ}, {"y", ARG_REQ}}},
    {"mul", MIL_OP_MUL, {{"x", ARG_REQ}, {"y", ARG_REQ}}},
    {"pow", MIL_OP_POW, {{"x", ARG_REQ}, {"y", ARG_REQ}}},
    {"reduce_sum", MIL_OP_REDUCE_SUM,
     {{"x", ARG_REQ}, {"axes", ARG_REQ | ARG_CONST}, {"keep_dims", ARG_REQ | ARG_CONST}}},
    {"sigmoid", MIL_OP_SIGMOID, {{"x", ARG_REQ}}},
    {"quantize", MIL_OP_QUANTIZE,
     {{"input", ARG_REQ}, {"output_dtype", ARG_REQ | ARG_CONST}, {"scale", ARG_REQ | ARG_CONST},
      {"zero_point", ARG_CONST}, {"axis", ARG_CONST}}},
    {"dequantize", MIL_OP_DEQUANTIZE,
     {{"input", ARG_REQ}, {"scale", ARG_REQ | ARG_CONST}, {"zero_point", ARG_CONST}, {"axis", ARG_CONST}}},
    {"scaled_dot_product_attention", MIL_OP_SDPA,
     {{"query", ARG_REQ}, {"key", ARG_REQ}, {"value", ARG_REQ}, {"attn_mask", 0}}},
};

static const char op_list[] =
    "cast, conv, matmul, slice_by_size, reshape, transpose, concat, softmax, add, sub, mul, pow, reduce_sum, "
    "sigmoid, quantize, dequantize, scaled_dot_product_attention, const, constexpr_affine_dequantize";

/* The resolved arguments of one statement: value index per spec slot (-1 absent). */
typedef struct {
    const OpSpec *spec;
    int v[MAX_ARGS];
    MilPos pos[MAX_ARGS];
    const MilExpr *tuple; /* the ARG_TUPLE argument */
} Args;

static int spec_slot(const OpSpec *s, const char *name) {
    for (int i = 0; i < MAX_ARGS && s->args[i].name; i++)
        if (strcmp(s->args[i].name, name) == 0) return i;
    return -1;
}

static void spec_names(const OpSpec *s, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < MAX_ARGS && s->args[i].name && used < n; i++) {
        int w = snprintf(buf + used, n - used, "%s%s", i ? ", " : "", s->args[i].name);
        used += w < 0 ? 0 : (size_t)w;
    }
}

static int arg_of(const Args *a, const char *name) { return a->v[spec_slot(a->spec, name)]; }
static MilPos arg_pos(const Args *a, const char *name) { return a->pos[spec_slot(a->spec, name)]; }

/* Resolves a name to an earlier value. */
static int resolve_name(Checker *C, const MilExpr *e, const char *what) {
    int v = name_lookup(C, e->name);
    if (v < 0)
        return check_fail(C, e->pos, "%s '%s' is not defined (values must be defined before they are used)", what,
                          e->name),
               -1;
    return v;
}

static int args_resolve(Checker *C, const MilStmt *s, const OpSpec *spec, Args *a) {
    memset(a, 0, sizeof *a);
    a->spec = spec;
    for (int i = 0; i < MAX_ARGS; i++) a->v[i] = -1;
    int seen[MAX_ARGS] = {0};
    char names[256];
    for (int i = 0; i < s->n_args; i++) {
        const MilArg *arg = &s->args[i];
        int slot = spec_slot(spec, arg->key);
        if (slot < 0) {
            spec_names(spec, names, sizeof names);
            return check_fail(C, arg->pos, "unknown argument '%s' for %s (its arguments are: %s)", arg->key, spec->op,
                              names);
        }
        if (seen[slot]) return check_fail(C, arg->pos, "argument '%s' is given twice", arg->key);
        seen[slot] = 1;
        a->pos[slot] = arg->pos;
        int flags = spec->args[slot].flags;
        const MilExpr *e = &arg->val;
        if (flags & ARG_TUPLE) {
            if (e->kind != MIL_EXPR_TUPLE)
                return check_fail(C, e->pos, "argument '%s' must be a tuple of names such as (a, b)", arg->key);
            for (int k = 0; k < e->n_elems; k++) {
                if (e->elems[k].kind != MIL_EXPR_NAME)
                    return check_fail(C, e->elems[k].pos, "the elements of '%s' must be names of values", arg->key);
                if (resolve_name(C, &e->elems[k], "value") < 0) return -1;
            }
            a->tuple = e;
            a->v[slot] = 0;
            continue;
        }
        if (e->kind == MIL_EXPR_TUPLE)
            return check_fail(C, e->pos, "argument '%s' takes one value, not a tuple", arg->key);
        if (e->kind == MIL_EXPR_LITERAL)
            return check_rule(C, e->pos, MIL_RULE_NAMED_ARGS,
                              "argument '%s' is an inline literal; only names of const values are known to compile "
                              "(declare it: e.g. bool NAME = const()[name = string(\"NAME\"), val = bool(true)];)",
                              arg->key);
        int v = resolve_name(C, e, "argument");
        if (v < 0) return -1;
        if ((flags & ARG_CONST) && !C->g->values[v].is_const)
            return check_fail(C, e->pos, "argument '%s' must be a const value, but '%s' is computed at run time",
                              arg->key, e->name);
        a->v[slot] = v;
    }
    for (int i = 0; i < MAX_ARGS && spec->args[i].name; i++) {
        if ((spec->args[i].flags & ARG_REQ) && !seen[i]) {
            spec_names(spec, names, sizeof names);
            return check_fail(C, s->op_pos, "missing argument '%s' for %s (its arguments are: %s)", spec->args[i].name,
                              spec->op, names);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ const parameters */

static const MilValue *val(Checker *C, int v) { return &C->g->values[v]; }

static int param_bool(Checker *C, int v, MilPos pos, const char *what, int *out) {
    const MilValue *x = val(C, v);
    if (x->type.dtype != MIL_DT_BOOL || x->type.rank != 0)
        return check_fail(C, pos, "%s must be a bool scalar, found '%s' of type %s", what, x->name,
                          mil_dtype_name(x->type.dtype));
    *out = x->idata[0] != 0;
    return 0;
}

static int param_int(Checker *C, int v, MilPos pos, const char *what, int64_t *out) {
    const MilValue *x = val(C, v);
    if (x->type.dtype != MIL_DT_INT32 || x->type.rank != 0) {
        char tb[160];
        return check_fail(C, pos, "%s must be an int32 scalar, found '%s' of type %s", what, x->name,
                          type_str(&x->type, tb, sizeof tb));
    }
    *out = x->idata[0];
    return 0;
}

/* An int32 vector; n_expected < 0: any length 1..MIL_MAX_RANK. */
static int param_ints(Checker *C, int v, MilPos pos, const char *what, int n_expected, int64_t *out, int *n) {
    const MilValue *x = val(C, v);
    char tb[160];
    if (x->type.dtype != MIL_DT_INT32 || x->type.rank != 1)
        return check_fail(C, pos, "%s must be a tensor<int32, [N]>, found '%s' of type %s", what, x->name,
                          type_str(&x->type, tb, sizeof tb));
    int len = (int)x->type.dims[0];
    if (n_expected >= 0 ? len != n_expected : (len < 1 || len > MIL_MAX_RANK))
        return n_expected >= 0
                   ? check_fail(C, pos, "%s must have %d elements, '%s' has %d", what, n_expected, x->name, len)
                   : check_fail(C, pos, "%s must have 1 to %d elements, '%s' has %d", what, MIL_MAX_RANK, x->name, len);
    for (int i = 0; i < len; i++) out[i] = x->idata[i];
    *n = len;
    return 0;
}

static int param_string(Checker *C, int v, MilPos pos, const char *what, const char **out) {
    const MilValue *x = val(C, v);
    if (x->type.dtype != MIL_DT_STRING || x->type.rank != 0)
        return check_fail(C, pos, "%s must be a string, found '%s' of type %s", what, x->name,
                          mil_dtype_name(x->type.dtype));
    *out = x->sdata;
    return 0;
}

/* The scale of quantize (zero_ok = 0: > 0, a division by zero has no int8 result) or of
** dequantize (zero_ok = 1: >= 0, a zero scale gives zeros): a finite scalar of dtype dt (the
** other operand's, as CoreML's op definitions require). Negative scales are legal in CoreML
** but never written by us: rejected (ours, conservative). */
static int param_scale(Checker *C, int v, MilPos pos, const char *what, MilDtype dt, int zero_ok, float *out) {
    const MilValue *x = val(C, v);
    char tb[160];
    if (x->type.dtype != dt || x->type.rank != 0)
        return check_rule(C, pos, MIL_RULE_QUANT_FORM,
                          "%s must be a %s scalar (per-tensor: per-channel scales, axis and zero_point are not "
                          "accepted for quantize/dequantize, docs/ane-facts.md §2.3), found '%s' of type %s",
                          what, mil_dtype_name(dt), x->name, type_str(&x->type, tb, sizeof tb));
    float s = x->fdata[0];
    if (!isfinite(s) || s < 0 || (!zero_ok && s == 0))
        return check_rule(C, pos, MIL_RULE_QUANT_FORM, "%s must be %s and finite, found %g", what,
                          zero_ok ? "non-negative" : "positive", (double)s);
    *out = s;
    return 0;
}

/* axis in [-rank, rank) normalised to [0, rank). */
static int axis_norm(Checker *C, MilPos pos, int64_t axis, int rank, const char *what, int *out) {
    if (axis < -rank || axis >= rank)
        return check_fail(C, pos, "%s %lld is out of range for rank %d (expected %d..%d)", what, (long long)axis, rank,
                          -rank, rank - 1);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return 0;
}

/* Where int8 tensors may go: only into dequantize (docs/ane-facts.md §2.3 shows quantize -> dequantize
** and nothing else; CoreML's op set has no int8 arithmetic on the ANE that the seed used). */
static int int8_misuse(Checker *C, const MilValue *x, MilPos pos, const char *what) {
    return check_rule(C, pos, MIL_RULE_INT8_DEQUANTIZE_ONLY,
                      "%s '%s' is int8; an int8 tensor can only be the input of dequantize (quantize -> dequantize, "
                      "docs/ane-facts.md §2.3)",
                      what, x->name);
}

static int need_float(Checker *C, int v, MilPos pos, const char *what) {
    const MilValue *x = val(C, v);
    if (x->type.dtype == MIL_DT_INT8) return int8_misuse(C, x, pos, what);
    if (!dt_is_float(x->type.dtype))
        return check_fail(C, pos, "%s '%s' must be fp16, found %s", what, x->name, mil_dtype_name(x->type.dtype));
    return 0;
}

/* Operands of data movement (slice, reshape, transpose, concat): fp16/fp32 (stored as fp16). */
static int need_data(Checker *C, int v, MilPos pos, const char *what) {
    const MilValue *x = val(C, v);
    if (x->type.dtype == MIL_DT_INT8) return int8_misuse(C, x, pos, what);
    if (!dt_is_float(x->type.dtype))
        return check_fail(C, pos, "%s '%s' is %s; only fp16 and fp32 tensors can be operands", what, x->name,
                          mil_dtype_name(x->type.dtype));
    return 0;
}

static int need_same_dtype(Checker *C, int a, int b, MilPos pos) {
    if (val(C, a)->type.dtype != val(C, b)->type.dtype)
        return check_fail(C, pos, "'%s' is %s but '%s' is %s; the operands must have the same dtype", val(C, a)->name,
                          mil_dtype_name(val(C, a)->type.dtype), val(C, b)->name,
                          mil_dtype_name(val(C, b)->type.dtype));
    return 0;
}

static int need_rank(Checker *C, int v, MilPos pos, int lo, const char *what) {
    const MilValue *x = val(C, v);
    if (x->type.rank < lo)
        return check_fail(C, pos, "%s '%s' must have rank >= %d, found rank %d", what, x->name, lo, x->type.rank);
    return 0;
}

/* numpy-style broadcast of a and b (trailing dims aligned; equal, or one of them 1). */
static int broadcast(Checker *C, MilPos pos, const MilType *a, const MilType *b, const char *an, const char *bn,
                     int rank_out_max, MilType *out, int64_t *dims_out, int *rank_out) {
    int r = a->rank > b->rank ? a->rank : b->rank;
    if (r > rank_out_max) return check_fail(C, pos, "broadcast rank %d is too large", r);
    for (int i = 0; i < r; i++) {
        int64_t da = i < r - a->rank ? 1 : a->dims[i - (r - a->rank)];
        int64_t db = i < r - b->rank ? 1 : b->dims[i - (r - b->rank)];
        if (da != db && da != 1 && db != 1) {
            char ta[160], tb[160];
            return check_fail(C, pos, "shapes of '%s' %s and '%s' %s do not broadcast (dimension %d: %lld vs %lld)", an,
                              type_str(a, ta, sizeof ta), bn, type_str(b, tb, sizeof tb), i - r, (long long)da,
                              (long long)db);
        }
        dims_out[i] = da == 1 ? db : da;
    }
    *rank_out = r;
    if (out) *out = type_make(a->dtype, r, dims_out);
    return 0;
}

/* ------------------------------------------------------------------ per-op inference */

static int infer_op(Checker *C, const MilStmt *s, const Args *a, MilOp *op, MilType *t) {
    char tb[160], tb2[160];
    int64_t dims[MIL_MAX_RANK];
    int rank = 0;
    switch (op->kind) {
    case MIL_OP_ADD:
    case MIL_OP_SUB:
    case MIL_OP_MUL:
    case MIL_OP_POW: {
        op->x = arg_of(a, "x");
        op->y = arg_of(a, "y");
        if (need_float(C, op->x, arg_pos(a, "x"), "x") || need_float(C, op->y, arg_pos(a, "y"), "y") ||
            need_same_dtype(C, op->x, op->y, s->op_pos))
            return -1;
        return broadcast(C, s->op_pos, &val(C, op->x)->type, &val(C, op->y)->type, val(C, op->x)->name,
                         val(C, op->y)->name, MIL_MAX_RANK, t, dims, &rank);
    }
    case MIL_OP_SIGMOID:
        op->x = arg_of(a, "x");
        if (need_float(C, op->x, arg_pos(a, "x"), "x")) return -1;
        *t = val(C, op->x)->type;
        return 0;
    case MIL_OP_CAST: {
        op->x = arg_of(a, "x");
        const char *dt = NULL;
        if (need_float(C, op->x, arg_pos(a, "x"), "x") ||
            param_string(C, arg_of(a, "dtype"), arg_pos(a, "dtype"), "dtype", &dt))
            return -1;
        *t = val(C, op->x)->type;
        if (strcmp(dt, "fp16") == 0) t->dtype = MIL_DT_FP16;
        else if (strcmp(dt, "fp32") == 0) t->dtype = MIL_DT_FP32;
        else return check_fail(C, arg_pos(a, "dtype"), "cast dtype must be \"fp16\" or \"fp32\", found \"%s\"", dt);
        return 0;
    }
    case MIL_OP_SOFTMAX: {
        op->x = arg_of(a, "x");
        int64_t axis = 0;
        if (need_float(C, op->x, arg_pos(a, "x"), "x") || need_rank(C, op->x, arg_pos(a, "x"), 1, "x") ||
            param_int(C, arg_of(a, "axis"), arg_pos(a, "axis"), "axis", &axis) ||
            axis_norm(C, arg_pos(a, "axis"), axis, val(C, op->x)->type.rank, "axis", &op->axis))
            return -1;
        *t = val(C, op->x)->type;
        return 0;
    }
    case MIL_OP_REDUCE_SUM: {
        op->x = arg_of(a, "x");
        int64_t axes[MIL_MAX_RANK] = {0};
        int n = 0;
        if (need_float(C, op->x, arg_pos(a, "x"), "x") || need_rank(C, op->x, arg_pos(a, "x"), 1, "x") ||
            param_ints(C, arg_of(a, "axes"), arg_pos(a, "axes"), "axes", -1, axes, &n) ||
            param_bool(C, arg_of(a, "keep_dims"), arg_pos(a, "keep_dims"), "keep_dims", &op->keep_dims))
            return -1;
        const MilType *xt = &val(C, op->x)->type;
        op->axes_mask = 0;
        for (int i = 0; i < n; i++) {
            int ax = 0;
            if (axis_norm(C, arg_pos(a, "axes"), axes[i], xt->rank, "axes element", &ax)) return -1;
            if (op->axes_mask & (1u << ax))
                return check_fail(C, arg_pos(a, "axes"), "axis %d is listed twice in axes", ax);
            op->axes_mask |= 1u << ax;
        }
        for (int i = 0; i < xt->rank; i++) {
            if (!(op->axes_mask & (1u << i))) dims[rank++] = xt->dims[i];
            else if (op->keep_dims) dims[rank++] = 1;
        }
        *t = type_make(xt->dtype, rank, dims);
        return 0;
    }
    case MIL_OP_MATMUL: {
        op->x = arg_of(a, "x");
        op->y = arg_of(a, "y");
        op->transpose_x = op->transpose_y = 0;
        if (arg_of(a, "transpose_x") >= 0 &&
            param_bool(C, arg_of(a, "transpose_x"), arg_pos(a, "transpose_x"), "transpose_x", &op->transpose_x))
            return -1;
        if (arg_of(a, "transpose_y") >= 0 &&
            param_bool(C, arg_of(a, "transpose_y"), arg_pos(a, "transpose_y"), "transpose_y", &op->transpose_y))
            return -1;
        if (need_float(C, op->x, arg_pos(a, "x"), "x") || need_float(C, op->y, arg_pos(a, "y"), "y") ||
            need_same_dtype(C, op->x, op->y, s->op_pos) || need_rank(C, op->x, arg_pos(a, "x"), 2, "x") ||
            need_rank(C, op->y, arg_pos(a, "y"), 2, "y"))
            return -1;
        const MilType *xt = &val(C, op->x)->type, *yt = &val(C, op->y)->type;
        int64_t M = xt->dims[xt->rank - 2], Kx = xt->dims[xt->rank - 1];
        if (op->transpose_x) M = xt->dims[xt->rank - 1], Kx = xt->dims[xt->rank - 2];
        int64_t Ky = yt->dims[yt->rank - 2], N = yt->dims[yt->rank - 1];
        if (op->transpose_y) Ky = yt->dims[yt->rank - 1], N = yt->dims[yt->rank - 2];
        if (Kx != Ky)
            return check_fail(C, s->op_pos,
                              "inner dimensions differ: x '%s' %s%s gives K = %lld, y '%s' %s%s gives K = %lld",
                              val(C, op->x)->name, type_str(xt, tb, sizeof tb), op->transpose_x ? " (transposed)" : "",
                              (long long)Kx, val(C, op->y)->name, type_str(yt, tb2, sizeof tb2),
                              op->transpose_y ? " (transposed)" : "", (long long)Ky);
        MilType bx = type_make(xt->dtype, xt->rank - 2, xt->dims), by = type_make(yt->dtype, yt->rank - 2, yt->dims);
        if (broadcast(C, s->op_pos, &bx, &by, val(C, op->x)->name, val(C, op->y)->name, MIL_MAX_RANK - 2, NULL, dims,
                      &rank))
            return -1;
        dims[rank++] = M;
        dims[rank++] = N;
        *t = type_make(xt->dtype, rank, dims);
        return 0;
    }
    case MIL_OP_CONV: {
        op->x = arg_of(a, "x");
        op->y = arg_of(a, "weight");
        const MilValue *w = val(C, op->y);
        if (!w->is_const)
            return check_rule(C, arg_pos(a, "weight"), MIL_RULE_CONV_CONST_WEIGHT,
                              "Can't use dynamic weight with conv: weight '%s' is computed at run time; conv weights "
                              "must be const (use matmul for dynamic weights, docs/ane-facts.md §2.5)",
                              w->name);
        if (need_float(C, op->x, arg_pos(a, "x"), "x") || need_float(C, op->y, arg_pos(a, "weight"), "weight") ||
            need_same_dtype(C, op->x, op->y, s->op_pos))
            return -1;
        const MilType *xt = &val(C, op->x)->type, *wt = &w->type;
        if (xt->rank != 4)
            return check_fail(C, arg_pos(a, "x"), "conv x must be rank 4 [N, C_in, H, W], found %s",
                              type_str(xt, tb, sizeof tb));
        if (wt->rank != 4 || wt->dims[2] != 1 || wt->dims[3] != 1)
            return check_rule(
                C, arg_pos(a, "weight"), MIL_RULE_CONV_1X1,
                "conv weight must be [C_out, C_in/groups, 1, 1] (only 1x1 kernels are supported), found %s",
                type_str(wt, tb, sizeof tb));
        int64_t g = 0, v4[4] = {0};
        int n = 0;
        const char *pad_type = NULL;
        if (param_int(C, arg_of(a, "groups"), arg_pos(a, "groups"), "groups", &g)) return -1;
        if (g < 1) return check_fail(C, arg_pos(a, "groups"), "groups must be >= 1, found %lld", (long long)g);
        int64_t ic = xt->dims[1], oc = wt->dims[0];
        if (ic > MIL_CONV_MAX_INPUT_CHANNELS)
            return check_rule(C, arg_pos(a, "x"), MIL_RULE_CONV_CHANNELS,
                              "conv with %lld input channels: the emulator rejects more than %d (the real compiler "
                              "rejected 32000, docs/ane-facts.md §2.5); use matmul",
                              (long long)ic, MIL_CONV_MAX_INPUT_CHANNELS);
        if (ic % g != 0 || oc % g != 0 || wt->dims[1] * g != ic)
            return check_fail(C, arg_pos(a, "weight"),
                              "conv weight %s does not fit x with %lld input channels and groups = %lld (expected "
                              "[C_out, %lld, 1, 1] with C_out divisible by groups)",
                              type_str(wt, tb, sizeof tb), (long long)ic, (long long)g,
                              (long long)(ic % g == 0 ? ic / g : 0));
        op->groups = (int)g;
        if (param_ints(C, arg_of(a, "strides"), arg_pos(a, "strides"), "strides", 2, v4, &n)) return -1;
        if (v4[0] != 1 || v4[1] != 1)
            return check_rule(C, arg_pos(a, "strides"), MIL_RULE_CONV_1X1, "only strides [1, 1] are supported");
        if (param_ints(C, arg_of(a, "dilations"), arg_pos(a, "dilations"), "dilations", 2, v4, &n)) return -1;
        if (v4[0] != 1 || v4[1] != 1)
            return check_rule(C, arg_pos(a, "dilations"), MIL_RULE_CONV_1X1, "only dilations [1, 1] are supported");
        if (param_ints(C, arg_of(a, "pad"), arg_pos(a, "pad"), "pad", 4, v4, &n)) return -1;
        if (v4[0] || v4[1] || v4[2] || v4[3])
            return check_rule(C, arg_pos(a, "pad"), MIL_RULE_CONV_1X1, "only pad [0, 0, 0, 0] is supported");
        if (param_string(C, arg_of(a, "pad_type"), arg_pos(a, "pad_type"), "pad_type", &pad_type)) return -1;
        if (strcmp(pad_type, "valid") != 0)
            return check_rule(C, arg_pos(a, "pad_type"), MIL_RULE_CONV_1X1, "pad_type must be \"valid\", found \"%s\"",
                              pad_type);
        dims[0] = xt->dims[0], dims[1] = oc, dims[2] = xt->dims[2], dims[3] = xt->dims[3];
        *t = type_make(xt->dtype, 4, dims);
        return 0;
    }
    case MIL_OP_SLICE: {
        op->x = arg_of(a, "x");
        const MilType *xt = &val(C, op->x)->type;
        int64_t size[MIL_MAX_RANK] = {0};
        int n = 0;
        if (need_data(C, op->x, arg_pos(a, "x"), "x") || need_rank(C, op->x, arg_pos(a, "x"), 1, "x") ||
            param_ints(C, arg_of(a, "begin"), arg_pos(a, "begin"), "begin", xt->rank, op->begin, &n) ||
            param_ints(C, arg_of(a, "size"), arg_pos(a, "size"), "size", xt->rank, size, &n))
            return -1;
        for (int i = 0; i < xt->rank; i++) {
            int64_t b = op->begin[i], sz = size[i] == -1 ? xt->dims[i] - b : size[i];
            if (b < 0 || b >= xt->dims[i] || sz < 1 || sz > xt->dims[i] - b)
                return check_fail(C, arg_pos(a, "begin"),
                                  "slice begin %lld size %lld on axis %d is outside %s (size -1 means to the end)",
                                  (long long)b, (long long)size[i], i, type_str(xt, tb, sizeof tb));
            dims[i] = sz;
        }
        int last = xt->rank - 1;
        if (op->begin[last] % MIL_SLICE_ALIGN != 0 && rule_on(C, MIL_RULE_SLICE_ALIGN))
            return check_rule(C, arg_pos(a, "begin"), MIL_RULE_SLICE_ALIGN,
                              "slice of '%s' %s begins at %lld on its innermost axis (axis %d), not a multiple of %d",
                              val(C, op->x)->name, type_str(xt, tb, sizeof tb), (long long)op->begin[last], last,
                              MIL_SLICE_ALIGN);
        *t = type_make(xt->dtype, xt->rank, dims);
        return 0;
    }
    case MIL_OP_RESHAPE: {
        op->x = arg_of(a, "x");
        const MilValue *x = val(C, op->x);
        int64_t shape[MIL_MAX_RANK] = {0};
        int n = 0, infer = -1;
        if (need_data(C, op->x, arg_pos(a, "x"), "x") ||
            param_ints(C, arg_of(a, "shape"), arg_pos(a, "shape"), "shape", -1, shape, &n))
            return -1;
        int64_t known = 1;
        for (int i = 0; i < n; i++) {
            if (shape[i] == -1 && infer < 0) {
                infer = i;
            } else if (shape[i] < 1) {
                return check_fail(C, arg_pos(a, "shape"), "shape entries must be positive or a single -1, found %lld",
                                  (long long)shape[i]);
            } else {
                if (known > x->numel) break;
                known *= shape[i];
            }
        }
        if (infer >= 0) {
            if (known < 1 || known > x->numel || x->numel % known != 0)
                return check_fail(C, arg_pos(a, "shape"), "cannot infer the -1 in the shape for %lld elements",
                                  (long long)x->numel);
            shape[infer] = x->numel / known;
            known = x->numel;
        }
        if (known != x->numel)
            return check_fail(C, arg_pos(a, "shape"),
                              "reshape of '%s' %s (%lld elements) to a shape with a different count", x->name,
                              type_str(&x->type, tb, sizeof tb), (long long)x->numel);
        *t = type_make(x->type.dtype, n, shape);
        return 0;
    }
    case MIL_OP_TRANSPOSE: {
        op->x = arg_of(a, "x");
        const MilType *xt = &val(C, op->x)->type;
        int64_t perm[MIL_MAX_RANK] = {0};
        int n = 0;
        unsigned seen = 0;
        if (need_data(C, op->x, arg_pos(a, "x"), "x") || need_rank(C, op->x, arg_pos(a, "x"), 1, "x") ||
            param_ints(C, arg_of(a, "perm"), arg_pos(a, "perm"), "perm", xt->rank, perm, &n))
            return -1;
        for (int i = 0; i < n; i++) {
            if (perm[i] < 0 || perm[i] >= n || (seen & (1u << perm[i])))
                return check_fail(C, arg_pos(a, "perm"), "perm must be a permutation of 0..%d", n - 1);
            seen |= 1u << perm[i];
            op->perm[i] = (int)perm[i];
            dims[i] = xt->dims[perm[i]];
        }
        *t = type_make(xt->dtype, xt->rank, dims);
        return 0;
    }
    case MIL_OP_CONCAT: {
        const MilExpr *tu = a->tuple;
        int64_t axis = 0;
        int interleave = 0;
        if (param_bool(C, arg_of(a, "interleave"), arg_pos(a, "interleave"), "interleave", &interleave)) return -1;
        if (interleave)
            return check_rule(C, arg_pos(a, "interleave"), MIL_RULE_CONCAT_NO_INTERLEAVE,
                              "interleave = true is not supported (only false is known to work)");
        op->n_values = tu->n_elems;
        op->values = malloc((size_t)tu->n_elems * sizeof *op->values);
        if (!op->values) return check_fail(C, s->op_pos, "out of memory");
        for (int i = 0; i < tu->n_elems; i++) op->values[i] = name_lookup(C, tu->elems[i].name);
        for (int i = 0; i < op->n_values; i++)
            if (need_data(C, op->values[i], tu->elems[i].pos, "value")) return -1;
        const MilType *t0 = &val(C, op->values[0])->type;
        if (t0->rank < 1) return check_fail(C, tu->pos, "concat operands must be tensors");
        if (param_int(C, arg_of(a, "axis"), arg_pos(a, "axis"), "axis", &axis) ||
            axis_norm(C, arg_pos(a, "axis"), axis, t0->rank, "axis", &op->axis))
            return -1;
        for (int d = 0; d < t0->rank; d++) dims[d] = t0->dims[d];
        for (int i = 1; i < op->n_values; i++) {
            const MilType *ti = &val(C, op->values[i])->type;
            int ok = ti->dtype == t0->dtype && ti->rank == t0->rank;
            for (int d = 0; ok && d < t0->rank; d++)
                if (d != op->axis && ti->dims[d] != t0->dims[d]) ok = 0;
            if (!ok)
                return check_fail(C, tu->elems[i].pos,
                                  "'%s' %s does not match '%s' %s outside axis %d", val(C, op->values[i])->name,
                                  type_str(ti, tb, sizeof tb), val(C, op->values[0])->name,
                                  type_str(t0, tb2, sizeof tb2), op->axis);
            dims[op->axis] += ti->dims[op->axis];
        }
        *t = type_make(t0->dtype, t0->rank, dims);
        return 0;
    }
    case MIL_OP_QUANTIZE:
    case MIL_OP_DEQUANTIZE: {
        /* CoreML (iOS17 quantize/dequantize) also has optional zero_point and axis (per-channel);
        ** the seed only ever wrote a scalar scale without them (docs/ane-facts.md §2.3). */
        static const char *const unshown[] = {"zero_point", "axis"};
        for (int k = 0; k < 2; k++)
            if (arg_of(a, unshown[k]) >= 0)
                return check_rule(C, arg_pos(a, unshown[k]), MIL_RULE_QUANT_FORM,
                                  "%s is not accepted: CoreML defines it for %s, but only a scalar scale without "
                                  "zero_point or axis is reported to run on the ANE (docs/ane-facts.md §2.3)",
                                  unshown[k], s->op);
        op->x = arg_of(a, "input");
        const MilValue *x = val(C, op->x);
        if (op->kind == MIL_OP_QUANTIZE) {
            const char *odt = NULL;
            if (need_float(C, op->x, arg_pos(a, "input"), "input") ||
                param_scale(C, arg_of(a, "scale"), arg_pos(a, "scale"), "scale", x->type.dtype, 0, &op->scale) ||
                param_string(C, arg_of(a, "output_dtype"), arg_pos(a, "output_dtype"), "output_dtype", &odt))
                return -1;
            if (strcmp(odt, "int8") != 0)
                return check_rule(C, arg_pos(a, "output_dtype"), MIL_RULE_QUANT_FORM,
                                  "output_dtype must be \"int8\" (uint8 is CoreML's other choice, unused here), found "
                                  "\"%s\"",
                                  odt);
            *t = x->type;
            t->dtype = MIL_DT_INT8;
            return 0;
        }
        if (x->type.dtype != MIL_DT_INT8)
            return check_fail(C, arg_pos(a, "input"), "input '%s' must be int8, found %s", x->name,
                              mil_dtype_name(x->type.dtype));
        if (param_scale(C, arg_of(a, "scale"), arg_pos(a, "scale"), "scale", MIL_DT_FP16, 1, &op->scale)) return -1;
        *t = x->type;
        t->dtype = MIL_DT_FP16; /* CoreML: the output has the scale's dtype */
        return 0;
    }
    case MIL_OP_SDPA: {
        if (arg_of(a, "attn_mask") >= 0)
            return check_rule(C, arg_pos(a, "attn_mask"), MIL_RULE_SDPA_NO_MASK,
                              "attn_mask is not accepted: the hardware is reported to ignore it (docs/ane-facts.md §2.5), so "
                              "the result would be unmasked; build masked attention from matmul, add (mask), softmax "
                              "and matmul");
        op->x = arg_of(a, "query");
        op->y = arg_of(a, "key");
        op->z = arg_of(a, "value");
        if (need_float(C, op->x, arg_pos(a, "query"), "query") || need_float(C, op->y, arg_pos(a, "key"), "key") ||
            need_float(C, op->z, arg_pos(a, "value"), "value") || need_same_dtype(C, op->x, op->y, s->op_pos) ||
            need_same_dtype(C, op->x, op->z, s->op_pos) || need_rank(C, op->x, arg_pos(a, "query"), 2, "query"))
            return -1;
        const MilType *q = &val(C, op->x)->type, *k = &val(C, op->y)->type, *v = &val(C, op->z)->type;
        int r = q->rank, ok = k->rank == r && v->rank == r;
        for (int i = 0; ok && i < r - 2; i++)
            if (k->dims[i] != q->dims[i] || v->dims[i] != q->dims[i]) ok = 0;
        if (ok && (k->dims[r - 1] != q->dims[r - 1] || k->dims[r - 2] != v->dims[r - 2])) ok = 0;
        if (!ok)
            return check_fail(C, s->op_pos, "query [..., L, E], key [..., S, E] and value [..., S, Ev] do not agree");
        for (int i = 0; i < r; i++) dims[i] = q->dims[i];
        dims[r - 1] = v->dims[r - 1];
        *t = type_make(q->dtype, r, dims);
        return 0;
    }
    }
    return check_fail(C, s->op_pos, "internal: unhandled op");
}

/* ------------------------------------------------------------------ statements */

/* [name = string("...")] and nothing else, for ordinary ops. */
static int check_name_attr_only(Checker *C, const MilStmt *s) {
    int have_name = 0;
    for (int i = 0; i < s->n_attrs; i++) {
        const MilArg *at = &s->attrs[i];
        if (strcmp(at->key, "name") != 0)
            return check_fail(C, at->pos, "unknown attribute '%s' (ops take only [name = string(\"...\")])", at->key);
        if (have_name) return check_fail(C, at->pos, "attribute 'name' is given twice");
        if (at->val.kind != MIL_EXPR_LITERAL || at->val.type.dtype != MIL_DT_STRING || at->val.type.is_tensor)
            return check_fail(C, at->val.pos, "the name attribute must be string(\"...\")");
        have_name = 1;
    }
    if (!have_name) return check_fail(C, s->pos, "missing [name = string(\"%s\")] attribute", s->name);
    return 0;
}

static int check_declared(Checker *C, const MilStmt *s, const MilType *inferred) {
    if (!types_equal(&s->type, inferred)) {
        char d[160], f[160];
        return check_fail(C, s->pos, "declared type %s does not match the inferred type %s",
                          type_str(&s->type, d, sizeof d), type_str(inferred, f, sizeof f));
    }
    return 0;
}

/* TYPE NAME = const()[name = string("NAME"), val = LITERAL]; */
static int check_const(Checker *C, const MilStmt *s) {
    if (s->n_args)
        return check_fail(C, s->args[0].pos, "const takes no arguments; its value goes in [val = ...]");
    const MilExpr *v = NULL;
    int have_name = 0;
    for (int i = 0; i < s->n_attrs; i++) {
        const MilArg *at = &s->attrs[i];
        if (strcmp(at->key, "name") == 0 && !have_name) {
            if (at->val.kind != MIL_EXPR_LITERAL || at->val.type.dtype != MIL_DT_STRING || at->val.type.is_tensor)
                return check_fail(C, at->val.pos, "the name attribute must be string(\"...\")");
            have_name = 1;
        } else if (strcmp(at->key, "val") == 0 && !v) {
            v = &at->val;
        } else {
            return check_fail(C, at->pos, "unexpected attribute '%s' for const (expected name and val, once each)",
                              at->key);
        }
    }
    if (!have_name) return check_fail(C, s->pos, "missing [name = string(\"%s\")] attribute", s->name);
    if (!v) return check_fail(C, s->pos, "const without a val attribute");
    if (v->kind != MIL_EXPR_LITERAL || v->bare)
        return check_fail(C, v->pos, "val must be a typed literal such as fp16(1.0) or tensor<...>(...)");
    if (!types_equal(&s->type, &v->type) || s->type.is_tensor != v->type.is_tensor) {
        char d[160], f[160];
        return check_fail(C, v->pos, "declared type %s does not match the literal's type %s",
                          type_str(&s->type, d, sizeof d), type_str(&v->type, f, sizeof f));
    }
    int vi = value_add(C, s->name, s->name_pos, &s->type);
    if (vi < 0) return -1;
    return literal_store(C, v, vi);
}

/* A scale or zero_point attribute of constexpr_affine_dequantize: a scalar literal of dtype dt or
** an inline rank-1 tensor<dt, [n_axis]> literal (per-channel along the axis). *n gets 1 or
** n_axis; values are read from the literal (checked by the caller). */
static int affine_param(Checker *C, const MilExpr *e, MilDtype dt, int64_t n_axis, int axis, const char *what,
                        int64_t *n) {
    char tb[160];
    if (e->type.dtype != dt || (e->type.is_tensor && e->type.rank != 1))
        return check_fail(C, e->pos, "%s must be a %s scalar or a tensor<%s, [%lld]> (one per channel of axis %d), "
                          "found %s", what, mil_dtype_name(dt), mil_dtype_name(dt), (long long)n_axis, axis,
                          type_str(&e->type, tb, sizeof tb));
    if (!e->type.is_tensor) {
        *n = 1;
        return 0;
    }
    if (e->is_blob)
        return check_fail(C, e->pos, "%s must be an inline literal, not a BLOBFILE", what);
    if (e->type.dims[0] != n_axis)
        return check_fail(C, e->pos, "%s has %lld elements, but quantized_data has %lld along axis %d (a per-channel "
                          "%s needs one per channel)", what, (long long)e->type.dims[0], (long long)n_axis, axis, what);
    if (e->n_items != n_axis)
        return check_fail(C, e->pos, "the %s literal has %lld values, but its type says %lld", what,
                          (long long)e->n_items, (long long)n_axis);
    *n = n_axis;
    return 0;
}

/* fp16 tensor = constexpr_affine_dequantize()[axis, name, quantized_data, scale, zero_point]:
** w = (q - zero_point) * scale, rounded once to fp16, evaluated now. scale (fp16) and
** zero_point (int8) are scalars or per-channel vectors along `axis` (CoreML iOS16
** constexpr_ops). Per-channel is NOT verified on the device (docs/ane-facts.md §7 question 7: the seed
** only used a per-tensor scale); it is accepted here so that per-row int8 weights can be
** emulated, and docs/macos.md lists it among the unchecked assumptions. Scales must be finite
** and >= 0 (ours: a zero scale gives a zero channel, as quant.h writes for all-zero rows). */
static int check_affine_dequantize(Checker *C, const MilStmt *s) {
    if (s->n_args)
        return check_fail(C, s->args[0].pos, "constexpr_affine_dequantize takes no arguments; parameters go in [...]");
    static const char *const keys[] = {"axis", "name", "quantized_data", "scale", "zero_point"};
    const MilExpr *p[5] = {0};
    for (int i = 0; i < s->n_attrs; i++) {
        const MilArg *at = &s->attrs[i];
        int k = -1;
        for (int j = 0; j < 5; j++)
            if (strcmp(at->key, keys[j]) == 0) k = j;
        if (k < 0)
            return check_fail(
                C, at->pos, "unknown attribute '%s' (expected axis, name, quantized_data, scale, zero_point)", at->key);
        if (p[k]) return check_fail(C, at->pos, "attribute '%s' is given twice", at->key);
        if (at->val.kind != MIL_EXPR_LITERAL || at->val.bare)
            return check_fail(C, at->val.pos, "attribute '%s' must be a typed literal", at->key);
        p[k] = &at->val;
    }
    for (int j = 0; j < 5; j++)
        if (!p[j]) return check_fail(C, s->pos, "missing attribute '%s'", keys[j]);
    const MilExpr *q = p[2], *sc = p[3], *zp = p[4], *ax = p[0];
    if (p[1]->type.dtype != MIL_DT_STRING || p[1]->type.is_tensor)
        return check_fail(C, p[1]->pos, "the name attribute must be string(\"...\")");
    if (!q->type.is_tensor || q->type.dtype != MIL_DT_INT8) {
        char tb[160];
        return check_fail(C, q->pos, "quantized_data must be a tensor<int8, [...]> literal, found %s",
                          type_str(&q->type, tb, sizeof tb));
    }
    if (ax->type.is_tensor || ax->type.dtype != MIL_DT_INT32) return check_fail(C, ax->pos, "axis must be int32(...)");
    int axis = 0;
    if (axis_norm(C, ax->pos, ax->inum, q->type.rank, "axis", &axis)) return -1;
    if (sc->exp_spelled && rule_on(C, MIL_RULE_FP16_EXPONENT))
        return check_rule(
            C, sc->exp_pos, MIL_RULE_FP16_EXPONENT,
            "the scale of '%s' has an fp16 literal in exponent notation; write it as a decimal (%%f) or a "
            "hex float such as 0x1p-3",
            s->name);
    int64_t n_axis = q->type.dims[axis], n_sc = 1, n_zp = 1;
    if (affine_param(C, sc, MIL_DT_FP16, n_axis, axis, "scale", &n_sc) ||
        affine_param(C, zp, MIL_DT_INT8, n_axis, axis, "zero_point", &n_zp))
        return -1;
    for (int64_t c = 0; c < n_sc; c++) {
        double v = sc->type.is_tensor ? sc->items[c] : sc->num;
        if (!isfinite(v) || v < 0)
            return check_rule(C, sc->pos, MIL_RULE_QUANT_FORM, "scale must be finite and non-negative, found %g%s", v,
                              sc->type.is_tensor ? " in the per-channel vector" : "");
    }
    MilType out = q->type;
    out.dtype = MIL_DT_FP16;
    if (check_declared(C, s, &out)) return -1;
    int vi = value_add(C, s->name, s->name_pos, &out);
    if (vi < 0) return -1;
    MilValue *v = &C->g->values[vi];
    const unsigned char *blob = NULL;
    if (q->is_blob) {
        if (blob_locate(C, q, v->numel, &blob)) return -1;
    } else if (q->n_items != v->numel) {
        return check_fail(C, q->pos, "quantized_data has %lld elements, expected %lld", (long long)q->n_items,
                          (long long)v->numel);
    }
    v->fdata = malloc((size_t)v->numel * sizeof *v->fdata);
    if (!v->fdata) return check_fail(C, s->pos, "out of memory for %lld elements", (long long)v->numel);
    v->is_const = 1;
    if (blob) {
        blob_decode(C, MIL_DT_INT8, blob, v->numel, v->fdata);
    } else {
        for (int64_t i = 0; i < v->numel; i++) v->fdata[i] = (float)q->items[i];
    }
    /* Element i is on channel (i / inner) % n_axis. (q - zp) is an integer in [-255, 255] and
    ** the scale an fp16 value, so the fp32 product is exact and fp16_round is the one rounding. */
    int64_t inner = 1;
    for (int d = axis + 1; d < q->type.rank; d++) inner *= q->type.dims[d];
    for (int64_t i = 0; i < v->numel; i++) {
        int64_t c = (i / inner) % n_axis;
        double sv = sc->type.is_tensor ? sc->items[n_sc > 1 ? c : 0] : sc->num;
        double zv = zp->type.is_tensor ? zp->items[n_zp > 1 ? c : 0] : (double)zp->inum;
        float scale = fp16_round_double(sv, C->flush), z = (float)zv;
        v->fdata[i] = fp16_round((v->fdata[i] - z) * scale, C->flush);
    }
    return 0;
}

static int check_stmt(Checker *C, const MilStmt *s) {
    if (strcmp(s->op, "const") == 0) return check_const(C, s);
    if (strcmp(s->op, "constexpr_affine_dequantize") == 0) return check_affine_dequantize(C, s);
    const OpSpec *spec = NULL;
    for (size_t i = 0; i < sizeof op_specs / sizeof op_specs[0]; i++)
        if (strcmp(op_specs[i].op, s->op) == 0) spec = &op_specs[i];
    if (!spec)
        return check_rule(C, s->op_pos, MIL_RULE_KNOWN_OP, "unknown op '%s' (the emulator supports: %s)", s->op,
                          op_list);
    if (spec->kind == MIL_OP_CAST && rule_on(C, MIL_RULE_NO_CAST))
        return check_rule(
            C, s->op_pos, MIL_RULE_NO_CAST,
            "cast is refused: the training pipelines that run on the device take fp16 I/O and never cast");
    Args a;
    if (args_resolve(C, s, spec, &a) || check_name_attr_only(C, s)) return -1;
    MilOp *op = &C->g->ops[C->g->n_ops];
    memset(op, 0, sizeof *op);
    op->kind = spec->kind;
    op->name = s->name;
    op->pos = s->pos;
    op->x = op->y = op->z = -1;
    C->g->n_ops++; /* counted now so mil_graph_free releases op->values on failure */
    MilType t;
    if (infer_op(C, s, &a, op, &t) || check_declared(C, s, &t)) return -1;
    int v = value_add(C, s->name, s->name_pos, &t);
    if (v < 0) return -1;
    op->out = v;
    return 0;
}

/* [1, C, 1, S] fp16 with S a multiple of 32: the only I/O shape the emulator takes. */
static int check_io_type(Checker *C, const MilType *t, const char *what, const char *name, MilPos pos) {
    char tb[160];
    if (!t->is_tensor || t->dtype != MIL_DT_FP16)
        return check_rule(C, pos, MIL_RULE_IO_FP16, "%s '%s' is %s; I/O must be fp16 (no fp32 I/O, no cast)", what,
                          name, type_str(t, tb, sizeof tb));
    if (t->rank != 4)
        return check_rule(C, pos, MIL_RULE_IO_SHAPE, "%s '%s' is %s: I/O must be rank 4 [1, C, 1, S], found rank %d",
                          what, name, type_str(t, tb, sizeof tb), t->rank);
    if (t->dims[0] != 1 || t->dims[2] != 1)
        return check_rule(C, pos, MIL_RULE_IO_SHAPE, "%s '%s' is %s: I/O must be [1, C, 1, S]", what, name,
                          type_str(t, tb, sizeof tb));
    if (t->dims[3] % MIL_IO_SPATIAL_MULTIPLE != 0)
        return check_rule(C, pos, MIL_RULE_IO_WIDTH_32,
                          "%s '%s' is %s: the spatial width S = %lld must be a multiple of %d", what, name,
                          type_str(t, tb, sizeof tb), (long long)t->dims[3], MIL_IO_SPATIAL_MULTIPLE);
    return 0;
}

static int check_program(Checker *C) {
    const MilAst *ast = &C->g->ast;
    if (strcmp(ast->version, "1.3") != 0)
        return check_rule(C, ast->version_pos, MIL_RULE_PROGRAM_FORM, "program(%s): only program(1.3) is supported",
                          ast->version);
    if (strcmp(ast->func_name, "main") != 0)
        return check_rule(C, ast->func_pos, MIL_RULE_PROGRAM_FORM, "the function must be called main, found '%s'",
                          ast->func_name);
    if (strcmp(ast->opset, "ios18") != 0)
        return check_rule(C, ast->opset_pos, MIL_RULE_PROGRAM_FORM, "opset <%s>: only <ios18> is supported",
                          ast->opset);
    if (ast->n_inputs != 1)
        return check_rule(C, ast->n_inputs ? ast->inputs[1].pos : ast->func_pos, MIL_RULE_ONE_INPUT,
                          "the function has %d inputs; the ANE program must have exactly one input (multi-input "
                          "requests fail with 0x1d, docs/ane-facts.md §1.7): pack inputs along the spatial axis",
                          ast->n_inputs);
    const MilParam *in = &ast->inputs[0];
    if (check_io_type(C, &in->type, "input", in->name, in->pos)) return -1;
    C->g->input = value_add(C, in->name, in->pos, &in->type);
    if (C->g->input < 0) return -1;

    for (int i = 0; i < ast->n_stmts; i++) {
        C->stmt = &ast->stmts[i];
        if (check_stmt(C, &ast->stmts[i])) return -1;
    }
    C->stmt = NULL;

    if (ast->n_outputs != 1)
        return check_rule(C, ast->outputs[1].pos, MIL_RULE_ONE_OUTPUT,
                          "the function has %d outputs; the ANE program must have exactly one output (concatenate "
                          "results along the channel axis)",
                          ast->n_outputs);
    const MilRet *r = &ast->outputs[0];
    int v = name_lookup(C, r->name);
    if (v < 0) return check_fail(C, r->pos, "output '%s' is not defined", r->name);
    if (check_io_type(C, &C->g->values[v].type, "output", r->name, r->pos)) return -1;
    C->g->output = v;
    return 0;
}

int mil_check(MilAst *ast, const AneBlob *blobs, int n_blobs, const MilCheckOptions *opt, MilGraph *g, Err *err) {
    memset(g, 0, sizeof *g);
    g->ast = *ast;
    memset(ast, 0, sizeof *ast);
    g->input = g->output = -1;
    MilCheckReport local;
    Checker C = {.g = g, .blobs = blobs, .n_blobs = n_blobs < 0 ? 0 : n_blobs, .err = err};
    C.flush = opt ? opt->flush_subnormals : 0;
    C.max_elements = opt && opt->max_elements > 0 ? opt->max_elements : MIL_DEFAULT_MAX_ELEMENTS;
    C.limits = opt && opt->limits == ANE_LIMITS_PROBED ? ANE_LIMITS_PROBED : ANE_LIMITS_STRICT;
    C.report = opt && opt->report ? opt->report : &local;
    memset(C.report, 0, sizeof *C.report);
    int n = g->ast.n_stmts + 1;
    C.n_slots = 16;
    while (C.n_slots < 2 * n) C.n_slots *= 2;
    C.slots = malloc((size_t)C.n_slots * sizeof *C.slots);
    g->values = calloc((size_t)n, sizeof *g->values);
    g->ops = calloc((size_t)n, sizeof *g->ops);
    if (!C.slots || !g->values || !g->ops) {
        free(C.slots);
        mil_graph_free(g);
        return err_set(err, "out of memory checking a MIL program of %d statements", n - 1);
    }
    for (int i = 0; i < C.n_slots; i++) C.slots[i] = -1;
    int rc = check_program(&C);
    C.report->n_ops = g->n_ops;
    C.report->n_values = g->n_values;
    free(C.slots);
    if (rc) {
        mil_graph_free(g);
        return -1;
    }
    return 0;
}

void mil_graph_free(MilGraph *g) {
    if (!g) return;
    for (int i = 0; i < g->n_values && g->values; i++) {
        free(g->values[i].fdata);
        free(g->values[i].idata);
    }
    for (int i = 0; i < g->n_ops && g->ops; i++) free(g->ops[i].values);
    free(g->values);
    free(g->ops);
    mil_ast_free(&g->ast);
    memset(g, 0, sizeof *g);
}

int mil_check_text(const char *text, const AneBlob *blobs, int n_blobs, const MilCheckOptions *opt, AneShape *in,
                   AneShape *out, Err *err) {
    MilAst ast;
    MilGraph g;
    if (opt && opt->report) memset(opt->report, 0, sizeof *opt->report);
    if (mil_parse(text, &ast, err) != 0) {
        if (opt && opt->report && err && strstr(err->msg, "rule fp16-literal-range"))
            opt->report->rule = rules[MIL_RULE_FP16_RANGE].name;
        return -1;
    }
    if (mil_check(&ast, blobs, n_blobs, opt, &g, err) != 0) return -1;
    const MilType *it = &g.values[g.input].type, *ot = &g.values[g.output].type;
    if (in) *in = (AneShape){(int)it->dims[1], (int)it->dims[3]};
    if (out) *out = (AneShape){(int)ot->dims[1], (int)ot->dims[3]};
    mil_graph_free(&g);
    return 0;
}
