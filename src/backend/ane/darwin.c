/*
** darwin.c — the real Neural Engine behind the device seam (device.h, darwin.h): Apple's
** private AppleNeuralEngine.framework driven from C through the Objective-C runtime's C API,
** CoreFoundation and IOSurface, following docs/ane-facts.md §1 call for call.
**
**   create    dlopen the framework; objc_getClass each class, sel_registerName each selector
**             and check that the class answers it (a macOS update that renames one gives a
**             clean error here instead of an "unrecognized selector" exception later)
**   compile   emulator checker (shapes, constraints) -> budget slot -> in an autorelease pool:
**             1 descriptor from MIL text (CFData) + weights (CFDictionary), 2 model, 3
**             hexStringIdentifier, write NSTemporaryDirectory()/<hex>/model.mil and weights/,
**             4 compile, 5 load (retried once after a pause, as the seed does)
**   evaluate  6 wrap both IOSurfaces, 7 request (cached per surface pair), 8 evaluate
**   release   9 unload, release the model, delete the temp dir with its last user
**   surfaces  IOSurfaceCreate with the §1.6 properties; lock/unlock read-only or read-write
**
** The same text compiles on macOS against the real headers and on Linux against the test
** double (objc_shim.h explains how); every line here runs in CI on Linux. The typed message
** sends live in objc_shim.h (their prototypes) and in the "sends" section below (one function
** per row of docs/ane-facts.md §1.2). Every nil, NO, NSError, NULL surface and file error becomes an
** Err carrying the framework's own message. Objects the framework returns autoreleased are
** CFRetain'ed when they outlive the pool (the model, the requests); every CF object this file
** creates is released on every path.
**
** This file must never exit, abort or print, and must not grow logic that the emulator
** could exercise instead: whatever can live above the seam lives there.
*/
#include "darwin.h"

#include <stdio.h>
#include <string.h>

#include "../../util/clock.h"
#include "../../util/err.h"
#include "../../util/fileio.h"

void ane_darwin_default_options(AneDarwinOptions *opt) {
    opt->framework_path = ANE_DARWIN_FRAMEWORK_PATH;
    opt->compile_budget = ANE_COMPILE_BUDGET_DEFAULT;
    opt->qos = 21;
    opt->load_retry_us = 100000;
    opt->request_cache = 64;
    opt->limits = ANE_LIMITS_STRICT;
}

#if defined(__APPLE__) || defined(ANE_FAKE_FRAMEWORK)

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "emu/mil.h"
#include "objc_shim.h"

int ane_darwin_available(void) { return 1; }

/* ================================================================== the API surface (§1.1, §1.2) */

typedef enum { C_DESCRIPTOR, C_MODEL, C_SURFACE_OBJECT, C_REQUEST, C_DEVICE_INFO, C_COUNT } ClassId;

static const struct {
    const char *name;
    int required;
} api_classes[C_COUNT] = {
    {"_ANEInMemoryModelDescriptor", 1},
    {"_ANEInMemoryModel", 1},
    {"_ANEIOSurfaceObject", 1},
    {"_ANERequest", 1},
    {"_ANEDeviceInfo", 0},
};

typedef enum {
    S_MODEL_WITH_MIL,
    S_MODEL_WITH_DESCRIPTOR,
    S_HEX_ID,
    S_COMPILE,
    S_LOAD,
    S_SURFACE_OBJECT,
    S_REQUEST,
    S_EVALUATE,
    S_UNLOAD,
    S_ANE_SUBTYPE,
    S_DESCRIPTION,
    S_COUNT
} SelId;

/* cls < 0: an NSObject method (-description), not checked against a class. */
static const struct {
    const char *name;
    int cls;
    int class_method;
} api_selectors[S_COUNT] = {
    {"modelWithMILText:weights:optionsPlist:", C_DESCRIPTOR, 1},
    {"inMemoryModelWithDescriptor:", C_MODEL, 1},
    {"hexStringIdentifier", C_MODEL, 0},
    {"compileWithQoS:options:error:", C_MODEL, 0},
    {"loadWithQoS:options:error:", C_MODEL, 0},
    {"objectWithIOSurface:", C_SURFACE_OBJECT, 1},
    {"requestWithInputs:inputIndices:outputs:outputIndices:weightsBuffer:perfStats:procedureIndex:", C_REQUEST, 1},
    {"evaluateWithQoS:options:request:error:", C_MODEL, 0},
    {"unloadWithQoS:error:", C_MODEL, 0},
    {"aneSubType", C_DEVICE_INFO, 1},
    {"description", -1, 0},
};

typedef struct {
    Class cls[C_COUNT];
    SEL sel[S_COUNT];
    int sel_found[S_COUNT];
} Api;

