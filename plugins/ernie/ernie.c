/*
 * ernie.c - Baidu ERNIE through the legacy Qianfan v1 API ("wenxinworkshop")
 * with an OAuth access token (docs/wire-formats.md 2.1; decisions in
 * sdk/notes/ernie.md): the provider table, channel config and
 * build_request. The other jobs are listed in ernie.h.
 *
 *   token  POST <oauth>/oauth/2.0/token?grant_type=client_credentials&client_id=..&client_secret=..
 *   chat   POST <base>/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/<endpoint>?access_token=..
 *   embed  POST <base>/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/<endpoint>?access_token=..
 *
 * The plugin does no I/O: the token is a side value (ernie_auth.c).
 */
#include "ernie.h"

#include <stdlib.h>
#include <string.h>

#define EB1_DEFAULT_BASE "https://aip.baidubce.com"
#define EB1_CHAT_PATH    "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
#define EB1_EMBED_PATH   "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/"
#define EB1_MAX_EP       128 /* endpoint path segment length */

static const lm_cfg_key eb1_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, EB1_DEFAULT_BASE, "API root (https://aip.baidubce.com)"},
    {"oauth_url", LM_CFG_STR, 0, NULL, "root of /oauth/2.0/token (default: base_url)"},
    {"client_id", LM_CFG_STR, 1, NULL, "Baidu API Key (client_id)"},
    {"client_secret", LM_CFG_STR, 1, NULL, "Baidu Secret Key; write env:VAR"},
    {NULL, 0, 0, NULL, NULL}};

/* Model name -> endpoint segment (docs/wire-formats.md 2.1), matched
 * ignoring case; embeddings accept both spellings of the bge/tao names. */
typedef struct eb1_ep {
    const char *model, *segment;
    int op;
} eb1_ep;

static const eb1_ep eb1_endpoints[] = {{"ERNIE-4.0-8K", "completions_pro", LM_OP_CHAT},
                                       {"ERNIE-Bot-4", "completions_pro", LM_OP_CHAT},
                                       {"ERNIE-3.5-8K", "completions", LM_OP_CHAT},
                                       {"ERNIE-Bot", "completions", LM_OP_CHAT},
                                       {"ERNIE-4.0-Turbo-8K", "ernie-4.0-turbo-8k", LM_OP_CHAT},
                                       {"ERNIE-3.5-128K", "ernie-3.5-128k", LM_OP_CHAT},
                                       {"ERNIE-Speed-8K", "ernie_speed", LM_OP_CHAT},
                                       {"ERNIE-Speed-128K", "ernie-speed-128k", LM_OP_CHAT},
                                       {"ERNIE-Lite-8K", "ernie-lite-8k", LM_OP_CHAT},
                                       {"ERNIE-Lite-8K-0922", "eb-instant", LM_OP_CHAT},
                                       {"ERNIE-Bot-turbo", "eb-instant", LM_OP_CHAT},
                                       {"ERNIE-Tiny-8K", "ernie-tiny-8k", LM_OP_CHAT},
                                       {"ERNIE-Functions-8K", "ernie-func-8k", LM_OP_CHAT},
                                       {"embedding-v1", "embedding-v1", LM_OP_EMBED},
                                       {"bge-large-zh", "bge_large_zh", LM_OP_EMBED},
                                       {"bge_large_zh", "bge_large_zh", LM_OP_EMBED},
                                       {"bge-large-en", "bge_large_en", LM_OP_EMBED},
                                       {"bge_large_en", "bge_large_en", LM_OP_EMBED},
                                       {"tao-8k", "tao_8k", LM_OP_EMBED},
                                       {"tao_8k", "tao_8k", LM_OP_EMBED},
                                       {NULL, NULL, 0}};

/* Ranges the kernel clamps to (docs/wire-formats.md 2.1): v1 rejects
 * temperature 0, and max_output_tokens is at least 2. */
static const lm_param_range eb1_ranges[] = {
    {"temperature", 0.01, 1.0},        {"top_p", 0.0, 1.0},
    {"penalty_score", 1.0, 2.0},       {"max_tokens", 2, 1e9},
    {"max_completion_tokens", 2, 1e9}, {NULL, 0, 0}};

/* ------------------------------------------------------------------ helpers */

char *eb1_dup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p != NULL) {
        if (n)
            memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void eb1_buf_pct(lms_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~')
            lms_buf_add(b, s + i, 1);
        else
            lms_buf_add(b, esc, 3);
    }
}

