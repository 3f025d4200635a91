/*
** test_data.c — token files (both formats, every error a corrupt file can cause), the
** loader (exact window positions, wrap-around, random windows, resumable state, validation)
** and documents (each format's split of a text, the reader over files, the format names).
**
** Files go to a fresh directory under $TMPDIR (or /tmp) that is removed at the end; the tests
** never touch the repository tree.
*/
#include <dirent.h>
#include <stdint.h>
#include <unistd.h>

#include "data/documents.h"
#include "data/loader.h"
#include "data/tokfile.h"
#include "test.h"
#include "test_tmp.h"

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(data, 1, n, fp) != n)) {
        perror(path);
        exit(2);
    }
    fclose(fp);
}

/* Reads a whole file into buf (at most cap bytes); returns its size. */
static size_t read_bytes(const char *path, uint8_t *buf, size_t cap) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    size_t n = fread(buf, 1, cap, fp);
    fclose(fp);
    return n;
}

static void put_u32(uint8_t *p, uint32_t x) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i));
}

static int has(const char *msg, const char *needle) { return strstr(msg, needle) != NULL; }

/* Number of entries in the temp dir whose name contains needle. */
static int tmp_dir_count(const char *needle) {
    DIR *d = opendir(tmp_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, needle)) n++;
    if (d) closedir(d);
    return n;
}

/* ---------------------------------------------------------------- token files */

static void test_tokfile_raw_round_trip(void) {
    int32_t ids[] = {1, 0, 65535, 300, 2, 31999, 7, 1};
    size_t n = sizeof ids / sizeof ids[0];
    const char *path = tmp_path("raw.bin");
    Err err = {{0}};
    CHECK(tokfile_save(path, ids, n, 0, 2, 0, &err) == 0, "%s", err.msg);
    uint8_t buf[64];
    size_t size = read_bytes(path, buf, sizeof buf);
    CHECK(size == 2 * n, "raw file is %zu bytes, expected %zu", size, 2 * n);
    CHECK(buf[4] == 0xFF && buf[5] == 0xFF && buf[6] == 0x2C && buf[7] == 0x01, "little-endian uint16 on disk");
    TokFile f;
    CHECK(tokfile_load(&f, path, 0, &err) == 0, "%s", err.msg);
    CHECK(f.headered == 0 && f.id_bytes == 2 && f.vocab_size == 0, "raw: headered %d id_bytes %d vocab %u", f.headered,
          f.id_bytes, f.vocab_size);
    CHECK(f.n_tokens == n, "n_tokens %zu", f.n_tokens);
    for (size_t i = 0; i < n && i < f.n_tokens; i++) CHECK(f.tokens[i] == ids[i], "token %zu: %d vs %d", i, f.tokens[i], ids[i]);
    CHECK(strcmp(f.path, path) == 0, "path kept");
    tokfile_free(&f);
    CHECK(tmp_dir_count(".tmp.") == 0, "no temporary file left behind");
}

static void test_tokfile_anetok_round_trip(void) {
    Err err = {{0}};
    /* 2-byte ids with a vocabulary in the header. */
    int32_t small[] = {1, 5, 511, 0, 42};
    const char *p2 = tmp_path("two.tok");
    CHECK(tokfile_save(p2, small, 5, 1, 2, 512, &err) == 0, "%s", err.msg);
    uint8_t buf[128];
    size_t size = read_bytes(p2, buf, sizeof buf);
    CHECK(size == TOKFILE_HEADER_BYTES + 10, "size %zu", size);
    CHECK(memcmp(buf, "ANETOK1\0", 8) == 0, "magic");
    TokFile f;
    CHECK(tokfile_load(&f, p2, 512, &err) == 0, "%s", err.msg);
    CHECK(f.headered == 1 && f.id_bytes == 2 && f.vocab_size == 512 && f.n_tokens == 5, "header fields");
    for (size_t i = 0; i < 5 && i < f.n_tokens; i++) CHECK(f.tokens[i] == small[i], "token %zu", i);
    tokfile_free(&f);

    /* 4-byte ids beyond 65,535 (Qwen3). */
    int32_t wide[] = {151668, 65535, 65536, 0, 100000, 151642, 1};
    const char *p4 = tmp_path("four.tok");
    CHECK(tokfile_save(p4, wide, 7, 1, 4, 151669, &err) == 0, "%s", err.msg);
    size = read_bytes(p4, buf, sizeof buf);
    CHECK(size == TOKFILE_HEADER_BYTES + 28, "size %zu", size);
    CHECK(tokfile_load(&f, p4, 151936, &err) == 0, "%s", err.msg);
    CHECK(f.headered == 1 && f.id_bytes == 4 && f.vocab_size == 151669 && f.n_tokens == 7, "header fields");
    for (size_t i = 0; i < 7 && i < f.n_tokens; i++) CHECK(f.tokens[i] == wide[i], "token %zu: %d", i, f.tokens[i]);
    tokfile_free(&f);
    /* Without a model vocabulary too. */
    CHECK(tokfile_load(&f, p4, 0, &err) == 0, "%s", err.msg);
    CHECK(f.n_tokens == 7 && f.tokens[0] == 151668, "vocab 0 reads the same");
    tokfile_free(&f);

    /* headered == 0 with 4-byte ids still writes ANETOK (raw files are uint16 only). */
    const char *pw = tmp_path("wide-unheadered.tok");
    CHECK(tokfile_save(pw, wide, 7, 0, 4, 0, &err) == 0, "%s", err.msg);
    CHECK(tokfile_load(&f, pw, 0, &err) == 0, "%s", err.msg);
    CHECK(f.headered == 1 && f.id_bytes == 4 && f.tokens[0] == 151668, "written as ANETOK");
    tokfile_free(&f);
}

