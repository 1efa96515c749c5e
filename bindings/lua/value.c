/*
 * Lua values <-> gfl values, and Lua error objects <-> error values.
 *
 * Scalars cross as scalars so other hosts (Python) can read them; anything
 * else (tables, functions, several values) travels as a "lua" host object:
 * a packed {n = k, ...} table in the registry that only this binding
 * unwraps. Error values carry type, message and traceback; the original
 * Lua error object (a string, a table...) is remembered in the errmap so an
 * awaiting Lua coroutine gets back exactly what was raised.
 */
#include "gfl_lua.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct lua_object {
    gfl_lua_rt *rt;
    int ref;
    int refs; /* atomic: values holding it */
    pthread_t thread;
};

static void object_ref(void *p)
{
    struct lua_object *o = p;
    __atomic_add_fetch(&o->refs, 1, __ATOMIC_RELAXED);
}

static void object_unref(void *p)
{
    struct lua_object *o = p;
    if (__atomic_sub_fetch(&o->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    gfl_lua_rt *rt = o->rt;
    if (rt->L && pthread_equal(pthread_self(), o->thread)) {
        luaL_unref(rt->L, LUA_REGISTRYINDEX, o->ref);
    } else if (rt->L) {
        /* Another thread: the registry is the loop thread's; defer. */
        struct gfl_lua_dead *d = malloc(sizeof *d);
        if (d) {
            d->ref = o->ref;
            d->next = __atomic_load_n(&rt->dead, __ATOMIC_ACQUIRE);
            while (!__atomic_compare_exchange_n(&rt->dead, &d->next, d, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                ;
        }
    }
    gfl_lua_rt_unref(rt);
    free(o);
}

const gfl_host_class gfl_lua_class = {
    sizeof(gfl_host_class), "lua", object_ref, object_unref,
};

gfl_value *gfl_lua_pack(lua_State *L, int first, int n)
{
    if (n == 0)
        return GFL->value_nil();
    if (n == 1) {
        switch (lua_type(L, first)) {
        case LUA_TNIL:
            return GFL->value_nil();
        case LUA_TBOOLEAN:
            return GFL->value_bool(lua_toboolean(L, first));
        case LUA_TNUMBER:
            if (gfl_isinteger(L, first) && LUA_VERSION_NUM >= 503)
                return GFL->value_int((int64_t)lua_tointeger(L, first));
            return GFL->value_double((double)lua_tonumber(L, first));
        case LUA_TSTRING: {
            size_t len;
            const char *s = lua_tolstring(L, first, &len);
            return GFL->value_string(s, len);
        }
        default:
            break;
        }
    }
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    struct lua_object *o = malloc(sizeof *o);
    if (!o)
        return NULL;
    lua_createtable(L, n, 1);
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, first + i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    o->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    o->rt = rt;
    o->refs = 0;
    o->thread = pthread_self();
    gfl_lua_rt_ref(rt);
    gfl_value *v = GFL->value_object(&gfl_lua_class, o);
    if (!v) {
        luaL_unref(L, LUA_REGISTRYINDEX, o->ref);
        gfl_lua_rt_unref(rt);
        free(o);
    }
    return v;
}

/* ---- opaque values of other hosts (and of the core) ---- */

#define VALUE_MT "globeflower.Value"

static int value_gc(lua_State *L)
{
    gfl_value **p = gfl_lua_checkself(L, 1, VALUE_MT);
    if (*p)
        GFL->value_unref(*p);
    *p = NULL;
    return 0;
}

static int value_class(lua_State *L)
{
    gfl_value **p = gfl_lua_checkself(L, 1, VALUE_MT);
    const gfl_host_class *cls = *p ? GFL->value_object_class(*p) : NULL;
    lua_pushstring(L, cls && cls->name ? cls->name : "?");
    return 1;
}

static int value_tostring(lua_State *L)
{
    gfl_value **p = gfl_lua_checkself(L, 1, VALUE_MT);
    const gfl_host_class *cls = *p ? GFL->value_object_class(*p) : NULL;
    lua_pushfstring(L, "globeflower.Value(%s): %p", cls && cls->name ? cls->name : "?", (void *)*p);
    return 1;
}

int gfl_lua_unpack(lua_State *L, gfl_value *v)
{
    switch (GFL->value_type_of(v)) {
    case GFL_VALUE_BOOL: {
        int b = 0;
        GFL->value_get_bool(v, &b);
        lua_pushboolean(L, b);
        return 1;
    }
    case GFL_VALUE_INT: {
        int64_t i = 0;
        GFL->value_get_int(v, &i);
        lua_pushinteger(L, (lua_Integer)i);
        return 1;
    }
    case GFL_VALUE_DOUBLE: {
        double d = 0;
        GFL->value_get_double(v, &d);
        lua_pushnumber(L, d);
        return 1;
    }
    case GFL_VALUE_BYTES:
    case GFL_VALUE_STRING: {
        const char *s;
        size_t len;
        GFL->value_get_bytes(v, &s, &len);
        lua_pushlstring(L, s, len);
        return 1;
    }
    case GFL_VALUE_ERROR:
        gfl_lua_push_error(L, v);
        return 1;
    case GFL_VALUE_OBJECT: {
        void *p;
        if (GFL->value_get_object(v, &gfl_lua_class, &p) == 0) {
            struct lua_object *o = p;
            lua_rawgeti(L, LUA_REGISTRYINDEX, o->ref);
            int t = lua_gettop(L);
            lua_getfield(L, t, "n");
            int n = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
            luaL_checkstack(L, n, "too many results");
            for (int i = 1; i <= n; i++)
                lua_rawgeti(L, t, i);
            lua_remove(L, t);
            return n;
        }
        gfl_value **u = gfl_newuserdata(L, sizeof *u);
        *u = GFL->value_ref(v);
        luaL_getmetatable(L, VALUE_MT);
        lua_setmetatable(L, -2);
        return 1;
    }
    default:
        lua_pushnil(L);
        return 1;
    }
}

/* ---- errors ---- */

void gfl_lua_push_error(lua_State *L, gfl_value *error)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_errmap);
    lua_pushlightuserdata(L, error);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    if (!lua_isnil(L, -1))
        return;
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_error_new);
    const char *type = GFL->value_error_type(error);
    const char *msg = GFL->value_error_message(error);
    const char *tb = GFL->value_error_traceback(error);
    lua_pushstring(L, type ? type : "Error");
    lua_pushstring(L, msg ? msg : "");
    lua_pushinteger(L, GFL->value_error_code(error));
    if (tb)
        lua_pushstring(L, tb);
    else
        lua_pushnil(L);
    lua_call(L, 4, 1);
}

gfl_value *gfl_lua_error_value(lua_State *L, int idx, const char *traceback)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_error_info);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 3); /* code, type, message */
    int code = (int)lua_tointeger(L, -3);
    const char *type = lua_tostring(L, -2);
    const char *message = lua_tostring(L, -1);
    gfl_value *e = GFL->value_error(code < 0 ? code : GFL_EUNKNOWN, type, message, traceback);
    lua_pop(L, 3);
    return e;
}

void gfl_lua_errmap_set(lua_State *L, gfl_value *error, int idx)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_errmap);
    lua_pushlightuserdata(L, error);
    lua_pushvalue(L, idx);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

void gfl_lua_errmap_clear(lua_State *L, gfl_value *error)
{
    gfl_lua_rt **p = gfl_lua_rt_slot(L);
    if (!p || !*p)
        return; /* closing: the errmap goes with the state */
    lua_rawgeti(L, LUA_REGISTRYINDEX, (*p)->ref_errmap);
    lua_pushlightuserdata(L, error);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static const luaL_Reg value_methods[] = {
    {"class", value_class},
    {NULL, NULL},
};

void gfl_lua_open_value(lua_State *L)
{
    gfl_lua_newclass(L, VALUE_MT, value_methods, value_gc);
    luaL_getmetatable(L, VALUE_MT);
    lua_pushcfunction(L, value_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
