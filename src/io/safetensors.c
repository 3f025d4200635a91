/*
** safetensors.c — reader and writer of the safetensors format (see safetensors.h).
**
** The reader maps the file, parses the JSON header with cJSON and checks every tensor's
** dtype, shape and byte range against the data section before anyone reads a byte of data:
** a corrupt or hostile file yields a message naming the file and the tensor, never a read
** outside the map. F16 and BF16 are widened to fp32 here, bit-exactly (subnormals, infinities
** and NaN payloads included). The writer emits F32 only, tensors sorted by name, through an
** AtomicFile, so a failed write leaves no file behind.
*/
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "../util/fileio.h"
#include "io_internal.h"

/* Integers in the header are JSON numbers, which cJSON holds as doubles: beyond 2^53 they
** are no longer exact, so larger values (far beyond any real file) are rejected. */
#define ST_MAX_INT 9007199254740992.0

/* The dtypes of the safetensors specification with a whole number of bytes per element.
** Only the first three can be read; the others are accepted in a file (their byte ranges are
** still checked) so files carrying tensors we do not need can be opened. */
static const struct {
    const char *name;
    StDtype dtype;
    int bytes;
} st_dtypes[] = {
    {"F32", ST_F32, 4},      {"F16", ST_F16, 2},      {"BF16", ST_BF16, 2},   {"F64", ST_OTHER, 8},
    {"I64", ST_OTHER, 8},    {"U64", ST_OTHER, 8},    {"I32", ST_OTHER, 4},   {"U32", ST_OTHER, 4},
    {"I16", ST_OTHER, 2},    {"U16", ST_OTHER, 2},    {"I8", ST_OTHER, 1},    {"U8", ST_OTHER, 1},
    {"BOOL", ST_OTHER, 1},   {"F8_E4M3", ST_OTHER, 1}, {"F8_E5M2", ST_OTHER, 1}, {"F8_E8M0", ST_OTHER, 1},
};

/* 1 and *out if j is a non-negative integer that a double holds exactly. */
static int st_json_u64(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d < ST_MAX_INT) || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* ---------------------------------------------------------------- reader */

static int st_compare_tensors(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

/* Fills t from one header entry {"dtype", "shape", "data_offsets"}, checked against data_size. */
static int st_parse_entry(const char *path, const cJSON *entry, size_t data_size, StTensor *t, Err *err) {
    const char *name = t->name;
    if (!cJSON_IsObject(entry))
        return err_set(err, "%s: tensor %s: expected an object {dtype, shape, data_offsets}, found %s", path, name,
                       io_json_type(entry));

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!cJSON_IsString(dtype))
        return err_set(err, "%s: tensor %s: field dtype: expected a string, found %s", path, name, io_json_type(dtype));
    int bytes = 0;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++) {
        if (strcmp(dtype->valuestring, st_dtypes[i].name) == 0) {
            t->dtype = st_dtypes[i].dtype;
            bytes = st_dtypes[i].bytes;
        }
    }
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dtype->valuestring);
    if (bytes == 0)
        return err_set(err, "%s: tensor %s: unknown dtype \"%.40s\" (expected F32, F16, BF16 or another safetensors dtype)",
                       path, name, dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return err_set(err, "%s: tensor %s: field shape: expected an array, found %s", path, name, io_json_type(shape));
    int rank = cJSON_GetArraySize(shape);
    if (rank > 8) return err_set(err, "%s: tensor %s: field shape: expected at most 8 dimensions, found %d", path, name, rank);
    t->rank = rank;
    uint64_t numel = 1;
    for (int i = 0; i < rank; i++) {
        uint64_t d;
        const cJSON *dim = cJSON_GetArrayItem(shape, i);
        if (!st_json_u64(dim, &d))
            return err_set(err, "%s: tensor %s: field shape: dimension %d: expected a non-negative integer, found %s", path,
                           name, i, io_json_type(dim));
        t->shape[i] = (int64_t)d;
        if (d != 0 && numel > (uint64_t)ST_MAX_INT / d)
            return err_set(err, "%s: tensor %s: shape has too many elements", path, name);
        numel *= d;
    }

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        !st_json_u64(cJSON_GetArrayItem(offsets, 0), &begin) || !st_json_u64(cJSON_GetArrayItem(offsets, 1), &end))
        return err_set(err, "%s: tensor %s: field data_offsets: expected [begin, end] (two non-negative integers)", path,
                       name);
    if (begin > end || end > data_size)
        return err_set(err, "%s: tensor %s: data_offsets [%llu, %llu] outside the %zu-byte data section", path, name,
                       (unsigned long long)begin, (unsigned long long)end, data_size);
    if (end - begin != numel * (uint64_t)bytes) {
        char s[128];
        io_shape_format(s, sizeof s, t->shape, t->rank);
        return err_set(err, "%s: tensor %s: data_offsets [%llu, %llu] hold %llu bytes, but dtype %s and shape %s need %llu",
                       path, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)(end - begin), t->dtype_name, s, (unsigned long long)(numel * bytes));
    }
    t->begin = (size_t)begin;
    t->end = (size_t)end;
    return 0;
}

