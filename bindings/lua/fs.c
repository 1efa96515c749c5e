/*
 * gfl.fs: file-system operations on the loop's thread pool and watchers.
 *
 * The prelude chunk fs.lua gives each gfl.fs.<op> its waiting: it checks
 * it runs in a task, calls fs_start(op, ...) here, which checks the
 * arguments (returning false, message for bad ones, so the prelude raises
 * them at the caller's line) and starts the core operation, waits for the
 * future, and turns it into Lua values with fs_result: a result, true for
 * operations without one, or nil, message, code.
 *
 * Watchers call a Lua function on the loop. An open watcher is anchored in
 * the registry (its object cannot be collected while it watches); close,
 * the state closing or the loop closing ends it, and the core's release
 * drops the anchor and the function.
 */
#include "gfl_lua.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WATCHER_MT "globeflower.FsWatcher"

/* ---- argument checking: errors become a message, not a raise ---- */

struct args {
    lua_State *L;
    const char *op;
    char err[256];
    bool failed;
};

static bool arg_fail(struct args *a, int idx, const char *fmt, const char *detail)
{
    if (!a->failed) {
        char what[160];
        snprintf(what, sizeof what, fmt, detail);
        snprintf(a->err, sizeof a->err, "bad argument #%d to 'fs.%s' (%s)", idx - 1, a->op, what);
        a->failed = true;
    }
    return false;
}

static const char *typename_at(struct args *a, int idx)
{
    return lua_typename(a->L, lua_type(a->L, idx));
}

/* A path: a string without NUL bytes. */
static const char *arg_path(struct args *a, int idx)
{
    if (lua_type(a->L, idx) != LUA_TSTRING) {
        arg_fail(a, idx, "string expected, got %s", typename_at(a, idx));
        return NULL;
    }
    size_t len;
    const char *s = lua_tolstring(a->L, idx, &len);
    if (strlen(s) != len) {
        arg_fail(a, idx, "%s", "a path must not contain NUL bytes");
        return NULL;
    }
    return s;
}

static const char *arg_data(struct args *a, int idx, size_t *len)
{
    if (lua_type(a->L, idx) != LUA_TSTRING) {
        arg_fail(a, idx, "string expected, got %s", typename_at(a, idx));
        return NULL;
    }
    return lua_tolstring(a->L, idx, len);
}

/* An integral number in [lo, hi]; `def` when optional and nil. */
static int64_t arg_int(struct args *a, int idx, int64_t lo, int64_t hi, bool optional, int64_t def)
{
    if (optional && lua_isnoneornil(a->L, idx))
        return def;
    if (lua_type(a->L, idx) != LUA_TNUMBER) {
        arg_fail(a, idx, "number expected, got %s", typename_at(a, idx));
        return def;
    }
    lua_Number d = lua_tonumber(a->L, idx);
    if (d != floor(d)) {
        arg_fail(a, idx, "%s", "number has no integer representation");
        return def;
    }
    if (!(d >= (lua_Number)lo && d <= (lua_Number)hi)) {
        char range[96];
        snprintf(range, sizeof range, "out of range: %lld to %lld", (long long)lo, (long long)hi);
        arg_fail(a, idx, "%s", range);
        return def;
    }
    return (int64_t)d;
}

static double arg_time(struct args *a, int idx)
{
    if (lua_type(a->L, idx) != LUA_TNUMBER) {
        arg_fail(a, idx, "number expected, got %s", typename_at(a, idx));
        return 0;
    }
    double d = (double)lua_tonumber(a->L, idx);
    if (!isfinite(d) || fabs(d) > 9e18)
        arg_fail(a, idx, "%s", "a finite time in seconds expected");
    return d;
}

#define FD_MAX 0x7fffffff
#define MODE_MAX 07777

