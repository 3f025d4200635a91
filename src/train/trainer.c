/*
** trainer.c — the training loop's steps (see trainer.h). Nothing here prints or exits.
*/
#include "trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../io/model_file.h"
#include "../io/peft.h"
#include "../util/clock.h"
#include "../util/dist.h"
#include "../util/fileio.h"
#include "../util/memory.h"
#include "../util/parallel.h"
#include "evaluate.h"
#include "lora_grad.h"
#include "masked.h"

uint64_t lora_step_dropout_seed(uint64_t seed, uint64_t step, int micro) {
    return lora_splitmix(lora_splitmix(lora_splitmix(seed ^ 0x6c6f7261ull) ^ step) ^ (uint64_t)micro);
}

static int check_options(const TrainOptions *o, const ModelConfig *cfg, Err *err) {
    if (o->batch < 1) return err_set(err, "--batch: expected a positive integer, found %d", o->batch);
    if (o->seq < 1) return err_set(err, "--seq: expected a positive integer, found %d", o->seq);
    if (o->seq > cfg->max_seq_len)
        return err_set(err, "--seq: expected at most the model's max_seq_len %d, found %d", cfg->max_seq_len, o->seq);
    if (o->accum < 1) return err_set(err, "--accum: expected a positive integer, found %d", o->accum);
    if (o->steps < 0) return err_set(err, "--steps: expected a non-negative integer, found %ld", o->steps);
    if (o->warmup < 0) return err_set(err, "--warmup: expected a non-negative integer, found %ld", o->warmup);
    if (!(o->lr > 0) || o->lr > 10) return err_set(err, "--lr: expected a value in (0, 10], found %g", (double)o->lr);
    if (!(o->min_lr >= 0) || o->min_lr > o->lr)
        return err_set(err, "--min-lr: expected a value in [0, lr=%g], found %g", (double)o->lr, (double)o->min_lr);
    if (!(o->clip >= 0)) return err_set(err, "--clip: expected a value >= 0 (0 disables), found %g", (double)o->clip);
    if (!(o->adam.weight_decay >= 0))
        return err_set(err, "--wd: expected a value >= 0, found %g", (double)o->adam.weight_decay);
    if (!(o->adam.beta1 >= 0 && o->adam.beta1 < 1))
        return err_set(err, "--beta1: expected a value in [0, 1), found %g", (double)o->adam.beta1);
    if (!(o->adam.beta2 >= 0 && o->adam.beta2 < 1))
        return err_set(err, "--beta2: expected a value in [0, 1), found %g", (double)o->adam.beta2);
    if (!(o->adam.eps > 0)) return err_set(err, "--eps: expected a value > 0, found %g", (double)o->adam.eps);
    if (!(o->val_frac >= 0 && o->val_frac < 1))
        return err_set(err, "--val-frac: expected a value in [0, 1), found %g", o->val_frac);
    if (o->eval_batches < 0)
        return err_set(err, "--eval-batches: expected an integer >= 0, found %d", o->eval_batches);
    if (o->loss_scaling != LOSS_SCALE_OFF && !(o->loss_scale_init >= 1 && o->loss_scale_init <= 16777216.0f))
        return err_set(err, "--loss-scale: expected a scale in [1, 2^24], found %g", (double)o->loss_scale_init);
    if (o->loss_scaling == LOSS_SCALE_DYNAMIC && o->loss_scale_window < 1)
        return err_set(err, "--loss-scale-window: expected a positive integer, found %d", o->loss_scale_window);
    return 0;
}

/* LoRA: a fresh adapter (PEFT's init, so the model starts as the base), its gradients and
** moments. */
static int lora_setup(Trainer *tr, Err *err) {
    const TrainOptions *o = &tr->opt;
    if (lora_layout(&tr->lora, &tr->layout.cfg, &o->lora, "LoRA", err) != 0) return -1;
    size_t n = tr->lora.n_floats;
    tr->adapter = err_malloc(n * sizeof(float), "LoRA adapter", err);
    if (!tr->adapter) return -1;
    tr->adapter_grads = err_calloc(n, sizeof(float), "LoRA adapter gradients", err);
    if (!tr->adapter_grads) return -1;
    tr->adapter_m = err_calloc(n, sizeof(float), "LoRA AdamW first moment", err);
    if (!tr->adapter_m) return -1;
    tr->adapter_v = err_calloc(n, sizeof(float), "LoRA AdamW second moment", err);
    if (!tr->adapter_v) return -1;
    Rng rng;
    rng_seed(&rng, o->seed ^ 0x10ada9ull);
    lora_init(&tr->lora, tr->adapter, &rng);
    lora_optim_layout(&tr->lora, &tr->lora_optim);
    return 0;
}

