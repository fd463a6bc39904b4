/* The OpenAI-compatible base (sdk/lmoai.h) called directly, through a small
 * fake host that records what the base asks of it: init, the request
 * (pass-through, keep/params, aliases, flags), responses (forward, clean,
 * usage out of the body), events (usage-only chunk, tool-call fragments,
 * code finish) and errors (OpenAI bodies, code tables, scrubbing). */
#include "lmoai.h"
#include "t.h"

#include <stdlib.h>

/* ---- fake host: one channel config, one request, one stream ---- */

static const char *cfg[16];
static char url[256], hdrs[1024], body[2048];
static json_t *chunks; /* what emit_chunk got */
static lm_usage got_usage;
static int nusage;

static void *f_alloc(size_t n)
{
    return malloc(n);
}
static void f_free(void *p)
{
    free(p);
}
static int f_cfg_str(void *ictx, const char *key, lm_str *out)
{
    (void)ictx;
    for (int i = 0; cfg[i]; i += 2)
        if (strcmp(cfg[i], key) == 0)
            return *out = lm_cstr(cfg[i + 1]), LM_OK;
    return LM_DECLINED;
}
static int f_cfg_bool(void *ictx, const char *key, int *out)
{
    lm_str s;
    if (f_cfg_str(ictx, key, &s) != LM_OK)
        return LM_DECLINED;
    return *out = strcmp(s.p, "true") == 0, LM_OK;
}
static int64_t f_time(void)
{
    return 42;
}
static int f_url(lm_ureq *u, lm_str s)
{
    (void)u;
    return snprintf(url, sizeof(url), "%.*s", (int)s.n, s.p), LM_OK;
}
static int f_hdr(lm_ureq *u, lm_str n, lm_str v)
{
    size_t l = strlen(hdrs);
    (void)u;
    return snprintf(hdrs + l, sizeof(hdrs) - l, "%.*s: %.*s\n", (int)n.n, n.p, (int)v.n, v.p),
           LM_OK;
}
static int f_body(lm_ureq *u, lm_str b)
{
    (void)u;
    return snprintf(body, sizeof(body), "%.*s", (int)b.n, b.p), LM_OK;
}
static int f_json_body(lm_ureq *u, json_t *b)
{
    char *s = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
    (void)u;
    snprintf(body, sizeof(body), "%s", s ? s : "");
    free(s);
    json_decref(b);
    return LM_OK;
}
static int f_chunk(lm_emit *e, json_t *c)
{
    (void)e;
    return json_array_append_new(chunks, c), LM_OK;
}
static int f_delta(lm_emit *e, int i, json_t *d, const char *fr)
{
    (void)e;
    return f_chunk(NULL, json_pack("{s:[{s:i,s:o,s:s?}]}", "choices", "index", i, "delta",
                                   d ? d : json_object(), "finish_reason", fr));
}
static int f_usage(lm_emit *e, const lm_usage *u)
{
    (void)e;
    return got_usage = *u, nusage++, LM_OK;
}

static const lm_host_api host = {
    .hdr = LM_ABI_HDR(lm_host_api),
    .alloc = f_alloc,
    .free = f_free,
    .cfg_str = f_cfg_str,
    .cfg_bool = f_cfg_bool,
    .unix_time = f_time,
    .ureq_set_url = f_url,
    .ureq_add_header = f_hdr,
    .ureq_set_body = f_body,
    .ureq_set_json_body = f_json_body,
    .emit_chunk = f_chunk,
    .emit_delta = f_delta,
    .emit_usage = f_usage,
};

static void *open_inst(const lmo_quirks *q, const char *const *kv)
{
    void *st = NULL;
    lm_err e;
    memset(cfg, 0, sizeof(cfg));
    for (int i = 0; kv[i]; i++)
        cfg[i] = kv[i];
    return lmo_init(q, &host, NULL, &st, &e) == LM_OK ? st : NULL;
}

