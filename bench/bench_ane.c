/*
** bench_ane.c — the ANE backend on the emulated device against the CPU backend, with the
** efficiency report: ms/step for both (the same whole step: zero the gradients, backend step,
** clip the global norm to 1.0, AdamW), then per step what crossed the device boundary and
** where the time went, next to the design of the seed project, maderix/ANE, for the same model
** (docs/ane-facts.md §4.2: 10 kernels per layer and sequence, weights staged into two kernels
** each).
**
** The emulator runs the device's work on this CPU (fp32 sgemm plus fp16 rounding and the data
** movement of every MIL op), so "ANE ms/step" here is an emulation cost, not a prediction of
** the real device. The target of the ANE issue: an emulated step at most 4x the CPU step.
** With --lora-rank R the step fine-tunes a LoRA adapter instead: the ANE backend over a frozen
** base (backend_ane_create_frozen: the base staged once, the adapter every step, dA/dB on the
** CPU), the CPU backend over the same frozen base (backend_cpu_create_frozen: the adapter
** unmerged, no base gradient), AdamW on the adapter alone for both, as the trainer runs them.
** --int8 (with --lora-rank) makes the frozen base per-row int8 (model/quant.h), FrozenBase.int8
** on both: the ANE backend stages the int8 values and row scales once (int8 kernels), the CPU
** dequantizes each matrix on the fly.
** Everything is allocated before the first timed step. This is a benchmark, not a test.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/ane/cost.h"
#include "backend/backend.h"
#include "model/config.h"
#include "model/params.h"
#include "model/quant.h"
#include "model/lora.h"
#include "train/lora_grad.h"
#include "train/optim.h"
#include "util/clock.h"
#include "util/blas.h"
#include "util/err.h"
#include "util/parallel.h"
#include "util/rng.h"

enum { MAX_MODELS = 8, MAX_STEPS = 100 };

typedef struct {
    const char *models[MAX_MODELS];
    int n_models;
    int B, T, steps, warmup, threads;
    int overlap;     /* dW worker: 1 on, 0 off, -1 auto (off on the emulator) */
    int accumulate;  /* 1: fp32 accumulation in the emulator */
    int cpu;         /* also time the CPU backend */
    int lora_rank;   /* > 0: LoRA fine-tuning steps of this rank on lora_targets */
    int int8;        /* 1: the frozen base is int8 (LoRA only) */
    const char *lora_targets;
    uint64_t seed;
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_ane [options]\n"
            "\n"
            "Times whole training steps (zero grads, backend step, clip to 1.0, AdamW) of the ANE\n"
            "backend on the emulated device and of the CPU backend, on random weights and tokens,\n"
            "and prints the ANE backend's efficiency report per step.\n"
            "\n"
            "  --model NAME[,NAME...]  presets (default: stories15m,stories110m); known: %s\n"
            "  --batch B               sequences per step (default 1)\n"
            "  --seq T                 tokens per sequence (default 256)\n"
            "  --steps N               timed steps; medians are shown (default 3)\n"
            "  --warmup N              untimed steps first (default 1)\n"
            "  --threads N             BLAS and pool threads (default: all %d cores)\n"
            "  --overlap -1|0|1        dW GEMMs in a worker thread overlapped with the device: 1 on,\n"
            "                          0 off, -1 auto: off on the emulator (default)\n"
            "  --accumulate fp32|fp16  the emulator's accumulation model (default fp32)\n"
            "  --no-cpu                skip the CPU backend\n"
            "  --lora-rank R           LoRA fine-tuning steps of rank R (alpha 2R) instead of full training:\n"
            "                          over a frozen base on both backends (default 0: off)\n"
            "  --lora-targets LIST     LoRA target matrices (q,k,v,o,gate,up,down, attn, mlp, all; default all)\n"
            "  --int8                  with --lora-rank: an int8 frozen base (per-row, fp16 scales); the ANE\n"
            "                          backend takes it as int8, the CPU runs on its dequantized weights\n"
            "  --seed S                RNG seed (default 1)\n"
            "  -h, --help              this text\n",
            config_preset_names(), parallel_cpu_count());
}

static int parse_int(const char *opt, const char *s, int min, int max, int *out, Err *err) {
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || *s == '\0' || *end != '\0' || v < min || v > max)
        return err_set(err, "%s: expected an integer in [%d, %d], found '%s'", opt, min, max, s ? s : "(nothing)");
    *out = (int)v;
    return 0;
}

