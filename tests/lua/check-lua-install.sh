#!/bin/sh
# make check for the Lua binding's installation: `make install` into a
# temporary DESTDIR, then
#  - no libtool .la file in a Lua module directory;
#  - every Lua built loads the installed module from its own C-module
#    directory (lib/lua/5.x; LuaJIT: lib/lua/5.1, where it looks) and gets
#    the build made for it (gfl.LUA_BUILD) and the release (gfl.version);
#  - the rockspec: `luarocks make` against that installed libglobeflower
#    (found with pkg-config) into a temporary tree, offline, for each PUC
#    Lua luarocks knows (tests/lua/check-rockspec.sh).
# Each step prints "<what>: N passed, N failed".
set -u
# A sanitizer build instruments the modules but not the interpreters that
# load the installed copies here; packaging is checked in the normal build.
if [ -n "${GFL_ASAN_RUNTIME:-}" ]; then
    echo "sanitizer build: the install checks load installed modules into uninstrumented interpreters (skipped, not failed)"
    exit 77
fi
: "${abs_top_srcdir:?}" "${abs_top_builddir:?}" "${GFL_LIBDIR:?}" "${GFL_VERSION:?}"
MAKE=${MAKE:-make}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gfl-lua-install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
dest="$tmp/dest"
status=0
pass() { echo "$1: 1 passed, 0 failed"; }
fail() { echo "$1: 0 passed, 1 failed${2:+ ($2)}"; status=1; }

if ! (cd "$abs_top_builddir" && $MAKE install DESTDIR="$dest" >"$tmp/install.log" 2>&1); then
    cat "$tmp/install.log"
    fail "make install DESTDIR" "see above"
    exit 1
fi
pass "make install DESTDIR"

libdir="$dest$GFL_LIBDIR"
stray=$(find "$libdir/lua" "$libdir/globeflower/lua5.1" "$libdir/globeflower/luajit" -name '*.la' 2>/dev/null)
if [ -z "$stray" ]; then
    pass "no .la in Lua module directories"
else
    fail "no .la in Lua module directories" "found: $stray"
fi

for pair in ${GFL_LUA_TESTS:-}; do
    dir=${pair%%:*}
    interp=${pair#*:}
    moddir=$dir
    [ "$dir" = luajit ] && moddir=5.1
    got=$(LUA_CPATH="$libdir/lua/$moddir/?.so" LD_LIBRARY_PATH="$libdir" "$interp" -e '
        local gfl = require "globeflower"
        io.write(gfl.LUA_BUILD, " ", gfl.version, " ", gfl.run(function() return gfl.sleep(0, "ran") end))' 2>&1)
    want="$dir $GFL_VERSION ran"
    if [ "$got" = "$want" ]; then
        pass "installed module in $interp"
    else
        fail "installed module in $interp" "got '$got', want '$want'"
    fi
done

if [ -n "${GFL_LUAROCKS:-}" ]; then
    "$abs_top_srcdir/tests/lua/check-rockspec.sh" "$dest" "$tmp" || status=1
fi
exit $status
