/*
 * stage_settle.c - the stages after an attempt: on_usage (the charge),
 * on_error (map an error, or retry on the next channel) and on_log (add
 * fields to the log record).
 * Thread: the worker owning the vm. err and record are updated in place.
 */
#include "core/log.h"
#include "longmen.h"
#include "lua/encode.h"
#include "lua/lazy.h"
#include "lua/runner.h"

#include <stdlib.h>
#include <string.h>

static void push_usage(lua_State *L, lm_lua_run_t *r)
{
    if (r->input) { /* one box for both, written only if a script looks */
        lm_lua_push_box(L, r->input, NULL);
        lm_lua_push_lazy(L, -1, 0);
        lm_lua_push_lazy(L, -2, 1);
        lua_remove(L, -3);
    } else {
        if (r->text)
            lm_lua_push_lazy_text(L, r->text, r->tlen);
        else
            lua_pushnil(L);
        if (r->text2)
            lm_lua_push_lazy_text(L, r->text2, r->tlen2);
        else
            lua_pushnil(L);
    }
    lua_pushinteger(L, (lua_Integer)r->charge);
    r->nargs = 3;
}

static void collect_usage(lua_State *L, lm_lua_run_t *r, int args, int res, int nres)
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

static int usage_run(lm_lua_call_t *call, const char *usage, size_t ulen, const char *price,
                     size_t plen, const lm_lua_input_t *in, int64_t *charge, lm_lua_result_t *res)
{
    int64_t c = *charge;

    lm_lua_res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_USAGE)))
        return LM_LUA_OK;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        lm_lua_run_t r = {.call = call,
                          .stage = LM_LUA_STAGE_USAGE,
                          .text = usage && lm_lua_first_char(usage, ulen) == '{' ? usage : NULL,
                          .tlen = ulen,
                          .text2 = price && lm_lua_first_char(price, plen) == '{' ? price : NULL,
                          .tlen2 = plen,
                          .input = in,
                          .charge = c,
                          .push = push_usage,
                          .collect = collect_usage};
        int rc;
        if (!lm_lua_runs(call, i, LM_LUA_STAGE_USAGE))
            continue;
        rc = lm_lua_run(call->vm, i, &r, res);
        if (rc != LM_LUA_OK)
            return rc;
        c = r.charge;
    }
    *charge = c;
    return LM_LUA_OK;
}

int lm_lua_on_usage_text(lm_lua_call_t *call, const char *usage, size_t ulen, const char *price,
                         size_t plen, int64_t *charge, lm_lua_result_t *res)
{
    return usage_run(call, usage, ulen, price, plen, NULL, charge, res);
}

int lm_lua_on_usage_input(lm_lua_call_t *call, const lm_lua_input_t *in, int64_t *charge,
                          lm_lua_result_t *res)
{
    return usage_run(call, NULL, 0, NULL, 0, in, charge, res);
}

int lm_lua_on_usage(lm_lua_call_t *call, json_t *usage, json_t *price, int64_t *charge,
                    lm_lua_result_t *res)
{
    char *u = NULL, *p = NULL;
    int rc;

    lm_lua_res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_USAGE)))
        return LM_LUA_OK;
    if ((usage && !(u = json_dumps(usage, JSON_COMPACT))) ||
        (price && !(p = json_dumps(price, JSON_COMPACT)))) {
        free(u);
        return lm_lua_host_oom(res);
    }
    rc = lm_lua_on_usage_text(call, u, u ? strlen(u) : 0, p, p ? strlen(p) : 0, charge, res);
    free(u);
    free(p);
    return rc;
}

/* The record as a pending table over a copy (scripts later in the chain
 * add fields to the original). */
static void push_log(lua_State *L, lm_lua_run_t *r)
{
    lm_lua_push_lazy_copy(L, r);
    r->nargs = 1;
}

/* Eager (errors are rare): the table carries `started`, which is not part
 * of err and is dropped again when it is read back. */
static void push_error(lua_State *L, lm_lua_run_t *r)
{
    lm_lua_push_json(L, r->in[0], 0);
    lua_pushboolean(L, r->started);
    lua_setfield(L, -2, "started");
    r->nargs = 1;
}

int lm_lua_on_error(lm_lua_call_t *call, json_t *err, int started, lm_lua_result_t *res)
{
    int retry = 0;

    lm_lua_res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_ERROR)) || !json_is_object(err))
        return LM_LUA_OK;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        lm_lua_run_t r = {.call = call,
                          .stage = LM_LUA_STAGE_ERROR,
                          .in = {err},
                          .started = started,
                          .push = push_error,
                          .collect = lm_lua_collect_object};
        json_t *st;
        int rc;
        if (!lm_lua_runs(call, i, LM_LUA_STAGE_ERROR))
            continue;
        rc = lm_lua_run(call->vm, i, &r, res);
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
        lm_lua_replace_object(err, r.out[0]);
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

void lm_lua_on_log(lm_lua_call_t *call, json_t *record)
{
    lm_lua_result_t res;

    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_LOG)) || !json_is_object(record))
        return;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        lm_lua_run_t r = {.call = call,
                          .stage = LM_LUA_STAGE_LOG,
                          .in = {record},
                          .push = push_log,
                          .collect = lm_lua_collect_object};
        if (!lm_lua_runs(call, i, LM_LUA_STAGE_LOG))
            continue;
        if (lm_lua_run(call->vm, i, &r, &res) != LM_LUA_OK || !r.out[0])
            continue; /* errors are logged and counted by vm_run */
        json_object_update_missing(record, r.out[0]);
        json_decref(r.out[0]);
    }
}
