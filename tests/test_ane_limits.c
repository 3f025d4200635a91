/*
** test_ane_limits.c — the device limits (docs/ane-facts.md §9): the checker's named rules in
** both modes, and the planner's programs against them.
**
**   - every rule of the table (emu/mil.h MilRuleId) has a minimal program that breaks it: the
**     emulator refuses it naming the rule (and, for the limits on tensors, the tensor and its
**     shape) under --ane-limits strict; under probed, a convention's program compiles and a
**     hard or measured rule's is refused the same way; the darwin device's pre-check (through
**     the test double of the framework) names the same rules;
**   - the MIL writer spells fp16 constants as exact hex floats that pass the strict rules;
**   - every preset (stories15m, stories42m, stories110m, qwen3-0.6b) at seq 256, 512 and 1024,
**     full training, LoRA r8 on q,k,v,o, LoRA r8 on all seven modules with dropout, and LoRA
**     r8 over an int8 base: the planner's kernels parse and pass the strict checker, with the
**     input and output shapes it planned (generated and checked, not run: the big ones would
**     take minutes on the emulator; the small models' kernels run in test_ane_kernels and the
**     backend tests, including layouts that need column blocks and more rows than C).
**
** -v prints every plan's shapes and cost.
*/
#include <limits.h>
#include <stdint.h>

#include "backend/ane/device.h"
#include "util/fp16.h"
#include "backend/ane/emu/mil.h"
#include "backend/ane/inspect.h"
#include "backend/ane/kernels.h"
#include "backend/ane/mil_write.h"
#include "model/config.h"
#include "test.h"
#include "util/parallel.h"

static int verbose;

/* ------------------------------------------------------------------ helpers */

#define HDR                                                                                                        \
    "program(1.3)\n[buildInfo = dict<string, string>({{\"coremlc-component-MIL\", \"3510.2.1\"}, "                 \
    "{\"coremlc-version\", \"3505.4.1\"}, {\"coremltools-component-milinternal\", \"\"}, "                         \
    "{\"coremltools-version\", \"9.0\"}})]\n{\n"

/* The program text: header, `func main<ios18>(INPUTS) {`, BODY, `} -> (OUTS);`, `}` (malloc'd). */
static char *prog(const char *inputs, const char *body, const char *outs) {
    const char *fmt = HDR "    func main<ios18>(%s) {\n%s    } -> (%s);\n}\n";
    size_t n = strlen(fmt) + strlen(inputs) + strlen(body) + strlen(outs) + 1;
    char *s = malloc(n);
    if (!s) abort();
    snprintf(s, n, fmt, inputs, body, outs);
    return s;
}

static AneDevice *make_emu(AneLimits limits) {
    AneEmuOptions o;
    ane_emu_default_options(&o);
    o.compile_budget = INT_MAX;
    o.limits = limits;
    Err err = {{0}};
    AneDevice *d = ane_emu_create(&o, &err);
    if (!d) {
        fprintf(stderr, "ane_emu_create: %s\n", err.msg);
        exit(1);
    }
    return d;
}

/* 0 when dev compiles mil; else -1 with the message in err. */
static int compile_on(AneDevice *dev, const char *mil, const AneBlob *blobs, int nb, Err *err) {
    AneProgram *p = dev->compile(dev, mil, blobs, nb, err);
    if (!p) return -1;
    dev->release(dev, p);
    return 0;
}

/* A canonical MILBlob file of n fp16 ones; *size set (malloc'd). */
static unsigned char *ones_blob(size_t n, size_t *size) {
    float *v = malloc(n * sizeof *v);
    if (!v) abort();
    for (size_t i = 0; i < n; i++) v[i] = 1.0f;
    unsigned char *b = milw_blob_file_fp16(v, n, size);
    free(v);
    return b;
}

/* ------------------------------------------------------------------ the rules, one program each */

#define X4 "tensor<fp16, [1, 4, 1, 32]> x"
#define NAMED(v) "[name = string(\"" v "\")]"

