"""Many hosts on one loop (docs/hosts.md): values, calls and errors shared
with C hosts, Lua and plugins through the loop's registry of named functions.

The work is done in C (globeflower._core: value.c, futures.c, exports.c,
plugin.c); this module holds what is simplest in Python and hands it over.
"""

import asyncio
import atexit
import inspect
import traceback
import warnings

from asyncio import events

from . import _core

__all__ = ("RemoteError", "ForeignObject", "Plugin", "plugin", "export", "unexport", "call", "exports")

ForeignObject = _core.ForeignObject
Plugin = _core.Plugin
plugin = _core.plugin
export = _core.export
unexport = _core.unexport
call = _core.call
exports = _core.exports


class RemoteError(Exception):
    """An error from another host (Lua, C, a plugin) with no Python class
    of its name.

    ``type``, ``message``, ``traceback`` (text or None) and ``code`` (a
    negative GFL_E* number) are the error value's fields. Raising it again
    toward the core sends on the very value it was made from. A program may
    raise its own ``RemoteError(type, message)`` to send an error of a given
    type to another host.
    """

    def __init__(self, type, message, traceback=None, code=-4000):
        super().__init__(type, message)
        self.type = type
        self.message = message
        self.traceback = traceback
        self.code = code

    def __str__(self):
        return f"{self.type}: {self.message}"


RemoteError.__module__ = __package__


def _thread_loop():
    """The loop set as current for this thread (asyncio.set_event_loop),
    or None; never makes one, unlike asyncio.get_event_loop()."""
    policy = events.get_event_loop_policy()
    local = getattr(policy, "_local", None)
    if local is not None:
        return getattr(local, "_loop", None)
    # A policy of another kind: ask it, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return policy.get_event_loop()
        except RuntimeError:
            return None


def _is_async(fn):
    """Whether export(name, fn) makes an async export."""
    if inspect.iscoroutinefunction(fn):
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.14 deprecates it
        if asyncio.iscoroutinefunction(fn):
            return True
    call = getattr(type(fn), "__call__", None)
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


_core._hosts_setup({
    "RemoteError": RemoteError,
    "CancelledError": asyncio.CancelledError,
    "format_exception": traceback.format_exception,
    "get_running_loop": events._get_running_loop,
    "thread_loop": _thread_loop,
    "is_async": _is_async,
    "ensure_future": asyncio.ensure_future,
})

# Python's exports go before the interpreter does (calls made later by other
# hosts get "nothing is exported under the name").
atexit.register(_core._exports_atexit)
