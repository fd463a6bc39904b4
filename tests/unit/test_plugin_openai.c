/* openai plugin through the test kit: request shape, verbatim responses,
 * usage scan, stream chunks at every split, in-stream errors, presets. */
#define PT_PLUGIN "openai"
#include "plugin_t.h"

#include <stdlib.h>

static char why[256]; /* lmt_stream_conforms: the first violation */

static const char *G1 =
    "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"system\",\"content\":"
    "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hi\"}],"
    "\"max_tokens\":16,\"temperature\":0.2}";
static const char *G2 = "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"Say hi\"}],\"stream\":true}";

static const char *STREAM =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\",\"reasoning_content\":\"r\"},"
    "\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":null}]}\r\n\r\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}"
    "\n\n"
    "data: [DONE]\n\n";

static void test_request(void)
{
    const char *cfg[] = {"base_url", "http://127.0.0.1:9/v1/", "api_key", "sk-test", NULL};
    lmt_plugin *p = pt_load(cfg);
    lmt_ureq u;
    lm_err e;
    T_BEGIN("openai_request_plain");
    T_CHECK(p != NULL, "load");
    if (p == NULL) {
        T_END();
        return;
    }
    T_CHECK(lmt_build(p, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build");
    T_STREQ(u.url, "http://127.0.0.1:9/v1/chat/completions");
    T_STREQ(lmt_header(&u, "Authorization"), "Bearer sk-test");
    json_t *b = json_loads(u.body, 0, NULL);
    T_STREQ(json_string_value(json_object_get(b, "model")), "deepseek-chat");
    T_CHECK(json_object_get(b, "stream_options") == NULL, "no stream_options when not streaming");
    T_CHECK(json_integer_value(json_object_get(b, "max_tokens")) == 16, "max_tokens kept");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("openai_request_stream_asks_usage");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G2, &u, &e) == LM_OK, "build");
    b = json_loads(u.body, 0, NULL);
    T_CHECK(json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage")),
            "include_usage forced upstream");
    T_STREQ(lmt_header(&u, "Accept"), "text/event-stream");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("openai_request_raw_pass_through");
    T_CHECK(lmt_build_raw(p, LM_OP_CHAT, G2, &u, &e) == LM_OK, "build");
    T_CHECK(strncmp(u.body, G2, strlen(G2) - 1) == 0, "the client's bytes: %s", u.body);
    T_CHECK(lmt_json_has(u.body, "stream_options.include_usage"), "usage asked: %s", u.body);
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build_raw(p, LM_OP_CHAT, G1, &u, &e) == LM_OK && strcmp(u.body, G1) == 0,
            "unchanged: %s", u.body);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("openai_response_keeps_shape_usage_to_kernel");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    const char *resp = "{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
                       "\"message\":{\"role\":\"assistant\",\"content\":\"\\\"usage\\\": {}\"},"
                       "\"finish_reason\":\"stop\"}],\"usage\": {\"prompt_tokens\":12,"
                       "\"completion_tokens\":2,\"total_tokens\":14,\"prompt_tokens_details\":"
                       "{\"cached_tokens\":3}}}";
    lmt_result r;
    lmt_response(p, 200, resp, strlen(resp), &r);
    T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
    json_t *want = json_loads(resp, 0, NULL), *got = json_loads(r.json, 0, NULL);
    /* the plugin took usage out; the kernel wrote it back from r.usage */
    T_CHECK(json_equal(want, got), "shape kept: %s", r.json);
    json_decref(want);
    json_decref(got);
    T_CHECK(r.usage.prompt == 12 && r.usage.completion == 2 && r.usage.total == 14 &&
                r.usage.cached == 3,
            "usage %lld/%lld/%lld", (long long)r.usage.prompt, (long long)r.usage.completion,
            (long long)r.usage.total);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("openai_response_without_usage_is_unknown");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    const char *nousage = "{\"id\":\"x\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                          "\"assistant\",\"content\":\"a\"},\"finish_reason\":\"stop\"},"
                          "{\"index\":1,\"message\":{\"role\":\"assistant\",\"content\":"
                          "\"b\"},\"finish_reason\":\"stop\"}]}";
    lmt_response(p, 200, nousage, strlen(nousage), &r);
    T_CHECK(r.rc == LM_OK && r.usage.prompt == -1 && r.usage.completion == -1, "unknown, not 0");
    T_CHECK(strstr(r.json, "\"index\":1") != NULL, "both choices kept");
    lmt_result_clear(&r);
    T_CHECK(lmt_provider(p)->flags & LM_PF_MULTI_CHOICE, "n > 1 is passed through");
    T_END();

    T_BEGIN("openai_error_map");
    const char *err429 = "{\"error\":{\"message\":\"slow down\",\"type\":\"requests\","
                         "\"code\":\"rate_limit_exceeded\"}}";
    lmt_response(p, 429, err429, strlen(err429), &r);
    T_CHECK(r.rc < 0 && r.err.http_status == 429, "429 stays 429 (%d)", r.err.http_status);
    T_STREQ(r.err.code, "rate_limit_exceeded");
    T_STREQ(r.err.msg, "slow down");
    lmt_result_clear(&r);
    const char *echo = "{\"error\":{\"message\":\"bad key sk-test\",\"type\":"
                       "\"invalid_request_error\"}}";
    lmt_response(p, 400, echo, strlen(echo), &r);
    T_CHECK(r.err.http_status == 400 && strstr(r.err.msg, "sk-test") == NULL, "scrubbed: %s",
            r.err.msg);
    lmt_result_clear(&r);
    lmt_response(p, 503, "<html>oops</html>", 17, &r);
    T_CHECK(r.rc < 0 && r.err.http_status == 502, "5xx becomes 502 (%d)", r.err.http_status);
    T_STREQ(r.err.code, "upstream_error");
    lmt_result_clear(&r);
    T_END();
    lmt_unload(p);
}

