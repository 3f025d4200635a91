/*
** bench_train.c — training-step throughput of the CPU backend, measured against the
** machine's own sgemm peak.
**
** One full training step is what a trainer does per micro-batch: zero the gradients, run
** the backend (forward, loss, backward), clip the global norm to 1.0, AdamW. The bench
** measures the peak of a large square cblas_sgemm first, with the same thread count, so
** "percent of peak" means "of what this BLAS on this machine can do at best", and then
** prints one table row per model. bench/run.sh puts bench/torch_step.py's rows (same
** columns) next to ours.
**
** With --lora R the step is a LoRA fine-tuning step as the trainer runs it on the CPU backend
** (the frozen-base backend: the adapter beside the frozen weights, gradients of the adapter
** only; zero, clip and AdamW over the adapter), optionally over an int8 base (--int8: the
** seven layer matrices quantized, their fp32 pages released). --rss adds the process's peak
** resident memory (getrusage ru_maxrss) to the row: run one configuration per process for it
** to mean that configuration (bench/run.sh does).
**
** Everything is allocated before the first timed step; the timed loop only calls the
** step. This is a benchmark, not a test: it checks only that the loss stays finite.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "backend/backend.h"
#include "model/config.h"
#include "model/params.h"
#include "model/quant.h"
#include "model/lora.h"
#include "train/lora_grad.h"
#include "train/optim.h"
#include "util/blas.h"
#include "util/err.h"
#include "util/memory.h"
#include "util/parallel.h"
#include "util/rng.h"

/* ------------------------------------------------------------------ options */

enum { MAX_MODELS = 16 };

typedef struct {
    const char *models[MAX_MODELS];
    int n_models;
    int B, T;
    int steps, warmup;
    int threads;
    int peak_only;
    int peak_size, peak_reps;
    double peak_gflops; /* > 0: given by the caller (bench/run.sh), not measured */
    int header;
    int detail;
    const char *perf_ctl; /* perf's --control FIFO: profiling covers only the timed steps */
    uint64_t seed;
    int lora_rank;            /* > 0: LoRA fine-tuning steps with this rank */
    const char *lora_targets; /* default q,k,v,o */
    float lora_dropout;
    int int8;                 /* LoRA over an int8 base */
    int rss;                  /* print the peak RSS */
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_train [options]\n"
            "\n"
            "Times full training steps of the CPU backend (zero grads, forward + loss + backward,\n"
            "clip the global gradient norm to 1.0, AdamW) on random weights and random tokens,\n"
            "and compares the achieved GFLOP/s with the machine's sgemm peak, measured first\n"
            "with a large square cblas_sgemm on the same number of threads.\n"
            "\n"
            "  --model NAME[,NAME...]  preset(s) to run; repeatable (default: stories15m,stories110m)\n"
            "                          known: %s\n"
            "  --batch B               sequences per step (default 1)\n"
            "  --seq T                 tokens per sequence (default 256)\n"
            "  --steps N               timed steps per model; the table shows the median (default 5)\n"
            "  --warmup N              untimed steps before them (default 2)\n"
            "  --threads N             threads for BLAS and the backend's pool (default: all %d cores)\n"
            "  --peak                  only measure and print the sgemm peak\n"
            "  --peak-size N           side of the square sgemm for the peak (default 4096)\n"
            "  --peak-reps N           timed sgemm calls; the best counts (default 3)\n"
            "  --peak-gflops G         use G as the peak instead of measuring it (bench/run.sh\n"
            "                          measures once and passes it to every model)\n"
            "  --detail                also print zero / clip / adamw separately and the loss\n"
            "  --no-header             print only the table rows (for bench/run.sh)\n"
            "  --seed S                RNG seed for weights and tokens (default 1)\n"
            "  --lora R                LoRA fine-tuning steps of rank R (alpha 2R) instead of full\n"
            "                          training: the frozen-base backend, adapter-only optimizer\n"
            "  --lora-targets LIST     adapted matrices (default q,k,v,o; see finetune --help)\n"
            "  --lora-dropout P        LoRA dropout (default 0)\n"
            "  --int8                  with --lora: the base's layer matrices as int8\n"
            "  --rss                   append the process's peak RSS (ru_maxrss) and its RSS after\n"
            "                          the steps (/proc/self/statm), MiB, to each row\n"
            "  --perf-ctl FIFO         write 'enable' / 'disable' to FIFO around the timed steps, so\n"
            "                          that perf record -D -1 --control fifo:FIFO profiles only them\n"
            "  -h, --help              this text\n"
            "\n"
            "Columns: ms/step is the median wall time of one whole step; best is the fastest step;\n"
            "tok/s = B*T / median; GFLOP/s = config_train_flops_per_seq * B / median (matmuls at\n"
            "6 FLOPs per weight per token plus full-square attention); %%peak = GFLOP/s / sgemm peak;\n"
            "fwd+bwd is the backend step alone; optim is zeroing + clipping + AdamW (medians).\n",
            config_preset_names(), parallel_cpu_count());
}