/* dlopen, then every class and selector. Fills probe rows when probe is given. Fails naming
** the first required class or selector that does not resolve. */
static int api_resolve(Api *a, const char *path, AneDarwinProbe *probe, Err *err) {
    memset(a, 0, sizeof *a);
    void *handle = dlopen(path, RTLD_NOW); /* never closed: unloading Objective-C images is unsupported */
    if (!handle) {
        const char *why = dlerror();
        if (probe) snprintf(probe->framework_error, sizeof probe->framework_error, "%s", why ? why : "unknown error");
        return err_set(err,
                       "darwin ANE: cannot load the private framework %s: %s (the Neural Engine runtime ships with "
                       "macOS on Apple silicon; run `anetrain doctor` and include its report)",
                       path, why ? why : "unknown error");
    }
    if (probe) probe->framework_loaded = 1;
    int rc = 0;
    for (int c = 0; c < C_COUNT; c++) {
        a->cls[c] = objc_getClass(api_classes[c].name);
        if (probe && probe->n_symbols < ANE_DARWIN_MAX_SYMBOLS)
            probe->symbols[probe->n_symbols++] =
                (AneDarwinSymbol){api_classes[c].name, NULL, 0, api_classes[c].required, a->cls[c] != NULL};
        if (!a->cls[c] && api_classes[c].required && rc == 0)
            rc = err_set(err,
                         "darwin ANE: class %s not found in %s: this macOS version changed the private API; run "
                         "`anetrain doctor` and report it",
                         api_classes[c].name, path);
        for (int s = 0; s < S_COUNT; s++) {
            if (api_selectors[s].cls != c) continue;
            a->sel[s] = sel_registerName(api_selectors[s].name);
            Method m = NULL;
            if (a->cls[c])
                m = api_selectors[s].class_method ? class_getClassMethod(a->cls[c], a->sel[s])
                                                  : class_getInstanceMethod(a->cls[c], a->sel[s]);
            a->sel_found[s] = m != NULL;
            if (probe && probe->n_symbols < ANE_DARWIN_MAX_SYMBOLS)
                probe->symbols[probe->n_symbols++] =
                    (AneDarwinSymbol){api_classes[c].name, api_selectors[s].name, api_selectors[s].class_method,
                                      api_classes[c].required, m != NULL};
            if (!m && a->cls[c] && api_classes[c].required && rc == 0)
                rc = err_set(err,
                             "darwin ANE: %s does not answer %c%s: this macOS version changed the private API; run "
                             "`anetrain doctor` and report it",
                             api_classes[c].name, api_selectors[s].class_method ? '+' : '-', api_selectors[s].name);
        }
    }
    a->sel[S_DESCRIPTION] = sel_registerName(api_selectors[S_DESCRIPTION].name);
    a->sel_found[S_DESCRIPTION] = 1;
    return rc;
}

/* ================================================================== the sends (docs/ane-facts.md §1.2) */
/* One function per row of the table; the prototypes come from ANE_MSG_SHAPES (objc_shim.h).
** NULL stands for nil; CF objects go where the seed passes Foundation literals (§1.10). */

static id send_descriptor(const Api *a, CFDataRef mil, CFDictionaryRef weights) { /* 1 */
    return ane_send_id_id3((id)a->cls[C_DESCRIPTOR], a->sel[S_MODEL_WITH_MIL], (id)mil, (id)weights, NULL);
}
static id send_model(const Api *a, id descriptor) { /* 2 */
    return ane_send_id_id((id)a->cls[C_MODEL], a->sel[S_MODEL_WITH_DESCRIPTOR], descriptor);
}
static id send_hex_identifier(const Api *a, id model) { /* 3 */
    return ane_send_id(model, a->sel[S_HEX_ID]);
}
static BOOL send_compile(const Api *a, id model, unsigned qos, CFDictionaryRef options, id *error) { /* 4 */
    return ane_send_bool_qos_id_err(model, a->sel[S_COMPILE], qos, (id)options, error);
}
static BOOL send_load(const Api *a, id model, unsigned qos, CFDictionaryRef options, id *error) { /* 5 */
    return ane_send_bool_qos_id_err(model, a->sel[S_LOAD], qos, (id)options, error);
}
static id send_surface_object(const Api *a, IOSurfaceRef surface) { /* 6 */
    return ane_send_id_surface((id)a->cls[C_SURFACE_OBJECT], a->sel[S_SURFACE_OBJECT], surface);
}
static id send_request(const Api *a, CFArrayRef inputs, CFArrayRef in_indices, CFArrayRef outputs, /* 7 */
                       CFArrayRef out_indices, CFNumberRef procedure) {
    return ane_send_id_id7((id)a->cls[C_REQUEST], a->sel[S_REQUEST], (id)inputs, (id)in_indices, (id)outputs,
                           (id)out_indices, NULL, NULL, (id)procedure);
}
static BOOL send_evaluate(const Api *a, id model, unsigned qos, CFDictionaryRef options, id request, /* 8 */
                          id *error) {
    return ane_send_bool_qos_id_id_err(model, a->sel[S_EVALUATE], qos, (id)options, request, error);
}
static BOOL send_unload(const Api *a, id model, unsigned qos, id *error) { /* 9 */
    return ane_send_bool_qos_err(model, a->sel[S_UNLOAD], qos, error);
}
static id send_description(const Api *a, id object) { return ane_send_id(object, a->sel[S_DESCRIPTION]); }
static id send_ane_subtype(const Api *a) { return ane_send_id((id)a->cls[C_DEVICE_INFO], a->sel[S_ANE_SUBTYPE]); }

/* ================================================================== CoreFoundation helpers */

static void cf_release(CFTypeRef cf) {
    if (cf) CFRelease(cf);
}

static CFStringRef cf_string(const char *s) {
    return CFStringCreateWithCString(kCFAllocatorDefault, s, kCFStringEncodingUTF8);
}

static CFNumberRef cf_int(int64_t v) { return CFNumberCreate(kCFAllocatorDefault, kCFNumberSInt64Type, &v); }

/* An NSString/CFString as a malloc'd UTF-8 C string; NULL if s is nil or not a string. */
static char *cf_string_dup(CFTypeRef s) {
    if (!s || CFGetTypeID(s) != CFStringGetTypeID()) return NULL;
    CFIndex len = CFStringGetLength((CFStringRef)s);
    CFIndex cap = CFStringGetMaximumSizeForEncoding(len, kCFStringEncodingUTF8) + 1;
    char *buf = cap > 0 ? malloc((size_t)cap) : NULL;
    if (buf && !CFStringGetCString((CFStringRef)s, buf, cap, kCFStringEncodingUTF8)) {
        free(buf);
        buf = NULL;
    }
    return buf;
}