static void test_stream(void)
{
    const char *cfg[] = {"preset", "deepseek", "api_key", "k", NULL};
    lmt_plugin *p = pt_load(cfg);
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    char *first = NULL;
    size_t len = strlen(STREAM);
    T_BEGIN("openai_stream_every_split");
    T_CHECK(p != NULL, "load");
    if (p == NULL) {
        T_END();
        return;
    }
    for (size_t split = 0; split <= len; split++) {
        lmt_build(p, LM_OP_CHAT, G2, &u, &e);
        if (split == 0)
            T_STREQ(u.url, "https://api.deepseek.com/v1/chat/completions");
        lmt_ureq_clear(&u);
        lmt_stream(p, STREAM, len, split, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof(why)), "split %zu: %s", split, why);
        if (split == 0) {
            first = strdup(r.json);
            json_t *a = json_loads(r.json, 0, NULL);
            T_CHECK(json_array_size(a) == 4, "4 chunks without the usage chunk, got %zu",
                    json_array_size(a));
            json_t *c1 = json_array_get(json_object_get(json_array_get(a, 1), "choices"), 0);
            json_t *d = json_object_get(json_object_get(c1, "delta"), "reasoning_content");
            T_STREQ(json_string_value(d), "r");
            T_CHECK(json_object_get(json_array_get(a, 3), "usage") == NULL, "usage stripped");
            json_decref(a);
        } else if (strcmp(first, r.json) != 0) {
            T_CHECK(0, "split %zu differs", split);
        }
        T_CHECK(r.rc == LM_DONE && r.done, "rc %d at split %zu", r.rc, split);
        T_CHECK(r.usage.prompt == 12 && r.usage.completion == 2, "usage at split %zu", split);
        lmt_result_clear(&r);
    }
    free(first);
    T_END();

    T_BEGIN("openai_stream_error_event");
    const char *bad =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"
        "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
    lmt_build(p, LM_OP_CHAT, G2, &u, &e);
    lmt_ureq_clear(&u);
    lmt_stream(p, bad, strlen(bad), 7, &r);
    T_CHECK(r.rc == LM_EUPSTREAM, "rc %d", r.rc);
    T_STREQ(r.err.msg, "overloaded");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("openai_stream_cut_and_malformed");
    const char *cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
    lmt_build(p, LM_OP_CHAT, G2, &u, &e);
    lmt_ureq_clear(&u);
    lmt_stream(p, cut, strlen(cut), 0, &r);
    T_CHECK(r.rc == LM_OK && !r.done, "a cut stream is not done");
    lmt_result_clear(&r);
    lmt_build(p, LM_OP_CHAT, G2, &u, &e);
    lmt_ureq_clear(&u);
    lmt_stream(p, "data: {not json\n\n", 17, 0, &r);
    T_CHECK(r.rc == LM_EUPSTREAM, "malformed chunk is an upstream error");
    lmt_result_clear(&r);
    T_END();
    lmt_unload(p);
}

