/*
** test_ane_emu.c — the emulated ANE device (src/backend/ane/emu/): fp16 rounding against an
** independent reference over every half and many floats; the MIL parser (every literal
** spelling, flexible spacing, syntax errors with line:column); every op against fp32/double
** references within fp16 tolerance (exact where the emulator's rounding makes the result
** exact); the dynamic-weight linear pattern against sgemm; causal attention against a double
** reference; overflow, subnormals and both accumulation modes; every validator rejection with
** its message; surfaces, counters and the per-process compile budget; a deterministic fuzz
** loop over mutated programs (run it under ASan: make sanitize).
**
** ANETRAIN_FUZZ_ITERS sets the fuzz iterations (default 3000); ANETRAIN_EMU_BENCH=1 also
** times a big matmul through the emulator against plain sgemm.
*/
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>

#include "backend/ane/device.h"
#include "backend/ane/emu/emu.h"
#include "util/fp16.h"
#include "backend/ane/emu/mil.h"
#include "util/blas.h"
#include "util/parallel.h"
#include "test.h"

static AneDevice *dev; /* default options, budget INT_MAX: most tests compile through it */

/* ------------------------------------------------------------------ helpers: reference fp16 */

/* The value of half bits h, from the IEEE definition. */
static double ref_half_value(uint16_t h) {
    int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) v = m ? NAN : INFINITY;
    else if (e == 0) v = ldexp((double)m, -24);
    else v = ldexp(1024.0 + m, e - 25);
    return sign ? -v : v;
}

/* The fp16 value nearest to x (ties to even, |x| >= 65520 -> inf), computed in double. */
static double ref_round_half(double x) {
    if (isnan(x) || isinf(x)) return x;
    double a = fabs(x);
    if (a >= 65520.0) return copysign(INFINITY, x);
    int e;
    frexp(a, &e);
    double q = a < 0x1p-14 ? 0x1p-24 : ldexp(1.0, e - 11);
    double n = a / q, fl = floor(n), rem = n - fl;
    if (rem > 0.5 || (rem == 0.5 && fmod(fl, 2.0) == 1.0)) fl += 1.0;
    return copysign(fl * q, x);
}

static double R(double x) { return ref_round_half(x); }

/* signbit's nonzero value differs between float and double: compare as 0/1. */
static int sgn(double x) { return signbit(x) != 0; }

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static double rng_uniform(double lo, double hi) { return lo + (hi - lo) * (double)(rng_next() >> 11) * 0x1p-53; }

/* n fp16 values uniform in [lo, hi). */
static void fill_half(float *v, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) v[i] = (float)R(rng_uniform(lo, hi));
}

/* ------------------------------------------------------------------ helpers: MIL text, blobs */

typedef struct {
    char *s;
    size_t n, cap;
} Str;

static void str_addf(Str *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0) return;
    if (b->n + (size_t)need + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + (size_t)need + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) abort();
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}

#define HDR                                                                                                        \
    "program(1.3)\n[buildInfo = dict<string, string>({{\"coremlc-component-MIL\", \"3510.2.1\"}, "                 \
    "{\"coremlc-version\", \"3505.4.1\"}, {\"coremltools-component-milinternal\", \"\"}, "                         \
    "{\"coremltools-version\", \"9.0\"}})]\n{\n"

/* The header, `func main<ios18>(INPUTS) {`, the body, `} -> (OUT);`, `}`. Lines: 1-3 header,
** 4 the func line, body from line 5. */
static char *mil_prog(const char *inputs, const char *body, const char *out) {
    Str b = {0};
    str_addf(&b, HDR "    func main<ios18>(%s) {\n%s    } -> (%s);\n}\n", inputs, body, out);
    return b.s;
}

/* A canonical single-blob MILBlob file: 64-byte storage header, 64-byte metadata, data at 128. */
static unsigned char *blob_make(uint32_t dtype, const void *data, size_t bytes, size_t *size) {
    *size = 128 + bytes;
    unsigned char *b = calloc(1, *size);
    b[0] = 1;
    b[4] = 2;
    b[64] = 0xEF, b[65] = 0xBE, b[66] = 0xAD, b[67] = 0xDE;
    b[68] = (unsigned char)dtype;
    for (int i = 0; i < 8; i++) b[72 + i] = (unsigned char)((uint64_t)bytes >> (8 * i));
    b[80] = 128;
    memcpy(b + 128, data, bytes);
    return b;
}

static unsigned char *blob_fp16(const float *v, size_t n, size_t *size) {
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = fp16_from_float(v[i]);
    unsigned char *b = blob_make(1, h, n * 2, size);
    free(h);
    return b;
}

/* ------------------------------------------------------------------ helpers: running */

/* Compiles on d and runs on `in` (floats, converted to fp16); out gets out_n floats. */
static int emu_run_on(AneDevice *d, const char *mil, const AneBlob *blobs, int nb, const float *in, float *out,
                      size_t out_n, Err *err) {
    AneProgram *p = d->compile(d, mil, blobs, nb, err);
    if (!p) return -1;
    AneShape si, so;
    d->program_io(p, &si, &so);
    size_t n_in = (size_t)si.channels * si.spatial, n_out = (size_t)so.channels * so.spatial;
    CHECK(n_out == out_n, "output has %zu elements, the test expected %zu", n_out, out_n);
    AneSurface *sin = d->surface_create(d, n_in * 2, err), *sout = d->surface_create(d, n_out * 2, err);
    int rc = -1;
    if (sin && sout) {
        uint16_t *h = d->surface_lock(d, sin, 0);
        for (size_t i = 0; i < n_in; i++) h[i] = fp16_from_float(in[i]);
        d->surface_unlock(d, sin, 0);
        rc = d->evaluate(d, p, sin, sout, err);
        if (rc == 0) {
            const uint16_t *o = d->surface_lock(d, sout, 1);
            for (size_t i = 0; i < n_out && i < out_n; i++) out[i] = fp16_to_float(o[i]);
            d->surface_unlock(d, sout, 1);
        }
    }
    d->surface_free(d, sin);
    d->surface_free(d, sout);
    d->release(d, p);
    return rc;
}

static int emu_run(const char *mil, const AneBlob *blobs, int nb, const float *in, float *out, size_t out_n,
                   Err *err) {
    return emu_run_on(dev, mil, blobs, nb, in, out, out_n, err);
}

/* Expects the compile to fail with a message containing every non-NULL needle. */
static void expect_reject_at(const char *file, int line, const char *mil, const AneBlob *blobs, int nb,
                             const char *n1, const char *n2, const char *n3) {
    Err err = {{0}};
    AneProgram *p = dev->compile(dev, mil, blobs, nb, &err);
    if (p) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: compiled, but a rejection containing '%s' was expected\n", file, line, n1);
        dev->release(dev, p);
        return;
    }
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++) {
        if (needles[i] && !strstr(err.msg, needles[i])) {
            test_checks_failed_in_test++;
            fprintf(stderr, "  FAIL %s:%d: message lacks '%s': %s\n", file, line, needles[i], err.msg);
        }
    }
}
#define EXPECT_REJECT(mil, blobs, nb, n1, n2, n3) expect_reject_at(__FILE__, __LINE__, mil, blobs, nb, n1, n2, n3)

/* Compiles and runs mil; checks every output element against want within one fp16 ulp
** (exact when ulps == 0). */
static void expect_output_at(const char *file, int line, const char *mil, const AneBlob *blobs, int nb,
                             const float *in, const double *want, size_t n, double ulps, double atol) {
    float *out = calloc(n, sizeof *out);
    Err err = {{0}};
    if (emu_run(mil, blobs, nb, in, out, n, &err)) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, err.msg);
        free(out);
        return;
    }
    int bad = 0;
    for (size_t i = 0; i < n && bad < 5; i++) {
        double w = want[i], g = out[i];
        int ok;
        if (isnan(w)) ok = isnan(g);
        else if (isinf(w)) ok = g == w;
        else ok = fabs(g - w) <= atol + ulps * 0x1p-10 * fabs(w) || (ulps == 0 && g == w);
        if (ulps == 0 && atol == 0 && !isnan(w)) ok = g == w && sgn(g) == sgn(w);
        if (!ok) {
            bad++;
            test_checks_failed_in_test++;
            fprintf(stderr, "  FAIL %s:%d: element %zu: got %.9g, expected %.9g\n", file, line, i, g, w);
        }
    }
    free(out);
}
#define EXPECT_OUTPUT(mil, blobs, nb, in, want, n, ulps, atol) \
    expect_output_at(__FILE__, __LINE__, mil, blobs, nb, in, want, n, ulps, atol)

/* ================================================================== fp16 */

static void test_fp16_every_half(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        double want = ref_half_value((uint16_t)h);
        float f = fp16_to_float((uint16_t)h);
        if (isnan(want)) {
            if (!isnan(f) || (fp16_from_float(f) & 0x7C00) != 0x7C00 || !(fp16_from_float(f) & 0x3FF)) bad++;
            continue;
        }
        if ((double)f != want || sgn(f) != sgn(want)) bad++;
        if (fp16_from_float(f) != h) bad++;
        if (fp16_f32_bits(fp16_round(f, 0)) != fp16_f32_bits(f)) bad++;
    }
    CHECK(bad == 0, "%d halves convert wrongly", bad);
}

static void test_fp16_ties_and_neighbours(void) {
    int bad = 0;
    /* Every midpoint between consecutive non-negative finite halves (and 65504..65536), each
    ** side of it, with both signs. */
    for (uint32_t h = 0; h < 0x7BFF + 1; h++) {
        double a = ref_half_value((uint16_t)h), b = h == 0x7BFF ? 65536.0 : ref_half_value((uint16_t)(h + 1));
        float mid = (float)((a + b) / 2);
        float probes[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
        for (int k = 0; k < 3; k++) {
            for (int s = 0; s < 2; s++) {
                float x = s ? -probes[k] : probes[k];
                double want = R(x);
                float got = fp16_round(x, 0);
                if ((double)got != want || sgn(got) != sgn(want)) {
                    if (bad++ < 5) fprintf(stderr, "  round(%a) = %a, want %a\n", (double)x, (double)got, want);
                }
                if (fp16_to_float(fp16_from_float(x)) != got) bad++;
            }
        }
    }
    CHECK(bad == 0, "%d midpoint roundings wrong", bad);
}

static void test_fp16_random_and_boundaries(void) {
    int bad = 0;
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)rng_next();
        if (i & 1) u = (u & 0x80000000u) | (0x33000000u + (u % 0x14800000u)); /* mostly the fp16 range */
        float x = fp16_f32_from_bits(u);
        double want = R(x);
        float got = fp16_round(x, 0);
        if (isnan(want) ? !isnan(got) : ((double)got != want || sgn(got) != sgn(want))) {
            if (bad++ < 5) fprintf(stderr, "  round(%a) = %a, want %a\n", (double)x, (double)got, want);
        }
    }
    CHECK(bad == 0, "%d random roundings wrong", bad);
    const struct {
        float x;
        double want;
    } cases[] = {
        {65504.0f, 65504.0},        {65519.99f, 65504.0},        {65520.0f, INFINITY},   {-65520.0f, -INFINITY},
        {1e10f, INFINITY},          {0x1p-24f, 0x1p-24},         {0x1p-25f, 0.0},        {0x1.000002p-25f, 0x1p-24},
        {0x1.8p-24f, 0x1p-23},      {0x1p-14f, 0x1p-14},         {0x1.ffcp-15f, 0x1p-14},     {0x1.ffep-15f, 0x1p-14},
        {0x1.ff4p-15f, 0x1.ffp-15}, /* 1022.5 quanta: tie to even 1022 */
        {1.0f + 0x1p-11f, 1.0},     {1.0f + 0x1.8p-10f, 1.0 + 0x1p-9}, {-0.0f, -0.0},   {INFINITY, INFINITY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float got = fp16_round(cases[i].x, 0);
        CHECK((double)got == cases[i].want && sgn(got) == sgn(cases[i].want), "round(%a) = %a, want %a",
              (double)cases[i].x, (double)got, cases[i].want);
    }
    CHECK(isnan(fp16_round(NAN, 0)) && fp16_from_float(NAN) == 0x7E00, "NaN stays a quiet NaN");
    CHECK(fp16_from_float(65520.0f) == 0x7C00 && fp16_from_float(-1e30f) == 0xFC00, "overflow to inf bits");
    CHECK(fp16_from_float(0x1p-24f) == 0x0001 && fp16_from_float(-0x1p-14f) == 0x8400, "subnormal/normal bits");
    /* flush: subnormal results become signed zeros; one that rounds up to 2^-14 is normal. */
    CHECK(fp16_round(0x1p-20f, 1) == 0.0f && signbit(fp16_round(-0x1p-20f, 1)), "flush to signed zero");
    CHECK(fp16_round(0x1.ffep-15f, 1) == 0x1p-14f, "rounds up to the smallest normal, not flushed");
    CHECK(fp16_round(0x1p-14f, 1) == 0x1p-14f, "smallest normal kept");
    /* double rounding: 1 + 2^-11 + 2^-40 is above the tie, so it rounds up; (float) first would tie to 1. */
    CHECK(fp16_round_double(1.0 + 0x1p-11 + 0x1p-40, 0) == (float)(1.0 + 0x1p-10), "rounded once from double");
    CHECK(fp16_round_double(1.0 + 0x1p-11, 0) == 1.0f, "exact tie to even");
    CHECK(fp16_round_double(-(1.0 + 0x1p-11 + 0x1p-40), 0) == -(float)(1.0 + 0x1p-10), "negative");
    CHECK(fp16_round_double(1e-300, 0) == 0.0f && fp16_round_double(1e300, 0) == INFINITY, "extremes");
    for (int i = 0; i < 200000; i++) {
        double x = ldexp(rng_uniform(1.0, 2.0), (int)(rng_next() % 40) - 26);
        if (fp16_round_double(x, 0) != (float)R(x)) bad++;
    }
    CHECK(bad == 0, "%d double roundings wrong", bad);
    /* The array forms agree with the scalar ones. */
    float v[1000], w[1000];
    uint16_t h[1000];
    for (int i = 0; i < 1000; i++) v[i] = w[i] = fp16_f32_from_bits((uint32_t)rng_next());
    fp16_round_array(w, 1000, 0);
    fp16_from_float_array(h, v, 1000);
    int diff = 0;
    for (int i = 0; i < 1000; i++) {
        float s = fp16_round(v[i], 0);
        if (!(isnan(s) ? isnan(w[i]) : fp16_f32_bits(s) == fp16_f32_bits(w[i]))) diff++;
        if (h[i] != fp16_from_float(v[i])) diff++;
    }
    fp16_to_float_array(w, h, 1000, 1);
    for (int i = 0; i < 1000; i++) {
        float s = fp16_round(fp16_to_float(h[i]), 1);
        if (!(isnan(s) ? isnan(w[i]) : fp16_f32_bits(s) == fp16_f32_bits(w[i]))) diff++;
    }
    CHECK(diff == 0, "%d array/scalar differences", diff);
}

/* bf16 (the data-parallel gradient exchange's format): against the nearest of the two bf16
** neighbours computed in double (ties to the even one; past the largest finite, 2^128 stands for
** inf), over random bits and the edge cases; the way back is exact. */
static void test_bf16_rounding(void) {
    int bad = 0;
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)rng_next();
        if (i % 4 == 0) u = (u & 0xFFFF0000u) | 0x8000u | (u & 1u ? 0u : (u >> 8) & 0x7FFFu); /* ties, near-ties */
        float x = fp16_f32_from_bits(u);
        uint16_t got = bf16_from_float(x);
        if (isnan(x)) {
            if (!isnan(bf16_to_float(got)) || (got & 0x8000u) != ((u >> 16) & 0x8000u)) bad++;
            continue;
        }
        uint32_t lo = u & 0xFFFF0000u, hi = lo + 0x10000u; /* toward zero, away from zero */
        double dlo = fabs((double)fp16_f32_from_bits(lo)), x_abs = fabs((double)x);
        double dhi = (hi & 0x7FFFFFFFu) == 0x7F800000u ? ldexp(1.0, 128) : fabs((double)fp16_f32_from_bits(hi));
        uint32_t want = x_abs - dlo < dhi - x_abs ? lo : x_abs - dlo > dhi - x_abs ? hi : ((lo >> 16) & 1u ? hi : lo);
        if ((u & 0x7FFFFFFFu) == 0x7F800000u) want = u; /* inf stays inf */
        if (got != (uint16_t)(want >> 16)) {
            if (bad++ < 5) fprintf(stderr, "  bf16(%a) = 0x%04x, want 0x%04x\n", (double)x, got, want >> 16);
        }
        if (fp16_f32_bits(bf16_to_float(got)) != (uint32_t)got << 16) bad++;
    }
    CHECK(bad == 0, "%d random bf16 roundings wrong", bad);
    CHECK(bf16_from_float(1.0f + 0x1p-8f) == 0x3F80 && bf16_from_float(1.0f + 0x1.8p-7f) == 0x3F82,
          "ties to even");
    CHECK(bf16_from_float(1.0f + 0x1p-8f + 0x1p-23f) == 0x3F81, "just above the tie rounds up");
    CHECK(bf16_from_float(3.4e38f) == 0x7F80 && bf16_from_float(-3.4e38f) == 0xFF80, "overflow to inf");
    CHECK(bf16_from_float(-0.0f) == 0x8000 && bf16_from_float(0x1p-133f) == 0x0001 && bf16_from_float(0x1p-134f) == 0 &&
          bf16_from_float(0x1.8p-133f) == 0x0002, "signed zero, subnormals (quantum 2^-133, ties to even)");
    CHECK(isnan(bf16_to_float(bf16_from_float(NAN))) && (bf16_from_float(NAN) & 0x0040), "NaN stays a quiet NaN");
}

