/* inbound_pt.c - reading a passed-through body (inbound_pt.h): the model
 * splice, SSE event cuts and the usage/end/error readers of the Messages
 * and Responses APIs. Thread: any. */
#include "proto/inbound_pt.h"

#include "core/errors.h"
#include "proto/inbound.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the model splice ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at an opening quote: the byte after the closing one, or NULL. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* p at a value: the byte after it, or NULL when it does not end. Nested
 * values are skipped by depth (strings are skipped whole, so brackets in
 * them do not count); the JSON was already parsed once by the relay. */
static const char *skip_value(const char *p, const char *end)
{
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p != '{' && *p != '[') {
        while (p < end && !strchr(",}] \t\r\n", *p))
            p++;
        return p;
    }
    int depth = 0;
    while (p < end) {
        if (*p == '"') {
            if ((p = skip_string(p, end)) == NULL)
                return NULL;
            continue;
        }
        if (*p == '{' || *p == '[')
            depth++;
        else if ((*p == '}' || *p == ']') && --depth == 0)
            return p + 1;
        p++;
    }
    return NULL;
}

int lm_inpt_set_model(const char *body, size_t n, const char *model, lm_buf_t *out)
{
    const char *p = skip_ws(body, body + n), *end = body + n;
    if (p >= end || *p != '{')
        return -1;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *key = p;
        if ((p = skip_string(p, end)) == NULL)
            return -1;
        int is_model = p - key == 7 && memcmp(key, "\"model\"", 7) == 0;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return -1;
        const char *val = skip_ws(p + 1, end);
        if ((p = skip_value(val, end)) == NULL)
            return -1;
        if (is_model) {
            if (*val != '"')
                return -1;
            json_t *s = json_string(model);
            char *t = s ? json_dumps(s, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
            json_decref(s);
            int rc = t && lm_buf_add(out, body, (size_t)(val - body)) == 0 &&
                             lm_buf_adds(out, t) == 0 && lm_buf_add(out, p, (size_t)(end - p)) == 0
                         ? 0
                         : -1;
            free(t);
            return rc;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    return -1;
}

/* ---- SSE events ---- */

size_t lm_inpt_event_len(const char *p, size_t n)
{
    size_t line = 0; /* start of the current line */
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n')
            continue;
        size_t len = i - line;
        if (len == 0 || (len == 1 && p[line] == '\r'))
            return i + 1; /* a blank line ends the event */
        line = i + 1;
    }
    return 0;
}

/* The event's name and its data lines joined with '\n' (data appended). */
static void event_fields(const char *p, size_t n, char *name, size_t name_n, lm_buf_t *data)
{
    const char *end = p + n;
    int first = 1;
    name[0] = '\0';
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        size_t len = (size_t)(stop - p);
        if (len && p[len - 1] == '\r')
            len--;
        if (len >= 5 && memcmp(p, "data:", 5) == 0) {
            size_t off = len > 5 && p[5] == ' ' ? 6 : 5;
            if (!first)
                lm_buf_add(data, "\n", 1);
            lm_buf_add(data, p + off, len - off);
            first = 0;
        } else if (len >= 6 && memcmp(p, "event:", 6) == 0) {
            size_t off = len > 6 && p[6] == ' ' ? 7 : 6;
            snprintf(name, name_n, "%.*s", (int)(len - off), p + off);
        }
        p = nl ? nl + 1 : end;
    }
}

/* ---- readers ---- */

void lm_inpt_reader_init(lm_inpt_reader_t *rd, int api)
{
    *rd = (lm_inpt_reader_t){
        .api = api, .in = -1, .cache_create = -1, .cache_read = -1, .out = -1, .reasoning = -1};
}

static void take(int64_t *f, const json_t *o, const char *key)
{
    int64_t v = lm_json_int_or_unknown(o, key);
    if (v >= 0)
        *f = v;
}

/* Anthropic usage; output_tokens only where it is final (a whole answer,
 * message_delta): message_start's is a placeholder, and an aborted stream
 * is billed from what was received instead. */
