/*
 * Lua values <-> gfl values for everything that crosses to other hosts
 * (docs/hosts.md, "Data"): deep copies of tables as arrays and maps.
 *
 * Lua -> gfl: a table whose keys are exactly 1..n (n >= 1), or one marked
 * with gfl.array_mt, is an ARRAY; any other table without a metatable a MAP
 * (keys converted like values); a table with another metatable, a
 * function, a coroutine or a userdata a "lua" OBJECT; a foreign proxy or an
 * error object made from a value that very value. Strings are STRING when
 * valid UTF-8, else BYTES; on 5.1/LuaJIT an integral number within +-2^53
 * is an INT.
 *
 * Failures (a table that contains itself, nesting deeper than
 * GFL_VALUE_MAX_DEPTH, a map key Lua cannot hold) unwind without raising,
 * dropping every value built so far and restoring the stack, so bad input
 * leaks nothing; the message names where it happened (".a[2]").
 */
#include "gfl_lua.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct conv {
    lua_State *L;
    gfl_lua_rt *rt; /* set when the value is a table / container */
    int visiting; /* stack index of the set of tables being converted */
    int array_mt; /* stack index of gfl.array_mt */
    char *err;
    size_t errlen;
    char path[96]; /* where it failed, built while unwinding */
    int path_cut;  /* the path was too long: it starts with "..." */
};

static void fail(struct conv *c, const char *message)
{
    if (!c->err[0])
        snprintf(c->err, c->errlen, "%s", message);
}

/* Prepends one step ("[3]", ".name") to the failure's path. */
static void prepend_step(struct conv *c, const char *step)
{
    size_t have = strlen(c->path), add = strlen(step);
    if (c->path_cut || have + add >= sizeof c->path) {
        c->path_cut = 1;
        return;
    }
    memmove(c->path + add, c->path, have + 1);
    memcpy(c->path, step, add);
}

/* The key at `idx` as a path step. */
static void prepend_key(struct conv *c, int idx)
{
    lua_State *L = c->L;
    char step[48];
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        int plain = len > 0 && len <= 32;
        for (size_t i = 0; plain && i < len; i++)
            plain = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' ||
                    (i > 0 && s[i] >= '0' && s[i] <= '9');
        if (plain)
            snprintf(step, sizeof step, ".%s", s);
        else
            snprintf(step, sizeof step, "[\"%.24s%s\"]", s, len > 24 ? "..." : "");
    } else if (lua_type(L, idx) == LUA_TNUMBER) {
        snprintf(step, sizeof step, "[%.14g]", (double)lua_tonumber(L, idx));
    } else {
        snprintf(step, sizeof step, "[<%s>]", luaL_typename(L, idx));
    }
    prepend_step(c, step);
}

static void prepend_index(struct conv *c, size_t i)
{
    char step[32];
    snprintf(step, sizeof step, "[%zu]", i);
    prepend_step(c, step);
}

/* The final message: "<what failed> (at <path>)". */
static void finish_message(struct conv *c)
{
    if (!c->path[0])
        return;
    size_t n = strlen(c->err);
    if (n + 8 < c->errlen)
        snprintf(c->err + n, c->errlen - n, " (at %s%s)", c->path_cut ? "..." : "", c->path);
}

/* ---- Lua -> gfl ---- */

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t more;
        unsigned long cp;
        if (b >= 0xC2 && b <= 0xDF)
            more = 1, cp = b & 0x1F;
        else if (b >= 0xE0 && b <= 0xEF)
            more = 2, cp = b & 0x0F;
        else if (b >= 0xF0 && b <= 0xF4)
            more = 3, cp = b & 0x07;
        else
            return 0;
        if (n - i - 1 < more)
            return 0;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((more == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (more == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += more + 1;
    }
    return 1;
}

static gfl_value *number_value(lua_State *L, int idx)
{
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx))
        return GFL->value_int((int64_t)lua_tointeger(L, idx));
    return GFL->value_double((double)lua_tonumber(L, idx));