void eb1_debug(const eb1_inst *in, const char *what, const char *name)
{
    if (LM_HOST_HAS(in->h, log))
        in->h->log(in->ictx, LM_LOG_DEBUG, "ernie: %s: %s", what, name ? name : "");
}

static int eb1_lower(int ch)
{
    return (ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch;
}

/* ------------------------------------------------------------------ init */

static int eb1_is_http(lm_str s)
{
    return (s.n > 7 && strncmp(s.p, "http://", 7) == 0) ||
           (s.n > 8 && strncmp(s.p, "https://", 8) == 0);
}

static size_t eb1_trim_slash(lm_str s)
{
    while (s.n > 0 && s.p[s.n - 1] == '/')
        s.n--;
    return s.n;
}

static char *eb1_token_url(lm_str oauth, lm_str id, lm_str sec)
{
    lms_buf b = {0};
    lms_buf_add(&b, oauth.p, eb1_trim_slash(oauth));
    lms_buf_adds(&b, "/oauth/2.0/token?grant_type=client_credentials&client_id=");
    eb1_buf_pct(&b, id.p, id.n);
    lms_buf_adds(&b, "&client_secret=");
    eb1_buf_pct(&b, sec.p, sec.n);
    if (b.oom)
        lms_buf_free(&b);
    return b.p; /* ownership moves to the caller */
}

static void eb1_fini(void *istate)
{
    eb1_inst *in = istate;
    if (in == NULL)
        return;
    free(in->base);
    free(in->token_url);
    free(in->client_id);
    free(in->client_sec);
    free(in);
}

static int eb1_cfg_error(lm_err *e, const char *msg)
{
    return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "ernie: %s", msg);
}

static int eb1_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    lm_str base = {NULL, 0}, oauth = {NULL, 0}, id = {NULL, 0}, sec = {NULL, 0};
    if (!LM_HOST_HAS(h, side_get) || !LM_HOST_HAS(h, side_invalidate))
        return eb1_cfg_error(e, "the host lacks side values (ABI 1.1 required)");
    if (h->cfg_str(ictx, "base_url", &base) != LM_OK || base.n == 0)
        base = LM_STR(EB1_DEFAULT_BASE);
    if (h->cfg_str(ictx, "oauth_url", &oauth) != LM_OK || oauth.n == 0)
        oauth = base;
    if (h->cfg_str(ictx, "client_id", &id) != LM_OK || id.n == 0)
        return eb1_cfg_error(e, "client_id is required");
    if (h->cfg_str(ictx, "client_secret", &sec) != LM_OK || sec.n == 0)
        return eb1_cfg_error(e, "client_secret is required");
    if (!eb1_is_http(base) || !eb1_is_http(oauth))
        return eb1_cfg_error(e, "base_url and oauth_url must start with http:// or https://");

    eb1_inst *in = calloc(1, sizeof *in);
    if (in == NULL)
        return lms_oom(e);
    in->h = h;
    in->ictx = ictx;
    in->base = eb1_dup(base.p, eb1_trim_slash(base));
    in->token_url = eb1_token_url(oauth, id, sec);
    in->client_id = eb1_dup(id.p, id.n);
    in->client_sec = eb1_dup(sec.p, sec.n);
    if (!in->base || !in->token_url || !in->client_id || !in->client_sec) {
        eb1_fini(in);
        return lms_oom(e);
    }
    *istate = in;
    return LM_OK;
}

static void eb1_req_close(void *istate, lm_call *c)
{
    eb1_req *rs = c->rstate;
    (void)istate;
    if (rs != NULL)
        free(rs->token);
    free(rs);
    c->rstate = NULL;
}

/* ------------------------------------------------------------------ build_request */

/* The endpoint for `model`: the table's, else the lower-cased name when it
 * is one plain path segment ([a-z0-9._-], not "." or ".."): the model name
 * is client input and must not steer the URL. NULL when it cannot be one. */