static void msgs_usage(lm_inpt_reader_t *rd, const json_t *u, int final_out)
{
    take(&rd->in, u, "input_tokens");
    take(&rd->cache_create, u, "cache_creation_input_tokens");
    take(&rd->cache_read, u, "cache_read_input_tokens");
    if (final_out)
        take(&rd->out, u, "output_tokens");
}

static void resp_usage(lm_inpt_reader_t *rd, const json_t *u)
{
    take(&rd->in, u, "input_tokens");
    take(&rd->out, u, "output_tokens");
    take(&rd->cache_read, json_object_get(u, "input_tokens_details"), "cached_tokens");
    take(&rd->reasoning, json_object_get(u, "output_tokens_details"), "reasoning_tokens");
}

static int str_is(const char *s, const char *w)
{
    return s && strcmp(s, w) == 0;
}

static size_t str_len(const json_t *o, const char *key)
{
    return json_string_length(json_object_get(o, key));
}

/* Anthropic's error types and their statuses (overloaded is 529 there;
 * the kernel's 503 says the same and goes back out as 529). */
static int msgs_error(const json_t *err, lm_err *e)
{
    static const struct {
        const char *type;
        int status;
    } map[] = {{"invalid_request_error", 400}, {"authentication_error", 401},
               {"permission_error", 403},      {"not_found_error", 404},
               {"request_too_large", 413},     {"rate_limit_error", 429},
               {"overloaded_error", 503}};
    const char *type = json_string_value(json_object_get(err, "type"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    int status = 500;
    for (size_t i = 0; type && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(type, map[i].type) == 0)
            status = map[i].status;
    return lm_error_set(e, LM_EUPSTREAM, status, type ? type : "api_error",
                        type ? type : "api_error", msg ? msg : "upstream stream error");
}

static int msgs_event(lm_inpt_reader_t *rd, const char *type, const json_t *d, lm_err *e)
{
    if (str_is(type, "message_start")) {
        msgs_usage(rd, json_object_get(json_object_get(d, "message"), "usage"), 0);
    } else if (str_is(type, "message_delta")) {
        msgs_usage(rd, json_object_get(d, "usage"), 1);
        if (json_is_string(json_object_get(json_object_get(d, "delta"), "stop_reason")))
            rd->finished = 1;
    } else if (str_is(type, "content_block_delta")) {
        const json_t *dl = json_object_get(d, "delta");
        rd->chars += str_len(dl, "text") + str_len(dl, "thinking") + str_len(dl, "partial_json");
    } else if (str_is(type, "message_stop")) {
        rd->done = 1;
        return LM_DONE;
    } else if (str_is(type, "error")) {
        return msgs_error(json_object_get(d, "error"), e);
    }
    return LM_OK;
}

static int resp_error(const json_t *err, lm_err *e)
{
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    return lm_error_set(e, LM_EUPSTREAM, 500, "api_error", code ? code : "upstream_error",
                        msg ? msg : "upstream stream error");
}

static int resp_event(lm_inpt_reader_t *rd, const char *type, const json_t *d, lm_err *e)
{
    if (str_is(type, "response.output_text.delta") ||
        str_is(type, "response.function_call_arguments.delta") ||
        str_is(type, "response.reasoning_text.delta") ||
        str_is(type, "response.reasoning_summary_text.delta")) {
        rd->chars += str_len(d, "delta");
    } else if (str_is(type, "response.completed") || str_is(type, "response.incomplete")) {
        resp_usage(rd, json_object_get(json_object_get(d, "response"), "usage"));
        rd->finished = rd->done = 1;
        return LM_DONE;
    } else if (str_is(type, "response.failed")) {
        return resp_error(json_object_get(json_object_get(d, "response"), "error"), e);
    } else if (str_is(type, "error")) {
        return resp_error(d, e);
    }
    return LM_OK;
}

/* OpenAI's legacy completions: usage (the include_usage chunk, or a whole
 * answer), text, finish_reason, an {"error": ...} chunk. */
static void cmpl_usage(lm_inpt_reader_t *rd, const json_t *u)
{
    take(&rd->in, u, "prompt_tokens");
    take(&rd->out, u, "completion_tokens");
    take(&rd->cache_read, json_object_get(u, "prompt_tokens_details"), "cached_tokens");
}

static int cmpl_event(lm_inpt_reader_t *rd, const json_t *d, lm_err *e)
{
    const json_t *err = json_object_get(d, "error");
    if (json_is_object(err)) {
        const char *type = json_string_value(json_object_get(err, "type"));
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        return lm_error_set(e, LM_EUPSTREAM, 500, type ? type : "api_error",
                            code ? code : "upstream_error", msg ? msg : "upstream stream error");
    }
    size_t i;
    const json_t *c;
    json_array_foreach (json_object_get(d, "choices"), i, c) {
        rd->chars += str_len(c, "text");
        if (json_is_string(json_object_get(c, "finish_reason")))
            rd->finished = 1;
    }
    if (json_is_object(json_object_get(d, "usage")))
        cmpl_usage(rd, json_object_get(d, "usage"));
    return LM_OK;
}

int lm_inpt_reader_event(lm_inpt_reader_t *rd, const char *ev, size_t n, lm_err *e)
{
    char name[64];
    lm_buf_t data = {0};
    event_fields(ev, n, name, sizeof(name), &data);
    json_t *d = data.len ? json_loadb(data.p, data.len, 0, NULL) : NULL;
    int end = rd->api == LM_API_COMPLETIONS && data.len == 6 && memcmp(data.p, "[DONE]", 6) == 0;
    lm_buf_free(&data);
    if (end) {
        rd->done = 1;
        return LM_DONE;
    }
    if (!json_is_object(d)) { /* [DONE], comments, keep-alives */
        json_decref(d);
        return LM_OK;
    }
    const char *type = json_string_value(json_object_get(d, "type"));
    if (type == NULL)
        type = name;
    int rc = rd->api == LM_API_RESPONSES     ? resp_event(rd, type, d, e)
             : rd->api == LM_API_COMPLETIONS ? cmpl_event(rd, d, e)
                                             : msgs_event(rd, type, d, e);
    json_decref(d);
    return rc;
}

int lm_inpt_reader_whole(lm_inpt_reader_t *rd, const char *body, size_t n)
{
    json_t *d = json_loadb(body, n, 0, NULL);
    const char *type = json_string_value(json_object_get(d, "object"));
    int ok = 0;
    if (rd->api == LM_API_RESPONSES && str_is(type, "response")) {
        resp_usage(rd, json_object_get(d, "usage"));
        ok = 1;
    } else if (rd->api == LM_API_COMPLETIONS && str_is(type, "text_completion")) {
        cmpl_usage(rd, json_object_get(d, "usage"));
        ok = 1;
    } else if (rd->api == LM_API_MESSAGES &&
               str_is(json_string_value(json_object_get(d, "type")), "message")) {
        msgs_usage(rd, json_object_get(d, "usage"), 1);
        ok = 1;
    }
    rd->finished = rd->done = ok;
    json_decref(d);
    return ok ? 0 : -1;
}

lm_usage lm_inpt_reader_usage(const lm_inpt_reader_t *rd)
{
    lm_usage u = LM_USAGE_UNKNOWN;
    if (rd->api != LM_API_MESSAGES) {
        u.prompt = rd->in;
    } else if (rd->in >= 0 || rd->cache_create >= 0 || rd->cache_read >= 0) {
        u.prompt = (rd->in > 0 ? rd->in : 0) + (rd->cache_create > 0 ? rd->cache_create : 0) +
                   (rd->cache_read > 0 ? rd->cache_read : 0);
    }
    u.completion = rd->out;
    u.total = u.prompt >= 0 && u.completion >= 0 ? u.prompt + u.completion : -1;
    u.cached = rd->cache_read;
    u.reasoning = rd->reasoning;
    return u;
}
