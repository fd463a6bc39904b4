/*
 * ernie.c - Baidu ERNIE through the legacy Qianfan v1 API ("wenxinworkshop")
 * with an OAuth access token (docs/wire-formats.md section 2.1 and the Baidu
 * translation notes; decisions in sdk/notes/ernie.md).
 *
 *   token       POST
 * <oauth>/oauth/2.0/token?grant_type=client_credentials&client_id=..&client_secret=.. chat POST
 * <base>/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/<endpoint>?access_token=.. embeddings  POST
 * <base>/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/<endpoint>?access_token=..
 *
 * The plugin does no I/O: the access token is an ABI 1.1 side value. The
 * host fetches it through eb1_side_request/eb1_side_parse, caches it for the
 * channel and hands it to build_request through side_get. An answer with
 * error_code 110/111 (token invalid/expired) invalidates the token this
 * request used and returns LM_ERETRY, so the host refetches and retries once.
 *
 * Secrets (client_id, client_secret, access tokens) never reach an error
 * message or a log line: messages copied from Baidu are scrubbed.
 */
#include "longmen.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EB1_DEFAULT_BASE "https://aip.baidubce.com"
#define EB1_SIDE         "access_token"
#define EB1_CHAT_PATH    "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
#define EB1_EMBED_PATH   "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/"
#define EB1_TOKEN_PATH   "/oauth/2.0/token"
#define EB1_MAX_EMBED    16  /* texts per embeddings call (v1 limit) */
#define EB1_MAX_STOP     4   /* stop sequences (v1 limit) */
#define EB1_MAX_EP       128 /* endpoint path segment length */

/* Per channel; read-only after init (workers share it). */
typedef struct eb1_inst {
    const lm_host_api *h;
    void *ictx;
    char *base;       /* API root without a trailing '/' */
    char *token_url;  /* full OAuth URL; holds the secret: never log it */
    char *client_id;  /* kept only to scrub messages */
    char *client_sec; /* kept only to scrub messages */
} eb1_inst;

/* Per request (c->rstate); freed by eb1_req_close. */
typedef struct eb1_req {
    int op;
    int stream;
    char *token;     /* the access token this attempt sent (host->alloc) */
    unsigned ncalls; /* synthesized tool call ids so far */
    int role_sent;   /* stream: the first chunk (with role) went out */
    int tc_sent;     /* stream: the function call head went out */
    int saw_tools;   /* stream: a function_call arrived */
} eb1_req;

/* A growable byte string over host memory. oom sticks once set. */
typedef struct eb1_sb {
    const lm_host_api *h;
    char *p;
    size_t n, cap;
    int oom;
} eb1_sb;

static const lm_cfg_key eb1_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, EB1_DEFAULT_BASE, "API root (https://aip.baidubce.com)"},
    {"oauth_url", LM_CFG_STR, 0, NULL, "root of /oauth/2.0/token (default: base_url)"},
    {"client_id", LM_CFG_STR, 1, NULL, "Baidu API Key (client_id)"},
    {"client_secret", LM_CFG_STR, 1, NULL, "Baidu Secret Key; write env:VAR"},
    {NULL, 0, 0, NULL, NULL}};

/* Model name -> chat endpoint (providers.md 2.1), matched ignoring case. */
static const char *const eb1_chat_eps[][2] = {{"ERNIE-4.0-8K", "completions_pro"},
                                              {"ERNIE-Bot-4", "completions_pro"},
                                              {"ERNIE-3.5-8K", "completions"},
                                              {"ERNIE-Bot", "completions"},
                                              {"ERNIE-4.0-Turbo-8K", "ernie-4.0-turbo-8k"},
                                              {"ERNIE-3.5-128K", "ernie-3.5-128k"},
                                              {"ERNIE-Speed-8K", "ernie_speed"},
                                              {"ERNIE-Speed-128K", "ernie-speed-128k"},
                                              {"ERNIE-Lite-8K", "ernie-lite-8k"},
                                              {"ERNIE-Lite-8K-0922", "eb-instant"},
                                              {"ERNIE-Bot-turbo", "eb-instant"},
                                              {"ERNIE-Tiny-8K", "ernie-tiny-8k"},
                                              {"ERNIE-Functions-8K", "ernie-func-8k"},
                                              {NULL, NULL}};

/* Embedding model -> endpoint; both spellings of the bge/tao names. */
static const char *const eb1_embed_eps[][2] = {{"embedding-v1", "embedding-v1"},
                                               {"bge-large-zh", "bge_large_zh"},
                                               {"bge_large_zh", "bge_large_zh"},
                                               {"bge-large-en", "bge_large_en"},
                                               {"bge_large_en", "bge_large_en"},
                                               {"tao-8k", "tao_8k"},
                                               {"tao_8k", "tao_8k"},
                                               {NULL, NULL}};

/* ------------------------------------------------------------------ small helpers */

