/* gemini_reply.c - Gemini answers and SSE events as OpenAI choices, tool
 * calls, usage and embeddings (gemini.h). */
#include "gemini.h"

#include <stdio.h>
#include <string.h>

/* Gemini has no tool finish reason: STOP after a functionCall is
 * tool_calls (lms_finish_map, and the kernel for streams). */
static const lms_rename gm_finish[] = {{"STOP", "stop"}, {"MAX_TOKENS", "length"}, {NULL, NULL}};

/* ---- response translation ----------------------------------------------- */

static const char *map_finish(const char *r, int had_tools)
{
    char word[40];
    snprintf(word, sizeof(word), " %s ", r ? r : "STOP");
    /* Safety-like reasons (IMAGE_* included) are a content filter. */
    if (strstr(" SAFETY RECITATION LANGUAGE BLOCKLIST PROHIBITED_CONTENT SPII ", word) ||
        strncmp(word, " IMAGE_", 7) == 0)
        return "content_filter";
    /* A missing finishReason on a whole answer is a normal STOP; others
     * (MALFORMED_FUNCTION_CALL, OTHER, new ones) are "stop". */
    return lms_finish_map(gm_finish, r ? r : "STOP", had_tools);
}

/* usageMetadata: thoughts count as completion tokens (and as reasoning). */
static void read_usage(const json_t *um, lm_usage *u)
{
    int64_t cand = lm_json_int_or_unknown(um, "candidatesTokenCount");
    int64_t th = lm_json_int_or_unknown(um, "thoughtsTokenCount");
    u->prompt = lm_json_int_or_unknown(um, "promptTokenCount");
    u->completion = (cand >= 0 || th >= 0) ? (cand > 0 ? cand : 0) + (th > 0 ? th : 0) : -1;
    u->total = lm_json_int_or_unknown(um, "totalTokenCount");
    if (u->total < 0 && u->prompt >= 0 && u->completion >= 0)
        u->total = u->prompt + u->completion;
    u->cached = lm_json_int_or_unknown(um, "cachedContentTokenCount");
    u->reasoning = th;
}

/* The id of a functionCall part: Gemini's when it sent one, else
 * call_<request id>_<k>, unique in the request. */
static json_t *call_id(const lm_call *c, const json_t *fc)
{
    gm_req *rs = c->rstate;
    const char *id = lms_jstr(fc, "id");
    return lms_nonempty(id) ? json_string(id) : lms_tool_call_id(c, (size_t)rs->ncalls++);
}

static int candidate_index(const json_t *cand, size_t pos, lm_err *e)
{
    const json_t *ix = json_object_get(cand, "index");
    json_int_t i = json_is_integer(ix) ? json_integer_value(ix) : (json_int_t)pos;
    return i >= 0 && i < GM_MAX_CAND ? (int)i : lms_bad_upstream(e, "candidate index out of range");
}

/* One candidate -> one OpenAI choice appended to choices. */
static int candidate_choice(const lm_call *c, const json_t *cand, size_t pos, json_t *choices,
                            lm_err *e)
{
    json_t *parts = json_object_get(json_object_get(cand, "content"), "parts"), *p;
    lms_reply r = {0};
    size_t i;
    int idx = candidate_index(cand, pos, e), rc = idx < 0 ? idx : LM_OK;
    json_array_foreach (parts, i, p) {
        json_t *t = json_object_get(p, "text"), *fc = json_object_get(p, "functionCall");
        const char *name = lms_jstr(fc, "name");
        if (rc != LM_OK)
            break;
        if (json_is_string(t))
            lms_reply_text(&r, json_string_value(t), json_string_length(t),
                           json_is_true(json_object_get(p, "thought")));
        else if (json_is_object(fc) && name == NULL)
            rc = lms_bad_upstream(e, "functionCall without a name");
        else if (json_is_object(fc))
            rc = lms_reply_call(&r,
                                lms_tool_call(c, 0, call_id(c, fc), name,
                                              lms_tool_args_text(json_object_get(fc, "args"))),
                                e);
    }
    const char *fr = map_finish(lms_jstr(cand, "finishReason"), lms_reply_ncalls(&r) > 0);
    if (rc == LM_OK && (r.text.oom || lms_aadd(choices, lms_reply_choice(&r, idx, fr, e))))
        rc = lms_oom(e);
    lms_reply_free(&r);
    return rc;
}

/* Embeddings: {"embedding":{values}} or {"embeddings":[{values}...]}, in
 * input order; Gemini reports no usage (the kernel may count). */
static int embed_response(const lm_call *c, const json_t *root, json_t **out, lm_err *e)
{
    const json_t *one = json_object_get(root, "embedding"),
                 *embs = json_object_get(root, "embeddings");
    json_t *vecs = json_array();
    size_t i, n = one ? 1 : json_array_size(embs);
    if (one == NULL && !json_is_array(embs)) {
        json_decref(vecs);
        return lms_bad_upstream(e, "no embedding or embeddings");
    }
    for (i = 0; i < n; i++) {
        json_t *v = json_object_get(one ? one : json_array_get(embs, i), "values");
        if (!json_is_array(v)) {
            json_decref(vecs);
            return lms_bad_upstream(e, "embedding without values");
        }
        json_array_append(vecs, v);
    }
    *out = lms_embedding_list(c, vecs);
    return *out ? LM_OK : lms_oom(e);
}

