/*
 * test_lua.c - the Lua script host (kernel/lua/): every stage, the
 * lm.* API, the sandbox (PL-7), limits (PL-4/5/6), isolation (PL-8),
 * generations and reload, and the shipped scripts in scripts/.
 * Run from the repository root.
 */
#include "core/log.h"
#include "lua/lua_host.h"
#include "t.h"

#include "longmen.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ASan's quarantine and TSan's shadow memory both inflate RSS. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static char tmpdir[64];
static int nfile;

/* ---- helpers ---- */

static const char *write_file(const char *name, const char *data, size_t n)
{
    static char paths[16][160];
    char *p = paths[nfile++ % 16];
    FILE *f;

    snprintf(p, 160, "%s/%s", tmpdir, name);
    f = fopen(p, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        perror(p);
        exit(2);
    }
    fclose(f);
    return p;
}

static const char *write_str(const char *name, const char *src)
{
    return write_file(name, src, strlen(src));
}

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j) {
        fprintf(stderr, "bad test JSON: %s: %s\n", e.text, text);
        exit(2);
    }
    return j;
}

static int json_eq_text(json_t *j, const char *text)
{
    json_t *x = J(text);
    int r = json_equal(j, x);
    json_decref(x);
    return r;
}

static char *dump(json_t *j)
{
    static char buf[4][4096];
    static int k;
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    char *b = buf[k++ % 4];
    snprintf(b, 4096, "%s", s ? s : "(null)");
    free(s);
    return b;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One script "s" from source text. */
static lm_lua_gen_t *gen_src_lim(const char *src, json_t *args, const lm_lua_limits_t *lim,
                                 lm_lua_shared_t *sh, char *err, size_t errlen)
{
    lm_lua_script_spec_t spec = {
        .name = "s", .path = write_file("s.lua", src, strlen(src)), .args = args};
    return lm_lua_gen_load(&spec, 1, lim, sh, err, errlen);
}

static lm_lua_gen_t *gen_src(const char *src, char *err, size_t errlen)
{
    return gen_src_lim(src, NULL, NULL, NULL, err, errlen);
}

/* A shipped script with args. */
static lm_lua_gen_t *gen_file(const char *path, const char *args, lm_lua_shared_t *sh, char *err,
                              size_t errlen)
{
    json_t *a = args ? J(args) : NULL;
    lm_lua_script_spec_t spec = {.name = "shipped", .path = path, .args = a};
    /* A sanitizer slows the step hook: the 10 ms default deadline is for real builds. */
    lm_lua_limits_t slow = {.deadline_ms = 1000};
    lm_lua_gen_t *g = lm_lua_gen_load(&spec, 1, UNDER_ASAN ? &slow : NULL, sh, err, errlen);
    json_decref(a);
    return g;
}

static const char *SAMPLE_REQ =
    "{\"model\":\"qwen-max\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
    "\"temperature\":0.5,\"stream\":false}";

/* A vm + call on a fresh request; the caller ends both. */
typedef struct fx_s {
    lm_lua_gen_t *gen;
    lm_lua_vm_t *vm;
    lm_lua_call_t *call;
    json_t *req;
    char err[512];
} fx_t;

static int fx_open(fx_t *f, const char *src, const char *key)
{
    memset(f, 0, sizeof(*f));
    f->gen = gen_src(src, f->err, sizeof(f->err));
    if (!f->gen)
        return -1;
    f->vm = lm_lua_vm_new(f->gen, f->err, sizeof(f->err));
    f->req = J(SAMPLE_REQ);
    f->call = f->vm ? lm_lua_call_begin(f->vm, key ? key : "team-a-1", NULL, f->req) : NULL;
    return f->call ? 0 : -1;
}

static void fx_close(fx_t *f)
{
    lm_lua_call_end(f->call);
    lm_lua_vm_release(f->vm);
    lm_lua_gen_release(f->gen);
    json_decref(f->req);
}

/* Run `body` (Lua statements that return a value) inside on_request and
 * return req.meta.out as JSON text; rc and the elapsed time are reported. */
static const char *in_sandbox(const char *body, int *rc, double *ms, lm_lua_result_t *res)
{
    static char src[8192];
    static char out[4096];
    fx_t f;
    lm_lua_result_t r;
    double t0;

    snprintf(src, sizeof(src),
             "function on_request(req)\n  req.meta.out = (function()\n%s\nend)()\nend\n", body);
    if (fx_open(&f, src, NULL)) {
        snprintf(out, sizeof(out), "setup failed: %s", f.err);
        fx_close(&f);
        *rc = -99;
        return out;
    }
    t0 = now_ms();
    *rc = lm_lua_on_request(f.call, f.req, res ? res : &r);
    if (ms)
        *ms = now_ms() - t0;
    snprintf(out, sizeof(out), "%s", dump(json_object_get(lm_lua_call_meta(f.call), "out")));
    fx_close(&f);
    return out;
}

/* ---- stages ---- */

static void test_stage_request(void)
{
    fx_t f;
    lm_lua_result_t res;
    int rc;

    T_BEGIN("lua: on_request rewrites model, messages, params, meta");
    rc = fx_open(&f,
                 "function on_request(req)\n"
                 "  req.model = 'qwen-plus'\n"
                 "  req.params.temperature = nil\n"
                 "  req.params.max_tokens = 100\n"
                 "  req.messages[#req.messages + 1] = {role = 'user', content = 'again'}\n"
                 "  req.meta.tag = req.key .. ':' .. lm.request.model\n"
                 "end\n",
                 NULL);
    T_CHECK(rc == 0, "setup: %s", f.err);
    if (rc == 0) {
        T_CHECK(lm_lua_call_stages(f.call) == LM_LUA_BIT(LM_LUA_STAGE_REQUEST), "stages %x",
                lm_lua_call_stages(f.call));
        rc = lm_lua_on_request(f.call, f.req, &res);
        T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, res.message);
        T_CHECK(json_eq_text(f.req, "{\"model\":\"qwen-plus\",\"stream\":false,\"max_tokens\":100,"
                                    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
                                    "{\"role\":\"user\",\"content\":\"again\"}]}"),
                "req %s", dump(f.req));
        T_CHECK(json_eq_text(lm_lua_call_meta(f.call), "{\"tag\":\"team-a-1:qwen-plus\"}"),
                "meta %s", dump(lm_lua_call_meta(f.call)));
    }
    fx_close(&f);

    /* a returned table replaces the request */
    rc = fx_open(&f,
                 "function on_request(req)\n"
                 "  return {model = 'm2', messages = {}, params = {n = 2}}\n"
                 "end\n",
                 NULL);
    T_CHECK(rc == 0, "setup: %s", f.err);
    if (rc == 0) {
        rc = lm_lua_on_request(f.call, f.req, &res);
        T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, res.message);
        T_CHECK(json_eq_text(f.req, "{\"model\":\"m2\",\"messages\":[],\"n\":2}"), "req %s",
                dump(f.req));
    }
    fx_close(&f);

    /* bad shapes are script errors */
    rc = fx_open(&f, "function on_request(req) req.temperature = 1 end\n", NULL);
    if (rc == 0) {
        rc = lm_lua_on_request(f.call, f.req, &res);
        T_CHECK(rc == LM_LUA_ERROR && strstr(res.message, "req.temperature: unknown field"),
                "rc %d %s", rc, res.message);
        T_CHECK(res.status == 500 && strncmp(res.errid, "lua-", 4) == 0 && strlen(res.errid) == 20,
                "status %d errid %s", res.status, res.errid);
    }
    fx_close(&f);
    rc = fx_open(&f, "function on_request(req) req.model = 42 end\n", NULL);
    if (rc == 0) {
        rc = lm_lua_on_request(f.call, f.req, &res);
        T_CHECK(rc == LM_LUA_ERROR && strstr(res.message, "req.model must be a string"), "%s",
                res.message);
    }
    fx_close(&f);
    T_END();

    T_BEGIN("lua: on_request rejects with status, message and code");
    rc = fx_open(&f,
                 "function on_request(req) return lm.reject(403, 'not for you', 'forbidden') end\n",
                 NULL);
    if (rc == 0) {
        rc = lm_lua_on_request(f.call, f.req, &res);
        T_CHECK(rc == LM_LUA_REJECT, "rc %d", rc);
        T_CHECK(res.status == 403, "status %d", res.status);
        T_STREQ(res.message, "not for you");
        T_STREQ(res.code, "forbidden");
        T_STREQ(res.script, "s");
        T_CHECK(json_eq_text(f.req, SAMPLE_REQ), "request changed on reject: %s", dump(f.req));
    }
    fx_close(&f);
    rc = fx_open(&f, "function on_request(req) lm.reject(200, 'x') end\n", NULL);
    if (rc == 0) {
        rc = lm_lua_on_request(f.call, f.req, &res);
        T_CHECK(rc == LM_LUA_ERROR && strstr(res.message, "400..599"), "%d %s", rc, res.message);
    }
    fx_close(&f);
    T_END();
}

static void test_stage_route(void)
{
    fx_t f;
    lm_lua_result_t res;
    json_t *cands, *order = NULL;
    int rc;

    T_BEGIN("lua: on_route orders and filters candidates");
    cands = J("[{\"name\":\"a\",\"latency_ms\":300,\"healthy\":true},"
              "{\"name\":\"b\",\"latency_ms\":100,\"healthy\":true},"
              "{\"name\":\"c\",\"latency_ms\":50,\"healthy\":false}]");
    rc = fx_open(&f,
                 "function on_route(req, cands)\n"
                 "  local out = {}\n"
                 "  for _, c in ipairs(cands) do if c.healthy then out[#out + 1] = c end end\n"
                 "  table.sort(out, function(x, y) return x.latency_ms < y.latency_ms end)\n"
                 "  out[#out + 1] = 'not-a-candidate'\n"
                 "  out[#out + 1] = 'b'\n"
                 "  return out\n"
                 "end\n",
                 NULL);
    T_CHECK(rc == 0, "setup %s", f.err);
    if (rc == 0) {
        rc = lm_lua_on_route(f.call, cands, &order, &res);
        T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, res.message);
        T_CHECK(order && json_eq_text(order, "[\"b\",\"a\"]"), "order %s", dump(order));
        json_decref(order);
    }
    fx_close(&f);
    /* no return: unchanged (NULL) */
    rc = fx_open(&f, "function on_route(req, cands) end\n", NULL);
    if (rc == 0) {
        order = (json_t *)1;
        rc = lm_lua_on_route(f.call, cands, &order, &res);
        T_CHECK(rc == LM_LUA_OK && order == NULL, "rc %d order %p", rc, (void *)order);
    }
    fx_close(&f);
    json_decref(cands);
    T_END();
}

static void test_stage_upstream(void)
{
    fx_t f;
    lm_lua_result_t res;
    json_t *up;
    int rc;

    T_BEGIN("lua: on_upstream_request changes headers and body; header injection refused");
    rc = fx_open(&f,
                 "function on_upstream_request(req, up)\n"
                 "  up.headers['X-Trace'] = lm.sha256(up.body):sub(1, 8)\n"
                 "  up.headers['X-Remove'] = nil\n"
                 "  local b = lm.json.decode(up.body)\n"
                 "  b.user = req.key\n"
                 "  up.body = lm.json.encode(b)\n"
                 "end\n",
                 NULL);
    T_CHECK(rc == 0, "setup %s", f.err);
    if (rc == 0) {
        up = J("{\"channel\":\"c1\",\"model\":\"qwen-max\",\"attempt\":1,\"url\":\"https://x/v1\","
               "\"headers\":{\"X-Remove\":\"1\",\"Content-Type\":\"application/json\"},"
               "\"body\":\"{\\\"model\\\":\\\"qwen-max\\\"}\"}");
        rc = lm_lua_on_upstream_request(f.call, up, &res);
        T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, res.message);
        T_CHECK(json_eq_text(json_object_get(up, "headers"),
                             "{\"Content-Type\":\"application/json\",\"X-Trace\":\"a2f4ad49\"}") ||
                    json_object_get(json_object_get(up, "headers"), "X-Trace"),
                "headers %s", dump(json_object_get(up, "headers")));
        T_CHECK(!json_object_get(json_object_get(up, "headers"), "X-Remove"), "X-Remove kept");
        {
            json_t *b = J(json_string_value(json_object_get(up, "body")));
            T_CHECK(json_eq_text(b, "{\"model\":\"qwen-max\",\"user\":\"team-a-1\"}"), "body %s",
                    dump(b));
            json_decref(b);
        }
        T_CHECK(json_is_string(json_object_get(json_object_get(up, "headers"), "X-Trace")) &&
                    strlen(json_string_value(
                        json_object_get(json_object_get(up, "headers"), "X-Trace"))) == 8,
                "trace %s", dump(json_object_get(up, "headers")));
        json_decref(up);
    }
    fx_close(&f);
    rc = fx_open(
        &f, "function on_upstream_request(req, up) up.headers['X-A'] = 'a\\r\\nHost: evil' end\n",
        NULL);
    if (rc == 0) {
        up = J("{\"headers\":{},\"body\":\"{}\"}");
        rc = lm_lua_on_upstream_request(f.call, up, &res);
        T_CHECK(rc == LM_LUA_ERROR && strstr(res.message, "CR, LF"), "rc %d %s", rc, res.message);
        json_decref(up);
    }
    fx_close(&f);
    T_END();
}

static void test_stage_event(void)
{
    fx_t f;
    lm_lua_result_t res;
    json_t *ev, *out = NULL;
    int rc;

    T_BEGIN("lua: on_event rewrites, drops and adds events");
    rc = fx_open(&f,
                 "function on_event(ev)\n"
                 "  local d = ev.choices[1].delta\n"
                 "  if d.content == 'drop' then return false end\n"
                 "  if d.content == 'two' then\n"
                 "    local extra = lm.json.decode(lm.json.encode(ev))\n"
                 "    extra.choices[1].delta.content = '!'\n"
                 "    return ev, extra\n"
                 "  end\n"
                 "  d.content = string.upper(d.content)\n"
                 "end\n",
                 NULL);
    T_CHECK(rc == 0, "setup %s", f.err);
    if (rc == 0) {
        ev = J("{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"},"
               "\"finish_reason\":null}]}");
        rc = lm_lua_on_event(f.call, ev, &out, &res);
        T_CHECK(rc == LM_LUA_OK && json_array_size(out) == 1, "rc %d %s", rc, dump(out));
        T_CHECK(json_eq_text(out,
                             "[{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                             "\"HELLO\"},\"finish_reason\":null}]}]"),
                "out %s", dump(out));
        json_decref(out);
        json_decref(ev);
        ev = J("{\"choices\":[{\"delta\":{\"content\":\"drop\"}}]}");
        rc = lm_lua_on_event(f.call, ev, &out, &res);
        T_CHECK(rc == LM_LUA_OK && json_array_size(out) == 0, "drop: %d %s", rc, dump(out));
        json_decref(out);
        json_decref(ev);
        ev = J("{\"choices\":[{\"delta\":{\"content\":\"two\"}}]}");
        rc = lm_lua_on_event(f.call, ev, &out, &res);
        T_CHECK(rc == LM_LUA_OK &&
                    json_eq_text(out, "[{\"choices\":[{\"delta\":{\"content\":\"two\"}}]},"
                                      "{\"choices\":[{\"delta\":{\"content\":\"!\"}}]}]"),
                "add: %d %s", rc, dump(out));
        json_decref(out);
        json_decref(ev);
    }
    fx_close(&f);
    T_END();
}

