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
/* A short name for reports, e.g. "OpenBLAS (Haswell)" or "Accelerate". */
const char *blas_name(void);

#endif
