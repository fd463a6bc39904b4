/*
 * api.h - the lm table scripts see (api.c). Worker thread only.
 */
#ifndef LM_LUA_API_H
#define LM_LUA_API_H
#include "lua/state.h"

/* Builds the lm table and sets B.lm (B: the base table's stack index) to
 * its read-only proxy; leaves the table itself on the stack and returns its
 * index. Raises on memory errors. */
int lm_lua_api_open(lua_State *L, int B);
#endif
