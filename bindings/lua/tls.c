/*
 * TLS for Lua: contexts (gfl.tls_context), the `tls` option of
 * open_connection / start_server / create_connection / create_server, and
 * start_tls on an open stream or protocol-style transport.
 *
 * `tls` is true (a client with the system CA store: verification and
 * hostname checking on), a context object, or a table of context options
 * plus per-connection ones (server_hostname, handshake_timeout,
 * shutdown_timeout, context). Verification is never silently off: only the
 * explicitly named insecure_skip_verify = true turns it off, and verify =
 * false on a client is refused with a message saying so.
 */
#include "gfl_lua.h"

#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "stream.h"

#define TLSCTX_MT "globeflower.TLSContext"
#define DEFAULT_CTX_KEY "globeflower.tls_default"

typedef struct lua_tlsctx {
    gfl_tls_context *ctx; /* one reference */
} lua_tlsctx;

static int ctx_gc(lua_State *L)
{
    lua_tlsctx *c = gfl_lua_checkself(L, 1, TLSCTX_MT);
    if (c->ctx)
        GFL->tls_context_unref(c->ctx);
    c->ctx = NULL;
    return 0;
}

static lua_tlsctx *check_ctx(lua_State *L, int idx)
{
    lua_tlsctx *c = gfl_lua_checkself(L, idx, TLSCTX_MT);
    if (!c->ctx)
        luaL_error(L, "TLS context already finalised");
    return c;
}

static void push_ctx(lua_State *L, gfl_tls_context *ctx)
{
    lua_tlsctx *c = gfl_newuserdata(L, sizeof *c);
    c->ctx = ctx;
    luaL_getmetatable(L, TLSCTX_MT);
    lua_setmetatable(L, -2);
}

static int tls_version(lua_State *L, int opts, const char *key)
{
    lua_getfield(L, opts, key);
    int v = 0;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        v = (int)lua_tointeger(L, -1);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        if (strcmp(s, "TLSv1.2") == 0 || strcmp(s, "1.2") == 0)
            v = GFL_TLS_VERSION_1_2;
        else if (strcmp(s, "TLSv1.3") == 0 || strcmp(s, "1.3") == 0)
            v = GFL_TLS_VERSION_1_3;
        else
            luaL_error(L, "tls option '%s': \"TLSv1.2\" or \"TLSv1.3\" expected", key);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "tls option '%s': a version string expected", key);
    }
    lua_pop(L, 1);
    return v;
}

/* The first of several spellings that is set (asyncio's, OpenSSL's). */
static const char *opt_str2(lua_State *L, int opts, const char *a, const char *b)
{
    const char *s = gfl_lua_opt_string(L, opts, a, NULL);
    return s ? s : gfl_lua_opt_string(L, opts, b, NULL);
}

static int tri(lua_State *L, int opts, const char *key)
{
    lua_getfield(L, opts, key);
    int v = lua_isnil(L, -1) ? 0 : lua_toboolean(L, -1) ? 1 : -1;
    lua_pop(L, 1);
    return v;
}

/* A new context from the options table at `opts`; pushes its object.
 * Raises on bad options or files that do not load. */
