/*
 * decode.c - JSON text to Lua values: lm.json.decode, and the fill of a
 * pending table from its source text (lazy.c). Strict RFC 8259: UTF-8
 * checked, lone surrogates refused, depth limited.
 * Thread: the worker owning the state; inside protected calls. Scratch
 * text lives in a capped buffer owned by a userdata (sbuf.c).
 */
#include "lua/decode.h"
#include "lua/sbuf.h"
#include "lua/values.h"

#include <lauxlib.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct jd_s {
    lua_State *L;
    const char *p;
    const char *end;
    lm_lua_sbuf_t *b;
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
    lm_lua_sbuf_add(d->L, d->b, u, (size_t)n);
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
        lm_lua_sbuf_add(d->L, d->b, p, (size_t)(q - p));
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
        case '"': lm_lua_sbuf_addc(d->L, d->b, '"'); break;
        case '\\': lm_lua_sbuf_addc(d->L, d->b, '\\'); break;
        case '/': lm_lua_sbuf_addc(d->L, d->b, '/'); break;
        case 'b': lm_lua_sbuf_addc(d->L, d->b, '\b'); break;
        case 'f': lm_lua_sbuf_addc(d->L, d->b, '\f'); break;
        case 'n': lm_lua_sbuf_addc(d->L, d->b, '\n'); break;
        case 'r': lm_lua_sbuf_addc(d->L, d->b, '\r'); break;
        case 't': lm_lua_sbuf_addc(d->L, d->b, '\t'); break;
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
    d.b = lm_lua_sbuf_new(L); /* index 2 */
    if (jd_value(&d, 0) == 0) {
        jd_ws(&d);
        if (d.p == d.end) {
            lm_lua_sbuf_free(d.b);
            return 1;
        }
        d.err = "trailing characters";
    }
    lua_settop(L, 2);
    lua_pushnil(L);
    lua_pushfstring(L, "lm.json.decode: %s at byte %d", d.err, (int)(d.p - s) + 1);
    return 2;
}

/* Decodes the text at src into the table t; returns 1 for an array. */
int lm_lua_json_fill(lua_State *L, int t, int src)
{
    size_t n;
    const char *s = lua_tolstring(L, src, &n);
    jd_t d = {L, s, s + n, NULL, NULL};
    int array;

    d.b = lm_lua_sbuf_new(L);
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
    lm_lua_sbuf_free(d.b);
    lua_pop(L, 1);
    return array;
}
