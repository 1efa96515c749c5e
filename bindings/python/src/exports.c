/*
 * Python on the loop's registry of named functions (gfl_export/gfl_call):
 * globeflower.export(name, fn), unexport(name), call(name, *args) and
 * exports(), see docs/hosts.md "Calls".
 *
 * A plain function is a sync export: the core calls it and its return
 * value settles the caller's future at once. A coroutine function is an
 * async export: each call runs it as an asyncio task on the Python loop
 * that exported it, and the caller's future follows the task (cancelling
 * one cancels the other).
 *
 * The core calls exports from whatever host pumps the loop (a C host's
 * frame, a Lua task, Python's own loop), so every entry point takes the
 * GIL itself, and once the interpreter finalizes answers as if nothing
 * were exported. What Python exported goes away when its loop closes (or
 * is freed) and at interpreter exit (atexit), so later calls from other
 * hosts get the registry's "nothing is exported" LookupError.
 */
#include "gflpy.h"

#include <stdlib.h>
#include <string.h>

#define EXPORT_NAME_MAX 128

/* One Python export: the `ud` of its registry entry. */
struct py_export {
    struct py_export *prev, *next; /* every live record (under the GIL) */
    gflpy_loop *loop;              /* borrowed; NULL once that loop closed */
    gfl_loop *core;                /* the registry it is in (valid while registered) */
    PyObject *fn;
    int registered; /* in the registry as far as we know (we did not unexport it) */
    char name[EXPORT_NAME_MAX + 1];
};

static struct py_export *exports_head;
/* atexit ran: export() refuses, entry points answer "nothing exported". */
static int exports_finalized;
/* > 0 while globeflower.call() is inside gfl_call: a sync export's
 * KeyboardInterrupt then reaches that Python caller, not the loop's host. */
static int python_calls;

static PyObject *str_create_task, *str_cancel, *str_close, *str_loop;

/* ------------------------------------------------------------------ */
/* Names                                                               */

/* The UTF-8 text of a valid export name ([A-Za-z0-9_.]{1,128}), or NULL
 * with TypeError/ValueError. */
static const char *checked_name(PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "an export name must be a str, not %.100s", Py_TYPE(name)->tp_name);
        return NULL;
    }
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(name, &len);
    if (!s)
        return NULL;
    int ok = len >= 1 && len <= EXPORT_NAME_MAX;
    for (Py_ssize_t i = 0; ok && i < len; i++) {
        char c = s[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    }
    if (!ok) {
        PyErr_Format(PyExc_ValueError,
                     "invalid export name %R: use 1 to %d characters from A-Z, a-z, 0-9, '_' and '.'", name,
                     EXPORT_NAME_MAX);
        return NULL;
    }
    return s;
}

/* ------------------------------------------------------------------ */
/* Records                                                             */

static void record_link(struct py_export *x)
{
    x->prev = NULL;
    x->next = exports_head;
    if (exports_head)
        exports_head->prev = x;
    exports_head = x;
}

static void record_unlink(struct py_export *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else if (exports_head == x)
        exports_head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

/* The registry dropped the entry and no call is inside it. */
static void export_release(void *ud)
{
    struct py_export *x = ud;
    if (!gflpy_interpreter_alive())
        return; /* deliberately leaked: the interpreter is going away */
    PyGILState_STATE g = PyGILState_Ensure();
    record_unlink(x);
    Py_CLEAR(x->fn);
    free(x);
    PyGILState_Release(g);
}

/* Our record registered under `name` on `core`, or NULL. */
static struct py_export *record_find(gfl_loop *core, const char *name)
{
    for (struct py_export *x = exports_head; x; x = x->next) {
        if (x->registered && x->core == core && strcmp(x->name, name) == 0)
            return x;
    }
    return NULL;
}

/* Unexports every record matching `loop` (NULL: all), each once. A
 * release may run Python code that changes the list: start over after
 * each unexport. */
static void unexport_all(gflpy_loop *loop)
{
    for (;;) {
        struct py_export *x = exports_head;
        while (x && !(x->registered && (!loop || x->loop == loop)))
            x = x->next;
        if (!x)
            return;
        if (loop)
            x->loop = NULL;
        x->registered = 0;
        /* May release (free) x. Failing (another thread's loop), x stays
         * registered but answers every call "nothing is exported". */
        API->unexport(x->core, x->name);
    }
}

void gflpy_exports_loop_closing(gflpy_loop *loop)
{
    for (struct py_export *x = exports_head; x; x = x->next) {
        if (x->loop == loop && !x->registered)
            x->loop = NULL; /* unexported, a call may still be inside */
    }
    unexport_all(loop);
}

void gflpy_hosts_loop_closing(gflpy_loop *loop)
{
    gflpy_exports_loop_closing(loop);
    gflpy_futures_loop_closing(loop);
}

/* ------------------------------------------------------------------ */
/* Entry points the core calls                                          */

/* Awaitable (a coroutine, a future, a class with __await__): the slot
 * await uses, cheaper than looking __await__ up on every result. */
static int is_awaitable(PyObject *o)
{
    PyAsyncMethods *am = Py_TYPE(o)->tp_as_async;
    return am && am->am_await;
}

/* What a caller gets once the export is gone (its loop closed, the
 * interpreter finalizing): the registry's own answer. Made without
 * Python, so callable without the GIL. */
static gfl_value *gone_error(const struct py_export *x)
{
    char msg[EXPORT_NAME_MAX + 64];
    snprintf(msg, sizeof msg, "nothing is exported under the name '%s'", x->name);
    return API->value_error(GFL_ENOENT, "LookupError", msg, NULL);
}

static gfl_future *failed_future(gfl_loop *core, gfl_value *error)
{
    gfl_future *f = error ? API->future_new(core) : NULL;
    if (f && API->future_set_error(f, error) < 0) {
        API->future_unref(f);
        f = NULL;
    }
    API->value_unref(error);
    return f; /* NULL: the core reports "returned no future" */
}

static PyObject *args_tuple(gfl_value *const *args, size_t nargs)
{
    PyObject *t = PyTuple_New((Py_ssize_t)nargs);
    for (size_t i = 0; t && i < nargs; i++) {
        PyObject *a = gflpy_from_value(args[i]);
        if (!a)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, (Py_ssize_t)i, a);
    }
    return t;
}

