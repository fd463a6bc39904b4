/* Declares streaming but has no parse_event: must be refused. */
#include "longmen.h"

static int p_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    (void)h, (void)ictx, (void)e;
    *istate = NULL;
    return LM_OK;
}
static int p_build(void *s, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    (void)s, (void)c, (void)canon, (void)u, (void)e;
    return LM_OK;
}
static int p_parse(void *s, lm_call *c, int st, lm_str b, json_t **o, lm_usage *u, lm_err *e)
{
    (void)s, (void)c, (void)st, (void)b, (void)o, (void)u, (void)e;
    return LM_OK;
}
static const lm_provider provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "no_stream_cb",
    .version = "0.0.1",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM,
    .init = p_init,
    .build_request = p_build,
    .parse_response = p_parse,
};
LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &provider;
}
