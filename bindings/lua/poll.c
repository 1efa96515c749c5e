/*
 * gfl.poll(fd): readiness watchers on a file descriptor the user owns (the
 * core's add_reader/add_writer; luv's poll handle). poll:start(events, fn)
 * calls fn(poll, "r") / fn(poll, "w") from the loop on every iteration the
 * fd is ready, until poll:stop(). The loop keeps one reader and one writer
 * per fd: a second watcher on the same fd and direction replaces the first.
 *
 * The watcher's C part is separate from its userdata, so the loop never
 * holds a pointer into memory Lua may collect: it is freed once stopped
 * and collected (or when the state closes).
 */
#include "gfl_lua.h"

#include <stdlib.h>
#include <string.h>

#define POLL_MT "globeflower.Poll"

struct lua_poll {
    gfl_lua_rt *rt;   /* one reference */
    int fd;
    int ref_fn;       /* the callback while started, else LUA_NOREF */
    int ref_self;     /* the object, anchored while started */
    int reading, writing;
    int closed;
};

static struct lua_poll *check_poll(lua_State *L)
{
    struct lua_poll **u = gfl_lua_checkself(L, 1, POLL_MT);
    if (!*u)
        luaL_error(L, "the poll handle is closed");
    return *u;
}

static void poll_fire(struct lua_poll *p, const char *what)
{
    lua_State *L = p->rt->L;
    if (!L || p->ref_fn == LUA_NOREF)
        return;
    gfl_lua_rt_collect(p->rt);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_fn);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref_self);
    lua_pushstring(L, what);
    gfl_lua_call(p->rt, L, 2, 0, "Exception in poll callback");
}

static void poll_readable(void *arg)
{
    poll_fire(arg, "r");
}

static void poll_writable(void *arg)
{
    poll_fire(arg, "w");
}

/* Takes the watchers back from the loop and drops the anchors. */
static void poll_stop(lua_State *L, struct lua_poll *p)
{
    if (p->reading)
        GFL->remove_reader(p->rt->loop, p->fd);
    if (p->writing)
        GFL->remove_writer(p->rt->loop, p->fd);
    p->reading = p->writing = 0;
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, p->ref_fn);
        luaL_unref(L, LUA_REGISTRYINDEX, p->ref_self);
    }
    p->ref_fn = p->ref_self = LUA_NOREF;
}

/* poll:start(events, fn): events "r", "w" or "rw" */
static int p_start(lua_State *L)
{
    struct lua_poll *p = check_poll(L);
    const char *events = gfl_lua_checklstring(L, 2, 1, "start", NULL);
    int r = strchr(events, 'r') != NULL, w = strchr(events, 'w') != NULL;
    if ((!r && !w) || strspn(events, "rw") != strlen(events))
        return gfl_lua_argerror(L, 1, "start", "\"r\", \"w\" or \"rw\" expected, got \"%s\"", events);
    gfl_lua_checkfunction(L, 3, 2, "start");
    poll_stop(L, p);
    int rc = 0;
    if (r)
        rc = GFL->add_reader(p->rt->loop, p->fd, poll_readable, p);
    if (rc == 0 && w)
        rc = GFL->add_writer(p->rt->loop, p->fd, poll_writable, p);
    if (rc < 0) {
        if (r)
            GFL->remove_reader(p->rt->loop, p->fd);
        return gfl_lua_push_failure(L, rc, NULL);
    }
    p->reading = r;
    p->writing = w;
    lua_pushvalue(L, 3);
    p->ref_fn = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 1);
    p->ref_self = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushboolean(L, 1);
    return 1;
}

static int p_stop(lua_State *L)
{
    poll_stop(L, check_poll(L));
    return 0;
}

static int p_is_active(lua_State *L)
{
    struct lua_poll *p = check_poll(L);
    lua_pushboolean(L, p->reading || p->writing);
    return 1;
}

static int p_fileno(lua_State *L)
{
    lua_pushinteger(L, check_poll(L)->fd);
    return 1;
}

static void poll_free(lua_State *L, struct lua_poll **u)
{
    struct lua_poll *p = *u;
    if (!p)
        return;
    *u = NULL;
    poll_stop(L, p);
    gfl_lua_rt_unref(p->rt);
    free(p);
}

/* poll:close(): stops; the fd stays open (it is the caller's) */
static int p_close(lua_State *L)
{
    struct lua_poll **u = gfl_lua_checkself(L, 1, POLL_MT);
    poll_free(L, u);
    return 0;
}

static int p_gc(lua_State *L)
{
    struct lua_poll **u = lua_touserdata(L, 1);
    gfl_lua_rt **slot = gfl_lua_rt_slot(L);
    /* While the state closes the registry refs go with it. */
    poll_free(slot && *slot ? L : NULL, u);
    return 0;
}

static int p_tostring(lua_State *L)
{
    struct lua_poll **u = lua_touserdata(L, 1);
    if (*u)
        lua_pushfstring(L, "globeflower.Poll: fd %d", (*u)->fd);
    else
        lua_pushliteral(L, "globeflower.Poll: closed");
    return 1;
}

/* gfl.poll(fd) -> a watcher (stopped) */
static int l_poll(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    lua_Integer fd = gfl_lua_checkinteger(L, 1, 1, "poll");
    if (fd < 0 || fd > 0x7fffffff)
        return gfl_lua_argerror(L, 1, "poll", "a file descriptor >= 0 expected");
    struct lua_poll **u = gfl_newuserdata(L, sizeof *u);
    *u = NULL;
    luaL_getmetatable(L, POLL_MT);
    lua_setmetatable(L, -2);
    struct lua_poll *p = calloc(1, sizeof *p);
    if (!p)
        return luaL_error(L, "poll: out of memory");
    p->rt = rt;
    gfl_lua_rt_ref(rt);
    p->fd = (int)fd;
    p->ref_fn = p->ref_self = LUA_NOREF;
    *u = p;
    return 1;
}

static const luaL_Reg poll_methods[] = {
    {"start", p_start},
    {"stop", p_stop},
    {"close", p_close},
    {"is_active", p_is_active},
    {"fileno", p_fileno},
    {NULL, NULL},
};

void gfl_lua_open_poll(lua_State *L, int internal)
{
    gfl_lua_newclass(L, POLL_MT, poll_methods, p_gc);
    luaL_getmetatable(L, POLL_MT);
    lua_pushcfunction(L, p_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_poll);
    lua_setfield(L, internal, "poll");
}