/* ================================================================== parser */

static void test_parse_literals_and_spacing(void) {
    const char *text =
        "program(1.3)\n"
        "{\n"
        "  func main<ios18>(tensor<fp16,[1,4,1,32]> x){\n"
        "    fp16 a=const()[name=string(\"a\"),val=fp16(0.125000)];\n"
        "    fp16 b = const()[name = string(\"b\"), val = fp16(1e-05)];\n"
        "    fp16  c  =  const ( ) [ name = string ( \"c\" ) , val = fp16 ( -1 ) ] ;\n"
        "    fp16 d = const()[name=string(\"d\"), val=fp16(0x1p-3)];\n"
        "    int32 e = const()[name=string(\"e\"), val=int32(-1)];\n"
        "    bool f = const()[name=string(\"f\"), val=bool(true)];\n"
        "    string g = const()[name=string(\"g\\\"q\"), val=string(\"fp16\")];\n"
        "    tensor<int32, [4]> h = const()[name=string(\"h\"), val=tensor<int32, [4]>([0,0, 0 ,256])];\n"
        "    tensor<fp16, [1, 1, 2, 2]> i = const()[name=string(\"i\"), val=tensor<fp16, [1,1,2,2]>([0, -65504, 1.5, 2e0])];\n"
        "    tensor<fp16, [2]> j = const()[name=string(\"j\"), val=tensor<fp16, [2]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];\n"
        "    tensor<fp16, [1,4,1,32]> k = add(x = x, y = a)[name = string(\"k\")];\n"
        "    tensor<fp16, [1,8,1,32]> y = concat(axis=e, interleave=f, values = ( k , x ))[name=string(\"y\")];\n"
        "  } -> (y);\n"
        "}";
    MilAst ast;
    Err err = {{0}};
    CHECK(mil_parse(text, &ast, &err) == 0, "%s", err.msg);
    if (ast.n_stmts != 12) {
        CHECK(0, "parsed %d statements", ast.n_stmts);
        mil_ast_free(&ast);
        return;
    }
    const MilStmt *s = ast.stmts;
    CHECK(strcmp(ast.version, "1.3") == 0 && strcmp(ast.opset, "ios18") == 0 && ast.n_inputs == 1, "header");
    CHECK(s[0].attrs[1].val.num == 0.125 && s[1].attrs[1].val.num == 1e-5 && s[2].attrs[1].val.num == -1 &&
              s[3].attrs[1].val.num == 0.125,
          "fp16 spellings");
    /* The parser remembers exponent notation (the strict rule fp16-literal-exponent), in scalars
    ** and in inline tensors, and where; hex floats and plain decimals are not it. */
    CHECK(!s[0].attrs[1].val.exp_spelled && s[1].attrs[1].val.exp_spelled && s[1].attrs[1].val.exp_pos.line == 5 &&
              !s[2].attrs[1].val.exp_spelled && !s[3].attrs[1].val.exp_spelled && s[8].attrs[1].val.exp_spelled &&
              s[8].attrs[1].val.exp_pos.line == 12,
          "exponent spellings remembered");
    CHECK(s[2].pos.line == 6 && s[2].pos.col == 5 && s[2].op_pos.col == 17, "positions %d:%d op col %d",
          s[2].pos.line, s[2].pos.col, s[2].op_pos.col);
    CHECK(s[4].attrs[1].val.inum == -1 && s[5].attrs[1].val.inum == 1, "int32, bool");
    CHECK(strcmp(s[6].attrs[0].val.str, "g\"q") == 0 && strcmp(s[6].attrs[1].val.str, "fp16") == 0, "strings");
    CHECK(s[7].attrs[1].val.n_items == 4 && s[7].attrs[1].val.items[3] == 256, "int32 vector");
    CHECK(s[8].attrs[1].val.n_items == 4 && s[8].attrs[1].val.items[1] == -65504 && s[8].attrs[1].val.items[3] == 2,
          "inline fp16 tensor");
    CHECK(s[9].attrs[1].val.is_blob && strcmp(s[9].attrs[1].val.blob_path, "@model_path/weights/w.bin") == 0 &&
              s[9].attrs[1].val.blob_offset == 64,
          "BLOBFILE");
    CHECK(s[11].args[2].val.kind == MIL_EXPR_TUPLE && s[11].args[2].val.n_elems == 2 &&
              strcmp(s[11].args[2].val.elems[1].name, "x") == 0,
          "tuple");
    mil_ast_free(&ast);

    /* The same program also checks (with a blob) and runs. With axis -1 the concat is along S,
    ** so the declared [1,8,1,32] is wrong; with interleave true it is refused; with axis 1 and
    ** interleave false, y = concat(x + 0.125, x) on channels. */
    float w[2] = {1, 2};
    size_t bsize;
    unsigned char *blob = blob_fp16(w, 2, &bsize);
    AneBlob b = {"@model_path/weights/w.bin", blob, bsize};
    float in[128];
    double want[256];
    fill_half(in, 128, -4, 4);
    for (int i = 0; i < 128; i++) want[i] = R(in[i] + 0.125), want[128 + i] = in[i];
    EXPECT_REJECT(text, &b, 1, "interleave = true", NULL, NULL);
    char *t2 = malloc(strlen(text) + 2); /* room for one more byte */
    strcpy(t2, text);
    char *pe = strstr(t2, "bool(true)");
    memmove(pe + 11, pe + 10, strlen(pe + 10) + 1);
    memcpy(pe, "bool(false)", 11);
    EXPECT_REJECT(t2, &b, 1, "MIL 15:5: value 'y' (concat)",
                  "declared type tensor<fp16, [1, 8, 1, 32]> does not match the inferred type tensor<fp16, [1, 4, 1, 64]>",
                  NULL);
    char *pa = strstr(t2, "int32(-1)");
    memcpy(pa, "int32( 1)", 9);
    EXPECT_OUTPUT(t2, &b, 1, in, want, 256, 0, 0);
    free(t2);
    free(blob);
}

