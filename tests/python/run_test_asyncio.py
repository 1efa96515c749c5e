#!/usr/bin/python3
"""Runs CPython's own test_asyncio against the globeflower event loop.

    run_test_asyncio.py [--loop globeflower|stock|both] [--jobs N]
                        [--baseline FILE | --write-baseline FILE]
                        [--exceptions FILE] [--test-timeout S] [MODULE ...]

How the loop is put under test:
  - test classes bound to a stock loop (their own create_event_loop/new_loop
    returns a SelectorEventLoop: test_events, test_sendfile,
    test_sock_lowlevel, test_buffered_proto, test_server, test_ssl, ...) are
    run once, with that method returning a globeflower loop (the Select/Poll
    variants of the same tests are dropped: they are one suite on us);
  - every other class runs as-is under globeflower's event loop policy, so
    asyncio.run, IsolatedAsyncioTestCase, asyncio.new_event_loop() & co.
    make globeflower loops.

Each module runs in its own process. A watchdog kills a process that made
no progress for --test-timeout seconds, records the test that was running
as a HANG and restarts the module after it. Results are compared per test
with the stock loop (run in the same invocation, or read from --baseline):
every test that passes on the stock loop must pass on ours, unless listed
in the exceptions file ("test id  # reason"). Exit status 0 when so and
nothing hung.
"""

import argparse
import glob
import inspect
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDIR = os.path.join(sysconfig.get_path("stdlib"), "test", "test_asyncio")
STOCK_FACTORY_MARKERS = ("SelectorEventLoop",)
# Among the variants of one suite, the one whose stock results we compare with.
PREFERRED = ("EPoll", "Poll", "Select")


# --------------------------------------------------------------------------
# Child: run one module, writing one JSON line per event to a progress file


def loop_bound_classes(module):
    """{class: method name} for the test classes of `module` whose own loop
    factory makes a stock selector loop."""
    found = {}
    for name, cls in vars(module).items():
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
            continue
        for meth in ("create_event_loop", "new_loop"):
            fn = cls.__dict__.get(meth)
            if fn is None:
                continue
            try:
                src = inspect.getsource(fn)
            except (OSError, TypeError):
                continue
            if any(m in src for m in STOCK_FACTORY_MARKERS):
                found[cls] = meth
    return found


def pick_variants(classes):
    """One class per group of variants (same bases), preferring EPoll."""
    groups = {}
    for cls in classes:
        groups.setdefault(cls.__bases__, []).append(cls)
    keep = set()
    for members in groups.values():
        def rank(c):
            for i, p in enumerate(PREFERRED):
                if c.__name__.startswith(p):
                    return i
            return len(PREFERRED)
        keep.add(min(members, key=lambda c: (rank(c), c.__name__)))
    return keep


