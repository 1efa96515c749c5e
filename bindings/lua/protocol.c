/*
 * The protocol/callback style (asyncio's transports and protocols) for
 * speed: a Lua protocol table gets connection_made(transport),
 * data_received(data), eof_received(), connection_lost(err),
 * pause_writing(), resume_writing() called straight from the core's
 * callbacks, with no coroutine in between.
 *
 * As in asyncio the loop owns a connected transport: the transport object
 * and the protocol table stay alive until connection_lost, whether Lua
 * keeps them or not. Errors raised by a callback go to the loop's
 * exception handler; the connection carries on.
 */
#include "gfl_lua.h"

#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "stream.h"

#define TRANSPORT_MT "globeflower.Transport"

void gfl_lua_proto_unref(gfl_lua_proto *p)
{
    if (--p->refs > 0)
        return;
    if (p->t)
        GFL->transport_unref(p->t);
    GFL->future_unref(p->upgrade);
    gfl_lua_rt_unref(p->rt);
    free(p);
}

/* Pushes proto[name], proto; 0 (nothing pushed) if it has no such method. */
static int push_method(lua_State *L, gfl_lua_proto *p, const char *name)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->proto_ref);
    lua_getfield(L, -1, name);
    if (lua_type(L, -1) != LUA_TFUNCTION) {
        lua_pop(L, 2);
        return 0;
    }
    lua_insert(L, -2);
    return 1;
}

static void call_simple(gfl_lua_proto *p, const char *name)
{
    lua_State *L = p->rt->L;
    if (!L || p->proto_ref == LUA_NOREF || !push_method(L, p, name))
        return;
    gfl_lua_call(p->rt, L, 1, 0, "Exception in protocol callback");
}

static void on_made(gfl_transport *t, void *ud)
{
    gfl_lua_proto *p = ud;
    lua_State *L = p->rt->L;
    if (!p->t)
        p->t = GFL->transport_ref(t);
    if (!L)
        return;
    gfl_lua_proto **u = gfl_newuserdata(L, sizeof *u);
    *u = p;
    p->refs++; /* the transport object's share */
    luaL_getmetatable(L, TRANSPORT_MT);
    lua_setmetatable(L, -2);
    p->tr_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!push_method(L, p, "connection_made"))
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->tr_ref);
    gfl_lua_call(p->rt, L, 2, 0, "Exception in protocol callback");
}

static void on_data(gfl_transport *t, const void *data, size_t len, void *ud)
{
    (void)t;
    gfl_lua_proto *p = ud;
    lua_State *L = p->rt->L;
    if (!L || !push_method(L, p, "data_received"))
        return;
    lua_pushlstring(L, data, len);
    gfl_lua_call(p->rt, L, 2, 0, "Exception in protocol callback");
}

static int on_eof(gfl_transport *t, void *ud)
{
    (void)t;
    gfl_lua_proto *p = ud;
    lua_State *L = p->rt->L;
    if (!L || !push_method(L, p, "eof_received"))
        return 0;
    if (gfl_lua_call(p->rt, L, 1, 1, "Exception in protocol callback") < 0)
        return 0;
    int keep = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return keep;
}

static void on_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    gfl_lua_proto *p = ud;
    lua_State *L = p->rt->L;
    p->lost = 1;
    if (L && push_method(L, p, "connection_lost")) {
        if (error)
            gfl_lua_push_error(L, error);
        else
            lua_pushnil(L);
        gfl_lua_call(p->rt, L, 2, 0, "Exception in protocol callback");
    }
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, p->proto_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, p->tr_ref);
    }
    p->proto_ref = p->tr_ref = LUA_NOREF;
    gfl_lua_proto_unref(p); /* the transport's share */
}

static void on_pause(gfl_transport *t, void *ud)
{
    (void)t;
    call_simple(ud, "pause_writing");
}

static void on_resume(gfl_transport *t, void *ud)
{
    (void)t;
    call_simple(ud, "resume_writing");
}

const gfl_protocol gfl_lua_protocol = {
    .size = sizeof(gfl_protocol),
    .connection_made = on_made,
    .data_received = on_data,
    .eof_received = on_eof,
    .connection_lost = on_lost,
    .pause_writing = on_pause,
    .resume_writing = on_resume,
};

/* Calls the Lua protocol factory (registry ref) for a new connection. */
int gfl_lua_proto_create(gfl_lua_rt *rt, int factory_ref, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    lua_State *L = rt->L;
    if (!L)
        return GFL_ECLOSED;
    lua_rawgeti(L, LUA_REGISTRYINDEX, factory_ref);
    if (gfl_lua_call(rt, L, 0, 1, "Exception in protocol factory") < 0)
        return GFL_EINVAL;
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "the protocol factory must return a table");
        gfl_lua_report(rt, L, "Exception in protocol factory");
        return GFL_EINVAL;
    }
    gfl_lua_proto *p = calloc(1, sizeof *p);
    if (!p) {
        lua_pop(L, 1);
        return GFL_ENOMEM;
    }
    p->rt = rt;
    gfl_lua_rt_ref(rt);
    p->proto_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    p->tr_ref = LUA_NOREF;
    p->refs = 1;
    p->t = GFL->transport_ref(t);
    *proto = &gfl_lua_protocol;
    *ud = p;
    return 0;
}

