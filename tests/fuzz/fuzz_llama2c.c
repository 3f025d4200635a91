/*
** fuzz_llama2c.c — a llama2.c .bin: llama2c_load on any bytes; what loads is saved with
** llama2c_save and must load with the same config and parameters, bit for bit.
*/
#include "fuzz_state_common.h"
#include "io/model_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_path("in.bin"), *out = fuzz_path("out.bin");
    fuzz_write(in, data, size);
    ParamLayout la, lb;
    float *pa = NULL, *pb = NULL;
    Err err;
    ModelConfig cfg;
    int header_ok = llama2c_config_load(in, &cfg, &err) == 0;
    if (llama2c_load(in, &la, &pa, &err) != 0) return fuzz_rejected("llama2c_load", err.msg);
    FUZZ_CHECK(header_ok, "llama2c_load accepted a file whose header llama2c_config_load refuses");
    fuzz_check_config(&cfg, &la.cfg);
    FUZZ_CHECK(llama2c_save(out, &la, pa, &err) == 0, "save: %s", err.msg);
    FUZZ_CHECK(llama2c_load(out, &lb, &pb, &err) == 0, "reload: %s", err.msg);
    fuzz_check_config(&la.cfg, &lb.cfg);
    FUZZ_CHECK(la.n_floats == lb.n_floats && fuzz_same_bits(pa, pb, la.n_floats * sizeof(float)), "parameters");
    free(pa);
    free(pb);
    return 0;
}