/* Parses a positive int option value; returns -1 with a message naming the option. */
static int parse_int(const char *opt, const char *s, int min, int *out, Err *err) {
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || *s == '\0' || *end != '\0' || v < min || v > 1000000)
        return err_set(err, "%s: expected an integer >= %d, found '%s'", opt, min, s ? s : "(nothing)");
    *out = (int)v;
    return 0;
}

/* Splits a comma-separated list of preset names into opt->models (names point into arg). */
static int add_models(Options *opt, char *arg, Err *err) {
    for (char *name = strtok(arg, ","); name; name = strtok(NULL, ",")) {
        if (opt->n_models == MAX_MODELS) return err_set(err, "--model: at most %d models", MAX_MODELS);
        ModelConfig probe;
        if (config_from_preset(&probe, name, err) != 0) return -1;
        opt->models[opt->n_models++] = name;
    }
    return 0;
}

static int parse_options(Options *opt, int argc, char **argv, Err *err) {
    memset(opt, 0, sizeof *opt);
    opt->B = 1;
    opt->T = 256;
    opt->steps = 5;
    opt->warmup = 2;
    opt->threads = parallel_cpu_count();
    opt->peak_size = 4096;
    opt->peak_reps = 3;
    opt->header = 1;
    opt->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0, takes_value = 1;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--model") == 0) {
            rc = val ? add_models(opt, argv[i + 1], err) : err_set(err, "--model: expected a preset name");
        } else if (strcmp(a, "--batch") == 0) {
            rc = parse_int(a, val, 1, &opt->B, err);
        } else if (strcmp(a, "--seq") == 0) {
            rc = parse_int(a, val, 1, &opt->T, err);
        } else if (strcmp(a, "--steps") == 0) {
            rc = parse_int(a, val, 1, &opt->steps, err);
        } else if (strcmp(a, "--warmup") == 0) {
            rc = parse_int(a, val, 0, &opt->warmup, err);
        } else if (strcmp(a, "--threads") == 0) {
            rc = parse_int(a, val, 1, &opt->threads, err);
        } else if (strcmp(a, "--peak-size") == 0) {
            rc = parse_int(a, val, 64, &opt->peak_size, err);
        } else if (strcmp(a, "--peak-reps") == 0) {
            rc = parse_int(a, val, 1, &opt->peak_reps, err);
        } else if (strcmp(a, "--seed") == 0) {
            int s = 0;
            rc = parse_int(a, val, 0, &s, err);
            opt->seed = (uint64_t)s;
        } else if (strcmp(a, "--lora") == 0) {
            rc = parse_int(a, val, 1, &opt->lora_rank, err);
        } else if (strcmp(a, "--lora-targets") == 0) {
            opt->lora_targets = val;
            if (!val) rc = err_set(err, "--lora-targets: expected a list");
        } else if (strcmp(a, "--lora-dropout") == 0) {
            char *end;
            double p = val ? strtod(val, &end) : -1;
            if (!val || *end != '\0' || !(p >= 0 && p < 1))
                rc = err_set(err, "--lora-dropout: expected a value in [0, 1), found '%s'", val ? val : "(nothing)");
            opt->lora_dropout = (float)p;
        } else if (strcmp(a, "--perf-ctl") == 0) {
            opt->perf_ctl = val;
            if (!val) rc = err_set(err, "--perf-ctl: expected the path of perf's control FIFO");
        } else if (strcmp(a, "--peak-gflops") == 0) {
            char *end;
            opt->peak_gflops = val ? strtod(val, &end) : 0;
            if (!val || *end != '\0' || !(opt->peak_gflops > 0))
                rc = err_set(err, "--peak-gflops: expected a positive number, found '%s'", val ? val : "(nothing)");
        } else {
            takes_value = 0;
            if (strcmp(a, "--peak") == 0) opt->peak_only = 1;
            else if (strcmp(a, "--detail") == 0) opt->detail = 1;
            else if (strcmp(a, "--no-header") == 0) opt->header = 0;
            else if (strcmp(a, "--int8") == 0) opt->int8 = 1;
            else if (strcmp(a, "--rss") == 0) opt->rss = 1;
            else rc = err_set(err, "unknown option '%s' (see --help)", a);
        }
        if (rc != 0) return -1;
        if (takes_value) i++;
    }
    if (opt->int8 && !opt->lora_rank) return err_set(err, "--int8: int8 weights cannot train: needs --lora R");
    if (opt->n_models == 0) {
        opt->models[opt->n_models++] = "stories15m";
        opt->models[opt->n_models++] = "stories110m";
    }
    return 0;
}

