/*
 * qwen.c - Alibaba Qwen through the DashScope native API: the channel, the
 * provider table and DashScope's error codes (docs/wire-formats.md section 1;
 * decisions in sdk/notes/qwen.md). Requests are built in qwen_req.c, answers
 * and streams read in qwen_resp.c.
 *
 * A pure translator: no I/O, no mutable globals. The instance (qw_inst) is
 * read-only after init; per-request state (qw_req) lives in c->rstate. The
 * kernel owns the client protocol: stream roles and closing finishes, the
 * "usage" object, encoding_format, n, parameter ranges and batch splitting.
 */
#include "qwen.h"

#include <string.h>

#define QW_DEFAULT_BASE "https://dashscope.aliyuncs.com"

static const lm_cfg_key qw_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, QW_DEFAULT_BASE,
     "DashScope root URL (intl: https://dashscope-intl.aliyuncs.com); a trailing /api/v1 is "
     "accepted"},
    {"api_key", LM_CFG_STR, 1, NULL, "DashScope API key (sent as Authorization: Bearer)"},
    {"workspace", LM_CFG_STR, 0, NULL, "optional X-DashScope-WorkSpace id"},
    {"image_task_timeout", LM_CFG_INT, 0, "120",
     "seconds an image synthesis task may take (1..3600); then 504 upstream_task_timeout"},
    {NULL, 0, 0, NULL, NULL}};

/* DashScope's documented ranges: temperature [0, 2), top_p (0, 1) exclusive
 * (docs/wire-formats.md, translation notes); the kernel clamps into them. */
static const lm_param_range qw_ranges[] = {
    {"temperature", 0.0, 1.99}, {"top_p", 0.0001, 0.9999}, {NULL, 0, 0}};

/* ------------------------------------------------------------------ errors */

/* DashScope error code -> HTTP status (a prefix ends with '*'). */
static const struct {
    const char *code;
    int status;
} qw_codes[] = {{"InvalidApiKey", 401},
                {"AccessDenied*", 403},
                {"Throttling*", 429},
                {"InternalError*", 500},
                {"RequestTimeOut", 504},
                {"BadRequest.TooLarge", 413},
                {"BadRequest*", 400},
                {"InvalidParameter", 400},
                {"InvalidURL", 400},
                {"Arrearage", 400},
                {"DataInspectionFailed", 400},
                {"data_inspection_failed", 400},
                {"invalid_parameter_error", 400},
                {NULL, 0}};

static int qw_status_for_code(const char *code, int dflt)
{
    for (size_t i = 0; code != NULL && qw_codes[i].code; i++) {
        size_t n = strlen(qw_codes[i].code);
        int prefix = qw_codes[i].code[n - 1] == '*';
        if (prefix ? strncmp(code, qw_codes[i].code, n - 1) == 0
                   : strcmp(code, qw_codes[i].code) == 0)
            return qw_codes[i].status;
    }
    return dflt;
}

int qw_is_inspection(const char *code)
{
    return lms_streq(code, "DataInspectionFailed") || lms_streq(code, "data_inspection_failed");
}

/* Fill e from {code,message,request_id} (or an OpenAI-shaped {"error":{..}}).
 * status < 400 (a 2xx body or a stream event): derived from the code.
 * Returns 1 when the body looked like an error, else 0. */
int qw_fill_error(const qw_inst *in, const json_t *j, int status, lm_err *e)
{
    const json_t *err = json_object_get(j, "error");
    const json_t *src = json_is_object(err) ? err : j, *jc = json_object_get(src, "code");
    const char *code = lms_jstr(src, "code"), *msg = lms_jstr(src, "message");
    char codebuf[32];

    if (msg == NULL && json_is_string(err))
        msg = json_string_value(err);
    if (json_is_integer(jc)) {
        snprintf(codebuf, sizeof codebuf, "%lld", (long long)json_integer_value(jc));
        code = codebuf;
    }
    if (!lms_nonempty(code) && msg == NULL)
        return 0;
    if (status < 400)
        status = qw_status_for_code(code, 500);
    if (qw_is_inspection(code)) {
        status = 400;
        code = "content_filter";
    }
    lms_upstream_error(e, status, code, "%s", msg ? msg : (code ? code : "upstream error"));
    lms_scrub(e->msg, in->key.p);
    return 1;
}

