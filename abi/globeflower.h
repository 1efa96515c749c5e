/*
 * globeflower — an embeddable event loop with asyncio's semantics.
 *
 * This is the stable C ABI. Every type is opaque except the small descriptor
 * structs whose first field is `size_t size` (set it to sizeof the struct you
 * compiled against; fields added later are then seen as absent/zero).
 *
 * Conventions
 *  - Functions returning `int` return 0 (or a documented non-negative count)
 *    on success and a negative GFL_E* code on failure; gfl_strerror() names it.
 *  - Functions returning a pointer return NULL on failure (bad argument,
 *    closed loop, out of memory).
 *  - Every function checks its arguments: bad input is an error code, never a
 *    crash. A loop is used from one thread (the one that created or last ran
 *    it); from another thread only gfl_call_soon_threadsafe() is allowed and
 *    everything else returns GFL_EWRONGTHREAD.
 *  - Bindings and plugins should reach these functions through gfl_api_get()
 *    (see the end of this file) so that one process shares one core.
 *  - Descriptor structs passed in (gfl_*_options) are the caller's: the core
 *    copies every field, string and array it needs before the call returns,
 *    so they may be freed or reused at once. (Reference-counted objects they
 *    name, such as a gfl_addrinfo or gfl_tls_context, get a reference.)
 *  - Hosts loaded with dlopen: a host module (a Lua C module, a Python
 *    extension, a plugin) must stay loaded as long as any loop may still call
 *    into it (its callbacks, release functions, protocols, gfl_host_class
 *    hooks): load or re-open it with RTLD_NODELETE, or never dlclose it.
 */
#ifndef GLOBEFLOWER_H
#define GLOBEFLOWER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(GFL_BUILDING_CORE) && defined(__GNUC__)
#define GFL_EXPORT __attribute__((visibility("default")))
#else
#define GFL_EXPORT
#endif

/* ------------------------------------------------------------------ */
/* Versions                                                            */

/* Bumped only when the ABI breaks (never, we hope). */
#define GFL_ABI_MAJOR 1
/* Bumped whenever gfl_api grows. */
#define GFL_ABI_MINOR 5

/* ------------------------------------------------------------------ */
/* Error codes: negative; errno-compatible where an errno exists.      */

#define GFL_OK 0
#define GFL_EPERM (-1)
#define GFL_ENOENT (-2)
#define GFL_EINTR (-4)
#define GFL_EIO (-5)
#define GFL_EBADF (-9)
#define GFL_EAGAIN (-11)
#define GFL_ENOMEM (-12)
#define GFL_EACCES (-13)
#define GFL_EBUSY (-16)
#define GFL_EEXIST (-17)
#define GFL_EINVAL (-22)
#define GFL_EMFILE (-24)
#define GFL_EPIPE (-32)
#define GFL_ERANGE (-34)
#define GFL_ENOSYS (-38)
#define GFL_EADDRINUSE (-98)
#define GFL_ECONNRESET (-104)
#define GFL_ENOTCONN (-107)
#define GFL_ETIMEDOUT (-110)
#define GFL_ECONNREFUSED (-111)
#define GFL_EALREADY (-114)
#define GFL_EINPROGRESS (-115)
#define GFL_ECANCELED (-125)
/* globeflower's own codes, outside errno's range. */
#define GFL_EUNKNOWN (-4000)  /* an error with no better code */
#define GFL_ECLOSED (-4001)   /* the loop (or object) is closed */
#define GFL_EWRONGTHREAD (-4002) /* called from a thread that does not own the loop */
#define GFL_ESTATE (-4003)    /* not allowed in the object's current state */
#define GFL_EPENDING (-4004)  /* the future is not done yet */
#define GFL_EVERSION (-4005)  /* ABI version mismatch (plugins) */
#define GFL_ETYPE (-4006)     /* a value of another type was expected */

/* A static string describing `code` (never NULL). */
GFL_EXPORT const char *gfl_strerror(int code);

/* ------------------------------------------------------------------ */
/* Opaque types                                                        */

typedef struct gfl_loop gfl_loop;
typedef struct gfl_future gfl_future;
typedef struct gfl_task gfl_task;
typedef struct gfl_value gfl_value;

