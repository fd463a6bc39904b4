/*
 * limits.c - what one stage call may spend: the allocator's memory cap, the
 * count hook (instruction budget and CLOCK_MONOTONIC deadline), the step
 * charge of C-side work, and the per-stage gate of lm.* functions. Once a
 * limit expires the hook raises on every firing and the pcall/xpcall/
 * coroutine wrappers (sandbox.c) re-raise, so it cannot be swallowed
 * (PL-5); the allocator caps the state's bytes (PL-6).
 * Thread: the worker owning the state. Nothing here allocates for callers.
 */
#include "lua/limits.h"
#include "core/clock.h"

#include <stdlib.h>
#include <string.h>

#define LOAD_MIN_MS 100u /* top-level chunks get at least this long */

enum { LIM_NONE = 0, LIM_INSTR, LIM_TIME, LIM_STEPS };

/* Free blocks kept per size class: at most about 70 KB of small blocks
 * and 150 KB of larger ones per state, which the cap does not count (like
 * malloc's own caches). */
#define POOL_KEEP       32u
#define POOL_KEEP_LARGE 4u

/* Sanitizers must see every block freed, so they get no pool. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define POOL_ON 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define POOL_ON 0
#endif
#endif
#ifndef POOL_ON
#define POOL_ON 1
#endif

/* The size class of an n-byte block, or -1 when the pool does not take it.
 * Lua passes the block's exact size on every free and resize, so the class
 * of a block is always known. */
static inline int pool_class(size_t n)
{
    const size_t small = LM_LUA_POOL_STEP * LM_LUA_POOL_SMALL;

    if (!POOL_ON || n == 0)
        return -1;
    if (n <= small)
        return (int)((n - 1) / LM_LUA_POOL_STEP);
    if (n <= small + LM_LUA_POOL_STEP2 * (LM_LUA_POOL_CLASSES - LM_LUA_POOL_SMALL))
        return LM_LUA_POOL_SMALL + (int)((n - small - 1) / LM_LUA_POOL_STEP2);
    return -1;
}

/* Bytes of a block of class c. */
static inline size_t class_size(int c)
{
    return c < LM_LUA_POOL_SMALL ? (size_t)(c + 1) * LM_LUA_POOL_STEP
                                 : LM_LUA_POOL_STEP * LM_LUA_POOL_SMALL +
                                       (size_t)(c - LM_LUA_POOL_SMALL + 1) * LM_LUA_POOL_STEP2;
}

/* Inlined into lm_lua_alloc: Lua calls it for every object it makes and
 * frees (a few dozen per stage call), and the calls cost as much as the
 * work. */
#define POOL_INLINE static inline __attribute__((always_inline))

POOL_INLINE void *block_new(lm_lua_vm_t *vm, size_t n)
{
    int c = pool_class(n);
    void *p;

    if (c < 0)
        return malloc(n);
    p = vm->pool.head[c];
    if (p == NULL)
        return malloc(class_size(c));
    memcpy(&vm->pool.head[c], p, sizeof(void *));
    vm->pool.count[c]--;
    return p;
}

POOL_INLINE void block_free(lm_lua_vm_t *vm, void *p, size_t n)
{
    int c = pool_class(n);

    if (p == NULL)
        return;
    if (c < 0 || vm->pool.count[c] >= (c < LM_LUA_POOL_SMALL ? POOL_KEEP : POOL_KEEP_LARGE)) {
        free(p);
        return;
    }
    memcpy(p, &vm->pool.head[c], sizeof(void *));
    vm->pool.head[c] = p;
    vm->pool.count[c]++;
}

static void *block_resize(lm_lua_vm_t *vm, void *p, size_t osize, size_t nsize)
{
    int oc = pool_class(osize), nc = pool_class(nsize);
    void *q;

    if (p == NULL)
        return block_new(vm, nsize);
    if (oc >= 0 && oc == nc)
        return p; /* the block already has room */
    if (oc < 0 && nc < 0)
        return realloc(p, nsize);
    q = block_new(vm, nsize);
    if (q) {
        memcpy(q, p, osize < nsize ? osize : nsize);
        block_free(vm, p, osize);
    }
    return q;
}

void lm_lua_pool_drain(lm_lua_vm_t *vm)
{
    for (int c = 0; c < LM_LUA_POOL_CLASSES; c++) {
        while (vm->pool.head[c]) {
            void *p = vm->pool.head[c];
            memcpy(&vm->pool.head[c], p, sizeof(void *));
            free(p);
        }
        vm->pool.count[c] = 0;
    }
}

void *lm_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lm_lua_vm_t *vm = ud;
    void *p;

    if (!ptr) { /* a new object (Lua passes its type in osize) */
        if (nsize == 0)
            return NULL;
        if (nsize > vm->mem_cap || vm->mem + nsize > vm->mem_cap)
            return NULL;
        p = block_new(vm, nsize);
        if (p)
            vm->mem += nsize;
        return p;
    }
    if (nsize == 0) {
        block_free(vm, ptr, osize);
        vm->mem -= osize;
        return NULL;
    }
    if (nsize > osize && (nsize - osize > vm->mem_cap || vm->mem + (nsize - osize) > vm->mem_cap))
        return NULL;
    p = block_resize(vm, ptr, osize, nsize);
    if (!p)
        return NULL;
    vm->mem = vm->mem - osize + nsize;
    return p;
}

int lm_lua_raise_limit(lua_State *L, lm_lua_vm_t *vm)
{
    switch (vm->expired) {
    case LIM_INSTR:
        return luaL_error(L, "script exceeded its instruction budget (%d)", (int)vm->budget);
    case LIM_TIME:
        return luaL_error(L, "script exceeded its time budget (%d ms)", (int)vm->deadline_ms);
    default: return luaL_error(L, "pattern matching exceeded its step budget");
    }
}

void lm_lua_hook(lua_State *L, lua_Debug *ar)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);

    (void)ar;
    if (!vm->running)
        return;
    vm->steps += LM_LUA_HOOK_EVERY;
    if (!vm->expired) {
        if (vm->steps > vm->budget)
            vm->expired = LIM_INSTR;
        else if (lm_clock_ns() > vm->deadline_ns)
            vm->expired = LIM_TIME;
    }
    if (vm->expired)
        lm_lua_raise_limit(L, vm);
}

void lm_lua_charge(lua_State *L, uint64_t steps)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);

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
        lm_lua_raise_limit(L, vm);
}

void lm_lua_mem_charge(lua_State *L, size_t bytes)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);

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
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    vm->mem = bytes < vm->mem ? vm->mem - bytes : 0;
}

void lm_lua_lim_start(lm_lua_vm_t *vm, size_t script, int stage)
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
    vm->has_req = vm->has_resp = 0;
    vm->running = 1;
}

void lm_lua_gate(lua_State *L, unsigned mask, const char *what)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    if (!(mask & LM_LUA_BIT(vm->stage)))
        luaL_error(L, "%s is not allowed in stage %s", what, lm_lua_stage_names[vm->stage]);
}
