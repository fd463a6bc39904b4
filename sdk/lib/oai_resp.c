/* oai_resp.c - the OpenAI-compatible base: whole responses, finish reasons
 * and errors (lmoai.h). Worker thread; the instance is only read. */
#include "lmjscan.h"
#include "lmoai.h"

#include <stdio.h>
#include <string.h>

static const lms_rename openai_finish[] = {
    {"stop", "stop"},
    {"length", "length"},
    {"content_filter", "content_filter"},
    {"tool_calls", "tool_calls"},
    {"function_call", "tool_calls"},
    {NULL, NULL},
};

const char *lmo_finish(const lmo_quirks *q, const char *reason, int had_tools)
{
    for (const lms_rename *f = q->finish; f && f->from && lms_nonempty(reason); f++)
        if (strcmp(f->from, reason) == 0)
            return lms_finish_map(f, reason, had_tools);
    return lms_finish_map(openai_finish, reason, had_tools);
}

static const lmo_code *code_entry(const lmo_quirks *q, long long code)
{
    for (const lmo_code *k = q->codes; k && k->status; k++)
        if (code >= k->lo && code <= k->hi)
            return k;
    return NULL;
}

/* A string or integer member as text (into buf), or NULL. */
static const char *text_of(const json_t *v, char *buf, size_t n)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (!json_is_integer(v))
        return NULL;
    snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    return buf;
}

/* The provider's numeric code (q->code_key), or 0. */
static long long provider_code(const lmo_quirks *q, const json_t *j)
{
    const json_t *v = q->code_key ? json_object_get(j, q->code_key) : NULL;
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

int lmo_error(const lmo_inst *in, const json_t *j, int status, lm_err *e)
{
    const lmo_quirks *q = in->q;
    const json_t *err = json_object_get(j, "error");
    const char *msg = NULL, *type = NULL, *code = NULL;
    char buf[32];
    long long pc = provider_code(q, j);
    int http = status; /* the upstream's own status (< 400: inside a 2xx body or a stream) */

    if (json_is_object(err)) {
        msg = lms_jstr(err, "message");
        type = lms_jstr(err, "type");
        code = text_of(json_object_get(err, "code"), buf, sizeof(buf));
    } else if (json_is_string(err)) {
        msg = json_string_value(err);
    } else if (pc != 0) {
        const lmo_code *k = code_entry(q, pc);
        msg = q->msg_key ? lms_jstr(j, q->msg_key) : NULL;
        code = k && k->code ? k->code : text_of(json_object_get(j, q->code_key), buf, sizeof(buf));
        if (status < 400)
            status = k ? k->status : q->other_status ? q->other_status : 502;
    } else if (status >= 400 && lms_jstr(j, "message")) {
        msg = lms_jstr(j, "message"); /* gateway-style {"message":..} */
    } else {
        return 0;
    }
    if (status < 400) {
        status = 502; /* an error inside a 2xx body or a stream */
    } else if (http >= 500 && !(q->flags & LMO_UPSTREAM_5XX)) {
        status = 502; /* the kernel's convention: the upstream failed, a bad gateway */
        type = "api_error";
        code = code ? code : "upstream_error";
    }
    lm_err_set(e, LM_EUPSTREAM, status, lms_nonempty(type) ? type : lm_err_type_for_status(status),
               code, "%s",
               msg    ? msg
               : code ? code
                      : "upstream error");
    lms_scrub(e->msg, in->key);
    return 1;
}

int lmo_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e)
{
    json_t *j = json_loadb(body.p, body.n, 0, NULL);
    int ok = json_is_object(j) && lmo_error(istate, j, status, e);
    (void)c;
    json_decref(j);
    return ok ? LM_OK : LM_DECLINED;
}

/* One OpenAI tool call from an upstream one (new). */
static json_t *tool_call(const lm_call *c, size_t i, const json_t *tc)
{
    const json_t *fn = json_object_get(tc, "function");
    const char *id = lms_jstr(tc, "id");
    return lms_tool_call(c, i, lms_nonempty(id) ? json_string(id) : NULL, lms_jstr(fn, "name"),
                         lms_tool_args_text(json_object_get(fn, "arguments")));
}

/* A clean assistant message (new). */
static json_t *message(const lm_call *c, const json_t *m, int *had_tools)
{
    const json_t *tcs = json_object_get(m, "tool_calls"), *tc, *ct = json_object_get(m, "content");
    const char *rsn = lms_jstr(m, "reasoning_content");
    size_t i;
    *had_tools = json_array_size(tcs) > 0;
    json_t *msg = json_pack(
        "{s:s,s:O}", "role", "assistant", "content",
        json_is_string(ct) && (json_string_length(ct) || !*had_tools) ? (json_t *)ct : json_null());
    json_t *out = *had_tools ? json_array() : NULL;
    json_array_foreach (tcs, i, tc)
        lms_aadd(out, tool_call(c, i, tc));
    if (msg && out)
        json_object_set_new(msg, "tool_calls", out);
    else
        json_decref(out);
    if (msg && lms_nonempty(rsn))
        json_object_set_new(msg, "reasoning_content", json_string(rsn));
    return msg;
}