/* open's flags: fopen-style letters (as luv), or a number of O_* flags. */
static int arg_open_flags(struct args *a, int idx)
{
    if (lua_isnoneornil(a->L, idx))
        return O_RDONLY;
    if (lua_type(a->L, idx) == LUA_TNUMBER)
        return (int)arg_int(a, idx, 0, 0x7fffffff, false, 0);
    if (lua_type(a->L, idx) != LUA_TSTRING) {
        arg_fail(a, idx, "string expected, got %s", typename_at(a, idx));
        return 0;
    }
    static const struct { const char *s; int flags; } table[] = {
        {"r", O_RDONLY}, {"rs", O_RDONLY | O_SYNC}, {"sr", O_RDONLY | O_SYNC},
        {"r+", O_RDWR}, {"rs+", O_RDWR | O_SYNC}, {"sr+", O_RDWR | O_SYNC},
        {"w", O_WRONLY | O_CREAT | O_TRUNC}, {"wx", O_WRONLY | O_CREAT | O_TRUNC | O_EXCL},
        {"xw", O_WRONLY | O_CREAT | O_TRUNC | O_EXCL},
        {"w+", O_RDWR | O_CREAT | O_TRUNC}, {"wx+", O_RDWR | O_CREAT | O_TRUNC | O_EXCL},
        {"xw+", O_RDWR | O_CREAT | O_TRUNC | O_EXCL},
        {"a", O_WRONLY | O_CREAT | O_APPEND}, {"ax", O_WRONLY | O_CREAT | O_APPEND | O_EXCL},
        {"xa", O_WRONLY | O_CREAT | O_APPEND | O_EXCL},
        {"a+", O_RDWR | O_CREAT | O_APPEND}, {"ax+", O_RDWR | O_CREAT | O_APPEND | O_EXCL},
        {"xa+", O_RDWR | O_CREAT | O_APPEND | O_EXCL},
    };
    const char *s = lua_tostring(a->L, idx);
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(s, table[i].s) == 0)
            return table[i].flags;
    arg_fail(a, idx, "%s", "unknown flags (\"r\", \"r+\", \"w\", \"w+\", \"wx\", \"a\", \"a+\", ... or a number)");
    return 0;
}

/* An options table whose keys are all booleans named in `keys`; returns
 * the bits of the true ones (keys[i] -> bits[i]). */
static int arg_bool_options(struct args *a, int idx, const char *const *keys, const int *bits, size_t n)
{
    lua_State *L = a->L;
    if (lua_isnoneornil(L, idx))
        return 0;
    if (lua_type(L, idx) != LUA_TTABLE) {
        arg_fail(a, idx, "options table expected, got %s", typename_at(a, idx));
        return 0;
    }
    int result = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t i = n;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (i = 0; i < n && strcmp(lua_tostring(L, -2), keys[i]) != 0; i++)
                ;
        if (i == n) {
            char key[64];
            snprintf(key, sizeof key, "%s", lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "(not a string)");
            lua_pop(L, 2);
            arg_fail(a, idx, "unknown option '%s'", key);
            return 0;
        }
        if (lua_type(L, -1) != LUA_TBOOLEAN) {
            lua_pop(L, 2);
            arg_fail(a, idx, "option '%s' must be a boolean", keys[i]);
            return 0;
        }
        if (lua_toboolean(L, -1))
            result |= bits[i];
        lua_pop(L, 1);
    }
    return result;
}

static bool no_more_args(struct args *a, int last)
{
    if (lua_gettop(a->L) > last && !a->failed) {
        snprintf(a->err, sizeof a->err, "bad argument #%d to 'fs.%s' (no value expected, got %s)", last, a->op,
                 lua_typename(a->L, lua_type(a->L, last + 1)));
        a->failed = true;
    }
    return !a->failed;
}

/* ---- starting operations ---- */

