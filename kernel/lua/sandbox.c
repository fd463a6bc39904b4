/*
 * sandbox.c - the safe standard library every script sees.
 *   B          the shared base table: safe base functions, read-only
 *              proxies of string/table/math/utf8/os/coroutine and lm.
 *              Unreachable from scripts (only via protected metatables).
 *   The real global table is replaced by an empty one (vm.c); the string
 *   metatable's __index is the sandbox string table and is protected.
 *   Library proxies and every script's _ENV are in a "frozen" set that
 *   rawset refuses, so no script can change what another script (or the
 *   next request) sees (PL-8). pcall, xpcall and coroutines re-raise an
 *   expired limit (limits.c).
 * Thread: the worker owning the state; inside protected calls.
 */
#include "lua/sandbox.h"
#include "core/log.h"
#include "longmen.h"
#include "lua/lazy.h"
#include "lua/limits.h"
#include "lua/pattern.h"

#include <lualib.h>
#include <string.h>

static const char frozen_key = 'F';

static int ro_newindex(lua_State *L)
{
    const char *what = lua_tostring(L, lua_upvalueindex(1));
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "%s is read-only (cannot set '%s')", what, lua_tostring(L, 2));
    return luaL_error(L, "%s is read-only", what);
}

int lm_lua_global_newindex(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L,
                          "assignment to global '%s' is not allowed after load "
                          "(use a local, or lm.ctx for per-request state)",
                          lua_tostring(L, 2));
    return luaL_error(L, "assignment to a global is not allowed after load");
}

static int is_frozen(lua_State *L, int idx)
{
    int r;
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &frozen_key);
    lua_pushvalue(L, idx);
    r = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return r;
}

void lm_lua_mark_frozen(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &frozen_key);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* The raw accessors see a pending stage argument (lazy.h) as the table
 * it stands for: they materialise it first. */
static int sb_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (is_frozen(L, 1))
        return luaL_error(L, "rawset: this table is read-only");
    lm_lua_touch(L, 1);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

static int sb_setmetatable(lua_State *L)
{
    int t = lua_type(L, 2);

    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "setmetatable: __gc is not allowed (finalizers would run "
                                 "outside the script's limits)");
        lua_pop(L, 1);
    }
    lm_lua_touch(L, 1);
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

static int sb_rawget(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    lm_lua_touch(L, 1);
    lua_settop(L, 2);
    lua_rawget(L, 1);
    return 1;
}

static int sb_rawlen(lua_State *L)
{
    int t = lua_type(L, 1);

    luaL_argexpected(L, t == LUA_TTABLE || t == LUA_TSTRING, 1, "table or string");
    lm_lua_touch(L, 1);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
    return 1;
}

static int sb_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lm_lua_touch(L, 1);
    lua_settop(L, 2);
    if (lua_next(L, 1))
        return 2;
    lua_pushnil(L);
    return 1;
}

static int sb_getmetatable(lua_State *L)
{
    luaL_checkany(L, 1);
    lm_lua_touch(L, 1);
    if (!lua_getmetatable(L, 1)) {
        lua_pushnil(L);
        return 1;
    }
    luaL_getmetafield(L, 1, "__metatable"); /* the protected value, if any */
    return 1;
}

static int pcall_finish(lua_State *L, int status, lua_KContext extra)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);

    if (vm->expired)
        return lm_lua_raise_limit(L, vm); /* a limit is not the script's to catch */
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int sb_pcall(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    int status;

    luaL_checkany(L, 1);
    if (vm->expired)
        return lm_lua_raise_limit(L, vm);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, pcall_finish);
    return pcall_finish(L, status, 0);
}

/* xpcall's message handler. An error raised by the count hook unwinds
 * with hooks still disabled (Lua restores them only at the pcall boundary),
 * so a script handler would run unlimited: once the limit has expired the
 * handler is skipped and the message passes through. */
static int xp_handler(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);

    if (vm->expired)
        return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int sb_xpcall(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    int status, n = lua_gettop(L);

    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (vm->expired)
        return lm_lua_raise_limit(L, vm);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, xp_handler, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);
    status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, pcall_finish);
    return pcall_finish(L, status, 2);
}

