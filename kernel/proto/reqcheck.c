/* reqcheck.c - client request bodies: depth pre-scan, strict parse and
 * OpenAI field validation (reqcheck.h). Pure, any thread; the parsed body
 * is a new Jansson reference the caller releases. */
#include "proto/reqcheck.h"

#include "lmjscan.h"

#include <math.h>
#include <string.h>

int lm_reqcheck_depth_ok(const char *p, size_t n, int max)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return 0;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 1;
}

static int bad(lm_err *e, const char *param, const char *msg)
{
    lm_err_set(e, -1, 400, "invalid_request_error", param ? "invalid_value" : NULL, "%s", msg);
    return -1;
}

json_t *lm_reqcheck_parse(const char *p, size_t n, lm_err *e)
{
    json_error_t je;
    /* The usual case in one pass in place; Jansson below says why not. */
    json_t *fast = lm_jparse_object(p, n, LM_JSON_MAX_DEPTH);
    if (fast != NULL)
        return fast;
    if (n == 0) {
        bad(e, NULL, "request body is empty; expected a JSON object");
        return NULL;
    }
    if (!lm_reqcheck_depth_ok(p, n, LM_JSON_MAX_DEPTH)) {
        bad(e, NULL, "request JSON is nested deeper than 64 levels");
        return NULL;
    }
    json_t *root = json_loadb(p, n, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        lm_err_set(e, -1, 400, "invalid_request_error", NULL,
                   "could not parse the JSON body: %s (line %d, column %d)", je.text, je.line,
                   je.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        bad(e, NULL, "request body must be a JSON object");
        return NULL;
    }
    return root;
}

static int check_number(const json_t *req, const char *k, double lo, double hi, lm_err *e)
{
    json_t *v = json_object_get(req, k);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return lm_err_set(e, -1, 400, "invalid_request_error", "invalid_type",
                          "'%s' must be a number", k);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return lm_err_set(e, -1, 400, "invalid_request_error", "invalid_value",
                          "'%s' must be between %g and %g", k, lo, hi);
    return 0;
}

static int check_int(const json_t *req, const char *k, json_int_t lo, json_int_t hi, lm_err *e)
{
    json_t *v = json_object_get(req, k);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return lm_err_set(e, -1, 400, "invalid_request_error", "invalid_value",
                          "'%s' must be an integer between %lld and %lld", k, (long long)lo,
                          (long long)hi);
    return 0;
}

static int check_model(const json_t *req, lm_err *e)
{
    json_t *model = json_object_get(req, "model");
    if (!json_is_string(model) || json_string_length(model) == 0 || json_string_length(model) > 256)
        return bad(e, "model", "'model' is required and must be a non-empty string");
    return 0;
}

/* "messages[i].<field> <what>": the message names the field. */
static int field_err(lm_err *e, const char *code, size_t i, const char *field, const char *what)
{
    return lm_err_set(e, -1, 400, "invalid_request_error", code, "messages[%zu].%s %s", i, field,
                      what);
}

/* An assistant's tool_calls: each names a function and carries its
 * arguments as text, so every provider gets the same call back. */
static int check_tool_calls(const json_t *calls, size_t i, lm_err *e)
{
    size_t j;
    json_t *tc;
    if (!json_is_array(calls))
        return field_err(e, "invalid_type", i, "tool_calls", "must be an array");
    json_array_foreach (calls, j, tc) {
        json_t *fn = json_object_get(tc, "function");
        json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
        if (!json_is_object(fn) || !json_is_string(name) || json_string_length(name) == 0)
            return lm_err_set(e, -1, 400, "invalid_request_error", "missing_required_parameter",
                              "messages[%zu].tool_calls[%zu].function.name is required", i, j);
        if (!json_is_string(args))
            return lm_err_set(e, -1, 400, "invalid_request_error", "missing_required_parameter",
                              "messages[%zu].tool_calls[%zu].function.arguments is required "
                              "(a JSON text)",
                              i, j);
    }
    return 0;
}

/* What each role requires, the same for every channel: content for
 * system/developer/user/tool, content or tool_calls for the assistant, and
 * tool_call_id for a tool result. */
static int check_message(const json_t *m, size_t i, lm_err *e)
{
    json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
    if (!json_is_object(m) || !json_is_string(role))
        return lm_err_set(e, -1, 400, "invalid_request_error", "invalid_value",
                          "messages[%zu] must be an object with a string 'role'", i);
    const char *r = json_string_value(role);
    int assistant = !strcmp(r, "assistant"), tool = !strcmp(r, "tool");
    if (strcmp(r, "system") && strcmp(r, "developer") && strcmp(r, "user") && !assistant && !tool &&
        strcmp(r, "function"))
        return lm_err_set(e, -1, 400, "invalid_request_error", "invalid_value",
                          "messages[%zu].role '%.32s' is not a known role", i, r);
    if (content && !json_is_string(content) && !json_is_array(content) && !json_is_null(content))
        return field_err(e, "invalid_type", i, "content", "must be a string, an array or null");
    json_t *calls = json_object_get(m, "tool_calls");
    if (assistant && calls && !json_is_null(calls) && check_tool_calls(calls, i, e) < 0)
        return -1;
    int has_calls =
        json_array_size(calls) > 0 || json_is_object(json_object_get(m, "function_call"));
    if ((content == NULL || json_is_null(content)) && !(assistant && has_calls))
        return field_err(e, "missing_required_parameter", i, "content", "is required");
    json_t *id = json_object_get(m, "tool_call_id");
    if (tool && (!json_is_string(id) || json_string_length(id) == 0))
        return field_err(e, "missing_required_parameter", i, "tool_call_id", "is required");
    return 0;
}

static int check_messages(const json_t *req, lm_err *e)
{
    json_t *msgs = json_object_get(req, "messages");
    size_t i;
    json_t *m;
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(e, "messages", "'messages' is required and must be a non-empty array");
    json_array_foreach (msgs, i, m)
        if (check_message(m, i, e) < 0)
            return -1;
    return 0;
}

int lm_reqcheck_chat(const json_t *req, lm_err *e)
{
    json_t *stream = json_object_get(req, "stream");
    if (check_model(req, e) < 0 || check_messages(req, e) < 0)
        return -1;
    if (stream && !json_is_boolean(stream) && !json_is_null(stream))
        return bad(e, "stream", "'stream' must be a boolean");
    json_t *so = json_object_get(req, "stream_options");
    if (so && !json_is_object(so) && !json_is_null(so))
        return bad(e, "stream_options", "'stream_options' must be an object");
    if (check_number(req, "temperature", 0, 2, e) < 0 || check_number(req, "top_p", 0, 1, e) < 0 ||
        check_number(req, "presence_penalty", -2, 2, e) < 0 ||
        check_number(req, "frequency_penalty", -2, 2, e) < 0 ||
        check_int(req, "max_tokens", 1, 100000000, e) < 0 ||
        check_int(req, "max_completion_tokens", 1, 100000000, e) < 0 ||
        check_int(req, "n", 1, 128, e) < 0)
        return -1;
    json_t *tools = json_object_get(req, "tools");
    if (tools && !json_is_array(tools) && !json_is_null(tools))
        return bad(e, "tools", "'tools' must be an array");
    return 0;
}

int lm_reqcheck_embed(const json_t *req, lm_err *e)
{
    json_t *input = json_object_get(req, "input");
    const char *fmt = json_string_value(json_object_get(req, "encoding_format"));
    if (check_model(req, e) < 0)
        return -1;
    if (json_object_get(req, "encoding_format") &&
        !json_is_null(json_object_get(req, "encoding_format")) &&
        (fmt == NULL || (strcmp(fmt, "float") && strcmp(fmt, "base64"))))
        return bad(e, "encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
    if (json_is_string(input))
        return 0;
    if (!json_is_array(input) || json_array_size(input) == 0 || json_array_size(input) > 2048)
        return bad(e, "input", "'input' must be a string or a non-empty array of strings");
    return 0;
}
