/*
** dist.c — MPI behind dist.h, or a single process when built without it.
**
** The deterministic sum (dist_sum_f32) is a reduce-scatter and an all-gather written with
** MPI_Alltoallv and MPI_Allgatherv rather than MPI_Allreduce, whose summation order is the
** library's choice: the buffer goes in chunks of at most DIST_CHUNK floats; each chunk is cut
** into `size` slices; rank j receives every rank's copy of slice j, adds them in rank order into
** a +0-initialized accumulator, and the summed slices are gathered back to everyone. Each rank
** sends and receives 2 (N-1)/N of the buffer, as a ring allreduce does.
*/
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int dist_ready, dist_my_rank, dist_n = 1;

int dist_built_with_mpi(void) {
#ifdef ANETRAIN_MPI
    return 1;
#else
    return 0;
#endif
}

int dist_rank(void) { return dist_my_rank; }
int dist_size(void) { return dist_n; }

/* The job size a launcher announced in the environment, 0 when none did. */
static int launcher_size(void) {
    const char *names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return atoi(v) > 0 ? atoi(v) : 1;
    }
    return getenv("PMIX_RANK") ? 1 : 0;
}

#ifdef ANETRAIN_MPI
#include <mpi.h>

enum { DIST_CHUNK = 1 << 22 }; /* floats per reduce-scatter round: 16 MiB */

static int mpi_fail(Err *err, const char *what, int code) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", code);
    return err_set(err, "%s: %s", what, msg);
}

int dist_init(int *argc, char ***argv, Err *err) {
    if (dist_ready) return 0;
    dist_ready = 1;
    if (launcher_size() == 0) return 0; /* not launched by mpirun: a single process */
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Init_thread", rc);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &dist_my_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dist_n);
    return 0;
}

static int mpi_active(void) { return dist_n > 1; }

int dist_sum_f32(float *x, size_t n, Err *err) {
    if (!mpi_active() || n == 0) return 0;
    int N = dist_n, me = dist_my_rank;
    int *cnt = malloc(4 * (size_t)N * sizeof(int));
    size_t chunk = n < (size_t)DIST_CHUNK ? n : (size_t)DIST_CHUNK;
    float *slices = malloc((chunk / (size_t)N + 1) * (size_t)N * sizeof(float));
    if (!cnt || !slices) {
        free(cnt), free(slices);
        return err_set(err, "gradient allreduce: out of memory for a %zu-float chunk", chunk);
    }
    int *off = cnt + N, *rcnt = cnt + 2 * N, *roff = cnt + 3 * N;
    int rc = 0;
    for (size_t start = 0; start < n && rc == 0; start += chunk) {
        int m = (int)(n - start < chunk ? n - start : chunk);
        for (int j = 0, o = 0; j < N; j++) {
            cnt[j] = m / N + (j < m % N);
            off[j] = o;
            o += cnt[j];
        }
        for (int i = 0; i < N; i++) {
            rcnt[i] = cnt[me];
            roff[i] = i * cnt[me];
        }
        float *xc = x + start;
        int code = MPI_Alltoallv(xc, cnt, off, MPI_FLOAT, slices, rcnt, roff, MPI_FLOAT, MPI_COMM_WORLD);
        if (code != MPI_SUCCESS) {
            rc = mpi_fail(err, "gradient allreduce (MPI_Alltoallv)", code);
            break;
        }
        float *mine = xc + off[me];
        for (int k = 0; k < cnt[me]; k++) {
            float acc = 0.0f;
            for (int i = 0; i < N; i++) acc += slices[(size_t)i * cnt[me] + k];
            mine[k] = acc;
        }
        code = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, xc, cnt, off, MPI_FLOAT, MPI_COMM_WORLD);
        if (code != MPI_SUCCESS) rc = mpi_fail(err, "gradient allreduce (MPI_Allgatherv)", code);
    }
    free(cnt);
    free(slices);
    return rc;
}

int dist_allgather_f64(const double *mine, size_t n, double *all, Err *err) {
    if (!mpi_active()) {
        memmove(all, mine, n * sizeof(double));
        return 0;
    }
    int code = MPI_Allgather(mine, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, MPI_COMM_WORLD);
    return code == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Allgather", code);
}

int dist_allgather_u32(const uint32_t *mine, size_t n, uint32_t *all, Err *err) {
    if (!mpi_active()) {
        memmove(all, mine, n * sizeof(uint32_t));
        return 0;
    }
    int code = MPI_Allgather(mine, (int)n, MPI_UINT32_T, all, (int)n, MPI_UINT32_T, MPI_COMM_WORLD);
    return code == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Allgather", code);
}

int dist_or(int *flag, Err *err) {
    if (!mpi_active()) {
        *flag = *flag != 0;
        return 0;
    }
    int mine = *flag != 0, any = 0;
    int code = MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (code != MPI_SUCCESS) return mpi_fail(err, "MPI_Allreduce (flag)", code);
    *flag = any;
    return 0;
}

int dist_bcast(void *buf, size_t bytes, int root, Err *err) {
    if (!mpi_active()) return 0;
    int code = MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD);
    return code == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Bcast", code);
}

int dist_barrier(Err *err) {
    if (!mpi_active()) return 0;
    int code = MPI_Barrier(MPI_COMM_WORLD);
    return code == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Barrier", code);
}

void dist_finalize(void) {
    int started = 0, finished = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&finished);
    if (started && !finished) MPI_Finalize();
}

void dist_abort(int code) {
    int started = 0, finished = 0;
    MPI_Initialized(&started);
    MPI_Finalized(&finished);
    if (started && !finished) MPI_Abort(MPI_COMM_WORLD, code);
}

#else /* a single process */

int dist_init(int *argc, char ***argv, Err *err) {
    (void)argc, (void)argv;
    if (dist_ready) return 0;
    dist_ready = 1;
    if (launcher_size() > 1)
        return err_set(err, "launched as one of %d processes (mpirun), but this anetrain was built without MPI: "
                            "install Open MPI (libopenmpi-dev, or brew install open-mpi) and rebuild with make",
                       launcher_size());
    return 0;
}

int dist_sum_f32(float *x, size_t n, Err *err) { return 0; }
int dist_allgather_f64(const double *mine, size_t n, double *all, Err *err) {
    memmove(all, mine, n * sizeof(double));
    return 0;
}
int dist_allgather_u32(const uint32_t *mine, size_t n, uint32_t *all, Err *err) {
    memmove(all, mine, n * sizeof(uint32_t));
    return 0;
}
int dist_or(int *flag, Err *err) {
    *flag = *flag != 0;
    return 0;
}
int dist_bcast(void *buf, size_t bytes, int root, Err *err) { return 0; }
int dist_barrier(Err *err) { return 0; }
void dist_finalize(void) {}
void dist_abort(int code) { (void)code; }

#endif
