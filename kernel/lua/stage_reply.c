/*
 * stage_reply.c - the stages on what goes back to the client: on_event
 * (each stream event, as text; untouched events pass as the same bytes)
 * and on_response (a non-stream body).
 * Thread: the worker owning the vm. Text handed to emit is borrowed for
 * the call; a new response body is malloc'd for the caller (lua_host.h).
 */
#include "lua/call.h"
#include "lua/encode.h"
#include "lua/lazy.h"
#include "lua/runner.h"

#include <stdlib.h>
#include <string.h>

/* Appends the event table at idx to list. JSON null stands for "the input
 * as it came": the argument itself, never looked at, so the caller can
 * forward the original text without decoding or encoding it. */
static void add_event(lua_State *L, json_t *list, int idx, int arg)
{
    if (lm_lua_untouched(L, idx, arg)) {
        lm_lua_tj_attach(L, json_null(), list, NULL, 0, NULL);
        return;
    }
    lm_lua_to_json(L, idx, 0, "event", list, NULL, 0, NULL);
    if (!json_is_object(json_array_get(list, json_array_size(list) - 1)))
        luaL_error(L, "on_event: an event must be an object");
}

static void collect_event(lua_State *L, lm_lua_run_t *r, int args, int res, int nres)
{
    json_t *list;
    int keep = nres < 1 || lua_isnil(L, res) || (lua_isboolean(L, res) && lua_toboolean(L, res));

    if (keep && lm_lua_untouched(L, args, args)) {
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

    while (i < call->vm->gen->n && !lm_lua_runs(call, i, LM_LUA_STAGE_EVENT))
        i++;
    if (i == call->vm->gen->n) {
        emit(arg, json, len);
        return LM_LUA_OK;
    }
    lm_lua_run_t r = {.call = call,
                      .stage = LM_LUA_STAGE_EVENT,
                      .text = json,
                      .tlen = len,
                      .push = lm_lua_push_text,
                      .collect = collect_event};
    rc = lm_lua_run(call->vm, i, &r, res);
    if (rc != LM_LUA_OK)
        return rc;
    if (r.keep)
        return event_chain(call, i + 1, json, len, emit, arg, res);
    json_array_foreach (r.out[0], k, e) {
        char *s = json_is_null(e) ? NULL : json_dumps(e, JSON_COMPACT);
        if (s == NULL && !json_is_null(e)) {
            rc = lm_lua_host_oom(res);
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
    lm_lua_res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_EVENT)) || lm_lua_first_char(json, len) != '{') {
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

    lm_lua_res_clear(res);
    *out = NULL;
    if (!list)
        return lm_lua_host_oom(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_EVENT))) {
        if (json_array_append(list, ev)) {
            json_decref(list);
            return lm_lua_host_oom(res);
        }
        *out = list;
        return LM_LUA_OK;
    }
    text = json_dumps(ev, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        json_decref(list);
        return lm_lua_host_oom(res);
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

static void push_response(lua_State *L, lm_lua_run_t *r)
{
    lm_lua_push_text(L, r);
    lm_lua_set_response(L, -1);
    r->nargs = 1;
}

int lm_lua_on_response_text(lm_lua_call_t *call, const char *json, size_t len, char **out,
                            lm_lua_result_t *res)
{
    char *cur = NULL;

    lm_lua_res_clear(res);
    *out = NULL;
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_RESPONSE)) || lm_lua_first_char(json, len) != '{')
        return LM_LUA_OK;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        lm_lua_run_t r = {.call = call,
                          .stage = LM_LUA_STAGE_RESPONSE,
                          .text = cur ? cur : json,
                          .tlen = cur ? strlen(cur) : len,
                          .push = push_response,
                          .collect = lm_lua_collect_object};
        int rc;
        if (!lm_lua_runs(call, i, LM_LUA_STAGE_RESPONSE))
            continue;
        rc = lm_lua_run(call->vm, i, &r, res);
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
                return lm_lua_host_oom(res);
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

    lm_lua_res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_RESPONSE)) || !json_is_object(body))
        return LM_LUA_OK;
    text = json_dumps(body, JSON_COMPACT);
    if (!text)
        return lm_lua_host_oom(res);
    rc = lm_lua_on_response_text(call, text, strlen(text), &out, res);
    free(text);
    if (rc != LM_LUA_OK || out == NULL)
        return rc;
    obj = json_loads(out, 0, NULL);
    free(out);
    if (!obj || lm_lua_replace_object(body, obj)) {
        json_decref(obj);
        return lm_lua_host_oom(res);
    }
    json_decref(obj);
    return LM_LUA_OK;
}
