/*
 * Streams (asyncio's StreamReader + StreamWriter in one object) over any
 * stream transport: TCP, Unix sockets, pipes, TLS.
 *
 * The protocol side buffers what arrives; the Lua side asks with
 * read/readline/readuntil/readexactly. When the buffer cannot answer, the
 * C function returns `false, waiter` and the prelude yields the waiter (a
 * light userdata gfl_future the stream owns) and asks again once it is
 * done. Reading pauses the transport above 2 x limit bytes buffered.
 *
 * Lifetime: the stream state is shared by the Lua object and the transport
 * (from the factory to connection_lost); whichever goes last frees it. An
 * unreachable open stream is aborted by __gc, as an unclosed socket is.
 *
 * Expected I/O failures return nil, message, code (see docs/lua.md).
 */
#include "gfl_lua.h"

#include <stdlib.h>
#include <limits.h>
#include <string.h>

#include "stream.h"

#define DEFAULT_LIMIT (64 * 1024)

void gfl_lua_stream_unref(gfl_lua_stream *s)
{
    if (--s->refs > 0)
        return;
    if (s->t)
        GFL->transport_unref(s->t);
    GFL->value_unref(s->error);
    GFL->future_unref(s->rwait);
    GFL->future_unref(s->dwait);
    GFL->future_unref(s->cwait);
    GFL->future_unref(s->connect);
    GFL->future_unref(s->upgrade);
    GFL->future_unref(s->uwait);
    free(s->buf);
    gfl_lua_rt_unref(s->rt);
    free(s);
}

/* Resolves (and forgets) a waiter; waiters are resolved with nil. */
/* A new waiter in *w, or the pending one; NULL if another task waits. */
static gfl_future *waiter(gfl_lua_stream *s, gfl_future **w, int exclusive)
{
    if (*w) {
        if (GFL->future_state_of(*w) == GFL_FUTURE_PENDING)
            return exclusive ? NULL : *w;
        GFL->future_unref(*w); /* cancelled by an earlier, cancelled reader */
    }
    *w = GFL->future_new(s->rt->loop);
    return *w;
}

/* ---- protocol callbacks ---- */

static void on_connection_made(gfl_transport *t, void *ud)
{
    gfl_lua_stream *s = ud;
    if (!s->t)
        s->t = GFL->transport_ref(t);
    if (s->on_made)
        s->on_made(s);
}

static int reserve(gfl_lua_stream *s, size_t extra)
{
    if (s->start > 0 && (s->len == 0 || s->start + s->len + extra > s->cap)) {
        memmove(s->buf, s->buf + s->start, s->len);
        s->start = 0;
    }
    if (s->len + extra <= s->cap)
        return 0;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + extra)
        cap *= 2;
    char *b = realloc(s->buf, cap);
    if (!b)
        return -1;
    s->buf = b;
    s->cap = cap;
    return 0;
}

static void on_data(gfl_transport *t, const void *data, size_t len, void *ud)
{
    gfl_lua_stream *s = ud;
    if (reserve(s, len) < 0) {
        GFL->transport_abort(t);
        return;
    }
    memcpy(s->buf + s->start + s->len, data, len);
    s->len += len;
    if (!s->paused_reading && s->len > 2 * s->limit) {
        s->paused_reading = 1;
        GFL->transport_pause_reading(t);
    }
    gfl_lua_wake_waiter(&s->rwait);
}

static int on_eof(gfl_transport *t, void *ud)
{
    (void)t;
    gfl_lua_stream *s = ud;
    s->eof = 1;
    gfl_lua_wake_waiter(&s->rwait);
    return 1; /* half-close: the Lua side may still write, then close */
}

static void on_lost(gfl_transport *t, gfl_value *error, void *ud)
{
    (void)t;
    gfl_lua_stream *s = ud;
    s->lost = 1;
    s->eof = 1;
    if (error && !s->error)
        s->error = GFL->value_ref(error);
    gfl_lua_wake_waiter(&s->rwait);
    gfl_lua_wake_waiter(&s->dwait);
    gfl_lua_wake_waiter(&s->cwait);
    if (s->on_lost)
        s->on_lost(s);
    /* A lost transport answers nothing any more; letting it go now also
     * breaks the cycle stream -> TLS transport -> its origin -> the
     * factory's share of the stream. */
    if (s->t) {
        GFL->transport_unref(s->t);
        s->t = NULL;
    }
    gfl_lua_stream_unref(s); /* the transport's share */
}

