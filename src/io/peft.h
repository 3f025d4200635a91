/*
** peft.h — LoRA adapters (model/lora.h) as files: PEFT's adapter directory, which PEFT's
** PeftModel.from_pretrained loads on the HF export of the base (`anetrain convert BASE DIR`):
**     DIR/adapter_model.safetensors   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight
**                                     [r][in], ...lora_B.weight [out][r] (F32; F16/BF16 read)
**     DIR/adapter_config.json         peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha,
**                                     lora_dropout, target_modules, bias "none", fan_in_fan_out
**                                     false, use_rslora, base_model_name_or_path, ...
** RoPE: a base with interleaved RoPE (llama2.c) has its wq/wk rows permuted when exported to
** HF (rotate-half). Since the rows of B A are the rows of B, the saver permutes the rows of B
** for q and k the same way, so the file matches the HF export; the loader applies the inverse.
*/
#ifndef ANETRAIN_PEFT_H
#define ANETRAIN_PEFT_H

#include "../model/lora.h"
#include "../model/params.h"
#include "../util/err.h"

/* Writes dir/adapter_model.safetensors and dir/adapter_config.json (creating dir), each
** atomically. base_model goes to base_model_name_or_path (may be NULL: null). */
int lora_save(const char *dir, const LoraLayout *lo, const float *adapter, const char *base_model, Err *err);

/* Reads a PEFT LoRA adapter directory for the model `model` (its shapes and RoPE style); *adapter
** is malloc'ed. Refuses, naming the file and field, what would not compute as PEFT does:
** DoRA, fan_in_fan_out, biases, per-module ranks or alphas, layer subsets, modules_to_save,
** regex target_modules, targets other than the seven matrices, missing or extra tensors. */
int lora_load(const char *dir, const ModelConfig *model, LoraLayout *lo, float **adapter, Err *err);

/* Loads the adapter in dir and merges it into params (laid out by pl) in place. */
int lora_apply(const char *dir, const ParamLayout *pl, float *params, Err *err);

#endif
