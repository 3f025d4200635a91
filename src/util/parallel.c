/*
** parallel.c — the thread pool (see parallel.h for its uses and its memory-ordering argument).
**
** One job runs at a time on the workers; whoever holds `owner` runs it (the caller is worker 0).
** A job either splits [0, n) into one fixed chunk per thread (parallel_for), hands out pieces
** from a shared counter (parallel_tasks), or runs one function on every member of a team
** (parallel_team). Workers wait for the next job by sleeping on a condition variable, after a
** team job first by spinning for SPIN_SECONDS. The background lane is one more thread with a
** queue of its own (parallel_async).
*/
#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"

#define MAX_THREADS 256
#define SPIN_SECONDS 1e-3 /* how long workers spin after a team job before they sleep */

enum { JOB_FOR, JOB_TASKS, JOB_TEAM };
enum { ROLE_NONE, ROLE_WORKER, ROLE_LANE }; /* what the current thread is to the pool */
enum { LANE_QUEUE = 64 };                   /* background jobs queued at most (parallel_async waits beyond) */

/* The current job, written by its caller before it bumps the generation (parallel.h). */
typedef struct {
    int kind;
    ParallelFn fn;
    ParallelTeamFn team_fn;
    void *ctx;
    int n, grain; /* JOB_FOR, JOB_TASKS */
    int parts;    /* threads that take part: n_threads, or the team's members */
} Job;

static struct {
    int n_threads;                  /* including the calling thread */
    pthread_t workers[MAX_THREADS];
    pthread_mutex_t owner;          /* held by the thread running a job (trylock: busy means inline) */
    pthread_mutex_t lock;           /* with start and done: sleeping and waking */
    pthread_cond_t start, done;
    atomic_ulong generation;        /* bumped per job; workers wait for a change */
    unsigned long start_generation; /* generation when the current workers were created */
    atomic_int pending;             /* workers still in the current job */
    atomic_int sleeping;            /* workers waiting on `start` */
    atomic_int quit;
    Job job;
    atomic_int next;                /* parallel_tasks: start of the next piece not yet taken */
    atomic_int arrived;             /* team barrier: members arrived in the current phase */
    atomic_uint phase;              /* team barrier: bumped by the last member to arrive */
} pool = {.n_threads = 1, .owner = PTHREAD_MUTEX_INITIALIZER, .lock = PTHREAD_MUTEX_INITIALIZER,
          .start = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

/* The background lane: job k (k = 1, 2, ...) sits in queue[(k - 1) % LANE_QUEUE] until done. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    pthread_t thread;
    int started, quit;
    struct {
        ParallelAsyncFn fn;
        void *ctx;
    } queue[LANE_QUEUE];
    unsigned long submitted, completed; /* tickets handed out, jobs finished (in order) */
} lane = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static _Thread_local int tl_role;         /* ROLE_*: pool threads run nested calls inline */
static _Thread_local int tl_team_members; /* members of the team this thread runs in (0: none) */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void chunk(int n, int parts, int i, int *begin, int *end) {
    *begin = (int)((long long)n * i / parts);
    *end = (int)((long long)n * (i + 1) / parts);
}

/* The share of thread `index` of a job: its fixed chunk, its pieces until none are left, or its
** run as a team member. */
static void run_share(const Job *j, int index) {
    if (j->kind == JOB_TEAM) {
        int outer = tl_team_members;
        tl_team_members = j->parts;
        j->team_fn(j->ctx, index, j->parts);
        tl_team_members = outer;
        return;
    }
    if (j->kind == JOB_FOR) {
        int b, e;
        chunk(j->n, j->parts, index, &b, &e);
        if (b < e) j->fn(j->ctx, b, e, index);
        return;
    }
    for (;;) {
        int b = atomic_fetch_add(&pool.next, j->grain);
        if (b >= j->n) return;
        j->fn(j->ctx, b, j->n - b < j->grain ? j->n : b + j->grain, index);
    }
}

