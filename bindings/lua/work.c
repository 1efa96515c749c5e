/*
 * gfl.work(fn, ...): a Lua function run on a worker thread of the core's
 * pool (api->run_in_executor), in a fresh lua_State of its own, as luv's
 * work does. What crosses is what crosses between hosts (docs/hosts.md):
 * the arguments become gfl_values here, in the caller's state; the worker
 * turns them into Lua values, runs the function and turns its results back
 * into values, which the caller's future gets. The function crosses as
 * bytecode (string.dump, in the prelude), so it cannot keep upvalues.
 *
 * The worker state has the standard libraries and nothing of the caller's:
 * tables are copies, functions and other objects cannot cross.
 */
#include "gfl_lua.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct work_job {
    char *code; /* the function's bytecode */
    size_t code_len;
    char *name; /* chunk name for messages */
    gfl_value *args; /* an ARRAY */
};

static void job_free(void *arg)
{
    struct work_job *job = arg;
    if (job->args)
        GFL->value_unref(job->args);
    free(job->code);
    free(job->name);
    free(job);
}

/* ---- in the worker: values <-> its own Lua state ---- */

/* Pushes v; on failure returns 0 with a message in err. */
static int worker_push(lua_State *W, gfl_value *v, int depth, char *err, size_t errlen)
{
    if (depth > GFL_VALUE_MAX_DEPTH) {
        snprintf(err, errlen, "nesting deeper than %d levels", GFL_VALUE_MAX_DEPTH);
        return 0;
    }
    if (!lua_checkstack(W, 4)) {
        snprintf(err, errlen, "out of Lua stack");
        return 0;
    }
    switch (GFL->value_type_of(v)) {
    case GFL_VALUE_NIL:
        lua_pushnil(W);
        return 1;
    case GFL_VALUE_BOOL: {
        int b = 0;
        GFL->value_get_bool(v, &b);
        lua_pushboolean(W, b);
        return 1;
    }
    case GFL_VALUE_INT: {
        int64_t i = 0;
        GFL->value_get_int(v, &i);
#if LUA_VERSION_NUM >= 503
        lua_pushinteger(W, (lua_Integer)i);
#else
        lua_pushnumber(W, (lua_Number)i);
#endif
        return 1;
    }
    case GFL_VALUE_DOUBLE: {
        double d = 0;
        GFL->value_get_double(v, &d);
        lua_pushnumber(W, d);
        return 1;
    }
    case GFL_VALUE_BYTES:
    case GFL_VALUE_STRING: {
        const char *data = NULL;
        size_t len = 0;
        GFL->value_get_bytes(v, &data, &len);
        lua_pushlstring(W, data ? data : "", len);
        return 1;
    }
    case GFL_VALUE_ARRAY: {
        int64_t n = GFL->value_length(v);
        lua_createtable(W, n > 0 && n < INT32_MAX ? (int)n : 0, 0);
        for (int64_t i = 0; i < n; i++) {
            if (!worker_push(W, GFL->value_array_get(v, (size_t)i), depth + 1, err, errlen))
                return lua_pop(W, 1), 0;
            lua_rawseti(W, -2, (int)(i + 1));
        }
        return 1;
    }
    case GFL_VALUE_MAP: {
        int64_t n = GFL->value_length(v);
        lua_createtable(W, 0, n > 0 && n < INT32_MAX ? (int)n : 0);
        for (int64_t i = 0; i < n; i++) {
            gfl_value *key, *val;
            if (GFL->value_map_entry(v, (size_t)i, &key, &val) != 0)
                continue;
            if (!worker_push(W, key, depth + 1, err, errlen))
                return lua_pop(W, 1), 0;
            if (lua_isnil(W, -1)) {
                lua_pop(W, 1);
                continue;
            }
            if (!worker_push(W, val, depth + 1, err, errlen))
                return lua_pop(W, 2), 0;
            lua_rawset(W, -3);
        }
        return 1;
    }
    case GFL_VALUE_ERROR: {
        const char *msg = GFL->value_error_message(v);
        lua_pushstring(W, msg ? msg : "error");
        return 1;
    }
    default: {
        const gfl_host_class *cls = GFL->value_object_class(v);
        snprintf(err, errlen, "a %s object cannot cross to a worker thread (only nil, booleans, numbers, "
                              "strings and tables of them)", cls && cls->name ? cls->name : "host");
        return 0;
    }
    }
}

