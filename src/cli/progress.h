/*
** progress.h — what the CLI shows while it works: the step progress line of `train` and
** `finetune` (with tokens/s and the ETA), the "step N: val_loss" lines, and durations.
*/
#ifndef ANETRAIN_PROGRESS_H
#define ANETRAIN_PROGRESS_H

#include <signal.h>

#include "../train/run.h"

/* Ctrl-C and SIGTERM from now on set the returned flag (and stop nothing else): long work
** checks it between whole steps and stops cleanly. The flag is the process's one. */
volatile sig_atomic_t *catch_stop_signals(void);

/* 1 if stderr is a terminal (progress lines are redrawn in place only there). */
int term_is_tty(void);
/* Formats seconds as "1:02:03" or "2:03". */
void format_duration(double seconds, char *buf, int size);

/* How a run's steps are shown. On a terminal the progress line is redrawn on stderr every step;
** elsewhere it is printed on stdout every print_every steps, at the last step and at a validation. */
typedef struct {
    long steps;            /* TrainOptions.steps */
    double tokens_per_step; /* batch x seq x accum (x the processes of a data-parallel run: global) */
    int print_every;
    int tty;               /* term_is_tty() */
    int pad_step;          /* 1 (train): the step number right-aligned to the width of steps */
    int show_scale;        /* 1 (train, loss scaling on): " | scale S" (and "(skipped: inf/NaN)");
                           ** 0: only a skipped step is marked, " | skipped (inf/NaN)" */
} StepProgress;

/* The progress line of step s: "step 12/100 | loss 2.3456 | lr 5.00e-04 | 1234 tok/s |
** 56 ms/step | ETA 0:42"; a data-parallel step's time in the reductions follows its ms/step as
** " (3 ms comm)". */
void progress_print(const StepProgress *p, const StepStats *s, double ms, double elapsed, long steps_done);
/* Data parallel (tr->world > 1; nothing otherwise): the end-of-run line on the reductions,
** "comm    4.2 ms/step in the reductions (mean of 20 steps, 7% of the step time); 1.10 MB of
** fp32 gradients a step, each process sending and receiving 2(N-1)/N of it: 1.10 MB" (N = 2). */
void progress_print_comm(const Trainer *tr, const RunReport *rep);
/* RunOptions.on_step with ctx a StepProgress: the progress line when due, and after a validation
** "step N: val_loss L (perplexity P)" on stdout. */
void progress_on_step(const RunEvent *ev, void *ctx);

#endif
