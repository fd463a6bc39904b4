/* responses_input.c - the Responses API's `input` -> chat messages
 * (responses.h). Pure; any thread. Message items keep their role; a run of
 * function_call items becomes one assistant message with tool_calls (the
 * shape every chat provider expects a parallel call in); each
 * function_call_output becomes a tool message. */
#include "proto/responses.h"

#include <string.h>

static int is(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

/* input_image -> an image_url part. Only URLs (http(s) or data:) are
 * taken: a file_id needs the Files API, which a stateless gateway lacks. */
static json_t *image_part(const json_t *p, size_t i, size_t j, lm_err *e)
{
    json_t *url = json_object_get(p, "image_url"), *detail = json_object_get(p, "detail");
    if (json_object_get(p, "file_id") && !json_is_null(json_object_get(p, "file_id"))) {
        lm_resp_bad(e, "unsupported_parameter", "input[%zu].content[%zu].file_id %s", i, j,
                    "is not supported: send the image as image_url (a URL or a data: URL)");
        return NULL;
    }
    if (!json_is_string(url) || json_string_length(url) == 0) {
        lm_resp_bad(e, "missing_required_parameter", "input[%zu].content[%zu].image_url %s", i, j,
                    "is required (a URL or a data: URL)");
        return NULL;
    }
    json_t *iu = json_pack("{s:O}", "url", url);
    if (iu && json_is_string(detail))
        json_object_set(iu, "detail", detail);
    return iu ? json_pack("{s:s,s:o}", "type", "image_url", "image_url", iu) : NULL;
}

/* One content part -> a chat part (new), or NULL with e filled. */
static json_t *part(const json_t *p, size_t i, size_t j, lm_err *e)
{
    const char *type = json_string_value(json_object_get(p, "type"));
    const char *key = is(type, "refusal") ? "refusal" : "text";
    if (!json_is_object(p) || type == NULL) {
        lm_resp_bad(e, "invalid_value", "input[%zu].content[%zu]%s", i, j,
                    " must be an object with a string 'type'");
        return NULL;
    }
    if (is(type, "input_image"))
        return image_part(p, i, j, e);
    if (!is(type, "input_text") && !is(type, "output_text") && !is(type, "refusal")) {
        lm_err_set(e, -1, 400, "invalid_request_error", "unsupported_value",
                   "input[%zu].content[%zu].type '%.32s' is not supported (input_text, "
                   "input_image, output_text and refusal are)",
                   i, j, type);
        return NULL;
    }
    json_t *text = json_object_get(p, key);
    if (!json_is_string(text)) {
        lm_resp_bad(e, "missing_required_parameter", "input[%zu].content[%zu].%s is required", i, j,
                    key);
        return NULL;
    }
    return json_pack("{s:s,s:O}", "type", "text", "text", text);
}

/* Text-only parts are joined into one string: every provider takes a
 * string, and only user messages may carry images. */
static json_t *content(const json_t *c, const char *role, size_t i, lm_err *e)
{
    size_t j;
    json_t *p, *parts;
    int image = 0;
    if (json_is_string(c))
        return json_incref((json_t *)c);
    if (!json_is_array(c) || (parts = json_array()) == NULL) {
        lm_resp_bad(e, "invalid_type", "input[%zu].content %s", i, "must be a string or an array");
        return NULL;
    }
    json_array_foreach (c, j, p) {
        json_t *cp = part(p, i, j, e);
        if (cp == NULL || json_array_append_new(parts, cp) < 0) {
            json_decref(parts);
            return NULL;
        }
        image |= is(json_string_value(json_object_get(cp, "type")), "image_url");
    }
    if (image && !is(role, "user")) {
        json_decref(parts);
        lm_resp_bad(e, "invalid_value", "input[%zu].content %s", i,
                    "may carry input_image parts only in a user message");
        return NULL;
    }
    if (image)
        return parts;
    lm_buf_t b = {0};
    json_array_foreach (parts, j, p) {
        if (j)
            lm_buf_adds(&b, "\n");
        lm_buf_adds(&b, json_string_value(json_object_get(p, "text")));
    }
    json_decref(parts);
    json_t *s = b.failed ? NULL : json_stringn(b.len ? b.p : "", b.len);
    lm_buf_free(&b);
    return s;
}

static json_t *message(const json_t *it, size_t i, lm_err *e)
{
    const char *role = json_string_value(json_object_get(it, "role"));
    if (!is(role, "user") && !is(role, "system") && !is(role, "developer") &&
        !is(role, "assistant")) {
        lm_resp_bad(e, "invalid_value", "input[%zu].role %s", i,
                    "must be user, system, developer or assistant");
        return NULL;
    }
    json_t *c = json_object_get(it, "content");
    if (c == NULL) {
        lm_resp_bad(e, "missing_required_parameter", "input[%zu].content %s", i, "is required");
        return NULL;
    }
    json_t *cc = content(c, role, i, e);
    return cc ? json_pack("{s:s,s:o}", "role", role, "content", cc) : NULL;
}

static int need_str(const json_t *it, const char *k, size_t i, lm_err *e)
{
    json_t *v = json_object_get(it, k);
    if (!json_is_string(v) || (strcmp(k, "arguments") && json_string_length(v) == 0))
        return lm_err_set(e, -1, 400, "invalid_request_error", "missing_required_parameter",
                          "input[%zu].%s is required (a string)", i, k);
    return 0;
}

/* A function_call item: added to the assistant message the previous item
 * made, or to a new one. */
static int function_call(const json_t *it, size_t i, json_t *msgs, int *merge, lm_err *e)
{
    if (need_str(it, "call_id", i, e) < 0 || need_str(it, "name", i, e) < 0 ||
        need_str(it, "arguments", i, e) < 0)
        return -1;
    json_t *tc = json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", json_object_get(it, "call_id"), "type",
                           "function", "function", "name", json_object_get(it, "name"), "arguments",
                           json_object_get(it, "arguments"));
    json_t *last = *merge ? json_array_get(msgs, json_array_size(msgs) - 1) : NULL;
    if (tc == NULL)
        return lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
    if (last == NULL) {
        last = json_pack("{s:s,s:n}", "role", "assistant", "content");
        if (last == NULL || json_array_append_new(msgs, last) < 0) {
            json_decref(tc);
            return lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
        }
    }
    json_t *calls = json_object_get(last, "tool_calls");
    if (calls == NULL) {
        calls = json_array();
        json_object_set_new(last, "tool_calls", calls);
    }
    if (json_array_append_new(calls, tc) < 0)
        return lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
    *merge = 1;
    return 0;
}

