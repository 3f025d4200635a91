/*
** fake_internal.h — the test double's object model, shared by its files (never by the bridge).
**
** Every object the fake hands out — CF objects, Objective-C instances, IOSurfaces — is a
** struct objc_object with a class pointer, a kind, a reference count and a payload. Objects
** are never freed before fake_ane_reset(): a released object is marked dead and kept, so a
** message or CFRelease through a stale pointer is reported instead of being undefined.
** Every pointer the bridge passes in is looked up in a registry before it is touched.
*/
#ifndef ANETRAIN_FAKE_INTERNAL_H
#define ANETRAIN_FAKE_INTERNAL_H

#define FAKE_ANE_IMPLEMENTATION /* before fake_framework.h: no allocation redirect in here */

#include <stddef.h>
#include <stdint.h>

#include "backend/ane/device.h"
#include "backend/ane/objc_shim.h"
#include "fake_control.h"

typedef enum { FK_DATA = 1, FK_STRING, FK_NUMBER, FK_ARRAY, FK_DICT, FK_SURFACE, FK_INSTANCE } FakeKind;

/* The call shapes of ANE_MSG_SHAPES (objc_shim.h), as an enum. */
typedef enum {
#define FAKE_SHAPE_ENUM(name, ret, params, args) FAKE_SHAPE_##name,
    ANE_MSG_SHAPES(FAKE_SHAPE_ENUM)
#undef FAKE_SHAPE_ENUM
        FAKE_SHAPE_COUNT
} FakeShape;

struct objc_method {
    const char *selector;
    int class_method; /* 1: +selector */
    FakeShape shape;
    IMP imp;
};

struct objc_class {
    const char *name;
    int framework; /* 1: exists only after dlopen of the framework */
    const struct objc_method *methods;
    int n_methods;
    void (*dealloc)(struct objc_object *self); /* instance payload cleanup, or NULL */
};

struct objc_selector {
    char *name;
    struct objc_selector *next;
};

enum { FAKE_MAX_KIDS = 6, FAKE_MAX_LOCKS = 8 };

struct objc_object {
    Class isa;
    FakeKind kind;
    int refs;
    int dead;
    int immortal;    /* constants such as kIOSurfaceWidth */
    uint64_t serial; /* creation order, for reports */
    /* FK_DATA, FK_STRING (NUL-terminated): bytes */
    unsigned char *bytes;
    size_t len;
    /* FK_NUMBER */
    int64_t num;
    /* FK_ARRAY: items; FK_DICT: keys and items (values) */
    struct objc_object **keys, **items;
    int n, cap;
    /* FK_SURFACE */
    AneSurface *emu_surface;
    void *base;
    int lock_flags[FAKE_MAX_LOCKS], n_locks;
    /* FK_INSTANCE: retained children (released at dealloc) and class state */
    struct objc_object *kids[FAKE_MAX_KIDS];
    int n_kids;
    void *state;
};

typedef struct objc_object FakeObj;

/* fake_objc.c */
void fake_init(void);
FakeObj *fake_new(Class isa, FakeKind kind);
FakeObj *fake_autorelease(FakeObj *o);
void fake_retain(FakeObj *o);
void fake_release(FakeObj *o);
/* The live object p points to, of `kind` (0: any) and class `cls` (NULL: any), or NULL
** after recording a violation that names `what`. NULL p is returned as NULL without one. */
FakeObj *fake_check(const void *p, FakeKind kind, Class cls, const char *what);
int fake_is_class(const void *p);
void fake_violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fake_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *fake_kind_name(const FakeObj *o);
void fake_register_static(FakeObj *o);
/* Class table (fake_ane_classes.c) */
extern Class const fake_classes[];
extern const int fake_n_classes;
extern int fake_framework_loaded;
extern struct objc_class fake_class_NSString;
extern struct objc_class fake_class_NSData;
extern struct objc_class fake_class_NSNumber;
extern struct objc_class fake_class_NSArray;
extern struct objc_class fake_class_NSDictionary;
extern struct objc_class fake_class_IOSurface;

/* 1 when this CF call should fail (fake_ane_faults.cf_fail_at). */
int fake_cf_fault(void);

/* fake_cf.c */
FakeObj *fake_string_new(const char *s); /* +1 */
int fake_string_is(const FakeObj *o, const char *s);
/* The value for a CFString key with contents `key` in dictionary d, or NULL. */
FakeObj *fake_dict_get(const FakeObj *d, const char *key);

/* fake_ane_classes.c */
AneDevice *fake_emu(void);
void fake_classes_reset(void);
void fake_rmtree(const char *path);

/* fake_iosurface.c */
void fake_iosurface_statics(void); /* registers the kIOSurface* constants */

#endif
