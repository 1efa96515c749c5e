"""globeflower.Loop: asyncio's event loop on the globeflower core.

The hot half lives in C (globeflower._core.LoopBase): call_soon, timers,
call_soon_threadsafe, one loop iteration (polling without the GIL), fd
watchers and the socket transports. The cold half is asyncio's own loop code
(run_until_complete, create_connection/create_server set-up, sock_sendfile,
executors, exception handler, shutdown_*): we inherit it, and it reaches the
core through the C methods above, which replace the selector-based ones it
would otherwise use. No selector is ever polled.
"""

import asyncio
import logging
import re
import selectors
import socket
import os
import stat
try:
    import ssl
except ImportError:  # an interpreter built without OpenSSL
    ssl = None
import sys
import threading
import contextvars

from asyncio import base_events, constants, events, format_helpers, futures, trsock, unix_events

from . import _core

__all__ = ("Loop", "EventLoopPolicy", "new_event_loop")

logger = logging.getLogger("asyncio")


def _pidfd_works():
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


_HAVE_PIDFD = _pidfd_works()


class TimerHandle(events.TimerHandle):
    """asyncio.TimerHandle plus the id of the core timer (for cancel())."""

    __slots__ = ("_gfl_id",)


class _NoSelector(selectors.BaseSelector):
    """Stands in for the selector asyncio's selector loop code expects:
    every fd goes through the core, so nothing may register here."""

    def register(self, fileobj, events, data=None):
        raise RuntimeError("globeflower: fd watchers go through the core")

    def unregister(self, fileobj):
        raise KeyError(fileobj)

    def select(self, timeout=None):
        raise RuntimeError("globeflower: the core polls, not a selector")

    def get_map(self):
        return {}

    def close(self):
        pass


def _handle_error(loop, handle, exc):
    """An exception escaped a callback: asyncio's Handle._run report."""
    if handle is not None:
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
        context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
    else:
        context = {"message": "Exception in callback", "exception": exc}
    loop.call_exception_handler(context)


def _run_handle_debug(loop, handle):
    """Debug mode: run through Handle._run() and warn about slow callbacks."""
    t0 = loop.time()
    loop._current_handle = handle
    try:
        handle._run()
        dt = loop.time() - t0
        if dt >= loop.slow_callback_duration:
            logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle), dt)
    finally:
        loop._current_handle = None
        # A traceback raised in the callback may keep this frame alive: drop
        # the handle so it does not keep the callback (a task...) alive too.
        handle = None


def _report_slow(loop, seconds):
    """Debug mode: a core callback that is not an asyncio Handle (a
    transport's data path, an accept) was slow."""
    logger.warning("Executing <I/O callback of %r> took %.3f seconds", loop, seconds)


def _transport_error(transport, exc, message, fatal):
    """A protocol callback failed: asyncio's _fatal_error (fatal) or the
    report it makes for pause_writing/resume_writing failures."""
    loop = transport._loop
    if loop is None:
        return
    if fatal and isinstance(exc, OSError):
        if loop.get_debug():
            logger.debug("%r: %s", transport, message, exc_info=True)
    else:
        loop.call_exception_handler({
            "message": message,
            "exception": exc,
            "transport": transport,
            "protocol": transport.get_protocol(),
        })
    if fatal:
        transport._force_close(exc)


_core._setup({
    "Handle": events.Handle,
    "TimerHandle": TimerHandle,
    "handle_error": _handle_error,
    "run_debug": _run_handle_debug,
    "report_slow": _report_slow,
    "transport_error": _transport_error,
    "BufferedProtocol": asyncio.BufferedProtocol,
    "TransportSocket": trsock.TransportSocket,
    # _FlowControlMixin (a Transport): what loop.sendfile's fallback needs.
    "Transport": asyncio.transports._FlowControlMixin,
    "copy_context": contextvars.copy_context,
    "set_result_unless_cancelled": futures._set_result_unless_cancelled,
    "Task": asyncio.Task,
    "Future": futures.Future,
    "create_task_slow": base_events.BaseEventLoop.create_task,
})


