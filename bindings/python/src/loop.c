/*
 * The C base of globeflower.Loop: the hot half of an asyncio event loop on
 * the core (scheduling, timers, one loop iteration, fd watchers). The Python
 * class globeflower._loop.Loop combines it with asyncio's own loop classes
 * for the cold half (run_until_complete, servers, sock_*, executors, ...).
 *
 * Iteration and the GIL: the core's iteration polls and then runs callbacks,
 * and callbacks need the GIL. The core calls our before_poll/after_poll
 * hooks around every poll that may block: they release and re-take the
 * GIL, so other threads run while the loop waits and an iteration costs
 * one poll. (A loop a C host created has no hooks: then _run_once first
 * waits for the core's backend fd without the GIL, only when the loop would
 * block, and runs a non-blocking core iteration with the GIL held.)
 *
 * Signals: Python's handlers run in the main thread between bytecodes; a
 * poll that blocks must end when one is due, as EINTR ends asyncio's
 * select. While the main thread polls, Python's signal wakeup fd is (unless
 * someone else set one) a pipe the core watches, and after_poll runs the
 * handlers.
 */
#include "gflpy.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

PyTypeObject *gflpy_LoopType;

struct gflpy_watch {
    gflpy_loop *loop; /* borrowed: the loop frees its watches */
    int fd;
    int writer;
    PyObject *handle;
};

/* ------------------------------------------------------------------ */
/* Entering Python from the core                                       */

volatile int gflpy_gone;
/* The thread state holding the GIL (3.12+: this thread's, if it holds
 * it), or NULL: no check, no error. */
static inline PyThreadState *current_tstate(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

/* asyncio's C accessors of the thread's running loop (set once). */
static PyObject *get_running_fn, *set_running_fn;

static int running_fns(void)
{
    if (set_running_fn)
        return 0;
    PyObject *m = PyImport_ImportModule("asyncio.events");
    if (!m)
        return -1;
    get_running_fn = PyObject_GetAttrString(m, "_get_running_loop");
    set_running_fn = get_running_fn ? PyObject_GetAttrString(m, "_set_running_loop") : NULL;
    Py_DECREF(m);
    if (!set_running_fn) {
        Py_CLEAR(get_running_fn);
        return -1;
    }
    return 0;
}

/* The thread's running loop (a new reference; None when there is none),
 * NULL with an exception on failure. */
static PyObject *running_loop_get(void)
{
    if (running_fns() < 0)
        return NULL;
    return PyObject_CallNoArgs(get_running_fn);
}

static int running_loop_set(PyObject *loop)
{
    if (running_fns() < 0)
        return -1;
    PyObject *r = PyObject_CallOneArg(set_running_fn, loop ? loop : Py_None);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int gflpy_gil_enter(gflpy_entry *e)
{
    if (gflpy_gone)
        return -1;
    e->fast = 0;
    /* The cheap case (Python's own pumps, a host holding the GIL): this
     * thread's state is the one holding the GIL; else take it. */
    PyThreadState *mine = PyGILState_GetThisThreadState();
    e->gil_taken = !mine || mine != current_tstate();
    if (e->gil_taken)
        e->gil = PyGILState_Ensure();
    e->loop = NULL;
    e->prev = NULL;
    return 0;
}

/* The host's run that made `loop` the running loop is returning. */
static void host_run_end(void *arg)
{
    gflpy_loop *loop = arg;
    if (gflpy_gone)
        return; /* the interpreter and its objects are gone */
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *prev = loop->host_prev;
    loop->host_prev = NULL;
    loop->host_set = 0;
    if (running_loop_set(!prev || prev == Py_None ? NULL : prev) < 0)
        PyErr_Clear();
    Py_XDECREF(prev);
    PyErr_Restore(type, value, tb);
    Py_DECREF(loop); /* the registration's */
    PyGILState_Release(g);
}

/* While a host runs the core: makes `loop` the running loop until that run
 * returns (once per run, not around every callback: asyncio's setter costs
 * a getpid() each time). 0 when done (or already so), -1 when the core
 * cannot call us back at the run's end (not inside a run): then the caller
 * sets and restores around its own entry. */
static int host_run_set(gflpy_loop *loop)
{
    if (!loop->core)
        return -1;
    PyObject *cur = running_loop_get();
    if (!cur) {
        PyErr_Clear();
        return -1;
    }
    if (cur == (PyObject *)loop) {
        Py_DECREF(cur);
        return 0;
    }
    Py_INCREF(loop); /* the registration's, dropped by host_run_end */
    if (API->loop_at_run_end(loop->core, host_run_end, loop) < 0) {
        Py_DECREF(loop);
        Py_DECREF(cur);
        return -1;
    }
    if (running_loop_set((PyObject *)loop) < 0)
        PyErr_Clear();
    loop->host_prev = cur;
    loop->host_set = 1;
    return 0;
}

/* Makes `loop` the running loop for this entry when the host pumps it (a
 * coroutine the host's gfl_loop_run_once resumes can then use
 * asyncio.get_running_loop()); nothing when Python iterates it itself. */
void gflpy_loop_enter(gflpy_loop *loop, gflpy_entry *e)
{
    if (!loop || loop->running_set || e->loop)
        return;
    if (loop->lazy_running) {
        /* A run_once/run_for pump: set for the rest of it, once. */
        if (running_loop_set((PyObject *)loop) == 0)
            loop->running_set = loop->lazy_done = 1;
        else
            PyErr_Clear();
        return;
    }
    if (loop->py_running || loop->host_set)
        return; /* Python iterates (asyncio's own code set it up), or this run set it */
    if (host_run_set(loop) == 0)
        return;
    Py_INCREF(loop);
    e->loop = loop;
    if (loop->host_depth++ > 0)
        return; /* an outer entry set it */
    PyObject *cur = running_loop_get();
    if (!cur) {
        PyErr_Clear();
        return;
    }
    if (cur == (PyObject *)loop) {
        Py_DECREF(cur);
        return;
    }
    if (running_loop_set((PyObject *)loop) < 0) {
        PyErr_Clear();
        Py_DECREF(cur);
        return;
    }
    e->prev = cur;
}

void gflpy_leave_slow(gflpy_entry *e)
{
    if (e->loop) {
        gflpy_loop *loop = e->loop;
        e->loop = NULL;
        loop->host_depth--;
        if (e->prev) {
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            if (running_loop_set(e->prev == Py_None ? NULL : e->prev) < 0)
                PyErr_Clear();
            PyErr_Restore(type, value, tb);
            Py_CLEAR(e->prev);
        }
        Py_DECREF(loop);
    }
    if (e->gil_taken)
        PyGILState_Release(e->gil);
}

void gflpy_release_object(void *obj)
{
    if (gflpy_gone)
        return; /* the interpreter and its objects are gone */
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF((PyObject *)obj);
    PyGILState_Release(g);
}

/* ------------------------------------------------------------------ */
/* Reporting errors raised by callbacks                                 */

/* KeyboardInterrupt/SystemExit raised while a C host pumps: the host's
 * exception handler gets it and its gfl_loop_run_once/run_for/run returns
 * GFL_EINTR (gfl_loop_take_interrupt gives the error). Python goes on. */
static void interrupt_host(gflpy_loop *loop, PyObject *exc)
{
    /* With the exception as its cause: a Python host taking the interrupt
     * gets the very exception object back. */
    gfl_value *v = gflpy_error_from_exception(exc);
    if (!v)
        PyErr_Clear();
    char message[160];
    snprintf(message, sizeof message, "%s raised by a Python callback", Py_TYPE(exc)->tp_name);
    API->loop_interrupt(loop->core, message, v);
    if (v)
        API->value_unref(v);
}

void gflpy_loop_report(gflpy_loop *loop, PyObject *handle)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(tb);
    Py_DECREF(type);
    if (PyErr_GivenExceptionMatches(value, PyExc_SystemExit) ||
        PyErr_GivenExceptionMatches(value, PyExc_KeyboardInterrupt)) {
        if (!loop->py_running && loop->core && API->loop_is_running(loop->core) == 1) {
            /* A C host is pumping: it must stop, not Python. */
            interrupt_host(loop, value);
            Py_DECREF(value);
            return;
        }
        /* asyncio lets these out of run_forever. */
        if (!loop->pending_exc)
            loop->pending_exc = value;
        else
            Py_DECREF(value);
        return;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(gflpy.handle_error, (PyObject *)loop, handle ? handle : Py_None, value, NULL);
    Py_DECREF(value);
    if (r)
        Py_DECREF(r);
    else
        gflpy_loop_report(loop, NULL); /* the handler raised: same rules */
}

/* ------------------------------------------------------------------ */
/* Around the core's blocking polls                                     */

static unsigned long main_ident; /* threading.main_thread().ident */
static PyObject *set_wakeup_fd;  /* signal.set_wakeup_fd (the C function is not exported) */

/* signal.set_wakeup_fd(fd): the previous fd, or -2 on error (cleared). */
static int swap_wakeup_fd(int fd)
{
    PyObject *arg = PyLong_FromLong(fd);
    PyObject *r = arg ? PyObject_CallOneArg(set_wakeup_fd, arg) : NULL;
    Py_XDECREF(arg);
    long old = r ? PyLong_AsLong(r) : -2;
    Py_XDECREF(r);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return -2;
    }
    return (int)old;
}

static int on_main_thread(void)
{
    if (!main_ident) {
        PyObject *th = PyImport_ImportModule("threading");
        PyObject *mt = th ? PyObject_CallMethod(th, "main_thread", NULL) : NULL;
        PyObject *id = mt ? PyObject_GetAttrString(mt, "ident") : NULL;
        if (id)
            main_ident = PyLong_AsUnsignedLong(id);
        Py_XDECREF(id);
        Py_XDECREF(mt);
        Py_XDECREF(th);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            main_ident = 0;
            return 0;
        }
    }
    return PyThread_get_thread_ident() == main_ident;
}

