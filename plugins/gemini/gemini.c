/*
 * gemini.c - Google Gemini (Generative Language API) provider plugin.
 *
 * Chat: POST {base}/models/{m}:generateContent, or
 *       POST {base}/models/{m}:streamGenerateContent?alt=sse for streams.
 * Embeddings: {base}/models/{m}:embedContent (one string) or
 *             :batchEmbedContents (an array).
 * The key goes in the x-goog-api-key header, never in the URL.
 * Pure translator: no I/O, no mutable globals. See sdk/notes/gemini.md.
 */
#include "longmen.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GM_MAX_CAND 8

typedef struct gm_inst {
    const lm_host_api *h;
    void *ictx;
    lm_str base_url; /* no trailing '/' */
    lm_str api_key;
} gm_inst;

typedef struct gm_cand {
    int started, finished, ntools;
} gm_cand;

typedef struct gm_req {
    int b64;    /* embeddings: encoding_format base64 */
    int ncalls; /* tool-call ids synthesized so far */
    char idbase[40];
    gm_cand cand[GM_MAX_CAND];
} gm_req;

/* ---- small helpers ------------------------------------------------------ */

static int oom(lm_err *e)
{
    return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
}

static int bad_req(lm_err *e, const char *msg, const char *detail)
{
    return lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", NULL, "%s%s", msg,
                      detail ? detail : "");
}

static int bad_upstream(lm_err *e, const char *what)
{
    return lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                      "malformed upstream response: %s", what);
}

static int streq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static void log_drop(const gm_inst *is, const char *key)
{
    if (LM_HOST_HAS(is->h, log))
        is->h->log(is->ictx, LM_LOG_DEBUG, "gemini: dropping unsupported parameter '%s'", key);
}

static int oset(json_t *o, const char *k, json_t *v)
{
    if (v == NULL)
        return -1;
    return json_object_set_new(o, k, v);
}

static int aadd(json_t *a, json_t *v)
{
    if (v == NULL)
        return -1;
    return json_array_append_new(a, v);
}

static json_t *dump_string(const json_t *v)
{
    size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    char *buf;
    json_t *s;
    if (n == 0)
        return NULL;
    buf = malloc(n);
    if (buf == NULL)
        return NULL;
    if (json_dumpb(v, buf, n, JSON_COMPACT | JSON_ENCODE_ANY) != n) {
        free(buf);
        return NULL;
    }
    s = json_stringn(buf, n);
    free(buf);
    return s;
}

static int64_t jint(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static int header_safe(lm_str s)
{
    size_t i;
    for (i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        if (ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 1;
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        char *np;
        while (cap < b->n + n + 1)
            cap *= 2;
        np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* ---- config / lifecycle ------------------------------------------------- */

static const lm_cfg_key gm_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, "https://generativelanguage.googleapis.com/v1beta",
     "Generative Language API base URL, including the version"},
    {"api_key", LM_CFG_STR, 1, NULL, "Google AI API key (sent as x-goog-api-key)"},
    {NULL, 0, 0, NULL, NULL}};

static int gm_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    gm_inst *is;
    lm_str s;

    if (h == NULL || !LM_HOST_HAS(h, cfg_str) || !LM_HOST_HAS(h, alloc))
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "host table too old");
    is = h->alloc(sizeof(*is));
    if (is == NULL)
        return oom(e);
    memset(is, 0, sizeof(*is));
    is->h = h;
    is->ictx = ictx;
    if (h->cfg_str(ictx, "base_url", &s) != LM_OK || s.n == 0)
        s = LM_STR("https://generativelanguage.googleapis.com/v1beta");
    while (s.n > 0 && s.p[s.n - 1] == '/')
        s.n--;
    if (!((s.n > 7 && strncmp(s.p, "http://", 7) == 0) ||
          (s.n > 8 && strncmp(s.p, "https://", 8) == 0)) ||
        !header_safe(s) || memchr(s.p, '?', s.n) != NULL) {
        h->free(is);
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "base_url must be an absolute http(s) URL without a query");
    }
    is->base_url = s;
    if (h->cfg_str(ictx, "api_key", &s) != LM_OK || s.n == 0) {
        h->free(is);
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "api_key is required");
    }
    if (!header_safe(s)) {
        h->free(is);
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "api_key contains control characters");
    }
    is->api_key = s;
    *istate = is;
    return LM_OK;
}

static void gm_fini(void *ist)
{
    gm_inst *is = ist;
    if (is != NULL)
        is->h->free(is);
}

static int gm_list_models(void *ist, json_t **out, lm_err *e)
{
    (void)ist;
    *out = json_pack("[sssssss]", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite",
                     "gemini-2.0-flash", "gemini-2.0-flash-lite", "gemini-embedding-001",
                     "text-embedding-004");
    return *out ? LM_OK : oom(e);
}

static void gm_req_close(void *ist, lm_call *c)
{
    gm_inst *is = ist;
    if (c->rstate != NULL)
        is->h->free(c->rstate);
    c->rstate = NULL;
}

/* ---- shared request pieces ---------------------------------------------- */

