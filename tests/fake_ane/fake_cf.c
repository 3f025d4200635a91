/*
** fake_cf.c — the test double's CoreFoundation: CFData, CFString, CFNumber, CFArray and
** CFDictionary as fake objects (toll-free bridged: the same objects are the NSData, NSString,
** ... the fake framework receives), with one reference count shared by CFRetain/CFRelease and
** the Objective-C side. Checks the rules that crash or leak on macOS: CFRelease(NULL), values
** that are not live objects, collections made without the kCFType callbacks (which would not
** retain their values), allocators other than the default.
*/
#include <stdlib.h>
#include <string.h>

#include "fake_internal.h"

const CFAllocatorRef kCFAllocatorDefault = NULL;
const CFArrayCallBacks kCFTypeArrayCallBacks = {0, "retain", "release", "copyDescription", "equal"};
const CFDictionaryKeyCallBacks kCFTypeDictionaryKeyCallBacks = {0,       "retain", "release", "copyDescription",
                                                                "equal", "hash"};
const CFDictionaryValueCallBacks kCFTypeDictionaryValueCallBacks = {0, "retain", "release", "copyDescription", "equal"};

enum {
    TYPE_STRING = 7,
    TYPE_DATA = 20,
    TYPE_NUMBER = 22,
    TYPE_ARRAY = 19,
    TYPE_DICT = 18,
    TYPE_SURFACE = 300,
    TYPE_INSTANCE = 1000
};

CFTypeID CFStringGetTypeID(void) { return TYPE_STRING; }
CFTypeID CFDataGetTypeID(void) { return TYPE_DATA; }
CFTypeID CFNumberGetTypeID(void) { return TYPE_NUMBER; }
CFTypeID CFArrayGetTypeID(void) { return TYPE_ARRAY; }
CFTypeID CFDictionaryGetTypeID(void) { return TYPE_DICT; }

static void check_allocator(CFAllocatorRef a, const char *fn) {
    if (a != NULL) fake_violation("%s: expected kCFAllocatorDefault", fn);
}

CFTypeRef CFRetain(CFTypeRef cf) {
    if (!cf) {
        fake_violation("CFRetain(NULL) (crashes on macOS)");
        return NULL;
    }
    FakeObj *o = fake_check(cf, 0, NULL, "CFRetain");
    if (o) fake_retain(o);
    return cf;
}

void CFRelease(CFTypeRef cf) {
    if (!cf) {
        fake_violation("CFRelease(NULL) (crashes on macOS)");
        return;
    }
    FakeObj *o = fake_check(cf, 0, NULL, "CFRelease");
    if (o) fake_release(o);
}

CFTypeID CFGetTypeID(CFTypeRef cf) {
    FakeObj *o = fake_check(cf, 0, NULL, "CFGetTypeID");
    if (!o) {
        if (!cf) fake_violation("CFGetTypeID(NULL) (crashes on macOS)");
        return 0;
    }
    switch (o->kind) {
    case FK_STRING:
        return TYPE_STRING;
    case FK_DATA:
        return TYPE_DATA;
    case FK_NUMBER:
        return TYPE_NUMBER;
    case FK_ARRAY:
        return TYPE_ARRAY;
    case FK_DICT:
        return TYPE_DICT;
    case FK_SURFACE:
        return TYPE_SURFACE;
    case FK_INSTANCE:
        break;
    }
    return TYPE_INSTANCE;
}

/* ------------------------------------------------------------------ data, strings, numbers */

CFDataRef CFDataCreate(CFAllocatorRef allocator, const UInt8 *bytes, CFIndex length) {
    check_allocator(allocator, "CFDataCreate");
    if (fake_cf_fault()) return NULL;
    if (length < 0 || (length > 0 && !bytes)) {
        fake_violation("CFDataCreate: %ld bytes from %p", (long)length, (const void *)bytes);
        return NULL;
    }
    FakeObj *o = fake_new(&fake_class_NSData, FK_DATA);
    o->bytes = malloc((size_t)length + 1);
    if (!o->bytes) abort();
    if (length) memcpy(o->bytes, bytes, (size_t)length);
    o->len = (size_t)length;
    return (CFDataRef)(void *)o;
}

FakeObj *fake_string_new(const char *s) {
    FakeObj *o = fake_new(&fake_class_NSString, FK_STRING);
    o->len = strlen(s);
    o->bytes = (unsigned char *)strdup(s);
    if (!o->bytes) abort();
    return o;
}

