#!/bin/sh
# The rockspec (globeflower-scm-1.rockspec): `luarocks make` builds the
# module against the libglobeflower installed under DEST (a DESTDIR
# install, found with pkg-config through PKG_CONFIG_PATH and
# PKG_CONFIG_SYSROOT_DIR) into a temporary tree, offline (no server is
# asked: --only-server points at an empty local directory), for every Lua
# the build was configured with; then that Lua loads the rock's module from
# the tree. Prints "luarocks make (<lua>): N passed, N failed" per Lua.
#   check-rockspec.sh DEST TMPDIR
set -u
: "${abs_top_srcdir:?}" "${GFL_LIBDIR:?}" "${GFL_LUAROCKS:?}" "${GFL_VERSION:?}"
dest=$1
tmp=$2
status=0
# luarocks make builds in the directory of the sources: a copy (srcdir may
# be read-only, as in distcheck).
src="$tmp/rock-src"
mkdir -p "$src/bindings" "$tmp/no-server"
cp "$abs_top_srcdir/globeflower-scm-1.rockspec" "$src/"
cp -R "$abs_top_srcdir/bindings/lua" "$src/bindings/"
chmod -R u+w "$src"
rm -f "$src/bindings/lua/prelude.h"
for pair in ${GFL_LUA_TESTS:-}; do
    dir=${pair%%:*}
    interp=${pair#*:}
    case $dir in
    luajit) continue ;; # Debian's luarocks builds for PUC Lua (5.1 covers LuaJIT's API)
    esac
    what="luarocks make (lua$dir)"
    tree="$tmp/tree-$dir"
    rm -rf "$src/rock-build" "$src/globeflower.so"
    if (cd "$src" && PKG_CONFIG_PATH="$dest$GFL_LIBDIR/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest" \
        "$GFL_LUAROCKS" --lua-version="$dir" --tree="$tree" --only-server="$tmp/no-server" \
        make globeflower-scm-1.rockspec >"$tmp/rock-$dir.log" 2>&1); then
        got=$(LUA_CPATH="$tree/lib/lua/$dir/?.so" LD_LIBRARY_PATH="$dest$GFL_LIBDIR" "$interp" -e '
            local gfl = require "globeflower"
            io.write(gfl.LUA_BUILD, " ", gfl.version, " ", gfl.run(function() return gfl.sleep(0, "ran") end))' 2>&1)
        if [ "$got" = "$dir $GFL_VERSION ran" ]; then
            echo "$what: 1 passed, 0 failed"
        else
            echo "$what: 0 passed, 1 failed (the rock's module: '$got')"
            status=1
        fi
    else
        cat "$tmp/rock-$dir.log"
        echo "$what: 0 passed, 1 failed (log above)"
        status=1
    fi
done
exit $status
