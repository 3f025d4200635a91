/*
** fake_objc.c — the test double's Objective-C runtime: objects and their registry, reference
** counts, autorelease pools, classes and selectors, and the typed message sends of
** objc_shim.h as real C functions that look the method up, check it was sent through its
** fact-sheet shape, record the call and invoke it. Also the violation list and call log.
**
** Objects are never freed before fake_ane_reset() (see fake_internal.h), so every check
** here reads memory the fake owns.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_internal.h"

/* ------------------------------------------------------------------ violations, log */

enum { MAX_VIOLATIONS = 256, MAX_LOG = 200000 };
static char *violations[MAX_VIOLATIONS];
static int n_violations;
static char **log_lines;
static int n_log, cap_log;

void fake_violation(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n_violations < MAX_VIOLATIONS) violations[n_violations] = strdup(buf);
    n_violations++;
}

void fake_log(const char *fmt, ...) {
    if (n_log >= MAX_LOG) return;
    if (n_log == cap_log) {
        int cap = cap_log ? 2 * cap_log : 256;
        char **l = realloc(log_lines, (size_t)cap * sizeof *l);
        if (!l) return;
        log_lines = l;
        cap_log = cap;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_lines[n_log++] = strdup(buf);
}

int fake_ane_violations(void) { return n_violations; }
const char *fake_ane_violation(int i) {
    return i >= 0 && i < n_violations && i < MAX_VIOLATIONS ? violations[i] : "(more violations not kept)";
}
int fake_ane_log_count(void) { return n_log; }
const char *fake_ane_log(int i) { return i >= 0 && i < n_log ? log_lines[i] : ""; }
void fake_ane_log_clear(void) {
    for (int i = 0; i < n_log; i++)
        free(log_lines[i]);
    n_log = 0;
}

/* ------------------------------------------------------------------ object registry */

static FakeObj **all; /* every object made since the last reset, dead ones included */
static int n_all, cap_all;
static const void **hset; /* open-addressing set of valid object addresses (statics too) */
static size_t hcap, hcount;
static uint64_t serials;
static int initialized;

static size_t hslot(const void *p) {
    uintptr_t x = (uintptr_t)p;
    x ^= x >> 17;
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 7);
}

static int hset_has(const void *p) {
    if (!hcap) return 0;
    for (size_t i = hslot(p) & (hcap - 1);; i = (i + 1) & (hcap - 1)) {
        if (!hset[i]) return 0;
        if (hset[i] == p) return 1;
    }
}

static void hset_add(const void *p) {
    if (2 * (hcount + 1) > hcap) {
        size_t cap = hcap ? 2 * hcap : 1024;
        const void **old = hset;
        size_t old_cap = hcap;
        hset = calloc(cap, sizeof *hset);
        if (!hset) abort();
        hcap = cap;
        hcount = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i]) hset_add(old[i]);
        free(old);
    }
    size_t i = hslot(p) & (hcap - 1);
    while (hset[i])
        i = (i + 1) & (hcap - 1);
    hset[i] = p;
    hcount++;
}

void fake_register_static(FakeObj *o) { hset_add(o); }

void fake_iosurface_statics(void);

void fake_init(void) {
    if (initialized) return;
    initialized = 1;
    fake_iosurface_statics();
}

FakeObj *fake_new(Class isa, FakeKind kind) {
    fake_init();
    FakeObj *o = calloc(1, sizeof *o);
    if (!o) abort();
    if (n_all == cap_all) {
        int cap = cap_all ? 2 * cap_all : 1024;
        FakeObj **a = realloc(all, (size_t)cap * sizeof *a);
        if (!a) abort();
        all = a;
        cap_all = cap;
    }
    all[n_all++] = o;
    hset_add(o);
    o->isa = isa;
    o->kind = kind;
    o->refs = 1;
    o->serial = ++serials;
    return o;
}

const char *fake_kind_name(const FakeObj *o) { return o->isa ? o->isa->name : "?"; }

int fake_is_class(const void *p) {
    for (int i = 0; i < fake_n_classes; i++)
        if ((const void *)fake_classes[i] == p) return 1;
    return 0;
}

