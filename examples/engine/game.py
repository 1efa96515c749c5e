"""The engine's Python half: connects to Lua's TCP server with asyncio
streams, exports py.square / py.fail / py.echo, and every 100 ms calls
Lua's exports and the plugin, reporting each checked exchange to the engine
(engine.report). The engine calls start(capsule) once and finish() at the
end; everything else runs on the engine's loop while it pumps frames."""

import asyncio

import globeflower

loop = None
main_task = None
running = True
FAILURE = ValueError("from python")  # raised by py.fail, must come home as itself


async def square(d):
    await asyncio.sleep(0)  # a real hop inside the export
    return d["n"] * d["n"]


def fail(message=None):
    if message is None:
        # The same object every time: drop the traceback its last trip left
        # on it, or each raise would add to it.
        raise FAILURE.with_traceback(None)
    raise ValueError(message)


def echo(x):
    return x


def start(capsule):
    global loop
    loop = globeflower.Loop.from_capsule(capsule)  # attaches; the engine owns it
    asyncio.set_event_loop(loop)
    globeflower.export("py.square", square, loop=loop)
    globeflower.export("py.fail", fail, loop=loop)
    globeflower.export("py.echo", echo, loop=loop)
    global main_task
    main_task = loop.create_task(main())


def finish():
    global running
    running = False
    main_task.cancel()  # out of its sleep; it closes its connection


async def frame():
    return await globeflower.call("engine.frame")


async def report(kind, start, ok, detail=""):
    await globeflower.call("engine.report", {
        "kind": kind, "start": start, "finish": await frame(), "ok": bool(ok), "detail": detail,
    })


async def main():
    example = globeflower.plugin("example")
    while running and "lua.port" not in globeflower.exports():
        await asyncio.sleep(0.01)
    port = await globeflower.call("lua.port")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sentinel = object()  # crosses to Lua opaque, must come back as itself
    i = 0
    while running:
        i += 1
        # Python -> Lua over TCP (asyncio streams on the core's transports).
        t0 = await frame()
        writer.write(b"ping %d\n" % i)
        line = await reader.readline()
        await report("python->lua tcp", t0, line == b"lua:ping %d\n" % i, repr(line))

        # Python -> Lua export with nested data and a Python object.
        t0 = await frame()
        nested = [1, [2.5, {"k": b"\x00\xff", "t": (True, None)}]]
        r = await globeflower.call("lua.greet", {"name": "py", "obj": sentinel, "nested": nested})
        ok = (r["greeting"] == "hello py" and r["seen"]["obj"] is sentinel
              and r["seen"]["nested"] == [1, [2.5, {"k": b"\x00\xff", "t": [True, None]}]]
              and r["list"] == [1, 2, 3])
        await report("python->lua", t0, ok, repr(r))

        # Python's exception through Lua and back: the very same object.
        t0 = await frame()
        try:
            await globeflower.call("lua.relay")
            ok, detail = False, "lua.relay did not raise"
        except ValueError as e:
            ok, detail = e is FAILURE, "got %r" % (e,)
        await report("python error->lua->python", t0, ok, detail)

        # Python -> plugin: sync and async.
        t0 = await frame()
        total = example.add(i, 1)
        echoed = await example.sleep_then_echo(0, {"a": [1, 2], "s": sentinel})
        await report("python->plugin", t0, total == i + 1 and echoed["a"] == [1, 2] and echoed["s"] is sentinel,
                     "add=%r echo=%r" % (total, echoed))

        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            break
    writer.close()
    await writer.wait_closed()
