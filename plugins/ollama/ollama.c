/*
 * ollama.c - Ollama native API provider plugin.
 *
 * Chat: POST {base}/api/chat (NDJSON stream; "stream" always explicit).
 * Embeddings: POST {base}/api/embed.
 * Pure translator: no I/O, no mutable globals. See sdk/notes/ollama.md.
 */
#include "longmen.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct ol_inst {
    const lm_host_api *h;
    void *ictx;
    lm_str base_url; /* no trailing '/' */
    char *auth;      /* "Bearer <key>" or NULL */
    size_t auth_n;
} ol_inst;

typedef struct ol_req {
    int started, finished, ntools, ncalls;
    int b64; /* embeddings: encoding_format base64 */
    char idbase[40];
} ol_req;

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

static void log_drop(const ol_inst *is, const char *key)
{
    if (LM_HOST_HAS(is->h, log))
        is->h->log(is->ictx, LM_LOG_DEBUG, "ollama: dropping unsupported parameter '%s'", key);
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

static const lm_cfg_key ol_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, "http://localhost:11434", "Ollama server URL (without /api)"},
    {"api_key", LM_CFG_STR, 0, NULL,
     "optional key for a reverse proxy in front of Ollama (sent as Bearer)"},
    {NULL, 0, 0, NULL, NULL}};

static int ol_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    ol_inst *is;
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
        s = LM_STR("http://localhost:11434");
    while (s.n > 0 && s.p[s.n - 1] == '/')
        s.n--;
    if (!((s.n > 7 && strncmp(s.p, "http://", 7) == 0) ||
          (s.n > 8 && strncmp(s.p, "https://", 8) == 0)) ||
        !header_safe(s)) {
        h->free(is);
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "base_url must be an absolute http(s) URL");
    }
    is->base_url = s;
    if (h->cfg_str(ictx, "api_key", &s) == LM_OK && s.n > 0) {
        if (!header_safe(s)) {
            h->free(is);
            return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                              "api_key contains control characters");
        }
        is->auth_n = 7 + s.n;
        is->auth = h->alloc(is->auth_n + 1);
        if (is->auth == NULL) {
            h->free(is);
            return oom(e);
        }
        memcpy(is->auth, "Bearer ", 7);
        memcpy(is->auth + 7, s.p, s.n);
        is->auth[is->auth_n] = '\0';
    }
    *istate = is;
    return LM_OK;
}

static void ol_fini(void *ist)
{
    ol_inst *is = ist;
    if (is == NULL)
        return;
    if (is->auth != NULL) {
        memset(is->auth, 0, is->auth_n);
        is->h->free(is->auth);
    }
    is->h->free(is);
}

static void ol_req_close(void *ist, lm_call *c)
{
    ol_inst *is = ist;
    if (c->rstate != NULL)
        is->h->free(c->rstate);
    c->rstate = NULL;
}

static int send_request(ol_inst *is, lm_ureq *u, const char *path, json_t *body, lm_err *e)
{
    const lm_host_api *h = is->h;
    size_t pl = strlen(path), n = is->base_url.n + pl;
    char *url = malloc(n + 1);
    int rc;
    if (url == NULL) {
        json_decref(body);
        return oom(e);
    }
    memcpy(url, is->base_url.p, is->base_url.n);
    memcpy(url + is->base_url.n, path, pl + 1);
    rc = h->ureq_set_method(u, "POST");
    if (rc >= 0)
        rc = h->ureq_set_url(u, (lm_str){url, n});
    free(url);
    if (rc >= 0 && is->auth != NULL)
        rc = h->ureq_add_header(u, LM_STR("Authorization"), (lm_str){is->auth, is->auth_n});
    if (rc < 0) {
        json_decref(body);
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot build upstream request");
    }
    rc = h->ureq_set_json_body(u, body);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot set upstream body");
    return LM_OK;
}

/* ---- chat request ------------------------------------------------------- */

