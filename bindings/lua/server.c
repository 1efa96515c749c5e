/*
 * Servers: start_server (each connection becomes a stream handed to a new
 * task running handler(stream)) and create_server (each connection gets a
 * protocol table from a Lua factory), over TCP, Unix sockets and TLS.
 *
 * As in asyncio the loop keeps a listening server alive until it is
 * closed: dropping the Lua object does not stop it.
 */
#include "gfl_lua.h"

#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "stream.h"

#define SERVER_MT "globeflower.Server"

typedef struct lua_server {
    gfl_lua_rt *rt;
    int refs;        /* the Lua object, the core (factory_release) */
    int fn_ref;      /* handler (streams) or protocol factory */
    int protocol;    /* protocol style */
    size_t limit;    /* streams' buffer limit */
    gfl_server *srv; /* one reference once created */
    gfl_future *create;
    /* The core reads the host list and port after create_server returned
     * (one lookup per host), so they live here until the server is freed. */
    char *hosts[2];
    char *port;
} lua_server;

static void server_unref(lua_server *s)
{
    if (--s->refs > 0)
        return;
    if (s->rt->L)
        luaL_unref(s->rt->L, LUA_REGISTRYINDEX, s->fn_ref);
    GFL->future_unref(s->create);
    gfl_lua_rt_unref(s->rt);
    free(s->hosts[0]);
    free(s->port);
    free(s);
}

static void factory_release(void *fud)
{
    server_unref(fud);
}

/* A stream connection is made: run handler(stream) in a new task. */
static void stream_made(gfl_lua_stream *st)
{
    lua_server *s = st->owner;
    st->owner = NULL;
    lua_State *L = s->rt->L;
    if (L) {
        lua_pushcfunction(L, gfl_lua_spawn);
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn_ref);
        gfl_lua_stream_push(L, st);
        if (gfl_lua_call(s->rt, L, 2, 0, "Exception in server connection") < 0 && st->t)
            GFL->transport_abort(st->t);
    }
    server_unref(s);
}

static void stream_lost(gfl_lua_stream *st)
{
    if (st->owner) { /* lost before it was made */
        lua_server *s = st->owner;
        st->owner = NULL;
        server_unref(s);
    }
}

static int server_factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    lua_server *s = fud;
    if (!s->rt->L)
        return GFL_ECLOSED;
    if (s->protocol)
        return gfl_lua_proto_create(s->rt, s->fn_ref, t, proto, ud);
    gfl_lua_stream *st = gfl_lua_stream_new(s->rt, s->limit);
    if (!st)
        return GFL_ENOMEM;
    int rc = gfl_lua_stream_factory(st, t, proto, ud);
    gfl_lua_stream_unref(st); /* the transport's share remains */
    if (rc < 0)
        return rc;
    st->on_made = stream_made;
    st->on_lost = stream_lost;
    st->owner = s;
    s->refs++;
    return 0;
}

int gfl_lua_server_started(lua_State *L, void *server, gfl_future *f);

static lua_server *server_new(lua_State *L, gfl_lua_rt *rt, int fn, int protocol, size_t limit)
{
    lua_server *s = calloc(1, sizeof *s);
    if (!s)
        luaL_error(L, "start_server: out of memory");
    s->rt = rt;
    gfl_lua_rt_ref(rt);
    lua_pushvalue(L, fn);
    s->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->protocol = protocol;
    s->limit = limit;
    s->refs = 2; /* the Lua object, the core's factory_release */
    return s;
}

static void push_server(lua_State *L, lua_server *s)
{
    lua_server **u = gfl_newuserdata(L, sizeof *u);
    *u = s;
    luaL_getmetatable(L, SERVER_MT);
    lua_setmetatable(L, -2);
}

/* internal: create_server(fn, protocol, host, port, opts) -> server,
 * waiter (fn is the handler, or the protocol factory when `protocol`) */