static void test_stage_response_usage_error_log(void)
{
    fx_t f;
    lm_lua_result_t res;
    json_t *body, *usage, *price, *err, *rec;
    int64_t charge;
    int rc;

    T_BEGIN("lua: on_response rewrites the body; lm.response is the body");
    rc = fx_open(
        &f,
        "function on_response(body)\n"
        "  body.choices[1].message.content = body.choices[1].message.content .. ' [checked]'\n"
        "  lm.response.system_fingerprint = 'lm'\n"
        "end\n",
        NULL);
    T_CHECK(rc == 0, "setup %s", f.err);
    if (rc == 0) {
        body = J("{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                 "\"content\":\"ok\"}}],\"usage\":{\"total_tokens\":3}}");
        rc = lm_lua_on_response(f.call, body, &res);
        T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, res.message);
        T_CHECK(json_eq_text(body, "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                                   "\"assistant\",\"content\":\"ok [checked]\"}}],"
                                   "\"usage\":{\"total_tokens\":3},\"system_fingerprint\":\"lm\"}"),
                "body %s", dump(body));
        json_decref(body);
    }
    fx_close(&f);
    T_END();

    T_BEGIN("lua: on_usage returns an integer charge");
    rc = fx_open(&f,
                 "function on_usage(u, p, charge)\n"
                 "  return charge + u.prompt_tokens * p.input // 1000000 + u.completion_tokens * "
                 "p.output // 1000000\n"
                 "end\n",
                 NULL);
    if (rc == 0) {
        usage = J("{\"prompt_tokens\":1000,\"completion_tokens\":2000,\"total_tokens\":3000}");
        price = J("{\"input\":2000000,\"output\":8000000}");
        charge = 7;
        rc = lm_lua_on_usage(f.call, usage, price, &charge, &res);
        T_CHECK(rc == LM_LUA_OK && charge == 7 + 2000 + 16000, "rc %d charge %lld", rc,
                (long long)charge);
        json_decref(usage);
        json_decref(price);
    }
    fx_close(&f);
    rc = fx_open(&f, "function on_usage(u, p, c) return 1.5 end\n", NULL);
    if (rc == 0) {
        usage = J("{}");
        charge = 9;
        rc = lm_lua_on_usage(f.call, usage, usage, &charge, &res);
        T_CHECK(rc == LM_LUA_ERROR && charge == 9 && strstr(res.message, "integer"), "%d %s", rc,
                res.message);
        json_decref(usage);
    }
    fx_close(&f);
    T_END();

    T_BEGIN("lua: on_error maps errors and asks for the next channel");
    rc = fx_open(
        &f,
        "function on_error(err)\n"
        "  if err.code == 'rate_limited' then err.status = 503; err.message = 'busy' return end\n"
        "  if not err.started then lm.retry('gpt-4o-mini') end\n"
        "end\n",
        NULL);
    if (rc == 0) {
        err = J("{\"status\":429,\"code\":\"rate_limited\",\"message\":\"slow "
                "down\",\"channel\":\"c\"}");
        rc = lm_lua_on_error(f.call, err, 0, &res);
        T_CHECK(rc == LM_LUA_OK, "rc %d", rc);
        T_CHECK(json_eq_text(err, "{\"status\":503,\"code\":\"rate_limited\",\"message\":\"busy\","
                                  "\"channel\":\"c\"}"),
                "err %s", dump(err));
        json_decref(err);
        err = J("{\"status\":400,\"code\":\"other\",\"message\":\"x\"}");
        rc = lm_lua_on_error(f.call, err, 0, &res);
        T_CHECK(rc == LM_LUA_RETRY, "rc %d", rc);
        T_STREQ(res.model, "gpt-4o-mini");
        rc = lm_lua_on_error(f.call, err, 1, &res);
        T_CHECK(rc == LM_LUA_OK, "retry after start must be refused: rc %d", rc);
        json_decref(err);
    }
    fx_close(&f);
    T_END();

    T_BEGIN("lua: on_log adds fields only; its errors are logged, not returned");
    rc = fx_open(&f,
                 "function on_log(r)\n"
                 "  r.status = 999\n"
                 "  r.team = lm.request.key\n"
                 "  r.words = #lm.request.messages\n"
                 "end\n",
                 NULL);
    if (rc == 0) {
        rec = J("{\"status\":200,\"model\":\"qwen-max\"}");
        lm_lua_on_log(f.call, rec);
        T_CHECK(
            json_eq_text(
                rec, "{\"status\":200,\"model\":\"qwen-max\",\"team\":\"team-a-1\",\"words\":1}"),
            "record %s", dump(rec));
        json_decref(rec);
    }
    fx_close(&f);
    rc = fx_open(&f, "function on_log(r) error('log boom') end\n", NULL);
    if (rc == 0) {
        lm_lua_stats_t st;
        rec = J("{\"status\":200}");
        lm_lua_on_log(f.call, rec);
        lm_lua_gen_stats(f.gen, 0, &st);
        T_CHECK(st.errors == 1 && st.limits == 0, "errors %llu", (unsigned long long)st.errors);
        T_CHECK(json_eq_text(rec, "{\"status\":200}"), "record %s", dump(rec));
        json_decref(rec);
    }
    fx_close(&f);
    T_END();
}

static void test_ctx_and_chain(void)
{
    lm_lua_script_spec_t specs[2];
    const char *pa, *pb;
    lm_lua_gen_t *gen;
    lm_lua_vm_t *vm;
    lm_lua_call_t *call;
    lm_lua_result_t res;
    json_t *req, *rec;
    char err[512];
    int rc;

    T_BEGIN("lua: scripts chain in declared order; lm.ctx persists per request and per script");
    pa = write_str("a.lua",
                   "function on_request(req) lm.ctx.n = 1; req.model = req.model .. '-a' end\n"
                   "function on_log(r) r.a = lm.ctx.n end\n");
    pb = write_str("b.lua", "function on_request(req) req.model = req.model .. '-b';"
                            " req.meta.saw_a_ctx = lm.ctx.n ~= nil end\n"
                            "function on_log(r) r.b = lm.ctx.n or 'none' end\n");
    memset(specs, 0, sizeof(specs));
    specs[0].name = "a";
    specs[0].path = pa;
    specs[1].name = "b";
    specs[1].path = pb;
    gen = lm_lua_gen_load(specs, 2, NULL, NULL, err, sizeof(err));
    T_CHECK(gen != NULL, "load: %s", err);
    if (gen) {
        T_CHECK(lm_lua_gen_nscripts(gen) == 2 && strcmp(lm_lua_gen_script_name(gen, 1), "b") == 0,
                "names");
        T_CHECK(lm_lua_gen_stages(gen) ==
                    (LM_LUA_BIT(LM_LUA_STAGE_REQUEST) | LM_LUA_BIT(LM_LUA_STAGE_LOG)),
                "stages %x", lm_lua_gen_stages(gen));
        vm = lm_lua_vm_new(gen, err, sizeof(err));
        for (int round = 0; round < 2; round++) {
            req = J(SAMPLE_REQ);
            call = lm_lua_call_begin(vm, "k", NULL, req);
            rc = lm_lua_on_request(call, req, &res);
            T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, res.message);
            T_STREQ(json_string_value(json_object_get(req, "model")), "qwen-max-a-b");
            T_CHECK(json_eq_text(lm_lua_call_meta(call), "{\"saw_a_ctx\":false}"), "meta %s",
                    dump(lm_lua_call_meta(call)));
            rec = J("{}");
            lm_lua_on_log(call, rec);
            T_CHECK(json_eq_text(rec, "{\"a\":1,\"b\":\"none\"}"), "log %s", dump(rec));
            json_decref(rec);
            lm_lua_call_end(call);
            json_decref(req);
        }
        lm_lua_vm_release(vm);
        lm_lua_gen_release(gen);
    }
    T_END();
}

static void test_filters(void)
{
    lm_lua_script_spec_t spec;
    const char *models[] = {"qwen-*"}, *keys[] = {"team-a-*", "admin"};
    lm_lua_gen_t *gen;
    lm_lua_vm_t *vm;
    lm_lua_call_t *call;
    json_t *req;
    char err[256];

    T_BEGIN("lua: a script applies only to its models and keys");
    memset(&spec, 0, sizeof(spec));
    spec.name = "f";
    spec.path = write_file("f.lua", "function on_request(req) req.meta.hit = true end\n",
                           strlen("function on_request(req) req.meta.hit = true end\n"));
    spec.models = models;
    spec.nmodels = 1;
    spec.keys = keys;
    spec.nkeys = 2;
    gen = lm_lua_gen_load(&spec, 1, NULL, NULL, err, sizeof(err));
    T_CHECK(gen != NULL, "%s", err);
    if (gen) {
        struct {
            const char *model, *key;
            unsigned want;
        } cases[] = {
            {"qwen-max", "team-a-7", 1},
            {"qwen-max", "admin", 1},
            {"qwen-max", "team-b", 0},
            {"gpt-4o", "team-a-7", 0},
        };
        vm = lm_lua_vm_new(gen, err, sizeof(err));
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            req = json_pack("{s:s, s:[]}", "model", cases[i].model, "messages");
            call = lm_lua_call_begin(vm, cases[i].key, NULL, req);
            T_CHECK(!!lm_lua_call_stages(call) == cases[i].want, "%s/%s", cases[i].model,
                    cases[i].key);
            lm_lua_call_end(call);
            json_decref(req);
        }
        lm_lua_vm_release(vm);
        lm_lua_gen_release(gen);
    }
    T_END();
}

/* ---- lazy conversion: the same results, less work ---- */

/* on_request with src on SAMPLE_REQ; the messages array the request had is
 * in *msgs (borrowed, to check it was kept rather than rebuilt). */
static int lazy_request(fx_t *f, const char *src, json_t **msgs, lm_lua_result_t *res)
{
    if (fx_open(f, src, NULL))
        return -99;
    *msgs = json_object_get(f->req, "messages");
    return lm_lua_on_request(f->call, f->req, res);
}

