/*
 * Plugins from Lua: gfl.plugin(name [, path]) (the object itself is built
 * by the prelude, lua/core.lua, on these internals).
 *
 * A handle userdata holds one plugin reference (gfl_plugin_load: a plugin
 * loads once per process, later loads add references) and drops it exactly
 * once, at its __gc. The functions of the plugin object keep the handle
 * alive, so a function taken out of the object still works.
 */
#include "gfl_lua.h"

#include <stdio.h>
#include <string.h>

#define HANDLE_MT "globeflower.plugin_handle"

struct handle {
    gfl_plugin *plugin; /* one reference; NULL once unloaded */
};

static int handle_gc(lua_State *L)
{
    struct handle *h = lua_touserdata(L, 1);
    if (h && h->plugin) {
        gfl_plugin *p = h->plugin;
        h->plugin = NULL; /* never twice, even if __gc ran again */
        GFL->plugin_unload(p);
    }
    return 0;
}

static struct handle *check_handle(lua_State *L)
{
    struct handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    if (!h->plugin)
        luaL_error(L, "the plugin is unloaded");
    return h;
}

static const char *check_string(lua_State *L, int idx, const char *what)
{
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    if (strlen(s) != len)
        luaL_error(L, "%s: it contains a NUL byte", what);
    return s;
}

/* internal: plugin_load(name [, path]) -> handle, {function = is_async} */
static int l_plugin_load(lua_State *L)
{
    const char *name = check_string(L, 1, "gfl.plugin: the name");
    const char *path = lua_isnoneornil(L, 2) ? NULL : check_string(L, 2, "gfl.plugin: the path");
    struct handle *h = gfl_newuserdata(L, sizeof *h);
    h->plugin = NULL;
    luaL_getmetatable(L, HANDLE_MT);
    lua_setmetatable(L, -2);
    h->plugin = GFL->plugin_load(name, path);
    if (!h->plugin) {
        const char *why = GFL->plugin_last_error();
        return gfl_lua_raise(L, "gfl.plugin: %s", why ? why : "the plugin did not load");
    }
    int n = GFL->plugin_function_count(h->plugin);
    lua_createtable(L, 0, n > 0 ? n : 0);
    for (int i = 0; i < n; i++) {
        const char *fname = GFL->plugin_function_name(h->plugin, i);
        if (!fname)
            continue;
        lua_pushboolean(L, GFL->plugin_function_is_async(h->plugin, fname) == 1);
        lua_setfield(L, -2, fname);
    }
    return 2;
}

/* "<plugin>.<function>" for messages */
static void describe(struct handle *h, const char *fname, char *out, size_t len)
{
    snprintf(out, len, "%s.%s", GFL->plugin_name(h->plugin), fname);
}

/* internal: plugin_call(handle, function, ...) -> the sync function's result */
static int l_plugin_call(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    struct handle *h = check_handle(L);
    const char *fname = luaL_checkstring(L, 2);
    char what[160];
    describe(h, fname, what, sizeof what);
    int n = lua_gettop(L) - 2;
    gfl_value **args = gfl_lua_check_args(L, 3, n, what);
    gfl_value *result = NULL;
    int rc = GFL->plugin_call(h->plugin, fname, rt->loop, args, (size_t)n, &result);
    gfl_lua_drop_args(L, -1);
    if (rc == 0) {
        char err[256];
        int ok = gfl_lua_push_value(L, result, err, sizeof err);
        GFL->value_unref(result);
        if (!ok)
            return gfl_lua_raise(L, "%s: its result: %s", what, err);
        return 1;
    }
    if (result && GFL->value_type_of(result) == GFL_VALUE_ERROR) {
        gfl_lua_push_error(L, result);
        GFL->value_unref(result);
        return lua_error(L);
    }
    if (result)
        GFL->value_unref(result);
    return gfl_lua_fail(L, what, rc);
}

/* internal: plugin_call_async(handle, function, ...) -> a future */
static int l_plugin_call_async(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    struct handle *h = check_handle(L);
    const char *fname = luaL_checkstring(L, 2);
    char what[160];
    describe(h, fname, what, sizeof what);
    int n = lua_gettop(L) - 2;
    gfl_value **args = gfl_lua_check_args(L, 3, n, what);
    gfl_future *f = GFL->plugin_call_async(h->plugin, fname, rt->loop, args, (size_t)n);
    gfl_lua_drop_args(L, -1);
    if (!f)
        return gfl_lua_raise(L, "%s: the call did not start (no future)", what);
    gfl_lua_future_push(L, rt, f);
    GFL->future_unref(f);
    return 1;
}

/* internal: plugin_name(handle) */
static int l_plugin_name(lua_State *L)
{
    lua_pushstring(L, GFL->plugin_name(check_handle(L)->plugin));
    return 1;
}

static const luaL_Reg functions[] = {
    {"plugin_load", l_plugin_load},
    {"plugin_call", l_plugin_call},
    {"plugin_call_async", l_plugin_call_async},
    {"plugin_name", l_plugin_name},
    {NULL, NULL},
};

void gfl_lua_open_plugin(lua_State *L, int internal)
{
    luaL_newmetatable(L, HANDLE_MT);
    lua_pushcfunction(L, handle_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    gfl_lua_register(L, internal, functions);
}