static int l_create_server(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int protocol = lua_toboolean(L, 2);
    const char *host = luaL_optstring(L, 3, NULL);
    const char *port = NULL;
    if (!lua_isnoneornil(L, 4)) {
        lua_pushvalue(L, 4);
        port = lua_tostring(L, -1);
        lua_replace(L, 4);
    }
    int opts = lua_istable(L, 5) ? 5 : 0;
    gfl_server_options o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.family = (int)gfl_lua_opt_number(L, opts, "family", 0);
    o.backlog = (int)gfl_lua_opt_number(L, opts, "backlog", 0);
    o.reuse_address = gfl_lua_opt_bool(L, opts, "reuse_address", 1) ? 0 : -1;
    o.reuse_port = gfl_lua_opt_bool(L, opts, "reuse_port", 0);
    o.start_serving = gfl_lua_opt_bool(L, opts, "start_serving", 1) ? 0 : -1;
    gfl_tls_options tls;
    int use_tls = gfl_lua_tls_options(L, opts, 1, &tls); /* may raise: before allocating */
    lua_server *s = server_new(L, rt, 1, protocol, (size_t)gfl_lua_opt_number(L, opts, "limit", 0));
    if (host && *host) {
        s->hosts[0] = strdup(host);
        o.hosts = (const char *const *)s->hosts;
    }
    if (port)
        o.port = s->port = strdup(port);
    gfl_future *f;
    if (use_tls)
        f = GFL->create_tls_server(rt->loop, server_factory, s, factory_release, &o, &tls);
    else
        f = GFL->create_server(rt->loop, server_factory, s, factory_release, &o);
    return gfl_lua_server_started(L, s, f);
}

int gfl_lua_server_started(lua_State *L, void *server, gfl_future *f)
{
    lua_server *s = server;
    if (!f) {
        s->refs = 1;
        server_unref(s);
        return luaL_error(L, "start_server: bad arguments or the loop is closed");
    }
    s->create = f;
    push_server(L, s);
    lua_pushlightuserdata(L, f);
    return 2;
}

/* internal: create_unix_server(fn, protocol, path, opts) -> server, waiter */
static int l_create_unix_server(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int protocol = lua_toboolean(L, 2);
    size_t len;
    const char *path = gfl_lua_checklstring(L, 3, 2, lua_toboolean(L, 2) ? "create_unix_server" : "start_unix_server", &len);
    gfl_lua_check_unix_path(L, len, 2, lua_toboolean(L, 2) ? "create_unix_server" : "start_unix_server");
    int opts = lua_istable(L, 4) ? 4 : 0;
    gfl_server_options o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.backlog = (int)gfl_lua_opt_number(L, opts, "backlog", 0);
    o.start_serving = gfl_lua_opt_bool(L, opts, "start_serving", 1) ? 0 : -1;
    lua_server *s = server_new(L, rt, 1, protocol, (size_t)gfl_lua_opt_number(L, opts, "limit", 0));
    gfl_future *f = GFL->create_unix_server(rt->loop, server_factory, s, factory_release, path, len, &o);
    return gfl_lua_server_started(L, s, f);
}

static lua_server *check(lua_State *L)
{
    lua_server **u = gfl_lua_checkself(L, 1, SERVER_MT);
    return *u;
}

static int srv_gc(lua_State *L)
{
    lua_server **u = gfl_lua_checkself(L, 1, SERVER_MT);
    if (*u) {
        lua_server *s = *u;
        if (s->create && GFL->future_state_of(s->create) == GFL_FUTURE_PENDING)
            GFL->future_cancel(s->create, NULL);
        /* The core server holds `s` (its factory) until it is freed: drop
         * our reference to it here, or neither would ever go. */
        if (s->srv)
            GFL->server_unref(s->srv);
        s->srv = NULL;
        server_unref(s);
    }
    *u = NULL;
    return 0;
}

/* internal: after the waiter: true, or nil, msg, code */
static int srv_started(lua_State *L)
{
    lua_server *s = check(L);
    gfl_future *f = s->create;
    if (!f) {
        lua_pushboolean(L, s->srv != NULL);
        return 1;
    }
    s->create = NULL;
    int n = 1;
    void *obj;
    if (GFL->future_state_of(f) == GFL_FUTURE_RESULT &&
        GFL->value_get_object(GFL->future_value(f), GFL->server_class(), &obj) == 0) {
        s->srv = GFL->server_ref(obj);
        lua_pushboolean(L, 1);
    } else {
        n = gfl_lua_push_failure_value(L, GFL->future_value(f));
    }
    GFL->future_unref(f);
    return n;
}

