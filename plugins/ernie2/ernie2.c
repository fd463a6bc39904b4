/*
 * ernie2.c - Baidu ERNIE through Qianfan v2, the OpenAI-compatible API
 * (docs/wire-formats.md section 2.2; decisions in sdk/notes/ernie2.md).
 *
 *   chat        POST <base>/chat/completions   (base defaults to https://qianfan.baidubce.com/v2)
 *   embeddings  POST <base>/embeddings
 *
 * Quirks handled: finish_reason "normal" -> "stop", extra flag/ban_round/
 * need_clear_history/is_end fields dropped (need_clear_history or flag >= 3 ->
 * content_filter), v1-style {"error_code":..} bodies, max_completion_tokens
 * -> max_tokens, a string stop -> [stop].
 */
#include "longmen.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EB_DEFAULT_BASE "https://qianfan.baidubce.com/v2"

typedef struct eb_inst {
    const lm_host_api *h;
    void *ictx;
    char *url_chat;
    char *url_embed;
    char *auth;      /* "Bearer <key>" */
    const char *key; /* points into auth; only used to scrub messages */
    char *appid;     /* optional "appid" header */
} eb_inst;

typedef struct eb_req {
    int op;
    int stream;
    int role_sent;
    int emitted; /* stream: something reached the client */
    int saw_tools;
    int finished;     /* stream: a finish_reason chunk was emitted */
    uint64_t tc_seen; /* stream: tool call indexes (<64) whose head was sent */
} eb_req;

static const lm_cfg_key eb_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, EB_DEFAULT_BASE, "Qianfan v2 base URL (…/v2)"},
    {"api_key", LM_CFG_STR, 1, NULL, "Qianfan API key (bce-v3/ALTAK-…), sent as Bearer"},
    {"appid", LM_CFG_STR, 0, NULL, "optional Qianfan app id (appid header)"},
    {NULL, 0, 0, NULL, NULL}};

/* ------------------------------------------------------------------ helpers */