static void test_lazy_request(void)
{
    fx_t f;
    lm_lua_result_t res;
    json_t *msgs, *rec;
    int rc;

    T_BEGIN("lua: lazy: a no-op on_request leaves the request as parsed");
    rc = lazy_request(&f, "function on_request(req) end\n", &msgs, &res);
    T_CHECK(rc == LM_LUA_OK, "rc %d %s %s", rc, res.message, f.err);
    if (rc == LM_LUA_OK) {
        T_CHECK(!lm_lua_call_request_changed(f.call), "reported as changed");
        T_CHECK(json_object_get(f.req, "messages") == msgs, "messages rebuilt");
        T_CHECK(json_eq_text(f.req, SAMPLE_REQ), "req %s", dump(f.req));
    }
    fx_close(&f);
    T_END();

    T_BEGIN("lua: lazy: reading everything (raw functions included) changes nothing");
    rc = lazy_request(
        &f,
        "function on_request(req)\n"
        "  local n = 0\n"
        "  for k, v in pairs(req.params) do n = n + 1 end\n"
        "  for i, m in ipairs(req.messages) do n = n + #m.content end\n"
        "  local j = lm.json.decode(lm.json.encode(req.messages))\n"
        "  req.messages[1].content = req.messages[1].content -- the same value back\n"
        "  req.params.temperature = 0.5\n"
        "  lm.ctx.seen = {n = n, next = next(req.params) ~= nil,\n"
        "    rawget = rawget(req.params, 'temperature'), rawlen = rawlen(req.messages),\n"
        "    amt = getmetatable(req.messages), omt = getmetatable(req.params) == nil,\n"
        "    json = j[1].content, type = type(req.params), len = #req.messages,\n"
        "    key = req.key, same = req == lm.request and req.params == lm.request.params}\n"
        "end\n"
        "function on_log(r) r.seen = lm.ctx.seen end\n",
        &msgs, &res);
    T_CHECK(rc == LM_LUA_OK, "rc %d %s %s", rc, res.message, f.err);
    if (rc == LM_LUA_OK) {
        T_CHECK(!lm_lua_call_request_changed(f.call), "reported as changed");
        T_CHECK(json_object_get(f.req, "messages") == msgs, "messages rebuilt");
        T_CHECK(json_eq_text(f.req, SAMPLE_REQ), "req %s", dump(f.req));
        rec = J("{}");
        lm_lua_on_log(f.call, rec);
        T_CHECK(
            json_eq_text(json_object_get(rec, "seen"),
                         "{\"n\":4,\"next\":true,\"rawget\":0.5,\"rawlen\":1,"
                         "\"amt\":\"json.array\",\"omt\":true,\"json\":\"hi\",\"type\":\"table\","
                         "\"len\":1,\"key\":\"team-a-1\",\"same\":true}"),
            "seen %s", dump(rec));
        json_decref(rec);
    }
    fx_close(&f);
    T_END();

    T_BEGIN("lua: lazy: read then write a nested field; meta alone is not a rewrite");
    rc = lazy_request(&f,
                      "function on_request(req)\n"
                      "  local c = req.messages[1].content\n"
                      "  req.messages[1].content = c .. '!'\n"
                      "  req.meta.before = c\n"
                      "end\n",
                      &msgs, &res);
    T_CHECK(rc == LM_LUA_OK, "rc %d %s %s", rc, res.message, f.err);
    if (rc == LM_LUA_OK) {
        T_CHECK(lm_lua_call_request_changed(f.call), "not reported as changed");
        T_CHECK(json_eq_text(f.req, "{\"model\":\"qwen-max\",\"messages\":[{\"role\":\"user\","
                                    "\"content\":\"hi!\"}],\"temperature\":0.5,\"stream\":false}"),
                "req %s", dump(f.req));
        T_CHECK(json_eq_text(lm_lua_call_meta(f.call), "{\"before\":\"hi\"}"), "meta %s",
                dump(lm_lua_call_meta(f.call)));
    }
    fx_close(&f);
    rc = lazy_request(&f, "function on_request(req) req.meta.tag = 'x' end\n", &msgs, &res);
    if (rc == LM_LUA_OK) {
        T_CHECK(!lm_lua_call_request_changed(f.call), "a meta note counted as a rewrite");
        T_CHECK(json_object_get(f.req, "messages") == msgs, "messages rebuilt");
        T_CHECK(json_eq_text(lm_lua_call_meta(f.call), "{\"tag\":\"x\"}"), "meta %s",
                dump(lm_lua_call_meta(f.call)));
    }
    fx_close(&f);
    T_END();

    T_BEGIN("lua: lazy: changing messages or a parameter is a rewrite");
    {
        static const struct {
            const char *src, *want;
        } cases[] = {
            {"function on_request(req) table.insert(req.messages, {role = 'user', content = 'x'}) "
             "end\n",
             "{\"model\":\"qwen-max\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
             "{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":0.5,\"stream\":false}"},
            {"function on_request(req) req.params.temperature = 0.6 end\n",
             "{\"model\":\"qwen-max\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"temperature\":0.6,\"stream\":false}"},
            {"function on_request(req) req.params.n = 1 end\n",
             "{\"model\":\"qwen-max\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"temperature\":0.5,\"stream\":false,\"n\":1}"},
            {"function on_request(req) req.model = 'qwen-plus' end\n",
             "{\"model\":\"qwen-plus\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"temperature\":0.5,\"stream\":false}"},
            {"function on_request(req) req.messages = {} end\n",
             "{\"model\":\"qwen-max\",\"messages\":[],\"temperature\":0.5,\"stream\":false}"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            rc = lazy_request(&f, cases[i].src, &msgs, &res);
            T_CHECK(rc == LM_LUA_OK && lm_lua_call_request_changed(f.call) &&
                        json_eq_text(f.req, cases[i].want),
                    "case %zu: rc %d %s req %s", i, rc, res.message, dump(f.req));
            fx_close(&f);
        }
    }
    T_END();

    T_BEGIN("lua: lazy: a kept table shows the request it was made from");
    {
        lm_lua_script_spec_t specs[2];
        lm_lua_gen_t *gen;
        lm_lua_vm_t *vm;
        lm_lua_call_t *call;
        json_t *req;
        char err[512];
        memset(specs, 0, sizeof(specs));
        specs[0].name = "keep";
        specs[0].path =
            write_str("keep.lua", "local saved\n"
                                  "function on_request(req)\n"
                                  "  if saved then req.meta.prev = saved.model .. ':' "
                                  "..\n"
                                  "    saved.params.temperature .. ':' .. "
                                  "#saved.messages end\n"
                                  "  saved = req\n"
                                  "  lm.ctx.p = req.params\n"
                                  "end\n"
                                  "function on_log(r) r.t = lm.ctx.p.temperature end\n");
        specs[1].name = "change";
        specs[1].path =
            write_str("change.lua", "function on_request(req) req.params.temperature = 0.9 end\n");
        gen = lm_lua_gen_load(specs, 2, NULL, NULL, err, sizeof(err));
        vm = gen ? lm_lua_vm_new(gen, err, sizeof(err)) : NULL;
        T_CHECK(vm != NULL, "%s", err);
        for (int round = 0; vm && round < 2; round++) {
            req = J(round ? "{\"model\":\"m2\",\"messages\":[]}" : SAMPLE_REQ);
            call = lm_lua_call_begin(vm, "k", NULL, req);
            rc = lm_lua_on_request(call, req, &res);
            T_CHECK(rc == LM_LUA_OK, "round %d: rc %d %s", round, rc, res.message);
            T_CHECK(json_eq_text(json_object_get(req, "temperature"), "0.9"), "round %d: %s", round,
                    dump(req));
            rec = J("{}");
            lm_lua_on_log(call, rec);
            /* script keep saw the request before script change rewrote it */
            T_CHECK(json_eq_text(rec, round ? "{}" : "{\"t\":0.5}"), "round %d: log %s", round,
                    dump(rec));
            if (round) /* the first request, kept in an upvalue past its end */
                T_CHECK(json_eq_text(lm_lua_call_meta(call), "{\"prev\":\"qwen-max:0.5:1\"}"),
                        "meta %s", dump(lm_lua_call_meta(call)));
            json_decref(rec);
            lm_lua_call_end(call);
            json_decref(req); /* the kept table must not read freed JSON (ASan) */
        }
        lm_lua_vm_release(vm);
        lm_lua_gen_release(gen);
    }
    T_END();

    T_BEGIN("lua: lazy: kept requests count against the memory cap");
    {
        lm_lua_limits_t lim = {.memory = 2 << 20};
        char err[256], *big = malloc(70000);
        lm_lua_gen_t *g = gen_src_lim("local keep = {}\n"
                                      "function on_request(req) keep[#keep + 1] = req end\n",
                                      NULL, &lim, NULL, err, sizeof(err));
        lm_lua_vm_t *vm = g ? lm_lua_vm_new(g, err, sizeof(err)) : NULL;
        int i, failed = 0;
        memset(big, 'x', 65536);
        big[65536] = 0;
        for (i = 0; vm && i < 200 && !failed; i++) {
            json_t *req = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "m", "messages", "role", "user",
                                    "content", big);
            lm_lua_call_t *c = lm_lua_call_begin(vm, "k", NULL, req);
            rc = lm_lua_on_request(c, req, &res);
            failed = rc == LM_LUA_ERROR && strstr(res.message, "not enough memory") != NULL;
            T_CHECK(rc == LM_LUA_OK || failed, "rc %d %s", rc, res.message);
            lm_lua_call_end(c);
            json_decref(req);
        }
        T_CHECK(failed && i < 60, "no memory error after %d kept requests of 64 KiB", i);
        free(big);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    T_END();
}

/* Collects what lm_lua_on_event_text sends. */
typedef struct sent_s {
    int n;
    const char *first; /* pointer of the first event sent */
    char text[4][512];
} sent_t;

static void collect_sent(void *arg, const char *json, size_t len)
{
    sent_t *s = arg;
    if (s->n == 0)
        s->first = json;
    if (s->n < 4)
        snprintf(s->text[s->n], sizeof(s->text[0]), "%.*s", (int)len, json);
    s->n++;
}

static const char *CHUNK =
    "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\""
    ":0,\"delta\":{\"content\":\"hello\"},\"finish_reason\":null}]}";

static int event_run(const char *src, const char *chunk, sent_t *s, lm_lua_result_t *res)
{
    fx_t f;
    int rc;

    memset(s, 0, sizeof(*s));
    if (fx_open(&f, src, NULL)) {
        fx_close(&f);
        return -99;
    }
    rc = lm_lua_on_event_text(f.call, chunk, strlen(chunk), collect_sent, s, res);
    fx_close(&f);
    return rc;
}

static void test_lazy_event(void)
{
    lm_lua_result_t res;
    sent_t s;
    int rc;

    T_BEGIN("lua: lazy: on_event leaves an event it does not touch as the same bytes");
    rc = event_run("function on_event(ev) end\n", CHUNK, &s, &res);
    T_CHECK(rc == LM_LUA_OK && s.n == 1 && s.first == CHUNK, "rc %d n %d", rc, s.n);
    rc = event_run("function on_event(ev) return true end\n", CHUNK, &s, &res);
    T_CHECK(rc == LM_LUA_OK && s.n == 1 && s.first == CHUNK, "true: rc %d n %d", rc, s.n);
    rc = event_run("local last\n"
                   "function on_event(ev) last = ev return ev, {choices = lm.json.array()} end\n",
                   CHUNK, &s, &res);
    T_CHECK(rc == LM_LUA_OK && s.n == 2 && s.first == CHUNK &&
                strcmp(s.text[1], "{\"choices\":[]}") == 0,
            "extra: rc %d n %d %s", rc, s.n, s.text[1]);
    /* text that is not an object passes without running the script */
    rc = event_run("function on_event(ev) error('ran') end\n", "[1]", &s, &res);
    T_CHECK(rc == LM_LUA_OK && s.n == 1 && strcmp(s.text[0], "[1]") == 0, "array: %d %s", rc,
            res.message);
    T_END();

    T_BEGIN("lua: lazy: on_event that reads, rewrites or drops an event");
    rc = event_run("function on_event(ev) local n = #ev.choices end\n", CHUNK, &s, &res);
    {
        json_t *a = J(CHUNK), *b = rc == LM_LUA_OK && s.n == 1 ? J(s.text[0]) : NULL;
        T_CHECK(b && json_equal(a, b), "read: rc %d %s", rc, s.text[0]);
        json_decref(a);
        json_decref(b);
    }
    rc = event_run("function on_event(ev)\n"
                   "  local d = ev.choices[1].delta\n"
                   "  d.content = d.content:upper()\n"
                   "end\n",
                   CHUNK, &s, &res);
    T_CHECK(rc == LM_LUA_OK && s.n == 1 && s.first != CHUNK && strstr(s.text[0], "\"HELLO\"") &&
                !strstr(s.text[0], "hello"),
            "rewrite: rc %d %s", rc, s.text[0]);
    rc = event_run("function on_event(ev) return false end\n", CHUNK, &s, &res);
    T_CHECK(rc == LM_LUA_OK && s.n == 0, "drop: rc %d n %d", rc, s.n);
    T_END();

    T_BEGIN("lua: lazy: chained on_event scripts see each other's events");
    {
        lm_lua_script_spec_t specs[2];
        lm_lua_gen_t *gen;
        lm_lua_vm_t *vm;
        lm_lua_call_t *call;
        json_t *req = J(SAMPLE_REQ);
        char err[512];
        memset(specs, 0, sizeof(specs));
        specs[0].name = "a";
        specs[0].path = write_str("ea.lua", "function on_event(ev) end\n");
        specs[1].name = "b";
        specs[1].path = write_str("eb.lua", "function on_event(ev)\n"
                                            "  local d = ev.choices[1].delta\n"
                                            "  if d.content == 'hello' then return ev, "
                                            "{choices = {{delta = {content = '!'}}}} end\n"
                                            "end\n");
        gen = lm_lua_gen_load(specs, 2, NULL, NULL, err, sizeof(err));
        vm = gen ? lm_lua_vm_new(gen, err, sizeof(err)) : NULL;
        call = vm ? lm_lua_call_begin(vm, "k", NULL, req) : NULL;
        memset(&s, 0, sizeof(s));
        rc = call ? lm_lua_on_event_text(call, CHUNK, strlen(CHUNK), collect_sent, &s, &res) : -9;
        T_CHECK(rc == LM_LUA_OK && s.n == 2 && strstr(s.text[1], "\"!\""), "rc %d n %d %s %s", rc,
                s.n, err, s.text[1]);
        lm_lua_call_end(call);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(gen);
        json_decref(req);
    }
    T_END();
}

static void test_lazy_other_stages(void)
{
    static const char RESP[] = "{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"ok\"}}]}";
    static const char UP[] =
        "{\"channel\":\"c\",\"model\":\"m\",\"attempt\":1,\"url\":\"http://x\","
        "\"headers\":{\"Content-Type\":\"application/json\"}}";
    static const char BODY[] = "{\"model\":\"m\"}";
    fx_t f;
    lm_lua_result_t res;
    char *out;
    json_t *h, *b, *order;
    int rc;

    T_BEGIN("lua: lazy: on_response, on_upstream_request and on_route report 'unchanged'");
    if (fx_open(&f, "function on_response(body) assert(lm.response == body) end\n", NULL) == 0) {
        out = (char *)1;
        rc = lm_lua_on_response_text(f.call, RESP, strlen(RESP), &out, &res);
        T_CHECK(rc == LM_LUA_OK && out == NULL, "untouched response: rc %d %s", rc, res.message);
    }
    fx_close(&f);
    if (fx_open(&f, "function on_response(body) body.id = 'y' end\n", NULL) == 0) {
        rc = lm_lua_on_response_text(f.call, RESP, strlen(RESP), &out, &res);
        json_t *got = out ? J(out) : NULL;
        T_CHECK(rc == LM_LUA_OK && got && json_eq_text(json_object_get(got, "id"), "\"y\""),
                "changed response: rc %d %s", rc, out ? out : "(null)");
        json_decref(got);
        free(out);
    }
    fx_close(&f);
    if (fx_open(
            &f,
            "function on_upstream_request(req, up)\n"
            "  lm.ctx.n = (lm.ctx.n or 0) + 1\n"
            "  if lm.ctx.n == 2 then local x = lm.sha256(up.body) .. up.headers['Content-Type'] "
            "end\n"
            "  if lm.ctx.n == 3 then up.headers['X-A'] = 'a' end\n"
            "end\n",
            NULL) == 0) {
        for (int i = 1; i <= 3; i++) {
            rc = lm_lua_on_upstream_text(f.call, UP, strlen(UP), BODY, strlen(BODY), &h, &b, &res);
            T_CHECK(rc == LM_LUA_OK && !!h == (i == 3) && !!b == (i == 3), "call %d: rc %d %s", i,
                    rc, res.message);
            if (i == 3 && h && b) {
                T_CHECK(json_eq_text(h, "{\"Content-Type\":\"application/json\",\"X-A\":\"a\"}") &&
                            json_eq_text(b, "\"{\\\"model\\\":\\\"m\\\"}\""),
                        "headers %s body %s", dump(h), dump(b));
            }
            json_decref(h);
            json_decref(b);
        }
    }
    fx_close(&f);
    if (fx_open(&f, "function on_route(req, c) if c[1].name == 'b' then return c end end\n",
                NULL) == 0) {
        rc = lm_lua_on_route_text(f.call, "[{\"name\":\"a\"}]", 14, &order, &res);
        T_CHECK(rc == LM_LUA_OK && order == NULL, "untouched route: rc %d", rc);
        rc = lm_lua_on_route_text(f.call, "[{\"name\":\"b\"},{\"name\":\"a\"}]", 27, &order, &res);
        T_CHECK(rc == LM_LUA_OK && order && json_eq_text(order, "[\"b\",\"a\"]"),
                "returned candidates: rc %d %s", rc, dump(order));
        json_decref(order);
    }
    fx_close(&f);
    T_END();
}

/* ---- what a stage call costs: counted, never timed ---- */

/* Every stage entry point once, as the relay calls them (text forms) and
 * as tests do (Jansson forms). Returns the events sent for one event. */
static int all_stages(lm_lua_call_t *call, json_t *req)
{
    static const char UP[] = "{\"channel\":\"c\",\"model\":\"m\",\"attempt\":1,\"url\":\"u\","
                             "\"headers\":{}}";
    static const char RESP[] = "{\"id\":\"x\",\"choices\":[]}";
    lm_lua_result_t res;
    json_t *order, *h, *b, *out, *j;
    int64_t charge = 7;
    char *text;
    sent_t s;

    memset(&s, 0, sizeof(s));
    lm_lua_on_request(call, req, &res);
    lm_lua_on_route_text(call, "[{\"name\":\"a\"}]", 14, &order, &res);
    json_decref(order);
    lm_lua_on_upstream_text(call, UP, strlen(UP), "{}", 2, &h, &b, &res);
    json_decref(h);
    json_decref(b);
    lm_lua_on_event_text(call, CHUNK, strlen(CHUNK), collect_sent, &s, &res);
    lm_lua_on_response_text(call, RESP, strlen(RESP), &text, &res);
    free(text);
    lm_lua_on_usage_text(call, "{}", 2, "{}", 2, &charge, &res);
    j = J("{\"status\":502,\"type\":\"api_error\",\"code\":\"x\",\"message\":\"m\"}");
    lm_lua_on_error(call, j, 0, &res);
    json_decref(j);
    j = J("{\"id\":\"r\"}");
    lm_lua_on_log(call, j);
    json_decref(j);
    j = J(CHUNK);
    if (lm_lua_on_event(call, j, &out, &res) == LM_LUA_OK)
        json_decref(out);
    json_decref(j);
    return s.n;
}

/* Inputs kept as bytes (lm_lua_input_t): the writer runs only when a
 * script looks, reads only the copy (the caller's bytes are gone after the
 * call), and a kept table still shows them in a later stage. */
static int input_writes; /* how often input_write ran */

static char *input_write(const void *data, size_t n, int part, size_t *len)
{
    char *t = malloc(n + 32);
    input_writes++;
    if (t)
        *len = (size_t)snprintf(t, n + 32, "{\"part\":%d,\"v\":\"%.*s\"}", part, (int)n,
                                (const char *)data);
    return t;
}

static void test_stage_inputs(void)
{
    lm_lua_result_t res;
    fx_t f;
    char data[16];
    json_t *h, *b, *order, *rec;
    int64_t charge = 7;
    int rc;

    T_BEGIN("lua: inputs kept as bytes are written only when looked at, from their copy");
    if (fx_open(&f,
                "function on_upstream_request(req, up)\n"
                "  lm.ctx.n = (lm.ctx.n or 0) + 1\n"
                "  if lm.ctx.n == 1 then lm.ctx.up = up end\n"
                "  if lm.ctx.n == 2 then up.headers = {['X-B'] = up.v} end\n"
                "end\n"
                "function on_usage(u, p, c) lm.ctx.u = u; lm.ctx.p = p; return c + 1 end\n"
                "function on_route(req, c) lm.ctx.c = c end\n"
                "function on_log(r) r.up = lm.ctx.up.v .. '/' .. lm.ctx.up.body\n"
                "  r.u = lm.ctx.u.v .. lm.ctx.u.part .. lm.ctx.p.v .. lm.ctx.p.part\n"
                "  r.c = lm.ctx.c.v end\n",
                NULL) == 0) {
        lm_lua_input_t in = {data, 0, input_write, "BODY", 4};
        input_writes = 0;
        snprintf(data, sizeof(data), "first");
        in.n = strlen(data);
        rc = lm_lua_on_upstream_input(f.call, &in, &h, &b, &res);
        T_CHECK(rc == LM_LUA_OK && !h && !b && input_writes == 0, "untouched: rc %d writes %d %s",
                rc, input_writes, res.message);
        snprintf(data, sizeof(data), "second");
        in.n = strlen(data);
        rc = lm_lua_on_upstream_input(f.call, &in, &h, &b, &res);
        T_CHECK(rc == LM_LUA_OK && h && json_eq_text(h, "{\"X-B\":\"second\"}") &&
                    json_eq_text(b, "\"BODY\""),
                "changed: rc %d headers %s body %s", rc, dump(h), dump(b));
        json_decref(h);
        json_decref(b);
        snprintf(data, sizeof(data), "usage");
        in.n = strlen(data);
        in.raw = NULL;
        rc = lm_lua_on_usage_input(f.call, &in, &charge, &res);
        T_CHECK(rc == LM_LUA_OK && charge == 8, "usage: rc %d charge %lld", rc, (long long)charge);
        snprintf(data, sizeof(data), "route");
        in.n = strlen(data);
        rc = lm_lua_on_route_input(f.call, &in, &order, &res);
        T_CHECK(rc == LM_LUA_OK && order == NULL, "route: rc %d", rc);
        memset(data, 'X', sizeof(data)); /* the caller's bytes are gone */
        input_writes = 0;
        rec = J("{}");
        lm_lua_on_log(f.call, rec);
        T_CHECK(
            json_eq_text(rec, "{\"up\":\"first/BODY\",\"u\":\"usage0usage1\",\"c\":\"route\"}") &&
                input_writes == 4,
            "kept inputs: %s (writes %d)", dump(rec), input_writes);
        json_decref(rec);
    }
    fx_close(&f);
    T_END();
}

static void test_stage_cost(void)
{
    static const struct {
        const char *src;
        unsigned stages; /* what the call says scripts define */
        uint64_t runs;   /* stage functions entered by all_stages() */
    } cases[] = {
        {"local unused = 1\n", 0, 0},
        {"function on_request(req) end\n", LM_LUA_BIT(LM_LUA_STAGE_REQUEST), 1},
        {"function on_event(ev) end\n", LM_LUA_BIT(LM_LUA_STAGE_EVENT), 2},
        {"function on_route(req, c) end\nfunction on_log(r) end\n",
         LM_LUA_BIT(LM_LUA_STAGE_ROUTE) | LM_LUA_BIT(LM_LUA_STAGE_LOG), 2},
        /* noop.lua: every stage once, on_event twice (text and Jansson forms) */
        {NULL, (1u << LM_LUA_NSTAGES) - 2, 9},
    };
    fx_t f;

    T_BEGIN("lua: a stage no applicable script defines is never entered (calls counted)");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *src = cases[i].src;
        char noop[2048];
        FILE *fp = src ? NULL : fopen("scripts/noop.lua", "r");
        if (fp) {
            noop[fread(noop, 1, sizeof(noop) - 1, fp)] = 0;
            fclose(fp);
            src = noop;
        }
        if (src == NULL || fx_open(&f, src, NULL)) {
            T_CHECK(0, "case %zu: %s", i, src ? f.err : "scripts/noop.lua unreadable");
            fx_close(&f);
            continue;
        }
        int sent = all_stages(f.call, f.req);
        T_CHECK(lm_lua_call_stages(f.call) == cases[i].stages, "case %zu: stages %x", i,
                lm_lua_call_stages(f.call));
        T_CHECK(lm_lua_vm_runs(f.vm) == cases[i].runs && sent == 1,
                "case %zu: %llu stage functions entered, %d events sent", i,
                (unsigned long long)lm_lua_vm_runs(f.vm), sent);
        fx_close(&f);
    }
    { /* a script that applies to other keys only: nothing entered either */
        const char *keys[] = {"team-*"};
        lm_lua_script_spec_t spec = {.name = "s",
                                     .path = write_str("s.lua", "function on_request(req) end\n"),
                                     .keys = keys,
                                     .nkeys = 1};
        memset(&f, 0, sizeof(f));
        f.gen = lm_lua_gen_load(&spec, 1, NULL, NULL, f.err, sizeof(f.err));
        f.vm = f.gen ? lm_lua_vm_new(f.gen, f.err, sizeof(f.err)) : NULL;
        f.req = J(SAMPLE_REQ);
        f.call = f.vm ? lm_lua_call_begin(f.vm, "ops-1", NULL, f.req) : NULL;
        if (f.call)
            all_stages(f.call, f.req);
        T_CHECK(f.call && lm_lua_call_stages(f.call) == 0 && lm_lua_vm_runs(f.vm) == 0,
                "filtered out: %s %llu entered", f.err,
                f.vm ? (unsigned long long)lm_lua_vm_runs(f.vm) : 0ull);
        fx_close(&f);
    }
    T_END();

    T_BEGIN("lua: lm.request and lm.response are the running call's arguments");
    if (fx_open(&f,
                "local kept\n"
                "function on_request(req) assert(lm.request == req); kept = req end\n"
                "function on_route(req, c) assert(lm.request == req and req == kept) end\n"
                "function on_response(b) assert(lm.response == b); lm.ctx.b = b end\n"
                "function on_usage(u, p, c)\n"
                "  assert(lm.request == kept and lm.request.model == 'qwen-max')\n"
                "  assert(lm.ctx.b.id == 'x'); return c + 1\n"
                "end\n",
                NULL) == 0) {
        lm_lua_result_t res;
        json_t *order;
        char *text;
        int64_t charge = 1;
        int rc[4];
        rc[0] = lm_lua_on_request(f.call, f.req, &res);
        rc[1] = lm_lua_on_route_text(f.call, "[{\"name\":\"a\"}]", 14, &order, &res);
        rc[2] = lm_lua_on_response_text(f.call, "{\"id\":\"x\"}", 10, &text, &res);
        rc[3] = lm_lua_on_usage_text(f.call, "{}", 2, "{}", 2, &charge, &res);
        T_CHECK(!rc[0] && !rc[1] && !rc[2] && !rc[3] && charge == 2, "rc %d %d %d %d: %s", rc[0],
                rc[1], rc[2], rc[3], res.message);
        json_decref(order);
        free(text);
    }
    fx_close(&f);
    T_END();

    T_BEGIN("lua: 3000 requests through every no-op stage leave memory flat");
    if (fx_open(&f, "function on_request(req) end\n", NULL) == 0) {
        lm_lua_call_end(f.call);
        f.call = NULL;
        lm_lua_gen_release(f.gen);
        f.gen = gen_file("scripts/noop.lua", NULL, NULL, f.err, sizeof(f.err));
        lm_lua_vm_release(f.vm);
        f.vm = f.gen ? lm_lua_vm_new(f.gen, f.err, sizeof(f.err)) : NULL;
    }
    if (f.vm) {
        size_t base = lm_lua_vm_collect(f.vm), after;
        for (int i = 0; i < 3000; i++) {
            json_t *req = J(SAMPLE_REQ);
            lm_lua_call_t *c = lm_lua_call_begin(f.vm, "k", NULL, req);
            all_stages(c, req);
            lm_lua_call_end(c);
            json_decref(req);
        }
        after = lm_lua_vm_collect(f.vm);
        T_CHECK(after <= base + 16384 && lm_lua_vm_runs(f.vm) == 3000 * 9,
                "memory %zu -> %zu bytes, %llu entered", base, after,
                (unsigned long long)lm_lua_vm_runs(f.vm));
    } else {
        T_CHECK(0, "%s", f.err);
    }
    fx_close(&f);
    T_END();
}

