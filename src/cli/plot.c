/*
** plot.c — `anetrain plot`: an SVG loss curve from a metrics log (JSON lines).
**
** Reads the log (io/metrics_log.h: (step, loss) and (step, val_loss) of every line; a later
** line for the same step, after a resume, replaces the earlier one) and draws the raw training
** loss faintly, its moving average boldly, and validation points on top, with labelled axes.
** The SVG is written atomically.
*/
#include <stdio.h>
#include <string.h>

#include "../io/metrics_log.h"
#include "../util/fileio.h"
#include "args.h"
#include "cli.h"

static const char *plot_help =
    "usage: anetrain plot LOG.jsonl [-o FILE.svg] [--title TEXT] [--smooth N]\n"
    "\n"
    "Draws the training loss (raw and a moving average over --smooth steps, default 20) and\n"
    "the validation loss from a metrics log written by `anetrain train` as an SVG file.\n"
    "  -o, --out FILE    output path (default: LOG with .svg instead of .jsonl)\n"
    "  --title TEXT      title (default: the log's file name)\n";

int cli_plot(int argc, char **argv) {
    if (args_want_help(argc, argv)) {
        fputs(plot_help, stdout);
        return 0;
    }
    Err err = {{0}};
    const char *out = NULL, *title = NULL, *pos[1];
    int npos = 0, smooth = 20;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-o")) argv[i] = "--out";
    const ArgSpec specs[] = {
        {"--out", ARG_STR, &out, 0, 0, NULL},
        {"--title", ARG_STR, &title, 0, 0, NULL},
        {"--smooth", ARG_INT, &smooth, 1, 100000, NULL},
    };
    if (args_parse(argc, argv, specs, 3, pos, 1, &npos, &err) != 0) return cli_fail("plot", &err);
    if (npos != 1) {
        err_set(&err, "expected one argument, the metrics log, found %d", npos);
        return cli_fail("plot", &err);
    }
    char out_buf[1100];
    if (!out) {
        size_t n = strlen(pos[0]);
        if (n > 6 && !strcmp(pos[0] + n - 6, ".jsonl")) snprintf(out_buf, sizeof out_buf, "%.*s.svg", (int)(n - 6), pos[0]);
        else snprintf(out_buf, sizeof out_buf, "%s.svg", pos[0]);
        out = out_buf;
    }
    MetricsLog log = {{0}, {0}};
    AtomicFile file;
    int rc = metrics_log_read(pos[0], &log, &err);
    if (rc == 0) rc = output_file_check(out, "-o/--out", &err);
    if (rc == 0) rc = atomic_file_open(&file, out, &err);
    if (rc == 0) {
        rc = metrics_log_plot_svg(file.fp, &log, title ? title : pos[0], smooth, out, &err);
        if (rc == 0) rc = atomic_file_commit(&file, &err);
        else atomic_file_abort(&file);
    }
    if (rc == 0) printf("%s: %zu training points, %zu validation points\n", out, log.train.n, log.val.n);
    metrics_log_free(&log);
    return rc == 0 ? 0 : cli_fail("plot", &err);
}
