/*
 * DNS (getaddrinfo / getnameinfo in the loop's thread pool) and socket
 * addresses as Lua values: "host", port for IP, the path for Unix sockets.
 */
#include "gfl_lua.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

int gfl_lua_push_sockaddr(lua_State *L, const void *addr, size_t len)
{
    const struct sockaddr *sa = addr;
    if (len >= sizeof(sa_family_t) && sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = addr;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t n = len > off ? len - off : 0;
        if (n > 0 && un->sun_path[0] != '\0')
            n = strnlen(un->sun_path, n);
        lua_pushlstring(L, un->sun_path, n);
        return 1;
    }
    /* The common cases without getnameinfo (datagrams arrive by the
     * thousand); scoped IPv6 addresses take the general path. */
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (len >= sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = addr;
        if (!inet_ntop(AF_INET, &in->sin_addr, host, sizeof host))
            return 0;
        lua_pushstring(L, host);
        lua_pushinteger(L, (lua_Integer)ntohs(in->sin_port));
        return 2;
    }
    if (len >= sizeof(struct sockaddr_in6) && sa->sa_family == AF_INET6 &&
        ((const struct sockaddr_in6 *)addr)->sin6_scope_id == 0) {
        const struct sockaddr_in6 *in6 = addr;
        if (!inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host))
            return 0;
        lua_pushstring(L, host);
        lua_pushinteger(L, (lua_Integer)ntohs(in6->sin6_port));
        return 2;
    }
    if (getnameinfo(sa, (socklen_t)len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return 0;
    lua_pushstring(L, host);
    lua_pushinteger(L, (lua_Integer)atoi(serv));
    return 2;
}

int gfl_lua_to_sockaddr(lua_State *L, int idx, int family, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    size_t hlen;
    const char *host = luaL_checklstring(L, idx, &hlen);
    if (family == AF_UNIX || (lua_isnoneornil(L, idx + 1) && family != AF_INET && family != AF_INET6)) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        if (hlen == 0 || hlen > sizeof un->sun_path)
            return luaL_argerror(L, idx, "bad Unix socket path");
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, host, hlen);
        /* Abstract names ("\0name") count exactly; paths get their NUL. */
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + hlen + (host[0] != '\0' && hlen < sizeof un->sun_path));
        return 0;
    }
    lua_Integer port = luaL_checkinteger(L, idx + 1);
    luaL_argcheck(L, port >= 0 && port <= 65535, idx + 1, "port out of range");
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof *in;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 0;
    }
    /* Scoped IPv6 ("fe80::1%eth0"): still numeric, never a lookup. */
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_flags = AI_NUMERICHOST;
    hints.ai_socktype = SOCK_DGRAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res || res->ai_addrlen > sizeof *ss) {
        if (res)
            freeaddrinfo(res);
        return luaL_argerror(L, idx, "a numeric IP address expected (resolve names with gfl.getaddrinfo)");
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET6)
        in6->sin6_port = htons((uint16_t)port);
    else
        in->sin_port = htons((uint16_t)port);
    return 0;
}

/* internal: getaddrinfo(host, port, family, socktype, protocol, flags) -> future */
static int l_getaddrinfo(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    const char *host = luaL_optstring(L, 1, NULL);
    const char *port = NULL;
    if (!lua_isnoneornil(L, 2)) {
        lua_pushvalue(L, 2);
        port = lua_tostring(L, -1);
        lua_replace(L, 2);
    }
    gfl_future *f = GFL->getaddrinfo(rt->loop, host, port, (int)luaL_optinteger(L, 3, 0),
                                     (int)luaL_optinteger(L, 4, 0), (int)luaL_optinteger(L, 5, 0),
                                     (int)luaL_optinteger(L, 6, 0));
    if (!f)
        return luaL_error(L, "getaddrinfo: bad arguments or the loop is closed");
    gfl_lua_future_push(L, rt, f);
    GFL->future_unref(f);
    return 1;
}

/* nil, "gaierror: <resolver's text>", code. The core's message carries the
 * resolver's own number ("[Errno -8] Servname not supported ..."), which
 * is not the code returned (-2, an errno-style code like every other
 * failure's): that number is left out so the two never disagree. */
static int push_dns_failure(lua_State *L, gfl_value *v)
{
    int n = gfl_lua_push_failure_value(L, v);
    const char *msg = lua_tostring(L, -2);
    const char *open = msg ? strstr(msg, "[Errno ") : NULL;
    const char *close = open ? strstr(open, "] ") : NULL;
    if (close) {
        char *end;
        long num = strtol(open + 7, &end, 10);
        if (end == close && num != lua_tointeger(L, -1)) {
            lua_pushlstring(L, msg, (size_t)(open - msg));
            lua_pushstring(L, close + 2);
            lua_concat(L, 2);
            lua_replace(L, -3);
        }
    }
    return n;
}