typedef struct {
    const char *rule;
    const char *inputs, *body, *outs;
    int blob;                  /* 1: the program reads a [4, 4, 1, 1] fp16 blob w.bin (2: a broken one) */
    const char *needle, *needle2; /* more text the strict refusal must hold: the tensor's name and shape */
    const char *probed_rule;   /* a convention: NULL (the program compiles under probed); otherwise the
                               ** rule probed refuses it with (the same one, or the rule a stricter
                               ** one masked under strict) */
} RuleCase;

static const RuleCase cases[] = {
    {"program-form", X4, "", "x", 0, "only <ios18>", NULL, "program-form"},
    {"one-input", X4 ", " X4, "", "x", 0, "2 inputs", NULL, "one-input"},
    {"one-output", X4, "        tensor<fp16, [1, 4, 1, 32]> y = add(x = x, y = x)" NAMED("y") ";\n", "x, y", 0,
     "2 outputs", NULL, "one-output"},
    {"io-fp16", "tensor<fp32, [1, 4, 1, 32]> x", "", "x", 0, "input 'x' is tensor<fp32, [1, 4, 1, 32]>", NULL,
     "io-fp16"},
    {"io-shape", "tensor<fp16, [1, 4, 32]> x", "", "x", 0, "input 'x' is tensor<fp16, [1, 4, 32]>", NULL, "io-shape"},
    {"io-width-32", "tensor<fp16, [1, 4, 1, 48]> x", "", "x", 0, "tensor<fp16, [1, 4, 1, 48]>", NULL, "io-width-32"},
    {"known-op", X4, "        tensor<fp16, [1, 4, 1, 32]> y = gelu(x = x)" NAMED("y") ";\n", "y", 0,
     "unknown op 'gelu'", NULL, "known-op"},
    {"named-args", X4, "        tensor<fp16, [1, 4, 1, 32]> y = add(x = x, y = fp16(0x1p+0))" NAMED("y") ";\n", "y", 0,
     "argument 'y' is an inline literal", NULL, "named-args"},
    {"conv-const-weight", X4,
     "        tensor<int32, [2]> s = const()[name = string(\"s\"), val = tensor<int32, [2]>([1, 1])];\n"
     "        tensor<int32, [4]> p = const()[name = string(\"p\"), val = tensor<int32, [4]>([0, 0, 0, 0])];\n"
     "        string v = const()[name = string(\"v\"), val = string(\"valid\")];\n"
     "        int32 g = const()[name = string(\"g\"), val = int32(1)];\n"
     "        tensor<int32, [4]> sh = const()[name = string(\"sh\"), val = tensor<int32, [4]>([32, 4, 1, 1])];\n"
     "        tensor<fp16, [32, 4, 1, 1]> w2 = reshape(shape = sh, x = x)" NAMED(
         "w2") ";\n"
               "        tensor<fp16, [1, 32, 1, 32]> y = conv(dilations = s, groups = g, pad = p, pad_type = v, "
               "strides = s, "
               "weight = w2, x = x)" NAMED("y") ";\n",
     "y", 0, "weight 'w2' is computed at run time", NULL, "conv-const-weight"},
    {"conv-1x1", X4,
     "        tensor<fp16, [4, 4, 1, 1]> w = const()[name = string(\"w\"), val = tensor<fp16, [4, 4, 1, 1]>(BLOBFILE("
     "path = string(\"@model_path/weights/w.bin\"), offset = uint64(64)))];\n"
     "        tensor<int32, [2]> s = const()[name = string(\"s\"), val = tensor<int32, [2]>([2, 2])];\n"
     "        tensor<int32, [2]> d = const()[name = string(\"d\"), val = tensor<int32, [2]>([1, 1])];\n"
     "        tensor<int32, [4]> p = const()[name = string(\"p\"), val = tensor<int32, [4]>([0, 0, 0, 0])];\n"
     "        string v = const()[name = string(\"v\"), val = string(\"valid\")];\n"
     "        int32 g = const()[name = string(\"g\"), val = int32(1)];\n"
     "        tensor<fp16, [1, 4, 1, 32]> y = conv(dilations = d, groups = g, pad = p, pad_type = v, strides = s, "
     "weight = w, x = x)" NAMED("y") ";\n",
     "y", 1, "only strides [1, 1]", NULL, "conv-1x1"},
    /* the channel cap is an axis: strict's axis-16384 refuses the input first */
    {"axis-16384", "tensor<fp16, [1, 16416, 1, 32]> x",
     "        tensor<fp16, [4, 16416, 1, 1]> w = const()[name = string(\"w\"), val = tensor<fp16, [4, 16416, 1, 1]>("
     "BLOBFILE(path = string(\"@model_path/weights/w.bin\"), offset = uint64(64)))];\n"
     "        tensor<int32, [2]> s = const()[name = string(\"s\"), val = tensor<int32, [2]>([1, 1])];\n"
     "        tensor<int32, [4]> p = const()[name = string(\"p\"), val = tensor<int32, [4]>([0, 0, 0, 0])];\n"
     "        string v = const()[name = string(\"v\"), val = string(\"valid\")];\n"
     "        int32 g = const()[name = string(\"g\"), val = int32(1)];\n"
     "        tensor<fp16, [1, 4, 1, 32]> y = conv(dilations = s, groups = g, pad = p, pad_type = v, strides = s, "
     "weight = w, x = x)" NAMED("y") ";\n",
     "y", 3, "tensor 'x' tensor<fp16, [1, 16416, 1, 32]> has axis 1 of 16416", NULL, "conv-input-channels"},
    {"sdpa-no-mask", X4,
     "        tensor<int32, [4]> sh = const()[name = string(\"sh\"), val = tensor<int32, [4]>([1, 4, 32, 1])];\n"
     "        tensor<fp16, [1, 4, 32, 1]> q = reshape(shape = sh, x = x)" NAMED(
         "q") ";\n"
              "        tensor<fp16, [1, 4, 32, 1]> a = scaled_dot_product_attention(query = q, key = q, value = q, "
              "attn_mask = q)" NAMED("a") ";\n"
                                          "        tensor<int32, [4]> sb = const()[name = string(\"sb\"), val = "
                                          "tensor<int32, [4]>([1, 4, 1, 32])];\n"
                                          "        tensor<fp16, [1, 4, 1, 32]> y = reshape(shape = sb, x = a)" NAMED(
                                              "y") ";\n",
     "y", 0, "attn_mask is not accepted", NULL, "sdpa-no-mask"},
    {"concat-no-interleave", X4,
     "        int32 ax = const()[name = string(\"ax\"), val = int32(1)];\n"
     "        bool il = const()[name = string(\"il\"), val = bool(true)];\n"
     "        tensor<fp16, [1, 8, 1, 32]> y = concat(axis = ax, interleave = il, values = (x, x))" NAMED("y") ";\n",
     "y", 0, "interleave = true", NULL, "concat-no-interleave"},
    {"blob-format", X4,
     "        tensor<fp16, [4, 4, 1, 1]> w = const()[name = string(\"w\"), val = tensor<fp16, [4, 4, 1, 1]>(BLOBFILE("
     "path = string(\"@model_path/weights/w.bin\"), offset = uint64(64)))];\n",
     "x", 2, "metadata sentinel", NULL, "blob-format"},
    {"int8-dequantize-only", X4,
     "        fp16 sc = const()[name = string(\"sc\"), val = fp16(0x1p-3)];\n"
     "        string dt = const()[name = string(\"dt\"), val = string(\"int8\")];\n"
     "        tensor<int8, [1, 4, 1, 32]> q = quantize(input = x, output_dtype = dt, scale = sc)" NAMED(
         "q") ";\n"
              "        tensor<int8, [1, 4, 1, 32]> y = add(x = q, y = q)" NAMED("y") ";\n",
     "y", 0, "'q' is int8", NULL, "int8-dequantize-only"},
    {"quantize-form", X4,
     "        fp16 sc = const()[name = string(\"sc\"), val = fp16(0x1p-3)];\n"
     "        int8 zp = const()[name = string(\"zp\"), val = int8(0)];\n"
     "        string dt = const()[name = string(\"dt\"), val = string(\"int8\")];\n"
     "        tensor<int8, [1, 4, 1, 32]> q = quantize(input = x, output_dtype = dt, scale = sc, zero_point = "
     "zp)" NAMED("q") ";\n"
                      "        tensor<fp16, [1, 4, 1, 32]> y = dequantize(input = q, scale = sc)" NAMED("y") ";\n",
     "y", 0, "zero_point is not accepted", NULL, "quantize-form"},
    {"fp16-literal-range", X4, "        fp16 c = const()[name = string(\"c\"), val = fp16(70000.0)];\n", "x", 0,
     "fp16 literal '70000.0' is out of range", NULL, "fp16-literal-range"},
    {"emu-tensor-elements", X4,
     "        tensor<fp16, [2, 16384, 16384]> c = const()[name = string(\"c\"), val = tensor<fp16, [2, 16384, 16384]>("
     "[0])];\n",
     "x", 0, "tensor<fp16, [2, 16384, 16384]> has more elements", NULL, "emu-tensor-elements"},
    {"input-width", "tensor<fp16, [1, 4, 1, 17920]> x", "", "x", 0, "input 'x' tensor<fp16, [1, 4, 1, 17920]>",
     "17920 wide", "input-width"},
    {"axis-65536", "tensor<fp16, [1, 8, 1, 16384]> x",
     "        tensor<int32, [4]> sh = const()[name = string(\"sh\"), val = tensor<int32, [4]>([1, 1, 1, 131072])];\n"
     "        tensor<fp16, [1, 1, 1, 131072]> f = reshape(shape = sh, x = x)" NAMED(
         "f") ";\n"
              "        tensor<int32, [4]> sb = const()[name = string(\"sb\"), val = tensor<int32, [4]>([1, 8, 1, "
              "16384])];\n"
              "        tensor<fp16, [1, 8, 1, 16384]> y = reshape(shape = sb, x = f)" NAMED("y") ";\n",
     "y", 0, "tensor 'f' tensor<fp16, [1, 1, 1, 131072]> has axis 3 of 131072, above 65536", NULL, "axis-65536"},
    /* the case: qwen3's half-RoPE partner was reshaped to [1, 16, 1, 32768] */
    {"axis-16384", "tensor<fp16, [1, 16, 1, 2048]> x",
     "        tensor<int32, [4]> sh = const()[name = string(\"sh\"), val = tensor<int32, [4]>([1, 1, 1, 32768])];\n"
     "        tensor<fp16, [1, 1, 1, 32768]> f = reshape(shape = sh, x = x)" NAMED(
         "f") ";\n"
              "        tensor<int32, [4]> sb = const()[name = string(\"sb\"), val = tensor<int32, [4]>([1, 16, 1, "
              "2048])];\n"
              "        tensor<fp16, [1, 16, 1, 2048]> y = reshape(shape = sb, x = f)" NAMED("y") ";\n",
     "y", 0, "tensor 'f' tensor<fp16, [1, 1, 1, 32768]> has axis 3 of 32768, above 16384", NULL, NULL},
    {"slice-align-32", "tensor<fp16, [1, 4, 1, 64]> x",
     "        tensor<int32, [4]> b = const()[name = string(\"b\"), val = tensor<int32, [4]>([0, 0, 0, 17])];\n"
     "        tensor<int32, [4]> s = const()[name = string(\"s\"), val = tensor<int32, [4]>([1, 4, 1, 32])];\n"
     "        tensor<fp16, [1, 4, 1, 32]> y = slice_by_size(begin = b, size = s, x = x)" NAMED("y") ";\n",
     "y", 0, "slice of 'x' tensor<fp16, [1, 4, 1, 64]> begins at 17 on its innermost axis (axis 3)", "value 'y'", NULL},
    {"fp16-literal-exponent", X4,
     "        fp16 c = const()[name = string(\"c\"), val = fp16(1.01327896e-06)];\n"
     "        tensor<fp16, [1, 4, 1, 32]> y = mul(x = x, y = c)" NAMED("y") ";\n",
     "y", 0, "const 'c' fp16 has an fp16 literal in exponent notation", "MIL 5:", NULL},
    {"no-cast", X4,
     "        string f32 = const()[name = string(\"f32\"), val = string(\"fp32\")];\n"
     "        string f16 = const()[name = string(\"f16\"), val = string(\"fp16\")];\n"
     "        tensor<fp32, [1, 4, 1, 32]> c = cast(dtype = f32, x = x)" NAMED(
         "c") ";\n"
              "        tensor<fp16, [1, 4, 1, 32]> y = cast(dtype = f16, x = c)" NAMED("y") ";\n",
     "y", 0, "value 'c' (cast)", NULL, NULL},
};