/* Content (string or parts) -> joined text in b, images (base64) in imgs. */
static int flatten(const json_t *content, sbuf *b, json_t *imgs, lm_err *e)
{
    size_t i;
    json_t *p;
    int ntext = 0;
    if (content == NULL || json_is_null(content))
        return LM_OK;
    if (json_is_string(content)) {
        sb_add(b, json_string_value(content), json_string_length(content));
        return LM_OK;
    }
    if (!json_is_array(content))
        return bad_req(e, "message content must be a string, an array or null", NULL);
    json_array_foreach (content, i, p) {
        const char *type = json_string_value(json_object_get(p, "type"));
        if (streq(type, "text") || streq(type, "refusal")) {
            json_t *t = json_object_get(p, streq(type, "text") ? "text" : "refusal");
            if (!json_is_string(t))
                return bad_req(e, "text part needs a string 'text'", NULL);
            if (ntext++ > 0)
                sb_add(b, "\n", 1);
            sb_add(b, json_string_value(t), json_string_length(t));
        } else if (streq(type, "image_url") && imgs != NULL) {
            json_t *iu = json_object_get(p, "image_url");
            const char *url =
                json_string_value(json_is_object(iu) ? json_object_get(iu, "url") : iu);
            const char *comma;
            if (url == NULL)
                return bad_req(e, "image_url part needs image_url.url", NULL);
            if (strncmp(url, "data:", 5) != 0)
                return bad_req(e,
                               "Ollama takes inline images only: send the image as a "
                               "data:<type>;base64,<data> URL",
                               NULL);
            comma = strchr(url, ',');
            if (comma == NULL || comma - url < 7 || strncmp(comma - 7, ";base64", 7) != 0)
                return bad_req(e, "image data URL must be data:<media type>;base64,<data>", NULL);
            if (aadd(imgs, json_string(comma + 1)))
                return oom(e);
        } else {
            return bad_req(e, "unsupported content part type for Ollama: ", type ? type : "(none)");
        }
    }
    return LM_OK;
}

static int tool_calls_out(const json_t *calls, json_t *msg, json_t *names, lm_err *e)
{
    json_t *out, *tc;
    size_t i;
    if (calls == NULL || json_is_null(calls))
        return LM_OK;
    if (!json_is_array(calls))
        return bad_req(e, "assistant tool_calls must be an array", NULL);
    out = json_array();
    if (out == NULL)
        return oom(e);
    json_array_foreach (calls, i, tc) {
        json_t *fn = json_object_get(tc, "function");
        const char *id = json_string_value(json_object_get(tc, "id"));
        json_t *name = json_object_get(fn, "name");
        json_t *a = json_object_get(fn, "arguments");
        json_t *args;
        json_error_t jerr;
        if (!json_is_string(name)) {
            json_decref(out);
            return bad_req(e, "tool_calls entries need function.name", NULL);
        }
        if (a == NULL || json_is_null(a) || (json_is_string(a) && json_string_length(a) == 0))
            args = json_object();
        else if (json_is_object(a))
            args = json_deep_copy(a);
        else if (json_is_string(a)) {
            args = json_loadb(json_string_value(a), json_string_length(a), 0, &jerr);
            if (!json_is_object(args)) {
                json_decref(args);
                json_decref(out);
                return bad_req(e, "tool_calls function.arguments must be a JSON object: ",
                               json_string_value(name));
            }
        } else {
            json_decref(out);
            return bad_req(e, "tool_calls function.arguments must be a string", NULL);
        }
        if (aadd(out, json_pack("{s:{s:O,s:o}}", "function", "name", name, "arguments", args)) ||
            (id != NULL && json_object_set(names, id, name))) {
            json_decref(out);
            return oom(e);
        }
    }
    return oset(msg, "tool_calls", out) ? oom(e) : LM_OK;
}

