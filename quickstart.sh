#!/usr/bin/env bash
# globeflower quick start (Debian/Ubuntu).
#
#   ./quickstart.sh         install missing packages, build, run examples/tour
#   ./quickstart.sh check   the same set-up, then make check and make distcheck
#
# Idempotent: every step runs only when it has something to do. Extra
# configure options can be given in $GFL_CONFIGURE_FLAGS (used when configure
# runs, i.e. the first time or after configure changed).
set -euo pipefail

cd "$(dirname "$0")"

# Debian packages needed to build and test. Bindings append theirs here.
DEB_PACKAGES=(
    build-essential
    autoconf
    automake
    libtool
    pkg-config
    libevent-dev
    libssl-dev
    libcriterion-dev
    abigail-tools
    openssl
    valgrind
    # Python binding (--enable-python): headers, CPython's test_asyncio for
    # the conformance run, and the peers its tests and benchmarks use.
    python3-dev
    libpython3.11-testsuite
    python3-uvloop
    python3-aiohttp
    python3-websockets
    # the install test (tests/python/check-install.sh): pip install bindings/python
    python3-pip
    # Lua binding (--with-lua, see GFL_LUA below): headers and interpreters
    # for each Lua it is built and tested with, and the peers of its benches.
    liblua5.1-0-dev
    liblua5.2-dev
    liblua5.3-dev
    liblua5.4-dev
    libluajit-5.1-dev
    lua5.1
    lua5.2
    lua5.3
    lua5.4
    luajit
    lua-luv
    lua-cqueues
    # the rockspec's test (luarocks make into a temporary tree)
    luarocks
)

# The Luas the Lua module is built and tested for (configure --with-lua).
GFL_LUA=${GFL_LUA:-lua5.1,lua5.2,lua5.3,lua5.4,luajit}

JOBS=${JOBS:-2}

say() { printf 'quickstart: %s\n' "$*"; }
die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }

usage() {
    echo "usage: $0 [check]" >&2
    exit 2
}

mode=build
case "${1-}" in
    "") ;;
    check) mode=check ;;
    -h | --help) usage ;;
    *) usage ;;
esac
[ $# -le 1 ] || usage

install_packages() {
    local missing=() pkg status
    for pkg in "${DEB_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
        [ "$status" = installed ] || missing+=("$pkg")
    done
    [ ${#missing[@]} -gt 0 ] || return 0

    say "installing ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
        die "apt-get install failed"
}

# Runs a command quietly; on failure shows its output and stops.
quiet() {
    local what=$1 log
    shift
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "$what failed"
    fi
    rm -f "$log"
}

newer() { # newer FILE THAN... : FILE is missing or older than one of THAN
    local f=$1 t
    shift
    [ -e "$f" ] || return 0
    for t; do
        [ "$t" -nt "$f" ] && return 0
    done
    return 1
}

bootstrap() {
    if newer configure configure.ac Makefile.am; then
        say "autoreconf -fi"
        mkdir -p m4
        quiet "autoreconf" autoreconf -fi
    fi
    if [ ! -e config.status ]; then
        say "./configure --enable-python --with-lua=$GFL_LUA ${GFL_CONFIGURE_FLAGS:-}"
        # shellcheck disable=SC2086  # word splitting of the flags is wanted
        ./configure --quiet --enable-python --with-lua="$GFL_LUA" ${GFL_CONFIGURE_FLAGS:-} || configure_failed
    elif newer config.status configure; then
        # Keeps the options config.status was made with.
        say "./config.status --recheck"
        { ./config.status --recheck >/dev/null && ./config.status >/dev/null; } || configure_failed
    fi
}

configure_failed() {
    [ -f config.log ] && tail -n 40 config.log >&2
    die "configure failed (see config.log)"
}

build() {
    make -j"$JOBS" --no-print-directory -s || die "make failed"
}

# Counts from an automake test-suite.log: "check: N passed, N failed".
summary() {
    local log=$1 pass=0 fail=0 skip=0
    if [ -f "$log" ]; then
        pass=$(sed -n 's/^# PASS: *//p' "$log")
        fail=$(sed -n 's/^# \(FAIL\|ERROR\|XPASS\): *//p' "$log" | awk '{ n += $1 } END { print n + 0 }')
        skip=$(sed -n 's/^# SKIP: *//p' "$log")
    fi
    if [ "${skip:-0}" -gt 0 ]; then
        echo "check: ${pass:-0} passed, $fail failed ($skip skipped)"
    else
        echo "check: ${pass:-0} passed, $fail failed"
    fi
}

install_packages
bootstrap
build

if [ "$mode" = build ]; then
    ./examples/tour
    exit 0
fi

# make check prints the logs of failing tests itself (VERBOSE, see Makefile.am).
if ! make -j"$JOBS" --no-print-directory check; then
    summary test-suite.log
    die "make check failed (logs above, and in test-suite.log)"
fi
# A failing distcheck prints its failed test logs the same way.
if ! make -j"$JOBS" --no-print-directory distcheck; then
    summary test-suite.log
    die "make distcheck failed"
fi
summary test-suite.log
