/*
 * encode.c - Lua values to JSON: as text for lm.json.encode (built in a
 * capped buffer, sbuf.c) and as Jansson values for stage outputs. No
 * metamethods run; pending tables are materialised first (lazy.c).
 * Thread: the worker owning the state; inside protected calls. Jansson
 * values are attached to the caller's root, which the caller frees.
 */
#include "lua/encode.h"
#include "lua/sbuf.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- JSON encode ---- */

static void enc_string(lua_State *L, lm_lua_sbuf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    if (!lm_lua_utf8_ok(s, n))
        luaL_error(L, "lm.json.encode: invalid UTF-8 in a string");
    lm_lua_sbuf_need(L, b, n + 2);
    b->p[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        if (c >= 0x20 && c != '"' && c != '\\') {
            lm_lua_sbuf_addc(L, b, (char)c);
            continue;
        }
        switch (c) {
        case '"': lm_lua_sbuf_add(L, b, "\\\"", 2); break;
        case '\\': lm_lua_sbuf_add(L, b, "\\\\", 2); break;
        case '\n': lm_lua_sbuf_add(L, b, "\\n", 2); break;
        case '\r': lm_lua_sbuf_add(L, b, "\\r", 2); break;
        case '\t': lm_lua_sbuf_add(L, b, "\\t", 2); break;
        case '\b': lm_lua_sbuf_add(L, b, "\\b", 2); break;
        case '\f': lm_lua_sbuf_add(L, b, "\\f", 2); break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            lm_lua_sbuf_add(L, b, esc, 6);
        }
    }
    lm_lua_sbuf_addc(L, b, '"');
}

static void enc_value(lua_State *L, lm_lua_sbuf_t *b, int idx, int depth)
{
    char num[64];
    size_t n, len;
    int kind;

    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: lm_lua_sbuf_add(L, b, "null", 4); return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            lm_lua_sbuf_add(L, b, "true", 4);
        else
            lm_lua_sbuf_add(L, b, "false", 5);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lm_lua_isnull(L, idx)) {
            lm_lua_sbuf_add(L, b, "null", 4);
            return;
        }
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            n = (size_t)snprintf(num, sizeof(num), "%lld", (long long)lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            if (!isfinite(d))
                luaL_error(L, "lm.json.encode: cannot encode NaN or infinity");
            n = (size_t)snprintf(num, sizeof(num), "%.17g", d);
            if (!strpbrk(num, ".eE"))
                num[n++] = '.', num[n++] = '0', num[n] = 0;
        }
        lm_lua_sbuf_add(L, b, num, n);
        return;
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &len);
        enc_string(L, b, s, len);
        return;
    }
    case LUA_TTABLE:
        if (depth >= LM_LUA_JSON_DEPTH)
            luaL_error(L, "lm.json.encode: nested deeper than %d", LM_LUA_JSON_DEPTH);
        luaL_checkstack(L, 4, "json depth");
        kind = lm_lua_table_kind(L, idx, &len);
        if (kind < 0)
            luaL_error(L, "lm.json.encode: a table mixes array and object keys");
        if (kind == 1) {
            lm_lua_sbuf_addc(L, b, '[');
            for (size_t i = 1; i <= len; i++) {
                if (i > 1)
                    lm_lua_sbuf_addc(L, b, ',');
                lua_rawgeti(L, idx, (lua_Integer)i);
                enc_value(L, b, -1, depth + 1);
                lua_pop(L, 1);
            }
            lm_lua_sbuf_addc(L, b, ']');
            return;
        }
        lm_lua_sbuf_addc(L, b, '{');
        n = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            const char *k;
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "lm.json.encode: object keys must be strings");
            if (n++)
                lm_lua_sbuf_addc(L, b, ',');
            k = lua_tolstring(L, -2, &len);
            enc_string(L, b, k, len);
            lm_lua_sbuf_addc(L, b, ':');
            enc_value(L, b, -1, depth + 1);
            lua_pop(L, 1);
        }
        lm_lua_sbuf_addc(L, b, '}');
        return;
    default: break;
    }
    luaL_error(L, "lm.json.encode: cannot encode a %s", luaL_typename(L, idx));
}