typedef void (*gfl_callback)(void *arg);
/* Called once when the core drops an argument it was handed. */
typedef void (*gfl_release_fn)(void *arg);

/* ------------------------------------------------------------------ */
/* Loop                                                                */

/*
 * Allocation hook, Lua style: realloc(ud, ptr, size); size 0 frees ptr and
 * returns NULL. It must be thread-safe (the thread pool and
 * gfl_call_soon_threadsafe allocate from other threads).
 */
typedef void *(*gfl_realloc_fn)(void *ud, void *ptr, size_t size);

typedef struct gfl_loop_options {
    size_t size;                   /* sizeof(gfl_loop_options) */
    gfl_realloc_fn realloc;        /* NULL: the C library's */
    void *realloc_ud;
    unsigned executor_threads;     /* thread pool size; 0: 4 */
    int debug;                     /* non-zero: debug mode on */
    double slow_callback_duration; /* debug mode threshold in s; 0: 0.1 */
    /* Called on the loop thread just before and after a poll that may
     * block (timeout != 0): where an interpreter releases and re-takes its
     * global lock. NULL: none. */
    void (*before_poll)(gfl_loop *loop, void *ud);
    void (*after_poll)(gfl_loop *loop, void *ud);
    void *poll_hook_ud;
} gfl_loop_options;

/* A new loop; NULL on bad options or out of memory. The caller owns one
 * reference. */
GFL_EXPORT gfl_loop *gfl_loop_new(const gfl_loop_options *opts);
/* Closes the loop now (drops pending callbacks, watchers, signal handlers,
 * joins the thread pool) and releases the caller's reference. Objects still
 * holding the loop (futures, tasks, other references) see GFL_ECLOSED. */
GFL_EXPORT int gfl_loop_free(gfl_loop *loop);
/* Extra references for bindings sharing a loop; the loop closes when the
 * last one is released (gfl_loop_free releases one and closes at once). */
GFL_EXPORT gfl_loop *gfl_loop_ref(gfl_loop *loop);
GFL_EXPORT int gfl_loop_unref(gfl_loop *loop);

/* Runs iterations until gfl_loop_stop(). GFL_ESTATE if already running.
 * gfl_loop_run, gfl_loop_run_once and gfl_loop_free may be called from any
 * thread while the loop is idle: the loop then belongs to that thread. */
GFL_EXPORT int gfl_loop_run(gfl_loop *loop);
/* One iteration: poll I/O for at most `timeout` seconds (0: never block;
 * negative: until something happens), move due timers to the ready queue,
 * run the callbacks that were ready when the iteration began. Returns the
 * number of callbacks run. */
GFL_EXPORT int gfl_loop_run_once(gfl_loop *loop, double timeout);
/* Makes gfl_loop_run return after the current iteration. */
GFL_EXPORT int gfl_loop_stop(gfl_loop *loop);
/* Monotonic time in seconds (the clock timers use); negative on bad loop. */
GFL_EXPORT double gfl_loop_time(const gfl_loop *loop);
GFL_EXPORT int gfl_loop_is_running(const gfl_loop *loop); /* 1/0 or error */
GFL_EXPORT int gfl_loop_is_closed(const gfl_loop *loop);  /* 1/0 or error */

/* Per-thread current loop: the host sets it, or the first binding that
 * needs a loop creates one and sets it. Not a reference. */
GFL_EXPORT gfl_loop *gfl_loop_current(void);
GFL_EXPORT int gfl_loop_set_current(gfl_loop *loop); /* NULL clears */

/* ------------------------------------------------------------------ */
/* Callbacks and handles                                               */

/*
 * A handle names one scheduled callback: > 0 is a handle, < 0 a GFL_E* code.
 * Handles are plain numbers: dropping one is correct fire-and-forget use and
 * leaks nothing; using one after its callback ran or was cancelled is safe
 * (it no longer names anything).
 */
typedef int64_t gfl_handle;