/* ---- the lm API ---- */

static void test_api(void)
{
    int rc;
    const char *out;

    T_BEGIN("lua: lm.json round trip keeps null, arrays, objects and integers");
    out = in_sandbox("local s = '{\"a\":[1,2.5,null,{}],\"b\":{},\"c\":[],\"d\":\"\\\\u4e2d\\\\n\","
                     "\"e\":9007199254740993,\"f\":-0.0,\"g\":true}'\n"
                     "local v = assert(lm.json.decode(s))\n"
                     "assert(v.a[3] == lm.null and lm.json.null == lm.null)\n"
                     "assert(math.type(v.e) == 'integer' and v.e == 9007199254740993)\n"
                     "assert(v.d == '\\u{4e2d}\\n')\n"
                     "local back = lm.json.decode(lm.json.encode(v))\n"
                     "local bad, msg = lm.json.decode('{\"a\":1,}')\n"
                     "assert(bad == nil and msg:find('byte'))\n"
                     "assert(lm.json.decode('[1] x') == nil)\n"
                     "assert(lm.json.encode(lm.json.array()) == '[]')\n"
                     "assert(lm.json.encode({}) == '{}')\n"
                     "assert(not pcall(lm.json.encode, {1, 2, x = 3}))\n"
                     "assert(not pcall(lm.json.encode, '\\xff'))\n"
                     "assert(not pcall(lm.json.encode, 0/0))\n"
                     "return back",
                     &rc, NULL, NULL);
    T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, out);
    {
        json_t *got = J(out);
        T_CHECK(json_eq_text(got,
                             "{\"a\":[1,2.5,null,{}],\"b\":{},\"c\":[],\"d\":\"\xe4\xb8\xad\\n\","
                             "\"e\":9007199254740993,\"f\":-0.0,\"g\":true}"),
                "got %s", out);
        json_decref(got);
    }
    T_END();

    T_BEGIN("lua: JSON crosses the C boundary unchanged (null, [], {}, integers, reals)");
    {
        fx_t f;
        lm_lua_result_t res;
        const char *body =
            "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":null}],"
            "\"stop\":[],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
            "\"parameters\":{\"type\":\"object\",\"properties\":{}}}}],"
            "\"seed\":-9223372036854775807,\"top_p\":1.0,\"n\":1,\"logit_bias\":{},"
            "\"user\":\"\xe7\x94\xa8\xe6\x88\xb7\"}";
        rc = fx_open(&f, "function on_request(req) end\n", NULL);
        if (rc == 0) {
            json_decref(f.req);
            f.req = J(body);
            rc = lm_lua_on_request(f.call, f.req, &res);
            T_CHECK(rc == LM_LUA_OK && json_eq_text(f.req, body), "rc %d %s", rc, dump(f.req));
            T_CHECK(json_is_real(json_object_get(f.req, "top_p")) &&
                        json_is_integer(json_object_get(f.req, "n")),
                    "number kinds changed");
        }
        fx_close(&f);
    }
    T_END();

    T_BEGIN("lua: lm.sha256, lm.hmac_sha256, lm.base64, time");
    out =
        in_sandbox("local r = {}\n"
                   "r.sha = lm.sha256('abc')\n"
                   "r.hmac = lm.hmac_sha256('key', 'The quick brown fox jumps over the lazy dog')\n"
                   "r.rawlen = #lm.sha256('abc', true)\n"
                   "r.b64 = lm.base64.encode('hello?>')\n"
                   "r.dec = lm.base64.decode('aGVsbG8_Pg')\n"
                   "r.bad = lm.base64.decode('a$b=') == nil\n"
                   "r.t = math.abs(lm.time() - os.time()) < 5\n"
                   "r.ms = math.type(lm.now_ms()) == 'integer' and lm.now_ms() > 1.6e12\n"
                   "return r",
                   &rc, NULL, NULL);
    T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, out);
    {
        json_t *got = J(out);
        T_CHECK(json_eq_text(
                    got,
                    "{\"sha\":\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\","
                    "\"hmac\":\"f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8\","
                    "\"rawlen\":32,\"b64\":\"aGVsbG8/Pg==\",\"dec\":\"hello?>\",\"bad\":true,"
                    "\"t\":true,\"ms\":true}"),
                "got %s", out);
        json_decref(got);
    }
    T_END();

    T_BEGIN("lua: lm.* refuses stages it is not allowed in");
    {
        fx_t f;
        lm_lua_result_t res;
        json_t *ev, *evs = NULL;
        char err[512];
        lm_lua_gen_t *g;
        rc = fx_open(&f, "function on_event(ev) lm.reject(400, 'no') end\n", NULL);
        if (rc == 0) {
            ev = J("{\"choices\":[]}");
            rc = lm_lua_on_event(f.call, ev, &evs, &res);
            T_CHECK(rc == LM_LUA_ERROR &&
                        strstr(res.message, "lm.reject is not allowed in stage event"),
                    "%d %s", rc, res.message);
            T_CHECK(evs == NULL, "events on error");
            json_decref(ev);
        }
        fx_close(&f);
        rc = fx_open(&f, "function on_request(req) lm.retry() end\n", NULL);
        if (rc == 0) {
            rc = lm_lua_on_request(f.call, f.req, &res);
            T_CHECK(rc == LM_LUA_ERROR &&
                        strstr(res.message, "lm.retry is not allowed in stage request"),
                    "%s", res.message);
        }
        fx_close(&f);
        rc = fx_open(&f, "function on_request(req) local x = lm.response end\n", NULL);
        if (rc == 0) {
            rc = lm_lua_on_request(f.call, f.req, &res);
            T_CHECK(rc == LM_LUA_ERROR &&
                        strstr(res.message, "lm.response is not allowed in stage request"),
                    "%s", res.message);
        }
        fx_close(&f);
        g = gen_src("local r = lm.request\n", err, sizeof(err));
        T_CHECK(!g && strstr(err, "s.lua:1:") &&
                    strstr(err, "lm.request is not allowed in stage load"),
                "err %s", err);
        lm_lua_gen_release(g);
        g = gen_src("local c = lm.ctx\n", err, sizeof(err));
        T_CHECK(!g && strstr(err, "lm.ctx is not allowed in stage load"), "err %s", err);
        lm_lua_gen_release(g);
    }
    T_END();
}

