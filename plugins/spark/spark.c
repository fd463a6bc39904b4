/*
 * spark.c - iFlytek Spark through its HTTP OpenAI-compatible API
 * (docs/wire-formats.md section 3.2; decisions in sdk/notes/spark.md).
 *
 *   chat  POST <base>/chat/completions  (base defaults to https://spark-api-open.xf-yun.com/v1)
 *   Authorization: Bearer <APIPassword>  (or "<APIKey>:<APISecret>", sent the same way)
 *
 * Quirks handled: model aliases -> Spark domain names; text-only messages;
 * temperature clamped to (0,1], max_tokens to [1,8192], top_k to [1,6];
 * {"code":N!=0} bodies and chunks with status 200 are errors; a missing
 * finish_reason becomes "stop" ("tool_calls" after tool calls) at [DONE] or
 * in a whole response; tool_calls given as a bare object are accepted.
 */
#include "longmen.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SP_DEFAULT_BASE "https://spark-api-open.xf-yun.com/v1"

typedef struct sp_inst {
    const lm_host_api *h;
    void *ictx;
    char *url_chat;
    char *auth;       /* "Bearer <password>" */
    const char *key;  /* points into auth; only used to scrub messages */
    int stream_usage; /* send stream_options.include_usage */
} sp_inst;

typedef struct sp_req {
    int stream;
    int role_sent;
    int emitted;
    int saw_tools;
    int finished;
    uint64_t tc_seen;
} sp_req;

static const lm_cfg_key sp_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, SP_DEFAULT_BASE, "Spark HTTP API base URL (…/v1)"},
    {"api_key", LM_CFG_STR, 1, NULL, "APIPassword (or APIKey:APISecret), sent as Bearer"},
    {"stream_usage", LM_CFG_BOOL, 0, "true",
     "send stream_options.include_usage upstream on streams"},
    {NULL, 0, 0, NULL, NULL}};

/* Friendly names -> Spark "domain" model ids. Unknown names pass unchanged. */
static const char *const sp_aliases[][2] = {{"spark-lite", "lite"},
                                            {"lite", "lite"},
                                            {"general", "lite"},
                                            {"spark-pro", "generalv3"},
                                            {"generalv3", "generalv3"},
                                            {"spark-pro-128k", "pro-128k"},
                                            {"pro-128k", "pro-128k"},
                                            {"spark-max", "generalv3.5"},
                                            {"generalv3.5", "generalv3.5"},
                                            {"spark-max-32k", "max-32k"},
                                            {"max-32k", "max-32k"},
                                            {"spark-ultra", "4.0Ultra"},
                                            {"spark-4.0-ultra", "4.0Ultra"},
                                            {"4.0ultra", "4.0Ultra"},
                                            {NULL, NULL}};

/* ------------------------------------------------------------------ helpers */

static const char *sp_jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int sp_nonempty(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static void sp_debug(const sp_inst *in, const char *what, const char *name)
{
    if (LM_HOST_HAS(in->h, log))
        in->h->log(in->ictx, LM_LOG_DEBUG, "%s: %s", what, name);
}

static void sp_scrub(const sp_inst *in, char *msg)
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

static int sp_is_filter_code(json_int_t c)
{
    return c == 10013 || c == 10014 || c == 10019;
}

/* Spark numeric code -> HTTP status (providers.md 3, translation notes). */
static int sp_status_for_code(json_int_t c)
{
    if (c == 11200)
        return 403;
    if (c == 11201 || c == 11202 || c == 11203)
        return 429;
    if (sp_is_filter_code(c) || c == 10907 || c == 10163)
        return 400;
    if (c == 10110 || (c >= 10000 && c <= 10012))
        return 503;
    return 502;
}

/*
 * Fill e from a Spark error: {"error":{message,type,code}} or {"code":N,
 * "message":..} with N != 0, or {"message":..} on a non-2xx status.
 * status < 400 means "reported in a 2xx body". Returns 1 for an error.
 */
static int sp_fill_error(const sp_inst *in, const json_t *j, int status, lm_err *e)
{
    const json_t *err = json_object_get(j, "error");
    const json_t *jc = json_object_get(j, "code");
    const char *msg = NULL, *type = NULL, *code = NULL;
    char codebuf[32];

    if (json_is_object(err)) {
        const json_t *ec = json_object_get(err, "code");
        msg = sp_jstr(err, "message");
        type = sp_jstr(err, "type");
        if (json_is_string(ec)) {
            code = json_string_value(ec);
        } else if (json_is_integer(ec)) {
            snprintf(codebuf, sizeof codebuf, "%lld", (long long)json_integer_value(ec));
            code = codebuf;
        }
        if (status < 400)
            status = 502;
    } else if (json_is_integer(jc) && json_integer_value(jc) != 0) {
        json_int_t c = json_integer_value(jc);
        msg = sp_jstr(j, "message");
        if (sp_is_filter_code(c)) {
            code = "content_filter";
        } else {
            snprintf(codebuf, sizeof codebuf, "%lld", (long long)c);
            code = codebuf;
        }
        status = sp_status_for_code(c);
        type = NULL;
    } else if (status >= 400) {
        msg = sp_jstr(j, "message");
        if (msg == NULL && json_is_string(err))
            msg = json_string_value(err);
        if (msg == NULL)
            return 0;
    } else {
        return 0;
    }
    if (!sp_nonempty(type))
        type = lm_err_type_for_status(status);
    lm_err_set(e, LM_EUPSTREAM, status, type, code, "%s",
               msg ? msg : (code ? code : "upstream error"));
    sp_scrub(in, e->msg);
    return 1;
}

static int sp_bad_upstream(lm_err *e, const char *what)
{
    return lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error", "Spark returned %s",
                      what);
}

