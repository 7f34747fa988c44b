/* faultfs: an LD_PRELOAD shim that injects disk faults into a real process's file I/O, for the disk-fault
 * tests of the storage plugins (Tests/PlexusEndToEndTests/RaftLogDiskFaultTests.swift).
 *
 * Build: cc -shared -fPIC -O2 faultfs.c -o libfaultfs.so -ldl
 * Use:   LD_PRELOAD=libfaultfs.so FAULTFS_ROOT=<dir> FAULTFS_CONTROL=<file> plexus serve ...
 *
 * Only files under FAULTFS_ROOT are affected (by the path the descriptor was opened with, read back from
 * /proc/self/fd); every other file, and every call while no rule applies, goes straight to the C library.
 * FAULTFS_ROOT need not exist yet (a stream directory created later); then give it without symbolic links.
 * The control file is read again whenever its modification time or size changes, so a test changes the
 * faults of a running process by rewriting it (a missing or empty file: no faults). One rule per line:
 *
 *     OPERATION FAULT [COUNT]
 *
 * OPERATION: write (write, pwrite, writev, pwritev, pwritev2, fallocate, posix_fallocate), sync (fsync,
 * fdatasync), open (open and openat that create a file), truncate (ftruncate, truncate).
 * FAULT: ENOSPC, EDQUOT or EIO (the call fails with that errno, doing nothing), or short (a write writes
 * about half of what it was given, at least one byte, and returns that count, as a nearly full disk may).
 * COUNT: the rule applies to that many calls, then no more (until the file changes); absent: to every call.
 * Lines starting with '#' are comments.
 *
 * Every injected fault is counted; FAULTFS_LOG (optional) names a file that gets one line per fault.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum op { OP_WRITE, OP_SYNC, OP_OPEN, OP_TRUNCATE, OP_COUNT };
enum fault { FAULT_NONE, FAULT_ERRNO, FAULT_SHORT };

#define MAX_RULES 16

struct rule {
    enum op op;
    enum fault fault;
    int error;
    long remaining; /* < 0: unlimited */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct rule rules[MAX_RULES];
static int rule_count;
static struct timespec control_mtime;
static off_t control_size = -1;
static char root[PATH_MAX];
static char root_resolved[PATH_MAX];
static const char *control;
static const char *log_path;
static int initialized;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_truncate)(const char *, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fallocate64)(int, int, off_t, off_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_posix_fallocate64)(int, off_t, off_t);

