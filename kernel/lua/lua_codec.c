/*
 * lua_codec.c - lm.json.encode/decode, lm.base64.encode/decode, Jansson
 * values as Lua values, and lazy stage arguments (pending tables that are
 * converted only when a script looks at them; see lua_int.h).
 *
 * Text is built in a buffer allocated with the state's own allocator (so it
 * counts against the memory cap) and owned by a userdata whose __gc frees
 * it, so a Lua error in the middle (memory cap, bad value) leaks nothing.
 * That __gc is host code: scripts can neither reach nor set finalizers.
 * Thread: the worker owning the state; called inside protected calls.
 */
#include "lua/lua_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char lm_lua_array_key = 'A';

/* ---- a capped byte buffer ---- */

typedef struct sb_s {
    char *p;
    size_t len;
    size_t cap;
    lua_Alloc f;
    void *ud;
} sb_t;

static int sb_gc(lua_State *L)
{
    sb_t *b = lua_touserdata(L, 1);
    if (b && b->p) {
        b->f(b->ud, b->p, b->cap, 0);
        b->p = NULL;
        b->cap = b->len = 0;
    }
    return 0;
}

/* Pushes the owning userdata. */
static sb_t *sb_new(lua_State *L)
{
    sb_t *b = lua_newuserdatauv(L, sizeof(*b), 0);

    memset(b, 0, sizeof(*b));
    b->f = lua_getallocf(L, &b->ud);
    if (luaL_newmetatable(L, "lm.sbuf")) {
        lua_pushcfunction(L, sb_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

static void sb_need(lua_State *L, sb_t *b, size_t n)
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

static void sb_add(lua_State *L, sb_t *b, const void *p, size_t n)
{
    sb_need(L, b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void sb_addc(lua_State *L, sb_t *b, char c)
{
    sb_need(L, b, 1);
    b->p[b->len++] = c;
}

/* Frees the bytes now instead of at the owner's collection. */
static void sb_free(sb_t *b)
{
    if (b->p) {
        b->f(b->ud, b->p, b->cap, 0);
        b->p = NULL;
        b->cap = b->len = 0;
    }
}

/* Pushes the content as a string and frees the buffer. */
static void sb_push(lua_State *L, sb_t *b)
{
    lua_pushlstring(L, b->p ? b->p : "", b->len);
    sb_free(b);
}

/* ---- shared helpers ---- */

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

int lm_lua_table_kind(lua_State *L, int idx, size_t *n)
{
    size_t count = 0, len;
    int marked = 0, intkeys = 1;

    idx = lua_absindex(L, idx);
    lm_lua_touch(L, idx);
    len = (size_t)lua_rawlen(L, idx);
    if (lua_getmetatable(L, idx)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &lm_lua_array_key);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 ||
            (lua_Unsigned)lua_tointeger(L, -2) > len)
            intkeys = 0;
        lua_pop(L, 1);
    }
    *n = len;
    if (count == 0)
        return marked;
    if (intkeys && count == len)
        return 1;
    return marked ? -1 : 0; /* an object; its keys are checked by the caller */
}

/* ---- JSON encode ---- */

static void enc_string(lua_State *L, sb_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    if (!lm_lua_utf8_ok(s, n))
        luaL_error(L, "lm.json.encode: invalid UTF-8 in a string");
    sb_need(L, b, n + 2);
    b->p[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        if (c >= 0x20 && c != '"' && c != '\\') {
            sb_addc(L, b, (char)c);
            continue;
        }
        switch (c) {
        case '"': sb_add(L, b, "\\\"", 2); break;
        case '\\': sb_add(L, b, "\\\\", 2); break;
        case '\n': sb_add(L, b, "\\n", 2); break;
        case '\r': sb_add(L, b, "\\r", 2); break;
        case '\t': sb_add(L, b, "\\t", 2); break;
        case '\b': sb_add(L, b, "\\b", 2); break;
        case '\f': sb_add(L, b, "\\f", 2); break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            sb_add(L, b, esc, 6);
        }
    }
    sb_addc(L, b, '"');
}

static void enc_value(lua_State *L, sb_t *b, int idx, int depth)
{
    char num[64];
    size_t n, len;
    int kind;

    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: sb_add(L, b, "null", 4); return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            sb_add(L, b, "true", 4);
        else
            sb_add(L, b, "false", 5);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lm_lua_isnull(L, idx)) {
            sb_add(L, b, "null", 4);
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
        sb_add(L, b, num, n);
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
            sb_addc(L, b, '[');
            for (size_t i = 1; i <= len; i++) {
                if (i > 1)
                    sb_addc(L, b, ',');
                lua_rawgeti(L, idx, (lua_Integer)i);
                enc_value(L, b, -1, depth + 1);
                lua_pop(L, 1);
            }
            sb_addc(L, b, ']');
            return;
        }
        sb_addc(L, b, '{');
        n = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            const char *k;
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "lm.json.encode: object keys must be strings");
            if (n++)
                sb_addc(L, b, ',');
            k = lua_tolstring(L, -2, &len);
            enc_string(L, b, k, len);
            sb_addc(L, b, ':');
            enc_value(L, b, -1, depth + 1);
            lua_pop(L, 1);
        }
        sb_addc(L, b, '}');
        return;
    default: break;
    }
    luaL_error(L, "lm.json.encode: cannot encode a %s", luaL_typename(L, idx));
}

