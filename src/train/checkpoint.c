/*
** checkpoint.c — our resumable checkpoint (see checkpoint.h).
**
** This module writes and reads the whole state of a run. It must never dump a struct to disk
** (padding, enum widths and host byte order would leak into the file): every field is
** encoded explicitly, fixed width, little-endian. It must never leave a partial file at the
** destination (AtomicFile), and never hand back data it has not checked: magic, version,
** header checksum, config, sizes against the file length, and each section's checksum.
**
** The full-training checkpoint's header and the encoding both files share (fields, config,
** header checks, sections) are io/checkpoint_file.h's; what is here is the training state: the
** TrainState's fields, the moments, and the LoRA training state.
**
** LoRA training state, version 1, header 260 bytes (config and TrainState as in the checkpoint):
**   off   0  "ANELORA\0"   off 8 u32 version (1)   off 12 u32 header_bytes (260)
**   off  16  ModelConfig of the base            off  72  TrainState
**   off 176  i32 rank, f32 alpha, f32 dropout, u32 rslora, u32 targets
**   off 196  u16 int8      off 198  u16 ranks (0: one process; TrainState.ranks)   off 200  u64 seed     off 208  i32 batch, seq, accum
**   off 220  u32 order     off 224  f64 val_frac (its IEEE bits as u64)
**   off 232  u64 train_tokens   off 240  u32 train_crc32   off 244  u32 base_crc32
**   off 248  u64 n_floats  off 256  u32 crc32 of bytes [0, 256)
** then the sections adapter, m, v: n_floats little-endian fp32 each, each followed by its crc32.
*/
#include "checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../io/checkpoint_file.h"
#include "../util/fileio.h"

static const char *const section_names[3] = {"params", "m", "v"};
static const char *const lora_section_names[3] = {"adapter", "m", "v"};

enum {
    LORA_STATE_VERSION = 1,
    LORA_OFF_LORA = 176,
    LORA_OFF_INT8 = 196,
    LORA_OFF_SEED = 200,
    LORA_OFF_BATCH = 208,
    LORA_OFF_SEQ = 212,
    LORA_OFF_ACCUM = 216,
    LORA_OFF_ORDER = 220,
    LORA_OFF_VAL_FRAC = 224,
    LORA_OFF_TRAIN_TOKENS = 232,
    LORA_OFF_TRAIN_CRC = 240,
    LORA_OFF_BASE_CRC = 244,
    LORA_OFF_N_FLOATS = 248,
    LORA_OFF_CRC = 256,
    LORA_HEADER_BYTES = 260,
};

/* ---------------------------------------------------------------- the training state */

static void ckpt_encode_rng(uint8_t *p, const Rng *r) {
    for (int i = 0; i < 4; i++) ckpt_put_u64(p + 8 * i, r->s[i]);
}
static void ckpt_decode_rng(const uint8_t *p, Rng *r) {
    for (int i = 0; i < 4; i++) r->s[i] = ckpt_get_u64(p + 8 * i);
}

static void ckpt_encode_state(uint8_t *p, const TrainState *s) {
    ckpt_put_i64(p + CKPT_STATE_STEP, s->step);
    ckpt_put_i64(p + CKPT_STATE_TOKENS_SEEN, s->tokens_seen);
    ckpt_encode_rng(p + CKPT_STATE_LOADER_RNG, &s->loader.rng);
    ckpt_put_u64(p + CKPT_STATE_LOADER_ROWS, s->loader.rows);
    ckpt_encode_rng(p + CKPT_STATE_RNG, &s->rng);
    ckpt_put_f32(p + CKPT_STATE_LOSS_SCALE, s->loss_scale);
    ckpt_put_i32(p + CKPT_STATE_CLEAN_STEPS, s->clean_steps);
    ckpt_put_i64(p + CKPT_STATE_SKIPPED_STEPS, s->skipped_steps);
}

static void ckpt_decode_state(const uint8_t *p, TrainState *s) {
    memset(s, 0, sizeof *s);
    s->step = ckpt_get_i64(p + CKPT_STATE_STEP);
    s->tokens_seen = ckpt_get_i64(p + CKPT_STATE_TOKENS_SEEN);
    ckpt_decode_rng(p + CKPT_STATE_LOADER_RNG, &s->loader.rng);
    s->loader.rows = ckpt_get_u64(p + CKPT_STATE_LOADER_ROWS);
    ckpt_decode_rng(p + CKPT_STATE_RNG, &s->rng);
    s->loss_scale = ckpt_get_f32(p + CKPT_STATE_LOSS_SCALE);
    s->clean_steps = ckpt_get_i32(p + CKPT_STATE_CLEAN_STEPS);
    s->skipped_steps = ckpt_get_i64(p + CKPT_STATE_SKIPPED_STEPS);
}

