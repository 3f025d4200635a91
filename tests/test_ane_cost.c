/*
** test_ane_cost.c — the device-side cost estimate (backend/ane/cost.h): its arithmetic on a
** hand-worked case, its ranges, and that its report says it is an estimate.
*/
#include <string.h>

#include "backend/ane/cost.h"
#include "test.h"

static const AneChipFigures *chip(const char *name) {
    int n;
    const AneChipFigures *c = ane_cost_chips(&n);
    for (int i = 0; i < n; i++)
        if (!strcmp(c[i].chip, name)) return &c[i];
    return NULL;
}

static void test_arithmetic(void) {
    const AneChipFigures *m4 = chip("M4");
    CHECK(m4 && chip("M1") && chip("M5"), "M1, M4 and M5 have figures");
    if (!m4) return;
    /* 100 evaluations, 5.4 TFLOP (1 s at M4's 5.4 TFLOP/s), 120 MB (1 ms at 120 GB/s) */
    AneStepWork w = {100, 5.4e12, 120e6};
    AneCostEstimate e;
    ane_cost_estimate(&w, m4, &e);
    CHECK_CLOSE(e.ms_memory, 1.0, 1e-9, 1e-9, "memory ms");
    CHECK_CLOSE(e.ms_compute_hi, 1000.0, 1e-9, 1e-9, "matmul ms");
    CHECK_CLOSE(e.ms_dispatch_hi, 100 * m4->eval_ms_hi, 1e-9, 1e-9, "dispatch ms");
    CHECK_CLOSE(e.ms_hi, e.ms_dispatch_hi + e.ms_compute_hi + e.ms_memory, 1e-9, 1e-12, "the parts add up");
    CHECK_CLOSE(e.ms_lo, 100 * m4->eval_ms_lo + 1000.0 + 1.0, 1e-9, 1e-12, "lo end");
    int n;
    const AneChipFigures *c = ane_cost_chips(&n);
    for (int i = 0; i < n; i++) {
        ane_cost_estimate(&w, &c[i], &e);
        CHECK(e.ms_lo > 0 && e.ms_lo <= e.ms_hi, "%s: lo %.3f <= hi %.3f", c[i].chip, e.ms_lo, e.ms_hi);
        CHECK(c[i].sources && *c[i].sources, "%s: figures have sources", c[i].chip);
    }
    /* more evaluations, more time: a split plan pays dispatch */
    AneStepWork split = w;
    split.evaluations *= 2;
    AneCostEstimate es;
    ane_cost_estimate(&w, m4, &e);
    ane_cost_estimate(&split, m4, &es);
    CHECK_CLOSE(es.ms_hi - e.ms_hi, 100 * m4->eval_ms_hi, 1e-9, 1e-9, "100 more evaluations cost 100 dispatches");
}

static void test_report_says_estimate(void) {
    AneStepWork w = {24, 54e9, 300e6};
    char buf[2048];
    ane_cost_format(&w, "  ", buf, sizeof buf);
    CHECK(strstr(buf, "ESTIMATE, not a measurement") != NULL, "labelled as an estimate: %s", buf);
    CHECK(strstr(buf, "M1") && strstr(buf, "M4") && strstr(buf, "M5"), "every chip: %s", buf);
    CHECK(strstr(buf, "91 ms") != NULL, "the seed's published step next to it: %s", buf);
    char small[40];
    ane_cost_format(&w, "  ", small, sizeof small);
    CHECK(strlen(small) < sizeof small, "a short buffer is cut and terminated");
}

int main(void) {
    RUN(test_arithmetic);
    RUN(test_report_says_estimate);
    return TEST_SUMMARY();
}