static gfl_tls_context *new_ctx(lua_State *L, int opts, int server)
{
    gfl_tls_context_options o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.server = server;
    o.ca_file = opt_str2(L, opts, "cafile", "ca_file");
    o.ca_path = opt_str2(L, opts, "capath", "ca_path");
    o.default_cas = tri(L, opts, "default_cas");
    o.cert_file = opt_str2(L, opts, "cert", "certfile");
    if (!o.cert_file)
        o.cert_file = gfl_lua_opt_string(L, opts, "cert_file", NULL);
    o.key_file = opt_str2(L, opts, "key", "keyfile");
    if (!o.key_file)
        o.key_file = gfl_lua_opt_string(L, opts, "key_file", NULL);
    o.key_password = gfl_lua_opt_string(L, opts, "password", NULL);
    o.insecure_skip_verify = gfl_lua_opt_bool(L, opts, "insecure_skip_verify", 0);
    o.check_hostname = tri(L, opts, "check_hostname");
    o.min_version = tls_version(L, opts, "min_version");
    o.max_version = tls_version(L, opts, "max_version");
    o.ciphers = gfl_lua_opt_string(L, opts, "ciphers", NULL);
    o.ciphersuites = gfl_lua_opt_string(L, opts, "ciphersuites", NULL);
    o.session_cache = tri(L, opts, "session_cache");

    lua_getfield(L, opts, "verify");
    int vt = lua_type(L, -1);
    const char *vs = vt == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (vt == LUA_TNIL) {
        o.verify = GFL_TLS_VERIFY_DEFAULT;
    } else if (vt == LUA_TBOOLEAN) {
        if (lua_toboolean(L, -1))
            o.verify = server ? GFL_TLS_VERIFY_REQUIRED : GFL_TLS_VERIFY_DEFAULT;
        else if (server)
            o.verify = GFL_TLS_VERIFY_DEFAULT; /* no client certificate asked */
        else if (!o.insecure_skip_verify)
            luaL_error(L, "tls: verify = false would accept any server certificate; "
                          "set insecure_skip_verify = true if that is really wanted");
    } else if (vs && strcmp(vs, "required") == 0) {
        o.verify = GFL_TLS_VERIFY_REQUIRED;
    } else if (vs && strcmp(vs, "optional") == 0 && server) {
        o.verify = GFL_TLS_VERIFY_OPTIONAL;
    } else if (vs && strcmp(vs, "none") == 0 && server) {
        o.verify = GFL_TLS_VERIFY_DEFAULT;
    } else {
        luaL_error(L, "tls option 'verify': true, false%s expected", server ? ", \"required\", \"optional\"" : " (servers only)");
    }
    lua_pop(L, 1);

    lua_getfield(L, opts, "alpn");
    const char **alpn = NULL;
    if (lua_istable(L, -1)) {
        size_t n = gfl_rawlen(L, -1);
        alpn = gfl_newuserdata(L, (n + 1) * sizeof *alpn); /* freed by the GC */
        for (size_t i = 0; i < n; i++) {
            lua_rawgeti(L, -2, (int)i + 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "tls option 'alpn': a list of protocol names expected");
            alpn[i] = lua_tostring(L, -1); /* anchored by the alpn table */
            lua_pop(L, 1);
        }
        alpn[n] = NULL;
        o.alpn_protocols = alpn;
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "tls option 'alpn': a list of protocol names expected");
    }
    if (server && !o.cert_file)
        luaL_error(L, "tls: a server needs a certificate: tls = {cert = \"cert.pem\", key = \"key.pem\"}");

    gfl_value *err = NULL;
    gfl_tls_context *ctx = GFL->tls_context_new(&o, &err);
    if (alpn)
        lua_pop(L, 1);
    lua_pop(L, 1); /* the alpn option */
    if (!ctx) {
        const char *msg = err ? GFL->value_error_message(err) : NULL;
        lua_pushfstring(L, "tls: %s", msg ? msg : "cannot create the TLS context");
        if (err)
            GFL->value_unref(err);
        lua_error(L);
    }
    if (err)
        GFL->value_unref(err);
    push_ctx(L, ctx);
    return ctx;
}

/* The shared default client context (system CAs), made once per state:
 * loading the CA store is slow, and sessions resume per context. */
static gfl_tls_context *default_ctx(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, DEFAULT_CTX_KEY);
    lua_tlsctx *c = gfl_testudata(L, -1, TLSCTX_MT);
    if (c && c->ctx)
        return c->ctx;
    lua_pop(L, 1);
    lua_newtable(L);
    int opts = lua_gettop(L);
    gfl_tls_context *ctx = new_ctx(L, opts, 0);
    lua_remove(L, opts);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, DEFAULT_CTX_KEY);
    return ctx;
}

/* A context from the value at idx (true, a context, or an options table);
 * pushes the object holding it. */
