/*
** run.h — the run loop of `train` and `finetune`: the Trainer stepped to TrainOptions.steps.
**
**   while step < steps and no stop was asked:
**     [ANE, eval_seq: the evaluation after the next step would pass the compile budget
**      -> save, RUN_RESTART (the CLI re-executes itself with --resume)]
**     trainer_step -> (a loss that is not finite: RUN_DIVERGED)
**     -> validation after every eval_every-th step and after the last (when there is a split)
**     -> the step's metrics-log line (io/metrics_log.h) -> on_step (the CLI prints)
**     -> every save_every steps (not the last): trainer_save
**     -> data parallel, every check_every steps: trainer_check_ranks (a divergence: RUN_ERROR)
**   then (RUN_DONE, or RUN_INTERRUPTED when *stop was set) the ranks' check and the final
**   trainer_save.
**
** Data parallel (mpirun, util/dist.h): every rank runs this loop in step; the stop flag is
** or-reduced before each step (and once after the last), so a signal to any rank stops all of
** them at the same step; only rank 0 saves (trainer_save), writes the log and calls on_step.
**
** The loop never prints and never exits: what the user sees is the CLI's, through on_step and
** the RunReport; the status says what the CLI does next (exit 0, exit 130, re-execute, fail).
*/
#ifndef ANETRAIN_RUN_H
#define ANETRAIN_RUN_H

#include <signal.h>
#include <stdio.h>

#include "trainer.h"

typedef enum {
    RUN_DONE = 0,     /* every step taken, checkpoint saved */
    RUN_INTERRUPTED,  /* *stop was set: stopped after a whole step, checkpoint saved */
    RUN_RESTART,      /* the next evaluation would pass the ANE compile budget: checkpoint saved,
                      ** continue in a fresh process (report.restart_step, report.compiles_used) */
    RUN_DIVERGED,     /* a step's loss was not finite: err says which; nothing saved */
    RUN_ERROR,        /* err says what failed; nothing saved after the failure */
} RunStatus;

/* What on_step is told after each step (after its log line is written). */
typedef struct {
    const StepStats *step; /* the step just taken */
    double ms;             /* its wall time */
    double elapsed;        /* seconds since the run loop started */
    long steps_done;       /* steps taken by this run loop, this one included */
    int has_val;           /* 1: validated after this step */
    double val_loss;
} RunEvent;

typedef struct {
    int eval_every;      /* validation after every N-th step and after the last; 0: after the last only */
    int save_every;      /* trainer_save every N steps (not at the last: the final save is); 0: none */
    int eval_seq;        /* 0 (or TrainOptions.seq): validate through the trainer's backend; T: windows of
                         ** T tokens through a backend built for each evaluation (train --eval-seq), which
                         ** on the ANE costs ANE_BACKEND_COMPILES compiles: see RUN_RESTART */
    int eval_on_stop;    /* 1: a run stopped by *stop is validated before it is saved (report.last_val) */
    int log_efficiency;  /* 1: each log line carries the backend's counters (when it has stats) */
    int check_every;     /* data parallel: trainer_check_ranks every N steps and before the final save;
                         ** 0: before the final save only (nothing to check in one process) */
    const char *save_path; /* what trainer_save writes: the checkpoint, or a LoRA run's training state */
    FILE *log;           /* the metrics log, open for writing; NULL: none (ranks other than 0) */
    const char *log_path; /* for messages */
    volatile sig_atomic_t *stop; /* NULL, or set (by the CLI's signal handler) to stop after the step */
    void (*on_step)(const RunEvent *ev, void *ctx); /* NULL, or called after every step */
    void *ctx;
} RunOptions;

/* What the run did, for the CLI's summary. */
typedef struct {
    long first_step;       /* tr->state.step when the loop started */
    long steps_done;
    long long tokens;      /* steps_done x batch x seq x accum (x the number of ranks) */
    double t_start;        /* now_seconds() when the loop started */
    double last_val, best_val; /* NAN and INFINITY when never validated */
    long best_val_step;    /* -1 when never validated */
    double last_loss_sum;  /* losses of the steps within 10 of TrainOptions.steps, and their count */
    int last_loss_n;
    BackendStats train_stats; /* backends with stats: the sum of the training steps' counters */
    double t_optim, t_wall;   /* seconds in the optimizer, and in the steps altogether */
    double t_comm;            /* data parallel: seconds in the ranks' reductions (StepStats.t_comm), summed */
    long restart_step;     /* RUN_RESTART: the step whose evaluation needs the compiles */
    unsigned long long compiles_used; /* RUN_RESTART: backend_ane_process_compiles() at the stop */
} RunReport;

/* Steps tr until TrainOptions.steps (see above). report is filled whatever the status. */
RunStatus run_training(Trainer *tr, const RunOptions *opt, RunReport *report, Err *err);

#endif