/* ------------------------------------------------------------------ clock and statistics */


static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n values; sorts them in place. */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Sends a command ("enable" or "disable") to perf's control FIFO, if one was given. */
static void perf_control(const Options *opt, const char *cmd) {
    if (!opt->perf_ctl) return;
    FILE *f = fopen(opt->perf_ctl, "w");
    if (!f) {
        fprintf(stderr, "bench_train: --perf-ctl %s: cannot open for writing; profiling everything\n", opt->perf_ctl);
        return;
    }
    fprintf(f, "%s\n", cmd);
    fclose(f);
}

/* ------------------------------------------------------------------ sgemm peak */

/* Best GFLOP/s of `reps` calls C = A B on N x N matrices, after one untimed call. */
static int sgemm_peak(int N, int reps, double *gflops, Err *err) {
    size_t n2 = (size_t)N * N;
    float *a = err_malloc(3 * n2 * sizeof(float), "sgemm peak matrices", err);
    if (!a) return -1;
    float *b = a + n2, *c = b + n2;
    Rng rng;
    rng_seed(&rng, 7);
    for (size_t i = 0; i < 2 * n2; i++) a[i] = rng_uniform(&rng) - 0.5f;
    memset(c, 0, n2 * sizeof(float));
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        double dt = now_seconds() - t0;
        if (r > 0 && dt < best) best = dt; /* call 0 warms caches and the BLAS threads */
    }
    free(a);
    *gflops = 2.0 * N * (double)N * N / best / 1e9;
    return 0;
}

/* ------------------------------------------------------------------ one model */

typedef struct {
    double step, best, backend, zero, clip, adamw; /* seconds, medians (best: the fastest step) */
    double loss_first, loss_last;
} Result;

/* The training state of one model: parameters, gradients, AdamW moments, the backend. Full
** training: params, grads, m, v are views into one allocation, each layout.n_floats long. LoRA:
** params alone (the frozen base); adapter, adapter gradients and moments in `lora_state`. */
typedef struct {
    ModelConfig cfg;
    ParamLayout layout;
    float *params, *grads, *m, *v;
    int32_t *inputs, *targets;     /* [B][T] */
    Backend *backend;
    double *times;                 /* [5][steps]: zero, backend, clip, adamw, whole step */
    LoraLayout lora;
    ParamLayout lora_optim;
    float *lora_state, *adapter, *adapter_grads; /* adapter, grads, m, v: each lora.n_floats */
    Int8Weights int8;
    int has_int8;
} Bench;

static void bench_free(Bench *bn) {
    if (bn->backend) bn->backend->destroy(bn->backend);
    free(bn->params);
    free(bn->lora_state);
    if (bn->has_int8) quant_int8_free(&bn->int8);
    free(bn->inputs);
    free(bn->times);
    memset(bn, 0, sizeof *bn);
}

