/*
 * sandbox.h - the safe standard library and the frozen set (sandbox.c).
 * Worker thread only, inside protected calls (may raise).
 */
#ifndef LM_LUA_SANDBOX_H
#define LM_LUA_SANDBOX_H
#include "lua/state.h"

/* Pushes B, the shared base table: creates the frozen set, then the safe
 * base functions and read-only proxies of the safe libraries. Returns its
 * stack index. */
int lm_lua_sandbox_open(lua_State *L);
/* __newindex of a script's _ENV after load: assignment to a global raises. */
int lm_lua_global_newindex(lua_State *L);
/* Adds the table at idx to the frozen set (rawset refuses it). */
void lm_lua_mark_frozen(lua_State *L, int idx);
/* Pushes a read-only, frozen proxy of the table at idx; its __index is the
 * table, or the C closure index_fn over it. */
void lm_lua_push_proxy(lua_State *L, int idx, const char *name, lua_CFunction index_fn);
/* Copies every field of the table at src into the table at dst except the
 * names in skip (NULL-terminated; skip may be NULL). */
void lm_lua_copy_fields(lua_State *L, int src, int dst, const char *const *skip);
/* t[name] = f for the table on top of the stack. */
void lm_lua_set_fn(lua_State *L, const char *name, lua_CFunction f);
#endif