int lm_lua_json_encode(lua_State *L)
{
    sb_t *b;

    luaL_checkany(L, 1);
    lua_settop(L, 1);
    b = sb_new(L);
    enc_value(L, b, 1, 0);
    sb_push(L, b);
    return 1;
}

/* ---- JSON decode ---- */

typedef struct jd_s {
    lua_State *L;
    const char *p;
    const char *end;
    sb_t *b;
    const char *err; /* set on malformed input */
} jd_t;

static void jd_ws(jd_t *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

static int jd_hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void jd_utf8(jd_t *d, unsigned cp)
{
    char u[4];
    int n;

    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    sb_add(d->L, d->b, u, (size_t)n);
}

/* d->p at the opening quote; pushes the string or sets d->err. */
static int jd_string(jd_t *d)
{
    const char *p = d->p + 1;

    d->b->len = 0;
    while (p < d->end && *p != '"') {
        const char *q = p;
        while (q < d->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
            q++;
        if (!lm_lua_utf8_ok(p, (size_t)(q - p)))
            return d->err = "invalid UTF-8 in a string", -1;
        sb_add(d->L, d->b, p, (size_t)(q - p));
        p = q;
        if (p >= d->end || *p == '"')
            break;
        if ((unsigned char)*p < 0x20)
            return d->err = "control character in a string", -1;
        /* an escape */
        if (d->end - p < 2)
            return d->err = "unterminated string", -1;
        p++;
        switch (*p++) {
        case '"': sb_addc(d->L, d->b, '"'); break;
        case '\\': sb_addc(d->L, d->b, '\\'); break;
        case '/': sb_addc(d->L, d->b, '/'); break;
        case 'b': sb_addc(d->L, d->b, '\b'); break;
        case 'f': sb_addc(d->L, d->b, '\f'); break;
        case 'n': sb_addc(d->L, d->b, '\n'); break;
        case 'r': sb_addc(d->L, d->b, '\r'); break;
        case 't': sb_addc(d->L, d->b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (d->end - p < 4 || jd_hex4(p, &cp))
                return d->err = "bad \\u escape", -1;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (d->end - p < 6 || p[0] != '\\' || p[1] != 'u' || jd_hex4(p + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return d->err = "lone surrogate in a \\u escape", -1;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return d->err = "lone surrogate in a \\u escape", -1;
            }
            jd_utf8(d, cp);
            break;
        }
        default: return d->err = "bad escape in a string", -1;
        }
    }
    if (p >= d->end)
        return d->err = "unterminated string", -1;
    d->p = p + 1;
    lua_pushlstring(d->L, d->b->p ? d->b->p : "", d->b->len);
    return 0;
}

static int jd_number(jd_t *d)
{
    const char *p = d->p, *s = p;
    int isint = 1;
    char tmp[64];

    if (p < d->end && *p == '-')
        p++;
    if (p < d->end && *p == '0')
        p++;
    else if (p < d->end && *p >= '1' && *p <= '9')
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
    else
        return d->err = "bad number", -1;
    if (p < d->end && *p == '.') {
        isint = 0;
        p++;
        if (p >= d->end || *p < '0' || *p > '9')
            return d->err = "bad number", -1;
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < d->end && (*p == 'e' || *p == 'E')) {
        isint = 0;
        p++;
        if (p < d->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= d->end || *p < '0' || *p > '9')
            return d->err = "bad number", -1;
        while (p < d->end && *p >= '0' && *p <= '9')
            p++;
    }
    if ((size_t)(p - s) >= sizeof(tmp))
        return d->err = "number too long", -1;
    memcpy(tmp, s, (size_t)(p - s));
    tmp[p - s] = 0;
    d->p = p;
    if (isint) {
        char *e;
        long long v;
        errno = 0;
        v = strtoll(tmp, &e, 10);
        if (errno != ERANGE && *e == 0) {
            lua_pushinteger(d->L, (lua_Integer)v);
            return 0;
        }
        /* out of range: fall back to a float */
    }
    lua_pushnumber(d->L, strtod(tmp, NULL));
    return 0;
}

static int jd_value(jd_t *d, int depth);

/* d->p at '{' or '['; fills the table at absolute index t (the caller
 * creates it, so a pending table can be filled in place). */
static int jd_container(jd_t *d, int depth, int t)
{
    lua_State *L = d->L;
    int obj = (*d->p == '{');
    lua_Integer i = 1;

    if (depth >= LM_LUA_JSON_DEPTH)
        return d->err = "nested too deep", -1;
    luaL_checkstack(L, 4, "json depth");
    d->p++;
    jd_ws(d);
    if (d->p < d->end && *d->p == (obj ? '}' : ']')) {
        d->p++;
        return 0;
    }
    for (;;) {
        jd_ws(d);
        if (obj) {
            if (d->p >= d->end || *d->p != '"')
                return d->err = "expected a string key", -1;
            if (jd_string(d))
                return -1;
            jd_ws(d);
            if (d->p >= d->end || *d->p != ':')
                return d->err = "expected ':'", -1;
            d->p++;
        }
        if (jd_value(d, depth + 1))
            return -1;
        if (obj)
            lua_rawset(L, t);
        else
            lua_rawseti(L, t, i++);
        jd_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == (obj ? '}' : ']')) {
            d->p++;
            return 0;
        }
        return d->err = obj ? "expected ',' or '}'" : "expected ',' or ']'", -1;
    }
}

static int jd_value(jd_t *d, int depth)
{
    lua_State *L = d->L;

    jd_ws(d);
    if (d->p >= d->end)
        return d->err = "unexpected end of input", -1;
    switch (*d->p) {
    case '{':
    case '[':
        luaL_checkstack(L, 4, "json depth");
        lua_newtable(L);
        if (*d->p == '[') {
            lua_rawgetp(L, LUA_REGISTRYINDEX, &lm_lua_array_key);
            lua_setmetatable(L, -2);
        }
        return jd_container(d, depth, lua_gettop(L));
    case '"': return jd_string(d);
    case 't':
        if (d->end - d->p >= 4 && memcmp(d->p, "true", 4) == 0) {
            d->p += 4;
            lua_pushboolean(L, 1);
            return 0;
        }
        break;
    case 'f':
        if (d->end - d->p >= 5 && memcmp(d->p, "false", 5) == 0) {
            d->p += 5;
            lua_pushboolean(L, 0);
            return 0;
        }
        break;
    case 'n':
        if (d->end - d->p >= 4 && memcmp(d->p, "null", 4) == 0) {
            d->p += 4;
            lm_lua_pushnull(L);
            return 0;
        }
        break;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
            return jd_number(d);
    }
    return d->err = "unexpected character", -1;
}

/* lm.json.decode(s) -> value | nil, "message at byte N" */
int lm_lua_json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    jd_t d;

    lua_settop(L, 1);
    d.L = L;
    d.p = s;
    d.end = s + n;
    d.err = NULL;
    d.b = sb_new(L); /* index 2 */
    if (jd_value(&d, 0) == 0) {
        jd_ws(&d);
        if (d.p == d.end) {
            sb_free(d.b);
            return 1;
        }
        d.err = "trailing characters";
    }
    lua_settop(L, 2);
    lua_pushnil(L);
    lua_pushfstring(L, "lm.json.decode: %s at byte %d", d.err, (int)(d.p - s) + 1);
    return 2;
}

/* ---- lazy values: keys ---- */

static const char lazy_mt_key = 'P';   /* registry: metatable of pending tables */
static const char lazy_src_key = 'S';  /* in a pending table: its source */
static const char lazy_kind_key = 'K'; /* in a pending table over an anchor: the kind */
static const char anchor_mt_key = 'R'; /* registry: metatable of anchors */

static int params_key(const char *k, size_t n)
{
    return (n == 5 && memcmp(k, "model", 5) == 0) || (n == 8 && memcmp(k, "messages", 8) == 0);
}

/* ---- Jansson -> Lua ---- */

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

/* ---- does a Lua value still say what a Jansson value says? ---- */

static int same_value(lua_State *L, int idx, const json_t *j, unsigned flags, int depth);

/* Members of object j that a table is compared with. */
static size_t object_members(const json_t *j, unsigned flags)
{
    size_t n = json_object_size(j);
    if (flags & LM_LUA_LAZY_PARAMS)
        n -= (size_t)(json_object_get(j, "model") != NULL) +
             (size_t)(json_object_get(j, "messages") != NULL);
    return n;
}

static int same_object(lua_State *L, int idx, const json_t *j, unsigned flags, int depth)
{
    size_t count = 0;

    if (!json_is_object(j))
        return 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k;
        size_t kl;
        const json_t *v;
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            return 0;
        }
        k = lua_tolstring(L, -2, &kl);
        if (!((flags & LM_LUA_LAZY_PARAMS) && params_key(k, kl))) {
            v = json_object_getn(j, k, kl);
            if (!v || !same_value(L, -1, v, 0, depth + 1)) {
                lua_pop(L, 2);
                return 0;
            }
            count++;
        }
        lua_pop(L, 1);
    }
    return count == object_members(j, flags);
}

