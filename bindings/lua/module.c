/*
 * require "globeflower": finds the core (an embedding host's gfl_api and
 * loop from the registry, else the linked core and the thread's current
 * loop), sets up the per-state runtime, and loads the Lua half of the
 * module (the prelude chunks embedded at build time).
 */
#include "gfl_lua.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "globeflower_lua.h"
#include "prelude.h"

/* The build (5.1 ... luajit) and the release, set by the build system. */
#ifndef GFL_LUA_BUILD
#error "GFL_LUA_BUILD (the Lua this module is built for) must be defined"
#endif
#ifndef PACKAGE_VERSION
#error "PACKAGE_VERSION (globeflower's version) must be defined"
#endif

const gfl_api *GFL;

/* The registry slot of the runtime: a light userdata key (looked up on
 * every call, so no string hashing and comparing). */
static const char rt_key;

/* The runtime's anchor userdata (NULL before the module is opened). */
gfl_lua_rt **gfl_lua_rt_slot(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&rt_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    gfl_lua_rt **p = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return p;
}

/* ---- the runtime ---- */

void gfl_lua_rt_ref(gfl_lua_rt *rt)
{
    __atomic_add_fetch(&rt->refs, 1, __ATOMIC_RELAXED);
}

void gfl_lua_rt_unref(gfl_lua_rt *rt)
{
    if (__atomic_sub_fetch(&rt->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        struct gfl_lua_dead *d = rt->dead;
        while (d) {
            struct gfl_lua_dead *next = d->next;
            free(d);
            d = next;
        }
        /* Our reference kept the loop's memory valid for late callbacks. */
        GFL->loop_unref(rt->loop);
        free(rt);
    }
}

gfl_lua_rt *gfl_lua_rt_get(lua_State *L)
{
    gfl_lua_rt **p = gfl_lua_rt_slot(L);
    if (!p || !*p || !(*p)->L)
        luaL_error(L, "globeflower: the module is not initialised (or its state is closing)");
    return *p;
}

void gfl_lua_rt_collect(gfl_lua_rt *rt)
{
    if (!__atomic_load_n(&rt->dead, __ATOMIC_RELAXED))
        return; /* the usual case, without a locked instruction */
    struct gfl_lua_dead *d = __atomic_exchange_n(&rt->dead, NULL, __ATOMIC_ACQ_REL);
    while (d) {
        struct gfl_lua_dead *next = d->next;
        if (rt->L)
            luaL_unref(rt->L, LUA_REGISTRYINDEX, d->ref);
        free(d);
        d = next;
    }
}

/* The Lua state is closing (or the runtime was dropped from the registry). */
static int rt_gc(lua_State *L)
{
    gfl_lua_rt **p = lua_touserdata(L, 1);
    gfl_lua_rt *rt = *p;
    if (!rt)
        return 0;
    *p = NULL;
    gfl_lua_rt_collect(rt);
    /* Other hosts must not call into a closing state: its exports go
     * first (their release sees rt->L == NULL and leaves the state be). */
    rt->L = NULL;
    gfl_lua_unexport_all(rt);
    if (rt->ref_handler != LUA_NOREF)
        GFL->loop_set_exception_handler(rt->loop, NULL, NULL);
    if (rt->owns_loop) {
        if (GFL->loop_current() == rt->loop)
            GFL->loop_set_current(NULL);
        GFL->loop_free(rt->loop); /* closes: callbacks see rt->L == NULL */
    }
    gfl_lua_rt_unref(rt);
    return 0;
}

/* ---- shared helpers ---- */

int gfl_lua_raise(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return lua_error(L);
}

/* The prelude's chunks are named "@globeflower/<file>.lua" (embed.sh). */
static int in_module(const lua_Debug *ar)
{
    return strncmp(ar->source, "@globeflower/", 13) == 0;
}

void gfl_lua_where_user(lua_State *L)
{
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar))
            break;
        if (ar.currentline > 0 && !in_module(&ar)) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    lua_pushliteral(L, "");
}

