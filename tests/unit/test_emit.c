/* The kernel keeps the client stream protocol for every plugin (ABI 1.2):
 * the assistant role on each choice's first delta, exactly one
 * finish_reason, "tool_calls" after tool calls, and a synthesised finish
 * when the upstream ended without one. */
#include "t.h"
#include "plugin/host.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    json_t *chunks;
} sink_t;

static int sink(void *arg, const char *json, size_t len)
{
    sink_t *s = arg;
    json_array_append_new(s->chunks, json_loadb(json, len, 0, NULL));
    return 0;
}

static json_t *choice(sink_t *s, size_t i)
{
    return json_array_get(json_object_get(json_array_get(s->chunks, i), "choices"), 0);
}

static json_t *J(const char *t)
{
    return json_loads(t, 0, NULL);
}

static void test_role_and_one_finish(void)
{
    sink_t s = {json_array()};
    lm_emit_t e;
    T_BEGIN("emit_role_once_finish_once");
    lm_emit_init(&e, LM_USAGE_CUMULATIVE, "r1", "m", 1, sink, &s);
    lm_host_table.emit_delta(&e, 0, J("{\"content\":\"a\"}"), NULL);
    lm_host_table.emit_delta(&e, 0, J("{\"content\":\"b\"}"), NULL);
    lm_host_table.emit_delta(&e, 0, NULL, "stop");
    lm_host_table.emit_delta(&e, 0, NULL, "stop");                      /* a second finish */
    lm_host_table.emit_delta(&e, 0, J("{\"content\":\"late\"}"), NULL); /* after the finish */
    lm_host_table.emit_delta(&e, 0, J("{}"), NULL);                     /* empty */
    T_CHECK(json_array_size(s.chunks) == 3, "3 chunks, got %zu", json_array_size(s.chunks));
    T_STREQ(json_string_value(json_object_get(json_object_get(choice(&s, 0), "delta"), "role")),
            "assistant");
    T_CHECK(json_object_get(json_object_get(choice(&s, 1), "delta"), "role") == NULL,
            "role only once");
    T_STREQ(json_string_value(json_object_get(choice(&s, 2), "finish_reason")), "stop");
    T_CHECK(lm_emit_close(&e) == LM_OK && json_array_size(s.chunks) == 3, "nothing to close");
    json_decref(s.chunks);
    T_END();
}

static void test_synthesised_finish(void)
{
    sink_t s = {json_array()};
    lm_emit_t e;
    T_BEGIN("emit_close_synthesises_tool_calls_finish");
    lm_emit_init(&e, LM_USAGE_CUMULATIVE, "r2", "m", 1, sink, &s);
    lm_host_table.emit_chunk(
        &e, J("{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\","
              "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}"));
    lm_host_table.emit_chunk(&e, J("{\"choices\":[],\"usage\":{\"prompt_tokens\":3}}"));
    T_CHECK(json_array_size(s.chunks) == 1, "usage-only chunk not forwarded");
    json_t *d = json_object_get(choice(&s, 0), "delta");
    T_STREQ(json_string_value(json_object_get(d, "role")), "assistant");
    T_CHECK(json_object_get(d, "content") == NULL, "no empty content beside tool calls");
    T_CHECK(lm_emit_close(&e) == LM_OK && json_array_size(s.chunks) == 2, "closed");
    T_STREQ(json_string_value(json_object_get(choice(&s, 1), "finish_reason")), "tool_calls");
    T_CHECK(e.usage_seen && e.usage.prompt == 3, "usage kept for the kernel's own chunk");
    json_decref(s.chunks);
    T_END();
}

static void test_stop_after_tools(void)
{
    sink_t s = {json_array()};
    lm_emit_t e;
    T_BEGIN("emit_stop_after_tool_calls_is_tool_calls");
    lm_emit_init(&e, LM_USAGE_CUMULATIVE, "r3", "m", 1, sink, &s);
    lm_host_table.emit_delta(
        &e, 1, J("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}"), NULL);
    lm_host_table.emit_delta(&e, 1, NULL, "stop");
    T_STREQ(json_string_value(json_object_get(choice(&s, 1), "finish_reason")), "tool_calls");
    T_CHECK(json_integer_value(json_object_get(choice(&s, 1), "index")) == 1, "index kept");
    json_decref(s.chunks);
    T_END();
}

int main(void)
{
    test_role_and_one_finish();
    test_synthesised_finish();
    test_stop_after_tools();
    T_EXIT();
}