static int same_array(lua_State *L, int idx, const json_t *j, size_t n, int depth)
{
    if (!json_is_array(j) || json_array_size(j) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int same;
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        same = same_value(L, -1, json_array_get(j, i), 0, depth + 1);
        lua_pop(L, 1);
        if (!same)
            return 0;
    }
    return 1;
}

static int same_table(lua_State *L, int idx, const json_t *j, unsigned flags, int depth)
{
    size_t n;
    int kind;

    /* the walk follows j, which is finite; the guard only bounds the C stack */
    if (depth > LM_LUA_JSON_DEPTH + 1)
        return 0;
    if (lua_rawgetp(L, idx, &lazy_src_key) == LUA_TUSERDATA) {
        const lm_lua_anchor_t *a = lua_touserdata(L, -1);
        unsigned how;
        int same;
        lua_rawgetp(L, idx, &lazy_kind_key);
        how = (unsigned)lua_tointeger(L, -1);
        same =
            !(how & LM_LUA_LAZY_VIEW) && a->j[how & 3] == j && (how & LM_LUA_LAZY_PARAMS) == flags;
        lua_pop(L, 2);
        if (same)
            return 1; /* never looked at: nothing to walk */
    } else {
        lua_pop(L, 1);
    }
    luaL_checkstack(L, 4, "JSON depth");
    kind = lm_lua_table_kind(L, idx, &n);
    if (kind == 1)
        return !(flags & LM_LUA_LAZY_PARAMS) && same_array(L, idx, j, n, depth);
    return kind == 0 && same_object(L, idx, j, flags, depth);
}

