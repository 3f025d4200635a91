/*
** plot.c — `anetrain plot`: an SVG loss curve from a metrics log (JSON lines).
**
** Reads every line with cJSON, keeps (step, loss) and (step, val_loss), and draws the
** raw training loss faintly, its moving average boldly, and validation points on top,
** with labelled axes. A later line for the same step (after a resume) replaces the
** earlier one.
*/
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct {
    double *x, *y;
    size_t n, cap;
} Series;

static int series_put(Series *s, double x, double y) {
    /* Same step again (a resumed run re-logging it): the later value wins. */
    for (size_t i = s->n; i > 0 && s->x[i - 1] >= x; i--)
        if (s->x[i - 1] == x) {
            s->y[i - 1] = y;
            return 0;
        }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        double *nx = realloc(s->x, cap * sizeof *nx);
        if (!nx) return -1;
        s->x = nx;
        double *ny = realloc(s->y, cap * sizeof *ny);
        if (!ny) return -1;
        s->y = ny;
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
    return 0;
}

/* Parses the log into train and val series; sorts by step. */
static int read_log(const char *path, Series *train, Series *val, Err *err) {
    size_t size;
    char *text = file_read_all(path, &size, err);
    if (!text) return -1;
    int line_no = 0, rc = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        line_no++;
        if (strspn(line, " \t\r") == strlen(line)) continue;
        cJSON *obj = cJSON_Parse(line);
        if (!obj || !cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            rc = err_set(err, "%s:%d: expected a JSON object per line, found '%.40s'", path, line_no, line);
            break;
        }
        cJSON *step = cJSON_GetObjectItemCaseSensitive(obj, "step");
        cJSON *loss = cJSON_GetObjectItemCaseSensitive(obj, "loss");
        cJSON *vloss = cJSON_GetObjectItemCaseSensitive(obj, "val_loss");
        if (!cJSON_IsNumber(step)) {
            cJSON_Delete(obj);
            rc = err_set(err, "%s:%d: field step: expected a number", path, line_no);
            break;
        }
        if (cJSON_IsNumber(loss) && series_put(train, step->valuedouble, loss->valuedouble) != 0) rc = -1;
        if (cJSON_IsNumber(vloss) && series_put(val, step->valuedouble, vloss->valuedouble) != 0) rc = -1;
        cJSON_Delete(obj);
        if (rc) {
            err_set(err, "%s: out of memory", path);
            break;
        }
    }
    free(text);
    if (rc == 0 && train->n == 0 && val->n == 0)
        rc = err_set(err, "%s: expected lines with \"step\" and \"loss\", found none", path);
    return rc;
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks. */
static double nice_step(double range, int target) {
    double raw = range / target, mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void xml_escape(FILE *fp, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", fp);
        else if (*s == '>') fputs("&gt;", fp);
        else if (*s == '&') fputs("&amp;", fp);
        else if (*s == '"') fputs("&quot;", fp);
        else fputc(*s, fp);
    }
}

typedef struct {
    double x0, x1, y0, y1; /* data bounds */
    double left, top, width, height;
} Frame;

static double px(const Frame *f, double x) { return f->left + (x - f->x0) / (f->x1 - f->x0) * f->width; }
static double py(const Frame *f, double y) { return f->top + (1 - (y - f->y0) / (f->y1 - f->y0)) * f->height; }

static void polyline(FILE *fp, const Frame *f, const double *x, const double *y, size_t n, const char *style) {
    fprintf(fp, "<polyline fill=\"none\" %s points=\"", style);
    for (size_t i = 0; i < n; i++) fprintf(fp, "%.1f,%.1f ", px(f, x[i]), py(f, y[i]));
    fprintf(fp, "\"/>\n");
}

