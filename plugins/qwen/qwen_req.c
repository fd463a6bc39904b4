/*
 * qwen_req.c - OpenAI request -> DashScope native request (chat on the text
 * or the multimodal endpoint, embeddings). docs/wire-formats.md 1.1, 1.2.
 *
 * The kernel has already validated the request (roles, content, numbers),
 * rejected n > 1, removed encoding_format, clamped temperature/top_p into
 * the declared ranges and split embeddings batches to at most 10 inputs.
 */
#include "qwen.h"

#include "lmsdk.h"

#include <string.h>

#define QW_PATH_TEXT  "/api/v1/services/aigc/text-generation/generation"
#define QW_PATH_MM    "/api/v1/services/aigc/multimodal-generation/generation"
#define QW_PATH_EMBED "/api/v1/services/embeddings/text-embedding/text-embedding"

/* Passed into "parameters" under these names. max_completion_tokens comes
 * after max_tokens so that it wins. The last group are DashScope extras a
 * client sends through extra_body. Anything else (frequency_penalty, user,
 * logprobs, stream_options, ...) has no native equivalent and is dropped. */
static const lms_rename qw_chat_params[] = {{"max_tokens", NULL},
                                            {"max_completion_tokens", "max_tokens"},
                                            {"temperature", NULL},
                                            {"top_p", NULL},
                                            {"seed", NULL},
                                            {"stop", NULL},
                                            {"presence_penalty", NULL},
                                            {"tools", NULL},
                                            {"tool_choice", NULL},
                                            {"parallel_tool_calls", NULL},
                                            {"response_format", NULL},
                                            {"top_k", NULL},
                                            {"repetition_penalty", NULL},
                                            {"enable_search", NULL},
                                            {"search_options", NULL},
                                            {"enable_thinking", NULL},
                                            {"thinking_budget", NULL},
                                            {"vl_high_resolution_images", NULL},
                                            {NULL, NULL}};

static const lms_rename qw_embed_params[] = {
    {"dimensions", "dimension"}, {"text_type", NULL}, {NULL, NULL}};

/* Headers, URL and body (stolen) of the upstream call. */
int qw_send(const qw_inst *in, lm_ureq *u, const char *path, int stream, json_t *body, lm_err *e)
{
    const lm_host_api *h = in->h;
    int rc = LM_OK;

    if (in->workspace.n > 0)
        rc = h->ureq_add_header(u, LM_STR("X-DashScope-WorkSpace"), in->workspace);
    /* Either header enables SSE; DashScope documents both, so send both. */
    if (rc >= 0 && stream)
        rc = h->ureq_add_header(u, LM_STR("X-DashScope-SSE"), LM_STR("enable"));
    if (rc >= 0 && stream)
        rc = h->ureq_add_header(u, LM_STR("Accept"), LM_STR("text/event-stream"));
    if (rc < 0) {
        json_decref(body);
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "qwen: building the request failed");
    }
    return lms_post_json_auth(h, u, in->root, path, in->auth, body, e);
}

/* ------------------------------------------------------------------ chat */

/* A VL model needs the multimodal endpoint even for text-only input. */
static int qw_is_vl_model(const char *m)
{
    return strstr(m, "-vl") != NULL || strstr(m, "-VL") != NULL || strncmp(m, "qvq", 3) == 0 ||
           strncmp(m, "QVQ", 3) == 0;
}

static int qw_has_image(const json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach (msgs, i, m)
        if (lms_content_has_image(json_object_get(m, "content")))
            return 1;
    return 0;
}

/* One OpenAI content part -> a multimodal item {"text":..} or {"image":url}. */
static int qw_mm_part(const json_t *p, const char *where, size_t i, json_t *list, lm_err *e)
{
    const char *type = lms_jstr(p, "type"), *url = lms_image_url(p);
    const json_t *text = json_object_get(p, "text");
    json_t *item;

    if (lms_streq(type, "text") && json_is_string(text))
        item = json_pack("{s:O}", "text", text);
    else if (lms_streq(type, "image_url") && lms_nonempty(url))
        item = json_pack("{s:s}", "image", url); /* http(s) or data: URL, unchanged */
    else if (lms_streq(type, "image_url"))
        return lms_bad_request(e, "%s[%zu]: image_url part without a url", where, i);
    else
        return lms_unsupported(e, "%s[%zu]: DashScope takes text and image parts, not \"%s\"",
                               where, i, type ? type : "(no type)");
    return lms_aadd(list, item) < 0 ? lms_oom(e) : LM_OK;
}

/* Content for the text endpoint: a string, parts joined. For the multimodal
 * one: always a list, a string becoming [{"text":..}]. *out is new. */
