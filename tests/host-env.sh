# Sourced by the check scripts that run interpreters (Lua, Python) on the
# modules built in the tree. Defines run_host: runs a command (an
# interpreter) the way this build needs.
#
# In a sanitizer build (configure --enable-sanitizers; make check exports
# GFL_ASAN_RUNTIME, the path of gcc's libasan.so) the modules are built with
# ASan but the interpreters are not, and ASan must be the first library in
# the process ("ASan runtime does not come first in initial library list"):
# preload it. LeakSanitizer is turned off there (detect_leaks=0): the
# interpreters, and the programs the tests start from them (which inherit
# LD_PRELOAD), keep allocations at exit that are not ours; leaks of the
# bindings are checked by the valgrind runs of the normal build instead.
# Invalid accesses and undefined behaviour still abort the run.
run_host() {
    if [ -n "${GFL_ASAN_RUNTIME:-}" ]; then
        LD_PRELOAD="$GFL_ASAN_RUNTIME${LD_PRELOAD:+:$LD_PRELOAD}" \
        ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
            "$@"
    else
        "$@"
    fi
}

# One line saying how the interpreters run, for the test logs.
host_env_note() {
    if [ -n "${GFL_ASAN_RUNTIME:-}" ]; then
        echo "sanitizers: $1 runs with $GFL_ASAN_RUNTIME preloaded, ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 (leaks: see the valgrind runs of a normal build)"
    fi
}