static char *eb_strndup(const lm_host_api *h, const char *s, size_t n)
{
    char *p = h->alloc(n + 1);
    if (p == NULL)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *eb_concat(const lm_host_api *h, const char *a, size_t an, const char *b)
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

static const char *eb_jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int eb_nonempty(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static void eb_debug(const eb_inst *in, const char *what, const char *name)
{
    if (LM_HOST_HAS(in->h, log))
        in->h->log(in->ictx, LM_LOG_DEBUG, "%s: %s", what, name);
}

static void eb_scrub(const eb_inst *in, char *msg)
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

/* Qianfan v1-style numeric error_code -> HTTP status (providers.md 2, translation notes). */
static int eb_status_for_v1code(json_int_t c)
{
    switch (c) {
    case 110:
    case 111:
    case 13:
    case 14: return 401;
    case 6:
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
    case 100:
    case 336001:
    case 336002:
    case 336003: return 400;
    default: return 500;
    }
}

/*
 * Fill e from an error body: {"error":{code,message,type}} (v2) or
 * {"error_code":N,"error_msg":..} (v1 style). status < 400: derive it.
 * Returns 1 when the body was an error.
 */
static int eb_fill_error(const eb_inst *in, const json_t *j, int status, lm_err *e)
{
    const json_t *err = json_object_get(j, "error");
    const json_t *ec = json_object_get(j, "error_code");
    char codebuf[32];
    const char *code = NULL, *msg = NULL, *type = NULL;

    if (json_is_object(err)) {
        const json_t *jc = json_object_get(err, "code");
        if (json_is_string(jc)) {
            code = json_string_value(jc);
        } else if (json_is_integer(jc)) {
            snprintf(codebuf, sizeof codebuf, "%lld", (long long)json_integer_value(jc));
            code = codebuf;
        }
        msg = eb_jstr(err, "message");
        type = eb_jstr(err, "type");
        if (status < 400)
            status = 502;
    } else if (json_is_string(err)) {
        msg = json_string_value(err);
        if (status < 400)
            status = 502;
    } else if (json_is_integer(ec) && json_integer_value(ec) != 0) {
        snprintf(codebuf, sizeof codebuf, "%lld", (long long)json_integer_value(ec));
        code = codebuf;
        msg = eb_jstr(j, "error_msg");
        if (status < 400)
            status = eb_status_for_v1code(json_integer_value(ec));
    } else {
        return 0;
    }
    if (!eb_nonempty(type))
        type = lm_err_type_for_status(status);
    lm_err_set(e, LM_EUPSTREAM, status, type, code, "%s",
               msg ? msg : (code ? code : "upstream error"));
    eb_scrub(in, e->msg);
    return 1;
}

static int eb_bad_upstream(lm_err *e, const char *what)
{
    return lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error", "Qianfan returned %s",
                      what);
}

static int eb_oom(lm_err *e)
{
    return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
}

static int eb_inval(lm_err *e, const char *msg)
{
    return lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", "invalid_value", "%s", msg);
}

/* ------------------------------------------------------------------ init */

static int eb_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    eb_inst *in;
    lm_str base = {NULL, 0}, key = {NULL, 0}, appid = {NULL, 0};
    size_t n;

    if (!LM_HOST_HAS(h, alloc) || !LM_HOST_HAS(h, free) || !LM_HOST_HAS(h, cfg_str) ||
        !LM_HOST_HAS(h, ureq_set_url) || !LM_HOST_HAS(h, ureq_add_header) ||
        !LM_HOST_HAS(h, ureq_set_json_body) || !LM_HOST_HAS(h, emit_delta) ||
        !LM_HOST_HAS(h, emit_usage))
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "ernie2: host table too old");
    if (h->cfg_str(ictx, "base_url", &base) != LM_OK || base.n == 0)
        base = LM_STR(EB_DEFAULT_BASE);
    if (h->cfg_str(ictx, "api_key", &key) != LM_OK || key.n == 0)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "ernie2: api_key is required");
    if (h->cfg_str(ictx, "appid", &appid) != LM_OK)
        appid.n = 0;
    if (!(base.n > 7 && strncmp(base.p, "http://", 7) == 0) &&
        !(base.n > 8 && strncmp(base.p, "https://", 8) == 0))
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "ernie2: base_url must start with http:// or https://");
    n = base.n;
    while (n > 0 && base.p[n - 1] == '/')
        n--;

    in = h->alloc(sizeof *in);
    if (in == NULL)
        return eb_oom(e);
    memset(in, 0, sizeof *in);
    in->h = h;
    in->ictx = ictx;
    in->url_chat = eb_concat(h, base.p, n, "/chat/completions");
    in->url_embed = eb_concat(h, base.p, n, "/embeddings");
    in->auth = h->alloc(key.n + 8);
    if (in->auth != NULL) {
        memcpy(in->auth, "Bearer ", 7);
        memcpy(in->auth + 7, key.p, key.n);
        in->auth[7 + key.n] = '\0';
        in->key = in->auth + 7;
    }
    if (appid.n > 0)
        in->appid = eb_strndup(h, appid.p, appid.n);
    if (in->url_chat == NULL || in->url_embed == NULL || in->auth == NULL ||
        (appid.n > 0 && in->appid == NULL)) {
        h->free(in->url_chat);
        h->free(in->url_embed);
        h->free(in->auth);
        h->free(in->appid);
        h->free(in);
        return eb_oom(e);
    }
    *istate = in;
    return LM_OK;
}

static void eb_fini(void *istate)
{
    eb_inst *in = istate;
    const lm_host_api *h;
    if (in == NULL)
        return;
    h = in->h;
    h->free(in->url_chat);
    h->free(in->url_embed);
    h->free(in->auth);
    h->free(in->appid);
    h->free(in);
}

static void eb_req_close(void *istate, lm_call *c)
{
    eb_inst *in = istate;
    if (c->rstate != NULL) {
        in->h->free(c->rstate);
        c->rstate = NULL;
    }
}

/* ------------------------------------------------------------------ request */

static int eb_is(const char *k, const char *const *list)
{
    size_t i;
    for (i = 0; list[i]; i++)
        if (strcmp(k, list[i]) == 0)
            return 1;
    return 0;
}