static void test_bad_config(void)
{
    char err[512];
    const char *cfg[] = {"preset", "nope", NULL};
    T_BEGIN("openai_bad_config");
    lmt_plugin *p = lmt_load(pt_so_path(), cfg, err, sizeof(err));
    T_CHECK(p == NULL && strstr(err, "unknown preset"), "err: %s", err);
    const char *cfg2[] = {"base_url", "http://x", "colour", "blue", NULL};
    p = lmt_load(pt_so_path(), cfg2, err, sizeof(err));
    T_CHECK(p == NULL && strstr(err, "unknown setting \"colour\""), "err: %s", err);
    T_END();
}

/* Audio (1.3 constants): the uploads get the URL and the key only (the
 * kernel sends the client's form); speech is JSON to <base>/audio/speech. */
static void test_audio(void)
{
    const char *cfg[] = {"base_url", "http://127.0.0.1:9/v1/", "api_key", "sk-test", NULL};
    lmt_plugin *p = pt_load(cfg);
    lmt_ureq u;
    lm_err e;
    T_BEGIN("openai_audio_requests");
    T_CHECK(p != NULL, "load");
    if (p == NULL) {
        T_END();
        return;
    }
    uint32_t eps = lmt_provider(p)->endpoints;
    T_CHECK((eps & LM_EP_AUDIO_TRANSCRIBE) && (eps & LM_EP_AUDIO_SPEECH), "declared 0x%x", eps);
    static const char form[] = "{\"model\":\"whisper-1\",\"language\":\"en\"}";
    static const int ups[] = {LM_OP_AUDIO_TRANSCRIBE, LM_OP_AUDIO_TRANSLATE};
    static const char *const paths[] = {"http://127.0.0.1:9/v1/audio/transcriptions",
                                        "http://127.0.0.1:9/v1/audio/translations"};
    for (int i = 0; i < 2; i++) {
        T_CHECK(lmt_build(p, ups[i], form, &u, &e) == LM_OK, "build: %s", e.msg);
        T_STREQ(u.url, paths[i]);
        T_STREQ(lmt_header(&u, "Authorization"), "Bearer sk-test");
        T_CHECK(u.body_len == 0 && lmt_header(&u, "Content-Type") == NULL,
                "no body of its own: %zu", u.body_len);
        lmt_ureq_clear(&u);
    }
    static const char tts[] = "{\"model\":\"tts-1\",\"input\":\"hi\",\"voice\":\"alloy\"}";
    T_CHECK(lmt_build(p, LM_OP_AUDIO_SPEECH, tts, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.url, "http://127.0.0.1:9/v1/audio/speech");
    T_CHECK(lmt_json_str(u.body, "input", "hi") && lmt_json_str(u.body, "voice", "alloy") &&
                lmt_json_str(u.body, "model", "tts-1"),
            "speech body %s", u.body);
    lmt_ureq_clear(&u);
    T_END();
    lmt_unload(p);
}

int main(void)
{
    test_audio();
    test_request();
    test_stream();
    test_bad_config();
    T_EXIT();
}
