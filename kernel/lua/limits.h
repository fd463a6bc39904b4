/*
 * limits.h - what one stage call may spend (limits.c): memory, instructions,
 * wall clock, pattern steps. Worker thread only.
 */
#ifndef LM_LUA_LIMITS_H
#define LM_LUA_LIMITS_H
#include "lua/state.h"

#define LM_LUA_HOOK_EVERY 1000 /* instructions between count hook firings */

/* The lua_Alloc of every state (ud: its vm): refuses growth past the cap.
 * Small blocks come from and go back to the vm's pool. */
void *lm_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* Frees the blocks the pool keeps (after lua_close, or when idle). */
void lm_lua_pool_drain(lm_lua_vm_t *vm);
/* The count hook: charges instructions, checks the deadline, raises once
 * the call has expired. Set on the state and on every coroutine. */
void lm_lua_hook(lua_State *L, lua_Debug *ar);
/* Raises the error of the limit vm->expired names (never returns). */
int lm_lua_raise_limit(lua_State *L, lm_lua_vm_t *vm);
/* Charge `steps` units of C-side work (pattern matching) to the running
 * call; raises the limit error (and marks the call expired, so pcall cannot
 * swallow it) when the step budget or the deadline is exhausted. */
void lm_lua_charge(lua_State *L, uint64_t steps);
/* Memory that the state does not allocate itself but keeps alive (JSON
 * held by lazy values) counts against the cap too: charge raises the
 * ordinary memory error when it does not fit after a full collection;
 * uncharge gives it back (from a finalizer). */
void lm_lua_mem_charge(lua_State *L, size_t bytes);
void lm_lua_mem_uncharge(lua_State *L, size_t bytes);
/* Arms the limits for script `script` running `stage` (the top-level
 * chunk, LM_LUA_STAGE_LOAD, gets more) and clears the run's decisions. */
void lm_lua_lim_start(lm_lua_vm_t *vm, size_t script, int stage);
/* Raises "<what> is not allowed in stage X" unless the running stage is in
 * mask (LM_LUA_BIT). */
void lm_lua_gate(lua_State *L, unsigned mask, const char *what);
#endif
