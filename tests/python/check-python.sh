#!/bin/sh
# The Python binding's own tests, the many-hosts tests (test_hosts: values,
# exports, plugins; the example plugin from $GFL_PLUGIN_PATH) and the
# real-library tests (aiohttp, websockets) on the package built in the tree
# ($GFL_PYTHONPATH, set by make check). -X dev: asyncio debug mode and
# warnings as on a developer's box.
set -u
srcdir=${abs_top_srcdir:-.}
PYTHON=${PYTHON:-/usr/bin/python3}
PYTHONPATH=${GFL_PYTHONPATH:-}${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH
GFL_PLUGIN_PATH=${GFL_PLUGIN_PATH:-${abs_top_builddir:-.}/plugins/.libs}
export GFL_PLUGIN_PATH
status=0
for t in test_globeflower test_hosts test_libraries; do
    echo "== $t (debug mode)"
    "$PYTHON" -X dev "$srcdir/tests/python/$t.py" -v 2>&1 || status=1
    echo "== $t"
    "$PYTHON" "$srcdir/tests/python/$t.py" 2>&1 || status=1
done
exit $status