/* Upstream model id (without "models/") or NULL when unsafe in a path. */
static const char *model_id(const lm_call *c, const json_t *canon)
{
    const char *m = c->model;
    size_t i;
    if (m == NULL || m[0] == '\0')
        m = json_string_value(json_object_get(canon, "model"));
    if (m == NULL)
        return NULL;
    if (strncmp(m, "models/", 7) == 0)
        m += 7;
    if (m[0] == '\0')
        return NULL;
    for (i = 0; m[i]; i++) {
        char ch = m[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return NULL;
    }
    return m;
}

/* Sets URL ({base}/models/{m}{suffix}), auth header, JSON body (stolen). */
static int send_request(gm_inst *is, lm_ureq *u, const char *model, const char *suffix,
                        json_t *body, lm_err *e)
{
    const lm_host_api *h = is->h;
    size_t ml = strlen(model), sl = strlen(suffix);
    size_t n = is->base_url.n + 8 + ml + sl;
    char *url = malloc(n + 1);
    int rc;
    if (url == NULL) {
        json_decref(body);
        return oom(e);
    }
    memcpy(url, is->base_url.p, is->base_url.n);
    memcpy(url + is->base_url.n, "/models/", 8);
    memcpy(url + is->base_url.n + 8, model, ml);
    memcpy(url + is->base_url.n + 8 + ml, suffix, sl + 1);
    rc = h->ureq_set_method(u, "POST");
    if (rc >= 0)
        rc = h->ureq_set_url(u, (lm_str){url, n});
    free(url);
    if (rc >= 0)
        rc = h->ureq_add_header(u, LM_STR("x-goog-api-key"), is->api_key);
    if (rc < 0) {
        json_decref(body);
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot build upstream request");
    }
    rc = h->ureq_set_json_body(u, body);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot set upstream body");
    return LM_OK;
}

/* Remove JSON-schema keywords outside Gemini's OpenAPI subset, in place. */
static void strip_schema(json_t *s)
{
    const char *k;
    json_t *v;
    size_t i;
    void *tmp;
    if (json_is_object(s)) {
        json_object_del(s, "additionalProperties");
        json_object_del(s, "$schema");
        json_object_del(s, "strict");
        json_object_foreach_safe (s, tmp, k, v) {
            (void)k;
            strip_schema(v);
        }
    } else if (json_is_array(s)) {
        json_array_foreach (s, i, v)
            strip_schema(v);
    }
}

/* ---- chat request ------------------------------------------------------- */

static int push_parts(json_t *contents, const char *role, json_t *parts, lm_err *e)
{
    size_t n = json_array_size(contents);
    json_t *last = n ? json_array_get(contents, n - 1) : NULL;
    if (json_array_size(parts) == 0) {
        json_decref(parts);
        return LM_OK;
    }
    if (last && streq(json_string_value(json_object_get(last, "role")), role)) {
        int rc = json_array_extend(json_object_get(last, "parts"), parts);
        json_decref(parts);
        return rc ? oom(e) : LM_OK;
    }
    return aadd(contents, json_pack("{s:s,s:o}", "role", role, "parts", parts)) ? oom(e) : LM_OK;
}

static int image_part(const json_t *part, json_t *parts, lm_err *e)
{
    json_t *iu = json_object_get(part, "image_url");
    const char *url = json_string_value(json_is_object(iu) ? json_object_get(iu, "url") : iu);
    const char *semi;
    if (url == NULL)
        return bad_req(e, "image_url part needs image_url.url", NULL);
    if (strncmp(url, "data:", 5) != 0)
        return bad_req(e,
                       "Gemini takes inline images only: send the image as a "
                       "data:<type>;base64,<data> URL",
                       NULL);
    semi = strchr(url + 5, ';');
    if (semi == NULL || semi == url + 5 || strncmp(semi, ";base64,", 8) != 0)
        return bad_req(e, "image data URL must be data:<media type>;base64,<data>", NULL);
    return aadd(parts, json_pack("{s:{s:s%,s:s}}", "inlineData", "mimeType", url + 5,
                                 (size_t)(semi - (url + 5)), "data", semi + 8))
               ? oom(e)
               : LM_OK;
}

/* string or parts -> Gemini parts (text, inlineData). */
static int content_parts(const json_t *content, json_t *parts, int allow_images, lm_err *e)
{
    size_t i;
    json_t *p;
    if (content == NULL || json_is_null(content))
        return LM_OK;
    if (json_is_string(content)) {
        if (json_string_length(content) == 0)
            return LM_OK;
        return aadd(parts, json_pack("{s:O}", "text", content)) ? oom(e) : LM_OK;
    }
    if (!json_is_array(content))
        return bad_req(e, "message content must be a string, an array or null", NULL);
    json_array_foreach (content, i, p) {
        const char *type = json_string_value(json_object_get(p, "type"));
        if (streq(type, "text") || streq(type, "refusal")) {
            json_t *t = json_object_get(p, streq(type, "text") ? "text" : "refusal");
            if (!json_is_string(t))
                return bad_req(e, "text part needs a string 'text'", NULL);
            if (json_string_length(t) > 0 && aadd(parts, json_pack("{s:O}", "text", t)))
                return oom(e);
        } else if (streq(type, "image_url") && allow_images) {
            int rc = image_part(p, parts, e);
            if (rc != LM_OK)
                return rc;
        } else {
            return bad_req(e, "unsupported content part type for Gemini: ", type ? type : "(none)");
        }
    }
    return LM_OK;
}

/* Text of a tool message's content (string or text parts). */
static int tool_text(const json_t *content, sbuf *b, lm_err *e)
{
    size_t i;
    json_t *p;
    if (json_is_string(content)) {
        sb_add(b, json_string_value(content), json_string_length(content));
        return LM_OK;
    }
    if (content == NULL || json_is_null(content))
        return LM_OK;
    if (!json_is_array(content))
        return bad_req(e, "tool message content must be a string or text parts", NULL);
    json_array_foreach (content, i, p) {
        json_t *t = json_object_get(p, "text");
        if (!json_is_string(t))
            return bad_req(e, "tool message content must be a string or text parts", NULL);
        sb_add(b, json_string_value(t), json_string_length(t));
    }
    return LM_OK;
}

static int function_calls(const json_t *calls, json_t *parts, json_t *names, lm_err *e)
{
    size_t i;
    json_t *tc;
    if (calls == NULL || json_is_null(calls))
        return LM_OK;
    if (!json_is_array(calls))
        return bad_req(e, "assistant tool_calls must be an array", NULL);
    json_array_foreach (calls, i, tc) {
        json_t *fn = json_object_get(tc, "function");
        const char *id = json_string_value(json_object_get(tc, "id"));
        json_t *name = json_object_get(fn, "name");
        json_t *a = json_object_get(fn, "arguments");
        json_t *args;
        json_error_t jerr;
        if (!json_is_string(name))
            return bad_req(e, "tool_calls entries need function.name", NULL);
        if (a == NULL || json_is_null(a) || (json_is_string(a) && json_string_length(a) == 0))
            args = json_object();
        else if (json_is_object(a))
            args = json_deep_copy(a);
        else if (json_is_string(a)) {
            args = json_loadb(json_string_value(a), json_string_length(a), 0, &jerr);
            if (!json_is_object(args)) {
                json_decref(args);
                return bad_req(e, "tool_calls function.arguments must be a JSON object: ",
                               json_string_value(name));
            }
        } else
            return bad_req(e, "tool_calls function.arguments must be a string", NULL);
        if (aadd(parts, json_pack("{s:{s:O,s:o}}", "functionCall", "name", name, "args", args)))
            return oom(e);
        if (id != NULL && json_object_set(names, id, name))
            return oom(e);
    }
    return LM_OK;
}

static int convert_messages(gm_inst *is, const json_t *in, json_t *body, lm_err *e)
{
    json_t *contents = json_array(), *sys = json_array(), *names = json_object();
    json_t *m, *parts;
    size_t i;
    int rc = LM_OK;

    if (contents == NULL || sys == NULL || names == NULL) {
        rc = oom(e);
        goto out;
    }
    if (!json_is_array(in) || json_array_size(in) == 0) {
        rc = bad_req(e, "messages must be a non-empty array", NULL);
        goto out;
    }
    json_array_foreach (in, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        if (role == NULL) {
            rc = bad_req(e, "each message needs a string role", NULL);
            break;
        }
        if (json_object_get(m, "name") != NULL)
            log_drop(is, "messages[].name");
        if (streq(role, "system") || streq(role, "developer")) {
            rc = content_parts(content, sys, 0, e);
            if (rc != LM_OK)
                break;
            continue;
        }
        parts = json_array();
        if (parts == NULL) {
            rc = oom(e);
            break;
        }
        if (streq(role, "user")) {
            rc = content_parts(content, parts, 1, e);
            if (rc == LM_OK)
                rc = push_parts(contents, "user", parts, e), parts = NULL;
        } else if (streq(role, "assistant")) {
            rc = content_parts(content, parts, 0, e);
            if (rc == LM_OK)
                rc = function_calls(json_object_get(m, "tool_calls"), parts, names, e);
            if (rc == LM_OK)
                rc = push_parts(contents, "model", parts, e), parts = NULL;
        } else if (streq(role, "tool")) {
            const char *id = json_string_value(json_object_get(m, "tool_call_id"));
            json_t *name = id ? json_object_get(names, id) : NULL;
            json_t *resp = NULL;
            sbuf t = {NULL, 0, 0, 0};
            json_error_t jerr;
            if (name == NULL)
                name = json_object_get(m, "name");
            if (!json_is_string(name)) {
                rc = bad_req(e,
                             "tool message: tool_call_id matches no earlier assistant "
                             "tool call",
                             NULL);
            } else {
                rc = tool_text(content, &t, e);
                if (rc == LM_OK && t.oom)
                    rc = oom(e);
            }
            if (rc == LM_OK) {
                resp = t.n ? json_loadb(t.p, t.n, 0, &jerr) : NULL;
                if (!json_is_object(resp)) {
                    json_decref(resp);
                    resp = json_pack("{s:s%}", "content", t.p ? t.p : "", t.n);
                }
                if (aadd(parts, json_pack("{s:{s:O,s:o}}", "functionResponse", "name", name,
                                          "response", resp)))
                    rc = oom(e);
            }
            free(t.p);
            if (rc == LM_OK)
                rc = push_parts(contents, "user", parts, e), parts = NULL;
        } else {
            rc = bad_req(e, "unsupported message role for Gemini: ", role);
        }
        json_decref(parts);
        if (rc != LM_OK)
            break;
    }
    if (rc == LM_OK && json_array_size(contents) == 0)
        rc = bad_req(e, "messages must contain at least one user or assistant message", NULL);
    if (rc == LM_OK && json_array_size(sys) > 0 &&
        oset(body, "systemInstruction", json_pack("{s:O}", "parts", sys)))
        rc = oom(e);
    if (rc == LM_OK && json_object_set(body, "contents", contents))
        rc = oom(e);
out:
    json_decref(contents);
    json_decref(sys);
    json_decref(names);
    return rc;
}

static int convert_tools(gm_inst *is, const json_t *tools, json_t *body, lm_err *e)
{
    json_t *decls, *t;
    size_t i;
    if (tools == NULL || json_is_null(tools))
        return LM_OK;
    if (!json_is_array(tools))
        return bad_req(e, "tools must be an array", NULL);
    decls = json_array();
    if (decls == NULL)
        return oom(e);
    json_array_foreach (tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        json_t *name = json_object_get(fn, "name");
        json_t *desc = json_object_get(fn, "description");
        json_t *params = json_object_get(fn, "parameters");
        json_t *d;
        if (!streq(json_string_value(json_object_get(t, "type")), "function")) {
            log_drop(is, "tools[] of a non-function type");
            continue;
        }
        if (!json_is_string(name)) {
            json_decref(decls);
            return bad_req(e, "tools[].function.name is required", NULL);
        }
        d = json_pack("{s:O}", "name", name);
        if (d == NULL || (json_is_string(desc) && json_object_set(d, "description", desc))) {
            json_decref(d);
            json_decref(decls);
            return oom(e);
        }
        /* Gemini rejects an OBJECT schema with no properties: omit it. */
        if (json_is_object(params) &&
            !(streq(json_string_value(json_object_get(params, "type")), "object") &&
              json_object_size(json_object_get(params, "properties")) == 0)) {
            json_t *p = json_deep_copy(params);
            strip_schema(p);
            if (oset(d, "parameters", p)) {
                json_decref(d);
                json_decref(decls);
                return oom(e);
            }
        }
        if (aadd(decls, d)) {
            json_decref(decls);
            return oom(e);
        }
    }
    if (json_array_size(decls) == 0) {
        json_decref(decls);
        return LM_OK;
    }
    return oset(body, "tools", json_pack("[{s:o}]", "functionDeclarations", decls)) ? oom(e)
                                                                                    : LM_OK;
}

static int convert_tool_choice(const json_t *tc, json_t *body, lm_err *e)
{
    const char *s = json_string_value(tc);
    json_t *cfg;
    if (tc == NULL || json_is_null(tc))
        return LM_OK;
    if (streq(s, "auto"))
        cfg = json_pack("{s:s}", "mode", "AUTO");
    else if (streq(s, "none"))
        cfg = json_pack("{s:s}", "mode", "NONE");
    else if (streq(s, "required"))
        cfg = json_pack("{s:s}", "mode", "ANY");
    else if (json_is_object(tc)) {
        json_t *name = json_object_get(json_object_get(tc, "function"), "name");
        if (!json_is_string(name))
            return bad_req(e, "tool_choice object needs function.name", NULL);
        cfg = json_pack("{s:s,s:[O]}", "mode", "ANY", "allowedFunctionNames", name);
    } else
        return bad_req(e, "tool_choice must be auto, none, required or a function object", NULL);
    return oset(body, "toolConfig", json_pack("{s:o}", "functionCallingConfig", cfg)) ? oom(e)
                                                                                      : LM_OK;
}

static int response_format(gm_inst *is, const json_t *rf, json_t *gc, lm_err *e)
{
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (streq(type, "text") || rf == NULL)
        return LM_OK;
    if (streq(type, "json_object"))
        return oset(gc, "responseMimeType", json_string("application/json")) ? oom(e) : LM_OK;
    if (streq(type, "json_schema")) {
        json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
        if (oset(gc, "responseMimeType", json_string("application/json")))
            return oom(e);
        if (json_is_object(schema)) {
            json_t *s = json_deep_copy(schema);
            strip_schema(s);
            if (oset(gc, "responseSchema", s))
                return oom(e);
        }
        return LM_OK;
    }
    log_drop(is, "response_format");
    return LM_OK;
}

static int gm_build_chat(gm_inst *is, gm_req *rs, lm_call *c, const json_t *canon, lm_ureq *u,
                         lm_err *e)
{
    const char *model = model_id(c, canon);
    json_t *body, *gc, *v;
    const char *key;
    int rc;

    (void)rs;
    if (model == NULL)
        return bad_req(e, "model is missing or not a valid Gemini model id", NULL);
    body = json_object();
    gc = json_object();
    if (body == NULL || gc == NULL) {
        json_decref(body);
        json_decref(gc);
        return oom(e);
    }
    rc = convert_messages(is, json_object_get(canon, "messages"), body, e);
    if (rc != LM_OK)
        goto fail;

    json_object_foreach ((json_t *)canon, key, v) {
        const char *gkey = NULL;
        if (streq(key, "model") || streq(key, "messages") || streq(key, "stream") ||
            streq(key, "stream_options") || json_is_null(v))
            continue;
        if (streq(key, "temperature"))
            gkey = "temperature";
        else if (streq(key, "top_p"))
            gkey = "topP";
        else if (streq(key, "top_k"))
            gkey = "topK";
        else if (streq(key, "presence_penalty"))
            gkey = "presencePenalty";
        else if (streq(key, "frequency_penalty"))
            gkey = "frequencyPenalty";
        if (gkey != NULL) {
            if (!json_is_number(v)) {
                rc = bad_req(e, "parameter must be a number: ", key);
                goto fail;
            }
            if (json_object_set(gc, gkey, v))
                goto nomem;
        } else if (streq(key, "max_tokens") || streq(key, "max_completion_tokens") ||
                   streq(key, "seed") || streq(key, "n")) {
            if (!json_is_integer(v) || (!streq(key, "seed") && json_integer_value(v) <= 0)) {
                rc = bad_req(e, "parameter must be a positive integer: ", key);
                goto fail;
            }
            if (streq(key, "n") && json_integer_value(v) > GM_MAX_CAND) {
                rc = bad_req(e, "n is too large for this gateway (max 8)", NULL);
                goto fail;
            }
            if (streq(key, "max_tokens") &&
                json_object_get(canon, "max_completion_tokens") != NULL &&
                !json_is_null(json_object_get(canon, "max_completion_tokens")))
                continue;
            if (json_object_set(gc,
                                streq(key, "seed") ? "seed"
                                : streq(key, "n")  ? "candidateCount"
                                                   : "maxOutputTokens",
                                v))
                goto nomem;
        } else if (streq(key, "stop")) {
            size_t i;
            json_t *s;
            if (json_is_string(v)) {
                if (oset(gc, "stopSequences", json_pack("[O]", v)))
                    goto nomem;
            } else if (json_is_array(v)) {
                json_array_foreach (v, i, s) {
                    if (!json_is_string(s)) {
                        rc = bad_req(e, "stop must be a string or an array of strings", NULL);
                        goto fail;
                    }
                }
                if (json_array_size(v) > 0 && json_object_set(gc, "stopSequences", v))
                    goto nomem;
            } else {
                rc = bad_req(e, "stop must be a string or an array of strings", NULL);
                goto fail;
            }
        } else if (streq(key, "response_format")) {
            rc = response_format(is, v, gc, e);
            if (rc != LM_OK)
                goto fail;
        } else if (streq(key, "tools")) {
            rc = convert_tools(is, v, body, e);
            if (rc != LM_OK)
                goto fail;
        } else if (streq(key, "tool_choice")) {
            rc = convert_tool_choice(v, body, e);
            if (rc != LM_OK)
                goto fail;
        } else {
            log_drop(is, key);
        }
    }
    if (json_object_size(gc) > 0 && json_object_set(body, "generationConfig", gc))
        goto nomem;
    json_decref(gc);
    return send_request(is, u, model,
                        c->stream ? ":streamGenerateContent?alt=sse" : ":generateContent", body, e);
nomem:
    rc = oom(e);
fail:
    json_decref(body);
    json_decref(gc);
    return rc;
}

/* ---- embeddings request ------------------------------------------------- */

static int gm_build_embed(gm_inst *is, gm_req *rs, lm_call *c, const json_t *canon, lm_ureq *u,
                          lm_err *e)
{
    const char *model = model_id(c, canon);
    json_t *input = json_object_get(canon, "input");
    json_t *dims = json_object_get(canon, "dimensions");
    json_t *fmt = json_object_get(canon, "encoding_format");
    json_t *body, *v;
    const char *key;
    char mref[160];
    size_t i;

    if (model == NULL)
        return bad_req(e, "model is missing or not a valid Gemini model id", NULL);
    if (strlen(model) > 140)
        return bad_req(e, "model id too long", NULL);
    snprintf(mref, sizeof(mref), "models/%s", model);
    if (dims != NULL && !json_is_null(dims) &&
        (!json_is_integer(dims) || json_integer_value(dims) <= 0))
        return bad_req(e, "dimensions must be a positive integer", NULL);
    if (json_is_string(fmt) && streq(json_string_value(fmt), "base64"))
        rs->b64 = 1;
    else if (fmt != NULL && !json_is_null(fmt) && !streq(json_string_value(fmt), "float"))
        return bad_req(e, "encoding_format must be float or base64", NULL);
    json_object_foreach ((json_t *)canon, key, v) {
        if (!streq(key, "model") && !streq(key, "input") && !streq(key, "dimensions") &&
            !streq(key, "encoding_format"))
            log_drop(is, key);
    }

    if (json_is_string(input)) {
        body = json_pack("{s:s,s:{s:[{s:O}]}}", "model", mref, "content", "parts", "text", input);
        if (body && json_is_integer(dims) && json_object_set(body, "outputDimensionality", dims)) {
            json_decref(body);
            body = NULL;
        }
        if (body == NULL)
            return oom(e);
        return send_request(is, u, model, ":embedContent", body, e);
    }
    if (!json_is_array(input) || json_array_size(input) == 0)
        return bad_req(e, "input must be a string or a non-empty array of strings", NULL);
    body = json_pack("{s:[]}", "requests");
    if (body == NULL)
        return oom(e);
    json_array_foreach (input, i, v) {
        json_t *r;
        if (!json_is_string(v)) {
            json_decref(body);
            return bad_req(e, "Gemini embeddings take text input only (no token arrays)", NULL);
        }
        r = json_pack("{s:s,s:{s:[{s:O}]}}", "model", mref, "content", "parts", "text", v);
        if (r && json_is_integer(dims) && json_object_set(r, "outputDimensionality", dims)) {
            json_decref(r);
            r = NULL;
        }
        if (aadd(json_object_get(body, "requests"), r)) {
            json_decref(body);
            return oom(e);
        }
    }
    return send_request(is, u, model, ":batchEmbedContents", body, e);
}

static int gm_build_request(void *ist, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    gm_inst *is = ist;
    gm_req *rs;
    const char *rid = c->request_id;
    size_t i, n = 0;

    if (!json_is_object(canon))
        return bad_req(e, "request body must be a JSON object", NULL);
    rs = is->h->alloc(sizeof(*rs));
    if (rs == NULL)
        return oom(e);
    memset(rs, 0, sizeof(*rs));
    c->rstate = rs;
    /* Tool-call ids: call_<request id (alnum)>_<k>, unique per request. */
    for (i = 0; rid != NULL && rid[i] && n < sizeof(rs->idbase) - 1; i++) {
        char ch = rid[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            rs->idbase[n++] = ch;
    }
    if (n == 0 && LM_HOST_HAS(is->h, now_ms))
        snprintf(rs->idbase, sizeof(rs->idbase), "%llx", (unsigned long long)is->h->now_ms());
    if (c->op == LM_OP_EMBED)
        return gm_build_embed(is, rs, c, canon, u, e);
    if (c->op != LM_OP_CHAT)
        return lm_err_set(e, LM_ENOTSUP, 400, "invalid_request_error", NULL,
                          "operation not supported");
    return gm_build_chat(is, rs, c, canon, u, e);
}

/* ---- errors ------------------------------------------------------------- */

static int has_reason(const json_t *err, const char *reason)
{
    size_t i;
    json_t *d;
    json_array_foreach (json_object_get(err, "details"), i, d) {
        if (streq(json_string_value(json_object_get(d, "reason")), reason))
            return 1;
    }
    return 0;
}

/* Fill e from a Google error object; status 0 = take error.code. */
static void map_google_error(const json_t *err, int status, lm_err *e)
{
    const char *msg = json_string_value(json_object_get(err, "message"));
    const char *gst = json_string_value(json_object_get(err, "status"));
    int st = status;
    const char *type = "api_error", *code = NULL;
    char fb[64];

    if (st <= 0 || st == 200)
        st = (int)jint(err, "code");
    if (st < 400 || st > 599)
        st = 502;
    if (msg == NULL) {
        snprintf(fb, sizeof(fb), "Gemini returned HTTP %d", st);
        msg = fb;
    }
    if (has_reason(err, "API_KEY_INVALID") || st == 401 || streq(gst, "UNAUTHENTICATED")) {
        st = 401;
        type = "authentication_error";
        code = has_reason(err, "API_KEY_INVALID") ? "API_KEY_INVALID" : "UNAUTHENTICATED";
    } else if (st == 403) {
        type = "permission_error";
    } else if (st == 404) {
        type = "invalid_request_error";
        code = "model_not_found";
    } else if (st == 429) {
        type = "rate_limit_error";
        code = "rate_limit_exceeded";
    } else if (st >= 400 && st < 500) {
        type = "invalid_request_error";
    } else if (st == 503) {
        code = "overloaded";
    }
    lm_err_set(e, LM_EUPSTREAM, st, type, code, "%s", msg);
}

static int gm_map_error(void *ist, lm_call *c, int status, lm_str body, lm_err *e)
{
    json_error_t jerr;
    json_t *root = json_loadb(body.p, body.n, 0, &jerr);
    json_t *err = json_object_get(root, "error");
    (void)ist;
    (void)c;
    /* Google sometimes wraps the error in a one-element array. */
    if (err == NULL && json_is_array(root))
        err = json_object_get(json_array_get(root, 0), "error");
    map_google_error(err, status, e);
    json_decref(root);
    return LM_OK;
}

/* ---- response translation ----------------------------------------------- */

static const char *map_finish(const char *r, int had_tools)
{
    if (r == NULL || streq(r, "STOP"))
        return had_tools ? "tool_calls" : "stop";
    if (streq(r, "MAX_TOKENS"))
        return "length";
    if (streq(r, "SAFETY") || streq(r, "RECITATION") || streq(r, "LANGUAGE") ||
        streq(r, "BLOCKLIST") || streq(r, "PROHIBITED_CONTENT") || streq(r, "SPII") ||
        strncmp(r, "IMAGE_", 6) == 0)
        return "content_filter";
    return "stop"; /* MALFORMED_FUNCTION_CALL, OTHER, FINISH_REASON_UNSPECIFIED, new ones */
}

static void read_usage(const json_t *um, lm_usage *u)
{
    int64_t cand = jint(um, "candidatesTokenCount"), th = jint(um, "thoughtsTokenCount");
    u->prompt = jint(um, "promptTokenCount");
    u->completion = (cand >= 0 || th >= 0) ? (cand > 0 ? cand : 0) + (th > 0 ? th : 0) : -1;
    u->total = jint(um, "totalTokenCount");
    if (u->total < 0 && u->prompt >= 0 && u->completion >= 0)
        u->total = u->prompt + u->completion;
    u->cached = jint(um, "cachedContentTokenCount");
    u->reasoning = th;
}

static json_t *usage_json(const lm_usage *u)
{
    json_t *o =
        json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)(u->prompt > 0 ? u->prompt : 0),
                  "completion_tokens", (json_int_t)(u->completion > 0 ? u->completion : 0),
                  "total_tokens", (json_int_t)(u->total > 0 ? u->total : 0));
    if (o != NULL && u->cached >= 0)
        json_object_set_new(o, "prompt_tokens_details",
                            json_pack("{s:I}", "cached_tokens", (json_int_t)u->cached));
    if (o != NULL && u->reasoning >= 0)
        json_object_set_new(o, "completion_tokens_details",
                            json_pack("{s:I}", "reasoning_tokens", (json_int_t)u->reasoning));
    return o;
}