/* What a LoRA training state records of this run (trainer_save; checked by lora_resume). */
static LoraRunState lora_run_state(const Trainer *tr) {
    const TrainOptions *o = &tr->opt;
    LoraRunState rs;
    memset(&rs, 0, sizeof rs);
    rs.base = tr->layout.cfg;
    rs.base_crc32 = tr->base_crc32;
    rs.lora = o->lora;
    rs.int8 = o->int8 ? 1 : 0;
    rs.seed = o->seed;
    rs.batch = o->batch;
    rs.seq = o->seq;
    rs.accum = o->accum;
    rs.order = o->order;
    rs.val_frac = o->val_frac;
    if (tr->has_examples) { /* the rows' counted targets and crc32 stand for the token stream's */
        rs.train_tokens = tr->train_rows_counted;
        rs.train_crc32 = tr->train_rows_crc32;
    } else {
        rs.train_tokens = tr->loader.n_train;
        rs.train_crc32 = ckpt_crc32_words(tr->data.tokens, tr->loader.n_train);
    }
    rs.state = tr->state;
    rs.state.loader = tr->loader.state;
    return rs;
}

/* 1 (err filled) if a run saved by `saved`'s number of processes is resumed by `world` others:
** the global batch (processes x batch x accum) would change under the run. */
static int ranks_refused(const char *path, const TrainState *saved, int world, Err *err) {
    int then = saved->ranks > 1 ? saved->ranks : 1, now = world > 1 ? world : 1;
    if (then == now) return 0;
    err_set(err, "%s: field ranks: saved by a run of %d process%s, resumed by %d: a data-parallel run resumes with "
                 "the number of processes it was saved with (mpirun -np %d%s)", path, then, then > 1 ? "es" : "", now,
            then, then > 1 ? "" : ", or without mpirun");
    return 1;
}

