/*
** test_darwin_bridge.c — the darwin device (src/backend/ane/darwin.c) on Linux, against the
** test double of AppleNeuralEngine.framework (tests/fake_ane/), which checks every call's
** selector, shape, argument count and argument types against docs/ane-facts.md §1 and runs compile
** and evaluate on the emulator:
**   - the exact call sequence of docs/ane-facts.md §1.2 (create, compile, first and cached evaluate, release);
**   - real kernels through the bridge, bit for bit against the emulator device: the
**     dynamic-weight matmul (also against sgemm), causal attention with its mask as a weight
**     blob, a linear regression trained by SGD, and training steps of the ANE backend
**     (src/backend/ane/ane.c) for a tiny Llama and a tiny Qwen3;
**   - the temp directory (shared by identical programs, removed with the last), the request
**     cache (eviction, surfaces freed under it), destroy releasing live programs;
**   - every failure path as a clean Err carrying the framework's message: framework, class or
**     selector missing; nil descriptor, model, surface object or request; compile NO with and
**     without an NSError; load NO (retried once) and NO twice; evaluate NO; unload NO; IOSurface
**     create and lock failures; budget; bad identifiers, blob paths and temp directories; and
**     each of the bridge's allocations and CoreFoundation calls failing in turn;
**   - after each test: no violation, no object alive, no pool open, no model loaded, nothing
**     left in the temp directory (and, under ASan, no leak);
**   - the probe and `anetrain doctor` (text and JSON, the training kernels in child processes,
**     broken framework, failed compile and evaluate, a crashing kernel), ane_kernel_check (the
**     doctor's work in each child) in-process with each allocation failing in turn;
**   - a compile refused at the start of training or a fine-tune: the error names the kernel, its
**     shapes and the nearest limit, and the checkpoint being resumed is left intact;
**   - the test double itself: each rule it enforces, broken on purpose, is noticed.
**
** Built with -DANE_FAKE_FRAMEWORK -Itests and the sources in tests/fake_ane (the Makefile's
** own rule for build/tests/test_darwin_bridge). Built any other way it only says so, and fails.
*/
#if !defined(ANE_FAKE_FRAMEWORK)
#include <stdio.h>
int main(void) {
    fputs("test_darwin_bridge: built without the fake framework; build it with -DANE_FAKE_FRAMEWORK -Itests, "
          "src/backend/ane/darwin.c and tests/fake_ane/*.c (see the Makefile)\n0 passed, 1 failed\n",
          stdout);
    return 1;
}
#else

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "backend/ane/darwin.h"
#include "backend/ane/device.h"
#include "backend/ane/emu/emu.h"
#include "util/fp16.h"
#include "backend/ane/kernel_check.h"
#include "backend/backend.h"
#include "cli/cli.h"
#include "fake_ane/fake_control.h"
/* The framework's names, to misuse them on purpose (test_fake_catches_misuse); the test is on
** the fake's side of the allocation redirect. */
#define FAKE_ANE_IMPLEMENTATION
#include "backend/ane/objc_shim.h"
#include "model/config.h"
#include "model/params.h"
#include "data/tokfile.h"
#include "train/trainer.h"
#include "util/fileio.h"
#include "test.h"
#include "util/blas.h"
#include "util/rng.h"

#define FRAMEWORK_LOG_COMPILE                                                                                          \
    "+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:]",                                           \
        "+[_ANEInMemoryModel inMemoryModelWithDescriptor:]", "-[_ANEInMemoryModel hexStringIdentifier]",               \
        "NSTemporaryDirectory", "-[_ANEInMemoryModel compileWithQoS:options:error:]",                                  \
        "-[_ANEInMemoryModel loadWithQoS:options:error:]"
#define FRAMEWORK_LOG_REQUEST                                                                                          \
    "+[_ANEIOSurfaceObject objectWithIOSurface:]", "+[_ANEIOSurfaceObject objectWithIOSurface:]",                      \
        "+[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:perfStats:procedureIndex:]"
#define LOG_EVALUATE "-[_ANEInMemoryModel evaluateWithQoS:options:request:error:]"
#define LOG_UNLOAD "-[_ANEInMemoryModel unloadWithQoS:error:]"

/* ------------------------------------------------------------------ helpers: the fake */

/* The recorded calls equal want[0..n) exactly (then the log is cleared). */
static void expect_log_at(const char *file, int line, const char *const *want, int n) {
    int got = fake_ane_log_count(), bad = got != n;
    for (int i = 0; i < n && i < got && !bad; i++)
        bad = strcmp(fake_ane_log(i), want[i]) != 0;
    if (bad) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: call sequence differs\n", file, line);
        for (int i = 0; i < got || i < n; i++)
            fprintf(stderr, "    %-3d got  %-100s want %s\n", i, i < got ? fake_ane_log(i) : "-",
                    i < n ? want[i] : "-");
    }
    fake_ane_log_clear();
}
#define EXPECT_LOG(...)                                                                                                \
    do {                                                                                                               \
        const char *const want_[] = {__VA_ARGS__};                                                                     \
        expect_log_at(__FILE__, __LINE__, want_, (int)(sizeof want_ / sizeof want_[0]));                               \
    } while (0)

/* How many recorded calls equal s. */
static int log_count(const char *s) {
    int n = 0;
    for (int i = 0; i < fake_ane_log_count(); i++)
        n += strcmp(fake_ane_log(i), s) == 0;
    return n;
}

static void expect_no_violations_at(const char *file, int line) {
    int n = fake_ane_violations();
    if (n) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: the fake framework saw %d violation(s):\n", file, line, n);
        for (int i = 0; i < n && i < 20; i++)
            fprintf(stderr, "    %s\n", fake_ane_violation(i));
    }
    if (fake_ane_pool_depth() != 0) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: %d autorelease pool(s) left open\n", file, line, fake_ane_pool_depth());
    }
}
#define EXPECT_CLEAN() expect_no_violations_at(__FILE__, __LINE__)

static int dir_entries(const char *path) {
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", path);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1) n = -1;
        pclose(p);
    }
    return n;
}

/* End of a test: no violation, nothing alive, no temp dir left; then reset the fake. */
static void finish_at(const char *file, int line) {
    expect_no_violations_at(file, line);
    if (fake_ane_live_objects() != 0) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: %d object(s) still alive: %s\n", file, line, fake_ane_live_objects(),
                fake_ane_live_report());
    }
    int left = dir_entries(fake_ane_tmpdir());
    if (left != 0) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: %d entr(ies) left in the temp directory %s\n", file, line, left,
                fake_ane_tmpdir());
    }
    if (fake_ane_loaded_models() != 0) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: %d model(s) still loaded\n", file, line, fake_ane_loaded_models());
    }
    fake_ane_reset();
}
#define FINISH() finish_at(__FILE__, __LINE__)

static AneDevice *darwin_device(int request_cache) {
    AneDarwinOptions o;
    ane_darwin_default_options(&o);
    o.compile_budget = INT_MAX;
    o.load_retry_us = 1000;
    o.request_cache = request_cache;
    Err err = {{0}};
    AneDevice *d = ane_darwin_create(&o, &err);
    CHECK(d != NULL, "%s", err.msg);
    return d;
}

static AneDevice *emu_device(void) {
    AneEmuOptions o;
    ane_emu_default_options(&o);
    o.compile_budget = INT_MAX;
    Err err = {{0}};
    AneDevice *d = ane_emu_create(&o, &err);
    CHECK(d != NULL, "%s", err.msg);
    return d;
}

/* ------------------------------------------------------------------ helpers: MIL, data */

typedef struct {
    char *s;
    size_t n, cap;
} Str;

static void str_addf(Str *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)need + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + (size_t)need + 1)
            cap *= 2;
        b->s = realloc(b->s, cap);
        if (!b->s) abort();
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)need;
}

#define HDR                                                                                                            \
    "program(1.3)\n[buildInfo = dict<string, string>({{\"coremlc-component-MIL\", \"3510.2.1\"}, "                     \
    "{\"coremlc-version\", \"3505.4.1\"}, {\"coremltools-component-milinternal\", \"\"}, "                             \
    "{\"coremltools-version\", \"9.0\"}})]\n{\n"

static char *mil_prog(const char *inputs, const char *body, const char *out) {
    Str b = {0};
    str_addf(&b, HDR "    func main<ios18>(%s) {\n%s    } -> (%s);\n}\n", inputs, body, out);
    return b.s;
}

/* docs/ane-facts.md §2.4: input [1, IC, 1, S + OC] (act | W[ic][oc]), output [1, OC, 1, S]. */
static char *dyn_linear_mil(int IC, int OC, int S) {
    Str b = {0};
    str_addf(
        &b,
        "        tensor<int32, [4]> ba = const()[name=string(\"ba\"), val=tensor<int32, [4]>([0,0,0,0])];\n"
        "        tensor<int32, [4]> sa = const()[name=string(\"sa\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
        "        tensor<fp16, [1,%d,1,%d]> act = slice_by_size(x=x,begin=ba,size=sa)[name=string(\"act\")];\n"
        "        tensor<int32, [4]> bw = const()[name=string(\"bw\"), val=tensor<int32, [4]>([0,0,0,%d])];\n"
        "        tensor<int32, [4]> sw = const()[name=string(\"sw\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
        "        tensor<fp16, [1,%d,1,%d]> wt = slice_by_size(x=x,begin=bw,size=sw)[name=string(\"wt\")];\n"
        "        tensor<int32, [4]> ra = const()[name=string(\"ra\"), val=tensor<int32, [4]>([1,1,%d,%d])];\n"
        "        tensor<fp16, [1,1,%d,%d]> a2 = reshape(shape=ra,x=act)[name=string(\"a2\")];\n"
        "        tensor<int32, [4]> pm = const()[name=string(\"pm\"), val=tensor<int32, [4]>([0,1,3,2])];\n"
        "        tensor<fp16, [1,1,%d,%d]> a3 = transpose(perm=pm,x=a2)[name=string(\"a3\")];\n"
        "        tensor<int32, [4]> rw = const()[name=string(\"rw\"), val=tensor<int32, [4]>([1,1,%d,%d])];\n"
        "        tensor<fp16, [1,1,%d,%d]> W = reshape(shape=rw,x=wt)[name=string(\"W\")];\n"
        "        bool bF = const()[name=string(\"bF\"), val=bool(false)];\n"
        "        tensor<fp16, [1,1,%d,%d]> yh = matmul(transpose_x=bF,transpose_y=bF,x=a3,y=W)[name=string(\"yh\")];\n"
        "        tensor<fp16, [1,1,%d,%d]> yt = transpose(perm=pm,x=yh)[name=string(\"yt\")];\n"
        "        tensor<int32, [4]> ro = const()[name=string(\"ro\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
        "        tensor<fp16, [1,%d,1,%d]> y = reshape(shape=ro,x=yt)[name=string(\"y\")];\n",
        IC, S, IC, S, S, IC, OC, IC, OC, IC, S, IC, S, S, IC, IC, OC, IC, OC, S, OC, OC, S, OC, S, OC, S);
    Str in = {0};
    str_addf(&in, "tensor<fp16, [1, %d, 1, %d]> x", IC, S + OC);
    char *mil = mil_prog(in.s, b.s, "y");
    free(b.s);
    free(in.s);
    return mil;
}