static int eb1_lower(int ch)
{
    return (ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch;
}

/* ASCII case-insensitive equality (strcasecmp is not in strict C11). */
static int eb1_ieq(const char *a, const char *b)
{
    while (*a && *b && eb1_lower((unsigned char)*a) == eb1_lower((unsigned char)*b)) {
        a++;
        b++;
    }
    return *a == '\0' && *b == '\0';
}

static int eb1_nonempty(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static const char *eb1_jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The value of `key` unless absent or JSON null. */
static const json_t *eb1_get(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

static char *eb1_strndup(const lm_host_api *h, const char *s, size_t n)
{
    char *p = h->alloc(n + 1);
    if (p == NULL)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void eb1_sb_add(eb1_sb *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *np;
        while (cap < b->n + n + 1)
            cap *= 2;
        np = b->h->realloc(b->p, cap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void eb1_sb_cstr(eb1_sb *b, const char *s)
{
    eb1_sb_add(b, s, strlen(s));
}

/* Percent-encode everything but RFC 3986 unreserved characters: client ids,
 * secrets and tokens go into query strings. */
static void eb1_sb_pct(eb1_sb *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            eb1_sb_add(b, (const char *)&ch, 1);
        } else {
            char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            eb1_sb_add(b, esc, 3);
        }
    }
}

/* Take the built string (NULL on oom); the builder is left empty. */
static char *eb1_sb_take(eb1_sb *b)
{
    char *p = b->oom ? NULL : b->p;
    if (b->oom)
        b->h->free(b->p);
    else if (p == NULL)
        p = eb1_strndup(b->h, "", 0);
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

static void eb1_debug(const eb1_inst *in, const char *what, const char *name)
{
    if (LM_HOST_HAS(in->h, log))
        in->h->log(in->ictx, LM_LOG_DEBUG, "ernie: %s: %s", what, name);
}

/* Replace every occurrence of `secret` in msg by "***". */
static void eb1_scrub1(char *msg, const char *secret)
{
    size_t kn = secret ? strlen(secret) : 0;
    char *hit;
    if (kn < 3)
        return;
    while ((hit = strstr(msg, secret)) != NULL) {
        memcpy(hit, "***", 3);
        memmove(hit + 3, hit + kn, strlen(hit + kn) + 1);
    }
}

static void eb1_scrub(const eb1_inst *in, const eb1_req *rs, char *msg)
{
    eb1_scrub1(msg, in->client_sec);
    eb1_scrub1(msg, in->client_id);
    if (rs != NULL)
        eb1_scrub1(msg, rs->token);
}

static int eb1_oom(lm_err *e)
{
    return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
}

static int eb1_inval(lm_err *e, const char *msg)
{
    return lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", "invalid_value", "%s", msg);
}

static int eb1_bad_upstream(lm_err *e, const char *what)
{
    return lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                      "ERNIE (Qianfan v1) returned %s", what);
}

static int eb1_internal(lm_err *e, int rc, const char *what)
{
    return lm_err_set(e, rc < 0 ? rc : LM_ERR, 500, "api_error", NULL, "ernie: %s", what);
}

/* ------------------------------------------------------------------ errors */

/* Status for a v1 error_code (providers.md 2, translation notes). Codes the
 * notes do not list: 3 -> 400, 15 (app not exist) -> 403, 336005 (API name
 * not exist) -> 404, anything else -> 502. */
static int eb1_status_for_code(json_int_t c)
{
    switch (c) {
    case 110:
    case 111:
    case 13:
    case 14: return 401;
    case 6:
    case 15:
    case 336004: return 403;
    case 4:
    case 17:
    case 18:
    case 19:
    case 336501:
    case 336502: return 429;
    case 1:
    case 2:
    case 336000:
    case 336100: return 503;
    case 3:
    case 100:
    case 336001:
    case 336002:
    case 336003: return 400;
    case 336005: return 404;
    default: return 502;
    }
}

/* 110 (invalid token) and 111 (expired token) are the refusals a fresh token
 * cures. 13/14 are IAM/credential failures of the key pair itself: a new
 * token from the same pair would be refused again, so they are not retried. */
static int eb1_token_refused(json_int_t c)
{
    return c == 110 || c == 111;
}

/*
 * Fill e from an error body: {"error_code":N,"error_msg":..} (v1),
 * {"error":"x","error_description":..} (OAuth style) or {"error":{..}}
 * (OpenAI style). http_status > 0 is the upstream's non-2xx status, used
 * when the body has no code of its own. Returns the v1 error_code (or -1
 * for the other shapes) when the body is an error, 0 when it is not.
 */
static json_int_t eb1_fill_error(const eb1_inst *in, const eb1_req *rs, const json_t *j,
                                 int http_status, lm_err *e)
{
    const json_t *ec = json_object_get(j, "error_code");
    const json_t *err = json_object_get(j, "error");
    char code[32];
    const char *msg = NULL, *type = NULL, *cp = code;
    int st;
    json_int_t ret = -1;

    if (json_is_integer(ec) && json_integer_value(ec) != 0) {
        ret = json_integer_value(ec);
        snprintf(code, sizeof code, "%lld", (long long)ret);
        msg = eb1_jstr(j, "error_msg");
        st = eb1_status_for_code(ret);
        if (st == 502 && http_status >= 400)
            st = http_status;
    } else if (json_is_string(err)) {
        cp = json_string_value(err);
        msg = eb1_jstr(j, "error_description");
        st = http_status >= 400 ? http_status : 502;
    } else if (json_is_object(err)) {
        const json_t *jc = json_object_get(err, "code");
        if (json_is_integer(jc))
            snprintf(code, sizeof code, "%lld", (long long)json_integer_value(jc));
        else
            snprintf(code, sizeof code, "%s", json_is_string(jc) ? json_string_value(jc) : "");
        msg = eb1_jstr(err, "message");
        type = eb1_jstr(err, "type");
        st = http_status >= 400 ? http_status : 502;
    } else {
        return 0;
    }
    lm_err_set(e, LM_EUPSTREAM, st, eb1_nonempty(type) ? type : lm_err_type_for_status(st), cp,
               "%s", eb1_nonempty(msg) ? msg : "ERNIE (Qianfan v1) returned an error");
    eb1_scrub(in, rs, e->msg);
    eb1_scrub(in, rs, e->code);
    return ret;
}

/* A body that refused this request's token: drop the token (if nobody
 * replaced it yet) and ask the host for one retry with a fresh one. */
static int eb1_refused(const eb1_inst *in, const eb1_req *rs)
{
    if (rs == NULL || rs->token == NULL || !LM_HOST_HAS(in->h, side_invalidate))
        return LM_EUPSTREAM; /* we cannot name the token: a retry would resend it */
    in->h->side_invalidate(in->ictx, EB1_SIDE, lm_cstr(rs->token));
    return LM_ERETRY;
}

/* ------------------------------------------------------------------ init */

static int eb1_is_http(lm_str s)
{
    return (s.n > 7 && strncmp(s.p, "http://", 7) == 0) ||
           (s.n > 8 && strncmp(s.p, "https://", 8) == 0);
}

static size_t eb1_trim_slash(lm_str s)
{
    size_t n = s.n;
    while (n > 0 && s.p[n - 1] == '/')
        n--;
    return n;
}

static char *eb1_token_url(const lm_host_api *h, lm_str oauth, lm_str id, lm_str sec)
{
    eb1_sb b = {h, NULL, 0, 0, 0};
    eb1_sb_add(&b, oauth.p, eb1_trim_slash(oauth));
    eb1_sb_cstr(&b, EB1_TOKEN_PATH "?grant_type=client_credentials&client_id=");
    eb1_sb_pct(&b, id.p, id.n);
    eb1_sb_cstr(&b, "&client_secret=");
    eb1_sb_pct(&b, sec.p, sec.n);
    return eb1_sb_take(&b);
}

static void eb1_fini(void *istate)
{
    eb1_inst *in = istate;
    const lm_host_api *h;
    if (in == NULL)
        return;
    h = in->h;
    h->free(in->base);
    h->free(in->token_url);
    h->free(in->client_id);
    h->free(in->client_sec);
    h->free(in);
}

static int eb1_host_ok(const lm_host_api *h)
{
    return LM_HOST_HAS(h, alloc) && LM_HOST_HAS(h, realloc) && LM_HOST_HAS(h, free) &&
           LM_HOST_HAS(h, cfg_str) && LM_HOST_HAS(h, ureq_set_method) &&
           LM_HOST_HAS(h, ureq_set_url) && LM_HOST_HAS(h, ureq_add_header) &&
           LM_HOST_HAS(h, ureq_set_json_body) && LM_HOST_HAS(h, emit_delta) &&
           LM_HOST_HAS(h, emit_usage) && LM_HOST_HAS(h, side_get) &&
           LM_HOST_HAS(h, side_invalidate);
}

static int eb1_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    eb1_inst *in;
    lm_str base = {NULL, 0}, oauth = {NULL, 0}, id = {NULL, 0}, sec = {NULL, 0};

    /* Without side values (ABI 1.1) there is no way to get a token. */
    if (!eb1_host_ok(h))
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL,
                          "ernie: the host lacks side values (ABI 1.1 required)");
    if (h->cfg_str(ictx, "base_url", &base) != LM_OK || base.n == 0)
        base = LM_STR(EB1_DEFAULT_BASE);
    if (h->cfg_str(ictx, "oauth_url", &oauth) != LM_OK || oauth.n == 0)
        oauth = base;
    if (h->cfg_str(ictx, "client_id", &id) != LM_OK || id.n == 0)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "ernie: client_id is required");
    if (h->cfg_str(ictx, "client_secret", &sec) != LM_OK || sec.n == 0)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "ernie: client_secret is required");
    if (!eb1_is_http(base) || !eb1_is_http(oauth))
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "ernie: base_url and oauth_url must start with http:// or https://");

    in = h->alloc(sizeof *in);
    if (in == NULL)
        return eb1_oom(e);
    memset(in, 0, sizeof *in);
    in->h = h;
    in->ictx = ictx;
    in->base = eb1_strndup(h, base.p, eb1_trim_slash(base));
    in->token_url = eb1_token_url(h, oauth, id, sec);
    in->client_id = eb1_strndup(h, id.p, id.n);
    in->client_sec = eb1_strndup(h, sec.p, sec.n);
    if (!in->base || !in->token_url || !in->client_id || !in->client_sec) {
        eb1_fini(in);
        return eb1_oom(e);
    }
    *istate = in;
    return LM_OK;
}

