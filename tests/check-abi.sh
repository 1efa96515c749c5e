#!/bin/sh
# The ABI of the built library matches the committed baseline
# abi/globeflower.abi (libabigail). Additions are allowed (--no-added-syms);
# any other difference, or a missing tool, fails.
#
#   tests/check-abi.sh            compare (make check)
#   tests/check-abi.sh --update   rewrite the baseline (make abi-baseline)
#
# Environment (set by make): abs_top_srcdir, abs_top_builddir, GFL_SHLIB,
# ABIDW, ABIDIFF. The current dump is written to the build directory only.
set -u

srcdir=${abs_top_srcdir:-.}
builddir=${abs_top_builddir:-.}
lib=${GFL_SHLIB:-$builddir/lib/.libs/libglobeflower.so}
abidw=${ABIDW:-abidw}
abidiff=${ABIDIFF:-abidiff}
baseline=$srcdir/abi/globeflower.abi

fail() {
    echo "check-abi: FAIL: $*" >&2
    exit 1
}

for tool in "$abidw" "$abidiff"; do
    command -v "$tool" >/dev/null 2>&1 ||
        fail "$tool not found: install libabigail (Debian: apt-get install abigail-tools)"
done
test -f "$lib" || fail "$lib not found (build the library first)"
if command -v readelf >/dev/null 2>&1 &&
    ! LC_ALL=C readelf -S "$lib" | grep -q '\.debug_info'; then
    fail "$lib has no debug information; the ABI check needs it (build with -g, e.g. CFLAGS='-g -O2')"
fi

# Keep these flags in one place: the baseline and the check must agree.
dump() {
    "$abidw" --headers-dir "$srcdir/abi" --drop-private-types --out-file "$1" "$lib"
}

if test "${1-}" = --update; then
    # The baseline may only move forward by appending: refuse anything else
    # (libabigail's own suppressions cannot tell an append from an insert).
    next=$builddir/tests/globeflower-next.abi
    mkdir -p "$builddir/tests" || fail "cannot create $builddir/tests"
    dump "$next" || fail "abidw failed"
    if test -f "$baseline" && test "${GFL_ABI_BREAK-}" != yes; then
        ${PYTHON3:-/usr/bin/python3} "$srcdir/tests/abi-append-only.py" "$baseline" "$next" ||
            fail "not updating $baseline (set GFL_ABI_BREAK=yes only for a new ABI major)"
    fi
    mv "$next" "$baseline" || fail "cannot write $baseline"
    echo "check-abi: wrote $baseline"
    exit 0
fi

test -f "$baseline" || fail "no baseline $baseline (make abi-baseline creates it)"
mkdir -p "$builddir/tests" || fail "cannot create $builddir/tests"
current=$builddir/tests/globeflower-current.abi
dump "$current" || fail "abidw failed on $lib"

"$abidiff" --no-added-syms "$baseline" "$current"
status=$?
if test $status -ne 0; then
    # abidiff's status is a bit mask: 1 error, 2 usage, 4 ABI change,
    # 8 incompatible ABI change.
    echo "check-abi: abidiff exited with $status" >&2
    fail "the ABI differs from $baseline; if the change is intended and
compatible, regenerate the baseline with 'make abi-baseline' and commit it"
fi
echo "check-abi: PASS (ABI matches $baseline)"