static int sb_load(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    size_t n;
    const char *s, *name;

    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "load: only string chunks are allowed");
    s = lua_tolstring(L, 1, &n);
    name = luaL_optstring(L, 2, "=(load)");
    /* the mode argument is ignored: always text only */
    if (luaL_loadbufferx(L, s, n, name, "t") != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (!lua_isnone(L, 4))
        lua_pushvalue(L, 4);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->s[vm->script].env);
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    return 1;
}

static int sb_print(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    int n = lua_gettop(L);
    luaL_Buffer b;

    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        luaL_tolstring(L, i, NULL);
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lm_log(LM_LOG_INFO, "lua[%s] %s", lm_lua_script_name(vm), lua_tostring(L, -1));
    return 0;
}

/* ---- coroutines: new threads get the hook; resume re-raises limits ---- */

static int co_create(lua_State *L)
{
    lua_State *co;

    luaL_checktype(L, 1, LUA_TFUNCTION);
    co = lua_newthread(L);
    lua_sethook(co, lm_lua_hook, LUA_MASKCOUNT, LM_LUA_HOOK_EVERY);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    return 1;
}

static int co_aux(lua_State *L, lua_State *co, int narg)
{
    int status, nres;

    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    if (lua_status(co) == LUA_OK && lua_gettop(co) == 0) {
        lua_pushliteral(L, "cannot resume dead coroutine");
        return -1;
    }
    lua_xmove(L, co, narg);
    status = lua_resume(co, L, narg, &nres);
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushliteral(L, "too many results to resume");
            return -1;
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    return -1;
}

static int co_resume(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    lua_State *co = lua_tothread(L, 1);
    int r;

    luaL_argexpected(L, co, 1, "coroutine");
    r = co_aux(L, co, lua_gettop(L) - 1);
    if (vm->expired)
        return lm_lua_raise_limit(L, vm);
    if (r < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -(r + 1));
    return r + 1;
}

static int co_wrap_aux(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int r = co_aux(L, co, lua_gettop(L));

    if (vm->expired)
        return lm_lua_raise_limit(L, vm);
    if (r < 0) {
        if (lua_type(L, -1) == LUA_TSTRING) {
            luaL_where(L, 1);
            lua_insert(L, -2);
            lua_concat(L, 2);
        }
        return lua_error(L);
    }
    return r;
}

static int co_wrap(lua_State *L)
{
    co_create(L);
    lua_pushcclosure(L, co_wrap_aux, 1);
    return 1;
}

static int co_close(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    int n = lua_gettop(L);

    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    if (vm->expired)
        return lm_lua_raise_limit(L, vm);
    return lua_gettop(L);
}

/* Pushes a read-only proxy of the table at idx; __index is `index`
 * (a table, or the C closure on top of the stack when index_fn). */
void lm_lua_push_proxy(lua_State *L, int idx, const char *name, lua_CFunction index_fn)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, idx);
    if (index_fn)
        lua_pushcclosure(L, index_fn, 1);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, ro_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lm_lua_mark_frozen(L, -1);
}

/* Copy every field of the table at src into the table at dst except skip[]. */
void lm_lua_copy_fields(lua_State *L, int src, int dst, const char *const *skip)
{
    src = lua_absindex(L, src);
    dst = lua_absindex(L, dst);
    lua_pushnil(L);
    while (lua_next(L, src)) {
        int keep = 1;
        if (skip && lua_type(L, -2) == LUA_TSTRING)
            for (const char *const *s = skip; *s; s++)
                if (strcmp(*s, lua_tostring(L, -2)) == 0)
                    keep = 0;
        if (keep) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, dst);
        } else {
            lua_pop(L, 1);
        }
    }
}

/* Opens lib, copies it (minus skip) into a new table; leaves the copy on
 * the stack (the original is dropped). */
static void open_copy(lua_State *L, const char *name, lua_CFunction open, const char *const *skip)
{
    luaL_requiref(L, name, open, 0);
    lua_newtable(L);
    lm_lua_copy_fields(L, -2, -1, skip);
    lua_remove(L, -2);
}

