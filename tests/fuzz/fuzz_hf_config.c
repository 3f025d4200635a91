/*
** fuzz_hf_config.c — a HF config.json: hf_config_load on any bytes; what loads is written with
** hf_config_save and must load as the same config.
*/
#include "fuzz_state_common.h"
#include "io/model_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_path("config.json"), *out = fuzz_path("out.json");
    fuzz_write(in, data, size);
    ModelConfig a, b;
    Err err;
    if (hf_config_load(in, &a, &err) != 0) return fuzz_rejected("hf_config_load", err.msg);
    FUZZ_CHECK(hf_config_save(out, &a, &err) == 0, "save: %s", err.msg);
    FUZZ_CHECK(hf_config_load(out, &b, &err) == 0, "reload: %s", err.msg);
    fuzz_check_config(&a, &b);
    return 0;
}
