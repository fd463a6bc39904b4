/* A provider whose requests need a side value (ABI 1.1): a bearer token
 * fetched from <base_url>/token as {"token":..,"ttl":N}. The chat upstream
 * is OpenAI-shaped; a 401 from it refuses the token (invalidate + retry).
 * Drives the kernel's side-value machinery in test_side.py. */
#include "longmen.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const lm_host_api *h;
    void *ictx;
    lm_str base;
} sc_inst;

typedef struct {
    char token[256]; /* the token this request sent */
} sc_req;

static const lm_cfg_key sc_keys[] = {{"base_url", LM_CFG_STR, 1, NULL, "upstream base URL"},
                                     {NULL, 0, 0, NULL, NULL}};

static int sc_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    sc_inst *s = h->alloc(sizeof(*s));
    if (s == NULL)
        return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    s->h = h;
    s->ictx = ictx;
    if (h->cfg_str(ictx, "base_url", &s->base) != LM_OK || !LM_HOST_HAS(h, side_get)) {
        h->free(s);
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "needs base_url and ABI 1.1");
    }
    *istate = s;
    return LM_OK;
}

static void sc_fini(void *istate)
{
    sc_inst *s = istate;
    s->h->free(s);
}

static int set_url(sc_inst *s, lm_ureq *u, const char *path)
{
    char url[512];
    snprintf(url, sizeof(url), "%.*s%s", (int)s->base.n, s->base.p, path);
    return s->h->ureq_set_url(u, lm_cstr(url));
}

static int sc_build(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    sc_inst *s = istate;
    lm_str tok;
    char auth[300];
    int rc = s->h->side_get(u, "token", &tok);
    if (rc != LM_OK)
        return rc; /* LM_AGAIN: the host fetches it and calls again */
    if (tok.n >= sizeof(((sc_req *)0)->token))
        return lm_err_set(e, LM_EINVAL, 502, "api_error", NULL, "token too long");
    sc_req *r = c->rstate ? c->rstate : s->h->alloc(sizeof(*r));
    if (r == NULL)
        return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    c->rstate = r;
    memcpy(r->token, tok.p, tok.n);
    r->token[tok.n] = '\0';
    snprintf(auth, sizeof(auth), "Bearer %s", r->token);
    set_url(s, u, "/chat");
    s->h->ureq_add_header(u, LM_STR("Authorization"), lm_cstr(auth));
    return s->h->ureq_set_json_body(u, json_deep_copy(canon));
}

static int sc_parse(void *istate, lm_call *c, int status, lm_str body, json_t **out, lm_usage *u,
                    lm_err *e)
{
    (void)istate, (void)c, (void)status, (void)e;
    json_t *js = json_loadb(body.p, body.n, 0, NULL);
    json_t *usage = json_object_get(js, "usage");
    if (json_is_object(usage)) {
        u->prompt = json_integer_value(json_object_get(usage, "prompt_tokens"));
        u->completion = json_integer_value(json_object_get(usage, "completion_tokens"));
    }
    json_decref(js);
    *out = NULL;
    return LM_OK;
}

static int sc_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    sc_inst *s = istate;
    (void)c, (void)e;
    if (ev->data.n == 6 && memcmp(ev->data.p, "[DONE]", 6) == 0)
        return LM_DONE;
    json_t *js = json_loadb(ev->data.p, ev->data.n, 0, NULL);
    return js ? s->h->emit_chunk(out, js) : LM_OK;
}

static int sc_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e)
{
    sc_inst *s = istate;
    sc_req *r = c->rstate;
    (void)body;
    if (status != 401 || r == NULL)
        return LM_DECLINED;
    s->h->side_invalidate(s->ictx, "token", lm_cstr(r->token));
    lm_err_set(e, LM_ERETRY, 401, "authentication_error", "token_rejected",
               "the upstream refused the channel token");
    return LM_ERETRY;
}

static void sc_close(void *istate, lm_call *c)
{
    sc_inst *s = istate;
    s->h->free(c->rstate);
    c->rstate = NULL;
}

static int sc_side_request(void *istate, const char *name, lm_ureq *u, lm_err *e)
{
    sc_inst *s = istate;
    (void)e;
    if (strcmp(name, "token") != 0)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "unknown side value");
    s->h->ureq_set_method(u, "POST");
    return set_url(s, u, "/token");
}

static int sc_side_parse(void *istate, const char *name, int status, lm_str body, char **value,
                         int64_t *ttl_s, lm_err *e)
{
    sc_inst *s = istate;
    (void)name;
    json_t *js = json_loadb(body.p, body.n, 0, NULL);
    const char *tok = json_string_value(json_object_get(js, "token"));
    if (status != 200 || tok == NULL) {
        json_decref(js);
        return lm_err_set(e, LM_EUPSTREAM, 401, "authentication_error", "token_fetch_failed",
                          "the token endpoint answered %d", status);
    }
    size_t n = strlen(tok);
    *value = s->h->alloc(n + 1);
    if (*value)
        memcpy(*value, tok, n + 1);
    *ttl_s = json_integer_value(json_object_get(js, "ttl"));
    json_decref(js);
    return *value ? LM_OK : LM_ENOMEM;
}

static const lm_provider provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "sidecar",
    .version = "1.1.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = sc_keys,
    .init = sc_init,
    .fini = sc_fini,
    .build_request = sc_build,
    .parse_response = sc_parse,
    .parse_event = sc_event,
    .map_error = sc_map_error,
    .req_close = sc_close,
    .side_request = sc_side_request,
    .side_parse = sc_side_parse,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &provider;
}
