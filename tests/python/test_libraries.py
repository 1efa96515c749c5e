"""Real asyncio libraries, unchanged, on the globeflower loop: aiohttp
(server and client, plain and TLS) and websockets. Skipped when a library
is not installed (Debian: python3-aiohttp, python3-websockets)."""

import asyncio
import os
import shutil
import ssl
import subprocess
import tempfile
import unittest

import globeflower

try:
    import aiohttp
    from aiohttp import web
except ImportError:  # pragma: no cover
    aiohttp = None
try:
    import websockets
except ImportError:  # pragma: no cover
    websockets = None


def make_cert(tmp):
    """A self-signed certificate for localhost/127.0.0.1 (openssl CLI)."""
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    return cert, key


class TLSMixin:
    @classmethod
    def setUpClass(cls):
        if not shutil.which("openssl"):
            raise unittest.SkipTest("openssl command not found")
        cls.tmp = tempfile.mkdtemp()
        cls.cert, cls.key = make_cert(cls.tmp)
        cls.server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cls.server_ctx.load_cert_chain(cls.cert, cls.key)
        cls.client_ctx = ssl.create_default_context(cafile=cls.cert)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)


@unittest.skipIf(aiohttp is None, "aiohttp not installed")
class TestAiohttp(TLSMixin, unittest.TestCase):
    async def serve_and_fetch(self, tls):
        self.assertIsInstance(asyncio.get_running_loop(), globeflower.Loop)

        async def hello(request):
            return web.Response(text="hello " + request.match_info["name"])

        async def echo(request):
            return web.Response(body=await request.read())

        app = web.Application()
        app.router.add_get("/hello/{name}", hello)
        app.router.add_post("/echo", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.server_ctx if tls else None)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        scheme = "https" if tls else "http"
        try:
            conn = aiohttp.TCPConnector(ssl=self.client_ctx if tls else False)
            async with aiohttp.ClientSession(connector=conn) as session:
                texts = []
                for i in range(20):  # keep-alive: one connection, many requests
                    async with session.get(f"{scheme}://127.0.0.1:{port}/hello/{i}") as r:
                        self.assertEqual(r.status, 200)
                        texts.append(await r.text())
                big = os.urandom(512 * 1024)  # aiohttp limits bodies to 1 MiB
                async with session.post(f"{scheme}://127.0.0.1:{port}/echo", data=big) as r:
                    self.assertEqual(await r.read(), big)
                # concurrent requests
                rs = await asyncio.gather(*[
                    session.get(f"{scheme}://127.0.0.1:{port}/hello/c{i}") for i in range(10)])
                for r in rs:
                    self.assertEqual(r.status, 200)
                    r.release()
            return texts
        finally:
            await runner.cleanup()

    def test_plain(self):
        texts = globeflower.run(self.serve_and_fetch(False))
        self.assertEqual(texts, [f"hello {i}" for i in range(20)])

    def test_tls(self):
        texts = globeflower.run(self.serve_and_fetch(True))
        self.assertEqual(texts, [f"hello {i}" for i in range(20)])


class TestTLSContextVars(TLSMixin, unittest.TestCase):
    """TLS connections (asyncio's sslproto over our transports): the
    application protocol's callbacks and the server's protocol factory run
    in the creator's contextvars context, as for plain connections."""

    def test_callbacks_run_in_the_creators_context(self):
        import contextvars
        var = contextvars.ContextVar("var", default="unset")
        server_log, client_log, factory_log = [], [], []

        class Rec(asyncio.Protocol):
            def __init__(self, log, done):
                self.log, self.done = log, done

            def connection_made(self, tr):
                self.log.append(("connection_made", var.get()))

            def data_received(self, data):
                self.log.append(("data_received", var.get()))

            def eof_received(self):
                self.log.append(("eof_received", var.get()))

            def connection_lost(self, exc):
                self.log.append(("connection_lost", var.get()))
                if not self.done.done():
                    self.done.set_result(None)

        async def main():
            loop = asyncio.get_running_loop()
            var.set("server")
            server_done = loop.create_future()

            def factory():
                factory_log.append(var.get())
                return Rec(server_log, server_done)
            srv = await loop.create_server(factory, "127.0.0.1", 0, ssl=self.server_ctx)
            port = srv.sockets[0].getsockname()[1]
            var.set("client")
            client_done = loop.create_future()
            tr, _ = await loop.create_connection(lambda: Rec(client_log, client_done), "127.0.0.1", port,
                                                 ssl=self.client_ctx, server_hostname="localhost")
            var.set("elsewhere")
            tr.write(b"over TLS")
            await asyncio.sleep(0.1)
            tr.close()
            await server_done
            srv.close()
            await srv.wait_closed()
        globeflower.run(main())
        self.assertEqual(factory_log, ["server"])
        self.assertIn(("data_received", "server"), server_log)
        for name, seen in server_log:
            self.assertEqual(seen, "server", server_log)
        self.assertIn(("connection_made", "client"), client_log)


