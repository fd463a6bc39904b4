/* proto/responses_*: the OpenAI Responses API's translators (request,
 * whole answer, stream) around the canonical chat form. */
#include "proto/reqcheck.h"
#include "proto/responses.h"
#include "t.h"

#include <stdlib.h>
#include <string.h>

static json_t *req(const char *body, json_t **echo, lm_err *e)
{
    return lm_resp_request(body, strlen(body), echo, e);
}

static const char *sget(const json_t *o, const char *path)
{
    /* "a.b.0.c": objects by key, arrays by index */
    char buf[256], *save = NULL;
    snprintf(buf, sizeof(buf), "%s", path);
    const json_t *v = o;
    for (char *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = json_is_array(v) ? json_array_get(v, (size_t)atoi(k)) : json_object_get(v, k);
    return json_string_value(v);
}

static json_int_t iget(const json_t *o, const char *k1, const char *k2)
{
    json_t *v = json_object_get(o, k1);
    return json_integer_value(k2 ? json_object_get(v, k2) : v);
}

static void test_request_string(void)
{
    lm_err e;
    json_t *echo;
    T_BEGIN("responses_request_string_input_and_scalars");
    json_t *c = req("{\"model\":\"m\",\"input\":\"hi\",\"instructions\":\"be brief\","
                    "\"max_output_tokens\":50,\"temperature\":0.5,\"top_p\":0.9,\"user\":\"u\","
                    "\"metadata\":{\"a\":\"b\"},\"stream\":true,\"store\":false,"
                    "\"parallel_tool_calls\":false,\"include\":[\"reasoning.encrypted_content\"]}",
                    &echo, &e);
    T_CHECK(c != NULL, "translated: %s", e.msg);
    json_t *msgs = json_object_get(c, "messages");
    T_CHECK(json_array_size(msgs) == 2, "system + user");
    T_STREQ(sget(msgs, "0.role"), "system");
    T_STREQ(sget(msgs, "0.content"), "be brief");
    T_STREQ(sget(msgs, "1.role"), "user");
    T_STREQ(sget(msgs, "1.content"), "hi");
    T_CHECK(iget(c, "max_tokens", NULL) == 50, "max_output_tokens -> max_tokens");
    T_CHECK(json_real_value(json_object_get(c, "temperature")) == 0.5, "temperature");
    T_CHECK(json_real_value(json_object_get(c, "top_p")) == 0.9, "top_p");
    T_STREQ(sget(c, "user"), "u");
    T_CHECK(json_is_true(json_object_get(c, "stream")), "stream");
    T_CHECK(json_is_true(json_object_get(json_object_get(c, "stream_options"), "include_usage")),
            "a stream asks for the usage chunk");
    T_CHECK(json_is_false(json_object_get(c, "parallel_tool_calls")), "parallel_tool_calls");
    T_CHECK(json_object_get(c, "metadata") == NULL && json_object_get(c, "store") == NULL &&
                json_object_get(c, "include") == NULL && json_object_get(c, "input") == NULL,
            "nothing of the Responses API leaks into the chat request");
    T_CHECK(lm_reqcheck_chat(c, &e) == 0, "the kernel's chat checks pass: %s", e.msg);
    T_STREQ(sget(echo, "instructions"), "be brief");
    T_STREQ(sget(echo, "metadata.a"), "b");
    T_CHECK(iget(echo, "max_output_tokens", NULL) == 50, "echo max_output_tokens");
    json_decref(c);
    json_decref(echo);
    T_END();
}

static void test_request_items(void)
{
    lm_err e;
    T_BEGIN("responses_request_items_map_to_chat_messages");
    json_t *c = req(
        "{\"model\":\"m\",\"input\":["
        "{\"role\":\"developer\",\"content\":\"rules\"},"
        "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\","
        "\"text\":\"look\"},{\"type\":\"input_image\",\"image_url\":\"data:image/png;base64,AAAA\","
        "\"detail\":\"low\"}]},"
        "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[]},"
        "{\"type\":\"message\",\"role\":\"assistant\",\"id\":\"msg_1\",\"status\":\"completed\","
        "\"content\":[{\"type\":\"output_text\",\"text\":\"calling\",\"annotations\":[]}]},"
        "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call\",\"call_id\":\"c2\",\"name\":\"g\",\"arguments\":\"{\\\"x\\\":"
        "1}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":\"one\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c2\",\"output\":[{\"type\":\"input_"
        "text\","
        "\"text\":\"two\"}]},"
        "{\"type\":\"function_call\",\"call_id\":\"c3\",\"name\":\"h\",\"arguments\":\"\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"a\"},"
        "{\"type\":\"input_text\",\"text\":\"b\"}]}]}",
        NULL, &e);
    T_CHECK(c != NULL, "translated: %s", e.msg);
    json_t *m = json_object_get(c, "messages");
    T_CHECK(json_array_size(m) == 7, "7 messages, got %zu", json_array_size(m));
    T_STREQ(sget(m, "0.role"), "developer");
    T_STREQ(sget(m, "1.content.0.type"), "text");
    T_STREQ(sget(m, "1.content.1.type"), "image_url");
    T_STREQ(sget(m, "1.content.1.image_url.url"), "data:image/png;base64,AAAA");
    T_STREQ(sget(m, "1.content.1.image_url.detail"), "low");
    T_STREQ(sget(m, "2.role"), "assistant");
    T_STREQ(sget(m, "2.content"), "calling");
    T_CHECK(json_array_size(json_object_get(json_array_get(m, 2), "tool_calls")) == 2,
            "consecutive calls merge into the assistant message before them");
    T_STREQ(sget(m, "2.tool_calls.1.id"), "c2");
    T_STREQ(sget(m, "2.tool_calls.1.type"), "function");
    T_STREQ(sget(m, "2.tool_calls.1.function.name"), "g");
    T_STREQ(sget(m, "2.tool_calls.1.function.arguments"), "{\"x\":1}");
    T_STREQ(sget(m, "3.role"), "tool");
    T_STREQ(sget(m, "3.tool_call_id"), "c1");
    T_STREQ(sget(m, "3.content"), "one");
    T_STREQ(sget(m, "4.content"), "two");
    T_STREQ(sget(m, "5.role"), "assistant");
    T_CHECK(json_is_null(json_object_get(json_array_get(m, 5), "content")),
            "a call with no text before it: content null");
    T_STREQ(sget(m, "5.tool_calls.0.function.name"), "h");
    T_STREQ(sget(m, "6.content"), "a\nb");
    T_CHECK(lm_reqcheck_chat(c, &e) == 0, "the kernel's chat checks pass: %s", e.msg);
    json_decref(c);
    T_END();
}

static void test_request_tools(void)
{
    lm_err e;
    json_t *echo;
    T_BEGIN("responses_request_tools_choice_format_reasoning");
    json_t *c = req("{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":"
                    "\"get\",\"description\":\"d\",\"parameters\":{\"type\":\"object\"},"
                    "\"strict\":true}],\"tool_choice\":{\"type\":\"function\",\"name\":\"get\"},"
                    "\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"s\",\"schema\":"
                    "{\"type\":\"object\"},\"strict\":true}},\"reasoning\":{\"effort\":\"low\","
                    "\"summary\":\"auto\"}}",
                    &echo, &e);
    T_CHECK(c != NULL, "translated: %s", e.msg);
    T_STREQ(sget(c, "tools.0.type"), "function");
    T_STREQ(sget(c, "tools.0.function.name"), "get");
    T_STREQ(sget(c, "tools.0.function.description"), "d");
    T_STREQ(sget(c, "tools.0.function.parameters.type"), "object");
    T_CHECK(
        json_is_true(json_object_get(
            json_object_get(json_array_get(json_object_get(c, "tools"), 0), "function"), "strict")),
        "strict");
    T_STREQ(sget(c, "tool_choice.type"), "function");
    T_STREQ(sget(c, "tool_choice.function.name"), "get");
    T_STREQ(sget(c, "response_format.type"), "json_schema");
    T_STREQ(sget(c, "response_format.json_schema.name"), "s");
    T_STREQ(sget(c, "response_format.json_schema.schema.type"), "object");
    T_STREQ(sget(c, "reasoning_effort"), "low");
    T_STREQ(sget(echo, "tools.0.name"), "get"); /* echoed in the Responses shape */
    json_decref(c);
    json_decref(echo);
    const char *ok[][2] = {
        {"{\"model\":\"m\",\"input\":\"x\",\"tool_choice\":\"required\"}", "required"},
        {"{\"model\":\"m\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_object\"}}}",
         "json_object"},
        {"{\"model\":\"m\",\"input\":\"x\",\"tools\":[],\"text\":{\"format\":{\"type\":"
         "\"text\"}}}",
         NULL}};
    for (size_t i = 0; i < 3; i++) {
        c = req(ok[i][0], NULL, &e);
        T_CHECK(c != NULL, "%s: %s", ok[i][0], e.msg);
        if (i == 0)
            T_STREQ(sget(c, "tool_choice"), ok[i][1]);
        if (i == 1)
            T_STREQ(sget(c, "response_format.type"), ok[i][1]);
        if (i == 2)
            T_CHECK(c && !json_object_get(c, "tools") && !json_object_get(c, "response_format"),
                    "empty tools and text format: nothing");
        json_decref(c);
    }
    T_END();
}

static void test_request_refusals(void)
{
    lm_err e;
    /* body, a part of the message naming the field */
    static const char *const bad[][2] = {
        {"{\"model\":\"m\",\"input\":\"x\",\"store\":true}", "store: true is not supported"},
        {"{\"model\":\"m\",\"input\":\"x\",\"store\":1}", "store must be a boolean"},
        {"{\"model\":\"m\",\"input\":\"x\",\"previous_response_id\":\"resp_1\"}",
         "previous_response_id is not supported"},
        {"{\"model\":\"m\",\"input\":\"x\",\"conversation\":\"conv_1\"}",
         "conversation is not supported"},
        {"{\"model\":\"m\",\"input\":\"x\",\"background\":true}", "background: true"},
        {"{\"model\":\"m\",\"input\":\"x\",\"prompt\":{\"id\":\"p\"}}", "prompt is not supported"},
        {"{\"model\":\"m\",\"input\":\"x\",\"truncation\":\"auto\"}", "truncation"},
        {"{\"model\":\"m\",\"input\":\"x\",\"include\":[\"file_search_call.results\"]}",
         "include[0]"},
        {"{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}",
         "tools[0].type 'web_search' is not supported"},
        {"{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"},"
         "{\"type\":\"code_interpreter\"}]}",
         "tools[1].type 'code_interpreter'"},
        {"{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"function\"}]}",
         "tools[0].name is required"},
        {"{\"model\":\"m\",\"input\":\"x\",\"tool_choice\":{\"type\":\"file_search\"}}",
         "tool_choice must be"},
        {"{\"model\":\"m\",\"input\":\"x\",\"reasoning\":{\"effort\":\"max\"}}",
         "reasoning.effort"},
        {"{\"model\":\"m\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\"}}}",
         "text.format.name is required"},
        {"{\"model\":\"m\",\"input\":\"x\",\"max_output_tokens\":0}", "max_output_tokens"},
        {"{\"input\":\"x\"}", "model is required"},
        {"{\"model\":\"m\"}", "input is required"},
        {"{\"model\":\"m\",\"input\":[]}", "at least one item"},
        {"{\"model\":\"m\",\"input\":\"x\",\"instructions\":5}", "instructions must be a string"},
        {"{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"tool\","
         "\"content\":\"b\"}]}",
         "input[1].role"},
        {"{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":\"a\"},{\"type\":"
         "\"function_call\",\"name\":\"f\",\"arguments\":\"{}\"},{\"type\":"
         "\"function_call_output\",\"output\":\"x\"}]}",
         "input[1].call_id is required"},
        {"{\"model\":\"m\",\"input\":[{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":"
         "\"f\"}]}",
         "input[0].arguments is required"},
        {"{\"model\":\"m\",\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"c\"}]}",
         "input[0].output is required"},
        {"{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_1\"}]}",
         "input[0].type 'item_reference' is not supported"},
        {"{\"model\":\"m\",\"input\":[{\"type\":\"web_search_call\",\"id\":\"ws\"}]}",
         "input[0].type 'web_search_call'"},
        {"{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_file\","
         "\"file_id\":\"f\"}]}]}",
         "input[0].content[0].type 'input_file' is not supported"},
        {"{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\","
         "\"file_id\":\"f\"}]}]}",
         "input[0].content[0].file_id is not supported"},
        {"{\"model\":\"m\",\"input\":[{\"role\":\"system\",\"content\":[{\"type\":\"input_image\","
         "\"image_url\":\"http://x/y.png\"}]}]}",
         "only in a user message"},
        {"{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\"}]}]"
         "}",
         "input[0].content[0].text is required"},
        {"{\"model\":\"m\",\"input\":[{\"role\":\"user\"}]}", "input[0].content is required"},
        {"{\"model\":\"m\",\"input\":[5]}", "input[0] must be an object"},
        {"[1]", "must be a JSON object"},
        {"{\"model\":", "could not parse"},
    };
    T_BEGIN("responses_request_refusals_name_the_field");
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        json_t *echo = NULL;
        json_t *c = req(bad[i][0], &echo, &e);
        T_CHECK(c == NULL && echo == NULL, "accepted: %s", bad[i][0]);
        T_CHECK(e.http_status == 400 && strstr(e.msg, bad[i][1]) != NULL,
                "%s: got %d \"%s\", wanted \"%s\"", bad[i][0], e.http_status, e.msg, bad[i][1]);
        T_STREQ(e.type, "invalid_request_error");
        json_decref(c);
    }
    T_END();
}

