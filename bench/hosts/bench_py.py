"""bench/hosts: the Python half. Exports py.echo, py.echo_async and
py.run_bench (which times sequential round trips from Python)."""

import asyncio
import os
import time

import globeflower

loop = None


async def echo_async(x):
    return x


def echo(x):
    return x


def start(capsule):
    global loop
    loop = globeflower.Loop.from_capsule(capsule)
    asyncio.set_event_loop(loop)
    globeflower.export("py.echo", echo, loop=loop)
    globeflower.export("py.echo_async", echo_async, loop=loop)
    globeflower.export("py.run_bench", run_bench, loop=loop)


ONLY = os.environ.get("BENCH_HOSTS_ONLY")  # a Lua pattern in bench.lua; a substring here


async def measure(name, n, fn):
    if ONLY and ONLY not in name:
        return
    for i in range(n // 10):  # warm up
        await fn(i)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        if await fn(i) != i:
            raise AssertionError(name + ": wrong result")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    await globeflower.call("bench.result", {"name": name, "caller": "python", "calls": n,
                                            "seconds": seconds, "cpu": cpu})


async def run_bench():
    n = await globeflower.call("bench.calls")
    example = globeflower.plugin("example")
    await measure("Python task -> Python task", n, lambda i: loop.create_task(echo_async(i)))
    await measure("Python -> Python export", n, lambda i: globeflower.call("py.echo_async", i))
    await measure("Python -> Lua export", n, lambda i: globeflower.call("lua.echo", i))
    await measure("Python -> plugin async echo", n, lambda i: example.sleep_then_echo(0, i))
