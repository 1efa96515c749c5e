/*
 * Internal declarations shared by the Lua binding's C files.
 *
 * The binding reaches the core only through the gfl_api table (GFL below),
 * never by symbol and never through core/ headers.
 *
 * Ownership model (why nothing dangles when either side goes first):
 *  - gfl_lua_rt is the per-lua_State runtime. It is reference counted by the
 *    Lua state (dropped when the state closes) and by every C object that
 *    outlives a call (callbacks, streams, tasks). rt->L is NULL once the
 *    state closed: C callbacks that fire later then only free memory.
 *  - rt holds a loop reference, so a loop freed by its host is merely
 *    closed for us (every call answers GFL_ECLOSED).
 */
#ifndef GFL_LUA_INTERNAL_H
#define GFL_LUA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <globeflower.h>

#include "compat.h"

/* The one core table, chosen when the first state opens the module. */
extern const gfl_api *GFL;

typedef struct gfl_lua_rt gfl_lua_rt;

struct gfl_lua_rt {
    lua_State *L;   /* the main thread; NULL once the state is closed */
    gfl_loop *loop; /* one reference */
    int owns_loop;  /* we created it: closed with the state */
    int refs;       /* atomic */
    int ref_traceback;  /* debug.traceback */
    int ref_wait_token; /* what the prelude yields before a waiter (task.c) */
    int ref_array_mt;   /* gfl.array_mt: marks tables that are arrays */
    int ref_arraylen;   /* weak keys: array table -> length (arrays with nils) */
    int ref_foreign;    /* weak values: [lightuserdata gfl_value*] = proxy */
    int ref_errobjects; /* weak values: [lightuserdata gfl_value*] = Error */
    int ref_errvalues;  /* weak keys: Error table -> holder of its value */
    int ref_error_new;  /* prelude: (type, message, code, traceback) -> Error */
    int ref_error_info; /* prelude: err -> code, type, message */
    int ref_handler;    /* a Lua exception handler, or LUA_NOREF */
    int ref_internal;   /* the table of internals shared with the prelude */
    struct gfl_lua_task *current; /* the task whose step is running */
    struct gfl_lua_dead *dead;    /* Lua objects released off the loop thread */
    struct gfl_lua_export *exports; /* what this state exported (export.c) */
};

/* A registry reference to free on the loop thread. */
struct gfl_lua_dead {
    struct gfl_lua_dead *next;
    int ref;
};

gfl_lua_rt *gfl_lua_rt_get(lua_State *L);
/* The registry's anchor of the runtime (NULL before luaopen; *slot NULL
 * once the state is closing). */
gfl_lua_rt **gfl_lua_rt_slot(lua_State *L);
void gfl_lua_rt_ref(gfl_lua_rt *rt);
void gfl_lua_rt_unref(gfl_lua_rt *rt);
/* Frees Lua objects whose gfl values died in another thread. */
void gfl_lua_rt_collect(gfl_lua_rt *rt);

/* Raises the formatted message without a position (for functions the
 * prelude wraps, where a position would name the prelude). */
int gfl_lua_raise(lua_State *L, const char *fmt, ...);
/* Raises a Lua error for a negative GFL code from `what`. */
int gfl_lua_fail(lua_State *L, const char *what, int code);
/* Pushes nil, message, code (the I/O failure convention); returns 3. */
int gfl_lua_push_failure(lua_State *L, int code, const char *message);
/* The same from an error value (NULL: "closed"). */
int gfl_lua_push_failure_value(lua_State *L, const gfl_value *error);

/* ---- values (value.c, convert.c, error.c) ---- */

/* The Lua host class: a registry reference to one Lua value (or, for a
 * pack of several results, to a {n = k, ...} table). */
extern const gfl_host_class gfl_lua_class;
/* The Lua value at `idx` (any type) as a "lua" object value; NULL when
 * out of memory. */
gfl_value *gfl_lua_object_value(lua_State *L, int idx);
/* Pushes the Lua value of `v` when it is a "lua" object of this state
 * holding one value, and returns 1; else pushes nothing and returns 0. */
int gfl_lua_push_own_object(lua_State *L, gfl_value *v);
/* Futures only Lua reads (gfl.future, task results): values [first,
 * first + n) -> a new value; scalars stay scalars, anything else is kept
 * by identity in a "lua" object (several values: all of them). */
gfl_value *gfl_lua_pack(lua_State *L, int first, int n);
/* Pushes what `v` holds: the values of a "lua" object of this state, else
 * `v` converted (gfl_lua_push_value); raises when it cannot convert.
 * Returns the number of values pushed. */
int gfl_lua_unpack(lua_State *L, gfl_value *v);

