/* Subprocesses (placeholder until written). */
#include "gfl_lua.h"

void gfl_lua_open_process(lua_State *L, int internal)
{
    (void)L, (void)internal;
}