/* arg: the pipe's read end (not the loop: no pointer to outlive it). */
static void sig_drain(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

static int sig_pipe(gflpy_loop *self)
{
    if (self->sig_r >= 0)
        return 0;
    if (self->sig_r == -2 || !self->core)
        return -1;
    if (!set_wakeup_fd) {
        PyObject *m = PyImport_ImportModule("signal");
        set_wakeup_fd = m ? PyObject_GetAttrString(m, "set_wakeup_fd") : NULL;
        Py_XDECREF(m);
        if (!set_wakeup_fd) {
            PyErr_Clear();
            self->sig_r = -2;
            return -1;
        }
    }
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        self->sig_r = -2;
        return -1;
    }
    if (API->add_reader(self->core, p[0], sig_drain, (void *)(intptr_t)p[0]) < 0) {
        close(p[0]);
        close(p[1]);
        self->sig_r = -2;
        return -1;
    }
    self->sig_r = p[0];
    self->sig_w = p[1];
    return 0;
}

static void sig_pipe_close(gflpy_loop *self)
{
    if (self->sig_r >= 0) {
        if (self->core)
            API->remove_reader(self->core, self->sig_r);
        close(self->sig_r);
        close(self->sig_w);
    }
    self->sig_r = self->sig_w = -1;
}

/* For one run (run_forever or _run_once) on the main thread: our pipe
 * becomes Python's signal wakeup fd unless someone set one (asyncio's
 * add_signal_handler: its self-pipe is watched by the core too). Setting
 * it costs an fstat and an fcntl, so once per run, not per poll. */
static void sig_install(gflpy_loop *self)
{
    if (self->sig_installed || !on_main_thread() || sig_pipe(self) < 0)
        return;
    int old = swap_wakeup_fd(self->sig_w);
    if (old >= 0)
        swap_wakeup_fd(old);
    else if (old == -1)
        self->sig_installed = 1;
}

static void sig_uninstall(gflpy_loop *self)
{
    if (!self->sig_installed)
        return;
    self->sig_installed = 0;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb); /* what the run raised */
    int cur = swap_wakeup_fd(-1);
    if (cur != self->sig_w && cur != -2)
        swap_wakeup_fd(cur); /* a callback set its own: keep it */
    PyErr_Restore(type, value, tb);
}

static void before_poll(gfl_loop *core, void *ud)
{
    (void)core;
    gflpy_loop *self = ud;
    if (self->ndirty)
        gflpy_flush_writes(self);
    self->poll_tstate = PyEval_SaveThread();
}

static void after_poll(gfl_loop *core, void *ud)
{
    (void)core;
    gflpy_loop *self = ud;
    PyEval_RestoreThread(self->poll_tstate);
    self->poll_tstate = NULL;
    /* asyncio's select raises what a handler raised (KeyboardInterrupt):
     * so does this iteration, before running callbacks. */
    if (self->sig_installed && PyErr_CheckSignals() < 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb)
            PyException_SetTraceback(value, tb);
        Py_XDECREF(tb);
        Py_XDECREF(type);
        if (!self->pending_exc)
            self->pending_exc = value;
        else
            Py_XDECREF(value);
    }
}

/* ------------------------------------------------------------------ */
/* Attached loops, detached when the interpreter finalises              */

static gflpy_loop *attached_head; /* borrowed: a loop leaves at detach */

static void attached_add(gflpy_loop *self)
{
    self->attached_prev = NULL;
    self->attached_next = attached_head;
    if (attached_head)
        attached_head->attached_prev = self;
    attached_head = self;
}

static void attached_remove(gflpy_loop *self)
{
    if (self->attached_prev)
        self->attached_prev->attached_next = self->attached_next;
    else if (attached_head == self)
        attached_head = self->attached_next;
    if (self->attached_next)
        self->attached_next->attached_prev = self->attached_prev;
    self->attached_prev = self->attached_next = NULL;
}

static void core_close(gflpy_loop *self, int dying);

/* atexit (early in Py_FinalizeEx, Python still whole): every loop still
 * attached to a C host's loop closes (loop.close(), else a bare detach),
 * so the host's loop never calls into the interpreter afterwards. */
static PyObject *atexit_detach(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    while (attached_head) {
        gflpy_loop *loop = attached_head;
        Py_INCREF(loop);
        PyObject *r = PyObject_CallMethod((PyObject *)loop, "close", NULL);
        if (r)
            Py_DECREF(r);
        else
            PyErr_WriteUnraisable((PyObject *)loop);
        if (loop->core || attached_head == loop) {
            loop->closed = 1;
            core_close(loop, 0);
        }
        /* Still there: finalising on a thread that does not own the host's
         * loop (detaching was deferred to it). Once the interpreter is
         * gone the entry points do nothing, and nothing may pump meanwhile. */
        if (attached_head == loop)
            attached_remove(loop);
        Py_DECREF(loop);
    }
    Py_RETURN_NONE;
}

/* Py_AtExit: the interpreter is gone. */
static void mark_gone(void)
{
    gflpy_gone = 1;
}

static PyMethodDef atexit_def = {"_atexit_detach", atexit_detach, METH_NOARGS, NULL};

static int register_teardown(PyObject *module)
{
    static int done;
    if (gflpy_gone) {
        /* Our statics (interned names, cached functions, callbacks left in
         * a host's loop) belong to the finalised interpreter. */
        PyErr_SetString(PyExc_ImportError,
                        "globeflower cannot be imported again after Py_FinalizeEx in the same process");
        return -1;
    }
    if (done)
        return 0;
    PyObject *modname = PyModule_GetNameObject(module);
    PyObject *fn = modname ? PyCFunction_NewEx(&atexit_def, NULL, modname) : NULL;
    Py_XDECREF(modname);
    PyObject *ax = fn ? PyImport_ImportModule("atexit") : NULL;
    PyObject *r = ax ? PyObject_CallMethod(ax, "register", "O", fn) : NULL;
    Py_XDECREF(ax);
    Py_XDECREF(fn);
    if (!r)
        return -1;
    Py_DECREF(r);
    if (Py_AtExit(mark_gone) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "globeflower: Py_AtExit is full");
        return -1;
    }
    done = 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */

/* What the core reports on our loop (an accept failing with EMFILE, a core
 * future's error nobody retrieved, ...) goes to asyncio's
 * call_exception_handler, so loop.set_exception_handler sees it as on the
 * stock loop, instead of the core's stderr printer. Any thread may report
 * (a future freed elsewhere): the GIL is taken as for any core callback. */
static void core_exception(gfl_loop *core, const char *message, gfl_value *error, void *ud)
{
    (void)core;
    gflpy_loop *self = ud;
    gflpy_entry e;
    if (gflpy_gil_enter(&e) < 0)
        return; /* the interpreter is gone */
    if (Py_REFCNT(self) <= 0 || self->freeing_core) {
        /* Freed or closing with it: nobody to call; say it on stderr. */
        PySys_WriteStderr("globeflower: %s%s%s\n", message ? message : "error in the core",
                          error ? ": " : "", error && API->value_error_message(error) ? API->value_error_message(error) : "");
        gflpy_leave(&e);
        return;
    }
    Py_INCREF(self); /* no running loop needed: the handler only reports */
    PyObject *exc = error ? gflpy_exception_from_value(error) : NULL;
    if (!exc)
        PyErr_Clear();
    PyObject *ctx = Py_BuildValue("{s:s}", "message", message ? message : "Unhandled error in the globeflower core");
    if (ctx && exc && PyDict_SetItemString(ctx, "exception", exc) < 0)
        Py_CLEAR(ctx);
    Py_XDECREF(exc);
    PyObject *r = ctx ? PyObject_CallMethod((PyObject *)self, "call_exception_handler", "O", ctx) : NULL;
    Py_XDECREF(ctx);
    if (r)
        Py_DECREF(r);
    else
        gflpy_loop_report(self, NULL);
    gflpy_leave(&e);
    Py_DECREF(self);
}

static void watch_cb(void *arg);

/* Debug mode: the core timed a callback of our loop. Handles and fd
 * watchers ran through asyncio's Handle._run timing (_run_handle_debug),
 * which already reported them; anything else (a transport's data path, an
 * accept) is reported once, in asyncio's words, never as raw pointers. */
static void slow_callback(gfl_loop *core, gfl_callback cb, void *arg, double seconds, void *ud)
{
    (void)core;
    (void)arg;
    gflpy_loop *self = ud;
    if (cb == gflpy_handle_cb || cb == watch_cb || !gflpy.report_slow)
        return;
    PyObject *r = PyObject_CallFunction(gflpy.report_slow, "Od", (PyObject *)self, seconds);
    if (r)
        Py_DECREF(r);
    else
        PyErr_WriteUnraisable(gflpy.report_slow);
}

static PyObject *loop_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    /* Python subclasses pass their own constructor arguments: only the
     * keyword `_gfl_loop` (a capsule from a C host) is ours. */
    (void)args;
    PyObject *cap = kwds ? PyDict_GetItemString(kwds, "_gfl_loop") : NULL;
    gfl_loop *host = NULL;
    if (cap && cap != Py_None) {
        /* Checked before the object exists (a half-made loop would meet
         * asyncio's __del__). Validated without touching the pointer: a
         * freed or closed loop, or one owned by another thread, is an
         * error, never a use-after-free. */
        gfl_loop *l = PyCapsule_GetPointer(cap, "globeflower.loop");
        if (!l)
            return NULL;
        host = API->loop_acquire(l);
        if (!host)
            return PyErr_Format(PyExc_ValueError,
                                "globeflower: the capsule does not name a live loop usable from this thread "
                                "(freed, closed, or owned by another thread)");
    }
    gflpy_loop *self = (gflpy_loop *)type->tp_alloc(type, 0);
    if (!self) {
        if (host)
            API->loop_unref(host);
        return NULL;
    }
    self->backend_fd = -1;
    self->sig_r = self->sig_w = -1;
    gflpy_heap_tune_if_asked();
    if (host) {
        self->core = host;
        self->attached = 1;
        attached_add(self);
        return (PyObject *)self;
    } else {
        gfl_loop_options opts = {.size = sizeof opts, .before_poll = before_poll, .after_poll = after_poll,
                                 .poll_hook_ud = self};
        self->core = API->loop_new(&opts);
        if (self->core) {
            API->loop_set_slow_callback_handler(self->core, slow_callback, self);
            API->loop_set_exception_handler(self->core, core_exception, self);
        }
        /* 2: timed polls too (libevent's timers are precise then). */
        self->hooks = getenv("EVENT_PRECISE_TIMER") ? 2 : 1;
    }
    if (!self->core) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void watch_free(struct gflpy_watch **slot)
{
    struct gflpy_watch *w = *slot;
    if (!w)
        return;
    *slot = NULL;
    Py_XDECREF(w->handle);
    PyMem_Free(w);
}

/* Detaching from a C host's loop: everything of Python's leaves the core
 * (watchers, transports, the signal pipe) and Python's reference goes; the
 * host's loop keeps running for the host. Callbacks of ours still queued
 * there drop their handles without running them (see gflpy_handle_cb). */
static void core_detach(gflpy_loop *self)
{
    attached_remove(self);
    if (!self->core)
        return;
    if (self->ndirty)
        gflpy_flush_writes(self);
    sig_uninstall(self);
    sig_pipe_close(self);
    for (int i = 0; i < self->nwatch; i++) {
        if (self->readers[i])
            API->remove_reader(self->core, i);
        if (self->writers[i])
            API->remove_writer(self->core, i);
    }
    gflpy_transports_detach(self);
    gfl_loop *core = self->core;
    self->core = NULL;
    if (API->loop_unref(core) < 0) {
        /* Only from a thread that does not own the loop: the reference
         * is left rather than touching the loop from here. */
    }
}

/* The owner thread detaches a loop closed on another thread. */
static void deferred_detach(void *arg)
{
    gflpy_loop *self = arg; /* a reference taken by core_close */
    gflpy_entry e;
    if (gflpy_gil_enter(&e) < 0)
        return;
    core_close(self, 0);
    Py_DECREF(self);
    gflpy_leave(&e);
}

/* An attached loop collected on a thread that does not own the host's
 * loop: the core cannot be touched from here, so nothing it may still call
 * may point at us (the watches and the signal pipe are left, inert). */
static void neutralise(gflpy_loop *self)
{
    attached_remove(self);
    for (int i = 0; i < self->nwatch; i++) {
        struct gflpy_watch *ws[2] = {self->readers[i], self->writers[i]};
        for (int k = 0; k < 2; k++) {
            if (!ws[k])
                continue;
            ws[k]->loop = NULL; /* watch_cb does nothing then */
            Py_CLEAR(ws[k]->handle);
        }
        self->readers[i] = self->writers[i] = NULL; /* left to the core */
    }
    self->sig_r = self->sig_w = -1; /* the pipe stays open for its watcher */
    self->core = NULL;               /* and our reference is left too */
}

