/*
 * park.c - on_request in a thread that may yield (lm.moderate), and the
 * waiting run kept with the request's call until the host resumes it.
 * Thread: the worker owning the vm. A stage that never waits runs in the
 * vm's spare thread, reused call after call (no allocation, a resume
 * instead of a protected call); a stage that waits takes the thread with
 * it, and the next stage call makes a new spare. The wait itself is not
 * charged: the instruction budget goes on where it stopped and the
 * deadline starts again when the stage resumes.
 */
#include "lua/park.h"
#include "lua/limits.h"
#include "lua/values.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct lm_lua_park_s {
    lua_State *T; /* kept by call->park_ref */
    size_t script;
    lm_lua_run_t run;
    uint64_t steps, pat_steps; /* spent before the wait */
} lm_lua_park_t;

/* The stage function returned (maybe after waits): read its results. */
static int co_cont(lua_State *T, int status, lua_KContext ctx)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(T);
    lm_lua_run_t *r = vm->co_run; /* the parked copy after a wait */
    int res = r->nargs + 1;

    (void)status;
    (void)ctx;
    if (!vm->reject_status)
        r->collect(T, r, 1, res, lua_gettop(T) - res + 1);
    return 0;
}

/* The thread's body: run_protected's work with a call that may yield. */
static int co_body(lua_State *T)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(T);
    lm_lua_run_t *r = vm->co_run;

    lua_settop(T, 0);
    r->push(T, r);
    luaL_checkstack(T, r->nargs + 2, NULL);
    lua_rawgeti(T, LUA_REGISTRYINDEX, vm->s[vm->script].fn[r->stage]);
    for (int k = 0; k < r->nargs; k++)
        lua_pushvalue(T, 1 + k);
    lua_callk(T, r->nargs, LUA_MULTRET, 0, co_cont);
    return co_cont(T, LUA_OK, 0);
}

static int new_spare(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    lua_State *T = lua_newthread(L);

    lua_sethook(T, lm_lua_hook, LUA_MASKCOUNT, LM_LUA_HOOK_EVERY);
    vm->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    vm->co_spare = T;
    return 0;
}

/* The spare thread, made on first use; NULL when out of memory. */
static lua_State *spare(lm_lua_vm_t *vm)
{
    if (vm->co_ref == LUA_NOREF) {
        lua_pushcfunction(vm->L, new_spare);
        if (lua_pcall(vm->L, 0, 0, 0) != LUA_OK) {
            lua_pop(vm->L, 1);
            return NULL;
        }
    }
    return vm->co_spare;
}

/* A thread that ended well is the next spare (when there is none); one
 * that failed or yielded astray is dropped (the collector closes it). */
static void give_back(lm_lua_vm_t *vm, lua_State *T, int ref)
{
    if (lua_status(T) == LUA_OK && vm->co_ref == LUA_NOREF) {
        lua_settop(T, 0);
        vm->co_ref = ref;
        vm->co_spare = T;
        return;
    }
    luaL_unref(vm->L, LUA_REGISTRYINDEX, ref);
}

/* Runs T until its stage ends or waits on lm.moderate. */
static int co_step(lm_lua_vm_t *vm, size_t i, lua_State *T, int nargs, lm_lua_result_t *res)
{
    lm_lua_run_t *r = vm->co_run;
    const char *m = "error";
    char buf[64];
    int nres = 0, st;

    vm->co_cur = T;
    vm->co_wait = 0;
    st = lua_resume(T, vm->L, nargs, &nres);
    vm->co_cur = NULL;
    if (st == LUA_YIELD && vm->co_wait) {
        lua_pop(T, nres);
        vm->running = 0;
        vm->has_req = vm->has_resp = 0;
        vm->call = NULL;
        return LM_LUA_PENDING;
    }
    if (st == LUA_YIELD) { /* coroutine.yield() outside a coroutine of the script's own */
        lua_resetthread(T);
        st = LUA_ERRRUN;
        m = "attempt to yield from outside a coroutine";
    } else if (st != LUA_OK) {
        /* pending __close handlers run now (limits still armed), as a
         * protected call's unwinding runs them; the thread is reusable */
        st = lua_resetthread(T);
        if (lua_type(T, -1) == LUA_TSTRING)
            m = lua_tostring(T, -1);
        else /* like lm_lua_msgh: never __tostring */
        {
            snprintf(buf, sizeof(buf), "(error object is a %s value)", luaL_typename(T, -1));
            m = buf;
        }
    }
    return lm_lua_run_end(vm, i, r, res, st, m);
}

