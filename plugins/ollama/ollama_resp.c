/*
 * ollama_resp.c - Ollama answers -> OpenAI: whole chat and embeddings
 * responses, and the NDJSON stream (docs/wire-formats.md section 6).
 *
 * The kernel writes "usage" from *usage, adds the assistant role to the
 * first delta, turns "stop" into "tool_calls" after tool calls and owns
 * [DONE]; this file only reads what Ollama says.
 */
#include "ollama.h"

#include <string.h>

/* done_reason: length is length; stop, load, unload or none -> stop. */
static const lms_rename ol_finish[] = {{"length", "length"}, {NULL, NULL}};

/* prompt_eval_count is omitted when the prompt was served from cache: then
 * it counts 0 (when eval_count says the answer was made). */
static void ol_usage(const json_t *o, lm_usage *u)
{
    *u = (lm_usage)LM_USAGE_UNKNOWN;
    u->prompt = lm_json_int_or_unknown(o, "prompt_eval_count");
    u->completion = lm_json_int_or_unknown(o, "eval_count");
    if (u->prompt < 0 && u->completion >= 0)
        u->prompt = 0;
    if (u->prompt >= 0 && u->completion >= 0)
        u->total = u->prompt + u->completion;
}

/* "2024-07-22T20:33:28.123648Z" / "...-08:00" -> Unix seconds, or -1. */
static int64_t ol_time(const char *s)
{
    int y, mo, d, hh, mi, ss, n = 0;
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &hh, &mi, &ss, &n) != 6)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mi > 59 || ss > 60)
        return -1;
    /* days from civil (Howard Hinnant) */
    int yy = y - (mo <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    unsigned yoe = (unsigned)(yy - era * 400);
    unsigned doy = (unsigned)((153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1);
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t t = (era * 146097 + (int64_t)doe - 719468) * 86400 + hh * 3600 + mi * 60 + ss;
    const char *p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    int oh = 0, om = 0;
    if ((*p == '+' || *p == '-') && p[1] && p[2] && sscanf(p + 1, "%2d:%2d", &oh, &om) >= 1)
        t += (*p == '+' ? -1 : 1) * (int64_t)(oh * 3600 + om * 60);
    return t;
}

/* One Ollama tool call (arguments an object) -> OpenAI's, with the server's
 * id when it sends one (newer servers). NULL without a function name. */
static json_t *ol_tool_call(const lm_call *c, const json_t *tc, size_t n)
{
    const json_t *fn = json_object_get(tc, "function");
    const char *id = lms_jstr(tc, "id"), *name = lms_jstr(fn, "name");
    if (name == NULL)
        return NULL;
    return lms_tool_call(c, n, lms_nonempty(id) ? json_string(id) : NULL, name,
                         lms_tool_args_text(json_object_get(fn, "arguments")));
}

/* ------------------------------------------------------------------ whole answers */

/* created from created_at, the model Ollama names, and the thinking. */
static int ol_decorate(json_t *resp, const json_t *root, const char *think)
{
    json_t *msg = json_object_get(json_array_get(json_object_get(resp, "choices"), 0), "message");
    const char *model = lms_jstr(root, "model");
    int64_t created = ol_time(lms_jstr(root, "created_at"));
    if (created >= 0 && lms_oset(resp, "created", json_integer(created)) < 0)
        return -1;
    if (model != NULL && lms_oset(resp, "model", json_string(model)) < 0)
        return -1;
    return lms_nonempty(think) ? lms_oset(msg, "reasoning_content", json_string(think)) : 0;
}

static int ol_parse_chat(const ol_inst *in, lm_call *c, const json_t *root, json_t **out,
                         lm_usage *usage, lm_err *e)
{
    const json_t *msg = json_object_get(root, "message"), *tc;
    const json_t *content = json_object_get(msg, "content");
    json_t *tools;
    size_t i;

    if (!json_is_object(msg))
        return lms_bad_upstream(e, "an Ollama answer without a message");
    if ((tools = json_array()) == NULL)
        return lms_oom(e);
    json_array_foreach (json_object_get(msg, "tool_calls"), i, tc)
        if (lms_aadd(tools, ol_tool_call(c, tc, i)) < 0) {
            json_decref(tools);
            return lms_bad_upstream(e, "a tool call without a function name");
        }
    int has_tools = json_array_size(tools) > 0;
    size_t n = json_string_length(content);
    const char *fr = lms_finish_map(ol_finish, lms_jstr(root, "done_reason"), has_tools);
    /* With tool calls and no text, content is null (OpenAI's shape). */
    *out = lms_chat_response(in->h, c,
                             has_tools && n == 0 ? NULL
                             : n                 ? json_string_value(content)
                                                 : "",
                             n, tools,
                             fr          ? fr
                             : has_tools ? "tool_calls"
                                         : "stop");
    if (*out == NULL || ol_decorate(*out, root, lms_jstr(msg, "thinking")) < 0)
        return lms_oom(e);
    ol_usage(root, usage);
    return LM_OK;
}

/* /api/embed: vectors in input order; usage is prompt_eval_count. */
static int ol_parse_embed(lm_call *c, const json_t *root, json_t **out, lm_usage *usage, lm_err *e)
{
    json_t *embs = json_object_get(root, "embeddings"), *v;
    int64_t tokens = lm_json_int_or_unknown(root, "prompt_eval_count");
    size_t i;

    if (!json_is_array(embs))
        return lms_bad_upstream(e, "an Ollama answer without embeddings");
    json_array_foreach (embs, i, v)
        if (!json_is_array(v))
            return lms_bad_upstream(e, "embeddings[%zu] is not a list", i);
    if ((*out = lms_embedding_list(c, json_incref(embs))) == NULL)
        return lms_oom(e);
    if (tokens >= 0)
        *usage = (lm_usage){tokens, 0, tokens, -1, -1};
    return LM_OK;
}

int ol_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                      lm_usage *usage, lm_err *e)
{
    json_t *root = lms_parse_object(body, "the Ollama answer", e);
    int rc;

    (void)status;
    *out = NULL;
    if (root == NULL)
        return LM_EUPSTREAM;
    if (lms_jstr(root, "error") != NULL) {
        ol_error(500, lms_jstr(root, "error"), e); /* an error with a 2xx status */
        rc = LM_EUPSTREAM;
    } else if (c->op == LM_OP_EMBED) {
        rc = ol_parse_embed(c, root, out, usage, e);
    } else {
        rc = ol_parse_chat(istate, c, root, out, usage, e);
    }
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------ stream */

/* A streamed tool call arrives whole: one delta with id, name and arguments. */
static int ol_stream_tool(const ol_inst *in, lm_call *c, ol_req *rs, const json_t *tc, lm_emit *out,
                          lm_err *e)
{
    const json_t *fn = json_object_get(tc, "function");
    const char *id = lms_jstr(tc, "id"), *name = lms_jstr(fn, "name");
    int k = rs->ntools++;
    if (name == NULL)
        return lms_bad_upstream(e, "a tool call without a function name");
    return lms_emit_tool_call(in->h, out, 0, k,
                              lms_nonempty(id) ? json_string(id) : lms_tool_call_id(c, (size_t)k),
                              name, lms_tool_args_text(json_object_get(fn, "arguments")), e);
}

static int ol_emit_str(const ol_inst *in, lm_emit *out, const char *key, const json_t *s, lm_err *e)
{
    return lms_emit_text(in->h, out, 0, key, json_string_value(s), json_string_length(s), e);
}

/* One NDJSON line. The done:true line carries the counts and done_reason
 * and ends the stream (Ollama sends no [DONE]). */
int ol_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    const ol_inst *in = istate;
    ol_req *rs = c->rstate;
    const json_t *msg, *err, *tc;
    json_t *d;
    lm_usage u;
    size_t i;
    int rc;

    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "ollama: no request state");
    if (ev->data.n == 0)
        return LM_OK;
    if ((d = lms_parse_object(ev->data, "an Ollama stream line", e)) == NULL)
        return LM_EUPSTREAM;
    if ((err = json_object_get(d, "error")) != NULL) {
        const char *m = json_is_string(err) ? json_string_value(err) : lms_jstr(err, "message");
        ol_error(500, m ? m : "Ollama stream error", e);
        json_decref(d);
        return LM_EUPSTREAM;
    }
    msg = json_object_get(d, "message");
    rc = ol_emit_str(in, out, "reasoning_content", json_object_get(msg, "thinking"), e);
    if (rc == LM_OK)
        rc = ol_emit_str(in, out, "content", json_object_get(msg, "content"), e);
    json_array_foreach (json_object_get(msg, "tool_calls"), i, tc)
        if (rc == LM_OK)
            rc = ol_stream_tool(in, c, rs, tc, out, e);
    if (rc == LM_OK && json_is_true(json_object_get(d, "done"))) {
        ol_usage(d, &u);
        rc = lms_emit_usage(in->h, out, &u, e);
        if (rc == LM_OK)
            rc = lms_emit_finish(in->h, out, 0,
                                 lms_finish_map(ol_finish, lms_jstr(d, "done_reason"), 0), e);
        if (rc == LM_OK)
            rc = LM_DONE;
    }
    json_decref(d);
    return rc;
}
