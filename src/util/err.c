/*
** err.c — formatting of error values (see err.h).
*/
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int err_set(Err *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int err_wrap(Err *err, const char *fmt, ...) {
    if (!err) return -1;
    char old[ERR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    size_t used = (size_t)n < sizeof err->msg ? (size_t)n : sizeof err->msg - 1;
    size_t room = sizeof err->msg - used;
    if (room > 3) {
        memcpy(err->msg + used, ": ", 2);
        size_t keep = strlen(old) < room - 3 ? strlen(old) : room - 3;
        memcpy(err->msg + used + 2, old, keep);
        err->msg[used + 2 + keep] = '\0';
    }
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