/* Waits until the generation differs from `seen` or the pool quits: spinning first when `spin`. */
static void wait_for_job(unsigned long seen, int spin) {
    if (spin) {
        double t0 = now_seconds();
        for (int spins = 1;; spins++) {
            if (atomic_load(&pool.generation) != seen || atomic_load(&pool.quit)) return;
            cpu_relax();
            if ((spins & 1023) == 0 && now_seconds() - t0 >= SPIN_SECONDS) break;
        }
    }
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add(&pool.sleeping, 1);
    while (atomic_load(&pool.generation) == seen && !atomic_load(&pool.quit)) pthread_cond_wait(&pool.start, &pool.lock);
    atomic_fetch_sub(&pool.sleeping, 1);
    pthread_mutex_unlock(&pool.lock);
}

static void *worker_main(void *arg) {
    int index = (int)(long)arg; /* 1..n_threads-1; the caller is index 0 */
    tl_role = ROLE_WORKER;
    /* Jobs run before this worker existed are not its business: start from the generation
    ** recorded at creation (not the current one, which a new job may already have bumped). */
    unsigned long seen = pool.start_generation;
    int spin = 0;
    for (;;) {
        wait_for_job(seen, spin);
        if (atomic_load(&pool.quit)) break;
        seen = atomic_load(&pool.generation);
        Job j = pool.job; /* stays as it is until this worker decrements pending */
        if (index < j.parts) run_share(&j, index);
        spin = j.kind == JOB_TEAM;
        /* every worker counts, members or not: the caller rewrites pool.job only when all have read it */
        if (atomic_fetch_sub(&pool.pending, 1) == 1 && j.kind != JOB_TEAM) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    return NULL;
}

void parallel_shutdown(void) {
    parallel_async_wait(0);
    pthread_mutex_lock(&lane.lock);
    int had_lane = lane.started;
    lane.quit = 1;
    pthread_cond_broadcast(&lane.work);
    pthread_mutex_unlock(&lane.lock);
    if (had_lane) pthread_join(lane.thread, NULL);
    lane.started = 0;
    lane.quit = 0;
    if (pool.n_threads <= 1) return;
    pthread_mutex_lock(&pool.lock);
    atomic_store(&pool.quit, 1);
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 1; i < pool.n_threads; i++) pthread_join(pool.workers[i], NULL);
    atomic_store(&pool.quit, 0);
    pool.n_threads = 1;
}

int parallel_init(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    if (n_threads == pool.n_threads) return 0;
    parallel_shutdown();
    pool.n_threads = n_threads;
    pool.start_generation = atomic_load(&pool.generation);
    for (int i = 1; i < n_threads; i++) {
        if (pthread_create(&pool.workers[i], NULL, worker_main, (void *)(long)i) != 0) {
            pool.n_threads = i; /* keep the ones that started */
            return -1;
        }
    }
    return 0;
}

int parallel_threads(void) { return pool.n_threads; }

/* Takes the workers for a job: 0 when the call must run inline (one thread, a pool thread, or the
** pool busy with another job). */
static int take_pool(void) {
    return tl_role == ROLE_NONE && pool.n_threads > 1 && pthread_mutex_trylock(&pool.owner) == 0;
}

/* Runs job j on the workers (take_pool succeeded) and gives them back. */
static void run_job(const Job *j) {
    pool.job = *j;
    atomic_store(&pool.next, 0);
    atomic_store(&pool.pending, pool.n_threads - 1);
    atomic_fetch_add(&pool.generation, 1);
    if (atomic_load(&pool.sleeping) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.start);
        pthread_mutex_unlock(&pool.lock);
    }
    run_share(j, 0);
    if (j->kind == JOB_TEAM) { /* the workers come back at once from a team's last barrier: spin */
        for (int spins = 0; atomic_load(&pool.pending) > 0; spins++) {
            if (spins < 4000) cpu_relax();
            else sched_yield();
        }
    } else {
        pthread_mutex_lock(&pool.lock);
        while (atomic_load(&pool.pending) > 0) pthread_cond_wait(&pool.done, &pool.lock);
        pthread_mutex_unlock(&pool.lock);
    }
    pthread_mutex_unlock(&pool.owner);
}

