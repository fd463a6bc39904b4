/* ernie2 plugin (Qianfan v2, OpenAI-compatible) through the test kit: the
 * golden cases G1-G3 replayed as OpenAI-shaped mocks (docs/wire-formats.md 9,
 * last paragraph: finish_reason "normal" tests the normal->stop map), stream
 * splits, quirks and bad paths. Run from the repo root. */
#define PT_PLUGIN "ernie2"
#include "plugin_t.h"

#include <math.h>
#include <stdlib.h>

static char why[256]; /* lmt_stream_conforms: the first violation */

#define SO pt_so_path()

static const char *CFG[] = {"base_url", "http://mock/v2/", "api_key", "bce-v3/ALTAK-test/secret",
                            NULL};

static const char *G1 =
    "{\"model\":\"ernie-3.5-8k\",\"messages\":[{\"role\":\"system\",\"content\":"
    "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hi\"}],"
    "\"max_tokens\":16,\"temperature\":0.2}";
static const char *G2 =
    "{\"model\":\"ernie-3.5-8k\",\"messages\":[{\"role\":\"system\",\"content\":"
    "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hi\"}],"
    "\"max_tokens\":16,\"temperature\":0.2,\"stream\":true,"
    "\"stream_options\":{\"include_usage\":true}}";
#define TOOLS                                                                                      \
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Get "        \
    "weather\",\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"            \
    "\"string\"}},\"required\":[\"city\"]}}}]"
static const char *G3 = "{\"model\":\"ernie-3.5-8k\",\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"Weather in Paris?\"}],\"tools\":" TOOLS ",\"tool_choice\":\"auto\"}";
static const char *G3S =
    "{\"model\":\"ernie-3.5-8k\",\"messages\":[{\"role\":\"user\",\"content\":"
    "\"Weather in Paris?\"}],\"tools\":" TOOLS ",\"tool_choice\":\"auto\",\"stream\":true}";

static const char *G1_RESP =
    "{\"id\":\"as-g1\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":"
    "\"ernie-3.5-8k\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
    "\"Hi!\"},\"finish_reason\":\"normal\",\"flag\":0}],\"usage\":{\"prompt_tokens\":12,"
    "\"completion_tokens\":2,\"total_tokens\":14}}";

#define CHUNK(body)                                                                                \
    "data: "                                                                                       \
    "{\"id\":\"as-g2\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":"     \
    "\"ernie-3.5-8k\"," body "}\n\n"
static const char *G2_STREAM = CHUNK(
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},"
    "\"finish_reason\":null,\"flag\":0}],\"usage\":null")
    CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":null,"
          "\"flag\":0}],\"usage\":null")
        CHUNK("\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"normal\",\"flag\":0}],"
              "\"usage\":null")
            CHUNK("\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,"
                  "\"total_tokens\":14}") "data: [DONE]\n\n";

