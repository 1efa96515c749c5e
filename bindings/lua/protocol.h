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
    int refs;         /* the transport, the transport object, a start_tls */
    int lost;
    int upgrading;       /* start_tls running */
    gfl_future *upgrade; /* start_tls: the core's future */
} gfl_lua_proto;

void gfl_lua_proto_unref(gfl_lua_proto *p);

extern const gfl_protocol gfl_lua_protocol;

/* Runs the Lua protocol factory `factory_ref` for transport `t`. */
int gfl_lua_proto_create(gfl_lua_rt *rt, int factory_ref, gfl_transport *t, const gfl_protocol **proto, void **ud);

/* tls.c: start_tls on a protocol-style transport, and its outcome. */
int gfl_lua_proto_start_tls(lua_State *L, gfl_lua_proto *p);
int gfl_lua_proto_tls_result(lua_State *L, gfl_lua_proto *p);

#endif
