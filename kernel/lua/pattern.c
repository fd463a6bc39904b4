/*
 * pattern.c - string.find / match / gmatch / gsub for the sandbox.
 *
 * The same pattern language and results as Lua 5.4's string library, but
 * written here with a step counter: every recursive match, expansion and
 * %b scan costs one step, and the steps are charged to the running call
 * (lm_lua_charge) every few thousand, so a backtracking pattern such as
 * ("a*"):rep(20) .. "b" against 10^4 "a"s stops at the call's deadline
 * instead of running for hours inside one C function (PL-6). The Lua VM's
 * count hook cannot do this: it never fires inside a C function.
 * Thread: the worker owning the state; called inside protected calls.
 * Results are Lua values owned by the state.
 */
#include "lua/pattern.h"
#include "lua/limits.h"

#include <ctype.h>
#include <string.h>

#define PM_MAXCAP    32
#define PM_CAP_UNF   (-1)
#define PM_CAP_POS   (-2)
#define PM_MAXDEPTH  200
#define PM_CHARGE_AT 4096

typedef struct pm_s {
    const char *src_init;
    const char *src_end;
    const char *p_end;
    lua_State *L;
    int depth;      /* remaining recursion */
    int level;      /* captures open or closed */
    uint64_t steps; /* not yet charged */
    struct {
        const char *init;
        ptrdiff_t len;
    } cap[PM_MAXCAP];
} pm_t;

static const char *pm_match(pm_t *m, const char *s, const char *p);

static void pm_tick(pm_t *m)
{
    if (++m->steps >= PM_CHARGE_AT) {
        uint64_t n = m->steps;
        m->steps = 0;
        lm_lua_charge(m->L, n);
    }
}

static void pm_flush(pm_t *m)
{
    uint64_t n = m->steps;
    m->steps = 0;
    if (n)
        lm_lua_charge(m->L, n);
}

static void pm_prep(pm_t *m, lua_State *L, const char *s, size_t ls, const char *p, size_t lp)
{
    m->L = L;
    m->src_init = s;
    m->src_end = s + ls;
    m->p_end = p + lp;
    m->depth = PM_MAXDEPTH;
    m->level = 0;
    m->steps = 0;
}

static void pm_reprep(pm_t *m)
{
    m->level = 0;
    m->depth = PM_MAXDEPTH;
}

