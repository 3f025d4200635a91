/*
** config.c — presets, validation and descriptions of ModelConfig.
*/
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    ModelConfig cfg;
} Preset;

/* family, dim, hidden, layers, heads, kv_heads, head_dim, vocab, max_seq, theta, eps, qk_norm, tied, rope */
static const Preset presets[] = {
    {"stories15m", {FAMILY_LLAMA, 288, 768, 6, 6, 6, 48, 32000, 256, 10000.0f, 1e-5f, 0, 1, ROPE_INTERLEAVED}},
    {"stories42m", {FAMILY_LLAMA, 512, 1376, 8, 8, 8, 64, 32000, 1024, 10000.0f, 1e-5f, 0, 1, ROPE_INTERLEAVED}},
    {"stories110m", {FAMILY_LLAMA, 768, 2048, 12, 12, 12, 64, 32000, 1024, 10000.0f, 1e-5f, 0, 1, ROPE_INTERLEAVED}},
    {"qwen3-0.6b", {FAMILY_QWEN3, 1024, 3072, 28, 16, 8, 128, 151936, 40960, 1000000.0f, 1e-6f, 1, 1, ROPE_HALF}},
    /* Small shapes for tests and quick experiments. */
    {"tiny", {FAMILY_LLAMA, 64, 172, 2, 4, 4, 16, 512, 128, 10000.0f, 1e-5f, 0, 1, ROPE_INTERLEAVED}},
    {"tiny-qwen3", {FAMILY_QWEN3, 64, 128, 2, 4, 2, 32, 512, 128, 1000000.0f, 1e-6f, 1, 1, ROPE_HALF}},
};

const char *config_preset_names(void) { return "stories15m stories42m stories110m qwen3-0.6b tiny tiny-qwen3"; }

int config_from_preset(ModelConfig *cfg, const char *name, Err *err) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(presets[i].name, name) == 0) {
            *cfg = presets[i].cfg;
            return 0;
        }
    }
    return err_set(err, "--model: unknown preset '%s' (expected one of: %s)", name, config_preset_names());
}

const char *config_family_name(ModelFamily f) { return f == FAMILY_QWEN3 ? "qwen3" : "llama"; }
const char *config_rope_style_name(RopeStyle s) { return s == ROPE_HALF ? "half" : "interleaved"; }

#define CHECK_POSITIVE(field)                                                                      \
    if (cfg->field <= 0)                                                                           \
        return err_set(err, "%s: field " #field ": expected a positive value, found %d", source,     \
                       (int)cfg->field);

int config_validate(const ModelConfig *cfg, const char *source, Err *err) {
    CHECK_POSITIVE(dim);
    CHECK_POSITIVE(hidden_dim);
    CHECK_POSITIVE(n_layers);
    CHECK_POSITIVE(n_heads);
    CHECK_POSITIVE(n_kv_heads);
    CHECK_POSITIVE(head_dim);
    CHECK_POSITIVE(vocab_size);
    CHECK_POSITIVE(max_seq_len);
    if (cfg->family != FAMILY_LLAMA && cfg->family != FAMILY_QWEN3)
        return err_set(err, "%s: field family: expected llama or qwen3, found %d", source, (int)cfg->family);
    if (cfg->n_kv_heads > cfg->n_heads || cfg->n_heads % cfg->n_kv_heads != 0)
        return err_set(err, "%s: field n_kv_heads: expected a divisor of n_heads=%d, found %d", source,
                       cfg->n_heads, cfg->n_kv_heads);
    if (cfg->head_dim % 2 != 0)
        return err_set(err, "%s: field head_dim: expected an even number (RoPE rotates pairs), found %d", source,
                       cfg->head_dim);
    if (!(cfg->rope_theta > 0.0f) || !isfinite(cfg->rope_theta))
        return err_set(err, "%s: field rope_theta: expected a finite value > 0, found %g", source, (double)cfg->rope_theta);
    if (!(cfg->norm_eps > 0.0f) || cfg->norm_eps > 1.0f)
        return err_set(err, "%s: field norm_eps: expected a value in (0, 1], found %g", source, (double)cfg->norm_eps);
    if (cfg->rope_style != ROPE_INTERLEAVED && cfg->rope_style != ROPE_HALF)
        return err_set(err, "%s: field rope_style: expected interleaved or half, found %d", source,
                       (int)cfg->rope_style);
    if (cfg->qk_norm != 0 && cfg->qk_norm != 1)
        return err_set(err, "%s: field qk_norm: expected 0 or 1, found %d", source, cfg->qk_norm);
    if (cfg->tied != 0 && cfg->tied != 1)
        return err_set(err, "%s: field tied: expected 0 or 1, found %d", source, cfg->tied);
    /* Keep every buffer index well inside size_t and int arithmetic on all platforms. */
    if ((long long)cfg->dim * cfg->vocab_size > (1ll << 31) || (long long)cfg->dim * cfg->hidden_dim > (1ll << 31) ||
        (long long)cfg->n_heads * cfg->head_dim > (1 << 20))
        return err_set(err, "%s: model shape too large (dim=%d hidden=%d vocab=%d heads=%d head_dim=%d)", source,
                       cfg->dim, cfg->hidden_dim, cfg->vocab_size, cfg->n_heads, cfg->head_dim);
    return 0;
}

