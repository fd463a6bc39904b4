/*
 * stage_route.c - the stages that shape the upstream call: on_route (the
 * channel order) and on_upstream_request (headers and body per attempt).
 * Inputs arrive as JSON text and stay text unless a script looks at them.
 * Thread: the worker owning the vm. Outputs are new references the caller
 * releases (lua_host.h).
 */
#include "lua/call.h"
#include "lua/encode.h"
#include "lua/lazy.h"
#include "lua/runner.h"

#include <stdlib.h>
#include <string.h>

/* The request view (also lm.request) and the stage's text input. */
static void push_req_and_text(lua_State *L, lm_lua_run_t *r)
{
    lm_lua_push_reqview(L, r->call);
    lm_lua_set_request(L, -1);
    if (r->input) {
        lm_lua_push_box(L, r->input, NULL);
        lm_lua_push_lazy(L, -1, 0);
        lua_remove(L, -2);
    } else {
        lm_lua_push_lazy_text(L, r->text, r->tlen);
    }
    r->nargs = 2;
}

/* The JSON an input kept as bytes stands for (part 0), or NULL. */
static json_t *input_json(const lm_lua_input_t *in)
{
    size_t n = 0;
    char *t = in->write(in->data, in->n, 0, &n);
    json_t *j = t ? json_loadb(t, n, 0, NULL) : NULL;
    free(t);
    return j;
}

static void collect_route(lua_State *L, lm_lua_run_t *r, int args, int res, int nres)
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
        lm_lua_to_json(L, -1, 1, "on_route", names, NULL, 0, NULL);
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

static int route_run(lm_lua_call_t *call, const char *cands, size_t len, const lm_lua_input_t *in,
                     json_t **order, lm_lua_result_t *res)
{
    json_t *cur = NULL; /* the candidates as JSON, once a script reordered them */
    char *text = NULL;  /* and as text, for the scripts after it */
    size_t j;
    json_t *c;

    lm_lua_res_clear(res);
    *order = NULL;
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_ROUTE)) ||
        (!in && lm_lua_first_char(cands, len) != '['))
        return LM_LUA_OK;
    for (size_t i = 0; i < call->vm->gen->n; i++) {
        lm_lua_run_t r = {.call = call,
                          .stage = LM_LUA_STAGE_ROUTE,
                          .text = text ? text : cands,
                          .tlen = text ? strlen(text) : len,
                          .input = text ? NULL : in,
                          .push = push_req_and_text,
                          .collect = collect_route};
        json_t *next;
        int rc;
        if (!lm_lua_runs(call, i, LM_LUA_STAGE_ROUTE))
            continue;
        rc = lm_lua_run(call->vm, i, &r, res);
        if (rc != LM_LUA_OK) {
            json_decref(cur);
            free(text);
            return rc;
        }
        if (!r.changed)
            continue;
        if (!cur)
            cur = in ? input_json(in) : json_loadb(cands, len, 0, NULL);
        next = cur ? reorder(cur, r.out[0]) : NULL;
        json_decref(r.out[0]);
        json_decref(cur);
        free(text);
        cur = next;
        text = cur ? json_dumps(cur, JSON_COMPACT) : NULL;
        if (!text) {
            json_decref(cur);
            return lm_lua_host_oom(res);
        }
    }
    free(text);
    if (cur) {
        *order = json_array();
        json_array_foreach (cur, j, c)
            json_array_append(*order, json_object_get(c, "name"));
        json_decref(cur);
        if (!*order)
            return lm_lua_host_oom(res);
    }
    return LM_LUA_OK;
}

int lm_lua_on_route_text(lm_lua_call_t *call, const char *cands, size_t len, json_t **order,
                         lm_lua_result_t *res)
{
    return route_run(call, cands, len, NULL, order, res);
}

int lm_lua_on_route_input(lm_lua_call_t *call, const lm_lua_input_t *cands, json_t **order,
                          lm_lua_result_t *res)
{
    return route_run(call, NULL, 0, cands, order, res);
}

int lm_lua_on_route(lm_lua_call_t *call, json_t *candidates, json_t **order, lm_lua_result_t *res)
{
    char *text;
    int rc;

    lm_lua_res_clear(res);
    *order = NULL;
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_ROUTE)) || !json_is_array(candidates))
        return LM_LUA_OK;
    text = json_dumps(candidates, JSON_COMPACT);
    if (!text)
        return lm_lua_host_oom(res);
    rc = lm_lua_on_route_text(call, text, strlen(text), order, res);
    free(text);
    return rc;
}

