/*
 * lua_host.c - generations, per-worker states, the sandbox, limits, the lm.*
 * API and the stage runners. See lua_host.h for the contract and
 * scripts/README.md for what scripts see.
 *
 * Sandbox layout inside one lua_State:
 *   B          the shared base table: safe base functions, read-only
 *              proxies of string/table/math/utf8/os/coroutine and lm.
 *              Unreachable from scripts (only via protected metatables).
 *   E[i]       script i's _ENV: empty after load, metatable
 *              {__index = D[i], __newindex = error, __metatable = false};
 *   D[i]       what the top-level chunk defined, __index = B. Unreachable.
 *   The real global table is replaced by an empty one; the string
 *   metatable's __index is the sandbox string table and is protected.
 *   Library proxies and every E[i] are in a "frozen" set that rawset
 *   refuses, so no script can change what another script (or the next
 *   request) sees (PL-8).
 * Limits: a count hook (every 1000 instructions, all threads) charges the
 * instruction budget and checks the CLOCK_MONOTONIC deadline; once expired
 * it raises on every firing, and the pcall/xpcall/coroutine wrappers
 * re-raise, so the limit cannot be swallowed (PL-5). The allocator caps
 * the state's bytes (PL-6). Pattern functions charge their steps
 * (lua_pattern.c).
 */
#include "lua/lua_host.h"
#include "core/clock.h"

#include "core/log.h"
#include "longmen.h"
#include "lua/lua_int.h"

#include <errno.h>
#include <fnmatch.h>
#include <lualib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define DEF_INSTRUCTIONS 1000000u
#define DEF_DEADLINE_MS  10u
#define DEF_MEMORY       ((size_t)16 << 20)
#define HOOK_EVERY       1000
#define MAX_SCRIPT_BYTES ((long)1 << 20)
#define LOAD_MIN_MS      100u /* top-level chunks get at least this long */

enum { LIM_NONE = 0, LIM_INSTR, LIM_TIME, LIM_STEPS };

#define ALL_STAGES ((1u << LM_LUA_NSTAGES) - 1)
#define REQ_STAGES (ALL_STAGES & ~LM_LUA_BIT(LM_LUA_STAGE_LOAD))

static const char *const stage_names[LM_LUA_NSTAGES] = {
    "load", "request", "route", "upstream_request", "event", "response", "usage", "error", "log",
};
static const char *const stage_fns[LM_LUA_NSTAGES] = {
    NULL,       "on_request", "on_route", "on_upstream_request", "on_event", "on_response",
    "on_usage", "on_error",   "on_log",
};

/* registry keys (their addresses) */
static const char base_key = 'B';
static const char frozen_key = 'F';

typedef struct gen_script_s {
    char *name;
    char *path;
    char *src;
    size_t srclen;
    char **models;
    size_t nmodels;
    char **keys;
    size_t nkeys;
    json_t *args;
    unsigned stages;
    _Atomic uint64_t errors;
    _Atomic uint64_t limits;
} gen_script_t;

struct lm_lua_gen_s {
    atomic_long refs;
    lm_lua_limits_t lim;
    lm_lua_shared_t *shared;
    size_t n;
    gen_script_t *s;
    unsigned stages;
};

typedef struct vm_script_s {
    int env;
    int fn[LM_LUA_NSTAGES];
    unsigned stages;
} vm_script_t;

struct lm_lua_vm_s {
    lua_State *L;
    lm_lua_gen_t *gen;
    int refs;
    vm_script_t *s;
    size_t mem;
    size_t mem_cap;
    /* the running stage call */
    int running;
    int stage;
    size_t script;
    int expired;
    uint64_t steps, budget;
    uint64_t pat_steps, pat_budget;
    int64_t deadline_ns;
    uint32_t deadline_ms;
    lm_lua_call_t *call;
    int cur_req;
    int cur_resp;
    /* decisions by lm.reject / lm.retry */
    int reject_status;
    char reject_code[64];
    char reject_msg[512];
    int retry;
    char retry_model[128];
};

/* Slots of a request anchor (push_reqview). */
enum { SLOT_REQ, SLOT_MODEL, SLOT_MESSAGES, SLOT_META };

struct lm_lua_call_s {
    lm_lua_vm_t *vm;
    json_t *req;
    json_t *meta;
    char *key_name;
    char *key_group;
    unsigned stages;
    unsigned char *applies;
    int *ctx;
    int anchor;      /* registry ref: the anchor over req and meta (or LUA_NOREF) */
    int view;        /* registry ref: the request view last made from it */
    int req_changed; /* on_request rewrote req */
};

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = 0;
}

static char *dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

static lm_lua_vm_t *vm_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

const char *lm_lua_stage_name(lm_lua_stage_t stage)
{
    return (unsigned)stage < LM_LUA_NSTAGES ? stage_names[stage] : "?";
}

static const char *script_name(lm_lua_vm_t *vm)
{
    return vm->script < vm->gen->n ? vm->gen->s[vm->script].name : "?";
}

/* ------------------------------------------------------------------ */
/* allocator, hook, limits                                             */

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lm_lua_vm_t *vm = ud;
    void *p;

    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        vm->mem -= osize;
        return NULL;
    }
    if (nsize > osize && (nsize - osize > vm->mem_cap || vm->mem + (nsize - osize) > vm->mem_cap))
        return NULL;
    p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    vm->mem = vm->mem - osize + nsize;
    return p;
}

static int raise_limit(lua_State *L, lm_lua_vm_t *vm)
{
    switch (vm->expired) {
    case LIM_INSTR:
        return luaL_error(L, "script exceeded its instruction budget (%d)", (int)vm->budget);
    case LIM_TIME:
        return luaL_error(L, "script exceeded its time budget (%d ms)", (int)vm->deadline_ms);
    default: return luaL_error(L, "pattern matching exceeded its step budget");
    }
}

static void vm_hook(lua_State *L, lua_Debug *ar)
{
    lm_lua_vm_t *vm = vm_of(L);

    (void)ar;
    if (!vm->running)
        return;
    vm->steps += HOOK_EVERY;
    if (!vm->expired) {
        if (vm->steps > vm->budget)
            vm->expired = LIM_INSTR;
        else if (lm_clock_ns() > vm->deadline_ns)
            vm->expired = LIM_TIME;
    }
    if (vm->expired)
        raise_limit(L, vm);
}

void lm_lua_charge(lua_State *L, uint64_t steps)
{
    lm_lua_vm_t *vm = vm_of(L);

    if (!vm->running)
        return;
    vm->pat_steps += steps;
    if (!vm->expired) {
        if (vm->pat_steps > vm->pat_budget)
            vm->expired = LIM_STEPS;
        else if (lm_clock_ns() > vm->deadline_ns)
            vm->expired = LIM_TIME;
    }
    if (vm->expired)
        raise_limit(L, vm);
}

void lm_lua_mem_charge(lua_State *L, size_t bytes)
{
    lm_lua_vm_t *vm = vm_of(L);

    if (bytes > vm->mem_cap || vm->mem > vm->mem_cap - bytes) {
        /* dead anchors hold charges until their finalizers run */
        lua_gc(L, LUA_GCCOLLECT, 0);
        if (bytes > vm->mem_cap || vm->mem > vm->mem_cap - bytes)
            lua_newuserdatauv(L, vm->mem_cap, 0); /* cannot fit: the ordinary memory error */
    }
    vm->mem += bytes;
}

void lm_lua_mem_uncharge(lua_State *L, size_t bytes)
{
    lm_lua_vm_t *vm = vm_of(L);
    vm->mem = bytes < vm->mem ? vm->mem - bytes : 0;
}

static void lim_start(lm_lua_vm_t *vm, size_t script, int stage)
{
    const lm_lua_limits_t *lim = &vm->gen->lim;
    uint32_t ms = lim->deadline_ms;
    uint64_t bud = lim->instructions;

    if (stage == LM_LUA_STAGE_LOAD) {
        ms = ms < LOAD_MIN_MS ? LOAD_MIN_MS : ms;
        bud *= 10;
    }
    vm->script = script;
    vm->stage = stage;
    vm->expired = LIM_NONE;
    vm->steps = 0;
    vm->budget = bud;
    vm->pat_steps = 0;
    vm->pat_budget = bud * 10;
    vm->deadline_ms = ms;
    vm->deadline_ns = lm_clock_ns() + (int64_t)ms * 1000000;
    vm->reject_status = 0;
    vm->retry = 0;
    vm->retry_model[0] = 0;
    vm->cur_req = vm->cur_resp = LUA_NOREF;
    vm->running = 1;
}

static void gate(lua_State *L, unsigned mask, const char *what)
{
    lm_lua_vm_t *vm = vm_of(L);
    if (!(mask & LM_LUA_BIT(vm->stage)))
        luaL_error(L, "%s is not allowed in stage %s", what, stage_names[vm->stage]);
}

/* ------------------------------------------------------------------ */
/* JSON (Jansson) <-> Lua                                              */

/* Attach v to parent (array append, or object key k/kl) or to *root. v is
 * attached before a container is filled, so a Lua error while filling
 * leaks nothing: the caller frees the root. */
static void tj_attach(lua_State *L, json_t *v, json_t *parent, const char *k, size_t kl,
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

/* The Lua value at idx to JSON, attached as tj_attach says. No metamethods
 * run (pending tables are materialised by lm_lua_table_kind). `what` names
 * the value in error messages. */
static void to_json(lua_State *L, int idx, int depth, const char *what, json_t *parent,
                    const char *k, size_t kl, json_t **root)
{
    json_t *v;
    size_t n;
    int kind;

    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: tj_attach(L, json_null(), parent, k, kl, root); return;
    case LUA_TBOOLEAN:
        tj_attach(L, json_boolean(lua_toboolean(L, idx)), parent, k, kl, root);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lm_lua_isnull(L, idx)) {
            tj_attach(L, json_null(), parent, k, kl, root);
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
        tj_attach(L, v, parent, k, kl, root);
        return;
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &n);
        if (!lm_lua_utf8_ok(s, n))
            luaL_error(L, "%s: invalid UTF-8 in a string", what);
        tj_attach(L, json_stringn(s, n), parent, k, kl, root);
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
        tj_attach(L, v, parent, k, kl, root);
        if (kind) {
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, (lua_Integer)i);
                to_json(L, -1, depth + 1, what, v, NULL, 0, NULL);
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
            to_json(L, -1, depth + 1, what, v, key, klen, NULL);
            lua_pop(L, 1);
        }
        return;
    default: break;
    }
    luaL_error(L, "%s: cannot convert a %s to JSON", what, luaL_typename(L, idx));
}

