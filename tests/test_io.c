/*
** test_io.c — model files: safetensors (round trips, F16/BF16 decoding, every malformed
** header, truncation and byte-flip fuzzing), llama2.c .bin (round trips tied/untied/GQA,
** truncated and padded files, implausible headers, refused configs), HF directories
** (config.json parsing and rejections, tensor names and shapes, sharded loading), the RoPE
** row permutation (identity round trip, and unchanged logits on the CPU backend), format
** detection, and that failed saves leave nothing behind.
**
** Files go to a fresh directory under $TMPDIR (or /tmp) that is removed at the end.
*/
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "io/model_file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/trainer.h"
#include "util/fileio.h"
#include "util/rng.h"
#include "test.h"
#include "test_tmp.h"

/* ================================================================ scaffolding */

static void die(const char *what, const Err *err) {
    fprintf(stderr, "test setup failed: %s: %s\n", what, err ? err->msg : "");
    exit(2);
}

/* Every test starts from an empty directory, so "nothing left behind" can be counted. */
static void tmp_dir_reset(void) {
    tmp_dir_remove();
    if (mkdir(tmp_dir, 0700) != 0) die(tmp_dir, NULL);
}

static int dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    if (d) closedir(d);
    return n;
}

static uint8_t *read_file(const char *path, size_t *n) {
    Err err;
    char *b = file_read_all(path, n, &err);
    if (!b) die(path, &err);
    return (uint8_t *)b;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(data, 1, n, fp) != n)) die(path, NULL);
    fclose(fp);
}

static void put_u64(uint8_t *p, uint64_t x) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(x >> (8 * i));
}
static void put_i32(uint8_t *p, int32_t x) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)((uint32_t)x >> (8 * i));
}
static void put_f32(uint8_t *p, float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    put_i32(p, (int32_t)b);
}

/* A safetensors file by hand: u64 header_len (the JSON's length), the JSON, then data. */
static void st_write_raw(const char *path, const char *json, const void *data, size_t ndata) {
    size_t nj = strlen(json);
    uint8_t *b = malloc(8 + nj + ndata + 1);
    put_u64(b, nj);
    memcpy(b + 8, json, nj);
    if (ndata) memcpy(b + 8 + nj, data, ndata);
    write_file(path, b, 8 + nj + ndata);
    free(b);
}

/* Fails (returns non-zero) and the message names every needle. */
#define EXPECT_ERR(rc, err, ...)                                                                   \
    do {                                                                                           \
        const char *needles_[] = {__VA_ARGS__, NULL};                                              \
        CHECK((rc) != 0, "call succeeded, expected an error mentioning %s", needles_[0]);          \
        for (int i_ = 0; needles_[i_]; i_++)                                                       \
            CHECK(strstr((err).msg, needles_[i_]) != NULL, "message lacks \"%s\": %s", needles_[i_], (err).msg); \
    } while (0)

static int st_try_open(const char *path, Err *err) {
    StFile f;
    err->msg[0] = '\0';
    int rc = st_open(&f, path, err);
    if (rc == 0) st_close(&f);
    return rc;
}

/* ---------------------------------------------------------------- models */

typedef struct {
    ParamLayout layout;
    float *p;
} Model;

static ModelConfig cfg_preset(const char *name) {
    ModelConfig cfg;
    Err err;
    if (config_from_preset(&cfg, name, &err) != 0) die(name, &err);
    return cfg;
}

/* Random weights with sharp attention (large wq, wk, embeddings) and norm weights far from
** one, so a wrong RoPE permutation or a misplaced tensor visibly changes the logits. */
static void model_make(Model *m, const ModelConfig *cfg, uint64_t seed) {
    params_layout(&m->layout, cfg);
    m->p = malloc(m->layout.n_floats * sizeof(float));
    Rng rng;
    rng_seed(&rng, seed);
    for (int k = 0; k < T_COUNT; k++) {
        const TensorSpec *t = &m->layout.t[k];
        float *x = m->p + t->offset;
        for (size_t i = 0; i < t->numel; i++) {
            double z = rng_normal(&rng);
            if (t->rows == 1) x[i] = (float)((k == T_Q_NORM || k == T_K_NORM ? 2.0 : 1.0) + 0.4 * z);
            else if (k == T_WQ || k == T_WK) x[i] = (float)(0.35 * z);
            else if (k == T_TOK_EMB) x[i] = (float)z;
            else x[i] = (float)(0.08 * z);
        }
    }
}

static void model_copy(Model *dst, const Model *src) {
    dst->layout = src->layout;
    dst->p = malloc(src->layout.n_floats * sizeof(float));
    memcpy(dst->p, src->p, src->layout.n_floats * sizeof(float));
}

static void model_free(Model *m) {
    free(m->p);
    m->p = NULL;
}

static int params_same(const Model *a, const Model *b) {
    return a->layout.n_floats == b->layout.n_floats &&
           memcmp(a->p, b->p, a->layout.n_floats * sizeof(float)) == 0;
}

enum { LB = 2, LT = 7 };

/* Logits [B][V][T] of a forward pass on the CPU backend over fixed tokens. */
static float *model_logits(const Model *m) {
    int V = m->layout.cfg.vocab_size;
    int32_t in[LB * LT], tg[LB * LT];
    for (int i = 0; i < LB * LT; i++) {
        in[i] = (int32_t)((i * 7919 + 13) % V);
        tg[i] = (int32_t)((i * 104729 + 5) % V);
    }
    Err err;
    Backend *b = backend_cpu_create(&m->layout, LB, LT, &err);
    if (!b) die("backend_cpu_create", &err);
    float *logits = malloc((size_t)LB * V * LT * sizeof(float));
    double loss;
    if (backend_step(b, m->p, NULL, in, tg, LB, LT, 1.0f, &loss, logits, &err) != 0) die("backend step", &err);
    b->destroy(b);
    return logits;
}

/* max |a - b| / max |b| over all logits */
static double logits_rel_diff(const Model *a, const Model *b) {
    float *la = model_logits(a), *lb = model_logits(b);
    size_t n = (size_t)LB * a->layout.cfg.vocab_size * LT;
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)la[i] - lb[i]));
        scale = fmax(scale, fabs((double)lb[i]));
    }
    free(la);
    free(lb);
    return scale > 0 ? diff / scale : (diff > 0 ? INFINITY : 0);
}

/* ---------------------------------------------------------------- editable tensor lists */

#define TL_MAX 128
typedef struct {
    int n;
    StWriteTensor t[TL_MAX];
    char names[TL_MAX][96];
    float *data[TL_MAX];
} TensorList;

static void tl_add(TensorList *l, const char *name, int rank, const int64_t *shape, const float *data) {
    if (l->n == TL_MAX) die("tensor list full", NULL);
    int i = l->n++;
    size_t numel = 1;
    for (int d = 0; d < rank; d++) numel *= (size_t)shape[d];
    snprintf(l->names[i], sizeof l->names[i], "%s", name);
    l->data[i] = malloc(numel * sizeof(float) + 1);
    memcpy(l->data[i], data, numel * sizeof(float));
    l->t[i].name = l->names[i];
    l->t[i].data = l->data[i];
    l->t[i].rank = rank;
    memcpy(l->t[i].shape, shape, sizeof(int64_t) * (size_t)rank);
}

static void tl_read(TensorList *l, const char *path) {
    StFile f;
    Err err;
    l->n = 0;
    if (st_open(&f, path, &err) != 0) die(path, &err);
    for (int i = 0; i < f.n_tensors; i++) {
        const StTensor *t = &f.tensors[i];
        size_t numel = 1;
        for (int d = 0; d < t->rank; d++) numel *= (size_t)t->shape[d];
        float *x = malloc(numel * sizeof(float) + 1);
        if (st_read_f32(&f, t, x, numel, &err) != 0) die(path, &err);
        tl_add(l, t->name, t->rank, t->shape, x);
        free(x);
    }
    st_close(&f);
}

static int tl_index(const TensorList *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->names[i], name) == 0) return i;
    die(name, NULL);
    return -1;
}

static void tl_remove(TensorList *l, const char *name) {
    int i = tl_index(l, name);
    free(l->data[i]);
    for (int j = i; j + 1 < l->n; j++) {
        memcpy(l->names[j], l->names[j + 1], sizeof l->names[j]);
        l->data[j] = l->data[j + 1];
        l->t[j] = l->t[j + 1];
        l->t[j].name = l->names[j];
    }
    l->n--;
}

static void tl_write(const TensorList *l, const char *path) {
    Err err;
    if (st_write_f32(path, l->t, l->n, NULL, &err) != 0) die(path, &err);
}

static void tl_free(TensorList *l) {
    for (int i = 0; i < l->n; i++) free(l->data[i]);
    l->n = 0;
}

/* ================================================================ safetensors */

