/*
** tool_lora.c — the C side of the LoRA PyTorch parity test (tests/test_lora_parity.py).
**
** Not a test by itself: test_lora_parity.py writes a model, a PEFT adapter (random A and B,
** so every gradient is non-zero) and a batch, runs this tool, and compares what it writes with
** a float64 PyTorch reference whose linear layers are LoRA-wrapped the way PEFT computes them
** (x Wᵀ + s (x Aᵀ) Bᵀ, unmerged).
**
**   tool_lora MODEL TOKENS B T ADAPTER N LR WD CLIP OUT [--threads n] [--merged] [--dropout-seed S]
**             [--targets FILE] [--micro M] [--backend cpu|ane]
**
**   default: the unmerged step (backend_cpu_create_frozen: the adapter in StepArgs, gradients
**            of the adapter alone), with the adapter's lora_dropout; step i (the gradient dump
**            is step 0) runs with dropout seed lora_step_dropout_seed(S, i, 0) (S default 1)
**   --merged the old path: W + s B A merged into the weights, the full gradient projected
**            (lora_grad); only for lora_dropout 0
**   MODEL    a HF directory or a llama2.c .bin (interleaved RoPE: the adapter's B rows for q/k
**            are permuted on load, and back when written)
**   TOKENS   raw little-endian int32, B*(T+1) ids (as tool_parity)
**   --targets FILE  raw int32 [B][T] targets replacing the shifted ids, < 0 ignored (a masked
**            loss: padding, prompt tokens); every loss and gradient is then the mean over the
**            counted targets of the whole batch (train/masked.h), however it is split
**   --micro M the batch runs as M micro-batches of B/M rows, gradients accumulated (unmerged)
**   --backend ane  the unmerged steps on the ANE backend (the emulator where there is no device)
**   ADAPTER  a PEFT adapter directory (lora_load)
**   N        adapter-only AdamW steps on the same batch after the gradient dump (betas 0.9/0.999,
**            eps 1e-8, decay WD on A and B, global-norm clip CLIP over the adapter's gradients,
**            constant LR)
**   OUT      a directory, created, that receives:
**              result.safetensors  logits [B][V][T], loss [1]; metadata "loss", "train_losses",
**                                  "train_grad_norms", "final_loss" at full precision
**              grad/               dL/dA and dL/dB at the given adapter, as a PEFT directory
**                                  (lora_save: the same names and row order as the adapter)
**              final/              the adapter after the N steps, as a PEFT directory
**              masks.safetensors   (unmerged, lora_dropout > 0) the dropout masks of every
**                                  step: "mask.I.L.M" [B][In][T] for step I, layer L, module M
**                                  (q k v o gate up down), values 0 or 1/(1-p) (lora_dropout_mask)
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "io/model_file.h"
#include "io/peft.h"
#include "io/safetensors.h"
#include "model/lora.h"
#include "train/lora_grad.h"
#include "train/masked.h"
#include "train/optim.h"
#include "train/trainer.h"
#include "util/fileio.h"
#include "util/parallel.h"

static int fail(const char *what, const Err *err) {
    fprintf(stderr, "tool_lora: %s: %s\n", what, err ? err->msg : "failed");
    return 1;
}

static void join_doubles(char *buf, size_t size, const double *x, int n) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%.17g", i ? "," : "", x[i]);
}

static int micro = 1;             /* --micro */
static double counted_factor = 1; /* B*T / counted targets of the batch (train/masked.h); 1 without --targets */

/* One batch's adapter gradient into agrads (+=), the way the trainer computes it: merged
** (W + s B A into params, full gradient, lora_grad) or unmerged (the frozen-base backend, in
** `micro` micro-batches). */

