/*
 * runner.c - runs one script's stage function in a protected call: pushes
 * the stage's arguments, applies the limits, turns errors, lm.reject and
 * lm.retry into a result, and the helpers every stage file shares.
 * Thread: the worker owning the vm. Outputs in run->out are new references
 * the stage code releases.
 */
#include "lua/runner.h"
#include "core/clock.h"
#include "core/log.h"
#include "longmen.h"
#include "lua/encode.h"
#include "lua/lazy.h"
#include "lua/limits.h"
#include "lua/vm.h"

#include <string.h>
#include <sys/random.h>

static int run_protected(lua_State *L)
{
    lm_lua_run_t *r = lua_touserdata(L, 1);
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
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
    lm_lua_copy_str(dst, cap, s);
}

/* A host-side allocation failed after a script ran: a 500 like a script
 * error (with an error id), but not counted against the script. */
int lm_lua_host_oom(lm_lua_result_t *res)
{
    res->status = 500;
    lm_lua_copy_str(res->message, sizeof(res->message), "out of memory");
    make_errid(res->errid, sizeof(res->errid));
    return LM_LUA_ERROR;
}

static void vm_fail(lm_lua_vm_t *vm, size_t i, int stage, int st, const char *msg,
                    lm_lua_result_t *res)
{
    lm_lua_gen_script_t *gs = &vm->gen->s[i];
    int limit = vm->expired || st == LUA_ERRMEM;
    char flat[1024];
    size_t o = 0;

    res->status = 500;
    make_errid(res->errid, sizeof(res->errid));
    lm_lua_copy_str(res->script, sizeof(res->script), gs->name);
    lm_lua_first_line(res->message, sizeof(res->message), msg);
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
           "lua %s: script %s, stage %s: %s", res->errid, gs->name, lm_lua_stage_names[stage],
           flat);
    if (limit)
        lua_gc(vm->L, LUA_GCCOLLECT, 0);
}

/* Empties a run slot, so that the collector can have what it showed. */
static void clear_slot(lua_State *L, int slot)
{
    lua_pushboolean(L, 0);
    lua_rawseti(L, LUA_REGISTRYINDEX, slot);
}

/* Run script i's function for r->stage. On LM_LUA_OK the outputs are in
 * r->out (new refs, caller frees; NULL when the script left the data as it
 * was); on other codes r->out is empty. */
int lm_lua_run(lm_lua_vm_t *vm, size_t i, lm_lua_run_t *r, lm_lua_result_t *res)
{
    lua_State *L = vm->L;
    int base = lua_gettop(L), st, rc;

    r->out[0] = r->out[1] = r->tmp = NULL;
    r->changed = r->keep = 0;
    if (!lua_checkstack(L, 4)) {
        vm_fail(vm, i, r->stage, LUA_ERRMEM, "stack overflow", res);
        return LM_LUA_ERROR;
    }
    vm->call = r->call;
    vm->runs++;
    lm_lua_lim_start(vm, i, r->stage);
    lua_pushcfunction(L, lm_lua_msgh);
    lua_pushcfunction(L, run_protected);
    lua_pushlightuserdata(L, r);
    st = lua_pcall(L, 1, 0, base + 1);
    rc = lm_lua_run_end(vm, i, r, res, st,
                        lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error");
    lua_settop(L, base);
    return rc;
}

/* What a stage call decided, once its protected call or its thread ended
 * with status st (msg: the error text when st is not LUA_OK). */
int lm_lua_run_end(lm_lua_vm_t *vm, size_t i, lm_lua_run_t *r, lm_lua_result_t *res, int st,
                   const char *m)
{
    int rc = LM_LUA_OK;

    vm->running = 0;
    json_decref(r->tmp);
    r->tmp = NULL;
    if (st != LUA_OK) {
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
        lm_lua_copy_str(res->message, sizeof(res->message), vm->reject_msg);
        lm_lua_copy_str(res->code, sizeof(res->code), vm->reject_code);
        lm_lua_copy_str(res->script, sizeof(res->script), vm->gen->s[i].name);
        rc = LM_LUA_REJECT;
    } else if (vm->retry) {
        lm_lua_copy_str(res->model, sizeof(res->model), vm->retry_model);
        lm_lua_copy_str(res->script, sizeof(res->script), vm->gen->s[i].name);
        rc = LM_LUA_RETRY;
    }
    if (vm->has_resp)
        clear_slot(vm->L, vm->slot_resp);
    vm->has_req = vm->has_resp = 0;
    vm->call = NULL;
    return rc;
}

int lm_lua_runs(lm_lua_call_t *call, size_t i, lm_lua_stage_t st)
{
    return call->applies[i] && call->vm->s[i].fn[st] != LUA_NOREF;
}

/* Every field "" or 0 without writing the whole struct (about 800 bytes,
 * once per stage call, on every stream event). */
void lm_lua_res_clear(lm_lua_result_t *res)
{
    res->status = 0;
    res->code[0] = res->message[0] = res->errid[0] = res->script[0] = res->model[0] = 0;
}

/* The table to read back: a returned table replaces the argument. */
int lm_lua_pick_table(lua_State *L, int arg, int res, int nres, const char *fn)
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
int lm_lua_untouched(lua_State *L, int t, int arg)
{
    return lua_rawequal(L, t, arg) && lm_lua_lazy_pending(L, t);
}

/* Pushes the input as a pending table (not charged: a Lua string). */
void lm_lua_push_text(lua_State *L, lm_lua_run_t *r)
{
    lm_lua_push_lazy_text(L, r->text, r->tlen);
    r->nargs = 1;
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

/* Pushes the argument as a pending table over a shallow copy of r->in[0]
 * (the caller changes the original between scripts; the copy keeps what
 * this script was shown). */
void lm_lua_push_lazy_copy(lua_State *L, lm_lua_run_t *r)
{
    r->tmp = json_copy(r->in[0]);
    if (r->tmp == NULL)
        luaL_error(L, "out of memory");
    push_lazy_json(L, r->tmp, 0);
}

/* First byte that is not JSON white space. */
char lm_lua_first_char(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i < n ? s[i] : 0;
}

/* on_response and on_log: the argument (or a returned table) back as an
 * object; nothing when it was never looked at. */
void lm_lua_collect_object(lua_State *L, lm_lua_run_t *r, int args, int res, int nres)
{
    const char *fn = r->stage == LM_LUA_STAGE_RESPONSE ? "on_response"
                     : r->stage == LM_LUA_STAGE_ERROR  ? "on_error"
                                                       : "on_log";
    int t = lm_lua_pick_table(L, args, res, nres, fn);
    if (r->stage != LM_LUA_STAGE_ERROR && lm_lua_untouched(L, t, args))
        return;
    lm_lua_to_json_object(L, t, fn, &r->out[0]);
}