static int parse_options(Options *o, int argc, char **argv, Err *err) {
    memset(o, 0, sizeof *o);
    o->B = 1, o->T = 256, o->steps = 3, o->warmup = 1, o->threads = parallel_cpu_count();
    o->overlap = -1, o->accumulate = 1, o->cpu = 1, o->seed = 1, o->lora_targets = "all";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0, takes = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--model")) {
            if (!val) return err_set(err, "--model: expected a preset name");
            static char buf[256];
            snprintf(buf, sizeof buf, "%s", val);
            for (char *n = strtok(buf, ","); n; n = strtok(NULL, ",")) {
                ModelConfig probe;
                if (o->n_models == MAX_MODELS) return err_set(err, "--model: at most %d models", MAX_MODELS);
                if (config_from_preset(&probe, n, err)) return -1;
                o->models[o->n_models++] = n;
            }
        } else if (!strcmp(a, "--batch")) rc = parse_int(a, val, 1, 1024, &o->B, err);
        else if (!strcmp(a, "--seq")) rc = parse_int(a, val, 1, 1 << 20, &o->T, err);
        else if (!strcmp(a, "--steps")) rc = parse_int(a, val, 1, MAX_STEPS, &o->steps, err);
        else if (!strcmp(a, "--warmup")) rc = parse_int(a, val, 0, 100, &o->warmup, err);
        else if (!strcmp(a, "--threads")) rc = parse_int(a, val, 1, 1024, &o->threads, err);
        else if (!strcmp(a, "--overlap")) rc = parse_int(a, val, -1, 1, &o->overlap, err);
        else if (!strcmp(a, "--lora-rank")) rc = parse_int(a, val, 0, 4096, &o->lora_rank, err);
        else if (!strcmp(a, "--lora-targets")) {
            unsigned t;
            rc = val ? lora_parse_targets(val, &t, err) : err_set(err, "--lora-targets: expected a list");
            o->lora_targets = val;
        }
        else if (!strcmp(a, "--seed")) {
            int s;
            rc = parse_int(a, val, 0, 1 << 30, &s, err);
            o->seed = (uint64_t)s;
        } else if (!strcmp(a, "--accumulate")) {
            if (val && !strcmp(val, "fp32")) o->accumulate = 1;
            else if (val && !strcmp(val, "fp16")) o->accumulate = 0;
            else rc = err_set(err, "--accumulate: expected fp32 or fp16, found '%s'", val ? val : "(nothing)");
        } else {
            takes = 0;
            if (!strcmp(a, "--no-cpu")) o->cpu = 0;
            else if (!strcmp(a, "--int8")) o->int8 = 1;
            else rc = err_set(err, "unknown option '%s' (see --help)", a);
        }
        if (rc) return -1;
        if (takes) i++;
    }
    if (o->int8 && !o->lora_rank)
        return err_set(err, "--int8: an int8 base is frozen, so it needs --lora-rank R (int8 weights do not train)");
    if (!o->n_models) {
        o->models[o->n_models++] = "stories15m";
        o->models[o->n_models++] = "stories110m";
    }
    return 0;
}


static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double s[MAX_STEPS];
    memcpy(s, v, sizeof(double) * n);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* ------------------------------------------------------------------ one model */

typedef struct {
    double step_ms[MAX_STEPS], backend_ms[MAX_STEPS], optim_ms[MAX_STEPS];
    double loss;
} Timing;

/* A LoRA run's state (Lora.lo.cfg.rank 0: full training): the backend runs over a frozen base
** and takes the adapter, as the trainer runs it on either backend. */
typedef struct {
    LoraLayout lo;
    ParamLayout optim;
    float *adapter, *ga, *am, *av;
} Lora;

