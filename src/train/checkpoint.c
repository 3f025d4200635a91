/*
** checkpoint.c — our resumable checkpoint (see checkpoint.h).
**
** This module writes and reads the whole state of a run. It must never dump a struct to disk
** (padding, enum widths and host byte order would leak into the file): every field is
** encoded explicitly, fixed width, little-endian. It must never leave a partial file at the
** destination (AtomicFile), and never hand back data it has not checked: magic, version,
** header checksum, config, sizes against the file length, and each section's checksum.
**
** Version 1 header, 192 bytes, every integer little-endian:
**   off   0  "ANECKPT\0"                      off  8  u32 version (1)
**   off  12  u32 header_bytes (192)
**   off  16  ModelConfig, 14 x 4 bytes: u32 family, i32 dim, hidden_dim, n_layers, n_heads,
**            n_kv_heads, head_dim, vocab_size, max_seq_len, f32 rope_theta, f32 norm_eps,
**            u32 qk_norm, u32 tied, u32 rope_style
**   off  72  TrainState, 104 bytes: i64 step, i64 tokens_seen, u64 loader.rng.s[4],
**            u64 loader.rows, u64 rng.s[4], f32 loss_scale, i32 clean_steps,
**            i64 skipped_steps
**   off 176  u64 n_floats                     off 184  u32 n_moments (0 or 2)
**   off 188  u32 crc32 of bytes [0, 188)
** then the sections params, m, v (m and v only when n_moments is 2), each n_floats
** little-endian fp32 followed by the u32 crc32 of those bytes.
**
** LoRA training state, version 1, header 260 bytes (config and TrainState encoded as above):
**   off   0  "ANELORA\0"   off 8 u32 version (1)   off 12 u32 header_bytes (260)
**   off  16  ModelConfig of the base            off  72  TrainState
**   off 176  i32 rank, f32 alpha, f32 dropout, u32 rslora, u32 targets
**   off 196  u32 int8      off 200  u64 seed     off 208  i32 batch, seq, accum
**   off 220  u32 order     off 224  f64 val_frac (its IEEE bits as u64)
**   off 232  u64 train_tokens   off 240  u32 train_crc32   off 244  u32 base_crc32
**   off 248  u64 n_floats  off 256  u32 crc32 of bytes [0, 256)
** then the sections adapter, m, v: n_floats little-endian fp32 each, each followed by its crc32.
*/
#include "checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../util/fileio.h"

enum {
    CKPT_VERSION = 1,
    CKPT_OFF_CONFIG = 16,
    CKPT_OFF_STATE = 72,
    CKPT_OFF_N_FLOATS = 176,
    CKPT_OFF_N_MOMENTS = 184,
    CKPT_OFF_CRC = 188,
    CKPT_HEADER_BYTES = 192,
    CKPT_CHUNK_FLOATS = 1 << 20, /* sections move in 4 MB pieces */
    CKPT_SWAP_FLOATS = 4096,     /* staging buffer of the big-endian path */
};

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

/* ---------------------------------------------------------------- fixed-width fields */

static void put_u32(uint8_t *p, uint32_t x) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t x) {
    put_u32(p, (uint32_t)x);
    put_u32(p + 4, (uint32_t)(x >> 32));
}
static void put_i32(uint8_t *p, int32_t x) { put_u32(p, (uint32_t)x); }
static void put_i64(uint8_t *p, int64_t x) { put_u64(p, (uint64_t)x); }
static void put_f32(uint8_t *p, float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    put_u32(p, u);
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }
/* Two's complement back to signed without relying on implementation-defined conversions. */
static int32_t get_i32(const uint8_t *p) {
    uint32_t u = get_u32(p);
    return u <= INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}
static int64_t get_i64(const uint8_t *p) {
    uint64_t u = get_u64(p);
    return u <= INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}
