/*
** test_checkpoint.c — the resumable checkpoint: bit-exact round trips, and every way a file
** can be wrong (truncated, flipped bytes in each section, wrong magic, version, config and
** sizes), and that a failed save leaves nothing behind and keeps the previous file.
**
** Files go to a fresh directory under $TMPDIR (or /tmp) that is removed at the end.
*/
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

#include "model/config.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "util/fileio.h"
#include "util/rng.h"
#include "test.h"
#include "test_tmp.h"

enum { HEADER_BYTES = 192, OFF_CONFIG = 16, OFF_STATE = 72, OFF_N_FLOATS = 176, OFF_N_MOMENTS = 184, OFF_CRC = 188 };

static int tmp_dir_count(const char *needle) {
    DIR *d = opendir(tmp_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, needle)) n++;
    if (d) closedir(d);
    return n;
}

static uint8_t *read_file(const char *path, size_t *n) {
    Err err;
    char *b = file_read_all(path, n, &err);
    if (!b) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    return (uint8_t *)b;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(data, 1, n, fp) != n)) {
        perror(path);
        exit(2);
    }
    fclose(fp);
}

static void put_u32(uint8_t *p, uint32_t x) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i));
}

/* Rewrites the header checksum after a deliberate edit, so the later checks are reached. */
static void fix_header_crc(uint8_t *b) { put_u32(b + OFF_CRC, crc32_update(0, b, OFF_CRC)); }

static int has(const char *msg, const char *needle) { return strstr(msg, needle) != NULL; }

/* A model's buffers filled with distinct values (including awkward ones) and a busy TrainState. */
typedef struct {
    ParamLayout layout;
    float *params, *m, *v;
    TrainState state;
} Fixture;

