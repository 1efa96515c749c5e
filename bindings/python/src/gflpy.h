/*
 * Internal header of the globeflower._core extension (never installed).
 *
 * The extension reaches the core only through the gfl_api table (`gflpy_api`),
 * never through core/ headers, so a C host that embeds its own core and hands
 * its table over keeps one core per process.
 */
#ifndef GFLPY_H
#define GFLPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <sys/socket.h>

#include <globeflower.h>

/* The table every call goes through (set once at module init). */
extern const gfl_api *gflpy_api;
#define API gflpy_api

/* ------------------------------------------------------------------ */
/* Objects from asyncio and from our pure-Python layer, set by _setup() */

typedef struct gflpy_refs {
    PyObject *Handle;           /* asyncio.events.Handle */
    PyObject *TimerHandle;      /* globeflower._loop.TimerHandle (asyncio.TimerHandle + _gfl_id) */
    PyObject *handle_error;     /* _loop._handle_error(handle, exc) */
    PyObject *run_debug;        /* _loop._run_handle_debug(loop, handle) */
    PyObject *report_slow;      /* _loop._report_slow(loop, seconds): a slow core callback */
    PyObject *transport_error;  /* _loop._transport_fatal_error(transport, exc, message) */
    PyObject *BufferedProtocol; /* asyncio.BufferedProtocol */
    PyObject *TransportSocket;  /* asyncio.trsock.TransportSocket */
    PyObject *copy_context;     /* contextvars.copy_context */
    PyObject *set_result_unless_cancelled; /* asyncio.futures._set_result_unless_cancelled */
    PyObject *Task;             /* asyncio.Task (the C one when available) */
    PyObject *Future;           /* asyncio.Future (the C one when available) */
    PyObject *create_task_slow; /* BaseEventLoop.create_task (factories, debug) */
} gflpy_refs;
extern gflpy_refs gflpy;

/* Slot offsets inside asyncio's Handle / TimerHandle (they use __slots__),
 * read from their member descriptors at _setup(): creating and running a
 * handle then costs no Python-level call. */
typedef struct gflpy_handle_offsets {
    Py_ssize_t callback, args, cancelled, loop, source_traceback, repr, context;
    Py_ssize_t when, scheduled, gfl_id;
} gflpy_handle_offsets;
extern gflpy_handle_offsets gflpy_hoff;

#define GFLPY_SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

/* Sets a slot, taking a new reference to `v` and dropping the old one. */
static inline void gflpy_slot_set(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject *old = GFLPY_SLOT(o, off);
    Py_XINCREF(v);
    GFLPY_SLOT(o, off) = v;
    Py_XDECREF(old);
}

/* ------------------------------------------------------------------ */
/* The loop (loop.c)                                                   */

struct gflpy_watch; /* one add_reader/add_writer registration */