static int lora_train_step(const LoraLayout *lo, const ParamLayout *pl, Backend *be, int merged, const float *base,
                           float *params, float *grads, const float *adapter, float *agrads, const int32_t *inputs,
                           const int32_t *targets, int B, int T, uint64_t seed, double *loss, float *logits, Err *err) {
    if (!merged) { /* micro-batches of B / micro rows, each scaled to the whole batch's counted mean */
        int mb = B / micro;
        double f = counted_factor / micro, sum = 0;
        for (int a = 0; a < micro; a++) {
            double l;
            size_t o = (size_t)a * mb * T;
            StepArgs args = {params, NULL, adapter, agrads, inputs + o, targets + o, mb, T, (float)f,
                             logits ? logits + o * pl->cfg.vocab_size : NULL, seed};
            if (be->step(be, &args, &l, err) != 0) return -1;
            sum += l * f;
        }
        *loss = sum;
        return 0;
    }
    lora_merge(lo, pl, base, adapter, params);
    memset(grads, 0, pl->n_floats * sizeof *grads);
    if (backend_step(be, params, grads, inputs, targets, B, T, 1.0f, loss, logits, err) != 0) return -1;
    lora_grad(lo, pl, grads, adapter, agrads);
    return 0;
}

/* out/masks.safetensors: the masks of steps [0, steps) (see the header). */
static int dump_masks(const LoraLayout *lo, const char *out_dir, uint64_t seed, int steps, int B, int T, Err *err) {
    int L = lo->model.n_layers, count = 0;
    for (int m = 0; m < LORA_MODULES; m++) count += lo->t[m].present;
    size_t n_tensors = (size_t)steps * L * count;
    StWriteTensor *wt = calloc(n_tensors, sizeof *wt);
    char(*names)[48] = calloc(n_tensors, sizeof *names);
    float **data = calloc(n_tensors, sizeof *data);
    if (!wt || !names || !data) return err_set(err, "out of memory for %zu masks", n_tensors);
    size_t k = 0;
    int rc = 0;
    for (int i = 0; i < steps && rc == 0; i++)
        for (int l = 0; l < L && rc == 0; l++)
            for (int m = 0; m < LORA_MODULES && rc == 0; m++) {
                if (!lo->t[m].present) continue;
                int In = lo->t[m].in;
                data[k] = malloc((size_t)B * In * T * sizeof(float));
                if (!data[k]) {
                    rc = err_set(err, "out of memory for a mask");
                    break;
                }
                uint64_t s = lora_step_dropout_seed(seed, (uint64_t)i, 0);
                for (int b = 0; b < B; b++)
                    lora_dropout_mask(data[k] + (size_t)b * In * T, s, l, (LoraModule)m, b, 0, In, T, lo->cfg.dropout);
                snprintf(names[k], sizeof names[k], "mask.%d.%d.%s", i, l, lora_module_name((LoraModule)m));
                wt[k] = (StWriteTensor){names[k], data[k], 3, {B, In, T}};
                k++;
            }
    char path[1200];
    snprintf(path, sizeof path, "%s/masks.safetensors", out_dir);
    if (rc == 0) rc = st_write_f32(path, wt, (int)k, NULL, err);
    for (size_t j = 0; j < k; j++) free(data[j]);
    free(wt), free(names), free(data);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 11) {
        fprintf(stderr, "usage: %s MODEL TOKENS B T ADAPTER N LR WD CLIP OUT [--threads n]\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *tok_path = argv[2], *adapter_dir = argv[5], *out_dir = argv[10];
    int B = atoi(argv[3]), T = atoi(argv[4]), N = atoi(argv[6]), threads = 2, merged = 0;
    uint64_t dropout_seed = 1;
    const char *targets_path = NULL, *backend_name = "cpu";
    float lr = strtof(argv[7], NULL), wd = strtof(argv[8], NULL), clip = strtof(argv[9], NULL);
    for (int i = 11; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--merged") == 0) merged = 1;
        else if (strcmp(argv[i], "--dropout-seed") == 0 && i + 1 < argc) dropout_seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--targets") == 0 && i + 1 < argc) targets_path = argv[++i];
        else if (strcmp(argv[i], "--micro") == 0 && i + 1 < argc) micro = atoi(argv[++i]);
        else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) backend_name = argv[++i];
        else {
            fprintf(stderr, "tool_lora: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (B < 1 || T < 1 || N < 0 || N > 1000 || threads < 1 || micro < 1 || B % micro != 0) {
        fprintf(stderr, "tool_lora: bad sizes B=%d T=%d N=%d threads=%d\n", B, T, N, threads);
        return 2;
    }
    parallel_init(threads);
    Err err = {{0}};

    /* ---- model, adapter, batch ---- */
    ParamLayout pl;
    float *params = NULL;
    ModelFormat fmt = model_format_detect(model_path);
    if (fmt == MODEL_FORMAT_HF) {
        if (hf_load(model_path, &pl, &params, &err) != 0) return fail("hf_load", &err);
    } else if (fmt == MODEL_FORMAT_LLAMA2C) {
        if (llama2c_load(model_path, &pl, &params, &err) != 0) return fail("llama2c_load", &err);
    } else {
        fprintf(stderr, "tool_lora: %s: expected a HF directory or a llama2.c .bin\n", model_path);
        return 1;
    }
    LoraLayout lo;
    float *adapter = NULL;
    if (lora_load(adapter_dir, &pl.cfg, &lo, &adapter, &err) != 0) return fail("lora_load", &err);
    const int V = pl.cfg.vocab_size;
    size_t n_ids = (size_t)B * (T + 1);
    int32_t *ids = malloc(n_ids * sizeof *ids), *inputs = malloc((size_t)B * T * sizeof *inputs),
            *targets = malloc((size_t)B * T * sizeof *targets);
    if (!ids || !inputs || !targets) return fail("malloc", NULL);
    FILE *tf = fopen(tok_path, "rb");
    if (!tf) return fail(tok_path, NULL);
    size_t got = fread(ids, sizeof *ids, n_ids, tf);
    fclose(tf);
    if (got != n_ids) return fail(tok_path, NULL);
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= V) return fail("token id out of range", NULL);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            inputs[(size_t)b * T + t] = ids[(size_t)b * (T + 1) + t];
            targets[(size_t)b * T + t] = ids[(size_t)b * (T + 1) + t + 1];
        }

    if (targets_path) { /* the masked targets, and the batch's counted mean */
        FILE *gf = fopen(targets_path, "rb");
        if (!gf) return fail(targets_path, NULL);
        got = fread(targets, sizeof *targets, (size_t)B * T, gf);
        fclose(gf);
        if (got != (size_t)B * T) return fail(targets_path, NULL);
        for (size_t i = 0; i < (size_t)B * T; i++)
            if (targets[i] >= V) return fail("target id out of range", NULL);
        long long counted = masked_count(targets, (size_t)B * T);
        if (counted == 0) return fail("no counted target", NULL);
        counted_factor = masked_factor(B, T, counted);
    }
    if (merged && (lo.cfg.dropout != 0 || targets_path || micro > 1 || strcmp(backend_name, "cpu") != 0))
        return fail("--merged takes lora_dropout 0, the cpu backend, and no --targets or --micro", NULL);

    /* ---- the LoRA state as the trainer keeps it, merged or not ---- */
    FrozenBase frozen = {&lo, NULL};
    Backend *be = merged ? backend_cpu_create(&pl, B, T, &err)
                         : backend_create_frozen(backend_name, &pl, &frozen, B / micro, T, NULL, &err);
    if (!be) return fail("backend_create", &err);
    size_t n = pl.n_floats, na = lo.n_floats;
    float *base = NULL, *grads = NULL;
    if (merged) {
        base = malloc(lo.n_base_floats * sizeof *base);
        grads = calloc(n, sizeof *grads);
        if (!base || !grads) return fail("malloc", NULL);
        lora_base_copy(&lo, &pl, params, base);
    }
    float *agrads = calloc(na, sizeof *agrads), *m = calloc(na, sizeof *m), *v = calloc(na, sizeof *v);
    float *logits = malloc((size_t)B * V * T * sizeof *logits);
    if (!agrads || !m || !v || !logits) return fail("malloc", NULL);
    ParamLayout optim;
    lora_optim_layout(&lo, &optim);

    /* ---- gradient at the given adapter (step 0's masks) ---- */
    double loss = 0;
    if (lora_train_step(&lo, &pl, be, merged, base, params, grads, adapter, agrads, inputs, targets, B, T,
                        lora_step_dropout_seed(dropout_seed, 0, 0), &loss, logits, &err) != 0)
        return fail("step", &err);
    char path[1200];
    snprintf(path, sizeof path, "%s/grad", out_dir);
    if (dir_ensure(out_dir, &err) != 0 || lora_save(path, &lo, agrads, NULL, &err) != 0) return fail("grad", &err);

    /* ---- N adapter-only AdamW steps ---- */
    AdamWConfig acfg = {0.9f, 0.999f, 1e-8f, wd};
    double losses[1001], norms[1001];
    for (int i = 0; i < N; i++) {
        memset(agrads, 0, na * sizeof *agrads);
        if (lora_train_step(&lo, &pl, be, merged, base, params, grads, adapter, agrads, inputs, targets, B, T,
                            lora_step_dropout_seed(dropout_seed, (uint64_t)i, 0), &losses[i], NULL, &err) != 0)
            return fail("train step", &err);
        norms[i] = grad_global_norm(agrads, na);
        adamw_step(&optim, &acfg, adapter, agrads, m, v, lr, i + 1, grad_clip_coef(norms[i], clip));
    }
    double final_loss = 0; /* forward only: evaluation, no dropout */
    if (merged) lora_merge(&lo, &pl, base, adapter, params);
    if (merged) {
        StepArgs fa = {params, NULL, NULL, NULL, inputs, targets, B, T, 1.0f, NULL, 0};
        if (be->step(be, &fa, &final_loss, &err) != 0) return fail("final forward", &err);
    } else { /* forward only (no adapter_grads: no dropout), micro-batch by micro-batch */
        int mb = B / micro;
        for (int a = 0; a < micro; a++) {
            double l;
            size_t o = (size_t)a * mb * T;
            StepArgs fa = {params, NULL, adapter, NULL, inputs + o, targets + o, mb, T, 1.0f, NULL, 0};
            if (be->step(be, &fa, &l, &err) != 0) return fail("final forward", &err);
            final_loss += l * counted_factor / micro;
        }
    }
    if (!merged && lo.cfg.dropout > 0 && dump_masks(&lo, out_dir, dropout_seed, N > 0 ? N : 1, B, T, &err) != 0)
        return fail("masks", &err);
    snprintf(path, sizeof path, "%s/final", out_dir);
    if (lora_save(path, &lo, adapter, NULL, &err) != 0) return fail("final", &err);

    /* ---- logits and scalars ---- */
    char loss_s[64], final_s[64], losses_s[32 * 1001 + 8], norms_s[32 * 1001 + 8];
    snprintf(loss_s, sizeof loss_s, "%.17g", loss);
    snprintf(final_s, sizeof final_s, "%.17g", final_loss);
    join_doubles(losses_s, sizeof losses_s, losses, N);
    join_doubles(norms_s, sizeof norms_s, norms, N);
    float loss_f = (float)loss;
    StWriteTensor wt[2] = {{"logits", logits, 3, {B, V, T}}, {"loss", &loss_f, 1, {1}}};
    const char *meta[] = {"loss", loss_s, "train_losses", losses_s, "train_grad_norms", norms_s,
                          "final_loss", final_s, NULL};
    snprintf(path, sizeof path, "%s/result.safetensors", out_dir);
    if (st_write_f32(path, wt, 2, meta, &err) != 0) return fail("result", &err);

    be->destroy(be);
    free(params);
    free(adapter);
    free(base);
    free(grads);
    free(agrads);
    free(m);
    free(v);
    free(logits);
    free(ids);
    free(inputs);
    free(targets);
    parallel_shutdown();
    return 0;
}
