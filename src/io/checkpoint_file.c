/*
** checkpoint_file.c — the encoding our own files share, and a checkpoint's model (see
** checkpoint_file.h; the files themselves: train/checkpoint.h).
**
** Nothing here ever dumps a struct to disk (padding, enum widths and host byte order would leak
** into the file): every field is encoded explicitly. Nothing is handed back unchecked: magic,
** version, header checksum, config, sizes against the file length, and each section's checksum.
*/
#include "checkpoint_file.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_file.h"

enum {
    CKPT_CHUNK_FLOATS = 1 << 20, /* sections move in 4 MB pieces */
    CKPT_SWAP_FLOATS = 4096,     /* staging buffer of the big-endian path */
};

/* ---------------------------------------------------------------- fixed-width fields */

void ckpt_put_u32(uint8_t *p, uint32_t x) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i));
}
void ckpt_put_u64(uint8_t *p, uint64_t x) {
    ckpt_put_u32(p, (uint32_t)x);
    ckpt_put_u32(p + 4, (uint32_t)(x >> 32));
}
void ckpt_put_i32(uint8_t *p, int32_t x) { ckpt_put_u32(p, (uint32_t)x); }
void ckpt_put_i64(uint8_t *p, int64_t x) { ckpt_put_u64(p, (uint64_t)x); }
void ckpt_put_f32(uint8_t *p, float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    ckpt_put_u32(p, u);
}

uint32_t ckpt_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t ckpt_get_u64(const uint8_t *p) { return (uint64_t)ckpt_get_u32(p) | (uint64_t)ckpt_get_u32(p + 4) << 32; }
int32_t ckpt_get_i32(const uint8_t *p) {
    uint32_t u = ckpt_get_u32(p);
    return u <= INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}
int64_t ckpt_get_i64(const uint8_t *p) {
    uint64_t u = ckpt_get_u64(p);
    return u <= INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}