class Loop(_core.LoopBase, unix_events.SelectorEventLoop):
    """An asyncio event loop running on the globeflower core.

    ``Loop()`` makes a new core loop; ``Loop.from_capsule(capsule)`` attaches
    to a loop a C host created (a PyCapsule named "globeflower.loop" holding
    its ``gfl_loop *``).
    """

    def __init__(self, *, _gfl_loop=None):
        super().__init__(_NoSelector())
        self._gfl_servers = {}  # listening fd -> _core.CoreServer
        self._gfl_children = {}  # pidfd -> pid of a child still running

    # Plain TCP/Unix servers are served by the core (the accept loop and the
    # transports in C); TLS servers keep asyncio's path (sslproto over our
    # transports).
    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args, **kw):
        if sslcontext is not None:
            return super()._start_serving(protocol_factory, sock, sslcontext, server, backlog, *args, **kw)
        self._check_closed()
        old = self._gfl_servers.pop(sock.fileno(), None)
        if old is not None:
            old.close()
        self._gfl_servers[sock.fileno()] = _core.CoreServer(self, protocol_factory, sock, server, backlog)

    # TLS: asyncio's SSLProtocol with its per-record paths in C (see
    # src/sslproto.c) over a core transport; GLOBEFLOWER_TLS=python keeps
    # asyncio's own SSLProtocol over asyncio's socket transport.
    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *,
                            server_side=False, server_hostname=None, extra=None, server=None,
                            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        protocol_class = _tls_protocol_class()
        if protocol_class is None or type(rawsock) is not socket.socket:
            return super()._make_ssl_transport(
                rawsock, protocol, sslcontext, waiter, server_side=server_side,
                server_hostname=server_hostname, extra=extra, server=server,
                ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout)
        ssl_protocol = protocol_class(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def start_tls(self, transport, protocol, sslcontext, *, server_side=False, server_hostname=None,
                        ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        protocol_class = _tls_protocol_class()
        if protocol_class is None:
            return await super().start_tls(
                transport, protocol, sslcontext, server_side=server_side, server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout)
        # asyncio's checks and steps, with our protocol class.
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(
                f'sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}')
        if not getattr(transport, '_start_tls_compatible', False):
            raise TypeError(f'transport {transport!r} is not supported by start_tls()')
        waiter = self.create_future()
        ssl_protocol = protocol_class(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False)
        # Reading stays paused until connection_made has run (no record
        # can reach the protocol before it has its transport).
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        made = self.call_soon(ssl_protocol.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            raise
        return ssl_protocol._app_transport

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        # A terminal (pty) is readable when the other side writes: the
        # core's write pipes take that as the reader going away. asyncio
        # only watches FIFOs and sockets so; keep its transport for the rest.
        if stat.S_ISCHR(os.fstat(pipe.fileno()).st_mode):
            return unix_events.SelectorEventLoop._make_write_pipe_transport(
                self, pipe, protocol, waiter, extra)
        return _core.LoopBase._make_write_pipe_transport(self, pipe, protocol, waiter, extra)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        # The core's datagram path for real sockets; asyncio's for stand-ins.
        if type(sock) is not socket.socket or "_make_datagram_transport" in self.__dict__:
            return unix_events.SelectorEventLoop._make_datagram_transport(
                self, sock, protocol, address, waiter, extra)
        return _DatagramTransport(self, sock, protocol, address, waiter, extra)

    async def _sendfile_native(self, transp, file, offset, count):
        # loop.sendfile on our stream transports: os.sendfile (zero copy)
        # straight into the socket once everything written before is out,
        # reading paused meanwhile, as asyncio's selector loop does.
        # sock_sendfile's own rules decide when the fallback (read + write
        # through the transport) is used instead.
        if not isinstance(transp, _core.StreamTransport):
            return await super()._sendfile_native(transp, file, offset, count)
        sock = transp._sock
        if sock is None or transp.is_closing():
            raise asyncio.exceptions.SendfileNotAvailableError("the transport is closing")
        fd = transp._sock_fd
        registered = self._transports.get(fd) is transp
        if registered:
            del self._transports[fd]  # lets sock_sendfile watch the fd
        resume_reading = transp.is_reading()
        transp.pause_reading()
        try:
            await transp._make_empty_waiter()
            return await self.sock_sendfile(sock, file, offset, count, fallback=False)
        finally:
            transp._reset_empty_waiter()
            if resume_reading and not transp.is_closing():
                transp.resume_reading()
            if registered:
                self._transports[fd] = transp

    def _stop_serving(self, sock):
        srv = self._gfl_servers.pop(sock.fileno(), None)
        if srv is None:
            return super()._stop_serving(sock)
        srv.close()
        # asyncio's own (closes the socket; 3.13 also unlinks a Unix path).
        super()._stop_serving(sock)

    if hasattr(base_events.BaseEventLoop, "_run_forever_setup"):  # 3.12+
        def run_forever(self):
            """Run until stop() is called."""
            self._run_forever_setup()
            try:
                self._run_until_stopped()
            finally:
                self._run_forever_cleanup()
    else:
        def run_forever(self):
            """Run until stop() is called."""
            # asyncio's set-up and tear-down; the iterations run in C.
            self._check_closed()
            self._check_running()
            self._set_coroutine_origin_tracking(self._debug)
            old_agen_hooks = sys.get_asyncgen_hooks()
            try:
                self._thread_id = threading.get_ident()
                sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                       finalizer=self._asyncgen_finalizer_hook)
                events._set_running_loop(self)
                self._run_until_stopped()
            finally:
                self._stopping = False
                self._thread_id = None
                events._set_running_loop(None)
                self._set_coroutine_origin_tracking(False)
                sys.set_asyncgen_hooks(*old_agen_hooks)

    # ------------------------------------------------------------------
    # Client connections and DNS on the core. asyncio's code stays for
    # everything else (ssl=, sock=, debug mode's timing logs) and whenever
    # its building blocks were replaced (tests mock getaddrinfo,
    # sock_connect or the socket module): only the plain case moves.

    def _gfl_plain(self):
        d = self.__dict__
        return (not self._debug and "getaddrinfo" not in d and "sock_connect" not in d
                and "_ensure_resolved" not in d and base_events.socket is socket
                and type(self).sock_connect is Loop.sock_connect)

    # sock_recv, sock_sendall, sock_accept & co. are C (_core.LoopBase,
    # sock.c); sock_connect resolves the address here, as asyncio does,
    # then connects in C.
    async def sock_connect(self, sock, address):
        """Connect to a remote socket at address."""
        if type(sock) is not socket.socket or sock.gettimeout() != 0:
            # SSL sockets, stand-ins and blocking sockets: asyncio's
            return await super().sock_connect(sock, address)
        if sock.family == socket.AF_INET or (base_events._HAS_IPv6 and sock.family == socket.AF_INET6):
            _check_port(address, "connect")
            resolved = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto, loop=self)
            _, _, _, _, address = resolved[0]
        return await self._gfl_sock_connect(sock, address)

    async def create_connection(self, protocol_factory, host=None, port=None, **kw):
        if (host is None or port is None or not isinstance(host, str) or not isinstance(port, (int, str))
                or not self._gfl_plain() or not kw.keys() <= _CORE_CONNECT_KW
                or kw.get("ssl") is not None or kw.get("sock") is not None
                or kw.get("proto", 0) not in (0, socket.IPPROTO_TCP)):
            return await super().create_connection(protocol_factory, host, port, **kw)
        local = kw.get("local_addr")
        lhost = lport = None
        if local is not None:
            if not isinstance(local, tuple) or len(local) != 2:
                return await super().create_connection(protocol_factory, host, port, **kw)
            lhost, lport = local
            lport = None if lport is None else str(lport)
            if lhost is not None and not isinstance(lhost, str):
                return await super().create_connection(protocol_factory, host, port, **kw)
        delay = kw.get("happy_eyeballs_delay")
        interleave = kw.get("interleave")
        if delay is not None and interleave is None:
            interleave = 1
        self._check_closed()
        fut = self.create_future()
        op = self._gfl_connect(fut, protocol_factory, _idna(host), str(port), int(kw.get("family", 0)),
                               int(kw.get("flags", 0)), _idna(lhost), lport,
                               float(delay) if delay is not None else 0.0,
                               int(interleave) if interleave is not None else 0)
        try:
            return await fut
        except OSError as exc:
            _asyncio_message(exc)
            raise
        except BaseException:
            _core.op_cancel(op)
            raise
        finally:
            fut = op = None

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        # Every path refuses what the core refuses (asyncio's, for debug
        # mode and stand-ins, would let glibc wrap the port).
        _check_service(port)
        if ((host is None and port is None)  # socket.getaddrinfo's gaierror
                or (host is not None and not isinstance(host, str)) or not (port is None or isinstance(port, (int, str)))
                or self._debug or isinstance(port, bool)):
            return await super().getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)
        self._check_closed()
        fut = self.create_future()
        op = self._gfl_getaddrinfo(fut, _idna(host), None if port is None else str(port),
                                   int(family), int(type), int(proto), int(flags))
        try:
            res = await fut
        except BaseException:
            _core.op_cancel(op)
            raise
        return [(_af(f), _sk(t), p, c, a) for f, t, p, c, a in res]

    async def getnameinfo(self, sockaddr, flags=0):
        if (not isinstance(sockaddr, tuple) or not 2 <= len(sockaddr) <= 4
                or not isinstance(sockaddr[0], str) or type(sockaddr[1]) is not int
                or not all(type(x) is int for x in sockaddr[2:]) or not 0 <= sockaddr[1] <= 65535):
            return await super().getnameinfo(sockaddr, flags)
        host = sockaddr[0]
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        if fam == socket.AF_INET and len(sockaddr) != 2:
            return await super().getnameinfo(sockaddr, flags)
        self._check_closed()
        fut = self.create_future()
        try:
            op = self._gfl_getnameinfo(fut, fam, host, sockaddr[1], *(tuple(sockaddr[2:]) + (0, 0))[:2], int(flags))
        except (ValueError, OverflowError):  # not numeric: asyncio's (socket's) errors
            return await super().getnameinfo(sockaddr, flags)
        try:
            return await fut
        except BaseException:
            _core.op_cancel(op)
            raise

    # ------------------------------------------------------------------
    # Subprocesses: the loop watches its children itself, through a pidfd
    # on the core (no child watcher, no SIGCHLD handler, no thread). A child
    # watcher the program installed (asyncio.set_child_watcher) is honoured,
    # as is a kernel without pidfd_open: both take asyncio's own path.

    async def _make_subprocess_transport(self, protocol, args, shell, stdin, stdout, stderr,
                                         bufsize, extra=None, **kwargs):
        policy = events.get_event_loop_policy()
        if not _HAVE_PIDFD or getattr(policy, "_watcher", None) is not None:
            return await super()._make_subprocess_transport(
                protocol, args, shell, stdin, stdout, stderr, bufsize, extra=extra, **kwargs)
        waiter = self.create_future()
        transp = unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs)
        self._gfl_watch_child(transp)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def _gfl_watch_child(self, transp):
        pid = transp.get_pid()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            # Out of fds: nothing could report the exit, so undo the spawn.
            transp.close()  # kills the child
            transp._process_exited(transp._proc.wait())
            raise
        self._gfl_children[pidfd] = pid

        def exited():
            _core.LoopBase._remove_reader(self, pidfd)
            del self._gfl_children[pidfd]
            os.close(pidfd)
            try:
                _, status = os.waitpid(pid, os.WNOHANG)
                returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                # Already reaped: by Popen.poll() (transport.close() calls it)
                # or by someone else (os.wait(), a SIGCHLD handler).
                returncode = transp._proc.returncode
                if returncode is None:
                    logger.warning("child process pid %d exit status already read: "
                                   "will report returncode 255", pid)
                    returncode = 255
            if self._debug:
                logger.debug("process %s exited with returncode %s", pid, returncode)
            transp._process_exited(returncode)

        _core.LoopBase._add_reader(self, pidfd, exited)

    @classmethod
    def from_capsule(cls, capsule):
        """A loop object on a C host's core loop: `capsule` is a PyCapsule
        named "globeflower.loop" holding its ``gfl_loop *``. The loop is
        validated (a freed, closed or foreign-thread loop raises
        ValueError); Python holds a reference and never frees it: close()
        detaches (see docs/python.md, "Embedding")."""
        return cls(_gfl_loop=capsule)

    def is_closed(self):
        # A C host may free its loop while Python is attached.
        return self._closed or self._gfl_host_closed()

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._gfl_host_closed():
            # The host freed its loop: tidy up Python's side only.
            try:
                self._close_self_pipe()
                base_events.BaseEventLoop.close(self)
            finally:
                self._core_close()
            return
        try:
            super().close()
            for srv in self._gfl_servers.values():
                srv.close()
            self._gfl_servers.clear()
            if self.is_attached():
                # The host's loop outlives us: our datagram endpoints on it go.
                for tr in list(self._transports.values()):
                    if isinstance(tr, _DatagramTransport):
                        tr.abort()
            # Children outlive the loop, as under asyncio's watchers; their
            # Popen objects reap them (subprocess's own clean-up).
            for pidfd in self._gfl_children:
                _core.LoopBase._remove_reader(self, pidfd)
                os.close(pidfd)
            self._gfl_children.clear()
        finally:
            # Frees the core loop (detaches from a C host's, see
            # from_capsule). Transports still open are left as asyncio
            # leaves them: no connection_lost, the user's sockets stay open.
            self._core_close()

    def __repr__(self):
        return (f"<{self.__class__.__name__} running={self.is_running()} "
                f"closed={self.is_closed()} debug={self.get_debug()}>")


