/*
** fileio.h — file helpers shared by every reader and writer.
**
** Writers never leave a half-written file: AtomicFile writes to "<path>.tmp.<pid>" in the
** same directory, and commit fsyncs it, renames it over path and fsyncs the directory;
** abort (or any failed write) removes the temporary file. A process killed in between leaves
** its temporary file behind: the next atomic_file_open of the same path removes every
** "<path>.tmp.<pid>" whose pid is not a live process (or is this one), and nothing else.
** main() ignores SIGXFSZ, so a file-size limit fails a write with EFBIG like a full disk.
**
** Commands check every output path at startup (output_file_check, output_dir_check), so that
** a run never does its work and then finds it cannot save it.
*/
#ifndef ANETRAIN_FILEIO_H
#define ANETRAIN_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

/* The longest path a writer takes, in bytes with the NUL (output_*_check refuse longer ones). */
#define FILE_PATH_MAX 1024
/* The longest file name (one path component) the temporary file's ".tmp.<pid>" is added to. */
#define FILE_NAME_MAX 232

typedef struct {
    FILE *fp;
    char path[FILE_PATH_MAX];
    char tmp_path[FILE_PATH_MAX + 32];
    int failed; /* a write failed; commit will refuse */
    uint32_t crc; /* running CRC-32 of bytes since the last atomic_file_crc_reset */
} AtomicFile;

/* Removes stale temporary files of path first (see above), then creates this one's. */
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
/* Creates the directory and its missing parents (mkdir -p). */
int dir_ensure_all(const char *path, Err *err);
/* Creates the directory that will hold the file at path, with its missing parents. */
int dir_ensure_parent(const char *path, Err *err);

/* Checks that a file can be written at path later (nothing is created): the path is not empty
** and fits FILE_PATH_MAX and FILE_NAME_MAX, it is not a directory or another non-regular file,
** and its nearest existing ancestor is a directory this process may write into (the missing
** ones are created by dir_ensure_parent). `what` names it in messages ("--out", "--log"). */
int output_file_check(const char *path, const char *what, Err *err);
/* The same for a directory that files will be written into (an adapter directory, a HF model
** directory): it is a directory if it exists, and room is left in FILE_PATH_MAX for
** `longest_child`, the longest file name to be written into it. */
int output_dir_check(const char *path, const char *what, const char *longest_child, Err *err);

/* Removes the stale temporary files of an atomic write of path (see above): returns how many. */
int atomic_file_remove_stale(const char *path);

/* Removes path and, if it is a directory, everything below it (links are removed, never
** followed). Best effort: keeps going past entries it cannot remove; returns -1 if any remain. */
int path_remove_tree(const char *path);

/* The first occurrence of needle (m bytes) in haystack (n bytes), or NULL: memmem, which is
** not in standard C or POSIX. An empty needle matches at the start. */
const void *mem_find(const void *haystack, size_t n, const void *needle, size_t m);

/* CRC-32 (IEEE 802.3) via zlib, continuing from crc (start with 0). */
uint32_t crc32_update(uint32_t crc, const void *data, size_t n);

#endif
