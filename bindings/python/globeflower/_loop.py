"""globeflower.Loop: asyncio's event loop on the globeflower core.

The hot half lives in C (globeflower._core.LoopBase): call_soon, timers,
call_soon_threadsafe, one loop iteration (polling without the GIL), fd
watchers and the socket transports. The cold half is asyncio's own loop code
(run_until_complete, create_connection/create_server set-up, sock_*,
executors, exception handler, shutdown_*): we inherit it, and it reaches the
core through the C methods above, which replace the selector-based ones it
would otherwise use. No selector is ever polled.
"""

import asyncio
import logging
import selectors
import os
import stat
import sys
import threading
import contextvars

from asyncio import base_events, events, format_helpers, futures, trsock, unix_events

from . import _core

__all__ = ("Loop", "EventLoopPolicy", "new_event_loop")

logger = logging.getLogger("asyncio")


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
    "transport_error": _transport_error,
    "BufferedProtocol": asyncio.BufferedProtocol,
    "TransportSocket": trsock.TransportSocket,
    # _FlowControlMixin (a Transport): what loop.sendfile's fallback needs.
    "Transport": asyncio.transports._FlowControlMixin,
    "copy_context": contextvars.copy_context,
    "set_result_unless_cancelled": futures._set_result_unless_cancelled,
    "Task": asyncio.Task,
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

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        # A terminal (pty) is readable when the other side writes: the
        # core's write pipes take that as the reader going away. asyncio
        # only watches FIFOs and sockets so; keep its transport for the rest.
        if stat.S_ISCHR(os.fstat(pipe.fileno()).st_mode):
            return unix_events.SelectorEventLoop._make_write_pipe_transport(
                self, pipe, protocol, waiter, extra)
        return _core.LoopBase._make_write_pipe_transport(self, pipe, protocol, waiter, extra)

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

    @classmethod
    def from_capsule(cls, capsule):
        return cls(_gfl_loop=capsule)

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        try:
            super().close()
            for srv in self._gfl_servers.values():
                srv.close()
            self._gfl_servers.clear()
        finally:
            # Frees the core loop: transports still open get connection_lost.
            self._core_close()

    def __repr__(self):
        return (f"<{self.__class__.__name__} running={self.is_running()} "
                f"closed={self.is_closed()} debug={self.get_debug()}>")


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