static int build(void *st, lm_call *c, const char *canon, lm_err *e)
{
    json_t *j = json_loads(canon, 0, NULL);
    url[0] = hdrs[0] = body[0] = '\0';
    *c = (lm_call){.hdr = LM_ABI_HDR(lm_call), .op = LM_OP_CHAT, .request_id = "r1"};
    c->model = json_string_value(json_object_get(j, "model"));
    c->stream = json_is_true(json_object_get(j, "stream"));
    if (json_object_get(j, "input"))
        c->op = LM_OP_EMBED;
    int rc = lmo_build_request(st, c, j, NULL, e);
    c->model = "m";
    json_decref(j);
    return rc;
}

static const char *const KV[] = {"base_url", "http://up/v1/", "api_key", "sk-secret-1", NULL};

static void test_request(void)
{
    static const lms_rename alias[] = {{"friendly", "real"}, {NULL, NULL}};
    static const lms_rename ren[] = {{"max_completion_tokens", "max_tokens"}, {NULL, NULL}};
    static const lmo_quirks plain = {0};
    static const lmo_quirks quirky = {.flags = LMO_DEV_AS_SYSTEM | LMO_TEXT_ONLY | LMO_STOP_ARRAY,
                                      .keep = "temperature stop",
                                      .params = ren,
                                      .aliases = alias};
    lm_call c;
    lm_err e;
    void *st = open_inst(&plain, KV);
    T_BEGIN("lmoai_request_defaults_and_raw_pass_through");
    T_CHECK(st != NULL, "init");
    const char *raw = "{\"model\":\"m\",\"messages\":[],\"stream\":true}";
    json_t *j = json_loads(raw, 0, NULL);
    c = (lm_call){.op = LM_OP_CHAT, .stream = 1, .model = "m", .raw_body = lm_cstr(raw)};
    hdrs[0] = '\0';
    T_CHECK(lmo_build_request(st, &c, j, NULL, &e) == LM_OK, "build");
    T_STREQ(url, "http://up/v1/chat/completions");
    T_CHECK(strstr(hdrs, "Authorization: Bearer sk-secret-1\n") != NULL, "%s", hdrs);
    T_CHECK(strstr(hdrs, "Accept: text/event-stream\n") != NULL, "%s", hdrs);
    T_STREQ(body, "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":"
                  "{\"include_usage\":true}}");
    lmo_req_close(st, &c);
    json_decref(j);
    raw = "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":false}}";
    j = json_loads(raw, 0, NULL);
    c = (lm_call){.op = LM_OP_CHAT, .stream = 1, .model = "m", .raw_body = lm_cstr(raw)};
    T_CHECK(lmo_build_request(st, &c, j, NULL, &e) == LM_OK, "build");
    T_STREQ(body, "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    lmo_req_close(st, &c);
    json_decref(j);
    T_CHECK(build(st, &c, "{\"model\":\"m\",\"input\":[\"a\"]}", &e) == LM_OK, "embed");
    T_STREQ(url, "http://up/v1/embeddings");
    lmo_req_close(st, &c);
    lmo_fini(st);
    T_END();

    T_BEGIN("lmoai_request_quirks");
    st = open_inst(&quirky, KV);
    T_CHECK(build(st, &c,
                  "{\"model\":\"FRIENDLY\",\"messages\":[{\"role\":\"developer\",\"content\":[{"
                  "\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],"
                  "\"stop\":\"x\",\"temperature\":0.5,\"max_completion_tokens\":7,\"seed\":1}",
                  &e) == LM_OK,
            "build");
    T_STREQ(body, "{\"max_tokens\":7,\"messages\":[{\"content\":\"a\\nb\",\"role\":\"system\"}],"
                  "\"model\":\"real\",\"stop\":[\"x\"],\"temperature\":0.5}");
    lmo_req_close(st, &c);
    T_CHECK(build(st, &c,
                  "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                  "\"image_url\",\"image_url\":{\"url\":\"http://i\"}}]}]}",
                  &e) == LM_ENOTSUP &&
                e.http_status == 400,
            "text only refuses an image");
    lmo_req_close(st, &c);
    lmo_fini(st);
    const char *bad[] = {"base_url", "ftp://x", NULL};
    T_CHECK(open_inst(&plain, bad) == NULL, "base_url must be http(s)");
    T_END();
}

