/*
** emu.h — what the emulated ANE device adds to the device seam (../device.h).
**
** The emulator counts successful compiles per process, across every emulated device, the
** way the real compiler's leak is reported (docs/ane-facts.md §1.8: about
** ANE_COMPILE_BUDGET_DEFAULT compiles per process, then compiles fail until the process
** restarts; whether unload releases anything is unknown, so here nothing does). That counter is the module's only global mutable state.
** dev->counters.compiles counts this device's own successful compiles; with one device per
** process (the normal case) the two agree.
*/
#ifndef ANETRAIN_ANE_EMU_H
#define ANETRAIN_ANE_EMU_H

#include <stdint.h>

#include "../device.h"

/* Successful emulated compiles in this process so far (read-only view of the budget counter). */
uint64_t ane_emu_process_compiles(void);

#endif
