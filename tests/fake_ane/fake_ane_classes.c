/*
** fake_ane_classes.c — the test double's AppleNeuralEngine.framework: the classes and
** methods of docs/ane-facts.md §1.1-§1.2 with the argument checks of fake_control.h, dlopen of the
** framework path, NSTemporaryDirectory, and the routing of compile and evaluate to the
** emulator. Failure injection comes from fake_ane_faults.
**
** Object graph (each arrow a retained reference, released at dealloc, as the real objects
** hold them): descriptor -> MIL NSData, weights NSDictionary; model -> descriptor (+ an
** emulator program once compiled); request -> its four arrays and procedureIndex; surface
** object -> IOSurface; NSError -> its description. Factory results, NSErrors, descriptions,
** identifiers and NSTemporaryDirectory() are autoreleased, as Cocoa's naming rules say.
*/
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/ane/darwin.h"
#include "util/fileio.h"
#include "fake_internal.h"

FakeAneFaults fake_ane_faults;
int fake_framework_loaded;
static AneDevice *emulator;
static char tmp_root[PATH_MAX]; /* with a trailing '/' */
static unsigned last_qos;
static int loaded_models;
static char dl_error[600];

static int take(int *fault) {
    if (*fault <= 0) return 0;
    (*fault)--;
    return 1;
}

static const char *fault_message(const char *dflt) { return fake_ane_faults.message ? fake_ane_faults.message : dflt; }

