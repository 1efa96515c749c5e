#!/bin/sh
# The Python binding's own tests and the real-library tests (aiohttp,
# websockets) on the package built in the tree ($GFL_PYTHONPATH, set by
# make check). -X dev: asyncio debug mode and warnings as on a developer's box.
set -u
srcdir=${abs_top_srcdir:-.}
. "$srcdir/tests/host-env.sh"
PYTHON=${PYTHON:-/usr/bin/python3}
PYTHONPATH=${GFL_PYTHONPATH:-}${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH
status=0
host_env_note "$PYTHON"
for t in test_globeflower test_libraries; do
    echo "== $t (debug mode)"
    run_host "$PYTHON" -X dev "$srcdir/tests/python/$t.py" -v 2>&1 || status=1
    echo "== $t"
    run_host "$PYTHON" "$srcdir/tests/python/$t.py" 2>&1 || status=1
done
exit $status
