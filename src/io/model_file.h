/*
** model_file.h — loading and saving whole models in the formats people have.
**
**   llama2.c .bin  legacy "version 0" (see README "Formats"): 7 int32 header + fp32 tensors.
**                  RoPE pairs are interleaved; the file cannot hold qk-norm, a head_dim other
**                  than dim/n_heads, or the RoPE theta / norm eps (10000 and 1e-5 are implied).
**   HF directory   config.json + model.safetensors (or model.safetensors.index.json with
**                  shards); F32, F16 and BF16 tensors are read, F32 is written. HF Llama and
**                  Qwen3 use rotate-half RoPE.
**
** A loaded model keeps the RoPE style of its file (the CPU ops implement both). Saving into
** a format of the other style permutes the rows of wq and wk within each head (and the
** q_norm/k_norm weights), exactly as HF's Llama converter does, so logits are unchanged.
** Writers are atomic: a temporary file in the same directory, fsync, rename.
*/
#ifndef ANETRAIN_MODEL_FILE_H
#define ANETRAIN_MODEL_FILE_H

#include "../model/params.h"
#include "../util/err.h"

/* The magics (8 bytes with the NUL) opening our own files, written and checked by
** train/checkpoint.c: a full-training checkpoint and a LoRA training state. They live here
** because model_format_detect recognizes a checkpoint by its magic. */
#define CKPT_MAGIC "ANECKPT"
#define LORA_STATE_MAGIC "ANELORA"

typedef enum { MODEL_FORMAT_UNKNOWN, MODEL_FORMAT_LLAMA2C, MODEL_FORMAT_HF, MODEL_FORMAT_CHECKPOINT } ModelFormat;

/* Guesses the format of `path`: a directory holding config.json is HF; a file starting with
** our checkpoint magic is a checkpoint; a file whose size matches a plausible llama2.c
** header is llama2.c; anything else is UNKNOWN. */
ModelFormat model_format_detect(const char *path);
const char *model_format_name(ModelFormat f);

/* Loads a llama2.c .bin. On success *params is a malloc'ed buffer laid out by *layout. */
int llama2c_load(const char *path, ParamLayout *layout, float **params, Err *err);
/* Reads only the config of a llama2.c .bin (its header, checked against the file's size). */
int llama2c_config_load(const char *path, ModelConfig *cfg, Err *err);
/* Saves as llama2.c .bin (shared classifier when tied, else negative vocab + wcls). */
int llama2c_save(const char *path, const ParamLayout *layout, const float *params, Err *err);

/* Loads a HF model directory (config.json + safetensors). */
int hf_load(const char *dir, ParamLayout *layout, float **params, Err *err);
/* Creates dir if needed and writes config.json and model.safetensors (F32). */
int hf_save(const char *dir, const ParamLayout *layout, const float *params, Err *err);

/* Parses a HF config.json (model_type llama or qwen3) into cfg. Rejects what anetrain
** cannot run exactly (attention/mlp bias, rope_scaling, sliding window, other activations). */
int hf_config_load(const char *path, ModelConfig *cfg, Err *err);
/* Writes a HF config.json for cfg (architectures, model_type, torch_dtype float32, ...). */
int hf_config_save(const char *path, const ModelConfig *cfg, Err *err);

/* Loads weights from any model file anetrain reads (checkpoint, llama2.c .bin, HF directory), by
** model_format_detect; a file that is none of them gets the message of what it most likely is.
** Used by train --init, eval, convert and sample. */
int model_load_any(const char *path, ParamLayout *layout, float **params, Err *err);
/* Reads only the config of any model file model_load_any reads (a checkpoint's header, a HF
** config.json, a llama2.c header): no weights are loaded. */
int model_config_load_any(const char *path, ModelConfig *cfg, Err *err);

/* Permutes the rows of wq and wk (and q_norm/k_norm) of every layer in place so a model in
** RoPE style `from` computes the same function in style `to`; updates layout->cfg.rope_style. */
void params_convert_rope(ParamLayout *layout, float *params, RopeStyle to);

#endif
