/*
 * Futures as Lua objects: a userdata holding one gfl_future reference.
 *
 * One Lua object per gfl_future while it is reachable (a weak registry map
 * gives back the same object), so `task == other` comparisons and table keys
 * work. Results live in the gfl_future itself (see value.c), so a future
 * resolved by Lua can be awaited by any host and vice versa.
 * `await` is written in Lua (the prelude): a coroutine yields the future
 * and the task's step (task.c) suspends on it.
 */
#include "gfl_lua.h"

#include <stdlib.h>

#define OBJECTS_KEY "globeflower.objects"

struct gfl_lua_donecb {
    struct gfl_lua_donecb *next;
    gfl_lua_rt *rt;
    gfl_lua_future *fu; /* NULL once the Lua object is gone */
    int fn_ref;
};

/* Pushes the object registered for `f` (or nil); leaves the map below. */
static void objects_lookup(lua_State *L, gfl_future *f)
{
    lua_getfield(L, LUA_REGISTRYINDEX, OBJECTS_KEY);
    lua_pushlightuserdata(L, f);
    lua_rawget(L, -2);
}

gfl_lua_future *gfl_lua_future_push(lua_State *L, gfl_lua_rt *rt, gfl_future *f)
{
    (void)rt;
    objects_lookup(L, f);
    if (!lua_isnil(L, -1)) {
        lua_remove(L, -2);
        return lua_touserdata(L, -1);
    }
    lua_pop(L, 1);
    gfl_lua_future *fu = gfl_newuserdata(L, sizeof *fu);
    fu->f = GFL->future_ref(f);
    fu->task = NULL;
    fu->cbs = NULL;
    luaL_getmetatable(L, GFL_LUA_FUTURE);
    lua_setmetatable(L, -2);
    lua_pushlightuserdata(L, f);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    lua_remove(L, -2);
    return fu;
}

gfl_lua_future *gfl_lua_future_check(lua_State *L, int idx)
{
    gfl_lua_future *fu = gfl_lua_checkself(L, idx, GFL_LUA_FUTURE);
    if (!fu->f)
        luaL_error(L, "future already finalised");
    return fu;
}

gfl_future *gfl_lua_to_future(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TLIGHTUSERDATA)
        return lua_touserdata(L, idx);
    gfl_lua_future *fu = gfl_testudata(L, idx, GFL_LUA_FUTURE);
    return fu ? fu->f : NULL;
}

static void donecb_free(lua_State *L, struct gfl_lua_donecb *cb)
{
    if (L)
        luaL_unref(L, LUA_REGISTRYINDEX, cb->fn_ref);
    gfl_lua_rt_unref(cb->rt);
    free(cb);
}

static void donecb_unlink(struct gfl_lua_donecb *cb)
{
    if (!cb->fu)
        return;
    struct gfl_lua_donecb **pp = &cb->fu->cbs;
    while (*pp && *pp != cb)
        pp = &(*pp)->next;
    if (*pp)
        *pp = cb->next;
    cb->fu = NULL;
}

static void done_callback(gfl_future *f, void *arg)
{
    struct gfl_lua_donecb *cb = arg;
    gfl_lua_rt *rt = cb->rt;
    lua_State *L = rt->L;
    donecb_unlink(cb);
    if (L) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, cb->fn_ref);
        gfl_lua_future_push(L, rt, f);
        gfl_lua_call(rt, L, 1, 0, "Exception in future done callback");
    }
    donecb_free(L, cb);
}

static int future_gc(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_checkself(L, 1, GFL_LUA_FUTURE);
    while (fu->cbs) {
        struct gfl_lua_donecb *cb = fu->cbs;
        fu->cbs = cb->next;
        cb->fu = NULL;
        /* Already scheduled: it runs later and frees itself. */
        if (GFL->future_remove_done_callback(fu->f, done_callback, cb) > 0)
            donecb_free(L, cb);
    }
    if (fu->task)
        GFL->task_unref(fu->task); /* holds the task's future too */
    else if (fu->f)
        GFL->future_unref(fu->f);
    fu->task = NULL;
    fu->f = NULL;
    return 0;
}

/* gfl.future() */
static int l_future(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    gfl_future *f = GFL->future_new(rt->loop);
    if (!f)
        return luaL_error(L, "future: the loop is closed");
    gfl_lua_future_push(L, rt, f);
    GFL->future_unref(f);
    return 1;
}

static int future_set_result(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    if (fu->task)
        return luaL_error(L, "set_result: a task's result is what its function returns");
    gfl_value *v = gfl_lua_pack(L, 2, lua_gettop(L) - 1);
    if (!v)
        return luaL_error(L, "set_result: out of memory");
    int rc = GFL->future_set_result(fu->f, v);
    GFL->value_unref(v);
    if (rc < 0)
        return rc == GFL_ESTATE ? luaL_error(L, "set_result: the future is already done")
                                : gfl_lua_fail(L, "set_result", rc);
    return 0;
}

static int future_set_error(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    if (fu->task)
        return luaL_error(L, "set_error: a task's error is what its function raises");
    luaL_checkany(L, 2);
    if (GFL->future_state_of(fu->f) != GFL_FUTURE_PENDING)
        return luaL_error(L, "set_error: the future is already done");
    gfl_value *e = gfl_lua_error_value(L, 2, NULL);
    if (!e)
        return luaL_error(L, "set_error: out of memory");
    int rc = GFL->future_set_error(fu->f, e);
    GFL->value_unref(e);
    if (rc < 0)
        return gfl_lua_fail(L, "set_error", rc);
    return 0;
}

