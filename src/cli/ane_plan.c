/*
** ane_plan.c — `anetrain ane-plan`: the Neural Engine kernels a run would compile, without
** compiling them: their input and output surfaces, the layout of the input, the device limits'
** verdict on each, the largest axis, and what a step costs; --dump writes every MIL program and
** weight file as the framework is given them, with the summary.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../backend/ane/cost.h"
#include "../backend/ane/inspect.h"
#include "../model/lora.h"
#include "../io/model_file.h"
#include "../util/fileio.h"
#include "args.h"
#include "cli.h"

static const char *ane_plan_help =
    "usage: anetrain ane-plan --model NAME|PATH [--seq T] [options] [--dump DIR]\n"
    "\n"
    "Lays out the Neural Engine kernels that `train`, `finetune` or `eval --backend ane` would\n"
    "compile for this model and sequence length, checks every one against the device limits\n"
    "(the checker every ANE device runs before compiling: docs/ane-facts.md section 9), and\n"
    "prints a summary: the kernels, their input and output surfaces with shapes and sizes, the\n"
    "layout of the input surface (which region holds what), the largest axis of any tensor, the\n"
    "check result of each kernel, and per step the device evaluations (per layer and sequence\n"
    "and in all), the bytes staged into the surfaces, the bytes read back and the device FLOPs.\n"
    "Nothing is compiled or run, so it needs no Mac and no compile budget; attach its output\n"
    "(or the --dump directory) to bug reports and reviews.\n"
    "\n"
    "Model and shapes:\n"
    "  --model NAME|PATH   a preset (stories15m stories42m stories110m qwen3-0.6b tiny tiny-qwen3),\n"
    "                      a HF config.json or directory, an anetrain checkpoint or a llama2.c .bin\n"
    "                      (only the config is read)\n"
    "  --seq T             tokens per sequence (default min(256, the model's max_seq)); the kernels\n"
    "                      work on T rounded up to a multiple of 32\n"
    "  --batch B           sequences per step, for the per-step totals (default 1)\n"
    "\n"
    "What the run does (default: full training, as `train --backend ane`):\n"
    "  --lora-rank R       LoRA fine-tuning over a frozen base, as `finetune --backend ane`\n"
    "  --lora-targets LIST modules with adapters: q,k,v,o,gate,up,down, attn, mlp or all\n"
    "                      (default q,k,v,o; needs --lora-rank)\n"
    "  --lora-dropout P    LoRA dropout (any P in (0, 1) gives the same kernels: one 0/1 mask input\n"
    "                      per module)\n"
    "  --int8              an int8 frozen base (finetune --int8, eval --int8): its row scales are\n"
    "                      applied in the kernels. Without --lora-rank the run is forward-only.\n"
    "  --forward-only      the steps of `eval --backend ane`: layer_fwd only (both kernels are\n"
    "                      still compiled)\n"
    "  --ane-limits strict|probed\n"
    "                      the rules each kernel is checked against (default strict, as train;\n"
    "                      probed: only what was measured to fail on real chips)\n"
    "\n"
    "Output:\n"
    "  --dump DIR          also write each kernel as the framework is given it,\n"
    "                      DIR/<kernel>/model.mil and DIR/<kernel>/weights/<file> (whole MILBlob\n"
    "                      files), and the summary as DIR/summary.txt and DIR/summary.json\n"
    "  --json              print the summary as one JSON object instead of text\n"
    "\n"
    "Exits 0 when every kernel passes the limits, 1 when one is refused (the summary names the\n"
    "rule, the tensor and its shape) or the model cannot be planned at all (the message says which\n"
    "dimension does not fit).\n"
    "\n"
    "examples:\n"
    "  anetrain ane-plan --model qwen3-0.6b --seq 1024\n"
    "  anetrain ane-plan --model stories110m --lora-rank 8 --lora-targets all --lora-dropout 0.1\n"
    "  anetrain ane-plan --model Qwen3-0.6B/ --int8 --lora-rank 8 --dump plan/    # then: ls plan/\n";

static double mb(double bytes) { return bytes / 1e6; }

/* The run's kind in words: "full training", "LoRA r8 on q,k,v,o with dropout, over an int8 base", ... */
static void describe_run(const AnePlanReport *r, const char *targets, char *buf, size_t n) {
    const AneLayerPlan *p = &r->plan;
    int k = 0;
    if (p->lora_rank) {
        int dropout = 0;
        for (int m = 0; m < ANE_LORA_MODULES; m++) dropout |= p->reg[AR_LORA_MASK + m].n > 0;
        k = snprintf(buf, n, "LoRA r%d on %s%s", p->lora_rank, targets, dropout ? " with dropout" : "");
    } else {
        k = snprintf(buf, n, "%s", r->training ? "full training" : "forward only");
    }
    if (p->int8_base && k > 0 && (size_t)k < n) k += snprintf(buf + k, n - (size_t)k, ", over an int8 base");
    if (p->lora_rank && !r->training && k > 0 && (size_t)k < n) snprintf(buf + k, n - (size_t)k, ", forward only");
}

