/*
** fuzz_safetensors.c — st_open and st_read_f32 on any bytes; what loads is written again
** with st_write_f32 (as F32) and must read back with the same names, shapes and values.
*/
#include "fuzz_common.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_path("in.safetensors"), *out = fuzz_path("out.safetensors");
    fuzz_write(in, data, size);
    StFile f;
    Err err;
    if (st_open(&f, in, &err) != 0) return fuzz_rejected("st_open", err.msg);
    int n = f.n_tensors;
    StWriteTensor *w = calloc((size_t)n + 1, sizeof *w);
    float **vals = calloc((size_t)n + 1, sizeof *vals);
    int ok = w && vals;
    for (int i = 0; i < n && ok; i++) {
        const StTensor *t = &f.tensors[i];
        size_t numel = 1;
        for (int d = 0; d < t->rank; d++) numel *= (size_t)t->shape[d];
        if (t->dtype == ST_OTHER || numel > (1u << 22)) {
            ok = 0; /* not ours to convert, or too big to be quick */
            break;
        }
        vals[i] = malloc((numel ? numel : 1) * sizeof(float));
        if (!vals[i] || st_read_f32(&f, t, vals[i], numel, &err) != 0) {
            ok = 0;
            break;
        }
        w[i] = (StWriteTensor){t->name, vals[i], t->rank, {0}};
        memcpy(w[i].shape, t->shape, sizeof t->shape);
    }
    if (ok && st_write_f32(out, w, n, NULL, &err) == 0) {
        StFile g;
        FUZZ_CHECK(st_open(&g, out, &err) == 0, "reopen: %s", err.msg);
        FUZZ_CHECK(g.n_tensors == n, "tensor count %d -> %d", n, g.n_tensors);
        for (int i = 0; i < n; i++) {
            const StTensor *t = st_find(&g, w[i].name);
            FUZZ_CHECK(t && t->dtype == ST_F32 && t->rank == w[i].rank, "tensor %s", w[i].name);
            size_t numel = 1;
            for (int d = 0; d < t->rank; d++) {
                FUZZ_CHECK(t->shape[d] == w[i].shape[d], "shape of %s", w[i].name);
                numel *= (size_t)t->shape[d];
            }
            float *back = malloc((numel ? numel : 1) * sizeof(float));
            FUZZ_CHECK(back && st_read_f32(&g, t, back, numel, &err) == 0, "read back %s: %s", w[i].name, err.msg);
            FUZZ_CHECK(fuzz_same_bits(back, vals[i], numel * sizeof(float)), "values of %s", w[i].name);
            free(back);
        }
        st_close(&g);
    }
    for (int i = 0; vals && i < n; i++) free(vals[i]);
    free(vals);
    free(w);
    st_close(&f);
    return 0;
}
