/*
** fake_control.h — the tests' side of the fake AppleNeuralEngine framework: failure
** injection, the recorded call sequence, the violations found and the live-object count.
**
** What the fake checks (each breach is recorded as a violation; tests assert there are none):
**   - dispatch: the receiver is a live object or a loaded class; the selector exists on it as
**     the right kind (+ or -); it was sent through the call shape of its fact-sheet prototype
**     (docs/ane-facts.md §1.2), whose argument count equals the selector's colon count;
**   - arguments: each method checks the kinds and values docs/ane-facts.md §1 gives (NSData MIL text, the
**     weights dictionary's keys and inner "offset"/"data", nil optionsPlist/weightsBuffer/
**     perfStats, empty options dictionaries, NSNumber indices 0..n-1 and procedureIndex 0,
**     QoS in 0..63, a non-NULL NSError**), and the order (compile after the temp directory
**     holds model.mil and every weight file; load after compile; evaluate after load;
**     unload of a loaded model);
**   - memory: CF/objc reference counts (toll-free: one count); every message is sent inside
**     an autorelease pool, and pools pop in order; no message, retain or release reaches a
**     dead object or a pointer the fake did not make (CFRelease(NULL) included); the CF
**     collections are made with the kCFType callbacks, IOSurfaces are made with exactly the
**     docs/ane-facts.md §1.6 properties and locked/unlocked in matching pairs (with the same flags), and the
**     base address is read only under a lock.
** Compile converts the weights dictionary into AneBlobs and compiles on the emulator; evaluate
** runs the emulator on the surfaces' memory (the IOSurfaces are emulator surfaces).
*/
#ifndef ANETRAIN_FAKE_CONTROL_H
#define ANETRAIN_FAKE_CONTROL_H

#include "backend/ane/device.h"

/* Set fields before the call that should fail; fake_ane_reset() clears them. Counts fail the
** next N calls of that kind. */
typedef struct {
    int framework_missing;        /* dlopen fails ("image not found") */
    const char *missing_class;    /* objc_getClass returns nil for this name */
    const char *missing_selector; /* no class answers this selector */
    int descriptor_nil;           /* +modelWithMILText:weights:optionsPlist: returns nil */
    int model_nil;                /* +inMemoryModelWithDescriptor: returns nil */
    int compile_fail;             /* -compileWithQoS:options:error: returns NO with an NSError */
    int compile_fail_no_error;    /* ... returns NO and leaves the NSError nil */
    int load_fail;                /* -loadWithQoS:options:error: returns NO (count) */
    int surface_object_nil;       /* +objectWithIOSurface: returns nil */
    int request_nil;              /* +requestWithInputs:... returns nil */
    int eval_fail;                /* -evaluateWithQoS:options:request:error: returns NO (count) */
    int unload_fail;              /* -unloadWithQoS:error: returns NO */
    int surface_create_fail;      /* IOSurfaceCreate returns NULL (count) */
    int surface_lock_fail;        /* IOSurfaceLock fails (count) */
    const char *hex_override;     /* -hexStringIdentifier returns this instead of the hash */
    const char *tmpdir_override;  /* NSTemporaryDirectory() returns this instead of the fake's */
    const char *message;          /* NSError description for injected failures (default given) */
    /* Out of memory, one failure at a time: the Nth malloc/calloc of the bridge itself, or the
    ** Nth CoreFoundation create call or CFStringGetCString, from now, fails (1 = the next).
    ** `fired` is set when one did. */
    int alloc_fail_at, cf_fail_at;
    int fired;
} FakeAneFaults;

extern FakeAneFaults fake_ane_faults;

/* Frees every object (also leaked and dead ones), pools, logs, violations, faults, the
** emulator and the fake temp directory. Call at the end of each test. */
void fake_ane_reset(void);

/* Objects alive: CF objects, Objective-C instances and IOSurfaces (constants excluded). */
int fake_ane_live_objects(void);
/* "NSData#12 refs 1, _ANERequest#40 refs 2, ..." of the live objects (for failure messages). */
const char *fake_ane_live_report(void);
/* Autorelease pools pushed and not popped. */
int fake_ane_pool_depth(void);

int fake_ane_violations(void);
const char *fake_ane_violation(int i);

/* The recorded calls: message sends as "+[Class selector]" / "-[Class selector]", and the
** C calls "dlopen", "IOSurfaceCreate", "NSTemporaryDirectory". */
int fake_ane_log_count(void);
const char *fake_ane_log(int i);
void fake_ane_log_clear(void);

/* NSTemporaryDirectory() of the fake: a fresh directory per reset, with a trailing '/'. */
const char *fake_ane_tmpdir(void);
/* The QoS of the last compile/load/evaluate/unload. */
unsigned fake_ane_last_qos(void);
/* Models currently loaded. */
int fake_ane_loaded_models(void);
/* The emulator the fake routes to (created on first use; budget INT_MAX). */
AneDevice *fake_ane_emulator(void);

#endif
