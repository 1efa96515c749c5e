/*
 * Futures across hosts: core futures (gfl_call, plugins' async functions)
 * awaited from Python, and asyncio futures/tasks handed to the core (a
 * Python export's task, awaited by Lua or C).
 *
 * Each direction pairs the two futures with two links:
 *  - a core done callback holding a reference to the asyncio future, and
 *  - an asyncio done callback (a small callable, future_link) holding a
 *    reference to the core future.
 * Whichever side settles first settles the other (a result or error is
 * converted; a cancellation cancels); the other link then finds its
 * future done and does nothing. Both references go when both have run.
 *
 * The core runs its done callbacks from whatever host pumps the loop, so
 * ours take the GIL themselves and do nothing (leaking their reference on
 * purpose) once the interpreter is finalizing.
 */
#include "gflpy.h"

static PyTypeObject *future_link_type;
static PyObject *str_create_future, *str_add_done_callback, *str_done,
    *str_cancelled, *str_cancel, *str_result, *str_set_result, *str_set_exception;

/* ------------------------------------------------------------------ */
/* Which loop                                                          */

static gflpy_loop *checked_loop(PyObject *loop, const char *where)
{
    if (!PyObject_TypeCheck(loop, gflpy_LoopType)) {
        PyErr_Format(PyExc_RuntimeError,
                     "globeflower: the %s event loop is a %.100s, not a globeflower loop "
                     "(run this on a globeflower loop, or pass loop=)",
                     where, Py_TYPE(loop)->tp_name);
        return NULL;
    }
    gflpy_loop *l = (gflpy_loop *)loop;
    if (l->closed || !l->core) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    Py_INCREF(l);
    return l;
}

gflpy_loop *gflpy_hosts_loop(PyObject *loop)
{
    if (!gflpy_hosts_available())
        return NULL;
    if (loop && loop != Py_None) {
        if (!PyObject_TypeCheck(loop, gflpy_LoopType)) {
            PyErr_Format(PyExc_TypeError, "loop must be a globeflower.Loop, not %.100s", Py_TYPE(loop)->tp_name);
            return NULL;
        }
        return checked_loop(loop, "given");
    }
    PyObject *running = PyObject_CallNoArgs(gflpy_hosts.get_running_loop);
    if (!running)
        return NULL;
    if (running != Py_None) {
        gflpy_loop *l = checked_loop(running, "running");
        Py_DECREF(running);
        return l;
    }
    Py_DECREF(running);
    PyObject *current = PyObject_CallNoArgs(gflpy_hosts.thread_loop);
    if (!current)
        return NULL;
    if (current == Py_None) {
        Py_DECREF(current);
        PyErr_SetString(PyExc_RuntimeError,
                        "globeflower: no event loop: call this from a coroutine running on a globeflower loop, "
                        "make one current with asyncio.set_event_loop(), or pass loop=");
        return NULL;
    }
    gflpy_loop *l = checked_loop(current, "current");
    Py_DECREF(current);
    return l;
}

/* ------------------------------------------------------------------ */
/* Small helpers on asyncio futures                                     */

/* fut.<name>() as a truth value: 1, 0, or -1 with an error. */
static int future_flag(PyObject *fut, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(fut, name);
    if (!r)
        return -1;
    int b = PyObject_IsTrue(r);
    Py_DECREF(r);
    return b;
}

