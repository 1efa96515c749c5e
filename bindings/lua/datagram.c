/* UDP endpoints (placeholder until written). */
#include "gfl_lua.h"

void gfl_lua_open_datagram(lua_State *L, int internal)
{
    (void)L, (void)internal;
}
