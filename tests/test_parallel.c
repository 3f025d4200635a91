/*
** test_parallel.c — the thread pool (util/parallel.h): parallel_for's fixed chunks and
** parallel_tasks' pieces handed out on demand both cover [0, n) exactly once, with pieces of
** the promised size and worker indexes that select per-thread scratch safely; team jobs meet at
** their barriers (every member sees every other's writes of the previous phase), with fewer
** members than threads too; background jobs run in order while the caller continues and are
** waited for by ticket or all at once; nested calls (fork-join in a piece, in a team member, in
** a background job; a background job's own background job) finish, never deadlock, and
** parallel_for nested computes in the same chunks as at top level; shutting down or resizing
** waits for queued background jobs.
*/
#include "util/parallel.h"

#include <sched.h>
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

/* ------------------------------------------------------------------ team jobs */

enum { TEAM_PHASES = 50, TEAM_MAX = 8 };

typedef struct {
    int value[TEAM_MAX]; /* plain ints: the barrier must make them visible */
    atomic_int wrong, members_seen, calls;
} TeamRecord;

/* Per phase every member writes its value, meets the others, checks all of them, meets again. */
static void team_phases(void *ctx, int member, int members) {
    TeamRecord *r = ctx;
    atomic_fetch_add(&r->calls, 1);
    if (member == 0) atomic_store(&r->members_seen, members);
    for (int ph = 0; ph < TEAM_PHASES; ph++) {
        r->value[member] = ph * 100 + member;
        parallel_team_barrier();
        for (int i = 0; i < members; i++)
            if (r->value[i] != ph * 100 + i) atomic_fetch_add(&r->wrong, 1);
        parallel_team_barrier();
    }
}

static void test_team(void) {
    const int threads[] = {1, 2, 3, 4};
    for (size_t a = 0; a < sizeof threads / sizeof *threads; a++) {
        parallel_init(threads[a]);
        for (int members = 0; members <= threads[a] + 1; members++) {
            int want = members <= 0 || members > threads[a] ? threads[a] : members;
            for (int round = 0; round < 5; round++) { /* back to back: the workers are still spinning */
                static TeamRecord r;
                memset(&r, 0, sizeof r);
                parallel_team(members, team_phases, &r);
                CHECK(atomic_load(&r.members_seen) == want && atomic_load(&r.calls) == want,
                      "threads %d, members %d: %d members ran (%d calls), expected %d", threads[a], members,
                      atomic_load(&r.members_seen), atomic_load(&r.calls), want);
                CHECK(atomic_load(&r.wrong) == 0, "threads %d, members %d: %d stale values after a barrier",
                      threads[a], members, atomic_load(&r.wrong));
            }
        }
        /* after a team job, a fork-join job still works (the workers go from spinning to it) */
        check_cover(threads[a], 1000, 0);
        check_cover(threads[a], 1000, 7);
    }
    parallel_team_barrier(); /* outside a team: a no-op */
    parallel_init(1);
}

/* ------------------------------------------------------------------ background jobs */

enum { ASYNC_JOBS = 200 };

typedef struct {
    atomic_int order[ASYNC_JOBS]; /* the position in which each job ran */
    atomic_int ran;
    atomic_int release;           /* the first job waits for this */
    int index[ASYNC_JOBS];
} AsyncRecord;

typedef struct {
    AsyncRecord *r;
    int i;
} AsyncArg;

static void async_job(void *ctx) {
    AsyncArg *a = ctx;
    if (a->i == 0)
        while (!atomic_load(&a->r->release)) sched_yield();
    atomic_store(&a->r->order[a->i], atomic_fetch_add(&a->r->ran, 1));
}

