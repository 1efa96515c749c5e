"""Many hosts on one loop from Python (docs/hosts.md): values, errors, calls
through the loop's export registry, plugins, cancellation across hosts.

The C side of the round trips is the example plugin (plugins/example,
found through $GFL_PLUGIN_PATH): sleep_then_echo(delay, v) hands back the
very gfl_value it was given, so a value converted Python -> core -> Python
shows what crossing to another host does to it.
"""

import asyncio
import gc
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest
import weakref

import globeflower
from globeflower import _core

MAX_DEPTH = 64  # GFL_VALUE_MAX_DEPTH


def nested_lists(levels):
    """A list nested `levels` deep: [[[...]]]; levels=1 is []."""
    v = []
    for _ in range(levels - 1):
        v = [v]
    return v


class HostsTestCase(unittest.TestCase):
    """A globeflower loop per test, current for the thread; the example
    plugin as self.ex."""

    def setUp(self):
        self.loop = globeflower.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.ex = globeflower.plugin("example")

    def tearDown(self):
        asyncio.set_event_loop(None)
        self.loop.close()
        self.ex = None
        gc.collect()

    def run_async(self, coro, timeout=10):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def echo(self, value, delay=0):
        """value -> gfl_value -> the C plugin -> back to Python."""
        return self.run_async(self.ex.sleep_then_echo(delay, value))


