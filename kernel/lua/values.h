/*
 * values.h - how JSON values look in Lua (values.c): arrays carry a marker
 * metatable, null is the NULL light userdata (lm.null), depth is limited.
 */
#ifndef LM_LUA_VALUES_H
#define LM_LUA_VALUES_H
#include <jansson.h>
#include <lua.h>
#include <stddef.h>

/* Registry key (its address) of the metatable that marks JSON arrays. */
extern const char lm_lua_array_key;
/* JSON depth limit for every conversion (same as the request check). */
#define LM_LUA_JSON_DEPTH 64

/* The null sentinel (lm.null / lm.json.null) is the NULL light userdata. */
#define lm_lua_pushnull(L)  lua_pushlightuserdata((L), NULL)
#define lm_lua_isnull(L, i) (lua_islightuserdata((L), (i)) && lua_touserdata((L), (i)) == NULL)

/* 1 when s[0..n) is valid UTF-8 (no overlongs, surrogates, > U+10FFFF). */
int lm_lua_utf8_ok(const char *s, size_t n);
/* Push j as plain Lua values (objects as tables, arrays as marked tables,
 * null as lm.null); j stays the caller's. depth is j's nesting level, for
 * the depth limit. Raises on memory errors and excess depth. */
void lm_lua_push_json(lua_State *L, json_t *j, int depth);
#endif