/* Typed IMP entries: _Generic refuses (at compile time) a function whose prototype is not
** exactly its shape's. */
#define FAKE_SHAPE_TYPEDEF(name, ret, params, args) typedef ret(*FakeFn_##name) params;
ANE_MSG_SHAPES(FAKE_SHAPE_TYPEDEF)
#undef FAKE_SHAPE_TYPEDEF
#define METHOD(sel, is_class, shape, fn)                                                                               \
    { sel, is_class, FAKE_SHAPE_##shape, _Generic(&fn, FakeFn_##shape : (IMP)&fn) }

/* ------------------------------------------------------------------ NSString, NSError */

static id string_description(id self, SEL op) {
    (void)op;
    return self; /* an NSString describes itself, +0 */
}

static id error_description(id self, SEL op) {
    (void)op;
    FakeObj *e = (FakeObj *)(void *)self;
    return (id)e->kids[0];
}

static const struct objc_method string_methods[] = {METHOD("description", 0, ane_send_id, string_description)};
static const struct objc_method error_methods[] = {METHOD("description", 0, ane_send_id, error_description)};

struct objc_class fake_class_NSString = {"NSString", 0, string_methods, 1, NULL};
struct objc_class fake_class_NSData = {"NSData", 0, NULL, 0, NULL};
struct objc_class fake_class_NSNumber = {"NSNumber", 0, NULL, 0, NULL};
struct objc_class fake_class_NSArray = {"NSArray", 0, NULL, 0, NULL};
struct objc_class fake_class_NSDictionary = {"NSDictionary", 0, NULL, 0, NULL};
struct objc_class fake_class_IOSurface = {"IOSurface", 0, NULL, 0, NULL};
static struct objc_class class_error = {"NSError", 0, error_methods, 1, NULL};

/* *error = an autoreleased NSError whose description is the formatted text. */
static void set_error(id *error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(id *error, const char *fmt, ...) {
    if (!error) return;
    char buf[1600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    FakeObj *e = fake_new(&class_error, FK_INSTANCE);
    e->kids[e->n_kids++] = fake_string_new(buf);
    *error = (id)fake_autorelease(e);
}

/* ------------------------------------------------------------------ _ANE* state */

typedef enum { M_NEW, M_COMPILED, M_LOADED, M_UNLOADED } ModelState;

typedef struct {
    ModelState st;
    AneProgram *prog;
    char hex[40];
} Model;

static struct objc_class class_descriptor, class_model, class_surface_object, class_request, class_device_info;

static void model_dealloc(FakeObj *self) {
    Model *m = self->state;
    if (!m) return;
    if (m->st == M_LOADED) loaded_models--;
    if (m->prog) {
        AneDevice *e = fake_emu();
        e->release(e, m->prog);
    }
    free(m);
}

/* The descriptor's MIL NSData and weights NSDictionary (NULL when nil). */
static FakeObj *desc_mil(const FakeObj *d) { return d->kids[0]; }
static FakeObj *desc_weights(const FakeObj *d) { return d->n_kids > 1 ? d->kids[1] : NULL; }

/* The shared checks of the QoS/options/error calls. */
static void check_call(const char *sel, unsigned qos, id options, id *error) {
    last_qos = qos;
    if (qos > 63) fake_violation("-%s: QoS %u (docs/ane-facts.md §1.3: 0..63)", sel, qos);
    FakeObj *o = fake_check(options, FK_DICT, NULL, sel);
    /* the seed: maderix/ANE, the project anetrain follows (docs/ane-facts.md) */
    if (!options) fake_violation("-%s: options is nil; the seed passes @{} (docs/ane-facts.md §1.2)", sel);
    else if (o && o->n != 0) fake_violation("-%s: options has %d entries; the seed passes @{}", sel, o->n);
    if (!error) fake_violation("-%s: error is NULL: the framework's message would be lost", sel);
}

static Model *model_of(id self) { return ((FakeObj *)(void *)self)->state; }

/* ---------------------------------------------------------- docs/ane-facts.md §1.2 row 1 */

static void check_weights(const FakeObj *w) {
    for (int i = 0; i < w->n; i++) {
        const FakeObj *k = w->keys[i], *v = w->items[i];
        if (k->kind != FK_STRING || k->len < 12 || memcmp(k->bytes, "@model_path/", 12) != 0)
            fake_violation("weights: key %d is not an NSString \"@model_path/...\" (docs/ane-facts.md §1.4)", i);
        if (v->kind != FK_DICT) {
            fake_violation("weights: the value of key %d is %s, not a dictionary", i, fake_kind_name(v));
            continue;
        }
        FakeObj *off = fake_dict_get(v, "offset"), *data = fake_dict_get(v, "data");
        if (v->n != 2 || !off || !data)
            fake_violation("weights: entry %d must hold exactly \"offset\" and \"data\" (docs/ane-facts.md §1.4)", i);
        if (off && (off->kind != FK_NUMBER || (off->num != 0 && off->num != 64)))
            fake_violation("weights: entry %d offset is not the NSNumber 0 the seed uses", i);
        if (data && data->kind != FK_DATA) fake_violation("weights: entry %d data is not NSData", i);
    }
}

static id descriptor_with_mil(id self, SEL op, id mil_text, id weights, id options_plist) {
    (void)self, (void)op;
    const char *what = "+modelWithMILText:weights:optionsPlist:";
    FakeObj *m = fake_check(mil_text, FK_DATA, NULL, what);
    if (!mil_text) fake_violation("%s: the MIL text is nil", what);
    if (m && (m->len == 0 || memchr(m->bytes, 0, m->len)))
        fake_violation("%s: the MIL text must be non-empty UTF-8 without NUL bytes (%zu bytes)", what, m->len);
    FakeObj *w = fake_check(weights, FK_DICT, NULL, what);
    if (w) check_weights(w);
    if (options_plist) fake_violation("%s: optionsPlist must be nil (docs/ane-facts.md §1.2)", what);
    if (take(&fake_ane_faults.descriptor_nil) || !m || (weights && !w)) return NULL;
    FakeObj *d = fake_new(&class_descriptor, FK_INSTANCE);
    fake_retain(m);
    d->kids[d->n_kids++] = m;
    if (w) {
        fake_retain(w);
        d->kids[d->n_kids++] = w;
    }
    return (id)fake_autorelease(d);
}

/* ------------------------------------------------------------------ rows 2-5, 8, 9: the model */

static void hash_bytes(uint64_t *h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ b[i]) * 0x100000001B3ull;
}

static id model_with_descriptor(id self, SEL op, id descriptor) {
    (void)self, (void)op;
    FakeObj *d = fake_check(descriptor, FK_INSTANCE, &class_descriptor, "+inMemoryModelWithDescriptor:");
    if (!descriptor) fake_violation("+inMemoryModelWithDescriptor: the descriptor is nil");
    if (!d || take(&fake_ane_faults.model_nil)) return NULL;
    FakeObj *o = fake_new(&class_model, FK_INSTANCE);
    Model *m = calloc(1, sizeof *m);
    if (!m) abort();
    uint64_t h = 0xCBF29CE484222325ull; /* identical text and weights give the same identifier */
    FakeObj *mil = desc_mil(d), *w = desc_weights(d);
    hash_bytes(&h, mil->bytes, mil->len);
    for (int i = 0; w && i < w->n; i++) {
        FakeObj *data = fake_dict_get(w->items[i], "data");
        hash_bytes(&h, w->keys[i]->bytes, w->keys[i]->len);
        if (data) hash_bytes(&h, data->bytes, data->len);
    }
    snprintf(m->hex, sizeof m->hex, "%016llX", (unsigned long long)h);
    o->state = m;
    fake_retain(d);
    o->kids[o->n_kids++] = d;
    return (id)fake_autorelease(o);
}

static id model_hex_identifier(id self, SEL op) {
    (void)op;
    Model *m = model_of(self);
    if (fake_ane_faults.hex_override) /* later checks look where the bridge was told to write */
        snprintf(m->hex, sizeof m->hex, "%s", fake_ane_faults.hex_override);
    return (id)fake_autorelease(fake_string_new(m->hex));
}

static char *read_whole(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) free(buf);
            buf = b;
        }
    }
    fclose(f);
    *size = n;
    return buf;
}