static void test_tokfile_raw_errors(void) {
    Err err = {{0}};
    TokFile f;
    const char *odd = tmp_path("odd.bin");
    write_bytes(odd, "\x01\x00\x02\x00\x03", 5);
    CHECK(tokfile_load(&f, odd, 0, &err) != 0, "odd size must fail");
    CHECK(has(err.msg, odd) && has(err.msg, "even") && has(err.msg, "5 bytes"), "message: %s", err.msg);
    CHECK(f.tokens == NULL, "no tokens on failure");

    const char *empty = tmp_path("empty.bin");
    write_bytes(empty, "", 0);
    CHECK(tokfile_load(&f, empty, 0, &err) != 0, "empty file must fail");
    CHECK(has(err.msg, empty) && has(err.msg, "no tokens"), "message: %s", err.msg);

    CHECK(tokfile_load(&f, tmp_path("missing.bin"), 0, &err) != 0, "missing file must fail");
    CHECK(has(err.msg, "missing.bin"), "message: %s", err.msg);

    /* An id beyond the model's vocabulary, at index 7. */
    int32_t ids[10] = {1, 2, 3, 4, 5, 6, 7, 600, 8, 9};
    const char *big = tmp_path("big-id.bin");
    CHECK(tokfile_save(big, ids, 10, 0, 2, 0, &err) == 0, "%s", err.msg);
    CHECK(tokfile_load(&f, big, 512, &err) != 0, "id >= vocab must fail");
    CHECK(has(err.msg, big) && has(err.msg, "token 7") && has(err.msg, "600") && has(err.msg, "512"), "message: %s",
          err.msg);
    CHECK(tokfile_load(&f, big, 601, &err) == 0, "vocab 601 holds id 600: %s", err.msg);
    tokfile_free(&f);
}

