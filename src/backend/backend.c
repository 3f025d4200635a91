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

int backend_step_args_check(const char *backend, const StepArgs *a, int has_lora, int int8, int max_B, int max_T,
                            Err *err) {
    if (!a->params) return err_set(err, "%s backend: StepArgs.params: expected the parameters, found NULL", backend);
    if (!has_lora && (a->adapter || a->adapter_grads))
        return err_set(err, "%s backend: StepArgs.adapter: expected NULL (the backend was created without one), found "
                            "an adapter",
                       backend);
    if (!a->adapter && a->adapter_grads)
        return err_set(err, "%s backend: StepArgs.adapter is NULL but adapter_grads is not: the adapter to train is "
                            "missing",
                       backend);
    if ((has_lora || int8) && a->grads)
        return err_set(err, "%s backend: StepArgs.grads: expected NULL over a frozen base (%s), found a gradient "
                            "buffer: no base tensor has a gradient%s",
                       backend, has_lora ? "LoRA" : "int8",
                       has_lora ? "; the adapter's go to adapter_grads" : "; int8 weights do not train");
    if (a->B < 1 || a->B > max_B || a->T < 1 || a->T > max_T)
        return err_set(err, "%s backend: batch %dx%d outside the allocated %dx%d", backend, a->B, a->T, max_B, max_T);
    return 0;
}
