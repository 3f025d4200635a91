/*
** model_file.c — what the model-file formats share: format detection, the RoPE row
** permutation between interleaved (llama2.c, Meta) and rotate-half (HF) weights, the
** little-endian fp32 helpers of io_internal.h, and loading any of them (model_load_any).
**
** Detection only looks (a directory listing, the first bytes, the file size); it never
** fails loudly, the loaders give the real messages.
*/
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint_file.h"
#include "io_internal.h"
#include "model_file.h"

/* ---------------------------------------------------------------- shared helpers */

static int io_host_is_little_endian(void) {
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

void io_f32_from_le(float *dst, const uint8_t *src, size_t n) {
    if (io_host_is_little_endian()) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src + 4 * i;
        uint32_t bits = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        memcpy(&dst[i], &bits, sizeof bits);
    }
}

int io_write_f32_le(AtomicFile *f, const float *src, size_t n, Err *err) {
    if (io_host_is_little_endian()) return atomic_file_write(f, src, n * sizeof(float), err);
    uint8_t chunk[4096];
    while (n > 0) {
        size_t k = n < sizeof chunk / 4 ? n : sizeof chunk / 4;
        for (size_t i = 0; i < k; i++) {
            uint32_t bits;
            memcpy(&bits, &src[i], sizeof bits);
            for (int b = 0; b < 4; b++) chunk[4 * i + (size_t)b] = (uint8_t)(bits >> (8 * b));
        }
        if (atomic_file_write(f, chunk, 4 * k, err) != 0) return -1;
        src += k;
        n -= k;
    }
    return 0;
}

const char *io_json_type(const cJSON *j) {
    if (!j) return "nothing";
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    return "an unknown value";
}

void io_shape_format(char *buf, size_t size, const int64_t *shape, int rank) {
    if (size == 0) return;
    buf[0] = '\0';
    size_t used = 0;
    for (int i = 0; i <= rank && used < size; i++) {
        int n = i < rank ? snprintf(buf + used, size - used, "%s%lld", i ? ", " : "[", (long long)shape[i])
                         : snprintf(buf + used, size - used, "%s]", rank ? "" : "[");
        if (n < 0) return;
        used += (size_t)n;
    }
}

/* ---------------------------------------------------------------- RoPE permutation */

/* Where row r of one head (D rows) goes when converting to style `to`. */
static int rope_dest_row(int r, int D, RopeStyle to) {
    int half = D / 2;
    if (to == ROPE_HALF) return (r % 2) * half + r / 2; /* r = 2i+p -> p*half+i */
    return 2 * (r % half) + r / half;                    /* r = p*half+i -> 2i+p */
}

/* 1 if s is the smallest row of its cycle, so each cycle is walked exactly once. */
static int rope_cycle_leader(int s, int D, RopeStyle to) {
    for (int t = rope_dest_row(s, D, to); t != s; t = rope_dest_row(t, D, to))
        if (t < s) return 0;
    return 1;
}

static void rope_swap_rows(float *a, float *b, size_t cols) {
    for (size_t j = 0; j < cols; j++) {
        float tmp = a[j];
        a[j] = b[j];
        b[j] = tmp;
    }
}

/* In place and without scratch memory: every cycle of the permutation is rotated by swapping
** rows through its leader. After swap(s, t) row t holds what belongs there, and row s holds
** the row that belongs at dest(t); when the walk returns to s, row s is in place too. */
void io_rope_permute_heads(float *x, size_t n_heads, int D, size_t cols, RopeStyle to) {
    for (size_t h = 0; h < n_heads; h++) {
        float *head = x + h * (size_t)D * cols;
        for (int s = 0; s < D; s++) {
            if (!rope_cycle_leader(s, D, to)) continue;
            for (int t = rope_dest_row(s, D, to); t != s; t = rope_dest_row(t, D, to))
                rope_swap_rows(head + (size_t)s * cols, head + (size_t)t * cols, cols);
        }
    }
}

