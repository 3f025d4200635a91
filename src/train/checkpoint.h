/*
** checkpoint.h — our own resumable checkpoint.
**
** Holds everything needed to continue a run bit for bit: the model config, the parameters,
** both AdamW moments, the step counter, the loader state (RNG + rows), the trainer's RNG,
** and the loss-scaling state. Layout (little-endian):
**   "ANECKPT\0"   magic                  u32 version (1)       u32 header_bytes
**   ModelConfig fields (fixed-width, see checkpoint.c)       TrainState fields
**   u64 n_floats  u32 n_moments (0: params only, 2: m and v follow)  u32 crc32 of the header so far
**   sections: params, m, v, each n_floats fp32 followed by its u32 crc32
** Written atomically (temporary file in the same directory, fsync, rename, fsync dir). The
** byte layout of the header and the encoding both files share: io/checkpoint_file.h, which also
** reads a checkpoint's model alone (ckpt_model_load, for model_load_any).
** The reader checks magic, version, sizes against the file length and every checksum, and
** names the file and the section that is wrong.
**
** LoRA training state (lora_state_save/_load): what `finetune --resume` continues from. The
** base model is frozen and not stored; the file identifies it (its config and the crc32 of its
** fp32 parameters) and holds the adapter, its two AdamW moments, the TrainState, the LoRA config
** and the run's options that shape the data stream (seed, batch, seq, accum, order, val_frac,
** the training split's length and crc32; JSON-lines examples: the training rows' counted targets
** and crc32, Trainer.train_rows_crc32). Same encoding rules, same atomic write, same checks:
**   "ANELORA\0"   magic                  u32 version (1)       u32 header_bytes (260)
**   ModelConfig of the base (as above)   TrainState (as above)
**   LoraConfig: i32 rank, f32 alpha, f32 dropout, u32 rslora, u32 targets (bit m: module m)
**   u16 int8  u16 ranks (TrainState.ranks)  u64 seed  i32 batch, seq, accum  u32 order  f64 val_frac  u64 train_tokens
**   u32 train_crc32  u32 base_crc32  u64 n_floats (the adapter's, = lora_layout's)
**   u32 crc32 of the header so far
**   sections: adapter, m, v, each n_floats fp32 followed by its u32 crc32
** A full-training checkpoint given as a LoRA state (or the reverse) is refused by its magic,
** with a message saying which kind of file it is.
*/
#ifndef ANETRAIN_CHECKPOINT_H
#define ANETRAIN_CHECKPOINT_H

#include <stdint.h>

#include "../data/loader.h"
#include "../io/checkpoint_file.h" /* the encoding, ckpt_crc32_words, ckpt_is_checkpoint */
#include "../io/model_file.h"      /* CKPT_MAGIC, LORA_STATE_MAGIC */
#include "../model/lora.h"
#include "../model/params.h"
#include "../util/err.h"
#include "../util/rng.h"

typedef struct {
    int64_t step;        /* optimizer steps completed */
    int64_t tokens_seen; /* training tokens consumed */
    LoaderState loader;
    Rng rng;             /* trainer RNG (dropout and the like) */
    float loss_scale;    /* dynamic loss scale (1 when scaling is off, as on the CPU backend) */
    int32_t clean_steps; /* steps since the scale last changed */
    int64_t skipped_steps; /* steps skipped for inf/NaN gradients (AdamW's t = step - skipped) */
    int32_t ranks;       /* processes of the data-parallel run (mpirun -np N); 0 or 1: one. Stored in
                         ** the header's u16 beside n_moments (checkpoint) or int8 (LoRA state), not in
                         ** the TrainState's bytes; a resume needs the same number (trainer_init) */
} TrainState;

/* Saves config, params and (if non-NULL) moments m and v. Without moments the checkpoint can
** still initialize a model or a fine-tune, but not --resume. A NULL state saves step 0, loss scale 1. */
int ckpt_save(const char *path, const ParamLayout *layout, const float *params, const float *m, const float *v,
              const TrainState *state, Err *err);

/* Loads a checkpoint. *params, *m, *v are malloc'ed (m and v may come back NULL when the
** file holds none; pass m == NULL to skip reading them). state may be NULL. */
int ckpt_load(const char *path, ParamLayout *layout, float **params, float **m, float **v, TrainState *state,
              Err *err);

/* A LoRA run's identity and state: everything of the training state file but its sections. */
typedef struct {
    ModelConfig base;      /* the frozen base's config */
    uint32_t base_crc32;   /* ckpt_crc32_words over the base's fp32 parameters (before any int8) */
    LoraConfig lora;
    int int8;              /* 1: the base's layer matrices ran as int8 */
    uint64_t seed;         /* the run's seed (adapter init, data order, dropout masks) */
    int batch, seq, accum;
    LoaderOrder order;
    double val_frac;
    uint64_t train_tokens; /* length of the training split (examples: the training rows' counted targets) */
    uint32_t train_crc32;  /* ckpt_crc32_words over its ids (int32; examples: Trainer.train_rows_crc32) */
    TrainState state;
} LoraRunState;

/* Saves a LoRA run: rs, then the adapter and its moments m, v (n_floats each, which must be
** lora_layout(rs->base, rs->lora)'s). */
int lora_state_save(const char *path, const LoraRunState *rs, const float *adapter, const float *m, const float *v,
                    size_t n_floats, Err *err);
/* Loads a LoRA training state. With adapter NULL only the header is read and checked (m and v
** are then ignored); otherwise *adapter, *m and *v are malloc'ed. *n_floats may be NULL. */
int lora_state_load(const char *path, LoraRunState *rs, size_t *n_floats, float **adapter, float **m, float **v,
                    Err *err);

#endif
