/*
** common.c — scratch files and input parts for the harnesses (see fuzz_common.h).
*/
#include "fuzz_common.h"

#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"

static char scratch[512];

static void remove_scratch(void) {
    if (scratch[0]) path_remove_tree(scratch);
}

const char *fuzz_dir(void) {
    if (scratch[0]) return scratch;
    const char *tmp = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/anetrain-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(scratch)) {
        perror("mkdtemp");
        abort();
    }
    atexit(remove_scratch);
    return scratch;
}

const char *fuzz_path(const char *name) {
    static char bufs[4][1024];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", fuzz_dir(), name);
    return b;
}

void fuzz_write(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp || (n && fwrite(data, 1, n, fp) != n) || fclose(fp) != 0) {
        perror(path);
        abort();
    }
}

void fuzz_clean(void) {
    if (!scratch[0]) return;
    path_remove_tree(scratch);
    if (mkdir(scratch, 0700) != 0) {
        perror(scratch);
        abort();
    }
}

int fuzz_split(const uint8_t *data, size_t n, const uint8_t **part, size_t *len, int max) {
    const size_t sep = strlen(FUZZ_PART_SEP);
    int k = 0;
    size_t start = 0;
    while (k < max) {
        const uint8_t *hit = k + 1 < max ? (const uint8_t *)mem_find(data + start, n - start, FUZZ_PART_SEP, sep) : NULL;
        size_t end = hit ? (size_t)(hit - data) : n;
        part[k] = data + start;
        len[k] = end - start;
        k++;
        if (!hit) break;
        start = end + sep;
    }
    return k;
}

int fuzz_same_bits(const void *a, const void *b, size_t bytes) {
    if (bytes == 0) return 1;
    if (!a || !b) return a == b;
    return memcmp(a, b, bytes) == 0;
}

int fuzz_rejected(const char *what, const char *msg) {
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "%s: refused: %s\n", what, msg);
    return 0;
}
