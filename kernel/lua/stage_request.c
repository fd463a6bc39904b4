/*
 * stage_request.c - on_request: scripts rewrite the request's model,
 * messages and parameters, and its meta; only what they changed is
 * converted back, the rest is shared with the old request.
 * Thread: the worker owning the vm. req is updated in place (lua_host.h).
 */
#include "lua/call.h"
#include "lua/encode.h"
#include "lua/lazy.h"
#include "lua/park.h"
#include "lua/runner.h"

#include <string.h>

static void push_request(lua_State *L, lm_lua_run_t *r)
{
    lm_lua_push_reqview(L, r->call);
    lm_lua_set_request(L, -1);
    r->nargs = 1;
}

/* Unknown fields are a mistake worth reporting. */
static void check_request_fields(lua_State *L, int t)
{
    static const char *const known[] = {"model", "messages", "params", "key",
                                        "group", "meta",     "api",    NULL};

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
                lm_lua_to_json(L, -1, 1, "req.params", body, k, kl, NULL);
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
        lm_lua_to_json(L, -1, 1, "req.model", body, "model", 5, NULL);
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
            lm_lua_tj_attach(L, json_array(), body, "messages", 8, NULL);
        } else {
            lm_lua_to_json(L, -1, 1, "req.messages", body, "messages", 8, NULL);
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
static void collect_request(lua_State *L, lm_lua_run_t *r, int args, int res, int nres)
{
    json_t *req = json_is_object(r->call->req) ? r->call->req : NULL;
    json_t *msgs = json_object_get(req, "messages");
    int t = lm_lua_pick_table(L, args, res, nres, "on_request"), same_params, same_msgs;

    if (lm_lua_untouched(L, t, args))
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
        lm_lua_to_json_object(L, -1, "req.meta", &r->out[1]);
    }
    lua_pop(L, 1);
}

/* Replaces req's members with body's (steals body). */
static int rewrite_request(lm_lua_call_t *call, json_t *req, json_t *body)
{
    int rc = lm_lua_drop_view(call);

    if (rc == 0)
        rc = lm_lua_replace_object(req, body);
    json_decref(body);
    if (rc == 0)
        call->req_changed = 1;
    return rc;
}

/* What script i's run decided, applied to req and meta. */
static int request_ran(lm_lua_call_t *call, json_t *req, lm_lua_run_t *r, int rc,
                       lm_lua_result_t *res)
{
    if (rc != LM_LUA_OK)
        return rc;
    if (r->out[0] && rewrite_request(call, req, r->out[0])) {
        json_decref(r->out[1]);
        return lm_lua_host_oom(res);
    }
    if (r->out[1]) {
        json_decref(call->meta); /* anchors hold their own reference */
        call->meta = r->out[1];
    }
    return LM_LUA_OK;
}

/* Scripts from `first` on; each may wait on a side call (park.h). */
static int request_from(lm_lua_call_t *call, json_t *req, size_t first, lm_lua_result_t *res)
{
    for (size_t i = first; i < call->vm->gen->n; i++) {
        lm_lua_run_t r = {.call = call,
                          .stage = LM_LUA_STAGE_REQUEST,
                          .push = push_request,
                          .collect = collect_request};
        int rc;
        if (!lm_lua_runs(call, i, LM_LUA_STAGE_REQUEST))
            continue;
        rc = lm_lua_run_parkable(call->vm, i, &r, res);
        if (rc == LM_LUA_PENDING)
            return rc;
        rc = request_ran(call, req, &r, rc, res);
        if (rc != LM_LUA_OK)
            return rc;
    }
    return LM_LUA_OK;
}

int lm_lua_on_request(lm_lua_call_t *call, json_t *req, lm_lua_result_t *res)
{
    lm_lua_res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_REQUEST)))
        return LM_LUA_OK;
    if (req != call->req) {
        lm_lua_drop_view(call);
        json_incref(req);
        json_decref(call->req);
        call->req = req;
    }
    return request_from(call, req, 0, res);
}

int lm_lua_on_request_resume(lm_lua_call_t *call, json_t *req, json_t *verdict, const char *why,
                             lm_lua_result_t *res)
{
    lm_lua_run_t r;
    size_t i;
    int rc;

    lm_lua_res_clear(res);
    if (call->park == NULL || req != call->req)
        return lm_lua_host_oom(res); /* a host bug: nothing waits */
    rc = lm_lua_park_resume(call, verdict, why, &i, &r, res);
    if (rc == LM_LUA_PENDING)
        return rc;
    rc = request_ran(call, req, &r, rc, res);
    return rc == LM_LUA_OK ? request_from(call, req, i + 1, res) : rc;
}