/* The program of case c; program-form's uses opset ios17. */
static char *case_program(const RuleCase *c) {
    char *m = prog(c->inputs, c->body, c->outs);
    if (!strcmp(c->rule, "program-form")) {
        char *at = strstr(m, "<ios18>");
        memcpy(at, "<ios17>", 7);
    }
    return m;
}

static void test_every_rule(void) {
    AneDevice *strict = make_emu(ANE_LIMITS_STRICT), *probed = make_emu(ANE_LIMITS_PROBED);
    int covered[MIL_RULE_COUNT] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const RuleCase *c = &cases[i];
        const MilRule *r = mil_rule_by_name(c->rule);
        CHECK(r != NULL, "case %zu: no rule '%s'", i, c->rule);
        if (!r) continue;
        covered[r - mil_rule(0)] = 1;
        if (c->probed_rule && mil_rule_by_name(c->probed_rule))
            covered[mil_rule_by_name(c->probed_rule) - mil_rule(0)] = 1;
        char *mil = case_program(c);
        size_t bsize = 0;
        unsigned char *blob = c->blob ? ones_blob(c->blob == 3 ? 4 * 16416 : 16, &bsize) : NULL;
        if (c->blob == 2) blob[64] = 0; /* a broken sentinel */
        AneBlob b = {"@model_path/weights/w.bin", blob, bsize};
        char want[96];
        snprintf(want, sizeof want, "rule %s:", c->rule);
        Err err = {{0}};
        int rc = compile_on(strict, mil, &b, c->blob ? 1 : 0, &err);
        CHECK(rc != 0 && strstr(err.msg, want) && strstr(err.msg, c->needle) && (!c->needle2 || strstr(err.msg, c->needle2)),
              "strict: the program breaking %s is refused naming it, '%s' and '%s': %s", c->rule, c->needle,
              c->needle2 ? c->needle2 : "", rc ? err.msg : "compiled");
        /* The report names the rule too (ane-plan, doctor). */
        MilCheckReport rep;
        MilCheckOptions co = {0, 0, ANE_LIMITS_STRICT, &rep};
        Err e2 = {{0}};
        CHECK(mil_check_text(mil, &b, c->blob ? 1 : 0, &co, NULL, NULL, &e2) != 0 && rep.rule &&
                  !strcmp(rep.rule, c->rule),
              "%s: the check report names it (found %s)", c->rule, rep.rule ? rep.rule : "none");
        err.msg[0] = '\0';
        rc = compile_on(probed, mil, &b, c->blob ? 1 : 0, &err);
        if (!c->probed_rule) {
            CHECK(r->kind == MIL_RULE_CONVENTION && !mil_rule_applies((MilRuleId)(r - mil_rule(0)), ANE_LIMITS_PROBED),
                  "%s is a strict-only convention", c->rule);
            CHECK(rc == 0, "probed: the program breaking only %s compiles: %s", c->rule, err.msg);
        } else {
            char want_p[96];
            snprintf(want_p, sizeof want_p, "rule %s:", c->probed_rule);
            CHECK(rc != 0 && strstr(err.msg, want_p), "probed: the program is refused naming %s: %s", c->probed_rule,
                  rc ? err.msg : "compiled");
            if (!strcmp(c->probed_rule, c->rule))
                CHECK(r->kind != MIL_RULE_CONVENTION, "%s applies in every mode", c->rule);
        }
        if (verbose) printf("     %-22s probed: %.150s\n", c->rule, err.msg[0] ? err.msg : "compiles");
        free(mil);
        free(blob);
    }
    for (int i = 0; i < MIL_RULE_COUNT; i++)
        CHECK(covered[i], "rule %s has no test program", mil_rule((MilRuleId)i)->name);
    strict->destroy(strict);
    probed->destroy(probed);
}