/* Causal attention over q|k|v packed on channels: input [1, 3D, 1, S], output [1, D, 1, S],
** with the mask as a weight blob at `mask_path`. */
static char *attention_mil(int H, int HD, int S, const char *mask_path) {
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
             "        tensor<fp16, [1,%d,%d,%d]> sc1 = "
             "matmul(transpose_x=bF,transpose_y=bT,x=q,y=k)[name=string(\"mm1\")];\n"
             "        fp16 scv = const()[name=string(\"scv\"), val=fp16(%f)];\n"
             "        tensor<fp16, [1,%d,%d,%d]> sc2 = mul(x=sc1,y=scv)[name=string(\"scl\")];\n"
             "        tensor<fp16, [1,1,%d,%d]> cm = const()[name=string(\"cm\"), val=tensor<fp16, "
             "[1,1,%d,%d]>(BLOBFILE(path=string(\"%s\"), offset=uint64(64)))];\n"
             "        tensor<fp16, [1,%d,%d,%d]> ms = add(x=sc2,y=cm)[name=string(\"msk\")];\n"
             "        int32 sax = const()[name=string(\"sax\"), val=int32(-1)];\n"
             "        tensor<fp16, [1,%d,%d,%d]> aw = softmax(axis=sax,x=ms)[name=string(\"sm\")];\n"
             "        tensor<fp16, [1,%d,%d,%d]> a4 = "
             "matmul(transpose_x=bF,transpose_y=bF,x=aw,y=v)[name=string(\"mm2\")];\n"
             "        tensor<fp16, [1,%d,%d,%d]> at = transpose(perm=pm,x=a4)[name=string(\"ta\")];\n"
             "        tensor<int32, [4]> os = const()[name=string(\"os\"), val=tensor<int32, [4]>([1,%d,1,%d])];\n"
             "        tensor<fp16, [1,%d,1,%d]> af = reshape(shape=os,x=at)[name=string(\"ra\")];\n",
             D, 2 * D, D, S, D, S, D, S, D, S, H, HD, S, H, HD, S, H, S, HD, H, HD, S, H, S, HD, H, HD, S, H, S, HD, H,
             S, S, 1.0 / sqrt((double)HD), H, S, S, S, S, S, S, mask_path, H, S, S, H, S, S, H, S, HD, H, HD, S, D, S,
             D, S);
    Str in = {0};
    str_addf(&in, "tensor<fp16, [1, %d, 1, %d]> x", 3 * D, S);
    char *mil = mil_prog(in.s, b.s, "af");
    free(b.s);
    free(in.s);
    return mil;
}

/* A canonical fp16 MILBlob file (docs/ane-facts.md §3). */
static unsigned char *blob_fp16(const float *v, size_t n, size_t *size) {
    *size = 128 + 2 * n;
    unsigned char *b = calloc(1, *size);
    b[0] = 1;
    b[4] = 2;
    b[64] = 0xEF, b[65] = 0xBE, b[66] = 0xAD, b[67] = 0xDE;
    b[68] = 1;
    for (int i = 0; i < 8; i++)
        b[72 + i] = (unsigned char)((uint64_t)(2 * n) >> (8 * i));
    b[80] = 128;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = fp16_from_float(v[i]);
        memcpy(b + 128 + 2 * i, &h, 2);
    }
    return b;
}

static unsigned char *mask_blob(int S, size_t *size) {
    float *m = malloc(sizeof(float) * S * S);
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++)
            m[i * S + j] = j <= i ? 0.0f : -65504.0f;
    unsigned char *b = blob_fp16(m, (size_t)S * S, size);
    free(m);
    return b;
}

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static double uniform(double lo, double hi) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return lo + (hi - lo) * (double)(x >> 11) * 0x1p-53;
}

static void fill_half(uint16_t *h, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++)
        h[i] = fp16_from_float((float)uniform(lo, hi));
}

/* Compiles mil on d, runs it on the fp16 input, returns the fp16 output (malloc'd) or NULL. */
static uint16_t *run_once(AneDevice *d, const char *mil, const AneBlob *blobs, int nb, const uint16_t *in,
                          size_t *out_n, Err *err) {
    AneProgram *p = d->compile(d, mil, blobs, nb, err);
    if (!p) return NULL;
    AneShape si, so;
    d->program_io(p, &si, &so);
    size_t n_in = (size_t)si.channels * si.spatial, n_out = (size_t)so.channels * so.spatial;
    AneSurface *sin = d->surface_create(d, n_in * 2, err);
    AneSurface *sout = sin ? d->surface_create(d, n_out * 2, err) : NULL;
    uint16_t *out = NULL;
    if (sout) {
        uint16_t *h = d->surface_lock(d, sin, 0);
        memcpy(h, in, n_in * 2);
        d->surface_unlock(d, sin, 0);
        if (d->evaluate(d, p, sin, sout, err) == 0) {
            out = malloc(n_out * 2);
            const uint16_t *o = d->surface_lock(d, sout, 1);
            memcpy(out, o, n_out * 2);
            d->surface_unlock(d, sout, 1);
            *out_n = n_out;
        }
    }
    d->surface_free(d, sin);
    d->surface_free(d, sout);
    d->release(d, p);
    return out;
}

/* mil on the darwin device and on a plain emulator device: identical bits. */
static void expect_same_bits_at(const char *file, int line, const char *mil, const AneBlob *blobs, int nb,
                                const uint16_t *in) {
    AneDevice *dw = darwin_device(64), *em = emu_device();
    Err e1 = {{0}}, e2 = {{0}};
    size_t n1 = 0, n2 = 0;
    uint16_t *a = dw ? run_once(dw, mil, blobs, nb, in, &n1, &e1) : NULL;
    uint16_t *b = em ? run_once(em, mil, blobs, nb, in, &n2, &e2) : NULL;
    if (!a || !b) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: darwin: %s / emu: %s\n", file, line, a ? "ok" : e1.msg, b ? "ok" : e2.msg);
    } else if (n1 != n2 || memcmp(a, b, n1 * 2) != 0) {
        size_t first = 0;
        while (first < n1 && first < n2 && a[first] == b[first])
            first++;
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: outputs differ (%zu vs %zu elements; first difference at %zu)\n", file, line, n1,
                n2, first);
    }
    free(a);
    free(b);
    if (dw) dw->destroy(dw);
    if (em) em->destroy(em);
}
#define EXPECT_SAME_BITS(mil, blobs, nb, in) expect_same_bits_at(__FILE__, __LINE__, mil, blobs, nb, in)

/* ================================================================== creation, sequence */

static void test_create_and_destroy(void) {
    CHECK(ane_darwin_available() == 1, "the fake build has the bridge");
    AneDarwinOptions o;
    ane_darwin_default_options(&o);
    CHECK(o.compile_budget == 119 && o.qos == 21 && o.load_retry_us == 100000 && o.request_cache == 64 &&
              strcmp(o.framework_path, ANE_DARWIN_FRAMEWORK_PATH) == 0,
          "defaults");
    Err err = {{0}};
    AneDevice *d = ane_darwin_create(NULL, &err);
    CHECK(d && strcmp(d->name, "darwin") == 0 && d->compile_budget == 119, "%s", err.msg);
    EXPECT_LOG("dlopen");
    AneDarwinStats st;
    CHECK(d && ane_darwin_stats(d, &st) == 0 && st.live_programs == 0 && st.live_temp_dirs == 0, "stats");
    AneDevice *em = emu_device();
    CHECK(ane_darwin_stats(em, &st) == -1, "stats of another device");
    em->destroy(em);
    /* Bad options are refused before anything is loaded. */
    o.qos = 64;
    CHECK(!ane_darwin_create(&o, &err) && strstr(err.msg, "qos must be in 0..63, found 64"), "%s", err.msg);
    ane_darwin_default_options(&o);
    o.compile_budget = 0;
    CHECK(!ane_darwin_create(&o, &err) && strstr(err.msg, "compile_budget must be >= 1"), "%s", err.msg);
    ane_darwin_default_options(&o);
    o.request_cache = -1;
    CHECK(!ane_darwin_create(&o, &err) && strstr(err.msg, "request_cache"), "%s", err.msg);
    if (d) d->destroy(d);
    FINISH();
}

static void test_call_sequence(void) {
    AneDevice *d = darwin_device(64);
    if (!d) {
        FINISH();
        return;
    }
    fake_ane_log_clear();
    int IC = 32, OC = 64, S = 32;
    char *mil = dyn_linear_mil(IC, OC, S);
    Err err = {{0}};
    AneProgram *p = d->compile(d, mil, NULL, 0, &err);
    CHECK(p, "%s", err.msg);
    EXPECT_LOG(FRAMEWORK_LOG_COMPILE);
    if (!p) {
        d->destroy(d);
        free(mil);
        FINISH();
        return;
    }
    CHECK(fake_ane_last_qos() == 21, "QoS %u", fake_ane_last_qos());
    CHECK(fake_ane_loaded_models() == 1, "loaded");
    CHECK(dir_entries(fake_ane_tmpdir()) == 1, "one temp dir");
    AneShape si, so;
    d->program_io(p, &si, &so);
    CHECK(si.channels == IC && si.spatial == S + OC && so.channels == OC && so.spatial == S, "io %d %d %d %d",
          si.channels, si.spatial, so.channels, so.spatial);
    AneSurface *in = d->surface_create(d, (size_t)IC * (S + OC) * 2, &err),
               *out = d->surface_create(d, (size_t)OC * S * 2, &err);
    CHECK(in && out && d->surface_bytes(in) == (size_t)IC * (S + OC) * 2, "%s", err.msg);
    EXPECT_LOG("IOSurfaceCreate", "IOSurfaceCreate");
    CHECK(d->evaluate(d, p, in, out, &err) == 0, "%s", err.msg);
    EXPECT_LOG(FRAMEWORK_LOG_REQUEST, LOG_EVALUATE);
    CHECK(d->evaluate(d, p, in, out, &err) == 0, "%s", err.msg);
    EXPECT_LOG(LOG_EVALUATE); /* the request is reused */
    AneDarwinStats st;
    ane_darwin_stats(d, &st);
    CHECK(st.request_misses == 1 && st.request_hits == 1 && st.live_programs == 1 && st.live_temp_dirs == 1,
          "stats %llu %llu", (unsigned long long)st.request_misses, (unsigned long long)st.request_hits);
    CHECK(d->counters.compiles == 1 && d->counters.evaluations == 2 &&
              d->counters.bytes_in == 2ull * IC * (S + OC) * 2 && d->counters.bytes_out == 2ull * OC * S * 2 &&
              d->counters.compile_seconds > 0 && d->counters.eval_seconds > 0,
          "counters");
    /* Releasing the program drops its cached request; only the two IOSurfaces and the device's
    ** empty options dictionary stay alive. */
    fake_ane_log_clear();
    d->release(d, p);
    EXPECT_LOG(LOG_UNLOAD);
    CHECK(fake_ane_loaded_models() == 0, "unloaded");
    CHECK(fake_ane_live_objects() == 3, "alive after release: %s", fake_ane_live_report());
    CHECK(dir_entries(fake_ane_tmpdir()) == 0, "the temp dir (with the compiler's net.plist) is gone");
    d->surface_free(d, in);
    d->surface_free(d, out);
    CHECK(fake_ane_live_objects() == 1, "alive after freeing the surfaces: %s", fake_ane_live_report());
    d->destroy(d);
    free(mil);
    FINISH();
}