static int eb_messages(const json_t *msgs, json_t **out, lm_err *e)
{
    json_t *arr = json_array(), *m;
    size_t i;
    if (arr == NULL)
        return eb_oom(e);
    json_array_foreach (msgs, i, m) {
        const char *role = eb_jstr(m, "role");
        json_t *nm;
        const json_t *ct;
        if (!json_is_object(m) || role == NULL) {
            json_decref(arr);
            return eb_inval(e, "each message needs a string role");
        }
        if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 &&
            strcmp(role, "assistant") != 0 && strcmp(role, "tool") != 0 &&
            strcmp(role, "developer") != 0) {
            json_decref(arr);
            return eb_inval(e, "unsupported message role");
        }
        ct = json_object_get(m, "content");
        if (ct != NULL && !json_is_null(ct) && !json_is_string(ct) && !json_is_array(ct)) {
            json_decref(arr);
            return eb_inval(e, "message content must be a string or an array");
        }
        nm = json_deep_copy(m);
        if (nm == NULL) {
            json_decref(arr);
            return eb_oom(e);
        }
        if (strcmp(role, "developer") == 0)
            json_object_set_new(nm, "role", json_string("system"));
        if (ct == NULL || json_is_null(ct))
            json_object_set_new(nm, "content", json_string(""));
        json_array_append_new(arr, nm);
    }
    *out = arr;
    return LM_OK;
}

static int eb_finish_req(eb_inst *in, lm_call *c, const char *url, json_t *body, lm_ureq *u,
                         lm_err *e)
{
    const lm_host_api *h = in->h;
    int rc = h->ureq_set_url(u, lm_cstr(url));
    if (rc == LM_OK)
        rc = h->ureq_add_header(u, LM_STR("Authorization"), lm_cstr(in->auth));
    if (rc == LM_OK && in->appid != NULL)
        rc = h->ureq_add_header(u, LM_STR("appid"), lm_cstr(in->appid));
    if (rc == LM_OK && c->stream && c->op == LM_OP_CHAT)
        rc = h->ureq_add_header(u, LM_STR("Accept"), LM_STR("text/event-stream"));
    if (rc != LM_OK) {
        json_decref(body);
        return lm_err_set(e, rc < 0 ? rc : LM_ERR, 500, "api_error", NULL,
                          "ernie2: building the upstream request failed");
    }
    rc = h->ureq_set_json_body(u, body);
    if (rc != LM_OK)
        return lm_err_set(e, rc < 0 ? rc : LM_ERR, 500, "api_error", NULL,
                          "ernie2: setting the upstream body failed");
    return LM_OK;
}

