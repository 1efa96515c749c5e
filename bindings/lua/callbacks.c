/*
 * Plain callbacks: call_soon / call_later / call_at with cancellable
 * handles, the timer behind gfl.sleep, and signal handlers.
 *
 * A scheduled Lua callback is a packed {fn, args...} in the registry; the
 * core's release hook frees it when the callback will never run, so a
 * cancelled or dropped callback leaks nothing.
 */
#include "gfl_lua.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define HANDLE_MT "globeflower.Handle"

struct lua_callback {
    gfl_lua_rt *rt;
    int ref; /* {n, fn, args...} */
};

typedef struct {
    gfl_handle h;
    double when; /* < 0 for call_soon */
} lua_handle;

static void callback_release(void *arg)
{
    struct lua_callback *cb = arg;
    if (cb->rt->L)
        luaL_unref(cb->rt->L, LUA_REGISTRYINDEX, cb->ref);
    gfl_lua_rt_unref(cb->rt);
    free(cb);
}

/* Pushes fn, args... of a packed callback; returns the argument count. */
static int push_packed(lua_State *L, int ref)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    int t = lua_gettop(L);
    lua_rawgeti(L, t, 1);
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n + 1, "too many arguments");
    for (int i = 2; i <= n + 1; i++)
        lua_rawgeti(L, t, i);
    lua_remove(L, t);
    return n - 1;
}

static void callback_run(void *arg)
{
    struct lua_callback *cb = arg;
    lua_State *L = cb->rt->L;
    if (L) {
        gfl_lua_rt_collect(cb->rt);
        int nargs = push_packed(L, cb->ref);
        gfl_lua_call(cb->rt, L, nargs, 0, "Exception in callback");
    }
    callback_release(cb);
}

/* Packs stack values [first, top] (fn and args) into a callback. */
static struct lua_callback *pack_callback(lua_State *L, gfl_lua_rt *rt, int first, const char *fname)
{
    gfl_lua_checkfunction(L, first, first, fname);
    int top = lua_gettop(L);
    struct lua_callback *cb = malloc(sizeof *cb);
    if (!cb) {
        luaL_error(L, "out of memory");
        return NULL;
    }
    lua_createtable(L, top - first + 2, 0);
    lua_pushinteger(L, top - first + 1);
    lua_rawseti(L, -2, 1);
    for (int i = first; i <= top; i++) {
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, i - first + 2);
    }
    cb->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    cb->rt = rt;
    gfl_lua_rt_ref(rt);
    return cb;
}