/* internal: addrinfo_result(future) -> list, or nil, msg, code */
static int l_addrinfo_result(lua_State *L)
{
    gfl_future *f = gfl_lua_to_future(L, 1);
    if (!f)
        return luaL_argerror(L, 1, "future expected");
    gfl_value *v = GFL->future_value(f);
    void *obj;
    if (GFL->future_state_of(f) != GFL_FUTURE_RESULT || GFL->value_get_object(v, GFL->addrinfo_class(), &obj) < 0)
        return push_dns_failure(L, v);
    const gfl_addrinfo *ai = obj;
    int n = GFL->addrinfo_count(ai);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        const void *addr = GFL->addrinfo_addr(ai, i, &len);
        lua_createtable(L, 0, 6);
        lua_pushinteger(L, GFL->addrinfo_family(ai, i));
        lua_setfield(L, -2, "family");
        lua_pushinteger(L, GFL->addrinfo_socktype(ai, i));
        lua_setfield(L, -2, "socktype");
        lua_pushinteger(L, GFL->addrinfo_protocol(ai, i));
        lua_setfield(L, -2, "protocol");
        int k = addr ? gfl_lua_push_sockaddr(L, addr, len) : 0;
        if (k == 2)
            lua_setfield(L, -3, "port");
        if (k >= 1)
            lua_setfield(L, -2, "addr");
        if (i == 0 && GFL->addrinfo_canonname(ai)) {
            lua_pushstring(L, GFL->addrinfo_canonname(ai));
            lua_setfield(L, -2, "canonname");
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* internal: getnameinfo(host, port, flags) -> future */
static int l_getnameinfo(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    char serv[16];
    snprintf(serv, sizeof serv, "%d", (int)port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, serv, &hints, &res) != 0 || !res)
        return luaL_argerror(L, 1, "a numeric address expected");
    gfl_future *f = GFL->getnameinfo(rt->loop, res->ai_addr, res->ai_addrlen, (int)luaL_optinteger(L, 3, 0));
    freeaddrinfo(res);
    if (!f)
        return luaL_error(L, "getnameinfo: the loop is closed");
    gfl_lua_future_push(L, rt, f);
    GFL->future_unref(f);
    return 1;
}

/* internal: nameinfo_result(future) -> host, service or nil, msg, code */
static int l_nameinfo_result(lua_State *L)
{
    gfl_future *f = gfl_lua_to_future(L, 1);
    if (!f)
        return luaL_argerror(L, 1, "future expected");
    gfl_value *v = GFL->future_value(f);
    void *obj;
    if (GFL->future_state_of(f) != GFL_FUTURE_RESULT || GFL->value_get_object(v, GFL->nameinfo_class(), &obj) < 0)
        return push_dns_failure(L, v);
    lua_pushstring(L, GFL->nameinfo_host(obj));
    lua_pushstring(L, GFL->nameinfo_service(obj));
    return 2;
}

static const luaL_Reg functions[] = {
    {"getaddrinfo", l_getaddrinfo},
    {"addrinfo_result", l_addrinfo_result},
    {"getnameinfo", l_getnameinfo},
    {"nameinfo_result", l_nameinfo_result},
    {NULL, NULL},
};

void gfl_lua_open_dns(lua_State *L, int internal)
{
    gfl_lua_register(L, internal, functions);
    lua_newtable(L);
    lua_pushinteger(L, AF_UNSPEC);
    lua_setfield(L, -2, "AF_UNSPEC");
    lua_pushinteger(L, AF_INET);
    lua_setfield(L, -2, "AF_INET");
    lua_pushinteger(L, AF_INET6);
    lua_setfield(L, -2, "AF_INET6");
    lua_pushinteger(L, AF_UNIX);
    lua_setfield(L, -2, "AF_UNIX");
    lua_pushinteger(L, SOCK_STREAM);
    lua_setfield(L, -2, "SOCK_STREAM");
    lua_pushinteger(L, SOCK_DGRAM);
    lua_setfield(L, -2, "SOCK_DGRAM");
    lua_pushinteger(L, AI_PASSIVE);
    lua_setfield(L, -2, "AI_PASSIVE");
    lua_pushinteger(L, AI_CANONNAME);
    lua_setfield(L, -2, "AI_CANONNAME");
    lua_pushinteger(L, NI_NUMERICHOST);
    lua_setfield(L, -2, "NI_NUMERICHOST");
    lua_pushinteger(L, NI_NUMERICSERV);
    lua_setfield(L, -2, "NI_NUMERICSERV");
    lua_setfield(L, internal, "constants");
}