static void check_file(const char *path, const void *want, size_t size, const char *what) {
    size_t n = 0;
    char *got = read_whole(path, &n);
    if (!got)
        fake_violation("compile: %s %s is missing (docs/ane-facts.md §1.5: written before compiling)", what, path);
    else if (n != size || memcmp(got, want, size) != 0)
        fake_violation("compile: %s %s differs from what the descriptor holds (%zu bytes, expected %zu)", what, path, n,
                       size);
    free(got);
}

static void model_dir(const Model *m, char *buf, size_t n) { snprintf(buf, n, "%s%s", fake_ane_tmpdir(), m->hex); }

/* docs/ane-facts.md §1.5: NSTemporaryDirectory()/<hex>/model.mil and each weight file, as the descriptor
** holds them. */
static void check_temp_dir(const FakeObj *model, const Model *m) {
    char dir[PATH_MAX + 64], path[PATH_MAX + 320];
    model_dir(m, dir, sizeof dir);
    const FakeObj *d = model->kids[0], *mil = desc_mil(d), *w = desc_weights(d);
    snprintf(path, sizeof path, "%s/model.mil", dir);
    check_file(path, mil->bytes, mil->len, "the MIL text");
    for (int i = 0; w && i < w->n; i++) {
        FakeObj *data = fake_dict_get(w->items[i], "data");
        if (!data || w->keys[i]->len < 12) continue;
        snprintf(path, sizeof path, "%s/%s", dir, (const char *)w->keys[i]->bytes + 12);
        check_file(path, data->bytes, data->len, "the weight file");
    }
}

static BOOL model_compile(id self, SEL op, unsigned int qos, id options, id *error) {
    (void)op;
    const char *sel = "compileWithQoS:options:error:";
    check_call(sel, qos, options, error);
    FakeObj *o = (FakeObj *)(void *)self;
    Model *m = model_of(self);
    if (m->st != M_NEW) fake_violation("-%s: the model was already compiled", sel);
    check_temp_dir(o, m);
    if (take(&fake_ane_faults.compile_fail)) {
        set_error(error, "%s", fault_message("ANECCompile() FAILED (injected)"));
        return NO;
    }
    if (take(&fake_ane_faults.compile_fail_no_error)) return NO;
    /* The weights dictionary back into blobs, for the emulator. */
    const FakeObj *d = o->kids[0], *mil = desc_mil(d), *w = desc_weights(d);
    int nb = w ? w->n : 0;
    AneBlob *blobs = calloc((size_t)nb + 1, sizeof *blobs);
    char *text = malloc(mil->len + 1);
    if (!blobs || !text) abort();
    memcpy(text, mil->bytes, mil->len);
    text[mil->len] = '\0';
    for (int i = 0; i < nb; i++) {
        FakeObj *data = fake_dict_get(w->items[i], "data");
        blobs[i] = (AneBlob){(const char *)w->keys[i]->bytes, data ? data->bytes : NULL, data ? data->len : 0};
    }
    AneDevice *e = fake_emu();
    Err err = {{0}};
    AneProgram *p = e->compile(e, text, blobs, nb, &err);
    free(text);
    free(blobs);
    if (!p) {
        set_error(error, "Error Domain=com.apple.appleneuralengine Code=3 \"_ANECompiler : ANECCompile() FAILED: %s\"",
                  err.msg);
        return NO;
    }
    m->prog = p;
    m->st = M_COMPILED;
    /* What a compiler leaves behind, so the bridge must delete the directory recursively. */
    char path[PATH_MAX + 96];
    model_dir(m, path, sizeof path - 32);
    strcat(path, "/net.plist");
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("compiled by the fake\n", f);
        fclose(f);
    }
    return YES;
}

