/*
 * qwen.c - Alibaba Qwen through the DashScope native API
 * (docs/wire-formats.md section 1; decisions in sdk/notes/qwen.md).
 *
 *   chat, text models   POST <base>/api/v1/services/aigc/text-generation/generation
 *   chat, vision models POST <base>/api/v1/services/aigc/multimodal-generation/generation
 *   embeddings          POST <base>/api/v1/services/embeddings/text-embedding/text-embedding
 *
 * A pure translator: no I/O, no mutable globals. Instance state (qw_inst) is
 * read-only after init; per-request state (qw_req) lives in c->rstate.
 */
#include "longmen.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QW_DEFAULT_BASE "https://dashscope.aliyuncs.com"
#define QW_PATH_TEXT    "/api/v1/services/aigc/text-generation/generation"
#define QW_PATH_MM      "/api/v1/services/aigc/multimodal-generation/generation"
#define QW_PATH_EMBED   "/api/v1/services/embeddings/text-embedding/text-embedding"

typedef struct qw_inst {
    const lm_host_api *h;
    void *ictx;
    char *url_text;
    char *url_mm;
    char *url_embed;
    char *auth;      /* "Bearer <key>" */
    const char *key; /* points into auth; used only to scrub messages */
    char *workspace; /* X-DashScope-WorkSpace, or NULL */
} qw_inst;

typedef struct qw_req {
    int op;
    int stream;
    int multimodal;
    int embed_b64;    /* client asked encoding_format=base64 */
    int role_sent;    /* stream: the first delta carried role */
    int content_sent; /* stream: some content/tool call reached the client */
    int saw_tools;    /* stream: a tool_calls fragment was seen */
    int finished;     /* stream: a final finish_reason was emitted */
    uint64_t tc_seen; /* stream: tool call indexes (<64) whose head was sent */
} qw_req;

static const lm_cfg_key qw_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, QW_DEFAULT_BASE,
     "DashScope root URL (intl: https://dashscope-intl.aliyuncs.com); a trailing /api/v1 is "
     "accepted"},
    {"api_key", LM_CFG_STR, 1, NULL, "DashScope API key (sent as Authorization: Bearer)"},
    {"workspace", LM_CFG_STR, 0, NULL, "optional X-DashScope-WorkSpace id"},
    {NULL, 0, 0, NULL, NULL}};

/* ------------------------------------------------------------------ helpers */

static char *qw_strndup(const lm_host_api *h, const char *s, size_t n)
{
    char *p = h->alloc(n + 1);
    if (p == NULL)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *qw_concat(const lm_host_api *h, const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);
    char *p = h->alloc(an + bn + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, a, an);
    memcpy(p + an, b, bn);
    p[an + bn] = '\0';
    return p;
}

static const char *qw_jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int qw_nonempty(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static int qw_prefix(const char *s, const char *pre)
{
    return strncmp(s, pre, strlen(pre)) == 0;
}

static void qw_debug(const qw_inst *in, const char *what, const char *name)
{
    if (LM_HOST_HAS(in->h, log))
        in->h->log(in->ictx, LM_LOG_DEBUG, "%s: %s", what, name);
}

/* Replace every occurrence of the channel key in msg by "***" (the message
 * only shrinks, so this terminates). */
static void qw_scrub(const qw_inst *in, char *msg)
{
    size_t kn = in->key ? strlen(in->key) : 0;
    char *hit;
    if (kn < 4)
        return;
    while ((hit = strstr(msg, in->key)) != NULL) {
        memcpy(hit, "***", 3);
        memmove(hit + 3, hit + kn, strlen(hit + kn) + 1);
    }
}

/* DashScope error code -> HTTP status, or dflt when unknown. */
static int qw_status_for_code(const char *code, int dflt)
{
    if (code == NULL)
        return dflt;
    if (strcmp(code, "InvalidApiKey") == 0)
        return 401;
    if (qw_prefix(code, "AccessDenied"))
        return 403;
    if (qw_prefix(code, "Throttling"))
        return 429;
    if (qw_prefix(code, "InternalError"))
        return 500;
    if (strcmp(code, "RequestTimeOut") == 0)
        return 504;
    if (strcmp(code, "BadRequest.TooLarge") == 0)
        return 413;
    if (strcmp(code, "DataInspectionFailed") == 0 || strcmp(code, "data_inspection_failed") == 0 ||
        strcmp(code, "InvalidParameter") == 0 || qw_prefix(code, "BadRequest") ||
        strcmp(code, "InvalidURL") == 0 || strcmp(code, "Arrearage") == 0 ||
        strcmp(code, "invalid_parameter_error") == 0)
        return 400;
    return dflt;
}

static int qw_is_inspection(const char *code)
{
    return code != NULL && (strcmp(code, "DataInspectionFailed") == 0 ||
                            strcmp(code, "data_inspection_failed") == 0);
}

/*
 * Fill e from a DashScope error object {code,message,request_id} (or an
 * OpenAI-shaped {"error":{...}} one). status <= 0 or 2xx: derive it from the
 * code. Returns 1 when the body looked like an error, else 0.
 */
static int qw_fill_error(const qw_inst *in, const json_t *j, int status, lm_err *e)
{
    const json_t *err = json_object_get(j, "error");
    const json_t *jc;
    const char *code = NULL, *msg = NULL;
    char codebuf[32];

    if (json_is_object(err)) {
        jc = json_object_get(err, "code");
        msg = qw_jstr(err, "message");
    } else {
        jc = json_object_get(j, "code");
        msg = qw_jstr(j, "message");
        if (msg == NULL && json_is_string(err))
            msg = json_string_value(err);
    }
    if (json_is_string(jc)) {
        code = json_string_value(jc);
    } else if (json_is_integer(jc)) {
        snprintf(codebuf, sizeof codebuf, "%lld", (long long)json_integer_value(jc));
        code = codebuf;
    }
    if (!qw_nonempty(code) && msg == NULL)
        return 0;
    if (status < 400)
        status = qw_status_for_code(code, 500);
    if (qw_is_inspection(code)) {
        status = 400;
        code = "content_filter";
    }
    lm_err_set(e, LM_EUPSTREAM, status, lm_err_type_for_status(status), code, "%s",
               msg ? msg : (code ? code : "upstream error"));
    qw_scrub(in, e->msg);
    return 1;
}

static int qw_bad_upstream(lm_err *e, const char *what)
{
    return lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error", "DashScope returned %s",
                      what);
}

