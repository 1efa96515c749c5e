/*
 * File-system operations on the loop's thread pool (abi/globeflower_fs.h).
 *
 * Each call checks its arguments on the loop thread, copies them into one
 * request, and hands run_request to gfl_run_in_executor. The worker makes
 * the system call and builds the result value (values are thread-agnostic);
 * the request is freed by free_request on the loop thread whether the job
 * ran or was dropped by a cancellation, so every path frees it once.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum fs_op {
    FS_OPEN, FS_CLOSE, FS_READ, FS_WRITE, FS_STAT, FS_LSTAT, FS_FSTAT,
    FS_RENAME, FS_UNLINK, FS_MKDIR, FS_RMDIR, FS_SYMLINK, FS_LINK,
    FS_FSYNC, FS_FDATASYNC, FS_FTRUNCATE, FS_CHMOD, FS_CHOWN, FS_UTIME,
    FS_SCANDIR, FS_READLINK, FS_REALPATH, FS_MKDTEMP, FS_COPYFILE,
    FS_READFILE, FS_WRITEFILE,
};

struct fs_request {
    gfl_loop *loop;
    enum fs_op op;
    char *path, *path2;
    void *data; /* write buffers (copied) */
    size_t len;
    int fd, flags, mode;
    int64_t offset, uid, gid; /* offset: also ftruncate's length */
    double atime, mtime;
    gfl_future *future; /* borrowed (the job holds it until free_request) */
    int opened_fd;      /* open: the new descriptor, set by the worker */
};

/* ---- results (worker thread) ---- */

/* As Python words it: "[Errno 2] No such file or directory: 'path'". */
static gfl_value *os_error_path(int err, const char *path, const char *path2)
{
    char msg[PATH_MAX * 2 + 128];
    if (path2)
        snprintf(msg, sizeof msg, "[Errno %d] %s: '%s' -> '%s'", err, strerror(err), path, path2);
    else if (path)
        snprintf(msg, sizeof msg, "[Errno %d] %s: '%s'", err, strerror(err), path);
    else
        snprintf(msg, sizeof msg, "[Errno %d] %s", err, strerror(err));
    return gfl_value_error(gfl__errno_code(err), gfl__errno_type(err), msg, NULL);
}

static gfl_value *failure(const struct fs_request *r)
{
    int err = errno;
    if (r->op == FS_SYMLINK) /* the path that failed is the link */
        return os_error_path(err, r->path2, NULL);
    return os_error_path(err, r->path, r->path2);
}

/* A MAP of string keys; takes the values' references (NULL ones too). */
static gfl_value *string_map(const char *const *keys, gfl_value **values, size_t n)
{
    gfl_value *k[24];
    gfl_value *map = NULL;
    size_t made = 0;
    bool ok = n <= 24;
    for (; ok && made < n; made++) {
        k[made] = gfl_value_string(keys[made], strlen(keys[made]));
        ok = k[made] != NULL && values[made] != NULL;
    }
    if (ok)
        map = gfl_value_map(k, values, n);
    for (size_t i = 0; i < made; i++)
        gfl_value_unref(k[i]);
    for (size_t i = 0; i < n; i++)
        gfl_value_unref(values[i]);
    return map;
}

static const char *mode_type(mode_t m)
{
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "directory";
    if (S_ISLNK(m)) return "link";
    if (S_ISFIFO(m)) return "fifo";
    if (S_ISSOCK(m)) return "socket";
    if (S_ISCHR(m)) return "char";
    if (S_ISBLK(m)) return "block";
    return "unknown";
}

static gfl_value *cstring(const char *s)
{
    return gfl_value_string(s, strlen(s));
}

