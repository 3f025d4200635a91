/*
** backend.c — the one parser of a backend's name ("cpu" or "ane") and the one constructor of a
** backend by name (backend.h).
*/
#include "backend.h"

#include <string.h>

int backend_kind_parse(const char *s, BackendKind *out, Err *err) {
    if (!s || !strcmp(s, "cpu")) *out = BACKEND_CPU;
    else if (!strcmp(s, "ane")) *out = BACKEND_ANE;
    else return err_set(err, "expected cpu or ane, found '%s'", s);
    return 0;
}

const char *backend_kind_name(BackendKind kind) { return kind == BACKEND_ANE ? "ane" : "cpu"; }

Backend *backend_create(const char *name, const ParamLayout *layout, int max_B, int max_T,
                        const AneBackendOptions *ane, Err *err) {
    return backend_create_frozen(name, layout, NULL, max_B, max_T, ane, err);
}

Backend *backend_create_frozen(const char *name, const ParamLayout *layout, const FrozenBase *frozen, int max_B,
                               int max_T, const AneBackendOptions *ane, Err *err) {
    BackendKind kind = BACKEND_CPU;
    if (backend_kind_parse(name, &kind, err) != 0) {
        err_wrap(err, "--backend");
        return NULL;
    }
    if (kind == BACKEND_ANE) return backend_ane_create_frozen(layout, frozen, max_B, max_T, ane, err);
    return backend_cpu_create_frozen(layout, frozen, max_B, max_T, err);
}