static int eb_build_chat(eb_inst *in, lm_call *c, const json_t *canon, const char *model,
                         lm_ureq *u, lm_err *e)
{
    static const char *const pass[] = {"temperature",
                                       "top_p",
                                       "penalty_score",
                                       "max_tokens",
                                       "seed",
                                       "frequency_penalty",
                                       "presence_penalty",
                                       "repetition_penalty",
                                       "tools",
                                       "tool_choice",
                                       "parallel_tool_calls",
                                       "web_search",
                                       "response_format",
                                       "metadata",
                                       "enable_thinking",
                                       "thinking_budget",
                                       "thinking_strategy",
                                       "reasoning_effort",
                                       "user",
                                       NULL};
    const json_t *msgs = json_object_get(canon, "messages"), *v;
    const char *k;
    json_t *body, *jm = NULL;
    int rc;

    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return eb_inval(e, "messages must be a non-empty array");
    v = json_object_get(canon, "n");
    if (v != NULL && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
        return eb_inval(e, "n > 1 is not supported by Qianfan");
    rc = eb_messages(msgs, &jm, e);
    if (rc != LM_OK)
        return rc;
    body = json_pack("{s:s,s:o}", "model", model, "messages", jm);
    if (body == NULL)
        return eb_oom(e);

    json_object_foreach ((json_t *)canon, k, v) {
        if (json_is_null(v) || strcmp(k, "model") == 0 || strcmp(k, "messages") == 0 ||
            strcmp(k, "stream") == 0 || strcmp(k, "stream_options") == 0 || strcmp(k, "n") == 0)
            continue;
        if (eb_is(k, pass)) {
            json_object_set_new(body, k, json_deep_copy(v));
        } else if (strcmp(k, "max_completion_tokens") == 0) {
            const json_t *mt = json_object_get(canon, "max_tokens");
            if (mt == NULL || json_is_null(mt))
                json_object_set_new(body, "max_tokens", json_deep_copy(v));
        } else if (strcmp(k, "stop") == 0) {
            if (json_is_string(v))
                json_object_set_new(body, "stop", json_pack("[O]", v));
            else
                json_object_set_new(body, "stop", json_deep_copy(v));
        } else {
            eb_debug(in, "ernie2: dropping unsupported parameter", k);
        }
    }
    if (c->stream) {
        json_object_set_new(body, "stream", json_true());
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    return eb_finish_req(in, c, in->url_chat, body, u, e);
}

static int eb_build_embed(eb_inst *in, lm_call *c, const json_t *canon, const char *model,
                          lm_ureq *u, lm_err *e)
{
    const json_t *inp = json_object_get(canon, "input"), *v;
    const char *k;
    json_t *body;
    size_t i;

    if (json_is_array(inp) && json_array_size(inp) > 0) {
        json_array_foreach (inp, i, v) {
            if (!json_is_string(v))
                return eb_inval(e, "Qianfan embeddings take text input only (no token arrays)");
        }
    } else if (!json_is_string(inp)) {
        return eb_inval(e, "input must be a string or a non-empty array of strings");
    }
    body = json_pack("{s:s,s:O}", "model", model, "input", inp);
    if (body == NULL)
        return eb_oom(e);
    json_object_foreach ((json_t *)canon, k, v) {
        if (strcmp(k, "model") == 0 || strcmp(k, "input") == 0 || json_is_null(v))
            continue;
        if (strcmp(k, "user") == 0)
            json_object_set_new(body, k, json_deep_copy(v));
        else
            eb_debug(in, "ernie2: dropping unsupported embeddings parameter", k);
    }
    return eb_finish_req(in, c, in->url_embed, body, u, e);
}

static int eb_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    eb_inst *in = istate;
    eb_req *rs;
    const char *model;

    rs = in->h->alloc(sizeof *rs);
    if (rs == NULL)
        return eb_oom(e);
    memset(rs, 0, sizeof *rs);
    rs->op = c->op;
    rs->stream = c->stream;
    c->rstate = rs;
    if (!json_is_object(canon))
        return eb_inval(e, "request body must be a JSON object");
    model = eb_nonempty(c->model) ? c->model : eb_jstr(canon, "model");
    if (!eb_nonempty(model))
        return eb_inval(e, "model is required");
    if (c->op == LM_OP_EMBED)
        return eb_build_embed(in, c, canon, model, u, e);
    if (c->op != LM_OP_CHAT)
        return lm_err_set(e, LM_ENOTSUP, 400, "invalid_request_error", NULL,
                          "ernie2: unsupported operation");
    return eb_build_chat(in, c, canon, model, u, e);
}

/* ------------------------------------------------------------------ responses */

/* Qianfan finish_reason -> OpenAI. NULL when still generating. */
static const char *eb_finish(const char *fr, int has_tools)
{
    if (fr == NULL || fr[0] == '\0' || strcmp(fr, "null") == 0)
        return NULL;
    if (strcmp(fr, "length") == 0)
        return "length";
    if (strcmp(fr, "content_filter") == 0)
        return "content_filter";
    if (strcmp(fr, "tool_calls") == 0 || strcmp(fr, "function_call") == 0)
        return "tool_calls";
    /* "normal", "stop" and anything unknown */
    return has_tools ? "tool_calls" : "stop";
}

/* Safety signals: need_clear_history:true or flag >= 3 (must not be shown). */
static int eb_blocked(const json_t *ch, const json_t *top)
{
    const json_t *f = json_object_get(ch, "flag");
    return json_is_true(json_object_get(ch, "need_clear_history")) ||
           json_is_true(json_object_get(top, "need_clear_history")) ||
           (json_is_integer(f) && json_integer_value(f) >= 3);
}

static json_t *eb_synth_id(const lm_call *c, size_t n)
{
    char buf[128];
    snprintf(buf, sizeof buf, "call_%s_%zu", eb_nonempty(c->request_id) ? c->request_id : "lm", n);
    return json_string(buf);
}

static json_t *eb_args(const json_t *fn)
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

static json_t *eb_tool_calls(const lm_call *c, const json_t *arr)
{
    json_t *out = json_array(), *tc;
    size_t i;
    if (out == NULL)
        return NULL;
    json_array_foreach (arr, i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const char *id = eb_jstr(tc, "id");
        const char *name = eb_jstr(fn, "name");
        json_t *o = json_pack(
            "{s:o,s:s,s:{s:s,s:o}}", "id", eb_nonempty(id) ? json_string(id) : eb_synth_id(c, i),
            "type", "function", "function", "name", name ? name : "", "arguments", eb_args(fn));
        if (o == NULL) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, o);
    }
    return out;
}