/* The raised exception as the call's error. KeyboardInterrupt and
 * SystemExit must stop the program: when another host called, they also
 * interrupt the loop (gfl_loop_interrupt), so they reach its host. */
static gfl_value *call_error(struct py_export *x, gfl_loop *core)
{
    PyObject *exc;
    gfl_value *err = gflpy_error_from_raised(&exc);
    if (exc && python_calls == 0 &&
        (PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt) ||
         PyErr_GivenExceptionMatches(exc, PyExc_SystemExit))) {
        char msg[EXPORT_NAME_MAX + 64];
        snprintf(msg, sizeof msg, "%s in the Python export '%s'", Py_TYPE(exc)->tp_name, x->name);
        API->loop_interrupt(core, msg, err);
    }
    Py_XDECREF(exc);
    return err;
}

static int export_sync_entry(void *ud, gfl_loop *core, gfl_value *const *args, size_t nargs, gfl_value **result)
{
    struct py_export *x = ud;
    if (exports_finalized || !gflpy_interpreter_alive()) {
        *result = gone_error(x);
        return GFL_ENOENT;
    }
    /* The GIL, and asyncio's running loop while a host pumps: the export
     * may ask for it (asyncio.get_running_loop()). */
    gflpy_entry e;
    if (gflpy_enter(x->loop, &e) < 0) {
        *result = gone_error(x);
        return GFL_ENOENT;
    }
    int rc = GFL_OK;
    if (!x->loop) {
        *result = gone_error(x);
        rc = GFL_ENOENT;
    } else {
        PyObject *fn = x->fn, *t = args_tuple(args, nargs), *r = NULL;
        Py_INCREF(fn); /* the export may unexport itself */
        if (t)
            r = PyObject_Call(fn, t, NULL);
        Py_DECREF(fn);
        Py_XDECREF(t);
        if (r && is_awaitable(r)) {
            /* A plain function handing back a coroutine: it would never run. */
            if (PyCoro_CheckExact(r)) {
                PyObject *c = PyObject_CallMethodNoArgs(r, str_close);
                Py_XDECREF(c);
            }
            Py_CLEAR(r);
            PyErr_Format(PyExc_TypeError,
                         "the export '%s' is a plain function that returned an awaitable: "
                         "export a coroutine function (async def) instead",
                         x->name);
        }
        *result = r ? gflpy_to_value(r) : NULL;
        Py_XDECREF(r);
        if (!*result) {
            *result = call_error(x, core);
            rc = API->value_error_code(*result);
            if (rc >= 0)
                rc = GFL_EUNKNOWN;
        }
    }
    gflpy_leave(&e);
    return rc;
}

/* Runs fn(*args) as a task on `loop` (the export's; a reference held by
 * the caller, as fn may close it): a core future following the task. */
