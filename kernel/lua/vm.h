/*
 * vm.h - what the stage runner needs of a vm beyond lua_host.h (vm.c).
 */
#ifndef LM_LUA_VM_H
#define LM_LUA_VM_H
#include "lua/state.h"

/* Message handler for every protected call into scripts: a traceback for
 * string errors, a fixed text for other values (never calls __tostring). */
int lm_lua_msgh(lua_State *L);
#endif
