/*
 * The plugin loader: gfl_plugin_load() dlopens a shared object, runs its
 * gfl_plugin_init_<name>() with the gfl_api table, and keeps the functions
 * it registered; hosts list and call them (gfl_plugin_call/_call_async).
 *
 * Lifetime rules
 *  - Plugins are process-level, not per loop: a gfl_plugin is plain malloc
 *    memory (no loop allocation hook), and a loop is passed to each call.
 *    A plugin loads once per process: the loaded ones are on a list keyed
 *    by name (under a lock: hosts load from any thread), and a load of a
 *    name already there returns that object with one more reference. The
 *    init runs once; the finaliser runs when the last reference goes.
 *  - Registration (functions, finaliser) is allowed only while the init
 *    function runs; afterwards the function table is immutable, so lookups
 *    and calls need no lock.
 *  - gfl_plugin_unload runs the finaliser and frees the object but never
 *    dlcloses: futures, timers and done callbacks created by the plugin may
 *    still point into its code, and unmapping it would turn them into
 *    crashes. The mapping is reclaimed at process exit. We only dlclose a
 *    library whose init never ran (it was not a plugin, or the wrong one).
 *  - A failed load leaves a message in a thread-local buffer
 *    (gfl_plugin_last_error); every gfl_plugin_load call clears it first.
 */
#include "internal.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef GFL_PLUGIN_DIR
#error "GFL_PLUGIN_DIR (the installed plugin directory) must be defined by the build"
#endif

/* Plugin names end up in a C symbol and a file name: short identifiers. */
#define PLUGIN_NAME_MAX 64
/* Function names become attributes of Lua/Python module objects. */
#define FUNCTION_NAME_MAX 128

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

struct plugin_function {
    char *name;
    bool is_async;
    gfl_plugin_function sync_fn;
    gfl_plugin_async_function async_fn;
    void *ud;
};

struct gfl_plugin {
    struct gfl_plugin *next; /* on the loaded list (loaded_lock) */
    int refs;                /* loads not yet unloaded (loaded_lock) */
    char name[PLUGIN_NAME_MAX + 1];
    void *handle;      /* from dlopen; never closed (see above) */
    bool initializing; /* registration allowed */
    struct plugin_function *fns;
    size_t nfns, fns_cap;
    gfl_release_fn finalizer;
    void *finalizer_ud;
};

/* The loaded plugins. Recursive: a plugin's init may load another. */
static pthread_mutex_t loaded_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static gfl_plugin *loaded;

static gfl_plugin *find_loaded(const char *name)
{
    for (gfl_plugin *p = loaded; p; p = p->next) {
        if (strcmp(p->name, name) == 0)
            return p;
    }
    return NULL;
}

static void unlink_loaded(gfl_plugin *p)
{
    for (gfl_plugin **pp = &loaded; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            return;
        }
    }
}

/* ------------------------------------------------------------------ */
/* The thread-local error message                                      */

/* Large enough for a dlerror() text plus a few search paths. */
static _Thread_local char last_error[2 * PATH_MAX];
static _Thread_local bool has_last_error;

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    /* Truncation is fine: the start of the message carries the point. */
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    has_last_error = true;
}

const char *gfl_plugin_last_error(void)
{
    return has_last_error ? last_error : NULL;
}

/* ------------------------------------------------------------------ */
/* Names                                                               */

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

/* [A-Za-z0-9_]{1,PLUGIN_NAME_MAX}: safe to paste into a symbol and a file
 * name (no '/', no "..", no surprises in messages). */
static bool valid_plugin_name(const char *name)
{
    size_t n = 0;
    for (; name[n]; n++) {
        if (n >= PLUGIN_NAME_MAX || !is_name_char(name[n]))
            return false;
    }
    return n > 0;
}

/* An identifier ([A-Za-z_][A-Za-z0-9_]*), so every host can expose the
 * function as a module attribute. */
static bool valid_function_name(const char *name)
{
    if (!name || !name[0] || (name[0] >= '0' && name[0] <= '9'))
        return false;
    size_t n = 0;
    for (; name[n]; n++) {
        if (n >= FUNCTION_NAME_MAX || !is_name_char(name[n]))
            return false;
    }
    return true;
}

