/*
 * qwen_rerank.c - POST /v1/rerank on DashScope's native text-rerank service
 * (gte-rerank and its successors), ABI 1.3:
 *   {model, query, documents, top_n, return_documents}
 *   -> {model, input{query, documents}, parameters{top_n, return_documents}}
 *   output.results[{index, relevance_score, document{text}}], usage.total_tokens
 *   -> {id, model, results[...], usage} (the kernel sorts and writes usage).
 * The kernel has checked the request and turned object documents into their
 * text. Thread: a worker; the instance is read only.
 */
#include "qwen.h"

#define QW_PATH_RERANK "/api/v1/services/rerank/text-rerank/text-rerank"

int qw_build_rerank(const qw_inst *in, const char *model, const json_t *canon, lm_ureq *u,
                    lm_err *e)
{
    json_t *params = json_object(), *body;
    const json_t *tn = json_object_get(canon, "top_n"),
                 *rd = json_object_get(canon, "return_documents");
    if (params == NULL)
        return lms_oom(e);
    if (json_is_integer(tn))
        json_object_set(params, "top_n", (json_t *)tn);
    if (json_is_boolean(rd))
        json_object_set(params, "return_documents", (json_t *)rd);
    body = json_pack("{s:s,s:{s:O,s:O},s:o}", "model", model, "input", "query",
                     json_object_get(canon, "query"), "documents",
                     json_object_get(canon, "documents"), "parameters", params);
    if (body == NULL)
        return lms_oom(e);
    return qw_send(in, u, QW_PATH_RERANK, 0, body, e);
}

int qw_parse_rerank(lm_call *c, const json_t *j, json_t **out, lm_usage *usage, lm_err *e)
{
    const json_t *res = json_object_get(json_object_get(j, "output"), "results");
    const json_t *u = json_object_get(j, "usage");
    int64_t tokens = lm_json_int_or_unknown(u, "total_tokens");
    if (!json_is_array(res))
        return lms_bad_upstream(e, "a rerank answer without output.results");
    *out = json_pack("{s:s,s:s,s:O}", "id",
                     lms_jstr(j, "request_id") ? lms_jstr(j, "request_id") : c->request_id, "model",
                     c->model, "results", res);
    if (*out == NULL)
        return lms_oom(e);
    if (tokens < 0)
        tokens = lm_json_int_or_unknown(u, "input_tokens");
    usage->prompt = usage->total = tokens;
    return LM_OK;
}
