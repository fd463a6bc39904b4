/*
 * ollama.c - Ollama's native API: the channel, the provider table and the
 * error map (docs/wire-formats.md section 6; decisions in
 * sdk/notes/ollama.md). Requests are built in ollama_req.c, answers and the
 * NDJSON stream read in ollama_resp.c.
 *
 * A pure translator: no I/O, no mutable globals. The kernel owns the client
 * protocol: stream roles and closing finishes, the "usage" object,
 * encoding_format, n and the request checks.
 */
#include "ollama.h"

#include <string.h>

#define OL_DEFAULT_BASE "http://localhost:11434"

static const lm_cfg_key ol_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, OL_DEFAULT_BASE, "Ollama server URL (without /api)"},
    {"api_key", LM_CFG_STR, 0, NULL,
     "optional key for a reverse proxy in front of Ollama (sent as Bearer)"},
    {NULL, 0, 0, NULL, NULL}};

/* Both values end up in the request line or a header. */
static int ol_header_safe(lm_str s)
{
    for (size_t i = 0; i < s.n; i++)
        if ((unsigned char)s.p[i] < 0x20 || s.p[i] == 0x7f)
            return 0;
    return 1;
}

static int ol_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    lm_str base = {NULL, 0}, key = {NULL, 0};
    ol_inst *in;

    if (h->cfg_str(ictx, "base_url", &base) != LM_OK || base.n == 0)
        base = LM_STR(OL_DEFAULT_BASE);
    while (base.n > 0 && base.p[base.n - 1] == '/')
        base.n--;
    if ((!(base.n > 7 && strncmp(base.p, "http://", 7) == 0) &&
         !(base.n > 8 && strncmp(base.p, "https://", 8) == 0)) ||
        !ol_header_safe(base))
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "base_url must be an absolute http(s) URL");
    if (h->cfg_str(ictx, "api_key", &key) != LM_OK)
        key.n = 0;
    if (!ol_header_safe(key))
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "api_key contains control characters");
    in = h->alloc(sizeof *in + 8 + key.n);
    if (in == NULL)
        return lms_oom(e);
    *in = (ol_inst){.h = h, .base = base};
    if (key.n > 0) {
        in->auth = (char *)(in + 1);
        in->auth_n = 7 + key.n;
        snprintf(in->auth, 8 + key.n, "Bearer %.*s", (int)key.n, key.p);
    }
    *istate = in;
    return LM_OK;
}

static void ol_fini(void *istate)
{
    ol_inst *in = istate;
    if (in == NULL)
        return;
    if (in->auth != NULL)
        memset(in->auth, 0, in->auth_n); /* the key does not outlive the channel */
    in->h->free(in);
}

static void ol_req_close(void *istate, lm_call *c)
{
    ol_inst *in = istate;
    in->h->free(c->rstate);
    c->rstate = NULL;
}

/* {"error":msg} with the status passed through: 404 is a model that was
 * never pulled; a status outside 4xx/5xx becomes 502. */
void ol_error(int status, const char *msg, lm_err *e)
{
    const char *code = status == 404                  ? "model_not_found"
                       : status == 429                ? "rate_limit_exceeded"
                       : status < 400 || status > 599 ? "upstream_error"
                                                      : NULL;
    if (msg == NULL)
        lms_upstream_error(e, status, code, "Ollama returned HTTP %d", status);
    else
        lms_upstream_error(e, status, code, "%s", msg);
}

static int ol_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e)
{
    json_t *root = json_loadb(body.p, body.n, 0, NULL);
    const json_t *err = json_object_get(root, "error");
    (void)istate;
    (void)c;
    /* Ollama's {"error":"..."}, or an OpenAI-shaped one from a proxy. */
    ol_error(status, json_is_string(err) ? json_string_value(err) : lms_jstr(err, "message"), e);
    json_decref(root);
    return LM_OK;
}

static const lm_provider ol_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "ollama",
    .version = "1.2.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    .framing = LM_FRAME_NDJSON,
    .usage_mode = LM_USAGE_CUMULATIVE, /* counts arrive once, on the done:true line */
    .cfg_keys = ol_cfg_keys,
    .init = ol_init,
    .fini = ol_fini,
    .build_request = ol_build_request,
    .parse_response = ol_parse_response,
    .parse_event = ol_parse_event,
    .map_error = ol_map_error,
    .req_close = ol_req_close,
    .param_ranges = NULL,  /* Ollama documents no ranges; llama.cpp takes any value */
    .embed_max_inputs = 0, /* /api/embed takes any number of inputs */
    .flags = 0,            /* no "n": one choice per request */
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &ol_provider;
}
