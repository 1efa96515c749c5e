#!/usr/bin/python3
"""One loop micro-benchmark in this process; bench/python/run runs it per
loop in fresh processes, pinned to one core, and prints the table.

    bench_asyncio.py LOOP BENCH [N]

LOOP: asyncio, uvloop or globeflower. BENCH (N operations, default below):
  call_soon     a chain of callbacks, each call_soon's the next (1,000,000)
  call_later    the same with call_later(0) (200,000)
  sleep0        N tasks, each `await asyncio.sleep(0)`, created at once and
                gathered; one operation = one task (100,000)
  tasks         create_task + await of a trivial coroutine, one after the
                other (100,000)
  connections   connect to a server on the same loop, one 4-byte exchange,
                the server closes (5,000)

A warm-up of N/10 runs first, then N are measured. Prints one line:

  RESULT bench=B loop=L n=N cpu_ns=... wall_ns=...

cpu_ns/wall_ns: the process's CPU time (user+sys) and the wall time per
operation.
"""

import asyncio
import sys
import time

from echo_server import new_loop  # one place that knows the three loops

DEFAULT_N = {"call_soon": 1000000, "call_later": 200000, "sleep0": 100000,
             "tasks": 100000, "connections": 5000}


def bench_call_soon(loop, n):
    left = n

    def step():
        nonlocal left
        left -= 1
        if left:
            loop.call_soon(step)
        else:
            loop.stop()
    loop.call_soon(step)
    loop.run_forever()


def bench_call_later(loop, n):
    left = n

    def step():
        nonlocal left
        left -= 1
        if left:
            loop.call_later(0, step)
        else:
            loop.stop()
    loop.call_later(0, step)
    loop.run_forever()


def bench_sleep0(loop, n):
    async def one():
        await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*[loop.create_task(one()) for _ in range(n)])
    loop.run_until_complete(main())


def bench_tasks(loop, n):
    async def leaf():
        return 1

    async def main():
        for _ in range(n):
            await loop.create_task(leaf())
    loop.run_until_complete(main())


def bench_connections(loop, n):
    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)
            self.transport.close()

    class Client(asyncio.Protocol):
        def __init__(self, done):
            self.done = done

        def connection_made(self, transport):
            transport.write(b"ping")

        def connection_lost(self, exc):
            self.done.set_result(None)

    async def main():
        srv = await loop.create_server(Server, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        for _ in range(n):
            done = loop.create_future()
            await loop.create_connection(lambda: Client(done), "127.0.0.1", port)
            await done
        srv.close()
        await srv.wait_closed()
    loop.run_until_complete(main())


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[2] not in DEFAULT_N:
        sys.stderr.write(__doc__)
        return 2
    name, bench = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) == 4 else DEFAULT_N[bench]
    if n < 1:
        raise SystemExit("bench_asyncio.py: N must be >= 1")
    loop = new_loop(name)
    asyncio.set_event_loop(loop)
    fn = globals()["bench_" + bench]
    fn(loop, max(1, n // 10))
    c0, t0 = time.process_time_ns(), time.perf_counter_ns()
    fn(loop, n)
    cpu, wall = time.process_time_ns() - c0, time.perf_counter_ns() - t0
    loop.close()
    print("RESULT bench=%s loop=%s n=%d cpu_ns=%.1f wall_ns=%.1f" % (bench, name, n, cpu / n, wall / n), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
