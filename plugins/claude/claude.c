/*
 * claude.c - Anthropic Messages API provider plugin.
 *
 * Translates the canonical OpenAI chat request into POST {base}/v1/messages
 * and the Messages API answer (JSON or SSE) back into OpenAI shapes.
 * Pure translator: no I/O, no mutable globals. See sdk/notes/claude.md.
 */
#include "longmen.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- instance and request state ---------------------------------------- */

typedef struct cl_inst {
    const lm_host_api *h;
    void *ictx;
    lm_str base_url; /* no trailing '/' */
    lm_str api_key;
    lm_str version;
    lm_str beta; /* n == 0: not sent */
    int64_t max_tokens_default;
} cl_inst;

enum { BK_OTHER = 0, BK_TEXT, BK_TOOL, BK_THINK };

typedef struct cl_block {
    int kind;
    int tool;     /* OpenAI tool_calls index (BK_TOOL) */
    int has_args; /* an argument fragment was emitted (BK_TOOL) */
} cl_block;

typedef struct cl_req {
    int started;  /* role chunk emitted */
    int finished; /* finish_reason emitted */
    int ntools;
    cl_block *blocks;
    size_t nblocks;
    int64_t in, cache_create, cache_read, out; /* -1 = unknown */
} cl_req;

#define CL_MAX_BLOCKS 4096

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

static void log_drop(const cl_inst *is, const char *key)
{
    if (LM_HOST_HAS(is->h, log))
        is->h->log(is->ictx, LM_LOG_DEBUG, "anthropic: dropping unsupported parameter '%s'", key);
}

/* Steal-safe object set: returns -1 when v is NULL or the set failed. */
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

/* Compact JSON text of v as a new JSON string (arguments). */
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

/* Growable text buffer for joined system prompts. */
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

static const lm_cfg_key cl_cfg_keys[] = {
    {"base_url", LM_CFG_STR, 0, "https://api.anthropic.com", "Anthropic API base URL, without /v1"},
    {"api_key", LM_CFG_STR, 1, NULL, "Anthropic API key (sent as x-api-key)"},
    {"anthropic_version", LM_CFG_STR, 0, "2023-06-01", "anthropic-version header value"},
    {"anthropic_beta", LM_CFG_STR, 0, NULL, "optional anthropic-beta header value"},
    {"max_tokens_default", LM_CFG_INT, 0, "4096",
     "max_tokens sent when the client gives none (Anthropic requires it)"},
    {NULL, 0, 0, NULL, NULL}};

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

static int cl_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    cl_inst *is;
    lm_str s;
    int64_t v;

    if (h == NULL || !LM_HOST_HAS(h, cfg_str) || !LM_HOST_HAS(h, alloc))
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "host table too old");
    is = h->alloc(sizeof(*is));
    if (is == NULL)
        return oom(e);
    memset(is, 0, sizeof(*is));
    is->h = h;
    is->ictx = ictx;

    if (h->cfg_str(ictx, "base_url", &s) != LM_OK || s.n == 0)
        s = LM_STR("https://api.anthropic.com");
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

    if (h->cfg_str(ictx, "anthropic_version", &s) != LM_OK || s.n == 0)
        s = LM_STR("2023-06-01");
    if (!header_safe(s)) {
        h->free(is);
        return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                          "anthropic_version contains control characters");
    }
    is->version = s;

    if (h->cfg_str(ictx, "anthropic_beta", &s) == LM_OK && s.n > 0) {
        if (!header_safe(s)) {
            h->free(is);
            return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                              "anthropic_beta contains control characters");
        }
        is->beta = s;
    }

    is->max_tokens_default = 4096;
    if (LM_HOST_HAS(h, cfg_int) && h->cfg_int(ictx, "max_tokens_default", &v) == LM_OK) {
        if (v <= 0) {
            h->free(is);
            return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL,
                              "max_tokens_default must be positive");
        }
        is->max_tokens_default = v;
    }
    *istate = is;
    return LM_OK;
}

static void cl_fini(void *ist)
{
    cl_inst *is = ist;
    if (is != NULL)
        is->h->free(is);
}

static int cl_list_models(void *ist, json_t **out, lm_err *e)
{
    (void)ist;
    *out = json_pack("[sssss]", "claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5",
                     "claude-sonnet-4-0", "claude-3-5-haiku-latest");
    return *out ? LM_OK : oom(e);
}

static void cl_req_close(void *ist, lm_call *c)
{
    cl_inst *is = ist;
    cl_req *rs = c->rstate;
    if (rs == NULL)
        return;
    if (rs->blocks != NULL)
        is->h->free(rs->blocks);
    is->h->free(rs);
    c->rstate = NULL;
}

/* ---- request translation ------------------------------------------------ */