/* One past the single-character class starting at p. */
static const char *pm_class_end(pm_t *m, const char *p)
{
    char c = *p++;

    if (c == '%') {
        if (p >= m->p_end)
            luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (c == '[') {
        if (*p == '^')
            p++;
        do { /* the first character of a set is never its end */
            if (p >= m->p_end)
                luaL_error(m->L, "malformed pattern (missing ']')");
            c = *p++;
            if (c == '%' && p < m->p_end)
                p++;
        } while (*p != ']'); /* strings are NUL-terminated: *p_end is safe */
        return p + 1;
    }
    return p;
}

static int pm_class(int c, int cl)
{
    int r;

    switch (tolower(cl)) {
    case 'a': r = isalpha(c) != 0; break;
    case 'c': r = iscntrl(c) != 0; break;
    case 'd': r = isdigit(c) != 0; break;
    case 'g': r = isgraph(c) != 0; break;
    case 'l': r = islower(c) != 0; break;
    case 'p': r = ispunct(c) != 0; break;
    case 's': r = isspace(c) != 0; break;
    case 'u': r = isupper(c) != 0; break;
    case 'w': r = isalnum(c) != 0; break;
    case 'x': r = isxdigit(c) != 0; break;
    case 'z': r = (c == 0); break; /* deprecated, kept for compatibility */
    default: return cl == c;
    }
    return isupper(cl) ? !r : r;
}

/* p points at '[', ec at the closing ']'. */
static int pm_set(int c, const char *p, const char *ec)
{
    int sig = 1;

    if (p[1] == '^') {
        sig = 0;
        p++;
    }
    while (++p < ec) {
        if (*p == '%') {
            p++;
            if (pm_class(c, (unsigned char)*p))
                return sig;
        } else if (p[1] == '-' && p + 2 < ec) {
            p += 2;
            if ((unsigned char)p[-2] <= c && c <= (unsigned char)*p)
                return sig;
        } else if ((unsigned char)*p == c) {
            return sig;
        }
    }
    return !sig;
}

static int pm_single(pm_t *m, const char *s, const char *p, const char *ep)
{
    int c;

    if (s >= m->src_end)
        return 0;
    c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case '%': return pm_class(c, (unsigned char)p[1]);
    case '[': return pm_set(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

static const char *pm_balance(pm_t *m, const char *s, const char *p)
{
    int cont = 1;

    if (p >= m->p_end - 1)
        luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->src_end || *s != *p)
        return NULL;
    while (++s < m->src_end) {
        pm_tick(m);
        if (*s == p[1]) {
            if (--cont == 0)
                return s + 1;
        } else if (*s == *p) {
            cont++;
        }
    }
    return NULL;
}

static const char *pm_max_expand(pm_t *m, const char *s, const char *p, const char *ep)
{
    ptrdiff_t i = 0;

    while (pm_single(m, s + i, p, ep)) {
        i++;
        pm_tick(m);
    }
    while (i >= 0) {
        const char *r = pm_match(m, s + i, ep + 1);
        if (r)
            return r;
        i--;
    }
    return NULL;
}

static const char *pm_min_expand(pm_t *m, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *r = pm_match(m, s, ep + 1);
        if (r)
            return r;
        if (!pm_single(m, s, p, ep))
            return NULL;
        s++;
    }
}

static const char *pm_start_cap(pm_t *m, const char *s, const char *p, ptrdiff_t what)
{
    const char *r;

    if (m->level >= PM_MAXCAP)
        luaL_error(m->L, "too many captures");
    m->cap[m->level].init = s;
    m->cap[m->level].len = what;
    m->level++;
    r = pm_match(m, s, p);
    if (!r)
        m->level--;
    return r;
}

static const char *pm_end_cap(pm_t *m, const char *s, const char *p)
{
    int l;
    const char *r;

    for (l = m->level - 1; l >= 0; l--)
        if (m->cap[l].len == PM_CAP_UNF)
            break;
    if (l < 0)
        luaL_error(m->L, "invalid pattern capture");
    m->cap[l].len = s - m->cap[l].init;
    r = pm_match(m, s, p);
    if (!r)
        m->cap[l].len = PM_CAP_UNF;
    return r;
}

static const char *pm_backref(pm_t *m, const char *s, int c)
{
    int l = c - '1';
    size_t len;

    if (l < 0 || l >= m->level || m->cap[l].len == PM_CAP_UNF)
        luaL_error(m->L, "invalid capture index %%%d", l + 1);
    len = (size_t)m->cap[l].len; /* a position capture never matches */
    if ((size_t)(m->src_end - s) >= len && memcmp(m->cap[l].init, s, len) == 0)
        return s + len;
    return NULL;
}

static const char *pm_match(pm_t *m, const char *s, const char *p)
{
    const char *ep;

    if (m->depth-- == 0)
        luaL_error(m->L, "pattern too complex");
    pm_tick(m);
    while (p != m->p_end) {
        switch (*p) {
        case '(':
            if (p[1] == ')')
                s = pm_start_cap(m, s, p + 2, PM_CAP_POS);
            else
                s = pm_start_cap(m, s, p + 1, PM_CAP_UNF);
            goto done;
        case ')': s = pm_end_cap(m, s, p + 1); goto done;
        case '$':
            if (p + 1 == m->p_end) {
                s = (s == m->src_end) ? s : NULL;
                goto done;
            }
            break;
        case '%':
            if (p[1] == 'b') {
                s = pm_balance(m, s, p + 2);
                if (!s)
                    goto done;
                p += 4;
                continue;
            }
            if (p[1] == 'f') {
                char prev, cur;
                p += 2;
                if (*p != '[')
                    luaL_error(m->L, "missing '[' after '%%f' in pattern");
                ep = pm_class_end(m, p);
                prev = (s == m->src_init) ? '\0' : s[-1];
                cur = (s < m->src_end) ? *s : '\0';
                if (!pm_set((unsigned char)prev, p, ep - 1) &&
                    pm_set((unsigned char)cur, p, ep - 1)) {
                    p = ep;
                    continue;
                }
                s = NULL;
                goto done;
            }
            if (isdigit((unsigned char)p[1])) {
                s = pm_backref(m, s, (unsigned char)p[1]);
                if (!s)
                    goto done;
                p += 2;
                continue;
            }
            break;
        default: break;
        }
        /* a single-character class, maybe followed by a quantifier */
        ep = pm_class_end(m, p);
        if (!pm_single(m, s, p, ep)) {
            if (*ep == '*' || *ep == '?' || *ep == '-') {
                p = ep + 1;
                continue;
            }
            s = NULL;
            goto done;
        }
        switch (*ep) {
        case '?': {
            const char *r = pm_match(m, s + 1, ep + 1);
            if (r) {
                s = r;
                goto done;
            }
            p = ep + 1;
            continue;
        }
        case '+': s = pm_max_expand(m, s + 1, p, ep); goto done;
        case '*': s = pm_max_expand(m, s, p, ep); goto done;
        case '-': s = pm_min_expand(m, s, p, ep); goto done;
        default:
            s++;
            p = ep;
            continue;
        }
    }
done:
    m->depth++;
    return s;
}

static void pm_push_one(pm_t *m, int i, const char *s, const char *e)
{
    if (i >= m->level) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index %%%d", i + 1);
        lua_pushlstring(m->L, s, (size_t)(e - s));
        return;
    }
    if (m->cap[i].len == PM_CAP_UNF)
        luaL_error(m->L, "unfinished capture");
    if (m->cap[i].len == PM_CAP_POS)
        lua_pushinteger(m->L, (lua_Integer)(m->cap[i].init - m->src_init) + 1);
    else
        lua_pushlstring(m->L, m->cap[i].init, (size_t)m->cap[i].len);
}

