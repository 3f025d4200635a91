/*
** fileio.c — atomic writes, whole-file reads, read-only maps, CRC-32 (see fileio.h).
*/
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

int atomic_file_open(AtomicFile *f, const char *path, Err *err) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) return err_set(err, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    snprintf(f->tmp_path, sizeof f->tmp_path, "%s.tmp.%ld", path, (long)getpid());
    f->fp = fopen(f->tmp_path, "wb");
    if (!f->fp) return err_set(err, "%s: cannot create temporary file %s: %s", path, f->tmp_path, strerror(errno));
    return 0;
}

int atomic_file_write(AtomicFile *f, const void *data, size_t n, Err *err) {
    if (f->failed) return -1;
    if (n && fwrite(data, 1, n, f->fp) != n) {
        f->failed = 1;
        return err_set(err, "%s: write failed: %s", f->path, strerror(errno));
    }
    f->crc = crc32_update(f->crc, data, n);
    return 0;
}

void atomic_file_crc_reset(AtomicFile *f) { f->crc = 0; }

void atomic_file_abort(AtomicFile *f) {
    if (f->fp) fclose(f->fp);
    f->fp = NULL;
    if (f->tmp_path[0]) unlink(f->tmp_path);
    f->tmp_path[0] = '\0';
}

static void fsync_parent_dir(const char *path) {
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", path);
    int fd = open(dirname(copy), O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int atomic_file_commit(AtomicFile *f, Err *err) {
    if (f->failed) {
        atomic_file_abort(f);
        return err_set(err, "%s: not written (an earlier write failed)", f->path);
    }
    if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0) {
        int e = errno;
        atomic_file_abort(f);
        return err_set(err, "%s: cannot flush to disk: %s", f->path, strerror(e));
    }
    if (fclose(f->fp) != 0) {
        f->fp = NULL;
        int e = errno;
        atomic_file_abort(f);
        return err_set(err, "%s: cannot close: %s", f->path, strerror(e));
    }
    f->fp = NULL;
    if (rename(f->tmp_path, f->path) != 0) {
        int e = errno;
        atomic_file_abort(f);
        return err_set(err, "%s: cannot rename temporary file into place: %s", f->path, strerror(e));
    }
    f->tmp_path[0] = '\0';
    fsync_parent_dir(f->path);
    return 0;
}

char *file_read_all(const char *path, size_t *size, Err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        err_set(err, "%s: not a regular file", path);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    char *buf = err_malloc(n + 1, path, err);
    if (!buf) {
        fclose(fp);
        return NULL;
    }
    if (fread(buf, 1, n, fp) != n) {
        fclose(fp);
        free(buf);
        err_set(err, "%s: read failed", path);
        return NULL;
    }
    fclose(fp);
    buf[n] = '\0';
    if (size) *size = n;
    return buf;
}

int file_map(MappedFile *m, const char *path, Err *err) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, "%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size == 0) {
        close(fd);
        m->data = NULL;
        return 0;
    }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p != MAP_FAILED) {
        m->data = p;
        m->mapped = 1;
        return 0;
    }
    size_t n;
    char *buf = file_read_all(path, &n, err);
    if (!buf) return -1;
    m->data = (const uint8_t *)buf;
    m->size = n;
    return 0;
}

void file_unmap(MappedFile *m) {
    if (m->mapped) munmap((void *)m->data, m->size);
    else free((void *)m->data);
    memset(m, 0, sizeof *m);
}

int path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int dir_ensure(const char *path, Err *err) {
    if (path_is_dir(path)) return 0;
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return err_set(err, "%s: cannot create directory: %s", path, strerror(errno));
    return 0;
}

int path_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    int rc = 0;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return -1;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            size_t len = strlen(path) + strlen(e->d_name) + 2;
            char *child = malloc(len);
            if (!child) {
                rc = -1;
                continue;
            }
            snprintf(child, len, "%s/%s", path, e->d_name);
            if (path_remove_tree(child) != 0) rc = -1;
            free(child);
        }
        closedir(d);
        if (rmdir(path) != 0) rc = -1;
    } else if (unlink(path) != 0) {
        rc = -1;
    }
    return rc;
}

const void *mem_find(const void *haystack, size_t n, const void *needle, size_t m) {
    if (m == 0) return haystack;
    const unsigned char *h = haystack, *nd = needle;
    for (size_t i = 0; m <= n && i <= n - m; i++) {
        const unsigned char *p = memchr(h + i, nd[0], n - m - i + 1);
        if (!p) return NULL;
        i = (size_t)(p - h);
        if (memcmp(p, nd, m) == 0) return p;
    }
    return NULL;
}

uint32_t crc32_update(uint32_t crc, const void *data, size_t n) {
    /* zlib's crc32 is the standard one, several GB/s; it takes lengths in uInt chunks. */
    const Bytef *p = data;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32((uLong)crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return crc;
}