/* ================================================================== real kernels, bit for bit */

static void test_matmul_matches_emulator(void) {
    const int shapes[][3] = {{64, 96, 64}, {128, 32, 96}, {256, 256, 128}};
    for (int k = 0; k < 3; k++) {
        int IC = shapes[k][0], OC = shapes[k][1], S = shapes[k][2], SP = S + OC;
        char *mil = dyn_linear_mil(IC, OC, S);
        uint16_t *in = malloc((size_t)IC * SP * 2);
        fill_half(in, (size_t)IC * SP, -1, 1);
        EXPECT_SAME_BITS(mil, NULL, 0, in);
        /* And the darwin result is the matmul: against sgemm on the same fp16 values. */
        AneDevice *d = darwin_device(64);
        Err err = {{0}};
        size_t n = 0;
        uint16_t *out = d ? run_once(d, mil, NULL, 0, in, &n, &err) : NULL;
        CHECK(out && n == (size_t)OC * S, "%s", err.msg);
        if (out) {
            float *act = malloc(sizeof(float) * IC * S), *W = malloc(sizeof(float) * IC * OC),
                  *Y = malloc(sizeof(float) * OC * S);
            for (int ic = 0; ic < IC; ic++) {
                for (int s = 0; s < S; s++)
                    act[ic * S + s] = fp16_to_float(in[ic * SP + s]);
                for (int oc = 0; oc < OC; oc++)
                    W[ic * OC + oc] = fp16_to_float(in[ic * SP + S + oc]);
            }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, S, IC, 1.0f, W, OC, act, S, 0.0f, Y, S);
            double worst = 0;
            for (int i = 0; i < OC * S; i++) {
                double e = fabs(fp16_to_float(out[i]) - Y[i]) / (1e-3 + fabs(Y[i]));
                worst = e > worst ? e : worst;
            }
            CHECK(worst < 2e-3, "relative error %g", worst);
            free(act);
            free(W);
            free(Y);
        }
        free(out);
        if (d) d->destroy(d);
        free(in);
        free(mil);
    }
    FINISH();
}

static void test_attention_with_blob_matches_emulator(void) {
    int H = 2, HD = 32, S = 64, D = H * HD;
    char *mil = attention_mil(H, HD, S, "@model_path/weights/mask.bin");
    size_t bsize;
    unsigned char *blob = mask_blob(S, &bsize);
    AneBlob b = {"@model_path/weights/mask.bin", blob, bsize};
    uint16_t *in = malloc((size_t)3 * D * S * 2);
    fill_half(in, (size_t)3 * D * S, -1, 1);
    EXPECT_SAME_BITS(mil, &b, 1, in);
    /* Query 0 sees only key 0: its output is v[:, 0]. */
    AneDevice *d = darwin_device(64);
    Err err = {{0}};
    size_t n = 0;
    uint16_t *out = d ? run_once(d, mil, &b, 1, in, &n, &err) : NULL;
    CHECK(out && n == (size_t)D * S, "%s", err.msg);
    if (out) CHECK(fabsf(fp16_to_float(out[0]) - fp16_to_float(in[2 * D * S])) < 2e-3, "causal");
    free(out);
    if (d) d->destroy(d);
    /* A blob in a subdirectory of its own, and two blobs: the weights dictionary and files. */
    char *mil2 = attention_mil(H, HD, S, "@model_path/weights/attn/mask.bin");
    AneBlob b2[2] = {{"@model_path/weights/attn/mask.bin", blob, bsize},
                     {"@model_path/weights/unused.bin", blob, bsize}};
    EXPECT_SAME_BITS(mil2, b2, 2, in);
    free(mil2);
    free(in);
    free(blob);
    free(mil);
    FINISH();
}