static BOOL model_load(id self, SEL op, unsigned int qos, id options, id *error) {
    (void)op;
    const char *sel = "loadWithQoS:options:error:";
    check_call(sel, qos, options, error);
    Model *m = model_of(self);
    if (m->st != M_COMPILED && m->st != M_UNLOADED) {
        fake_violation("-%s: the model is %s", sel, m->st == M_NEW ? "not compiled" : "already loaded");
        set_error(error, "load of a model in the wrong state");
        return NO;
    }
    if (take(&fake_ane_faults.load_fail)) {
        set_error(error, "%s", fault_message("_ANEModel load failed: program load failure (0x50004) (injected)"));
        return NO;
    }
    m->st = M_LOADED;
    loaded_models++;
    return YES;
}

/* The emulator surface behind wrapper i of a request array. */
static AneSurface *request_surface(const FakeObj *arr) {
    const FakeObj *wrapper = arr->items[0];
    return wrapper->kids[0]->emu_surface;
}

static BOOL model_evaluate(id self, SEL op, unsigned int qos, id options, id request, id *error) {
    (void)op;
    const char *sel = "evaluateWithQoS:options:request:error:";
    check_call(sel, qos, options, error);
    Model *m = model_of(self);
    FakeObj *r = fake_check(request, FK_INSTANCE, &class_request, sel);
    if (!request) fake_violation("-%s: the request is nil", sel);
    if (m->st != M_LOADED) fake_violation("-%s: the model is not loaded", sel);
    if (!r || m->st != M_LOADED) {
        set_error(error, "evaluate without a loaded model or a request");
        return NO;
    }
    const FakeObj *ins = r->kids[0], *outs = r->kids[2];
    if (ins->n != 1 || outs->n != 1) { /* the emulator takes one of each (README: 0x1d) */
        set_error(error, "Error Domain=com.apple.appleneuralengine Code=0x1d: %d inputs and %d outputs", ins->n,
                  outs->n);
        return NO;
    }
    if (take(&fake_ane_faults.eval_fail)) {
        set_error(error, "%s", fault_message("_ANEModel evaluate failed: program execution failure (injected)"));
        return NO;
    }
    AneDevice *e = fake_emu();
    Err err = {{0}};
    if (e->evaluate(e, m->prog, request_surface(ins), request_surface(outs), &err) != 0) {
        set_error(error, "Error Domain=com.apple.appleneuralengine: %s", err.msg);
        return NO;
    }
    return YES;
}

static BOOL model_unload(id self, SEL op, unsigned int qos, id *error) {
    (void)op;
    const char *sel = "unloadWithQoS:error:";
    last_qos = qos;
    if (qos > 63) fake_violation("-%s: QoS %u", sel, qos);
    if (!error) fake_violation("-%s: error is NULL", sel);
    Model *m = model_of(self);
    if (m->st != M_LOADED) {
        fake_violation("-%s: the model is not loaded", sel);
        set_error(error, "unload of a model that is not loaded");
        return NO;
    }
    if (take(&fake_ane_faults.unload_fail)) {
        set_error(error, "%s", fault_message("_ANEModel unload failed (injected)"));
        return NO;
    }
    m->st = M_UNLOADED;
    loaded_models--;
    return YES;
}

/* ------------------------------------------------------------------ rows 6, 7 */