class TestValues(HostsTestCase):
    def test_scalars_round_trip(self):
        for v in (None, True, False, 0, 1, -1, 2**63 - 1, -2**63, 0.5, -1e300, math.inf,
                  "", "text", "ünïcødé ✓", b"", b"\x00\xff bytes"):
            with self.subTest(v=v):
                r = self.echo(v)
                self.assertEqual(r, v)
                self.assertIs(type(r), type(v))
        self.assertTrue(math.isnan(self.echo(math.nan)))

    def test_buffers_cross_as_bytes(self):
        self.assertEqual(self.echo(bytearray(b"ab")), b"ab")
        self.assertEqual(self.echo(memoryview(b"abcdef")[1:3]), b"bc")
        strided = memoryview(b"abcdef")[::2]  # not contiguous
        self.assertEqual(self.echo(strided), b"ace")

    def test_surrogateescape_text(self):
        # Invalid UTF-8 decoded with surrogateescape goes back to its bytes.
        s = b"caf\xe9".decode("utf-8", "surrogateescape")
        self.assertEqual(self.echo(s), s)
        with self.assertRaises(UnicodeEncodeError):
            self.echo("\ud800")  # a lone surrogate of no bytes: no UTF-8 for it

    def test_containers_are_deep_copies(self):
        inner = {"k": [1, 2.5, "three", b"four", None, {"deep": True}]}
        value = [inner, (5, 6), [], {}, {1: "int key", b"b": "bytes key", 2.5: "float key"}]
        r = self.echo(value)
        self.assertEqual(r, [inner, [5, 6], [], {}, {1: "int key", b"b": "bytes key", 2.5: "float key"}])
        self.assertIsNot(r, value)
        self.assertIsNot(r[0], inner)
        self.assertIsNot(r[0]["k"], inner["k"])
        self.assertIs(type(r[1]), list)  # a tuple crosses as an ARRAY

    def test_dict_order_is_kept(self):
        d = {f"k{i}": i for i in range(50)}
        self.assertEqual(list(self.echo(d)), list(d))

    def test_shared_items_are_not_cycles(self):
        a = [1]
        self.assertEqual(self.echo([a, a, {"x": a}]), [[1], [1], {"x": [1]}])

    def test_own_objects_come_home(self):
        class Thing:
            pass

        for obj in (Thing(), object(), {1, 2}, len, 2**64, -2**70, Thing):
            with self.subTest(obj=obj):
                self.assertIs(self.echo(obj), obj)
        obj = Thing()
        r = self.echo([obj, {"o": obj}])
        self.assertIs(r[0], obj)
        self.assertIs(r[1]["o"], obj)

    def test_objects_are_released(self):
        class Thing:
            pass

        obj = Thing()
        ref = weakref.ref(obj)
        self.echo({"a": [obj]})
        before = sys.getrefcount(obj)
        for _ in range(20):
            self.echo([obj, obj])
        self.assertEqual(sys.getrefcount(obj), before)
        del obj
        gc.collect()
        self.assertIsNone(ref())

    def test_released_from_a_thread_without_python(self):
        # The "python" host class's unref takes the GIL itself.
        class Thing:
            pass

        obj = Thing()
        ref = weakref.ref(obj)
        holder = [obj, {"again": obj}]
        del obj
        _core._test_unref_in_thread(holder)
        self.assertIsNotNone(ref())  # still ours
        before = sys.getrefcount(ref())
        _core._test_unref_in_thread(holder)
        self.assertEqual(sys.getrefcount(ref()), before)
        del holder
        self.assertIsNone(ref())

    def test_foreign_objects(self):
        live = _core._test_foreign_live()
        f = _core._test_foreign()
        self.assertIsInstance(f, globeflower.ForeignObject)
        self.assertEqual(f.host, "test")
        self.assertIn("'test'", repr(f))
        self.assertEqual(_core._test_foreign_live(), live + 1)
        back = self.echo([f, {"f": f}])
        self.assertEqual(back[0], f)  # the same object of the same host
        self.assertEqual(hash(back[1]["f"]), hash(f))
        self.assertNotEqual(f, _core._test_foreign())
        del back
        self.assertEqual(_core._test_foreign_live(), live + 1)
        del f
        gc.collect()
        self.assertEqual(_core._test_foreign_live(), live)
        with self.assertRaises(TypeError):
            globeflower.ForeignObject()

    def test_exceptions_as_data(self):
        e = KeyError("k")
        self.assertIs(self.echo(e), e)
        self.assertIs(self.echo([e])[0], e)

    def test_cycle_is_a_clear_error(self):
        lst = [1]
        lst.append(lst)
        d = {}
        d["self"] = d
        deep = [1, [2, [3]]]
        deep[1][1].append(deep)
        via_dict = {"a": [{"b": None}]}
        via_dict["a"][0]["b"] = via_dict
        for v in (lst, d, deep, via_dict, [0, (lst,)]):
            with self.subTest(v=type(v)):
                with self.assertRaisesRegex(ValueError, "contains itself"):
                    self.ex.sleep_then_echo(0, v)

    def test_depth_limit(self):
        ok = nested_lists(MAX_DEPTH)
        self.assertEqual(self.echo(ok), ok)
        for v in (nested_lists(MAX_DEPTH + 1), {"a": nested_lists(MAX_DEPTH)}, nested_lists(1000)):
            with self.assertRaisesRegex(ValueError, "deeper than 64"):
                self.ex.sleep_then_echo(0, v)

    def test_failed_conversions_leak_nothing(self):
        class Thing:
            pass

        obj = Thing()
        f = _core._test_foreign()
        live = _core._test_foreign_live()
        cyc = [obj, f, {"o": obj, "f": f}]
        cyc.append(cyc)
        too_deep = [obj, f, {"x": [obj, f]}, nested_lists(MAX_DEPTH + 1)]
        before_obj, before_cyc = sys.getrefcount(obj), sys.getrefcount(cyc)
        for _ in range(10):
            for v in (cyc, too_deep, {"obj": obj, "bad": cyc}):
                with self.assertRaises(ValueError):
                    self.ex.sleep_then_echo(0, v)
                with self.assertRaises(ValueError):
                    globeflower.call("anything", 1, v)
                with self.assertRaises(ValueError):
                    _core._roundtrip(v)
        del v  # the last one holds obj
        self.assertEqual(sys.getrefcount(obj), before_obj)
        self.assertEqual(sys.getrefcount(cyc), before_cyc)
        self.assertEqual(_core._test_foreign_live(), live)
        cyc.clear()

    def test_unhashable_key_on_the_way_back(self):
        # A tuple key crosses as an ARRAY; back in Python it is a list.
        with self.assertRaisesRegex(TypeError, "unhashable"):
            self.echo({(1, 2): "x"})


