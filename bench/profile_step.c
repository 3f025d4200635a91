/*
** profile_step.c — where the wall time of one CPU training step goes.
**
** The backend step is one opaque call, and sampling profilers only see CPU time (not the
** time a core sits idle or spins in BLAS's yield loop while the other core works). So this
** tool watches the step from outside, in wall time: it defines cblas_sgemm and
** openblas_set_num_threads itself, forwarding to the real ones (dlsym RTLD_NEXT), and logs
** the start and end of every call. The backend (linked statically from libanetrain.a)
** calls these definitions, so the log is a timeline of the real step:
**   - each matmul, named by its shape (fwd / dx / dW of wq.. w2, the classifier);
**   - the attention phases, which cpu.c brackets with blas_single_acquire / release;
**   - the gaps between them on the main thread: the non-BLAS ops (RMSNorm, RoPE, SwiGLU,
**     cross-entropy, residual adds, memsets), named by the matmuls around them.
** The optimizer's phases (zero, clip, AdamW) are timed directly, as in bench_train.
**
** Linux with OpenBLAS only (it relies on the executable's symbols taking precedence over
** the shared BLAS). It never changes what the step computes.
*/
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"
#include "backend/backend.h"
#include "model/config.h"
#include "model/params.h"
#include "train/optim.h"
#include "util/blas.h"
#include "util/err.h"
#include "util/parallel.h"
#include "util/rng.h"


/* ------------------------------------------------------------------ the event log */

typedef enum { EV_GEMM, EV_THREADS, EV_MARK } EventKind;

typedef struct {
    EventKind kind;
    int main_thread;        /* 0: a pool worker (attention) */
    double t0, t1;
    int ta, tb, M, N, K;    /* EV_GEMM: transposes (1 = Trans) and sizes; EV_THREADS: M = count */
    const char *mark;       /* EV_MARK: "step" / "end" */
} Event;

enum { MAX_EVENTS = 1 << 20 };

static struct {
    Event *ev;
    int n, recording, overflow;
    pthread_t main;
    pthread_mutex_t lock;
} log_ = {NULL, 0, 0, 0, 0, PTHREAD_MUTEX_INITIALIZER};

static void log_add(const Event *e) {
    pthread_mutex_lock(&log_.lock);
    if (log_.n < MAX_EVENTS) log_.ev[log_.n++] = *e;
    else log_.overflow = 1;
    pthread_mutex_unlock(&log_.lock);
}

static void log_mark(const char *mark) {
    Event e = {EV_MARK, 1, now_seconds(), 0, 0, 0, 0, 0, 0, mark};
    e.t1 = e.t0;
    log_add(&e);
}

/* ------------------------------------------------------------------ the interposed BLAS calls */

typedef void (*SgemmFn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE, const blasint,
                        const blasint, const blasint, const float, const float *, const blasint, const float *,
                        const blasint, const float, float *, const blasint);
typedef void (*SetThreadsFn)(int);

static SgemmFn real_sgemm;
static SetThreadsFn real_set_threads;

