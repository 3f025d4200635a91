/*
** fake_framework.h — the test double's declarations of exactly the names and types the
** darwin bridge uses from Apple's headers: the Objective-C runtime (<objc/runtime.h>,
** <objc/message.h>), CoreFoundation, IOSurface (<IOSurface/IOSurfaceRef.h>), Foundation's
** NSTemporaryDirectory and dlopen. Included only through src/backend/ane/objc_shim.h when
** ANE_FAKE_FRAMEWORK is defined; the prototypes follow Apple's (checked against the SDK
** headers' text), so code that compiles here compiles there.
**
** Implemented by fake_objc.c (runtime, pools, dispatch), fake_cf.c (CoreFoundation),
** fake_iosurface.c (IOSurface on top of the emulator's surfaces) and fake_ane_classes.c
** (the _ANE* classes, dlopen, NSTemporaryDirectory). fake_control.h is the tests' side.
*/
#ifndef ANETRAIN_FAKE_FRAMEWORK_H
#define ANETRAIN_FAKE_FRAMEWORK_H

#include <dlfcn.h> /* RTLD_NOW; dlopen itself is replaced below */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ <objc/objc.h>, <objc/runtime.h> */

typedef struct objc_class *Class;
typedef struct objc_object *id;
typedef struct objc_selector *SEL;
typedef struct objc_method *Method;
typedef void (*IMP)(void);
typedef bool BOOL; /* arm64 macOS; x86_64 macOS has signed char (the bridge never compares to YES) */
#define YES ((BOOL)1)
#define NO ((BOOL)0)

Class objc_getClass(const char *name);
SEL sel_registerName(const char *str);
const char *sel_getName(SEL sel);
Method class_getClassMethod(Class cls, SEL name);
Method class_getInstanceMethod(Class cls, SEL name);
void *objc_autoreleasePoolPush(void);
void objc_autoreleasePoolPop(void *pool);

/* ------------------------------------------------------------------ CoreFoundation */

typedef unsigned char Boolean;
typedef unsigned char UInt8;
typedef signed long CFIndex;
typedef unsigned long CFTypeID;
typedef const void *CFTypeRef;
typedef uint32_t CFStringEncoding;
typedef const struct __CFAllocator *CFAllocatorRef;
typedef const struct __CFString *CFStringRef;
typedef const struct __CFData *CFDataRef;
typedef const struct __CFNumber *CFNumberRef;
typedef const struct __CFArray *CFArrayRef;
typedef const struct __CFDictionary *CFDictionaryRef;
typedef struct __CFDictionary *CFMutableDictionaryRef;

typedef enum { kCFNumberSInt32Type = 3, kCFNumberSInt64Type = 4 } CFNumberType;
enum { kCFStringEncodingUTF8 = 0x08000100 };

/* Only their addresses matter to the bridge; the fake checks the bridge passes these. */
typedef struct {
    CFIndex version;
    const void *retain, *release, *copyDescription, *equal;
} CFArrayCallBacks;
typedef struct {
    CFIndex version;
    const void *retain, *release, *copyDescription, *equal, *hash;
} CFDictionaryKeyCallBacks;
typedef struct {
    CFIndex version;
    const void *retain, *release, *copyDescription, *equal;
} CFDictionaryValueCallBacks;

extern const CFAllocatorRef kCFAllocatorDefault;
extern const CFArrayCallBacks kCFTypeArrayCallBacks;
extern const CFDictionaryKeyCallBacks kCFTypeDictionaryKeyCallBacks;
extern const CFDictionaryValueCallBacks kCFTypeDictionaryValueCallBacks;

CFTypeRef CFRetain(CFTypeRef cf);
void CFRelease(CFTypeRef cf);
CFTypeID CFGetTypeID(CFTypeRef cf);
CFTypeID CFStringGetTypeID(void);
CFTypeID CFDataGetTypeID(void);
CFTypeID CFNumberGetTypeID(void);
CFTypeID CFArrayGetTypeID(void);
CFTypeID CFDictionaryGetTypeID(void);

CFDataRef CFDataCreate(CFAllocatorRef allocator, const UInt8 *bytes, CFIndex length);
CFStringRef CFStringCreateWithCString(CFAllocatorRef alloc, const char *cStr, CFStringEncoding encoding);
CFIndex CFStringGetLength(CFStringRef theString);
CFIndex CFStringGetMaximumSizeForEncoding(CFIndex length, CFStringEncoding encoding);
Boolean CFStringGetCString(CFStringRef theString, char *buffer, CFIndex bufferSize, CFStringEncoding encoding);
CFNumberRef CFNumberCreate(CFAllocatorRef allocator, CFNumberType theType, const void *valuePtr);
CFArrayRef CFArrayCreate(CFAllocatorRef allocator, const void **values, CFIndex numValues,
                         const CFArrayCallBacks *callBacks);
CFDictionaryRef CFDictionaryCreate(CFAllocatorRef allocator, const void **keys, const void **values, CFIndex numValues,
                                   const CFDictionaryKeyCallBacks *keyCallBacks,
                                   const CFDictionaryValueCallBacks *valueCallBacks);
CFMutableDictionaryRef CFDictionaryCreateMutable(CFAllocatorRef allocator, CFIndex capacity,
                                                 const CFDictionaryKeyCallBacks *keyCallBacks,
                                                 const CFDictionaryValueCallBacks *valueCallBacks);
void CFDictionarySetValue(CFMutableDictionaryRef theDict, const void *key, const void *value);

/* ------------------------------------------------------------------ <IOSurface/IOSurfaceRef.h> */

typedef struct __IOSurface *IOSurfaceRef;
typedef int kern_return_t;
typedef enum { kIOSurfaceLockReadOnly = 0x00000001, kIOSurfaceLockAvoidSync = 0x00000002 } IOSurfaceLockOptions;

extern const CFStringRef kIOSurfaceWidth;
extern const CFStringRef kIOSurfaceHeight;
extern const CFStringRef kIOSurfaceBytesPerElement;
extern const CFStringRef kIOSurfaceBytesPerRow;
extern const CFStringRef kIOSurfaceAllocSize;
extern const CFStringRef kIOSurfacePixelFormat;

IOSurfaceRef IOSurfaceCreate(CFDictionaryRef properties);
kern_return_t IOSurfaceLock(IOSurfaceRef buffer, IOSurfaceLockOptions options, uint32_t *seed);
kern_return_t IOSurfaceUnlock(IOSurfaceRef buffer, IOSurfaceLockOptions options, uint32_t *seed);
void *IOSurfaceGetBaseAddress(IOSurfaceRef buffer);
size_t IOSurfaceGetAllocSize(IOSurfaceRef buffer);

/* ------------------------------------------------------------------ Foundation, dlfcn */

CFStringRef NSTemporaryDirectory(void);

void *fake_dlopen(const char *path, int mode);
char *fake_dlerror(void);
#define dlopen(path, mode) fake_dlopen(path, mode)
#define dlerror() fake_dlerror()

/* The bridge's own allocations, so a test can fail them one at a time (fake_control.h:
** alloc_fail_at). Not applied inside the fake itself. */
#ifndef FAKE_ANE_IMPLEMENTATION
#include <stdlib.h>
void *fake_malloc(size_t size);
void *fake_calloc(size_t count, size_t size);
#define malloc(size) fake_malloc(size)
#define calloc(count, size) fake_calloc(count, size)
#endif

#endif