int fake_string_is(const FakeObj *o, const char *s) {
    return o && o->kind == FK_STRING && o->len == strlen(s) && memcmp(o->bytes, s, o->len) == 0;
}

CFStringRef CFStringCreateWithCString(CFAllocatorRef alloc, const char *cStr, CFStringEncoding encoding) {
    check_allocator(alloc, "CFStringCreateWithCString");
    if (encoding != kCFStringEncodingUTF8)
        fake_violation("CFStringCreateWithCString: encoding %#x, not UTF-8", encoding);
    if (!cStr) {
        fake_violation("CFStringCreateWithCString(NULL)");
        return NULL;
    }
    if (fake_cf_fault()) return NULL;
    return (CFStringRef)(void *)fake_string_new(cStr);
}

CFIndex CFStringGetLength(CFStringRef s) {
    FakeObj *o = fake_check(s, FK_STRING, NULL, "CFStringGetLength");
    return o ? (CFIndex)o->len : 0;
}

CFIndex CFStringGetMaximumSizeForEncoding(CFIndex length, CFStringEncoding encoding) {
    if (encoding != kCFStringEncodingUTF8) fake_violation("CFStringGetMaximumSizeForEncoding: not UTF-8");
    return length * 3;
}

Boolean CFStringGetCString(CFStringRef s, char *buffer, CFIndex size, CFStringEncoding encoding) {
    FakeObj *o = fake_check(s, FK_STRING, NULL, "CFStringGetCString");
    if (encoding != kCFStringEncodingUTF8) fake_violation("CFStringGetCString: encoding %#x, not UTF-8", encoding);
    if (!o || !buffer || size < 1 || (size_t)size < o->len + 1 || fake_cf_fault()) return 0;
    memcpy(buffer, o->bytes, o->len + 1);
    return 1;
}

CFNumberRef CFNumberCreate(CFAllocatorRef allocator, CFNumberType type, const void *valuePtr) {
    check_allocator(allocator, "CFNumberCreate");
    if (!valuePtr || (type != kCFNumberSInt32Type && type != kCFNumberSInt64Type)) {
        fake_violation("CFNumberCreate: type %d from %p (the bridge uses SInt32 or SInt64)", (int)type, valuePtr);
        return NULL;
    }
    if (fake_cf_fault()) return NULL;
    FakeObj *o = fake_new(&fake_class_NSNumber, FK_NUMBER);
    if (type == kCFNumberSInt32Type) {
        int32_t v;
        memcpy(&v, valuePtr, sizeof v);
        o->num = v;
    } else {
        memcpy(&o->num, valuePtr, sizeof o->num);
    }
    return (CFNumberRef)(void *)o;
}

/* ------------------------------------------------------------------ arrays, dictionaries */

static void reserve(FakeObj *o, int n, int with_keys) {
    if (n <= o->cap) return;
    int cap = o->cap ? o->cap : 4;
    while (cap < n)
        cap *= 2;
    o->items = realloc(o->items, (size_t)cap * sizeof *o->items);
    if (with_keys) o->keys = realloc(o->keys, (size_t)cap * sizeof *o->keys);
    if (!o->items || (with_keys && !o->keys)) abort();
    o->cap = cap;
}

CFArrayRef CFArrayCreate(CFAllocatorRef allocator, const void **values, CFIndex n, const CFArrayCallBacks *cb) {
    check_allocator(allocator, "CFArrayCreate");
    if (cb != &kCFTypeArrayCallBacks)
        fake_violation("CFArrayCreate without &kCFTypeArrayCallBacks: the array would not retain its values");
    if (n < 0 || (n > 0 && !values)) {
        fake_violation("CFArrayCreate: %ld values from %p", (long)n, (const void *)values);
        return NULL;
    }
    FakeObj *vals[64];
    if (n > 64) {
        fake_violation("CFArrayCreate: %ld values (the fake takes 64)", (long)n);
        return NULL;
    }
    for (CFIndex i = 0; i < n; i++) {
        vals[i] = fake_check(values[i], 0, NULL, "CFArrayCreate value");
        if (!vals[i]) {
            if (!values[i]) fake_violation("CFArrayCreate: value %ld is NULL", (long)i);
            return NULL;
        }
    }
    if (fake_cf_fault()) return NULL;
    FakeObj *o = fake_new(&fake_class_NSArray, FK_ARRAY);
    reserve(o, (int)n, 0);
    for (CFIndex i = 0; i < n; i++) {
        fake_retain(vals[i]);
        o->items[o->n++] = vals[i];
    }
    return (CFArrayRef)(void *)o;
}