static int chat_response(const lm_host_api *h, lm_call *c, const json_t *root, json_t **out,
                         lm_usage *usage, lm_err *e)
{
    json_t *choices = json_array(), *cand;
    size_t i;
    json_array_foreach (json_object_get(root, "candidates"), i, cand) {
        int rc = candidate_choice(c, cand, i, choices, e);
        if (rc != LM_OK) {
            json_decref(choices);
            return rc;
        }
    }
    if (json_array_size(choices) == 0) {
        /* A blocked prompt (promptFeedback.blockReason) or an empty answer. */
        int blocked =
            json_object_get(json_object_get(root, "promptFeedback"), "blockReason") != NULL;
        lms_reply r = {0};
        lms_aadd(choices, lms_reply_choice(&r, 0, blocked ? "content_filter" : "stop", e));
    }
    read_usage(json_object_get(root, "usageMetadata"), usage);
    *out = lms_completion(h, c, lms_jstr(root, "responseId"), lms_jstr(root, "modelVersion"),
                          choices, e);
    return *out ? LM_OK : LM_ENOMEM;
}

int gm_parse_response(void *ist, lm_call *c, int status, lm_str body, json_t **out, lm_usage *usage,
                      lm_err *e)
{
    gm_inst *is = ist;
    json_t *root = lms_parse_object(body, "body", e);
    int rc;
    (void)status;
    *out = NULL;
    if (root == NULL)
        return LM_EUPSTREAM;
    if (json_is_object(json_object_get(root, "error")))
        rc = gm_google_error(json_object_get(root, "error"), 0, e);
    else if (c->op == LM_OP_EMBED)
        rc = embed_response(c, root, out, e);
    else
        rc = chat_response(is->h, c, root, out, usage, e);
    json_decref(root);
    return rc;
}

/* ---- streaming ---------------------------------------------------------- */

/* One candidate's parts as deltas: text, reasoning, each functionCall as
 * one whole tool-call delta; its finishReason once (the kernel keeps the
 * role, drops repeats and turns stop into tool_calls). */
static int stream_candidate(gm_inst *is, lm_call *c, const json_t *cand, size_t pos, lm_emit *out,
                            lm_err *e)
{
    gm_req *rs = c->rstate;
    json_t *parts = json_object_get(json_object_get(cand, "content"), "parts"), *p;
    const char *fr = lms_jstr(cand, "finishReason");
    int idx = candidate_index(cand, pos, e), rc = idx < 0 ? idx : LM_OK;
    size_t i;
    json_array_foreach (parts, i, p) {
        json_t *t = json_object_get(p, "text"), *fc = json_object_get(p, "functionCall");
        if (rc == LM_OK && json_is_string(t))
            rc = lms_emit_text(is->h, out, idx,
                               json_is_true(json_object_get(p, "thought")) ? "reasoning_content"
                                                                           : "content",
                               json_string_value(t), json_string_length(t), e);
        else if (rc == LM_OK && json_is_object(fc) && lms_jstr(fc, "name") == NULL)
            rc = lms_bad_upstream(e, "functionCall without a name");
        else if (rc == LM_OK && json_is_object(fc))
            rc = lms_emit_tool_call(is->h, out, idx, rs->ntools[idx]++, call_id(c, fc),
                                    lms_jstr(fc, "name"),
                                    lms_tool_args_text(json_object_get(fc, "args")), e);
    }
    if (rc == LM_OK && fr != NULL)
        rc = lms_emit_finish(is->h, out, idx, map_finish(fr, 0), e);
    return rc;
}

/* No end marker: the stream ends on a clean EOF (never LM_DONE). */
int gm_parse_event(void *ist, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    gm_inst *is = ist;
    json_t *d, *cands, *cand, *um;
    size_t i;
    int rc = LM_OK;

    if (ev->data.n == 0)
        return LM_OK;
    d = lms_parse_object(ev->data, "stream event", e);
    if (d == NULL)
        return LM_EUPSTREAM;
    if (json_is_object(json_object_get(d, "error")))
        rc = gm_google_error(json_object_get(d, "error"), 0, e);
    cands = json_object_get(d, "candidates");
    json_array_foreach (cands, i, cand)
        if (rc == LM_OK)
            rc = stream_candidate(is, c, cand, i, out, e);
    if (rc == LM_OK && json_array_size(cands) == 0 &&
        json_object_get(json_object_get(d, "promptFeedback"), "blockReason") != NULL)
        rc = lms_emit_finish(is->h, out, 0, "content_filter", e);
    um = json_object_get(d, "usageMetadata");
    if (rc == LM_OK && json_is_object(um)) {
        lm_usage u;
        read_usage(um, &u);
        rc = lms_emit_usage(is->h, out, &u, e);
    }
    json_decref(d);
    return rc;
}