static double seconds(struct timespec ts)
{
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static gfl_value *stat_map(const struct stat *st)
{
    static const char *const keys[] = {
        "type", "size", "mode", "perm", "nlink", "uid", "gid", "ino", "dev",
        "rdev", "blocks", "blksize", "atime", "mtime", "ctime",
    };
    gfl_value *v[] = {
        cstring(mode_type(st->st_mode)),
        gfl_value_int((int64_t)st->st_size),
        gfl_value_int((int64_t)st->st_mode),
        gfl_value_int((int64_t)(st->st_mode & 07777)),
        gfl_value_int((int64_t)st->st_nlink),
        gfl_value_int((int64_t)st->st_uid),
        gfl_value_int((int64_t)st->st_gid),
        gfl_value_int((int64_t)st->st_ino),
        gfl_value_int((int64_t)st->st_dev),
        gfl_value_int((int64_t)st->st_rdev),
        gfl_value_int((int64_t)st->st_blocks),
        gfl_value_int((int64_t)st->st_blksize),
        gfl_value_double(seconds(st->st_atim)),
        gfl_value_double(seconds(st->st_mtim)),
        gfl_value_double(seconds(st->st_ctim)),
    };
    return string_map(keys, v, sizeof v / sizeof v[0]);
}

static const char *dirent_type(int dir_fd, const struct dirent *d)
{
    switch (d->d_type) {
    case DT_REG: return "file";
    case DT_DIR: return "directory";
    case DT_LNK: return "link";
    case DT_FIFO: return "fifo";
    case DT_SOCK: return "socket";
    case DT_CHR: return "char";
    case DT_BLK: return "block";
    default: break;
    }
    /* Some file systems do not fill d_type: ask. */
    struct stat st;
    if (fstatat(dir_fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return mode_type(st.st_mode);
    return "unknown";
}

struct dir_entry {
    char *name;
    const char *type;
};

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct dir_entry *)a)->name, ((const struct dir_entry *)b)->name);
}

static gfl_value *do_scandir(const struct fs_request *r)
{
    DIR *dir = opendir(r->path);
    if (!dir)
        return failure(r);
    struct dir_entry *entries = NULL;
    size_t n = 0, cap = 0;
    gfl_value *result = NULL;
    bool oom = false;
    struct dirent *d;
    errno = 0;
    while ((d = readdir(dir)) != NULL) {
        if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            struct dir_entry *grown = realloc(entries, ncap * sizeof *entries);
            if (!grown) {
                oom = true;
                break;
            }
            entries = grown;
            cap = ncap;
        }
        entries[n].name = strdup(d->d_name);
        if (!entries[n].name) {
            oom = true;
            break;
        }
        entries[n].type = dirent_type(dirfd(dir), d);
        n++;
        errno = 0;
    }
    int err = errno;
    closedir(dir);
    if (!oom && err != 0) {
        errno = err;
        result = failure(r);
        goto out;
    }
    if (oom)
        goto out;
    if (n > 1) /* qsort's array may not be NULL, even for 0 items */
        qsort(entries, n, sizeof *entries, entry_cmp);
    gfl_value **items = n ? calloc(n, sizeof *items) : NULL;
    if (n && !items)
        goto out;
    size_t made = 0;
    for (; made < n; made++) {
        static const char *const keys[] = {"name", "type"};
        gfl_value *v[] = {cstring(entries[made].name), cstring(entries[made].type)};
        items[made] = string_map(keys, v, 2);
        if (!items[made])
            break;
    }
    if (made == n)
        result = gfl_value_array(items, n);
    for (size_t i = 0; i < made; i++)
        gfl_value_unref(items[i]);
    free(items);
out:
    for (size_t i = 0; i < n; i++)
        free(entries[i].name);
    free(entries);
    return result; /* NULL: the executor fails the future with ENOMEM */
}

static gfl_value *do_read(const struct fs_request *r)
{
    char *buf = malloc(r->len ? r->len : 1);
    if (!buf)
        return NULL;
    ssize_t got;
    do
        got = r->offset < 0 ? read(r->fd, buf, r->len) : pread(r->fd, buf, r->len, (off_t)r->offset);
    while (got < 0 && errno == EINTR);
    gfl_value *v = got < 0 ? failure(r) : gfl_value_bytes(buf, (size_t)got);
    free(buf);
    return v;
}

/* Writes everything (retrying short writes): 0 or -1 with errno. */
static int write_all(int fd, const char *data, size_t len, int64_t offset, size_t *written)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = offset < 0 ? write(fd, data + done, len - done)
                               : pwrite(fd, data + done, len - done, (off_t)(offset + (int64_t)done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *written = done;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            *written = done;
            return -1;
        }
        done += (size_t)n;
    }
    *written = done;
    return 0;
}

