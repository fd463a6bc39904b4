/* spark plugin (iFlytek Spark HTTP, OpenAI-compatible) through the test kit:
 * golden cases G1-G3 replayed as Spark-flavoured mocks (docs/wire-formats.md 9,
 * last paragraph: no finish_reason, extra code/sid), stream splits, Spark error
 * codes, quirks and bad paths. Run from the repo root. */
#define PT_PLUGIN "spark"
#include "plugin_t.h"

#include <math.h>
#include <stdlib.h>

static char why[256]; /* lmt_stream_conforms: the first violation */

#define SO pt_so_path()

static const char *CFG[] = {"base_url", "http://mock/v1", "api_key", "pw-test-123", NULL};

static const char *G1 = "{\"model\":\"generalv3.5\",\"messages\":[{\"role\":\"system\",\"content\":"
                        "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hi\"}],"
                        "\"max_tokens\":16,\"temperature\":0.2}";
static const char *G2 = "{\"model\":\"generalv3.5\",\"messages\":[{\"role\":\"system\",\"content\":"
                        "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hi\"}],"
                        "\"max_tokens\":16,\"temperature\":0.2,\"stream\":true,"
                        "\"stream_options\":{\"include_usage\":true}}";
#define TOOLS                                                                                      \
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Get "        \
    "weather\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"            \
    "\"string\"}},\"required\":[\"city\"]}}}]"
static const char *G3 = "{\"model\":\"generalv3.5\",\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"Weather in Paris?\"}],\"tools\":" TOOLS ",\"tool_choice\":\"auto\"}";
static const char *G3S =
    "{\"model\":\"generalv3.5\",\"messages\":[{\"role\":\"user\",\"content\":"
    "\"Weather in Paris?\"}],\"tools\":" TOOLS ",\"tool_choice\":\"auto\",\"stream\":true}";

static const char *G1_RESP =
    "{\"code\":0,\"message\":\"Success\",\"sid\":\"cha000b0003@dx1\",\"choices\":[{\"message\":"
    "{\"role\":\"assistant\",\"content\":\"Hi!\"},\"index\":0}],\"usage\":{\"prompt_tokens\":12,"
    "\"completion_tokens\":2,\"total_tokens\":14}}";

#define CHUNK(body)                                                                                \
    "data:{\"code\":0,\"message\":\"Success\",\"sid\":\"cha000g2@dx1\",\"id\":\"cha000g2@dx1\","   \
    "\"created\":1719546385," body "}\n\n"
static const char *G2_STREAM = CHUNK("\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":"
                                     "\"Hi\"},\"index\":0}]")
    CHUNK("\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"!\"},\"index\":0}],"
          "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}") "data: "
                                                                                          "[DONE]"
                                                                                          "\n\n";

static const char *G3_RESP =
    "{\"code\":0,\"message\":\"Success\",\"sid\":\"cha000g3@dx1\",\"choices\":[{\"message\":{"
    "\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":{\"type\":\"function\",\"function\":"
    "{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\",\"name\":\"get_weather\"}}},\"index\":0}],"
    "\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":10,\"total_tokens\":40}}";

/* ------------------------------------------------------------------ helpers */

/* ------------------------------------------------------------------ golden */

static void check_error(lmt_plugin *p, int status, const char *body, int want_status,
                        const char *want_type, const char *want_code)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, status, body, strlen(body), &r);
    T_CHECK(r.rc == LM_EUPSTREAM, "HTTP %d: rc %d", status, r.rc);
    T_CHECK(r.err.http_status == want_status, "HTTP %d: mapped to %d, want %d", status,
            r.err.http_status, want_status);
    if (want_type)
        T_STREQ(r.err.type, want_type);
    if (want_code)
        T_STREQ(r.err.code, want_code);
    T_CHECK(strstr(r.err.msg, "pw-test-123") == NULL, "key leaked: %s", r.err.msg);
    lmt_result_clear(&r);
}

static json_t *body_of(lmt_plugin *p, const char *canon, int *rc)
{
    lmt_ureq u;
    lm_err e;
    json_t *b;
    *rc = lmt_build(p, LM_OP_CHAT, canon, &u, &e);
    b = pt_jparse(u.body);
    lmt_ureq_clear(&u);
    return b;
}

