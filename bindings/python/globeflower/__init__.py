"""globeflower: an asyncio event loop on the globeflower C core.

    import globeflower
    globeflower.run(main())            # like asyncio.run, on a globeflower loop
    globeflower.install()              # make it asyncio's default loop
    loop = globeflower.new_event_loop()

Many hosts on one loop (docs/hosts.md): C plugins as modules, and
functions shared with C hosts, Lua and other Python code by name:

    example = globeflower.plugin("example")
    example.add(1, 2)                                  # 3
    await example.sleep_then_echo(0.1, [1, {"a": 2}])  # [1, {'a': 2}]
    globeflower.export("py.greet", greet)              # def or async def
    await globeflower.call("py.greet", "you")

The package publishes the core's function table as the PyCapsule
``globeflower._core._C_API`` (a ``const gfl_api *``) so that other
extensions share this process's core.
"""

import asyncio as __asyncio
import sys as __sys

from . import _core
from ._loop import Loop, EventLoopPolicy, new_event_loop
from ._core import tune_heap, heap_tuned
from ._hosts import (RemoteError, ForeignObject, Plugin, plugin, export, unexport, call, exports)

__all__ = ("Loop", "EventLoopPolicy", "new_event_loop", "install", "run",
           "RemoteError", "ForeignObject", "Plugin", "plugin", "export", "unexport", "call", "exports",
           "tune_heap", "heap_tuned")
__version__ = "0.1.0"


def install():
    """Makes globeflower the loop of asyncio's default policy."""
    __asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Runs the coroutine `main` on a new globeflower loop (asyncio.run's
    semantics) and returns its result."""
    if __sys.version_info >= (3, 12):
        return __asyncio.run(main, debug=debug, loop_factory=new_event_loop)
    if __sys.version_info >= (3, 11):
        with __asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_legacy(main, debug)


def _run_legacy(main, debug):
    # Python 3.9/3.10: asyncio.run without a loop factory.
    if __asyncio.events._get_running_loop() is not None:
        raise RuntimeError("run() cannot be called from a running event loop")
    loop = new_event_loop()
    try:
        __asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            tasks = __asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(__asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            __asyncio.set_event_loop(None)
            loop.close()