/* Conversions of values that cross to other hosts (convert.c), per
 * docs/hosts.md: deep copies of tables, with cycles and nesting deeper
 * than GFL_VALUE_MAX_DEPTH refused. On failure they leave the stack as it
 * was, put a message in err[0..errlen) and return NULL / 0. */
gfl_value *gfl_lua_to_value(lua_State *L, int idx, char *err, size_t errlen);
int gfl_lua_push_value(lua_State *L, gfl_value *v, char *err, size_t errlen);
/* The same, raising "<what>: <message>" on failure. */
gfl_value *gfl_lua_check_value(lua_State *L, int idx, const char *what);
void gfl_lua_push_value_or_raise(lua_State *L, gfl_value *v, const char *what);
/* Lua values [first, first + n) converted into an array of values owned
 * by a userdata this pushes (its __gc drops them); raises "<what>:
 * argument i: <message>" leaving nothing behind. */
gfl_value **gfl_lua_check_args(lua_State *L, int first, int n, const char *what);
/* Drops those values now (the call is made: they were borrowed). */
void gfl_lua_drop_args(lua_State *L, int idx);

/* Another host's object (or a "lua" object of another state) as a Lua
 * proxy holding the very value: one proxy per value while it lives. */
void gfl_lua_push_foreign(lua_State *L, gfl_value *v);
/* The value of the proxy at `idx` (borrowed), or NULL. */
gfl_value *gfl_lua_to_foreign(lua_State *L, int idx);
/* Pushes a userdata holding a reference to `v` (released at __gc). */
void gfl_lua_push_holder(lua_State *L, gfl_value *v);

/* Pushes the Lua error object of an error value: the original object
 * when its cause is a Lua object of this state, else a gfl.Error table
 * that keeps the value (error.c). */
void gfl_lua_push_error(lua_State *L, gfl_value *error);
/* The error object at `idx` -> a new error value with `traceback` (may be
 * NULL): an Error made from a value gives that very value; anything else
 * an error whose cause is the object itself (docs/hosts.md). */
gfl_value *gfl_lua_error_value(lua_State *L, int idx, const char *traceback);
/* Reports a Lua error (at the top of L's stack, popped) raised by a
 * callback to the loop's exception handler. */
void gfl_lua_report(gfl_lua_rt *rt, lua_State *L, const char *message);
/* Calls the function below `nargs` arguments on L's top in protected mode
 * with a traceback; an error goes to the loop's exception handler. */
int gfl_lua_call(gfl_lua_rt *rt, lua_State *L, int nargs, int nresults, const char *what);

/* ---- futures and tasks (future.c, task.c) ---- */

#define GFL_LUA_FUTURE "globeflower.Future"

typedef struct gfl_lua_future {
    gfl_future *f;   /* one reference (a task's: the task's future) */
    gfl_task *task;  /* one reference when this is a task */
    struct gfl_lua_donecb *cbs; /* done callbacks still registered */
} gfl_lua_future;

gfl_lua_future *gfl_lua_future_push(lua_State *L, gfl_lua_rt *rt, gfl_future *f);
gfl_lua_future *gfl_lua_future_check(lua_State *L, int idx);
/* The gfl_future behind a future/task object or light userdata; NULL. */
gfl_future *gfl_lua_to_future(lua_State *L, int idx);
void gfl_lua_wake_waiter(gfl_future **waiter); /* resolve with nil, drop, clear */
int gfl_lua_spawn(lua_State *L); /* gfl.spawn(fn, ...) */
/* A task running the function at `base` with the values above it as
 * arguments (they are moved into its coroutine); `exported`: its results
 * cross to other hosts (0 values: nil, 1: it, more: an array; converted).
 * Pushes the task object and returns the task (borrowed: the object holds
 * it); raises when the loop is closed. */
gfl_task *gfl_lua_spawn_at(lua_State *L, int base, int exported);

void gfl_lua_open_value(lua_State *L, int internal);
void gfl_lua_open_convert(lua_State *L, int internal);
void gfl_lua_open_future(lua_State *L, int internal);
void gfl_lua_open_task(lua_State *L, int internal);
void gfl_lua_open_callbacks(lua_State *L, int internal);
void gfl_lua_open_stream(lua_State *L, int internal);
void gfl_lua_open_server(lua_State *L, int internal);
void gfl_lua_open_protocol(lua_State *L, int internal);
void gfl_lua_open_dns(lua_State *L, int internal);
void gfl_lua_open_datagram(lua_State *L, int internal);
void gfl_lua_open_process(lua_State *L, int internal);
void gfl_lua_open_tls(lua_State *L, int internal);
void gfl_lua_open_plugin(lua_State *L, int internal);
void gfl_lua_open_export(lua_State *L, int internal);
void gfl_lua_open_fs(lua_State *L, int internal);
void gfl_lua_open_poll(lua_State *L, int internal);
void gfl_lua_open_tty(lua_State *L, int internal);
void gfl_lua_open_work(lua_State *L, int internal);
void gfl_lua_open_channel(lua_State *L, int internal);
void gfl_lua_open_thread(lua_State *L, int internal);