static void test_st_round_trip(void) {
    float a[2 * 3] = {1, -2, 3.5f, 1e-40f, -0.0f, 3.4e38f}, b[5] = {0.5f, 0.25f, -8, 9, 10}, c[24], s = 42;
    for (int i = 0; i < 24; i++) c[i] = (float)i * 0.1f - 1;
    StWriteTensor w[4] = {
        {"zeta", a, 2, {2, 3}}, {"alpha.weight", b, 1, {5}}, {"mid", c, 3, {2, 3, 4}}, {"scalar", &s, 0, {0}}};
    const char *meta[] = {"format", "pt", "note", "hello", NULL};
    const char *path = tmp_path("rt.safetensors");
    Err err = {{0}};
    CHECK(st_write_f32(path, w, 4, meta, &err) == 0, "%s", err.msg);
    CHECK(dir_entries(tmp_dir) == 1, "only the file, no temporary left: %d entries", dir_entries(tmp_dir));

    size_t size;
    uint8_t *bytes = read_file(path, &size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | bytes[i];
    CHECK(hlen % 8 == 0, "header length %llu is a multiple of 8", (unsigned long long)hlen);
    CHECK(size == 8 + hlen + 4 * (6 + 5 + 24 + 1), "file size %zu", size);
    CHECK(bytes[8 + hlen - 1] == ' ' || bytes[8 + hlen - 1] == '}', "header ends in the JSON or its space padding");
    /* Tensors are laid out sorted by name: alpha.weight, mid, scalar, zeta. */
    float first;
    memcpy(&first, bytes + 8 + hlen, 4);
    CHECK(first == 0.5f, "first data belongs to alpha.weight, found %g", (double)first);
    cJSON *hdr = cJSON_ParseWithLength((const char *)bytes + 8, hlen);
    CHECK(hdr != NULL, "header parses as JSON");
    const cJSON *md = cJSON_GetObjectItem(hdr, "__metadata__");
    CHECK(md && cJSON_IsString(cJSON_GetObjectItem(md, "note")) &&
              strcmp(cJSON_GetObjectItem(md, "note")->valuestring, "hello") == 0, "metadata kept");
    cJSON_Delete(hdr);
    free(bytes);

    StFile f;
    CHECK(st_open(&f, path, &err) == 0, "%s", err.msg);
    CHECK(f.n_tensors == 4, "4 tensors (metadata is not one), found %d", f.n_tensors);
    const StTensor *t = st_find(&f, "zeta");
    CHECK(t && t->dtype == ST_F32 && t->rank == 2 && t->shape[0] == 2 && t->shape[1] == 3, "zeta header");
    float out[24];
    CHECK(t && st_read_f32(&f, t, out, 6, &err) == 0 && memcmp(out, a, sizeof a) == 0, "zeta data bit-exact");
    t = st_find(&f, "mid");
    CHECK(t && t->rank == 3 && t->shape[2] == 4, "mid shape");
    CHECK(t && st_read_f32(&f, t, out, 24, &err) == 0 && memcmp(out, c, sizeof c) == 0, "mid data");
    t = st_find(&f, "alpha.weight");
    CHECK(t && st_read_f32(&f, t, out, 5, &err) == 0 && memcmp(out, b, sizeof b) == 0, "alpha data");
    t = st_find(&f, "scalar");
    CHECK(t && t->rank == 0 && st_read_f32(&f, t, out, 1, &err) == 0 && out[0] == 42, "rank-0 scalar");
    CHECK(st_find(&f, "__metadata__") == NULL && st_find(&f, "nope") == NULL, "st_find misses");
    st_close(&f);

    /* Deterministic: the same tensors in another order give the same bytes. */
    StWriteTensor w2[4] = {w[2], w[3], w[0], w[1]};
    const char *path2 = tmp_path("rt2.safetensors");
    CHECK(st_write_f32(path2, w2, 4, meta, &err) == 0, "%s", err.msg);
    size_t s1, s2;
    uint8_t *b1 = read_file(path, &s1), *b2 = read_file(path2, &s2);
    CHECK(s1 == s2 && memcmp(b1, b2, s1) == 0, "order of the input does not change the file");
    free(b1);
    free(b2);
    remove(path);
    remove(path2);
}

/* One file holding F32 at an unaligned data address, then F16 and BF16 with known values. */
static void test_st_half_types(void) {
    static const uint16_t h[] = {0x3C00, 0xC000, 0x0001, 0x8001, 0x03FF, 0x0200, 0x0400, 0x7BFF,
                                 0x7C00, 0xFC00, 0x7E00, 0x8000, 0x3555, 0x0000};
    const float hv[] = {1.0f, -2.0f, ldexpf(1, -24), -ldexpf(1, -24), ldexpf(1023, -24), ldexpf(1, -15),
                        ldexpf(1, -14), 65504.0f, INFINITY, -INFINITY, NAN, -0.0f, 0.333251953125f, 0.0f};
    static const uint16_t bf[] = {0x3F80, 0xC040, 0x0001, 0x8040, 0x7F80, 0xFF80, 0x7FC0, 0x4049, 0x7F7F};
    const float bv[] = {1.0f, -3.0f, ldexpf(1, -133), -ldexpf(1, -127), INFINITY, -INFINITY, NAN, 3.140625f,
                        3.38953139e38f};
    enum { NH = sizeof h / 2, NB = sizeof bf / 2 };
    uint8_t data[8 + 2 * NH + 2 * NB];
    put_f32(data, 1.5f);
    put_f32(data + 4, -7.25f);
    for (int i = 0; i < NH; i++) data[8 + 2 * i] = (uint8_t)h[i], data[9 + 2 * i] = (uint8_t)(h[i] >> 8);
    for (int i = 0; i < NB; i++)
        data[8 + 2 * NH + 2 * i] = (uint8_t)bf[i], data[9 + 2 * NH + 2 * i] = (uint8_t)(bf[i] >> 8);
    char json[512];
    snprintf(json, sizeof json,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"h\":{\"dtype\":\"F16\",\"shape\":[2,7],\"data_offsets\":[8,%d]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[%d],\"data_offsets\":[%d,%d]}, \"__metadata__\":{\"x\":\"y\"}}",
             8 + 2 * NH, NB, 8 + 2 * NH, 8 + 2 * NH + 2 * NB);
    if (strlen(json) % 8 == 0) strcat(json, " "); /* keep the data section unaligned */
    const char *path = tmp_path("half.safetensors");
    st_write_raw(path, json, data, sizeof data);

    StFile f;
    Err err = {{0}};
    CHECK(st_open(&f, path, &err) == 0, "%s", err.msg);
    float out[32];
    const StTensor *t = st_find(&f, "a");
    CHECK(t && st_read_f32(&f, t, out, 2, &err) == 0 && out[0] == 1.5f && out[1] == -7.25f, "F32 unaligned");
    t = st_find(&f, "h");
    CHECK(t && t->dtype == ST_F16 && strcmp(t->dtype_name, "F16") == 0, "F16 dtype");
    CHECK(t && st_read_f32(&f, t, out, NH, &err) == 0, "%s", err.msg);
    for (int i = 0; i < NH; i++) {
        if (isnan(hv[i])) CHECK(isnan(out[i]), "f16 0x%04x: expected nan, found %g", h[i], (double)out[i]);
        else CHECK(out[i] == hv[i] && !signbit(out[i]) == !signbit(hv[i]), "f16 0x%04x: expected %.9g, found %.9g",
                   h[i], (double)hv[i], (double)out[i]);
    }
    t = st_find(&f, "b");
    CHECK(t && t->dtype == ST_BF16, "BF16 dtype");
    CHECK(t && st_read_f32(&f, t, out, NB, &err) == 0, "%s", err.msg);
    for (int i = 0; i < NB; i++) {
        if (isnan(bv[i])) CHECK(isnan(out[i]), "bf16 0x%04x: expected nan, found %g", bf[i], (double)out[i]);
        else CHECK(out[i] == bv[i], "bf16 0x%04x: expected %.9g, found %.9g", bf[i], (double)bv[i], (double)out[i]);
    }
    st_close(&f);
    remove(path);
}

/* Every one of the 65536 F16 and BF16 bit patterns against an independent decoding by the
** formula (-1)^s * 2^(e-bias) * (1 + m/2^bits), or 2^(1-bias) * m/2^bits for subnormals. */
static double half_by_formula(uint16_t h, int mant_bits, int bias) {
    int exp_bits = 15 - mant_bits, e = (h >> mant_bits) & ((1 << exp_bits) - 1), m = h & ((1 << mant_bits) - 1);
    double sign = h & 0x8000 ? -1.0 : 1.0;
    if (e == (1 << exp_bits) - 1) return m ? NAN : sign * INFINITY;
    if (e == 0) return sign * ldexp(m, 1 - bias - mant_bits);
    return sign * ldexp(1.0 + ldexp(m, -mant_bits), e - bias);
}

static void test_st_half_exhaustive(void) {
    uint8_t *data = malloc(2 * 65536 * 2);
    for (int i = 0; i < 65536; i++) {
        for (int k = 0; k < 2; k++) {
            data[2 * 65536 * k + 2 * i] = (uint8_t)i;
            data[2 * 65536 * k + 2 * i + 1] = (uint8_t)(i >> 8);
        }
    }
    const char *p = tmp_path("all_halves.safetensors");
    st_write_raw(p,
                 "{\"h\":{\"dtype\":\"F16\",\"shape\":[256,256],\"data_offsets\":[0,131072]},"
                 "\"b\":{\"dtype\":\"BF16\",\"shape\":[65536],\"data_offsets\":[131072,262144]}}",
                 data, 2 * 65536 * 2);
    free(data);
    StFile f;
    Err err = {{0}};
    CHECK(st_open(&f, p, &err) == 0, "%s", err.msg);
    if (!f.tensors) return;
    float *out = malloc(65536 * sizeof(float));
    static const struct {
        const char *name;
        int mant_bits, bias;
    } kinds[2] = {{"h", 10, 15}, {"b", 7, 127}};
    for (int k = 0; k < 2; k++) {
        const StTensor *t = st_find(&f, kinds[k].name);
        CHECK(t && st_read_f32(&f, t, out, 65536, &err) == 0, "%s", err.msg);
        int bad = 0;
        for (int i = 0; t && i < 65536 && bad < 5; i++) {
            double want = half_by_formula((uint16_t)i, kinds[k].mant_bits, kinds[k].bias);
            uint32_t bits;
            memcpy(&bits, &out[i], 4);
            int payload = k == 0 ? ((bits >> 13) & 0x3FF) == (uint32_t)(i & 0x3FF) && (bits & 0x1FFF) == 0
                                 : bits >> 16 == (uint32_t)i;
            int same = isnan(want) ? isnan(out[i]) && payload /* NaN payload and sign kept */
                                   : (double)out[i] == want && !signbit(out[i]) == !signbit(want);
            if (!same) bad++;
            CHECK(same, "%s 0x%04x: expected %.9g, found %.9g", kinds[k].name, i, want, (double)out[i]);
        }
    }
    free(out);
    st_close(&f);
}

static void test_st_malformed(void) {
    Err err = {{0}};
    const char *p;
    uint8_t eight[8] = {0};
    float four[4] = {0};

    p = tmp_path("empty.safetensors");
    write_file(p, "", 0);
    EXPECT_ERR(st_try_open(p, &err), err, p, "too short");

    p = tmp_path("short.safetensors");
    write_file(p, "\x05\0\0\0\0", 5);
    EXPECT_ERR(st_try_open(p, &err), err, p, "too short");

    p = tmp_path("long_header.safetensors");
    put_u64(eight, 1000);
    uint8_t buf[50] = {0};
    memcpy(buf, eight, 8);
    write_file(p, buf, sizeof buf);
    EXPECT_ERR(st_try_open(p, &err), err, p, "header length 1000", "42 bytes");

    p = tmp_path("huge_header.safetensors");
    put_u64(buf, UINT64_MAX);
    write_file(p, buf, sizeof buf);
    EXPECT_ERR(st_try_open(p, &err), err, p, "header length");

    p = tmp_path("zero_header.safetensors");
    st_write_raw(p, "", NULL, 0);
    EXPECT_ERR(st_try_open(p, &err), err, p, "not valid JSON");

    p = tmp_path("bad_json.safetensors");
    st_write_raw(p, "{\"t\": {\"dtype\": \"F32\", ", NULL, 0);
    EXPECT_ERR(st_try_open(p, &err), err, p, "not valid JSON");

    p = tmp_path("array.safetensors");
    st_write_raw(p, "[1, 2]", NULL, 0);
    EXPECT_ERR(st_try_open(p, &err), err, p, "expected a JSON object");

    p = tmp_path("trailing.safetensors");
    st_write_raw(p, "{}  xx", NULL, 0);
    EXPECT_ERR(st_try_open(p, &err), err, p, "unexpected bytes");

    p = tmp_path("out_of_range.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "outside");

    p = tmp_path("reversed.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "data_offsets");

    p = tmp_path("byte_count.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "need 12");

    p = tmp_path("byte_count16.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "[2, 3]", "need 12");

    p = tmp_path("dtype.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "dtype", "F33");

    p = tmp_path("dtype_type.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "dtype", "a number");

    p = tmp_path("neg_shape.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "shape");

    p = tmp_path("frac_shape.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "shape");

    p = tmp_path("rank9.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "8 dimensions");

    p = tmp_path("overflow_shape.safetensors");
    st_write_raw(p,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}",
                 four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w");

    p = tmp_path("no_offsets.safetensors");
    st_write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "data_offsets");

    p = tmp_path("entry_type.safetensors");
    st_write_raw(p, "{\"w\":[1,2,3]}", four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w");

    p = tmp_path("duplicate.safetensors");
    st_write_raw(p,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                 four, 8);
    EXPECT_ERR(st_try_open(p, &err), err, p, "tensor w", "twice");

    p = tmp_path("metadata.safetensors");
    st_write_raw(p, "{\"__metadata__\":[1]}", NULL, 0);
    EXPECT_ERR(st_try_open(p, &err), err, p, "__metadata__");

    /* A header with only metadata and trailing spaces is valid (an empty model). */
    p = tmp_path("only_meta.safetensors");
    st_write_raw(p, "{\"__metadata__\":{\"format\":\"pt\"}}      ", NULL, 0);
    CHECK(st_try_open(p, &err) == 0, "metadata-only file: %s", err.msg);
}

static void test_st_read_errors(void) {
    int32_t ints[2] = {1, 2};
    float four[4] = {1, 2, 3, 4};
    const char *p = tmp_path("read_err.safetensors");
    uint8_t data[24];
    memcpy(data, ints, 8);
    memcpy(data + 8, four, 16);
    st_write_raw(p,
                 "{\"ids\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]}}",
                 data, sizeof data);
    StFile f;
    Err err = {{0}};
    CHECK(st_open(&f, p, &err) == 0, "a file with an I32 tensor opens: %s", err.msg);
    float out[8];
    const StTensor *t = st_find(&f, "ids");
    CHECK(t && t->dtype == ST_OTHER, "I32 is ST_OTHER");
    err.msg[0] = 0;
    EXPECT_ERR(t ? st_read_f32(&f, t, out, 2, &err) : 0, err, p, "tensor ids", "I32");
    t = st_find(&f, "w");
    err.msg[0] = 0;
    EXPECT_ERR(t ? st_read_f32(&f, t, out, 3, &err) : 0, err, p, "tensor w", "expected 3 elements", "[2, 2]");
    CHECK(t && st_read_f32(&f, t, out, 4, &err) == 0 && out[3] == 4, "read with the right count");
    st_close(&f);
}

static void test_st_write_errors(void) {
    float x[2] = {1, 2};
    Err err = {{0}};
    StWriteTensor dup[2] = {{"a", x, 1, {2}}, {"a", x, 1, {1}}};
    const char *p = tmp_path("dup_write.safetensors");
    EXPECT_ERR(st_write_f32(p, dup, 2, NULL, &err), err, p, "a", "twice");
    CHECK(!path_exists(p), "no file after a refused write");
    StWriteTensor neg[1] = {{"n", x, 1, {-1}}};
    err.msg[0] = 0;
    EXPECT_ERR(st_write_f32(p, neg, 1, NULL, &err), err, p, "tensor n");
    const char *missing = tmp_path("no_such_dir/x.safetensors");
    err.msg[0] = 0;
    EXPECT_ERR(st_write_f32(missing, dup, 1, NULL, &err), err, "no_such_dir");
    CHECK(!path_exists(missing), "nothing written into a missing directory");
    CHECK(dir_entries(tmp_dir) == 0, "no temporary files left: %d entries", dir_entries(tmp_dir));
}

/* Every truncation of a valid file fails; random byte flips in the header never crash (run
** under ASan) and whatever opens can be read. */
static void test_st_fuzz(void) {
    float a[12], b[3] = {7, 8, 9};
    for (int i = 0; i < 12; i++) a[i] = (float)i;
    StWriteTensor w[2] = {{"model.a", a, 2, {3, 4}}, {"model.b", b, 1, {3}}};
    const char *p = tmp_path("fuzz_src.safetensors"), *q = tmp_path("fuzz.safetensors");
    Err err = {{0}};
    if (st_write_f32(p, w, 2, NULL, &err) != 0) die(p, &err);
    size_t size;
    uint8_t *good = read_file(p, &size);
    int opened = 0;
    for (size_t n = 0; n < size; n++) {
        write_file(q, good, n);
        opened += st_try_open(q, &err) == 0;
    }
    CHECK(opened == 0, "%d truncated files opened", opened);

    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | good[i];
    uint8_t *bad = malloc(size);
    Rng rng;
    rng_seed(&rng, 5);
    int ok = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(bad, good, size);
        int flips = 1 + (int)rng_below(&rng, 3);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)rng_below(&rng, 8 + hlen);
            bad[at] = iter % 2 ? (uint8_t)rng_below(&rng, 256) : (uint8_t)"0123456789[]{},:\"-.e "[rng_below(&rng, 21)];
        }
        write_file(q, bad, size);
        StFile f;
        if (st_open(&f, q, &err) != 0) continue;
        ok++;
        for (int i = 0; i < f.n_tensors; i++) {
            const StTensor *t = &f.tensors[i];
            size_t numel = 1;
            for (int d = 0; d < t->rank; d++) numel *= (size_t)t->shape[d];
            CHECK(t->end <= f.data_size && t->begin <= t->end, "validated range");
            float *out = malloc(numel * sizeof(float) + 1);
            st_read_f32(&f, t, out, numel, &err);
            free(out);
        }
        st_close(&f);
    }
    CHECK(ok > 0 && ok < 3000, "some flipped files open, most do not (%d opened)", ok);
    free(bad);
    free(good);
    remove(p);
    remove(q);
}

/* ================================================================ RoPE conversion */

static void check_rope_identity(ModelConfig cfg) {
    Model m, orig;
    model_make(&m, &cfg, 3);
    model_copy(&orig, &m);
    RopeStyle other = cfg.rope_style == ROPE_HALF ? ROPE_INTERLEAVED : ROPE_HALF;
    params_convert_rope(&m.layout, m.p, other);
    CHECK(m.layout.cfg.rope_style == other, "style updated");
    CHECK(!params_same(&m, &orig), "conversion changes wq/wk");
    /* Only wq, wk and the q/k norms move, and within a head rows only permute. */
    const ParamLayout *L = &m.layout;
    for (int k = 0; k < T_COUNT; k++) {
        if (k == T_WQ || k == T_WK || k == T_Q_NORM || k == T_K_NORM) continue;
        const TensorSpec *t = &L->t[k];
        CHECK(memcmp(m.p + t->offset, orig.p + t->offset, t->numel * 4) == 0, "%s untouched", t->name);
    }
    /* Row p*(D/2)+i of head h in half style is row 2i+p in interleaved style (layer 1, head 1 of wk). */
    int D = cfg.head_dim, C = cfg.dim;
    const float *half = other == ROPE_HALF ? m.p : orig.p, *inter = other == ROPE_HALF ? orig.p : m.p;
    size_t head = L->t[T_WK].offset + (size_t)C * ((size_t)1 * cfg.n_kv_heads * D + (size_t)D);
    for (int i = 0; i < D / 2; i++)
        for (int p = 0; p < 2; p++)
            CHECK(memcmp(half + head + (size_t)(p * D / 2 + i) * C, inter + head + (size_t)(2 * i + p) * C, C * 4) == 0,
                  "row mapping i=%d p=%d", i, p);
    if (cfg.qk_norm) {
        size_t qn = L->t[T_Q_NORM].offset + (size_t)D; /* layer 1 */
        CHECK(half[qn + D / 2] == inter[qn + 1] && half[qn + 1] == inter[qn + 2], "q_norm permuted");
    }
    params_convert_rope(&m.layout, m.p, other); /* already there: no-op */
    params_convert_rope(&m.layout, m.p, cfg.rope_style);
    CHECK(params_same(&m, &orig), "there and back is the identity");
    CHECK(config_equal(&m.layout.cfg, &orig.layout.cfg), "config back");
    model_free(&m);
    model_free(&orig);
}

static void test_rope_identity(void) {
    check_rope_identity(cfg_preset("tiny"));
    check_rope_identity(cfg_preset("tiny-qwen3"));
    ModelConfig c = cfg_preset("tiny-qwen3");
    c.head_dim = 8; /* small heads: cycles of every length */
    check_rope_identity(c);
}

static void check_rope_logits(ModelConfig cfg) {
    Model m, conv;
    model_make(&m, &cfg, 11);
    model_copy(&conv, &m);
    RopeStyle other = cfg.rope_style == ROPE_HALF ? ROPE_INTERLEAVED : ROPE_HALF;
    params_convert_rope(&conv.layout, conv.p, other);
    double d = logits_rel_diff(&conv, &m);
    CHECK(d <= 1e-5, "%s %s: logits change by %.3g after conversion", config_family_name(cfg.family),
          config_rope_style_name(other), d);
    /* Control: the style alone, without the permutation, must change the logits a lot. */
    Model wrong;
    model_copy(&wrong, &m);
    wrong.layout.cfg.rope_style = other;
    double dw = logits_rel_diff(&wrong, &m);
    CHECK(dw > 1e-3, "control: switching style without permuting changes logits by only %.3g", dw);
    model_free(&m);
    model_free(&conv);
    model_free(&wrong);
}

static void test_rope_logits(void) {
    check_rope_logits(cfg_preset("tiny"));
    ModelConfig c = cfg_preset("tiny");
    c.n_kv_heads = 2;
    c.tied = 0;
    check_rope_logits(c);
    check_rope_logits(cfg_preset("tiny-qwen3"));
    c = cfg_preset("tiny-qwen3");
    c.rope_style = ROPE_INTERLEAVED;
    check_rope_logits(c);
}

/* ================================================================ llama2.c */

static ModelConfig cfg_variant(const char *preset, int tied, int kv_heads) {
    ModelConfig c = cfg_preset(preset);
    c.tied = tied;
    if (kv_heads) c.n_kv_heads = kv_heads;
    return c;
}

static void check_l2c_round_trip(ModelConfig cfg, const char *what) {
    Model m, back;
    model_make(&m, &cfg, 21);
    const char *path = tmp_path("rt.bin");
    Err err = {{0}};
    CHECK(llama2c_save(path, &m.layout, m.p, &err) == 0, "%s: %s", what, err.msg);
    size_t size;
    uint8_t *bytes = read_file(path, &size);
    size_t D = (size_t)cfg.head_dim;
    size_t expect = 28 + 4 * (m.layout.n_floats + (size_t)cfg.max_seq_len * D);
    CHECK(size == expect, "%s: file size %zu, expected %zu", what, size, expect);
    int32_t v;
    memcpy(&v, bytes + 20, 4);
    CHECK(v == (cfg.tied ? cfg.vocab_size : -cfg.vocab_size), "%s: vocab_size field %d", what, (int)v);
    memcpy(&v, bytes + 16, 4);
    CHECK(v == cfg.n_kv_heads, "%s: n_kv_heads field %d", what, (int)v);
    /* The RoPE tables: freq_cis_real[pos][i] = cos(pos * 10000^(-2i/D)), then the imaginary parts. */
    size_t tab = 28 + 4 * (m.layout.t[T_RMS_FINAL].offset + m.layout.t[T_RMS_FINAL].numel);
    int pos = 3, i = 5;
    float re, im;
    memcpy(&re, bytes + tab + 4 * ((size_t)pos * D / 2 + i), 4);
    memcpy(&im, bytes + tab + 4 * ((size_t)cfg.max_seq_len * D / 2 + (size_t)pos * D / 2 + i), 4);
    double angle = pos * pow(10000.0, -2.0 * i / (double)D);
    CHECK_CLOSE(re, cos(angle), 1e-6, 0, "freq_cis_real[3][5]");
    CHECK_CLOSE(im, sin(angle), 1e-6, 0, "freq_cis_imag[3][5]");
    free(bytes);

    back.p = NULL;
    CHECK(llama2c_load(path, &back.layout, &back.p, &err) == 0, "%s: %s", what, err.msg);
    if (back.p) {
        CHECK(config_equal(&back.layout.cfg, &m.layout.cfg), "%s: config round trip", what);
        CHECK(params_same(&back, &m), "%s: params bit-exact", what);
        model_free(&back);
    }
    model_free(&m);
    remove(path);
}

static void test_l2c_round_trip(void) {
    check_l2c_round_trip(cfg_variant("tiny", 1, 0), "tied");
    check_l2c_round_trip(cfg_variant("tiny", 0, 0), "untied");
    check_l2c_round_trip(cfg_variant("tiny", 1, 2), "GQA tied");
    check_l2c_round_trip(cfg_variant("tiny", 0, 1), "MQA untied");
}

/* A rotate-half Llama is written interleaved (permuted on a copy) and computes the same. */
static void test_l2c_half_model(void) {
    ModelConfig cfg = cfg_variant("tiny", 0, 2);
    cfg.rope_style = ROPE_HALF;
    Model m, keep, back;
    model_make(&m, &cfg, 31);
    model_copy(&keep, &m);
    const char *path = tmp_path("half.bin");
    Err err = {{0}};
    CHECK(llama2c_save(path, &m.layout, m.p, &err) == 0, "%s", err.msg);
    CHECK(params_same(&m, &keep) && m.layout.cfg.rope_style == ROPE_HALF, "caller's buffer untouched");
    back.p = NULL;
    CHECK(llama2c_load(path, &back.layout, &back.p, &err) == 0, "%s", err.msg);
    if (back.p) {
        CHECK(back.layout.cfg.rope_style == ROPE_INTERLEAVED, "llama2.c loads interleaved");
        double d = logits_rel_diff(&back, &m);
        CHECK(d <= 1e-5, "logits change by %.3g", d);
        params_convert_rope(&back.layout, back.p, ROPE_HALF);
        CHECK(params_same(&back, &m), "permuting back gives the original bits");
        model_free(&back);
    }
    model_free(&m);
    model_free(&keep);
    remove(path);
}

static int l2c_try_load(const char *path, Err *err) {
    ParamLayout layout;
    float *p = NULL;
    err->msg[0] = '\0';
    int rc = llama2c_load(path, &layout, &p, err);
    CHECK(rc == 0 || p == NULL, "no buffer on failure");
    free(p);
    return rc;
}

static void test_l2c_bad_files(void) {
    ModelConfig cfg = cfg_variant("tiny", 0, 2);
    Model m;
    model_make(&m, &cfg, 41);
    const char *good = tmp_path("good.bin");
    Err err = {{0}};
    if (llama2c_save(good, &m.layout, m.p, &err) != 0) die(good, &err);
    size_t size;
    uint8_t *bytes = read_file(good, &size);
    char expect[64];
    snprintf(expect, sizeof expect, "implies %zu bytes", size);

    const char *p = tmp_path("trunc.bin");
    write_file(p, bytes, size - 4);
    EXPECT_ERR(l2c_try_load(p, &err), err, p, expect);
    write_file(p, bytes, size / 2);
    EXPECT_ERR(l2c_try_load(p, &err), err, p, expect);
    write_file(p, bytes, 20);
    EXPECT_ERR(l2c_try_load(p, &err), err, p, "too short");
    write_file(p, bytes, 0);
    EXPECT_ERR(l2c_try_load(p, &err), err, p, "too short");

    p = tmp_path("padded.bin");
    uint8_t *more = malloc(size + 1);
    memcpy(more, bytes, size);
    more[size] = 0;
    write_file(p, more, size + 1);
    EXPECT_ERR(l2c_try_load(p, &err), err, p, expect);
    CHECK(model_format_detect(p) == MODEL_FORMAT_UNKNOWN, "a padded file is not detected as llama2.c");
    free(more);

    /* Implausible headers name the field; huge ones must not overflow into a "match". */
    static const struct {
        int field;
        int32_t value;
        const char *needle;
    } cases[] = {
        {0, -64, "dim"},        {0, 0, "dim"},          {1, 0, "hidden_dim"}, {2, -1, "n_layers"},
        {3, 0, "n_heads"},      {3, 5, "n_heads"},      {4, 0, "n_kv_heads"}, {4, 3, "n_kv_heads"},
        {4, 8, "n_kv_heads"},   {5, 0, "vocab_size"},   {5, INT32_MIN, "vocab_size"}, {6, 0, "seq_len"},
        {2, 1 << 30, "implies"}, {6, 1 << 30, "implies"}, {0, 0x616b3432, "version"},
    };
    p = tmp_path("header.bin");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint8_t *b = malloc(size);
        memcpy(b, bytes, size);
        put_i32(b + 4 * cases[c].field, cases[c].value);
        write_file(p, b, size);
        EXPECT_ERR(l2c_try_load(p, &err), err, p, cases[c].needle);
        free(b);
    }
    free(bytes);
    model_free(&m);
}

static void test_l2c_refuses(void) {
    static const struct {
        const char *preset;
        int head_dim;
        float theta, eps;
        const char *field;
    } cases[] = {
        {"tiny-qwen3", 0, 0, 0, "qk_norm"},
        {"tiny", 32, 0, 0, "head_dim"},
        {"tiny", 0, 500000.0f, 0, "rope_theta"},
        {"tiny", 0, 0, 1e-6f, "norm_eps"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ModelConfig cfg = cfg_preset(cases[c].preset);
        if (cases[c].head_dim) cfg.head_dim = cases[c].head_dim;
        if (cases[c].theta) cfg.rope_theta = cases[c].theta;
        if (cases[c].eps) cfg.norm_eps = cases[c].eps;
        Model m;
        model_make(&m, &cfg, 51);
        const char *p = tmp_path("refused.bin");
        Err err = {{0}};
        EXPECT_ERR(llama2c_save(p, &m.layout, m.p, &err), err, p, "llama2.c", cases[c].field);
        CHECK(!path_exists(p), "%s: no file after a refused save", cases[c].field);
        model_free(&m);
    }
    CHECK(dir_entries(tmp_dir) == 0, "nothing left behind: %d entries", dir_entries(tmp_dir));
}

static void test_failed_saves_leave_nothing(void) {
    ModelConfig cfg = cfg_preset("tiny");
    Model m;
    model_make(&m, &cfg, 61);
    Err err = {{0}};
    const char *p = tmp_path("missing_dir/model.bin");
    EXPECT_ERR(llama2c_save(p, &m.layout, m.p, &err), err, "missing_dir");
    CHECK(!path_exists(p), "no model.bin");
    const char *d = tmp_path("missing_parent/child");
    err.msg[0] = 0;
    EXPECT_ERR(hf_save(d, &m.layout, m.p, &err), err, "missing_parent");
    CHECK(!path_exists(d), "no HF directory");
    /* A config HF cannot express is refused before anything is created. */
    ModelConfig odd = cfg_preset("tiny");
    odd.qk_norm = 1;
    Model q;
    model_make(&q, &odd, 62);
    const char *hd = tmp_path("llama_qk");
    err.msg[0] = 0;
    EXPECT_ERR(hf_save(hd, &q.layout, q.p, &err), err, hd, "qk_norm");
    CHECK(!path_exists(hd), "no directory for a refused HF save");
    CHECK(dir_entries(tmp_dir) == 0, "nothing left behind: %d entries", dir_entries(tmp_dir));
    model_free(&m);
    model_free(&q);
}

/* ================================================================ HF */

static void check_hf_round_trip(ModelConfig cfg, const char *what) {
    Model m, keep, back;
    model_make(&m, &cfg, 71);
    model_copy(&keep, &m);
    const char *dir = tmp_path("hf_rt");
    Err err = {{0}};
    CHECK(hf_save(dir, &m.layout, m.p, &err) == 0, "%s: %s", what, err.msg);
    CHECK(params_same(&m, &keep) && config_equal(&m.layout.cfg, &keep.layout.cfg), "%s: caller untouched", what);
    CHECK(model_format_detect(dir) == MODEL_FORMAT_HF, "%s: detected as HF", what);
    CHECK(dir_entries(dir) == 2, "%s: config.json and model.safetensors only (%d entries)", what, dir_entries(dir));
    back.p = NULL;
    CHECK(hf_load(dir, &back.layout, &back.p, &err) == 0, "%s: %s", what, err.msg);
    if (back.p) {
        CHECK(back.layout.cfg.rope_style == ROPE_HALF, "%s: HF loads rotate-half", what);
        double d = logits_rel_diff(&back, &m);
        CHECK(d <= 1e-5, "%s: logits change by %.3g", what, d);
        params_convert_rope(&back.layout, back.p, cfg.rope_style);
        CHECK(config_equal(&back.layout.cfg, &cfg), "%s: config round trip", what);
        CHECK(params_same(&back, &m), "%s: params bit-exact", what);
    }
    model_free(&back);
    model_free(&m);
    model_free(&keep);
}

static void test_hf_round_trip(void) {
    check_hf_round_trip(cfg_variant("tiny", 1, 0), "llama tied");
    check_hf_round_trip(cfg_variant("tiny", 0, 0), "llama untied");
    check_hf_round_trip(cfg_variant("tiny", 0, 2), "llama GQA");
    ModelConfig c = cfg_variant("tiny", 1, 2);
    c.rope_style = ROPE_HALF;
    c.rope_theta = 500000.0f;
    c.norm_eps = 1e-6f;
    c.max_seq_len = 333;
    check_hf_round_trip(c, "llama half, other theta/eps");
    check_hf_round_trip(cfg_variant("tiny-qwen3", 1, 0), "qwen3 tied");
    check_hf_round_trip(cfg_variant("tiny-qwen3", 0, 1), "qwen3 untied MQA");
    c = cfg_preset("tiny-qwen3");
    c.rope_style = ROPE_INTERLEAVED; /* the q/k norms must be permuted on save */
    check_hf_round_trip(c, "qwen3 interleaved");
}

/* llama2.c export of an interleaved model -> load -> HF export -> load: the same logits,
** and back to llama2.c: the same bytes. */
static void test_cross_format(void) {
    ModelConfig cfg = cfg_variant("tiny", 0, 2);
    Model m, a, b, c;
    model_make(&m, &cfg, 81);
    const char *bin = tmp_path("x.bin"), *dir = tmp_path("x_hf"), *bin2 = tmp_path("x2.bin");
    Err err = {{0}};
    int ok = llama2c_save(bin, &m.layout, m.p, &err) == 0 && llama2c_load(bin, &a.layout, &a.p, &err) == 0 &&
             hf_save(dir, &a.layout, a.p, &err) == 0 && hf_load(dir, &b.layout, &b.p, &err) == 0 &&
             llama2c_save(bin2, &b.layout, b.p, &err) == 0 && llama2c_load(bin2, &c.layout, &c.p, &err) == 0;
    CHECK(ok, "%s", err.msg);
    if (ok) {
        double d = logits_rel_diff(&b, &m);
        CHECK(d <= 1e-5, "llama2.c -> HF logits change by %.3g", d);
        CHECK(b.layout.cfg.rope_style == ROPE_HALF && c.layout.cfg.rope_style == ROPE_INTERLEAVED, "styles");
        CHECK(params_same(&c, &m), "llama2.c -> HF -> llama2.c is bit-exact");
        size_t s1, s2;
        uint8_t *b1 = read_file(bin, &s1), *b2 = read_file(bin2, &s2);
        CHECK(s1 == s2 && memcmp(b1, b2, s1) == 0, "identical .bin files");
        free(b1);
        free(b2);
        model_free(&a);
        model_free(&b);
        model_free(&c);
    }
    model_free(&m);
}

/* model_config_load_any reads the config of every format without the weights, and says what
** is wrong with a file that is none. */
static void test_config_only(void) {
    ModelConfig cfg = cfg_variant("tiny-qwen3", 1, 2), found;
    ModelConfig l2c_cfg = cfg_variant("tiny", 0, 2);
    Model m, m2;
    model_make(&m, &cfg, 5);
    model_make(&m2, &l2c_cfg, 6);
    const char *ck = tmp_path("cfg.ckpt"), *dir = tmp_path("cfg_hf"), *bin = tmp_path("cfg.bin");
    Err err = {{0}};
    TrainState st;
    memset(&st, 0, sizeof st);
    st.loss_scale = 1;
    CHECK(ckpt_save(ck, &m.layout, m.p, NULL, NULL, &st, &err) == 0, "%s", err.msg);
    CHECK(model_config_load_any(ck, &found, &err) == 0 && config_equal(&found, &cfg), "checkpoint: %s", err.msg);
    CHECK(hf_save(dir, &m.layout, m.p, &err) == 0, "%s", err.msg);
    CHECK(model_config_load_any(dir, &found, &err) == 0 && config_equal(&found, &cfg), "HF: %s", err.msg);
    CHECK(llama2c_save(bin, &m2.layout, m2.p, &err) == 0, "%s", err.msg);
    CHECK(model_config_load_any(bin, &found, &err) == 0 && config_equal(&found, &l2c_cfg), ".bin: %s", err.msg);
    /* a .bin cut short: its header no longer matches the file's size */
    size_t n;
    uint8_t *bytes = read_file(bin, &n);
    const char *cut = tmp_path("cut.bin");
    write_file(cut, bytes, n - 4);
    free(bytes);
    CHECK(model_config_load_any(cut, &found, &err) != 0 && strstr(err.msg, cut), "truncated .bin: %s", err.msg);
    CHECK(model_config_load_any(tmp_path("nothing-here"), &found, &err) != 0 && strstr(err.msg, "no such file"),
          "missing: %s", err.msg);
    model_free(&m);
    model_free(&m2);
}

/* ---------------------------------------------------------------- config.json */

static cJSON *config_base(const char *model_type) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model_type", model_type);
    cJSON_AddNumberToObject(j, "hidden_size", 64);
    cJSON_AddNumberToObject(j, "intermediate_size", 172);
    cJSON_AddNumberToObject(j, "num_hidden_layers", 2);
    cJSON_AddNumberToObject(j, "num_attention_heads", 4);
    cJSON_AddNumberToObject(j, "vocab_size", 512);
    cJSON_AddNumberToObject(j, "max_position_embeddings", 128);
    cJSON_AddNumberToObject(j, "rms_norm_eps", 1e-5);
    return j;
}

static void config_write(const char *path, cJSON *j) {
    char *s = cJSON_Print(j);
    write_file(path, s, strlen(s));
    free(s);
    cJSON_Delete(j);
}

/* config_base(model_type) with key set to value (NULL: removed), then parsed. */
static int config_try(const char *model_type, const char *key, cJSON *value, ModelConfig *cfg, Err *err) {
    cJSON *j = config_base(model_type);
    if (key) {
        cJSON_DeleteItemFromObject(j, key);
        if (value) cJSON_AddItemToObject(j, key, value);
    }
    const char *path = tmp_path("config.json");
    config_write(path, j);
    err->msg[0] = '\0';
    return hf_config_load(path, cfg, err);
}

static void test_hf_config_rejections(void) {
    ModelConfig cfg;
    Err err = {{0}};
    const char *p = tmp_path("config.json");
    cJSON *rs = cJSON_CreateObject();
    cJSON_AddStringToObject(rs, "rope_type", "linear");
    cJSON_AddNumberToObject(rs, "factor", 2);
    EXPECT_ERR(config_try("llama", "rope_scaling", rs, &cfg, &err), err, p, "rope_scaling", "an object");
    EXPECT_ERR(config_try("llama", "attention_bias", cJSON_CreateTrue(), &cfg, &err), err, p, "attention_bias", "true");
    EXPECT_ERR(config_try("llama", "mlp_bias", cJSON_CreateTrue(), &cfg, &err), err, p, "mlp_bias");
    EXPECT_ERR(config_try("mistral", NULL, NULL, &cfg, &err), err, p, "model_type", "mistral");
    EXPECT_ERR(config_try("llama", "model_type", NULL, &cfg, &err), err, p, "model_type", "required");
    EXPECT_ERR(config_try("llama", "hidden_size", NULL, &cfg, &err), err, p, "hidden_size", "required");
    EXPECT_ERR(config_try("qwen3", "num_hidden_layers", NULL, &cfg, &err), err, p, "num_hidden_layers");
    EXPECT_ERR(config_try("llama", "rms_norm_eps", NULL, &cfg, &err), err, p, "rms_norm_eps");
    EXPECT_ERR(config_try("llama", "hidden_size", cJSON_CreateString("64"), &cfg, &err), err, p, "hidden_size",
               "expected an integer", "a string");
    EXPECT_ERR(config_try("llama", "hidden_size", cJSON_CreateNumber(64.5), &cfg, &err), err, p, "hidden_size", "64.5");
    EXPECT_ERR(config_try("llama", "vocab_size", cJSON_CreateNumber(1e12), &cfg, &err), err, p, "vocab_size");
    EXPECT_ERR(config_try("llama", "rope_theta", cJSON_CreateString("1e4"), &cfg, &err), err, p, "rope_theta");
    EXPECT_ERR(config_try("llama", "tie_word_embeddings", cJSON_CreateString("yes"), &cfg, &err), err, p,
               "tie_word_embeddings", "true or false");
    EXPECT_ERR(config_try("llama", "hidden_act", cJSON_CreateString("gelu"), &cfg, &err), err, p, "hidden_act",
               "gelu");
    EXPECT_ERR(config_try("qwen3", "use_sliding_window", cJSON_CreateTrue(), &cfg, &err), err, p,
               "use_sliding_window");
    cJSON *lt = cJSON_CreateArray();
    cJSON_AddItemToArray(lt, cJSON_CreateString("full_attention"));
    cJSON_AddItemToArray(lt, cJSON_CreateString("sliding_attention"));
    EXPECT_ERR(config_try("qwen3", "layer_types", lt, &cfg, &err), err, p, "layer_types", "sliding_attention");
    cJSON *rp = cJSON_CreateObject();
    cJSON_AddStringToObject(rp, "rope_type", "yarn");
    EXPECT_ERR(config_try("qwen3", "rope_parameters", rp, &cfg, &err), err, p, "rope_type", "yarn");
    EXPECT_ERR(config_try("llama", "num_key_value_heads", cJSON_CreateNumber(3), &cfg, &err), err, p, "n_kv_heads");
    EXPECT_ERR(config_try("llama", "num_attention_heads", cJSON_CreateNumber(0), &cfg, &err), err, p);
    EXPECT_ERR(config_try("llama", "head_dim", cJSON_CreateNumber(15), &cfg, &err), err, p, "head_dim");
    EXPECT_ERR(config_try("llama", "num_attention_heads", cJSON_CreateNumber(3), &cfg, &err), err, p, "head_dim",
               "not a multiple");
    EXPECT_ERR(config_try("llama", "rope_theta", cJSON_CreateNumber(1e300), &cfg, &err), err, p, "rope_theta",
               "float range");
    EXPECT_ERR(config_try("llama", "max_position_embeddings", cJSON_CreateNumber(-1), &cfg, &err), err, p,
               "max_seq_len");

    write_file(p, "{\"model_type\": \"llama\",", 23);
    err.msg[0] = 0;
    EXPECT_ERR(hf_config_load(p, &cfg, &err), err, p, "not valid JSON");
    write_file(p, "[1]", 3);
    err.msg[0] = 0;
    EXPECT_ERR(hf_config_load(p, &cfg, &err), err, p, "JSON object");
    err.msg[0] = 0;
    EXPECT_ERR(hf_config_load(tmp_path("no_config.json"), &cfg, &err), err, "no_config.json");
    remove(p);
}

static void test_hf_config_defaults(void) {
    ModelConfig cfg;
    Err err = {{0}};
    CHECK(config_try("llama", NULL, NULL, &cfg, &err) == 0, "%s", err.msg);
    CHECK(cfg.family == FAMILY_LLAMA && cfg.n_kv_heads == 4 && cfg.head_dim == 16 && cfg.rope_theta == 10000.0f &&
              cfg.tied == 0 && cfg.qk_norm == 0 && cfg.rope_style == ROPE_HALF && cfg.norm_eps == 1e-5f &&
              cfg.max_seq_len == 128 && cfg.dim == 64 && cfg.hidden_dim == 172 && cfg.n_layers == 2 &&
              cfg.vocab_size == 512,
          "llama defaults");
    CHECK(config_try("llama", "num_key_value_heads", cJSON_CreateNull(), &cfg, &err) == 0 && cfg.n_kv_heads == 4,
          "null num_key_value_heads means heads: %s", err.msg);
    CHECK(config_try("llama", "rope_scaling", cJSON_CreateNull(), &cfg, &err) == 0, "null rope_scaling: %s", err.msg);
    CHECK(config_try("llama", "tie_word_embeddings", cJSON_CreateTrue(), &cfg, &err) == 0 && cfg.tied == 1, "tied");
    CHECK(config_try("qwen3", NULL, NULL, &cfg, &err) == 0, "%s", err.msg);
    CHECK(cfg.family == FAMILY_QWEN3 && cfg.qk_norm == 1 && cfg.head_dim == 128 && cfg.tied == 0 &&
              cfg.rope_style == ROPE_HALF,
          "qwen3 defaults (head_dim 128 as Qwen3Config)");
    cJSON *rp = cJSON_CreateObject();
    cJSON_AddStringToObject(rp, "rope_type", "default");
    cJSON_AddNumberToObject(rp, "rope_theta", 1000000.0);
    CHECK(config_try("qwen3", "rope_parameters", rp, &cfg, &err) == 0 && cfg.rope_theta == 1e6f,
          "rope_parameters.rope_theta: %s", err.msg);
    CHECK(config_try("llama", "attention_bias", cJSON_CreateFalse(), &cfg, &err) == 0, "bias false is fine");
    remove(tmp_path("config.json"));
}

static void test_hf_config_save(void) {
    const char *names[] = {"tiny", "tiny-qwen3", "qwen3-0.6b", "stories110m"};
    for (int i = 0; i < 4; i++) {
        ModelConfig cfg = cfg_preset(names[i]), back;
        cfg.rope_style = ROPE_HALF;
        const char *p = tmp_path("saved_config.json");
        Err err = {{0}};
        CHECK(hf_config_save(p, &cfg, &err) == 0, "%s: %s", names[i], err.msg);
        CHECK(hf_config_load(p, &back, &err) == 0, "%s: %s", names[i], err.msg);
        CHECK(config_equal(&back, &cfg), "%s: config.json round trip", names[i]);
        size_t n;
        char *text = (char *)read_file(p, &n);
        cJSON *j = cJSON_Parse(text);
        int qwen = cfg.family == FAMILY_QWEN3;
        const cJSON *arch = cJSON_GetObjectItem(j, "architectures");
        CHECK(cJSON_IsArray(arch) && cJSON_IsString(cJSON_GetArrayItem(arch, 0)) &&
                  strcmp(cJSON_GetArrayItem(arch, 0)->valuestring, qwen ? "Qwen3ForCausalLM" : "LlamaForCausalLM") == 0,
              "%s: architectures", names[i]);
        CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "model_type")), qwen ? "qwen3" : "llama") == 0,
              "model_type");
        CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "torch_dtype")), "float32") == 0, "torch_dtype");
        CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "hidden_act")), "silu") == 0, "hidden_act");
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(j, "attention_bias")), "attention_bias false");
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "rope_scaling")), "rope_scaling null");
        CHECK(cJSON_IsBool(cJSON_GetObjectItem(j, "tie_word_embeddings")), "tie_word_embeddings");
        CHECK(cJSON_GetObjectItem(j, "head_dim") && cJSON_GetObjectItem(j, "num_key_value_heads"), "head_dim, kv heads");
        CHECK(strstr(text, "9.99999") == NULL, "eps written as its shortest decimal:\n%s", text);
        cJSON_Delete(j);
        free(text);
        remove(p);
    }
}

