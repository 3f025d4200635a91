/*
** mil_exec.c — a checked MIL graph becomes a plan over preallocated buffers, and runs.
**
** Compile: parse (mil_parse.c), check (mil_check.c), then plan. Every value gets a float
** buffer: constants use their own data; reshape and cast results alias their operand
** (row-major reinterpretation; both are fp16 in storage, see below); every other op result
** gets a storage. Storages are packed into a few blocks by liveness: walking the ops in
** order, a result takes the best-fitting free block (or grows the largest free one, or adds
** one), and a storage's block is freed after the last op that reads it (results never share
** a block with their own operands; the output's storage is never freed). All blocks, per-op
** scratch and the value -> buffer table are allocated here, once.
**
** Run: fp16 input surface -> the input's buffer (exact conversion; flushed when
** flush_subnormals), each op's kernel (mil_kernels.c) in program order, output buffer ->
** fp16 output surface (exact: the buffer holds fp16 values). Nothing is allocated.
**
** Assumption: the ANE has no fp32 datapath, so fp32-typed tensors (after a cast) are stored
** as fp16 like everything else; fp32 I/O is rejected by the checker anyway.
**
** This file must never allocate in mil_program_run, and never keep state outside a program.
*/
#include <stdlib.h>
#include <string.h>

#include "../../../util/blas.h"
#include "../../../util/parallel.h"
#include "../../../util/fp16.h"
#include "mil.h"

struct MilProgram {
    MilGraph g;
    MilKernelOptions kopt;
    float **bufs;       /* [n_values] the buffer of each value */
    float **scratch;    /* [n_ops] per-op scratch or NULL */
    float **blocks;     /* [n_blocks] */
    int n_blocks;
    size_t buffer_bytes, const_bytes;
    AneShape in, out;
};

/* ------------------------------------------------------------------ planning */

typedef struct {
    size_t *cap;   /* floats per block */
    int *busy;
    int n, max;
} BlockPool;

/* A block of at least `need` floats that is not in use; -1 when out of memory. */
static int pool_take(BlockPool *p, size_t need) {
    int best = -1, largest = -1;
    for (int i = 0; i < p->n; i++) {
        if (p->busy[i]) continue;
        if (p->cap[i] >= need && (best < 0 || p->cap[i] < p->cap[best])) best = i;
        if (largest < 0 || p->cap[i] > p->cap[largest]) largest = i;
    }
    if (best < 0 && largest >= 0) {
        best = largest; /* growing a free block is free: blocks are allocated after planning */
        p->cap[best] = need;
    }
    if (best < 0) {
        if (p->n == p->max) return -1;
        best = p->n++;
        p->cap[best] = need;
    }
    p->busy[best] = 1;
    return best;
}

