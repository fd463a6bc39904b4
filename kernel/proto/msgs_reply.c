/* msgs_reply.c - a canonical chat.completion -> an Anthropic message, an
 * error -> Anthropic's error body and status, and the Messages API's
 * table (msgs.h). Pure; the request's worker; text returned is the
 * caller's to free(). */
#include "proto/msgs.h"

#include "proto/inbound.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lm_msgs_stop_reason(const char *finish)
{
    if (finish == NULL || strcmp(finish, "stop") == 0)
        return "end_turn";
    if (strcmp(finish, "length") == 0)
        return "max_tokens";
    if (strcmp(finish, "tool_calls") == 0 || strcmp(finish, "function_call") == 0)
        return "tool_use";
    if (strcmp(finish, "content_filter") == 0)
        return "refusal";
    return "end_turn";
}

static json_int_t known(int64_t v)
{
    return v > 0 ? (json_int_t)v : 0;
}

/* Anthropic counts cached input apart from input_tokens; the canonical
 * prompt count includes it. */
static json_t *usage_json(const lm_usage *u)
{
    json_int_t cached = known(u->cached);
    json_int_t in = known(u->prompt) > cached ? known(u->prompt) - cached : known(u->prompt);
    json_t *o = json_pack("{s:I,s:I}", "input_tokens", in, "output_tokens", known(u->completion));
    if (cached > 0 && in != known(u->prompt))
        json_object_set_new(o, "cache_read_input_tokens", json_integer(cached));
    return o;
}

/* A tool call's arguments (JSON text) as the tool_use input object; text
 * that is not an object (a truncated answer) is kept under "_raw" rather
 * than lost. */
static json_t *tool_input(const char *args)
{
    json_t *v = args ? json_loads(args, 0, NULL) : NULL;
    if (json_is_object(v))
        return v;
    json_decref(v);
    if (args == NULL || args[0] == '\0')
        return json_object();
    return json_pack("{s:s}", "_raw", args);
}

char *lm_msgs_answer(const char *text, size_t n, const lm_usage *u, size_t *out_len)
{
    json_t *cc = json_loadb(text, n, 0, NULL);
    json_t *ch = json_array_get(json_object_get(cc, "choices"), 0);
    json_t *msg = json_object_get(ch, "message");
    json_t *content = json_array();
    const char *s = json_string_value(json_object_get(msg, "reasoning_content"));
    if (s && *s)
        json_array_append_new(content, json_pack("{s:s,s:s,s:s}", "type", "thinking", "thinking", s,
                                                 "signature", ""));
    s = json_string_value(json_object_get(msg, "content"));
    if (s && *s)
        json_array_append_new(content, json_pack("{s:s,s:s}", "type", "text", "text", s));
    size_t i;
    json_t *tc;
    json_array_foreach (json_object_get(msg, "tool_calls"), i, tc) {
        json_t *fn = json_object_get(tc, "function");
        const char *id = json_string_value(json_object_get(tc, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_array_append_new(
            content, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id ? id : "", "name",
                               name ? name : "", "input",
                               tool_input(json_string_value(json_object_get(fn, "arguments")))));
    }
    const char *cid = json_string_value(json_object_get(cc, "id"));
    const char *model = json_string_value(json_object_get(cc, "model"));
    char id[160];
    snprintf(id, sizeof(id), "msg_%s", cid ? cid : "longmen");
    json_t *out =
        json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:n,s:o}", "id", id, "type", "message", "role",
                  "assistant", "model", model ? model : "", "content", content, "stop_reason",
                  lm_msgs_stop_reason(json_string_value(json_object_get(ch, "finish_reason"))),
                  "stop_sequence", "usage", usage_json(u));
    json_decref(cc);
    char *body = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (body)
        *out_len = strlen(body);
    return body;
}

/* Anthropic's error type for a status; 503 (the gateway or every channel
 * overloaded) is its 529 overloaded_error. */
static const char *error_type(int *status)
{
    switch (*status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: *status = 529; return "overloaded_error";
    default: return *status >= 500 ? "api_error" : "invalid_request_error";
    }
}

char *lm_msgs_error(const lm_err *e, int *status)
{
    *status = e->http_status ? e->http_status : 500;
    const char *type = error_type(status);
    json_t *o = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", type, "message",
                          e->msg[0] ? e->msg : "error");
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL) /* invalid UTF-8 in msg, or no memory: a fixed body */
        s = strdup("{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"error\"}}");
    return s;
}

const lm_inbound_t lm_msgs_api = {
    .name = "messages",
    .key_header = "x-api-key",
    .request = lm_msgs_request,
    .answer = lm_msgs_answer,
    .stream_new = lm_msgs_stream_new,
    .stream_chunk = lm_msgs_stream_chunk,
    .stream_end = lm_msgs_stream_end,
    .stream_free = lm_msgs_stream_free,
    .error = lm_msgs_error,
    .native_plugin = "claude",
    .request_native = lm_msgs_request_native,
};
