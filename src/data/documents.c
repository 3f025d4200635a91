/*
** documents.c — the document formats and the readers of documents (see documents.h).
**
** The messages name the files and lines, and (for JSON lines) the flags of the commands that
** choose the field and the format, --text-field and --format: both commands that read JSON
** lines have them.
*/
#include "documents.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- formats */

static const char *const format_names[DOC_FORMATS] = {"paragraphs", "lines", "file", "jsonl"};

const char *doc_format_name(DocFormat f) { return f < DOC_FORMATS ? format_names[f] : "?"; }

int doc_format_parse(const char *flag, const char *s, unsigned allowed, DocFormat *out, Err *err) {
    char list[128] = "";
    int n_allowed = 0, listed = 0;
    for (int f = 0; f < DOC_FORMATS; f++) {
        if (!(allowed & DOC_FORMAT_BIT(f))) continue;
        n_allowed++;
        if (!strcmp(s, format_names[f])) {
            *out = (DocFormat)f;
            return 0;
        }
    }
    for (int f = 0; f < DOC_FORMATS; f++) { /* "a, b or c" */
        if (!(allowed & DOC_FORMAT_BIT(f))) continue;
        listed++;
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%s", listed == 1 ? "" : listed == n_allowed ? " or " : ", ",
                 format_names[f]);
    }
    return err_set(err, "%s: expected %s, found '%s'", flag, list, s);
}

/* ---------------------------------------------------------------- documents of a text */

static int line_is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v') return 0;
    return 1;
}

/* The line at *pos: [*start, *start + *len) without its \n; *pos moves past the \n. */
static void next_line(const char *text, size_t size, size_t *pos, long *lines, const char **start, size_t *len) {
    const char *p = text + *pos;
    const char *nl = memchr(p, '\n', size - *pos);
    size_t n = nl ? (size_t)(nl - p) : size - *pos;
    *pos += n + (nl ? 1 : 0);
    (*lines)++;
    *start = p;
    *len = n;
}

int doc_split_next(DocFormat f, const char *text, size_t size, size_t *pos, long *lines, const char **start,
                   size_t *len) {
    if (*pos >= size) return 0;
    if (f == DOC_FILE) {
        *start = text + *pos;
        *len = size - *pos;
        *pos = size;
        return 1;
    }
    if (f != DOC_PARAGRAPHS) {
        next_line(text, size, pos, lines, start, len);
        if (f == DOC_LINES && *len > 0 && (*start)[*len - 1] == '\r') (*len)--;
        return 1;
    }
    const char *para = NULL, *para_end = NULL; /* the paragraph being gathered */
    while (*pos < size) {
        const char *p;
        size_t n;
        next_line(text, size, pos, lines, &p, &n);
        if (n > 0 && p[n - 1] == '\r') n--;
        if (line_is_blank(p, n)) {
            if (para) break;
        } else {
            if (!para) para = p;
            para_end = p + n;
        }
    }
    if (!para) return 0;
    *start = para;
    *len = (size_t)(para_end - para);
    return 1;
}

static int doc_list_push(DocList *d, const char *s, size_t n, Err *err) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 1024;
        const char **s2 = realloc(d->start, cap * sizeof *s2);
        if (s2) d->start = s2;
        size_t *l2 = realloc(d->len, cap * sizeof *l2);
        if (l2) d->len = l2;
        if (!s2 || !l2) return err_set(err, "out of memory listing %zu documents", cap);
        d->cap = cap;
    }
    d->start[d->n] = s;
    d->len[d->n] = n;
    d->n++;
    return 0;
}

int doc_list_split(DocList *d, DocFormat f, const char *text, size_t size, Err *err) {
    size_t pos = 0;
    long lines = 0;
    const char *s;
    size_t n;
    while (doc_split_next(f, text, size, &pos, &lines, &s, &n))
        if (n > 0 && doc_list_push(d, s, n, err) != 0) return -1;
    return 0;
}