/* Converts the table at idx to a JSON object in *root (must be an object). */
static void to_json_object(lua_State *L, int idx, const char *what, json_t **root)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_error(L, "%s must be a table", what);
    to_json(L, idx, 0, what, NULL, NULL, 0, root);
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
static int replace_object(json_t *dst, json_t *src)
{
    if (dst == src)
        return 0;
    json_object_clear(dst);
    return json_object_update(dst, src);
}

/* ------------------------------------------------------------------ */
/* sandbox: base functions                                             */

static int ro_newindex(lua_State *L)
{
    const char *what = lua_tostring(L, lua_upvalueindex(1));
    if (lua_type(L, 2) == LUA_TSTRING)
        return luaL_error(L, "%s is read-only (cannot set '%s')", what, lua_tostring(L, 2));
    return luaL_error(L, "%s is read-only", what);
}

static int global_newindex(lua_State *L)
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

static void mark_frozen(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &frozen_key);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* The raw accessors see a pending stage argument (lua_int.h) as the table
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
    lm_lua_vm_t *vm = vm_of(L);

    if (vm->expired)
        return raise_limit(L, vm); /* a limit is not the script's to catch */
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

static int sb_pcall(lua_State *L)
{
    lm_lua_vm_t *vm = vm_of(L);
    int status;

    luaL_checkany(L, 1);
    if (vm->expired)
        return raise_limit(L, vm);
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
    lm_lua_vm_t *vm = vm_of(L);

    if (vm->expired)
        return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int sb_xpcall(lua_State *L)
{
    lm_lua_vm_t *vm = vm_of(L);
    int status, n = lua_gettop(L);

    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (vm->expired)
        return raise_limit(L, vm);
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
    lm_lua_vm_t *vm = vm_of(L);
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
    lm_lua_vm_t *vm = vm_of(L);
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
    lm_log(LM_LOG_INFO, "lua[%s] %s", script_name(vm), lua_tostring(L, -1));
    return 0;
}

/* ---- coroutines: new threads get the hook; resume re-raises limits ---- */

static int co_create(lua_State *L)
{
    lua_State *co;

    luaL_checktype(L, 1, LUA_TFUNCTION);
    co = lua_newthread(L);
    lua_sethook(co, vm_hook, LUA_MASKCOUNT, HOOK_EVERY);
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
    lm_lua_vm_t *vm = vm_of(L);
    lua_State *co = lua_tothread(L, 1);
    int r;

    luaL_argexpected(L, co, 1, "coroutine");
    r = co_aux(L, co, lua_gettop(L) - 1);
    if (vm->expired)
        return raise_limit(L, vm);
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
    lm_lua_vm_t *vm = vm_of(L);
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int r = co_aux(L, co, lua_gettop(L));

    if (vm->expired)
        return raise_limit(L, vm);
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
    lm_lua_vm_t *vm = vm_of(L);
    int n = lua_gettop(L);

    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    if (vm->expired)
        return raise_limit(L, vm);
    return lua_gettop(L);
}

/* ------------------------------------------------------------------ */
/* the lm.* API                                                        */

static int lm_log_fn(lua_State *L)
{
    lm_lua_vm_t *vm = vm_of(L);
    int level = lm_log_parse_level(luaL_checkstring(L, 1));
    const char *msg = luaL_checkstring(L, 2);

    if (level < 0)
        return luaL_error(L, "lm.log: unknown level '%s' (error, warn, info, debug)",
                          lua_tostring(L, 1));
    lm_log(level, "lua[%s] %s", script_name(vm), msg);
    return 0;
}

static int lm_time_fn(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    return 1;
}

static int lm_now_ms_fn(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

static void push_digest(lua_State *L, const unsigned char *md, unsigned n, int raw)
{
    static const char hex[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];

    if (raw) {
        lua_pushlstring(L, (const char *)md, n);
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    lua_pushlstring(L, out, 2 * (size_t)n);
}

static int lm_sha256_fn(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;

    if (!EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL))
        return luaL_error(L, "lm.sha256: digest failed");
    push_digest(L, md, mdlen, lua_toboolean(L, 2));
    return 1;
}

static int lm_hmac_fn(lua_State *L)
{
    size_t kl, ml;
    const char *k = luaL_checklstring(L, 1, &kl);
    const char *m = luaL_checklstring(L, 2, &ml);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;

    if (kl > INT32_MAX || !HMAC(EVP_sha256(), k, (int)kl, (const unsigned char *)m, ml, md, &mdlen))
        return luaL_error(L, "lm.hmac_sha256: failed");
    push_digest(L, md, mdlen, lua_toboolean(L, 3));
    return 1;
}

static int lm_reject_fn(lua_State *L)
{
    lm_lua_vm_t *vm = vm_of(L);
    lua_Integer status = luaL_checkinteger(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    const char *code = luaL_optstring(L, 3, "");

    gate(L,
         LM_LUA_BIT(LM_LUA_STAGE_REQUEST) | LM_LUA_BIT(LM_LUA_STAGE_ROUTE) |
             LM_LUA_BIT(LM_LUA_STAGE_UPSTREAM_REQUEST) | LM_LUA_BIT(LM_LUA_STAGE_RESPONSE),
         "lm.reject");
    if (status < 400 || status > 599)
        return luaL_error(L, "lm.reject: status must be 400..599");
    vm->reject_status = (int)status;
    copy_str(vm->reject_msg, sizeof(vm->reject_msg), msg);
    copy_str(vm->reject_code, sizeof(vm->reject_code), code);
    return 0;
}

static int lm_retry_fn(lua_State *L)
{
    lm_lua_vm_t *vm = vm_of(L);
    const char *model = luaL_optstring(L, 1, "");

    gate(L, LM_LUA_BIT(LM_LUA_STAGE_ERROR), "lm.retry");
    vm->retry = 1;
    copy_str(vm->retry_model, sizeof(vm->retry_model), model);
    return 0;
}

static int lm_json_array_fn(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lm_lua_touch(L, 1);
    if (lua_getmetatable(L, 1))
        return luaL_error(L, "lm.json.array: the table already has a metatable");
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &lm_lua_array_key);
    lua_setmetatable(L, 1);
    return 1;
}

static lm_lua_shared_t *shared_of(lua_State *L, const char *what)
{
    lm_lua_vm_t *vm = vm_of(L);
    gate(L, REQ_STAGES, what);
    if (!vm->gen->shared)
        luaL_error(L, "%s: no shared dictionary is configured", what);
    return vm->gen->shared;
}

static const char *shared_key(lua_State *L, size_t *n)
{
    const char *k = luaL_checklstring(L, 1, n);
    if (*n == 0 || *n > 256)
        luaL_error(L, "lm.shared: keys are 1..256 bytes");
    return k;
}

static int lm_shared_get(lua_State *L)
{
    lm_lua_shared_t *sh = shared_of(L, "lm.shared.get");
    size_t n;
    const char *k = shared_key(L, &n);
    int64_t v;

    if (lm_lua_shared_get(sh, k, n, &v))
        lua_pushnil(L);
    else
        lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

static int64_t ttl_arg(lua_State *L, int idx)
{
    lua_Number ttl = luaL_optnumber(L, idx, 0);
    if (ttl < 0 || ttl > 1e9)
        luaL_error(L, "lm.shared: ttl must be 0..1e9 seconds");
    return (int64_t)(ttl * 1000);
}

static int lm_shared_incr(lua_State *L)
{
    lm_lua_shared_t *sh = shared_of(L, "lm.shared.incr");
    size_t n;
    const char *k = shared_key(L, &n);
    lua_Integer d = luaL_checkinteger(L, 2);
    int64_t v;

    if (lm_lua_shared_incr(sh, k, n, (int64_t)d, ttl_arg(L, 3), &v)) {
        luaL_pushfail(L);
        lua_pushliteral(L, "full");
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

static int lm_shared_set(lua_State *L)
{
    lm_lua_shared_t *sh = shared_of(L, "lm.shared.set");
    size_t n;
    const char *k = shared_key(L, &n);
    lua_Integer v = luaL_checkinteger(L, 2);

    if (lm_lua_shared_set(sh, k, n, (int64_t)v, ttl_arg(L, 3))) {
        luaL_pushfail(L);
        lua_pushliteral(L, "full");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int lm_shared_delete(lua_State *L)
{
    lm_lua_shared_t *sh = shared_of(L, "lm.shared.delete");
    size_t n;
    const char *k = shared_key(L, &n);

    lm_lua_shared_del(sh, k, n);
    return 0;
}

static void push_reqview(lua_State *L, lm_lua_call_t *call);

/* lm's __index: the per-run fields, then the function table (upvalue 1). */
static int lm_index(lua_State *L)
{
    lm_lua_vm_t *vm = vm_of(L);

    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        if (strcmp(k, "request") == 0) {
            gate(L, REQ_STAGES, "lm.request");
            if (vm->cur_req == LUA_NOREF) {
                push_reqview(L, vm->call);
                vm->cur_req = luaL_ref(L, LUA_REGISTRYINDEX);
            }
            lua_rawgeti(L, LUA_REGISTRYINDEX, vm->cur_req);
            return 1;
        }
        if (strcmp(k, "response") == 0) {
            gate(L, LM_LUA_BIT(LM_LUA_STAGE_RESPONSE), "lm.response");
            lua_rawgeti(L, LUA_REGISTRYINDEX, vm->cur_resp);
            return 1;
        }
        if (strcmp(k, "ctx") == 0) {
            int *ref;
            gate(L, REQ_STAGES, "lm.ctx");
            ref = &vm->call->ctx[vm->script];
            if (*ref == LUA_NOREF) {
                lua_newtable(L);
                *ref = luaL_ref(L, LUA_REGISTRYINDEX);
            }
            lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
            return 1;
        }
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* ------------------------------------------------------------------ */
/* building a state                                                    */

/* Pushes a read-only proxy of the table at idx; __index is `index`
 * (a table, or the C closure on top of the stack when index_fn). */
static void push_proxy(lua_State *L, int idx, const char *name, lua_CFunction index_fn)
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
    mark_frozen(L, -1);
}

/* Copy every field of the table at src into the table at dst except skip[]. */
static void copy_fields(lua_State *L, int src, int dst, const char *const *skip)
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
    copy_fields(L, -2, -1, skip);
    lua_remove(L, -2);
}

static void set_fn(lua_State *L, const char *name, lua_CFunction f)
{
    lua_pushcfunction(L, f);
    lua_setfield(L, -2, name);
}

/* Pushes B, the shared base table: the frozen set, the safe base functions
 * and read-only proxies of the safe libraries. Returns its stack index. */
static int sandbox_open(lua_State *L)
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
    set_fn(L, "pcall", sb_pcall);
    set_fn(L, "xpcall", sb_xpcall);
    set_fn(L, "setmetatable", sb_setmetatable);
    set_fn(L, "rawset", sb_rawset);
    set_fn(L, "rawget", sb_rawget);
    set_fn(L, "rawlen", sb_rawlen);
    set_fn(L, "next", sb_next);
    set_fn(L, "getmetatable", sb_getmetatable);
    set_fn(L, "load", sb_load);
    set_fn(L, "print", sb_print);
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
    push_proxy(L, t, "string", NULL);
    lua_setfield(L, B, "string");
    lua_settop(L, B);

    open_copy(L, LUA_TABLIBNAME, luaopen_table, NULL);
    push_proxy(L, -1, "table", NULL);
    lua_setfield(L, B, "table");
    lua_settop(L, B);
    open_copy(L, LUA_MATHLIBNAME, luaopen_math, NULL);
    push_proxy(L, -1, "math", NULL);
    lua_setfield(L, B, "math");
    lua_settop(L, B);
    open_copy(L, LUA_UTF8LIBNAME, luaopen_utf8, NULL);
    push_proxy(L, -1, "utf8", NULL);
    lua_setfield(L, B, "utf8");
    lua_settop(L, B);

    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
    lua_newtable(L);
    for (const char *const *n = os_keep; *n; n++) {
        lua_getfield(L, -2, *n);
        lua_setfield(L, -2, *n);
    }
    push_proxy(L, -1, "os", NULL);
    lua_setfield(L, B, "os");
    lua_settop(L, B);

    luaL_requiref(L, LUA_COLIBNAME, luaopen_coroutine, 0);
    lua_newtable(L);
    for (const char *const *n = co_keep; *n; n++) {
        lua_getfield(L, -2, *n);
        lua_setfield(L, -2, *n);
    }
    set_fn(L, "create", co_create);
    set_fn(L, "resume", co_resume);
    set_fn(L, "wrap", co_wrap);
    lua_getfield(L, -2, "close");
    lua_pushcclosure(L, co_close, 1);
    lua_setfield(L, -2, "close");
    push_proxy(L, -1, "coroutine", NULL);
    lua_setfield(L, B, "coroutine");
    lua_settop(L, B);
    return B;
}

/* Builds the lm table and sets B.lm to its read-only proxy; leaves the
 * table itself on the stack and returns its index. */
static int api_open(lua_State *L, int B)
{
    int t;

    lua_newtable(L);
    t = lua_gettop(L);
    set_fn(L, "log", lm_log_fn);
    set_fn(L, "time", lm_time_fn);
    set_fn(L, "now_ms", lm_now_ms_fn);
    set_fn(L, "sha256", lm_sha256_fn);
    set_fn(L, "hmac_sha256", lm_hmac_fn);
    set_fn(L, "reject", lm_reject_fn);
    set_fn(L, "retry", lm_retry_fn);
    lm_lua_pushnull(L);
    lua_setfield(L, t, "null");
    lua_newtable(L);
    set_fn(L, "encode", lm_lua_json_encode);
    set_fn(L, "decode", lm_lua_json_decode);
    set_fn(L, "array", lm_json_array_fn);
    lm_lua_pushnull(L);
    lua_setfield(L, -2, "null");
    push_proxy(L, -1, "lm.json", NULL);
    lua_setfield(L, t, "json");
    lua_pop(L, 1);
    lua_newtable(L);
    set_fn(L, "encode", lm_lua_b64_encode);
    set_fn(L, "decode", lm_lua_b64_decode);
    push_proxy(L, -1, "lm.base64", NULL);
    lua_setfield(L, t, "base64");
    lua_pop(L, 1);
    lua_newtable(L);
    set_fn(L, "get", lm_shared_get);
    set_fn(L, "incr", lm_shared_incr);
    set_fn(L, "set", lm_shared_set);
    set_fn(L, "delete", lm_shared_delete);
    push_proxy(L, -1, "lm.shared", NULL);
    lua_setfield(L, t, "shared");
    lua_pop(L, 1);
    push_proxy(L, t, "lm", lm_index);
    lua_setfield(L, B, "lm");
    return t;
}

static int vm_setup(lua_State *L)
{
    int B, t;

    lua_sethook(L, vm_hook, LUA_MASKCOUNT, HOOK_EVERY);
    /* the array marker: protected so scripts cannot share state through it */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "json.array");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lm_lua_array_key);
    lm_lua_lazy_open(L);
    B = sandbox_open(L);
    t = api_open(L, B);

    /* error messages name functions by searching the loaded-modules table
     * (unreachable from scripts): list the sandbox versions there */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_STRLIBNAME);
    lm_lua_open_patterns(L);
    lua_pop(L, 1);
    lua_getfield(L, -1, LUA_GNAME);
    copy_fields(L, B, -1, NULL);
    lua_pop(L, 1);
    lua_pushvalue(L, t);
    lua_setfield(L, -2, "lm");
    lua_settop(L, B);

    /* no real global table any more */
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &base_key);
    return 0;
}

typedef struct load_s {
    lm_lua_vm_t *vm;
    size_t i;
} load_t;

/* Compile and run script i's top-level chunk in a new _ENV, collect its
 * stage functions, then freeze the _ENV. */
static int vm_load_script(lua_State *L)
{
    load_t *ld = lua_touserdata(L, 1);
    lm_lua_vm_t *vm = ld->vm;
    gen_script_t *gs = &vm->gen->s[ld->i];
    vm_script_t *vs = &vm->s[ld->i];
    char chunk[1100];
    int E, D;

    lua_settop(L, 0);
    lua_newtable(L);
    E = lua_gettop(L);
    lua_createtable(L, 0, 2);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &base_key);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, E);
    lua_pushvalue(L, E);
    lua_setfield(L, E, "_G");
    lua_pushvalue(L, E);
    vs->env = luaL_ref(L, LUA_REGISTRYINDEX);

    snprintf(chunk, sizeof(chunk), "@%s", gs->path);
    if (luaL_loadbufferx(L, gs->src, gs->srclen, chunk, "t") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, E);
    lua_setupvalue(L, -2, 1);
    if (gs->args)
        lm_lua_push_json(L, gs->args, 0);
    else
        lua_newtable(L);
    lua_call(L, 1, 0);

    /* collect and freeze */
    lua_newtable(L);
    D = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, E)) {
        if (lua_type(L, -2) == LUA_TSTRING && strncmp(lua_tostring(L, -2), "on_", 3) == 0) {
            const char *k = lua_tostring(L, -2);
            int st = -1;
            for (int s = 1; s < LM_LUA_NSTAGES; s++)
                if (strcmp(k, stage_fns[s]) == 0)
                    st = s;
            if (st < 0)
                return luaL_error(L,
                                  "%s: unknown stage function '%s' (stages: on_request, on_route, "
                                  "on_upstream_request, on_event, on_response, on_usage, "
                                  "on_error, on_log)",
                                  gs->path, k);
            if (lua_type(L, -1) != LUA_TFUNCTION)
                return luaL_error(L, "%s: %s must be a function", gs->path, k);
            lua_pushvalue(L, -1);
            vs->fn[st] = luaL_ref(L, LUA_REGISTRYINDEX);
            vs->stages |= LM_LUA_BIT(st);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, D); /* D[k] = v */
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, E); /* E[k] = nil: clearing during traversal is allowed */
    }
    lua_createtable(L, 0, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &base_key);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, D);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, D);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, global_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, E);
    mark_frozen(L, E);
    return 0;
}