/* Channels between threads (channel.c): they cross as themselves. */
struct gfl_lua_chan;
extern const gfl_host_class gfl_lua_channel_class;
void gfl_lua_push_channel(lua_State *L, struct gfl_lua_chan *c);
struct gfl_lua_chan *gfl_lua_to_channel(lua_State *L, int idx);
/* The state is closing: unexports what it exported (export.c). */
void gfl_lua_unexport_all(gfl_lua_rt *rt);

/* The `tls` (or `ssl`) field of the options table at `opts`: 0 when absent
 * or false; else fills *tls (its context is held by one object this pushes
 * on the stack, which the caller leaves there until the call is made) and
 * returns 1. `server`: for a server (a server context). Raises on bad
 * options and on certificate files that do not load. */
int gfl_lua_tls_options(lua_State *L, int opts, int server, gfl_tls_options *tls);

/* luaL_checkudata for the object of a method that gfl_lua_newclass
 * registered (those get their class's metatable as upvalue 1): one
 * metatable comparison instead of a lookup by name. Anywhere else it falls
 * back to luaL_checkudata. */
static inline void *gfl_lua_checkself(lua_State *L, int idx, const char *tname)
{
    void *p = lua_touserdata(L, idx);
    if (p && lua_getmetatable(L, idx)) {
        int same = lua_rawequal(L, -1, lua_upvalueindex(1));
        lua_pop(L, 1);
        if (same)
            return p;
    }
    return luaL_checkudata(L, idx, tname);
}

/* gfl_future_add_done_callback_ex when the core has it (ABI 1.2: release
 * runs if the callback never will, e.g. the loop closed first), else the
 * plain one (then `release` is never called). */
int gfl_lua_add_done_callback(gfl_future *f, gfl_future_callback cb, void *arg, gfl_release_fn release);

/* Sets the functions of `l` into the table at `idx`. */
void gfl_lua_register(lua_State *L, int idx, const luaL_Reg *l);
/* A metatable named `name` with `methods` as __index (and __gc, if given);
 * each method and __gc gets the metatable as upvalue 1 (gfl_lua_checkself). */
void gfl_lua_newclass(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc);

/* Addresses as Lua sees them: "host", port. Returns values pushed. */
int gfl_lua_push_sockaddr(lua_State *L, const void *addr, size_t len);
/* Lua "host", port (numeric only: no lookups) or, when `family` is AF_UNIX
 * or no port follows, a Unix socket path at idx -> *ss; raises on bad
 * input. */
int gfl_lua_to_sockaddr(lua_State *L, int idx, int family, struct sockaddr_storage *ss, socklen_t *len);
/* A signal number from a number or a name ("SIGTERM", "TERM") at idx. */
int gfl_lua_check_signal(lua_State *L, int idx, int argn, const char *fname);
/* Argument errors that name the public function and the argument as the
 * user wrote them (`bad argument #1 to 'sleep' (number expected, got
 * string)`), positioned at the innermost frame outside the module: C
 * functions reached through the prelude, or as methods, would otherwise be
 * named '?', 'method' or by an internal name, differently per Lua. */
int gfl_lua_argerror(lua_State *L, int argn, const char *fname, const char *fmt, ...);
/* "<type> expected, got <type of idx>" as such an error. */
int gfl_lua_typeerror(lua_State *L, int idx, int argn, const char *fname, const char *expected);
/* Checks of the value at `idx`, reported as argument `argn` of `fname`.
 * Numbers must not be NaN; integers must be integral. */
lua_Number gfl_lua_checknumber(lua_State *L, int idx, int argn, const char *fname);
lua_Integer gfl_lua_checkinteger(lua_State *L, int idx, int argn, const char *fname);
const char *gfl_lua_checklstring(lua_State *L, int idx, int argn, const char *fname, size_t *len);
void gfl_lua_checkfunction(lua_State *L, int idx, int argn, const char *fname);
/* A Unix socket path of `len` bytes must fit sockaddr_un (raises). */
void gfl_lua_check_unix_path(lua_State *L, size_t len, int argn, const char *fname);
/* Pushes "file:line: " of the innermost frame outside the module, or "". */
void gfl_lua_where_user(lua_State *L);
/* Options table field helpers (idx may be 0 for "no table"). */
const char *gfl_lua_opt_string(lua_State *L, int idx, const char *key, const char *def);
double gfl_lua_opt_number(lua_State *L, int idx, const char *key, double def);
int gfl_lua_opt_bool(lua_State *L, int idx, const char *key, int def);

#endif