static json_t *make_call_id(gm_req *rs, const json_t *fc)
{
    char buf[80];
    const char *given = json_string_value(json_object_get(fc, "id"));
    if (given != NULL && given[0] != '\0')
        return json_string(given);
    snprintf(buf, sizeof(buf), "call_%s_%d", rs->idbase, rs->ncalls++);
    return json_string(buf);
}

/* One candidate -> one OpenAI choice. */
static int candidate_choice(gm_req *rs, const json_t *cand, size_t pos, json_t **out, lm_err *e)
{
    json_t *parts = json_object_get(json_object_get(cand, "content"), "parts");
    json_t *tcs = json_array(), *msg = NULL, *p;
    json_t *idx = json_object_get(cand, "index");
    sbuf text = {NULL, 0, 0, 0}, think = {NULL, 0, 0, 0};
    size_t i;
    int ntext = 0, rc = LM_OK;

    *out = NULL;
    if (tcs == NULL)
        return oom(e);
    json_array_foreach (parts, i, p) {
        json_t *t = json_object_get(p, "text");
        json_t *fc = json_object_get(p, "functionCall");
        if (json_is_string(t)) {
            if (json_is_true(json_object_get(p, "thought")))
                sb_add(&think, json_string_value(t), json_string_length(t));
            else {
                sb_add(&text, json_string_value(t), json_string_length(t));
                ntext++;
            }
        } else if (json_is_object(fc)) {
            json_t *name = json_object_get(fc, "name");
            json_t *args = json_object_get(fc, "args");
            json_t *astr = args ? dump_string(args) : json_string("{}");
            if (!json_is_string(name)) {
                json_decref(astr);
                rc = bad_upstream(e, "functionCall without a name");
                goto out;
            }
            if (astr == NULL ||
                aadd(tcs, json_pack("{s:o,s:s,s:{s:O,s:o}}", "id", make_call_id(rs, fc), "type",
                                    "function", "function", "name", name, "arguments", astr))) {
                rc = oom(e);
                goto out;
            }
        }
    }
    if (text.oom || think.oom) {
        rc = oom(e);
        goto out;
    }
    msg = json_pack("{s:s}", "role", "assistant");
    if (msg == NULL ||
        ((ntext > 0 || json_array_size(tcs) == 0)
             ? oset(msg, "content", json_stringn(text.p ? text.p : "", text.n))
             : json_object_set_new(msg, "content", json_null())) ||
        (think.n > 0 && oset(msg, "reasoning_content", json_stringn(think.p, think.n))) ||
        (json_array_size(tcs) > 0 && json_object_set(msg, "tool_calls", tcs))) {
        rc = oom(e);
        goto out;
    }
    *out = json_pack("{s:I,s:O,s:n,s:s}", "index",
                     (json_int_t)(json_is_integer(idx) ? json_integer_value(idx) : (json_int_t)pos),
                     "message", msg, "logprobs", "finish_reason",
                     map_finish(json_string_value(json_object_get(cand, "finishReason")),
                                json_array_size(tcs) > 0));
    if (*out == NULL)
        rc = oom(e);
out:
    free(text.p);
    free(think.p);
    json_decref(tcs);
    json_decref(msg);
    return rc;
}

