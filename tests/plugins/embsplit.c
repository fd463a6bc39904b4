/* An OpenAI-shaped embeddings provider that takes at most 3 inputs per
 * upstream call (ABI 1.2 embed_max_inputs), like DashScope's limit of 10:
 * the kernel splits larger requests (kernel/relay/fanout.c). It forwards
 * the client's bytes when it may (raw_body), so a part that wrongly got
 * them would reach the upstream with every input. Drives
 * tests/integration/test_embed_split.py. */
#include "longmen.h"

#include <stdio.h>

#define ES_MAX_INPUTS 3

typedef struct {
    const lm_host_api *h;
    char url[512];
} es_inst;

static const lm_cfg_key es_keys[] = {{"base_url", LM_CFG_STR, 1, NULL, "upstream base URL"},
                                     {NULL, 0, 0, NULL, NULL}};

static int es_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    lm_str base;
    if (h->cfg_str(ictx, "base_url", &base) != LM_OK)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "needs base_url");
    es_inst *s = h->alloc(sizeof(*s));
    if (s == NULL)
        return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    s->h = h;
    snprintf(s->url, sizeof(s->url), "%.*s/embeddings", (int)base.n, base.p);
    *istate = s;
    return LM_OK;
}

static void es_fini(void *istate)
{
    es_inst *s = istate;
    s->h->free(s);
}

static int es_build(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    es_inst *s = istate;
    (void)e;
    s->h->ureq_set_url(u, lm_cstr(s->url));
    if (c->raw_body.n > 0)
        return s->h->ureq_set_body(u, c->raw_body);
    return s->h->ureq_set_json_body(u, json_deep_copy(canon));
}

static int es_parse(void *istate, lm_call *c, int status, lm_str body, json_t **out, lm_usage *u,
                    lm_err *e)
{
    (void)istate, (void)c, (void)status, (void)e;
    json_t *js = json_loadb(body.p, body.n, 0, NULL);
    lm_usage_from_json(json_object_get(js, "usage"), u);
    json_decref(js);
    *out = NULL; /* already OpenAI-shaped */
    return LM_OK;
}

static const lm_provider provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "embsplit",
    .version = "1.2.0",
    .caps = LM_CAP_EMBED,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = es_keys,
    .init = es_init,
    .fini = es_fini,
    .build_request = es_build,
    .parse_response = es_parse,
    .embed_max_inputs = ES_MAX_INPUTS,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &provider;
}