static void test_parse_errors(void) {
    struct {
        const char *text;
        const char *at;
        const char *msg;
    } cases[] = {
        {"", "MIL 1:1:", "expected 'program'"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    tensor<fp16, [1,4,1,32]> y = add(x=x,y=x)[name=string(\"y\")]\n  } -> (y);\n}\n",
         "MIL 5:3:", "expected ';' ending the statement, found '}'"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    tensor<fp16, [1,4,1,32]> y = add(x=x,y=@x)[name=string(\"y\")];\n  } -> (y);\n}\n",
         "MIL 4:44:", "found '@'"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    string s = const()[name=string(\"s\n  }",
         "MIL 4:36:", "found an unterminated string"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,0,1,32]> x) {\n", "MIL 3:36:", "dimension 0 must be positive"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    int32 a = const()[name=string(\"a\"), val=int32(1.5)];\n",
         "MIL 4:51:", "expected a decimal integer for int32, found '1.5'"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    fp16 a = const()[name=string(\"a\"), val=fp16(70000)];\n",
         "MIL 4:49:", "out of range"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    fp16 a = const()[name=string(\"a\"), val=fp16(1.2.3)];\n",
         "MIL 4:49:", "malformed number '1.2.3'"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    int8 a = const()[name=string(\"a\"), val=int8(200)];\n",
         "MIL 4:49:", "out of range for int8"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n  } -> (x);\n}\n}", "MIL 6:1:",
         "expected end of text after the program, found '}'"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n  } -> (x)\n}\n", "MIL 5:1:",
         "expected ';' after the function outputs"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    tensor<fp16, [1,1,1,1,1,1]> a = const()[];\n",
         "MIL 4:29:", "rank above 5"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    tensor<fp16, [1,4,1,32]> y = concat(values=((x)))[];\n",
         "MIL 4:49:", "tuples do not nest"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    tensor<fp16, [2]> y = const()[val=tensor<fp16, [2]>(BLOBFILE(path=string(\"a\")))];\n",
         "MIL 4:82:", "expected ',' between the BLOBFILE arguments, found ')'"},
        {"program(1.3) [buildInfo = dict<string, int32>({})]", "MIL 1:", "only dict<string, string>"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    tensor<fp17, [2]> y", "MIL 4:12:",
         "expected a dtype such as fp16, found 'fp17'"},
        {"program(1.3)\n{\n  func main<ios18>(tensor<fp16, [1,4,1,32]> x) {\n    tensor<fp16, [1,4,1,32]> y = add(x=x, y=x", "MIL 4:46:",
         "expected ',' or ')' after an argument, found end of text"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        MilAst ast;
        Err err = {{0}};
        int rc = mil_parse(cases[i].text, &ast, &err);
        CHECK(rc == -1, "case %zu parsed", i);
        CHECK(strstr(err.msg, cases[i].at) && strstr(err.msg, cases[i].msg), "case %zu: '%s' lacks '%s' / '%s'", i,
              err.msg, cases[i].at, cases[i].msg);
        mil_ast_free(&ast);
    }
    /* Through the device the message is the same. */
    Err err = {{0}};
    CHECK(!dev->compile(dev, "program(1.3)\n{\n  fun", NULL, 0, &err) && strstr(err.msg, "MIL 3:3: expected 'func'"),
          "%s", err.msg);
}

/* ================================================================== ops */

static void test_op_elementwise_broadcast(void) {
    /* out = ((x * cs) + rs) - sc, then 1 - that: [1,8,1,32] with [1,8,1,1], [1,1,1,32], scalars. */
    Str body = {0}, cs = {0}, rs = {0};
    float cv[8], rv[32], in[256];
    fill_half(cv, 8, -2, 2);
    fill_half(rv, 32, -2, 2);
    fill_half(in, 256, -3, 3);
    for (int i = 0; i < 8; i++) str_addf(&cs, "%s%.9g", i ? ", " : "", cv[i]);
    for (int i = 0; i < 32; i++) str_addf(&rs, "%s%.9g", i ? ", " : "", rv[i]);
    str_addf(&body,
             "        tensor<fp16, [1,8,1,1]> cs = const()[name=string(\"cs\"), val=tensor<fp16, [1,8,1,1]>([%s])];\n"
             "        tensor<fp16, [1,1,1,32]> rs = const()[name=string(\"rs\"), val=tensor<fp16, [1,1,1,32]>([%s])];\n"
             "        fp16 sc = const()[name=string(\"sc\"), val=fp16(0.3)];\n"
             "        fp16 one = const()[name=string(\"one\"), val=fp16(1)];\n"
             "        tensor<fp16, [1,8,1,32]> a = mul(x=x,y=cs)[name=string(\"a\")];\n"
             "        tensor<fp16, [1,8,1,32]> b = add(x=a,y=rs)[name=string(\"b\")];\n"
             "        tensor<fp16, [1,8,1,32]> c = sub(x=b,y=sc)[name=string(\"c\")];\n"
             "        tensor<fp16, [1,8,1,32]> d = sub(x=one,y=c)[name=string(\"d\")];\n",
             cs.s, rs.s);
    char *mil = mil_prog("tensor<fp16, [1, 8, 1, 32]> x", body.s, "d");
    double want[256], sc = R(0.3);
    for (int c = 0; c < 8; c++)
        for (int s = 0; s < 32; s++) {
            double a = R((double)in[c * 32 + s] * cv[c]), b = R(a + rv[s]), cc = R(b - sc);
            want[c * 32 + s] = R(1.0 - cc);
        }
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 256, 0, 0);
    free(mil);
    free(body.s);
    free(cs.s);
    free(rs.s);

    /* Rank-3 [8,1,32] + [1,1,32] broadcast with a reshape round trip, and rank-2 with rank-4. */
    const char *b2 =
        "        tensor<int32, [3]> s3 = const()[name=string(\"s3\"), val=tensor<int32, [3]>([8,1,32])];\n"
        "        tensor<int32, [4]> s4 = const()[name=string(\"s4\"), val=tensor<int32, [4]>([1,8,1,32])];\n"
        "        tensor<fp16, [8,1,32]> x3 = reshape(shape=s3,x=x)[name=string(\"x3\")];\n"
        "        tensor<fp16, [1,32]> r = const()[name=string(\"r\"), val=tensor<fp16, [1,32]>([0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31])];\n"
        "        tensor<fp16, [8,1,32]> y3 = add(x=x3,y=r)[name=string(\"y3\")];\n"
        "        tensor<fp16, [1,8,1,32]> y = reshape(shape=s4,x=y3)[name=string(\"y\")];\n";
    mil = mil_prog("tensor<fp16, [1, 8, 1, 32]> x", b2, "y");
    for (int i = 0; i < 256; i++) want[i] = R((double)in[i] + (i % 32));
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 256, 0, 0);
    free(mil);
}

static void test_op_pow_sigmoid(void) {
    const char *body =
        "        fp16 nh = const()[name=string(\"nh\"), val=fp16(-0.5)];\n"
        "        fp16 e3 = const()[name=string(\"e3\"), val=fp16(3)];\n"
        "        tensor<fp16, [1,4,1,32]> r = pow(x=x,y=nh)[name=string(\"r\")];\n"
        "        tensor<fp16, [1,4,1,32]> c = pow(x=x,y=e3)[name=string(\"c\")];\n"
        "        tensor<fp16, [1,4,1,32]> g = sigmoid(x=x)[name=string(\"g\")];\n"
        "        int32 ax = const()[name=string(\"ax\"), val=int32(1)];\n"
        "        bool no = const()[name=string(\"no\"), val=bool(false)];\n"
        "        tensor<fp16, [1,12,1,32]> y = concat(axis=ax,interleave=no,values=(r,c,g))[name=string(\"y\")];\n";
    char *mil = mil_prog("tensor<fp16, [1, 4, 1, 32]> x", body, "y");
    float in[128];
    fill_half(in, 128, 0.01, 6);
    in[0] = 4.0f; /* rsqrt exact: 0.5 */
    in[1] = 0.0f; /* rsqrt(0) = inf */
    double want[384];
    for (int i = 0; i < 128; i++) {
        want[i] = R(1.0 / sqrt(in[i]));
        want[128 + i] = R(pow(in[i], 3.0));
        want[256 + i] = R(1.0 / (1.0 + exp(-(double)in[i])));
    }
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 384, 1, 0); /* libm in fp32: within one fp16 ulp */
    float out[384];
    Err err = {{0}};
    CHECK(emu_run(mil, NULL, 0, in, out, 384, &err) == 0, "%s", err.msg);
    CHECK(out[0] == 0.5f && isinf(out[1]) && out[1] > 0, "pow(4, -0.5) = %g, pow(0, -0.5) = %g", out[0], out[1]);
    free(mil);
}

static void test_op_softmax(void) {
    const char *body =
        "        int32 am = const()[name=string(\"am\"), val=int32(-1)];\n"
        "        int32 a1 = const()[name=string(\"a1\"), val=int32(1)];\n"
        "        bool no = const()[name=string(\"no\"), val=bool(false)];\n"
        "        tensor<fp16, [1,6,1,64]> r = softmax(axis=am,x=x)[name=string(\"r\")];\n"
        "        tensor<fp16, [1,6,1,64]> c = softmax(axis=a1,x=x)[name=string(\"c\")];\n"
        "        tensor<fp16, [1,12,1,64]> y = concat(axis=a1,interleave=no,values=(r,c))[name=string(\"y\")];\n";
    char *mil = mil_prog("tensor<fp16, [1, 6, 1, 64]> x", body, "y");
    float in[384];
    fill_half(in, 384, -6, 6);
    in[5] = -65504.0f; /* a masked entry: probability 0 */
    double want[768];
    for (int c = 0; c < 6; c++) { /* rows: over s */
        double m = -INFINITY, sum = 0;
        for (int s = 0; s < 64; s++) m = fmax(m, in[c * 64 + s]);
        for (int s = 0; s < 64; s++) sum += exp(in[c * 64 + s] - m);
        for (int s = 0; s < 64; s++) want[c * 64 + s] = exp(in[c * 64 + s] - m) / sum;
    }
    for (int s = 0; s < 64; s++) { /* columns: over c */
        double m = -INFINITY, sum = 0;
        for (int c = 0; c < 6; c++) m = fmax(m, in[c * 64 + s]);
        for (int c = 0; c < 6; c++) sum += exp(in[c * 64 + s] - m);
        for (int c = 0; c < 6; c++) want[384 + c * 64 + s] = exp(in[c * 64 + s] - m) / sum;
    }
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 768, 1, 1e-7);
    float out[768];
    Err err = {{0}};
    CHECK(emu_run(mil, NULL, 0, in, out, 768, &err) == 0, "%s", err.msg);
    double rowsum = 0;
    for (int s = 0; s < 64; s++) rowsum += out[s];
    CHECK(out[5] == 0.0f && fabs(rowsum - 1) < 64 * 0x1p-11, "masked entry %g, row sum %g", out[5], rowsum);
    free(mil);
}

static void test_op_reduce_sum(void) {
    /* RMSNorm's pieces: ss = reduce_sum(x*x, axes=[1]), and per-channel sums broadcast back;
    ** plus a full reduction to a scalar. */
    const char *body =
        "        tensor<fp16, [1,16,1,32]> sq = mul(x=x,y=x)[name=string(\"sq\")];\n"
        "        tensor<int32, [1]> a1 = const()[name=string(\"a1\"), val=tensor<int32, [1]>([1])];\n"
        "        tensor<int32, [1]> am = const()[name=string(\"am\"), val=tensor<int32, [1]>([-1])];\n"
        "        tensor<int32, [4]> al = const()[name=string(\"al\"), val=tensor<int32, [4]>([0,1,2,3])];\n"
        "        bool kd = const()[name=string(\"kd\"), val=bool(true)];\n"
        "        bool nk = const()[name=string(\"nk\"), val=bool(false)];\n"
        "        tensor<fp16, [1,1,1,32]> ss = reduce_sum(x=sq,axes=a1,keep_dims=kd)[name=string(\"ss\")];\n"
        "        tensor<fp16, [1,16,1,1]> cs = reduce_sum(x=x,axes=am,keep_dims=kd)[name=string(\"cs\")];\n"
        "        fp16 tot = reduce_sum(x=x,axes=al,keep_dims=nk)[name=string(\"tot\")];\n"
        "        tensor<fp16, [1,16,1,32]> z = mul(x=x,y=cs)[name=string(\"z\")];\n"
        "        tensor<fp16, [1,16,1,32]> t = add(x=z,y=tot)[name=string(\"t\")];\n"
        "        int32 ax = const()[name=string(\"ax\"), val=int32(1)];\n"
        "        bool no = const()[name=string(\"no\"), val=bool(false)];\n"
        "        tensor<fp16, [1,17,1,32]> y = concat(axis=ax,interleave=no,values=(ss,t))[name=string(\"y\")];\n";
    char *mil = mil_prog("tensor<fp16, [1, 16, 1, 32]> x", body, "y");
    float in[512];
    for (int i = 0; i < 512; i++) in[i] = (float)(floor(rng_uniform(-128, 128)) / 64); /* sums stay exact */
    double want[544], cs[16], tot = 0;
    for (int s = 0; s < 32; s++) {
        double acc = 0;
        for (int c = 0; c < 16; c++) acc += R((double)in[c * 32 + s] * in[c * 32 + s]);
        want[s] = R(acc);
    }
    for (int c = 0; c < 16; c++) {
        double acc = 0;
        for (int s = 0; s < 32; s++) acc += in[c * 32 + s], tot += in[c * 32 + s];
        cs[c] = R(acc);
    }
    tot = R(tot);
    for (int c = 0; c < 16; c++)
        for (int s = 0; s < 32; s++) want[32 + c * 32 + s] = R(R((double)in[c * 32 + s] * cs[c]) + tot);
    /* Multiples of 1/64 below 2: every sum is exact in fp32, so one rounding: exact results. */
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 544, 0, 0);
    free(mil);
}

static void test_op_reshape_transpose(void) {
    /* [1,4,1,64] -> [1,4,8,8] -> perm [0,1,3,2] -> back: a transpose of each 8x8 block;
    ** twice is the identity. General perm [0,2,3,1] on [1,4,4,16] and a rank-5 perm. */
    const char *body =
        "        tensor<int32, [4]> s8 = const()[name=string(\"s8\"), val=tensor<int32, [4]>([1,4,8,8])];\n"
        "        tensor<int32, [4]> sf = const()[name=string(\"sf\"), val=tensor<int32, [4]>([1,4,1,64])];\n"
        "        tensor<int32, [4]> pm = const()[name=string(\"pm\"), val=tensor<int32, [4]>([0,1,3,2])];\n"
        "        tensor<fp16, [1,4,8,8]> a = reshape(shape=s8,x=x)[name=string(\"a\")];\n"
        "        tensor<fp16, [1,4,8,8]> b = transpose(perm=pm,x=a)[name=string(\"b\")];\n"
        "        tensor<fp16, [1,4,1,64]> t1 = reshape(shape=sf,x=b)[name=string(\"t1\")];\n"
        "        tensor<fp16, [1,4,8,8]> c = transpose(perm=pm,x=b)[name=string(\"c\")];\n"
        "        tensor<fp16, [1,4,1,64]> t2 = reshape(shape=sf,x=c)[name=string(\"t2\")];\n"
        "        tensor<int32, [4]> s4 = const()[name=string(\"s4\"), val=tensor<int32, [4]>([1,4,4,-1])];\n"
        "        tensor<int32, [4]> pg = const()[name=string(\"pg\"), val=tensor<int32, [4]>([0,2,3,1])];\n"
        "        tensor<fp16, [1,4,4,16]> d = reshape(shape=s4,x=x)[name=string(\"d\")];\n"
        "        tensor<fp16, [1,4,16,4]> e = transpose(perm=pg,x=d)[name=string(\"e\")];\n"
        "        tensor<fp16, [1,4,1,64]> t3 = reshape(shape=sf,x=e)[name=string(\"t3\")];\n"
        "        tensor<int32, [5]> s5 = const()[name=string(\"s5\"), val=tensor<int32, [5]>([2,2,4,2,8])];\n"
        "        tensor<int32, [5]> p5 = const()[name=string(\"p5\"), val=tensor<int32, [5]>([4,2,0,3,1])];\n"
        "        tensor<fp16, [2,2,4,2,8]> f = reshape(shape=s5,x=x)[name=string(\"f\")];\n"
        "        tensor<fp16, [8,4,2,2,2]> g = transpose(perm=p5,x=f)[name=string(\"g\")];\n"
        "        tensor<fp16, [1,4,1,64]> t4 = reshape(shape=sf,x=g)[name=string(\"t4\")];\n"
        "        int32 ax = const()[name=string(\"ax\"), val=int32(1)];\n"
        "        bool no = const()[name=string(\"no\"), val=bool(false)];\n"
        "        tensor<fp16, [1,16,1,64]> y = concat(axis=ax,interleave=no,values=(t1,t2,t3,t4))[name=string(\"y\")];\n";
    char *mil = mil_prog("tensor<fp16, [1, 4, 1, 64]> x", body, "y");
    float in[256];
    for (int i = 0; i < 256; i++) in[i] = (float)i; /* exact in fp16 */
    double want[1024];
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 8; j++) {
                want[c * 64 + i * 8 + j] = in[c * 64 + j * 8 + i];
                want[256 + c * 64 + i * 8 + j] = in[c * 64 + i * 8 + j];
            }
    for (int a = 0; a < 4; a++) /* e[0][a][b][c] = d[0][c][a][b] */
        for (int b = 0; b < 16; b++)
            for (int c = 0; c < 4; c++) want[512 + a * 64 + b * 4 + c] = in[c * 64 + a * 16 + b];
    /* g[i0..i4] = f[i2][i4][i1][i3][i0] with f dims [2,2,4,2,8], g dims [8,4,2,2,2] */
    int n = 0;
    for (int i0 = 0; i0 < 8; i0++)
        for (int i1 = 0; i1 < 4; i1++)
            for (int i2 = 0; i2 < 2; i2++)
                for (int i3 = 0; i3 < 2; i3++)
                    for (int i4 = 0; i4 < 2; i4++)
                        want[768 + n++] = in[(((i2 * 2 + i4) * 4 + i1) * 2 + i3) * 8 + i0];
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 1024, 0, 0);
    free(mil);
}

static void test_op_slice_concat(void) {
    /* channel slices, spatial halves swapped, and the RoPE pair rotation (-odd, even). */
    const char *body =
        "        tensor<int32, [4]> b0 = const()[name=string(\"b0\"), val=tensor<int32, [4]>([0,0,0,0])];\n"
        "        tensor<int32, [4]> b5 = const()[name=string(\"b5\"), val=tensor<int32, [4]>([0,5,0,0])];\n"
        "        tensor<int32, [4]> s3 = const()[name=string(\"s3\"), val=tensor<int32, [4]>([1,3,1,-1])];\n"
        "        tensor<fp16, [1,3,1,64]> lo = slice_by_size(x=x,begin=b0,size=s3)[name=string(\"lo\")];\n"
        "        tensor<fp16, [1,3,1,64]> hi = slice_by_size(x=x,begin=b5,size=s3)[name=string(\"hi\")];\n"
        "        tensor<int32, [4]> bh = const()[name=string(\"bh\"), val=tensor<int32, [4]>([0,0,0,32])];\n"
        "        tensor<int32, [4]> sh = const()[name=string(\"sh\"), val=tensor<int32, [4]>([1,8,1,32])];\n"
        "        tensor<fp16, [1,8,1,32]> h0 = slice_by_size(x=x,begin=b0,size=sh)[name=string(\"h0\")];\n"
        "        tensor<fp16, [1,8,1,32]> h1 = slice_by_size(x=x,begin=bh,size=sh)[name=string(\"h1\")];\n"
        "        int32 a1 = const()[name=string(\"a1\"), val=int32(1)];\n"
        "        int32 a3 = const()[name=string(\"a3\"), val=int32(3)];\n"
        "        bool no = const()[name=string(\"no\"), val=bool(false)];\n"
        "        tensor<fp16, [1,8,1,64]> sw = concat(axis=a3,interleave=no,values=(h1,h0))[name=string(\"sw\")];\n"
        "        tensor<int32, [4]> rp = const()[name=string(\"rp\"), val=tensor<int32, [4]>([1,8,32,2])];\n"
        "        tensor<int32, [4]> r1 = const()[name=string(\"r1\"), val=tensor<int32, [4]>([1,8,32,1])];\n"
        "        tensor<int32, [4]> o1 = const()[name=string(\"o1\"), val=tensor<int32, [4]>([0,0,0,1])];\n"
        "        tensor<int32, [4]> sf = const()[name=string(\"sf\"), val=tensor<int32, [4]>([1,8,1,64])];\n"
        "        fp16 m1 = const()[name=string(\"m1\"), val=fp16(-1)];\n"
        "        tensor<fp16, [1,8,32,2]> p = reshape(shape=rp,x=x)[name=string(\"p\")];\n"
        "        tensor<fp16, [1,8,32,1]> ev = slice_by_size(x=p,begin=b0,size=r1)[name=string(\"ev\")];\n"
        "        tensor<fp16, [1,8,32,1]> od = slice_by_size(x=p,begin=o1,size=r1)[name=string(\"od\")];\n"
        "        tensor<fp16, [1,8,32,1]> no2 = mul(x=od,y=m1)[name=string(\"no2\")];\n"
        "        tensor<fp16, [1,8,32,2]> rot = concat(axis=a3,interleave=no,values=(no2,ev))[name=string(\"rot\")];\n"
        "        tensor<fp16, [1,8,1,64]> rf = reshape(shape=sf,x=rot)[name=string(\"rf\")];\n"
        "        tensor<fp16, [1,8,1,64]> one = concat(axis=a1,interleave=no,values=(rf))[name=string(\"one\")];\n"
        "        tensor<fp16, [1,22,1,64]> y = concat(axis=a1,interleave=no,values=(lo,hi,sw,one))[name=string(\"y\")];\n";
    char *mil = mil_prog("tensor<fp16, [1, 8, 1, 64]> x", body, "y");
    float in[512];
    fill_half(in, 512, -8, 8);
    double want[22 * 64];
    for (int c = 0; c < 3; c++)
        for (int s = 0; s < 64; s++) want[c * 64 + s] = in[c * 64 + s], want[192 + c * 64 + s] = in[(5 + c) * 64 + s];
    for (int c = 0; c < 8; c++)
        for (int s = 0; s < 64; s++) {
            want[384 + c * 64 + s] = in[c * 64 + (s + 32) % 64];
            want[896 + c * 64 + s] = s % 2 == 0 ? -(double)in[c * 64 + s + 1] : in[c * 64 + s - 1];
        }
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 22 * 64, 0, 0);
    free(mil);
}

static void test_op_matmul_transposes(void) {
    /* A = x reshaped [1,1,16,32]; constant B of the shape each flag combination needs. */
    const struct {
        int tx, ty, M, N, K, brows, bcols;
    } cases[] = {{0, 0, 16, 8, 32, 32, 8}, {1, 0, 32, 4, 16, 16, 4}, {0, 1, 16, 8, 32, 8, 32}, {1, 1, 32, 4, 16, 4, 16}};
    float in[512];
    fill_half(in, 512, -1, 1);
    for (size_t k = 0; k < 4; k++) {
        int tx = cases[k].tx, ty = cases[k].ty, M = cases[k].M, N = cases[k].N, K = cases[k].K;
        int br = cases[k].brows, bc = cases[k].bcols;
        float B[256];
        fill_half(B, (size_t)br * bc, -1, 1);
        Str bs = {0}, body = {0};
        for (int i = 0; i < br * bc; i++) str_addf(&bs, "%s%.9g", i ? "," : "", B[i]);
        str_addf(&body,
                 "        tensor<int32, [4]> sa = const()[name=string(\"sa\"), val=tensor<int32, [4]>([1,1,16,32])];\n"
                 "        tensor<fp16, [1,1,16,32]> a = reshape(shape=sa,x=x)[name=string(\"a\")];\n"
                 "        tensor<fp16, [1,1,%d,%d]> b = const()[name=string(\"b\"), val=tensor<fp16, [1,1,%d,%d]>([%s])];\n"
                 "        bool tx = const()[name=string(\"tx\"), val=bool(%s)];\n"
                 "        bool ty = const()[name=string(\"ty\"), val=bool(%s)];\n"
                 "        tensor<fp16, [1,1,%d,%d]> m = matmul(transpose_x=tx,transpose_y=ty,x=a,y=b)[name=string(\"m\")];\n"
                 "        tensor<int32, [4]> so = const()[name=string(\"so\"), val=tensor<int32, [4]>([1,%d,1,32])];\n"
                 "        tensor<fp16, [1,%d,1,32]> y = reshape(shape=so,x=m)[name=string(\"y\")];\n",
                 br, bc, br, bc, bs.s, tx ? "true" : "false", ty ? "true" : "false", M, N, M * N / 32, M * N / 32);
        char *mil = mil_prog("tensor<fp16, [1, 16, 1, 32]> x", body.s, "y");
        double want[128];
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int q = 0; q < K; q++) {
                    double a = tx ? in[q * 32 + i] : in[i * 32 + q];
                    double b = ty ? B[j * K + q] : B[q * N + j];
                    acc += a * b;
                }
                want[i * N + j] = acc;
            }
        EXPECT_OUTPUT(mil, NULL, 0, in, want, (size_t)M * N, 1, 1e-6);
        free(mil);
        free(bs.s);
        free(body.s);
    }
    /* Batch broadcast: [1,2,16,16] x [1,1,16,4] -> [1,2,16,4], and transpose_x omitted. */
    Str bs = {0}, body = {0};
    float B[64];
    fill_half(B, 64, -1, 1);
    for (int i = 0; i < 64; i++) str_addf(&bs, "%s%.9g", i ? "," : "", B[i]);
    str_addf(&body,
             "        tensor<int32, [4]> sa = const()[name=string(\"sa\"), val=tensor<int32, [4]>([1,2,16,16])];\n"
             "        tensor<fp16, [1,2,16,16]> a = reshape(shape=sa,x=x)[name=string(\"a\")];\n"
             "        tensor<fp16, [1,1,16,4]> b = const()[name=string(\"b\"), val=tensor<fp16, [1,1,16,4]>([%s])];\n"
             "        tensor<fp16, [1,2,16,4]> m = matmul(x=a,y=b)[name=string(\"m\")];\n"
             "        tensor<int32, [4]> so = const()[name=string(\"so\"), val=tensor<int32, [4]>([1,4,1,32])];\n"
             "        tensor<fp16, [1,4,1,32]> y = reshape(shape=so,x=m)[name=string(\"y\")];\n",
             bs.s);
    char *mil = mil_prog("tensor<fp16, [1, 16, 1, 32]> x", body.s, "y");
    double want[128];
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 4; j++) {
                double acc = 0;
                for (int q = 0; q < 16; q++) acc += (double)in[h * 256 + i * 16 + q] * B[q * 4 + j];
                want[h * 64 + i * 4 + j] = acc;
            }
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 128, 1, 1e-6);
    free(mil);
    free(bs.s);
    free(body.s);
}

