/*
 * The example plugin: a small, complete globeflower plugin to copy from.
 *
 * A plugin is a shared object built only against <globeflower_plugin.h>
 * and never linked to libglobeflower. It reaches the core solely through
 * the gfl_api table handed to its init function, so the same .so works in
 * a C host that links the core statically, in the Lua module and in the
 * Python package.
 *
 * Functions (arguments and results are gfl_values):
 *   add(a, b)                 sync   integers -> their sum
 *   concat(...)               sync   strings/bytes -> them joined (a string
 *                                    if every argument is one, else bytes)
 *   sleep_then_echo(delay, v) async  a future resolved with v after delay s
 *   fail([message])           async  a future failed with an error value
 *
 * Build:  cc -shared -fPIC -I<globeflower include dir> example.c -o example.so
 * Load:   gfl_plugin_load("example", NULL)  (finds example.so on
 *         $GFL_PLUGIN_PATH or in the installed plugin directory)
 */
#include <globeflower_plugin.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The core's function table, kept for the functions below. It outlives the
 * plugin: the core never unmaps a plugin and the table is static data. */
static const gfl_api *api;

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static const char *type_name(const gfl_value *v)
{
    switch (api->value_type_of(v)) {
    case GFL_VALUE_NIL: return "nil";
    case GFL_VALUE_BOOL: return "bool";
    case GFL_VALUE_INT: return "int";
    case GFL_VALUE_DOUBLE: return "double";
    case GFL_VALUE_BYTES: return "bytes";
    case GFL_VALUE_STRING: return "string";
    case GFL_VALUE_ERROR: return "error";
    case GFL_VALUE_OBJECT: return "object";
    default: return "?";
    }
}

/* Reports a failure from a sync function: *result gets an error value and
 * the code is returned. Hosts raise it as `type` (e.g. a Python TypeError).
 * If even the error value cannot be made, the core makes one from `code`. */
