/*
 * call.c - one client request's view of a vm (lm_lua_call_t): which scripts
 * apply, lm.ctx tables, and the request as scripts see it ({model,
 * messages, params, key, group, meta}, a pending table over an anchor).
 * Thread: the worker owning the vm. The call is the caller's until
 * lm_lua_call_end; it holds its own references to req and meta.
 */
#include "lua/call.h"
#include "lua/lazy.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

/* Slots of a request anchor (push_reqview), and its user values: 1 key
 * name, 2 key group, 3 api, 4 the latest view made from it. */
enum { SLOT_REQ, SLOT_MODEL, SLOT_MESSAGES, SLOT_META };
enum { SLOT_UV_VIEW = 4 };

static int match_any(char *const *pats, size_t n, const char *s)
{
    if (!n)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (fnmatch(pats[i], s ? s : "", 0) == 0)
            return 1;
    return 0;
}

/* The call, its per-script arrays and its key strings in one allocation
 * (one per request, for every request that has scripts). */
static lm_lua_call_t *call_alloc(size_t n, const char *key_name, const char *key_group)
{
    size_t kn = strlen(key_name) + 1, kg = key_group ? strlen(key_group) + 1 : 0;
    lm_lua_call_t *call = calloc(1, sizeof(*call) + n * (sizeof(int) + 1) + kn + kg);
    char *p;

    if (!call)
        return NULL;
    call->ctx = (int *)(call + 1);
    call->applies = (unsigned char *)(call->ctx + n);
    p = (char *)(call->applies + n);
    call->key_name = memcpy(p, key_name, kn);
    call->key_group = key_group ? memcpy(p + kn, key_group, kg) : NULL;
    return call;
}

lm_lua_call_t *lm_lua_call_begin(lm_lua_vm_t *vm, const char *key_name, const char *key_group,
                                 json_t *req)
{
    lm_lua_gen_t *gen = vm->gen;
    lm_lua_call_t *call = call_alloc(gen->n, key_name ? key_name : "", key_group);
    const char *model = NULL;
    json_t *m;

    if (!call || !(call->meta = json_object())) {
        free(call);
        return NULL;
    }
    call->req = json_incref(req);
    call->anchor = call->park_ref = LUA_NOREF;
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
int lm_lua_drop_view(lm_lua_call_t *call)
{
    lua_State *L = call->vm->L;
    int rc = 0;

    if (call->anchor != LUA_NOREF) {
        lm_lua_anchor_t *a = call->anchor_p;
        if (call->req && a->j[SLOT_REQ] == call->req)
            rc = lm_lua_anchor_snapshot(a, SLOT_REQ);
    }
    unref(L, &call->anchor);
    call->anchor_p = NULL;
    return rc;
}

void lm_lua_call_end(lm_lua_call_t *call)
{
    if (!call)
        return;
    if (call->park) { /* a stage still waiting (park.c): its thread goes to the collector */
        luaL_unref(call->vm->L, LUA_REGISTRYINDEX, call->park_ref);
        free(call->park); /* holds no references while waiting */
    }
    for (size_t i = 0; i < call->vm->gen->n; i++)
        if (call->ctx[i] != LUA_NOREF)
            luaL_unref(call->vm->L, LUA_REGISTRYINDEX, call->ctx[i]);
    if (call->vm->req_set) { /* so that the collector can have what the slot showed */
        lua_pushboolean(call->vm->L, 0);
        lua_rawseti(call->vm->L, LUA_REGISTRYINDEX, call->vm->slot_req);
        call->vm->req_set = 0;
    }
    unref(call->vm->L, &call->anchor); /* req is not changed after the end */
    call->anchor_p = NULL;
    json_decref(call->req);
    json_decref(call->meta);
    lm_lua_vm_release(call->vm);
    free(call); /* with its arrays and strings */
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
    if (lua_getiuservalue(L, src, 3) == LUA_TSTRING)
        rawset_field(L, t, "api");
    else
        lua_pop(L, 1);
    push_slot(L, src, a, SLOT_META, 0);
    rawset_field(L, t, "meta");
}

/* The slot keeps the view after the run (the stages of a request share
 * one view): written only when it changes, emptied by lm_lua_call_end. */
void lm_lua_set_request(lua_State *L, int idx)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    int same;

    idx = lua_absindex(L, idx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->slot_req);
    same = lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
    if (!same) {
        lua_pushvalue(L, idx);
        lua_rawseti(L, LUA_REGISTRYINDEX, vm->slot_req);
    }
    vm->has_req = vm->req_set = 1;
}

void lm_lua_set_response(lua_State *L, int idx)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    lua_pushvalue(L, idx);
    lua_rawseti(L, LUA_REGISTRYINDEX, vm->slot_resp);
    vm->has_resp = 1;
}

/* Whether the anchor still shows what the call has now. */
static int anchor_current(const lm_lua_call_t *call, const lm_lua_anchor_t *a)
{
    json_t *req = json_is_object(call->req) ? call->req : NULL;
    return a->j[SLOT_REQ] == req && a->j[SLOT_MODEL] == json_object_get(req, "model") &&
           a->j[SLOT_MESSAGES] == json_object_get(req, "messages") && a->j[SLOT_META] == call->meta;
}

static lm_lua_anchor_t *push_request_anchor(lua_State *L, lm_lua_call_t *call)
{
    json_t *req = json_is_object(call->req) ? call->req : NULL;
    lm_lua_anchor_t *a =
        lm_lua_push_anchor(L, lm_lua_json_cost(req) + lm_lua_json_cost(call->meta), SLOT_UV_VIEW);

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
    lua_pushstring(L, call->api ? call->api : "chat");
    lua_setiuservalue(L, -2, 3);
    return a;
}

void lm_lua_call_set_side(lm_lua_call_t *call, lm_lua_side_fn fn, void *arg)
{
    if (call) {
        call->side = fn;
        call->side_arg = arg;
    }
}

int lm_lua_call_side_count(const lm_lua_call_t *call)
{
    return call ? call->nside : 0;
}

void lm_lua_call_set_api(lm_lua_call_t *call, const char *api)
{
    if (call)
        call->api = api;
}

/* The request as scripts see it: {model, messages, params, key, group,
 * meta}, as a pending table. Stages share one anchor per request, and one
 * view while no script has looked at it (a view a script touched may have
 * been changed: the next stage gets a fresh one, as changes outside
 * on_request are ignored). */
void lm_lua_push_reqview(lua_State *L, lm_lua_call_t *call)
{
    luaL_checkstack(L, 4, NULL);
    if (call->anchor != LUA_NOREF && !anchor_current(call, call->anchor_p))
        lm_lua_drop_view(call);
    if (call->anchor == LUA_NOREF) {
        call->anchor_p = push_request_anchor(L, call);
        lua_pushvalue(L, -1);
        call->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, call->anchor);
        if (lua_getiuservalue(L, -1, SLOT_UV_VIEW) == LUA_TTABLE && lm_lua_lazy_pending(L, -1)) {
            lua_remove(L, -2);
            return; /* no script looked at it yet: the same view again */
        }
        lua_pop(L, 1);
    }
    /* the anchor keeps its latest view (a user value, not a registry ref) */
    lm_lua_push_lazy(L, -1, LM_LUA_LAZY_VIEW);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, -3, SLOT_UV_VIEW);
    lua_remove(L, -2);
}