static int sp_oom(lm_err *e)
{
    return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
}

static int sp_inval(lm_err *e, const char *msg)
{
    return lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", "invalid_value", "%s", msg);
}

static int64_t sp_int(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static int sp_usage(const json_t *u, lm_usage *out)
{
    lm_usage r = LM_USAGE_UNKNOWN;
    if (!json_is_object(u))
        return 0;
    /* WS-style {"text":{...}} nesting, just in case */
    if (json_is_object(json_object_get(u, "text")))
        u = json_object_get(u, "text");
    r.prompt = sp_int(u, "prompt_tokens");
    r.completion = sp_int(u, "completion_tokens");
    r.total = sp_int(u, "total_tokens");
    if (r.total < 0 && r.prompt >= 0 && r.completion >= 0)
        r.total = r.prompt + r.completion;
    *out = r;
    return r.prompt >= 0 || r.completion >= 0 || r.total >= 0;
}

static json_t *sp_usage_json(const lm_usage *u)
{
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)(u->prompt < 0 ? 0 : u->prompt),
                     "completion_tokens", (json_int_t)(u->completion < 0 ? 0 : u->completion),
                     "total_tokens", (json_int_t)(u->total < 0 ? 0 : u->total));
}

/* ------------------------------------------------------------------ init */

static int sp_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    sp_inst *in;
    lm_str base = {NULL, 0}, key = {NULL, 0};
    int su = 1;
    size_t n;

    if (!LM_HOST_HAS(h, alloc) || !LM_HOST_HAS(h, free) || !LM_HOST_HAS(h, cfg_str) ||
        !LM_HOST_HAS(h, ureq_set_url) || !LM_HOST_HAS(h, ureq_add_header) ||
        !LM_HOST_HAS(h, ureq_set_json_body) || !LM_HOST_HAS(h, emit_delta) ||
        !LM_HOST_HAS(h, emit_usage))
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "spark: host table too old");
    if (h->cfg_str(ictx, "base_url", &base) != LM_OK || base.n == 0)
        base = LM_STR(SP_DEFAULT_BASE);
    if (h->cfg_str(ictx, "api_key", &key) != LM_OK || key.n == 0)
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "spark: api_key is required");
    if (LM_HOST_HAS(h, cfg_bool) && h->cfg_bool(ictx, "stream_usage", &su) != LM_OK)
        su = 1;
    if (!(base.n > 7 && strncmp(base.p, "http://", 7) == 0) &&
        !(base.n > 8 && strncmp(base.p, "https://", 8) == 0))
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "spark: base_url must start with http:// or https://");
    n = base.n;
    while (n > 0 && base.p[n - 1] == '/')
        n--;
    in = h->alloc(sizeof *in);
    if (in == NULL)
        return sp_oom(e);
    memset(in, 0, sizeof *in);
    in->h = h;
    in->ictx = ictx;
    in->stream_usage = su != 0;
    in->url_chat = h->alloc(n + sizeof "/chat/completions");
    if (in->url_chat != NULL) {
        memcpy(in->url_chat, base.p, n);
        memcpy(in->url_chat + n, "/chat/completions", sizeof "/chat/completions");
    }
    in->auth = h->alloc(key.n + 8);
    if (in->auth != NULL) {
        memcpy(in->auth, "Bearer ", 7);
        memcpy(in->auth + 7, key.p, key.n);
        in->auth[7 + key.n] = '\0';
        in->key = in->auth + 7;
    }
    if (in->url_chat == NULL || in->auth == NULL) {
        h->free(in->url_chat);
        h->free(in->auth);
        h->free(in);
        return sp_oom(e);
    }
    *istate = in;
    return LM_OK;
}