typedef struct gflpy_loop {
    PyObject_HEAD
    gfl_loop *core;
    int closed;         /* close() ran */
    int freeing_core;   /* inside loop_free: transports are being dropped */
    int debug;          /* mirrors set_debug() */
    int stopping;       /* asyncio's _stopping (stop() was called) */
    int backend_fd;     /* loops from a C host only (no poll hooks): polled
                         * without the GIL; < 0 until first needed */
    int hooks;          /* the core releases the GIL around its polls */
    PyThreadState *poll_tstate; /* saved by before_poll */
    /* Main thread only: a non-blocking pipe made Python's signal wakeup fd
     * while the core polls (so a signal or _thread.interrupt_main() ends
     * the poll, as EINTR ends asyncio's select); -1 until first needed. */
    int sig_r, sig_w;
    int sig_installed;  /* our sig_w is the wakeup fd right now */
    /* A BaseException (KeyboardInterrupt, SystemExit) raised by a callback:
     * re-raised when the iteration returns; callbacks still queued behind
     * it are re-queued for the next run, as asyncio leaves them ready. */
    PyObject *pending_exc;
    struct gflpy_watch **readers, **writers; /* indexed by fd */
    int nwatch;                              /* capacity of both arrays */
    /* Handles scheduled from a thread that does not own the core loop (the
     * core refuses those calls): a list, in call order, moved into the
     * core by the owner before it schedules anything else, so the FIFO
     * order of asyncio's one ready queue holds across threads. */
    PyObject *xq;
    /* Write batching (transport.c): inside an iteration of run_one, or a
     * callback when a C host iterates (batch_depth > 0), transport.write
     * (bytes) only keeps a reference; the transports so written (`dirty`,
     * strong references) send it all, one syscall each, when the outermost
     * scope ends: before the loop polls again. Besides saving syscalls,
     * sending a whole iteration's replies back to back is what uvloop does:
     * on loopback each send wakes its reader, and a reader already awake
     * from the previous send costs the sender much less. */
    int batch_depth;
    PyObject **dirty;
    Py_ssize_t ndirty, dirty_cap;
    size_t batch_bytes; /* batched since the last flush (see BATCH_BYTES_MAX) */
    PyObject *weakreflist;
    /* A C host's loop (from_capsule): Python holds one reference
     * (gfl_loop_ref via gfl_loop_acquire) and never frees it; close()
     * detaches (see gflpy_loop_detach). */
    int attached;
    /* Python itself is iterating the core (run_forever, run_once, run_for):
     * asyncio's running loop is set and a KeyboardInterrupt/SystemExit
     * leaves that call. At 0 the host pumps: core -> Python entries set the
     * running loop around themselves and such exceptions go to the host
     * (gfl_loop_interrupt). */
    int py_running;
    int host_depth;   /* core -> Python entries in progress while the host pumps */
    /* asyncio's running loop is this loop now (run_forever, or a run_once /
     * run_for pump once a callback needed it). */
    int running_set;
    /* Inside run_once/run_for: the first Python callback sets the running
     * loop and the pump restores it (an idle pump costs no syscall for it:
     * asyncio's setter calls getpid()); lazy_done: it was set. */
    int lazy_running, lazy_done;
    /* A host's run of the core made this loop the running loop at its
     * first Python callback; the core calls host_run_end as that run
     * returns (gfl_loop_at_run_end), which restores host_prev. */
    int host_set;
    PyObject *host_prev;
    PyObject *tr_head; /* transports the core holds (transport.c), for detach */
    struct gflpy_loop *attached_prev, *attached_next; /* every attached loop (atexit) */
} gflpy_loop;

extern PyTypeObject *gflpy_LoopType;
int gflpy_loop_init_type(PyObject *module);

/* ------------------------------------------------------------------ */
/* Entering Python from the core (loop.c)                              */

/* Set once the interpreter is finalised (Py_AtExit): every core -> Python
 * entry point then returns at once, touching nothing of Python. */
extern volatile int gflpy_gone;

typedef struct gflpy_entry {
    int fast;          /* nothing was done: see gflpy_enter */
    PyGILState_STATE gil;
    int gil_taken;     /* PyGILState_Ensure was called (the thread did not hold it) */
    gflpy_loop *loop;  /* set when this entry set asyncio's running loop */
    PyObject *prev;    /* the running loop it replaced (a reference, or NULL) */
} gflpy_entry;

/* gflpy_enter in two steps, for callbacks that find their loop only with
 * the GIL held: gflpy_gil_enter (-1: gone), then gflpy_loop_enter. */
int gflpy_gil_enter(gflpy_entry *e);
void gflpy_loop_enter(gflpy_loop *loop, gflpy_entry *e);
void gflpy_leave_slow(gflpy_entry *e);

/* Every core -> Python callback starts with gflpy_enter and ends with
 * gflpy_leave: -1 means the interpreter is gone (do nothing at all, not
 * even a Py_DECREF); 0 means the GIL is held (taken if the host pumps
 * without it) and, when the host pumps `loop` (NULL: not a loop
 * callback), asyncio's running loop is `loop` until gflpy_leave.
 *
 * `loop` may be read before the GIL is held: a loop's callbacks run on the
 * one thread iterating it, the only thread that changes py_running and
 * running_set; so when Python's own pump of `loop` is what runs us, this
 * thread holds the GIL and the running loop is set: nothing to do (the hot
 * path of run_forever). */