/* A printable, bounded copy of an untrusted name for error messages. */
static void printable(char *out, size_t outsz, const char *in)
{
    size_t i = 0;
    for (; in[i] && i + 4 < outsz; i++)
        out[i] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
    if (in[i]) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
}

/* ------------------------------------------------------------------ */
/* Loading                                                             */

static void plugin_free(gfl_plugin *p)
{
    for (size_t i = 0; i < p->nfns; i++)
        free(p->fns[i].name);
    free(p->fns);
    free(p);
}

/* Appends "<sep><text>" to a bounded list of the paths searched. */
static void append_tried(char *list, size_t size, const char *path)
{
    size_t len = strlen(list);
    if (len + 1 >= size)
        return;
    snprintf(list + len, size - len, "%s%s", len ? ", " : "", path);
}

/* dlopens `file`, or sets the error and returns NULL. */
static void *open_library(const char *name, const char *file)
{
    dlerror(); /* clear a stale message */
    void *handle = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        set_error("cannot load plugin %s from %s: %s", name, file,
                  why ? why : "dlopen failed");
    }
    return handle;
}

/* Tries "<dir>/<name>.so" into `file`. Returns 1 with *handle set when the
 * file exists (NULL handle: it exists but failed to load, error set), 0 when
 * it does not. */
static int try_dir(const char *name, const char *dir, size_t dirlen, char *file,
                   char *tried, size_t tried_size, void **handle)
{
    int n = snprintf(file, PATH_MAX, "%.*s/%s.so", (int)dirlen, dir, name);
    if (n < 0 || n >= PATH_MAX)
        return 0; /* cannot name a file there: nothing to find */
    append_tried(tried, tried_size, file);
    struct stat st;
    if (stat(file, &st) != 0)
        return 0;
    /* The first match wins even if it fails to load: silently taking a
     * later one would hide a broken install. */
    *handle = open_library(name, file);
    return 1;
}

/* The search for path == NULL: every directory of $GFL_PLUGIN_PATH, then
 * GFL_PLUGIN_DIR; `file` receives the path found. secure_getenv: a setuid
 * host ignores the variable. */
static void *search_library(const char *name, char *file)
{
    char tried[PATH_MAX] = "";
    void *handle = NULL;
    const char *env = secure_getenv("GFL_PLUGIN_PATH");
    for (const char *p = env; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        /* Empty entries are skipped, not taken as ".": loading code from
         * the working directory must be asked for explicitly. */
        if (len > 0 && try_dir(name, p, len, file, tried, sizeof tried, &handle))
            return handle;
        p += len;
        if (*p == ':')
            p++;
    }
    if (try_dir(name, GFL_PLUGIN_DIR, strlen(GFL_PLUGIN_DIR), file, tried,
                sizeof tried, &handle))
        return handle;
    set_error("plugin %s not found: no %s.so in $GFL_PLUGIN_PATH or %s "
              "(tried %s)", name, name, GFL_PLUGIN_DIR, tried);
    return NULL;
}

static gfl_plugin *load_new(const char *name, const char *path);

gfl_plugin *gfl_plugin_load(const char *name, const char *path)
{
    has_last_error = false;
    last_error[0] = '\0';

    if (!name) {
        set_error("invalid plugin name: NULL");
        return NULL;
    }
    if (!valid_plugin_name(name)) {
        char shown[PLUGIN_NAME_MAX + 8];
        printable(shown, sizeof shown, name);
        set_error("invalid plugin name \"%s\": use 1 to %d characters from "
                  "A-Z, a-z, 0-9 and _", shown, PLUGIN_NAME_MAX);
        return NULL;
    }

    pthread_mutex_lock(&loaded_lock);
    gfl_plugin *p = find_loaded(name);
    if (p && p->initializing) {
        set_error("cannot load plugin %s from its own init function", name);
        p = NULL;
    } else if (p) {
        p->refs++;
    } else {
        p = load_new(name, path);
    }
    pthread_mutex_unlock(&loaded_lock);
    return p;
}

