/*
** run.c — the run loop of `train` and `finetune` (see run.h).
*/
#include "run.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../io/metrics_log.h"
#include "../util/clock.h"
#include "../util/dist.h"

/* a + sign*b over every counter: sign -1 gives one step's counters from two cumulative
** snapshots, +1 adds a step's counters to a running total. */
static BackendStats stats_combine(const BackendStats *a, const BackendStats *b, int sign) {
    BackendStats r;
    r.steps = sign > 0 ? a->steps + b->steps : a->steps - b->steps;
    r.evaluations = sign > 0 ? a->evaluations + b->evaluations : a->evaluations - b->evaluations;
    r.bytes_staged = sign > 0 ? a->bytes_staged + b->bytes_staged : a->bytes_staged - b->bytes_staged;
    r.bytes_staged_weights = sign > 0 ? a->bytes_staged_weights + b->bytes_staged_weights : a->bytes_staged_weights - b->bytes_staged_weights;
    r.bytes_read = sign > 0 ? a->bytes_read + b->bytes_read : a->bytes_read - b->bytes_read;
    r.device_bytes_in = sign > 0 ? a->device_bytes_in + b->device_bytes_in : a->device_bytes_in - b->device_bytes_in;
    r.device_bytes_out = sign > 0 ? a->device_bytes_out + b->device_bytes_out : a->device_bytes_out - b->device_bytes_out;
    r.compiles = sign > 0 ? a->compiles + b->compiles : a->compiles - b->compiles;
    r.compile_failures = sign > 0 ? a->compile_failures + b->compile_failures : a->compile_failures - b->compile_failures;
    r.flops_device = a->flops_device + sign * b->flops_device;
    r.flops_cpu = a->flops_cpu + sign * b->flops_cpu;
    r.compile_seconds = a->compile_seconds + sign * b->compile_seconds;
    r.t_device = a->t_device + sign * b->t_device;
    r.t_stage = a->t_stage + sign * b->t_stage;
    r.t_cpu_ops = a->t_cpu_ops + sign * b->t_cpu_ops;
    r.t_dw = a->t_dw + sign * b->t_dw;
    r.t_dw_wait = a->t_dw_wait + sign * b->t_dw_wait;
    r.t_total = a->t_total + sign * b->t_total;
    return r;
}

/* Validation at eval_seq T: a backend of that length built for this evaluation and released
** after it (its activations are not kept for the rest of the run); on the ANE every build
** compiles ANE_BACKEND_COMPILES programs, which is what RUN_RESTART is for. */
static int eval_at_seq(Trainer *tr, int T, int32_t *inputs, int32_t *targets, double *loss, Err *err) {
    const TrainOptions *o = &tr->opt;
    Backend *be = backend_create(o->backend, &tr->layout, o->batch, T, &o->ane, err);
    if (!be) return err_wrap(err, "--eval-seq %d", T);
    int rc = trainer_eval_with(tr, be, T, inputs, targets, loss, err);
    be->destroy(be);
    return rc;
}

/* *stop <- 1 if a stop was asked on any rank (the flags or-reduced: every rank stops at the same
** step); in one process, whether *ro->stop is set. */
static int stop_agreed(const RunOptions *ro, int *stop, Err *err) {
    *stop = ro->stop && *ro->stop;
    return dist_or(stop, err);
}

/* trainer_save on rank 0 alone (one process: always): the ranks' weights and state are the same. */
static int save_once(Trainer *tr, const char *path, Err *err) {
    return tr->rank == 0 ? trainer_save(tr, path, err) : 0;
}

/* 1 if the validation after step `step` is due. */
static int eval_due(const Trainer *tr, const RunOptions *ro, long step) {
    return trainer_has_validation(tr) && ((ro->eval_every > 0 && step % ro->eval_every == 0) || step == tr->opt.steps);
}