/* LoRA: the frozen base (int8 on request, its fp32 pages then released), a PEFT-initialized
** adapter with B made non-zero (a trained adapter's work), the frozen-base backend. */
static int bench_setup_lora(Bench *bn, const Options *opt, Err *err) {
    size_t n = bn->layout.n_floats, bt = (size_t)opt->B * opt->T;
    LoraConfig lc = {opt->lora_rank, 2.0f * (float)opt->lora_rank, opt->lora_dropout, 0, 0};
    if (lora_parse_targets(opt->lora_targets ? opt->lora_targets : "q,k,v,o", &lc.targets, err) != 0 ||
        lora_layout(&bn->lora, &bn->cfg, &lc, "--lora", err) != 0)
        return -1;
    size_t na = bn->lora.n_floats;
    bn->params = err_malloc(n * sizeof(float), "parameters", err);
    bn->lora_state = err_malloc(4 * na * sizeof(float), "adapter, its gradients and AdamW moments", err);
    bn->inputs = err_malloc(2 * bt * sizeof(int32_t), "tokens", err);
    bn->times = err_malloc(5 * (size_t)opt->steps * sizeof(double), "step times", err);
    if (!bn->params || !bn->lora_state || !bn->inputs || !bn->times) return -1;
    bn->adapter = bn->lora_state;
    bn->adapter_grads = bn->adapter + na;
    bn->m = bn->adapter_grads + na;
    bn->v = bn->m + na;
    bn->targets = bn->inputs + bt;
    Rng rng;
    rng_seed(&rng, opt->seed);
    params_init(&bn->layout, bn->params, &rng);
    lora_init(&bn->lora, bn->adapter, &rng);
    for (size_t i = 0; i < na; i++) /* B = 0 at init; a little everywhere so dA is real work */
        if (bn->adapter[i] == 0) bn->adapter[i] = 1e-3f * (rng_uniform(&rng) - 0.5f);
    memset(bn->adapter_grads, 0, 3 * na * sizeof(float));
    lora_optim_layout(&bn->lora, &bn->lora_optim);
    for (size_t i = 0; i < 2 * bt; i++) bn->inputs[i] = (int32_t)rng_below(&rng, (uint64_t)bn->cfg.vocab_size);
    if (opt->int8) {
        if (quant_int8_create(&bn->int8, &bn->layout, bn->params, err) != 0) return -1;
        bn->has_int8 = 1;
        for (int k = 0; k < T_COUNT; k++)
            if (quant_kind_is_int8((TensorKind)k))
                mem_release_pages(bn->params + bn->layout.t[k].offset, bn->layout.t[k].numel * sizeof(float));
    }
    FrozenBase fb = {&bn->lora, bn->has_int8 ? &bn->int8 : NULL};
    bn->backend = backend_cpu_create_frozen(&bn->layout, &fb, opt->B, opt->T, err);
    return bn->backend ? 0 : -1;
}

static int bench_setup(Bench *bn, const char *model, const Options *opt, Err *err) {
    memset(bn, 0, sizeof *bn);
    if (config_from_preset(&bn->cfg, model, err) != 0) return -1;
    char source[64];
    snprintf(source, sizeof source, "preset %s", model);
    if (config_validate(&bn->cfg, source, err) != 0) return -1;
    params_layout(&bn->layout, &bn->cfg);
    size_t n = bn->layout.n_floats, bt = (size_t)opt->B * opt->T;
    if (opt->lora_rank) return bench_setup_lora(bn, opt, err);
    bn->params = err_malloc(4 * n * sizeof(float), "parameters, gradients and AdamW moments", err);
    bn->inputs = err_malloc(2 * bt * sizeof(int32_t), "tokens", err);
    bn->times = err_malloc(5 * (size_t)opt->steps * sizeof(double), "step times", err);
    if (!bn->params || !bn->inputs || !bn->times) {
        bench_free(bn);
        return -1;
    }
    bn->grads = bn->params + n;
    bn->m = bn->grads + n;
    bn->v = bn->m + n;
    bn->targets = bn->inputs + bt;
    Rng rng;
    rng_seed(&rng, opt->seed);
    params_init(&bn->layout, bn->params, &rng);
    memset(bn->m, 0, 2 * n * sizeof(float)); /* m and v; also touches every page before timing */
    memset(bn->grads, 0, n * sizeof(float));
    for (size_t i = 0; i < 2 * bt; i++) bn->inputs[i] = (int32_t)rng_below(&rng, (uint64_t)bn->cfg.vocab_size);
    bn->backend = backend_cpu_create(&bn->layout, opt->B, opt->T, err);
    if (!bn->backend) {
        err_wrap(err, "%s", model);
        bench_free(bn);
        return -1;
    }
    return 0;
}

