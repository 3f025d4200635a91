/*
** tokfile.h — token files.
**
** Two formats are read, told apart by the first 8 bytes:
**   raw      llama2.c / TinyStories: a flat little-endian uint16 stream, no header (each
**            document starts with BOS=1). Any file without our magic is read as raw; its
**            size must be even.
**   ANETOK   ours, for vocabularies beyond 65,535 (Qwen3): a 32-byte header
**              "ANETOK1\0"  magic
**              u32 version (1)   u32 id_bytes (2 or 4)   u32 vocab_size (0 = unknown)
**              u32 reserved (0)  u64 n_tokens
**            then n_tokens little-endian ids of id_bytes each.
** Every id is checked against the model's vocabulary when the file is opened for a model.
*/
#ifndef ANETRAIN_TOKFILE_H
#define ANETRAIN_TOKFILE_H

#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"

#define TOKFILE_MAGIC "ANETOK1"
#define TOKFILE_HEADER_BYTES 32

typedef struct {
    char path[1024];
    int headered;       /* 1 for ANETOK, 0 for raw uint16 */
    int id_bytes;       /* 2 or 4 */
    uint32_t vocab_size; /* from the header; 0 when unknown (raw files) */
    size_t n_tokens;
    int32_t *tokens;    /* all ids, widened to int32 */
} TokFile;

/* Reads the whole file. If vocab > 0, fails on the first id >= vocab (naming its position),
** and on a header whose vocab_size exceeds vocab. */
int tokfile_load(TokFile *f, const char *path, int vocab, Err *err);
void tokfile_free(TokFile *f);

/* Writes ids atomically: raw uint16 when id_bytes == 2 and headered == 0, else ANETOK with
** id_bytes 2 or 4. Fails if an id does not fit id_bytes. */
int tokfile_save(const char *path, const int32_t *ids, size_t n, int headered, int id_bytes, uint32_t vocab_size,
                 Err *err);

#endif