int gfl_lua_argerror(lua_State *L, int argn, const char *fname, const char *fmt, ...)
{
    gfl_lua_where_user(L);
    lua_pushfstring(L, "bad argument #%d to '%s' (", argn, fname);
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_pushliteral(L, ")");
    lua_concat(L, 4);
    return lua_error(L);
}

int gfl_lua_typeerror(lua_State *L, int idx, int argn, const char *fname, const char *expected)
{
    const char *got = lua_isnone(L, idx) ? "no value" : luaL_typename(L, idx);
    if (lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) != lua_tonumber(L, idx))
        got = "nan";
    return gfl_lua_argerror(L, argn, fname, "%s expected, got %s", expected, got);
}

lua_Number gfl_lua_checknumber(lua_State *L, int idx, int argn, const char *fname)
{
    lua_Number n = lua_tonumber(L, idx);
    if (lua_type(L, idx) != LUA_TNUMBER || n != n)
        gfl_lua_typeerror(L, idx, argn, fname, "number");
    return n;
}

lua_Integer gfl_lua_checkinteger(lua_State *L, int idx, int argn, const char *fname)
{
    if (!gfl_isinteger(L, idx)) {
        if (lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) == lua_tonumber(L, idx))
            gfl_lua_argerror(L, argn, fname, "number has no integer representation");
        gfl_lua_typeerror(L, idx, argn, fname, "integer");
    }
    return lua_tointeger(L, idx);
}

const char *gfl_lua_checklstring(lua_State *L, int idx, int argn, const char *fname, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
        gfl_lua_typeerror(L, idx, argn, fname, "string");
    return lua_tolstring(L, idx, len);
}

void gfl_lua_checkfunction(lua_State *L, int idx, int argn, const char *fname)
{
    if (lua_type(L, idx) != LUA_TFUNCTION)
        gfl_lua_typeerror(L, idx, argn, fname, "function");
}

void gfl_lua_check_unix_path(lua_State *L, size_t len, int argn, const char *fname)
{
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (len == 0)
        gfl_lua_argerror(L, argn, fname, "a socket path expected, got an empty string");
    if (len > max)
        gfl_lua_argerror(L, argn, fname, "socket path too long: %d bytes, at most %d", (int)len, (int)max);
}

/* C.argerror(argn, fname, message): the same from the prelude. */
static int l_argerror(lua_State *L)
{
    int argn = (int)luaL_checkinteger(L, 1);
    const char *fname = luaL_checkstring(L, 2);
    const char *msg = luaL_checkstring(L, 3);
    return gfl_lua_argerror(L, argn, fname, "%s", msg);
}

/* C.where_user() -> "file:line: " of the user's code (or "") */
static int l_where_user(lua_State *L)
{
    gfl_lua_where_user(L);
    return 1;
}

int gfl_lua_fail(lua_State *L, const char *what, int code)
{
    return luaL_error(L, "%s: %s", what, GFL->strerror(code));
}

int gfl_lua_push_failure(lua_State *L, int code, const char *message)
{
    lua_pushnil(L);
    lua_pushstring(L, message ? message : GFL->strerror(code));
    lua_pushinteger(L, code);
    return 3;
}

int gfl_lua_push_failure_value(lua_State *L, const gfl_value *error)
{
    if (!error || GFL->value_type_of(error) != GFL_VALUE_ERROR)
        return gfl_lua_push_failure(L, GFL_ECLOSED, "closed");
    const char *type = GFL->value_error_type(error);
    const char *msg = GFL->value_error_message(error);
    lua_pushnil(L);
    if (type && *type)
        lua_pushfstring(L, "%s: %s", type, msg ? msg : "");
    else
        lua_pushstring(L, msg ? msg : "error");
    lua_pushinteger(L, GFL->value_error_code(error));
    return 3;
}

