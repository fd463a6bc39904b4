/* qwen plugin (DashScope native) through the test kit: golden cases of
 * docs/wire-formats.md 9.1, stream splits, tool calls, vision, embeddings, quirks and
 * bad paths. Run from the repo root. */
#define PT_PLUGIN "qwen"
#include "plugin_t.h"

#include <math.h>
#include <stdlib.h>

#define SO pt_so_path()

static const char *CFG[] = {"base_url", "http://mock", "api_key", "sk-test", NULL};

static const char *G1 = "{\"model\":\"qwen-plus\",\"messages\":[{\"role\":\"system\",\"content\":"
                        "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hi\"}],"
                        "\"max_tokens\":16,\"temperature\":0.2}";
static const char *G2 = "{\"model\":\"qwen-plus\",\"messages\":[{\"role\":\"system\",\"content\":"
                        "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hi\"}],"
                        "\"max_tokens\":16,\"temperature\":0.2,\"stream\":true,"
                        "\"stream_options\":{\"include_usage\":true}}";
#define TOOLS                                                                                      \
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Get "        \
    "weather\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"            \
    "\"string\"}},\"required\":[\"city\"]}}}]"
static const char *G3 = "{\"model\":\"qwen-plus\",\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"Weather in Paris?\"}],\"tools\":" TOOLS ",\"tool_choice\":\"auto\"}";
static const char *G3S =
    "{\"model\":\"qwen-plus\",\"messages\":[{\"role\":\"user\",\"content\":"
    "\"Weather in Paris?\"}],\"tools\":" TOOLS ",\"tool_choice\":\"auto\",\"stream\":true}";

static const char *G1_RESP =
    "{\"output\":{\"choices\":[{\"finish_reason\":\"stop\",\"message\":{\"role\":\"assistant\","
    "\"content\":\"Hi!\"}}]},\"usage\":{\"input_tokens\":12,\"output_tokens\":2,"
    "\"total_tokens\":14},\"request_id\":\"req-g1\"}";

static const char *G2_STREAM =
    "id:1\nevent:result\n:HTTP_STATUS/200\n"
    "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"Hi\",\"role\":\"assistant\"},"
    "\"finish_reason\":\"null\"}]},\"usage\":{\"input_tokens\":12,\"output_tokens\":1,"
    "\"total_tokens\":13},\"request_id\":\"req-g2\"}\n\n"
    "id:2\nevent:result\n:HTTP_STATUS/200\n"
    "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"!\",\"role\":\"assistant\"},"
    "\"finish_reason\":\"stop\"}]},\"usage\":{\"input_tokens\":12,\"output_tokens\":2,"
    "\"total_tokens\":14},\"request_id\":\"req-g2\"}\n\n";

static const char *G3_RESP =
    "{\"output\":{\"choices\":[{\"finish_reason\":\"tool_calls\",\"message\":{\"role\":"
    "\"assistant\",\"content\":\"\",\"tool_calls\":[{\"index\":0,\"id\":\"call_abc\",\"type\":"
    "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": "
    "\\\"Paris\\\"}\"}}]}}]},\"usage\":{\"input_tokens\":30,\"output_tokens\":10,"
    "\"total_tokens\":40},\"request_id\":\"req-g3\"}";

/* ------------------------------------------------------------------ helpers */

/* lmt_stream_every_split, and the kit's conformance check on the result
 * (one role first, one finish per choice, ordered tool calls, no usage). */
static size_t every_split(lmt_plugin *p, const char *canon, const char *body, lmt_result *r)
{
    char why[256] = "";
    size_t bad = lmt_stream_every_split(p, canon, body, r);
    T_CHECK(lmt_stream_conforms(r, why, sizeof why), "stream does not conform: %s", why);
    return bad;
}

/* ------------------------------------------------------------------ golden */