int lm_lua_json_encode(lua_State *L)
{
    lm_lua_sbuf_t *b;

    luaL_checkany(L, 1);
    lua_settop(L, 1);
    b = lm_lua_sbuf_new(L);
    enc_value(L, b, 1, 0);
    lm_lua_sbuf_push(L, b);
    return 1;
}

/* ---- Lua -> Jansson ---- */

/* Attach v to parent (array append, or object key k/kl) or to *root. v is
 * attached before a container is filled, so a Lua error while filling
 * leaks nothing: the caller frees the root. */
void lm_lua_tj_attach(lua_State *L, json_t *v, json_t *parent, const char *k, size_t kl,
                      json_t **root)
{
    if (!v)
        luaL_error(L, "out of memory");
    if (!parent)
        *root = v;
    else if (json_is_array(parent) ? json_array_append_new(parent, v)
                                   : json_object_setn_new(parent, k, kl, v))
        luaL_error(L, "out of memory");
}

/* The Lua value at idx to JSON, attached as lm_lua_tj_attach says. No metamethods
 * run (pending tables are materialised by lm_lua_table_kind). `what` names
 * the value in error messages. */
void lm_lua_to_json(lua_State *L, int idx, int depth, const char *what, json_t *parent,
                    const char *k, size_t kl, json_t **root)
{
    json_t *v;
    size_t n;
    int kind;

    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: lm_lua_tj_attach(L, json_null(), parent, k, kl, root); return;
    case LUA_TBOOLEAN:
        lm_lua_tj_attach(L, json_boolean(lua_toboolean(L, idx)), parent, k, kl, root);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lm_lua_isnull(L, idx)) {
            lm_lua_tj_attach(L, json_null(), parent, k, kl, root);
            return;
        }
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v = json_integer((json_int_t)lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            if (d != d || d - d != 0)
                luaL_error(L, "%s: cannot convert NaN or infinity to JSON", what);
            v = json_real(d);
        }
        lm_lua_tj_attach(L, v, parent, k, kl, root);
        return;
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &n);
        if (!lm_lua_utf8_ok(s, n))
            luaL_error(L, "%s: invalid UTF-8 in a string", what);
        lm_lua_tj_attach(L, json_stringn(s, n), parent, k, kl, root);
        return;
    }
    case LUA_TTABLE:
        if (depth >= LM_LUA_JSON_DEPTH)
            luaL_error(L, "%s: nested deeper than %d", what, LM_LUA_JSON_DEPTH);
        if (!lua_checkstack(L, 4))
            luaL_error(L, "%s: stack overflow", what);
        kind = lm_lua_table_kind(L, idx, &n);
        if (kind < 0)
            luaL_error(L, "%s: a table mixes array and object keys", what);
        v = kind ? json_array() : json_object();
        lm_lua_tj_attach(L, v, parent, k, kl, root);
        if (kind) {
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, (lua_Integer)i);
                lm_lua_to_json(L, -1, depth + 1, what, v, NULL, 0, NULL);
                lua_pop(L, 1);
            }
            return;
        }
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            const char *key;
            size_t klen;
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "%s: object keys must be strings (got a %s)", what,
                           luaL_typename(L, -2));
            key = lua_tolstring(L, -2, &klen);
            if (!lm_lua_utf8_ok(key, klen))
                luaL_error(L, "%s: invalid UTF-8 in a key", what);
            lm_lua_to_json(L, -1, depth + 1, what, v, key, klen, NULL);
            lua_pop(L, 1);
        }
        return;
    default: break;
    }
    luaL_error(L, "%s: cannot convert a %s to JSON", what, luaL_typename(L, idx));
}

/* Converts the table at idx to a JSON object in *root (must be an object). */
void lm_lua_to_json_object(lua_State *L, int idx, const char *what, json_t **root)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_error(L, "%s must be a table", what);
    lm_lua_to_json(L, idx, 0, what, NULL, NULL, 0, root);
    if (!json_is_object(*root)) {
        if (json_is_array(*root) && json_array_size(*root) == 0) {
            json_decref(*root);
            *root = json_object();
            if (!*root)
                luaL_error(L, "out of memory");
            return;
        }
        luaL_error(L, "%s must be an object, not an array", what);
    }
}

/* Replace the members of dst with those of src (both objects). */
int lm_lua_replace_object(json_t *dst, json_t *src)
{
    if (dst == src)
        return 0;
    json_object_clear(dst);
    return json_object_update(dst, src);
}