/* Parses the header of the mapped file bytes [0, size) into f. */
static int st_parse(StFile *f, const uint8_t *bytes, size_t size, Err *err) {
    const char *path = f->path;
    if (size < 8) return err_set(err, "%s: file is %zu bytes, too short for the 8-byte header length", path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | bytes[i];
    if (n > size - 8)
        return err_set(err, "%s: header length %llu exceeds the %zu bytes that follow it", path, (unsigned long long)n,
                       size - 8);

    const char *json = (const char *)bytes + 8;
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)n, &parse_end, 0);
    if (!root) {
        size_t at = parse_end && parse_end >= json ? (size_t)(parse_end - json) : 0;
        return err_set(err, "%s: header is not valid JSON (error near byte %zu of %llu)", path, at,
                       (unsigned long long)n);
    }
    for (const char *p = parse_end; p < json + n; p++) { /* writers pad the header with spaces */
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return err_set(err, "%s: header has unexpected bytes after the JSON, at byte %zu of %llu", path,
                           (size_t)(p - json), (unsigned long long)n);
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set(err, "%s: header: expected a JSON object, found %s", path, io_json_type(root));
    }

    f->data = (const uint8_t *)json + n;
    f->data_size = size - 8 - (size_t)n;
    int count = 0;
    for (const cJSON *e = root->child; e; e = e->next) count += strcmp(e->string, "__metadata__") != 0;
    f->tensors = err_calloc((size_t)count, sizeof *f->tensors, path, err);
    if (!f->tensors) {
        cJSON_Delete(root);
        return -1;
    }
    int rc = 0;
    for (const cJSON *e = root->child; e && rc == 0; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e) && !cJSON_IsNull(e))
                rc = err_set(err, "%s: field __metadata__: expected an object, found %s", path, io_json_type(e));
            continue;
        }
        StTensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(e->string);
        if (!t->name) {
            rc = err_set(err, "%s: out of memory for tensor names", path);
            break;
        }
        f->n_tensors++;
        rc = st_parse_entry(path, e, f->data_size, t, err);
    }
    cJSON_Delete(root);
    if (rc != 0) return -1;

    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, st_compare_tensors);
    for (int i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return err_set(err, "%s: tensor %s: appears twice in the header", path, f->tensors[i].name);
    return 0;
}

int st_open(StFile *f, const char *path, Err *err) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) return err_set(err, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    MappedFile *m = err_malloc(sizeof *m, path, err);
    if (!m) return -1;
    if (file_map(m, path, err) != 0) {
        free(m);
        return -1;
    }
    f->map = m;
    f->map_size = m->size;
    if (st_parse(f, m->data, m->size, err) != 0) {
        st_close(f);
        return -1;
    }
    return 0;
}

void st_close(StFile *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map) {
        file_unmap(f->map);
        free(f->map);
    }
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    if (f->n_tensors == 0) return NULL;
    StTensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, st_compare_tensors);
}

/* IEEE binary16 -> binary32, exactly: every half value is a float value. */
static float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | mant << 13; /* inf, or NaN with its payload */
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | mant << 13; /* normal: exponent bias 15 -> 127 */
    } else if (mant == 0) {
        bits = sign; /* signed zero */
    } else {
        /* subnormal: mant * 2^-24. Shift the leading 1 up to bit 10 (the implicit bit); each
        ** shift lowers the exponent; mant = 1 gives 2^-24, float exponent field 103. */
        uint32_t e = 113;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        bits = sign | e << 23 | (mant & 0x3FFu) << 13;
    }
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* bfloat16 is the top half of a binary32, so widening is a shift (subnormals, inf, NaN included). */
static float st_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

static uint64_t st_numel(const StTensor *t) {
    uint64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= (uint64_t)t->shape[i];
    return n;
}

int st_read_f32(const StFile *f, const StTensor *t, float *out, size_t expect_numel, Err *err) {
    uint64_t numel = st_numel(t);
    if (numel != expect_numel) {
        char s[128];
        io_shape_format(s, sizeof s, t->shape, t->rank);
        return err_set(err, "%s: tensor %s: expected %zu elements, found shape %s (%llu elements)", f->path, t->name,
                       expect_numel, s, (unsigned long long)numel);
    }
    const uint8_t *src = f->data + t->begin; /* st_parse checked [begin, end) lies in the data */
    switch (t->dtype) {
    case ST_F32: io_f32_from_le(out, src, numel); return 0;
    case ST_F16:
        for (size_t i = 0; i < numel; i++) out[i] = st_f16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        return 0;
    case ST_BF16:
        for (size_t i = 0; i < numel; i++) out[i] = st_bf16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        return 0;
    default:
        return err_set(err, "%s: tensor %s: dtype %s cannot be read as fp32 (expected F32, F16 or BF16)", f->path,
                       t->name, t->dtype_name);
    }
}

