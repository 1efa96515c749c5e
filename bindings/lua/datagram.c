/*
 * UDP (and Unix datagram) endpoints, in two styles over one object:
 *
 *  - coroutine style, gfl.udp(opts): received datagrams (and the errors
 *    error_received reports) queue up in arrival order; ep:recvfrom()
 *    takes the next one, waiting inside a task when there is none. The
 *    queue pauses reading once it holds `queue` datagrams (the kernel then
 *    drops what no longer fits, as it would for a slow reader).
 *  - protocol style, gfl.create_datagram_endpoint(factory, opts): the
 *    protocol table gets connection_made(transport),
 *    datagram_received(data, host, port), error_received(err),
 *    connection_lost(err), pause_writing(), resume_writing() straight from
 *    the core's callbacks (asyncio's DatagramProtocol).
 *
 * Lifetime: the state is shared by the Lua object and the core (the
 * factory until released, the transport until connection_lost). As for
 * streams an unreachable open coroutine-style endpoint is aborted by
 * __gc; a protocol-style endpoint belongs to the loop until it is lost
 * (its object and protocol table are anchored until connection_lost).
 */
#include "gfl_lua.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "stream.h"

#define DGRAM_MT "globeflower.Datagram"
#define DEFAULT_QUEUE 1024

struct item {
    struct item *next;
    gfl_value *error; /* an error_received error instead of a datagram */
    socklen_t addrlen;
    struct sockaddr_storage addr;
    size_t len;
    char data[];
};

typedef struct lua_dgram {
    gfl_lua_rt *rt;
    gfl_transport *t; /* one reference once attached */
    int refs;         /* the Lua object, the factory, the transport, creators */
    int family;       /* as asked (AF_UNIX decides how sendto reads addresses) */
    /* protocol style */
    int factory_ref;  /* the Lua protocol factory, until the factory ran */
    int proto_ref;    /* the protocol table, until connection_lost */
    int self_ref;     /* the Lua object, while the loop owns the endpoint */
    lua_State *calling; /* inside sendto: error_received runs on this state */
    /* coroutine style */
    struct item *head, *tail;
    size_t count, max;
    gfl_value *error; /* why it was lost */
    gfl_future *rwait, *dwait, *cwait, *create;
    unsigned protocol : 1, attached : 1, lost : 1, paused_reading : 1, paused_writing : 1;
} lua_dgram;

static void item_free(struct item *it)
{
    if (it->error)
        GFL->value_unref(it->error);
    free(it);
}

static void dgram_unref(lua_dgram *d)
{
    if (--d->refs > 0)
        return;
    lua_State *L = d->rt->L;
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, d->factory_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, d->proto_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, d->self_ref);
    }
    while (d->head) {
        struct item *next = d->head->next;
        item_free(d->head);
        d->head = next;
    }
    if (d->t)
        GFL->transport_unref(d->t);
    GFL->value_unref(d->error);
    GFL->future_unref(d->rwait);
    GFL->future_unref(d->dwait);
    GFL->future_unref(d->cwait);
    GFL->future_unref(d->create);
    gfl_lua_rt_unref(d->rt);
    free(d);
}

static gfl_future *waiter(lua_dgram *d, gfl_future **w, int exclusive)
{
    if (*w) {
        if (GFL->future_state_of(*w) == GFL_FUTURE_PENDING)
            return exclusive ? NULL : *w;
        GFL->future_unref(*w);
    }
    *w = GFL->future_new(d->rt->loop);
    return *w;
}

static void queue_push(lua_dgram *d, struct item *it)
{
    it->next = NULL;
    if (d->tail)
        d->tail->next = it;
    else
        d->head = it;
    d->tail = it;
    d->count++;
    if (!d->paused_reading && d->count >= d->max && d->t && !d->lost) {
        d->paused_reading = 1;
        GFL->transport_pause_reading(d->t);
    }
    gfl_lua_wake_waiter(&d->rwait);
}

/* ---- protocol-style calls ---- */

/* Pushes proto[name], proto on L; 0 (nothing pushed) without the method. */
static int push_method(lua_State *L, lua_dgram *d, const char *name)
{
    if (d->proto_ref == LUA_NOREF || d->proto_ref == LUA_REFNIL)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->proto_ref);
    lua_getfield(L, -1, name);
    if (lua_type(L, -1) != LUA_TFUNCTION) {
        lua_pop(L, 2);
        return 0;
    }
    lua_insert(L, -2);
    return 1;
}

