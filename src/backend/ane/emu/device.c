/*
** device.c — the emulated ANE behind the device seam (../device.h): compile MIL text with its
** weight blobs into a planned fp16 program (mil_exec.c), evaluate it from an input surface
** into an output surface, surfaces as plain aligned buffers, counters and the compile budget.
**
** The compile budget (docs/ane-facts.md §1.8) is per process: one counter shared by every emulated
** device, the only global mutable state of the emulator (emu.h). A compile first reserves a
** slot under dev->compile_budget; when none is left it fails like the real device
** ("ANE compile budget exhausted: ...; restart the process") and counts a compile failure.
** A compile that fails for any other reason gives its slot back (only successful compiles
** are assumed to leak). Releasing a program gives nothing back.
**
** Surfaces: lock/unlock only count (CPU access needs no mapping here) and must balance, with
** the same read_only flag; evaluate refuses a surface that is locked or was unlocked more often
** than locked, so the planner's surface discipline is checked everywhere, not only on a Mac.
** A program is not re-entrant: one program must not be evaluated on two threads at once.
**
** This file must never exit or abort on bad input, and never reset the process counter.
*/
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../../util/clock.h"
#include "emu.h"
#include "mil.h"

static _Atomic uint64_t process_compiles; /* successful compiles in this process (see above) */

uint64_t ane_emu_process_compiles(void) { return atomic_load(&process_compiles); }

struct AneProgram {
    MilProgram *mil;
    AneShape in, out;
};

struct AneSurface {
    void *base;
    size_t bytes;
    int locks_ro, locks_rw; /* current lock depth per mode */
    int unbalanced;         /* unlocks without a matching lock */
};

typedef struct {
    AneDevice dev; /* first: an AneDevice* is an EmuDevice* */
    AneEmuOptions opt;
} EmuDevice;


/* Takes one slot of the process budget, or returns 0 (count unchanged) when none is left. */
static int budget_reserve(int budget, uint64_t *count_out) {
    uint64_t cur = atomic_load(&process_compiles);
    for (;;) {
        *count_out = cur;
        if (budget < 1 || cur >= (uint64_t)budget) return 0;
        if (atomic_compare_exchange_weak(&process_compiles, &cur, cur + 1)) return 1;
    }
}

static AneProgram *emu_compile(AneDevice *dev, const char *mil_text, const AneBlob *blobs, int n_blobs, Err *err) {
    EmuDevice *E = (EmuDevice *)dev;
    double t0 = now_seconds();
    uint64_t count;
    if (!budget_reserve(dev->compile_budget, &count)) {
        dev->counters.compile_failures++;
        err_set(err,
                "ANE compile budget exhausted: %llu compiles in this process (budget %d); restart the process "
                "(docs/ane-facts.md §1.8: the real compiler fails after about %d compiles per process)",
                (unsigned long long)count, dev->compile_budget, ANE_COMPILE_BUDGET_DEFAULT);
        return NULL;
    }
    AneProgram *p = calloc(1, sizeof *p);
    MilOptions o = {E->opt.accumulate_fp32, E->opt.flush_subnormals, 0, E->opt.limits};
    if (p) p->mil = mil_program_compile(mil_text, blobs, n_blobs, &o, err);
    else err_set(err, "out of memory allocating a program");
    if (!p || !p->mil) {
        free(p);
        atomic_fetch_sub(&process_compiles, 1);
        dev->counters.compile_failures++;
        dev->counters.compile_seconds += now_seconds() - t0;
        return NULL;
    }
    mil_program_io(p->mil, &p->in, &p->out);
    dev->counters.compiles++;
    dev->counters.compile_seconds += now_seconds() - t0;
    return p;
}

static int surface_check(const AneSurface *s, const char *what, size_t need, Err *err) {
    if (!s) return err_set(err, "evaluate: the %s surface is NULL", what);
    if (s->locks_ro || s->locks_rw)
        return err_set(err, "evaluate: the %s surface is still locked by the CPU (%d lock(s)); unlock it first", what,
                       s->locks_ro + s->locks_rw);
    if (s->unbalanced)
        return err_set(err, "evaluate: the %s surface was unlocked %d more time(s) than locked (or with a different "
                            "read_only flag)",
                       what, s->unbalanced);
    if (s->bytes != need)
        return err_set(err, "evaluate: the %s surface has %zu bytes, the program's %s needs exactly %zu", what,
                       s->bytes, what, need);
    return 0;
}