class TestErrors(HostsTestCase):
    def test_python_exception_fields(self):
        try:
            raise ValueError("bad value")
        except ValueError as e:
            exc = e
        code, type_, message, tb, cause_is_exc = _core._error_fields(exc)
        self.assertEqual((code, type_, message), (-4000, "ValueError", "bad value"))
        self.assertIn("Traceback (most recent call last)", tb)
        self.assertIn("test_python_exception_fields", tb)
        self.assertIn("ValueError: bad value", tb)
        self.assertTrue(cause_is_exc)
        self.assertEqual(_core._error_fields(FileNotFoundError(2, "nope"))[:3],
                         (-2, "FileNotFoundError", "[Errno 2] nope"))
        self.assertEqual(_core._error_fields(KeyError("k"))[1:3], ("KeyError", "'k'"))
        self.assertEqual(_core._error_fields(asyncio.CancelledError())[:2], (-125, "CancelledError"))

    def test_foreign_errors_become_python_exceptions(self):
        e = _core._make_error(-2, "KeyError", "no such key")
        self.assertIs(type(e), KeyError)
        e = _core._make_error(-22, "TypeError", "wrong")
        self.assertIs(type(e), TypeError)
        self.assertEqual(str(e), "wrong")
        e = _core._make_error(-111, "ConnectionRefusedError", "refused")
        self.assertIs(type(e), ConnectionRefusedError)
        self.assertEqual(e.errno, 111)
        e = _core._make_error(-125, "CancelledError", "stop")
        self.assertIs(type(e), asyncio.CancelledError)
        e = _core._make_error(-5, "LuaError", "boom", "stack traceback:\n\t[C]: in ?")
        self.assertIs(type(e), globeflower.RemoteError)
        self.assertEqual((e.type, e.message, e.code), ("LuaError", "boom", -5))
        self.assertEqual(e.traceback, "stack traceback:\n\t[C]: in ?")
        self.assertEqual(str(e), "LuaError: boom")
        # Another host's error never stops the program here.
        for name in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
            self.assertIs(type(_core._make_error(-4000, name, "x")), globeflower.RemoteError)
        # A class that does not take a message: a RemoteError of that type.
        e = _core._make_error(-4000, "UnicodeDecodeError", "x")
        self.assertIs(type(e), globeflower.RemoteError)
        self.assertEqual(e.type, "UnicodeDecodeError")

    def test_foreign_error_keeps_its_value(self):
        # Sent on, an exception made from a value is that value again: same
        # fields, not a new "RemoteError"/"KeyError" built from Python's view.
        self.assertEqual(_core._error_fields(_core._make_error(-5, "LuaError", "boom", "tb")),
                         (-5, "LuaError", "boom", "tb", False))
        e = _core._make_error(-2, "KeyError", "k")
        self.assertEqual(str(e), "'k'")  # Python's view...
        self.assertEqual(_core._error_fields(e), (-2, "KeyError", "k", None, False))  # ...the value sent

    def test_plugin_errors(self):
        async def main():
            with self.assertRaises(globeflower.RemoteError) as cm:
                await self.ex.fail("it broke")
            e = cm.exception
            self.assertEqual((e.type, e.message, e.code), ("ExampleError", "it broke", -5))
            with self.assertRaisesRegex(TypeError, r"add\(\) takes two ints"):
                self.ex.add("a", 1)
            with self.assertRaises(OverflowError):
                self.ex.add(2**62, 2**62)
            with self.assertRaisesRegex(TypeError, "takes a delay"):
                await self.ex.sleep_then_echo("soon", 1)
            return e

        err = self.run_async(main())

        # Re-raised from a Python export, the plugin's error goes on as itself.
        async def reraise():
            raise err

        globeflower.export("t.reraise", reraise)

        async def caller():
            with self.assertRaises(globeflower.RemoteError) as cm:
                await globeflower.call("t.reraise")
            return cm.exception

        again = self.run_async(caller())
        self.assertEqual((again.type, again.message, again.code), ("ExampleError", "it broke", -5))

    def test_exception_identity_across_hops(self):
        exc = ValueError("mine")

        def raiser():
            raise exc

        async def araiser():
            await asyncio.sleep(0)
            raise exc

        globeflower.export("t.raiser", raiser)
        globeflower.export("t.araiser", araiser)

        async def main():
            for name in ("t.raiser", "t.araiser"):
                with self.assertRaises(ValueError) as cm:
                    await globeflower.call(name)
                self.assertIs(cm.exception, exc)
            # Through the C plugin as data, then raised by a Python export.
            carried = await self.ex.sleep_then_echo(0, {"error": exc})
            self.assertIs(carried["error"], exc)

        self.run_async(main())

    def test_error_types_cross(self):
        def keyerror(k):
            return {}[k]

        def oserror():
            raise ConnectionResetError(104, "reset")

        globeflower.export("t.keyerror", keyerror)
        globeflower.export("t.oserror", oserror)

        async def main():
            with self.assertRaises(KeyError) as cm:
                await globeflower.call("t.keyerror", "missing")
            self.assertEqual(cm.exception.args, ("missing",))
            with self.assertRaises(ConnectionResetError):
                await globeflower.call("t.oserror")

        self.run_async(main())


    def test_keyboard_interrupt_in_exports(self):
        def sync_ki():
            raise KeyboardInterrupt("sync")

        async def async_ki():
            await asyncio.sleep(0)
            raise KeyboardInterrupt("async")

        globeflower.export("t.sync_ki", sync_ki)
        globeflower.export("t.async_ki", async_ki)

        async def main(name):
            await globeflower.call(name)

        # A sync export runs inside call(): its caller gets it, as from a
        # plain call; an async export's task stops the loop, as asyncio's do.
        with self.assertRaisesRegex(KeyboardInterrupt, "sync"):
            self.loop.run_until_complete(main("t.sync_ki"))
        fut = globeflower.call("t.async_ki")
        with self.assertRaisesRegex(KeyboardInterrupt, "async"):
            self.loop.run_until_complete(fut)
        self.loop.run_until_complete(asyncio.sleep(0))  # the loop still runs
        self.assertIsInstance(fut.exception(), KeyboardInterrupt)