static int vm_msgh(lua_State *L)
{
    /* never call __tostring on the error object: it may error again
     * (CVE-2022-33099 class) or loop */
    if (lua_type(L, 1) == LUA_TSTRING) {
        luaL_traceback(L, L, lua_tostring(L, 1), 1);
        return 1;
    }
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    return 1;
}

static int vm_panic(lua_State *L)
{
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
    lm_log(LM_LOG_ERROR, "lua: unprotected error (panic): %s", m);
    return 0;
}

static void vm_free(lm_lua_vm_t *vm)
{
    if (vm->L)
        lua_close(vm->L);
    lm_lua_gen_release(vm->gen);
    free(vm->s);
    free(vm);
}

/* First line of msg into dst. */
static void first_line(char *dst, size_t cap, const char *msg)
{
    size_t n = strcspn(msg ? msg : "", "\n");
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, msg ? msg : "", n);
    dst[n] = 0;
}

lm_lua_vm_t *lm_lua_vm_new(lm_lua_gen_t *gen, char *err, size_t errlen)
{
    lm_lua_vm_t *vm = calloc(1, sizeof(*vm));
    lua_State *L;

    if (err && errlen)
        err[0] = 0;
    if (!vm || !(vm->s = calloc(gen->n ? gen->n : 1, sizeof(*vm->s)))) {
        free(vm);
        if (err)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    vm->refs = 1;
    vm->gen = lm_lua_gen_acquire(gen);
    vm->mem_cap = gen->lim.memory;
    vm->cur_req = vm->cur_resp = LUA_NOREF;
    for (size_t i = 0; i < gen->n; i++) {
        vm->s[i].env = LUA_NOREF;
        for (int s = 0; s < LM_LUA_NSTAGES; s++)
            vm->s[i].fn[s] = LUA_NOREF;
    }
    vm->L = L = lua_newstate(vm_alloc, vm);
    if (!L) {
        if (err)
            snprintf(err, errlen, "cannot create a Lua state (memory cap %zu bytes)", vm->mem_cap);
        vm_free(vm);
        return NULL;
    }
    lua_atpanic(L, vm_panic);
    lua_pushcfunction(L, vm_setup);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        if (err)
            snprintf(err, errlen, "cannot set up the Lua sandbox: %s", lua_tostring(L, -1));
        vm_free(vm);
        return NULL;
    }
    for (size_t i = 0; i < gen->n; i++) {
        load_t ld = {vm, i};
        int st;
        lua_settop(L, 0);
        lim_start(vm, i, LM_LUA_STAGE_LOAD);
        lua_pushcfunction(L, vm_msgh);
        lua_pushcfunction(L, vm_load_script);
        lua_pushlightuserdata(L, &ld);
        st = lua_pcall(L, 1, 0, 1);
        vm->running = 0;
        if (st != LUA_OK) {
            const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error";
            char line[900];
            first_line(line, sizeof(line), m);
            if (err) {
                /* runtime and syntax errors already start with "path:line:" */
                if (strncmp(line, gen->s[i].path, strlen(gen->s[i].path)) == 0)
                    snprintf(err, errlen, "%s", line);
                else
                    snprintf(err, errlen, "%s: %s", gen->s[i].path, line);
            }
            vm_free(vm);
            return NULL;
        }
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return vm;
}

void lm_lua_vm_release(lm_lua_vm_t *vm)
{
    if (vm && --vm->refs == 0)
        vm_free(vm);
}

lm_lua_gen_t *lm_lua_vm_gen(const lm_lua_vm_t *vm)
{
    return vm->gen;
}

size_t lm_lua_vm_memory(const lm_lua_vm_t *vm)
{
    return vm->mem;
}

size_t lm_lua_vm_collect(lm_lua_vm_t *vm)
{
    lua_gc(vm->L, LUA_GCCOLLECT, 0);
    return vm->mem;
}

/* ------------------------------------------------------------------ */
/* generations                                                         */

static void gen_free(lm_lua_gen_t *gen)
{
    for (size_t i = 0; i < gen->n; i++) {
        gen_script_t *s = &gen->s[i];
        free(s->name);
        free(s->path);
        free(s->src);
        for (size_t j = 0; j < s->nmodels; j++)
            free(s->models[j]);
        for (size_t j = 0; j < s->nkeys; j++)
            free(s->keys[j]);
        free(s->models);
        free(s->keys);
        json_decref(s->args);
    }
    free(gen->s);
    free(gen);
}

static char **dup_list(const char *const *v, size_t n, int *oom)
{
    char **r;
    if (!n)
        return NULL;
    r = calloc(n, sizeof(*r));
    if (!r) {
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!(r[i] = dup_str(v[i])))
            *oom = 1;
    return r;
}

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    long n;
    char *p;

    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        fclose(f);
        return -1;
    }
    if (n > MAX_SCRIPT_BYTES) {
        snprintf(err, errlen, "%s: script larger than %ld bytes", path, MAX_SCRIPT_BYTES);
        fclose(f);
        return -1;
    }
    p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
        snprintf(err, errlen, "%s: cannot read: %s", path, p ? strerror(errno) : "out of memory");
        free(p);
        fclose(f);
        return -1;
    }
    fclose(f);
    p[n] = 0;
    *out = p;
    *len = (size_t)n;
    return 0;
}

