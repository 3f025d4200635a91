/*
** test.h — the smallest useful test harness: named checks, a summary line, an exit code.
**
** Each test binary defines its tests as functions and runs them from main with RUN().
** A failed CHECK prints file:line and the message, and the test goes on, so one run shows
** every failure. The binary ends with "N passed, N failed" and exits 1 on any failure.
** A test that cannot run here (an optional reference not installed) is reported with SKIP:
** one "skip" line saying why, counted neither as passed nor as failed; the summary line then
** ends with ", N skipped".
*/
#ifndef ANETRAIN_TEST_H
#define ANETRAIN_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_checks_failed_in_test;
static int tests_passed, tests_failed, tests_skipped;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            test_checks_failed_in_test++;                                                          \
            fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, atol, rtol, what)                                                        \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        CHECK(fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_), "%s: got %.9g, expected %.9g", (what), a_, b_); \
    } while (0)

/* ANETRAIN_TEST_ONLY=a,b runs only the tests named a and b (tests/run.sh uses it to run the
** determinism tests again under another BLAS kernel); the others are not run and not counted. */
static int test_selected(const char *name) {
    const char *only = getenv("ANETRAIN_TEST_ONLY");
    if (!only || !*only) return 1;
    size_t n = strlen(name);
    for (const char *p = only; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p += len + (end != NULL);
    }
    return 0;
}

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        if (!test_selected(#fn)) break;                                                            \
        test_checks_failed_in_test = 0;                                                            \
        fn();                                                                                      \
        if (test_checks_failed_in_test) {                                                          \
            tests_failed++;                                                                        \
            printf("FAIL %s\n", #fn);                                                              \
        } else {                                                                                   \
            tests_passed++;                                                                        \
            printf("ok   %s\n", #fn);                                                              \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

/* SKIP(test_fn, "why", ...): the test is not run and not counted as passed. */
#define SKIP(fn, ...)                                                                              \
    do {                                                                                           \
        tests_skipped++;                                                                           \
        printf("skip %s: ", #fn);                                                                  \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
    } while (0)

/* Prints the closing line and returns the exit code; a binary that ran no test at all (a
** selection that matched none) fails. */
static int test_summary(void) {
    if (tests_passed + tests_failed + tests_skipped == 0) {
        const char *only = getenv("ANETRAIN_TEST_ONLY");
        fprintf(stderr, "  FAIL: no test ran (ANETRAIN_TEST_ONLY=%s matches none)\n", only ? only : "");
        tests_failed = 1;
    }
    if (tests_skipped) printf("%d passed, %d failed, %d skipped\n", tests_passed, tests_failed, tests_skipped);
    else printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}

#define TEST_SUMMARY() test_summary()

#endif