static json_t *eb_id(const lm_call *c, const json_t *j)
{
    const char *id = eb_jstr(j, "id");
    char buf[160];
    if (eb_nonempty(id))
        return json_string(id);
    snprintf(buf, sizeof buf, "chatcmpl-%s", eb_nonempty(c->request_id) ? c->request_id : "lm");
    return json_string(buf);
}

static int eb_parse_chat(eb_inst *in, lm_call *c, const json_t *j, json_t **out, lm_usage *usage,
                         lm_err *e)
{
    const json_t *choices = json_object_get(j, "choices"), *ch, *cr;
    json_t *jch, *resp;
    lm_usage us = LM_USAGE_UNKNOWN;
    size_t i;

    if (!json_is_array(choices))
        return eb_bad_upstream(e, "a response without choices");
    jch = json_array();
    if (jch == NULL)
        return eb_oom(e);
    json_array_foreach (choices, i, ch) {
        const json_t *m = json_object_get(ch, "message");
        const json_t *tc = json_object_get(m, "tool_calls");
        const json_t *ct = json_object_get(m, "content");
        const json_t *idx = json_object_get(ch, "index");
        const char *rsn = eb_jstr(m, "reasoning_content");
        int has_tools = json_is_array(tc) && json_array_size(tc) > 0;
        const char *fr = eb_finish(eb_jstr(ch, "finish_reason"), has_tools);
        json_t *msg, *choice, *content;

        if (eb_blocked(ch, j))
            fr = "content_filter";
        content = json_is_string(ct) ? json_deep_copy(ct) : json_null();
        if (has_tools && json_is_string(content) && json_string_length(content) == 0) {
            json_decref(content);
            content = json_null();
        }
        msg = json_pack("{s:s,s:o}", "role", "assistant", "content", content);
        if (msg != NULL && has_tools)
            json_object_set_new(msg, "tool_calls", eb_tool_calls(c, tc));
        if (msg != NULL && eb_nonempty(rsn))
            json_object_set_new(msg, "reasoning_content", json_string(rsn));
        choice = json_pack(
            "{s:I,s:o,s:n,s:s}", "index",
            (json_int_t)(json_is_integer(idx) ? json_integer_value(idx) : (json_int_t)i), "message",
            msg, "logprobs", "finish_reason", fr ? fr : (has_tools ? "tool_calls" : "stop"));
        if (choice == NULL) {
            json_decref(jch);
            return eb_oom(e);
        }
        json_array_append_new(jch, choice);
    }
    cr = json_object_get(j, "created");
    resp = json_pack("{s:o,s:s,s:I,s:s,s:o}", "id", eb_id(c, j), "object", "chat.completion",
                     "created",
                     (json_int_t)(json_is_integer(cr)             ? json_integer_value(cr)
                                  : LM_HOST_HAS(in->h, unix_time) ? in->h->unix_time()
                                                                  : 0),
                     "model", c->model ? c->model : "", "choices", jch);
    if (resp == NULL)
        return eb_oom(e);
    if (lm_usage_from_json(json_object_get(j, "usage"), &us)) {
        json_object_set_new(resp, "usage", lm_usage_to_json(&us));
        if (usage != NULL)
            *usage = us;
    }
    *out = resp;
    return LM_OK;
}