static const char *kind_name(FakeKind k) {
    switch (k) {
    case FK_DATA:
        return "NSData";
    case FK_STRING:
        return "NSString";
    case FK_NUMBER:
        return "NSNumber";
    case FK_ARRAY:
        return "NSArray";
    case FK_DICT:
        return "NSDictionary";
    case FK_SURFACE:
        return "IOSurface";
    case FK_INSTANCE:
        return "an Objective-C object";
    }
    return "?";
}

FakeObj *fake_check(const void *p, FakeKind kind, Class cls, const char *what) {
    fake_init();
    if (!p) return NULL;
    if (fake_is_class(p)) {
        fake_violation("%s: expected %s, found the class %s", what, cls ? cls->name : kind_name(kind),
                       ((Class)p)->name);
        return NULL;
    }
    if (!hset_has(p)) {
        fake_violation("%s: %p is not an object made by the framework, CoreFoundation or IOSurface", what, p);
        return NULL;
    }
    FakeObj *o = (FakeObj *)p;
    if (o->dead) {
        fake_violation("%s: %s#%llu was already deallocated (used after its last release)", what, fake_kind_name(o),
                       (unsigned long long)o->serial);
        return NULL;
    }
    if ((kind && o->kind != kind) || (cls && o->isa != cls)) {
        fake_violation("%s: expected %s, found %s#%llu", what, cls ? cls->name : kind_name(kind), fake_kind_name(o),
                       (unsigned long long)o->serial);
        return NULL;
    }
    return o;
}

/* The payload only (children are released by dealloc, or freed on their own by reset). */
static void payload_free(FakeObj *o) {
    if (o->kind == FK_INSTANCE && o->isa && o->isa->dealloc) o->isa->dealloc(o);
    if (o->kind == FK_SURFACE && o->emu_surface) {
        AneDevice *e = fake_emu();
        e->surface_free(e, o->emu_surface);
        o->emu_surface = NULL;
    }
    free(o->bytes);
    free(o->keys);
    free(o->items);
    o->bytes = NULL;
    o->keys = o->items = NULL;
    o->state = NULL;
}

void fake_retain(FakeObj *o) {
    if (o->immortal) return;
    o->refs++;
}

void fake_release(FakeObj *o) {
    if (o->immortal) return;
    if (o->dead || o->refs <= 0) {
        fake_violation("release of %s#%llu, already deallocated (over-release)", fake_kind_name(o),
                       (unsigned long long)o->serial);
        return;
    }
    if (--o->refs > 0) return;
    o->dead = 1;
    if (o->kind == FK_SURFACE && o->n_locks > 0)
        fake_violation("IOSurface#%llu deallocated while locked %d time(s)", (unsigned long long)o->serial, o->n_locks);
    for (int i = 0; i < o->n; i++) {
        if (o->keys) fake_release(o->keys[i]);
        if (o->items) fake_release(o->items[i]);
    }
    for (int i = 0; i < o->n_kids; i++)
        fake_release(o->kids[i]);
    payload_free(o);
}

int fake_ane_live_objects(void) {
    int n = 0;
    for (int i = 0; i < n_all; i++)
        n += !all[i]->dead;
    return n;
}

const char *fake_ane_live_report(void) {
    static char buf[4096];
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n_all && len + 80 < sizeof buf; i++) {
        const FakeObj *o = all[i];
        if (o->dead) continue;
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s#%llu refs %d", len ? ", " : "", fake_kind_name(o),
                                (unsigned long long)o->serial, o->refs);
    }
    return buf;
}

/* ------------------------------------------------------------------ autorelease pools */

typedef struct {
    FakeObj **objs;
    int n, cap;
} Pool;

enum { MAX_POOLS = 64, POOL_TOKEN = 0x7000 };
static Pool pools[MAX_POOLS];
static int pool_depth;

void *objc_autoreleasePoolPush(void) {
    fake_init();
    if (pool_depth == MAX_POOLS) {
        fake_violation("more than %d nested autorelease pools", MAX_POOLS);
        return (void *)(uintptr_t)(POOL_TOKEN + pool_depth);
    }
    pools[pool_depth].n = 0;
    pool_depth++;
    return (void *)(uintptr_t)(POOL_TOKEN + pool_depth);
}

