/*
 * globeflower: file-system operations on the loop's thread pool, and
 * file-system change watchers (ABI 1.5). Included by globeflower.h.
 *
 * Every operation returns a future (one reference for the caller) whose
 * result is a gfl_value, or NULL on bad arguments, a closed loop, the wrong
 * thread or no memory (nothing was started then, and the caller's buffers
 * are untouched). A failing system call fails the future with an error
 * value: code = -errno, type as in Python (FileNotFoundError,
 * FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError,
 * otherwise OSError), message "[Errno N] <strerror>: '<path>'".
 * Paths and data are copied: the caller may free them once the call
 * returned. Cancelling a future whose operation has not started yet drops
 * it; one that already runs finishes and its result is dropped.
 */
#ifndef GLOBEFLOWER_FS_H
#define GLOBEFLOWER_FS_H

/* ---- operations ---- */

/* open(2) flags are POSIX O_* values; O_CLOEXEC is always added. mode:
 * 0..07777. Result: INT, the descriptor. */
GFL_EXPORT gfl_future *gfl_fs_open(gfl_loop *loop, const char *path, int flags, int mode);
/* Result: NIL. */
GFL_EXPORT gfl_future *gfl_fs_close(gfl_loop *loop, int fd);
/* Up to len bytes (len <= GFL_FS_MAX_IO) at offset (< 0: at the file
 * position, which advances). Result: BYTES, empty at end of file. */
GFL_EXPORT gfl_future *gfl_fs_read(gfl_loop *loop, int fd, size_t len, int64_t offset);
/* Writes all len bytes (copied) at offset (< 0: at the file position).
 * Result: INT, the bytes written. */
GFL_EXPORT gfl_future *gfl_fs_write(gfl_loop *loop, int fd, const void *data, size_t len, int64_t offset);

/* Result: a MAP with string keys: "type" ("file", "directory", "link",
 * "fifo", "socket", "char", "block", "unknown"), "size", "mode" (st_mode,
 * type bits included), "perm" (mode & 07777), "nlink", "uid", "gid",
 * "ino", "dev", "rdev", "blocks", "blksize" (INT), "atime", "mtime",
 * "ctime" (DOUBLE seconds since the epoch, nanoseconds kept). */
GFL_EXPORT gfl_future *gfl_fs_stat(gfl_loop *loop, const char *path);
GFL_EXPORT gfl_future *gfl_fs_lstat(gfl_loop *loop, const char *path);
GFL_EXPORT gfl_future *gfl_fs_fstat(gfl_loop *loop, int fd);

/* Results: NIL. */
GFL_EXPORT gfl_future *gfl_fs_rename(gfl_loop *loop, const char *from, const char *to);
GFL_EXPORT gfl_future *gfl_fs_unlink(gfl_loop *loop, const char *path);
GFL_EXPORT gfl_future *gfl_fs_mkdir(gfl_loop *loop, const char *path, int mode);
GFL_EXPORT gfl_future *gfl_fs_rmdir(gfl_loop *loop, const char *path);
/* Creates linkpath pointing at target (target is not checked). */
GFL_EXPORT gfl_future *gfl_fs_symlink(gfl_loop *loop, const char *target, const char *linkpath);
GFL_EXPORT gfl_future *gfl_fs_link(gfl_loop *loop, const char *existing, const char *newpath);
GFL_EXPORT gfl_future *gfl_fs_fsync(gfl_loop *loop, int fd);
GFL_EXPORT gfl_future *gfl_fs_fdatasync(gfl_loop *loop, int fd);
/* length >= 0. */
GFL_EXPORT gfl_future *gfl_fs_ftruncate(gfl_loop *loop, int fd, int64_t length);
GFL_EXPORT gfl_future *gfl_fs_chmod(gfl_loop *loop, const char *path, int mode);
/* uid / gid -1: unchanged. */
GFL_EXPORT gfl_future *gfl_fs_chown(gfl_loop *loop, const char *path, int64_t uid, int64_t gid);
/* Seconds since the epoch (finite, fractions kept). */
GFL_EXPORT gfl_future *gfl_fs_utime(gfl_loop *loop, const char *path, double atime, double mtime);