static void b64_float32(const json_t *values, sbuf *b)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = json_array_size(values), i, k = 0;
    unsigned char in[3];
    char o[4];
    for (i = 0; i < n; i++) {
        float f = (float)json_number_value(json_array_get(values, i));
        uint32_t w;
        int j;
        memcpy(&w, &f, 4);
        for (j = 0; j < 4; j++) {
            in[k++] = (unsigned char)(w >> (8 * j)); /* little endian */
            if (k == 3) {
                o[0] = tbl[in[0] >> 2];
                o[1] = tbl[((in[0] & 3) << 4) | (in[1] >> 4)];
                o[2] = tbl[((in[1] & 15) << 2) | (in[2] >> 6)];
                o[3] = tbl[in[2] & 63];
                sb_add(b, o, 4);
                k = 0;
            }
        }
    }
    if (k > 0) {
        if (k == 1)
            in[1] = 0;
        o[0] = tbl[in[0] >> 2];
        o[1] = tbl[((in[0] & 3) << 4) | (in[1] >> 4)];
        o[2] = k == 2 ? tbl[(in[1] & 15) << 2] : '=';
        o[3] = '=';
        sb_add(b, o, 4);
    }
    if (b->p == NULL)
        sb_add(b, "", 0);
}

static int embed_response(gm_inst *is, gm_req *rs, lm_call *c, json_t *root, json_t **out,
                          lm_usage *usage, lm_err *e)
{
    json_t *list = json_array(), *one = json_object_get(root, "embedding"), *v;
    json_t *embs = json_object_get(root, "embeddings");
    size_t i, n = one ? 1 : json_array_size(embs);
    (void)is;
    if (list == NULL)
        return oom(e);
    if (one == NULL && !json_is_array(embs)) {
        json_decref(list);
        return bad_upstream(e, "no embedding or embeddings");
    }
    for (i = 0; i < n; i++) {
        json_t *vals = json_object_get(one ? one : json_array_get(embs, i), "values");
        if (!json_is_array(vals)) {
            json_decref(list);
            return bad_upstream(e, "embedding without values");
        }
        if (rs->b64) {
            sbuf b = {NULL, 0, 0, 0};
            b64_float32(vals, &b);
            v = b.oom ? NULL : json_stringn(b.p, b.n);
            free(b.p);
        } else {
            v = json_incref(vals);
        }
        if (aadd(list, json_pack("{s:s,s:I,s:o}", "object", "embedding", "index", (json_int_t)i,
                                 "embedding", v))) {
            json_decref(list);
            return oom(e);
        }
    }
    *out = json_pack("{s:s,s:o,s:s,s:{s:i,s:i}}", "object", "list", "data", list, "model",
                     c->model ? c->model : "", "usage", "prompt_tokens", 0, "total_tokens", 0);
    if (*out == NULL)
        return oom(e);
    if (usage != NULL) {
        usage->prompt = usage->completion = usage->total = -1;
        usage->cached = usage->reasoning = -1;
    }
    return LM_OK;
}

