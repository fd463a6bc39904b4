/*
 * ernie_resp.c - whole v1 answers: a chat body -> chat.completion, the
 * finish reason, and error bodies (HTTP 200 with error_code, or non-2xx
 * from proxies). The kernel writes "usage" from *usage.
 */
#include "ernie.h"

#include <string.h>

/* v1 finish_reason -> OpenAI (docs/wire-formats.md, Baidu translation notes). */
static const lms_rename eb1_finishes[] = {{"normal", "stop"},
                                          {"length", "length"},
                                          {"content_filter", "content_filter"},
                                          {"function_call", "tool_calls"},
                                          {NULL, NULL}};

/* The finish reason of a last (or blocked) v1 body: safety first
 * (need_clear_history), then a function call, then truncation. */
const char *eb1_finish(const json_t *j, int has_call)
{
    const char *fr = lms_jstr(j, "finish_reason");
    if (json_is_true(json_object_get(j, "need_clear_history")))
        return "content_filter";
    if (has_call)
        return "tool_calls";
    if (json_is_true(json_object_get(j, "is_truncated")))
        return "length";
    fr = lms_finish_map(eb1_finishes, fr, 0);
    return fr ? fr : "stop"; /* missing */
}

/* One OpenAI tool call from a v1 function_call ("thoughts" are dropped). */
static json_t *eb1_tool_calls(const lm_call *c, const json_t *fc)
{
    return json_pack("[o]", lms_tool_call(c, 0, NULL, lms_jstr(fc, "name"),
                                          lms_tool_args_text(json_object_get(fc, "arguments"))));
}

static int eb1_parse_chat(const eb1_inst *in, const lm_call *c, const json_t *j, json_t **out,
                          lm_usage *usage, lm_err *e)
{
    const json_t *res = json_object_get(j, "result"), *fc = json_object_get(j, "function_call");
    const json_t *id = json_object_get(j, "id"), *created = json_object_get(j, "created");
    int has_call = json_is_object(fc);
    if (!json_is_string(res) && !has_call)
        return lms_bad_upstream(e, "an ERNIE v1 answer without result");
    /* content null when a function call came with an empty result */
    const char *text = json_string_length(res) > 0 || !has_call ? json_string_value(res) : NULL;
    json_t *resp =
        lms_chat_response(in->h, c, text, json_string_length(res),
                          has_call ? eb1_tool_calls(c, fc) : NULL, eb1_finish(j, has_call));
    if (resp == NULL)
        return lms_oom(e);
    if (lms_nonempty(json_string_value(id)))
        json_object_set(resp, "id", (json_t *)id); /* the provider's own id and time */
    if (json_is_integer(created))
        json_object_set(resp, "created", (json_t *)created);
    lm_usage_from_json(json_object_get(j, "usage"), usage);
    *out = resp;
    return LM_OK;
}

/* A whole 2xx body. v1 reports errors with HTTP 200, and so does a stream
 * request that failed before streaming (one plain JSON object). */
int eb1_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                       lm_usage *usage, lm_err *e)
{
    const eb1_inst *in = istate;
    (void)status;
    *out = NULL;
    json_t *j = lms_parse_object(body, "the ERNIE v1 answer", e);
    if (j == NULL)
        return LM_EUPSTREAM;
    json_int_t code = eb1_fill_error(in, c->rstate, j, 0, e);
    int rc = code != 0              ? eb1_refusal(in, c->rstate, code, 1)
             : c->op == LM_OP_EMBED ? eb1_parse_embed(c, j, out, usage, e)
                                    : eb1_parse_chat(in, c, j, out, usage, e);
    json_decref(j);
    return rc;
}

/* Non-2xx (proxies, gateways in front of Baidu): v1, OAuth or OpenAI error
 * bodies; anything else goes to the host's default mapping. */
int eb1_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e)
{
    const eb1_inst *in = istate;
    json_t *j = json_loadb(body.p, body.n, 0, NULL);
    json_int_t code = json_is_object(j) ? eb1_fill_error(in, c->rstate, j, status, e) : 0;
    json_decref(j);
    if (code == 0)
        return LM_DECLINED;
    return eb1_refusal(in, c->rstate, code, 1) == LM_ERETRY ? LM_ERETRY : LM_OK;
}
