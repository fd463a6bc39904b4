/*
 * park.h - stage calls that may wait (park.c): on_request runs in a
 * thread of its own, so that lm.moderate can yield while the host fetches
 * a verdict; the waiting stage is kept with the request's call and resumed
 * with the answer. Worker thread only.
 */
#ifndef LM_LUA_PARK_H
#define LM_LUA_PARK_H
#include "lua/runner.h"

/* lm_lua_run in a thread that may yield: LM_LUA_PENDING when the script
 * waits on a side call (the run is then kept in call->park: r's outputs
 * are empty and the caller must not free anything of r), else as
 * lm_lua_run. */
int lm_lua_run_parkable(lm_lua_vm_t *vm, size_t i, lm_lua_run_t *r, lm_lua_result_t *res);
/* Resumes the waiting run with verdict (borrowed) or nil, why. *i gets
 * its script; on return other than PENDING, *r is the ended run (as
 * lm_lua_run leaves it) and call->park is gone. */
int lm_lua_park_resume(lm_lua_call_t *call, json_t *verdict, const char *why, size_t *i,
                       lm_lua_run_t *r, lm_lua_result_t *res);
#endif
