/*
 * decode.h - JSON text to Lua values (decode.c). Worker thread only,
 * inside protected calls.
 */
#ifndef LM_LUA_DECODE_H
#define LM_LUA_DECODE_H
#include <lua.h>

/* lm.json.decode(s) -> value | nil, "message at byte N". */
int lm_lua_json_decode(lua_State *L);
/* Decodes the JSON text at stack index src (an object or an array) into
 * the table at t and pops one value (the caller's copy of the text);
 * returns 1 for an array. Raises on invalid text. */
int lm_lua_json_fill(lua_State *L, int t, int src);
#endif
