/*
 * lazy.h - lazy stage arguments (lazy.c). Worker thread only, inside
 * protected calls unless a function says it never raises.
 */
#ifndef LM_LUA_LAZY_H
#define LM_LUA_LAZY_H
#include "lua/lua_host.h"
#include "lua/values.h"

#include <lauxlib.h>
#include <stdint.h>

/* Stage arguments are pushed as *pending* tables: empty tables with a
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
/* Push a box: a copy of in's bytes (and of its raw member, named
 * raw_name) that in->write turns into JSON text only when a pending table
 * over it (lm_lua_push_lazy with kind = the part) is materialised. One
 * allocation; no metatable, no finalizer (it holds nothing outside). */
void lm_lua_push_box(lua_State *L, const lm_lua_input_t *in, const char *raw_name);
/* 1 when the value at idx is a table not materialised yet. */
int lm_lua_lazy_pending(lua_State *L, int idx);
/* Materialise the value at idx if it is pending (no-op otherwise). */
void lm_lua_touch(lua_State *L, int idx);

/* How the table at idx encodes: 1 array (*n elements: it carries the array
 * marker or its keys are exactly 1..n), 0 object (maybe empty, keys not
 * checked), -1 neither (an array marker with other keys). No metamethods;
 * a pending table is materialised first. */
int lm_lua_table_kind(lua_State *L, int idx, size_t *n);

/* 1 when converting the Lua value at idx to JSON would give a value equal
 * to j (lm.null equals null; integers and floats differ). Tables still
 * pending (below) compare by their source without being materialised. With
 * flags LM_LUA_LAZY_PARAMS, idx and j are a request's parameters: keys
 * "model" and "messages" are ignored on both sides. No metamethods run; may
 * raise only while materialising (memory). */
int lm_lua_same_json(lua_State *L, int idx, const json_t *j, unsigned flags);
#endif
