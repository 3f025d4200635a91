/*
** darwin.h — the real Neural Engine behind the device seam (device.h), through Apple's
** private AppleNeuralEngine.framework (docs/ane-facts.md §1), in plain C.
**
** Built for real on macOS. On Linux the library gets stubs (ane_darwin_available() is 0 and
** ane_darwin_create fails with a message saying so), and the test build compiles the same
** darwin.c against a test double of the framework (-DANE_FAKE_FRAMEWORK, tests/fake_ane/),
** which routes compile and evaluate to the emulator.
**
** What the device adds to the seam's contract:
**   - every MIL program is first checked by the emulator's checker (emu/mil.h) under the
**     device's limits (AneDarwinOptions.limits), so a program is accepted or refused on a Mac
**     exactly as on Linux, with the same named rule, and the I/O shapes come from it;
**   - compiles count against a per-process budget (default ANE_COMPILE_BUDGET_DEFAULT, docs/ane-facts.md §1.8), like the
**     emulator's: past it compiles fail with "ANE compile budget exhausted ... restart";
**   - a program keeps its own temp directory (NSTemporaryDirectory()/<hexStringIdentifier>/,
**     docs/ane-facts.md §1.5) until it is released; identical programs share one, deleted with the last;
**   - evaluate keeps up to `request_cache` request objects per program, one per (input,
**     output) surface pair, as the seed does; freeing a surface drops the requests using it;
**   - surfaces must be freed before destroy(); destroy() releases programs still alive.
*/
#ifndef ANETRAIN_ANE_DARWIN_H
#define ANETRAIN_ANE_DARWIN_H

#include <stdint.h>

#include "device.h"

#define ANE_DARWIN_FRAMEWORK_PATH "/System/Library/PrivateFrameworks/AppleNeuralEngine.framework/AppleNeuralEngine"

typedef struct {
    const char *framework_path; /* default ANE_DARWIN_FRAMEWORK_PATH */
    int compile_budget;         /* compiles per process; default ANE_COMPILE_BUDGET_DEFAULT */
    unsigned qos;               /* quality of service passed to every call; default 21 (docs/ane-facts.md §1.3) */
    int load_retry_us;          /* a failed load is retried once after this pause; default 100000 */
    int request_cache;          /* request objects kept per program; default 64, 0 = one per evaluate */
    AneLimits limits;           /* the checker's rules before every compile (default ANE_LIMITS_STRICT) */
} AneDarwinOptions;

void ane_darwin_default_options(AneDarwinOptions *opt);

/* 1 where this build has the bridge (macOS, or the test double), 0 elsewhere. */
int ane_darwin_available(void);

/* Loads the framework, resolves every class and selector the bridge sends (failing with the
** name of the first one missing) and returns the device. */
AneDevice *ane_darwin_create(const AneDarwinOptions *opt, Err *err);

/* Successful darwin compiles in this process so far (the budget's count). */
uint64_t ane_darwin_process_compiles(void);

/* What only the darwin device counts (for doctor and the tests). */
typedef struct {
    uint64_t load_retries;                 /* loads that failed once and were retried */
    uint64_t unload_failures;              /* unloads that returned NO (release cannot report them) */
    uint64_t request_hits, request_misses; /* evaluate's request cache */
    int live_programs, live_temp_dirs;
    char last_unload_error[ERR_MSG_MAX];
} AneDarwinStats;

/* Fills *st for a device made by ane_darwin_create; -1 for any other device. */
int ane_darwin_stats(const AneDevice *dev, AneDarwinStats *st);

/* ------------------------------------------------------------------ probe (for doctor) */

enum { ANE_DARWIN_MAX_SYMBOLS = 16 };

typedef struct {
    const char *class_name;
    const char *selector; /* NULL for the class itself */
    int class_method;     /* 1: +selector, 0: -selector */
    int required;         /* 0: only used for reports (_ANEDeviceInfo) */
    int found;
} AneDarwinSymbol;

typedef struct {
    const char *framework_path;
    int framework_loaded;
    char framework_error[ERR_MSG_MAX]; /* dlerror(), or why the bridge is not available */
    int n_symbols;
    AneDarwinSymbol symbols[ANE_DARWIN_MAX_SYMBOLS];
    char ane_subtype[64]; /* _ANEDeviceInfo +aneSubType, "" when it does not resolve */
} AneDarwinProbe;

/* Loads the framework at path (NULL: the default) and says which classes and selectors
** resolve, without creating a device. Returns 0 when every required one does, else -1. */
int ane_darwin_probe(const char *framework_path, AneDarwinProbe *probe);

#endif