static float get_f32(const uint8_t *p) {
    uint32_t u = get_u32(p);
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static int host_is_little_endian(void) {
    const uint32_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static void swap_floats(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t b[4];
        memcpy(b, &x[i], 4);
        uint8_t t = b[0];
        b[0] = b[3];
        b[3] = t;
        t = b[1];
        b[1] = b[2];
        b[2] = t;
        memcpy(&x[i], b, 4);
    }
}

/* ---------------------------------------------------------------- header */

static void ckpt_encode_config(uint8_t *p, const ModelConfig *c) {
    put_u32(p + 0, (uint32_t)c->family);
    put_i32(p + 4, c->dim);
    put_i32(p + 8, c->hidden_dim);
    put_i32(p + 12, c->n_layers);
    put_i32(p + 16, c->n_heads);
    put_i32(p + 20, c->n_kv_heads);
    put_i32(p + 24, c->head_dim);
    put_i32(p + 28, c->vocab_size);
    put_i32(p + 32, c->max_seq_len);
    put_f32(p + 36, c->rope_theta);
    put_f32(p + 40, c->norm_eps);
    put_u32(p + 44, (uint32_t)c->qk_norm);
    put_u32(p + 48, (uint32_t)c->tied);
    put_u32(p + 52, (uint32_t)c->rope_style);
}

static void ckpt_decode_config(const uint8_t *p, ModelConfig *c) {
    memset(c, 0, sizeof *c);
    /* Enum fields go through int so config_validate sees (and names) any stray value. */
    c->family = (ModelFamily)get_i32(p + 0);
    c->dim = get_i32(p + 4);
    c->hidden_dim = get_i32(p + 8);
    c->n_layers = get_i32(p + 12);
    c->n_heads = get_i32(p + 16);
    c->n_kv_heads = get_i32(p + 20);
    c->head_dim = get_i32(p + 24);
    c->vocab_size = get_i32(p + 28);
    c->max_seq_len = get_i32(p + 32);
    c->rope_theta = get_f32(p + 36);
    c->norm_eps = get_f32(p + 40);
    c->qk_norm = get_i32(p + 44);
    c->tied = get_i32(p + 48);
    c->rope_style = (RopeStyle)get_i32(p + 52);
}

static void ckpt_encode_rng(uint8_t *p, const Rng *r) {
    for (int i = 0; i < 4; i++) put_u64(p + 8 * i, r->s[i]);
}
static void ckpt_decode_rng(const uint8_t *p, Rng *r) {
    for (int i = 0; i < 4; i++) r->s[i] = get_u64(p + 8 * i);
}

static void ckpt_encode_state(uint8_t *p, const TrainState *s) {
    put_i64(p + 0, s->step);
    put_i64(p + 8, s->tokens_seen);
    ckpt_encode_rng(p + 16, &s->loader.rng);
    put_u64(p + 48, s->loader.rows);
    ckpt_encode_rng(p + 56, &s->rng);
    put_f32(p + 88, s->loss_scale);
    put_i32(p + 92, s->clean_steps);
    put_i64(p + 96, s->skipped_steps);
}

static void ckpt_decode_state(const uint8_t *p, TrainState *s) {
    memset(s, 0, sizeof *s);
    s->step = get_i64(p + 0);
    s->tokens_seen = get_i64(p + 8);
    ckpt_decode_rng(p + 16, &s->loader.rng);
    s->loader.rows = get_u64(p + 48);
    ckpt_decode_rng(p + 56, &s->rng);
    s->loss_scale = get_f32(p + 88);
    s->clean_steps = get_i32(p + 92);
    s->skipped_steps = get_i64(p + 96);
}

/* The counters a run can never produce negative, and a usable loss scale. */
static int ckpt_validate_state(const TrainState *s, const char *path, Err *err) {
    if (s->step < 0) return err_set(err, "%s: field step: expected >= 0, found %lld", path, (long long)s->step);
    if (s->tokens_seen < 0)
        return err_set(err, "%s: field tokens_seen: expected >= 0, found %lld", path, (long long)s->tokens_seen);
    if (!(isfinite(s->loss_scale) && s->loss_scale > 0.0f))
        return err_set(err, "%s: field loss_scale: expected a finite value > 0, found %g", path,
                       (double)s->loss_scale);
    if (s->clean_steps < 0)
        return err_set(err, "%s: field clean_steps: expected >= 0, found %d", path, (int)s->clean_steps);
    if (s->skipped_steps < 0 || s->skipped_steps > s->step)
        return err_set(err, "%s: field skipped_steps: expected 0..step=%lld, found %lld", path, (long long)s->step,
                       (long long)s->skipped_steps);
    return 0;
}

/* ---------------------------------------------------------------- saving */

/* Writes n floats little-endian in big pieces, then their crc32. */
static int ckpt_write_section(AtomicFile *af, const float *x, size_t n, Err *err) {
    atomic_file_crc_reset(af);
    int little = host_is_little_endian();
    float swapped[CKPT_SWAP_FLOATS];
    size_t chunk = little ? CKPT_CHUNK_FLOATS : CKPT_SWAP_FLOATS;
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        const float *src = x + i;
        if (!little) {
            memcpy(swapped, src, k * sizeof *src);
            swap_floats(swapped, k);
            src = swapped;
        }
        if (atomic_file_write(af, src, k * sizeof *src, err) != 0) return -1;
    }
    uint8_t crc[4];
    put_u32(crc, af->crc);
    return atomic_file_write(af, crc, sizeof crc, err);
}

