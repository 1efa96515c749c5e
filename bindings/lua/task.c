/*
 * Tasks: Lua coroutines driven by the core's gfl_task.
 *
 * The step resumes the coroutine from C. Awaiting is a plain
 * coroutine.yield of a future (an object, or a light userdata naming a
 * gfl_future the binding owns) from a Lua frame, so it works on every Lua
 * version, LuaJIT included. The coroutine is resumed with `true` (the
 * awaited future is done: the Lua side reads it) or `false, err` (an error
 * to raise, e.g. a CancelledError). A bare coroutine.yield() is a bare
 * yield: the task steps again on the next iteration (asyncio's sleep(0)).
 *
 * Lifetime: while the task runs, its state holds the coroutine and the
 * task object strongly (a running task is reachable from the loop, as in
 * asyncio); once done it lets both go.
 */
#include "gfl_lua.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct gfl_lua_task {
    gfl_lua_rt *rt;
    lua_State *co;
    int co_ref;
    int self_ref;     /* the task object */
    gfl_lua_future *fu; /* valid while self_ref is held */
    int started;
    int exported; /* runs an export: results cross to other hosts */
} gfl_lua_task;

static void task_release(void *ud)
{
    gfl_lua_task *lt = ud;
    gfl_lua_rt *rt = lt->rt;
    if (rt->L) {
        luaL_unref(rt->L, LUA_REGISTRYINDEX, lt->co_ref);
        luaL_unref(rt->L, LUA_REGISTRYINDEX, lt->self_ref);
    }
    if (rt->current == lt)
        rt->current = NULL;
    gfl_lua_rt_unref(rt);
    free(lt);
}

/* A step that cannot resume (bad yield, state closed): fail the task. */
static void fail_with(gfl_task *t, int code, const char *message)
{
    gfl_value *e = GFL->value_error(code, "RuntimeError", message, NULL);
    if (e) {
        GFL->task_fail(t, e);
        GFL->value_unref(e);
    }
}

/* An export's results (on L from base + 1): none gives nil, one gives it,
 * several an array of them, all converted for other hosts; a result that
 * does not convert fails the call with a ValueError saying why. */
static void exported_return(gfl_task *t, lua_State *L, int base, int nres)
{
    char err[256];
    gfl_value *v;
    if (nres <= 1) {
        if (nres == 0)
            lua_pushnil(L);
        v = gfl_lua_to_value(L, base + 1, err, sizeof err);
    } else {
        lua_createtable(L, nres, 0);
        int t = lua_gettop(L);
        for (int i = 1; i <= nres; i++) {
            lua_pushvalue(L, base + i);
            lua_rawseti(L, t, i);
        }
        /* An array of exactly nres items, nils included. */
        gfl_lua_rt *rt = gfl_lua_rt_get(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_array_mt);
        lua_setmetatable(L, t);
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_arraylen);
        lua_pushvalue(L, t);
        lua_pushinteger(L, nres);
        lua_rawset(L, -3);
        lua_pop(L, 1);
        v = gfl_lua_to_value(L, t, err, sizeof err);
    }
    lua_settop(L, base);
    if (!v) {
        char msg[300];
        snprintf(msg, sizeof msg, "the export's result: %s", err);
        gfl_value *e = GFL->value_error(GFL_EINVAL, "ValueError", msg, NULL);
        if (e) {
            GFL->task_fail(t, e);
            GFL->value_unref(e);
        }
        return;
    }
    GFL->task_return(t, v);
    GFL->value_unref(v);
}

/* The coroutine yielded something that is not a future. A plain yield
 * cannot raise inside the coroutine (awaits report errors as values), so
 * the task fails with the error. */
static void await_error(gfl_lua_rt *rt, gfl_task *t, const char *message)
{
    (void)rt;
    fail_with(t, GFL_EINVAL, message);
}

/* What a task's coroutine awaits: a future object, or (from the
 * prelude only) the private token followed by a light userdata naming a
 * gfl_future the binding owns. A light userdata alone is refused: a
 * script must not make the step read any address as a future. */
static gfl_future *yielded_future(gfl_lua_rt *rt, lua_State *co, int nres)
{
    int first = lua_gettop(co) - nres + 1;
    if (nres == 2 && lua_type(co, first) == LUA_TTABLE) {
        lua_rawgeti(co, LUA_REGISTRYINDEX, rt->ref_wait_token);
        int ours = lua_rawequal(co, -1, first);
        lua_pop(co, 1);
        if (!ours)
            return NULL;
        if (lua_type(co, first + 1) == LUA_TLIGHTUSERDATA)
            return lua_touserdata(co, first + 1);
        first++; /* a future object */
    }
    if (lua_type(co, first) != LUA_TUSERDATA)
        return NULL;
    gfl_lua_future *fu = gfl_testudata(co, first, GFL_LUA_FUTURE);
    return fu ? fu->f : NULL;
}

