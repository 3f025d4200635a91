/*
** tool_parity.c — the C side of the PyTorch parity test (tests/test_parity.py).
**
** Not a test by itself (no test_ prefix): test_parity.py writes a model and a batch, runs
** this tool, and compares what it writes with an independent float64 PyTorch reference.
**
**   tool_parity MODEL TOKENS B T N LR WD CLIP OUT [--threads n] [--rope keep|half|interleaved]
**               [--slack n]
**
**   MODEL   a HF directory (config.json + model.safetensors) or a llama2.c .bin
**   TOKENS  raw little-endian int32, B*(T+1) ids: sequence b is ids[b*(T+1) .. b*(T+1)+T];
**           inputs = ids[b][0..T-1], targets = ids[b][1..T]
**   N       AdamW steps to run on the same batch after the gradient dump (may be 0)
**   LR WD CLIP   constant learning rate, weight decay, global-norm clip (betas 0.9/0.95, eps 1e-8)
**   OUT     safetensors file written by st_write_f32
**   --threads n   size of the worker pool (default 2)
**   --rope s      run the model in RoPE style s (the loaded parameters are permuted with
**                 params_convert_rope); gradients and final parameters are permuted back to
**                 the file's style before they are written. Default: keep the file's style.
**   --slack n     create the backend for (B+n) x (T+n), to exercise B < max_B, T < max_T.
**
** OUT holds:
**   logits               [B][V][T]  (channel-first, as the backend returns them)
**   loss                 [1]
**   <HF name>            the gradient of every parameter, HF names, [out][in] orientation,
**                        RoPE rows in the file's style
**   train_losses         [N] loss of each training step (computed before its update)
**   train_grad_norms     [N] global gradient norm of each step before clipping
**   final_loss           [1] loss after the N updates (forward only)
**   final.<HF name>      the parameters after the N updates (file's RoPE style)
** and metadata with the scalars printed at full double precision: "loss", "train_losses",
** "train_grad_norms", "final_loss" (comma separated), "rope_run", "rope_file".
*/
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "io/model_file.h"
#include "io/safetensors.h"
#include "model/params.h"
#include "train/optim.h"
#include "util/parallel.h"

static int fail(const char *what, const Err *err) {
    fprintf(stderr, "tool_parity: %s: %s\n", what, err ? err->msg : strerror(errno));
    return 1;
}

/* The HF name of layer `l` of tensor kind k ("" for kinds that are not present). */
static void hf_name(char *buf, size_t size, TensorKind k, int l) {
    const char *fmt = NULL;
    switch (k) {
    case T_TOK_EMB: fmt = "model.embed_tokens.weight"; break;
    case T_RMS_ATT: fmt = "model.layers.%d.input_layernorm.weight"; break;
    case T_WQ: fmt = "model.layers.%d.self_attn.q_proj.weight"; break;
    case T_WK: fmt = "model.layers.%d.self_attn.k_proj.weight"; break;
    case T_WV: fmt = "model.layers.%d.self_attn.v_proj.weight"; break;
    case T_WO: fmt = "model.layers.%d.self_attn.o_proj.weight"; break;
    case T_RMS_FFN: fmt = "model.layers.%d.post_attention_layernorm.weight"; break;
    case T_W1: fmt = "model.layers.%d.mlp.gate_proj.weight"; break;
    case T_W2: fmt = "model.layers.%d.mlp.down_proj.weight"; break;
    case T_W3: fmt = "model.layers.%d.mlp.up_proj.weight"; break;
    case T_RMS_FINAL: fmt = "model.norm.weight"; break;
    case T_WCLS: fmt = "lm_head.weight"; break;
    case T_Q_NORM: fmt = "model.layers.%d.self_attn.q_norm.weight"; break;
    case T_K_NORM: fmt = "model.layers.%d.self_attn.k_norm.weight"; break;
    default: fmt = ""; break;
    }
    if (strstr(fmt, "%d"))
        snprintf(buf, size, fmt, l);
    else
        snprintf(buf, size, "%s", fmt);
}

/* Appends one StWriteTensor per present parameter tensor (per layer) of `base`, named
** prefix + HF name. names must hold room for every tensor (n_max entries of 128 chars). */
static int add_param_tensors(StWriteTensor *out, int n, char (*names)[128], const ParamLayout *layout, float *base,
                             const char *prefix) {
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *ts = &layout->t[k];
        if (!ts->present) continue;
        for (int l = 0; l < ts->layers; l++) {
            char hn[96];
            hf_name(hn, sizeof hn, (TensorKind)k, l);
            snprintf(names[n], 128, "%s%s", prefix, hn);
            StWriteTensor *w = &out[n];
            w->name = names[n];
            w->data = base + ts->offset + (size_t)l * ts->rows * ts->cols;
            if (ts->rows == 1) {
                w->rank = 1;
                w->shape[0] = ts->cols;
            } else {
                w->rank = 2;
                w->shape[0] = ts->rows;
                w->shape[1] = ts->cols;
            }
            n++;
        }
    }
    return n;
}