void config_describe(const ModelConfig *cfg, char *buf, int size) {
    snprintf(buf, (size_t)size,
             "%s dim=%d hidden=%d layers=%d heads=%d kv_heads=%d head_dim=%d vocab=%d max_seq=%d "
             "rope=%s theta=%g eps=%g%s%s params=%.2fM",
             config_family_name(cfg->family), cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads,
             cfg->head_dim, cfg->vocab_size, cfg->max_seq_len, config_rope_style_name(cfg->rope_style),
             (double)cfg->rope_theta, (double)cfg->norm_eps, cfg->qk_norm ? " qk_norm" : "",
             cfg->tied ? " tied" : " untied", (double)config_param_count(cfg) / 1e6);
}

long long config_param_count(const ModelConfig *cfg) {
    long long C = cfg->dim, F = cfg->hidden_dim, L = cfg->n_layers, V = cfg->vocab_size;
    long long q = (long long)cfg->n_heads * cfg->head_dim, kv = (long long)cfg->n_kv_heads * cfg->head_dim;
    long long per_layer = 2 * C + q * C + 2 * kv * C + C * q + 3 * F * C;
    if (cfg->qk_norm) per_layer += 2 * cfg->head_dim;
    return V * C + L * per_layer + C + (cfg->tied ? 0 : V * C);
}

double config_train_flops_per_seq(const ModelConfig *cfg, int T) {
    /* 6 FLOPs per weight per token for the matmuls (2 forward, 4 backward), plus attention:
    ** QK^T and PV are 2*T*T*D each per head forward (causal halves the useful part, but the
    ** CPU path computes the full square), 2x that backward, plus the recompute of QK^T. */
    double C = cfg->dim, F = cfg->hidden_dim, L = cfg->n_layers, V = cfg->vocab_size;
    double q = (double)cfg->n_heads * cfg->head_dim, kv = (double)cfg->n_kv_heads * cfg->head_dim;
    double matmul_weights = L * (q * C + 2 * kv * C + C * q + 3 * F * C) + V * C;
    double attn = L * cfg->n_heads * (2.0 * T * T * cfg->head_dim) * (2 + 4 + 1);
    return 6.0 * matmul_weights * T + attn;
}

int config_equal(const ModelConfig *a, const ModelConfig *b) { return !config_difference(a, b, NULL, 0); }

int config_difference(const ModelConfig *e, const ModelConfig *f, char *buf, int size) {
    if (size > 0) buf[0] = '\0';
#define INT_FIELD(field)                                                                           \
    if (e->field != f->field) {                                                                    \
        snprintf(buf, (size_t)size, "field " #field ": expected %d, found %d", (int)e->field, (int)f->field); \
        return 1;                                                                                  \
    }
#define FLOAT_FIELD(field)                                                                         \
    if (e->field != f->field) {                                                                    \
        snprintf(buf, (size_t)size, "field " #field ": expected %g, found %g", (double)e->field, (double)f->field); \
        return 1;                                                                                  \
    }
    INT_FIELD(family) INT_FIELD(dim) INT_FIELD(hidden_dim) INT_FIELD(n_layers) INT_FIELD(n_heads)
    INT_FIELD(n_kv_heads) INT_FIELD(head_dim) INT_FIELD(vocab_size) INT_FIELD(max_seq_len)
    FLOAT_FIELD(rope_theta) FLOAT_FIELD(norm_eps) INT_FIELD(qk_norm) INT_FIELD(tied) INT_FIELD(rope_style)
#undef INT_FIELD
#undef FLOAT_FIELD
    return 0;
}
