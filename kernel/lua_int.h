/*
 * lua_int.h - internals shared by kernel/lua_*.c (not for other modules).
 * Every function here runs on the worker that owns the lua_State, inside a
 * protected call (it may raise Lua errors).
 */
#ifndef LM_LUA_INT_H
#define LM_LUA_INT_H
#include "lua_host.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

/* Registry key (its address) of the metatable that marks JSON arrays. */
extern const char lm_lua_array_key;
/* JSON depth limit for every conversion (same as the request check). */
#define LM_LUA_JSON_DEPTH 64

/* The null sentinel (lm.null / lm.json.null) is the NULL light userdata. */
#define lm_lua_pushnull(L)  lua_pushlightuserdata((L), NULL)
#define lm_lua_isnull(L, i) (lua_islightuserdata((L), (i)) && lua_touserdata((L), (i)) == NULL)

/* Charge `steps` units of C-side work (pattern matching) to the running
 * call; raises the limit error (and marks the call expired, so pcall cannot
 * swallow it) when the step budget or the deadline is exhausted. */
void lm_lua_charge(lua_State *L, uint64_t steps);

/* 1 when s[0..n) is valid UTF-8 (no overlongs, surrogates, > U+10FFFF). */
int lm_lua_utf8_ok(const char *s, size_t n);
/* How the table at idx encodes: 1 array (*n elements: it carries the array
 * marker or its keys are exactly 1..n), 0 object (maybe empty, keys not
 * checked), -1 neither (an array marker with other keys). No metamethods. */
int lm_lua_table_kind(lua_State *L, int idx, size_t *n);

/* Set find/match/gmatch/gsub (step-limited) on the table at the top. */
void lm_lua_open_patterns(lua_State *L);

/* lm.json.encode(v) / lm.json.decode(s) and lm.base64.encode/decode. All
 * output is built in Lua buffers, so it counts against the memory cap. */
int lm_lua_json_encode(lua_State *L);
int lm_lua_json_decode(lua_State *L);
int lm_lua_b64_encode(lua_State *L);
int lm_lua_b64_decode(lua_State *L);

/* lm.shared backend (thread-safe). Return 0 or -1 (absent / full). ttl_ms
 * 0 = no expiry; applied when the entry is created (incr) or written (set). */
int lm_lua_shared_get(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t *val);
int lm_lua_shared_incr(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t delta,
                       int64_t ttl_ms, int64_t *val);
int lm_lua_shared_set(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t val, int64_t ttl_ms);
void lm_lua_shared_del(lm_lua_shared_t *sh, const char *k, size_t klen);
#endif