static int program_plan(MilProgram *P, Err *err) {
    MilGraph *g = &P->g;
    int nv = g->n_values, no = g->n_ops;
    int *storage = malloc((size_t)nv * sizeof *storage);   /* value -> storage, -1 const */
    int *alias = malloc((size_t)nv * sizeof *alias);       /* value -> value whose buffer it uses */
    int *last = malloc((size_t)nv * sizeof *last);         /* storage (= defining value) -> last op reading it */
    int *block = malloc((size_t)nv * sizeof *block);       /* storage -> block */
    BlockPool pool = {malloc((size_t)(nv + 1) * sizeof(size_t)), calloc((size_t)nv + 1, sizeof(int)), 0, nv + 1};
    P->bufs = calloc((size_t)nv, sizeof *P->bufs);
    P->scratch = calloc((size_t)(no ? no : 1), sizeof *P->scratch);
    int rc = -1;
    if (!storage || !alias || !last || !block || !pool.cap || !pool.busy || !P->bufs || !P->scratch) {
        err_set(err, "out of memory planning a MIL program of %d values", nv);
        goto done;
    }
    /* Which storage each value lives in. Values are defined in order: input, then per op. */
    for (int v = 0; v < nv; v++) {
        alias[v] = v;
        storage[v] = g->values[v].is_const ? -1 : v;
        last[v] = -2; /* unread */
        block[v] = -1;
    }
    for (int i = 0; i < no; i++) {
        const MilOp *op = &g->ops[i];
        if (op->kind == MIL_OP_RESHAPE || op->kind == MIL_OP_CAST) {
            alias[op->out] = alias[op->x];
            storage[op->out] = storage[op->x];
        }
    }
    /* Last reader of every storage; the output's lives to the end. */
    for (int i = 0; i < no; i++) {
        const MilOp *op = &g->ops[i];
        int operands[3] = {op->x, op->y, op->z};
        for (int k = 0; k < 3; k++)
            if (operands[k] >= 0 && storage[operands[k]] >= 0) last[storage[operands[k]]] = i;
        for (int k = 0; k < op->n_values; k++)
            if (storage[op->values[k]] >= 0) last[storage[op->values[k]]] = i;
        /* An alias extends its storage's life through the alias's own readers (above). */
    }
    if (storage[g->output] >= 0) last[storage[g->output]] = no;

    /* Walk: the input first, then each op's result; free after the last reader. */
    if (storage[g->input] >= 0) {
        block[g->input] = pool_take(&pool, (size_t)g->values[g->input].numel);
        if (last[g->input] == -2) pool.busy[block[g->input]] = 0;
    }
    for (int i = 0; i < no; i++) {
        const MilOp *op = &g->ops[i];
        int s = storage[op->out];
        if (s == op->out) { /* a new storage, not an alias */
            block[s] = pool_take(&pool, (size_t)g->values[op->out].numel);
            if (block[s] < 0) {
                err_set(err, "internal: block pool exhausted");
                goto done;
            }
        }
        /* Free every storage whose last reader is this op, and a fresh result nobody reads. */
        int operands[3] = {op->x, op->y, op->z};
        for (int k = 0; k < 3; k++) {
            int st = operands[k] >= 0 ? storage[operands[k]] : -1;
            if (st >= 0 && last[st] == i && block[st] >= 0) pool.busy[block[st]] = 0;
        }
        for (int k = 0; k < op->n_values; k++) {
            int st = storage[op->values[k]];
            if (st >= 0 && last[st] == i && block[st] >= 0) pool.busy[block[st]] = 0;
        }
        if (s == op->out && last[s] == -2) pool.busy[block[s]] = 0;
    }

    /* Materialise the blocks. */
    P->n_blocks = pool.n;
    P->blocks = calloc((size_t)(pool.n ? pool.n : 1), sizeof *P->blocks);
    if (!P->blocks) {
        err_set(err, "out of memory planning a MIL program");
        goto done;
    }
    for (int b = 0; b < pool.n; b++) {
        size_t bytes = (pool.cap[b] * sizeof(float) + 63) & ~(size_t)63;
        P->blocks[b] = aligned_alloc(64, bytes);
        if (!P->blocks[b]) {
            err_set(err, "out of memory allocating %zu bytes of intermediate buffers", bytes);
            goto done;
        }
        P->buffer_bytes += bytes;
    }
    for (int v = 0; v < nv; v++) {
        const MilValue *val = &g->values[v];
        if (val->is_const) {
            P->bufs[v] = val->fdata; /* NULL for int32/bool/string constants: never data operands */
            P->const_bytes += val->fdata ? (size_t)val->numel * sizeof(float) : 0;
        }
    }
    for (int v = 0; v < nv; v++) {
        if (g->values[v].is_const) continue;
        int a = alias[v];
        P->bufs[v] = g->values[a].is_const ? g->values[a].fdata : P->blocks[block[storage[v]]];
    }
    for (int i = 0; i < no; i++) {
        size_t n = mil_kernel_scratch_floats(&g->ops[i], g->values);
        if (n) {
            P->scratch[i] = malloc(n * sizeof(float));
            if (!P->scratch[i]) {
                err_set(err, "out of memory allocating %zu bytes of scratch", n * sizeof(float));
                goto done;
            }
            P->buffer_bytes += n * sizeof(float);
        }
    }
    rc = 0;
done:
    free(storage);
    free(alias);
    free(last);
    free(block);
    free(pool.cap);
    free(pool.busy);
    return rc;
}

/* ------------------------------------------------------------------ public */

