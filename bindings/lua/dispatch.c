/*
 * lib/lua/5.1/globeflower.so when both the Lua 5.1 and the LuaJIT builds
 * are installed: Lua 5.1 and LuaJIT search that same directory, so this
 * loader takes the place and opens the build of the interpreter it runs in
 * (installed in pkglibdir/lua5.1/ and pkglibdir/luajit/, i.e.
 * <this dir>/../../globeflower/<build>/globeflower.so, which holds under
 * DESTDIR and relocated trees too). LuaJIT is told apart by its API
 * (luaJIT_setmode is in every LuaJIT and in no PUC Lua).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

int luaopen_globeflower(lua_State *L);

int luaopen_globeflower(lua_State *L)
{
    const char *build = dlsym(RTLD_DEFAULT, "luaJIT_setmode") ? "luajit" : "lua5.1";
    Dl_info self;
    if (!dladdr((void *)luaopen_globeflower, &self) || !self.dli_fname)
        return luaL_error(L, "globeflower: cannot find where the loader is installed");
    const char *slash = strrchr(self.dli_fname, '/');
    int dirlen = slash ? (int)(slash - self.dli_fname) : 1;
    const char *dir = slash ? self.dli_fname : ".";
    char path[4096];
    if (snprintf(path, sizeof path, "%.*s/../../globeflower/%s/globeflower.so", dirlen, dir, build) >=
        (int)sizeof path)
        return luaL_error(L, "globeflower: the installation path is too long");
    /* Kept open for the life of the process, as the module pins itself. */
    void *module = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!module)
        return luaL_error(L, "globeflower: cannot load the %s build: %s", build, dlerror());
    lua_CFunction open = (lua_CFunction)(void (*)(void))dlsym(module, "luaopen_globeflower");
    if (!open)
        return luaL_error(L, "globeflower: %s has no luaopen_globeflower", path);
    return open(L);
}
