#!/usr/bin/python3
"""The TCP echo server of bench/python/run, on one of three asyncio loops.

    echo_server.py --loop asyncio|uvloop|globeflower
                   --mode sockets|streams|protocol|buffered
                   [--host 127.0.0.1] [--port 0] [--tls --cert F --key F]

Speaks the interface of the C servers of bench/echo (echo_common.h): prints
`LISTENING port=N` once it accepts connections and `RUSAGE user_s=...
sys_s=...` when SIGTERM or SIGINT stops it. The load generator
(bench/echo/loadgen) sends a message and waits for all of it to come back,
so every mode echoes what it reads at once, whatever the message size.

Modes (the same code on every loop):
  sockets   a task per connection: loop.sock_recv / loop.sock_sendall on
            the socket loop.sock_accept returned
  streams   asyncio.start_server: reader.read(n), writer.write, drain
  protocol  asyncio.Protocol: data_received writes the data back
  buffered  asyncio.BufferedProtocol: get_buffer hands out a per-connection
            buffer, buffer_updated writes a memoryview slice of it back

--tls (streams, protocol, buffered): the listener takes an ssl.SSLContext
made from --cert/--key, as bench/echo/server_gfl --tls does.

Like the C servers: TCP_NODELAY on every connection (the transports of all
three loops set it; sockets mode sets it itself), backlog 1024, and
write-buffer limits of 4 MiB / 1 MiB with reading paused
while above them (asyncio's default 64 KiB would pause and resume reading
on every 100 KiB echo).
"""

import argparse
import asyncio
import os
import signal
import socket
import sys

# sock_recv / reader.read size. Not larger: recv(n) allocates n bytes and
# shrinks them, and glibc serves 128 KiB and more with mmap/munmap, a cost
# of the benchmark's choice, not of the loop.
READ_SIZE = 64 * 1024
# The buffered protocol's buffer: recv_into fills it, nothing is allocated.
BUFFER_SIZE = 256 * 1024
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
BACKLOG = 1024


def new_loop(name):
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if name == "globeflower":
        import globeflower
        return globeflower.new_event_loop()
    raise SystemExit("echo_server.py: unknown loop %r" % name)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        self.view = memoryview(bytearray(BUFFER_SIZE))

    def get_buffer(self, sizehint):
        if self.transport.get_write_buffer_size():
            # A loop may hold on to the slice written last until it is
            # sent (uvloop sends at the end of the loop iteration): this
            # read must not overwrite it.
            self.view = memoryview(bytearray(BUFFER_SIZE))
        return self.view

    def buffer_updated(self, nbytes):
        self.transport.write(self.view[:nbytes])

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def handle_stream(reader, writer):
    writer.transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def handle_socket(loop, conn):
    try:
        while True:
            data = await loop.sock_recv(conn, READ_SIZE)
            if not data:
                break
            await loop.sock_sendall(conn, data)
    except ConnectionError:
        pass
    finally:
        conn.close()


async def accept_sockets(loop, listener, tasks):
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(handle_socket(loop, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def listening_socket(host, port):
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


async def serve(loop, mode, host, port, stop, tls=None):
    sock = listening_socket(host, port)
    if tls is not None and mode == "sockets":
        raise SystemExit("echo_server.py: --tls needs a transport (streams, protocol or buffered)")
    if mode == "sockets":
        tasks = set()
        acceptor = loop.create_task(accept_sockets(loop, sock, tasks))
        server = None
    elif mode == "streams":
        server = await asyncio.start_server(handle_stream, sock=sock, backlog=BACKLOG, limit=READ_SIZE, ssl=tls)
    elif mode == "protocol":
        server = await loop.create_server(EchoProtocol, sock=sock, backlog=BACKLOG, ssl=tls)
    elif mode == "buffered":
        server = await loop.create_server(EchoBufferedProtocol, sock=sock, backlog=BACKLOG, ssl=tls)
    else:
        raise SystemExit("echo_server.py: unknown mode %r" % mode)
    print("LISTENING port=%d" % sock.getsockname()[1], flush=True)
    await stop
    if server is None:
        acceptor.cancel()
        for t in list(tasks):
            t.cancel()
        sock.close()
    else:
        server.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", required=True, choices=["asyncio", "uvloop", "globeflower"])
    ap.add_argument("--mode", required=True, choices=["sockets", "streams", "protocol", "buffered"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    tls = None
    if a.tls:
        import ssl
        if not (a.cert and a.key):
            raise SystemExit("echo_server.py: --tls needs --cert and --key")
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(a.cert, a.key)
    loop = new_loop(a.loop)
    asyncio.set_event_loop(loop)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    loop.run_until_complete(serve(loop, a.mode, a.host, a.port, stop, tls))
    t = os.times()
    print("RUSAGE user_s=%.3f sys_s=%.3f" % (t.user, t.system), flush=True)
    # No teardown: the benchmark is over and the process is about to exit.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
