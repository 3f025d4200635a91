/*
** test_fileio.c — the file helpers' promises (util/fileio.h, util/err.h): an atomic write
** leaves either the old file or the whole new one; a killed write's stale temporary file is
** removed by the next write of the same path (only that exact name pattern, only for dead
** processes or this one); a file-size limit (RLIMIT_FSIZE, `ulimit -f`) fails the write with
** EFBIG and leaves nothing behind; output paths are checked before any work; a long message
** keeps its reason.
*/
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_tmp.h"
#include "util/err.h"
#include "util/fileio.h"

static void touch(const char *path) {
    FILE *fp = fopen(path, "w");
    if (fp) {
        fputs("stale", fp);
        fclose(fp);
    }
}

/* A pid that belonged to a process that has exited (and was reaped): a child that exits at once. */
static pid_t dead_pid(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    return pid;
}

static int write_all(const char *path, const char *text, Err *err) {
    AtomicFile f;
    if (atomic_file_open(&f, path, err) != 0) return -1;
    if (atomic_file_write(&f, text, strlen(text), err) != 0) {
        atomic_file_abort(&f);
        return -1;
    }
    return atomic_file_commit(&f, err);
}

static void test_stale_temporaries(void) {
    char name[256], target[1024];
    snprintf(target, sizeof target, "%s", tmp_path("model.ckpt")); /* tmp_path's buffers rotate */
    pid_t dead = dead_pid();
    /* ours to remove: a dead process's, and this process's own */
    snprintf(name, sizeof name, "model.ckpt.tmp.%ld", (long)dead);
    char dead_tmp[1024];
    snprintf(dead_tmp, sizeof dead_tmp, "%s", tmp_path(name));
    touch(dead_tmp);
    snprintf(name, sizeof name, "model.ckpt.tmp.%ld", (long)getpid());
    char own_tmp[1024];
    snprintf(own_tmp, sizeof own_tmp, "%s", tmp_path(name));
    touch(own_tmp);
    /* not ours: a live process's (pid 1 always runs), other names, a directory of the pattern */
    const char *keep[] = {"model.ckpt.tmp.1", "model.ckpt.tmp.", "model.ckpt.tmp.12x", "model.ckpt.tmp.0123",
                          "model.ckpt.tmp.-5", "other.ckpt.tmp.999999", "model.ckpt.tmpx.5", "xmodel.ckpt.tmp.5",
                          "model.ckpt.tmp.5.bak", "model.ckpt.tmp.99999999999"};
    int n_keep = (int)(sizeof keep / sizeof keep[0]);
    for (int i = 0; i < n_keep; i++) touch(tmp_path(keep[i]));
    snprintf(name, sizeof name, "model.ckpt.tmp.%ld", (long)dead_pid());
    char dir_tmp[1024];
    snprintf(dir_tmp, sizeof dir_tmp, "%s", tmp_path(name));
    CHECK(mkdir(dir_tmp, 0755) == 0, "mkdir %s", dir_tmp);

    Err err = {{0}};
    CHECK(write_all(target, "new contents", &err) == 0, "%s", err.msg);
    CHECK(!path_exists(dead_tmp), "a dead process's temporary file is removed: %s", dead_tmp);
    CHECK(!path_exists(own_tmp), "this process's own stale temporary file is removed: %s", own_tmp);
    for (int i = 0; i < n_keep; i++) CHECK(path_exists(tmp_path(keep[i])), "kept: %s", keep[i]);
    CHECK(path_is_dir(dir_tmp), "a directory named like a temporary file is kept");
    size_t n;
    char *text = file_read_all(target, &n, &err);
    CHECK(text && !strcmp(text, "new contents"), "the file is written");
    free(text);
    CHECK(atomic_file_remove_stale(target) == 0, "nothing more to remove");
    /* a path in the current directory (no slash) */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof cwd) != NULL, "getcwd");
    CHECK(chdir(tmp_dir) == 0, "chdir");
    snprintf(name, sizeof name, "here.bin.tmp.%ld", (long)dead_pid());
    touch(name);
    CHECK(write_all("here.bin", "x", &err) == 0, "%s", err.msg);
    CHECK(!path_exists(name), "stale temporary of a relative path removed");
    CHECK(chdir(cwd) == 0, "chdir back");
}

/* In a child (the limit is per process): RLIMIT_FSIZE of 64 KiB, SIGXFSZ ignored as main() does;
** a 1 MiB atomic write must fail with EFBIG's message and leave neither file nor temporary. */
static void test_file_size_limit(void) {
    char target[1024];
    snprintf(target, sizeof target, "%s", tmp_path("big.bin"));
    int pipefd[2];
    CHECK(pipe(pipefd) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {64 * 1024, 64 * 1024};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(3);
        static char block[1 << 20];
        memset(block, 'x', sizeof block);
        AtomicFile f;
        Err err = {{0}};
        int rc = atomic_file_open(&f, target, &err);
        if (rc == 0) rc = atomic_file_write(&f, block, sizeof block, &err);
        if (rc == 0) rc = atomic_file_commit(&f, &err);
        else atomic_file_abort(&f);
        if (write(pipefd[1], err.msg, strlen(err.msg) + 1) < 0) _exit(4);
        _exit(rc == 0 ? 0 : 1);
    }
    close(pipefd[1]);
    char msg[ERR_MSG_MAX] = "";
    ssize_t got = read(pipefd[0], msg, sizeof msg - 1);
    msg[got > 0 ? got : 0] = '\0';
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status), "the child was not killed by SIGXFSZ (status %d)", status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1, "the write failed (exit %d)", WEXITSTATUS(status));
    CHECK(strstr(msg, "big.bin") && strstr(msg, strerror(EFBIG)), "message names the file and EFBIG: %s", msg);
    CHECK(!path_exists(target), "no file at the destination");
    char name[64];
    snprintf(name, sizeof name, "big.bin.tmp.%ld", (long)pid);
    CHECK(!path_exists(tmp_path(name)), "no temporary file left");
}

