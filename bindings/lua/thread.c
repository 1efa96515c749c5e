/*
 * gfl.thread(fn, ...): fn(...) runs as the main task of a new lua_State on
 * a new OS thread, which requires globeflower and so gets a loop of its
 * own (a thread's loop: gfl_loop_current is per thread). Arguments and
 * results cross as gfl_values (docs/hosts.md; channels cross as
 * themselves, for talking while both run); fn crosses as bytecode, like
 * gfl.work's. The caller gets a future of the results, settled on its own
 * loop (call_soon_threadsafe) once the thread's state is closed.
 */
#include "gfl_lua.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct lua_thread {
    char *code;
    size_t code_len;
    char *name;
    char *path, *cpath; /* the caller's package.path / cpath */
    gfl_value *args;    /* an ARRAY */
    gfl_loop *parent;   /* one reference */
    gfl_future *done;   /* one reference; touched on the parent's thread only */
    gfl_value *result;  /* {n, r1, ..., rn} or an error value */
};

static void thread_free(struct lua_thread *t)
{
    if (t->args)
        GFL->value_unref(t->args);
    if (t->result)
        GFL->value_unref(t->result);
    free(t->code);
    free(t->name);
    free(t->path);
    free(t->cpath);
    free(t);
}

/* On the caller's loop thread. */
static void thread_finish(void *arg)
{
    struct lua_thread *t = arg;
    if (GFL->future_state_of(t->done) == GFL_FUTURE_PENDING) {
        if (GFL->value_type_of(t->result) == GFL_VALUE_ERROR)
            GFL->future_set_error(t->done, t->result);
        else
            GFL->future_set_result(t->done, t->result);
    }
    GFL->future_unref(t->done);
    GFL->loop_unref(t->parent);
    thread_free(t);
}

static gfl_value *error_of(lua_State *L, const char *fallback)
{
    gfl_value *e = lua_gettop(L) > 0 ? gfl_lua_error_value(L, -1, NULL) : NULL;
    return e ? e : GFL->value_error(GFL_EUNKNOWN, "LuaError", fallback, NULL);
}

/* Runs in the new state: require, load, convert the arguments, gfl.run. */
static gfl_value *thread_run(struct lua_thread *t, lua_State *L)
{
    lua_getglobal(L, "package");
    lua_pushstring(L, t->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, t->cpath);
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "globeflower");
    if (lua_pcall(L, 1, 1, 0) != 0)
        return error_of(L, "thread: cannot load globeflower");
    lua_getfield(L, -1, "run");
    int base = lua_gettop(L);
    if (luaL_loadbuffer(L, t->code, t->code_len, t->name) != 0)
        return error_of(L, "thread: cannot load the function");
    int64_t nargs = GFL->value_length(t->args);
    char err[256];
    if (!lua_checkstack(L, (int)nargs + LUA_MINSTACK))
        return GFL->value_error(GFL_ENOMEM, "MemoryError", "thread: too many arguments", NULL);
    for (int64_t i = 0; i < nargs; i++)
        if (!gfl_lua_push_value(L, GFL->value_array_get(t->args, (size_t)i), err, sizeof err))
            return GFL->value_error(GFL_EINVAL, "TypeError", err, NULL);
    if (lua_pcall(L, (int)nargs + 1, LUA_MULTRET, 0) != 0)
        return error_of(L, "thread: the function failed");
    int nres = lua_gettop(L) - base + 1;
    gfl_value **items = calloc((size_t)nres + 1, sizeof *items);
    if (!items)
        return GFL->value_error(GFL_ENOMEM, "MemoryError", "out of memory", NULL);
    items[0] = GFL->value_int(nres);
    int made = 1;
    gfl_value *out = NULL;
    for (int i = 0; i < nres; i++, made++) {
        items[i + 1] = gfl_lua_to_value(L, base + i, err, sizeof err);
        if (!items[i + 1]) {
            out = GFL->value_error(GFL_EINVAL, "TypeError", err, NULL);
            break;
        }
    }
    if (!out)
        out = GFL->value_array(items, (size_t)made);
    for (int i = 0; i < made; i++)
        if (items[i])
            GFL->value_unref(items[i]);
    free(items);
    return out ? out : GFL->value_error(GFL_ENOMEM, "MemoryError", "out of memory", NULL);
}

static void *thread_main(void *arg)
{
    struct lua_thread *t = arg;
    lua_State *L = luaL_newstate();
    if (L) {
        luaL_openlibs(L);
        t->result = thread_run(t, L);
        lua_close(L); /* closes the thread's loop too */
    } else {
        t->result = GFL->value_error(GFL_ENOMEM, "MemoryError", "cannot create a Lua state", NULL);
    }
    if (GFL->call_soon_threadsafe(t->parent, thread_finish, t) < 0) {
        /* The caller's loop is closed: nobody waits for the results. */
        GFL->future_unref(t->done);
        GFL->loop_unref(t->parent);
        thread_free(t);
    }
    return NULL;
}

static char *dup_field(lua_State *L, const char *field)
{
    lua_getglobal(L, "package");
    const char *s = NULL;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, field);
        s = lua_tostring(L, -1);
        lua_pop(L, 1); /* still anchored by package */
    }
    char *copy = strdup(s ? s : "");
    lua_pop(L, 1);
    return copy;
}

/* internal: thread(code, name, ...) -> future of {n, results...} */
static int l_thread(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    size_t code_len;
    const char *code = luaL_checklstring(L, 1, &code_len);
    const char *name = luaL_checkstring(L, 2);
    int nargs = lua_gettop(L) - 2;
    gfl_value **items = gfl_lua_check_args(L, 3, nargs, "thread");
    struct lua_thread *t = calloc(1, sizeof *t);
    if (t) {
        t->code = malloc(code_len ? code_len : 1);
        t->name = strdup(name);
        t->path = dup_field(L, "path");
        t->cpath = dup_field(L, "cpath");
        t->args = GFL->value_array(items, (size_t)nargs);
    }
    gfl_lua_drop_args(L, -1);
    if (!t || !t->code || !t->name || !t->path || !t->cpath || !t->args) {
        if (t)
            thread_free(t);
        return luaL_error(L, "thread: out of memory");
    }
    memcpy(t->code, code, code_len);
    t->code_len = code_len;
    t->done = GFL->future_new(rt->loop);
    if (!t->done) {
        thread_free(t);
        return gfl_lua_fail(L, "thread", GFL_ECLOSED);
    }
    t->parent = GFL->loop_ref(rt->loop);
    gfl_lua_future_push(L, rt, t->done);
    pthread_t id;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&id, &attr, thread_main, t);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        GFL->future_unref(t->done);
        GFL->loop_unref(t->parent);
        thread_free(t);
        return luaL_error(L, "thread: cannot start a thread: %s", strerror(rc));
    }
    return 1;
}

void gfl_lua_open_thread(lua_State *L, int internal)
{
    lua_pushcfunction(L, l_thread);
    lua_setfield(L, internal, "thread");
}