/* LoRA resume: loads the training state at lora_resume_path, checks that it is this run (the
** same base, LoRA config and data stream) and takes its adapter, moments and TrainState. */
static int lora_resume(Trainer *tr, Err *err) {
    const char *path = tr->opt.lora_resume_path;
    LoraRunState saved;
    size_t n;
    float *adapter, *m, *v;
    if (lora_state_load(path, &saved, &n, &adapter, &m, &v, err) != 0) return err_wrap(err, "--resume");
    LoraRunState now = lora_run_state(tr);
    char diff[256];
    int rc = 0;
    if (config_difference(&now.base, &saved.base, diff, sizeof diff))
        rc = err_set(err, "%s: not the base model this run started from (expected: the base loaded now; found: "
                          "the state's): base config %s", path, diff);
    else if (saved.base_crc32 != now.base_crc32)
        rc = err_set(err, "%s: field base_crc32: expected %08x (the parameters of the base loaded now%s%s), found "
                          "%08x: not the base model this run started from", path, now.base_crc32,
                     tr->opt.init_path ? ", " : "", tr->opt.init_path ? tr->opt.init_path : "", saved.base_crc32);
    else if (saved.lora.rank != now.lora.rank)
        rc = err_set(err, "%s: field rank: expected %d, found %d", path, now.lora.rank, saved.lora.rank);
    else if (saved.lora.alpha != now.lora.alpha)
        rc = err_set(err, "%s: field alpha: expected %g, found %g", path, (double)now.lora.alpha,
                     (double)saved.lora.alpha);
    else if (saved.lora.dropout != now.lora.dropout)
        rc = err_set(err, "%s: field dropout: expected %g, found %g", path, (double)now.lora.dropout,
                     (double)saved.lora.dropout);
    else if (saved.lora.rslora != now.lora.rslora)
        rc = err_set(err, "%s: field rslora: expected %d, found %d", path, now.lora.rslora, saved.lora.rslora);
    else if (saved.lora.targets != now.lora.targets) {
        char want[64], found[64];
        lora_targets_format(now.lora.targets, want, sizeof want);
        lora_targets_format(saved.lora.targets, found, sizeof found);
        rc = err_set(err, "%s: field targets: expected %s, found %s", path, want, found);
    } else if (saved.int8 != now.int8)
        rc = err_set(err, "%s: field int8: expected %d, found %d", path, now.int8, saved.int8);
    else if (saved.seed != now.seed)
        rc = err_set(err, "%s: field seed: expected %llu, found %llu", path, (unsigned long long)now.seed,
                     (unsigned long long)saved.seed);
    else if (saved.batch != now.batch)
        rc = err_set(err, "%s: field batch: expected %d, found %d", path, now.batch, saved.batch);
    else if (saved.seq != now.seq)
        rc = err_set(err, "%s: field seq: expected %d, found %d", path, now.seq, saved.seq);
    else if (saved.accum != now.accum)
        rc = err_set(err, "%s: field accum: expected %d, found %d", path, now.accum, saved.accum);
    else if (saved.order != now.order)
        rc = err_set(err, "%s: field order: expected %d, found %d", path, (int)now.order, (int)saved.order);
    else if (saved.val_frac != now.val_frac)
        rc = err_set(err, "%s: field val_frac: expected %g, found %g", path, now.val_frac, saved.val_frac);
    else if (tr->has_examples && (saved.train_tokens != now.train_tokens || saved.train_crc32 != now.train_crc32))
        rc = err_set(err, "%s: field train_tokens/train_crc32: expected %llu counted targets, crc32 %08x (the "
                          "training rows of %s: its examples as rendered, masked (--mask-prompt) and truncated), "
                          "found %llu counted targets, crc32 %08x: not the data this run trained on", path,
                     (unsigned long long)now.train_tokens, now.train_crc32, tr->opt.data_path,
                     (unsigned long long)saved.train_tokens, saved.train_crc32);
    else if (saved.train_tokens != now.train_tokens || saved.train_crc32 != now.train_crc32)
        rc = err_set(err, "%s: field train_tokens/train_crc32: expected %llu tokens, crc32 %08x (the training split "
                          "of %s), found %llu tokens, crc32 %08x: not the data this run trained on", path,
                     (unsigned long long)now.train_tokens, now.train_crc32, tr->opt.data_path,
                     (unsigned long long)saved.train_tokens, saved.train_crc32);
    else if (n != tr->lora.n_floats)
        rc = err_set(err, "%s: field n_floats: expected %zu, found %zu", path, tr->lora.n_floats, n);
    else if (ranks_refused(path, &saved.state, tr->world, err))
        rc = -1;
    if (rc == 0) {
        memcpy(tr->adapter, adapter, n * sizeof(float));
        memcpy(tr->adapter_m, m, n * sizeof(float));
        memcpy(tr->adapter_v, v, n * sizeof(float));
        tr->state = saved.state;
    }
    free(adapter);
    free(m);
    free(v);
    return rc;
}

void train_options_default(TrainOptions *o) {
    memset(o, 0, sizeof *o);
    o->val_frac = 0.05;
    o->order = ORDER_RANDOM;
    o->batch = 8;
    o->seq = 256;
    o->accum = 1;
    o->steps = 1000;
    o->lr = 5e-4f;
    o->clip = 1.0f;
    o->adam = (AdamWConfig){0.9f, 0.95f, 1e-8f, 0.1f};
    o->seed = 1337;
    o->eval_batches = 20;
    o->loss_scaling = LOSS_SCALE_OFF;
    o->loss_scale_init = 65536.0f;
    o->loss_scale_window = 1000;
    o->backend = "cpu";
    backend_ane_default_options(&o->ane);
}

/* ---------------------------------------------------------------- fine-tuning examples */