static int emu_evaluate(AneDevice *dev, AneProgram *prog, AneSurface *in, AneSurface *out, Err *err) {
    if (!prog) return err_set(err, "evaluate: NULL program");
    size_t in_bytes = (size_t)prog->in.channels * (size_t)prog->in.spatial * 2;
    size_t out_bytes = (size_t)prog->out.channels * (size_t)prog->out.spatial * 2;
    if (surface_check(in, "input", in_bytes, err) || surface_check(out, "output", out_bytes, err)) return -1;
    double t0 = now_seconds();
    if (mil_program_run(prog->mil, in->base, out->base, err)) return -1;
    dev->counters.evaluations++;
    dev->counters.bytes_in += in_bytes;
    dev->counters.bytes_out += out_bytes;
    dev->counters.eval_seconds += now_seconds() - t0;
    return 0;
}

static void emu_release(AneDevice *dev, AneProgram *prog) {
    (void)dev;
    if (!prog) return;
    mil_program_free(prog->mil);
    free(prog);
}

static void emu_program_io(const AneProgram *prog, AneShape *in, AneShape *out) {
    if (in) *in = prog->in;
    if (out) *out = prog->out;
}

static AneSurface *emu_surface_create(AneDevice *dev, size_t bytes, Err *err) {
    (void)dev;
    if (bytes == 0 || bytes > ((size_t)1 << 40)) {
        err_set(err, "surface_create: %zu bytes is not a valid surface size", bytes);
        return NULL;
    }
    AneSurface *s = calloc(1, sizeof *s);
    size_t alloc = (bytes + 63) & ~(size_t)63;
    if (s) s->base = aligned_alloc(64, alloc);
    if (!s || !s->base) {
        free(s);
        err_set(err, "out of memory allocating a %zu-byte surface", bytes);
        return NULL;
    }
    memset(s->base, 0, alloc);
    s->bytes = bytes;
    return s;
}

static void emu_surface_free(AneDevice *dev, AneSurface *s) {
    (void)dev;
    if (!s) return;
    free(s->base);
    free(s);
}

static void *emu_surface_lock(AneDevice *dev, AneSurface *s, int read_only) {
    (void)dev;
    if (!s) return NULL;
    if (read_only) s->locks_ro++;
    else s->locks_rw++;
    return s->base;
}

static void emu_surface_unlock(AneDevice *dev, AneSurface *s, int read_only) {
    (void)dev;
    if (!s) return;
    int *n = read_only ? &s->locks_ro : &s->locks_rw;
    if (*n > 0) (*n)--;
    else s->unbalanced++;
}

static size_t emu_surface_bytes(const AneSurface *s) { return s ? s->bytes : 0; }

static void emu_destroy(AneDevice *dev) { free(dev); }

void ane_emu_default_options(AneEmuOptions *opt) {
    opt->compile_budget = ANE_COMPILE_BUDGET_DEFAULT;
    opt->accumulate_fp32 = 1;
    opt->flush_subnormals = 0;
    opt->limits = ANE_LIMITS_STRICT;
}

AneDevice *ane_emu_create(const AneEmuOptions *opt, Err *err) {
    AneEmuOptions o;
    ane_emu_default_options(&o);
    if (opt) o = *opt;
    if (o.compile_budget < 1) {
        err_set(err, "ane_emu_create: compile_budget must be >= 1, found %d", o.compile_budget);
        return NULL;
    }
    EmuDevice *E = calloc(1, sizeof *E);
    if (!E) {
        err_set(err, "out of memory creating the emulated ANE device");
        return NULL;
    }
    E->opt = o;
    E->opt.accumulate_fp32 = o.accumulate_fp32 != 0;
    E->opt.flush_subnormals = o.flush_subnormals != 0;
    if (o.limits != ANE_LIMITS_STRICT && o.limits != ANE_LIMITS_PROBED) {
        free(E);
        err_set(err, "ane_emu_create: limits must be ANE_LIMITS_STRICT or ANE_LIMITS_PROBED, found %d", (int)o.limits);
        return NULL;
    }
    AneDevice *d = &E->dev;
    d->name = "emu";
    d->compile = emu_compile;
    d->evaluate = emu_evaluate;
    d->release = emu_release;
    d->program_io = emu_program_io;
    d->surface_create = emu_surface_create;
    d->surface_free = emu_surface_free;
    d->surface_lock = emu_surface_lock;
    d->surface_unlock = emu_surface_unlock;
    d->surface_bytes = emu_surface_bytes;
    d->compile_budget = o.compile_budget;
    d->destroy = emu_destroy;
    return &E->dev;
}