/* function_call_output.output: a string, or text parts (joined). */
static json_t *call_output(const json_t *it, size_t i, lm_err *e)
{
    json_t *out = json_object_get(it, "output");
    if (json_is_string(out))
        return json_incref(out);
    if (!json_is_array(out)) {
        lm_resp_bad(e, "missing_required_parameter", "input[%zu].output %s", i,
                    "is required (a string or an array of input_text parts)");
        return NULL;
    }
    size_t j;
    json_t *p;
    json_array_foreach (out, j, p) {
        if (!is(json_string_value(json_object_get(p, "type")), "input_text") ||
            !json_is_string(json_object_get(p, "text"))) {
            lm_resp_bad(e, "unsupported_value", "input[%zu].output[%zu] %s", i, j,
                        "is not supported: a tool output takes input_text parts only");
            return NULL;
        }
    }
    return content(out, "tool", i, e);
}

static int item(const json_t *it, size_t i, json_t *msgs, int *merge, lm_err *e)
{
    if (!json_is_object(it))
        return lm_resp_bad(e, "invalid_type", "input[%zu] %s", i, "must be an object");
    const char *type = json_string_value(json_object_get(it, "type"));
    if (type == NULL && json_object_get(it, "type") && !json_is_null(json_object_get(it, "type")))
        return lm_resp_bad(e, "invalid_type", "input[%zu].type %s", i, "must be a string");
    if (type == NULL || is(type, "message")) {
        json_t *m = message(it, i, e);
        if (m == NULL)
            return -1;
        /* An assistant message followed by calls is one chat turn. */
        *merge = is(json_string_value(json_object_get(m, "role")), "assistant");
        return json_array_append_new(msgs, m) < 0 ? -1 : 0;
    }
    if (is(type, "function_call"))
        return function_call(it, i, msgs, merge, e);
    *merge = 0;
    if (is(type, "function_call_output")) {
        if (need_str(it, "call_id", i, e) < 0)
            return -1;
        json_t *out = call_output(it, i, e);
        json_t *m = out ? json_pack("{s:s,s:O,s:o}", "role", "tool", "tool_call_id",
                                    json_object_get(it, "call_id"), "content", out)
                        : NULL;
        return m && json_array_append_new(msgs, m) == 0 ? 0 : -1;
    }
    /* Reasoning the client hands back (Codex does, with store: false) is
     * the model's own earlier thought: chat providers take none. */
    if (is(type, "reasoning"))
        return 0;
    return lm_err_set(e, -1, 400, "invalid_request_error", "unsupported_value",
                      "input[%zu].type '%.40s' is not supported (message, function_call, "
                      "function_call_output and reasoning are; item_reference needs stored "
                      "responses)",
                      i, type);
}

int lm_resp_input(const json_t *input, json_t *msgs, lm_err *e)
{
    size_t i;
    json_t *it;
    int merge = 0;
    memset(e, 0, sizeof(*e));
    if (json_is_string(input)) {
        json_t *m = json_pack("{s:s,s:O}", "role", "user", "content", input);
        return m && json_array_append_new(msgs, m) == 0 ? 0 : -1;
    }
    if (!json_is_array(input))
        return lm_err_set(e, -1, 400, "invalid_request_error", "missing_required_parameter",
                          "input is required: a string or an array of items");
    json_array_foreach (input, i, it) {
        if (item(it, i, msgs, &merge, e) < 0) {
            if (e->http_status == 0)
                lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
            return -1;
        }
    }
    return 0;
}
