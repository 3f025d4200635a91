/*
** io_internal.h — helpers shared by the readers and writers of src/io, not a public API.
**
** Byte order: every format we read or write is little-endian. These helpers decode and
** encode explicitly so the code is correct on any host, and take the memcpy fast path on
** little-endian hosts (all the machines we run on).
*/
#ifndef ANETRAIN_IO_INTERNAL_H
#define ANETRAIN_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../model/config.h"
#include "../util/err.h"
#include "../util/fileio.h"

/* dst[i] = the little-endian fp32 at src + 4*i, for i < n (src needs no alignment). */
void io_f32_from_le(float *dst, const uint8_t *src, size_t n);
/* Appends n floats to f as little-endian fp32. */
int io_write_f32_le(AtomicFile *f, const float *src, size_t n, Err *err);

/* "a string", "an object", "nothing" (NULL), ... for messages about JSON values. */
struct cJSON;
const char *io_json_type(const struct cJSON *j);

/* "[a, b, c]" into buf (truncated to size). */
void io_shape_format(char *buf, size_t size, const int64_t *shape, int rank);

/* Applies the RoPE row permutation to n_heads consecutive heads of D rows x cols floats each,
** in place: rows of a head in one style move to where the other style keeps them.
** to == ROPE_HALF:        interleaved row 2i+p  -> half row p*(D/2)+i
** to == ROPE_INTERLEAVED: half row p*(D/2)+i    -> interleaved row 2i+p      (p < 2, i < D/2) */
void io_rope_permute_heads(float *x, size_t n_heads, int D, size_t cols, RopeStyle to);

/* Checks the 28-byte llama2.c header `bytes` against the file size and fills cfg.
** Returns -1 with a message naming the header field or the expected byte count. */
#define LLAMA2C_HEADER_BYTES 28
int llama2c_header_check(const uint8_t *bytes, uint64_t file_size, ModelConfig *cfg, const char *path, Err *err);

#endif