class TestCalls(HostsTestCase):
    def test_only_from_the_loops_thread(self):
        import threading

        globeflower.export("t.x", lambda: 1)
        out = []

        def other():
            for f in (lambda: globeflower.call("t.x", loop=self.loop),
                      lambda: self.ex.add(1, 2, loop=self.loop),
                      lambda: self.ex.sleep_then_echo(0, 1, loop=self.loop),
                      lambda: globeflower.export("t.y", print, loop=self.loop),
                      lambda: globeflower.unexport("t.x", loop=self.loop),
                      lambda: globeflower.exports(loop=self.loop)):
                try:
                    f()
                    out.append("no error")
                except RuntimeError as e:
                    out.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        self.assertEqual(out, ["globeflower: the loop is owned by another thread"] * 6)
        self.assertEqual(self.run_async(globeflower.call("t.x")), 1)

    def test_called_by_c_without_the_gil(self):
        # A C host calling through gfl_call: ctypes drops the GIL around the
        # call, so the export's entry point must take it itself.
        import ctypes
        from ctypes import POINTER, byref, c_char_p, c_int, c_int64, c_size_t, c_void_p

        lib = ctypes.CDLL(_core.__file__)  # its dependencies give libglobeflower's symbols
        for name, res, args in (
                ("gfl_value_int", c_void_p, [c_int64]),
                ("gfl_value_string", c_void_p, [c_char_p, c_size_t]),
                ("gfl_value_unref", None, [c_void_p]),
                ("gfl_call", c_void_p, [c_void_p, c_char_p, POINTER(c_void_p), c_size_t]),
                ("gfl_future_state_of", c_int, [c_void_p]),
                ("gfl_future_value", c_void_p, [c_void_p]),
                ("gfl_future_unref", None, [c_void_p]),
                ("gfl_value_get_int", c_int, [c_void_p, POINTER(c_int64)]),
                ("gfl_value_error_type", c_char_p, [c_void_p]),
                ("gfl_value_error_message", c_char_p, [c_void_p]),
                ("gfl_loop_take_interrupt", c_void_p, [c_void_p])):
            getattr(lib, name).restype = res
            getattr(lib, name).argtypes = args
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype = c_void_p
        get_pointer.argtypes = [ctypes.py_object, c_char_p]
        core = get_pointer(self.loop._capsule(), b"globeflower.loop")

        def interrupt():
            raise KeyboardInterrupt("stop the host")

        globeflower.export("t.double", lambda x: x * 2)
        globeflower.export("t.upper", lambda x: x.upper())
        globeflower.export("t.interrupt", interrupt)

        def c_call(name, value=None):
            args = (c_void_p * 1)(value)
            f = lib.gfl_call(core, name, args, 1 if value else 0)
            if value:
                lib.gfl_value_unref(value)
            return f

        f = c_call(b"t.double", lib.gfl_value_int(21))
        self.assertEqual(lib.gfl_future_state_of(f), 1)  # a result
        out = c_int64()
        self.assertEqual(lib.gfl_value_get_int(lib.gfl_future_value(f), byref(out)), 0)
        self.assertEqual(out.value, 42)
        lib.gfl_future_unref(f)

        f = c_call(b"t.upper", lib.gfl_value_int(1))
        self.assertEqual(lib.gfl_future_state_of(f), 2)  # an error
        err = lib.gfl_future_value(f)
        self.assertEqual(lib.gfl_value_error_type(err), b"AttributeError")
        self.assertIn(b"upper", lib.gfl_value_error_message(err))
        lib.gfl_future_unref(f)

        # The core reports the interrupt on stderr (its default exception
        # handler): keep it out of the test output, and check it.
        with tempfile.TemporaryFile() as captured:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(captured.fileno(), 2)
            try:
                f = c_call(b"t.interrupt")
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            self.assertIn(b"KeyboardInterrupt in the Python export 't.interrupt'", captured.read())
        err = lib.gfl_future_value(f)
        self.assertEqual(lib.gfl_value_error_type(err), b"KeyboardInterrupt")
        self.assertEqual(lib.gfl_value_error_message(err), b"stop the host")
        lib.gfl_future_unref(f)
        # Called by another host, it also interrupted the loop for its host.
        taken = lib.gfl_loop_take_interrupt(core)
        self.assertTrue(taken)
        self.assertEqual(lib.gfl_value_error_type(taken), b"KeyboardInterrupt")
        lib.gfl_value_unref(taken)

    def test_sync_and_async_exports(self):
        def add(a, b):
            return a + b

        async def slow_double(x):
            await asyncio.sleep(0.001)
            return x * 2

        globeflower.export("py.add", add)
        globeflower.export("py.slow_double", slow_double)
        self.assertEqual(globeflower.exports()[-2:], ["py.add", "py.slow_double"])

        async def main():
            self.assertEqual(await globeflower.call("py.add", 2, 3), 5)
            self.assertEqual(await globeflower.call("py.add", [1], [2, {"x": 3}]), [1, 2, {"x": 3}])
            self.assertEqual(await globeflower.call("py.slow_double", 21), 42)
            results = await asyncio.gather(*(globeflower.call("py.slow_double", i) for i in range(50)))
            self.assertEqual(results, [2 * i for i in range(50)])
            fut = globeflower.call("py.add", 1, 1)
            self.assertTrue(asyncio.isfuture(fut))
            self.assertEqual(await fut, 2)

        self.run_async(main())

    def test_other_callables(self):
        class AsyncCallable:
            async def __call__(self, x):
                return ("async", x)

        class SyncCallable:
            def __call__(self, x):
                return ("sync", x)

        import functools

        async def tagged(tag, x):
            return (tag, x)

        globeflower.export("t.acall", AsyncCallable())
        globeflower.export("t.scall", SyncCallable())
        globeflower.export("t.partial", functools.partial(tagged, "p"))
        globeflower.export("t.builtin", len)

        async def main():
            self.assertEqual(await globeflower.call("t.acall", 1), ["async", 1])
            self.assertEqual(await globeflower.call("t.scall", 2), ["sync", 2])
            self.assertEqual(await globeflower.call("t.partial", 3), ["p", 3])
            self.assertEqual(await globeflower.call("t.builtin", "four"), 4)

        self.run_async(main())

    def test_objects_keep_identity_through_calls(self):
        class Thing:
            pass

        obj = Thing()
        globeflower.export("t.same", lambda x: x)

        async def echo_async(x):
            return await self.ex.sleep_then_echo(0, x)

        globeflower.export("t.echo_async", echo_async)

        async def main():
            self.assertIs(await globeflower.call("t.same", obj), obj)
            self.assertIs((await globeflower.call("t.echo_async", [obj]))[0], obj)

        self.run_async(main())

    def test_unknown_name(self):
        async def main():
            with self.assertRaisesRegex(LookupError, "nothing is exported under the name 'no.such'"):
                await globeflower.call("no.such", 1)

        self.run_async(main())

    def test_wrong_arity_is_the_exports_own_type_error(self):
        def two(a, b):
            return a

        async def atwo(a, b):
            return a

        globeflower.export("t.two", two)
        globeflower.export("t.atwo", atwo)

        async def main():
            for name, fn in (("t.two", "two"), ("t.atwo", "atwo")):
                with self.assertRaisesRegex(TypeError, fn + r"\(\) missing 1 required positional argument"):
                    await globeflower.call(name, 1)
                with self.assertRaisesRegex(TypeError, fn + r"\(\) takes 2 positional arguments but 3"):
                    await globeflower.call(name, 1, 2, 3)

        self.run_async(main())

    def test_results_that_do_not_convert(self):
        def cyclic():
            v = []
            v.append(v)
            return v

        async def acyclic():
            return cyclic()

        globeflower.export("t.cyclic", cyclic)
        globeflower.export("t.acyclic", acyclic)
        globeflower.export("t.coro_from_def", lambda: asyncio.sleep(0))

        async def main():
            for name in ("t.cyclic", "t.acyclic"):
                with self.assertRaisesRegex(ValueError, "contains itself"):
                    await globeflower.call(name)
            with self.assertRaisesRegex(TypeError, "export a coroutine function"):
                await globeflower.call("t.coro_from_def")

        self.run_async(main())

    def test_bad_arguments(self):
        for name in ("", "has space", "x" * 129, "dash-ed", "ünï"):
            with self.subTest(name=name):
                with self.assertRaisesRegex(ValueError, "invalid export name"):
                    globeflower.export(name, print)
                with self.assertRaisesRegex(ValueError, "invalid export name"):
                    globeflower.call(name)
        globeflower.export("x" * 128, print)  # the longest allowed
        globeflower.unexport("x" * 128)
        with self.assertRaises(TypeError):
            globeflower.export(b"bytes", print)
        with self.assertRaisesRegex(TypeError, "callable"):
            globeflower.export("t.notcallable", 42)
        with self.assertRaisesRegex(TypeError, "unexpected keyword"):
            globeflower.call("t.x", 1, other=2)
        with self.assertRaises(TypeError):
            globeflower.call()
        def fn():
            pass

        globeflower.export("t.once", print)
        before = sys.getrefcount(fn)
        for _ in range(10):
            with self.assertRaisesRegex(ValueError, "already exported"):
                globeflower.export("t.once", fn)
        self.assertEqual(sys.getrefcount(fn), before)  # refused exports keep nothing

    def test_unexport(self):
        def fn():
            return "here"

        ref = weakref.ref(fn)
        globeflower.export("t.gone", fn)
        del fn
        self.assertIn("t.gone", globeflower.exports())
        self.assertEqual(self.run_async(globeflower.call("t.gone")), "here")
        globeflower.unexport("t.gone")
        gc.collect()
        self.assertIsNone(ref(), "unexport released the function")
        self.assertNotIn("t.gone", globeflower.exports())
        with self.assertRaises(LookupError):
            self.run_async(globeflower.call("t.gone"))
        with self.assertRaisesRegex(LookupError, "nothing is exported"):
            globeflower.unexport("t.gone")
        globeflower.export("t.gone", print)  # the name is free again

    def test_export_that_unexports_itself(self):
        def once():
            globeflower.unexport("t.self")
            return "last"

        globeflower.export("t.self", once)
        self.assertEqual(self.run_async(globeflower.call("t.self")), "last")
        self.assertNotIn("t.self", globeflower.exports())

    def test_closing_the_loop_unexports(self):
        loop = globeflower.new_event_loop()

        def fn():
            return 1

        ref = weakref.ref(fn)
        globeflower.export("t.on_other", fn, loop=loop)
        self.assertEqual(globeflower.exports(loop=loop), ["t.on_other"])
        self.assertNotIn("t.on_other", globeflower.exports())  # registries are per loop
        del fn
        loop.close()
        gc.collect()
        self.assertIsNone(ref())
        with self.assertRaisesRegex(RuntimeError, "closed"):
            globeflower.exports(loop=loop)

    def test_which_loop(self):
        asyncio.set_event_loop(None)
        with self.assertRaisesRegex(RuntimeError, "no event loop"):
            globeflower.call("t.x")
        with self.assertRaisesRegex(RuntimeError, "no event loop"):
            globeflower.export("t.x", print)
        with self.assertRaisesRegex(RuntimeError, "no event loop"):
            self.ex.add(1, 2)
        # loop= works anywhere; the thread's current loop when set.
        globeflower.export("t.x", lambda: "x", loop=self.loop)
        fut = globeflower.call("t.x", loop=self.loop)
        self.assertEqual(self.loop.run_until_complete(fut), "x")
        self.assertEqual(self.ex.add(1, 2, loop=self.loop), 3)
        asyncio.set_event_loop(self.loop)
        self.assertEqual(self.loop.run_until_complete(globeflower.call("t.x")), "x")
        with self.assertRaisesRegex(TypeError, "globeflower.Loop"):
            globeflower.call("t.x", loop=object())
        # A stock asyncio loop is not ours.
        stock = asyncio.SelectorEventLoop()
        try:
            async def on_stock():
                with self.assertRaisesRegex(RuntimeError, "not a globeflower loop"):
                    globeflower.call("t.x")
                with self.assertRaisesRegex(RuntimeError, "not a globeflower loop"):
                    self.ex.add(1, 2)

            stock.run_until_complete(on_stock())
        finally:
            stock.close()
        closed = globeflower.new_event_loop()
        closed.close()
        with self.assertRaisesRegex(RuntimeError, "closed"):
            globeflower.call("t.x", loop=closed)

    def test_running_loop_wins(self):
        other = globeflower.new_event_loop()
        try:
            globeflower.export("t.where", lambda: "other", loop=other)
            globeflower.export("t.where", lambda: "current")

            async def main():
                return await globeflower.call("t.where")

            self.assertEqual(other.run_until_complete(main()), "other")
            self.assertEqual(self.loop.run_until_complete(main()), "current")
        finally:
            other.close()