_CORE_CONNECT_KW = frozenset((
    "ssl", "family", "proto", "flags", "sock", "local_addr", "happy_eyeballs_delay", "interleave"))


def _check_port(address, what):
    """socket's OverflowError for a port out of range: the core would refuse
    it too, but as socket.connect words it (glibc alone would wrap it)."""
    if isinstance(address, tuple) and len(address) >= 2 and type(address[1]) is int \
            and not 0 <= address[1] <= 65535:
        raise OverflowError(f"{what}(): port must be 0-65535.")


def _check_service(port):
    """A numeric port above 65535 (int or digits): the core's OverflowError."""
    if type(port) is int:
        bad = not 0 <= port <= 65535
    elif isinstance(port, (str, bytes)):
        digits = port.decode("ascii", "replace") if isinstance(port, bytes) else port
        bad = digits.isascii() and digits.isdigit() and int(digits) > 65535
    else:
        bad = False
    if bad:
        raise OverflowError(f"port must be 0-65535 (got {port!r})")


def _idna(host):
    if host is None or host.isascii():
        return host
    return host.encode("idna").decode("ascii")


def _af(v):
    try:
        return socket.AddressFamily(v)
    except ValueError:
        return v


def _sk(v):
    try:
        return socket.SocketKind(v)
    except ValueError:
        return v


