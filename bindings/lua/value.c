/*
 * Lua's own values in gfl values: the "lua" host class, foreign-object
 * proxies, and the packing of futures only Lua reads.
 *
 * A "lua" object is a registry reference to one Lua value (a table with a
 * metatable, a function, a coroutine, a userdata, an error object...), so
 * it comes home as the very same value. Another host's object (or a "lua"
 * object of another lua_State) arrives as a proxy userdata holding the very
 * gfl_value, so sending the proxy on sends that value (identity across any
 * number of hops). Data conversions (tables <-> arrays and maps) are in
 * convert.c; errors in error.c.
 */
#include "gfl_lua.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct lua_object {
    gfl_lua_rt *rt;   /* one reference */
    int ref;          /* the value, or for n > 1 a {n = k, ...} table */
    int n;            /* values held: 1, or a pack of several results */
    int refs;         /* atomic: values holding it */
    pthread_t thread; /* the state's thread: where the registry may be used */
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

/* The value on the top of L's stack (popped) as a "lua" object of n values. */
static gfl_value *object_from_top(lua_State *L, int n)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    struct lua_object *o = malloc(sizeof *o);
    if (!o) {
        lua_pop(L, 1);
        return NULL;
    }
    o->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    o->rt = rt;
    o->n = n;
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

gfl_value *gfl_lua_object_value(lua_State *L, int idx)
{
    lua_pushvalue(L, idx);
    return object_from_top(L, 1);
}

/* The lua_object of `v` when it is one of this state's, else NULL. */
static struct lua_object *own_object(lua_State *L, gfl_value *v)
{
    void *p;
    if (GFL->value_get_object(v, &gfl_lua_class, &p) != 0)
        return NULL;
    struct lua_object *o = p;
    gfl_lua_rt **slot = gfl_lua_rt_slot(L);
    return slot && *slot == o->rt ? o : NULL;
}

int gfl_lua_push_own_object(lua_State *L, gfl_value *v)
{
    struct lua_object *o = own_object(L, v);
    if (!o || o->n != 1)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, o->ref);
    return 1;
}

/* Scalars as convert.c makes them (a number or string at `idx`). */
static gfl_value *scalar_value(lua_State *L, int idx)
{
    char err[64];
    return gfl_lua_to_value(L, idx, err, sizeof err);
}

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
        case LUA_TSTRING:
            return scalar_value(L, first);
        default:
            return gfl_lua_object_value(L, first);
        }
    }
    lua_createtable(L, n, 1);
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, first + i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    return object_from_top(L, n);
}

int gfl_lua_unpack(lua_State *L, gfl_value *v)
{
    struct lua_object *o = GFL->value_type_of(v) == GFL_VALUE_OBJECT ? own_object(L, v) : NULL;
    if (!o) {
        gfl_lua_push_value_or_raise(L, v, "value");
        return 1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, o->ref);
    if (o->n == 1)
        return 1;
    int t = lua_gettop(L);
    luaL_checkstack(L, o->n, "too many results");
    for (int i = 1; i <= o->n; i++)
        lua_rawgeti(L, t, i);
    lua_remove(L, t);
    return o->n;
}

/* ---- proxies and holders ---- */

#define FOREIGN_MT "globeflower.foreign"
#define HOLDER_MT "globeflower.holder"

static int holder_gc(lua_State *L)
{
    gfl_value **p = lua_touserdata(L, 1);
    if (p && *p)
        GFL->value_unref(*p);
    if (p)
        *p = NULL;
    return 0;
}

void gfl_lua_push_holder(lua_State *L, gfl_value *v)
{
    gfl_value **p = gfl_newuserdata(L, sizeof *p);
    *p = NULL;
    luaL_getmetatable(L, HOLDER_MT);
    lua_setmetatable(L, -2);
    *p = GFL->value_ref(v);
}

static const char *class_name(gfl_value *v)
{
    const gfl_host_class *cls = v ? GFL->value_object_class(v) : NULL;
    return cls && cls->name ? cls->name : "?";
}

void gfl_lua_push_foreign(lua_State *L, gfl_value *v)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_foreign);
    lua_pushlightuserdata(L, v);
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1)) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);
    gfl_value **p = gfl_newuserdata(L, sizeof *p);
    *p = NULL;
    luaL_getmetatable(L, FOREIGN_MT);
    lua_setmetatable(L, -2);
    *p = GFL->value_ref(v);
    /* One proxy per value while it lives: the value cannot be freed (and
     * its address reused) before the proxy, which holds it. */
    lua_pushlightuserdata(L, v);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    lua_remove(L, -2);
}

gfl_value *gfl_lua_to_foreign(lua_State *L, int idx)
{
    gfl_value **p = gfl_testudata(L, idx, FOREIGN_MT);
    return p ? *p : NULL;
}

static int foreign_class(lua_State *L)
{
    gfl_value **p = gfl_lua_checkself(L, 1, FOREIGN_MT);
    lua_pushstring(L, class_name(*p));
    return 1;
}

static int foreign_tostring(lua_State *L)
{
    gfl_value **p = gfl_lua_checkself(L, 1, FOREIGN_MT);
    lua_pushfstring(L, "globeflower.foreign: %s object", class_name(*p));
    return 1;
}

static const luaL_Reg foreign_methods[] = {
    {"class", foreign_class},
    {NULL, NULL},
};

/* gfl.is_foreign(x) -> the class name ("python") of a proxy, else false */
static int l_is_foreign(lua_State *L)
{
    gfl_value *v = gfl_lua_to_foreign(L, 1);
    if (v)
        lua_pushstring(L, class_name(v));
    else
        lua_pushboolean(L, 0);
    return 1;
}

void gfl_lua_open_value(lua_State *L, int internal)
{
    gfl_lua_newclass(L, FOREIGN_MT, foreign_methods, holder_gc);
    luaL_getmetatable(L, FOREIGN_MT);
    lua_pushcfunction(L, foreign_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, HOLDER_MT);
    lua_pushcfunction(L, holder_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_is_foreign);
    lua_setfield(L, internal, "is_foreign");
}