static id surface_object_with_iosurface(id self, SEL op, IOSurfaceRef surface) {
    (void)self, (void)op;
    FakeObj *s = fake_check(surface, FK_SURFACE, NULL, "+objectWithIOSurface:");
    if (!surface) fake_violation("+objectWithIOSurface: the IOSurface is NULL");
    if (!s || take(&fake_ane_faults.surface_object_nil)) return NULL;
    FakeObj *o = fake_new(&class_surface_object, FK_INSTANCE);
    fake_retain(s);
    o->kids[o->n_kids++] = s;
    return (id)fake_autorelease(o);
}

/* An NSArray of n >= 1 surface objects, or of the NSNumbers 0..n-1. */
static FakeObj *check_array(id a, int numbers, int n, const char *what) {
    FakeObj *o = fake_check(a, FK_ARRAY, NULL, what);
    if (!a) fake_violation("+requestWithInputs:...: %s is nil", what);
    if (!o) return NULL;
    if (numbers ? o->n != n : o->n < 1) {
        fake_violation("+requestWithInputs:...: %s has %d items, expected %d", what, o->n, numbers ? n : 1);
        return NULL;
    }
    for (int i = 0; i < o->n; i++) {
        const FakeObj *it = o->items[i];
        if (numbers ? (it->kind != FK_NUMBER || it->num != i) : it->isa != &class_surface_object) {
            fake_violation("+requestWithInputs:...: %s item %d is %s, expected %s", what, i, fake_kind_name(it),
                           numbers ? "the NSNumber of its index" : "an _ANEIOSurfaceObject");
            return NULL;
        }
    }
    return o;
}

static id request_with_inputs(id self, SEL op, id inputs, id input_indices, id outputs, id output_indices,
                              id weights_buffer, id perf_stats, id procedure_index) {
    (void)self, (void)op;
    FakeObj *in = check_array(inputs, 0, 0, "inputs");
    FakeObj *ii = in ? check_array(input_indices, 1, in->n, "inputIndices") : NULL;
    FakeObj *out = check_array(outputs, 0, 0, "outputs");
    FakeObj *oi = out ? check_array(output_indices, 1, out->n, "outputIndices") : NULL;
    if (weights_buffer) fake_violation("+requestWithInputs:...: weightsBuffer must be nil (docs/ane-facts.md §1.2)");
    if (perf_stats) fake_violation("+requestWithInputs:...: perfStats must be nil (docs/ane-facts.md §1.2)");
    FakeObj *pi = fake_check(procedure_index, FK_NUMBER, NULL, "procedureIndex");
    if (!pi || pi->num != 0)
        fake_violation("+requestWithInputs:...: procedureIndex must be @0 (docs/ane-facts.md §1.2)");
    if (!in || !ii || !out || !oi || !pi || take(&fake_ane_faults.request_nil)) return NULL;
    FakeObj *r = fake_new(&class_request, FK_INSTANCE);
    FakeObj *kids[5] = {in, ii, out, oi, pi};
    for (int i = 0; i < 5; i++) {
        fake_retain(kids[i]);
        r->kids[r->n_kids++] = kids[i];
    }
    return (id)fake_autorelease(r);
}

static id device_info_ane_subtype(id self, SEL op) {
    (void)self, (void)op;
    return (id)fake_autorelease(fake_string_new("fake (test double on the emulator)"));
}

/* ------------------------------------------------------------------ the class table */

static const struct objc_method descriptor_methods[] = {
    METHOD("modelWithMILText:weights:optionsPlist:", 1, ane_send_id_id3, descriptor_with_mil),
};
static const struct objc_method model_methods[] = {
    METHOD("inMemoryModelWithDescriptor:", 1, ane_send_id_id, model_with_descriptor),
    METHOD("hexStringIdentifier", 0, ane_send_id, model_hex_identifier),
    METHOD("compileWithQoS:options:error:", 0, ane_send_bool_qos_id_err, model_compile),
    METHOD("loadWithQoS:options:error:", 0, ane_send_bool_qos_id_err, model_load),
    METHOD("evaluateWithQoS:options:request:error:", 0, ane_send_bool_qos_id_id_err, model_evaluate),
    METHOD("unloadWithQoS:error:", 0, ane_send_bool_qos_err, model_unload),
};
static const struct objc_method surface_object_methods[] = {
    METHOD("objectWithIOSurface:", 1, ane_send_id_surface, surface_object_with_iosurface),
};
static const struct objc_method request_methods[] = {
    METHOD("requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:perfStats:procedureIndex:", 1,
           ane_send_id_id7, request_with_inputs),
};
static const struct objc_method device_info_methods[] = {
    METHOD("aneSubType", 1, ane_send_id, device_info_ane_subtype),
};

