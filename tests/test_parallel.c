/*
** test_parallel.c — the thread pool (util/parallel.h): parallel_for's fixed chunks and
** parallel_tasks' pieces handed out on demand both cover [0, n) exactly once, with pieces of
** the promised size and worker indexes that select per-thread scratch safely.
*/
#include "util/parallel.h"

#include <stdatomic.h>

#include "test.h"

enum { MAX_N = 5000, MAX_WORKERS = 8 };

typedef struct {
    atomic_int visits[MAX_N];
    atomic_int bad_range;  /* pieces outside [0, n) or empty */
    atomic_int too_long;   /* parallel_tasks pieces longer than the grain */
    atomic_int bad_worker; /* worker index outside [0, parallel_threads()) */
    atomic_int in_worker[MAX_WORKERS]; /* how many pieces are running under each worker index now */
    atomic_int shared_scratch;         /* two pieces ran at once under one worker index */
    int n, grain, threads;
} Record;

static void record_piece(void *ctx, int begin, int end, int worker) {
    Record *r = ctx;
    if (begin < 0 || end > r->n || begin >= end) atomic_fetch_add(&r->bad_range, 1);
    if (r->grain > 0 && end - begin > r->grain) atomic_fetch_add(&r->too_long, 1);
    if (worker < 0 || worker >= r->threads || worker >= MAX_WORKERS) {
        atomic_fetch_add(&r->bad_worker, 1);
        return;
    }
    if (atomic_fetch_add(&r->in_worker[worker], 1) != 0) atomic_fetch_add(&r->shared_scratch, 1);
    for (int i = begin; i < end && i >= 0 && i < r->n; i++) {
        atomic_fetch_add(&r->visits[i], 1);
        for (volatile int spin = 0; spin < 200; spin++) {} /* long enough for the threads to interleave */
    }
    atomic_fetch_sub(&r->in_worker[worker], 1);
}

/* grain 0: parallel_for; else parallel_tasks with that grain. */
static void check_cover(int threads, int n, int grain) {
    static Record r;
    memset(&r, 0, sizeof r);
    r.n = n;
    r.grain = grain;
    r.threads = threads;
    if (grain == 0) parallel_for(n, record_piece, &r);
    else parallel_tasks(n, grain, record_piece, &r);
    int wrong = 0;
    for (int i = 0; i < n; i++) wrong += atomic_load(&r.visits[i]) != 1;
    const char *what = grain ? "parallel_tasks" : "parallel_for";
    CHECK(wrong == 0, "%s threads=%d n=%d grain=%d: %d indexes not visited exactly once", what, threads, n, grain,
          wrong);
    CHECK(atomic_load(&r.bad_range) == 0, "%s threads=%d n=%d grain=%d: %d pieces outside [0, n) or empty", what,
          threads, n, grain, atomic_load(&r.bad_range));
    CHECK(atomic_load(&r.too_long) == 0, "%s threads=%d n=%d grain=%d: %d pieces longer than the grain", what,
          threads, n, grain, atomic_load(&r.too_long));
    CHECK(atomic_load(&r.bad_worker) == 0, "%s threads=%d n=%d grain=%d: %d pieces with a worker index out of range",
          what, threads, n, grain, atomic_load(&r.bad_worker));
    CHECK(atomic_load(&r.shared_scratch) == 0, "%s threads=%d n=%d grain=%d: %d pieces overlapped under one worker",
          what, threads, n, grain, atomic_load(&r.shared_scratch));
}

static void test_cover(void) {
    const int threads[] = {1, 2, 3, 5};
    const int sizes[] = {0, 1, 2, 7, 64, 1000, MAX_N};
    const int grains[] = {0, 1, 3, 8, 64, 6000};
    for (size_t a = 0; a < sizeof threads / sizeof *threads; a++) {
        parallel_init(threads[a]);
        CHECK(parallel_threads() == threads[a], "parallel_init(%d) gave %d threads", threads[a], parallel_threads());
        for (size_t b = 0; b < sizeof sizes / sizeof *sizes; b++)
            for (size_t c = 0; c < sizeof grains / sizeof *grains; c++) check_cover(threads[a], sizes[b], grains[c]);
    }
    parallel_init(1);
}

/* Many short jobs in a row, alternating the two kinds: no piece of one job leaks into the next. */
static void test_back_to_back(void) {
    parallel_init(3);
    for (int round = 0; round < 300; round++) check_cover(3, 1 + round % 37, round % 2 ? 1 + round % 5 : 0);
    parallel_init(1);
}

int main(void) {
    RUN(test_cover);
    RUN(test_back_to_back);
    parallel_shutdown();
    return TEST_SUMMARY();
}