static int push_handle(lua_State *L, gfl_handle h, double when)
{
    lua_handle *u = gfl_newuserdata(L, sizeof *u);
    u->h = h;
    u->when = when;
    luaL_getmetatable(L, HANDLE_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int schedule(lua_State *L, int first, double when, const char *fname)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    struct lua_callback *cb = pack_callback(L, rt, first, fname);
    gfl_handle h = when < 0 ? GFL->call_soon_ex(rt->loop, callback_run, cb, callback_release)
                            : GFL->call_at_ex(rt->loop, when, callback_run, cb, callback_release);
    if (h < 0) {
        callback_release(cb);
        return gfl_lua_fail(L, "call_soon", (int)h);
    }
    return push_handle(L, h, when);
}

/* gfl.call_soon(fn, ...) -> handle */
static int l_call_soon(lua_State *L)
{
    return schedule(L, 1, -1, "call_soon");
}

/* gfl.call_later(delay, fn, ...) -> handle */
static int l_call_later(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    double delay = gfl_lua_checknumber(L, 1, 1, "call_later");
    return schedule(L, 2, GFL->loop_time(rt->loop) + (delay > 0 ? delay : 0), "call_later");
}

/* gfl.call_at(when, fn, ...) -> handle (when on the gfl.time() clock) */
static int l_call_at(lua_State *L)
{
    double when = gfl_lua_checknumber(L, 1, 1, "call_at");
    return schedule(L, 2, when > 0 ? when : 0, "call_at");
}

static int handle_cancel(lua_State *L)
{
    lua_handle *u = gfl_lua_checkself(L, 1, HANDLE_MT);
    int rc = GFL->handle_cancel(gfl_lua_rt_get(L)->loop, u->h);
    lua_pushboolean(L, rc == 0);
    return 1;
}

static int handle_pending(lua_State *L)
{
    lua_handle *u = gfl_lua_checkself(L, 1, HANDLE_MT);
    lua_pushboolean(L, GFL->handle_is_pending(gfl_lua_rt_get(L)->loop, u->h) == 1);
    return 1;
}

static int handle_when(lua_State *L)
{
    lua_handle *u = gfl_lua_checkself(L, 1, HANDLE_MT);
    if (u->when < 0)
        return 0;
    lua_pushnumber(L, u->when);
    return 1;
}

/* ---- the timer behind gfl.sleep ---- */

static void sleep_fire(void *arg)
{
    gfl_future *f = arg;
    if (GFL->future_state_of(f) == GFL_FUTURE_PENDING)
        GFL->future_set_result(f, GFL->value_nil());
    GFL->future_unref(f); /* release() only runs for callbacks that never ran */
}

static void sleep_release(void *arg)
{
    GFL->future_unref(arg);
}

/* internal: sleep_timer(delay) -> future (light userdata), handle number.
 * The timer owns the future; the prelude yields it, and cancels the timer
 * when the wait is cancelled. */
static int l_sleep_timer(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    double delay = luaL_checknumber(L, 1);
    gfl_future *f = GFL->future_new(rt->loop);
    if (!f)
        return gfl_lua_fail(L, "sleep", GFL_ECLOSED);
    gfl_handle h;
    if (delay <= 0)
        h = GFL->call_soon_ex(rt->loop, sleep_fire, f, sleep_release);
    else
        h = GFL->call_at_ex(rt->loop, GFL->loop_time(rt->loop) + delay, sleep_fire, f, sleep_release);
    if (h < 0) {
        GFL->future_unref(f);
        return gfl_lua_fail(L, "sleep", (int)h);
    }
    lua_pushlightuserdata(L, f);
    lua_pushnumber(L, (lua_Number)h);
    return 2;
}

static int l_cancel_handle(lua_State *L)
{
    gfl_handle h = (gfl_handle)luaL_checknumber(L, 1);
    GFL->handle_cancel(gfl_lua_rt_get(L)->loop, h);
    return 0;
}

/* ---- signals ---- */

static const struct {
    const char *name;
    int num;
} signal_names[] = {
    {"SIGHUP", SIGHUP}, {"SIGINT", SIGINT}, {"SIGQUIT", SIGQUIT}, {"SIGTERM", SIGTERM},
    {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGCHLD", SIGCHLD}, {"SIGWINCH", SIGWINCH},
    {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM}, {"SIGKILL", SIGKILL}, {"SIGCONT", SIGCONT},
    {"SIGSTOP", SIGSTOP}, {"SIGTSTP", SIGTSTP}, {"SIGABRT", SIGABRT}, {"SIGBUS", SIGBUS},
    {"SIGFPE", SIGFPE}, {"SIGILL", SIGILL}, {"SIGSEGV", SIGSEGV}, {"SIGTRAP", SIGTRAP},
    {"SIGTTIN", SIGTTIN}, {"SIGTTOU", SIGTTOU}, {"SIGURG", SIGURG}, {"SIGXCPU", SIGXCPU},
    {"SIGXFSZ", SIGXFSZ}, {"SIGVTALRM", SIGVTALRM}, {"SIGPROF", SIGPROF}, {"SIGSYS", SIGSYS},
    {"SIGIO", SIGIO},
};

int gfl_lua_check_signal(lua_State *L, int idx, int argn, const char *fname)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        const char *name = lua_tostring(L, idx);
        for (size_t i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++)
            if (strcmp(name, signal_names[i].name) == 0 || strcmp(name, signal_names[i].name + 3) == 0)
                return signal_names[i].num;
        return gfl_lua_argerror(L, argn, fname, "unknown signal name '%s'", name);
    }
    lua_Integer n = gfl_lua_checkinteger(L, idx, argn, fname);
    if (n <= 0 || n >= 65)
        return gfl_lua_argerror(L, argn, fname, "no signal has the number %d", (int)n);
    return (int)n;
}

#define SIGNALS_KEY "globeflower.signals"

static void signal_run(void *arg)
{
    struct lua_callback *cb = arg;
    lua_State *L = cb->rt->L;
    if (!L)
        return;
    int nargs = push_packed(L, cb->ref);
    gfl_lua_call(cb->rt, L, nargs, 0, "Exception in signal handler");
}

