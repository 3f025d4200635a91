/*
** safetensors.h — reading and writing the safetensors format.
**
** Layout: u64 little-endian header length N, N bytes of JSON mapping each tensor name to
** {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the
** header), an optional "__metadata__" string map, then the raw little-endian data.
** The reader validates everything against the file size before touching data; a corrupt
** file is an expected input.
*/
#ifndef ANETRAIN_SAFETENSORS_H
#define ANETRAIN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../util/err.h"

typedef enum { ST_F32, ST_F16, ST_BF16, ST_OTHER } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    char dtype_name[16]; /* as written in the file, for messages */
    int rank;
    int64_t shape[8];
    size_t begin, end; /* byte offsets into the data section */
} StTensor;

typedef struct {
    char path[1024];
    int n_tensors;
    StTensor *tensors;
    const uint8_t *data; /* start of the data section (the file is mapped read-only) */
    size_t data_size;
    void *map;
    size_t map_size;
} StFile;

int st_open(StFile *f, const char *path, Err *err);
void st_close(StFile *f);
/* The tensor called name, or NULL. */
const StTensor *st_find(const StFile *f, const char *name);
/* Converts tensor t (F32/F16/BF16) to fp32 into out, which holds `expect_numel` floats; fails
** with file/tensor/expected/found when the element count or dtype does not fit. */
int st_read_f32(const StFile *f, const StTensor *t, float *out, size_t expect_numel, Err *err);

/* One tensor to write. */
typedef struct {
    const char *name;
    const float *data;
    int rank;
    int64_t shape[8];
} StWriteTensor;

/* Writes n tensors as F32 (names must be unique), atomically. metadata may be NULL or a
** NULL-terminated list of key, value string pairs. */
int st_write_f32(const char *path, const StWriteTensor *tensors, int n, const char *const *metadata, Err *err);

#endif