/* A valid ANETOK file of 4 two-byte tokens, to be corrupted by the tests below. */
static size_t anetok_bytes(uint8_t *buf) {
    int32_t ids[] = {1, 2, 3, 4};
    const char *p = tmp_path("base.tok");
    Err err = {{0}};
    if (tokfile_save(p, ids, 4, 1, 2, 100, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(2);
    }
    return read_bytes(p, buf, 256);
}

static void test_tokfile_anetok_errors(void) {
    Err err = {{0}};
    TokFile f;
    uint8_t buf[256];
    size_t n = anetok_bytes(buf);
    const char *p = tmp_path("bad.tok");

    write_bytes(p, buf, 20); /* truncated header */
    CHECK(tokfile_load(&f, p, 0, &err) != 0, "truncated header must fail");
    CHECK(has(err.msg, p) && has(err.msg, "header") && has(err.msg, "32") && has(err.msg, "20"), "message: %s",
          err.msg);

    write_bytes(p, buf, n - 1); /* n_tokens says 4, the file holds 3.5 */
    CHECK(tokfile_load(&f, p, 0, &err) != 0, "short payload must fail");
    CHECK(has(err.msg, p) && has(err.msg, "n_tokens") && has(err.msg, "40 bytes") && has(err.msg, "39 bytes"),
          "message: %s", err.msg);

    uint8_t bad[256];
    memcpy(bad, buf, n);
    put_u32(bad + 24, 5); /* n_tokens 5, file holds 4 */
    write_bytes(p, bad, n);
    CHECK(tokfile_load(&f, p, 0, &err) != 0, "n_tokens too large must fail");
    CHECK(has(err.msg, "n_tokens") && has(err.msg, "42 bytes") && has(err.msg, "40 bytes"), "message: %s", err.msg);
    memcpy(bad, buf, n);
    bad[31] = 0x80; /* n_tokens near 2^63: no overflow into a small size */
    write_bytes(p, bad, n);
    CHECK(tokfile_load(&f, p, 0, &err) != 0 && has(err.msg, "n_tokens"), "huge n_tokens: %s", err.msg);
    memcpy(bad, buf, n);
    put_u32(bad + 24, 0);
    write_bytes(p, bad, TOKFILE_HEADER_BYTES);
    CHECK(tokfile_load(&f, p, 0, &err) != 0 && has(err.msg, "no tokens"), "zero tokens: %s", err.msg);

    memcpy(bad, buf, n);
    put_u32(bad + 8, 2);
    write_bytes(p, bad, n);
    CHECK(tokfile_load(&f, p, 0, &err) != 0, "wrong version must fail");
    CHECK(has(err.msg, "version") && has(err.msg, "expected 1") && has(err.msg, "found 2"), "message: %s", err.msg);

    memcpy(bad, buf, n);
    put_u32(bad + 12, 3);
    write_bytes(p, bad, n);
    CHECK(tokfile_load(&f, p, 0, &err) != 0, "id_bytes 3 must fail");
    CHECK(has(err.msg, "id_bytes") && has(err.msg, "found 3"), "message: %s", err.msg);

    memcpy(bad, buf, n);
    put_u32(bad + 20, 9);
    write_bytes(p, bad, n);
    CHECK(tokfile_load(&f, p, 0, &err) != 0 && has(err.msg, "reserved"), "reserved: %s", err.msg);

    /* The header's vocabulary is larger than the model's. */
    write_bytes(p, buf, n);
    CHECK(tokfile_load(&f, p, 50, &err) != 0, "header vocab 100 > model vocab 50 must fail");
    CHECK(has(err.msg, "vocab_size") && has(err.msg, "50") && has(err.msg, "100"), "message: %s", err.msg);
    CHECK(tokfile_load(&f, p, 100, &err) == 0, "%s", err.msg);
    tokfile_free(&f);

    /* An id beyond the header's own vocabulary (index 2). */
    memcpy(bad, buf, n);
    bad[TOKFILE_HEADER_BYTES + 4] = 200;
    write_bytes(p, bad, n);
    CHECK(tokfile_load(&f, p, 0, &err) != 0, "id >= header vocab must fail");
    CHECK(has(err.msg, "token 2") && has(err.msg, "200") && has(err.msg, "100"), "message: %s", err.msg);

    /* A 4-byte id with the top bit set never becomes a negative int32. */
    int32_t ids[] = {1, 2};
    CHECK(tokfile_save(p, ids, 2, 1, 4, 0, &err) == 0, "%s", err.msg);
    n = read_bytes(p, bad, sizeof bad);
    put_u32(bad + TOKFILE_HEADER_BYTES + 4, 0x80000001u);
    write_bytes(p, bad, n);
    CHECK(tokfile_load(&f, p, 0, &err) != 0 && has(err.msg, "token 1"), "top bit: %s", err.msg);

    /* A raw file that happens to be 8+ bytes but has no magic is raw. */
    write_bytes(p, "ANETOK2\0\1\0", 10);
    CHECK(tokfile_load(&f, p, 0, &err) == 0 && f.headered == 0 && f.n_tokens == 5, "no magic means raw: %s", err.msg);
    tokfile_free(&f);
}

static void test_tokfile_save_errors(void) {
    Err err = {{0}};
    int32_t ids[] = {1, 70000, 3};
    const char *p = tmp_path("nofit.bin");
    CHECK(tokfile_save(p, ids, 3, 0, 2, 0, &err) != 0, "70000 does not fit 2 bytes");
    CHECK(has(err.msg, p) && has(err.msg, "token 1") && has(err.msg, "70000"), "message: %s", err.msg);
    CHECK(tokfile_save(p, ids, 3, 1, 2, 0, &err) != 0, "nor in ANETOK with 2-byte ids");
    CHECK(access(p, F_OK) != 0, "nothing written on failure");
    int32_t neg[] = {1, -1};
    CHECK(tokfile_save(p, neg, 2, 1, 4, 0, &err) != 0 && has(err.msg, "-1"), "negative id: %s", err.msg);
    CHECK(tokfile_save(p, ids, 3, 1, 4, 1000, &err) != 0 && has(err.msg, "vocab_size"), "id >= vocab_size: %s",
          err.msg);
    CHECK(tokfile_save(p, ids, 3, 1, 3, 0, &err) != 0 && has(err.msg, "id_bytes"), "id_bytes 3: %s", err.msg);
    CHECK(tokfile_save(p, ids, 0, 1, 4, 0, &err) != 0 && has(err.msg, "no tokens"), "no tokens: %s", err.msg);
    CHECK(access(p, F_OK) != 0, "still nothing written");
    CHECK(tokfile_save(tmp_path("no-such-dir/x.bin"), ids, 1, 0, 2, 0, &err) != 0, "missing directory must fail");
    CHECK(tmp_dir_count(".tmp.") == 0, "no temporary file left behind");

    /* A failed save leaves the previous file untouched. */
    int32_t good[] = {4, 5};
    CHECK(tokfile_save(p, good, 2, 0, 2, 0, &err) == 0, "%s", err.msg);
    CHECK(tokfile_save(p, ids, 3, 0, 2, 0, &err) != 0, "must fail");
    TokFile f;
    CHECK(tokfile_load(&f, p, 0, &err) == 0 && f.n_tokens == 2 && f.tokens[0] == 4, "old file intact");
    tokfile_free(&f);
}

/* The streaming writer: pieces add up to one file, the header counts them, and a bad id in a
** later piece aborts the whole file (nothing at the path, no temporary left). */
static void test_tokfile_writer(void) {
    static TokWriter w;
    Err err = {{0}};
    const char *p = tmp_path("stream.tok");
    int32_t a[] = {1, 2, 3}, b[] = {151000, 7}, bad[] = {5, 151669};
    CHECK(tokfile_writer_open(&w, p, 1, 4, 151669, &err) == 0, "%s", err.msg);
    CHECK(access(p, F_OK) != 0, "nothing at the path before commit");
    CHECK(tokfile_writer_put(&w, a, 3, &err) == 0 && tokfile_writer_put(&w, b, 2, &err) == 0, "%s", err.msg);
    CHECK(tokfile_writer_commit(&w, &err) == 0, "%s", err.msg);
    CHECK(tokfile_writer_commit(&w, &err) != 0, "a second commit is refused");
    TokFile f;
    CHECK(tokfile_load(&f, p, 151669, &err) == 0, "%s", err.msg);
    CHECK(f.n_tokens == 5 && f.tokens[0] == 1 && f.tokens[3] == 151000 && f.tokens[4] == 7, "pieces in order");
    tokfile_free(&f);

    const char *q = tmp_path("stream-bad.tok");
    CHECK(tokfile_writer_open(&w, q, 0, 2, 32000, &err) == 0, "%s", err.msg);
    CHECK(tokfile_writer_put(&w, a, 3, &err) == 0, "%s", err.msg);
    CHECK(tokfile_writer_put(&w, bad, 2, &err) != 0, "id >= vocab in a later piece");
    CHECK(has(err.msg, q) && has(err.msg, "token 4") && has(err.msg, "151669"), "message numbers the id in the file: %s",
          err.msg);
    tokfile_writer_abort(&w);
    tokfile_writer_abort(&w); /* twice is harmless */
    CHECK(access(q, F_OK) != 0 && tmp_dir_count(".tmp.") == 0, "aborted: no file, no temporary");
    CHECK(tokfile_writer_open(&w, q, 0, 4, 0, &err) != 0 && has(err.msg, "raw"), "raw with 4-byte ids: %s", err.msg);
    CHECK(access(q, F_OK) != 0 && tmp_dir_count(".tmp.") == 0, "refused before creating anything");
}

static void test_tokfile_large(void) {
    /* Enough tokens to cross the writer's chunk size several times. */
    size_t n = 100003;
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)((i * 2654435761u) % 151669);
    const char *p = tmp_path("large.tok");
    Err err = {{0}};
    CHECK(tokfile_save(p, ids, n, 1, 4, 151669, &err) == 0, "%s", err.msg);
    TokFile f;
    CHECK(tokfile_load(&f, p, 151669, &err) == 0, "%s", err.msg);
    CHECK(f.n_tokens == n && memcmp(f.tokens, ids, n * sizeof *ids) == 0, "large 4-byte round trip");
    tokfile_free(&f);
    for (size_t i = 0; i < n; i++) ids[i] %= 65536;
    CHECK(tokfile_save(p, ids, n, 0, 2, 0, &err) == 0, "%s", err.msg);
    CHECK(tokfile_load(&f, p, 0, &err) == 0, "%s", err.msg);
    CHECK(f.n_tokens == n && memcmp(f.tokens, ids, n * sizeof *ids) == 0, "large 2-byte round trip");
    tokfile_free(&f);
    free(ids);
}