static int qw_oom(lm_err *e)
{
    return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
}

static int qw_inval(lm_err *e, const char *param, const char *msg)
{
    return lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", param ? "invalid_value" : NULL,
                      "%s", msg);
}

/* Concatenate the "text" members of a DashScope content list ([{"text":..},{"image":..}]),
 * or the text parts of an OpenAI content array. Returns a new json string. */
static json_t *qw_join_text(const json_t *arr, const char *sep)
{
    size_t i, total = 0, seplen = strlen(sep), nparts = 0;
    json_t *v, *out;
    char *buf, *w;

    json_array_foreach (arr, i, v) {
        const json_t *t = json_object_get(v, "text");
        if (json_is_string(t)) {
            total += json_string_length(t) + seplen;
            nparts++;
        }
    }
    if (nparts == 0)
        return json_string("");
    buf = malloc(total + 1);
    if (buf == NULL)
        return NULL;
    w = buf;
    nparts = 0;
    json_array_foreach (arr, i, v) {
        const json_t *t = json_object_get(v, "text");
        if (!json_is_string(t))
            continue;
        if (nparts++) {
            memcpy(w, sep, seplen);
            w += seplen;
        }
        memcpy(w, json_string_value(t), json_string_length(t));
        w += json_string_length(t);
    }
    out = json_stringn(buf, (size_t)(w - buf));
    free(buf);
    return out;
}

/* ------------------------------------------------------------------ usage */

static int64_t qw_int(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* DashScope usage -> lm_usage. Returns 1 when something was reported. */
static int qw_usage(const json_t *u, lm_usage *out)
{
    lm_usage r = LM_USAGE_UNKNOWN;
    if (!json_is_object(u))
        return 0;
    r.prompt = qw_int(u, "input_tokens");
    if (r.prompt < 0)
        r.prompt = qw_int(u, "prompt_tokens");
    r.completion = qw_int(u, "output_tokens");
    if (r.completion < 0)
        r.completion = qw_int(u, "completion_tokens");
    r.total = qw_int(u, "total_tokens");
    if (r.total < 0 && r.prompt >= 0 && r.completion >= 0)
        r.total = r.prompt + r.completion;
    r.cached = qw_int(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
    r.reasoning = qw_int(json_object_get(u, "output_tokens_details"), "reasoning_tokens");
    if (r.reasoning < 0)
        r.reasoning = qw_int(json_object_get(u, "completion_tokens_details"), "reasoning_tokens");
    *out = r;
    return r.prompt >= 0 || r.completion >= 0 || r.total >= 0;
}

static json_t *qw_usage_json(const lm_usage *u)
{
    json_t *o =
        json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)(u->prompt < 0 ? 0 : u->prompt),
                  "completion_tokens", (json_int_t)(u->completion < 0 ? 0 : u->completion),
                  "total_tokens", (json_int_t)(u->total < 0 ? 0 : u->total));
    if (o == NULL)
        return NULL;
    if (u->cached >= 0)
        json_object_set_new(o, "prompt_tokens_details",
                            json_pack("{s:I}", "cached_tokens", (json_int_t)u->cached));
    if (u->reasoning >= 0)
        json_object_set_new(o, "completion_tokens_details",
                            json_pack("{s:I}", "reasoning_tokens", (json_int_t)u->reasoning));
    return o;
}

/* ------------------------------------------------------------------ init */

static int qw_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    qw_inst *in;
    lm_str base = {NULL, 0}, key = {NULL, 0}, ws = {NULL, 0};
    char *root;
    size_t n;

    if (!LM_HOST_HAS(h, alloc) || !LM_HOST_HAS(h, free) || !LM_HOST_HAS(h, cfg_str) ||
        !LM_HOST_HAS(h, ureq_set_url) || !LM_HOST_HAS(h, ureq_add_header) ||
        !LM_HOST_HAS(h, ureq_set_json_body) || !LM_HOST_HAS(h, emit_delta) ||
        !LM_HOST_HAS(h, emit_usage))
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "qwen: host table too old");

    if (h->cfg_str(ictx, "base_url", &base) != LM_OK || base.n == 0)
        base = LM_STR(QW_DEFAULT_BASE);
    if (h->cfg_str(ictx, "api_key", &key) != LM_OK || key.n == 0)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "qwen: api_key is required");
    if (h->cfg_str(ictx, "workspace", &ws) != LM_OK)
        ws.n = 0;

    if (!(base.n > 7 && strncmp(base.p, "http://", 7) == 0) &&
        !(base.n > 8 && strncmp(base.p, "https://", 8) == 0))
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "qwen: base_url must start with http:// or https://");
    n = base.n;
    while (n > 0 && base.p[n - 1] == '/')
        n--;
    if (n >= 7 && memcmp(base.p + n - 7, "/api/v1", 7) == 0)
        n -= 7;

    in = h->alloc(sizeof *in);
    if (in == NULL)
        return qw_oom(e);
    memset(in, 0, sizeof *in);
    in->h = h;
    in->ictx = ictx;
    root = qw_strndup(h, base.p, n);
    if (root != NULL) {
        in->url_text = qw_concat(h, root, n, QW_PATH_TEXT);
        in->url_mm = qw_concat(h, root, n, QW_PATH_MM);
        in->url_embed = qw_concat(h, root, n, QW_PATH_EMBED);
        h->free(root);
    }
    in->auth = h->alloc(key.n + 8);
    if (in->auth != NULL) {
        memcpy(in->auth, "Bearer ", 7);
        memcpy(in->auth + 7, key.p, key.n);
        in->auth[7 + key.n] = '\0';
        in->key = in->auth + 7;
    }
    if (ws.n > 0)
        in->workspace = qw_strndup(h, ws.p, ws.n);
    if (in->url_text == NULL || in->url_mm == NULL || in->url_embed == NULL || in->auth == NULL ||
        (ws.n > 0 && in->workspace == NULL)) {
        h->free(in->url_text);
        h->free(in->url_mm);
        h->free(in->url_embed);
        h->free(in->auth);
        h->free(in->workspace);
        h->free(in);
        return qw_oom(e);
    }
    *istate = in;
    return LM_OK;
}