static void call_simple(lua_dgram *d, const char *name)
{
    lua_State *L = d->rt->L;
    if (L && push_method(L, d, name))
        gfl_lua_call(d->rt, L, 1, 0, "Exception in datagram protocol callback");
}

/* ---- core callbacks ---- */

static void on_made(gfl_transport *t, void *ud)
{
    lua_dgram *d = ud;
    (void)t;
    lua_State *L = d->rt->L;
    if (!d->protocol || !L || !push_method(L, d, "connection_made"))
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->self_ref);
    gfl_lua_call(d->rt, L, 2, 0, "Exception in datagram protocol callback");
}

static void on_datagram(gfl_transport *t, const void *data, size_t len, const struct sockaddr *addr,
                        socklen_t addrlen, void *ud)
{
    (void)t;
    lua_dgram *d = ud;
    if (d->protocol) {
        lua_State *L = d->rt->L;
        if (!L || !push_method(L, d, "datagram_received"))
            return;
        lua_pushlstring(L, data, len);
        int n = addr && addrlen ? gfl_lua_push_sockaddr(L, addr, addrlen) : 0;
        gfl_lua_call(d->rt, L, 2 + n, 0, "Exception in datagram protocol callback");
        return;
    }
    struct item *it = malloc(sizeof *it + len);
    if (!it)
        return; /* dropped, as the kernel would */
    it->error = NULL;
    it->len = len;
    memcpy(it->data, data, len);
    it->addrlen = addr && addrlen <= sizeof it->addr ? addrlen : 0;
    if (it->addrlen)
        memcpy(&it->addr, addr, it->addrlen);
    queue_push(d, it);
}

static void on_error(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    lua_dgram *d = ud;
    if (d->protocol) {
        /* Inside sendto the error belongs to the calling state (a task's
         * coroutine, possibly): never run Lua on a thread that is busy. */
        lua_State *L = d->calling ? d->calling : d->rt->L;
        if (!L || !d->rt->L || !push_method(L, d, "error_received"))
            return;
        gfl_lua_push_error(L, error);
        gfl_lua_call(d->rt, L, 2, 0, "Exception in datagram protocol callback");
        return;
    }
    struct item *it = malloc(sizeof *it);
    if (!it)
        return;
    it->error = GFL->value_ref(error);
    it->len = 0;
    it->addrlen = 0;
    queue_push(d, it);
}

static void on_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    lua_dgram *d = ud;
    lua_State *L = d->rt->L;
    d->lost = 1;
    if (error && !d->error)
        d->error = GFL->value_ref(error);
    if (d->protocol && L && push_method(L, d, "connection_lost")) {
        if (error)
            gfl_lua_push_error(L, error);
        else
            lua_pushnil(L);
        gfl_lua_call(d->rt, L, 2, 0, "Exception in datagram protocol callback");
    }
    if (L) {
        luaL_unref(L, LUA_REGISTRYINDEX, d->proto_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, d->self_ref);
    }
    d->proto_ref = d->self_ref = LUA_NOREF;
    gfl_lua_wake_waiter(&d->rwait);
    gfl_lua_wake_waiter(&d->dwait);
    gfl_lua_wake_waiter(&d->cwait);
    dgram_unref(d); /* the transport's share */
}

static void on_pause(gfl_transport *t, void *ud)
{
    (void)t;
    lua_dgram *d = ud;
    d->paused_writing = 1;
    if (d->protocol)
        call_simple(d, "pause_writing");
}

static void on_resume(gfl_transport *t, void *ud)
{
    (void)t;
    lua_dgram *d = ud;
    d->paused_writing = 0;
    gfl_lua_wake_waiter(&d->dwait);
    if (d->protocol)
        call_simple(d, "resume_writing");
}

static const gfl_datagram_protocol dgram_protocol = {
    .size = sizeof(gfl_datagram_protocol),
    .connection_made = on_made,
    .datagram_received = on_datagram,
    .error_received = on_error,
    .connection_lost = on_lost,
    .pause_writing = on_pause,
    .resume_writing = on_resume,
};