static int set_error(gfl_value **result, int code, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int set_error(gfl_value **result, int code, const char *type, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    *result = api->value_error(code, type, msg, NULL);
    return code;
}

/* ------------------------------------------------------------------ */
/* add(a, b): a synchronous function                                   */

static int example_add(void *ud, gfl_loop *loop, gfl_value *const *args,
                       size_t nargs, gfl_value **result)
{
    (void)ud;
    (void)loop;
    if (nargs != 2)
        return set_error(result, GFL_EINVAL, "TypeError",
                     "add() takes exactly 2 arguments (%zu given)", nargs);

    int64_t a, b, sum;
    /* value_get_int fails with GFL_ETYPE for anything but an int. */
    if (api->value_get_int(args[0], &a) < 0 || api->value_get_int(args[1], &b) < 0)
        return set_error(result, GFL_ETYPE, "TypeError",
                     "add() takes two ints, not %s and %s",
                     type_name(args[0]), type_name(args[1]));
    if (__builtin_add_overflow(a, b, &sum))
        return set_error(result, GFL_ERANGE, "OverflowError",
                     "add(%" PRId64 ", %" PRId64 ") does not fit in 64 bits", a, b);

    *result = api->value_int(sum);
    return *result ? GFL_OK : GFL_ENOMEM;
}

/* ------------------------------------------------------------------ */
/* concat(...): joins strings and bytes                                */

static int example_concat(void *ud, gfl_loop *loop, gfl_value *const *args,
                          size_t nargs, gfl_value **result)
{
    (void)ud;
    (void)loop;
    size_t total = 0;
    int all_strings = 1;
    for (size_t i = 0; i < nargs; i++) {
        const char *data;
        size_t len;
        if (api->value_get_bytes(args[i], &data, &len) < 0)
            return set_error(result, GFL_ETYPE, "TypeError",
                         "concat() argument %zu must be a string or bytes, not %s",
                         i + 1, type_name(args[i]));
        if (len > SIZE_MAX - total)
            return set_error(result, GFL_ERANGE, "OverflowError", "concat() result too long");
        total += len;
        if (api->value_type_of(args[i]) != GFL_VALUE_STRING)
            all_strings = 0;
    }

    char *buf = malloc(total ? total : 1);
    if (!buf)
        return GFL_ENOMEM; /* the core turns a bare code into an error value */
    size_t off = 0;
    for (size_t i = 0; i < nargs; i++) {
        const char *data;
        size_t len;
        api->value_get_bytes(args[i], &data, &len);
        memcpy(buf + off, data, len);
        off += len;
    }
    /* Values copy their data, so the buffer is ours to free. */
    *result = all_strings ? api->value_string(buf, total) : api->value_bytes(buf, total);
    free(buf);
    return *result ? GFL_OK : GFL_ENOMEM;
}

/* ------------------------------------------------------------------ */
/* sleep_then_echo(delay, value): an asynchronous function             */

/* What the timer needs. It owns one reference to each: the caller's
 * reference to the future is separate, so the caller may drop its future
 * (or cancel it) before the timer fires. */
struct echo {
    gfl_future *future;
    gfl_value *value;
};

/* Frees what the timer held; also called by the core if it never fires. */
static void echo_release(void *arg)
{
    struct echo *e = arg;
    api->value_unref(e->value);
    api->future_unref(e->future);
    free(e);
}

static void echo_fire(void *arg)
{
    struct echo *e = arg;
    /* The awaiting side may have cancelled the future meanwhile: then there
     * is nobody to tell, and setting a result would fail with GFL_ESTATE. */
    if (api->future_state_of(e->future) == GFL_FUTURE_PENDING)
        api->future_set_result(e->future, e->value); /* takes its own ref */
    echo_release(e);
}

/* A future that fails at once: how an async function reports bad input
 * (returning NULL also works, but says less). */
static gfl_future *failed_future(gfl_loop *loop, int code, const char *type, const char *message)
{
    gfl_future *f = api->future_new(loop);
    if (!f)
        return NULL;
    gfl_value *err = api->value_error(code, type, message, NULL);
    if (!err || api->future_set_error(f, err) < 0) {
        api->value_unref(err);
        api->future_unref(f);
        return NULL;
    }
    api->value_unref(err); /* the future holds its own reference */
    return f;
}

static gfl_future *example_sleep_then_echo(void *ud, gfl_loop *loop,
                                           gfl_value *const *args, size_t nargs)
{
    (void)ud;
    double delay;
    if (nargs != 2 || api->value_get_double(args[0], &delay) < 0 || !(delay >= 0))
        return failed_future(loop, GFL_ETYPE, "TypeError",
                             "sleep_then_echo() takes a delay in seconds (>= 0) and a value");

    struct echo *e = malloc(sizeof *e);
    if (!e)
        return NULL;
    e->future = api->future_new(loop);
    if (!e->future) {
        free(e);
        return NULL;
    }
    /* Arguments are borrowed for the call: keep our own reference. */
    e->value = api->value_ref(args[1]);

    if (api->call_at_ex(loop, api->loop_time(loop) + delay, echo_fire, e, echo_release) < 0) {
        api->value_unref(e->value);
        api->future_unref(e->future);
        free(e);
        return NULL;
    }
    /* One reference for the timer (in e), a new one for the caller. If the
     * timer never fires (loop closed), echo_release frees e. */
    return api->future_ref(e->future);
}

/* ------------------------------------------------------------------ */
/* fail([message]): an async function whose future fails               */

static gfl_future *example_fail(void *ud, gfl_loop *loop, gfl_value *const *args, size_t nargs)
{
    (void)ud;
    char message[256] = "fail() failed, as asked";
    if (nargs > 0) {
        const char *data;
        size_t len;
        if (nargs > 1 || api->value_get_bytes(args[0], &data, &len) < 0)
            return failed_future(loop, GFL_ETYPE, "TypeError",
                                 "fail() takes an optional message string");
        /* The value's data is NUL-terminated; bound it to our buffer. */
        snprintf(message, sizeof message, "%.*s", (int)(len < 255 ? len : 255), data);
    }
    return failed_future(loop, GFL_EIO, "ExampleError", message);
}

/* ------------------------------------------------------------------ */
/* The entry point                                                     */

/* Default visibility: builds often use -fvisibility=hidden, and the loader
 * finds this function with dlsym. The name must be gfl_plugin_init_ followed
 * by the plugin's name (the file's name without .so). */
__attribute__((visibility("default")))
int gfl_plugin_init_example(const gfl_api *core_api, gfl_plugin *self);

int gfl_plugin_init_example(const gfl_api *core_api, gfl_plugin *self)
{
    /* Refuse (GFL_EVERSION) a core of another ABI major or one whose table
     * lacks a field we use: name the last field used, in table order. */
    GFL_PLUGIN_CHECK_API(core_api, plugin_add_async_function);
    GFL_PLUGIN_CHECK_API(core_api, call_at_ex);
    api = core_api;

    int rc;
    if ((rc = api->plugin_add_function(self, "add", example_add, NULL)) < 0 ||
        (rc = api->plugin_add_function(self, "concat", example_concat, NULL)) < 0 ||
        (rc = api->plugin_add_async_function(self, "sleep_then_echo", example_sleep_then_echo, NULL)) < 0 ||
        (rc = api->plugin_add_async_function(self, "fail", example_fail, NULL)) < 0)
        return rc; /* the core drops what was registered */

    /* A plugin holding process-wide resources (a library handle, a cache)
     * would register api->plugin_set_finalizer(self, release, ud) here; it
     * runs at gfl_plugin_unload. This one has nothing to release. */
    return GFL_OK;
}