#define COUNT(a) ((int)(sizeof a / sizeof a[0]))
static struct objc_class class_descriptor = {"_ANEInMemoryModelDescriptor", 1, descriptor_methods,
                                             COUNT(descriptor_methods), NULL};
static struct objc_class class_model = {"_ANEInMemoryModel", 1, model_methods, COUNT(model_methods), model_dealloc};
static struct objc_class class_surface_object = {"_ANEIOSurfaceObject", 1, surface_object_methods,
                                                 COUNT(surface_object_methods), NULL};
static struct objc_class class_request = {"_ANERequest", 1, request_methods, COUNT(request_methods), NULL};
static struct objc_class class_device_info = {"_ANEDeviceInfo", 1, device_info_methods, COUNT(device_info_methods),
                                              NULL};

Class const fake_classes[] = {
    &fake_class_NSString,  &fake_class_NSData, &fake_class_NSNumber, &fake_class_NSArray, &fake_class_NSDictionary,
    &fake_class_IOSurface, &class_error,       &class_descriptor,    &class_model,        &class_surface_object,
    &class_request,        &class_device_info,
};
const int fake_n_classes = COUNT(fake_classes);

/* ------------------------------------------------------------------ dlopen, temp dir, emulator */

void *fake_dlopen(const char *path, int mode) {
    fake_init();
    fake_log("dlopen");
    if (!(mode & RTLD_NOW)) fake_violation("dlopen(%s): mode %#x lacks RTLD_NOW (docs/ane-facts.md §1.1)", path, mode);
    if (take(&fake_ane_faults.framework_missing) || !path || strcmp(path, ANE_DARWIN_FRAMEWORK_PATH) != 0) {
        snprintf(dl_error, sizeof dl_error, "dlopen(%s, %d): image not found", path ? path : "(null)", mode);
        return NULL;
    }
    fake_framework_loaded = 1;
    return &fake_framework_loaded;
}

char *fake_dlerror(void) {
    static char out[sizeof dl_error];
    if (!dl_error[0]) return NULL;
    memcpy(out, dl_error, sizeof out);
    dl_error[0] = '\0';
    return out;
}

const char *fake_ane_tmpdir(void) {
    if (!tmp_root[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmp_root, sizeof tmp_root - 2, "%s/fake_ane_XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmp_root)) {
            fprintf(stderr, "fake_ane: mkdtemp(%s): %s\n", tmp_root, strerror(errno));
            abort();
        }
        strcat(tmp_root, "/");
    }
    return tmp_root;
}

CFStringRef NSTemporaryDirectory(void) {
    fake_init();
    fake_log("NSTemporaryDirectory");
    const char *dir = fake_ane_faults.tmpdir_override ? fake_ane_faults.tmpdir_override : fake_ane_tmpdir();
    return (CFStringRef)(void *)fake_autorelease(fake_string_new(dir));
}

AneDevice *fake_emu(void) {
    if (!emulator) {
        AneEmuOptions o;
        ane_emu_default_options(&o);
        o.compile_budget = INT_MAX; /* the bridge keeps its own budget */
        o.limits = ANE_LIMITS_PROBED; /* the stand-in for a chip: it fails only what chips were seen to fail;
                                      ** the bridge's own pre-check applies the limits it was given */
        Err err = {{0}};
        emulator = ane_emu_create(&o, &err);
        if (!emulator) {
            fprintf(stderr, "fake_ane: %s\n", err.msg);
            abort();
        }
    }
    return emulator;
}

AneDevice *fake_ane_emulator(void) { return fake_emu(); }
unsigned fake_ane_last_qos(void) { return last_qos; }
int fake_ane_loaded_models(void) { return loaded_models; }

void fake_rmtree(const char *path) { path_remove_tree(path); }

void fake_classes_reset(void) {
    if (emulator) emulator->destroy(emulator);
    emulator = NULL;
    if (tmp_root[0]) fake_rmtree(tmp_root);
    tmp_root[0] = '\0';
    fake_framework_loaded = 0;
    last_qos = 0;
    loaded_models = 0;
    dl_error[0] = '\0';
}