GFL_EXPORT gfl_handle gfl_call_soon(gfl_loop *loop, gfl_callback cb, void *arg);
GFL_EXPORT gfl_handle gfl_call_later(gfl_loop *loop, double delay, gfl_callback cb, void *arg);
GFL_EXPORT gfl_handle gfl_call_at(gfl_loop *loop, double when, gfl_callback cb, void *arg);
/* Like gfl_call_soon / gfl_call_at, with a release function for `arg`:
 * release runs only if the callback never runs (cancelled, or dropped when
 * the loop closes), exactly once, so an argument the callback would have
 * freed is not leaked. A callback that runs owns its argument: release is
 * then NOT called (the callback frees arg itself). On failure (a negative
 * return) neither runs and the caller still owns arg. */
GFL_EXPORT gfl_handle gfl_call_soon_ex(gfl_loop *loop, gfl_callback cb, void *arg, gfl_release_fn release);
GFL_EXPORT gfl_handle gfl_call_at_ex(gfl_loop *loop, double when, gfl_callback cb, void *arg, gfl_release_fn release);
/* 0 if the callback was cancelled; GFL_ENOENT if it already ran or was
 * cancelled before. */
GFL_EXPORT int gfl_handle_cancel(gfl_loop *loop, gfl_handle handle);
/* 1 if the handle's callback is still scheduled, 0 if not. */
GFL_EXPORT int gfl_handle_is_pending(const gfl_loop *loop, gfl_handle handle);
/* Safe from any thread; wakes a blocked loop. 0 or an error. */
GFL_EXPORT int gfl_call_soon_threadsafe(gfl_loop *loop, gfl_callback cb, void *arg);

/* ------------------------------------------------------------------ */
/* File descriptor readiness (asyncio's add_reader/add_writer)         */

/* One reader and one writer per fd; adding again replaces. The callback is
 * queued (and runs with the ready callbacks) each iteration the fd is ready. */
GFL_EXPORT int gfl_add_reader(gfl_loop *loop, int fd, gfl_callback cb, void *arg);
GFL_EXPORT int gfl_add_writer(gfl_loop *loop, int fd, gfl_callback cb, void *arg);
/* 1 if a watcher was removed, 0 if there was none. */
GFL_EXPORT int gfl_remove_reader(gfl_loop *loop, int fd);
GFL_EXPORT int gfl_remove_writer(gfl_loop *loop, int fd);

/* ------------------------------------------------------------------ */
/* Signals: delivered as ordinary callbacks on the loop.               */

/* cb(arg) runs on the loop (never in signal context), once per delivery of
 * signum, also for deliveries that arrived while the loop was not running
 * (what the kernel merges while the signal is blocked arrives once). Any
 * loop, in any thread, may watch any signal; several loops may watch the
 * same one and each gets every delivery. Adding again replaces the callback
 * (deliveries not yet called go to the new one). GFL_EINVAL for SIGKILL,
 * SIGSTOP or a bad number; GFL_ENOMEM/GFL_EMFILE.
 *
 * Process-wide state, exactly: when the first loop adds a handler for
 * signum, sigaction(signum) installs the library's handler (SA_RESTART, all
 * signals blocked while it runs; it only counts and writes to an eventfd of
 * each watching loop) and saves the disposition it replaced. When the last
 * loop watching signum removes its handler or is freed, that disposition is
 * restored, unless the handler was replaced meanwhile by someone else (then
 * theirs stays). Nothing else (no signal mask) is changed. */
GFL_EXPORT int gfl_add_signal_handler(gfl_loop *loop, int signum, gfl_callback cb, void *arg);
GFL_EXPORT int gfl_remove_signal_handler(gfl_loop *loop, int signum); /* 1/0 */

/* ------------------------------------------------------------------ */
/* Errors raised by callbacks, and debug mode                          */

/* `error` may be NULL; both arguments are borrowed for the call. */
typedef void (*gfl_exception_handler)(gfl_loop *loop, const char *message, gfl_value *error, void *ud);
/* NULL restores the default handler (prints to stderr, keeps running). */
GFL_EXPORT int gfl_loop_set_exception_handler(gfl_loop *loop, gfl_exception_handler handler, void *ud);
/* How a callback reports an error it raised. */
GFL_EXPORT int gfl_loop_call_exception_handler(gfl_loop *loop, const char *message, gfl_value *error);