/* internal: fs_start(op, ...) -> future | false, message (bad arguments) */
static int l_fs_start(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    gfl_loop *loop = rt->loop;
    struct args a = {.L = L, .op = luaL_checkstring(L, 1)};
    const char *op = a.op;
    gfl_future *f = NULL;
    int last = 1; /* the last argument the operation takes */

#define OP(name) (strcmp(op, name) == 0)
    if (OP("open")) {
        const char *path = arg_path(&a, 2);
        int flags = arg_open_flags(&a, 3);
        int mode = (int)arg_int(&a, 4, 0, MODE_MAX, true, 0666);
        if (no_more_args(&a, last = 4))
            f = GFL->fs_open(loop, path, flags, mode);
    } else if (OP("close") || OP("fstat") || OP("fsync") || OP("fdatasync")) {
        int fd = (int)arg_int(&a, 2, 0, FD_MAX, false, 0);
        if (no_more_args(&a, last = 2))
            f = OP("close") ? GFL->fs_close(loop, fd) : OP("fstat") ? GFL->fs_fstat(loop, fd)
              : OP("fsync") ? GFL->fs_fsync(loop, fd) : GFL->fs_fdatasync(loop, fd);
    } else if (OP("read")) {
        int fd = (int)arg_int(&a, 2, 0, FD_MAX, false, 0);
        int64_t len = arg_int(&a, 3, 0, (int64_t)GFL_FS_MAX_IO, false, 0);
        int64_t offset = arg_int(&a, 4, -1, INT64_C(1) << 53, true, -1);
        if (no_more_args(&a, last = 4))
            f = GFL->fs_read(loop, fd, (size_t)len, offset);
    } else if (OP("write")) {
        size_t len = 0;
        int fd = (int)arg_int(&a, 2, 0, FD_MAX, false, 0);
        const char *data = arg_data(&a, 3, &len);
        int64_t offset = arg_int(&a, 4, -1, INT64_C(1) << 53, true, -1);
        if (!a.failed && len > GFL_FS_MAX_IO)
            arg_fail(&a, 3, "%s", "more than 1 GiB at once");
        if (no_more_args(&a, last = 4))
            f = GFL->fs_write(loop, fd, data, len, offset);
    } else if (OP("ftruncate")) {
        int fd = (int)arg_int(&a, 2, 0, FD_MAX, false, 0);
        int64_t len = arg_int(&a, 3, 0, INT64_C(1) << 53, true, 0);
        if (no_more_args(&a, last = 3))
            f = GFL->fs_ftruncate(loop, fd, len);
    } else if (OP("stat") || OP("lstat") || OP("unlink") || OP("rmdir") || OP("scandir") || OP("readlink") ||
               OP("realpath") || OP("mkdtemp") || OP("readfile")) {
        const char *path = arg_path(&a, 2);
        if (no_more_args(&a, last = 2)) {
            gfl_future *(*fn)(gfl_loop *, const char *) =
                OP("stat") ? GFL->fs_stat : OP("lstat") ? GFL->fs_lstat : OP("unlink") ? GFL->fs_unlink
              : OP("rmdir") ? GFL->fs_rmdir : OP("scandir") ? GFL->fs_scandir : OP("readlink") ? GFL->fs_readlink
              : OP("realpath") ? GFL->fs_realpath : OP("mkdtemp") ? GFL->fs_mkdtemp : GFL->fs_readfile;
            f = fn(loop, path);
        }
    } else if (OP("rename") || OP("symlink") || OP("link")) {
        const char *p1 = arg_path(&a, 2);
        const char *p2 = arg_path(&a, 3);
        if (no_more_args(&a, last = 3))
            f = OP("rename") ? GFL->fs_rename(loop, p1, p2) : OP("symlink") ? GFL->fs_symlink(loop, p1, p2)
              : GFL->fs_link(loop, p1, p2);
    } else if (OP("mkdir") || OP("chmod")) {
        const char *path = arg_path(&a, 2);
        int mode = (int)arg_int(&a, 3, 0, MODE_MAX, OP("mkdir"), 0777);
        if (no_more_args(&a, last = 3))
            f = OP("mkdir") ? GFL->fs_mkdir(loop, path, mode) : GFL->fs_chmod(loop, path, mode);
    } else if (OP("chown")) {
        const char *path = arg_path(&a, 2);
        int64_t uid = arg_int(&a, 3, -1, INT64_C(0xfffffffe), false, -1);
        int64_t gid = arg_int(&a, 4, -1, INT64_C(0xfffffffe), false, -1);
        if (no_more_args(&a, last = 4))
            f = GFL->fs_chown(loop, path, uid, gid);
    } else if (OP("utime")) {
        const char *path = arg_path(&a, 2);
        double atime = arg_time(&a, 3), mtime = arg_time(&a, 4);
        if (no_more_args(&a, last = 4))
            f = GFL->fs_utime(loop, path, atime, mtime);
    } else if (OP("copyfile")) {
        static const char *const keys[] = {"excl"};
        static const int bits[] = {GFL_FS_COPY_EXCL};
        const char *from = arg_path(&a, 2);
        const char *to = arg_path(&a, 3);
        int flags = arg_bool_options(&a, 4, keys, bits, 1);
        if (no_more_args(&a, last = 4))
            f = GFL->fs_copyfile(loop, from, to, flags);
    } else if (OP("writefile")) {
        static const char *const keys[] = {"append", "excl"};
        static const int bits[] = {GFL_FS_WRITE_APPEND, GFL_FS_WRITE_EXCL};
        size_t len = 0;
        const char *path = arg_path(&a, 2);
        const char *data = arg_data(&a, 3, &len);
        int flags = arg_bool_options(&a, 4, keys, bits, 2);
        if (!a.failed && len > GFL_FS_MAX_IO)
            arg_fail(&a, 3, "%s", "more than 1 GiB at once");
        if (no_more_args(&a, last = 4))
            f = GFL->fs_writefile(loop, path, data, len, flags);
    } else {
        return luaL_error(L, "fs_start: unknown operation %s", op);
    }
#undef OP
    if (a.failed) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, a.err);
        return 2;
    }
    if (!f) /* arguments were checked: the loop is closed (or no memory) */
        return gfl_lua_raise(L, "fs.%s: the loop is closed", op);
    gfl_lua_future_push(L, rt, f);
    GFL->future_unref(f);
    return 1;
}