/* A linear regression trained by SGD, the forward pass of every step through the device:
** weights restaged into the same input surface each step (the dynamic-weight technique),
** gradients and updates on the CPU. Darwin and emulator runs agree bit for bit at every step. */
static void train_linear(AneDevice *d, int steps, double *losses) {
    int IC = 64, OC = 32, S = 64, SP = S + OC;
    char *mil = dyn_linear_mil(IC, OC, S);
    Err err = {{0}};
    AneProgram *p = d->compile(d, mil, NULL, 0, &err);
    AneSurface *in = d->surface_create(d, (size_t)IC * SP * 2, &err),
               *out = d->surface_create(d, (size_t)OC * S * 2, &err);
    CHECK(p && in && out, "%s", err.msg);
    float *X = malloc(sizeof(float) * IC * S), *W = calloc((size_t)IC * OC, sizeof(float)),
          *Wt = malloc(sizeof(float) * IC * OC), *T = malloc(sizeof(float) * OC * S),
          *Y = malloc(sizeof(float) * OC * S), *G = malloc(sizeof(float) * OC * S),
          *dW = malloc(sizeof(float) * IC * OC);
    uint64_t saved = rng_state;
    rng_state = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < IC * S; i++)
        X[i] = fp16_round((float)uniform(-1, 1), 0);
    for (int i = 0; i < IC * OC; i++)
        Wt[i] = (float)uniform(-0.2, 0.2);
    rng_state = saved;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, S, IC, 1.0f, Wt, OC, X, S, 0.0f, T, S);
    for (int step = 0; p && in && out && step < steps; step++) {
        uint16_t *h = d->surface_lock(d, in, 0);
        for (int ic = 0; ic < IC; ic++) {
            if (step == 0) fp16_from_float_array(h + ic * SP, X + ic * S, (size_t)S);
            fp16_from_float_array(h + ic * SP + S, W + ic * OC, (size_t)OC); /* restage the weights only */
        }
        d->surface_unlock(d, in, 0);
        if (d->evaluate(d, p, in, out, &err) != 0) {
            CHECK(0, "step %d: %s", step, err.msg);
            break;
        }
        const uint16_t *o = d->surface_lock(d, out, 1);
        fp16_to_float_array(Y, o, (size_t)OC * S, 0);
        d->surface_unlock(d, out, 1);
        double loss = 0;
        for (int i = 0; i < OC * S; i++) {
            G[i] = Y[i] - T[i];
            loss += (double)G[i] * G[i];
        }
        losses[step] = loss / (OC * S);
        /* dW[ic][oc] = sum_s X[ic][s] G[oc][s] * 2/(OC S) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, IC, OC, S, 2.0f / (OC * S), X, S, G, S, 0.0f, dW, OC);
        for (int i = 0; i < IC * OC; i++)
            W[i] -= 20.0f * dW[i];
    }
    free(X), free(W), free(Wt), free(T), free(Y), free(G), free(dW);
    d->surface_free(d, in);
    d->surface_free(d, out);
    if (p) d->release(d, p);
    free(mil);
}

static void test_training_loop_matches_emulator(void) {
    enum { STEPS = 60 };
    double ld[STEPS] = {0}, le[STEPS] = {0};
    AneDevice *dw = darwin_device(64), *em = emu_device();
    if (dw && em) {
        train_linear(dw, STEPS, ld);
        train_linear(em, STEPS, le);
        CHECK(memcmp(ld, le, sizeof ld) == 0, "darwin and emulator losses differ");
        CHECK(ld[STEPS - 1] < 0.02 * ld[0], "loss %g -> %g", ld[0], ld[STEPS - 1]);
        AneDarwinStats st;
        ane_darwin_stats(dw, &st);
        CHECK(st.request_misses == 1 && st.request_hits == STEPS - 1, "one request for the whole run: %llu misses",
              (unsigned long long)st.request_misses);
        CHECK(log_count(LOG_EVALUATE) == STEPS, "%d evaluations", log_count(LOG_EVALUATE));
    }
    if (dw) dw->destroy(dw);
    if (em) em->destroy(em);
    FINISH();
}

/* The ANE backend's training steps (src/backend/ane/ane.c) with device "auto" — the darwin
** device in this build — and with the emulator: the same losses, gradients and updated
** weights, bit for bit, over a few SGD steps of a tiny Llama and a tiny Qwen3. */
static void backend_steps(const char *preset, const char *device, int steps, double *losses, float **params_out) {
    ModelConfig cfg;
    Err err = {{0}};
    CHECK(config_from_preset(&cfg, preset, &err) == 0, "%s", err.msg);
    ParamLayout lay;
    params_layout(&lay, &cfg);
    float *p = calloc(lay.n_floats, sizeof *p), *g = calloc(lay.n_floats, sizeof *g);
    Rng rng;
    rng_seed(&rng, 1234);
    params_init(&lay, p, &rng);
    int B = 2, T = 64;
    int32_t in[2 * 64], tg[2 * 64];
    for (int i = 0; i < B * T; i++)
        in[i] = (int32_t)rng_below(&rng, (uint64_t)cfg.vocab_size);
    for (int i = 0; i < B * T; i++)
        tg[i] = (int32_t)rng_below(&rng, (uint64_t)cfg.vocab_size);
    AneBackendOptions o;
    backend_ane_default_options(&o);
    o.device = device;
    o.compile_budget = INT_MAX;
    /* overlap_dw stays at its default: on the darwin device the dW jobs run on the pool's lane while the
    ** device evaluates, as on a Mac; the emulator runs it inline. The results must agree anyway. */
    Backend *be = backend_ane_create(&lay, B, T, &o, &err);
    CHECK(be != NULL, "%s on %s: %s", preset, device, err.msg);
    for (int s = 0; be && s < steps; s++) {
        memset(g, 0, lay.n_floats * sizeof *g);
        CHECK(backend_step(be, p, g, in, tg, B, T, 256.0f, &losses[s], NULL, &err) == 0, "%s", err.msg);
        for (size_t i = 0; i < lay.n_floats; i++)
            p[i] -= 0.5f / 256.0f * g[i];
    }
    if (be) be->destroy(be);
    free(g);
    *params_out = p;
}

static void test_training_steps_through_backend(void) {
    const char *presets[] = {"tiny", "tiny-qwen3"};
    for (int k = 0; k < 2; k++) {
        enum { STEPS = 4 };
        double ld[STEPS] = {0}, le[STEPS] = {0};
        float *pd = NULL, *pe = NULL;
        fake_ane_log_clear();
        backend_steps(presets[k], "auto", STEPS, ld, &pd);
        int evals = log_count(LOG_EVALUATE), compiles = log_count("-[_ANEInMemoryModel compileWithQoS:options:error:]");
        backend_steps(presets[k], "emu", STEPS, le, &pe);
        ModelConfig cfg;
        Err err = {{0}};
        config_from_preset(&cfg, presets[k], &err);
        ParamLayout lay;
        params_layout(&lay, &cfg);
        CHECK(compiles >= 1 && evals >= STEPS * cfg.n_layers, "%s: %d compiles, %d evaluations through the bridge",
              presets[k], compiles, evals);
        CHECK(memcmp(ld, le, sizeof ld) == 0, "%s: losses differ: %.9g vs %.9g", presets[k], ld[STEPS - 1],
              le[STEPS - 1]);
        CHECK(ld[STEPS - 1] < ld[0], "%s: loss %.4f -> %.4f", presets[k], ld[0], ld[STEPS - 1]);
        CHECK(pd && pe && memcmp(pd, pe, lay.n_floats * sizeof *pd) == 0, "%s: weights differ", presets[k]);
        if (getenv("ANETRAIN_VERBOSE"))
            printf("     %s: %d steps through the bridge (%d compiles, %d evaluations), loss %.4f -> %.4f\n",
                   presets[k], STEPS, compiles, evals, ld[0], ld[STEPS - 1]);
        free(pd);
        free(pe);
        FINISH();
    }
}

/* ================================================================== temp directory, cache */

static void test_shared_temp_dir(void) {
    AneDevice *d = darwin_device(64);
    if (!d) {
        FINISH();
        return;
    }
    char *m1 = dyn_linear_mil(32, 32, 32), *m2 = dyn_linear_mil(32, 64, 32);
    Err err = {{0}};
    AneProgram *a = d->compile(d, m1, NULL, 0, &err), *b = d->compile(d, m1, NULL, 0, &err),
               *c = d->compile(d, m2, NULL, 0, &err);
    CHECK(a && b && c, "%s", err.msg);
    AneDarwinStats st;
    ane_darwin_stats(d, &st);
    CHECK(st.live_programs == 3 && st.live_temp_dirs == 2, "identical programs share a directory: %d dirs",
          st.live_temp_dirs);
    CHECK(dir_entries(fake_ane_tmpdir()) == 2, "two dirs on disk");
    d->release(d, a);
    CHECK(dir_entries(fake_ane_tmpdir()) == 2, "still used by the second program");
    d->release(d, b);
    CHECK(dir_entries(fake_ane_tmpdir()) == 1, "deleted with its last user");
    d->release(d, c);
    ane_darwin_stats(d, &st);
    CHECK(st.live_programs == 0 && st.live_temp_dirs == 0, "all gone");
    d->destroy(d);
    free(m1);
    free(m2);
    FINISH();
}

static void stage(AneDevice *d, AneSurface *s, const uint16_t *v, size_t n) {
    uint16_t *h = d->surface_lock(d, s, 0);
    memcpy(h, v, n * 2);
    d->surface_unlock(d, s, 0);
}

static void test_request_cache_and_surface_free(void) {
    int IC = 32, OC = 32, S = 32, SP = S + OC;
    size_t nin = (size_t)IC * SP, nout = (size_t)OC * S;
    char *mil = dyn_linear_mil(IC, OC, S);
    uint16_t *x[4], *want[4];
    AneDevice *em = emu_device();
    for (int i = 0; i < 4; i++) {
        x[i] = malloc(nin * 2);
        fill_half(x[i], nin, -1, 1);
        Err err = {{0}};
        size_t n;
        want[i] = run_once(em, mil, NULL, 0, x[i], &n, &err);
    }
    em->destroy(em);
    for (int cache = 0; cache <= 2; cache += 2) {
        AneDevice *d = darwin_device(cache);
        if (!d) break;
        Err err = {{0}};
        AneProgram *p = d->compile(d, mil, NULL, 0, &err);
        AneSurface *in[3], *out = d->surface_create(d, nout * 2, &err);
        for (int i = 0; i < 3; i++) {
            in[i] = d->surface_create(d, nin * 2, &err);
            stage(d, in[i], x[i], nin);
        }
        /* Three inputs through a cache of two, twice round: evictions, every result right. */
        for (int round = 0; round < 2; round++)
            for (int i = 0; i < 3; i++) {
                CHECK(d->evaluate(d, p, in[i], out, &err) == 0, "%s", err.msg);
                const uint16_t *o = d->surface_lock(d, out, 1);
                CHECK(memcmp(o, want[i], nout * 2) == 0, "cache %d round %d input %d", cache, round, i);
                d->surface_unlock(d, out, 1);
            }
        AneDarwinStats st;
        ane_darwin_stats(d, &st);
        CHECK(st.request_misses == 6 && st.request_hits == 0,
              "round-robin over 3 pairs with %d slots misses every time", cache);
        int live = fake_ane_live_objects();
        /* Freeing a cached surface drops its request (and so frees the IOSurface). */
        d->surface_free(d, in[2]);
        int freed = live - fake_ane_live_objects();
        CHECK(cache ? freed >= 2 : freed == 1, "cache %d: %d objects freed with the surface", cache, freed);
        /* A new surface (perhaps at the same address) gets a new request, not a stale one. */
        in[2] = d->surface_create(d, nin * 2, &err);
        stage(d, in[2], x[3], nin);
        CHECK(d->evaluate(d, p, in[2], out, &err) == 0, "%s", err.msg);
        const uint16_t *o = d->surface_lock(d, out, 1);
        CHECK(memcmp(o, want[3], nout * 2) == 0, "new surface read, not the freed one");
        d->surface_unlock(d, out, 1);
        if (cache) { /* a hit: in[1] is still cached */
            CHECK(d->evaluate(d, p, in[1], out, &err) == 0, "%s", err.msg);
            ane_darwin_stats(d, &st);
            CHECK(st.request_hits == 1, "hit");
        }
        for (int i = 0; i < 3; i++)
            d->surface_free(d, in[i]);
        d->surface_free(d, out);
        d->release(d, p);
        d->destroy(d);
        FINISH();
    }
    for (int i = 0; i < 4; i++)
        free(x[i]), free(want[i]);
    free(mil);
}

static void test_destroy_releases_programs(void) {
    AneDevice *d = darwin_device(64);
    if (!d) {
        FINISH();
        return;
    }
    char *m1 = dyn_linear_mil(32, 32, 32), *m2 = dyn_linear_mil(64, 32, 32);
    Err err = {{0}};
    AneProgram *a = d->compile(d, m1, NULL, 0, &err), *b = d->compile(d, m2, NULL, 0, &err);
    CHECK(a && b && fake_ane_loaded_models() == 2, "%s", err.msg);
    fake_ane_log_clear();
    d->destroy(d);
    EXPECT_LOG(LOG_UNLOAD, LOG_UNLOAD);
    free(m1);
    free(m2);
    FINISH();
}

/* ================================================================== failure paths */

/* Compiles the small matmul and expects failure with every needle in the message. */
static void expect_compile_fails_at(const char *file, int line, AneDevice *d, const char *mil, const AneBlob *blobs,
                                    int nb, const char *n1, const char *n2) {
    Err err = {{0}};
    uint64_t before = d->counters.compile_failures;
    AneProgram *p = d->compile(d, mil, blobs, nb, &err);
    if (p) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: compiled; expected '%s'\n", file, line, n1);
        d->release(d, p);
        return;
    }
    const char *needles[2] = {n1, n2};
    for (int i = 0; i < 2; i++)
        if (needles[i] && !strstr(err.msg, needles[i])) {
            test_checks_failed_in_test++;
            fprintf(stderr, "  FAIL %s:%d: message lacks '%s': %s\n", file, line, needles[i], err.msg);
        }
    if (d->counters.compile_failures != before + 1) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: compile failure not counted\n", file, line);
    }
}
#define EXPECT_COMPILE_FAILS(d, mil, blobs, nb, n1, n2)                                                                \
    expect_compile_fails_at(__FILE__, __LINE__, d, mil, blobs, nb, n1, n2)

static int darwin_limits_default_is_strict(void) {
    AneDarwinOptions o;
    ane_darwin_default_options(&o);
    return o.limits == ANE_LIMITS_STRICT;
}

static void test_fail_framework_class_selector(void) {
    Err err = {{0}};
    fake_ane_faults.framework_missing = 1;
    CHECK(!ane_darwin_create(NULL, &err) && strstr(err.msg, "cannot load the private framework") &&
              strstr(err.msg, ANE_DARWIN_FRAMEWORK_PATH) && strstr(err.msg, "image not found"),
          "%s", err.msg);
    AneDarwinOptions o;
    ane_darwin_default_options(&o);
    o.framework_path = "/nowhere/AppleNeuralEngine";
    CHECK(!ane_darwin_create(&o, &err) && strstr(err.msg, "/nowhere/AppleNeuralEngine: dlopen(/nowhere"), "%s",
          err.msg);
    fake_ane_faults.missing_class = "_ANERequest";
    CHECK(!ane_darwin_create(NULL, &err) && strstr(err.msg, "class _ANERequest not found") &&
              strstr(err.msg, "anetrain doctor"),
          "%s", err.msg);
    fake_ane_faults.missing_class = "_ANEDeviceInfo"; /* optional: only doctor uses it */
    AneDevice *d = ane_darwin_create(NULL, &err);
    CHECK(d, "%s", err.msg);
    if (d) d->destroy(d);
    fake_ane_faults.missing_class = NULL;
    fake_ane_faults.missing_selector = "evaluateWithQoS:options:request:error:";
    CHECK(!ane_darwin_create(NULL, &err) &&
              strstr(err.msg, "_ANEInMemoryModel does not answer -evaluateWithQoS:options:request:error:"),
          "%s", err.msg);
    fake_ane_faults.missing_selector = "objectWithIOSurface:";
    CHECK(!ane_darwin_create(NULL, &err) &&
              strstr(err.msg, "_ANEIOSurfaceObject does not answer +objectWithIOSurface:"),
          "%s", err.msg);
    FINISH();
}