static void eb1_req_close(void *istate, lm_call *c)
{
    eb1_inst *in = istate;
    eb1_req *rs = c->rstate;
    if (rs == NULL)
        return;
    in->h->free(rs->token);
    in->h->free(rs);
    c->rstate = NULL;
}

/* ------------------------------------------------------------------ side value: the token */

static int eb1_side_request(void *istate, const char *name, lm_ureq *u, lm_err *e)
{
    eb1_inst *in = istate;
    int rc;
    if (name == NULL || strcmp(name, EB1_SIDE) != 0)
        return eb1_internal(e, LM_EINVAL, "unknown side value");
    rc = in->h->ureq_set_method(u, "POST");
    if (rc == LM_OK)
        rc = in->h->ureq_set_url(u, lm_cstr(in->token_url));
    if (rc == LM_OK)
        rc = in->h->ureq_add_header(u, LM_STR("Accept"), LM_STR("application/json"));
    return rc == LM_OK ? LM_OK : eb1_internal(e, rc, "building the OAuth request failed");
}

/* OAuth refusal: 401 with Baidu's own code and description, never the
 * credentials. A 5xx without an OAuth error body is an outage, not a bad
 * key pair: 502 (see sdk/notes/ernie.md). */
static int eb1_oauth_error(const eb1_inst *in, int status, const json_t *j, lm_err *e)
{
    const char *code = eb1_jstr(j, "error");
    const char *desc = eb1_jstr(j, "error_description");
    if (!eb1_nonempty(code) && (status >= 500 || status == 0))
        lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "oauth_unavailable",
                   "Baidu OAuth token endpoint failed (HTTP %d)", status);
    else
        lm_err_set(e, LM_EUPSTREAM, 401, "authentication_error",
                   eb1_nonempty(code) ? code : "oauth_failed", "Baidu OAuth: %s",
                   eb1_nonempty(desc)   ? desc
                   : eb1_nonempty(code) ? code
                                        : "no access_token in the answer");
    eb1_scrub(in, NULL, e->msg);
    eb1_scrub(in, NULL, e->code);
    if (LM_HOST_HAS(in->h, log))
        in->h->log(in->ictx, LM_LOG_WARN, "ernie: OAuth token request failed: HTTP %d, %s", status,
                   e->code);
    return LM_EUPSTREAM;
}

static int eb1_side_parse(void *istate, const char *name, int status, lm_str body, char **value,
                          int64_t *ttl_s, lm_err *e)
{
    eb1_inst *in = istate;
    json_t *j;
    const char *tok;
    const json_t *ttl;
    int rc;

    if (name == NULL || strcmp(name, EB1_SIDE) != 0)
        return eb1_internal(e, LM_EINVAL, "unknown side value");
    j = json_loadb(body.p ? body.p : "", body.n, 0, NULL);
    tok = eb1_jstr(j, "access_token");
    if (status != 200 || !eb1_nonempty(tok)) {
        rc = eb1_oauth_error(in, status, j, e);
        json_decref(j);
        return rc;
    }
    *value = eb1_strndup(in->h, tok, strlen(tok));
    ttl = json_object_get(j, "expires_in");
    *ttl_s = json_is_integer(ttl) && json_integer_value(ttl) > 0 ? json_integer_value(ttl) : 0;
    json_decref(j);
    return *value ? LM_OK : eb1_oom(e);
}

/* ------------------------------------------------------------------ request: helpers */

/* Lower-cased `s` as an endpoint segment, or NULL when it would not be one
 * plain path segment (no '/', '?', '%', "..": the model name is client
 * input and must not steer the URL). */
static const char *eb1_segment(const char *s, char *buf, size_t cap)
{
    size_t i, n = strlen(s);
    if (n == 0 || n >= cap || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return NULL;
    for (i = 0; i < n; i++) {
        int ch = eb1_lower((unsigned char)s[i]);
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
              ch == '.'))
            return NULL;
        buf[i] = (char)ch;
    }
    buf[n] = '\0';
    return buf;
}

static const char *eb1_endpoint(const char *const (*map)[2], const char *model, char *buf,
                                size_t cap)
{
    size_t i;
    for (i = 0; map[i][0]; i++)
        if (eb1_ieq(model, map[i][0]))
            return map[i][1];
    return eb1_segment(model, buf, cap);
}

/* Text of an OpenAI content value: a string, null (""), or an array of text
 * parts concatenated in order (as OpenAI reads them). Any other part
 * (image_url, input_audio, file) is refused: v1 models are text-only. */
static int eb1_text(const lm_host_api *h, const json_t *ct, json_t **out, lm_err *e)
{
    eb1_sb b = {h, NULL, 0, 0, 0};
    const json_t *part;
    size_t i;
    char *s;

    if (ct == NULL || json_is_null(ct)) {
        *out = json_string("");
        return *out ? LM_OK : eb1_oom(e);
    }
    if (json_is_string(ct)) {
        *out = json_deep_copy(ct);
        return *out ? LM_OK : eb1_oom(e);
    }
    if (!json_is_array(ct))
        return eb1_inval(e, "message content must be a string or an array of parts");
    json_array_foreach (ct, i, part) {
        const char *type = eb1_jstr(part, "type");
        const json_t *t = json_object_get(part, "text");
        if (type == NULL || strcmp(type, "text") != 0 || !json_is_string(t)) {
            h->free(b.p);
            return eb1_inval(e, "ERNIE v1 models take text only: image and other non-text "
                                "content parts are not supported");
        }
        eb1_sb_add(&b, json_string_value(t), json_string_length(t));
    }
    s = eb1_sb_take(&b);
    if (s == NULL)
        return eb1_oom(e);
    *out = json_string(s);
    h->free(s);
    return *out ? LM_OK : eb1_oom(e);
}

/* a + sep + b as a new JSON string (sep only between two non-empty parts). */
static json_t *eb1_join(const lm_host_api *h, const json_t *a, const json_t *b, const char *sep)
{
    eb1_sb sb = {h, NULL, 0, 0, 0};
    json_t *r;
    size_t an = json_string_length(a), bn = json_string_length(b);
    eb1_sb_add(&sb, json_string_value(a), an);
    if (an && bn)
        eb1_sb_cstr(&sb, sep);
    eb1_sb_add(&sb, json_string_value(b), bn);
    if (sb.oom) {
        h->free(sb.p);
        return NULL;
    }
    r = json_stringn(sb.p ? sb.p : "", sb.n);
    h->free(sb.p);
    return r;
}

/* ------------------------------------------------------------------ request: messages */