static int write_svg(const char *path, const char *title, const Series *tr, const Series *va, int smooth, Err *err) {
    Frame f = {INFINITY, -INFINITY, INFINITY, -INFINITY, 70, 40, 680, 330};
    const Series *all[2] = {tr, va};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < all[k]->n; i++) {
            double x = all[k]->x[i], y = all[k]->y[i];
            if (!isfinite(y)) continue;
            f.x0 = fmin(f.x0, x), f.x1 = fmax(f.x1, x), f.y0 = fmin(f.y0, y), f.y1 = fmax(f.y1, y);
        }
    if (!(f.x1 > f.x0)) f.x1 = f.x0 + 1;
    if (!(f.y1 > f.y0)) f.y1 = f.y0 + 1;
    double ystep = nice_step(f.y1 - f.y0, 6), xstep = nice_step(f.x1 - f.x0, 8);
    f.y0 = floor(f.y0 / ystep) * ystep;
    f.y1 = ceil(f.y1 / ystep) * ystep;

    FILE *fp = fopen(path, "w");
    if (!fp) return err_set(err, "%s: cannot open for writing", path);
    fprintf(fp, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"420\" viewBox=\"0 0 800 420\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"800\" height=\"420\" fill=\"white\"/>\n");
    fprintf(fp, "<text x=\"400\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">");
    xml_escape(fp, title);
    fprintf(fp, "</text>\n");
    for (double y = f.y0; y <= f.y1 + ystep * 1e-6; y += ystep) {
        fprintf(fp, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", f.left, py(&f, y),
                f.left + f.width, py(&f, y));
        fprintf(fp, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", f.left - 6, py(&f, y) + 4, y);
    }
    for (double x = ceil(f.x0 / xstep) * xstep; x <= f.x1 + xstep * 1e-6; x += xstep)
        fprintf(fp, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", px(&f, x),
                f.top + f.height + 18, x);
    fprintf(fp, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", f.left,
            f.top, f.width, f.height);
    fprintf(fp, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", f.left + f.width / 2, 410.0);
    fprintf(fp, "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">loss (nats/token)"
                "</text>\n", f.top + f.height / 2, f.top + f.height / 2);
    if (tr->n) {
        polyline(fp, &f, tr->x, tr->y, tr->n, "stroke=\"#9ecae1\" stroke-width=\"1\"");
        double *avg = malloc(tr->n * sizeof *avg);
        if (avg) {
            double sum = 0;
            for (size_t i = 0; i < tr->n; i++) {
                sum += tr->y[i];
                if (i >= (size_t)smooth) sum -= tr->y[i - smooth];
                avg[i] = sum / (double)(i + 1 < (size_t)smooth ? i + 1 : (size_t)smooth);
            }
            polyline(fp, &f, tr->x, avg, tr->n, "stroke=\"#08519c\" stroke-width=\"2\"");
            free(avg);
        }
    }
    if (va->n) {
        polyline(fp, &f, va->x, va->y, va->n, "stroke=\"#e6550d\" stroke-width=\"1.5\"");
        for (size_t i = 0; i < va->n; i++)
            fprintf(fp, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#e6550d\"/>\n", px(&f, va->x[i]),
                    py(&f, va->y[i]));
    }
    fprintf(fp, "<line x1=\"560\" y1=\"56\" x2=\"590\" y2=\"56\" stroke=\"#08519c\" stroke-width=\"2\"/>"
                "<text x=\"596\" y=\"60\">train (mean of %d)</text>\n", smooth);
    if (va->n)
        fprintf(fp, "<line x1=\"560\" y1=\"76\" x2=\"590\" y2=\"76\" stroke=\"#e6550d\" stroke-width=\"2\"/>"
                    "<text x=\"596\" y=\"80\">validation</text>\n");
    fprintf(fp, "</svg>\n");
    if (fclose(fp) != 0) return err_set(err, "%s: write failed", path);
    return 0;
}

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
    Series train = {0}, val = {0};
    int rc = read_log(pos[0], &train, &val, &err);
    if (rc == 0) rc = write_svg(out, title ? title : pos[0], &train, &val, smooth, &err);
    if (rc == 0) printf("%s: %zu training points, %zu validation points\n", out, train.n, val.n);
    free(train.x), free(train.y), free(val.x), free(val.y);
    return rc == 0 ? 0 : cli_fail("plot", &err);
}