static void qw_fini(void *istate)
{
    qw_inst *in = istate;
    const lm_host_api *h;
    if (in == NULL)
        return;
    h = in->h;
    h->free(in->url_text);
    h->free(in->url_mm);
    h->free(in->url_embed);
    h->free(in->auth);
    h->free(in->workspace);
    h->free(in);
}

static void qw_req_close(void *istate, lm_call *c)
{
    qw_inst *in = istate;
    if (c->rstate != NULL) {
        in->h->free(c->rstate);
        c->rstate = NULL;
    }
}

/* ------------------------------------------------------------------ request */

static int qw_is_vl_model(const char *m)
{
    return strstr(m, "-vl") != NULL || strstr(m, "-VL") != NULL || qw_prefix(m, "qvq") ||
           qw_prefix(m, "QVQ");
}

/* Does any message carry an image part? */
static int qw_has_image(const json_t *msgs)
{
    size_t i, k;
    json_t *m, *p;
    json_array_foreach (msgs, i, m) {
        const json_t *ct = json_object_get(m, "content");
        if (!json_is_array(ct))
            continue;
        json_array_foreach (ct, k, p) {
            const char *t = qw_jstr(p, "type");
            if (t != NULL && strcmp(t, "image_url") == 0)
                return 1;
        }
    }
    return 0;
}

/* OpenAI content -> DashScope content (string for text models, list for
 * multimodal ones). Returns LM_OK and *out, or LM_EINVAL. */
static int qw_content(const json_t *ct, int mm, json_t **out, lm_err *e)
{
    size_t i;
    json_t *p, *list;

    *out = NULL;
    if (ct == NULL || json_is_null(ct)) {
        *out = mm ? json_array() : json_string("");
    } else if (json_is_string(ct)) {
        *out = mm ? json_pack("[{s:O}]", "text", ct) : json_deep_copy(ct);
    } else if (json_is_array(ct)) {
        if (!mm) {
            json_array_foreach (ct, i, p) {
                const char *t = qw_jstr(p, "type");
                if (t == NULL || strcmp(t, "text") != 0 ||
                    !json_is_string(json_object_get(p, "text")))
                    return qw_inval(e, "messages", "unsupported content part for this model");
            }
            *out = qw_join_text(ct, "\n");
        } else {
            list = json_array();
            if (list == NULL)
                return qw_oom(e);
            json_array_foreach (ct, i, p) {
                const char *t = qw_jstr(p, "type");
                const json_t *v;
                if (t != NULL && strcmp(t, "text") == 0 &&
                    json_is_string(v = json_object_get(p, "text"))) {
                    json_array_append_new(list, json_pack("{s:O}", "text", v));
                } else if (t != NULL && strcmp(t, "image_url") == 0) {
                    v = json_object_get(p, "image_url");
                    if (json_is_object(v))
                        v = json_object_get(v, "url");
                    if (!json_is_string(v) || json_string_length(v) == 0) {
                        json_decref(list);
                        return qw_inval(e, "messages", "image_url part without a url");
                    }
                    json_array_append_new(list, json_pack("{s:O}", "image", v));
                } else {
                    json_decref(list);
                    return qw_inval(e, "messages", "unsupported content part type");
                }
            }
            *out = list;
        }
    } else {
        return qw_inval(e, "messages", "message content must be a string or an array");
    }
    return *out ? LM_OK : qw_oom(e);
}

static int qw_messages(const json_t *msgs, int mm, json_t **out, lm_err *e)
{
    size_t i;
    json_t *m, *arr = json_array();
    int rc;

    if (arr == NULL)
        return qw_oom(e);
    json_array_foreach (msgs, i, m) {
        const char *role = qw_jstr(m, "role");
        const json_t *tc;
        json_t *nm, *content;

        if (!json_is_object(m) || role == NULL) {
            json_decref(arr);
            return qw_inval(e, "messages", "each message needs a string role");
        }
        if (strcmp(role, "developer") == 0)
            role = "system";
        if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 &&
            strcmp(role, "assistant") != 0 && strcmp(role, "tool") != 0) {
            json_decref(arr);
            return qw_inval(e, "messages", "unsupported message role");
        }
        rc = qw_content(json_object_get(m, "content"), mm, &content, e);
        if (rc != LM_OK) {
            json_decref(arr);
            return rc;
        }
        nm = json_pack("{s:s,s:o}", "role", role, "content", content);
        if (nm == NULL) {
            json_decref(arr);
            return qw_oom(e);
        }
        tc = json_object_get(m, "tool_calls");
        if (strcmp(role, "assistant") == 0 && json_is_array(tc) && json_array_size(tc) > 0)
            json_object_set_new(nm, "tool_calls", json_deep_copy(tc));
        if (strcmp(role, "tool") == 0) {
            const json_t *id = json_object_get(m, "tool_call_id");
            if (json_is_string(id))
                json_object_set_new(nm, "tool_call_id", json_deep_copy(id));
        }
        json_array_append_new(arr, nm);
    }
    *out = arr;
    return LM_OK;
}