lm_lua_gen_t *lm_lua_gen_load(const lm_lua_script_spec_t *specs, size_t n,
                              const lm_lua_limits_t *limits, lm_lua_shared_t *shared, char *err,
                              size_t errlen)
{
    lm_lua_gen_t *gen = calloc(1, sizeof(*gen));
    lm_lua_vm_t *vm;
    char dummy[8];
    int oom = 0;

    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = 0;
    if (!gen || (n && !(gen->s = calloc(n, sizeof(*gen->s))))) {
        free(gen);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&gen->refs, 1);
    gen->shared = shared;
    gen->lim.instructions =
        limits && limits->instructions ? limits->instructions : DEF_INSTRUCTIONS;
    gen->lim.deadline_ms = limits && limits->deadline_ms ? limits->deadline_ms : DEF_DEADLINE_MS;
    gen->lim.memory = limits && limits->memory ? limits->memory : DEF_MEMORY;
    gen->n = n;
    for (size_t i = 0; i < n; i++) {
        const lm_lua_script_spec_t *sp = &specs[i];
        gen_script_t *s = &gen->s[i];
        atomic_init(&s->errors, 0);
        atomic_init(&s->limits, 0);
        if (!sp->name || !*sp->name || !sp->path || !*sp->path) {
            snprintf(err, errlen, "script %zu: a name and a path are required", i + 1);
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(specs[j].name, sp->name) == 0) {
                snprintf(err, errlen, "%s: duplicate script name \"%s\"", sp->path, sp->name);
                goto fail;
            }
        s->name = dup_str(sp->name);
        s->path = dup_str(sp->path);
        s->models = dup_list(sp->models, sp->nmodels, &oom);
        s->nmodels = s->models ? sp->nmodels : 0;
        s->keys = dup_list(sp->keys, sp->nkeys, &oom);
        s->nkeys = s->keys ? sp->nkeys : 0;
        s->args = sp->args ? json_deep_copy(sp->args) : NULL;
        if (oom || !s->name || !s->path || (sp->args && !s->args)) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (read_file(sp->path, &s->src, &s->srclen, err, errlen))
            goto fail;
    }
    /* validate: compile and run everything in a fresh state */
    vm = lm_lua_vm_new(gen, err, errlen);
    if (!vm)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        gen->s[i].stages = vm->s[i].stages;
        gen->stages |= vm->s[i].stages;
    }
    lm_lua_vm_release(vm);
    return gen;
fail:
    gen_free(gen);
    return NULL;
}

lm_lua_gen_t *lm_lua_gen_acquire(lm_lua_gen_t *gen)
{
    if (gen)
        atomic_fetch_add(&gen->refs, 1);
    return gen;
}

void lm_lua_gen_release(lm_lua_gen_t *gen)
{
    if (gen && atomic_fetch_sub(&gen->refs, 1) == 1)
        gen_free(gen);
}

unsigned lm_lua_gen_stages(const lm_lua_gen_t *gen)
{
    return gen->stages;
}

size_t lm_lua_gen_nscripts(const lm_lua_gen_t *gen)
{
    return gen->n;
}

const char *lm_lua_gen_script_name(const lm_lua_gen_t *gen, size_t i)
{
    return i < gen->n ? gen->s[i].name : NULL;
}

void lm_lua_gen_stats(const lm_lua_gen_t *gen, size_t i, lm_lua_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (i < gen->n) {
        out->errors = atomic_load(&gen->s[i].errors);
        out->limits = atomic_load(&gen->s[i].limits);
    }
}

/* ------------------------------------------------------------------ */
/* calls                                                               */

static int match_any(char *const *pats, size_t n, const char *s)
{
    if (!n)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (fnmatch(pats[i], s ? s : "", 0) == 0)
            return 1;
    return 0;
}

lm_lua_call_t *lm_lua_call_begin(lm_lua_vm_t *vm, const char *key_name, const char *key_group,
                                 json_t *req)
{
    lm_lua_gen_t *gen = vm->gen;
    lm_lua_call_t *call = calloc(1, sizeof(*call));
    const char *model = NULL;
    json_t *m;

    if (!call)
        return NULL;
    call->applies = calloc(gen->n ? gen->n : 1, 1);
    call->ctx = calloc(gen->n ? gen->n : 1, sizeof(int));
    call->meta = json_object();
    call->key_name = dup_str(key_name ? key_name : "");
    call->key_group = key_group ? dup_str(key_group) : NULL;
    if (!call->applies || !call->ctx || !call->meta || !call->key_name ||
        (key_group && !call->key_group)) {
        free(call->applies);
        free(call->ctx);
        json_decref(call->meta);
        free(call->key_name);
        free(call->key_group);
        free(call);
        return NULL;
    }
    call->req = json_incref(req);
    call->anchor = call->view = LUA_NOREF;
    if (req && (m = json_object_get(req, "model")) && json_is_string(m))
        model = json_string_value(m);
    for (size_t i = 0; i < gen->n; i++) {
        call->ctx[i] = LUA_NOREF;
        if (match_any(gen->s[i].models, gen->s[i].nmodels, model) &&
            match_any(gen->s[i].keys, gen->s[i].nkeys, key_name)) {
            call->applies[i] = 1;
            call->stages |= vm->s[i].stages;
        }
    }
    call->vm = vm;
    vm->refs++;
    return call;
}