static int qw_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e)
{
    json_t *j = json_loadb(body.p, body.n, 0, NULL);
    int ok = json_is_object(j) && qw_fill_error(istate, j, status, e);
    (void)c;
    json_decref(j);
    return ok ? LM_OK : LM_DECLINED;
}

/* ------------------------------------------------------------------ channel */

/* The config strings are borrowed for the instance's life (longmen.h). The
 * key is copied once NUL-terminated: it is scrubbed from upstream messages. */
static int qw_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    lm_str base = {NULL, 0}, key = {NULL, 0}, ws = {NULL, 0};
    int64_t task_s = 120;
    qw_inst *in;

    if (h->cfg_str(ictx, "base_url", &base) != LM_OK || base.n == 0)
        base = LM_STR(QW_DEFAULT_BASE);
    if (h->cfg_str(ictx, "api_key", &key) != LM_OK || key.n == 0)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "qwen: api_key is required");
    if (h->cfg_str(ictx, "workspace", &ws) != LM_OK)
        ws.n = 0;
    if (h->cfg_int(ictx, "image_task_timeout", &task_s) != LM_OK)
        task_s = 120;
    if (task_s < 1 || task_s > 3600)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "qwen: image_task_timeout must be 1..3600 seconds");
    if (!(base.n > 7 && strncmp(base.p, "http://", 7) == 0) &&
        !(base.n > 8 && strncmp(base.p, "https://", 8) == 0))
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "qwen: base_url must start with http:// or https://");
    while (base.n > 0 && base.p[base.n - 1] == '/')
        base.n--;
    if (base.n >= 7 && memcmp(base.p + base.n - 7, "/api/v1", 7) == 0)
        base.n -= 7;
    in = h->alloc(sizeof *in + 8 + key.n);
    if (in == NULL)
        return lms_oom(e);
    *in = (qw_inst){
        .h = h, .root = base, .workspace = ws, .task_timeout_ms = (uint32_t)task_s * 1000};
    in->auth = (char *)(in + 1);
    snprintf(in->auth, 8 + key.n, "Bearer %.*s", (int)key.n, key.p);
    in->key = (lm_str){in->auth + 7, key.n};
    *istate = in;
    return LM_OK;
}

static void qw_fini(void *istate)
{
    qw_inst *in = istate;
    if (in != NULL)
        in->h->free(in);
}

static void qw_req_close(void *istate, lm_call *c)
{
    qw_inst *in = istate;
    in->h->free(c->rstate);
    c->rstate = NULL;
}

static const lm_provider qw_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "qwen",
    .version = "1.3.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE, /* every event repeats the running total */
    .cfg_keys = qw_cfg_keys,
    .init = qw_init,
    .fini = qw_fini,
    .build_request = qw_build_request,
    .parse_response = qw_parse_response,
    .parse_event = qw_parse_event,
    .map_error = qw_map_error,
    .req_close = qw_req_close,
    .param_ranges = qw_ranges,
    .embed_max_inputs = 10, /* DashScope text-embedding takes at most 10 texts a call */
    .flags = 0,             /* no "n": one choice per request */
    /* 1.3: rerank on DashScope's text-rerank service (qwen_rerank.c);
     * 1.4: images on its asynchronous image synthesis (qwen_image.c) */
    .endpoints = LM_EP_CHAT | LM_EP_EMBEDDINGS | LM_EP_RERANK | LM_EP_IMAGES,
    .poll_request = qw_poll_request,
    .poll_parse = qw_poll_parse,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &qw_provider;
}