static gfl_tls_context *ctx_from(lua_State *L, int idx, int server)
{
    if (lua_type(L, idx) == LUA_TBOOLEAN) {
        if (server)
            luaL_error(L, "tls: a server needs a certificate: tls = {cert = \"cert.pem\", key = \"key.pem\"}");
        return default_ctx(L);
    }
    if (gfl_testudata(L, idx, TLSCTX_MT)) {
        lua_pushvalue(L, idx);
        return check_ctx(L, -1)->ctx;
    }
    if (!lua_istable(L, idx))
        luaL_error(L, "the tls option must be true, a TLS context or a table of TLS options");
    lua_getfield(L, idx, "context");
    if (!lua_isnil(L, -1)) {
        gfl_tls_context *ctx = check_ctx(L, lua_gettop(L))->ctx;
        return ctx;
    }
    lua_pop(L, 1);
    return new_ctx(L, idx, server);
}

int gfl_lua_tls_options(lua_State *L, int opts, int server, gfl_tls_options *tls)
{
    if (!opts || !lua_istable(L, opts))
        return 0;
    lua_getfield(L, opts, "tls");
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
        lua_pop(L, 1);
        lua_getfield(L, opts, "ssl"); /* asyncio's spelling */
        if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
            lua_pop(L, 1);
            return 0;
        }
    }
    int v = lua_gettop(L);
    memset(tls, 0, sizeof *tls);
    tls->size = sizeof *tls;
    tls->context = ctx_from(L, v, server);
    int role = GFL->tls_context_is_server(tls->context);
    if (role != (server ? 1 : 0))
        luaL_error(L, "tls: a %s context cannot be used for a %s", role == 1 ? "server" : "client",
                   server ? "server" : "client connection");
    int t = lua_istable(L, v) ? v : 0;
    tls->server_hostname = gfl_lua_opt_string(L, t, "server_hostname", NULL);
    if (!tls->server_hostname)
        tls->server_hostname = gfl_lua_opt_string(L, opts, "server_hostname", NULL);
    tls->handshake_timeout = gfl_lua_opt_number(L, t, "handshake_timeout",
                                                gfl_lua_opt_number(L, opts, "ssl_handshake_timeout", 0));
    tls->shutdown_timeout = gfl_lua_opt_number(L, t, "shutdown_timeout",
                                               gfl_lua_opt_number(L, opts, "ssl_shutdown_timeout", 0));
    lua_remove(L, v); /* the context object stays, anchoring the context */
    return 1;
}

/* ---- start_tls ---- */

/* Options of start_tls(opts): a table like `tls`, `true`, or a context. */
static void start_tls_options(lua_State *L, int idx, gfl_tls_options *tls)
{
    memset(tls, 0, sizeof *tls);
    tls->size = sizeof *tls;
    int server = lua_istable(L, idx) && gfl_lua_opt_bool(L, idx, "server_side", 0);
    if (lua_isnoneornil(L, idx)) {
        lua_pushboolean(L, 1);
        lua_replace(L, idx);
    }
    if (gfl_testudata(L, idx, TLSCTX_MT))
        server = GFL->tls_context_is_server(check_ctx(L, idx)->ctx) == 1;
    tls->context = ctx_from(L, idx, server);
    if (lua_istable(L, idx)) {
        tls->server_hostname = gfl_lua_opt_string(L, idx, "server_hostname", NULL);
        tls->handshake_timeout = gfl_lua_opt_number(L, idx, "handshake_timeout", 0);
        tls->shutdown_timeout = gfl_lua_opt_number(L, idx, "shutdown_timeout", 0);
    }
    if (GFL->tls_context_is_server(tls->context) != 1 && !tls->server_hostname) {
        lua_getfield(L, idx, "insecure_skip_verify");
        int insecure = lua_istable(L, idx) && lua_toboolean(L, -1);
        lua_pop(L, 1);
        if (!insecure)
            luaL_error(L, "start_tls: server_hostname is required to verify the peer");
    }
}

/* Streams: the stream keeps its Lua object; its transport becomes the
 * TLS one once the handshake succeeded. */