void objc_autoreleasePoolPop(void *token) {
    fake_init();
    int d = (int)((uintptr_t)token - POOL_TOKEN);
    if (d < 1 || d > pool_depth) {
        fake_violation("objc_autoreleasePoolPop(%p): not a pool in place (depth %d)", token, pool_depth);
        return;
    }
    if (d != pool_depth) fake_violation("autorelease pools popped out of order (%d while %d is on top)", d, pool_depth);
    while (pool_depth >= d) {
        Pool *p = &pools[pool_depth - 1];
        for (int i = 0; i < p->n; i++)
            fake_release(p->objs[i]);
        p->n = 0;
        pool_depth--;
    }
}

FakeObj *fake_autorelease(FakeObj *o) {
    if (pool_depth == 0) {
        fake_violation("%s#%llu autoreleased with no pool in place (it leaks on macOS)", fake_kind_name(o),
                       (unsigned long long)o->serial);
        return o;
    }
    Pool *p = &pools[pool_depth - 1];
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        FakeObj **a = realloc(p->objs, (size_t)cap * sizeof *a);
        if (!a) abort();
        p->objs = a;
        p->cap = cap;
    }
    p->objs[p->n++] = o;
    return o;
}

int fake_ane_pool_depth(void) { return pool_depth; }

/* ------------------------------------------------------------------ classes, selectors */

static struct objc_selector *selectors; /* interned; kept for the life of the process */

SEL sel_registerName(const char *str) {
    fake_init();
    for (struct objc_selector *s = selectors; s; s = s->next)
        if (strcmp(s->name, str) == 0) return s;
    struct objc_selector *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(str))) abort();
    s->next = selectors;
    selectors = s;
    return s;
}

const char *sel_getName(SEL sel) { return sel ? sel->name : "<null selector>"; }

static int sel_known(SEL sel) {
    for (struct objc_selector *s = selectors; s; s = s->next)
        if (s == sel) return 1;
    return 0;
}

static int class_visible(Class cls) {
    if (!cls) return 0;
    if (cls->framework && !fake_framework_loaded) return 0;
    if (fake_ane_faults.missing_class && strcmp(fake_ane_faults.missing_class, cls->name) == 0) return 0;
    return 1;
}

Class objc_getClass(const char *name) {
    fake_init();
    for (int i = 0; i < fake_n_classes; i++)
        if (strcmp(fake_classes[i]->name, name) == 0) return class_visible(fake_classes[i]) ? fake_classes[i] : NULL;
    return NULL;
}

static const struct objc_method *find_method(Class cls, const char *sel, int class_method) {
    if (fake_ane_faults.missing_selector && strcmp(fake_ane_faults.missing_selector, sel) == 0) return NULL;
    for (int i = 0; i < cls->n_methods; i++)
        if (strcmp(cls->methods[i].selector, sel) == 0 && cls->methods[i].class_method == class_method)
            return &cls->methods[i];
    return NULL;
}

static Method class_method_lookup(Class cls, SEL name, int class_method, const char *fn) {
    fake_init();
    if (!fake_is_class(cls) || !class_visible(cls)) {
        fake_violation("%s: %p is not a class the runtime knows", fn, (void *)cls);
        return NULL;
    }
    if (!sel_known(name)) {
        fake_violation("%s: not a selector from sel_registerName", fn);
        return NULL;
    }
    return (Method)find_method(cls, name->name, class_method);
}

Method class_getClassMethod(Class cls, SEL name) { return class_method_lookup(cls, name, 1, "class_getClassMethod"); }
Method class_getInstanceMethod(Class cls, SEL name) {
    return class_method_lookup(cls, name, 0, "class_getInstanceMethod");
}

/* ------------------------------------------------------------------ the typed sends */

static const struct {
    const char *name, *ret, *params;
} shapes[FAKE_SHAPE_COUNT] = {
#define FAKE_SHAPE_INFO(name, ret, params, args) {#name, #ret, #params},
    ANE_MSG_SHAPES(FAKE_SHAPE_INFO)
#undef FAKE_SHAPE_INFO
};

/* Arguments after self and _cmd: the parameter list's commas minus one. */
static int shape_arity(FakeShape s) {
    int commas = 0;
    for (const char *c = shapes[s].params; *c; c++)
        commas += *c == ',';
    return commas - 1;
}

static int colons(const char *sel) {
    int n = 0;
    for (; *sel; sel++)
        n += *sel == ':';
    return n;
}