/* ---------------------------------------------------------------- tensors of a HF directory */

/* Saves model m as HF into dir and returns the tensor list of its model.safetensors. */
static void hf_fixture(const Model *m, const char *dir, TensorList *l) {
    Err err;
    if (hf_save(dir, &m->layout, m->p, &err) != 0) die(dir, &err);
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    tl_read(l, p);
}

static int hf_try_load(const char *dir, Err *err, Model *out) {
    Model m;
    m.p = NULL;
    err->msg[0] = '\0';
    int rc = hf_load(dir, &m.layout, &m.p, err);
    CHECK(rc == 0 || m.p == NULL, "no buffer on failure");
    if (out) *out = m;
    else free(m.p);
    return rc;
}

static void test_hf_shape_mismatch(void) {
    ModelConfig cfg = cfg_variant("tiny", 1, 2); /* k_proj is [2*16, 64] = [32, 64] */
    Model m;
    model_make(&m, &cfg, 91);
    const char *dir = tmp_path("hf_shape");
    TensorList l;
    hf_fixture(&m, dir, &l);
    const char *st = tmp_path("hf_shape/model.safetensors");
    Err err = {{0}};

    int k = tl_index(&l, "model.layers.1.self_attn.k_proj.weight");
    l.t[k].shape[0] = 64, l.t[k].shape[1] = 32; /* same element count, transposed shape */
    tl_write(&l, st);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, st, "tensor model.layers.1.self_attn.k_proj.weight",
               "expected shape [32, 64], found [64, 32]");
    l.t[k].shape[0] = 32, l.t[k].shape[1] = 64;

    k = tl_index(&l, "model.layers.0.input_layernorm.weight");
    l.t[k].rank = 2, l.t[k].shape[0] = 1, l.t[k].shape[1] = 64;
    tl_write(&l, st);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, st, "tensor model.layers.0.input_layernorm.weight",
               "expected shape [64], found [1, 64]");
    l.t[k].rank = 1, l.t[k].shape[0] = 64;

    k = tl_index(&l, "model.embed_tokens.weight");
    l.t[k].shape[0] = 256, l.t[k].shape[1] = 128;
    tl_write(&l, st);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, st, "tensor model.embed_tokens.weight",
               "expected shape [512, 64], found [256, 128]");
    l.t[k].shape[0] = 512, l.t[k].shape[1] = 64;

    tl_write(&l, st);
    CHECK(hf_try_load(dir, &err, NULL) == 0, "restored file loads: %s", err.msg);
    tl_free(&l);
    model_free(&m);
}

