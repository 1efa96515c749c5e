#!/usr/bin/python3
"""Calls across hosts from Python (docs/hosts.md), against a same-host baseline.

    bench_hosts.py [--n N] [--rounds R] [--value small|nested] [--quick]

On one globeflower loop, each row makes N calls one after the other (the
round-trip latency: mean and 99th percentile, each call timed) and then N
calls 100 at a time with asyncio.gather (calls/s with calls in flight). The
rows take turns for R rounds (default 3) and each shows its best round, so
a busy machine skews the ratios less:

  py task         `await loop.create_task(echo(x))`: a Python task awaited
                  by a Python task, the same-host baseline
  export async    `await globeflower.call("bench.aecho", x)`: an async def
                  export; a task per call, the core future between them
  export sync     `await globeflower.call("bench.echo", x)`: a plain def export
  plugin add      `example.add(i, 1)`: the C plugin's sync function (no await)
  plugin async    `await example.sleep_then_echo(0, x)`: the plugin's async
                  function, a core timer and future per call

The ratio column is the row's sequential calls/s over the baseline's (above
1: faster than a Python task round trip). The plugin is found on
$GFL_PLUGIN_PATH (default: plugins/.libs of the build tree next to this
script) and the package on PYTHONPATH (make
bindings/python/build/globeflower/__init__.py builds it).
"""

import argparse
import asyncio
import gc
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
os.environ.setdefault("GFL_PLUGIN_PATH", os.path.join(TOP, "plugins", ".libs"))
if not any(os.path.isdir(os.path.join(p, "globeflower")) for p in sys.path if p):
    sys.path.insert(0, os.path.join(TOP, "bindings", "python", "build"))

import globeflower  # noqa: E402

VALUES = {
    "small": 7,
    "nested": {"id": 7, "name": "bench", "tags": ["a", "b", "c"], "pos": [1.5, 2.5, 3.5],
               "meta": {"ok": True, "n": None}},
}
BATCH = 100


async def echo(x):
    return x


def sync_echo(x):
    return x


def rows(loop, ex, value):
    """(name, one call as a coroutine function) for each row."""
    create_task = loop.create_task
    call = globeflower.call
    add = ex.add
    sleep_then_echo = ex.sleep_then_echo

    async def py_task(i):
        return await create_task(echo(value))

    async def export_async(i):
        return await call("bench.aecho", value)

    async def export_sync(i):
        return await call("bench.echo", value)

    async def plugin_add(i):
        return add(i, 1)

    async def plugin_async(i):
        return await sleep_then_echo(0, value)

    return [("py task", py_task), ("export async", export_async), ("export sync", export_sync),
            ("plugin add", plugin_add), ("plugin async", plugin_async)]


async def measure(one, n):
    """(mean latency ns, p99 latency ns, concurrent calls/s)."""
    for i in range(min(n // 10, 1000)):  # warm-up
        await one(i)
    clock = time.perf_counter_ns
    times = []
    gc.disable()
    try:
        for i in range(n):
            t0 = clock()
            await one(i)
            times.append(clock() - t0)
        t0 = clock()
        for start in range(0, n, BATCH):
            await asyncio.gather(*[one(i) for i in range(start, min(n, start + BATCH))])
        concurrent_ns = clock() - t0
    finally:
        gc.enable()
    times.sort()
    return sum(times) / n, times[min(n - 1, int(n * 0.99))], n * 1e9 / concurrent_ns


async def main(args):
    loop = asyncio.get_running_loop()
    ex = globeflower.plugin("example")
    globeflower.export("bench.aecho", echo)
    globeflower.export("bench.echo", sync_echo)
    value = VALUES[args.value]
    table = rows(loop, ex, value)
    for name, one in table:
        assert await one(1) == (2 if name == "plugin add" else value), name
    best = {}
    for _ in range(args.rounds):
        for name, one in table:
            mean, p99, concurrent = await measure(one, args.n)
            old = best.get(name, (float("inf"), float("inf"), 0.0))
            best[name] = (min(old[0], mean), min(old[1], p99), max(old[2], concurrent))
    results = [(name,) + best[name] for name, _ in table]
    globeflower.unexport("bench.aecho")
    globeflower.unexport("bench.echo")
    return results


def print_table(results, args):
    base = 1e9 / results[0][1]
    print(f"# Calls across hosts (globeflower {globeflower.__version__}, Python "
          f"{sys.version.split()[0]}, value={args.value}, n={args.n}, best of {args.rounds} rounds)")
    print()
    print("| call | sequential calls/s | mean latency µs | p99 latency µs | concurrent calls/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, mean, p99, concurrent in results:
        rate = 1e9 / mean
        print(f"| {name} | {rate:,.0f} | {mean / 1000:.2f} | {p99 / 1000:.2f} | {concurrent:,.0f} | "
              f"{rate / base:.2f}x |")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100000, help="calls per row (default 100000)")
    p.add_argument("--value", choices=sorted(VALUES), default="small", help="what each call carries")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each row shows its best (default 3)")
    p.add_argument("--quick", action="store_true", help="n=10000, one round")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 10000, 1
    if args.n < 1 or args.rounds < 1:
        p.error("--n and --rounds must be positive")
    return args


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    print_table(globeflower.run(main(args)), args)