static void test_async(void) {
    const int threads[] = {1, 3};
    for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
        parallel_init(threads[t]);
        static AsyncRecord r;
        static AsyncArg args[ASYNC_JOBS];
        memset(&r, 0, sizeof r);
        unsigned long tickets[ASYNC_JOBS];
        for (int i = 0; i < ASYNC_JOBS; i++) { /* more than the queue holds: submit waits for room */
            args[i] = (AsyncArg){&r, i};
            if (i == 1) { /* the first job blocks until the caller, still running, releases it */
                CHECK(atomic_load(&r.ran) == 0, "a background job finished before it was released");
                atomic_store(&r.release, 1);
            }
            tickets[i] = parallel_async(async_job, &args[i]);
            CHECK(tickets[i] > 0 && (i == 0 || tickets[i] > tickets[i - 1]), "tickets must grow: %lu after %lu",
                  tickets[i], i ? tickets[i - 1] : 0);
        }
        parallel_async_wait(tickets[ASYNC_JOBS / 2]);
        CHECK(atomic_load(&r.ran) >= ASYNC_JOBS / 2 + 1, "waited for job %d, only %d ran", ASYNC_JOBS / 2,
              atomic_load(&r.ran));
        parallel_async_wait(0);
        CHECK(atomic_load(&r.ran) == ASYNC_JOBS, "waited for all, %d of %d ran", atomic_load(&r.ran), ASYNC_JOBS);
        int out_of_order = 0;
        for (int i = 0; i < ASYNC_JOBS; i++) out_of_order += atomic_load(&r.order[i]) != i;
        CHECK(out_of_order == 0, "%d background jobs ran out of the order submitted", out_of_order);
        /* the caller's fork-join work runs on the pool while a background job is in flight */
        memset(&r, 0, sizeof r);
        args[0] = (AsyncArg){&r, 0};
        unsigned long blocked = parallel_async(async_job, &args[0]);
        check_cover(threads[t], 1000, 0);
        check_cover(threads[t], 1000, 3);
        atomic_store(&r.release, 1);
        parallel_async_wait(blocked);
        CHECK(atomic_load(&r.ran) == 1, "the blocked background job did not run");
        parallel_async_wait(0); /* nothing queued: returns at once */
    }
    parallel_init(1);
}

/* ------------------------------------------------------------------ nesting */

enum { NEST_N = 97 };

typedef struct {
    int n;
    int begin[MAX_WORKERS], end[MAX_WORKERS]; /* the chunks a parallel_for of n gave, by worker */
    atomic_int visits[NEST_N];
} Chunks;

static void record_chunk(void *ctx, int begin, int end, int worker) {
    Chunks *c = ctx;
    if (worker >= 0 && worker < MAX_WORKERS) {
        c->begin[worker] = begin;
        c->end[worker] = end;
    }
    for (int i = begin; i < end; i++) atomic_fetch_add(&c->visits[i], 1);
}

typedef struct {
    Chunks top;         /* a top-level parallel_for's chunks */
    Chunks inner[16];   /* the nested calls' */
    atomic_int inner_used, team_inner, async_inner, lane_nested;
} Nest;

static Nest nest;

/* Each piece runs a whole parallel_for of NEST_N of its own. */
static void nested_for_piece(void *ctx, int begin, int end, int worker) {
    (void)ctx;
    (void)worker;
    for (int i = begin; i < end; i++) {
        int k = atomic_fetch_add(&nest.inner_used, 1);
        if (k >= 16) continue;
        nest.inner[k].n = NEST_N;
        parallel_for(NEST_N, record_chunk, &nest.inner[k]);
    }
}

static void nested_team_member(void *ctx, int member, int members) {
    (void)ctx;
    (void)members;
    if (member != 1 % members) return;
    static Chunks c;
    memset(&c, 0, sizeof c);
    parallel_for(NEST_N, record_chunk, &c);
    int ok = 1;
    for (int i = 0; i < NEST_N; i++) ok &= atomic_load(&c.visits[i]) == 1;
    atomic_store(&nest.team_inner, ok);
}

static void lane_inner(void *ctx) { atomic_fetch_add((atomic_int *)ctx, 1); }

static void nested_async_job(void *ctx) {
    (void)ctx;
    static Chunks c;
    memset(&c, 0, sizeof c);
    parallel_for(NEST_N, record_chunk, &c);       /* inline on the lane */
    parallel_tasks(NEST_N, 5, record_chunk, &c);  /* likewise */
    int ok = 1;
    for (int i = 0; i < NEST_N; i++) ok &= atomic_load(&c.visits[i]) == 2;
    atomic_store(&nest.async_inner, ok);
    static atomic_int inner_ran;
    atomic_store(&inner_ran, 0);
    unsigned long t = parallel_async(lane_inner, &inner_ran); /* the lane's own job: runs now */
    parallel_async_wait(t);
    parallel_async_wait(0);                        /* on the lane: returns at once */
    atomic_store(&nest.lane_nested, atomic_load(&inner_ran) == 1);
}