/* Append text of `content` (string or text parts) to b; others ignored. */
static int text_of(const json_t *content, sbuf *b, lm_err *e)
{
    size_t i;
    json_t *part;
    if (json_is_string(content)) {
        sb_add(b, json_string_value(content), json_string_length(content));
        return LM_OK;
    }
    if (json_is_null(content) || content == NULL)
        return LM_OK;
    if (!json_is_array(content))
        return bad_req(e, "system message content must be a string or an array", NULL);
    json_array_foreach (content, i, part) {
        json_t *t = json_object_get(part, "text");
        if (!streq(json_string_value(json_object_get(part, "type")), "text") || !json_is_string(t))
            return bad_req(e, "system message parts must be text parts", NULL);
        sb_add(b, json_string_value(t), json_string_length(t));
    }
    return LM_OK;
}

/* data:<media>;base64,<data> or http(s) URL -> Anthropic image block. */
static int image_block(const json_t *part, json_t **out, lm_err *e)
{
    json_t *iu = json_object_get(part, "image_url");
    const char *url = json_string_value(json_is_object(iu) ? json_object_get(iu, "url") : iu);
    *out = NULL;
    if (url == NULL)
        return bad_req(e, "image_url part needs image_url.url", NULL);
    if (strncmp(url, "data:", 5) == 0) {
        const char *semi = strchr(url + 5, ';');
        if (semi == NULL || semi == url + 5 || strncmp(semi, ";base64,", 8) != 0)
            return bad_req(e, "image data URL must be data:<media type>;base64,<data>", NULL);
        *out = json_pack("{s:s,s:{s:s,s:s%,s:s}}", "type", "image", "source", "type", "base64",
                         "media_type", url + 5, (size_t)(semi - (url + 5)), "data", semi + 8);
        return *out ? LM_OK : oom(e);
    }
    if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0) {
        *out = json_pack("{s:s,s:{s:s,s:s}}", "type", "image", "source", "type", "url", "url", url);
        return *out ? LM_OK : oom(e);
    }
    return bad_req(e, "unsupported image URL scheme (use data: or https:)", NULL);
}

/* User/tool content (string or parts) -> array of Anthropic blocks. */
static int content_blocks(const json_t *content, json_t *blocks, lm_err *e)
{
    size_t i;
    json_t *part;
    if (content == NULL || json_is_null(content))
        return LM_OK;
    if (json_is_string(content)) {
        if (json_string_length(content) == 0)
            return LM_OK;
        return aadd(blocks, json_pack("{s:s,s:O}", "type", "text", "text", content)) ? oom(e)
                                                                                     : LM_OK;
    }
    if (!json_is_array(content))
        return bad_req(e, "message content must be a string, an array or null", NULL);
    json_array_foreach (content, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        if (streq(type, "text") || streq(type, "refusal")) {
            json_t *t = json_object_get(part, streq(type, "text") ? "text" : "refusal");
            if (!json_is_string(t))
                return bad_req(e, "text part needs a string 'text'", NULL);
            if (json_string_length(t) == 0)
                continue;
            if (aadd(blocks, json_pack("{s:s,s:O}", "type", "text", "text", t)))
                return oom(e);
        } else if (streq(type, "image_url")) {
            json_t *b;
            int rc = image_block(part, &b, e);
            if (rc != LM_OK)
                return rc;
            if (aadd(blocks, b))
                return oom(e);
        } else {
            return bad_req(e,
                           "unsupported content part type for Anthropic: ", type ? type : "(none)");
        }
    }
    return LM_OK;
}

/* Append blocks as a message of `role`, merging with the previous message
 * when it has the same role. Steals blocks. */
static int push_blocks(json_t *msgs, const char *role, json_t *blocks, lm_err *e)
{
    size_t n = json_array_size(msgs);
    json_t *last = n ? json_array_get(msgs, n - 1) : NULL;
    if (json_array_size(blocks) == 0) {
        json_decref(blocks);
        return LM_OK;
    }
    if (last && streq(json_string_value(json_object_get(last, "role")), role)) {
        int rc = json_array_extend(json_object_get(last, "content"), blocks);
        json_decref(blocks);
        return rc ? oom(e) : LM_OK;
    }
    if (aadd(msgs, json_pack("{s:s,s:o}", "role", role, "content", blocks)))
        return oom(e);
    return LM_OK;
}

/* A message whose content is one text block is sent as a plain string. */
static void collapse_single_text(json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach (msgs, i, m) {
        json_t *c = json_object_get(m, "content");
        json_t *b = json_array_get(c, 0);
        if (json_array_size(c) == 1 && json_object_size(b) == 2 &&
            streq(json_string_value(json_object_get(b, "type")), "text"))
            json_object_set(m, "content", json_object_get(b, "text"));
    }
}

