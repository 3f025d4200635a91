/*
** documents.h — what a document is, and reading documents from text files.
**
** A text holds documents in one of four formats (each command accepts some of them):
**   paragraphs  lines up to a blank (whitespace-only) line, the newlines inside kept, a final
**               \r dropped; blank lines only separate (finetune's default)
**   lines       one per line (a final \r is dropped with the \n); empty lines are documents
**               too, empty ones, which the commands skip or count (tokenize's default)
**   file        the whole text, bytes as they are (an empty text holds none)
**   jsonl       one JSON object per line whose text field holds the document; blank lines are
**               skipped (tokenize only: read through a DocReader, which parses the line)
** Any bytes are documents: nothing here looks at UTF-8 (the tokenizers keep every byte).
**
** Two ways to read them:
**   doc_split_next  one document after another out of a text in memory (not jsonl)
**   DocReader       the documents of a list of files, streamed: files are mapped one at a time
**                   and documents point into them (or, from JSON lines, into the caller's
**                   arena), so memory stays bounded however much text there is.
*/
#ifndef ANETRAIN_DOCUMENTS_H
#define ANETRAIN_DOCUMENTS_H

#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"
#include "../util/fileio.h"

typedef enum { DOC_PARAGRAPHS, DOC_LINES, DOC_FILE, DOC_JSONL, DOC_FORMATS } DocFormat;

#define DOC_FORMAT_BIT(f) (1u << (f)) /* a set of formats, for doc_format_parse */

/* "paragraphs", "lines", "file", "jsonl". */
const char *doc_format_name(DocFormat f);
/* Parses the name s given to `flag` into *out among the formats whose bit is set in allowed;
** the message names them in the order above ("--format: expected lines, file or jsonl, ..."). */
int doc_format_parse(const char *flag, const char *s, unsigned allowed, DocFormat *out, Err *err);

/* The next document of text[0, size) from *pos in format f (not DOC_JSONL: there it is the next
** line, whole, for the caller to parse). Returns 1 with the document in [*start, *start + *len),
** or 0 at the end; *pos moves past what was read and *lines counts the lines read. */
int doc_split_next(DocFormat f, const char *text, size_t size, size_t *pos, long *lines, const char **start,
                   size_t *len);

/* The documents of a text as (start, length) slices into it. */
typedef struct {
    const char **start;
    size_t *len;
    size_t n, cap;
} DocList;

/* Appends every non-empty document of text[0, size) in format f (not DOC_JSONL) to d. */
int doc_list_split(DocList *d, DocFormat f, const char *text, size_t size, Err *err);
void doc_list_free(DocList *d);

/* Every input must be a readable, non-empty regular file; the sizes add up to *total. n 0 is
** an error ("expected at least one input text file"). */
int doc_inputs_check(const char *const *paths, int n, uint64_t *total, Err *err);

/* A growable text buffer: where the texts of JSON lines are copied (NUL-terminated). */
typedef struct {
    char *p;
    size_t n, cap;
} DocArena;

/* One document: ptr into a mapped file, or (ptr NULL) off into the caller's arena. */
typedef struct {
    const char *ptr;
    size_t off, len;
} DocRef;

/* Called with each input file's bytes when it is opened (e.g. to warn that it looks binary). */
typedef void (*DocOpenHook)(void *ctx, const char *path, const uint8_t *data, size_t size);

typedef struct {
    const char *const *paths;
    int n_paths;
    DocFormat format;
    const char *field;  /* DOC_JSONL: the text field */
    DocOpenHook on_open; /* NULL: none */
    void *on_open_ctx;
    int fi;            /* the file being read; n_paths at the end */
    MappedFile cur;
    int cur_open;
    size_t pos;        /* next byte of cur */
    long line;         /* lines read in cur */
    uint64_t done;     /* bytes of finished files plus pos */
    MappedFile *retired; /* finished files whose text a pending document may still point into */
    int n_retired, cap_retired;
} DocReader;

void doc_reader_init(DocReader *r, const char *const *paths, int n, DocFormat format, const char *field,
                     DocOpenHook on_open, void *on_open_ctx);
/* The next document: 1 (in *doc), 0 at the end of the inputs, -1 on error. An empty input file,
** a JSON line that does not parse, is no object, or lacks a string text field (or holds
** \u0000) is an error naming the file and line. */
int doc_reader_next(DocReader *r, DocArena *arena, DocRef *doc, Err *err);
/* Unmaps the finished files (call when no document points into them any more). */
void doc_reader_release(DocReader *r);
void doc_reader_free(DocReader *r);

#endif