/* ---- client connections ---- */

struct client_factory {
    gfl_lua_rt *rt;
    int factory_ref;
};

static int client_factory(void *fud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    struct client_factory *cf = fud;
    return gfl_lua_proto_create(cf->rt, cf->factory_ref, t, proto, ud);
}

static void client_factory_release(void *fud)
{
    struct client_factory *cf = fud;
    if (cf->rt->L)
        luaL_unref(cf->rt->L, LUA_REGISTRYINDEX, cf->factory_ref);
    gfl_lua_rt_unref(cf->rt);
    free(cf);
}

/* internal: create_connection(factory, host, port, opts | path) ->
 * future (object). Resolves to the transport; see proto_of. */
static int l_create_connection(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int unix_socket = lua_toboolean(L, lua_upvalueindex(1));
    /* Everything that may raise comes before the allocation. */
    size_t len = 0;
    const char *path = NULL;
    gfl_connect_options o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    gfl_tls_options tls;
    int use_tls = 0;
    if (unix_socket) {
        path = luaL_checklstring(L, 2, &len);
    } else {
        o.host = luaL_checkstring(L, 2);
        luaL_checkany(L, 3);
        lua_pushvalue(L, 3);
        o.port = lua_tostring(L, -1);
        if (!o.port)
            return luaL_argerror(L, 3, "port expected");
        lua_replace(L, 3);
        int opts = lua_istable(L, 4) ? 4 : 0;
        o.family = (int)gfl_lua_opt_number(L, opts, "family", 0);
        o.local_host = gfl_lua_opt_string(L, opts, "local_host", NULL);
        o.local_port = gfl_lua_opt_string(L, opts, "local_port", NULL);
        o.happy_eyeballs_delay = gfl_lua_opt_number(L, opts, "happy_eyeballs_delay", 0);
        o.interleave = (int)gfl_lua_opt_number(L, opts, "interleave", 0);
        use_tls = gfl_lua_tls_options(L, opts, 0, &tls);
    }
    struct client_factory *cf = malloc(sizeof *cf);
    if (!cf)
        return luaL_error(L, "create_connection: out of memory");
    lua_pushvalue(L, 1);
    cf->factory_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    cf->rt = rt;
    gfl_lua_rt_ref(rt);
    gfl_future *f;
    if (unix_socket)
        f = GFL->create_unix_connection(rt->loop, client_factory, cf, client_factory_release, path, len);
    else if (use_tls)
        f = GFL->create_tls_connection(rt->loop, client_factory, cf, client_factory_release, &o, &tls);
    else
        f = GFL->create_connection(rt->loop, client_factory, cf, client_factory_release, &o);
    if (!f) {
        client_factory_release(cf); /* NULL: the core never took it */
        return luaL_error(L, "create_connection: bad arguments or the loop is closed");
    }
    gfl_lua_future_push(L, rt, f);
    GFL->future_unref(f);
    return 1;
}

/* internal: proto_of(value) -> transport object, protocol table of a
 * connected transport future's result */
static int l_proto_of(lua_State *L)
{
    gfl_future *f = gfl_lua_to_future(L, 1);
    if (!f || GFL->future_state_of(f) != GFL_FUTURE_RESULT)
        return 0;
    void *obj;
    if (GFL->value_get_object(GFL->future_value(f), GFL->transport_class(), &obj) < 0)
        return 0;
    const gfl_protocol *proto;
    void *ud;
    if (GFL->transport_get_protocol(obj, &proto, &ud) < 0 || proto != &gfl_lua_protocol)
        return 0;
    gfl_lua_proto *p = ud;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->tr_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->proto_ref);
    return 2;
}

/* ---- the transport object ---- */

static gfl_lua_proto *check(lua_State *L)
{
    gfl_lua_proto **u = gfl_lua_checkself(L, 1, TRANSPORT_MT);
    return *u;
}

static int tr_gc(lua_State *L)
{
    gfl_lua_proto **u = gfl_lua_checkself(L, 1, TRANSPORT_MT);
    if (*u)
        gfl_lua_proto_unref(*u);
    *u = NULL;
    return 0;
}