/* Canon key -> what to do with it. */
enum { QW_K_DROP = 0, QW_K_PASS, QW_K_SPECIAL };

static int qw_chat_key(const char *k)
{
    static const char *const pass[] = {"seed",
                                       "stop",
                                       "presence_penalty",
                                       "tools",
                                       "tool_choice",
                                       "parallel_tool_calls",
                                       "response_format",
                                       "top_k",
                                       "repetition_penalty",
                                       "enable_search",
                                       "search_options",
                                       "enable_thinking",
                                       "thinking_budget",
                                       "vl_high_resolution_images",
                                       NULL};
    static const char *const special[] = {"model",       "messages",
                                          "stream",      "stream_options",
                                          "max_tokens",  "max_completion_tokens",
                                          "temperature", "top_p",
                                          "n",           NULL};
    size_t i;
    for (i = 0; special[i]; i++)
        if (strcmp(k, special[i]) == 0)
            return QW_K_SPECIAL;
    for (i = 0; pass[i]; i++)
        if (strcmp(k, pass[i]) == 0)
            return QW_K_PASS;
    return QW_K_DROP;
}

static int qw_build_chat(qw_inst *in, lm_call *c, qw_req *rs, const json_t *canon,
                         const char *model, lm_ureq *u, lm_err *e)
{
    const lm_host_api *h = in->h;
    const json_t *msgs = json_object_get(canon, "messages"), *v;
    const char *k;
    json_t *body, *params, *input, *jm = NULL;
    int rc;

    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return qw_inval(e, "messages", "messages must be a non-empty array");
    v = json_object_get(canon, "n");
    if (v != NULL && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
        return qw_inval(e, "n", "n > 1 is not supported by DashScope");

    rs->multimodal = qw_has_image(msgs) || qw_is_vl_model(model);
    rc = qw_messages(msgs, rs->multimodal, &jm, e);
    if (rc != LM_OK)
        return rc;

    params = json_pack("{s:s}", "result_format", "message");
    input = json_pack("{s:o}", "messages", jm);
    if (params == NULL || input == NULL) {
        json_decref(params);
        json_decref(input);
        return qw_oom(e);
    }

    /* max_tokens: prefer max_completion_tokens (the non-deprecated name). */
    v = json_object_get(canon, "max_completion_tokens");
    if (v == NULL || json_is_null(v))
        v = json_object_get(canon, "max_tokens");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            json_decref(params);
            json_decref(input);
            return qw_inval(e, "max_tokens", "max_tokens must be a positive integer");
        }
        json_object_set_new(params, "max_tokens", json_integer(json_integer_value(v)));
    }
    v = json_object_get(canon, "temperature");
    if (v != NULL && !json_is_null(v)) {
        double t;
        if (!json_is_number(v)) {
            json_decref(params);
            json_decref(input);
            return qw_inval(e, "temperature", "temperature must be a number");
        }
        t = json_number_value(v);
        if (t < 0)
            t = 0;
        if (t >= 2)
            t = 1.99; /* DashScope: [0, 2) */
        json_object_set_new(params, "temperature", json_real(t));
    }
    v = json_object_get(canon, "top_p");
    if (v != NULL && !json_is_null(v)) {
        double p;
        if (!json_is_number(v)) {
            json_decref(params);
            json_decref(input);
            return qw_inval(e, "top_p", "top_p must be a number");
        }
        p = json_number_value(v);
        if (p >= 1)
            p = 0.9999; /* DashScope: (0, 1) exclusive */
        if (p <= 0)
            p = 0.0001;
        json_object_set_new(params, "top_p", json_real(p));
    }
    json_object_foreach ((json_t *)canon, k, v) {
        int kind = qw_chat_key(k);
        if (kind == QW_K_PASS) {
            if (!json_is_null(v))
                json_object_set_new(params, k, json_deep_copy(v));
        } else if (kind == QW_K_DROP) {
            qw_debug(in, "qwen: dropping unsupported parameter", k);
        }
    }
    if (c->stream)
        json_object_set_new(params, "incremental_output", json_true());

    body = json_pack("{s:s,s:o,s:o}", "model", model, "input", input, "parameters", params);
    if (body == NULL)
        return qw_oom(e);

    rc = h->ureq_set_url(u, lm_cstr(rs->multimodal ? in->url_mm : in->url_text));
    if (rc == LM_OK)
        rc = h->ureq_add_header(u, LM_STR("Authorization"), lm_cstr(in->auth));
    if (rc == LM_OK && in->workspace != NULL)
        rc = h->ureq_add_header(u, LM_STR("X-DashScope-WorkSpace"), lm_cstr(in->workspace));
    if (rc == LM_OK && c->stream) {
        rc = h->ureq_add_header(u, LM_STR("X-DashScope-SSE"), LM_STR("enable"));
        if (rc == LM_OK)
            rc = h->ureq_add_header(u, LM_STR("Accept"), LM_STR("text/event-stream"));
    }
    if (rc != LM_OK) {
        json_decref(body);
        return lm_err_set(e, rc < 0 ? rc : LM_ERR, 500, "api_error", NULL,
                          "qwen: building the upstream request failed");
    }
    rc = h->ureq_set_json_body(u, body);
    if (rc != LM_OK)
        return lm_err_set(e, rc < 0 ? rc : LM_ERR, 500, "api_error", NULL,
                          "qwen: setting the upstream body failed");
    return LM_OK;
}