/* The table itself: unique names, a line and a source each; the modes' names. */
static void test_rule_table(void) {
    int conventions = 0;
    for (int i = 0; i < MIL_RULE_COUNT; i++) {
        const MilRule *r = mil_rule((MilRuleId)i);
        CHECK(r && r->name && r->what && r->source && r->name[0] && r->what[0] && r->source[0], "rule %d described", i);
        if (!r) continue;
        CHECK(mil_rule_by_name(r->name) == r, "%s: its name is unique", r->name);
        CHECK(mil_rule_applies((MilRuleId)i, ANE_LIMITS_STRICT), "%s applies under strict", r->name);
        conventions += r->kind == MIL_RULE_CONVENTION;
        CHECK(mil_rule_applies((MilRuleId)i, ANE_LIMITS_PROBED) == (r->kind != MIL_RULE_CONVENTION),
              "%s: probed checks exactly the hard and measured rules", r->name);
    }
    CHECK(conventions == 4, "four strict-only conventions (axis-16384, slice-align-32, fp16-literal-exponent, no-cast)");
    CHECK(mil_rule_by_name("nope") == NULL && mil_rule(MIL_RULE_COUNT) == NULL, "unknown rules");
    AneLimits l = ANE_LIMITS_PROBED;
    Err err = {{0}};
    CHECK(ane_limits_parse("--ane-limits", "strict", &l, &err) == 0 && l == ANE_LIMITS_STRICT &&
              ane_limits_parse("--ane-limits", "probed", &l, &err) == 0 && l == ANE_LIMITS_PROBED,
          "strict and probed parse");
    CHECK(ane_limits_parse("--ane-limits", "loose", &l, &err) != 0 &&
              strstr(err.msg, "--ane-limits: expected strict or probed, found 'loose'"),
          "%s", err.msg);
    CHECK(!strcmp(ane_limits_name(ANE_LIMITS_STRICT), "strict") && !strcmp(ane_limits_name(ANE_LIMITS_PROBED), "probed"),
          "names");
    AneEmuOptions o;
    ane_emu_default_options(&o);
    CHECK(o.limits == ANE_LIMITS_STRICT, "strict is the default");
    o.limits = (AneLimits)7;
    CHECK(ane_emu_create(&o, &err) == NULL && strstr(err.msg, "limits must be"), "%s", err.msg);
}

