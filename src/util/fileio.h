/*
** fileio.h — file helpers shared by every reader and writer.
**
** Writers never leave a half-written file: AtomicFile writes to "<path>.tmp.<pid>" in the
** same directory, and commit fsyncs it, renames it over path and fsyncs the directory;
** abort (or any failed write) removes the temporary file.
*/
#ifndef ANETRAIN_FILEIO_H
#define ANETRAIN_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

typedef struct {
    FILE *fp;
    char path[1024];
    char tmp_path[1100];
    int failed; /* a write failed; commit will refuse */
    uint32_t crc; /* running CRC-32 of bytes since the last atomic_file_crc_reset */
} AtomicFile;

int atomic_file_open(AtomicFile *f, const char *path, Err *err);
/* Appends bytes (and updates the running crc); returns -1 with a message on failure. */
int atomic_file_write(AtomicFile *f, const void *data, size_t n, Err *err);
void atomic_file_crc_reset(AtomicFile *f);
int atomic_file_commit(AtomicFile *f, Err *err);
void atomic_file_abort(AtomicFile *f);

/* Reads a whole file into a malloc'ed, NUL-terminated buffer; *size excludes the NUL. */
char *file_read_all(const char *path, size_t *size, Err *err);

/* Maps a file read-only (falls back to reading it). */
typedef struct {
    const uint8_t *data;
    size_t size;
    int mapped; /* 1: munmap; 0: free */
} MappedFile;
int file_map(MappedFile *m, const char *path, Err *err);
void file_unmap(MappedFile *m);

/* 1 if path is a directory. */
int path_is_dir(const char *path);
/* 1 if path exists. */
int path_exists(const char *path);
/* Creates the directory (one level) if it does not exist. */
int dir_ensure(const char *path, Err *err);

/* Removes path and, if it is a directory, everything below it (links are removed, never
** followed). Best effort: keeps going past entries it cannot remove; returns -1 if any remain. */
int path_remove_tree(const char *path);

/* The first occurrence of needle (m bytes) in haystack (n bytes), or NULL: memmem, which is
** not in standard C or POSIX. An empty needle matches at the start. */
const void *mem_find(const void *haystack, size_t n, const void *needle, size_t m);

/* CRC-32 (IEEE 802.3) via zlib, continuing from crc (start with 0). */
uint32_t crc32_update(uint32_t crc, const void *data, size_t n);

#endif
