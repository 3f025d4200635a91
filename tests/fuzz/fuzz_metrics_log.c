/*
** fuzz_metrics_log.c — the metrics log `plot` reads: metrics_log_parse on any bytes, then the
** SVG drawing of what parsed (which once looped forever on large values: the harness's per-input
** timeout catches that). What parsed is written back as JSON lines (one per point, %.17g, and
** +-1e999 for infinities, which cJSON reads as such) and must parse to the same points.
*/
#include <math.h>

#include "fuzz_common.h"
#include "io/metrics_log.h"

static void put_number(FILE *fp, double x) {
    if (isinf(x)) fputs(x > 0 ? "1e999" : "-1e999", fp);
    else fprintf(fp, "%.17g", x);
}

static void check_series(const MetricsSeries *a, const MetricsSeries *b, const char *what) {
    FUZZ_CHECK(a->n == b->n, "%s: %zu points -> %zu", what, a->n, b->n);
    FUZZ_CHECK(fuzz_same_bits(a->x, b->x, a->n * sizeof(double)) && fuzz_same_bits(a->y, b->y, a->n * sizeof(double)),
               "%s: values", what);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    MetricsLog a = {{0}, {0}}, b = {{0}, {0}};
    Err err;
    if (metrics_log_parse((const char *)data, size, "fuzz.jsonl", &a, &err) != 0) {
        metrics_log_free(&a);
        return fuzz_rejected("metrics_log_parse", err.msg);
    }
    FILE *svg = fopen("/dev/null", "w");
    FUZZ_CHECK(svg, "open /dev/null");
    FUZZ_CHECK(metrics_log_plot_svg(svg, &a, "fuzz <&>", 20, "/dev/null", &err) == 0, "plot: %s", err.msg);
    fclose(svg);
    char *text = NULL;
    size_t text_len = 0;
    FILE *fp = open_memstream(&text, &text_len);
    FUZZ_CHECK(fp, "open_memstream");
    const MetricsSeries *series[2] = {&a.train, &a.val};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < series[k]->n; i++) {
            fputs("{\"step\": ", fp);
            put_number(fp, series[k]->x[i]);
            fputs(k == 0 ? ", \"loss\": " : ", \"val_loss\": ", fp);
            put_number(fp, series[k]->y[i]);
            fputs("}\n", fp);
        }
    FUZZ_CHECK(fclose(fp) == 0, "memstream");
    FUZZ_CHECK(metrics_log_parse(text, text_len, "written.jsonl", &b, &err) == 0, "reparse: %s", err.msg);
    check_series(&a.train, &b.train, "loss");
    check_series(&a.val, &b.val, "val_loss");
    free(text);
    metrics_log_free(&a);
    metrics_log_free(&b);
    return 0;
}