static void unref(lua_State *L, int *ref)
{
    if (*ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    *ref = LUA_NOREF;
}

/* Forget the cached request anchor and view. An anchor that still shows
 * the live request switches to a copy of it first (req may be changed in
 * place later, by on_request or the caller; pending tables keep showing
 * what they were made from). 0, or -1 when out of memory. Never raises. */
static int drop_view(lm_lua_call_t *call)
{
    lua_State *L = call->vm->L;
    int rc = 0;

    if (call->anchor != LUA_NOREF && lua_checkstack(L, 3)) {
        lm_lua_anchor_t *a;
        lua_rawgeti(L, LUA_REGISTRYINDEX, call->anchor);
        a = lm_lua_to_anchor(L, -1);
        if (a && call->req && a->j[SLOT_REQ] == call->req)
            rc = lm_lua_anchor_snapshot(a, SLOT_REQ);
        lua_pop(L, 1);
    }
    unref(L, &call->anchor);
    unref(L, &call->view);
    return rc;
}

void lm_lua_call_end(lm_lua_call_t *call)
{
    if (!call)
        return;
    for (size_t i = 0; i < call->vm->gen->n; i++)
        if (call->ctx[i] != LUA_NOREF)
            luaL_unref(call->vm->L, LUA_REGISTRYINDEX, call->ctx[i]);
    unref(call->vm->L, &call->anchor); /* req is not changed after the end */
    unref(call->vm->L, &call->view);
    json_decref(call->req);
    json_decref(call->meta);
    free(call->applies);
    free(call->ctx);
    free(call->key_name);
    free(call->key_group);
    lm_lua_vm_release(call->vm);
    free(call);
}

unsigned lm_lua_call_stages(const lm_lua_call_t *call)
{
    return call->stages;
}

json_t *lm_lua_call_meta(lm_lua_call_t *call)
{
    return call->meta;
}

int lm_lua_call_request_changed(const lm_lua_call_t *call)
{
    return call->req_changed;
}

/* Pushes a pending table over JSON j (objects and arrays; other values are
 * pushed as they are). */
static void push_lazy_json(lua_State *L, json_t *j, int depth)
{
    lm_lua_anchor_t *a;

    if (!json_is_object(j) && !json_is_array(j)) {
        lm_lua_push_json(L, j, depth);
        return;
    }
    a = lm_lua_push_anchor(L, lm_lua_json_cost(j), 0);
    a->j[0] = json_incref(j);
    a->depth[0] = depth;
    lm_lua_push_lazy(L, -1, 0);
    lua_remove(L, -2);
}

/* t[name] = the value on top (pops it), without metamethods: t may still
 * carry the pending metatable while it is being filled. */
static void rawset_field(lua_State *L, int t, const char *name)
{
    lua_pushstring(L, name);
    lua_insert(L, -2);
    lua_rawset(L, t);
}

/* Pushes slot `slot` of the anchor at src: a pending table for objects and
 * arrays, the value itself otherwise. */
static void push_slot(lua_State *L, int src, const lm_lua_anchor_t *a, int slot, unsigned flags)
{
    if (json_is_object(a->j[slot]) || json_is_array(a->j[slot]))
        lm_lua_push_lazy(L, src, (unsigned)slot | flags);
    else
        lm_lua_push_json(L, a->j[slot], a->depth[slot]);
}

/* Materialises a request view: {model, messages, params, key, group,
 * meta}, with messages, params and meta pending in turn. */
static void fill_reqview(lua_State *L, int t, int src, lm_lua_anchor_t *a)
{
    luaL_checkstack(L, 4, NULL);
    if (a->j[SLOT_MODEL]) {
        lm_lua_push_json(L, a->j[SLOT_MODEL], a->depth[SLOT_MODEL]);
        rawset_field(L, t, "model");
    }
    if (a->j[SLOT_MESSAGES]) {
        push_slot(L, src, a, SLOT_MESSAGES, 0);
        rawset_field(L, t, "messages");
    }
    if (a->j[SLOT_REQ])
        push_slot(L, src, a, SLOT_REQ, LM_LUA_LAZY_PARAMS);
    else
        lua_newtable(L);
    rawset_field(L, t, "params");
    lua_getiuservalue(L, src, 1);
    rawset_field(L, t, "key");
    if (lua_getiuservalue(L, src, 2) == LUA_TSTRING)
        rawset_field(L, t, "group");
    else
        lua_pop(L, 1);
    push_slot(L, src, a, SLOT_META, 0);
    rawset_field(L, t, "meta");
}

/* Whether the anchor still shows what the call has now. */
static int anchor_current(const lm_lua_call_t *call, const lm_lua_anchor_t *a)
{
    json_t *req = json_is_object(call->req) ? call->req : NULL;
    return a->j[SLOT_REQ] == req && a->j[SLOT_MODEL] == json_object_get(req, "model") &&
           a->j[SLOT_MESSAGES] == json_object_get(req, "messages") && a->j[SLOT_META] == call->meta;
}

static void push_request_anchor(lua_State *L, lm_lua_call_t *call)
{
    json_t *req = json_is_object(call->req) ? call->req : NULL;
    lm_lua_anchor_t *a =
        lm_lua_push_anchor(L, lm_lua_json_cost(req) + lm_lua_json_cost(call->meta), 2);

    a->fill = fill_reqview;
    a->j[SLOT_REQ] = json_incref(req);
    a->j[SLOT_MODEL] = json_incref(json_object_get(req, "model"));
    a->j[SLOT_MESSAGES] = json_incref(json_object_get(req, "messages"));
    a->j[SLOT_META] = json_incref(call->meta);
    a->depth[SLOT_MODEL] = a->depth[SLOT_MESSAGES] = 1;
    lua_pushstring(L, call->key_name);
    lua_setiuservalue(L, -2, 1);
    if (call->key_group) {
        lua_pushstring(L, call->key_group);
        lua_setiuservalue(L, -2, 2);
    }
}

/* The request as scripts see it: {model, messages, params, key, group,
 * meta}, as a pending table. Stages share one anchor per request, and one
 * view while no script has looked at it (a view a script touched may have
 * been changed: the next stage gets a fresh one, as changes outside
 * on_request are ignored). */
static void push_reqview(lua_State *L, lm_lua_call_t *call)
{
    luaL_checkstack(L, 4, NULL);
    if (call->anchor != LUA_NOREF) {
        lm_lua_anchor_t *a;
        lua_rawgeti(L, LUA_REGISTRYINDEX, call->anchor);
        a = lm_lua_to_anchor(L, -1);
        if (a == NULL || !anchor_current(call, a)) {
            lua_pop(L, 1);
            drop_view(call);
        } else if (call->view != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, call->view);
            if (lm_lua_lazy_pending(L, -1)) {
                lua_remove(L, -2);
                return;
            }
            lua_pop(L, 1);
        }
    }
    if (call->anchor == LUA_NOREF) {
        push_request_anchor(L, call);
        lua_pushvalue(L, -1);
        call->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lm_lua_push_lazy(L, -1, LM_LUA_LAZY_VIEW);
    lua_remove(L, -2);
    unref(L, &call->view);
    lua_pushvalue(L, -1);
    call->view = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ------------------------------------------------------------------ */
/* the stage runner                                                    */

typedef struct run_s run_t;
struct run_s {
    lm_lua_call_t *call;
    lm_lua_stage_t stage;
    json_t *in[3];    /* borrowed inputs */
    const char *text; /* borrowed input as JSON text (route, upstream, event, ...) */
    size_t tlen;
    const char *text2; /* a second one (usage: the price) */
    size_t tlen2;
    int64_t charge; /* usage: in and out */
    int started;    /* error: bytes reached the client */
    int keep;       /* event: send the input as it came (out[0] unused) */
    int changed;
    json_t *out[2]; /* new refs made by collect */
    json_t *tmp;    /* made by push for this call only; released after it */
    int nargs;
    void (*push)(lua_State *L, run_t *r);
    void (*collect)(lua_State *L, run_t *r, int args, int res, int nres);
};

static int run_protected(lua_State *L)
{
    run_t *r = lua_touserdata(L, 1);
    lm_lua_vm_t *vm = vm_of(L);
    int args, res, nres;

    lua_settop(L, 1);
    r->push(L, r);
    args = 2;
    luaL_checkstack(L, r->nargs + 2, NULL);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->s[vm->script].fn[r->stage]);
    for (int i = 0; i < r->nargs; i++)
        lua_pushvalue(L, args + i);
    lua_call(L, r->nargs, LUA_MULTRET);
    res = args + r->nargs;
    nres = lua_gettop(L) - res + 1;
    if (!vm->reject_status)
        r->collect(L, r, args, res, nres);
    return 0;
}

static void make_errid(char *dst, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[8];
    char s[24];

    if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
        uint64_t x = (uint64_t)lm_clock_ns() ^ (uint64_t)(uintptr_t)dst;
        memcpy(rnd, &x, sizeof(rnd));
    }
    memcpy(s, "lua-", 4);
    for (int i = 0; i < 8; i++) {
        s[4 + 2 * i] = hex[rnd[i] >> 4];
        s[4 + 2 * i + 1] = hex[rnd[i] & 15];
    }
    s[20] = 0;
    copy_str(dst, cap, s);
}

/* A host-side allocation failed after a script ran: a 500 like a script
 * error (with an error id), but not counted against the script. */
static int host_oom(lm_lua_result_t *res)
{
    res->status = 500;
    copy_str(res->message, sizeof(res->message), "out of memory");
    make_errid(res->errid, sizeof(res->errid));
    return LM_LUA_ERROR;
}

static void vm_fail(lm_lua_vm_t *vm, size_t i, int stage, int st, const char *msg,
                    lm_lua_result_t *res)
{
    gen_script_t *gs = &vm->gen->s[i];
    int limit = vm->expired || st == LUA_ERRMEM;
    char flat[1024];
    size_t o = 0;

    res->status = 500;
    make_errid(res->errid, sizeof(res->errid));
    copy_str(res->script, sizeof(res->script), gs->name);
    first_line(res->message, sizeof(res->message), msg);
    atomic_fetch_add_explicit(&gs->errors, 1, memory_order_relaxed);
    if (limit)
        atomic_fetch_add_explicit(&gs->limits, 1, memory_order_relaxed);
    /* the traceback on one line */
    for (const char *p = msg ? msg : "?"; *p && o + 4 < sizeof(flat); p++) {
        if (*p == '\n') {
            memcpy(flat + o, " | ", 3);
            o += 3;
        } else if (*p != '\t') {
            flat[o++] = *p;
        }
    }
    flat[o] = 0;
    lm_log(stage == LM_LUA_STAGE_LOG ? LM_LOG_WARN : LM_LOG_ERROR,
           "lua %s: script %s, stage %s: %s", res->errid, gs->name, stage_names[stage], flat);
    if (limit)
        lua_gc(vm->L, LUA_GCCOLLECT, 0);
}

/* Run script i's function for r->stage. On LM_LUA_OK the outputs are in
 * r->out (new refs, caller frees; NULL when the script left the data as it
 * was); on other codes r->out is empty. */
static int vm_run(lm_lua_vm_t *vm, size_t i, run_t *r, lm_lua_result_t *res)
{
    lua_State *L = vm->L;
    int base = lua_gettop(L), st, rc = LM_LUA_OK;

    r->out[0] = r->out[1] = r->tmp = NULL;
    r->changed = r->keep = 0;
    if (!lua_checkstack(L, 4)) {
        vm_fail(vm, i, r->stage, LUA_ERRMEM, "stack overflow", res);
        return LM_LUA_ERROR;
    }
    vm->call = r->call;
    lim_start(vm, i, r->stage);
    lua_pushcfunction(L, vm_msgh);
    lua_pushcfunction(L, run_protected);
    lua_pushlightuserdata(L, r);
    st = lua_pcall(L, 1, 0, base + 1);
    vm->running = 0;
    json_decref(r->tmp);
    r->tmp = NULL;
    if (st != LUA_OK) {
        const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error";
        if (st == LUA_ERRMEM)
            m = "not enough memory (the script's memory cap was reached)";
        json_decref(r->out[0]);
        json_decref(r->out[1]);
        r->out[0] = r->out[1] = NULL;
        vm_fail(vm, i, r->stage, st, m, res);
        rc = LM_LUA_ERROR;
    } else if (vm->reject_status) {
        json_decref(r->out[0]);
        json_decref(r->out[1]);
        r->out[0] = r->out[1] = NULL;
        res->status = vm->reject_status;
        copy_str(res->message, sizeof(res->message), vm->reject_msg);
        copy_str(res->code, sizeof(res->code), vm->reject_code);
        copy_str(res->script, sizeof(res->script), vm->gen->s[i].name);
        rc = LM_LUA_REJECT;
    } else if (vm->retry) {
        copy_str(res->model, sizeof(res->model), vm->retry_model);
        copy_str(res->script, sizeof(res->script), vm->gen->s[i].name);
        rc = LM_LUA_RETRY;
    }
    if (vm->cur_req != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, vm->cur_req);
    if (vm->cur_resp != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, vm->cur_resp);
    vm->cur_req = vm->cur_resp = LUA_NOREF;
    vm->call = NULL;
    lua_settop(L, base);
    return rc;
}

static int runs(lm_lua_call_t *call, size_t i, lm_lua_stage_t st)
{
    return call->applies[i] && call->vm->s[i].fn[st] != LUA_NOREF;
}

static void res_clear(lm_lua_result_t *res)
{
    memset(res, 0, sizeof(*res));
}

/* The table to read back: a returned table replaces the argument. */
static int pick_table(lua_State *L, int arg, int res, int nres, const char *fn)
{
    if (nres >= 1 && !lua_isnil(L, res)) {
        if (lua_type(L, res) != LUA_TTABLE)
            luaL_error(L, "%s must return nothing or a table (got a %s)", fn,
                       luaL_typename(L, res));
        return res;
    }
    if (lua_type(L, arg) != LUA_TTABLE)
        luaL_error(L, "%s: its argument is no longer a table", fn);
    return arg;
}