/* ------------------------------------------------------------------ the writer's literals */

/* fp16 constants are written as exact hex floats (the seed's fp16(0x1p-3) spelling): the value
** reads back exactly, nothing is in exponent notation, and the program passes strict. */
static void test_writer_hex_literals(void) {
    const double values[] = {0.125, -1.0, 1.01327896e-06, 65504.0, 0x1p-24, 3 * 0x1p-24, 0.1, -0.0, 1.0 / 3.0, 0.0};
    const int n = (int)(sizeof values / sizeof values[0]);
    MilW *w = milw_create();
    MilT x = milw_input(w, 4, 32);
    for (int i = 0; i < n; i++) x = milw_mul_s(w, x, values[i]);
    Err err = {{0}};
    char *mil = milw_finish(w, x, &err);
    milw_free(w);
    CHECK(mil != NULL, "%s", err.msg);
    if (!mil) return;
    CHECK(strstr(mil, "fp16(0x1p-3)") && strstr(mil, "fp16(-0x1p+0)") && strstr(mil, "fp16(0x1p-24)") &&
              strstr(mil, "fp16(0x1.8p-23)") && strstr(mil, "fp16(0x1.ffcp+15)"),
          "hex spellings as the seed writes them:\n%s", mil);
    MilAst ast;
    CHECK(mil_parse(mil, &ast, &err) == 0, "%s", err.msg);
    int consts = 0, exact = 0;
    for (int i = 0; i < ast.n_stmts; i++) {
        const MilStmt *s = &ast.stmts[i];
        if (strcmp(s->op, "const") || s->type.dtype != MIL_DT_FP16) continue;
        const MilExpr *v = &s->attrs[1].val;
        consts++;
        CHECK(!v->exp_spelled, "%s is not in exponent notation", s->name);
        for (int k = 0; k < n; k++)
            if (v->num == (double)fp16_round_double(values[k], 0) && !!signbit(v->num) == !!signbit(values[k])) {
                exact++;
                break;
            }
    }
    CHECK(consts == n && exact == n, "%d constants, %d read back as the fp16 value written", consts, exact);
    mil_ast_free(&ast);
    MilCheckOptions co = {0, 0, ANE_LIMITS_STRICT, NULL};
    CHECK(mil_check_text(mil, NULL, 0, &co, NULL, NULL, &err) == 0, "strict: %s", err.msg);
    free(mil);
}