static void on_pause_writing(gfl_transport *t, void *ud)
{
    (void)t;
    ((gfl_lua_stream *)ud)->paused_writing = 1;
}

static void on_resume_writing(gfl_transport *t, void *ud)
{
    (void)t;
    gfl_lua_stream *s = ud;
    s->paused_writing = 0;
    gfl_lua_wake_waiter(&s->dwait);
}

const gfl_protocol gfl_lua_stream_protocol = {
    .size = sizeof(gfl_protocol),
    .connection_made = on_connection_made,
    .data_received = on_data,
    .eof_received = on_eof,
    .connection_lost = on_lost,
    .pause_writing = on_pause_writing,
    .resume_writing = on_resume_writing,
};

gfl_lua_stream *gfl_lua_stream_new(gfl_lua_rt *rt, size_t limit)
{
    gfl_lua_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->rt = rt;
    gfl_lua_rt_ref(rt);
    s->limit = limit ? limit : DEFAULT_LIMIT;
    s->refs = 1;
    return s;
}

/* The factory: attaches the stream to the new transport. */
int gfl_lua_stream_factory(void *factory_ud, gfl_transport *t, const gfl_protocol **proto, void **ud)
{
    gfl_lua_stream *s = factory_ud;
    if (s->attached)
        return GFL_ESTATE;
    s->attached = 1;
    s->t = GFL->transport_ref(t);
    s->refs++; /* the transport's share, until connection_lost */
    *proto = &gfl_lua_stream_protocol;
    *ud = s;
    return 0;
}

void gfl_lua_stream_factory_release(void *factory_ud)
{
    gfl_lua_stream_unref(factory_ud);
}

/* ---- the Lua object ---- */

gfl_lua_stream *gfl_lua_stream_push(lua_State *L, gfl_lua_stream *s)
{
    gfl_lua_stream **p = gfl_newuserdata(L, sizeof *p);
    *p = s;
    s->refs++;
    s->lua_alive = 1;
    luaL_getmetatable(L, GFL_LUA_STREAM);
    lua_setmetatable(L, -2);
    return s;
}

static gfl_lua_stream *check(lua_State *L)
{
    gfl_lua_stream **p = gfl_lua_checkself(L, 1, GFL_LUA_STREAM);
    if (!*p)
        luaL_error(L, "stream already finalised");
    return *p;
}

static int stream_gc(lua_State *L)
{
    gfl_lua_stream **p = gfl_lua_checkself(L, 1, GFL_LUA_STREAM);
    gfl_lua_stream *s = *p;
    if (!s)
        return 0;
    *p = NULL;
    s->lua_alive = 0;
    /* Nobody can use it any more: an open connection is aborted. */
    if (s->t && !s->lost)
        GFL->transport_abort(s->t);
    if (s->connect && GFL->future_state_of(s->connect) == GFL_FUTURE_PENDING)
        GFL->future_cancel(s->connect, NULL);
    gfl_lua_stream_unref(s);
    return 0;
}

/* Consumed bytes: maybe resume a paused transport. */
static void consumed(gfl_lua_stream *s, size_t n)
{
    s->start += n;
    s->len -= n;
    if (s->len == 0)
        s->start = 0;
    if (s->paused_reading && s->len <= s->limit && s->t && !s->lost) {
        s->paused_reading = 0;
        GFL->transport_resume_reading(s->t);
    }
}

static int push_error(lua_State *L, gfl_lua_stream *s)
{
    if (s->error)
        return gfl_lua_push_failure_value(L, s->error);
    return gfl_lua_push_failure(L, GFL_ECLOSED, "closed");
}

