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
** Written atomically (temporary file in the same directory, fsync, rename, fsync dir).
** The reader checks magic, version, sizes against the file length and every checksum, and
** names the file and the section that is wrong.
*/
#ifndef ANETRAIN_CHECKPOINT_H
#define ANETRAIN_CHECKPOINT_H

#include <stdint.h>

#include "../data/loader.h"
#include "../model/params.h"
#include "../util/err.h"
#include "../util/rng.h"

#define CKPT_MAGIC "ANECKPT"

typedef struct {
    int64_t step;        /* optimizer steps completed */
    int64_t tokens_seen; /* training tokens consumed */
    LoaderState loader;
    Rng rng;             /* trainer RNG (dropout and the like) */
    float loss_scale;    /* dynamic loss scale (1 when scaling is off, as on the CPU backend) */
    int32_t clean_steps; /* steps since the scale last changed */
    int64_t skipped_steps; /* steps skipped for inf/NaN gradients (AdamW's t = step - skipped) */
} TrainState;

/* Saves config, params and (if non-NULL) moments m and v. Without moments the checkpoint can
** still initialize a model or a fine-tune, but not --resume. A NULL state saves step 0, loss scale 1. */
int ckpt_save(const char *path, const ParamLayout *layout, const float *params, const float *m, const float *v,
              const TrainState *state, Err *err);

/* Loads a checkpoint. *params, *m, *v are malloc'ed (m and v may come back NULL when the
** file holds none; pass m == NULL to skip reading them). state may be NULL. */
int ckpt_load(const char *path, ParamLayout *layout, float **params, float **m, float **v, TrainState *state,
              Err *err);

/* 1 if path starts with the checkpoint magic. */
int ckpt_is_checkpoint(const char *path);

#endif