void doc_list_free(DocList *d) {
    free(d->start);
    free(d->len);
    memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------- documents of files */

int doc_inputs_check(const char *const *paths, int n, uint64_t *total, Err *err) {
    *total = 0;
    if (n == 0) return err_set(err, "expected at least one input text file, found none");
    for (int i = 0; i < n; i++) {
        struct stat st;
        FILE *fp = fopen(paths[i], "rb");
        if (!fp) return err_set(err, "%s: cannot open: %s", paths[i], strerror(errno));
        int ok = fstat(fileno(fp), &st) == 0;
        fclose(fp);
        if (!ok || !S_ISREG(st.st_mode)) return err_set(err, "%s: expected a regular text file, found something else", paths[i]);
        if (st.st_size == 0) return err_set(err, "%s: expected text, found an empty file", paths[i]);
        *total += (uint64_t)st.st_size;
    }
    return 0;
}

void doc_reader_init(DocReader *r, const char *const *paths, int n, DocFormat format, const char *field,
                     DocOpenHook on_open, void *on_open_ctx) {
    memset(r, 0, sizeof *r);
    r->paths = paths;
    r->n_paths = n;
    r->format = format;
    r->field = field;
    r->on_open = on_open;
    r->on_open_ctx = on_open_ctx;
}

void doc_reader_release(DocReader *r) {
    for (int i = 0; i < r->n_retired; i++) file_unmap(&r->retired[i]);
    r->n_retired = 0;
}

void doc_reader_free(DocReader *r) {
    doc_reader_release(r);
    if (r->cur_open) file_unmap(&r->cur);
    free(r->retired);
    r->cur_open = 0;
    r->retired = NULL;
}

static int reader_retire(DocReader *r, Err *err) {
    if (r->n_retired == r->cap_retired) {
        int cap = r->cap_retired ? 2 * r->cap_retired : 16;
        MappedFile *p = realloc(r->retired, (size_t)cap * sizeof *p);
        if (!p) return err_set(err, "out of memory");
        r->retired = p;
        r->cap_retired = cap;
    }
    r->retired[r->n_retired++] = r->cur;
    r->cur_open = 0;
    r->done += r->cur.size - r->pos;
    r->pos = 0;
    return 0;
}

/* True if the raw JSON text holds a \u0000 escape (cJSON's strings would end there). */
static int has_nul_escape(const char *p, size_t n) {
    for (size_t i = 0; i + 6 <= n; i++) {
        if (p[i] != '\\') continue;
        size_t k = i; /* the escape starts at the last of a run of backslashes that is odd */
        while (k + 1 < n && p[k + 1] == '\\') k++;
        size_t run = k - i + 1;
        if (run % 2 == 1 && k + 6 <= n && !memcmp(p + k + 1, "u0000", 5)) return 1;
        i = k;
    }
    return 0;
}

static const char *json_kind(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    return "an object";
}

/* One JSON line: the text field appended to arena. Returns 1 (a document), 0 (a blank line), -1. */
static int read_json_line(DocReader *r, const char *p, size_t n, DocArena *arena, DocRef *doc, Err *err) {
    const char *path = r->paths[r->fi];
    size_t k = 0;
    while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
    if (k == n) return 0;
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(p, n, &end, 0);
    if (v && end) {
        size_t used = (size_t)(end - p);
        while (used < n && (p[used] == ' ' || p[used] == '\t' || p[used] == '\r')) used++;
        if (used < n) {
            cJSON_Delete(v);
            return err_set(err, "%s:%ld: expected one JSON object per line, found more after column %zu", path,
                           r->line, (size_t)(end - p) + 1);
        }
    }
    if (!v) {
        const char *at = cJSON_GetErrorPtr();
        size_t col = at && at >= p && at <= p + n ? (size_t)(at - p) + 1 : 1;
        size_t show = n - (col - 1) < 40 ? n - (col - 1) : 40;
        return err_set(err, "%s:%ld: expected a JSON object, found invalid JSON at column %zu: \"%.*s\"", path,
                       r->line, col, (int)show, p + col - 1);
    }
    int rc = 1;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(v, r->field);
    if (!cJSON_IsObject(v)) {
        rc = err_set(err, "%s:%ld: expected a JSON object, found %s", path, r->line, json_kind(v));
    } else if (!f) {
        rc = err_set(err, "%s:%ld: field \"%s\": expected a string, found nothing (the field is missing; "
                          "--text-field chooses another)",
                     path, r->line, r->field);
    } else if (!cJSON_IsString(f)) {
        rc = err_set(err, "%s:%ld: field \"%s\": expected a string, found %s", path, r->line, r->field, json_kind(f));
    } else if (has_nul_escape(p, n)) {
        rc = err_set(err, "%s:%ld: expected text without \\u0000, found one: JSON lines input cannot carry NUL "
                          "characters (--format lines or file keeps NUL bytes)",
                     path, r->line);
    } else {
        size_t len = strlen(f->valuestring);
        doc->ptr = NULL;
        doc->off = arena->n;
        doc->len = len;
        if (arena->n + len + 1 > arena->cap) {
            size_t cap = arena->cap ? arena->cap : 1 << 16;
            while (cap < arena->n + len + 1) cap *= 2;
            char *q = realloc(arena->p, cap);
            if (!q) rc = err_set(err, "out of memory for %zu bytes of text", cap);
            else {
                arena->p = q;
                arena->cap = cap;
            }
        }
        if (rc == 1) {
            memcpy(arena->p + arena->n, f->valuestring, len);
            arena->n += len;
            arena->p[arena->n] = '\0';
        }
    }
    cJSON_Delete(v);
    return rc;
}

int doc_reader_next(DocReader *r, DocArena *arena, DocRef *doc, Err *err) {
    for (;;) {
        if (!r->cur_open) {
            if (r->fi >= r->n_paths) return 0;
            if (file_map(&r->cur, r->paths[r->fi], err)) return -1;
            r->cur_open = 1;
            r->pos = 0;
            r->line = 0;
            if (r->cur.size == 0) return err_set(err, "%s: expected text, found an empty file", r->paths[r->fi]);
            if (r->on_open) r->on_open(r->on_open_ctx, r->paths[r->fi], r->cur.data, r->cur.size);
        }
        if (r->pos >= r->cur.size) {
            if (reader_retire(r, err)) return -1;
            r->fi++;
            continue;
        }
        size_t before = r->pos, len;
        const char *p;
        int got = doc_split_next(r->format, (const char *)r->cur.data, r->cur.size, &r->pos, &r->line, &p, &len);
        r->done += r->pos - before;
        if (!got) continue; /* only blank lines were left */
        if (r->format != DOC_JSONL) {
            doc->ptr = p;
            doc->off = 0;
            doc->len = len;
            return 1;
        }
        int rc = read_json_line(r, p, len, arena, doc, err);
        if (rc != 0) return rc;
    }
}