static int qw_build_embed(qw_inst *in, qw_req *rs, const json_t *canon, const char *model,
                          lm_ureq *u, lm_err *e)
{
    const lm_host_api *h = in->h;
    const json_t *inp = json_object_get(canon, "input"), *v;
    const char *k;
    json_t *texts, *params, *body;
    size_t i;
    int rc;

    if (json_is_string(inp)) {
        texts = json_pack("[O]", inp);
    } else if (json_is_array(inp) && json_array_size(inp) > 0) {
        json_array_foreach (inp, i, v) {
            if (!json_is_string(v))
                return qw_inval(e, "input",
                                "DashScope embeddings take text input only (no token arrays)");
        }
        texts = json_deep_copy(inp);
    } else {
        return qw_inval(e, "input", "input must be a string or a non-empty array of strings");
    }
    params = json_object();
    if (texts == NULL || params == NULL) {
        json_decref(texts);
        json_decref(params);
        return qw_oom(e);
    }
    json_object_foreach ((json_t *)canon, k, v) {
        if (strcmp(k, "model") == 0 || strcmp(k, "input") == 0 || json_is_null(v))
            continue;
        if (strcmp(k, "dimensions") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 1) {
                json_decref(texts);
                json_decref(params);
                return qw_inval(e, "dimensions", "dimensions must be a positive integer");
            }
            json_object_set_new(params, "dimension", json_integer(json_integer_value(v)));
        } else if (strcmp(k, "encoding_format") == 0) {
            const char *f = json_string_value(v);
            if (f != NULL && strcmp(f, "base64") == 0) {
                rs->embed_b64 = 1;
            } else if (f == NULL || strcmp(f, "float") != 0) {
                json_decref(texts);
                json_decref(params);
                return qw_inval(e, "encoding_format", "encoding_format must be float or base64");
            }
        } else if (strcmp(k, "text_type") == 0) {
            json_object_set_new(params, "text_type", json_deep_copy(v));
        } else {
            qw_debug(in, "qwen: dropping unsupported embeddings parameter", k);
        }
    }
    body = json_pack("{s:s,s:{s:o},s:o}", "model", model, "input", "texts", texts, "parameters",
                     params);
    if (body == NULL)
        return qw_oom(e);
    rc = h->ureq_set_url(u, lm_cstr(in->url_embed));
    if (rc == LM_OK)
        rc = h->ureq_add_header(u, LM_STR("Authorization"), lm_cstr(in->auth));
    if (rc == LM_OK && in->workspace != NULL)
        rc = h->ureq_add_header(u, LM_STR("X-DashScope-WorkSpace"), lm_cstr(in->workspace));
    if (rc != LM_OK) {
        json_decref(body);
        return lm_err_set(e, rc < 0 ? rc : LM_ERR, 500, "api_error", NULL,
                          "qwen: building the upstream request failed");
    }
    rc = h->ureq_set_json_body(u, body);
    if (rc != LM_OK)
        return lm_err_set(e, rc < 0 ? rc : LM_ERR, 500, "api_error", NULL,
                          "qwen: setting the upstream body failed");
    return LM_OK;
}

static int qw_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    qw_inst *in = istate;
    qw_req *rs;
    const char *model;

    rs = in->h->alloc(sizeof *rs);
    if (rs == NULL)
        return qw_oom(e);
    memset(rs, 0, sizeof *rs);
    rs->op = c->op;
    rs->stream = c->stream;
    c->rstate = rs;

    if (!json_is_object(canon))
        return qw_inval(e, NULL, "request body must be a JSON object");
    model = qw_nonempty(c->model) ? c->model : qw_jstr(canon, "model");
    if (!qw_nonempty(model))
        return qw_inval(e, "model", "model is required");
    if (c->op == LM_OP_EMBED)
        return qw_build_embed(in, rs, canon, model, u, e);
    if (c->op != LM_OP_CHAT)
        return lm_err_set(e, LM_ENOTSUP, 400, "invalid_request_error", NULL,
                          "qwen: unsupported operation");
    return qw_build_chat(in, c, rs, canon, model, u, e);
}

/* ------------------------------------------------------------------ responses */

static const char *qw_finish(const char *fr, int has_tools)
{
    if (fr == NULL || fr[0] == '\0' || strcmp(fr, "null") == 0)
        return NULL;
    if (strcmp(fr, "length") == 0)
        return "length";
    if (strcmp(fr, "content_filter") == 0)
        return "content_filter";
    if (strcmp(fr, "tool_calls") == 0)
        return "tool_calls";
    return has_tools ? "tool_calls" : "stop";
}

/* "call_<request id>_<n>" for tool calls that came without an id. */
static json_t *qw_synth_id(const lm_call *c, size_t n)
{
    char buf[128];
    snprintf(buf, sizeof buf, "call_%s_%zu", qw_nonempty(c->request_id) ? c->request_id : "lm", n);
    return json_string(buf);
}

static json_t *qw_args(const json_t *fn)
{
    const json_t *a = json_object_get(fn, "arguments");
    char *s;
    json_t *r;
    if (json_is_string(a))
        return json_deep_copy(a);
    if (a == NULL || json_is_null(a))
        return json_string("");
    s = json_dumps(a, JSON_COMPACT);
    if (s == NULL)
        return NULL;
    r = json_string(s);
    free(s);
    return r;
}