_WHERE = re.compile(r"^(Connect call failed|error while attempting to bind or connect) "
                    r"\((\[[^\]]*\]|[^\[\]:]*):(\d+)\)(?:: (.*))?$")


def _asyncio_message(exc):
    """The core's "Connect call failed (host:port)" in asyncio's words
    ("Connect call failed ('host', port)")."""
    msg = exc.strerror if exc.strerror is not None else (exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else None)
    if not msg:
        return
    m = _WHERE.match(msg)
    if not m:
        return
    what, host, port, why = m.group(1), m.group(2), int(m.group(3)), m.group(4)
    if host.startswith("["):
        addr = (host[1:-1], port, 0, 0)
    else:
        addr = (host, port)
    new = f"{what} {addr!r}"
    if what == "error while attempting to bind or connect":
        new = f"error while attempting to bind on address {addr!r}: {(why or '').lower()}"
    if exc.strerror is not None:
        exc.strerror = new
        exc.args = (exc.errno, new)
    else:
        exc.args = (new,)


class _DatagramTransport(asyncio.transports._FlowControlMixin, asyncio.DatagramTransport):
    """asyncio's datagram transport on the core (gfl_datagram_from_socket):
    the core receives, sends and queues; datagrams and errors go from C
    straight to the protocol."""

    max_size = 256 * 1024

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        super().__init__(extra, loop)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._address = address
        self._protocol = protocol
        self._waiter = waiter
        self._closing = False
        self._conn_lost = 0
        self._protocol_paused = False
        loop._transports[self._sock_fd] = self
        self._core = _core.CoreDatagram(loop, sock, protocol, self)

    def __repr__(self):
        state = "closed" if self._sock is None else ("closing" if self._closing else "open")
        return f"<{self.__class__.__name__} fd={self._sock_fd} {state}>"

    # core -> Python
    def _gfl_made(self):
        self._protocol.connection_made(self)
        if self._waiter is not None:
            futures._set_result_unless_cancelled(self._waiter, None)
            self._waiter = None

    def _gfl_lost(self, exc):
        self._conn_lost += 1
        try:
            if self._protocol is not None:
                self._protocol.connection_lost(exc)
        finally:
            if self._sock is not None:
                self._sock.close()
            self._sock = None
            self._protocol = None
            self._core = None

    def _gfl_pause(self):
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed",
                "exception": exc, "transport": self, "protocol": self._protocol})

    def _gfl_resume(self):
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "protocol.resume_writing() failed",
                "exception": exc, "transport": self, "protocol": self._protocol})

    # the transport API
    def sendto(self, data, addr=None):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if not data:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost and self._address:
            if self._conn_lost >= asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        core = self._core
        if core is None:
            return
        if self._extra["peername"]:
            addr = None
        try:
            core.sendto(data, addr)
        except ValueError:
            # a host name: resolved as socket.sendto would (blocking)
            try:
                addr = socket.getaddrinfo(addr[0], addr[1], self._sock.family, socket.SOCK_DGRAM)[0][4]
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            core.sendto(data, addr)

    def close(self):
        if self._closing:
            return
        self._closing = True
        if self._core is not None:
            self._core.close()

    def abort(self):
        self._closing = True
        if self._core is not None:
            self._core.abort()

    def _force_close(self, exc):
        self.abort()

    def is_closing(self):
        return self._closing

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size() if self._core is not None else 0

    def set_write_buffer_limits(self, high=None, low=None):
        if high is not None and high < 0 or low is not None and low < 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        if high is not None and low is not None and not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        if self._core is not None:
            self._core.set_write_buffer_limits(-1 if high is None else high, -1 if low is None else low)

    def get_write_buffer_limits(self):
        return self._core.get_write_buffer_limits() if self._core is not None else (0, 0)

    def pause_reading(self):
        if self._core is not None:
            self._core.pause_reading()

    def resume_reading(self):
        if self._core is not None:
            self._core.resume_reading()

    def is_reading(self):
        return self._core is not None and not self._closing and self._core.is_reading()

    def set_protocol(self, protocol):
        self._protocol = protocol
        if self._core is not None:
            self._core.set_protocol(protocol)

    def get_protocol(self):
        return self._protocol

    def __del__(self, _warn=__import__("warnings").warn):
        if self._sock is not None and not self._closing:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making globeflower loops."""

    _loop_factory = Loop

    def __repr__(self):
        return "<globeflower.EventLoopPolicy>"


def new_event_loop():
    """A new globeflower event loop."""
    return Loop()


# --------------------------------------------------------------------------
# What asyncio's loop code asks of a transport beyond the public API: the
# start_tls and sendfile capabilities, and sendfile's "write buffer empty"
# waiter (cold paths, so they are Python).

def _make_empty_waiter(self):
    if getattr(self, "_empty_waiter", None) is not None:
        raise RuntimeError("Empty waiter is already set")
    loop = self._loop
    waiter = loop.create_future()
    self._empty_waiter = waiter

    def check():
        if waiter.done():
            return
        if self.is_closing() and self.get_write_buffer_size():
            waiter.set_exception(ConnectionError("Connection is closed by peer"))
        elif not self.get_write_buffer_size():
            waiter.set_result(None)
        else:
            loop.call_later(0.001, check)
    check()
    return waiter


def _reset_empty_waiter(self):
    self._empty_waiter = None


_core.StreamTransport._start_tls_compatible = True
_core.StreamTransport._sendfile_compatible = asyncio.constants._SendfileMode.TRY_NATIVE
_core.StreamTransport._make_empty_waiter = _make_empty_waiter
_core.StreamTransport._reset_empty_waiter = _reset_empty_waiter


# --------------------------------------------------------------------------
# Pipes work in one direction, as asyncio's pipe transports do: a read pipe
# has no write side at all (AttributeError), a write pipe refuses the read
# side (ReadTransport's NotImplementedError); neither supports sendfile.

class _Absent:
    """An attribute a read pipe does not have: getattr raises
    AttributeError and hasattr() is False, as on asyncio's read pipes."""

    def __set_name__(self, owner, name):
        self._name = name

    def __get__(self, obj, owner=None):
        raise AttributeError(f"{(owner or type(obj)).__name__!r} object has no attribute {self._name!r}")