static int same_value(lua_State *L, int idx, const json_t *j, unsigned flags, int depth)
{
    size_t n;
    const char *s;
    double d;

    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: return json_is_boolean(j) && lua_toboolean(L, idx) == json_is_true(j);
    case LUA_TLIGHTUSERDATA: return lm_lua_isnull(L, idx) && json_is_null(j);
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_is_integer(j) && json_integer_value(j) == lua_tointeger(L, idx);
        d = lua_tonumber(L, idx);
        return json_is_real(j) && json_real_value(j) == d &&
               !signbit(json_real_value(j)) == !signbit(d);
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &n);
        return json_is_string(j) && json_string_length(j) == n &&
               memcmp(json_string_value(j), s, n) == 0;
    case LUA_TTABLE: return same_table(L, idx, j, flags, depth);
    default: return 0;
    }
}

int lm_lua_same_json(lua_State *L, int idx, const json_t *j, unsigned flags)
{
    return j && same_value(L, idx, j, flags, 0);
}

/* ---- lazy values ---- */

/* Rough bytes a value takes once converted: what a pending table that a
 * script keeps stands for when charged against the memory cap. */
static size_t json_cost(json_t *j, int depth)
{
    size_t n = 16, i;
    const char *k;
    json_t *v;

    if (j == NULL || depth > LM_LUA_JSON_DEPTH)
        return n;
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        n += 56;
        json_object_foreach (j, k, v)
            n +=
                40 + json_object_iter_key_len(json_object_key_to_iter(k)) + json_cost(v, depth + 1);
        return n;
    case JSON_ARRAY:
        n += 56;
        json_array_foreach (j, i, v)
            n += 16 + json_cost(v, depth + 1);
        return n;
    case JSON_STRING: return n + 24 + json_string_length(j);
    default: return n;
    }
}

