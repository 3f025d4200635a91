/*
** parallel.c — a minimal pthread pool (see parallel.h). Workers sleep on a condition
** variable between jobs; one job runs at a time. A job either splits [0, n) into one fixed
** chunk per thread (parallel_for) or hands out pieces from a shared counter (parallel_tasks).
*/
#include "parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 256

static struct {
    int n_threads;          /* including the calling thread */
    pthread_t workers[MAX_THREADS];
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    unsigned long generation; /* bumped per job; workers wait for a change */
    unsigned long start_generation; /* generation when the current workers were created */
    int pending;              /* workers still running the current job */
    int quit;
    ParallelFn fn;
    void *ctx;
    int n;
    int grain;                /* 0: one fixed chunk per thread; else pieces of this size from next */
    atomic_int next;          /* parallel_tasks: start of the next piece not yet taken */
} pool = {.n_threads = 1, .lock = PTHREAD_MUTEX_INITIALIZER, .start = PTHREAD_COND_INITIALIZER,
        .done = PTHREAD_COND_INITIALIZER};

static void chunk(int n, int parts, int i, int *begin, int *end) {
    *begin = (int)((long long)n * i / parts);
    *end = (int)((long long)n * (i + 1) / parts);
}

/* The share of thread `index` of the current job: its fixed chunk, or pieces until none are left. */
static void run_share(ParallelFn fn, void *ctx, int n, int parts, int grain, int index) {
    if (grain == 0) {
        int b, e;
        chunk(n, parts, index, &b, &e);
        if (b < e) fn(ctx, b, e, index);
        return;
    }
    for (;;) {
        int b = atomic_fetch_add(&pool.next, grain);
        if (b >= n) return;
        fn(ctx, b, n - b < grain ? n : b + grain, index);
    }
}

static void *worker_main(void *arg) {
    int index = (int)(long)arg; /* 1..n_threads-1; the caller is index 0 */
    pthread_mutex_lock(&pool.lock);
    /* Jobs run before this worker existed are not its business: start from the generation
    ** recorded at creation (not the current one, which a new job may already have bumped). */
    unsigned long seen = pool.start_generation;
    for (;;) {
        while (pool.generation == seen && !pool.quit) pthread_cond_wait(&pool.start, &pool.lock);
        if (pool.quit) break;
        seen = pool.generation;
        ParallelFn fn = pool.fn;
        void *ctx = pool.ctx;
        int n = pool.n, parts = pool.n_threads, grain = pool.grain;
        pthread_mutex_unlock(&pool.lock);
        run_share(fn, ctx, n, parts, grain, index);
        pthread_mutex_lock(&pool.lock);
        if (--pool.pending == 0) pthread_cond_signal(&pool.done);
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

void parallel_shutdown(void) {
    if (pool.n_threads <= 1) return;
    pthread_mutex_lock(&pool.lock);
    pool.quit = 1;
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 1; i < pool.n_threads; i++) pthread_join(pool.workers[i], NULL);
    pool.quit = 0;
    pool.n_threads = 1;
}

int parallel_init(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    if (n_threads == pool.n_threads) return 0;
    parallel_shutdown();
    pool.n_threads = n_threads;
    pool.start_generation = pool.generation;
    for (int i = 1; i < n_threads; i++) {
        if (pthread_create(&pool.workers[i], NULL, worker_main, (void *)(long)i) != 0) {
            pool.n_threads = i; /* keep the ones that started */
            return -1;
        }
    }
    return 0;
}

int parallel_threads(void) { return pool.n_threads; }

static void run_job(int n, int grain, ParallelFn fn, void *ctx) {
    int parts = pool.n_threads;
    pthread_mutex_lock(&pool.lock);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.grain = grain;
    atomic_store(&pool.next, 0);
    pool.pending = parts - 1;
    pool.generation++;
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.lock);
    run_share(fn, ctx, n, parts, grain, 0);
    pthread_mutex_lock(&pool.lock);
    while (pool.pending > 0) pthread_cond_wait(&pool.done, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
}

void parallel_for(int n, ParallelFn fn, void *ctx) {
    if (n <= 0) return;
    if (pool.n_threads <= 1 || n == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    run_job(n, 0, fn, ctx);
}

void parallel_tasks(int n, int grain, ParallelFn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (pool.n_threads <= 1 || n <= grain) {
        for (int b = 0; b < n; b += grain) fn(ctx, b, n - b < grain ? n : b + grain, 0);
        return;
    }
    run_job(n, grain, fn, ctx);
}

int parallel_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
