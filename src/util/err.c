/*
** err.c — formatting of error values (see err.h).
**
** A message longer than ERR_MSG_MAX keeps its start and its end, with " ... " between them:
** the reason is at the end ("path: cannot create: No space left on device"), so a long path
** must never push it out.
*/
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies s (n bytes) into msg, eliding its middle if it does not fit. */
static void put_elided(char *msg, const char *s, size_t n) {
    if (n < ERR_MSG_MAX) {
        memcpy(msg, s, n);
        msg[n] = '\0';
        return;
    }
    static const char gap[] = " ... ";
    size_t keep = ERR_MSG_MAX - 1 - (sizeof gap - 1), head = keep / 3, tail = keep - head;
    memcpy(msg, s, head);
    memcpy(msg + head, gap, sizeof gap - 1);
    memcpy(msg + head + sizeof gap - 1, s + n - tail, tail);
    msg[ERR_MSG_MAX - 1] = '\0';
}

/* Formats fmt, then suffix (may be NULL), into msg; a message too long for it is formatted
** on the heap and elided. */
static void format_elided(char *msg, const char *suffix, const char *fmt, va_list ap) {
    size_t slen = suffix ? strlen(suffix) : 0;
    char small[ERR_MSG_MAX];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n < 0) n = 0;
    if (!suffix && (size_t)n < sizeof small) {
        memcpy(msg, small, (size_t)n + 1);
        va_end(ap2);
        return;
    }
    char *big = malloc((size_t)n + slen + 1);
    if (!big) { /* no memory for the whole: the start of it, as before */
        snprintf(msg, ERR_MSG_MAX, "%s%s", small, suffix ? suffix : "");
        va_end(ap2);
        return;
    }
    vsnprintf(big, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    if (suffix) memcpy(big + n, suffix, slen + 1);
    put_elided(msg, big, (size_t)n + slen);
    free(big);
}

int err_set(Err *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    format_elided(err->msg, NULL, fmt, ap);
    va_end(ap);
    return -1;
}

int err_wrap(Err *err, const char *fmt, ...) {
    if (!err) return -1;
    /* "context: " + the old message; the old message is the suffix, so it keeps its end. */
    char old[ERR_MSG_MAX + 2];
    old[0] = ':';
    old[1] = ' ';
    memcpy(old + 2, err->msg, ERR_MSG_MAX);
    old[ERR_MSG_MAX + 1] = '\0';
    va_list ap;
    va_start(ap, fmt);
    format_elided(err->msg, old, fmt, ap);
    va_end(ap);
    return -1;
}

void *err_malloc(size_t bytes, const char *what, Err *err) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) err_set(err, "out of memory allocating %zu bytes for %s", bytes, what);
    return p;
}

void *err_calloc(size_t count, size_t size, const char *what, Err *err) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) err_set(err, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}
