/*
 * A C host embedding Python on its own loop, the way a game engine does
 * (docs/python.md, "Embedding"): the host creates the gfl_loop, starts
 * Python, hands the loop over in a capsule and pumps it every "frame" with
 * gfl_loop_run_once / gfl_loop_run_for WITHOUT holding the GIL.
 *
 *   embed_host finalize-first   ... then Py_FinalizeEx with a connection
 *                               open, pumps, and gfl_loop_free
 *   embed_host free-first       ... then gfl_loop_free with a connection
 *                               open, Python sees a closed loop, then
 *                               Py_FinalizeEx
 *
 * Run by tests/python/check-python.sh (PYTHONPATH finds the package built
 * in the tree). Prints "embed_host: N passed, 0 failed" and exits 0 when
 * every check holds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <globeflower.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

static int passed, failed;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (cond) {                                                   \
            passed++;                                                 \
        } else {                                                      \
            failed++;                                                 \
            fprintf(stderr, "embed_host:%d: FAIL: %s: ", __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                             \
            fputc('\n', stderr);                                      \
        }                                                             \
    } while (0)

/* ------------------------------------------------------------------ */
/* The host's exception handler                                        */

static int handler_calls;
static char handler_message[256];
static char handler_error_type[64];

static void on_exception(gfl_loop *loop, const char *message, gfl_value *error, void *ud)
{
    (void)loop;
    (void)ud;
    handler_calls++;
    snprintf(handler_message, sizeof handler_message, "%s", message ? message : "");
    const char *type = error ? gfl_value_error_type(error) : NULL;
    snprintf(handler_error_type, sizeof handler_error_type, "%s", type ? type : "");
}

/* ------------------------------------------------------------------ */
/* Python, entered with the GIL taken for the call only                */

static PyObject *main_dict; /* __main__'s globals (borrowed) */

/* Runs statements; 0 on success (a traceback is printed otherwise). */
static int py_exec(const char *code)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *r = PyRun_String(code, Py_file_input, main_dict, main_dict);
    if (!r)
        PyErr_Print();
    Py_XDECREF(r);
    PyGILState_Release(g);
    return r ? 0 : -1;
}

