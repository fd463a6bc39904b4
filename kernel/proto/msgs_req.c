/* msgs_req.c - an Anthropic Messages request -> the canonical (OpenAI
 * chat) request every channel is served from (msgs.h). Pure; the
 * request's worker. What has no canonical equivalent is dropped and said
 * in docs/messages.md (thinking, cache_control, citations). */
#include "proto/msgs.h"

#include "proto/reqcheck.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A 400 in the client's terms, naming the field. Returns NULL/-1 via the
 * callers' tail calls. */
static int bad(lm_err *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(lm_err *e, const char *field, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    lm_err_set(e, -1, 400, "invalid_request_error", "invalid_value", "%s: %s", field, msg);
    return -1;
}

static int is_type(const json_t *block, const char *t)
{
    const char *s = json_string_value(json_object_get(block, "type"));
    return s && strcmp(s, t) == 0;
}

/* The text of a text block, or NULL (e filled) when it is not one. */
static const char *text_of(const json_t *b, const char *field, lm_err *e)
{
    const char *t = json_string_value(json_object_get(b, "text"));
    if (!is_type(b, "text") || t == NULL) {
        bad(e, field, "expected a text block with a string 'text'");
        return NULL;
    }
    return t;
}

/* system: a string, or text blocks joined by blank lines. */
static int add_system(json_t *msgs, const json_t *sys, lm_err *e)
{
    if (sys == NULL || json_is_null(sys))
        return 0;
    if (json_is_string(sys))
        return json_array_append_new(msgs,
                                     json_pack("{s:s,s:O}", "role", "system", "content", sys));
    if (!json_is_array(sys))
        return bad(e, "system", "must be a string or an array of text blocks");
    lm_buf_t b;
    memset(&b, 0, sizeof(b));
    size_t i;
    json_t *blk;
    json_array_foreach (sys, i, blk) {
        char f[48];
        snprintf(f, sizeof(f), "system.%zu", i);
        const char *t = text_of(blk, f, e);
        if (t == NULL) {
            lm_buf_free(&b);
            return -1;
        }
        if (b.len)
            lm_buf_adds(&b, "\n\n");
        lm_buf_adds(&b, t);
    }
    int rc = json_array_append_new(
        msgs, json_pack("{s:s,s:s%}", "role", "system", "content", lm_buf_cstr(&b), b.len));
    lm_buf_free(&b);
    return rc;
}

/* An image block -> an OpenAI image_url part. */
static json_t *image_part(const json_t *b, const char *field, lm_err *e)
{
    const json_t *src = json_object_get(b, "source");
    char f[128];
    snprintf(f, sizeof(f), "%.100s.source", field);
    if (is_type(src, "base64")) {
        const char *mt = json_string_value(json_object_get(src, "media_type"));
        const char *data = json_string_value(json_object_get(src, "data"));
        if (mt == NULL || data == NULL) {
            bad(e, f, "a base64 source needs string 'media_type' and 'data'");
            return NULL;
        }
        lm_buf_t u;
        memset(&u, 0, sizeof(u));
        lm_buf_adds(&u, "data:");
        lm_buf_adds(&u, mt);
        lm_buf_adds(&u, ";base64,");
        lm_buf_adds(&u, data);
        json_t *p = json_pack("{s:s,s:{s:s%}}", "type", "image_url", "image_url", "url",
                              lm_buf_cstr(&u), u.len);
        lm_buf_free(&u);
        return p;
    }
    if (is_type(src, "url")) {
        const char *url = json_string_value(json_object_get(src, "url"));
        if (url == NULL) {
            bad(e, f, "a url source needs a string 'url'");
            return NULL;
        }
        return json_pack("{s:s,s:{s:s}}", "type", "image_url", "image_url", "url", url);
    }
    bad(e, f, "image sources must be of type base64 or url");
    return NULL;
}

/* A document block: text documents (plain text, or content of text
 * blocks) become text; a PDF or any other binary document has no
 * canonical form, so no channel behind the canonical request can take it. */
static json_t *document_part(const json_t *b, const char *field, lm_err *e)
{
    const json_t *src = json_object_get(b, "source");
    char f[128];
    snprintf(f, sizeof(f), "%.100s.source", field);
    if (is_type(src, "text")) {
        const char *d = json_string_value(json_object_get(src, "data"));
        if (d == NULL) {
            bad(e, f, "a text source needs a string 'data'");
            return NULL;
        }
        return json_pack("{s:s,s:s}", "type", "text", "text", d);
    }
    if (is_type(src, "content") && json_is_array(json_object_get(src, "content"))) {
        lm_buf_t t;
        memset(&t, 0, sizeof(t));
        size_t i;
        json_t *x;
        json_array_foreach (json_object_get(src, "content"), i, x) {
            const char *s = json_string_value(json_object_get(x, "text"));
            if (!is_type(x, "text") || s == NULL)
                continue; /* images inside a document: not representable, dropped */
            if (t.len)
                lm_buf_adds(&t, "\n\n");
            lm_buf_adds(&t, s);
        }
        json_t *p = json_pack("{s:s,s:s%}", "type", "text", "text", lm_buf_cstr(&t), t.len);
        lm_buf_free(&t);
        return p;
    }
    bad(e, f,
        "only text documents (source type text or content) are supported; PDF and other "
        "binary documents cannot be sent through this gateway");
    return NULL;
}

/* tool_result content (a string or blocks) as the tool message's text. */
static json_t *tool_result_text(const json_t *c, const char *field, lm_err *e)
{
    if (c == NULL || json_is_null(c))
        return json_string("");
    if (json_is_string(c))
        return json_incref((json_t *)c);
    if (!json_is_array(c)) {
        bad(e, field, "must be a string or an array of blocks");
        return NULL;
    }
    lm_buf_t t;
    memset(&t, 0, sizeof(t));
    size_t i;
    json_t *x;
    json_array_foreach (c, i, x) {
        const char *s = json_string_value(json_object_get(x, "text"));
        if (is_type(x, "text") && s) {
            if (t.len)
                lm_buf_adds(&t, "\n\n");
            lm_buf_adds(&t, s);
        } else if (is_type(x, "document")) {
            json_t *d = document_part(x, field, e);
            if (d == NULL) {
                lm_buf_free(&t);
                return NULL;
            }
            if (t.len)
                lm_buf_adds(&t, "\n\n");
            lm_buf_adds(&t, json_string_value(json_object_get(d, "text")));
            json_decref(d);
        } else {
            lm_buf_free(&t);
            bad(e, field, "tool results may hold text and text documents only");
            return NULL;
        }
    }
    json_t *s = json_stringn(lm_buf_cstr(&t), t.len);
    lm_buf_free(&t);
    return s;
}

/* Parts that are all text collapse to one string: every channel takes a
 * string, not every one takes parts. */
static json_t *collapse(json_t *parts)
{
    size_t i;
    json_t *p;
    json_array_foreach (parts, i, p)
        if (!is_type(p, "text"))
            return parts;
    lm_buf_t t;
    memset(&t, 0, sizeof(t));
    json_array_foreach (parts, i, p) {
        if (i)
            lm_buf_adds(&t, "\n\n");
        lm_buf_adds(&t, json_string_value(json_object_get(p, "text")));
    }
    json_t *s = json_stringn(lm_buf_cstr(&t), t.len);
    lm_buf_free(&t);
    json_decref(parts);
    return s;
}

/* A user turn: tool results become tool messages (first, as they answer
 * the previous assistant turn), the rest one user message. */
static int add_user(json_t *msgs, const json_t *content, size_t mi, lm_err *e)
{
    char f[96];
    if (json_is_string(content))
        return json_array_append_new(msgs,
                                     json_pack("{s:s,s:O}", "role", "user", "content", content));
    snprintf(f, sizeof(f), "messages.%zu.content", mi);
    if (!json_is_array(content))
        return bad(e, f, "must be a string or an array of content blocks");
    json_t *parts = json_array();
    size_t i;
    json_t *b;
    json_array_foreach (content, i, b) {
        snprintf(f, sizeof(f), "messages.%zu.content.%zu", mi, i);
        json_t *p = NULL;
        if (is_type(b, "text")) {
            const char *t = text_of(b, f, e);
            p = t ? json_pack("{s:s,s:s}", "type", "text", "text", t) : NULL;
        } else if (is_type(b, "image")) {
            p = image_part(b, f, e);
        } else if (is_type(b, "document")) {
            p = document_part(b, f, e);
        } else if (is_type(b, "tool_result")) {
            const char *id = json_string_value(json_object_get(b, "tool_use_id"));
            char cf[128];
            snprintf(cf, sizeof(cf), "%.100s.content", f);
            json_t *txt = id ? tool_result_text(json_object_get(b, "content"), cf, e) : NULL;
            if (id == NULL)
                bad(e, f, "a tool_result needs a string 'tool_use_id'");
            if (txt == NULL) {
                json_decref(parts);
                return -1;
            }
            json_array_append_new(msgs, json_pack("{s:s,s:s,s:o}", "role", "tool", "tool_call_id",
                                                  id, "content", txt));
            continue;
        } else if (is_type(b, "thinking") || is_type(b, "redacted_thinking")) {
            continue;
        } else {
            bad(e, f, "unsupported content block type for a user message");
        }
        if (p == NULL) {
            json_decref(parts);
            return -1;
        }
        json_array_append_new(parts, p);
    }
    if (json_array_size(parts) == 0) {
        json_decref(parts);
        return 0; /* only tool results */
    }
    return json_array_append_new(
        msgs, json_pack("{s:s,s:o}", "role", "user", "content", collapse(parts)));
}

/* An assistant turn: text joined, tool_use -> tool_calls (arguments as
 * JSON text), thinking dropped (no canonical place for it). */
static int add_assistant(json_t *msgs, const json_t *content, size_t mi, lm_err *e)
{
    char f[96];
    if (json_is_string(content))
        return json_array_append_new(
            msgs, json_pack("{s:s,s:O}", "role", "assistant", "content", content));
    snprintf(f, sizeof(f), "messages.%zu.content", mi);
    if (!json_is_array(content))
        return bad(e, f, "must be a string or an array of content blocks");
    lm_buf_t t;
    memset(&t, 0, sizeof(t));
    json_t *calls = json_array();
    size_t i;
    json_t *b;
    int rc = 0;
    json_array_foreach (content, i, b) {
        snprintf(f, sizeof(f), "messages.%zu.content.%zu", mi, i);
        if (is_type(b, "text")) {
            const char *s = text_of(b, f, e);
            if (s == NULL) {
                rc = -1;
                break;
            }
            lm_buf_adds(&t, s);
        } else if (is_type(b, "tool_use")) {
            const char *id = json_string_value(json_object_get(b, "id"));
            const char *name = json_string_value(json_object_get(b, "name"));
            json_t *in = json_object_get(b, "input");
            if (id == NULL || name == NULL || !json_is_object(in)) {
                rc = bad(e, f, "a tool_use needs string 'id' and 'name' and an object 'input'");
                break;
            }
            char *args = json_dumps(in, JSON_COMPACT);
            json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id, "type",
                                                   "function", "function", "name", name,
                                                   "arguments", args ? args : "{}"));
            free(args);
        } else if (!is_type(b, "thinking") && !is_type(b, "redacted_thinking")) {
            rc = bad(e, f, "unsupported content block type for an assistant message");
            break;
        }
    }
    if (rc == 0) {
        json_t *m = json_pack("{s:s}", "role", "assistant");
        if (t.len || json_array_size(calls) == 0)
            json_object_set_new(m, "content", json_stringn(lm_buf_cstr(&t), t.len));
        else
            json_object_set_new(m, "content", json_null());
        if (json_array_size(calls))
            json_object_set(m, "tool_calls", calls);
        rc = json_array_append_new(msgs, m);
    }
    json_decref(calls);
    lm_buf_free(&t);
    return rc;
}

