/*
 * TLS options on connections and servers: {tls = true | {...}} in the
 * options of open_connection / start_server / create_connection /
 * create_server. Verification is on by default.
 *
 * Until the core's gfl_api carries the TLS functions (globeflower_tls.h)
 * asking for TLS is an error, never a silent plain-text connection.
 */
#include "gfl_lua.h"

#include "protocol.h"
#include "stream.h"

int gfl_lua_tls_wanted(lua_State *L, int opts)
{
    lua_getfield(L, opts, "tls");
    int wanted = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!wanted) {
        lua_getfield(L, opts, "ssl");
        wanted = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    return wanted;
}

static gfl_future *unavailable(lua_State *L)
{
    luaL_error(L, "TLS is not available: this globeflower core has no TLS in its gfl_api");
    return NULL;
}

gfl_future *gfl_lua_tls_connect(lua_State *L, gfl_lua_rt *rt, int opts, const char *host,
                                const gfl_connect_options *o, gfl_lua_stream *s)
{
    (void)rt, (void)opts, (void)host, (void)o, (void)s;
    return unavailable(L);
}

gfl_future *gfl_lua_tls_create_connection(lua_State *L, gfl_lua_rt *rt, int opts, const char *host,
                                          const gfl_connect_options *o, gfl_protocol_factory factory,
                                          void *fud, gfl_release_fn frel)
{
    (void)rt, (void)opts, (void)host, (void)o, (void)factory, (void)fud, (void)frel;
    return unavailable(L);
}

gfl_future *gfl_lua_tls_create_server(lua_State *L, gfl_lua_rt *rt, int opts, const gfl_server_options *o,
                                      gfl_protocol_factory factory, void *fud, gfl_release_fn frel)
{
    (void)rt, (void)opts, (void)o, (void)factory, (void)fud, (void)frel;
    return unavailable(L);
}