static void core_close(gflpy_loop *self, int dying)
{
    gflpy_hosts_loop_closing(self); /* Python's exports go while the core works */
    if (self->ndirty)
        gflpy_flush_writes(self); /* only if closed from inside a callback */
    /* Only the owner thread may detach from a host's loop (an fd of -1
     * probes that without side effects). */
    if (self->attached && self->core && API->remove_reader(self->core, -1) == GFL_EWRONGTHREAD) {
        if (dying) {
            neutralise(self);
        } else {
            Py_INCREF(self);
            if (API->call_soon_threadsafe(self->core, deferred_detach, self) < 0)
                Py_DECREF(self);
            return;
        }
    }
    if (self->attached) {
        core_detach(self);
    } else if (self->core) {
        sig_uninstall(self);
        gfl_loop *core = self->core;
        /* Dropped callbacks release their handles from inside free; open
         * transports are left to their owners, as asyncio does. */
        self->freeing_core = 1;
        API->loop_free(core);
        self->freeing_core = 0;
        self->core = NULL;
    }
    sig_pipe_close(self); /* after: its watcher went with the core loop */
    for (int i = 0; i < self->nwatch; i++) {
        watch_free(&self->readers[i]);
        watch_free(&self->writers[i]);
    }
    PyMem_Free(self->readers);
    PyMem_Free(self->writers);
    self->readers = self->writers = NULL;
    self->nwatch = 0;
}

static int loop_traverse(gflpy_loop *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->pending_exc);
    Py_VISIT(self->xq);
    for (Py_ssize_t i = 0; i < self->ndirty; i++)
        Py_VISIT(self->dirty[i]);
    for (int i = 0; i < self->nwatch; i++) {
        if (self->readers[i])
            Py_VISIT(self->readers[i]->handle);
        if (self->writers[i])
            Py_VISIT(self->writers[i]->handle);
    }
    return 0;
}

static int loop_clear(gflpy_loop *self)
{
    Py_CLEAR(self->pending_exc);
    Py_CLEAR(self->xq);
    gflpy_drop_writes(self); /* cyclic garbage: nobody waits for them */
    for (int i = 0; i < self->nwatch; i++) {
        if (self->readers[i])
            Py_CLEAR(self->readers[i]->handle);
        if (self->writers[i])
            Py_CLEAR(self->writers[i]->handle);
    }
    return 0;
}