static const char *G3_RESP =
    "{\"id\":\"as-g3\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":"
    "\"ernie-3.5-8k\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
    "\"\",\"tool_calls\":[{\"id\":\"04fed17840d34b1e\",\"type\":\"function\",\"function\":{"
    "\"name\":"
    "\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},\"finish_reason\":"
    "\"tool_calls\",\"flag\":0}],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":10,"
    "\"total_tokens\":40}}";

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
    T_CHECK(strstr(r.err.msg, "ALTAK-test") == NULL, "key leaked: %s", r.err.msg);
    lmt_result_clear(&r);
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

    T_BEGIN("ernie2_g1_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.method, "POST");
    T_STREQ(u.url, "http://mock/v2/chat/completions");
    T_STREQ(lmt_header(&u, "Authorization"), "Bearer bce-v3/ALTAK-test/secret");
    b = pt_jparse(u.body);
    T_STREQ(json_string_value(json_object_get(b, "model")), "ernie-3.5-8k");
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

    T_BEGIN("ernie2_g1_response_normal_is_stop");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G1_RESP, strlen(G1_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d (%s)", r.rc, r.err.msg);
    b = pt_jparse(r.json);
    {
        json_t *c0 = json_array_get(json_object_get(b, "choices"), 0);
        json_t *m = json_object_get(c0, "message");
        T_STREQ(json_string_value(json_object_get(b, "object")), "chat.completion");
        T_STREQ(json_string_value(json_object_get(b, "id")), "as-g1");
        T_STREQ(json_string_value(json_object_get(m, "content")), "Hi!");
        T_STREQ(json_string_value(json_object_get(c0, "finish_reason")), "stop");
        T_CHECK(json_object_get(c0, "flag") == NULL, "Qianfan extras dropped");
        T_CHECK(lmt_json_int(r.json, "usage.total_tokens", 14), "usage written by the kernel");
    }
    T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage 12/2/14");
    json_decref(b);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie2_g2_request_asks_usage");
    {
        /* the client did not ask for usage: the plugin asks anyway */
        const char *canon = "{\"model\":\"ernie-3.5-8k\",\"messages\":[{\"role\":\"user\","
                            "\"content\":\"Say hi\"}],\"stream\":true}";
        T_CHECK(lmt_build(p, LM_OP_CHAT, canon, &u, &e) == LM_OK, "build");
        b = pt_jparse(u.body);
        T_CHECK(json_is_true(json_object_get(b, "stream")), "stream:true");
        T_CHECK(
            json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage")),
            "include_usage forced");
        T_STREQ(lmt_header(&u, "Accept"), "text/event-stream");
        json_decref(b);
        lmt_ureq_clear(&u);
    }
    T_END();

    T_BEGIN("ernie2_g2_stream_every_split");
    bad = lmt_stream_every_split(p, G2, G2_STREAM, &r);
    T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
    T_CHECK(bad == 0, "split %zu gives a different result", bad);
    T_CHECK(r.rc == LM_DONE && r.done, "rc %d done %d (%s)", r.rc, r.done, r.err.msg);
    pt_summarize(r.json, &s);
    T_STREQ(s.content, "Hi!");
    T_CHECK(s.ncontent == 2, "two content deltas");
    T_CHECK(s.nfinish == 1, "one finish chunk");
    T_STREQ(s.finish, "stop");
    T_CHECK(s.role_first && s.nrole == 1, "role once on the first chunk");
    T_CHECK(s.nchunks == 3, "no usage-only chunk forwarded (%d chunks)", s.nchunks);
    T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage 12/2/14");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie2_g3_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G3, &u, &e) == LM_OK, "build");
    b = pt_jparse(u.body);
    want = pt_jparse(TOOLS);
    T_CHECK(json_equal(json_object_get(b, "tools"), want), "tools equal the inbound array");
    T_STREQ(json_string_value(json_object_get(b, "tool_choice")), "auto");
    json_decref(want);
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ernie2_g3_response");
    lmt_build(p, LM_OP_CHAT, G3, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G3_RESP, strlen(G3_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
    b = pt_jparse(r.json);
    {
        json_t *c0 = json_array_get(json_object_get(b, "choices"), 0);
        json_t *tc =
            json_array_get(json_object_get(json_object_get(c0, "message"), "tool_calls"), 0);
        json_t *fn = json_object_get(tc, "function");
        T_STREQ(json_string_value(json_object_get(tc, "id")), "04fed17840d34b1e");
        T_STREQ(json_string_value(json_object_get(tc, "type")), "function");
        T_STREQ(json_string_value(json_object_get(fn, "name")), "get_weather");
        T_CHECK(pt_args_are_paris(json_string_value(json_object_get(fn, "arguments"))),
                "arguments");
        T_STREQ(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
        T_CHECK(json_is_null(json_object_get(json_object_get(c0, "message"), "content")),
                "content null");
    }
    T_CHECK(pt_usage_is(&r.usage, 30, 10, 40), "usage 30/10/40");
    json_decref(b);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie2_error_probe");
    check_error(p, 403,
                "{\"error\":{\"code\":\"invalid_model\",\"message\":\"No permission to use the "
                "model\",\"type\":\"invalid_request_error\"},\"id\":\"as-qdb51n76w1\"}",
                403, "invalid_request_error", "invalid_model");
    T_END();

    T_BEGIN("ernie2_errors_401_429_500");
    check_error(p, 401,
                "{\"error\":{\"code\":\"invalid_iam_token\",\"message\":\"IAM Certification "
                "failed\",\"type\":\"invalid_request_error\"}}",
                401, "invalid_request_error", "invalid_iam_token");
    check_error(p, 401,
                "{\"error\":{\"code\":\"invalid_api_key\",\"message\":\"bad key "
                "bce-v3/ALTAK-test/secret\"}}",
                401, "authentication_error", "invalid_api_key");
    check_error(p, 429,
                "{\"error\":{\"code\":\"rpm_rate_limit_exceeded\",\"message\":\"Rpm limit "
                "exceeded\",\"type\":\"rate_limit_exceeded\"}}",
                429, "rate_limit_exceeded", "rpm_rate_limit_exceeded");
    check_error(p, 500, "{\"error\":{\"code\":\"internal_error\",\"message\":\"Internal error\"}}",
                500, "api_error", "internal_error");
    check_error(p, 503, "upstream connect error", 502, "api_error", NULL);
    T_END();

    T_BEGIN("ernie2_error_in_200_body");
    check_error(p, 200, "{\"error_code\":336501,\"error_msg\":\"Rate limit reached for RPM\"}", 429,
                "rate_limit_error", "336501");
    check_error(p, 200, "{\"error_code\":110,\"error_msg\":\"Access token invalid\"}", 401,
                "authentication_error", "110");
    check_error(p, 200, "{\"error\":{\"code\":\"x\",\"message\":\"y\",\"type\":\"api_error\"}}",
                502, "api_error", "x");
    T_END();

    T_BEGIN("ernie2_malformed_upstream_json");
    {
        const char *bodies[] = {"{\"choices\":[", "{}", "\"str\"", NULL};
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

    T_BEGIN("ernie2_stream_tool_calls_every_split");
    {
        const char *body = CHUNK(
            "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\","
            "\"tool_calls\":[{\"index\":0,\"id\":\"call_q1\",\"type\":\"function\","
            "\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},"
            "\"finish_reason\":null}]")
            CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
                  "{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]")
                CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":"
                      "\"call_q1\",\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},"
                      "\"finish_reason\":null}]") CHUNK("\"choices\":[{\"index\":0,\"delta\":{},"
                                                        "\"finish_reason\":\"tool_calls\"}]")
                    CHUNK("\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":10,"
                          "\"total_tokens\":40}") "data: [DONE]\n\n";
        bad = lmt_stream_every_split(p, G3S, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_DONE, "rc %d (%s)", r.rc, r.err.msg);
        pt_summarize(r.json, &s);
        T_CHECK(s.tc_heads == 1 && s.tc_names == 1, "id/name once (%d/%d)", s.tc_heads, s.tc_names);
        T_STREQ(s.tc_id, "call_q1");
        T_STREQ(s.tc_name, "get_weather");
        T_CHECK(pt_args_are_paris(s.args), "args %s", s.args);
        T_STREQ(s.finish, "tool_calls");
        T_CHECK(pt_usage_is(&r.usage, 30, 10, 40), "usage");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie2_stream_missing_finish_is_stop_at_done");
    {
        const char *body =
            CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
                  "\"Hi!\"}}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,"
                  "\"total_tokens\":14}") "data: [DONE]\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        pt_summarize(r.json, &s);
        T_STREQ(s.content, "Hi!");
        T_CHECK(s.nfinish == 1, "a finish chunk is synthesized");
        T_STREQ(s.finish, "stop");
        T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage with content chunk");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie2_stream_need_clear_history_is_content_filter");
    {
        const char *body =
            CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
                  "\"Hi\"},\"finish_reason\":null}]")
                CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":"
                      "\"normal\",\"flag\":3,\"ban_round\":-1}]") "data: [DONE]\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        pt_summarize(r.json, &s);
        T_STREQ(s.finish, "content_filter");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie2_stream_error_chunk_midway_every_split");
    {
        const char *body = CHUNK(
            "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
            "\"Hi\"},\"finish_reason\":null}]") "data: "
                                                "{\"error\":{\"code\":\"tpm_rate_limit_exceeded\","
                                                "\"message\":\"Tpm limit "
                                                "exceeded\",\"type\":\"rate_limit_error\"}}\n\n"
                                                "data: [DONE]\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM, "rc %d", r.rc);
        T_CHECK(r.err.http_status == 502, "status %d", r.err.http_status);
        T_STREQ(r.err.code, "tpm_rate_limit_exceeded");
        T_STREQ(r.err.msg, "Tpm limit exceeded");
        pt_summarize(r.json, &s);
        T_STREQ(s.content, "Hi");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie2_stream_v1_error_body");
    {
        const char *body = "data: {\"error_code\":18,\"error_msg\":\"Open api qps request limit "
                           "reached\"}\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 429, "rc %d status %d", r.rc,
                r.err.http_status);
        T_STREQ(r.err.code, "18");
        T_STREQ(r.err.type, "rate_limit_error");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie2_stream_malformed_chunk");
    {
        const char *body =
            CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]") "data: "
                                                                                "{\"choices\":[{"
                                                                                "\"delta\":\n\n";
        bad = lmt_stream_every_split(p, G2, body, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "%s", why);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "rc %d status %d", r.rc,
                r.err.http_status);
        lmt_result_clear(&r);
    }
    T_END();
}

static void test_requests(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    json_t *b;

    T_BEGIN("ernie2_request_parameter_map");
    {
        const char *canon =
            "{\"model\":\"ernie-4.0-8k\",\"messages\":[{\"role\":\"developer\",\"content\":\"d\"},"
            "{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":null,"
            "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
            "\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":"
            "\"42\"}],\"max_completion_tokens\":99,\"stop\":\"END\",\"logprobs\":true,"
            "\"top_logprobs\":2,\"penalty_score\":1.2,\"web_search\":{\"enable\":true},"
            "\"user\":\"u1\",\"n\":1,\"seed\":3,\"logit_bias\":{\"1\":2},\"top_p\":0.5}";
        T_CHECK(lmt_build(p, LM_OP_CHAT, canon, &u, &e) == LM_OK, "build: %s", e.msg);
        b = pt_jparse(u.body);
        T_CHECK(json_integer_value(json_object_get(b, "max_tokens")) == 99,
                "max_completion_tokens -> max_tokens");
        T_CHECK(json_object_get(b, "max_completion_tokens") == NULL, "no max_completion_tokens");
        T_STREQ(json_string_value(json_array_get(json_object_get(b, "stop"), 0)), "END");
        T_CHECK(json_object_get(b, "logprobs") == NULL &&
                    json_object_get(b, "top_logprobs") == NULL &&
                    json_object_get(b, "logit_bias") == NULL && json_object_get(b, "n") == NULL,
                "unsupported parameters dropped");
        T_CHECK(pt_near(json_number_value(json_object_get(b, "penalty_score")), 1.2),
                "penalty_score");
        T_CHECK(json_is_true(json_object_get(json_object_get(b, "web_search"), "enable")),
                "web_search");
        T_STREQ(json_string_value(json_object_get(b, "user")), "u1");
        T_CHECK(json_integer_value(json_object_get(b, "seed")) == 3, "seed");
        T_CHECK(pt_near(json_number_value(json_object_get(b, "top_p")), 0.5), "top_p");
        {
            json_t *ms = json_object_get(b, "messages");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 0), "role")), "system");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 2), "content")), "");
            T_STREQ(json_string_value(json_object_get(json_array_get(ms, 3), "tool_call_id")),
                    "c1");
        }
        json_decref(b);
        lmt_ureq_clear(&u);
    }
    T_END();

    T_BEGIN("ernie2_table_declares_what_the_kernel_checks");
    {
        /* n > 1, bad roles, missing content and out-of-range temperature
         * are the kernel's to answer (ABI 1.2): the table says what to check. */
        const lm_provider *pv = lmt_provider(p);
        const lm_param_range *t = pv->param_ranges;
        T_CHECK(!(pv->flags & LM_PF_MULTI_CHOICE), "one choice per request");
        T_CHECK(t != NULL && strcmp(t[0].name, "temperature") == 0 && pt_near(t[0].min, 0.01) &&
                    pt_near(t[0].max, 1.0),
                "temperature (0, 1] declared as [0.01, 1.0]");
    }
    T_END();

    T_BEGIN("ernie2_request_vision_passes_through");
    {
        const char *canon =
            "{\"model\":\"ernie-4.5-vl-28b-a3b\",\"messages\":[{\"role\":\"user\",\"content\":[{"
            "\"type\":\"image_url\",\"image_url\":{\"url\":\"https://img/x.png\"}},{\"type\":"
            "\"text\",\"text\":\"what?\"}]}]}";
        json_t *want =
            pt_jparse("[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                      "\"image_url\":{\"url\":\"https://img/x.png\"}},{\"type\":\"text\","
                      "\"text\":\"what?\"}]}]");
        T_CHECK(lmt_build(p, LM_OP_CHAT, canon, &u, &e) == LM_OK, "build");
        b = pt_jparse(u.body);
        T_CHECK(json_equal(json_object_get(b, "messages"), want), "parts unchanged");
        json_decref(want);
        json_decref(b);
        lmt_ureq_clear(&u);
    }
    T_END();

    T_BEGIN("ernie2_appid_header_and_default_base");
    {
        const char *cfg[] = {"api_key", "k-1234", "appid", "app-9", NULL};
        char err[256];
        lmt_plugin *q = lmt_load(SO, cfg, err, sizeof err);
        T_CHECK(q != NULL, "load: %s", err);
        if (q) {
            lmt_build(q, LM_OP_CHAT, G1, &u, &e);
            T_STREQ(u.url, "https://qianfan.baidubce.com/v2/chat/completions");
            T_STREQ(lmt_header(&u, "appid"), "app-9");
            lmt_ureq_clear(&u);
            lmt_unload(q);
        }
    }
    T_END();
}