class TestCancellation(HostsTestCase):
    def test_cancelling_the_caller_cancels_the_export_task(self):
        events = []
        started = asyncio.Event()

        async def worker():
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                events.append("export cancelled")
                raise

        globeflower.export("t.worker", worker)

        async def main():
            fut = globeflower.call("t.worker")
            await started.wait()
            fut.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await fut
            for _ in range(5):
                await asyncio.sleep(0)

        self.run_async(main())
        self.assertEqual(events, ["export cancelled"])

    def test_export_task_cancelled_cancels_the_caller(self):
        async def gives_up():
            await asyncio.sleep(0)
            raise asyncio.CancelledError()

        async def cancels_itself():
            asyncio.current_task().cancel()
            await asyncio.sleep(1)

        globeflower.export("t.gives_up", gives_up)
        globeflower.export("t.cancels_itself", cancels_itself)

        async def main():
            for name in ("t.gives_up", "t.cancels_itself"):
                fut = globeflower.call(name)
                with self.assertRaises(asyncio.CancelledError):
                    await fut
                self.assertTrue(fut.cancelled())

        self.run_async(main())

    def test_cancelling_a_plugin_future(self):
        async def main():
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(self.ex.sleep_then_echo(30, "late"), 0.01)
            task = asyncio.ensure_future(self.ex.sleep_then_echo(30, "late"))
            await asyncio.sleep(0)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            # Still usable afterwards.
            self.assertEqual(await self.ex.sleep_then_echo(0.001, "on time"), "on time")

        self.run_async(main())

    def test_timeout_of_a_chain_reaches_the_end(self):
        # Python caller -> Python export -> C plugin: cancelling the first
        # cancels the last.
        events = []

        async def relay(v):
            try:
                return await self.ex.sleep_then_echo(30, v)
            except asyncio.CancelledError:
                events.append("relay cancelled")
                raise

        globeflower.export("t.relay", relay)

        async def main():
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(globeflower.call("t.relay", 1), 0.01)
            for _ in range(5):
                await asyncio.sleep(0)

        self.run_async(main())
        self.assertEqual(events, ["relay cancelled"])


    def test_closing_the_loop_with_calls_pending(self):
        # Pending calls hold Python objects in the core and the core future
        # in asyncio's callbacks: closing the loop lets all of it go.
        class Thing:
            pass

        loop = globeflower.new_event_loop()
        started = asyncio.Event()

        async def forever(x):
            started.set()
            await asyncio.sleep(3600)

        globeflower.export("t.forever", forever, loop=loop)
        obj = Thing()
        refs = [weakref.ref(obj)]
        futs = [self.ex.sleep_then_echo(3600, [obj], loop=loop), globeflower.call("t.forever", obj, loop=loop)]
        refs += [weakref.ref(f) for f in futs]
        loop.run_until_complete(started.wait())
        del obj, futs, forever
        with self.assertLogs("asyncio", "ERROR") as logs:  # as on any loop closed with tasks pending
            loop.close()
            gc.collect()
        self.assertIn("Task was destroyed but it is pending", "\n".join(logs.output))
        self.assertEqual([r() for r in refs], [None] * len(refs))


