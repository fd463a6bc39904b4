/* completions.c - /v1/completions through the chat path (completions.h).
 * Pure; every returned value is the caller's. */
#include "proto/completions.h"

#include "core/errors.h"
#include "proto/reqcheck.h"

#include <stdlib.h>
#include <string.h>

static const char *const kept[] = {
    "model",      "max_tokens",       "temperature",       "top_p", "stop",
    "n",          "presence_penalty", "frequency_penalty", "seed",  "user",
    "logit_bias", "stream",           "stream_options",    NULL};

static json_t *refuse(lm_err *e, const char *field, const char *why)
{
    lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", "invalid_value", "'%s' %s", field, why);
    return NULL;
}

/* Options the chat path cannot honour: set to anything but their default. */
static json_t *unsupported(const json_t *req, lm_err *e)
{
    const json_t *v;
    if (json_is_true(json_object_get(req, "echo")))
        return refuse(e, "echo", "is not supported (completions are served through chat)");
    v = json_object_get(req, "best_of");
    if (v && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
        return refuse(e, "best_of", "is not supported (completions are served through chat)");
    v = json_object_get(req, "suffix");
    if (v && !json_is_null(v))
        return refuse(e, "suffix", "is not supported (completions are served through chat)");
    v = json_object_get(req, "logprobs");
    if (v && !json_is_null(v))
        return refuse(e, "logprobs", "is not supported (completions are served through chat)");
    return NULL;
}

json_t *lm_cmpl_request(const char *body, size_t n, lm_err *e)
{
    json_t *req = lm_reqcheck_parse(body, n, e), *out = NULL;
    if (req == NULL)
        return NULL;
    const json_t *p = json_object_get(req, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
        p = json_array_get(p, 0);
    memset(e, 0, sizeof(*e));
    if (!json_is_string(p))
        refuse(e, "prompt", "must be a string or an array of one string (one prompt per request)");
    else
        unsupported(req, e);
    if (e->http_status == 0 && (out = json_object()) != NULL) {
        for (size_t i = 0; kept[i]; i++) {
            json_t *v = json_object_get(req, kept[i]);
            if (v && !json_is_null(v))
                json_object_set(out, kept[i], v);
        }
        json_object_set_new(out, "messages",
                            json_pack("[{s:s,s:O}]", "role", "user", "content", (json_t *)p));
    } else if (e->http_status == 0) {
        lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    }
    json_decref(req);
    return out;
}

/* One prompt of a stand-in: a string as it is, anything else (tokens) as
 * a placeholder. */
static const char *prompt_text(const json_t *p)
{
    return json_is_string(p) ? json_string_value(p) : "[tokens]";
}

json_t *lm_cmpl_request_native(const char *body, size_t n, lm_err *e)
{
    static const char *const native[] = {"echo", "suffix", "logprobs", "best_of"};
    json_t *in = json_loadb(body, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(in)) {
        json_decref(in);
        return lm_cmpl_request(body, n, e);
    }
    for (size_t i = 0; i < sizeof(native) / sizeof(native[0]); i++)
        json_object_del(in, native[i]);
    json_t *p = json_object_get(in, "prompt");
    if (json_is_array(p) && json_array_size(p) > 0) {
        lm_buf_t b = {0};
        size_t i;
        json_t *it;
        int tokens = json_is_integer(json_array_get(p, 0)); /* one prompt of tokens */
        json_array_foreach (p, i, it) {
            if (tokens)
                break;
            if ((i > 0 && lm_buf_adds(&b, "\n") < 0) || lm_buf_adds(&b, prompt_text(it)) < 0)
                break;
        }
        json_object_set_new(in, "prompt", json_string(tokens ? "[tokens]" : lm_buf_cstr(&b)));
        lm_buf_free(&b);
    }
    char *text = json_dumps(in, JSON_COMPACT);
    json_decref(in);
    if (text == NULL)
        return lm_cmpl_request(body, n, e);
    json_t *canon = lm_cmpl_request(text, strlen(text), e);
    free(text);
    return canon;
}

/* A text_completion choice from a chat choice (its message or delta). */
static json_t *choice(const json_t *c, const char *part)
{
    const json_t *t = json_object_get(json_object_get(c, part), "content");
    const json_t *fr = json_object_get(c, "finish_reason");
    return json_pack("{s:s,s:I,s:n,s:O}", "text", json_is_string(t) ? json_string_value(t) : "",
                     "index", (json_int_t)json_integer_value(json_object_get(c, "index")),
                     "logprobs", "finish_reason", fr ? (json_t *)fr : json_null());
}

/* The text_completion envelope of a chat object (new), choices empty. */
static json_t *envelope(const json_t *j)
{
    const char *id = json_string_value(json_object_get(j, "id"));
    const char *model = json_string_value(json_object_get(j, "model"));
    return json_pack("{s:s,s:s,s:I,s:s,s:[]}", "id", id ? id : "cmpl", "object", "text_completion",
                     "created", (json_int_t)json_integer_value(json_object_get(j, "created")),
                     "model", model ? model : "", "choices");
}

char *lm_cmpl_answer(const char *json, size_t n, const lm_usage *u, size_t *out_len)
{
    json_t *j = json_loadb(json, n, 0, NULL), *c;
    json_t *o = j ? envelope(j) : NULL;
    size_t i;
    char *s = NULL;
    if (o == NULL)
        goto out;
    json_array_foreach (json_object_get(j, "choices"), i, c)
        json_array_append_new(json_object_get(o, "choices"), choice(c, "message"));
    json_object_set_new(o, "usage", lm_usage_to_json(u));
    s = json_dumps(o, JSON_COMPACT);
    *out_len = s ? strlen(s) : 0;
out:
    json_decref(j);
    json_decref(o);
    return s;
}

int lm_cmpl_stream_chunk(const char *json, size_t n, lm_buf_t *out)
{
    json_t *j = json_loadb(json, n, 0, NULL), *c;
    json_t *o = j ? envelope(j) : NULL;
    size_t i, kept_n = 0;
    int rc = -1;
    if (o == NULL)
        goto out;
    json_array_foreach (json_object_get(j, "choices"), i, c) {
        const json_t *t = json_object_get(json_object_get(c, "delta"), "content");
        const json_t *fr = json_object_get(c, "finish_reason");
        if ((json_is_string(t) && json_string_length(t)) || json_is_string(fr)) {
            json_array_append_new(json_object_get(o, "choices"), choice(c, "delta"));
            kept_n++;
        }
    }
    rc = 0;
    if (kept_n > 0) { /* a role-only or usage-only chunk has nothing to say here */
        char *s = json_dumps(o, JSON_COMPACT);
        rc = s && lm_buf_adds(out, "data: ") == 0 && lm_buf_adds(out, s) == 0 &&
                     lm_buf_adds(out, "\n\n") == 0
                 ? 0
                 : -1;
        free(s);
    }
out:
    json_decref(j);
    json_decref(o);
    return rc;
}

int lm_cmpl_usage_chunk(const char *id, int64_t created, const char *model, const lm_usage *u,
                        lm_buf_t *out)
{
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", id ? id : "cmpl", "object",
                          "text_completion", "created", (json_int_t)created, "model",
                          model ? model : "", "choices", "usage", lm_usage_to_json(u));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    int rc = s && lm_buf_adds(out, "data: ") == 0 && lm_buf_adds(out, s) == 0 &&
                     lm_buf_adds(out, "\n\n") == 0
                 ? 0
                 : -1;
    free(s);
    json_decref(o);
    return rc;
}