static int convert_messages(ol_inst *is, const json_t *in, json_t *body, lm_err *e)
{
    json_t *msgs = json_array(), *names = json_object(), *m;
    size_t i;
    int rc = LM_OK;

    if (msgs == NULL || names == NULL) {
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
        json_t *imgs = NULL, *om = NULL;
        sbuf text = {NULL, 0, 0, 0};
        const char *orole;

        if (role == NULL) {
            rc = bad_req(e, "each message needs a string role", NULL);
            break;
        }
        if (json_object_get(m, "name") != NULL && !streq(role, "tool"))
            log_drop(is, "messages[].name");
        if (streq(role, "system") || streq(role, "developer"))
            orole = "system";
        else if (streq(role, "user") || streq(role, "assistant") || streq(role, "tool"))
            orole = role;
        else {
            rc = bad_req(e, "unsupported message role for Ollama: ", role);
            break;
        }
        if (streq(orole, "user") && (imgs = json_array()) == NULL) {
            rc = oom(e);
            break;
        }
        rc = flatten(content, &text, imgs, e);
        if (rc == LM_OK && text.oom)
            rc = oom(e);
        if (rc == LM_OK) {
            om = json_pack("{s:s,s:s%}", "role", orole, "content", text.p ? text.p : "", text.n);
            if (om == NULL)
                rc = oom(e);
        }
        free(text.p);
        if (rc == LM_OK && json_array_size(imgs) > 0 && json_object_set(om, "images", imgs))
            rc = oom(e);
        json_decref(imgs);
        if (rc == LM_OK && streq(orole, "assistant"))
            rc = tool_calls_out(json_object_get(m, "tool_calls"), om, names, e);
        if (rc == LM_OK && streq(orole, "tool")) {
            const char *id = json_string_value(json_object_get(m, "tool_call_id"));
            json_t *name = id ? json_object_get(names, id) : NULL;
            if (name == NULL)
                name = json_object_get(m, "name");
            if (json_is_string(name) && json_object_set(om, "tool_name", name))
                rc = oom(e);
        }
        if (rc == LM_OK && aadd(msgs, om)) {
            om = NULL;
            rc = oom(e);
        } else if (rc != LM_OK) {
            json_decref(om);
        }
        if (rc != LM_OK)
            break;
    }
    if (rc == LM_OK && json_object_set(body, "messages", msgs))
        rc = oom(e);
out:
    json_decref(msgs);
    json_decref(names);
    return rc;
}

static int ol_build_chat(ol_inst *is, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const char *model = c->model;
    json_t *body, *opts, *v;
    const char *key;
    int rc;

    if (model == NULL || model[0] == '\0')
        model = json_string_value(json_object_get(canon, "model"));
    if (model == NULL || model[0] == '\0')
        return bad_req(e, "model is required", NULL);
    body = json_pack("{s:s}", "model", model);
    opts = json_object();
    if (body == NULL || opts == NULL) {
        json_decref(body);
        json_decref(opts);
        return oom(e);
    }
    rc = convert_messages(is, json_object_get(canon, "messages"), body, e);
    if (rc != LM_OK)
        goto fail;
    if (json_object_set_new(body, "stream", json_boolean(c->stream)))
        goto nomem;

    json_object_foreach ((json_t *)canon, key, v) {
        if (streq(key, "model") || streq(key, "messages") || streq(key, "stream") ||
            streq(key, "stream_options") || json_is_null(v))
            continue;
        if (streq(key, "temperature") || streq(key, "top_p") || streq(key, "top_k") ||
            streq(key, "presence_penalty") || streq(key, "frequency_penalty")) {
            if (!json_is_number(v)) {
                rc = bad_req(e, "parameter must be a number: ", key);
                goto fail;
            }
            if (json_object_set(opts, key, v))
                goto nomem;
        } else if (streq(key, "seed")) {
            if (!json_is_integer(v)) {
                rc = bad_req(e, "seed must be an integer", NULL);
                goto fail;
            }
            if (json_object_set(opts, "seed", v))
                goto nomem;
        } else if (streq(key, "max_tokens") || streq(key, "max_completion_tokens")) {
            if (!json_is_integer(v) || json_integer_value(v) <= 0) {
                rc = bad_req(e, "max_tokens must be a positive integer", NULL);
                goto fail;
            }
            if (streq(key, "max_tokens") &&
                json_object_get(canon, "max_completion_tokens") != NULL &&
                !json_is_null(json_object_get(canon, "max_completion_tokens")))
                continue;
            if (json_object_set(opts, "num_predict", v))
                goto nomem;
        } else if (streq(key, "stop")) {
            size_t i;
            json_t *s;
            if (json_is_string(v)) {
                if (oset(opts, "stop", json_pack("[O]", v)))
                    goto nomem;
            } else if (json_is_array(v)) {
                json_array_foreach (v, i, s) {
                    if (!json_is_string(s)) {
                        rc = bad_req(e, "stop must be a string or an array of strings", NULL);
                        goto fail;
                    }
                }
                if (json_array_size(v) > 0 && json_object_set(opts, "stop", v))
                    goto nomem;
            } else {
                rc = bad_req(e, "stop must be a string or an array of strings", NULL);
                goto fail;
            }
        } else if (streq(key, "response_format")) {
            const char *t = json_string_value(json_object_get(v, "type"));
            if (streq(t, "json_object")) {
                if (oset(body, "format", json_string("json")))
                    goto nomem;
            } else if (streq(t, "json_schema")) {
                json_t *schema = json_object_get(json_object_get(v, "json_schema"), "schema");
                if (json_is_object(schema) ? json_object_set(body, "format", schema)
                                           : oset(body, "format", json_string("json")))
                    goto nomem;
            } else if (!streq(t, "text")) {
                log_drop(is, "response_format");
            }
        } else if (streq(key, "tools")) {
            if (!json_is_array(v)) {
                rc = bad_req(e, "tools must be an array", NULL);
                goto fail;
            }
            if (json_array_size(v) > 0 && json_object_set(body, "tools", v))
                goto nomem;
        } else if (streq(key, "n") && json_is_integer(v) && json_integer_value(v) == 1) {
            continue;
        } else {
            log_drop(is, key);
        }
    }
    if (json_object_size(opts) > 0 && json_object_set(body, "options", opts))
        goto nomem;
    json_decref(opts);
    return send_request(is, u, "/api/chat", body, e);
nomem:
    rc = oom(e);
fail:
    json_decref(body);
    json_decref(opts);
    return rc;
}

