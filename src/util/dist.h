/*
** dist.h — the processes of a data-parallel run, behind one small interface.
**
** Built with -DANETRAIN_MPI (the Makefile adds it when it finds Open MPI or another MPI through
** pkg-config ompi-c / mpi, or mpicc), these calls are MPI's; without it, the same API describes a
** single process (rank 0 of 1) and every collective is a no-op. Only this module includes mpi.h.
**
** dist_init starts MPI only when the environment says a launcher started us (mpirun: the
** OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_SIZE variables), so a plain `anetrain train` stays a
** single process, MPI build or not. A program built without MPI but launched by mpirun -np N>1
** is refused (every copy would train alone and write the same files).
**
** Every collective must be called by every rank, in the same order, with the same sizes. The
** sums are deterministic: dist_sum_f32 adds the ranks' values in rank order (0, 1, ..., N-1),
** starting from +0, and every rank receives the same bits, whatever the timing.
** Nothing here prints or exits (dist_abort excepted, which ends the whole job).
*/
#ifndef ANETRAIN_DIST_H
#define ANETRAIN_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Joins the job when launched by an MPI launcher (see above); a single process otherwise. Safe
** to call more than once (later calls do nothing). argc/argv may be NULL. */
int dist_init(int *argc, char ***argv, Err *err);
/* 1 when built with MPI. */
int dist_built_with_mpi(void);
/* This process's rank in [0, size) and the number of processes (0 and 1 before dist_init). */
int dist_rank(void);
int dist_size(void);

/* x [n] <- the sum over ranks of x, in rank order (fp32 adds), the same bits on every rank. */
int dist_sum_f32(float *x, size_t n, Err *err);
/* x [n] <- the same sum with half the bytes on the wire: each rank's x rounded to bf16 (nearest,
** ties to even) before the exchange, the ranks' bf16 values added in fp32 in rank order from +0,
** and that sum rounded to bf16 again for the way back (so both halves of the exchange, the
** reduce-scatter and the all-gather, carry 2 bytes a value). Every rank receives the same bits:
** bf16 values, widened to fp32. In one process x is left as it is (nothing is sent). */
int dist_sum_bf16(float *x, size_t n, Err *err);
/* all [size][n] <- every rank's mine [n], by rank. */
int dist_allgather_f64(const double *mine, size_t n, double *all, Err *err);
int dist_allgather_u32(const uint32_t *mine, size_t n, uint32_t *all, Err *err);
/* *flag <- 1 if it is non-zero on any rank, else 0. */
int dist_or(int *flag, Err *err);
/* buf [bytes] <- root's. */
int dist_bcast(void *buf, size_t bytes, int root, Err *err);
int dist_barrier(Err *err);
/* Leaves the job (MPI_Finalize) after every rank got here; nothing in a single process. */
void dist_finalize(void);
/* Ends every rank of the job with `code` (a failure on one rank that the others cannot see). In a
** single process it returns. */
void dist_abort(int code);

#endif