/* The plan's per-step work as the cost estimate takes it (backend/ane/cost.h). */
static AneStepWork step_work(const AnePlanCost *c) {
    AneStepWork w = {(double)c->evals, c->flops,
                     c->surface_bytes_in + c->surface_bytes_out + c->weight_bytes + c->act_bytes + c->read_bytes};
    return w;
}

static void print_text(FILE *f, const char *model, const ModelConfig *cfg, const AnePlanReport *r, const char *run,
                       int seq) {
    const AneLayerPlan *p = &r->plan;
    const AnePlanCost *c = &r->cost;
    const char *lim = ane_limits_name(r->limits);
    fprintf(f, "model        %s: dim %d, hidden %d, %d layers, %d heads (%d kv), head_dim %d%s\n", model, cfg->dim,
            cfg->hidden_dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim,
            cfg->qk_norm ? ", q/k-norm" : "");
    fprintf(f, "sequence     %d tokens (the kernels' S = %d)%s\n", seq, p->S,
            seq > cfg->max_seq_len ? " -- above the model's max_seq_len: train and eval refuse it" : "");
    fprintf(f, "run          %s, batch %d\n", run, r->batch);
    fprintf(f, "limits       %s (docs/ane-facts.md section 9)\n", lim);
    fprintf(f, "compiles     %d per run, whatever the number of layers (budget: about %d per process)\n",
            r->n_kernels, ANE_COMPILE_BUDGET_DEFAULT);
    fprintf(f, "\nkernels (each evaluated once per layer and sequence%s):\n",
            r->training ? "" : "; layer_bwd never, forward only");
    for (int i = 0; i < r->n_kernels; i++) {
        const AneKernelReport *k = &r->kernels[i];
        fprintf(f, "  %-10s input [1, %d, 1, %d] %.1f MB -> output [1, %d, 1, %d] %.1f MB; %.2f GFLOP, %d ops\n",
                k->k.name, k->k.in.channels, k->k.in.spatial, mb(2.0 * k->k.in.channels * k->k.in.spatial),
                k->k.out.channels, k->k.out.spatial, mb(2.0 * k->k.out.channels * k->k.out.spatial), k->k.flops / 1e9,
                k->n_ops);
        if (k->max_axis)
            fprintf(f, "  %-10s largest axis %lld: '%s' %s\n", "", (long long)k->max_axis, k->max_axis_value,
                    k->max_axis_type);
        if (k->pass) fprintf(f, "  %-10s check PASS (%s)\n", "", lim);
        else fprintf(f, "  %-10s check FAIL (%s): %s\n", "", lim, k->check);
    }
    fprintf(f, "\ninput surface [1, %d, 1, %d] (one per layer, read by both kernels; %d rows = %s):\n", p->in_C,
            p->in_S, p->in_C, p->in_C == p->C ? "dim" : "a multiple of dim: dim rows would be wider than the limit");
    fprintf(f, "  %-12s %-14s %9s  %-28s %s\n", "region", "values", "count", "layout", "at row, column");
    for (int id = 0; id < AR_COUNT; id++) {
        const AneRegion *g = &p->reg[id];
        if (!g->n) continue;
        char shape[32], layout[48];
        snprintf(shape, sizeof shape, "[%d][%d]", g->a, g->b);
        if (g->blocks > 1) snprintf(layout, sizeof layout, "%d blocks of %d x %d", g->blocks, g->rows, g->width);
        else snprintf(layout, sizeof layout, "%d x %d", g->rows, g->width);
        fprintf(f, "  %-12s %-14s %9lld  %-28s %d, %d\n", ane_region_name(id), shape, g->n, layout, g->row, g->off);
    }
    fprintf(f, "\nper step (%d layers x %d sequence%s):\n", r->n_layers, r->batch, r->batch > 1 ? "s" : "");
    fprintf(f, "  evaluations      %lld (%lld per layer and sequence)\n", c->evals, c->evals_per_layer_seq);
    fprintf(f, "  bytes staged     %.1f MB (weights %.1f MB, activations %.1f MB)\n",
            mb(c->weight_bytes + c->act_bytes), mb(c->weight_bytes), mb(c->act_bytes));
    if (c->base_bytes_once > 0)
        fprintf(f, "  frozen base      %.1f MB staged once, at the first step\n", mb(c->base_bytes_once));
    fprintf(f, "  bytes read back  %.1f MB\n", mb(c->read_bytes));
    fprintf(f, "  device surfaces  read %.1f MB, written %.1f MB (whole surfaces per evaluation)\n",
            mb(c->surface_bytes_in), mb(c->surface_bytes_out));
    fprintf(f, "  device FLOPs     %.1f GFLOP\n", c->flops / 1e9);
    AneStepWork work = step_work(c);
    char estimate[1024];
    ane_cost_format(&work, "  ", estimate, sizeof estimate);
    fprintf(f, "\n%s", estimate);
    fprintf(f, "\nlargest axis %lld (strict limits: at most 16384; probed: input width 16384, any axis 65536)\n",
            (long long)r->max_axis);
    fprintf(f, "result       %s\n", r->all_pass ? "PASS: every kernel passes the limits" : "FAIL: a kernel is refused");
}

