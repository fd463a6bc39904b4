/* responses_out.c - the Responses API's response object, and a whole
 * canonical chat.completion as one (responses.h). Pure; any thread. */
#include "proto/responses.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *lm_resp_object(const char *base, int64_t created, const char *model, const json_t *echo)
{
    char id[160];
    snprintf(id, sizeof(id), "resp_%s", base ? base : "0");
    /* Every field the SDKs' Response type declares, with the API's
     * defaults; the request's own values (the echo) override them. */
    json_t *o =
        json_pack("{s:s,s:s,s:I,s:s,s:b,s:n,s:n,s:n,s:n,s:{},s:s,s:[],s:b,s:n,"
                  "s:{s:n,s:n},s:b,s:n,s:{s:{s:s}},s:s,s:[],s:n,s:s,s:n}",
                  "id", id, "object", "response", "created_at", (json_int_t)created, "status",
                  "in_progress", "background", 0, "error", "incomplete_details", "instructions",
                  "max_output_tokens", "metadata", "model", model ? model : "", "output",
                  "parallel_tool_calls", 1, "previous_response_id", "reasoning", "effort",
                  "summary", "store", 0, "temperature", "text", "format", "type", "text",
                  "tool_choice", "auto", "tools", "top_p", "truncation", "disabled", "usage");
    if (o && json_is_object(echo) && json_object_update(o, (json_t *)echo) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *lm_resp_usage(const lm_usage *u)
{
    int64_t in = u && u->prompt > 0 ? u->prompt : 0,
            out = u && u->completion > 0 ? u->completion : 0;
    int64_t total = u && u->total >= 0 ? u->total : in + out;
    int64_t cached = u && u->cached > 0 ? u->cached : 0;
    int64_t reasoning = u && u->reasoning > 0 ? u->reasoning : 0;
    return json_pack("{s:I,s:{s:I},s:I,s:{s:I},s:I}", "input_tokens", (json_int_t)in,
                     "input_tokens_details", "cached_tokens", (json_int_t)cached, "output_tokens",
                     (json_int_t)out, "output_tokens_details", "reasoning_tokens",
                     (json_int_t)reasoning, "total_tokens", (json_int_t)total);
}

int lm_resp_set_status(json_t *resp, const char *finish)
{
    const char *reason = NULL;
    if (finish && strcmp(finish, "length") == 0)
        reason = "max_output_tokens";
    else if (finish && strcmp(finish, "content_filter") == 0)
        reason = "content_filter";
    json_object_set_new(resp, "status", json_string(reason ? "incomplete" : "completed"));
    json_object_set_new(resp, "incomplete_details",
                        reason ? json_pack("{s:s}", "reason", reason) : json_null());
    return reason != NULL;
}

/* Usage from the answer's own OpenAI usage object (unknown stays -1). */
static void usage_from(const json_t *ju, lm_usage *u)
{
    json_t *v;
    *u = (lm_usage)LM_USAGE_UNKNOWN;
    if (json_is_integer(v = json_object_get(ju, "prompt_tokens")))
        u->prompt = json_integer_value(v);
    if (json_is_integer(v = json_object_get(ju, "completion_tokens")))
        u->completion = json_integer_value(v);
    if (json_is_integer(v = json_object_get(ju, "total_tokens")))
        u->total = json_integer_value(v);
    v = json_object_get(json_object_get(ju, "prompt_tokens_details"), "cached_tokens");
    if (json_is_integer(v))
        u->cached = json_integer_value(v);
    v = json_object_get(json_object_get(ju, "completion_tokens_details"), "reasoning_tokens");
    if (json_is_integer(v))
        u->reasoning = json_integer_value(v);
}

static int add_items(json_t *output, const json_t *msg, const char *base, int incomplete)
{
    char id[180];
    const char *st = incomplete ? "incomplete" : "completed";
    json_t *rsn = json_object_get(msg, "reasoning_content"),
           *text = json_object_get(msg, "content");
    json_t *refusal = json_object_get(msg, "refusal"), *calls = json_object_get(msg, "tool_calls");
    int rc = 0;
    if (json_string_length(rsn) > 0) {
        snprintf(id, sizeof(id), "rs_%s", base);
        rc |= json_array_append_new(output,
                                    json_pack("{s:s,s:s,s:[],s:[{s:s,s:O}],s:s}", "id", id, "type",
                                              "reasoning", "summary", "content", "type",
                                              "reasoning_text", "text", rsn, "status", st));
    }
    /* A message item unless the answer is only tool calls. */
    if (json_string_length(text) > 0 || json_string_length(refusal) > 0 ||
        json_array_size(calls) == 0) {
        json_t *part =
            json_string_length(refusal) > 0 && json_string_length(text) == 0
                ? json_pack("{s:s,s:O}", "type", "refusal", "refusal", refusal)
                : json_pack("{s:s,s:s,s:[]}", "type", "output_text", "text",
                            json_is_string(text) ? json_string_value(text) : "", "annotations");
        snprintf(id, sizeof(id), "msg_%s", base);
        rc |= json_array_append_new(output, json_pack("{s:s,s:s,s:s,s:s,s:[o*]}", "id", id, "type",
                                                      "message", "status", st, "role", "assistant",
                                                      "content", part));
    }
    size_t i;
    json_t *tc;
    json_array_foreach (calls, i, tc) {
        json_t *fn = json_object_get(tc, "function"), *cid = json_object_get(tc, "id");
        json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
        char callid[180];
        snprintf(id, sizeof(id), "fc_%s_%zu", base, i);
        snprintf(callid, sizeof(callid), "call_%s_%zu", base, i);
        rc |= json_array_append_new(
            output,
            json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", id, "type", "function_call", "status",
                      "completed", "call_id", json_is_string(cid) ? json_string_value(cid) : callid,
                      "name", json_is_string(name) ? json_string_value(name) : "", "arguments",
                      json_is_string(args) ? json_string_value(args) : "{}"));
    }
    return rc ? -1 : 0;
}

/* The base of the item ids: the chat id without "chatcmpl-" (the
 * kernel's is "chatcmpl-<request id>"). */
static const char *base_of(const json_t *chat)
{
    const char *id = json_string_value(json_object_get(chat, "id"));
    if (id == NULL || *id == '\0')
        return "0";
    return strncmp(id, "chatcmpl-", 9) == 0 && id[9] ? id + 9 : id;
}

char *lm_resp_answer(const char *json, size_t n, const lm_usage *u, const json_t *echo,
                     size_t *out_len)
{
    json_t *chat = json_loadb(json, n, 0, NULL);
    json_t *choice = json_array_get(json_object_get(chat, "choices"), 0);
    json_t *created = json_object_get(chat, "created");
    char base[128];
    lm_usage own;
    if (!json_is_object(chat)) {
        json_decref(chat);
        return NULL;
    }
    snprintf(base, sizeof(base), "%s", base_of(chat));
    json_t *resp = lm_resp_object(base, json_is_integer(created) ? json_integer_value(created) : 0,
                                  json_string_value(json_object_get(chat, "model")), echo);
    int incomplete =
        resp ? lm_resp_set_status(resp, json_string_value(json_object_get(choice, "finish_reason")))
             : 0;
    if (u == NULL) {
        usage_from(json_object_get(chat, "usage"), &own);
        u = &own;
    }
    char *out = NULL;
    if (resp &&
        add_items(json_object_get(resp, "output"), json_object_get(choice, "message"), base,
                  incomplete) == 0 &&
        json_object_set_new(resp, "usage", lm_resp_usage(u)) == 0)
        out = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
    json_decref(chat);
    if (out && out_len)
        *out_len = strlen(out);
    return out;
}
