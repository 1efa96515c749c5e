"""The globeflower Python binding's own tests (CPython's test_asyncio runs
separately, see run_test_asyncio.py)."""

import asyncio
import contextvars
import socket
import threading
import time
import unittest

import globeflower


class LoopTestCase(unittest.TestCase):
    def setUp(self):
        self.loop = globeflower.new_event_loop()

    def tearDown(self):
        self.loop.close()


class TestScheduling(LoopTestCase):
    def test_is_an_asyncio_loop(self):
        self.assertIsInstance(self.loop, asyncio.AbstractEventLoop)
        self.assertFalse(self.loop.is_running())
        self.assertFalse(self.loop.is_closed())

    def test_call_soon_order_and_handles(self):
        out = []
        h = self.loop.call_soon(out.append, 1)
        self.assertIsInstance(h, asyncio.Handle)
        self.loop.call_soon(out.append, 2)
        c = self.loop.call_soon(out.append, "cancelled")
        c.cancel()
        self.assertTrue(c.cancelled())
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(out, [1, 2])

    def test_timers(self):
        out = []
        t0 = self.loop.time()
        h = self.loop.call_later(0.02, out.append, "b")
        self.assertIsInstance(h, asyncio.TimerHandle)
        self.assertAlmostEqual(h.when(), t0 + 0.02, delta=0.01)
        self.loop.call_at(t0 + 0.01, out.append, "a")
        x = self.loop.call_later(0.015, out.append, "x")
        x.cancel()
        self.loop.call_later(0.05, self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(out, ["a", "b"])
        self.assertGreaterEqual(self.loop.time() - t0, 0.05)

    def test_context(self):
        var = contextvars.ContextVar("var", default="default")
        ctx = contextvars.copy_context()
        ctx.run(var.set, "in ctx")
        seen = []
        h = self.loop.call_soon(lambda: seen.append(var.get()), context=ctx)
        get_context = getattr(h, "get_context", lambda: h._context)  # 3.12+
        self.assertIs(get_context(), ctx)
        self.loop.call_soon(lambda: seen.append(var.get()))
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(seen, ["in ctx", "default"])

    def test_threadsafe_wakes_the_loop(self):
        def later():
            time.sleep(0.05)
            self.loop.call_soon_threadsafe(self.loop.stop)
        threading.Thread(target=later).start()
        t0 = time.monotonic()
        self.loop.run_forever()
        self.assertLess(time.monotonic() - t0, 2)

    def test_exception_in_callback_goes_to_handler(self):
        errors = []
        self.loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))
        self.loop.call_soon(lambda: 1 / 0)
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(len(errors), 1)
        self.assertIsInstance(errors[0]["exception"], ZeroDivisionError)
        self.assertIn("Exception in callback", errors[0]["message"])

    def test_keyboard_interrupt_propagates(self):
        def boom():
            raise KeyboardInterrupt
        out = []
        self.loop.call_soon(boom)
        self.loop.call_soon(out.append, 1)
        with self.assertRaises(KeyboardInterrupt):
            self.loop.run_forever()
        # what was ready behind it still runs next time
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()
        self.assertEqual(out, [1])

    def test_run_until_complete_and_tasks(self):
        async def main():
            await asyncio.sleep(0.01)
            return 42
        self.assertEqual(self.loop.run_until_complete(main()), 42)

    def test_readers(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        got = []

        def on_read():
            got.append(a.recv(100))
            self.loop.remove_reader(a)
            self.loop.stop()
        self.loop.add_reader(a, on_read)
        self.loop.call_later(0.01, b.send, b"ping")
        self.loop.run_forever()
        self.assertEqual(got, [b"ping"])


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Buffered(asyncio.BufferedProtocol):
    def __init__(self, done):
        self.buf = bytearray(16)
        self.data = bytearray()
        self.done = done

    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"hello buffered")

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, n):
        self.data += self.buf[:n]
        if len(self.data) >= 14:
            self.transport.close()

    def connection_lost(self, exc):
        self.done.set_result(bytes(self.data))


