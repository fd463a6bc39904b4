/* tools.c - tool calls, finish reasons and response envelopes (lmsdk.h). */
#include "lmsdk.h"

#include <stdio.h>
#include <stdlib.h>

json_t *lms_tool_args_text(const json_t *args)
{
    if (json_is_string(args))
        return json_string(json_string_value(args));
    if (args == NULL || json_is_null(args))
        return json_string("{}");
    return lms_json_text(args);
}

json_t *lms_tool_args_object(const char *text)
{
    if (text == NULL || text[0] == '\0')
        return json_object();
    json_t *o = json_loads(text, 0, NULL);
    if (json_is_object(o))
        return o;
    json_decref(o);
    return NULL;
}

json_t *lms_tool_call_id(const lm_call *c, size_t n)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "call_%s_%zu",
             c && lms_nonempty(c->request_id) ? c->request_id : "lm", n);
    return json_string(buf);
}

json_t *lms_tool_call(const lm_call *c, size_t n, json_t *id, const char *name, json_t *args)
{
    if (id == NULL)
        id = lms_tool_call_id(c, n);
    if (args == NULL)
        args = json_string("{}");
    return json_pack("{s:o,s:s,s:{s:s,s:o}}", "id", id, "type", "function", "function", "name",
                     name ? name : "", "arguments", args);
}

const char *lms_finish_map(const lms_rename *map, const char *reason, int had_tools)
{
    if (reason == NULL || reason[0] == '\0')
        return NULL;
    const char *to = "stop";
    for (; map && map->from; map++)
        if (strcmp(map->from, reason) == 0) {
            to = map->to;
            break;
        }
    if (to == NULL)
        return NULL; /* mapped to "still generating" */
    return had_tools && strcmp(to, "stop") == 0 ? "tool_calls" : to;
}

json_t *lms_chat_response(const lm_host_api *h, const lm_call *c, const char *text, size_t n,
                          json_t *tool_calls, const char *finish_reason)
{
    char id[96];
    snprintf(id, sizeof(id), "chatcmpl-%s", c && c->request_id ? c->request_id : "lm");
    json_t *msg = json_pack("{s:s,s:o}", "role", "assistant", "content",
                            text ? json_stringn(text, n) : json_null());
    if (msg && tool_calls && json_array_size(tool_calls) > 0)
        json_object_set(msg, "tool_calls", tool_calls);
    json_decref(tool_calls);
    if (msg == NULL)
        return NULL;
    return json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:s}]}", "id", id, "object", "chat.completion",
                     "created", (json_int_t)(h && LM_HOST_HAS(h, unix_time) ? h->unix_time() : 0),
                     "model", c && c->model ? c->model : "", "choices", "index", 0, "message", msg,
                     "finish_reason", finish_reason ? finish_reason : "stop");
}

json_t *lms_embedding_list(const lm_call *c, json_t *vectors)
{
    json_t *data = json_array(), *v;
    size_t i;
    if (data == NULL || !json_is_array(vectors)) {
        json_decref(data);
        json_decref(vectors);
        return NULL;
    }
    json_array_foreach (vectors, i, v) {
        if (lms_aadd(data, json_pack("{s:s,s:I,s:O}", "object", "embedding", "index", (json_int_t)i,
                                     "embedding", v)) < 0) {
            json_decref(data);
            json_decref(vectors);
            return NULL;
        }
    }
    json_decref(vectors);
    return json_pack("{s:s,s:o,s:s}", "object", "list", "data", data, "model",
                     c && c->model ? c->model : "");
}

int lms_stop_list(const json_t *stop, size_t max, json_t **out, lm_err *e)
{
    size_t i;
    json_t *s;
    *out = NULL;
    if (stop == NULL || json_is_null(stop))
        return LM_OK;
    if (json_is_string(stop)) {
        *out = json_pack("[O]", stop);
        return *out ? LM_OK : lms_oom(e);
    }
    if (!json_is_array(stop))
        return lms_bad_request(e, "stop must be a string or an array of strings");
    if (json_array_size(stop) > max)
        return lms_bad_request(e, "stop takes at most %zu sequences on this model", max);
    json_array_foreach (stop, i, s)
        if (!json_is_string(s))
            return lms_bad_request(e, "stop[%zu] must be a string", i);
    *out = json_deep_copy(stop);
    return *out ? LM_OK : lms_oom(e);
}
