/*
** blas.c — thread control and naming for the linked BLAS.
*/
#include "blas.h"

#include <stdio.h>

#if defined(OPENBLAS_VERSION) || defined(OPENBLAS_CONST) || defined(OPENBLAS_THREAD)
#define HAVE_OPENBLAS 1
#endif

void blas_set_threads(int n) {
#if defined(HAVE_OPENBLAS)
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

const char *blas_name(void) {
#if defined(__APPLE__)
    return "Accelerate";
#elif defined(HAVE_OPENBLAS)
    static char name[64];
    snprintf(name, sizeof name, "OpenBLAS (%s)", openblas_get_corename());
    return name;
#else
    return "CBLAS";
#endif
}
