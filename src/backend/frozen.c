/*
** frozen.c — the check every backend makes of a FrozenBase before it uses it (backend.h).
*/
#include "backend.h"

/* The shapes the layer matrices depend on: an adapter or int8 base made for a model with the
** same ones fits this one. */
static int same_layer_shapes(const ModelConfig *a, const ModelConfig *c) {
    return a->dim == c->dim && a->hidden_dim == c->hidden_dim && a->n_layers == c->n_layers &&
           a->n_heads == c->n_heads && a->n_kv_heads == c->n_kv_heads && a->head_dim == c->head_dim;
}

static int shape_mismatch(const char *backend, const char *what, const ModelConfig *a, const ModelConfig *c,
                          Err *err) {
    return err_set(err, "%s backend: the %s is for a model of dim %d, hidden %d, %d layers, %d/%d heads of %d; the "
                        "model is dim %d, hidden %d, %d layers, %d/%d heads of %d",
                   backend, what, a->dim, a->hidden_dim, a->n_layers, a->n_heads, a->n_kv_heads, a->head_dim, c->dim,
                   c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim);
}

int frozen_base_check(const FrozenBase *frozen, const ParamLayout *layout, const char *backend, Err *err) {
    if (!frozen) return 0;
    if (frozen->lora && !same_layer_shapes(&frozen->lora->model, &layout->cfg))
        return shape_mismatch(backend, "LoRA layout", &frozen->lora->model, &layout->cfg, err);
    if (frozen->int8 && !same_layer_shapes(&frozen->int8->cfg, &layout->cfg))
        return shape_mismatch(backend, "int8 base", &frozen->int8->cfg, &layout->cfg, err);
    return 0;
}