static int gm_parse_response(void *ist, lm_call *c, int status, lm_str body, json_t **out,
                             lm_usage *usage, lm_err *e)
{
    gm_inst *is = ist;
    gm_req *rs = c->rstate;
    json_error_t jerr;
    json_t *root, *cands, *choices, *cand, *resp;
    lm_usage u;
    size_t i;
    int rc = LM_OK;
    const char *rid, *model;
    char idbuf[160];

    (void)status;
    *out = NULL;
    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "no request state");
    root = json_loadb(body.p, body.n, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return bad_upstream(e, "body is not a JSON object");
    }
    if (json_is_object(json_object_get(root, "error"))) {
        map_google_error(json_object_get(root, "error"), 0, e);
        json_decref(root);
        return LM_EUPSTREAM;
    }
    if (c->op == LM_OP_EMBED) {
        rc = embed_response(is, rs, c, root, out, usage, e);
        json_decref(root);
        return rc;
    }
    choices = json_array();
    if (choices == NULL) {
        json_decref(root);
        return oom(e);
    }
    cands = json_object_get(root, "candidates");
    json_array_foreach (cands, i, cand) {
        json_t *ch;
        rc = candidate_choice(rs, cand, i, &ch, e);
        if (rc != LM_OK)
            goto out;
        if (aadd(choices, ch)) {
            rc = oom(e);
            goto out;
        }
    }
    if (json_array_size(choices) == 0) {
        /* Blocked prompt (promptFeedback.blockReason) or an empty answer. */
        int blocked =
            json_object_get(json_object_get(root, "promptFeedback"), "blockReason") != NULL;
        if (aadd(choices, json_pack("{s:i,s:{s:s,s:s},s:n,s:s}", "index", 0, "message", "role",
                                    "assistant", "content", "", "logprobs", "finish_reason",
                                    blocked ? "content_filter" : "stop"))) {
            rc = oom(e);
            goto out;
        }
    }
    read_usage(json_object_get(root, "usageMetadata"), &u);
    if (usage != NULL)
        *usage = u;
    rid = json_string_value(json_object_get(root, "responseId"));
    snprintf(idbuf, sizeof(idbuf), "chatcmpl-%s", rid ? rid : rs->idbase);
    model = json_string_value(json_object_get(root, "modelVersion"));
    if (model == NULL)
        model = c->model ? c->model : "";
    resp = json_pack("{s:s,s:s,s:I,s:s,s:O}", "id", idbuf, "object", "chat.completion", "created",
                     (json_int_t)(LM_HOST_HAS(is->h, unix_time) ? is->h->unix_time() : 0), "model",
                     model, "choices", choices);
    if (resp == NULL || oset(resp, "usage", usage_json(&u))) {
        json_decref(resp);
        rc = oom(e);
        goto out;
    }
    *out = resp;