/* TrainOptions.train_examples: the training rows, and the validation rows (valid_examples, or
** the last val_frac of the training examples). */
static int examples_setup(Trainer *tr, Err *err) {
    const TrainOptions *o = &tr->opt;
    const RenderedExamples *r = o->train_examples;
    int V = tr->layout.cfg.vocab_size;
    const RenderedExamples *all[2] = {r, o->valid_examples};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; all[k] && i < all[k]->n; i++)
            if (all[k]->ids[i] < 0 || all[k]->ids[i] >= V)
                return err_set(err, "%s: token id %d is outside the model's vocabulary of %d",
                               k ? o->valid_path : o->data_path, all[k]->ids[i], V);
    size_t n_train = r->n_examples, n_val = 0;
    if (!o->valid_examples && o->val_frac > 0) {
        n_val = (size_t)((double)r->n_examples * o->val_frac + 0.5);
        if (n_val == 0) n_val = 1;
        if (n_val >= r->n_examples)
            return err_set(err, "%s: %zu examples are too few to hold out %g of them for validation (give a "
                                "valid.jsonl, or --val-frac 0)", o->data_path, r->n_examples, o->val_frac);
        n_train -= n_val;
    }
    int32_t pad = r->n ? r->ids[r->n - 1] : 0; /* any valid id: no counted position depends on padding */
    tr->has_examples = 1;
    if (example_batches_init(&tr->train_rows, r, 0, n_train, o->batch, o->seq, o->mask_prompt, pad, o->data_path,
                             err) != 0)
        return -1;
    if (tr->train_rows.n_batches == 0)
        return err_set(err, "%s: %zu training examples kept, fewer than one batch of %d (lower --batch)", o->data_path,
                       tr->train_rows.n_kept, o->batch);
    /* the rows' identity for a LoRA training state, B rows at a time through the input buffers */
    uint32_t crc = 0;
    size_t T = (size_t)o->seq;
    for (size_t first = 0; first < tr->train_rows.n_kept; first += (size_t)o->batch) {
        size_t n = tr->train_rows.n_kept - first < (size_t)o->batch ? tr->train_rows.n_kept - first : (size_t)o->batch;
        example_batches_fill(&tr->train_rows, first, (int)n, tr->inputs, tr->targets);
        for (size_t i = 0; i < n; i++) {
            crc = ckpt_crc32_words_update(crc, tr->inputs + i * T, T);
            crc = ckpt_crc32_words_update(crc, tr->targets + i * T, T);
        }
    }
    tr->train_rows_counted = (uint64_t)tr->train_rows.n_counted;
    tr->train_rows_crc32 = crc;
    const RenderedExamples *vr = o->valid_examples ? o->valid_examples : r;
    size_t v0 = o->valid_examples ? 0 : n_train, v1 = o->valid_examples ? vr->n_examples : r->n_examples;
    if (v1 > v0) {
        if (example_batches_init(&tr->valid_rows, vr, v0, v1, o->batch, o->seq, o->mask_prompt, pad,
                                 o->valid_examples ? o->valid_path : o->data_path, err) != 0)
            return -1;
        tr->has_valid_rows = 1;
    }
    return 0;
}

/* The counted targets of the step's n_micro micro-batches (every rank's: N*accum), from the first. */
static long long examples_step_counted(Trainer *tr, int n_micro) {
    const TrainOptions *o = &tr->opt;
    uint64_t k0 = tr->loader.state.rows / (uint64_t)o->batch;
    long long n = 0;
    for (int a = 0; a < n_micro; a++) {
        size_t first = example_batches_train_first(&tr->train_rows, o->seed, k0 + (uint64_t)a);
        n += example_batches_counted(&tr->train_rows, first, o->batch);
    }
    return n; /* > 0: every kept row counts a target */
}

/* Passes over `rows` training rows (the other ranks' part of the step, loader.h). */
static void skip_train_rows(Trainer *tr, uint64_t rows) {
    if (tr->has_examples) tr->loader.state.rows += rows;
    else loader_skip_train(&tr->loader, rows);
}

static void examples_next_train(Trainer *tr, int32_t *inputs, int32_t *targets) {
    const TrainOptions *o = &tr->opt;
    uint64_t k = tr->loader.state.rows / (uint64_t)o->batch;
    size_t first = example_batches_train_first(&tr->train_rows, o->seed, k);
    example_batches_fill(&tr->train_rows, first, o->batch, inputs, targets);
    tr->loader.state.rows += (uint64_t)o->batch;
}

/* The mean loss over the validation rows' counted targets (eval_batches batches of them, if > 0). */
static int examples_eval(Trainer *tr, Backend *be, int T, int32_t *inputs, int32_t *targets, double *val_loss,
                         Err *err) {
    const TrainOptions *o = &tr->opt;
    if (!tr->has_valid_rows)
        return err_set(err, "%s: no validation examples (no valid.jsonl, and --val-frac is 0)", o->data_path);
    if (T != o->seq) return err_set(err, "--eval-seq: examples are evaluated at --seq %d only", o->seq);
    return eval_examples_loss(be, tr->params, tr->adapter, &tr->valid_rows, (size_t)o->eval_batches, inputs, targets,
                              val_loss, NULL, NULL, err);
}

