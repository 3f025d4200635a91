/*
** fuzz_lora_state.c — a LoRA training state (finetune's lora_state.ckpt): lora_state_load on
** any bytes, header only and whole, as they are and with their checksums made right (so
** mutations reach the checks behind them); what loads is saved with lora_state_save and must
** load the same, bit for bit.
*/
#include "fuzz_state_common.h"

static void check_run(const LoraRunState *a, const LoraRunState *b) {
    fuzz_check_config(&a->base, &b->base);
    FUZZ_CHECK(a->base_crc32 == b->base_crc32 && a->int8 == b->int8 && a->seed == b->seed && a->batch == b->batch &&
                   a->seq == b->seq && a->accum == b->accum && a->order == b->order &&
                   a->train_tokens == b->train_tokens && a->train_crc32 == b->train_crc32,
               "run fields");
    FUZZ_CHECK(fuzz_same_bits(&a->val_frac, &b->val_frac, sizeof(double)), "val_frac bits");
    FUZZ_CHECK(a->lora.rank == b->lora.rank && a->lora.rslora == b->lora.rslora && a->lora.targets == b->lora.targets &&
                   fuzz_same_bits(&a->lora.alpha, &b->lora.alpha, sizeof(float)) &&
                   fuzz_same_bits(&a->lora.dropout, &b->lora.dropout, sizeof(float)),
               "lora config");
    fuzz_check_state(&a->state, &b->state);
}

static int one_input(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_with_fixed_checksums(one_input, data, size, 256, 248, 3);
    return 0;
}

static int one_input(const uint8_t *data, size_t size) {
    const char *in = fuzz_path("in.ckpt"), *out = fuzz_path("out.ckpt");
    fuzz_write(in, data, size);
    LoraRunState head, a, b;
    size_t na = 0, nb = 0;
    float *xa = NULL, *ma = NULL, *va = NULL, *xb = NULL, *mb = NULL, *vb = NULL;
    Err err;
    int head_ok = lora_state_load(in, &head, NULL, NULL, NULL, NULL, &err) == 0;
    if (lora_state_load(in, &a, &na, &xa, &ma, &va, &err) != 0) return fuzz_rejected("lora_state_load", err.msg);
    FUZZ_CHECK(head_ok, "the whole file loads but its header alone does not");
    check_run(&head, &a);
    FUZZ_CHECK(lora_state_save(out, &a, xa, ma, va, na, &err) == 0, "save: %s", err.msg);
    FUZZ_CHECK(lora_state_load(out, &b, &nb, &xb, &mb, &vb, &err) == 0, "reload: %s", err.msg);
    check_run(&a, &b);
    size_t bytes = na * sizeof(float);
    FUZZ_CHECK(na == nb && fuzz_same_bits(xa, xb, bytes) && fuzz_same_bits(ma, mb, bytes) &&
                   fuzz_same_bits(va, vb, bytes),
               "adapter and moments");
    free(xa), free(ma), free(va), free(xb), free(mb), free(vb);
    return 0;
}
