/*
** tokfile.c — reading and writing token files (see tokfile.h for both formats).
**
** This module turns bytes on disk into int32 token ids and back. It must never hand out an
** id it has not checked: every id is range-checked while it is widened, a corrupt or
** truncated file is an error value naming the file and the field, and a write never leaves
** a partial file at the destination (AtomicFile).
*/
#include "tokfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/fileio.h"

enum { TOKFILE_VERSION = 1 };

/* ---------------------------------------------------------------- little-endian fields */

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

static void put_u32(uint8_t *p, uint32_t x) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t x) {
    put_u32(p, (uint32_t)x);
    put_u32(p + 4, (uint32_t)(x >> 32));
}

/* ---------------------------------------------------------------- text given as tokens */

/* The length of the valid UTF-8 sequence of 2 to 4 bytes at p (n bytes left), or 0. */
static size_t utf8_multibyte(const uint8_t *p, size_t n) {
    size_t len = p[0] >= 0xC2 && p[0] <= 0xDF ? 2 : p[0] >= 0xE0 && p[0] <= 0xEF ? 3 : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

double tokfile_text_fraction(const uint8_t *bytes, size_t n) {
    if (n == 0) return 0;
    size_t text = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = bytes[i];
        if ((c >= 0x20 && c < 0x7F) || c == '\t' || c == '\n' || c == '\r') {
            text++;
            i++;
        } else if (c >= 0x80 && utf8_multibyte(bytes + i, n - i)) {
            size_t len = utf8_multibyte(bytes + i, n - i);
            text += len;
            i += len;
        } else {
            i++;
        }
    }
    return (double)text / (double)n;
}

int tokfile_refuse_text(const char *path, const char *flag, Err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0; /* the loader says why */
    static const size_t sample = TOKFILE_TEXT_SAMPLE;
    uint8_t *buf = malloc(sample);
    if (!buf) {
        fclose(fp);
        return 0;
    }
    size_t n = fread(buf, 1, sample, fp);
    fclose(fp);
    int headered = n >= 8 && memcmp(buf, TOKFILE_MAGIC, 8) == 0;
    double frac = tokfile_text_fraction(buf, n);
    free(buf);
    if (headered || n < 16 || frac < 0.99) return 0;
    return err_set(err,
                   "%s %s: this looks like text: tokenize it first with `anetrain tokenize` (%.1f%% of its first %zu "
                   "bytes are printable ASCII or UTF-8; --data-is-tokens reads it as uint16 token ids anyway)",
                   flag, path, 100.0 * frac, n);
}

/* ---------------------------------------------------------------- reading */

/* The largest id a file may hold, exclusive, and what set it (for messages). The model's
** vocabulary and the header's both bound the ids; the int32 range bounds them always. */
static uint32_t tokfile_id_limit(const TokFile *f, int vocab, const char **which) {
    uint32_t limit = 0x80000000u;
    *which = "the int32 range";
    if (vocab > 0) {
        limit = (uint32_t)vocab;
        *which = "the model's vocab_size";
    }
    if (f->vocab_size > 0 && f->vocab_size < limit) {
        limit = f->vocab_size;
        *which = "the file header's vocab_size";
    }
    return limit;
}

/* Widens n little-endian ids of id_bytes each into f->tokens, failing on the first id >= limit. */
static int tokfile_widen_ids(TokFile *f, const uint8_t *p, uint32_t limit, const char *which, Err *err) {
    f->tokens = err_malloc(f->n_tokens * sizeof *f->tokens, f->path, err);
    if (!f->tokens) return -1;
    size_t n = f->n_tokens;
    int32_t *out = f->tokens;
    uint32_t worst = 0; /* the largest id seen; only when it is out of range do we look for where */
    if (f->id_bytes == 2) {
        for (size_t i = 0; i < n; i++) {
            uint32_t id = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
            worst = id > worst ? id : worst;
            out[i] = (int32_t)id;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            uint32_t id = get_u32(p + 4 * i);
            worst = id > worst ? id : worst;
            out[i] = (int32_t)(id & 0x7FFFFFFFu); /* an id with the top bit set fails below */
        }
    }
    if (worst < limit) return 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = f->id_bytes == 2 ? (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8 : get_u32(p + 4 * i);
        if (id >= limit)
            return err_set(err, "%s: token %zu: expected an id below %u (%s), found id %u", f->path, i, limit,
                           which, id);
    }
    return 0; /* unreachable: worst came from one of the ids */
}