static void test_fail_compile_paths(void) {
    AneDevice *d = darwin_device(64);
    if (!d) {
        FINISH();
        return;
    }
    char *mil = dyn_linear_mil(32, 32, 32);
    uint64_t before = ane_darwin_process_compiles();

    fake_ane_faults.descriptor_nil = 1;
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0,
                         "+[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:] returned nil", NULL);
    fake_ane_faults.model_nil = 1;
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "+[_ANEInMemoryModel inMemoryModelWithDescriptor:] returned nil", NULL);
    fake_ane_faults.compile_fail = 1;
    fake_ane_faults.message = "ANECCompile() FAILED: unsupported op on H13";
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "compileWithQoS:options:error:] returned NO",
                         "ANECCompile() FAILED: unsupported op on H13");
    fake_ane_faults.compile_fail_no_error = 1;
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "returned NO: (no NSError)", NULL);
    CHECK(ane_darwin_process_compiles() == before, "failed compiles give their budget slot back");
    CHECK(dir_entries(fake_ane_tmpdir()) == 0, "no temp dir left after failed compiles");

    /* Load fails once: retried, and the program works. */
    fake_ane_faults.load_fail = 1;
    fake_ane_faults.message = "program load failure (0x50004)";
    fake_ane_log_clear();
    Err err = {{0}};
    AneProgram *p = d->compile(d, mil, NULL, 0, &err);
    CHECK(p, "%s", err.msg);
    CHECK(log_count("-[_ANEInMemoryModel loadWithQoS:options:error:]") == 2, "load retried");
    AneDarwinStats st;
    ane_darwin_stats(d, &st);
    CHECK(st.load_retries == 1, "retry counted");
    if (p) d->release(d, p);
    /* Load fails twice: the error carries both messages; the compile's slot is spent. */
    before = ane_darwin_process_compiles();
    fake_ane_faults.load_fail = 2;
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "loadWithQoS:options:error:] returned NO twice",
                         "program load failure (0x50004)");
    CHECK(ane_darwin_process_compiles() == before + 1, "a compile that succeeded keeps its slot");
    CHECK(dir_entries(fake_ane_tmpdir()) == 0, "temp dir removed after a failed load");
    fake_ane_faults.message = NULL;

    /* Emulator rejections come from the preflight, before the framework is called. */
    fake_ane_log_clear();
    EXPECT_COMPILE_FAILS(d, "program(1.3)\n{ garbage", NULL, 0, "MIL 2:3:", NULL);
    char *two_in = mil_prog("tensor<fp16, [1, 4, 1, 32]> x, tensor<fp16, [1, 4, 1, 32]> y",
                            "        tensor<fp16, [1,4,1,32]> z = add(x=x,y=y)[name=string(\"z\")];\n", "z");
    EXPECT_COMPILE_FAILS(d, two_in, NULL, 0, "exactly one input", "0x1d");
    CHECK(fake_ane_log_count() == 0, "the framework was not called");
    free(two_in);

    /* The compiler's own error, through the NSError: the emulator standing in for it. */
    fake_ane_faults.hex_override = "../escape";
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "hexStringIdentifier] returned '../escape', not a directory name", NULL);
    fake_ane_faults.hex_override = "..";
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "returned '..', not a directory name", NULL);
    fake_ane_faults.hex_override = NULL;

    /* Blob paths must stay inside the model directory. */
    int S = 32;
    size_t bsize;
    unsigned char *blob = mask_blob(S, &bsize);
    const char *bad[] = {"@model_path/../mask.bin", "/etc/mask.bin", "@model_path/weights//mask.bin",
                         "@model_path/weights/./mask.bin"};
    for (int i = 0; i < 4; i++) {
        char *m = attention_mil(1, 32, S, bad[i]);
        AneBlob b = {bad[i], blob, bsize};
        EXPECT_COMPILE_FAILS(d, m, &b, 1, "expected \"@model_path/\" followed by a relative path", bad[i]);
        free(m);
    }
    free(blob);

    /* The budget. */
    AneDarwinOptions o;
    ane_darwin_default_options(&o);
    o.compile_budget = (int)ane_darwin_process_compiles() + 1;
    AneDevice *small = ane_darwin_create(&o, &err);
    AneProgram *q = small ? small->compile(small, mil, NULL, 0, &err) : NULL;
    CHECK(q, "%s", err.msg);
    if (small) EXPECT_COMPILE_FAILS(small, mil, NULL, 0, "ANE compile budget exhausted", "restart the process");
    if (q) small->release(small, q);
    if (small) small->destroy(small);

    d->destroy(d);
    free(mil);
    FINISH();
}

/* The bridge checks every program with the emulator's checker under its limits before the
** framework sees it: under strict (the default) a program breaking a convention is refused with
** the rule's name and no framework call; under probed it compiles. */
static void test_limits_precheck(void) {
    char *mil = mil_prog("tensor<fp16, [1, 4, 1, 32]> x",
                         "        fp16 c = const()[name = string(\"c\"), val = fp16(1e-3)];\n"
                         "        tensor<fp16, [1, 4, 1, 32]> y = mul(x = x, y = c)[name = string(\"y\")];\n",
                         "y");
    AneDevice *d = darwin_device(64);
    AneDarwinOptions o;
    ane_darwin_default_options(&o);
    o.compile_budget = INT_MAX;
    o.limits = ANE_LIMITS_PROBED;
    Err err = {{0}};
    AneDevice *dp = ane_darwin_create(&o, &err);
    CHECK(dp != NULL, "%s", err.msg);
    if (!d || !dp) {
        if (d) d->destroy(d);
        if (dp) dp->destroy(dp);
        free(mil);
        FINISH();
        return;
    }
    CHECK(o.limits == ANE_LIMITS_PROBED && darwin_limits_default_is_strict(), "strict is the default");
    fake_ane_log_clear();
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "rule fp16-literal-exponent", "const 'c' fp16");
    CHECK(log_count("-[_ANEInMemoryModel compileWithQoS:options:error:]") == 0, "refused before the framework compiles");
    AneProgram *p = dp->compile(dp, mil, NULL, 0, &err);
    CHECK(p != NULL, "probed: %s", err.msg);
    if (p) dp->release(dp, p);
    o.limits = (AneLimits)5;
    CHECK(ane_darwin_create(&o, &err) == NULL && strstr(err.msg, "limits must be"), "%s", err.msg);
    d->destroy(d);
    dp->destroy(dp);
    free(mil);
    FINISH();
}

static void test_fail_evaluate_paths(void) {
    AneDevice *d = darwin_device(64);
    if (!d) {
        FINISH();
        return;
    }
    int IC = 32, OC = 32, S = 32;
    char *mil = dyn_linear_mil(IC, OC, S);
    Err err = {{0}};
    AneProgram *p = d->compile(d, mil, NULL, 0, &err);
    AneSurface *in = d->surface_create(d, (size_t)IC * (S + OC) * 2, &err),
               *out = d->surface_create(d, (size_t)OC * S * 2, &err), *small = d->surface_create(d, 64, &err);
    CHECK(p && in && out && small, "%s", err.msg);
    if (!p || !in || !out || !small) {
        FINISH();
        return;
    }

    fake_ane_faults.surface_object_nil = 1;
    CHECK(d->evaluate(d, p, in, out, &err) == -1 && strstr(err.msg, "objectWithIOSurface:] returned nil for the input"),
          "%s", err.msg);
    fake_ane_faults.request_nil = 1;
    CHECK(d->evaluate(d, p, in, out, &err) == -1 && strstr(err.msg, "+[_ANERequest requestWithInputs:") &&
              strstr(err.msg, "returned nil"),
          "%s", err.msg);
    fake_ane_faults.eval_fail = 1;
    fake_ane_faults.message = "program execution failure (0x1d)";
    CHECK(d->evaluate(d, p, in, out, &err) == -1 &&
              strstr(err.msg, "evaluateWithQoS:options:request:error:] returned NO: program execution failure (0x1d)"),
          "%s", err.msg);
    CHECK(d->evaluate(d, p, in, out, &err) == 0, "recovers: %s", err.msg);
    CHECK(d->counters.evaluations == 1, "only successes counted");
    /* The seam's surface rules, with the emulator's messages. */
    d->surface_lock(d, in, 0);
    CHECK(d->evaluate(d, p, in, out, &err) == -1 && strstr(err.msg, "input surface is still locked"), "%s", err.msg);
    d->surface_unlock(d, in, 0);
    CHECK(d->evaluate(d, p, in, small, &err) == -1 && strstr(err.msg, "output surface has 64 bytes") &&
              strstr(err.msg, "exactly 2048"),
          "%s", err.msg);
    d->surface_unlock(d, out, 1); /* unbalanced: never reaches IOSurfaceUnlock */
    CHECK(d->evaluate(d, p, in, out, &err) == -1 && strstr(err.msg, "unlocked 1 more time"), "%s", err.msg);
    CHECK(d->evaluate(d, NULL, in, out, &err) == -1 && strstr(err.msg, "NULL program"), "%s", err.msg);

    /* Surfaces. */
    fake_ane_faults.surface_create_fail = 1;
    CHECK(!d->surface_create(d, 4096, &err) && strstr(err.msg, "IOSurfaceCreate returned NULL for a 4096-byte surface"),
          "%s", err.msg);
    CHECK(!d->surface_create(d, 0, &err) && strstr(err.msg, "not a valid surface size"), "%s", err.msg);
    fake_ane_faults.surface_lock_fail = 1;
    CHECK(d->surface_lock(d, in, 0) == NULL, "a failed lock returns NULL");
    fake_ane_faults.surface_lock_fail = 1;
    CHECK(!d->surface_create(d, 4096, &err) && strstr(err.msg, "IOSurfaceLock failed"), "%s", err.msg);

    /* Unload fails: release still frees everything and records the message. */
    fake_ane_faults.unload_fail = 1;
    fake_ane_faults.message = "unload refused";
    d->surface_free(d, in);
    d->surface_free(d, out);
    d->surface_free(d, small);
    d->release(d, p);
    AneDarwinStats st;
    ane_darwin_stats(d, &st);
    CHECK(st.unload_failures == 1 && strstr(st.last_unload_error, "unloadWithQoS:error:] returned NO: unload refused"),
          "%s", st.last_unload_error);
    d->destroy(d);
    free(mil);
    FINISH();
}

static void test_fail_temp_dir(void) {
    AneDevice *d = darwin_device(64);
    if (!d) {
        FINISH();
        return;
    }
    char *mil = dyn_linear_mil(32, 32, 32);
    EXPECT_COMPILE_FAILS(d, NULL, NULL, 0, "no MIL text or a bad blob list", NULL);
    EXPECT_COMPILE_FAILS(d, mil, NULL, -1, "no MIL text or a bad blob list (-1 blobs)", NULL);
    fake_ane_faults.tmpdir_override = "";
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "NSTemporaryDirectory() returned no path", NULL);
    fake_ane_faults.tmpdir_override = "/proc/anetrain-nowhere/";
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "cannot create the directory /proc/anetrain-nowhere/", NULL);
    fake_ane_faults.tmpdir_override = NULL;
    fake_ane_faults.hex_override = "ab/cd";
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "returned 'ab/cd', not a directory name", NULL);
    /* A file that cannot be written: model.mil is a directory. The half-made dir is removed. */
    fake_ane_faults.hex_override = "FIXEDHEX";
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%sFIXEDHEX", fake_ane_tmpdir());
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%sFIXEDHEX/model.mil", fake_ane_tmpdir());
    mkdir(path, 0755);
    EXPECT_COMPILE_FAILS(d, mil, NULL, 0, "/FIXEDHEX/model.mil: Is a directory", "cannot write");
    CHECK(dir_entries(fake_ane_tmpdir()) == 0, "removed");
    /* A stale directory of the same name from an earlier process is reused and then removed. */
    snprintf(path, sizeof path, "%sFIXEDHEX/weights", fake_ane_tmpdir());
    CHECK(mkdir(path, 0755) != 0, "parent missing");
    snprintf(path, sizeof path, "%sFIXEDHEX", fake_ane_tmpdir());
    mkdir(path, 0755);
    Err err = {{0}};
    AneProgram *p = d->compile(d, mil, NULL, 0, &err);
    CHECK(p, "%s", err.msg);
    if (p) d->release(d, p);
    d->destroy(d);
    free(mil);
    FINISH();
}

