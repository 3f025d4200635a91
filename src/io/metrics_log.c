/*
** metrics_log.c — writing and reading the metrics log, and drawing it as SVG (see metrics_log.h).
*/
#include "metrics_log.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/fileio.h"

/* ---------------------------------------------------------------- writing */

void metrics_log_write_step(FILE *fp, const MetricsStep *m) {
    fprintf(fp, "{\"step\": %ld, \"loss\": %.17g, \"lr\": %.9g, \"grad_norm\": ", m->step, m->loss, (double)m->lr);
    if (isfinite(m->grad_norm)) fprintf(fp, "%.9g", m->grad_norm);
    else fprintf(fp, "null"); /* JSON has no inf/NaN: an overflowed (skipped) step */
    fprintf(fp, ", \"tokens\": %lld, \"ms\": %.3f", m->tokens, m->ms);
    if (m->loss_scaling)
        fprintf(fp, ", \"loss_scale\": %g, \"skipped\": %s", (double)m->loss_scale, m->skipped ? "true" : "false");
    const MetricsEfficiency *e = m->efficiency;
    if (e) {
        double flops = e->flops_device + e->flops_cpu;
        fprintf(fp,
                ", \"device_evals\": %llu, \"bytes_staged\": %llu, \"bytes_read\": %llu, \"flops_device\": %.6g, "
                "\"flops_cpu\": %.6g, \"cpu_share\": %.4f, \"compiles\": %llu, \"ms_device\": %.3f, \"ms_stage\": %.3f, "
                "\"ms_cpu_ops\": %.3f, \"ms_dw\": %.3f, \"ms_optim\": %.3f",
                e->device_evals, e->bytes_staged, e->bytes_read, e->flops_device, e->flops_cpu,
                flops > 0 ? e->flops_cpu / flops : 0.0, e->compiles, e->t_device * 1e3, e->t_stage * 1e3,
                e->t_cpu_ops * 1e3, e->t_dw * 1e3, e->t_optim * 1e3);
    }
    if (m->has_val) fprintf(fp, ", \"val_loss\": %.17g", m->val_loss);
    fprintf(fp, "}\n");
}

void metrics_log_write_val(FILE *fp, long step, double val_loss) {
    fprintf(fp, "{\"step\": %ld, \"val_loss\": %.17g}\n", step, val_loss);
}

/* ---------------------------------------------------------------- reading */