static void test_hf_tensor_set(void) {
    ModelConfig cfg = cfg_variant("tiny-qwen3", 1, 0);
    Model m;
    model_make(&m, &cfg, 101);
    const char *dir = tmp_path("hf_set");
    TensorList l;
    hf_fixture(&m, dir, &l);
    const char *st = tmp_path("hf_set/model.safetensors");
    Err err = {{0}};
    static const float zeros[64] = {0};
    int64_t c64[1] = {64}, c16[1] = {32}, vc[2] = {512, 64};

    /* A missing weight. */
    TensorList t = {0};
    tl_read(&t, st);
    tl_remove(&t, "model.layers.1.self_attn.k_norm.weight");
    tl_write(&t, st);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, "model.layers.1.self_attn.k_norm.weight", "missing", "[32]");
    tl_free(&t);

    /* Weights we do not implement: a bias, a layer beyond the config, a misspelled layer. */
    const char *extra[] = {"model.layers.0.self_attn.q_proj.bias", "model.layers.2.input_layernorm.weight",
                           "model.layers.01.input_layernorm.weight", "model.layers.0.mlp.gate_proj.bias"};
    tl_write(&l, st);
    for (int i = 0; i < 4; i++) {
        tl_read(&t, st);
        tl_add(&t, extra[i], 1, i == 0 ? c16 : c64, zeros);
        tl_write(&t, st);
        EXPECT_ERR(hf_try_load(dir, &err, NULL), err, st, extra[i], "unexpected");
        tl_free(&t);
        tl_write(&l, st);
    }

    /* Harmless buffers are ignored. */
    tl_read(&t, st);
    tl_add(&t, "model.layers.0.self_attn.rotary_emb.inv_freq", 1, c16, zeros);
    tl_add(&t, "model.rotary_emb.inv_freq", 1, c16, zeros);
    tl_write(&t, st);
    Model back;
    CHECK(hf_try_load(dir, &err, &back) == 0, "inv_freq ignored: %s", err.msg);
    if (back.p) {
        CHECK(params_same(&back, &m), "same params");
        model_free(&back);
    }
    tl_free(&t);

    /* Tied, but lm_head.weight present: fine as a copy of the embedding, an error otherwise. */
    tl_read(&t, st);
    const float *emb = t.data[tl_index(&t, "model.embed_tokens.weight")];
    float *head = malloc(512 * 64 * sizeof(float));
    memcpy(head, emb, 512 * 64 * sizeof(float));
    tl_add(&t, "lm_head.weight", 2, vc, head);
    tl_write(&t, st);
    CHECK(hf_try_load(dir, &err, NULL) == 0, "tied with an identical lm_head: %s", err.msg);
    t.data[tl_index(&t, "lm_head.weight")][777] += 1.0f;
    tl_write(&t, st);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, st, "lm_head.weight", "tie_word_embeddings");
    free(head);
    tl_free(&t);

    /* Untied config.json without lm_head.weight. */
    tl_write(&l, st);
    ModelConfig untied = cfg;
    untied.tied = 0;
    const char *config = tmp_path("hf_set/config.json");
    if (hf_config_save(config, &untied, &err) != 0) die(config, &err);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, "lm_head.weight", "missing", "[512, 64]");

    /* No weights at all. */
    remove(st);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, dir, "model.safetensors");
    tl_free(&l);
    model_free(&m);
}