int gfl_lua_add_done_callback(gfl_future *f, gfl_future_callback cb, void *arg, gfl_release_fn release)
{
    if (GFL_API_HAS(GFL, future_add_done_callback_ex))
        return GFL->future_add_done_callback_ex(f, cb, arg, release);
    return GFL->future_add_done_callback(f, cb, arg);
}

void gfl_lua_register(lua_State *L, int idx, const luaL_Reg *l)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    for (; l->name; l++) {
        lua_pushcfunction(L, l->func);
        lua_setfield(L, idx, l->name);
    }
}

void gfl_lua_newclass(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    int mt = lua_gettop(L);
    lua_newtable(L);
    for (const luaL_Reg *l = methods; l->name; l++) {
        lua_pushvalue(L, mt);
        lua_pushcclosure(L, l->func, 1);
        lua_setfield(L, -2, l->name);
    }
    lua_setfield(L, mt, "__index");
    if (gc) {
        lua_pushvalue(L, mt);
        lua_pushcclosure(L, gc, 1);
        lua_setfield(L, mt, "__gc");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

const char *gfl_lua_opt_string(lua_State *L, int idx, const char *key, const char *def)
{
    if (!idx || !lua_istable(L, idx))
        return def;
    lua_getfield(L, idx, key);
    const char *s = def;
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
        s = lua_tostring(L, -1); /* anchored by the options table */
    else if (!lua_isnil(L, -1))
        luaL_error(L, "option '%s' must be a string", key);
    lua_pop(L, 1);
    return s;
}

double gfl_lua_opt_number(lua_State *L, int idx, const char *key, double def)
{
    if (!idx || !lua_istable(L, idx))
        return def;
    lua_getfield(L, idx, key);
    double d = def;
    if (lua_type(L, -1) == LUA_TNUMBER)
        d = lua_tonumber(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "option '%s' must be a number", key);
    lua_pop(L, 1);
    return d;
}

int gfl_lua_opt_bool(lua_State *L, int idx, const char *key, int def)
{
    if (!idx || !lua_istable(L, idx))
        return def;
    lua_getfield(L, idx, key);
    int b = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return b;
}

#if LUA_VERSION_NUM < 502
void gfl_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    (void)nup;
    gfl_lua_register(L, -1, l);
}

void *gfl_testudata(lua_State *L, int ud, const char *tname)
{
    void *p = lua_touserdata(L, ud);
    if (!p || !lua_getmetatable(L, ud))
        return NULL;
    luaL_getmetatable(L, tname);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}
#endif

/* ---- errors raised by callbacks ---- */

int gfl_lua_call(gfl_lua_rt *rt, lua_State *L, int nargs, int nresults, const char *what)
{
    int fn = lua_gettop(L) - nargs;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_traceback);
    lua_insert(L, fn);
    int status = lua_pcall(L, nargs, nresults, fn);
    lua_remove(L, fn);
    if (status != 0) {
        gfl_lua_report(rt, L, what);
        return -1;
    }
    return 0;
}

void gfl_lua_report(gfl_lua_rt *rt, lua_State *L, const char *message)
{
    /* debug.traceback turned string errors into "msg\nstack traceback:...":
     * that text is no longer the object raised, so it is reported as a
     * message and a traceback (a table error goes as itself). */
    gfl_value *e;
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        const char *text = lua_tolstring(L, -1, &len);
        const char *cut = strstr(text, "\nstack traceback:");
        lua_pushlstring(L, text, cut ? (size_t)(cut - text) : len);
        e = GFL->value_error(GFL_EUNKNOWN, "LuaError", lua_tostring(L, -1), text);
        lua_pop(L, 1);
    } else {
        e = gfl_lua_error_value(L, -1, NULL);
    }
    lua_pop(L, 1);
    if (e) {
        GFL->loop_call_exception_handler(rt->loop, message, e);
        GFL->value_unref(e);
    }
}

/* A Lua exception handler: called later from the ready queue (the core may
 * report from a place where running Lua is unwise, such as a finaliser). */
struct pending_report {
    gfl_lua_rt *rt;
    char *message;
    gfl_value *error;
};

