/*
** test_tmp.h — one scratch directory per test binary: tmp_dir_make("tag") creates
** $TMPDIR/anetrain-test-tag-XXXXXX (or under /tmp), tmp_path(name) names a file in it, and
** tmp_dir_remove() deletes it with everything inside.
*/
#ifndef ANETRAIN_TEST_TMP_H
#define ANETRAIN_TEST_TMP_H

#include <stdio.h>
#include <stdlib.h>

#include "util/fileio.h"

static char tmp_dir[512];

static inline void tmp_dir_make(const char *tag) {
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/anetrain-test-%s-XXXXXX", base && base[0] ? base : "/tmp", tag);
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        exit(2);
    }
}

static inline void tmp_dir_remove(void) { path_remove_tree(tmp_dir); }

/* tmp_dir/name; eight rotating buffers so one call can take several paths. */
static inline const char *tmp_path(const char *name) {
    static char p[8][1024];
    static int next;
    char *s = p[next++ % 8];
    snprintf(s, 1024, "%s/%s", tmp_dir, name);
    return s;
}

#endif