/* ------------------------------------------------------------------ the planner's programs */

typedef struct {
    const char *name;
    int rank;
    unsigned targets;
    int dropout, int8;
} PlanVariant;

static const PlanVariant plan_variants[] = {
    {"full", 0, 0, 0, 0},
    {"LoRA r8 q,k,v,o", 8, 0x0fu, 0, 0},
    {"LoRA r8 all + dropout", 8, 0x7fu, 1, 0},
    {"int8 base + LoRA r8 q,k,v,o", 8, 0x0fu, 0, 1},
};

/* Generates, parses and checks (strict) both kernels of plan p; 0 when both pass with the I/O
** shapes planned. The largest axis seen goes to *max_axis. */
static int check_plan(const char *what, const AneLayerPlan *p, int64_t *max_axis) {
    int bad = 0;
    for (int id = 0; id < ANE_KERNELS; id++) {
        AneKernel k;
        Err err = {{0}};
        if (ane_kernel_make(p, (AneKernelId)id, &k, &err)) {
            CHECK(0, "%s: %s", what, err.msg);
            bad++;
            continue;
        }
        MilCheckReport rep;
        MilCheckOptions co = {0, 0, ANE_LIMITS_STRICT, &rep};
        AneShape in, out;
        int rc = mil_check_text(k.mil, k.blobs, k.n_blobs, &co, &in, &out, &err);
        CHECK(rc == 0, "%s %s: strict refuses: %s", what, k.name, err.msg);
        if (rc == 0) {
            CHECK(in.channels == k.in.channels && in.spatial == k.in.spatial && out.channels == k.out.channels &&
                      out.spatial == k.out.spatial && in.spatial <= MIL_MAX_INPUT_WIDTH,
                  "%s %s: I/O [%d x %d] -> [%d x %d] as planned", what, k.name, in.channels, in.spatial, out.channels,
                  out.spatial);
            if (rep.max_axis > *max_axis) *max_axis = rep.max_axis;
        }
        bad += rc != 0;
        ane_kernel_free(&k);
    }
    return bad;
}