#else
    /* One number type: integral values within +-2^53 (exact in a double)
     * are integers for the other hosts. */
    double d = (double)lua_tonumber(L, idx);
    if (d == floor(d) && fabs(d) <= 9007199254740992.0)
        return GFL->value_int((int64_t)d);
    return GFL->value_double(d);
#endif
}

static gfl_value *to_value(struct conv *c, int idx, int level);

/* The error object made from a value at `idx` (a table), or NULL. */
static gfl_value *error_made_from_value(struct conv *c, int idx)
{
    lua_State *L = c->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->rt->ref_errvalues);
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    gfl_value **p = lua_touserdata(L, -1);
    lua_pop(L, 2);
    return p ? *p : NULL;
}

static void unref_all(gfl_value **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        GFL->value_unref(items[i]);
}

/* An array of the values t[1..n] (nil where there is none). */
static gfl_value *array_value(struct conv *c, int t, size_t n, int level)
{
    lua_State *L = c->L;
    gfl_value **items = n ? malloc(n * sizeof *items) : NULL;
    if (n && !items)
        return fail(c, "out of memory"), NULL;
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, t, (lua_Integer)(i + 1));
        items[i] = to_value(c, -1, level);
        lua_pop(L, 1);
        if (!items[i]) {
            prepend_index(c, i + 1);
            unref_all(items, i);
            free(items);
            return NULL;
        }
    }
    gfl_value *v = GFL->value_array(items, n);
    unref_all(items, n);
    free(items);
    if (!v)
        fail(c, "out of memory");
    return v;
}

static gfl_value *map_value(struct conv *c, int t, size_t n, int level)
{
    lua_State *L = c->L;
    gfl_value **keys = n ? malloc(n * sizeof *keys) : NULL;
    gfl_value **values = n ? malloc(n * sizeof *values) : NULL;
    if (n && (!keys || !values)) {
        free(keys);
        free(values);
        return fail(c, "out of memory"), NULL;
    }
    size_t k = 0;
    lua_pushnil(L);
    while (k < n && lua_next(L, t) != 0) {
        keys[k] = to_value(c, -2, level);
        values[k] = keys[k] ? to_value(c, -1, level) : NULL;
        if (!values[k]) {
            prepend_key(c, -2);
            lua_pop(L, 2);
            if (keys[k])
                GFL->value_unref(keys[k]);
            unref_all(keys, k);
            unref_all(values, k);
            free(keys);
            free(values);
            return NULL;
        }
        k++;
        lua_pop(L, 1);
    }
    if (k == n)
        lua_pop(L, 1); /* the key lua_next left: the table has more (cannot) */
    gfl_value *v = GFL->value_map(keys, values, k);
    unref_all(keys, k);
    unref_all(values, k);
    free(keys);
    free(values);
    if (!v)
        fail(c, "out of memory");
    return v;
}

/* A table marked as an array: items 1..n, n the largest integer key (or
 * the length it arrived with, when it held trailing nils). */
static gfl_value *marked_array_value(struct conv *c, int t, int level)
{
    lua_State *L = c->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->rt->ref_arraylen);
    lua_pushvalue(L, t);
    lua_rawget(L, -2);
    double n = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : 0;
    lua_pop(L, 2);
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        double k = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : 0;
        if (!(k >= 1 && k == floor(k) && k <= 1e9)) {
            prepend_key(c, -1);
            lua_pop(L, 1);
            fail(c, "an array (gfl.array_mt) may only have the keys 1..n");
            return NULL;
        }
        if (k > n)
            n = k;
    }
    return array_value(c, t, (size_t)n, level);
}

