/*
 * sbuf.c - a byte buffer allocated with the state's own allocator (so it
 * counts against the memory cap) and owned by a userdata whose __gc frees
 * it, so a Lua error in the middle (memory cap, bad value) leaks nothing.
 * That __gc is host code: scripts can neither reach nor set finalizers.
 * Thread: the worker owning the state; inside protected calls.
 */
#include "lua/sbuf.h"

#include <lauxlib.h>
#include <string.h>

static int sb_gc(lua_State *L)
{
    lm_lua_sbuf_t *b = lua_touserdata(L, 1);
    if (b && b->p) {
        b->f(b->ud, b->p, b->cap, 0);
        b->p = NULL;
        b->cap = b->len = 0;
    }
    return 0;
}

/* Pushes the owning userdata. */
lm_lua_sbuf_t *lm_lua_sbuf_new(lua_State *L)
{
    lm_lua_sbuf_t *b = lua_newuserdatauv(L, sizeof(*b), 0);

    memset(b, 0, sizeof(*b));
    b->f = lua_getallocf(L, &b->ud);
    if (luaL_newmetatable(L, "lm.sbuf")) {
        lua_pushcfunction(L, sb_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

void lm_lua_sbuf_need(lua_State *L, lm_lua_sbuf_t *b, size_t n)
{
    size_t ncap;
    char *np;

    if (b->cap - b->len >= n)
        return;
    if (n > ((size_t)1 << 40) - b->len)
        luaL_error(L, "not enough memory");
    ncap = b->cap ? b->cap : 256;
    while (ncap - b->len < n)
        ncap *= 2;
    np = b->f(b->ud, b->p, b->p ? b->cap : 0, ncap);
    if (!np)
        luaL_error(L, "not enough memory");
    b->p = np;
    b->cap = ncap;
}

void lm_lua_sbuf_add(lua_State *L, lm_lua_sbuf_t *b, const void *p, size_t n)
{
    lm_lua_sbuf_need(L, b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void lm_lua_sbuf_addc(lua_State *L, lm_lua_sbuf_t *b, char c)
{
    lm_lua_sbuf_need(L, b, 1);
    b->p[b->len++] = c;
}

/* Frees the bytes now instead of at the owner's collection. */
void lm_lua_sbuf_free(lm_lua_sbuf_t *b)
{
    if (b->p) {
        b->f(b->ud, b->p, b->cap, 0);
        b->p = NULL;
        b->cap = b->len = 0;
    }
}

/* Pushes the content as a string and frees the buffer. */
void lm_lua_sbuf_push(lua_State *L, lm_lua_sbuf_t *b)
{
    lua_pushlstring(L, b->p ? b->p : "", b->len);
    lm_lua_sbuf_free(b);
}