static void test_embed(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *want;
    const char *resp = "{\"id\":\"as-e\",\"object\":\"list\",\"created\":1,\"data\":[{\"object\":"
                       "\"embedding\",\"embedding\":[0.1,0.2],\"index\":0}],\"usage\":"
                       "{\"prompt_tokens\":4,\"total_tokens\":4}}";

    T_BEGIN("ernie2_embed");
    T_CHECK(lmt_build(p, LM_OP_EMBED,
                      "{\"model\":\"embedding-v1\",\"input\":[\"a\"],\"user\":\"u\"}", &u,
                      &e) == LM_OK,
            "build: %s", e.msg);
    T_STREQ(u.url, "http://mock/v2/embeddings");
    b = pt_jparse(u.body);
    want = pt_jparse("{\"model\":\"embedding-v1\",\"input\":[\"a\"],\"user\":\"u\"}");
    T_CHECK(json_equal(b, want), "body %s", u.body);
    json_decref(want);
    json_decref(b);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, resp, strlen(resp), &r);
    T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
    b = pt_jparse(r.json);
    want = pt_jparse("{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                     "\"embedding\":[0.1,0.2]}],\"model\":\"embedding-v1\",\"usage\":"
                     "{\"prompt_tokens\":4,\"total_tokens\":4}}");
    T_CHECK(json_equal(b, want), "got %s", r.json);
    T_CHECK(r.usage.prompt == 4 && r.usage.total == 4 && r.usage.completion == 0, "usage");
    json_decref(want);
    json_decref(b);
    lmt_result_clear(&r);
    T_CHECK(lmt_build(p, LM_OP_EMBED, "{\"model\":\"embedding-v1\",\"input\":[[1,2]]}", &u, &e) ==
                LM_EINVAL,
            "token arrays rejected");
    lmt_ureq_clear(&u);
    T_END();
}

int main(void)
{
    lmt_plugin *p = pt_load(CFG);
    T_BEGIN("ernie2_load");
    T_CHECK(p != NULL, "plugins/ernie2.so loads");
    T_END();
    if (p == NULL)
        T_EXIT();
    T_BEGIN("ernie2_provider_table");
    T_STREQ(lmt_provider(p)->name, "ernie2");
    T_CHECK(lmt_provider(p)->framing == LM_FRAME_SSE, "SSE");
    T_END();
    test_golden(p);
    test_streams(p);
    test_requests(p);
    test_embed(p);
    lmt_unload(p);
    T_EXIT();
}