void params_convert_rope(ParamLayout *layout, float *params, RopeStyle to) {
    const ModelConfig *c = &layout->cfg;
    if (c->rope_style == to) return;
    size_t L = (size_t)c->n_layers, C = (size_t)c->dim;
    int D = c->head_dim;
    io_rope_permute_heads(params + layout->t[T_WQ].offset, L * (size_t)c->n_heads, D, C, to);
    io_rope_permute_heads(params + layout->t[T_WK].offset, L * (size_t)c->n_kv_heads, D, C, to);
    if (c->qk_norm) { /* one head of D weights per layer, applied before RoPE */
        io_rope_permute_heads(params + layout->t[T_Q_NORM].offset, L, D, 1, to);
        io_rope_permute_heads(params + layout->t[T_K_NORM].offset, L, D, 1, to);
    }
    layout->cfg.rope_style = to;
}

/* ---------------------------------------------------------------- format detection */

const char *model_format_name(ModelFormat f) {
    switch (f) {
    case MODEL_FORMAT_LLAMA2C: return "llama2.c";
    case MODEL_FORMAT_HF: return "hf";
    case MODEL_FORMAT_CHECKPOINT: return "checkpoint";
    default: return "unknown";
    }
}

ModelFormat model_format_detect(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return MODEL_FORMAT_UNKNOWN;
    if (S_ISDIR(st.st_mode)) {
        char config[1100];
        int n = snprintf(config, sizeof config, "%s/config.json", path);
        if (n < 0 || (size_t)n >= sizeof config) return MODEL_FORMAT_UNKNOWN;
        return path_exists(config) && !path_is_dir(config) ? MODEL_FORMAT_HF : MODEL_FORMAT_UNKNOWN;
    }
    if (!S_ISREG(st.st_mode)) return MODEL_FORMAT_UNKNOWN;

    uint8_t head[LLAMA2C_HEADER_BYTES];
    FILE *fp = fopen(path, "rb");
    if (!fp) return MODEL_FORMAT_UNKNOWN;
    size_t got = fread(head, 1, sizeof head, fp);
    fclose(fp);
    if (got >= sizeof CKPT_MAGIC && memcmp(head, CKPT_MAGIC, sizeof CKPT_MAGIC) == 0) /* 7 bytes + NUL */
        return MODEL_FORMAT_CHECKPOINT;
    ModelConfig cfg;
    if (got == sizeof head && llama2c_header_check(head, (uint64_t)st.st_size, &cfg, path, NULL) == 0)
        return MODEL_FORMAT_LLAMA2C;
    return MODEL_FORMAT_UNKNOWN;
}

/* ---------------------------------------------------------------- any model file */

int model_load_any(const char *path, ParamLayout *layout, float **params, Err *err) {
    switch (model_format_detect(path)) {
    case MODEL_FORMAT_CHECKPOINT:
        return ckpt_model_load(path, layout, params, err);
    case MODEL_FORMAT_HF:
        return hf_load(path, layout, params, err);
    case MODEL_FORMAT_LLAMA2C:
        return llama2c_load(path, layout, params, err);
    default:
        if (!path_exists(path)) return err_set(err, "%s: no such file or directory", path);
        /* A regular file that is no checkpoint is most likely a llama2.c .bin with a problem
        ** (truncated, padded): its loader says exactly what is wrong. */
        if (!path_is_dir(path) && llama2c_load(path, layout, params, err) != 0)
            return err_wrap(err, "%s: not an anetrain checkpoint or HF directory, nor a valid llama2.c .bin", path);
        if (!path_is_dir(path)) return 0;
        return err_set(err,
                       "%s: unknown model format (expected an anetrain checkpoint, a llama2.c .bin, or a "
                       "directory with config.json and model.safetensors)",
                       path);
    }
}

int model_config_load_any(const char *path, ModelConfig *cfg, Err *err) {
    ParamLayout layout;
    char json[4096];
    switch (model_format_detect(path)) {
    case MODEL_FORMAT_CHECKPOINT: /* the header alone: no section is read */
        if (ckpt_model_load(path, &layout, NULL, err) != 0) return -1;
        *cfg = layout.cfg;
        return 0;
    case MODEL_FORMAT_HF:
        if ((size_t)snprintf(json, sizeof json, "%s/config.json", path) >= sizeof json)
            return err_set(err, "%s: path too long", path);
        return hf_config_load(json, cfg, err);
    case MODEL_FORMAT_LLAMA2C:
        return llama2c_config_load(path, cfg, err);
    default: { /* model_load_any's diagnosis of what the file is not */
        float *params = NULL;
        if (model_load_any(path, &layout, &params, err) != 0) return -1;
        free(params);
        *cfg = layout.cfg;
        return 0;
    }
    }
}