/* ---------------------------------------------------------------- loader */

/* tokens[i] = i, so a token's value is its position in the stream. */
static int32_t *iota(size_t n) {
    int32_t *t = malloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)i;
    return t;
}

/* Row b of (inputs, targets) is the window starting at `start`. */
static int row_is_window(const int32_t *inputs, const int32_t *targets, int T, int b, long start) {
    for (int t = 0; t < T; t++)
        if (inputs[b * T + t] != start + t || targets[b * T + t] != start + t + 1) return 0;
    return 1;
}

static void test_loader_sequential(void) {
    enum { N = 100, B = 3, T = 8 };
    int32_t *tok = iota(N);
    Loader ld;
    Err err = {{0}};
    CHECK(loader_init(&ld, tok, N, 0.0, B, T, ORDER_SEQUENTIAL, 1, "seq.bin", &err) == 0, "%s", err.msg);
    CHECK(ld.n_train == N && ld.n_val == 0, "split %zu/%zu", ld.n_train, ld.n_val);
    /* W = (100 - 1) / 8 = 12 windows; the last reads [88, 97). Row r reads window r % 12. */
    int32_t in[B * T], tg[B * T];
    for (int step = 0; step < 10; step++) {
        loader_next_train(&ld, in, tg);
        for (int b = 0; b < B; b++) {
            long r = (long)step * B + b;
            long start = (r % 12) * T;
            CHECK(row_is_window(in, tg, T, b, start), "step %d row %d: expected window at %ld, found input %d", step,
                  b, start, in[b * T]);
        }
    }
    CHECK(ld.state.rows == 30, "rows %llu", (unsigned long long)ld.state.rows);

    /* Exactly one window: every row reads [0, T+1). */
    CHECK(loader_init(&ld, tok, T + 1, 0.0, B, T, ORDER_SEQUENTIAL, 1, "seq.bin", &err) == 0, "%s", err.msg);
    loader_next_train(&ld, in, tg);
    loader_next_train(&ld, in, tg);
    for (int b = 0; b < B; b++) CHECK(row_is_window(in, tg, T, b, 0), "single window row %d", b);

    /* With a validation split no training window reaches it: n_val = 20, n_train = 80, W = 9. */
    CHECK(loader_init(&ld, tok, N, 0.2, B, T, ORDER_SEQUENTIAL, 1, "seq.bin", &err) == 0, "%s", err.msg);
    CHECK(ld.n_train == 80 && ld.n_val == 20, "split %zu/%zu", ld.n_train, ld.n_val);
    for (int step = 0; step < 7; step++) {
        loader_next_train(&ld, in, tg);
        for (int b = 0; b < B; b++) {
            long r = (long)step * B + b;
            CHECK(row_is_window(in, tg, T, b, (r % 9) * T), "step %d row %d", step, b);
            CHECK(tg[b * T + T - 1] < 80, "target %d crosses into validation", tg[b * T + T - 1]);
        }
    }
    free(tok);
}

