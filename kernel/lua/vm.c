/*
 * vm.c - one lua_State running one generation on one worker (lm_lua_vm_t):
 * building the sandboxed state, loading every script into its own _ENV.
 *   E[i]       script i's _ENV: empty after load, metatable
 *              {__index = D[i], __newindex = error, __metatable = false};
 *   D[i]       what the top-level chunk defined, __index = B (sandbox.c).
 *              Unreachable.
 * Thread: the worker that created the vm. The vm is reference counted
 * (plain int): the creator's reference and one per call.
 */
#include "lua/vm.h"
#include "core/log.h"
#include "longmen.h"
#include "lua/api.h"
#include "lua/lazy.h"
#include "lua/limits.h"
#include "lua/pattern.h"
#include "lua/sandbox.h"

#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* registry key (its address) of B, the base table */
static const char base_key = 'B';

static int vm_setup(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    int B, t;

    lua_sethook(L, lm_lua_hook, LUA_MASKCOUNT, LM_LUA_HOOK_EVERY);
    lua_pushboolean(L, 0);
    vm->slot_req = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushboolean(L, 0);
    vm->slot_resp = luaL_ref(L, LUA_REGISTRYINDEX);
    /* the array marker: protected so scripts cannot share state through it */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "json.array");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lm_lua_array_key);
    lm_lua_lazy_open(L);
    B = lm_lua_sandbox_open(L);
    t = lm_lua_api_open(L, B);

    /* error messages name functions by searching the loaded-modules table
     * (unreachable from scripts): list the sandbox versions there */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_STRLIBNAME);
    lm_lua_open_patterns(L);
    lua_pop(L, 1);
    lua_getfield(L, -1, LUA_GNAME);
    lm_lua_copy_fields(L, B, -1, NULL);
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
    lm_lua_gen_script_t *gs = &vm->gen->s[ld->i];
    lm_lua_vm_script_t *vs = &vm->s[ld->i];
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
                if (strcmp(k, lm_lua_stage_fns[s]) == 0)
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
    lua_pushcfunction(L, lm_lua_global_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, E);
    lm_lua_mark_frozen(L, E);
    return 0;
}

int lm_lua_msgh(lua_State *L)
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
    lm_lua_pool_drain(vm);
    lm_lua_gen_release(vm->gen);
    free(vm->s);
    free(vm);
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
    vm->slot_req = vm->slot_resp = vm->co_ref = LUA_NOREF;
    for (size_t i = 0; i < gen->n; i++) {
        vm->s[i].env = LUA_NOREF;
        for (int s = 0; s < LM_LUA_NSTAGES; s++)
            vm->s[i].fn[s] = LUA_NOREF;
    }
    vm->L = L = lua_newstate(lm_lua_alloc, vm);
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
        lm_lua_lim_start(vm, i, LM_LUA_STAGE_LOAD);
        lua_pushcfunction(L, lm_lua_msgh);
        lua_pushcfunction(L, vm_load_script);
        lua_pushlightuserdata(L, &ld);
        st = lua_pcall(L, 1, 0, 1);
        vm->running = 0;
        if (st != LUA_OK) {
            const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error";
            char line[900];
            lm_lua_first_line(line, sizeof(line), m);
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
    /* Generational: what a stage call allocates (argument tables and their
     * text) almost always dies young, and a minor collection visits only
     * young objects, where an incremental cycle re-marks the whole sandbox
     * every time the heap doubles. The memory cap is unchanged: an
     * allocation refused by lm_lua_alloc still triggers a full collection
     * before the script sees the error. */
    lua_gc(L, LUA_GCGEN, 0, 0);
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

uint64_t lm_lua_vm_runs(const lm_lua_vm_t *vm)
{
    return vm->runs;
}

size_t lm_lua_vm_collect(lm_lua_vm_t *vm)
{
    lua_gc(vm->L, LUA_GCCOLLECT, 0);
    lm_lua_pool_drain(vm); /* an idle worker gives the blocks back */
    return vm->mem;
}