/* The state's counters checked as a reader checks them (ckpt_validate_state on its encoding). */
static int ckpt_validate_train_state(const TrainState *s, const char *path, Err *err) {
    uint8_t p[CKPT_STATE_BYTES];
    ckpt_encode_state(p, s);
    return ckpt_validate_state(p, path, err);
}

/* The u16 that stores TrainState.ranks: 0 for one process (as in every earlier file), else N. */
static uint32_t ranks_field(const TrainState *s) {
    return s->ranks > 1 && s->ranks <= 0xffff ? (uint32_t)s->ranks : 0;
}

/* ---------------------------------------------------------------- saving */

int ckpt_save(const char *path, const ParamLayout *layout, const float *params, const float *m, const float *v,
              const TrainState *state, Err *err) {
    if (config_validate(&layout->cfg, path, err) != 0) return -1;
    if ((m == NULL) != (v == NULL))
        return err_set(err, "%s: moments: expected both m and v or neither, found only %s", path, m ? "m" : "v");
    TrainState blank = {.loss_scale = 1.0f};
    if (!state) state = &blank;
    if (ckpt_validate_train_state(state, path, err) != 0) return -1;
    if (state->ranks < 0 || state->ranks > 0xffff)
        return err_set(err, "%s: field ranks: expected 0..65535, found %d", path, (int)state->ranks);

    uint8_t h[CKPT_HEADER_BYTES] = {0};
    memcpy(h, CKPT_MAGIC, 8);
    ckpt_put_u32(h + 8, CKPT_VERSION);
    ckpt_put_u32(h + 12, CKPT_HEADER_BYTES);
    ckpt_encode_config(h + CKPT_OFF_CONFIG, &layout->cfg);
    ckpt_encode_state(h + CKPT_OFF_STATE, state);
    ckpt_put_u64(h + CKPT_OFF_N_FLOATS, (uint64_t)layout->n_floats);
    ckpt_put_u32(h + CKPT_OFF_N_MOMENTS, (m ? 2u : 0u) | ranks_field(state) << 16);
    ckpt_put_u32(h + CKPT_OFF_CRC, crc32_update(0, h, CKPT_OFF_CRC));

    AtomicFile af;
    if (atomic_file_open(&af, path, err) != 0) return -1;
    const float *sections[3] = {params, m, v};
    int rc = atomic_file_write(&af, h, sizeof h, err);
    for (int s = 0; s < 3 && rc == 0 && sections[s]; s++)
        rc = ckpt_write_section(&af, sections[s], layout->n_floats, err);
    if (rc != 0) {
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af, err);
}

/* ---------------------------------------------------------------- loading */

int ckpt_load(const char *path, ParamLayout *layout, float **params, float **m, float **v, TrainState *state,
              Err *err) {
    float **out[3] = {params, m, v};
    for (int s = 0; s < 3; s++)
        if (out[s]) *out[s] = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return err_set(err, "%s: not a regular file", path);
    }
    uint32_t n_moments = 0;
    uint8_t h[CKPT_HEADER_BYTES];
    int rc = ckpt_read_header(fp, path, (uint64_t)st.st_size, h, layout, &n_moments, err);
    size_t n = layout->n_floats;
    for (int s = 0; rc == 0 && s < 1 + (int)n_moments; s++) {
        if (out[s]) {
            *out[s] = ckpt_read_section(fp, path, section_names[s], n, err);
            if (!*out[s]) rc = -1;
        } else if (s + 1 < 1 + (int)n_moments && fseeko(fp, (off_t)(n * 4 + 4), SEEK_CUR) != 0) {
            /* The caller does not want this section; step over it (nothing to skip after the last). */
            rc = err_set(err, "%s: section %s: cannot skip: %s", path, section_names[s], strerror(errno));
        }
    }
    fclose(fp);
    if (rc != 0) {
        for (int s = 0; s < 3; s++) {
            if (out[s]) {
                free(*out[s]);
                *out[s] = NULL;
            }
        }
        return -1;
    }
    if (state) {
        ckpt_decode_state(h + CKPT_OFF_STATE, state);
        state->ranks = (int32_t)(ckpt_get_u32(h + CKPT_OFF_N_MOMENTS) >> 16);
    }
    return 0;
}

/* ---------------------------------------------------------------- LoRA training state */