RunStatus run_training(Trainer *tr, const RunOptions *ro, RunReport *rep, Err *err) {
    const TrainOptions *o = &tr->opt;
    memset(rep, 0, sizeof *rep);
    rep->first_step = (long)tr->state.step;
    rep->last_val = NAN;
    rep->best_val = INFINITY;
    rep->best_val_step = -1;
    int eval_seq = ro->eval_seq && ro->eval_seq != o->seq ? ro->eval_seq : 0;
    int32_t *eval_in = NULL, *eval_tg = NULL;
    if (eval_seq) {
        eval_in = malloc((size_t)o->batch * eval_seq * sizeof(int32_t));
        eval_tg = malloc((size_t)o->batch * eval_seq * sizeof(int32_t));
        if (!eval_in || !eval_tg) {
            free(eval_in), free(eval_tg);
            err_set(err, "--eval-seq: out of memory for a %d x %d batch", o->batch, eval_seq);
            return RUN_ERROR;
        }
    }
    int uses_device = tr->backend->kind == BACKEND_ANE;
    int log_efficiency = ro->log_efficiency && tr->backend->stats;
    rep->t_start = now_seconds();
    RunStatus status = RUN_DONE;
    BackendStats before = {0}, after = {0};
    int stop = 0;
    while (tr->state.step < o->steps) {
        if (stop_agreed(ro, &stop, err) != 0) {
            status = RUN_ERROR;
            break;
        }
        if (stop) break;
        long next = (long)tr->state.step + 1;
        if (uses_device && eval_seq && eval_due(tr, ro, next) &&
            backend_ane_process_compiles() + ANE_BACKEND_COMPILES > (uint64_t)o->ane.compile_budget) {
            /* The device's compiler would refuse: checkpoint, and continue in a fresh process. */
            if (tr->world > 1) { /* every rank would have to re-execute together: not yet */
                err_set(err, "--compile-budget %d: the evaluation after step %ld needs a fresh process, which a "
                        "data-parallel run (%d processes) cannot restart yet; raise --compile-budget or drop "
                        "--eval-seq", o->ane.compile_budget, next, tr->world);
                status = RUN_ERROR;
                break;
            }
            if (rep->steps_done == 0) { /* a fresh process is no better off: restarting would loop */
                err_set(err, "--compile-budget %d: too small even for a fresh process (%llu compiles used before "
                        "the first evaluation needs %d more)", o->ane.compile_budget,
                        (unsigned long long)backend_ane_process_compiles(), ANE_BACKEND_COMPILES);
                status = RUN_ERROR;
                break;
            }
            if (save_once(tr, ro->save_path, err) != 0) {
                status = RUN_ERROR;
                break;
            }
            rep->restart_step = next;
            rep->compiles_used = (unsigned long long)backend_ane_process_compiles();
            status = RUN_RESTART;
            break;
        }
        double t0 = now_seconds();
        StepStats s;
        if (tr->backend->stats) tr->backend->stats(tr->backend, &before);
        if (trainer_step(tr, &s, err) != 0) {
            status = RUN_ERROR;
            break;
        }
        double ms = (now_seconds() - t0) * 1000.0;
        if (tr->backend->stats) tr->backend->stats(tr->backend, &after);
        rep->t_optim += s.t_optim;
        rep->t_comm += s.t_comm;
        rep->t_wall += ms / 1000.0;
        rep->steps_done++;
        if (!isfinite(s.loss)) {
            err_set(err, "loss is %g at step %ld (lower --lr or check the data)", s.loss, s.step);
            status = RUN_DIVERGED;
            break;
        }
        if (o->steps - s.step < 10) {
            rep->last_loss_sum += s.loss;
            rep->last_loss_n++;
        }
        int eval_now = eval_due(tr, ro, s.step);
        double val = NAN;
        if (eval_now) {
            if ((eval_seq ? eval_at_seq(tr, eval_seq, eval_in, eval_tg, &val, err) : trainer_eval(tr, &val, err)) !=
                0) {
                status = RUN_ERROR;
                break;
            }
            rep->last_val = val;
            if (val < rep->best_val) {
                rep->best_val = val;
                rep->best_val_step = s.step;
            }
        }
        MetricsEfficiency eff = {0};
        if (tr->backend->stats) {
            BackendStats d = stats_combine(&after, &before, -1);
            rep->train_stats = stats_combine(&rep->train_stats, &d, +1);
            eff = (MetricsEfficiency){d.evaluations, d.bytes_staged, d.bytes_read, d.compiles, d.flops_device,
                                      d.flops_cpu, d.t_device, d.t_stage, d.t_cpu_ops, d.t_dw, s.t_optim};
        }
        MetricsStep line = {s.step, s.loss, s.lr, s.grad_norm, s.tokens, ms, o->loss_scaling != LOSS_SCALE_OFF,
                            s.loss_scale, s.skipped, log_efficiency ? &eff : NULL, eval_now, val};
        if (ro->log) metrics_log_write_step(ro->log, &line);
        if (ro->log && (fflush(ro->log) != 0 || ferror(ro->log))) {
            err_set(err, "--log %s: write failed at step %ld: %s", ro->log_path, s.step, strerror(errno));
            status = RUN_ERROR;
            break;
        }
        if (ro->on_step && tr->rank == 0) {
            RunEvent ev = {&s, ms, now_seconds() - rep->t_start, rep->steps_done, eval_now, val};
            ro->on_step(&ev, ro->ctx);
        }
        if (ro->check_every > 0 && s.step % ro->check_every == 0 && trainer_check_ranks(tr, err) != 0) {
            status = RUN_ERROR;
            break;
        }
        if (ro->save_every > 0 && s.step % ro->save_every == 0 && s.step < o->steps &&
            save_once(tr, ro->save_path, err) != 0) {
            status = RUN_ERROR;
            break;
        }
    }
    free(eval_in);
    free(eval_tg);
    if (status == RUN_DONE && !stop && stop_agreed(ro, &stop, err) != 0) status = RUN_ERROR;
    if (status == RUN_DONE && stop) {
        status = RUN_INTERRUPTED;
        if (ro->eval_on_stop && trainer_has_validation(tr) && trainer_eval(tr, &rep->last_val, err) != 0)
            status = RUN_ERROR;
    }
    if ((status == RUN_DONE || status == RUN_INTERRUPTED) && trainer_check_ranks(tr, err) != 0) status = RUN_ERROR;
    if ((status == RUN_DONE || status == RUN_INTERRUPTED) && save_once(tr, ro->save_path, err) != 0)
        status = RUN_ERROR;
    rep->tokens = (long long)rep->steps_done * o->batch * o->seq * o->accum * (tr->world > 1 ? tr->world : 1);
    return status;
}