static const char CONV_CONSTS[] =
    "        string pt = const()[name=string(\"pt\"), val=string(\"valid\")];\n"
    "        tensor<int32, [2]> st = const()[name=string(\"st\"), val=tensor<int32, [2]>([1,1])];\n"
    "        tensor<int32, [4]> pd = const()[name=string(\"pd\"), val=tensor<int32, [4]>([0,0,0,0])];\n"
    "        tensor<int32, [2]> dl = const()[name=string(\"dl\"), val=tensor<int32, [2]>([1,1])];\n";

static void test_op_conv_blob(void) {
    for (int groups = 1; groups <= 2; groups++) {
        int IC = 16, OC = 24, S = 32, ICg = IC / groups, OCg = OC / groups;
        float W[24 * 16], in[16 * 32];
        fill_half(W, (size_t)OC * ICg, -1, 1);
        fill_half(in, (size_t)IC * S, -1, 1);
        size_t bsize;
        unsigned char *blob = blob_fp16(W, (size_t)OC * ICg, &bsize);
        AneBlob b = {"@model_path/weights/wq.bin", blob, bsize};
        Str body = {0};
        str_addf(&body,
                 "%s        int32 gr = const()[name=string(\"gr\"), val=int32(%d)];\n"
                 "        tensor<fp16, [%d,%d,1,1]> W = const()[name=string(\"W\"), val=tensor<fp16, [%d,%d,1,1]>(BLOBFILE(path=string(\"@model_path/weights/wq.bin\"), offset=uint64(64)))];\n"
                 "        tensor<fp16, [1,%d,1,%d]> y = conv(dilations=dl,groups=gr,pad=pd,pad_type=pt,strides=st,weight=W,x=x)[name=string(\"cq\")];\n",
                 CONV_CONSTS, groups, OC, ICg, OC, ICg, OC, S);
        char *mil = mil_prog("tensor<fp16, [1, 16, 1, 32]> x", body.s, "y");
        double want[24 * 32];
        for (int oc = 0; oc < OC; oc++)
            for (int s = 0; s < S; s++) {
                int g = oc / OCg;
                double acc = 0;
                for (int i = 0; i < ICg; i++) acc += (double)W[oc * ICg + i] * in[(g * ICg + i) * S + s];
                want[oc * S + s] = acc;
            }
        EXPECT_OUTPUT(mil, &b, 1, in, want, (size_t)OC * S, 1, 1e-6);
        free(mil);
        free(body.s);
        free(blob);
    }
}

static void test_op_quantize_and_affine_dequantize(void) {
    /* dq(q(x)) with scale 1/8: clamp(rne(x*8), -128, 127) / 8, ties included. */
    const char *body =
        "        fp16 qs = const()[name = string(\"qs\"), val = fp16(0x1p-3)];\n"
        "        string qd = const()[name = string(\"qd\"), val = string(\"int8\")];\n"
        "        tensor<int8, [1, 4, 1, 32]> q = quantize(input = x, output_dtype = qd, scale = qs)[name = string(\"q\")];\n"
        "        tensor<fp16, [1, 4, 1, 32]> y = dequantize(input = q, scale = qs)[name = string(\"y\")];\n";
    char *mil = mil_prog("tensor<fp16, [1, 4, 1, 32]> x", body, "y");
    float in[128];
    fill_half(in, 128, -20, 20);
    float ties[] = {0.0625f, 0.1875f, -0.0625f, -0.1875f, 15.9375f, -16.0625f, 15.875f, -16.0f, 100.0f, -100.0f};
    memcpy(in, ties, sizeof ties);
    double want[128];
    for (int i = 0; i < 128; i++) {
        double v = (double)in[i] * 8, r = nearbyint(v);
        if (fabs(v - trunc(v)) == 0.5) r = 2 * nearbyint(v / 2); /* ties to even, whatever the libm mode */
        r = r < -128 ? -128 : r > 127 ? 127 : r;
        want[i] = (r + 0.0) / 8; /* int8 has no -0 */
    }
    CHECK(want[0] == 0 && want[1] == 0.25 && want[4] == 15.875 && want[5] == -16 && want[8] == 15.875, "reference");
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 128, 0, 0);
    free(mil);

    /* constexpr_affine_dequantize from an int8 blob (dtype 4), then a conv. */
    int OC = 8, IC = 4, S = 32;
    int8_t qv[32];
    for (int i = 0; i < OC * IC; i++) qv[i] = (int8_t)((int)(rng_next() % 255) - 127);
    size_t bsize;
    unsigned char *blob = blob_make(4, qv, (size_t)OC * IC, &bsize);
    AneBlob b = {"@model_path/weights/weight.bin", blob, bsize};
    Str body2 = {0};
    str_addf(&body2,
             "%s        int32 gr = const()[name=string(\"gr\"), val=int32(1)];\n"
             "        tensor<fp16, [8, 4, 1, 1]> W0 = constexpr_affine_dequantize()[axis = int32(0), name = string(\"W0\"), "
             "quantized_data = tensor<int8, [8, 4, 1, 1]>(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), "
             "offset = uint64(64))), scale = fp16(0x1p-3), zero_point = int8(3)];\n"
             "        tensor<fp16, [1, 8, 1, 32]> y = conv(dilations=dl,groups=gr,pad=pd,pad_type=pt,strides=st,weight=W0,x=x)[name=string(\"c\")];\n",
             CONV_CONSTS);
    mil = mil_prog("tensor<fp16, [1, 4, 1, 32]> x", body2.s, "y");
    double want2[256];
    for (int oc = 0; oc < OC; oc++)
        for (int s = 0; s < S; s++) {
            double acc = 0;
            for (int i = 0; i < IC; i++) acc += (qv[oc * IC + i] - 3) * 0.125 * in[i * S + s];
            want2[oc * S + s] = acc;
        }
    EXPECT_OUTPUT(mil, &b, 1, in, want2, 256, 1, 1e-6);
    free(mil);
    free(body2.s);
    free(blob);
}

static void test_op_cast_and_sdpa(void) {
    /* cast fp16 -> fp32 -> fp16 is the identity (fp32 tensors keep fp16 values); SDPA without
    ** a mask is plain attention. */
    const char *body =
        "        string f32 = const()[name=string(\"f32\"), val=string(\"fp32\")];\n"
        "        string f16 = const()[name=string(\"f16\"), val=string(\"fp16\")];\n"
        "        tensor<fp32, [1,8,1,32]> c = cast(dtype=f32,x=x)[name=string(\"c\")];\n"
        "        tensor<fp16, [1,8,1,32]> d = cast(dtype=f16,x=c)[name=string(\"d\")];\n"
        "        tensor<int32, [4]> sh = const()[name=string(\"sh\"), val=tensor<int32, [4]>([1,2,16,8])];\n"
        "        tensor<fp16, [1,2,16,8]> q = reshape(shape=sh,x=d)[name=string(\"q\")];\n"
        "        tensor<fp16, [1,2,16,8]> a = scaled_dot_product_attention(query=q,key=q,value=q)[name=string(\"a\")];\n"
        "        tensor<int32, [4]> so = const()[name=string(\"so\"), val=tensor<int32, [4]>([1,8,1,32])];\n"
        "        tensor<fp16, [1,8,1,32]> y = reshape(shape=so,x=a)[name=string(\"y\")];\n";
    char *mil = mil_prog("tensor<fp16, [1, 8, 1, 32]> x", body, "y");
    float in[256];
    fill_half(in, 256, -1, 1);
    double want[256];
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 16; i++) {
            const float *q = in + h * 128;
            double s[16], m = -INFINITY, sum = 0;
            for (int j = 0; j < 16; j++) {
                s[j] = 0;
                for (int d = 0; d < 8; d++) s[j] += (double)q[i * 8 + d] * q[j * 8 + d];
                s[j] /= sqrt(8.0);
                m = fmax(m, s[j]);
            }
            for (int j = 0; j < 16; j++) sum += exp(s[j] - m);
            for (int d = 0; d < 8; d++) {
                double acc = 0;
                for (int j = 0; j < 16; j++) acc += exp(s[j] - m) / sum * q[j * 8 + d];
                want[h * 128 + i * 8 + d] = acc;
            }
        }
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 256, 0, 3e-3);
    free(mil);
}

static void test_big_shapes_parallel(void) {
    /* [1,256,1,256]: big enough that every kernel splits its work over the pool. Values are
    ** multiples of 1/64 below 2, so sums are exact and the reference rounds the same way. */
    const char *body =
        "        int32 a1 = const()[name=string(\"a1\"), val=int32(1)];\n"
        "        int32 am = const()[name=string(\"am\"), val=int32(-1)];\n"
        "        tensor<int32, [1]> v1 = const()[name=string(\"v1\"), val=tensor<int32, [1]>([1])];\n"
        "        tensor<int32, [1]> vm = const()[name=string(\"vm\"), val=tensor<int32, [1]>([-1])];\n"
        "        bool kd = const()[name=string(\"kd\"), val=bool(true)];\n"
        "        bool no = const()[name=string(\"no\"), val=bool(false)];\n"
        "        tensor<fp16, [1,256,1,256]> s1 = softmax(axis=a1,x=x)[name=string(\"s1\")];\n"
        "        tensor<fp16, [1,256,1,256]> s3 = softmax(axis=am,x=x)[name=string(\"s3\")];\n"
        "        tensor<fp16, [1,1,1,256]> r1 = reduce_sum(x=x,axes=v1,keep_dims=kd)[name=string(\"r1\")];\n"
        "        tensor<fp16, [1,256,1,1]> r3 = reduce_sum(x=x,axes=vm,keep_dims=kd)[name=string(\"r3\")];\n"
        "        tensor<int32, [4]> sq = const()[name=string(\"sq\"), val=tensor<int32, [4]>([1,1,256,256])];\n"
        "        tensor<int32, [4]> sf = const()[name=string(\"sf\"), val=tensor<int32, [4]>([1,256,1,256])];\n"
        "        tensor<int32, [4]> pm = const()[name=string(\"pm\"), val=tensor<int32, [4]>([0,1,3,2])];\n"
        "        tensor<fp16, [1,1,256,256]> q = reshape(shape=sq,x=x)[name=string(\"q\")];\n"
        "        tensor<fp16, [1,1,256,256]> qt = transpose(perm=pm,x=q)[name=string(\"qt\")];\n"
        "        tensor<fp16, [1,256,1,256]> t = reshape(shape=sf,x=qt)[name=string(\"t\")];\n"
        "        tensor<fp16, [1,256,1,256]> b = mul(x=x,y=r3)[name=string(\"b\")];\n"
        "        tensor<fp16, [1,256,1,256]> g = sigmoid(x=x)[name=string(\"g\")];\n"
        "        tensor<fp16, [1,1281,1,256]> y = concat(axis=a1,interleave=no,values=(s1,s3,r1,t,b,g))[name=string(\"y\")];\n";
    char *mil = mil_prog("tensor<fp16, [1, 256, 1, 256]> x", body, "y");
    enum { C = 256, S = 256 };
    float *in = malloc(sizeof(float) * C * S);
    double *want = malloc(sizeof(double) * 1281 * S), r3[C];
    for (int i = 0; i < C * S; i++) in[i] = (float)(floor(rng_uniform(-128, 128)) / 64);
    for (int s = 0; s < S; s++) { /* softmax over channels, and the channel sums */
        double m = -INFINITY, sum = 0, acc = 0;
        for (int c = 0; c < C; c++) m = fmax(m, in[c * S + s]), acc += in[c * S + s];
        for (int c = 0; c < C; c++) sum += exp(in[c * S + s] - m);
        for (int c = 0; c < C; c++) want[c * S + s] = exp(in[c * S + s] - m) / sum;
        want[2 * C * S + s] = R(acc);
    }
    for (int c = 0; c < C; c++) { /* softmax over spatial, the row sums */
        double m = -INFINITY, sum = 0, acc = 0;
        for (int s = 0; s < S; s++) m = fmax(m, in[c * S + s]), acc += in[c * S + s];
        for (int s = 0; s < S; s++) sum += exp(in[c * S + s] - m);
        for (int s = 0; s < S; s++) want[C * S + c * S + s] = exp(in[c * S + s] - m) / sum;
        r3[c] = R(acc);
    }
    double *t = want + 2 * C * S + S, *b = t + C * S, *g = b + C * S;
    for (int c = 0; c < C; c++)
        for (int s = 0; s < S; s++) {
            t[c * S + s] = in[s * S + c];
            b[c * S + s] = R((double)in[c * S + s] * r3[c]);
            g[c * S + s] = 1.0 / (1.0 + exp(-(double)in[c * S + s]));
        }
    EXPECT_OUTPUT(mil, NULL, 0, in, want, (size_t)1281 * S, 1, 1e-7);
    free(mil);
    free(in);
    free(want);
}

/* ================================================================== the training patterns */

/* docs/ane-facts.md §2.4: input [1, IC, 1, S + OC] with act in columns [0, S), W[ic][oc] in [S, S+OC). */
static char *dyn_linear_mil(int IC, int OC, int S) {
    Str b = {0};
    str_addf(&b,
             "        tensor<int32, [4]> mm_ba = const()[name=string(\"mm_ba\"), val=tensor<int32, [4]>([0,0,0,0])];\n"
             "        tensor<int32, [4]> mm_sa = const()[name=string(\"mm_sa\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<fp16, [1,%d,1,%d]> mm_act = slice_by_size(x=x,begin=mm_ba,size=mm_sa)[name=string(\"mm_act\")];\n"
             "        tensor<int32, [4]> mm_bw = const()[name=string(\"mm_bw\"), val=tensor<int32, [4]>([0,0,0,%d])];\n"
             "        tensor<int32, [4]> mm_sw = const()[name=string(\"mm_sw\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<fp16, [1,%d,1,%d]> mm_wt = slice_by_size(x=x,begin=mm_bw,size=mm_sw)[name=string(\"mm_wt\")];\n"
             "        tensor<int32, [4]> mm_ra = const()[name=string(\"mm_ra\"), val=tensor<int32, [4]>([1,1,%d,%d])];\n"
             "        tensor<fp16, [1,1,%d,%d]> mm_a2 = reshape(shape=mm_ra,x=mm_act)[name=string(\"mm_a2\")];\n"
             "        tensor<int32, [4]> mm_pm = const()[name=string(\"mm_pm\"), val=tensor<int32, [4]>([0,1,3,2])];\n"
             "        tensor<fp16, [1,1,%d,%d]> mm_a3 = transpose(perm=mm_pm,x=mm_a2)[name=string(\"mm_a3\")];\n"
             "        tensor<int32, [4]> mm_rw = const()[name=string(\"mm_rw\"), val=tensor<int32, [4]>([1,1,%d,%d])];\n"
             "        tensor<fp16, [1,1,%d,%d]> mm_W = reshape(shape=mm_rw,x=mm_wt)[name=string(\"mm_W\")];\n"
             "        bool bF = const()[name=string(\"bF\"), val=bool(false)];\n"
             "        tensor<fp16, [1,1,%d,%d]> mm_yh = matmul(transpose_x=bF,transpose_y=bF,x=mm_a3,y=mm_W)[name=string(\"mm_yh\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> mm_yt = transpose(perm=mm_pm,x=mm_yh)[name=string(\"mm_yt\")];\n"
             "        tensor<int32, [4]> mm_ro = const()[name=string(\"mm_ro\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<fp16, [1,%d,1,%d]> mm_y = reshape(shape=mm_ro,x=mm_yt)[name=string(\"mm_y\")];\n",
             IC, S, IC, S, S, IC, OC, IC, OC, IC, S, IC, S, S, IC, IC, OC, IC, OC, S, OC, OC, S, OC, S, OC, S);
    Str in = {0};
    str_addf(&in, "tensor<fp16, [1, %d, 1, %d]> x", IC, S + OC);
    char *mil = mil_prog(in.s, b.s, "mm_y");
    free(b.s);
    free(in.s);
    return mil;
}

static void test_dynamic_weight_linear(void) {
    int IC = 64, OC = 96, S = 64, SP = S + OC;
    char *mil = dyn_linear_mil(IC, OC, S);
    float *in = malloc(sizeof(float) * IC * SP), *act = malloc(sizeof(float) * IC * S),
          *W = malloc(sizeof(float) * IC * OC), *Y = malloc(sizeof(float) * OC * S);
    fill_half(act, (size_t)IC * S, -1, 1);
    fill_half(W, (size_t)IC * OC, -0.2, 0.2);
    for (int ic = 0; ic < IC; ic++) {
        memcpy(in + ic * SP, act + ic * S, sizeof(float) * S);
        memcpy(in + ic * SP + S, W + ic * OC, sizeof(float) * OC);
    }
    /* y[oc][s] = sum_ic act[ic][s] W[ic][oc]: Y [OC][S] = W^T act */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, S, IC, 1.0f, W, OC, act, S, 0.0f, Y, S);
    double *want = malloc(sizeof(double) * OC * S);
    for (int i = 0; i < OC * S; i++) want[i] = Y[i];
    EXPECT_OUTPUT(mil, NULL, 0, in, want, (size_t)OC * S, 1, 1e-6);
    free(mil);
    free(in);
    free(act);
    free(W);
    free(Y);
    free(want);
}

