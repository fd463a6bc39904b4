/*
 * values.c - how JSON values look in Lua: the array marker, the null
 * sentinel, the UTF-8 check, and Jansson values pushed as plain Lua values.
 * Thread: the worker owning the state (utf8_ok: any). Pushed values belong
 * to the state; the caller keeps its Jansson references.
 */
#include "lua/values.h"

#include <lauxlib.h>

const char lm_lua_array_key = 'A';

/* 1 when s[0..n) is valid UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int lm_lua_utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *e = p + n;

    while (p < e) {
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        int k;
        unsigned cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (e - p <= k)
            return 0;
        for (int i = 1; i <= k; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += k + 1;
    }
    return 1;
}

void lm_lua_push_json(lua_State *L, json_t *j, int depth)
{
    if (depth > LM_LUA_JSON_DEPTH)
        luaL_error(L, "JSON nested deeper than %d", LM_LUA_JSON_DEPTH);
    luaL_checkstack(L, 4, "JSON depth");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *v;
        lua_createtable(L, 0, (int)json_object_size(j));
        json_object_foreach (j, k, v) {
            lua_pushlstring(L, k, json_object_iter_key_len(json_object_key_to_iter(k)));
            lm_lua_push_json(L, v, depth + 1);
            lua_rawset(L, -3);
        }
        return;
    }
    case JSON_ARRAY: {
        size_t i, n = json_array_size(j);
        lua_createtable(L, (int)n, 0);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &lm_lua_array_key);
        lua_setmetatable(L, -2);
        for (i = 0; i < n; i++) {
            lm_lua_push_json(L, json_array_get(j, i), depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return;
    }
    case JSON_STRING: lua_pushlstring(L, json_string_value(j), json_string_length(j)); return;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(j)); return;
    case JSON_REAL: lua_pushnumber(L, json_real_value(j)); return;
    case JSON_TRUE: lua_pushboolean(L, 1); return;
    case JSON_FALSE: lua_pushboolean(L, 0); return;
    default: lm_lua_pushnull(L); return;
    }
}