/* An F16 tensor inside a HF model is widened on load. */
static void test_hf_f16_tensor(void) {
    ModelConfig cfg = cfg_preset("tiny");
    Model m;
    model_make(&m, &cfg, 111);
    float *norm = m.p + m.layout.t[T_RMS_FINAL].offset;
    for (int i = 0; i < 64; i++) norm[i] = (float)(i - 32) * 0.25f; /* exact in fp16 */
    const char *dir = tmp_path("hf_f16");
    TensorList l;
    hf_fixture(&m, dir, &l);
    tl_remove(&l, "model.norm.weight");
    const char *tmp_st = tmp_path("hf_f16/rest.safetensors");
    tl_write(&l, tmp_st);
    /* Rebuild the file by hand: its header plus an F16 model.norm.weight appended. */
    size_t n;
    uint8_t *b = read_file(tmp_st, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    size_t data = n - 8 - hlen;
    char *json = malloc(hlen + 200);
    memcpy(json, b + 8, hlen);
    size_t j = hlen;
    while (json[j - 1] == ' ') j--;
    j--; /* drop the closing brace */
    j += (size_t)sprintf(json + j, ",\"model.norm.weight\":{\"dtype\":\"F16\",\"shape\":[64],\"data_offsets\":[%zu,%zu]}}",
                         data, data + 128);
    json[j] = 0;
    uint8_t *payload = malloc(data + 128);
    memcpy(payload, b + 8 + hlen, data);
    for (int i = 0; i < 64; i++) {
        uint16_t h = 0; /* (i-32)/4 in fp16, built from sign, exponent and mantissa */
        int v = i - 32;
        if (v != 0) {
            int a = v < 0 ? -v : v, e = 0;
            while ((a >> e) > 1) e++;
            h = (uint16_t)((v < 0 ? 0x8000 : 0) | (e - 2 + 15) << 10 | ((a << (10 - e)) & 0x3FF));
        }
        payload[data + 2 * i] = (uint8_t)h;
        payload[data + 2 * i + 1] = (uint8_t)(h >> 8);
    }
    st_write_raw(tmp_path("hf_f16/model.safetensors"), json, payload, data + 128);
    remove(tmp_st);
    Err err = {{0}};
    Model back;
    CHECK(hf_try_load(dir, &err, &back) == 0, "%s", err.msg);
    if (back.p) {
        params_convert_rope(&back.layout, back.p, ROPE_INTERLEAVED);
        CHECK(params_same(&back, &m), "F16 norm weights widened exactly");
        model_free(&back);
    }
    free(json);
    free(payload);
    free(b);
    tl_free(&l);
    model_free(&m);
}

static void write_index(const char *path, const TensorList *l, int split) {
    cJSON *j = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(j, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", 1234);
    cJSON *map = cJSON_AddObjectToObject(j, "weight_map");
    for (int i = 0; i < l->n; i++)
        cJSON_AddStringToObject(map, l->names[i],
                                i < split ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors");
    config_write(path, j);
}

static void test_hf_sharded(void) {
    ModelConfig cfg = cfg_variant("tiny-qwen3", 0, 0);
    Model m;
    model_make(&m, &cfg, 121);
    const char *dir = tmp_path("hf_shards");
    TensorList l, first = {0}, second = {0};
    hf_fixture(&m, dir, &l);
    remove(tmp_path("hf_shards/model.safetensors"));
    int split = l.n / 2;
    for (int i = 0; i < l.n; i++) tl_add(i < split ? &first : &second, l.names[i], l.t[i].rank, l.t[i].shape, l.data[i]);
    tl_write(&first, tmp_path("hf_shards/model-00001-of-00002.safetensors"));
    tl_write(&second, tmp_path("hf_shards/model-00002-of-00002.safetensors"));
    const char *index = tmp_path("hf_shards/model.safetensors.index.json");
    write_index(index, &l, split);
    Err err = {{0}};
    Model back;
    CHECK(hf_try_load(dir, &err, &back) == 0, "sharded load: %s", err.msg);
    if (back.p) {
        params_convert_rope(&back.layout, back.p, ROPE_HALF);
        CHECK(params_same(&back, &m), "sharded params bit-exact");
        model_free(&back);
    }

    /* The index names a shard that lacks the tensor. */
    write_index(index, &l, split + 1);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, index, l.names[split], "does not contain");
    /* A shard that does not exist; a shard name that leaves the directory; a broken index. */
    cJSON *j = cJSON_CreateObject();
    cJSON *map = cJSON_AddObjectToObject(j, "weight_map");
    cJSON_AddStringToObject(map, "model.norm.weight", "model-00003-of-00002.safetensors");
    config_write(index, j);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, "model-00003-of-00002.safetensors");
    j = cJSON_CreateObject();
    map = cJSON_AddObjectToObject(j, "weight_map");
    cJSON_AddStringToObject(map, "model.norm.weight", "../x.safetensors");
    config_write(index, j);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, index, "../x.safetensors");
    write_file(index, "{\"weight_map\": 3}", 17);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, index, "weight_map");
    /* Tensors missing from every shard. */
    j = cJSON_CreateObject();
    map = cJSON_AddObjectToObject(j, "weight_map");
    cJSON_AddStringToObject(map, "model.norm.weight", "model-00002-of-00002.safetensors");
    config_write(index, j);
    EXPECT_ERR(hf_try_load(dir, &err, NULL), err, index, "model.embed_tokens.weight", "missing");
    tl_free(&l);
    tl_free(&first);
    tl_free(&second);
    model_free(&m);
}