size_t lm_lua_json_cost(json_t *j)
{
    return json_cost(j, 0);
}

static int anchor_gc(lua_State *L)
{
    lm_lua_anchor_t *a = lua_touserdata(L, 1);

    if (a == NULL)
        return 0;
    for (int i = 0; i < LM_LUA_ANCHOR_SLOTS; i++) {
        json_decref(a->j[i]);
        a->j[i] = NULL;
    }
    if (a->charged) {
        lm_lua_mem_uncharge(L, a->charged);
        a->charged = 0;
    }
    return 0;
}

lm_lua_anchor_t *lm_lua_push_anchor(lua_State *L, size_t cost, int nuv)
{
    lm_lua_anchor_t *a = lua_newuserdatauv(L, sizeof(*a), nuv);

    memset(a, 0, sizeof(*a));
    lua_rawgetp(L, LUA_REGISTRYINDEX, &anchor_mt_key);
    lua_setmetatable(L, -2);
    lm_lua_mem_charge(L, cost); /* may raise: the anchor holds nothing yet */
    a->charged = cost;
    return a;
}

lm_lua_anchor_t *lm_lua_to_anchor(lua_State *L, int idx)
{
    lm_lua_anchor_t *a = lua_touserdata(L, idx);
    int ok;

    if (a == NULL || lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
        return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &anchor_mt_key);
    ok = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return ok ? a : NULL;
}

int lm_lua_anchor_snapshot(lm_lua_anchor_t *a, int slot)
{
    json_t *copy;

    if (!json_is_object(a->j[slot]))
        return 0;
    copy = json_copy(a->j[slot]); /* shallow: the members are shared, not copied */
    if (copy == NULL)
        return -1;
    json_decref(a->j[slot]);
    a->j[slot] = copy;
    return 0;
}