static int add_messages(json_t *out, const json_t *in, lm_err *e)
{
    const json_t *ms = json_object_get(in, "messages");
    if (!json_is_array(ms) || json_array_size(ms) == 0)
        return bad(e, "messages", "is required and must be a non-empty array");
    json_t *msgs = json_array();
    json_object_set_new(out, "messages", msgs);
    if (add_system(msgs, json_object_get(in, "system"), e) < 0)
        return -1;
    size_t i;
    json_t *m;
    json_array_foreach (ms, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *c = json_object_get(m, "content");
        char f[48];
        snprintf(f, sizeof(f), "messages.%zu.role", i);
        if (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0))
            return bad(e, f, "must be \"user\" or \"assistant\"");
        snprintf(f, sizeof(f), "messages.%zu.content", i);
        if (c == NULL)
            return bad(e, f, "is required");
        if ((strcmp(role, "user") == 0 ? add_user(msgs, c, i, e) : add_assistant(msgs, c, i, e)) <
            0)
            return -1;
    }
    return 0;
}

/* tools: custom tools -> functions; server tools have no canonical form. */
static int add_tools(json_t *out, const json_t *in, lm_err *e)
{
    const json_t *tools = json_object_get(in, "tools");
    if (tools == NULL || json_is_null(tools))
        return 0;
    if (!json_is_array(tools))
        return bad(e, "tools", "must be an array");
    json_t *fns = json_array();
    json_object_set_new(out, "tools", fns);
    size_t i;
    json_t *t;
    json_array_foreach (tools, i, t) {
        char f[48];
        snprintf(f, sizeof(f), "tools.%zu", i);
        const char *name = json_string_value(json_object_get(t, "name"));
        const char *type = json_string_value(json_object_get(t, "type"));
        json_t *schema = json_object_get(t, "input_schema");
        if (type && strcmp(type, "custom") != 0)
            return bad(e, f, "server tools (type %s) are not supported; use custom tools", type);
        if (name == NULL || !json_is_object(schema))
            return bad(e, f, "a tool needs a string 'name' and an object 'input_schema'");
        json_t *fn = json_pack("{s:s}", "name", name);
        json_t *d = json_object_get(t, "description");
        if (json_is_string(d))
            json_object_set(fn, "description", d);
        json_object_set(fn, "parameters", schema);
        json_array_append_new(fns, json_pack("{s:s,s:o}", "type", "function", "function", fn));
    }
    return 0;
}

