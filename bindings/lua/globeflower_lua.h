/*
 * Embedding the globeflower Lua module in a C host.
 *
 * A host that owns a loop hands it (and the gfl_api table of the core it
 * uses) to a lua_State BEFORE the script runs `require "globeflower"`:
 *
 *     lua_State *L = luaL_newstate();
 *     luaL_openlibs(L);
 *     gfl_lua_set_loop(L, loop, gfl_api_get());
 *     ... luaL_dofile(L, "script.lua") ...   -- require "globeflower" inside
 *     for (;;) { gfl_loop_run_once(loop, 0); render_frame(); }
 *
 * The module then runs every coroutine and callback on the host's loop (it
 * takes a loop reference of its own, so the host may free the loop before
 * or after closing the state, in either order). Header-only: the module is
 * loaded with require, the host does not link against it.
 */
#ifndef GLOBEFLOWER_LUA_H
#define GLOBEFLOWER_LUA_H

#include <lua.h>

#include <globeflower.h>

/* Registry fields the module reads when it is required (light userdata). */
#define GFL_LUA_LOOP_KEY "globeflower.loop"
#define GFL_LUA_API_KEY "globeflower.api"

/* Hands `loop` and `api` (NULL: the module's own linked core) to L. Call
 * before the first require "globeflower" in L; later calls have no effect
 * on an already loaded module. */
static inline void gfl_lua_set_loop(lua_State *L, gfl_loop *loop, const gfl_api *api)
{
    lua_pushlightuserdata(L, (void *)loop);
    lua_setfield(L, LUA_REGISTRYINDEX, GFL_LUA_LOOP_KEY);
    if (api) {
        lua_pushlightuserdata(L, (void *)api);
        lua_setfield(L, LUA_REGISTRYINDEX, GFL_LUA_API_KEY);
    }
}

#endif