static void resolve_blas(void) {
    real_sgemm = (SgemmFn)dlsym(RTLD_NEXT, "cblas_sgemm");
    real_set_threads = (SetThreadsFn)dlsym(RTLD_NEXT, "openblas_set_num_threads");
    if (!real_sgemm || !real_set_threads) {
        fprintf(stderr, "profile_step: cannot find the real cblas_sgemm / openblas_set_num_threads (OpenBLAS only)\n");
        exit(1);
    }
}

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A,
                 const blasint lda, const float *B, const blasint ldb, const float beta, float *C, const blasint ldc) {
    if (!log_.recording) {
        real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    Event e = {EV_GEMM, pthread_equal(pthread_self(), log_.main), now_seconds(), 0, ta == CblasTrans, tb == CblasTrans,
               (int)M, (int)N, (int)K, NULL};
    real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    e.t1 = now_seconds();
    log_add(&e);
}

void openblas_set_num_threads(int n) {
    if (!log_.recording) {
        real_set_threads(n);
        return;
    }
    Event e = {EV_THREADS, pthread_equal(pthread_self(), log_.main), now_seconds(), 0, 0, 0, n, 0, 0, NULL};
    real_set_threads(n);
    e.t1 = now_seconds();
    log_add(&e);
}

/* ------------------------------------------------------------------ naming what the log shows */

/* Names a main-thread gemm by its shape, as cpu.c / ops_linear_* call it:
**   forward  y = W x         NoTrans,NoTrans  M=O  N=T  K=In
**   backward dx += W^T dy    Trans,NoTrans    M=In N=T  K=O
**   backward dW += dy x^T    NoTrans,Trans    M=O  N=In K=T
** and the classifier's token-major forms (ops_linear_*_tokens, both operands transposed):
**   forward  yt = x^T W^T    Trans,Trans      M=T  N=O  K=In
**   backward dx += W^T dyt^T Trans,Trans      M=In N=T  K=O
**   backward dW += dyt^T x^T Trans,Trans      M=O  N=In K=T
** When wo has the shape of wq (H*D == C), the previous event tells them apart: wo's forward
** follows the attention phase, its backward follows w1/w3's. Other equal shapes (only in the
** tiny test presets, e.g. F == H*D) take the first name that fits. */
static void gemm_name(char *buf, size_t size, const Event *e, const ModelConfig *cfg, int T, const char *prev) {
    int C = cfg->dim, F = cfg->hidden_dim, QD = cfg->n_heads * cfg->head_dim, KD = cfg->n_kv_heads * cfg->head_dim;
    int V = cfg->vocab_size, O = 0, In = 0;
    const char *dir = "?";
    if (!e->ta && !e->tb && e->N == T) dir = "fwd", O = e->M, In = e->K;
    else if (e->ta && !e->tb && e->N == T) dir = "dx", O = e->K, In = e->M;
    else if (!e->ta && e->tb && e->K == T) dir = "dW", O = e->M, In = e->N;
    else if (e->ta && e->tb && e->M == T) dir = "fwd", O = e->N, In = e->K;
    else if (e->ta && e->tb && e->N == T) dir = "dx", O = e->K, In = e->M;
    else if (e->ta && e->tb && e->K == T) dir = "dW", O = e->M, In = e->N;
    const char *w = NULL;
    int after_attention = strcmp(prev, "attn.fwd") == 0 || strcmp(prev, "dW.w1/w3") == 0 || strcmp(prev, "dx.wo") == 0;
    if (O == V && In == C) w = "cls";
    else if (O == C && In == QD && after_attention) w = "wo";
    else if ((O == QD || O == KD) && In == C) w = "wq/wk/wv";
    else if (O == C && In == QD) w = "wo";
    else if (O == F && In == C) w = "w1/w3";
    else if (O == C && In == F) w = "w2";
    if (w) snprintf(buf, size, "%s.%s", dir, w);
    else snprintf(buf, size, "gemm %s%s %dx%dx%d", e->ta ? "T" : "N", e->tb ? "T" : "N", e->M, e->N, e->K);
}

/* What cpu.c runs between two main-thread events (read from cpu_step; "?" if unknown). */
static const char *gap_name(const char *prev, const char *next) {
    static const struct {
        const char *prev, *next, *what;
    } known[] = {
        {"step", "fwd.wq/wk/wv", "embedding + rmsnorm fwd (layer 0)"},
        {"fwd.wq/wk/wv", "attn.fwd", "(nothing: q/k norm + rope run in the attention phase)"},
        {"attn.fwd", "fwd.wo", "(nothing: attention fwd -> wo)"},
        {"fwd.wo", "fwd.w1/w3", "residual add + rmsnorm fwd"},
        {"fwd.w1/w3", "fwd.w2", "swiglu fwd"},
        {"fwd.w2", "fwd.wq/wk/wv", "residual add + rmsnorm fwd"},
        {"fwd.w2", "fwd.cls", "residual add + final rmsnorm fwd + memset"},
        {"fwd.cls", "dx.cls", "cross-entropy fwd + bwd (softmax over V, in the pool)"},
        {"dW.cls", "dx.w2", "memsets + final rmsnorm bwd"},
        {"dW.w2", "dx.w1/w3", "swiglu bwd + memsets"},
        {"dW.w1/w3", "dx.wo", "rmsnorm bwd + memset"},
        {"dW.wo", "attn.bwd", "memsets dq dk dv"},
        {"attn.bwd", "dx.wq/wk/wv", "(qwen3: q/k norm bwd) + memset"},
        {"dW.wq/wk/wv", "dx.w2", "rmsnorm bwd + memset"},
        {"dW.wq/wk/wv", "end", "rmsnorm bwd + embedding bwd"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i].prev, prev) == 0 && strcmp(known[i].next, next) == 0) return known[i].what;
    return NULL;
}