/* Non-stream tool_calls -> OpenAI message.tool_calls. */
static json_t *qw_tool_calls(const lm_call *c, const json_t *arr)
{
    json_t *out = json_array(), *tc;
    size_t i;
    if (out == NULL)
        return NULL;
    json_array_foreach (arr, i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const char *id = qw_jstr(tc, "id");
        const char *name = qw_jstr(fn, "name");
        json_t *o = json_pack(
            "{s:o,s:s,s:{s:s,s:o}}", "id", qw_nonempty(id) ? json_string(id) : qw_synth_id(c, i),
            "type", "function", "function", "name", name ? name : "", "arguments", qw_args(fn));
        if (o == NULL) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, o);
    }
    return out;
}

static json_t *qw_content_out(const json_t *ct)
{
    if (json_is_string(ct))
        return json_deep_copy(ct);
    if (json_is_array(ct))
        return qw_join_text(ct, "");
    return json_null();
}

static json_t *qw_chat_completion_id(const lm_call *c, const json_t *j)
{
    const char *rid = qw_jstr(j, "request_id");
    char buf[160];
    snprintf(buf, sizeof buf, "chatcmpl-%s",
             qw_nonempty(rid) ? rid : (qw_nonempty(c->request_id) ? c->request_id : "lm"));
    return json_string(buf);
}

static int qw_parse_chat(qw_inst *in, lm_call *c, const json_t *j, json_t **out, lm_usage *usage,
                         lm_err *e)
{
    const json_t *output = json_object_get(j, "output"), *choices, *ch;
    json_t *resp, *jchoices;
    lm_usage us = LM_USAGE_UNKNOWN;
    size_t i;

    if (!json_is_object(output))
        return qw_bad_upstream(e, "a response without output");
    choices = json_object_get(output, "choices");
    jchoices = json_array();
    if (jchoices == NULL)
        return qw_oom(e);
    if (json_is_array(choices)) {
        json_array_foreach (choices, i, ch) {
            const json_t *m = json_object_get(ch, "message");
            const json_t *tc = json_object_get(m, "tool_calls");
            const json_t *idx = json_object_get(ch, "index");
            const char *rc_ = qw_jstr(m, "reasoning_content");
            int has_tools = json_is_array(tc) && json_array_size(tc) > 0;
            const char *fr = qw_finish(qw_jstr(ch, "finish_reason"), has_tools);
            json_t *msg, *content, *choice;

            content = qw_content_out(json_object_get(m, "content"));
            if (content == NULL) {
                json_decref(jchoices);
                return qw_oom(e);
            }
            if (has_tools && json_is_string(content) && json_string_length(content) == 0) {
                json_decref(content);
                content = json_null();
            }
            msg = json_pack("{s:s,s:o}", "role", "assistant", "content", content);
            if (msg != NULL && has_tools)
                json_object_set_new(msg, "tool_calls", qw_tool_calls(c, tc));
            if (msg != NULL && qw_nonempty(rc_))
                json_object_set_new(msg, "reasoning_content", json_string(rc_));
            choice = json_pack(
                "{s:I,s:o,s:n,s:s}", "index",
                (json_int_t)(json_is_integer(idx) ? json_integer_value(idx) : (json_int_t)i),
                "message", msg, "logprobs", "finish_reason", fr ? fr : "stop");
            if (choice == NULL) {
                json_decref(jchoices);
                return qw_oom(e);
            }
            json_array_append_new(jchoices, choice);
        }
    } else if (json_is_string(json_object_get(output, "text"))) {
        /* result_format "text" fallback: {"output":{"text":..,"finish_reason":..}} */
        const char *fr = qw_finish(qw_jstr(output, "finish_reason"), 0);
        json_array_append_new(jchoices,
                              json_pack("{s:i,s:{s:s,s:O},s:n,s:s}", "index", 0, "message", "role",
                                        "assistant", "content", json_object_get(output, "text"),
                                        "logprobs", "finish_reason", fr ? fr : "stop"));
    } else {
        json_decref(jchoices);
        return qw_bad_upstream(e, "a response without choices");
    }

    resp = json_pack("{s:o,s:s,s:I,s:s,s:o}", "id", qw_chat_completion_id(c, j), "object",
                     "chat.completion", "created",
                     (json_int_t)(LM_HOST_HAS(in->h, unix_time) ? in->h->unix_time() : 0), "model",
                     c->model ? c->model : "", "choices", jchoices);
    if (resp == NULL)
        return qw_oom(e);
    if (qw_usage(json_object_get(j, "usage"), &us)) {
        json_object_set_new(resp, "usage", qw_usage_json(&us));
        if (usage != NULL)
            *usage = us;
    }
    *out = resp;
    return LM_OK;
}

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* float list -> base64 of little-endian float32, as OpenAI's encoding_format=base64. */
static json_t *qw_b64_floats(const json_t *arr)
{
    size_t n = json_array_size(arr), nb = n * 4, i, o = 0;
    unsigned char *raw;
    char *txt;
    json_t *r;

    raw = malloc(nb + 1);
    txt = malloc((nb + 2) / 3 * 4 + 1);
    if (raw == NULL || txt == NULL) {
        free(raw);
        free(txt);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        float f = (float)json_number_value(json_array_get(arr, i));
        uint32_t b;
        memcpy(&b, &f, 4);
        raw[i * 4] = (unsigned char)(b & 0xff);
        raw[i * 4 + 1] = (unsigned char)((b >> 8) & 0xff);
        raw[i * 4 + 2] = (unsigned char)((b >> 16) & 0xff);
        raw[i * 4 + 3] = (unsigned char)((b >> 24) & 0xff);
    }
    for (i = 0; i + 2 < nb; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        txt[o++] = b64tab[(v >> 18) & 63];
        txt[o++] = b64tab[(v >> 12) & 63];
        txt[o++] = b64tab[(v >> 6) & 63];
        txt[o++] = b64tab[v & 63];
    }
    if (nb - i == 1) {
        uint32_t v = (uint32_t)raw[i] << 16;
        txt[o++] = b64tab[(v >> 18) & 63];
        txt[o++] = b64tab[(v >> 12) & 63];
        txt[o++] = '=';
        txt[o++] = '=';
    } else if (nb - i == 2) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8;
        txt[o++] = b64tab[(v >> 18) & 63];
        txt[o++] = b64tab[(v >> 12) & 63];
        txt[o++] = b64tab[(v >> 6) & 63];
        txt[o++] = '=';
    }
    r = json_stringn(txt, o);
    free(raw);
    free(txt);
    return r;
}

