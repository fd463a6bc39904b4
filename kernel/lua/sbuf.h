/*
 * sbuf.h - a byte buffer charged to the state's memory cap and freed by
 * its owning userdata's finalizer (sbuf.c). Worker thread only.
 */
#ifndef LM_LUA_SBUF_H
#define LM_LUA_SBUF_H
#include <lua.h>
#include <stddef.h>

typedef struct lm_lua_sbuf_s {
    char *p;
    size_t len;
    size_t cap;
    lua_Alloc f;
    void *ud;
} lm_lua_sbuf_t;

/* Pushes the owning userdata and returns its buffer (empty). */
lm_lua_sbuf_t *lm_lua_sbuf_new(lua_State *L);
/* Makes room for n more bytes; raises "not enough memory" at the cap. */
void lm_lua_sbuf_need(lua_State *L, lm_lua_sbuf_t *b, size_t n);
void lm_lua_sbuf_add(lua_State *L, lm_lua_sbuf_t *b, const void *p, size_t n);
void lm_lua_sbuf_addc(lua_State *L, lm_lua_sbuf_t *b, char c);
/* Frees the bytes now instead of at the owner's collection. */
void lm_lua_sbuf_free(lm_lua_sbuf_t *b);
/* Pushes the content as a string and frees the buffer. */
void lm_lua_sbuf_push(lua_State *L, lm_lua_sbuf_t *b);
#endif