static void stream_upgraded(gfl_future *f, void *arg)
{
    gfl_lua_stream *s = arg;
    void *obj;
    if (!s->lost && GFL->future_state_of(f) == GFL_FUTURE_RESULT &&
        GFL->value_get_object(GFL->future_value(f), GFL->transport_class(), &obj) == 0) {
        gfl_transport *raw = s->t;
        s->t = GFL->transport_ref(obj);
        if (raw)
            GFL->transport_unref(raw);
    }
    s->upgrading = 0;
    gfl_future *w = s->uwait;
    s->uwait = NULL;
    if (w) {
        if (GFL->future_state_of(w) == GFL_FUTURE_PENDING)
            GFL->future_set_result(w, GFL->value_nil());
        GFL->future_unref(w);
    }
    gfl_lua_stream_unref(s); /* the callback's share */
}

/* The upgrade's callback will never run (the loop closed first). */
static void stream_upgrade_dropped(void *arg)
{
    gfl_lua_stream *s = arg;
    s->upgrading = 0;
    gfl_lua_stream_unref(s);
}

/* internal: stream:_start_tls(opts) -> false, waiter */
int gfl_lua_stream_start_tls(lua_State *L, gfl_lua_stream *s)
{
    lua_settop(L, 2);
    gfl_tls_options tls;
    start_tls_options(L, 2, &tls);
    if (!s->t || s->lost)
        return gfl_lua_push_failure_value(L, s->error);
    if (s->upgrading || s->upgrade)
        return luaL_error(L, "start_tls: already upgraded or upgrading");
    gfl_future *f = GFL->start_tls(s->t, NULL, NULL, &tls);
    if (!f)
        return luaL_error(L, "start_tls: the transport cannot be upgraded (closing, or not a stream)");
    s->upgrade = f;
    s->upgrading = 1;
    s->uwait = GFL->future_new(s->rt->loop);
    s->refs++;
    if (!s->uwait || gfl_lua_add_done_callback(f, stream_upgraded, s, stream_upgrade_dropped) < 0) {
        s->refs--;
        s->upgrading = 0;
        return luaL_error(L, "start_tls: out of memory");
    }
    lua_pushboolean(L, 0);
    lua_pushlightuserdata(L, s->uwait);
    return 2;
}

/* internal: stream:_tls_result() -> true | nil, msg, code */
int gfl_lua_stream_tls_result(lua_State *L, gfl_lua_stream *s)
{
    gfl_future *f = s->upgrade;
    if (!f || s->upgrading)
        return luaL_error(L, "start_tls: no upgrade finished");
    if (GFL->future_state_of(f) == GFL_FUTURE_RESULT)
        return lua_pushboolean(L, 1), 1;
    return gfl_lua_push_failure_value(L, GFL->future_value(f));
}

/* Protocol style: the same, for the transport object of a protocol. */
struct proto_upgrade {
    gfl_lua_proto *p;
    gfl_future *wait;
};

static void proto_upgraded(gfl_future *f, void *arg)
{
    struct proto_upgrade *u = arg;
    gfl_lua_proto *p = u->p;
    void *obj;
    if (GFL->future_state_of(f) == GFL_FUTURE_RESULT &&
        GFL->value_get_object(GFL->future_value(f), GFL->transport_class(), &obj) == 0) {
        gfl_transport *raw = p->t;
        p->t = GFL->transport_ref(obj);
        if (raw)
            GFL->transport_unref(raw);
    }
    p->upgrading = 0;
    GFL->future_set_result(u->wait, GFL->value_nil());
    GFL->future_unref(u->wait);
    gfl_lua_proto_unref(p);
    free(u);
}

static void proto_upgrade_dropped(void *arg)
{
    struct proto_upgrade *u = arg;
    u->p->upgrading = 0;
    GFL->future_unref(u->wait);
    gfl_lua_proto_unref(u->p);
    free(u);
}

