/*
** metrics_log.h — the metrics log (JSON lines, one object per step): its one writer (the run
** loop, train/run.c, for `train` and `finetune`), its reader as `plot` reads it, and the SVG
** loss curve drawn from it.
**
** Written: one line per step,
**   {"step": N, "loss": %.17g, "lr": %.9g, "grad_norm": %.9g or null, "tokens": N, "ms": %.3f
**    [, "loss_scale": %g, "skipped": true|false]      (loss scaling on)
**    [, "device_evals", "bytes_staged", "bytes_read", "flops_device", "flops_cpu", "cpu_share",
**       "compiles", "ms_device", "ms_stage", "ms_cpu_ops", "ms_dw", "ms_optim"]
**                                                       (a backend with efficiency counters)
**    [, "val_loss": %.17g]}                           (when computed)
** and, before a fine-tune's first step, {"step": 0, "val_loss": %.17g}.
**
** Read: a line is an object with a number "step" and, when present, numbers "loss" and "val_loss"
** (other keys are ignored; blank lines are skipped). The points are sorted by step, and a later
** line for the same step (after a resume) replaces the earlier one, in O(n log n) for lines in
** any order. Any text is an expected input: a log that is not JSON lines
** is refused with the file and the line; numbers of any size, even infinite, give a finite
** drawing (the axis ticks are counted with an integer, never stepped through doubles).
*/
#ifndef ANETRAIN_METRICS_LOG_H
#define ANETRAIN_METRICS_LOG_H

#include <stddef.h>
#include <stdio.h>

#include "../util/err.h"

/* A step's efficiency counters, as logged (the backend's BackendStats difference over the step,
** plus the optimizer's time). */
typedef struct {
    unsigned long long device_evals, bytes_staged, bytes_read, compiles;
    double flops_device, flops_cpu;
    double t_device, t_stage, t_cpu_ops, t_dw, t_optim; /* seconds (logged as ms) */
} MetricsEfficiency;

/* One step's line. */
typedef struct {
    long step;
    double loss;
    float lr;
    double grad_norm;  /* not finite: logged as null (JSON has no inf/NaN; an overflowed, skipped step) */
    long long tokens;
    double ms;
    int loss_scaling;  /* 1: log loss_scale and skipped */
    float loss_scale;
    int skipped;
    const MetricsEfficiency *efficiency; /* NULL: no efficiency keys */
    int has_val;       /* 1: log val_loss (last) */
    double val_loss;
} MetricsStep;

/* Writes the step's line (with its newline) to fp; the caller checks the stream (ferror). */
void metrics_log_write_step(FILE *fp, const MetricsStep *m);
/* Writes {"step": step, "val_loss": val_loss} (a fine-tune's validation loss before training). */
void metrics_log_write_val(FILE *fp, long step, double val_loss);

/* Points (x = step, y = loss), sorted by step, one per step. */
typedef struct {
    double *x, *y;
    size_t n, cap;
} MetricsSeries;

typedef struct {
    MetricsSeries train; /* "loss" */
    MetricsSeries val;   /* "val_loss" */
} MetricsLog;

/* Parses text[0..len) (need not be NUL-terminated) into log, which starts zeroed; name is the
** file for messages. Fails on a line that is not an object with a number "step", or a log
** without a single loss. Free log with metrics_log_free, also after a failure. */
int metrics_log_parse(const char *text, size_t len, const char *name, MetricsLog *log, Err *err);
/* Reads and parses the file at path. */
int metrics_log_read(const char *path, MetricsLog *log, Err *err);
void metrics_log_free(MetricsLog *log);

/* Draws the curves as an 800x420 SVG into fp: the raw training loss, its moving average over
** `smooth` points, the validation points, labelled axes and the title. Returns -1 (with a
** message naming `name`) if a write to fp failed. */
int metrics_log_plot_svg(FILE *fp, const MetricsLog *log, const char *title, int smooth, const char *name, Err *err);

#endif
