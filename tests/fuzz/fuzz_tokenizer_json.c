/*
** fuzz_tokenizer_json.c — a HF tokenizer.json: tokenizer_load on any bytes (both regex
** dialects), then encoding and decoding with what loaded (fuzz_tokenizer_common.h).
*/
#include "fuzz_tokenizer_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_path("tokenizer.json");
    fuzz_write(in, data, size);
    Tokenizer *tok = NULL;
    Err err;
    if (tokenizer_load(in, 0, &tok, &err) != 0) return fuzz_rejected("tokenizer_load", err.msg);
    fuzz_exercise_tokenizer(tok, data, size);
    if (tokenizer_set_regex_dialect(tok, TOKENIZER_REGEX_JS, &err) == 0) {
        tokenizer_set_match_added(tok, 1);
        fuzz_exercise_tokenizer(tok, data, size);
    }
    tokenizer_free(tok);
    return 0;
}
