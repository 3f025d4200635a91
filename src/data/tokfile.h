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
#include "../util/fileio.h"

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

/* Text given where a token file was expected: a raw file has no header to tell, but text is
** easy to recognise. The fraction of text bytes (printable ASCII, tab, newlines, and the bytes of
** valid UTF-8 sequences) among the first TOKFILE_TEXT_SAMPLE bytes; a token stream has many
** bytes below 0x20 (the high byte of every id under 8192, BOS = 1), text has almost none. */
#define TOKFILE_TEXT_SAMPLE 65536
double tokfile_text_fraction(const uint8_t *bytes, size_t n);
/* Fails, saying "this looks like text: tokenize it first with `anetrain tokenize`", when path
** is a raw token file (no ANETOK header) of at least 16 bytes whose sample is 99% text.
** `flag` names the option in the message ("--data"). */
int tokfile_refuse_text(const char *path, const char *flag, Err *err);

/* Writes ids atomically: raw uint16 when id_bytes == 2 and headered == 0, else ANETOK with
** id_bytes 2 or 4. Fails if an id does not fit id_bytes. */
int tokfile_save(const char *path, const int32_t *ids, size_t n, int headered, int id_bytes, uint32_t vocab_size,
                 Err *err);

/* A token file written in pieces, for inputs that do not fit in memory: open, put any number of
** times, then commit (or abort, which is also safe after a failed call or a commit). Nothing
** appears at path before commit; the ANETOK header's count is filled in at commit. Each put
** checks its ids (against vocab_size when it is non-zero, else against id_bytes) before
** writing any of them. The struct holds a 64 KiB buffer: keep it off the stack. */
typedef struct {
    AtomicFile af;
    int open, headered, id_bytes;
    uint32_t vocab_size;
    uint64_t n_tokens;   /* ids put so far */
    size_t nbuf;
    uint8_t buf[1 << 16];
} TokWriter;

/* headered 0 needs id_bytes 2 (raw uint16); headered 1 writes ANETOK with id_bytes 2 or 4. */
int tokfile_writer_open(TokWriter *w, const char *path, int headered, int id_bytes, uint32_t vocab_size, Err *err);
int tokfile_writer_put(TokWriter *w, const int32_t *ids, size_t n, Err *err);
int tokfile_writer_commit(TokWriter *w, Err *err);
void tokfile_writer_abort(TokWriter *w);

#endif
