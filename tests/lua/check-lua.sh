#!/bin/sh
# make check for the Lua binding: runs tests/lua/run.lua with every Lua the
# module was built for (GFL_LUA_TESTS: "dir:interpreter ..." from configure),
# then the embedding example in both teardown orders. Each run ends with a
# line "<lua>: N passed, N failed".
#
# GFL_LUA_VALGRIND=1 also reruns the tests of every PUC Lua (not LuaJIT,
# which valgrind does not follow well) under valgrind memcheck: invalid
# accesses and definite/indirect leaks fail (the state is closed at exit,
# so everything the module allocated must be freed). Logs go to
# tests/lua/valgrind-<lua>.log.
set -u
: "${abs_top_srcdir:?}" "${abs_top_builddir:?}"
. "$abs_top_srcdir/tests/host-env.sh"
status=0
for pair in ${GFL_LUA_TESTS:-}; do
    dir=${pair%%:*}
    interp=${pair#*:}
    cpath="$abs_top_builddir/bindings/lua/$dir/.libs/?.so"
    host_env_note "$interp"
    LUA_CPATH="$cpath" run_host "$interp" "$abs_top_srcdir/tests/lua/run.lua" || status=1
    if [ -n "${GFL_LUA_VALGRIND:-}" ] && [ "$dir" != luajit ]; then
        log="$abs_top_builddir/tests/lua/valgrind-$dir.log"
        if LUA_CPATH="$cpath" ${VALGRIND:-valgrind} --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
            --suppressions="$abs_top_srcdir/tests/valgrind.supp" \
            --suppressions="$abs_top_srcdir/tests/lua/valgrind.supp" --log-file="$log" \
            "$interp" "$abs_top_srcdir/tests/lua/run.lua" >/dev/null; then
            echo "valgrind $interp: 1 passed, 0 failed"
        else
            echo "valgrind $interp: 0 passed, 1 failed (see $log)"
            status=1
        fi
    fi
done
engine="$abs_top_builddir/examples/engine_lua/engine_lua"
if [ -n "${GFL_LUA_HOST_DIR:-}" ] && [ -x "$engine" ]; then
    cpath="$abs_top_builddir/bindings/lua/$GFL_LUA_HOST_DIR/.libs/?.so"
    for order in "" --free-loop-first; do
        if LUA_CPATH="$cpath" run_host "$engine" $order "$abs_top_srcdir/examples/engine_lua/script.lua"; then
            echo "engine_lua $order: 1 passed, 0 failed"
        else
            echo "engine_lua $order: 0 passed, 1 failed"
            status=1
        fi
    done
fi
# Two states on one loop (tests/lua/two_states.c), in every teardown
# order; under valgrind too with GFL_LUA_VALGRIND (PUC Lua hosts only).
two="$abs_top_builddir/tests/lua/two_states"
if [ -n "${GFL_LUA_HOST_DIR:-}" ] && [ -x "$two" ]; then
    cpath="$abs_top_builddir/bindings/lua/$GFL_LUA_HOST_DIR/.libs/?.so"
    for order in --close-a-first --close-b-first --free-loop-first; do
        if LUA_CPATH="$cpath" "$two" $order; then
            echo "two_states $order: 1 passed, 0 failed"
        else
            echo "two_states $order: 0 passed, 1 failed"
            status=1
        fi
        if [ -n "${GFL_LUA_VALGRIND:-}" ] && [ "$GFL_LUA_HOST_DIR" != luajit ]; then
            log="$abs_top_builddir/tests/lua/valgrind-two_states$order.log"
            if LUA_CPATH="$cpath" ${VALGRIND:-valgrind} --error-exitcode=99 --leak-check=full \
                --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
                --suppressions="$abs_top_srcdir/tests/valgrind.supp" \
                --suppressions="$abs_top_srcdir/tests/lua/valgrind.supp" --log-file="$log" \
                "$two" $order >/dev/null; then
                echo "valgrind two_states $order: 1 passed, 0 failed"
            else
                echo "valgrind two_states $order: 0 passed, 1 failed (see $log)"
                status=1
            fi
        fi
    done
fi
exit $status
