/*
 * encode.h - Lua values to JSON text and to Jansson values (encode.c).
 * Worker thread only, inside protected calls (these raise on bad values).
 */
#ifndef LM_LUA_ENCODE_H
#define LM_LUA_ENCODE_H
#include "lua/lazy.h"

/* lm.json.encode(v): compact JSON text, built in a capped buffer. */
int lm_lua_json_encode(lua_State *L);
/* Attach v to parent (array append, or object key k/kl) or to *root.
 * Raises "out of memory" when v is NULL or cannot be attached. */
void lm_lua_tj_attach(lua_State *L, json_t *v, json_t *parent, const char *k, size_t kl,
                      json_t **root);
/* The Lua value at idx (nesting level depth) to JSON, attached as
 * lm_lua_tj_attach says; `what` names the value in error messages. The
 * caller frees the root, also after an error. */
void lm_lua_to_json(lua_State *L, int idx, int depth, const char *what, json_t *parent,
                    const char *k, size_t kl, json_t **root);
/* The table at idx as a JSON object in *root (new ref; an empty table is
 * an empty object). */
void lm_lua_to_json_object(lua_State *L, int idx, const char *what, json_t **root);
/* Replaces the members of dst with those of src (both objects); 0 or -1. */
int lm_lua_replace_object(json_t *dst, json_t *src);
#endif