/* err = "<what>: <the NSError's description>" (inside the autorelease pool that holds it). */
static int fail_ns(Err *err, const Api *a, id nserror, const char *fmt, ...) ERR_PRINTF(4, 5);
static int fail_ns(Err *err, const Api *a, id nserror, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char *desc = nserror ? cf_string_dup(send_description(a, nserror)) : NULL;
    err_set(err, "%s: %s", what, desc ? desc : nserror ? "(an NSError without a description)" : "(no NSError)");
    free(desc);
    return -1;
}

/* The weights dictionary (§1.4): { path: { "offset": 0, "data": blob file } } for each blob;
** empty when there are none. */
static CFDictionaryRef weights_dict(const AneBlob *blobs, int n) {
    CFMutableDictionaryRef d = CFDictionaryCreateMutable(kCFAllocatorDefault, n, &kCFTypeDictionaryKeyCallBacks,
                                                         &kCFTypeDictionaryValueCallBacks);
    CFStringRef k_offset = cf_string("offset"), k_data = cf_string("data");
    CFNumberRef zero = cf_int(0);
    int ok = d && k_offset && k_data && zero;
    for (int i = 0; ok && i < n; i++) {
        CFStringRef key = cf_string(blobs[i].path);
        CFDataRef data = CFDataCreate(kCFAllocatorDefault, blobs[i].data, (CFIndex)blobs[i].size);
        const void *ik[2] = {k_offset, k_data}, *iv[2] = {zero, data};
        CFDictionaryRef inner = key && data
                                    ? CFDictionaryCreate(kCFAllocatorDefault, ik, iv, 2, &kCFTypeDictionaryKeyCallBacks,
                                                         &kCFTypeDictionaryValueCallBacks)
                                    : NULL;
        if (inner) CFDictionarySetValue(d, key, inner);
        else ok = 0;
        cf_release(inner);
        cf_release(data);
        cf_release(key);
    }
    cf_release(zero);
    cf_release(k_data);
    cf_release(k_offset);
    if (!ok) {
        cf_release(d);
        return NULL;
    }
    return d;
}

/* The IOSurface properties of §1.6: one flat buffer of `bytes`. */
static CFDictionaryRef surface_properties(size_t bytes) {
    const void *keys[6] = {kIOSurfaceWidth,       kIOSurfaceHeight,    kIOSurfaceBytesPerElement,
                           kIOSurfaceBytesPerRow, kIOSurfaceAllocSize, kIOSurfacePixelFormat};
    CFNumberRef n = cf_int((int64_t)bytes), one = cf_int(1), zero = cf_int(0);
    const void *vals[6] = {n, one, one, n, n, zero};
    CFDictionaryRef d = n && one && zero
                            ? CFDictionaryCreate(kCFAllocatorDefault, keys, vals, 6, &kCFTypeDictionaryKeyCallBacks,
                                                 &kCFTypeDictionaryValueCallBacks)
                            : NULL;
    cf_release(zero);
    cf_release(one);
    cf_release(n);
    return d;
}

/* ================================================================== the device */

static _Atomic uint64_t process_compiles; /* successful framework compiles in this process */
static _Atomic uint64_t surface_serials;  /* identifies surfaces in the request cache */

uint64_t ane_darwin_process_compiles(void) { return atomic_load(&process_compiles); }

typedef struct TempDir {
    char *path; /* NSTemporaryDirectory()/<hexStringIdentifier> */
    int refs;   /* programs using it */
    struct TempDir *next;
} TempDir;

typedef struct {
    uint64_t in_id, out_id;
    id request; /* retained */
} CachedRequest;

struct AneProgram {
    id model; /* retained, loaded */
    AneShape in, out;
    TempDir *dir;
    CachedRequest *cache;
    int n_cache, next_evict;
    AneProgram *prev, *next; /* the device's live programs */
};

struct AneSurface {
    IOSurfaceRef ref;
    size_t bytes;
    uint64_t id;
    int locks_ro, locks_rw, unbalanced;
};

typedef struct {
    AneDevice dev; /* first: an AneDevice* is a DarwinDevice* */
    AneDarwinOptions opt;
    char framework_path[1024];
    Api api;
    CFDictionaryRef empty; /* the `@{}` options of every call */
    pthread_mutex_t lock;  /* programs, temp dirs, request caches, stats */
    AneProgram *programs;
    TempDir *dirs;
    AneDarwinStats stats;
} DarwinDevice;