int trainer_eval_examples(Trainer *tr, const RenderedExamples *r, const char *name, double *loss,
                          ExampleBatches *rows, Err *err) {
    const TrainOptions *o = &tr->opt;
    int32_t pad = r->n ? r->ids[r->n - 1] : 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->ids[i] < 0 || r->ids[i] >= tr->layout.cfg.vocab_size)
            return err_set(err, "%s: token id %d is outside the model's vocabulary of %d", name, r->ids[i],
                           tr->layout.cfg.vocab_size);
    if (example_batches_init(rows, r, 0, r->n_examples, o->batch, o->seq, o->mask_prompt, pad, name, err) != 0)
        return -1;
    int rc = eval_examples_loss(tr->backend, tr->params, tr->adapter, rows, 0, tr->inputs, tr->targets, loss, NULL,
                                NULL, err);
    free(rows->order); /* the counts stay for the caller's message */
    free(rows->counted);
    free(rows->perm);
    rows->order = NULL;
    rows->counted = NULL;
    rows->perm = NULL;
    return rc;
}

int trainer_init(Trainer *tr, const TrainOptions *opt, Err *err) {
    memset(tr, 0, sizeof *tr);
    tr->opt = *opt;
    int have_moments = 0;
    int lora = opt->lora.rank > 0;
    if (opt->int8 && !lora)
        return err_set(err, "--int8: int8 weights cannot train: it takes a LoRA run (the base frozen, an adapter "
                            "trained) or a forward-only command (eval, sample)");
    if (lora && opt->resume_path)
        return err_set(err, "--resume %s: a LoRA run resumes from its LoRA training state (lora_resume_path), not "
                            "from a full-training checkpoint", opt->resume_path);
    if (opt->lora_resume_path && !lora)
        return err_set(err, "--resume %s: resuming a LoRA training state takes a LoRA run (lora.rank > 0)",
                       opt->lora_resume_path);
    if (opt->resume_path) {
        if (ckpt_load(opt->resume_path, &tr->layout, &tr->params, &tr->m, &tr->v, &tr->state, err) != 0)
            return err_wrap(err, "--resume");
        if (!tr->m || !tr->v) {
            trainer_free(tr);
            return err_set(err, "%s: checkpoint holds no optimizer moments, so it cannot be resumed (use --init)",
                           opt->resume_path);
        }
        if (ranks_refused(opt->resume_path, &tr->state, dist_size(), err)) {
            trainer_free(tr);
            return err_wrap(err, "--resume");
        }
        have_moments = 1;
    } else if (opt->init_path) {
        if (model_load_any(opt->init_path, &tr->layout, &tr->params, err) != 0) return -1;
    } else {
        if (config_validate(&opt->cfg, "model", err) != 0) return -1;
        params_layout(&tr->layout, &opt->cfg);
        tr->params = err_malloc(tr->layout.n_floats * sizeof(float), "parameters", err);
        if (!tr->params) return -1;
        Rng init_rng;
        rng_seed(&init_rng, opt->seed);
        params_init(&tr->layout, tr->params, &init_rng);
    }
    const ModelConfig *cfg = &tr->layout.cfg;
    size_t n = tr->layout.n_floats;
    /* the frozen base's identity, saved with (and checked against) a LoRA training state */
    if (lora) tr->base_crc32 = ckpt_crc32_words(tr->params, n);
    /* seq 0: the default, known only now that the model is: 256, or its maximum if shorter. */
    if (tr->opt.seq == 0) tr->opt.seq = cfg->max_seq_len < 256 ? cfg->max_seq_len : 256;
    opt = &tr->opt;
    if (check_options(opt, cfg, err) != 0) goto fail;
    if (!lora) { /* LoRA computes no gradient of the base */
        tr->grads = err_calloc(n, sizeof(float), "gradients", err);
        if (!tr->grads) goto fail;
    }
    if (lora) {
        if (lora_setup(tr, err) != 0) goto fail;
    } else if (!have_moments) {
        tr->m = err_calloc(n, sizeof(float), "AdamW first moment", err);
        tr->v = err_calloc(n, sizeof(float), "AdamW second moment", err);
        if (!tr->m || !tr->v) goto fail;
    }
    tr->rank = dist_rank();
    tr->world = dist_size();
    tr->state.ranks = tr->world > 1 ? tr->world : 0; /* what trainer_save stores (0: one process, as before) */
    if (tr->world > 1) {
        tr->micro_losses = err_malloc((size_t)(tr->world + 1) * opt->accum * sizeof(double), "micro-batch losses", err);
        if (!tr->micro_losses) goto fail;
    }
    size_t bt = (size_t)opt->batch * opt->seq;
    tr->inputs = err_malloc(bt * sizeof(int32_t), "input batch", err);
    tr->targets = err_malloc(bt * sizeof(int32_t), "target batch", err);
    if (!tr->inputs || !tr->targets) goto fail;
    if (opt->train_examples) {
        if (examples_setup(tr, err) != 0) goto fail;
    } else {
        if (tokfile_load(&tr->data, opt->data_path, cfg->vocab_size, err) != 0) goto fail;
        if (loader_init(&tr->loader, tr->data.tokens, tr->data.n_tokens, opt->val_frac, opt->batch, opt->seq,
                        opt->order, opt->seed, opt->data_path, err) != 0)
            goto fail;
    }
    if (opt->lora_resume_path) {
        if (lora_resume(tr, err) != 0) goto fail;
        tr->loader.state = tr->state.loader;
    } else if (have_moments) {
        tr->loader.state = tr->state.loader;
    } else {
        tr->state.loader = tr->loader.state;
        rng_seed(&tr->state.rng, opt->seed ^ 0x5eedull);
        tr->state.loss_scale = opt->loss_scaling == LOSS_SCALE_OFF ? 1.0f : opt->loss_scale_init;
    }
    if (opt->int8) {
        if (quant_int8_create(&tr->int8, &tr->layout, tr->params, err) != 0) goto fail;
        tr->has_int8 = 1;
        /* the backend reads the int8 copies only: give the fp32 pages back */
        for (int k = 0; k < T_COUNT; k++)
            if (quant_kind_is_int8((TensorKind)k))
                tr->int8_released_bytes += mem_release_pages(tr->params + tr->layout.t[k].offset,
                                                             tr->layout.t[k].numel * sizeof(float));
    }
    if (lora || tr->has_int8) {
        FrozenBase frozen = {lora ? &tr->lora : NULL, tr->has_int8 ? &tr->int8 : NULL};
        tr->backend = backend_create_frozen(opt->backend, &tr->layout, &frozen, opt->batch, opt->seq, &opt->ane, err);
    } else {
        tr->backend = backend_create(opt->backend, &tr->layout, opt->batch, opt->seq, &opt->ane, err);
    }
    if (!tr->backend) goto fail;
    return 0;
fail:
    trainer_free(tr);
    return -1;
}