/* Maps, initialises and lists a plugin not loaded yet (loaded_lock held). */
static gfl_plugin *load_new(const char *name, const char *path)
{
    char file[PATH_MAX];
    void *handle;
    if (path) {
        /* A bare file name would make dlopen search the library path; a
         * path given here always means a file. */
        int n = snprintf(file, sizeof file, "%s%s", strchr(path, '/') ? "" : "./", path);
        if (!path[0] || n < 0 || (size_t)n >= sizeof file) {
            set_error("cannot load plugin %s: %s path", name, path[0] ? "too long a" : "empty");
            return NULL;
        }
        handle = open_library(name, file);
    } else {
        handle = search_library(name, file);
    }
    if (!handle)
        return NULL;

    char symbol[sizeof GFL_PLUGIN_INIT_PREFIX + PLUGIN_NAME_MAX];
    snprintf(symbol, sizeof symbol, "%s%s", GFL_PLUGIN_INIT_PREFIX, name);
    dlerror();
    void *sym = dlsym(handle, symbol);
    if (!sym) {
        const char *why = dlerror();
        set_error("cannot load plugin %s: %s does not export %s (%s)", name,
                  file, symbol, why ? why : "the symbol is NULL");
        dlclose(handle); /* none of its code ran as a plugin */
        return NULL;
    }
    /* POSIX makes this conversion valid; memcpy keeps ISO C compilers quiet
     * about converting an object pointer to a function pointer. */
    gfl_plugin_init_fn init;
    memcpy(&init, &sym, sizeof init);

    gfl_plugin *p = calloc(1, sizeof *p);
    if (!p) {
        set_error("cannot load plugin %s: out of memory", name);
        return NULL;
    }
    memcpy(p->name, name, strlen(name) + 1);
    p->handle = handle;
    p->refs = 1;
    p->initializing = true;
    /* Listed during init, so a recursive load of the same name is refused. */
    p->next = loaded;
    loaded = p;
    int rc = init(gfl_api_get(), p);
    p->initializing = false;
    unlink_loaded(p);
    if (rc != 0) {
        /* No finaliser: like a failed constructor, a refusing init cleans up
         * after itself. What it registered is dropped. */
        if (rc < 0)
            set_error("plugin %s refused to load: %s", name, gfl_strerror(rc));
        else
            set_error("plugin %s refused to load: its init returned %d", name, rc);
        plugin_free(p);
        return NULL;
    }
    p->next = loaded;
    loaded = p;
    return p;
}

int gfl_plugin_unload(gfl_plugin *plugin)
{
    if (!plugin)
        return GFL_EINVAL;
    pthread_mutex_lock(&loaded_lock);
    /* Found by address, never dereferenced before: a handle unloaded
     * already is an error, not a use-after-free. Unloading itself from its
     * own init would free the object the loader is still filling in. */
    gfl_plugin *p = loaded;
    while (p && p != plugin)
        p = p->next;
    if (!p || p->initializing) {
        pthread_mutex_unlock(&loaded_lock);
        return p ? GFL_ESTATE : GFL_EINVAL;
    }
    bool last = --plugin->refs == 0;
    if (last)
        unlink_loaded(plugin);
    pthread_mutex_unlock(&loaded_lock);
    if (!last)
        return GFL_OK;
    if (plugin->finalizer)
        plugin->finalizer(plugin->finalizer_ud);
    plugin_free(plugin); /* no dlclose: see the top of this file */
    return GFL_OK;
}

/* ------------------------------------------------------------------ */
/* Registration (from the init function only)                          */

static struct plugin_function *find_function(const gfl_plugin *p, const char *name)
{
    for (size_t i = 0; i < p->nfns; i++) {
        if (strcmp(p->fns[i].name, name) == 0)
            return &p->fns[i];
    }
    return NULL;
}

