/*
 * openai - any OpenAI-compatible upstream, chosen by base_url or by a named
 * preset (deepseek, moonshot, zhipu, ...). Everything else is the SDK's
 * OpenAI-compatible base (sdk/lmoai.h): the client's bytes are forwarded
 * (stream usage requested), answers are forwarded as the upstream wrote
 * them (read in place for usage, never parsed into a tree).
 */
#include "lmoai.h"

#include <string.h>

/* Base URLs of OpenAI-compatible vendors (docs/wire-formats.md section 8). */
static const lms_rename presets[] = {
    {"openai", "https://api.openai.com/v1"},
    {"deepseek", "https://api.deepseek.com/v1"},
    {"moonshot", "https://api.moonshot.cn/v1"},
    {"zhipu", "https://open.bigmodel.cn/api/paas/v4"},
    {"hunyuan", "https://api.hunyuan.cloud.tencent.com/v1"},
    {"doubao", "https://ark.cn-beijing.volces.com/api/v3"},
    {"minimax", "https://api.minimaxi.com/v1"},
    {"baichuan", "https://api.baichuan-ai.com/v1"},
    {"dashscope", "https://dashscope.aliyuncs.com/compatible-mode/v1"},
    {"qianfan", "https://qianfan.baidubce.com/v2"},
    {"spark", "https://spark-api-open.xf-yun.com/v1"},
    {"ollama", "http://127.0.0.1:11434/v1"},
    {NULL, NULL}};

static const lm_cfg_key cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, NULL, "API root, e.g. https://api.deepseek.com/v1 (or use preset)"},
    {"preset", LM_CFG_STR, 0, NULL,
     "openai, deepseek, moonshot, zhipu, hunyuan, doubao, minimax, baichuan, dashscope, qianfan, "
     "spark, ollama"},
    {"api_key", LM_CFG_STR, 0, NULL, "bearer key; use env:VAR"},
    {"completions", LM_CFG_STR, 0, "chat",
     "/v1/completions: chat (mapped onto chat, the default) or native (<base_url>/completions)"},
    {NULL, 0, 0, NULL, NULL},
};

/* base_url wins; otherwise the preset names one. */
static int oa_base(lmo_inst *in, lm_str *base, lm_err *e)
{
    lm_str preset;
    if (base->n)
        return LM_OK;
    if (in->h->cfg_str(in->ictx, "preset", &preset) != LM_OK)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL,
                          "set base_url or preset for an openai channel");
    for (const lms_rename *p = presets; p->from; p++) {
        if (strlen(p->from) == preset.n && memcmp(p->from, preset.p, preset.n) == 0) {
            *base = lm_cstr(p->to);
            return LM_OK;
        }
    }
    return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "unknown preset \"%.*s\"", (int)preset.n,
                      preset.p);
}

/* No quirk: requests pass through, responses keep their shape. */
static const lmo_quirks quirks = {.init = oa_base};

static int oa_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    return lmo_init(&quirks, h, ictx, istate, e);
}

static const lm_provider provider = {
    LMO_TABLE("openai", "1.1.0"), /* SSE, cumulative usage, the base's callbacks */
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    .cfg_keys = cfg_keys,
    .init = oa_init,
    .flags = LM_PF_MULTI_CHOICE,
    /* audio, rerank, moderations, images: <base_url>/audio/speech, /rerank ... (lmoai.h) */
    .endpoints =
        LMO_ENDPOINTS | LM_EP_COMPLETIONS | LM_EP_RERANK | LM_EP_MODERATIONS | LM_EP_IMAGES,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &provider;
}