/* What the message pass builds, all owned here. */
typedef struct eb1_conv {
    json_t *turns;   /* ERNIE messages: user / assistant / function */
    json_t *system;  /* JSON string, joined system/developer text, or NULL */
    json_t *names;   /* tool_call_id -> function name (first call of a turn) */
    json_t *dropped; /* tool_call_ids beyond the first of a turn */
} eb1_conv;

static void eb1_conv_free(eb1_conv *cv)
{
    json_decref(cv->turns);
    json_decref(cv->system);
    json_decref(cv->names);
    json_decref(cv->dropped);
}

/* Record every assistant tool call id: the first of a turn is the one v1
 * can express (function_call); later ones are dropped with their results. */
static void eb1_index_calls(const json_t *msgs, eb1_conv *cv)
{
    const json_t *m, *tc;
    size_t i, k;
    json_array_foreach (msgs, i, m) {
        const char *role = eb1_jstr(m, "role");
        if (role == NULL || strcmp(role, "assistant") != 0)
            continue;
        json_array_foreach (json_object_get(m, "tool_calls"), k, tc) {
            const char *id = eb1_jstr(tc, "id");
            const char *name = eb1_jstr(json_object_get(tc, "function"), "name");
            if (id == NULL)
                continue;
            if (k == 0 && name != NULL)
                json_object_set_new(cv->names, id, json_string(name));
            else
                json_object_set_new(cv->dropped, id, json_true());
        }
    }
}

/* {"name","arguments"} from an OpenAI function object; arguments as text. */
static json_t *eb1_fcall(const json_t *fn)
{
    const char *name = eb1_jstr(fn, "name");
    const json_t *a = json_object_get(fn, "arguments");
    json_t *args;
    if (name == NULL)
        return NULL;
    if (json_is_string(a)) {
        args = json_deep_copy(a);
    } else if (a == NULL || json_is_null(a)) {
        args = json_string("{}");
    } else {
        char *s = json_dumps(a, JSON_COMPACT);
        args = s ? json_string(s) : NULL;
        free(s);
    }
    return json_pack("{s:s,s:o}", "name", name, "arguments", args);
}

static int eb1_add_system(const lm_host_api *h, eb1_conv *cv, const json_t *m, lm_err *e)
{
    json_t *t = NULL, *j;
    int rc = eb1_text(h, json_object_get(m, "content"), &t, e);
    if (rc != LM_OK)
        return rc;
    if (cv->system == NULL) {
        cv->system = t;
        return LM_OK;
    }
    j = eb1_join(h, cv->system, t, "\n");
    json_decref(t);
    if (j == NULL)
        return eb1_oom(e);
    json_decref(cv->system);
    cv->system = j;
    return LM_OK;
}

/* Merge `t` into the previous turn of the same role (text joined with \n;
 * the first function_call and the first function name are kept). */
static int eb1_merge(const eb1_inst *in, json_t *prev, json_t *t, lm_err *e)
{
    json_t *j =
        eb1_join(in->h, json_object_get(prev, "content"), json_object_get(t, "content"), "\n");
    const json_t *fc = json_object_get(t, "function_call");
    if (j == NULL)
        return eb1_oom(e);
    json_object_set_new(prev, "content", j);
    if (fc != NULL && json_object_get(prev, "function_call") == NULL)
        json_object_set(prev, "function_call", (json_t *)fc);
    else if (fc != NULL)
        eb1_debug(in, "dropping a second function call merged into one turn", "function_call");
    return LM_OK;
}

/* Append a turn, merging it into the previous one when the roles match. */
static int eb1_push(const eb1_inst *in, eb1_conv *cv, json_t *t, lm_err *e)
{
    size_t n = json_array_size(cv->turns);
    json_t *prev = n ? json_array_get(cv->turns, n - 1) : NULL;
    int rc;
    if (t == NULL)
        return eb1_oom(e);
    if (prev != NULL && strcmp(eb1_jstr(prev, "role"), eb1_jstr(t, "role")) == 0) {
        rc = eb1_merge(in, prev, t, e);
        json_decref(t);
        return rc;
    }
    return json_array_append_new(cv->turns, t) == 0 ? LM_OK : eb1_oom(e);
}

static int eb1_assistant_turn(const eb1_inst *in, eb1_conv *cv, const json_t *m, lm_err *e)
{
    const json_t *tcs = json_object_get(m, "tool_calls");
    const json_t *legacy = json_object_get(m, "function_call");
    json_t *t = NULL, *fc = NULL;
    int rc = eb1_text(in->h, json_object_get(m, "content"), &t, e);
    if (rc != LM_OK)
        return rc;
    if (json_is_array(tcs) && json_array_size(tcs) > 0) {
        fc = eb1_fcall(json_object_get(json_array_get(tcs, 0), "function"));
        if (json_array_size(tcs) > 1)
            eb1_debug(in, "v1 takes one function call per turn, dropping", "tool_calls[1..]");
    } else if (json_is_object(legacy)) {
        fc = eb1_fcall(legacy);
    }
    if ((json_is_array(tcs) && json_array_size(tcs) > 0 && fc == NULL) ||
        (json_is_object(legacy) && fc == NULL)) {
        json_decref(t);
        return eb1_inval(e, "an assistant tool call needs a function name");
    }
    return eb1_push(
        in, cv,
        fc ? json_pack("{s:s,s:o,s:o}", "role", "assistant", "content", t, "function_call", fc)
           : json_pack("{s:s,s:o}", "role", "assistant", "content", t),
        e);
}

/* A tool result -> {"role":"function","name":<looked up by tool_call_id>}. */
static int eb1_tool_turn(const eb1_inst *in, eb1_conv *cv, const json_t *m, const char *role,
                         lm_err *e)
{
    const char *id = eb1_jstr(m, "tool_call_id");
    const char *name = eb1_jstr(m, "name");
    json_t *t = NULL;
    int rc;
    if (strcmp(role, "tool") == 0) {
        if (id != NULL && json_object_get(cv->dropped, id) != NULL) {
            eb1_debug(in, "dropping the result of a dropped tool call", "tool");
            return LM_OK;
        }
        if (id != NULL && eb1_jstr(cv->names, id) != NULL)
            name = eb1_jstr(cv->names, id);
    }
    if (!eb1_nonempty(name))
        return eb1_inval(e, "a tool message must answer a tool_call_id of an earlier "
                            "assistant message");
    rc = eb1_text(in->h, json_object_get(m, "content"), &t, e);
    if (rc != LM_OK)
        return rc;
    return eb1_push(in, cv,
                    json_pack("{s:s,s:s,s:o}", "role", "function", "name", name, "content", t), e);
}

static int eb1_one_message(const eb1_inst *in, eb1_conv *cv, const json_t *m, lm_err *e)
{
    const char *role = eb1_jstr(m, "role");
    json_t *t = NULL;
    int rc;
    if (!json_is_object(m) || role == NULL)
        return eb1_inval(e, "each message needs a string role");
    if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
        return eb1_add_system(in->h, cv, m, e);
    if (strcmp(role, "assistant") == 0)
        return eb1_assistant_turn(in, cv, m, e);
    if (strcmp(role, "tool") == 0 || strcmp(role, "function") == 0)
        return eb1_tool_turn(in, cv, m, role, e);
    if (strcmp(role, "user") != 0)
        return eb1_inval(e, "unsupported message role");
    rc = eb1_text(in->h, json_object_get(m, "content"), &t, e);
    if (rc != LM_OK)
        return rc;
    return eb1_push(in, cv, json_pack("{s:s,s:o}", "role", "user", "content", t), e);
}

