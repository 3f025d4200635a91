/*
** blas.c — thread control and naming for the linked BLAS, and the tiled sgemm whose result
** never depends on threads (blas.h).
*/
#include "blas.h"

#include <stdio.h>

#include "parallel.h"

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

int blas_get_threads(void) {
#if defined(HAVE_OPENBLAS)
    return openblas_get_num_threads();
#else
    return 1;
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

static int single_holders; /* blas_single_acquire calls not yet released */
static int single_saved;   /* the library's count before the first of them */

void blas_single_acquire(void) {
    if (single_holders++ > 0) return;
    single_saved = blas_get_threads();
    if (single_saved != 1) blas_set_threads(1);
}

void blas_single_release(void) {
    if (single_holders <= 0) return;
    if (--single_holders == 0 && single_saved != 1) blas_set_threads(single_saved);
}

/* ------------------------------------------------------------------ the tiled sgemm */

/* Products below this many multiply-adds are one tile: splitting them costs more than it gains. */
#define TILE_MIN_MACS (1 << 20)
enum {
    TILE_MAX = 16,   /* tiles per product at most (enough to balance two to eight threads) */
    TILE_ROWS = 128, /* the smallest tile edge worth a call of its own */
    TILE_ALIGN = 16  /* tile edges are multiples of this (the kernels' register blocks) */
};

typedef struct {
    enum CBLAS_TRANSPOSE ta, tb;
    int M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int along_m, edge; /* tiles cut M (else N) into pieces of `edge` rows (columns) */
} TiledGemm;

static void tiles_run(void *ctx, int begin, int end, int worker) {
    (void)worker;
    const TiledGemm *g = ctx;
    for (int i = begin; i < end; i++) {
        int dim = g->along_m ? g->M : g->N, lo = i * g->edge, n = dim - lo < g->edge ? dim - lo : g->edge;
        if (g->along_m) { /* rows lo.. of op(A) and C */
            const float *a = g->ta == CblasNoTrans ? g->A + (size_t)lo * g->lda : g->A + lo;
            cblas_sgemm(CblasRowMajor, g->ta, g->tb, n, g->N, g->K, g->alpha, a, g->lda, g->B, g->ldb, g->beta,
                        g->C + (size_t)lo * g->ldc, g->ldc);
        } else { /* columns lo.. of op(B) and C */
            const float *b = g->tb == CblasNoTrans ? g->B + lo : g->B + (size_t)lo * g->ldb;
            cblas_sgemm(CblasRowMajor, g->ta, g->tb, g->M, n, g->K, g->alpha, g->A, g->lda, b, g->ldb, g->beta,
                        g->C + lo, g->ldc);
        }
    }
}

void blas_sgemm_tiled(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc, int on_pool) {
    if (M <= 0 || N <= 0) return;
    TiledGemm g = {trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K, lda, ldb, ldc,
                   alpha, beta, A, B, C, M >= N, 0};
    /* The grid: the longer of M and N cut into at most TILE_MAX pieces of at least TILE_ROWS,
    ** from the shapes alone. */
    int dim = g.along_m ? M : N, tiles = 1;
    if ((double)M * N * K >= TILE_MIN_MACS) {
        tiles = (dim + TILE_ROWS - 1) / TILE_ROWS;
        if (tiles > TILE_MAX) tiles = TILE_MAX;
    }
    g.edge = (dim + tiles - 1) / tiles;
    g.edge = (g.edge + TILE_ALIGN - 1) / TILE_ALIGN * TILE_ALIGN;
    tiles = (dim + g.edge - 1) / g.edge;
    if (on_pool && tiles > 1) parallel_tasks(tiles, 1, tiles_run, &g);
    else tiles_run(&g, 0, tiles, 0);
}