static int tool_use_blocks(const json_t *calls, json_t *blocks, lm_err *e)
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
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *args = json_object_get(fn, "arguments");
        json_t *input;
        json_error_t jerr;
        if (id == NULL || name == NULL)
            return bad_req(e, "tool_calls entries need id and function.name", NULL);
        if (args == NULL || json_is_null(args) ||
            (json_is_string(args) && json_string_length(args) == 0)) {
            input = json_object();
        } else if (json_is_object(args)) {
            input = json_deep_copy(args);
        } else if (json_is_string(args)) {
            input = json_loadb(json_string_value(args), json_string_length(args), 0, &jerr);
            if (input == NULL || !json_is_object(input)) {
                json_decref(input);
                return bad_req(e, "tool_calls function.arguments must be a JSON object: ", name);
            }
        } else {
            return bad_req(e, "tool_calls function.arguments must be a string", NULL);
        }
        if (aadd(blocks, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id, "name", name,
                                   "input", input)))
            return oom(e);
    }
    return LM_OK;
}

static int convert_messages(cl_inst *is, const json_t *in, json_t *msgs, json_t **system, lm_err *e)
{
    size_t i;
    json_t *m;
    sbuf sys = {NULL, 0, 0, 0};
    int nsys = 0, rc = LM_OK;

    *system = NULL;
    if (!json_is_array(in) || json_array_size(in) == 0)
        return bad_req(e, "messages must be a non-empty array", NULL);
    json_array_foreach (in, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        json_t *blocks;
        if (!json_is_object(m) || role == NULL) {
            rc = bad_req(e, "each message needs a string role", NULL);
            break;
        }
        if (json_object_get(m, "name") != NULL)
            log_drop(is, "messages[].name");
        if (streq(role, "system") || streq(role, "developer")) {
            if (nsys++ > 0)
                sb_add(&sys, "\n\n", 2);
            rc = text_of(content, &sys, e);
            if (rc != LM_OK)
                break;
            continue;
        }
        blocks = json_array();
        if (blocks == NULL) {
            rc = oom(e);
            break;
        }
        if (streq(role, "user")) {
            rc = content_blocks(content, blocks, e);
            if (rc == LM_OK)
                rc = push_blocks(msgs, "user", blocks, e);
            else
                json_decref(blocks);
        } else if (streq(role, "assistant")) {
            rc = content_blocks(content, blocks, e);
            if (rc == LM_OK)
                rc = tool_use_blocks(json_object_get(m, "tool_calls"), blocks, e);
            if (rc == LM_OK)
                rc = push_blocks(msgs, "assistant", blocks, e);
            else
                json_decref(blocks);
        } else if (streq(role, "tool")) {
            const char *id = json_string_value(json_object_get(m, "tool_call_id"));
            json_t *res;
            if (id == NULL) {
                json_decref(blocks);
                rc = bad_req(e, "tool message needs tool_call_id", NULL);
                break;
            }
            res = json_pack("{s:s,s:s}", "type", "tool_result", "tool_use_id", id);
            if (res == NULL) {
                json_decref(blocks);
                rc = oom(e);
                break;
            }
            if (json_is_string(content)) {
                json_object_set(res, "content", content);
            } else if (json_is_array(content)) {
                json_t *inner = json_array();
                rc = inner ? content_blocks(content, inner, e) : oom(e);
                if (rc == LM_OK)
                    json_object_set_new(res, "content", inner);
                else
                    json_decref(inner);
            }
            if (rc == LM_OK && aadd(blocks, res) == 0)
                rc = push_blocks(msgs, "user", blocks, e);
            else {
                if (rc == LM_OK) {
                    res = NULL;
                    rc = oom(e);
                }
                json_decref(res);
                json_decref(blocks);
            }
        } else {
            json_decref(blocks);
            rc = bad_req(e, "unsupported message role for Anthropic: ", role);
        }
        if (rc != LM_OK)
            break;
    }
    if (rc == LM_OK && sys.oom)
        rc = oom(e);
    if (rc == LM_OK && nsys > 0 && sys.n > 0) {
        *system = json_stringn(sys.p, sys.n);
        if (*system == NULL)
            rc = oom(e);
    }
    free(sys.p);
    if (rc == LM_OK && json_array_size(msgs) == 0)
        rc = bad_req(e, "messages must contain at least one user or assistant message", NULL);
    if (rc == LM_OK)
        collapse_single_text(msgs);
    return rc;
}

static int convert_tools(cl_inst *is, const json_t *tools, json_t *body, lm_err *e)
{
    size_t i;
    json_t *t, *out;
    if (tools == NULL || json_is_null(tools))
        return LM_OK;
    if (!json_is_array(tools))
        return bad_req(e, "tools must be an array", NULL);
    out = json_array();
    if (out == NULL)
        return oom(e);
    json_array_foreach (tools, i, t) {
        json_t *fn = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        json_t *desc = json_object_get(fn, "description");
        json_t *params = json_object_get(fn, "parameters");
        json_t *o;
        if (!streq(json_string_value(json_object_get(t, "type")), "function")) {
            log_drop(is, "tools[] of a non-function type");
            continue;
        }
        if (name == NULL) {
            json_decref(out);
            return bad_req(e, "tools[].function.name is required", NULL);
        }
        o = json_pack("{s:s}", "name", name);
        if (o == NULL || (json_is_string(desc) && json_object_set(o, "description", desc)) ||
            (json_is_object(params)
                 ? json_object_set(o, "input_schema", params)
                 : oset(o, "input_schema",
                        json_pack("{s:s,s:{}}", "type", "object", "properties"))) ||
            aadd(out, o)) {
            json_decref(out);
            return oom(e);
        }
        if (json_object_get(fn, "strict") != NULL)
            log_drop(is, "tools[].function.strict");
    }
    if (json_array_size(out) == 0) {
        json_decref(out);
        return LM_OK;
    }
    return oset(body, "tools", out) ? oom(e) : LM_OK;
}

