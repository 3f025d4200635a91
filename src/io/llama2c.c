/*
** llama2c.c — llama2.c's legacy "version 0" model file (karpathy/llama2.c run.c).
**
**   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
**   fp32  tok_emb [V][C], rms_att [L][C], wq [L][C][C], wk [L][KVdim][C], wv [L][KVdim][C],
**         wo [L][C][C], rms_ffn [L][C], w1 [L][F][C], w2 [L][C][F], w3 [L][F][C], rms_final [C],
**         freq_cis_real [seq_len][D/2], freq_cis_imag [seq_len][D/2], wcls [V][C] if untied
**
** vocab_size < 0 marks an untied classifier. D = dim/n_heads, KVdim = D*n_kv_heads. RoPE pairs
** are interleaved; theta 10000 and eps 1e-5 are implied. Our ParamLayout keeps the shared
** tensors in this very order, so reading and writing are contiguous copies.
**
** The file size must match the header exactly: a truncated or padded file is an error with
** the expected byte count, never a read past the end.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/fileio.h"
#include "io_internal.h"
#include "model_file.h"

#define LLAMA2C_THETA 10000.0f
#define LLAMA2C_EPS 1e-5f
/* llama2.c's newer export versions start with this magic ("ak42" little-endian). */
#define LLAMA2C_MAGIC_V1 0x616b3432u

typedef struct {
    int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} Llama2cHeader;

