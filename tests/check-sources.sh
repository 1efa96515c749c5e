#!/bin/sh
# Every C file under core/ and every tests/test_*.c is built: each one must
# be named in Makefile.am (automake needs explicit lists, and a forgotten
# test would silently never run). Reads $abs_top_srcdir; writes nothing.
set -u

srcdir=${abs_top_srcdir:-.}
am=$srcdir/Makefile.am
test -f "$am" || { echo "check-sources: FAIL: $am not found" >&2; exit 1; }

missing=
for f in "$srcdir"/core/*.c "$srcdir"/core/*.h "$srcdir"/tests/test_*.c "$srcdir"/abi/*.h; do
    test -e "$f" || continue
    rel=${f#"$srcdir"/}
    grep -q "[[:space:]=]$rel\([[:space:]\\]\|$\)" "$am" || missing="$missing $rel"
done

if test -n "$missing"; then
    echo "check-sources: FAIL: not in Makefile.am (add them to the library sources, include_HEADERS or GFL_C_TESTS):" >&2
    for f in $missing; do echo "  $f" >&2; done
    exit 1
fi
echo "check-sources: PASS"