/* ---------------------------------------------------------------- writer */

static int st_compare_write(const void *a, const void *b) {
    return strcmp((*(const StWriteTensor *const *)a)->name, (*(const StWriteTensor *const *)b)->name);
}

/* A u64 as a raw JSON integer: cJSON's double printing may switch to exponent notation
** (1e+15), which strict readers of data_offsets and shapes reject. */
static int st_json_add_u64(cJSON *array, uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return cJSON_AddItemToArray(array, cJSON_CreateRaw(buf));
}

/* Builds the header object for the tensors in `order` (sorted), with offsets in that order. */
static cJSON *st_build_header(const StWriteTensor *const *order, int n, const char *const *metadata) {
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && metadata) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        ok = meta != NULL;
        for (int i = 0; ok && metadata[i]; i += 2) ok = cJSON_AddStringToObject(meta, metadata[i], metadata[i + 1]) != NULL;
    }
    uint64_t offset = 0;
    for (int i = 0; ok && i < n; i++) {
        const StWriteTensor *t = order[i];
        cJSON *entry = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = entry ? cJSON_AddArrayToObject(entry, "shape") : NULL;
        cJSON *offsets = shape ? cJSON_AddArrayToObject(entry, "data_offsets") : NULL;
        ok = offsets && cJSON_AddStringToObject(entry, "dtype", "F32") != NULL;
        uint64_t numel = 1;
        for (int d = 0; ok && d < t->rank; d++) {
            ok = st_json_add_u64(shape, (uint64_t)t->shape[d]);
            numel *= (uint64_t)t->shape[d];
        }
        ok = ok && st_json_add_u64(offsets, offset) && st_json_add_u64(offsets, offset + 4 * numel);
        offset += 4 * numel;
    }
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* Checks names, ranks and shapes; fills order with the tensors sorted by name. */
static int st_check_write(const char *path, const StWriteTensor *tensors, int n, const char *const *metadata,
                          const StWriteTensor **order, Err *err) {
    for (int i = 0; metadata && metadata[i]; i += 2)
        if (!metadata[i + 1]) return err_set(err, "%s: metadata key %s has no value", path, metadata[i]);
    for (int i = 0; i < n; i++) {
        const StWriteTensor *t = &tensors[i];
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0)
            return err_set(err, "%s: tensor %d: invalid name %s", path, i, t->name ? t->name : "(null)");
        if (t->rank < 0 || t->rank > 8)
            return err_set(err, "%s: tensor %s: expected rank 0..8, found %d", path, t->name, t->rank);
        uint64_t numel = 1;
        for (int d = 0; d < t->rank; d++) {
            if (t->shape[d] < 0)
                return err_set(err, "%s: tensor %s: dimension %d is negative (%lld)", path, t->name, d,
                               (long long)t->shape[d]);
            numel *= (uint64_t)t->shape[d];
        }
        if (numel > 0 && !t->data) return err_set(err, "%s: tensor %s: no data", path, t->name);
        order[i] = t;
    }
    qsort(order, (size_t)n, sizeof *order, st_compare_write);
    for (int i = 1; i < n; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0)
            return err_set(err, "%s: tensor %s: name given twice", path, order[i]->name);
    return 0;
}

int st_write_f32(const char *path, const StWriteTensor *tensors, int n, const char *const *metadata, Err *err) {
    if (n < 0) return err_set(err, "%s: negative tensor count %d", path, n);
    const StWriteTensor **order = err_calloc((size_t)n, sizeof *order, path, err);
    if (!order) return -1;
    if (st_check_write(path, tensors, n, metadata, order, err) != 0) {
        free(order);
        return -1;
    }
    cJSON *root = st_build_header(order, n, metadata);
    char *json = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) {
        free(order);
        return err_set(err, "%s: out of memory building the safetensors header", path);
    }

    /* Header padded with spaces to a multiple of 8 so the data section stays 8-byte aligned. */
    size_t len = strlen(json), padded = (len + 7) & ~(size_t)7;
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[9] = "        ";

    AtomicFile af;
    int rc = atomic_file_open(&af, path, err);
    if (rc == 0) rc = atomic_file_write(&af, len_le, sizeof len_le, err);
    if (rc == 0) rc = atomic_file_write(&af, json, len, err);
    if (rc == 0) rc = atomic_file_write(&af, spaces, padded - len, err);
    for (int i = 0; rc == 0 && i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < order[i]->rank; d++) numel *= (size_t)order[i]->shape[d];
        rc = io_write_f32_le(&af, order[i]->data, numel, err);
    }
    if (rc == 0) rc = atomic_file_commit(&af, err);
    else atomic_file_abort(&af);
    free(json);
    free(order);
    return rc;
}