static void lora_encode_header(uint8_t *h, const LoraRunState *rs, size_t n_floats) {
    memset(h, 0, LORA_HEADER_BYTES);
    memcpy(h, LORA_STATE_MAGIC, 8);
    ckpt_put_u32(h + 8, LORA_STATE_VERSION);
    ckpt_put_u32(h + 12, LORA_HEADER_BYTES);
    ckpt_encode_config(h + CKPT_OFF_CONFIG, &rs->base);
    ckpt_encode_state(h + CKPT_OFF_STATE, &rs->state);
    uint8_t *l = h + LORA_OFF_LORA;
    ckpt_put_i32(l + 0, rs->lora.rank);
    ckpt_put_f32(l + 4, rs->lora.alpha);
    ckpt_put_f32(l + 8, rs->lora.dropout);
    ckpt_put_u32(l + 12, (uint32_t)rs->lora.rslora);
    ckpt_put_u32(l + 16, rs->lora.targets);
    ckpt_put_u32(h + LORA_OFF_INT8, (uint32_t)rs->int8 | ranks_field(&rs->state) << 16);
    ckpt_put_u64(h + LORA_OFF_SEED, rs->seed);
    ckpt_put_i32(h + LORA_OFF_BATCH, rs->batch);
    ckpt_put_i32(h + LORA_OFF_SEQ, rs->seq);
    ckpt_put_i32(h + LORA_OFF_ACCUM, rs->accum);
    ckpt_put_u32(h + LORA_OFF_ORDER, (uint32_t)rs->order);
    uint64_t vf;
    memcpy(&vf, &rs->val_frac, 8);
    ckpt_put_u64(h + LORA_OFF_VAL_FRAC, vf);
    ckpt_put_u64(h + LORA_OFF_TRAIN_TOKENS, rs->train_tokens);
    ckpt_put_u32(h + LORA_OFF_TRAIN_CRC, rs->train_crc32);
    ckpt_put_u32(h + LORA_OFF_BASE_CRC, rs->base_crc32);
    ckpt_put_u64(h + LORA_OFF_N_FLOATS, (uint64_t)n_floats);
    ckpt_put_u32(h + LORA_OFF_CRC, crc32_update(0, h, LORA_OFF_CRC));
}

static void lora_decode_header(const uint8_t *h, LoraRunState *rs) {
    memset(rs, 0, sizeof *rs);
    ckpt_decode_config(h + CKPT_OFF_CONFIG, &rs->base);
    ckpt_decode_state(h + CKPT_OFF_STATE, &rs->state);
    const uint8_t *l = h + LORA_OFF_LORA;
    rs->lora.rank = ckpt_get_i32(l + 0);
    rs->lora.alpha = ckpt_get_f32(l + 4);
    rs->lora.dropout = ckpt_get_f32(l + 8);
    rs->lora.rslora = ckpt_get_i32(l + 12);
    rs->lora.targets = ckpt_get_u32(l + 16);
    rs->int8 = (int)(ckpt_get_u32(h + LORA_OFF_INT8) & 0xffff);
    rs->state.ranks = (int32_t)(ckpt_get_u32(h + LORA_OFF_INT8) >> 16);
    rs->seed = ckpt_get_u64(h + LORA_OFF_SEED);
    rs->batch = ckpt_get_i32(h + LORA_OFF_BATCH);
    rs->seq = ckpt_get_i32(h + LORA_OFF_SEQ);
    rs->accum = ckpt_get_i32(h + LORA_OFF_ACCUM);
    rs->order = (LoaderOrder)ckpt_get_i32(h + LORA_OFF_ORDER);
    uint64_t vf = ckpt_get_u64(h + LORA_OFF_VAL_FRAC);
    memcpy(&rs->val_frac, &vf, 8);
    rs->train_tokens = ckpt_get_u64(h + LORA_OFF_TRAIN_TOKENS);
    rs->train_crc32 = ckpt_get_u32(h + LORA_OFF_TRAIN_CRC);
    rs->base_crc32 = ckpt_get_u32(h + LORA_OFF_BASE_CRC);
}

/* The run options a run can have: what trainer_init itself would accept. */
static int lora_validate_run(const LoraRunState *rs, const char *path, Err *err) {
    if (rs->int8 != 0 && rs->int8 != 1) return err_set(err, "%s: field int8: expected 0 or 1, found %d", path, rs->int8);
    if (rs->batch < 1) return err_set(err, "%s: field batch: expected a positive integer, found %d", path, rs->batch);
    if (rs->seq < 1 || rs->seq > rs->base.max_seq_len)
        return err_set(err, "%s: field seq: expected 1..max_seq_len=%d, found %d", path, rs->base.max_seq_len, rs->seq);
    if (rs->accum < 1) return err_set(err, "%s: field accum: expected a positive integer, found %d", path, rs->accum);
    if (rs->order != ORDER_RANDOM && rs->order != ORDER_SEQUENTIAL)
        return err_set(err, "%s: field order: expected 0 (random) or 1 (sequential), found %d", path, (int)rs->order);
    if (!(rs->val_frac >= 0 && rs->val_frac < 1))
        return err_set(err, "%s: field val_frac: expected a value in [0, 1), found %g", path, rs->val_frac);
    return 0;
}