static gfl_value *do_readfile(const struct fs_request *r)
{
    int fd = open(r->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return failure(r);
    struct stat st;
    size_t cap = fstat(fd, &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size < GFL_FS_MAX_IO
                     ? (size_t)st.st_size + 1 : 4096;
    char *buf = malloc(cap);
    size_t len = 0;
    gfl_value *v = NULL;
    while (buf) {
        if (len == cap) {
            char *grown = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!grown)
                break;
            buf = grown;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            v = failure(r);
            break;
        }
        if (n == 0) {
            v = gfl_value_bytes(buf, len);
            break;
        }
        len += (size_t)n;
    }
    free(buf);
    close(fd);
    return v;
}

static gfl_value *do_writefile(const struct fs_request *r)
{
    int oflags = O_WRONLY | O_CREAT | O_CLOEXEC;
    oflags |= (r->flags & GFL_FS_WRITE_APPEND) ? O_APPEND : O_TRUNC;
    if (r->flags & GFL_FS_WRITE_EXCL)
        oflags |= O_EXCL;
    int fd = open(r->path, oflags, 0666);
    if (fd < 0)
        return failure(r);
    size_t written;
    gfl_value *v = write_all(fd, r->data, r->len, -1, &written) < 0 ? failure(r) : NULL;
    if (close(fd) < 0 && !v)
        v = failure(r);
    return v ? v : gfl_value_int((int64_t)written);
}

static gfl_value *do_copyfile(const struct fs_request *r)
{
    int in = open(r->path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return os_error_path(errno, r->path, NULL);
    struct stat st;
    if (fstat(in, &st) < 0) {
        int err = errno;
        close(in);
        return os_error_path(err, r->path, NULL);
    }
    int oflags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
    if (r->flags & GFL_FS_COPY_EXCL)
        oflags |= O_EXCL;
    int out = open(r->path2, oflags, st.st_mode & 07777);
    if (out < 0) {
        int err = errno;
        close(in);
        return os_error_path(err, r->path2, NULL);
    }
    char buf[64 * 1024];
    gfl_value *v = NULL;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            v = os_error_path(errno, r->path, NULL);
            break;
        }
        if (n == 0)
            break;
        size_t written;
        if (write_all(out, buf, (size_t)n, -1, &written) < 0) {
            v = os_error_path(errno, r->path2, NULL);
            break;
        }
    }
    if (!v && fchmod(out, st.st_mode & 07777) < 0) /* O_CREAT's mode met the umask */
        v = os_error_path(errno, r->path2, NULL);
    if (close(out) < 0 && !v)
        v = os_error_path(errno, r->path2, NULL);
    close(in);
    return v ? v : gfl_value_nil();
}

static gfl_value *do_readlink(const struct fs_request *r)
{
    for (size_t cap = 256; cap <= ((size_t)1 << 20); cap *= 4) {
        char *buf = malloc(cap);
        if (!buf)
            return NULL;
        ssize_t n = readlink(r->path, buf, cap);
        if (n < 0) {
            free(buf);
            return failure(r);
        }
        if ((size_t)n < cap) {
            gfl_value *v = gfl_value_string(buf, (size_t)n);
            free(buf);
            return v;
        }
        free(buf);
    }
    errno = ENAMETOOLONG;
    return failure(r);
}