static int series_put(MetricsSeries *s, double x, double y) {
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

/* qsort order of point indices: by step, then by line (a later line last). */
static const double *sort_steps;
static int by_step_then_line(const void *a, const void *b) {
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    if (sort_steps[i] != sort_steps[j]) return sort_steps[i] < sort_steps[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* Sorts the points by step and keeps, of equal steps, the later line's (a resumed run logs its
** steps again): O(n log n) whatever the order of the lines. */
static int series_sort(MetricsSeries *s) {
    if (s->n < 2) return 0;
    size_t *idx = malloc(s->n * sizeof *idx);
    double *x = malloc(s->n * sizeof *x), *y = malloc(s->n * sizeof *y);
    if (!idx || !x || !y) {
        free(idx), free(x), free(y);
        return -1;
    }
    for (size_t i = 0; i < s->n; i++) idx[i] = i;
    sort_steps = s->x; /* qsort has no context argument in C11 */
    qsort(idx, s->n, sizeof *idx, by_step_then_line);
    size_t m = 0;
    for (size_t k = 0; k < s->n; k++) {
        if (m > 0 && x[m - 1] == s->x[idx[k]]) m--; /* the same step again: the later line wins */
        x[m] = s->x[idx[k]];
        y[m] = s->y[idx[k]];
        m++;
    }
    free(idx), free(s->x), free(s->y);
    s->x = x, s->y = y, s->n = m, s->cap = s->n;
    return 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

int metrics_log_parse(const char *text, size_t len, const char *name, MetricsLog *log, Err *err) {
    int line_no = 0;
    for (size_t pos = 0; pos < len;) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + 1;
        line_no++;
        if (is_blank(line, n)) continue;
        const char *end = NULL;
        cJSON *obj = cJSON_ParseWithLengthOpts(line, n, &end, 0);
        if (!obj || !cJSON_IsObject(obj) || !end || !is_blank(end, n - (size_t)(end - line))) {
            cJSON_Delete(obj);
            size_t shown = strnlen(line, n < 40 ? n : 40);
            return err_set(err, "%s:%d: expected a JSON object per line, found '%.*s'", name, line_no, (int)shown, line);
        }
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(obj, "step");
        const cJSON *loss = cJSON_GetObjectItemCaseSensitive(obj, "loss");
        const cJSON *vloss = cJSON_GetObjectItemCaseSensitive(obj, "val_loss");
        if (!cJSON_IsNumber(step)) {
            cJSON_Delete(obj);
            return err_set(err, "%s:%d: field step: expected a number", name, line_no);
        }
        int rc = 0;
        if (cJSON_IsNumber(loss) && series_put(&log->train, step->valuedouble, loss->valuedouble) != 0) rc = -1;
        if (cJSON_IsNumber(vloss) && series_put(&log->val, step->valuedouble, vloss->valuedouble) != 0) rc = -1;
        cJSON_Delete(obj);
        if (rc) return err_set(err, "%s: out of memory at line %d", name, line_no);
    }
    if (series_sort(&log->train) != 0 || series_sort(&log->val) != 0)
        return err_set(err, "%s: out of memory sorting %zu points", name, log->train.n + log->val.n);
    if (log->train.n == 0 && log->val.n == 0)
        return err_set(err, "%s: expected lines with \"step\" and \"loss\", found none", name);
    return 0;
}

int metrics_log_read(const char *path, MetricsLog *log, Err *err) {
    size_t size;
    char *text = file_read_all(path, &size, err);
    if (!text) return -1;
    int rc = metrics_log_parse(text, size, path, log, err);
    free(text);
    return rc;
}

void metrics_log_free(MetricsLog *log) {
    free(log->train.x), free(log->train.y), free(log->val.x), free(log->val.y);
    memset(log, 0, sizeof *log);
}

/* ---------------------------------------------------------------- drawing */

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks over a
** positive finite range. */
static double nice_step(double range, int target) {
    double raw = range / target, mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

/* The data bounds [lo, hi] widened to a positive finite range: a single value (or one so large
** that lo + 1 == lo) gets a range of 1 or of its own magnitude. */
static void widen(double *lo, double *hi) {
    if (!(*hi > *lo) || !isfinite(*hi - *lo)) {
        double pad = fmax(1.0, fabs(*lo) * 1e-3);
        if (!isfinite(pad)) pad = 1e300;
        *lo = *lo - pad < -1e300 ? -1e300 : *lo - pad;
        *hi = *lo + 2 * pad > 1e300 ? 1e300 : *lo + 2 * pad;
    }
}

/* How many ticks k = 0.. with first + k*step <= last (at most 100; 0 when not finite). The
** loop over the ticks counts with this integer: adding step to a double of 1e20 does nothing. */
static int tick_count(double first, double last, double step) {
    double q = floor((last - first) / step + 1e-6) + 1;
    if (!isfinite(q) || q < 1) return 0;
    return q > 100 ? 100 : (int)q;
}

typedef struct {
    double x0, x1, y0, y1; /* data bounds */
    double left, top, width, height;
} Frame;

static double px(const Frame *f, double x) { return f->left + (x - f->x0) / (f->x1 - f->x0) * f->width; }
static double py(const Frame *f, double y) { return f->top + (1 - (y - f->y0) / (f->y1 - f->y0)) * f->height; }

static void xml_escape(FILE *fp, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", fp);
        else if (*s == '>') fputs("&gt;", fp);
        else if (*s == '&') fputs("&amp;", fp);
        else if (*s == '"') fputs("&quot;", fp);
        else fputc(*s, fp);
    }
}

static void polyline(FILE *fp, const Frame *f, const double *x, const double *y, size_t n, const char *style) {
    fprintf(fp, "<polyline fill=\"none\" %s points=\"", style);
    for (size_t i = 0; i < n && !ferror(fp); i++) fprintf(fp, "%.1f,%.1f ", px(f, x[i]), py(f, y[i]));
    fprintf(fp, "\"/>\n");
}

int metrics_log_plot_svg(FILE *fp, const MetricsLog *log, const char *title, int smooth, const char *name, Err *err) {
    if (smooth < 1) smooth = 1;
    Frame f = {INFINITY, -INFINITY, INFINITY, -INFINITY, 70, 40, 680, 330};
    const MetricsSeries *all[2] = {&log->train, &log->val};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < all[k]->n; i++) {
            double x = all[k]->x[i], y = all[k]->y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            f.x0 = fmin(f.x0, x), f.x1 = fmax(f.x1, x), f.y0 = fmin(f.y0, y), f.y1 = fmax(f.y1, y);
        }
    if (!isfinite(f.x0)) f.x0 = f.x1 = 0; /* no finite point at all */
    if (!isfinite(f.y0)) f.y0 = f.y1 = 0;
    widen(&f.x0, &f.x1);
    widen(&f.y0, &f.y1);
    double ystep = nice_step(f.y1 - f.y0, 6), xstep = nice_step(f.x1 - f.x0, 8);
    double y0 = floor(f.y0 / ystep) * ystep, y1 = ceil(f.y1 / ystep) * ystep;
    if (isfinite(y0) && isfinite(y1) && y1 > y0) f.y0 = y0, f.y1 = y1;

    fprintf(fp, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"420\" viewBox=\"0 0 800 420\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"800\" height=\"420\" fill=\"white\"/>\n");
    fprintf(fp, "<text x=\"400\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">");
    xml_escape(fp, title);
    fprintf(fp, "</text>\n");
    int ny = tick_count(f.y0, f.y1, ystep);
    for (int k = 0; k < ny; k++) {
        double y = f.y0 + k * ystep;
        fprintf(fp, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", f.left, py(&f, y),
                f.left + f.width, py(&f, y));
        fprintf(fp, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", f.left - 6, py(&f, y) + 4, y);
    }
    double xfirst = ceil(f.x0 / xstep) * xstep;
    int nx = tick_count(xfirst, f.x1, xstep);
    for (int k = 0; k < nx; k++) {
        double x = xfirst + k * xstep;
        fprintf(fp, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", px(&f, x), f.top + f.height + 18,
                x);
    }
    fprintf(fp, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", f.left,
            f.top, f.width, f.height);
    fprintf(fp, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", f.left + f.width / 2, 410.0);
    fprintf(fp, "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">loss (nats/token)"
                "</text>\n", f.top + f.height / 2, f.top + f.height / 2);
    const MetricsSeries *tr = &log->train, *va = &log->val;
    if (tr->n) {
        polyline(fp, &f, tr->x, tr->y, tr->n, "stroke=\"#9ecae1\" stroke-width=\"1\"");
        double *avg = malloc(tr->n * sizeof *avg);
        if (!avg) return err_set(err, "%s: out of memory for the moving average of %zu points", name, tr->n);
        double sum = 0;
        for (size_t i = 0; i < tr->n; i++) {
            sum += tr->y[i];
            if (i >= (size_t)smooth) sum -= tr->y[i - smooth];
            avg[i] = sum / (double)(i + 1 < (size_t)smooth ? i + 1 : (size_t)smooth);
        }
        polyline(fp, &f, tr->x, avg, tr->n, "stroke=\"#08519c\" stroke-width=\"2\"");
        free(avg);
    }
    if (va->n) {
        polyline(fp, &f, va->x, va->y, va->n, "stroke=\"#e6550d\" stroke-width=\"1.5\"");
        for (size_t i = 0; i < va->n && !ferror(fp); i++)
            fprintf(fp, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#e6550d\"/>\n", px(&f, va->x[i]),
                    py(&f, va->y[i]));
    }
    fprintf(fp, "<line x1=\"560\" y1=\"56\" x2=\"590\" y2=\"56\" stroke=\"#08519c\" stroke-width=\"2\"/>"
                "<text x=\"596\" y=\"60\">train (mean of %d)</text>\n", smooth);
    if (va->n)
        fprintf(fp, "<line x1=\"560\" y1=\"76\" x2=\"590\" y2=\"76\" stroke=\"#e6550d\" stroke-width=\"2\"/>"
                    "<text x=\"596\" y=\"80\">validation</text>\n");
    fprintf(fp, "</svg>\n");
    /* Every write above goes through fp's buffer; its error flag is sticky, so one check here
    ** sees any of them (the caller's flush or close sees what is still buffered). */
    if (ferror(fp)) return err_set(err, "%s: write failed", name);
    return 0;
}