void trainer_free(Trainer *tr) {
    if (tr->backend) tr->backend->destroy(tr->backend);
    free(tr->params);
    free(tr->grads);
    free(tr->m);
    free(tr->v);
    free(tr->inputs);
    free(tr->targets);
    free(tr->adapter);
    free(tr->adapter_grads);
    free(tr->adapter_m);
    free(tr->adapter_v);
    free(tr->micro_losses);
    if (tr->has_int8) quant_int8_free(&tr->int8);
    tokfile_free(&tr->data);
    example_batches_free(&tr->train_rows);
    example_batches_free(&tr->valid_rows);
    memset(tr, 0, sizeof *tr);
}

/* Largest dynamic scale: beyond 2^24 the scaled fp32 gradients lose nothing more to gain. */
#define LOSS_SCALE_MAX 16777216.0f

/* Data parallel: the step's gradients (the adapter's in a LoRA run) summed over the ranks (as
** fp32, or as bf16 with grad_comm_bf16), and
** *loss_sum <- the sum of every rank's micro-batch losses (micro_losses' own part) in global
** order, from 0, as one process adds them. */
static int reduce_across_ranks(Trainer *tr, double *loss_sum, Err *err) {
    int A = tr->opt.accum;
    float *g = tr->adapter ? tr->adapter_grads : tr->grads;
    size_t n = tr->adapter ? tr->lora.n_floats : tr->layout.n_floats;
    int rc = tr->opt.grad_comm_bf16 ? dist_sum_bf16(g, n, err) : dist_sum_f32(g, n, err);
    if (rc != 0) return err_wrap(err, "step %lld", (long long)tr->state.step + 1);
    double *all = tr->micro_losses, *mine = tr->micro_losses + (size_t)tr->world * A;
    if (dist_allgather_f64(mine, (size_t)A, all, err) != 0)
        return err_wrap(err, "step %lld", (long long)tr->state.step + 1);
    double sum = 0;
    for (int k = 0; k < tr->world * A; k++) sum += all[k];
    *loss_sum = sum;
    return 0;
}