/* A clean chat.completion from an OpenAI-shaped body (new), or NULL. */
static json_t *clean_chat(const lmo_inst *in, lm_call *c, const json_t *j)
{
    const json_t *ch, *idx;
    size_t i;
    char id[128];
    json_t *choices = json_array();
    json_array_foreach (json_object_get(j, "choices"), i, ch) {
        int tools = 0;
        json_t *msg = message(c, json_object_get(ch, "message"), &tools);
        const char *fr = lmo_finish(in->q, lms_jstr(ch, "finish_reason"), tools);
        idx = json_object_get(ch, "index");
        lms_aadd(choices,
                 msg ? json_pack("{s:I,s:o,s:n,s:s}", "index",
                                 json_is_integer(idx) ? json_integer_value(idx) : (json_int_t)i,
                                 "message", msg, "logprobs", "finish_reason",
                                 fr      ? fr
                                 : tools ? "tool_calls"
                                         : "stop")
                     : NULL);
    }
    const json_t *cr = json_object_get(j, "created");
    snprintf(id, sizeof(id), "chatcmpl-%s", c->request_id ? c->request_id : "lm");
    return json_pack("{s:s,s:s,s:I,s:s,s:o}", "id", lms_jstr(j, "id") ? lms_jstr(j, "id") : id,
                     "object", "chat.completion", "created",
                     json_is_integer(cr) ? json_integer_value(cr) : (json_int_t)in->h->unix_time(),
                     "model",
                     lms_jstr(j, "model") ? lms_jstr(j, "model")
                     : c->model           ? c->model
                                          : "",
                     "choices", choices);
}

/* An OpenAI embeddings list of the float vectors in `data` (new). */
static json_t *clean_embed(lm_call *c, const json_t *data)
{
    const json_t *it;
    size_t i;
    json_t *vecs = json_array();
    json_array_foreach (data, i, it)
        json_array_append(vecs, json_object_get(it, "embedding"));
    return lms_embedding_list(c, vecs);
}

/* Embeddings have no completion; a lone total is the prompt. */
static void embed_usage(lm_usage *u)
{
    if (u->prompt < 0)
        u->prompt = u->total;
    if (u->prompt >= 0) {
        u->completion = 0;
        u->total = u->prompt;
    }
}

/* A chat answer of a base without quirks, when the body is one valid object
 * with a "choices" array and no "error": usage read in place, *out left
 * NULL so the kernel forwards the upstream's bytes (no parse, no dump).
 * 0 when the full path must decide instead. */
static int verbatim(const lmo_inst *in, const lm_call *c, lm_str body, lm_usage *usage)
{
    static const char *const keys[] = {"error", "choices", "usage"};
    lm_str v[3];
    const lmo_quirks *q = in->q;
    if ((q->flags & LMO_CLEAN) || q->fix || q->code_key || c->op != LM_OP_CHAT ||
        lm_jscan_members(body.p, body.n, keys, 3, v) < 0 || v[0].p || !v[1].p || v[1].p[0] != '[')
        return 0;
    lm_jscan_usage(v[2], usage);
    return 1;
}

int lmo_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                       lm_usage *usage, lm_err *e)
{
    lmo_inst *in = istate;
    int op = lmo_wire_op(in, c);
    if (lmo_is_endpoint_op(op) && op != LM_OP_COMPLETIONS)
        return lmo_endpoint_response(in, c, body, out, usage, e);
    int embed = c->rstate && ((lmo_req *)c->rstate)->op == LM_OP_EMBED;
    const char *list = embed ? "data" : "choices";
    (void)status;
    if (verbatim(in, c, body, usage))
        return LM_OK;
    json_t *j = lms_parse_object(body, "the response", e);
    if (j == NULL)
        return LM_EUPSTREAM;
    if (lmo_error(in, j, 0, e))
        return json_decref(j), LM_EUPSTREAM;
    if (op == LM_OP_COMPLETIONS) /* a native text_completion, as chat */
        lmo_completion_as_chat(j, 0);
    if (in->q->fix)
        in->q->fix(in, c, j, 0);
    if (!json_is_array(json_object_get(j, list)))
        return json_decref(j), lms_bad_upstream(e, "no \"%s\" array", list);
    lm_usage_from_json(json_object_get(j, "usage"), usage);
    if (embed)
        embed_usage(usage);
    json_object_del(j, "usage"); /* the kernel writes the one usage object */
    if (in->q->flags & LMO_CLEAN) {
        json_t *r = embed ? clean_embed(c, json_object_get(j, "data")) : clean_chat(in, c, j);
        json_decref(j);
        j = r;
    }
    *out = j;
    return j ? LM_OK : lms_oom(e);
}
