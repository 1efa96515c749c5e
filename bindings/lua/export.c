/*
 * Lua functions in the loop's registry of named functions (gfl_export),
 * and calls of any host's exports by name (gfl_call).
 *
 * An export is async: each call runs the function as a new Lua task with
 * the arguments converted, and the caller gets the task's own future (its
 * results settle it, an error fails it, and cancelling it cancels the
 * task: gfl_future_cancel on a task's future is gfl_task_cancel). The
 * state keeps a list of what it exported; when it closes it unexports
 * them all, and a release that runs after the state is gone (or when the
 * loop was freed first) only frees memory.
 */
#include "gfl_lua.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gfl_lua_export {
    struct gfl_lua_export *next;
    struct gfl_lua_export **pprev; /* NULL once off the state's list */
    gfl_lua_rt *rt;                /* one reference */
    int fn_ref;
    char name[];
};

static void unlink_export(struct gfl_lua_export *x)
{
    if (!x->pprev)
        return;
    *x->pprev = x->next;
    if (x->next)
        x->next->pprev = x->pprev;
    x->next = NULL;
    x->pprev = NULL;
}

/* The registry dropped the export (gfl_unexport, the loop closing). */
static void export_release(void *ud)
{
    struct gfl_lua_export *x = ud;
    unlink_export(x);
    if (x->rt->L)
        luaL_unref(x->rt->L, LUA_REGISTRYINDEX, x->fn_ref);
    gfl_lua_rt_unref(x->rt);
    free(x);
}

void gfl_lua_unexport_all(gfl_lua_rt *rt)
{
    while (rt->exports) {
        struct gfl_lua_export *x = rt->exports;
        unlink_export(x); /* whatever happens, it is no longer ours to list */
        /* Releases x when it works; when it cannot (another thread), the
         * registry still owns x and frees it later without the state. */
        GFL->unexport(rt->loop, x->name);
    }
}

/* A failed future: how a call that cannot start reports why. */
static gfl_future *failed_future(gfl_loop *loop, int code, const char *type, const char *message)
{
    gfl_future *f = GFL->future_new(loop);
    gfl_value *e = f ? GFL->value_error(code, type, message, NULL) : NULL;
    if (!e || GFL->future_set_error(f, e) < 0) {
        if (f)
            GFL->future_unref(f);
        f = NULL;
    }
    if (e)
        GFL->value_unref(e);
    return f;
}

struct start {
    struct gfl_lua_export *x;
    gfl_value *const *args;
    size_t nargs;
    gfl_future *future;
};

/* In protected mode on the state's thread: the task for one call. */
static int start_call(lua_State *L)
{
    struct start *s = lua_touserdata(L, 1);
    int base = lua_gettop(L) + 1;
    if (s->nargs > 100000 || !lua_checkstack(L, (int)s->nargs + LUA_MINSTACK))
        return luaL_error(L, "too many arguments (%d)", (int)s->nargs);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->x->fn_ref);
    for (size_t i = 0; i < s->nargs; i++) {
        char err[256];
        if (!gfl_lua_push_value(L, s->args[i], err, sizeof err))
            return luaL_error(L, "argument %d: %s", (int)i + 1, err);
    }
    gfl_task *t = gfl_lua_spawn_at(L, base, 1);
    s->future = GFL->future_ref(GFL->task_future(t));
    return 0;
}

static gfl_future *export_call(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs)
{
    struct gfl_lua_export *x = ud;
    lua_State *L = x->rt->L;
    char msg[400];
    if (!L) {
        snprintf(msg, sizeof msg, "%s: the Lua state that exported it is closed", x->name);
        return failed_future(loop, GFL_ECLOSED, "RuntimeError", msg);
    }
    if (!lua_checkstack(L, 4))
        return failed_future(loop, GFL_ENOMEM, "MemoryError", "out of Lua stack space");
    struct start s = {x, args, nargs, NULL};
    int top = lua_gettop(L);
    lua_pushcfunction(L, start_call);
    lua_pushlightuserdata(L, &s);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        const char *why = lua_tostring(L, -1);
        snprintf(msg, sizeof msg, "%s: %s", x->name, why ? why : "cannot start the call");
        lua_settop(L, top);
        return failed_future(loop, GFL_EINVAL, "TypeError", msg);
    }
    lua_settop(L, top);
    return s.future;
}