static void pending_release(void *arg)
{
    struct pending_report *p = arg;
    GFL->value_unref(p->error);
    gfl_lua_rt_unref(p->rt);
    free(p->message);
    free(p);
}

static void pending_run(void *arg)
{
    struct pending_report *p = arg;
    gfl_lua_rt *rt = p->rt;
    lua_State *L = rt->L;
    if (L && rt->ref_handler != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_handler);
        lua_pushstring(L, p->message);
        if (p->error)
            gfl_lua_push_error(L, p->error);
        else
            lua_pushnil(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_traceback);
        lua_insert(L, -4);
        if (lua_pcall(L, 2, 0, -4) != 0) {
            fprintf(stderr, "globeflower: the Lua exception handler failed: %s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    pending_release(p);
}

static void exception_handler(gfl_loop *loop, const char *message, gfl_value *error, void *ud)
{
    gfl_lua_rt *rt = ud;
    struct pending_report *p = calloc(1, sizeof *p);
    if (!p)
        return;
    p->message = strdup(message ? message : "unhandled error");
    p->error = error ? GFL->value_ref(error) : NULL;
    p->rt = rt;
    gfl_lua_rt_ref(rt);
    if (!p->message || GFL->call_soon_ex(loop, pending_run, p, pending_release) < 0)
        pending_release(p);
}

/* gfl.set_exception_handler(fn | nil) */
static int l_set_exception_handler(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    if (!lua_isnoneornil(L, 1))
        gfl_lua_checkfunction(L, 1, 1, "set_exception_handler");
    luaL_unref(L, LUA_REGISTRYINDEX, rt->ref_handler);
    rt->ref_handler = LUA_NOREF;
    if (lua_isnoneornil(L, 1))
        return GFL->loop_set_exception_handler(rt->loop, NULL, NULL), 0;
    lua_pushvalue(L, 1);
    rt->ref_handler = luaL_ref(L, LUA_REGISTRYINDEX);
    int rc = GFL->loop_set_exception_handler(rt->loop, exception_handler, rt);
    if (rc < 0)
        return gfl_lua_fail(L, "set_exception_handler", rc);
    return 0;
}

/* gfl.call_exception_handler(message, err) */
static int l_call_exception_handler(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    const char *message = gfl_lua_checklstring(L, 1, 1, "call_exception_handler", NULL);
    gfl_value *e = lua_isnoneornil(L, 2) ? NULL : gfl_lua_error_value(L, 2, NULL);
    GFL->loop_call_exception_handler(rt->loop, message, e);
    if (e)
        GFL->value_unref(e);
    return 0;
}

/* ---- the loop object and time ---- */

#define LOOP_MT "globeflower.Loop"

/* The loop object holds a reference to the runtime: its methods (run_once
 * is an engine's per-frame call) find it without a registry lookup. */
static gfl_lua_rt *check_loop(lua_State *L)
{
    gfl_lua_rt **u = gfl_lua_checkself(L, 1, LOOP_MT);
    gfl_lua_rt *rt = *u;
    if (!rt || !rt->L)
        luaL_error(L, "globeflower: the module's state is closing");
    return rt;
}

static int loop_gc(lua_State *L)
{
    gfl_lua_rt **u = lua_touserdata(L, 1);
    if (*u)
        gfl_lua_rt_unref(*u);
    *u = NULL;
    return 0;
}

static int l_time(lua_State *L)
{
    lua_pushnumber(L, GFL->loop_time(gfl_lua_rt_get(L)->loop));
    return 1;
}

static int loop_time(lua_State *L)
{
    lua_pushnumber(L, GFL->loop_time(check_loop(L)->loop));
    return 1;
}

/* Pumping the loop from inside a task (or a callback) would run the
 * loop re-entrantly: refused with one clear message. */
static void check_outside_loop(lua_State *L, gfl_lua_rt *rt, const char *what)
{
    if (rt->current || GFL->loop_is_running(rt->loop) == 1)
        luaL_error(L, "%s: the loop is already running (called from inside a task or a callback)", what);
}

/* The number of callbacks run, or raises: an interrupt (a host's
 * KeyboardInterrupt, say) raises the error it was given. */
static int pumped(lua_State *L, gfl_lua_rt *rt, const char *what, int n)
{
    if (n == GFL_EINTR) {
        gfl_value *e = GFL->loop_take_interrupt(rt->loop);
        if (e) {
            gfl_lua_push_error(L, e);
            GFL->value_unref(e);
            return lua_error(L);
        }
    }
    if (n < 0)
        return gfl_lua_fail(L, what, n);
    lua_pushinteger(L, n);
    return 1;
}

/* gfl.run_for(max_seconds) -> callbacks run: non-blocking iterations until
 * the loop is idle or the budget is spent (a host's frame). */
static int l_run_for(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    double budget = gfl_lua_checknumber(L, 1, 1, "run_for");
    if (!(budget >= 0))
        return gfl_lua_argerror(L, 1, "run_for", "a number of seconds >= 0 expected");
    check_outside_loop(L, rt, "gfl.run_for");
    gfl_lua_rt_collect(rt);
    return pumped(L, rt, "run_for", GFL->loop_run_for(rt->loop, budget));
}

static int loop_run_once(lua_State *L)
{
    gfl_lua_rt *rt = check_loop(L);
    double timeout = lua_isnoneornil(L, 2) ? 0 : gfl_lua_checknumber(L, 2, 1, "run_once");
    check_outside_loop(L, rt, "run_once");
    gfl_lua_rt_collect(rt);
    return pumped(L, rt, "run_once", GFL->loop_run_once(rt->loop, timeout));
}

static int loop_run(lua_State *L)
{
    gfl_lua_rt *rt = check_loop(L);
    int rc = GFL->loop_run(rt->loop);
    if (rc < 0)
        return gfl_lua_fail(L, "run", rc);
    return 0;
}

static int loop_stop(lua_State *L)
{
    int rc = GFL->loop_stop(check_loop(L)->loop);
    if (rc < 0)
        return gfl_lua_fail(L, "stop", rc);
    return 0;
}

static int loop_is_running(lua_State *L)
{
    lua_pushboolean(L, GFL->loop_is_running(check_loop(L)->loop) == 1);
    return 1;
}

static int loop_is_closed(lua_State *L)
{
    gfl_lua_checkself(L, 1, LOOP_MT);
    gfl_lua_rt **p = gfl_lua_rt_slot(L);
    lua_pushboolean(L, !p || !*p || GFL->loop_is_closed((*p)->loop) != 0);
    return 1;
}

static int loop_set_debug(lua_State *L)
{
    GFL->loop_set_debug(check_loop(L)->loop, lua_toboolean(L, 2));
    return 0;
}

static int loop_get_debug(lua_State *L)
{
    lua_pushboolean(L, GFL->loop_get_debug(check_loop(L)->loop) == 1);
    return 1;
}

static int loop_backend_fd(lua_State *L)
{
    lua_pushinteger(L, GFL->loop_backend_fd(check_loop(L)->loop));
    return 1;
}

static int loop_backend_timeout(lua_State *L)
{
    lua_pushnumber(L, GFL->loop_backend_timeout(check_loop(L)->loop));
    return 1;
}

/* gfl.loop(): the loop this state runs on (one object per state). */
static int l_loop(lua_State *L)
{
    gfl_lua_rt_get(L);
    lua_getfield(L, LUA_REGISTRYINDEX, LOOP_MT ".object");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        gfl_lua_rt **u = gfl_newuserdata(L, sizeof *u);
        *u = gfl_lua_rt_get(L);
        gfl_lua_rt_ref(*u);
        luaL_getmetatable(L, LOOP_MT);
        lua_setmetatable(L, -2);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, LOOP_MT ".object");
    }
    return 1;
}