static void loop_dealloc(gflpy_loop *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    loop_clear(self);
    core_close(self, 1);
    PyMem_Free(self->dirty);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* A C host may free its loop while Python is attached: the core then
 * answers GFL_ECLOSED, and Python sees a closed loop. */
static inline int core_closed(gflpy_loop *self)
{
    return !self->core || (self->attached && API->loop_is_closed(self->core) == 1);
}

static inline int check_open(gflpy_loop *self)
{
    if (self->closed || core_closed(self)) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

static PyObject *loop_core_close(gflpy_loop *self, PyObject *unused)
{
    (void)unused;
    self->closed = 1;
    core_close(self, 0);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* Scheduling                                                          */

static PyObject *loop_time(gflpy_loop *self, PyObject *unused)
{
    (void)unused;
    if (!self->core)
        return PyObject_CallMethod(PyImport_AddModule("time"), "monotonic", NULL);
    return PyFloat_FromDouble(API->loop_time(self->core));
}

/* Splits (callback, *args, context=None) starting at args[first]. */
static int split_call(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t first,
                      const char *name, PyObject **cb, PyObject **cbargs, PyObject **context)
{
    *context = NULL;
    if (kwnames) {
        static PyObject *kw_context; /* interned: callers' keyword names usually are too */
        if (!kw_context && !(kw_context = PyUnicode_InternFromString("context")))
            return -1;
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nk; i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            if (k == kw_context || PyUnicode_CompareWithASCIIString(k, "context") == 0) {
                *context = args[nargs + i];
            } else {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", name, k);
                return -1;
            }
        }
    }
    if (nargs <= first) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument 'callback'", name);
        return -1;
    }
    *cb = args[first];
    *cbargs = PyTuple_New(nargs - first - 1);
    if (!*cbargs)
        return -1;
    for (Py_ssize_t i = first + 1; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(*cbargs, i - first - 1, args[i]);
    }
    return 0;
}

/* Debug mode: asyncio's thread and callback checks (Python-level). */
static int debug_checks(gflpy_loop *self, PyObject *cb, const char *method, int thread)
{
    if (thread) {
        PyObject *r = PyObject_CallMethod((PyObject *)self, "_check_thread", NULL);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    PyObject *r = PyObject_CallMethod((PyObject *)self, "_check_callback", "Os", cb, method);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Hands handle `h` (a new reference for the core) to the core: the ready
 * queue, or the timers for a TimerHandle. */
static int core_schedule(gflpy_loop *self, PyObject *h)
{
    gfl_handle id;
    if (Py_TYPE(h) == (PyTypeObject *)gflpy.TimerHandle) {
        PyObject *w = GFLPY_SLOT(h, gflpy_hoff.when);
        double when = w ? PyFloat_AsDouble(w) : 0;
        id = API->call_at_ex(self->core, when, gflpy_handle_cb, h, gflpy_handle_release);
        if (id > 0) {
            PyObject *pid = PyLong_FromLongLong(id);
            if (!pid) {
                PyErr_Clear();
                return 0; /* the timer works; only cancel() cannot reach it */
            }
            Py_XSETREF(GFLPY_SLOT(h, gflpy_hoff.gfl_id), pid);
        }
    } else {
        id = API->call_soon_ex(self->core, gflpy_handle_cb, h, gflpy_handle_release);
    }
    return id < 0 ? (int)id : 0;
}

static void wake_cb(void *arg);

/* Moves the handles other threads queued into the core, in order. Stops
 * (leaving the rest) if this thread does not own the core loop either. */
static int flush_xq_slow(gflpy_loop *self);

/* Inline: it runs twice per iteration and once per call_soon, and the
 * list is almost always empty. */
static inline int flush_xq(gflpy_loop *self)
{
    if (!self->xq || PyList_GET_SIZE(self->xq) == 0 || !self->core)
        return 0;
    return flush_xq_slow(self);
}

static int flush_xq_slow(gflpy_loop *self)
{
    Py_ssize_t n = PyList_GET_SIZE(self->xq), i;
    int rc = 0;
    for (i = 0; i < n; i++) {
        PyObject *h = PyList_GET_ITEM(self->xq, i);
        if (GFLPY_SLOT(h, gflpy_hoff.cancelled) == Py_True)
            continue;
        Py_INCREF(h);
        rc = core_schedule(self, h);
        if (rc < 0) {
            Py_DECREF(h);
            break;
        }
    }
    if (PyList_SetSlice(self->xq, 0, i, NULL) < 0)
        PyErr_Clear();
    return rc;
}

/* Runs on the owner's thread; arg is a loop reference taken by the thread
 * that queued (dropped here; leaked only if the core loop is freed first). */
static void wake_cb(void *arg)
{
    gflpy_loop *self = arg;
    gflpy_entry e;
    if (gflpy_gil_enter(&e) < 0)
        return;
    if (flush_xq(self) < 0)
        PyErr_Clear();
    Py_DECREF(self);
    gflpy_leave(&e);
}

/* Schedules `h` from whatever thread we are on (see xq). */
static int schedule_handle(gflpy_loop *self, PyObject *h)
{
    int rc = flush_xq(self);
    if (rc == 0) {
        Py_INCREF(h); /* the core's reference */
        rc = core_schedule(self, h);
        if (rc == 0)
            return 0;
        Py_DECREF(h);
    }
    if (rc != GFL_EWRONGTHREAD)
        return rc;
    if (!self->xq && !(self->xq = PyList_New(0)))
        return GFL_ENOMEM;
    if (PyList_Append(self->xq, h) < 0)
        return GFL_ENOMEM;
    /* Wakes the owner if it is polling (it flushes before each iteration). */
    Py_INCREF(self);
    if (API->call_soon_threadsafe(self->core, wake_cb, self) < 0)
        Py_DECREF(self);
    return 0;
}

static PyObject *schedule_soon(gflpy_loop *self, PyObject *cb, PyObject *cbargs, PyObject *context, int threadsafe)
{
    (void)threadsafe; /* every path is thread-safe: see schedule_handle */
    PyObject *h = gflpy_handle_new(self, cb, cbargs, context);
    if (!h)
        return NULL;
    int rc = schedule_handle(self, h);
    if (rc < 0) {
        Py_DECREF(h);
        return gflpy_raise(rc);
    }
    return h;
}

static PyObject *loop_call_soon(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *cb, *cbargs, *context;
    if (check_open(self) < 0 || split_call(args, nargs, kwnames, 0, "call_soon", &cb, &cbargs, &context) < 0)
        return NULL;
    PyObject *h = NULL;
    if (!self->debug || debug_checks(self, cb, "call_soon", 1) == 0)
        h = schedule_soon(self, cb, cbargs, context, 0);
    Py_DECREF(cbargs);
    return h;
}

static PyObject *loop_call_soon_threadsafe(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *cb, *cbargs, *context;
    if (check_open(self) < 0 ||
        split_call(args, nargs, kwnames, 0, "call_soon_threadsafe", &cb, &cbargs, &context) < 0)
        return NULL;
    PyObject *h = NULL;
    if (!self->debug || debug_checks(self, cb, "call_soon_threadsafe", 0) == 0)
        h = schedule_soon(self, cb, cbargs, context, 1);
    Py_DECREF(cbargs);
    return h;
}

static PyObject *schedule_at(gflpy_loop *self, double when, PyObject *cb, PyObject *cbargs, PyObject *context)
{
    PyObject *h = gflpy_timer_handle_new(self, when, cb, cbargs, context);
    if (!h)
        return NULL;
    int rc = schedule_handle(self, h);
    if (rc < 0) {
        Py_DECREF(h);
        return gflpy_raise(rc);
    }
    return h;
}

static PyObject *timer_call(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int later)
{
    const char *name = later ? "call_later" : "call_at";
    if (nargs < 1)
        return PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", name, later ? "delay" : "when");
    if (args[0] == Py_None)
        return PyErr_Format(PyExc_TypeError, later ? "delay must not be None" : "when cannot be None");
    double t = PyFloat_AsDouble(args[0]);
    if (t == -1.0 && PyErr_Occurred())
        return NULL;
    if (isnan(t))
        return PyErr_Format(PyExc_ValueError, "%s: NaN", name);
    PyObject *cb, *cbargs, *context;
    if (check_open(self) < 0 || split_call(args, nargs, kwnames, 1, name, &cb, &cbargs, &context) < 0)
        return NULL;
    if (later)
        t += API->loop_time(self->core);
    PyObject *h = NULL;
    if (!self->debug || debug_checks(self, cb, name, 1) == 0)
        h = schedule_at(self, t, cb, cbargs, context);
    Py_DECREF(cbargs);
    return h;
}

static PyObject *loop_call_later(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return timer_call(self, args, nargs, kwnames, 1);
}

static PyObject *loop_call_at(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return timer_call(self, args, nargs, kwnames, 0);
}

/* asyncio's create_future(): one per await of a stream read, so not worth
 * a Python frame each (get_debug(), which Future() calls, is in C too). */
static PyObject *loop_create_future(gflpy_loop *self, PyObject *unused)
{
    (void)unused;
    static PyObject *kw_loop;
    if (!kw_loop && !(kw_loop = Py_BuildValue("(s)", "loop")))
        return NULL;
    PyObject *stack[1] = {(PyObject *)self};
    return PyObject_Vectorcall(gflpy.Future, stack, 0, kw_loop);
}

/* create_task(coro, *, name=None, context=None): asyncio.Task built
 * directly when there is no task factory and debug mode is off (the common
 * case); asyncio's own code otherwise. */
static PyObject *loop_create_task(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int slow = self->debug || nargs != 1;
    PyObject *name = NULL, *context = NULL;
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nk && !slow; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(k, "name") == 0)
            name = args[nargs + i];
        else if (PyUnicode_CompareWithASCIIString(k, "context") == 0)
            context = args[nargs + i];
        else
            slow = 1;
    }
    if (!slow) {
        PyObject *tf = PyObject_GetAttrString((PyObject *)self, "_task_factory");
        if (!tf)
            return NULL;
        slow = tf != Py_None;
        Py_DECREF(tf);
    }
    if (slow || (context && context != Py_None && PY_VERSION_HEX < 0x030B0000)) {
        /* asyncio's create_task, with self first. */
        PyObject *stack[8];
        Py_ssize_t n = nargs + nk;
        if (n + 1 > 8)
            return PyErr_Format(PyExc_TypeError, "create_task(): too many arguments");
        stack[0] = (PyObject *)self;
        for (Py_ssize_t i = 0; i < n; i++)
            stack[i + 1] = args[i];
        return PyObject_Vectorcall(gflpy.create_task_slow, stack, (size_t)(nargs + 1), kwnames);
    }
    if (check_open(self) < 0)
        return NULL;
    /* Task(coro, loop=self, name=name[, context=context]) */
    PyObject *stack[4] = {args[0], (PyObject *)self, name ? name : Py_None, context};
    static PyObject *kw2, *kw3; /* keyword names, made once */
    if (!kw2 && !(kw2 = Py_BuildValue("(ss)", "loop", "name")))
        return NULL;
    if (!kw3 && !(kw3 = Py_BuildValue("(sss)", "loop", "name", "context")))
        return NULL;
    return PyObject_Vectorcall(gflpy.Task, stack, 1, context && context != Py_None ? kw3 : kw2);
}

/* TimerHandle.cancel() calls this: drop the timer from the core now (so a
 * cancelled long timeout costs no memory until its deadline). */
static PyObject *loop_timer_handle_cancelled(gflpy_loop *self, PyObject *h)
{
    if (!PyObject_TypeCheck(h, (PyTypeObject *)gflpy.TimerHandle) || !self->core)
        Py_RETURN_NONE;
    PyObject *pid = GFLPY_SLOT(h, gflpy_hoff.gfl_id);
    if (pid && PyLong_Check(pid)) {
        long long id = PyLong_AsLongLong(pid);
        Py_CLEAR(GFLPY_SLOT(h, gflpy_hoff.gfl_id));
        if (id > 0)
            API->handle_cancel(self->core, id); /* releases the core's reference */
    }
    gflpy_slot_set(h, gflpy_hoff.scheduled, Py_False);
    Py_RETURN_NONE;
}

/* asyncio's _add_callback(handle): queue an existing handle (signals). */
static PyObject *loop_add_callback(gflpy_loop *self, PyObject *h)
{
    if (check_open(self) < 0)
        return NULL;
    if (!PyObject_TypeCheck(h, (PyTypeObject *)gflpy.Handle))
        return PyErr_Format(PyExc_TypeError, "_add_callback() needs a Handle");
    if (GFLPY_SLOT(h, gflpy_hoff.cancelled) == Py_True)
        Py_RETURN_NONE;
    int rc = schedule_handle(self, h);
    if (rc < 0)
        return gflpy_raise(rc);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* One iteration                                                       */

/* A loop from a C host (no poll hooks): waits for its backend fd without
 * the GIL, then the caller runs a non-blocking core iteration. */
static int wait_backend(gflpy_loop *self, double timeout)
{
    int transient = 0;
    if (self->backend_fd == -1) {
        int fd = API->loop_backend_fd(self->core);
        /* Out of descriptors or memory for now: ask again next time (the
         * 1 ms slices below must not outlast an EMFILE burst). */
        transient = fd == GFL_EMFILE || fd == GFL_ENOMEM;
        self->backend_fd = fd;
    }
    /* Round up, as selectors do, so a timer is never polled early. */
    int ms = timeout < 0 ? -1 : (timeout > 86400.0 ? 86400000 : (int)ceil(timeout * 1e3));
    struct pollfd p = {.fd = self->backend_fd, .events = POLLIN};
    int nfds = 1;
    if (self->backend_fd < 0) {
        /* No backend fd: wait in slices of 1 ms without the GIL, then let
         * the core poll. Correct, not cheap. */
        self->backend_fd = transient ? -1 : -2;
        nfds = 0;
        if (ms < 0 || ms > 1)
            ms = 1;
    }
    int n, err;
    Py_BEGIN_ALLOW_THREADS
    n = poll(nfds ? &p : NULL, (nfds_t)nfds, ms);
    err = errno;
    Py_END_ALLOW_THREADS
    if (n < 0 && err == EINTR && PyErr_CheckSignals() < 0)
        return -1; /* e.g. KeyboardInterrupt from Python's SIGINT handler */
    return 0;
}

/* After a core run Python drove: the KeyboardInterrupt/SystemExit a
 * callback raised, or the core's error. -1 with an exception, else 0. */
static inline __attribute__((always_inline)) int run_result(gflpy_loop *self, int rc)
{
    if (rc >= 0 && flush_xq(self) < 0)
        PyErr_Clear();
    if (self->pending_exc) {
        PyObject *e = self->pending_exc;
        self->pending_exc = NULL;
        PyErr_SetObject((PyObject *)Py_TYPE(e), e);
        Py_DECREF(e);
        return -1;
    }
    if (rc == GFL_ESTATE) {
        PyErr_SetString(PyExc_RuntimeError, "This event loop is already running");
        return -1;
    }
    if (rc == GFL_EINTR && self->core) {
        /* Another loop object on this core (Loop.from_capsule) was
         * interrupted by its callback while we pumped: raise it here. */
        gfl_value *v = API->loop_take_interrupt(self->core);
        /* Raised by Python code (the error's cause is the exception):
         * the very KeyboardInterrupt/SystemExit object leaves the pump. */
        PyObject *orig = v ? gflpy_exception_from_error(v) : NULL;
        if (orig && (PyErr_GivenExceptionMatches(orig, PyExc_KeyboardInterrupt) ||
                     PyErr_GivenExceptionMatches(orig, PyExc_SystemExit))) {
            PyErr_SetObject((PyObject *)Py_TYPE(orig), orig);
            Py_DECREF(orig);
            API->value_unref(v);
            return -1;
        }
        Py_XDECREF(orig);
        PyErr_Clear();
        const char *type = v ? API->value_error_type(v) : NULL;
        const char *msg = v ? API->value_error_message(v) : NULL;
        PyObject *cls = type && strcmp(type, "SystemExit") == 0 ? PyExc_SystemExit : PyExc_KeyboardInterrupt;
        if (msg && *msg)
            PyErr_SetString(cls, msg);
        else
            PyErr_SetNone(cls);
        if (v)
            API->value_unref(v);
        return -1;
    }
    if (rc < 0 && rc != GFL_ECLOSED) {
        gflpy_raise(rc);
        return -1;
    }
    return PyErr_Occurred() ? -1 : 0;
}

/* One asyncio iteration, polling for at most `cap` seconds (< 0: as long
 * as the loop has nothing to do); -1 with an exception set on failure,
 * else the number of callbacks run. */
static int run_one(gflpy_loop *self, double cap)
{
    if (check_open(self) < 0)
        return -1;
    int stop = self->stopping;
    if (flush_xq(self) < 0)
        stop = 1; /* not ours until run_once moves it here: no blocking */
    double poll_timeout = 0;
    double timeout = stop ? 0 : API->loop_backend_timeout(self->core);
    if (cap >= 0 && (timeout < 0 || timeout > cap))
        timeout = cap;
    if (timeout != 0 && self->hooks && (timeout < 0 || self->hooks > 1)) {
        /* The core polls, releasing the GIL through our hooks. On the main
         * thread a signal must end that poll: our pipe becomes Python's
         * wakeup fd, set once and kept (not swapped on every pump). */
        poll_timeout = timeout;
        if (!self->sig_installed)
            sig_install(self);
        /* A signal that came while callbacks ran in C. */
        if (self->sig_installed && PyErr_CheckSignals() < 0)
            return -1;
    } else if (timeout != 0) {
        /* A timer is due: libevent measures the poll's timeout with a coarse
         * clock (CLOCK_MONOTONIC_COARSE, up to 4 ms late) unless the core
         * asks for precise timers; poll the backend ourselves, rounding up
         * to the millisecond like selectors do. A C host's loop (no hooks)
         * always waits here, without the GIL. */
        if (wait_backend(self, timeout) < 0)
            return -1;
    }
    /* One batch of writes per iteration (see batch_depth): sent before
     * the next poll. */
    gflpy_batch_begin(self);
    self->py_running++;
    int rc = API->loop_run_once(self->core, poll_timeout);
    self->py_running--;
    gflpy_batch_end(self);
    if (run_result(self, rc) < 0)
        return -1;
    return rc < 0 ? 0 : rc;
}

static PyObject *loop_private_run_once(gflpy_loop *self, PyObject *unused)
{
    (void)unused;
    if (run_one(self, -1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The body of run_forever: iterations until stop() (the set-up around it
 * is asyncio's, in _loop.py). */
static PyObject *loop_run_until_stopped(gflpy_loop *self, PyObject *unused)
{
    (void)unused;
    int installed = self->sig_installed;
    sig_install(self);
    int was_set = self->running_set;
    self->running_set = 1; /* by asyncio's run_forever set-up */
    int rc;
    for (;;) {
        if ((rc = run_one(self, -1)) < 0 || self->stopping)
            break;
    }
    self->running_set = was_set;
    if (!installed)
        sig_uninstall(self);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* loop.run_once(timeout=0) and loop.run_for(max_seconds): a frame of a
 * Python-driven frame loop. The loop counts as running meanwhile
 * (asyncio.get_running_loop() works in its callbacks) and what a callback
 * raises as KeyboardInterrupt/SystemExit leaves the call. */
static PyObject *pump(gflpy_loop *self, double seconds, int run_for)
{
    if (check_open(self) < 0)
        return NULL;
    if (self->py_running || API->loop_is_running(self->core) == 1)
        return PyErr_Format(PyExc_RuntimeError, "This event loop is already running");
    PyObject *prev = running_loop_get();
    if (!prev)
        return NULL;
    if (prev != Py_None && prev != (PyObject *)self) {
        Py_DECREF(prev);
        return PyErr_Format(PyExc_RuntimeError, "Cannot run the event loop while another loop is running");
    }
    /* Set by the first callback that runs (see gflpy_loop_enter). */
    int was_set = self->running_set;
    if (prev == (PyObject *)self)
        self->running_set = 1;
    else
        self->lazy_running = 1;
    self->lazy_done = 0;
    int n;
    if (run_for) {
        if (flush_xq(self) < 0)
            PyErr_Clear();
        gflpy_batch_begin(self);
        self->py_running++;
        int rc = API->loop_run_for(self->core, seconds);
        self->py_running--;
        gflpy_batch_end(self);
        n = run_result(self, rc) < 0 ? -1 : (rc < 0 ? 0 : rc);
    } else {
        n = run_one(self, seconds);
    }
    if (self->lazy_done) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (running_loop_set(prev == Py_None ? NULL : prev) < 0)
            PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    self->running_set = was_set;
    self->lazy_running = self->lazy_done = 0;
    Py_DECREF(prev);
    if (n < 0)
        return NULL;
    return PyLong_FromLong(n);
}

static PyObject *loop_run_once(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout", NULL};
    PyObject *t = NULL;
    if (nargs > 1)
        return PyErr_Format(PyExc_TypeError, "run_once() takes at most 1 argument (%zd given)", nargs);
    if (nargs == 1)
        t = args[0];
    for (Py_ssize_t i = 0; kwnames && i < PyTuple_GET_SIZE(kwnames); i++) {
        if (t || PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), names[0]) != 0)
            return PyErr_Format(PyExc_TypeError, "run_once() got an unexpected keyword argument '%U'",
                                PyTuple_GET_ITEM(kwnames, i));
        t = args[nargs + i];
    }
    double timeout = 0;
    if (t == Py_None) {
        timeout = -1; /* until something happens */
    } else if (t) {
        timeout = PyFloat_AsDouble(t);
        if (timeout == -1.0 && PyErr_Occurred())
            return NULL;
        if (isnan(timeout) || timeout < 0)
            return PyErr_Format(PyExc_ValueError, "run_once(): timeout must be >= 0 or None");
    }
    return pump(self, timeout, 0);
}

static PyObject *loop_run_for(gflpy_loop *self, PyObject *arg)
{
    double max_seconds = PyFloat_AsDouble(arg);
    if (max_seconds == -1.0 && PyErr_Occurred())
        return NULL;
    if (isnan(max_seconds) || max_seconds < 0)
        return PyErr_Format(PyExc_ValueError, "run_for(): max_seconds must be >= 0");
    return pump(self, max_seconds, 1);
}

/* ------------------------------------------------------------------ */
/* fd watchers (asyncio's _add_reader & co.)                            */

static void watch_run(gflpy_loop *loop, struct gflpy_watch *w, PyObject *h);

static void watch_cb(void *arg)
{
    struct gflpy_watch *w = arg;
    gflpy_entry e;
    /* w->loop: set at creation (NULL once neutralised), read on the loop's
     * own thread (see gflpy_enter). */
    gflpy_loop *loop = w->loop;
    if (gflpy_enter(loop, &e) < 0)
        return;
    PyObject *h = w->handle;
    if (!loop || loop->pending_exc || !h || !loop->core || (loop->attached && loop->closed)) {
        gflpy_leave(&e);
        return; /* level-triggered: it fires again next iteration */
    }
    watch_run(loop, w, h);
    gflpy_leave(&e);
}

static void watch_run(gflpy_loop *loop, struct gflpy_watch *w, PyObject *h)
{
    if (GFLPY_SLOT(h, gflpy_hoff.cancelled) == Py_True) {
        /* asyncio drops a watcher whose handle was cancelled. */
        struct gflpy_watch **slot = w->writer ? &loop->writers[w->fd] : &loop->readers[w->fd];
        if (w->writer)
            API->remove_writer(loop->core, w->fd);
        else
            API->remove_reader(loop->core, w->fd);
        watch_free(slot);
        return;
    }
    Py_INCREF(h);
    Py_INCREF(loop);
    gflpy_handle_run(loop, h); /* may remove (free) w */
    Py_DECREF(loop);
    Py_DECREF(h);
}

static int grow_watches(gflpy_loop *self, int fd)
{
    if (fd < self->nwatch)
        return 0;
    int n = self->nwatch ? self->nwatch : 64;
    while (n <= fd)
        n *= 2;
    struct gflpy_watch **r = PyMem_Realloc(self->readers, (size_t)n * sizeof *r);
    if (!r)
        return -1;
    self->readers = r;
    struct gflpy_watch **w = PyMem_Realloc(self->writers, (size_t)n * sizeof *w);
    if (!w)
        return -1;
    self->writers = w;
    for (int i = self->nwatch; i < n; i++)
        self->readers[i] = self->writers[i] = NULL;
    self->nwatch = n;
    return 0;
}

static int to_fd(PyObject *o)
{
    int fd = PyObject_AsFileDescriptor(o);
    if (fd < 0 && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %d", fd);
    return fd;
}

/* Cancels a handle the asyncio way: what Handle.cancel() does, in C for
 * our own plain handles outside debug mode (it runs on every completed
 * sock_* wait), its cancel() method otherwise. */
static void cancel_handle(PyObject *h)
{
    if (Py_TYPE(h) == (PyTypeObject *)gflpy.Handle) {
        PyObject *loop = GFLPY_SLOT(h, gflpy_hoff.loop);
        if (loop && PyObject_TypeCheck(loop, gflpy_LoopType) && !((gflpy_loop *)loop)->debug) {
            if (GFLPY_SLOT(h, gflpy_hoff.cancelled) != Py_True) {
                gflpy_slot_set(h, gflpy_hoff.cancelled, Py_True);
                gflpy_slot_set(h, gflpy_hoff.callback, Py_None);
                gflpy_slot_set(h, gflpy_hoff.args, Py_None);
            }
            return;
        }
    }
    PyObject *r = PyObject_CallMethod(h, "cancel", NULL);
    if (r)
        Py_DECREF(r);
    else
        PyErr_WriteUnraisable(h);
}

/* Makes handle `h` the reader or writer of fd (asyncio's _add_reader
 * body): the handle it replaces is cancelled. 0, or -1 with an error. */
static int watch_set(gflpy_loop *self, int fd, int writer, PyObject *h)
{
    if (grow_watches(self, fd) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    struct gflpy_watch **slot = writer ? &self->writers[fd] : &self->readers[fd];
    struct gflpy_watch *w = *slot;
    PyObject *old = NULL;
    if (!w) {
        w = PyMem_Calloc(1, sizeof *w);
        if (!w) {
            PyErr_NoMemory();
            return -1;
        }
        w->loop = self;
        w->fd = fd;
        w->writer = writer;
    } else {
        old = w->handle;
    }
    int rc = writer ? API->add_writer(self->core, fd, watch_cb, w) : API->add_reader(self->core, fd, watch_cb, w);
    if (rc < 0) {
        if (!*slot)
            PyMem_Free(w);
        gflpy_raise(rc);
        return -1;
    }
    Py_INCREF(h);
    w->handle = h;
    *slot = w;
    if (old) {
        cancel_handle(old);
        Py_DECREF(old);
    }
    return 0;
}

static PyObject *add_watch(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, int writer)
{
    if (check_open(self) < 0)
        return NULL;
    if (nargs < 2)
        return PyErr_Format(PyExc_TypeError, "expected (fd, callback, *args)");
    int fd = to_fd(args[0]);
    if (fd < 0)
        return NULL;
    PyObject *cbargs = PyTuple_New(nargs - 2);
    if (!cbargs)
        return NULL;
    for (Py_ssize_t i = 2; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(cbargs, i - 2, args[i]);
    }
    /* asyncio gives fd handles no context of their own: a copy of the
     * current one, as Handle(context=None) does. */
    PyObject *h = gflpy_handle_new(self, args[1], cbargs, NULL);
    Py_DECREF(cbargs);
    if (!h)
        return NULL;
    if (watch_set(self, fd, writer, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

PyObject *gflpy_watch_add(gflpy_loop *self, int fd, int writer, PyObject *callback)
{
    if (check_open(self) < 0)
        return NULL;
    if (fd < 0)
        return PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %d", fd);
    PyObject *noargs = PyTuple_New(0);
    PyObject *h = noargs ? gflpy_handle_new(self, callback, noargs, NULL) : NULL;
    Py_XDECREF(noargs);
    if (!h)
        return NULL;
    if (watch_set(self, fd, writer, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

/* asyncio's _remove_reader/_remove_writer on an fd: 1 if a watcher was
 * removed (its handle cancelled), 0 if there was none. */
int gflpy_watch_remove(gflpy_loop *self, int fd, int writer)
{
    if (self->closed || !self->core || fd < 0 || fd >= self->nwatch)
        return 0;
    struct gflpy_watch **slot = writer ? &self->writers[fd] : &self->readers[fd];
    struct gflpy_watch *w = *slot;
    if (!w)
        return 0;
    if (writer)
        API->remove_writer(self->core, fd);
    else
        API->remove_reader(self->core, fd);
    PyObject *h = w->handle;
    w->handle = NULL;
    watch_free(slot);
    if (h) {
        cancel_handle(h);
        Py_DECREF(h);
    }
    return 1;
}

static PyObject *remove_watch(gflpy_loop *self, PyObject *fdobj, int writer)
{
    int fd = to_fd(fdobj);
    if (fd < 0)
        return NULL;
    return PyBool_FromLong(gflpy_watch_remove(self, fd, writer));
}

static PyObject *loop_add_reader(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    return add_watch(self, args, nargs, 0);
}

static PyObject *loop_add_writer(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    return add_watch(self, args, nargs, 1);
}

static PyObject *loop_remove_reader(gflpy_loop *self, PyObject *fd)
{
    return remove_watch(self, fd, 0);
}

static PyObject *loop_remove_writer(gflpy_loop *self, PyObject *fd)
{
    return remove_watch(self, fd, 1);
}

/* The registered handle for fd (reader or writer), or None: used by the
 * Python layer where asyncio consults its selector's keys. */
static PyObject *loop_get_watch(gflpy_loop *self, PyObject *args)
{
    int fd, writer;
    if (!PyArg_ParseTuple(args, "ip", &fd, &writer))
        return NULL;
    if (fd < 0 || fd >= self->nwatch)
        Py_RETURN_NONE;
    struct gflpy_watch *w = writer ? self->writers[fd] : self->readers[fd];
    if (!w || !w->handle)
        Py_RETURN_NONE;
    Py_INCREF(w->handle);
    return w->handle;
}

/* ------------------------------------------------------------------ */
/* Sharing the core loop with C code                                    */

static PyObject *loop_capsule(gflpy_loop *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    return PyCapsule_New(self->core, "globeflower.loop", NULL);
}

static PyObject *loop_make_socket_transport(gflpy_loop *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return gflpy_make_socket_transport(self, args, nargs, kwnames);
}

/* ------------------------------------------------------------------ */
/* Attributes BaseEventLoop reads and writes, kept in C                 */

static PyObject *get_debug_attr(gflpy_loop *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->debug);
}

static int set_debug_attr(gflpy_loop *self, PyObject *v, void *c)
{
    (void)c;
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0)
        return -1;
    self->debug = b;
    if (self->core)
        API->loop_set_debug(self->core, b);
    return 0;
}

static PyObject *get_closed_attr(gflpy_loop *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->closed);
}

/* An attached loop whose C host freed (closed) its loop. */
static PyObject *loop_host_closed(gflpy_loop *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(self->attached && self->core && API->loop_is_closed(self->core) == 1);
}

/* True for a loop attached to a C host's loop (from_capsule). */
static PyObject *loop_is_attached(gflpy_loop *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(self->attached);
}

static int set_closed_attr(gflpy_loop *self, PyObject *v, void *c)
{
    (void)c;
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0)
        return -1;
    self->closed = b;
    return 0;
}

static PyObject *get_stopping_attr(gflpy_loop *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->stopping);
}

static int set_stopping_attr(gflpy_loop *self, PyObject *v, void *c)
{
    (void)c;
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0)
        return -1;
    self->stopping = b;
    return 0;
}

/* BaseEventLoop.get_debug() in C: every Future and Task asks the loop at
 * construction. */
static PyObject *loop_get_debug(gflpy_loop *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(self->debug);
}

static PyGetSetDef loop_getset[] = {
    {"_stopping", (getter)get_stopping_attr, (setter)set_stopping_attr, NULL, NULL},
    {"_debug", (getter)get_debug_attr, (setter)set_debug_attr, NULL, NULL},
    {"_closed", (getter)get_closed_attr, (setter)set_closed_attr, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef loop_methods[] = {
    {"time", (PyCFunction)loop_time, METH_NOARGS, "The loop's monotonic clock."},
    {"get_debug", (PyCFunction)loop_get_debug, METH_NOARGS, "True when debug mode is on."},
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"call_soon_threadsafe", (PyCFunction)(void (*)(void))loop_call_soon_threadsafe, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"call_later", (PyCFunction)(void (*)(void))loop_call_later, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"call_at", (PyCFunction)(void (*)(void))loop_call_at, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"create_task", (PyCFunction)(void (*)(void))loop_create_task, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"create_future", (PyCFunction)loop_create_future, METH_NOARGS, "Create a Future object attached to the loop."},
    {"_timer_handle_cancelled", (PyCFunction)loop_timer_handle_cancelled, METH_O, NULL},
    {"_run_once", (PyCFunction)loop_private_run_once, METH_NOARGS, NULL},
    {"run_once", (PyCFunction)(void (*)(void))loop_run_once, METH_FASTCALL | METH_KEYWORDS,
     "run_once(timeout=0): one iteration of the loop, polling I/O for at most `timeout` seconds (0: never "
     "block; None: until something happens). Returns the number of callbacks run."},
    {"run_for", (PyCFunction)loop_run_for, METH_O,
     "run_for(max_seconds): non-blocking iterations until the loop is idle or max_seconds have passed. "
     "Returns the number of callbacks run."},
    {"_run_until_stopped", (PyCFunction)loop_run_until_stopped, METH_NOARGS, NULL},
    {"_add_callback", (PyCFunction)loop_add_callback, METH_O, NULL},
    {"_add_reader", (PyCFunction)(void (*)(void))loop_add_reader, METH_FASTCALL, NULL},
    {"_add_writer", (PyCFunction)(void (*)(void))loop_add_writer, METH_FASTCALL, NULL},
    {"_remove_reader", (PyCFunction)loop_remove_reader, METH_O, NULL},
    {"_remove_writer", (PyCFunction)loop_remove_writer, METH_O, NULL},
    {"_get_watch", (PyCFunction)loop_get_watch, METH_VARARGS, NULL},
    {"_core_close", (PyCFunction)loop_core_close, METH_NOARGS, NULL},
    {"_gfl_host_closed", (PyCFunction)loop_host_closed, METH_NOARGS, NULL},
    {"is_attached", (PyCFunction)loop_is_attached, METH_NOARGS,
     "True when the loop is a C host's (Loop.from_capsule): close() then detaches and never frees it."},
    {"_capsule", (PyCFunction)loop_capsule, METH_NOARGS,
     "A PyCapsule (name \"globeflower.loop\") holding the core gfl_loop* (borrowed)."},
    {"_make_read_pipe_transport", (PyCFunction)(void (*)(void))gflpy_make_read_pipe_transport, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_make_write_pipe_transport", (PyCFunction)(void (*)(void))gflpy_make_write_pipe_transport, METH_VARARGS | METH_KEYWORDS, NULL},
    {"_gfl_connect", (PyCFunction)gflpy_loop_connect, METH_VARARGS, NULL},
    {"_gfl_getaddrinfo", (PyCFunction)gflpy_loop_getaddrinfo, METH_VARARGS, NULL},
    {"_gfl_getnameinfo", (PyCFunction)gflpy_loop_getnameinfo, METH_VARARGS, NULL},
    {"_make_socket_transport", (PyCFunction)(void (*)(void))loop_make_socket_transport, METH_FASTCALL | METH_KEYWORDS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef loop_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(gflpy_loop, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot loop_slots[] = {
    {Py_tp_new, loop_new},
    {Py_tp_dealloc, loop_dealloc},
    {Py_tp_traverse, loop_traverse},
    {Py_tp_clear, loop_clear},
    {Py_tp_methods, loop_methods},
    {Py_tp_members, loop_members},
    {Py_tp_getset, loop_getset},
    {Py_tp_doc, "C base of globeflower.Loop (not an event loop on its own)."},
    {0, NULL},
};

static PyType_Spec loop_spec = {
    "globeflower._core.LoopBase",
    sizeof(gflpy_loop),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    loop_slots,
};

int gflpy_loop_init_type(PyObject *module)
{
    gflpy_LoopType = (PyTypeObject *)PyType_FromSpec(&loop_spec);
    if (!gflpy_LoopType)
        return -1;
    if (register_teardown(module) < 0)
        return -1;
    if (gflpy_sock_init(gflpy_LoopType) < 0)
        return -1;
    Py_INCREF(gflpy_LoopType);
    if (PyModule_AddObject(module, "LoopBase", (PyObject *)gflpy_LoopType) < 0) {
        Py_DECREF(gflpy_LoopType);
        return -1;
    }
    return 0;
}