void lm_lua_push_lazy(lua_State *L, int src, unsigned kind)
{
    src = lua_absindex(L, src);
    lua_createtable(L, 0, kind ? 2 : 1);
    lua_pushvalue(L, src);
    lua_rawsetp(L, -2, &lazy_src_key);
    if (kind) {
        lua_pushinteger(L, (lua_Integer)kind);
        lua_rawsetp(L, -2, &lazy_kind_key);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
    lua_setmetatable(L, -2);
}

void lm_lua_push_lazy_text(lua_State *L, const char *json, size_t len)
{
    lua_pushlstring(L, json, len);
    lm_lua_push_lazy(L, -1, 0);
    lua_remove(L, -2);
}

void lm_lua_push_lazy_text_with(lua_State *L, const char *json, size_t len, const char *field,
                                const char *raw, size_t n)
{
    lua_createtable(L, 3, 0);
    lua_pushlstring(L, json, len);
    lua_rawseti(L, -2, 1);
    lua_pushstring(L, field);
    lua_rawseti(L, -2, 2);
    lua_pushlstring(L, raw, n);
    lua_rawseti(L, -2, 3);
    lm_lua_push_lazy(L, -1, 0);
    lua_remove(L, -2);
}

int lm_lua_lazy_pending(lua_State *L, int idx)
{
    int r;

    if (lua_type(L, idx) != LUA_TTABLE)
        return 0;
    r = lua_rawgetp(L, idx, &lazy_src_key) != LUA_TNIL;
    lua_pop(L, 1);
    return r;
}

/* Decodes the text at src into the table t; returns 1 for an array. */
static int fill_text(lua_State *L, int t, int src)
{
    size_t n;
    const char *s = lua_tolstring(L, src, &n);
    jd_t d = {L, s, s + n, NULL, NULL};
    int array;

    d.b = sb_new(L);
    jd_ws(&d);
    array = d.p < d.end && *d.p == '[';
    if (d.p >= d.end || (*d.p != '{' && *d.p != '['))
        d.err = "expected an object or an array";
    else if (jd_container(&d, 0, t) == 0) {
        jd_ws(&d);
        if (d.p != d.end)
            d.err = "trailing characters";
    }
    if (d.err)
        luaL_error(L, "invalid JSON from the gateway (%s at byte %d)", d.err, (int)(d.p - s) + 1);
    sb_free(d.b);
    lua_pop(L, 1);
    return array;
}

/* Converts JSON j (an object or an array at nesting level depth) into the
 * table t; returns 1 for an array. */
static int fill_json(lua_State *L, int t, json_t *j, unsigned kind, int depth)
{
    const char *k;
    json_t *v;
    size_t i;

    if (json_is_array(j)) {
        json_array_foreach (j, i, v) {
            lm_lua_push_json(L, v, depth + 1);
            lua_rawseti(L, t, (lua_Integer)i + 1);
        }
        return 1;
    }
    json_object_foreach (j, k, v) {
        size_t kl = json_object_iter_key_len(json_object_key_to_iter(k));
        if ((kind & LM_LUA_LAZY_PARAMS) && params_key(k, kl))
            continue;
        lua_pushlstring(L, k, kl);
        lm_lua_push_json(L, v, depth + 1);
        lua_rawset(L, t);
    }
    return 0;
}

/* Fills t from the anchor at src for kind; returns 1 for an array. */
static int fill_anchor(lua_State *L, int t, int src, unsigned kind)
{
    lm_lua_anchor_t *a = lua_touserdata(L, src);
    int slot = (int)(kind & 3);

    if (kind & LM_LUA_LAZY_VIEW) {
        if (a->fill)
            a->fill(L, t, src, a);
        return 0;
    }
    return a->j[slot] ? fill_json(L, t, a->j[slot], kind, a->depth[slot]) : 0;
}

void lm_lua_touch(lua_State *L, int idx)
{
    int t, array = 0;
    unsigned kind;

    if (lua_type(L, idx) != LUA_TTABLE)
        return;
    t = lua_absindex(L, idx);
    if (lua_rawgetp(L, t, &lazy_src_key) == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    luaL_checkstack(L, 8, "lazy value");
    lua_rawgetp(L, t, &lazy_kind_key);
    kind = (unsigned)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
        array = fill_text(L, t, lua_gettop(L));
    } else if (lua_type(L, -1) == LUA_TTABLE) { /* {text, field, raw} */
        lua_rawgeti(L, -1, 1);
        array = fill_text(L, t, lua_gettop(L));
        lua_rawgeti(L, -2, 2);
        lua_rawgeti(L, -3, 3);
        lua_rawset(L, t);
        lua_pop(L, 1);
    } else {
        array = fill_anchor(L, t, lua_gettop(L), kind);
    }
    lua_pop(L, 1);
    /* now an ordinary table: drop the source and the pending metatable
     * (none of these steps allocates, so it is never left half-way) */
    lua_pushnil(L);
    lua_rawsetp(L, t, &lazy_src_key);
    lua_pushnil(L);
    lua_rawsetp(L, t, &lazy_kind_key);
    if (array)
        lua_rawgetp(L, LUA_REGISTRYINDEX, &lm_lua_array_key);
    else
        lua_pushnil(L);
    lua_setmetatable(L, t);
}

/* The pending metatable: every access materialises, then acts raw. */
static int lazy_index(lua_State *L)
{
    lm_lua_touch(L, 1);
    lua_settop(L, 2);
    lua_rawget(L, 1);
    return 1;
}

static int lazy_newindex(lua_State *L)
{
    lm_lua_touch(L, 1);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 0;
}

static int lazy_len(lua_State *L)
{
    lm_lua_touch(L, 1);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
    return 1;
}

static int lazy_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1))
        return 2;
    lua_pushnil(L);
    return 1;
}