static int convert_tool_choice(const json_t *canon, json_t *body, lm_err *e)
{
    json_t *tc = json_object_get(canon, "tool_choice");
    json_t *ptc = json_object_get(canon, "parallel_tool_calls");
    json_t *out = NULL;
    const char *s = json_string_value(tc);

    if (tc == NULL || json_is_null(tc)) {
        if (json_is_false(ptc) && json_object_get(body, "tools") != NULL)
            out = json_pack("{s:s}", "type", "auto");
    } else if (streq(s, "auto")) {
        out = json_pack("{s:s}", "type", "auto");
    } else if (streq(s, "required")) {
        out = json_pack("{s:s}", "type", "any");
    } else if (streq(s, "none")) {
        out = json_pack("{s:s}", "type", "none");
    } else if (json_is_object(tc)) {
        const char *name =
            json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
        if (name == NULL)
            return bad_req(e, "tool_choice object needs function.name", NULL);
        out = json_pack("{s:s,s:s}", "type", "tool", "name", name);
    } else {
        return bad_req(e, "tool_choice must be auto, none, required or a function object", NULL);
    }
    if (out == NULL)
        return (tc == NULL || json_is_null(tc)) ? LM_OK : oom(e);
    if (json_is_false(ptc) && !streq(json_string_value(json_object_get(out, "type")), "none"))
        json_object_set_new(out, "disable_parallel_tool_use", json_true());
    return oset(body, "tool_choice", out) ? oom(e) : LM_OK;
}

static int convert_stop(const json_t *stop, json_t *body, lm_err *e)
{
    json_t *arr;
    size_t i;
    json_t *s;
    if (stop == NULL || json_is_null(stop))
        return LM_OK;
    if (json_is_string(stop)) {
        arr = json_pack("[O]", stop);
    } else if (json_is_array(stop)) {
        json_array_foreach (stop, i, s) {
            if (!json_is_string(s))
                return bad_req(e, "stop must be a string or an array of strings", NULL);
        }
        if (json_array_size(stop) == 0)
            return LM_OK;
        arr = json_copy((json_t *)stop);
    } else {
        return bad_req(e, "stop must be a string or an array of strings", NULL);
    }
    return oset(body, "stop_sequences", arr) ? oom(e) : LM_OK;
}