/* The Lua value at idx of the worker state as a new value, or NULL with a
 * message in err. */
static gfl_value *worker_value(lua_State *W, int idx, int depth, char *err, size_t errlen)
{
    idx = idx < 0 ? lua_gettop(W) + idx + 1 : idx;
    switch (lua_type(W, idx)) {
    case LUA_TNIL:
        return GFL->value_nil();
    case LUA_TBOOLEAN:
        return GFL->value_bool(lua_toboolean(W, idx));
    case LUA_TNUMBER: {
        if (gfl_isinteger(W, idx)) {
            lua_Number n = lua_tonumber(W, idx);
            if (LUA_VERSION_NUM >= 503 || fabs(n) <= 9007199254740992.0)
                return GFL->value_int((int64_t)lua_tointeger(W, idx));
        }
        return GFL->value_double(lua_tonumber(W, idx));
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(W, idx, &len);
        return GFL->value_bytes(s, len);
    }
    case LUA_TTABLE:
        break;
    default:
        snprintf(err, errlen, "a %s cannot cross back from a worker thread", luaL_typename(W, idx));
        return NULL;
    }
    if (depth >= GFL_VALUE_MAX_DEPTH) {
        snprintf(err, errlen, "tables nested deeper than %d levels (or a table that contains itself)",
                 GFL_VALUE_MAX_DEPTH);
        return NULL;
    }
    size_t n = gfl_rawlen(W, idx), count = 0;
    lua_pushnil(W);
    while (lua_next(W, idx)) {
        count++;
        lua_pop(W, 1);
    }
    int is_array = count > 0 && count == n;
    gfl_value **keys = calloc(count ? count : 1, sizeof *keys);
    gfl_value **vals = calloc(count ? count : 1, sizeof *vals);
    gfl_value *out = NULL;
    size_t k = 0;
    if (!keys || !vals) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (is_array) {
        for (; k < n; k++) {
            lua_rawgeti(W, idx, (int)(k + 1));
            vals[k] = worker_value(W, -1, depth + 1, err, errlen);
            lua_pop(W, 1);
            if (!vals[k])
                goto done;
        }
        out = GFL->value_array(vals, n);
    } else {
        lua_pushnil(W);
        while (lua_next(W, idx)) {
            keys[k] = worker_value(W, -2, depth + 1, err, errlen);
            vals[k] = keys[k] ? worker_value(W, -1, depth + 1, err, errlen) : NULL;
            lua_pop(W, 1);
            if (!keys[k] || !vals[k]) {
                if (keys[k])
                    GFL->value_unref(keys[k]);
                keys[k] = NULL;
                lua_pop(W, 1);
                goto done;
            }
            k++;
        }
        out = GFL->value_map(keys, vals, k);
    }
    if (!out)
        snprintf(err, errlen, "out of memory");
done:
    for (size_t i = 0; i < k; i++) {
        if (keys && keys[i])
            GFL->value_unref(keys[i]);
        if (vals && vals[i])
            GFL->value_unref(vals[i]);
    }
    free(keys);
    free(vals);
    return out;
}

static int worker_traceback(lua_State *W)
{
    const char *msg = lua_tostring(W, 1);
    if (!msg)
        msg = lua_pushfstring(W, "(a %s error object)", luaL_typename(W, 1));
    lua_getglobal(W, "debug");
    lua_getfield(W, -1, "traceback");
    lua_pushstring(W, msg);
    lua_pushinteger(W, 2);
    lua_call(W, 2, 1);
    return 1;
}

/* The results: an ARRAY {n, r1, ..., rn} (the prelude unpacks them), or
 * an error value. */