static void test_loader_random(void) {
    enum { N = 1000, B = 4, T = 16 };
    int32_t *tok = iota(N);
    Loader a, b;
    Err err = {{0}};
    CHECK(loader_init(&a, tok, N, 0.1, B, T, ORDER_RANDOM, 42, "r.bin", &err) == 0, "%s", err.msg);
    CHECK(loader_init(&b, tok, N, 0.1, B, T, ORDER_RANDOM, 42, "r.bin", &err) == 0, "%s", err.msg);
    CHECK(a.n_train == 900, "n_train %zu", a.n_train);
    int32_t ia[B * T], ta[B * T], ib[B * T], tb[B * T];
    int differ_within = 0;
    for (int step = 0; step < 200; step++) {
        loader_next_train(&a, ia, ta);
        loader_next_train(&b, ib, tb);
        CHECK(memcmp(ia, ib, sizeof ia) == 0 && memcmp(ta, tb, sizeof ta) == 0, "same seed, same batch (step %d)",
              step);
        for (int r = 0; r < B; r++) {
            long start = ia[r * T];
            CHECK(start >= 0 && start <= 900 - T - 1, "offset %ld outside [0, %d]", start, 900 - T - 1);
            CHECK(row_is_window(ia, ta, T, r, start), "row %d is not a contiguous window", r);
            if (r > 0 && ia[r * T] != ia[0]) differ_within = 1;
        }
    }
    CHECK(differ_within, "random rows vary");
    CHECK(a.state.rows == 200 * B, "rows counted in random order too");

    Loader c;
    CHECK(loader_init(&c, tok, N, 0.1, B, T, ORDER_RANDOM, 43, "r.bin", &err) == 0, "%s", err.msg);
    CHECK(loader_init(&a, tok, N, 0.1, B, T, ORDER_RANDOM, 42, "r.bin", &err) == 0, "%s", err.msg);
    loader_next_train(&a, ia, ta);
    loader_next_train(&c, ib, tb);
    CHECK(memcmp(ia, ib, sizeof ia) != 0, "another seed gives another batch");

    /* Offsets cover the whole range [0, n_train - T - 1], both ends included. */
    Loader d;
    CHECK(loader_init(&d, tok, T + 3, 0.0, 1, T, ORDER_RANDOM, 7, "r.bin", &err) == 0, "%s", err.msg);
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < 200; i++) {
        int32_t in1[T], tg1[T];
        loader_next_train(&d, in1, tg1);
        CHECK(in1[0] >= 0 && in1[0] <= 2, "offset %d", in1[0]);
        if (in1[0] >= 0 && in1[0] <= 2) seen[in1[0]] = 1;
    }
    CHECK(seen[0] && seen[1] && seen[2], "offsets 0, 1, 2 all drawn");
    free(tok);
}