int trainer_step(Trainer *tr, StepStats *stats, Err *err) {
    const TrainOptions *o = &tr->opt;
    TrainState *st = &tr->state;
    size_t n = tr->layout.n_floats;
    float scale = o->loss_scaling == LOSS_SCALE_OFF ? 1.0f : st->loss_scale;
    int world = tr->world > 1 ? tr->world : 1, micro_total = o->accum * world;
    if (tr->grads) memset(tr->grads, 0, n * sizeof(float));
    if (tr->adapter_grads) memset(tr->adapter_grads, 0, tr->lora.n_floats * sizeof(float));
    double loss_sum = 0;
    /* each micro-batch's share of the step's mean: 1/(N*accum) over the ranks' micro-batches
    ** together (loader.h), or (examples) B*T / the step's counted targets over all of them,
    ** applied to the loss as loss_factor / (N*accum) (train/masked.h) */
    float grad_scale = scale / (float)micro_total;
    double loss_factor = 1;
    if (tr->has_examples) {
        double f = masked_factor(o->batch, o->seq, examples_step_counted(tr, micro_total));
        grad_scale = (float)(scale * f);
        loss_factor = f * micro_total;
    }
    /* the rows of the ranks before this one (loader.h) */
    if (world > 1) skip_train_rows(tr, (uint64_t)tr->rank * o->accum * o->batch);
    for (int a = 0; a < o->accum; a++) {
        int g = (world > 1 ? tr->rank * o->accum : 0) + a; /* the micro-batch's place in the global batch */
        if (tr->has_examples) examples_next_train(tr, tr->inputs, tr->targets);
        else loader_next_train(&tr->loader, tr->inputs, tr->targets);
        double loss;
        StepArgs args = {tr->params, tr->grads, tr->adapter, tr->adapter_grads, tr->inputs, tr->targets,
                         o->batch, o->seq, grad_scale, NULL,
                         tr->adapter ? lora_step_dropout_seed(o->seed, st->step, g) : 0};
        if (tr->backend->step(tr->backend, &args, &loss, err) != 0) return -1;
        loss_sum += loss * loss_factor;
        if (world > 1) tr->micro_losses[(size_t)world * o->accum + a] = loss * loss_factor;
    }
    stats->t_comm = 0;
    if (world > 1) {
        skip_train_rows(tr, (uint64_t)(world - 1 - tr->rank) * o->accum * o->batch);
        double tc = now_seconds();
        if (reduce_across_ranks(tr, &loss_sum, err) != 0) return -1;
        stats->t_comm = now_seconds() - tc;
    }
    long step = (long)st->step; /* 0-based index of this step */
    float lr = lr_schedule(step, o->steps, o->warmup, o->lr, o->min_lr);
    double t0 = now_seconds();
    double norm;
    if (tr->adapter) { /* LoRA: the adapter alone trains */
        norm = grad_global_norm(tr->adapter_grads, tr->lora.n_floats) / scale;
    } else {
        norm = grad_global_norm(tr->grads, n) / scale;
    }
    stats->skipped = 0;
    stats->loss_scale = scale;
    int overflow = !isfinite(norm);
    if (world > 1) { /* the ranks' sums are the same bits, but agree explicitly: one skips, all skip */
        double tc = now_seconds();
        if (dist_or(&overflow, err) != 0) return err_wrap(err, "step %ld", step + 1);
        stats->t_comm += now_seconds() - tc;
    }
    if (overflow) {
        if (o->loss_scaling != LOSS_SCALE_DYNAMIC)
            return err_set(err,
                           "gradients are not finite at step %ld (norm %g)%s", step + 1, norm,
                           o->loss_scaling == LOSS_SCALE_OFF ? "; lower --lr or check the data"
                                                             : "; --loss-scale dynamic adapts the scale");
        /* Overflow: leave the weights and moments untouched, halve the scale, move on. */
        st->loss_scale = scale / 2 < 1.0f ? 1.0f : scale / 2;
        st->clean_steps = 0;
        st->skipped_steps++;
        stats->skipped = 1;
    } else {
        long t = (long)(st->step - st->skipped_steps) + 1; /* AdamW counts applied updates */
        if (tr->adapter) {
            adamw_step(&tr->lora_optim, &o->adam, tr->adapter, tr->adapter_grads, tr->adapter_m, tr->adapter_v, lr, t,
                       grad_clip_coef(norm, o->clip) / scale);
        } else {
            adamw_step(&tr->layout, &o->adam, tr->params, tr->grads, tr->m, tr->v, lr, t,
                       grad_clip_coef(norm, o->clip) / scale);
        }
        if (o->loss_scaling == LOSS_SCALE_DYNAMIC && ++st->clean_steps >= o->loss_scale_window) {
            st->loss_scale = scale * 2 > LOSS_SCALE_MAX ? LOSS_SCALE_MAX : scale * 2;
            st->clean_steps = 0;
        }
    }
    stats->t_optim = now_seconds() - t0;
    st->step++;
    st->tokens_seen += (int64_t)micro_total * o->batch * o->seq;
    st->loader = tr->loader.state;
    stats->step = (long)st->step;
    stats->loss = loss_sum / micro_total;
    stats->lr = lr;
    stats->grad_norm = norm;
    stats->tokens = st->tokens_seen;
    return 0;
}

