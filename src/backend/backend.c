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
