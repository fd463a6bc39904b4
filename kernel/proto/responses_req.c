/* responses_req.c - a Responses API request -> the canonical chat request
 * (responses.h). Pure; any thread. The kernel's own chat checks
 * (reqcheck) still run on the result; this file refuses what only the
 * Responses API can ask for and a stateless gateway cannot give. */
#include "proto/reqcheck.h"
#include "proto/responses.h"

#include <stdarg.h>
#include <string.h>

int lm_resp_bad(lm_err *e, const char *code, const char *fmt, ...)
{
    va_list ap;
    lm_err_set(e, -1, 400, "invalid_request_error", code, "%s", "");
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

static int is(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

static json_t *get(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_null(v) ? NULL : v;
}

/* What needs stored state (responses, conversations, prompts, queued runs)
 * is refused by name rather than ignored: a client that relies on it would
 * otherwise get silently wrong answers. An explicit store: true is refused
 * too (the API's default is true, but the SDKs send store only when asked,
 * so an explicit true is a client that means to read the response back). */
static int refuse_stateful(const json_t *req, lm_err *e)
{
    static const char *const stateful[] = {"previous_response_id", "conversation", "prompt"};
    json_t *store = get(req, "store"), *bg = get(req, "background");
    for (size_t i = 0; i < sizeof(stateful) / sizeof(*stateful); i++)
        if (get(req, stateful[i]))
            return lm_resp_bad(e, "unsupported_parameter",
                               "%s is not supported: Longmen's /v1/responses is stateless; send "
                               "the whole conversation in input",
                               stateful[i]);
    if ((store && !json_is_boolean(store)) || (bg && !json_is_boolean(bg)))
        return lm_resp_bad(e, "invalid_type", "%s must be a boolean",
                           store && !json_is_boolean(store) ? "store" : "background");
    if (json_is_true(store))
        return lm_resp_bad(e, "unsupported_value",
                           "store: true is not supported: Longmen's /v1/responses is stateless "
                           "and keeps no responses; omit store or send store: false");
    if (json_is_true(bg))
        return lm_resp_bad(e, "unsupported_value", "background: true is not supported");
    json_t *tr = get(req, "truncation");
    if (tr && !is(json_string_value(tr), "disabled"))
        return lm_resp_bad(e, "unsupported_value",
                           "truncation must be \"disabled\": Longmen does not shorten input");
    json_t *inc = get(req, "include"), *v;
    size_t i;
    if (inc && !json_is_array(inc))
        return lm_resp_bad(e, "invalid_type", "include must be an array");
    /* Encrypted reasoning is asked for by stateless clients (Codex); there
     * is none to give, and its absence is harmless. */
    json_array_foreach (inc, i, v)
        if (!is(json_string_value(v), "reasoning.encrypted_content"))
            return lm_resp_bad(e, "unsupported_value", "include[%zu] is not supported", i);
    return 0;
}

static json_t *tool(const json_t *t, size_t j, lm_err *e)
{
    const char *type = json_string_value(json_object_get(t, "type"));
    json_t *name = json_object_get(t, "name"), *v;
    if (!json_is_object(t) || type == NULL) {
        lm_resp_bad(e, "invalid_value", "tools[%zu] must be an object with a string 'type'", j);
        return NULL;
    }
    if (!is(type, "function")) {
        lm_resp_bad(e, "unsupported_value",
                    "tools[%zu].type '%.40s' is not supported: Longmen runs function tools "
                    "only (not built-in tools such as web_search, file_search, "
                    "code_interpreter or computer_use)",
                    j, type);
        return NULL;
    }
    if (!json_is_string(name) || json_string_length(name) == 0) {
        lm_resp_bad(e, "missing_required_parameter", "tools[%zu].name is required", j);
        return NULL;
    }
    json_t *fn = json_pack("{s:O}", "name", name);
    if (fn && json_is_string(v = json_object_get(t, "description")))
        json_object_set(fn, "description", v);
    if (fn && (v = get(t, "parameters")) != NULL) {
        if (!json_is_object(v)) {
            json_decref(fn);
            lm_resp_bad(e, "invalid_type", "tools[%zu].parameters must be an object", j);
            return NULL;
        }
        json_object_set(fn, "parameters", v);
    }
    if (fn && json_is_boolean(v = json_object_get(t, "strict")))
        json_object_set(fn, "strict", v);
    return fn ? json_pack("{s:s,s:o}", "type", "function", "function", fn) : NULL;
}

static int tools(const json_t *req, json_t *canon, lm_err *e)
{
    json_t *ts = get(req, "tools"), *t, *tc = get(req, "tool_choice");
    size_t j;
    if (ts && !json_is_array(ts))
        return lm_resp_bad(e, "invalid_type", "tools must be an array");
    json_t *out = json_array();
    json_array_foreach (ts, j, t) {
        json_t *ct = tool(t, j, e);
        if (ct == NULL || json_array_append_new(out, ct) < 0) {
            json_decref(out);
            return -1;
        }
    }
    /* An empty list is left out: some providers refuse "tools": []. */
    if (json_array_size(out) > 0)
        json_object_set(canon, "tools", out);
    json_decref(out);
    const char *s = json_string_value(tc);
    if (tc == NULL)
        return 0;
    if (is(s, "auto") || is(s, "none") || is(s, "required"))
        return json_object_set(canon, "tool_choice", tc);
    json_t *name = json_object_get(tc, "name");
    if (is(json_string_value(json_object_get(tc, "type")), "function") && json_is_string(name))
        return json_object_set_new(
            canon, "tool_choice",
            json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name", name));
    return lm_resp_bad(e, "unsupported_value",
                       "tool_choice must be \"auto\", \"none\", \"required\" or "
                       "{\"type\":\"function\",\"name\":...}");
}

/* text.format -> response_format. */
static int text_format(const json_t *req, json_t *canon, lm_err *e)
{
    json_t *text = get(req, "text");
    if (text && !json_is_object(text))
        return lm_resp_bad(e, "invalid_type", "text must be an object");
    json_t *f = get(text, "format");
    const char *type = json_string_value(json_object_get(f, "type"));
    if (f == NULL || is(type, "text"))
        return 0;
    if (is(type, "json_object"))
        return json_object_set_new(canon, "response_format",
                                   json_pack("{s:s}", "type", "json_object"));
    if (!is(type, "json_schema"))
        return lm_resp_bad(e, "invalid_value",
                           "text.format.type must be \"text\", \"json_object\" or \"json_schema\"");
    json_t *name = json_object_get(f, "name"), *schema = json_object_get(f, "schema"), *v;
    if (!json_is_string(name) || json_string_length(name) == 0)
        return lm_resp_bad(e, "missing_required_parameter", "text.format.name is required");
    if (!json_is_object(schema))
        return lm_resp_bad(e, "missing_required_parameter",
                           "text.format.schema is required (a JSON Schema object)");
    json_t *js = json_pack("{s:O,s:O}", "name", name, "schema", schema);
    if (js && json_is_string(v = json_object_get(f, "description")))
        json_object_set(js, "description", v);
    if (js && json_is_boolean(v = json_object_get(f, "strict")))
        json_object_set(js, "strict", v);
    return json_object_set_new(canon, "response_format",
                               json_pack("{s:s,s:o*}", "type", "json_schema", "json_schema", js));
}

/* reasoning.effort goes on as chat's reasoning_effort (providers without
 * a reasoning control ignore it, as on /v1/chat/completions); a summary
 * cannot be made, so reasoning.summary is accepted and none is sent. */
static int reasoning(const json_t *req, json_t *canon, lm_err *e)
{
    static const char *const efforts[] = {"none", "minimal", "low", "medium", "high", "xhigh"};
    json_t *r = get(req, "reasoning"), *eff = get(r, "effort");
    if (r && !json_is_object(r))
        return lm_resp_bad(e, "invalid_type", "reasoning must be an object");
    if (eff == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(efforts) / sizeof(*efforts); i++)
        if (is(json_string_value(eff), efforts[i]))
            return json_object_set(canon, "reasoning_effort", eff);
    return lm_resp_bad(e, "unsupported_value",
                       "reasoning.effort must be one of none, minimal, low, medium, high, xhigh");
}

static int scalars(const json_t *req, json_t *canon, lm_err *e)
{
    json_t *v;
    if ((v = get(req, "max_output_tokens")) != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            return lm_resp_bad(e, "invalid_value", "max_output_tokens must be a positive integer");
        json_object_set(canon, "max_tokens", v);
    }
    static const char *const same[] = {"temperature", "top_p"};
    for (size_t i = 0; i < 2; i++)
        if ((v = get(req, same[i])) != NULL)
            json_object_set(canon, same[i], v);
    if ((v = get(req, "parallel_tool_calls")) != NULL && json_is_boolean(v))
        json_object_set(canon, "parallel_tool_calls", v);
    if ((v = get(req, "user")) != NULL && json_is_string(v))
        json_object_set(canon, "user", v);
    if ((v = get(req, "stream")) != NULL) {
        if (!json_is_boolean(v))
            return lm_resp_bad(e, "invalid_type", "stream must be a boolean");
        json_object_set(canon, "stream", v);
        /* The usage chunk feeds response.completed's usage. */
        if (json_is_true(v))
            json_object_set_new(canon, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    return 0;
}

static json_t *translate(const json_t *req, lm_err *e)
{
    json_t *model = json_object_get(req, "model"), *ins = get(req, "instructions");
    json_t *canon = json_object(), *msgs = json_array();
    int rc = 0;
    if (!json_is_string(model) || json_string_length(model) == 0)
        rc = lm_resp_bad(e, "missing_required_parameter", "model is required");
    else if (ins && !json_is_string(ins))
        rc = lm_resp_bad(e, "invalid_type", "instructions must be a string");
    if (rc == 0 && json_string_length(ins) > 0)
        rc = json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", ins));
    if (rc == 0 && json_object_get(req, "input") == NULL)
        rc = lm_resp_bad(e, "missing_required_parameter",
                         "input is required: a string or an array of items");
    if (rc == 0)
        rc = lm_resp_input(json_object_get(req, "input"), msgs, e);
    if (rc == 0 && json_array_size(msgs) == 0)
        rc = lm_resp_bad(e, "invalid_value", "input must hold at least one item");
    if (rc == 0) {
        json_object_set(canon, "model", model);
        json_object_set(canon, "messages", msgs);
        rc = scalars(req, canon, e);
    }
    if (rc == 0)
        rc = tools(req, canon, e);
    if (rc == 0)
        rc = text_format(req, canon, e);
    if (rc == 0)
        rc = reasoning(req, canon, e);
    json_decref(msgs);
    if (rc != 0) {
        if (e->http_status == 0)
            lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
        json_decref(canon);
        return NULL;
    }
    return canon;
}

/* The request fields a response object repeats back; the rest of its
 * shape comes from lm_resp_object's defaults. */
static json_t *make_echo(const json_t *req)
{
    static const char *const keys[] = {"instructions", "max_output_tokens",
                                       "metadata",     "parallel_tool_calls",
                                       "reasoning",    "temperature",
                                       "text",         "tool_choice",
                                       "tools",        "top_p",
                                       "user"};
    json_t *echo = json_object(), *v;
    for (size_t i = 0; echo && i < sizeof(keys) / sizeof(*keys); i++)
        if ((v = get(req, keys[i])) != NULL)
            json_object_set(echo, keys[i], v);
    return echo;
}

json_t *lm_resp_request(const char *body, size_t n, json_t **echo, lm_err *e)
{
    memset(e, 0, sizeof(*e));
    if (echo)
        *echo = NULL;
    json_t *req = lm_reqcheck_parse(body, n, e), *canon = NULL;
    if (req && refuse_stateful(req, e) == 0)
        canon = translate(req, e);
    if (canon && echo && (*echo = make_echo(req)) == NULL) {
        json_decref(canon);
        canon = NULL;
        lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
    }
    json_decref(req);
    return canon;
}