/* internal: fs_result(future) -> the result (true for none) | nil, msg, code */
static int l_fs_result(lua_State *L)
{
    gfl_future *f = gfl_lua_to_future(L, 1);
    if (!f)
        return luaL_argerror(L, 1, "future expected");
    gfl_value *v = GFL->future_value(f);
    if (GFL->future_state_of(f) != GFL_FUTURE_RESULT)
        return gfl_lua_push_failure_value(L, v);
    if (GFL->value_type_of(v) == GFL_VALUE_NIL) {
        lua_pushboolean(L, 1);
        return 1;
    }
    gfl_lua_push_value_or_raise(L, v, "gfl.fs");
    return 1;
}

/* ---- watchers ---- */

struct lua_watch {
    gfl_lua_rt *rt;
    int fn_ref;     /* the callback */
    int anchor_ref; /* the watcher object, while open */
    gfl_fs_watcher *w;
    struct watch_object *object; /* NULL once collected */
};

struct watch_object {
    struct lua_watch *lw; /* NULL once closed */
};

static const char *kind_name(int kind)
{
    switch (kind) {
    case GFL_FS_EVENT_CHANGE: return "change";
    case GFL_FS_EVENT_RENAME: return "rename";
    case GFL_FS_EVENT_CREATE: return "create";
    case GFL_FS_EVENT_DELETE: return "delete";
    default: return "change";
    }
}

static void watch_event(gfl_fs_watcher *w, const char *name, int kind, void *ud)
{
    (void)w;
    struct lua_watch *lw = ud;
    lua_State *L = lw->rt->L;
    if (!L)
        return;
    gfl_lua_rt_collect(lw->rt);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lw->fn_ref);
    if (name)
        lua_pushstring(L, name);
    else
        lua_pushnil(L);
    lua_pushstring(L, kind_name(kind));
    gfl_lua_call(lw->rt, L, 2, 0, "Exception in gfl.fs.watch callback");
}

static void watch_release(void *ud)
{
    struct lua_watch *lw = ud;
    if (lw->object)
        lw->object->lw = NULL;
    if (lw->rt->L) {
        luaL_unref(lw->rt->L, LUA_REGISTRYINDEX, lw->fn_ref);
        luaL_unref(lw->rt->L, LUA_REGISTRYINDEX, lw->anchor_ref);
    }
    gfl_lua_rt_unref(lw->rt);
    free(lw);
}