class TestTransports(LoopTestCase):
    def test_tcp_echo(self):
        async def main():
            srv = await self.loop.create_server(Echo, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            self.assertIsInstance(w.transport, asyncio.Transport)
            self.assertEqual(w.get_extra_info("peername"), ("127.0.0.1", port))
            w.write(b"x" * 100000)
            data = await r.readexactly(100000)
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            return data
        self.assertEqual(self.loop.run_until_complete(main()), b"x" * 100000)

    def test_server_side_extra_info(self):
        async def main():
            accepted = self.loop.create_future()

            class P(Echo):
                def connection_made(self, transport):
                    super().connection_made(transport)
                    accepted.set_result(transport)
            srv = await self.loop.create_server(P, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            t = await accepted
            self.assertIsInstance(t, asyncio.Transport)
            sock = t.get_extra_info("socket")
            self.assertEqual(sock.getsockname(), ("127.0.0.1", port))
            self.assertEqual(t.get_extra_info("sockname"), ("127.0.0.1", port))
            self.assertEqual(t.get_extra_info("peername"), w.get_extra_info("sockname"))
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            # still answered once closed, as on the stock loop
            self.assertEqual(t.get_extra_info("sockname"), ("127.0.0.1", port))
        self.loop.run_until_complete(main())

    def test_buffered_protocol(self):
        async def main():
            srv = await self.loop.create_server(Echo, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            done = self.loop.create_future()
            await self.loop.create_connection(lambda: Buffered(done), "127.0.0.1", port)
            data = await done
            srv.close()
            await srv.wait_closed()
            return data
        self.assertEqual(self.loop.run_until_complete(main()), b"hello buffered")


class TestPipes(LoopTestCase):
    def test_pipes(self):
        import os

        async def main():
            rfd, wfd = os.pipe()
            rpipe, wpipe = open(rfd, "rb", 0), open(wfd, "wb", 0)
            reader = asyncio.StreamReader()
            rt, _ = await self.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), rpipe)
            wt, _ = await self.loop.connect_write_pipe(asyncio.Protocol, wpipe)
            self.assertIsInstance(rt, asyncio.ReadTransport)
            self.assertIsInstance(wt, asyncio.WriteTransport)
            self.assertIs(rt.get_extra_info("pipe"), rpipe)
            wt.write(b"through the pipe")
            wt.close()
            return await reader.read()
        self.assertEqual(self.loop.run_until_complete(main()), b"through the pipe")

    def test_subprocess(self):
        async def main():
            p = await asyncio.create_subprocess_exec(
                "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            out, _ = await p.communicate(b"hello child")
            return out, p.returncode
        asyncio.set_event_loop(self.loop)
        try:
            self.assertEqual(self.loop.run_until_complete(main()), (b"hello child", 0))
        finally:
            asyncio.set_event_loop(None)


class TestEntryPoints(unittest.TestCase):
    def test_run(self):
        async def main():
            return type(asyncio.get_running_loop())
        self.assertIs(globeflower.run(main()), globeflower.Loop)

    def test_policy(self):
        old = asyncio.get_event_loop_policy()
        try:
            globeflower.install()
            loop = asyncio.new_event_loop()
            self.assertIsInstance(loop, globeflower.Loop)
            loop.close()
        finally:
            asyncio.set_event_loop_policy(old)

    def test_capsules(self):
        import ctypes
        cap = globeflower._core._C_API
        self.assertEqual(type(cap).__name__, "PyCapsule")
        get = ctypes.pythonapi.PyCapsule_IsValid
        get.restype = ctypes.c_int
        get.argtypes = [ctypes.py_object, ctypes.c_char_p]
        self.assertTrue(get(cap, b"globeflower._core._C_API"))
        loop = globeflower.new_event_loop()
        try:
            self.assertTrue(get(loop._capsule(), b"globeflower.loop"))
            # A second Python loop object on the same core loop.
            twin = globeflower.Loop.from_capsule(loop._capsule())
            out = []
            twin.call_soon(out.append, 1)
            twin.call_soon(twin.stop)
            twin.run_forever()
            self.assertEqual(out, [1])
            twin.close()
        finally:
            loop.close()


if __name__ == "__main__":
    unittest.main()