MilProgram *mil_program_compile(const char *text, const AneBlob *blobs, int n_blobs, const MilOptions *opt,
                                Err *err) {
    MilProgram *P = calloc(1, sizeof *P);
    if (!P) {
        err_set(err, "out of memory allocating a MIL program");
        return NULL;
    }
    MilOptions o = {1, 0, 0, ANE_LIMITS_STRICT};
    if (opt) o = *opt;
    P->kopt.accumulate_fp32 = o.accumulate_fp32;
    P->kopt.flush_subnormals = o.flush_subnormals;
    MilAst ast;
    if (mil_parse(text, &ast, err)) {
        free(P);
        return NULL;
    }
    MilCheckOptions co = {o.flush_subnormals, o.max_elements, o.limits, NULL};
    if (mil_check(&ast, blobs, n_blobs, &co, &P->g, err)) {
        free(P);
        return NULL;
    }
    if (program_plan(P, err)) {
        mil_program_free(P);
        return NULL;
    }
    const MilType *it = &P->g.values[P->g.input].type, *ot = &P->g.values[P->g.output].type;
    P->in.channels = (int)it->dims[1];
    P->in.spatial = (int)it->dims[3];
    P->out.channels = (int)ot->dims[1];
    P->out.spatial = (int)ot->dims[3];
    return P;
}

typedef struct {
    float *f;
    uint16_t *h;
    const uint16_t *hin;
    int64_t n;
    int flush;
} ConvJob;

enum { CONV_BLOCK = 1 << 14 };

static void convert_in_worker(void *ctx, int b, int e, int w) {
    (void)w;
    const ConvJob *j = ctx;
    int64_t lo = (int64_t)b * CONV_BLOCK, hi = (int64_t)e * CONV_BLOCK;
    if (hi > j->n) hi = j->n;
    fp16_to_float_array(j->f + lo, j->hin + lo, (size_t)(hi - lo), j->flush);
}

static void convert_out_worker(void *ctx, int b, int e, int w) {
    (void)w;
    const ConvJob *j = ctx;
    int64_t lo = (int64_t)b * CONV_BLOCK, hi = (int64_t)e * CONV_BLOCK;
    if (hi > j->n) hi = j->n;
    fp16_from_float_array(j->h + lo, j->f + lo, (size_t)(hi - lo));
}

static void convert_run(int64_t n, ParallelFn fn, ConvJob *j) {
    int blocks = (int)((n + CONV_BLOCK - 1) / CONV_BLOCK);
    if (blocks <= 1 || parallel_threads() <= 1)
        fn(j, 0, blocks, 0);
    else
        parallel_for(blocks, fn, j);
}

int mil_program_run(MilProgram *P, const uint16_t *in, uint16_t *out, Err *err) {
    if (!P || !in || !out) return err_set(err, "mil_program_run: NULL program or surface");
    const MilGraph *g = &P->g;
    int64_t n_in = g->values[g->input].numel, n_out = g->values[g->output].numel;
    ConvJob ji = {P->bufs[g->input], NULL, in, n_in, P->kopt.flush_subnormals};
    convert_run(n_in, convert_in_worker, &ji);
    /* The matrix products are tiled single-threaded BLAS calls on the pool (blas_sgemm_tiled), so
    ** that an output never depends on threads; the library stays single-threaded meanwhile (inside
    ** the ANE backend it already is, for the backend's lifetime: this hold then sets nothing). */
    blas_single_acquire();
    for (int i = 0; i < g->n_ops; i++) mil_kernel_run(&g->ops[i], g->values, P->bufs, P->scratch[i], &P->kopt);
    blas_single_release();
    ConvJob jo = {P->bufs[g->output], out, NULL, n_out, 0};
    convert_run(n_out, convert_out_worker, &jo);
    return 0;
}

void mil_program_io(const MilProgram *P, AneShape *in, AneShape *out) {
    if (in) *in = P->in;
    if (out) *out = P->out;
}

size_t mil_program_buffer_bytes(const MilProgram *P) { return P->buffer_bytes; }
size_t mil_program_const_bytes(const MilProgram *P) { return P->const_bytes; }

void mil_program_free(MilProgram *P) {
    if (!P) return;
    for (int i = 0; i < P->n_blocks && P->blocks; i++) free(P->blocks[i]);
    for (int i = 0; i < P->g.n_ops && P->scratch; i++) free(P->scratch[i]);
    free(P->blocks);
    free(P->scratch);
    free(P->bufs);
    mil_graph_free(&P->g);
    free(P);
}