#define NEED_SRV(s)                                                            \
    if (!(s)->srv)                                                             \
        return luaL_error(L, "the server is not started");

static int srv_close(lua_State *L)
{
    lua_server *s = check(L);
    if (s->srv)
        GFL->server_close(s->srv);
    return 0;
}

static int srv_close_clients(lua_State *L)
{
    lua_server *s = check(L);
    NEED_SRV(s);
    GFL->server_close_clients(s->srv);
    return 0;
}

static int srv_abort_clients(lua_State *L)
{
    lua_server *s = check(L);
    NEED_SRV(s);
    GFL->server_abort_clients(s->srv);
    return 0;
}

static int srv_is_serving(lua_State *L)
{
    lua_server *s = check(L);
    lua_pushboolean(L, s->srv && GFL->server_is_serving(s->srv) == 1);
    return 1;
}

static int srv_start_serving(lua_State *L)
{
    lua_server *s = check(L);
    NEED_SRV(s);
    int rc = GFL->server_start_serving(s->srv);
    if (rc < 0)
        return gfl_lua_fail(L, "start_serving", rc);
    return 0;
}

static int srv_connection_count(lua_State *L)
{
    lua_server *s = check(L);
    lua_pushinteger(L, s->srv ? GFL->server_connection_count(s->srv) : 0);
    return 1;
}

/* internal: a future resolved once the server is closed and its
 * connections are gone (object) */
static int srv_wait_closed_future(lua_State *L)
{
    lua_server *s = check(L);
    NEED_SRV(s);
    gfl_future *f = GFL->server_wait_closed(s->srv);
    if (!f)
        return luaL_error(L, "wait_closed: the loop is closed");
    gfl_lua_future_push(L, s->rt, f);
    GFL->future_unref(f);
    return 1;
}

/* getsockname([i]) -> host, port of listening socket i (1-based) */
static int srv_getsockname(lua_State *L)
{
    lua_server *s = check(L);
    NEED_SRV(s);
    int i = (int)luaL_optinteger(L, 2, 1);
    char addr[128];
    size_t len = sizeof addr;
    if (GFL->server_get_sockaddr(s->srv, i - 1, addr, &len) < 0)
        return 0;
    return gfl_lua_push_sockaddr(L, addr, len);
}

/* sockets() -> { {host, port}, ... } */
static int srv_sockets(lua_State *L)
{
    lua_server *s = check(L);
    NEED_SRV(s);
    int n = GFL->server_socket_count(s->srv);
    lua_createtable(L, n > 0 ? n : 0, 0);
    for (int i = 0; i < n; i++) {
        char addr[128];
        size_t len = sizeof addr;
        if (GFL->server_get_sockaddr(s->srv, i, addr, &len) < 0)
            continue;
        lua_createtable(L, 2, 1);
        int t = lua_gettop(L);
        int k = gfl_lua_push_sockaddr(L, addr, len);
        for (int j = k; j >= 1; j--)
            lua_rawseti(L, t, j);
        lua_pushinteger(L, GFL->server_socket_fd(s->srv, i));
        lua_setfield(L, -2, "fd");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* port([i]) -> the port number of listening socket i */
static int srv_port(lua_State *L)
{
    lua_settop(L, 2);
    int n = srv_getsockname(L);
    if (n < 2)
        return 0;
    return 1; /* the port is on top */
}

static const luaL_Reg server_methods[] = {
    {"_started", srv_started},
    {"_wait_closed_future", srv_wait_closed_future},
    {"close", srv_close},
    {"close_clients", srv_close_clients},
    {"abort_clients", srv_abort_clients},
    {"is_serving", srv_is_serving},
    {"start_serving", srv_start_serving},
    {"connection_count", srv_connection_count},
    {"getsockname", srv_getsockname},
    {"sockets", srv_sockets},
    {"port", srv_port},
    {NULL, NULL},
};

void gfl_lua_open_server(lua_State *L, int internal)
{
    gfl_lua_newclass(L, SERVER_MT, server_methods, srv_gc);
    luaL_getmetatable(L, SERVER_MT);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, internal, "Server");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_create_server);
    lua_setfield(L, internal, "create_server");
    lua_pushcfunction(L, l_create_unix_server);
    lua_setfield(L, internal, "create_unix_server");
}