/* ================================================================ detection */

static void test_format_detect(void) {
    CHECK(strcmp(model_format_name(MODEL_FORMAT_LLAMA2C), "llama2.c") == 0, "name llama2.c");
    CHECK(strcmp(model_format_name(MODEL_FORMAT_HF), "hf") == 0, "name hf");
    CHECK(strcmp(model_format_name(MODEL_FORMAT_CHECKPOINT), "checkpoint") == 0, "name checkpoint");
    CHECK(strcmp(model_format_name(MODEL_FORMAT_UNKNOWN), "unknown") == 0, "name unknown");

    ModelConfig cfg = cfg_preset("tiny");
    Model m;
    model_make(&m, &cfg, 131);
    Err err;
    const char *bin = tmp_path("d.bin");
    if (llama2c_save(bin, &m.layout, m.p, &err) != 0) die(bin, &err);
    CHECK(model_format_detect(bin) == MODEL_FORMAT_LLAMA2C, "llama2.c file");
    const char *dir = tmp_path("d_hf");
    if (hf_save(dir, &m.layout, m.p, &err) != 0) die(dir, &err);
    CHECK(model_format_detect(dir) == MODEL_FORMAT_HF, "HF directory");
    CHECK(model_format_detect(tmp_path("d_hf/model.safetensors")) == MODEL_FORMAT_UNKNOWN, "safetensors file alone");
    const char *empty = tmp_path("d_empty");
    mkdir(empty, 0700);
    CHECK(model_format_detect(empty) == MODEL_FORMAT_UNKNOWN, "empty directory");
    uint8_t ck[64] = "ANECKPT";
    const char *ckpt = tmp_path("d.ckpt");
    write_file(ckpt, ck, sizeof ck);
    CHECK(model_format_detect(ckpt) == MODEL_FORMAT_CHECKPOINT, "checkpoint magic");
    ck[7] = 'X';
    write_file(ckpt, ck, sizeof ck);
    CHECK(model_format_detect(ckpt) != MODEL_FORMAT_CHECKPOINT, "magic needs its NUL");
    const char *txt = tmp_path("d.txt");
    write_file(txt, "hello, this is not a model at all, just some text", 50);
    CHECK(model_format_detect(txt) == MODEL_FORMAT_UNKNOWN, "text file");
    write_file(txt, "", 0);
    CHECK(model_format_detect(txt) == MODEL_FORMAT_UNKNOWN, "empty file");
    CHECK(model_format_detect(tmp_path("does_not_exist")) == MODEL_FORMAT_UNKNOWN, "missing path");
    model_free(&m);
}

