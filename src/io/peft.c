/*
** peft.c — LoRA adapters as PEFT's adapter directory: adapter_model.safetensors and
** adapter_config.json (see peft.h).
**
** No file is loaded that this module would read differently from PEFT: every
** adapter_config.json option that changes the function is checked, not ignored.
*/
#include "peft.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/fileio.h"
#include "safetensors.h"

/* ================================================================ RoPE rows of B */

/* Permutes the rows of n_heads heads of D rows x cols floats from one RoPE style to the other,
** exactly as params_convert_rope permutes wq/wk (io_rope_permute_heads):
**   to ROPE_HALF:        interleaved row 2i+p   -> half row p*(D/2)+i
**   to ROPE_INTERLEAVED: half row p*(D/2)+i     -> interleaved row 2i+p
** scratch holds D*cols floats. */
static void permute_rope_rows(float *x, size_t n_heads, int D, size_t cols, RopeStyle to, float *scratch) {
    int half = D / 2;
    for (size_t h = 0; h < n_heads; h++) {
        float *head = x + h * (size_t)D * cols;
        memcpy(scratch, head, (size_t)D * cols * sizeof(float));
        for (int row = 0; row < D; row++) {
            int dest = to == ROPE_HALF ? (row % 2) * half + row / 2 : 2 * (row % half) + row / half;
            memcpy(head + (size_t)dest * cols, scratch + (size_t)row * cols, cols * sizeof(float));
        }
    }
}

/* Permutes B of q and k (every layer) of adapter into RoPE style `to`. */
static int permute_adapter_rope(const LoraLayout *lo, float *adapter, RopeStyle to, Err *err) {
    const ModelConfig *c = &lo->model;
    size_t r = (size_t)lo->cfg.rank;
    float *scratch = err_malloc((size_t)c->head_dim * r * sizeof(float), "RoPE permutation scratch", err);
    if (!scratch) return -1;
    for (int l = 0; l < c->n_layers; l++) {
        if (lo->t[LORA_Q].present)
            permute_rope_rows(lora_B(lo, adapter, LORA_Q, l), (size_t)c->n_heads, c->head_dim, r, to, scratch);
        if (lo->t[LORA_K].present)
            permute_rope_rows(lora_B(lo, adapter, LORA_K, l), (size_t)c->n_kv_heads, c->head_dim, r, to, scratch);
    }
    free(scratch);
    return 0;
}

/* ================================================================ PEFT files */

#define PEFT_NAME_MAX 128

/* base_model.model.model.layers.N.<path>.lora_<A|B>.weight */
static void peft_tensor_name(char *buf, size_t size, LoraModule m, int layer, char which) {
    snprintf(buf, size, "base_model.model.model.layers.%d.%s.lora_%c.weight", layer, lora_module_hf_path(m), which);
}

static int join_path(char *buf, size_t size, const char *dir, const char *name, Err *err) {
    int n = snprintf(buf, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size) return err_set(err, "%s/%s: path too long", dir, name);
    return 0;
}

/* The shortest decimal that reads back as the float v (16, 0.05 rather than 0.0500000007). */
static double json_float(float v) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return strtod(buf, NULL);
}