static void test_nested(void) {
    parallel_init(3);
    memset(&nest, 0, sizeof nest);
    nest.top.n = NEST_N;
    parallel_for(NEST_N, record_chunk, &nest.top);
    parallel_for(3, nested_for_piece, NULL); /* three pieces, each a nested parallel_for */
    parallel_tasks(4, 1, nested_for_piece, NULL);
    int used = atomic_load(&nest.inner_used);
    CHECK(used == 7, "%d nested calls ran, expected 7", used);
    for (int k = 0; k < used && k < 16; k++) {
        int same = 1, cover = 1;
        for (int w = 0; w < 3; w++) same &= nest.inner[k].begin[w] == nest.top.begin[w] && nest.inner[k].end[w] == nest.top.end[w];
        for (int i = 0; i < NEST_N; i++) cover &= atomic_load(&nest.inner[k].visits[i]) == 1;
        CHECK(same && cover, "nested parallel_for %d: chunks differ from the top-level call's or miss indexes", k);
    }
    parallel_team(0, nested_team_member, NULL);
    CHECK(atomic_load(&nest.team_inner) == 1, "a parallel_for inside a team member did not cover [0, n) once");
    unsigned long t = parallel_async(nested_async_job, NULL);
    parallel_async_wait(t);
    CHECK(atomic_load(&nest.async_inner) == 1, "fork-join calls inside a background job did not cover [0, n)");
    CHECK(atomic_load(&nest.lane_nested) == 1, "a background job's own background job did not run at once");
    parallel_init(1);
}

/* ------------------------------------------------------------------ shutdown, resize */

static void slow_job(void *ctx) {
    for (volatile int spin = 0; spin < 200000; spin++) {}
    atomic_fetch_add((atomic_int *)ctx, 1);
}

static void test_shutdown_resize(void) {
    static atomic_int ran;
    atomic_store(&ran, 0);
    parallel_init(2);
    for (int i = 0; i < 10; i++) parallel_async(slow_job, &ran);
    parallel_init(4); /* a resize waits for the lane first */
    CHECK(atomic_load(&ran) == 10, "resizing left %d of 10 background jobs unrun", 10 - atomic_load(&ran));
    check_cover(4, 1000, 0);
    for (int i = 0; i < 10; i++) parallel_async(slow_job, &ran);
    parallel_shutdown();
    CHECK(atomic_load(&ran) == 20, "shutting down left %d of 20 background jobs unrun", 20 - atomic_load(&ran));
    CHECK(parallel_threads() == 1, "after shutdown the pool has %d threads", parallel_threads());
    check_cover(1, 1000, 0);                  /* inline */
    unsigned long t = parallel_async(slow_job, &ran); /* the lane starts again */
    parallel_async_wait(t);
    CHECK(atomic_load(&ran) == 21, "a background job after shutdown did not run");
    for (int round = 0; round < 20; round++) { /* resize back and forth with team and fork-join jobs */
        int n = 1 + round % 4;
        CHECK(parallel_init(n) == 0 && parallel_threads() == n, "parallel_init(%d) gave %d threads", n,
              parallel_threads());
        static TeamRecord r;
        memset(&r, 0, sizeof r);
        parallel_team(0, team_phases, &r);
        CHECK(atomic_load(&r.wrong) == 0 && atomic_load(&r.calls) == n, "round %d: team of %d: %d wrong, %d calls",
              round, n, atomic_load(&r.wrong), atomic_load(&r.calls));
        check_cover(n, 500, round % 3);
    }
    parallel_shutdown();
    parallel_shutdown(); /* twice: harmless */
}

int main(void) {
    RUN(test_cover);
    RUN(test_back_to_back);
    RUN(test_team);
    RUN(test_async);
    RUN(test_nested);
    RUN(test_shutdown_resize);
    parallel_shutdown();
    return TEST_SUMMARY();
}
