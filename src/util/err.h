/*
** err.h — errors are values.
**
** Library code never exits and never asserts on user input: a function that can
** fail takes an `Err *` and returns -1 (or NULL) after filling it with one line that
** names the file, the field, what was expected and what was found. Only the CLI
** decides to print and exit. Passing a NULL Err is allowed (the message is dropped).
** A message longer than ERR_MSG_MAX keeps its start and its end (the reason) around " ... ".
*/
#ifndef ANETRAIN_ERR_H
#define ANETRAIN_ERR_H

#include <stddef.h>

#define ERR_MSG_MAX 1024

typedef struct {
    char msg[ERR_MSG_MAX];
} Err;

#if defined(__GNUC__) || defined(__clang__)
#define ERR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ERR_PRINTF(a, b)
#endif

/* Fills err with a formatted message; always returns -1 so callers can `return err_set(...)`. */
int err_set(Err *err, const char *fmt, ...) ERR_PRINTF(2, 3);

/* Prepends "prefix: " to an existing message (adds context while unwinding); returns -1. */
int err_wrap(Err *err, const char *fmt, ...) ERR_PRINTF(2, 3);

/* Allocation helpers that report failure through Err (size in the message). */
void *err_malloc(size_t bytes, const char *what, Err *err);
void *err_calloc(size_t count, size_t size, const char *what, Err *err);

#endif