/* ------------------------------------------------------------------ aggregation */

enum { MAX_ROWS = 64 };

typedef struct {
    char name[96];
    double seconds, flops;
    long calls;
} Row;

typedef struct {
    Row r[MAX_ROWS];
    int n;
} Table;

static Row *table_row(Table *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->r[i].name, name) == 0) return &t->r[i];
    if (t->n == MAX_ROWS) return &t->r[MAX_ROWS - 1]; /* cannot happen for the known shapes */
    Row *r = &t->r[t->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

static int cmp_row(const void *a, const void *b) {
    double x = ((const Row *)a)->seconds, y = ((const Row *)b)->seconds;
    return (x < y) - (x > y);
}

/* ------------------------------------------------------------------ matmul shapes in isolation */

/* Best GFLOP/s of C = op(A) op(B) (row-major, as ops.c calls it) over a few repetitions. */
static double gemm_gflops(int ta, int tb, int M, int N, int K, float *buf) {
    float *A = buf, *Bm = A + (size_t)M * K, *Cm = Bm + (size_t)K * N;
    int lda = ta ? M : K, ldb = tb ? K : N;
    double best = 1e30, flops = 2.0 * M * (double)N * K;
    int reps = (int)(2e9 / flops) + 3; /* about 2 GFLOP of work, at least 3 calls */
    for (int r = 0; r <= reps; r++) {
        double t0 = now_seconds();
        real_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A,
                   lda, Bm, ldb, 1.0f, Cm, N);
        double dt = now_seconds() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    return flops / best / 1e9;
}

/* Each matmul shape of one step of `cfg` at T tokens, alone, on 1 and on `threads` threads,
** plus the fused shapes a faster backend could use. */
static int run_shapes(const ModelConfig *cfg, int T, int threads, double peak) {
    int C = cfg->dim, F = cfg->hidden_dim, QD = cfg->n_heads * cfg->head_dim, KD = cfg->n_kv_heads * cfg->head_dim;
    int V = cfg->vocab_size, D = cfg->head_dim;
    struct {
        const char *name;
        int ta, tb, M, N, K;
    } shapes[] = {
        {"fwd  wq        y = W x", 0, 0, QD, T, C},
        {"dx   wq        dx += W^T dy", 1, 0, C, T, QD},
        {"dW   wq        dW += dy x^T", 0, 1, QD, C, T},
        {"fwd  wk/wv", 0, 0, KD, T, C},
        {"fwd  wo", 0, 0, C, T, QD},
        {"fwd  w1/w3", 0, 0, F, T, C},
        {"dx   w1/w3", 1, 0, C, T, F},
        {"dW   w1/w3", 0, 1, F, C, T},
        {"fwd  w2", 0, 0, C, T, F},
        {"dx   w2", 1, 0, F, T, C},
        {"dW   w2", 0, 1, C, F, T},
        {"fwd  cls", 0, 0, V, T, C},
        {"dx   cls", 1, 0, C, T, V},
        {"dW   cls", 0, 1, V, C, T},
        {"fused fwd  wq|wk|wv  (one [QD+2KD][C] matrix)", 0, 0, QD + 2 * KD, T, C},
        {"fused dx   wq|wk|wv", 1, 0, C, T, QD + 2 * KD},
        {"fused dW   wq|wk|wv", 0, 1, QD + 2 * KD, C, T},
        {"fused fwd  w1|w3     (one [2F][C] matrix)", 0, 0, 2 * F, T, C},
        {"fused dx   w1|w3", 1, 0, C, T, 2 * F},
        {"fused dW   w1|w3", 0, 1, 2 * F, C, T},
        {"attn  S = q^T k      (per head)", 1, 0, T, T, D},
        {"attn  out = v P^T", 0, 1, D, T, T},
        {"attn  dv += dout P", 0, 0, D, T, T},
    };
    size_t most = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        size_t need = (size_t)shapes[i].M * shapes[i].K + (size_t)shapes[i].K * shapes[i].N +
                      (size_t)shapes[i].M * shapes[i].N;
        if (need > most) most = need;
    }
    float *buf = malloc(most * sizeof(float));
    if (!buf) return -1;
    for (size_t i = 0; i < most; i++) buf[i] = (float)(i % 7) * 0.01f;
    printf("matmul shapes alone (row-major, as ops.c calls them; best of several calls)\n");
    printf("  %-46s %5s %5s %5s %8s %7d thr", "shape", "M", "N", "K", "1 thread", threads);
    printf("%s\n", peak > 0 ? "  %peak" : "");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        real_set_threads(1);
        double g1 = gemm_gflops(shapes[i].ta, shapes[i].tb, shapes[i].M, shapes[i].N, shapes[i].K, buf);
        real_set_threads(threads);
        double gn = gemm_gflops(shapes[i].ta, shapes[i].tb, shapes[i].M, shapes[i].N, shapes[i].K, buf);
        printf("  %-46s %5d %5d %5d %8.1f %9.1f", shapes[i].name, shapes[i].M, shapes[i].N, shapes[i].K, g1, gn);
        if (peak > 0) printf("  %4.0f%%", 100 * gn / peak);
        printf("\n");
    }
    free(buf);
    return 0;
}

