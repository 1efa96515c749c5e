#!/usr/bin/python3
"""Python event loops compared: stock asyncio, uvloop, globeflower.

    bench_asyncio.py [--loops asyncio,uvloop,globeflower] [--quick]

Each benchmark runs in a fresh process per loop; the table gives operations
per second, globeflower's ratio to each peer (> 1: globeflower faster) and,
with --cpu, the process's CPU time per operation in microseconds (client
and server share the process: for the network rows that is the CPU of one
request served plus its client side).
Benchmarks: call_soon (a callback re-scheduling itself), timers (call_later
0), tasks (create_task + await of a trivial coroutine), echo_proto (TCP
ping-pong over Protocols, 1 KiB messages), echo_streams (the same with
asyncio streams), connections (connect, one exchange, close).
"""

import argparse
import json
import os
import subprocess
import sys
import time

BENCHES = ("call_soon", "timers", "tasks", "echo_proto", "echo_streams", "connections")


def make_loop(name):
    import asyncio
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    import globeflower
    return globeflower.new_event_loop()


def bench_call_soon(loop, n):
    left = [n]

    def cb():
        left[0] -= 1
        if left[0]:
            loop.call_soon(cb)
        else:
            loop.stop()
    loop.call_soon(cb)
    loop.run_forever()
    return n


def bench_timers(loop, n):
    left = [n]

    def cb():
        left[0] -= 1
        if left[0]:
            loop.call_later(0, cb)
        else:
            loop.stop()
    loop.call_later(0, cb)
    loop.run_forever()
    return n


def bench_tasks(loop, n):
    async def leaf():
        return 1

    async def main():
        for _ in range(n):
            await loop.create_task(leaf())
    loop.run_until_complete(main())
    return n


def bench_echo_proto(loop, n):
    import asyncio
    msg = b"x" * 1024

    class Server(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.t.write(d)

    class Client(asyncio.Protocol):
        def __init__(self, done):
            self.done, self.left, self.got = done, n, 0

        def connection_made(self, t):
            self.t = t
            t.write(msg)

        def data_received(self, d):
            self.got += len(d)
            while self.got >= len(msg):
                self.got -= len(msg)
                self.left -= 1
                if not self.left:
                    self.done.set_result(None)
                    return
                self.t.write(msg)

    async def main():
        srv = await loop.create_server(Server, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        done = loop.create_future()
        t, _ = await loop.create_connection(lambda: Client(done), "127.0.0.1", port)
        await done
        t.close()
        srv.close()
        await srv.wait_closed()
    loop.run_until_complete(main())
    return n


def bench_echo_streams(loop, n):
    import asyncio
    msg = b"x" * 1023 + b"\n"

    async def handle(r, w):
        while True:
            line = await r.readline()
            if not line:
                break
            w.write(line)
        w.close()

    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(n):
            w.write(msg)
            await r.readline()
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()
    loop.run_until_complete(main())
    return n


def bench_connections(loop, n):
    """Short connections: connect, one request/response, close."""
    import asyncio

    class Server(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.t.write(d)
            self.t.close()

    class Client(asyncio.Protocol):
        def __init__(self, done):
            self.done = done

        def connection_made(self, t):
            t.write(b"ping")

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
    return n


SIZES = {"call_soon": 500000, "timers": 200000, "tasks": 100000, "echo_proto": 50000, "echo_streams": 20000, "connections": 5000}


def child(loop_name, bench, scale):
    import asyncio
    loop = make_loop(loop_name)
    asyncio.set_event_loop(loop)
    fn = globals()["bench_" + bench]
    n = max(1, int(SIZES[bench] * scale))
    fn(loop, max(1, n // 10))  # warm-up
    best, cpu = 0.0, None
    for _ in range(3):
        c0, t0 = time.process_time(), time.perf_counter()
        ops = fn(loop, n)
        rate = ops / (time.perf_counter() - t0)
        if rate > best:
            best, cpu = rate, (time.process_time() - c0) / ops * 1e6
    loop.close()
    print(json.dumps([best, cpu]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", default="asyncio,uvloop,globeflower")
    ap.add_argument("--benches", default=",".join(BENCHES))
    ap.add_argument("--quick", action="store_true", help="a tenth of the work")
    ap.add_argument("--cpu", action="store_true", help="also CPU microseconds per operation")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o.child:
        return child(o.child[0], o.child[1], o.scale)
    scale = 0.1 if o.quick else 1.0
    loops = o.loops.split(",")
    print(f"{'benchmark':<14}" + "".join(f"{l:>14}" for l in loops) + "".join(
        f"{'gfl/' + l:>14}" for l in loops if l != "globeflower")
        + ("".join(f"{'us/op ' + l:>18}" for l in loops) if o.cpu else ""))
    for b in o.benches.split(","):
        res, cpu = {}, {}
        for l in loops:
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", l, b, "--scale", str(scale)],
                               capture_output=True, text=True)
            out = json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None
            res[l], cpu[l] = out if out else (None, None)
            if res[l] is None:
                sys.stderr.write(p.stderr[-2000:])
        row = f"{b:<14}" + "".join(f"{res[l]:>14,.0f}" if res[l] else f"{'failed':>14}" for l in loops)
        g = res.get("globeflower")
        for l in loops:
            if l != "globeflower":
                row += f"{g / res[l]:>14.2f}" if g and res[l] else f"{'-':>14}"
        if o.cpu:
            row += "".join(f"{cpu[l]:>18.2f}" if cpu.get(l) else f"{'-':>18}" for l in loops)
        print(row, flush=True)


if __name__ == "__main__":
    main()