/* The registry keeps {signum = callback userdata}; its __gc frees the
 * callback once the handler is removed or the state closes. */
static int signal_box_gc(lua_State *L)
{
    struct lua_callback **p = lua_touserdata(L, 1);
    if (*p) {
        gfl_lua_rt *rt = (*p)->rt;
        /* The loop may still hold the handler: take it back (rt's loop
         * reference keeps the pointer valid even once it is closed). */
        GFL->remove_signal_handler(rt->loop, (int)lua_tointeger(L, lua_upvalueindex(1)));
        luaL_unref(L, LUA_REGISTRYINDEX, (*p)->ref);
        gfl_lua_rt_unref(rt);
        free(*p);
        *p = NULL;
    }
    return 0;
}

/* gfl.add_signal_handler(sig, fn, ...) */
static int l_add_signal_handler(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    int signum = gfl_lua_check_signal(L, 1, 1, "add_signal_handler");
    struct lua_callback *cb = pack_callback(L, rt, 2, "add_signal_handler");
    struct lua_callback **box = gfl_newuserdata(L, sizeof *box);
    *box = cb;
    lua_newtable(L);
    lua_pushinteger(L, signum);
    lua_pushcclosure(L, signal_box_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    int rc = GFL->add_signal_handler(rt->loop, signum, signal_run, cb);
    if (rc < 0) {
        /* Not installed: the box must not remove a handler installed
         * earlier for this signal when it is collected. */
        *box = NULL;
        luaL_unref(L, LUA_REGISTRYINDEX, cb->ref);
        gfl_lua_rt_unref(rt);
        free(cb);
        return gfl_lua_fail(L, "add_signal_handler", rc);
    }
    /* Replacing an old box: unregistering is skipped, the new one is in. */
    lua_getfield(L, LUA_REGISTRYINDEX, SIGNALS_KEY);
    lua_pushinteger(L, signum);
    lua_rawget(L, -2);
    struct lua_callback **old = lua_touserdata(L, -1);
    if (old && *old) {
        luaL_unref(L, LUA_REGISTRYINDEX, (*old)->ref);
        gfl_lua_rt_unref((*old)->rt);
        free(*old);
        *old = NULL;
    }
    lua_pop(L, 1);
    lua_pushinteger(L, signum);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    return 0;
}

/* gfl.remove_signal_handler(sig) -> true if one was removed */
static int l_remove_signal_handler(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    int signum = gfl_lua_check_signal(L, 1, 1, "remove_signal_handler");
    int rc = GFL->remove_signal_handler(rt->loop, signum);
    lua_getfield(L, LUA_REGISTRYINDEX, SIGNALS_KEY);
    lua_pushinteger(L, signum);
    lua_rawget(L, -2);
    struct lua_callback **box = lua_touserdata(L, -1);
    if (box && *box) {
        luaL_unref(L, LUA_REGISTRYINDEX, (*box)->ref);
        gfl_lua_rt_unref((*box)->rt);
        free(*box);
        *box = NULL;
    }
    lua_pop(L, 1);
    lua_pushinteger(L, signum);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pushboolean(L, rc == 1);
    return 1;
}

static const luaL_Reg handle_methods[] = {
    {"cancel", handle_cancel},
    {"pending", handle_pending},
    {"when", handle_when},
    {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"call_soon", l_call_soon},
    {"call_later", l_call_later},
    {"call_at", l_call_at},
    {"add_signal_handler", l_add_signal_handler},
    {"remove_signal_handler", l_remove_signal_handler},
    {"sleep_timer", l_sleep_timer},
    {"cancel_handle", l_cancel_handle},
    {NULL, NULL},
};

void gfl_lua_open_callbacks(lua_State *L, int internal)
{
    gfl_lua_newclass(L, HANDLE_MT, handle_methods, NULL);
    gfl_lua_register(L, internal, functions);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, SIGNALS_KEY);
    lua_newtable(L);
    for (size_t i = 0; i < sizeof signal_names / sizeof signal_names[0]; i++) {
        lua_pushinteger(L, signal_names[i].num);
        lua_setfield(L, -2, signal_names[i].name);
    }
    lua_setfield(L, internal, "signals");
}