typedef void (*gfl_slow_callback_handler)(gfl_loop *loop, gfl_callback cb, void *arg, double seconds, void *ud);
GFL_EXPORT int gfl_loop_set_debug(gfl_loop *loop, int enabled);
GFL_EXPORT int gfl_loop_get_debug(const gfl_loop *loop);
GFL_EXPORT int gfl_loop_set_slow_callback_duration(gfl_loop *loop, double seconds);
/* Called in debug mode for each callback slower than the threshold;
 * NULL restores the default (a line on stderr). */
GFL_EXPORT int gfl_loop_set_slow_callback_handler(gfl_loop *loop, gfl_slow_callback_handler handler, void *ud);

/* ------------------------------------------------------------------ */
/* Foreign main loops                                                  */

/* An fd that polls readable when the loop has I/O, signals or thread wake-ups
 * to process: add it to your own poll set and call gfl_loop_run_once(loop, 0)
 * when it is readable or when gfl_loop_backend_timeout() expires. */
GFL_EXPORT int gfl_loop_backend_fd(gfl_loop *loop);
/* Seconds until the loop needs to run: 0 when callbacks are ready, the
 * delay to the next timer, or -1 when nothing is scheduled. */
GFL_EXPORT double gfl_loop_backend_timeout(const gfl_loop *loop);

/* ------------------------------------------------------------------ */
/* Values: tagged, immutable, reference counted, usable from any thread */

typedef enum gfl_value_type {
    GFL_VALUE_NIL = 0,
    GFL_VALUE_BOOL = 1,
    GFL_VALUE_INT = 2,
    GFL_VALUE_DOUBLE = 3,
    GFL_VALUE_BYTES = 4,
    GFL_VALUE_STRING = 5, /* bytes meant as UTF-8 text */
    GFL_VALUE_ERROR = 6,
    GFL_VALUE_OBJECT = 7, /* a host's object */
    /* ABI 1.3 */
    GFL_VALUE_ARRAY = 8,  /* a sequence of values (Lua sequence, Python list/tuple) */
    GFL_VALUE_MAP = 9     /* key/value pairs in insertion order (Lua table, Python dict) */
} gfl_value_type;

/* The deepest nesting of arrays and maps a value may have (a scalar is
 * depth 0, an array of scalars depth 1). Constructors refuse deeper values;
 * host conversions stop there with a clear error. */
#define GFL_VALUE_MAX_DEPTH 64

/* A host's object class: its address identifies the host. `ref` is called
 * when a value takes the object, `unref` when the value is destroyed.
 * Values cross threads (the thread pool, gfl_call_soon_threadsafe, another
 * loop), so `unref` may be called on ANY thread, not only the host's own:
 * it must be thread-safe (e.g. defer the real release to the host's thread
 * when its interpreter is not). The class must stay valid, and its code
 * loaded, while any value of it lives (see "Hosts loaded with dlopen" above). */
typedef struct gfl_host_class {
    size_t size;      /* sizeof(gfl_host_class) */
    const char *name; /* e.g. "lua", "python" */
    void (*ref)(void *object);
    void (*unref)(void *object);
} gfl_host_class;

/* Constructors return a new reference, NULL on bad input or no memory. */
GFL_EXPORT gfl_value *gfl_value_nil(void);
GFL_EXPORT gfl_value *gfl_value_bool(int b);
GFL_EXPORT gfl_value *gfl_value_int(int64_t i);
GFL_EXPORT gfl_value *gfl_value_double(double d);
GFL_EXPORT gfl_value *gfl_value_bytes(const void *data, size_t len);
GFL_EXPORT gfl_value *gfl_value_string(const char *text, size_t len);
/* `type` and `message` default to "Error" and gfl_strerror(code) when NULL;
 * `traceback` may be NULL. `code` must be negative. */
GFL_EXPORT gfl_value *gfl_value_error(int code, const char *type, const char *message, const char *traceback);
/* gfl_value_error with a `cause` (may be NULL): any value, typically a host
 * object value holding the host's original exception, so that the host that
 * raised it can raise the very same object again. The error keeps its own
 * reference to `cause` (the caller keeps its own). gfl_value_error is this
 * with cause NULL. */