/* Runs warmup + steps whole steps; before/after: stats snapshots around the timed steps. */
static int time_steps(Backend *be, const Options *o, const ParamLayout *lay, float *params, float *grads, float *m,
                      float *v, const int32_t *in, const int32_t *tg, Lora *lr, Timing *tm, BackendStats *before,
                      BackendStats *after, Err *err) {
    AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
    size_t n = lay->n_floats, na = lr->lo.n_floats;
    int lora = lr->lo.cfg.rank > 0;
    for (int s = 0; s < o->warmup + o->steps; s++) {
        if (s == o->warmup && be->stats) be->stats(be, before);
        double t0 = now_seconds();
        if (lora) memset(lr->ga, 0, na * sizeof(float));
        else memset(grads, 0, n * sizeof(float));
        double t1 = now_seconds(), loss;
        StepArgs a = {params, lora ? NULL : grads, lora ? lr->adapter : NULL, lora ? lr->ga : NULL,
                      in, tg, o->B, o->T, 1.0f, NULL, 0};
        if (be->step(be, &a, &loss, err)) return -1;
        double t2 = now_seconds();
        if (lora) {
            float coef = grad_clip_coef(grad_global_norm(lr->ga, na), 1.0f);
            adamw_step(&lr->optim, &ac, lr->adapter, lr->ga, lr->am, lr->av, 1e-4f, s + 1, coef);
        } else {
            float coef = grad_clip_coef(grad_global_norm(grads, n), 1.0f);
            adamw_step(lay, &ac, params, grads, m, v, 1e-5f, s + 1, coef);
        }
        double t3 = now_seconds();
        if (s >= o->warmup) {
            int k = s - o->warmup;
            tm->step_ms[k] = 1e3 * (t3 - t0);
            tm->backend_ms[k] = 1e3 * (t2 - t1);
            tm->optim_ms[k] = 1e3 * ((t1 - t0) + (t3 - t2));
        }
        tm->loss = loss;
        if (!isfinite(loss)) return err_set(err, "%s backend: the loss is not finite (%g)", be->name, loss);
    }
    if (be->stats) be->stats(be, after);
    return 0;
}

/* Activation rows (of S fp16 values) per layer and sequence crossing the boundary in the seed's
** ten kernels (docs/ane-facts.md §4.2; GQA K/V tiled to Q width in sdpaBwd1, as the seed does). */
static double seed_rows(const ModelConfig *c) {
    double D = c->dim, F = c->hidden_dim, Q = (double)c->n_heads * c->head_dim, K = (double)c->n_kv_heads * c->head_dim;
    double in = D + Q + 2 * D + D + 2 * F + D + 4 * Q + 2 * K + 2 * Q + Q; /* + 2 SC, below */
    double out = (2 * Q + 2 * K + D) + D + (D + 3 * F) + F + D + Q + Q + 2 * Q + D + D; /* + 2 SC */
    return in + out;
}

