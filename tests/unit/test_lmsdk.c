/* The plugin helper library (sdk/lmsdk.h): content flattening, data URLs,
 * tool calls, finish maps, envelopes, errors, buffer and emit helpers. */
#include "lmsdk.h"
#include "lmtest.h"
#include "t.h"

#include <stdlib.h>

static json_t *J(const char *s)
{
    return json_loads(s, JSON_DECODE_ANY, NULL);
}

static void test_content(void)
{
    lm_err e = {0};
    T_BEGIN("lmsdk_content_text_joins_parts_with_newline");
    json_t *c = J("[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image_url\",\"image_url\":"
                  "{\"url\":\"data:image/png;base64,AAAA\"}},{\"type\":\"text\",\"text\":\"b\"}]");
    json_t *s = lms_content_string(c, LMS_SKIP_OTHER, "messages[0].content", &e);
    T_STREQ(json_string_value(s), "a\nb");
    json_decref(s);
    T_CHECK(lms_content_has_image(c), "has image");
    s = lms_content_string(c, LMS_TEXT_ONLY, "messages[0].content", &e);
    T_CHECK(s == NULL && e.http_status == 400, "text only refuses the image");
    T_CHECK(strstr(e.msg, "messages[0].content[1]") != NULL, "names the part: %s", e.msg);
    json_decref(c);
    c = J("{\"x\":1}");
    T_CHECK(lms_content_string(c, LMS_SKIP_OTHER, NULL, &e) == NULL && e.http_status == 400,
            "object content is a 400");
    json_decref(c);
    s = lms_content_string(NULL, LMS_TEXT_ONLY, NULL, &e);
    T_STREQ(json_string_value(s), "");
    json_decref(s);
    T_END();
}

static void test_data_url(void)
{
    lms_data_url d;
    T_BEGIN("lmsdk_data_url_parse");
    T_CHECK(lms_data_url_parse("data:image/png;base64,QUJD", &d) == 0, "parses");
    T_CHECK(d.is_base64 && d.media_type.n == 9 && !memcmp(d.media_type.p, "image/png", 9), "type");
    T_CHECK(d.data.n == 4 && !memcmp(d.data.p, "QUJD", 4), "data");
    T_CHECK(lms_data_url_parse("data:text/plain,hi", &d) == 0 && !d.is_base64, "plain");
    T_CHECK(lms_data_url_parse("data:;base64,QUJD", &d) < 0, "no media type");
    T_CHECK(lms_data_url_parse("https://x/y.png", &d) < 0, "not a data URL");
    T_CHECK(lms_data_url_parse("data:image/png;base64", &d) < 0, "no comma");
    json_t *p = J("{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://a/b\"}}");
    T_STREQ(lms_image_url(p), "https://a/b");
    json_decref(p);
    T_END();
}

static void test_tools(void)
{
    lm_call c = {.request_id = "req1", .model = "m"};
    T_BEGIN("lmsdk_tool_calls");
    json_t *o = J("{\"a\":1}"), *t = lms_tool_args_text(o);
    T_STREQ(json_string_value(t), "{\"a\":1}");
    json_decref(t);
    t = lms_tool_args_text(NULL);
    T_STREQ(json_string_value(t), "{}");
    json_decref(t);
    json_decref(o);
    o = lms_tool_args_object("{\"q\":\"x\"}");
    T_CHECK(json_is_object(o), "object");
    json_decref(o);
    T_CHECK(lms_tool_args_object("[1]") == NULL, "array is not an object");
    T_CHECK(lms_tool_args_object("{") == NULL, "broken");
    json_t *tc = lms_tool_call(&c, 2, NULL, "f", NULL);
    T_STREQ(json_string_value(json_object_get(tc, "id")), "call_req1_2");
    T_STREQ(lms_jstr(json_object_get(tc, "function"), "arguments"), "{}");
    json_decref(tc);
    T_END();
}

static void test_finish(void)
{
    static const lms_rename map[] = {
        {"normal", "stop"}, {"max_tokens", "length"}, {"null", NULL}, {NULL, NULL}};
    T_BEGIN("lmsdk_finish_map");
    T_STREQ(lms_finish_map(map, "max_tokens", 0), "length");
    T_STREQ(lms_finish_map(map, "normal", 1), "tool_calls");
    T_STREQ(lms_finish_map(map, "weird", 0), "stop");
    T_CHECK(lms_finish_map(map, "", 0) == NULL && lms_finish_map(map, NULL, 0) == NULL, "none");
    T_CHECK(lms_finish_map(map, "null", 0) == NULL, "mapped to still generating");
    T_END();
}

static void test_envelopes(void)
{
    lm_call c = {.request_id = "r9", .model = "up-model"};
    lm_err e = {0};
    T_BEGIN("lmsdk_envelopes");
    json_t *r = lms_chat_response(NULL, &c, "hi", 2, NULL, "length");
    T_STREQ(lms_jstr(r, "object"), "chat.completion");
    T_STREQ(lms_jstr(r, "id"), "chatcmpl-r9");
    json_t *ch = json_array_get(json_object_get(r, "choices"), 0);
    T_STREQ(lms_jstr(ch, "finish_reason"), "length");
    T_STREQ(lms_jstr(json_object_get(ch, "message"), "content"), "hi");
    T_CHECK(json_object_get(r, "usage") == NULL, "the kernel writes usage");
    json_decref(r);
    r = lms_embedding_list(&c, J("[[0.5],[1.5]]"));
    T_CHECK(json_array_size(json_object_get(r, "data")) == 2, "two");
    T_CHECK(json_integer_value(
                json_object_get(json_array_get(json_object_get(r, "data"), 1), "index")) == 1,
            "index");
    json_decref(r);
    json_t *st = NULL, *in = J("\"END\"");
    T_CHECK(lms_stop_list(in, 4, &st, &e) == LM_OK && json_array_size(st) == 1, "string stop");
    json_decref(st);
    json_decref(in);
    in = J("[\"a\",\"b\",\"c\"]");
    T_CHECK(lms_stop_list(in, 2, &st, &e) == LM_EINVAL && e.http_status == 400, "too many");
    json_decref(in);
    T_END();
}

static void test_errors_buf(void)
{
    lm_err e = {0};
    lms_buf b = {0};
    char msg[64] = "key sk-secret-1 leaked sk-secret-1";
    T_BEGIN("lmsdk_errors_and_buffer");
    T_CHECK(lms_upstream_error(&e, 429, "rate", "slow down") == LM_EUPSTREAM, "rc");
    T_STREQ(e.type, "rate_limit_error");
    T_CHECK(lms_upstream_error(&e, 200, NULL, "x") == LM_EUPSTREAM && e.http_status == 502,
            "non-error status becomes 502");
    T_CHECK(lms_bad_upstream(&e, "no %s", "choices") == LM_EUPSTREAM && e.http_status == 502,
            "bad upstream");
    lms_scrub(msg, "sk-secret-1");
    T_STREQ(msg, "key *** leaked ***");
    for (int i = 0; i < 300; i++)
        lms_buf_addf(&b, "%d,", i);
    T_CHECK(!b.oom && b.n > 1000 && b.p[b.n] == '\0', "grows");
    lms_buf_free(&b);
    T_END();
}

int main(void)
{
    test_content();
    test_data_url();
    test_tools();
    test_finish();
    test_envelopes();
    test_errors_buf();
    T_EXIT();
}
