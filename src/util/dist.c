/*
** dist.c — MPI behind dist.h, or a single process when built without it.
**
** The deterministic sum (dist_sum_f32) is a reduce-scatter and an all-gather written with
** MPI_Alltoallv and MPI_Allgatherv rather than MPI_Allreduce, whose summation order is the
** library's choice: the buffer goes in chunks of at most DIST_CHUNK floats; each chunk is cut
** into `size` slices; rank j receives every rank's copy of slice j, adds them in rank order into
** a +0-initialized accumulator, and the summed slices are gathered back to everyone. Each rank
** sends and receives 2 (N-1)/N of the buffer, as a ring allreduce does. dist_sum_bf16 is the
** same exchange with bf16 slices (half the bytes): every rank rounds its chunk to bf16 before the
** reduce-scatter, the owner adds the bf16 values in fp32 in rank order and rounds the sum to bf16
** for the all-gather, and every rank widens the gathered bf16 back to fp32.
*/
#include "dist.h"

#include "fp16.h"

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

/* The reduce-scatter and all-gather of dist_sum_f32 (bf16 0) and dist_sum_bf16 (bf16 1): with
** bf16 the slices travel as bf16 bits (MPI_UINT16_T), each rank's values rounded once before the
** exchange and each owner's fp32 sums once after it. */
static int sum_in_slices(float *x, size_t n, int bf16, Err *err) {
    if (!mpi_active() || n == 0) return 0;
    int N = dist_n, me = dist_my_rank;
    size_t elem = bf16 ? sizeof(uint16_t) : sizeof(float);
    MPI_Datatype type = bf16 ? MPI_UINT16_T : MPI_FLOAT;
    const char *what = bf16 ? "gradient allreduce (bf16)" : "gradient allreduce";
    int *cnt = malloc(4 * (size_t)N * sizeof(int));
    size_t chunk = n < (size_t)DIST_CHUNK ? n : (size_t)DIST_CHUNK;
    void *slices = malloc((chunk / (size_t)N + 1) * (size_t)N * elem);
    uint16_t *packed = bf16 ? malloc(chunk * sizeof(uint16_t)) : NULL; /* [chunk]: the chunk as bf16 */
    if (!cnt || !slices || (bf16 && !packed)) {
        free(cnt), free(slices), free(packed);
        return err_set(err, "%s: out of memory for a %zu-float chunk", what, chunk);
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
        if (bf16)
            for (int k = 0; k < m; k++) packed[k] = bf16_from_float(xc[k]);
        void *send = bf16 ? (void *)packed : (void *)xc;
        int code = MPI_Alltoallv(send, cnt, off, type, slices, rcnt, roff, type, MPI_COMM_WORLD);
        if (code != MPI_SUCCESS) {
            rc = mpi_fail(err, bf16 ? "gradient allreduce (bf16, MPI_Alltoallv)" : "gradient allreduce (MPI_Alltoallv)",
                          code);
            break;
        }
        for (int k = 0; k < cnt[me]; k++) {
            float acc = 0.0f;
            if (bf16) {
                const uint16_t *h = slices;
                for (int i = 0; i < N; i++) acc += bf16_to_float(h[(size_t)i * cnt[me] + k]);
                packed[off[me] + k] = bf16_from_float(acc);
            } else {
                const float *f = slices;
                for (int i = 0; i < N; i++) acc += f[(size_t)i * cnt[me] + k];
                xc[off[me] + k] = acc;
            }
        }
        code = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, send, cnt, off, type, MPI_COMM_WORLD);
        if (code != MPI_SUCCESS) {
            rc = mpi_fail(err, bf16 ? "gradient allreduce (bf16, MPI_Allgatherv)" : "gradient allreduce (MPI_Allgatherv)",
                          code);
            break;
        }
        if (bf16)
            for (int k = 0; k < m; k++) xc[k] = bf16_to_float(packed[k]);
    }
    free(cnt);
    free(slices);
    free(packed);
    return rc;
}

int dist_sum_f32(float *x, size_t n, Err *err) { return sum_in_slices(x, n, 0, err); }
int dist_sum_bf16(float *x, size_t n, Err *err) { return sum_in_slices(x, n, 1, err); }

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
int dist_sum_bf16(float *x, size_t n, Err *err) { return 0; }
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