void parallel_for(int n, ParallelFn fn, void *ctx) {
    if (n <= 0) return;
    if (pool.n_threads <= 1 || n == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    Job j = {JOB_FOR, fn, NULL, ctx, n, 0, pool.n_threads};
    if (take_pool()) {
        run_job(&j);
        return;
    }
    for (int i = 0; i < j.parts; i++) run_share(&j, i); /* inline: the same chunks, in order */
}

void parallel_tasks(int n, int grain, ParallelFn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (pool.n_threads > 1 && n > grain && take_pool()) {
        run_job(&(Job){JOB_TASKS, fn, NULL, ctx, n, grain, pool.n_threads});
        return;
    }
    for (int b = 0; b < n; b += grain) fn(ctx, b, n - b < grain ? n : b + grain, 0);
}

void parallel_team(int members, ParallelTeamFn fn, void *ctx) {
    if (members <= 0 || members > pool.n_threads) members = pool.n_threads;
    Job j = {JOB_TEAM, NULL, fn, ctx, 0, 0, members};
    if (members > 1 && take_pool()) {
        run_job(&j);
        return;
    }
    j.parts = 1; /* inline: a team of one, whose barriers return at once */
    run_share(&j, 0);
}

void parallel_team_barrier(void) {
    int n = tl_team_members;
    if (n <= 1) return;
    unsigned ph = atomic_load_explicit(&pool.phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&pool.arrived, 1, memory_order_acq_rel) == n - 1) {
        atomic_store_explicit(&pool.arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&pool.phase, ph + 1, memory_order_release);
        return;
    }
    /* Spins, then yields the CPU (the machine may have fewer free cores than members). */
    for (int spins = 0; atomic_load_explicit(&pool.phase, memory_order_acquire) == ph; spins++) {
        if (spins < 4000) cpu_relax();
        else sched_yield();
    }
}

/* ------------------------------------------------------------------ the background lane */

static void *lane_main(void *arg) {
    (void)arg;
    tl_role = ROLE_LANE;
    pthread_mutex_lock(&lane.lock);
    for (;;) {
        while (lane.completed == lane.submitted && !lane.quit) pthread_cond_wait(&lane.work, &lane.lock);
        if (lane.completed == lane.submitted) break; /* quit, with nothing left */
        int slot = (int)(lane.completed % LANE_QUEUE);
        ParallelAsyncFn fn = lane.queue[slot].fn;
        void *ctx = lane.queue[slot].ctx;
        pthread_mutex_unlock(&lane.lock);
        fn(ctx);
        pthread_mutex_lock(&lane.lock);
        lane.completed++;
        pthread_cond_broadcast(&lane.done);
    }
    pthread_mutex_unlock(&lane.lock);
    return NULL;
}

unsigned long parallel_async(ParallelAsyncFn fn, void *ctx) {
    if (tl_role == ROLE_LANE) { /* a background job's own background job: now, not after itself */
        fn(ctx);
        return 1; /* parallel_async_wait on the lane returns at once */
    }
    pthread_mutex_lock(&lane.lock);
    if (!lane.started) {
        lane.quit = 0;
        if (pthread_create(&lane.thread, NULL, lane_main, NULL) != 0) {
            unsigned long done = lane.submitted; /* nothing queued: every ticket so far is done */
            pthread_mutex_unlock(&lane.lock);
            fn(ctx);
            return done ? done : 1;
        }
        lane.started = 1;
    }
    while (lane.submitted - lane.completed >= LANE_QUEUE) pthread_cond_wait(&lane.done, &lane.lock);
    int slot = (int)(lane.submitted % LANE_QUEUE);
    lane.queue[slot].fn = fn;
    lane.queue[slot].ctx = ctx;
    unsigned long ticket = ++lane.submitted;
    pthread_cond_signal(&lane.work);
    pthread_mutex_unlock(&lane.lock);
    return ticket;
}

void parallel_async_wait(unsigned long ticket) {
    if (tl_role == ROLE_LANE) return; /* every job before the running one is done; later ones cannot be waited for */
    pthread_mutex_lock(&lane.lock);
    if (ticket == 0 || ticket > lane.submitted) ticket = lane.submitted;
    while (lane.completed < ticket) pthread_cond_wait(&lane.done, &lane.lock);
    pthread_mutex_unlock(&lane.lock);
}

int parallel_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
