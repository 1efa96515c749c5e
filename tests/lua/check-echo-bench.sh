#!/bin/sh
# make check: the Lua echo servers of bench/lua (the globeflower styles)
# against a client that never reads (tests/lua/echo_no_reader.py): the
# server must stop reading when its writes back pile up (pause_writing /
# drain), not grow without bound; luv's style too, when installed. Runs
# with the first Lua of
# GFL_LUA_TESTS. Each style ends with "echo_server <style>: 1 passed, 0
# failed" (or 1 failed).
set -u
: "${abs_top_srcdir:?}" "${abs_top_builddir:?}"
. "$abs_top_srcdir/tests/host-env.sh"
py=${PYTHON:-/usr/bin/python3}
pair=$(echo ${GFL_LUA_TESTS:-} | cut -d' ' -f1)
if [ -z "$pair" ] || ! [ -x "$py" ]; then
    echo "SKIP: no Lua build or no $py"
    exit 77
fi
dir=${pair%%:*}
interp=${pair#*:}
export LUA_CPATH="$abs_top_builddir/bindings/lua/$dir/.libs/?.so;;"
host_env_note "$interp"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
styles="gfl-proto gfl-coro"
# libuv's style too when luv is installed (benchmark code must be correct).
"$interp" -e 'require "luv"' 2>/dev/null && styles="$styles luv"
for style in $styles; do
    run_host "$interp" "$abs_top_srcdir/bench/lua/echo_server.lua" "$style" 0 >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's/^READY //p' "$tmp/out")
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -n "$port" ] && "$py" "$abs_top_srcdir/tests/lua/echo_no_reader.py" "$pid" "$port"; then
        echo "echo_server $style: 1 passed, 0 failed"
    else
        [ -n "$port" ] || { echo "echo_server $style did not start:"; cat "$tmp/err"; }
        echo "echo_server $style: 0 passed, 1 failed"
        status=1
    fi
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
done
exit $status