static int parse_rope(const char *s, int *keep, RopeStyle *style) {
    *keep = 0;
    if (strcmp(s, "keep") == 0) {
        *keep = 1;
        return 0;
    }
    if (strcmp(s, "half") == 0) {
        *style = ROPE_HALF;
        return 0;
    }
    if (strcmp(s, "interleaved") == 0) {
        *style = ROPE_INTERLEAVED;
        return 0;
    }
    return -1;
}

/* Appends ",%.17g" values to a metadata string. */
static void join_doubles(char *buf, size_t size, const double *x, int n) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%.17g", i ? "," : "", x[i]);
}

int main(int argc, char **argv) {
    if (argc < 10) {
        fprintf(stderr,
                "usage: %s MODEL TOKENS B T N LR WD CLIP OUT [--threads n] [--rope keep|half|interleaved] "
                "[--slack n]\n",
                argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *tok_path = argv[2], *out_path = argv[9];
    int B = atoi(argv[3]), T = atoi(argv[4]), N = atoi(argv[5]);
    float lr = strtof(argv[6], NULL), wd = strtof(argv[7], NULL), clip = strtof(argv[8], NULL);
    int threads = 2, slack = 0, keep = 1;
    RopeStyle run_style = ROPE_HALF;
    for (int i = 10; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--slack") == 0 && i + 1 < argc) {
            slack = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--rope") == 0 && i + 1 < argc) {
            if (parse_rope(argv[++i], &keep, &run_style) != 0) {
                fprintf(stderr, "tool_parity: --rope: expected keep, half or interleaved, found '%s'\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "tool_parity: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (B < 1 || T < 1 || N < 0 || threads < 1 || slack < 0) {
        fprintf(stderr, "tool_parity: bad sizes B=%d T=%d N=%d threads=%d slack=%d\n", B, T, N, threads, slack);
        return 2;
    }
    if (parallel_init(threads) != 0) {
        fprintf(stderr, "tool_parity: could not start %d threads\n", threads);
        return 1;
    }

    /* ---- the model ---- */
    Err err = {{0}};
    ParamLayout layout;
    float *params = NULL;
    ModelFormat fmt = model_format_detect(model_path);
    if (fmt == MODEL_FORMAT_HF) {
        if (hf_load(model_path, &layout, &params, &err) != 0) return fail("hf_load", &err);
    } else if (fmt == MODEL_FORMAT_LLAMA2C) {
        if (llama2c_load(model_path, &layout, &params, &err) != 0) return fail("llama2c_load", &err);
    } else {
        fprintf(stderr, "tool_parity: %s: expected a HF directory or a llama2.c .bin (detected %s)\n", model_path,
                model_format_name(fmt));
        return 1;
    }
    const RopeStyle file_style = layout.cfg.rope_style;
    if (!keep && run_style != file_style) params_convert_rope(&layout, params, run_style);
    const RopeStyle used_style = layout.cfg.rope_style;
    const int V = layout.cfg.vocab_size;
    {
        char desc[512];
        config_describe(&layout.cfg, desc, sizeof desc);
        fprintf(stderr, "tool_parity: %s (%s) file rope=%s run rope=%s threads=%d\n", model_path, desc,
                config_rope_style_name(file_style), config_rope_style_name(used_style), threads);
    }

    /* ---- the batch ---- */
    size_t n_ids = (size_t)B * (T + 1);
    int32_t *ids = malloc(n_ids * sizeof *ids);
    int32_t *inputs = malloc((size_t)B * T * sizeof *inputs), *targets = malloc((size_t)B * T * sizeof *targets);
    if (!ids || !inputs || !targets) return fail("malloc", NULL);
    FILE *tf = fopen(tok_path, "rb");
    if (!tf) return fail(tok_path, NULL);
    size_t got = fread(ids, sizeof *ids, n_ids, tf);
    int extra = fgetc(tf);
    fclose(tf);
    if (got != n_ids || extra != EOF) {
        fprintf(stderr, "tool_parity: %s: expected exactly %zu int32 ids (B*(T+1)), found %s%zu\n", tok_path, n_ids,
                extra != EOF ? "more than " : "", got);
        return 1;
    }
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            fprintf(stderr, "tool_parity: %s: id %zu is %d, outside [0, %d)\n", tok_path, i, (int)ids[i], V);
            return 1;
        }
    }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            inputs[(size_t)b * T + t] = ids[(size_t)b * (T + 1) + t];
            targets[(size_t)b * T + t] = ids[(size_t)b * (T + 1) + t + 1];
        }

    /* ---- one step with gradients and logits ---- */
    Backend *be = backend_cpu_create(&layout, B + slack, T + slack, &err);
    if (!be) return fail("backend_cpu_create", &err);
    size_t n = layout.n_floats;
    float *grads = calloc(n, sizeof *grads), *m = calloc(n, sizeof *m), *v = calloc(n, sizeof *v);
    float *logits = malloc((size_t)B * V * T * sizeof *logits);
    float *out_params = malloc(n * sizeof *out_params);
    if (!grads || !m || !v || !logits || !out_params) return fail("malloc", NULL);
    double loss = 0;
    if (backend_step(be, params, grads, inputs, targets, B, T, 1.0f, &loss, logits, &err) != 0)
        return fail("step", &err);
    /* The permutation is linear, so the gradient permutes back like the parameters. */
    ParamLayout back = layout;
    if (used_style != file_style) params_convert_rope(&back, grads, file_style);

    int max_tensors = 2 * (T_COUNT * (layout.cfg.n_layers + 1)) + 8;
    StWriteTensor *wt = calloc((size_t)max_tensors, sizeof *wt);
    char(*names)[128] = calloc((size_t)max_tensors, sizeof *names);
    if (!wt || !names) return fail("malloc", NULL);
    int nt = 0;
    float loss_f = (float)loss;
    wt[nt++] = (StWriteTensor){"logits", logits, 3, {B, V, T}};
    wt[nt++] = (StWriteTensor){"loss", &loss_f, 1, {1}};
    nt = add_param_tensors(wt, nt, names, &back, grads, "");

    /* ---- N AdamW steps on the same batch ---- */
    AdamWConfig acfg = {0.9f, 0.95f, 1e-8f, wd};
    double *losses = calloc((size_t)N + 1, sizeof *losses), *norms = calloc((size_t)N + 1, sizeof *norms);
    float *losses_f = calloc((size_t)N + 1, sizeof *losses_f), *norms_f = calloc((size_t)N + 1, sizeof *norms_f);
    if (!losses || !norms || !losses_f || !norms_f) return fail("malloc", NULL);
    float *train_grads = calloc(n, sizeof *train_grads);
    if (!train_grads) return fail("malloc", NULL);
    for (int i = 0; i < N; i++) {
        memset(train_grads, 0, n * sizeof *train_grads);
        if (backend_step(be, params, train_grads, inputs, targets, B, T, 1.0f, &losses[i], NULL, &err) != 0)
            return fail("train step", &err);
        norms[i] = grad_global_norm(train_grads, n);
        adamw_step(&layout, &acfg, params, train_grads, m, v, lr, i + 1, grad_clip_coef(norms[i], clip));
        losses_f[i] = (float)losses[i];
        norms_f[i] = (float)norms[i];
    }
    double final_loss = 0;
    if (backend_step(be, params, NULL, inputs, targets, B, T, 1.0f, &final_loss, NULL, &err) != 0)
        return fail("final forward", &err);
    float final_loss_f = (float)final_loss;
    memcpy(out_params, params, n * sizeof *params);
    ParamLayout back2 = layout;
    if (used_style != file_style) params_convert_rope(&back2, out_params, file_style);
    if (N > 0) {
        wt[nt++] = (StWriteTensor){"train_losses", losses_f, 1, {N}};
        wt[nt++] = (StWriteTensor){"train_grad_norms", norms_f, 1, {N}};
    }
    wt[nt++] = (StWriteTensor){"final_loss", &final_loss_f, 1, {1}};
    nt = add_param_tensors(wt, nt, names, &back2, out_params, "final.");

    /* ---- write ---- */
    size_t list_size = 32 * ((size_t)N + 1) + 64;
    char loss_s[64], final_s[64];
    char *losses_s = malloc(list_size), *norms_s = malloc(list_size);
    if (!losses_s || !norms_s) return fail("malloc", NULL);
    snprintf(loss_s, sizeof loss_s, "%.17g", loss);
    snprintf(final_s, sizeof final_s, "%.17g", final_loss);
    join_doubles(losses_s, list_size, losses, N);
    join_doubles(norms_s, list_size, norms, N);
    const char *meta[] = {"loss",      loss_s,   "train_losses", losses_s,
                          "train_grad_norms", norms_s, "final_loss", final_s,
                          "rope_file", config_rope_style_name(file_style), "rope_run", config_rope_style_name(used_style),
                          NULL};
    if (st_write_f32(out_path, wt, nt, meta, &err) != 0) return fail("st_write_f32", &err);

    be->destroy(be);
    free(params);
    free(grads);
    free(train_grads);
    free(m);
    free(v);
    free(logits);
    free(out_params);
    free(wt);
    free(names);
    free(losses);
    free(norms);
    free(losses_f);
    free(norms_f);
    free(losses_s);
    free(norms_s);
    free(ids);
    free(inputs);
    free(targets);
    parallel_shutdown();
    return 0;
}