/* ---- patterns: same results as the stock string library ---- */

static const char *PATTERN_CASES =
    "local out = {}\n"
    "local function add(...) local t = table.pack(...) for i = 1, t.n do out[#out + 1] = "
    "tostring(t[i]) end out[#out + 1] = '|' end\n"
    "add(string.find('hello world', 'o w'))\n"
    "add(string.find('hello world', 'l+'))\n"
    "add(string.find('hello', 'l', 1, true))\n"
    "add(string.find('hello', '', 10))\n"
    "add(string.find('hello', '', 6))\n"
    "add(string.find('a+b', '+', 1, true))\n"
    "add(string.find('a.b', '%.'))\n"
    "add(string.find('abc', 'b', -1))\n"
    "add(string.find('abc', 'b', -10))\n"
    "add(string.find('aaa', 'a-b'))\n"
    "add(string.find('aaab', 'a-b'))\n"
    "add(string.find('a\\0b', '\\0', 1, true))\n"
    "add(string.find('a\\0b', '%z'))\n"
    "add(string.match('key = value', '(%w+)%s*=%s*(%w+)'))\n"
    "add(string.match('  trim  ', '^%s*(.-)%s*$'))\n"
    "add(string.match('hello', '()ll()'))\n"
    "add(string.match('THE (quick) fox', '%((%a+)%)'))\n"
    "add(string.match('f(a(b)c)d', '%b()'))\n"
    "add(string.match('THE (quick) fox', '%f[%a]%a+', 5))\n"
    "add(string.match('2024-01-15', '(%d+)-(%d+)-(%d+)'))\n"
    "add(string.match('[[x]]', '%[(%b[])%]'))\n"
    "add(string.match('abc]', '[]a]+'))\n"
    "add(string.match('a-b', '[a%-]+'))\n"
    "add(string.match('xyz', '[^x]+'))\n"
    "add(string.match('abcabc', '(a)(b)c%1%2'))\n"
    "add(string.match('hello', '.-(l+)(.*)'))\n"
    "add(string.match('  x', '^ +()'))\n"
    "add(('test'):match('^(t)(e)'))\n"
    "add(string.match('x=1', '()=()'))\n"
    "add(string.match('hello world from lua', '(%a+) (%a+)$'))\n"
    "add(string.match('a1B2c3', '%u%d'))\n"
    "add(string.match('tab\\there', '%c'))\n"
    "add(string.match('0x1F', '0x(%x+)'))\n"
    "add(string.match('a,b;c', '[%p]'))\n"
    "add(string.match('abc', 'a?b?c?d?'))\n"
    "add(string.match('aXb', 'a[A-Z]b'))\n"
    "add(string.match('a$b', 'a$b'))\n"
    "add(string.match('ab', 'b$'))\n"
    "add(string.match('', '^$'))\n"
    "add(string.match('abc', '^(a)(b)$'))\n"
    "add(string.gsub('hello world', 'o', '0'))\n"
    "add(string.gsub('hello world', '(%w+)', '<%1>'))\n"
    "add(string.gsub('hello world', '%w+', '%0 %0', 1))\n"
    "add(string.gsub('abc', '', '-'))\n"
    "add(string.gsub('hello', 'l*', 'X'))\n"
    "add(string.gsub('$name is $age', '%$(%w+)', {name = 'bob', age = 42}))\n"
    "add(string.gsub('abc', '%w', function(c) return c:upper() .. '.' end))\n"
    "add(string.gsub('abc', '(a)(b)(c)', '%3%2%1'))\n"
    "add(string.gsub('x = 1, y = 2', '(%w+) = (%w+)', '%2 = %1'))\n"
    "add(string.gsub('hello', '(l)(l)', '%%'))\n"
    "add(string.gsub('abc', '.', {a = 1, b = false}))\n"
    "add(string.gsub('hello world', '%f[%w]%w+', string.upper))\n"
    "add(string.gsub('THE (quick) fox', '%f[%a]%u+%f[%A]', 'X'))\n"
    "add(string.gsub('abc', '^a', 'X'))\n"
    "add(string.gsub('aaa', '^a', 'X'))\n"
    "add(string.gsub('a b c', ' ', '', 1))\n"
    "add(string.gsub('abc', '()', '%1'))\n"
    "add(string.gsub('abc', 'b', 5))\n"
    "for k, v in string.gmatch('a=1, b=2, c=3', '(%w+)=(%w+)') do add(k, v) end\n"
    "for w in string.gmatch('one two  three', '%a+') do add(w) end\n"
    "for w in string.gmatch('abc', '') do add(w) end\n"
    "for p in string.gmatch('abc', '()') do add(p) end\n"
    "for w in string.gmatch('a^b', '^') do add(w) end\n"
    "add(string.gmatch('abcd', '.', 3)())\n"
    "for _, p in ipairs({'%', '[a', '(a', 'a)', '%b', '%bx', '%f', '%1', '(()', '[%'}) do\n"
    "  add(pcall(string.match, 'a', p))\n"
    "end\n"
    "add(pcall(string.gsub, 'a', 'a', '%2'))\n"
    "add(pcall(string.gsub, 'a', 'a', '%x'))\n"
    "add(pcall(string.gsub, 'a', '(a)', {a = {}}))\n"
    "add(pcall(string.gsub, 'a', 'a', true))\n"
    "add(pcall(string.rep))\n"
    "return table.concat(out, ',')\n";

static void test_patterns(void)
{
    lua_State *L;
    const char *want = NULL, *got;
    char body[8192];
    int rc;

    T_BEGIN("lua: sandbox pattern functions give the stock string library's results");
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, PATTERN_CASES) != LUA_OK)
        T_CHECK(0, "stock run failed: %s", lua_tostring(L, -1));
    else
        want = lua_tostring(L, -1);
    snprintf(body, sizeof(body), "%s", PATTERN_CASES);
    got = in_sandbox(body, &rc, NULL, NULL);
    T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, got);
    if (want && rc == LM_LUA_OK) {
        json_t *g = J(got);
        T_CHECK(strcmp(json_string_value(g), want) == 0, "\n  stock:   %s\n  sandbox: %s", want,
                json_string_value(g));
        json_decref(g);
    }
    lua_close(L);
    T_END();
}

/* ---- PL-7 sandbox ---- */

typedef struct dumpbuf_s {
    char *p;
    size_t n;
} dumpbuf_t;

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud)
{
    dumpbuf_t *b = ud;
    char *q = realloc(b->p, b->n + n);
    (void)L;
    if (!q)
        return 1;
    memcpy(q + b->n, p, n);
    b->p = q;
    b->n += n;
    return 0;
}

static void test_sandbox(void)
{
    int rc;
    const char *out;
    char err[512];

    T_BEGIN("lua: PL-7 every sandbox escape is absent or refused");
    out = in_sandbox(
        "local r = {}\n"
        "r.os_execute = os.execute == nil and not pcall(function() return os.execute('true') end)\n"
        "r.os_getenv = os.getenv == nil and os.exit == nil and os.remove == nil\n"
        "r.io = io == nil\n"
        "r.require = require == nil\n"
        "r.package = package == nil\n"
        "r.debug = debug == nil\n"
        "r.dofile = dofile == nil\n"
        "r.loadfile = loadfile == nil\n"
        "r.collectgarbage = collectgarbage == nil\n"
        "r.string_dump = string.dump == nil and ('').dump == nil\n"
        "local f, e = load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n', 'x', 'b')\n"
        "r.bytecode = f == nil and e:find('binary') ~= nil\n"
        "local ok, e2 = pcall(setmetatable, {}, {__gc = function() end})\n"
        "r.gc = not ok and e2:find('__gc') ~= nil\n"
        "r.text_load = load('return 1 + 1')() == 2\n"
        "r.load_env = load('return string')() == string and load('return x', 'c', 't', {x = 5})() "
        "== 5\n"
        "r.load_fn = not pcall(load, function() return nil end)\n"
        "r.strmeta = getmetatable('') == false\n"
        "r.globals_gone = rawget(_G, 'string') == nil and _G.string == string\n"
        "r.no_warn_print = warn == nil and type(print) == 'function'\n"
        "return r",
        &rc, NULL, NULL);
    T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, out);
    {
        json_t *got = J(out);
        const char *k;
        json_t *v;
        json_object_foreach (got, k, v)
            T_CHECK(json_is_true(v), "%s not refused: %s", k, out);
        T_CHECK(json_object_size(got) == 18, "%zu checks: %s", json_object_size(got), out);
        json_decref(got);
    }
    /* a bytecode script file is refused at load */
    {
        lua_State *L = luaL_newstate();
        lm_lua_script_spec_t spec;
        lm_lua_gen_t *g;
        dumpbuf_t db = {0};
        luaL_loadstring(L, "function on_request(req) end");
        lua_dump(L, dump_writer, &db, 0);
        const char *bc = db.p;
        size_t n = db.n;
        memset(&spec, 0, sizeof(spec));
        spec.name = "bc";
        spec.path = write_file("bc.lua", bc, n);
        g = lm_lua_gen_load(&spec, 1, NULL, NULL, err, sizeof(err));
        T_CHECK(!g && strstr(err, "binary"), "bytecode file loaded? %s", err);
        lm_lua_gen_release(g);
        lua_close(L);
        free(db.p);
    }
    T_END();
}

/* ---- PL-5 CPU limits ---- */

static void test_cpu_limits(void)
{
    static const struct {
        const char *name, *body;
    } cases[] = {
        {"plain loop", "while true do end"},
        {"loop in pcall", "pcall(function() while true do end end) return 'swallowed'"},
        {"pcall in a loop", "while true do pcall(function() while true do end end) end"},
        {"pcall of error in a loop", "while true do pcall(error, 'x') end"},
        {"xpcall with a looping handler", "xpcall(function() while true do end end, function(m) "
                                          "while true do end end) return 'swallowed'"},
        {"coroutine", "local co = coroutine.create(function() while true do end end)\n"
                      "local ok = coroutine.resume(co) return 'swallowed'"},
        {"coroutine.wrap in pcall",
         "pcall(coroutine.wrap(function() while true do end end)) return 'swallowed'"},
        {"nested coroutines", "local co = coroutine.wrap(function()\n"
                              "  local c2 = coroutine.create(function() while true do end end)\n"
                              "  coroutine.resume(c2) while true do end end)\n"
                              "pcall(co) return 'swallowed'"},
        {"yield loop",
         "local co = coroutine.wrap(function() while true do coroutine.yield() end end)\n"
         "while true do co() end"},
        {"__close loops",
         "do local x <close> = setmetatable({}, {__close = function() while true do end end})\n"
         "error('x') end"},
        {"recursion", "local function f(n) return f(n + 1) end return f(1)"},
        {"gsub callback loop", "string.gsub('abc', '.', function() while true do end end)"},
        {"table.sort comparator",
         "local t = {3, 2, 1} pcall(table.sort, t, function(a, b) while true do end end)"},
    };

    T_BEGIN("lua: PL-5 infinite loops stop within the budget; pcall/coroutines cannot swallow it");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;
        double ms;
        lm_lua_result_t res;
        const char *out = in_sandbox(cases[i].body, &rc, &ms, &res);
        T_CHECK(rc == LM_LUA_ERROR, "%s: rc %d out %s", cases[i].name, rc, out);
        T_CHECK(strstr(res.message, "budget") != NULL, "%s: %s", cases[i].name, res.message);
        /* The budget message is the proof; the time bound only catches a
         * hang, far above the ~1 ms a stop takes (never a speed test). */
        T_CHECK(ms < 5000, "%s: took %.1f ms", cases[i].name, ms);
    }
    T_END();

    T_BEGIN("lua: instruction budget is configurable and counted separately from the deadline");
    {
        lm_lua_limits_t lim = {.instructions = 50000, .deadline_ms = 5000};
        char err[256];
        lm_lua_gen_t *g = gen_src_lim("function on_request(req) for i = 1, 1e9 do end end\n", NULL,
                                      &lim, NULL, err, sizeof(err));
        lm_lua_vm_t *vm = g ? lm_lua_vm_new(g, err, sizeof(err)) : NULL;
        json_t *req = J(SAMPLE_REQ);
        lm_lua_call_t *c = vm ? lm_lua_call_begin(vm, "k", NULL, req) : NULL;
        lm_lua_result_t res;
        lm_lua_stats_t st;
        double t0 = now_ms();
        int rc = c ? lm_lua_on_request(c, req, &res) : -9;
        T_CHECK(rc == LM_LUA_ERROR && strstr(res.message, "instruction budget (50000)"), "%d %s",
                rc, res.message);
        T_CHECK(now_ms() - t0 < 100, "slow");
        lm_lua_gen_stats(g, 0, &st);
        T_CHECK(st.errors == 1 && st.limits == 1, "stats %llu %llu", (unsigned long long)st.errors,
                (unsigned long long)st.limits);
        lm_lua_call_end(c);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
        json_decref(req);
    }
    T_END();
}

/* ---- PL-6 memory and C-function bombs ---- */

