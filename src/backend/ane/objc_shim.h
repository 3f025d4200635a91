/*
** objc_shim.h — the platform seam under the darwin device (darwin.c): which declarations of
** the Objective-C runtime, CoreFoundation, IOSurface and dlopen the bridge compiles against,
** and the table of typed message sends. darwin.c is the same text on both platforms:
**
**   macOS                     the real headers; each typed send is a static inline cast of
**                             objc_msgSend to that call's exact prototype.
**   Linux, ANE_FAKE_FRAMEWORK the test double's declarations (tests/fake_ane/fake_framework.h)
**                             of exactly the same names and types; each typed send is a real
**                             C function of the same prototype that looks the method up,
**                             checks it against docs/ane-facts.md §1 and calls it.
**
** Why typed send functions rather than casting objc_msgSend inside darwin.c: objc_msgSend is
** an assembly trampoline that jumps to the method with the caller's registers untouched, so
** one symbol serves every prototype. Portable C cannot write such a function, so a fake
** objc_msgSend could not receive the arguments of the different casts. Naming each call
** shape instead gives the fake one ordinary C function per shape, and on macOS costs nothing
** (the inline cast is exactly what darwin.c would have written). The shapes are declared once,
** in ANE_MSG_SHAPES below: the macOS casts, the fake's dispatchers and the fake's method
** implementations are all generated from that one list, so a prototype cannot differ between
** the platforms, and the fake can refuse a selector sent through the wrong shape (the bug that
** on arm64 silently passes garbage in registers).
**
** Nothing else may live here: no logic, no state.
*/
#ifndef ANETRAIN_ANE_OBJC_SHIM_H
#define ANETRAIN_ANE_OBJC_SHIM_H

#if defined(ANE_FAKE_FRAMEWORK)

#include "fake_ane/fake_framework.h" /* tests/: id, SEL, Class, BOOL, CF*, IOSurface*, dlopen */

#elif defined(__APPLE__)

#ifndef OBJC_OLD_DISPATCH_PROTOTYPES
#define OBJC_OLD_DISPATCH_PROTOTYPES 0 /* objc_msgSend is `void (void)`: every send must be cast */
#endif
#include <CoreFoundation/CoreFoundation.h>
#include <IOSurface/IOSurfaceRef.h>
#include <dlfcn.h>
#include <objc/message.h>
#include <objc/runtime.h>

/* Exported by libobjc (what @autoreleasepool compiles to) but not declared in its public
** headers. */
void *objc_autoreleasePoolPush(void);
void objc_autoreleasePoolPop(void *pool);
/* Foundation's NSString *NSTemporaryDirectory(void); NSString is toll-free bridged with
** CFString (docs/ane-facts.md §1.10). */
CFStringRef NSTemporaryDirectory(void);

#else
#error "objc_shim.h is for macOS, or for Linux with the test double (-DANE_FAKE_FRAMEWORK -Itests)"
#endif

/*
** The typed message sends: X(function, return type, parameters, arguments). Each is one row
** shape of docs/ane-facts.md §1.2; BOOL is the runtime's own type (bool on arm64), qos is unsigned
** int, every object is id, NSError ** is id *. The selectors each shape carries:
**
**   ane_send_id                  -hexStringIdentifier, -description, +aneSubType
**   ane_send_id_id               +inMemoryModelWithDescriptor:
**   ane_send_id_id3              +modelWithMILText:weights:optionsPlist:
**   ane_send_id_surface          +objectWithIOSurface:
**   ane_send_id_id7              +requestWithInputs:inputIndices:outputs:outputIndices:
**                                 weightsBuffer:perfStats:procedureIndex:
**   ane_send_bool_qos_id_err     -compileWithQoS:options:error:, -loadWithQoS:options:error:
**   ane_send_bool_qos_id_id_err  -evaluateWithQoS:options:request:error:
**   ane_send_bool_qos_err        -unloadWithQoS:error:
*/
#define ANE_MSG_SHAPES(X)                                                                                              \
    X(ane_send_id, id, (id self, SEL op), (self, op))                                                                  \
    X(ane_send_id_id, id, (id self, SEL op, id a), (self, op, a))                                                      \
    X(ane_send_id_id3, id, (id self, SEL op, id a, id b, id c), (self, op, a, b, c))                                   \
    X(ane_send_id_surface, id, (id self, SEL op, IOSurfaceRef surface), (self, op, surface))                           \
    X(ane_send_id_id7, id, (id self, SEL op, id a, id b, id c, id d, id e, id f, id g),                                \
      (self, op, a, b, c, d, e, f, g))                                                                                 \
    X(ane_send_bool_qos_id_err, BOOL, (id self, SEL op, unsigned int qos, id options, id *error),                      \
      (self, op, qos, options, error))                                                                                 \
    X(ane_send_bool_qos_id_id_err, BOOL, (id self, SEL op, unsigned int qos, id options, id request, id *error),       \
      (self, op, qos, options, request, error))                                                                        \
    X(ane_send_bool_qos_err, BOOL, (id self, SEL op, unsigned int qos, id *error), (self, op, qos, error))

#if defined(ANE_FAKE_FRAMEWORK)
#define ANE_MSG_DECLARE(name, ret, params, args) ret name params;
ANE_MSG_SHAPES(ANE_MSG_DECLARE)
#undef ANE_MSG_DECLARE
#else
/* Through a variable: calling a cast function designator directly makes gcc warn. */
#define ANE_MSG_DEFINE(name, ret, params, args)                                                                        \
    static inline ret name params {                                                                                    \
        ret(*send) params = (ret(*) params)objc_msgSend;                                                               \
        return send args;                                                                                              \
    }
ANE_MSG_SHAPES(ANE_MSG_DEFINE)
#undef ANE_MSG_DEFINE
#endif

#endif