int ckpt_save(const char *path, const ParamLayout *layout, const float *params, const float *m, const float *v,
              const TrainState *state, Err *err) {
    if (config_validate(&layout->cfg, path, err) != 0) return -1;
    if ((m == NULL) != (v == NULL))
        return err_set(err, "%s: moments: expected both m and v or neither, found only %s", path, m ? "m" : "v");
    TrainState blank = {.loss_scale = 1.0f};
    if (!state) state = &blank;
    if (ckpt_validate_state(state, path, err) != 0) return -1;

    uint8_t h[CKPT_HEADER_BYTES] = {0};
    memcpy(h, CKPT_MAGIC, 8);
    put_u32(h + 8, CKPT_VERSION);
    put_u32(h + 12, CKPT_HEADER_BYTES);
    ckpt_encode_config(h + CKPT_OFF_CONFIG, &layout->cfg);
    ckpt_encode_state(h + CKPT_OFF_STATE, state);
    put_u64(h + CKPT_OFF_N_FLOATS, (uint64_t)layout->n_floats);
    put_u32(h + CKPT_OFF_N_MOMENTS, m ? 2 : 0);
    put_u32(h + CKPT_OFF_CRC, crc32_update(0, h, CKPT_OFF_CRC));

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

/* The fields both file kinds' headers share, after the magic: version (at +8), header_bytes (at
** +12) and the header's own crc32 (at crc_off, over the bytes before it); got bytes were read. */
static int check_header_fields(const uint8_t *h, size_t got, uint64_t file_bytes, const char *path, const char *kind,
                               uint32_t version, uint32_t header_bytes, size_t crc_off, Err *err) {
    if (got < 12)
        return err_set(err, "%s: truncated header: expected at least %u bytes, found %llu bytes", path, header_bytes,
                       (unsigned long long)file_bytes);
    uint32_t found_version = get_u32(h + 8);
    if (found_version != version)
        return err_set(err, "%s: unsupported %s version: expected %u, found %u", path, kind, version, found_version);
    if (got < header_bytes)
        return err_set(err, "%s: truncated header: expected at least %u bytes, found %llu bytes", path, header_bytes,
                       (unsigned long long)file_bytes);
    uint32_t found_bytes = get_u32(h + 12);
    if (found_bytes != header_bytes)
        return err_set(err, "%s: field header_bytes: expected %u, found %u", path, header_bytes, found_bytes);
    uint32_t crc = get_u32(h + crc_off), want = crc32_update(0, h, crc_off);
    if (crc != want)
        return err_set(err, "%s: section header: checksum mismatch (stored crc32 %08x, computed %08x)", path, crc,
                       want);
    return 0;
}

/* Reads the header and checks everything it says before any section is touched. */
static int ckpt_read_header(FILE *fp, const char *path, uint64_t file_bytes, ParamLayout *layout, TrainState *state,
                            uint32_t *n_moments, Err *err) {
    uint8_t h[CKPT_HEADER_BYTES];
    size_t got = fread(h, 1, sizeof h, fp);
    if (got >= 8 && memcmp(h, LORA_STATE_MAGIC, 8) == 0)
        return err_set(err, "%s: not a checkpoint: expected magic \"%s\\0\", found \"%s\\0\": this is a LoRA run's "
                            "training state (continue it with finetune --resume)", path, CKPT_MAGIC, LORA_STATE_MAGIC);
    if (got >= 8 && memcmp(h, CKPT_MAGIC, 8) != 0)
        return err_set(err,
                       "%s: not a checkpoint: expected magic \"%s\\0\", found bytes %02x %02x %02x %02x %02x %02x %02x "
                       "%02x",
                       path, CKPT_MAGIC, h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
    if (check_header_fields(h, got, file_bytes, path, "checkpoint", CKPT_VERSION, CKPT_HEADER_BYTES, CKPT_OFF_CRC,
                            err) != 0)
        return -1;

    ModelConfig cfg;
    ckpt_decode_config(h + CKPT_OFF_CONFIG, &cfg);
    if (config_validate(&cfg, path, err) != 0) return -1;
    TrainState st;
    ckpt_decode_state(h + CKPT_OFF_STATE, &st);
    if (ckpt_validate_state(&st, path, err) != 0) return -1;
    *n_moments = get_u32(h + CKPT_OFF_N_MOMENTS);
    if (*n_moments != 0 && *n_moments != 2)
        return err_set(err, "%s: field n_moments: expected 0 or 2, found %u", path, *n_moments);
    params_layout(layout, &cfg);
    uint64_t n_floats = get_u64(h + CKPT_OFF_N_FLOATS);
    if (n_floats != (uint64_t)layout->n_floats)
        return err_set(err, "%s: field n_floats: expected %zu (the parameter count of the stored config), found %llu",
                       path, layout->n_floats, (unsigned long long)n_floats);
    uint64_t expected = CKPT_HEADER_BYTES + (1 + (uint64_t)*n_moments) * (n_floats * 4 + 4);
    if (file_bytes < expected)
        return err_set(err, "%s: truncated: expected %llu bytes, found %llu bytes", path, (unsigned long long)expected,
                       (unsigned long long)file_bytes);
    if (file_bytes > expected)
        return err_set(err, "%s: unexpected trailing data: expected %llu bytes, found %llu bytes", path,
                       (unsigned long long)expected, (unsigned long long)file_bytes);
    *state = st;
    return 0;
}

/* Reads n floats and their crc32 into a new buffer, checking the crc. */
static float *ckpt_read_section(FILE *fp, const char *path, const char *name, size_t n, Err *err) {
    float *x = err_malloc(n * sizeof *x, name, err);
    if (!x) {
        err_wrap(err, "%s: section %s", path, name);
        return NULL;
    }
    uint32_t crc = 0;
    for (size_t i = 0; i < n; i += CKPT_CHUNK_FLOATS) {
        size_t k = n - i < CKPT_CHUNK_FLOATS ? n - i : CKPT_CHUNK_FLOATS;
        if (fread(x + i, sizeof *x, k, fp) != k) {
            err_set(err, "%s: section %s: read failed: %s", path, name, ferror(fp) ? strerror(errno) : "end of file");
            free(x);
            return NULL;
        }
        crc = crc32_update(crc, x + i, k * sizeof *x);
    }
    uint8_t b[4];
    if (fread(b, 1, 4, fp) != 4) {
        err_set(err, "%s: section %s: cannot read its checksum", path, name);
        free(x);
        return NULL;
    }
    if (get_u32(b) != crc) {
        err_set(err, "%s: section %s: checksum mismatch (stored crc32 %08x, computed %08x)", path, name, get_u32(b),
                crc);
        free(x);
        return NULL;
    }
    if (!host_is_little_endian()) swap_floats(x, n);
    return x;
}

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
    TrainState ts;
    int rc = ckpt_read_header(fp, path, (uint64_t)st.st_size, layout, &ts, &n_moments, err);
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
    if (state) *state = ts;
    return 0;
}

/* ---------------------------------------------------------------- LoRA training state */

uint32_t ckpt_crc32_words(const void *words, size_t n) {
    if (host_is_little_endian()) return crc32_update(0, words, n * 4);
    uint32_t crc = 0;
    float staged[CKPT_SWAP_FLOATS];
    for (size_t i = 0; i < n; i += CKPT_SWAP_FLOATS) {
        size_t k = n - i < CKPT_SWAP_FLOATS ? n - i : CKPT_SWAP_FLOATS;
        memcpy(staged, (const uint8_t *)words + 4 * i, 4 * k);
        swap_floats(staged, k);
        crc = crc32_update(crc, staged, 4 * k);
    }
    return crc;
}

static void lora_encode_header(uint8_t *h, const LoraRunState *rs, size_t n_floats) {
    memset(h, 0, LORA_HEADER_BYTES);
    memcpy(h, LORA_STATE_MAGIC, 8);
    put_u32(h + 8, LORA_STATE_VERSION);
    put_u32(h + 12, LORA_HEADER_BYTES);
    ckpt_encode_config(h + CKPT_OFF_CONFIG, &rs->base);
    ckpt_encode_state(h + CKPT_OFF_STATE, &rs->state);
    uint8_t *l = h + LORA_OFF_LORA;
    put_i32(l + 0, rs->lora.rank);
    put_f32(l + 4, rs->lora.alpha);
    put_f32(l + 8, rs->lora.dropout);
    put_u32(l + 12, (uint32_t)rs->lora.rslora);
    put_u32(l + 16, rs->lora.targets);
    put_u32(h + LORA_OFF_INT8, (uint32_t)rs->int8);
    put_u64(h + LORA_OFF_SEED, rs->seed);
    put_i32(h + LORA_OFF_BATCH, rs->batch);
    put_i32(h + LORA_OFF_SEQ, rs->seq);
    put_i32(h + LORA_OFF_ACCUM, rs->accum);
    put_u32(h + LORA_OFF_ORDER, (uint32_t)rs->order);
    uint64_t vf;
    memcpy(&vf, &rs->val_frac, 8);
    put_u64(h + LORA_OFF_VAL_FRAC, vf);
    put_u64(h + LORA_OFF_TRAIN_TOKENS, rs->train_tokens);
    put_u32(h + LORA_OFF_TRAIN_CRC, rs->train_crc32);
    put_u32(h + LORA_OFF_BASE_CRC, rs->base_crc32);
    put_u64(h + LORA_OFF_N_FLOATS, (uint64_t)n_floats);
    put_u32(h + LORA_OFF_CRC, crc32_update(0, h, LORA_OFF_CRC));
}

static void lora_decode_header(const uint8_t *h, LoraRunState *rs) {
    memset(rs, 0, sizeof *rs);
    ckpt_decode_config(h + CKPT_OFF_CONFIG, &rs->base);
    ckpt_decode_state(h + CKPT_OFF_STATE, &rs->state);
    const uint8_t *l = h + LORA_OFF_LORA;
    rs->lora.rank = get_i32(l + 0);
    rs->lora.alpha = get_f32(l + 4);
    rs->lora.dropout = get_f32(l + 8);
    rs->lora.rslora = get_i32(l + 12);
    rs->lora.targets = get_u32(l + 16);
    rs->int8 = get_i32(h + LORA_OFF_INT8);
    rs->seed = get_u64(h + LORA_OFF_SEED);
    rs->batch = get_i32(h + LORA_OFF_BATCH);
    rs->seq = get_i32(h + LORA_OFF_SEQ);
    rs->accum = get_i32(h + LORA_OFF_ACCUM);
    rs->order = (LoaderOrder)get_i32(h + LORA_OFF_ORDER);
    uint64_t vf = get_u64(h + LORA_OFF_VAL_FRAC);
    memcpy(&rs->val_frac, &vf, 8);
    rs->train_tokens = get_u64(h + LORA_OFF_TRAIN_TOKENS);
    rs->train_crc32 = get_u32(h + LORA_OFF_TRAIN_CRC);
    rs->base_crc32 = get_u32(h + LORA_OFF_BASE_CRC);
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
    if (ckpt_validate_state(&rs->state, path, err) != 0 || lora_validate_run(rs, path, err) != 0) return -1;
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
    if (got >= 8 && memcmp(h, CKPT_MAGIC, 8) == 0)
        return err_set(err, "%s: not a LoRA training state: expected magic \"%s\\0\", found \"%s\\0\": this is a "
                            "full-training checkpoint (continue it with train --resume, or fine-tune it with --init)",
                       path, LORA_STATE_MAGIC, CKPT_MAGIC);
    if (got >= 8 && memcmp(h, LORA_STATE_MAGIC, 8) != 0)
        return err_set(err,
                       "%s: not a LoRA training state: expected magic \"%s\\0\", found bytes %02x %02x %02x %02x %02x "
                       "%02x %02x %02x",
                       path, LORA_STATE_MAGIC, h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
    if (check_header_fields(h, got, file_bytes, path, "LoRA training state", LORA_STATE_VERSION, LORA_HEADER_BYTES,
                            LORA_OFF_CRC, err) != 0)
        return -1;
    LoraRunState st;
    lora_decode_header(h, &st);
    if (config_validate(&st.base, path, err) != 0) return -1;
    if (ckpt_validate_state(&st.state, path, err) != 0 || lora_validate_run(&st, path, err) != 0) return -1;
    LoraLayout lo;
    if (lora_layout(&lo, &st.base, &st.lora, path, err) != 0) return -1;
    uint64_t n = get_u64(h + LORA_OFF_N_FLOATS);
    if (n != (uint64_t)lo.n_floats)
        return err_set(err, "%s: field n_floats: expected %zu (the adapter size of the stored LoRA config), found %llu",
                       path, lo.n_floats, (unsigned long long)n);
    uint64_t expected = LORA_HEADER_BYTES + 3 * (n * 4 + 4);
    if (file_bytes < expected)
        return err_set(err, "%s: truncated: expected %llu bytes, found %llu bytes", path, (unsigned long long)expected,
                       (unsigned long long)file_bytes);
    if (file_bytes > expected)
        return err_set(err, "%s: unexpected trailing data: expected %llu bytes, found %llu bytes", path,
                       (unsigned long long)expected, (unsigned long long)file_bytes);
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

int ckpt_is_checkpoint(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    char magic[8];
    int yes = fread(magic, 1, 8, fp) == 8 && memcmp(magic, CKPT_MAGIC, 8) == 0;
    fclose(fp);
    return yes;
}