int trainer_has_validation(const Trainer *tr) { return tr->has_examples ? tr->has_valid_rows : tr->loader.n_val > 0; }

int trainer_check_ranks(Trainer *tr, Err *err) {
    if (tr->world <= 1) return 0;
    uint32_t mine[2] = {tr->adapter ? ckpt_crc32_words(tr->adapter, tr->lora.n_floats)
                                    : ckpt_crc32_words(tr->params, tr->layout.n_floats),
                        tr->base_crc32};
    uint32_t *all = malloc((size_t)tr->world * 2 * sizeof(uint32_t));
    if (!all) return err_set(err, "weights check: out of memory for %d crc32 pairs", tr->world);
    int rc = dist_allgather_u32(mine, 2, all, err);
    for (int r = 1; rc == 0 && r < tr->world; r++) {
        int k = all[2 * r] != all[0] ? 0 : all[2 * r + 1] != all[1] ? 1 : -1; /* the first that differs */
        if (k >= 0)
            rc = err_set(err, "the processes diverged: after step %lld the crc32 of the %s is %08x on rank 0 but "
                              "%08x on rank %d (every process must train the same model: the same --init, data and "
                              "flags everywhere)", (long long)tr->state.step,
                         k == 1 ? "frozen base" : tr->adapter ? "adapter" : "weights", all[k], all[2 * r + k], r);
    }
    free(all);
    return rc;
}

int trainer_eval_with(Trainer *tr, Backend *be, int T, int32_t *inputs, int32_t *targets, double *val_loss,
                      Err *err) {
    const TrainOptions *o = &tr->opt;
    if (tr->has_examples) return examples_eval(tr, be, T, inputs, targets, val_loss, err);
    if (tr->loader.n_val == 0) return err_set(err, "%s: no validation split (--val-frac is 0)", o->data_path);
    size_t windows = eval_windows(tr->loader.n_val, T);
    if (windows == 0)
        return err_set(err, "%s: the validation split (%zu tokens) is shorter than one window of %d tokens",
                       o->data_path, tr->loader.n_val, T + 1);
    if (o->eval_batches > 0 && windows > (size_t)o->eval_batches * o->batch) windows = (size_t)o->eval_batches * o->batch;
    return eval_loss(be, tr->params, tr->adapter, tr->data.tokens + tr->loader.n_train, windows, o->batch, T, inputs,
                     targets, val_loss, NULL, err);
}

int trainer_eval(Trainer *tr, double *val_loss, Err *err) {
    return trainer_eval_with(tr, tr->backend, tr->opt.seq, tr->inputs, tr->targets, val_loss, err);
}

int trainer_save(Trainer *tr, const char *path, Err *err) {
    if (tr->adapter) {
        LoraRunState rs = lora_run_state(tr);
        return lora_state_save(path, &rs, tr->adapter, tr->adapter_m, tr->adapter_v, tr->lora.n_floats, err);
    }
    tr->state.loader = tr->loader.state;
    return ckpt_save(path, &tr->layout, tr->params, tr->m, tr->v, &tr->state, err);
}

int trainer_save_adapter(Trainer *tr, const char *dir, const char *base_model, Err *err) {
    if (!tr->adapter) return err_set(err, "%s: this run trains every parameter; it has no LoRA adapter to save", dir);
    return lora_save(dir, &tr->lora, tr->adapter, base_model, err);
}

size_t trainer_comm_bytes(const Trainer *tr) {
    size_t n = tr->adapter ? tr->lora.n_floats : tr->layout.n_floats;
    return n * (tr->opt.grad_comm_bf16 ? sizeof(uint16_t) : sizeof(float));
}

size_t trainer_optimizer_bytes(const Trainer *tr) {
    return 2 * sizeof(float) * (tr->adapter ? tr->lora.n_floats : tr->layout.n_floats);
}