class _ReadPipeTransport(_core.StreamTransport):
    __slots__ = ()
    _sendfile_compatible = asyncio.constants._SendfileMode.UNSUPPORTED
    write = writelines = write_eof = can_write_eof = _Absent()
    get_write_buffer_size = get_write_buffer_limits = set_write_buffer_limits = _Absent()
    _make_empty_waiter = _reset_empty_waiter = _Absent()

    def __dir__(self):
        return [n for n in super().__dir__() if not isinstance(_ReadPipeTransport.__dict__.get(n), _Absent)]


class _WritePipeTransport(_core.StreamTransport):
    __slots__ = ()
    _sendfile_compatible = asyncio.constants._SendfileMode.UNSUPPORTED

    def pause_reading(self):
        raise NotImplementedError

    def resume_reading(self):
        raise NotImplementedError

    def is_reading(self):
        raise NotImplementedError


_ReadPipeTransport.__name__ = _ReadPipeTransport.__qualname__ = "ReadPipeTransport"
_WritePipeTransport.__name__ = _WritePipeTransport.__qualname__ = "WritePipeTransport"
_core._set_pipe_types(_ReadPipeTransport, _WritePipeTransport)


# ---------------------------------------------------------------------------
# TLS protocol classes (built on first use: importing ssl is not free).