/* Parses the 32-byte ANETOK header and checks it against the file length and the model. */
static int tokfile_read_header(TokFile *f, const uint8_t *data, size_t size, int vocab, Err *err) {
    if (size < TOKFILE_HEADER_BYTES)
        return err_set(err, "%s: truncated ANETOK header: expected at least %d bytes, found %zu bytes", f->path,
                       TOKFILE_HEADER_BYTES, size);
    uint32_t version = get_u32(data + 8), id_bytes = get_u32(data + 12), vocab_size = get_u32(data + 16);
    uint32_t reserved = get_u32(data + 20);
    uint64_t n_tokens = get_u64(data + 24);
    if (version != TOKFILE_VERSION)
        return err_set(err, "%s: field version: expected %d, found %u", f->path, TOKFILE_VERSION, version);
    if (id_bytes != 2 && id_bytes != 4)
        return err_set(err, "%s: field id_bytes: expected 2 or 4, found %u", f->path, id_bytes);
    if (reserved != 0) return err_set(err, "%s: field reserved: expected 0, found %u", f->path, reserved);
    if (n_tokens == 0) return err_set(err, "%s: no tokens (field n_tokens is 0)", f->path);
    uint64_t payload = size - TOKFILE_HEADER_BYTES;
    if (n_tokens > payload / id_bytes || n_tokens * id_bytes != payload) {
        uint64_t expected = n_tokens > (UINT64_MAX - TOKFILE_HEADER_BYTES) / id_bytes
                                ? UINT64_MAX
                                : TOKFILE_HEADER_BYTES + n_tokens * id_bytes;
        return err_set(err, "%s: field n_tokens is %llu: expected a file of %llu bytes, found %zu bytes", f->path,
                       (unsigned long long)n_tokens, (unsigned long long)expected, size);
    }
    if (vocab > 0 && vocab_size > (uint32_t)vocab)
        return err_set(err, "%s: field vocab_size: expected at most %d (the model's vocabulary), found %u", f->path,
                       vocab, vocab_size);
    f->headered = 1;
    f->id_bytes = (int)id_bytes;
    f->vocab_size = vocab_size;
    f->n_tokens = (size_t)n_tokens;
    return 0;
}

static int tokfile_read_raw(TokFile *f, size_t size, Err *err) {
    if (size == 0) return err_set(err, "%s: no tokens (empty file)", f->path);
    if (size % 2 != 0)
        return err_set(err, "%s: raw uint16 token file: expected an even size, found %zu bytes", f->path, size);
    f->headered = 0;
    f->id_bytes = 2;
    f->vocab_size = 0;
    f->n_tokens = size / 2;
    return 0;
}

int tokfile_load(TokFile *f, const char *path, int vocab, Err *err) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) return err_set(err, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    MappedFile m;
    if (file_map(&m, path, err) != 0) return -1;
    int headered = m.size >= 8 && memcmp(m.data, TOKFILE_MAGIC, 8) == 0; /* 8 bytes: the magic and its NUL */
    int rc = headered ? tokfile_read_header(f, m.data, m.size, vocab, err) : tokfile_read_raw(f, m.size, err);
    if (rc == 0) {
        const char *which;
        uint32_t limit = tokfile_id_limit(f, vocab, &which);
        rc = tokfile_widen_ids(f, m.data + (headered ? TOKFILE_HEADER_BYTES : 0), limit, which, err);
    }
    file_unmap(&m);
    if (rc != 0) tokfile_free(f);
    return rc;
}

void tokfile_free(TokFile *f) {
    free(f->tokens);
    f->tokens = NULL;
    f->n_tokens = 0;
}

/* ---------------------------------------------------------------- writing */

/* Checks ids before any of them touches the disk; `first` numbers them in messages. */
static int tokfile_check_ids(const char *path, const int32_t *ids, size_t n, size_t first, int id_bytes,
                             uint32_t vocab_size, Err *err) {
    int64_t limit = id_bytes == 2 ? 65536 : INT64_C(0x80000000);
    const char *which = id_bytes == 2 ? "2-byte ids" : "4-byte ids";
    if (vocab_size > 0 && vocab_size < limit) {
        limit = vocab_size;
        which = "vocab_size";
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= limit)
            return err_set(err, "%s: token %zu: expected an id in [0, %lld) (%s), found id %d", path, first + i,
                           (long long)limit, which, ids[i]);
    }
    return 0;
}