/* The whole life of a device with a weight-bearing kernel. 0 when it all worked (and the
** result is right); -1 with err set otherwise, everything made having been released. */
static uint16_t *lifecycle_in, *lifecycle_want;
static int lifecycle(const char *mil, const AneBlob *blob, size_t n_in, size_t n_out, Err *err) {
    AneDarwinOptions o;
    ane_darwin_default_options(&o);
    o.compile_budget = INT_MAX;
    o.load_retry_us = 0;
    AneDevice *d = ane_darwin_create(&o, err);
    if (!d) return -1;
    AneProgram *p = d->compile(d, mil, blob, 1, err);
    AneSurface *in = p ? d->surface_create(d, n_in * 2, err) : NULL;
    AneSurface *out = in ? d->surface_create(d, n_out * 2, err) : NULL;
    int rc = -1;
    if (out) {
        stage(d, in, lifecycle_in, n_in);
        rc = d->evaluate(d, p, in, out, err);
        if (rc == 0) rc = d->evaluate(d, p, in, out, err);
        if (rc == 0) {
            const uint16_t *h = d->surface_lock(d, out, 1);
            CHECK(memcmp(h, lifecycle_want, n_out * 2) == 0, "a run that succeeded has the right result");
            d->surface_unlock(d, out, 1);
        }
    }
    d->surface_free(d, in);
    d->surface_free(d, out);
    if (p) d->release(d, p);
    d->destroy(d);
    return rc;
}

/* Every allocation of the bridge, then every CoreFoundation call, failing in turn: each failure
** is a clean error, nothing leaks, nothing is left on disk, and the fake sees no misuse. */
static void test_out_of_memory_everywhere(void) {
    int H = 1, HD = 32, S = 32, D = H * HD;
    char *mil = attention_mil(H, HD, S, "@model_path/weights/mask.bin");
    size_t bsize, n_in = (size_t)3 * D * S, n_out = (size_t)D * S, n;
    unsigned char *blob = mask_blob(S, &bsize);
    AneBlob b = {"@model_path/weights/mask.bin", blob, bsize};
    lifecycle_in = malloc(n_in * 2);
    fill_half(lifecycle_in, n_in, -1, 1);
    AneDevice *em = emu_device();
    Err err = {{0}};
    lifecycle_want = run_once(em, mil, &b, 1, lifecycle_in, &n, &err);
    em->destroy(em);
    CHECK(lifecycle_want, "%s", err.msg);
    const char *what[2] = {"allocation", "CoreFoundation call"};
    for (int mode = 0; mode < 2 && lifecycle_want; mode++) {
        int k, failures = 0;
        for (k = 1; k < 5000; k++) {
            memset(&err, 0, sizeof err);
            if (mode == 0) fake_ane_faults.alloc_fail_at = k;
            else fake_ane_faults.cf_fail_at = k;
            int rc = lifecycle(mil, &b, n_in, n_out, &err);
            int fired = fake_ane_faults.fired;
            if (!fired) {
                CHECK(rc == 0, "with no failure injected: %s", err.msg);
                fake_ane_reset();
                break;
            }
            failures += rc != 0;
            CHECK(rc != 0 && err.msg[0], "%s %d failed without an error", what[mode], k);
            int before = test_checks_failed_in_test;
            finish_at(__FILE__, __LINE__);
            if (test_checks_failed_in_test != before)
                fprintf(stderr, "    (%s %d failed: %s)\n", what[mode], k, err.msg);
        }
        CHECK(failures >= 8, "%d %s failures exercised", failures, what[mode]);
        if (getenv("ANETRAIN_VERBOSE")) printf("     %d %ss failed one at a time, each cleanly\n", k - 1, what[mode]);
    }
    free(lifecycle_in);
    free(lifecycle_want);
    free(blob);
    free(mil);
    FINISH();
}

/* ================================================================== probe, doctor */

static void test_probe(void) {
    AneDarwinProbe pr;
    CHECK(ane_darwin_probe(NULL, &pr) == 0 && pr.framework_loaded, "%s", pr.framework_error);
    int found = 0;
    for (int i = 0; i < pr.n_symbols; i++)
        found += pr.symbols[i].found;
    CHECK(pr.n_symbols == 15 && found == 15, "%d of %d symbols", found, pr.n_symbols);
    CHECK(strstr(pr.ane_subtype, "fake") != NULL, "subtype '%s'", pr.ane_subtype);
    fake_ane_faults.missing_selector = "unloadWithQoS:error:";
    CHECK(ane_darwin_probe(NULL, &pr) == -1 && strstr(pr.framework_error, "-unloadWithQoS:error:"), "%s",
          pr.framework_error);
    for (int i = 0; i < pr.n_symbols; i++)
        if (pr.symbols[i].selector && strcmp(pr.symbols[i].selector, "unloadWithQoS:error:") == 0)
            CHECK(!pr.symbols[i].found, "missing row");
    fake_ane_faults.missing_selector = NULL;
    fake_ane_faults.missing_class = "_ANEDeviceInfo";
    CHECK(ane_darwin_probe(NULL, &pr) == 0 && pr.ane_subtype[0] == '\0', "optional class missing");
    fake_ane_faults.missing_class = NULL;
    fake_ane_faults.framework_missing = 1;
    CHECK(ane_darwin_probe(NULL, &pr) == -1 && !pr.framework_loaded && strstr(pr.framework_error, "image not found"),
          "%s", pr.framework_error);
    FINISH();
}

/* Runs `anetrain doctor args...` with stdout and stderr captured; returns its exit code. */
static int run_doctor(char *out, size_t size, int argc, char **argv) {
    char path[] = "/tmp/doctor_out_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    fflush(stdout);
    fflush(stderr);
    int saved = dup(1), saved_err = dup(2);
    dup2(fd, 1);
    dup2(fd, 2);
    int rc = cli_doctor(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved, 1);
    dup2(saved_err, 2);
    close(saved);
    close(saved_err);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

static void test_doctor(void) {
    static char out[65536];
    /* The training kernels of the tiny plan, each in a child process that inherits the fake. */
    char *a1[] = {"doctor", "--device", "darwin", "--json", "--evals", "1"};
    int rc = run_doctor(out, sizeof out, 6, a1);
    CHECK(rc == 0, "exit %d: %s", rc, out);
    cJSON *j = cJSON_Parse(out);
    CHECK(j, "JSON: %s", out);
    if (j) {
        CHECK(strcmp(cJSON_GetObjectItem(j, "device")->valuestring, "darwin") == 0, "device");
        cJSON *f = cJSON_GetObjectItem(j, "framework"), *ks = cJSON_GetObjectItem(j, "kernels"),
              *t = cJSON_GetObjectItem(j, "timing");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(f, "loaded")) && cJSON_IsTrue(cJSON_GetObjectItem(f, "complete")) &&
                  cJSON_GetArraySize(cJSON_GetObjectItem(f, "symbols")) == 15 &&
                  strstr(cJSON_GetObjectItem(f, "ane_subtype")->valuestring, "fake"),
              "framework");
        CHECK(cJSON_GetArraySize(ks) == 2, "%d kernels", cJSON_GetArraySize(ks));
        const char *names[] = {"layer_fwd", "layer_bwd"};
        for (int i = 0; i < cJSON_GetArraySize(ks) && i < 2; i++) {
            cJSON *k = cJSON_GetArrayItem(ks, i);
            CHECK(strcmp(cJSON_GetObjectItem(k, "name")->valuestring, names[i]) == 0 &&
                      strcmp(cJSON_GetObjectItem(k, "plan")->valuestring, "tiny at 64") == 0 &&
                      cJSON_IsTrue(cJSON_GetObjectItem(k, "pass")) &&
                      cJSON_IsNumber(cJSON_GetObjectItem(k, "compile_ms")) &&
                      cJSON_IsNumber(cJSON_GetObjectItem(k, "eval_ms")) &&
                      cJSON_GetObjectItem(k, "max_rel_error")->valuedouble < 5e-3 &&
                      cJSON_GetArraySize(cJSON_GetObjectItem(k, "input")) == 4,
                  "kernel %d", i);
        }
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(t, "ran")) && cJSON_GetObjectItem(t, "tflops")->valuedouble > 0,
              "timing");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "pass")), "pass");
        cJSON_Delete(j);
    }
    EXPECT_CLEAN();
    CHECK(fake_ane_live_objects() == 0, "doctor released everything: %s", fake_ane_live_report());
    fake_ane_reset();

    char *a2[] = {"doctor", "--evals", "0"};
    rc = run_doctor(out, sizeof out, 3, a2);
    CHECK(rc == 0 && strstr(out, "device        darwin") && strstr(out, "found") &&
              strstr(out, "timing        not run (--evals 0)") && strstr(out, "result        PASS") &&
              strstr(out, "ane subtype   fake") && strstr(out, "layer_fwd") && strstr(out, "layer_bwd"),
          "exit %d:\n%s", rc, out);
    fake_ane_reset();

    char *a3[] = {"doctor", "--device", "emu", "--evals", "0"};
    rc = run_doctor(out, sizeof out, 5, a3);
    CHECK(rc == 0 && strstr(out, "device        emu") && strstr(out, "result        PASS"), "exit %d:\n%s", rc, out);
    fake_ane_reset();

    /* A broken framework: a clean report and a failing exit. */
    fake_ane_faults.missing_selector = "compileWithQoS:options:error:";
    char *a4[] = {"doctor", "--device", "darwin", "--evals", "0"};
    rc = run_doctor(out, sizeof out, 5, a4);
    CHECK(rc == 1 && strstr(out, "MISSING") && strstr(out, "device        none") &&
              strstr(out, "does not answer -compileWithQoS:options:error:") && strstr(out, "not run: no device") &&
              strstr(out, "result        FAIL"),
          "exit %d:\n%s", rc, out);
    fake_ane_reset();
    /* Every child inherits the fault: each kernel's line says where it failed. */
    fake_ane_faults.eval_fail = 1;
    rc = run_doctor(out, sizeof out, 5, a4);
    CHECK(rc == 1 && strstr(out, "layer_fwd") && strstr(out, "FAIL: evaluating: ") && strstr(out, "returned NO") &&
              strstr(out, "result        FAIL"),
          "exit %d:\n%s", rc, out);
    CHECK(fake_ane_live_objects() == 0, "%s", fake_ane_live_report());
    fake_ane_reset();
    fake_ane_faults.compile_fail = 1;
    fake_ane_faults.message = "ANECCompile() FAILED";
    rc = run_doctor(out, sizeof out, 5, a4);
    CHECK(rc == 1 && strstr(out, "FAIL: compiling: ") && strstr(out, "ANECCompile() FAILED") &&
              strstr(out, "nearest device limit (docs/ane-facts.md section 9): rule input-width: the input is 1632 wide"),
          "exit %d:\n%s", rc, out);
    fake_ane_reset();

    char *a4j[] = {"doctor", "--device", "darwin", "--json"};
    fake_ane_faults.framework_missing = 2; /* the probe's dlopen and the device's (in the child) */
    rc = run_doctor(out, sizeof out, 4, a4j);
    j = cJSON_Parse(out);
    CHECK(rc == 1 && j && cJSON_IsNull(cJSON_GetObjectItem(j, "device")) &&
              strstr(cJSON_GetObjectItem(j, "device_error")->valuestring, "image not found") &&
              cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "framework"), "loaded")),
          "exit %d: %s", rc, out);
    cJSON_Delete(j);
    fake_ane_reset();

    /* Text with the timing. */
    char *a6[] = {"doctor", "--evals", "2"};
    rc = run_doctor(out, sizeof out, 3, a6);
    CHECK(rc == 0 && strstr(out, "timing        matmul 1024x1024 over S=512 in its own process") &&
              strstr(out, "2 evaluations") && strstr(out, "TFLOP/s"),
          "exit %d:\n%s", rc, out);
    fake_ane_reset();

    /* An exception in the framework aborts the process: here the test hook raises SIGABRT in
    ** layer_bwd's child. One FAIL line names it, the report goes on, the exit is 1. */
    setenv("ANETRAIN_DOCTOR_CRASH", "layer_bwd", 1);
    rc = run_doctor(out, sizeof out, 3, a6);
    unsetenv("ANETRAIN_DOCTOR_CRASH");
    const char *fwd = strstr(out, "layer_fwd"), *bwd = strstr(out, "layer_bwd");
    CHECK(rc == 1 && fwd && bwd && strstr(bwd, "FAIL: its child process died of SIGABRT") &&
              strstr(out, "TFLOP/s") && strstr(out, "result        FAIL"),
          "exit %d:\n%s", rc, out);
    fake_ane_reset();

    char *a7[] = {"doctor", "--help"};
    rc = run_doctor(out, sizeof out, 2, a7);
    CHECK(rc == 0 && strstr(out, "usage: anetrain doctor"), "%s", out);

    char *a5[] = {"doctor", "--device", "gpu"};
    rc = run_doctor(out, sizeof out, 3, a5);
    CHECK(rc == 1 && strstr(out, "--device: expected auto, emu or darwin, found 'gpu'"), "exit %d: %s", rc, out);
    FINISH();
}