GFL_EXPORT gfl_value *gfl_value_error_ex(int code, const char *type, const char *message, const char *traceback, gfl_value *cause);
GFL_EXPORT gfl_value *gfl_value_object(const gfl_host_class *cls, void *object);

GFL_EXPORT gfl_value *gfl_value_ref(gfl_value *v);
GFL_EXPORT void gfl_value_unref(gfl_value *v);

/* The gfl_value_type, or GFL_EINVAL for NULL. */
GFL_EXPORT int gfl_value_type_of(const gfl_value *v);
/* Readers: 0 or GFL_ETYPE (wrong type) / GFL_EINVAL (NULL). */
GFL_EXPORT int gfl_value_get_bool(const gfl_value *v, int *out);
GFL_EXPORT int gfl_value_get_int(const gfl_value *v, int64_t *out);
GFL_EXPORT int gfl_value_get_double(const gfl_value *v, double *out); /* ints convert */
/* Bytes or string: a pointer valid while the value lives (NUL-terminated). */
GFL_EXPORT int gfl_value_get_bytes(const gfl_value *v, const char **data, size_t *len);
/* Errors: the code (negative), or GFL_ETYPE/GFL_EINVAL if not an error. */
GFL_EXPORT int gfl_value_error_code(const gfl_value *v);
/* NULL if not an error; the traceback may be NULL. */
GFL_EXPORT const char *gfl_value_error_type(const gfl_value *v);
GFL_EXPORT const char *gfl_value_error_message(const gfl_value *v);
GFL_EXPORT const char *gfl_value_error_traceback(const gfl_value *v);
/* The cause given to gfl_value_error_ex (borrowed: valid while `v` lives),
 * or NULL when it has none or `v` is not an error. */
GFL_EXPORT gfl_value *gfl_value_error_cause(const gfl_value *v);
/* The object if `cls` is the value's class; GFL_ETYPE otherwise (another
 * host's object is an opaque handle). */
GFL_EXPORT int gfl_value_get_object(const gfl_value *v, const gfl_host_class *cls, void **object);
GFL_EXPORT const gfl_host_class *gfl_value_object_class(const gfl_value *v);

/* ABI 1.3: arrays and maps. Both are immutable and hold a reference to
 * every item: build the items first, then the container (so a value can
 * never contain itself; cycles exist only in hosts, whose conversions
 * detect them). NULL on a NULL item, no memory, or nesting deeper than
 * GFL_VALUE_MAX_DEPTH. The caller keeps its own references to the items. */
GFL_EXPORT gfl_value *gfl_value_array(gfl_value *const *items, size_t n);
/* keys[i] maps to values[i]. Keys may be any value; hosts use strings and
 * numbers. Duplicate keys are kept (lookups find the first). */
GFL_EXPORT gfl_value *gfl_value_map(gfl_value *const *keys, gfl_value *const *values, size_t n);
/* Items of an array or entries of a map (>= 0), GFL_ETYPE / GFL_EINVAL. */
GFL_EXPORT int64_t gfl_value_length(const gfl_value *v);
/* Borrowed (valid while `v` lives); NULL when out of range or not an array. */
GFL_EXPORT gfl_value *gfl_value_array_get(const gfl_value *v, size_t index);
/* The index-th entry of a map (borrowed): 0, GFL_ERANGE, GFL_ETYPE, GFL_EINVAL. */
GFL_EXPORT int gfl_value_map_entry(const gfl_value *v, size_t index, gfl_value **key, gfl_value **value);
/* The value of the first entry whose key is a string or bytes equal to
 * key[0..len) (borrowed), or NULL. */
GFL_EXPORT gfl_value *gfl_value_map_find(const gfl_value *v, const char *key, size_t len);
/* Nesting depth (0 for scalars), or GFL_EINVAL. */
GFL_EXPORT int gfl_value_depth(const gfl_value *v);

/* ------------------------------------------------------------------ */
/* Futures                                                             */

typedef enum gfl_future_state {
    GFL_FUTURE_PENDING = 0,
    GFL_FUTURE_RESULT = 1,
    GFL_FUTURE_ERROR = 2,
    GFL_FUTURE_CANCELLED = 3
} gfl_future_state;