static int key_equal(const FakeObj *a, const FakeObj *b) {
    if (a == b) return 1;
    return a->kind == FK_STRING && b->kind == FK_STRING && a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

/* Sets key -> value in d (retaining both; a key already there keeps its object). */
static void dict_set(FakeObj *d, FakeObj *key, FakeObj *value) {
    for (int i = 0; i < d->n; i++)
        if (key_equal(d->keys[i], key)) {
            fake_retain(value);
            fake_release(d->items[i]);
            d->items[i] = value;
            return;
        }
    reserve(d, d->n + 1, 1);
    fake_retain(key);
    fake_retain(value);
    d->keys[d->n] = key;
    d->items[d->n] = value;
    d->n++;
}

FakeObj *fake_dict_get(const FakeObj *d, const char *key) {
    for (int i = 0; i < d->n; i++)
        if (fake_string_is(d->keys[i], key)) return d->items[i];
    return NULL;
}

static void check_dict_callbacks(const CFDictionaryKeyCallBacks *k, const CFDictionaryValueCallBacks *v,
                                 const char *fn) {
    if (k != &kCFTypeDictionaryKeyCallBacks || v != &kCFTypeDictionaryValueCallBacks)
        fake_violation("%s without the kCFTypeDictionary callbacks: the dictionary would not retain", fn);
}

CFDictionaryRef CFDictionaryCreate(CFAllocatorRef allocator, const void **keys, const void **values, CFIndex n,
                                   const CFDictionaryKeyCallBacks *kcb, const CFDictionaryValueCallBacks *vcb) {
    check_allocator(allocator, "CFDictionaryCreate");
    check_dict_callbacks(kcb, vcb, "CFDictionaryCreate");
    if (n < 0 || (n > 0 && (!keys || !values))) {
        fake_violation("CFDictionaryCreate: %ld entries", (long)n);
        return NULL;
    }
    for (CFIndex i = 0; i < n; i++) {
        if (!fake_check(keys[i], 0, NULL, "CFDictionaryCreate key") ||
            !fake_check(values[i], 0, NULL, "CFDictionaryCreate value")) {
            if (!keys[i] || !values[i])
                fake_violation("CFDictionaryCreate: entry %ld has a NULL key or value", (long)i);
            return NULL;
        }
    }
    if (fake_cf_fault()) return NULL;
    FakeObj *d = fake_new(&fake_class_NSDictionary, FK_DICT);
    for (CFIndex i = 0; i < n; i++) {
        int before = d->n;
        dict_set(d, (FakeObj *)keys[i], (FakeObj *)values[i]);
        if (d->n == before) fake_violation("CFDictionaryCreate: duplicate key");
    }
    return (CFDictionaryRef)(void *)d;
}

CFMutableDictionaryRef CFDictionaryCreateMutable(CFAllocatorRef allocator, CFIndex capacity,
                                                 const CFDictionaryKeyCallBacks *kcb,
                                                 const CFDictionaryValueCallBacks *vcb) {
    check_allocator(allocator, "CFDictionaryCreateMutable");
    check_dict_callbacks(kcb, vcb, "CFDictionaryCreateMutable");
    if (capacity < 0) fake_violation("CFDictionaryCreateMutable: capacity %ld", (long)capacity);
    if (fake_cf_fault()) return NULL;
    FakeObj *d = fake_new(&fake_class_NSDictionary, FK_DICT);
    d->num = 1; /* mutable */
    return (CFMutableDictionaryRef)(void *)d;
}

void CFDictionarySetValue(CFMutableDictionaryRef theDict, const void *key, const void *value) {
    FakeObj *d = fake_check(theDict, FK_DICT, NULL, "CFDictionarySetValue dictionary");
    FakeObj *k = fake_check(key, 0, NULL, "CFDictionarySetValue key");
    FakeObj *v = fake_check(value, 0, NULL, "CFDictionarySetValue value");
    if (!d || !k || !v) {
        if (!theDict || !key || !value) fake_violation("CFDictionarySetValue with a NULL argument");
        return;
    }
    if (!d->num) {
        fake_violation("CFDictionarySetValue on an immutable dictionary");
        return;
    }
    dict_set(d, k, v);
}