static void sleep_us(int us) {
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    while (us > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Takes one slot of the process budget, or returns 0 when none is left (as the emulator). */
static int budget_reserve(int budget, uint64_t *count_out) {
    uint64_t cur = atomic_load(&process_compiles);
    for (;;) {
        *count_out = cur;
        if (budget < 1 || cur >= (uint64_t)budget) return 0;
        if (atomic_compare_exchange_weak(&process_compiles, &cur, cur + 1)) return 1;
    }
}

/* ------------------------------------------------------------------ temp directory (§1.5) */

/* The path of a blob relative to the model directory ("@model_path/weights/w.bin" ->
** "weights/w.bin"), or NULL if it is not one we may write (outside the directory). */
static const char *blob_relpath(const char *path) {
    static const char prefix[] = "@model_path/";
    if (!path || strncmp(path, prefix, sizeof prefix - 1) != 0) return NULL;
    const char *rel = path + sizeof prefix - 1;
    if (!*rel || *rel == '/') return NULL;
    for (const char *c = rel; *c;) { /* no empty, "." or ".." component */
        const char *e = strchr(c, '/');
        size_t len = e ? (size_t)(e - c) : strlen(c);
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) return NULL;
        c += len + (e ? 1 : 0);
        if (e && !*c) return NULL;
    }
    return rel;
}

/* A single path component: no '/', not "." or "..", no control characters. */
static int identifier_ok(const char *s) {
    if (!*s || strlen(s) > 200 || !strcmp(s, ".") || !strcmp(s, "..")) return 0;
    for (; *s; s++)
        if (*s == '/' || (unsigned char)*s < 0x20 || *s == 0x7F) return 0;
    return 1;
}

/* mkdir -p of path's directories below its first `start` bytes (which must exist), and of
** path itself when `self` is set. */
static int make_dirs(char *path, size_t start, int self, Err *err) {
    size_t n = strlen(path);
    for (size_t i = start + 1; i <= n; i++) {
        if (path[i] != '/' && !(self && path[i] == '\0')) continue;
        char c = path[i];
        path[i] = '\0';
        int rc = mkdir(path, 0755);
        int e = errno;
        if (rc != 0 && e != EEXIST) {
            err_set(err, "darwin ANE: cannot create the directory %s: %s", path, strerror(e));
            path[i] = c;
            return -1;
        }
        path[i] = c;
    }
    return 0;
}

static int write_file(const char *path, const void *data, size_t size, Err *err) {
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, size, f) == size;
    if (f && fclose(f) != 0) ok = 0;
    return ok ? 0 : err_set(err, "darwin ANE: cannot write %s: %s", path, strerror(errno));
}

/* NSTemporaryDirectory()/<hex>/ with model.mil and every weight file written, shared with
** any live program of the same identifier. Called with the device lock held. */
static TempDir *temp_dir_acquire(DarwinDevice *D, const char *hex, const char *mil, const AneBlob *blobs, int n_blobs,
                                 Err *err) {
    if (!identifier_ok(hex)) {
        err_set(err, "darwin ANE: -[_ANEInMemoryModel hexStringIdentifier] returned '%s', not a directory name", hex);
        return NULL;
    }
    char *tmp = cf_string_dup(NSTemporaryDirectory());
    if (!tmp || !*tmp) {
        free(tmp);
        err_set(err, "darwin ANE: NSTemporaryDirectory() returned no path (or memory ran out)");
        return NULL;
    }
    size_t tl = strlen(tmp);
    while (tl > 1 && tmp[tl - 1] == '/')
        tmp[--tl] = '\0';
    size_t cap = tl + strlen(hex) + 2;
    char *dir = malloc(cap);
    if (dir) snprintf(dir, cap, "%s/%s", tmp, hex);
    free(tmp);
    TempDir *t = NULL;
    for (TempDir *it = D->dirs; dir && it; it = it->next)
        if (strcmp(it->path, dir) == 0) t = it;
    if (!dir || (!t && !(t = calloc(1, sizeof *t)))) {
        free(dir);
        err_set(err, "out of memory for the temp directory name");
        return NULL;
    }
    int fresh = t->path == NULL;
    if (fresh) t->path = dir;
    else free(dir);

    /* Written every time, also when shared: the compile about to run must find its own weights. */
    size_t longest = strlen("weights/") + strlen("model.mil");
    for (int i = 0; i < n_blobs; i++)
        longest = strlen(blobs[i].path) > longest ? strlen(blobs[i].path) : longest;
    char *file = malloc(strlen(t->path) + longest + 2);
    int rc = file ? 0 : err_set(err, "out of memory for a temp file name");
    if (rc == 0) {
        sprintf(file, "%s/weights", t->path);
        rc = make_dirs(file, tl, 1, err); /* <hex>/ and <hex>/weights/ */
    }
    if (rc == 0) {
        sprintf(file, "%s/model.mil", t->path);
        rc = write_file(file, mil, strlen(mil), err);
    }
    for (int i = 0; rc == 0 && i < n_blobs; i++) {
        sprintf(file, "%s/%s", t->path, blob_relpath(blobs[i].path));
        rc = make_dirs(file, tl, 0, err);
        if (rc == 0) rc = write_file(file, blobs[i].data, blobs[i].size, err);
    }
    free(file);
    if (rc != 0) {
        if (fresh) {
            path_remove_tree(t->path); /* best effort: a leftover file is not worth failing for */
            free(t->path);
            free(t);
        }
        return NULL;
    }
    if (fresh) {
        t->next = D->dirs;
        D->dirs = t;
        D->stats.live_temp_dirs++;
    }
    t->refs++;
    return t;
}