/* Every preset at seq 256, 512 and 1024 in every variant: a plan (or a refusal with a reason
** before any compile; none is expected for these) whose kernels pass strict. */
static void test_presets_fit_strict(void) {
    const char *models[] = {"stories15m", "stories42m", "stories110m", "qwen3-0.6b"};
    const int seqs[] = {256, 512, 1024};
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        ModelConfig cfg;
        Err err = {{0}};
        config_from_preset(&cfg, models[mi], &err);
        for (size_t si = 0; si < sizeof seqs / sizeof seqs[0]; si++)
            for (size_t vi = 0; vi < sizeof plan_variants / sizeof plan_variants[0]; vi++) {
                const PlanVariant *v = &plan_variants[vi];
                char what[128];
                snprintf(what, sizeof what, "%s seq %d %s", models[mi], seqs[si], v->name);
                AnePlanSpec spec = {seqs[si], v->rank, v->targets, v->dropout, v->int8, 0};
                AneLayerPlan p;
                int rc = ane_plan_make(&p, &cfg, &spec, &err);
                CHECK(rc == 0, "%s: %s", what, err.msg);
                if (rc) continue;
                int64_t max_axis = 0;
                check_plan(what, &p, &max_axis);
                AnePlanCost c;
                ane_plan_cost(&p, cfg.n_layers, 1, 1, &c);
                if (verbose)
                    printf("     %-42s input [%5d x %5d] out %5d/%5d  max axis %5lld  staged %6.1f MB/step (weights "
                           "%.1f)\n",
                           what, p.in_C, p.in_S, p.fwd_C, p.bwd_C, (long long)max_axis,
                           (c.weight_bytes + c.act_bytes) / 1e6, c.weight_bytes / 1e6);
            }
    }
}

