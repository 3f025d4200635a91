/*
** tool_milcheck.c — checks MIL programs written to disk (by `anetrain ane-plan --dump`) with
** the emulator's parser and checker, as a device would before compiling: for tests/test_cli.sh.
**
**   tool_milcheck [--limits strict|probed] KERNEL_DIR...
**
** Each KERNEL_DIR holds model.mil and, when the program has constants, weights/<file> (the
** framework's temp-dir layout, docs/ane-facts.md §1.5); every file in weights/ is given to the checker as
** "@model_path/weights/<file>". Prints one line per program, "ok DIR [1, C, 1, W] -> [1, C, 1, S]"
** or "FAIL DIR: <the checker's message>", and exits 1 if any program fails.
*/
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ane/device.h"
#include "backend/ane/emu/mil.h"
#include "util/err.h"
#include "util/fileio.h"

enum { MAX_BLOBS = 64 };

static int check_dir(const char *dir, AneLimits limits) {
    char path[2048];
    Err err = {{0}};
    snprintf(path, sizeof path, "%s/model.mil", dir);
    size_t size = 0;
    char *mil = file_read_all(path, &size, &err);
    if (!mil) {
        printf("FAIL %s: %s\n", dir, err.msg);
        return 1;
    }
    AneBlob blobs[MAX_BLOBS];
    char *paths[MAX_BLOBS];
    int nb = 0, rc = 0;
    snprintf(path, sizeof path, "%s/weights", dir);
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        if (nb == MAX_BLOBS) {
            printf("FAIL %s: more than %d weight files\n", dir, MAX_BLOBS);
            rc = 1;
            break;
        }
        char file[2400];
        snprintf(file, sizeof file, "%s/weights/%s", dir, e->d_name);
        size_t n = 0;
        char *data = file_read_all(file, &n, &err);
        if (!data) {
            printf("FAIL %s: %s\n", dir, err.msg);
            rc = 1;
            break;
        }
        size_t plen = strlen(e->d_name) + sizeof "@model_path/weights/";
        paths[nb] = malloc(plen);
        if (!paths[nb]) abort();
        snprintf(paths[nb], plen, "@model_path/weights/%s", e->d_name);
        blobs[nb] = (AneBlob){paths[nb], data, n};
        nb++;
    }
    if (d) closedir(d);
    if (rc == 0) {
        MilCheckOptions co = {0, 0, limits, NULL};
        AneShape in, out;
        if (mil_check_text(mil, blobs, nb, &co, &in, &out, &err) == 0) {
            printf("ok   %s [1, %d, 1, %d] -> [1, %d, 1, %d] (%s)\n", dir, in.channels, in.spatial, out.channels,
                   out.spatial, ane_limits_name(limits));
        } else {
            printf("FAIL %s: %s\n", dir, err.msg);
            rc = 1;
        }
    }
    for (int i = 0; i < nb; i++) {
        free(paths[i]);
        free((void *)blobs[i].data);
    }
    free(mil);
    return rc;
}

int main(int argc, char **argv) {
    AneLimits limits = ANE_LIMITS_STRICT;
    int first = 1, bad = 0;
    Err err = {{0}};
    if (argc > 2 && strcmp(argv[1], "--limits") == 0) {
        if (ane_limits_parse("--limits", argv[2], &limits, &err) != 0) {
            fprintf(stderr, "tool_milcheck: %s\n", err.msg);
            return 2;
        }
        first = 3;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: tool_milcheck [--limits strict|probed] KERNEL_DIR...\n");
        return 2;
    }
    for (int i = first; i < argc; i++) bad += check_dir(argv[i], limits);
    return bad ? 1 : 0;
}
