/*
** metrics_log.h — the metrics log (JSON lines, one object per step) as `plot` reads it, and
** the SVG loss curve drawn from it.
**
** A line is an object with a number "step" and, when present, numbers "loss" and "val_loss"
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