/* Drops one user; the last one deletes the directory and whatever the compiler left in it.
** Called with the device lock held. */
static void temp_dir_release(DarwinDevice *D, TempDir *t) {
    if (!t || --t->refs > 0) return;
    path_remove_tree(t->path); /* best effort: a leftover file is not worth failing for */
    for (TempDir **pp = &D->dirs; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    D->stats.live_temp_dirs--;
    free(t->path);
    free(t);
}

/* ------------------------------------------------------------------ compile */

/* The emulator's checker under the device's limits: the same programs are refused with the same
** named rule on every device (before the framework sees them, so a Mac user gets the rule
** instead of an opaque compile failure), and the I/O shapes come from it. */
static int preflight(AneLimits limits, const char *mil, const AneBlob *blobs, int n_blobs, AneShape *in, AneShape *out,
                     Err *err) {
    MilCheckOptions co = {0, 0, limits, NULL};
    return mil_check_text(mil, blobs, n_blobs, &co, in, out, err);
}

/* Rows 1-5 and the temp files, inside the caller's autorelease pool. *compiled is set once
** the framework's compile succeeded (its budget slot is then spent). */
static int framework_compile(DarwinDevice *D, AneProgram *p, const char *mil, const AneBlob *blobs, int n_blobs,
                             int *compiled, Err *err) {
    const Api *a = &D->api;
    unsigned qos = D->opt.qos;
    int rc = -1;
    id descriptor = NULL, model = NULL, nserr = NULL;
    char *hex = NULL;
    CFDataRef text = CFDataCreate(kCFAllocatorDefault, (const UInt8 *)mil, (CFIndex)strlen(mil));
    CFDictionaryRef weights = text ? weights_dict(blobs, n_blobs) : NULL;
    if (!text || !weights) {
        err_set(err, "darwin ANE: out of memory passing the MIL text and %d weight blob(s) to the framework", n_blobs);
        goto done;
    }
    descriptor = send_descriptor(a, text, weights);
    if (!descriptor) {
        err_set(err,
                "darwin ANE compile: +[_ANEInMemoryModelDescriptor modelWithMILText:weights:optionsPlist:] returned "
                "nil: the framework refused the MIL text (%zu bytes) or its %d weight blob(s)",
                strlen(mil), n_blobs);
        goto done;
    }
    model = send_model(a, descriptor);
    if (!model) {
        err_set(err, "darwin ANE compile: +[_ANEInMemoryModel inMemoryModelWithDescriptor:] returned nil");
        goto done;
    }
    CFRetain(model);
    hex = cf_string_dup(send_hex_identifier(a, model));
    if (!hex) {
        err_set(err, "darwin ANE compile: -[_ANEInMemoryModel hexStringIdentifier] returned no string (or memory "
                     "ran out)");
        goto done;
    }
    pthread_mutex_lock(&D->lock);
    p->dir = temp_dir_acquire(D, hex, mil, blobs, n_blobs, err);
    pthread_mutex_unlock(&D->lock);
    if (!p->dir) goto done;
    if (!send_compile(a, model, qos, D->empty, &nserr)) {
        fail_ns(err, a, nserr, "darwin ANE compile: -[_ANEInMemoryModel compileWithQoS:options:error:] returned NO");
        goto done;
    }
    *compiled = 1;
    nserr = NULL;
    if (!send_load(a, model, qos, D->empty, &nserr)) {
        Err first = {{0}};
        fail_ns(&first, a, nserr, "first attempt");
        pthread_mutex_lock(&D->lock);
        D->stats.load_retries++;
        pthread_mutex_unlock(&D->lock);
        sleep_us(D->opt.load_retry_us); /* the seed waits "for ANE slot reclamation" (§1.2) */
        nserr = NULL;
        if (!send_load(a, model, qos, D->empty, &nserr)) {
            fail_ns(err, a, nserr,
                    "darwin ANE compile: -[_ANEInMemoryModel loadWithQoS:options:error:] returned NO twice (retried "
                    "after %d ms; %s)",
                    D->opt.load_retry_us / 1000, first.msg);
            goto done;
        }
    }
    p->model = model;
    model = NULL;
    rc = 0;
done:
    if (rc != 0 && p->dir) {
        pthread_mutex_lock(&D->lock);
        temp_dir_release(D, p->dir);
        pthread_mutex_unlock(&D->lock);
        p->dir = NULL;
    }
    cf_release(model);
    free(hex);
    cf_release(weights);
    cf_release(text);
    return rc;
}

static AneProgram *dw_compile(AneDevice *dev, const char *mil_text, const AneBlob *blobs, int n_blobs, Err *err) {
    DarwinDevice *D = (DarwinDevice *)dev;
    double t0 = now_seconds();
    AneProgram *p = NULL;
    AneShape in, out;
    uint64_t count;
    int compiled = 0, rc;
    void *pool;
    if (!mil_text || n_blobs < 0 || (n_blobs > 0 && !blobs)) {
        err_set(err, "darwin ANE compile: no MIL text or a bad blob list (%d blobs)", n_blobs);
        goto fail;
    }
    if (preflight(D->opt.limits, mil_text, blobs, n_blobs, &in, &out, err) != 0) goto fail;
    for (int i = 0; i < n_blobs; i++)
        if (!blob_relpath(blobs[i].path)) {
            err_set(
                err,
                "darwin ANE compile: weight blob %d has path '%s'; expected \"@model_path/\" followed by a relative "
                "path inside the model directory",
                i, blobs[i].path ? blobs[i].path : "(null)");
            goto fail;
        }
    if (!budget_reserve(dev->compile_budget, &count)) {
        err_set(err,
                "ANE compile budget exhausted: %llu compiles in this process (budget %d); restart the process "
                "(docs/ane-facts.md §1.8: the real compiler fails after about %d compiles per process)",
                (unsigned long long)count, dev->compile_budget, ANE_COMPILE_BUDGET_DEFAULT);
        goto fail;
    }
    p = calloc(1, sizeof *p);
    if (p && D->opt.request_cache > 0) p->cache = calloc((size_t)D->opt.request_cache, sizeof *p->cache);
    if (!p || (D->opt.request_cache > 0 && !p->cache)) {
        atomic_fetch_sub(&process_compiles, 1);
        err_set(err, "out of memory allocating a program");
        goto fail;
    }
    p->in = in;
    p->out = out;
    pool = objc_autoreleasePoolPush();
    rc = framework_compile(D, p, mil_text, blobs, n_blobs, &compiled, err);
    objc_autoreleasePoolPop(pool);
    if (rc != 0) {
        if (!compiled) atomic_fetch_sub(&process_compiles, 1); /* only a successful compile is assumed to leak */
        goto fail;
    }
    pthread_mutex_lock(&D->lock);
    p->next = D->programs;
    if (D->programs) D->programs->prev = p;
    D->programs = p;
    D->stats.live_programs++;
    pthread_mutex_unlock(&D->lock);
    dev->counters.compiles++;
    dev->counters.compile_seconds += now_seconds() - t0;
    return p;
fail:
    if (p) free(p->cache);
    free(p);
    dev->counters.compile_failures++;
    dev->counters.compile_seconds += now_seconds() - t0;
    return NULL;
}

/* ------------------------------------------------------------------ evaluate */

static int surface_check(const AneSurface *s, const char *what, size_t need, Err *err) {
    if (!s) return err_set(err, "evaluate: the %s surface is NULL", what);
    if (s->locks_ro || s->locks_rw)
        return err_set(err, "evaluate: the %s surface is still locked by the CPU (%d lock(s)); unlock it first", what,
                       s->locks_ro + s->locks_rw);
    if (s->unbalanced)
        return err_set(err,
                       "evaluate: the %s surface was unlocked %d more time(s) than locked (or with a different "
                       "read_only flag)",
                       what, s->unbalanced);
    if (s->bytes != need)
        return err_set(err, "evaluate: the %s surface has %zu bytes, the program's %s needs exactly %zu", what,
                       s->bytes, what, need);
    return 0;
}

/* Rows 6 and 7: a new request reading `in` and writing `out`, retained (+1). */
static id request_create(DarwinDevice *D, AneSurface *in, AneSurface *out, Err *err) {
    const Api *a = &D->api;
    id win = send_surface_object(a, in->ref), wout = win ? send_surface_object(a, out->ref) : NULL;
    if (!win || !wout) {
        err_set(err, "darwin ANE evaluate: +[_ANEIOSurfaceObject objectWithIOSurface:] returned nil for the %s surface",
                win ? "output" : "input");
        return NULL;
    }
    CFNumberRef zero = cf_int(0);
    const void *vin[1] = {win}, *vout[1] = {wout}, *vidx[1] = {zero};
    CFArrayRef ins = CFArrayCreate(kCFAllocatorDefault, vin, 1, &kCFTypeArrayCallBacks);
    CFArrayRef outs = CFArrayCreate(kCFAllocatorDefault, vout, 1, &kCFTypeArrayCallBacks);
    CFArrayRef idx = zero ? CFArrayCreate(kCFAllocatorDefault, vidx, 1, &kCFTypeArrayCallBacks) : NULL;
    id req = NULL;
    if (ins && outs && idx) {
        req = send_request(a, ins, idx, outs, idx, zero);
        if (req) CFRetain(req);
        else
            err_set(err, "darwin ANE evaluate: +[_ANERequest requestWithInputs:inputIndices:outputs:outputIndices:"
                         "weightsBuffer:perfStats:procedureIndex:] returned nil");
    } else {
        err_set(err, "darwin ANE evaluate: out of memory building a request");
    }
    cf_release(idx);
    cf_release(outs);
    cf_release(ins);
    cf_release(zero);
    return req;
}

/* The request for (in, out), from the program's cache or new; retained for the caller. */
static id request_get(DarwinDevice *D, AneProgram *p, AneSurface *in, AneSurface *out, Err *err) {
    pthread_mutex_lock(&D->lock);
    id req = NULL;
    for (int i = 0; i < p->n_cache && !req; i++)
        if (p->cache[i].in_id == in->id && p->cache[i].out_id == out->id) req = p->cache[i].request;
    if (req) {
        CFRetain(req);
        D->stats.request_hits++;
    } else {
        D->stats.request_misses++;
        req = request_create(D, in, out, err);
        if (req && D->opt.request_cache > 0) {
            int slot = p->n_cache;
            if (slot == D->opt.request_cache) { /* full: replace the oldest */
                slot = p->next_evict;
                p->next_evict = (p->next_evict + 1) % D->opt.request_cache;
                CFRelease(p->cache[slot].request);
            } else {
                p->n_cache++;
            }
            p->cache[slot] = (CachedRequest){in->id, out->id, req};
            CFRetain(req);
        }
    }
    pthread_mutex_unlock(&D->lock);
    return req;
}

static int dw_evaluate(AneDevice *dev, AneProgram *p, AneSurface *in, AneSurface *out, Err *err) {
    DarwinDevice *D = (DarwinDevice *)dev;
    if (!p) return err_set(err, "evaluate: NULL program");
    size_t in_bytes = (size_t)p->in.channels * (size_t)p->in.spatial * 2;
    size_t out_bytes = (size_t)p->out.channels * (size_t)p->out.spatial * 2;
    if (surface_check(in, "input", in_bytes, err) || surface_check(out, "output", out_bytes, err)) return -1;
    double t0 = now_seconds();
    int rc = -1;
    void *pool = objc_autoreleasePoolPush();
    id req = request_get(D, p, in, out, err);
    if (req) {
        id nserr = NULL;
        rc = send_evaluate(&D->api, p->model, D->opt.qos, D->empty, req, &nserr)
                 ? 0
                 : fail_ns(err, &D->api, nserr,
                           "darwin ANE evaluate: -[_ANEInMemoryModel evaluateWithQoS:options:request:error:] returned NO");
        CFRelease(req);
    }
    objc_autoreleasePoolPop(pool);
    if (rc != 0) return -1;
    dev->counters.evaluations++;
    dev->counters.bytes_in += in_bytes;
    dev->counters.bytes_out += out_bytes;
    dev->counters.eval_seconds += now_seconds() - t0;
    return 0;
}

/* ------------------------------------------------------------------ release */

static void dw_release(AneDevice *dev, AneProgram *p) {
    DarwinDevice *D = (DarwinDevice *)dev;
    if (!p) return;
    void *pool = objc_autoreleasePoolPush();
    pthread_mutex_lock(&D->lock);
    for (int i = 0; i < p->n_cache; i++)
        CFRelease(p->cache[i].request);
    if (p->prev) p->prev->next = p->next;
    else D->programs = p->next;
    if (p->next) p->next->prev = p->prev;
    D->stats.live_programs--;
    pthread_mutex_unlock(&D->lock);
    id nserr = NULL;
    if (!send_unload(&D->api, p->model, D->opt.qos, &nserr)) {
        Err e = {{0}};
        fail_ns(&e, &D->api, nserr, "-[_ANEInMemoryModel unloadWithQoS:error:] returned NO");
        pthread_mutex_lock(&D->lock);
        D->stats.unload_failures++;
        snprintf(D->stats.last_unload_error, sizeof D->stats.last_unload_error, "%s", e.msg);
        pthread_mutex_unlock(&D->lock);
    }
    CFRelease(p->model);
    pthread_mutex_lock(&D->lock);
    temp_dir_release(D, p->dir);
    pthread_mutex_unlock(&D->lock);
    objc_autoreleasePoolPop(pool);
    free(p->cache);
    free(p);
}

static void dw_program_io(const AneProgram *p, AneShape *in, AneShape *out) {
    if (in) *in = p->in;
    if (out) *out = p->out;
}

/* ------------------------------------------------------------------ surfaces (§1.6) */

static AneSurface *dw_surface_create(AneDevice *dev, size_t bytes, Err *err) {
    (void)dev;
    if (bytes == 0 || bytes > ((size_t)1 << 40)) {
        err_set(err, "surface_create: %zu bytes is not a valid surface size", bytes);
        return NULL;
    }
    AneSurface *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(err, "out of memory allocating a surface");
        return NULL;
    }
    void *pool = objc_autoreleasePoolPush();
    CFDictionaryRef props = surface_properties(bytes);
    s->ref = props ? IOSurfaceCreate(props) : NULL;
    objc_autoreleasePoolPop(pool);
    if (!s->ref) {
        if (props)
            err_set(err,
                    "darwin ANE: IOSurfaceCreate returned NULL for a %zu-byte surface (Width %zu, Height 1, "
                    "BytesPerElement 1, BytesPerRow %zu, AllocSize %zu, PixelFormat 0)",
                    bytes, bytes, bytes, bytes);
        else err_set(err, "darwin ANE: out of memory building the properties of a %zu-byte IOSurface", bytes);
        cf_release(props);
        free(s);
        return NULL;
    }
    CFRelease(props);
    /* Start zeroed, as the emulator's surfaces do. */
    if (IOSurfaceLock(s->ref, 0, NULL) != 0) {
        err_set(err, "darwin ANE: IOSurfaceLock failed on a new %zu-byte surface", bytes);
        CFRelease(s->ref);
        free(s);
        return NULL;
    }
    memset(IOSurfaceGetBaseAddress(s->ref), 0, bytes);
    IOSurfaceUnlock(s->ref, 0, NULL);
    s->bytes = bytes;
    s->id = atomic_fetch_add(&surface_serials, 1) + 1;
    return s;
}