/* internal: fs_watch(path, fn) -> watcher | nil, msg, code | false, msg (bad arguments) */
static int l_fs_watch(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    struct args a = {.L = L, .op = "watch"};
    lua_pushnil(L); /* arguments start at 2 in messages: shift them */
    lua_insert(L, 1);
    const char *path = arg_path(&a, 2);
    if (!a.failed && lua_type(L, 3) != LUA_TFUNCTION)
        arg_fail(&a, 3, "function expected, got %s", typename_at(&a, 3));
    if (!no_more_args(&a, 3)) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, a.err);
        return 2;
    }
    struct lua_watch *lw = calloc(1, sizeof *lw);
    if (!lw)
        return luaL_error(L, "out of memory");
    struct watch_object *obj = gfl_newuserdata(L, sizeof *obj);
    obj->lw = NULL;
    luaL_getmetatable(L, WATCHER_MT);
    lua_setmetatable(L, -2);
    lw->rt = rt;
    gfl_lua_rt_ref(rt);
    lua_pushvalue(L, 3);
    lw->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    lw->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int rc = GFL->fs_watch(rt->loop, path, 0, watch_event, lw, watch_release, &lw->w);
    if (rc < 0) { /* watch_release ran */
        char msg[300];
        snprintf(msg, sizeof msg, "%s: [Errno %d] %s: '%s'",
                 rc == -ENOENT ? "FileNotFoundError" : rc == -EACCES || rc == -EPERM ? "PermissionError"
                 : rc == -ENOTDIR ? "NotADirectoryError" : "OSError",
                 -rc, GFL->strerror(rc), path);
        return gfl_lua_push_failure(L, rc, msg);
    }
    lw->object = obj;
    obj->lw = lw;
    return 1;
}

/* watcher:close() -> true (closing twice is harmless) */
static int l_watch_close(lua_State *L)
{
    struct watch_object *obj = gfl_lua_checkself(L, 1, WATCHER_MT);
    if (obj->lw) {
        struct lua_watch *lw = obj->lw;
        int rc = GFL->fs_watch_close(lw->w); /* runs watch_release */
        if (rc < 0)
            return gfl_lua_fail(L, "watcher:close", rc);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* watcher:path() -> the watched path; watcher:is_closed() */
static int l_watch_path(lua_State *L)
{
    struct watch_object *obj = gfl_lua_checkself(L, 1, WATCHER_MT);
    if (!obj->lw)
        return 0;
    lua_pushstring(L, GFL->fs_watch_path(obj->lw->w));
    return 1;
}

static int l_watch_is_closed(lua_State *L)
{
    struct watch_object *obj = gfl_lua_checkself(L, 1, WATCHER_MT);
    lua_pushboolean(L, obj->lw == NULL);
    return 1;
}

/* Collected only when closed, or when the state closes (anchors go). */
static int l_watch_gc(lua_State *L)
{
    struct watch_object *obj = lua_touserdata(L, 1);
    if (obj && obj->lw) {
        struct lua_watch *lw = obj->lw;
        lw->object = NULL;
        obj->lw = NULL;
        (void)GFL->fs_watch_close(lw->w);
    }
    return 0;
}

static int l_watch_tostring(lua_State *L)
{
    struct watch_object *obj = luaL_checkudata(L, 1, WATCHER_MT);
    if (obj->lw)
        lua_pushfstring(L, "globeflower.FsWatcher: %s", GFL->fs_watch_path(obj->lw->w));
    else
        lua_pushliteral(L, "globeflower.FsWatcher: closed");
    return 1;
}

static const luaL_Reg watch_methods[] = {
    {"close", l_watch_close},
    {"path", l_watch_path},
    {"is_closed", l_watch_is_closed},
    {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"fs_start", l_fs_start},
    {"fs_result", l_fs_result},
    {"fs_watch", l_fs_watch},
    {NULL, NULL},
};

void gfl_lua_open_fs(lua_State *L, int internal)
{
    /* A core older than ABI 1.5 has no fs_* fields: no gfl.fs then. */
    if (!GFL_API_HAS(GFL, fs_watch_path))
        return;
    gfl_lua_newclass(L, WATCHER_MT, watch_methods, l_watch_gc);
    luaL_getmetatable(L, WATCHER_MT);
    lua_pushcfunction(L, l_watch_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    gfl_lua_register(L, internal, functions);
}
