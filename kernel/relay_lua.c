#include "relay_lua.h"

#include "errors.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

static int has(lm_lua_call_t *call, lm_lua_stage_t stage)
{
    return call && (lm_lua_call_stages(call) & LM_LUA_BIT(stage));
}

/* REJECT keeps the script's status and message; ERROR is a 500 that names
 * only the error id (the script's message is in the log, not for clients). */
static int to_err(int rc, const lm_lua_result_t *res, lm_err *e)
{
    if (rc == LM_LUA_REJECT)
        return lm_err_set(e, -1, res->status, lm_error_type_for(res->status),
                          res->code[0] ? res->code : "rejected_by_policy", "%s", res->message);
    return lm_err_set(e, -1, 500, "api_error", "script_error", "policy script failed (error id %s)",
                      res->errid);
}

lm_lua_vm_t *lm_rlua_vm(lm_worker_t *w, lm_lua_gen_t *gen, lm_err *e)
{
    char err[512];
    if (w->vm && lm_lua_vm_gen(w->vm) == gen)
        return w->vm;
    lm_lua_vm_t *vm = lm_lua_vm_new(gen, err, sizeof(err));
    if (vm == NULL) {
        lm_log(LM_LOG_ERROR, "worker %d: cannot start the scripts: %s", w->index, err);
        lm_err_set(e, -1, 500, "api_error", "script_error", "policy scripts are unavailable");
        return NULL;
    }
    lm_lua_vm_release(w->vm); /* requests still on the old state hold their own reference */
    w->vm = vm;
    return vm;
}

int lm_rlua_request(lm_lua_call_t *call, json_t *canon, lm_err *e)
{
    lm_lua_result_t res;
    if (!has(call, LM_LUA_STAGE_REQUEST))
        return 0;
    int rc = lm_lua_on_request(call, canon, &res);
    return rc == LM_LUA_OK ? 0 : to_err(rc, &res, e);
}

static json_t *candidate_json(const lm_route_t *c)
{
    const lm_chan_conf_t *ch = c->inst->chan;
    return json_pack("{s:s,s:s,s:s,s:b,s:i,s:f,s:f,s:f,s:i}", "name", ch->name, "model",
                     c->upstream, "plugin", ch->plugin, "healthy", 1, "inflight", 0, "latency_ms",
                     0.0, "ttft_ms", 0.0, "error_rate", 0.0, "price", 0);
}

long lm_rlua_route(lm_lua_call_t *call, lm_route_t *cands, size_t n, lm_err *e)
{
    lm_lua_result_t res;
    json_t *order = NULL;
    if (!has(call, LM_LUA_STAGE_ROUTE))
        return (long)n;
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, candidate_json(&cands[i]));
    int rc = lm_lua_on_route(call, list, &order, &res);
    json_decref(list);
    if (rc != LM_LUA_OK)
        return to_err(rc, &res, e);
    if (order == NULL)
        return (long)n;
    lm_route_t *copy = malloc(n * sizeof(*copy));
    size_t k = 0, i;
    json_t *name;
    if (copy == NULL) {
        json_decref(order);
        return lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
    }
    memcpy(copy, cands, n * sizeof(*copy));
    json_array_foreach (order, i, name) {
        for (size_t j = 0; j < n && k < n; j++)
            if (json_is_string(name) && !strcmp(copy[j].inst->chan->name, json_string_value(name)))
                cands[k++] = copy[j];
    }
    free(copy);
    json_decref(order);
    return (long)k;
}

static void apply_upstream(json_t *up, lm_ureq_t *u)
{
    json_t *headers = json_object_get(up, "headers"), *body = json_object_get(up, "body");
    const char *name;
    json_t *value;
    if (json_is_object(headers)) {
        for (size_t i = 0; i < u->nheaders; i++)
            free(u->headers[i]);
        u->nheaders = 0;
        json_object_foreach (headers, name, value) {
            const char *v = json_string_value(value);
            lm_host_table.ureq_add_header(u, lm_cstr(name), lm_cstr(v ? v : ""));
        }
    }
    if (json_is_string(body)) {
        lm_buf_reset(&u->body);
        lm_buf_add(&u->body, json_string_value(body), json_string_length(body));
        u->has_body = 1;
    }
}

