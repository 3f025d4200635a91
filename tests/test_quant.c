/*
** test_quant.c — the int8 format of frozen layer matrices (model/quant.h): the scale rule, the
** error bound, rounding, zero and tiny rows, and the whole-model quantize/dequantize helpers;
** and the table of the layer matrices they quantize (model/params.h).
*/
#include "test.h"

#include "util/fp16.h"
#include "model/quant.h"
#include "util/rng.h"

/* Every row: scale is an fp16 value, the smallest one >= max|w|/127; q in [-127, 127];
** |w - q*scale| <= scale/2; and the row's largest magnitude maps to +-127 or just below. */
static void check_rows(const float *w, int rows, int cols, const char *what) {
    int8_t *q = malloc((size_t)rows * cols);
    float *scale = malloc((size_t)rows * sizeof(float)), *back = malloc((size_t)rows * cols * sizeof(float));
    quant_rows_int8(q, scale, w, rows, cols);
    dequant_rows_int8(back, q, scale, rows, cols);
    int bad_scale = 0, bad_err = 0, bad_range = 0;
    for (int o = 0; o < rows; o++) {
        float maxabs = 0;
        for (int i = 0; i < cols; i++) maxabs = fmaxf(maxabs, fabsf(w[(size_t)o * cols + i]));
        float s = scale[o];
        if (maxabs == 0) {
            bad_scale += s != 0;
        } else {
            float need = fmaxf(maxabs / 127.0f, 0x1p-24f);
            uint16_t h = fp16_from_float(s);
            bad_scale += fp16_to_float(h) != s || s < need || fp16_to_float((uint16_t)(h - 1)) >= need;
        }
        for (int i = 0; i < cols; i++) {
            size_t k = (size_t)o * cols + i;
            bad_range += q[k] < -127;
            bad_err += fabsf(w[k] - back[k]) > s / 2 || back[k] != (float)q[k] * s;
        }
    }
    CHECK(bad_scale == 0, "%s: %d rows with a scale that is not the smallest fp16 >= max/127", what, bad_scale);
    CHECK(bad_range == 0, "%s: %d values quantized to -128", what, bad_range);
    CHECK(bad_err == 0, "%s: %d values off by more than scale/2", what, bad_err);
    free(q);
    free(scale);
    free(back);
}

static void test_error_bound_random(void) {
    Rng rng;
    rng_seed(&rng, 7);
    enum { R = 64, Cc = 300 };
    float *w = malloc(sizeof(float) * R * Cc);
    for (int o = 0; o < R; o++) {
        float mag = powf(10.0f, -4.0f + 5.0f * (float)o / R); /* rows from 1e-4 to ~10 */
        for (int i = 0; i < Cc; i++) w[o * Cc + i] = mag * (float)rng_normal(&rng);
    }
    check_rows(w, R, Cc, "random rows");
    free(w);
}

static void test_special_rows(void) {
    float w[4][4] = {
        {0, 0, 0, 0},                 /* zero row: scale 0, q 0 */
        {1e-9f, -3e-9f, 0, 2e-9f},    /* below fp16's subnormal quantum: scale 2^-24 */
        {127, -127, 63.5f, 0.5f},     /* scale 1 exactly; 63.5 and 0.5 are ties: to even */
        {-5, 5, 2.5f, -1},            /* negative maximum */
    };
    check_rows(&w[0][0], 4, 4, "special rows");
    int8_t q[16];
    float s[4];
    quant_rows_int8(q, s, &w[0][0], 4, 4);
    CHECK(s[0] == 0 && q[0] == 0 && q[3] == 0, "zero row: scale %g", s[0]);
    CHECK(s[1] == 0x1p-24f, "tiny row: scale %g, expected 2^-24", s[1]);
    CHECK(s[2] == 1.0f, "scale %g, expected 1", s[2]);
    CHECK(q[8] == 127 && q[9] == -127 && q[10] == 64 && q[11] == 0, "ties to even: %d %d %d %d", q[8], q[9], q[10],
          q[11]);
}