class TestPlugins(HostsTestCase):
    def test_module_like(self):
        ex = self.ex
        self.assertIsInstance(ex, globeflower.Plugin)
        self.assertEqual(ex.__name__, "example")
        self.assertEqual(sorted(ex.functions), ["add", "concat", "fail", "sleep_then_echo"])
        self.assertTrue({"add", "concat", "fail", "sleep_then_echo"} <= set(dir(ex)))
        self.assertIn("example", repr(ex))
        self.assertFalse(ex.add.is_async)
        self.assertTrue(ex.sleep_then_echo.is_async)
        self.assertEqual(ex.add.__name__, "add")
        self.assertIn("example.add", repr(ex.add))
        with self.assertRaisesRegex(AttributeError, "no function 'nope'"):
            ex.nope
        with self.assertRaises(AttributeError):
            getattr(ex, "add\0")
        with self.assertRaises(TypeError):
            globeflower.Plugin()

    def test_calls(self):
        async def main():
            self.assertEqual(self.ex.add(40, 2), 42)
            self.assertEqual(self.ex.concat("a", "b", "c"), "abc")
            self.assertEqual(self.ex.concat("a", b"b"), b"ab")
            self.assertEqual(self.ex.concat(), "")
            self.assertEqual(await self.ex.sleep_then_echo(0.001, {"v": [1, 2]}), {"v": [1, 2]})
            with self.assertRaisesRegex(TypeError, "unexpected keyword"):
                self.ex.add(1, b=2)

        self.run_async(main())

    def test_loads_once_and_outlives_its_object(self):
        again = globeflower.plugin("example")
        self.assertIsNot(again, self.ex)
        add = again.add
        del again
        gc.collect()
        self.assertEqual(add(1, 1, loop=self.loop), 2)  # the function keeps the plugin loaded

    def test_load_errors(self):
        with self.assertRaisesRegex(ImportError, "nosuchplugin") as cm:
            globeflower.plugin("nosuchplugin")
        self.assertEqual(cm.exception.name, "nosuchplugin")
        for bad in ("", "../example", "a b", "x" * 65, "dot.ted"):
            with self.subTest(name=bad):
                with self.assertRaisesRegex(ValueError, "invalid plugin name"):
                    globeflower.plugin(bad)
        with self.assertRaises(ValueError):
            globeflower.plugin("exa\0mple")
        with self.assertRaises(TypeError):
            globeflower.plugin(b"example")
        # A shared object that is not that plugin: its init symbol is missing.
        with self.assertRaisesRegex(ImportError, "gfl_plugin_init_notexample"):
            globeflower.plugin("notexample", path=_core.__file__)
        with self.assertRaisesRegex(ImportError, "cannot load plugin"):
            globeflower.plugin("example2", path="/nonexistent/example2.so")


    @unittest.skipUnless(shutil.which("cc"), "no C compiler to build a plugin for a newer ABI")
    def test_abi_mismatch(self):
        # A plugin built for an ABI major this core is not: it refuses to
        # load (GFL_PLUGIN_CHECK_API), and the core's message says so.
        abi = os.path.join(os.environ.get("abs_top_srcdir", os.path.join(os.path.dirname(__file__), "..", "..")),
                           "abi")
        src = textwrap.dedent("""
            #include <globeflower_plugin.h>
            #undef GFL_ABI_MAJOR
            #define GFL_ABI_MAJOR 99  /* built against a future core */
            __attribute__((visibility("default")))
            int gfl_plugin_init_futureabi(const gfl_api *api, gfl_plugin *self)
            {
                (void)self;
                GFL_PLUGIN_CHECK_API(api, value_depth);
                return 0;
            }
        """)
        with tempfile.TemporaryDirectory() as d:
            c, so = os.path.join(d, "futureabi.c"), os.path.join(d, "futureabi.so")
            with open(c, "w") as f:
                f.write(src)
            subprocess.run(["cc", "-shared", "-fPIC", "-I", abi, c, "-o", so], check=True)
            with self.assertRaisesRegex(ImportError, "futureabi refused to load: ABI version mismatch"):
                globeflower.plugin("futureabi", path=so)