static void sp_fini(void *istate)
{
    sp_inst *in = istate;
    if (in == NULL)
        return;
    in->h->free(in->url_chat);
    in->h->free(in->auth);
    in->h->free(in);
}

static void sp_req_close(void *istate, lm_call *c)
{
    sp_inst *in = istate;
    if (c->rstate != NULL) {
        in->h->free(c->rstate);
        c->rstate = NULL;
    }
}

static int sp_list_models(void *istate, json_t **out, lm_err *e)
{
    (void)istate;
    *out = json_pack("[s,s,s,s,s,s]", "lite", "generalv3", "pro-128k", "generalv3.5", "max-32k",
                     "4.0Ultra");
    return *out ? LM_OK : sp_oom(e);
}

/* ------------------------------------------------------------------ request */

static const char *sp_domain(const char *model)
{
    size_t i;
    for (i = 0; sp_aliases[i][0]; i++)
        if (strcasecmp(model, sp_aliases[i][0]) == 0)
            return sp_aliases[i][1];
    return model;
}

/* OpenAI content -> a plain string (text parts joined with "\n"). */
static int sp_text(const json_t *ct, json_t **out, lm_err *e)
{
    size_t i, total = 0, np = 0;
    json_t *p;
    char *buf, *w;

    if (ct == NULL || json_is_null(ct)) {
        *out = json_string("");
    } else if (json_is_string(ct)) {
        *out = json_deep_copy(ct);
    } else if (json_is_array(ct)) {
        json_array_foreach (ct, i, p) {
            const char *t = sp_jstr(p, "type");
            const json_t *tx = json_object_get(p, "text");
            if (t == NULL || strcmp(t, "text") != 0 || !json_is_string(tx))
                return sp_inval(e, "Spark takes text content only (no images or other parts)");
            total += json_string_length(tx) + 1;
        }
        buf = malloc(total + 1);
        if (buf == NULL)
            return sp_oom(e);
        w = buf;
        json_array_foreach (ct, i, p) {
            const json_t *tx = json_object_get(p, "text");
            if (np++)
                *w++ = '\n';
            memcpy(w, json_string_value(tx), json_string_length(tx));
            w += json_string_length(tx);
        }
        *out = json_stringn(buf, (size_t)(w - buf));
        free(buf);
    } else {
        return sp_inval(e, "message content must be a string or an array");
    }
    return *out ? LM_OK : sp_oom(e);
}

static int sp_messages(const json_t *msgs, json_t **out, lm_err *e)
{
    json_t *arr = json_array(), *m;
    size_t i;
    int rc;

    if (arr == NULL)
        return sp_oom(e);
    json_array_foreach (msgs, i, m) {
        const char *role = sp_jstr(m, "role");
        const json_t *tc, *id;
        json_t *nm, *txt;
        if (!json_is_object(m) || role == NULL) {
            json_decref(arr);
            return sp_inval(e, "each message needs a string role");
        }
        if (strcmp(role, "developer") == 0)
            role = "system";
        if (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 &&
            strcmp(role, "assistant") != 0 && strcmp(role, "tool") != 0) {
            json_decref(arr);
            return sp_inval(e, "unsupported message role");
        }
        rc = sp_text(json_object_get(m, "content"), &txt, e);
        if (rc != LM_OK) {
            json_decref(arr);
            return rc;
        }
        nm = json_pack("{s:s,s:o}", "role", role, "content", txt);
        if (nm == NULL) {
            json_decref(arr);
            return sp_oom(e);
        }
        tc = json_object_get(m, "tool_calls");
        if (strcmp(role, "assistant") == 0 && json_is_array(tc) && json_array_size(tc) > 0)
            json_object_set_new(nm, "tool_calls", json_deep_copy(tc));
        id = json_object_get(m, "tool_call_id");
        if (strcmp(role, "tool") == 0 && json_is_string(id))
            json_object_set_new(nm, "tool_call_id", json_deep_copy(id));
        json_array_append_new(arr, nm);
    }
    *out = arr;
    return LM_OK;
}

