/*
 * One source for Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT 2.1: the few C API
 * differences the binding meets, behind one spelling (the 5.4 one where
 * possible). Nothing here changes behaviour, only names and signatures.
 */
#ifndef GFL_LUA_COMPAT_H
#define GFL_LUA_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#if LUA_VERSION_NUM < 502
/* 5.1 and LuaJIT */
#define gfl_rawlen(L, i) lua_objlen((L), (i))
#define gfl_pushglobaltable(L) lua_pushvalue((L), LUA_GLOBALSINDEX)
void gfl_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
void *gfl_testudata(lua_State *L, int ud, const char *tname);
#else
#define gfl_rawlen(L, i) lua_rawlen((L), (i))
#define gfl_pushglobaltable(L) lua_pushglobaltable(L)
#define gfl_setfuncs(L, l, n) luaL_setfuncs((L), (l), (n))
#define gfl_testudata(L, i, t) luaL_testudata((L), (i), (t))
#endif

#if LUA_VERSION_NUM >= 504
#define gfl_newuserdata(L, size) lua_newuserdatauv((L), (size), 0)
#else
#define gfl_newuserdata(L, size) lua_newuserdata((L), (size))
#endif

/* lua_resume: returns the status; *nres is the number of values the
 * coroutine yielded or returned (they are the top *nres values of co). */
static inline int gfl_resume(lua_State *co, lua_State *from, int narg, int *nres)
{
#if LUA_VERSION_NUM >= 504
    return lua_resume(co, from, narg, nres);
#elif LUA_VERSION_NUM >= 502
    int status = lua_resume(co, from, narg);
    *nres = lua_gettop(co);
    return status;
#else
    (void)from;
    int status = lua_resume(co, narg);
    *nres = lua_gettop(co);
    return status;
#endif
}

/* lua_Integer-aware number check (5.3+ distinguishes integers). */
static inline int gfl_isinteger(lua_State *L, int i)
{
#if LUA_VERSION_NUM >= 503
    return lua_isinteger(L, i);
#else
    if (lua_type(L, i) != LUA_TNUMBER)
        return 0;
    lua_Number n = lua_tonumber(L, i);
    return n == (lua_Number)(lua_Integer)n;
#endif
}

/* A new library table with `l` in it. */
#define gfl_newlib(L, l) (lua_newtable(L), gfl_setfuncs((L), (l), 0))

#endif