_tls_classes = None


def _tls_protocol_class():
    """The SSLProtocol class to use, or None for asyncio's own path."""
    global _tls_classes
    if os.environ.get("GLOBEFLOWER_TLS", "c") == "python" or ssl is None:
        return None
    if _tls_classes is None:
        from asyncio import sslproto
        protocol_base, transport_base = _core._tls_types(sslproto)

        class _SSLProtocolTransport(transport_base):
            __slots__ = ()

        class SSLProtocol(protocol_base):
            def _get_app_transport(self):
                # asyncio's, making our transport class.
                if self._app_transport is None:
                    if self._app_transport_created:
                        raise RuntimeError('Creating _SSLProtocolTransport twice')
                    self._app_transport = _SSLProtocolTransport(self._loop, self)
                    self._app_transport_created = True
                return self._app_transport

            def _on_shutdown_complete(self, shutdown_exc):
                # asyncio's socket transport takes writes while it closes,
                # so records held back by pause_writing (our close_notify
                # among them) still go out through resume_writing. A core
                # transport refuses writes once closing: hand it what is
                # left now, ahead of the close asyncio schedules.
                if shutdown_exc is None and self._transport is not None and self._outgoing.pending:
                    self._transport.write(self._outgoing.read())
                super()._on_shutdown_complete(shutdown_exc)

        _tls_classes = SSLProtocol
    return _tls_classes