static int sp_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    static const char *const pass[] = {
        "presence_penalty", "frequency_penalty", "tools", "tool_choice", "user", NULL};
    sp_inst *in = istate;
    const lm_host_api *h = in->h;
    sp_req *rs;
    const json_t *msgs, *v;
    const char *model, *k;
    json_t *body, *jm = NULL;
    size_t i;
    int rc;

    rs = h->alloc(sizeof *rs);
    if (rs == NULL)
        return sp_oom(e);
    memset(rs, 0, sizeof *rs);
    rs->stream = c->stream;
    c->rstate = rs;

    if (c->op != LM_OP_CHAT)
        return lm_err_set(e, LM_ENOTSUP, 400, "invalid_request_error", "unsupported_operation",
                          "Spark has no embeddings API");
    if (!json_is_object(canon))
        return sp_inval(e, "request body must be a JSON object");
    model = sp_nonempty(c->model) ? c->model : sp_jstr(canon, "model");
    if (!sp_nonempty(model))
        return sp_inval(e, "model is required");
    msgs = json_object_get(canon, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return sp_inval(e, "messages must be a non-empty array");
    v = json_object_get(canon, "n");
    if (v != NULL && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
        return sp_inval(e, "n > 1 is not supported by Spark");
    rc = sp_messages(msgs, &jm, e);
    if (rc != LM_OK)
        return rc;
    body = json_pack("{s:s,s:o}", "model", sp_domain(model), "messages", jm);
    if (body == NULL)
        return sp_oom(e);

    json_object_foreach ((json_t *)canon, k, v) {
        if (json_is_null(v) || strcmp(k, "model") == 0 || strcmp(k, "messages") == 0 ||
            strcmp(k, "stream") == 0 || strcmp(k, "stream_options") == 0 || strcmp(k, "n") == 0)
            continue;
        if (strcmp(k, "temperature") == 0) {
            double t;
            if (!json_is_number(v)) {
                json_decref(body);
                return sp_inval(e, "temperature must be a number");
            }
            t = json_number_value(v);
            if (t > 1)
                t = 1; /* Spark: (0, 1] */
            if (t <= 0)
                t = 0.01;
            json_object_set_new(body, "temperature", json_real(t));
        } else if (strcmp(k, "max_tokens") == 0 || strcmp(k, "max_completion_tokens") == 0) {
            json_int_t mt;
            const json_t *mct = json_object_get(canon, "max_completion_tokens");
            if (strcmp(k, "max_tokens") == 0 && mct != NULL && !json_is_null(mct))
                continue; /* max_completion_tokens wins */
            if (!json_is_integer(v)) {
                json_decref(body);
                return sp_inval(e, "max_tokens must be an integer");
            }
            mt = json_integer_value(v);
            if (mt < 1)
                mt = 1;
            if (mt > 8192)
                mt = 8192; /* Spark: [1, 8192] */
            json_object_set_new(body, "max_tokens", json_integer(mt));
        } else if (strcmp(k, "top_k") == 0) {
            json_int_t tk;
            if (!json_is_integer(v)) {
                json_decref(body);
                return sp_inval(e, "top_k must be an integer");
            }
            tk = json_integer_value(v);
            tk = tk < 1 ? 1 : tk > 6 ? 6 : tk;
            json_object_set_new(body, "top_k", json_integer(tk));
        } else {
            int ok = 0;
            for (i = 0; pass[i]; i++)
                if (strcmp(k, pass[i]) == 0)
                    ok = 1;
            if (ok)
                json_object_set_new(body, k, json_deep_copy(v));
            else
                sp_debug(in, "spark: dropping unsupported parameter", k);
        }
    }
    if (c->stream) {
        json_object_set_new(body, "stream", json_true());
        if (in->stream_usage)
            json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }

    rc = h->ureq_set_url(u, lm_cstr(in->url_chat));
    if (rc == LM_OK)
        rc = h->ureq_add_header(u, LM_STR("Authorization"), lm_cstr(in->auth));
    if (rc == LM_OK && c->stream)
        rc = h->ureq_add_header(u, LM_STR("Accept"), LM_STR("text/event-stream"));
    if (rc != LM_OK) {
        json_decref(body);
        return lm_err_set(e, rc < 0 ? rc : LM_ERR, 500, "api_error", NULL,
                          "spark: building the upstream request failed");
    }
    rc = h->ureq_set_json_body(u, body);
    if (rc != LM_OK)
        return lm_err_set(e, rc < 0 ? rc : LM_ERR, 500, "api_error", NULL,
                          "spark: setting the upstream body failed");
    return LM_OK;
}

/* ------------------------------------------------------------------ responses */

static const char *sp_finish(const char *fr, int has_tools)
{
    if (fr == NULL || fr[0] == '\0' || strcmp(fr, "null") == 0)
        return NULL;
    if (strcmp(fr, "length") == 0)
        return "length";
    if (strcmp(fr, "content_filter") == 0)
        return "content_filter";
    if (strcmp(fr, "tool_calls") == 0 || strcmp(fr, "function_call") == 0)
        return "tool_calls";
    return has_tools ? "tool_calls" : "stop";
}

static json_t *sp_synth_id(const lm_call *c, const char *sid, size_t n)
{
    char buf[160];
    snprintf(buf, sizeof buf, "call_%s_%zu",
             sp_nonempty(sid)             ? sid
             : sp_nonempty(c->request_id) ? c->request_id
                                          : "lm",
             n);
    return json_string(buf);
}

static json_t *sp_args(const json_t *fn)
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

/* tool_calls as an array, or Spark's bare object, as a borrowed-or-new array:
 * *tmp holds a new reference the caller must drop. */
static const json_t *sp_tc_list(const json_t *tc, json_t **tmp)
{
    *tmp = NULL;
    if (json_is_array(tc))
        return json_array_size(tc) ? tc : NULL;
    if (json_is_object(tc) && json_object_size(tc) > 0) {
        *tmp = json_pack("[O]", tc);
        return *tmp;
    }
    return NULL;
}

static json_t *sp_tool_calls(const lm_call *c, const char *sid, const json_t *arr)
{
    json_t *out = json_array(), *tc;
    size_t i;
    if (out == NULL)
        return NULL;
    json_array_foreach (arr, i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const char *id = sp_jstr(tc, "id");
        const char *name = sp_jstr(fn, "name");
        json_t *o =
            json_pack("{s:o,s:s,s:{s:s,s:o}}", "id",
                      sp_nonempty(id) ? json_string(id) : sp_synth_id(c, sid, i), "type",
                      "function", "function", "name", name ? name : "", "arguments", sp_args(fn));
        if (o == NULL) {
            json_decref(out);
            return NULL;
        }
        json_array_append_new(out, o);
    }
    return out;
}

static int sp_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                             lm_usage *usage, lm_err *e)
{
    sp_inst *in = istate;
    json_t *j, *jch, *resp;
    const json_t *choices, *ch, *cr;
    const char *id, *sid;
    char idbuf[160];
    lm_usage us = LM_USAGE_UNKNOWN;
    size_t i;

    (void)status;
    *out = NULL;
    j = json_loadb(body.p, body.n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return sp_bad_upstream(e, "malformed JSON");
    }
    if (sp_fill_error(in, j, 0, e)) {
        json_decref(j);
        return LM_EUPSTREAM;
    }
    choices = json_object_get(j, "choices");
    if (!json_is_array(choices)) {
        json_decref(j);
        return sp_bad_upstream(e, "a response without choices");
    }
    sid = sp_jstr(j, "sid");
    jch = json_array();
    if (jch == NULL) {
        json_decref(j);
        return sp_oom(e);
    }
    json_array_foreach (choices, i, ch) {
        const json_t *m = json_object_get(ch, "message");
        const json_t *ct = json_object_get(m, "content");
        const json_t *idx = json_object_get(ch, "index");
        json_t *tmp;
        const json_t *tcl = sp_tc_list(json_object_get(m, "tool_calls"), &tmp);
        const char *fr = sp_finish(sp_jstr(ch, "finish_reason"), tcl != NULL);
        json_t *msg, *choice, *content;

        content = json_is_string(ct) ? json_deep_copy(ct) : json_null();
        if (tcl != NULL && json_is_string(content) && json_string_length(content) == 0) {
            json_decref(content);
            content = json_null();
        }
        msg = json_pack("{s:s,s:o}", "role", "assistant", "content", content);
        if (msg != NULL && tcl != NULL)
            json_object_set_new(msg, "tool_calls", sp_tool_calls(c, sid, tcl));
        json_decref(tmp);
        choice = json_pack(
            "{s:I,s:o,s:n,s:s}", "index",
            (json_int_t)(json_is_integer(idx) ? json_integer_value(idx) : (json_int_t)i), "message",
            msg, "logprobs", "finish_reason", fr ? fr : (tcl != NULL ? "tool_calls" : "stop"));
        if (choice == NULL) {
            json_decref(jch);
            json_decref(j);
            return sp_oom(e);
        }
        json_array_append_new(jch, choice);
    }
    id = sp_jstr(j, "id");
    if (!sp_nonempty(id)) {
        snprintf(idbuf, sizeof idbuf, "chatcmpl-%s",
                 sp_nonempty(sid)             ? sid
                 : sp_nonempty(c->request_id) ? c->request_id
                                              : "lm");
        id = idbuf;
    }
    cr = json_object_get(j, "created");
    resp = json_pack("{s:s,s:s,s:I,s:s,s:o}", "id", id, "object", "chat.completion", "created",
                     (json_int_t)(json_is_integer(cr)             ? json_integer_value(cr)
                                  : LM_HOST_HAS(in->h, unix_time) ? in->h->unix_time()
                                                                  : 0),
                     "model", c->model ? c->model : "", "choices", jch);
    if (resp == NULL) {
        json_decref(j);
        return sp_oom(e);
    }
    if (sp_usage(json_object_get(j, "usage"), &us)) {
        json_object_set_new(resp, "usage", sp_usage_json(&us));
        if (usage != NULL)
            *usage = us;
    }
    json_decref(j);
    *out = resp;
    return LM_OK;
}