static int factory(void *fud, gfl_transport *t, const gfl_datagram_protocol **proto, void **ud)
{
    lua_dgram *d = fud;
    if (d->attached)
        return GFL_ESTATE;
    lua_State *L = d->rt->L;
    if (!L)
        return GFL_ECLOSED;
    if (d->protocol) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, d->factory_ref);
        if (gfl_lua_call(d->rt, L, 0, 1, "Exception in datagram protocol factory") < 0)
            return GFL_EINVAL;
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushliteral(L, "the protocol factory must return a table");
            gfl_lua_report(d->rt, L, "Exception in datagram protocol factory");
            return GFL_EINVAL;
        }
        d->proto_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        luaL_unref(L, LUA_REGISTRYINDEX, d->factory_ref);
        d->factory_ref = LUA_NOREF;
    }
    d->attached = 1;
    d->t = GFL->transport_ref(t);
    d->refs++; /* the transport's share, until connection_lost */
    *proto = &dgram_protocol;
    *ud = d;
    return 0;
}

static void factory_release(void *fud)
{
    lua_dgram *d = fud;
    if (!d->attached && d->rt->L) {
        /* Never attached: the loop does not own the object after all. */
        luaL_unref(d->rt->L, LUA_REGISTRYINDEX, d->self_ref);
        d->self_ref = LUA_NOREF;
    }
    dgram_unref(d);
}

/* ---- the Lua object ---- */

static lua_dgram *check(lua_State *L)
{
    lua_dgram **u = gfl_lua_checkself(L, 1, DGRAM_MT);
    if (!*u)
        luaL_error(L, "datagram endpoint already finalised");
    return *u;
}

static int dg_gc(lua_State *L)
{
    lua_dgram **u = gfl_lua_checkself(L, 1, DGRAM_MT);
    lua_dgram *d = *u;
    if (!d)
        return 0;
    *u = NULL;
    if (d->t && !d->lost)
        GFL->transport_abort(d->t);
    if (d->create && GFL->future_state_of(d->create) == GFL_FUTURE_PENDING)
        GFL->future_cancel(d->create, NULL);
    dgram_unref(d);
    return 0;
}

static int push_lost(lua_State *L, lua_dgram *d)
{
    if (d->error)
        return gfl_lua_push_failure_value(L, d->error);
    return gfl_lua_push_failure(L, GFL_ECLOSED, "closed");
}

/* internal: after the waiter: true, or nil, msg, code */
static int dg_started(lua_State *L)
{
    lua_dgram *d = check(L);
    gfl_future *f = d->create;
    if (!f) {
        lua_pushboolean(L, d->t != NULL);
        return 1;
    }
    d->create = NULL;
    int n = 1;
    if (GFL->future_state_of(f) == GFL_FUTURE_RESULT)
        lua_pushboolean(L, 1);
    else
        n = gfl_lua_push_failure_value(L, GFL->future_value(f));
    GFL->future_unref(f);
    return n;
}

/* sendto(data, host, port) / sendto(data, path) / sendto(data): true, or
 * nil, msg, code (closed, not connected). OS errors of the send itself go
 * where every endpoint error goes: recvfrom / error_received. */