static void dw_surface_free(AneDevice *dev, AneSurface *s) {
    DarwinDevice *D = (DarwinDevice *)dev;
    if (!s) return;
    /* Cached requests hold the surface: drop them, or they would keep it alive. */
    void *pool = objc_autoreleasePoolPush();
    pthread_mutex_lock(&D->lock);
    for (AneProgram *p = D->programs; p; p = p->next) {
        for (int i = 0; i < p->n_cache;) {
            if (p->cache[i].in_id == s->id || p->cache[i].out_id == s->id) {
                CFRelease(p->cache[i].request);
                p->cache[i] = p->cache[--p->n_cache];
                p->next_evict = 0;
            } else {
                i++;
            }
        }
    }
    pthread_mutex_unlock(&D->lock);
    CFRelease(s->ref);
    objc_autoreleasePoolPop(pool);
    free(s);
}

static void *dw_surface_lock(AneDevice *dev, AneSurface *s, int read_only) {
    (void)dev;
    if (!s || IOSurfaceLock(s->ref, read_only ? kIOSurfaceLockReadOnly : 0, NULL) != 0) return NULL;
    if (read_only) s->locks_ro++;
    else s->locks_rw++;
    return IOSurfaceGetBaseAddress(s->ref);
}

static void dw_surface_unlock(AneDevice *dev, AneSurface *s, int read_only) {
    (void)dev;
    if (!s) return;
    int *n = read_only ? &s->locks_ro : &s->locks_rw;
    if (*n > 0) {
        (*n)--;
        IOSurfaceUnlock(s->ref, read_only ? kIOSurfaceLockReadOnly : 0, NULL);
    } else {
        s->unbalanced++; /* never passed on: an unbalanced IOSurfaceUnlock is the OS's problem, not ours */
    }
}