static cJSON *to_json(const char *model, const ModelConfig *cfg, const AnePlanReport *r, const char *run, int seq) {
    const AneLayerPlan *p = &r->plan;
    const AnePlanCost *c = &r->cost;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", model);
    cJSON *m = cJSON_AddObjectToObject(j, "config");
    cJSON_AddNumberToObject(m, "dim", cfg->dim);
    cJSON_AddNumberToObject(m, "hidden_dim", cfg->hidden_dim);
    cJSON_AddNumberToObject(m, "n_layers", cfg->n_layers);
    cJSON_AddNumberToObject(m, "n_heads", cfg->n_heads);
    cJSON_AddNumberToObject(m, "n_kv_heads", cfg->n_kv_heads);
    cJSON_AddNumberToObject(m, "head_dim", cfg->head_dim);
    cJSON_AddNumberToObject(j, "seq", seq);
    cJSON_AddNumberToObject(j, "S", p->S);
    cJSON_AddNumberToObject(j, "batch", r->batch);
    cJSON_AddStringToObject(j, "run", run);
    cJSON_AddBoolToObject(j, "training", r->training);
    cJSON_AddStringToObject(j, "limits", ane_limits_name(r->limits));
    cJSON_AddNumberToObject(j, "compiles", r->n_kernels);
    cJSON *ks = cJSON_AddArrayToObject(j, "kernels");
    for (int i = 0; i < r->n_kernels; i++) {
        const AneKernelReport *k = &r->kernels[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", k->k.name);
        int in[4] = {1, k->k.in.channels, 1, k->k.in.spatial}, out[4] = {1, k->k.out.channels, 1, k->k.out.spatial};
        cJSON_AddItemToObject(o, "input", cJSON_CreateIntArray(in, 4));
        cJSON_AddItemToObject(o, "output", cJSON_CreateIntArray(out, 4));
        cJSON_AddNumberToObject(o, "flops", k->k.flops);
        cJSON_AddNumberToObject(o, "ops", k->n_ops);
        cJSON_AddNumberToObject(o, "blobs", k->k.n_blobs);
        cJSON_AddNumberToObject(o, "max_axis", (double)k->max_axis);
        cJSON_AddStringToObject(o, "max_axis_value", k->max_axis_value);
        cJSON_AddStringToObject(o, "max_axis_type", k->max_axis_type);
        cJSON_AddBoolToObject(o, "pass", k->pass);
        if (k->rule) cJSON_AddStringToObject(o, "rule", k->rule);
        else cJSON_AddNullToObject(o, "rule");
        if (!k->pass) cJSON_AddStringToObject(o, "refusal", k->check);
        cJSON_AddBoolToObject(o, "training_only", k->k.training_only);
        cJSON_AddItemToArray(ks, o);
    }
    cJSON *regs = cJSON_AddArrayToObject(j, "regions");
    for (int id = 0; id < AR_COUNT; id++) {
        const AneRegion *g = &p->reg[id];
        if (!g->n) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", ane_region_name(id));
        int shape[2] = {g->a, g->b};
        cJSON_AddItemToObject(o, "shape", cJSON_CreateIntArray(shape, 2));
        cJSON_AddNumberToObject(o, "row", g->row);
        cJSON_AddNumberToObject(o, "column", g->off);
        cJSON_AddNumberToObject(o, "rows", g->rows);
        cJSON_AddNumberToObject(o, "width", g->width);
        cJSON_AddNumberToObject(o, "blocks", g->blocks);
        cJSON_AddItemToArray(regs, o);
    }
    cJSON *s = cJSON_AddObjectToObject(j, "per_step");
    cJSON_AddNumberToObject(s, "evaluations", (double)c->evals);
    cJSON_AddNumberToObject(s, "evaluations_per_layer_and_sequence", (double)c->evals_per_layer_seq);
    cJSON_AddNumberToObject(s, "bytes_staged", c->weight_bytes + c->act_bytes);
    cJSON_AddNumberToObject(s, "bytes_staged_weights", c->weight_bytes);
    cJSON_AddNumberToObject(s, "bytes_staged_activations", c->act_bytes);
    cJSON_AddNumberToObject(s, "bytes_frozen_base_once", c->base_bytes_once);
    cJSON_AddNumberToObject(s, "bytes_read_back", c->read_bytes);
    cJSON_AddNumberToObject(s, "surface_bytes_read_by_device", c->surface_bytes_in);
    cJSON_AddNumberToObject(s, "surface_bytes_written_by_device", c->surface_bytes_out);
    cJSON_AddNumberToObject(s, "device_flops", c->flops);
    /* the device-side ESTIMATE per chip (docs/ane-facts.md section 10), not a measurement */
    cJSON *est = cJSON_AddArrayToObject(j, "estimate_device_ms");
    AneStepWork work = step_work(c);
    int n_chips;
    const AneChipFigures *chips = ane_cost_chips(&n_chips);
    for (int i = 0; i < n_chips; i++) {
        AneCostEstimate e;
        ane_cost_estimate(&work, &chips[i], &e);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "chip", chips[i].chip);
        cJSON_AddNumberToObject(o, "low", e.ms_lo);
        cJSON_AddNumberToObject(o, "high", e.ms_hi);
        cJSON_AddItemToArray(est, o);
    }
    cJSON_AddNumberToObject(j, "max_axis", (double)r->max_axis);
    cJSON_AddBoolToObject(j, "pass", r->all_pass);
    return j;
}