static struct timespec to_timespec(double t)
{
    struct timespec ts;
    double whole = floor(t);
    ts.tv_sec = (time_t)whole;
    ts.tv_nsec = (long)((t - whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_nsec = 999999999L;
    return ts;
}

/* nil or a failure for a call returning 0 / -1. */
static gfl_value *nil_or_failure(const struct fs_request *r, int rc)
{
    return rc < 0 ? failure(r) : gfl_value_nil();
}

static gfl_value *run_request(void *arg)
{
    struct fs_request *r = arg;
    struct stat st;
    int rc;
    switch (r->op) {
    case FS_OPEN:
        rc = open(r->path, r->flags | O_CLOEXEC, (mode_t)r->mode);
        r->opened_fd = rc;
        return rc < 0 ? failure(r) : gfl_value_int(rc);
    case FS_CLOSE:
        /* Linux frees the descriptor even when close fails (EINTR too). */
        return nil_or_failure(r, close(r->fd));
    case FS_READ:
        return do_read(r);
    case FS_WRITE: {
        size_t written;
        if (write_all(r->fd, r->data, r->len, r->offset, &written) < 0)
            return failure(r);
        return gfl_value_int((int64_t)written);
    }
    case FS_STAT:
        return stat(r->path, &st) < 0 ? failure(r) : stat_map(&st);
    case FS_LSTAT:
        return lstat(r->path, &st) < 0 ? failure(r) : stat_map(&st);
    case FS_FSTAT:
        return fstat(r->fd, &st) < 0 ? failure(r) : stat_map(&st);
    case FS_RENAME:
        return nil_or_failure(r, rename(r->path, r->path2));
    case FS_UNLINK:
        return nil_or_failure(r, unlink(r->path));
    case FS_MKDIR:
        return nil_or_failure(r, mkdir(r->path, (mode_t)r->mode));
    case FS_RMDIR:
        return nil_or_failure(r, rmdir(r->path));
    case FS_SYMLINK:
        return nil_or_failure(r, symlink(r->path, r->path2));
    case FS_LINK:
        return nil_or_failure(r, link(r->path, r->path2));
    case FS_FSYNC:
        return nil_or_failure(r, fsync(r->fd));
    case FS_FDATASYNC:
        return nil_or_failure(r, fdatasync(r->fd));
    case FS_FTRUNCATE:
        return nil_or_failure(r, ftruncate(r->fd, (off_t)r->offset));
    case FS_CHMOD:
        return nil_or_failure(r, chmod(r->path, (mode_t)r->mode));
    case FS_CHOWN:
        return nil_or_failure(r, chown(r->path, (uid_t)r->uid, (gid_t)r->gid));
    case FS_UTIME: {
        struct timespec ts[2] = {to_timespec(r->atime), to_timespec(r->mtime)};
        return nil_or_failure(r, utimensat(AT_FDCWD, r->path, ts, 0));
    }
    case FS_SCANDIR:
        return do_scandir(r);
    case FS_READLINK:
        return do_readlink(r);
    case FS_REALPATH: {
        char *resolved = realpath(r->path, NULL);
        if (!resolved)
            return failure(r);
        gfl_value *v = cstring(resolved);
        free(resolved);
        return v;
    }
    case FS_MKDTEMP:
        /* r->path is prefix + "XXXXXX", filled in place. */
        return mkdtemp(r->path) ? cstring(r->path) : failure(r);
    case FS_COPYFILE:
        return do_copyfile(r);
    case FS_READFILE:
        return do_readfile(r);
    case FS_WRITEFILE:
        return do_writefile(r);
    }
    errno = EINVAL;
    return failure(r);
}

/* ---- submission (loop thread) ---- */

static void free_request(void *arg)
{
    struct fs_request *r = arg;
    gfl_loop *loop = r->loop;
    /* An open whose future was cancelled (or whose loop closed) while it
     * ran: nobody will ever see the descriptor, so it is closed here. */
    if (r->op == FS_OPEN && r->opened_fd >= 0 &&
        (!r->future || gfl_future_state_of(r->future) != GFL_FUTURE_RESULT))
        close(r->opened_fd);
    gfl__free(loop, r->path);
    gfl__free(loop, r->path2);
    gfl__free(loop, r->data);
    gfl__free(loop, r);
}

static char *copy_string(gfl_loop *loop, const char *s, const char *suffix)
{
    size_t n = strlen(s), m = suffix ? strlen(suffix) : 0;
    char *c = gfl__alloc(loop, n + m + 1);
    if (c) {
        memcpy(c, s, n);
        memcpy(c + n, suffix ? suffix : "", m + 1);
    }
    return c;
}

static struct fs_request *new_request(gfl_loop *loop, enum fs_op op)
{
    if (gfl__check_loop(loop) < 0)
        return NULL;
    struct fs_request *r = gfl__calloc(loop, 1, sizeof *r);
    if (r) {
        r->loop = loop;
        r->op = op;
        r->fd = -1;
        r->offset = -1;
        r->opened_fd = -1;
    }
    return r;
}

static bool op_needs_second_path(enum fs_op op)
{
    return op == FS_RENAME || op == FS_SYMLINK || op == FS_LINK || op == FS_COPYFILE;
}

static struct fs_request *path_request(gfl_loop *loop, enum fs_op op, const char *path, const char *path2)
{
    if (!path || (op_needs_second_path(op) && !path2))
        return NULL;
    struct fs_request *r = new_request(loop, op);
    if (!r)
        return NULL;
    r->path = copy_string(loop, path, op == FS_MKDTEMP ? "XXXXXX" : NULL);
    if (path2)
        r->path2 = copy_string(loop, path2, NULL);
    if (!r->path || (path2 && !r->path2)) {
        free_request(r);
        return NULL;
    }
    return r;
}

static struct fs_request *fd_request(gfl_loop *loop, enum fs_op op, int fd)
{
    if (fd < 0)
        return NULL;
    struct fs_request *r = new_request(loop, op);
    if (r)
        r->fd = fd;
    return r;
}

/* Takes the request: freed on every path. */
static gfl_future *submit(struct fs_request *r)
{
    if (!r)
        return NULL;
    gfl_future *f = gfl_run_in_executor(r->loop, run_request, r, free_request);
    if (!f)
        free_request(r);
    else
        r->future = f; /* before any release: that runs on this thread, later */
    return f;
}

static bool valid_mode(int mode)
{
    return mode >= 0 && mode <= 07777;
}

static bool copy_data(struct fs_request *r, const void *data, size_t len)
{
    r->len = len;
    if (len == 0)
        return true;
    r->data = gfl__alloc(r->loop, len);
    if (!r->data)
        return false;
    memcpy(r->data, data, len);
    return true;
}

/* ---- the public calls ---- */

GFL_EXPORT gfl_future *gfl_fs_open(gfl_loop *loop, const char *path, int flags, int mode)
{
    if (!valid_mode(mode))
        return NULL;
    struct fs_request *r = path_request(loop, FS_OPEN, path, NULL);
    if (r) {
        r->flags = flags;
        r->mode = mode;
    }
    return submit(r);
}

GFL_EXPORT gfl_future *gfl_fs_close(gfl_loop *loop, int fd)
{
    return submit(fd_request(loop, FS_CLOSE, fd));
}

GFL_EXPORT gfl_future *gfl_fs_read(gfl_loop *loop, int fd, size_t len, int64_t offset)
{
    if (len > GFL_FS_MAX_IO)
        return NULL;
    struct fs_request *r = fd_request(loop, FS_READ, fd);
    if (r) {
        r->len = len;
        r->offset = offset < 0 ? -1 : offset;
    }
    return submit(r);
}

GFL_EXPORT gfl_future *gfl_fs_write(gfl_loop *loop, int fd, const void *data, size_t len, int64_t offset)
{
    if (len > GFL_FS_MAX_IO || (!data && len > 0))
        return NULL;
    struct fs_request *r = fd_request(loop, FS_WRITE, fd);
    if (r) {
        r->offset = offset < 0 ? -1 : offset;
        if (!copy_data(r, data, len)) {
            free_request(r);
            return NULL;
        }
    }
    return submit(r);
}

GFL_EXPORT gfl_future *gfl_fs_stat(gfl_loop *loop, const char *path)
{
    return submit(path_request(loop, FS_STAT, path, NULL));
}

GFL_EXPORT gfl_future *gfl_fs_lstat(gfl_loop *loop, const char *path)
{
    return submit(path_request(loop, FS_LSTAT, path, NULL));
}

GFL_EXPORT gfl_future *gfl_fs_fstat(gfl_loop *loop, int fd)
{
    return submit(fd_request(loop, FS_FSTAT, fd));
}

GFL_EXPORT gfl_future *gfl_fs_rename(gfl_loop *loop, const char *from, const char *to)
{
    return submit(path_request(loop, FS_RENAME, from, to));
}

GFL_EXPORT gfl_future *gfl_fs_unlink(gfl_loop *loop, const char *path)
{
    return submit(path_request(loop, FS_UNLINK, path, NULL));
}

GFL_EXPORT gfl_future *gfl_fs_mkdir(gfl_loop *loop, const char *path, int mode)
{
    if (!valid_mode(mode))
        return NULL;
    struct fs_request *r = path_request(loop, FS_MKDIR, path, NULL);
    if (r)
        r->mode = mode;
    return submit(r);
}

GFL_EXPORT gfl_future *gfl_fs_rmdir(gfl_loop *loop, const char *path)
{
    return submit(path_request(loop, FS_RMDIR, path, NULL));
}

GFL_EXPORT gfl_future *gfl_fs_symlink(gfl_loop *loop, const char *target, const char *linkpath)
{
    return submit(path_request(loop, FS_SYMLINK, target, linkpath));
}

GFL_EXPORT gfl_future *gfl_fs_link(gfl_loop *loop, const char *existing, const char *newpath)
{
    return submit(path_request(loop, FS_LINK, existing, newpath));
}

GFL_EXPORT gfl_future *gfl_fs_fsync(gfl_loop *loop, int fd)
{
    return submit(fd_request(loop, FS_FSYNC, fd));
}

GFL_EXPORT gfl_future *gfl_fs_fdatasync(gfl_loop *loop, int fd)
{
    return submit(fd_request(loop, FS_FDATASYNC, fd));
}

GFL_EXPORT gfl_future *gfl_fs_ftruncate(gfl_loop *loop, int fd, int64_t length)
{
    if (length < 0)
        return NULL;
    struct fs_request *r = fd_request(loop, FS_FTRUNCATE, fd);
    if (r)
        r->offset = length;
    return submit(r);
}

GFL_EXPORT gfl_future *gfl_fs_chmod(gfl_loop *loop, const char *path, int mode)
{
    if (!valid_mode(mode))
        return NULL;
    struct fs_request *r = path_request(loop, FS_CHMOD, path, NULL);
    if (r)
        r->mode = mode;
    return submit(r);
}

GFL_EXPORT gfl_future *gfl_fs_chown(gfl_loop *loop, const char *path, int64_t uid, int64_t gid)
{
    /* -1 keeps; anything else must be a uid_t / gid_t. */
    if (uid < -1 || gid < -1 || uid > (int64_t)UINT32_MAX - 1 || gid > (int64_t)UINT32_MAX - 1)
        return NULL;
    struct fs_request *r = path_request(loop, FS_CHOWN, path, NULL);
    if (r) {
        r->uid = uid;
        r->gid = gid;
    }
    return submit(r);
}

GFL_EXPORT gfl_future *gfl_fs_utime(gfl_loop *loop, const char *path, double atime, double mtime)
{
    /* time_t range: the conversion of anything larger is undefined. */
    if (!isfinite(atime) || !isfinite(mtime) || fabs(atime) > 9.2e18 || fabs(mtime) > 9.2e18)
        return NULL;
    struct fs_request *r = path_request(loop, FS_UTIME, path, NULL);
    if (r) {
        r->atime = atime;
        r->mtime = mtime;
    }
    return submit(r);
}

GFL_EXPORT gfl_future *gfl_fs_scandir(gfl_loop *loop, const char *path)
{
    return submit(path_request(loop, FS_SCANDIR, path, NULL));
}

GFL_EXPORT gfl_future *gfl_fs_readlink(gfl_loop *loop, const char *path)
{
    return submit(path_request(loop, FS_READLINK, path, NULL));
}

GFL_EXPORT gfl_future *gfl_fs_realpath(gfl_loop *loop, const char *path)
{
    return submit(path_request(loop, FS_REALPATH, path, NULL));
}

GFL_EXPORT gfl_future *gfl_fs_mkdtemp(gfl_loop *loop, const char *prefix)
{
    return submit(path_request(loop, FS_MKDTEMP, prefix, NULL));
}

GFL_EXPORT gfl_future *gfl_fs_copyfile(gfl_loop *loop, const char *from, const char *to, int flags)
{
    if (flags & ~GFL_FS_COPY_EXCL)
        return NULL;
    struct fs_request *r = path_request(loop, FS_COPYFILE, from, to);
    if (r)
        r->flags = flags;
    return submit(r);
}

GFL_EXPORT gfl_future *gfl_fs_readfile(gfl_loop *loop, const char *path)
{
    return submit(path_request(loop, FS_READFILE, path, NULL));
}

GFL_EXPORT gfl_future *gfl_fs_writefile(gfl_loop *loop, const char *path, const void *data, size_t len, int flags)
{
    if ((flags & ~(GFL_FS_WRITE_APPEND | GFL_FS_WRITE_EXCL)) || len > GFL_FS_MAX_IO || (!data && len > 0))
        return NULL;
    struct fs_request *r = path_request(loop, FS_WRITEFILE, path, NULL);
    if (r) {
        r->flags = flags;
        if (!copy_data(r, data, len)) {
            free_request(r);
            return NULL;
        }
    }
    return submit(r);
}