static json_t *answer(const char *chat, const lm_usage *u, const json_t *echo)
{
    size_t n = 0;
    char *s = lm_resp_answer(chat, strlen(chat), u, echo, &n);
    json_t *r = s ? json_loadb(s, n, 0, NULL) : NULL;
    free(s);
    return r;
}

static void test_answer(void)
{
    lm_usage u = {10, 5, -1, 3, 2};
    lm_err e;
    json_t *echo;
    T_BEGIN("responses_answer_text_reasoning_calls_usage");
    json_t *c = req("{\"model\":\"m\",\"input\":\"x\",\"instructions\":\"i\",\"temperature\":0.3,"
                    "\"tools\":[{\"type\":\"function\",\"name\":\"f\"}]}",
                    &echo, &e);
    json_decref(c);
    json_t *r =
        answer("{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":7,"
               "\"model\":\"qwen\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
               "\"assistant\",\"content\":\"hello\",\"reasoning_content\":\"think\","
               "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{"
               "\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}",
               &u, echo);
    T_CHECK(r != NULL, "answered");
    T_STREQ(sget(r, "id"), "resp_abc");
    T_STREQ(sget(r, "object"), "response");
    T_CHECK(iget(r, "created_at", NULL) == 7, "created_at");
    T_STREQ(sget(r, "status"), "completed");
    T_STREQ(sget(r, "model"), "qwen");
    T_CHECK(json_is_null(json_object_get(r, "incomplete_details")) &&
                json_is_null(json_object_get(r, "error")),
            "no error, not incomplete");
    T_STREQ(sget(r, "output.0.type"), "reasoning");
    T_STREQ(sget(r, "output.0.content.0.type"), "reasoning_text");
    T_STREQ(sget(r, "output.0.content.0.text"), "think");
    T_STREQ(sget(r, "output.1.type"), "message");
    T_STREQ(sget(r, "output.1.id"), "msg_abc");
    T_STREQ(sget(r, "output.1.role"), "assistant");
    T_STREQ(sget(r, "output.1.status"), "completed");
    T_STREQ(sget(r, "output.1.content.0.type"), "output_text");
    T_STREQ(sget(r, "output.1.content.0.text"), "hello");
    T_CHECK(json_is_array(json_object_get(
                json_array_get(
                    json_object_get(json_array_get(json_object_get(r, "output"), 1), "content"), 0),
                "annotations")),
            "annotations []");
    T_STREQ(sget(r, "output.2.type"), "function_call");
    T_STREQ(sget(r, "output.2.call_id"), "call_1");
    T_STREQ(sget(r, "output.2.name"), "f");
    T_STREQ(sget(r, "output.2.arguments"), "{}");
    T_STREQ(sget(r, "output.2.status"), "completed");
    T_CHECK(strncmp(sget(r, "output.2.id") ? sget(r, "output.2.id") : "", "fc_", 3) == 0, "fc_ id");
    json_t *us = json_object_get(r, "usage");
    T_CHECK(iget(us, "input_tokens", NULL) == 10 && iget(us, "output_tokens", NULL) == 5 &&
                iget(us, "total_tokens", NULL) == 15,
            "usage counts, total derived");
    T_CHECK(iget(us, "input_tokens_details", "cached_tokens") == 3 &&
                iget(us, "output_tokens_details", "reasoning_tokens") == 2,
            "usage details");
    T_STREQ(sget(r, "instructions"), "i");
    T_CHECK(json_real_value(json_object_get(r, "temperature")) == 0.3, "echo temperature");
    T_STREQ(sget(r, "tools.0.name"), "f");
    T_STREQ(sget(r, "tool_choice"), "auto");
    T_STREQ(sget(r, "text.format.type"), "text");
    T_CHECK(json_is_true(json_object_get(r, "parallel_tool_calls")) &&
                json_is_false(json_object_get(r, "store")),
            "defaults");
    json_decref(r);
    json_decref(echo);

    r = answer("{\"id\":\"x1\",\"model\":\"m\",\"choices\":[{\"message\":{\"role\":"
               "\"assistant\",\"content\":\"cut\"},\"finish_reason\":\"length\"}],\"usage\":{"
               "\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6,"
               "\"prompt_tokens_details\":{\"cached_tokens\":1}}}",
               NULL, NULL);
    T_STREQ(sget(r, "id"), "resp_x1");
    T_STREQ(sget(r, "status"), "incomplete");
    T_STREQ(sget(r, "incomplete_details.reason"), "max_output_tokens");
    T_STREQ(sget(r, "output.0.status"), "incomplete");
    T_CHECK(iget(json_object_get(r, "usage"), "total_tokens", NULL) == 6 &&
                iget(json_object_get(r, "usage"), "input_tokens_details", "cached_tokens") == 1,
            "usage read from the answer when none is given");
    T_CHECK(json_is_null(json_object_get(r, "instructions")) &&
                json_array_size(json_object_get(r, "tools")) == 0,
            "defaults without an echo");
    json_decref(r);

    r = answer("{\"id\":\"x\",\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":"
               "null,\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":"
               "\"1\"}},{\"function\":{\"name\":\"g\",\"arguments\":\"2\"}}]},\"finish_reason\":"
               "\"tool_calls\"}]}",
               NULL, NULL);
    T_CHECK(json_array_size(json_object_get(r, "output")) == 2, "only calls: no message item");
    T_STREQ(sget(r, "output.1.name"), "g");
    T_CHECK(sget(r, "output.1.call_id") && strncmp(sget(r, "output.1.call_id"), "call_", 5) == 0,
            "a call without an id gets one");
    json_decref(r);

    r = answer("{\"choices\":[{\"message\":{\"content\":\"\"},\"finish_reason\":"
               "\"content_filter\"}]}",
               NULL, NULL);
    T_STREQ(sget(r, "status"), "incomplete");
    T_STREQ(sget(r, "incomplete_details.reason"), "content_filter");
    T_STREQ(sget(r, "output.0.content.0.text"), "");
    json_decref(r);
    size_t n;
    T_CHECK(lm_resp_answer("[1]", 3, NULL, NULL, &n) == NULL, "not an object: NULL");
    T_CHECK(lm_resp_answer("{", 1, NULL, NULL, &n) == NULL, "not JSON: NULL");
    T_END();
}