out:
    json_decref(choices);
    json_decref(root);
    return rc;
}

/* ---- streaming ---------------------------------------------------------- */

static int emit(gm_inst *is, lm_emit *out, int idx, json_t *delta, const char *fin, lm_err *e)
{
    int rc;
    if (delta == NULL)
        return oom(e);
    rc = is->h->emit_delta(out, idx, delta, fin);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot emit stream chunk");
    return LM_OK;
}

static int ensure_started(gm_inst *is, gm_cand *cs, int idx, lm_emit *out, lm_err *e)
{
    if (cs->started)
        return LM_OK;
    cs->started = 1;
    return emit(is, out, idx, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, e);
}

static int stream_candidate(gm_inst *is, gm_req *rs, const json_t *cand, size_t pos, lm_emit *out,
                            lm_err *e)
{
    json_t *idxj = json_object_get(cand, "index");
    json_int_t idx = json_is_integer(idxj) ? json_integer_value(idxj) : (json_int_t)pos;
    json_t *parts = json_object_get(json_object_get(cand, "content"), "parts"), *p;
    const char *fr = json_string_value(json_object_get(cand, "finishReason"));
    gm_cand *cs;
    size_t i;
    int rc;

    if (idx < 0 || idx >= GM_MAX_CAND)
        return bad_upstream(e, "candidate index out of range");
    cs = &rs->cand[idx];
    rc = ensure_started(is, cs, (int)idx, out, e);
    if (rc != LM_OK)
        return rc;
    json_array_foreach (parts, i, p) {
        json_t *t = json_object_get(p, "text");
        json_t *fc = json_object_get(p, "functionCall");
        if (json_is_string(t) && json_string_length(t) > 0) {
            int thought = json_is_true(json_object_get(p, "thought"));
            rc = emit(is, out, (int)idx,
                      json_pack("{s:O}", thought ? "reasoning_content" : "content", t), NULL, e);
        } else if (json_is_object(fc)) {
            json_t *name = json_object_get(fc, "name");
            json_t *args = json_object_get(fc, "args");
            json_t *astr;
            if (!json_is_string(name))
                return bad_upstream(e, "functionCall without a name");
            astr = args ? dump_string(args) : json_string("{}");
            if (astr == NULL)
                return oom(e);
            rc = emit(is, out, (int)idx,
                      json_pack("{s:[{s:i,s:o,s:s,s:{s:O,s:o}}]}", "tool_calls", "index",
                                cs->ntools, "id", make_call_id(rs, fc), "type", "function",
                                "function", "name", name, "arguments", astr),
                      NULL, e);
            cs->ntools++;
        }
        if (rc != LM_OK)
            return rc;
    }
    if (fr != NULL && !cs->finished) {
        cs->finished = 1;
        return emit(is, out, (int)idx, json_object(), map_finish(fr, cs->ntools > 0), e);
    }
    return LM_OK;
}