static cJSON *config_build(const LoraLayout *lo, const char *base_model) {
    const LoraConfig *c = &lo->cfg;
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    int ok = cJSON_AddObjectToObject(root, "alpha_pattern") && cJSON_AddNullToObject(root, "auto_mapping") &&
             (base_model ? cJSON_AddStringToObject(root, "base_model_name_or_path", base_model) != NULL
                         : cJSON_AddNullToObject(root, "base_model_name_or_path") != NULL) &&
             cJSON_AddStringToObject(root, "bias", "none") && cJSON_AddFalseToObject(root, "fan_in_fan_out") &&
             cJSON_AddTrueToObject(root, "inference_mode") && cJSON_AddTrueToObject(root, "init_lora_weights") &&
             cJSON_AddNullToObject(root, "layers_pattern") && cJSON_AddNullToObject(root, "layers_to_transform") &&
             cJSON_AddNumberToObject(root, "lora_alpha", json_float(c->alpha)) &&
             cJSON_AddNumberToObject(root, "lora_dropout", json_float(c->dropout)) &&
             cJSON_AddNullToObject(root, "modules_to_save") && cJSON_AddStringToObject(root, "peft_type", "LORA") &&
             cJSON_AddNumberToObject(root, "r", c->rank) && cJSON_AddObjectToObject(root, "rank_pattern") &&
             cJSON_AddNullToObject(root, "revision");
    cJSON *targets = ok ? cJSON_AddArrayToObject(root, "target_modules") : NULL;
    ok = targets != NULL;
    for (int m = 0; ok && m < LORA_MODULES; m++)
        if (lo->t[m].present) ok = cJSON_AddItemToArray(targets, cJSON_CreateString(lora_module_peft_name((LoraModule)m)));
    ok = ok && cJSON_AddStringToObject(root, "task_type", "CAUSAL_LM") && cJSON_AddFalseToObject(root, "use_dora") &&
         cJSON_AddBoolToObject(root, "use_rslora", c->rslora ? 1 : 0);
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static int write_text_atomic(const char *path, const char *text, Err *err) {
    AtomicFile f;
    if (atomic_file_open(&f, path, err) != 0) return -1;
    if (atomic_file_write(&f, text, strlen(text), err) != 0 || atomic_file_write(&f, "\n", 1, err) != 0) {
        atomic_file_abort(&f);
        return -1;
    }
    return atomic_file_commit(&f, err);
}

int lora_save(const char *dir, const LoraLayout *lo, const float *adapter, const char *base_model, Err *err) {
    char st_path[1100], cfg_path[1100];
    if (join_path(st_path, sizeof st_path, dir, "adapter_model.safetensors", err) != 0 ||
        join_path(cfg_path, sizeof cfg_path, dir, "adapter_config.json", err) != 0 || dir_ensure(dir, err) != 0)
        return -1;
    /* The file holds B in HF's rotate-half row order: a copy is permuted for interleaved models. */
    const float *src = adapter;
    float *copy = NULL;
    if (lo->model.rope_style == ROPE_INTERLEAVED && (lo->t[LORA_Q].present || lo->t[LORA_K].present)) {
        copy = err_malloc(lo->n_floats * sizeof(float), "rotate-half copy of the adapter", err);
        if (!copy) return -1;
        memcpy(copy, adapter, lo->n_floats * sizeof(float));
        if (permute_adapter_rope(lo, copy, ROPE_HALF, err) != 0) {
            free(copy);
            return -1;
        }
        src = copy;
    }
    int L = lo->model.n_layers, n = 0, r = lo->cfg.rank;
    for (int m = 0; m < LORA_MODULES; m++) n += lo->t[m].present ? 2 * L : 0;
    StWriteTensor *w = err_calloc((size_t)n, sizeof *w, st_path, err);
    char(*names)[PEFT_NAME_MAX] = err_calloc((size_t)n, sizeof *names, st_path, err);
    int rc = w && names ? 0 : -1;
    int i = 0;
    for (int m = 0; rc == 0 && m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo->t[m];
        for (int l = 0; t->present && l < L; l++) {
            peft_tensor_name(names[i], PEFT_NAME_MAX, (LoraModule)m, l, 'A');
            w[i] = (StWriteTensor){names[i], lora_A(lo, (float *)src, (LoraModule)m, l), 2, {r, t->in}};
            i++;
            peft_tensor_name(names[i], PEFT_NAME_MAX, (LoraModule)m, l, 'B');
            w[i] = (StWriteTensor){names[i], lora_B(lo, (float *)src, (LoraModule)m, l), 2, {t->out, r}};
            i++;
        }
    }
    static const char *const metadata[] = {"format", "pt", NULL};
    if (rc == 0) rc = st_write_f32(st_path, w, n, metadata, err);
    free(w);
    free(names);
    free(copy);
    if (rc != 0) return -1;
    cJSON *root = config_build(lo, base_model);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return err_set(err, "%s: out of memory building the adapter config", cfg_path);
    rc = write_text_atomic(cfg_path, text, err);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------- adapter_config.json */

static const char *json_kind(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v) ? "true" : "false";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an unknown value";
}

/* The value of key; NULL when absent or null (PEFT's defaults then apply). */
static const cJSON *field(const cJSON *root, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsNull(v) ? NULL : v;
}

/* A field that must be absent, null, false, or empty ({} / []) for the adapter to compute as we do. */
static int require_unset(const char *path, const cJSON *root, const char *key, const char *why, Err *err) {
    const cJSON *v = field(root, key);
    if (!v || cJSON_IsFalse(v)) return 0;
    if ((cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child) return 0;
    return err_set(err, "%s: field %s: expected null, false or empty (%s), found %s", path, key, why, json_kind(v));
}

static int get_number(const char *path, const cJSON *root, const char *key, double dflt, double *out, Err *err) {
    const cJSON *v = field(root, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsNumber(v)) return err_set(err, "%s: field %s: expected a number, found %s", path, key, json_kind(v));
    *out = v->valuedouble;
    return 0;
}

static int parse_target_modules(const char *path, const cJSON *v, unsigned *targets, Err *err) {
    *targets = 0;
    if (!v) return err_set(err, "%s: field target_modules: expected a list of module names, found nothing", path);
    if (cJSON_IsString(v)) {
        if (strcmp(v->valuestring, "all-linear") == 0) {
            *targets = LORA_ALL; /* every linear layer but the output head, as PEFT */
            return 0;
        }
        return err_set(err,
                       "%s: field target_modules: expected a list of names or \"all-linear\", found the string "
                       "\"%.80s\" (a regular expression; anetrain does not match module names by regex)",
                       path, v->valuestring);
    }
    if (!cJSON_IsArray(v))
        return err_set(err, "%s: field target_modules: expected a list of module names, found %s", path, json_kind(v));
    for (const cJSON *e = v->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return err_set(err, "%s: field target_modules: expected strings, found %s", path, json_kind(e));
        int m = lora_module_by_name(e->valuestring, strlen(e->valuestring));
        if (m < 0 || strcmp(e->valuestring, lora_module_peft_name((LoraModule)m)) != 0)
            return err_set(err,
                           "%s: field target_modules: expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or "
                           "down_proj, found \"%.80s\"",
                           path, e->valuestring);
        *targets |= 1u << m;
    }
    if (!*targets) return err_set(err, "%s: field target_modules: expected at least one module, found none", path);
    return 0;
}

static int config_parse(const char *path, const cJSON *root, LoraConfig *c, Err *err) {
    memset(c, 0, sizeof *c);
    const cJSON *v = field(root, "peft_type");
    if (!cJSON_IsString(v) || strcmp(v->valuestring, "LORA") != 0)
        return err_set(err, "%s: field peft_type: expected \"LORA\", found %s%s%.40s%s", path,
                       cJSON_IsString(v) ? "" : json_kind(v), cJSON_IsString(v) ? "\"" : "",
                       cJSON_IsString(v) ? v->valuestring : "", cJSON_IsString(v) ? "\"" : "");
    double r = 8, alpha = 8, dropout = 0;
    /* PEFT's LoraConfig defaults: r 8, lora_alpha 8, lora_dropout 0 */
    if (get_number(path, root, "r", 8, &r, err) != 0 || get_number(path, root, "lora_alpha", 8, &alpha, err) != 0 ||
        get_number(path, root, "lora_dropout", 0, &dropout, err) != 0)
        return -1;
    if (!(r >= 1 && r <= LORA_MAX_RANK) || r != floor(r))
        return err_set(err, "%s: field r: expected an integer in [1, %d], found %g", path, LORA_MAX_RANK, r);
    c->rank = (int)r;
    c->alpha = (float)alpha;
    c->dropout = (float)dropout;
    v = field(root, "use_rslora");
    if (v && !cJSON_IsBool(v))
        return err_set(err, "%s: field use_rslora: expected true or false, found %s", path, json_kind(v));
    c->rslora = cJSON_IsTrue(v);
    v = field(root, "bias");
    if (v && (!cJSON_IsString(v) || strcmp(v->valuestring, "none") != 0))
        return err_set(err, "%s: field bias: expected \"none\" (anetrain's linear layers have no biases), found %s%.40s",
                       path, cJSON_IsString(v) ? "" : json_kind(v), cJSON_IsString(v) ? v->valuestring : "");
    if (require_unset(path, root, "fan_in_fan_out", "weights are [out][in] as nn.Linear", err) != 0 ||
        require_unset(path, root, "use_dora", "DoRA is not implemented", err) != 0 ||
        require_unset(path, root, "lora_bias", "adapters without biases only", err) != 0 ||
        require_unset(path, root, "rank_pattern", "one rank for every module", err) != 0 ||
        require_unset(path, root, "alpha_pattern", "one alpha for every module", err) != 0 ||
        require_unset(path, root, "layers_to_transform", "adapters on every layer", err) != 0 ||
        require_unset(path, root, "layer_replication", "no replicated layers", err) != 0 ||
        require_unset(path, root, "modules_to_save", "no fully trained modules besides the adapter", err) != 0 ||
        require_unset(path, root, "exclude_modules", "no excluded modules", err) != 0)
        return -1;
    return parse_target_modules(path, field(root, "target_modules"), &c->targets, err);
}

/* ---------------------------------------------------------------- adapter_model.safetensors */

static int read_tensor(const StFile *f, const char *name, int64_t rows, int64_t cols, float *dst, Err *err) {
    const StTensor *t = st_find(f, name);
    if (!t) return err_set(err, "%s: tensor %s: missing (expected shape [%lld, %lld])", f->path, name,
                           (long long)rows, (long long)cols);
    if (t->rank != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return err_set(err, "%s: tensor %s: expected shape [%lld, %lld], found rank %d [%lld, %lld%s]", f->path, name,
                       (long long)rows, (long long)cols, t->rank, (long long)(t->rank > 0 ? t->shape[0] : 0),
                       (long long)(t->rank > 1 ? t->shape[1] : 0), t->rank > 2 ? ", ..." : "");
    return st_read_f32(f, t, dst, (size_t)(rows * cols), err);
}

/* 1 if name is one of the tensors lo expects. */
static int peft_name_expected(const LoraLayout *lo, const char *name) {
    char buf[PEFT_NAME_MAX];
    for (int m = 0; m < LORA_MODULES; m++) {
        if (!lo->t[m].present) continue;
        for (int l = 0; l < lo->model.n_layers; l++) {
            peft_tensor_name(buf, sizeof buf, (LoraModule)m, l, 'A');
            if (strcmp(buf, name) == 0) return 1;
            peft_tensor_name(buf, sizeof buf, (LoraModule)m, l, 'B');
            if (strcmp(buf, name) == 0) return 1;
        }
    }
    return 0;
}

static int read_tensors(const char *dir, const LoraLayout *lo, float *adapter, Err *err) {
    char path[1100];
    if (join_path(path, sizeof path, dir, "adapter_model.safetensors", err) != 0) return -1;
    if (!path_exists(path)) {
        char bin[1100];
        if (join_path(bin, sizeof bin, dir, "adapter_model.bin", err) == 0 && path_exists(bin))
            return err_set(err, "%s: not found; %s is a pickled PyTorch file, which anetrain does not read (save the "
                                "adapter with safe_serialization=True, PEFT's default)", path, bin);
        return err_set(err, "%s: no such file (expected a PEFT adapter directory)", path);
    }
    StFile f;
    if (st_open(&f, path, err) != 0) return -1;
    int rc = 0;
    for (int i = 0; rc == 0 && i < f.n_tensors; i++)
        if (!peft_name_expected(lo, f.tensors[i].name)) {
            char targets[64];
            lora_targets_format(lo->cfg.targets, targets, sizeof targets);
            rc = err_set(err, "%s: tensor %s: unexpected for a LoRA adapter on %s of a %d-layer model", path,
                         f.tensors[i].name, targets, lo->model.n_layers);
        }
    char name[PEFT_NAME_MAX];
    for (int m = 0; rc == 0 && m < LORA_MODULES; m++) {
        const LoraTensor *t = &lo->t[m];
        for (int l = 0; rc == 0 && t->present && l < lo->model.n_layers; l++) {
            peft_tensor_name(name, sizeof name, (LoraModule)m, l, 'A');
            rc = read_tensor(&f, name, lo->cfg.rank, t->in, lora_A(lo, adapter, (LoraModule)m, l), err);
            if (rc != 0) break;
            peft_tensor_name(name, sizeof name, (LoraModule)m, l, 'B');
            rc = read_tensor(&f, name, t->out, lo->cfg.rank, lora_B(lo, adapter, (LoraModule)m, l), err);
        }
    }
    st_close(&f);
    return rc;
}

int lora_load(const char *dir, const ModelConfig *model, LoraLayout *lo, float **adapter, Err *err) {
    *adapter = NULL;
    char path[1100];
    if (join_path(path, sizeof path, dir, "adapter_config.json", err) != 0) return -1;
    size_t size;
    char *text = file_read_all(path, &size, err);
    if (!text) return err_wrap(err, "%s: not a PEFT adapter directory", dir);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    LoraConfig cfg;
    int rc;
    if (!root) rc = err_set(err, "%s: not valid JSON (error near byte %zu of %zu)", path,
                            end && end >= text ? (size_t)(end - text) : 0, size);
    else if (!cJSON_IsObject(root)) rc = err_set(err, "%s: expected a JSON object, found %s", path, json_kind(root));
    else rc = config_parse(path, root, &cfg, err);
    cJSON_Delete(root);
    free(text);
    if (rc != 0 || lora_layout(lo, model, &cfg, path, err) != 0) return -1;
    float *a = err_calloc(lo->n_floats, sizeof(float), "LoRA adapter", err);
    if (!a) return -1;
    if (read_tensors(dir, lo, a, err) != 0 ||
        (model->rope_style == ROPE_INTERLEAVED && permute_adapter_rope(lo, a, ROPE_INTERLEAVED, err) != 0)) {
        free(a);
        return -1;
    }
    for (size_t i = 0; i < lo->n_floats; i++)
        if (!isfinite(a[i])) {
            double bad = a[i];
            free(a);
            return err_set(err, "%s/adapter_model.safetensors: element %zu of the adapter is %g (expected finite "
                                "values)", dir, i, bad);
        }
    *adapter = a;
    return 0;
}

int lora_apply(const char *dir, const ParamLayout *pl, float *params, Err *err) {
    LoraLayout lo;
    float *adapter;
    if (lora_load(dir, &pl->cfg, &lo, &adapter, err) != 0) return -1;
    lora_merge_into(&lo, pl, params, adapter);
    free(adapter);
    return 0;
}
