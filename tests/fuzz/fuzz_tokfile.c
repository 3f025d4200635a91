/*
** fuzz_tokfile.c — a token file (raw uint16 or ANETOK): tokfile_load on any bytes, and the
** looks-like-text test; what loads is saved with tokfile_save in the same format and must load
** the same ids.
*/
#include "data/tokfile.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_path("in.bin"), *out = fuzz_path("out.bin");
    fuzz_write(in, data, size);
    double frac = tokfile_text_fraction(data, size);
    FUZZ_CHECK(frac >= 0 && frac <= 1, "text fraction %g", frac);
    Err err;
    (void)tokfile_refuse_text(in, "--data", &err);
    TokFile a, b;
    if (tokfile_load(&a, in, 0, &err) != 0) return fuzz_rejected("tokfile_load", err.msg);
    FUZZ_CHECK(tokfile_save(out, a.tokens, a.n_tokens, a.headered, a.id_bytes, a.vocab_size, &err) == 0, "save: %s",
               err.msg);
    FUZZ_CHECK(tokfile_load(&b, out, 0, &err) == 0, "reload: %s", err.msg);
    FUZZ_CHECK(a.headered == b.headered && a.id_bytes == b.id_bytes && a.vocab_size == b.vocab_size &&
                   a.n_tokens == b.n_tokens && fuzz_same_bits(a.tokens, b.tokens, a.n_tokens * sizeof(int32_t)),
               "ids");
    tokfile_free(&a);
    tokfile_free(&b);
    return 0;
}
