/*
** tool_dist.c — util/dist.h's collectives under mpirun, for tests/test_mpi.sh.
**
**   mpirun -np N tool_dist
**
** Every rank regenerates every rank's inputs (a function of the rank and the index), so it knows
** the exact result each collective must give. Checked: dist_sum_f32 equals the rank-order sum
** (+0, then rank 0's value, rank 1's, ...) bit for bit on every rank, over a buffer longer than
** one reduction chunk (values of mixed signs and magnitudes, where another order rounds
** differently), and on an odd small size; dist_sum_bf16 likewise against the bf16 of the
** rank-order fp32 sum of the ranks' values rounded to bf16; dist_or with the flag on one rank only, and on none;
** dist_allgather_f64/u32; dist_bcast from the last rank. Rank 0 prints "ok NAME" or
** "FAIL NAME" per check (after gathering every rank's verdict) and ends with
** "N passed, N failed"; the exit status is 1 if any failed.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/dist.h"
#include "util/fp16.h"

static int passed, failed;

/* One check: ok on this rank `mine`; every rank's verdict or-reduced, reported by rank 0. */
static void check(const char *name, int mine) {
    int bad = !mine;
    Err err = {{0}};
    if (dist_or(&bad, &err) != 0) {
        fprintf(stderr, "tool_dist: %s\n", err.msg);
        bad = 1;
    }
    if (bad) failed++;
    else passed++;
    if (dist_rank() == 0) printf("%s %s\n", bad ? "FAIL" : "ok  ", name);
}

/* Rank r's value at index i: signs, magnitudes from 1e-4 to 1e4 (an odd hash of r and i). */
static float value(int r, size_t i) {
    uint64_t h = (uint64_t)i * 0x9e3779b97f4a7c15ull ^ (uint64_t)(r + 1) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 29;
    float mant = (float)(h & 0xffffff) / 16777216.0f - 0.5f;
    int e = (int)((h >> 24) % 9) - 4;
    return mant * powf(10.0f, (float)e);
}

/* bf16 0: dist_sum_f32 against the rank-order fp32 sum; 1: dist_sum_bf16 against bf16 of the
** rank-order fp32 sum of the ranks' values rounded to bf16. */
static int sum_is_rank_order(size_t n, int bf16) {
    float *x = malloc(n * sizeof(float));
    if (!x) return 0;
    for (size_t i = 0; i < n; i++) x[i] = value(dist_rank(), i);
    Err err = {{0}};
    int ok = (bf16 ? dist_sum_bf16(x, n, &err) : dist_sum_f32(x, n, &err)) == 0;
    for (size_t i = 0; ok && i < n; i++) {
        float want = 0.0f;
        for (int r = 0; r < dist_size(); r++) want += bf16 ? bf16_to_float(bf16_from_float(value(r, i))) : value(r, i);
        if (bf16) want = bf16_to_float(bf16_from_float(want));
        if (memcmp(&want, &x[i], sizeof want) != 0) {
            fprintf(stderr, "rank %d: sum[%zu] = %.9g, expected %.9g\n", dist_rank(), i, (double)x[i], (double)want);
            ok = 0;
        }
    }
    free(x);
    return ok;
}

int main(int argc, char **argv) {
    Err err = {{0}};
    if (dist_init(&argc, &argv, &err) != 0) {
        fprintf(stderr, "tool_dist: %s\n", err.msg);
        return 1;
    }
    int me = dist_rank(), n = dist_size();
    check("size > 1 (run under mpirun -np 2 or more)", n > 1);
    check("dist_sum_f32: rank-order sum, bit for bit, across chunks", sum_is_rank_order(((size_t)1 << 22) + 1234567, 0));
    check("dist_sum_f32: 7 floats", sum_is_rank_order(7, 0));
    check("dist_sum_bf16: bf16 of the rank-order sum of bf16 values, bit for bit, across chunks",
          sum_is_rank_order(((size_t)1 << 22) + 1234567, 1));
    check("dist_sum_bf16: 7 floats", sum_is_rank_order(7, 1));
    int flag = me == n - 1;
    check("dist_or: set on the last rank only", dist_or(&flag, &err) == 0 && flag == 1);
    flag = 0;
    check("dist_or: set nowhere", dist_or(&flag, &err) == 0 && flag == 0);
    double mine[2] = {me + 0.25, -me - 0.5}, *all = malloc((size_t)n * 2 * sizeof(double));
    int ok = all && dist_allgather_f64(mine, 2, all, &err) == 0;
    for (int r = 0; ok && r < n; r++) ok = all[2 * r] == r + 0.25 && all[2 * r + 1] == -r - 0.5;
    check("dist_allgather_f64", ok);
    free(all);
    uint32_t word = 0xabc00000u + (uint32_t)me, *words = malloc((size_t)n * sizeof(uint32_t));
    ok = words && dist_allgather_u32(&word, 1, words, &err) == 0;
    for (int r = 0; ok && r < n; r++) ok = words[r] == 0xabc00000u + (uint32_t)r;
    check("dist_allgather_u32", ok);
    free(words);
    char text[32];
    snprintf(text, sizeof text, "from rank %d", me);
    ok = dist_bcast(text, sizeof text, n - 1, &err) == 0;
    char want[32];
    snprintf(want, sizeof want, "from rank %d", n - 1);
    check("dist_bcast from the last rank", ok && strcmp(text, want) == 0);
    check("dist_barrier", dist_barrier(&err) == 0);
    if (me == 0) printf("%d passed, %d failed\n", passed, failed);
    dist_finalize();
    return failed ? 1 : 0;
}