/* ane_kernel_check (the doctor's work in each child) in this process, on the bridge: both training
** kernels of the tiny plan match the CPU reference and leave nothing behind; then each of the
** bridge's allocations fails in turn, and every failure is an error naming what failed. */
static void test_kernel_check_through_bridge(void) {
    ModelConfig cfg;
    Err err = {{0}};
    config_from_preset(&cfg, "tiny", &err);
    AnePlanSpec spec = {64, 4, 0x7fu, 1, 0, 0}; /* LoRA on every module, with dropout masks */
    AneLayerPlan plan;
    CHECK(ane_plan_make(&plan, &cfg, &spec, &err) == 0, "%s", err.msg);
    for (int kid = 0; kid < ANE_KERNELS; kid++) {
        AneKernel k;
        CHECK(ane_kernel_make(&plan, (AneKernelId)kid, &k, &err) == 0, "%s", err.msg);
        AneDevice *d = darwin_device(64);
        if (!d) break;
        AneKernelCheck c;
        CHECK(ane_kernel_check(d, &plan, (AneKernelId)kid, &k, 1, &c, &err) == 0 && c.reached == ANE_CHECK_DONE,
              "%s: %s", k.name, err.msg);
        CHECK(c.max_error < 5e-3 && c.worst_tap[0], "%s: error %.3g (%s)", k.name, c.max_error, c.worst_tap);
        d->destroy(d);
        EXPECT_CLEAN();
        int failures = 0;
        for (int n = 1; n < 400; n++) {
            d = darwin_device(64);
            if (!d) break;
            fake_ane_faults.alloc_fail_at = n;
            Err e = {{0}};
            int rc = ane_kernel_check(d, &plan, (AneKernelId)kid, &k, 0, &c, &e);
            int fired = fake_ane_faults.fired;
            fake_ane_faults.alloc_fail_at = 0;
            d->destroy(d);
            if (!fired) {
                CHECK(rc == 0, "allocation %d: %s", n, e.msg);
                break;
            }
            failures++;
            CHECK(rc == -1 && e.msg[0] && c.reached < ANE_CHECK_DONE, "%s, allocation %d: rc %d '%s'", k.name, n, rc,
                  e.msg);
            CHECK(fake_ane_live_objects() == 0 && fake_ane_violations() == 0, "%s, allocation %d: %s", k.name, n,
                  fake_ane_live_report());
            fake_ane_reset();
        }
        CHECK(failures > 0, "%s: no allocation of the bridge failed", k.name);
        ane_kernel_free(&k);
        fake_ane_reset();
    }
    /* The probe, allocation by allocation: only the chip subtype is optional. */
    for (int n = 1; n < 200; n++) {
        AneDarwinProbe pr;
        fake_ane_faults.alloc_fail_at = n;
        int rc = ane_darwin_probe(NULL, &pr);
        int fired = fake_ane_faults.fired;
        fake_ane_faults.alloc_fail_at = 0;
        if (!fired) break;
        CHECK(rc == 0 ? pr.ane_subtype[0] == '\0' : strstr(pr.framework_error, "memory") != NULL,
              "probe, allocation %d: rc %d, subtype '%s', '%s'", n, rc, pr.ane_subtype, pr.framework_error);
        CHECK(fake_ane_live_objects() == 0, "probe, allocation %d: %s", n, fake_ane_live_report());
        fake_ane_reset();
    }
    FINISH();
}