/* A loader rebuilt from a copy of the state continues exactly where the first one was. */
static void check_resume(LoaderOrder order) {
    enum { N = 500, B = 3, T = 10 };
    int32_t *tok = iota(N);
    Loader a, fresh;
    Err err = {{0}};
    CHECK(loader_init(&a, tok, N, 0.1, B, T, order, 1234, "s.bin", &err) == 0, "%s", err.msg);
    int32_t ia[B * T], ta[B * T], ib[B * T], tb[B * T];
    for (int i = 0; i < 17; i++) loader_next_train(&a, ia, ta);
    LoaderState saved = a.state;
    /* The fresh loader is seeded differently: only the copied state may matter. */
    CHECK(loader_init(&fresh, tok, N, 0.1, B, T, order, 999, "s.bin", &err) == 0, "%s", err.msg);
    fresh.state = saved;
    for (int i = 0; i < 40; i++) {
        loader_next_train(&a, ia, ta);
        loader_next_train(&fresh, ib, tb);
        CHECK(memcmp(ia, ib, sizeof ia) == 0 && memcmp(ta, tb, sizeof ta) == 0, "order %d: batch %d after resume",
              (int)order, i);
    }
    CHECK(memcmp(&a.state, &fresh.state, sizeof a.state) == 0, "states agree");
    free(tok);
}

static void test_loader_resume(void) {
    check_resume(ORDER_RANDOM);
    check_resume(ORDER_SEQUENTIAL);
}

static void test_loader_validation(void) {
    enum { N = 1000, B = 4, T = 16 };
    int32_t *tok = iota(N);
    Loader ld;
    Err err = {{0}};
    CHECK(loader_init(&ld, tok, N, 0.25, B, T, ORDER_RANDOM, 5, "v.bin", &err) == 0, "%s", err.msg);
    CHECK(ld.n_train == 750 && ld.n_val == 250, "split %zu/%zu", ld.n_train, ld.n_val);
    size_t W = loader_val_windows(&ld);
    CHECK(W == (250 - 1) / T, "val windows %zu, expected %d", W, (250 - 1) / T);
    int32_t in[B * T], tg[B * T], in2[B * T], tg2[B * T];
    for (size_t w = 0; w + B <= W; w += B) {
        loader_val_batch(&ld, w, B, in, tg);
        for (int b = 0; b < B; b++) {
            long start = 750 + (long)(w + (size_t)b) * T;
            CHECK(row_is_window(in, tg, T, b, start), "val window %zu", w + (size_t)b);
        }
    }
    /* The last window is inside the split; a partial batch fills only n rows. */
    memset(in, 0xAB, sizeof in);
    loader_val_batch(&ld, W - 2, 2, in, tg);
    CHECK(row_is_window(in, tg, T, 1, 750 + (long)(W - 1) * T), "last window");
    CHECK(tg[T + T - 1] < N, "last target %d inside the data", tg[T + T - 1]);
    CHECK(in[2 * T] == (int32_t)0xABABABAB, "rows beyond n untouched");

    /* Validation is fixed: training draws do not move it. */
    loader_val_batch(&ld, 0, B, in, tg);
    for (int i = 0; i < 5; i++) loader_next_train(&ld, in2, tg2);
    loader_val_batch(&ld, 0, B, in2, tg2);
    CHECK(memcmp(in, in2, sizeof in) == 0 && memcmp(tg, tg2, sizeof tg) == 0, "validation windows fixed");

    /* No split, no windows; a split that rounds down to 0 tokens is no split. */
    CHECK(loader_init(&ld, tok, N, 0.0, B, T, ORDER_RANDOM, 5, "v.bin", &err) == 0 && loader_val_windows(&ld) == 0,
          "val_frac 0");
    CHECK(loader_init(&ld, tok, 50, 0.01, B, T, ORDER_RANDOM, 5, "v.bin", &err) == 0 && ld.n_val == 0 &&
              loader_val_windows(&ld) == 0,
          "floor(50 * 0.01) = 0: %s", err.msg);
    /* Exactly T+1 validation tokens: one window. */
    CHECK(loader_init(&ld, tok, 170, 0.1, B, T, ORDER_RANDOM, 5, "v.bin", &err) == 0, "%s", err.msg);
    CHECK(ld.n_val == 17 && loader_val_windows(&ld) == 1, "n_val %zu windows %zu", ld.n_val, loader_val_windows(&ld));
    free(tok);
}