/* write(data, ...): true, or nil, msg, code when the transport is gone */
static int tr_write(lua_State *L)
{
    gfl_lua_proto *p = check(L);
    int n = lua_gettop(L);
    int rc;
    if (n == 2) {
        size_t len;
        const char *data = luaL_checklstring(L, 2, &len);
        rc = GFL->transport_write(p->t, data, len);
    } else {
        gfl_iovec iov[16];
        luaL_argcheck(L, n - 1 <= 16, 18, "at most 16 pieces per write");
        for (int i = 2; i <= n; i++)
            iov[i - 2].base = luaL_checklstring(L, i, &iov[i - 2].len);
        rc = GFL->transport_writev(p->t, iov, n - 1);
    }
    if (rc < 0)
        return gfl_lua_push_failure(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int tr_start_tls(lua_State *L)
{
    return gfl_lua_proto_start_tls(L, check(L));
}

static int tr_tls_result(lua_State *L)
{
    return gfl_lua_proto_tls_result(L, check(L));
}

#define SIMPLE(name, call)                                                     \
    static int name(lua_State *L)                                              \
    {                                                                          \
        gfl_lua_proto *p = check(L);                                           \
        int rc = call(p->t);                                                   \
        if (rc < 0 && rc != GFL_ECLOSED)                                       \
            return gfl_lua_push_failure(L, rc, NULL);                          \
        lua_pushboolean(L, 1);                                                 \
        return 1;                                                              \
    }

SIMPLE(tr_close, GFL->transport_close)
SIMPLE(tr_abort, GFL->transport_abort)
SIMPLE(tr_write_eof, GFL->transport_write_eof)
SIMPLE(tr_pause_reading, GFL->transport_pause_reading)
SIMPLE(tr_resume_reading, GFL->transport_resume_reading)

static int tr_is_closing(lua_State *L)
{
    gfl_lua_proto *p = check(L);
    lua_pushboolean(L, p->lost || GFL->transport_is_closing(p->t) == 1);
    return 1;
}

static int tr_is_reading(lua_State *L)
{
    lua_pushboolean(L, GFL->transport_is_reading(check(L)->t) == 1);
    return 1;
}

static int tr_can_write_eof(lua_State *L)
{
    lua_pushboolean(L, GFL->transport_can_write_eof(check(L)->t) == 1);
    return 1;
}

static int tr_get_extra_info(lua_State *L)
{
    gfl_lua_proto *p = check(L);
    return gfl_lua_push_extra_info(L, p->t, luaL_checkstring(L, 2));
}

static int tr_get_write_buffer_size(lua_State *L)
{
    int64_t n = GFL->transport_get_write_buffer_size(check(L)->t);
    lua_pushinteger(L, (lua_Integer)(n < 0 ? 0 : n));
    return 1;
}

static int tr_set_write_buffer_limits(lua_State *L)
{
    gfl_lua_proto *p = check(L);
    int rc = GFL->transport_set_write_buffer_limits(p->t, (int64_t)luaL_optnumber(L, 2, -1),
                                                     (int64_t)luaL_optnumber(L, 3, -1));
    if (rc < 0)
        return gfl_lua_fail(L, "set_write_buffer_limits", rc);
    return 0;
}

static int tr_get_protocol(lua_State *L)
{
    gfl_lua_proto *p = check(L);
    if (p->proto_ref == LUA_NOREF)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->proto_ref);
    return 1;
}

/* set_protocol(tbl): later callbacks go to tbl (asyncio's set_protocol) */
static int tr_set_protocol(lua_State *L)
{
    gfl_lua_proto *p = check(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (p->lost)
        return luaL_error(L, "set_protocol: the connection is lost");
    lua_pushvalue(L, 2);
    lua_rawseti(L, LUA_REGISTRYINDEX, p->proto_ref);
    return 0;
}

static int tr_getpeername(lua_State *L)
{
    char addr[128];
    size_t len = sizeof addr;
    if (GFL->transport_get_sockaddr(check(L)->t, 1, addr, &len) < 0)
        return 0;
    return gfl_lua_push_sockaddr(L, addr, len);
}

static int tr_getsockname(lua_State *L)
{
    char addr[128];
    size_t len = sizeof addr;
    if (GFL->transport_get_sockaddr(check(L)->t, 0, addr, &len) < 0)
        return 0;
    return gfl_lua_push_sockaddr(L, addr, len);
}

static const luaL_Reg transport_methods[] = {
    {"write", tr_write},
    {"_start_tls", tr_start_tls},
    {"_tls_result", tr_tls_result},
    {"close", tr_close},
    {"abort", tr_abort},
    {"write_eof", tr_write_eof},
    {"can_write_eof", tr_can_write_eof},
    {"pause_reading", tr_pause_reading},
    {"resume_reading", tr_resume_reading},
    {"is_reading", tr_is_reading},
    {"is_closing", tr_is_closing},
    {"get_extra_info", tr_get_extra_info},
    {"get_write_buffer_size", tr_get_write_buffer_size},
    {"set_write_buffer_limits", tr_set_write_buffer_limits},
    {"get_protocol", tr_get_protocol},
    {"set_protocol", tr_set_protocol},
    {"getpeername", tr_getpeername},
    {"getsockname", tr_getsockname},
    {NULL, NULL},
};

void gfl_lua_open_protocol(lua_State *L, int internal)
{
    gfl_lua_newclass(L, TRANSPORT_MT, transport_methods, tr_gc);
    luaL_getmetatable(L, TRANSPORT_MT);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, internal, "Transport");
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
    lua_pushcclosure(L, l_create_connection, 1);
    lua_setfield(L, internal, "create_connection");
    lua_pushboolean(L, 1);
    lua_pushcclosure(L, l_create_connection, 1);
    lua_setfield(L, internal, "create_unix_connection");
    lua_pushcfunction(L, l_proto_of);
    lua_setfield(L, internal, "proto_of");
}