class TestInterpreterExit(unittest.TestCase):
    def test_exit_with_exports_and_pending_values(self):
        # Exports left on an open loop, values holding Python objects in
        # pending core futures, an asyncio future handed to the core: the
        # interpreter exits cleanly and calls after atexit find nothing.
        script = textwrap.dedent("""
            import atexit
            def late():  # registered first: runs after globeflower's handler
                import globeflower
                print("late", globeflower.exports(loop=loop))
                fut = globeflower.call("left.behind", loop=loop)
                print("late call", type(fut.exception()).__name__)
            atexit.register(late)
            import asyncio, globeflower
            loop = globeflower.new_event_loop()
            asyncio.set_event_loop(loop)
            ex = globeflower.plugin("example")
            class Thing: pass
            globeflower.export("left.behind", lambda: Thing())
            async def forever():
                await asyncio.sleep(3600)
            globeflower.export("left.async", forever)
            pending = [ex.sleep_then_echo(3600, [Thing(), {"t": Thing()}]),
                       globeflower.call("left.async")]
            loop.run_until_complete(asyncio.sleep(0.01))
            print("exports", globeflower.exports())
        """)
        env = dict(os.environ)
        r = subprocess.run([sys.executable, "-X", "dev", "-c", script], env=env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("exports ['left.behind', 'left.async']", r.stdout)
        self.assertIn("late []", r.stdout)
        self.assertIn("late call LookupError", r.stdout)
        self.assertNotIn("Fatal", r.stderr)


if __name__ == "__main__":
    unittest.main()