typedef void (*gfl_future_callback)(gfl_future *future, void *arg);

/* A pending future owned by the caller (one reference). */
GFL_EXPORT gfl_future *gfl_future_new(gfl_loop *loop);
GFL_EXPORT gfl_future *gfl_future_ref(gfl_future *f);
GFL_EXPORT void gfl_future_unref(gfl_future *f);
/* The future keeps its own reference to `value`. GFL_ESTATE if done. */
GFL_EXPORT int gfl_future_set_result(gfl_future *f, gfl_value *value);
/* `error` must be a GFL_VALUE_ERROR value. */
GFL_EXPORT int gfl_future_set_error(gfl_future *f, gfl_value *error);
/* 1 if cancelled now, 0 if it was already done. `message` may be NULL. */
GFL_EXPORT int gfl_future_cancel(gfl_future *f, const char *message);
/* A gfl_future_state, or GFL_EINVAL. */
GFL_EXPORT int gfl_future_state_of(const gfl_future *f);
/* Borrowed: the result, the error, or for a cancelled future an error value
 * with code GFL_ECANCELED and type "CancelledError"; NULL while pending.
 * Reading an error marks it retrieved (an error never retrieved is reported
 * to the loop's exception handler when the future is destroyed). */
GFL_EXPORT gfl_value *gfl_future_value(gfl_future *f);
GFL_EXPORT gfl_loop *gfl_future_loop(const gfl_future *f);
/* Done callbacks run through the ready queue, never re-entrantly, in the
 * order they were added; one added to a done future is scheduled at once. */
GFL_EXPORT int gfl_future_add_done_callback(gfl_future *f, gfl_future_callback cb, void *arg);
/* gfl_future_add_done_callback with a release function for `arg` (may be
 * NULL). release(arg) is called exactly once if the callback will never
 * run: the registration is removed with gfl_future_remove_done_callback,
 * the future is destroyed while still pending, or the scheduled callback
 * is dropped because the loop closed. When the callback DOES run, release
 * is NOT called: the callback owns arg then (and frees it itself). On
 * failure (a negative return) neither is called: the caller still owns
 * arg. */
GFL_EXPORT int gfl_future_add_done_callback_ex(gfl_future *f, gfl_future_callback cb, void *arg, gfl_release_fn release);
/* Number of (cb, arg) registrations removed (the release of each one added
 * with gfl_future_add_done_callback_ex is called). */
GFL_EXPORT int gfl_future_remove_done_callback(gfl_future *f, gfl_future_callback cb, void *arg);

/* ------------------------------------------------------------------ */
/* Tasks: a generic coroutine driver                                   */

/*
 * The host's step function resumes its coroutine with `value` (first step:
 * nil; then the awaited future's result) or throws `error` into it (the
 * awaited future's error, or a CancelledError). Exactly one is non-NULL;
 * both are borrowed. Before returning, the step calls at most one of
 * gfl_task_await (suspend on a future), gfl_task_return (finished) or
 * gfl_task_fail (raised); calling none is a bare yield (step again next
 * iteration).
 */
typedef void (*gfl_task_step_fn)(gfl_task *task, void *ud, gfl_value *value, gfl_value *error);

/* Schedules the first step. `release(ud)` runs once when the task is done
 * with the coroutine. The caller owns one reference. */
GFL_EXPORT gfl_task *gfl_task_new(gfl_loop *loop, gfl_task_step_fn step, void *ud, gfl_release_fn release);
GFL_EXPORT gfl_task *gfl_task_ref(gfl_task *t);
GFL_EXPORT void gfl_task_unref(gfl_task *t);
/* The task's future (borrowed; lives as long as the task). */
GFL_EXPORT gfl_future *gfl_task_future(gfl_task *t);
GFL_EXPORT int gfl_task_await(gfl_task *t, gfl_future *awaited);
GFL_EXPORT int gfl_task_return(gfl_task *t, gfl_value *value);
GFL_EXPORT int gfl_task_fail(gfl_task *t, gfl_value *error);
/* Requests cancellation: the awaited future is cancelled and the coroutine
 * is thrown a CancelledError. 1 if requested, 0 if the task is done. */