/* 1 when the table to read back at t is the argument at arg and no script
 * code has looked at it: there is nothing to convert back. */
static int untouched(lua_State *L, int t, int arg)
{
    return lua_rawequal(L, t, arg) && lm_lua_lazy_pending(L, t);
}

/* Pushes the input as a pending table (not charged: a Lua string). */
static void push_text(lua_State *L, run_t *r)
{
    lm_lua_push_lazy_text(L, r->text, r->tlen);
    r->nargs = 1;
}

/* Pushes the argument as a pending table over a shallow copy of r->in[0]
 * (the caller changes the original between scripts; the copy keeps what
 * this script was shown). */
static void push_lazy_copy(lua_State *L, run_t *r)
{
    r->tmp = json_copy(r->in[0]);
    if (r->tmp == NULL)
        luaL_error(L, "out of memory");
    push_lazy_json(L, r->tmp, 0);
}

/* ---- on_request ---- */

static void push_request(lua_State *L, run_t *r)
{
    lm_lua_vm_t *vm = vm_of(L);
    push_reqview(L, r->call);
    lua_pushvalue(L, -1);
    vm->cur_req = luaL_ref(L, LUA_REGISTRYINDEX);
    r->nargs = 1;
}

/* Unknown fields are a mistake worth reporting. */
static void check_request_fields(lua_State *L, int t)
{
    static const char *const known[] = {"model", "messages", "params", "key",
                                        "group", "meta",     NULL};

    lua_pushnil(L);
    while (lua_next(L, t)) {
        int ok = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (const char *const *k = known; *k; k++)
                if (strcmp(*k, lua_tostring(L, -2)) == 0)
                    ok = 1;
        if (!ok)
            luaL_error(L, "req.%s: unknown field (request parameters go in req.params)",
                       lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?");
        lua_pop(L, 1);
    }
}

/* 1 when field `name` of the view at t still says what `was` says (absent
 * on both sides is the same). */
static int field_same(lua_State *L, int t, const char *name, const json_t *was, unsigned flags)
{
    int same;

    lua_pushstring(L, name);
    if (lua_rawget(L, t) == LUA_TNIL)
        same = was == NULL;
    else
        same = lm_lua_same_json(L, -1, was, flags);
    lua_pop(L, 1);
    return same;
}

static int messages_same(lua_State *L, int t, const json_t *was)
{
    int same;

    if (field_same(L, t, "messages", was, 0))
        return 1;
    if (!json_is_array(was) || json_array_size(was) != 0)
        return 0;
    /* {} is how a script writes an empty list */
    lua_pushliteral(L, "messages");
    same = lua_rawget(L, t) == LUA_TTABLE;
    if (same) {
        lm_lua_touch(L, -1);
        lua_pushnil(L);
        same = !lua_next(L, -2);
        if (!same)
            lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return same;
}

/* The parameters: req without model and messages (req may have none). */
static int params_same(lua_State *L, int t, const json_t *req)
{
    size_t n = json_object_size(req);
    int same;

    lua_pushliteral(L, "params");
    if (lua_rawget(L, t) == LUA_TNIL) {
        n -= (size_t)(json_object_get(req, "model") != NULL) +
             (size_t)(json_object_get(req, "messages") != NULL);
        same = n == 0;
    } else {
        same = lm_lua_same_json(L, -1, req, LM_LUA_LAZY_PARAMS);
    }
    lua_pop(L, 1);
    return same;
}

static void body_params(lua_State *L, int t, json_t *body, json_t *keep_from)
{
    const char *k;
    size_t kl;
    json_t *v;

    lua_pushliteral(L, "params");
    switch (lua_rawget(L, t)) {
    case LUA_TNIL: break;
    case LUA_TTABLE:
        if (keep_from) { /* unchanged: share the values instead of converting them */
            json_object_foreach (keep_from, k, v)
                if (strcmp(k, "model") && strcmp(k, "messages") && !json_is_null(v) &&
                    json_object_set(body, k, v))
                    luaL_error(L, "out of memory");
            break; /* (null parameters are dropped either way, as lm.null below) */
        }
        lm_lua_touch(L, -1);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "req.params: keys must be strings");
            k = lua_tolstring(L, -2, &kl);
            if (strcmp(k, "model") && strcmp(k, "messages") && !lm_lua_isnull(L, -1))
                to_json(L, -1, 1, "req.params", body, k, kl, NULL);
            lua_pop(L, 1);
        }
        break;
    default: luaL_error(L, "req.params must be a table");
    }
    lua_pop(L, 1);
}

static void body_model(lua_State *L, int t, json_t *body)
{
    lua_pushliteral(L, "model");
    switch (lua_rawget(L, t)) {
    case LUA_TNIL: break;
    case LUA_TSTRING:
        if (lua_rawlen(L, -1) == 0)
            luaL_error(L, "req.model must not be empty");
        to_json(L, -1, 1, "req.model", body, "model", 5, NULL);
        break;
    default: luaL_error(L, "req.model must be a string");
    }
    lua_pop(L, 1);
}

static void body_messages(lua_State *L, int t, json_t *body, json_t *keep)
{
    size_t n;

    lua_pushliteral(L, "messages");
    switch (lua_rawget(L, t)) {
    case LUA_TNIL: break;
    case LUA_TTABLE:
        if (keep) {
            if (json_object_set(body, "messages", keep))
                luaL_error(L, "out of memory");
        } else if (lm_lua_table_kind(L, -1, &n) == 0 && n == 0) {
            lua_pushnil(L);
            if (lua_next(L, -2))
                luaL_error(L, "req.messages must be an array");
            tj_attach(L, json_array(), body, "messages", 8, NULL);
        } else {
            to_json(L, -1, 1, "req.messages", body, "messages", 8, NULL);
            if (!json_is_array(json_object_get(body, "messages")))
                luaL_error(L, "req.messages must be an array");
        }
        break;
    default: luaL_error(L, "req.messages must be an array");
    }
    lua_pop(L, 1);
}

/* Reads the view at t back. Only what differs from the request (and meta)
 * is converted: out[0] is the new body or NULL when model, messages and
 * parameters say what they said; out[1] the new meta or NULL. Values that
 * did not change are shared with the old request, not copied. */
static void collect_request(lua_State *L, run_t *r, int args, int res, int nres)
{
    json_t *req = json_is_object(r->call->req) ? r->call->req : NULL;
    json_t *msgs = json_object_get(req, "messages");
    int t = pick_table(L, args, res, nres, "on_request"), same_params, same_msgs;

    if (untouched(L, t, args))
        return;
    lm_lua_touch(L, t);
    check_request_fields(L, t);
    same_params = req && params_same(L, t, req);
    same_msgs = req && messages_same(L, t, msgs);
    if (!same_params || !same_msgs ||
        !field_same(L, t, "model", json_object_get(req, "model"), 0)) {
        r->out[0] = json_object();
        if (!r->out[0])
            luaL_error(L, "out of memory");
        body_params(L, t, r->out[0], same_params ? req : NULL);
        body_model(L, t, r->out[0]);
        body_messages(L, t, r->out[0], same_msgs ? msgs : NULL);
    }
    if (field_same(L, t, "meta", r->call->meta, 0))
        return;
    lua_pushliteral(L, "meta");
    if (lua_rawget(L, t) == LUA_TNIL) {
        r->out[1] = json_object();
        if (!r->out[1])
            luaL_error(L, "out of memory");
    } else {
        to_json_object(L, -1, "req.meta", &r->out[1]);
    }
    lua_pop(L, 1);
}

/* Replaces req's members with body's (steals body). */
static int rewrite_request(lm_lua_call_t *call, json_t *req, json_t *body)
{
    int rc = drop_view(call);

    if (rc == 0)
        rc = replace_object(req, body);
    json_decref(body);
    if (rc == 0)
        call->req_changed = 1;
    return rc;
}

int lm_lua_on_request(lm_lua_call_t *call, json_t *req, lm_lua_result_t *res)
{
    res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_REQUEST)))
        return LM_LUA_OK;
    if (req != call->req) {
        drop_view(call);
        json_incref(req);
        json_decref(call->req);
        call->req = req;
    }
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        run_t r = {.call = call,
                   .stage = LM_LUA_STAGE_REQUEST,
                   .push = push_request,
                   .collect = collect_request};
        int rc;
        if (!runs(call, i, LM_LUA_STAGE_REQUEST))
            continue;
        rc = vm_run(call->vm, i, &r, res);
        if (rc != LM_LUA_OK)
            return rc;
        if (r.out[0] && rewrite_request(call, req, r.out[0])) {
            json_decref(r.out[1]);
            return host_oom(res);
        }
        if (r.out[1]) {
            json_decref(call->meta); /* anchors hold their own reference */
            call->meta = r.out[1];
        }
    }
    return LM_LUA_OK;
}

/* ---- on_route ---- */

/* The request view (also lm.request) and the stage's text input. */
static void push_req_and_text(lua_State *L, run_t *r)
{
    lm_lua_vm_t *vm = vm_of(L);
    push_reqview(L, r->call);
    lua_pushvalue(L, -1);
    vm->cur_req = luaL_ref(L, LUA_REGISTRYINDEX);
    lm_lua_push_lazy_text(L, r->text, r->tlen);
    r->nargs = 2;
}

static void collect_route(lua_State *L, run_t *r, int args, int res, int nres)
{
    size_t n;
    json_t *names;

    (void)args;
    if (nres < 1 || lua_isnil(L, res))
        return;
    if (lua_type(L, res) != LUA_TTABLE)
        luaL_error(L, "on_route must return a list of channel names (got a %s)",
                   luaL_typename(L, res));
    r->out[0] = names = json_array();
    if (!names)
        luaL_error(L, "out of memory");
    lm_lua_touch(L, res);
    n = (size_t)lua_rawlen(L, res);
    for (size_t i = 1; i <= n; i++) {
        int t = lua_rawgeti(L, res, (lua_Integer)i);
        if (t == LUA_TTABLE) {
            lm_lua_touch(L, -1);
            lua_pushliteral(L, "name");
            lua_rawget(L, -2);
            lua_remove(L, -2);
        }
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "on_route: item %d is not a channel name or candidate", (int)i);
        to_json(L, -1, 1, "on_route", names, NULL, 0, NULL);
        lua_pop(L, 1);
    }
    r->changed = 1;
}

static json_t *find_candidate(json_t *list, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach (list, i, c) {
        json_t *nm = json_object_get(c, "name");
        if (json_is_string(nm) && strcmp(json_string_value(nm), name) == 0)
            return c;
    }
    return NULL;
}

/* First byte that is not JSON white space. */
static char first_char(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i < n ? s[i] : 0;
}