static int ol_build_embed(ol_inst *is, ol_req *rs, lm_call *c, const json_t *canon, lm_ureq *u,
                          lm_err *e)
{
    const char *model = c->model;
    json_t *input = json_object_get(canon, "input");
    json_t *dims = json_object_get(canon, "dimensions");
    json_t *fmt = json_object_get(canon, "encoding_format");
    json_t *body, *v;
    const char *key;
    size_t i;

    if (model == NULL || model[0] == '\0')
        model = json_string_value(json_object_get(canon, "model"));
    if (model == NULL || model[0] == '\0')
        return bad_req(e, "model is required", NULL);
    if (json_is_string(fmt) && streq(json_string_value(fmt), "base64"))
        rs->b64 = 1;
    else if (fmt != NULL && !json_is_null(fmt) && !streq(json_string_value(fmt), "float"))
        return bad_req(e, "encoding_format must be float or base64", NULL);
    if (json_is_array(input)) {
        if (json_array_size(input) == 0)
            return bad_req(e, "input must not be empty", NULL);
        json_array_foreach (input, i, v) {
            if (!json_is_string(v))
                return bad_req(e, "Ollama embeddings take text input only (no token arrays)", NULL);
        }
    } else if (!json_is_string(input)) {
        return bad_req(e, "input must be a string or an array of strings", NULL);
    }
    json_object_foreach ((json_t *)canon, key, v) {
        if (!streq(key, "model") && !streq(key, "input") && !streq(key, "dimensions") &&
            !streq(key, "encoding_format"))
            log_drop(is, key);
    }
    body = json_pack("{s:s,s:O}", "model", model, "input", input);
    if (body == NULL)
        return oom(e);
    if (dims != NULL && !json_is_null(dims)) {
        if (!json_is_integer(dims) || json_integer_value(dims) <= 0) {
            json_decref(body);
            return bad_req(e, "dimensions must be a positive integer", NULL);
        }
        if (json_object_set(body, "dimensions", dims)) {
            json_decref(body);
            return oom(e);
        }
    }
    return send_request(is, u, "/api/embed", body, e);
}

