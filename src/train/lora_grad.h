/*
** lora_grad.h — the training side of LoRA adapters (model/lora.h): the gradient of the adapter
** from a full gradient (the merged reference form), and the adapter as the optimizer sees it.
*/
#ifndef ANETRAIN_LORA_GRAD_H
#define ANETRAIN_LORA_GRAD_H

#include "../model/lora.h"
#include "../model/params.h"

/* adapter_grads += the projection of the full gradient grads (laid out by pl) onto the adapter:
** dA = s Bᵀ dW, dB = s dW Aᵀ, with A and B from adapter. */
void lora_grad(const LoraLayout *lo, const ParamLayout *pl, const float *grads, const float *adapter,
               float *adapter_grads);

/* A ParamLayout whose one tensor spans the adapter buffer (with weight decay), so adamw_step
** updates the adapter exactly as it updates parameters. Only the optimizer may use it. */
void lora_optim_layout(const LoraLayout *lo, ParamLayout *out);

#endif
