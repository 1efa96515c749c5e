/*
 * asyncio handles on the core's ready queue and timers.
 *
 * We use asyncio's own Handle class (and TimerHandle, through a subclass
 * adding one slot for the core's handle id), so handles are the real thing
 * for isinstance, repr, cancel() and get_context(). Outside debug mode they
 * are built by filling their __slots__ directly and run without a
 * Python-level frame; in debug mode the ordinary constructor and _run()
 * are used, so asyncio's debug features (source tracebacks, slow callback
 * warnings) behave as on the stock loop.
 */
#include "gflpy.h"


gflpy_handle_offsets gflpy_hoff;

static int slot_offset(PyObject *cls, const char *name, Py_ssize_t *out)
{
    PyObject *d = PyObject_GetAttrString(cls, name);
    if (!d)
        return -1;
    if (Py_TYPE(d) != &PyMemberDescr_Type) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "globeflower: %s is not a slot", name);
        return -1;
    }
    *out = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return 0;
}

int gflpy_handles_setup(void)
{
    PyObject *h = gflpy.Handle, *t = gflpy.TimerHandle;
    if (slot_offset(h, "_callback", &gflpy_hoff.callback) < 0 || slot_offset(h, "_args", &gflpy_hoff.args) < 0 ||
        slot_offset(h, "_cancelled", &gflpy_hoff.cancelled) < 0 || slot_offset(h, "_loop", &gflpy_hoff.loop) < 0 ||
        slot_offset(h, "_source_traceback", &gflpy_hoff.source_traceback) < 0 ||
        slot_offset(h, "_repr", &gflpy_hoff.repr) < 0 || slot_offset(h, "_context", &gflpy_hoff.context) < 0 ||
        slot_offset(t, "_when", &gflpy_hoff.when) < 0 || slot_offset(t, "_scheduled", &gflpy_hoff.scheduled) < 0 ||
        slot_offset(t, "_gfl_id", &gflpy_hoff.gfl_id) < 0)
        return -1;
    return 0;
}

static PyObject *fill(PyObject *type, gflpy_loop *loop, PyObject *callback, PyObject *args, PyObject *context)
{
    PyTypeObject *tp = (PyTypeObject *)type;
    PyObject *h = tp->tp_alloc(tp, 0);
    if (!h)
        return NULL;
    PyObject *ctx = context;
    if (!ctx || ctx == Py_None) {
        ctx = PyContext_CopyCurrent();
        if (!ctx) {
            Py_DECREF(h);
            return NULL;
        }
    } else {
        Py_INCREF(ctx);
    }
    GFLPY_SLOT(h, gflpy_hoff.context) = ctx;
    Py_INCREF(callback);
    GFLPY_SLOT(h, gflpy_hoff.callback) = callback;
    Py_INCREF(args);
    GFLPY_SLOT(h, gflpy_hoff.args) = args;
    Py_INCREF(Py_False);
    GFLPY_SLOT(h, gflpy_hoff.cancelled) = Py_False;
    Py_INCREF(loop);
    GFLPY_SLOT(h, gflpy_hoff.loop) = (PyObject *)loop;
    Py_INCREF(Py_None);
    GFLPY_SLOT(h, gflpy_hoff.source_traceback) = Py_None;
    Py_INCREF(Py_None);
    GFLPY_SLOT(h, gflpy_hoff.repr) = Py_None;
    return h;
}

PyObject *gflpy_handle_new(gflpy_loop *loop, PyObject *callback, PyObject *args, PyObject *context)
{
    if (loop->debug)
        return PyObject_CallFunctionObjArgs(gflpy.Handle, callback, args, (PyObject *)loop,
                                            context ? context : Py_None, NULL);
    return fill(gflpy.Handle, loop, callback, args, context);
}