/* ---- stream ---- */

typedef struct {
    json_t *ev[256];
    char type[256][64];
    int n;
    int ok; /* every event well formed, "event:" == data.type, sequence 0.. */
} events_t;

static void parse_sse(const lm_buf_t *b, events_t *out)
{
    memset(out, 0, sizeof(*out));
    out->ok = 1;
    const char *p = b->len ? b->p : "", *end = p + b->len;
    while (p < end && out->n < 256) {
        const char *stop = strstr(p, "\n\n");
        if (stop == NULL || strncmp(p, "event: ", 7) != 0) {
            out->ok = 0;
            return;
        }
        const char *nl = strchr(p, '\n');
        snprintf(out->type[out->n], 64, "%.*s", (int)(nl - p - 7), p + 7);
        if (strncmp(nl + 1, "data: ", 6) != 0) {
            out->ok = 0;
            return;
        }
        json_t *j = json_loadb(nl + 7, (size_t)(stop - nl - 7), 0, NULL);
        out->ev[out->n] = j;
        if (!json_is_object(j) ||
            strcmp(sget(j, "type") ? sget(j, "type") : "", out->type[out->n]) ||
            iget(j, "sequence_number", NULL) != out->n)
            out->ok = 0;
        out->n++;
        p = stop + 2;
    }
}