static char *attention_mil(int H, int HD, int S) {
    int D = H * HD;
    Str b = {0};
    str_addf(&b,
             "        tensor<int32, [4]> bq = const()[name=string(\"bq\"), val=tensor<int32, [4]>([0,0,0,0])];\n"
             "        tensor<int32, [4]> bk = const()[name=string(\"bk\"), val=tensor<int32, [4]>([0,%d,0,0])];\n"
             "        tensor<int32, [4]> bv = const()[name=string(\"bv\"), val=tensor<int32, [4]>([0,%d,0,0])];\n"
             "        tensor<int32, [4]> sz = const()[name=string(\"sz\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<fp16, [1,%d,1,%d]> qf = slice_by_size(x=x,begin=bq,size=sz)[name=string(\"qf\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> kf = slice_by_size(x=x,begin=bk,size=sz)[name=string(\"kf\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> vf = slice_by_size(x=x,begin=bv,size=sz)[name=string(\"vf\")];\n"
             "        tensor<int32, [4]> hsh = const()[name=string(\"hsh\"), val=tensor<int32, [4]>([1,%d,%d,%d])];\n"
             "        tensor<int32, [4]> pm = const()[name=string(\"pm\"), val=tensor<int32, [4]>([0,1,3,2])];\n"
             "        tensor<fp16, [1,%d,%d,%d]> q4 = reshape(shape=hsh,x=qf)[name=string(\"rq\")];\n"
             "        tensor<fp16, [1,%d,%d,%d]> q = transpose(perm=pm,x=q4)[name=string(\"tq\")];\n"
             "        tensor<fp16, [1,%d,%d,%d]> k4 = reshape(shape=hsh,x=kf)[name=string(\"rk\")];\n"
             "        tensor<fp16, [1,%d,%d,%d]> k = transpose(perm=pm,x=k4)[name=string(\"tk\")];\n"
             "        tensor<fp16, [1,%d,%d,%d]> v4 = reshape(shape=hsh,x=vf)[name=string(\"rv\")];\n"
             "        tensor<fp16, [1,%d,%d,%d]> v = transpose(perm=pm,x=v4)[name=string(\"tv\")];\n"
             "        bool bF = const()[name=string(\"bF\"), val=bool(false)];\n"
             "        bool bT = const()[name=string(\"bT\"), val=bool(true)];\n"
             "        tensor<fp16, [1,%d,%d,%d]> sc1 = matmul(transpose_x=bF,transpose_y=bT,x=q,y=k)[name=string(\"mm1\")];\n"
             "        fp16 scv = const()[name=string(\"scv\"), val=fp16(%f)];\n"
             "        tensor<fp16, [1,%d,%d,%d]> sc2 = mul(x=sc1,y=scv)[name=string(\"scl\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> cm = const()[name=string(\"cm\"), val=tensor<fp16, [1,1,%d,%d]>(BLOBFILE(path=string(\"@model_path/weights/mask.bin\"), offset=uint64(64)))];\n"
             "        tensor<fp16, [1,%d,%d,%d]> ms = add(x=sc2,y=cm)[name=string(\"msk\")];\n"
             "        int32 sax = const()[name=string(\"sax\"), val=int32(-1)];\n"
             "        tensor<fp16, [1,%d,%d,%d]> aw = softmax(axis=sax,x=ms)[name=string(\"sm\")];\n"
             "        tensor<fp16, [1,%d,%d,%d]> a4 = matmul(transpose_x=bF,transpose_y=bF,x=aw,y=v)[name=string(\"mm2\")];\n"
             "        tensor<fp16, [1,%d,%d,%d]> at = transpose(perm=pm,x=a4)[name=string(\"ta\")];\n"
             "        tensor<int32, [4]> os = const()[name=string(\"os\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<fp16, [1,%d,1,%d]> af = reshape(shape=os,x=at)[name=string(\"ra\")];\n",
             D, 2 * D, D, S, D, S, D, S, D, S, H, HD, S, H, HD, S, H, S, HD, H, HD, S, H, S, HD, H, HD, S, H, S, HD, H,
             S, S, 1.0 / sqrt((double)HD), H, S, S, S, S, S, S, H, S, S, H, S, S, H, S, HD, H, HD, S, D, S, D, S);
    Str in = {0};
    str_addf(&in, "tensor<fp16, [1, %d, 1, %d]> x", 3 * D, S);
    char *mil = mil_prog(in.s, b.s, "af");
    free(b.s);
    free(in.s);
    return mil;
}

static unsigned char *mask_blob(int S, size_t *size) {
    float *m = malloc(sizeof(float) * S * S);
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) m[i * S + j] = j <= i ? 0.0f : -65504.0f;
    unsigned char *b = blob_fp16(m, (size_t)S * S, size);
    free(m);
    return b;
}

static void test_causal_attention(void) {
    int H = 2, HD = 16, S = 32, D = H * HD;
    char *mil = attention_mil(H, HD, S);
    size_t bsize;
    unsigned char *blob = mask_blob(S, &bsize);
    AneBlob b = {"@model_path/weights/mask.bin", blob, bsize};
    float *in = malloc(sizeof(float) * 3 * D * S);
    fill_half(in, (size_t)3 * D * S, -1, 1);
    double *want = malloc(sizeof(double) * D * S);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < S; i++) { /* query position i */
            double s[64], m = -INFINITY, sum = 0;
            for (int j = 0; j <= i; j++) {
                s[j] = 0;
                for (int d = 0; d < HD; d++) s[j] += (double)in[(h * HD + d) * S + i] * in[(D + h * HD + d) * S + j];
                s[j] /= sqrt((double)HD);
                m = fmax(m, s[j]);
            }
            for (int j = 0; j <= i; j++) sum += exp(s[j] - m);
            for (int d = 0; d < HD; d++) {
                double acc = 0;
                for (int j = 0; j <= i; j++) acc += exp(s[j] - m) / sum * in[(2 * D + h * HD + d) * S + j];
                want[(h * HD + d) * S + i] = acc;
            }
        }
    EXPECT_OUTPUT(mil, &b, 1, in, want, (size_t)D * S, 0, 3e-3);
    /* Without the mask (all zeros) the first query position would see the future: check the
    ** test can tell the difference. */
    float *out = malloc(sizeof(float) * D * S);
    Err err = {{0}};
    CHECK(emu_run(mil, &b, 1, in, out, (size_t)D * S, &err) == 0, "%s", err.msg);
    CHECK(fabs(out[0] - in[2 * D * S]) < 2e-3, "query 0 attends only to key 0: %g vs %g", out[0], in[2 * D * S]);
    free(out);
    free(mil);
    free(in);
    free(want);
    free(blob);
}

/* ================================================================== numerics */

static void test_overflow_and_subnormals(void) {
    const char *body =
        "        fp16 two = const()[name=string(\"two\"), val=fp16(2)];\n"
        "        fp16 tiny = const()[name=string(\"tiny\"), val=fp16(0.00001)];\n"
        "        fp16 ng = const()[name=string(\"ng\"), val=fp16(-65504)];\n"
        "        tensor<fp16, [1,1,1,32]> a = mul(x=x,y=two)[name=string(\"a\")];\n"
        "        tensor<fp16, [1,1,1,32]> b = mul(x=x,y=tiny)[name=string(\"b\")];\n"
        "        tensor<fp16, [1,1,1,32]> c = add(x=x,y=ng)[name=string(\"c\")];\n"
        "        int32 ax = const()[name=string(\"ax\"), val=int32(1)];\n"
        "        bool no = const()[name=string(\"no\"), val=bool(false)];\n"
        "        tensor<fp16, [1,3,1,32]> y = concat(axis=ax,interleave=no,values=(a,b,c))[name=string(\"y\")];\n";
    char *mil = mil_prog("tensor<fp16, [1, 1, 1, 32]> x", body, "y");
    float in[32];
    fill_half(in, 32, -1, 1);
    in[0] = 60000.0f, in[1] = -60000.0f, in[2] = 0.5f, in[3] = -100.0f, in[4] = 8.0f, in[5] = 0x1p-24f;
    double want[96], tiny = R(0.00001);
    CHECK(tiny > 0 && tiny < 0x1p-14, "1e-5 is an fp16 subnormal: %g", tiny);
    for (int i = 0; i < 32; i++) {
        want[i] = R(2.0 * in[i]);
        want[32 + i] = R(tiny * in[i]);
        want[64 + i] = R(in[i] - 65504.0);
    }
    CHECK(isinf(want[0]) && want[0] > 0 && isinf(want[1]) && want[1] < 0, "60000*2 overflows");
    CHECK(isinf(want[67]) && want[68] == -65504.0, "-65504-100 = -inf, -65504+8 = -65504");
    EXPECT_OUTPUT(mil, NULL, 0, in, want, 96, 0, 0);
    /* flush_subnormals: the constant and every subnormal result become zeros. */
    AneEmuOptions o;
    ane_emu_default_options(&o);
    o.flush_subnormals = 1;
    o.compile_budget = INT_MAX;
    Err err = {{0}};
    AneDevice *fd = ane_emu_create(&o, &err);
    float out[96];
    CHECK(fd && emu_run_on(fd, mil, NULL, 0, in, out, 96, &err) == 0, "%s", err.msg);
    int nonzero = 0;
    for (int i = 32; i < 64; i++) nonzero += out[i] != 0.0f;
    CHECK(nonzero == 0 && isinf(out[0]), "flushed: %d nonzero", nonzero);
    in[6] = 0x1p-15f; /* a subnormal input is flushed on the way in (2 * 2^-15 would be normal) */
    CHECK(emu_run_on(fd, mil, NULL, 0, in, out, 96, &err) == 0 && out[6] == 0.0f, "input flushed: %g", out[6]);
    if (fd) fd->destroy(fd);
    free(mil);
}

static void test_accumulation_modes(void) {
    /* A long dot product of values near 0.01: fp32 accumulation is within an ulp of exact,
    ** fp16 chunk accumulation drifts (and the two modes differ), for matmul and reduce_sum. */
    int IC = 1024, OC = 32, S = 32;
    char *mil = dyn_linear_mil(IC, OC, S);
    float *in = malloc(sizeof(float) * IC * (S + OC));
    for (int i = 0; i < IC * (S + OC); i++) in[i] = (float)R(rng_uniform(0.009, 0.011));
    AneEmuOptions o;
    ane_emu_default_options(&o);
    o.compile_budget = INT_MAX;
    o.accumulate_fp32 = 0;
    Err err = {{0}};
    AneDevice *d16 = ane_emu_create(&o, &err);
    float y32[1024], y16[1024];
    CHECK(emu_run(mil, NULL, 0, in, y32, 1024, &err) == 0, "%s", err.msg);
    CHECK(d16 && emu_run_on(d16, mil, NULL, 0, in, y16, 1024, &err) == 0, "%s", err.msg);
    double worst32 = 0, worst16 = 0;
    int differ = 0;
    for (int oc = 0; oc < OC; oc++)
        for (int s = 0; s < S; s++) {
            double acc = 0;
            for (int ic = 0; ic < IC; ic++) acc += (double)in[ic * (S + OC) + s] * in[ic * (S + OC) + S + oc];
            double e32 = fabs(y32[oc * S + s] - acc) / acc, e16 = fabs(y16[oc * S + s] - acc) / acc;
            worst32 = fmax(worst32, e32);
            worst16 = fmax(worst16, e16);
            differ += y32[oc * S + s] != y16[oc * S + s];
        }
    CHECK(worst32 <= 0x1p-11 * 1.01, "fp32 accumulation: worst relative error %g", worst32);
    CHECK(differ > 0 && worst16 < 0.02, "fp16 accumulation: %d differ, worst %g", differ, worst16);
    free(mil);
    free(in);
    const char *body =
        "        tensor<int32, [1]> a1 = const()[name=string(\"a1\"), val=tensor<int32, [1]>([1])];\n"
        "        bool kd = const()[name=string(\"kd\"), val=bool(true)];\n"
        "        tensor<fp16, [1,1,1,32]> y = reduce_sum(x=x,axes=a1,keep_dims=kd)[name=string(\"y\")];\n";
    mil = mil_prog("tensor<fp16, [1, 2048, 1, 32]> x", body, "y");
    in = malloc(sizeof(float) * 2048 * 32);
    for (int i = 0; i < 2048 * 32; i++) in[i] = (float)R(rng_uniform(0.9, 1.1));
    CHECK(emu_run(mil, NULL, 0, in, y32, 32, &err) == 0, "%s", err.msg);
    CHECK(d16 && emu_run_on(d16, mil, NULL, 0, in, y16, 32, &err) == 0, "%s", err.msg);
    worst32 = worst16 = 0;
    for (int s = 0; s < 32; s++) {
        double acc = 0;
        for (int c = 0; c < 2048; c++) acc += in[c * 32 + s];
        worst32 = fmax(worst32, fabs(y32[s] - acc) / acc);
        worst16 = fmax(worst16, fabs(y16[s] - acc) / acc);
    }
    CHECK(worst32 <= 0x1p-11 * 1.01 && worst16 > worst32 && worst16 < 0.02, "reduce_sum: fp32 %g, fp16 %g", worst32,
          worst16);
    if (d16) d16->destroy(d16);
    free(mil);
    free(in);
}

/* ================================================================== validator */

static const char IN4[] = "tensor<fp16, [1, 4, 1, 32]> x";