int lm_rlua_upstream(lm_lua_call_t *call, const lm_route_t *route, int attempt, lm_ureq_t *u,
                     lm_err *e)
{
    lm_lua_result_t res;
    if (!has(call, LM_LUA_STAGE_UPSTREAM_REQUEST))
        return 0;
    json_t *headers = json_object();
    for (size_t i = 0; i < u->nheaders; i++) {
        const char *colon = strchr(u->headers[i], ':');
        if (colon == NULL)
            continue;
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(colon - u->headers[i]), u->headers[i]);
        json_object_set_new(headers, name, json_string(colon[1] == ' ' ? colon + 2 : colon + 1));
    }
    json_t *up =
        json_pack("{s:s,s:s,s:i,s:s,s:o,s:s%}", "channel", route->inst->chan->name, "model",
                  route->upstream, "attempt", attempt, "url", lm_buf_cstr(&u->url), "headers",
                  headers, "body", lm_buf_cstr(&u->body), u->body.len);
    if (up == NULL)
        return lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
    int rc = lm_lua_on_upstream_request(call, up, &res);
    if (rc == LM_LUA_OK)
        apply_upstream(up, u);
    json_decref(up);
    return rc == LM_LUA_OK ? 0 : to_err(rc, &res, e);
}

int lm_rlua_event(lm_lua_call_t *call, const char *json, size_t len, lm_buf_t *out, lm_err *e)
{
    lm_lua_result_t res;
    json_t *events = NULL, *ev;
    size_t i;
    json_t *chunk = json_loadb(json, len, 0, NULL);
    int rc = chunk ? lm_lua_on_event(call, chunk, &events, &res) : LM_LUA_OK;
    json_decref(chunk);
    if (rc != LM_LUA_OK)
        return to_err(rc, &res, e);
    json_array_foreach (events, i, ev) {
        char *s = json_dumps(ev, JSON_COMPACT);
        if (s) {
            lm_buf_adds(out, "data: ");
            lm_buf_adds(out, s);
            lm_buf_adds(out, "\n\n");
            free(s);
        }
    }
    json_decref(events);
    return 0;
}

int lm_rlua_response(lm_lua_call_t *call, char **body, lm_err *e)
{
    lm_lua_result_t res;
    if (!has(call, LM_LUA_STAGE_RESPONSE))
        return 0;
    json_t *obj = json_loads(*body, 0, NULL);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return 0; /* not a JSON object: nothing a script could edit */
    }
    int rc = lm_lua_on_response(call, obj, &res);
    if (rc == LM_LUA_OK) {
        char *s = json_dumps(obj, JSON_COMPACT);
        if (s) {
            free(*body);
            *body = s;
        }
    }
    json_decref(obj);
    return rc == LM_LUA_OK ? 0 : to_err(rc, &res, e);
}

int lm_rlua_error(lm_lua_call_t *call, lm_err *e, const lm_route_t *route, int attempt, int started)
{
    lm_lua_result_t res;
    if (!has(call, LM_LUA_STAGE_ERROR))
        return 0;
    json_t *err = json_pack("{s:i,s:s,s:s,s:s,s:s,s:s,s:i}", "status", e->http_status, "type",
                            e->type, "code", e->code, "message", e->msg, "channel",
                            route ? route->inst->chan->name : "", "model",
                            route ? route->upstream : "", "attempt", attempt);
    if (err == NULL)
        return 0;
    int rc = lm_lua_on_error(call, err, started, &res);
    if (rc == LM_LUA_OK || rc == LM_LUA_RETRY) {
        json_t *st = json_object_get(err, "status");
        if (json_is_integer(st) && json_integer_value(st) >= 400 && json_integer_value(st) <= 599)
            e->http_status = (int)json_integer_value(st);
        const char *fields[] = {"type", "code", "message"};
        char *dst[] = {e->type, e->code, e->msg};
        size_t len[] = {sizeof(e->type), sizeof(e->code), sizeof(e->msg)};
        for (int i = 0; i < 3; i++) {
            const char *v = json_string_value(json_object_get(err, fields[i]));
            if (v)
                snprintf(dst[i], len[i], "%s", v);
        }
    } else {
        to_err(rc, &res, e);
    }
    json_decref(err);
    return rc == LM_LUA_RETRY;
}

void lm_rlua_usage(lm_lua_call_t *call, const lm_usage *u, int64_t *charge)
{
    lm_lua_result_t res;
    if (!has(call, LM_LUA_STAGE_USAGE))
        return;
    json_t *usage = lm_usage_to_openai(u);
    json_t *price = json_pack("{s:i,s:i,s:i}", "input", 0, "output", 0, "cached_input", 0);
    if (usage && price)
        lm_lua_on_usage(call, usage, price, charge, &res);
    json_decref(usage);
    json_decref(price);
}

void lm_rlua_log(lm_lua_call_t *call, json_t *record)
{
    if (has(call, LM_LUA_STAGE_LOG))
        lm_lua_on_log(call, record);
}