/* ------------------------------------------------------------------ main */

static void usage(void) {
    printf("usage: profile_step [--model NAME] [--batch B] [--seq T] [--steps N] [--threads N] [--peak-gflops G]\n"
           "                    [--shapes]\n"
           "\n"
           "Wall-time profile of CPU training steps (default stories110m, 1x256, 3 steps after 1 warm-up,\n"
           "all cores): every sgemm by shape, the attention phases, the non-BLAS gaps between them, and\n"
           "the optimizer. Per-step averages. With --peak-gflops, matmul rows also show %% of that peak.\n"
           "--shapes instead times each matmul shape of the step alone (GFLOP/s on 1 and N threads),\n"
           "with the fused shapes (wq|wk|wv, w1|w3) a faster backend could use.\n");
}

int main(int argc, char **argv) {
    const char *model = "stories110m";
    int B = 1, T = 256, steps = 3, threads = parallel_cpu_count();
    double peak = 0;
    int shapes = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            return 0;
        }
        if (strcmp(a, "--shapes") == 0) {
            shapes = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "profile_step: %s: expected a value (see --help)\n", a);
            return 2;
        }
        if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--batch") == 0) B = atoi(v);
        else if (strcmp(a, "--seq") == 0) T = atoi(v);
        else if (strcmp(a, "--steps") == 0) steps = atoi(v);
        else if (strcmp(a, "--threads") == 0) threads = atoi(v);
        else if (strcmp(a, "--peak-gflops") == 0) peak = atof(v);
        else {
            fprintf(stderr, "profile_step: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        i++;
    }
    if (B < 1 || T < 1 || steps < 1 || threads < 1) {
        fprintf(stderr, "profile_step: --batch, --seq, --steps and --threads must be positive integers\n");
        return 2;
    }
    resolve_blas();
    log_.main = pthread_self();
    log_.ev = malloc(MAX_EVENTS * sizeof(Event));
    Err err = {{0}};
    ModelConfig cfg;
    ParamLayout layout;
    if (!log_.ev || config_from_preset(&cfg, model, &err) != 0 || config_validate(&cfg, model, &err) != 0) {
        fprintf(stderr, "profile_step: %s\n", log_.ev ? err.msg : "out of memory for the event log");
        return 1;
    }
    parallel_init(threads);
    blas_set_threads(threads);
    if (shapes) return run_shapes(&cfg, T, threads, peak) == 0 ? 0 : 1;
    params_layout(&layout, &cfg);
    size_t n = layout.n_floats, bt = (size_t)B * T;
    float *p = malloc(4 * n * sizeof(float));
    int32_t *tok = malloc(2 * bt * sizeof(int32_t));
    Backend *be = p && tok ? backend_cpu_create(&layout, B, T, &err) : NULL;
    if (!be) {
        fprintf(stderr, "profile_step: %s\n", p && tok ? err.msg : "out of memory for the parameters");
        return 1;
    }
    float *g = p + n, *m = g + n, *v = m + n;
    Rng rng;
    rng_seed(&rng, 1);
    params_init(&layout, p, &rng);
    memset(g, 0, 3 * n * sizeof(float));
    for (size_t i = 0; i < 2 * bt; i++) tok[i] = (int32_t)rng_below(&rng, (uint64_t)cfg.vocab_size);
    const AdamWConfig adamw = {0.9f, 0.95f, 1e-8f, 0.1f};

    double t_zero = 0, t_step = 0, t_clip = 0, t_adamw = 0, loss = 0;
    for (int s = 0; s <= steps; s++) { /* step 0 is the warm-up, not recorded */
        double t0 = now_seconds();
        memset(g, 0, n * sizeof(float));
        double t1 = now_seconds();
        log_.recording = s > 0;
        if (s > 0) log_mark("step");
        if (backend_step(be, p, g, tok, tok + bt, B, T, 1.0f, &loss, NULL, &err) != 0) {
            fprintf(stderr, "profile_step: %s\n", err.msg);
            return 1;
        }
        if (s > 0) log_mark("end");
        log_.recording = 0;
        double t2 = now_seconds();
        float coef = grad_clip_coef(grad_global_norm(g, n), 1.0f);
        double t3 = now_seconds();
        adamw_step(&layout, &adamw, p, g, m, v, 5e-4f, s + 1, coef);
        double t4 = now_seconds();
        if (s > 0) t_zero += t1 - t0, t_step += t2 - t1, t_clip += t3 - t2, t_adamw += t4 - t3;
    }
    if (log_.overflow) fprintf(stderr, "profile_step: event log full; the profile covers the first steps only\n");

    /* Walk the log: main-thread gemms by name, gaps between consecutive main-thread events by
    ** (previous, next) name, pool gemms inside the attention phases. */
    Table gemms = {.n = 0}, gaps = {.n = 0};
    double pool_gemm = 0, pool_flops = 0, set_threads = 0, attn_fwd = 0, attn_bwd = 0;
    char prev[96] = "", name[96];
    double prev_t1 = 0;
    int backward = 0, threads_calls = 0, in_attention = 0;
    for (int i = 0; i < log_.n; i++) {
        const Event *e = &log_.ev[i];
        double flops = 2.0 * e->M * (double)e->N * e->K;
        if (e->kind == EV_GEMM && (in_attention || !e->main_thread)) { /* per-head gemms, any pool thread */
            pool_gemm += e->t1 - e->t0;
            pool_flops += flops;
            continue;
        }
        if (e->kind == EV_MARK) {
            snprintf(name, sizeof name, "%s", e->mark);
            if (strcmp(e->mark, "step") == 0) backward = 0;
        } else if (e->kind == EV_THREADS) {
            /* cpu.c sets 1 thread before attention and N after: the gap between is attention. */
            snprintf(name, sizeof name, "%s", backward ? "attn.bwd" : "attn.fwd");
            in_attention = e->M == 1;
            set_threads += e->t1 - e->t0;
            threads_calls++;
        } else {
            gemm_name(name, sizeof name, e, &cfg, T, prev);
            if (strcmp(name, "fwd.cls") == 0) backward = 1;
            Row *r = table_row(&gemms, name);
            r->seconds += e->t1 - e->t0;
            r->flops += flops;
            r->calls++;
        }
        if (prev[0] && strcmp(prev, "end") != 0) {
            char key[200];
            int attention = strncmp(prev, "attn.", 5) == 0 && strcmp(prev, name) == 0;
            if (attention)
                snprintf(key, sizeof key, "%s",
                         backward ? "attention bwd (P recompute, softmax bwd, 5 gemms/head, rope bwd; pool)"
                                  : "attention fwd (q/k norm, rope, softmax, 2 gemms/head; pool)");
            else {
                const char *what = gap_name(prev, name);
                if (what) snprintf(key, sizeof key, "%s", what);
                else snprintf(key, sizeof key, "%s -> %s", prev, name);
            }
            double dt = e->t0 - prev_t1;
            if (attention) *(backward ? &attn_bwd : &attn_fwd) += dt;
            Row *r = table_row(&gaps, key);
            r->seconds += dt;
            r->calls++;
        }
        snprintf(prev, sizeof prev, "%s", name);
        prev_t1 = e->t1;
    }

    /* ---- report, per step ---- */
    double S = steps, total = (t_zero + t_step + t_clip + t_adamw) / S;
    double flops_step = config_train_flops_per_seq(&cfg, T) * B;
    double gemm_main = 0, gemm_main_flops = 0;
    for (int i = 0; i < gemms.n; i++) gemm_main += gemms.r[i].seconds, gemm_main_flops += gemms.r[i].flops;
    printf("profile_step: %s, %dx%d, %d threads, %s; %d steps after 1 warm-up; per-step averages\n", model, B, T,
           threads, blas_name(), steps);
    printf("whole step %.1f ms = %.1f GFLOP/s%s\n\n", 1e3 * total, flops_step / total / 1e9, "");

#define PCT(x) (100.0 * (x) / S / total)
    printf("%-66s %9s %6s %7s %8s\n", "matmuls on the main thread (BLAS, all threads)", "ms/step", "%step", "calls",
           peak > 0 ? "GF/s %pk" : "GFLOP/s");
    qsort(gemms.r, (size_t)gemms.n, sizeof(Row), cmp_row);
    for (int i = 0; i < gemms.n; i++) {
        const Row *r = &gemms.r[i];
        double gf = r->flops / r->seconds / 1e9;
        printf("  %-64s %9.1f %5.1f%% %7.0f %8.1f", r->name, 1e3 * r->seconds / S, PCT(r->seconds), r->calls / S, gf);
        if (peak > 0) printf(" %3.0f%%", 100 * gf / peak);
        printf("\n");
    }
    printf("  %-64s %9.1f %5.1f%% %7s %8.1f\n", "all main-thread matmuls", 1e3 * gemm_main / S, PCT(gemm_main), "",
           gemm_main_flops / gemm_main / 1e9);
    printf("\n%-66s %9s %6s\n", "between the matmuls (non-BLAS ops, attention)", "ms/step", "%step");
    qsort(gaps.r, (size_t)gaps.n, sizeof(Row), cmp_row);
    double gap_sum = 0;
    int tiny = 0;
    for (int i = 0; i < gaps.n; i++) {
        const Row *r = &gaps.r[i];
        gap_sum += r->seconds;
        if (r->seconds / S < 0.05e-3) tiny++; /* back-to-back matmuls: nothing runs between */
        else printf("  %-64s %9.1f %5.1f%%\n", r->name, 1e3 * r->seconds / S, PCT(r->seconds));
    }
    if (tiny) printf("  (%d more transitions under 0.05 ms each, not shown)\n", tiny);
    printf("  %-64s %9.1f %5.1f%%\n", "all gaps", 1e3 * gap_sum / S, PCT(gap_sum));
    printf("  inside attention: per-head gemms %.1f ms of pool-thread time per step (%.1f GFLOP/s per thread),\n"
           "  i.e. about %.1f of the %.1f ms the attention phases take; openblas_set_num_threads: %.2f ms over %.0f calls\n",
           1e3 * pool_gemm / S, pool_flops / pool_gemm / 1e9, 1e3 * pool_gemm / S / threads,
           1e3 * (attn_fwd + attn_bwd) / S, 1e3 * set_threads / S, threads_calls / S);
    printf("\n%-66s %9s %6s\n", "around the backend step (bench harness)", "ms/step", "%step");
    printf("  %-64s %9.1f %5.1f%%\n", "backend step (matmuls + gaps above)", 1e3 * t_step / S, PCT(t_step));
    printf("  %-64s %9.1f %5.1f%%\n", "zero grads (memset)", 1e3 * t_zero / S, PCT(t_zero));
    printf("  %-64s %9.1f %5.1f%%\n", "grad_global_norm (clip coefficient)", 1e3 * t_clip / S, PCT(t_clip));
    printf("  %-64s %9.1f %5.1f%%\n", "adamw_step", 1e3 * t_adamw / S, PCT(t_adamw));
    be->destroy(be);
    free(p);
    free(tok);
    free(log_.ev);
    parallel_shutdown();
    return 0;
}
