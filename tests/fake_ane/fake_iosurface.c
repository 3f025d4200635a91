/*
** fake_iosurface.c — the test double's IOSurface: each IOSurfaceRef is a fake object owning
** one emulator surface (fake_ane_emulator()), so the fake framework's evaluate runs the
** emulator directly on the memory the bridge wrote. Checks the docs/ane-facts.md §1.6 creation properties
** (exactly Width = AllocSize = BytesPerRow = bytes, Height 1, BytesPerElement 1, PixelFormat
** 0), lock/unlock pairing with equal options, and that the base address is read under a lock.
*/
#include <stdlib.h>
#include <string.h>

#include "fake_internal.h"

#define KEY(var, text)                                                                                                 \
    static FakeObj var = {.isa = &fake_class_NSString,                                                                 \
                          .kind = FK_STRING,                                                                           \
                          .refs = 1,                                                                                   \
                          .immortal = 1,                                                                               \
                          .bytes = (unsigned char *)text,                                                              \
                          .len = sizeof text - 1};
KEY(key_width, "IOSurfaceWidth")
KEY(key_height, "IOSurfaceHeight")
KEY(key_bpe, "IOSurfaceBytesPerElement")
KEY(key_bpr, "IOSurfaceBytesPerRow")
KEY(key_alloc, "IOSurfaceAllocSize")
KEY(key_pixel, "IOSurfacePixelFormat")
#undef KEY

const CFStringRef kIOSurfaceWidth = (CFStringRef)(void *)&key_width;
const CFStringRef kIOSurfaceHeight = (CFStringRef)(void *)&key_height;
const CFStringRef kIOSurfaceBytesPerElement = (CFStringRef)(void *)&key_bpe;
const CFStringRef kIOSurfaceBytesPerRow = (CFStringRef)(void *)&key_bpr;
const CFStringRef kIOSurfaceAllocSize = (CFStringRef)(void *)&key_alloc;
const CFStringRef kIOSurfacePixelFormat = (CFStringRef)(void *)&key_pixel;

enum { kIOReturnError = (int)0xE00002BC, kIOReturnBadArgument = (int)0xE00002C2 };

void fake_iosurface_statics(void) {
    FakeObj *keys[] = {&key_width, &key_height, &key_bpe, &key_bpr, &key_alloc, &key_pixel};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        fake_register_static(keys[i]);
}

static int take(int *fault) {
    if (*fault <= 0) return 0;
    (*fault)--;
    return 1;
}

/* The integer value of property `key`, or -1 (with a violation) if absent or not a number. */
static int64_t property(const FakeObj *d, const char *key) {
    FakeObj *v = fake_dict_get(d, key);
    if (!v || v->kind != FK_NUMBER) {
        fake_violation("IOSurfaceCreate: property %s is %s", key, v ? fake_kind_name(v) : "missing");
        return -1;
    }
    return v->num;
}

IOSurfaceRef IOSurfaceCreate(CFDictionaryRef properties) {
    fake_init();
    fake_log("IOSurfaceCreate");
    FakeObj *d = fake_check(properties, FK_DICT, NULL, "IOSurfaceCreate properties");
    if (!d) {
        if (!properties) fake_violation("IOSurfaceCreate(NULL)");
        return NULL;
    }
    int64_t w = property(d, "IOSurfaceWidth"), h = property(d, "IOSurfaceHeight"),
            bpe = property(d, "IOSurfaceBytesPerElement"), bpr = property(d, "IOSurfaceBytesPerRow"),
            alloc = property(d, "IOSurfaceAllocSize"), pf = property(d, "IOSurfacePixelFormat");
    if (d->n != 6) fake_violation("IOSurfaceCreate: %d properties, docs/ane-facts.md §1.6 sets exactly 6", d->n);
    if (w <= 0 || h != 1 || bpe != 1 || bpr != w || alloc != w || pf != 0)
        fake_violation("IOSurfaceCreate: Width %lld Height %lld BytesPerElement %lld BytesPerRow %lld AllocSize %lld "
                       "PixelFormat %lld; docs/ane-facts.md §1.6: Width = BytesPerRow = AllocSize = bytes, Height 1, "
                       "BytesPerElement 1, PixelFormat 0",
                       (long long)w, (long long)h, (long long)bpe, (long long)bpr, (long long)alloc, (long long)pf);
    if (take(&fake_ane_faults.surface_create_fail) || alloc <= 0) return NULL;
    AneDevice *e = fake_emu();
    Err err = {{0}};
    AneSurface *es = e->surface_create(e, (size_t)alloc, &err);
    if (!es) return NULL;
    FakeObj *s = fake_new(&fake_class_IOSurface, FK_SURFACE);
    s->emu_surface = es;
    s->len = (size_t)alloc;
    s->base = e->surface_lock(e, es, 0);
    e->surface_unlock(e, es, 0);
    return (IOSurfaceRef)(void *)s;
}

