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

    def test_create_future_and_get_debug(self):
        fut = self.loop.create_future()
        self.assertIsInstance(fut, asyncio.Future)
        self.assertIs(fut.get_loop(), self.loop)
        initial = self.loop.get_debug()  # True under -X dev
        self.loop.set_debug(not initial)
        self.assertIs(self.loop.get_debug(), not initial)
        self.loop.set_debug(initial)
        self.assertIs(self.loop.get_debug(), initial)
        fut.set_result(7)
        self.assertEqual(self.loop.run_until_complete(fut), 7)

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
            peer = w.get_extra_info("sockname")
            self.assertEqual(t.get_extra_info("peername"), peer)
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            # still answered once closed, as on the stock loop
            self.assertEqual(t.get_extra_info("sockname"), ("127.0.0.1", port))
            self.assertEqual(t.get_extra_info("peername"), peer)
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

    def test_writes_of_one_callback(self):
        # Bytes written in one iteration are sent together at its end:
        # order, mutable buffers, close, write-buffer size and pause_writing
        # must still look as if each write() had gone out at once.
        async def main():
            accepted = self.loop.create_future()

            class P(asyncio.Protocol):
                paused = 0

                def connection_made(self, transport):
                    accepted.set_result(transport)

                def pause_writing(self):
                    self.paused += 1

                def resume_writing(self):
                    self.paused -= 1
            srv = await self.loop.create_server(P, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            t = await accepted
            mutable = bytearray(b"c" * 10)
            t.write(b"a" * 65536)
            t.write(b"b" * 36864)
            t.write(mutable)
            mutable[:] = b"X" * 10  # written already: must not show
            t.write(memoryview(b"d" * 5))
            t.write(b"e")
            self.assertEqual(t.get_write_buffer_size(), 0)  # all in the kernel
            want = b"a" * 65536 + b"b" * 36864 + b"c" * 10 + b"d" * 5 + b"e"
            self.assertEqual(await r.readexactly(len(want)), want)

            # Above the high-water mark, pause_writing comes inside write().
            t.set_write_buffer_limits(high=65536)
            big = b"z" * (32 * 1024 * 1024)  # more than loopback buffers hold
            t.write(b"y")
            t.write(big)
            self.assertEqual(t.get_protocol().paused, 1)
            self.assertGreater(t.get_write_buffer_size(), 65536)
            self.assertEqual(await r.readexactly(1 + len(big)), b"y" + big)
            await asyncio.sleep(0)
            self.assertEqual(t.get_protocol().paused, 0)

            # Callbacks of one iteration: still in call order.
            for piece in (b"1", bytearray(b"2"), b"3", memoryview(b"4"), b"5"):
                self.loop.call_soon(t.write, piece)
            self.assertEqual(await r.readexactly(5), b"12345")

            # write() then close() in one callback: the data, then EOF.
            t.write(b"last ")
            t.write(b"words")
            t.close()
            self.assertEqual(await r.read(), b"last words")
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
        self.loop.run_until_complete(main())


class TestCoreClient(LoopTestCase):
    """create_connection's plain TCP path, getaddrinfo and getnameinfo run
    on the core (gfl_create_connection, gfl_getaddrinfo, gfl_getnameinfo)."""

    def test_getaddrinfo_matches_socket(self):
        for args, kw in ((("127.0.0.1", 80), {"type": socket.SOCK_STREAM}),
                         (("localhost", "http"), {"type": socket.SOCK_STREAM, "family": socket.AF_INET}),
                         (("127.0.0.1", None), {"type": socket.SOCK_DGRAM})):
            got = self.loop.run_until_complete(self.loop.getaddrinfo(*args, **kw))
            self.assertEqual(got, socket.getaddrinfo(*args, **kw))
            self.assertIsInstance(got[0][0], socket.AddressFamily)
            self.assertIsInstance(got[0][1], socket.SocketKind)

    def test_getaddrinfo_error_is_gaierror(self):
        with self.assertRaises(socket.gaierror) as cm:
            self.loop.run_until_complete(self.loop.getaddrinfo("no-such-host.invalid", 80))
        self.assertLess(cm.exception.errno, 0)  # EAI_* codes, as socket's

    def test_getnameinfo(self):
        for sa in (("127.0.0.1", 80), ("::1", 80, 0, 0)):
            got = self.loop.run_until_complete(self.loop.getnameinfo(sa, socket.NI_NUMERICHOST))
            self.assertEqual(got, socket.getnameinfo(sa, socket.NI_NUMERICHOST))

    def test_create_connection_and_errors(self):
        async def main():
            srv = await self.loop.create_server(Echo, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            t, p = await self.loop.create_connection(Echo, "localhost", port, family=socket.AF_INET,
                                                     happy_eyeballs_delay=0.25, local_addr=("127.0.0.1", 0))
            self.assertIsInstance(t, asyncio.Transport)
            self.assertIsInstance(p, Echo)
            self.assertEqual(t.get_extra_info("peername"), ("127.0.0.1", port))
            self.assertEqual(t.get_extra_info("socket").getpeername(), ("127.0.0.1", port))
            t.close()
            srv.close()
            await srv.wait_closed()
            with self.assertRaises(ConnectionRefusedError) as cm:
                await self.loop.create_connection(Echo, "127.0.0.1", port)
            self.assertEqual(str(cm.exception), f"[Errno 111] Connect call failed ('127.0.0.1', {port})")
        self.loop.run_until_complete(main())

    def test_cancel_connect(self):
        async def main():
            # a black-holed address: the attempt stays pending until cancelled
            task = self.loop.create_task(self.loop.create_connection(Echo, "10.255.255.1", 9))
            await asyncio.sleep(0.05)
            if task.done():  # no route: failed at once
                task.exception()
                return self.skipTest("no black-holed address here")
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
        self.loop.run_until_complete(main())


class TestDatagrams(LoopTestCase):
    """UDP endpoints: asyncio's set-up, the core's data path."""

    def test_echo_and_errors(self):
        loop = self.loop

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, data, addr):
                self.t.sendto(data, addr)

        class Client(asyncio.DatagramProtocol):
            def __init__(self):
                self.got, self.errors, self.lost = [], [], loop.create_future()

            def connection_made(self, t):
                self.t = t

            def datagram_received(self, data, addr):
                self.got.append((data, addr))

            def error_received(self, exc):
                self.errors.append(exc)

            def connection_lost(self, exc):
                self.lost.set_result(exc)

        async def main():
            st, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
            addr = st.get_extra_info("sockname")
            self.assertIsInstance(st, asyncio.DatagramTransport)
            ct, cp = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
            ct.sendto(b"one", addr)
            ct.sendto(bytearray(b"two"), ("localhost", addr[1]))  # resolved first
            for _ in range(100):
                if len(cp.got) == 2:
                    break
                await asyncio.sleep(0.01)
            self.assertEqual(sorted(cp.got), [(b"one", addr), (b"two", addr)])
            with self.assertRaises(TypeError):
                ct.sendto("text", addr)
            ct.close()
            self.assertIsNone(await cp.lost)
            # a connected endpoint learns of ICMP port unreachable
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()
            s.close()
            ct, cp = await loop.create_datagram_endpoint(Client, remote_addr=dead)
            with self.assertRaises(ValueError):
                ct.sendto(b"x", ("127.0.0.2", 1))
            ct.sendto(b"x")
            for _ in range(100):
                if cp.errors:
                    break
                await asyncio.sleep(0.01)
            self.assertIsInstance(cp.errors[0], ConnectionRefusedError)
            ct.close()
            st.close()
            await cp.lost
        loop.run_until_complete(main())


class TestSockMethods(LoopTestCase):
    """loop.sock_* in C (sock.c): a syscall first, a core fd watcher when it
    would block, asyncio's selector semantics."""

    def pair(self):
        """A connected non-blocking TCP pair over loopback: (ours, peer)."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        a = socket.create_connection(ls.getsockname())
        b, _ = ls.accept()
        ls.close()
        a.setblocking(False)
        b.setblocking(False)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        return a, b

    def watching(self, sock, writer=False):
        return self.loop._get_watch(sock.fileno(), writer) is not None

    def test_recv_immediate_and_deferred(self):
        a, b = self.pair()
        loop = self.loop

        async def main():
            b.send(b"ready")
            await asyncio.sleep(0.01)
            call = loop.sock_recv(a, 100)
            self.assertTrue(asyncio.iscoroutine(call))
            self.assertEqual(await call, b"ready")
            self.assertFalse(self.watching(a))  # done at once: no watcher
            task = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0.01)
            self.assertFalse(task.done())
            self.assertTrue(self.watching(a))
            b.send(b"later")
            self.assertEqual(await task, b"later")
            self.assertFalse(self.watching(a))
            # recv_into / recvfrom_into into part of a buffer
            buf = bytearray(10)
            b.send(b"abc")
            self.assertEqual(await loop.sock_recv_into(a, memoryview(buf)[2:]), 3)
            self.assertEqual(bytes(buf[2:5]), b"abc")
            task = loop.create_task(loop.sock_recvfrom_into(a, buf, 4))
            await asyncio.sleep(0.01)
            b.send(b"123456")
            n, addr = await task
            self.assertEqual((n, bytes(buf[:4])), (4, b"1234"))
            self.assertEqual(await loop.sock_recv(a, 100), b"56")
            with self.assertRaisesRegex(ValueError, "nbytes is greater"):
                await loop.sock_recvfrom_into(a, buf, 11)
            with self.assertRaisesRegex(ValueError, "negative buffersize"):
                await loop.sock_recv(a, -1)
            with self.assertRaisesRegex(TypeError, "read-write"):
                await loop.sock_recv_into(a, b"read-only")
            b.close()
            self.assertEqual(await loop.sock_recv(a, 100), b"")  # EOF
        loop.run_until_complete(main())

    def test_large_sendall_to_a_slow_reader(self):
        a, b = self.pair()
        loop = self.loop
        data = bytes(range(256)) * (8 * 4096)  # 8 MiB

        async def reader():
            got = bytearray()
            while len(got) < len(data):
                chunk = await loop.sock_recv(b, 256 * 1024)
                if not chunk:
                    break
                got += chunk
                await asyncio.sleep(0.001)
            return bytes(got)

        async def main():
            rt = loop.create_task(reader())
            await loop.sock_sendall(a, data)
            self.assertFalse(self.watching(a, True))
            self.assertEqual(await rt, data)
        loop.run_until_complete(main())

    def test_cancel_removes_the_watcher(self):
        a, b = self.pair()
        loop = self.loop

        async def main():
            task = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0.01)
            self.assertTrue(self.watching(a))
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertFalse(self.watching(a))
            self.assertFalse(loop.remove_reader(a.fileno()))
            # the data that comes next goes to the next reader, not the old one
            b.send(b"x")
            self.assertEqual(await loop.sock_recv(a, 100), b"x")
            # a blocked sock_sendall, cancelled
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            with self.assertRaises(BlockingIOError):
                while True:
                    a.send(b" " * 65536)
            task = loop.create_task(loop.sock_sendall(a, b"y" * 65536))
            await asyncio.sleep(0.01)
            self.assertTrue(self.watching(a, True))
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertFalse(self.watching(a, True))
        loop.run_until_complete(main())

    def test_second_recv_replaces_the_first(self):
        # asyncio's selector loop: a second reader of the fd replaces the
        # first (which then never completes); cancelling the first must not
        # remove the second's watcher.
        a, b = self.pair()
        loop = self.loop

        async def main():
            first = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            second = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            first.cancel()
            await asyncio.sleep(0.01)
            self.assertTrue(self.watching(a))
            b.send(b"data")
            self.assertEqual(await second, b"data")
            self.assertTrue(first.cancelled())
        loop.run_until_complete(main())

    def test_connect_accept_and_refused(self):
        loop = self.loop

        async def main():
            ls = socket.socket()
            ls.bind(("127.0.0.1", 0))
            ls.listen()
            ls.setblocking(False)
            port = ls.getsockname()[1]
            accepting = loop.create_task(loop.sock_accept(ls))
            await asyncio.sleep(0.01)
            self.assertTrue(self.watching(ls))
            c = socket.socket()
            c.setblocking(False)
            await loop.sock_connect(c, ("localhost", port))  # resolved first
            conn, addr = await accepting
            self.assertIs(type(conn), socket.socket)
            self.assertEqual(conn.gettimeout(), 0.0)
            self.assertEqual(addr, c.getsockname())
            self.assertEqual(conn.getpeername(), c.getsockname())
            await loop.sock_sendall(c, b"ping")
            self.assertEqual(await loop.sock_recv(conn, 10), b"ping")
            for s in (c, conn, ls):
                s.close()
            c = socket.socket()
            c.setblocking(False)
            with self.assertRaises(ConnectionRefusedError) as cm:
                await loop.sock_connect(c, ("127.0.0.1", port))
            self.assertEqual(cm.exception.errno, 111)
            self.assertFalse(self.watching(c, True))
            c.close()
        loop.run_until_complete(main())

    def test_udp_sendto_recvfrom(self):
        loop = self.loop

        async def main():
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for x in (r, s):
                x.bind(("127.0.0.1", 0))
                x.setblocking(False)
                self.addCleanup(x.close)
            task = loop.create_task(loop.sock_recvfrom(r, 100))
            await asyncio.sleep(0.01)
            self.assertEqual(await loop.sock_sendto(s, b"hello", r.getsockname()), 5)
            self.assertEqual(await task, (b"hello", s.getsockname()))
            # a name: the socket module resolves it, as on the stock loop
            await loop.sock_sendto(s, b"again", ("localhost", r.getsockname()[1]))
            await asyncio.sleep(0.01)
            self.assertEqual(await loop.sock_recvfrom(r, 3), (b"aga", s.getsockname()))  # truncated
        loop.run_until_complete(main())

    def test_blocking_socket_rejected_in_debug_mode(self):
        a, b = self.pair()
        a.setblocking(True)
        loop = self.loop
        loop.set_debug(True)
        for call in (lambda: loop.sock_recv(a, 1), lambda: loop.sock_sendall(a, b"x"),
                     lambda: loop.sock_accept(a), lambda: loop.sock_recv_into(a, bytearray(1)),
                     lambda: loop.sock_connect(a, ("127.0.0.1", 1))):
            with self.assertRaisesRegex(ValueError, "the socket must be non-blocking"):
                loop.run_until_complete(call())
        loop.set_debug(False)
        # outside debug mode, asyncio's (blocking) behaviour
        loop.run_until_complete(loop.sock_sendall(a, b"z"))
        self.assertEqual(b.recv(1), b"z")

    def test_coroutine_protocol(self):
        a, b = self.pair()
        loop = self.loop

        async def main():
            # cancelled before its first step: the task throws into it
            task = loop.create_task(loop.sock_recv(a, 1))
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertFalse(self.watching(a))
            # closed before it ran: nothing was read
            loop.sock_recv(a, 1).close()
            b.send(b"k")
            await asyncio.sleep(0.01)
            call = loop.sock_recv(a, 1)
            self.assertEqual(await call, b"k")
            with self.assertRaisesRegex(RuntimeError, "cannot reuse"):
                await call
            task = loop.create_task(loop.sock_recv(a, 1))
            self.assertIn("sock_recv", repr(task))
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
        loop.run_until_complete(main())

    def test_ssl_socket_gets_asyncios_error(self):
        import ssl
        ctx = ssl.create_default_context()
        with ctx.wrap_socket(socket.socket(), server_hostname="x", do_handshake_on_connect=False) as s:
            with self.assertRaisesRegex(TypeError, "SSLSocket"):
                self.loop.run_until_complete(self.loop.sock_recv(s, 1))

    def test_fd_used_by_a_transport(self):
        a, b = self.pair()
        loop = self.loop

        async def main():
            t, _ = await loop.create_connection(asyncio.Protocol, sock=a)
            with self.assertRaisesRegex(RuntimeError, "is used by transport"):
                await loop.sock_recv(a, 1)
            t.close()
        loop.run_until_complete(main())


CTX = contextvars.ContextVar("CTX", default="unset")


class Recorder:
    """A protocol mixin: records CTX in every callback it gets."""

    def __init__(self, log, done=None):
        self.log, self.done = log, done

    def rec(self, name):
        self.log.append((name, CTX.get()))

    def connection_made(self, tr):
        self.rec("connection_made")
        self.tr = tr

    def data_received(self, data):
        self.rec("data_received")

    def eof_received(self):
        self.rec("eof_received")

    def get_buffer(self, hint):
        self.rec("get_buffer")
        return bytearray(1024)

    def buffer_updated(self, n):
        self.rec("buffer_updated")

    def connection_lost(self, exc):
        self.rec("connection_lost")
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def datagram_received(self, data, addr):
        self.rec("datagram_received")

    def error_received(self, exc):
        self.rec("error_received")

    def pipe_data_received(self, fd, data):
        self.rec("pipe_data_received")

    def pipe_connection_lost(self, fd, exc):
        self.rec("pipe_connection_lost")

    def process_exited(self):
        self.rec("process_exited")
        if self.done is not None and not self.done.done():
            self.done.set_result(None)


class RecProtocol(Recorder, asyncio.Protocol):
    pass


class RecBuffered(Recorder, asyncio.BufferedProtocol):
    pass


class RecDatagram(Recorder, asyncio.DatagramProtocol):
    pass


class RecSubprocess(Recorder, asyncio.SubprocessProtocol):
    pass


class TestContextVars(LoopTestCase):
    """Every protocol callback, and a server's protocol factory, runs in
    the context in which the connection, server or endpoint was created,
    as on the stock loop; CTX is set to something else meanwhile."""

    def check(self, log, value, names):
        self.assertTrue(log)
        got = {name for name, _ in log}
        self.assertTrue(set(names) <= got, (names, log))
        for name, seen in log:
            self.assertEqual(seen, value, (name, log))

    def test_tcp_server_and_client(self):
        server_log, client_log, factory_log = [], [], []

        async def main():
            loop = self.loop
            CTX.set("server")
            lost = loop.create_future()

            def factory():
                factory_log.append(CTX.get())
                CTX.set("per-connection")  # stays in this connection's context
                return RecProtocol(server_log, lost)
            srv = await loop.create_server(factory, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            CTX.set("client")
            client_lost = loop.create_future()
            for _ in range(2):  # the second connection starts from the server's value again
                tr, _ = await loop.create_connection(lambda: RecProtocol(client_log, client_lost), "127.0.0.1", port)
                CTX.set("elsewhere")
                tr.write(b"hello")
                await asyncio.sleep(0.05)
                tr.close()
                await asyncio.sleep(0.05)
                CTX.set("client")
            await lost
            srv.close()
            await srv.wait_closed()
        self.loop.run_until_complete(main())
        self.assertEqual(factory_log, ["server", "server"])
        self.check(server_log, "per-connection", ["connection_made", "data_received", "eof_received",
                                                  "connection_lost"])
        self.check(client_log, "client", ["connection_made", "connection_lost"])

    def test_client_on_a_socket_and_buffered_protocol(self):
        log = []

        async def main():
            loop = self.loop
            srv = await loop.create_server(lambda: RecProtocol([]), "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]

            async def send_and_close(reader, writer):
                writer.write(b"data for the buffered protocol")
                await writer.drain()
                writer.close()
            srv2 = await asyncio.start_server(send_and_close, "127.0.0.1", 0)
            port2 = srv2.sockets[0].getsockname()[1]
            CTX.set("buffered client")
            sock = socket.create_connection(("127.0.0.1", port2))
            sock.setblocking(False)
            done = loop.create_future()
            tr, _ = await loop.create_connection(lambda: RecBuffered(log, done), sock=sock)
            CTX.set("elsewhere")
            await done
            srv.close()
            srv2.close()
            await srv.wait_closed()
            await srv2.wait_closed()
        self.loop.run_until_complete(main())
        self.check(log, "buffered client", ["connection_made", "get_buffer", "buffer_updated",
                                            "eof_received", "connection_lost"])

    def test_unix_server(self):
        import os
        import tempfile
        log, factory_log = [], []
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)

        async def main():
            loop = self.loop
            path = os.path.join(tmp.name, "sock")
            CTX.set("unix server")
            lost = loop.create_future()

            def factory():
                factory_log.append(CTX.get())
                return RecProtocol(log, lost)
            srv = await loop.create_unix_server(factory, path)
            CTX.set("elsewhere")
            r, w = await asyncio.open_unix_connection(path)
            w.write(b"x")
            w.write_eof()
            await lost
            w.close()
            srv.close()
            await srv.wait_closed()
        self.loop.run_until_complete(main())
        self.assertEqual(factory_log, ["unix server"])
        self.check(log, "unix server", ["connection_made", "data_received", "eof_received", "connection_lost"])

    def test_pipes(self):
        import os
        read_log, write_log = [], []

        async def main():
            loop = self.loop
            rfd, wfd = os.pipe()
            CTX.set("pipes")
            rdone, wdone = loop.create_future(), loop.create_future()
            rt, _ = await loop.connect_read_pipe(lambda: RecProtocol(read_log, rdone), open(rfd, "rb", 0))
            wt, _ = await loop.connect_write_pipe(lambda: RecProtocol(write_log, wdone), open(wfd, "wb", 0))
            CTX.set("elsewhere")
            wt.write(b"through")
            wt.close()
            await rdone
            await wdone
        self.loop.run_until_complete(main())
        self.check(read_log, "pipes", ["connection_made", "data_received", "eof_received", "connection_lost"])
        self.check(write_log, "pipes", ["connection_made", "connection_lost"])

    def test_datagrams(self):
        log = []

        async def main():
            loop = self.loop
            CTX.set("udp")
            done = loop.create_future()
            tr, _ = await loop.create_datagram_endpoint(lambda: RecDatagram(log, done),
                                                        local_addr=("127.0.0.1", 0))
            addr = tr.get_extra_info("sockname")
            # a connected endpoint to a closed port: error_received
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
            probe.close()
            tr2, _ = await loop.create_datagram_endpoint(lambda: RecDatagram(log), remote_addr=("127.0.0.1", closed_port))
            CTX.set("elsewhere")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b"ping", addr)
            tr2.sendto(b"nobody")
            await asyncio.sleep(0.1)
            tr2.sendto(b"nobody")
            await asyncio.sleep(0.1)
            tr.close()
            tr2.close()
            await done
        self.loop.run_until_complete(main())
        self.check(log, "udp", ["connection_made", "datagram_received", "error_received", "connection_lost"])

    def test_subprocess(self):
        log = []

        async def main():
            loop = self.loop
            CTX.set("subprocess")
            done = loop.create_future()
            tr, _ = await loop.subprocess_exec(lambda: RecSubprocess(log, done), "sh", "-c", "echo out")
            CTX.set("elsewhere")
            await done
            await asyncio.sleep(0.05)
            tr.close()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(main())
        finally:
            asyncio.set_event_loop(None)
        self.check(log, "subprocess", ["connection_made", "pipe_data_received", "process_exited"])


class TestSendfile(LoopTestCase):
    """loop.sendfile / sock_sendfile: os.sendfile into our transports'
    sockets, with asyncio's fallback rules."""

    def serve(self, received, done):
        class Sink(asyncio.Protocol):
            def data_received(self, data):
                received.extend(data)

            def eof_received(self):
                done.set_result(None)
        return self.loop.create_server(Sink, "127.0.0.1", 0)

    def payload_file(self, size=200 * 1024):
        import os
        import tempfile
        f = tempfile.TemporaryFile()
        data = os.urandom(size)
        f.write(data)
        f.seek(0)
        return f, data

    def test_transport_sendfile_is_zero_copy(self):
        import os
        calls = []
        real = os.sendfile

        def spy(*args):
            calls.append(args)
            return real(*args)

        async def main():
            received, done = bytearray(), self.loop.create_future()
            srv = await self.serve(received, done)
            port = srv.sockets[0].getsockname()[1]
            tr, _ = await self.loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            f, data = self.payload_file()
            with f:
                tr.write(b"head:")  # sent before the file
                os.sendfile = spy
                try:
                    n = await self.loop.sendfile(tr, f)
                    m = await self.loop.sendfile(tr, f, offset=10, count=1000)
                finally:
                    os.sendfile = real
                self.assertTrue(tr.is_reading(), "reading resumes after sendfile")
                self.assertEqual(f.tell(), 10 + 1000)
                tr.write(b":tail")
                tr.write_eof()
                await done
            tr.close()
            srv.close()
            await srv.wait_closed()
            return n, m, bytes(received), data
        n, m, received, data = self.loop.run_until_complete(main())
        self.assertEqual((n, m), (len(data), 1000))
        self.assertTrue(received == b"head:" + data + data[10:1010] + b":tail")
        self.assertTrue(calls, "os.sendfile was used")

    def test_fallback_rules(self):
        async def main():
            received, done = bytearray(), self.loop.create_future()
            srv = await self.serve(received, done)
            port = srv.sockets[0].getsockname()[1]
            tr, _ = await self.loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            import io
            import tempfile
            with tempfile.TemporaryFile("w+") as text:
                with self.assertRaisesRegex(ValueError, "binary mode"):  # asyncio's checks
                    await self.loop.sendfile(tr, text)
            mem = io.BytesIO(b"no file descriptor" * 100)
            with self.assertRaises(asyncio.SendfileNotAvailableError):
                await self.loop.sendfile(tr, mem, fallback=False)
            mem.seek(0)
            n = await self.loop.sendfile(tr, mem)  # the fallback reads and writes
            tr.write_eof()
            await done
            tr.close()
            srv.close()
            await srv.wait_closed()
            return n, bytes(received)
        n, received = self.loop.run_until_complete(main())
        self.assertEqual(n, 1800)
        self.assertEqual(received, b"no file descriptor" * 100)

    def test_server_side_and_sock_sendfile(self):
        # The accepted connection's transport (the core made it) sends the
        # file; sock_sendfile on a plain non-blocking socket too.
        async def main():
            f, data = self.payload_file()
            sent = self.loop.create_future()

            class Sender(asyncio.Protocol):
                def connection_made(self, tr):
                    async def send():
                        try:
                            n = await tr._loop.sendfile(tr, f)
                            tr.close()
                            sent.set_result(n)
                        except BaseException as exc:
                            sent.set_exception(exc)
                    tr._loop.create_task(send())
            srv = await self.loop.create_server(Sender, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            got = await r.read()
            w.close()
            n = await sent
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            f.seek(0)
            m = await self.loop.sock_sendfile(a, f, 0, 5000)
            a.close()
            back = b.recv(10000)
            b.close()
            f.close()
            srv.close()
            await srv.wait_closed()
            return n, got, m, back, data
        n, got, m, back, data = self.loop.run_until_complete(main())
        self.assertEqual(n, len(data))
        self.assertTrue(got == data)
        self.assertEqual(m, 5000)
        self.assertTrue(back == data[:5000])


class TestAddressErrors(LoopTestCase):
    """The stock loop's exception types; ports above 65535 are refused (the
    core checks them: glibc alone would wrap 73616 to 8080)."""

    def test_getaddrinfo_none_none_is_a_gaierror(self):
        with self.assertRaises(socket.gaierror):
            self.loop.run_until_complete(self.loop.getaddrinfo(None, None))

    def test_sock_connect_port_out_of_range(self):
        async def main():
            with socket.socket() as s:
                s.setblocking(False)
                with self.assertRaisesRegex(OverflowError, "port must be 0-65535"):
                    await self.loop.sock_connect(s, ("127.0.0.1", 70000))
                with self.assertRaises(OverflowError):
                    await self.loop.sock_connect(s, ("127.0.0.1", -1))
        self.loop.run_until_complete(main())

    def test_connect_and_serve_refuse_wrapped_ports(self):
        async def main():
            srv = await self.loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            try:
                with self.assertRaisesRegex(OverflowError, "port must be 0-65535"):
                    await self.loop.create_connection(asyncio.Protocol, "127.0.0.1", port + 65536)
                with self.assertRaisesRegex(OverflowError, "port must be 0-65535"):
                    await self.loop.create_connection(asyncio.Protocol, "127.0.0.1", str(port + 65536))
                with self.assertRaisesRegex(OverflowError, "port must be 0-65535"):
                    await asyncio.open_connection("127.0.0.1", port + 65536)
                with self.assertRaisesRegex(OverflowError, "port must be 0-65535"):
                    await self.loop.create_server(asyncio.Protocol, "127.0.0.1", 99999)
                with self.assertRaisesRegex(OverflowError, "port must be 0-65535"):
                    await self.loop.getaddrinfo("127.0.0.1", 70000)
            finally:
                srv.close()
                await srv.wait_closed()
        self.loop.run_until_complete(main())


class TestAcceptErrors(unittest.TestCase):
    """accept() failing with EMFILE reaches loop.set_exception_handler (as on
    the stock loop, not the core's stderr printer), and the loop's backend
    fd recovers afterwards: a 0.5 s sleep then costs a wakeup or two, not
    500 polls in 1 ms slices."""

    PROGRAM = """
import asyncio, os, resource, socket, globeflower
def switches():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
async def main():
    loop = asyncio.get_running_loop()
    seen = []
    loop.set_exception_handler(lambda l, ctx: seen.append(ctx))
    srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    client = socket.create_connection(srv.sockets[0].getsockname())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    hog = []
    try:
        while True:
            hog.append(os.dup(0))
    except OSError:
        pass
    await asyncio.sleep(0.3)  # accept fails; the first timed wait too
    for fd in hog:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    await asyncio.sleep(0.05)
    before = switches()
    await asyncio.sleep(0.5)
    after = switches()
    client.close()
    srv.close()
    await srv.wait_closed()
    exc = seen[0].get("exception") if seen else None
    print(len(seen), seen[0]["message"] if seen else "", type(exc).__name__, getattr(exc, "errno", None), after - before)
globeflower.run(main())
"""

    def test_emfile_reaches_the_handler_and_the_loop_recovers(self):
        import errno
        import subprocess
        import sys
        out = subprocess.run([sys.executable, "-c", self.PROGRAM], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertNotIn("Too many open files", out.stderr, "nothing on the core's stderr printer")
        n, rest = out.stdout.split(" ", 1)
        message, rest = rest.rsplit(" ", 3)[0], rest.rsplit(" ", 3)[1:]
        self.assertGreaterEqual(int(n), 1)
        self.assertEqual(message, "socket.accept() out of system resource")
        self.assertEqual(rest[0], "OSError")
        self.assertEqual(int(rest[1]), errno.EMFILE)
        self.assertLess(int(rest[2]), 50, "the loop still polls in 1 ms slices")


class TestDebugMode(LoopTestCase):
    def test_one_slow_callback_report_in_asyncio_words(self):
        import io
        import logging
        import re
        import subprocess
        import sys
        # The core's own report goes to stderr: run a child and read both.
        program = (
            "import asyncio, time, globeflower\n"
            "async def main():\n"
            "    loop = asyncio.get_running_loop()\n"
            "    loop.slow_callback_duration = 0.05\n"
            "    loop.call_soon(time.sleep, 0.1)\n"
            "    await asyncio.sleep(0.2)\n"
            "    class P(asyncio.Protocol):\n"
            "        def data_received(self, d): time.sleep(0.1)\n"
            "    srv = await loop.create_server(P, '127.0.0.1', 0)\n"
            "    r, w = await asyncio.open_connection(*srv.sockets[0].getsockname())\n"
            "    w.write(b'x'); await w.drain(); await asyncio.sleep(0.3)\n"
            "    w.close(); srv.close(); await srv.wait_closed()\n"
            "globeflower.run(main(), debug=True)\n")
        out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [l for l in out.stderr.splitlines() if "took" in l]
        self.assertEqual(len(lines), 2, out.stderr)
        self.assertRegex(lines[0], r"^Executing <Handle sleep\(0\.1\) created at .*> took 0\.1\d\d seconds$")
        self.assertRegex(lines[1], r"^Executing <I/O callback of <Loop .*>> took 0\.1\d\d seconds$")
        self.assertNotRegex(out.stderr, r"0x[0-9a-f]{6,}", "no raw pointers")


class TestSignals(unittest.TestCase):
    def test_interrupt_ends_a_blocking_poll(self):
        # The core polls without the GIL: a signal must still end the poll.
        import os, signal
        if threading.current_thread() is not threading.main_thread():
            self.skipTest("signals go to the main thread")
        loop = globeflower.new_event_loop()
        try:
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
            t0 = time.monotonic()
            with self.assertRaises(KeyboardInterrupt):
                loop.run_forever()
            self.assertLess(time.monotonic() - t0, 2)
        finally:
            loop.close()

    def test_close_from_another_thread(self):
        loop = globeflower.new_event_loop()
        loop.run_until_complete(asyncio.sleep(0))
        th = threading.Thread(target=loop.close)
        th.start()
        th.join()
        self.assertTrue(loop.is_closed())


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

    def test_pipes_work_in_one_direction(self):
        # As asyncio's pipe transports: a read pipe has no write side
        # (AttributeError), a write pipe refuses the read side
        # (NotImplementedError), and neither supports sendfile.
        import os
        import tempfile

        async def main():
            rfd, wfd = os.pipe()
            rpipe, wpipe = open(rfd, "rb", 0), open(wfd, "wb", 0)
            rt, _ = await self.loop.connect_read_pipe(asyncio.Protocol, rpipe)
            wt, _ = await self.loop.connect_write_pipe(asyncio.Protocol, wpipe)
            for name in ("write", "writelines", "write_eof", "can_write_eof", "get_write_buffer_size",
                         "get_write_buffer_limits", "set_write_buffer_limits"):
                self.assertFalse(hasattr(rt, name), name)
                with self.assertRaises(AttributeError):
                    getattr(rt, name)
                self.assertNotIn(name, dir(rt))
            self.assertTrue(rt.is_reading())
            rt.pause_reading()
            self.assertFalse(rt.is_reading())
            rt.resume_reading()
            for name in ("pause_reading", "resume_reading", "is_reading"):
                with self.assertRaises(NotImplementedError):
                    getattr(wt, name)()
            self.assertIsInstance(rt, asyncio.ReadTransport)
            self.assertIsInstance(wt, asyncio.WriteTransport)
            wt.set_write_buffer_limits(10, 5)
            self.assertEqual(wt.get_write_buffer_limits(), (5, 10))
            self.assertTrue(wt.can_write_eof())
            with tempfile.TemporaryFile() as f:
                f.write(b"data")
                f.seek(0)
                with self.assertRaisesRegex(RuntimeError, "not supported"):
                    await self.loop.sendfile(wt, f)
                with self.assertRaisesRegex(RuntimeError, "not supported"):
                    await self.loop.sendfile(rt, f)
            rt.close()
            wt.close()
            await asyncio.sleep(0)
        self.loop.run_until_complete(main())

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

    def run_subprocesses(self, main):
        asyncio.set_event_loop(self.loop)
        try:
            return self.loop.run_until_complete(main())
        finally:
            asyncio.set_event_loop(None)

    def test_subprocess_exit_status_without_a_child_watcher(self):
        import os
        import signal
        import sys

        async def main():
            threads = threading.active_count()
            ok = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
            bad = await asyncio.create_subprocess_shell("exit 7")
            slow = await asyncio.create_subprocess_exec("sleep", "30")
            # The loop watches its children itself: no watcher thread.
            self.assertEqual(threading.active_count(), threads)
            slow.send_signal(signal.SIGTERM)
            codes = list(await asyncio.gather(ok.wait(), bad.wait(), slow.wait()))
            many = [await asyncio.create_subprocess_exec("true") for _ in range(50)]
            codes.append(set(await asyncio.gather(*(p.wait() for p in many))))
            return codes
        self.assertEqual(self.run_subprocesses(main), [0, 7, -signal.SIGTERM, {0}])
        self.assertEqual(self.loop._gfl_children, {})
        with self.assertRaises(ChildProcessError):  # every child reaped: no zombie
            os.waitpid(-1, os.WNOHANG)

    def test_subprocess_kill_on_close_and_bad_program(self):
        async def main():
            p = await asyncio.create_subprocess_exec("sleep", "30")
            p._transport.close()  # kills the child; the exit still arrives
            code = await p.wait()
            with self.assertRaises(FileNotFoundError):
                await asyncio.create_subprocess_exec("/nonexistent/program")
            return code
        self.assertEqual(self.run_subprocesses(main), -9)

    def test_subprocess_honours_an_installed_child_watcher(self):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy = asyncio.get_event_loop_policy()
            watcher = asyncio.ThreadedChildWatcher()
            policy.set_child_watcher(watcher)
            try:
                async def main():
                    p = await asyncio.create_subprocess_shell("exit 3")
                    return await p.wait(), watcher._threads.copy() != {} or p.pid
                code, _ = self.run_subprocesses(main)
            finally:
                policy.set_child_watcher(None)
        self.assertEqual(code, 3)
        self.assertEqual(self.loop._gfl_children, {})

    def test_loop_close_leaves_transports_open(self):
        # As on the stock loop: loop.close() neither closes a transport nor
        # calls connection_lost; the user's pipe objects stay open (theirs
        # to close), and only the core's own dup()s are gone, so closing
        # the user's objects later cannot hit a reused descriptor.
        import gc
        import os
        lost = []

        class P(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.append(exc)

        rfd, wfd = os.pipe()
        rpipe, wpipe = open(rfd, "rb", 0), open(wfd, "wb", 0)

        async def connect():
            rt, _ = await self.loop.connect_read_pipe(P, rpipe)
            wt, _ = await self.loop.connect_write_pipe(P, wpipe)
            return rt, wt
        rt, wt = self.loop.run_until_complete(connect())
        self.loop.close()
        self.assertIn("open", repr(rt))
        self.assertIn("open", repr(wt))
        self.assertFalse(rt.is_closing())
        self.assertEqual(lost, [])
        self.assertFalse(rpipe.closed or wpipe.closed)
        os.write(wfd, b"x")  # both user descriptors still work
        self.assertEqual(os.read(rfd, 1), b"x")
        # New descriptors take the numbers the core's dup()s had.
        fresh = os.pipe()
        try:
            rpipe.close()
            wpipe.close()
            del rt, wt
            gc.collect()
            os.write(fresh[1], b"y")
            self.assertEqual(os.read(fresh[0], 1), b"y")
        finally:
            os.close(fresh[0])
            os.close(fresh[1])
        self.assertEqual(lost, [])


class TestHeap(unittest.TestCase):
    # Heap tuning changes the allocator of the whole process: an explicit
    # opt-in (globeflower.tune_heap() or GLOBEFLOWER_HEAP_TUNING=1), never a
    # side effect of making a loop. With it, bursts of 100 KiB objects
    # (stream buffers of many connections) keep their pages (heap.c).
    PROGRAM = (
        "import resource, sys, globeflower\n"
        "tuned_by_call = globeflower.tune_heap() if sys.argv[1] == 'call' else None\n"
        "globeflower.new_event_loop().close()\n"
        "def burst():\n"
        "    chunks = [b'x' * 102400 for _ in range(100)]\n"
        "burst()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5):\n"
        "    burst()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, globeflower.heap_tuned(), tuned_by_call)\n")

    def run_program(self, how="loop", **env):
        import os
        import subprocess
        import sys
        environ = dict(os.environ, **env)
        for name in ("GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                     "GLOBEFLOWER_HEAP_TUNING"):
            if name not in env:
                environ.pop(name, None)
        out = subprocess.run([sys.executable, "-c", self.PROGRAM, how], env=environ, check=True,
                             stdout=subprocess.PIPE, text=True).stdout.split()
        return int(out[0]), out[1], out[2]

    @unittest.skipUnless(__import__("platform").libc_ver()[0] == "glibc", "glibc's malloc only")
    @unittest.skipIf(__import__("os").environ.get("GFL_ASAN_RUNTIME"),
                     "sanitizer build: ASan's allocator replaces glibc's malloc, so glibc heap tuning "
                     "cannot show (skipped, not failed)")
    def test_off_by_default(self):
        # 5 bursts of 10 MiB: ~12,500 faults when the heap is trimmed after each.
        faults, tuned, _ = self.run_program()
        self.assertEqual(tuned, "False")
        self.assertGreater(faults, 5000)

    @unittest.skipUnless(__import__("platform").libc_ver()[0] == "glibc", "glibc's malloc only")
    @unittest.skipIf(__import__("os").environ.get("GFL_ASAN_RUNTIME"),
                     "sanitizer build: ASan's allocator replaces glibc's malloc, so glibc heap tuning "
                     "cannot show (skipped, not failed)")
    def test_environment_opt_in(self):
        faults, tuned, _ = self.run_program(GLOBEFLOWER_HEAP_TUNING="1")
        self.assertEqual(tuned, "True")
        self.assertLess(faults, 500)
        faults, tuned, _ = self.run_program(GLOBEFLOWER_HEAP_TUNING="0")
        self.assertEqual(tuned, "False")

    @unittest.skipUnless(__import__("platform").libc_ver()[0] == "glibc", "glibc's malloc only")
    @unittest.skipIf(__import__("os").environ.get("GFL_ASAN_RUNTIME"),
                     "sanitizer build: ASan's allocator replaces glibc's malloc, so glibc heap tuning "
                     "cannot show (skipped, not failed)")
    def test_explicit_call(self):
        faults, tuned, by_call = self.run_program("call")
        self.assertEqual((tuned, by_call), ("True", "True"))
        self.assertLess(faults, 500)
        # The program's own malloc settings win over both.
        _, tuned, by_call = self.run_program("call", GLOBEFLOWER_HEAP_TUNING="1",
                                             GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
        self.assertEqual((tuned, by_call), ("False", "False"))


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


class TestFramePump(LoopTestCase):
    """loop.run_once(timeout=0) / loop.run_for(max_seconds): frames of a
    Python-driven frame loop (pygame style)."""

    def test_run_once_never_blocks_and_counts(self):
        out = []
        self.loop.call_soon(out.append, 1)
        self.loop.call_soon(out.append, 2)
        self.loop.call_later(10, out.append, "late")
        t0 = time.monotonic()
        self.assertEqual(self.loop.run_once(), 2)
        self.assertEqual(self.loop.run_once(0), 0)
        self.assertLess(time.monotonic() - t0, 0.5)
        self.assertEqual(out, [1, 2])

    def test_run_once_timeout(self):
        t0 = time.monotonic()
        self.assertEqual(self.loop.run_once(0.05), 0)  # idle: waits, at most that
        dt = time.monotonic() - t0
        self.assertGreaterEqual(dt, 0.04)
        self.assertLess(dt, 1.0)
        out = []
        self.loop.call_later(0.02, out.append, 1)
        t0 = time.monotonic()
        ran = 0
        while not out and time.monotonic() - t0 < 2:
            ran += self.loop.run_once(5)  # the timer ends the wait
        self.assertEqual(out, [1])
        self.assertEqual(ran, 1)
        self.assertLess(time.monotonic() - t0, 1.0)
        self.loop.call_later(0.02, out.append, 2)
        while len(out) < 2 and time.monotonic() - t0 < 3:
            self.loop.run_once(None)  # until something happens
        self.assertEqual(out, [1, 2])

    def test_run_for_until_idle(self):
        out = []

        def chain(n):
            out.append(n)
            if n < 5:
                self.loop.call_soon(chain, n + 1)
        self.loop.call_soon(chain, 1)
        # Each call_soon waits for the next iteration: run_for runs them all.
        self.assertEqual(self.loop.run_for(1.0), 5)
        self.assertEqual(out, [1, 2, 3, 4, 5])
        self.assertEqual(self.loop.run_for(1.0), 0)  # idle: returns at once
        self.loop.call_soon(chain, 5)
        self.assertEqual(self.loop.run_for(0), 1)  # at least one iteration

    def test_running_loop_in_callbacks_only(self):
        seen = []
        self.loop.call_soon(lambda: seen.append(asyncio.get_running_loop()))
        self.loop.run_once()
        self.assertEqual(seen, [self.loop])
        self.assertIsNone(asyncio._get_running_loop())
        self.loop.call_soon(lambda: seen.append(asyncio.get_running_loop()))
        self.loop.run_for(0.1)
        self.assertEqual(seen, [self.loop, self.loop])
        self.assertIsNone(asyncio._get_running_loop())

    def test_frame_loop_drives_streams(self):
        async def handle(reader, writer):
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"frame\n")
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
            worker = await asyncio.to_thread(threading.get_ident)
            server.close()
            await server.wait_closed()
            return line, worker

        task = self.loop.create_task(main())
        t0 = time.monotonic()
        frames = 0
        while not task.done() and time.monotonic() - t0 < 10:
            self.loop.run_for(0.002)
            self.loop.run_once(0.005)
            frames += 1
        line, worker = task.result()
        self.assertEqual(line, b"FRAME\n")
        self.assertNotEqual(worker, threading.get_ident())
        self.assertGreater(frames, 1)

    def test_keyboard_interrupt_leaves_the_pump_then_goes_on(self):
        out = []

        def boom():
            raise KeyboardInterrupt
        self.loop.call_soon(boom)
        self.loop.call_soon(out.append, 1)
        with self.assertRaises(KeyboardInterrupt):
            self.loop.run_once()
        self.assertEqual(out, [])
        self.loop.run_once()  # the callback queued behind it, once
        self.assertEqual(out, [1])
        self.assertEqual(self.loop.run_once(), 0)
        self.loop.call_soon(boom)
        with self.assertRaises(KeyboardInterrupt):
            self.loop.run_for(1)
        self.assertEqual(self.loop.run_for(1), 0)

    def test_bad_arguments_and_states(self):
        for bad in (-1, float("nan"), "x"):
            with self.assertRaises((ValueError, TypeError)):
                self.loop.run_once(bad)
        for bad in (-1, float("nan"), None):
            with self.assertRaises((ValueError, TypeError)):
                self.loop.run_for(bad)
        with self.assertRaises(TypeError):
            self.loop.run_once(0, 1)
        with self.assertRaises(TypeError):
            self.loop.run_once(timeout=0, other=1)
        errors = []

        def nested():
            for call in (self.loop.run_once, lambda: self.loop.run_for(0)):
                try:
                    call()
                except RuntimeError as e:
                    errors.append(str(e))
        self.loop.call_soon(nested)
        self.loop.run_once()
        self.assertEqual(errors, ["This event loop is already running"] * 2)

        other = globeflower.new_event_loop()
        try:
            async def pump_other():
                other.run_once()
            with self.assertRaisesRegex(RuntimeError, "another loop is running"):
                self.loop.run_until_complete(pump_other())
        finally:
            other.close()
        self.loop.close()
        with self.assertRaisesRegex(RuntimeError, "closed"):
            self.loop.run_once()
        with self.assertRaisesRegex(RuntimeError, "closed"):
            self.loop.run_for(0)


class TestAttached(unittest.TestCase):
    """A Loop on a core loop it does not own (Loop.from_capsule)."""

    def setUp(self):
        self.host = globeflower.new_event_loop()
        self.loop = globeflower.Loop.from_capsule(self.host._capsule())

    def tearDown(self):
        self.loop.close()
        self.host.close()

    def test_is_attached(self):
        self.assertTrue(self.loop.is_attached())
        self.assertFalse(self.host.is_attached())

    def test_host_pump_sets_the_running_loop(self):
        seen = []
        self.loop.call_soon(lambda: seen.append(asyncio.get_running_loop()))
        self.host.run_once()  # the host pumps: our callback sees our loop
        self.assertEqual(seen, [self.loop])
        self.assertIsNone(asyncio._get_running_loop())

    def test_close_detaches(self):
        out = []
        self.loop.call_soon(out.append, "soon")
        self.loop.call_later(0.01, out.append, "later")
        r, w = socket.socketpair()
        self.loop.add_reader(r, out.append, "readable")
        w.send(b"x")
        self.loop.close()
        self.assertTrue(self.loop.is_closed())
        self.assertFalse(self.host.is_closed())
        self.host.call_soon(out.append, "host")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.05:
            self.host.run_once(0.01)
        self.assertEqual(out, ["host"])  # ours were dropped, the host's ran
        r.close()
        w.close()

    def test_close_from_another_thread(self):
        out = []
        r, w = socket.socketpair()
        self.loop.add_reader(r, out.append, "readable")
        self.loop.call_soon(out.append, "soon")
        th = threading.Thread(target=self.loop.close)
        th.start()
        th.join()
        self.assertTrue(self.loop.is_closed())
        w.send(b"x")
        for _ in range(3):
            self.host.run_once(0.01)  # the owner thread detaches it
        self.assertEqual(out, [])
        self.assertIsNone(self.loop._get_watch(r.fileno(), False))
        r.close()
        w.close()

    def test_close_aborts_our_transports(self):
        async def connect(port):
            return await asyncio.open_connection("127.0.0.1", port)
        lsock = socket.create_server(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        task = self.loop.create_task(connect(port))
        t0 = time.monotonic()
        while not task.done() and time.monotonic() - t0 < 5:
            self.host.run_once(0.01)
        reader, writer = task.result()
        peer, _ = lsock.accept()
        self.assertFalse(writer.is_closing())
        # asyncio's path (debug mode) uses the user's socket, which close()
        # leaves open as asyncio does: the test closes it.
        user_sock = writer.transport._sock
        self.loop.close()
        if user_sock is not None:
            user_sock.close()
        for _ in range(3):
            self.host.run_once(0.01)  # the core finishes the abort
        peer.settimeout(5)
        try:
            self.assertEqual(peer.recv(10), b"")
        except ConnectionResetError:
            pass  # aborted: a reset is the end too
        self.assertEqual(self.host.run_once(0), 0)  # nothing of ours left
        peer.close()
        lsock.close()

    def test_interrupt_reaches_the_pumping_loop(self):
        def boom():
            raise SystemExit(7)
        after = []
        self.loop.call_soon(boom)
        self.loop.call_soon(after.append, 1)
        with self.assertRaises(SystemExit):
            self.host.run_once()
        self.assertEqual(after, [])
        self.host.run_once()
        self.assertEqual(after, [1])


class TestTeardown(unittest.TestCase):
    def test_exit_with_an_attached_loop_open(self):
        import subprocess, sys, textwrap
        code = textwrap.dedent("""
            import asyncio, socket, globeflower
            host = globeflower.new_event_loop()
            loop = globeflower.Loop.from_capsule(host._capsule())
            lsock = socket.create_server(("127.0.0.1", 0))
            async def connect():
                return await asyncio.open_connection(*lsock.getsockname())
            t = loop.create_task(connect())
            while not t.done():
                host.run_once(0.01)
            t.result()
            loop.call_later(3600, print, "never")
            print("exiting")
        """)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "exiting")


def _make_tls_contexts(tmp):
    """A throwaway CA-less self-signed certificate for "localhost" (the
    openssl command), a server context with it and a client context that
    trusts it and checks the host name."""
    import os, ssl, subprocess
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    return server, client


class TLSEcho(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if data == b"boom":
            raise ZeroDivisionError("echo protocol failed")
        self.transport.write(data)


class TLSPathMixin:
    """Runs on the C record path (GLOBEFLOWER_TLS unset or "c") or on
    asyncio's own SSLProtocol (GLOBEFLOWER_TLS=python)."""
    tls_path = "c"

    @classmethod
    def setUpClass(cls):
        import shutil, tempfile
        if not shutil.which("openssl"):
            raise unittest.SkipTest("no openssl command to make a certificate")
        cls.tmp = tempfile.mkdtemp()
        cls.server_ctx, cls.client_ctx = _make_tls_contexts(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        import os
        self.saved_env = os.environ.get("GLOBEFLOWER_TLS")
        os.environ["GLOBEFLOWER_TLS"] = self.tls_path
        super().setUp()

    def tearDown(self):
        import os
        super().tearDown()
        if self.saved_env is None:
            os.environ.pop("GLOBEFLOWER_TLS", None)
        else:
            os.environ["GLOBEFLOWER_TLS"] = self.saved_env

    def run_with_server(self, client, protocol=TLSEcho):
        async def main():
            lost = []  # a future per server-side connection, done at connection_lost

            def factory():
                p = protocol()
                done = self.loop.create_future()
                made, original = p.connection_made, p.connection_lost

                def connection_made(transport):
                    lost.append(done)  # connection_lost will come
                    made(transport)

                def connection_lost(exc):
                    original(exc)
                    done.set_result(None)
                p.connection_made, p.connection_lost = connection_made, connection_lost
                return p
            server = await self.loop.create_server(factory, "127.0.0.1", 0, ssl=self.server_ctx)
            try:
                return await client(server.sockets[0].getsockname()[1])
            finally:
                server.close()
                await server.wait_closed()
                await asyncio.gather(*lost)  # no transport is left for the loop's close
        return self.loop.run_until_complete(asyncio.wait_for(main(), 30))

    def test_path_taken(self):
        from asyncio import sslproto

        async def client(port):
            r, w = await asyncio.open_connection("localhost", port, ssl=self.client_ctx)
            proto = w.transport._ssl_protocol
            w.close()
            await w.wait_closed()
            return type(proto)
        cls = self.run_with_server(client)
        if self.tls_path == "python":
            self.assertIs(cls, sslproto.SSLProtocol)
        else:
            self.assertIsNot(cls, sslproto.SSLProtocol)
            self.assertTrue(issubclass(cls, sslproto.SSLProtocol))

    def test_echo_sizes_and_buffer_types(self):
        async def client(port):
            r, w = await asyncio.open_connection("localhost", port, ssl=self.client_ctx)
            for n in (1, 1024, 16 * 1024 + 1, 300 * 1024, 2 * 1024 * 1024):
                payload = bytes(i % 251 for i in range(n))
                w.write(payload)
                await w.drain()
                self.assertEqual(await r.readexactly(n), payload)
            w.write(bytearray(b"ab"))
            w.write(memoryview(b"cdef")[1:3])
            w.write(b"")
            w.writelines([b"g", b"", bytearray(b"hi")])
            w.transport.writelines(iter([b"j", b"k"]))
            await w.drain()
            self.assertEqual(await r.readexactly(9), b"abdeghijk")
            with self.assertRaisesRegex(TypeError, "'int' object is not iterable"):
                w.transport.writelines(5)
            released = memoryview(b"x")
            released.release()
            with self.assertRaises(ValueError):
                w.transport.write(released)
            with self.assertRaisesRegex(TypeError, "data: expecting a bytes-like instance, got str"):
                w.transport.write("text")
            w.close()
            await w.wait_closed()
        self.run_with_server(client)

    def test_extra_info_and_peer_eof(self):
        async def client(port):
            r, w = await asyncio.open_connection("localhost", port, ssl=self.client_ctx)
            sslobj = w.get_extra_info("ssl_object")
            self.assertEqual(sslobj.server_hostname, "localhost")
            self.assertIn(sslobj.version(), ("TLSv1.2", "TLSv1.3"))
            self.assertEqual(w.get_extra_info("cipher"), sslobj.cipher())
            self.assertEqual(w.get_extra_info("peercert")["subject"], ((("commonName", "localhost"),),))
            self.assertIsInstance(sslobj.getpeercert(binary_form=True), bytes)
            self.assertIs(w.get_extra_info("sslcontext"), self.client_ctx)
            self.assertIsNone(w.get_extra_info("compression"))
            # The server closes: its close_notify is the client's EOF.
            w.write(b"ping")
            self.assertEqual(await r.readexactly(4), b"ping")
            w.transport._ssl_protocol._app_protocol  # the stream protocol is there
            w.close()
            await w.wait_closed()
        self.run_with_server(client)

    def test_server_close_is_client_eof(self):
        class CloseAfterFirst(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                self.transport.write(data.upper())
                self.transport.close()

        async def client(port):
            r, w = await asyncio.open_connection("localhost", port, ssl=self.client_ctx)
            w.write(b"bye")
            self.assertEqual(await r.read(), b"BYE")  # data, then EOF
            self.assertTrue(r.at_eof())
            w.close()
            await w.wait_closed()
        self.run_with_server(client, CloseAfterFirst)

    def test_buffered_app_protocol(self):
        got = bytearray()
        done = self.loop.create_future()

        class Collect(asyncio.BufferedProtocol):
            def get_buffer(self, n):
                self.buf = bytearray(max(n, 1))
                return memoryview(self.buf)  # asyncio slices it: a view, not a copy

            def buffer_updated(self, n):
                got.extend(self.buf[:n])
                if len(got) >= 100000 and not done.done():
                    done.set_result(None)

        async def client(port):
            t, p = await self.loop.create_connection(Collect, "localhost", port, ssl=self.client_ctx)
            t.write(b"z" * 100000)
            await done
            t.close()
        self.run_with_server(client)
        self.assertEqual(bytes(got), b"z" * 100000)

    def test_protocol_error_is_fatal_error(self):
        errors = []
        self.loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))

        async def client(port):
            r, w = await asyncio.open_connection("localhost", port, ssl=self.client_ctx)
            w.write(b"boom")
            self.assertEqual(await r.read(), b"")  # the server side is torn down
            w.close()
            try:
                await w.wait_closed()
            except ConnectionError:
                pass
        self.run_with_server(client)
        self.assertTrue(any(isinstance(c.get("exception"), ZeroDivisionError) and
                            c["message"] == "Fatal error on SSL protocol" for c in errors), errors)

    def test_verification_failure(self):
        import ssl

        async def client(port):
            other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts nothing
            with self.assertRaises(ssl.SSLCertVerificationError) as cm:
                await asyncio.open_connection("localhost", port, ssl=other)
            self.assertIn("certificate verify failed", str(cm.exception))
            with self.assertRaises(ssl.SSLCertVerificationError):
                await asyncio.open_connection("127.0.0.1", port, ssl=self.client_ctx,
                                              server_hostname="wrong.example")
        self.loop.set_exception_handler(lambda loop, ctx: None)  # the server's failed handshakes
        self.run_with_server(client)

    def test_start_tls_upgrade(self):
        async def main():
            upgraded = self.loop.create_future()

            async def handle(reader, writer):
                line = await reader.readline()
                writer.write(b"OK " + line)
                await writer.drain()
                await writer.start_tls(self.server_ctx)
                data = await reader.readexactly(5)
                writer.write(data[::-1])
                await writer.drain()
                upgraded.set_result(writer.get_extra_info("ssl_object") is not None)
                writer.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"STARTTLS\n")
            self.assertEqual(await r.readline(), b"OK STARTTLS\n")
            await w.start_tls(self.client_ctx, server_hostname="localhost")
            w.write(b"hello")
            self.assertEqual(await r.readexactly(5), b"olleh")
            self.assertTrue(await upgraded)
            with self.assertRaisesRegex(TypeError, "sslcontext is expected to be an instance of ssl.SSLContext"):
                await self.loop.start_tls(w.transport, w.transport.get_protocol(), object())
            w.close()
            await w.wait_closed()
            server.close()
            await server.wait_closed()
        self.loop.run_until_complete(asyncio.wait_for(main(), 30))


class TestTLSCPath(TLSPathMixin, LoopTestCase):
    tls_path = "c"


class TestTLSPythonPath(TLSPathMixin, LoopTestCase):
    tls_path = "python"


if __name__ == "__main__":
    unittest.main()