static void task_step(gfl_task *t, void *ud, gfl_value *value, gfl_value *error)
{
    (void)value; /* the Lua side reads the awaited future itself */
    gfl_lua_task *lt = ud;
    gfl_lua_rt *rt = lt->rt;
    lua_State *L = rt->L;
    if (!L) {
        fail_with(t, GFL_ECLOSED, "the Lua state was closed");
        return;
    }
    gfl_lua_rt_collect(rt);
    lua_State *co = lt->co;
    int narg;
    if (!lt->started) {
        lt->started = 1;
        narg = lua_gettop(co) - 1; /* the function and its arguments */
        if (error) {
            /* Cancelled before it ever ran: never start the function. */
            gfl_value *e = GFL->value_ref(error);
            GFL->task_fail(t, e);
            GFL->value_unref(e);
            return;
        }
    } else if (error) {
        /* Built on L: a suspended coroutine cannot run the constructor. */
        lua_pushboolean(L, 0);
        gfl_lua_push_error(L, error);
        lua_xmove(L, co, 2);
        narg = 2;
    } else {
        lua_pushboolean(co, 1);
        narg = 1;
    }

    gfl_lua_task *previous = rt->current;
    rt->current = lt;
    int nres = 0;
    int status = gfl_resume(co, L, narg, &nres);
    rt->current = previous;

    if (status == LUA_YIELD) {
        if (nres == 0) {
            /* bare yield: step again next iteration */
        } else {
            gfl_future *f = yielded_future(rt, co, nres);
            if (!f) {
                await_error(rt, t, "a task yielded something that is not a future (use gfl.sleep(0) to yield)");
            } else {
                int rc = GFL->task_await(t, f);
                if (rc < 0)
                    await_error(rt, t, rc == GFL_EINVAL ? "a task cannot await itself or a future of another loop"
                                                        : GFL->strerror(rc));
            }
        }
        lua_pop(co, nres);
        return;
    }
    /* Finished: work on L (no calls may run on a dead coroutine). */
    int base = lua_gettop(L);
    if (status == 0) {
        if (!lua_checkstack(L, nres + LUA_MINSTACK)) {
            lua_settop(co, 0);
            fail_with(t, GFL_ENOMEM, "too many results");
            return;
        }
        lua_xmove(co, L, nres);
        if (lt->exported) {
            exported_return(t, L, base, nres);
            return;
        }
        gfl_value *v = gfl_lua_pack(L, base + 1, nres);
        lua_settop(L, base);
        if (!v) {
            fail_with(t, GFL_ENOMEM, "out of memory");
            return;
        }
        GFL->task_return(t, v);
        GFL->value_unref(v);
        return;
    }
    /* Raised: keep the object and a traceback of the dead coroutine. */
    lua_xmove(co, L, 1);
    int err = base + 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lt->co_ref);
    if (lua_type(L, err) == LUA_TSTRING)
        lua_pushvalue(L, err);
    else
        lua_pushnil(L); /* debug.traceback leaves non-strings alone */
    lua_call(L, 2, 1);
    gfl_value *e = gfl_lua_error_value(L, err, lua_tostring(L, -1));
    lua_settop(L, base);
    if (!e) {
        fail_with(t, GFL_ENOMEM, "out of memory");
        return;
    }
    GFL->task_fail(t, e);
    GFL->value_unref(e);
}

gfl_task *gfl_lua_spawn_at(lua_State *L, int base, int exported)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    int n = lua_gettop(L) - base + 1; /* the function and its arguments */
    gfl_lua_task *lt = calloc(1, sizeof *lt);
    if (!lt)
        return luaL_error(L, "spawn: out of memory"), NULL;
    lt->co = lua_newthread(L);
    lt->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_xmove(L, lt->co, n);
    lt->rt = rt;
    lt->exported = exported;
    gfl_lua_rt_ref(rt);

    gfl_task *t = GFL->task_new(rt->loop, task_step, lt, task_release);
    if (!t) {
        luaL_unref(L, LUA_REGISTRYINDEX, lt->co_ref);
        gfl_lua_rt_unref(rt);
        free(lt);
        return luaL_error(L, "spawn: the loop is closed"), NULL;
    }
    gfl_lua_future *fu = gfl_lua_future_push(L, rt, GFL->task_future(t));
    GFL->future_unref(fu->f); /* the task reference below holds it */
    fu->task = t;
    lt->fu = fu;
    lua_pushvalue(L, -1);
    lt->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return t;
}

/* gfl.spawn(fn, ...) -> task: runs fn(...) as a task from the next
 * iteration on (asyncio's create_task). */
int gfl_lua_spawn(lua_State *L)
{
    gfl_lua_checkfunction(L, 1, 1, "spawn");
    gfl_lua_spawn_at(L, 1, 0);
    return 1;
}

/* gfl.current_task() -> the running task, or nil */
static int l_current_task(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    if (!rt->current)
        return lua_pushnil(L), 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->current->self_ref);
    return 1;
}

/* internal: is `co` the coroutine of the running task? (gfl.pcall on 5.1
 * runs its function in a coroutine of its own and forwards awaits) */
static int l_in_task(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    lua_pushboolean(L, rt->current != NULL);
    return 1;
}

/* internal: one blocking iteration (gfl.run drives the loop with it) */
static int l_run_once(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    gfl_lua_rt_collect(rt);
    int n = GFL->loop_run_once(rt->loop, luaL_optnumber(L, 1, -1));
    if (n < 0)
        return gfl_lua_fail(L, "run", n);
    lua_pushinteger(L, n);
    return 1;
}

static int l_loop_running(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    lua_pushboolean(L, GFL->loop_is_running(rt->loop) == 1);
    return 1;
}

void gfl_lua_open_task(lua_State *L, int internal)
{
    /* The token the prelude yields before a waiter (see yielded_future). */
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    if (rt->ref_wait_token == LUA_NOREF) {
        lua_newtable(L);
        rt->ref_wait_token = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_wait_token);
    lua_setfield(L, internal, "WAIT");
    lua_pushcfunction(L, gfl_lua_spawn);
    lua_setfield(L, internal, "spawn");
    lua_pushcfunction(L, l_current_task);
    lua_setfield(L, internal, "current_task");
    lua_pushcfunction(L, l_in_task);
    lua_setfield(L, internal, "in_task");
    lua_pushcfunction(L, l_run_once);
    lua_setfield(L, internal, "run_once");
    lua_pushcfunction(L, l_loop_running);
    lua_setfield(L, internal, "loop_running");
}