static void initialize(void) {
    if (__atomic_load_n(&initialized, __ATOMIC_ACQUIRE)) return;
    pthread_mutex_lock(&lock);
    if (!initialized) {
        real_write = dlsym(RTLD_NEXT, "write");
        real_pwrite = dlsym(RTLD_NEXT, "pwrite");
        real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
        real_writev = dlsym(RTLD_NEXT, "writev");
        real_pwritev = dlsym(RTLD_NEXT, "pwritev");
        real_pwritev64 = dlsym(RTLD_NEXT, "pwritev64");
        real_pwritev2 = dlsym(RTLD_NEXT, "pwritev2");
        real_fsync = dlsym(RTLD_NEXT, "fsync");
        real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
        real_open = dlsym(RTLD_NEXT, "open");
        real_open64 = dlsym(RTLD_NEXT, "open64");
        real_openat = dlsym(RTLD_NEXT, "openat");
        real_openat64 = dlsym(RTLD_NEXT, "openat64");
        real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
        real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
        real_truncate = dlsym(RTLD_NEXT, "truncate");
        real_fallocate = dlsym(RTLD_NEXT, "fallocate");
        real_fallocate64 = dlsym(RTLD_NEXT, "fallocate64");
        real_posix_fallocate = dlsym(RTLD_NEXT, "posix_fallocate");
        real_posix_fallocate64 = dlsym(RTLD_NEXT, "posix_fallocate64");
        const char *r = getenv("FAULTFS_ROOT");
        if (r && *r) {
            snprintf(root, sizeof root, "%s", r);
            if (!realpath(r, root_resolved)) snprintf(root_resolved, sizeof root_resolved, "%s", r);
        }
        control = getenv("FAULTFS_CONTROL");
        log_path = getenv("FAULTFS_LOG");
        __atomic_store_n(&initialized, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&lock);
}

static int parse_op(const char *word, enum op *op) {
    if (!strcmp(word, "write")) *op = OP_WRITE;
    else if (!strcmp(word, "sync")) *op = OP_SYNC;
    else if (!strcmp(word, "open")) *op = OP_OPEN;
    else if (!strcmp(word, "truncate")) *op = OP_TRUNCATE;
    else return 0;
    return 1;
}

static int parse_fault(const char *word, enum fault *fault, int *error) {
    *error = 0;
    if (!strcmp(word, "ENOSPC")) *fault = FAULT_ERRNO, *error = ENOSPC;
    else if (!strcmp(word, "EDQUOT")) *fault = FAULT_ERRNO, *error = EDQUOT;
    else if (!strcmp(word, "EIO")) *fault = FAULT_ERRNO, *error = EIO;
    else if (!strcmp(word, "short")) *fault = FAULT_SHORT;
    else return 0;
    return 1;
}

/* Re-reads the control file if it changed. Called with `lock` held. */
static void reload(void) {
    struct stat info;
    if (!control || stat(control, &info) != 0) {
        rule_count = 0;
        control_size = -1;
        return;
    }
    if (info.st_size == control_size && info.st_mtim.tv_sec == control_mtime.tv_sec &&
        info.st_mtim.tv_nsec == control_mtime.tv_nsec)
        return;
    control_size = info.st_size;
    control_mtime = info.st_mtim;
    rule_count = 0;
    int fd = real_open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char text[4096];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return;
    text[n] = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && rule_count < MAX_RULES; line = strtok_r(NULL, "\n", &save)) {
        char op_word[32], fault_word[32];
        long count = -1;
        if (line[0] == '#') continue;
        int fields = sscanf(line, "%31s %31s %ld", op_word, fault_word, &count);
        if (fields < 2) continue;
        struct rule rule;
        if (!parse_op(op_word, &rule.op) || !parse_fault(fault_word, &rule.fault, &rule.error)) continue;
        rule.remaining = fields >= 3 ? count : -1;
        rules[rule_count++] = rule;
    }
}

static int under_root(const char *path) {
    if (!path) return 0;
    for (int i = 0; i < 2; i++) {
        const char *prefix = i == 0 ? root : root_resolved;
        size_t length = strlen(prefix);
        if (length && !strncmp(path, prefix, length) && (path[length] == '/' || path[length] == 0)) return 1;
    }
    return 0;
}

static int fd_under_root(int fd) {
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = 0;
    return under_root(target);
}

static void note(const char *call, const char *what) {
    if (!log_path) return;
    int fd = real_open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char line[256];
    int n = snprintf(line, sizeof line, "%s %s\n", call, what);
    if (n > 0) real_write(fd, line, (size_t)n);
    close(fd);
}

/* The fault to inject into one call of `op` on `fd` (or on `path` when fd < 0), consuming one use of its
 * rule; `*error` gets the errno. */
