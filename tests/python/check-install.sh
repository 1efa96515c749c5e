#!/bin/sh
# The Python package as users install it (docs/python.md, "Building"):
# 1. `make install DESTDIR=TMP` (libtool installs into the configured
#    prefix only, staged under DESTDIR) puts it where the configured
#    interpreter looks for the prefix's packages (sysconfig's scheme:
#    dist-packages on Debian), with a .dist-info: a fresh interpreter
#    imports it from there, importlib.metadata and pip list see it;
#    `make uninstall` removes it.
# 2. `pip install bindings/python` (pyproject.toml, offline: --no-index)
#    builds it against that installed libglobeflower, found with pkg-config.
set -u
# A sanitizer build instruments the modules but not the interpreters that
# load the installed copies here; packaging is checked in the normal build.
if [ -n "${GFL_ASAN_RUNTIME:-}" ]; then
    echo "sanitizer build: the install checks load installed modules into uninstrumented interpreters (skipped, not failed)"
    exit 77
fi
srcdir=${abs_top_srcdir:-.}
builddir=${abs_top_builddir:-.}
PYTHON=${PYTHON:-/usr/bin/python3}
MAKE=${MAKE:-make}
version=$(sed -n 's/^Version: //p' "$builddir/globeflower.pc")
prefix=$(sed -n 's/^prefix=//p' "$builddir/globeflower.pc")
libdir=$(sed -n 's/^libdir=//p' "$builddir/globeflower.pc" | sed "s|\${exec_prefix}|$prefix|; s|\${prefix}|$prefix|")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gfl-install.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
status=0
fail() { echo "FAIL: $*"; status=1; }
# The fresh interpreters see nothing of the build tree or the user's site.
clean_env() { env -u PYTHONPATH -u PYTHONHOME -u GFL_PYTHONPATH PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 "$@"; }

stage=$tmp/stage
echo "== make install DESTDIR=$stage (prefix $prefix)"
if ! $MAKE -C "$builddir" install DESTDIR="$stage" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"
    echo "FAIL: make install"
    exit 1
fi
rel=$("$PYTHON" "$srcdir/bindings/python/sitedir.py") || exit 1
rel=${rel#'${exec_prefix}/'}
sitedir=$stage$prefix/$rel
# The staged library is not where the extension's run path points yet.
LD_LIBRARY_PATH=$stage$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
test -f "$sitedir/globeflower/__init__.py" || fail "no package in $sitedir"
test -f "$sitedir/globeflower-$version.dist-info/METADATA" || fail "no dist-info in $sitedir"
# The same relative directory is on the interpreter's own path for its
# prefixes (/usr/local on Debian): a plain `make install` is importable.
clean_env "$PYTHON" - "$rel" "$prefix" <<'PY' || fail "$rel is not where the interpreter looks"
import os, sys
rel = sys.argv[1]
prefixes = {sys.prefix, sys.exec_prefix, "/usr/local", sys.argv[2]}
assert any(os.path.join(p, rel) in sys.path for p in prefixes), (rel, sys.path)
print("on sys.path for the prefix:", rel)
PY
(cd "$tmp" && clean_env PYTHONPATH="$sitedir" "$PYTHON" - "$sitedir" "$version" <<'PY') || fail "import from the installed package"
import asyncio, importlib.metadata, sys
import globeflower
sitedir, version = sys.argv[1], sys.argv[2]
assert globeflower.__file__.startswith(sitedir), globeflower.__file__
assert importlib.metadata.version("globeflower") == version == globeflower.__version__
files = importlib.metadata.files("globeflower")
assert any(str(f).startswith("globeflower/_core") for f in files), files
async def main():
    await asyncio.sleep(0.01)
    return asyncio.get_running_loop()
loop = globeflower.run(main())
assert isinstance(loop, globeflower.Loop)
print("imported", globeflower.__file__, "version", version)
PY
if clean_env "$PYTHON" -m pip --version >/dev/null 2>&1; then
    clean_env "$PYTHON" -m pip list --disable-pip-version-check --path "$sitedir" 2>/dev/null |
        grep -q "^globeflower *$version\$" || fail "pip list does not show globeflower $version"
fi
$MAKE -C "$builddir" uninstall DESTDIR="$stage" >"$tmp/uninstall.log" 2>&1 || { cat "$tmp/uninstall.log"; fail "make uninstall"; }
test ! -e "$sitedir/globeflower-$version.dist-info" || fail "make uninstall left the dist-info"
test ! -e "$sitedir/globeflower/__init__.py" || fail "make uninstall left the package"

echo "== pip install bindings/python (offline, against the installed libglobeflower)"
if ! clean_env "$PYTHON" -m pip --version >/dev/null 2>&1; then
    echo "pip not available (Debian: apt-get install python3-pip): skipped"
    exit $status
fi
# The library again (uninstalled above), then pip builds against it.
$MAKE -C "$builddir" install-libLTLIBRARIES install-includeHEADERS install-pkgconfigDATA \
    DESTDIR="$stage" >"$tmp/install-lib.log" 2>&1 || { cat "$tmp/install-lib.log"; fail "make install (library)"; }
# --define-prefix: the staged .pc file names its own (staged) prefix.
if clean_env PKG_CONFIG_PATH="$stage$libdir/pkgconfig" PKG_CONFIG="pkg-config --define-prefix" LD_LIBRARY_PATH= \
    "$PYTHON" -m pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check \
    --target "$tmp/pip" "$srcdir/bindings/python" >"$tmp/pip.log" 2>&1; then
    # No LD_LIBRARY_PATH: the extension's run path (pkg-config's libdir) finds it.
    (cd "$tmp" && clean_env LD_LIBRARY_PATH= PYTHONPATH="$tmp/pip" "$PYTHON" - "$tmp" "$stage$libdir" "$version" <<'PY') || fail "import after pip install"
import asyncio, importlib.metadata, sys
import globeflower
tmp, libdir, version = sys.argv[1], sys.argv[2], sys.argv[3]
assert globeflower.__file__.startswith(tmp + "/pip/"), globeflower.__file__
assert importlib.metadata.version("globeflower") == version
assert globeflower.run(asyncio.sleep(0.01, "ok")) == "ok"
with open("/proc/self/maps") as f:
    libs = {line.split()[-1] for line in f if "libglobeflower" in line}
assert libs and all(l.startswith(libdir + "/") for l in libs), libs
print("pip-built package imported,", sorted(libs)[0])
PY
else
    cat "$tmp/pip.log"
    fail "pip install bindings/python"
fi
exit $status
