/*
** parallel.h — a fixed pool of worker threads for the non-BLAS work.
**
** parallel_for splits [0, n) into one contiguous chunk per thread, the same way for
** the same thread count, so results are deterministic for a given --threads;
** parallel_tasks balances the load instead, for work whose pieces are independent. BLAS has
** its own threads; the two never run at the same time (the caller sequences them).
*/
#ifndef ANETRAIN_PARALLEL_H
#define ANETRAIN_PARALLEL_H

/* worker is the chunk's index in [0, parallel_threads()), for per-thread scratch. */
typedef void (*ParallelFn)(void *ctx, int begin, int end, int worker);

/* Starts the pool with n_threads (>= 1; 1 means run inline). Safe to call again to resize. */
int parallel_init(int n_threads);
int parallel_threads(void);
/* Runs fn(ctx, begin, end, worker) over [0, n) in up to parallel_threads() chunks; returns when all finish. */
void parallel_for(int n, ParallelFn fn, void *ctx);
/* Runs fn over [0, n) in pieces of `grain` (the last may be shorter) that the threads take
** from a shared counter as they finish the previous one, so a thread slowed down (by BLAS's
** spinning threads, or another process) takes fewer. Which thread runs a piece varies from
** run to run: fn must compute the same whichever worker runs it (worker only picks scratch),
** which keeps results deterministic. */
void parallel_tasks(int n, int grain, ParallelFn fn, void *ctx);
void parallel_shutdown(void);

/* Number of online CPUs (at least 1). */
int parallel_cpu_count(void);

#endif