static enum fault decide(enum op op, int fd, const char *path, int *error, const char *call) {
    initialize();
    if (!root[0] || !control) return FAULT_NONE;
    pthread_mutex_lock(&lock);
    reload();
    int found = -1;
    for (int i = 0; i < rule_count; i++) {
        if (rules[i].op == op && rules[i].remaining != 0) {
            found = i;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    if (found < 0) return FAULT_NONE;
    if (fd >= 0 ? !fd_under_root(fd) : !under_root(path)) return FAULT_NONE;
    pthread_mutex_lock(&lock);
    enum fault fault = FAULT_NONE;
    /* The rules may have changed meanwhile: take the first that still applies. */
    for (int i = 0; i < rule_count; i++) {
        if (rules[i].op == op && rules[i].remaining != 0) {
            if (rules[i].remaining > 0) rules[i].remaining--;
            fault = rules[i].fault;
            *error = rules[i].error;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    if (fault == FAULT_ERRNO) note(call, strerror(*error));
    if (fault == FAULT_SHORT) note(call, "short");
    return fault;
}

static size_t shortened(size_t count) { return count > 1 ? count / 2 : count; }

ssize_t write(int fd, const void *buffer, size_t count) {
    int error;
    switch (decide(OP_WRITE, fd, NULL, &error, "write")) {
    case FAULT_ERRNO: errno = error; return -1;
    case FAULT_SHORT: return real_write(fd, buffer, shortened(count));
    default: return real_write(fd, buffer, count);
    }
}

static ssize_t do_pwrite(ssize_t (*real)(int, const void *, size_t, off_t), int fd, const void *buffer,
                         size_t count, off_t offset) {
    int error;
    switch (decide(OP_WRITE, fd, NULL, &error, "pwrite")) {
    case FAULT_ERRNO: errno = error; return -1;
    case FAULT_SHORT: return real(fd, buffer, shortened(count), offset);
    default: return real(fd, buffer, count, offset);
    }
}

ssize_t pwrite(int fd, const void *buffer, size_t count, off_t offset) {
    initialize();
    return do_pwrite(real_pwrite, fd, buffer, count, offset);
}

ssize_t pwrite64(int fd, const void *buffer, size_t count, off_t offset) {
    initialize();
    return do_pwrite(real_pwrite64 ? real_pwrite64 : real_pwrite, fd, buffer, count, offset);
}

/* A short vectored write: about half of the first non-empty buffer, written with pwrite (or write). */
static ssize_t short_vector(int fd, const struct iovec *vectors, int count, off_t offset, int positioned) {
    for (int i = 0; i < count; i++) {
        if (vectors[i].iov_len == 0) continue;
        size_t length = shortened(vectors[i].iov_len);
        return positioned ? real_pwrite(fd, vectors[i].iov_base, length, offset)
                          : real_write(fd, vectors[i].iov_base, length);
    }
    return 0;
}

ssize_t writev(int fd, const struct iovec *vectors, int count) {
    int error;
    switch (decide(OP_WRITE, fd, NULL, &error, "writev")) {
    case FAULT_ERRNO: errno = error; return -1;
    case FAULT_SHORT: return short_vector(fd, vectors, count, 0, 0);
    default: return real_writev(fd, vectors, count);
    }
}

static ssize_t do_pwritev(ssize_t (*real)(int, const struct iovec *, int, off_t), int fd,
                          const struct iovec *vectors, int count, off_t offset) {
    int error;
    switch (decide(OP_WRITE, fd, NULL, &error, "pwritev")) {
    case FAULT_ERRNO: errno = error; return -1;
    case FAULT_SHORT: return short_vector(fd, vectors, count, offset, 1);
    default: return real(fd, vectors, count, offset);
    }
}

ssize_t pwritev(int fd, const struct iovec *vectors, int count, off_t offset) {
    initialize();
    return do_pwritev(real_pwritev, fd, vectors, count, offset);
}

ssize_t pwritev64(int fd, const struct iovec *vectors, int count, off_t offset) {
    initialize();
    return do_pwritev(real_pwritev64 ? real_pwritev64 : real_pwritev, fd, vectors, count, offset);
}

ssize_t pwritev2(int fd, const struct iovec *vectors, int count, off_t offset, int flags) {
    int error;
    switch (decide(OP_WRITE, fd, NULL, &error, "pwritev2")) {
    case FAULT_ERRNO: errno = error; return -1;
    case FAULT_SHORT: return short_vector(fd, vectors, count, offset, offset != -1);
    default: return real_pwritev2(fd, vectors, count, offset, flags);
    }
}

int fsync(int fd) {
    int error;
    if (decide(OP_SYNC, fd, NULL, &error, "fsync") == FAULT_ERRNO) {
        errno = error;
        return -1;
    }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    int error;
    if (decide(OP_SYNC, fd, NULL, &error, "fdatasync") == FAULT_ERRNO) {
        errno = error;
        return -1;
    }
    return real_fdatasync(fd);
}

static int do_truncate(int (*real)(int, off_t), int fd, off_t length) {
    int error;
    if (decide(OP_TRUNCATE, fd, NULL, &error, "ftruncate") == FAULT_ERRNO) {
        errno = error;
        return -1;
    }
    return real(fd, length);
}

int ftruncate(int fd, off_t length) {
    initialize();
    return do_truncate(real_ftruncate, fd, length);
}

int ftruncate64(int fd, off_t length) {
    initialize();
    return do_truncate(real_ftruncate64 ? real_ftruncate64 : real_ftruncate, fd, length);
}

int truncate(const char *path, off_t length) {
    int error;
    if (decide(OP_TRUNCATE, -1, path, &error, "truncate") == FAULT_ERRNO) {
        errno = error;
        return -1;
    }
    return real_truncate(path, length);
}

static int do_fallocate(int (*real)(int, int, off_t, off_t), int fd, int mode, off_t offset, off_t length) {
    int error;
    if (decide(OP_WRITE, fd, NULL, &error, "fallocate") == FAULT_ERRNO) {
        errno = error;
        return -1;
    }
    return real(fd, mode, offset, length);
}

int fallocate(int fd, int mode, off_t offset, off_t length) {
    initialize();
    return do_fallocate(real_fallocate, fd, mode, offset, length);
}

int fallocate64(int fd, int mode, off_t offset, off_t length) {
    initialize();
    return do_fallocate(real_fallocate64 ? real_fallocate64 : real_fallocate, fd, mode, offset, length);
}

static int do_posix_fallocate(int (*real)(int, off_t, off_t), int fd, off_t offset, off_t length) {
    int error;
    /* posix_fallocate returns the error instead of setting errno. */
    if (decide(OP_WRITE, fd, NULL, &error, "posix_fallocate") == FAULT_ERRNO) return error;
    return real(fd, offset, length);
}

int posix_fallocate(int fd, off_t offset, off_t length) {
    initialize();
    return do_posix_fallocate(real_posix_fallocate, fd, offset, length);
}

int posix_fallocate64(int fd, off_t offset, off_t length) {
    initialize();
    return do_posix_fallocate(real_posix_fallocate64 ? real_posix_fallocate64 : real_posix_fallocate, fd, offset,
                              length);
}

/* Opening that creates a file fails with the rule's errno (a full directory or inode table). */
static int refuse_create(int flags, const char *path, int *error) {
    return (flags & O_CREAT) && decide(OP_OPEN, -1, path, error, "open") == FAULT_ERRNO;
}

#define OPEN_MODE(flags, mode)                                                                                \
    mode_t mode = 0;                                                                                          \
    if ((flags) & (O_CREAT | __O_TMPFILE)) {                                                                  \
        va_list arguments;                                                                                    \
        va_start(arguments, flags);                                                                           \
        mode = va_arg(arguments, mode_t);                                                                     \
        va_end(arguments);                                                                                    \
    }

int open(const char *path, int flags, ...) {
    OPEN_MODE(flags, mode)
    int error;
    initialize();
    if (refuse_create(flags, path, &error)) {
        errno = error;
        return -1;
    }
    return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    OPEN_MODE(flags, mode)
    int error;
    initialize();
    if (refuse_create(flags, path, &error)) {
        errno = error;
        return -1;
    }
    return (real_open64 ? real_open64 : real_open)(path, flags, mode);
}

int openat(int directory, const char *path, int flags, ...) {
    OPEN_MODE(flags, mode)
    int error;
    initialize();
    if (refuse_create(flags, path, &error)) {
        errno = error;
        return -1;
    }
    return real_openat(directory, path, flags, mode);
}

int openat64(int directory, const char *path, int flags, ...) {
    OPEN_MODE(flags, mode)
    int error;
    initialize();
    if (refuse_create(flags, path, &error)) {
        errno = error;
        return -1;
    }
    return (real_openat64 ? real_openat64 : real_openat)(directory, path, flags, mode);
}
