/*
** fileio.c — atomic writes, whole-file reads, read-only maps, CRC-32 (see fileio.h).
*/
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* dir (the directory part of path, "." if none) and the file name after it, in buffers of
** FILE_PATH_MAX bytes. -1 if path does not fit. */
static int split_path(const char *path, char *dir, const char **name) {
    if (strlen(path) >= FILE_PATH_MAX) return -1;
    const char *slash = strrchr(path, '/');
    *name = slash ? slash + 1 : path;
    if (!slash) snprintf(dir, FILE_PATH_MAX, ".");
    else if (slash == path) snprintf(dir, FILE_PATH_MAX, "/");
    else snprintf(dir, FILE_PATH_MAX, "%.*s", (int)(slash - path), path);
    return 0;
}

/* 1 if name is "<base>.tmp.<pid>" with pid a positive decimal number without leading zeros;
** *pid gets it. */
static int stale_temp_pid(const char *name, const char *base, long *pid) {
    size_t bl = strlen(base);
    if (strncmp(name, base, bl) != 0 || strncmp(name + bl, ".tmp.", 5) != 0) return 0;
    const char *digits = name + bl + 5;
    size_t nd = strspn(digits, "0123456789");
    if (nd == 0 || nd > 9 || digits[nd] != '\0' || digits[0] == '0') return 0;
    *pid = strtol(digits, NULL, 10);
    return 1;
}

int atomic_file_remove_stale(const char *path) {
    char dir[FILE_PATH_MAX];
    const char *base;
    if (split_path(path, dir, &base) != 0 || !*base) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid;
        if (!stale_temp_pid(e->d_name, base, &pid)) continue;
        /* A live process (other than this one) may be writing it: only the dead's are stale.
        ** EPERM means the process exists (another user's). */
        if ((pid_t)pid != getpid() && !(kill((pid_t)pid, 0) != 0 && errno == ESRCH)) continue;
        char full[FILE_PATH_MAX + 300];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (unlink(full) == 0) removed++;
    }
    closedir(d);
    return removed;
}

int atomic_file_open(AtomicFile *f, const char *path, Err *err) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path)
        return err_set(err, "%s: expected a path of at most %d bytes, found %zu", path, FILE_PATH_MAX - 1, strlen(path));
    atomic_file_remove_stale(path);
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
    if (!f->failed && ferror(f->fp)) { /* a caller's own fprintf to f->fp failed */
        atomic_file_abort(f);
        return err_set(err, "%s: not written (a write failed)", f->path);
    }
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

int dir_ensure_all(const char *path, Err *err) {
    if (path_is_dir(path)) return 0;
    char copy[FILE_PATH_MAX];
    if (strlen(path) >= sizeof copy)
        return err_set(err, "%s: expected a path of at most %d bytes, found %zu", path, FILE_PATH_MAX - 1, strlen(path));
    snprintf(copy, sizeof copy, "%s", path);
    for (char *p = copy + 1;; p++) { /* each ancestor, then path itself */
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (!path_is_dir(copy) && mkdir(copy, 0755) != 0 && errno != EEXIST)
            return err_set(err, "%s: cannot create directory %s: %s", path, copy, strerror(errno));
        *p = c;
        if (c == '\0') break;
    }
    if (!path_is_dir(path)) return err_set(err, "%s: cannot create directory: a file of that name exists", path);
    return 0;
}

int dir_ensure_parent(const char *path, Err *err) {
    char dir[FILE_PATH_MAX];
    const char *name;
    if (split_path(path, dir, &name) != 0)
        return err_set(err, "%s: expected a path of at most %d bytes, found %zu", path, FILE_PATH_MAX - 1, strlen(path));
    return dir_ensure_all(dir, err);
}

/* The nearest existing ancestor of path must be a directory we may write into. */
static int check_ancestor(const char *path, const char *what, Err *err) {
    char dir[FILE_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    struct stat st;
    for (;;) {
        char *slash = strrchr(dir, '/');
        while (slash && slash > dir && slash[1] == '\0') { /* "a/b/" is "a/b" */
            *slash = '\0';
            slash = strrchr(dir, '/');
        }
        if (!slash) snprintf(dir, sizeof dir, ".");
        else if (slash == dir) dir[1] = '\0';
        else *slash = '\0';
        if (stat(dir, &st) == 0) break;
        if (errno != ENOENT && errno != ENOTDIR)
            return err_set(err, "%s %s: cannot use directory %s: %s", what, path, dir, strerror(errno));
        if (!strcmp(dir, ".") || !strcmp(dir, "/"))
            return err_set(err, "%s %s: cannot use directory %s: %s", what, path, dir, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return err_set(err, "%s %s: expected %s to be a directory, found a file", what, path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return err_set(err, "%s %s: cannot write into directory %s: %s", what, path, dir, strerror(errno));
    return 0;
}

static int check_path_length(const char *path, size_t room, const char *what, Err *err) {
    size_t n = strlen(path);
    if (n == 0) return err_set(err, "%s: expected a path, found an empty one", what);
    if (n + room >= FILE_PATH_MAX)
        return err_set(err, "%s %.48s...: expected a path of at most %zu bytes, found %zu", what, path,
                       FILE_PATH_MAX - 1 - room, n);
    return 0;
}

int output_file_check(const char *path, const char *what, Err *err) {
    if (check_path_length(path, 0, what, err) != 0) return -1;
    size_t n = strlen(path);
    const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
    if (path[n - 1] == '/' || !strcmp(name, ".") || !strcmp(name, ".."))
        return err_set(err, "%s %s: expected a file, found a directory name", what, path);
    if (strlen(name) > FILE_NAME_MAX)
        return err_set(err, "%s %.48s...: expected a file name of at most %d bytes (the temporary file adds "
                       "\".tmp.<pid>\"), found %zu", what, path, FILE_NAME_MAX, strlen(name));
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return err_set(err, "%s %s: expected a file, found a directory (give a file path, inside it or elsewhere)",
                           what, path);
        if (!S_ISREG(st.st_mode))
            return err_set(err, "%s %s: expected a regular file (it is replaced when written), found a device, pipe "
                           "or socket", what, path);
        return check_ancestor(path, what, err);
    }
    if (errno != ENOENT && errno != ENOTDIR) return err_set(err, "%s %s: cannot check: %s", what, path, strerror(errno));
    return check_ancestor(path, what, err);
}

int output_dir_check(const char *path, const char *what, const char *longest_child, Err *err) {
    if (check_path_length(path, 1 + strlen(longest_child), what, err) != 0) return -1;
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return err_set(err, "%s %s: expected a directory, found a file", what, path);
        if (access(path, W_OK | X_OK) != 0)
            return err_set(err, "%s %s: cannot write into this directory: %s", what, path, strerror(errno));
        return 0;
    }
    if (errno != ENOENT && errno != ENOTDIR) return err_set(err, "%s %s: cannot check: %s", what, path, strerror(errno));
    return check_ancestor(path, what, err);
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
