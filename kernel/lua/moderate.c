/*
 * moderate.c - lm.moderate(model, text): a moderation verdict from a side
 * call the host makes without blocking (lua_host.h, lm_lua_call_set_side);
 * the stage's thread yields until park.c resumes it with the answer.
 * Thread: the worker owning the vm.
 */
#include "lua/moderate.h"
#include "lua/limits.h"

static int no_verdict(lua_State *L, const char *why)
{
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
}

/* lm.moderate(model, text): starts the host's side call and yields until
 * lm_lua_park_resume brings the answer (its return values). */
int lm_lua_moderate_fn(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    const char *model = luaL_checkstring(L, 1);
    size_t n;
    const char *text = luaL_checklstring(L, 2, &n);
    lm_lua_call_t *call = vm->call;
    char err[256];

    lm_lua_gate(L, LM_LUA_BIT(LM_LUA_STAGE_REQUEST), "lm.moderate");
    if (call == NULL || call->side == NULL)
        return no_verdict(L, "side calls are not available here");
    if (L != vm->co_cur || !lua_isyieldable(L))
        return no_verdict(L, "lm.moderate cannot wait here (inside a coroutine or a metamethod)");
    if (vm->reject_status)
        return no_verdict(L, "the request is already rejected");
    if (call->nside >= LM_LUA_SIDE_MAX)
        return no_verdict(L, "too many side calls for one request");
    err[0] = 0;
    if (call->side(call->side_arg, model, text, n, err, sizeof(err)) < 0)
        return no_verdict(L, err[0] ? err : "the side call could not start");
    call->nside++;
    vm->co_wait = 1;
    return lua_yield(L, 0);
}