static int qw_content(const json_t *ct, int mm, const char *where, json_t **out, lm_err *e)
{
    lms_buf b = {0};
    json_t *p;
    size_t i;
    int rc = LM_OK;

    if (!mm) {
        rc = lms_content_text(ct, LMS_TEXT_ONLY, where, &b, e);
        *out = rc == LM_OK ? lms_buf_json(&b) : NULL;
        lms_buf_free(&b);
        return rc != LM_OK ? rc : *out ? LM_OK : lms_oom(e);
    }
    if ((*out = json_array()) == NULL)
        return lms_oom(e);
    if (json_is_string(ct) && lms_aadd(*out, json_pack("{s:O}", "text", ct)) < 0)
        rc = lms_oom(e);
    json_array_foreach (ct, i, p)
        if (rc == LM_OK)
            rc = qw_mm_part(p, where, i, *out, e);
    if (rc != LM_OK) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

/* One message. Roles stay (developer -> system); tool_calls and
 * tool_call_id use the OpenAI shape unchanged. */
static int qw_message(const json_t *m, size_t i, int mm, json_t *out, lm_err *e)
{
    const char *role = lms_jstr(m, "role");
    const json_t *tc = json_object_get(m, "tool_calls"), *id = json_object_get(m, "tool_call_id");
    char where[48];
    json_t *content, *nm;

    if (lms_streq(role, "developer"))
        role = "system";
    if (lms_streq(role, "function"))
        return lms_unsupported(e, "messages[%zu]: DashScope has no \"function\" role (use tools)",
                               i);
    snprintf(where, sizeof where, "messages[%zu].content", i);
    int rc = qw_content(json_object_get(m, "content"), mm, where, &content, e);
    if (rc != LM_OK)
        return rc;
    nm = json_pack("{s:s,s:o}", "role", role, "content", content);
    if (nm != NULL && lms_streq(role, "assistant") && json_array_size(tc) > 0)
        json_object_set(nm, "tool_calls", (json_t *)tc);
    if (nm != NULL && lms_streq(role, "tool") && json_is_string(id))
        json_object_set(nm, "tool_call_id", (json_t *)id);
    return lms_aadd(out, nm) < 0 ? lms_oom(e) : LM_OK;
}

static int qw_build_chat(const qw_inst *in, const lm_call *c, const char *model,
                         const json_t *canon, lm_ureq *u, lm_err *e)
{
    const json_t *msgs = json_object_get(canon, "messages"), *m;
    int mm = qw_is_vl_model(model) || qw_has_image(msgs), rc = LM_OK;
    json_t *jm = json_array(), *params = json_pack("{s:s}", "result_format", "message");
    size_t i;

    if (jm == NULL || params == NULL || lms_copy_params(canon, params, qw_chat_params) < 0)
        rc = lms_oom(e);
    /* Incremental events hold only the new text (the default repeats it all),
     * tools included (the recorded exchange in docs/wire-formats.md 1.1). */
    if (rc == LM_OK && c->stream && json_object_set_new(params, "incremental_output", json_true()))
        rc = lms_oom(e);
    json_array_foreach (msgs, i, m)
        if (rc == LM_OK)
            rc = qw_message(m, i, mm, jm, e);
    if (rc != LM_OK) {
        json_decref(jm);
        json_decref(params);
        return rc;
    }
    json_t *body = json_pack("{s:s,s:{s:o},s:o}", "model", model, "input", "messages", jm,
                             "parameters", params);
    if (body == NULL)
        return lms_oom(e);
    return qw_send(in, u, mm ? QW_PATH_MM : QW_PATH_TEXT, c->stream, body, e);
}

/* ------------------------------------------------------------------ embeddings */

static int qw_build_embed(const qw_inst *in, const char *model, const json_t *canon, lm_ureq *u,
                          lm_err *e)
{
    const json_t *input = json_object_get(canon, "input"), *v;
    json_t *texts, *params, *body;
    size_t i;

    json_array_foreach (input, i, v)
        if (!json_is_string(v))
            return lms_unsupported(e, "input[%zu]: DashScope embeddings take text, not tokens", i);
    texts = json_is_string(input) ? json_pack("[O]", input) : json_incref((json_t *)input);
    params = json_object();
    if (texts == NULL || params == NULL || lms_copy_params(canon, params, qw_embed_params) < 0) {
        json_decref(texts);
        json_decref(params);
        return lms_oom(e);
    }
    body = json_pack("{s:s,s:{s:o},s:o}", "model", model, "input", "texts", texts, "parameters",
                     params);
    if (body == NULL)
        return lms_oom(e);
    return qw_send(in, u, QW_PATH_EMBED, 0, body, e);
}

/* c->model is the upstream model id the kernel mapped (never NULL). */
int qw_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const qw_inst *in = istate;

    if ((c->rstate = in->h->alloc(sizeof(qw_req))) == NULL)
        return lms_oom(e);
    *(qw_req *)c->rstate = (qw_req){0};
    if (c->op == LM_OP_RERANK)
        return qw_build_rerank(in, c->model, canon, u, e);
    if (c->op == LM_OP_IMAGES)
        return qw_build_image(in, c->model, canon, u, e);
    return c->op == LM_OP_EMBED ? qw_build_embed(in, c->model, canon, u, e)
                                : qw_build_chat(in, c, c->model, canon, u, e);
}