static int cl_build_chat(cl_inst *is, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const lm_host_api *h = is->h;
    json_t *body, *msgs, *system = NULL, *v;
    const char *model = c->model;
    const char *key;
    int64_t max_tokens = is->max_tokens_default;
    int rc;
    char *url;
    size_t ulen;

    if (model == NULL || model[0] == '\0')
        model = json_string_value(json_object_get(canon, "model"));
    if (model == NULL || model[0] == '\0')
        return bad_req(e, "model is required", NULL);

    v = json_object_get(canon, "max_completion_tokens");
    if (v == NULL || json_is_null(v))
        v = json_object_get(canon, "max_tokens");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) <= 0)
            return bad_req(e, "max_tokens must be a positive integer", NULL);
        max_tokens = json_integer_value(v);
    }

    body = json_object();
    msgs = json_array();
    if (body == NULL || msgs == NULL) {
        json_decref(body);
        json_decref(msgs);
        return oom(e);
    }
    rc = convert_messages(is, json_object_get(canon, "messages"), msgs, &system, e);
    if (rc != LM_OK) {
        json_decref(body);
        json_decref(msgs);
        return rc;
    }
    if (oset(body, "model", json_string(model)) ||
        oset(body, "max_tokens", json_integer(max_tokens))) {
        json_decref(system);
        json_decref(msgs);
        goto nomem;
    }
    if (system != NULL && oset(body, "system", system)) {
        json_decref(msgs);
        goto nomem;
    }
    if (oset(body, "messages", msgs))
        goto nomem;

    /* Sampling and the rest, in canon order; unknown keys are dropped. */
    json_object_foreach ((json_t *)canon, key, v) {
        if (streq(key, "model") || streq(key, "messages") || streq(key, "max_tokens") ||
            streq(key, "max_completion_tokens") || streq(key, "stream") ||
            streq(key, "stream_options") || streq(key, "tool_choice") ||
            streq(key, "parallel_tool_calls"))
            continue;
        if (json_is_null(v))
            continue;
        if (streq(key, "temperature")) {
            double t;
            if (!json_is_number(v)) {
                rc = bad_req(e, "temperature must be a number", NULL);
                goto fail;
            }
            t = json_number_value(v);
            if (t < 0 || t > 1) {
                if (LM_HOST_HAS(h, log))
                    h->log(is->ictx, LM_LOG_DEBUG, "anthropic: clamping temperature to [0,1]");
                t = t < 0 ? 0 : 1;
                if (oset(body, "temperature", json_real(t)))
                    goto nomem;
            } else if (json_object_set(body, "temperature", v)) {
                goto nomem;
            }
        } else if (streq(key, "top_p") || streq(key, "top_k")) {
            if (!json_is_number(v)) {
                rc = bad_req(e, "top_p/top_k must be numbers", NULL);
                goto fail;
            }
            if (json_object_set(body, key, v))
                goto nomem;
        } else if (streq(key, "stop")) {
            rc = convert_stop(v, body, e);
            if (rc != LM_OK)
                goto fail;
        } else if (streq(key, "user")) {
            if (json_is_string(v) && oset(body, "metadata", json_pack("{s:O}", "user_id", v)))
                goto nomem;
        } else if (streq(key, "tools")) {
            rc = convert_tools(is, v, body, e);
            if (rc != LM_OK)
                goto fail;
        } else if (streq(key, "thinking")) {
            /* Anthropic-native extension, passed through as given. */
            if (json_is_object(v) && json_object_set(body, "thinking", v))
                goto nomem;
        } else if (streq(key, "n") && json_is_integer(v) && json_integer_value(v) == 1) {
            continue;
        } else {
            log_drop(is, key);
        }
    }
    rc = convert_tool_choice(canon, body, e);
    if (rc != LM_OK)
        goto fail;
    if (c->stream && json_object_set_new(body, "stream", json_true()))
        goto nomem;

    /* URL and headers. */
    ulen = is->base_url.n + sizeof("/v1/messages");
    url = malloc(ulen);
    if (url == NULL)
        goto nomem;
    memcpy(url, is->base_url.p, is->base_url.n);
    memcpy(url + is->base_url.n, "/v1/messages", sizeof("/v1/messages"));
    rc = h->ureq_set_method(u, "POST");
    if (rc >= 0)
        rc = h->ureq_set_url(u, (lm_str){url, ulen - 1});
    free(url);
    if (rc >= 0)
        rc = h->ureq_add_header(u, LM_STR("x-api-key"), is->api_key);
    if (rc >= 0)
        rc = h->ureq_add_header(u, LM_STR("anthropic-version"), is->version);
    if (rc >= 0 && is->beta.n > 0)
        rc = h->ureq_add_header(u, LM_STR("anthropic-beta"), is->beta);
    if (rc >= 0 && c->stream)
        rc = h->ureq_add_header(u, LM_STR("accept"), LM_STR("text/event-stream"));
    if (rc < 0) {
        json_decref(body);
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot build upstream request");
    }
    rc = h->ureq_set_json_body(u, body);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot set upstream body");
    return LM_OK;

nomem:
    rc = oom(e);
fail:
    json_decref(body);
    return rc;
}

static int cl_build_request(void *ist, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    cl_inst *is = ist;
    cl_req *rs;

    if (c->op != LM_OP_CHAT)
        return lm_err_set(e, LM_ENOTSUP, 404, "invalid_request_error", "model_not_found",
                          "Anthropic has no embeddings API");
    if (!json_is_object(canon))
        return bad_req(e, "request body must be a JSON object", NULL);
    rs = is->h->alloc(sizeof(*rs));
    if (rs == NULL)
        return oom(e);
    memset(rs, 0, sizeof(*rs));
    rs->in = rs->cache_create = rs->cache_read = rs->out = -1;
    c->rstate = rs;
    return cl_build_chat(is, c, canon, u, e);
}

/* ---- errors ------------------------------------------------------------- */

/* Fill e from an Anthropic error type / HTTP status (0 = in-stream). */
static void map_anthropic_error(const char *atype, int status, const char *msg, lm_err *e)
{
    int st = status;
    const char *type = "api_error", *code = NULL;

    if (streq(atype, "overloaded_error") || status == 529) {
        st = 503;
        code = "overloaded";
    } else if (streq(atype, "authentication_error") || status == 401) {
        st = 401;
        type = "authentication_error";
        code = "authentication_error";
    } else if (streq(atype, "permission_error") || status == 403) {
        st = 403;
        type = "permission_error";
    } else if (streq(atype, "not_found_error") || status == 404) {
        st = 404;
        type = "invalid_request_error";
        code = "model_not_found";
    } else if (streq(atype, "rate_limit_error") || status == 429) {
        st = 429;
        type = "rate_limit_error";
        code = "rate_limit_exceeded";
    } else if (streq(atype, "request_too_large") || status == 413) {
        st = 413;
        type = "invalid_request_error";
        code = "request_too_large";
    } else if (streq(atype, "billing_error") || status == 402) {
        st = 402;
        type = "invalid_request_error";
        code = "billing_error";
    } else if (streq(atype, "invalid_request_error") || (status >= 400 && status < 500)) {
        st = status >= 400 && status < 500 ? status : 400;
        type = "invalid_request_error";
    } else {
        /* api_error, timeout_error, unknown */
        st = status >= 500 ? status : (streq(atype, "timeout_error") ? 504 : 500);
    }
    lm_err_set(e, LM_EUPSTREAM, st, type, code, "%s", msg);
}