static int qw_cmp_index(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "index"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "index"));
    return (x > y) - (x < y);
}

static int qw_parse_embed(lm_call *c, const qw_req *rs, const json_t *j, json_t **out,
                          lm_usage *usage, lm_err *e)
{
    const json_t *embs = json_object_get(json_object_get(j, "output"), "embeddings"), *it;
    json_t **items, *data, *resp;
    size_t i, n;
    lm_usage us = LM_USAGE_UNKNOWN;
    int64_t tot;

    if (!json_is_array(embs))
        return qw_bad_upstream(e, "an embeddings response without output.embeddings");
    n = json_array_size(embs);
    items = calloc(n ? n : 1, sizeof *items);
    if (items == NULL)
        return qw_oom(e);
    json_array_foreach (embs, i, it) {
        const json_t *vec = json_object_get(it, "embedding");
        const json_t *ti = json_object_get(it, "text_index");
        if (!json_is_array(vec)) {
            for (n = 0; n < i; n++)
                json_decref(items[n]);
            free(items);
            return qw_bad_upstream(e, "an embedding that is not a list");
        }
        items[i] =
            json_pack("{s:s,s:I,s:o}", "object", "embedding", "index",
                      (json_int_t)(json_is_integer(ti) ? json_integer_value(ti) : (json_int_t)i),
                      "embedding", rs->embed_b64 ? qw_b64_floats(vec) : json_deep_copy(vec));
        if (items[i] == NULL) {
            for (n = 0; n < i; n++)
                json_decref(items[n]);
            free(items);
            return qw_oom(e);
        }
    }
    qsort(items, n, sizeof *items, qw_cmp_index);
    data = json_array();
    for (i = 0; i < n; i++) {
        if (data != NULL)
            json_array_append_new(data, items[i]);
        else
            json_decref(items[i]);
    }
    free(items);
    if (data == NULL)
        return qw_oom(e);
    tot = qw_int(json_object_get(j, "usage"), "total_tokens");
    if (tot < 0)
        tot = qw_int(json_object_get(j, "usage"), "input_tokens");
    resp =
        json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", data, "model",
                  c->model ? c->model : "", "usage", "prompt_tokens",
                  (json_int_t)(tot < 0 ? 0 : tot), "total_tokens", (json_int_t)(tot < 0 ? 0 : tot));
    if (resp == NULL)
        return qw_oom(e);
    if (tot >= 0 && usage != NULL) {
        us.prompt = tot;
        us.completion = 0;
        us.total = tot;
        *usage = us;
    }
    *out = resp;
    return LM_OK;
}

static int qw_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                             lm_usage *usage, lm_err *e)
{
    qw_inst *in = istate;
    qw_req *rs = c->rstate;
    json_t *j;
    int rc;

    (void)status;
    *out = NULL;
    j = json_loadb(body.p, body.n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return qw_bad_upstream(e, "malformed JSON");
    }
    /* An error reported with a 2xx status. */
    if (json_object_get(j, "output") == NULL && qw_fill_error(in, j, 0, e)) {
        json_decref(j);
        return LM_EUPSTREAM;
    }
    if (rs != NULL && rs->op == LM_OP_EMBED)
        rc = qw_parse_embed(c, rs, j, out, usage, e);
    else
        rc = qw_parse_chat(in, c, j, out, usage, e);
    json_decref(j);
    return rc;
}

static int qw_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e)
{
    qw_inst *in = istate;
    json_t *j = json_loadb(body.p, body.n, 0, NULL);
    int ok;
    (void)c;
    ok = json_is_object(j) && qw_fill_error(in, j, status, e);
    json_decref(j);
    return ok ? LM_OK : LM_DECLINED;
}

/* ------------------------------------------------------------------ stream */

static int qw_emit(qw_inst *in, lm_emit *out, int index, json_t *delta, const char *fr, lm_err *e)
{
    int rc = in->h->emit_delta(out, index, delta, fr);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "qwen: emitting a chunk failed");
    return LM_OK;
}

/* Stream tool_calls fragment list -> OpenAI delta.tool_calls (id/type/name only on
 * the first fragment of each index). Returns a new array (maybe empty). */
