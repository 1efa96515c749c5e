-- The Lua module of globeflower for luarocks: `luarocks make` in the source
-- tree builds bindings/lua against an installed libglobeflower, found with
-- pkg-config (PKG_CONFIG_PATH for a non-standard prefix). Lua 5.1 to 5.4
-- and LuaJIT.
rockspec_format = "3.0"
package = "globeflower"
version = "scm-1"
source = {
    url = "git+file:///dev/null/globeflower.git", -- `luarocks make` builds the tree it runs in
}
description = {
    summary = "asyncio-style coroutines, streams, TLS, UDP and subprocesses on the globeflower event loop",
    detailed = [[
One event loop shared by C, Lua and Python (libglobeflower). This rock is
the Lua module; the library itself comes from the system or from
`./configure && make install` of the same source tree.
]],
    license = "see the source tree",
}
dependencies = {
    "lua >= 5.1, < 5.5",
}
build = {
    type = "make",
    makefile = "bindings/lua/rock.mk",
    build_variables = {
        CFLAGS = "$(CFLAGS)",
        LIBFLAG = "$(LIBFLAG)",
        LUA_INCDIR = "$(LUA_INCDIR)",
        LUA = "$(LUA)",
    },
    install_variables = {
        INST_LIBDIR = "$(LIBDIR)",
    },
}