static int dg_sendto(lua_State *L)
{
    lua_dgram *d = check(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    struct sockaddr_storage ss;
    socklen_t slen = 0;
    if (!lua_isnoneornil(L, 3))
        gfl_lua_to_sockaddr(L, 3, d->family, &ss, &slen);
    if (!d->t || d->lost)
        return push_lost(L, d);
    lua_State *prev = d->calling;
    d->calling = L;
    int rc = GFL->datagram_sendto(d->t, data, len, slen ? (struct sockaddr *)&ss : NULL, slen);
    d->calling = prev;
    if (rc < 0)
        return gfl_lua_push_failure(L, rc, rc == GFL_ENOTCONN ? "not connected: give an address" : NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int pop_item(lua_State *L, lua_dgram *d, int with_addr)
{
    struct item *it = d->head;
    d->head = it->next;
    if (!d->head)
        d->tail = NULL;
    d->count--;
    if (d->paused_reading && d->count <= d->max / 4 && d->t && !d->lost) {
        d->paused_reading = 0;
        GFL->transport_resume_reading(d->t);
    }
    int n;
    if (it->error) {
        n = gfl_lua_push_failure_value(L, it->error);
    } else {
        lua_pushlstring(L, it->data, it->len);
        n = 1;
        if (with_addr && it->addrlen)
            n += gfl_lua_push_sockaddr(L, &it->addr, it->addrlen);
    }
    item_free(it);
    return n;
}

static int recv_common(lua_State *L, int with_addr)
{
    lua_dgram *d = check(L);
    if (d->protocol)
        return luaL_error(L, "recvfrom: this endpoint hands its datagrams to its protocol");
    if (d->head)
        return pop_item(L, d, with_addr);
    if (!d->t || d->lost)
        return push_lost(L, d);
    gfl_future *w = waiter(d, &d->rwait, 1);
    if (!w)
        return luaL_error(L, "another task is already waiting to receive on this endpoint");
    if (d->paused_reading) {
        d->paused_reading = 0;
        GFL->transport_resume_reading(d->t);
    }
    lua_pushboolean(L, 0);
    lua_pushlightuserdata(L, w);
    return 2;
}

/* internal: _recvfrom() -> data, host, port | nil, msg, code | false, waiter */
static int dg_recvfrom(lua_State *L)
{
    return recv_common(L, 1);
}

static int dg_recv(lua_State *L)
{
    return recv_common(L, 0);
}

/* pending() -> datagrams (and errors) queued, not yet received */
static int dg_pending(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check(L)->count);
    return 1;
}

static int dg_drain(lua_State *L)
{
    lua_dgram *d = check(L);
    if (!d->t || d->lost)
        return push_lost(L, d);
    if (!d->paused_writing)
        return lua_pushboolean(L, 1), 1;
    gfl_future *w = waiter(d, &d->dwait, 0);
    if (!w)
        return luaL_error(L, "drain: out of memory");
    lua_pushboolean(L, 0);
    lua_pushlightuserdata(L, w);
    return 2;
}

static int dg_wait_closed(lua_State *L)
{
    lua_dgram *d = check(L);
    if (!d->t || d->lost)
        return lua_pushboolean(L, 1), 1;
    gfl_future *w = waiter(d, &d->cwait, 0);
    if (!w)
        return luaL_error(L, "wait_closed: out of memory");
    lua_pushboolean(L, 0);
    lua_pushlightuserdata(L, w);
    return 2;
}

#define SIMPLE(name, call)                                                     \
    static int name(lua_State *L)                                              \
    {                                                                          \
        lua_dgram *d = check(L);                                               \
        int rc = d->t && !d->lost ? call(d->t) : GFL_ECLOSED;                  \
        if (rc < 0 && rc != GFL_ECLOSED)                                       \
            return gfl_lua_push_failure(L, rc, NULL);                          \
        lua_pushboolean(L, 1);                                                 \
        return 1;                                                              \
    }

SIMPLE(dg_close, GFL->transport_close)
SIMPLE(dg_abort, GFL->transport_abort)

static int dg_pause_reading(lua_State *L)
{
    lua_dgram *d = check(L);
    if (d->t && !d->lost)
        GFL->transport_pause_reading(d->t);
    return 0;
}

static int dg_resume_reading(lua_State *L)
{
    lua_dgram *d = check(L);
    d->paused_reading = 0;
    if (d->t && !d->lost)
        GFL->transport_resume_reading(d->t);
    return 0;
}

static int dg_is_reading(lua_State *L)
{
    lua_dgram *d = check(L);
    lua_pushboolean(L, d->t && !d->lost && GFL->transport_is_reading(d->t) == 1);
    return 1;
}

static int dg_is_closing(lua_State *L)
{
    lua_dgram *d = check(L);
    lua_pushboolean(L, !d->t || d->lost || GFL->transport_is_closing(d->t) == 1);
    return 1;
}

static int dg_get_extra_info(lua_State *L)
{
    lua_dgram *d = check(L);
    return gfl_lua_push_extra_info(L, d->lost ? NULL : d->t, luaL_checkstring(L, 2));
}

static int sockname(lua_State *L, int peer)
{
    lua_dgram *d = check(L);
    struct sockaddr_storage ss;
    size_t len = sizeof ss;
    if (!d->t || d->lost || GFL->transport_get_sockaddr(d->t, peer, &ss, &len) < 0)
        return 0;
    return gfl_lua_push_sockaddr(L, &ss, len);
}

static int dg_getsockname(lua_State *L)
{
    return sockname(L, 0);
}

static int dg_getpeername(lua_State *L)
{
    return sockname(L, 1);
}

static int dg_get_write_buffer_size(lua_State *L)
{
    lua_dgram *d = check(L);
    int64_t n = d->t && !d->lost ? GFL->transport_get_write_buffer_size(d->t) : 0;
    lua_pushinteger(L, (lua_Integer)(n < 0 ? 0 : n));
    return 1;
}

static int dg_set_write_buffer_limits(lua_State *L)
{
    lua_dgram *d = check(L);
    int rc = d->t && !d->lost ? GFL->transport_set_write_buffer_limits(d->t, (int64_t)luaL_optnumber(L, 2, -1),
                                                                       (int64_t)luaL_optnumber(L, 3, -1))
                              : GFL_ECLOSED;
    if (rc < 0)
        return gfl_lua_fail(L, "set_write_buffer_limits", rc);
    return 0;
}

static int dg_get_protocol(lua_State *L)
{
    lua_dgram *d = check(L);
    if (d->proto_ref == LUA_NOREF || d->proto_ref == LUA_REFNIL)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->proto_ref);
    return 1;
}

static int dg_set_protocol(lua_State *L)
{
    lua_dgram *d = check(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!d->protocol)
        return luaL_error(L, "set_protocol: a coroutine-style endpoint has no protocol");
    if (d->lost)
        return luaL_error(L, "set_protocol: the endpoint is closed");
    lua_pushvalue(L, 2);
    lua_rawseti(L, LUA_REGISTRYINDEX, d->proto_ref);
    return 0;
}

static int dg_tostring(lua_State *L)
{
    lua_dgram **u = gfl_lua_checkself(L, 1, DGRAM_MT);
    lua_pushfstring(L, "globeflower.Datagram: %p", (void *)*u);
    return 1;
}

static const luaL_Reg dgram_methods[] = {
    {"_started", dg_started},
    {"_recvfrom", dg_recvfrom},
    {"_recv", dg_recv},
    {"_drain", dg_drain},
    {"_wait_closed", dg_wait_closed},
    {"sendto", dg_sendto},
    {"pending", dg_pending},
    {"close", dg_close},
    {"abort", dg_abort},
    {"pause_reading", dg_pause_reading},
    {"resume_reading", dg_resume_reading},
    {"is_reading", dg_is_reading},
    {"is_closing", dg_is_closing},
    {"get_extra_info", dg_get_extra_info},
    {"getsockname", dg_getsockname},
    {"getpeername", dg_getpeername},
    {"get_write_buffer_size", dg_get_write_buffer_size},
    {"set_write_buffer_limits", dg_set_write_buffer_limits},
    {"get_protocol", dg_get_protocol},
    {"set_protocol", dg_set_protocol},
    {NULL, NULL},
};

/* ---- creating endpoints ---- */

/* A gfl_addrinfo holding one Unix socket address. */
static gfl_addrinfo *unix_addr(const struct sockaddr_storage *ss, socklen_t len)
{
    gfl_addrinfo *ai = GFL->addrinfo_new();
    if (ai && GFL->addrinfo_add(ai, AF_UNIX, SOCK_DGRAM, 0, ss, len) < 0) {
        GFL->addrinfo_unref(ai);
        ai = NULL;
    }
    return ai;
}

static lua_dgram *dgram_new(lua_State *L, gfl_lua_rt *rt, int family, int protocol, size_t max)
{
    lua_dgram *d = calloc(1, sizeof *d);
    if (!d)
        luaL_error(L, "datagram endpoint: out of memory");
    d->rt = rt;
    gfl_lua_rt_ref(rt);
    d->family = family;
    d->protocol = protocol;
    d->max = max;
    d->factory_ref = d->proto_ref = d->self_ref = LUA_NOREF;
    d->refs = 2; /* the Lua object, the core's factory */
    lua_dgram **u = gfl_newuserdata(L, sizeof *u);
    *u = d;
    luaL_getmetatable(L, DGRAM_MT);
    lua_setmetatable(L, -2);
    return d;
}

/* internal: create_datagram_endpoint(factory | false, opts) -> endpoint, waiter */
static int l_create(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    int protocol = !lua_isnoneornil(L, 1) && lua_toboolean(L, 1);
    if (protocol)
        luaL_checktype(L, 1, LUA_TFUNCTION);
    int opts = lua_istable(L, 2) ? 2 : 0;
    gfl_datagram_options o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.local_host = gfl_lua_opt_string(L, opts, "local_host", NULL);
    o.local_port = gfl_lua_opt_string(L, opts, "local_port", NULL);
    o.remote_host = gfl_lua_opt_string(L, opts, "remote_host", NULL);
    o.remote_port = gfl_lua_opt_string(L, opts, "remote_port", NULL);
    o.family = (int)gfl_lua_opt_number(L, opts, "family", 0);
    o.protocol = (int)gfl_lua_opt_number(L, opts, "proto", 0);
    o.reuse_port = gfl_lua_opt_bool(L, opts, "reuse_port", 0);
    o.allow_broadcast = gfl_lua_opt_bool(L, opts, "allow_broadcast", 0);
    double qmax = gfl_lua_opt_number(L, opts, "queue", DEFAULT_QUEUE);
    luaL_argcheck(L, qmax >= 1, 2, "queue must be >= 1");
    /* Unix datagram sockets: paths instead of hosts. */
    struct sockaddr_storage lss, rss;
    socklen_t llen = 0, rlen = 0;
    int paths[2] = {0, 0};
    const char *keys[2] = {"local_path", "remote_path"};
    for (int i = 0; i < 2; i++) {
        if (!opts)
            break;
        lua_getfield(L, opts, keys[i]);
        if (!lua_isnil(L, -1)) {
            paths[i] = 1;
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "option '%s' must be a string", keys[i]);
            gfl_lua_to_sockaddr(L, lua_gettop(L), AF_UNIX, i ? &rss : &lss, i ? &rlen : &llen);
        }
        lua_pop(L, 1);
    }
    if (paths[0] || paths[1]) {
        if (o.local_host || o.remote_host || o.local_port || o.remote_port)
            return luaL_error(L, "create_datagram_endpoint: give either paths or hosts and ports");
        o.family = AF_UNIX;
    } else {
        if (o.local_host && !o.local_port)
            o.local_port = "0";
        if (!o.local_host && !o.local_port && !o.remote_host && !o.remote_port && o.family == 0)
            o.family = AF_INET; /* an unbound IPv4 socket (sendto binds it) */
    }

    lua_dgram *d = dgram_new(L, rt, o.family, protocol, (size_t)qmax);
    int obj = lua_gettop(L);
    if (protocol) {
        lua_pushvalue(L, 1);
        d->factory_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        /* The loop owns a protocol-style endpoint: anchored from now
         * until connection_lost (or until the core drops the factory
         * without using it). */
        lua_pushvalue(L, obj);
        d->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    o.local_addrs = paths[0] ? unix_addr(&lss, llen) : NULL;
    o.remote_addrs = paths[1] ? unix_addr(&rss, rlen) : NULL;
    gfl_future *f = NULL;
    if ((!paths[0] || o.local_addrs) && (!paths[1] || o.remote_addrs))
        f = GFL->create_datagram_endpoint(rt->loop, factory, d, factory_release, &o);
    if (o.local_addrs)
        GFL->addrinfo_unref((gfl_addrinfo *)o.local_addrs);
    if (o.remote_addrs)
        GFL->addrinfo_unref((gfl_addrinfo *)o.remote_addrs);
    if (!f) {
        factory_release(d); /* never handed over */
        return luaL_error(L, "create_datagram_endpoint: bad options (a remote address needs host and port; "
                             "an endpoint needs an address or a family)");
    }
    d->create = f;
    lua_settop(L, obj);
    lua_pushlightuserdata(L, f);
    return 2;
}

/* internal: wrap_datagram_fd(fd) -> endpoint, waiter */
static int l_wrap_fd(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    int fd = (int)luaL_checkinteger(L, 1);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int family = getsockname(fd, (struct sockaddr *)&ss, &len) == 0 ? ss.ss_family : 0;
    lua_dgram *d = dgram_new(L, rt, family, 0, DEFAULT_QUEUE);
    gfl_future *f = GFL->datagram_from_socket(rt->loop, factory, d, factory_release, fd);
    if (!f) {
        factory_release(d);
        return luaL_error(L, "wrap_datagram_fd: not a datagram socket");
    }
    d->create = f;
    lua_pushlightuserdata(L, f);
    return 2;
}

void gfl_lua_open_datagram(lua_State *L, int internal)
{
    gfl_lua_newclass(L, DGRAM_MT, dgram_methods, dg_gc);
    luaL_getmetatable(L, DGRAM_MT);
    lua_pushcfunction(L, dg_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_getfield(L, -1, "__index");
    lua_setfield(L, internal, "Datagram");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_create);
    lua_setfield(L, internal, "create_datagram_endpoint");
    lua_pushcfunction(L, l_wrap_fd);
    lua_setfield(L, internal, "wrap_datagram_fd");
}
