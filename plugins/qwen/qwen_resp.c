/*
 * qwen_resp.c - DashScope answers -> OpenAI: whole chat and embeddings
 * responses, and SSE stream events (docs/wire-formats.md 1.1, 1.2).
 *
 * The kernel writes "usage" from *usage, adds the assistant role to the
 * first delta, turns "stop" into "tool_calls" after tool calls and owns
 * [DONE]; this file only reads what DashScope says.
 */
#include "qwen.h"

#include <string.h>

/* "null" (a string) is DashScope's "still generating"; unknown -> stop. */
static const lms_rename qw_finish[] = {{"null", NULL},
                                       {"stop", "stop"},
                                       {"length", "length"},
                                       {"tool_calls", "tool_calls"},
                                       {"content_filter", "content_filter"},
                                       {NULL, NULL}};

/* An integer member under DashScope's name, else under OpenAI's (the
 * compatible-mode shape some gateways in front answer with). */
static int64_t qw_count(const json_t *o, const char *native, const char *openai)
{
    int64_t v = lm_json_int_or_unknown(o, native);
    return v >= 0 ? v : lm_json_int_or_unknown(o, openai);
}

/* DashScope usage -> lm_usage. total_tokens is absent on some multimodal
 * answers: computed. Returns 1 when something was reported. */
