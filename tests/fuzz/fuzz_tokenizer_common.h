/*
** fuzz_tokenizer_common.h — what both tokenizer harnesses do with a tokenizer that loaded:
** encode and decode a fixed text (ASCII, UTF-8, invalid UTF-8, a NUL, added-token look-alikes)
** and the start of the input itself, and look every id up. No writer exists for tokenizer files,
** so there is no round trip; the checks are that nothing crashes, hangs or leaks, and that
** every id is inside the vocabulary.
*/
#ifndef ANETRAIN_FUZZ_TOKENIZER_COMMON_H
#define ANETRAIN_FUZZ_TOKENIZER_COMMON_H

#include "data/tokenizer.h"
#include "fuzz_common.h"

static inline void fuzz_exercise_tokenizer(const Tokenizer *tok, const uint8_t *data, size_t size) {
    static const char sample[] = "Once upon a time, <s> there  was\ta caf\xc3\xa9 \xe2\x96\x81 <|im_start|>\xff\xfe "
                                 "\xe4\xb8\xad\xe6\x96\x87 123 it's\n\n\0end";
    const char *texts[2] = {sample, (const char *)data};
    size_t lens[2] = {sizeof sample - 1, size < 256 ? size : 256};
    int vocab = tokenizer_vocab_size(tok);
    char desc[512];
    tokenizer_describe(tok, desc, sizeof desc);
    for (int k = 0; k < 2; k++) {
        TokenIds ids = {0};
        Err err;
        if (tokenizer_encode(tok, texts[k], lens[k], 1, &ids, &err) == 0) {
            int prev = -1;
            for (size_t i = 0; i < ids.n; i++) {
                FUZZ_CHECK(ids.ids[i] >= 0 && ids.ids[i] < vocab, "id %d outside the vocabulary of %d", ids.ids[i],
                           vocab);
                size_t len;
                (void)tokenizer_decode_piece(tok, prev, ids.ids[i], &len);
                (void)tokenizer_id_to_piece(tok, ids.ids[i], &len);
                (void)tokenizer_is_special(tok, ids.ids[i]);
                prev = ids.ids[i];
            }
            size_t n;
            char *back = tokenizer_decode(tok, ids.ids, ids.n, 0, &n, &err);
            free(back);
            back = tokenizer_decode(tok, ids.ids, ids.n, 1, &n, &err);
            free(back);
        }
        token_ids_free(&ids);
    }
    (void)tokenizer_bos_id(tok);
    (void)tokenizer_eos_id(tok);
    (void)tokenizer_piece_to_id(tok, "a", 1);
}

#endif
