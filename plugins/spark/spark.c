/*
 * spark.c - iFlytek Spark through its HTTP OpenAI-compatible API
 * (docs/wire-formats.md section 3.2; decisions in sdk/notes/spark.md).
 *
 *   chat  POST <base>/chat/completions  (base defaults to https://spark-api-open.xf-yun.com/v1)
 *   Authorization: Bearer <APIPassword>  (or "<APIKey>:<APISecret>", sent the same way)
 *
 * The SDK's OpenAI-compatible base (sdk/lmoai.h) does the rest; this file
 * holds Spark's quirks only: model aliases -> Spark domain names, text-only
 * messages, the documented parameters and their ranges (declared, the kernel
 * clamps), {"code":N!=0} bodies and chunks with status 200, moderation after
 * text as a content_filter finish, ids from "sid", and tool_calls given as a
 * bare object.
 */
#include "lmoai.h"

#include <stdio.h>

static const lm_cfg_key sp_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, "https://spark-api-open.xf-yun.com/v1",
     "Spark HTTP API base URL (…/v1)"},
    {"api_key", LM_CFG_STR, 1, NULL, "APIPassword (or APIKey:APISecret), sent as Bearer"},
    {"stream_usage", LM_CFG_BOOL, 0, "true",
     "send stream_options.include_usage upstream on streams"},
    {NULL, 0, 0, NULL, NULL}};

/* Friendly names -> Spark "domain" model ids. Unknown names pass unchanged. */
static const lms_rename sp_aliases[] = {
    {"spark-lite", "lite"},       {"general", "lite"},
    {"spark-pro", "generalv3"},   {"spark-pro-128k", "pro-128k"},
    {"spark-max", "generalv3.5"}, {"spark-max-32k", "max-32k"},
    {"spark-ultra", "4.0Ultra"},  {"spark-4.0-ultra", "4.0Ultra"},
    {"4.0ultra", "4.0Ultra"},     {NULL, NULL}};

/* The documented HTTP fields; max_completion_tokens wins over max_tokens. */
static const char sp_keep[] =
    "max_tokens temperature top_k presence_penalty frequency_penalty tools tool_choice user";
static const lms_rename sp_params[] = {{"max_completion_tokens", "max_tokens"}, {NULL, NULL}};

static const lm_param_range sp_ranges[] = {{"temperature", 0.01, 1.0},
                                           {"max_tokens", 1, 8192},
                                           {"max_completion_tokens", 1, 8192},
                                           {"top_k", 1, 6},
                                           {NULL, 0, 0}};

/* Spark numeric codes (docs/wire-formats.md 3, translation notes). Output
 * moderation after text ends the answer with content_filter. */
static const lmo_code sp_codes[] = {{11200, 11200, 403, NULL, NULL},
                                    {11201, 11203, 429, NULL, NULL},
                                    {10013, 10014, 400, "content_filter", "content_filter"},
                                    {10019, 10019, 400, "content_filter", "content_filter"},
                                    {10907, 10907, 400, NULL, NULL},
                                    {10163, 10163, 400, NULL, NULL},
                                    {10110, 10110, 503, NULL, NULL},
                                    {10000, 10012, 503, NULL, NULL},
                                    {0, 0, 0, NULL, NULL}};

/* Spark answers without id (its "sid" names the answer) and may give
 * tool_calls as one bare object instead of an array. */
static void sp_fix(const lmo_inst *in, lm_call *c, json_t *root, int stream)
{
    const char *sid = lms_jstr(root, "sid");
    const char *key = stream ? "delta" : "message";
    char id[160];
    json_t *ch;
    size_t i;
    (void)in, (void)c;
    if (lms_jstr(root, "id") == NULL && lms_nonempty(sid)) {
        snprintf(id, sizeof(id), "chatcmpl-%s", sid);
        json_object_set_new(root, "id", json_string(id));
    }
    json_array_foreach (json_object_get(root, "choices"), i, ch) {
        json_t *m = json_object_get(ch, key), *tc = json_object_get(m, "tool_calls");
        if (json_is_object(tc))
            json_object_set_new(m, "tool_calls", json_pack("[O]", tc));
    }
}

/* Spark documents max_tokens and top_k as integers; a value the kernel
 * clamped arrives as a JSON real (8192.0), so send it as an integer. */
static int sp_request(const lmo_inst *in, lm_call *c, const json_t *canon, json_t *body, lm_err *e)
{
    static const char *const ints[] = {"max_tokens", "top_k"};
    (void)in, (void)c, (void)canon, (void)e;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        json_t *v = json_object_get(body, ints[i]);
        if (json_is_real(v))
            json_object_set_new(body, ints[i], json_integer((json_int_t)json_real_value(v)));
    }
    return LM_OK;
}

static const lmo_quirks sp_quirks = {
    .flags = LMO_CLEAN | LMO_UPSTREAM_5XX | LMO_DEV_AS_SYSTEM | LMO_TEXT_ONLY,
    .keep = sp_keep,
    .params = sp_params,
    .aliases = sp_aliases,
    .code_key = "code",
    .msg_key = "message",
    .codes = sp_codes,
    .other_status = 502,
    .request = sp_request,
    .fix = sp_fix,
};

static int sp_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    return lmo_init(&sp_quirks, h, ictx, istate, e);
}

static int sp_list_models(void *istate, json_t **out, lm_err *e)
{
    (void)istate;
    *out = json_pack("[s,s,s,s,s,s]", "lite", "generalv3", "pro-128k", "generalv3.5", "max-32k",
                     "4.0Ultra");
    return *out ? LM_OK : lms_oom(e);
}

static const lm_provider sp_provider = {
    LMO_TABLE("spark", "1.1.0"), /* SSE, cumulative usage, the base's callbacks */
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_TOOLS,
    .cfg_keys = sp_cfg_keys,
    .init = sp_init,
    .list_models = sp_list_models,
    .param_ranges = sp_ranges,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &sp_provider;
}