/* The entries of a directory except "." and "..", sorted by name. Result:
 * an ARRAY of MAPs {"name": STRING, "type": STRING (as stat's "type")}. */
GFL_EXPORT gfl_future *gfl_fs_scandir(gfl_loop *loop, const char *path);
/* Results: STRING. */
GFL_EXPORT gfl_future *gfl_fs_readlink(gfl_loop *loop, const char *path);
GFL_EXPORT gfl_future *gfl_fs_realpath(gfl_loop *loop, const char *path);
/* Creates a directory named prefix + 6 random characters (mode 0700).
 * Result: STRING, its path. */
GFL_EXPORT gfl_future *gfl_fs_mkdtemp(gfl_loop *loop, const char *prefix);

/* Copies the contents and permission bits of a regular file. flags:
 * GFL_FS_COPY_EXCL fails with FileExistsError when `to` exists (else it
 * is replaced). Result: NIL. */
#define GFL_FS_COPY_EXCL 1
GFL_EXPORT gfl_future *gfl_fs_copyfile(gfl_loop *loop, const char *from, const char *to, int flags);

/* The whole file. Result: BYTES. */
GFL_EXPORT gfl_future *gfl_fs_readfile(gfl_loop *loop, const char *path);
/* Creates or truncates the file (mode 0666 before the umask) and writes
 * len bytes (copied); GFL_FS_WRITE_APPEND appends instead, and
 * GFL_FS_WRITE_EXCL fails when the file exists. Result: INT, the bytes
 * written. */
#define GFL_FS_WRITE_APPEND 1
#define GFL_FS_WRITE_EXCL 2
GFL_EXPORT gfl_future *gfl_fs_writefile(gfl_loop *loop, const char *path, const void *data, size_t len, int flags);

/* The largest single read or write (1 GiB). */
#define GFL_FS_MAX_IO ((size_t)1 << 30)

/* ---- watchers ---- */

/* What happened (one kind per event): */
#define GFL_FS_EVENT_CHANGE 1 /* contents or attributes changed */
#define GFL_FS_EVENT_RENAME 2 /* moved in, out or within */
#define GFL_FS_EVENT_CREATE 4
#define GFL_FS_EVENT_DELETE 8

typedef struct gfl_fs_watcher gfl_fs_watcher;

/* Runs on the loop thread. `name`: the entry of a watched directory the
 * event concerns, NULL when it concerns the watched path itself (or when
 * events were lost: then kind is CHANGE, meaning "look again"). The
 * callback may close the watcher. */
typedef void (*gfl_fs_watch_fn)(gfl_fs_watcher *w, const char *name, int kind, void *ud);

/* Watches a file or a directory (its entries, not recursively); flags must
 * be 0 (reserved). On success *out is the watcher and 0 is returned; on
 * failure a negative GFL code (e.g. GFL_ENOENT, GFL_EINVAL for bad
 * arguments) and release(ud), if given, has run. release(ud) runs once the
 * watcher is closed, by gfl_fs_watch_close or by the loop closing (a
 * closed loop frees its watchers: do not close them after that). Linux:
 * inotify, one instance per watcher. */
GFL_EXPORT int gfl_fs_watch(gfl_loop *loop, const char *path, unsigned flags, gfl_fs_watch_fn callback, void *ud, gfl_release_fn release, gfl_fs_watcher **out);
/* Stops and frees the watcher (after the running callback, if called from
 * it): no callback runs after this returns. 0 or a GFL code. */
GFL_EXPORT int gfl_fs_watch_close(gfl_fs_watcher *w);
/* The watched path (borrowed), NULL for NULL. */
GFL_EXPORT const char *gfl_fs_watch_path(const gfl_fs_watcher *w);

#endif
