/*
** fuzz_checkpoint.c — an anetrain checkpoint: ckpt_load on any bytes, as they are and with their
** checksums made right (so mutations reach the checks behind them); what loads is saved with
** ckpt_save and must load with the same config, parameters, moments and training state.
*/
#include "fuzz_state_common.h"

static int one_input(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_with_fixed_checksums(one_input, data, size, 188, 176, 3);
    return 0;
}

static int one_input(const uint8_t *data, size_t size) {
    const char *in = fuzz_path("in.ckpt"), *out = fuzz_path("out.ckpt");
    fuzz_write(in, data, size);
    ParamLayout la, lb;
    float *pa = NULL, *ma = NULL, *va = NULL, *pb = NULL, *mb = NULL, *vb = NULL;
    TrainState sa, sb;
    Err err;
    if (ckpt_load(in, &la, &pa, &ma, &va, &sa, &err) != 0) return fuzz_rejected("ckpt_load", err.msg);
    FUZZ_CHECK(ckpt_save(out, &la, pa, ma, va, &sa, &err) == 0, "save: %s", err.msg);
    FUZZ_CHECK(ckpt_load(out, &lb, &pb, &mb, &vb, &sb, &err) == 0, "reload: %s", err.msg);
    fuzz_check_config(&la.cfg, &lb.cfg);
    size_t bytes = la.n_floats * sizeof(float);
    FUZZ_CHECK(la.n_floats == lb.n_floats && fuzz_same_bits(pa, pb, bytes), "parameters");
    FUZZ_CHECK(!ma == !mb && !va == !vb, "moments present");
    FUZZ_CHECK(fuzz_same_bits(ma, mb, ma ? bytes : 0) && fuzz_same_bits(va, vb, va ? bytes : 0), "moments");
    fuzz_check_state(&sa, &sb);
    free(pa), free(ma), free(va), free(pb), free(mb), free(vb);
    return 0;
}