static void test_model(void) {
    ModelConfig cfg;
    Err err;
    CHECK(config_from_preset(&cfg, "tiny-qwen3", &err) == 0, "%s", err.msg);
    ParamLayout pl;
    params_layout(&pl, &cfg);
    float *p = malloc(pl.n_floats * sizeof(float)), *back = malloc(pl.n_floats * sizeof(float));
    Rng rng;
    rng_seed(&rng, 3);
    params_init(&pl, p, &rng);
    memcpy(back, p, pl.n_floats * sizeof(float));
    Int8Weights qw;
    CHECK(quant_int8_create(&qw, &pl, p, &err) == 0, "%s", err.msg);
    quant_int8_dequantize_into(&qw, &pl, back);
    /* int8 kinds: within scale/2 of the original, scales as quant_int8_scale says; the rest untouched */
    int n_int8 = 0;
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &pl.t[k];
        if (!t->present) continue;
        int is8 = quant_kind_is_int8((TensorKind)k), bad = 0;
        n_int8 += is8;
        for (int l = 0; l < t->layers; l++) {
            const float *sc = is8 ? quant_int8_scale(&qw, (TensorKind)k, l) : NULL;
            const int8_t *q = is8 ? quant_int8_q(&qw, (TensorKind)k, l) : NULL;
            for (size_t i = 0; i < (size_t)t->rows * t->cols; i++) {
                size_t at = t->offset + (size_t)l * t->rows * t->cols + i;
                if (!is8) {
                    bad += back[at] != p[at];
                } else {
                    float s = sc[i / t->cols];
                    bad += back[at] != (float)q[i] * s || fabsf(back[at] - p[at]) > s / 2 || s <= 0;
                }
            }
        }
        CHECK(bad == 0, "tensor %s: %d values wrong", t->name, bad);
    }
    CHECK(n_int8 == 7, "%d int8 kinds, expected 7", n_int8);
    CHECK(quant_int8_bytes(&qw) < quant_int8_fp32_bytes(&pl) / 3, "int8 %zu bytes vs fp32 %zu",
          quant_int8_bytes(&qw), quant_int8_fp32_bytes(&pl));
    quant_int8_free(&qw);
    free(p);
    free(back);
}

/* The table of the seven layer matrices agrees with the layout: names, shapes, views of each
** layer, the int8 kinds; GQA (kv_heads < heads) and an untied model tell the shapes apart. */
static void test_layer_matrices(void) {
    ModelConfig cfg;
    Err err;
    CHECK(config_from_preset(&cfg, "tiny-qwen3", &err) == 0, "%s", err.msg);
    cfg.n_kv_heads = cfg.n_heads / 2;
    cfg.tied = 0;
    CHECK(config_validate(&cfg, "cfg", &err) == 0, "%s", err.msg);
    ParamLayout pl;
    params_layout(&pl, &cfg);
    float *p = calloc(pl.n_floats, sizeof(float));
    ParamViews v;
    params_views(&pl, p, &v);
    static const char *const order[LAYER_MATRICES] = {"wq", "wk", "wv", "wo", "w1", "w3", "w2"};
    int int8_kinds = 0;
    for (int k = 0; k < T_COUNT; k++) int8_kinds += quant_kind_is_int8((TensorKind)k);
    CHECK(int8_kinds == LAYER_MATRICES, "int8 kinds: %d", int8_kinds);
    for (int m = 0; m < LAYER_MATRICES; m++) {
        const LayerMatrix *lm = &layer_matrices[m];
        const TensorSpec *t = &pl.t[lm->kind];
        int rows, cols;
        layer_matrix_shape(&cfg, m, &rows, &cols);
        CHECK(!strcmp(lm->name, order[m]) && !strcmp(t->name, lm->name), "matrix %d: %s", m, lm->name);
        CHECK(rows == t->rows && cols == t->cols && t->layers == cfg.n_layers, "%s: [%d][%d], layout [%d][%d]",
              lm->name, rows, cols, t->rows, t->cols);
        CHECK(layer_matrix_of_kind(lm->kind) == m && quant_kind_is_int8(lm->kind), "%s: kind", lm->name);
        for (int l = 0; l < cfg.n_layers; l++)
            CHECK(layer_matrix(&v, &cfg, m, l) == params_tensor(&pl, p, lm->kind, l), "%s layer %d: view", lm->name, l);
    }
    CHECK(layer_matrix_of_kind(T_RMS_ATT) == -1 && layer_matrix_of_kind(T_WCLS) == -1, "not layer matrices");
    free(p);
}

int main(void) {
    RUN(test_error_bound_random);
    RUN(test_special_rows);
    RUN(test_model);
    RUN(test_layer_matrices);
    return TEST_SUMMARY();
}