static json_t *qw_stream_tools(const lm_call *c, qw_req *rs, const json_t *arr)
{
    json_t *out = json_array(), *tc;
    size_t i;
    if (out == NULL)
        return NULL;
    json_array_foreach (arr, i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const json_t *ji = json_object_get(tc, "index");
        const char *id = qw_jstr(tc, "id");
        const char *name = qw_jstr(fn, "name");
        const json_t *args = json_object_get(fn, "arguments");
        json_int_t idx = json_is_integer(ji) ? json_integer_value(ji) : (json_int_t)i;
        int first;
        json_t *o, *f;

        if (idx < 0)
            idx = 0;
        first = idx < 64 ? !(rs->tc_seen & ((uint64_t)1 << idx)) : qw_nonempty(id);
        o = json_pack("{s:I}", "index", idx);
        f = json_object();
        if (o == NULL || f == NULL) {
            json_decref(o);
            json_decref(f);
            json_decref(out);
            return NULL;
        }
        if (first) {
            json_object_set_new(o, "id",
                                qw_nonempty(id) ? json_string(id) : qw_synth_id(c, (size_t)idx));
            json_object_set_new(o, "type", json_string("function"));
            json_object_set_new(f, "name", json_string(name ? name : ""));
            json_object_set_new(f, "arguments", qw_args(fn));
            if (idx < 64)
                rs->tc_seen |= (uint64_t)1 << idx;
        } else if (json_is_string(args) && json_string_length(args) > 0) {
            json_object_set_new(f, "arguments", json_deep_copy(args));
        } else if (args != NULL && !json_is_string(args) && !json_is_null(args)) {
            json_object_set_new(f, "arguments", qw_args(fn));
        } else {
            json_decref(o);
            json_decref(f);
            continue;
        }
        json_object_set_new(o, "function", f);
        json_array_append_new(out, o);
    }
    return out;
}

static int qw_stream_error(qw_inst *in, lm_call *c, qw_req *rs, const json_t *j, lm_emit *out,
                           lm_err *e)
{
    const char *code = j ? qw_jstr(j, "code") : NULL;
    (void)c;
    /* Moderation after text already reached the client: end it like OpenAI does. */
    if (qw_is_inspection(code) && rs->content_sent && !rs->finished) {
        int rc = qw_emit(in, out, 0, NULL, "content_filter", e);
        rs->finished = 1;
        return rc == LM_OK ? LM_DONE : rc;
    }
    if (j == NULL || !qw_fill_error(in, j, 0, e))
        lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                   "DashScope reported a stream error");
    return LM_EUPSTREAM;
}

static int qw_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    qw_inst *in = istate;
    qw_req *rs = c->rstate;
    json_t *j;
    const json_t *output, *choices, *ch;
    lm_usage us;
    size_t i;
    int rc = LM_OK, final = 0;

    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "qwen: no request state");
    if (rs->finished)
        return LM_DONE;
    if (ev->event.n == 5 && memcmp(ev->event.p, "error", 5) == 0) {
        j = json_loadb(ev->data.p, ev->data.n, 0, NULL);
        rc = qw_stream_error(in, c, rs, json_is_object(j) ? j : NULL, out, e);
        json_decref(j);
        return rc;
    }
    if (ev->data.n == 0)
        return LM_OK;
    j = json_loadb(ev->data.p, ev->data.n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return qw_bad_upstream(e, "a malformed stream event");
    }
    output = json_object_get(j, "output");
    if (!json_is_object(output)) {
        rc = qw_stream_error(in, c, rs, j, out, e);
        json_decref(j);
        return rc;
    }
    choices = json_object_get(output, "choices");
    json_array_foreach (choices, i, ch) {
        const json_t *m = json_object_get(ch, "message");
        const json_t *ji = json_object_get(ch, "index");
        const json_t *tc = json_object_get(m, "tool_calls");
        const char *rcn = qw_jstr(m, "reasoning_content");
        int idx = json_is_integer(ji) ? (int)json_integer_value(ji) : (int)i;
        const char *fr;
        json_t *delta = json_object(), *content;

        if (delta == NULL) {
            rc = qw_oom(e);
            break;
        }
        content = qw_content_out(json_object_get(m, "content"));
        if (json_is_string(content) && json_string_length(content) > 0)
            json_object_set_new(delta, "content", content);
        else
            json_decref(content);
        if (qw_nonempty(rcn))
            json_object_set_new(delta, "reasoning_content", json_string(rcn));
        if (json_is_array(tc) && json_array_size(tc) > 0) {
            json_t *tools = qw_stream_tools(c, rs, tc);
            rs->saw_tools = 1;
            if (tools != NULL && json_array_size(tools) > 0)
                json_object_set_new(delta, "tool_calls", tools);
            else
                json_decref(tools);
        }
        fr = qw_finish(qw_jstr(ch, "finish_reason"), rs->saw_tools);
        if (json_object_size(delta) > 0) {
            if (!rs->role_sent) {
                json_object_set_new(delta, "role", json_string("assistant"));
                rs->role_sent = 1;
            }
            rs->content_sent = 1;
            rc = qw_emit(in, out, idx, delta, NULL, e);
        } else {
            json_decref(delta);
        }
        if (rc == LM_OK && fr != NULL) {
            if (!rs->role_sent) {
                rs->role_sent = 1;
                rc = qw_emit(in, out, idx,
                             json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, e);
            }
            if (rc == LM_OK)
                rc = qw_emit(in, out, idx, NULL, fr, e);
            final = 1;
        }
        if (rc != LM_OK)
            break;
    }
    if (rc == LM_OK && qw_usage(json_object_get(j, "usage"), &us)) {
        if (in->h->emit_usage(out, &us) < 0)
            rc = lm_err_set(e, LM_ERR, 500, "api_error", NULL, "qwen: emitting usage failed");
    }
    json_decref(j);
    if (rc == LM_OK && final) {
        rs->finished = 1;
        return LM_DONE;
    }
    return rc;
}

/* ------------------------------------------------------------------ table */

static const lm_provider qw_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "qwen",
    .version = "1.0.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = qw_cfg_keys,
    .init = qw_init,
    .fini = qw_fini,
    .list_models = NULL,
    .build_request = qw_build_request,
    .parse_response = qw_parse_response,
    .parse_event = qw_parse_event,
    .map_error = qw_map_error,
    .req_close = qw_req_close,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &qw_provider;
}