/* false, waiter: the prelude yields the waiter and calls again. */
static int must_wait(lua_State *L, gfl_lua_stream *s)
{
    gfl_future *w = waiter(s, &s->rwait, 1);
    if (!w)
        return luaL_error(L, "another task is already waiting to read this stream");
    if (s->paused_reading && s->t && !s->lost) {
        /* The caller needs more than the limit allows: let data in. */
        s->paused_reading = 0;
        GFL->transport_resume_reading(s->t);
    }
    lua_pushboolean(L, 0);
    lua_pushlightuserdata(L, w);
    return 2;
}

/* read([n]): up to n bytes (at least 1), "" at EOF; n < 0 or nil: until EOF */
static int s_read(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    lua_Integer n = lua_isnoneornil(L, 2) ? -1 : gfl_lua_checkinteger(L, 2, 1, "read");
    if (n == 0)
        return lua_pushliteral(L, ""), 1;
    if (n > 0 && s->len > 0) {
        size_t k = s->len < (size_t)n ? s->len : (size_t)n;
        lua_pushlstring(L, s->buf + s->start, k);
        consumed(s, k);
        return 1;
    }
    if (s->eof) {
        if (s->error && s->len == 0)
            return push_error(L, s);
        lua_pushlstring(L, s->buf ? s->buf + s->start : "", s->len);
        consumed(s, s->len);
        return 1;
    }
    return must_wait(L, s);
}

/* readexactly(n): n bytes; nil, msg, code, partial when EOF comes first */
static int s_readexactly(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    lua_Integer n = gfl_lua_checkinteger(L, 2, 1, "readexactly");
    if (n < 0)
        gfl_lua_argerror(L, 1, "readexactly", "a byte count >= 0 expected, got %d", (int)n);
    if (s->len >= (size_t)n) {
        lua_pushlstring(L, s->buf ? s->buf + s->start : "", (size_t)n);
        consumed(s, (size_t)n);
        return 1;
    }
    if (s->eof) {
        if (s->error) {
            push_error(L, s);
        } else {
            lua_pushnil(L);
            lua_pushfstring(L, "IncompleteReadError: %d bytes read on a total of %d expected",
                            (int)s->len, (int)n);
            lua_pushinteger(L, GFL_EIO);
        }
        lua_pushlstring(L, s->buf ? s->buf + s->start : "", s->len);
        consumed(s, s->len);
        return 4;
    }
    return must_wait(L, s);
}

static const char *find(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    if (nlen == 1)
        return memchr(hay, needle[0], hlen);
    return memmem(hay, hlen, needle, nlen);
}

/* readuntil(sep [, partial_ok]): data up to and including sep. At EOF
 * without sep: nil, msg, code, partial (readline: the partial line). */
static int readuntil(lua_State *L, gfl_lua_stream *s, const char *sep, size_t seplen, int partial_ok)
{
    const char *hit = s->len ? find(s->buf + s->start, s->len, sep, seplen) : NULL;
    if (hit) {
        size_t k = (size_t)(hit - (s->buf + s->start)) + seplen;
        lua_pushlstring(L, s->buf + s->start, k);
        consumed(s, k);
        return 1;
    }
    if (s->len > s->limit) {
        lua_pushnil(L);
        lua_pushfstring(L, "LimitOverrunError: separator not found and the buffer exceeds the limit (%d bytes)",
                        (int)s->limit);
        lua_pushinteger(L, GFL_ERANGE);
        return 3;
    }
    if (s->eof) {
        if (partial_ok && !(s->error && s->len == 0)) {
            lua_pushlstring(L, s->buf ? s->buf + s->start : "", s->len);
            consumed(s, s->len);
            return 1;
        }
        if (s->error)
            push_error(L, s);
        else {
            lua_pushnil(L);
            lua_pushfstring(L, "IncompleteReadError: EOF before the separator (%d bytes read)", (int)s->len);
            lua_pushinteger(L, GFL_EIO);
        }
        lua_pushlstring(L, s->buf ? s->buf + s->start : "", s->len);
        consumed(s, s->len);
        return 4;
    }
    return must_wait(L, s);
}