static int ol_build_request(void *ist, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    ol_inst *is = ist;
    ol_req *rs;
    const char *rid = c->request_id;
    size_t i, n = 0;

    if (!json_is_object(canon))
        return bad_req(e, "request body must be a JSON object", NULL);
    rs = is->h->alloc(sizeof(*rs));
    if (rs == NULL)
        return oom(e);
    memset(rs, 0, sizeof(*rs));
    c->rstate = rs;
    for (i = 0; rid != NULL && rid[i] && n < sizeof(rs->idbase) - 1; i++) {
        char ch = rid[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            rs->idbase[n++] = ch;
    }
    if (n == 0 && LM_HOST_HAS(is->h, now_ms))
        snprintf(rs->idbase, sizeof(rs->idbase), "%llx", (unsigned long long)is->h->now_ms());
    if (c->op == LM_OP_EMBED)
        return ol_build_embed(is, rs, c, canon, u, e);
    if (c->op != LM_OP_CHAT)
        return lm_err_set(e, LM_ENOTSUP, 400, "invalid_request_error", NULL,
                          "operation not supported");
    return ol_build_chat(is, c, canon, u, e);
}

/* ---- errors ------------------------------------------------------------- */

static void map_status(int status, const char *msg, lm_err *e)
{
    const char *type = "api_error", *code = NULL;
    int st = status;
    char fb[64];
    if (msg == NULL) {
        snprintf(fb, sizeof(fb), "Ollama returned HTTP %d", status);
        msg = fb;
    }
    if (st == 404) {
        type = "invalid_request_error";
        code = "model_not_found";
    } else if (st == 401) {
        type = "authentication_error";
    } else if (st == 403) {
        type = "permission_error";
    } else if (st == 429) {
        type = "rate_limit_error";
        code = "rate_limit_exceeded";
    } else if (st >= 400 && st < 500) {
        type = "invalid_request_error";
    } else if (st < 400 || st > 599) {
        st = 502;
        code = "upstream_error";
    }
    lm_err_set(e, LM_EUPSTREAM, st, type, code, "%s", msg);
}

static int ol_map_error(void *ist, lm_call *c, int status, lm_str body, lm_err *e)
{
    json_error_t jerr;
    json_t *root = json_loadb(body.p, body.n, 0, &jerr);
    json_t *err = json_object_get(root, "error");
    const char *msg = json_string_value(err);
    (void)ist;
    (void)c;
    if (msg == NULL && json_is_object(err)) /* OpenAI-shaped proxy error */
        msg = json_string_value(json_object_get(err, "message"));
    map_status(status, msg, e);
    json_decref(root);
    return LM_OK;
}

/* ---- response translation ----------------------------------------------- */

static const char *map_done(const char *r, int had_tools)
{
    if (streq(r, "length"))
        return "length";
    return had_tools ? "tool_calls" : "stop"; /* stop, load, unload, missing */
}

static void read_usage(const json_t *o, lm_usage *u)
{
    u->prompt = jint(o, "prompt_eval_count");
    u->completion = jint(o, "eval_count");
    if (u->prompt < 0 && u->completion >= 0)
        u->prompt = 0; /* omitted when the prompt was served from cache */
    u->total = (u->prompt >= 0 && u->completion >= 0) ? u->prompt + u->completion : -1;
    u->cached = -1;
    u->reasoning = -1;
}

static json_t *usage_json(const lm_usage *u)
{
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)(u->prompt > 0 ? u->prompt : 0),
                     "completion_tokens", (json_int_t)(u->completion > 0 ? u->completion : 0),
                     "total_tokens", (json_int_t)(u->total > 0 ? u->total : 0));
}

/* "2024-07-22T20:33:28.123648Z" / "...-08:00" -> Unix seconds, or -1. */
static int64_t parse_time(const char *s)
{
    int y, mo, d, hh, mi, ss, n = 0;
    int64_t days, t;
    const char *p;
    if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &hh, &mi, &ss, &n) != 6)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mi > 59 || ss > 60)
        return -1;
    /* days from civil (Howard Hinnant) */
    {
        int yy = y - (mo <= 2);
        int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
        unsigned yoe = (unsigned)(yy - era * 400);
        unsigned doy = (unsigned)((153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1);
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        days = era * 146097 + (int64_t)doe - 719468;
    }
    t = days * 86400 + hh * 3600 + mi * 60 + ss;
    p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    if ((*p == '+' || *p == '-') && p[1] && p[2]) {
        int oh = 0, om = 0;
        if (sscanf(p + 1, "%2d:%2d", &oh, &om) >= 1)
            t += (*p == '+' ? -1 : 1) * (int64_t)(oh * 3600 + om * 60);
    }
    return t;
}

static json_t *make_call_id(ol_req *rs, const json_t *tc)
{
    char buf[80];
    const char *given = json_string_value(json_object_get(tc, "id"));
    if (given != NULL && given[0] != '\0')
        return json_string(given);
    snprintf(buf, sizeof(buf), "call_%s_%d", rs->idbase, rs->ncalls++);
    return json_string(buf);
}