/* s == NULL: only the explicit captures (find). */
static int pm_push_all(pm_t *m, const char *s, const char *e)
{
    int n = (m->level == 0 && s) ? 1 : m->level;

    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        pm_push_one(m, i, s, e);
    return n;
}

static size_t pm_posrel(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0)
        return 1;
    if (pos < -(lua_Integer)len)
        return 1;
    return len + (size_t)pos + 1;
}

static int pm_nospecials(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++)
        if (p[i] && strchr("^$*+?.([%-", p[i]))
            return 0;
    return 1;
}

static int pm_find_aux(lua_State *L, int find)
{
    size_t ls, lp, init;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *s1, *e;
    int anchor;
    pm_t m;

    init = pm_posrel(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls) {
        lua_pushnil(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || pm_nospecials(p, lp))) {
        const char *f = memmem(s + init, ls - init, p, lp);
        if (f) {
            lua_pushinteger(L, (lua_Integer)(f - s) + 1);
            lua_pushinteger(L, (lua_Integer)(f - s + (ptrdiff_t)lp));
            return 2;
        }
        lua_pushnil(L);
        return 1;
    }
    anchor = (*p == '^');
    if (anchor) {
        p++;
        lp--;
    }
    pm_prep(&m, L, s, ls, p, lp);
    s1 = s + init;
    do {
        pm_reprep(&m);
        if ((e = pm_match(&m, s1, p)) != NULL) {
            pm_flush(&m);
            if (find) {
                lua_pushinteger(L, (lua_Integer)(s1 - s) + 1);
                lua_pushinteger(L, (lua_Integer)(e - s));
                return pm_push_all(&m, NULL, NULL) + 2;
            }
            return pm_push_all(&m, s1, e);
        }
    } while (s1++ < m.src_end && !anchor);
    pm_flush(&m);
    lua_pushnil(L);
    return 1;
}

static int pm_find(lua_State *L)
{
    return pm_find_aux(L, 1);
}

static int pm_match_fn(lua_State *L)
{
    return pm_find_aux(L, 0);
}

typedef struct pm_gm_s {
    size_t pos;  /* next start offset */
    size_t last; /* end offset of the last match, or SIZE_MAX */
} pm_gm_t;