static void test_loader_errors(void) {
    enum { T = 16 };
    int32_t *tok = iota(1000);
    Loader ld;
    Err err = {{0}};
    CHECK(loader_init(&ld, tok, T, 0.0, 2, T, ORDER_SEQUENTIAL, 1, "short.bin", &err) != 0, "T tokens are too few");
    CHECK(has(err.msg, "short.bin") && has(err.msg, "shorter than one sequence") && has(err.msg, "17") &&
              has(err.msg, "found 16"),
          "message: %s", err.msg);
    CHECK(loader_init(&ld, tok, T + 1, 0.0, 2, T, ORDER_SEQUENTIAL, 1, "ok.bin", &err) == 0, "T+1 is enough");

    /* floor(100 * 0.1) = 10 validation tokens < T+1. */
    CHECK(loader_init(&ld, tok, 100, 0.1, 2, T, ORDER_RANDOM, 1, "val.bin", &err) != 0, "short validation split");
    CHECK(has(err.msg, "val.bin") && has(err.msg, "validation") && has(err.msg, "17") && has(err.msg, "found 10"),
          "message: %s", err.msg);
    /* The validation split fits but leaves too little to train on. */
    CHECK(loader_init(&ld, tok, 40, 0.6, 2, T, ORDER_RANDOM, 1, "train.bin", &err) != 0, "short training split");
    CHECK(has(err.msg, "train.bin") && has(err.msg, "training") && has(err.msg, "found 16"), "message: %s", err.msg);

    CHECK(loader_init(&ld, tok, 1000, 1.0, 2, T, ORDER_RANDOM, 1, "f.bin", &err) != 0 && has(err.msg, "val_frac"),
          "val_frac 1: %s", err.msg);
    CHECK(loader_init(&ld, tok, 1000, -0.1, 2, T, ORDER_RANDOM, 1, "f.bin", &err) != 0 && has(err.msg, "val_frac"),
          "val_frac -0.1: %s", err.msg);
    CHECK(loader_init(&ld, tok, 1000, NAN, 2, T, ORDER_RANDOM, 1, "f.bin", &err) != 0 && has(err.msg, "val_frac"),
          "val_frac NaN: %s", err.msg);
    CHECK(loader_init(&ld, tok, 1000, 0.0, 0, T, ORDER_RANDOM, 1, "f.bin", &err) != 0, "B = 0");
    CHECK(loader_init(&ld, tok, 1000, 0.0, 2, 0, ORDER_RANDOM, 1, "f.bin", &err) != 0, "T = 0");
    free(tok);
}

/* The documents of text in format f, each as "[text]", concatenated into out. */
static void split_all(DocFormat f, const char *text, char *out, size_t cap) {
    DocList d = {0};
    Err err = {{0}};
    out[0] = '\0';
    CHECK(doc_list_split(&d, f, text, strlen(text), &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < d.n; i++) {
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "[%.*s]", (int)d.len[i], d.start[i]);
    }
    doc_list_free(&d);
}