/* user and function turns sit at odd positions (1st, 3rd, ...), assistant
 * turns at even ones (Baidu's rule for messages). */
static int eb1_user_side(const json_t *t)
{
    return strcmp(eb1_jstr(t, "role"), "assistant") != 0;
}

/* Make the history what v1 accepts: start with a user turn (leading
 * assistant/function turns dropped), end on a user or function turn
 * (trailing assistant turns dropped), strictly alternate. Consecutive
 * same-role turns were merged while pushing, so the count is then odd. */
static int eb1_repair(const eb1_inst *in, json_t *turns, lm_err *e)
{
    size_t i, n;
    while (json_array_size(turns) > 0 &&
           strcmp(eb1_jstr(json_array_get(turns, 0), "role"), "user") != 0) {
        eb1_debug(in, "dropping a leading turn v1 cannot start with",
                  eb1_jstr(json_array_get(turns, 0), "role"));
        json_array_remove(turns, 0);
    }
    while ((n = json_array_size(turns)) > 0 && !eb1_user_side(json_array_get(turns, n - 1))) {
        eb1_debug(in, "dropping a trailing turn v1 cannot end with", "assistant");
        json_array_remove(turns, n - 1);
    }
    n = json_array_size(turns);
    if (n == 0)
        return eb1_inval(e, "messages must contain a user message");
    for (i = 0; i < n; i++)
        if (eb1_user_side(json_array_get(turns, i)) != (i % 2 == 0))
            return eb1_inval(e, "ERNIE v1 needs user and assistant turns to alternate: a tool "
                                "result must be followed by an assistant message");
    return LM_OK;
}

static int eb1_messages(const eb1_inst *in, const json_t *msgs, eb1_conv *cv, lm_err *e)
{
    const json_t *m;
    size_t i;
    int rc;
    cv->turns = json_array();
    cv->names = json_object();
    cv->dropped = json_object();
    if (!cv->turns || !cv->names || !cv->dropped)
        return eb1_oom(e);
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return eb1_inval(e, "messages must be a non-empty array");
    eb1_index_calls(msgs, cv);
    json_array_foreach (msgs, i, m) {
        rc = eb1_one_message(in, cv, m, e);
        if (rc != LM_OK)
            return rc;
    }
    return eb1_repair(in, cv->turns, e);
}

/* ------------------------------------------------------------------ request: parameters */

static double eb1_clamp(double v, double lo, double hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* Set `key` to `v` when in [lo,hi] (the client's exact number), else to the
 * nearest bound. */
static void eb1_set_clamped(json_t *body, const char *key, const json_t *v, double lo, double hi)
{
    double d = json_number_value(v);
    if (d >= lo && d <= hi)
        json_object_set_new(body, key, json_deep_copy(v));
    else
        json_object_set_new(body, key, json_real(eb1_clamp(d, lo, hi)));
}

/* max_tokens (or max_completion_tokens) -> max_output_tokens, at least 2. */
static int eb1_max_tokens(const json_t *canon, json_t *body, lm_err *e)
{
    const json_t *v = eb1_get(canon, "max_tokens");
    if (v == NULL)
        v = eb1_get(canon, "max_completion_tokens");
    if (v == NULL)
        return LM_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return eb1_inval(e, "max_tokens must be a positive integer");
    if (json_integer_value(v) < 2)
        json_object_set_new(body, "max_output_tokens", json_integer(2));
    else
        json_object_set_new(body, "max_output_tokens", json_deep_copy(v));
    return LM_OK;
}

static int eb1_stop(const json_t *v, json_t *body, lm_err *e)
{
    const json_t *s;
    size_t i;
    if (json_is_string(v)) {
        json_object_set_new(body, "stop", json_pack("[O]", v));
        return LM_OK;
    }
    if (!json_is_array(v) || json_array_size(v) > EB1_MAX_STOP)
        return eb1_inval(e, "stop must be a string or at most 4 strings");
    json_array_foreach (v, i, s) {
        if (!json_is_string(s))
            return eb1_inval(e, "stop must be a string or at most 4 strings");
    }
    if (json_array_size(v) > 0)
        json_object_set_new(body, "stop", json_deep_copy(v));
    return LM_OK;
}

/* penalty_score (v1, [1,2]) wins; else frequency_penalty f -> 1 + f/2
 * clamped to [1,2] (f <= 0 means no penalty, v1's default 1.0). */
static int eb1_penalty(const json_t *canon, json_t *body, lm_err *e)
{
    const json_t *ps = eb1_get(canon, "penalty_score");
    const json_t *fp = eb1_get(canon, "frequency_penalty");
    if (ps != NULL) {
        if (!json_is_number(ps))
            return eb1_inval(e, "penalty_score must be a number");
        eb1_set_clamped(body, "penalty_score", ps, 1.0, 2.0);
    } else if (fp != NULL) {
        if (!json_is_number(fp))
            return eb1_inval(e, "frequency_penalty must be a number");
        json_object_set_new(body, "penalty_score",
                            json_real(eb1_clamp(1.0 + json_number_value(fp) / 2.0, 1.0, 2.0)));
    }
    return LM_OK;
}

/* tools -> functions: the {"type":"function","function":{..}} wrapper goes. */
static int eb1_functions(const json_t *tools, json_t **out, lm_err *e)
{
    static const char *const keep[] = {"name", "description", "parameters", NULL};
    json_t *arr = json_array();
    const json_t *t;
    size_t i, k;
    if (arr == NULL)
        return eb1_oom(e);
    json_array_foreach (tools, i, t) {
        const json_t *fn = json_object_get(t, "function");
        const char *type = eb1_jstr(t, "type");
        json_t *f = json_object();
        if (f == NULL || (type != NULL && strcmp(type, "function") != 0) ||
            eb1_jstr(fn, "name") == NULL) {
            json_decref(f);
            json_decref(arr);
            return f ? eb1_inval(e, "tools must be functions with a name") : eb1_oom(e);
        }
        for (k = 0; keep[k]; k++)
            if (json_object_get(fn, keep[k]) != NULL)
                json_object_set(f, keep[k], json_object_get(fn, keep[k]));
        json_array_append_new(arr, f);
    }
    *out = arr;
    return LM_OK;
}

/* tools + tool_choice. "auto": v1's default, not sent. "none": no functions
 * are sent. "required": forcing "some function" has no v1 form; with a
 * single function it becomes that function, else it is dropped.
 * {"type":"function","function":{"name":..}} is v1's own shape. */
static int eb1_tools(const eb1_inst *in, const json_t *canon, json_t *body, lm_err *e)
{
    const json_t *tools = eb1_get(canon, "tools"), *tc = eb1_get(canon, "tool_choice");
    json_t *fns = NULL;
    const char *mode = json_is_string(tc) ? json_string_value(tc) : NULL;
    int rc;
    if (tools == NULL || (json_is_array(tools) && json_array_size(tools) == 0))
        return LM_OK;
    if (!json_is_array(tools))
        return eb1_inval(e, "tools must be an array");
    if (mode != NULL && strcmp(mode, "none") == 0) {
        eb1_debug(in, "tool_choice none: not sending", "functions");
        return LM_OK;
    }
    rc = eb1_functions(tools, &fns, e);
    if (rc != LM_OK)
        return rc;
    json_object_set_new(body, "functions", fns);
    if (tc == NULL || (mode != NULL && strcmp(mode, "auto") == 0))
        return LM_OK;
    if (mode != NULL && strcmp(mode, "required") == 0) {
        if (json_array_size(fns) == 1)
            json_object_set_new(body, "tool_choice",
                                json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name",
                                          json_object_get(json_array_get(fns, 0), "name")));
        else
            eb1_debug(in, "v1 cannot force one of several functions, dropping",
                      "tool_choice required");
        return LM_OK;
    }
    if (json_is_object(tc) && eb1_jstr(json_object_get(tc, "function"), "name") != NULL) {
        json_object_set_new(body, "tool_choice",
                            json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name",
                                      eb1_jstr(json_object_get(tc, "function"), "name")));
        return LM_OK;
    }
    return eb1_inval(e, "tool_choice must be none, auto, required or a named function");
}