static int s_readuntil(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    size_t seplen;
    const char *sep = "\n";
    seplen = 1;
    if (!lua_isnoneornil(L, 2))
        sep = gfl_lua_checklstring(L, 2, 1, "readuntil", &seplen);
    if (seplen == 0)
        gfl_lua_argerror(L, 1, "readuntil", "the separator must not be empty");
    return readuntil(L, s, sep, seplen, 0);
}

static int s_readline(lua_State *L)
{
    return readuntil(L, check(L), "\n", 1, 1);
}

static int s_at_eof(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    lua_pushboolean(L, s->eof && s->len == 0);
    return 1;
}

/* write(data, ...): true, or nil, msg, code once the connection is gone */
static int s_write(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    int n = lua_gettop(L);
    if (!s->t || s->lost)
        return push_error(L, s);
    if (s->upgrading)
        return gfl_lua_push_failure(L, GFL_ESTATE, "start_tls is running: wait for it before writing");
    int rc;
    if (n == 2) {
        size_t len;
        const char *data = gfl_lua_checklstring(L, 2, 1, "write", &len);
        rc = GFL->transport_write(s->t, data, len);
    } else {
        gfl_iovec iov[16];
        if (n - 1 > 16)
            gfl_lua_argerror(L, 17, "write", "at most 16 pieces per write");
        for (int i = 2; i <= n; i++)
            iov[i - 2].base = gfl_lua_checklstring(L, i, i - 1, "write", &iov[i - 2].len);
        rc = GFL->transport_writev(s->t, iov, n - 1);
    }
    if (rc < 0) {
        if (s->error)
            return push_error(L, s);
        return gfl_lua_push_failure(L, rc, NULL);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* drain(): true when the write buffer is below the high-water mark */
static int s_drain(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    if (s->lost || !s->t)
        return push_error(L, s);
    if (!s->paused_writing) {
        lua_pushboolean(L, 1);
        return 1;
    }
    gfl_future *w = waiter(s, &s->dwait, 0);
    if (!w)
        return luaL_error(L, "drain: out of memory");
    lua_pushboolean(L, 0);
    lua_pushlightuserdata(L, w);
    return 2;
}

static int s_write_eof(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    if (!s->t || s->lost)
        return push_error(L, s);
    int rc = GFL->transport_write_eof(s->t);
    if (rc < 0)
        return gfl_lua_push_failure(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int s_can_write_eof(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    lua_pushboolean(L, s->t && GFL->transport_can_write_eof(s->t) == 1);
    return 1;
}

static int s_close(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    if (s->t && !s->lost)
        GFL->transport_close(s->t);
    return 0;
}

static int s_abort(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    if (s->t && !s->lost)
        GFL->transport_abort(s->t);
    return 0;
}

static int s_is_closing(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    lua_pushboolean(L, !s->t || s->lost || GFL->transport_is_closing(s->t) == 1);
    return 1;
}

/* wait_closed(): true once the connection is gone (false, waiter before) */
static int s_wait_closed(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    if (s->lost || !s->t) {
        lua_pushboolean(L, 1);
        return 1;
    }
    gfl_future *w = waiter(s, &s->cwait, 0);
    if (!w)
        return luaL_error(L, "wait_closed: out of memory");
    lua_pushboolean(L, 0);
    lua_pushlightuserdata(L, w);
    return 2;
}

int gfl_lua_push_extra_info(lua_State *L, gfl_transport *t, const char *name)
{
    gfl_value *v = t ? GFL->transport_get_extra_info(t, name) : NULL;
    if (!v) {
        lua_pushnil(L);
        return 1;
    }
    int n = gfl_lua_unpack(L, v);
    GFL->value_unref(v);
    return n;
}

static int s_get_extra_info(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    return gfl_lua_push_extra_info(L, s->t, luaL_checkstring(L, 2));
}

static int s_getpeername(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    char addr[128];
    size_t len = sizeof addr;
    if (!s->t || GFL->transport_get_sockaddr(s->t, 1, addr, &len) < 0)
        return 0;
    return gfl_lua_push_sockaddr(L, addr, len);
}

static int s_getsockname(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    char addr[128];
    size_t len = sizeof addr;
    if (!s->t || GFL->transport_get_sockaddr(s->t, 0, addr, &len) < 0)
        return 0;
    return gfl_lua_push_sockaddr(L, addr, len);
}

static int s_set_write_buffer_limits(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    int64_t high = (int64_t)luaL_optnumber(L, 2, -1);
    int64_t low = (int64_t)luaL_optnumber(L, 3, -1);
    int rc = s->t ? GFL->transport_set_write_buffer_limits(s->t, high, low) : GFL_ECLOSED;
    if (rc < 0)
        return gfl_lua_fail(L, "set_write_buffer_limits", rc);
    return 0;
}

static int s_get_write_buffer_size(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    int64_t n = s->t ? GFL->transport_get_write_buffer_size(s->t) : 0;
    lua_pushinteger(L, (lua_Integer)(n < 0 ? 0 : n));
    return 1;
}

static int s_buffered(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check(L)->len);
    return 1;
}

static int s_start_tls(lua_State *L)
{
    return gfl_lua_stream_start_tls(L, check(L));
}

static int s_tls_result(lua_State *L)
{
    return gfl_lua_stream_tls_result(L, check(L));
}

/* internal: after yielding the connect future: true or nil, msg, code */
static int s_connected(lua_State *L)
{
    gfl_lua_stream *s = check(L);
    gfl_future *f = s->connect;
    s->connect = NULL;
    int state = f ? GFL->future_state_of(f) : GFL_FUTURE_RESULT;
    int n = 1;
    if (state == GFL_FUTURE_RESULT)
        lua_pushboolean(L, 1);
    else
        n = gfl_lua_push_failure_value(L, GFL->future_value(f));
    GFL->future_unref(f);
    return n;
}

static const luaL_Reg stream_methods[] = {
    {"_read", s_read},
    {"_readexactly", s_readexactly},
    {"_readuntil", s_readuntil},
    {"_readline", s_readline},
    {"_drain", s_drain},
    {"_wait_closed", s_wait_closed},
    {"_connected", s_connected},
    {"_start_tls", s_start_tls},
    {"_tls_result", s_tls_result},
    {"at_eof", s_at_eof},
    {"write", s_write},
    {"write_eof", s_write_eof},
    {"can_write_eof", s_can_write_eof},
    {"close", s_close},
    {"abort", s_abort},
    {"is_closing", s_is_closing},
    {"get_extra_info", s_get_extra_info},
    {"getpeername", s_getpeername},
    {"getsockname", s_getsockname},
    {"set_write_buffer_limits", s_set_write_buffer_limits},
    {"get_write_buffer_size", s_get_write_buffer_size},
    {"buffered", s_buffered},
    {NULL, NULL},
};

/* ---- opening connections ---- */

/* Starts `f` (the connect future) for `s`, pushes stream, waiter. */
int gfl_lua_stream_connecting(lua_State *L, gfl_lua_stream *s, gfl_future *f)
{
    if (!f) {
        gfl_lua_stream_unref(s); /* the factory's share: never used */
        gfl_lua_stream_unref(s);
        return luaL_error(L, "open_connection: bad arguments or the loop is closed");
    }
    s->connect = f;
    gfl_lua_stream_push(L, s);
    gfl_lua_stream_unref(s); /* the creator's share now belongs to the object */
    lua_pushlightuserdata(L, f);
    return 2;
}

/* internal: open_connection(host, port, opts) -> stream, waiter */
static int l_open_connection(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    const char *host = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    lua_pushvalue(L, 2);
    const char *port = lua_tostring(L, -1);
    if (!port)
        return luaL_argerror(L, 2, "port expected");
    int opts = lua_istable(L, 3) ? 3 : 0;
    gfl_connect_options o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.host = host;
    o.port = port;
    o.family = (int)gfl_lua_opt_number(L, opts, "family", 0);
    o.local_host = gfl_lua_opt_string(L, opts, "local_host", NULL);
    o.local_port = gfl_lua_opt_string(L, opts, "local_port", NULL);
    o.happy_eyeballs_delay = gfl_lua_opt_number(L, opts, "happy_eyeballs_delay", 0);
    o.interleave = (int)gfl_lua_opt_number(L, opts, "interleave", 0);
    gfl_tls_options tls;
    int use_tls = gfl_lua_tls_options(L, opts, 0, &tls); /* before anything is allocated: may raise */
    gfl_lua_stream *s = gfl_lua_stream_new(rt, (size_t)gfl_lua_opt_number(L, opts, "limit", 0));
    if (!s)
        return luaL_error(L, "open_connection: out of memory");
    s->refs++; /* the factory's share */
    gfl_future *f;
    if (use_tls)
        f = GFL->create_tls_connection(rt->loop, gfl_lua_stream_factory, s, gfl_lua_stream_factory_release, &o, &tls);
    else
        f = GFL->create_connection(rt->loop, gfl_lua_stream_factory, s, gfl_lua_stream_factory_release, &o);
    return gfl_lua_stream_connecting(L, s, f);
}

/* internal: open_unix_connection(path) -> stream, waiter */
static int l_open_unix_connection(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    size_t len;
    const char *path = gfl_lua_checklstring(L, 1, 1, "open_unix_connection", &len);
    gfl_lua_check_unix_path(L, len, 1, "open_unix_connection");
    int opts = lua_istable(L, 2) ? 2 : 0;
    gfl_lua_stream *s = gfl_lua_stream_new(rt, (size_t)gfl_lua_opt_number(L, opts, "limit", 0));
    if (!s)
        return luaL_error(L, "open_unix_connection: out of memory");
    s->refs++;
    gfl_future *f = GFL->create_unix_connection(rt->loop, gfl_lua_stream_factory, s,
                                                gfl_lua_stream_factory_release, path, len);
    return gfl_lua_stream_connecting(L, s, f);
}

/* internal: connect_fd(fd, kind) -> stream, waiter ("socket", "read_pipe",
 * "write_pipe"): wraps a file descriptor the caller hands over */
static int l_connect_fd(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    lua_Integer fd = gfl_lua_checkinteger(L, 1, 1, "wrap_fd");
    if (fd < 0 || fd > INT_MAX)
        gfl_lua_argerror(L, 1, "wrap_fd", "a file descriptor >= 0 expected");
    const char *kind = lua_isnoneornil(L, 2) ? "socket" : gfl_lua_checklstring(L, 2, 2, "wrap_fd", NULL);
    if (strcmp(kind, "socket") != 0 && strcmp(kind, "read_pipe") != 0 && strcmp(kind, "write_pipe") != 0)
        gfl_lua_argerror(L, 2, "wrap_fd", "\"socket\", \"read_pipe\" or \"write_pipe\" expected, got \"%s\"", kind);
    gfl_lua_stream *s = gfl_lua_stream_new(rt, 0);
    if (!s)
        return luaL_error(L, "out of memory");
    s->refs++;
    gfl_future *f;
    if (strcmp(kind, "read_pipe") == 0)
        f = GFL->connect_read_pipe(rt->loop, gfl_lua_stream_factory, s, gfl_lua_stream_factory_release, (int)fd);
    else if (strcmp(kind, "write_pipe") == 0)
        f = GFL->connect_write_pipe(rt->loop, gfl_lua_stream_factory, s, gfl_lua_stream_factory_release, (int)fd);
    else
        f = GFL->connect_socket(rt->loop, gfl_lua_stream_factory, s, gfl_lua_stream_factory_release, (int)fd);
    return gfl_lua_stream_connecting(L, s, f);
}

void gfl_lua_open_stream(lua_State *L, int internal)
{
    gfl_lua_newclass(L, GFL_LUA_STREAM, stream_methods, stream_gc);
    luaL_getmetatable(L, GFL_LUA_STREAM);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, internal, "Stream");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_open_connection);
    lua_setfield(L, internal, "open_connection");
    lua_pushcfunction(L, l_open_unix_connection);
    lua_setfield(L, internal, "open_unix_connection");
    lua_pushcfunction(L, l_connect_fd);
    lua_setfield(L, internal, "connect_fd");
}
