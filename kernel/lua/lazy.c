/*
 * lazy.c - lazy stage arguments (lazy.h): pending tables that are converted
 * only when a script looks at them, the anchors that keep their Jansson
 * sources alive (charged against the memory cap), how a table encodes,
 * and whether a Lua value still says what a Jansson value says.
 * Thread: the worker owning the state; inside protected calls. Anchors own
 * references to their JSON; their finalizer drops them.
 */
#include "lua/lazy.h"
#include "lua/decode.h"
#include "lua/limits.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- lazy values: keys ---- */

/* The metatables of pending tables and of anchors are registry refs kept
 * in the vm (vm->ref_lazy_mt, vm->ref_anchor_mt): an integer key reads the
 * registry's array part, cheaper than a pointer key's hash lookup, and a
 * stage call makes several pending tables. */

static const char lazy_src_key = 'S'; /* in a pending table: its source */

static const char lazy_kind_key = 'K'; /* in a pending table over an anchor: the kind; over
                                         text with one more member: its name */

static const char lazy_raw_key = 'W'; /* in a pending table over text: that member's value */

static int params_key(const char *k, size_t n)
{
    return (n == 5 && memcmp(k, "model", 5) == 0) || (n == 8 && memcmp(k, "messages", 8) == 0);
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
    if (lua_rawgetp(L, idx, &lazy_src_key) == LUA_TUSERDATA && lm_lua_to_anchor(L, -1)) {
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
    json_t *v;

    if (j == NULL || depth > LM_LUA_JSON_DEPTH)
        return n;
    switch (json_typeof(j)) {
    case JSON_OBJECT: /* the iterator itself: json_object_foreach makes twice the calls */
        n += 56;
        for (void *it = json_object_iter(j); it; it = json_object_iter_next(j, it))
            n += 40 + json_object_iter_key_len(it) +
                 json_cost(json_object_iter_value(it), depth + 1);
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
    lua_rawgeti(L, LUA_REGISTRYINDEX, lm_lua_vm_of(L)->ref_anchor_mt);
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
    lua_rawgeti(L, LUA_REGISTRYINDEX, lm_lua_vm_of(L)->ref_anchor_mt);
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

/* A box (lm_lua_push_box): a userdata without a metatable, its bytes
 * after the header (aligned for the structs callers keep there). */
typedef struct box_s {
    lm_lua_write_fn write;
    const char *raw_name; /* static, or NULL: no raw member */
    size_t n, rn;         /* data bytes, raw bytes (after the data) */
} box_t;
#define BOX_HDR ((sizeof(box_t) + 15) & ~(size_t)15)

void lm_lua_push_box(lua_State *L, const lm_lua_input_t *in, const char *raw_name)
{
    size_t rn = in->raw ? in->rn : 0;
    box_t *b = lua_newuserdatauv(L, BOX_HDR + in->n + rn, 0);

    b->write = in->write;
    b->raw_name = in->raw ? raw_name : NULL;
    b->n = in->n;
    b->rn = rn;
    if (in->n)
        memcpy((char *)b + BOX_HDR, in->data, in->n);
    if (rn)
        memcpy((char *)b + BOX_HDR + in->n, in->raw, rn);
}

static int push_text_p(lua_State *L)
{
    lua_pushlstring(L, lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
    return 1;
}

/* Fills t from the box at src, part `part`; returns 1 for an array. The
 * writer's text is malloc'd: it becomes a Lua string in a nested protected
 * call, so a memory error there does not leak it. */
static int fill_box(lua_State *L, int t, int src, int part)
{
    box_t *b = lua_touserdata(L, src);
    const char *data = (const char *)b + BOX_HDR;
    size_t len = 0;
    char *text = b->write(data, b->n, part, &len);
    int st, array;

    if (text == NULL)
        luaL_error(L, "out of memory");
    lua_pushcfunction(L, push_text_p);
    lua_pushlightuserdata(L, text);
    lua_pushinteger(L, (lua_Integer)len);
    st = lua_pcall(L, 2, 1, 0);
    free(text);
    if (st != LUA_OK)
        lua_error(L);
    array = lm_lua_json_fill(L, t, lua_gettop(L));
    if (b->raw_name) {
        lua_pushstring(L, b->raw_name);
        lua_pushlstring(L, data + b->n, b->rn);
        lua_rawset(L, t);
    }
    return array;
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
    lua_rawgeti(L, LUA_REGISTRYINDEX, lm_lua_vm_of(L)->ref_lazy_mt);
    lua_setmetatable(L, -2);
}

void lm_lua_push_lazy_text(lua_State *L, const char *json, size_t len)
{
    lua_pushlstring(L, json, len);
    lm_lua_push_lazy(L, -1, 0);
    lua_remove(L, -2);
}

/* The extra member lives in the pending table itself (no table around the
 * source): one table and two strings per call. */
void lm_lua_push_lazy_text_with(lua_State *L, const char *json, size_t len, const char *field,
                                const char *raw, size_t n)
{
    lua_createtable(L, 0, 3);
    lua_pushlstring(L, json, len);
    lua_rawsetp(L, -2, &lazy_src_key);
    lua_pushstring(L, field);
    lua_rawsetp(L, -2, &lazy_kind_key);
    lua_pushlstring(L, raw, n);
    lua_rawsetp(L, -2, &lazy_raw_key);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lm_lua_vm_of(L)->ref_lazy_mt);
    lua_setmetatable(L, -2);
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
    int t, s, array, extra;

    if (lua_type(L, idx) != LUA_TTABLE)
        return;
    t = lua_absindex(L, idx);
    if (lua_rawgetp(L, t, &lazy_src_key) == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    luaL_checkstack(L, 8, "lazy value");
    s = lua_gettop(L);
    lua_rawgetp(L, t, &lazy_kind_key);
    extra = lua_type(L, s + 1) == LUA_TSTRING;
    if (lua_type(L, s) == LUA_TSTRING) {
        array = lm_lua_json_fill(L, t, s);
        if (extra) { /* the member that travels as it is */
            lua_pushvalue(L, s + 1);
            lua_rawgetp(L, t, &lazy_raw_key);
            lua_rawset(L, t);
        }
    } else if (!lua_getmetatable(L, s)) {
        array = fill_box(L, t, s, (int)lua_tointeger(L, s + 1));
    } else {
        lua_pop(L, 1);
        array = fill_anchor(L, t, s, (unsigned)lua_tointeger(L, s + 1));
    }
    lua_settop(L, s - 1);
    /* now an ordinary table: drop the source and the pending metatable
     * (none of these steps allocates, so it is never left half-way) */
    lua_pushnil(L);
    lua_rawsetp(L, t, &lazy_src_key);
    lua_pushnil(L);
    lua_rawsetp(L, t, &lazy_kind_key);
    if (extra) {
        lua_pushnil(L);
        lua_rawsetp(L, t, &lazy_raw_key);
    }
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
    lm_lua_vm_of(L)->ref_lazy_mt = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, anchor_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lm_lua_vm_of(L)->ref_anchor_mt = luaL_ref(L, LUA_REGISTRYINDEX);
}