static int bench_model(const Options *o, const char *model, Err *err) {
    ModelConfig cfg;
    if (config_from_preset(&cfg, model, err)) return -1;
    if (o->T > cfg.max_seq_len) return err_set(err, "--seq %d exceeds %s's max_seq_len %d", o->T, model, cfg.max_seq_len);
    ParamLayout lay;
    params_layout(&lay, &cfg);
    size_t n = lay.n_floats, bt = (size_t)o->B * o->T;
    float *p0 = malloc(n * sizeof(float)), *p = malloc(n * sizeof(float)), *g = calloc(n, sizeof(float)),
          *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
    int32_t *in = malloc(bt * sizeof(int32_t)), *tg = malloc(bt * sizeof(int32_t));
    if (!p0 || !p || !g || !m || !v || !in || !tg) return err_set(err, "out of memory for %s", model);
    Rng rng;
    rng_seed(&rng, o->seed);
    params_init(&lay, p0, &rng);
    Int8Weights q8;
    memset(&q8, 0, sizeof q8);
    if (o->int8) { /* the base is its int8 version from here on: p0 holds the dequantized weights */
        if (quant_int8_create(&q8, &lay, p0, err)) return -1;
        quant_int8_dequantize_into(&q8, &lay, p0);
    }
    for (size_t i = 0; i < bt; i++) in[i] = (int32_t)rng_below(&rng, (uint64_t)cfg.vocab_size);
    for (size_t i = 0; i < bt; i++) tg[i] = (int32_t)rng_below(&rng, (uint64_t)cfg.vocab_size);
    Timing tc, ta;
    memset(&tc, 0, sizeof tc);
    memset(&ta, 0, sizeof ta);
    BackendStats b0, b1, dummy;
    int rc = 0;
    Lora lr;
    memset(&lr, 0, sizeof lr);
    if (o->lora_rank) {
        LoraConfig lc = {o->lora_rank, 2.0f * o->lora_rank, 0.0f, 0, 0};
        if (lora_parse_targets(o->lora_targets, &lc.targets, err) || lora_layout(&lr.lo, &cfg, &lc, "--lora-rank", err))
            return -1;
        size_t na = lr.lo.n_floats;
        lr.adapter = malloc(na * sizeof(float)), lr.ga = calloc(na, sizeof(float));
        lr.am = calloc(na, sizeof(float)), lr.av = calloc(na, sizeof(float));
        if (!lr.adapter || !lr.ga || !lr.am || !lr.av) return err_set(err, "out of memory for LoRA");
        lora_optim_layout(&lr.lo, &lr.optim);
    }
    FrozenBase fb = {&lr.lo, o->int8 ? &q8 : NULL};
    if (o->cpu) {
        memcpy(p, p0, n * sizeof(float));
        if (o->lora_rank) { /* PEFT's init (B = 0) */
            Rng ar;
            rng_seed(&ar, o->seed + 1);
            lora_init(&lr.lo, lr.adapter, &ar);
        }
        Backend *cpu = backend_cpu_create_frozen(&lay, o->lora_rank ? &fb : NULL, o->B, o->T, err);
        if (!cpu) return -1;
        rc = time_steps(cpu, o, &lay, p, g, m, v, in, tg, &lr, &tc, &dummy, &dummy, err);
        cpu->destroy(cpu);
        if (rc) return -1;
    }
    if (o->lora_rank) { /* the same fresh adapter and moments for the ANE run */
        Rng ar;
        rng_seed(&ar, o->seed + 1);
        lora_init(&lr.lo, lr.adapter, &ar);
        memset(lr.am, 0, lr.lo.n_floats * sizeof(float));
        memset(lr.av, 0, lr.lo.n_floats * sizeof(float));
    }
    memcpy(p, p0, n * sizeof(float));
    memset(m, 0, n * sizeof(float));
    memset(v, 0, n * sizeof(float));
    AneBackendOptions ao;
    backend_ane_default_options(&ao);
    ao.device = "emu";
    ao.overlap_dw = o->overlap;
    ao.accumulate_fp32 = o->accumulate;
    double tc0 = now_seconds();
    Backend *ane = backend_ane_create_frozen(&lay, o->lora_rank ? &fb : NULL, o->B, o->T, &ao, err);
    double create_s = now_seconds() - tc0;
    if (!ane) return -1;
    rc = time_steps(ane, o, &lay, p, g, m, v, in, tg, &lr, &ta, &b0, &b1, err);
    BackendStats total;
    ane->stats(ane, &total);
    ane->destroy(ane);
    if (rc) return -1;

    double cpu_ms = o->cpu ? median(tc.step_ms, o->steps) : NAN, ane_ms = median(ta.step_ms, o->steps);
    double ratio = ane_ms / cpu_ms;
    printf("%-12s %4dx%-5d %10.1f %10.1f %8.2fx  %s\n", model, o->B, o->T, cpu_ms, ane_ms, ratio,
           !o->cpu ? "" : ratio <= 4.0 ? "(target <= 4x: met)" : "(target <= 4x: MISSED)");
    if (o->lora_rank)
        printf("    LoRA        rank %d on %s: %zu adapter parameters (%.2f%% of %zu), over a frozen base\n",
               o->lora_rank, o->lora_targets, lr.lo.n_floats, 100.0 * lr.lo.n_floats / n, n);
    if (o->int8)
        printf("    int8 base   layer matrices %.1f MB as int8 + scales (%.1f MB in fp32); ANE stages them once as "
               "int8 values and row scales\n",
               quant_int8_bytes(&q8) / 1e6, quant_int8_fp32_bytes(&lay) / 1e6);

    /* ---- efficiency report: per step, averaged over the timed steps ---- */
    double k = o->steps, L = cfg.n_layers, B = o->B, S = (o->T + 31) / 32 * 32;
    double ev = (double)(b1.evaluations - b0.evaluations) / k;
    double staged = (double)(b1.bytes_staged - b0.bytes_staged) / k / 1e6;
    double staged_w = (double)(b1.bytes_staged_weights - b0.bytes_staged_weights) / k / 1e6;
    double readb = (double)(b1.bytes_read - b0.bytes_read) / k / 1e6;
    double din = (double)(b1.device_bytes_in - b0.device_bytes_in) / k / 1e6;
    double dout = (double)(b1.device_bytes_out - b0.device_bytes_out) / k / 1e6;
    double fd = (b1.flops_device - b0.flops_device) / k / 1e9, fc = (b1.flops_cpu - b0.flops_cpu) / k / 1e9;
    double t_dev = 1e3 * (b1.t_device - b0.t_device) / k, t_st = 1e3 * (b1.t_stage - b0.t_stage) / k;
    double t_cpu = 1e3 * (b1.t_cpu_ops - b0.t_cpu_ops) / k, t_dw = 1e3 * (b1.t_dw - b0.t_dw) / k;
    double t_wait = 1e3 * (b1.t_dw_wait - b0.t_dw_wait) / k, t_opt = median(ta.optim_ms, o->steps);
    double heads = (double)cfg.n_heads * S;
    double seed_act = L * B * (seed_rows(&cfg) + 4 * heads) * S * 2 / 1e6;
    double weights = 0;
    for (int t = T_RMS_ATT; t <= T_W3; t++)
        if (t != T_RMS_ATT && t != T_RMS_FFN) weights += (double)lay.t[t].numel;
    double seed_w = 2 * weights * 2 / 1e6;
    double ours_act = staged - staged_w + readb;
    printf("    device      %.0f evaluations/step (%.0f per layer and sequence; seed: %.0f)\n", ev, ev / (L * B),
           10 * L * B);
    printf("    boundary    staged %.1f MB/step (weights %.1f, activations %.1f), read back %.1f MB/step\n", staged,
           staged_w, staged - staged_w, readb);
    printf("                activations across: %.1f MB/step, seed %.1f MB (%.2fx); weights staged %.1f MB, seed "
           "%.1f MB\n",
           ours_act, seed_act, seed_act / ours_act, staged_w, seed_w);
    printf("                device surfaces read %.1f MB/step, written %.1f MB/step (whole surfaces per evaluation)\n",
           din, dout);
    printf("    FLOPs       device %.1f GFLOP, CPU %.1f GFLOP per step: CPU share %.0f%% (dW, classifier)\n", fd, fc,
           100 * fc / (fd + fc));
    printf("    compiles    %llu (%.1f ms, once; backend created in %.0f ms)\n", (unsigned long long)total.compiles,
           1e3 * total.compile_seconds, 1e3 * create_s);
    printf("    time/step   device %.0f ms, staging %.0f ms, CPU ops %.0f ms, dW %.0f ms (%s; waited %.0f ms), "
           "optimizer %.0f ms\n",
           t_dev, t_st, t_cpu, t_dw, o->overlap ? "worker thread" : "inline", t_wait, t_opt);
    AneStepWork work = {ev, fd * 1e9, (din + dout + staged + readb) * 1e6};
    char estimate[1024];
    ane_cost_format(&work, "                ", estimate, sizeof estimate);
    printf("    estimate\n%s", estimate);
    printf("    loss        cpu %.4f, ane %.4f (after the timed steps)\n", tc.loss, ta.loss);
    if (o->warmup)
        printf("    warmup      weights staged %.1f MB in the %d untimed step(s) (a frozen base: staged at the first)\n",
               (double)total.bytes_staged_weights / 1e6 - staged_w * k, o->warmup);
    fflush(stdout);
    free(p0), free(p), free(g), free(m), free(v), free(in), free(tg);
    free(lr.adapter), free(lr.ga), free(lr.am), free(lr.av);
    quant_int8_free(&q8);
    return 0;
}

int main(int argc, char **argv) {
    Options o;
    Err err = {{0}};
    if (parse_options(&o, argc, argv, &err)) {
        fprintf(stderr, "bench_ane: %s\n", err.msg);
        return 2;
    }
    if (o.overlap < 0) o.overlap = 0; /* what auto means on the emulator (backend_ane_create) */
    parallel_init(o.threads);
    blas_set_threads(o.threads);
    printf("bench_ane: %s, %d threads; emulated ANE (accumulate %s), dW %s; %d timed steps (median)\n", blas_name(),
           o.threads, o.accumulate ? "fp32" : "fp16", o.overlap ? "overlapped in a worker" : "inline", o.steps);
    printf("%-12s %10s %10s %10s %9s\n", "model", "BxT", "cpu ms", "ane ms", "ane/cpu");
    int rc = 0;
    for (int i = 0; i < o.n_models; i++) {
        if (bench_model(&o, o.models[i], &err)) {
            fprintf(stderr, "bench_ane: %s: %s\n", o.models[i], err.msg);
            rc = 1;
        }
    }
    parallel_shutdown();
    return rc;
}
