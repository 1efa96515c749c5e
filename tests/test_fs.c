/* File-system operations on the thread pool (gfl_fs_*) and file-system
 * watchers (gfl_fs_watch), on a fresh mkdtemp directory per test: results
 * as values, errors as error values with -errno and Python's type names,
 * bad arguments refused without starting anything, nothing leaked (the
 * loop's allocator counts its blocks). */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "globeflower.h"

static atomic_long live_blocks;

static void *counting_realloc(void *ud, void *ptr, size_t size)
{
    (void)ud;
    if (size == 0) {
        if (ptr)
            atomic_fetch_sub(&live_blocks, 1);
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, size);
    if (p && !ptr)
        atomic_fetch_add(&live_blocks, 1);
    return p;
}

static gfl_loop *loop;
static char dir[256];

static void rm_tree(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    cr_assert_eq(system(cmd), 0);
}

static void setup(void)
{
    atomic_store(&live_blocks, 0);
    gfl_loop_options o = {.size = sizeof o, .realloc = counting_realloc};
    loop = gfl_loop_new(&o);
    cr_assert_not_null(loop);
    snprintf(dir, sizeof dir, "%s/gfl-test-fs-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    gfl_loop_free(loop);
    cr_expect_eq(atomic_load(&live_blocks), 0, "%ld blocks leaked", atomic_load(&live_blocks));
    rm_tree(dir);
}

TestSuite(fs, .init = setup, .fini = teardown, .timeout = 20);

static const char *in_dir(const char *name)
{
    static char buf[4][512];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", dir, name);
    return b;
}

/* Runs the loop until f is done; returns its value (a new reference) and
 * drops f. */
static gfl_value *settle(gfl_future *f)
{
    cr_assert_not_null(f, "the call was refused");
    for (int i = 0; i < 10000 && gfl_future_state_of(f) == GFL_FUTURE_PENDING; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_assert_neq(gfl_future_state_of(f), GFL_FUTURE_PENDING);
    gfl_value *v = gfl_value_ref(gfl_future_value(f));
    gfl_future_unref(f);
    return v;
}

static void expect_nil(gfl_future *f)
{
    gfl_value *v = settle(f);
    cr_assert_eq(gfl_value_type_of(v), GFL_VALUE_NIL, "expected nil, got %s",
                 gfl_value_type_of(v) == GFL_VALUE_ERROR ? gfl_value_error_message(v) : "another type");
    gfl_value_unref(v);
}

static int64_t expect_int(gfl_future *f)
{
    gfl_value *v = settle(f);
    int64_t i = -1;
    cr_assert_eq(gfl_value_get_int(v, &i), 0, "expected an int: %s",
                 gfl_value_type_of(v) == GFL_VALUE_ERROR ? gfl_value_error_message(v) : "");
    gfl_value_unref(v);
    return i;
}

static void expect_error(gfl_future *f, int code, const char *type)
{
    gfl_value *v = settle(f);
    cr_assert_eq(gfl_value_type_of(v), GFL_VALUE_ERROR);
    cr_expect_eq(gfl_value_error_code(v), code, "code %d, message %s", gfl_value_error_code(v), gfl_value_error_message(v));
    cr_expect_str_eq(gfl_value_error_type(v), type);
    gfl_value_unref(v);
}

/* The string (or bytes) value of f, copied into buf. */
static size_t expect_bytes(gfl_future *f, char *buf, size_t size)
{
    gfl_value *v = settle(f);
    const char *data;
    size_t len;
    cr_assert_eq(gfl_value_get_bytes(v, &data, &len), 0, "expected bytes: %s",
                 gfl_value_type_of(v) == GFL_VALUE_ERROR ? gfl_value_error_message(v) : "");
    cr_assert_lt(len, size);
    memcpy(buf, data, len);
    buf[len] = '\0';
    gfl_value_unref(v);
    return len;
}

static int64_t map_int(const gfl_value *m, const char *key)
{
    gfl_value *v = gfl_value_map_find(m, key, strlen(key));
    cr_assert_not_null(v, "no %s", key);
    int64_t i;
    cr_assert_eq(gfl_value_get_int(v, &i), 0);
    return i;
}

static void expect_map_str(const gfl_value *m, const char *key, const char *want)
{
    gfl_value *v = gfl_value_map_find(m, key, strlen(key));
    cr_assert_not_null(v, "no %s", key);
    const char *data;
    size_t len;
    cr_assert_eq(gfl_value_get_bytes(v, &data, &len), 0);
    cr_expect(len == strlen(want) && memcmp(data, want, len) == 0, "%s: %.*s, not %s", key, (int)len, data, want);
}

Test(fs, open_write_read_with_offsets_close)
{
    int fd = (int)expect_int(gfl_fs_open(loop, in_dir("a"), O_RDWR | O_CREAT | O_EXCL, 0640));
    cr_assert_geq(fd, 0);
    cr_expect(fcntl(fd, F_GETFD) & FD_CLOEXEC, "descriptors are close-on-exec");
    cr_expect_eq(expect_int(gfl_fs_write(loop, fd, "hello world", 11, -1)), 11);
    cr_expect_eq(expect_int(gfl_fs_write(loop, fd, "W", 1, 6)), 1);
    char buf[64];
    cr_expect_eq(expect_bytes(gfl_fs_read(loop, fd, 5, 6), buf, sizeof buf), 5);
    cr_expect_str_eq(buf, "World");
    cr_expect_eq(expect_bytes(gfl_fs_read(loop, fd, 64, 0), buf, sizeof buf), 11);
    cr_expect_str_eq(buf, "hello World");
    /* At the file position: it is at the end after the first write. */
    cr_expect_eq(expect_bytes(gfl_fs_read(loop, fd, 64, -1), buf, sizeof buf), 0, "end of file: empty");
    cr_expect_eq(expect_bytes(gfl_fs_read(loop, fd, 0, 0), buf, sizeof buf), 0);

    gfl_value *st = settle(gfl_fs_fstat(loop, fd));
    cr_assert_eq(gfl_value_type_of(st), GFL_VALUE_MAP);
    cr_expect_eq(map_int(st, "size"), 11);
    cr_expect_eq(map_int(st, "perm"), 0640 & ~0); /* umask may only clear bits */
    expect_map_str(st, "type", "file");
    gfl_value_unref(st);

    cr_expect_eq(expect_int(gfl_fs_write(loop, fd, "", 0, -1)), 0);
    expect_nil(gfl_fs_ftruncate(loop, fd, 5));
    expect_nil(gfl_fs_fsync(loop, fd));
    expect_nil(gfl_fs_fdatasync(loop, fd));
    expect_nil(gfl_fs_close(loop, fd));
    expect_error(gfl_fs_close(loop, fd), -EBADF, "OSError");
    expect_error(gfl_fs_read(loop, fd, 1, 0), -EBADF, "OSError");
    expect_error(gfl_fs_open(loop, in_dir("a"), O_RDWR | O_CREAT | O_EXCL, 0600), -EEXIST, "FileExistsError");
    expect_error(gfl_fs_open(loop, in_dir("missing"), O_RDONLY, 0), -ENOENT, "FileNotFoundError");
}

Test(fs, stat_lstat_and_times)
{
    expect_int(gfl_fs_writefile(loop, in_dir("f"), "12345", 5, 0));
    expect_nil(gfl_fs_symlink(loop, "f", in_dir("l")));
    gfl_value *st = settle(gfl_fs_stat(loop, in_dir("l")));
    cr_assert_eq(gfl_value_type_of(st), GFL_VALUE_MAP);
    expect_map_str(st, "type", "file");
    cr_expect_eq(map_int(st, "size"), 5);
    cr_expect(S_ISREG(map_int(st, "mode")));
    cr_expect_eq(map_int(st, "uid"), (int64_t)getuid());
    cr_expect_geq(map_int(st, "nlink"), 1);
    gfl_value_unref(st);

    gfl_value *lst = settle(gfl_fs_lstat(loop, in_dir("l")));
    expect_map_str(lst, "type", "link");
    gfl_value_unref(lst);

    expect_nil(gfl_fs_utime(loop, in_dir("f"), 1000000000.5, 1234567890.25));
    st = settle(gfl_fs_stat(loop, in_dir("f")));
    double mtime = 0, atime = 0;
    cr_assert_eq(gfl_value_get_double(gfl_value_map_find(st, "mtime", 5), &mtime), 0);
    cr_assert_eq(gfl_value_get_double(gfl_value_map_find(st, "atime", 5), &atime), 0);
    cr_expect_float_eq(mtime, 1234567890.25, 1e-6);
    cr_expect_float_eq(atime, 1000000000.5, 1e-6);
    gfl_value_unref(st);

    expect_nil(gfl_fs_chmod(loop, in_dir("f"), 0604));
    st = settle(gfl_fs_stat(loop, in_dir("f")));
    cr_expect_eq(map_int(st, "perm"), 0604);
    gfl_value_unref(st);
    expect_nil(gfl_fs_chown(loop, in_dir("f"), -1, -1)); /* both kept: always allowed */

    expect_error(gfl_fs_stat(loop, in_dir("nope")), -ENOENT, "FileNotFoundError");
    expect_error(gfl_fs_stat(loop, in_dir("f/x")), -ENOTDIR, "NotADirectoryError");
    gfl_value *e = settle(gfl_fs_lstat(loop, in_dir("nope")));
    cr_expect(strstr(gfl_value_error_message(e), "No such file or directory") != NULL);
    cr_expect(strstr(gfl_value_error_message(e), "/nope'") != NULL, "the path is named: %s", gfl_value_error_message(e));
    gfl_value_unref(e);
}

Test(fs, directories_scandir_rename_unlink)
{
    expect_nil(gfl_fs_mkdir(loop, in_dir("d"), 0755));
    expect_error(gfl_fs_mkdir(loop, in_dir("d"), 0755), -EEXIST, "FileExistsError");
    expect_int(gfl_fs_writefile(loop, in_dir("d/b.txt"), "b", 1, 0));
    expect_int(gfl_fs_writefile(loop, in_dir("d/a.txt"), "a", 1, 0));
    expect_nil(gfl_fs_mkdir(loop, in_dir("d/sub"), 0700));
    expect_nil(gfl_fs_symlink(loop, "a.txt", in_dir("d/link")));

    gfl_value *list = settle(gfl_fs_scandir(loop, in_dir("d")));
    cr_assert_eq(gfl_value_type_of(list), GFL_VALUE_ARRAY);
    cr_assert_eq(gfl_value_length(list), 4);
    const char *names[] = {"a.txt", "b.txt", "link", "sub"};
    const char *types[] = {"file", "file", "link", "directory"};
    for (size_t i = 0; i < 4; i++) {
        gfl_value *e = gfl_value_array_get(list, i);
        cr_assert_eq(gfl_value_type_of(e), GFL_VALUE_MAP);
        expect_map_str(e, "name", names[i]);
        expect_map_str(e, "type", types[i]);
    }
    gfl_value_unref(list);

    gfl_value *empty = settle(gfl_fs_scandir(loop, in_dir("d/sub")));
    cr_expect_eq(gfl_value_type_of(empty), GFL_VALUE_ARRAY);
    cr_expect_eq(gfl_value_length(empty), 0);
    gfl_value_unref(empty);

    expect_nil(gfl_fs_rename(loop, in_dir("d/b.txt"), in_dir("d/sub/c.txt")));
    char buf[16];
    expect_bytes(gfl_fs_readfile(loop, in_dir("d/sub/c.txt")), buf, sizeof buf);
    cr_expect_str_eq(buf, "b");
    expect_error(gfl_fs_rename(loop, in_dir("d/b.txt"), in_dir("d/x")), -ENOENT, "FileNotFoundError");
    gfl_value *e = settle(gfl_fs_rename(loop, in_dir("d/b.txt"), in_dir("d/x")));
    cr_expect(strstr(gfl_value_error_message(e), "' -> '") != NULL, "both paths: %s", gfl_value_error_message(e));
    gfl_value_unref(e);

    expect_error(gfl_fs_rmdir(loop, in_dir("d/sub")), -ENOTEMPTY, "OSError");
    expect_nil(gfl_fs_unlink(loop, in_dir("d/sub/c.txt")));
    expect_error(gfl_fs_unlink(loop, in_dir("d/sub/c.txt")), -ENOENT, "FileNotFoundError");
    expect_nil(gfl_fs_rmdir(loop, in_dir("d/sub")));
    expect_error(gfl_fs_scandir(loop, in_dir("d/sub")), -ENOENT, "FileNotFoundError");
    expect_error(gfl_fs_scandir(loop, in_dir("d/a.txt")), -ENOTDIR, "NotADirectoryError");
    expect_error(gfl_fs_rmdir(loop, in_dir("d/a.txt")), -ENOTDIR, "NotADirectoryError");
}

Test(fs, links_realpath_mkdtemp)
{
    expect_int(gfl_fs_writefile(loop, in_dir("t"), "x", 1, 0));
    expect_nil(gfl_fs_symlink(loop, "t", in_dir("s")));
    char buf[600], want[600];
    expect_bytes(gfl_fs_readlink(loop, in_dir("s")), buf, sizeof buf);
    cr_expect_str_eq(buf, "t");
    expect_error(gfl_fs_readlink(loop, in_dir("t")), -EINVAL, "OSError");
    expect_error(gfl_fs_symlink(loop, "t", in_dir("s")), -EEXIST, "FileExistsError");

    expect_nil(gfl_fs_link(loop, in_dir("t"), in_dir("h")));
    gfl_value *st = settle(gfl_fs_stat(loop, in_dir("t")));
    cr_expect_eq(map_int(st, "nlink"), 2);
    gfl_value_unref(st);

    char *real = realpath(in_dir("t"), NULL);
    snprintf(want, sizeof want, "%s", real);
    free(real);
    expect_bytes(gfl_fs_realpath(loop, in_dir("s")), buf, sizeof buf);
    cr_expect_str_eq(buf, want);
    expect_error(gfl_fs_realpath(loop, in_dir("none")), -ENOENT, "FileNotFoundError");

    size_t n = expect_bytes(gfl_fs_mkdtemp(loop, in_dir("tmp-")), buf, sizeof buf);
    cr_expect_eq(n, strlen(in_dir("tmp-")) + 6);
    struct stat sb;
    cr_assert_eq(stat(buf, &sb), 0);
    cr_expect(S_ISDIR(sb.st_mode));
    cr_expect_eq(sb.st_mode & 0777, 0700);
    expect_error(gfl_fs_mkdtemp(loop, in_dir("none/tmp-")), -ENOENT, "FileNotFoundError");
}

Test(fs, whole_files_and_copyfile)
{
    cr_expect_eq(expect_int(gfl_fs_writefile(loop, in_dir("w"), "abc", 3, 0)), 3);
    cr_expect_eq(expect_int(gfl_fs_writefile(loop, in_dir("w"), "def", 3, GFL_FS_WRITE_APPEND)), 3);
    char buf[300000];
    cr_expect_eq(expect_bytes(gfl_fs_readfile(loop, in_dir("w")), buf, sizeof buf), 6);
    cr_expect_str_eq(buf, "abcdef");
    expect_error(gfl_fs_writefile(loop, in_dir("w"), "x", 1, GFL_FS_WRITE_EXCL), -EEXIST, "FileExistsError");
    cr_expect_eq(expect_int(gfl_fs_writefile(loop, in_dir("w"), "", 0, 0)), 0);
    cr_expect_eq(expect_bytes(gfl_fs_readfile(loop, in_dir("w")), buf, sizeof buf), 0, "truncated");
    expect_error(gfl_fs_readfile(loop, in_dir("nope")), -ENOENT, "FileNotFoundError");
    expect_error(gfl_fs_readfile(loop, dir), -EISDIR, "IsADirectoryError");

    /* Larger than one copy buffer, with binary data. */
    static char big[200000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7 + (i >> 9));
    cr_expect_eq(expect_int(gfl_fs_writefile(loop, in_dir("big"), big, sizeof big, 0)), (int64_t)sizeof big);
    expect_nil(gfl_fs_chmod(loop, in_dir("big"), 0751));
    expect_nil(gfl_fs_copyfile(loop, in_dir("big"), in_dir("copy"), 0));
    cr_assert_eq(expect_bytes(gfl_fs_readfile(loop, in_dir("copy")), buf, sizeof buf), sizeof big);
    cr_expect(memcmp(buf, big, sizeof big) == 0);
    gfl_value *st = settle(gfl_fs_stat(loop, in_dir("copy")));
    cr_expect_eq(map_int(st, "perm"), 0751, "permission bits copied");
    gfl_value_unref(st);
    expect_error(gfl_fs_copyfile(loop, in_dir("big"), in_dir("copy"), GFL_FS_COPY_EXCL), -EEXIST, "FileExistsError");
    expect_nil(gfl_fs_copyfile(loop, in_dir("w"), in_dir("copy"), 0));
    cr_expect_eq(expect_bytes(gfl_fs_readfile(loop, in_dir("copy")), buf, sizeof buf), 0, "replaced");
    expect_error(gfl_fs_copyfile(loop, in_dir("nope"), in_dir("c2"), 0), -ENOENT, "FileNotFoundError");
}

Test(fs, bad_arguments_are_refused)
{
    cr_expect_null(gfl_fs_stat(NULL, "/"));
    cr_expect_null(gfl_fs_stat(loop, NULL));
    cr_expect_null(gfl_fs_open(loop, in_dir("x"), O_RDONLY, -1));
    cr_expect_null(gfl_fs_open(loop, in_dir("x"), O_RDONLY, 010000));
    cr_expect_null(gfl_fs_close(loop, -1));
    cr_expect_null(gfl_fs_read(loop, -1, 1, 0));
    cr_expect_null(gfl_fs_read(loop, 0, GFL_FS_MAX_IO + 1, 0));
    cr_expect_null(gfl_fs_write(loop, 1, NULL, 3, 0));
    cr_expect_null(gfl_fs_fstat(loop, -2));
    cr_expect_null(gfl_fs_rename(loop, in_dir("a"), NULL));
    cr_expect_null(gfl_fs_symlink(loop, NULL, in_dir("a")));
    cr_expect_null(gfl_fs_link(loop, in_dir("a"), NULL));
    cr_expect_null(gfl_fs_copyfile(loop, in_dir("a"), NULL, 0));
    cr_expect_null(gfl_fs_copyfile(loop, in_dir("a"), in_dir("b"), 4));
    cr_expect_null(gfl_fs_mkdir(loop, in_dir("d"), 077777));
    cr_expect_null(gfl_fs_chmod(loop, in_dir("d"), -5));
    cr_expect_null(gfl_fs_chown(loop, in_dir("d"), -2, 0));
    cr_expect_null(gfl_fs_ftruncate(loop, 0, -1));
    cr_expect_null(gfl_fs_utime(loop, in_dir("d"), 0.0 / 0.0, 0));
    cr_expect_null(gfl_fs_utime(loop, in_dir("d"), 0, 1.0 / 0.0));
    cr_expect_null(gfl_fs_writefile(loop, in_dir("d"), NULL, 1, 0));
    cr_expect_null(gfl_fs_writefile(loop, in_dir("d"), "x", 1, 8));
    cr_expect_null(gfl_fs_mkdtemp(loop, NULL));
    /* Nothing was created by the refused calls. */
    struct stat sb;
    cr_expect_neq(stat(in_dir("d"), &sb), 0);
}

static void *run_elsewhere(void *arg)
{
    (void)arg;
    return gfl_fs_stat(loop, "/");
}

Test(fs, wrong_thread_and_closed_loop)
{
    pthread_t t;
    void *res = (void *)1;
    cr_assert_eq(pthread_create(&t, NULL, run_elsewhere, NULL), 0);
    pthread_join(t, &res);
    cr_expect_null(res, "only the loop's thread may start operations");
}

Test(fs, cancel_and_close_with_operations_pending)
{
    /* Cancelled before or while running; then the loop closes with more
     * in flight: every request is freed (the teardown counts blocks). */
    for (int i = 0; i < 32; i++) {
        gfl_future *f = gfl_fs_writefile(loop, in_dir("c"), "data", 4, 0);
        cr_assert_not_null(f);
        gfl_future_cancel(f, NULL);
        gfl_future_unref(f);
    }
    for (int i = 0; i < 16; i++) {
        gfl_future *f = gfl_fs_scandir(loop, dir);
        cr_assert_not_null(f);
        gfl_future_unref(f);
    }
}

static int count_fds(void)
{
    char path[64];
    int n = 0;
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        n += access(path, F_OK) == 0;
    }
    return n;
}

Test(fs, cancelled_opens_leak_no_descriptor)
{
    expect_int(gfl_fs_writefile(loop, in_dir("o"), "x", 1, 0));
    int before = count_fds();
    gfl_future *fs[64];
    for (int i = 0; i < 64; i++)
        cr_assert_not_null(fs[i] = gfl_fs_open(loop, in_dir("o"), O_RDONLY, 0));
    usleep(2000); /* some run, some still wait for a worker */
    for (int i = 0; i < 64; i++)
        gfl_future_cancel(fs[i], NULL);
    for (int i = 0; i < 100; i++)
        gfl_loop_run_once(loop, 0.005);
    for (int i = 0; i < 64; i++)
        gfl_future_unref(fs[i]);
    cr_expect_eq(count_fds(), before, "every descriptor opened for a cancelled future is closed");
}

/* ---- watchers ---- */

struct seen {
    int count;
    int kinds;
    char names[16][64];
    int close_after; /* > 0: the callback closes the watcher at that count */
    int released;
};

static void on_event(gfl_fs_watcher *w, const char *name, int kind, void *ud)
{
    struct seen *s = ud;
    if (s->count < 16)
        snprintf(s->names[s->count], sizeof s->names[0], "%d:%s", kind, name ? name : "(self)");
    s->count++;
    s->kinds |= kind;
    if (s->close_after && s->count == s->close_after)
        cr_expect_eq(gfl_fs_watch_close(w), 0);
}

static void on_release(void *ud)
{
    ((struct seen *)ud)->released++;
}

static bool saw(const struct seen *s, const char *entry)
{
    for (int i = 0; i < s->count && i < 16; i++)
        if (strcmp(s->names[i], entry) == 0)
            return true;
    return false;
}

static void pump_until(const struct seen *s, int count)
{
    for (int i = 0; i < 200 && s->count < count; i++)
        gfl_loop_run_once(loop, 0.01);
}

Test(fs, watch_a_directory)
{
    struct seen s = {0};
    gfl_fs_watcher *w = NULL;
    cr_assert_eq(gfl_fs_watch(loop, dir, 0, on_event, &s, on_release, &w), 0);
    cr_assert_not_null(w);
    cr_expect_str_eq(gfl_fs_watch_path(w), dir);

    FILE *f = fopen(in_dir("new"), "w");
    cr_assert_not_null(f);
    fputs("x", f);
    fclose(f);
    cr_assert_eq(rename(in_dir("new"), in_dir("moved")), 0);
    cr_assert_eq(unlink(in_dir("moved")), 0);
    pump_until(&s, 5);
    cr_expect(saw(&s, "4:new"), "create seen");
    cr_expect(saw(&s, "1:new"), "change seen");
    cr_expect(saw(&s, "2:new"), "rename (from) seen");
    cr_expect(saw(&s, "2:moved"), "rename (to) seen");
    cr_expect(saw(&s, "8:moved"), "delete seen");
    cr_expect_eq(s.released, 0);

    cr_expect_eq(gfl_fs_watch_close(w), 0);
    cr_expect_eq(s.released, 1);
    int before = s.count;
    cr_assert_eq(mkdir(in_dir("after"), 0700), 0);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_expect_eq(s.count, before, "nothing after close");
}

Test(fs, watch_a_file_and_close_inside_the_callback)
{
    struct seen s = {.close_after = 1};
    FILE *f = fopen(in_dir("file"), "w");
    cr_assert_not_null(f);
    fclose(f);
    gfl_fs_watcher *w = NULL;
    cr_assert_eq(gfl_fs_watch(loop, in_dir("file"), 0, on_event, &s, on_release, &w), 0);
    for (int i = 0; i < 3; i++) { /* several events pending at once */
        f = fopen(in_dir("file"), "a");
        fputs("more", f);
        fclose(f);
    }
    pump_until(&s, 1);
    for (int i = 0; i < 5; i++)
        gfl_loop_run_once(loop, 0.01);
    cr_expect_eq(s.count, 1, "closed in the callback: no more events");
    cr_expect(saw(&s, "1:(self)"));
    cr_expect_eq(s.released, 1);
}

Test(fs, watch_errors_and_release_on_loop_close)
{
    struct seen s = {0};
    gfl_fs_watcher *w = (gfl_fs_watcher *)1;
    cr_expect_eq(gfl_fs_watch(loop, in_dir("missing"), 0, on_event, &s, on_release, &w), GFL_ENOENT);
    cr_expect_null(w);
    cr_expect_eq(s.released, 1, "released on failure");
    cr_expect_eq(gfl_fs_watch(loop, dir, 1, on_event, &s, on_release, &w), GFL_EINVAL);
    cr_expect_eq(gfl_fs_watch(loop, dir, 0, NULL, &s, on_release, &w), GFL_EINVAL);
    cr_expect_eq(gfl_fs_watch(loop, "", 0, on_event, &s, on_release, &w), GFL_EINVAL);
    cr_expect_eq(gfl_fs_watch(NULL, dir, 0, on_event, &s, on_release, &w), GFL_EINVAL);
    cr_expect_eq(gfl_fs_watch(loop, dir, 0, on_event, &s, NULL, NULL), GFL_EINVAL);
    cr_expect_eq(s.released, 5);
    cr_expect_eq(gfl_fs_watch_close(NULL), GFL_EINVAL);

    /* Open watchers are released when the loop closes. */
    struct seen kept = {0};
    cr_assert_eq(gfl_fs_watch(loop, dir, 0, on_event, &kept, on_release, &w), 0);
    cr_assert_eq(gfl_fs_watch(loop, dir, 0, on_event, &kept, on_release, &w), 0);
    gfl_loop_free(loop);
    cr_expect_eq(kept.released, 2);
    gfl_loop_options o = {.size = sizeof o, .realloc = counting_realloc};
    loop = gfl_loop_new(&o); /* for the teardown */
}
