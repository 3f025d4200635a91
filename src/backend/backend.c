/*
** backend.c — the one constructor of a backend by name (backend.h): "cpu" or "ane".
*/
#include "backend.h"

#include <string.h>

Backend *backend_create(const char *name, const ParamLayout *layout, int max_B, int max_T,
                        const AneBackendOptions *ane, Err *err) {
    if (!name || !strcmp(name, "cpu")) return backend_cpu_create(layout, max_B, max_T, err);
    if (!strcmp(name, "ane")) return backend_ane_create(layout, max_B, max_T, ane, err);
    err_set(err, "--backend: expected cpu or ane, found '%s'", name);
    return NULL;
}

Backend *backend_create_frozen(const char *name, const ParamLayout *layout, const FrozenBase *frozen, int max_B,
                               int max_T, const AneBackendOptions *ane, Err *err) {
    if (!name || !strcmp(name, "cpu")) return backend_cpu_create_frozen(layout, frozen, max_B, max_T, err);
    if (!strcmp(name, "ane")) return backend_ane_create_frozen(layout, frozen, max_B, max_T, ane, err);
    err_set(err, "--backend: expected cpu or ane, found '%s'", name);
    return NULL;
}