static void events_free(events_t *ev)
{
    for (int i = 0; i < ev->n; i++)
        json_decref(ev->ev[i]);
}

static int feed(lm_resp_stream_t *st, lm_buf_t *out, const char *chunk)
{
    return lm_resp_stream_chunk(st, chunk, strlen(chunk), out);
}

static int find(const events_t *ev, const char *type, int from)
{
    for (int i = from; i < ev->n; i++)
        if (!strcmp(ev->type[i], type))
            return i;
    return -1;
}

static void test_stream_text(void)
{
    lm_buf_t out = {0};
    events_t ev;
    lm_usage u = LM_USAGE_UNKNOWN;
    T_BEGIN("responses_stream_text_events_in_order");
    lm_resp_stream_t *st = lm_resp_stream_new("m", "rid", 5, NULL);
    T_CHECK(feed(st, &out,
                 "{\"id\":\"chatcmpl-rid\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                 "\"assistant\",\"content\":\"\"}}]}") == 0,
            "chunk");
    feed(st, &out, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}");
    feed(st, &out, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}");
    feed(st, &out, "{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}");
    feed(st, &out, "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}");
    feed(st, &out,
         "{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
         "\"total_tokens\":5}}");
    T_CHECK(lm_resp_stream_end(st, &u, NULL, &out) == 0, "end");
    T_CHECK(lm_resp_stream_end(st, &u, NULL, &out) == 0, "a second end writes nothing");
    feed(st, &out, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"late\"}}]}");
    parse_sse(&out, &ev);
    T_CHECK(ev.ok, "well formed with sequence numbers: %s", lm_buf_cstr(&out));
    static const char *const want[] = {"response.created",           "response.in_progress",
                                       "response.output_item.added", "response.content_part.added",
                                       "response.output_text.delta", "response.output_text.delta",
                                       "response.output_text.done",  "response.content_part.done",
                                       "response.output_item.done",  "response.completed"};
    T_CHECK(ev.n == 10, "10 events, got %d", ev.n);
    for (int i = 0; i < ev.n && i < 10; i++)
        T_STREQ(ev.type[i], want[i]);
    if (ev.n == 10) {
        T_STREQ(sget(ev.ev[0], "response.id"), "resp_rid");
        T_STREQ(sget(ev.ev[0], "response.status"), "in_progress");
        T_CHECK(json_array_size(json_object_get(json_object_get(ev.ev[0], "response"), "output")) ==
                    0,
                "created: output []");
        T_STREQ(sget(ev.ev[2], "item.type"), "message");
        T_CHECK(json_array_size(json_object_get(json_object_get(ev.ev[2], "item"), "content")) == 0,
                "the announced message is empty");
        T_STREQ(sget(ev.ev[3], "part.text"), "");
        T_STREQ(sget(ev.ev[4], "delta"), "Hel");
        T_STREQ(sget(ev.ev[4], "item_id"), sget(ev.ev[2], "item.id"));
        T_CHECK(iget(ev.ev[4], "output_index", NULL) == 0 &&
                    iget(ev.ev[4], "content_index", NULL) == 0,
                "indexes");
        T_STREQ(sget(ev.ev[6], "text"), "Hello");
        T_STREQ(sget(ev.ev[7], "part.text"), "Hello");
        T_STREQ(sget(ev.ev[8], "item.content.0.text"), "Hello");
        T_STREQ(sget(ev.ev[8], "item.status"), "completed");
        T_STREQ(sget(ev.ev[9], "response.status"), "completed");
        T_STREQ(sget(ev.ev[9], "response.output.0.content.0.text"), "Hello");
        T_CHECK(iget(json_object_get(ev.ev[9], "response"), "created_at", NULL) == 5, "created");
        json_t *us = json_object_get(json_object_get(ev.ev[9], "response"), "usage");
        T_CHECK(iget(us, "input_tokens", NULL) == 3 && iget(us, "output_tokens", NULL) == 2 &&
                    iget(us, "total_tokens", NULL) == 5,
                "usage from the usage chunk when the end reports none");
    }
    events_free(&ev);
    lm_resp_stream_free(st);
    lm_buf_free(&out);
    T_END();
}