static int park(lm_lua_vm_t *vm, size_t i, lm_lua_run_t *r, lm_lua_result_t *res)
{
    lm_lua_park_t *p = malloc(sizeof(*p));

    if (p == NULL) { /* the host ends the request, and its side call with it */
        luaL_unref(vm->L, LUA_REGISTRYINDEX, vm->co_ref);
        vm->co_ref = LUA_NOREF;
        vm->co_spare = NULL;
        return lm_lua_host_oom(res);
    }
    p->T = vm->co_spare;
    r->call->park_ref = vm->co_ref;
    vm->co_ref = LUA_NOREF;
    vm->co_spare = NULL;
    p->script = i;
    p->run = *r;
    p->steps = vm->steps;
    p->pat_steps = vm->pat_steps;
    r->call->park = p;
    return LM_LUA_PENDING;
}

int lm_lua_run_parkable(lm_lua_vm_t *vm, size_t i, lm_lua_run_t *r, lm_lua_result_t *res)
{
    lua_State *T = spare(vm);
    int rc;

    if (T == NULL) /* no thread: run as before (lm.moderate then answers nil, err) */
        return lm_lua_run(vm, i, r, res);
    r->out[0] = r->out[1] = r->tmp = NULL;
    r->changed = r->keep = 0;
    vm->call = r->call;
    vm->runs++;
    lm_lua_lim_start(vm, i, r->stage);
    vm->co_run = r;
    lua_pushcfunction(T, co_body);
    rc = co_step(vm, i, T, 0, res);
    vm->co_run = NULL;
    if (rc == LM_LUA_PENDING)
        return park(vm, i, r, res);
    if (lua_status(T) == LUA_OK) {
        lua_settop(T, 0);
    } else {
        luaL_unref(vm->L, LUA_REGISTRYINDEX, vm->co_ref);
        vm->co_ref = LUA_NOREF;
        vm->co_spare = NULL;
    }
    return rc;
}

/* Pushes what lm.moderate returns: the verdict as a table, or nil, why. */
static int push_answer(lua_State *L)
{
    json_t *v = lua_touserdata(L, 1);
    const char *why = lua_touserdata(L, 2);

    lua_settop(L, 0);
    if (v) {
        lm_lua_push_json(L, v, 0);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, why && why[0] ? why : "no verdict");
    return 2;
}

int lm_lua_park_resume(lm_lua_call_t *call, json_t *verdict, const char *why, size_t *i,
                       lm_lua_run_t *r, lm_lua_result_t *res)
{
    lm_lua_park_t *p = call->park;
    lm_lua_vm_t *vm = call->vm;
    lua_State *L = vm->L;
    int base = lua_gettop(L), n = 0, rc;

    *i = p->script;
    lua_pushcfunction(L, push_answer);
    lua_pushlightuserdata(L, verdict);
    lua_pushlightuserdata(L, (void *)why);
    if (lua_pcall(L, 2, LUA_MULTRET, 0) == LUA_OK && lua_checkstack(p->T, 4)) {
        n = lua_gettop(L) - base;
        lua_xmove(L, p->T, n);
    } /* else out of memory: lm.moderate returns nothing (nil, a missing verdict) */
    lua_settop(L, base);
    vm->call = call;
    lm_lua_lim_start(vm, p->script, p->run.stage);
    vm->steps = p->steps;
    vm->pat_steps = p->pat_steps;
    vm->co_run = &p->run;
    rc = co_step(vm, p->script, p->T, n, res);
    vm->co_run = NULL;
    if (rc == LM_LUA_PENDING) { /* a second side call */
        p->steps = vm->steps;
        p->pat_steps = vm->pat_steps;
        return rc;
    }
    *r = p->run;
    give_back(vm, p->T, call->park_ref);
    call->park_ref = LUA_NOREF;
    call->park = NULL;
    free(p);
    return rc;
}
