/*
 * relay_lua.h - the request pipeline's side of the Lua stages: turns kernel
 * objects into stage inputs and stage results into kernel decisions and
 * OpenAI errors. Thread: the request's worker. Every function is a no-op
 * (returns "continue") when call is NULL or no script defines the stage.
 */
#ifndef LM_RELAY_LUA_H
#define LM_RELAY_LUA_H
#include "core/buf.h"
#include "gov/billing.h"
#include "lua/lua_host.h"
#include "plugin/host.h"
#include "relay/rt.h"
#include "relay/worker.h"

/* The worker's state for the generation's scripts (created or switched on
 * demand; the worker keeps one reference). NULL with e filled (500). */
lm_lua_vm_t *lm_rlua_vm(lm_worker_t *w, lm_lua_gen_t *gen, lm_err *e);
/* on_request: may rewrite canon in place. 0, 1 when a script waits on a
 * side call (modcall.h resumes it), or -1 with e filled. */
int lm_rlua_request(lm_lua_call_t *call, json_t *canon, lm_err *e);
/* The side call ended (verdict borrowed, or NULL with why): on_request
 * goes on. Returns as lm_rlua_request. */
int lm_rlua_request_resume(lm_lua_call_t *call, json_t *canon, json_t *verdict, const char *why,
                           lm_err *e);
/* 1 when on_request changed canon's model, messages or parameters: the
 * client's raw body no longer means canon. 0 without scripts. */
int lm_rlua_request_changed(const lm_lua_call_t *call);
/* on_route: reorders/filters cands in place; returns the new count, or -1
 * with e filled. */
long lm_rlua_route(lm_lua_call_t *call, lm_route_t *cands, size_t n, const lm_conf_t *conf,
                   lm_err *e);
/* on_upstream_request: scripts may change headers and body of u. */
int lm_rlua_upstream(lm_lua_call_t *call, const lm_route_t *route, int attempt, lm_ureq_t *u,
                     lm_err *e);
/* on_event: append the SSE events to send for one chunk (json text) to out
 * (the same bytes when the scripts left the chunk alone); -1 with e filled
 * on a script error. */
int lm_rlua_event(lm_lua_call_t *call, const char *json, size_t len, lm_buf_t *out, lm_err *e);
/* on_response: *body (malloc'd JSON text) is replaced only when a script
 * changed it. */
int lm_rlua_response(lm_lua_call_t *call, char **body, size_t *len, lm_err *e);
/* on_error: maps e in place; returns 1 when a script asks for the next
 * channel (only meaningful when nothing reached the client). */
int lm_rlua_error(lm_lua_call_t *call, lm_err *e, const lm_route_t *route, int attempt,
                  int started);
/* on_usage: a script may replace the charge (micro-units). */
void lm_rlua_usage(lm_lua_call_t *call, const lm_usage *u, const lm_price_t *price,
                   int64_t *charge);
/* on_log: scripts add fields to record (in-out). */
void lm_rlua_log(lm_lua_call_t *call, json_t *record);
#endif
