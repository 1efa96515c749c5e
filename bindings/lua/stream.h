/*
 * The stream state shared by stream.c (reading/writing), server.c
 * (accepted connections) and tls.c (TLS connections).
 */
#ifndef GFL_LUA_STREAM_H
#define GFL_LUA_STREAM_H

#include "gfl_lua.h"

#define GFL_LUA_STREAM "globeflower.Stream"

typedef struct gfl_lua_stream gfl_lua_stream;

struct gfl_lua_stream {
    gfl_lua_rt *rt;
    gfl_transport *t; /* one reference once attached */
    int refs;         /* the Lua object, the transport, the factory, creators */
    char *buf;        /* received, not yet read: buf[start, start + len) */
    size_t start, len, cap;
    size_t limit;
    gfl_value *error; /* why the connection was lost */
    gfl_future *rwait, *dwait, *cwait; /* read, drain, wait_closed waiters */
    gfl_future *connect;               /* the connect operation */
    gfl_future *upgrade, *uwait;       /* start_tls: the core's future, the Lua waiter */
    unsigned eof : 1, lost : 1, paused_reading : 1, paused_writing : 1;
    unsigned attached : 1, lua_alive : 1, upgrading : 1;
    /* Servers: run at connection_made / connection_lost. */
    void (*on_made)(gfl_lua_stream *s);
    void (*on_lost)(gfl_lua_stream *s);
    void *owner;
};

extern const gfl_protocol gfl_lua_stream_protocol;

gfl_lua_stream *gfl_lua_stream_new(gfl_lua_rt *rt, size_t limit);
void gfl_lua_stream_unref(gfl_lua_stream *s);
int gfl_lua_stream_factory(void *factory_ud, gfl_transport *t, const gfl_protocol **proto, void **ud);
void gfl_lua_stream_factory_release(void *factory_ud);
gfl_lua_stream *gfl_lua_stream_push(lua_State *L, gfl_lua_stream *s);
int gfl_lua_stream_connecting(lua_State *L, gfl_lua_stream *s, gfl_future *f);
int gfl_lua_push_extra_info(lua_State *L, gfl_transport *t, const char *name);

/* TLS (tls.c): start_tls on a stream, and its outcome. */
int gfl_lua_stream_start_tls(lua_State *L, gfl_lua_stream *s);
int gfl_lua_stream_tls_result(lua_State *L, gfl_lua_stream *s);

#endif