static int add_tool_choice(json_t *out, const json_t *in, lm_err *e)
{
    const json_t *tc = json_object_get(in, "tool_choice");
    if (tc == NULL || json_is_null(tc))
        return 0;
    json_t *v = NULL;
    if (is_type(tc, "auto"))
        v = json_string("auto");
    else if (is_type(tc, "any"))
        v = json_string("required");
    else if (is_type(tc, "none"))
        v = json_string("none");
    else if (is_type(tc, "tool") && json_is_string(json_object_get(tc, "name")))
        v = json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name",
                      json_object_get(tc, "name"));
    else
        return bad(e, "tool_choice", "must be {type: auto|any|none} or {type: tool, name}");
    json_object_set_new(out, "tool_choice", v);
    if (json_is_true(json_object_get(tc, "disable_parallel_tool_use")))
        json_object_set_new(out, "parallel_tool_calls", json_false());
    return 0;
}

/* Sampling parameters keep their names; the kernel's request checks and
 * the channel's ranges apply to them as for chat. */
static int add_params(json_t *out, const json_t *in, int need_max, lm_err *e)
{
    static const char *const same[] = {"temperature", "top_p", "top_k", NULL};
    const json_t *mt = json_object_get(in, "max_tokens");
    if (need_max && (!json_is_integer(mt) || json_integer_value(mt) < 1))
        return bad(e, "max_tokens", "is required and must be a positive integer");
    if (mt)
        json_object_set(out, "max_tokens", (json_t *)mt);
    for (const char *const *k = same; *k; k++) {
        json_t *v = json_object_get(in, *k);
        if (v && !json_is_null(v)) {
            if (!json_is_number(v))
                return bad(e, *k, "must be a number");
            json_object_set(out, *k, v);
        }
    }
    const json_t *ss = json_object_get(in, "stop_sequences");
    if (ss && !json_is_null(ss)) {
        size_t i;
        json_t *s;
        if (!json_is_array(ss))
            return bad(e, "stop_sequences", "must be an array of strings");
        json_array_foreach (ss, i, s)
            if (!json_is_string(s))
                return bad(e, "stop_sequences", "must be an array of strings");
        if (json_array_size(ss))
            json_object_set(out, "stop", (json_t *)ss);
    }
    const json_t *user = json_object_get(json_object_get(in, "metadata"), "user_id");
    if (json_is_string(user))
        json_object_set(out, "user", (json_t *)user);
    const json_t *st = json_object_get(in, "stream");
    if (st && !json_is_boolean(st))
        return bad(e, "stream", "must be a boolean");
    if (json_is_true(st)) {
        json_object_set_new(out, "stream", json_true());
        /* message_delta carries usage: always ask for it */
        json_object_set_new(out, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    return 0;
}

/* The translation shared by the request and count_tokens. */
static json_t *translate(const char *body, size_t n, int need_max, lm_err *e)
{
    json_t *in = lm_reqcheck_parse(body, n, e); /* size, depth and syntax as for chat */
    if (in == NULL)
        return NULL;
    json_t *out = json_object();
    const json_t *model = json_object_get(in, "model");
    int rc = 0;
    if (!json_is_string(model) || json_string_length(model) == 0)
        rc = bad(e, "model", "is required and must be a string");
    else
        json_object_set(out, "model", (json_t *)model);
    if (rc == 0)
        rc = add_messages(out, in, e);
    if (rc == 0)
        rc = add_tools(out, in, e);
    if (rc == 0)
        rc = add_tool_choice(out, in, e);
    if (rc == 0)
        rc = add_params(out, in, need_max, e);
    json_decref(in);
    if (rc < 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

json_t *lm_msgs_request(const char *body, size_t n, lm_err *e)
{
    return translate(body, n, 1, e);
}

/* Bytes of every string in v: the text a tokenizer would see. */
static size_t text_bytes(const json_t *v)
{
    size_t n = 0, i;
    const char *k;
    json_t *x;
    if (json_is_string(v))
        return json_string_length(v);
    if (json_is_array(v))
        json_array_foreach (v, i, x)
            n += text_bytes(x);
    if (json_is_object(v))
        json_object_foreach ((json_t *)v, k, x)
            n += strcmp(k, "url") == 0 ? 1024 * 4 : text_bytes(x); /* an image: ~1k tokens */
    return n;
}

int lm_msgs_count_tokens(const char *body, size_t n, int64_t *tokens, char **model, lm_err *e)
{
    json_t *c = translate(body, n, 0, e);
    if (c == NULL)
        return -1;
    *model = strdup(json_string_value(json_object_get(c, "model")));
    size_t bytes =
        text_bytes(json_object_get(c, "messages")) + text_bytes(json_object_get(c, "tools"));
    *tokens =
        (int64_t)(bytes + 3) / 4 + 4 * (int64_t)json_array_size(json_object_get(c, "messages"));
    json_decref(c);
    return 0;
}
