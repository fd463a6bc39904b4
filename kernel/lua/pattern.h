/*
 * pattern.h - step-limited string.find / match / gmatch / gsub
 * (pattern.c). Worker thread only.
 */
#ifndef LM_LUA_PATTERN_H
#define LM_LUA_PATTERN_H
#include <lua.h>

/* Set find/match/gmatch/gsub (step-limited) on the table at the top. */
void lm_lua_open_patterns(lua_State *L);
#endif
