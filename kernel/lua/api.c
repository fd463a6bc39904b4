/*
 * api.c - the lm.* functions scripts call (log, time, digests, reject and
 * retry, lm.json, lm.base64, lm.shared, and lm's per-run fields request,
 * response, ctx), and the lm table that holds them.
 * Thread: the worker owning the state; inside protected calls. Results go
 * to Lua values or to the vm's decision fields; nothing for C to free.
 */
#include "lua/api.h"
#include "core/b64.h"
#include "core/log.h"
#include "lua/call.h"
#include "lua/decode.h"
#include "lua/encode.h"
#include "lua/lazy.h"
#include "lua/limits.h"
#include "lua/moderate.h"
#include "lua/sandbox.h"
#include "lua/shared.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>
#include <time.h>

#define ALL_STAGES ((1u << LM_LUA_NSTAGES) - 1)
#define REQ_STAGES (ALL_STAGES & ~LM_LUA_BIT(LM_LUA_STAGE_LOAD))

static int lm_log_fn(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    int level = lm_log_parse_level(luaL_checkstring(L, 1));
    const char *msg = luaL_checkstring(L, 2);

    if (level < 0)
        return luaL_error(L, "lm.log: unknown level '%s' (error, warn, info, debug)",
                          lua_tostring(L, 1));
    lm_log(level, "lua[%s] %s", lm_lua_script_name(vm), msg);
    return 0;
}

static int lm_time_fn(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    return 1;
}

static int lm_now_ms_fn(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

static void push_digest(lua_State *L, const unsigned char *md, unsigned n, int raw)
{
    static const char hex[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];

    if (raw) {
        lua_pushlstring(L, (const char *)md, n);
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    lua_pushlstring(L, out, 2 * (size_t)n);
}

static int lm_sha256_fn(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;

    if (!EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL))
        return luaL_error(L, "lm.sha256: digest failed");
    push_digest(L, md, mdlen, lua_toboolean(L, 2));
    return 1;
}

static int lm_hmac_fn(lua_State *L)
{
    size_t kl, ml;
    const char *k = luaL_checklstring(L, 1, &kl);
    const char *m = luaL_checklstring(L, 2, &ml);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;

    if (kl > INT32_MAX || !HMAC(EVP_sha256(), k, (int)kl, (const unsigned char *)m, ml, md, &mdlen))
        return luaL_error(L, "lm.hmac_sha256: failed");
    push_digest(L, md, mdlen, lua_toboolean(L, 3));
    return 1;
}

static int lm_reject_fn(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    lua_Integer status = luaL_checkinteger(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    const char *code = luaL_optstring(L, 3, "");

    lm_lua_gate(L,
                LM_LUA_BIT(LM_LUA_STAGE_REQUEST) | LM_LUA_BIT(LM_LUA_STAGE_ROUTE) |
                    LM_LUA_BIT(LM_LUA_STAGE_UPSTREAM_REQUEST) | LM_LUA_BIT(LM_LUA_STAGE_RESPONSE),
                "lm.reject");
    if (status < 400 || status > 599)
        return luaL_error(L, "lm.reject: status must be 400..599");
    vm->reject_status = (int)status;
    lm_lua_copy_str(vm->reject_msg, sizeof(vm->reject_msg), msg);
    lm_lua_copy_str(vm->reject_code, sizeof(vm->reject_code), code);
    return 0;
}

static int lm_retry_fn(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    const char *model = luaL_optstring(L, 1, "");

    lm_lua_gate(L, LM_LUA_BIT(LM_LUA_STAGE_ERROR), "lm.retry");
    vm->retry = 1;
    lm_lua_copy_str(vm->retry_model, sizeof(vm->retry_model), model);
    return 0;
}

static int lm_json_array_fn(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lm_lua_touch(L, 1);
    if (lua_getmetatable(L, 1))
        return luaL_error(L, "lm.json.array: the table already has a metatable");
    lua_settop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &lm_lua_array_key);
    lua_setmetatable(L, 1);
    return 1;
}

static lm_lua_shared_t *shared_of(lua_State *L, const char *what)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);
    lm_lua_gate(L, REQ_STAGES, what);
    if (!vm->gen->shared)
        luaL_error(L, "%s: no shared dictionary is configured", what);
    return vm->gen->shared;
}

static const char *shared_key(lua_State *L, size_t *n)
{
    const char *k = luaL_checklstring(L, 1, n);
    if (*n == 0 || *n > 256)
        luaL_error(L, "lm.shared: keys are 1..256 bytes");
    return k;
}