static int options_ok(IOSurfaceLockOptions options, const char *fn) {
    if (options != 0 && options != kIOSurfaceLockReadOnly) {
        fake_violation("%s: options %#x (the bridge uses 0 or kIOSurfaceLockReadOnly)", fn, (unsigned)options);
        return 0;
    }
    return 1;
}

kern_return_t IOSurfaceLock(IOSurfaceRef buffer, IOSurfaceLockOptions options, uint32_t *seed) {
    (void)seed;
    FakeObj *s = fake_check(buffer, FK_SURFACE, NULL, "IOSurfaceLock");
    if (!s) {
        if (!buffer) fake_violation("IOSurfaceLock(NULL)");
        return kIOReturnBadArgument;
    }
    if (!options_ok(options, "IOSurfaceLock")) return kIOReturnBadArgument;
    if (take(&fake_ane_faults.surface_lock_fail)) return kIOReturnError;
    if (s->n_locks == FAKE_MAX_LOCKS) {
        fake_violation("IOSurfaceLock: more than %d nested locks", FAKE_MAX_LOCKS);
        return kIOReturnError;
    }
    s->lock_flags[s->n_locks++] = (int)options;
    AneDevice *e = fake_emu();
    e->surface_lock(e, s->emu_surface, options == kIOSurfaceLockReadOnly);
    return 0;
}

kern_return_t IOSurfaceUnlock(IOSurfaceRef buffer, IOSurfaceLockOptions options, uint32_t *seed) {
    (void)seed;
    FakeObj *s = fake_check(buffer, FK_SURFACE, NULL, "IOSurfaceUnlock");
    if (!s) {
        if (!buffer) fake_violation("IOSurfaceUnlock(NULL)");
        return kIOReturnBadArgument;
    }
    options_ok(options, "IOSurfaceUnlock");
    if (s->n_locks == 0) {
        fake_violation("IOSurfaceUnlock of IOSurface#%llu, which is not locked", (unsigned long long)s->serial);
        return kIOReturnError;
    }
    int locked = s->lock_flags[--s->n_locks];
    if (locked != (int)options)
        fake_violation("IOSurfaceUnlock with options %#x of a lock taken with %#x (docs/ane-facts.md §1.6: the same "
                       "options for both)",
                       (unsigned)options, (unsigned)locked);
    AneDevice *e = fake_emu();
    e->surface_unlock(e, s->emu_surface, locked == kIOSurfaceLockReadOnly);
    return 0;
}

void *IOSurfaceGetBaseAddress(IOSurfaceRef buffer) {
    FakeObj *s = fake_check(buffer, FK_SURFACE, NULL, "IOSurfaceGetBaseAddress");
    if (!s) return NULL;
    if (s->n_locks == 0)
        fake_violation("IOSurfaceGetBaseAddress of IOSurface#%llu outside a lock", (unsigned long long)s->serial);
    return s->base;
}

size_t IOSurfaceGetAllocSize(IOSurfaceRef buffer) {
    FakeObj *s = fake_check(buffer, FK_SURFACE, NULL, "IOSurfaceGetAllocSize");
    return s ? s->len : 0;
}
