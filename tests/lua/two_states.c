/*
 * Two lua_States on one loop: each is "another host" to the other, so
 * this checks what a single state cannot see (docs/hosts.md): a Lua
 * object of the other state arrives as a foreign proxy and goes home as
 * the very same object; an error raised in one arrives in the other as a
 * gfl.Error with the type, message and traceback of the value, and going
 * back it is the original error object again; cancellation crosses; a
 * closed state's exports are gone. Then the three teardown orders:
 *
 *   two_states [--close-a-first | --close-b-first | --free-loop-first]
 *
 * Prints "two_states <order>: ok" and exits 0 when every check held.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <globeflower.h>

#include "globeflower_lua.h"

/* State A: exports functions returning objects and raising errors. */
static const char script_a[] =
    "local gfl = require 'globeflower'\n"
    "local fn = function() return 'from A' end\n"
    "local obj = setmetatable({}, {__index = {}})\n"
    "local raised = {type = 'KeyError', message = 'missing'}\n"
    "a_state = {cancelled = false}\n"
    "gfl.export('a.make', function() return {fn = fn, obj = obj, data = {1, 2}} end)\n"
    "gfl.export('a.same', function(x, y) return x == fn and y == obj end)\n"
    "gfl.export('a.fail', function() error(raised) end)\n"
    "gfl.export('a.slow', function()\n"
    "  local ok, err = gfl.pcall(gfl.sleep, 10)\n"
    "  a_state.cancelled = gfl.is_cancelled(err)\n"
    "  error(err, 0)\n"
    "end)\n"
    "gfl.spawn(function()\n"
    "  -- B re-raises A's error: A gets its own object back\n"
    "  local ok, e = gfl.pcall(gfl.call, 'b.relay_fail')\n"
    "  assert(not ok and e == raised, 'the original error object comes home: ' .. tostring(e))\n"
    "  a_state.relay_ok = true\n"
    "end)\n";

/* State B: calls A's exports; sees A's objects as foreign proxies. */
static const char script_b[] =
    "local gfl = require 'globeflower'\n"
    "b_state = {}\n"
    "gfl.export('b.relay_fail', function()\n"
    "  local ok, e = gfl.pcall(gfl.call, 'a.fail')\n"
    "  error(e, 0) -- sends on the very same value\n"
    "end)\n"
    "gfl.spawn(function()\n"
    "  local r = gfl.call('a.make')\n"
    "  assert(gfl.is_foreign(r.fn) == 'lua', 'another state\\'s function is foreign')\n"
    "  assert(tostring(r.fn) == 'globeflower.foreign: lua object', tostring(r.fn))\n"
    "  assert(r.fn:class() == 'lua')\n"
    "  assert(gfl.is_array(r.data) and r.data[2] == 2)\n"
    "  assert(gfl.call('a.same', r.fn, r.obj) == true, 'identity across hops')\n"
    "  local ok, e = gfl.pcall(gfl.call, 'a.fail')\n"
    "  assert(not ok and getmetatable(e) == gfl.Error, tostring(e))\n"
    "  assert(e.type == 'KeyError' and e.message == 'missing' and e.code == -4000, tostring(e))\n"
    "  assert(tostring(e) == 'KeyError: missing')\n"
    "  assert(type(e.traceback) == 'string' and e.traceback:match('stack traceback'), tostring(e.traceback))\n"
    "  -- cancelling B's call cancels A's task\n"
    "  local t = gfl.spawn(function() return gfl.call('a.slow') end)\n"
    "  gfl.sleep(0.01)\n"
    "  t:cancel()\n"
    "  local ok2, e2 = gfl.pcall(t.await, t)\n"
    "  assert(not ok2 and gfl.is_cancelled(e2))\n"
    "  gfl.sleep(0)\n"
    "  b_state.ok = true\n"
    "end)\n";

static int failures;

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "two_states: FAIL: %s\n", what);
        failures++;
    }
}

static lua_State *new_state(gfl_loop *loop, const char *name, const char *script)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    gfl_lua_set_loop(L, loop, gfl_api_get());
    if (luaL_loadbuffer(L, script, strlen(script), name) != 0 || lua_pcall(L, 0, 0, 0) != 0) {
        fprintf(stderr, "two_states: %s: %s\n", name, lua_tostring(L, -1));
        exit(1);
    }
    return L;
}

/* The boolean field `key` of the global table `global`. */
static int flag(lua_State *L, const char *global, const char *key)
{
    lua_getglobal(L, global);
    lua_getfield(L, -1, key);
    int b = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return b;
}

/* Runs a Lua snippet; returns its error message (static) or NULL. */
static const char *run(lua_State *L, const char *code)
{
    static char msg[256];
    if (luaL_loadstring(L, code) != 0 || lua_pcall(L, 0, 0, 0) != 0) {
        snprintf(msg, sizeof msg, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return msg;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *order = argc > 1 ? argv[1] : "--close-a-first";
    gfl_loop *loop = gfl_loop_new(NULL);
    if (!loop)
        return 1;
    lua_State *A = new_state(loop, "=a", script_a);
    lua_State *B = new_state(loop, "=b", script_b);

    double deadline = gfl_loop_time(loop) + 10;
    while (!(flag(B, "b_state", "ok") && flag(A, "a_state", "relay_ok")) && gfl_loop_time(loop) < deadline) {
        if (gfl_loop_run_for(loop, 0.01) == 0)
            gfl_loop_run_once(loop, 0.005); /* idle: wait for the timers */
    }
    check(flag(B, "b_state", "ok"), "B's checks (foreign objects, errors, cancellation)");
    check(flag(A, "a_state", "relay_ok"), "A's error came home as itself");
    check(flag(A, "a_state", "cancelled"), "B's cancel reached A's task");
    check(gfl_export_count(loop) == 4 + 1, "five exports before teardown");

    if (strcmp(order, "--close-a-first") == 0) {
        lua_close(A);
        check(gfl_export_count(loop) == 1, "A's exports went with A");
        const char *err = run(B, "local gfl = require 'globeflower'\n"
                                 "local f = gfl.spawn(function() return gfl.call('a.make') end)\n"
                                 "gfl.run_for(0.01)\n"
                                 "local ok, e = pcall(f.result, f)\n"
                                 "assert(not ok and e.type == 'LookupError', tostring(e))\n");
        check(err == NULL, err ? err : "");
        lua_close(B);
        check(gfl_export_count(loop) == 0, "B's exports went with B");
        gfl_loop_free(loop);
    } else if (strcmp(order, "--close-b-first") == 0) {
        lua_close(B);
        check(gfl_export_count(loop) == 4, "B's exports went with B");
        lua_close(A);
        check(gfl_export_count(loop) == 0, "A's exports went with A");
        gfl_loop_free(loop);
    } else {
        gfl_loop_free(loop); /* exports still registered: released by the loop */
        lua_close(B);
        lua_close(A);
    }
    printf("two_states %s: %s\n", order, failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