PyObject *gflpy_timer_handle_new(gflpy_loop *loop, double when, PyObject *callback, PyObject *args, PyObject *context)
{
    PyObject *h;
    if (loop->debug) {
        PyObject *w = PyFloat_FromDouble(when);
        if (!w)
            return NULL;
        h = PyObject_CallFunctionObjArgs(gflpy.TimerHandle, w, callback, args, (PyObject *)loop,
                                         context ? context : Py_None, NULL);
        Py_DECREF(w);
        if (h)
            gflpy_slot_set(h, gflpy_hoff.scheduled, Py_True);
        return h;
    }
    h = fill(gflpy.TimerHandle, loop, callback, args, context);
    if (!h)
        return NULL;
    PyObject *w = PyFloat_FromDouble(when);
    if (!w) {
        Py_DECREF(h);
        return NULL;
    }
    GFLPY_SLOT(h, gflpy_hoff.when) = w;
    Py_INCREF(Py_True);
    GFLPY_SLOT(h, gflpy_hoff.scheduled) = Py_True;
    return h;
}

static void handle_run(gflpy_loop *loop, PyObject *h);

void gflpy_handle_run(gflpy_loop *loop, PyObject *h)
{
    if (GFLPY_SLOT(h, gflpy_hoff.cancelled) == Py_True)
        return;
    gflpy_batch_begin(loop);
    handle_run(loop, h);
    gflpy_batch_end(loop);
}

static void handle_run(gflpy_loop *loop, PyObject *h)
{
    if (loop->debug) {
        /* Python-level: times the callback and warns when it is slow. */
        PyObject *r = PyObject_CallFunctionObjArgs(gflpy.run_debug, (PyObject *)loop, h, NULL);
        if (r)
            Py_DECREF(r);
        else
            gflpy_loop_report(loop, NULL);
        return;
    }
    PyObject *ctx = GFLPY_SLOT(h, gflpy_hoff.context);
    PyObject *cb = GFLPY_SLOT(h, gflpy_hoff.callback);
    PyObject *args = GFLPY_SLOT(h, gflpy_hoff.args);
    if (!cb || !ctx || !args || !PyTuple_Check(args))
        return;
    /* Hold them: the callback may cancel its own handle (clearing slots). */
    Py_INCREF(cb);
    Py_INCREF(args);
    Py_INCREF(ctx);
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        r = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(args, 0), (size_t)PyTuple_GET_SIZE(args), NULL);
        if (PyContext_Exit(ctx) < 0 && r) {
            Py_CLEAR(r);
        }
    }
    Py_DECREF(cb);
    Py_DECREF(args);
    Py_DECREF(ctx);
    if (r)
        Py_DECREF(r);
    else
        gflpy_loop_report(loop, h);
}

static void handle_cb_requeue(gflpy_loop *loop, PyObject *h)
{
    gfl_handle id = API->call_soon_ex(loop->core, gflpy_handle_cb, h, gflpy_handle_release);
    if (id < 0)
        Py_DECREF(h);
}

void gflpy_handle_cb(void *arg)
{
    PyObject *h = arg; /* our reference, handed over by the core */
    gflpy_entry e;
    if (gflpy_gone)
        return; /* the interpreter is gone: nothing of it may be touched */
    /* The handle's loop slot is set when it is made and stays (the core's
     * reference keeps the handle whole): readable before the GIL is held,
     * on this, the loop's thread (see gflpy_enter). */
    gflpy_loop *loop = (gflpy_loop *)GFLPY_SLOT(h, gflpy_hoff.loop);
    gflpy_enter(loop, &e);
    if (!loop || !loop->core || (loop->attached && loop->closed)) {
        /* Closed (detached from a C host's loop): dropped unrun, as a
         * closed asyncio loop drops its ready handles. */
        Py_DECREF(h);
        gflpy_leave(&e);
        return;
    }
    if (loop->pending_exc) {
        /* Stopping for a KeyboardInterrupt/SystemExit: keep it ready. */
        handle_cb_requeue(loop, h);
        gflpy_leave(&e);
        return;
    }
    if (Py_TYPE(h) == (PyTypeObject *)gflpy.TimerHandle)
        gflpy_slot_set(h, gflpy_hoff.scheduled, Py_False);
    Py_INCREF(loop);
    gflpy_handle_run(loop, h);
    Py_DECREF(loop);
    Py_DECREF(h);
    gflpy_leave(&e);
}

void gflpy_handle_release(void *arg)
{
    gflpy_release_object(arg);
}