/* The candidates in the order names gives (unknown and repeated names
 * dropped); a new array. */
static json_t *reorder(json_t *cur, json_t *names)
{
    json_t *next = json_array(), *nm;
    size_t j;

    json_array_foreach (names, j, nm) {
        json_t *c = find_candidate(cur, json_string_value(nm));
        if (next && c && !find_candidate(next, json_string_value(nm)) &&
            json_array_append(next, c)) {
            json_decref(next);
            return NULL;
        }
    }
    return next;
}

int lm_lua_on_route_text(lm_lua_call_t *call, const char *cands, size_t len, json_t **order,
                         lm_lua_result_t *res)
{
    json_t *cur = NULL; /* the candidates as JSON, once a script reordered them */
    char *text = NULL;  /* and as text, for the scripts after it */
    size_t j;
    json_t *c;

    res_clear(res);
    *order = NULL;
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_ROUTE)) || first_char(cands, len) != '[')
        return LM_LUA_OK;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        run_t r = {.call = call,
                   .stage = LM_LUA_STAGE_ROUTE,
                   .text = text ? text : cands,
                   .tlen = text ? strlen(text) : len,
                   .push = push_req_and_text,
                   .collect = collect_route};
        json_t *next;
        int rc;
        if (!runs(call, i, LM_LUA_STAGE_ROUTE))
            continue;
        rc = vm_run(call->vm, i, &r, res);
        if (rc != LM_LUA_OK) {
            json_decref(cur);
            free(text);
            return rc;
        }
        if (!r.changed)
            continue;
        if (!cur)
            cur = json_loadb(cands, len, 0, NULL);
        next = cur ? reorder(cur, r.out[0]) : NULL;
        json_decref(r.out[0]);
        json_decref(cur);
        free(text);
        cur = next;
        text = cur ? json_dumps(cur, JSON_COMPACT) : NULL;
        if (!text) {
            json_decref(cur);
            return host_oom(res);
        }
    }
    free(text);
    if (cur) {
        *order = json_array();
        json_array_foreach (cur, j, c)
            json_array_append(*order, json_object_get(c, "name"));
        json_decref(cur);
        if (!*order)
            return host_oom(res);
    }
    return LM_LUA_OK;
}

int lm_lua_on_route(lm_lua_call_t *call, json_t *candidates, json_t **order, lm_lua_result_t *res)
{
    char *text;
    int rc;

    res_clear(res);
    *order = NULL;
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_ROUTE)) || !json_is_array(candidates))
        return LM_LUA_OK;
    text = json_dumps(candidates, JSON_COMPACT);
    if (!text)
        return host_oom(res);
    rc = lm_lua_on_route_text(call, text, strlen(text), order, res);
    free(text);
    return rc;
}

/* ---- on_upstream_request ---- */

/* The request view and up: its text without the body, plus the body. */
static void push_upstream(lua_State *L, run_t *r)
{
    lm_lua_vm_t *vm = vm_of(L);
    push_reqview(L, r->call);
    lua_pushvalue(L, -1);
    vm->cur_req = luaL_ref(L, LUA_REGISTRYINDEX);
    lm_lua_push_lazy_text_with(L, r->text, r->tlen, "body", r->text2 ? r->text2 : "", r->tlen2);
    r->nargs = 2;
}

static int header_name_ok(const char *s, size_t n)
{
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("!#$%&'*+-.^_`|~", s[i])) ||
            s[i] == 0)
            return 0;
    return 1;
}

static void collect_upstream(lua_State *L, run_t *r, int args, int res, int nres)
{
    int t = pick_table(L, args + 1, res, nres, "on_upstream_request");
    json_t *h;

    if (untouched(L, t, args + 1))
        return;
    lm_lua_touch(L, t);
    lua_pushliteral(L, "headers");
    if (lua_rawget(L, t) != LUA_TTABLE)
        luaL_error(L, "up.headers must be a table");
    lm_lua_touch(L, -1);
    r->out[0] = h = json_object();
    if (!h)
        luaL_error(L, "out of memory");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *k, *v;
        size_t kl, vl;
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) == LUA_TTABLE)
            luaL_error(L, "up.headers: names and values must be strings");
        k = lua_tolstring(L, -2, &kl);
        if (!header_name_ok(k, kl))
            luaL_error(L, "up.headers: invalid header name");
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "up.headers[\"%s\"] must be a string", k);
        v = lua_tolstring(L, -1, &vl);
        if (memchr(v, '\r', vl) || memchr(v, '\n', vl) || memchr(v, 0, vl))
            luaL_error(L, "up.headers[\"%s\"]: CR, LF and NUL are not allowed", k);
        to_json(L, -1, 1, "up.headers", h, k, kl, NULL);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushliteral(L, "body");
    if (lua_rawget(L, t) != LUA_TSTRING)
        luaL_error(L, "up.body must be a string");
    {
        size_t n;
        const char *b = lua_tolstring(L, -1, &n);
        r->out[1] = json_stringn_nocheck(b, n);
        if (!r->out[1])
            luaL_error(L, "out of memory");
    }
    lua_pop(L, 1);
}

/* What the scripts made of up: NULL until one changed something. */
typedef struct up_state_s {
    json_t *up;   /* up without the body, as JSON */
    json_t *body; /* the body, a string */
    char *text;   /* up as text, for the scripts after the change */
} up_state_t;

/* Applies one script's headers and body (stolen). Returns 1 when they
 * differ from what the request had, 0 when the script only read them, -1
 * when out of memory. */
static int upstream_apply(up_state_t *st, const char *up, size_t len, const char *body, size_t blen,
                          json_t *h, json_t *b)
{
    if (!st->up) {
        st->up = json_loadb(up, len, 0, NULL);
        st->body = json_stringn_nocheck(body, blen);
    }
    if (!st->up || !st->body ||
        (json_equal(h, json_object_get(st->up, "headers")) && json_equal(b, st->body))) {
        json_decref(h);
        json_decref(b);
        return st->up && st->body ? 0 : -1;
    }
    json_decref(st->body);
    st->body = b;
    if (json_object_set_new(st->up, "headers", h))
        return -1;
    free(st->text);
    st->text = json_dumps(st->up, JSON_COMPACT);
    return st->text ? 1 : -1;
}

int lm_lua_on_upstream_text(lm_lua_call_t *call, const char *up, size_t len, const char *body,
                            size_t blen, json_t **headers, json_t **new_body, lm_lua_result_t *res)
{
    up_state_t st = {NULL, NULL, NULL};
    int changed = 0, rc = LM_LUA_OK;

    res_clear(res);
    *headers = *new_body = NULL;
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_UPSTREAM_REQUEST)) || first_char(up, len) != '{')
        return LM_LUA_OK;
    for (size_t i = 0; i < call->vm->gen->n && rc == LM_LUA_OK; i++) {
        run_t r = {.call = call,
                   .stage = LM_LUA_STAGE_UPSTREAM_REQUEST,
                   .text = st.text ? st.text : up,
                   .tlen = st.text ? strlen(st.text) : len,
                   .text2 = st.text ? json_string_value(st.body) : body,
                   .tlen2 = st.text ? json_string_length(st.body) : blen,
                   .push = push_upstream,
                   .collect = collect_upstream};
        int applied = 0;
        if (!runs(call, i, LM_LUA_STAGE_UPSTREAM_REQUEST))
            continue;
        rc = vm_run(call->vm, i, &r, res);
        if (rc == LM_LUA_OK && r.out[0])
            applied = upstream_apply(&st, up, len, body, blen, r.out[0], r.out[1]);
        changed |= applied == 1;
        if (applied < 0)
            rc = host_oom(res);
    }
    if (rc == LM_LUA_OK && changed) {
        *headers = json_incref(json_object_get(st.up, "headers"));
        *new_body = json_incref(st.body);
    }
    json_decref(st.up);
    json_decref(st.body);
    free(st.text);
    return rc;
}

int lm_lua_on_upstream_request(lm_lua_call_t *call, json_t *up, lm_lua_result_t *res)
{
    json_t *h, *b, *rest, *body;
    char *text;
    int rc;

    res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_UPSTREAM_REQUEST)) || !json_is_object(up))
        return LM_LUA_OK;
    body = json_object_get(up, "body");
    rest = json_copy(up);
    text = rest && !json_object_del(rest, "body") ? json_dumps(rest, JSON_COMPACT) : NULL;
    json_decref(rest);
    if (!text)
        return host_oom(res);
    rc = lm_lua_on_upstream_text(call, text, strlen(text), json_string_value(body),
                                 json_string_length(body), &h, &b, res);
    free(text);
    if (h) {
        json_object_set_new(up, "headers", h);
        json_object_set_new(up, "body", b);
    }
    return rc;
}

/* ---- on_event ---- */

/* Appends the event table at idx to list. JSON null stands for "the input
 * as it came": the argument itself, never looked at, so the caller can
 * forward the original text without decoding or encoding it. */
static void add_event(lua_State *L, json_t *list, int idx, int arg)
{
    if (untouched(L, idx, arg)) {
        tj_attach(L, json_null(), list, NULL, 0, NULL);
        return;
    }
    to_json(L, idx, 0, "event", list, NULL, 0, NULL);
    if (!json_is_object(json_array_get(list, json_array_size(list) - 1)))
        luaL_error(L, "on_event: an event must be an object");
}

static void collect_event(lua_State *L, run_t *r, int args, int res, int nres)
{
    json_t *list;
    int keep = nres < 1 || lua_isnil(L, res) || (lua_isboolean(L, res) && lua_toboolean(L, res));

    if (keep && untouched(L, args, args)) {
        r->keep = 1; /* the common case: no list to build */
        return;
    }
    r->out[0] = list = json_array();
    if (!list)
        luaL_error(L, "out of memory");
    if (keep) {
        if (lua_type(L, args) != LUA_TTABLE)
            luaL_error(L, "on_event: its argument is no longer a table");
        add_event(L, list, args, args);
        return;
    }
    if (lua_isboolean(L, res))
        return; /* false: dropped */
    for (int i = 0; i < nres; i++) {
        if (lua_type(L, res + i) != LUA_TTABLE)
            luaL_error(L, "on_event must return nothing, false, or event tables");
        add_event(L, list, res + i, args);
    }
}

/* Runs the event scripts from script `from` on one event (text) and sends
 * what the last one produced through emit. An event a script leaves alone
 * goes on as the same text. */
