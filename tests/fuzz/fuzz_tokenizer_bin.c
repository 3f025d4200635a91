/*
** fuzz_tokenizer_bin.c — a llama2.c tokenizer.bin: tokenizer_load on any bytes, with the whole
** file and with a vocabulary hint (8 tokens), then encoding and decoding (fuzz_tokenizer_common.h).
*/
#include "fuzz_tokenizer_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 0 && data[0] == '{') return 0; /* that is tokenizer.json's harness */
    const char *in = fuzz_path("tokenizer.bin");
    fuzz_write(in, data, size);
    Err err;
    for (int hint = 0; hint <= 8; hint += 8) { /* the whole file; its first 8 tokens */
        Tokenizer *tok = NULL;
        if (tokenizer_load(in, hint, &tok, &err) != 0) {
            fuzz_rejected("tokenizer_load", err.msg);
            continue;
        }
        fuzz_exercise_tokenizer(tok, data, size);
        tokenizer_free(tok);
    }
    return 0;
}