/* train --backend ane (and finetune) on a Mac whose compiler refuses a kernel: the error names the
** kernel, its I/O shapes and the nearest device limit, and the checkpoint (or LoRA training state)
** being resumed is left as it was (the backend, which compiles, is made before anything is
** written). */
static void test_compile_failure_leaves_checkpoint(void) {
    char dir[] = "/tmp/anetrain_ckpt_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char data[PATH_MAX], ckpt[PATH_MAX];
    snprintf(data, sizeof data, "%s/tokens.bin", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", dir);
    Err err = {{0}};
    int32_t ids[4096];
    Rng rng;
    rng_seed(&rng, 5);
    for (int i = 0; i < 4096; i++) ids[i] = (int32_t)rng_below(&rng, 64);
    CHECK(tokfile_save(data, ids, 4096, 0, 2, 0, &err) == 0, "%s", err.msg);
    TrainOptions o;
    memset(&o, 0, sizeof o);
    config_from_preset(&o.cfg, "tiny", &err);
    o.cfg.vocab_size = 64;
    o.data_path = data;
    o.order = ORDER_RANDOM;
    o.batch = 2, o.seq = 64, o.accum = 1, o.steps = 4;
    o.lr = 1e-3f, o.min_lr = 1e-3f, o.clip = 1.0f;
    o.adam = (AdamWConfig){0.9f, 0.999f, 1e-8f, 0.0f};
    o.seed = 3;
    o.backend = "cpu";
    backend_ane_default_options(&o.ane);
    Trainer tr;
    CHECK(trainer_init(&tr, &o, &err) == 0, "%s", err.msg);
    StepStats st;
    CHECK(trainer_step(&tr, &st, &err) == 0 && trainer_save(&tr, ckpt, &err) == 0, "%s", err.msg);
    trainer_free(&tr);
    size_t n_before = 0, n_after = 0;
    char *before = file_read_all(ckpt, &n_before, &err);

    o.backend = "ane";
    o.ane.device = "darwin";
    o.resume_path = ckpt;
    fake_ane_faults.compile_fail = 1;
    fake_ane_faults.message = "_ANECompiler : ANECCompile() FAILED";
    CHECK(trainer_init(&tr, &o, &err) == -1, "the compile was refused");
    if (getenv("ANETRAIN_VERBOSE")) printf("     %s\n", err.msg);
    CHECK(strstr(err.msg, "compiling layer_fwd (input [1, 64, 1, ") && strstr(err.msg, "-> output [1, ") &&
              strstr(err.msg, "ANECCompile() FAILED") && strstr(err.msg, "nearest device limit") &&
              strstr(err.msg, "rule input-width: the input is ") && strstr(err.msg, "rule axis-16384"),
          "%s", err.msg);
    char *after = file_read_all(ckpt, &n_after, &err);
    CHECK(before && after && n_before == n_after && memcmp(before, after, n_before) == 0,
          "the checkpoint changed (%zu -> %zu bytes)", n_before, n_after);
    CHECK(dir_entries(dir) == 2, "only the data and the checkpoint in %s", dir);
    free(before);
    free(after);
    CHECK(fake_ane_live_objects() == 0, "%s", fake_ane_live_report());
    fake_ane_reset();

    /* finetune --resume: a LoRA training state (r 4 on every module, over an int8 base), and a
    ** compile refused when the run continues on the device: the state is left as it was. */
    char state[PATH_MAX + 16];
    snprintf(state, sizeof state, "%s/lora_state.ckpt", dir);
    o.backend = "cpu";
    o.resume_path = NULL;
    o.lora = (LoraConfig){4, 8.0f, 0.0f, 0, 0x7fu};
    o.int8 = 1;
    CHECK(trainer_init(&tr, &o, &err) == 0, "%s", err.msg);
    CHECK(trainer_step(&tr, &st, &err) == 0 && trainer_save(&tr, state, &err) == 0, "%s", err.msg);
    trainer_free(&tr);
    before = file_read_all(state, &n_before, &err);
    o.backend = "ane";
    o.lora_resume_path = state;
    fake_ane_faults.compile_fail = 1;
    fake_ane_faults.message = "_ANECompiler : ANECCompile() FAILED";
    CHECK(trainer_init(&tr, &o, &err) == -1 && strstr(err.msg, "compiling layer_fwd (input [1, ") &&
              strstr(err.msg, "nearest device limit"),
          "%s", err.msg);
    after = file_read_all(state, &n_after, &err);
    CHECK(before && after && n_before == n_after && memcmp(before, after, n_before) == 0,
          "the LoRA training state changed (%zu -> %zu bytes)", n_before, n_after);
    free(before);
    free(after);
    CHECK(fake_ane_live_objects() == 0, "%s", fake_ane_live_report());
    fake_ane_reset();
    unlink(state);
    unlink(data);
    unlink(ckpt);
    rmdir(dir);
    FINISH();
}

/* ================================================================== the test double itself */

/* Some recorded violation contains needle; then the fake is reset. */
static void expect_violation_at(const char *file, int line, const char *needle) {
    int n = fake_ane_violations(), found = 0;
    for (int i = 0; i < n && !found; i++) found = strstr(fake_ane_violation(i), needle) != NULL;
    if (!found) {
        test_checks_failed_in_test++;
        fprintf(stderr, "  FAIL %s:%d: no violation mentions '%s' (%d recorded%s%s)\n", file, line, needle, n,
                n ? ", first: " : "", n ? fake_ane_violation(0) : "");
    }
    fake_ane_reset();
}
#define EXPECT_VIOLATION(needle) expect_violation_at(__FILE__, __LINE__, needle)

static CFDictionaryRef empty_dict(void) {
    return CFDictionaryCreate(kCFAllocatorDefault, NULL, NULL, 0, &kCFTypeDictionaryKeyCallBacks,
                              &kCFTypeDictionaryValueCallBacks);
}

/* A model made by hand (in the caller's pool), with its temp files written if asked; or NULL. */
static id hand_model(int write_files) {
    const char *mil_text = "program(1.3)\n";
    CFDataRef text = CFDataCreate(kCFAllocatorDefault, (const UInt8 *)mil_text, (CFIndex)strlen(mil_text));
    CFDictionaryRef w = empty_dict();
    id desc = ane_send_id_id3((id)objc_getClass("_ANEInMemoryModelDescriptor"),
                              sel_registerName("modelWithMILText:weights:optionsPlist:"), (id)text, (id)w, NULL);
    CFRelease(text);
    CFRelease(w);
    id model = ane_send_id_id((id)objc_getClass("_ANEInMemoryModel"), sel_registerName("inMemoryModelWithDescriptor:"),
                              desc);
    if (!model || !write_files) return model;
    CFStringRef hex = (CFStringRef)ane_send_id(model, sel_registerName("hexStringIdentifier"));
    char dir[PATH_MAX], path[PATH_MAX + 32], h[64];
    CFStringGetCString(hex, h, sizeof h, kCFStringEncodingUTF8);
    snprintf(dir, sizeof dir, "%s%s", fake_ane_tmpdir(), h);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/model.mil", dir);
    FILE *f = fopen(path, "w");
    fputs(mil_text, f);
    fclose(f);
    return model;
}

/* Each rule the fake enforces, broken on purpose: the fake must notice. */
static void test_fake_catches_misuse(void) {
    void *pool;
    id e = NULL;
    /* The runtime: classes only after dlopen; unknown selectors; nil receivers; wrong shapes. */
    CHECK(objc_getClass("_ANERequest") == NULL, "no framework class before dlopen");
    CHECK(fake_dlopen(ANE_DARWIN_FRAMEWORK_PATH, RTLD_LAZY) != NULL, "dlopen");
    EXPECT_VIOLATION("lacks RTLD_NOW");
    fake_dlopen(ANE_DARWIN_FRAMEWORK_PATH, RTLD_NOW);
    Class model_class = objc_getClass("_ANEInMemoryModel");
    CHECK(model_class != NULL, "class after dlopen");
    pool = objc_autoreleasePoolPush();
    ane_send_id((id)model_class, sel_registerName("alloc"));
    objc_autoreleasePoolPop(pool);
    EXPECT_VIOLATION("+[_ANEInMemoryModel alloc]: unrecognized selector");
    fake_dlopen(ANE_DARWIN_FRAMEWORK_PATH, RTLD_NOW);
    pool = objc_autoreleasePoolPush();
    ane_send_id(NULL, sel_registerName("hexStringIdentifier"));
    objc_autoreleasePoolPop(pool);
    EXPECT_VIOLATION("message to nil");
    fake_dlopen(ANE_DARWIN_FRAMEWORK_PATH, RTLD_NOW);
    pool = objc_autoreleasePoolPush();
    id m = hand_model(1);
    CHECK(m != NULL, "model");
    ane_send_bool_qos_err(m, sel_registerName("compileWithQoS:options:error:"), 21, &e);
    objc_autoreleasePoolPop(pool);
    EXPECT_VIOLATION("-[_ANEInMemoryModel compileWithQoS:options:error:] sent as BOOL (id self, SEL op, unsigned int "
                     "qos, id *error); its prototype is BOOL (id self, SEL op, unsigned int qos, id options, id *error)");
    fake_dlopen(ANE_DARWIN_FRAMEWORK_PATH, RTLD_NOW);
    m = hand_model(1); /* no pool */
    EXPECT_VIOLATION("sent with no autorelease pool in place");

    /* The call order and arguments of docs/ane-facts.md §1.2. */
    fake_dlopen(ANE_DARWIN_FRAMEWORK_PATH, RTLD_NOW);
    pool = objc_autoreleasePoolPush();
    CFDictionaryRef opts = empty_dict();
    m = hand_model(0);
    ane_send_bool_qos_id_err(m, sel_registerName("compileWithQoS:options:error:"), 21, (id)opts, &e);
    objc_autoreleasePoolPop(pool);
    CFRelease(opts);
    EXPECT_VIOLATION("model.mil is missing (docs/ane-facts.md §1.5: written before compiling)");
    fake_dlopen(ANE_DARWIN_FRAMEWORK_PATH, RTLD_NOW);
    pool = objc_autoreleasePoolPush();
    opts = empty_dict();
    m = hand_model(1);
    ane_send_bool_qos_id_err(m, sel_registerName("loadWithQoS:options:error:"), 21, (id)opts, &e);
    ane_send_bool_qos_id_err(m, sel_registerName("compileWithQoS:options:error:"), 99, NULL, NULL);
    objc_autoreleasePoolPop(pool);
    CFRelease(opts);
    CHECK(fake_ane_violations() >= 4, "load before compile, QoS 99, nil options, NULL error: %d",
          fake_ane_violations());
    EXPECT_VIOLATION("-loadWithQoS:options:error:: the model is not compiled");
    fake_dlopen(ANE_DARWIN_FRAMEWORK_PATH, RTLD_NOW);
    pool = objc_autoreleasePoolPush();
    CFDataRef text = CFDataCreate(kCFAllocatorDefault, (const UInt8 *)"x", 1);
    CFStringRef key = CFStringCreateWithCString(kCFAllocatorDefault, "weights/w.bin", kCFStringEncodingUTF8);
    CFMutableDictionaryRef w = CFDictionaryCreateMutable(kCFAllocatorDefault, 1, &kCFTypeDictionaryKeyCallBacks,
                                                         &kCFTypeDictionaryValueCallBacks);
    CFDictionarySetValue(w, key, text);
    ane_send_id_id3((id)objc_getClass("_ANEInMemoryModelDescriptor"),
                    sel_registerName("modelWithMILText:weights:optionsPlist:"), (id)text, (id)w, (id)text);
    objc_autoreleasePoolPop(pool);
    CFRelease(w), CFRelease(key), CFRelease(text);
    CHECK(fake_ane_violations() >= 3, "weights key, weights value, optionsPlist: %d", fake_ane_violations());
    EXPECT_VIOLATION("optionsPlist must be nil");

    /* CoreFoundation: NULL, over-release, use after release, callbacks, mutability. */
    CFRelease(NULL);
    EXPECT_VIOLATION("CFRelease(NULL)");
    text = CFDataCreate(kCFAllocatorDefault, (const UInt8 *)"x", 1);
    CFRelease(text);
    CFRelease(text);
    EXPECT_VIOLATION("was already deallocated");
    text = CFDataCreate(kCFAllocatorDefault, (const UInt8 *)"x", 1);
    const void *vals[1] = {text};
    CFArrayRef arr = CFArrayCreate(kCFAllocatorDefault, vals, 1, NULL);
    CFRelease(arr), CFRelease(text);
    EXPECT_VIOLATION("without &kCFTypeArrayCallBacks");
    CFDictionaryRef im = empty_dict();
    CFDictionarySetValue((CFMutableDictionaryRef)im, im, im);
    CFRelease(im);
    EXPECT_VIOLATION("CFDictionarySetValue on an immutable dictionary");
    int stack_object = 0;
    CFRetain(&stack_object);
    EXPECT_VIOLATION("is not an object made by the framework");

    /* Pools. */
    NSTemporaryDirectory();
    EXPECT_VIOLATION("autoreleased with no pool in place");
    void *outer = objc_autoreleasePoolPush();
    objc_autoreleasePoolPush();
    objc_autoreleasePoolPop(outer);
    EXPECT_VIOLATION("popped out of order");

    /* IOSurfaces: the docs/ane-facts.md §1.6 properties, lock pairing, base address under a lock. */
    CFStringRef k6[6] = {kIOSurfaceWidth,       kIOSurfaceHeight,    kIOSurfaceBytesPerElement,
                         kIOSurfaceBytesPerRow, kIOSurfaceAllocSize, kIOSurfacePixelFormat};
    int64_t v6[6] = {64, 2, 1, 64, 64, 0};
    CFNumberRef n6[6];
    for (int i = 0; i < 6; i++) n6[i] = CFNumberCreate(kCFAllocatorDefault, kCFNumberSInt64Type, &v6[i]);
    CFDictionaryRef props = CFDictionaryCreate(kCFAllocatorDefault, (const void **)k6, (const void **)n6, 6,
                                               &kCFTypeDictionaryKeyCallBacks, &kCFTypeDictionaryValueCallBacks);
    IOSurfaceRef surf = IOSurfaceCreate(props);
    CHECK(surf != NULL, "made anyway");
    IOSurfaceGetBaseAddress(surf);
    IOSurfaceLock(surf, kIOSurfaceLockReadOnly, NULL);
    IOSurfaceUnlock(surf, 0, NULL);
    IOSurfaceUnlock(surf, 0, NULL);
    CFRelease(surf), CFRelease(props);
    for (int i = 0; i < 6; i++) CFRelease(n6[i]);
    CHECK(fake_ane_violations() == 4, "height, base address, unlock flags, extra unlock: %d", fake_ane_violations());
    EXPECT_VIOLATION("Height 2");
    FINISH();
}

int main(void) {
    /* First: doctor uses the default compile budget of 119 per process, on both devices, and
    ** every test's compiles count against it (the fake's compiles also reach the emulator). */
    RUN(test_doctor);
    RUN(test_create_and_destroy);
    RUN(test_call_sequence);
    RUN(test_matmul_matches_emulator);
    RUN(test_attention_with_blob_matches_emulator);
    RUN(test_training_loop_matches_emulator);
    RUN(test_training_steps_through_backend);
    RUN(test_shared_temp_dir);
    RUN(test_request_cache_and_surface_free);
    RUN(test_destroy_releases_programs);
    RUN(test_fail_framework_class_selector);
    RUN(test_fail_compile_paths);
    RUN(test_limits_precheck);
    RUN(test_fail_evaluate_paths);
    RUN(test_fail_temp_dir);
    RUN(test_out_of_memory_everywhere);
    RUN(test_probe);
    RUN(test_kernel_check_through_bridge);
    RUN(test_compile_failure_leaves_checkpoint);
    RUN(test_fake_catches_misuse);
    if (getenv("ANETRAIN_VERBOSE"))
        printf("     compiles in this process: %llu through the bridge, %llu on the emulator\n",
               (unsigned long long)ane_darwin_process_compiles(), (unsigned long long)ane_emu_process_compiles());
    return TEST_SUMMARY();
}

#endif
