/*
** hf.c — Hugging Face model directories: config.json and safetensors weights, for the
** Llama (LlamaForCausalLM) and Qwen3 (Qwen3ForCausalLM) architectures.
**
** The loader is strict on purpose: a model we load must compute exactly what transformers
** would compute. So config.json options we do not implement (biases, RoPE scaling, sliding
** windows, other activations) are errors, every expected tensor must be present with exactly
** its expected shape, and an unknown tensor that looks like a weight (a bias, an extra layer)
** is an error rather than silently dropped. HF weights use rotate-half RoPE; a loaded model
** keeps that style, and the saver permutes an interleaved model on a copy of wq/wk.
**
** Tensor names (N = layer):
**   model.embed_tokens.weight [V][C]                  tok_emb
**   model.layers.N.input_layernorm.weight [C]         rms_att
**   model.layers.N.self_attn.q_proj.weight [H*D][C]   wq     (k_proj, v_proj [KV*D][C]; o_proj [C][H*D])
**   model.layers.N.self_attn.q_norm.weight [D]        q_norm (Qwen3; k_norm likewise)
**   model.layers.N.post_attention_layernorm.weight    rms_ffn
**   model.layers.N.mlp.gate_proj.weight [F][C]        w1     (up_proj = w3 [F][C], down_proj = w2 [C][F])
**   model.norm.weight [C]                             rms_final
**   lm_head.weight [V][C]                             wcls (untied only)
*/
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/fileio.h"
#include "io_internal.h"
#include "model_file.h"
#include "safetensors.h"

/* ================================================================ config.json */

/* One parsed config.json, for the field readers below. */
typedef struct {
    const char *path;
    const cJSON *root;
    Err *err;
} HfJson;