static void test_reject_io(void) {
    char *m;
    m = mil_prog("tensor<fp16, [1, 4, 1, 32]> x, tensor<fp16, [1, 4, 1, 32]> z", "", "x");
    EXPECT_REJECT(m, NULL, 0, "MIL 4:53:", "2 inputs", "exactly one input");
    free(m);
    m = mil_prog("", "", "x");
    EXPECT_REJECT(m, NULL, 0, "0 inputs", NULL, NULL);
    free(m);
    m = mil_prog("tensor<fp32, [1, 4, 1, 32]> x", "", "x");
    EXPECT_REJECT(m, NULL, 0, "MIL 4:22:", "input 'x' is tensor<fp32, [1, 4, 1, 32]>", "must be fp16");
    free(m);
    m = mil_prog(IN4,
                 "        string f32 = const()[name=string(\"f32\"), val=string(\"fp32\")];\n"
                 "        tensor<fp32, [1,4,1,32]> y = cast(dtype=f32,x=x)[name=string(\"y\")];\n",
                 "y");
    EXPECT_REJECT(m, NULL, 0, "MIL 7:11:", "output 'y' is tensor<fp32, [1, 4, 1, 32]>", "must be fp16");
    free(m);
    m = mil_prog("tensor<fp16, [1, 4, 32]> x", "", "x");
    EXPECT_REJECT(m, NULL, 0, "input 'x'", "rank 4 [1, C, 1, S], found rank 3", NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<int32, [3]> s = const()[name=string(\"s\"), val=tensor<int32, [3]>([1,4,32])];\n"
                 "        tensor<fp16, [1,4,32]> y = reshape(shape=s,x=x)[name=string(\"y\")];\n",
                 "y");
    EXPECT_REJECT(m, NULL, 0, "output 'y'", "found rank 3", NULL);
    free(m);
    m = mil_prog("tensor<fp16, [2, 4, 1, 32]> x", "", "x");
    EXPECT_REJECT(m, NULL, 0, "must be [1, C, 1, S]", NULL, NULL);
    free(m);
    m = mil_prog("tensor<fp16, [1, 4, 1, 48]> x", "", "x");
    EXPECT_REJECT(m, NULL, 0, "S = 48", "multiple of 32", NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<int32, [4]> b = const()[name=string(\"b\"), val=tensor<int32, [4]>([0,0,0,0])];\n"
                 "        tensor<int32, [4]> s = const()[name=string(\"s\"), val=tensor<int32, [4]>([1,4,1,16])];\n"
                 "        tensor<fp16, [1,4,1,16]> y = slice_by_size(x=x,begin=b,size=s)[name=string(\"y\")];\n",
                 "y");
    EXPECT_REJECT(m, NULL, 0, "output 'y'", "S = 16 must be a multiple of 32", NULL);
    free(m);
    m = mil_prog(IN4, "        tensor<fp16, [1,4,1,32]> y = add(x=x,y=x)[name=string(\"y\")];\n", "y, x");
    EXPECT_REJECT(m, NULL, 0, "2 outputs", "exactly one output", NULL);
    free(m);
    m = mil_prog(IN4, "", "nope");
    EXPECT_REJECT(m, NULL, 0, "output 'nope' is not defined", NULL, NULL);
    free(m);
    Str b = {0};
    str_addf(&b, HDR "    func main<ios17>(%s) {\n    } -> (x);\n}\n", IN4);
    EXPECT_REJECT(b.s, NULL, 0, "MIL 4:15:", "only <ios18>", NULL);
    free(b.s);
    b = (Str){0};
    str_addf(&b, "program(1.0)\n{\n    func main<ios18>(%s) {\n    } -> (x);\n}\n", IN4);
    EXPECT_REJECT(b.s, NULL, 0, "MIL 1:9:", "only program(1.3)", NULL);
    free(b.s);
}

static void test_reject_ops_and_names(void) {
    char *m;
    m = mil_prog(IN4, "        tensor<fp16, [1,4,1,32]> y = gelu(x=x)[name=string(\"y\")];\n", "y");
    EXPECT_REJECT(m, NULL, 0, "MIL 5:38:", "unknown op 'gelu'", "supports: cast, conv");
    free(m);
    m = mil_prog(IN4, "        tensor<fp16, [1,4,1,32]> y = add(x=x)[name=string(\"y\")];\n", "y");
    EXPECT_REJECT(m, NULL, 0, "MIL 5:38:", "value 'y' (add): missing argument 'y' for add", NULL);
    free(m);
    m = mil_prog(IN4, "        tensor<fp16, [1,4,1,32]> y = add(x=x,y=x,z=x)[name=string(\"y\")];\n", "y");
    EXPECT_REJECT(m, NULL, 0, "MIL 5:50:", "unknown argument 'z' for add (its arguments are: x, y)", NULL);
    free(m);
    m = mil_prog(IN4, "        tensor<fp16, [1,4,1,32]> y = add(x=x,y=w)[name=string(\"y\")];\n", "y");
    EXPECT_REJECT(m, NULL, 0, "MIL 5:48:", "argument 'w' is not defined", NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<fp16, [1,4,1,32]> y = add(x=x,y=x)[name=string(\"y\")];\n"
                 "        tensor<fp16, [1,4,1,32]> y = mul(x=x,y=x)[name=string(\"y2\")];\n",
                 "y");
    EXPECT_REJECT(m, NULL, 0, "MIL 6:34:", "'y' is already defined at 5:34", NULL);
    free(m);
    m = mil_prog(IN4, "        tensor<fp16, [1,4,1,32]> x = add(x=x,y=x)[name=string(\"x\")];\n", "x");
    EXPECT_REJECT(m, NULL, 0, "'x' is already defined", NULL, NULL);
    free(m);
    m = mil_prog(IN4, "        tensor<fp16, [1,8,1,64]> y = add(x=x,y=x)[name=string(\"y\")];\n", "y");
    EXPECT_REJECT(m, NULL, 0, "MIL 5:9: value 'y' (add)",
                  "declared type tensor<fp16, [1, 8, 1, 64]> does not match the inferred type tensor<fp16, [1, 4, 1, 32]>",
                  NULL);
    free(m);
    m = mil_prog(IN4, "        tensor<fp16, [1,4,1,32]> y = add(x=x,y=x);\n", "y");
    EXPECT_REJECT(m, NULL, 0, "missing [name = string(\"y\")]", NULL, NULL);
    free(m);
    m = mil_prog(IN4, "        tensor<fp16, [1,4,1,32]> y = add(x=x,y=x)[name=string(\"y\"), foo=int32(1)];\n", "y");
    EXPECT_REJECT(m, NULL, 0, "unknown attribute 'foo'", NULL, NULL);
    free(m);
    m = mil_prog(IN4, "        tensor<fp16, [1,4,1,32]> y = mul(x=x,y=fp16(2))[name=string(\"y\")];\n", "y");
    EXPECT_REJECT(m, NULL, 0, "MIL 5:48:", "argument 'y' is an inline literal", NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<fp16, [1,1,4,32]> a = const()[name=string(\"a\"), val=tensor<fp16, [1,1,4,32]>([1,2])];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "the literal has 2 elements, but tensor<fp16, [1, 1, 4, 32]> needs 128", NULL, NULL);
    free(m);
    m = mil_prog(IN4, "        fp16 a = const()[name=string(\"a\"), val=int32(2)];\n", "x");
    EXPECT_REJECT(m, NULL, 0, "declared type fp16 does not match the literal's type int32", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<fp16, [1,1,32,4]> w = const()[name=string(\"w\"), val=tensor<fp16, [1,1,32,4]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];\n"
                 "        tensor<fp16, [1,4,1,4]> y = matmul(x=x,y=w)[name=string(\"y\")];\n",
                 "y");
    EXPECT_REJECT(m, NULL, 0, "BLOBFILE path \"@model_path/weights/w.bin\" is not among the 0 weight blob(s)", NULL,
                  NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<fp16, [1,4,32,8]> w = const()[name=string(\"w\"), val=tensor<fp16, [1,4,32,8]>([" 
                 "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0])];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "the literal has 32 elements", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<fp16, [1,32768,32768]> a = const()[name=string(\"a\"), val=tensor<fp16, [1,32768,32768]>([1,2])];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "tensor<fp16, [1, 32768, 32768]> has more elements than the emulator's limit of 268435456",
                  NULL, NULL);
    free(m);
    /* shapes */
    m = mil_prog(IN4,
                 "        tensor<fp16, [1,1,1,16]> r = const()[name=string(\"r\"), val=tensor<fp16, [1,1,1,16]>([0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0])];\n"
                 "        tensor<fp16, [1,4,1,32]> y = add(x=x,y=r)[name=string(\"y\")];\n",
                 "y");
    EXPECT_REJECT(m, NULL, 0, "do not broadcast (dimension -1: 32 vs 16)", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<int32, [4]> s = const()[name=string(\"s\"), val=tensor<int32, [4]>([1,1,4,32])];\n"
                 "        tensor<fp16, [1,1,4,32]> a = reshape(shape=s,x=x)[name=string(\"a\")];\n"
                 "        tensor<fp16, [1,1,4,4]> y = matmul(x=a,y=a)[name=string(\"y\")];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "inner dimensions differ", "K = 32", "K = 4");
    free(m);
    m = mil_prog(IN4,
                 "        tensor<int32, [4]> s = const()[name=string(\"s\"), val=tensor<int32, [4]>([1,3,1,32])];\n"
                 "        tensor<fp16, [1,3,1,32]> a = reshape(shape=s,x=x)[name=string(\"a\")];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "to a shape with a different count", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<int32, [4]> b = const()[name=string(\"b\"), val=tensor<int32, [4]>([0,2,0,0])];\n"
                 "        tensor<int32, [4]> s = const()[name=string(\"s\"), val=tensor<int32, [4]>([1,3,1,32])];\n"
                 "        tensor<fp16, [1,3,1,32]> a = slice_by_size(x=x,begin=b,size=s)[name=string(\"a\")];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "slice begin 2 size 3 on axis 1 is outside", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<int32, [4]> p = const()[name=string(\"p\"), val=tensor<int32, [4]>([0,1,1,2])];\n"
                 "        tensor<fp16, [1,4,1,32]> a = transpose(perm=p,x=x)[name=string(\"a\")];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "perm must be a permutation of 0..3", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        int32 ax = const()[name=string(\"ax\"), val=int32(1)];\n"
                 "        tensor<fp16, [1,4,1,32]> a = softmax(axis=ax,x=y)[name=string(\"a\")];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "argument 'y' is not defined", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<fp16, [1,4,1,32]> y = add(x=x,y=x)[name=string(\"y\")];\n"
                 "        tensor<fp16, [1,4,1,32]> a = softmax(axis=y,x=x)[name=string(\"a\")];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "argument 'axis' must be a const value, but 'y' is computed at run time", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        int32 ax = const()[name=string(\"ax\"), val=int32(4)];\n"
                 "        tensor<fp16, [1,4,1,32]> a = softmax(axis=ax,x=x)[name=string(\"a\")];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "axis 4 is out of range for rank 4", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        int32 ax = const()[name=string(\"ax\"), val=int32(1)];\n"
                 "        bool t = const()[name=string(\"t\"), val=bool(true)];\n"
                 "        tensor<fp16, [1,8,1,32]> a = concat(axis=ax,interleave=t,values=(x,x))[name=string(\"a\")];\n",
                 "a");
    EXPECT_REJECT(m, NULL, 0, "interleave = true is not supported", NULL, NULL);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<int32, [4]> s = const()[name=string(\"s\"), val=tensor<int32, [4]>([1,4,4,8])];\n"
                 "        tensor<fp16, [1,4,4,8]> q = reshape(shape=s,x=x)[name=string(\"q\")];\n"
                 "        tensor<fp16, [1,1,4,4]> mk = const()[name=string(\"mk\"), val=tensor<fp16, [1,1,4,4]>([0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0])];\n"
                 "        tensor<fp16, [1,4,4,8]> a = scaled_dot_product_attention(query=q,key=q,value=q,attn_mask=mk)[name=string(\"a\")];\n",
                 "x");
    EXPECT_REJECT(m, NULL, 0, "attn_mask is not accepted", "ignore", NULL);
    free(m);
}

static void test_reject_conv(void) {
    Str b = {0};
    str_addf(&b,
             "%s        int32 gr = const()[name=string(\"gr\"), val=int32(1)];\n"
             "        tensor<int32, [4]> b0 = const()[name=string(\"b0\"), val=tensor<int32, [4]>([0,0,0,0])];\n"
             "        tensor<int32, [4]> sz = const()[name=string(\"sz\"), val=tensor<int32, [4]>([1,4,1,4])];\n"
             "        tensor<int32, [4]> s = const()[name=string(\"s\"), val=tensor<int32, [4]>([4,4,1,1])];\n"
             "        tensor<fp16, [1,4,1,4]> w16 = slice_by_size(x=x,begin=b0,size=sz)[name=string(\"w16\")];\n"
             "        tensor<fp16, [4,4,1,1]> w = reshape(shape=s,x=w16)[name=string(\"w\")];\n"
             "        tensor<fp16, [1,4,1,32]> y = conv(dilations=dl,groups=gr,pad=pd,pad_type=pt,strides=st,weight=w,x=x)[name=string(\"y\")];\n",
             CONV_CONSTS);
    char *m = mil_prog(IN4, b.s, "y");
    EXPECT_REJECT(m, NULL, 0, "value 'y' (conv)", "Can't use dynamic weight with conv", NULL);
    free(m);
    free(b.s);

    /* > 16384 input channels (a const weight, so only the channel limit fails) */
    int IC = 16416;
    float *w = calloc((size_t)IC, sizeof(float));
    size_t bsize;
    unsigned char *blob = blob_fp16(w, (size_t)IC, &bsize);
    AneBlob bl = {"@model_path/weights/w.bin", blob, bsize};
    b = (Str){0};
    str_addf(&b,
             "%s        int32 gr = const()[name=string(\"gr\"), val=int32(1)];\n"
             "        tensor<fp16, [1,%d,1,1]> W = const()[name=string(\"W\"), val=tensor<fp16, [1,%d,1,1]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];\n"
             "        tensor<fp16, [1,1,1,32]> y = conv(dilations=dl,groups=gr,pad=pd,pad_type=pt,strides=st,weight=W,x=x)[name=string(\"y\")];\n",
             CONV_CONSTS, IC, IC);
    Str in = {0};
    str_addf(&in, "tensor<fp16, [1, %d, 1, 32]> x", IC);
    m = mil_prog(in.s, b.s, "y");
    EXPECT_REJECT(m, &bl, 1, "conv with 16416 input channels", "more than 16384", NULL);
    free(m);
    free(b.s);
    free(in.s);
    free(blob);
    free(w);

    /* a 3x3 kernel, strides 2, groups that do not divide */
    float w9[4 * 4 * 9] = {0};
    blob = blob_fp16(w9, 4 * 4 * 9, &bsize);
    bl.data = blob;
    bl.size = bsize;
    b = (Str){0};
    str_addf(&b,
             "%s        int32 gr = const()[name=string(\"gr\"), val=int32(1)];\n"
             "        tensor<fp16, [4,4,3,3]> W = const()[name=string(\"W\"), val=tensor<fp16, [4,4,3,3]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];\n"
             "        tensor<fp16, [1,4,1,32]> y = conv(dilations=dl,groups=gr,pad=pd,pad_type=pt,strides=st,weight=W,x=x)[name=string(\"y\")];\n",
             CONV_CONSTS);
    m = mil_prog(IN4, b.s, "y");
    EXPECT_REJECT(m, &bl, 1, "only 1x1 kernels", NULL, NULL);
    free(m);
    free(b.s);
    free(blob);
    float w4[16] = {0};
    blob = blob_fp16(w4, 16, &bsize);
    bl.data = blob;
    bl.size = bsize;
    const char *tail =
        "        tensor<fp16, [4,4,1,1]> W = const()[name=string(\"W\"), val=tensor<fp16, [4,4,1,1]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];\n"
        "        tensor<fp16, [1,4,1,32]> y = conv(dilations=dl,groups=gr,pad=pd,pad_type=pt,strides=st,weight=W,x=x)[name=string(\"y\")];\n";
    b = (Str){0};
    str_addf(&b,
             "        string pt = const()[name=string(\"pt\"), val=string(\"valid\")];\n"
             "        tensor<int32, [2]> st = const()[name=string(\"st\"), val=tensor<int32, [2]>([2,2])];\n"
             "        tensor<int32, [4]> pd = const()[name=string(\"pd\"), val=tensor<int32, [4]>([0,0,0,0])];\n"
             "        tensor<int32, [2]> dl = const()[name=string(\"dl\"), val=tensor<int32, [2]>([1,1])];\n"
             "        int32 gr = const()[name=string(\"gr\"), val=int32(1)];\n%s",
             tail);
    m = mil_prog(IN4, b.s, "y");
    EXPECT_REJECT(m, &bl, 1, "only strides [1, 1]", NULL, NULL);
    free(m);
    free(b.s);
    b = (Str){0};
    str_addf(&b, "%s        int32 gr = const()[name=string(\"gr\"), val=int32(3)];\n%s", CONV_CONSTS, tail);
    m = mil_prog(IN4, b.s, "y");
    EXPECT_REJECT(m, &bl, 1, "does not fit x with 4 input channels and groups = 3", NULL, NULL);
    free(m);
    free(b.s);
    /* a conv without its pad argument */
    b = (Str){0};
    str_addf(&b,
             "%s        int32 gr = const()[name=string(\"gr\"), val=int32(1)];\n"
             "        tensor<fp16, [4,4,1,1]> W = const()[name=string(\"W\"), val=tensor<fp16, [4,4,1,1]>(BLOBFILE(path=string(\"@model_path/weights/w.bin\"), offset=uint64(64)))];\n"
             "        tensor<fp16, [1,4,1,32]> y = conv(dilations=dl,groups=gr,pad_type=pt,strides=st,weight=W,x=x)[name=string(\"y\")];\n",
             CONV_CONSTS);
    m = mil_prog(IN4, b.s, "y");
    EXPECT_REJECT(m, &bl, 1, "missing argument 'pad' for conv", NULL, NULL);
    free(m);
    free(b.s);
    free(blob);
}

static void test_reject_blobs(void) {
    const char *body =
        "        tensor<fp16, [1,4,1,32]> c = const()[name=string(\"c\"), val=tensor<fp16, [1,4,1,32]>(BLOBFILE(path=string(\"@model_path/weights/c.bin\"), offset=uint64(64)))];\n"
        "        tensor<fp16, [1,4,1,32]> y = add(x=x,y=c)[name=string(\"y\")];\n";
    char *m = mil_prog(IN4, body, "y");
    float v[128];
    fill_half(v, 128, -1, 1);
    size_t size;
    unsigned char *good = blob_fp16(v, 128, &size), *bad = malloc(size + 64);
    AneBlob b = {"@model_path/weights/c.bin", bad, size};
    float in[128], out[128];
    fill_half(in, 128, -1, 1);
    Err err = {{0}};
    memcpy(bad, good, size);
    CHECK(emu_run(m, &b, 1, in, out, 128, &err) == 0 && out[3] == (float)R((double)in[3] + v[3]), "%s", err.msg);
#define CORRUPT(off, byte) (memcpy(bad, good, size), bad[off] = (byte))
    CORRUPT(64, 0x00);
    EXPECT_REJECT(m, &b, 1, "MIL 5:", "metadata sentinel is 0xDEADBE00, expected 0xDEADBEEF", NULL);
    CORRUPT(68, 2);
    EXPECT_REJECT(m, &b, 1, "dtype code is 2 (fp32), but the MIL declares tensor<fp16, [1, 4, 1, 32]> (code 1)", NULL,
                  NULL);
    CORRUPT(68, 4);
    EXPECT_REJECT(m, &b, 1, "dtype code is 4 (int8)", NULL, NULL);
    CORRUPT(73, 0); /* 256 = 0x100: byte 73 holds the 1 */
    EXPECT_REJECT(m, &b, 1, "sizeInBytes is 0, but tensor<fp16, [1, 4, 1, 32]> needs 256 bytes", NULL, NULL);
    CORRUPT(4, 1);
    EXPECT_REJECT(m, &b, 1, "storage header version is 1, expected 2", NULL, NULL);
    CORRUPT(80, 64);
    EXPECT_REJECT(m, &b, 1, "data offset is 64, expected a 64-byte-aligned offset at or after 128", NULL, NULL);
    CORRUPT(80, 192);
    EXPECT_REJECT(m, &b, 1, "256 data bytes at offset 192 run past the end of the blob (384 bytes)", NULL, NULL);
    memcpy(bad, good, size);
    b.size = 100;
    EXPECT_REJECT(m, &b, 1, "the metadata record at offset 64 runs past the end (100 bytes)", NULL, NULL);
    b.size = 20;
    EXPECT_REJECT(m, &b, 1, "is 20 bytes, shorter than the 64-byte storage header", NULL, NULL);
    b.size = size;
    b.path = "@model_path/weights/other.bin";
    EXPECT_REJECT(m, &b, 1, "BLOBFILE path \"@model_path/weights/c.bin\" is not among the 1 weight blob(s)",
                  "\"@model_path/weights/other.bin\"", NULL);
    b.path = "@model_path/weights/c.bin";
    char *m2 = strdup(m);
    memcpy(strstr(m2, "uint64(64)"), "uint64(65)", 10);
    EXPECT_REJECT(m2, &b, 1, "offset=uint64(65) must point at a 64-byte-aligned metadata record", NULL, NULL);
    free(m2);
    free(m);
    free(good);
    free(bad);
#undef CORRUPT
}

/* ================================================================== device */

static void test_device_surfaces_and_counters(void) {
    AneEmuOptions o;
    ane_emu_default_options(&o);
    CHECK(o.compile_budget == 119 && o.accumulate_fp32 == 1 && o.flush_subnormals == 0, "defaults");
    o.compile_budget = INT_MAX;
    Err err = {{0}};
    AneDevice *d = ane_emu_create(&o, &err);
    CHECK(d && strcmp(d->name, "emu") == 0, "%s", err.msg);
    if (!d) return;
    o.compile_budget = 0;
    CHECK(!ane_emu_create(&o, &err) && strstr(err.msg, "compile_budget must be >= 1"), "%s", err.msg);
    char *m = mil_prog("tensor<fp16, [1, 4, 1, 64]> x",
                       "        tensor<fp16, [1,4,1,64]> y = add(x=x,y=x)[name=string(\"y\")];\n"
                       "        int32 ax = const()[name=string(\"ax\"), val=int32(1)];\n"
                       "        bool no = const()[name=string(\"no\"), val=bool(false)];\n"
                       "        tensor<fp16, [1,8,1,64]> z = concat(axis=ax,interleave=no,values=(y,x))[name=string(\"z\")];\n",
                       "z");
    AneProgram *p = d->compile(d, m, NULL, 0, &err);
    CHECK(p, "%s", err.msg);
    if (!p) {
        d->destroy(d);
        free(m);
        return;
    }
    AneShape si, so;
    d->program_io(p, &si, &so);
    CHECK(si.channels == 4 && si.spatial == 64 && so.channels == 8 && so.spatial == 64, "io shapes");
    AneSurface *in = d->surface_create(d, 4 * 64 * 2, &err), *out = d->surface_create(d, 8 * 64 * 2, &err),
               *small = d->surface_create(d, 100, &err);
    CHECK(in && out && small && d->surface_bytes(in) == 512, "surfaces");
    CHECK(!d->surface_create(d, 0, &err) && strstr(err.msg, "not a valid surface size"), "%s", err.msg);
    uint16_t *h = d->surface_lock(d, in, 0);
    for (int i = 0; i < 256; i++) h[i] = fp16_from_float((float)i);
    CHECK(d->evaluate(d, p, in, out, &err) == -1 && strstr(err.msg, "input surface is still locked"), "%s", err.msg);
    d->surface_unlock(d, in, 0);
    CHECK(d->evaluate(d, p, in, out, &err) == 0, "%s", err.msg);
    const uint16_t *r = d->surface_lock(d, out, 1);
    CHECK(fp16_to_float(r[5]) == 10.0f && fp16_to_float(r[256 + 7]) == 7.0f, "result");
    d->surface_unlock(d, out, 1);
    CHECK(d->evaluate(d, p, in, small, &err) == -1 && strstr(err.msg, "output surface has 100 bytes") &&
              strstr(err.msg, "exactly 1024"),
          "%s", err.msg);
    CHECK(d->evaluate(d, p, out, in, &err) == -1 && strstr(err.msg, "input surface has 1024 bytes"), "%s", err.msg);
    d->surface_unlock(d, out, 0); /* unbalanced */
    CHECK(d->evaluate(d, p, in, out, &err) == -1 && strstr(err.msg, "unlocked 1 more time"), "%s", err.msg);
    d->surface_lock(d, in, 1);
    d->surface_unlock(d, in, 0); /* mismatched read_only flag */
    CHECK(d->evaluate(d, p, in, small, &err) == -1 && strstr(err.msg, "input surface is still locked"), "%s", err.msg);
    CHECK(d->counters.compiles == 1 && d->counters.evaluations == 1 && d->counters.bytes_in == 512 &&
              d->counters.bytes_out == 1024 && d->counters.eval_seconds > 0 && d->counters.compile_seconds > 0,
          "counters");
    CHECK(!d->compile(d, "program(1.3)", NULL, 0, &err) && d->counters.compile_failures == 1, "failure counted");
    d->surface_free(d, in);
    d->surface_free(d, out);
    d->surface_free(d, small);
    d->release(d, p);
    d->destroy(d);
    free(m);
}

static void test_compile_budget(void) {
    /* The counter is per process: allow 3 more compiles than have happened so far. */
    uint64_t before = ane_emu_process_compiles();
    AneEmuOptions o;
    ane_emu_default_options(&o);
    o.compile_budget = (int)before + 3;
    Err err = {{0}};
    AneDevice *d = ane_emu_create(&o, &err);
    char *m = mil_prog(IN4, "", "x");
    AneProgram *p[4] = {0};
    for (int i = 0; i < 2; i++) p[i] = d->compile(d, m, NULL, 0, &err);
    AneProgram *bad = d->compile(d, "garbage", NULL, 0, &err);
    CHECK(!bad && strstr(err.msg, "MIL 1:1:") && !strstr(err.msg, "budget"), "a syntax error gives its slot back: %s",
          err.msg);
    p[2] = d->compile(d, m, NULL, 0, &err);
    CHECK(p[0] && p[1] && p[2], "three compiles fit: %s", err.msg);
    d->release(d, p[0]); /* releasing gives nothing back */
    p[3] = d->compile(d, m, NULL, 0, &err);
    CHECK(!p[3], "the fourth compile fails");
    char want[160];
    snprintf(want, sizeof want, "ANE compile budget exhausted: %llu compiles in this process (budget %d); restart the process",
             (unsigned long long)before + 3, o.compile_budget);
    CHECK(strstr(err.msg, want) != NULL, "%s", err.msg);
    CHECK(d->counters.compiles == 3 && d->counters.compile_failures == 2, "counters %llu %llu",
          (unsigned long long)d->counters.compiles, (unsigned long long)d->counters.compile_failures);
    CHECK(ane_emu_process_compiles() == before + 3, "process count");
    /* Another device in the same process shares the count. */
    AneDevice *d2 = ane_emu_create(&o, &err);
    CHECK(d2 && !d2->compile(d2, m, NULL, 0, &err) && strstr(err.msg, "budget exhausted"), "%s", err.msg);
    d->release(d, p[1]);
    d->release(d, p[2]);
    d->destroy(d);
    if (d2) d2->destroy(d2);
    free(m);
}

static void test_plan_reuses_buffers(void) {
    /* A chain of 12 ops on [1,64,1,64]: liveness packing needs a few buffers, not 12. */
    Str b = {0};
    const char *prev = "x";
    char names[12][16];
    for (int i = 0; i < 12; i++) {
        snprintf(names[i], sizeof names[i], "v%d", i);
        str_addf(&b, "        tensor<fp16, [1,64,1,64]> %s = %s(x=%s,y=x)[name=string(\"%s\")];\n", names[i],
                 i % 2 ? "add" : "mul", prev, names[i]);
        prev = names[i];
    }
    char *m = mil_prog("tensor<fp16, [1, 64, 1, 64]> x", b.s, prev);
    MilOptions o = {1, 0, 0, ANE_LIMITS_STRICT};
    Err err = {{0}};
    MilProgram *p = mil_program_compile(m, NULL, 0, &o, &err);
    CHECK(p, "%s", err.msg);
    if (p) {
        size_t one = 64 * 64 * sizeof(float);
        CHECK(mil_program_buffer_bytes(p) <= 3 * one, "%zu bytes of buffers for 13 tensors of %zu",
              mil_program_buffer_bytes(p), one);
        float in[4096], want_f;
        uint16_t hin[4096], hout[4096];
        fill_half(in, 4096, 0.9, 1.1);
        for (int i = 0; i < 4096; i++) hin[i] = fp16_from_float(in[i]);
        CHECK(mil_program_run(p, hin, hout, &err) == 0, "%s", err.msg);
        double v = in[77];
        for (int i = 0; i < 12; i++) v = i % 2 ? R(v + in[77]) : R(v * in[77]);
        want_f = (float)v;
        CHECK(fp16_to_float(hout[77]) == want_f, "chain result %g vs %g", fp16_to_float(hout[77]), want_f);
        mil_program_free(p);
    }
    free(m);
    free(b.s);
}

static void test_io_edge_cases(void) {
    /* The output may be the input itself, an alias of it, or a constant. */
    float in[128];
    double want[128];
    fill_half(in, 128, -2, 2);
    for (int i = 0; i < 128; i++) want[i] = in[i];
    char *m = mil_prog(IN4, "", "x");
    EXPECT_OUTPUT(m, NULL, 0, in, want, 128, 0, 0);
    free(m);
    m = mil_prog(IN4,
                 "        tensor<int32, [4]> s = const()[name=string(\"s\"), val=tensor<int32, [4]>([1,2,1,64])];\n"
                 "        tensor<fp16, [1,2,1,64]> y = reshape(shape=s,x=x)[name=string(\"y\")];\n",
                 "y");
    EXPECT_OUTPUT(m, NULL, 0, in, want, 128, 0, 0);
    free(m);
    Str b = {0}, v = {0};
    for (int i = 0; i < 32; i++) str_addf(&v, "%s%d", i ? "," : "", i - 16), want[i] = i - 16;
    str_addf(&b, "        tensor<fp16, [1,1,1,32]> c = const()[name=string(\"c\"), val=tensor<fp16, [1,1,1,32]>([%s])];\n",
             v.s);
    m = mil_prog(IN4, b.s, "c");
    EXPECT_OUTPUT(m, NULL, 0, in, want, 32, 0, 0);
    free(m);
    free(b.s);
    free(v.s);
}

/* ================================================================== fuzz */

static const char *const fuzz_bytes = "0123456789-.,;:()[]{}<>=\"'_xyzfpintesorBLOF \n\t@\\\x01\xff";

static void fuzz_mutate(char *t, size_t *n, size_t cap) {
    int k = rng_next() % 3 ? 1 : 2 + (int)(rng_next() % 3);
    for (int m = 0; m < k && *n > 0; m++) {
        size_t pos = (size_t)(rng_next() % *n);
        switch (rng_next() % 6) {
        case 0: t[pos] = (char)(rng_next() & 0xFF); break;
        case 1: t[pos] = fuzz_bytes[rng_next() % strlen(fuzz_bytes)]; break;
        case 2: *n = pos; break; /* truncate */
        case 3: {                /* delete a range */
            size_t len = 1 + (size_t)(rng_next() % 16);
            if (pos + len > *n) len = *n - pos;
            memmove(t + pos, t + pos + len, *n - pos - len);
            *n -= len;
            break;
        }
        case 4: { /* duplicate a range */
            size_t len = 1 + (size_t)(rng_next() % 24);
            if (pos + len > *n) len = *n - pos;
            if (*n + len < cap) {
                memmove(t + pos + len, t + pos, *n - pos);
                *n += len;
            }
            break;
        }
        default: t[pos] ^= (char)(1 << (rng_next() % 8)); break;
        }
        t[*n] = '\0';
    }
}

static void test_fuzz(void) {
    const char *env = getenv("ANETRAIN_FUZZ_ITERS");
    long iters = env ? atol(env) : 3000;
    size_t msize;
    unsigned char *mblob = mask_blob(32, &msize);
    int8_t qv[32];
    for (int i = 0; i < 32; i++) qv[i] = (int8_t)(i - 16);
    size_t qsize;
    unsigned char *qblob = blob_make(4, qv, 32, &qsize);
    AneBlob blobs[2] = {{"@model_path/weights/mask.bin", mblob, msize}, {"@model_path/weights/weight.bin", qblob, qsize}};
    Str b = {0};
    str_addf(&b,
             "%s        int32 gr = const()[name=string(\"gr\"), val=int32(1)];\n"
             "        tensor<fp16, [8, 4, 1, 1]> W0 = constexpr_affine_dequantize()[axis = int32(0), name = string(\"W0\"), "
             "quantized_data = tensor<int8, [8, 4, 1, 1]>(BLOBFILE(path = string(\"@model_path/weights/weight.bin\"), "
             "offset = uint64(64))), scale = tensor<fp16, [8]>([0x1p-3, 0.25, 0, 1, 2, 0.5, 3, 0x1p-4]), "
             "zero_point = tensor<int8, [8]>([3, -3, 0, 1, -128, 127, 2, -1])];\n"
             "        tensor<fp16, [1, 8, 1, 32]> c = conv(dilations=dl,groups=gr,pad=pd,pad_type=pt,strides=st,weight=W0,x=x)[name=string(\"c\")];\n"
             "        fp16 qs = const()[name = string(\"qs\"), val = fp16(0.125)];\n"
             "        string qd = const()[name = string(\"qd\"), val = string(\"int8\")];\n"
             "        tensor<int8, [1, 8, 1, 32]> q = quantize(input = c, output_dtype = qd, scale = qs)[name = string(\"q\")];\n"
             "        tensor<fp16, [1, 8, 1, 32]> dq = dequantize(input = q, scale = qs)[name = string(\"dq\")];\n"
             "        tensor<int32, [1]> a1 = const()[name=string(\"a1\"), val=tensor<int32, [1]>([1])];\n"
             "        bool kd = const()[name=string(\"kd\"), val=bool(true)];\n"
             "        tensor<fp16, [1,1,1,32]> ss = reduce_sum(x=dq,axes=a1,keep_dims=kd)[name=string(\"ss\")];\n"
             "        fp16 nh = const()[name=string(\"nh\"), val=fp16(-0.5)];\n"
             "        tensor<fp16, [1,1,1,32]> rr = pow(x=ss,y=nh)[name=string(\"rr\")];\n"
             "        tensor<fp16, [1,8,1,32]> sg = sigmoid(x=dq)[name=string(\"sg\")];\n"
             "        tensor<fp16, [1,8,1,32]> y = mul(x=sg,y=rr)[name=string(\"y\")];\n",
             CONV_CONSTS);
    char *seeds[3] = {attention_mil(2, 16, 32), mil_prog("tensor<fp16, [1, 4, 1, 32]> x", b.s, "y"),
                      dyn_linear_mil(16, 32, 32)};
    free(b.s);
    MilOptions o = {1, 0, 1 << 16, ANE_LIMITS_STRICT}; /* small tensors only: mutated dims must not eat memory */
    size_t cap = 0;
    for (int s = 0; s < 3; s++) cap = strlen(seeds[s]) * 2 + 64 > cap ? strlen(seeds[s]) * 2 + 64 : cap;
    char *t = malloc(cap);
    uint16_t *hin = calloc(1 << 16, 2), *hout = calloc(1 << 16, 2);
    for (int i = 0; i < (1 << 16); i++) hin[i] = fp16_from_float((float)R(rng_uniform(-2, 2)));
    rng_state = 0x5EEDF00Dull;
    long compiled = 0, ran = 0;
    for (int s = 0; s < 3; s++) { /* the seeds themselves compile */
        Err err = {{0}};
        MilProgram *p = mil_program_compile(seeds[s], blobs, 2, &o, &err);
        CHECK(p, "seed %d: %s", s, err.msg);
        mil_program_free(p);
    }
    for (long it = 0; it < iters; it++) {
        const char *seed = seeds[it % 3];
        size_t n = strlen(seed);
        memcpy(t, seed, n + 1);
        fuzz_mutate(t, &n, cap);
        Err err = {{0}};
        MilProgram *p = mil_program_compile(t, blobs, 2, &o, &err);
        if (p) {
            compiled++;
            AneShape si, so;
            mil_program_io(p, &si, &so);
            if ((size_t)si.channels * si.spatial <= (1 << 16) && (size_t)so.channels * so.spatial <= (1 << 16)) {
                CHECK(mil_program_run(p, hin, hout, &err) == 0, "%s", err.msg);
                ran++;
            }
            mil_program_free(p);
        } else {
            CHECK(strncmp(err.msg, "MIL ", 4) == 0, "every rejection names a position: %s", err.msg);
        }
    }
    printf("     fuzz: %ld mutated programs, %ld compiled, %ld ran\n", iters, compiled, ran);
    for (int s = 0; s < 3; s++) free(seeds[s]);
    free(t);
    free(hin);
    free(hout);
    free(mblob);
    free(qblob);
}

/* ================================================================== speed (opt-in) */

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench_big_matmul(void) {
    /* The docs/ane-facts.md §2.4 linear kernel at Qwen3-0.6B's FFN size (IC 1024, OC 3072, S 256), against one
    ** sgemm of the same shape on fp32 data. */
    int IC = 1024, OC = 3072, S = 256, SP = S + OC, reps = 5;
    char *m = dyn_linear_mil(IC, OC, S);
    Err err = {{0}};
    AneProgram *p = dev->compile(dev, m, NULL, 0, &err);
    CHECK(p, "%s", err.msg);
    if (!p) return;
    AneSurface *in = dev->surface_create(dev, (size_t)IC * SP * 2, &err), *out = dev->surface_create(dev, (size_t)OC * S * 2, &err);
    uint16_t *h = dev->surface_lock(dev, in, 0);
    for (size_t i = 0; i < (size_t)IC * SP; i++) h[i] = fp16_from_float((float)rng_uniform(-0.1, 0.1));
    dev->surface_unlock(dev, in, 0);
    dev->evaluate(dev, p, in, out, &err);
    double t0 = seconds();
    for (int r = 0; r < reps; r++) dev->evaluate(dev, p, in, out, &err);
    double emu = (seconds() - t0) / reps;
    float *A = malloc(sizeof(float) * IC * S), *W = malloc(sizeof(float) * IC * OC), *Y = malloc(sizeof(float) * OC * S);
    for (size_t i = 0; i < (size_t)IC * S; i++) A[i] = (float)rng_uniform(-0.1, 0.1);
    for (size_t i = 0; i < (size_t)IC * OC; i++) W[i] = (float)rng_uniform(-0.1, 0.1);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, S, IC, 1.0f, W, OC, A, S, 0.0f, Y, S);
    t0 = seconds();
    for (int r = 0; r < reps; r++) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, S, IC, 1.0f, W, OC, A, S, 0.0f, Y, S);
    double gemm = (seconds() - t0) / reps;
    double flop = 2.0 * IC * OC * S;
    printf("     bench: dynamic linear %dx%d, S=%d (%s, %d threads): emulator %.2f ms (%.1f GFLOP/s), sgemm %.2f ms "
           "(%.1f GFLOP/s), ratio %.2fx\n",
           IC, OC, S, blas_name(), parallel_threads(), emu * 1e3, flop / emu * 1e-9, gemm * 1e3, flop / gemm * 1e-9,
           emu / gemm);
    free(A);
    free(W);
    free(Y);
    dev->surface_free(dev, in);
    dev->surface_free(dev, out);
    dev->release(dev, p);
    free(m);
}

/* ffnFused as the seed (maderix/ANE) writes it (docs/ane-facts.md §4.2), Stories110M sizes:
** input [1, D, 1, 2S+3F] = x2norm | x2 | W1 | W3 | W2;
** out [1, D+3F, 1, S] = x2 + a*W2(silu(W1 xn) * W3 xn) | h1 | h3 | gate. */
static char *ffn_mil(int D, int F, int S) {
    Str b = {0};
    str_addf(&b,
             "        tensor<int32, [4]> pm = const()[name=string(\"pm\"), val=tensor<int32, [4]>([0,1,3,2])];\n"
             "        bool bF = const()[name=string(\"bF\"), val=bool(false)];\n"
             "        bool bT = const()[name=string(\"bT\"), val=bool(true)];\n"
             "        tensor<int32, [4]> b0 = const()[name=string(\"b0\"), val=tensor<int32, [4]>([0,0,0,0])];\n"
             "        tensor<int32, [4]> b1 = const()[name=string(\"b1\"), val=tensor<int32, [4]>([0,0,0,%d])];\n"
             "        tensor<int32, [4]> b2 = const()[name=string(\"b2\"), val=tensor<int32, [4]>([0,0,0,%d])];\n"
             "        tensor<int32, [4]> b3 = const()[name=string(\"b3\"), val=tensor<int32, [4]>([0,0,0,%d])];\n"
             "        tensor<int32, [4]> b4 = const()[name=string(\"b4\"), val=tensor<int32, [4]>([0,0,0,%d])];\n"
             "        tensor<int32, [4]> ss = const()[name=string(\"ss\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<int32, [4]> sw = const()[name=string(\"sw\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<fp16, [1,%d,1,%d]> xn = slice_by_size(x=x,begin=b0,size=ss)[name=string(\"xn\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> x2 = slice_by_size(x=x,begin=b1,size=ss)[name=string(\"x2\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> W1 = slice_by_size(x=x,begin=b2,size=sw)[name=string(\"W1\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> W3 = slice_by_size(x=x,begin=b3,size=sw)[name=string(\"W3\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> W2 = slice_by_size(x=x,begin=b4,size=sw)[name=string(\"W2\")];\n"
             "        tensor<int32, [4]> rx = const()[name=string(\"rx\"), val=tensor<int32, [4]>([1,1,%d,%d])];\n"
             "        tensor<int32, [4]> rw = const()[name=string(\"rw\"), val=tensor<int32, [4]>([1,1,%d,%d])];\n"
             "        tensor<fp16, [1,1,%d,%d]> xn2 = reshape(shape=rx,x=xn)[name=string(\"xn2\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> xnt = transpose(perm=pm,x=xn2)[name=string(\"xnt\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> W1r = reshape(shape=rw,x=W1)[name=string(\"W1r\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> W3r = reshape(shape=rw,x=W3)[name=string(\"W3r\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> W2r = reshape(shape=rw,x=W2)[name=string(\"W2r\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> h1 = matmul(transpose_x=bF,transpose_y=bF,x=xnt,y=W1r)[name=string(\"h1\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> h3 = matmul(transpose_x=bF,transpose_y=bF,x=xnt,y=W3r)[name=string(\"h3\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> sg = sigmoid(x=h1)[name=string(\"sg\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> si = mul(x=h1,y=sg)[name=string(\"si\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> gt = mul(x=si,y=h3)[name=string(\"gt\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> fo = matmul(transpose_x=bF,transpose_y=bT,x=gt,y=W2r)[name=string(\"fo\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> fot = transpose(perm=pm,x=fo)[name=string(\"fot\")];\n"
             "        tensor<int32, [4]> rd = const()[name=string(\"rd\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<int32, [4]> rf = const()[name=string(\"rf\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<fp16, [1,%d,1,%d]> ff = reshape(shape=rd,x=fot)[name=string(\"ff\")];\n"
             "        fp16 al = const()[name=string(\"al\"), val=fp16(0.0625)];\n"
             "        tensor<fp16, [1,%d,1,%d]> fa = mul(x=ff,y=al)[name=string(\"fa\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> xo = add(x=x2,y=fa)[name=string(\"xo\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> h1t = transpose(perm=pm,x=h1)[name=string(\"h1t\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> h3t = transpose(perm=pm,x=h3)[name=string(\"h3t\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> gtt = transpose(perm=pm,x=gt)[name=string(\"gtt\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> h1f = reshape(shape=rf,x=h1t)[name=string(\"h1f\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> h3f = reshape(shape=rf,x=h3t)[name=string(\"h3f\")];\n"
             "        tensor<fp16, [1,%d,1,%d]> gtf = reshape(shape=rf,x=gtt)[name=string(\"gtf\")];\n"
             "        int32 ax = const()[name=string(\"ax\"), val=int32(1)];\n"
             "        tensor<fp16, [1,%d,1,%d]> out = concat(axis=ax,interleave=bF,values=(xo,h1f,h3f,gtf))[name=string(\"out\")];\n",
             S, 2 * S, 2 * S + F, 2 * S + 2 * F, D, S, D, F, D, S, D, S, D, F, D, F, D, F, D, S, D, F, D, S, S, D, D, F,
             D, F, D, F, S, F, S, F, S, F, S, F, S, F, S, D, D, S, D, S, F, S, D, S, D, S, D, S, F, S, F, S, F, S, F, S,
             F, S, F, S, D + 3 * F, S);
    Str in = {0};
    str_addf(&in, "tensor<fp16, [1, %d, 1, %d]> x", D, 2 * S + 3 * F);
    char *mil = mil_prog(in.s, b.s, "out");
    free(b.s);
    free(in.s);
    return mil;
}

static void bench_ffn(void) {
    int D = 768, F = 2048, S = 256, SP = 2 * S + 3 * F, reps = 5;
    char *m = ffn_mil(D, F, S);
    Err err = {{0}};
    AneProgram *p = dev->compile(dev, m, NULL, 0, &err);
    CHECK(p, "%s", err.msg);
    if (!p) return;
    AneShape so;
    dev->program_io(p, NULL, &so);
    AneSurface *in = dev->surface_create(dev, (size_t)D * SP * 2, &err),
               *out = dev->surface_create(dev, (size_t)so.channels * so.spatial * 2, &err);
    uint16_t *h = dev->surface_lock(dev, in, 0);
    for (size_t i = 0; i < (size_t)D * SP; i++) h[i] = fp16_from_float((float)rng_uniform(-0.1, 0.1));
    dev->surface_unlock(dev, in, 0);
    dev->evaluate(dev, p, in, out, &err);
    double t0 = seconds();
    for (int r = 0; r < reps; r++) dev->evaluate(dev, p, in, out, &err);
    double emu = (seconds() - t0) / reps;
    /* fp32 on the CPU: the three sgemms and the SiLU gate, as the CPU backend does them. */
    float *X = malloc(sizeof(float) * D * S), *W1 = malloc(sizeof(float) * F * D), *W3 = malloc(sizeof(float) * F * D),
          *W2 = malloc(sizeof(float) * D * F), *H1 = malloc(sizeof(float) * F * S), *H3 = malloc(sizeof(float) * F * S),
          *G = malloc(sizeof(float) * F * S), *Y = malloc(sizeof(float) * D * S);
    for (size_t i = 0; i < (size_t)D * S; i++) X[i] = (float)rng_uniform(-0.1, 0.1);
    for (size_t i = 0; i < (size_t)D * F; i++)
        W1[i] = (float)rng_uniform(-0.1, 0.1), W3[i] = W1[i], W2[i] = W1[i];
    double cpu = 0;
    for (int r = 0; r <= reps; r++) {
        double t = seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, S, D, 1.0f, W1, D, X, S, 0.0f, H1, S);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, S, D, 1.0f, W3, D, X, S, 0.0f, H3, S);
        for (size_t i = 0; i < (size_t)F * S; i++) G[i] = H1[i] / (1.0f + expf(-H1[i])) * H3[i];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, S, F, 1.0f, W2, F, G, S, 0.0f, Y, S);
        if (r) cpu += seconds() - t;
    }
    cpu /= reps;
    printf("     bench: ffnFused D=%d F=%d S=%d: emulator %.2f ms, fp32 CPU (3 sgemm + SiLU) %.2f ms, ratio %.2fx\n", D,
           F, S, emu * 1e3, cpu * 1e3, emu / cpu);
    free(X), free(W1), free(W3), free(W2), free(H1), free(H3), free(G), free(Y);
    dev->surface_free(dev, in);
    dev->surface_free(dev, out);
    dev->release(dev, p);
    free(m);
}

static void bench_attention(void) {
    /* The causal attention core (Stories110M: 12 heads of 64, S = 256) against fp32 on the CPU. */
    int H = 12, HD = 64, S = 256, D = H * HD, reps = 5;
    char *m = attention_mil(H, HD, S);
    size_t bsize;
    unsigned char *blob = mask_blob(S, &bsize);
    AneBlob b = {"@model_path/weights/mask.bin", blob, bsize};
    Err err = {{0}};
    AneProgram *p = dev->compile(dev, m, &b, 1, &err);
    CHECK(p, "%s", err.msg);
    if (!p) return;
    AneSurface *in = dev->surface_create(dev, (size_t)3 * D * S * 2, &err), *out = dev->surface_create(dev, (size_t)D * S * 2, &err);
    uint16_t *h = dev->surface_lock(dev, in, 0);
    for (size_t i = 0; i < (size_t)3 * D * S; i++) h[i] = fp16_from_float((float)rng_uniform(-1, 1));
    dev->surface_unlock(dev, in, 0);
    dev->evaluate(dev, p, in, out, &err);
    double t0 = seconds();
    for (int r = 0; r < reps; r++) dev->evaluate(dev, p, in, out, &err);
    double emu = (seconds() - t0) / reps;
    float *q = malloc(sizeof(float) * 3 * D * S), *sc = malloc(sizeof(float) * S * S), *o = malloc(sizeof(float) * D * S);
    for (size_t i = 0; i < (size_t)3 * D * S; i++) q[i] = (float)rng_uniform(-1, 1);
    double cpu = 0;
    for (int r = 0; r <= reps; r++) {
        double t = seconds();
        for (int hh = 0; hh < H; hh++) { /* channel-first [HD][S] per head, as the CPU backend keeps them */
            const float *Q = q + hh * HD * S, *K = q + (D + hh * HD) * S, *V = q + (2 * D + hh * HD) * S;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, S, HD, 0.125f, Q, S, K, S, 0.0f, sc, S);
            for (int i = 0; i < S; i++) {
                float mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) mx = sc[i * S + j] > mx ? sc[i * S + j] : mx;
                for (int j = 0; j < S; j++) sum += sc[i * S + j] = j <= i ? expf(sc[i * S + j] - mx) : 0.0f;
                for (int j = 0; j < S; j++) sc[i * S + j] /= sum;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, HD, S, S, 1.0f, V, S, sc, S, 0.0f, o + hh * HD * S, S);
        }
        if (r) cpu += seconds() - t;
    }
    cpu /= reps;
    printf("     bench: causal attention H=%d HD=%d S=%d: emulator %.2f ms, fp32 CPU %.2f ms, ratio %.2fx\n", H, HD, S,
           emu * 1e3, cpu * 1e3, emu / cpu);
    free(q), free(sc), free(o), free(blob), free(m);
    dev->surface_free(dev, in);
    dev->surface_free(dev, out);
    dev->release(dev, p);
}

int main(void) {
    int cpus = parallel_cpu_count();
    parallel_init(cpus < 2 ? 2 : cpus); /* at least two workers: the parallel paths are under test */
    RUN(test_compile_budget); /* first, so the budget test sees few earlier compiles (it copes either way) */
    AneEmuOptions o;
    ane_emu_default_options(&o);
    o.compile_budget = INT_MAX;
    /* The op and parser tests use spellings and ops that the strict limits refuse (1e-05, cast,
    ** slices at odd offsets, axes above 16384): this device checks the probed rules, which are
    ** every hard rule. The strict-only rules have their own tests (test_ane_limits.c). */
    o.limits = ANE_LIMITS_PROBED;
    Err err = {{0}};
    dev = ane_emu_create(&o, &err);
    if (!dev) {
        fprintf(stderr, "ane_emu_create: %s\n", err.msg);
        return 1;
    }
    RUN(test_fp16_every_half);
    RUN(test_fp16_ties_and_neighbours);
    RUN(test_fp16_random_and_boundaries);
    RUN(test_bf16_rounding);
    RUN(test_parse_literals_and_spacing);
    RUN(test_parse_errors);
    RUN(test_op_elementwise_broadcast);
    RUN(test_op_pow_sigmoid);
    RUN(test_op_softmax);
    RUN(test_op_reduce_sum);
    RUN(test_op_reshape_transpose);
    RUN(test_op_slice_concat);
    RUN(test_op_matmul_transposes);
    RUN(test_op_conv_blob);
    RUN(test_op_quantize_and_affine_dequantize);
    RUN(test_op_cast_and_sdpa);
    RUN(test_big_shapes_parallel);
    RUN(test_dynamic_weight_linear);
    RUN(test_causal_attention);
    RUN(test_overflow_and_subnormals);
    RUN(test_accumulation_modes);
    RUN(test_reject_io);
    RUN(test_reject_ops_and_names);
    RUN(test_reject_conv);
    RUN(test_reject_blobs);
    RUN(test_device_surfaces_and_counters);
    RUN(test_plan_reuses_buffers);
    RUN(test_io_edge_cases);
    RUN(test_fuzz);
    const char *bench = getenv("ANETRAIN_EMU_BENCH");
    if (bench && bench[0] == '1') {
        RUN(bench_big_matmul);
        RUN(bench_ffn);
        RUN(bench_attention);
    }
    dev->destroy(dev);
    parallel_shutdown();
    return TEST_SUMMARY();
}