GFL_EXPORT int gfl_task_cancel(gfl_task *t, const char *message);
/* The task whose step is running on `loop`, or NULL. Borrowed. */
GFL_EXPORT gfl_task *gfl_task_current(gfl_loop *loop);

/* ------------------------------------------------------------------ */
/* Thread pool                                                         */

/* Runs in a pool thread; returns a new value (an error value to fail;
 * NULL fails with GFL_ENOMEM). */
typedef gfl_value *(*gfl_work_fn)(void *arg);

/* A future for work(arg) run in the loop's pool. release(arg), if given,
 * runs on the loop thread once the job finished or was dropped (a future
 * cancelled before the job started drops it). */
GFL_EXPORT gfl_future *gfl_run_in_executor(gfl_loop *loop, gfl_work_fn work, void *arg, gfl_release_fn release);

/* ------------------------------------------------------------------ */
/* Plugins (host side; the plugin side is in globeflower_plugin.h)     */

typedef struct gfl_plugin gfl_plugin;

/* A plugin function: arguments borrowed; on success *result is a new value.
 * Return 0, or a GFL_E* code (then *result, if set, is an error value). */
typedef int (*gfl_plugin_function)(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result);
/* An asynchronous one returns a new future reference, NULL on failure. */
typedef gfl_future *(*gfl_plugin_async_function)(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs);

/* Loads plugin `name` from `path` (NULL: $GFL_PLUGIN_PATH, then the
 * installed plugin directory, as <name>.so) and runs its
 * gfl_plugin_init_<name>. NULL on failure; gfl_plugin_last_error() says why.
 * A plugin loads once per process: while `name` is loaded, every load (from
 * any host or thread, whatever `path`) returns the same object with one more
 * reference, and its init does not run again. */
GFL_EXPORT gfl_plugin *gfl_plugin_load(const char *name, const char *path);
/* The calling thread's last gfl_plugin_load failure, or NULL. */
GFL_EXPORT const char *gfl_plugin_last_error(void);
/* Drops one reference; the last one runs the plugin's finaliser, if it
 * registered one, and frees the object (the shared object stays mapped:
 * its code may still be referenced). */
GFL_EXPORT int gfl_plugin_unload(gfl_plugin *plugin);
GFL_EXPORT const char *gfl_plugin_name(const gfl_plugin *plugin);
GFL_EXPORT int gfl_plugin_function_count(const gfl_plugin *plugin);
/* The i-th function's name, NULL when out of range. */
GFL_EXPORT const char *gfl_plugin_function_name(const gfl_plugin *plugin, int index);
/* 1 if async, 0 if sync, GFL_ENOENT if there is no such function. */
GFL_EXPORT int gfl_plugin_function_is_async(const gfl_plugin *plugin, const char *name);
/* Calls a sync function: fills *result (on failure, an error value the host
 * can raise). An async function gives GFL_ESTATE: call it with
 * gfl_plugin_call_async, which takes both kinds (a sync result comes back
 * as an already-done future). */
GFL_EXPORT int gfl_plugin_call(gfl_plugin *plugin, const char *name, gfl_loop *loop, gfl_value *const *args, size_t nargs, gfl_value **result);
GFL_EXPORT gfl_future *gfl_plugin_call_async(gfl_plugin *plugin, const char *name, gfl_loop *loop, gfl_value *const *args, size_t nargs);

/* ------------------------------------------------------------------ */
/* ABI 1.3: named functions shared by every host on a loop             */

/*
 * A loop keeps one registry of named functions. Any host (C, Lua, Python) or
 * plugin exports a function under a name; any host calls it by name and gets
 * a future. The calling convention is the plugins' (gfl_plugin_function /
 * gfl_plugin_async_function): arguments borrowed, results as gfl_values.
 *
 * Names: 1 to 128 characters from A-Z a-z 0-9 _ . (so "lua.greet" works).
 * Everything here runs on the loop's thread (GFL_EWRONGTHREAD otherwise).
 */

