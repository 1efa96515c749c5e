#!/bin/sh
# The Python binding's own tests, the many-hosts tests (test_hosts: values,
# exports, plugins; the example plugin from $GFL_PLUGIN_PATH) and the
# real-library tests (aiohttp, websockets) on the package built in the tree
# ($GFL_PYTHONPATH, set by make check). -X dev: asyncio debug mode and
# warnings as on a developer's box.
# Then tests/python/embed_host (a C host embedding Python on its own loop)
# in both teardown orders, and again under valgrind (memcheck; skipped when
# GFL_LONG_TESTS=0 or valgrind is missing; logs in
# tests/python/valgrind-embed-*.log).
set -u
srcdir=${abs_top_srcdir:-.}
builddir=${abs_top_builddir:-.}
. "$srcdir/tests/host-env.sh"
PYTHON=${PYTHON:-/usr/bin/python3}
PYTHONPATH=${GFL_PYTHONPATH:-}${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH
GFL_PLUGIN_PATH=${GFL_PLUGIN_PATH:-${abs_top_builddir:-.}/plugins/.libs}
export GFL_PLUGIN_PATH
status=0
host_env_note "$PYTHON"
for t in test_globeflower test_hosts test_libraries; do
    echo "== $t (debug mode)"
    run_host "$PYTHON" -X dev "$srcdir/tests/python/$t.py" -v 2>&1 || status=1
    echo "== $t"
    run_host "$PYTHON" "$srcdir/tests/python/$t.py" 2>&1 || status=1
done

host="$builddir/tests/python/embed_host"
if test -x "$host"; then
    for order in finalize-first free-first; do
        echo "== embed_host $order"
        run_host "$host" $order 2>&1 || status=1
    done
    valgrind=${VALGRIND:-valgrind}
    if test "${GFL_LONG_TESTS:-1}" != 0 && test -z "${GFL_NO_VALGRIND:-}" &&
        command -v "$valgrind" >/dev/null 2>&1; then
        for order in finalize-first free-first; do
            echo "== embed_host $order (valgrind)"
            log="$builddir/tests/python/valgrind-embed-$order.log"
            # PYTHONMALLOC=malloc: valgrind sees CPython's allocations.
            if PYTHONMALLOC=malloc "$valgrind" --error-exitcode=99 --leak-check=full \
                --errors-for-leak-kinds=definite,indirect --gen-suppressions=all \
                --suppressions="$srcdir/tests/valgrind.supp" \
                --suppressions="$srcdir/tests/python/valgrind.supp" \
                --log-file="$log" "$host" $order 2>&1; then
                echo "valgrind embed_host $order: clean"
            else
                echo "valgrind embed_host $order: FAILED (see $log)"
                status=1
            fi
        done
    fi
else
    echo "== embed_host: not built ($host)"
    status=1
fi
exit $status