void lm_lua_set_fn(lua_State *L, const char *name, lua_CFunction f)
{
    lua_pushcfunction(L, f);
    lua_setfield(L, -2, name);
}

/* Pushes B, the shared base table: the frozen set, the safe base functions
 * and read-only proxies of the safe libraries. Returns its stack index. */
int lm_lua_sandbox_open(lua_State *L)
{
    static const char *const base_keep[] = {"assert",   "error",    "ipairs",   "pairs",
                                            "rawequal", "select",   "tonumber", "type",
                                            "tostring", "_VERSION", NULL};
    static const char *const str_skip[] = {"dump", "find", "match", "gmatch", "gsub", NULL};
    static const char *const co_keep[] = {"yield", "status", "isyieldable", "running", NULL};
    static const char *const os_keep[] = {"time", "clock", "date", NULL};
    int B, G, t;

    /* frozen set (weak keys) */
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &frozen_key);
    lua_newtable(L);
    B = lua_gettop(L);
    luaL_requiref(L, "_G", luaopen_base, 1);
    G = lua_gettop(L);
    for (const char *const *n = base_keep; *n; n++) {
        lua_getfield(L, G, *n);
        lua_setfield(L, B, *n);
    }
    lua_settop(L, B);
    lua_pushvalue(L, B);
    lm_lua_set_fn(L, "pcall", sb_pcall);
    lm_lua_set_fn(L, "xpcall", sb_xpcall);
    lm_lua_set_fn(L, "setmetatable", sb_setmetatable);
    lm_lua_set_fn(L, "rawset", sb_rawset);
    lm_lua_set_fn(L, "rawget", sb_rawget);
    lm_lua_set_fn(L, "rawlen", sb_rawlen);
    lm_lua_set_fn(L, "next", sb_next);
    lm_lua_set_fn(L, "getmetatable", sb_getmetatable);
    lm_lua_set_fn(L, "load", sb_load);
    lm_lua_set_fn(L, "print", sb_print);
    lua_pop(L, 1);

    /* string: the sandbox table is also the string metatable's __index */
    open_copy(L, LUA_STRLIBNAME, luaopen_string, str_skip);
    t = lua_gettop(L);
    lm_lua_open_patterns(L);
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushvalue(L, t);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    lm_lua_push_proxy(L, t, "string", NULL);
    lua_setfield(L, B, "string");
    lua_settop(L, B);

    open_copy(L, LUA_TABLIBNAME, luaopen_table, NULL);
    lm_lua_push_proxy(L, -1, "table", NULL);
    lua_setfield(L, B, "table");
    lua_settop(L, B);
    open_copy(L, LUA_MATHLIBNAME, luaopen_math, NULL);
    lm_lua_push_proxy(L, -1, "math", NULL);
    lua_setfield(L, B, "math");
    lua_settop(L, B);
    open_copy(L, LUA_UTF8LIBNAME, luaopen_utf8, NULL);
    lm_lua_push_proxy(L, -1, "utf8", NULL);
    lua_setfield(L, B, "utf8");
    lua_settop(L, B);

    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
    lua_newtable(L);
    for (const char *const *n = os_keep; *n; n++) {
        lua_getfield(L, -2, *n);
        lua_setfield(L, -2, *n);
    }
    lm_lua_push_proxy(L, -1, "os", NULL);
    lua_setfield(L, B, "os");
    lua_settop(L, B);

    luaL_requiref(L, LUA_COLIBNAME, luaopen_coroutine, 0);
    lua_newtable(L);
    for (const char *const *n = co_keep; *n; n++) {
        lua_getfield(L, -2, *n);
        lua_setfield(L, -2, *n);
    }
    lm_lua_set_fn(L, "create", co_create);
    lm_lua_set_fn(L, "resume", co_resume);
    lm_lua_set_fn(L, "wrap", co_wrap);
    lua_getfield(L, -2, "close");
    lua_pushcclosure(L, co_close, 1);
    lua_setfield(L, -2, "close");
    lm_lua_push_proxy(L, -1, "coroutine", NULL);
    lua_setfield(L, B, "coroutine");
    lua_settop(L, B);
    return B;
}
