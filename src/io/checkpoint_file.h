/*
** checkpoint_file.h — the encoding our own files share, and reading a checkpoint's model.
**
** Our two files (train/checkpoint.h documents both: the full-training checkpoint and the LoRA
** training state) encode every field explicitly, fixed width, little-endian; open with a magic
** (model_file.h), a version, their header's length and, at the header's end, its crc32; and
** hold fp32 sections each followed by its crc32. This module is that encoding: the fields, the
** model config's 56 bytes, the header checks, the sections. It also reads the model part of a
** full-training checkpoint (config and parameters), all that loading a model needs
** (model_load_any); the training state, the moments and the LoRA training state are read and
** written by train/checkpoint.c with these pieces.
**
** The checkpoint's header (version 1, 192 bytes, every integer little-endian):
**   off   0  "ANECKPT\0"                      off  8  u32 version (1)
**   off  12  u32 header_bytes (192)
**   off  16  ModelConfig, 14 x 4 bytes: u32 family, i32 dim, hidden_dim, n_layers, n_heads,
**            n_kv_heads, head_dim, vocab_size, max_seq_len, f32 rope_theta, f32 norm_eps,
**            u32 qk_norm, u32 tied, u32 rope_style
**   off  72  TrainState, 104 bytes: i64 step, i64 tokens_seen, u64 loader.rng.s[4],
**            u64 loader.rows, u64 rng.s[4], f32 loss_scale, i32 clean_steps,
**            i64 skipped_steps
**   off 176  u64 n_floats                     off 184  u16 n_moments (0 or 2)
**   off 186  u16 ranks: the processes of the data-parallel run that wrote it (mpirun -np N, N > 1);
**            0 for one process, and in every file written before there were several (TrainState.ranks)
**   off 188  u32 crc32 of bytes [0, 188)
** then the sections params, m, v (m and v only when n_moments is 2), each n_floats
** little-endian fp32 followed by the u32 crc32 of those bytes.
*/
#ifndef ANETRAIN_CHECKPOINT_FILE_H
#define ANETRAIN_CHECKPOINT_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../model/params.h"
#include "../util/err.h"
#include "../util/fileio.h"

enum {
    CKPT_VERSION = 1,
    CKPT_OFF_CONFIG = 16,
    CKPT_OFF_STATE = 72,
    CKPT_OFF_N_FLOATS = 176,
    CKPT_OFF_N_MOMENTS = 184, /* u16, with ranks as the u16 at 186 */
    CKPT_OFF_CRC = 188,
    CKPT_HEADER_BYTES = 192,
    /* the TrainState's fields, from CKPT_OFF_STATE (the same in the LoRA training state) */
    CKPT_STATE_STEP = 0,
    CKPT_STATE_TOKENS_SEEN = 8,
    CKPT_STATE_LOADER_RNG = 16,
    CKPT_STATE_LOADER_ROWS = 48,
    CKPT_STATE_RNG = 56,
    CKPT_STATE_LOSS_SCALE = 88,
    CKPT_STATE_CLEAN_STEPS = 92,
    CKPT_STATE_SKIPPED_STEPS = 96,
    CKPT_STATE_BYTES = 104,
};

/* Fixed-width little-endian fields at p (no alignment needed), whatever the host's order.
** Signed values go through two's complement without implementation-defined conversions. */
void ckpt_put_u32(uint8_t *p, uint32_t x);
void ckpt_put_u64(uint8_t *p, uint64_t x);
void ckpt_put_i32(uint8_t *p, int32_t x);
void ckpt_put_i64(uint8_t *p, int64_t x);
void ckpt_put_f32(uint8_t *p, float x);
uint32_t ckpt_get_u32(const uint8_t *p);
uint64_t ckpt_get_u64(const uint8_t *p);
int32_t ckpt_get_i32(const uint8_t *p);
int64_t ckpt_get_i64(const uint8_t *p);
float ckpt_get_f32(const uint8_t *p);

/* The model config's 56 bytes at p (layout above). Decoding does not validate. */
void ckpt_encode_config(uint8_t *p, const ModelConfig *c);
void ckpt_decode_config(const uint8_t *p, ModelConfig *c);

/* Checks the counters of an encoded TrainState (its CKPT_STATE_BYTES at p): the counters a run
** can never produce negative, and a usable loss scale. Names the field and `path`. */
int ckpt_validate_state(const uint8_t *p, const char *path, Err *err);

/* The file holds exactly `expected` bytes (its header's sizes): fewer is a truncated file, more
** unexpected trailing data; the message names path and both sizes. */
int ckpt_check_file_size(const char *path, uint64_t file_bytes, uint64_t expected, Err *err);

/* The magic at h (got bytes read) is `magic`, the file kind `kind`; a file of the other kind
** (other_magic) is named as such: "this is <other_is>". Fewer than 8 bytes pass (the header check
** then reports the file as too short). */
int ckpt_check_magic(const uint8_t *h, size_t got, const char *path, const char *kind, const char *magic,
                     const char *other_magic, const char *other_is, Err *err);

/* The fields both file kinds' headers share, after the magic: version (at +8), header_bytes (at
** +12) and the header's own crc32 (at crc_off, over the bytes before it); got bytes were read
** of a file of file_bytes. `kind` names the file kind in the message. */
int ckpt_check_header_fields(const uint8_t *h, size_t got, uint64_t file_bytes, const char *path, const char *kind,
                             uint32_t version, uint32_t header_bytes, size_t crc_off, Err *err);

/* Writes n floats little-endian in big pieces, then their crc32. */
int ckpt_write_section(AtomicFile *af, const float *x, size_t n, Err *err);
/* Reads n floats and their crc32 into a new buffer, checking the crc; NULL on failure, with a
** message naming path and the section `name`. */
float *ckpt_read_section(FILE *fp, const char *path, const char *name, size_t n, Err *err);

/* Reads a checkpoint's header h from fp (a regular file of file_bytes) and checks everything it
** says before any section is touched: magic, version, header checksum, config, the state's
** counters, n_moments, n_floats against the config and the file's length against both. Fills
** *layout and *n_moments; h keeps the encoded TrainState for the caller. */
int ckpt_read_header(FILE *fp, const char *path, uint64_t file_bytes, uint8_t h[CKPT_HEADER_BYTES],
                     ParamLayout *layout, uint32_t *n_moments, Err *err);

/* Loads the model of a checkpoint: its config into *layout and, params non-NULL, its parameters
** into a malloc'ed *params (the moments, if any, are not read). The whole header is checked as
** by ckpt_read_header. params NULL: the header alone. */
int ckpt_model_load(const char *path, ParamLayout *layout, float **params, Err *err);

/* crc32 of n 4-byte words (floats or int32) as little-endian bytes, whatever the host's order. */
uint32_t ckpt_crc32_words(const void *words, size_t n);
/* The same continued from crc (the crc32 so far): ckpt_crc32_words(w, a + b) equals
** ckpt_crc32_words_update(ckpt_crc32_words(w, a), w + a, b). */
uint32_t ckpt_crc32_words_update(uint32_t crc, const void *words, size_t n);

/* 1 if path starts with the checkpoint magic. */
int ckpt_is_checkpoint(const char *path);

#endif
