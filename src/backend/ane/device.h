/*
** device.h — the device seam: the only thing the ANE planner knows about a device.
**
**   compile(MIL text, named weight blobs) -> program, or an error
**   evaluate(program, input surface, output surface) -> ok, or an error
**   release(program); surfaces; counters
**
** Two devices implement it: the emulator (emu/, portable C: parses the MIL, checks it
** against the real device's constraints and runs it with fp16 storage) and, on macOS, the
** bridge to the private runtime (darwin.c). Surfaces are flat byte buffers holding one
** dense row-major [1,C,1,S] fp16 tensor (element (c,s) at c*S + s), as the real IOSurfaces
** are created (docs/ane-facts.md §1.6). Nothing above this seam may depend on which device runs.
*/
#ifndef ANETRAIN_ANE_DEVICE_H
#define ANETRAIN_ANE_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "../../util/err.h"

/* A named weight file the MIL refers to, e.g. path "@model_path/weights/mask.bin", holding a
** whole MILBlob file (64-byte storage header, 64-byte metadata record, data; docs/ane-facts.md §3). */
typedef struct {
    const char *path;
    const void *data;
    size_t size;
} AneBlob;

/* How strictly a program is checked against the real chips' limits before it compiles: every
** device runs the emulator's checker (emu/mil_check.c) first, so a program is refused with the
** same named rule on Linux and on a Mac. docs/ane-facts.md §9 lists every rule with its source. */
typedef enum {
    ANE_LIMITS_STRICT = 0, /* every rule: the measured limits extended to every tensor and axis, and
                           ** the conventions every working reference follows (the default) */
    ANE_LIMITS_PROBED = 1  /* only the limits measured to fail on real chips, and the hard rules */
} AneLimits;

/* "strict" or "probed". */
const char *ane_limits_name(AneLimits limits);
/* Parses "strict" or "probed" given to `flag` (named in the error). */
int ane_limits_parse(const char *flag, const char *s, AneLimits *out, Err *err);

/* Shape of a program's single input or output: [1, channels, 1, spatial], fp16. */
typedef struct {
    int channels, spatial;
} AneShape;

typedef struct AneProgram AneProgram;
typedef struct AneSurface AneSurface;

typedef struct {
    uint64_t compiles;        /* successful compiles by this device (the budget counts the whole process) */
    uint64_t compile_failures;
    uint64_t evaluations;
    uint64_t bytes_in, bytes_out; /* surface bytes read and written by evaluations */
    double compile_seconds, eval_seconds;
} AneCounters;

/* Compiles allowed per process unless told otherwise: the real compiler is reported to fail
** after about this many (docs/ane-facts.md §1.8), and the emulator enforces the same budget. */
#define ANE_COMPILE_BUDGET_DEFAULT 119

typedef struct AneDevice AneDevice;

struct AneDevice {
    const char *name; /* "emu" or "darwin" */
    /* Compiles MIL text with its weight blobs. Counts against the per-process compile
    ** budget; past it, fails the way the real device does. */
    AneProgram *(*compile)(AneDevice *dev, const char *mil_text, const AneBlob *blobs, int n_blobs, Err *err);
    /* Runs prog reading `in` and writing `out`; both must match the program's shapes. */
    int (*evaluate)(AneDevice *dev, AneProgram *prog, AneSurface *in, AneSurface *out, Err *err);
    void (*release)(AneDevice *dev, AneProgram *prog);
    /* The program's input and output shapes. */
    void (*program_io)(const AneProgram *prog, AneShape *in, AneShape *out);

    /* Surfaces: allocate `bytes`; lock returns the base address for CPU access. */
    AneSurface *(*surface_create)(AneDevice *dev, size_t bytes, Err *err);
    void (*surface_free)(AneDevice *dev, AneSurface *s);
    void *(*surface_lock)(AneDevice *dev, AneSurface *s, int read_only);
    void (*surface_unlock)(AneDevice *dev, AneSurface *s, int read_only);
    size_t (*surface_bytes)(const AneSurface *s);

    AneCounters counters;
    int compile_budget;       /* compiles allowed per process (ANE_COMPILE_BUDGET_DEFAULT on real devices) */
    void (*destroy)(AneDevice *dev);
};

/* The emulator's switchable assumptions (the real device's answers are unknown: docs/ane-facts.md §7). */
typedef struct {
    int compile_budget;   /* default ANE_COMPILE_BUDGET_DEFAULT */
    int accumulate_fp32;  /* 1 (default): matmul/conv/reduce accumulate in fp32 and round once;
                          ** 0: round to fp16 after every partial sum of a K-chunk (pessimistic) */
    int flush_subnormals; /* 1: fp16 subnormal results become 0; default 0 (IEEE gradual underflow) */
    AneLimits limits;     /* the checker's rules (default ANE_LIMITS_STRICT) */
} AneEmuOptions;

void ane_emu_default_options(AneEmuOptions *opt);
AneDevice *ane_emu_create(const AneEmuOptions *opt, Err *err);

#endif