static gfl_value *table_value(struct conv *c, int t, int level)
{
    lua_State *L = c->L;
    int marked = 0;
    if (lua_getmetatable(L, t)) {
        marked = lua_rawequal(L, -1, c->array_mt);
        lua_pop(L, 1);
        if (!marked) {
            /* Behaviour of its own: an object, unless it is an error
             * object made from a value (then that very value). */
            gfl_value *made = error_made_from_value(c, t);
            gfl_value *v = made ? GFL->value_ref(made) : gfl_lua_object_value(L, t);
            if (!v)
                fail(c, "out of memory");
            return v;
        }
    }
    if (level >= GFL_VALUE_MAX_DEPTH) {
        char msg[96];
        snprintf(msg, sizeof msg, "cannot convert tables nested deeper than %d levels", GFL_VALUE_MAX_DEPTH);
        fail(c, msg);
        return NULL;
    }
    if (!lua_checkstack(L, 8)) {
        fail(c, "out of Lua stack space");
        return NULL;
    }
    lua_pushvalue(L, t);
    lua_rawget(L, c->visiting);
    int seen = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (seen) {
        fail(c, "cannot convert a table that contains itself");
        return NULL;
    }
    lua_pushvalue(L, t);
    lua_pushboolean(L, 1);
    lua_rawset(L, c->visiting);

    gfl_value *v;
    if (marked) {
        v = marked_array_value(c, t, level + 1);
    } else {
        /* Keys exactly 1..n: an array; anything else: a map. */
        size_t count = 0;
        double max = 0;
        int all_index = 1;
        lua_pushnil(L);
        while (lua_next(L, t) != 0) {
            lua_pop(L, 1);
            count++;
            if (all_index) {
                double k = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : 0;
                if (k >= 1 && k == floor(k))
                    max = k > max ? k : max;
                else
                    all_index = 0;
            }
        }
        if (count > 0 && all_index && max == (double)count)
            v = array_value(c, t, count, level + 1);
        else
            v = map_value(c, t, count, level + 1);
    }

    lua_pushvalue(L, t);
    lua_pushnil(L);
    lua_rawset(L, c->visiting);
    return v;
}

static gfl_value *to_value(struct conv *c, int idx, int level)
{
    lua_State *L = c->L;
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    gfl_value *v;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        v = GFL->value_nil();
        break;
    case LUA_TBOOLEAN:
        v = GFL->value_bool(lua_toboolean(L, idx));
        break;
    case LUA_TNUMBER:
        v = number_value(L, idx);
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        v = utf8_valid((const unsigned char *)s, len) ? GFL->value_string(s, len) : GFL->value_bytes(s, len);
        break;
    }
    case LUA_TTABLE:
        return table_value(c, idx, level);
    case LUA_TUSERDATA: {
        gfl_value *foreign = gfl_lua_to_foreign(L, idx);
        struct gfl_lua_chan *chan = foreign ? NULL : gfl_lua_to_channel(L, idx);
        if (chan) /* a channel crosses as itself (channel.c) */
            v = GFL->value_object(&gfl_lua_channel_class, chan);
        else
            v = foreign ? GFL->value_ref(foreign) : gfl_lua_object_value(L, idx);
        break;
    }
    default: /* functions, coroutines, light userdata */
        v = gfl_lua_object_value(L, idx);
        break;
    }
    if (!v)
        fail(c, "out of memory");
    return v;
}

static void conv_init(struct conv *c, lua_State *L, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->L = L;
    c->err = err;
    c->errlen = errlen;
    err[0] = '\0';
}

gfl_value *gfl_lua_to_value(lua_State *L, int idx, char *err, size_t errlen)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    struct conv c;
    conv_init(&c, L, err, errlen);
    if (lua_type(L, idx) != LUA_TTABLE)
        return to_value(&c, idx, 0); /* no table: no runtime lookup */
    c.rt = gfl_lua_rt_get(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c.rt->ref_array_mt);
    c.array_mt = lua_gettop(L);
    lua_newtable(L);
    c.visiting = lua_gettop(L);
    gfl_value *v = to_value(&c, idx, 0);
    lua_pop(L, 2);
    if (!v)
        finish_message(&c);
    return v;
}