/* The value of key, or NULL when absent or null (HF treats null as "use the default"). */
static const cJSON *hf_field(const HfJson *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j->root, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static int hf_missing(const HfJson *j, const char *key, const char *what) {
    return err_set(j->err, "%s: field %s: expected %s, found nothing (the field is required)", j->path, key, what);
}

/* An integer field; required fields have no default. */
static int hf_get_int(const HfJson *j, const char *key, int required, int dflt, int *out) {
    const cJSON *v = hf_field(j, key);
    if (!v) {
        if (required) return hf_missing(j, key, "an integer");
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return err_set(j->err, "%s: field %s: expected an integer, found %s", j->path, key, io_json_type(v));
    double d = v->valuedouble;
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != (double)(int)d)
        return err_set(j->err, "%s: field %s: expected an integer, found %g", j->path, key, d);
    *out = (int)d;
    return 0;
}

static int hf_get_float(const HfJson *j, const char *key, int required, double dflt, float *out) {
    const cJSON *v = hf_field(j, key);
    if (!v) {
        if (required) return hf_missing(j, key, "a number");
        *out = (float)dflt;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return err_set(j->err, "%s: field %s: expected a number, found %s", j->path, key, io_json_type(v));
    float f = (float)v->valuedouble;
    if (!isfinite(f))
        return err_set(j->err, "%s: field %s: expected a number within float range, found %g", j->path, key,
                       v->valuedouble);
    *out = f;
    return 0;
}

static int hf_get_bool(const HfJson *j, const char *key, int dflt, int *out) {
    const cJSON *v = hf_field(j, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return err_set(j->err, "%s: field %s: expected true or false, found %s", j->path, key, io_json_type(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A string field; dflt == NULL makes it required. */
static int hf_get_string(const HfJson *j, const char *key, const char *dflt, const char **out) {
    const cJSON *v = hf_field(j, key);
    if (!v) {
        if (!dflt) return hf_missing(j, key, "a string");
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsString(v))
        return err_set(j->err, "%s: field %s: expected a string, found %s", j->path, key, io_json_type(v));
    *out = v->valuestring;
    return 0;
}

/* A boolean option whose only supported value is false. */
static int hf_require_false(const HfJson *j, const char *key, const char *why) {
    int on;
    if (hf_get_bool(j, key, 0, &on) != 0) return -1;
    if (on) return err_set(j->err, "%s: field %s: expected false (%s), found true", j->path, key, why);
    return 0;
}

/* Options that would change the computation: activation, biases, RoPE scaling, sliding windows. */
static int hf_config_check_unsupported(const HfJson *j) {
    const char *act = NULL;
    if (hf_get_string(j, "hidden_act", "silu", &act) != 0) return -1;
    if (strcmp(act, "silu") != 0)
        return err_set(j->err, "%s: field hidden_act: expected \"silu\", found \"%.40s\"", j->path, act);
    if (hf_require_false(j, "attention_bias", "anetrain's attention has no biases") != 0) return -1;
    if (hf_require_false(j, "mlp_bias", "anetrain's MLP has no biases") != 0) return -1;
    if (hf_require_false(j, "use_sliding_window", "anetrain implements full causal attention only") != 0) return -1;
    const cJSON *v = hf_field(j, "rope_scaling");
    if (v)
        return err_set(j->err, "%s: field rope_scaling: expected null (anetrain implements plain RoPE), found %s",
                       j->path, io_json_type(v));
    v = hf_field(j, "layer_types"); /* newer configs spell the sliding-window layers out */
    if (v) {
        if (!cJSON_IsArray(v))
            return err_set(j->err, "%s: field layer_types: expected an array, found %s", j->path, io_json_type(v));
        for (const cJSON *e = v->child; e; e = e->next)
            if (!cJSON_IsString(e) || strcmp(e->valuestring, "full_attention") != 0)
                return err_set(j->err, "%s: field layer_types: expected only \"full_attention\", found %s%.40s%s",
                               j->path, cJSON_IsString(e) ? "\"" : "", cJSON_IsString(e) ? e->valuestring : io_json_type(e),
                               cJSON_IsString(e) ? "\"" : "");
    }
    return 0;
}

/* transformers 5 moved rope_theta into "rope_parameters"; read it there when present. */
static int hf_config_rope_parameters(const HfJson *j, double *theta) {
    const cJSON *v = hf_field(j, "rope_parameters");
    if (!v) return 0;
    if (!cJSON_IsObject(v))
        return err_set(j->err, "%s: field rope_parameters: expected an object, found %s", j->path, io_json_type(v));
    HfJson sub = {j->path, v, j->err};
    const char *type = NULL;
    if (hf_get_string(&sub, "rope_type", "default", &type) != 0) return -1;
    if (strcmp(type, "default") != 0)
        return err_set(j->err, "%s: field rope_parameters.rope_type: expected \"default\" (plain RoPE), found \"%.40s\"",
                       j->path, type);
    float t;
    if (hf_get_float(&sub, "rope_theta", 0, *theta, &t) != 0) return -1;
    *theta = t;
    return 0;
}

static int hf_config_parse(const HfJson *j, ModelConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    const char *type = NULL;
    if (hf_get_string(j, "model_type", NULL, &type) != 0) return -1;
    if (strcmp(type, "llama") == 0) cfg->family = FAMILY_LLAMA;
    else if (strcmp(type, "qwen3") == 0) cfg->family = FAMILY_QWEN3;
    else return err_set(j->err, "%s: field model_type: expected \"llama\" or \"qwen3\", found \"%.40s\"", j->path, type);
    cfg->qk_norm = cfg->family == FAMILY_QWEN3;
    cfg->rope_style = ROPE_HALF;
    if (hf_config_check_unsupported(j) != 0) return -1;

    if (hf_get_int(j, "hidden_size", 1, 0, &cfg->dim) != 0 ||
        hf_get_int(j, "intermediate_size", 1, 0, &cfg->hidden_dim) != 0 ||
        hf_get_int(j, "num_hidden_layers", 1, 0, &cfg->n_layers) != 0 ||
        hf_get_int(j, "num_attention_heads", 1, 0, &cfg->n_heads) != 0 ||
        hf_get_int(j, "num_key_value_heads", 0, cfg->n_heads, &cfg->n_kv_heads) != 0 ||
        hf_get_int(j, "vocab_size", 1, 0, &cfg->vocab_size) != 0 ||
        hf_get_int(j, "max_position_embeddings", 1, 0, &cfg->max_seq_len) != 0)
        return -1;

    /* head_dim defaults as in the HF classes: hidden/heads for LlamaConfig, 128 for Qwen3Config. */
    int head_dim_default = 128;
    if (cfg->family == FAMILY_LLAMA) {
        if (cfg->n_heads > 0 && cfg->dim % cfg->n_heads != 0 && !hf_field(j, "head_dim"))
            return err_set(j->err, "%s: field head_dim: expected an integer when hidden_size=%d is not a multiple "
                                   "of num_attention_heads=%d, found nothing", j->path, cfg->dim, cfg->n_heads);
        head_dim_default = cfg->n_heads > 0 ? cfg->dim / cfg->n_heads : 0; /* 0: config_validate names n_heads */
    }
    if (hf_get_int(j, "head_dim", 0, head_dim_default, &cfg->head_dim) != 0) return -1;

    double theta = 10000.0;
    if (hf_config_rope_parameters(j, &theta) != 0) return -1;
    if (hf_get_float(j, "rope_theta", 0, theta, &cfg->rope_theta) != 0) return -1;
    if (hf_get_float(j, "rms_norm_eps", 1, 0.0, &cfg->norm_eps) != 0) return -1;
    /* Both LlamaConfig and Qwen3Config default to untied (Qwen3-0.6B's file says true). */
    if (hf_get_bool(j, "tie_word_embeddings", 0, &cfg->tied) != 0) return -1;
    return 0;
}

int hf_config_load(const char *path, ModelConfig *cfg, Err *err) {
    size_t size;
    char *text = file_read_all(path, &size, err);
    if (!text) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    int rc = 0;
    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        rc = err_set(err, "%s: not valid JSON (error near byte %zu of %zu)", path, at, size);
    } else if (!cJSON_IsObject(root)) {
        rc = err_set(err, "%s: expected a JSON object, found %s", path, io_json_type(root));
    } else {
        HfJson j = {path, root, err};
        rc = hf_config_parse(&j, cfg);
    }
    cJSON_Delete(root);
    free(text);
    if (rc != 0) return -1;
    return config_validate(cfg, path, err);
}

/* A family/qk-norm pairing the HF classes can express. */
static int hf_check_representable(const ModelConfig *c, const char *path, Err *err) {
    if (c->family == FAMILY_LLAMA && c->qk_norm)
        return err_set(err, "%s: cannot save as HF: field qk_norm: LlamaForCausalLM has no q/k norm "
                            "(expected 0 for family llama, found 1)", path);
    if (c->family == FAMILY_QWEN3 && !c->qk_norm)
        return err_set(err, "%s: cannot save as HF: field qk_norm: Qwen3ForCausalLM always has q/k norm "
                            "(expected 1 for family qwen3, found 0)", path);
    return 0;
}

/* The shortest decimal that reads back as v (so 1e-5f is written 1e-05, not 9.99999974737875e-06). */
static double hf_json_float(float v) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return strtod(buf, NULL);
}

static cJSON *hf_config_build(const ModelConfig *c) {
    int qwen = c->family == FAMILY_QWEN3;
    cJSON *root = cJSON_CreateObject();
    cJSON *arch = root ? cJSON_AddArrayToObject(root, "architectures") : NULL;
    int ok = arch && cJSON_AddItemToArray(arch, cJSON_CreateString(qwen ? "Qwen3ForCausalLM" : "LlamaForCausalLM"));
    ok = ok && cJSON_AddStringToObject(root, "model_type", qwen ? "qwen3" : "llama");
    ok = ok && cJSON_AddNumberToObject(root, "hidden_size", c->dim);
    ok = ok && cJSON_AddNumberToObject(root, "intermediate_size", c->hidden_dim);
    ok = ok && cJSON_AddNumberToObject(root, "num_hidden_layers", c->n_layers);
    ok = ok && cJSON_AddNumberToObject(root, "num_attention_heads", c->n_heads);
    ok = ok && cJSON_AddNumberToObject(root, "num_key_value_heads", c->n_kv_heads);
    ok = ok && cJSON_AddNumberToObject(root, "head_dim", c->head_dim);
    ok = ok && cJSON_AddNumberToObject(root, "vocab_size", c->vocab_size);
    ok = ok && cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_seq_len);
    ok = ok && cJSON_AddNumberToObject(root, "rope_theta", hf_json_float(c->rope_theta));
    ok = ok && cJSON_AddNullToObject(root, "rope_scaling");
    ok = ok && cJSON_AddNumberToObject(root, "rms_norm_eps", hf_json_float(c->norm_eps));
    ok = ok && cJSON_AddBoolToObject(root, "tie_word_embeddings", c->tied);
    ok = ok && cJSON_AddStringToObject(root, "hidden_act", "silu");
    ok = ok && cJSON_AddBoolToObject(root, "attention_bias", 0);
    ok = ok && cJSON_AddNumberToObject(root, "attention_dropout", 0.0);
    if (qwen) {
        ok = ok && cJSON_AddBoolToObject(root, "use_sliding_window", 0);
        ok = ok && cJSON_AddNullToObject(root, "sliding_window");
        ok = ok && cJSON_AddNumberToObject(root, "max_window_layers", c->n_layers);
    } else {
        ok = ok && cJSON_AddBoolToObject(root, "mlp_bias", 0);
        ok = ok && cJSON_AddNumberToObject(root, "pretraining_tp", 1);
    }
    ok = ok && cJSON_AddNumberToObject(root, "initializer_range", 0.02);
    ok = ok && cJSON_AddBoolToObject(root, "use_cache", 1);
    ok = ok && cJSON_AddStringToObject(root, "torch_dtype", "float32");
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int hf_config_save(const char *path, const ModelConfig *cfg, Err *err) {
    if (config_validate(cfg, path, err) != 0 || hf_check_representable(cfg, path, err) != 0) return -1;
    cJSON *root = hf_config_build(cfg);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return err_set(err, "%s: out of memory building config.json", path);
    AtomicFile f;
    int rc = atomic_file_open(&f, path, err);
    if (rc == 0) rc = atomic_file_write(&f, text, strlen(text), err);
    if (rc == 0) rc = atomic_file_write(&f, "\n", 1, err);
    if (rc == 0) rc = atomic_file_commit(&f, err);
    else atomic_file_abort(&f);
    free(text);
    return rc;
}

/* ================================================================ tensor names */

static const char *const hf_global_names[T_COUNT] = {
    [T_TOK_EMB] = "model.embed_tokens.weight",
    [T_RMS_FINAL] = "model.norm.weight",
    [T_WCLS] = "lm_head.weight",
};

static const char *const hf_layer_names[T_COUNT] = {
    [T_RMS_ATT] = "input_layernorm.weight",
    [T_WQ] = "self_attn.q_proj.weight",
    [T_WK] = "self_attn.k_proj.weight",
    [T_WV] = "self_attn.v_proj.weight",
    [T_WO] = "self_attn.o_proj.weight",
    [T_RMS_FFN] = "post_attention_layernorm.weight",
    [T_W1] = "mlp.gate_proj.weight",
    [T_W2] = "mlp.down_proj.weight",
    [T_W3] = "mlp.up_proj.weight",
    [T_Q_NORM] = "self_attn.q_norm.weight",
    [T_K_NORM] = "self_attn.k_norm.weight",
};

#define HF_NAME_MAX 96

static void hf_tensor_name(char *buf, size_t size, TensorKind k, int layer) {
    if (hf_global_names[k]) snprintf(buf, size, "%s", hf_global_names[k]);
    else snprintf(buf, size, "model.layers.%d.%s", layer, hf_layer_names[k]);
}

/* The HF shape of one layer of t: [cols] for norm weights, [rows, cols] for matrices. */
static int hf_tensor_shape(const TensorSpec *t, int64_t shape[2]) {
    if (t->rows == 1) {
        shape[0] = t->cols;
        return 1;
    }
    shape[0] = t->rows;
    shape[1] = t->cols;
    return 2;
}

/* 1 if name is one of the tensors the layout expects, spelled exactly as hf_tensor_name does
** (so "model.layers.01..." or a layer beyond the config's count is not). */
static int hf_tensor_expected(const ParamLayout *layout, const char *name) {
    long layer = -1;
    const char *rest = NULL;
    if (strncmp(name, "model.layers.", 13) == 0) {
        char *end;
        layer = strtol(name + 13, &end, 10);
        if (end != name + 13 && *end == '.') rest = end + 1;
    }
    for (int k = 0; k < T_COUNT; k++) {
        if (!layout->t[k].present) continue;
        if (hf_global_names[k]) {
            if (strcmp(name, hf_global_names[k]) == 0) return 1;
            continue;
        }
        if (!rest || layer < 0 || layer >= layout->cfg.n_layers || strcmp(rest, hf_layer_names[k]) != 0) continue;
        char canonical[HF_NAME_MAX];
        hf_tensor_name(canonical, sizeof canonical, (TensorKind)k, (int)layer);
        return strcmp(canonical, name) == 0;
    }
    return 0;
}

/* Tensors some exporters include that carry no weights of the model. */
static int hf_tensor_ignorable(const char *name) {
    static const char suffix[] = "rotary_emb.inv_freq";
    size_t len = strlen(name), n = sizeof suffix - 1;
    return len >= n && strcmp(name + len - n, suffix) == 0;
}

/* ================================================================ the safetensors files */

/* The tensor files of one model directory: model.safetensors, or the shards of an index. */
typedef struct {
    char source[1100]; /* the file that should list every tensor (for "missing" messages) */
    int n_files;
    StFile *files;
} HfTensors;

static int hf_path(char *buf, size_t size, const char *dir, const char *name, Err *err) {
    int n = snprintf(buf, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) return err_set(err, "%s/%s: path too long", dir, name);
    return 0;
}

static void hf_tensors_close(HfTensors *ts) {
    for (int i = 0; i < ts->n_files; i++) st_close(&ts->files[i]);
    free(ts->files);
    ts->files = NULL;
    ts->n_files = 0;
}

static const StTensor *hf_tensors_find(const HfTensors *ts, const char *name, const StFile **file) {
    for (int i = 0; i < ts->n_files; i++) {
        const StTensor *t = st_find(&ts->files[i], name);
        if (t) {
            *file = &ts->files[i];
            return t;
        }
    }
    return NULL;
}

/* Opens each distinct shard named in weight_map and checks each listed tensor is in its shard. */
static int hf_tensors_open_shards(HfTensors *ts, const char *dir, const cJSON *weight_map, Err *err) {
    const char *index = ts->source;
    int n_entries = cJSON_GetArraySize(weight_map);
    const char **names = err_calloc((size_t)n_entries, sizeof *names, index, err);
    ts->files = err_calloc((size_t)n_entries, sizeof *ts->files, index, err);
    if (!names || !ts->files) {
        free(names);
        return -1;
    }
    int n_names = 0, rc = 0;
    for (const cJSON *e = weight_map->child; e && rc == 0; e = e->next) {
        if (!cJSON_IsString(e))
            rc = err_set(err, "%s: weight_map: tensor %s: expected a file name, found %s", index, e->string,
                         io_json_type(e));
        else if (!e->valuestring[0] || strchr(e->valuestring, '/') || strcmp(e->valuestring, "..") == 0 ||
                 strcmp(e->valuestring, ".") == 0)
            rc = err_set(err, "%s: weight_map: tensor %s: expected a file name in the model directory, found \"%.80s\"",
                         index, e->string, e->valuestring);
        if (rc != 0) break;
        int seen = 0;
        for (int i = 0; i < n_names && !seen; i++) seen = strcmp(names[i], e->valuestring) == 0;
        if (seen) continue;
        char path[1100];
        rc = hf_path(path, sizeof path, dir, e->valuestring, err);
        if (rc == 0) rc = st_open(&ts->files[n_names], path, err);
        if (rc == 0) names[n_names++] = e->valuestring;
    }
    ts->n_files = n_names;
    for (const cJSON *e = weight_map->child; e && rc == 0; e = e->next) {
        int i = 0;
        while (strcmp(names[i], e->valuestring) != 0) i++;
        if (!st_find(&ts->files[i], e->string))
            rc = err_set(err, "%s: weight_map: tensor %s: listed in %s, which does not contain it", index, e->string,
                         e->valuestring);
    }
    free(names);
    return rc;
}

/* Prefers model.safetensors, as transformers does, then model.safetensors.index.json. */
static int hf_tensors_open(HfTensors *ts, const char *dir, Err *err) {
    memset(ts, 0, sizeof *ts);
    if (hf_path(ts->source, sizeof ts->source, dir, "model.safetensors", err) != 0) return -1;
    if (path_exists(ts->source)) {
        ts->files = err_calloc(1, sizeof *ts->files, ts->source, err);
        if (!ts->files || st_open(&ts->files[0], ts->source, err) != 0) {
            hf_tensors_close(ts);
            return -1;
        }
        ts->n_files = 1;
        return 0;
    }
    if (hf_path(ts->source, sizeof ts->source, dir, "model.safetensors.index.json", err) != 0) return -1;
    if (!path_exists(ts->source))
        return err_set(err, "%s: no model.safetensors or model.safetensors.index.json in the directory", dir);

    char *text = file_read_all(ts->source, NULL, err);
    if (!text) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    int rc;
    if (!root)
        rc = err_set(err, "%s: not valid JSON (error near byte %zu)", ts->source,
                     end && end >= text ? (size_t)(end - text) : 0);
    else if (!cJSON_IsObject(map))
        rc = err_set(err, "%s: field weight_map: expected an object, found %s", ts->source, io_json_type(map));
    else
        rc = hf_tensors_open_shards(ts, dir, map, err);
    cJSON_Delete(root);
    free(text);
    if (rc != 0) hf_tensors_close(ts);
    return rc;
}

/* ================================================================ load */

/* Reads tensor `name` of exactly `shape` into dst. */
static int hf_read_tensor(const HfTensors *ts, const char *name, const int64_t *shape, int rank, float *dst, Err *err) {
    char want[64], found[128];
    io_shape_format(want, sizeof want, shape, rank);
    const StFile *file;
    const StTensor *t = hf_tensors_find(ts, name, &file);
    if (!t) return err_set(err, "%s: tensor %s: missing (expected shape %s)", ts->source, name, want);
    int same = t->rank == rank;
    for (int i = 0; same && i < rank; i++) same = t->shape[i] == shape[i];
    if (!same) {
        io_shape_format(found, sizeof found, t->shape, t->rank);
        return err_set(err, "%s: tensor %s: expected shape %s, found %s", file->path, name, want, found);
    }
    size_t numel = 1;
    for (int i = 0; i < rank; i++) numel *= (size_t)shape[i];
    return st_read_f32(file, t, dst, numel, err);
}

/* Every tensor in the files must be one we load (or known to be harmless). */
static int hf_check_unexpected(const HfTensors *ts, const ParamLayout *layout, Err *err) {
    const ModelConfig *c = &layout->cfg;
    for (int f = 0; f < ts->n_files; f++) {
        for (int i = 0; i < ts->files[f].n_tensors; i++) {
            const char *name = ts->files[f].tensors[i].name;
            if (hf_tensor_expected(layout, name) || hf_tensor_ignorable(name)) continue;
            if (c->tied && strcmp(name, hf_global_names[T_WCLS]) == 0) continue; /* hf_check_tied_head */
            return err_set(err, "%s: tensor %s: unexpected: a %s model with %d layers (as config.json describes) has "
                                "no such weight, and ignoring it would compute a different model",
                           ts->files[f].path, name, config_family_name(c->family), c->n_layers);
        }
    }
    return 0;
}

/* Tied by config.json, but the file also holds lm_head.weight: accept it only if it is a copy. */
static int hf_check_tied_head(const HfTensors *ts, const ParamLayout *layout, const float *tok_emb, Err *err) {
    const StFile *file;
    const char *name = hf_global_names[T_WCLS];
    if (!hf_tensors_find(ts, name, &file)) return 0;
    const TensorSpec *t = &layout->t[T_TOK_EMB];
    int64_t shape[2];
    int rank = hf_tensor_shape(t, shape);
    float *head = err_malloc(t->numel * sizeof(float), name, err);
    if (!head) return -1;
    int rc = hf_read_tensor(ts, name, shape, rank, head, err);
    for (size_t i = 0; rc == 0 && i < t->numel; i++) {
        if (head[i] != tok_emb[i] && memcmp(&head[i], &tok_emb[i], sizeof(float)) != 0)
            rc = err_set(err, "%s: tensor %s: config.json says tie_word_embeddings=true, but it differs from %s "
                              "(element %zu: %g vs %g)", file->path, name, hf_global_names[T_TOK_EMB], i,
                         (double)head[i], (double)tok_emb[i]);
    }
    free(head);
    return rc;
}

static int hf_read_all(const HfTensors *ts, const ParamLayout *layout, float *params, Err *err) {
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &layout->t[k];
        if (!t->present) continue;
        int64_t shape[2];
        int rank = hf_tensor_shape(t, shape);
        for (int l = 0; l < t->layers; l++) {
            char name[HF_NAME_MAX];
            hf_tensor_name(name, sizeof name, (TensorKind)k, l);
            if (hf_read_tensor(ts, name, shape, rank, params_tensor(layout, params, (TensorKind)k, l), err) != 0)
                return -1;
        }
    }
    return 0;
}

int hf_load(const char *dir, ParamLayout *layout, float **params, Err *err) {
    *params = NULL;
    char path[1100];
    ModelConfig cfg;
    if (hf_path(path, sizeof path, dir, "config.json", err) != 0 || hf_config_load(path, &cfg, err) != 0) return -1;
    HfTensors ts;
    if (hf_tensors_open(&ts, dir, err) != 0) return -1;
    params_layout(layout, &cfg);
    float *p = NULL;
    int rc = hf_check_unexpected(&ts, layout, err);
    if (rc == 0) {
        p = err_malloc(layout->n_floats * sizeof(float), "model parameters", err);
        rc = p ? 0 : -1;
    }
    if (rc == 0) rc = hf_read_all(&ts, layout, p, err);
    if (rc == 0 && cfg.tied) rc = hf_check_tied_head(&ts, layout, p + layout->t[T_TOK_EMB].offset, err);
    hf_tensors_close(&ts);
    if (rc != 0) {
        free(p);
        return -1;
    }
    *params = p;
    return 0;
}

/* ================================================================ save */

/* Where each tensor kind comes from when writing: the caller's buffer, or for wq, wk and the
** q/k norms of an interleaved model, a rotate-half copy (the caller's buffer is never touched). */
typedef struct {
    const float *src[T_COUNT];
    float *copy;
} HfSource;

static int hf_source_prepare(HfSource *s, const ParamLayout *layout, const float *params, Err *err) {
    const ModelConfig *c = &layout->cfg;
    s->copy = NULL;
    for (int k = 0; k < T_COUNT; k++) s->src[k] = params + layout->t[k].offset;
    if (c->rope_style == ROPE_HALF) return 0;

    static const TensorKind kinds[] = {T_WQ, T_WK, T_Q_NORM, T_K_NORM};
    size_t total = 0;
    for (int i = 0; i < 4; i++) total += layout->t[kinds[i]].numel;
    s->copy = err_malloc(total * sizeof(float), "rotate-half copy of wq/wk", err);
    if (!s->copy) return -1;
    float *dst = s->copy;
    for (int i = 0; i < 4; i++) {
        const TensorSpec *t = &layout->t[kinds[i]];
        if (!t->present) continue;
        memcpy(dst, params + t->offset, t->numel * sizeof(float));
        /* wq: L*H heads of D rows of C; wk: L*KV heads; a norm: one head of D single weights per layer */
        size_t row = t->rows == 1 ? 1 : (size_t)t->cols;
        io_rope_permute_heads(dst, t->numel / ((size_t)c->head_dim * row), c->head_dim, row, ROPE_HALF);
        s->src[kinds[i]] = dst;
        dst += t->numel;
    }
    return 0;
}

static int hf_save_tensors(const char *path, const ParamLayout *layout, const HfSource *s, Err *err) {
    int n = 0;
    for (int k = 0; k < T_COUNT; k++) n += layout->t[k].present ? layout->t[k].layers : 0;
    StWriteTensor *w = err_calloc((size_t)n, sizeof *w, path, err);
    char(*names)[HF_NAME_MAX] = err_calloc((size_t)n, sizeof *names, path, err);
    if (!w || !names) {
        free(w);
        free(names);
        return -1;
    }
    int i = 0;
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &layout->t[k];
        for (int l = 0; t->present && l < t->layers; l++, i++) {
            hf_tensor_name(names[i], sizeof names[i], (TensorKind)k, l);
            w[i].name = names[i];
            w[i].rank = hf_tensor_shape(t, w[i].shape);
            w[i].data = s->src[k] + (size_t)l * (size_t)t->rows * (size_t)t->cols;
        }
    }
    static const char *const metadata[] = {"format", "pt", NULL}; /* transformers expects "pt" */
    int rc = st_write_f32(path, w, n, metadata, err);
    free(w);
    free(names);
    return rc;
}

int hf_save(const char *dir, const ParamLayout *layout, const float *params, Err *err) {
    const ModelConfig *c = &layout->cfg;
    if (config_validate(c, dir, err) != 0 || hf_check_representable(c, dir, err) != 0) return -1;
    char st_path[1100], config_path[1100];
    if (hf_path(st_path, sizeof st_path, dir, "model.safetensors", err) != 0 ||
        hf_path(config_path, sizeof config_path, dir, "config.json", err) != 0)
        return -1;
    if (dir_ensure(dir, err) != 0) return -1;
    HfSource s;
    if (hf_source_prepare(&s, layout, params, err) != 0) return -1;
    int rc = hf_save_tensors(st_path, layout, &s, err);
    free(s.copy);
    if (rc != 0) return -1;
    return hf_config_save(config_path, c, err);
}