static int32_t llama2c_i32(const uint8_t *p) {
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

/* Overflow-checked a*b + c on u64; sets *overflow instead of wrapping. */
static uint64_t llama2c_mad(uint64_t a, uint64_t b, uint64_t c, int *overflow) {
    if (a != 0 && b > UINT64_MAX / a) *overflow = 1;
    else if (a * b > UINT64_MAX - c) *overflow = 1;
    return *overflow ? 0 : a * b + c;
}

/* Floats after the header for this (plausible) header. */
static uint64_t llama2c_expected_floats(const Llama2cHeader *h, int *overflow) {
    uint64_t C = (uint64_t)h->dim, F = (uint64_t)h->hidden_dim, L = (uint64_t)h->n_layers;
    uint64_t V = (uint64_t)(h->vocab_size < 0 ? -(int64_t)h->vocab_size : h->vocab_size);
    uint64_t D = C / (uint64_t)h->n_heads, kv = D * (uint64_t)h->n_kv_heads;
    uint64_t per_layer = 0;
    per_layer = llama2c_mad(2, C, per_layer, overflow);       /* rms_att, rms_ffn */
    per_layer = llama2c_mad(2 * C, C, per_layer, overflow);   /* wq, wo */
    per_layer = llama2c_mad(2 * kv, C, per_layer, overflow);  /* wk, wv */
    per_layer = llama2c_mad(3 * F, C, per_layer, overflow);   /* w1, w2, w3 */
    uint64_t n = llama2c_mad(V, C, C, overflow);                                /* tok_emb, rms_final */
    n = llama2c_mad(L, per_layer, n, overflow);
    n = llama2c_mad((uint64_t)h->seq_len, D, n, overflow);                      /* two tables of D/2 */
    if (h->vocab_size < 0) n = llama2c_mad(V, C, n, overflow);                  /* wcls */
    return n;
}

#define LLAMA2C_POSITIVE(field)                                                                    \
    if (h.field <= 0)                                                                              \
        return err_set(err, "%s: llama2.c header field " #field ": expected a positive value, found %d", path, \
                       (int)h.field);

int llama2c_header_check(const uint8_t *bytes, uint64_t file_size, ModelConfig *cfg, const char *path, Err *err) {
    if ((uint32_t)llama2c_i32(bytes) == LLAMA2C_MAGIC_V1)
        return err_set(err, "%s: llama2.c export version %d (magic \"ak42\") is not supported; expected the legacy "
                            "version 0 .bin (export.py --version 0)", path, (int)llama2c_i32(bytes + 4));
    Llama2cHeader h = {llama2c_i32(bytes), llama2c_i32(bytes + 4), llama2c_i32(bytes + 8), llama2c_i32(bytes + 12),
                       llama2c_i32(bytes + 16), llama2c_i32(bytes + 20), llama2c_i32(bytes + 24)};
    LLAMA2C_POSITIVE(dim);
    LLAMA2C_POSITIVE(hidden_dim);
    LLAMA2C_POSITIVE(n_layers);
    LLAMA2C_POSITIVE(n_heads);
    LLAMA2C_POSITIVE(n_kv_heads);
    LLAMA2C_POSITIVE(seq_len);
    if (h.vocab_size == 0 || h.vocab_size == INT32_MIN)
        return err_set(err, "%s: llama2.c header field vocab_size: expected a non-zero value, found %d", path,
                       (int)h.vocab_size);
    if (h.dim % h.n_heads != 0)
        return err_set(err, "%s: llama2.c header field n_heads: expected a divisor of dim=%d, found %d", path,
                       (int)h.dim, (int)h.n_heads);
    if (h.n_kv_heads > h.n_heads || h.n_heads % h.n_kv_heads != 0)
        return err_set(err, "%s: llama2.c header field n_kv_heads: expected a divisor of n_heads=%d, found %d", path,
                       (int)h.n_heads, (int)h.n_kv_heads);

    *cfg = (ModelConfig){
        .family = FAMILY_LLAMA,
        .dim = h.dim,
        .hidden_dim = h.hidden_dim,
        .n_layers = h.n_layers,
        .n_heads = h.n_heads,
        .n_kv_heads = h.n_kv_heads,
        .head_dim = h.dim / h.n_heads,
        .vocab_size = h.vocab_size < 0 ? -h.vocab_size : h.vocab_size,
        .max_seq_len = h.seq_len,
        .rope_theta = LLAMA2C_THETA,
        .norm_eps = LLAMA2C_EPS,
        .qk_norm = 0,
        .tied = h.vocab_size > 0,
        .rope_style = ROPE_INTERLEAVED,
    };
    if (config_validate(cfg, path, err) != 0) return -1;

    int overflow = 0;
    uint64_t floats = llama2c_expected_floats(&h, &overflow);
    if (overflow || floats > (UINT64_MAX - LLAMA2C_HEADER_BYTES) / 4)
        return err_set(err, "%s: llama2.c header implies a file of more than 2^64 bytes", path);
    uint64_t expected = LLAMA2C_HEADER_BYTES + 4 * floats;
    if (expected != file_size)
        return err_set(err,
                       "%s: file is %llu bytes, but its llama2.c header (dim=%d hidden_dim=%d n_layers=%d n_heads=%d "
                       "n_kv_heads=%d vocab_size=%d seq_len=%d) implies %llu bytes",
                       path, (unsigned long long)file_size, (int)h.dim, (int)h.hidden_dim, (int)h.n_layers,
                       (int)h.n_heads, (int)h.n_kv_heads, (int)h.vocab_size, (int)h.seq_len,
                       (unsigned long long)expected);
    return 0;
}

int llama2c_config_load(const char *path, ModelConfig *cfg, Err *err) {
    MappedFile m;
    if (file_map(&m, path, err) != 0) return -1;
    int rc = m.size < LLAMA2C_HEADER_BYTES
                 ? err_set(err, "%s: file is %zu bytes, too short for the %d-byte llama2.c header", path, m.size,
                           LLAMA2C_HEADER_BYTES)
                 : llama2c_header_check(m.data, m.size, cfg, path, err);
    file_unmap(&m);
    return rc;
}

int llama2c_load(const char *path, ParamLayout *layout, float **params, Err *err) {
    *params = NULL;
    MappedFile m;
    if (file_map(&m, path, err) != 0) return -1;
    if (m.size < LLAMA2C_HEADER_BYTES) {
        size_t size = m.size;
        file_unmap(&m);
        return err_set(err, "%s: file is %zu bytes, too short for the %d-byte llama2.c header", path, size,
                       LLAMA2C_HEADER_BYTES);
    }
    ModelConfig cfg;
    if (llama2c_header_check(m.data, m.size, &cfg, path, err) != 0) {
        file_unmap(&m);
        return -1;
    }
    params_layout(layout, &cfg);
    float *p = err_malloc(layout->n_floats * sizeof(float), path, err);
    if (!p) {
        file_unmap(&m);
        return -1;
    }

    /* tok_emb .. rms_final are one run in both the file and the buffer. */
    const uint8_t *src = m.data + LLAMA2C_HEADER_BYTES;
    size_t shared = layout->t[T_RMS_FINAL].offset + layout->t[T_RMS_FINAL].numel;
    io_f32_from_le(p, src, shared);
    src += 4 * shared;
    src += 4 * (size_t)cfg.max_seq_len * (size_t)cfg.head_dim; /* the two RoPE tables, unused */
    if (!cfg.tied) io_f32_from_le(p + layout->t[T_WCLS].offset, src, layout->t[T_WCLS].numel);
    file_unmap(&m);
    *params = p;
    return 0;
}

/* Refuses configs llama2.c cannot represent, naming the field. */
static int llama2c_check_representable(const ModelConfig *c, const char *path, Err *err) {
    if (c->qk_norm)
        return err_set(err, "%s: cannot save as llama2.c: field qk_norm: the format has no q/k norm weights "
                            "(expected 0, found 1); save as HF instead", path);
    if (c->dim % c->n_heads != 0 || c->head_dim != c->dim / c->n_heads)
        return err_set(err, "%s: cannot save as llama2.c: field head_dim: the format implies dim/n_heads = %d/%d, "
                            "found %d", path, c->dim, c->n_heads, c->head_dim);
    if (c->rope_theta != LLAMA2C_THETA)
        return err_set(err, "%s: cannot save as llama2.c: field rope_theta: the format implies %g, found %g", path,
                       (double)LLAMA2C_THETA, (double)c->rope_theta);
    if (c->norm_eps != LLAMA2C_EPS)
        return err_set(err, "%s: cannot save as llama2.c: field norm_eps: the format implies %g, found %g", path,
                       (double)LLAMA2C_EPS, (double)c->norm_eps);
    return 0;
}

static int llama2c_write_header(AtomicFile *f, const ModelConfig *c, Err *err) {
    int32_t fields[7] = {c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                         c->tied ? c->vocab_size : -c->vocab_size, c->max_seq_len};
    uint8_t bytes[LLAMA2C_HEADER_BYTES];
    for (int i = 0; i < 7; i++)
        for (int b = 0; b < 4; b++) bytes[4 * i + b] = (uint8_t)((uint32_t)fields[i] >> (8 * b));
    return atomic_file_write(f, bytes, sizeof bytes, err);
}

/* freq_cis_real then freq_cis_imag, each [seq_len][D/2]: cos/sin(pos * 10000^(-2i/D)). */
static int llama2c_write_rope_tables(AtomicFile *f, const ModelConfig *c, Err *err) {
    int half = c->head_dim / 2;
    float *row = err_malloc((size_t)half * sizeof(float), "llama2.c RoPE table", err);
    if (!row) return -1;
    int rc = 0;
    for (int table = 0; table < 2 && rc == 0; table++) {
        for (int pos = 0; pos < c->max_seq_len && rc == 0; pos++) {
            for (int i = 0; i < half; i++) {
                double angle = pos * pow((double)LLAMA2C_THETA, -2.0 * i / c->head_dim);
                row[i] = (float)(table == 0 ? cos(angle) : sin(angle));
            }
            rc = io_write_f32_le(f, row, (size_t)half, err);
        }
    }
    free(row);
    return rc;
}

/* Writes every tensor; wq and wk come from `rope` (already interleaved) when non-NULL. */
static int llama2c_write_tensors(AtomicFile *f, const ParamLayout *layout, const float *params, const float *rope,
                                 Err *err) {
    const TensorSpec *t = layout->t;
    for (int k = T_TOK_EMB; k <= T_RMS_FINAL; k++) {
        const float *src = params + t[k].offset;
        if (rope && k == T_WQ) src = rope;
        if (rope && k == T_WK) src = rope + t[T_WQ].numel;
        if (io_write_f32_le(f, src, t[k].numel, err) != 0) return -1;
    }
    if (llama2c_write_rope_tables(f, &layout->cfg, err) != 0) return -1;
    if (!layout->cfg.tied && io_write_f32_le(f, params + t[T_WCLS].offset, t[T_WCLS].numel, err) != 0) return -1;
    return 0;
}

int llama2c_save(const char *path, const ParamLayout *layout, const float *params, Err *err) {
    const ModelConfig *c = &layout->cfg;
    if (config_validate(c, path, err) != 0) return -1;
    if (llama2c_check_representable(c, path, err) != 0) return -1;

    /* A rotate-half model is written with wq and wk rows permuted to interleaved, from a copy:
    ** the caller's buffer is never touched. */
    float *rope = NULL;
    if (c->rope_style == ROPE_HALF) {
        size_t nq = layout->t[T_WQ].numel, nk = layout->t[T_WK].numel;
        rope = err_malloc((nq + nk) * sizeof(float), "llama2.c export of wq/wk", err);
        if (!rope) return -1;
        memcpy(rope, params + layout->t[T_WQ].offset, nq * sizeof(float));
        memcpy(rope + nq, params + layout->t[T_WK].offset, nk * sizeof(float));
        io_rope_permute_heads(rope, (size_t)c->n_layers * (size_t)c->n_heads, c->head_dim, (size_t)c->dim,
                              ROPE_INTERLEAVED);
        io_rope_permute_heads(rope + nq, (size_t)c->n_layers * (size_t)c->n_kv_heads, c->head_dim, (size_t)c->dim,
                              ROPE_INTERLEAVED);
    }

    AtomicFile f;
    int rc = atomic_file_open(&f, path, err);
    if (rc == 0) rc = llama2c_write_header(&f, c, err);
    if (rc == 0) rc = llama2c_write_tensors(&f, layout, params, rope, err);
    if (rc == 0) rc = atomic_file_commit(&f, err);
    else atomic_file_abort(&f);
    free(rope);
    return rc;
}
