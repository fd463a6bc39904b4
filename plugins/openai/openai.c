/*
 * openai - any OpenAI-compatible upstream, chosen by base_url or by a named
 * preset (deepseek, moonshot, zhipu, ...). The request is forwarded as the
 * client sent it (model mapped, stream usage requested); responses are
 * forwarded verbatim and only scanned for usage, so the relay stays cheap.
 */
#include "longmen.h"

#include <stdlib.h>
#include <string.h>

typedef struct preset_s {
    const char *name;
    const char *base_url;
} preset_t;

/* Base URLs of OpenAI-compatible vendors (docs/wire-formats.md section 8). */
static const preset_t presets[] = {
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
    {NULL, NULL},
};

typedef struct openai_s {
    const lm_host_api *h;
    void *ictx;
    char *chat_url;
    char *embed_url;
    char *auth; /* "Bearer <key>" or NULL */
} openai_t;

static const lm_cfg_key cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, NULL, "API root, e.g. https://api.deepseek.com/v1 (or use preset)"},
    {"preset", LM_CFG_STR, 0, NULL,
     "openai, deepseek, moonshot, zhipu, hunyuan, doubao, minimax, baichuan, dashscope, qianfan, "
     "spark, ollama"},
    {"api_key", LM_CFG_STR, 0, NULL, "bearer key; use env:VAR"},
    {NULL, 0, 0, NULL, NULL},
};

static char *join_url(const lm_host_api *h, lm_str base, const char *path)
{
    while (base.n && base.p[base.n - 1] == '/')
        base.n--;
    size_t plen = strlen(path);
    char *s = h->alloc(base.n + plen + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, base.p, base.n);
    memcpy(s + base.n, path, plen + 1);
    return s;
}

static void oa_fini(void *istate)
{
    openai_t *st = istate;
    if (st == NULL)
        return;
    if (st->auth)
        memset(st->auth, 0, strlen(st->auth));
    st->h->free(st->chat_url);
    st->h->free(st->embed_url);
    st->h->free(st->auth);
    st->h->free(st);
}

static int resolve_base(const lm_host_api *h, void *ictx, lm_str *base, lm_err *e)
{
    lm_str preset;
    if (h->cfg_str(ictx, "base_url", base) == LM_OK && base->n)
        return LM_OK;
    if (h->cfg_str(ictx, "preset", &preset) != LM_OK)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "set base_url or preset for an openai channel");
    for (const preset_t *p = presets; p->name; p++) {
        if (strlen(p->name) == preset.n && memcmp(p->name, preset.p, preset.n) == 0) {
            *base = lm_cstr(p->base_url);
            return LM_OK;
        }
    }
    return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "unknown preset \"%.*s\"",
                      (int)preset.n, preset.p);
}

static int oa_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    lm_str base, key = {NULL, 0};
    if (resolve_base(h, ictx, &base, e) < 0)
        return LM_EINVAL;
    if (!(base.n > 7 &&
          (strncmp(base.p, "http://", 7) == 0 || strncmp(base.p, "https://", 8) == 0)))
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "base_url must start with http:// or https://");
    openai_t *st = h->alloc(sizeof(*st));
    if (st == NULL)
        return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    memset(st, 0, sizeof(*st));
    st->h = h;
    st->ictx = ictx;
    st->chat_url = join_url(h, base, "/chat/completions");
    st->embed_url = join_url(h, base, "/embeddings");
    if (h->cfg_str(ictx, "api_key", &key) == LM_OK && key.n) {
        st->auth = h->alloc(key.n + 8);
        if (st->auth) {
            memcpy(st->auth, "Bearer ", 7);
            memcpy(st->auth + 7, key.p, key.n);
            st->auth[key.n + 7] = '\0';
        }
    }
    if (st->chat_url == NULL || st->embed_url == NULL || (key.n && st->auth == NULL)) {
        oa_fini(st);
        return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    }
    *istate = st;
    return LM_OK;
}

/* Forward the client's bytes when nothing needs to change: a non-stream
 * request as is, a stream with stream_options spliced in before the final
 * '}'. Saves a parse-tree copy and a serialisation per request. Returns 1
 * when the body was set. */
static int raw_body(openai_t *st, lm_call *c, const json_t *canon, lm_ureq *u)
{
    lm_str raw = LM_HOST_HAS(st->h, ureq_set_body) ? c->raw_body : (lm_str){NULL, 0};
    if (raw.n == 0 || (c->stream && json_object_get(canon, "stream_options") != NULL))
        return 0;
    if (!c->stream)
        return st->h->ureq_set_body(u, raw) == LM_OK;
    size_t end = raw.n;
    while (end > 0 && raw.p[end - 1] != '}')
        end--;
    if (end == 0)
        return 0;
    static const char opt[] = ",\"stream_options\":{\"include_usage\":true}";
    char *b = st->h->alloc(raw.n + sizeof(opt));
    if (b == NULL)
        return 0;
    memcpy(b, raw.p, end - 1);
    memcpy(b + end - 1, opt, sizeof(opt) - 1);
    memcpy(b + end - 1 + sizeof(opt) - 1, raw.p + end - 1, raw.n - end + 1);
    int ok = st->h->ureq_set_body(u, (lm_str){b, raw.n + sizeof(opt) - 1}) == LM_OK;
    st->h->free(b);
    return ok;
}