@unittest.skipIf(aiohttp is None, "aiohttp not installed")
class TestAiohttpStaticFiles(unittest.TestCase):
    """aiohttp's static route sends files with loop.sendfile (os.sendfile,
    zero copy, on our transports): every byte must arrive."""

    async def serve_file(self, tmp, payload, use_sendfile):
        self.assertIsInstance(asyncio.get_running_loop(), globeflower.Loop)
        sent = []
        loop = asyncio.get_running_loop()
        real = loop.sock_sendfile

        async def spy(sock, file, offset=0, count=None, *, fallback=True):
            sent.append((offset, count, fallback))
            return await real(sock, file, offset, count, fallback=fallback)

        loop.sock_sendfile = spy
        app = web.Application()
        app.router.add_static("/files", tmp)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session:
                bodies = []
                for _ in range(3):  # keep-alive: the transport reads again after each file
                    async with session.get(f"http://127.0.0.1:{port}/files/blob.bin") as r:
                        self.assertEqual(r.status, 200)
                        bodies.append(await r.read())
                headers = {"Range": "bytes=1000-150999"}
                async with session.get(f"http://127.0.0.1:{port}/files/blob.bin", headers=headers) as r:
                    self.assertEqual(r.status, 206)
                    part = await r.read()
        finally:
            await runner.cleanup()
        for body in bodies:
            self.assertEqual(len(body), len(payload))
            self.assertTrue(body == payload, "a byte differs")
        self.assertTrue(part == payload[1000:151000])
        return sent

    def test_static_route_sends_with_os_sendfile(self):
        payload = os.urandom(200 * 1024)
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "blob.bin"), "wb") as f:
                f.write(payload)
            sent = globeflower.run(self.serve_file(tmp, payload, True))
        # loop.sendfile went native (fallback=False), once per response
        self.assertEqual(len(sent), 4)
        self.assertTrue(all(fallback is False for _, _, fallback in sent))


@unittest.skipIf(websockets is None, "websockets not installed")
class TestWebsockets(TLSMixin, unittest.TestCase):
    async def roundtrip(self, tls):
        async def echo(ws, *args):
            async for msg in ws:
                await ws.send(msg)

        server = await websockets.serve(echo, "127.0.0.1", 0, ssl=self.server_ctx if tls else None)
        port = next(iter(server.sockets)).getsockname()[1]
        scheme = "wss" if tls else "ws"
        try:
            async with websockets.connect(f"{scheme}://127.0.0.1:{port}",
                                          ssl=self.client_ctx if tls else None) as ws:
                out = []
                for i in range(50):
                    await ws.send(f"msg {i}")
                    out.append(await ws.recv())
                await ws.send(b"\x00" * 100000)
                self.assertEqual(await ws.recv(), b"\x00" * 100000)
                return out
        finally:
            server.close()
            await server.wait_closed()

    def test_plain(self):
        self.assertEqual(globeflower.run(self.roundtrip(False)), [f"msg {i}" for i in range(50)])

    def test_tls(self):
        self.assertEqual(globeflower.run(self.roundtrip(True)), [f"msg {i}" for i in range(50)])


if __name__ == "__main__":
    unittest.main()