static inline int gflpy_enter(gflpy_loop *loop, gflpy_entry *e)
{
    if (gflpy_gone)
        return -1;
    if (loop && loop->py_running && loop->running_set) {
        e->fast = 1;
        return 0;
    }
    gflpy_gil_enter(e);
    gflpy_loop_enter(loop, e);
    return 0;
}

static inline void gflpy_leave(gflpy_entry *e)
{
    if (!e->fast)
        gflpy_leave_slow(e);
}
/* The core's reference to a Python object is dropped from a release
 * function (no-op once the interpreter is gone). */
void gflpy_release_object(void *obj);

/* Raises the Python exception for a GFL_E* code; returns NULL. */
PyObject *gflpy_raise(int code);
/* A new Python exception object for a core error value (never NULL unless
 * out of memory). */
PyObject *gflpy_exception_from_value(gfl_value *error);
/* Reports an error raised by a callback: a BaseException that must stop
 * the loop is stored, anything else goes to the exception handler. */
void gflpy_loop_report(gflpy_loop *loop, PyObject *context_handle_or_null);
/* asyncio's _add_reader(fd, callback) / _add_writer in C: a new handle
 * (replacing and cancelling the fd's previous one); NULL on error. */
PyObject *gflpy_watch_add(gflpy_loop *loop, int fd, int writer, PyObject *callback);
/* _remove_reader(fd) / _remove_writer: 1 if one was removed, else 0. */
int gflpy_watch_remove(gflpy_loop *loop, int fd, int writer);

/* ------------------------------------------------------------------ */
/* glibc heap thresholds (heap.c)                                       */

/* An explicit opt-in (see heap.c): tune_heap() now, or the first loop
 * when GLOBEFLOWER_HEAP_TUNING=1. gflpy_heap_tune returns 1 when tuned. */
int gflpy_heap_tune(void);
void gflpy_heap_tune_if_asked(void);
PyObject *gflpy_tune_heap(PyObject *module, PyObject *unused);
PyObject *gflpy_heap_tuned(PyObject *module, PyObject *unused);

/* ------------------------------------------------------------------ */
/* The loop's sock_* methods (sock.c)                                  */

/* Adds sock_recv & co. to the LoopBase type. */
int gflpy_sock_init(PyTypeObject *loop_type);

/* ------------------------------------------------------------------ */
/* Handles (handles.c)                                                 */

/* A new asyncio Handle (kind 0) or our TimerHandle (when >= 0), built
 * without running __init__. `context` NULL: a copy of the current one. */
PyObject *gflpy_handle_new(gflpy_loop *loop, PyObject *callback, PyObject *args, PyObject *context);
PyObject *gflpy_timer_handle_new(gflpy_loop *loop, double when, PyObject *callback, PyObject *args, PyObject *context);
/* Runs a handle now (the body of asyncio's Handle._run). */
void gflpy_handle_run(gflpy_loop *loop, PyObject *handle);
/* Core callbacks: arg is a handle reference owned by the core. */
void gflpy_handle_cb(void *arg);
void gflpy_handle_release(void *arg);
int gflpy_handles_setup(void);

/* ------------------------------------------------------------------ */
/* Stream transports (transport.c)                                     */

extern PyTypeObject *gflpy_StreamTransportType;
/* The loop detaches from the core (close() of an attached loop, or
 * finalisation): every transport the core still holds for `loop` is aborted
 * and handed a protocol that never calls Python; the Python objects are
 * left as loop.close() leaves them (open, no connection_lost). */
void gflpy_transports_detach(gflpy_loop *loop);
/* Sends the writes batched on `loop`'s transports (see batch_depth). */
void gflpy_flush_writes(gflpy_loop *loop);
/* Forgets them (the loop is being cleared). */
void gflpy_drop_writes(gflpy_loop *loop);
/* Around an iteration or a callback: the writes made inside go out at its end. */
static inline void gflpy_batch_begin(gflpy_loop *loop)
{
    loop->batch_depth++;
}
static inline void gflpy_batch_end(gflpy_loop *loop)
{
    if (--loop->batch_depth == 0 && loop->ndirty)
        gflpy_flush_writes(loop);
}
int gflpy_transport_init_type(PyObject *module);
/* A core server accepted `t`: makes its Python transport for `protocol`
 * (attached to the asyncio `server`) and fills the core factory's outputs.
 * Its protocol callbacks run in `context` (a contextvars.Context, taken
 * over by the transport; NULL: a copy of the current one). */