/* One Ollama tool call -> OpenAI tool call (with index k when k >= 0). */
static json_t *tool_call(ol_req *rs, const json_t *tc, int k)
{
    json_t *fn = json_object_get(tc, "function");
    json_t *name = json_object_get(fn, "name");
    json_t *args = json_object_get(fn, "arguments");
    json_t *astr, *o;
    if (!json_is_string(name))
        return NULL;
    if (json_is_string(args))
        astr = json_incref(args);
    else if (args == NULL || json_is_null(args))
        astr = json_string("{}");
    else
        astr = dump_string(args);
    if (astr == NULL)
        return NULL;
    o = json_pack("{s:o,s:s,s:{s:O,s:o}}", "id", make_call_id(rs, tc), "type", "function",
                  "function", "name", name, "arguments", astr);
    if (o != NULL && k >= 0 && json_object_set_new(o, "index", json_integer(k))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int embed_response(ol_req *rs, lm_call *c, json_t *root, json_t **out, lm_usage *usage,
                          lm_err *e);

static int ol_parse_response(void *ist, lm_call *c, int status, lm_str body, json_t **out,
                             lm_usage *usage, lm_err *e)
{
    ol_inst *is = ist;
    ol_req *rs = c->rstate;
    json_error_t jerr;
    json_t *root, *msg, *om = NULL, *tcs = NULL, *tc, *resp;
    lm_usage u;
    size_t i;
    int64_t created;
    char idbuf[80];
    json_t *content, *thinking;
    const char *model;
    int rc = LM_OK;

    (void)status;
    *out = NULL;
    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "no request state");
    root = json_loadb(body.p, body.n, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return bad_upstream(e, "body is not a JSON object");
    }
    if (json_is_string(json_object_get(root, "error"))) {
        map_status(500, json_string_value(json_object_get(root, "error")), e);
        json_decref(root);
        return LM_EUPSTREAM;
    }
    if (c->op == LM_OP_EMBED) {
        rc = embed_response(rs, c, root, out, usage, e);
        json_decref(root);
        return rc;
    }
    msg = json_object_get(root, "message");
    if (!json_is_object(msg)) {
        json_decref(root);
        return bad_upstream(e, "no message object");
    }
    content = json_object_get(msg, "content");
    thinking = json_object_get(msg, "thinking");
    tcs = json_array();
    if (tcs == NULL)
        goto nomem;
    json_array_foreach (json_object_get(msg, "tool_calls"), i, tc) {
        if (aadd(tcs, tool_call(rs, tc, -1))) {
            rc = bad_upstream(e, "tool call without a function name");
            goto out;
        }
    }
    om = json_pack("{s:s}", "role", "assistant");
    if (om == NULL)
        goto nomem;
    if (json_array_size(tcs) > 0 && json_string_length(content) == 0) {
        if (json_object_set_new(om, "content", json_null()))
            goto nomem;
    } else if (json_is_string(content) ? json_object_set(om, "content", content)
                                       : oset(om, "content", json_string(""))) {
        goto nomem;
    }
    if (json_string_length(thinking) > 0 && json_object_set(om, "reasoning_content", thinking))
        goto nomem;
    if (json_array_size(tcs) > 0 && json_object_set(om, "tool_calls", tcs))
        goto nomem;
    read_usage(root, &u);
    if (usage != NULL)
        *usage = u;
    created = parse_time(json_string_value(json_object_get(root, "created_at")));
    if (created < 0)
        created = LM_HOST_HAS(is->h, unix_time) ? is->h->unix_time() : 0;
    snprintf(idbuf, sizeof(idbuf), "chatcmpl-%s", rs->idbase);
    model = json_string_value(json_object_get(root, "model"));
    if (model == NULL)
        model = c->model ? c->model : "";
    resp = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:O,s:n,s:s}]}", "id", idbuf, "object",
                     "chat.completion", "created", (json_int_t)created, "model", model, "choices",
                     "index", 0, "message", om, "logprobs", "finish_reason",
                     map_done(json_string_value(json_object_get(root, "done_reason")),
                              json_array_size(tcs) > 0));
    if (resp == NULL || oset(resp, "usage", usage_json(&u))) {
        json_decref(resp);
        goto nomem;
    }
    *out = resp;
    goto out;
nomem:
    rc = oom(e);
out:
    json_decref(om);
    json_decref(tcs);
    json_decref(root);
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