static void fixture_make(Fixture *f, const char *preset) {
    ModelConfig cfg;
    Err err;
    if (config_from_preset(&cfg, preset, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    params_layout(&f->layout, &cfg);
    size_t n = f->layout.n_floats;
    f->params = malloc(n * sizeof(float));
    f->m = malloc(n * sizeof(float));
    f->v = malloc(n * sizeof(float));
    Rng rng;
    rng_seed(&rng, 17);
    params_init(&f->layout, f->params, &rng);
    for (size_t i = 0; i < n; i++) {
        f->m[i] = (float)rng_normal(&rng) * 1e-3f;
        f->v[i] = rng_uniform(&rng) * 1e-6f;
    }
    f->params[0] = -0.0f;
    f->params[1] = 1e-40f; /* a denormal */
    f->m[2] = 3.4e38f;
    memset(&f->state, 0, sizeof f->state);
    f->state.step = 123456789012ll;
    f->state.tokens_seen = 9876543210123ll;
    rng_seed(&f->state.loader.rng, 99);
    f->state.loader.rows = 0xFEDCBA9876543210ull;
    rng_seed(&f->state.rng, 100);
    rng_next_u64(&f->state.rng);
    f->state.loss_scale = 32768.0f;
    f->state.clean_steps = 77;
    f->state.skipped_steps = 1234567;
}

static void fixture_free(Fixture *f) {
    free(f->params);
    free(f->m);
    free(f->v);
}

static int state_equal(const TrainState *a, const TrainState *b) {
    return a->step == b->step && a->tokens_seen == b->tokens_seen &&
           memcmp(a->loader.rng.s, b->loader.rng.s, sizeof a->loader.rng.s) == 0 && a->loader.rows == b->loader.rows &&
           memcmp(a->rng.s, b->rng.s, sizeof a->rng.s) == 0 &&
           memcmp(&a->loss_scale, &b->loss_scale, sizeof a->loss_scale) == 0 && a->clean_steps == b->clean_steps &&
           a->skipped_steps == b->skipped_steps;
}

static void check_round_trip(const char *preset) {
    Fixture f;
    fixture_make(&f, preset);
    const char *path = tmp_path("rt.ckpt");
    Err err = {{0}};
    CHECK(ckpt_save(path, &f.layout, f.params, f.m, f.v, &f.state, &err) == 0, "%s: %s", preset, err.msg);
    CHECK(ckpt_is_checkpoint(path), "%s: magic", preset);
    size_t n = f.layout.n_floats, size;
    free(read_file(path, &size));
    CHECK(size == HEADER_BYTES + 3 * (n * 4 + 4), "%s: file size %zu", preset, size);

    ParamLayout layout;
    float *p = NULL, *m = NULL, *v = NULL;
    TrainState st;
    CHECK(ckpt_load(path, &layout, &p, &m, &v, &st, &err) == 0, "%s: %s", preset, err.msg);
    CHECK(config_equal(&layout.cfg, &f.layout.cfg), "%s: config", preset);
    CHECK(layout.n_floats == n, "%s: n_floats", preset);
    CHECK(p && memcmp(p, f.params, n * 4) == 0, "%s: params bit-exact", preset);
    CHECK(m && memcmp(m, f.m, n * 4) == 0, "%s: m bit-exact", preset);
    CHECK(v && memcmp(v, f.v, n * 4) == 0, "%s: v bit-exact", preset);
    CHECK(state_equal(&st, &f.state), "%s: state", preset);
    free(p);
    free(m);
    free(v);

    /* Params only, without asking for moments or state. */
    CHECK(ckpt_load(path, &layout, &p, NULL, NULL, NULL, &err) == 0, "%s: %s", preset, err.msg);
    CHECK(p && memcmp(p, f.params, n * 4) == 0, "%s: params alone", preset);
    free(p);
    /* m but not v: the reader steps over nothing it is asked for. */
    CHECK(ckpt_load(path, &layout, &p, &m, NULL, NULL, &err) == 0, "%s: %s", preset, err.msg);
    CHECK(m && memcmp(m, f.m, n * 4) == 0, "%s: m alone", preset);
    free(p);
    free(m);
    CHECK(ckpt_load(path, &layout, &p, NULL, &v, NULL, &err) == 0, "%s: %s", preset, err.msg);
    CHECK(v && memcmp(v, f.v, n * 4) == 0, "%s: v after skipping m", preset);
    free(p);
    free(v);
    fixture_free(&f);
}

static void test_round_trip_tiny(void) { check_round_trip("tiny"); }
static void test_round_trip_tiny_qwen3(void) { check_round_trip("tiny-qwen3"); }

static void test_round_trip_untied(void) {
    /* Every config field takes a value other than the preset's default. */
    Fixture f;
    fixture_make(&f, "tiny");
    ModelConfig cfg = f.layout.cfg;
    cfg.tied = 0;
    cfg.rope_style = ROPE_HALF;
    cfg.max_seq_len = 333;
    cfg.rope_theta = 12345.5f;
    cfg.norm_eps = 3e-6f;
    cfg.n_kv_heads = 2;
    fixture_free(&f);
    ParamLayout layout;
    params_layout(&layout, &cfg);
    float *params = calloc(layout.n_floats, sizeof(float));
    for (size_t i = 0; i < layout.n_floats; i++) params[i] = (float)i * 0.5f;
    const char *path = tmp_path("untied.ckpt");
    Err err = {{0}};
    CHECK(ckpt_save(path, &layout, params, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    ParamLayout got;
    float *p = NULL, *m = (float *)1, *v = (float *)1;
    TrainState st;
    CHECK(ckpt_load(path, &got, &p, &m, &v, &st, &err) == 0, "%s", err.msg);
    CHECK(config_equal(&got.cfg, &cfg), "config with untied head, half rope, GQA");
    CHECK(got.n_floats == layout.n_floats && p && memcmp(p, params, layout.n_floats * 4) == 0, "params");
    CHECK(m == NULL && v == NULL, "no moments in the file: m and v come back NULL");
    CHECK(st.step == 0 && st.tokens_seen == 0 && st.loss_scale == 1.0f && st.loader.rows == 0,
          "a NULL state saves step 0, loss scale 1");
    free(p);
    free(params);
}

static void test_without_moments(void) {
    Fixture f;
    fixture_make(&f, "tiny-qwen3");
    const char *path = tmp_path("nomoments.ckpt");
    Err err = {{0}};
    CHECK(ckpt_save(path, &f.layout, f.params, NULL, NULL, &f.state, &err) == 0, "%s", err.msg);
    size_t size, n = f.layout.n_floats;
    uint8_t *b = read_file(path, &size);
    CHECK(size == HEADER_BYTES + n * 4 + 4, "params only: %zu bytes", size);
    CHECK(b[OFF_N_MOMENTS] == 0, "n_moments 0 in the header");
    free(b);
    ParamLayout layout;
    float *p = NULL, *m = (float *)1, *v = (float *)1;
    TrainState st;
    CHECK(ckpt_load(path, &layout, &p, &m, &v, &st, &err) == 0, "%s", err.msg);
    CHECK(p && memcmp(p, f.params, n * 4) == 0, "params");
    CHECK(m == NULL && v == NULL, "m and v NULL");
    CHECK(state_equal(&st, &f.state), "state kept without moments");
    free(p);
    /* Only one moment is a caller error. */
    CHECK(ckpt_save(path, &f.layout, f.params, f.m, NULL, &f.state, &err) != 0 && has(err.msg, "moments"), "%s",
          err.msg);
    fixture_free(&f);
}

/* Saves the tiny fixture with moments and returns the file's bytes. */
static uint8_t *saved_tiny(Fixture *f, size_t *size) {
    fixture_make(f, "tiny");
    const char *path = tmp_path("base.ckpt");
    Err err;
    if (ckpt_save(path, &f->layout, f->params, f->m, f->v, &f->state, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    return read_file(path, size);
}

/* Writes bytes to a file, loads it and returns the error message (empty if it loaded). */
static const char *load_bytes(const char *path, const uint8_t *b, size_t n) {
    static Err err;
    write_file(path, b, n);
    ParamLayout layout;
    float *p = NULL, *m = NULL, *v = NULL;
    TrainState st;
    err.msg[0] = '\0';
    if (ckpt_load(path, &layout, &p, &m, &v, &st, &err) == 0) {
        free(p);
        free(m);
        free(v);
        return "";
    }
    if (p || m || v) return "buffers not freed on failure";
    return err.msg;
}

static void test_truncated(void) {
    Fixture f;
    size_t size;
    uint8_t *b = saved_tiny(&f, &size);
    const char *path = tmp_path("trunc.ckpt");
    size_t n = f.layout.n_floats;
    size_t cuts[] = {0, 5, 8, 11, 12, 100, HEADER_BYTES - 1, HEADER_BYTES, HEADER_BYTES + 1000, HEADER_BYTES + n * 4,
                     HEADER_BYTES + n * 4 + 4, size - n * 4 - 4, size - 4, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        const char *msg = load_bytes(path, b, cuts[i]);
        char found[64];
        snprintf(found, sizeof found, "found %zu bytes", cuts[i]);
        CHECK(has(msg, "truncated") && has(msg, path) && has(msg, "expected") && has(msg, found),
              "cut at %zu: message: %s", cuts[i], msg);
        if (cuts[i] >= HEADER_BYTES) {
            char expected[64];
            snprintf(expected, sizeof expected, "expected %zu bytes", size);
            CHECK(has(msg, expected), "cut at %zu names the full size: %s", cuts[i], msg);
        }
    }
    /* Extra bytes at the end are as wrong as missing ones. */
    uint8_t *longer = malloc(size + 3);
    memcpy(longer, b, size);
    memset(longer + size, 0, 3);
    const char *msg = load_bytes(path, longer, size + 3);
    CHECK(has(msg, "expected") && has(msg, "found"), "trailing bytes: %s", msg);
    free(longer);
    CHECK(strcmp(load_bytes(path, b, size), "") == 0, "the uncut file loads");
    free(b);
    fixture_free(&f);
}

static void test_flipped_bytes(void) {
    Fixture f;
    size_t size;
    uint8_t *b = saved_tiny(&f, &size);
    const char *path = tmp_path("flip.ckpt");
    size_t sec = f.layout.n_floats * 4 + 4;
    struct {
        size_t offset;
        const char *section;
    } flips[] = {
        {OFF_CONFIG + 4, "section header"},          /* dim */
        {OFF_STATE + 50, "section header"},          /* loader rows */
        {OFF_CRC + 1, "section header"},             /* the header's own crc */
        {HEADER_BYTES + 0, "section params"},
        {HEADER_BYTES + sec / 2, "section params"},
        {HEADER_BYTES + sec - 1, "section params"}, /* params' crc */
        {HEADER_BYTES + sec + 7, "section m"},
        {HEADER_BYTES + 2 * sec - 2, "section m"},
        {HEADER_BYTES + 2 * sec + 1234, "section v"},
        {size - 1, "section v"},
    };
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        b[flips[i].offset] ^= 0x10;
        const char *msg = load_bytes(path, b, size);
        CHECK(has(msg, flips[i].section) && has(msg, "checksum") && has(msg, path), "flip at %zu: expected %s: %s",
              flips[i].offset, flips[i].section, msg);
        b[flips[i].offset] ^= 0x10;
    }
    /* A damaged moment does not matter to a caller that does not read moments. */
    b[HEADER_BYTES + sec + 7] ^= 0x10;
    write_file(path, b, size);
    ParamLayout layout;
    float *p = NULL;
    Err err = {{0}};
    CHECK(ckpt_load(path, &layout, &p, NULL, NULL, NULL, &err) == 0, "params only: %s", err.msg);
    free(p);
    free(b);
    fixture_free(&f);
}

static void test_wrong_header(void) {
    Fixture f;
    size_t size;
    uint8_t *b = saved_tiny(&f, &size);
    const char *path = tmp_path("hdr.ckpt");
    uint8_t *c = malloc(size);

    memcpy(c, b, size);
    c[3] = 'X';
    const char *msg = load_bytes(path, c, size);
    CHECK(has(msg, path) && has(msg, "magic") && has(msg, "ANECKPT"), "wrong magic: %s", msg);
    CHECK(!ckpt_is_checkpoint(path), "not a checkpoint");
    write_file(path, "ANECKP", 6);
    CHECK(!ckpt_is_checkpoint(path), "short file");
    CHECK(!ckpt_is_checkpoint(tmp_path("absent")), "missing file");

    memcpy(c, b, size);
    put_u32(c + 8, 7);
    msg = load_bytes(path, c, size);
    CHECK(has(msg, path) && has(msg, "version") && has(msg, "expected 1") && has(msg, "found 7"), "version: %s", msg);
    /* Version is judged before the checksum, even with a consistent crc. */
    fix_header_crc(c);
    msg = load_bytes(path, c, size);
    CHECK(has(msg, "version") && has(msg, "found 7"), "version with crc: %s", msg);

    memcpy(c, b, size);
    put_u32(c + 12, 200);
    fix_header_crc(c);
    msg = load_bytes(path, c, size);
    CHECK(has(msg, "header_bytes") && has(msg, "expected 192") && has(msg, "found 200"), "header_bytes: %s", msg);

    /* A config that fails validation is reported by config_validate, naming the file. */
    memcpy(c, b, size);
    put_u32(c + OFF_CONFIG + 4, 0); /* dim */
    fix_header_crc(c);
    msg = load_bytes(path, c, size);
    CHECK(has(msg, path) && has(msg, "dim") && has(msg, "found 0"), "bad config: %s", msg);
    memcpy(c, b, size);
    put_u32(c + OFF_CONFIG + 0, 9); /* family */
    fix_header_crc(c);
    msg = load_bytes(path, c, size);
    CHECK(has(msg, "family") && has(msg, "found 9"), "bad family: %s", msg);

    /* n_floats must match the stored config's layout. */
    memcpy(c, b, size);
    put_u32(c + OFF_N_FLOATS, (uint32_t)f.layout.n_floats + 1);
    fix_header_crc(c);
    msg = load_bytes(path, c, size);
    char want[128];
    snprintf(want, sizeof want, "expected %zu", f.layout.n_floats);
    CHECK(has(msg, "n_floats") && has(msg, want), "n_floats: %s", msg);

    memcpy(c, b, size);
    put_u32(c + OFF_N_MOMENTS, 1);
    fix_header_crc(c);
    msg = load_bytes(path, c, size);
    CHECK(has(msg, "n_moments") && has(msg, "found 1"), "n_moments: %s", msg);
    /* n_moments 0 on a file that holds them: the length no longer matches. */
    put_u32(c + OFF_N_MOMENTS, 0);
    fix_header_crc(c);
    msg = load_bytes(path, c, size);
    CHECK(has(msg, "expected") && has(msg, "found"), "n_moments 0 on a longer file: %s", msg);

    memcpy(c, b, size);
    memcpy(c + OFF_STATE + 88, &(float){0.0f}, 4); /* loss_scale */
    fix_header_crc(c);
    msg = load_bytes(path, c, size);
    CHECK(has(msg, "loss_scale"), "loss_scale 0: %s", msg);

    ParamLayout layout;
    float *p = NULL;
    Err err = {{0}};
    CHECK(ckpt_load(tmp_path("missing.ckpt"), &layout, &p, NULL, NULL, NULL, &err) != 0 &&
              has(err.msg, "missing.ckpt") && p == NULL,
          "missing file: %s", err.msg);
    free(c);
    free(b);
    fixture_free(&f);
}

static void test_failed_save(void) {
    Fixture f;
    fixture_make(&f, "tiny");
    Err err = {{0}};

    /* A directory that does not exist: an error, and no file anywhere. */
    const char *missing = tmp_path("no-such-dir/x.ckpt");
    err.msg[0] = '\0';
    CHECK(ckpt_save(missing, &f.layout, f.params, f.m, f.v, &f.state, &err) != 0, "save into a missing directory");
    CHECK(err.msg[0] != '\0' && has(err.msg, "no-such-dir"), "message: %s", err.msg);
    CHECK(access(missing, F_OK) != 0, "no file");

    /* A good checkpoint, then saves that fail in different ways: it must survive each. */
    const char *path = tmp_path("keep.ckpt");
    CHECK(ckpt_save(path, &f.layout, f.params, f.m, f.v, &f.state, &err) == 0, "%s", err.msg);
    ParamLayout bad = f.layout;
    bad.cfg.n_heads = 0;
    CHECK(ckpt_save(path, &bad, f.params, f.m, f.v, &f.state, &err) != 0 && has(err.msg, "n_heads"),
          "invalid config: %s", err.msg);
    TrainState st = f.state;
    st.loss_scale = NAN;
    CHECK(ckpt_save(path, &f.layout, f.params, f.m, f.v, &st, &err) != 0 && has(err.msg, "loss_scale"),
          "invalid state: %s", err.msg);

    /* A write that fails part way (the file size limit is hit mid-section). */
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = 64 * 1024;
    int limited = setrlimit(RLIMIT_FSIZE, &small) == 0;
    float *other = calloc(f.layout.n_floats, sizeof(float));
    if (limited) {
        err.msg[0] = '\0';
        int rc = ckpt_save(path, &f.layout, other, other, other, NULL, &err);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK(rc != 0, "save past the file size limit must fail");
        CHECK(err.msg[0] != '\0', "with a message");
    }
    signal(SIGXFSZ, old_handler);
    free(other);
    CHECK(tmp_dir_count(".tmp.") == 0, "no temporary file left behind");

    ParamLayout layout;
    float *p = NULL, *m = NULL, *v = NULL;
    CHECK(ckpt_load(path, &layout, &p, &m, &v, &st, &err) == 0, "%s", err.msg);
    CHECK(p && memcmp(p, f.params, f.layout.n_floats * 4) == 0 && state_equal(&st, &f.state),
          "the previous checkpoint is intact");
    free(p);
    free(m);
    free(v);
    fixture_free(&f);
}

int main(void) {
    tmp_dir_make("ckpt");
    RUN(test_round_trip_tiny);
    RUN(test_round_trip_tiny_qwen3);
    RUN(test_round_trip_untied);
    RUN(test_without_moments);
    RUN(test_truncated);
    RUN(test_flipped_bytes);
    RUN(test_wrong_header);
    RUN(test_failed_save);
    tmp_dir_remove();
    return TEST_SUMMARY();
}