int gflpy_transport_accepted(gflpy_loop *loop, gfl_transport *t, PyObject *protocol, PyObject *server,
                             PyObject *context, const gfl_protocol **proto, void **ud);

/* Protocol callbacks run in the context of whoever created the connection,
 * server or endpoint, as the stock loop's handles do. gflpy_context_enter
 * returns what gflpy_context_exit must leave: NULL when `ctx` is NULL or
 * already the current context (a callback calling back into its own
 * transport), or when it cannot be entered (entered further down the
 * stack: the callback then runs in the current context). */
static inline PyObject *gflpy_context_enter(PyObject *ctx)
{
    if (!ctx || PyThreadState_Get()->context == ctx)
        return NULL;
    if (PyContext_Enter(ctx) < 0) {
        PyErr_Clear();
        return NULL;
    }
    Py_INCREF(ctx); /* the callback may drop the object that held it */
    return ctx;
}

static inline void gflpy_context_exit(PyObject *entered)
{
    if (!entered)
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyContext_Exit(entered) < 0)
        PyErr_WriteUnraisable(entered);
    PyErr_Restore(type, value, tb);
    Py_DECREF(entered);
}
int gflpy_server_init_type(PyObject *module);
/* Creates the type as a subclass of `base` (asyncio.Transport). */
int gflpy_transport_set_pipe_types(PyObject *read_type, PyObject *write_type);
int gflpy_transport_make_type(PyObject *base);
/* loop._make_socket_transport(sock, protocol, waiter=None, extra=None, server=None) */
PyObject *gflpy_make_socket_transport(gflpy_loop *loop, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
/* loop._make_read_pipe_transport / _make_write_pipe_transport */
PyObject *gflpy_make_read_pipe_transport(gflpy_loop *loop, PyObject *args, PyObject *kw);
PyObject *gflpy_make_write_pipe_transport(gflpy_loop *loop, PyObject *args, PyObject *kw);

/* Client connections and DNS on the core (transport.c) */
PyObject *gflpy_loop_connect(gflpy_loop *loop, PyObject *args);
PyObject *gflpy_loop_getaddrinfo(gflpy_loop *loop, PyObject *args);
PyObject *gflpy_loop_getnameinfo(gflpy_loop *loop, PyObject *args);
PyObject *gflpy_op_cancel(PyObject *mod, PyObject *cap);
/* A struct sockaddr as the socket module shows it; NULL (maybe no error
 * set) when unknown. */
PyObject *gflpy_sockaddr_to_py(const struct sockaddr *sa, size_t len);

/* ------------------------------------------------------------------ */
/* Many hosts on one loop (docs/hosts.md): values (value.c), futures    */
/* across hosts (futures.c), the export registry (exports.c), plugins   */
/* (plugin.c)                                                           */

/* Whether Python code may run: false once the interpreter finalizes.
 * Entry points the core calls (release functions, done callbacks, export
 * calls, the "python" host class's unref) check it before taking the GIL,
 * and leak what they hold rather than touch a dead interpreter. */
#if PY_VERSION_HEX >= 0x030D0000
#define gflpy_is_finalizing() Py_IsFinalizing()
#else
#define gflpy_is_finalizing() _Py_IsFinalizing()
#endif
static inline int gflpy_interpreter_alive(void)
{
    return Py_IsInitialized() && !gflpy_is_finalizing();
}

/* What the Python layer (globeflower/_hosts.py) hands over at import. */
typedef struct gflpy_hosts_refs {
    PyObject *RemoteError;      /* globeflower.RemoteError */
    PyObject *CancelledError;   /* asyncio.CancelledError */
    PyObject *format_exception; /* traceback.format_exception */
    PyObject *get_running_loop; /* asyncio.events._get_running_loop */
    PyObject *thread_loop;      /* _hosts._thread_loop(): the thread's current loop or None */
    PyObject *is_async;         /* _hosts._is_async(fn): a coroutine function? */
    PyObject *ensure_future;    /* asyncio.ensure_future */
} gflpy_hosts_refs;
extern gflpy_hosts_refs gflpy_hosts;

/* The "python" host class: an OBJECT value holding a Python object. */
extern const gfl_host_class gflpy_host_class;
extern PyTypeObject *gflpy_ForeignObjectType;

/* 1 when the core has the ABI 1.3 functions used here; else 0 with a
 * RuntimeError set. */
int gflpy_hosts_available(void);
/* Python object -> a new gfl_value reference (a deep copy), or NULL with
 * an exception set (ValueError for a container that contains itself or
 * nests deeper than GFL_VALUE_MAX_DEPTH). */
gfl_value *gflpy_to_value(PyObject *o);
/* args[0..n) as new values, in `small` when n <= nsmall, else in an array
 * allocated here; NULL with an exception set (nothing left held). Release
 * with gflpy_values_drop(vals, n, small). */
gfl_value **gflpy_values_from_args(PyObject *const *args, size_t n, gfl_value **small, size_t nsmall);
void gflpy_values_drop(gfl_value **vals, size_t n, gfl_value **small);
/* gfl_value -> a new Python object, or NULL with an exception set. */
PyObject *gflpy_from_value(gfl_value *v);
/* An exception instance -> an ERROR value (or the value it was made from),
 * NULL with an exception set only when out of memory. */
gfl_value *gflpy_error_from_exception(PyObject *exc);
/* The raised exception (cleared) as an ERROR value; never NULL: falls back
 * to a plain GFL_ENOMEM error. `*exc_out`, when given, gets the exception
 * (a new reference, or NULL). */
gfl_value *gflpy_error_from_raised(PyObject **exc_out);
/* An ERROR value -> the exception to raise (a new reference), never NULL
 * unless out of memory: the original exception when its cause is a Python
 * one, else a new one keeping the value. */
PyObject *gflpy_exception_from_error(gfl_value *error);
/* Raises the exception for an ERROR value; returns NULL. */
PyObject *gflpy_raise_error_value(gfl_value *error);
int gflpy_value_init(PyObject *module);
PyObject *gflpy_hosts_setup(PyObject *module, PyObject *ns);

/* The loop a call from Python uses: `loop` if given (not NULL/None), else
 * the running globeflower loop, else the thread's current one (a new
 * reference); NULL with RuntimeError/TypeError when there is none. */
gflpy_loop *gflpy_hosts_loop(PyObject *loop);
/* A new asyncio future of `loop` that follows the core future `f`
 * (borrowed): settled with its converted result or error, cancelled with
 * it; cancelling the asyncio future cancels `f`. */
PyObject *gflpy_future_from_core(gflpy_loop *loop, gfl_future *f);
/* A new core future reference that follows the asyncio future or task
 * `pyfut` (settled with its converted result or error, cancelled with it);
 * cancelling the core future cancels `pyfut`. NULL with an exception. */
gfl_future *gflpy_future_to_core(gflpy_loop *loop, PyObject *pyfut);
int gflpy_futures_init(PyObject *module);
/* The loop is closing: the core futures still pending between it and
 * other hosts are cancelled. */
void gflpy_futures_loop_closing(gflpy_loop *loop);
/* The loop is closing (or being freed), its core loop still working:
 * unexports what Python exported on it, cancels what is pending across
 * hosts. Called by loop.c. */
void gflpy_hosts_loop_closing(gflpy_loop *loop);

/* exports.c: the module functions export/unexport/call/exports. */
extern PyMethodDef gflpy_exports_methods[];
int gflpy_exports_init(void);
/* The loop is closing (or being freed): unexport what Python exported on
 * it, while its core loop still works. */
void gflpy_exports_loop_closing(gflpy_loop *loop);

/* plugin.c: globeflower.plugin() and its module-like objects. */
extern PyMethodDef gflpy_plugin_methods[];
int gflpy_plugin_init(PyObject *module);

/* sslproto.c: _tls_types(sslproto) -> (SSLProtocolBase, SSLTransportBase). */
PyObject *gflpy_tls_types(PyObject *module, PyObject *sslproto);

#endif