static void test_response(void)
{
    static const lms_rename fin[] = {{"normal", "stop"}, {NULL, NULL}};
    static const lmo_quirks clean = {.flags = LMO_CLEAN, .finish = fin};
    static const lmo_quirks plain = {0};
    const char *resp = "{\"id\":\"x\",\"extra\":1,\"choices\":[{\"index\":0,\"message\":{\"role\":"
                       "\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":"
                       "\"f\",\"arguments\":{\"a\":1}}}]},\"finish_reason\":\"normal\"}],"
                       "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}";
    lm_call c;
    lm_err e;
    json_t *out = NULL;
    lm_usage u = LM_USAGE_UNKNOWN;
    void *st = open_inst(&plain, KV);
    T_BEGIN("lmoai_response_forward_verbatim");
    build(st, &c, "{\"model\":\"m\",\"messages\":[]}", &e);
    T_CHECK(lmo_parse_response(st, &c, 200, lm_cstr(resp), &out, &u, &e) == LM_OK, "rc");
    T_CHECK(out == NULL, "no quirk: the upstream's bytes go out as they are (the kernel's job)");
    T_CHECK(u.prompt == 3 && u.completion == 2 && u.total == 5, "usage read");
    json_decref(out);
    u = (lm_usage)LM_USAGE_UNKNOWN;
    T_CHECK(lmo_parse_response(st, &c, 200, lm_cstr("{\"choices\":[]}"), &out, &u, &e) == LM_OK &&
                u.prompt == -1 && u.total == -1,
            "a missing usage is unknown, not 0");
    json_decref(out);
    T_CHECK(lmo_parse_response(st, &c, 200, lm_cstr("{}"), &out, &u, &e) == LM_EUPSTREAM &&
                e.http_status == 502,
            "no choices: 502");
    lmo_req_close(st, &c);
    lmo_fini(st);
    T_END();

    T_BEGIN("lmoai_response_clean");
    st = open_inst(&clean, KV);
    build(st, &c, "{\"model\":\"m\",\"messages\":[]}", &e);
    T_CHECK(lmo_parse_response(st, &c, 200, lm_cstr(resp), &out, &u, &e) == LM_OK, "rc");
    json_t *c0 = json_array_get(json_object_get(out, "choices"), 0);
    json_t *tc = json_array_get(json_object_get(json_object_get(c0, "message"), "tool_calls"), 0);
    T_CHECK(json_object_get(out, "extra") == NULL, "extras dropped");
    T_STREQ(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    T_STREQ(json_string_value(json_object_get(tc, "id")), "call_r1_0");
    T_STREQ(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
            "{\"a\":1}");
    T_CHECK(json_is_null(json_object_get(json_object_get(c0, "message"), "content")),
            "empty content with tool calls is null");
    json_decref(out);
    lmo_req_close(st, &c);
    build(st, &c, "{\"model\":\"m\",\"input\":[\"a\"]}", &e);
    const char *emb = "{\"data\":[{\"embedding\":[0.5]}],\"usage\":{\"total_tokens\":4}}";
    T_CHECK(lmo_parse_response(st, &c, 200, lm_cstr(emb), &out, &u, &e) == LM_OK, "embed");
    T_CHECK(u.prompt == 4 && u.completion == 0 && u.total == 4, "embed usage");
    T_CHECK(json_object_get(out, "usage") == NULL, "no usage in the list");
    json_decref(out);
    lmo_req_close(st, &c);
    lmo_fini(st);
    T_END();
}

static int event(void *st, lm_call *c, const char *data, lm_err *e)
{
    lm_event ev = {.data = lm_cstr(data)};
    return lmo_parse_event(st, c, &ev, NULL, e);
}

static void test_stream(void)
{
    static const lmo_code codes[] = {{7, 7, 400, "content_filter", "content_filter"},
                                     {0, 0, 0, NULL, NULL}};
    static const lmo_quirks clean = {
        .flags = LMO_CLEAN, .code_key = "code", .msg_key = "message", .codes = codes};
    lm_call c;
    lm_err e;
    void *st = open_inst(&clean, KV);
    T_BEGIN("lmoai_stream_usage_and_tool_fragments");
    chunks = json_array();
    nusage = 0;
    build(st, &c, "{\"model\":\"m\",\"messages\":[],\"stream\":true}", &e);
    event(st, &c,
          "{\"x\":1,\"choices\":[{\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,"
          "\"function\":{\"name\":\"f\"}}]}}]}",
          &e);
    event(st, &c,
          "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"again\",\"function\":"
          "{\"arguments\":\"{}\"}}]}}]}",
          &e);
    T_CHECK(event(st, &c, "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"total_tokens\":3}}",
                  &e) == LM_OK,
            "usage-only");
    T_CHECK(event(st, &c, "[DONE]", &e) == LM_DONE, "done");
    char *s = json_dumps(chunks, JSON_COMPACT);
    T_STREQ(s, "[{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":"
               "\"call_r1_0\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
               "\"\"}}]},\"finish_reason\":null}]},{\"choices\":[{\"index\":0,\"delta\":{\"tool_"
               "calls\":[{\"index\":0,"
               "\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}]");
    free(s);
    T_CHECK(nusage == 1 && got_usage.prompt == 1 && got_usage.total == 3, "emit_usage once");
    lmo_req_close(st, &c);
    json_decref(chunks);
    T_END();

    T_BEGIN("lmoai_stream_code_finish_after_content");
    chunks = json_array();
    build(st, &c, "{\"model\":\"m\",\"messages\":[],\"stream\":true}", &e);
    T_CHECK(event(st, &c, "{\"code\":7,\"message\":\"no\"}", &e) == LM_EUPSTREAM &&
                e.http_status == 400,
            "before content: an error");
    event(st, &c, "{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}", &e);
    T_CHECK(event(st, &c, "{\"code\":7,\"message\":\"no\"}", &e) == LM_DONE, "after: finish");
    s = json_dumps(json_array_get(chunks, 1), JSON_COMPACT);
    T_CHECK(s && strstr(s, "\"finish_reason\":\"content_filter\""), "%s", s);
    free(s);
    T_CHECK(event(st, &c, "{\"choices\":[", &e) == LM_EUPSTREAM && e.http_status == 502,
            "malformed");
    lmo_req_close(st, &c);
    json_decref(chunks);
    lmo_fini(st);
    T_END();
}

static void test_errors(void)
{
    static const lmo_code codes[] = {{10, 19, 429, NULL, NULL}, {0, 0, 0, NULL, NULL}};
    static const lmo_quirks q = {
        .code_key = "error_code", .msg_key = "error_msg", .codes = codes, .other_status = 500};
    lm_err e;
    void *st = open_inst(&q, KV);
    T_BEGIN("lmoai_map_error");
    T_CHECK(lmo_map_error(st, NULL, 401,
                          lm_cstr("{\"error\":{\"message\":\"bad sk-secret-1\",\"code\":5}}"),
                          &e) == LM_OK,
            "OpenAI body");
    T_CHECK(e.http_status == 401 && strcmp(e.type, "authentication_error") == 0, "%d %s",
            e.http_status, e.type);
    T_STREQ(e.code, "5");
    T_STREQ(e.msg, "bad ***");
    T_CHECK(lmo_map_error(st, NULL, 200, lm_cstr("{\"error_code\":12,\"error_msg\":\"slow\"}"),
                          &e) == LM_OK &&
                e.http_status == 429,
            "code table: %d", e.http_status);
    T_STREQ(e.code, "12");
    T_CHECK(lmo_map_error(st, NULL, 200, lm_cstr("{\"error_code\":99}"), &e) == LM_OK &&
                e.http_status == 500,
            "other code");
    T_CHECK(lmo_map_error(st, NULL, 503, lm_cstr("<html>"), &e) == LM_DECLINED, "not JSON");
    T_CHECK(lmo_map_error(st, NULL, 500, lm_cstr("{\"error\":{\"message\":\"x\",\"type\":\"t\"}}"),
                          &e) == LM_OK &&
                e.http_status == 502 && strcmp(e.type, "api_error") == 0,
            "an upstream 5xx is a 502 as the kernel maps it: %d %s", e.http_status, e.type);
    T_STREQ(e.code, "upstream_error");
    lmo_fini(st);
    T_END();
}

int main(void)
{
    test_request();
    test_response();
    test_stream();
    test_errors();
    T_EXIT();
}
