/*
 * Lua error objects <-> error values (docs/hosts.md, "Errors").
 *
 * A Lua error becomes gfl_value_error_ex(code, type, message, traceback,
 * cause) with the original error object as its cause (a "lua" object), so
 * whoever raises the value in this state again raises that very object. An
 * error value of anyone else becomes a gfl.Error table (type, message,
 * code, traceback) that keeps the value: raising it again, or failing a
 * task with it, sends on the very same value, cause and all. One Error
 * table per value while it lives, so `f:error() == f:error()`.
 */
#include "gfl_lua.h"

void gfl_lua_push_error(lua_State *L, gfl_value *error)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    if (!error || GFL->value_type_of(error) != GFL_VALUE_ERROR) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_error_new);
        lua_pushliteral(L, "RuntimeError");
        lua_pushliteral(L, "not an error value");
        lua_pushinteger(L, GFL_EINVAL);
        lua_call(L, 3, 1);
        return;
    }
    gfl_value *cause = GFL->value_error_cause(error);
    if (cause && gfl_lua_push_own_object(L, cause))
        return; /* raised by this state: the original object */

    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_errobjects);
    lua_pushlightuserdata(L, error);
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1)) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);
    int objects = lua_gettop(L);

    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_error_new);
    const char *type = GFL->value_error_type(error);
    const char *msg = GFL->value_error_message(error);
    const char *tb = GFL->value_error_traceback(error);
    lua_pushstring(L, type ? type : "Error");
    lua_pushstring(L, msg ? msg : "");
    lua_pushinteger(L, GFL->value_error_code(error));
    if (tb)
        lua_pushstring(L, tb);
    else
        lua_pushnil(L);
    lua_call(L, 4, 1);
    int e = lua_gettop(L);

    /* errvalues[e] = holder: the table keeps the value (weak key: the
     * value goes with the table). errobjects[value] = e: the same table
     * next time (weak value: the entry goes with the table, and the value
     * lives at least as long, so its address is not reused meanwhile). */
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_errvalues);
    lua_pushvalue(L, e);
    gfl_lua_push_holder(L, error);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_pushlightuserdata(L, error);
    lua_pushvalue(L, e);
    lua_rawset(L, objects);
    lua_remove(L, objects);
}

gfl_value *gfl_lua_error_value(lua_State *L, int idx, const char *traceback)
{
    gfl_lua_rt *rt = gfl_lua_rt_get(L);
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (lua_type(L, idx) == LUA_TTABLE) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_errvalues);
        lua_pushvalue(L, idx);
        lua_rawget(L, -2);
        gfl_value **held = lua_touserdata(L, -1);
        lua_pop(L, 2);
        if (held && *held)
            return GFL->value_ref(*held); /* made from a value: that value */
    }
    /* The cause: the object itself, or what a foreign proxy holds (a
     * Python exception raised from Lua goes home as itself). */
    gfl_value *foreign = gfl_lua_to_foreign(L, idx);
    gfl_value *cause = foreign ? GFL->value_ref(foreign) : gfl_lua_object_value(L, idx);
    if (!cause)
        return NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->ref_error_info);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 3); /* code, type, message */
    int code = (int)lua_tointeger(L, -3);
    const char *type = lua_tostring(L, -2);
    const char *message = lua_tostring(L, -1);
    gfl_value *e = GFL->value_error_ex(code < 0 ? code : GFL_EUNKNOWN, type, message, traceback, cause);
    lua_pop(L, 3);
    GFL->value_unref(cause);
    return e;
}