static int pm_gmatch_aux(lua_State *L)
{
    size_t ls, lp;
    const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls);
    const char *p = lua_tolstring(L, lua_upvalueindex(2), &lp);
    pm_gm_t *gm = lua_touserdata(L, lua_upvalueindex(3));
    pm_t m;

    pm_prep(&m, L, s, ls, p, lp);
    for (size_t off = gm->pos; off <= ls; off++) {
        const char *e;
        pm_reprep(&m);
        e = pm_match(&m, s + off, p);
        if (e && (gm->last == SIZE_MAX || (size_t)(e - s) != gm->last)) {
            gm->pos = gm->last = (size_t)(e - s);
            pm_flush(&m);
            return pm_push_all(&m, s + off, e);
        }
    }
    gm->pos = ls + 1;
    pm_flush(&m);
    return 0;
}

static int pm_gmatch(lua_State *L)
{
    size_t ls, init;
    pm_gm_t *gm;

    luaL_checklstring(L, 1, &ls);
    luaL_checkstring(L, 2);
    init = pm_posrel(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls)
        init = ls + 1;
    lua_settop(L, 2);
    gm = lua_newuserdatauv(L, sizeof(*gm), 0);
    gm->pos = init;
    gm->last = SIZE_MAX;
    lua_pushcclosure(L, pm_gmatch_aux, 3);
    return 1;
}

static void pm_add_s(pm_t *m, luaL_Buffer *b, const char *s, const char *e)
{
    lua_State *L = m->L;
    size_t l;
    const char *news = lua_tolstring(L, 3, &l);
    const char *p;

    while ((p = memchr(news, '%', l)) != NULL) {
        luaL_addlstring(b, news, (size_t)(p - news));
        p++;
        if (*p == '%') {
            luaL_addchar(b, '%');
        } else if (isdigit((unsigned char)*p)) {
            if (*p == '0') {
                luaL_addlstring(b, s, (size_t)(e - s));
            } else {
                pm_push_one(m, *p - '1', s, e);
                luaL_tolstring(L, -1, NULL);
                lua_remove(L, -2);
                luaL_addvalue(b);
            }
        } else {
            luaL_error(L, "invalid use of '%%' in replacement string");
        }
        l -= (size_t)(p + 1 - news);
        news = p + 1;
    }
    luaL_addlstring(b, news, l);
}

static void pm_add_value(pm_t *m, luaL_Buffer *b, const char *s, const char *e, int tr)
{
    lua_State *L = m->L;

    switch (tr) {
    case LUA_TFUNCTION: {
        int n;
        lua_pushvalue(L, 3);
        n = pm_push_all(m, s, e);
        lua_call(L, n, 1);
        break;
    }
    case LUA_TTABLE:
        pm_push_one(m, 0, s, e);
        lua_gettable(L, 3);
        break;
    default: pm_add_s(m, b, s, e); return;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
    } else if (!lua_isstring(L, -1)) {
        luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    } else {
        luaL_addvalue(b);
    }
}

static int pm_gsub(lua_State *L)
{
    size_t srcl, lp;
    const char *src = luaL_checklstring(L, 1, &srcl);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *lastmatch = NULL;
    int tr = lua_type(L, 3);
    lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)srcl + 1);
    int anchor = (*p == '^');
    lua_Integer n = 0;
    pm_t m;
    luaL_Buffer b;

    luaL_argexpected(
        L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
        "string/function/table");
    luaL_buffinit(L, &b);
    if (anchor) {
        p++;
        lp--;
    }
    pm_prep(&m, L, src, srcl, p, lp);
    while (n < max_s) {
        const char *e;
        pm_reprep(&m);
        if ((e = pm_match(&m, src, p)) != NULL && e != lastmatch) {
            n++;
            pm_add_value(&m, &b, src, e, tr);
            src = lastmatch = e;
        } else if (src < m.src_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor)
            break;
    }
    pm_flush(&m);
    luaL_addlstring(&b, src, (size_t)(m.src_end - src));
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

void lm_lua_open_patterns(lua_State *L)
{
    lua_pushcfunction(L, pm_find);
    lua_setfield(L, -2, "find");
    lua_pushcfunction(L, pm_match_fn);
    lua_setfield(L, -2, "match");
    lua_pushcfunction(L, pm_gmatch);
    lua_setfield(L, -2, "gmatch");
    lua_pushcfunction(L, pm_gsub);
    lua_setfield(L, -2, "gsub");
}
