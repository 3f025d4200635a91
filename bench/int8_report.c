/*
** int8_report.c — what int8 layer matrices cost a model in loss, memory and compiles, on the
** emulated ANE (bench/ane_int8/int8_model.h: one kernel per layer and matrix group, weights
** as int8 constants).
**
**   build/bench/int8_report --model PATH --data TOKENS [--seq T] [--windows N]
**                           [--calib-windows N] [--placement per-channel|after]
**
** Loss is the mean over N consecutive windows of T tokens from the start of TOKENS (a
** held-out file); W8A8's static activation scales are calibrated on the next --calib-windows
** windows (disjoint from the evaluated ones). Rows printed:
**   fp32                the CPU backend on the model as loaded
**   int8 (CPU, fp32)    the CPU backend with the layer matrices replaced by their per-row int8
**                       dequantization (model/quant.h): the quantization's own cost
**   W8 emulated         every layer matrix an int8 constant kernel on the emulator (fp16)
**   W8A8 emulated       the same with each kernel's input quantized to int8
** and the compiles each variant took, against the process budget.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ane/device.h"
#include "ane_int8/int8_model.h"
#include "backend/backend.h"
#include "data/tokfile.h"
#include "model/quant.h"
#include "train/evaluate.h"
#include "train/trainer.h"
#include "util/clock.h"
#include "util/parallel.h"

static const char usage[] =
    "usage: int8_report --model PATH --data TOKENS [--seq T] [--windows N] [--calib-windows N]\n"
    "                   [--placement per-channel|after] [--threads N]\n";

static int fail(const Err *err) {
    fprintf(stderr, "int8_report: %s\n", err->msg);
    return 1;
}

/* Mean loss of the emulated int8 model over windows [0, n) of tokens. */
static int device_loss(AneInt8Model *m, const ParamLayout *pl, const float *params, const int32_t *tokens, size_t n,
                       int T, double *loss, Err *err) {
    double total = 0;
    for (size_t w = 0; w < n; w++) {
        double l = 0;
        if (ane_int8_model_loss(m, pl, params, tokens + w * T, tokens + w * T + 1, T, &l, err)) return -1;
        total += l;
    }
    *loss = total / (double)n;
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *placement_name = "per-channel";
    int T = 128, threads = 2;
    long windows = 8, calib = 2;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(usage, stdout), 0;
        if (!v) return fprintf(stderr, "int8_report: %s needs a value\n%s", a, usage), 2;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--seq")) T = atoi(v);
        else if (!strcmp(a, "--windows")) windows = atol(v);
        else if (!strcmp(a, "--calib-windows")) calib = atol(v);
        else if (!strcmp(a, "--placement")) placement_name = v;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else return fprintf(stderr, "int8_report: unknown option %s\n%s", a, usage), 2;
    }
    if (!model || !data || T < 1 || windows < 1 || calib < 1 || threads < 1)
        return fputs(usage, stderr), 2;
    AneInt8ScalePlacement placement;
    if (!strcmp(placement_name, "per-channel")) placement = ANE_INT8_SCALE_PER_CHANNEL;
    else if (!strcmp(placement_name, "after")) placement = ANE_INT8_SCALE_AFTER;
    else return fprintf(stderr, "int8_report: --placement must be per-channel or after\n"), 2;
    parallel_init(threads);

    Err err = {{0}};
    ParamLayout pl;
    float *params = NULL;
    if (model_load_any(model, &pl, &params, &err)) return fail(&err);
    const ModelConfig *cfg = &pl.cfg;
    if (T > cfg->max_seq_len) T = cfg->max_seq_len;
    TokFile tf;
    if (tokfile_load(&tf, data, cfg->vocab_size, &err)) return fail(&err);
    size_t avail = eval_windows(tf.n_tokens, T);
    if (avail < 2) return fprintf(stderr, "int8_report: %s has fewer than 2 windows of %d tokens\n", data, T), 1;
    if ((size_t)(windows + calib) > avail) {
        calib = calib < (long)avail / 2 ? calib : (long)avail / 2;
        windows = (long)avail - calib;
    }
    size_t n_eval = (size_t)windows;
    const int32_t *calib_tokens = tf.tokens + n_eval * T;
    int L = cfg->n_layers, nk = L * ANE_INT8_KERNELS_PER_LAYER;
    printf("model %s: dim %d, hidden %d, %d layers, %d heads (%d kv), vocab %d\n", model, cfg->dim, cfg->hidden_dim, L,
           cfg->n_heads, cfg->n_kv_heads, cfg->vocab_size);
    printf("data %s: %zu windows of %d tokens evaluated, %ld for calibration\n\n", data, n_eval, T, calib);

    /* fp32 and int8-dequantized on the CPU backend */
    Int8Weights qw;
    if (quant_int8_create(&qw, &pl, params, &err)) return fail(&err);
    float *deq = malloc(pl.n_floats * sizeof *deq);
    int32_t *in = malloc((size_t)T * sizeof *in), *tg = malloc((size_t)T * sizeof *tg);
    if (!deq || !in || !tg) return fprintf(stderr, "int8_report: out of memory\n"), 1;
    memcpy(deq, params, pl.n_floats * sizeof *deq);
    quant_int8_dequantize_into(&qw, &pl, deq);
    Backend *be = backend_cpu_create(&pl, 1, T, &err);
    double loss_fp32 = 0, loss_deq = 0;
    if (!be || eval_loss(be, params, NULL, tf.tokens, n_eval, 1, T, in, tg, &loss_fp32, NULL, &err) ||
        eval_loss(be, deq, NULL, tf.tokens, n_eval, 1, T, in, tg, &loss_deq, NULL, &err))
        return fail(&err);
    be->destroy(be);

    /* calibration of the W8A8 activation scales */
    float *act_max = calloc((size_t)nk, sizeof *act_max), *act_scales = calloc((size_t)nk, sizeof *act_scales);
    for (long w = 0; w < calib; w++) {
        double l;
        if (ane_int8_model_loss_cpu(&pl, params, calib_tokens + w * T, calib_tokens + w * T + 1, T, NULL, act_max, &l,
                                    &err))
            return fail(&err);
    }
    ane_int8_act_scales(act_scales, act_max, nk);

    AneEmuOptions eo;
    ane_emu_default_options(&eo);
    AneDevice *dev = ane_emu_create(&eo, &err);
    if (!dev) return fail(&err);
    printf("%-18s %10s %12s %10s %9s %10s\n", "variant", "loss", "vs fp32", "rel.", "compiles", "seconds");
    printf("%-18s %10.5f %12s %10s %9s %10s\n", "fp32 (CPU)", loss_fp32, "", "", "", "");
    printf("%-18s %10.5f %+12.5f %+9.3f%% %9s %10s\n", "int8 (CPU, fp32)", loss_deq, loss_deq - loss_fp32,
           100 * (loss_deq - loss_fp32) / loss_fp32, "", "");
    for (int w8a8 = 0; w8a8 < 2; w8a8++) {
        uint64_t before = dev->counters.compiles;
        double t0 = now_seconds(), loss = 0;
        AneInt8Model *m = ane_int8_model_create(dev, &pl, &qw, w8a8 ? act_scales : NULL, placement, T, &err);
        if (!m || device_loss(m, &pl, params, tf.tokens, n_eval, T, &loss, &err)) {
            fprintf(stderr, "int8_report: %s: %s\n", w8a8 ? "W8A8" : "W8", err.msg);
            ane_int8_model_free(m);
            continue;
        }
        printf("%-18s %10.5f %+12.5f %+9.3f%% %9llu %10.1f\n", w8a8 ? "W8A8 emulated" : "W8 emulated", loss,
               loss - loss_fp32, 100 * (loss - loss_fp32) / loss_fp32,
               (unsigned long long)(dev->counters.compiles - before), now_seconds() - t0);
        ane_int8_model_free(m);
    }
    printf("\nscales: %s; compiles used in this process: %llu of a budget of %d\n", placement_name,
           (unsigned long long)dev->counters.compiles, dev->compile_budget);
    printf("layer matrices: %.2f MB fp32, %.2f MB int8 + scales (%.1fx smaller)\n",
           quant_int8_fp32_bytes(&pl) / 1e6, quant_int8_bytes(&qw) / 1e6,
           (double)quant_int8_fp32_bytes(&pl) / (double)quant_int8_bytes(&qw));
    printf("compiles per int8 model (4 kernels per layer): %d here;", nk);
    static const char *const presets[] = {"stories15m", "stories110m", "qwen3-0.6b"};
    for (int i = 0; i < 3; i++) {
        ModelConfig c;
        if (config_from_preset(&c, presets[i], &err) == 0)
            printf(" %s %d%s", presets[i], 4 * c.n_layers, i < 2 ? "," : "");
    }
    printf(" (budget about 119 per process)\n");
    dev->destroy(dev);
    quant_int8_free(&qw);
    free(deq);
    free(in);
    free(tg);
    free(act_max);
    free(act_scales);
    free(params);
    tokfile_free(&tf);
    parallel_shutdown();
    return 0;
}
