/*
 * moderate.h - lm.moderate (moderate.c). Worker thread only.
 */
#ifndef LM_LUA_MODERATE_H
#define LM_LUA_MODERATE_H
#include "lua/state.h"

/* lm.moderate(model, text) -> the verdict table ({flagged, categories,
 * ...}), or nil, message. Only in on_request, only in the stage's own
 * thread (not inside a script's coroutine); it yields while the host's side
 * call runs (at most LM_LUA_SIDE_MAX per request). */
int lm_lua_moderate_fn(lua_State *L);
#endif