/* Every other field: v1 equivalents or dropped with a DEBUG line. */
static int eb1_params(const eb1_inst *in, const json_t *canon, json_t *body, lm_err *e)
{
    static const char *const handled[] = {"model",
                                          "messages",
                                          "stream",
                                          "stream_options",
                                          "max_tokens",
                                          "max_completion_tokens",
                                          "tools",
                                          "tool_choice",
                                          "penalty_score",
                                          "frequency_penalty",
                                          "n",
                                          NULL};
    const char *k;
    const json_t *v;
    size_t i;
    int rc;

    json_object_foreach ((json_t *)canon, k, v) {
        int skip = json_is_null(v);
        for (i = 0; handled[i] && !skip; i++)
            skip = strcmp(k, handled[i]) == 0;
        if (skip)
            continue;
        if (strcmp(k, "temperature") == 0 || strcmp(k, "top_p") == 0) {
            if (!json_is_number(v))
                return eb1_inval(e, "temperature and top_p must be numbers");
            /* v1 refuses temperature 0: (0,1]; top_p [0,1] */
            eb1_set_clamped(body, k, v, strcmp(k, "temperature") == 0 ? 0.01 : 0.0, 1.0);
        } else if (strcmp(k, "stop") == 0) {
            rc = eb1_stop(v, body, e);
            if (rc != LM_OK)
                return rc;
        } else if (strcmp(k, "user") == 0 && json_is_string(v)) {
            json_object_set_new(body, "user_id", json_deep_copy(v));
        } else if ((strcmp(k, "disable_search") == 0 || strcmp(k, "enable_citation") == 0) &&
                   json_is_boolean(v)) {
            json_object_set_new(body, k, json_deep_copy(v)); /* v1 extensions, as named */
        } else {
            eb1_debug(in, "dropping unsupported parameter", k);
        }
    }
    return LM_OK;
}

static int eb1_chat_body(const eb1_inst *in, lm_call *c, const json_t *canon, json_t **out,
                         lm_err *e)
{
    eb1_conv cv = {NULL, NULL, NULL, NULL};
    const json_t *n = eb1_get(canon, "n");
    json_t *body;
    int rc;

    if (n != NULL && !(json_is_integer(n) && json_integer_value(n) == 1))
        return eb1_inval(e, "n > 1 is not supported by ERNIE v1");
    rc = eb1_messages(in, json_object_get(canon, "messages"), &cv, e);
    body = rc == LM_OK ? json_pack("{s:O}", "messages", cv.turns) : NULL;
    if (rc == LM_OK && body == NULL)
        rc = eb1_oom(e);
    if (rc == LM_OK && cv.system != NULL && json_string_length(cv.system) > 0)
        json_object_set(body, "system", cv.system);
    eb1_conv_free(&cv);
    if (rc == LM_OK)
        rc = eb1_max_tokens(canon, body, e);
    if (rc == LM_OK)
        rc = eb1_penalty(canon, body, e);
    if (rc == LM_OK)
        rc = eb1_tools(in, canon, body, e);
    if (rc == LM_OK)
        rc = eb1_params(in, canon, body, e);
    if (rc == LM_OK && c->stream)
        json_object_set_new(body, "stream", json_true());
    if (rc != LM_OK) {
        json_decref(body);
        return rc;
    }
    *out = body;
    return LM_OK;
}

static int eb1_embed_body(const eb1_inst *in, const json_t *canon, json_t **out, lm_err *e)
{
    const json_t *inp = json_object_get(canon, "input"), *v;
    const char *k;
    size_t i;
    json_t *body;

    if (json_is_string(inp)) {
        body = json_pack("{s:[O]}", "input", inp);
    } else if (json_is_array(inp) && json_array_size(inp) > 0) {
        if (json_array_size(inp) > EB1_MAX_EMBED)
            return eb1_inval(e, "ERNIE v1 embeddings take at most 16 texts per request");
        json_array_foreach (inp, i, v) {
            if (!json_is_string(v))
                return eb1_inval(e, "ERNIE v1 embeddings take text input only (no token arrays)");
        }
        body = json_pack("{s:O}", "input", inp);
    } else {
        return eb1_inval(e, "input must be a string or a non-empty array of strings");
    }
    if (body == NULL)
        return eb1_oom(e);
    json_object_foreach ((json_t *)canon, k, v) {
        if (strcmp(k, "model") == 0 || strcmp(k, "input") == 0 || json_is_null(v))
            continue;
        if (strcmp(k, "user") == 0 && json_is_string(v))
            json_object_set_new(body, "user_id", json_deep_copy(v));
        else
            eb1_debug(in, "dropping unsupported embeddings parameter", k);
    }
    *out = body;
    return LM_OK;
}

/* ------------------------------------------------------------------ build_request */

/* c->rstate for this attempt: reused (and reset) when the host rebuilds the
 * same call after a refused token. */
static eb1_req *eb1_rstate(const eb1_inst *in, lm_call *c)
{
    eb1_req *rs = c->rstate;
    if (rs == NULL) {
        rs = in->h->alloc(sizeof *rs);
        if (rs == NULL)
            return NULL;
        c->rstate = rs;
    } else {
        in->h->free(rs->token);
    }
    memset(rs, 0, sizeof *rs);
    rs->op = c->op;
    rs->stream = c->stream;
    return rs;
}

static char *eb1_url(const eb1_inst *in, const char *path, const char *ep, lm_str tok)
{
    eb1_sb b = {in->h, NULL, 0, 0, 0};
    eb1_sb_cstr(&b, in->base);
    eb1_sb_cstr(&b, path);
    eb1_sb_cstr(&b, ep);
    eb1_sb_cstr(&b, "?access_token=");
    eb1_sb_pct(&b, tok.p, tok.n);
    return eb1_sb_take(&b);
}