static int sp_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e)
{
    sp_inst *in = istate;
    json_t *j = json_loadb(body.p, body.n, 0, NULL);
    int ok;
    (void)c;
    ok = json_is_object(j) && sp_fill_error(in, j, status, e);
    json_decref(j);
    return ok ? LM_OK : LM_DECLINED;
}

/* ------------------------------------------------------------------ stream */

static int sp_emit(sp_inst *in, lm_emit *out, int index, json_t *delta, const char *fr, lm_err *e)
{
    int rc = in->h->emit_delta(out, index, delta, fr);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "spark: emitting a chunk failed");
    return LM_OK;
}

static json_t *sp_stream_tools(const lm_call *c, sp_req *rs, const char *sid, const json_t *arr)
{
    json_t *out = json_array(), *tc;
    size_t i;
    if (out == NULL)
        return NULL;
    json_array_foreach (arr, i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const json_t *ji = json_object_get(tc, "index");
        const char *id = sp_jstr(tc, "id");
        const char *name = sp_jstr(fn, "name");
        const json_t *args = json_object_get(fn, "arguments");
        json_int_t idx = json_is_integer(ji) ? json_integer_value(ji) : (json_int_t)i;
        int first;
        json_t *o, *f;

        if (idx < 0)
            idx = 0;
        first = idx < 64 ? !(rs->tc_seen & ((uint64_t)1 << idx)) : sp_nonempty(id);
        o = json_pack("{s:I}", "index", idx);
        f = json_object();
        if (o == NULL || f == NULL) {
            json_decref(o);
            json_decref(f);
            json_decref(out);
            return NULL;
        }
        if (first) {
            json_object_set_new(
                o, "id", sp_nonempty(id) ? json_string(id) : sp_synth_id(c, sid, (size_t)idx));
            json_object_set_new(o, "type", json_string("function"));
            json_object_set_new(f, "name", json_string(name ? name : ""));
            json_object_set_new(f, "arguments", sp_args(fn));
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

/* End the choice if the upstream never said why it stopped. */
static int sp_close(sp_inst *in, sp_req *rs, lm_emit *out, const char *fr, lm_err *e)
{
    int rc = LM_OK;
    if (!rs->finished) {
        if (!rs->role_sent) {
            rs->role_sent = 1;
            rc = sp_emit(in, out, 0, json_pack("{s:s,s:s}", "role", "assistant", "content", ""),
                         NULL, e);
        }
        if (rc == LM_OK)
            rc = sp_emit(in, out, 0, NULL, fr ? fr : rs->saw_tools ? "tool_calls" : "stop", e);
        rs->finished = 1;
    }
    return rc == LM_OK ? LM_DONE : rc;
}

static int sp_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    sp_inst *in = istate;
    sp_req *rs = c->rstate;
    json_t *j;
    const json_t *choices, *ch, *jc;
    const char *sid;
    lm_usage us;
    size_t i;
    int rc = LM_OK;

    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "spark: no request state");
    if (ev->data.n == 6 && memcmp(ev->data.p, "[DONE]", 6) == 0)
        return sp_close(in, rs, out, NULL, e);
    if (ev->data.n == 0)
        return LM_OK;
    j = json_loadb(ev->data.p, ev->data.n, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return sp_bad_upstream(e, "a malformed stream event");
    }
    jc = json_object_get(j, "code");
    /* Output moderation after text was streamed: finish with content_filter. */
    if (json_is_integer(jc) && sp_is_filter_code(json_integer_value(jc)) && rs->emitted &&
        !rs->finished) {
        json_decref(j);
        return sp_close(in, rs, out, "content_filter", e);
    }
    if (sp_fill_error(in, j, 0, e)) {
        json_decref(j);
        return LM_EUPSTREAM;
    }
    sid = sp_jstr(j, "sid");
    choices = json_object_get(j, "choices");
    json_array_foreach (choices, i, ch) {
        const json_t *d = json_object_get(ch, "delta");
        const json_t *ct = json_object_get(d, "content");
        const json_t *ji = json_object_get(ch, "index");
        const char *rsn = sp_jstr(d, "reasoning_content");
        int idx = json_is_integer(ji) ? (int)json_integer_value(ji) : (int)i;
        json_t *tmp, *delta = json_object();
        const json_t *tcl = sp_tc_list(json_object_get(d, "tool_calls"), &tmp);
        const char *fr;

        if (delta == NULL) {
            json_decref(tmp);
            rc = sp_oom(e);
            break;
        }
        if (json_is_string(ct) && json_string_length(ct) > 0)
            json_object_set_new(delta, "content", json_deep_copy(ct));
        if (sp_nonempty(rsn))
            json_object_set_new(delta, "reasoning_content", json_string(rsn));
        if (tcl != NULL) {
            json_t *tools = sp_stream_tools(c, rs, sid, tcl);
            rs->saw_tools = 1;
            if (tools != NULL && json_array_size(tools) > 0)
                json_object_set_new(delta, "tool_calls", tools);
            else
                json_decref(tools);
        }
        json_decref(tmp);
        fr = sp_finish(sp_jstr(ch, "finish_reason"), rs->saw_tools);
        if (json_object_size(delta) > 0) {
            if (!rs->role_sent) {
                json_object_set_new(delta, "role", json_string("assistant"));
                rs->role_sent = 1;
            }
            rs->emitted = 1;
            rc = sp_emit(in, out, idx, delta, NULL, e);
        } else {
            json_decref(delta);
        }
        if (rc == LM_OK && fr != NULL && !rs->finished) {
            if (!rs->role_sent) {
                rs->role_sent = 1;
                rc = sp_emit(in, out, idx,
                             json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, e);
            }
            if (rc == LM_OK)
                rc = sp_emit(in, out, idx, NULL, fr, e);
            rs->emitted = 1;
            rs->finished = 1;
        }
        if (rc != LM_OK)
            break;
    }
    if (rc == LM_OK && sp_usage(json_object_get(j, "usage"), &us)) {
        if (in->h->emit_usage(out, &us) < 0)
            rc = lm_err_set(e, LM_ERR, 500, "api_error", NULL, "spark: emitting usage failed");
    }
    json_decref(j);
    return rc;
}

/* ------------------------------------------------------------------ table */

static const lm_provider sp_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "spark",
    .version = "1.0.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_TOOLS,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = sp_cfg_keys,
    .init = sp_init,
    .fini = sp_fini,
    .list_models = sp_list_models,
    .build_request = sp_build_request,
    .parse_response = sp_parse_response,
    .parse_event = sp_parse_event,
    .map_error = sp_map_error,
    .req_close = sp_req_close,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &sp_provider;
}