static void test_output_checks(void) {
    Err err = {{0}};
    CHECK(dir_ensure(tmp_path("outdir"), &err) == 0, "%s", err.msg);
    touch(tmp_path("afile"));
    CHECK(output_file_check(tmp_path("new.ckpt"), "--out", &err) == 0, "%s", err.msg);
    CHECK(output_file_check(tmp_path("afile"), "--out", &err) == 0, "an existing file may be replaced: %s", err.msg);
    CHECK(output_file_check(tmp_path("a/b/c/new.ckpt"), "--out", &err) == 0, "missing directories: %s", err.msg);
    CHECK(output_file_check("plain.ckpt", "--out", &err) == 0, "the current directory: %s", err.msg);
    CHECK(output_file_check(tmp_path("outdir"), "--out", &err) == -1 && strstr(err.msg, "--out") &&
              strstr(err.msg, "found a directory"),
          "an existing directory: %s", err.msg);
    CHECK(output_file_check(tmp_path("outdir/"), "--out", &err) == -1 && strstr(err.msg, "directory name"),
          "a trailing slash: %s", err.msg);
    CHECK(output_file_check(tmp_path("afile/x.ckpt"), "--out", &err) == -1 && strstr(err.msg, "afile") &&
              strstr(err.msg, "to be a directory, found a file"),
          "a file where a directory should be: %s", err.msg);
    CHECK(output_file_check("", "--out", &err) == -1 && strstr(err.msg, "empty"), "empty: %s", err.msg);
    CHECK(output_file_check("/dev/null", "--out", &err) == -1 && strstr(err.msg, "regular file"), "a device: %s",
          err.msg);
    char long_path[3000];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[sizeof long_path - 1] = '\0';
    CHECK(output_file_check(long_path, "--out", &err) == -1 && strstr(err.msg, "at most 1023 bytes, found 2999"),
          "too long: %s", err.msg);
    char long_name[600];
    snprintf(long_name, sizeof long_name, "%s/", tmp_dir);
    memset(long_name + strlen(long_name), 'n', 240);
    long_name[strlen(tmp_dir) + 1 + 240] = '\0';
    CHECK(output_file_check(long_name, "--out", &err) == -1 && strstr(err.msg, "file name of at most"),
          "a file name too long for its temporary file: %s", err.msg);
    CHECK(output_dir_check(tmp_path("outdir"), "--out", "adapter_model.safetensors", &err) == 0, "%s", err.msg);
    CHECK(output_dir_check(tmp_path("new/dir"), "--out", "adapter_model.safetensors", &err) == 0, "%s", err.msg);
    CHECK(output_dir_check(tmp_path("afile"), "--out", "x", &err) == -1 && strstr(err.msg, "expected a directory"),
          "a file as a directory: %s", err.msg);
    CHECK(dir_ensure(tmp_path("m/n"), &err) == -1 && strstr(err.msg, "m/n"), "dir_ensure: one level: %s", err.msg);
    CHECK(dir_ensure_all(tmp_path("x/y/z"), &err) == 0 && path_is_dir(tmp_path("x/y/z")), "parents created: %s",
          err.msg);
    CHECK(dir_ensure_all(tmp_path("afile/z"), &err) == -1 && strstr(err.msg, "afile"), "under a file: %s", err.msg);
    CHECK(dir_ensure_parent(tmp_path("p/q/file.bin"), &err) == 0 && path_is_dir(tmp_path("p/q")), "%s", err.msg);
}

static void test_long_messages_keep_the_reason(void) {
    char path[4000];
    memset(path, 'd', sizeof path - 1);
    path[sizeof path - 1] = '\0';
    Err err = {{0}};
    err_set(&err, "%s: cannot create: %s", path, "No space left on device");
    size_t n = strlen(err.msg);
    CHECK(n == ERR_MSG_MAX - 1, "the message fills the buffer (%zu)", n);
    CHECK(strstr(err.msg, " ... ") && !strcmp(err.msg + n - strlen("No space left on device"), "No space left on device"),
          "the reason is kept: ...%s", err.msg + n - 40);
    CHECK(!strncmp(err.msg, "ddd", 3), "the start is kept");
    err_set(&err, "short: %d", 5);
    err_wrap(&err, "--out %s", path);
    n = strlen(err.msg);
    CHECK(n < ERR_MSG_MAX && !strcmp(err.msg + n - strlen(": short: 5"), ": short: 5"), "wrapped: ...%s",
          err.msg + n - 20);
    err_set(&err, "inner");
    err_wrap(&err, "outer %d", 1);
    CHECK(!strcmp(err.msg, "outer 1: inner"), "%s", err.msg);
}

int main(void) {
    tmp_dir_make("fileio");
    RUN(test_stale_temporaries);
    RUN(test_file_size_limit);
    RUN(test_output_checks);
    RUN(test_long_messages_keep_the_reason);
    tmp_dir_remove();
    return TEST_SUMMARY();
}