/* Every method table entry's selector takes as many arguments as its shape (checked once). */
static void check_tables(void) {
    static int done;
    if (done) return;
    done = 1;
    for (int i = 0; i < fake_n_classes; i++)
        for (int j = 0; j < fake_classes[i]->n_methods; j++) {
            const struct objc_method *m = &fake_classes[i]->methods[j];
            if (colons(m->selector) != shape_arity(m->shape))
                fake_violation("fake's own table: %s %s has %d arguments, its shape %s has %d", fake_classes[i]->name,
                               m->selector, colons(m->selector), shapes[m->shape].name, shape_arity(m->shape));
        }
}

static const struct objc_method *dispatch(id self, SEL op, FakeShape shape) {
    fake_init();
    check_tables();
    if (!op || !sel_known(op)) {
        fake_violation("%s: the selector was not made by sel_registerName", shapes[shape].name);
        return NULL;
    }
    if (!self) {
        fake_violation("[nil %s]: message to nil (macOS silently returns nil/NO)", op->name);
        return NULL;
    }
    int is_class = fake_is_class(self);
    Class cls;
    if (is_class) {
        cls = (Class)(void *)self;
        if (!class_visible(cls)) {
            fake_violation("+[%s %s]: the class is not loaded", cls->name, op->name);
            return NULL;
        }
    } else {
        FakeObj *o = fake_check(self, 0, NULL, op->name);
        if (!o) return NULL;
        cls = o->isa;
    }
    fake_log("%c[%s %s]", is_class ? '+' : '-', cls->name, op->name);
    if (pool_depth == 0) /* anything the framework autoreleases inside would leak */
        fake_violation("%c[%s %s] sent with no autorelease pool in place", is_class ? '+' : '-', cls->name, op->name);
    const struct objc_method *m = find_method(cls, op->name, is_class);
    if (!m) {
        fake_violation("%c[%s %s]: unrecognized selector (macOS raises NSInvalidArgumentException)",
                       is_class ? '+' : '-', cls->name, op->name);
        return NULL;
    }
    if (m->shape != shape || colons(op->name) != shape_arity(shape)) {
        fake_violation("%c[%s %s] sent as %s %s; its prototype is %s %s", is_class ? '+' : '-', cls->name, op->name,
                       shapes[shape].ret, shapes[shape].params, shapes[m->shape].ret, shapes[m->shape].params);
        return NULL;
    }
    return m;
}

#define FAKE_SEND_DEFINE(name, ret, params, args)                                                                      \
    ret name params {                                                                                                  \
        const struct objc_method *m = dispatch(self, op, FAKE_SHAPE_##name);                                           \
        if (!m) return (ret)0;                                                                                         \
        return ((ret(*) params)m->imp)args;                                                                            \
    }
ANE_MSG_SHAPES(FAKE_SEND_DEFINE)
#undef FAKE_SEND_DEFINE

/* ------------------------------------------------------------------ fault countdowns */

static int countdown(int *n) {
    if (*n <= 0 || --*n > 0) return 0;
    fake_ane_faults.fired = 1;
    return 1;
}

int fake_cf_fault(void) { return countdown(&fake_ane_faults.cf_fail_at); }

void *fake_malloc(size_t size) { return countdown(&fake_ane_faults.alloc_fail_at) ? NULL : malloc(size); }
void *fake_calloc(size_t count, size_t size) {
    return countdown(&fake_ane_faults.alloc_fail_at) ? NULL : calloc(count, size);
}

/* ------------------------------------------------------------------ reset */

void fake_ane_reset(void) {
    while (pool_depth > 0) { /* drop pools without releasing: everything is freed below */
        pools[pool_depth - 1].n = 0;
        pool_depth--;
    }
    for (int i = 0; i < n_all; i++)
        if (!all[i]->dead) payload_free(all[i]);
    for (int i = 0; i < n_all; i++)
        free(all[i]);
    n_all = 0;
    free(all);
    all = NULL;
    cap_all = 0;
    for (int i = 0; i < MAX_POOLS; i++) {
        free(pools[i].objs);
        pools[i] = (Pool){0};
    }
    free(hset);
    hset = NULL;
    hcap = hcount = 0;
    fake_classes_reset();
    fake_ane_log_clear();
    free(log_lines);
    log_lines = NULL;
    cap_log = 0;
    for (int i = 0; i < n_violations && i < MAX_VIOLATIONS; i++)
        free(violations[i]);
    n_violations = 0;
    memset(&fake_ane_faults, 0, sizeof fake_ane_faults);
    initialized = 0;
}