/* Exports `name`: exactly one of `fn` (sync: its result settles the
 * caller's future at once) and `async_fn` (returns a future) is non-NULL.
 * release(ud), if given, runs exactly once when the export goes away
 * (gfl_unexport, or the loop closing) and no call is inside it. On failure
 * (GFL_EEXIST: the name is taken; GFL_EINVAL; GFL_ENOMEM...) release is not
 * called: the caller still owns ud. */
GFL_EXPORT int gfl_export(gfl_loop *loop, const char *name, gfl_plugin_function fn,
                          gfl_plugin_async_function async_fn, void *ud, gfl_release_fn release);
/* 0, or GFL_ENOENT when nothing is exported under `name`. */
GFL_EXPORT int gfl_unexport(gfl_loop *loop, const char *name);
/* Calls the export `name` with `args` (borrowed). A new future reference:
 * the function's own future, a done one for a sync function, or a failed
 * one when nothing is exported under that name (code GFL_ENOENT, type
 * "LookupError") or the function failed without a future. NULL only for
 * invalid arguments, a closed loop, the wrong thread or no memory. */
GFL_EXPORT gfl_future *gfl_call(gfl_loop *loop, const char *name, gfl_value *const *args, size_t nargs);
/* The number of exports (>= 0) or an error; the i-th name (in export
 * order; valid until the registry changes), NULL when out of range. */
GFL_EXPORT int gfl_export_count(gfl_loop *loop);
GFL_EXPORT const char *gfl_export_name(gfl_loop *loop, int index);
/* 1 if async, 0 if sync, GFL_ENOENT if not exported. */
GFL_EXPORT int gfl_export_is_async(gfl_loop *loop, const char *name);

/* ------------------------------------------------------------------ */
/* ABI 1.3: pumping from a host, interrupts, attaching                 */

/* Runs non-blocking iterations (as gfl_loop_run_once(loop, 0)) until one
 * runs no callback and leaves nothing ready, or `max_seconds` have passed
 * (checked between iterations; at least one iteration runs). A round trip
 * through several hosts thus ends within one frame. Returns the callbacks
 * run, or an error; GFL_EINTR when a callback interrupted the loop
 * (gfl_loop_interrupt). */
GFL_EXPORT int gfl_loop_run_for(gfl_loop *loop, double max_seconds);
/* For a callback whose host must stop the program (Python's
 * KeyboardInterrupt, SystemExit): reports `error` (borrowed; a reference
 * is kept) to the exception handler with `message`, and makes the running
 * gfl_loop_run / run_once / run_for return GFL_EINTR after the current
 * callback (the rest of the ready callbacks stay queued, in order). */
GFL_EXPORT int gfl_loop_interrupt(gfl_loop *loop, const char *message, gfl_value *error);
/* The error of the last interrupt (a new reference; the loop forgets it),
 * or NULL when there is none. */
GFL_EXPORT gfl_value *gfl_loop_take_interrupt(gfl_loop *loop);
/* A new reference (gfl_loop_unref) to the loop at `candidate` if it names a
 * loop of this process that is alive, not closed and usable from the
 * calling thread, else NULL. Safe with
 * any pointer: how a host validates a loop pointer handed to it (a Python
 * capsule) before using it, so a stale one is an error, not a crash. */
GFL_EXPORT gfl_loop *gfl_loop_acquire(const void *candidate);
/* ABI 1.4: calls fn(arg) once, just before the run in progress
 * (gfl_loop_run, run_once or run_for, whoever called it) returns; in
 * registration order. For hosts that set up per-run state lazily, at their
 * first callback of a run (Python makes its loop the running loop), and
 * tear it down once per run instead of once per callback. GFL_ESTATE when
 * the loop is not running (the caller then tears down at once itself). */
GFL_EXPORT int gfl_loop_at_run_end(gfl_loop *loop, gfl_callback fn, void *arg);

/* ------------------------------------------------------------------ */
/* The function table (see docs/c.md, "Bindings and plugins: gfl_api") */

typedef struct gfl_api gfl_api;
GFL_EXPORT const gfl_api *gfl_api_get(void);

#include "globeflower_transport.h"
#include "globeflower_datagram.h"
#include "globeflower_process.h"
#include "globeflower_tls.h"
#include "globeflower_fs.h"
#include "globeflower_api.h"

#ifdef __cplusplus
}
#endif

#endif
