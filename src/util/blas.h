/*
** blas.h — the one place that knows which BLAS we link: Accelerate on macOS,
** OpenBLAS (or any CBLAS) elsewhere. Everything else includes this, never cblas.h.
*/
#ifndef ANETRAIN_BLAS_H
#define ANETRAIN_BLAS_H

#if defined(__APPLE__)
#ifndef ACCELERATE_NEW_LAPACK
#define ACCELERATE_NEW_LAPACK
#endif
#include <Accelerate/Accelerate.h>
#else
#include <cblas.h>
#endif

/* Sets the BLAS library's own thread count where the library allows it (OpenBLAS). */
void blas_set_threads(int n);
/* The BLAS library's own thread count (1 where it cannot be read). */
int blas_get_threads(void);
/* A short name for reports, e.g. "OpenBLAS (Haswell)" or "Accelerate". */
const char *blas_name(void);

/* C [M][N] = alpha op(A) op(B) + beta C, row-major (cblas_sgemm's arguments), computed as a grid
** of tiles fixed by M, N and K alone, each one single-threaded BLAS call: so the result depends
** on the shapes and the data only, never on the number of threads, on which thread runs a tile,
** or on how the BLAS library would have split the product itself. That matters because it is
** not true of a plain multithreaded call: OpenBLAS's Haswell kernels (OPENBLAS_CORETYPE=Haswell,
** which some machines need) round a product differently when it is split among 1 or 2 threads,
** and two threads calling it at once change its split.
** on_pool 1 spreads the tiles over the thread pool (util/parallel.h; from inside a pool job or
** the pool's background lane they run inline, in order), 0 runs them in order on the calling
** thread: the same result either way. The library must be single-threaded while this runs: hold
** blas_single_acquire. */
void blas_sgemm_tiled(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc, int on_pool);

/* Holds the BLAS library single-threaded until the matching blas_single_release. Holds nest and
** need not be released in order: the first acquire saves the library's count and sets 1, the last
** release restores the saved count. So the thread count is set once per holder, not per call:
** the ANE backend holds it from creation to destruction (every product of its steps is a tiled
** single-threaded grid), the CPU backend around its attention phase (whose per-head products run
** on the pool's threads at once). Call both from the thread that controls the pool, with no BLAS
** call of another thread in flight. */
void blas_single_acquire(void);
void blas_single_release(void);

#endif
