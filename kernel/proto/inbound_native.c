/* inbound_native.c - the canonical stand-in of a request that only a
 * channel speaking the inbound API natively can serve (Messages: msgs.h;
 * Responses: responses.h). Thread: any. */
#include "proto/msgs.h"
#include "proto/responses.h"

#include <stdlib.h>
#include <string.h>

static int is(const json_t *b, const char *t)
{
    const char *s = json_string_value(json_object_get(b, "type"));
    return s && strcmp(s, t) == 0;
}

/* A document with a binary source (a PDF): a text placeholder. */
static int binary_document(const json_t *b)
{
    const json_t *src = json_object_get(b, "source");
    return is(b, "document") && !is(src, "text") && !is(src, "content");
}

/* Blocks the translation takes; the rest (server tool calls and results,
 * search results, ...) are Anthropic's own and dropped from the stand-in. */
static int known_block(const json_t *b)
{
    static const char *const kinds[] = {"text",        "image",    "document",         "tool_use",
                                        "tool_result", "thinking", "redacted_thinking"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (is(b, kinds[i]))
            return 1;
    return 0;
}

static void strip_blocks(json_t *content, int in_tool_result)
{
    for (size_t i = json_array_size(content); i-- > 0;) {
        json_t *b = json_array_get(content, i);
        if (binary_document(b))
            json_array_set_new(content, i,
                               json_pack("{s:s,s:s}", "type", "text", "text", "[document]"));
        else if (!known_block(b) || (in_tool_result && !is(b, "text") && !is(b, "document")))
            json_array_remove(content, i);
        else if (is(b, "tool_result") && json_is_array(json_object_get(b, "content")))
            strip_blocks(json_object_get(b, "content"), 1);
    }
}

json_t *lm_msgs_request_native(const char *body, size_t n, lm_err *e)
{
    json_t *in = json_loadb(body, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(in)) {
        json_decref(in);
        return lm_msgs_request(body, n, e);
    }
    json_t *tools = json_object_get(in, "tools");
    for (size_t i = json_array_size(tools); i-- > 0;) {
        const json_t *t = json_array_get(tools, i);
        if (json_is_string(json_object_get(t, "type")) && !is(t, "custom"))
            json_array_remove(tools, i); /* a server tool */
    }
    if (json_is_array(tools) && json_array_size(tools) == 0) {
        json_object_del(in, "tools");
        json_object_del(in, "tool_choice");
    }
    size_t i;
    json_t *m;
    json_array_foreach (json_object_get(in, "messages"), i, m)
        if (json_is_array(json_object_get(m, "content")))
            strip_blocks(json_object_get(m, "content"), 0);
    char *text = json_dumps(in, JSON_COMPACT);
    json_decref(in);
    if (text == NULL)
        return lm_msgs_request(body, n, e);
    json_t *canon = lm_msgs_request(text, strlen(text), e);
    free(text);
    return canon;
}

/* Responses: what a stateless gateway refuses but an upstream that serves
 * /responses itself takes (its state, built-in tools, include, reasoning
 * options) is left out of the stand-in. */
json_t *lm_resp_request_native(const char *body, size_t n, lm_err *e)
{
    static const char *const stateful[] = {"previous_response_id",
                                           "conversation",
                                           "background",
                                           "store",
                                           "include",
                                           "reasoning",
                                           "prompt"};
    json_t *in = json_loadb(body, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(in)) {
        json_decref(in);
        return lm_resp_request(body, n, NULL, e);
    }
    for (size_t i = 0; i < sizeof(stateful) / sizeof(stateful[0]); i++)
        json_object_del(in, stateful[i]);
    json_t *tools = json_object_get(in, "tools");
    for (size_t i = json_array_size(tools); i-- > 0;)
        if (!is(json_array_get(tools, i), "function"))
            json_array_remove(tools, i); /* a built-in tool */
    if (json_is_array(tools) && json_array_size(tools) == 0) {
        json_object_del(in, "tools");
        json_object_del(in, "tool_choice");
    }
    char *text = json_dumps(in, JSON_COMPACT);
    json_decref(in);
    if (text == NULL)
        return lm_resp_request(body, n, NULL, e);
    json_t *canon = lm_resp_request(text, strlen(text), NULL, e);
    free(text);
    return canon;
}