/* Writes text (NUL-terminated) to path atomically. */
static int write_text(const char *path, const char *text, Err *err) {
    AtomicFile f;
    if (atomic_file_open(&f, path, err)) return -1;
    if (atomic_file_write(&f, text, strlen(text), err)) {
        atomic_file_abort(&f);
        return -1;
    }
    return atomic_file_commit(&f, err);
}

int cli_ane_plan(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(ane_plan_help, stdout);
        return 0;
    }
    Err err = {{0}};
    const char *model = NULL, *targets = NULL, *limits = "strict", *dump = NULL;
    int seq = 0, batch = 1, rank = 0, int8 = 0, forward_only = 0, json = 0, rank_given = 0, dropout_given = 0;
    float dropout = 0;
    const ArgSpec specs[] = {
        {"--model", ARG_STR, &model, 0, 0, NULL},
        {"--seq", ARG_INT, &seq, 1, 1 << 20, NULL},
        {"--batch", ARG_INT, &batch, 1, 65536, NULL},
        {"--lora-rank", ARG_INT, &rank, 1, 4096, &rank_given},
        {"--lora-targets", ARG_STR, &targets, 0, 0, NULL},
        {"--lora-dropout", ARG_FLOAT, &dropout, 0, 0.999, &dropout_given},
        {"--int8", ARG_BOOL, &int8, 0, 0, NULL},
        {"--forward-only", ARG_BOOL, &forward_only, 0, 0, NULL},
        {"--ane-limits", ARG_STR, &limits, 0, 0, NULL},
        {"--dump", ARG_STR, &dump, 0, 0, NULL},
        {"--json", ARG_BOOL, &json, 0, 0, NULL},
    };
    if (args_parse(argc, argv, specs, (int)(sizeof specs / sizeof specs[0]), NULL, 0, NULL, &err) != 0)
        return cli_fail("ane-plan", &err);
    if (!model) return err_set(&err, "--model: a preset or a model path is required"), cli_fail("ane-plan", &err);
    AneLimits lim;
    if (ane_limits_parse("--ane-limits", limits, &lim, &err) != 0) return cli_fail("ane-plan", &err);
    if (!rank_given && (targets || dropout_given)) {
        err_set(&err, "%s: needs --lora-rank (the adapters' rank)", targets ? "--lora-targets" : "--lora-dropout");
        return cli_fail("ane-plan", &err);
    }
    unsigned mods = 0;
    if (rank_given && lora_parse_targets(targets ? targets : "q,k,v,o", &mods, &err) != 0)
        return cli_fail("ane-plan", &err);
    ModelConfig cfg;
    Err perr = {{0}};
    if (config_from_preset(&cfg, model, &perr) != 0 && model_config_load_any(model, &cfg, &err) != 0) {
        err_wrap(&err, "--model: not a preset (%s) and not a model file", config_preset_names());
        return cli_fail("ane-plan", &err);
    }
    if (seq == 0) seq = cfg.max_seq_len < 256 ? cfg.max_seq_len : 256;
    int training = !forward_only && !(int8 && !rank);
    AnePlanSpec spec = {seq, rank, mods, rank && dropout > 0, int8, 0};
    AnePlanReport r;
    if (ane_plan_inspect(&cfg, &spec, batch, training, lim, &r, &err) != 0) return cli_fail("ane-plan", &err);
    char run[160];
    describe_run(&r, targets ? targets : "q,k,v,o", run, sizeof run);
    int rc = r.all_pass ? 0 : 1;
    cJSON *j = to_json(model, &cfg, &r, run, seq);
    char *js = j ? cJSON_Print(j) : NULL;
    if (json) {
        if (js) puts(js);
    } else {
        print_text(stdout, model, &cfg, &r, run, seq);
    }
    if (dump) {
        char path[1100], *text = NULL;
        size_t size = 0;
        FILE *mf = open_memstream(&text, &size);
        if (mf) {
            print_text(mf, model, &cfg, &r, run, seq);
            fclose(mf);
        }
        int drc = ane_plan_dump(&r, dump, &err);
        if (drc == 0 && (!text || !js)) drc = err_set(&err, "out of memory writing the summary");
        if (drc == 0) {
            snprintf(path, sizeof path, "%s/summary.txt", dump);
            drc = write_text(path, text, &err);
        }
        if (drc == 0) {
            snprintf(path, sizeof path, "%s/summary.json", dump);
            drc = write_text(path, js, &err);
        }
        free(text);
        if (drc != 0) rc = cli_fail("ane-plan", &err);
        else if (!json) printf("dumped       %d kernels (model.mil, weights/) and summary.txt, summary.json to %s/\n",
                               r.n_kernels, dump);
    }
    cJSON_free(js);
    cJSON_Delete(j);
    ane_plan_report_free(&r);
    return rc;
}