static void test_bombs(void)
{
    static const struct {
        const char *name, *body;
    } cases[] = {
        {"rep 2^31", "return #('x'):rep(2^31)"},
        {"rep 2^31 with sep", "return #string.rep('x', 2^30, 'yy')"},
        {"doubling concat", "local s = 'x' while true do s = s .. s end"},
        {"doubling in pcall",
         "local s = 'x' while true do local ok = pcall(function() s = s .. s end) end"},
        {"huge table.concat", "local t = {} local s = ('x'):rep(1e6) for i = 1, 64 do t[i] = s end "
                              "return #table.concat(t)"},
        {"table growth", "local t = {} for i = 1, 1e8 do t[i] = i end"},
        {"pathological find", "return string.find(('a'):rep(5000), ('a*'):rep(20) .. 'b')"},
        {"ironbox-style match",
         "return string.match(('a'):rep(40), '(.-)(.-)(.-)(.-)(.-)(.-)(.-)(.-)(.-)(.-)b')"},
        {"pathological gsub", "return string.gsub(('a'):rep(3000), ('a-'):rep(12) .. 'b', 'x')"},
        {"pathological gmatch",
         "for x in string.gmatch(('a'):rep(3000), ('.-'):rep(9) .. 'b') do end"},
        {"method-call find", "return (('a'):rep(5000)):find(('a*'):rep(20) .. 'b')"},
        {"find in pcall loop",
         "while true do pcall(string.find, ('a'):rep(3000), ('a*'):rep(20) .. 'b') end"},
        {"json decode bomb", "local s = ('[1,'):rep(3e6) return lm.json.decode(s)"},
        {"format bomb",
         "local s = ('x'):rep(1e6) while true do s = string.format('%s%s', s, s) end"},
    };

    T_BEGIN("lua: PL-6 memory and pattern bombs stop on a limit, not by running out");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;
        double ms;
        lm_lua_result_t res;
        const char *out = in_sandbox(cases[i].body, &rc, &ms, &res);
        T_CHECK(rc == LM_LUA_ERROR, "%s: rc %d out %.200s", cases[i].name, rc, out);
        T_CHECK(strstr(res.message, "memory") || strstr(res.message, "budget") ||
                    strstr(res.message, "too"),
                "%s: stopped by %s", cases[i].name, res.message);
        /* Only a hang detector, 50x above the usual time. */
        T_CHECK(ms < 5000, "%s: took %.1f ms", cases[i].name, ms);
    }
    T_END();

    T_BEGIN("lua: a bomb caught by pcall leaves the script running and the state usable");
    {
        int rc;
        const char *out = in_sandbox("local ok, e = pcall(string.rep, 'x', 2^30)\n"
                                     "return {ok = ok, e = tostring(e), after = ('y'):rep(3)}",
                                     &rc, NULL, NULL);
        json_t *got = J(rc == LM_LUA_OK ? out : "{}");
        T_CHECK(rc == LM_LUA_OK && json_is_false(json_object_get(got, "ok")) &&
                    strstr(json_string_value(json_object_get(got, "e")), "memory") &&
                    json_eq_text(json_object_get(got, "after"), "\"yyy\""),
                "%d %s", rc, out);
        json_decref(got);
    }
    T_END();
}

/* ---- PL-4 errors ---- */

static void test_errors(void)
{
    static const struct {
        const char *name, *body, *want;
    } cases[] = {
        {"runtime error", "local t = nil return t.x", "attempt to index"},
        {"error with a table", "error({code = 1})", "error object is a table value"},
        {"__tostring that errors",
         "error(setmetatable({}, {__tostring = function(e) error(e) end}))",
         "error object is a table"},
        {"__tostring that loops",
         "error(setmetatable({}, {__tostring = function(e) while true do end end}))",
         "error object is a table"},
        {"recursive tostring in the script",
         "local e = setmetatable({}, {__tostring = function(e) return tostring(e) end})\n"
         "local ok = pcall(tostring, e) error('after ' .. tostring(ok))",
         "after false"},
        {"error in xpcall handler",
         "local ok, m = xpcall(function() error('a') end, function(m) error(m) end) error('got ' "
         ".. tostring(ok))",
         "got false"},
        {"error(nil)", "error()", "error object is a nil value"},
    };

    T_BEGIN("lua: PL-4 script errors, including recursive __tostring errors, give an error id");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;
        lm_lua_result_t res;
        double ms;
        in_sandbox(cases[i].body, &rc, &ms, &res);
        T_CHECK(rc == LM_LUA_ERROR, "%s: rc %d", cases[i].name, rc);
        T_CHECK(strstr(res.message, cases[i].want) != NULL, "%s: %s", cases[i].name, res.message);
        T_CHECK(res.status == 500 && strncmp(res.errid, "lua-", 4) == 0, "%s: %d %s", cases[i].name,
                res.status, res.errid);
        T_CHECK(ms < 100, "%s: %.1f ms", cases[i].name, ms);
    }
    T_END();
}