class ProgressResult(unittest.TextTestResult):
    def __init__(self, stream, descriptions, verbosity, out):
        super().__init__(stream, descriptions, verbosity)
        self._out = out
        self._bad = set()

    def _emit(self, **kw):
        self._out.write(json.dumps(kw) + "\n")
        self._out.flush()

    def startTest(self, test):
        self._emit(start=test.id())
        super().startTest(test)

    def _done(self, test, outcome, detail=None):
        self._emit(id=test.id(), outcome=outcome, detail=(detail or "")[-2000:])

    def addSuccess(self, test):
        super().addSuccess(test)
        if test.id() not in self._bad:
            self._done(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._done(test, "fail", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        tid = test.id() if hasattr(test, "id") else str(test)
        self._emit(id=tid, outcome="error", detail=self._exc_info_to_string(err, test)[-2000:])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._done(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._done(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._done(test, "xpass")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None and test.id() not in self._bad:
            self._bad.add(test.id())
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._done(test, kind, self._exc_info_to_string(err, test))


def child(args):
    # As in an interactive interpreter, whatever the parent ignored (a
    # background job ignores SIGINT): test_runners raises SIGINT itself.
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, os.path.dirname(os.path.dirname(TESTDIR)))
    if args.loop == "globeflower":
        import asyncio
        import globeflower
        asyncio.set_event_loop_policy(globeflower.EventLoopPolicy())
    import importlib
    mod = importlib.import_module("test.test_asyncio." + args.child)
    bound = loop_bound_classes(mod)
    keep = pick_variants(bound)
    skip = set()
    if args.skip_file and os.path.exists(args.skip_file):
        with open(args.skip_file) as f:
            skip = {line.strip() for line in f if line.strip()}

    replace = {}
    for cls in keep:
        if args.loop == "globeflower":
            import globeflower
            meth = bound[cls]
            # Same name and qualname: test ids match the stock run's.
            sub = type(cls.__name__, (cls,), {
                meth: lambda self: globeflower.new_event_loop(),
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
            })
            replace[cls] = sub
        else:
            replace[cls] = cls

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name, cls in vars(mod).items():
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
            continue
        if cls in bound and cls not in keep:
            continue  # a variant of a suite run once
        use = replace.get(cls, cls)
        for test in loader.loadTestsFromTestCase(use):
            if test.id() not in skip:
                suite.addTest(test)

    with open(args.progress, "a") as out:
        # The module's set-up and tear-down hooks run as in unittest.main().
        runner = unittest.TextTestRunner(
            stream=sys.stderr, verbosity=0,
            resultclass=lambda s, d, v: ProgressResult(s, d, v, out))
        setup = getattr(mod, "setUpModule", None)
        teardown = getattr(mod, "tearDownModule", None)
        if setup:
            setup()
        try:
            runner.run(suite)
        finally:
            if teardown:
                teardown()
        out.write(json.dumps({"finished": True}) + "\n")
    os._exit(0)  # a leftover non-daemon thread must not hang the child


# --------------------------------------------------------------------------
# Parent: the watchdog and the report


def run_module(module, loop, opts):
    """{test id: outcome} for one module, restarting it past hung tests."""
    results, details = {}, {}
    skip = set()
    workdir = tempfile.mkdtemp(prefix=f"gfl-{loop}-{module}-")
    progress = os.path.join(workdir, "progress.jsonl")
    skipfile = os.path.join(workdir, "skip")
    restarts = 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [opts.pythonpath, env.get("PYTHONPATH")] if p)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    while True:
        with open(skipfile, "w") as f:
            f.write("\n".join(sorted(skip | set(results))))
        open(progress, "w").close()
        log = open(os.path.join(workdir, f"log{restarts}.txt"), "w")
        p = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", module, "--loop", loop,
             "--progress", progress, "--skip-file", skipfile],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        current, finished, last, pos = None, False, time.monotonic(), 0
        while True:
            try:
                p.wait(timeout=0.5)
                exited = True
            except subprocess.TimeoutExpired:
                exited = False
            with open(progress) as f:
                f.seek(pos)
                chunk = f.read()
            # only whole lines
            cut = chunk.rfind("\n") + 1
            pos += len(chunk[:cut].encode())
            for line in chunk[:cut].splitlines():
                ev = json.loads(line)
                last = time.monotonic()
                if "start" in ev:
                    current = ev["start"]
                elif "finished" in ev:
                    finished = True
                else:
                    results[ev["id"]] = ev["outcome"]
                    details[ev["id"]] = ev.get("detail", "")
                    if ev["id"] == current:
                        current = None
            if exited:
                break
            if time.monotonic() - last > opts.test_timeout:
                p.kill()
                p.wait()
                break
        log.close()
        if finished:
            break
        # Killed by the watchdog or crashed: blame the running test.
        if current is None or current in results or restarts > 50:
            if current is None:
                results[f"{module}::<crash {restarts}>"] = "crash" if not exited else "crash"
            break
        results[current] = "hang" if not exited else "crash"
        with open(os.path.join(workdir, f"log{restarts}.txt")) as f:
            details[current] = f.read()[-3000:]
        skip.add(current)
        restarts += 1
    return results, details


def modules_all():
    names = [os.path.basename(p)[:-3] for p in glob.glob(os.path.join(TESTDIR, "test_*.py"))]
    return sorted(n for n in names if "windows" not in n)


def load_exceptions(path):
    exc = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                tid, _, reason = line.partition("#")
                exc[tid.strip()] = reason.strip()
    return exc


def run_all(modules, loop, opts):
    from concurrent.futures import ThreadPoolExecutor
    out = {}
    with ThreadPoolExecutor(opts.jobs) as ex:
        futs = {m: ex.submit(run_module, m, loop, opts) for m in modules}
        for m in modules:
            out[m] = futs[m].result()
    return out


def count(results):
    c = {}
    for o in results.values():
        c[o] = c.get(o, 0) + 1
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*")
    ap.add_argument("--loop", default="both", choices=["globeflower", "stock", "both"])
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("GFL_TEST_JOBS", "2")))
    ap.add_argument("--test-timeout", type=float, default=60.0)
    ap.add_argument("--baseline", help="stock results (JSON) instead of running the stock loop")
    ap.add_argument("--write-baseline", help="write the stock results here")
    ap.add_argument("--exceptions", default=os.path.join(HERE, "test_asyncio_exceptions.txt"))
    ap.add_argument("--pythonpath", default=os.environ.get("GFL_PYTHONPATH", ""))
    ap.add_argument("--json", help="write every result here")
    ap.add_argument("--verbose", "-v", action="store_true", help="show details of regressions")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--progress", help=argparse.SUPPRESS)
    ap.add_argument("--skip-file", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.child:
        return child(opts)

    modules = opts.modules or modules_all()
    t0 = time.monotonic()
    stock = None
    if opts.baseline and opts.loop != "stock":
        with open(opts.baseline) as f:
            stock = {m: (r, {}) for m, r in json.load(f).items()}
    elif opts.loop in ("stock", "both"):
        stock = run_all(modules, "stock", opts)
        if opts.write_baseline:
            with open(opts.write_baseline, "w") as f:
                json.dump({m: r for m, (r, _) in stock.items()}, f, indent=0, sort_keys=True)
    ours = run_all(modules, "globeflower", opts) if opts.loop in ("globeflower", "both") else None

    exceptions = load_exceptions(opts.exceptions)
    total = {}
    regressions, hangs, excused = [], [], []
    width = max(len(m) for m in modules)
    print(f"{'module':<{width}}  {'ours: pass fail err skip hang':>30}  {'stock: pass fail err skip':>26}  regressions")
    for m in modules:
        ro, do = ours[m] if ours else ({}, {})
        rs = stock.get(m, ({}, {}))[0] if stock else {}
        co, cs = count(ro), count(rs)
        reg = []
        if ours is not None and stock is not None:
            for tid, outcome in rs.items():
                if outcome in ("pass", "xfail") and ro.get(tid) not in ("pass", "xfail"):
                    (excused if tid in exceptions else reg).append(tid)
        for tid, o in ro.items():
            if o in ("hang", "crash"):
                hangs.append(tid)
        regressions += reg
        for k in ("pass", "fail", "error", "skip", "hang", "crash", "xfail"):
            total[("o", k)] = total.get(("o", k), 0) + co.get(k, 0)
            total[("s", k)] = total.get(("s", k), 0) + cs.get(k, 0)
        print(f"{m:<{width}}  {co.get('pass', 0):>10} {co.get('fail', 0):>4} {co.get('error', 0):>3} "
              f"{co.get('skip', 0):>4} {co.get('hang', 0) + co.get('crash', 0):>4}  "
              f"{cs.get('pass', 0):>11} {cs.get('fail', 0):>4} {cs.get('error', 0):>3} {cs.get('skip', 0):>4}  {len(reg)}")
        if opts.verbose:
            for tid in reg:
                print(f"    REGRESSION {tid}: {ro.get(tid, 'missing')}")
                d = do.get(tid, "")
                if d:
                    print("      " + d.strip().replace("\n", "\n      ")[-1500:])
    g = lambda w, k: total.get((w, k), 0)
    print(f"{'TOTAL':<{width}}  {g('o', 'pass'):>10} {g('o', 'fail'):>4} {g('o', 'error'):>3} {g('o', 'skip'):>4} "
          f"{g('o', 'hang') + g('o', 'crash'):>4}  {g('s', 'pass'):>11} {g('s', 'fail'):>4} {g('s', 'error'):>3} "
          f"{g('s', 'skip'):>4}  {len(regressions)}")
    print(f"regressions (pass on stock, not on globeflower): {len(regressions)} unexcused, "
          f"{len(excused)} listed in {os.path.basename(opts.exceptions)}; hangs/crashes: {len(hangs)}; "
          f"{time.monotonic() - t0:.0f} s")
    for tid in hangs:
        print(f"  HANG/CRASH {tid}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"ours": {m: r for m, (r, _) in (ours or {}).items()},
                       "stock": {m: r for m, (r, _) in (stock or {}).items()}}, f, indent=0, sort_keys=True)
    if ours is None:
        return 0
    return 1 if regressions or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