/* One training step (AdamW's 1-based step number `step`); t receives the phase times in
** seconds: zero grads, backend, clip, adamw. */
static int bench_step(Bench *bn, const Options *opt, long step, double *loss, double t[4], Err *err) {
    static const AdamWConfig adamw = {0.9f, 0.95f, 1e-8f, 0.1f}; /* llama2.c's train.py */
    int lora = bn->adapter != NULL;
    size_t n = lora ? bn->lora.n_floats : bn->layout.n_floats;
    float *g = lora ? bn->adapter_grads : bn->grads;
    double t0 = now_seconds();
    memset(g, 0, n * sizeof(float));
    double t1 = now_seconds();
    StepArgs args = {bn->params, lora ? NULL : bn->grads, bn->adapter, lora ? bn->adapter_grads : NULL,
                     bn->inputs, bn->targets, opt->B, opt->T, 1.0f, NULL, (uint64_t)step};
    if (bn->backend->step(bn->backend, &args, loss, err) != 0) return -1;
    double t2 = now_seconds();
    float coef = grad_clip_coef(grad_global_norm(g, n), 1.0f);
    double t3 = now_seconds();
    if (lora) adamw_step(&bn->lora_optim, &adamw, bn->adapter, g, bn->m, bn->v, 5e-4f, step, coef);
    else adamw_step(&bn->layout, &adamw, bn->params, bn->grads, bn->m, bn->v, 5e-4f, step, coef);
    double t4 = now_seconds();
    t[0] = t1 - t0;
    t[1] = t2 - t1;
    t[2] = t3 - t2;
    t[3] = t4 - t3;
    if (!isfinite(*loss)) return err_set(err, "step %ld: loss is %g (expected a finite number)", step, *loss);
    return 0;
}

static int bench_run(Bench *bn, const Options *opt, Result *r, Err *err) {
    int S = opt->steps;
    /* Per timed step: [0] zero, [1] backend, [2] clip, [3] adamw, [4] whole step. */
    double *tp[5], t[4], loss = 0;
    for (int k = 0; k < 5; k++) tp[k] = bn->times + (size_t)k * S;
    long step = 1;
    for (int i = 0; i < opt->warmup + S; i++, step++) {
        int timed = i >= opt->warmup;
        if (i == opt->warmup) perf_control(opt, "enable");
        if (bench_step(bn, opt, step, &loss, t, err) != 0) return -1;
        if (i == 0) r->loss_first = loss;
        if (!timed) continue;
        int j = i - opt->warmup;
        for (int k = 0; k < 4; k++) tp[k][j] = t[k];
        tp[4][j] = t[0] + t[1] + t[2] + t[3];
    }
    perf_control(opt, "disable");
    r->loss_last = loss;
    r->zero = median(tp[0], S);
    r->backend = median(tp[1], S);
    r->clip = median(tp[2], S);
    r->adamw = median(tp[3], S);
    r->step = median(tp[4], S);
    r->best = tp[4][0]; /* sorted by median() */
    return 0;
}

/* ------------------------------------------------------------------ output */

static void print_header(void) {
    printf("%-8s %-12s %-7s %5s %9s %9s %8s %8s %6s %10s %8s\n", "impl", "model", "BxT", "steps", "ms/step", "best ms",
           "tok/s", "GFLOP/s", "%peak", "fwd+bwd ms", "optim ms");
}