gfl_value *gfl_lua_check_value(lua_State *L, int idx, const char *what)
{
    char err[256];
    gfl_value *v = gfl_lua_to_value(L, idx, err, sizeof err);
    if (!v)
        gfl_lua_raise(L, "%s: %s", what, err);
    return v;
}

/* The arguments of a call: a userdata owning the converted values. */
struct args {
    int n;
    gfl_value *items[];
};

#define ARGS_MT "globeflower.args"

static void args_drop(struct args *a)
{
    for (int i = 0; i < a->n; i++)
        GFL->value_unref(a->items[i]);
    a->n = 0;
}

static int args_gc(lua_State *L)
{
    args_drop(lua_touserdata(L, 1));
    return 0;
}

gfl_value **gfl_lua_check_args(lua_State *L, int first, int n, const char *what)
{
    struct args *a = gfl_newuserdata(L, sizeof *a + (size_t)(n > 0 ? n : 1) * sizeof a->items[0]);
    a->n = 0;
    if (luaL_newmetatable(L, ARGS_MT)) {
        lua_pushcfunction(L, args_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    char err[256];
    for (int i = 0; i < n; i++) {
        gfl_value *v = gfl_lua_to_value(L, first + i, err, sizeof err);
        if (!v) {
            args_drop(a); /* nothing waits for the collector */
            return gfl_lua_raise(L, "%s: argument %d: %s", what, i + 1, err), NULL;
        }
        a->items[a->n++] = v;
    }
    return a->items;
}

void gfl_lua_drop_args(lua_State *L, int idx)
{
    struct args *a = lua_touserdata(L, idx);
    if (a)
        args_drop(a);
}

/* ---- gfl -> Lua ---- */

static int push_value(struct conv *c, gfl_value *v);

static int push_array(struct conv *c, gfl_value *v)
{
    lua_State *L = c->L;
    int64_t n = GFL->value_length(v);
    lua_createtable(L, n > 0 && n < INT32_MAX ? (int)n : 0, 0);
    int t = lua_gettop(L);
    int holes = 0;
    for (int64_t i = 0; i < n; i++) {
        gfl_value *item = GFL->value_array_get(v, (size_t)i);
        if (!push_value(c, item)) {
            prepend_index(c, (size_t)i + 1);
            lua_settop(L, t - 1);
            return 0;
        }
        holes |= lua_isnil(L, -1);
        lua_rawseti(L, t, (lua_Integer)(i + 1));
    }
    lua_pushvalue(L, c->array_mt);
    lua_setmetatable(L, t);
    if (holes) {
        /* Keep the length, so [1, nil] goes back as two items. */
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->rt->ref_arraylen);
        lua_pushvalue(L, t);
        lua_pushnumber(L, (lua_Number)n);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    return 1;
}

static int push_map(struct conv *c, gfl_value *v)
{
    lua_State *L = c->L;
    int64_t n = GFL->value_length(v);
    lua_createtable(L, 0, n > 0 && n < INT32_MAX ? (int)n : 0);
    int t = lua_gettop(L);
    for (int64_t i = 0; i < n; i++) {
        gfl_value *key, *value;
        if (GFL->value_map_entry(v, (size_t)i, &key, &value) < 0)
            continue;
        if (!push_value(c, key)) {
            lua_settop(L, t - 1);
            return 0;
        }
        if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))) {
            fail(c, lua_isnil(L, -1) ? "a map key is nil, which a Lua table cannot hold"
                                     : "a map key is NaN, which a Lua table cannot hold");
            lua_settop(L, t - 1);
            return 0;
        }
        lua_pushvalue(L, -1);
        lua_rawget(L, t);
        int taken = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (taken) { /* duplicate keys: the first wins, as in lookups */
            lua_pop(L, 1);
            continue;
        }
        if (!push_value(c, value)) {
            prepend_key(c, -1);
            lua_settop(L, t - 1);
            return 0;
        }
        lua_rawset(L, t);
    }
    return 1;
}

