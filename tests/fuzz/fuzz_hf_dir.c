/*
** fuzz_hf_dir.c — a HF model directory from one input's parts: config.json, model.safetensors,
** model.safetensors.index.json and two shards (model-00001-of-00002.safetensors, ...-00002-...).
** hf_load on them; what loads is saved with hf_save and must load with the same config and
** parameters, bit for bit.
*/
#include "fuzz_state_common.h"
#include "io/model_file.h"
#include "util/fileio.h"

static const char *const names[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *part[5];
    size_t len[5];
    int n = fuzz_split(data, size, part, len, 5);
    fuzz_clean();
    const char *dir = fuzz_path("in"), *out = fuzz_path("out");
    Err err;
    FUZZ_CHECK(dir_ensure(dir, &err) == 0, "%s", err.msg);
    for (int i = 0; i < n; i++) {
        if (len[i] == 0) continue; /* an empty part: no such file */
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        fuzz_write(path, part[i], len[i]);
    }
    ParamLayout la, lb;
    float *pa = NULL, *pb = NULL;
    if (hf_load(dir, &la, &pa, &err) != 0) return fuzz_rejected("hf_load", err.msg);
    FUZZ_CHECK(hf_save(out, &la, pa, &err) == 0, "save: %s", err.msg);
    FUZZ_CHECK(hf_load(out, &lb, &pb, &err) == 0, "reload: %s", err.msg);
    fuzz_check_config(&la.cfg, &lb.cfg);
    FUZZ_CHECK(la.n_floats == lb.n_floats && fuzz_same_bits(pa, pb, la.n_floats * sizeof(float)), "parameters");
    free(pa);
    free(pb);
    return 0;
}