static int embed_response(ol_req *rs, lm_call *c, json_t *root, json_t **out, lm_usage *usage,
                          lm_err *e)
{
    json_t *embs = json_object_get(root, "embeddings"), *vals, *v;
    json_t *list = json_array();
    size_t i;
    int64_t pt = jint(root, "prompt_eval_count");
    if (list == NULL)
        return oom(e);
    if (!json_is_array(embs)) {
        json_decref(list);
        return bad_upstream(e, "no embeddings array");
    }
    json_array_foreach (embs, i, vals) {
        if (!json_is_array(vals)) {
            json_decref(list);
            return bad_upstream(e, "embedding is not an array");
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
    *out = json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", list, "model",
                     c->model ? c->model : "", "usage", "prompt_tokens",
                     (json_int_t)(pt > 0 ? pt : 0), "total_tokens", (json_int_t)(pt > 0 ? pt : 0));
    if (*out == NULL)
        return oom(e);
    if (usage != NULL) {
        usage->prompt = pt;
        usage->total = pt;
        usage->completion = pt >= 0 ? 0 : -1;
        usage->cached = usage->reasoning = -1;
    }
    return LM_OK;
}

/* ---- streaming ---------------------------------------------------------- */

static int emit(ol_inst *is, lm_emit *out, json_t *delta, const char *fin, lm_err *e)
{
    int rc;
    if (delta == NULL)
        return oom(e);
    rc = is->h->emit_delta(out, 0, delta, fin);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot emit stream chunk");
    return LM_OK;
}

static int ol_parse_event(void *ist, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    ol_inst *is = ist;
    ol_req *rs = c->rstate;
    json_error_t jerr;
    json_t *d, *msg, *t, *tc;
    size_t i;
    int rc = LM_OK;

    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "no request state");
    if (ev->data.n == 0)
        return LM_OK;
    d = json_loadb(ev->data.p, ev->data.n, 0, &jerr);
    if (!json_is_object(d)) {
        json_decref(d);
        return bad_upstream(e, "stream line is not a JSON object");
    }
    if (json_object_get(d, "error") != NULL) {
        json_t *err = json_object_get(d, "error");
        const char *m = json_string_value(err);
        if (m == NULL)
            m = json_string_value(json_object_get(err, "message"));
        map_status(500, m ? m : "Ollama stream error", e);
        json_decref(d);
        return LM_EUPSTREAM;
    }
    msg = json_object_get(d, "message");
    if (!rs->started) {
        rs->started = 1;
        rc = emit(is, out, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, e);
    }
    t = json_object_get(msg, "thinking");
    if (rc == LM_OK && json_string_length(t) > 0)
        rc = emit(is, out, json_pack("{s:O}", "reasoning_content", t), NULL, e);
    t = json_object_get(msg, "content");
    if (rc == LM_OK && json_string_length(t) > 0)
        rc = emit(is, out, json_pack("{s:O}", "content", t), NULL, e);
    if (rc == LM_OK) {
        json_array_foreach (json_object_get(msg, "tool_calls"), i, tc) {
            json_t *call = tool_call(rs, tc, rs->ntools);
            if (call == NULL) {
                rc = bad_upstream(e, "tool call without a function name");
                break;
            }
            rs->ntools++;
            rc = emit(is, out, json_pack("{s:[o]}", "tool_calls", call), NULL, e);
            if (rc != LM_OK)
                break;
        }
    }
    if (rc == LM_OK && json_is_true(json_object_get(d, "done"))) {
        lm_usage u;
        read_usage(d, &u);
        if (is->h->emit_usage(out, &u) < 0)
            rc = lm_err_set(e, LM_ERR, 500, "api_error", NULL, "cannot record usage");
        if (rc == LM_OK && !rs->finished) {
            rs->finished = 1;
            rc = emit(
                is, out, json_object(),
                map_done(json_string_value(json_object_get(d, "done_reason")), rs->ntools > 0), e);
        }
        if (rc == LM_OK)
            rc = LM_DONE;
    }
    json_decref(d);
    return rc;
}

/* ---- the table ---------------------------------------------------------- */

static const lm_provider ol_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "ollama",
    .version = "1.0.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS | LM_CAP_VISION,
    .framing = LM_FRAME_NDJSON,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = ol_cfg_keys,
    .init = ol_init,
    .fini = ol_fini,
    .list_models = NULL,
    .build_request = ol_build_request,
    .parse_response = ol_parse_response,
    .parse_event = ol_parse_event,
    .map_error = ol_map_error,
    .req_close = ol_req_close,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &ol_provider;
}
