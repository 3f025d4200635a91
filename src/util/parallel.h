/*
** parallel.h — the program's one thread pool: every thread anetrain starts is started here
** (the BLAS library's own threads aside).
**
** Three ways to use it:
**
**   fork-join       parallel_for splits [0, n) into one contiguous chunk per thread, the same
**                   way for the same thread count, so results are deterministic for a given
**                   --threads; parallel_tasks balances the load instead, for work whose pieces
**                   are independent. The caller takes part (it is worker 0) and returns when
**                   every piece is done. Idle workers sleep on a condition variable.
**   team            parallel_team runs one function on `members` threads at once (the caller
**                   is member 0), which meet at parallel_team_barrier where they need each
**                   other's results: for work split into many short phases (generation's decode
**                   step, ~45 matrix-vector products), where waking sleeping threads per phase
**                   would cost more than the phase. After a team job the workers spin for about
**                   a millisecond before they sleep, so back-to-back team jobs start at once.
**   background      parallel_async queues fn(ctx) on the background lane, one more thread of
**                   the pool (started at the first call) that runs such jobs one at a time in
**                   the order submitted, while the caller continues; parallel_async_wait waits
**                   for one of them (and so for every earlier one) or for all.
**
** Nesting is safe and never deadlocks: a call of parallel_for, parallel_tasks or parallel_team
** from inside a pool job (any member or worker of a running job, or a background job) runs
** inline on the calling thread: parallel_for in the very chunks it would have had on the pool
** (chunk i as worker i, in order), so a nested call computes what a top-level one would;
** parallel_tasks in its pieces in order, as worker 0; parallel_team as a team of one member
** (its barriers are then no-ops). The same holds for a call from any other thread while the pool
** is busy with a job. parallel_async from a background job runs the job at once (inline), so a
** background job never waits for the lane it runs on. Per-thread scratch selected by the worker
** index is therefore only private among the pieces of one call: two calls that may run at once
** (a background job and the caller's fork-join work) must not share such scratch.
**
** BLAS has its own threads; the pool never calls BLAS itself. Work on the pool that calls BLAS
** concurrently must run with a single-threaded BLAS library (util/blas.h).
**
** Memory ordering (the sanitizer build does not check data races, so here is the argument):
**   - A job's description (function, context, sizes) is written by the caller before it bumps
**     the pool's generation counter (a sequentially consistent atomic); a worker reads the
**     description only after it loaded the new generation (acquire), so it sees the whole
**     description. Whatever the caller wrote before starting the job is visible to the job's
**     pieces for the same reason.
**   - A worker finishes by decrementing `pending` (acq_rel); the caller returns only once it
**     loaded pending == 0 (acquire, or under the lock the last worker signals under), so
**     everything the pieces wrote is visible to the caller when parallel_for/tasks/team returns.
**   - Sleeping: a worker that gives up spinning increments `sleeping` under the lock, then looks
**     at the generation once more under the lock before it waits; the caller bumps the
**     generation, then reads `sleeping` (both sequentially consistent), and broadcasts under the
**     lock when it is not 0. Of two threads doing store-then-load on two atomics in that order,
**     at least one sees the other's store: either the worker sees the new job, or the caller sees
**     it sleeping and wakes it (it is then waiting, as it held the lock from its look until the
**     wait).
**   - parallel_team_barrier: the last member to arrive resets the count and bumps the phase
**     (release); the others spin until they load the new phase (acquire). Arrivals are acq_rel,
**     so what any member wrote before the barrier is visible to every member after it.
**   - Background jobs: submitting and completing both happen under the lane's mutex, so what the
**     submitter wrote before parallel_async is visible to the job, and what the job wrote is
**     visible to whoever returned from parallel_async_wait for it.
**
** The pool is controlled (parallel_init, parallel_shutdown) from one thread, the one that uses it,
** with no job running; a resize and a shutdown wait for the background lane to drain first.
*/
#ifndef ANETRAIN_PARALLEL_H
#define ANETRAIN_PARALLEL_H

/* worker is the chunk's index in [0, parallel_threads()), for per-thread scratch. */
typedef void (*ParallelFn)(void *ctx, int begin, int end, int worker);
/* member in [0, members): the thread's place in the team. */
typedef void (*ParallelTeamFn)(void *ctx, int member, int members);
typedef void (*ParallelAsyncFn)(void *ctx);

/* Starts the pool with n_threads (>= 1; 1 means run inline). Safe to call again to resize.
** Returns -1 if a thread could not start (the pool keeps the ones that did). */
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
/* Runs fn(ctx, member, m) on m = min(members, parallel_threads()) threads at once (members <= 0:
** all of them); the caller is member 0. Returns when every member returned. */
void parallel_team(int members, ParallelTeamFn fn, void *ctx);
/* Inside a team job: waits until every member of the team arrived here (spins, then yields the
** CPU). Every member must call it the same number of times. Elsewhere a no-op. */
void parallel_team_barrier(void);

/* Queues fn(ctx) on the background lane and returns its ticket (> 0) at once; the lane runs jobs
** one at a time in the order submitted. From a background job itself, or if the lane cannot
** start, runs fn(ctx) now and returns a ticket that is already done. */
unsigned long parallel_async(ParallelAsyncFn fn, void *ctx);
/* Waits until the job with this ticket (and so every job submitted before it) has finished;
** ticket 0: until every job submitted so far has. */
void parallel_async_wait(unsigned long ticket);

/* Waits for the background lane, then stops every thread (the pool runs inline until the next parallel_init). */
void parallel_shutdown(void);

/* Number of online CPUs (at least 1). */
int parallel_cpu_count(void);

#endif