static int push_value(struct conv *c, gfl_value *v)
{
    lua_State *L = c->L;
    if (!lua_checkstack(L, 8)) {
        fail(c, "out of Lua stack space");
        return 0;
    }
    switch (GFL->value_type_of(v)) {
    case GFL_VALUE_NIL:
        lua_pushnil(L);
        return 1;
    case GFL_VALUE_BOOL: {
        int b = 0;
        GFL->value_get_bool(v, &b);
        lua_pushboolean(L, b);
        return 1;
    }
    case GFL_VALUE_INT: {
        int64_t i = 0;
        GFL->value_get_int(v, &i);
#if LUA_VERSION_NUM >= 503
        lua_pushinteger(L, (lua_Integer)i);
#else
        lua_pushnumber(L, (lua_Number)i);
#endif
        return 1;
    }
    case GFL_VALUE_DOUBLE: {
        double d = 0;
        GFL->value_get_double(v, &d);
        lua_pushnumber(L, (lua_Number)d);
        return 1;
    }
    case GFL_VALUE_BYTES:
    case GFL_VALUE_STRING: {
        const char *s = "";
        size_t len = 0;
        GFL->value_get_bytes(v, &s, &len);
        lua_pushlstring(L, s, len);
        return 1;
    }
    case GFL_VALUE_ERROR:
        gfl_lua_push_error(L, v);
        return 1;
    case GFL_VALUE_ARRAY:
        return push_array(c, v);
    case GFL_VALUE_MAP:
        return push_map(c, v);
    case GFL_VALUE_OBJECT: {
        void *chan;
        if (GFL->value_get_object(v, &gfl_lua_channel_class, &chan) == 0)
            gfl_lua_push_channel(L, chan);
        else if (!gfl_lua_push_own_object(L, v))
            gfl_lua_push_foreign(L, v);
        return 1;
    }
    default:
        fail(c, "a value of an unknown type");
        return 0;
    }
}

int gfl_lua_push_value(lua_State *L, gfl_value *v, char *err, size_t errlen)
{
    struct conv c;
    conv_init(&c, L, err, errlen);
    int type = GFL->value_type_of(v);
    if (type != GFL_VALUE_ARRAY && type != GFL_VALUE_MAP)
        return push_value(&c, v);
    c.rt = gfl_lua_rt_get(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c.rt->ref_array_mt);
    c.array_mt = lua_gettop(L);
    int ok = push_value(&c, v);
    lua_remove(L, c.array_mt);
    if (!ok)
        finish_message(&c);
    return ok;
}

void gfl_lua_push_value_or_raise(lua_State *L, gfl_value *v, const char *what)
{
    char err[256];
    if (!gfl_lua_push_value(L, v, err, sizeof err))
        gfl_lua_raise(L, "%s: %s", what, err);
}

/* gfl.array(t) -> t, marked as an array (gfl.array_mt) */
static int l_array(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    if (lua_isnoneornil(L, 1)) {
        lua_newtable(L);
        lua_replace(L, 1);
    }
    if (!lua_istable(L, 1))
        gfl_lua_typeerror(L, 1, 1, "array", "table");
    lua_settop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_array_mt);
    if (lua_getmetatable(L, 1)) {
        if (!lua_rawequal(L, -1, -2))
            return luaL_error(L, "gfl.array: the table has a metatable of its own");
        lua_pop(L, 1);
    }
    lua_setmetatable(L, 1);
    return 1;
}

/* gfl.is_array(t) -> whether t is marked as an array */
static int l_is_array(lua_State *L)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    int marked = 0;
    if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_array_mt);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_pushboolean(L, marked);
    return 1;
}

void gfl_lua_open_convert(lua_State *L, int internal)
{
    lua_pushcfunction(L, l_array);
    lua_setfield(L, internal, "array");
    lua_pushcfunction(L, l_is_array);
    lua_setfield(L, internal, "is_array");
}