static void test_stream_calls(void)
{
    lm_buf_t out = {0};
    events_t ev;
    lm_usage u = {7, 9, -1, -1, 4};
    T_BEGIN("responses_stream_reasoning_text_and_tool_calls");
    lm_resp_stream_t *st = lm_resp_stream_new("m", "r2", 1, NULL);
    feed(st, &out,
         "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
         "\"reasoning_content\":\"hm\"}}]}");
    feed(st, &out, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}");
    feed(st, &out,
         "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\","
         "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}");
    feed(st, &out,
         "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"c2\","
         "\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}");
    feed(st, &out,
         "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
         "\"arguments\":\":1}\"}}]}}]}");
    feed(st, &out, "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}");
    T_CHECK(lm_resp_stream_end(st, &u, NULL, &out) == 0, "end");
    parse_sse(&out, &ev);
    T_CHECK(ev.ok, "well formed: %s", lm_buf_cstr(&out));
    int i = find(&ev, "response.output_item.added", 0);
    T_CHECK(i > 0 && !strcmp(sget(ev.ev[i], "item.type"), "reasoning"), "reasoning first");
    int rd = find(&ev, "response.reasoning_text.delta", 0);
    T_CHECK(rd > 0 && !strcmp(sget(ev.ev[rd], "delta"), "hm"), "reasoning delta");
    T_CHECK(find(&ev, "response.reasoning_text.done", 0) <
                find(&ev, "response.output_text.delta", 0),
            "the reasoning item is done before the text starts");
    int last = ev.n - 1;
    json_t *r = last >= 0 ? json_object_get(ev.ev[last], "response") : NULL;
    T_STREQ(ev.type[last], "response.completed");
    T_CHECK(json_array_size(json_object_get(r, "output")) == 4, "4 items");
    T_STREQ(sget(r, "output.0.type"), "reasoning");
    T_STREQ(sget(r, "output.0.content.0.text"), "hm");
    T_STREQ(sget(r, "output.1.content.0.text"), "ok");
    T_STREQ(sget(r, "output.2.type"), "function_call");
    T_STREQ(sget(r, "output.2.call_id"), "c1");
    T_STREQ(sget(r, "output.2.arguments"), "{\"a\":1}");
    T_STREQ(sget(r, "output.2.status"), "completed");
    T_STREQ(sget(r, "output.3.call_id"), "c2");
    T_STREQ(sget(r, "output.3.name"), "g");
    T_STREQ(sget(r, "output.3.arguments"), "{}");
    int ad = find(&ev, "response.function_call_arguments.done", 0);
    T_CHECK(ad > 0 && !strcmp(sget(ev.ev[ad], "arguments"), "{\"a\":1}") &&
                !strcmp(sget(ev.ev[ad], "name"), "f") && iget(ev.ev[ad], "output_index", NULL) == 2,
            "arguments done for the first call");
    int dd = find(&ev, "response.function_call_arguments.delta", 0);
    T_CHECK(dd > 0 && iget(ev.ev[dd], "output_index", NULL) == 2 &&
                !strcmp(sget(ev.ev[dd], "item_id"), sget(r, "output.2.id")),
            "argument deltas name their item");
    T_CHECK(iget(json_object_get(r, "usage"), "output_tokens_details", "reasoning_tokens") == 4 &&
                iget(json_object_get(r, "usage"), "total_tokens", NULL) == 16,
            "the end's usage");
    events_free(&ev);
    lm_resp_stream_free(st);
    lm_buf_free(&out);
    T_END();
}

