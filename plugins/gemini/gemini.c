/*
 * gemini.c - Google Gemini (Generative Language API) provider plugin.
 *
 * Chat: POST {base}/models/{m}:generateContent, or
 *       POST {base}/models/{m}:streamGenerateContent?alt=sse for streams.
 * Embeddings: {base}/models/{m}:embedContent (one string) or
 *             :batchEmbedContents (an array; the kernel splits past 100).
 * The key goes in the x-goog-api-key header, never in the URL.
 * Pure translator: no I/O, no mutable globals. The kernel keeps the client
 * protocol (roles, finish bookkeeping, usage object, base64, validation);
 * the plugin holds what is Gemini's. See sdk/notes/gemini.md and
 * docs/wire-formats.md section 5. This file: config, errors, the table.
 */
#include "gemini.h"

#include <string.h>

/* ---- config / lifecycle ------------------------------------------------- */

#define GM_BASE "https://generativelanguage.googleapis.com/v1beta"

static const lm_cfg_key gm_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, GM_BASE, "Generative Language API base URL, including the version"},
    {"api_key", LM_CFG_STR, 1, NULL, "Google AI API key (sent as x-goog-api-key)"},
    {NULL, 0, 0, NULL, NULL}};

static int gm_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    gm_inst is = {.h = h};
    int rc = lms_cfg_base_url(h, ictx, GM_BASE, &is.base_url, e);
    if (rc == LM_OK)
        rc = lms_cfg_text(h, ictx, "api_key", NULL, 1, &is.api_key, e);
    return rc == LM_OK ? lms_istate(h, &is, sizeof(is), istate, e) : rc;
}

static int gm_list_models(void *ist, json_t **out, lm_err *e)
{
    (void)ist;
    *out = json_pack("[sssssss]", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite",
                     "gemini-2.0-flash", "gemini-2.0-flash-lite", "gemini-embedding-001",
                     "text-embedding-004");
    return *out ? LM_OK : lms_oom(e);
}

static void gm_req_close(void *ist, lm_call *c)
{
    gm_inst *is = ist;
    is->h->free(c->rstate);
    c->rstate = NULL;
}

/* ---- errors ------------------------------------------------------------- */

static int has_reason(const json_t *err, const char *reason)
{
    size_t i;
    json_t *d;
    json_array_foreach (json_object_get(err, "details"), i, d)
        if (lms_streq(lms_jstr(d, "reason"), reason))
            return 1;
    return 0;
}

/* Fill e from a Google error object; status 0 or 200: take error.code.
 * Google answers a bad key with 400 API_KEY_INVALID: that is a 401. */
int gm_google_error(const json_t *err, int status, lm_err *e)
{
    const char *msg = lms_jstr(err, "message"), *code = NULL;
    int st = status > 0 && status != 200 ? status : (int)lm_json_int_or_unknown(err, "code");
    if (st < 400 || st > 599)
        st = 502;
    if (has_reason(err, "API_KEY_INVALID") || st == 401 ||
        lms_streq(lms_jstr(err, "status"), "UNAUTHENTICATED")) {
        st = 401;
        code = has_reason(err, "API_KEY_INVALID") ? "API_KEY_INVALID" : "UNAUTHENTICATED";
    } else if (st == 404) {
        code = "model_not_found";
    } else if (st == 429) {
        code = "rate_limit_exceeded";
    } else if (st == 503) {
        code = "overloaded";
    }
    if (msg == NULL)
        return lms_upstream_error(e, st, code, "Gemini returned HTTP %d", st);
    return lms_upstream_error(e, st, code, "%s", msg);
}

static int gm_map_error(void *ist, lm_call *c, int status, lm_str body, lm_err *e)
{
    json_t *root = json_loadb(body.p, body.n, 0, NULL);
    json_t *err = json_object_get(root, "error");
    (void)ist;
    (void)c;
    /* Google sometimes wraps the error in a one-element array. */
    if (err == NULL && json_is_array(root))
        err = json_object_get(json_array_get(root, 0), "error");
    gm_google_error(err, status, e);
    json_decref(root);
    return LM_OK;
}

/* ---- the table ---------------------------------------------------------- */

static const lm_provider gm_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "gemini",
    .version = "1.2.0",
    .cfg_keys = gm_cfg_keys,
    /* candidateCount: several choices per request (at most GM_MAX_CAND). */
    .flags = LM_PF_MULTI_CHOICE,
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    /* batchEmbedContents takes at most 100 requests per call. */
    .embed_max_inputs = 100,
    .framing = LM_FRAME_SSE, /* CRLF-framed; no end marker */
    .usage_mode = LM_USAGE_CUMULATIVE,
    .init = gm_init,
    .fini = lms_fini,
    .list_models = gm_list_models,
    .map_error = gm_map_error,
    .build_request = gm_build_request,
    .req_close = gm_req_close,
    .parse_response = gm_parse_response,
    .parse_event = gm_parse_event,
};

LMS_ENTRY(gm_provider)