static int cl_map_error(void *ist, lm_call *c, int status, lm_str body, lm_err *e)
{
    json_error_t jerr;
    json_t *root = json_loadb(body.p, body.n, 0, &jerr);
    json_t *err = json_object_get(root, "error");
    const char *atype = json_string_value(json_object_get(err, "type"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    char fallback[64];
    (void)ist;
    (void)c;
    if (msg == NULL) {
        snprintf(fallback, sizeof(fallback), "Anthropic returned HTTP %d", status);
        msg = fallback;
    }
    map_anthropic_error(atype, status, msg, e);
    json_decref(root);
    return LM_OK;
}

/* ---- response translation ----------------------------------------------- */

static const char *map_stop(const char *r)
{
    if (r == NULL || streq(r, "end_turn") || streq(r, "stop_sequence") || streq(r, "pause_turn"))
        return "stop";
    if (streq(r, "max_tokens") || streq(r, "model_context_window_exceeded"))
        return "length";
    if (streq(r, "tool_use"))
        return "tool_calls";
    if (streq(r, "refusal"))
        return "content_filter";
    return "stop";
}

static void fill_usage(const cl_req *rs, lm_usage *u)
{
    int64_t prompt = -1;
    if (rs->in >= 0 || rs->cache_create >= 0 || rs->cache_read >= 0)
        prompt = (rs->in > 0 ? rs->in : 0) + (rs->cache_create > 0 ? rs->cache_create : 0) +
                 (rs->cache_read > 0 ? rs->cache_read : 0);
    u->prompt = prompt;
    u->completion = rs->out;
    u->total = (prompt >= 0 && rs->out >= 0) ? prompt + rs->out : -1;
    u->cached = rs->cache_read;
    u->reasoning = -1;
}

static void read_usage(cl_req *rs, const json_t *usage)
{
    int64_t v;
    if (!json_is_object(usage))
        return;
    if ((v = jint(usage, "input_tokens")) >= 0)
        rs->in = v;
    if ((v = jint(usage, "cache_creation_input_tokens")) >= 0)
        rs->cache_create = v;
    if ((v = jint(usage, "cache_read_input_tokens")) >= 0)
        rs->cache_read = v;
    if ((v = jint(usage, "output_tokens")) >= 0)
        rs->out = v;
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
    return o;
}

static int cl_parse_response(void *ist, lm_call *c, int status, lm_str body, json_t **out,
                             lm_usage *usage, lm_err *e)
{
    cl_inst *is = ist;
    json_error_t jerr;
    json_t *root, *content, *blk, *msg, *tcs, *resp;
    size_t i;
    sbuf text = {NULL, 0, 0, 0}, think = {NULL, 0, 0, 0};
    cl_req tmp;
    lm_usage u;
    const char *id, *model;
    char idbuf[160];
    int ntext = 0, rc = LM_OK;

    (void)status;
    *out = NULL;
    root = json_loadb(body.p, body.n, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return bad_upstream(e, "body is not a JSON object");
    }
    if (streq(json_string_value(json_object_get(root, "type")), "error")) {
        json_t *err = json_object_get(root, "error");
        const char *m = json_string_value(json_object_get(err, "message"));
        map_anthropic_error(json_string_value(json_object_get(err, "type")), 0,
                            m ? m : "Anthropic returned an error", e);
        json_decref(root);
        return LM_EUPSTREAM;
    }
    content = json_object_get(root, "content");
    if (!json_is_array(content)) {
        json_decref(root);
        return bad_upstream(e, "no content array");
    }
    tcs = json_array();
    msg = json_pack("{s:s}", "role", "assistant");
    if (tcs == NULL || msg == NULL)
        goto nomem;
    json_array_foreach (content, i, blk) {
        const char *type = json_string_value(json_object_get(blk, "type"));
        if (streq(type, "text")) {
            json_t *t = json_object_get(blk, "text");
            if (json_is_string(t))
                sb_add(&text, json_string_value(t), json_string_length(t));
            ntext++;
        } else if (streq(type, "thinking")) {
            json_t *t = json_object_get(blk, "thinking");
            if (json_is_string(t))
                sb_add(&think, json_string_value(t), json_string_length(t));
        } else if (streq(type, "tool_use")) {
            json_t *input = json_object_get(blk, "input");
            json_t *args = input ? dump_string(input) : json_string("{}");
            const char *tid = json_string_value(json_object_get(blk, "id"));
            const char *name = json_string_value(json_object_get(blk, "name"));
            if (tid == NULL || name == NULL) {
                json_decref(args);
                rc = bad_upstream(e, "tool_use block without id or name");
                goto out;
            }
            if (args == NULL ||
                aadd(tcs, json_pack("{s:s,s:s,s:{s:s,s:o}}", "id", tid, "type", "function",
                                    "function", "name", name, "arguments", args)))
                goto nomem;
        }
    }
    if (text.oom || think.oom)
        goto nomem;
    if (ntext > 0 || json_array_size(tcs) == 0) {
        if (oset(msg, "content", json_stringn(text.p ? text.p : "", text.n)))
            goto nomem;
    } else if (json_object_set_new(msg, "content", json_null())) {
        goto nomem;
    }
    if (think.n > 0 && oset(msg, "reasoning_content", json_stringn(think.p, think.n)))
        goto nomem;
    if (json_array_size(tcs) > 0 && json_object_set(msg, "tool_calls", tcs))
        goto nomem;

    memset(&tmp, 0, sizeof(tmp));
    tmp.in = tmp.cache_create = tmp.cache_read = tmp.out = -1;
    read_usage(&tmp, json_object_get(root, "usage"));
    fill_usage(&tmp, &u);
    if (usage != NULL)
        *usage = u;

    id = json_string_value(json_object_get(root, "id"));
    snprintf(idbuf, sizeof(idbuf), "chatcmpl-%s", id ? id : (c->request_id ? c->request_id : ""));
    model = json_string_value(json_object_get(root, "model"));
    if (model == NULL)
        model = c->model ? c->model : "";
    resp = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:O,s:n,s:s}]}", "id", idbuf, "object",
                     "chat.completion", "created",
                     (json_int_t)(LM_HOST_HAS(is->h, unix_time) ? is->h->unix_time() : 0), "model",
                     model, "choices", "index", 0, "message", msg, "logprobs", "finish_reason",
                     map_stop(json_string_value(json_object_get(root, "stop_reason"))));
    if (resp == NULL || oset(resp, "usage", usage_json(&u))) {
        json_decref(resp);
        goto nomem;
    }
    *out = resp;
    goto out;

