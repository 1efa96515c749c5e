#!/bin/sh
# The built library exports only the public API: every defined dynamic
# symbol is gfl_<something> (internal gfl__* helpers must stay hidden),
# apart from the version node GLOBEFLOWER_1 the version script creates.
# Run by make check; reads $GFL_SHLIB (and $NM). Writes nothing.
set -u

lib=${GFL_SHLIB:-${abs_top_builddir:-.}/lib/.libs/libglobeflower.so}
nm=${NM:-nm}

if test ! -f "$lib"; then
    echo "check-exports: FAIL: $lib not found (build the library first)" >&2
    exit 1
fi

# nm output: "address type name[@@version]"; keep "type name".
if ! syms=$(LC_ALL=C $nm -D --defined-only "$lib"); then
    echo "check-exports: FAIL: $nm -D --defined-only $lib failed" >&2
    exit 1
fi
syms=$(printf '%s\n' "$syms" | awk 'NF >= 2 { n = $NF; sub(/@.*/, "", n); print $(NF-1), n }')

bad=$(printf '%s\n' "$syms" | awk '
    $2 == "GLOBEFLOWER_1" && $1 == "A" { next }
    $2 ~ /^gfl_[A-Za-z0-9]/ { next }
    NF { print }')
count=$(printf '%s\n' "$syms" | awk '$2 ~ /^gfl_[A-Za-z0-9]/' | wc -l)

echo "check-exports: $count gfl_ symbols exported by $lib"
if test -n "$bad"; then
    echo "check-exports: FAIL: symbols outside the gfl_ API are exported:" >&2
    printf '  %s\n' "$bad" >&2
    exit 1
fi
if ! printf '%s\n' "$syms" | grep -q '^T gfl_api_get$'; then
    echo "check-exports: FAIL: gfl_api_get is not exported" >&2
    exit 1
fi
echo "check-exports: PASS"