static int call_method_one(PyObject *o, PyObject *name, PyObject *arg)
{
    PyObject *r = PyObject_CallMethodOneArg(o, name, arg);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static int call_method_none(PyObject *o, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(o, name);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Reports an error raised inside a core -> Python callback: nobody called
 * us, so it goes where asyncio sends errors nobody can catch. Except when
 * the asyncio future's loop closed meanwhile (a C host's loop outlives
 * Python's): then there is nobody left to tell. */
static void report_unraisable(PyObject *pyfut)
{
    if (!PyErr_Occurred())
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *loop = PyObject_CallMethod(pyfut, "get_loop", NULL);
    int closed = loop && PyObject_TypeCheck(loop, gflpy_LoopType) &&
                 (((gflpy_loop *)loop)->closed || !((gflpy_loop *)loop)->core);
    Py_XDECREF(loop);
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
    if (closed)
        PyErr_Clear();
    else
        PyErr_WriteUnraisable(pyfut);
}

/* release(arg) of our core done callbacks: the asyncio future reference. */
static void release_pyobject(void *arg)
{
    if (!gflpy_interpreter_alive())
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF((PyObject *)arg);
    PyGILState_Release(g);
}

/* ------------------------------------------------------------------ */
/* The asyncio-side link: a callable holding the core future            */

typedef struct future_link {
    PyObject_HEAD
    gfl_future *core; /* a reference */
    int to_core;      /* 1: settles `core` from the asyncio future; 0: only
                       * cancels `core` when the asyncio future was cancelled */
    gflpy_loop *loop; /* borrowed: links are cancelled when it closes */
    struct future_link *prev, *next; /* every live link (under the GIL) */
    /* to_core only: an asyncio future of the same loop following `core`
     * (a Python caller awaiting a Python export), settled right after
     * `core` rather than from a core done callback an iteration later. */
    PyObject *follower;
} future_link;

static future_link *links_head;
/* The to_core link made last (NULL once freed): gfl_call hands a Python
 * caller the core future an async Python export made just before. */
static future_link *last_to_core;

static int settle_asyncio(PyObject *pyfut, gfl_future *f);
static int future_flag(PyObject *fut, PyObject *name);

static PyObject *link_new(gflpy_loop *loop, gfl_future *core, int to_core)
{
    future_link *self = PyObject_New(future_link, future_link_type);
    if (!self)
        return NULL;
    self->core = API->future_ref(core);
    self->to_core = to_core;
    self->loop = loop;
    self->follower = NULL;
    if (to_core)
        last_to_core = self;
    self->prev = NULL;
    self->next = links_head;
    if (links_head)
        links_head->prev = self;
    links_head = self;
    return (PyObject *)self;
}

static void link_dealloc(future_link *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->prev)
        self->prev->next = self->next;
    else if (links_head == self)
        links_head = self->next;
    if (self->next)
        self->next->prev = self->prev;
    if (last_to_core == self)
        last_to_core = NULL;
    Py_XDECREF(self->follower);
    API->future_unref(self->core);
    PyObject_Free(self);
    Py_DECREF(tp);
}

/* The loop is closing: cancel the core futures still pending between it
 * and other hosts. Nobody could settle them once the loop is gone, and a
 * pending pair holds itself (asyncio future -> link -> core future -> our
 * done callback -> asyncio future) through C, out of the GC's sight:
 * cancelling drops the core callback, and with it the cycle. */
void gflpy_futures_loop_closing(gflpy_loop *loop)
{
    size_t n = 0, i = 0;
    for (future_link *l = links_head; l; l = l->next)
        n += l->loop == loop && API->future_state_of(l->core) == GFL_FUTURE_PENDING;
    if (!n)
        return;
    /* Collected first: cancelling releases references, which may free links. */
    gfl_future **pending = PyMem_Malloc(n * sizeof *pending);
    if (!pending)
        return;
    for (future_link *l = links_head; l && i < n; l = l->next) {
        if (l->loop == loop && API->future_state_of(l->core) == GFL_FUTURE_PENDING)
            pending[i++] = API->future_ref(l->core);
    }
    for (size_t k = 0; k < i; k++) {
        API->future_cancel(pending[k], "globeflower: the Python event loop closed");
        API->future_unref(pending[k]);
    }
    PyMem_Free(pending);
}

/* Settles the pending core future `f` the way `pyfut` (done) ended. One
 * call, result(), in the common case: it raises the future's exception, or
 * CancelledError when it was cancelled. */
static void settle_core(gfl_future *f, PyObject *pyfut)
{
    PyObject *result = PyObject_CallMethodNoArgs(pyfut, str_result);
    gfl_value *v = NULL;
    int is_error = 1;
    if (result) {
        v = gflpy_to_value(result);
        Py_DECREF(result);
        if (v)
            is_error = 0;
    }
    if (!v) {
        if (!result && PyErr_ExceptionMatches(gflpy_hosts.CancelledError)) {
            PyErr_Clear();
            API->future_cancel(f, NULL);
            return;
        }
        /* Raised by result(), or a result that does not convert (one that
         * contains itself): the caller gets that error. */
        v = gflpy_error_from_raised(NULL);
    }
    int rc = is_error ? API->future_set_error(f, v) : API->future_set_result(f, v);
    if (rc < 0)
        API->future_cancel(f, "globeflower: the result could not be delivered");
    API->value_unref(v);
}

/* The asyncio done callback: link(fut). */
static void core_done_cancel_asyncio(gfl_future *f, void *arg);

static PyObject *link_call(future_link *self, PyObject *args, PyObject *kwds)
{
    PyObject *pyfut;
    if (kwds && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "future link takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "link", 1, 1, &pyfut))
        return NULL;
    int pending = API->future_state_of(self->core) == GFL_FUTURE_PENDING;
    if (self->to_core) {
        if (pending) {
            /* The task finished by itself: the core-side watch that would
             * cancel it has nothing left to do; drop it before settling,
             * so completing costs no extra callback (and GIL entry). */
            API->future_remove_done_callback(self->core, core_done_cancel_asyncio, pyfut);
            settle_core(self->core, pyfut);
        }
        /* Settled here or not (someone else may have cancelled it, which
         * cancelled the task), the follower now follows it. */
        PyObject *follower = self->follower;
        self->follower = NULL;
        if (follower) {
            int done = future_flag(follower, str_done);
            if (done == 0 && settle_asyncio(follower, self->core) < 0)
                done = -1;
            Py_DECREF(follower);
            if (done < 0)
                return NULL;
        }
    } else if (pending) {
        int cancelled = future_flag(pyfut, str_cancelled);
        if (cancelled < 0)
            return NULL;
        if (cancelled)
            API->future_cancel(self->core, NULL);
    }
    Py_RETURN_NONE;
}

static PyObject *link_repr(future_link *self)
{
    static const char *const states[] = {"pending", "result", "error", "cancelled"};
    int st = API->future_state_of(self->core);
    return PyUnicode_FromFormat("<globeflower core future link (%s, %s)>", self->to_core ? "to core" : "from core",
                                st >= 0 && st <= 3 ? states[st] : "?");
}

static PyType_Slot link_slots[] = {
    {Py_tp_dealloc, link_dealloc},
    {Py_tp_call, link_call},
    {Py_tp_repr, link_repr},
    {Py_tp_doc, "Internal: settles or cancels a core future when an asyncio future is done."},
    {0, NULL},
};

static PyType_Spec link_spec = {
    "globeflower._core.FutureLink",
    sizeof(future_link),
    0,
    Py_TPFLAGS_DEFAULT,
    link_slots,
};

/* ------------------------------------------------------------------ */
/* Core future -> asyncio future                                        */

/* Settles the pending asyncio future `pyfut` the way the core future `f`
 * (done) ended. 0, or -1 with an error. */
static int settle_asyncio(PyObject *pyfut, gfl_future *f)
{
    int state = API->future_state_of(f);
    gfl_value *v = API->future_value(f); /* borrowed; marks an error retrieved */
    if (state == GFL_FUTURE_CANCELLED || !v)
        return call_method_none(pyfut, str_cancel);
    if (state == GFL_FUTURE_RESULT) {
        PyObject *result = gflpy_from_value(v);
        if (result) {
            int rc = call_method_one(pyfut, str_set_result, result);
            Py_DECREF(result);
            return rc;
        }
        /* Not convertible here (an unhashable key): the awaiting side gets
         * that error. */
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        if (!exc)
            return -1;
        int rc = call_method_one(pyfut, str_set_exception, exc);
        Py_DECREF(exc);
        return rc;
    }
    PyObject *exc = gflpy_exception_from_error(v);
    if (!exc)
        return -1;
    int rc;
    if (PyObject_TypeCheck(exc, (PyTypeObject *)gflpy_hosts.CancelledError))
        rc = call_method_none(pyfut, str_cancel); /* asyncio futures are cancelled, not failed, so */
    else
        rc = call_method_one(pyfut, str_set_exception, exc);
    Py_DECREF(exc);
    return rc;
}

static void core_done_to_asyncio(gfl_future *f, void *arg)
{
    PyObject *pyfut = arg;
    if (!gflpy_interpreter_alive())
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    int done = future_flag(pyfut, str_done);
    if (done == 0 && settle_asyncio(pyfut, f) < 0)
        done = -1;
    if (done < 0)
        report_unraisable(pyfut);
    Py_DECREF(pyfut);
    PyGILState_Release(g);
}

PyObject *gflpy_future_from_core(gflpy_loop *loop, gfl_future *f)
{
    PyObject *pyfut = PyObject_CallMethodNoArgs((PyObject *)loop, str_create_future);
    if (!pyfut)
        return NULL;
    if (API->future_state_of(f) != GFL_FUTURE_PENDING) {
        /* Done already (a sync export or plugin function): no round trip
         * through the ready queue. */
        if (settle_asyncio(pyfut, f) < 0)
            Py_CLEAR(pyfut);
        return pyfut;
    }
    PyObject *link = link_new(loop, f, 0);
    if (!link || call_method_one(pyfut, str_add_done_callback, link) < 0) {
        Py_XDECREF(link);
        Py_DECREF(pyfut);
        return NULL;
    }
    Py_DECREF(link);
    if (last_to_core && last_to_core->core == f && last_to_core->loop == loop && !last_to_core->follower) {
        /* A Python export's task on this loop behind `f`: its link settles
         * pyfut right after `f` (the same conversions, one loop iteration
         * sooner). Only the caller has `f`, and cancelling pyfut still
         * cancels `f` (and the task) through the link above. */
        Py_INCREF(pyfut);
        last_to_core->follower = pyfut;
        return pyfut;
    }
    Py_INCREF(pyfut); /* the core callback's */
    int rc = API->future_add_done_callback_ex(f, core_done_to_asyncio, pyfut, release_pyobject);
    if (rc < 0) {
        Py_DECREF(pyfut);
        Py_DECREF(pyfut);
        return gflpy_raise(rc);
    }
    return pyfut;
}

/* ------------------------------------------------------------------ */
/* asyncio future -> core future                                        */

/* The core future was done: cancel the asyncio one if it still runs (a
 * caller in another host cancelled its call). */
static void core_done_cancel_asyncio(gfl_future *f, void *arg)
{
    (void)f;
    PyObject *pyfut = arg;
    if (!gflpy_interpreter_alive())
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    int done = future_flag(pyfut, str_done);
    if (done == 0 && call_method_none(pyfut, str_cancel) < 0)
        done = -1;
    if (done < 0)
        report_unraisable(pyfut);
    Py_DECREF(pyfut);
    PyGILState_Release(g);
}

gfl_future *gflpy_future_to_core(gflpy_loop *loop, PyObject *pyfut)
{
    if (!loop->core) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return NULL;
    }
    gfl_future *f = API->future_new(loop->core);
    if (!f) {
        PyErr_NoMemory();
        return NULL;
    }
    int done = future_flag(pyfut, str_done);
    if (done < 0) {
        API->future_unref(f);
        return NULL;
    }
    if (done) {
        settle_core(f, pyfut);
        return f;
    }
    PyObject *link = link_new(loop, f, 1);
    if (!link || call_method_one(pyfut, str_add_done_callback, link) < 0) {
        Py_XDECREF(link);
        API->future_unref(f);
        return NULL;
    }
    Py_DECREF(link);
    Py_INCREF(pyfut); /* the core callback's */
    int rc = API->future_add_done_callback_ex(f, core_done_cancel_asyncio, pyfut, release_pyobject);
    if (rc < 0) {
        /* The link still settles f; only cancelling from the core side is
         * lost. Report it rather than hand out a half-linked future. */
        Py_DECREF(pyfut);
        API->future_unref(f);
        gflpy_raise(rc);
        return NULL;
    }
    return f;
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */

static int intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot ? 0 : -1;
}

int gflpy_futures_init(PyObject *module)
{
    (void)module;
    if (intern(&str_create_future, "create_future") < 0 ||
        intern(&str_add_done_callback, "add_done_callback") < 0 || intern(&str_done, "done") < 0 ||
        intern(&str_cancel, "cancel") < 0 ||
        intern(&str_result, "result") < 0 || intern(&str_cancelled, "cancelled") < 0 ||
        intern(&str_set_result, "set_result") < 0 || intern(&str_set_exception, "set_exception") < 0)
        return -1;
    future_link_type = (PyTypeObject *)PyType_FromSpec(&link_spec);
    return future_link_type ? 0 : -1;
}