static gfl_future *start_task(struct py_export *x, gflpy_loop *loop, gfl_loop *core, gfl_value *const *args,
                              size_t nargs)
{
    PyObject *fn = x->fn, *t = args_tuple(args, nargs), *r = NULL;
    Py_INCREF(fn);
    if (t)
        r = PyObject_Call(fn, t, NULL); /* wrong arity: the function's own TypeError */
    Py_DECREF(fn);
    Py_XDECREF(t);
    if (!r)
        return failed_future(core, call_error(x, core));
    if (!is_awaitable(r)) {
        /* Not awaitable after all: its value is the result. */
        gfl_value *v = gflpy_to_value(r);
        Py_DECREF(r);
        if (!v)
            return failed_future(core, call_error(x, core));
        gfl_future *f = API->future_new(core);
        if (f && API->future_set_result(f, v) < 0) {
            API->future_unref(f);
            f = NULL;
        }
        API->value_unref(v);
        return f;
    }
    PyObject *task;
    if (PyCoro_CheckExact(r)) {
        task = PyObject_CallMethodOneArg((PyObject *)loop, str_create_task, r);
        if (!task) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyObject *c = PyObject_CallMethodNoArgs(r, str_close); /* never awaited: no warning */
            Py_XDECREF(c);
            PyErr_Restore(type, value, tb);
        }
    } else {
        PyObject *kw = Py_BuildValue("{OO}", str_loop, (PyObject *)loop);
        PyObject *a = kw ? PyTuple_Pack(1, r) : NULL;
        task = a ? PyObject_Call(gflpy_hosts.ensure_future, a, kw) : NULL;
        Py_XDECREF(a);
        Py_XDECREF(kw);
    }
    Py_DECREF(r);
    if (!task)
        return failed_future(core, call_error(x, core));
    gfl_future *f = gflpy_future_to_core(loop, task);
    if (!f) {
        /* Could not follow the task: stop it, and fail the call. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *c = PyObject_CallMethodNoArgs(task, str_cancel);
        Py_XDECREF(c);
        PyErr_Restore(type, value, tb);
        f = failed_future(core, call_error(x, core));
    }
    Py_DECREF(task);
    return f;
}

static gfl_future *export_async_entry(void *ud, gfl_loop *core, gfl_value *const *args, size_t nargs)
{
    struct py_export *x = ud;
    if (exports_finalized || !gflpy_interpreter_alive())
        return failed_future(core, gone_error(x));
    gflpy_entry e;
    if (gflpy_enter(x->loop, &e) < 0)
        return failed_future(core, gone_error(x));
    gfl_future *f;
    if (!x->loop) {
        f = failed_future(core, gone_error(x));
    } else {
        gflpy_loop *loop = x->loop;
        Py_INCREF(loop); /* fn may close it */
        f = start_task(x, loop, core, args, nargs);
        Py_DECREF(loop);
    }
    PyErr_Clear(); /* nothing may stay raised: no Python frame called us */
    gflpy_leave(&e);
    return f;
}

/* ------------------------------------------------------------------ */
/* The module functions                                                 */

static PyObject *mod_export(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"name", "fn", "loop", NULL};
    PyObject *name, *fn, *loop = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$O:export", kwlist, &name, &fn, &loop))
        return NULL;
    const char *cname = checked_name(name);
    if (!cname)
        return NULL;
    if (!PyCallable_Check(fn))
        return PyErr_Format(PyExc_TypeError, "export(): fn must be callable, not %.100s", Py_TYPE(fn)->tp_name);
    if (exports_finalized) {
        PyErr_SetString(PyExc_RuntimeError, "globeflower.export(): the interpreter is shutting down");
        return NULL;
    }
    gflpy_loop *l = gflpy_hosts_loop(loop);
    if (!l)
        return NULL;
    PyObject *a = PyObject_CallOneArg(gflpy_hosts.is_async, fn);
    int is_async = a ? PyObject_IsTrue(a) : -1;
    Py_XDECREF(a);
    struct py_export *x = is_async >= 0 ? calloc(1, sizeof *x) : NULL;
    if (!x) {
        Py_DECREF(l);
        return is_async < 0 ? NULL : PyErr_NoMemory();
    }
    memcpy(x->name, cname, strlen(cname) + 1);
    x->loop = l; /* borrowed: the loop's close hook forgets it */
    x->core = l->core;
    Py_INCREF(fn);
    x->fn = fn;
    x->registered = 1;
    int rc = API->export_function(l->core, x->name, is_async ? NULL : export_sync_entry,
                                  is_async ? export_async_entry : NULL, x, export_release);
    Py_DECREF(l);
    if (rc < 0) {
        Py_DECREF(fn);
        free(x);
        if (rc == GFL_EEXIST)
            return PyErr_Format(PyExc_ValueError, "export(): the name %R is already exported on this loop", name);
        return gflpy_raise(rc);
    }
    record_link(x);
    Py_RETURN_NONE;
}

