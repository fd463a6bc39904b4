/*
 * claude.c - Anthropic Messages API provider plugin: config, errors and
 * the provider table (claude_request.c builds the upstream request,
 * claude_reply.c translates answers and streams).
 *
 * POST {base}/v1/messages. Pure translator: no I/O, no mutable globals.
 * The kernel keeps the client protocol (roles, finish bookkeeping, usage
 * object, validation, temperature range); the plugin holds what is
 * Anthropic's. See sdk/notes/claude.md and docs/wire-formats.md section 4.
 */
#include "claude.h"

#include <string.h>

/* ---- config / lifecycle ------------------------------------------------- */

static const lm_cfg_key cl_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, "https://api.anthropic.com", "Anthropic API base URL, without /v1"},
    {"api_key", LM_CFG_STR, 1, NULL, "Anthropic API key (sent as x-api-key)"},
    {"anthropic_version", LM_CFG_STR, 0, "2023-06-01", "anthropic-version header value"},
    {"anthropic_beta", LM_CFG_STR, 0, NULL, "optional anthropic-beta header value"},
    {"max_tokens_default", LM_CFG_INT, 0, "4096",
     "max_tokens sent when the client gives none (Anthropic requires it)"},
    {NULL, 0, 0, NULL, NULL}};

static int cl_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    cl_inst is = {.h = h, .max_tokens_default = 4096};
    int rc = lms_cfg_base_url(h, ictx, "https://api.anthropic.com", &is.base_url, e);
    if (rc == LM_OK)
        rc = lms_cfg_text(h, ictx, "api_key", NULL, 1, &is.api_key, e);
    if (rc == LM_OK)
        rc = lms_cfg_text(h, ictx, "anthropic_version", "2023-06-01", 1, &is.version, e);
    if (rc == LM_OK)
        rc = lms_cfg_text(h, ictx, "anthropic_beta", NULL, 0, &is.beta, e);
    if (rc == LM_OK && LM_HOST_HAS(h, cfg_int) &&
        h->cfg_int(ictx, "max_tokens_default", &is.max_tokens_default) == LM_OK &&
        is.max_tokens_default <= 0)
        rc =
            lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "max_tokens_default must be positive");
    return rc == LM_OK ? lms_istate(h, &is, sizeof(is), istate, e) : rc;
}

static int cl_list_models(void *ist, json_t **out, lm_err *e)
{
    (void)ist;
    *out = json_pack("[sssss]", "claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5",
                     "claude-sonnet-4-0", "claude-3-5-haiku-latest");
    return *out ? LM_OK : lms_oom(e);
}

static void cl_req_close(void *ist, lm_call *c)
{
    cl_inst *is = ist;
    cl_req *rs = c->rstate;
    if (rs == NULL)
        return;
    is->h->free(rs->blocks);
    is->h->free(rs);
    c->rstate = NULL;
}

/* ---- errors ------------------------------------------------------------- */

/* Anthropic error type or HTTP status -> the client's status and code; the
 * OpenAI type follows from the status. */
static const struct {
    const char *atype;
    int status, to;
    const char *code;
} cl_errors[] = {
    {"overloaded_error", 529, 503, "overloaded"},
    {"authentication_error", 401, 401, "authentication_error"},
    {"permission_error", 403, 403, NULL},
    {"not_found_error", 404, 404, "model_not_found"},
    {"rate_limit_error", 429, 429, "rate_limit_exceeded"},
    {"request_too_large", 413, 413, "request_too_large"},
    {"billing_error", 402, 402, "billing_error"},
};

int cl_error(const char *atype, int status, const char *msg, lm_err *e)
{
    for (size_t i = 0; i < sizeof(cl_errors) / sizeof(cl_errors[0]); i++)
        if (lms_streq(atype, cl_errors[i].atype) || status == cl_errors[i].status)
            return lms_upstream_error(e, cl_errors[i].to, cl_errors[i].code, "%s", msg);
    if (lms_streq(atype, "invalid_request_error") || (status >= 400 && status < 500))
        return lms_upstream_error(e, status >= 400 && status < 500 ? status : 400, NULL, "%s", msg);
    /* api_error, timeout_error (in-stream: 504), unknown */
    status = status >= 500 ? status : lms_streq(atype, "timeout_error") ? 504 : 500;
    return lms_upstream_error(e, status, NULL, "%s", msg);
}

static int cl_map_error(void *ist, lm_call *c, int status, lm_str body, lm_err *e)
{
    json_t *root = json_loadb(body.p, body.n, 0, NULL);
    json_t *err = json_object_get(root, "error");
    char fallback[64];
    (void)ist;
    (void)c;
    snprintf(fallback, sizeof(fallback), "Anthropic returned HTTP %d", status);
    cl_error(lms_jstr(err, "type"), status,
             lms_jstr(err, "message") ? lms_jstr(err, "message") : fallback, e);
    json_decref(root);
    return LM_OK;
}

/* ---- the table ---------------------------------------------------------- */

/* Anthropic's temperature is [0, 1] (OpenAI's [0, 2]): the kernel clamps. */
static const lm_param_range cl_ranges[] = {{"temperature", 0.0, 1.0}, {NULL, 0, 0}};

static const lm_provider cl_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "claude",
    .version = "1.2.0",
    .cfg_keys = cl_cfg_keys,
    .param_ranges = cl_ranges,
    /* No embeddings API, one choice per request (n > 1: the kernel's 400). */
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_TOOLS | LM_CAP_VISION,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE, /* message_delta carries running totals */
    .init = cl_init,
    .fini = lms_fini,
    .list_models = cl_list_models,
    .build_request = cl_build_request,
    .req_close = cl_req_close,
    .parse_response = cl_parse_response,
    .parse_event = cl_parse_event,
    .map_error = cl_map_error,
};

LMS_ENTRY(cl_provider)
