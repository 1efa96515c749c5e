#!/bin/sh
# make check for examples/engine: the 60 Hz C host with Lua and Python on
# one loop and the example plugin, shortened to 3 s, in each teardown order;
# then (long tests, not sanitized builds) once under valgrind memcheck,
# where the frame rate is not checked but every exchange still is, and
# invalid accesses fail. Each run ends with "engine ...: N passed, N failed".
set -u
: "${abs_top_srcdir:?}" "${abs_top_builddir:?}" "${GFL_LUA_HOST_DIR:?}" "${GFL_PYTHONPATH:?}"
. "$abs_top_srcdir/tests/host-env.sh"
engine="$abs_top_builddir/examples/engine/engine"
game="$abs_top_srcdir/examples/engine"
LUA_CPATH="$abs_top_builddir/bindings/lua/$GFL_LUA_HOST_DIR/.libs/?.so"
export LUA_CPATH
status=0
run() { # name, then the engine's arguments
    name=$1
    shift
    if "$@" --lua "$game/game.lua" --python-path "$GFL_PYTHONPATH:$game"; then
        echo "engine $name: 1 passed, 0 failed"
    else
        echo "engine $name: 0 passed, 1 failed"
        status=1
    fi
}
# The full 10 s at 60 Hz once (what the example promises), then the other
# teardown orders shortened. The loop's budget is 10 ms of each 16.7 ms
# frame (the work itself takes about 1 ms): on a loaded CI machine the OS
# may deschedule the engine in the middle of a frame, and a 4 ms budget
# would then end a frame before the round trip in it does.
run "10s python-lua-loop" run_host "$engine" --seconds 10 --budget 10 --teardown python-lua-loop
for order in lua-python-loop loop-first; do
    run "$order" run_host "$engine" --seconds 3 --budget 10 --teardown "$order"
done
if [ "${GFL_LONG_TESTS:-1}" = 1 ] && [ -z "${GFL_NO_VALGRIND:-}" ] && command -v "${VALGRIND:-valgrind}" >/dev/null 2>&1; then
    for order in python-lua-loop loop-first; do
        log="$abs_top_builddir/tests/engine-valgrind-$order.log"
        # PYTHONMALLOC=malloc: let memcheck see Python's allocations. Invalid
        # accesses and definite/indirect leaks fail; the suppressions cover
        # third-party noise only (CPython's int.from_bytes, Lua).
        PYTHONMALLOC=malloc run "valgrind $order" ${VALGRIND:-valgrind} --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \
            --suppressions="$abs_top_srcdir/tests/valgrind.supp" \
            --suppressions="$abs_top_srcdir/tests/python/valgrind.supp" \
            --suppressions="$abs_top_srcdir/tests/lua/valgrind.supp" --log-file="$log" \
            "$engine" --seconds 3 --fps 10 --budget 1000 --no-timing --teardown "$order"
    done
fi
exit $status