static const luaL_Reg loop_methods[] = {
    {"run_once", loop_run_once},
    {"run", loop_run},
    {"stop", loop_stop},
    {"time", loop_time},
    {"is_running", loop_is_running},
    {"is_closed", loop_is_closed},
    {"set_debug", loop_set_debug},
    {"get_debug", loop_get_debug},
    {"backend_fd", loop_backend_fd},
    {"backend_timeout", loop_backend_timeout},
    {NULL, NULL},
};

static const luaL_Reg module_functions[] = {
    {"loop", l_loop},
    {"time", l_time},
    {"run_for", l_run_for},
    {"set_exception_handler", l_set_exception_handler},
    {"call_exception_handler", l_call_exception_handler},
    {NULL, NULL},
};

/* ---- opening ---- */

static const gfl_api *find_api(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, GFL_LUA_API_KEY);
    const gfl_api *api = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!api)
        api = gfl_api_get();
    if (!api || api->abi_major != GFL_ABI_MAJOR || !GFL_API_HAS(api, loop_acquire))
        luaL_error(L, "globeflower: the core's ABI (%d.%d) does not match the module's (%d.%d)",
                   api ? (int)api->abi_major : -1, api ? (int)api->abi_minor : -1,
                   GFL_ABI_MAJOR, GFL_ABI_MINOR);
    if (GFL && GFL != api && GFL->abi_minor != api->abi_minor)
        luaL_error(L, "globeflower: two different cores in one process");
    return api;
}