/* ------------------------------------------------------------------ golden */

static void test_golden(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    pt_summary s;
    json_t *b, *want;
    size_t bad;

    T_BEGIN("spark_g1_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.method, "POST");
    T_STREQ(u.url, "http://mock/v1/chat/completions");
    T_STREQ(lmt_header(&u, "Authorization"), "Bearer pw-test-123");
    b = pt_jparse(u.body);
    T_STREQ(json_string_value(json_object_get(b, "model")), "generalv3.5");
    want = pt_jparse("[{\"role\":\"system\",\"content\":\"You are terse.\"},"
                     "{\"role\":\"user\",\"content\":\"Say hi\"}]");
    T_CHECK(json_equal(json_object_get(b, "messages"), want), "messages");
    json_decref(want);
    T_CHECK(json_integer_value(json_object_get(b, "max_tokens")) == 16, "max_tokens");
    T_CHECK(pt_near(json_number_value(json_object_get(b, "temperature")), 0.2), "temperature");
    T_CHECK(json_object_get(b, "stream") == NULL && json_object_get(b, "stream_options") == NULL,
            "no stream fields");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("spark_g1_response_without_finish_reason");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G1_RESP, strlen(G1_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d (%s)", r.rc, r.err.msg);
    b = pt_jparse(r.json);
    {
        json_t *c0 = json_array_get(json_object_get(b, "choices"), 0);
        T_STREQ(json_string_value(json_object_get(b, "object")), "chat.completion");
        T_STREQ(json_string_value(json_object_get(b, "id")), "chatcmpl-cha000b0003@dx1");
        T_STREQ(json_string_value(json_object_get(json_object_get(c0, "message"), "content")),
                "Hi!");
        T_STREQ(json_string_value(json_object_get(c0, "finish_reason")), "stop");
        T_CHECK(json_object_get(b, "code") == NULL && json_object_get(b, "sid") == NULL,
                "Spark fields dropped");
    }
    T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage 12/2/14");
    json_decref(b);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("spark_g2_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G2, &u, &e) == LM_OK, "build");
    b = pt_jparse(u.body);
    T_CHECK(json_is_true(json_object_get(b, "stream")), "stream");
    T_CHECK(json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage")),
            "include_usage asked upstream");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("spark_g2_stream_every_split");
    bad = lmt_stream_every_split(p, G2, G2_STREAM, &r);
    T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
    T_CHECK(bad == 0, "split %zu gives a different result", bad);
    T_CHECK(r.rc == LM_DONE && r.done, "rc %d done %d (%s)", r.rc, r.done, r.err.msg);
    pt_summarize(r.json, &s);
    T_STREQ(s.content, "Hi!");
    T_CHECK(s.ncontent == 2, "two content deltas");
    T_CHECK(s.nfinish == 1, "one finish chunk (synthesized at [DONE])");
    T_STREQ(s.finish, "stop");
    T_CHECK(s.role_first && s.nrole == 1, "role once (Spark repeats it)");
    T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage 12/2/14");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("spark_g3_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G3, &u, &e) == LM_OK, "build");
    b = pt_jparse(u.body);
    want = pt_jparse(TOOLS);
    T_CHECK(json_equal(json_object_get(b, "tools"), want), "tools");
    T_STREQ(json_string_value(json_object_get(b, "tool_choice")), "auto");
    json_decref(want);
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("spark_g3_response_object_tool_calls");
    lmt_build(p, LM_OP_CHAT, G3, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G3_RESP, strlen(G3_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d (%s)", r.rc, r.err.msg);
    b = pt_jparse(r.json);
    {
        json_t *c0 = json_array_get(json_object_get(b, "choices"), 0);
        json_t *tc =
            json_array_get(json_object_get(json_object_get(c0, "message"), "tool_calls"), 0);
        json_t *fn = json_object_get(tc, "function");
        const char *id = json_string_value(json_object_get(tc, "id"));
        T_CHECK(id && strncmp(id, "call_", 5) == 0 && strlen(id) > 5, "synthesized id %s",
                id ? id : "(null)");
        T_STREQ(json_string_value(json_object_get(tc, "type")), "function");
        T_STREQ(json_string_value(json_object_get(fn, "name")), "get_weather");
        T_CHECK(pt_args_are_paris(json_string_value(json_object_get(fn, "arguments"))),
                "arguments");
        T_STREQ(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    }
    T_CHECK(pt_usage_is(&r.usage, 30, 10, 40), "usage 30/10/40");
    json_decref(b);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("spark_error_probe_code_in_200");
    check_error(p, 200, "{\"code\":11202,\"message\":\"licc failed\",\"sid\":\"cht000e\"}", 429,
                "rate_limit_error", "11202");
    T_END();

    T_BEGIN("spark_error_codes");
    check_error(p, 200, "{\"code\":11200,\"message\":\"auth no license\",\"sid\":\"x\"}", 403,
                "permission_error", "11200");
    check_error(p, 200, "{\"code\":10013,\"message\":\"input moderated\",\"sid\":\"x\"}", 400,
                "invalid_request_error", "content_filter");
    check_error(p, 200, "{\"code\":10907,\"message\":\"token limit\",\"sid\":\"x\"}", 400,
                "invalid_request_error", "10907");
    check_error(p, 200, "{\"code\":10110,\"message\":\"busy\",\"sid\":\"x\"}", 503, "api_error",
                "10110");
    check_error(p, 200, "{\"code\":10005,\"message\":\"engine\",\"sid\":\"x\"}", 503, "api_error",
                "10005");
    check_error(p, 200, "{\"code\":12345,\"message\":\"?\",\"sid\":\"x\"}", 502, "api_error",
                "12345");
    T_END();

    T_BEGIN("spark_errors_401_429_500");
    check_error(p, 401, "{\"message\":\"HMAC signature cannot be verified\"}", 401,
                "authentication_error", NULL);
    check_error(p, 401,
                "{\"error\":{\"message\":\"invalid user pw-test-123\",\"type\":"
                "\"authentication_error\",\"param\":null,\"code\":null}}",
                401, "authentication_error", NULL);
    check_error(p, 429, "{\"code\":11203,\"message\":\"concurrency\",\"sid\":\"x\"}", 429,
                "rate_limit_error", "11203");
    check_error(p, 500,
                "{\"error\":{\"message\":\"internal\",\"type\":\"api_error\",\"param\":"
                "null,\"code\":null}}",
                500, "api_error", NULL);
    check_error(p, 500, "<html>oops</html>", 502, "api_error", NULL);
    T_END();

    T_BEGIN("spark_malformed_upstream_json");
    {
        const char *bodies[] = {"{\"code\":0,\"choices\":", "{\"code\":0}", "null", NULL};
        for (int i = 0; bodies[i]; i++) {
            lmt_build(p, LM_OP_CHAT, G1, &u, &e);
            lmt_ureq_clear(&u);
            lmt_response(p, 200, bodies[i], strlen(bodies[i]), &r);
            T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "body %d: rc %d status %d", i,
                    r.rc, r.err.http_status);
            lmt_result_clear(&r);
        }
    }
    T_END();
}

static void test_streams(lmt_plugin *p)
{
    lmt_result r;
    pt_summary s;
    size_t bad;

    T_BEGIN("spark_stream_code_midway_every_split");
    {
        const char *body =
            CHUNK("\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"index\":0}"
                  "]") "data:{\"code\":10110,\"message\":\"service "
                       "busy\",\"sid\":\"cha000g2@dx1\"}\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 503, "rc %d status %d", r.rc,
                r.err.http_status);
        T_STREQ(r.err.code, "10110");
        T_STREQ(r.err.msg, "service busy");
        pt_summarize(r.json, &s);
        T_STREQ(s.content, "Hi");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("spark_stream_output_moderation_after_text_is_content_filter");
    {
        const char *body =
            CHUNK("\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"index\":0}"
                  "]") "data:{\"code\":10014,\"message\":\"output "
                       "moderated\",\"sid\":\"cha000g2@dx1\"}\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_DONE, "rc %d", r.rc);
        pt_summarize(r.json, &s);
        T_STREQ(s.content, "Hi");
        T_STREQ(s.finish, "content_filter");
        T_CHECK(s.nfinish == 1, "one finish");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("spark_stream_early_error");
    {
        const char *body =
            "data:{\"code\":11200,\"message\":\"auth no license\",\"sid\":\"x\"}\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 403, "rc %d status %d", r.rc,
                r.err.http_status);
        T_STREQ(r.err.type, "permission_error");
        T_STREQ(r.json, "[]");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("spark_stream_error_object");
    {
        const char *body = "data: {\"error\":{\"message\":\"invalid user\",\"type\":\"api_error\","
                           "\"param\":null,\"code\":null}}\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "rc %d status %d", r.rc,
                r.err.http_status);
        T_STREQ(r.err.msg, "invalid user");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("spark_stream_malformed_chunk");
    {
        const char *body = "data:{\"code\":0,\"choices\":[{\"delta\"\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "rc %d status %d", r.rc,
                r.err.http_status);
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("spark_stream_tool_call_every_split");
    {
        const char *body = CHUNK(
            "\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":"
            "{\"type\":\"function\",\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}"
            "\",\"name\":\"get_weather\"}}},\"index\":0}],\"usage\":{\"prompt_tokens\":30,"
            "\"completion_tokens\":10,\"total_tokens\":40}") "data: [DONE]\n\n";
        bad = lmt_stream_every_split(p, G3S, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_DONE, "rc %d", r.rc);
        pt_summarize(r.json, &s);
        T_CHECK(s.tc_heads == 1 && strncmp(s.tc_id, "call_", 5) == 0, "one head, id %s", s.tc_id);
        T_STREQ(s.tc_name, "get_weather");
        T_CHECK(pt_args_are_paris(s.args), "args %s", s.args);
        T_STREQ(s.finish, "tool_calls");
        T_CHECK(pt_usage_is(&r.usage, 30, 10, 40), "usage");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("spark_stream_explicit_finish_kept");
    {
        const char *body = CHUNK(
            "\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"index\":0}]")
            CHUNK("\"choices\":[{\"delta\":{\"content\":\"\"},\"index\":0,\"finish_reason\":"
                  "\"length\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,"
                  "\"total_tokens\":2}") "data: [DONE]\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        pt_summarize(r.json, &s);
        T_CHECK(s.nfinish == 1, "no second finish at [DONE]");
        T_STREQ(s.finish, "length");
        lmt_result_clear(&r);
    }
    T_END();
}

static void test_requests(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    json_t *b;
    int rc;

    T_BEGIN("spark_model_aliases");
    {
        const char *pairs[][2] = {{"spark-max", "generalv3.5"},
                                  {"spark-lite", "lite"},
                                  {"4.0ultra", "4.0Ultra"},
                                  {"Spark-Pro", "generalv3"},
                                  {"max-32k", "max-32k"},
                                  {"x1", "x1"},
                                  {NULL, NULL}};
        for (int i = 0; pairs[i][0]; i++) {
            char canon[256];
            snprintf(canon, sizeof canon,
                     "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                     pairs[i][0]);
            b = body_of(p, canon, &rc);
            T_CHECK(rc == LM_OK, "build %s", pairs[i][0]);
            T_STREQ(json_string_value(json_object_get(b, "model")), pairs[i][1]);
            json_decref(b);
        }
    }
    T_END();

    T_BEGIN("spark_request_parameter_map");
    {
        const char *canon =
            "{\"model\":\"4.0Ultra\",\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
            "\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
            "\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
            "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}],"
            "\"temperature\":1.5,\"max_tokens\":100000,\"top_k\":9,\"top_p\":0.3,\"stop\":[\"x\"],"
            "\"presence_penalty\":1,\"frequency_penalty\":0.5,\"user\":\"u1\",\"seed\":1,"
            "\"response_format\":{\"type\":\"json_object\"},\"n\":1}";
        b = body_of(p, canon, &rc);
        T_CHECK(rc == LM_OK, "build");
        /* the kernel clamps the declared param_ranges (the kit does too) */
        T_CHECK(pt_near(json_number_value(json_object_get(b, "temperature")), 1.0), "temperature");
        T_CHECK(json_integer_value(json_object_get(b, "max_tokens")) == 8192, "max_tokens");
        T_CHECK(json_integer_value(json_object_get(b, "top_k")) == 6, "top_k");
        T_CHECK(json_object_get(b, "top_p") == NULL && json_object_get(b, "stop") == NULL &&
                    json_object_get(b, "seed") == NULL &&
                    json_object_get(b, "response_format") == NULL &&
                    json_object_get(b, "n") == NULL,
                "undocumented parameters dropped");
        T_CHECK(json_number_value(json_object_get(b, "presence_penalty")) == 1.0, "presence");
        T_CHECK(pt_near(json_number_value(json_object_get(b, "frequency_penalty")), 0.5),
                "frequency");
        T_STREQ(json_string_value(json_object_get(b, "user")), "u1");
        {
            json_t *ms = json_object_get(b, "messages");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 0), "role")), "system");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 1), "content")), "a\nb");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 2), "content")), "");
            T_CHECK(json_is_array(json_object_get(json_array_get(ms, 2), "tool_calls")),
                    "tool_calls");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 3), "tool_call_id")),
                    "c1");
        }
        json_decref(b);
        b = body_of(p,
                    "{\"model\":\"lite\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                    "\"temperature\":0,\"max_completion_tokens\":5,\"max_tokens\":7}",
                    &rc);
        T_CHECK(pt_near(json_number_value(json_object_get(b, "temperature")), 0.01), "0 -> 0.01");
        T_CHECK(json_integer_value(json_object_get(b, "max_tokens")) == 5,
                "max_completion_tokens wins");
        json_decref(b);
    }
    T_END();

    T_BEGIN("spark_request_rejects_images");
    {
        /* images, n > 1, embeddings and bad roles are the kernel's to refuse
         * (caps, flags, validation): the kit refuses them as the relay does */
        const char *img =
            "{\"model\":\"generalv3.5\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
            "\"image_url\",\"image_url\":{\"url\":\"https://img/x.png\"}}]}]}";
        rc = lmt_build(p, LM_OP_CHAT, img, &u, &e);
        T_CHECK(rc < 0 && e.http_status == 400, "rc %d status %d", rc, e.http_status);
        lmt_ureq_clear(&u);
    }
    T_END();

    T_BEGIN("spark_table_declares_what_the_kernel_checks");
    {
        const lm_provider *pv = lmt_provider(p);
        const lm_param_range *r = pv->param_ranges;
        int temp = 0, mt = 0, tk = 0;
        for (; r && r->name; r++) {
            temp |=
                strcmp(r->name, "temperature") == 0 && pt_near(r->min, 0.01) && pt_near(r->max, 1);
            mt |= strcmp(r->name, "max_tokens") == 0 && pt_near(r->min, 1) && pt_near(r->max, 8192);
            tk |= strcmp(r->name, "top_k") == 0 && pt_near(r->min, 1) && pt_near(r->max, 6);
        }
        T_CHECK(temp && mt && tk, "temperature (0,1], max_tokens [1,8192], top_k [1,6]");
        T_CHECK(!(pv->flags & LM_PF_MULTI_CHOICE), "one choice per request");
    }
    T_END();

    T_BEGIN("spark_stream_usage_can_be_turned_off");
    {
        const char *cfg[] = {"api_key", "pw", "stream_usage", "false", NULL};
        char err[256];
        lmt_plugin *q = lmt_load(SO, cfg, err, sizeof err);
        T_CHECK(q != NULL, "load: %s", err);
        if (q) {
            b = body_of(q, G2, &rc);
            T_CHECK(json_is_true(json_object_get(b, "stream")), "stream");
            T_CHECK(json_object_get(b, "stream_options") == NULL, "no stream_options");
            json_decref(b);
            lmt_build(q, LM_OP_CHAT, G1, &u, &e);
            T_STREQ(u.url, "https://spark-api-open.xf-yun.com/v1/chat/completions");
            lmt_ureq_clear(&u);
            lmt_unload(q);
        }
    }
    T_END();
}

int main(void)
{
    lmt_plugin *p = pt_load(CFG);
    T_BEGIN("spark_load");
    T_CHECK(p != NULL, "plugins/spark.so loads");
    T_END();
    if (p == NULL)
        T_EXIT();
    T_BEGIN("spark_provider_table");
    T_STREQ(lmt_provider(p)->name, "spark");
    T_CHECK(!(lmt_provider(p)->caps & LM_CAP_EMBED) && !(lmt_provider(p)->caps & LM_CAP_VISION),
            "no embeddings, no vision");
    T_END();
    test_golden(p);
    test_streams(p);
    test_requests(p);
    lmt_unload(p);
    T_EXIT();
}