/* The message of a refused compile names the limit the kernel comes nearest to (inspect.h,
** ane_kernel_nearest_limit): tiny's largest axis is its input width, qwen3-0.6b's layer_fwd at
** 256 has an output of 14361 channels, nearer 16384 than its 9376-wide input. */
static void test_nearest_limit(void) {
    const struct {
        const char *preset;
        int seq;
        AneKernelId id;
        const char *first, *then;
    } nearest_cases[] = {
        {"tiny", 64, ANE_KERNEL_LAYER_FWD, "rule input-width: the input is 1632 wide, 10% of its limit 16384",
         "then rule axis-16384"},
        {"qwen3-0.6b", 256, ANE_KERNEL_LAYER_FWD, "rule axis-16384 (strict; axis-65536 under both limits): the "
                                                  "largest axis is 14361",
         "then rule input-width: the input is 9376 wide, 57% of its limit 16384"},
    };
    for (size_t i = 0; i < sizeof nearest_cases / sizeof nearest_cases[0]; i++) {
        ModelConfig cfg;
        Err err = {{0}};
        config_from_preset(&cfg, nearest_cases[i].preset, &err);
        AnePlanSpec spec = {nearest_cases[i].seq, 0, 0, 0, 0, 0};
        AneLayerPlan p;
        AneKernel k;
        CHECK(ane_plan_make(&p, &cfg, &spec, &err) == 0 && ane_kernel_make(&p, nearest_cases[i].id, &k, &err) == 0, "%s",
              err.msg);
        char text[ERR_MSG_MAX];
        ane_kernel_nearest_limit(&k, text, sizeof text);
        const char *first = strstr(text, nearest_cases[i].first), *then = strstr(text, nearest_cases[i].then);
        CHECK(strstr(text, "nearest device limit (docs/ane-facts.md section 9): ") == text && first && then &&
                  first < then,
              "%s: %s", nearest_cases[i].preset, text);
        ane_kernel_free(&k);
    }
}

int main(int argc, char **argv) {
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    parallel_init(2);
    RUN(test_rule_table);
    RUN(test_every_rule);
    RUN(test_writer_hex_literals);
    RUN(test_presets_fit_strict);
    RUN(test_nearest_limit);
    parallel_shutdown();
    return TEST_SUMMARY();
}