static PyObject *mod_unexport(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"name", "loop", NULL};
    PyObject *name, *loop = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$O:unexport", kwlist, &name, &loop))
        return NULL;
    const char *cname = checked_name(name);
    if (!cname)
        return NULL;
    gflpy_loop *l = gflpy_hosts_loop(loop);
    if (!l)
        return NULL;
    struct py_export *x = record_find(l->core, cname);
    if (x)
        x->registered = 0; /* before: the release may free x */
    int rc = API->unexport(l->core, cname);
    if (rc < 0 && x)
        x->registered = 1; /* nothing was released */
    Py_DECREF(l);
    if (rc == GFL_ENOENT)
        return PyErr_Format(PyExc_LookupError, "nothing is exported under the name %R", name);
    if (rc < 0)
        return gflpy_raise(rc);
    Py_RETURN_NONE;
}

static PyObject *mod_exports(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)self;
    static char *kwlist[] = {"loop", NULL};
    PyObject *loop = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O:exports", kwlist, &loop))
        return NULL;
    gflpy_loop *l = gflpy_hosts_loop(loop);
    if (!l)
        return NULL;
    int n = API->export_count(l->core);
    PyObject *list = n >= 0 ? PyList_New(0) : gflpy_raise(n);
    for (int i = 0; list && i < n; i++) {
        const char *s = API->export_name(l->core, i);
        PyObject *u = s ? PyUnicode_FromString(s) : NULL;
        if (!u || PyList_Append(list, u) < 0)
            Py_CLEAR(list);
        Py_XDECREF(u);
    }
    Py_DECREF(l);
    return list;
}

/* call(name, *args, loop=None): an awaitable (an asyncio future). */
static PyObject *mod_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    (void)self;
    PyObject *loop = NULL;
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nk; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_Compare(k, str_loop) != 0)
            return PyErr_Format(PyExc_TypeError, "call() got an unexpected keyword argument '%U'", k);
        loop = args[nargs + i];
    }
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "call() missing required argument 'name'");
        return NULL;
    }
    const char *cname = checked_name(args[0]);
    if (!cname)
        return NULL;
    gflpy_loop *l = gflpy_hosts_loop(loop);
    if (!l)
        return NULL;
    size_t n = (size_t)(nargs - 1);
    gfl_value *small[8];
    PyObject *pyfut = NULL;
    gfl_value **vals = gflpy_values_from_args(args + 1, n, small, 8);
    if (!vals) {
        Py_DECREF(l);
        return NULL;
    }
    python_calls++;
    gfl_future *f = API->call(l->core, cname, vals, n);
    python_calls--;
    if (!f) {
        int rc = API->export_count(l->core); /* says why: closed, wrong thread */
        gflpy_raise(rc < 0 ? rc : GFL_ENOMEM);
        goto out;
    }
    pyfut = gflpy_future_from_core(l, f);
    API->future_unref(f);
out:
    gflpy_values_drop(vals, n, small);
    Py_DECREF(l);
    return pyfut;
}

/* atexit: Python is going away; what it exported goes first. */
static PyObject *mod_exports_atexit(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    exports_finalized = 1;
    unexport_all(NULL);
    Py_RETURN_NONE;
}

PyMethodDef gflpy_exports_methods[] = {
    {"export", (PyCFunction)(void (*)(void))mod_export, METH_VARARGS | METH_KEYWORDS,
     "export(name, fn, *, loop=None)\n--\n\n"
     "Exports fn under name on the loop's registry, for every host on the loop.\n"
     "A coroutine function is an async export (each call runs as a task), any other\n"
     "callable a sync one."},
    {"unexport", (PyCFunction)(void (*)(void))mod_unexport, METH_VARARGS | METH_KEYWORDS,
     "unexport(name, *, loop=None)\n--\n\n"
     "Removes the export name (any host's); LookupError if nothing is exported under it."},
    {"exports", (PyCFunction)(void (*)(void))mod_exports, METH_VARARGS | METH_KEYWORDS,
     "exports(*, loop=None)\n--\n\nThe names exported on the loop by every host, in export order."},
    {"call", (PyCFunction)(void (*)(void))mod_call, METH_FASTCALL | METH_KEYWORDS,
     "call(name, *args, loop=None)\n--\n\n"
     "Calls the export name (of any host) and returns an awaitable for its result."},
    {"_exports_atexit", mod_exports_atexit, METH_NOARGS, "Internal: unexports Python's exports at exit."},
    {NULL, NULL, 0, NULL},
};

int gflpy_exports_init(void)
{
    str_create_task = PyUnicode_InternFromString("create_task");
    str_close = PyUnicode_InternFromString("close");
    str_cancel = PyUnicode_InternFromString("cancel");
    str_loop = PyUnicode_InternFromString("loop");
    return str_create_task && str_cancel && str_close && str_loop ? 0 : -1;
}