static gfl_value *work_run(void *arg)
{
    struct work_job *job = arg;
    char err[256] = "";
    lua_State *W = luaL_newstate();
    if (!W)
        return GFL->value_error(GFL_ENOMEM, "MemoryError", "cannot create a Lua state for the worker", NULL);
    luaL_openlibs(W);
    gfl_value *result = NULL;
    lua_pushcfunction(W, worker_traceback);
    if (luaL_loadbuffer(W, job->code, job->code_len, job->name) != 0) {
        result = GFL->value_error(GFL_EINVAL, "LuaError", lua_tostring(W, -1), NULL);
        goto out;
    }
    int64_t nargs = GFL->value_length(job->args);
    for (int64_t i = 0; i < nargs; i++) {
        if (!worker_push(W, GFL->value_array_get(job->args, (size_t)i), 0, err, sizeof err)) {
            char msg[320];
            snprintf(msg, sizeof msg, "work: argument %d: %s", (int)i + 2, err);
            result = GFL->value_error(GFL_EINVAL, "TypeError", msg, NULL);
            goto out;
        }
    }
    if (lua_pcall(W, (int)nargs, LUA_MULTRET, 1) != 0) {
        const char *text = lua_tostring(W, -1);
        const char *cut = text ? strstr(text, "\nstack traceback:") : NULL;
        if (cut)
            lua_pushlstring(W, text, (size_t)(cut - text));
        else
            lua_pushstring(W, text ? text : "error");
        result = GFL->value_error(GFL_EUNKNOWN, "LuaError", lua_tostring(W, -1), text);
        goto out;
    }
    int nres = lua_gettop(W) - 1;
    gfl_value **items = calloc((size_t)nres + 1, sizeof *items);
    if (!items) {
        result = GFL->value_error(GFL_ENOMEM, "MemoryError", "out of memory", NULL);
        goto out;
    }
    items[0] = GFL->value_int(nres);
    int made = 1;
    for (int i = 0; i < nres; i++, made++) {
        items[i + 1] = worker_value(W, i + 2, 0, err, sizeof err);
        if (!items[i + 1]) {
            char msg[320];
            snprintf(msg, sizeof msg, "work: result %d: %s", i + 1, err);
            result = GFL->value_error(GFL_EINVAL, "TypeError", msg, NULL);
            break;
        }
    }
    if (!result) {
        result = GFL->value_array(items, (size_t)made);
        if (!result)
            result = GFL->value_error(GFL_ENOMEM, "MemoryError", "out of memory", NULL);
    }
    for (int i = 0; i < made; i++)
        if (items[i])
            GFL->value_unref(items[i]);
    free(items);
out:
    lua_close(W);
    return result;
}

/* internal: work(code, name, ...) -> future: code is the function's
 * bytecode; the arguments are converted here, in the caller's state. */
static int l_work(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    size_t code_len;
    const char *code = luaL_checklstring(L, 1, &code_len);
    const char *name = luaL_checkstring(L, 2);
    int nargs = lua_gettop(L) - 2;
    gfl_value **items = gfl_lua_check_args(L, 3, nargs, "work");
    struct work_job *job = calloc(1, sizeof *job);
    if (job) {
        job->code = malloc(code_len ? code_len : 1);
        job->name = strdup(name);
        job->args = GFL->value_array(items, (size_t)nargs);
    }
    gfl_lua_drop_args(L, -1); /* the array holds its own references */
    if (!job || !job->code || !job->name || !job->args) {
        if (job)
            job_free(job);
        return luaL_error(L, "work: out of memory");
    }
    memcpy(job->code, code, code_len);
    job->code_len = code_len;
    gfl_future *f = GFL->run_in_executor(rt->loop, work_run, job, job_free);
    if (!f) {
        job_free(job); /* not taken: release never runs */
        return gfl_lua_fail(L, "work", GFL_ECLOSED);
    }
    gfl_lua_future_push(L, rt, f);
    GFL->future_unref(f); /* the object holds its own reference */
    return 1;
}

void gfl_lua_open_work(lua_State *L, int internal)
{
    lua_pushcfunction(L, l_work);
    lua_setfield(L, internal, "work");
}
