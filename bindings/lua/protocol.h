/*
 * Protocol-style connections (protocol.c), shared with server.c and tls.c.
 */
#ifndef GFL_LUA_PROTOCOL_H
#define GFL_LUA_PROTOCOL_H

#include "gfl_lua.h"

typedef struct gfl_lua_proto {
    gfl_lua_rt *rt;
    gfl_transport *t; /* one reference */
    int proto_ref;    /* the Lua protocol table, until connection_lost */
    int tr_ref;       /* the transport object, until connection_lost */
    int refs;         /* the transport, the transport object */
    int lost;
} gfl_lua_proto;

extern const gfl_protocol gfl_lua_protocol;

/* Runs the Lua protocol factory `factory_ref` for transport `t`. */
int gfl_lua_proto_create(gfl_lua_rt *rt, int factory_ref, gfl_transport *t, const gfl_protocol **proto, void **ud);

/* tls.c: a TLS client connection for a protocol factory. */
gfl_future *gfl_lua_tls_create_connection(lua_State *L, gfl_lua_rt *rt, int opts, const char *host,
                                          const gfl_connect_options *o, gfl_protocol_factory factory,
                                          void *fud, gfl_release_fn frel);

/* tls.c: a TLS server for a (stream or protocol) connection factory. */
gfl_future *gfl_lua_tls_create_server(lua_State *L, gfl_lua_rt *rt, int opts, const gfl_server_options *o,
                                      gfl_protocol_factory factory, void *fud, gfl_release_fn frel);

#endif