static int eb_parse_embed(lm_call *c, const json_t *j, json_t **out, lm_usage *usage, lm_err *e)
{
    const json_t *data = json_object_get(j, "data"), *it;
    json_t *arr, *resp;
    lm_usage us = LM_USAGE_UNKNOWN;
    size_t i;

    if (!json_is_array(data))
        return eb_bad_upstream(e, "an embeddings response without data");
    arr = json_array();
    if (arr == NULL)
        return eb_oom(e);
    json_array_foreach (data, i, it) {
        const json_t *vec = json_object_get(it, "embedding");
        const json_t *ix = json_object_get(it, "index");
        if (!json_is_array(vec) && !json_is_string(vec)) {
            json_decref(arr);
            return eb_bad_upstream(e, "an embedding that is not a list");
        }
        json_array_append_new(
            arr,
            json_pack("{s:s,s:I,s:O}", "object", "embedding", "index",
                      (json_int_t)(json_is_integer(ix) ? json_integer_value(ix) : (json_int_t)i),
                      "embedding", vec));
    }
    lm_usage_from_json(json_object_get(j, "usage"), &us);
    if (us.prompt < 0)
        us.prompt = us.total;
    if (us.total < 0)
        us.total = us.prompt;
    resp = json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", arr, "model",
                     c->model ? c->model : "", "usage", "prompt_tokens",
                     (json_int_t)(us.prompt < 0 ? 0 : us.prompt), "total_tokens",
                     (json_int_t)(us.total < 0 ? 0 : us.total));
    if (resp == NULL)
        return eb_oom(e);
    if (usage != NULL && us.total >= 0) {
        us.completion = 0;
        *usage = us;
    }
    *out = resp;
    return LM_OK;
}

static int eb_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                             lm_usage *usage, lm_err *e)
{
    eb_inst *in = istate;
    eb_req *rs = c->rstate;
    json_t *j;
    int rc;

    (void)status;
    *out = NULL;
    j = json_loadb(body.p, body.n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return eb_bad_upstream(e, "malformed JSON");
    }
    if (eb_fill_error(in, j, 0, e)) {
        json_decref(j);
        return LM_EUPSTREAM;
    }
    if (rs != NULL && rs->op == LM_OP_EMBED)
        rc = eb_parse_embed(c, j, out, usage, e);
    else
        rc = eb_parse_chat(in, c, j, out, usage, e);
    json_decref(j);
    return rc;
}

static int eb_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e)
{
    eb_inst *in = istate;
    json_t *j = json_loadb(body.p, body.n, 0, NULL);
    int ok;
    (void)c;
    ok = json_is_object(j) && eb_fill_error(in, j, status, e);
    json_decref(j);
    return ok ? LM_OK : LM_DECLINED;
}

/* ------------------------------------------------------------------ stream */

static int eb_emit(eb_inst *in, lm_emit *out, int index, json_t *delta, const char *fr, lm_err *e)
{
    int rc = in->h->emit_delta(out, index, delta, fr);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "ernie2: emitting a chunk failed");
    return LM_OK;
}