/* Steals body. */
static int eb1_send(const eb1_inst *in, lm_call *c, const char *ep, lm_str tok, json_t *body,
                    lm_ureq *u, lm_err *e)
{
    const lm_host_api *h = in->h;
    eb1_req *rs = eb1_rstate(in, c);
    char *url;
    int rc;

    if (rs == NULL || (rs->token = eb1_strndup(h, tok.p, tok.n)) == NULL) {
        json_decref(body);
        return eb1_oom(e);
    }
    url = eb1_url(in, c->op == LM_OP_EMBED ? EB1_EMBED_PATH : EB1_CHAT_PATH, ep, tok);
    rc = url ? h->ureq_set_url(u, lm_cstr(url)) : LM_ENOMEM;
    h->free(url);
    if (rc == LM_OK && c->stream && c->op == LM_OP_CHAT)
        rc = h->ureq_add_header(u, LM_STR("Accept"), LM_STR("text/event-stream"));
    if (rc != LM_OK) {
        json_decref(body);
        return eb1_internal(e, rc, "building the upstream request failed");
    }
    rc = h->ureq_set_json_body(u, body);
    return rc == LM_OK ? LM_OK : eb1_internal(e, rc, "setting the upstream body failed");
}

static int eb1_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    eb1_inst *in = istate;
    const char *model, *ep;
    char epbuf[EB1_MAX_EP];
    json_t *body = NULL;
    lm_str tok = {NULL, 0};
    int rc;

    if (!json_is_object(canon))
        return eb1_inval(e, "request body must be a JSON object");
    model = eb1_nonempty(c->model) ? c->model : eb1_jstr(canon, "model");
    if (!eb1_nonempty(model))
        return eb1_inval(e, "model is required");
    if (c->op != LM_OP_CHAT && c->op != LM_OP_EMBED)
        return lm_err_set(e, LM_ENOTSUP, 400, "invalid_request_error", NULL,
                          "ernie: unsupported operation");
    ep = eb1_endpoint(c->op == LM_OP_EMBED ? eb1_embed_eps : eb1_chat_eps, model, epbuf,
                      sizeof epbuf);
    if (ep == NULL)
        return eb1_inval(e, "model name cannot be used as an ERNIE v1 endpoint");
    /* Translate first: a request v1 cannot take fails without a token fetch. */
    rc = c->op == LM_OP_EMBED ? eb1_embed_body(in, canon, &body, e)
                              : eb1_chat_body(in, c, canon, &body, e);
    if (rc != LM_OK)
        return rc;
    rc = in->h->side_get(u, EB1_SIDE, &tok);
    if (rc == LM_AGAIN) {
        json_decref(body); /* the host fetches the token and calls us again */
        return LM_AGAIN;
    }
    if (rc != LM_OK || tok.n == 0) { /* an empty token would be refetched forever */
        json_decref(body);
        return eb1_internal(e, rc, "the access token is unavailable");
    }
    return eb1_send(in, c, ep, tok, body, u, e);
}

/* ------------------------------------------------------------------ responses */

static json_int_t eb1_nz(int64_t v)
{
    return (json_int_t)(v < 0 ? 0 : v);
}

/* finish_reason from a v1 body. Safety first (need_clear_history), then a
 * function call, then truncation. NULL: still generating (a stream event
 * that is not the last). */
static const char *eb1_finish(const json_t *j, int has_call, int is_last)
{
    const char *fr = eb1_jstr(j, "finish_reason");
    if (json_is_true(json_object_get(j, "need_clear_history")))
        return "content_filter";
    if (!is_last)
        return NULL;
    if (has_call || (fr && strcmp(fr, "function_call") == 0))
        return "tool_calls";
    if (json_is_true(json_object_get(j, "is_truncated")) || (fr && strcmp(fr, "length") == 0))
        return "length";
    if (fr && strcmp(fr, "content_filter") == 0)
        return "content_filter";
    return "stop"; /* normal, stop, missing or unknown */
}

/* "call_<request id>_<n>": unique per request without global state. */
static json_t *eb1_call_id(const lm_call *c, eb1_req *rs)
{
    char buf[160];
    unsigned n = rs ? rs->ncalls++ : 0;
    snprintf(buf, sizeof buf, "call_%s_%u", eb1_nonempty(c->request_id) ? c->request_id : "lm", n);
    return json_string(buf);
}

static json_t *eb1_args(const json_t *fc)
{
    const json_t *a = json_object_get(fc, "arguments");
    char *s;
    json_t *r;
    if (json_is_string(a))
        return json_deep_copy(a);
    if (a == NULL || json_is_null(a))
        return json_string("");
    s = json_dumps(a, JSON_COMPACT);
    r = s ? json_string(s) : NULL;
    free(s);
    return r;
}

/* One OpenAI tool call from a v1 function_call (the "thoughts" are dropped). */
static json_t *eb1_tool_call(const lm_call *c, eb1_req *rs, const json_t *fc, int stream)
{
    const char *name = eb1_jstr(fc, "name");
    json_t *o = json_pack("{s:o,s:s,s:{s:s,s:o}}", "id", eb1_call_id(c, rs), "type", "function",
                          "function", "name", name ? name : "", "arguments", eb1_args(fc));
    if (o != NULL && stream)
        json_object_set_new(o, "index", json_integer(0));
    return o;
}

static json_t *eb1_resp_id(const lm_call *c, const json_t *j)
{
    const char *id = eb1_jstr(j, "id");
    char buf[160];
    if (eb1_nonempty(id))
        return json_string(id);
    snprintf(buf, sizeof buf, "chatcmpl-%s", eb1_nonempty(c->request_id) ? c->request_id : "lm");
    return json_string(buf);
}

static json_int_t eb1_created(const eb1_inst *in, const json_t *j)
{
    const json_t *cr = json_object_get(j, "created");
    if (json_is_integer(cr))
        return json_integer_value(cr);
    return LM_HOST_HAS(in->h, unix_time) ? (json_int_t)in->h->unix_time() : 0;
}

static int eb1_parse_chat(const eb1_inst *in, lm_call *c, const json_t *j, json_t **out,
                          lm_usage *usage, lm_err *e)
{
    const json_t *res = json_object_get(j, "result");
    const json_t *fc = json_object_get(j, "function_call");
    int has_call = json_is_object(fc);
    lm_usage us = LM_USAGE_UNKNOWN;
    json_t *msg, *resp;

    if (!json_is_string(res) && !has_call)
        return eb1_bad_upstream(e, "a response without result");
    msg = json_pack("{s:s,s:o}", "role", "assistant", "content",
                    json_is_string(res) && (json_string_length(res) > 0 || !has_call)
                        ? json_deep_copy(res)
                        : json_null());
    if (msg != NULL && has_call)
        json_object_set_new(msg, "tool_calls",
                            json_pack("[o]", eb1_tool_call(c, c->rstate, fc, 0)));
    resp = json_pack("{s:o,s:s,s:I,s:s,s:[{s:i,s:o,s:n,s:s}]}", "id", eb1_resp_id(c, j), "object",
                     "chat.completion", "created", eb1_created(in, j), "model",
                     c->model ? c->model : "", "choices", "index", 0, "message", msg, "logprobs",
                     "finish_reason", eb1_finish(j, has_call, 1));
    if (resp == NULL)
        return eb1_oom(e);
    if (lm_usage_from_json(json_object_get(j, "usage"), &us)) {
        json_object_set_new(resp, "usage", lm_usage_to_json(&us));
        *usage = us;
    }
    *out = resp;
    return LM_OK;
}

