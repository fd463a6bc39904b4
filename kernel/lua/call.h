/*
 * call.h - the request view that a call shows scripts (call.c). Worker
 * thread only.
 */
#ifndef LM_LUA_CALL_H
#define LM_LUA_CALL_H
#include "lua/state.h"

/* Pushes the request as scripts see it: {model, messages, params, key,
 * group, meta}, a pending table. Stages share one anchor per request, and
 * one view while no script has looked at it. May raise (memory). */
void lm_lua_push_reqview(lua_State *L, lm_lua_call_t *call);
/* lm.request / lm.response for the running stage call: the value at idx
 * (the vm's run slots; lm_lua_run empties them when the call ends). */
void lm_lua_set_request(lua_State *L, int idx);
void lm_lua_set_response(lua_State *L, int idx);
/* Forgets the cached request anchor and view; an anchor that still shows
 * the live request switches to a copy of it first (req may be changed in
 * place later). 0, or -1 when out of memory. Never raises. */
int lm_lua_drop_view(lm_lua_call_t *call);
#endif