static const char *eb1_endpoint(int op, const char *model, char *buf, size_t cap)
{
    const eb1_ep *m;
    size_t i, n = strlen(model);
    for (m = eb1_endpoints; m->model; m++) {
        size_t k = 0;
        while (model[k] && eb1_lower((unsigned char)model[k]) == eb1_lower(m->model[k]))
            k++;
        if (m->op == op && model[k] == '\0' && m->model[k] == '\0')
            return m->segment;
    }
    if (n == 0 || n >= cap || strcmp(model, ".") == 0 || strcmp(model, "..") == 0)
        return NULL;
    for (i = 0; i <= n; i++) {
        int ch = eb1_lower((unsigned char)model[i]);
        if (ch && !((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                    ch == '_' || ch == '.'))
            return NULL;
        buf[i] = (char)ch;
    }
    return buf;
}

/* The request state for this attempt: reset when the host rebuilds the
 * same call after a refused token. It keeps the token the attempt sent. */
static int eb1_attempt(lm_call *c, lm_str tok, lm_err *e)
{
    eb1_req *rs = c->rstate;
    if (rs == NULL && (rs = c->rstate = calloc(1, sizeof *rs)) == NULL)
        return lms_oom(e);
    free(rs->token);
    *rs = (eb1_req){eb1_dup(tok.p, tok.n), 0};
    return rs->token ? LM_OK : lms_oom(e);
}

/* Point u at the endpoint with the token and hand it body (stolen). */
static int eb1_send(const eb1_inst *in, const lm_call *c, const char *ep, lm_str tok, json_t *body,
                    lm_ureq *u, lm_err *e)
{
    const lm_host_api *h = in->h;
    lms_buf url = {0};
    lms_buf_adds(&url, in->base);
    lms_buf_adds(&url, c->op == LM_OP_EMBED ? EB1_EMBED_PATH : EB1_CHAT_PATH);
    lms_buf_adds(&url, ep);
    lms_buf_adds(&url, "?access_token=");
    eb1_buf_pct(&url, tok.p, tok.n);
    int rc = url.oom ? LM_ENOMEM : h->ureq_set_url(u, (lm_str){url.p, url.n});
    lms_buf_free(&url);
    if (rc == LM_OK && c->stream)
        rc = h->ureq_add_header(u, LM_STR("Accept"), LM_STR("text/event-stream"));
    if (rc != LM_OK) {
        json_decref(body);
        return lms_oom(e);
    }
    return h->ureq_set_json_body(u, body) == LM_OK ? LM_OK : lms_oom(e);
}

static int eb1_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const eb1_inst *in = istate;
    const char *model = lms_nonempty(c->model) ? c->model : lms_jstr(canon, "model");
    char epbuf[EB1_MAX_EP];
    const char *ep = model ? eb1_endpoint(c->op, model, epbuf, sizeof epbuf) : NULL;
    lm_str tok = {NULL, 0};

    if (ep == NULL)
        return lms_bad_request(e, "model name cannot be used as an ERNIE v1 endpoint");
    /* Translate first: a request v1 cannot take fails without a token fetch. */
    json_t *body = NULL;
    int rc = c->op == LM_OP_EMBED ? eb1_embed_body(canon, &body, e)
                                  : eb1_chat_body(in, c, canon, &body, e);
    if (rc != LM_OK)
        return rc;
    rc = in->h->side_get(u, EB1_SIDE, &tok);
    if (rc == LM_OK && tok.n > 0)
        rc = eb1_attempt(c, tok, e);
    else if (rc == LM_OK) /* an empty token would be refetched forever */
        rc = lm_err_set(e, LM_ERR, 500, "api_error", NULL, "ernie: the access token is empty");
    if (rc != LM_OK) {
        json_decref(body); /* LM_AGAIN: the host fetches the token and calls again */
        return rc;
    }
    return eb1_send(in, c, ep, tok, body, u, e);
}

static const lm_provider eb1_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "ernie",
    .version = "1.2.0",
    /* what v1 takes: text only, one choice, the ranges and batch size of 2.1 */
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS,
    .param_ranges = eb1_ranges,
    .embed_max_inputs = 16, /* texts per v1 embeddings call */
    .flags = 0,             /* one choice per request */
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE, /* every stream event carries the running total */
    .cfg_keys = eb1_cfg_keys,
    .init = eb1_init,
    .fini = eb1_fini,
    .side_request = eb1_side_request, /* the token, before any request */
    .side_parse = eb1_side_parse,
    .build_request = eb1_build_request,
    .parse_response = eb1_parse_response,
    .parse_event = eb1_parse_event,
    .map_error = eb1_map_error,
    .req_close = eb1_req_close,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &eb1_provider;
}