/* Each test from an empty temporary directory. */
#define RUN_CLEAN(fn)                                                                              \
    do {                                                                                           \
        tmp_dir_reset();                                                                           \
        RUN(fn);                                                                                   \
    } while (0)

int main(void) {
    tmp_dir_make("io");
    RUN_CLEAN(test_st_round_trip);
    RUN_CLEAN(test_st_half_types);
    RUN_CLEAN(test_st_half_exhaustive);
    RUN_CLEAN(test_st_malformed);
    RUN_CLEAN(test_st_read_errors);
    RUN_CLEAN(test_st_write_errors);
    RUN_CLEAN(test_st_fuzz);
    RUN_CLEAN(test_rope_identity);
    RUN_CLEAN(test_rope_logits);
    RUN_CLEAN(test_l2c_round_trip);
    RUN_CLEAN(test_l2c_half_model);
    RUN_CLEAN(test_l2c_bad_files);
    RUN_CLEAN(test_l2c_refuses);
    RUN_CLEAN(test_failed_saves_leave_nothing);
    RUN_CLEAN(test_hf_round_trip);
    RUN_CLEAN(test_cross_format);
    RUN_CLEAN(test_config_only);
    RUN_CLEAN(test_hf_config_rejections);
    RUN_CLEAN(test_hf_config_defaults);
    RUN_CLEAN(test_hf_config_save);
    RUN_CLEAN(test_hf_shape_mismatch);
    RUN_CLEAN(test_hf_tensor_set);
    RUN_CLEAN(test_hf_f16_tensor);
    RUN_CLEAN(test_hf_sharded);
    RUN_CLEAN(test_format_detect);
    tmp_dir_remove();
    return TEST_SUMMARY();
}