static int gm_parse_event(void *ist, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    gm_inst *is = ist;
    gm_req *rs = c->rstate;
    json_error_t jerr;
    json_t *d, *cands, *cand, *um;
    size_t i;
    int rc = LM_OK;

    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "no request state");
    if (ev->data.n == 0)
        return LM_OK;
    d = json_loadb(ev->data.p, ev->data.n, 0, &jerr);
    if (!json_is_object(d)) {
        json_decref(d);
        return bad_upstream(e, "stream event is not a JSON object");
    }
    if (json_is_object(json_object_get(d, "error"))) {
        map_google_error(json_object_get(d, "error"), 0, e);
        json_decref(d);
        return LM_EUPSTREAM;
    }
    cands = json_object_get(d, "candidates");
    json_array_foreach (cands, i, cand) {
        rc = stream_candidate(is, rs, cand, i, out, e);
        if (rc != LM_OK)
            goto out;
    }
    if (json_array_size(cands) == 0 &&
        json_object_get(json_object_get(d, "promptFeedback"), "blockReason") != NULL &&
        !rs->cand[0].finished) {
        rc = ensure_started(is, &rs->cand[0], 0, out, e);
        rs->cand[0].finished = 1;
        if (rc == LM_OK)
            rc = emit(is, out, 0, json_object(), "content_filter", e);
        if (rc != LM_OK)
            goto out;
    }
    um = json_object_get(d, "usageMetadata");
    if (json_is_object(um)) {
        lm_usage u;
        read_usage(um, &u);
        if (is->h->emit_usage(out, &u) < 0)
            rc = lm_err_set(e, LM_ERR, 500, "api_error", NULL, "cannot record usage");
    }
out:
    json_decref(d);
    return rc;
}

/* ---- the table ---------------------------------------------------------- */

static const lm_provider gm_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "gemini",
    .version = "1.0.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    .flags = LM_PF_MULTI_CHOICE,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = gm_cfg_keys,
    .init = gm_init,
    .fini = gm_fini,
    .list_models = gm_list_models,
    .build_request = gm_build_request,
    .parse_response = gm_parse_response,
    .parse_event = gm_parse_event,
    .map_error = gm_map_error,
    .req_close = gm_req_close,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &gm_provider;
}