static long rss_kb(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void test_error_memory(void)
{
    lm_lua_limits_t lim = {.instructions = 20000, .deadline_ms = 50, .memory = 2 << 20};
    char err[256];
    lm_lua_gen_t *g;
    lm_lua_vm_t *vm;
    json_t *req;
    size_t base_mem = 0, end_mem = 0;
    long base_rss = 0, end_rss = 0;
    int bad = 0;

    T_BEGIN("lua: PL-4 10k errors (and limit hits) leave memory flat");
    g = gen_src_lim(
        "local n = 0\n"
        "function on_request(req)\n"
        "  n = n + 1\n"
        "  lm.ctx.big = ('z'):rep(1000)\n"
        "  local k = n % 4\n"
        "  if k == 0 then error('plain ' .. n) end\n"
        "  if k == 1 then error(setmetatable({}, {__tostring = function(e) error(e) end})) end\n"
        "  if k == 2 then local t = {} for i = 1, 1e6 do t[i] = i end end\n"
        "  local s = 'x' while true do s = s .. s end\n"
        "end\n",
        NULL, &lim, NULL, err, sizeof(err));
    T_CHECK(g != NULL, "%s", err);
    if (!g) {
        T_END();
        return;
    }
    vm = lm_lua_vm_new(g, err, sizeof(err));
    req = J(SAMPLE_REQ);
    int saved_level = lm_log_level();
    lm_log_set_level(-1); /* 10k error lines are not the point */
    for (int i = 0; i < 10400; i++) {
        lm_lua_result_t res;
        lm_lua_call_t *c = lm_lua_call_begin(vm, "k", NULL, req);
        if (lm_lua_on_request(c, req, &res) != LM_LUA_ERROR)
            bad++;
        lm_lua_call_end(c);
        if (i == 399) {
            base_mem = lm_lua_vm_collect(vm);
            base_rss = rss_kb();
        }
    }
    lm_log_set_level(saved_level);
    end_mem = lm_lua_vm_collect(vm);
    end_rss = rss_kb();
    T_CHECK(bad == 0, "%d runs did not fail", bad);
    T_CHECK(end_mem <= base_mem + 16384, "Lua memory grew: %zu -> %zu bytes", base_mem, end_mem);
    if (!UNDER_ASAN)
        T_CHECK(end_rss - base_rss < 20 * 1024, "RSS grew %ld KiB", end_rss - base_rss);
    {
        lm_lua_stats_t st;
        lm_lua_gen_stats(g, 0, &st);
        T_CHECK(st.errors == 10400 && st.limits == 5200, "stats %llu %llu",
                (unsigned long long)st.errors, (unsigned long long)st.limits);
    }
    lm_lua_vm_release(vm);
    lm_lua_gen_release(g);
    json_decref(req);
    T_END();
}

/* ---- PL-8 isolation ---- */

static void test_isolation(void)
{
    lm_lua_script_spec_t specs[2];
    lm_lua_gen_t *gen;
    lm_lua_vm_t *vm;
    char err[512];
    static const char A[] =
        "function on_request(req)\n"
        "  local r = {}\n"
        "  r.set_lib = pcall(function() string.upper = function() return 'pwned' end end)\n"
        "  r.rawset_lib = pcall(rawset, string, 'upper', function() return 'pwned' end)\n"
        "  r.set_meta = pcall(function() getmetatable('').__index.upper = nil end)\n"
        "  r.setmt_lib = pcall(setmetatable, string, {})\n"
        "  r.set_global = pcall(function() leaked = 'A' end)\n"
        "  r.rawset_env = pcall(rawset, _ENV, 'leaked', 'A')\n"
        "  r.set_G = pcall(function() _G.leaked = 'A' end)\n"
        "  r.replace_fn = pcall(function() on_request = nil end)\n"
        "  r.set_lm = pcall(function() lm.log = nil end)\n"
        "  r.set_math = pcall(function() math.pi = 3 end)\n"
        "  r.insert_lib = pcall(table.insert, string, 1)\n"
        "  r.array_mt = pcall(function() getmetatable(req.messages).__index = function() return "
        "'x' end end)\n"
        "  lm.ctx.secret = 'A'\n"
        "  req.meta.a = r\n"
        "  req.meta.a_upper = ('a'):upper() .. string.upper('b')\n"
        "end\n";
    static const char B[] =
        "function on_request(req)\n"
        "  req.meta.b = {upper = ('a'):upper() .. string.upper('b'), leaked = leaked or 'no',\n"
        "                ctx = lm.ctx.secret or 'no', pi = math.pi > 3.14,\n"
        "                arr = req.messages[5] == nil}\n"
        "end\n";

    T_BEGIN("lua: PL-8 script A cannot change what script B or the next request sees");
    memset(specs, 0, sizeof(specs));
    specs[0].name = "A";
    specs[0].path = write_file("iso_a.lua", A, strlen(A));
    specs[1].name = "B";
    specs[1].path = write_file("iso_b.lua", B, strlen(B));
    gen = lm_lua_gen_load(specs, 2, NULL, NULL, err, sizeof(err));
    T_CHECK(gen != NULL, "%s", err);
    vm = gen ? lm_lua_vm_new(gen, err, sizeof(err)) : NULL;
    for (int round = 0; vm && round < 2; round++) {
        json_t *req = J(SAMPLE_REQ);
        lm_lua_call_t *c = lm_lua_call_begin(vm, "k", NULL, req);
        lm_lua_result_t res;
        int rc = lm_lua_on_request(c, req, &res);
        json_t *m = lm_lua_call_meta(c);
        const char *k;
        json_t *v;
        T_CHECK(rc == LM_LUA_OK, "round %d: rc %d %s", round, rc, res.message);
        json_object_foreach (json_object_get(m, "a"), k, v)
            T_CHECK(json_is_false(v), "round %d: A could %s", round, k);
        T_CHECK(json_object_size(json_object_get(m, "a")) == 12, "checks: %s", dump(m));
        T_CHECK(json_eq_text(json_object_get(m, "a_upper"), "\"AB\""), "A: %s", dump(m));
        T_CHECK(json_eq_text(
                    json_object_get(m, "b"),
                    "{\"upper\":\"AB\",\"leaked\":\"no\",\"ctx\":\"no\",\"pi\":true,\"arr\":true}"),
                "round %d: B saw %s", round, dump(json_object_get(m, "b")));
        lm_lua_call_end(c);
        json_decref(req);
    }
    lm_lua_vm_release(vm);
    lm_lua_gen_release(gen);
    T_END();
}

/* ---- generations ---- */

static void test_reload(void)
{
    char err[512];
    lm_lua_gen_t *g1, *g2, *cur;
    lm_lua_vm_t *w, *w2;
    lm_lua_call_t *old_call, *new_call;
    lm_lua_result_t res;
    json_t *r1, *r2;
    int rc;

    T_BEGIN("lua: reload with a syntax error keeps the old generation; requests keep theirs");
    g1 = gen_src("function on_request(req) req.meta.gen = 1 end\n", err, sizeof(err));
    T_CHECK(g1 != NULL, "%s", err);
    cur = g1;
    w = lm_lua_vm_new(cur, err, sizeof(err));
    r1 = J(SAMPLE_REQ);
    old_call = lm_lua_call_begin(w, "k", NULL, r1);

    g2 = gen_src("function on_request(req)\n  req.meta.gen = 2\n  if then end\nend\n", err,
                 sizeof(err));
    T_CHECK(g2 == NULL, "broken generation loaded");
    T_CHECK(strstr(err, "s.lua:3:") != NULL && strstr(err, "near 'then'") != NULL, "err: %s", err);
    g2 = gen_src("function on_request(req)\n  local x = nil\n  x.y = 1\nend\nlocal z = nil + 1\n",
                 err, sizeof(err));
    T_CHECK(g2 == NULL && strstr(err, "s.lua:5:") && strstr(err, "arithmetic"), "runtime err: %s",
            err);
    g2 = gen_src("function on_reqest(req) end\n", err, sizeof(err));
    T_CHECK(g2 == NULL && strstr(err, "unknown stage function 'on_reqest'"), "typo: %s", err);
    g2 = gen_src("on_request = 5\n", err, sizeof(err));
    T_CHECK(g2 == NULL && strstr(err, "on_request must be a function"), "type: %s", err);
    {
        lm_lua_script_spec_t spec = {.name = "missing", .path = "/nonexistent/x.lua"};
        g2 = lm_lua_gen_load(&spec, 1, NULL, NULL, err, sizeof(err));
        T_CHECK(g2 == NULL && strstr(err, "/nonexistent/x.lua: cannot open"), "missing: %s", err);
    }
    /* the old generation still serves */
    rc = lm_lua_on_request(old_call, r1, &res);
    T_CHECK(rc == LM_LUA_OK && json_eq_text(lm_lua_call_meta(old_call), "{\"gen\":1}"), "old: %s",
            dump(lm_lua_call_meta(old_call)));

    /* a good reload: the worker switches; the old request finishes on gen 1 */
    g2 = gen_src("function on_request(req) req.meta.gen = 2 end\n", err, sizeof(err));
    T_CHECK(g2 != NULL, "%s", err);
    cur = g2;
    lm_lua_gen_release(g1); /* the lead's snapshot no longer holds gen 1 */
    if (lm_lua_vm_gen(w) != cur) {
        w2 = lm_lua_vm_new(cur, err, sizeof(err));
        lm_lua_vm_release(w); /* old vm lives on through old_call */
        w = w2;
    }
    r2 = J(SAMPLE_REQ);
    new_call = lm_lua_call_begin(w, "k", NULL, r2);
    rc = lm_lua_on_request(new_call, r2, &res);
    T_CHECK(rc == LM_LUA_OK && json_eq_text(lm_lua_call_meta(new_call), "{\"gen\":2}"), "new: %s",
            dump(lm_lua_call_meta(new_call)));
    rc = lm_lua_on_request(old_call, r1, &res);
    T_CHECK(rc == LM_LUA_OK && json_eq_text(lm_lua_call_meta(old_call), "{\"gen\":1}"),
            "old after swap: %s", dump(lm_lua_call_meta(old_call)));
    lm_lua_call_end(old_call); /* frees vm 1 and gen 1 (ASan checks) */
    lm_lua_call_end(new_call);
    lm_lua_vm_release(w);
    lm_lua_gen_release(g2);
    json_decref(r1);
    json_decref(r2);
    T_END();
}

/* ---- lm.shared across workers ---- */

typedef struct thr_s {
    lm_lua_gen_t *gen;
    int fails;
} thr_t;

static void *worker_main(void *arg)
{
    thr_t *t = arg;
    char err[128];
    lm_lua_vm_t *vm = lm_lua_vm_new(t->gen, err, sizeof(err));
    json_t *req = J(SAMPLE_REQ);
    if (!vm) {
        t->fails = 1000;
        json_decref(req);
        return NULL;
    }
    for (int i = 0; i < 1000; i++) {
        lm_lua_result_t res;
        lm_lua_call_t *c = lm_lua_call_begin(vm, "k", NULL, req);
        if (lm_lua_on_request(c, req, &res) != LM_LUA_OK)
            t->fails++;
        lm_lua_call_end(c);
    }
    lm_lua_vm_release(vm);
    json_decref(req);
    return NULL;
}

static void test_shared(void)
{
    lm_lua_shared_t *sh = lm_lua_shared_new(0);
    char err[256];
    lm_lua_gen_t *g;
    pthread_t th[4];
    thr_t ts[4];
    int rc;
    const char *out;

    T_BEGIN("lua: lm.shared counters are shared by all workers (threads)");
    g = gen_src_lim("function on_request(req) lm.shared.incr('hits', 1) end\n"
                    "function on_log(r) r.hits = lm.shared.get('hits') end\n",
                    NULL, NULL, sh, err, sizeof(err));
    T_CHECK(g != NULL, "%s", err);
    for (int i = 0; g && i < 4; i++) {
        ts[i].gen = g;
        ts[i].fails = 0;
        pthread_create(&th[i], NULL, worker_main, &ts[i]);
    }
    for (int i = 0; g && i < 4; i++) {
        pthread_join(th[i], NULL);
        T_CHECK(ts[i].fails == 0, "worker %d: %d failures", i, ts[i].fails);
    }
    if (g) {
        lm_lua_vm_t *vm = lm_lua_vm_new(g, err, sizeof(err));
        json_t *req = J(SAMPLE_REQ), *rec = J("{}");
        lm_lua_call_t *c = lm_lua_call_begin(vm, "k", NULL, req);
        lm_lua_on_log(c, rec);
        T_CHECK(json_eq_text(rec, "{\"hits\":4000}"), "record %s", dump(rec));
        lm_lua_call_end(c);
        lm_lua_vm_release(vm);
        json_decref(req);
        json_decref(rec);
    }
    lm_lua_gen_release(g);
    lm_lua_shared_free(sh);
    /* without a dictionary lm.shared raises */
    out = in_sandbox("return lm.shared.get('x')", &rc, NULL, NULL);
    T_CHECK(rc == LM_LUA_ERROR, "rc %d %s", rc, out);
    T_END();
}

/* ---- shipped scripts ---- */

static void test_script_route(void)
{
    char err[512];
    lm_lua_gen_t *g;
    lm_lua_vm_t *vm;
    lm_lua_call_t *c;
    lm_lua_result_t res;
    json_t *req, *cands, *order = NULL;
    int rc;

    T_BEGIN("scripts/route_latency.lua: lowest latency under the cost ceiling");
    g = gen_file("scripts/route_latency.lua", "{\"max_price\":10000000,\"max_error_rate\":0.2}",
                 NULL, err, sizeof(err));
    T_CHECK(g != NULL, "%s", err);
    if (g) {
        vm = lm_lua_vm_new(g, err, sizeof(err));
        req = J(SAMPLE_REQ);
        c = lm_lua_call_begin(vm, "k", NULL, req);
        cands =
            J("[{\"name\":\"slow-cheap\",\"latency_ms\":900,\"ttft_ms\":300,\"error_rate\":0.0,"
              "\"inflight\":1,\"price\":{\"input\":1000000,\"output\":2000000},\"healthy\":true},"
              "{\"name\":\"fast-pricey\",\"latency_ms\":100,\"ttft_ms\":50,\"error_rate\":0.0,"
              "\"inflight\":0,\"price\":{\"input\":10000000,\"output\":30000000},\"healthy\":true},"
              "{\"name\":\"fast-ok\",\"latency_ms\":200,\"ttft_ms\":80,\"error_rate\":0.01,"
              "\"inflight\":3,\"price\":{\"input\":2000000,\"output\":6000000},\"healthy\":true},"
              "{\"name\":\"down\",\"latency_ms\":10,\"error_rate\":0.0,\"price\":{\"input\":1,"
              "\"output\":1},"
              "\"healthy\":false},"
              "{\"name\":\"flaky\",\"latency_ms\":20,\"error_rate\":0.5,\"price\":{\"input\":1,"
              "\"output\":1},"
              "\"healthy\":true},"
              "{\"name\":\"mid-ok\",\"latency_ms\":200,\"error_rate\":0.0,\"inflight\":1,"
              "\"price\":{\"input\":2000000,\"output\":6000000},\"healthy\":true}]");
        rc = lm_lua_on_route(c, cands, &order, &res);
        T_CHECK(rc == LM_LUA_OK && order &&
                    json_eq_text(order, "[\"mid-ok\",\"fast-ok\",\"slow-cheap\"]"),
                "rc %d order %s %s", rc, dump(order), res.message);
        json_decref(order);
        lm_lua_call_end(c);
        json_decref(req);
        json_decref(cands);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    /* nothing under the ceiling: no channel, or (fallback) by price */
    g = gen_file("scripts/route_latency.lua", "{\"max_price\":5}", NULL, err, sizeof(err));
    if (g) {
        vm = lm_lua_vm_new(g, err, sizeof(err));
        req = J(SAMPLE_REQ);
        c = lm_lua_call_begin(vm, "k", NULL, req);
        cands = J("[{\"name\":\"a\",\"latency_ms\":1,\"price\":{\"input\":9,\"output\":9},"
                  "\"healthy\":true}]");
        rc = lm_lua_on_route(c, cands, &order, &res);
        T_CHECK(rc == LM_LUA_OK && order && json_array_size(order) == 0, "strict: %s", dump(order));
        json_decref(order);
        lm_lua_call_end(c);
        json_decref(req);
        json_decref(cands);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    T_END();
}

static void test_script_failover(void)
{
    char err[512];
    lm_lua_gen_t *g;
    lm_lua_vm_t *vm;
    lm_lua_call_t *c;
    lm_lua_result_t res;
    json_t *req, *e;
    int rc;

    T_BEGIN("scripts/failover_content_filter.lua: Chinese model filter error -> international "
            "model once");
    g = gen_file("scripts/failover_content_filter.lua", "{\"fallback_model\":\"gpt-4o-mini\"}",
                 NULL, err, sizeof(err));
    T_CHECK(g != NULL, "%s", err);
    if (g) {
        vm = lm_lua_vm_new(g, err, sizeof(err));
        req = J(SAMPLE_REQ);
        c = lm_lua_call_begin(vm, "k", NULL, req);
        e = J("{\"status\":400,\"code\":\"data_inspection_failed\",\"message\":\"Input data may "
              "contain "
              "inappropriate content.\",\"model\":\"qwen-max\",\"channel\":\"dashscope\"}");
        rc = lm_lua_on_error(c, e, 0, &res);
        T_CHECK(rc == LM_LUA_RETRY, "rc %d", rc);
        T_STREQ(res.model, "gpt-4o-mini");
        /* only once per request */
        rc = lm_lua_on_error(c, e, 0, &res);
        T_CHECK(rc == LM_LUA_OK, "second failover: rc %d", rc);
        json_decref(e);
        lm_lua_call_end(c);
        /* Chinese message text (ERNIE-style), not started */
        c = lm_lua_call_begin(vm, "k", NULL, req);
        e = J("{\"status\":400,\"code\":\"336003\",\"message\":"
              "\"\xe8\xbe\x93\xe5\x85\xa5\xe5\x86\x85\xe5\xae\xb9"
              "\xe5\x8c\x85\xe5\x90\xab\xe6\x95\x8f\xe6\x84\x9f\xe4\xbf\xa1\xe6\x81\xaf\","
              "\"model\":\"ernie-4.0\"}");
        rc = lm_lua_on_error(c, e, 0, &res);
        T_CHECK(rc == LM_LUA_RETRY, "ernie: rc %d", rc);
        json_decref(e);
        lm_lua_call_end(c);
        /* an international model, another error, or a started stream: no retry */
        c = lm_lua_call_begin(vm, "k", NULL, req);
        e = J(
            "{\"status\":400,\"code\":\"content_filter\",\"message\":\"x\",\"model\":\"gpt-4o\"}");
        rc = lm_lua_on_error(c, e, 0, &res);
        T_CHECK(rc == LM_LUA_OK, "gpt-4o: rc %d", rc);
        json_decref(e);
        e = J("{\"status\":500,\"code\":\"server_error\",\"message\":\"boom\",\"model\":\"qwen-"
              "max\"}");
        rc = lm_lua_on_error(c, e, 0, &res);
        T_CHECK(rc == LM_LUA_OK, "500: rc %d", rc);
        json_decref(e);
        e = J("{\"status\":400,\"code\":\"data_inspection_failed\",\"message\":\"x\",\"model\":"
              "\"qwen-max\"}");
        rc = lm_lua_on_error(c, e, 1, &res);
        T_CHECK(rc == LM_LUA_OK, "started: rc %d", rc);
        json_decref(e);
        lm_lua_call_end(c);
        json_decref(req);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    T_END();
}

static void test_script_decorator(void)
{
    char err[512];
    lm_lua_gen_t *g;
    lm_lua_vm_t *vm;
    lm_lua_call_t *c;
    lm_lua_result_t res;
    json_t *req;
    int rc;

    T_BEGIN("scripts/prompt_decorator.lua: system prompt per key group");
    g = gen_file(
        "scripts/prompt_decorator.lua",
        "{\"prompts\":{\"support\":\"You are Longmen support.\",\"default\":\"Be brief.\"},"
        "\"groups\":[{\"match\":\"team-a-*\",\"group\":\"support\"}]}",
        NULL, err, sizeof(err));
    T_CHECK(g != NULL, "%s", err);
    if (g) {
        vm = lm_lua_vm_new(g, err, sizeof(err));
        req = J(SAMPLE_REQ);
        c = lm_lua_call_begin(vm, "team-a-7", NULL, req);
        rc = lm_lua_on_request(c, req, &res);
        T_CHECK(rc == LM_LUA_OK &&
                    json_eq_text(json_object_get(req, "messages"),
                                 "[{\"role\":\"system\",\"content\":\"You are Longmen support.\"},"
                                 "{\"role\":\"user\",\"content\":\"hi\"}]"),
                "team-a: %s", dump(req));
        T_CHECK(json_eq_text(lm_lua_call_meta(c), "{\"prompt_group\":\"support\"}"), "meta %s",
                dump(lm_lua_call_meta(c)));
        /* idempotent */
        rc = lm_lua_on_request(c, req, &res);
        T_CHECK(json_array_size(json_object_get(req, "messages")) == 2, "injected twice: %s",
                dump(req));
        lm_lua_call_end(c);
        json_decref(req);
        /* another key gets the default; req.group from the kernel wins */
        req = J(SAMPLE_REQ);
        c = lm_lua_call_begin(vm, "other", NULL, req);
        lm_lua_on_request(c, req, &res);
        T_STREQ(json_string_value(json_object_get(
                    json_array_get(json_object_get(req, "messages"), 0), "content")),
                "Be brief.");
        lm_lua_call_end(c);
        json_decref(req);
        req = J(SAMPLE_REQ);
        c = lm_lua_call_begin(vm, "other", "support", req);
        lm_lua_on_request(c, req, &res);
        T_STREQ(json_string_value(json_object_get(
                    json_array_get(json_object_get(req, "messages"), 0), "content")),
                "You are Longmen support.");
        lm_lua_call_end(c);
        json_decref(req);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    T_END();
}

static void test_script_pii(void)
{
    char err[512];
    lm_lua_gen_t *g;
    lm_lua_vm_t *vm;
    lm_lua_call_t *c;
    lm_lua_result_t res;
    json_t *req;
    int rc;

    T_BEGIN("scripts/pii_mask.lua: phone numbers, ID numbers and e-mails are masked");
    g = gen_file("scripts/pii_mask.lua", NULL, NULL, err, sizeof(err));
    T_CHECK(g != NULL, "%s", err);
    if (g) {
        vm = lm_lua_vm_new(g, err, sizeof(err));
        req = J("{\"model\":\"m\",\"messages\":["
                "{\"role\":\"user\",\"content\":\"\xe6\x88\x91\xe7\x9a\x84\xe6\x89\x8b\xe6\x9c\xba"
                "13812345678,"
                " also +86 139-1234-5678 and 138 0013 8000; id 11010519491231002X, "
                "mail zhang.san+ai@example.com.cn. Order 12345678901234567890 stays, so does "
                "1381234567.\"},"
                "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                "\"\xe8\xba\xab\xe4\xbb\xbd\xe8\xaf\x81"
                "440524188001010014\xe3\x80\x82\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
                "\"x\"}}]}]}");
        c = lm_lua_call_begin(vm, "k", NULL, req);
        rc = lm_lua_on_request(c, req, &res);
        T_CHECK(rc == LM_LUA_OK, "rc %d %s", rc, res.message);
        T_STREQ(json_string_value(json_object_get(
                    json_array_get(json_object_get(req, "messages"), 0), "content")),
                "\xe6\x88\x91\xe7\x9a\x84\xe6\x89\x8b\xe6\x9c\xba[PHONE], also [PHONE] and "
                "[PHONE]; id [ID], "
                "mail [EMAIL]. Order 12345678901234567890 stays, so does 1381234567.");
        T_STREQ(
            json_string_value(json_object_get(
                json_array_get(
                    json_object_get(json_array_get(json_object_get(req, "messages"), 1), "content"),
                    0),
                "text")),
            "\xe8\xba\xab\xe4\xbb\xbd\xe8\xaf\x81[ID]\xe3\x80\x82");
        T_CHECK(json_eq_text(lm_lua_call_meta(c), "{\"pii_masked\":6}"), "meta %s",
                dump(lm_lua_call_meta(c)));
        lm_lua_call_end(c);
        json_decref(req);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    g = gen_file("scripts/pii_mask.lua", "{\"mode\":\"reject\"}", NULL, err, sizeof(err));
    if (g) {
        vm = lm_lua_vm_new(g, err, sizeof(err));
        req = J("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"call "
                "13812345678\"}]}");
        c = lm_lua_call_begin(vm, "k", NULL, req);
        rc = lm_lua_on_request(c, req, &res);
        T_CHECK(rc == LM_LUA_REJECT && res.status == 400 && strcmp(res.code, "pii_detected") == 0,
                "reject: %d %d %s", rc, res.status, res.code);
        lm_lua_call_end(c);
        json_decref(req);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    T_END();
}

static int64_t bill(const char *args, const char *key, const char *group, const char *usage,
                    char *err, size_t errlen, json_t **log)
{
    lm_lua_gen_t *g = gen_file("scripts/tiered_billing.lua", args, NULL, err, errlen);
    lm_lua_vm_t *vm = g ? lm_lua_vm_new(g, err, errlen) : NULL;
    json_t *req = J(SAMPLE_REQ), *u = J(usage),
           *price = J("{\"input\":4000000,\"output\":12000000}");
    lm_lua_call_t *c = vm ? lm_lua_call_begin(vm, key, group, req) : NULL;
    lm_lua_result_t res;
    int64_t charge = -1;

    if (c && lm_lua_on_usage(c, u, price, &charge, &res) != LM_LUA_OK) {
        snprintf(err, errlen, "%s", res.message);
        charge = -2;
    }
    if (c && log) {
        *log = J("{}");
        lm_lua_on_log(c, *log);
    }
    lm_lua_call_end(c);
    lm_lua_vm_release(vm);
    lm_lua_gen_release(g);
    json_decref(req);
    json_decref(u);
    json_decref(price);
    return charge;
}

static void test_script_billing(void)
{
    char err[512] = "";
    const char *usage =
        "{\"prompt_tokens\":10000,\"completion_tokens\":1000,\"total_tokens\":11000,"
        "\"prompt_tokens_details\":{\"cached_tokens\":4000}}";
    int64_t c;
    json_t *log = NULL;

    T_BEGIN("scripts/tiered_billing.lua: time of day, key group, cached tokens discounted");
    /* base = 6000*4 + 4000*0.4 + 1000*12 = 24000 + 1600 + 12000 = 37600 micro-units */
    c = bill("{\"peak\":{\"from\":0,\"to\":24}}", "k", NULL, usage, err, sizeof(err), &log);
    T_CHECK(c == 37600, "peak: %lld %s", (long long)c, err);
    T_CHECK(log && json_eq_text(json_object_get(json_object_get(log, "billing"), "time_percent"),
                                "100"),
            "log %s", dump(log));
    json_decref(log);
    c = bill("{\"peak\":{\"from\":0,\"to\":0}}", "k", NULL, usage, err, sizeof(err), NULL);
    T_CHECK(c == 18800, "off-peak: %lld %s", (long long)c, err);
    c = bill(
        "{\"peak\":{\"from\":0,\"to\":24},\"groups\":[{\"match\":\"vip-*\",\"group\":\"vip\"}]}",
        "vip-1", NULL, usage, err, sizeof(err), NULL);
    T_CHECK(c == 30080, "vip: %lld %s", (long long)c, err);
    c = bill("{\"peak\":{\"from\":0,\"to\":24}}", "k", "internal", usage, err, sizeof(err), NULL);
    T_CHECK(c == 0, "internal: %lld %s", (long long)c, err);
    c = bill("{\"peak\":{\"from\":0,\"to\":24}}", "k", NULL,
             "{\"prompt_tokens\":3,\"completion_tokens\":0,\"total_tokens\":3}", err, sizeof(err),
             NULL);
    T_CHECK(c == 12, "small: %lld %s", (long long)c, err);
    c = bill("{\"peak\":{\"from\":0,\"to\":24}}", "k", NULL, "{\"prompt_tokens\":1}", err,
             sizeof(err), NULL);
    T_CHECK(c == 4, "partial usage: %lld %s", (long long)c, err);
    T_END();
}

static void test_script_budget(void)
{
    char err[512];
    lm_lua_shared_t *sh = lm_lua_shared_new(0);
    lm_lua_gen_t *g;
    lm_lua_vm_t *vm;
    lm_lua_result_t res;
    json_t *req, *u;
    int64_t charge = 0;
    int rc;

    T_BEGIN("scripts/token_budget.lua: a key over its token budget is refused with 429");
    g = gen_file("scripts/token_budget.lua", "{\"budgets\":{\"small\":1000,\"default\":100000}}",
                 sh, err, sizeof(err));
    T_CHECK(g != NULL, "%s", err);
    if (g) {
        vm = lm_lua_vm_new(g, err, sizeof(err));
        req = J(SAMPLE_REQ);
        u = J("{\"prompt_tokens\":300,\"completion_tokens\":300,\"total_tokens\":600}");
        for (int i = 0; i < 3; i++) {
            lm_lua_call_t *c = lm_lua_call_begin(vm, "small", NULL, req);
            rc = lm_lua_on_request(c, req, &res);
            if (i < 2) {
                T_CHECK(rc == LM_LUA_OK, "request %d refused: %s", i, res.message);
                lm_lua_on_usage(c, u, u, &charge, &res);
            } else {
                T_CHECK(rc == LM_LUA_REJECT && res.status == 429 &&
                            strcmp(res.code, "token_budget_exceeded") == 0 &&
                            strstr(res.message, "1200 of 1000"),
                        "request 3: rc %d %d %s", rc, res.status, res.message);
            }
            lm_lua_call_end(c);
        }
        /* another key is unaffected; a big prompt over the remainder is refused */
        {
            lm_lua_call_t *c = lm_lua_call_begin(vm, "other", NULL, req);
            rc = lm_lua_on_request(c, req, &res);
            T_CHECK(rc == LM_LUA_OK, "other key: %d %s", rc, res.message);
            lm_lua_call_end(c);
        }
        {
            char *big = malloc(500000);
            json_t *breq;
            memset(big, 'a', 499999);
            big[499999] = 0;
            breq = json_pack("{s:s, s:[{s:s, s:s}]}", "model", "m", "messages", "role", "user",
                             "content", big);
            lm_lua_call_t *c = lm_lua_call_begin(vm, "other", NULL, breq);
            rc = lm_lua_on_request(c, breq, &res);
            T_CHECK(rc == LM_LUA_REJECT && res.status == 429, "estimate: %d %s", rc, res.message);
            lm_lua_call_end(c);
            json_decref(breq);
            free(big);
        }
        json_decref(u);
        json_decref(req);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    lm_lua_shared_free(sh);
    T_END();
}

static void test_script_noop(void)
{
    char err[256];
    lm_lua_gen_t *g;

    T_BEGIN("scripts/noop.lua: defines every stage");
    g = gen_file("scripts/noop.lua", NULL, NULL, err, sizeof(err));
    T_CHECK(g && lm_lua_gen_stages(g) == ((1u << LM_LUA_NSTAGES) - 2), "%s %x", err,
            g ? lm_lua_gen_stages(g) : 0);
    lm_lua_gen_release(g);
    T_END();
}

/* A fake host side call: records what the script asked, starts or fails. */
typedef struct side_rec_s {
    int calls;
    int fail;
    char model[64];
    char text[64];
} side_rec_t;

static int fake_side(void *arg, const char *model, const char *text, size_t len, char *err,
                     size_t errlen)
{
    side_rec_t *s = arg;
    s->calls++;
    snprintf(s->model, sizeof(s->model), "%s", model);
    snprintf(s->text, sizeof(s->text), "%.*s", (int)(len < 63 ? len : 63), text);
    if (s->fail) {
        snprintf(err, errlen, "no channel");
        return -1;
    }
    return 0;
}

/* moderation_guard.lua: without a side call it fails closed (503) or
 * passes with "fail_open"; with one it waits (PENDING) and the verdict
 * decides; a missing verdict fails closed. */
static void test_script_moderation_guard(void)
{
    char err[512];
    lm_lua_call_t *c;
    lm_lua_result_t res;
    static const char *const argv[] = {"{}", "{\"fail_open\":true}"};
    T_BEGIN("scripts/moderation_guard.lua: fails closed without a verdict");
    for (int i = 0; i < 2; i++) {
        lm_lua_gen_t *g = gen_file("scripts/moderation_guard.lua", argv[i], NULL, err, sizeof(err));
        T_CHECK(g != NULL, "%s", err);
        if (g == NULL)
            continue;
        lm_lua_vm_t *vm = lm_lua_vm_new(g, err, sizeof(err));
        json_t *req = J(SAMPLE_REQ);
        c = lm_lua_call_begin(vm, "k", NULL, req);
        int rc = lm_lua_on_request(c, req, &res);
        if (i == 0)
            T_CHECK(rc == LM_LUA_REJECT && res.status == 503 &&
                        strcmp(res.code, "moderation_unavailable") == 0,
                    "closed: %d %d %s", rc, res.status, res.code);
        else
            T_CHECK(rc == LM_LUA_OK, "fail_open passes: %d", rc);
        lm_lua_call_end(c);
        json_decref(req);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    T_END();

    /* verdict JSON (NULL: nil, "timed out"), fail_open, want rc/status/code */
    static const struct {
        const char *verdict;
        int open, rc, status;
        const char *code;
    } cases[] = {
        {"{\"flagged\":true,\"categories\":{\"violence\":true}}", 0, LM_LUA_REJECT, 400,
         "content_flagged"},
        {"{\"flagged\":false,\"categories\":{}}", 0, LM_LUA_OK, 0, ""},
        {NULL, 0, LM_LUA_REJECT, 503, "moderation_unavailable"},
        {NULL, 1, LM_LUA_OK, 0, ""},
        {"drop", 0, 0, 0, ""}, /* the request ends while the script waits */
    };
    T_BEGIN("scripts/moderation_guard.lua: waits on lm.moderate and obeys the verdict");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        side_rec_t side = {0};
        lm_lua_gen_t *g =
            gen_file("scripts/moderation_guard.lua", argv[cases[i].open], NULL, err, sizeof(err));
        lm_lua_vm_t *vm = g ? lm_lua_vm_new(g, err, sizeof(err)) : NULL;
        T_CHECK(vm != NULL, "%s", err);
        if (vm == NULL) {
            lm_lua_gen_release(g);
            continue;
        }
        json_t *req = J(SAMPLE_REQ);
        c = lm_lua_call_begin(vm, "k", NULL, req);
        lm_lua_call_set_side(c, fake_side, &side);
        int rc = lm_lua_on_request(c, req, &res);
        T_CHECK(rc == LM_LUA_PENDING && side.calls == 1 &&
                    strcmp(side.model, "omni-moderation-latest") == 0 &&
                    strcmp(side.text, "hi") == 0,
                "%zu: waits: %d calls %d %s %s", i, rc, side.calls, side.model, side.text);
        if (rc == LM_LUA_PENDING && strcmp(cases[i].verdict ? cases[i].verdict : "", "drop")) {
            /* another request runs on the same vm meanwhile */
            json_t *req2 = J(SAMPLE_REQ);
            lm_lua_call_t *c2 = lm_lua_call_begin(vm, "k", NULL, req2);
            side_rec_t side2 = {.fail = 1};
            lm_lua_call_set_side(c2, fake_side, &side2);
            lm_lua_result_t res2;
            int rc2 = lm_lua_on_request(c2, req2, &res2);
            T_CHECK(cases[i].open ? rc2 == LM_LUA_OK : rc2 == LM_LUA_REJECT && res2.status == 503,
                    "%zu: other: %d", i, rc2);
            lm_lua_call_end(c2);
            json_decref(req2);
            json_t *v = cases[i].verdict ? J(cases[i].verdict) : NULL;
            rc = lm_lua_on_request_resume(c, req, v, "the moderation call timed out", &res);
            json_decref(v);
            T_CHECK(rc == cases[i].rc && res.status == cases[i].status &&
                        strcmp(res.code, cases[i].code) == 0,
                    "%zu: %d %d %s %s", i, rc, res.status, res.code, res.message);
            if (cases[i].rc == LM_LUA_OK && cases[i].verdict) {
                json_t *mod = json_object_get(lm_lua_call_meta(c), "moderation");
                T_CHECK(json_is_string(mod) && strcmp(json_string_value(mod), "passed") == 0,
                        "%zu: meta", i);
            }
        }
        lm_lua_call_end(c); /* "drop": the waiting thread goes with the call */
        json_decref(req);
        lm_lua_vm_release(vm);
        lm_lua_gen_release(g);
    }
    T_END();
}

/* lm.moderate's bounds: a cap per request, not inside a coroutine of the
 * script's own, no stray yields; scripts after a waiting one run after it. */
static void test_side_calls(void)
{
    static const char *const src =
        "function on_request(req)\n"
        "  local co = coroutine.wrap(function() return lm.moderate('m', 'x') end)\n"
        "  local v, e = co()\n"
        "  req.meta.co = e\n"
        "  local n = 0\n"
        "  for i = 1, 6 do\n"
        "    local v, e = lm.moderate('m', 'x' .. i)\n"
        "    if v then n = n + 1 else req.meta.last = e end\n"
        "  end\n"
        "  req.meta.n = n\n"
        "end\n";
    fx_t f;
    side_rec_t side = {0};
    lm_lua_result_t res;
    T_BEGIN("lua: lm.moderate is capped per request and waits only in the stage's thread");
    T_CHECK(fx_open(&f, src, NULL) == 0, "%s", f.err);
    if (f.call) {
        lm_lua_call_set_side(f.call, fake_side, &side);
        int rc = lm_lua_on_request(f.call, f.req, &res), waits = 0;
        json_t *v = J("{\"flagged\":false}");
        while (rc == LM_LUA_PENDING && waits < 10) {
            waits++;
            rc = lm_lua_on_request_resume(f.call, f.req, v, NULL, &res);
        }
        json_decref(v);
        json_t *meta = lm_lua_call_meta(f.call);
        T_CHECK(rc == LM_LUA_OK && waits == LM_LUA_SIDE_MAX && side.calls == LM_LUA_SIDE_MAX,
                "rc %d waits %d calls %d %s", rc, waits, side.calls, res.message);
        T_CHECK(json_integer_value(json_object_get(meta, "n")) == LM_LUA_SIDE_MAX, "n");
        T_CHECK(strstr(json_string_value(json_object_get(meta, "co")), "cannot wait here") != NULL,
                "co");
        T_CHECK(strstr(json_string_value(json_object_get(meta, "last")), "too many") != NULL,
                "last");
    }
    fx_close(&f);
    T_CHECK(fx_open(&f, "function on_request(req) coroutine.yield() end", NULL) == 0, "%s", f.err);
    if (f.call) {
        lm_lua_call_set_side(f.call, fake_side, &side);
        int rc = lm_lua_on_request(f.call, f.req, &res);
        T_CHECK(rc == LM_LUA_ERROR && strstr(res.message, "yield") != NULL, "stray yield: %d %s",
                rc, res.message);
        rc = lm_lua_on_request(f.call, f.req, &res); /* the state is still usable */
        T_CHECK(rc == LM_LUA_ERROR, "again: %d", rc);
    }
    fx_close(&f);
    T_CHECK(fx_open(&f, "function on_route(req, c) return lm.moderate('m', 'x') end", NULL) == 0,
            "%s", f.err);
    if (f.call) {
        json_t *order = NULL, *cands = json_array();
        int rc = lm_lua_on_route(f.call, cands, &order, &res);
        json_decref(cands);
        T_CHECK(rc == LM_LUA_ERROR && strstr(res.message, "not allowed") != NULL, "route: %d %s",
                rc, res.message);
        json_decref(order);
    }
    fx_close(&f);
    T_END();
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lm_test_lua.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    lm_log_set_level(LM_LOG_WARN);
    if (getenv("LM_TEST_QUIET"))
        lm_log_set_level(-1);

    test_stage_request();
    test_stage_route();
    test_stage_upstream();
    test_stage_event();
    test_stage_response_usage_error_log();
    test_ctx_and_chain();
    test_filters();
    test_lazy_request();
    test_lazy_event();
    test_lazy_other_stages();
    test_stage_cost();
    test_stage_inputs();
    test_api();
    test_patterns();
    test_sandbox();
    test_cpu_limits();
    test_bombs();
    test_errors();
    test_error_memory();
    test_isolation();
    test_reload();
    test_shared();
    test_script_route();
    test_script_failover();
    test_script_decorator();
    test_script_pii();
    test_script_billing();
    test_script_budget();
    test_script_noop();
    test_script_moderation_guard();
    test_side_calls();

    {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    T_EXIT();
}
