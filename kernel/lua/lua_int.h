/*
 * lua_int.h - internals shared by kernel/lua_*.c (not for other modules).
 * Every function here runs on the worker that owns the lua_State, inside a
 * protected call (it may raise Lua errors).
 */
#ifndef LM_LUA_INT_H
#define LM_LUA_INT_H
#include "lua/lua_host.h"

#include <jansson.h>
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
 * checked), -1 neither (an array marker with other keys). No metamethods;
 * a pending table is materialised first. */
int lm_lua_table_kind(lua_State *L, int idx, size_t *n);

/* Memory that the state does not allocate itself but keeps alive (JSON
 * held by lazy values, below) counts against the cap too: charge raises the
 * ordinary memory error when it does not fit after a full collection;
 * uncharge gives it back (from a finalizer). */
void lm_lua_mem_charge(lua_State *L, size_t bytes);
void lm_lua_mem_uncharge(lua_State *L, size_t bytes);

/* ---- Jansson <-> Lua (lua_codec.c) ---- */

/* Push j as plain Lua values (objects as tables, arrays as marked tables,
 * null as lm.null). depth is j's nesting level, for the depth limit. */
void lm_lua_push_json(lua_State *L, json_t *j, int depth);
/* 1 when converting the Lua value at idx to JSON would give a value equal
 * to j (lm.null equals null; integers and floats differ). Tables still
 * pending (below) compare by their source without being materialised. With
 * flags LM_LUA_LAZY_PARAMS, idx and j are a request's parameters: keys
 * "model" and "messages" are ignored on both sides. No metamethods run; may
 * raise only while materialising (memory). */
int lm_lua_same_json(lua_State *L, int idx, const json_t *j, unsigned flags);

/* ---- lazy values (lua_codec.c) ----
 * Stage arguments are pushed as *pending* tables: empty tables with a
 * shared metatable and their source under a private key, so a stage that
 * never looks at its data costs no conversion. The first access of any
 * kind (index, assignment, #, pairs, and the sandbox's next, rawget,
 * rawlen, rawset, getmetatable, setmetatable; every host conversion through
 * lm_lua_table_kind) materialises the value in place: afterwards it is the
 * plain table the eager conversion used to build (tables inside it may be
 * pending in turn when the source says so). A pending table keeps its
 * source alive, so it stays valid after the stage call.
 * Sources: JSON text (a Lua string, decoded as lm.json.decode does; or a
 * table {text, field, raw string}), or a slot of an anchor: a userdata
 * holding references to Jansson values, charged against the memory cap and
 * released by its finalizer. */
#define LM_LUA_ANCHOR_SLOTS 4
/* A kind names what a pending table over an anchor shows: a slot number,
 * plus LM_LUA_LAZY_PARAMS for the slot's object without "model" and
 * "messages" (a request's parameters); or LM_LUA_LAZY_VIEW, built by the
 * anchor's fill function. */
#define LM_LUA_LAZY_PARAMS 4u
#define LM_LUA_LAZY_VIEW   8u

typedef struct lm_lua_anchor_s lm_lua_anchor_t;
/* Fills table t for LM_LUA_LAZY_VIEW; the anchor is at stack index src. */
typedef void (*lm_lua_fill_fn)(lua_State *L, int t, int src, lm_lua_anchor_t *a);
struct lm_lua_anchor_s {
    json_t *j[LM_LUA_ANCHOR_SLOTS]; /* references (or NULL); what a kind shows of them must
                                       not change in place (lm_lua_anchor_snapshot first) */
    int depth[LM_LUA_ANCHOR_SLOTS]; /* nesting level of each value */
    lm_lua_fill_fn fill;            /* for LM_LUA_LAZY_VIEW, may be NULL */
    size_t charged;                 /* bytes charged against the state */
};

/* Metatables for pending tables and anchors (once per state). */
void lm_lua_lazy_open(lua_State *L);
/* Rough bytes j takes once converted (what an anchor is charged). */
size_t lm_lua_json_cost(json_t *j);
/* Push a new anchor with empty slots and nuv user values, charged cost
 * bytes (raises the memory error when that does not fit). The caller sets
 * the slots (each a reference of its own); the finalizer drops them. */
lm_lua_anchor_t *lm_lua_push_anchor(lua_State *L, size_t cost, int nuv);
/* The anchor at idx, or NULL. */
lm_lua_anchor_t *lm_lua_to_anchor(lua_State *L, int idx);
/* Make slot hold a shallow copy of its object, before its owner changes
 * the original in place, so pending tables keep showing what they were made
 * from. 0, or -1 when out of memory. Never raises. */
int lm_lua_anchor_snapshot(lm_lua_anchor_t *a, int slot);
/* Push a pending table over the source at src: JSON text (kind unused) or
 * an anchor (kind as above). */
void lm_lua_push_lazy(lua_State *L, int src, unsigned kind);
/* Push a pending table over JSON text (an object or an array). */
void lm_lua_push_lazy_text(lua_State *L, const char *json, size_t len);
/* The same for an object plus one more member: field = the string raw[0..n)
 * as it is (it need not be escaped or even valid UTF-8 to travel: a large
 * member such as a request body is only copied, never escaped or decoded). */
void lm_lua_push_lazy_text_with(lua_State *L, const char *json, size_t len, const char *field,
                                const char *raw, size_t n);
/* 1 when the value at idx is a table not materialised yet. */
int lm_lua_lazy_pending(lua_State *L, int idx);
/* Materialise the value at idx if it is pending (no-op otherwise). */
void lm_lua_touch(lua_State *L, int idx);

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