nomem:
    rc = oom(e);
out:
    free(text.p);
    free(think.p);
    json_decref(tcs);
    json_decref(msg);
    json_decref(root);
    return rc;
}

/* ---- streaming ---------------------------------------------------------- */

static int emit(cl_inst *is, lm_emit *out, json_t *delta, const char *finish, lm_err *e)
{
    int rc;
    if (delta == NULL)
        return oom(e);
    rc = is->h->emit_delta(out, 0, delta, finish);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot emit stream chunk");
    return LM_OK;
}

static int ensure_started(cl_inst *is, cl_req *rs, lm_emit *out, lm_err *e)
{
    if (rs->started)
        return LM_OK;
    rs->started = 1;
    return emit(is, out, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL, e);
}

static int emit_usage(cl_inst *is, cl_req *rs, lm_emit *out, lm_err *e)
{
    lm_usage u;
    int rc;
    fill_usage(rs, &u);
    rc = is->h->emit_usage(out, &u);
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot record usage");
    return LM_OK;
}

static cl_block *block_at(cl_inst *is, cl_req *rs, json_t *idx)
{
    json_int_t i;
    if (!json_is_integer(idx))
        return NULL;
    i = json_integer_value(idx);
    if (i < 0 || i >= CL_MAX_BLOCKS)
        return NULL;
    if ((size_t)i >= rs->nblocks) {
        size_t n = (size_t)i + 8;
        cl_block *nb = is->h->realloc(rs->blocks, n * sizeof(*nb));
        if (nb == NULL)
            return NULL;
        memset(nb + rs->nblocks, 0, (n - rs->nblocks) * sizeof(*nb));
        rs->blocks = nb;
        rs->nblocks = n;
    }
    return &rs->blocks[i];
}

static json_t *tool_delta(int k, json_t *args)
{
    return json_pack("{s:[{s:i,s:{s:o}}]}", "tool_calls", "index", k, "function", "arguments",
                     args);
}

static int on_block_start(cl_inst *is, cl_req *rs, json_t *d, lm_emit *out, lm_err *e)
{
    json_t *cb = json_object_get(d, "content_block");
    const char *type = json_string_value(json_object_get(cb, "type"));
    cl_block *b = block_at(is, rs, json_object_get(d, "index"));
    int rc;

    if (b == NULL)
        return bad_upstream(e, "content_block_start without a valid index");
    rc = ensure_started(is, rs, out, e);
    if (rc != LM_OK)
        return rc;
    if (streq(type, "text")) {
        json_t *t = json_object_get(cb, "text");
        b->kind = BK_TEXT;
        if (json_string_length(t) > 0)
            return emit(is, out, json_pack("{s:O}", "content", t), NULL, e);
    } else if (streq(type, "thinking")) {
        json_t *t = json_object_get(cb, "thinking");
        b->kind = BK_THINK;
        if (json_string_length(t) > 0)
            return emit(is, out, json_pack("{s:O}", "reasoning_content", t), NULL, e);
    } else if (streq(type, "tool_use")) {
        const char *id = json_string_value(json_object_get(cb, "id"));
        const char *name = json_string_value(json_object_get(cb, "name"));
        if (id == NULL || name == NULL)
            return bad_upstream(e, "tool_use block without id or name");
        b->kind = BK_TOOL;
        b->tool = rs->ntools++;
        b->has_args = 0;
        return emit(is, out,
                    json_pack("{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls", "index", b->tool,
                              "id", id, "type", "function", "function", "name", name, "arguments",
                              ""),
                    NULL, e);
    } else {
        b->kind = BK_OTHER; /* redacted_thinking, server tools, ... */
    }
    return LM_OK;
}