static json_t *eb_stream_tools(const lm_call *c, eb_req *rs, const json_t *arr)
{
    json_t *out = json_array(), *tc;
    size_t i;
    if (out == NULL)
        return NULL;
    json_array_foreach (arr, i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const json_t *ji = json_object_get(tc, "index");
        const char *id = eb_jstr(tc, "id");
        const char *name = eb_jstr(fn, "name");
        const json_t *args = json_object_get(fn, "arguments");
        json_int_t idx = json_is_integer(ji) ? json_integer_value(ji) : (json_int_t)i;
        int first;
        json_t *o, *f;

        if (idx < 0)
            idx = 0;
        first = idx < 64 ? !(rs->tc_seen & ((uint64_t)1 << idx)) : eb_nonempty(id);
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
                                eb_nonempty(id) ? json_string(id) : eb_synth_id(c, (size_t)idx));
            json_object_set_new(o, "type", json_string("function"));
            json_object_set_new(f, "name", json_string(name ? name : ""));
            json_object_set_new(f, "arguments", eb_args(fn));
            if (idx < 64)
                rs->tc_seen |= (uint64_t)1 << idx;
        } else if (json_is_string(args) && json_string_length(args) > 0) {
            json_object_set_new(f, "arguments", json_deep_copy(args));
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

/* Close the choice if the upstream never sent a finish_reason. */
static int eb_close(eb_inst *in, eb_req *rs, lm_emit *out, lm_err *e)
{
    int rc = LM_OK;
    if (rs->emitted && !rs->finished) {
        rc = eb_emit(in, out, 0, NULL, rs->saw_tools ? "tool_calls" : "stop", e);
        rs->finished = 1;
    }
    return rc == LM_OK ? LM_DONE : rc;
}

static int eb_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    eb_inst *in = istate;
    eb_req *rs = c->rstate;
    json_t *j;
    const json_t *choices, *ch, *ie;
    lm_usage us;
    size_t i;
    int rc = LM_OK;

    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "ernie2: no request state");
    if (ev->data.n == 6 && memcmp(ev->data.p, "[DONE]", 6) == 0)
        return eb_close(in, rs, out, e);
    if (ev->data.n == 0)
        return LM_OK;
    j = json_loadb(ev->data.p, ev->data.n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return eb_bad_upstream(e, "a malformed stream event");
    }
    if (eb_fill_error(in, j, 0, e)) {
        json_decref(j);
        return LM_EUPSTREAM;
    }
    ie = json_object_get(j, "is_end");
    choices = json_object_get(j, "choices");
    json_array_foreach (choices, i, ch) {
        const json_t *d = json_object_get(ch, "delta");
        const json_t *ct = json_object_get(d, "content");
        const json_t *tc = json_object_get(d, "tool_calls");
        const json_t *ji = json_object_get(ch, "index");
        const char *rsn = eb_jstr(d, "reasoning_content");
        int idx = json_is_integer(ji) ? (int)json_integer_value(ji) : (int)i;
        const char *fr;
        json_t *delta = json_object();

        if (delta == NULL) {
            rc = eb_oom(e);
            break;
        }
        if (json_is_string(ct) && json_string_length(ct) > 0)
            json_object_set_new(delta, "content", json_deep_copy(ct));
        if (eb_nonempty(rsn))
            json_object_set_new(delta, "reasoning_content", json_string(rsn));
        if (json_is_array(tc) && json_array_size(tc) > 0) {
            json_t *tools = eb_stream_tools(c, rs, tc);
            rs->saw_tools = 1;
            if (tools != NULL && json_array_size(tools) > 0)
                json_object_set_new(delta, "tool_calls", tools);
            else
                json_decref(tools);
        }
        fr = eb_finish(eb_jstr(ch, "finish_reason"), rs->saw_tools);
        /* a "normal" finish on a chunk that says is_end:false is not the end */
        if (fr != NULL && json_is_false(ie))
            fr = NULL;
        if (eb_blocked(ch, j))
            fr = "content_filter";
        if (json_object_size(delta) > 0 ||
            (!rs->role_sent && json_is_string(json_object_get(d, "role")))) {
            if (!rs->role_sent) {
                json_object_set_new(delta, "role", json_string("assistant"));
                if (json_object_get(delta, "content") == NULL &&
                    json_object_get(delta, "tool_calls") == NULL)
                    json_object_set_new(delta, "content", json_string(""));
                rs->role_sent = 1;
            }
            rs->emitted = 1;
            rc = eb_emit(in, out, idx, delta, NULL, e);
        } else {
            json_decref(delta);
        }
        if (rc == LM_OK && fr != NULL && !rs->finished) {
            if (!rs->role_sent) {
                rs->role_sent = 1;
                rc = eb_emit(in, out, idx,
                             json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, e);
            }
            if (rc == LM_OK)
                rc = eb_emit(in, out, idx, NULL, fr, e);
            rs->emitted = 1;
            rs->finished = 1;
        }
        if (rc != LM_OK)
            break;
    }
    if (rc == LM_OK && lm_usage_from_json(json_object_get(j, "usage"), &us)) {
        if (in->h->emit_usage(out, &us) < 0)
            rc = lm_err_set(e, LM_ERR, 500, "api_error", NULL, "ernie2: emitting usage failed");
    }
    json_decref(j);
    return rc;
}

/* ------------------------------------------------------------------ table */

static const lm_provider eb_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "ernie2",
    .version = "1.0.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = eb_cfg_keys,
    .init = eb_init,
    .fini = eb_fini,
    .list_models = NULL,
    .build_request = eb_build_request,
    .parse_response = eb_parse_response,
    .parse_event = eb_parse_event,
    .map_error = eb_map_error,
    .req_close = eb_req_close,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &eb_provider;
}