static size_t dw_surface_bytes(const AneSurface *s) { return s ? s->bytes : 0; }

/* ------------------------------------------------------------------ create, destroy, probe */

static void dw_destroy(AneDevice *dev) {
    DarwinDevice *D = (DarwinDevice *)dev;
    if (!D) return;
    while (D->programs)
        dw_release(dev, D->programs);
    cf_release(D->empty);
    pthread_mutex_destroy(&D->lock);
    free(D);
}

AneDevice *ane_darwin_create(const AneDarwinOptions *opt, Err *err) {
    AneDarwinOptions o;
    ane_darwin_default_options(&o);
    if (opt) o = *opt;
    if (!o.framework_path) o.framework_path = ANE_DARWIN_FRAMEWORK_PATH;
    if (o.compile_budget < 1) {
        err_set(err, "ane_darwin_create: compile_budget must be >= 1, found %d", o.compile_budget);
        return NULL;
    }
    if (o.limits != ANE_LIMITS_STRICT && o.limits != ANE_LIMITS_PROBED) {
        err_set(err, "ane_darwin_create: limits must be ANE_LIMITS_STRICT or ANE_LIMITS_PROBED, found %d",
                (int)o.limits);
        return NULL;
    }
    if (o.qos > 63) { /* docs/ane-facts.md §1.3: 0..63 all work; 21 is what the seed uses */
        err_set(err, "ane_darwin_create: qos must be in 0..63, found %u", o.qos);
        return NULL;
    }
    if (o.load_retry_us < 0 || o.load_retry_us > 10000000 || o.request_cache < 0 || o.request_cache > 4096) {
        err_set(err,
                "ane_darwin_create: load_retry_us must be in 0..10000000 and request_cache in 0..4096, found "
                "%d and %d",
                o.load_retry_us, o.request_cache);
        return NULL;
    }
    DarwinDevice *D = calloc(1, sizeof *D);
    if (!D) {
        err_set(err, "out of memory creating the darwin ANE device");
        return NULL;
    }
    snprintf(D->framework_path, sizeof D->framework_path, "%s", o.framework_path);
    o.framework_path = D->framework_path;
    D->opt = o;
    void *pool = objc_autoreleasePoolPush();
    int rc = api_resolve(&D->api, D->framework_path, NULL, err);
    if (rc == 0) {
        D->empty = CFDictionaryCreate(kCFAllocatorDefault, NULL, NULL, 0, &kCFTypeDictionaryKeyCallBacks,
                                      &kCFTypeDictionaryValueCallBacks);
        if (!D->empty) rc = err_set(err, "out of memory creating the darwin ANE device");
    }
    objc_autoreleasePoolPop(pool);
    if (rc != 0 || pthread_mutex_init(&D->lock, NULL) != 0) {
        if (rc == 0) err_set(err, "ane_darwin_create: cannot initialise a mutex");
        cf_release(D->empty);
        free(D);
        return NULL;
    }
    AneDevice *d = &D->dev;
    d->name = "darwin";
    d->compile = dw_compile;
    d->evaluate = dw_evaluate;
    d->release = dw_release;
    d->program_io = dw_program_io;
    d->surface_create = dw_surface_create;
    d->surface_free = dw_surface_free;
    d->surface_lock = dw_surface_lock;
    d->surface_unlock = dw_surface_unlock;
    d->surface_bytes = dw_surface_bytes;
    d->compile_budget = o.compile_budget;
    d->destroy = dw_destroy;
    return d;
}