static int on_block_delta(cl_inst *is, cl_req *rs, json_t *d, lm_emit *out, lm_err *e)
{
    json_t *delta = json_object_get(d, "delta");
    const char *type = json_string_value(json_object_get(delta, "type"));
    cl_block *b = block_at(is, rs, json_object_get(d, "index"));
    int rc;

    if (b == NULL)
        return bad_upstream(e, "content_block_delta without a valid index");
    rc = ensure_started(is, rs, out, e);
    if (rc != LM_OK)
        return rc;
    if (streq(type, "text_delta")) {
        json_t *t = json_object_get(delta, "text");
        if (json_string_length(t) > 0)
            return emit(is, out, json_pack("{s:O}", "content", t), NULL, e);
    } else if (streq(type, "thinking_delta")) {
        json_t *t = json_object_get(delta, "thinking");
        if (json_string_length(t) > 0)
            return emit(is, out, json_pack("{s:O}", "reasoning_content", t), NULL, e);
    } else if (streq(type, "input_json_delta")) {
        json_t *pj = json_object_get(delta, "partial_json");
        if (b->kind != BK_TOOL)
            return bad_upstream(e, "input_json_delta outside a tool_use block");
        if (json_string_length(pj) > 0) {
            b->has_args = 1;
            return emit(is, out, tool_delta(b->tool, json_incref(pj)), NULL, e);
        }
    }
    /* signature_delta, citations_delta, unknown: nothing for the client */
    return LM_OK;
}

static int cl_parse_event(void *ist, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    cl_inst *is = ist;
    cl_req *rs = c->rstate;
    json_error_t jerr;
    json_t *d;
    const char *type;
    char evname[40];
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
    type = json_string_value(json_object_get(d, "type"));
    if (type == NULL) {
        snprintf(evname, sizeof(evname), "%.*s", (int)(ev->event.n < 39 ? ev->event.n : 39),
                 ev->event.p ? ev->event.p : "");
        type = evname;
    }

    if (streq(type, "message_start")) {
        read_usage(rs, json_object_get(json_object_get(d, "message"), "usage"));
        rc = ensure_started(is, rs, out, e);
        if (rc == LM_OK)
            rc = emit_usage(is, rs, out, e);
    } else if (streq(type, "content_block_start")) {
        rc = on_block_start(is, rs, d, out, e);
    } else if (streq(type, "content_block_delta")) {
        rc = on_block_delta(is, rs, d, out, e);
    } else if (streq(type, "content_block_stop")) {
        cl_block *b = block_at(is, rs, json_object_get(d, "index"));
        if (b != NULL && b->kind == BK_TOOL && !b->has_args) {
            b->has_args = 1;
            rc = emit(is, out, tool_delta(b->tool, json_string("{}")), NULL, e);
        }
    } else if (streq(type, "message_delta")) {
        json_t *delta = json_object_get(d, "delta");
        const char *reason = json_string_value(json_object_get(delta, "stop_reason"));
        read_usage(rs, json_object_get(d, "usage"));
        rc = emit_usage(is, rs, out, e);
        if (rc == LM_OK && reason != NULL && !rs->finished) {
            rs->finished = 1;
            rc = ensure_started(is, rs, out, e);
            if (rc == LM_OK)
                rc = emit(is, out, json_object(), map_stop(reason), e);
        }
    } else if (streq(type, "message_stop")) {
        rc = LM_DONE;
    } else if (streq(type, "error")) {
        json_t *err = json_object_get(d, "error");
        const char *m = json_string_value(json_object_get(err, "message"));
        map_anthropic_error(json_string_value(json_object_get(err, "type")), 0,
                            m ? m : "Anthropic stream error", e);
        rc = LM_EUPSTREAM;
    }
    /* ping and unknown event types: nothing */
    json_decref(d);
    return rc;
}

/* ---- the table ---------------------------------------------------------- */

static const lm_provider cl_provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "claude",
    .version = "1.0.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_TOOLS | LM_CAP_VISION,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = cl_cfg_keys,
    .init = cl_init,
    .fini = cl_fini,
    .list_models = cl_list_models,
    .build_request = cl_build_request,
    .parse_response = cl_parse_response,
    .parse_event = cl_parse_event,
    .map_error = cl_map_error,
    .req_close = cl_req_close,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &cl_provider;
}
