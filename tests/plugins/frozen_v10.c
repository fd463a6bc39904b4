/* Built against the frozen ABI 1.0 header (tests/abi/longmen-1.0.h), not
 * sdk/longmen.h: proves that later kernels keep loading 1.0 plugins. */
#include "../abi/longmen-1.0.h"

static int p_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    (void)ictx, (void)e;
    *istate = (void *)h;
    return LM_OK;
}

static int p_build(void *s, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const lm_host_api *h = s;
    (void)c, (void)canon, (void)e;
    return h->ureq_set_url(u, LM_STR("http://frozen.invalid/v1/chat"));
}

static int p_parse(void *s, lm_call *c, int st, lm_str b, json_t **o, lm_usage *u, lm_err *e)
{
    (void)s, (void)c, (void)st, (void)b, (void)e;
    *o = NULL;
    u->prompt = 7;
    return LM_OK;
}

static const lm_provider provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "frozen_v10",
    .version = "1.0.0",
    .caps = LM_CAP_CHAT,
    .init = p_init,
    .build_request = p_build,
    .parse_response = p_parse,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &provider;
}