int ane_darwin_stats(const AneDevice *dev, AneDarwinStats *st) {
    if (!dev || dev->destroy != dw_destroy) return -1;
    DarwinDevice *D = (DarwinDevice *)dev;
    pthread_mutex_lock(&D->lock);
    *st = D->stats;
    pthread_mutex_unlock(&D->lock);
    return 0;
}

int ane_darwin_probe(const char *framework_path, AneDarwinProbe *probe) {
    memset(probe, 0, sizeof *probe);
    probe->framework_path = framework_path ? framework_path : ANE_DARWIN_FRAMEWORK_PATH;
    Api a;
    Err err = {{0}};
    void *pool = objc_autoreleasePoolPush();
    int rc = api_resolve(&a, probe->framework_path, probe, &err);
    if (probe->framework_loaded && a.cls[C_DEVICE_INFO] && a.sel_found[S_ANE_SUBTYPE]) {
        id subtype = send_ane_subtype(&a);
        char *s = subtype ? cf_string_dup(send_description(&a, subtype)) : NULL;
        if (s) snprintf(probe->ane_subtype, sizeof probe->ane_subtype, "%s", s);
        free(s);
    }
    objc_autoreleasePoolPop(pool);
    if (rc != 0 && probe->framework_loaded)
        snprintf(probe->framework_error, sizeof probe->framework_error, "%s", err.msg);
    return rc;
}

#else /* ================================================================== no framework here */

int ane_darwin_available(void) { return 0; }

AneDevice *ane_darwin_create(const AneDarwinOptions *opt, Err *err) {
    (void)opt;
    err_set(err, "the darwin ANE device needs macOS (the private AppleNeuralEngine framework); this build is not "
                 "for macOS: use the emulated device (emu)");
    return NULL;
}

uint64_t ane_darwin_process_compiles(void) { return 0; }

int ane_darwin_stats(const AneDevice *dev, AneDarwinStats *st) {
    (void)dev, (void)st;
    return -1;
}

int ane_darwin_probe(const char *framework_path, AneDarwinProbe *probe) {
    memset(probe, 0, sizeof *probe);
    probe->framework_path = framework_path ? framework_path : ANE_DARWIN_FRAMEWORK_PATH;
    snprintf(probe->framework_error, sizeof probe->framework_error,
             "not available on this platform: the private framework exists only on macOS");
    return -1;
}

#endif
