/*
 * ernie2.c - Baidu ERNIE through Qianfan v2, the OpenAI-compatible API
 * (docs/wire-formats.md section 2.2; decisions in sdk/notes/ernie2.md).
 *
 *   chat        POST <base>/chat/completions   (base defaults to https://qianfan.baidubce.com/v2)
 *   embeddings  POST <base>/embeddings
 *
 * The SDK's OpenAI-compatible base (sdk/lmoai.h) does the rest; this file
 * holds Qianfan's quirks only: the documented parameter list
 * (max_completion_tokens -> max_tokens), a string stop -> [stop], the
 * optional appid header, finish_reason "normal", the safety flags that mean
 * content_filter, a "normal" that is not the end (is_end:false) and the
 * v1-style {"error_code":N} bodies.
 */
#include "lmoai.h"

static const lm_cfg_key eb_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, "https://qianfan.baidubce.com/v2", "Qianfan v2 base URL (…/v2)"},
    {"api_key", LM_CFG_STR, 1, NULL, "Qianfan API key (bce-v3/ALTAK-…), sent as Bearer"},
    {"appid", LM_CFG_STR, 0, NULL, "optional Qianfan app id (appid header)"},
    {NULL, 0, 0, NULL, NULL}};

/* The documented v2 chat fields; anything else is not sent. */
static const char eb_keep[] =
    "max_tokens temperature top_p penalty_score seed stop "
    "frequency_penalty presence_penalty repetition_penalty tools "
    "tool_choice parallel_tool_calls web_search response_format metadata "
    "enable_thinking thinking_budget thinking_strategy reasoning_effort user";

/* Qianfan v2 ranges (docs/wire-formats.md 2.1-2.2): temperature is (0, 1]. */
static const lm_param_range eb_ranges[] = {
    {"temperature", 0.01, 1.0}, {"top_p", 0.0, 1.0}, {"penalty_score", 1.0, 2.0}, {NULL, 0, 0}};

static const lms_rename eb_finish[] = {{"normal", "stop"}, {NULL, NULL}};
static const lms_rename eb_headers[] = {{"appid", "appid"}, {NULL, NULL}};

/* v1-style error_code -> HTTP status (docs/wire-formats.md 2, translation notes). */
static const lmo_code eb_codes[] = {{110, 111, 401, NULL, NULL},
                                    {13, 14, 401, NULL, NULL},
                                    {6, 6, 403, NULL, NULL},
                                    {336004, 336004, 403, NULL, NULL},
                                    {4, 4, 429, NULL, NULL},
                                    {17, 19, 429, NULL, NULL},
                                    {336501, 336502, 429, NULL, NULL},
                                    {1, 2, 503, NULL, NULL},
                                    {336000, 336000, 503, NULL, NULL},
                                    {336100, 336100, 503, NULL, NULL},
                                    {100, 100, 400, NULL, NULL},
                                    {336001, 336003, 400, NULL, NULL},
                                    {0, 0, 0, NULL, NULL}};

/* need_clear_history:true or flag >= 3: Baidu says the answer must not be
 * shown, so the choice ends with content_filter. A "normal" on a chunk that
 * says is_end:false is not the end. */
static void eb_fix(const lmo_inst *in, lm_call *c, json_t *root, int stream)
{
    json_t *ch;
    size_t i;
    (void)in, (void)c;
    json_array_foreach (json_object_get(root, "choices"), i, ch) {
        const json_t *f = json_object_get(ch, "flag");
        if (json_is_true(json_object_get(ch, "need_clear_history")) ||
            json_is_true(json_object_get(root, "need_clear_history")) ||
            (json_is_integer(f) && json_integer_value(f) >= 3))
            json_object_set_new(ch, "finish_reason", json_string("content_filter"));
        else if (stream && json_is_false(json_object_get(root, "is_end")))
            json_object_del(ch, "finish_reason");
    }
}

/* Chat: max_completion_tokens -> max_tokens (max_tokens wins). Embeddings:
 * text input only (no token arrays); only model, input and user are
 * documented. */
static int eb_request(const lmo_inst *in, lm_call *c, const json_t *canon, json_t *body, lm_err *e)
{
    const json_t *inp = json_object_get(canon, "input"), *v;
    size_t i;
    (void)in;
    if (c->op != LM_OP_EMBED) { /* v2 names max_tokens; the older alias counts when alone */
        v = json_object_get(canon, "max_completion_tokens");
        if (json_object_get(body, "max_tokens") == NULL && json_is_integer(v))
            json_object_set(body, "max_tokens", (json_t *)v);
        return LM_OK;
    }
    json_array_foreach (inp, i, v)
        if (!json_is_string(v))
            return lms_bad_request(e, "input[%zu]: Qianfan embeddings take text only", i);
    json_object_clear(body);
    json_object_set_new(body, "model", json_string(c->model ? c->model : ""));
    json_object_set(body, "input", (json_t *)inp);
    lms_copy_params(canon, body, (const lms_rename[]){{"user", NULL}, {NULL, NULL}});
    return LM_OK;
}

static const lmo_quirks eb_quirks = {
    .flags = LMO_CLEAN | LMO_UPSTREAM_5XX | LMO_DEV_AS_SYSTEM | LMO_NULL_CONTENT | LMO_STOP_ARRAY,
    .keep = eb_keep,
    .finish = eb_finish,
    .cfg_headers = eb_headers,
    .code_key = "error_code",
    .msg_key = "error_msg",
    .codes = eb_codes,
    .other_status = 500,
    .request = eb_request,
    .fix = eb_fix,
};

static int eb_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    return lmo_init(&eb_quirks, h, ictx, istate, e);
}

static const lm_provider eb_provider = {
    LMO_TABLE("ernie2", "1.1.0"), /* SSE, cumulative usage, the base's callbacks */
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    .cfg_keys = eb_cfg_keys,
    .init = eb_init,
    .param_ranges = eb_ranges,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &eb_provider;
}