/* The request view and up: its text without the body, plus the body. */
static void push_upstream(lua_State *L, lm_lua_run_t *r)
{
    lm_lua_push_reqview(L, r->call);
    lm_lua_set_request(L, -1);
    if (r->input) { /* one copy of up and its body, written only if a script looks */
        lm_lua_push_box(L, r->input, "body");
        lm_lua_push_lazy(L, -1, 0);
        lua_remove(L, -2);
    } else {
        lm_lua_push_lazy_text_with(L, r->text, r->tlen, "body", r->text2 ? r->text2 : "", r->tlen2);
    }
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

static void collect_upstream(lua_State *L, lm_lua_run_t *r, int args, int res, int nres)
{
    int t = lm_lua_pick_table(L, args + 1, res, nres, "on_upstream_request");
    json_t *h;

    if (lm_lua_untouched(L, t, args + 1))
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
        lm_lua_to_json(L, -1, 1, "up.headers", h, k, kl, NULL);
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
static int upstream_apply(up_state_t *st, const char *up, size_t len, const lm_lua_input_t *in,
                          const char *body, size_t blen, json_t *h, json_t *b)
{
    if (!st->up) {
        st->up = in ? input_json(in) : json_loadb(up, len, 0, NULL);
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

static int upstream_run(lm_lua_call_t *call, const char *up, size_t len, const char *body,
                        size_t blen, const lm_lua_input_t *in, json_t **headers, json_t **new_body,
                        lm_lua_result_t *res)
{
    up_state_t st = {NULL, NULL, NULL};
    int changed = 0, rc = LM_LUA_OK;

    lm_lua_res_clear(res);
    *headers = *new_body = NULL;
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_UPSTREAM_REQUEST)) ||
        (!in && lm_lua_first_char(up, len) != '{'))
        return LM_LUA_OK;
    if (in) {
        body = in->raw ? in->raw : "";
        blen = in->raw ? in->rn : 0;
    }
    for (size_t i = 0; i < call->vm->gen->n && rc == LM_LUA_OK; i++) {
        lm_lua_run_t r = {.call = call,
                          .stage = LM_LUA_STAGE_UPSTREAM_REQUEST,
                          .text = st.text ? st.text : up,
                          .tlen = st.text ? strlen(st.text) : len,
                          .text2 = st.text ? json_string_value(st.body) : body,
                          .tlen2 = st.text ? json_string_length(st.body) : blen,
                          .input = st.text ? NULL : in,
                          .push = push_upstream,
                          .collect = collect_upstream};
        int applied = 0;
        if (!lm_lua_runs(call, i, LM_LUA_STAGE_UPSTREAM_REQUEST))
            continue;
        rc = lm_lua_run(call->vm, i, &r, res);
        if (rc == LM_LUA_OK && r.out[0])
            applied = upstream_apply(&st, up, len, in, body, blen, r.out[0], r.out[1]);
        changed |= applied == 1;
        if (applied < 0)
            rc = lm_lua_host_oom(res);
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

int lm_lua_on_upstream_text(lm_lua_call_t *call, const char *up, size_t len, const char *body,
                            size_t blen, json_t **headers, json_t **new_body, lm_lua_result_t *res)
{
    return upstream_run(call, up, len, body, blen, NULL, headers, new_body, res);
}

int lm_lua_on_upstream_input(lm_lua_call_t *call, const lm_lua_input_t *up, json_t **headers,
                             json_t **new_body, lm_lua_result_t *res)
{
    return upstream_run(call, NULL, 0, NULL, 0, up, headers, new_body, res);
}

int lm_lua_on_upstream_request(lm_lua_call_t *call, json_t *up, lm_lua_result_t *res)
{
    json_t *h, *b, *rest, *body;
    char *text;
    int rc;

    lm_lua_res_clear(res);
    if (!(call->stages & LM_LUA_BIT(LM_LUA_STAGE_UPSTREAM_REQUEST)) || !json_is_object(up))
        return LM_LUA_OK;
    body = json_object_get(up, "body");
    rest = json_copy(up);
    text = rest && !json_object_del(rest, "body") ? json_dumps(rest, JSON_COMPACT) : NULL;
    json_decref(rest);
    if (!text)
        return lm_lua_host_oom(res);
    rc = lm_lua_on_upstream_text(call, text, strlen(text), json_string_value(body),
                                 json_string_length(body), &h, &b, res);
    free(text);
    if (h) {
        json_object_set_new(up, "headers", h);
        json_object_set_new(up, "body", b);
    }
    return rc;
}