/* A registry reference to a new table with weak keys or values. */
static int weak_table(lua_State *L, const char *mode)
{
    lua_newtable(L);
    lua_newtable(L);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static gfl_lua_rt *open_runtime(lua_State *L)
{
    gfl_lua_rt **p = gfl_lua_rt_slot(L);
    if (p && *p)
        return *p; /* required again (package.loaded was cleared) */

    gfl_lua_rt *rt = calloc(1, sizeof *rt);
    if (!rt)
        luaL_error(L, "globeflower: out of memory");
    rt->refs = 1;
    rt->ref_handler = LUA_NOREF;
    rt->ref_error_new = rt->ref_error_info = rt->ref_internal = LUA_NOREF;
    rt->ref_wait_token = LUA_NOREF;

    lua_getfield(L, LUA_REGISTRYINDEX, GFL_LUA_LOOP_KEY);
    gfl_loop *loop = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!loop)
        loop = GFL->loop_current();
    if (loop) {
        rt->loop = GFL->loop_ref(loop);
    } else {
        /* Two references: gfl_loop_free at close drops one, the memory
         * stays valid until the last C object of this state is gone. */
        rt->loop = GFL->loop_new(NULL);
        rt->owns_loop = 1;
        if (rt->loop) {
            GFL->loop_ref(rt->loop);
            GFL->loop_set_current(rt->loop);
        }
    }
    if (!rt->loop) {
        free(rt);
        luaL_error(L, "globeflower: cannot create or share a loop");
    }

    /* The runtime's anchor: its __gc runs when the state closes. */
    p = gfl_newuserdata(L, sizeof *p);
    *p = rt;
    lua_newtable(L);
    lua_pushcfunction(L, rt_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushlightuserdata(L, (void *)&rt_key);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);

    /* Callbacks run on a thread of their own: whatever coroutine called
     * require may be suspended when they fire. */
    rt->L = lua_newthread(L);
    luaL_ref(L, LUA_REGISTRYINDEX);

    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    rt->ref_traceback = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    lua_newtable(L); /* gfl.array_mt: a marker, no metamethods */
    rt->ref_array_mt = luaL_ref(L, LUA_REGISTRYINDEX);
    rt->ref_arraylen = weak_table(L, "k");
    rt->ref_foreign = weak_table(L, "v");
    rt->ref_errobjects = weak_table(L, "v");
    rt->ref_errvalues = weak_table(L, "k");
    return rt;
}