/* Resident memory now, MiB (Linux /proc/self/statm; -1 elsewhere): after setup and the steps,
** the steady state, where ru_maxrss also counts what loading touched and released (the fp32
** pages of int8 matrices). */
static double current_rss_mib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages_total = 0, pages_resident = -1;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = -1;
        fclose(f);
    }
    long page = sysconf(_SC_PAGESIZE);
    return pages_resident < 0 || page <= 0 ? -1.0 : (double)pages_resident * (double)page / 1048576.0;
}

static void print_row(const char *model, const Options *opt, const ModelConfig *cfg, const Result *r, double peak) {
    char bt[32];
    snprintf(bt, sizeof bt, "%dx%d", opt->B, opt->T);
    double gflops = config_train_flops_per_seq(cfg, opt->T) * opt->B / r->step / 1e9;
    char impl[32];
    if (opt->lora_rank) snprintf(impl, sizeof impl, "lora-r%d%s", opt->lora_rank, opt->int8 ? "-int8" : "");
    else snprintf(impl, sizeof impl, "anetrain");
    if (opt->lora_rank) /* the full-training FLOP count does not apply: no GFLOP/s, no %peak */
        printf("%-8s %-12s %-7s %5d %9.1f %9.1f %8.0f %8s %6s %10.1f %8.1f", impl, model, bt, opt->steps, 1e3 * r->step,
               1e3 * r->best, opt->B * opt->T / r->step, "-", "-", 1e3 * r->backend,
               1e3 * (r->zero + r->clip + r->adamw));
    else
        printf("%-8s %-12s %-7s %5d %9.1f %9.1f %8.0f %8.1f %5.1f%% %10.1f %8.1f", impl, model, bt, opt->steps,
               1e3 * r->step, 1e3 * r->best, opt->B * opt->T / r->step, gflops, 100 * gflops / peak, 1e3 * r->backend,
               1e3 * (r->zero + r->clip + r->adamw));
    if (opt->rss) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf(" %9.1f %9.1f", (double)ru.ru_maxrss / 1024.0, current_rss_mib()); /* ru_maxrss: KiB on Linux */
    }
    printf("\n");
    if (opt->detail)
        printf("         %-12s zero %.1f ms, clip %.1f ms, adamw %.1f ms; %.2f GFLOP/step; loss %.4f -> %.4f\n", "",
               1e3 * r->zero, 1e3 * r->clip, 1e3 * r->adamw, config_train_flops_per_seq(cfg, opt->T) * opt->B / 1e9,
               r->loss_first, r->loss_last);
    fflush(stdout);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    Options opt;
    Err err = {{0}};
    if (parse_options(&opt, argc, argv, &err) != 0) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 2;
    }
    if (parallel_init(opt.threads) != 0) {
        fprintf(stderr, "bench_train: --threads %d: could not start the thread pool\n", opt.threads);
        return 1;
    }
    blas_set_threads(opt.threads);

    double peak = opt.peak_gflops;
    if (peak <= 0) {
        if (sgemm_peak(opt.peak_size, opt.peak_reps, &peak, &err) != 0) {
            fprintf(stderr, "bench_train: %s\n", err.msg);
            return 1;
        }
    }
    if (opt.peak_only || opt.header)
        printf("sgemm peak %7.1f GFLOP/s  (%s, %dx%dx%d, %d threads, best of %d)\n", peak, blas_name(),
               opt.peak_size, opt.peak_size, opt.peak_size, opt.threads, opt.peak_reps);
    if (opt.peak_only) return 0;
    if (opt.header) print_header();

    for (int i = 0; i < opt.n_models; i++) {
        Bench bn;
        Result r;
        memset(&r, 0, sizeof r);
        if (bench_setup(&bn, opt.models[i], &opt, &err) != 0 || bench_run(&bn, &opt, &r, &err) != 0) {
            fprintf(stderr, "bench_train: %s: %s\n", opt.models[i], err.msg);
            bench_free(&bn);
            return 1;
        }
        print_row(opt.models[i], &opt, &bn.cfg, &r, peak);
        bench_free(&bn);
    }
    parallel_shutdown();
    return 0;
}