static int qw_usage(const json_t *u, lm_usage *out)
{
    lm_usage r = LM_USAGE_UNKNOWN;
    if (!json_is_object(u))
        return 0;
    r.prompt = qw_count(u, "input_tokens", "prompt_tokens");
    r.completion = qw_count(u, "output_tokens", "completion_tokens");
    r.total = lm_json_int_or_unknown(u, "total_tokens");
    if (r.total < 0 && r.prompt >= 0 && r.completion >= 0)
        r.total = r.prompt + r.completion;
    r.cached = lm_json_int_or_unknown(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
    r.reasoning =
        lm_json_int_or_unknown(json_object_get(u, "output_tokens_details"), "reasoning_tokens");
    if (r.reasoning < 0)
        r.reasoning = lm_json_int_or_unknown(json_object_get(u, "completion_tokens_details"),
                                             "reasoning_tokens");
    *out = r;
    return r.prompt >= 0 || r.completion >= 0 || r.total >= 0;
}

/* Answer text: a string, or a vision model's list of {"text":..} items,
 * which are pieces of one answer and so are joined with nothing between. */
static int qw_text(const json_t *ct, lms_buf *b)
{
    size_t i;
    json_t *it;
    if (json_is_string(ct))
        lms_buf_add(b, json_string_value(ct), json_string_length(ct));
    json_array_foreach (ct, i, it) {
        const json_t *t = json_object_get(it, "text");
        if (json_is_string(t))
            lms_buf_add(b, json_string_value(t), json_string_length(t));
    }
    return b->oom ? -1 : 0;
}

/* ------------------------------------------------------------------ whole answers */

/* Non-stream tool calls: "index" dropped, a missing id synthesised. */
static json_t *qw_tool_calls(const lm_call *c, const json_t *arr)
{
    json_t *out = json_array(), *tc;
    size_t i;
    json_array_foreach (arr, i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const char *id = lms_jstr(tc, "id");
        json_t *call =
            lms_tool_call(c, i, lms_nonempty(id) ? json_string(id) : NULL, lms_jstr(fn, "name"),
                          lms_tool_args_text(json_object_get(fn, "arguments")));
        if (lms_aadd(out, call) < 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* The id names DashScope's request_id (what its support asks for); the
 * message keeps reasoning_content. */
static int qw_decorate(json_t *resp, const json_t *j, const json_t *m)
{
    const char *rid = lms_jstr(j, "request_id"), *rc = lms_jstr(m, "reasoning_content");
    json_t *msg = json_object_get(json_array_get(json_object_get(resp, "choices"), 0), "message");
    char id[160];
    if (lms_nonempty(rid)) {
        snprintf(id, sizeof id, "chatcmpl-%s", rid);
        if (lms_oset(resp, "id", json_string(id)) < 0)
            return -1;
    }
    return lms_nonempty(rc) ? lms_oset(msg, "reasoning_content", json_string(rc)) : 0;
}

static int qw_parse_chat(const qw_inst *in, lm_call *c, const json_t *j, json_t **out, lm_err *e)
{
    const json_t *output = json_object_get(j, "output");
    const json_t *ch = json_array_get(json_object_get(output, "choices"), 0);
    const json_t *m = json_object_get(ch, "message"), *content = json_object_get(m, "content");
    const json_t *tc = json_object_get(m, "tool_calls");
    int has_tools = json_array_size(tc) > 0;
    const char *fr;
    json_t *tools = NULL;
    lms_buf text = {0};

    if (ch == NULL && json_is_string(json_object_get(output, "text"))) {
        ch = output; /* result_format "text": {"output":{"text","finish_reason"}} */
        content = json_object_get(output, "text");
    } else if (!json_is_object(m)) {
        return lms_bad_upstream(e, "DashScope answered without choices");
    }
    if ((has_tools && (tools = qw_tool_calls(c, tc)) == NULL) || qw_text(content, &text) < 0) {
        lms_buf_free(&text);
        return lms_oom(e);
    }
    fr = lms_finish_map(qw_finish, lms_jstr(ch, "finish_reason"), has_tools);
    /* With tool calls and no text, content is null (OpenAI's shape). */
    *out = lms_chat_response(in->h, c,
                             has_tools && text.n == 0 ? NULL
                             : text.n                 ? text.p
                                                      : "",
                             text.n, tools, fr ? fr : "stop");
    lms_buf_free(&text);
    if (*out == NULL || qw_decorate(*out, j, m) < 0)
        return lms_oom(e);
    return LM_OK;
}

/* Vectors in input order: DashScope numbers them with text_index. */
static int qw_parse_embed(lm_call *c, const json_t *j, json_t **out, lm_usage *usage, lm_err *e)
{
    const json_t *embs = json_object_get(json_object_get(j, "output"), "embeddings"), *it;
    size_t i, n = json_array_size(embs);
    json_t *vecs = json_array();
    int64_t tokens = qw_count(json_object_get(j, "usage"), "total_tokens", "input_tokens");

    if (!json_is_array(embs)) {
        json_decref(vecs);
        return lms_bad_upstream(e, "an embeddings answer without output.embeddings");
    }
    for (i = 0; vecs != NULL && i < n; i++)
        json_array_append_new(vecs, json_null());
    if (vecs == NULL || json_array_size(vecs) != n) {
        json_decref(vecs);
        return lms_oom(e);
    }
    json_array_foreach (embs, i, it) {
        const json_t *v = json_object_get(it, "embedding"), *ti = json_object_get(it, "text_index");
        size_t k = json_is_integer(ti) ? (size_t)json_integer_value(ti) : i;
        if (!json_is_array(v) || k >= n || !json_is_null(json_array_get(vecs, k)) ||
            json_array_set(vecs, k, (json_t *)v) < 0) {
            json_decref(vecs);
            return lms_bad_upstream(e, "an embedding without a list or a valid text_index");
        }
    }
    if ((*out = lms_embedding_list(c, vecs)) == NULL)
        return lms_oom(e);
    if (tokens >= 0)
        *usage = (lm_usage){tokens, 0, tokens, -1, -1};
    return LM_OK;
}

int qw_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                      lm_usage *usage, lm_err *e)
{
    json_t *j = lms_parse_object(body, "the DashScope answer", e);
    int rc;

    (void)status;
    *out = NULL;
    if (j == NULL)
        return LM_EUPSTREAM;
    if (json_object_get(j, "output") == NULL && qw_fill_error(istate, j, 0, e))
        rc = LM_EUPSTREAM; /* an error reported with a 2xx status */
    else if (!json_is_object(json_object_get(j, "output")))
        rc = lms_bad_upstream(e, "DashScope answered without output");
    else if (c->op == LM_OP_EMBED)
        rc = qw_parse_embed(c, j, out, usage, e);
    else if (c->op == LM_OP_RERANK)
        rc = qw_parse_rerank(c, j, out, usage, e);
    else if (c->op == LM_OP_IMAGES)
        rc = qw_parse_image(istate, c, j, out, e);
    else if ((rc = qw_parse_chat(istate, c, j, out, e)) == LM_OK)
        qw_usage(json_object_get(j, "usage"), usage);
    json_decref(j);
    return rc;
}

/* ------------------------------------------------------------------ stream */

/* Tool-call fragments keyed by index: the first of a call has the name (and
 * an id, synthesised when empty); later ones only argument pieces, with
 * "id":"" and no name. Empty pieces are skipped. */
static int qw_stream_tools(const qw_inst *in, lm_call *c, int idx, const json_t *arr, lm_emit *out,
                           lm_err *e)
{
    size_t i;
    const json_t *tc;
    int rc = LM_OK;
    json_array_foreach (arr, i, tc) {
        const json_t *fn = json_object_get(tc, "function"), *ji = json_object_get(tc, "index");
        const json_t *args = json_object_get(fn, "arguments");
        const char *id = lms_jstr(tc, "id"), *name = lms_jstr(fn, "name");
        json_int_t k = json_is_integer(ji) ? json_integer_value(ji) : (json_int_t)i;
        int head = lms_nonempty(name), empty = args == NULL || json_is_null(args) ||
                                               (json_is_string(args) && !json_string_length(args));
        if (!head && empty)
            continue;
        if (k < 0 || k > 1000)
            k = (json_int_t)i; /* not an index a client can use */
        json_t *jid = !head ? NULL : lms_nonempty(id) ? json_string(id) : lms_tool_call_id(c, k);
        rc = lms_emit_tool_call(in->h, out, idx, (int)k, jid, name,
                                args ? lms_tool_args_text(args) : NULL, e);
        if (rc != LM_OK)
            break;
    }
    return rc;
}

/* One choice of an event: reasoning, text and tool calls as deltas, then
 * the finish when DashScope gives one (*final set). */
static int qw_stream_choice(const qw_inst *in, lm_call *c, qw_req *rs, const json_t *ch, int i,
                            int *final, lm_emit *out, lm_err *e)
{
    const json_t *m = json_object_get(ch, "message"), *ji = json_object_get(ch, "index");
    const json_t *tc = json_object_get(m, "tool_calls");
    const char *think = lms_jstr(m, "reasoning_content");
    const char *fr = lms_finish_map(qw_finish, lms_jstr(ch, "finish_reason"), 0);
    int idx = json_is_integer(ji) ? (int)json_integer_value(ji) : i;
    lms_buf text = {0};
    int rc = qw_text(json_object_get(m, "content"), &text) < 0 ? lms_oom(e) : LM_OK;

    if (rc == LM_OK && lms_nonempty(think))
        rc = lms_emit_text(in->h, out, idx, "reasoning_content", think, strlen(think), e);
    if (rc == LM_OK)
        rc = lms_emit_text(in->h, out, idx, "content", text.p, text.n, e);
    if (rc == LM_OK)
        rc = qw_stream_tools(in, c, idx, tc, out, e);
    if (text.n > 0 || lms_nonempty(think) || json_array_size(tc) > 0)
        rs->content_sent = 1;
    lms_buf_free(&text);
    if (rc == LM_OK && fr != NULL) {
        rc = lms_emit_finish(in->h, out, idx, fr, e);
        *final = 1;
    }
    return rc;
}

/* An error event (or a data object without output). Moderation after text
 * reached the client ends the answer with content_filter, as OpenAI does. */
static int qw_stream_error(const qw_inst *in, const qw_req *rs, const json_t *j, lm_emit *out,
                           lm_err *e)
{
    if (rs->content_sent && qw_is_inspection(lms_jstr(j, "code"))) {
        int rc = lms_emit_finish(in->h, out, 0, "content_filter", e);
        return rc == LM_OK ? LM_DONE : rc;
    }
    if (j == NULL || !qw_fill_error(in, j, 0, e))
        lms_upstream_error(e, 502, "upstream_error", "DashScope reported a stream error");
    return LM_EUPSTREAM;
}

/* DashScope sends no [DONE]: the event with a final finish_reason ends the
 * stream. Its usage is a running total on every event. */
int qw_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    const qw_inst *in = istate;
    qw_req *rs = c->rstate;
    int is_error = ev->event.n == 5 && memcmp(ev->event.p, "error", 5) == 0;
    int rc = LM_OK, final = 0;
    const json_t *ch, *output;
    json_t *j;
    lm_usage us;
    size_t i;

    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "qwen: no request state");
    if (ev->data.n == 0 && !is_error)
        return LM_OK;
    j = json_loadb(ev->data.p, ev->data.n, 0, NULL);
    output = json_object_get(j, "output");
    if (is_error || (json_is_object(j) && !json_is_object(output)))
        rc = qw_stream_error(in, rs, json_is_object(j) ? j : NULL, out, e);
    else if (!json_is_object(j))
        rc = lms_bad_upstream(e, "a DashScope stream event is not a JSON object");
    json_array_foreach (json_object_get(output, "choices"), i, ch)
        if (rc == LM_OK)
            rc = qw_stream_choice(in, c, rs, ch, (int)i, &final, out, e);
    if (rc == LM_OK && qw_usage(json_object_get(j, "usage"), &us))
        rc = lms_emit_usage(in->h, out, &us, e);
    json_decref(j);
    return rc == LM_OK && final ? LM_DONE : rc;
}