/* The truth of an expression: 1, 0, or -1 when it raised. */
static int py_true(const char *expr)
{
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *r = PyRun_String(expr, Py_eval_input, main_dict, main_dict);
    int t = r ? PyObject_IsTrue(r) : -1;
    if (t < 0)
        PyErr_Print();
    Py_XDECREF(r);
    PyGILState_Release(g);
    return t;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Frames until `expr` holds: gfl_loop_run_once (5 ms budget to wait) and
 * gfl_loop_run_for in turn, the GIL never held while pumping. 0 when it
 * held within `seconds`, else -1 (a pump error is reported). */
static int pump_until(gfl_loop *loop, const char *expr, double seconds)
{
    double end = now() + seconds;
    for (int i = 0; now() < end; i++) {
        int rc = (i & 1) ? gfl_loop_run_for(loop, 0.002) : gfl_loop_run_once(loop, 0.005);
        if (rc < 0) {
            fprintf(stderr, "embed_host: pump failed: %s (waiting for %s)\n", gfl_strerror(rc), expr);
            return -1;
        }
        if (py_true(expr) == 1)
            return 0;
    }
    fprintf(stderr, "embed_host: timed out waiting for %s\n", expr);
    return -1;
}

static int c_ran;
static void c_callback(void *arg)
{
    (void)arg;
    c_ran++;
}

/* ------------------------------------------------------------------ */

static const char *const setup_code =
    "import asyncio, threading, globeflower\n"
    "loop = globeflower.Loop.from_capsule(cap)\n"
    "results = {}\n"
    "async def handle(reader, writer):\n"
    "    line = await reader.readline()\n"
    "    writer.write(line.upper())\n"
    "    await writer.drain()\n"
    "    writer.close()\n"
    "async def main():\n"
    "    results['running'] = asyncio.get_running_loop() is loop\n"
    "    server = await asyncio.start_server(handle, '127.0.0.1', 0)\n"
    "    port = server.sockets[0].getsockname()[1]\n"
    "    reader, writer = await asyncio.open_connection('127.0.0.1', port)\n"
    "    writer.write(b'hello host\\n')\n"
    "    await writer.drain()\n"
    "    results['echo'] = await reader.readline()\n"
    "    writer.close()\n"
    "    await writer.wait_closed()\n"
    "    results['worker'] = await asyncio.to_thread(threading.get_ident)\n"
    "    results['executor'] = await loop.run_in_executor(None, sum, [1, 2, 3])\n"
    "    server.close()\n"
    "    await server.wait_closed()\n"
    "    results['done'] = True\n"
    "task = loop.create_task(main())\n"
    "loop.call_soon(lambda: results.__setitem__('cb_running', asyncio.get_running_loop() is loop))\n";

/* A KeyboardInterrupt from a callback the host pumps: the host's handler
 * is called, its pump returns GFL_EINTR, and the next pumps go on. */
static void check_interrupts(gfl_loop *loop)
{
    py_exec("after = []\n"
            "def boom():\n"
            "    raise KeyboardInterrupt('stop the host')\n"
            "loop.call_soon(boom)\n"
            "loop.call_soon(after.append, 1)\n");
    handler_calls = 0;
    int rc = gfl_loop_run_once(loop, 0);
    CHECK(rc == GFL_EINTR, "run_once gave %d (%s)", rc, gfl_strerror(rc));
    CHECK(handler_calls == 1, "handler called %d times", handler_calls);
    CHECK(strstr(handler_message, "KeyboardInterrupt") != NULL, "message %s", handler_message);
    CHECK(strcmp(handler_error_type, "KeyboardInterrupt") == 0, "type %s", handler_error_type);
    gfl_value *err = gfl_loop_take_interrupt(loop);
    CHECK(err && gfl_value_type_of(err) == GFL_VALUE_ERROR, "no interrupt error");
    if (err) {
        const char *type = gfl_value_error_type(err), *msg = gfl_value_error_message(err);
        const char *tb = gfl_value_error_traceback(err);
        CHECK(type && strcmp(type, "KeyboardInterrupt") == 0, "type %s", type ? type : "(null)");
        CHECK(msg && strcmp(msg, "stop the host") == 0, "message %s", msg ? msg : "(null)");
        CHECK(tb && strstr(tb, "boom") != NULL, "traceback %s", tb ? tb : "(null)");
        gfl_value_unref(err);
    }
    CHECK(gfl_loop_take_interrupt(loop) == NULL, "the interrupt is taken once");
    /* The callback queued behind it waited, in order, and runs now. */
    CHECK(py_true("after == []") == 1, "the next callback ran in the interrupted pump");
    rc = gfl_loop_run_once(loop, 0);
    CHECK(rc >= 1, "next pump gave %d", rc);
    CHECK(py_true("after == [1]") == 1, "the queued callback did not run");

    /* SystemExit from a task: the same, and Python keeps working. */
    py_exec("async def leave():\n"
            "    await asyncio.sleep(0)\n"
            "    raise SystemExit(3)\n"
            "exit_task = loop.create_task(leave())\n");
    handler_calls = 0;
    int eintr = 0;
    for (int i = 0; i < 20 && !eintr; i++)
        eintr = gfl_loop_run_once(loop, 0) == GFL_EINTR;
    CHECK(eintr && handler_calls == 1, "SystemExit: eintr %d, handler %d", eintr, handler_calls);
    err = gfl_loop_take_interrupt(loop);
    CHECK(err && strcmp(gfl_value_error_type(err), "SystemExit") == 0, "SystemExit value");
    if (err)
        gfl_value_unref(err);
    py_exec("async def later():\n"
            "    await asyncio.sleep(0.01)\n"
            "    return 'fine'\n"
            "after_task = loop.create_task(later())\n");
    CHECK(pump_until(loop, "after_task.done()", 5) == 0, "Python stopped after SystemExit");
    CHECK(py_true("after_task.result() == 'fine'") == 1, "after_task result");
}

/* close() detaches: the host's loop keeps running, Python's queued
 * callbacks never run, a stale capsule is a ValueError. */
static void check_close_and_stale(gfl_loop *loop)
{
    CHECK(py_exec("late = []\n"
                  "loop.call_later(0.01, late.append, 1)\n"
                  "loop.call_soon(late.append, 2)\n"
                  "loop.close()\n"
                  "assert loop.is_closed()\n") == 0, "close()");
    c_ran = 0;
    gfl_call_soon(loop, c_callback, NULL);
    double end = now() + 0.05;
    int rc = 0;
    while (now() < end && rc >= 0)
        rc = gfl_loop_run_once(loop, 0.005);
    CHECK(rc >= 0, "host pump after close gave %s", gfl_strerror(rc));
    CHECK(c_ran == 1, "the host's callback ran %d times", c_ran);
    CHECK(gfl_loop_is_closed(loop) == 0, "the host's loop was closed");
    CHECK(py_true("late == []") == 1, "a closed loop's callback ran");

    /* A loop that was freed: never touched, a clear error. */
    gfl_loop *dead = gfl_loop_new(NULL);
    gfl_loop_free(dead);
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *stale = PyCapsule_New(dead, "globeflower.loop", NULL);
    PyDict_SetItemString(main_dict, "stale", stale);
    Py_XDECREF(stale);
    PyGILState_Release(g);
    CHECK(py_exec("try:\n"
                  "    globeflower.Loop.from_capsule(stale)\n"
                  "except ValueError as e:\n"
                  "    stale_error = str(e)\n"
                  "else:\n"
                  "    stale_error = None\n") == 0, "stale capsule");
    CHECK(py_true("stale_error is not None and 'live loop' in stale_error") == 1, "stale capsule: no ValueError");
    CHECK(py_exec("try:\n"
                  "    globeflower.Loop.from_capsule(42)\n"
                  "except (TypeError, ValueError):\n"
                  "    pass\n") == 0, "not a capsule");
}

/* A second Python loop on the same host loop, left with a connection open
 * for the teardown. */
static void open_connection(gfl_loop *loop)
{
    CHECK(py_exec("loop = globeflower.Loop.from_capsule(cap)\n"
                  "lost = []\n"
                  "class Keep(asyncio.Protocol):\n"
                  "    def connection_made(self, t):\n"
                  "        self.t = t\n"
                  "    def connection_lost(self, exc):\n"
                  "        lost.append(exc)\n"
                  "async def hold():\n"
                  "    global server, pair\n"
                  "    server = await loop.create_server(Keep, '127.0.0.1', 0)\n"
                  "    port = server.sockets[0].getsockname()[1]\n"
                  "    pair = await asyncio.open_connection('127.0.0.1', port)\n"
                  "    results['held'] = True\n"
                  "    await asyncio.sleep(3600)\n"
                  "holder = loop.create_task(hold())\n"
                  "loop.call_later(3600, print, 'never')\n") == 0, "second loop");
    CHECK(pump_until(loop, "results.get('held')", 10) == 0, "connection for the teardown");
}

int main(int argc, char **argv)
{
    int free_first = argc > 1 && strcmp(argv[1], "free-first") == 0;
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop) {
        fprintf(stderr, "embed_host: gfl_loop_new failed\n");
        return 1;
    }
    gfl_loop_set_exception_handler(loop, on_exception, NULL);

    Py_InitializeEx(0);
    main_dict = PyModule_GetDict(PyImport_AddModule("__main__"));
    PyObject *cap = PyCapsule_New(loop, "globeflower.loop", NULL);
    PyDict_SetItemString(main_dict, "cap", cap);
    Py_DECREF(cap);
    if (py_exec(setup_code) < 0) {
        fprintf(stderr, "embed_host: Python set-up failed\n");
        return 1;
    }
    /* From here the host pumps without the GIL. */
    PyThreadState *main_ts = PyEval_SaveThread();

    CHECK(pump_until(loop, "results.get('done') or task.done()", 10) == 0, "streams and to_thread");
    CHECK(py_true("task.done() and task.exception() is None") == 1, "main() failed");
    CHECK(py_true("results.get('running') and results.get('cb_running')") == 1, "get_running_loop() in the host's pump");
    CHECK(py_true("results.get('echo') == b'HELLO HOST\\n'") == 1, "echo");
    CHECK(py_true("results.get('worker') not in (None, threading.get_ident())") == 1, "to_thread ran in a worker");
    CHECK(py_true("results.get('executor') == 6") == 1, "run_in_executor");
    CHECK(py_true("asyncio._get_running_loop() is None") == 1, "the running loop was left set after the pump");

    check_interrupts(loop);
    check_close_and_stale(loop);
    open_connection(loop);

    int rc;
    if (!free_first) {
        /* Python goes first: it detaches at finalisation (its transports
         * aborted without calling Python later); the host's loop runs on. */
        PyEval_RestoreThread(main_ts);
        CHECK(Py_FinalizeEx() == 0, "Py_FinalizeEx");
        c_ran = 0;
        gfl_call_soon(loop, c_callback, NULL);
        for (int i = 0; i < 5; i++) {
            rc = gfl_loop_run_once(loop, 0.002);
            CHECK(rc >= 0, "pump after finalisation: %s", gfl_strerror(rc));
        }
        CHECK(c_ran == 1, "the host's callback after finalisation");
        rc = gfl_loop_free(loop);
        CHECK(rc == 0, "gfl_loop_free: %s", gfl_strerror(rc));
    } else {
        /* The host goes first (without the GIL): Python's protocols hear
         * connection_lost now, and Python then sees a closed loop. */
        rc = gfl_loop_free(loop);
        CHECK(rc == 0, "gfl_loop_free: %s", gfl_strerror(rc));
        CHECK(py_true("loop.is_closed()") == 1, "is_closed() after the host freed the loop");
        CHECK(py_true("len(lost) == 1") == 1, "connection_lost after the host freed the loop");
        CHECK(py_exec("try:\n"
                      "    loop.call_soon(print)\n"
                      "except RuntimeError as e:\n"
                      "    closed_error = str(e)\n"
                      "else:\n"
                      "    closed_error = None\n"
                      "try:\n"
                      "    loop.run_once()\n"
                      "except RuntimeError as e:\n"
                      "    closed_error2 = str(e)\n"
                      "loop.close()\n") == 0, "closed loop");
        CHECK(py_true("closed_error == 'Event loop is closed' == closed_error2") == 1, "errors on the closed loop");
        PyEval_RestoreThread(main_ts);
        CHECK(Py_FinalizeEx() == 0, "Py_FinalizeEx");
    }
    printf("embed_host (%s): %d passed, %d failed\n", free_first ? "free-first" : "finalize-first", passed, failed);
    return failed ? 1 : 0;
}