static int eb1_parse_embed(lm_call *c, const json_t *j, json_t **out, lm_usage *usage, lm_err *e)
{
    const json_t *data = json_object_get(j, "data"), *it;
    lm_usage us = LM_USAGE_UNKNOWN;
    json_t *arr, *resp;
    size_t i;

    if (!json_is_array(data))
        return eb1_bad_upstream(e, "an embeddings response without data");
    arr = json_array();
    if (arr == NULL)
        return eb1_oom(e);
    json_array_foreach (data, i, it) {
        const json_t *vec = json_object_get(it, "embedding");
        const json_t *ix = json_object_get(it, "index");
        if (!json_is_array(vec)) {
            json_decref(arr);
            return eb1_bad_upstream(e, "an embedding that is not a list");
        }
        json_array_append_new(
            arr, json_pack("{s:s,s:I,s:O}", "object", "embedding", "index",
                           json_is_integer(ix) ? json_integer_value(ix) : (json_int_t)i,
                           "embedding", vec));
    }
    lm_usage_from_json(json_object_get(j, "usage"), &us);
    if (us.prompt < 0)
        us.prompt = us.total;
    if (us.total < 0)
        us.total = us.prompt;
    us.completion = 0;
    resp = json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", arr, "model",
                     c->model ? c->model : "", "usage", "prompt_tokens", eb1_nz(us.prompt),
                     "total_tokens", eb1_nz(us.total));
    if (resp == NULL)
        return eb1_oom(e);
    if (us.total >= 0)
        *usage = us;
    *out = resp;
    return LM_OK;
}

/* A whole 2xx body. v1 reports errors with HTTP 200, and so does a stream
 * request that failed before streaming (one plain JSON object). */
static int eb1_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                              lm_usage *usage, lm_err *e)
{
    eb1_inst *in = istate;
    json_t *j;
    json_int_t code;
    int rc;

    (void)status;
    *out = NULL;
    j = json_loadb(body.p, body.n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return eb1_bad_upstream(e, "malformed JSON");
    }
    code = eb1_fill_error(in, c->rstate, j, 0, e);
    if (code != 0) {
        json_decref(j);
        return eb1_token_refused(code) ? eb1_refused(in, c->rstate) : LM_EUPSTREAM;
    }
    rc = c->op == LM_OP_EMBED ? eb1_parse_embed(c, j, out, usage, e)
                              : eb1_parse_chat(in, c, j, out, usage, e);
    json_decref(j);
    return rc;
}

/* Non-2xx (proxies, gateways in front of Baidu): v1, OAuth or OpenAI error
 * bodies; anything else goes to the host's default mapping. */
static int eb1_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e)
{
    eb1_inst *in = istate;
    json_t *j = json_loadb(body.p, body.n, 0, NULL);
    json_int_t code = json_is_object(j) ? eb1_fill_error(in, c->rstate, j, status, e) : 0;
    json_decref(j);
    if (code == 0)
        return LM_DECLINED;
    return eb1_token_refused(code) ? eb1_refused(in, c->rstate) : LM_OK;
}

/* ------------------------------------------------------------------ stream */

static int eb1_emit(const eb1_inst *in, lm_emit *out, json_t *delta, const char *fr, lm_err *e)
{
    int rc = in->h->emit_delta(out, 0, delta, fr);
    return rc < 0 ? eb1_internal(e, rc, "emitting a chunk failed") : LM_OK;
}

/* The delta for one event: result text, the function call (once), and the
 * role on the very first chunk. NULL when there is nothing to send. */
static json_t *eb1_event_delta(const lm_call *c, eb1_req *rs, const json_t *j)
{
    const json_t *res = json_object_get(j, "result");
    const json_t *fc = json_object_get(j, "function_call");
    json_t *d = json_object();
    if (d == NULL)
        return NULL;
    if (json_is_string(res) && json_string_length(res) > 0)
        json_object_set_new(d, "content", json_deep_copy(res));
    if (json_is_object(fc)) {
        rs->saw_tools = 1;
        if (!rs->tc_sent) {
            json_object_set_new(d, "tool_calls", json_pack("[o]", eb1_tool_call(c, rs, fc, 1)));
            rs->tc_sent = 1;
        }
    }
    if (!rs->role_sent) {
        json_object_set_new(d, "role", json_string("assistant"));
        if (json_object_get(d, "content") == NULL)
            json_object_set_new(d, "content",
                                json_object_get(d, "tool_calls") ? json_null() : json_string(""));
        rs->role_sent = 1;
    }
    if (json_object_size(d) == 0) {
        json_decref(d);
        return NULL;
    }
    return d;
}

static int eb1_stream_error(const eb1_inst *in, const eb1_req *rs, json_int_t code)
{
    /* An in-stream refusal cannot be retried (bytes may have reached the
     * client), but the next request must not reuse the token. */
    if (eb1_token_refused(code) && rs->token != NULL && LM_HOST_HAS(in->h, side_invalidate))
        in->h->side_invalidate(in->ictx, EB1_SIDE, lm_cstr(rs->token));
    return LM_EUPSTREAM;
}

/* The end of a stream that never said is_end (a tolerated "[DONE]"). */
static int eb1_close(const eb1_inst *in, eb1_req *rs, lm_emit *out, lm_err *e)
{
    int rc = LM_OK;
    if (rs->role_sent)
        rc = eb1_emit(in, out, NULL, rs->saw_tools ? "tool_calls" : "stop", e);
    return rc == LM_OK ? LM_DONE : rc;
}

static int eb1_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    eb1_inst *in = istate;
    eb1_req *rs = c->rstate;
    json_t *j, *delta;
    json_int_t code;
    const char *fr;
    lm_usage us;
    int rc = LM_OK, last;

    if (rs == NULL)
        return eb1_internal(e, LM_ERR, "no request state");
    if (ev->data.n == 0)
        return LM_OK;
    if (ev->data.n == 6 && memcmp(ev->data.p, "[DONE]", 6) == 0)
        return eb1_close(in, rs, out, e);
    j = json_loadb(ev->data.p, ev->data.n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return eb1_bad_upstream(e, "a malformed stream event");
    }
    code = eb1_fill_error(in, rs, j, 0, e);
    if (code != 0) {
        json_decref(j);
        return eb1_stream_error(in, rs, code);
    }
    delta = eb1_event_delta(c, rs, j);
    if (delta != NULL)
        rc = eb1_emit(in, out, delta, NULL, e);
    if (rc == LM_OK && lm_usage_from_json(json_object_get(j, "usage"), &us) &&
        in->h->emit_usage(out, &us) < 0)
        rc = eb1_internal(e, LM_ERR, "emitting usage failed");
    last = json_is_true(json_object_get(j, "is_end"));
    fr = eb1_finish(j, rs->saw_tools, last);
    if (rc == LM_OK && fr != NULL) {
        rc = eb1_emit(in, out, NULL, fr, e);
        if (rc == LM_OK)
            rc = LM_DONE; /* is_end, or a blocked answer: nothing more to show */
    }
    json_decref(j);
    return rc;
}

/* ------------------------------------------------------------------ table */

static const lm_provider eb1_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "ernie",
    .version = "1.0.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = eb1_cfg_keys,
    .init = eb1_init,
    .fini = eb1_fini,
    .list_models = NULL,
    .build_request = eb1_build_request,
    .parse_response = eb1_parse_response,
    .parse_event = eb1_parse_event,
    .map_error = eb1_map_error,
    .req_close = eb1_req_close,
    .side_request = eb1_side_request,
    .side_parse = eb1_side_parse,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &eb1_provider;
}
