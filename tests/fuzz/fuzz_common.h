/*
** fuzz_common.h — what the libFuzzer harnesses in tests/fuzz/ share (built by `make fuzz`).
**
** Each harness is one parser of untrusted input. It loads its input and, where the project
** has a writer for that format, saves what it loaded and loads it again, aborting if the two
** differ. A harness must stay fast: files go to one scratch directory per process, under
** $TMPDIR (or /tmp), removed at exit.
**
** Directory formats (HF model directories, PEFT adapters) and MIL programs with weight blobs
** take several files from one input: its parts, separated by FUZZ_PART_SEP (the seed tool,
** tests/fuzz/make_seeds.c, writes them that way; the dictionaries hold the separator).
*/
#ifndef ANETRAIN_FUZZ_COMMON_H
#define ANETRAIN_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_PART_SEP "\n--8<--\n"
#define FUZZ_MAX_PARTS 8

/* Aborts (a libFuzzer crash, with the input saved) when a round trip loses something. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The scratch directory of this process (created on first use). */
const char *fuzz_dir(void);
/* fuzz_dir()/name into buf (static storage of 4 rotating buffers). */
const char *fuzz_path(const char *name);
/* Writes data to path (replacing it); aborts if it cannot (the machine, not the input). */
void fuzz_write(const char *path, const void *data, size_t n);
/* Removes everything in fuzz_dir() (between inputs). */
void fuzz_clean(void);
/* Splits data at FUZZ_PART_SEP into at most max parts: part[i] / len[i]. Returns the count. */
int fuzz_split(const uint8_t *data, size_t n, const uint8_t **part, size_t *len, int max);
/* An input the loader refused: returns 0 (libFuzzer's "done"); with FUZZ_VERBOSE set in the
** environment, prints the message first (to see why a seed does not load). */
int fuzz_rejected(const char *what, const char *msg);

/* 1 if the two float arrays are equal bit for bit. */
int fuzz_same_bits(const void *a, const void *b, size_t bytes);

#endif