float ckpt_get_f32(const uint8_t *p) {
    uint32_t u = ckpt_get_u32(p);
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

void ckpt_encode_config(uint8_t *p, const ModelConfig *c) {
    ckpt_put_u32(p + 0, (uint32_t)c->family);
    ckpt_put_i32(p + 4, c->dim);
    ckpt_put_i32(p + 8, c->hidden_dim);
    ckpt_put_i32(p + 12, c->n_layers);
    ckpt_put_i32(p + 16, c->n_heads);
    ckpt_put_i32(p + 20, c->n_kv_heads);
    ckpt_put_i32(p + 24, c->head_dim);
    ckpt_put_i32(p + 28, c->vocab_size);
    ckpt_put_i32(p + 32, c->max_seq_len);
    ckpt_put_f32(p + 36, c->rope_theta);
    ckpt_put_f32(p + 40, c->norm_eps);
    ckpt_put_u32(p + 44, (uint32_t)c->qk_norm);
    ckpt_put_u32(p + 48, (uint32_t)c->tied);
    ckpt_put_u32(p + 52, (uint32_t)c->rope_style);
}

void ckpt_decode_config(const uint8_t *p, ModelConfig *c) {
    memset(c, 0, sizeof *c);
    /* Enum fields go through int so config_validate sees (and names) any stray value. */
    c->family = (ModelFamily)ckpt_get_i32(p + 0);
    c->dim = ckpt_get_i32(p + 4);
    c->hidden_dim = ckpt_get_i32(p + 8);
    c->n_layers = ckpt_get_i32(p + 12);
    c->n_heads = ckpt_get_i32(p + 16);
    c->n_kv_heads = ckpt_get_i32(p + 20);
    c->head_dim = ckpt_get_i32(p + 24);
    c->vocab_size = ckpt_get_i32(p + 28);
    c->max_seq_len = ckpt_get_i32(p + 32);
    c->rope_theta = ckpt_get_f32(p + 36);
    c->norm_eps = ckpt_get_f32(p + 40);
    c->qk_norm = ckpt_get_i32(p + 44);
    c->tied = ckpt_get_i32(p + 48);
    c->rope_style = (RopeStyle)ckpt_get_i32(p + 52);
}

int ckpt_validate_state(const uint8_t *p, const char *path, Err *err) {
    int64_t step = ckpt_get_i64(p + CKPT_STATE_STEP), tokens_seen = ckpt_get_i64(p + CKPT_STATE_TOKENS_SEEN);
    float loss_scale = ckpt_get_f32(p + CKPT_STATE_LOSS_SCALE);
    int32_t clean_steps = ckpt_get_i32(p + CKPT_STATE_CLEAN_STEPS);
    int64_t skipped_steps = ckpt_get_i64(p + CKPT_STATE_SKIPPED_STEPS);
    if (step < 0) return err_set(err, "%s: field step: expected >= 0, found %lld", path, (long long)step);
    if (tokens_seen < 0)
        return err_set(err, "%s: field tokens_seen: expected >= 0, found %lld", path, (long long)tokens_seen);
    if (!(isfinite(loss_scale) && loss_scale > 0.0f))
        return err_set(err, "%s: field loss_scale: expected a finite value > 0, found %g", path, (double)loss_scale);
    if (clean_steps < 0)
        return err_set(err, "%s: field clean_steps: expected >= 0, found %d", path, (int)clean_steps);
    if (skipped_steps < 0 || skipped_steps > step)
        return err_set(err, "%s: field skipped_steps: expected 0..step=%lld, found %lld", path, (long long)step,
                       (long long)skipped_steps);
    return 0;
}

int ckpt_check_header_fields(const uint8_t *h, size_t got, uint64_t file_bytes, const char *path, const char *kind,
                             uint32_t version, uint32_t header_bytes, size_t crc_off, Err *err) {
    if (got < 12)
        return err_set(err, "%s: truncated header: expected at least %u bytes, found %llu bytes", path, header_bytes,
                       (unsigned long long)file_bytes);
    uint32_t found_version = ckpt_get_u32(h + 8);
    if (found_version != version)
        return err_set(err, "%s: unsupported %s version: expected %u, found %u", path, kind, version, found_version);
    if (got < header_bytes)
        return err_set(err, "%s: truncated header: expected at least %u bytes, found %llu bytes", path, header_bytes,
                       (unsigned long long)file_bytes);
    uint32_t found_bytes = ckpt_get_u32(h + 12);
    if (found_bytes != header_bytes)
        return err_set(err, "%s: field header_bytes: expected %u, found %u", path, header_bytes, found_bytes);
    uint32_t crc = ckpt_get_u32(h + crc_off), want = crc32_update(0, h, crc_off);
    if (crc != want)
        return err_set(err, "%s: section header: checksum mismatch (stored crc32 %08x, computed %08x)", path, crc,
                       want);
    return 0;
}

/* ---------------------------------------------------------------- sections */

int ckpt_write_section(AtomicFile *af, const float *x, size_t n, Err *err) {
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
    ckpt_put_u32(crc, af->crc);
    return atomic_file_write(af, crc, sizeof crc, err);
}

float *ckpt_read_section(FILE *fp, const char *path, const char *name, size_t n, Err *err) {
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
    if (ckpt_get_u32(b) != crc) {
        err_set(err, "%s: section %s: checksum mismatch (stored crc32 %08x, computed %08x)", path, name,
                ckpt_get_u32(b), crc);
        free(x);
        return NULL;
    }
    if (!host_is_little_endian()) swap_floats(x, n);
    return x;
}

int ckpt_check_file_size(const char *path, uint64_t file_bytes, uint64_t expected, Err *err) {
    if (file_bytes < expected)
        return err_set(err, "%s: truncated: expected %llu bytes, found %llu bytes", path, (unsigned long long)expected,
                       (unsigned long long)file_bytes);
    if (file_bytes > expected)
        return err_set(err, "%s: unexpected trailing data: expected %llu bytes, found %llu bytes", path,
                       (unsigned long long)expected, (unsigned long long)file_bytes);
    return 0;
}

int ckpt_check_magic(const uint8_t *h, size_t got, const char *path, const char *kind, const char *magic,
                     const char *other_magic, const char *other_is, Err *err) {
    if (got < 8 || memcmp(h, magic, 8) == 0) return 0;
    if (memcmp(h, other_magic, 8) == 0)
        return err_set(err, "%s: not a %s: expected magic \"%s\\0\", found \"%s\\0\": this is %s", path, kind, magic,
                       other_magic, other_is);
    return err_set(err, "%s: not a %s: expected magic \"%s\\0\", found bytes %02x %02x %02x %02x %02x %02x %02x %02x",
                   path, kind, magic, h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
}

/* ---------------------------------------------------------------- a checkpoint's model */

int ckpt_read_header(FILE *fp, const char *path, uint64_t file_bytes, uint8_t h[CKPT_HEADER_BYTES],
                     ParamLayout *layout, uint32_t *n_moments, Err *err) {
    size_t got = fread(h, 1, CKPT_HEADER_BYTES, fp);
    if (ckpt_check_magic(h, got, path, "checkpoint", CKPT_MAGIC, LORA_STATE_MAGIC,
                         "a LoRA run's training state (continue it with finetune --resume)", err) != 0)
        return -1;
    if (ckpt_check_header_fields(h, got, file_bytes, path, "checkpoint", CKPT_VERSION, CKPT_HEADER_BYTES,
                                 CKPT_OFF_CRC, err) != 0)
        return -1;

    ModelConfig cfg;
    ckpt_decode_config(h + CKPT_OFF_CONFIG, &cfg);
    if (config_validate(&cfg, path, err) != 0) return -1;
    if (ckpt_validate_state(h + CKPT_OFF_STATE, path, err) != 0) return -1;
    *n_moments = ckpt_get_u32(h + CKPT_OFF_N_MOMENTS) & 0xffff; /* the u16 above it: ranks */
    if (*n_moments != 0 && *n_moments != 2)
        return err_set(err, "%s: field n_moments: expected 0 or 2, found %u", path, *n_moments);
    params_layout(layout, &cfg);
    uint64_t n_floats = ckpt_get_u64(h + CKPT_OFF_N_FLOATS);
    if (n_floats != (uint64_t)layout->n_floats)
        return err_set(err, "%s: field n_floats: expected %zu (the parameter count of the stored config), found %llu",
                       path, layout->n_floats, (unsigned long long)n_floats);
    uint64_t expected = CKPT_HEADER_BYTES + (1 + (uint64_t)*n_moments) * (n_floats * 4 + 4);
    if (ckpt_check_file_size(path, file_bytes, expected, err) != 0) return -1;
    return 0;
}

int ckpt_model_load(const char *path, ParamLayout *layout, float **params, Err *err) {
    if (params) *params = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return err_set(err, "%s: not a regular file", path);
    }
    uint8_t h[CKPT_HEADER_BYTES];
    uint32_t n_moments = 0;
    int rc = ckpt_read_header(fp, path, (uint64_t)st.st_size, h, layout, &n_moments, err);
    if (rc == 0 && params) {
        *params = ckpt_read_section(fp, path, "params", layout->n_floats, err);
        if (!*params) rc = -1;
    }
    fclose(fp);
    return rc;
}

uint32_t ckpt_crc32_words(const void *words, size_t n) { return ckpt_crc32_words_update(0, words, n); }

uint32_t ckpt_crc32_words_update(uint32_t crc, const void *words, size_t n) {
    if (host_is_little_endian()) return crc32_update(crc, words, n * 4);
    float staged[CKPT_SWAP_FLOATS];
    for (size_t i = 0; i < n; i += CKPT_SWAP_FLOATS) {
        size_t k = n - i < CKPT_SWAP_FLOATS ? n - i : CKPT_SWAP_FLOATS;
        memcpy(staged, (const uint8_t *)words + 4 * i, 4 * k);
        swap_floats(staged, k);
        crc = crc32_update(crc, staged, 4 * k);
    }
    return crc;
}

int ckpt_is_checkpoint(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    char magic[8];
    int yes = fread(magic, 1, 8, fp) == 8 && memcmp(magic, CKPT_MAGIC, 8) == 0;
    fclose(fp);
    return yes;
}