static int future_cancel(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    const char *msg = luaL_optstring(L, 2, NULL);
    int rc = fu->task ? GFL->task_cancel(fu->task, msg) : GFL->future_cancel(fu->f, msg);
    if (rc < 0)
        return gfl_lua_fail(L, "cancel", rc);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static int future_done(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    lua_pushboolean(L, GFL->future_state_of(fu->f) != GFL_FUTURE_PENDING);
    return 1;
}

static int future_cancelled(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    lua_pushboolean(L, GFL->future_state_of(fu->f) == GFL_FUTURE_CANCELLED);
    return 1;
}

static int future_state(lua_State *L)
{
    static const char *const names[] = {"pending", "result", "error", "cancelled"};
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    int s = GFL->future_state_of(fu->f);
    lua_pushstring(L, s >= 0 && s <= 3 ? names[s] : "invalid");
    return 1;
}

/* Results, or raises the error / CancelledError (asyncio's result()). */
static int future_result(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    int s = GFL->future_state_of(fu->f);
    if (s == GFL_FUTURE_PENDING)
        return luaL_error(L, "result: the future is not done yet");
    gfl_value *v = GFL->future_value(fu->f);
    if (s == GFL_FUTURE_RESULT)
        return gfl_lua_unpack(L, v);
    gfl_lua_push_error(L, v);
    return lua_error(L);
}

/* The error object (nil when it succeeded); raises when cancelled. */
static int future_error(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    int s = GFL->future_state_of(fu->f);
    if (s == GFL_FUTURE_PENDING)
        return luaL_error(L, "error: the future is not done yet");
    gfl_value *v = GFL->future_value(fu->f);
    if (s == GFL_FUTURE_RESULT) {
        lua_pushnil(L);
        return 1;
    }
    gfl_lua_push_error(L, v);
    if (s == GFL_FUTURE_CANCELLED)
        return lua_error(L);
    return 1;
}

/* The traceback text of a failed future (a task's: where it raised). */
static int future_traceback(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    int s = GFL->future_state_of(fu->f);
    const char *tb = NULL;
    if (s == GFL_FUTURE_ERROR || s == GFL_FUTURE_CANCELLED)
        tb = GFL->value_error_traceback(GFL->future_value(fu->f));
    if (tb)
        lua_pushstring(L, tb);
    else
        lua_pushnil(L);
    return 1;
}

static int future_add_done_callback(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_future_check(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    struct gfl_lua_donecb *cb = malloc(sizeof *cb);
    if (!cb)
        return luaL_error(L, "add_done_callback: out of memory");
    lua_pushvalue(L, 2);
    cb->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    cb->rt = rt;
    gfl_lua_rt_ref(rt);
    int rc = GFL->future_add_done_callback(fu->f, done_callback, cb);
    if (rc < 0) {
        donecb_free(L, cb);
        return gfl_lua_fail(L, "add_done_callback", rc);
    }
    cb->fu = fu;
    cb->next = fu->cbs;
    fu->cbs = cb;
    return 0;
}

static int future_tostring(lua_State *L)
{
    gfl_lua_future *fu = gfl_lua_checkself(L, 1, GFL_LUA_FUTURE);
    lua_pushfstring(L, "%s: %p", fu->task ? "globeflower.Task" : "globeflower.Future", (void *)fu->f);
    return 1;
}

static int future_eq(lua_State *L)
{
    lua_pushboolean(L, lua_touserdata(L, 1) == lua_touserdata(L, 2));
    return 1;
}

static int future_is_task(lua_State *L)
{
    gfl_lua_future *fu = gfl_testudata(L, 1, GFL_LUA_FUTURE);
    lua_pushboolean(L, fu && fu->task);
    return 1;
}

static int l_is_future(lua_State *L)
{
    lua_pushboolean(L, gfl_testudata(L, 1, GFL_LUA_FUTURE) != NULL);
    return 1;
}

static const luaL_Reg future_methods[] = {
    {"set_result", future_set_result},
    {"set_error", future_set_error},
    {"cancel", future_cancel},
    {"done", future_done},
    {"cancelled", future_cancelled},
    {"state", future_state},
    {"result", future_result},
    {"error", future_error},
    {"exception", future_error},
    {"traceback", future_traceback},
    {"add_done_callback", future_add_done_callback},
    {"is_task", future_is_task},
    {NULL, NULL},
};

void gfl_lua_open_future(lua_State *L, int internal)
{
    gfl_lua_newclass(L, GFL_LUA_FUTURE, future_methods, future_gc);
    luaL_getmetatable(L, GFL_LUA_FUTURE);
    lua_pushcfunction(L, future_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, future_eq);
    lua_setfield(L, -2, "__eq");
    lua_getfield(L, -1, "__index");
    lua_setfield(L, internal, "Future"); /* the prelude adds await & co. */
    lua_pop(L, 1);

    lua_newtable(L); /* weak-valued map gfl_future* -> object */
    lua_newtable(L);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, OBJECTS_KEY);

    lua_pushcfunction(L, l_future);
    lua_setfield(L, internal, "future");
    lua_pushcfunction(L, l_is_future);
    lua_setfield(L, internal, "is_future");
}

/* Resolves (with nil) and drops the future a coroutine waits on, if any:
 * how streams and endpoints wake a reader or writer. */
void gfl_lua_wake_waiter(gfl_future **waiter)
{
    gfl_future *f = *waiter;
    if (!f)
        return;
    *waiter = NULL;
    if (GFL->future_state_of(f) == GFL_FUTURE_PENDING)
        GFL->future_set_result(f, GFL->value_nil());
    GFL->future_unref(f);
}