static void test_g1(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *want, *params;

    T_BEGIN("qwen_g1_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.method, "POST");
    T_STREQ(u.url, "http://mock/api/v1/services/aigc/text-generation/generation");
    T_STREQ(lmt_header(&u, "Authorization"), "Bearer sk-test");
    T_CHECK(lmt_header(&u, "X-DashScope-SSE") == NULL, "no SSE header without stream");
    b = pt_jparse(u.body);
    T_CHECK(b != NULL, "body is JSON");
    T_STREQ(json_string_value(json_object_get(b, "model")), "qwen-plus");
    want = pt_jparse("[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                     "{\"role\":\"user\",\"content\":\"Say hi\"}]");
    T_CHECK(json_equal(json_object_get(json_object_get(b, "input"), "messages"), want),
            "input.messages");
    json_decref(want);
    T_CHECK(json_object_get(b, "messages") == NULL, "no top-level messages");
    params = json_object_get(b, "parameters");
    T_STREQ(json_string_value(json_object_get(params, "result_format")), "message");
    T_CHECK(json_integer_value(json_object_get(params, "max_tokens")) == 16, "max_tokens");
    T_CHECK(pt_near(json_number_value(json_object_get(params, "temperature")), 0.2), "temperature");
    T_CHECK(json_object_get(params, "incremental_output") == NULL, "no incremental_output");
    T_CHECK(json_object_get(b, "stream") == NULL && json_object_get(params, "stream") == NULL,
            "no stream flag");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("qwen_g1_response");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G1_RESP, strlen(G1_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d (%s)", r.rc, r.err.msg);
    b = pt_jparse(r.json);
    {
        json_t *c0 = json_array_get(json_object_get(b, "choices"), 0);
        json_t *m = json_object_get(c0, "message");
        json_t *us = json_object_get(b, "usage");
        T_STREQ(json_string_value(json_object_get(b, "object")), "chat.completion");
        T_STREQ(json_string_value(json_object_get(b, "id")), "chatcmpl-req-g1");
        T_STREQ(json_string_value(json_object_get(b, "model")), "qwen-plus");
        T_STREQ(json_string_value(json_object_get(m, "role")), "assistant");
        T_STREQ(json_string_value(json_object_get(m, "content")), "Hi!");
        T_STREQ(json_string_value(json_object_get(c0, "finish_reason")), "stop");
        T_CHECK(json_integer_value(json_object_get(c0, "index")) == 0, "index 0");
        /* The kit runs the kernel's response path: "usage" is the kernel's, from r.usage. */
        T_CHECK(json_integer_value(json_object_get(us, "prompt_tokens")) == 12 &&
                    json_integer_value(json_object_get(us, "completion_tokens")) == 2 &&
                    json_integer_value(json_object_get(us, "total_tokens")) == 14,
                "body usage 12/2/14");
    }
    T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage %lld/%lld/%lld", (long long)r.usage.prompt,
            (long long)r.usage.completion, (long long)r.usage.total);
    json_decref(b);
    lmt_result_clear(&r);
    T_END();
}

static void test_g2(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    pt_summary s;
    json_t *b;
    size_t bad;

    T_BEGIN("qwen_g2_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G2, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.url, "http://mock/api/v1/services/aigc/text-generation/generation");
    T_STREQ(lmt_header(&u, "X-DashScope-SSE"), "enable");
    T_STREQ(lmt_header(&u, "Accept"), "text/event-stream");
    b = pt_jparse(u.body);
    T_CHECK(json_is_true(json_object_get(json_object_get(b, "parameters"), "incremental_output")),
            "incremental_output:true");
    T_CHECK(json_object_get(b, "stream_options") == NULL &&
                json_object_get(json_object_get(b, "parameters"), "stream_options") == NULL,
            "stream_options not forwarded to the native API");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("qwen_g2_stream_every_split");
    bad = every_split(p, G2, G2_STREAM, &r);
    T_CHECK(bad == 0, "split %zu gives a different result", bad);
    T_CHECK(r.rc == LM_DONE && r.done, "rc %d done %d (%s)", r.rc, r.done, r.err.msg);
    pt_summarize(r.json, &s);
    T_STREQ(s.content, "Hi!");
    T_CHECK(s.ncontent == 2, "two content deltas, got %d", s.ncontent);
    T_STREQ(s.finish, "stop");
    T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage (running total, last wins) %lld/%lld/%lld",
            (long long)r.usage.prompt, (long long)r.usage.completion, (long long)r.usage.total);
    {
        json_t *arr = pt_jparse(r.json);
        json_t *first = json_array_get(arr, 0);
        json_t *c0 = json_array_get(json_object_get(first, "choices"), 0);
        T_STREQ(json_string_value(json_object_get(first, "object")), "chat.completion.chunk");
        T_STREQ(json_string_value(json_object_get(json_object_get(c0, "delta"), "content")), "Hi");
        T_CHECK(json_is_null(json_object_get(c0, "finish_reason")),
                "\"null\" finish_reason mid-stream becomes JSON null");
        json_decref(arr);
    }
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("qwen_g2_stream_crlf_every_split");
    {
        /* same events with CRLF line ends and a space after the colons */
        const char *crlf =
            "id: 1\r\nevent: result\r\n:HTTP_STATUS/200\r\n"
            "data: {\"output\":{\"choices\":[{\"message\":{\"content\":\"Hi\",\"role\":"
            "\"assistant\"},\"finish_reason\":\"null\"}]},\"usage\":{\"input_tokens\":12,"
            "\"output_tokens\":1,\"total_tokens\":13},\"request_id\":\"req-g2\"}\r\n\r\n"
            "id: 2\r\nevent: result\r\n:HTTP_STATUS/200\r\n"
            "data: {\"output\":{\"choices\":[{\"message\":{\"content\":\"!\",\"role\":"
            "\"assistant\"},\"finish_reason\":\"stop\"}]},\"usage\":{\"input_tokens\":12,"
            "\"output_tokens\":2,\"total_tokens\":14},\"request_id\":\"req-g2\"}\r\n\r\n";
        bad = every_split(p, G2, crlf, &r);
        T_CHECK(bad == 0, "split %zu gives a different result", bad);
        pt_summarize(r.json, &s);
        T_STREQ(s.content, "Hi!");
        T_STREQ(s.finish, "stop");
        T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage");
        lmt_result_clear(&r);
    }
    T_END();
}

static void test_g3(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *tools;

    T_BEGIN("qwen_g3_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G3, &u, &e) == LM_OK, "build: %s", e.msg);
    b = pt_jparse(u.body);
    tools = pt_jparse(TOOLS);
    T_CHECK(json_equal(json_object_get(json_object_get(b, "parameters"), "tools"), tools),
            "parameters.tools equals the inbound tools");
    T_STREQ(json_string_value(json_object_get(json_object_get(b, "parameters"), "tool_choice")),
            "auto");
    json_decref(tools);
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("qwen_g3_response");
    lmt_build(p, LM_OP_CHAT, G3, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G3_RESP, strlen(G3_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d (%s)", r.rc, r.err.msg);
    b = pt_jparse(r.json);
    {
        json_t *c0 = json_array_get(json_object_get(b, "choices"), 0);
        json_t *m = json_object_get(c0, "message");
        json_t *tc = json_array_get(json_object_get(m, "tool_calls"), 0);
        json_t *fn = json_object_get(tc, "function");
        T_STREQ(json_string_value(json_object_get(tc, "id")), "call_abc");
        T_STREQ(json_string_value(json_object_get(tc, "type")), "function");
        T_STREQ(json_string_value(json_object_get(fn, "name")), "get_weather");
        T_CHECK(pt_args_are_paris(json_string_value(json_object_get(fn, "arguments"))),
                "arguments parse to {city:Paris}");
        T_CHECK(json_object_get(tc, "index") == NULL, "no index in a non-stream tool call");
        T_CHECK(json_is_null(json_object_get(m, "content")), "content null with tool calls");
        T_STREQ(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    }
    T_CHECK(pt_usage_is(&r.usage, 30, 10, 40), "usage 30/10/40");
    json_decref(b);
    lmt_result_clear(&r);
    T_END();
}

static void test_error_probe(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    const char *body = "{\"code\":\"InvalidApiKey\",\"message\":\"Invalid API-key provided.\","
                       "\"request_id\":\"req-e\"}";

    T_BEGIN("qwen_error_probe_401");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 401, body, strlen(body), &r);
    T_CHECK(r.rc == LM_EUPSTREAM, "rc %d", r.rc);
    T_CHECK(r.err.http_status == 401, "status %d", r.err.http_status);
    T_STREQ(r.err.type, "authentication_error");
    T_STREQ(r.err.code, "InvalidApiKey");
    T_STREQ(r.err.msg, "Invalid API-key provided.");
    lmt_result_clear(&r);
    T_END();
}

/* ------------------------------------------------------------------ errors */

static void check_status(lmt_plugin *p, int status, const char *body, int want_status,
                         const char *want_type, const char *want_code)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, status, body, strlen(body), &r);
    T_CHECK(r.rc < 0, "HTTP %d: rc %d", status, r.rc);
    T_CHECK(r.err.http_status == want_status, "HTTP %d: mapped to %d, want %d", status,
            r.err.http_status, want_status);
    T_STREQ(r.err.type, want_type);
    if (want_code)
        T_STREQ(r.err.code, want_code);
    lmt_result_clear(&r);
}

static void test_errors(lmt_plugin *p)
{
    T_BEGIN("qwen_errors_by_status");
    check_status(p, 429,
                 "{\"code\":\"Throttling.RateQuota\",\"message\":\"Requests rate limit "
                 "exceeded\",\"request_id\":\"r\"}",
                 429, "rate_limit_error", "Throttling.RateQuota");
    check_status(p, 500, "{\"code\":\"InternalError\",\"message\":\"oops\",\"request_id\":\"r\"}",
                 500, "api_error", "InternalError");
    check_status(p, 403, "{\"code\":\"AccessDenied.Unpurchased\",\"message\":\"no\"}", 403,
                 "permission_error", "AccessDenied.Unpurchased");
    check_status(p, 400, "{\"code\":\"InvalidParameter\",\"message\":\"bad\"}", 400,
                 "invalid_request_error", "InvalidParameter");
    T_END();

    T_BEGIN("qwen_error_data_inspection_is_content_filter");
    check_status(p, 400,
                 "{\"code\":\"DataInspectionFailed\",\"message\":\"Input data may contain "
                 "inappropriate content.\"}",
                 400, "invalid_request_error", "content_filter");
    T_END();

    T_BEGIN("qwen_error_non_json_body_uses_default");
    check_status(p, 502, "<html>bad gateway</html>", 502, "api_error", NULL);
    check_status(p, 401, "", 401, "authentication_error", NULL);
    T_END();

    T_BEGIN("qwen_error_never_echoes_the_key");
    {
        lmt_ureq u;
        lm_err e;
        lmt_result r;
        const char *body = "{\"code\":\"InvalidApiKey\",\"message\":\"key sk-test is invalid\"}";
        lmt_build(p, LM_OP_CHAT, G1, &u, &e);
        lmt_ureq_clear(&u);
        lmt_response(p, 401, body, strlen(body), &r);
        T_CHECK(strstr(r.err.msg, "sk-test") == NULL, "key leaked: %s", r.err.msg);
        T_CHECK(r.err.http_status == 401, "status");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("qwen_200_with_error_body");
    {
        lmt_ureq u;
        lm_err e;
        lmt_result r;
        const char *body =
            "{\"code\":\"Throttling\",\"message\":\"slow down\",\"request_id\":\"x\"}";
        lmt_build(p, LM_OP_CHAT, G1, &u, &e);
        lmt_ureq_clear(&u);
        lmt_response(p, 200, body, strlen(body), &r);
        T_CHECK(r.rc == LM_EUPSTREAM, "rc %d", r.rc);
        T_CHECK(r.err.http_status == 429, "status %d", r.err.http_status);
        T_STREQ(r.err.code, "Throttling");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("qwen_malformed_upstream_json");
    {
        lmt_ureq u;
        lm_err e;
        lmt_result r;
        const char *bodies[] = {"{\"output\":", "[1,2]", "{\"output\":{}}", "", NULL};
        for (int i = 0; bodies[i]; i++) {
            lmt_build(p, LM_OP_CHAT, G1, &u, &e);
            lmt_ureq_clear(&u);
            lmt_response(p, 200, bodies[i], strlen(bodies[i]), &r);
            T_CHECK(r.rc == LM_EUPSTREAM, "body %d: rc %d", i, r.rc);
            T_CHECK(r.err.http_status == 502, "body %d: status %d", i, r.err.http_status);
            T_STREQ(r.err.type, "api_error");
            lmt_result_clear(&r);
        }
    }
    T_END();
}

/* ------------------------------------------------------------------ stream paths */

static void test_stream_paths(lmt_plugin *p)
{
    lmt_result r;
    pt_summary s;
    size_t bad;

    T_BEGIN("qwen_stream_tool_calls_every_split");
    {
        const char *body =
            "id:1\nevent:result\n:HTTP_STATUS/200\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"\",\"role\":\"assistant\","
            "\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":"
            "{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":\"null\"}]},"
            "\"usage\":{\"input_tokens\":30,\"output_tokens\":3,\"total_tokens\":33},"
            "\"request_id\":\"t\"}\n\n"
            "id:2\nevent:result\n:HTTP_STATUS/200\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"\",\"role\":\"assistant\","
            "\"tool_calls\":[{\"index\":0,\"id\":\"\",\"type\":\"function\",\"function\":"
            "{\"arguments\":\"{\\\"city\\\": \"}}]},\"finish_reason\":\"null\"}]},"
            "\"usage\":{\"input_tokens\":30,\"output_tokens\":7,\"total_tokens\":37},"
            "\"request_id\":\"t\"}\n\n"
            "id:3\nevent:result\n:HTTP_STATUS/200\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"\",\"role\":\"assistant\","
            "\"tool_calls\":[{\"index\":0,\"id\":\"\",\"type\":\"function\",\"function\":"
            "{\"name\":\"\",\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":\"stop\"}]},"
            "\"usage\":{\"input_tokens\":30,\"output_tokens\":10,\"total_tokens\":40},"
            "\"request_id\":\"t\"}\n\n";
        bad = every_split(p, G3S, body, &r);
        T_CHECK(bad == 0, "split %zu gives a different result", bad);
        T_CHECK(r.rc == LM_DONE, "rc %d (%s)", r.rc, r.err.msg);
        pt_summarize(r.json, &s);
        T_CHECK(s.tc_heads == 1 && s.tc_names == 1, "id/name only on the first fragment (%d/%d)",
                s.tc_heads, s.tc_names);
        T_STREQ(s.tc_id, "call_1");
        T_STREQ(s.tc_name, "get_weather");
        T_CHECK(pt_args_are_paris(s.args), "arguments concatenate to {city:Paris}: %s", s.args);
        T_STREQ(s.finish, "tool_calls"); /* upstream said "stop" after tool calls */
        T_CHECK(pt_usage_is(&r.usage, 30, 10, 40), "usage 30/10/40");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("qwen_stream_error_event_midway_every_split");
    {
        const char *body =
            "id:1\nevent:result\n:HTTP_STATUS/200\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"Hi\",\"role\":"
            "\"assistant\"},\"finish_reason\":\"null\"}]},\"usage\":{\"input_tokens\":12,"
            "\"output_tokens\":1,\"total_tokens\":13},\"request_id\":\"e\"}\n\n"
            "id:2\nevent:error\n:HTTP_STATUS/400\n"
            "data:{\"code\":\"InvalidParameter\",\"message\":\"Range of input length should be "
            "[1, 6000]\",\"request_id\":\"e\"}\n\n";
        bad = every_split(p, G2, body, &r);
        T_CHECK(bad == 0, "split %zu gives a different result", bad);
        T_CHECK(r.rc == LM_EUPSTREAM, "rc %d", r.rc);
        T_CHECK(r.err.http_status == 400, "status %d", r.err.http_status);
        T_STREQ(r.err.type, "invalid_request_error");
        T_STREQ(r.err.code, "InvalidParameter");
        T_STREQ(r.err.msg, "Range of input length should be [1, 6000]");
        pt_summarize(r.json, &s);
        T_STREQ(s.content, "Hi");
        T_CHECK(!r.done, "not done");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("qwen_stream_early_error_event");
    {
        const char *body = "id:1\nevent:error\n:HTTP_STATUS/401\n"
                           "data:{\"code\":\"InvalidApiKey\",\"message\":\"Invalid API-key "
                           "provided.\",\"request_id\":\"e\"}\n\n";
        bad = every_split(p, G2, body, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 401, "rc %d status %d", r.rc,
                r.err.http_status);
        T_STREQ(r.err.type, "authentication_error");
        T_STREQ(r.json, "[]");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("qwen_stream_inspection_after_text_is_content_filter");
    {
        const char *body =
            "id:1\nevent:result\n:HTTP_STATUS/200\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"Hi\",\"role\":"
            "\"assistant\"},\"finish_reason\":\"null\"}]},\"usage\":{\"input_tokens\":12,"
            "\"output_tokens\":1,\"total_tokens\":13},\"request_id\":\"e\"}\n\n"
            "id:2\nevent:error\n:HTTP_STATUS/400\n"
            "data:{\"code\":\"DataInspectionFailed\",\"message\":\"Output data may contain "
            "inappropriate content.\",\"request_id\":\"e\"}\n\n";
        bad = every_split(p, G2, body, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_DONE, "rc %d", r.rc);
        pt_summarize(r.json, &s);
        T_STREQ(s.content, "Hi");
        T_STREQ(s.finish, "content_filter");
        T_CHECK(pt_usage_is(&r.usage, 12, 1, 13), "usage so far");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("qwen_stream_malformed_event");
    {
        const char *body = "id:1\nevent:result\ndata:{\"output\":{\"choices\":[\n\n";
        bad = every_split(p, G2, body, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "rc %d status %d", r.rc,
                r.err.http_status);
        T_STREQ(r.err.type, "api_error");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("qwen_stream_empty_last_event_and_reasoning");
    {
        const char *body =
            "id:1\nevent:result\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"\",\"reasoning_content\":"
            "\"think\",\"role\":\"assistant\"},\"finish_reason\":\"null\"}]},\"usage\":"
            "{\"input_tokens\":5,\"output_tokens\":1,\"output_tokens_details\":{\"reasoning_"
            "tokens\":1}},"
            "\"request_id\":\"r\"}\n\n"
            "id:2\nevent:result\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"ok\",\"role\":"
            "\"assistant\"},\"finish_reason\":\"null\"}]},\"usage\":{\"input_tokens\":5,"
            "\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":1}},\"request_"
            "id\":\"r\"}\n\n"
            "id:3\nevent:result\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":\"\",\"role\":"
            "\"assistant\"},\"finish_reason\":\"length\"}]},\"usage\":{\"input_tokens\":5,"
            "\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":1}},\"request_"
            "id\":\"r\"}\n\n";
        bad = every_split(p, G2, body, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        pt_summarize(r.json, &s);
        T_STREQ(s.content, "ok");
        T_STREQ(s.finish, "length");
        T_CHECK(s.nchunks == 3, "reasoning, content, finish chunks: %d", s.nchunks);
        T_CHECK(strstr(r.json, "\"reasoning_content\":\"think\"") != NULL, "reasoning delta");
        /* total_tokens absent upstream: computed */
        T_CHECK(pt_usage_is(&r.usage, 5, 2, 7) && r.usage.reasoning == 1, "usage 5/2/7 r1");
        lmt_result_clear(&r);
    }
    T_END();
}

/* ------------------------------------------------------------------ requests */

static void test_params(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    json_t *b, *pa;

    T_BEGIN("qwen_request_parameter_map");
    {
        const char *canon =
            "{\"model\":\"qwen-max\",\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":"
            "\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
            "[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
            "\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}],"
            "\"max_completion_tokens\":99,\"max_tokens\":5,\"temperature\":2,\"top_p\":1,"
            "\"frequency_penalty\":0.5,\"presence_penalty\":0.1,\"seed\":7,\"stop\":[\"END\"],"
            "\"user\":\"u1\",\"n\":1,\"top_k\":20,\"enable_search\":true,\"logprobs\":true,"
            "\"response_format\":{\"type\":\"json_object\"},\"parallel_tool_calls\":false}";
        T_CHECK(lmt_build(p, LM_OP_CHAT, canon, &u, &e) == LM_OK, "build: %s", e.msg);
        b = pt_jparse(u.body);
        pa = json_object_get(b, "parameters");
        T_CHECK(json_integer_value(json_object_get(pa, "max_tokens")) == 99,
                "max_completion_tokens wins");
        /* The kernel (here the kit) clamps into the declared param_ranges. */
        T_CHECK(pt_near(json_number_value(json_object_get(pa, "temperature")), 1.99),
                "temperature 2 -> 1.99 (DashScope: [0, 2))");
        T_CHECK(pt_near(json_number_value(json_object_get(pa, "top_p")), 0.9999),
                "top_p 1 -> 0.9999 (DashScope: (0, 1))");
        T_CHECK(json_object_get(pa, "frequency_penalty") == NULL, "frequency_penalty dropped");
        T_CHECK(json_object_get(pa, "user") == NULL && json_object_get(pa, "n") == NULL &&
                    json_object_get(pa, "logprobs") == NULL,
                "user/n/logprobs dropped");
        T_CHECK(pt_near(json_number_value(json_object_get(pa, "presence_penalty")), 0.1),
                "presence");
        T_CHECK(json_integer_value(json_object_get(pa, "seed")) == 7, "seed");
        T_CHECK(json_integer_value(json_object_get(pa, "top_k")) == 20, "top_k passes");
        T_CHECK(json_is_true(json_object_get(pa, "enable_search")), "enable_search passes");
        T_CHECK(json_is_false(json_object_get(pa, "parallel_tool_calls")), "parallel_tool_calls");
        T_STREQ(json_string_value(json_object_get(json_object_get(pa, "response_format"), "type")),
                "json_object");
        T_STREQ(json_string_value(json_array_get(json_object_get(pa, "stop"), 0)), "END");
        {
            json_t *ms = json_object_get(json_object_get(b, "input"), "messages");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 0), "role")), "system");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 1), "content")), "a\nb");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 2), "content")), "");
            T_CHECK(json_is_array(json_object_get(json_array_get(ms, 2), "tool_calls")),
                    "assistant tool_calls kept");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 3), "tool_call_id")),
                    "c1");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 3), "role")), "tool");
        }
        json_decref(b);
        lmt_ureq_clear(&u);
    }
    T_END();

    /* n, missing messages, numbers and roles are the kernel's checks now. */
    T_BEGIN("qwen_request_rejects_what_dashscope_cannot_take");
    {
        const char *bad[] = {
            "{\"model\":\"qwen-plus\",\"messages\":[{\"role\":\"function\",\"content\":\"x\"}]}",
            "{\"model\":\"qwen-plus\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
            "\"input_audio\",\"input_audio\":{\"data\":\"x\",\"format\":\"wav\"}}]}]}",
            "{\"model\":\"qwen-plus\",\"messages\":[{\"role\":\"user\",\"content\":42}]}", NULL};
        for (int i = 0; bad[i]; i++) {
            int rc = lmt_build(p, LM_OP_CHAT, bad[i], &u, &e);
            T_CHECK(rc == LM_EINVAL || rc == LM_ENOTSUP, "case %d: rc %d", i, rc);
            T_CHECK(e.http_status == 400, "case %d: status %d", i, e.http_status);
            T_STREQ(e.type, "invalid_request_error");
            lmt_ureq_clear(&u);
        }
    }
    T_END();

    T_BEGIN("qwen_request_workspace_and_base_url_forms");
    {
        const char *cfg[] = {"base_url",  "https://dashscope-intl.aliyuncs.com/api/v1/",
                             "api_key",   "sk-x",
                             "workspace", "ws-1",
                             NULL};
        lmt_plugin *q = pt_load(cfg);
        T_CHECK(q != NULL, "load");
        if (q) {
            T_CHECK(lmt_build(q, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build");
            T_STREQ(u.url, "https://dashscope-intl.aliyuncs.com/api/v1/services/aigc/"
                           "text-generation/generation");
            T_STREQ(lmt_header(&u, "X-DashScope-WorkSpace"), "ws-1");
            T_STREQ(lmt_header(&u, "Authorization"), "Bearer sk-x");
            lmt_ureq_clear(&u);
            lmt_unload(q);
        }
    }
    T_END();

    T_BEGIN("qwen_default_base_url_and_required_key");
    {
        const char *cfg1[] = {"api_key", "sk-x", NULL};
        const char *cfg2[] = {"base_url", "http://mock", NULL};
        char err[512] = "";
        lmt_plugin *q = pt_load(cfg1);
        T_CHECK(q != NULL, "load with defaults");
        if (q) {
            lmt_build(q, LM_OP_CHAT, G1, &u, &e);
            T_STREQ(u.url, "https://dashscope.aliyuncs.com/api/v1/services/aigc/"
                           "text-generation/generation");
            lmt_ureq_clear(&u);
            lmt_unload(q);
        }
        q = lmt_load(SO, cfg2, err, sizeof err);
        T_CHECK(q == NULL, "a channel without api_key is refused");
        T_CHECK(strstr(err, "api_key") != NULL, "message names api_key: %s", err);
        lmt_unload(q);
    }
    T_END();
}

static void test_vision(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *want;

    T_BEGIN("qwen_vision_request_uses_multimodal_endpoint");
    {
        const char *canon =
            "{\"model\":\"qwen-vl-plus\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
            "\"https://img/x.png\",\"detail\":\"auto\"}},{\"type\":\"text\",\"text\":\"what is "
            "this?\"}]}],\"max_tokens\":50}";
        T_CHECK(lmt_build(p, LM_OP_CHAT, canon, &u, &e) == LM_OK, "build: %s", e.msg);
        T_STREQ(u.url, "http://mock/api/v1/services/aigc/multimodal-generation/generation");
        b = pt_jparse(u.body);
        want = pt_jparse("[{\"role\":\"system\",\"content\":[{\"text\":\"S\"}]},{\"role\":\"user\","
                         "\"content\":[{\"image\":\"https://img/x.png\"},{\"text\":\"what is "
                         "this?\"}]}]");
        T_CHECK(json_equal(json_object_get(json_object_get(b, "input"), "messages"), want),
                "multimodal content shape");
        json_decref(want);
        json_decref(b);
        lmt_ureq_clear(&u);
    }
    T_END();

    T_BEGIN("qwen_vision_image_part_switches_endpoint");
    {
        const char *canon =
            "{\"model\":\"qwen-omni-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
            "\"image_url\",\"image_url\":\"data:image/png;base64,AAAA\"}]}]}";
        T_CHECK(lmt_build(p, LM_OP_CHAT, canon, &u, &e) == LM_OK, "build: %s", e.msg);
        T_STREQ(u.url, "http://mock/api/v1/services/aigc/multimodal-generation/generation");
        b = pt_jparse(u.body);
        T_STREQ(
            json_string_value(json_object_get(
                json_array_get(
                    json_object_get(
                        json_array_get(json_object_get(json_object_get(b, "input"), "messages"), 0),
                        "content"),
                    0),
                "image")),
            "data:image/png;base64,AAAA");
        json_decref(b);
        lmt_ureq_clear(&u);
    }
    T_END();

    T_BEGIN("qwen_vision_response_list_content_joined");
    {
        const char *canon = "{\"model\":\"qwen-vl-max\",\"messages\":[{\"role\":\"user\","
                            "\"content\":\"hi\"}]}";
        const char *resp =
            "{\"output\":{\"choices\":[{\"finish_reason\":\"stop\",\"message\":{\"role\":"
            "\"assistant\",\"content\":[{\"text\":\"A cat\"},{\"text\":\" on a mat.\"}]}}]},"
            "\"usage\":{\"input_tokens\":1200,\"output_tokens\":5,\"image_tokens\":1100},"
            "\"request_id\":\"v\"}";
        lmt_build(p, LM_OP_CHAT, canon, &u, &e);
        T_STREQ(u.url, "http://mock/api/v1/services/aigc/multimodal-generation/generation");
        b = pt_jparse(u.body);
        want = pt_jparse("[{\"role\":\"user\",\"content\":[{\"text\":\"hi\"}]}]");
        T_CHECK(json_equal(json_object_get(json_object_get(b, "input"), "messages"), want),
                "vl model: text becomes a text item");
        json_decref(want);
        json_decref(b);
        lmt_ureq_clear(&u);
        lmt_response(p, 200, resp, strlen(resp), &r);
        T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
        b = pt_jparse(r.json);
        T_STREQ(json_string_value(json_object_get(
                    json_object_get(json_array_get(json_object_get(b, "choices"), 0), "message"),
                    "content")),
                "A cat on a mat.");
        T_CHECK(pt_usage_is(&r.usage, 1200, 5, 1205), "total computed when absent");
        json_decref(b);
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("qwen_vision_stream_list_content_every_split");
    {
        const char *canon = "{\"model\":\"qwen-vl-max\",\"stream\":true,\"messages\":[{\"role\":"
                            "\"user\",\"content\":\"hi\"}]}";
        const char *body =
            "id:1\nevent:result\n:HTTP_STATUS/200\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":[{\"text\":\"A \"}],"
            "\"role\":\"assistant\"},\"finish_reason\":\"null\"}]},\"usage\":{\"input_tokens\":9,"
            "\"output_tokens\":1},\"request_id\":\"v\"}\n\n"
            "id:2\nevent:result\n:HTTP_STATUS/200\n"
            "data:{\"output\":{\"choices\":[{\"message\":{\"content\":[{\"text\":\"cat\"}],"
            "\"role\":\"assistant\"},\"finish_reason\":\"stop\"}]},\"usage\":{\"input_tokens\":9,"
            "\"output_tokens\":2},\"request_id\":\"v\"}\n\n";
        pt_summary s;
        size_t bad = every_split(p, canon, body, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        pt_summarize(r.json, &s);
        T_STREQ(s.content, "A cat");
        T_STREQ(s.finish, "stop");
        T_CHECK(pt_usage_is(&r.usage, 9, 2, 11), "usage");
        lmt_result_clear(&r);
    }
    T_END();
}

static void test_embed(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *want;
    const char *resp =
        "{\"output\":{\"embeddings\":[{\"text_index\":1,\"embedding\":[0.5,-2]},"
        "{\"text_index\":0,\"embedding\":[1.0,0.25]}]},\"usage\":{\"total_tokens\":3},"
        "\"request_id\":\"emb\"}";

    T_BEGIN("qwen_embed_request");
    T_CHECK(lmt_build(p, LM_OP_EMBED,
                      "{\"model\":\"text-embedding-v3\",\"input\":[\"a\",\"b\"],\"dimensions\":256,"
                      "\"user\":\"u\"}",
                      &u, &e) == LM_OK,
            "build: %s", e.msg);
    T_STREQ(u.url, "http://mock/api/v1/services/embeddings/text-embedding/text-embedding");
    T_STREQ(lmt_header(&u, "Authorization"), "Bearer sk-test");
    b = pt_jparse(u.body);
    want = pt_jparse("{\"model\":\"text-embedding-v3\",\"input\":{\"texts\":[\"a\",\"b\"]},"
                     "\"parameters\":{\"dimension\":256}}");
    T_CHECK(json_equal(b, want), "body %s", u.body);
    json_decref(want);
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("qwen_embed_response_openai_list");
    lmt_build(p, LM_OP_EMBED, "{\"model\":\"text-embedding-v3\",\"input\":[\"a\",\"b\"]}", &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, resp, strlen(resp), &r);
    T_CHECK(r.rc == LM_OK, "rc %d (%s)", r.rc, r.err.msg);
    b = pt_jparse(r.json);
    want =
        pt_jparse("{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                  "\"embedding\":[1.0,0.25]},{\"object\":\"embedding\",\"index\":1,\"embedding\":"
                  "[0.5,-2]}],\"model\":\"text-embedding-v3\",\"usage\":{\"prompt_tokens\":3,"
                  "\"total_tokens\":3}}");
    T_CHECK(json_equal(b, want), "got %s", r.json);
    T_CHECK(pt_usage_is(&r.usage, 3, 0, 3), "usage");
    json_decref(want);
    json_decref(b);
    lmt_result_clear(&r);
    T_END();

    /* The kernel takes encoding_format and encodes the plugin's floats. */
    T_BEGIN("qwen_embed_base64");
    lmt_build(p, LM_OP_EMBED,
              "{\"model\":\"text-embedding-v3\",\"input\":\"a\",\"encoding_format\":\"base64\"}",
              &u, &e);
    b = pt_jparse(u.body);
    T_STREQ(
        json_string_value(json_array_get(json_object_get(json_object_get(b, "input"), "texts"), 0)),
        "a");
    T_CHECK(json_object_get(json_object_get(b, "parameters"), "encoding_format") == NULL,
            "encoding_format not forwarded");
    json_decref(b);
    lmt_ureq_clear(&u);
    {
        const char *r1 = "{\"output\":{\"embeddings\":[{\"text_index\":0,\"embedding\":[1.0,"
                         "-2.0]}]},\"usage\":{\"total_tokens\":1},\"request_id\":\"x\"}";
        lmt_response(p, 200, r1, strlen(r1), &r);
        b = pt_jparse(r.json);
        /* 1.0f = 00 00 80 3f, -2.0f = 00 00 00 c0 (little endian) */
        T_STREQ(json_string_value(
                    json_object_get(json_array_get(json_object_get(b, "data"), 0), "embedding")),
                "AACAPwAAAMA=");
        json_decref(b);
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("qwen_embed_bad_requests_and_errors");
    {
        /* token arrays: the plugin's 400 (empty or missing input: proto/reqcheck's) */
        const char *bad[] = {"{\"model\":\"m\",\"input\":[[1,2,3]]}", NULL};
        for (int i = 0; bad[i]; i++) {
            T_CHECK(lmt_build(p, LM_OP_EMBED, bad[i], &u, &e) < 0 && e.http_status == 400,
                    "case %d", i);
            lmt_ureq_clear(&u);
        }
        lmt_build(p, LM_OP_EMBED, "{\"model\":\"m\",\"input\":\"a\"}", &u, &e);
        lmt_ureq_clear(&u);
        const char *err = "{\"code\":\"InvalidParameter\",\"message\":\"batch size is invalid, it "
                          "should not be larger than 10.\",\"request_id\":\"x\"}";
        lmt_response(p, 400, err, strlen(err), &r);
        T_CHECK(r.err.http_status == 400, "status");
        T_STREQ(r.err.code, "InvalidParameter");
        lmt_result_clear(&r);
        lmt_response(p, 200, "{\"output\":{}}", 13, &r);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "no embeddings -> 502");
        lmt_result_clear(&r);
    }
    T_END();
}

static void test_table(lmt_plugin *p)
{
    const lm_provider *vt = lmt_provider(p);
    T_BEGIN("qwen_provider_table");
    T_STREQ(vt->name, "qwen");
    T_CHECK(vt->usage_mode == LM_USAGE_CUMULATIVE, "DashScope usage is a running total");
    T_CHECK(vt->framing == LM_FRAME_SSE, "SSE");
    T_CHECK(
        (vt->caps & (LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION)) ==
            (LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION),
        "caps");
    T_CHECK(vt->embed_max_inputs == 10, "DashScope text-embedding takes 10 texts a call");
    T_CHECK(!(vt->flags & LM_PF_MULTI_CHOICE), "no n > 1");
    {
        int seen = 0;
        for (const lm_param_range *r = vt->param_ranges; r && r->name; r++) {
            if (strcmp(r->name, "temperature") == 0)
                seen += r->min == 0 && r->max < 2 && r->max > 1.9;
            if (strcmp(r->name, "top_p") == 0)
                seen += r->min > 0 && r->min < 0.01 && r->max < 1 && r->max > 0.99;
        }
        T_CHECK(seen == 2, "temperature [0,2) and top_p (0,1) declared");
    }
    T_END();
}

/* ABI 1.3: /v1/rerank on DashScope's native text-rerank service. */
static void test_rerank(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    static const char req[] =
        "{\"model\":\"gte-rerank\",\"query\":\"q\",\"documents\":[\"a\",\"b\"],"
        "\"top_n\":1,\"return_documents\":true}";
    static const char ans[] =
        "{\"output\":{\"results\":[{\"index\":1,\"relevance_score\":0.9,\"document\":{\"text\":"
        "\"b\"}}]},\"usage\":{\"total_tokens\":12},\"request_id\":\"r-1\"}";
    T_BEGIN("qwen_rerank_request");
    T_CHECK(lmt_build(p, LM_OP_RERANK, req, &u, &e) == LM_OK, "build: %s", e.msg);
    T_CHECK(u.url && strstr(u.url, "/api/v1/services/rerank/text-rerank/text-rerank") != NULL,
            "url %s", u.url);
    T_CHECK(lmt_json_str(u.body, "input.query", "q") &&
                lmt_json_str(u.body, "input.documents.1", "b") &&
                lmt_json_int(u.body, "parameters.top_n", 1) &&
                lmt_json_str(u.body, "model", "gte-rerank"),
            "native body %s", u.body);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("qwen_rerank_response");
    lmt_build(p, LM_OP_RERANK, req, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, ans, strlen(ans), &r);
    T_CHECK(r.rc == LM_OK, "rc %d (%s)", r.rc, r.err.msg);
    T_CHECK(r.json && lmt_json_int(r.json, "results.0.index", 1) &&
                lmt_json_str(r.json, "results.0.document.text", "b") &&
                lmt_json_str(r.json, "id", "r-1"),
            "results %s", r.json ? r.json : "(null)");
    T_CHECK(r.usage.prompt == 12 && r.usage.total == 12, "usage %lld", (long long)r.usage.total);
    lmt_result_clear(&r);
    lmt_build(p, LM_OP_RERANK, req, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, "{\"output\":{}}", 13, &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "no results: %d", r.rc);
    lmt_result_clear(&r);
    T_END();
}

/* One poll answered with `body` (NUL-terminated). */
static int poll_with(lmt_plugin *p, int status, const char *body, lmt_ureq *q, lmt_result *r)
{
    return lmt_poll(p, status, body, strlen(body), q, r);
}

/* ABI 1.4: /v1/images/generations on DashScope's asynchronous image
 * synthesis: the submit, the size/n mapping, then the polls. */
static void test_images(lmt_plugin *p)
{
    lmt_ureq u, q;
    lm_err e;
    lmt_result r;
    static const char req[] = "{\"model\":\"wanx2.1-t2i-turbo\",\"prompt\":\"a cat\",\"n\":2,"
                              "\"size\":\"1024x768\",\"negative_prompt\":\"dogs\",\"seed\":7}";
    static const char pending[] =
        "{\"output\":{\"task_id\":\"0385dc79-5ff8-4d82-bcb6-5a7a8d2bf111\",\"task_status\":"
        "\"PENDING\"},\"request_id\":\"r-1\"}";
    T_BEGIN("qwen_image_request");
    T_CHECK(lmt_build(p, LM_OP_IMAGES, req, &u, &e) == LM_OK, "build: %s", e.msg);
    T_CHECK(u.url && !strcmp(u.url, "http://mock/api/v1/services/aigc/text2image/image-synthesis"),
            "url %s", u.url);
    T_CHECK(lmt_header(&u, "X-DashScope-Async") &&
                !strcmp(lmt_header(&u, "X-DashScope-Async"), "enable"),
            "async header");
    T_CHECK(lmt_json_str(u.body, "model", "wanx2.1-t2i-turbo") &&
                lmt_json_str(u.body, "input.prompt", "a cat") &&
                lmt_json_str(u.body, "input.negative_prompt", "dogs") &&
                lmt_json_str(u.body, "parameters.size", "1024*768") &&
                lmt_json_int(u.body, "parameters.n", 2) &&
                lmt_json_int(u.body, "parameters.seed", 7),
            "native body %s", u.body);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("qwen_image_size_mapping");
    static const struct {
        const char *size, *want; /* want NULL: a 400 */
    } sizes[] = {{"1024x1024", "1024*1024"},
                 {"720X1280", "720*1280"},
                 {"512*512", "512*512"},
                 {"1024", NULL},
                 {"x1024", NULL},
                 {"1024x", NULL},
                 {"axb", NULL},
                 {"1024x1024x1", NULL},
                 {"0100x100", NULL},
                 {"100x0100", NULL},
                 {"123456x1", NULL},
                 {"10 x 10", NULL}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char body[160];
        snprintf(body, sizeof body, "{\"model\":\"wanx-v1\",\"prompt\":\"p\",\"size\":\"%s\"}",
                 sizes[i].size);
        int rc = lmt_build(p, LM_OP_IMAGES, body, &u, &e);
        if (sizes[i].want)
            T_CHECK(rc == LM_OK && lmt_json_str(u.body, "parameters.size", sizes[i].want),
                    "%s -> %s", sizes[i].size, u.body ? u.body : e.msg);
        else
            T_CHECK(rc < 0 && e.http_status == 400 && strstr(e.msg, "size") != NULL, "%s: %d %s",
                    sizes[i].size, rc, e.msg);
        lmt_ureq_clear(&u);
    }
    /* no size and no n: DashScope's defaults, nothing sent */
    T_CHECK(lmt_build(p, LM_OP_IMAGES, "{\"model\":\"wanx-v1\",\"prompt\":\"p\"}", &u, &e) ==
                    LM_OK &&
                !lmt_json_has(u.body, "parameters.size") && !lmt_json_has(u.body, "parameters.n"),
            "defaults %s", u.body);
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build(p, LM_OP_IMAGES,
                      "{\"model\":\"wanx-v1\",\"prompt\":\"p\",\"response_format\":\"b64_json\"}",
                      &u, &e) < 0 &&
                e.http_status == 400 && !strcmp(e.code, "unsupported"),
            "b64_json: %d %s", e.http_status, e.code);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("qwen_image_task_polled");
    lmt_build(p, LM_OP_IMAGES, req, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, pending, strlen(pending), &r);
    T_CHECK(r.rc == LM_PENDING, "submit rc %d (%s)", r.rc, r.err.msg);
    T_CHECK(lmt_call(p)->task_timeout_ms == 120000, "default timeout %u",
            lmt_call(p)->task_timeout_ms);
    lmt_result_clear(&r);
    poll_with(p, 200,
              "{\"output\":{\"task_id\":\"0385dc79-5ff8-4d82-bcb6-5a7a8d2bf111\","
              "\"task_status\":\"RUNNING\"}}",
              &q, &r);
    T_CHECK(r.rc == LM_PENDING, "running rc %d (%s)", r.rc, r.err.msg);
    T_CHECK(q.method && !strcmp(q.method, "GET") && q.url &&
                !strcmp(q.url, "http://mock/api/v1/tasks/0385dc79-5ff8-4d82-bcb6-5a7a8d2bf111") &&
                lmt_header(&q, "Authorization") &&
                !strcmp(lmt_header(&q, "Authorization"), "Bearer sk-test"),
            "poll %s %s", q.method, q.url);
    lmt_ureq_clear(&q);
    lmt_result_clear(&r);
    poll_with(p, 503, "{\"code\":\"Throttling\"}", &q, &r);
    T_CHECK(r.rc == LM_PENDING, "a busy status endpoint is asked again: %d", r.rc);
    lmt_ureq_clear(&q);
    lmt_result_clear(&r);
    poll_with(
        p, 200,
        "{\"output\":{\"task_status\":\"SUCCEEDED\",\"results\":[{\"url\":\"https://x/1.png\"},"
        "{\"code\":\"DataInspectionFailed\",\"message\":\"no\"},{\"url\":\"https://x/2.png\"}]},"
        "\"usage\":{\"image_count\":2}}",
        &q, &r);
    T_CHECK(r.rc == LM_OK && r.json && lmt_json_str(r.json, "data.0.url", "https://x/1.png") &&
                lmt_json_str(r.json, "data.1.url", "https://x/2.png") &&
                !lmt_json_has(r.json, "data.2") && lmt_json_has(r.json, "created"),
            "answer %d %s", r.rc, r.json ? r.json : r.err.msg);
    lmt_ureq_clear(&q);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("qwen_image_task_failed");
    lmt_build(p, LM_OP_IMAGES, req, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, pending, strlen(pending), &r);
    lmt_result_clear(&r);
    poll_with(p, 200,
              "{\"output\":{\"task_status\":\"FAILED\",\"code\":\"InvalidParameter\","
              "\"message\":\"prompt too long sk-test\"}}",
              &q, &r);
    T_CHECK(r.rc < 0 && r.err.http_status == 502 && !strcmp(r.err.code, "upstream_task_failed") &&
                strstr(r.err.msg, "prompt too long") && strstr(r.err.msg, "FAILED") &&
                !strstr(r.err.msg, "sk-test"),
            "failed: %d %s %s", r.err.http_status, r.err.code, r.err.msg);
    lmt_ureq_clear(&q);
    lmt_result_clear(&r);
    poll_with(p, 200, "{\"output\":{\"task_status\":\"SUCCEEDED\",\"results\":[]}}", &q, &r);
    T_CHECK(r.rc < 0 && r.err.http_status == 502, "no image made: %d", r.rc);
    lmt_ureq_clear(&q);
    lmt_result_clear(&r);
    poll_with(p, 404, "{\"code\":\"NotFound\",\"message\":\"task not found\"}", &q, &r);
    T_CHECK(r.rc < 0 && r.err.http_status == 502 && strstr(r.err.msg, "task not found"),
            "404: %d %s", r.err.http_status, r.err.msg);
    lmt_ureq_clear(&q);
    lmt_result_clear(&r);
    /* a task id that would leave the URL path, or none: not polled */
    lmt_build(p, LM_OP_IMAGES, req, &u, &e);
    lmt_ureq_clear(&u);
    static const char bad_id[] = "{\"output\":{\"task_id\":\"../x\",\"task_status\":\"PENDING\"}}";
    lmt_response(p, 200, bad_id, strlen(bad_id), &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "bad id: %d", r.rc);
    lmt_result_clear(&r);
    lmt_build(p, LM_OP_IMAGES, req, &u, &e);
    lmt_ureq_clear(&u);
    static const char no_id[] = "{\"output\":{\"task_status\":\"PENDING\"}}";
    lmt_response(p, 200, no_id, strlen(no_id), &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "no id: %d", r.rc);
    lmt_result_clear(&r);
    T_END();
}

int main(void)
{
    lmt_plugin *p = pt_load(CFG);
    T_BEGIN("qwen_load");
    T_CHECK(p != NULL, "plugins/qwen.so loads");
    T_END();
    if (p == NULL)
        T_EXIT();
    test_table(p);
    test_g1(p);
    test_g2(p);
    test_g3(p);
    test_error_probe(p);
    test_errors(p);
    test_stream_paths(p);
    test_params(p);
    test_vision(p);
    test_embed(p);
    test_rerank(p);
    test_images(p);
    lmt_unload(p);
    T_EXIT();
}