static int lazy_pairs(lua_State *L)
{
    lm_lua_touch(L, 1);
    lua_pushcfunction(L, lazy_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

void lm_lua_lazy_open(lua_State *L)
{
    static const luaL_Reg mt[] = {{"__index", lazy_index},
                                  {"__newindex", lazy_newindex},
                                  {"__len", lazy_len},
                                  {"__pairs", lazy_pairs},
                                  {NULL, NULL}};

    lua_createtable(L, 0, 5);
    luaL_setfuncs(L, mt, 0);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, anchor_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &anchor_mt_key);
}

/* ---- base64 (standard alphabet) ---- */

static const char b64_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int lm_lua_b64_encode(lua_State *L)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    size_t i;

    luaL_buffinit(L, &b);
    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        char o[4] = {b64_alpha[v >> 18], b64_alpha[(v >> 12) & 63], b64_alpha[(v >> 6) & 63],
                     b64_alpha[v & 63]};
        luaL_addlstring(&b, o, 4);
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        char o[4] = {b64_alpha[v >> 18], b64_alpha[(v >> 12) & 63],
                     i + 1 < n ? b64_alpha[(v >> 6) & 63] : '=', '='};
        luaL_addlstring(&b, o, 4);
    }
    luaL_pushresult(&b);
    return 1;
}

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Accepts the standard and URL alphabets, with or without padding.
 * Returns the bytes, or nil + message. */
int lm_lua_b64_decode(lua_State *L)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    unsigned acc = 0;
    int bits = 0;

    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        goto bad;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        int v = b64_val(s[i]);
        if (v < 0)
            goto bad;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            luaL_addchar(&b, (char)((acc >> bits) & 0xFF));
        }
    }
    luaL_pushresult(&b);
    return 1;
bad:
    lua_pushnil(L);
    lua_pushliteral(L, "lm.base64.decode: invalid base64");
    return 2;
}