static void test_documents_split(void) {
    const char *text = "a b\r\n\n  \t\nc\nd\r\n\n\ne";
    char out[256];
    split_all(DOC_PARAGRAPHS, text, out, sizeof out);
    CHECK(!strcmp(out, "[a b][c\nd][e]"), "paragraphs: %s", out);
    split_all(DOC_LINES, text, out, sizeof out);
    CHECK(!strcmp(out, "[a b][  \t][c][d][e]"), "lines (empty ones left out): %s", out);
    split_all(DOC_FILE, text, out, sizeof out);
    CHECK(!strcmp(out + 1, "a b\r\n\n  \t\nc\nd\r\n\n\ne]") && out[0] == '[', "file: %s", out);
    split_all(DOC_PARAGRAPHS, "\n \n", out, sizeof out);
    CHECK(out[0] == '\0', "only blank lines: %s", out);
    split_all(DOC_FILE, "", out, sizeof out);
    CHECK(out[0] == '\0', "an empty file: %s", out);
    /* lines: empty lines are documents to doc_split_next (the commands count or skip them) */
    size_t pos = 0, len;
    long lines = 0;
    const char *s;
    int n = 0;
    while (doc_split_next(DOC_LINES, "x\n\ny", 4, &pos, &lines, &s, &len)) n++;
    CHECK(n == 3 && lines == 3, "three lines, one empty: %d documents, %ld lines", n, lines);
}

static void test_documents_formats(void) {
    Err err = {{0}};
    DocFormat f;
    unsigned tok = DOC_FORMAT_BIT(DOC_LINES) | DOC_FORMAT_BIT(DOC_FILE) | DOC_FORMAT_BIT(DOC_JSONL);
    unsigned ft = DOC_FORMAT_BIT(DOC_PARAGRAPHS) | DOC_FORMAT_BIT(DOC_LINES) | DOC_FORMAT_BIT(DOC_FILE);
    CHECK(doc_format_parse("--format", "jsonl", tok, &f, &err) == 0 && f == DOC_JSONL, "jsonl");
    CHECK(doc_format_parse("--format", "paragraphs", tok, &f, &err) != 0 &&
              !strcmp(err.msg, "--format: expected lines, file or jsonl, found 'paragraphs'"),
          "%s", err.msg);
    CHECK(doc_format_parse("--format", "jsonl", ft, &f, &err) != 0 &&
              !strcmp(err.msg, "--format: expected paragraphs, lines or file, found 'jsonl'"),
          "%s", err.msg);
    CHECK(!strcmp(doc_format_name(DOC_PARAGRAPHS), "paragraphs") && !strcmp(doc_format_name(DOC_FILE), "file"),
          "names");
}

/* The reader over two files: documents in order across the files, JSON lines' texts in the
** arena, errors naming file and line. */
static void test_documents_reader(void) {
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s", tmp_path("docs-a.txt"));
    snprintf(b, sizeof b, "%s", tmp_path("docs-b.txt"));
    const char *ta = "one\r\ntwo\n", *tb = "{\"text\": \"x\"}\n\n{\"t\": 1}\n";
    write_bytes(a, ta, strlen(ta));
    write_bytes(b, tb, strlen(tb));
    const char *paths[2] = {a, b};
    Err err = {{0}};
    DocReader r;
    DocArena arena = {0};
    DocRef d;
    char out[256] = "";
    doc_reader_init(&r, paths, 2, DOC_LINES, "text", NULL, NULL);
    while (doc_reader_next(&r, &arena, &d, &err) == 1) {
        size_t used = strlen(out);
        snprintf(out + used, sizeof out - used, "[%.*s]", (int)d.len, d.ptr ? d.ptr : arena.p + d.off);
    }
    doc_reader_free(&r);
    CHECK(!strcmp(out, "[one][two][{\"text\": \"x\"}][][{\"t\": 1}]"), "lines: %s", out);
    CHECK(r.done == strlen(ta) + strlen(tb), "bytes read: %llu", (unsigned long long)r.done);
    doc_reader_init(&r, paths + 1, 1, DOC_JSONL, "text", NULL, NULL);
    CHECK(doc_reader_next(&r, &arena, &d, &err) == 1 && !d.ptr && d.len == 1 && arena.p[d.off] == 'x', "jsonl text");
    CHECK(doc_reader_next(&r, &arena, &d, &err) == -1 && has(err.msg, "docs-b.txt:3: field \"text\""), "%s",
          err.msg);
    doc_reader_free(&r);
    free(arena.p);
}

int main(void) {
    tmp_dir_make("data");
    RUN(test_tokfile_raw_round_trip);
    RUN(test_tokfile_anetok_round_trip);
    RUN(test_tokfile_raw_errors);
    RUN(test_tokfile_anetok_errors);
    RUN(test_tokfile_save_errors);
    RUN(test_tokfile_writer);
    RUN(test_tokfile_large);
    RUN(test_loader_sequential);
    RUN(test_loader_random);
    RUN(test_loader_resume);
    RUN(test_loader_validation);
    RUN(test_loader_errors);
    RUN(test_documents_split);
    RUN(test_documents_formats);
    RUN(test_documents_reader);
    tmp_dir_remove();
    return TEST_SUMMARY();
}
