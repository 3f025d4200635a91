/*
** fuzz_peft.c — a PEFT LoRA adapter directory from one input's parts: adapter_config.json and
** adapter_model.safetensors, loaded with lora_load for a small llama2.c-style model (interleaved
** RoPE, so the loader's row permutation runs); what loads is saved with lora_save and must load
** the same, bit for bit.
*/
#include "fuzz_common.h"
#include "io/peft.h"
#include "model/lora.h"
#include "util/fileio.h"

/* The model the seeds were written for (tests/fuzz/make_seeds.c). */
static void fuzz_model(ModelConfig *c) {
    memset(c, 0, sizeof *c);
    *c = (ModelConfig){FAMILY_LLAMA, 16, 32, 2, 2, 2, 8, 32, 32, 10000.0f, 1e-5f, 0, 1, ROPE_INTERLEAVED};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *part[2];
    size_t len[2];
    int n = fuzz_split(data, size, part, len, 2);
    fuzz_clean();
    const char *dir = fuzz_path("in"), *out = fuzz_path("out");
    Err err;
    FUZZ_CHECK(dir_ensure(dir, &err) == 0, "%s", err.msg);
    static const char *const names[2] = {"adapter_config.json", "adapter_model.safetensors"};
    for (int i = 0; i < n; i++) {
        if (len[i] == 0) continue; /* an empty part: no such file */
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        fuzz_write(path, part[i], len[i]);
    }
    ModelConfig model;
    fuzz_model(&model);
    LoraLayout la, lb;
    float *xa = NULL, *xb = NULL;
    if (lora_load(dir, &model, &la, &xa, &err) != 0) return fuzz_rejected("lora_load", err.msg);
    FUZZ_CHECK(lora_save(out, &la, xa, "fuzz-base", &err) == 0, "save: %s", err.msg);
    FUZZ_CHECK(lora_load(out, &model, &lb, &xb, &err) == 0, "reload: %s", err.msg);
    FUZZ_CHECK(la.cfg.rank == lb.cfg.rank && la.cfg.targets == lb.cfg.targets && la.cfg.rslora == lb.cfg.rslora &&
                   fuzz_same_bits(&la.cfg.alpha, &lb.cfg.alpha, sizeof(float)) &&
                   fuzz_same_bits(&la.cfg.dropout, &lb.cfg.dropout, sizeof(float)),
               "lora config");
    FUZZ_CHECK(la.n_floats == lb.n_floats && fuzz_same_bits(xa, xb, la.n_floats * sizeof(float)), "adapter");
    free(xa);
    free(xb);
    return 0;
}