/* The ANETOK header (tokfile.h). */
static void tokfile_header(uint8_t h[TOKFILE_HEADER_BYTES], int id_bytes, uint32_t vocab_size, uint64_t n) {
    memset(h, 0, TOKFILE_HEADER_BYTES);
    memcpy(h, TOKFILE_MAGIC, 8);
    put_u32(h + 8, TOKFILE_VERSION);
    put_u32(h + 12, (uint32_t)id_bytes);
    put_u32(h + 16, vocab_size);
    put_u32(h + 20, 0);
    put_u64(h + 24, n);
}

int tokfile_writer_open(TokWriter *w, const char *path, int headered, int id_bytes, uint32_t vocab_size, Err *err) {
    memset(w, 0, sizeof *w);
    if (id_bytes != 2 && id_bytes != 4) return err_set(err, "%s: id_bytes: expected 2 or 4, found %d", path, id_bytes);
    if (!headered && id_bytes != 2)
        return err_set(err, "%s: a raw token file holds 2-byte ids, found id_bytes %d (use ANETOK)", path, id_bytes);
    w->headered = headered;
    w->id_bytes = id_bytes;
    w->vocab_size = vocab_size;
    if (atomic_file_open(&w->af, path, err) != 0) return -1;
    w->open = 1;
    if (headered) { /* the count is filled in at commit */
        uint8_t h[TOKFILE_HEADER_BYTES];
        tokfile_header(h, id_bytes, vocab_size, 0);
        if (atomic_file_write(&w->af, h, sizeof h, err) != 0) return -1;
    }
    return 0;
}

static int tokfile_writer_flush(TokWriter *w, Err *err) {
    int rc = atomic_file_write(&w->af, w->buf, w->nbuf, err);
    w->nbuf = 0;
    return rc;
}

int tokfile_writer_put(TokWriter *w, const int32_t *ids, size_t n, Err *err) {
    if (!w->open) return err_set(err, "token file writer: put after commit or abort");
    if (tokfile_check_ids(w->af.path, ids, n, (size_t)w->n_tokens, w->id_bytes, w->vocab_size, err) != 0) return -1;
    for (size_t i = 0; i < n; i++) { /* explicit little-endian bytes through the buffer */
        if (w->nbuf + 4 > sizeof w->buf && tokfile_writer_flush(w, err) != 0) return -1;
        uint32_t id = (uint32_t)ids[i];
        w->buf[w->nbuf] = (uint8_t)id;
        w->buf[w->nbuf + 1] = (uint8_t)(id >> 8);
        if (w->id_bytes == 4) {
            w->buf[w->nbuf + 2] = (uint8_t)(id >> 16);
            w->buf[w->nbuf + 3] = (uint8_t)(id >> 24);
        }
        w->nbuf += (size_t)w->id_bytes;
    }
    w->n_tokens += n;
    return 0;
}

void tokfile_writer_abort(TokWriter *w) {
    if (w->open) atomic_file_abort(&w->af);
    w->open = 0;
}

int tokfile_writer_commit(TokWriter *w, Err *err) {
    if (!w->open) return err_set(err, "token file writer: commit after commit or abort");
    if (tokfile_writer_flush(w, err) != 0) {
        tokfile_writer_abort(w);
        return -1;
    }
    if (w->headered) {
        uint8_t h[TOKFILE_HEADER_BYTES];
        tokfile_header(h, w->id_bytes, w->vocab_size, w->n_tokens);
        if (fflush(w->af.fp) != 0 || fseek(w->af.fp, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, w->af.fp) != sizeof h) {
            err_set(err, "%s: cannot write the header: %s", w->af.path, strerror(errno));
            tokfile_writer_abort(w);
            return -1;
        }
    }
    w->open = 0;
    return atomic_file_commit(&w->af, err);
}

int tokfile_save(const char *path, const int32_t *ids, size_t n, int headered, int id_bytes, uint32_t vocab_size,
                 Err *err) {
    if (id_bytes != 2 && id_bytes != 4)
        return err_set(err, "%s: id_bytes: expected 2 or 4, found %d", path, id_bytes);
    if (n == 0) return err_set(err, "%s: no tokens to write", path);
    /* every id is checked before the file is created */
    if (tokfile_check_ids(path, ids, n, 0, id_bytes, vocab_size, err) != 0) return -1;
    TokWriter *w = err_malloc(sizeof *w, "token file writer", err); /* 64 KiB: not on the stack */
    if (!w) return -1;
    int rc = tokfile_writer_open(w, path, headered || id_bytes != 2, id_bytes, vocab_size, err);
    if (rc == 0) rc = tokfile_writer_put(w, ids, n, err);
    if (rc == 0) rc = tokfile_writer_commit(w, err);
    tokfile_writer_abort(w); /* no-op after a commit */
    free(w);
    return rc;
}