static void test_stream_ends(void)
{
    lm_buf_t out = {0};
    events_t ev;
    lm_err e;
    T_BEGIN("responses_stream_incomplete_failed_and_empty");
    lm_resp_stream_t *st = lm_resp_stream_new("m", "r3", 1, NULL);
    feed(st, &out,
         "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"cut\"},"
         "\"finish_reason\":\"length\"}]}");
    lm_resp_stream_end(st, NULL, NULL, &out);
    parse_sse(&out, &ev);
    T_CHECK(ev.ok && ev.n > 0, "well formed");
    T_STREQ(ev.type[ev.n - 1], "response.incomplete");
    T_STREQ(sget(ev.ev[ev.n - 1], "response.incomplete_details.reason"), "max_output_tokens");
    T_STREQ(sget(ev.ev[ev.n - 1], "response.output.0.status"), "incomplete");
    events_free(&ev);
    lm_resp_stream_free(st);
    lm_buf_reset(&out);

    st = lm_resp_stream_new("m", "r4", 1, NULL);
    feed(st, &out, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"par\"}}]}");
    feed(st, &out, "not json");
    lm_err_set(&e, -1, 502, "api_error", "upstream_error", "upstream closed the connection");
    T_CHECK(lm_resp_stream_end(st, NULL, &e, &out) == 0, "end with an error");
    parse_sse(&out, &ev);
    T_CHECK(ev.ok && ev.n > 0, "well formed");
    T_STREQ(ev.type[ev.n - 1], "response.failed");
    T_STREQ(sget(ev.ev[ev.n - 1], "response.status"), "failed");
    T_STREQ(sget(ev.ev[ev.n - 1], "response.error.code"), "upstream_error");
    T_STREQ(sget(ev.ev[ev.n - 1], "response.error.message"), "upstream closed the connection");
    events_free(&ev);
    lm_resp_stream_free(st);
    lm_buf_reset(&out);

    st = lm_resp_stream_new("m", "r5", 1, NULL);
    lm_resp_stream_end(st, NULL, NULL, &out);
    parse_sse(&out, &ev);
    T_CHECK(ev.ok && ev.n == 8, "created, in_progress, an empty message (5), completed: %d", ev.n);
    T_STREQ(ev.type[0], "response.created");
    T_STREQ(ev.type[ev.n - 1], "response.completed");
    T_STREQ(sget(ev.ev[ev.n - 1], "response.output.0.content.0.text"), "");
    events_free(&ev);
    lm_resp_stream_free(st);
    lm_buf_reset(&out);

    st = lm_resp_stream_new(NULL, NULL, 0, NULL);
    lm_err_set(&e, -1, 429, "rate_limit_error", NULL, "slow down");
    lm_resp_stream_end(st, NULL, &e, &out);
    parse_sse(&out, &ev);
    T_CHECK(ev.ok && ev.n == 3, "created, in_progress, failed");
    T_STREQ(sget(ev.ev[2], "response.error.code"), "rate_limit_exceeded");
    events_free(&ev);
    lm_resp_stream_free(st);
    lm_buf_free(&out);
    T_END();
}

int main(void)
{
    test_request_string();
    test_request_items();
    test_request_tools();
    test_request_refusals();
    test_answer();
    test_stream_text();
    test_stream_calls();
    test_stream_ends();
    T_EXIT();
}
