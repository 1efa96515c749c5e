#!/bin/sh
# Reruns the Criterion test programs under valgrind (memcheck): invalid
# accesses, uses of uninitialised memory and definite/indirect leaks fail.
#
# Criterion runs each test in a worker process that it fork+execs from the
# test binary ("boxfort-worker"), hence --trace-children=yes. Criterion
# ignores a worker's exit status once the test reported its result, so
# valgrind's --error-exitcode alone would miss errors in workers: every
# process writes its own log and the logs are checked too.
#
# Skipped with --enable-sanitizers (valgrind and ASan do not mix; the
# normal run is the sanitized one) and when GFL_LONG_TESTS=0
# (configure --disable-long-tests, which make distcheck uses).
#
# Environment (set by make): abs_top_srcdir, abs_top_builddir, GFL_C_TESTS
# (test programs relative to the build dir), VALGRIND, LIBTOOL.
# GFL_VALGRIND_TESTS (set by make: GFL_C_TESTS minus GFL_VALGRIND_SKIP)
# overrides the list of programs to run;
# GFL_VALGRIND_JOBS (default 2) is how many tests Criterion runs at once.
#
# --soname-synonyms=somalloc=nouserintercepts: valgrind would otherwise
# replace the malloc that tests/test_alloc_sweep defines to fail
# allocations; that one forwards to glibc's __libc_malloc, which valgrind
# does replace, so every block is still checked.
#
# Cost: every test is a process started under valgrind, about 1 s of CPU
# each (mostly valgrind reading the libraries' symbols).
set -u

if test -n "${GFL_ASAN_RUNTIME:-}"; then
    echo "check-valgrind: SKIP: sanitizer build (valgrind cannot run ASan-instrumented programs; ASan and UBSan checked them in this run)"
    exit 77
fi

if test "${GFL_LONG_TESTS:-1}" = 0; then
    echo "check-valgrind: SKIP: long tests disabled (GFL_LONG_TESTS=0)"
    exit 77
fi

srcdir=${abs_top_srcdir:-.}
builddir=${abs_top_builddir:-.}
valgrind=${VALGRIND:-valgrind}
tests=${GFL_VALGRIND_TESTS:-${GFL_C_TESTS:-}}
supp=$srcdir/tests/valgrind.supp

fail() {
    echo "check-valgrind: FAIL: $*" >&2
    exit 1
}

command -v "$valgrind" >/dev/null 2>&1 ||
    fail "valgrind not found (Debian: apt-get install valgrind), or configure --enable-sanitizers"
test -n "$tests" || fail "no test programs given (GFL_C_TESTS is empty)"
test -f "$supp" || fail "suppression file $supp not found"

logdir=$builddir/tests/valgrind-logs
rm -rf "$logdir" && mkdir -p "$logdir" || fail "cannot create $logdir"

# Tests may check this to relax timing (everything is ~20x slower).
# Criterion notices valgrind and would run one test at a time, which leaves
# a core idle; its warning about explicit --jobs under valgrind concerns
# interleaved reports, and each process logs to its own file here.
jobs=${GFL_VALGRIND_JOBS:-2}
GFL_UNDER_VALGRIND=1
export GFL_UNDER_VALGRIND

failed=
for t in $tests; do
    prog=$builddir/$t
    name=$(basename "$t")
    test -x "$prog" || fail "$prog not built"
    # Tests are linked -no-install (real binaries); a libtool wrapper
    # script is handled anyway.
    run=
    if head -c 2 "$prog" | grep -q '^#!'; then
        test -n "${LIBTOOL:-}" || fail "$prog is a libtool wrapper and \$LIBTOOL is not set"
        run="$LIBTOOL --mode=execute"
    fi
    echo "check-valgrind: $t"
    start=$(date +%s)
    $run "$valgrind" \
        --tool=memcheck \
        --leak-check=full \
        --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect \
        --error-exitcode=1 \
        --trace-children=yes \
        --trace-children-skip='/bin/*,/usr/bin/*,/sbin/*,/usr/sbin/*' \
        --num-callers=30 \
        --gen-suppressions=all \
        --soname-synonyms=somalloc=nouserintercepts \
        --suppressions="$supp" \
        --log-file="$logdir/$name.%p.log" \
        "$prog" --jobs "$jobs"
    status=$?
    echo "check-valgrind: $t: $(($(date +%s) - start)) s"
    bad=$(grep -l 'ERROR SUMMARY: [1-9]' "$logdir/$name".*.log 2>/dev/null)
    if test $status -ne 0 || test -n "$bad"; then
        failed="$failed $t"
        echo "check-valgrind: $t: FAILED (exit status $status)" >&2
        for log in $bad; do
            echo "----- $log" >&2
            cat "$log" >&2
        done
    fi
done

if test -n "$failed"; then
    fail "failed under valgrind:$failed (valgrind logs in $logdir)"
fi
echo "check-valgrind: PASS"