static int event_chain(lm_lua_call_t *call, size_t from, const char *json, size_t len,
                       lm_lua_emit_fn emit, void *arg, lm_lua_result_t *res)
{
    size_t i = from, k;
    json_t *e;
    int rc = LM_LUA_OK;

    while (i < call->vm->gen->n && !runs(call, i, LM_LUA_STAGE_EVENT))
        i++;
    if (i == call->vm->gen->n) {
        emit(arg, json, len);
        return LM_LUA_OK;
    }
    run_t r = {.call = call,
               .stage = LM_LUA_STAGE_EVENT,
               .text = json,
               .tlen = len,
               .push = push_text,
               .collect = collect_event};
    rc = vm_run(call->vm, i, &r, res);
    if (rc != LM_LUA_OK)
        return rc;
    if (r.keep)
        return event_chain(call, i + 1, json, len, emit, arg, res);
    json_array_foreach (r.out[0], k, e) {
        char *s = json_is_null(e) ? NULL : json_dumps(e, JSON_COMPACT);
        if (s == NULL && !json_is_null(e)) {
            rc = host_oom(res);
            break;
        }
        rc = s ? event_chain(call, i + 1, s, strlen(s), emit, arg, res)
               : event_chain(call, i + 1, json, len, emit, arg, res);
        free(s);
        if (rc != LM_LUA_OK)
            break;
    }
    json_decref(r.out[0]);
    return rc;
}

int lm_lua_on_event_text(lm_lua_call_t *call, const char *json, size_t len, lm_lua_emit_fn emit,
                         void *arg, lm_lua_result_t *res)
{
    res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_EVENT)) || first_char(json, len) != '{') {
        emit(arg, json, len);
        return LM_LUA_OK;
    }
    return event_chain(call, 0, json, len, emit, arg, res);
}

static void emit_json(void *arg, const char *json, size_t len)
{
    json_t *list = arg, *e = json_loadb(json, len, 0, NULL);
    if (e)
        json_array_append_new(list, e);
}

int lm_lua_on_event(lm_lua_call_t *call, json_t *ev, json_t **out, lm_lua_result_t *res)
{
    json_t *list = json_array();
    char *text;
    int rc;

    res_clear(res);
    *out = NULL;
    if (!list)
        return host_oom(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_EVENT))) {
        if (json_array_append(list, ev)) {
            json_decref(list);
            return host_oom(res);
        }
        *out = list;
        return LM_LUA_OK;
    }
    text = json_dumps(ev, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        json_decref(list);
        return host_oom(res);
    }
    rc = lm_lua_on_event_text(call, text, strlen(text), emit_json, list, res);
    free(text);
    if (rc != LM_LUA_OK) {
        json_decref(list);
        return rc;
    }
    *out = list;
    return LM_LUA_OK;
}

/* ---- on_response ---- */

static void push_response(lua_State *L, run_t *r)
{
    lm_lua_vm_t *vm = vm_of(L);
    push_text(L, r);
    lua_pushvalue(L, -1);
    vm->cur_resp = luaL_ref(L, LUA_REGISTRYINDEX);
    r->nargs = 1;
}

/* on_response and on_log: the argument (or a returned table) back as an
 * object; nothing when it was never looked at. */
static void collect_object(lua_State *L, run_t *r, int args, int res, int nres)
{
    const char *fn = r->stage == LM_LUA_STAGE_RESPONSE ? "on_response"
                     : r->stage == LM_LUA_STAGE_ERROR  ? "on_error"
                                                       : "on_log";
    int t = pick_table(L, args, res, nres, fn);
    if (r->stage != LM_LUA_STAGE_ERROR && untouched(L, t, args))
        return;
    to_json_object(L, t, fn, &r->out[0]);
}

int lm_lua_on_response_text(lm_lua_call_t *call, const char *json, size_t len, char **out,
                            lm_lua_result_t *res)
{
    char *cur = NULL;

    res_clear(res);
    *out = NULL;
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_RESPONSE)) || first_char(json, len) != '{')
        return LM_LUA_OK;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        run_t r = {.call = call,
                   .stage = LM_LUA_STAGE_RESPONSE,
                   .text = cur ? cur : json,
                   .tlen = cur ? strlen(cur) : len,
                   .push = push_response,
                   .collect = collect_object};
        int rc;
        if (!runs(call, i, LM_LUA_STAGE_RESPONSE))
            continue;
        rc = vm_run(call->vm, i, &r, res);
        if (rc != LM_LUA_OK) {
            free(cur);
            return rc;
        }
        if (r.out[0]) {
            char *s = json_dumps(r.out[0], JSON_COMPACT);
            json_decref(r.out[0]);
            free(cur);
            cur = s;
            if (!s)
                return host_oom(res);
        }
    }
    *out = cur;
    return LM_LUA_OK;
}

int lm_lua_on_response(lm_lua_call_t *call, json_t *body, lm_lua_result_t *res)
{
    char *text, *out = NULL;
    json_t *obj;
    int rc;

    res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_RESPONSE)) || !json_is_object(body))
        return LM_LUA_OK;
    text = json_dumps(body, JSON_COMPACT);
    if (!text)
        return host_oom(res);
    rc = lm_lua_on_response_text(call, text, strlen(text), &out, res);
    free(text);
    if (rc != LM_LUA_OK || out == NULL)
        return rc;
    obj = json_loads(out, 0, NULL);
    free(out);
    if (!obj || replace_object(body, obj)) {
        json_decref(obj);
        return host_oom(res);
    }
    json_decref(obj);
    return LM_LUA_OK;
}

/* ---- on_usage ---- */

static void push_usage(lua_State *L, run_t *r)
{
    if (r->text)
        lm_lua_push_lazy_text(L, r->text, r->tlen);
    else
        lua_pushnil(L);
    if (r->text2)
        lm_lua_push_lazy_text(L, r->text2, r->tlen2);
    else
        lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)r->charge);
    r->nargs = 3;
}

static void collect_usage(lua_State *L, run_t *r, int args, int res, int nres)
{
    lua_Integer v = 0;
    int ok = 0;

    (void)args;
    if (nres < 1 || lua_isnil(L, res))
        return;
    if (lua_type(L, res) == LUA_TNUMBER)
        v = lua_tointegerx(L, res, &ok);
    if (!ok || v < 0)
        luaL_error(L,
                   "on_usage must return an integer charge >= 0 in micro-units (use math.floor)");
    r->charge = (int64_t)v;
    r->changed = 1;
}

int lm_lua_on_usage_text(lm_lua_call_t *call, const char *usage, size_t ulen, const char *price,
                         size_t plen, int64_t *charge, lm_lua_result_t *res)
{
    int64_t c = *charge;

    res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_USAGE)))
        return LM_LUA_OK;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        run_t r = {.call = call,
                   .stage = LM_LUA_STAGE_USAGE,
                   .text = usage && first_char(usage, ulen) == '{' ? usage : NULL,
                   .tlen = ulen,
                   .text2 = price && first_char(price, plen) == '{' ? price : NULL,
                   .tlen2 = plen,
                   .charge = c,
                   .push = push_usage,
                   .collect = collect_usage};
        int rc;
        if (!runs(call, i, LM_LUA_STAGE_USAGE))
            continue;
        rc = vm_run(call->vm, i, &r, res);
        if (rc != LM_LUA_OK)
            return rc;
        c = r.charge;
    }
    *charge = c;
    return LM_LUA_OK;
}

int lm_lua_on_usage(lm_lua_call_t *call, json_t *usage, json_t *price, int64_t *charge,
                    lm_lua_result_t *res)
{
    char *u = NULL, *p = NULL;
    int rc;

    res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_USAGE)))
        return LM_LUA_OK;
    if ((usage && !(u = json_dumps(usage, JSON_COMPACT))) ||
        (price && !(p = json_dumps(price, JSON_COMPACT)))) {
        free(u);
        return host_oom(res);
    }
    rc = lm_lua_on_usage_text(call, u, u ? strlen(u) : 0, p, p ? strlen(p) : 0, charge, res);
    free(u);
    free(p);
    return rc;
}

/* ---- on_error ---- */

/* The record as a pending table over a copy (scripts later in the chain
 * add fields to the original). */
static void push_log(lua_State *L, run_t *r)
{
    push_lazy_copy(L, r);
    r->nargs = 1;
}

/* Eager (errors are rare): the table carries `started`, which is not part
 * of err and is dropped again when it is read back. */
static void push_error(lua_State *L, run_t *r)
{
    lm_lua_push_json(L, r->in[0], 0);
    lua_pushboolean(L, r->started);
    lua_setfield(L, -2, "started");
    r->nargs = 1;
}

int lm_lua_on_error(lm_lua_call_t *call, json_t *err, int started, lm_lua_result_t *res)
{
    int retry = 0;

    res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_ERROR)) || !json_is_object(err))
        return LM_LUA_OK;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        run_t r = {.call = call,
                   .stage = LM_LUA_STAGE_ERROR,
                   .in = {err},
                   .started = started,
                   .push = push_error,
                   .collect = collect_object};
        json_t *st;
        int rc;
        if (!runs(call, i, LM_LUA_STAGE_ERROR))
            continue;
        rc = vm_run(call->vm, i, &r, res);
        if (rc == LM_LUA_ERROR)
            return rc;
        json_object_del(r.out[0], "started");
        st = json_object_get(r.out[0], "status");
        if (st && (!json_is_integer(st) || json_integer_value(st) < 100 ||
                   json_integer_value(st) > 599)) {
            /* a bad mapping: keep the original error, report the script */
            lm_log(LM_LOG_WARN,
                   "lua: script %s, stage error: err.status must be an integer 100..599",
                   call->vm->gen->s[i].name);
            json_decref(r.out[0]);
            continue;
        }
        replace_object(err, r.out[0]);
        json_decref(r.out[0]);
        if (rc == LM_LUA_RETRY) {
            if (started) {
                lm_log(LM_LOG_WARN, "lua: script %s asked for a retry after the response started",
                       call->vm->gen->s[i].name);
                continue;
            }
            retry = 1;
            break;
        }
    }
    if (!retry) {
        res->model[0] = 0;
        res->script[0] = 0;
    }
    return retry ? LM_LUA_RETRY : LM_LUA_OK;
}

/* ---- on_log ---- */

void lm_lua_on_log(lm_lua_call_t *call, json_t *record)
{
    lm_lua_result_t res;

    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_LOG)) || !json_is_object(record))
        return;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        run_t r = {.call = call,
                   .stage = LM_LUA_STAGE_LOG,
                   .in = {record},
                   .push = push_log,
                   .collect = collect_object};
        if (!runs(call, i, LM_LUA_STAGE_LOG))
            continue;
        if (vm_run(call->vm, i, &r, &res) != LM_LUA_OK || !r.out[0])
            continue; /* errors are logged and counted by vm_run */
        json_object_update_missing(record, r.out[0]);
        json_decref(r.out[0]);
    }
}