static int oa_build(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    openai_t *st = istate;
    const char *url = c->op == LM_OP_EMBED ? st->embed_url : st->chat_url;
    if (st->h->ureq_set_url(u, lm_cstr(url)) < 0)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "bad upstream URL");
    if (st->auth)
        st->h->ureq_add_header(u, LM_STR("Authorization"), lm_cstr(st->auth));
    if (c->stream)
        st->h->ureq_add_header(u, LM_STR("Accept"), LM_STR("text/event-stream"));
    if (raw_body(st, c, canon, u)) {
        st->h->ureq_add_header(u, LM_STR("Content-Type"), LM_STR("application/json"));
        return LM_OK;
    }
    /* A shallow copy: only top-level fields change, nested values are shared
     * (read-only) with the canonical request. */
    json_t *body = json_copy((json_t *)canon);
    if (body == NULL)
        return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    if (c->op == LM_OP_CHAT && c->stream)
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    return st->h->ureq_set_json_body(u, body);
}

/* Find the object value of the last top-level-looking "usage" key without
 * parsing the whole body. Inside JSON strings a quote is escaped, so an
 * unescaped "usage" followed by ':' and '{' is a key. */
static json_t *find_usage(lm_str body)
{
    const char *p = body.p, *end = body.p + body.n;
    const char *found = NULL;
    for (const char *q = p; q + 7 <= end; q++) {
        q = memchr(q, '"', (size_t)(end - q));
        if (q == NULL || q + 7 > end)
            break;
        if (memcmp(q, "\"usage\"", 7) == 0 && (q == p || q[-1] != '\\')) {
            const char *r = q + 7;
            while (r < end && (*r == ' ' || *r == '\n' || *r == '\r' || *r == '\t'))
                r++;
            if (r < end && *r == ':') {
                r++;
                while (r < end && (*r == ' ' || *r == '\n' || *r == '\r' || *r == '\t'))
                    r++;
                if (r < end && *r == '{')
                    found = r;
            }
        }
    }
    if (found == NULL)
        return NULL;
    return json_loadb(found, (size_t)(end - found), JSON_DISABLE_EOF_CHECK, NULL);
}

static void usage_from(const json_t *o, lm_usage *u)
{
    json_t *v;
    *u = (lm_usage)LM_USAGE_UNKNOWN;
    if ((v = json_object_get(o, "prompt_tokens")) && json_is_integer(v))
        u->prompt = json_integer_value(v);
    if ((v = json_object_get(o, "completion_tokens")) && json_is_integer(v))
        u->completion = json_integer_value(v);
    if ((v = json_object_get(o, "total_tokens")) && json_is_integer(v))
        u->total = json_integer_value(v);
    v = json_object_get(json_object_get(o, "prompt_tokens_details"), "cached_tokens");
    if (json_is_integer(v))
        u->cached = json_integer_value(v);
    v = json_object_get(json_object_get(o, "completion_tokens_details"), "reasoning_tokens");
    if (json_is_integer(v))
        u->reasoning = json_integer_value(v);
}

static int oa_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                             lm_usage *usage, lm_err *e)
{
    (void)istate;
    (void)c;
    (void)status;
    (void)e;
    json_t *u = find_usage(body);
    if (u) {
        usage_from(u, usage);
        json_decref(u);
    }
    *out = NULL; /* already OpenAI-shaped: forward verbatim */
    return LM_OK;
}

static int error_from(const json_t *err, lm_err *e)
{
    const char *msg = json_string_value(json_object_get(err, "message"));
    const char *type = json_string_value(json_object_get(err, "type"));
    const char *code = json_string_value(json_object_get(err, "code"));
    return lm_err_set(e, LM_EUPSTREAM, 502, type ? type : "api_error",
                      code ? code : "upstream_error", "%s", msg ? msg : "upstream stream error");
}

static int oa_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    openai_t *st = istate;
    (void)c;
    if (ev->data.n == 6 && memcmp(ev->data.p, "[DONE]", 6) == 0)
        return LM_DONE;
    json_t *chunk = json_loadb(ev->data.p, ev->data.n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                          "upstream sent a malformed stream event");
    }
    json_t *err = json_object_get(chunk, "error");
    if (json_is_object(err)) {
        int rc = error_from(err, e);
        json_decref(chunk);
        return rc;
    }
    return st->h->emit_chunk(out, chunk) < 0 ? LM_ERR : LM_OK;
}

static const lm_provider provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "openai",
    .version = "1.0.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    .flags = LM_PF_MULTI_CHOICE,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = cfg_keys,
    .init = oa_init,
    .fini = oa_fini,
    .build_request = oa_build,
    .parse_response = oa_parse_response,
    .parse_event = oa_parse_event,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &provider;
}
