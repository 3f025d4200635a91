/*
** lora_grad.c — the training side of LoRA adapters (see lora_grad.h): the projection of a full
** gradient onto the adapter, and the layout the optimizer updates the adapter by.
*/
#include "lora_grad.h"

#include <string.h>

#include "../util/blas.h"

void lora_optim_layout(const LoraLayout *lo, ParamLayout *out) {
    memset(out, 0, sizeof *out);
    out->cfg = lo->model;
    TensorSpec *t = &out->t[T_TOK_EMB]; /* any slot: adamw_step reads present, offset, numel, decay */
    t->name = "lora";
    t->present = 1;
    t->layers = 1;
    t->rows = 1;
    t->cols = (int)lo->n_floats;
    t->offset = 0;
    t->numel = lo->n_floats;
    t->decay = 1; /* lora_A/lora_B are weights: decayed when a weight decay is set, as in HF's Trainer */
    out->n_floats = lo->n_floats;
}

void lora_grad(const LoraLayout *lo, const ParamLayout *pl, const float *grads, const float *adapter,
               float *adapter_grads) {
    int r = lo->cfg.rank;
    for (int m = 0; m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo->t[m];
        if (!t->present) continue;
        for (int l = 0; l < lo->model.n_layers; l++) {
            const float *dW = params_tensor(pl, (float *)grads, t->base, l); /* [out][in] */
            const float *A = lora_A(lo, (float *)adapter, (LoraModule)m, l);
            const float *B = lora_B(lo, (float *)adapter, (LoraModule)m, l);
            float *dA = lora_A(lo, adapter_grads, (LoraModule)m, l);
            float *dB = lora_B(lo, adapter_grads, (LoraModule)m, l);
            /* dA [r][in] += s Bᵀ [r][out] dW [out][in] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, t->in, t->out, lo->scale, B, r, dW, t->in, 1.0f,
                        dA, t->in);
            /* dB [out][r] += s dW [out][in] Aᵀ [in][r] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t->out, r, t->in, lo->scale, dW, t->in, A, t->in,
                        1.0f, dB, r);
        }
    }
}