int lora_state_save(const char *path, const LoraRunState *rs, const float *adapter, const float *m, const float *v,
                    size_t n_floats, Err *err) {
    if (config_validate(&rs->base, path, err) != 0) return -1;
    LoraLayout lo;
    if (lora_layout(&lo, &rs->base, &rs->lora, path, err) != 0) return -1;
    if (lo.n_floats != n_floats)
        return err_set(err, "%s: adapter: expected %zu floats (the layout of its LoRA config), found %zu", path,
                       lo.n_floats, n_floats);
    if (!adapter || !m || !v) return err_set(err, "%s: a LoRA training state needs the adapter, m and v", path);
    if (ckpt_validate_train_state(&rs->state, path, err) != 0 || lora_validate_run(rs, path, err) != 0) return -1;
    uint8_t h[LORA_HEADER_BYTES];
    lora_encode_header(h, rs, n_floats);
    AtomicFile af;
    if (atomic_file_open(&af, path, err) != 0) return -1;
    const float *sections[3] = {adapter, m, v};
    int rc = atomic_file_write(&af, h, sizeof h, err);
    for (int s = 0; s < 3 && rc == 0; s++) rc = ckpt_write_section(&af, sections[s], n_floats, err);
    if (rc != 0) {
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af, err);
}

/* Reads and checks the header of a LoRA training state, sizes against the file length included. */
static int lora_read_header(FILE *fp, const char *path, uint64_t file_bytes, LoraRunState *rs, size_t *n_floats,
                            Err *err) {
    uint8_t h[LORA_HEADER_BYTES];
    size_t got = fread(h, 1, sizeof h, fp);
    if (ckpt_check_magic(h, got, path, "LoRA training state", LORA_STATE_MAGIC, CKPT_MAGIC,
                         "a full-training checkpoint (continue it with train --resume, or fine-tune it with --init)",
                         err) != 0)
        return -1;
    if (ckpt_check_header_fields(h, got, file_bytes, path, "LoRA training state", LORA_STATE_VERSION, LORA_HEADER_BYTES,
                            LORA_OFF_CRC, err) != 0)
        return -1;
    LoraRunState st;
    lora_decode_header(h, &st);
    if (config_validate(&st.base, path, err) != 0) return -1;
    if (ckpt_validate_state(h + CKPT_OFF_STATE, path, err) != 0 || lora_validate_run(&st, path, err) != 0) return -1;
    LoraLayout lo;
    if (lora_layout(&lo, &st.base, &st.lora, path, err) != 0) return -1;
    uint64_t n = ckpt_get_u64(h + LORA_OFF_N_FLOATS);
    if (n != (uint64_t)lo.n_floats)
        return err_set(err, "%s: field n_floats: expected %zu (the adapter size of the stored LoRA config), found %llu",
                       path, lo.n_floats, (unsigned long long)n);
    uint64_t expected = LORA_HEADER_BYTES + 3 * (n * 4 + 4);
    if (ckpt_check_file_size(path, file_bytes, expected, err) != 0) return -1;
    *rs = st;
    *n_floats = lo.n_floats;
    return 0;
}

int lora_state_load(const char *path, LoraRunState *rs, size_t *n_floats, float **adapter, float **m, float **v,
                    Err *err) {
    float **out[3] = {adapter, m, v};
    if (adapter)
        for (int s = 0; s < 3; s++)
            if (out[s]) *out[s] = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return err_set(err, "%s: not a regular file", path);
    }
    LoraRunState rstate;
    size_t n = 0;
    int rc = lora_read_header(fp, path, (uint64_t)st.st_size, &rstate, &n, err);
    if (rc == 0 && adapter) {
        if (!m || !v) rc = err_set(err, "%s: loading the adapter takes its moments too", path);
        for (int s = 0; rc == 0 && s < 3; s++) {
            *out[s] = ckpt_read_section(fp, path, lora_section_names[s], n, err);
            if (!*out[s]) rc = -1;
        }
    }
    fclose(fp);
    if (rc != 0) {
        if (adapter)
            for (int s = 0; s < 3; s++) {
                if (out[s]) {
                    free(*out[s]);
                    *out[s] = NULL;
                }
            }
        return -1;
    }
    *rs = rstate;
    if (n_floats) *n_floats = n;
    return 0;
}