/* internal: transport:_start_tls(opts) -> future (resolved once done), upgrade future */
int gfl_lua_proto_start_tls(lua_State *L, gfl_lua_proto *p)
{
    lua_settop(L, 2);
    gfl_tls_options tls;
    start_tls_options(L, 2, &tls);
    if (p->lost || !p->t)
        return gfl_lua_push_failure(L, GFL_ECLOSED, "closed");
    if (p->upgrading || p->upgrade)
        return luaL_error(L, "start_tls: already upgraded or upgrading");
    struct proto_upgrade *u = malloc(sizeof *u);
    if (!u)
        return luaL_error(L, "start_tls: out of memory");
    u->p = p;
    u->wait = GFL->future_new(p->rt->loop);
    gfl_future *f = u->wait ? GFL->start_tls(p->t, NULL, NULL, &tls) : NULL;
    if (!f) {
        GFL->future_unref(u->wait);
        free(u);
        return luaL_error(L, "start_tls: the transport cannot be upgraded (closing, or not a stream)");
    }
    p->refs++;
    p->upgrading = 1;
    p->upgrade = f;
    if (gfl_lua_add_done_callback(f, proto_upgraded, u, proto_upgrade_dropped) < 0) {
        p->refs--;
        p->upgrading = 0;
        GFL->future_unref(u->wait);
        free(u);
        return luaL_error(L, "start_tls: out of memory");
    }
    lua_pushboolean(L, 0);
    lua_pushlightuserdata(L, u->wait);
    return 2;
}

int gfl_lua_proto_tls_result(lua_State *L, gfl_lua_proto *p)
{
    gfl_future *f = p->upgrade;
    if (!f || p->upgrading)
        return luaL_error(L, "start_tls: no upgrade finished");
    if (GFL->future_state_of(f) == GFL_FUTURE_RESULT)
        return lua_pushboolean(L, 1), 1;
    return gfl_lua_push_failure_value(L, GFL->future_value(f));
}

/* ---- gfl.tls_context ---- */

/* gfl.tls_context([opts]) -> a reusable context; opts.server = true for a
 * server's (cert and key required) */
static int l_tls_context(lua_State *L)
{
    gfl_lua_rt_get(L);
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    new_ctx(L, 1, gfl_lua_opt_bool(L, 1, "server", 0));
    return 1;
}

static int ctx_is_server(lua_State *L)
{
    lua_pushboolean(L, GFL->tls_context_is_server(check_ctx(L, 1)->ctx) == 1);
    return 1;
}

/* ctx:add_sni(name, other_server_ctx): a client asking for `name` gets the
 * certificate of the other context */
static int ctx_add_sni(lua_State *L)
{
    lua_tlsctx *c = check_ctx(L, 1);
    const char *name = luaL_checkstring(L, 2);
    lua_tlsctx *use = check_ctx(L, 3);
    int rc = GFL->tls_context_add_sni(c->ctx, name, use->ctx);
    if (rc < 0)
        return gfl_lua_fail(L, "add_sni", rc);
    return 0;
}

static int ctx_tostring(lua_State *L)
{
    lua_tlsctx *c = gfl_lua_checkself(L, 1, TLSCTX_MT);
    lua_pushfstring(L, "globeflower.TLSContext (%s): %p",
                    c->ctx && GFL->tls_context_is_server(c->ctx) == 1 ? "server" : "client", (void *)c->ctx);
    return 1;
}

static const luaL_Reg ctx_methods[] = {
    {"is_server", ctx_is_server},
    {"add_sni", ctx_add_sni},
    {NULL, NULL},
};

void gfl_lua_open_tls(lua_State *L, int internal)
{
    gfl_lua_newclass(L, TLSCTX_MT, ctx_methods, ctx_gc);
    luaL_getmetatable(L, TLSCTX_MT);
    lua_pushcfunction(L, ctx_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_tls_context);
    lua_setfield(L, internal, "tls_context");
    lua_pushinteger(L, GFL_ETLS);
    lua_setfield(L, internal, "ETLS");
    lua_pushinteger(L, GFL_ETLSVERIFY);
    lua_setfield(L, internal, "ETLSVERIFY");
}