static int add_function(gfl_plugin *self, const char *name, bool is_async,
                        gfl_plugin_function sync_fn,
                        gfl_plugin_async_function async_fn, void *ud)
{
    if (!self || (!sync_fn && !async_fn) || !valid_function_name(name))
        return GFL_EINVAL;
    if (!self->initializing)
        return GFL_ESTATE;
    if (find_function(self, name))
        return GFL_EEXIST;
    if (self->nfns == self->fns_cap) {
        /* gfl_plugin_function_count returns an int. */
        if (self->fns_cap >= INT_MAX / 2)
            return GFL_ENOMEM;
        size_t cap = self->fns_cap ? self->fns_cap * 2 : 8;
        struct plugin_function *fns = realloc(self->fns, cap * sizeof *fns);
        if (!fns)
            return GFL_ENOMEM;
        self->fns = fns;
        self->fns_cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return GFL_ENOMEM;
    self->fns[self->nfns++] = (struct plugin_function){
        .name = copy,
        .is_async = is_async,
        .sync_fn = sync_fn,
        .async_fn = async_fn,
        .ud = ud,
    };
    return GFL_OK;
}

int gfl_plugin_add_function(gfl_plugin *self, const char *name, gfl_plugin_function fn, void *ud)
{
    return add_function(self, name, false, fn, NULL, ud);
}

int gfl_plugin_add_async_function(gfl_plugin *self, const char *name, gfl_plugin_async_function fn, void *ud)
{
    return add_function(self, name, true, NULL, fn, ud);
}

/* Setting it again replaces it; fn NULL removes it. */
int gfl_plugin_set_finalizer(gfl_plugin *self, gfl_release_fn fn, void *ud)
{
    if (!self)
        return GFL_EINVAL;
    if (!self->initializing)
        return GFL_ESTATE;
    self->finalizer = fn;
    self->finalizer_ud = fn ? ud : NULL;
    return GFL_OK;
}

/* ------------------------------------------------------------------ */
/* Introspection                                                       */

const char *gfl_plugin_name(const gfl_plugin *plugin)
{
    return plugin ? plugin->name : NULL;
}

int gfl_plugin_function_count(const gfl_plugin *plugin)
{
    return plugin ? (int)plugin->nfns : GFL_EINVAL;
}

const char *gfl_plugin_function_name(const gfl_plugin *plugin, int index)
{
    if (!plugin || index < 0 || (size_t)index >= plugin->nfns)
        return NULL;
    return plugin->fns[index].name;
}

int gfl_plugin_function_is_async(const gfl_plugin *plugin, const char *name)
{
    if (!plugin || !name)
        return GFL_EINVAL;
    const struct plugin_function *f = find_function(plugin, name);
    if (!f)
        return GFL_ENOENT;
    return f->is_async ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* Calls                                                               */

/* The error value for a failed call: "<plugin>.<function>: <what>". NULL
 * only when out of memory. */
static gfl_value *call_error(int code, const char *type, const gfl_plugin *p,
                             const char *fname, const char *what)
{
    char msg[PLUGIN_NAME_MAX + FUNCTION_NAME_MAX + 160];
    char shown[FUNCTION_NAME_MAX + 8];
    printable(shown, sizeof shown, fname);
    snprintf(msg, sizeof msg, "%s.%s: %s", p->name, shown, what);
    return gfl_value_error(code, type, msg, NULL);
}

/* Checks what every call needs. GFL_OK, or a code with nothing allocated. */
static int check_call(const gfl_plugin *plugin, const char *name, gfl_loop *loop,
                      gfl_value *const *args, size_t nargs)
{
    if (!plugin || !name || (!args && nargs > 0))
        return GFL_EINVAL;
    for (size_t i = 0; i < nargs; i++) {
        if (!args[i])
            return GFL_EINVAL;
    }
    /* Plugin functions schedule work on the loop: only its thread may call. */
    return gfl__check_loop(loop);
}

/* Runs a sync function and normalises what it did to the contract:
 * 0 with a value (nil if it set none), or a negative code with an error
 * value (made here when the function left none, or left a non-error).
 * *result is NULL only when out of memory. */
static int run_sync(const gfl_plugin *p, const struct plugin_function *f,
                    gfl_loop *loop, gfl_value *const *args, size_t nargs,
                    gfl_value **result)
{
    /* Copied first: the function may unload its own plugin. */
    gfl_plugin_function fn = f->sync_fn;
    void *ud = f->ud;
    char pname[PLUGIN_NAME_MAX + 1], fname[FUNCTION_NAME_MAX + 1];
    memcpy(pname, p->name, sizeof pname);
    snprintf(fname, sizeof fname, "%s", f->name);

    gfl_value *out = NULL;
    int rc = fn(ud, loop, args, nargs, &out);
    if (rc == 0) {
        /* A function that "returns nothing" returns nil, like a Python
         * function without a return statement. */
        *result = out ? out : gfl_value_nil();
        return *result ? GFL_OK : GFL_ENOMEM;
    }
    if (rc > 0) {
        gfl_value_unref(out);
        char msg[PLUGIN_NAME_MAX + FUNCTION_NAME_MAX + 80];
        snprintf(msg, sizeof msg, "%s.%s: returned an invalid status %d", pname, fname, rc);
        *result = gfl_value_error(GFL_EUNKNOWN, NULL, msg, NULL);
        return GFL_EUNKNOWN;
    }
    if (out && gfl_value_type_of(out) == GFL_VALUE_ERROR) {
        *result = out;
        return rc;
    }
    /* A bare code: make the error value the contract promises. */
    gfl_value_unref(out);
    char msg[PLUGIN_NAME_MAX + FUNCTION_NAME_MAX + 80];
    snprintf(msg, sizeof msg, "%s.%s: %s", pname, fname, gfl_strerror(rc));
    *result = gfl_value_error(rc, NULL, msg, NULL);
    return rc;
}

/*
 * A sync function's result in *result; on failure the code is returned and
 * *result is an error value describing it (NULL after invalid arguments or
 * when out of memory). Calling an async function this way is GFL_ESTATE:
 * blocking until its future resolves would deadlock a loop that must run to
 * resolve it, so hosts use gfl_plugin_call_async, which takes both kinds.
 */
int gfl_plugin_call(gfl_plugin *plugin, const char *name, gfl_loop *loop,
                    gfl_value *const *args, size_t nargs, gfl_value **result)
{
    if (!result)
        return GFL_EINVAL;
    *result = NULL;
    int rc = check_call(plugin, name, loop, args, nargs);
    if (rc < 0)
        return rc;
    const struct plugin_function *f = find_function(plugin, name);
    if (!f) {
        *result = call_error(GFL_ENOENT, "AttributeError", plugin, name, "no such function");
        return GFL_ENOENT;
    }
    if (f->is_async) {
        *result = call_error(GFL_ESTATE, NULL, plugin, name,
                             "is asynchronous: call it with gfl_plugin_call_async");
        return GFL_ESTATE;
    }
    return run_sync(plugin, f, loop, args, nargs, result);
}

/*
 * A new future reference for either kind of function: an async function's
 * own future, or for a sync one a done future with its result or error.
 * Failures of the call itself (no such function, an async function that
 * returned no future) are also reported as failed futures, so a host has
 * one path for errors. NULL only after invalid arguments (NULL plugin,
 * name or argument, closed loop, wrong thread) or when out of memory.
 */
gfl_future *gfl_plugin_call_async(gfl_plugin *plugin, const char *name, gfl_loop *loop,
                                  gfl_value *const *args, size_t nargs)
{
    if (check_call(plugin, name, loop, args, nargs) < 0)
        return NULL;
    const struct plugin_function *f = find_function(plugin, name);
    if (!f)
        return gfl__future_settled(loop, call_error(GFL_ENOENT, "AttributeError", plugin, name, "no such function"), true);
    if (!f->is_async) {
        gfl_value *out = NULL;
        int rc = run_sync(plugin, f, loop, args, nargs, &out);
        return gfl__future_settled(loop, out, rc < 0);
    }

    gfl_plugin_async_function fn = f->async_fn;
    void *ud = f->ud;
    /* Kept for the message: the function may unload its own plugin. */
    char pname[PLUGIN_NAME_MAX + 1], fname[FUNCTION_NAME_MAX + 1];
    memcpy(pname, plugin->name, sizeof pname);
    snprintf(fname, sizeof fname, "%s", f->name);

    gfl_future *fut = fn(ud, loop, args, nargs);
    if (fut)
        return fut;
    char msg[PLUGIN_NAME_MAX + FUNCTION_NAME_MAX + 80];
    snprintf(msg, sizeof msg, "%s.%s: returned no future", pname, fname);
    return gfl__future_settled(loop, gfl_value_error(GFL_EUNKNOWN, NULL, msg, NULL), true);
}