static void load_chunk(lua_State *L, const char *name, const unsigned char *code, size_t len, int gfl, int internal)
{
    if (luaL_loadbuffer(L, (const char *)code, len, name) != 0)
        lua_error(L);
    lua_pushvalue(L, gfl);
    lua_pushvalue(L, internal);
    lua_call(L, 2, 0);
}

int luaopen_globeflower(lua_State *L);

/* lua_close dlcloses C modules, but a loop that outlives the state may
 * still hold our callbacks (a transport's protocol, a pending step): keep
 * this module mapped for the life of the process. */
static void pin_module(void)
{
    static int pinned;
    Dl_info info;
    if (pinned || !dladdr((void *)pin_module, &info) || !info.dli_fname)
        return;
    if (dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE))
        pinned = 1;
}

int luaopen_globeflower(lua_State *L)
{
    pin_module();
    GFL = find_api(L);
    gfl_lua_rt *rt = open_runtime(L);

    lua_newtable(L); /* the module */
    int gfl = lua_gettop(L);
    gfl_lua_register(L, gfl, module_functions);
    lua_newtable(L); /* internals shared with the prelude */
    int internal = lua_gettop(L);
    lua_pushvalue(L, internal);
    luaL_unref(L, LUA_REGISTRYINDEX, rt->ref_internal);
    rt->ref_internal = luaL_ref(L, LUA_REGISTRYINDEX);

    gfl_lua_newclass(L, LOOP_MT, loop_methods, loop_gc);
    gfl_lua_open_value(L, internal);
    gfl_lua_open_convert(L, internal);
    gfl_lua_open_future(L, internal);
    gfl_lua_open_task(L, internal);
    gfl_lua_open_callbacks(L, internal);
    gfl_lua_open_stream(L, internal);
    gfl_lua_open_server(L, internal);
    gfl_lua_open_protocol(L, internal);
    gfl_lua_open_dns(L, internal);
    gfl_lua_open_datagram(L, internal);
    gfl_lua_open_process(L, internal);
    gfl_lua_open_tls(L, internal);
    gfl_lua_open_plugin(L, internal);
    gfl_lua_open_export(L, internal);
    gfl_lua_open_poll(L, internal);
    gfl_lua_open_tty(L, internal);
    gfl_lua_open_work(L, internal);
    gfl_lua_open_channel(L, internal);
    gfl_lua_open_thread(L, internal);
    gfl_lua_open_fs(L, internal);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_array_mt);
    lua_setfield(L, gfl, "array_mt");
    lua_pushcfunction(L, l_argerror);
    lua_setfield(L, internal, "argerror");
    lua_pushcfunction(L, l_where_user);
    lua_setfield(L, internal, "where_user");

    lua_pushinteger(L, GFL_ABI_MAJOR);
    lua_setfield(L, gfl, "ABI_MAJOR");
    lua_pushinteger(L, (lua_Integer)GFL->abi_minor);
    lua_setfield(L, gfl, "ABI_MINOR");
    lua_pushliteral(L, LUA_VERSION);
    lua_setfield(L, gfl, "LUA_VERSION");
    lua_pushliteral(L, GFL_LUA_BUILD);
    lua_setfield(L, gfl, "LUA_BUILD");
    lua_pushliteral(L, PACKAGE_VERSION);
    lua_setfield(L, gfl, "version");

    for (size_t i = 0; i < sizeof gfl_lua_prelude / sizeof gfl_lua_prelude[0]; i++)
        load_chunk(L, gfl_lua_prelude[i].name, gfl_lua_prelude[i].code, gfl_lua_prelude[i].len, gfl, internal);

    /* The prelude defines these; C calls them. */
    lua_getfield(L, internal, "error_new");
    luaL_unref(L, LUA_REGISTRYINDEX, rt->ref_error_new);
    rt->ref_error_new = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, internal, "error_info");
    luaL_unref(L, LUA_REGISTRYINDEX, rt->ref_error_info);
    rt->ref_error_info = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_settop(L, gfl);
    return 1;
}
