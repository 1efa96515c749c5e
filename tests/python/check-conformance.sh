#!/bin/sh
# CPython's test_asyncio on the globeflower loop (see run_test_asyncio.py).
# The stock loop's results come from tests/python/stock-results-<X.Y>.json
# when it matches the interpreter, else the stock loop is run too.
# Skipped (77) when GFL_LONG_TESTS=0 (make distcheck) or without the suite
# (Debian: apt-get install libpython3.11-testsuite).
set -u
srcdir=${abs_top_srcdir:-.}
. "$srcdir/tests/host-env.sh"
PYTHON=${PYTHON:-/usr/bin/python3}
if [ "${GFL_LONG_TESTS:-1}" = 0 ]; then
    echo "check-conformance: SKIP (GFL_LONG_TESTS=0)"
    exit 77
fi
ver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ ! -d "/usr/lib/python$ver/test/test_asyncio" ]; then
    echo "check-conformance: SKIP (no test_asyncio for Python $ver: apt-get install libpython$ver-testsuite)"
    exit 77
fi
baseline=$srcdir/tests/python/stock-results-$ver.json
set -- --pythonpath "${GFL_PYTHONPATH:-}" --exceptions "$srcdir/tests/python/test_asyncio_exceptions.txt" -v
if [ -f "$baseline" ]; then
    set -- "$@" --baseline "$baseline"
fi
host_env_note "$PYTHON"
run_host "$PYTHON" "$srcdir/tests/python/run_test_asyncio.py" "$@"