static int lm_shared_get(lua_State *L)
{
    lm_lua_shared_t *sh = shared_of(L, "lm.shared.get");
    size_t n;
    const char *k = shared_key(L, &n);
    int64_t v;

    if (lm_lua_shared_get(sh, k, n, &v))
        lua_pushnil(L);
    else
        lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

static int64_t ttl_arg(lua_State *L, int idx)
{
    lua_Number ttl = luaL_optnumber(L, idx, 0);
    if (ttl < 0 || ttl > 1e9)
        luaL_error(L, "lm.shared: ttl must be 0..1e9 seconds");
    return (int64_t)(ttl * 1000);
}

static int lm_shared_incr(lua_State *L)
{
    lm_lua_shared_t *sh = shared_of(L, "lm.shared.incr");
    size_t n;
    const char *k = shared_key(L, &n);
    lua_Integer d = luaL_checkinteger(L, 2);
    int64_t v;

    if (lm_lua_shared_incr(sh, k, n, (int64_t)d, ttl_arg(L, 3), &v)) {
        luaL_pushfail(L);
        lua_pushliteral(L, "full");
        return 2;
    }
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

static int lm_shared_set(lua_State *L)
{
    lm_lua_shared_t *sh = shared_of(L, "lm.shared.set");
    size_t n;
    const char *k = shared_key(L, &n);
    lua_Integer v = luaL_checkinteger(L, 2);

    if (lm_lua_shared_set(sh, k, n, (int64_t)v, ttl_arg(L, 3))) {
        luaL_pushfail(L);
        lua_pushliteral(L, "full");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int lm_shared_delete(lua_State *L)
{
    lm_lua_shared_t *sh = shared_of(L, "lm.shared.delete");
    size_t n;
    const char *k = shared_key(L, &n);

    lm_lua_shared_del(sh, k, n);
    return 0;
}

/* lm's __index: the per-run fields, then the function table (upvalue 1). */
static int lm_index(lua_State *L)
{
    lm_lua_vm_t *vm = lm_lua_vm_of(L);

    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        if (strcmp(k, "request") == 0) {
            lm_lua_gate(L, REQ_STAGES, "lm.request");
            if (!vm->has_req) {
                lm_lua_push_reqview(L, vm->call);
                lm_lua_set_request(L, -1);
                return 1;
            }
            lua_rawgeti(L, LUA_REGISTRYINDEX, vm->slot_req);
            return 1;
        }
        if (strcmp(k, "response") == 0) {
            lm_lua_gate(L, LM_LUA_BIT(LM_LUA_STAGE_RESPONSE), "lm.response");
            lua_rawgeti(L, LUA_REGISTRYINDEX, vm->slot_resp);
            return 1;
        }
        if (strcmp(k, "ctx") == 0) {
            int *ref;
            lm_lua_gate(L, REQ_STAGES, "lm.ctx");
            ref = &vm->call->ctx[vm->script];
            if (*ref == LUA_NOREF) {
                lua_newtable(L);
                *ref = luaL_ref(L, LUA_REGISTRYINDEX);
            }
            lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
            return 1;
        }
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* lm.base64.encode(s): the standard alphabet, padded (core/b64.c). The
 * buffer is the state's, so it counts against the memory cap. */
static int lm_base64_encode_fn(lua_State *L)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, LM_B64_LEN(n) + 1);

    luaL_pushresultsize(&b, lm_b64_encode(s, n, out, 0));
    return 1;
}

/* lm.base64.decode(s): either alphabet, padding optional. Returns the
 * bytes, or nil + message. */
static int lm_base64_decode_fn(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n / 4 * 3 + 3);
    long len = lm_b64_decode(s, n, (unsigned char *)out);

    if (len < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "lm.base64.decode: invalid base64");
        return 2;
    }
    luaL_pushresultsize(&b, (size_t)len);
    return 1;
}

/* Builds the lm table and sets B.lm to its read-only proxy; leaves the
 * table itself on the stack and returns its index. */
int lm_lua_api_open(lua_State *L, int B)
{
    int t;

    lua_newtable(L);
    t = lua_gettop(L);
    lm_lua_set_fn(L, "log", lm_log_fn);
    lm_lua_set_fn(L, "time", lm_time_fn);
    lm_lua_set_fn(L, "now_ms", lm_now_ms_fn);
    lm_lua_set_fn(L, "sha256", lm_sha256_fn);
    lm_lua_set_fn(L, "hmac_sha256", lm_hmac_fn);
    lm_lua_set_fn(L, "reject", lm_reject_fn);
    lm_lua_set_fn(L, "retry", lm_retry_fn);
    lm_lua_set_fn(L, "moderate", lm_lua_moderate_fn);
    lm_lua_pushnull(L);
    lua_setfield(L, t, "null");
    lua_newtable(L);
    lm_lua_set_fn(L, "encode", lm_lua_json_encode);
    lm_lua_set_fn(L, "decode", lm_lua_json_decode);
    lm_lua_set_fn(L, "array", lm_json_array_fn);
    lm_lua_pushnull(L);
    lua_setfield(L, -2, "null");
    lm_lua_push_proxy(L, -1, "lm.json", NULL);
    lua_setfield(L, t, "json");
    lua_pop(L, 1);
    lua_newtable(L);
    lm_lua_set_fn(L, "encode", lm_base64_encode_fn);
    lm_lua_set_fn(L, "decode", lm_base64_decode_fn);
    lm_lua_push_proxy(L, -1, "lm.base64", NULL);
    lua_setfield(L, t, "base64");
    lua_pop(L, 1);
    lua_newtable(L);
    lm_lua_set_fn(L, "get", lm_shared_get);
    lm_lua_set_fn(L, "incr", lm_shared_incr);
    lm_lua_set_fn(L, "set", lm_shared_set);
    lm_lua_set_fn(L, "delete", lm_shared_delete);
    lm_lua_push_proxy(L, -1, "lm.shared", NULL);
    lua_setfield(L, t, "shared");
    lua_pop(L, 1);
    lm_lua_push_proxy(L, t, "lm", lm_index);
    lua_setfield(L, B, "lm");
    return t;
}