/* A name as a C string: refuses embedded NULs (they would cut it). */
static const char *check_name(lua_State *L, int idx, const char *what)
{
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING)
        gfl_lua_typeerror(L, idx, idx, strncmp(what, "gfl.", 4) == 0 ? what + 4 : what, "string");
    const char *name = lua_tolstring(L, idx, &len);
    if (strlen(name) != len)
        luaL_error(L, "%s: invalid name (it contains a NUL byte)", what);
    return name;
}

static int registry_error(lua_State *L, const char *what, const char *name, int rc)
{
    switch (rc) {
    case GFL_EEXIST:
        return luaL_error(L, "%s: '%s' is already exported (gfl.unexport it first)", what, name);
    case GFL_EINVAL:
        return luaL_error(L, "%s: invalid name '%s': use 1 to 128 characters from A-Z a-z 0-9 _ .", what, name);
    case GFL_ENOENT:
        return luaL_error(L, "%s: nothing is exported under the name '%s'", what, name);
    case GFL_EWRONGTHREAD:
        return luaL_error(L, "%s: called from a thread that does not own the loop", what);
    case GFL_ECLOSED:
        return luaL_error(L, "%s: the loop is closed", what);
    default:
        return gfl_lua_fail(L, what, rc);
    }
}

/* gfl.export(name, fn): calls of `name` from any host run fn(...) as a task */
static int l_export(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    const char *name = check_name(L, 1, "gfl.export");
    gfl_lua_checkfunction(L, 2, 2, "export");
    size_t len = strlen(name);
    struct gfl_lua_export *x = malloc(sizeof *x + len + 1);
    if (!x)
        return luaL_error(L, "gfl.export: out of memory");
    memcpy(x->name, name, len + 1);
    lua_pushvalue(L, 2);
    x->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    x->rt = rt;
    x->next = NULL;
    x->pprev = NULL;
    gfl_lua_rt_ref(rt);
    int rc = GFL->export_function(rt->loop, x->name, NULL, export_call, x, export_release);
    if (rc < 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, x->fn_ref);
        gfl_lua_rt_unref(rt);
        free(x);
        return registry_error(L, "gfl.export", name, rc);
    }
    x->next = rt->exports;
    if (x->next)
        x->next->pprev = &x->next;
    x->pprev = &rt->exports;
    rt->exports = x;
    return 0;
}

/* gfl.unexport(name): removes any host's export of that name */
static int l_unexport(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    const char *name = check_name(L, 1, "gfl.unexport");
    int rc = GFL->unexport(rt->loop, name);
    if (rc < 0)
        return registry_error(L, "gfl.unexport", name, rc);
    return 0;
}

/* gfl.exports() -> the names exported on the loop, by any host */
static int l_exports(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    int n = GFL->export_count(rt->loop);
    if (n < 0)
        return registry_error(L, "gfl.exports", "", n);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, GFL->export_name(rt->loop, i));
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* internal: call(name, ...) -> the future of the call (the prelude waits) */
static int l_call(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    const char *name = check_name(L, 1, "gfl.call");
    int n = lua_gettop(L) - 1;
    gfl_value **args = gfl_lua_check_args(L, 2, n, "gfl.call");
    gfl_future *f = GFL->call(rt->loop, name, args, (size_t)n);
    gfl_lua_drop_args(L, -1);
    if (!f) {
        if (GFL->loop_is_closed(rt->loop) != 0)
            return registry_error(L, "gfl.call", name, GFL_ECLOSED);
        return gfl_lua_raise(L, "gfl.call: cannot call '%s' (called from a thread that does not own the loop, or out of memory)", name);
    }
    gfl_lua_future_push(L, rt, f);
    GFL->future_unref(f);
    return 1;
}

static const luaL_Reg functions[] = {
    {"export", l_export},
    {"unexport", l_unexport},
    {"exports", l_exports},
    {"call", l_call},
    {NULL, NULL},
};

void gfl_lua_open_export(lua_State *L, int internal)
{
    gfl_lua_register(L, internal, functions);
}
