/* claude_request.c - the canonical request as an Anthropic Messages request:
 * top-level system, merged user/assistant turns of content blocks, tool_use
 * and tool_result blocks, tools, tool_choice, max_tokens (claude.h). */
#include "claude.h"

#include <string.h>

/* Sampling members Anthropic takes under the OpenAI name (the kernel has
 * clamped temperature into [0, 1]). */
static const lms_rename cl_params[] = {
    {"temperature", NULL}, {"top_p", NULL}, {"top_k", NULL}, {"thinking", NULL}, {NULL, NULL}};

/* ---- content blocks ----------------------------------------------------- */

static int text_block(json_t *blocks, const json_t *text, lm_err *e)
{
    if (json_string_length(text) == 0)
        return LM_OK; /* Anthropic rejects empty text blocks */
    return lms_aadd(blocks, json_pack("{s:s,s:O}", "type", "text", "text", text)) ? lms_oom(e)
                                                                                  : LM_OK;
}

/* data:<type>;base64,<data> -> a base64 source; http(s) -> a url source
 * (Anthropic fetches it; the plugin does no I/O). */
static int image_block(json_t *blocks, const json_t *part, lm_err *e)
{
    const char *url = lms_image_url(part);
    lms_data_url d;
    json_t *src;
    if (lms_data_url_parse(url, &d) == 0 && d.is_base64)
        src = json_pack("{s:s,s:s%,s:s%}", "type", "base64", "media_type", d.media_type.p,
                        d.media_type.n, "data", d.data.p, d.data.n);
    else if (url && (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0))
        src = json_pack("{s:s,s:s}", "type", "url", "url", url);
    else
        return lms_bad_request(e, "image_url must be a data:<type>;base64,<data> or an "
                                  "http(s) URL");
    return lms_aadd(blocks, json_pack("{s:s,s:o}", "type", "image", "source", src)) ? lms_oom(e)
                                                                                    : LM_OK;
}

/* Message content (string or parts) -> Anthropic text and image blocks. */
static int content_blocks(const json_t *content, json_t *blocks, lm_err *e)
{
    size_t i;
    json_t *p;
    int rc = LM_OK;
    if (!json_is_array(content))
        return text_block(blocks, content, e);
    json_array_foreach (content, i, p) {
        const char *type = lms_jstr(p, "type");
        if (lms_streq(type, "text"))
            rc = text_block(blocks, json_object_get(p, "text"), e);
        else if (lms_streq(type, "image_url"))
            rc = image_block(blocks, p, e);
        else
            rc = lms_unsupported(e, "messages[].content[%zu]: Anthropic does not take \"%s\" parts",
                                 i, type ? type : "(no type)");
        if (rc != LM_OK)
            return rc;
    }
    return LM_OK;
}

/* Assistant tool_calls -> tool_use blocks (Anthropic needs the ids back to
 * pair them with the tool results). */
static int tool_use_blocks(const json_t *calls, json_t *blocks, lm_err *e)
{
    size_t i;
    json_t *tc;
    json_array_foreach (calls, i, tc) {
        json_t *fn = json_object_get(tc, "function"), *input;
        if (lms_jstr(tc, "id") == NULL)
            return lms_bad_request(e, "tool_calls[%zu].id is required by Anthropic", i);
        if ((input = lms_call_args(fn, e)) == NULL)
            return LM_EINVAL;
        if (lms_aadd(blocks, json_pack("{s:s,s:O,s:O,s:o}", "type", "tool_use", "id",
                                       json_object_get(tc, "id"), "name",
                                       json_object_get(fn, "name"), "input", input)))
            return lms_oom(e);
    }
    return LM_OK;
}

/* A tool message -> a tool_result block (content: the string, or blocks). */
static int tool_result(const json_t *m, json_t *blocks, lm_err *e)
{
    const json_t *content = json_object_get(m, "content");
    json_t *res = json_pack("{s:s,s:O}", "type", "tool_result", "tool_use_id",
                            json_object_get(m, "tool_call_id"));
    json_t *inner = json_is_array(content) ? json_array() : NULL;
    int rc = res ? LM_OK : lms_oom(e);
    if (rc == LM_OK && inner != NULL)
        rc = content_blocks(content, inner, e);
    if (rc == LM_OK && (json_is_string(content) || inner) &&
        json_object_set(res, "content", inner ? inner : (json_t *)content))
        rc = lms_oom(e);
    json_decref(inner);
    if (rc == LM_OK)
        return lms_aadd(blocks, res) ? lms_oom(e) : LM_OK;
    json_decref(res);
    return rc;
}

static int message_blocks(const json_t *m, const char *role, json_t *blocks, lm_err *e)
{
    const json_t *content = json_object_get(m, "content");
    if (lms_streq(role, "user"))
        return content_blocks(content, blocks, e);
    if (lms_streq(role, "assistant")) {
        int rc = content_blocks(content, blocks, e);
        return rc == LM_OK ? tool_use_blocks(json_object_get(m, "tool_calls"), blocks, e) : rc;
    }
    if (lms_streq(role, "tool"))
        return tool_result(m, blocks, e);
    return lms_bad_request(e, "Anthropic does not take messages with role '%s'", role);
}

/* A message whose content is one text block is sent as a plain string. */
static void collapse_single_text(json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach (msgs, i, m) {
        json_t *b = json_array_get(json_object_get(m, "content"), 0);
        if (json_array_size(json_object_get(m, "content")) == 1 && json_object_size(b) == 2 &&
            lms_streq(lms_jstr(b, "type"), "text"))
            json_object_set(m, "content", json_object_get(b, "text"));
    }
}

/* system/developer messages -> one top-level system string: messages joined
 * with a blank line, a message's parts with the lmsdk rule. */
static int system_text(const json_t *m, lms_buf *sys, lm_err *e)
{
    if (sys->n > 0)
        lms_buf_adds(sys, "\n\n");
    return lms_content_text(json_object_get(m, "content"), LMS_TEXT_ONLY, "system message content",
                            sys, e);
}

/* messages -> body.messages (+ body.system). Roles alternate: consecutive
 * same-role messages merge, tool results join the next user turn. */
static int convert_messages(const json_t *in, json_t *body, lm_err *e)
{
    json_t *msgs = json_array(), *m;
    lms_buf sys = {0};
    size_t i;
    int rc = msgs ? LM_OK : lms_oom(e);
    json_array_foreach (in, i, m) {
        const char *role = lms_jstr(m, "role");
        json_t *blocks;
        if (rc != LM_OK)
            break;
        if (lms_streq(role, "system") || lms_streq(role, "developer")) {
            rc = system_text(m, &sys, e);
            continue;
        }
        blocks = json_array();
        rc = blocks ? message_blocks(m, role, blocks, e) : lms_oom(e);
        if (rc == LM_OK)
            rc = lms_push_turn(msgs, lms_streq(role, "assistant") ? "assistant" : "user", "content",
                               blocks, e);
        else
            json_decref(blocks);
    }
    if (rc == LM_OK && json_array_size(msgs) == 0)
        rc = lms_bad_request(e, "messages must contain at least one user or assistant message");
    collapse_single_text(msgs);
    if (rc == LM_OK && sys.n > 0 && lms_oset(body, "system", lms_buf_json(&sys)))
        rc = lms_oom(e);
    if (rc == LM_OK && json_object_set(body, "messages", msgs))
        rc = lms_oom(e);
    lms_buf_free(&sys);
    json_decref(msgs);
    return rc;
}

/* ---- tools and parameters ----------------------------------------------- */

/* tools -> [{name, description, input_schema}] (Anthropic requires a
 * schema: an empty object schema when the function has none). */
static int convert_tools(const json_t *tools, json_t *body, lm_err *e)
{
    json_t *out = lms_functions(tools, "input_schema", e), *t;
    size_t i;
    if (out == NULL)
        return LM_EINVAL;
    json_array_foreach (out, i, t)
        if (json_object_get(t, "input_schema") == NULL &&
            lms_oset(t, "input_schema", json_pack("{s:s,s:{}}", "type", "object", "properties")))
            break;
    if (i < json_array_size(out) ||
        (json_array_size(out) > 0 && json_object_set(body, "tools", out))) {
        json_decref(out);
        return lms_oom(e);
    }
    json_decref(out);
    return LM_OK;
}

/* tool_choice -> {type: auto|none|any|tool}; parallel_tool_calls:false ->
 * disable_parallel_tool_use (on "auto" when only tools were given). */
static int convert_tool_choice(const json_t *canon, json_t *body, lm_err *e)
{
    static const char *const types[] = {"auto", "auto", "none", "any", "tool"};
    const char *name;
    int serial = json_is_false(json_object_get(canon, "parallel_tool_calls"));
    int tc = lms_tool_choice(json_object_get(canon, "tool_choice"), &name, e);
    if (tc < 0)
        return tc;
    if (tc == LMS_TC_UNSET && !(serial && json_object_get(body, "tools")))
        return LM_OK;
    json_t *o = json_pack("{s:s}", "type", types[tc]);
    if (o && name && lms_oset(o, "name", json_string(name)))
        json_decref(o), o = NULL;
    if (o && serial && tc != LMS_TC_NONE &&
        json_object_set_new(o, "disable_parallel_tool_use", json_true()))
        json_decref(o), o = NULL;
    return lms_oset(body, "tool_choice", o) ? lms_oom(e) : LM_OK;
}

/* max_tokens (required by Anthropic), stop, user, sampling, stream. */
static int convert_params(const cl_inst *is, const lm_call *c, const json_t *canon, json_t *body,
                          lm_err *e)
{
    const json_t *mt = json_object_get(canon, "max_completion_tokens"), *user;
    json_t *stop = NULL;
    if (!json_is_integer(mt))
        mt = json_object_get(canon, "max_tokens");
    int rc = lms_stop_list(json_object_get(canon, "stop"), 1024, &stop, e);
    if (rc != LM_OK)
        return rc;
    user = json_object_get(canon, "user");
    if (lms_oset(
            body, "max_tokens",
            json_integer(json_is_integer(mt) ? json_integer_value(mt) : is->max_tokens_default)) ||
        lms_copy_params(canon, body, cl_params) ||
        (json_array_size(stop) > 0 && json_object_set(body, "stop_sequences", stop)) ||
        (json_is_string(user) && lms_oset(body, "metadata", json_pack("{s:O}", "user_id", user))) ||
        (c->stream && json_object_set_new(body, "stream", json_true())))
        rc = lms_oom(e);
    json_decref(stop);
    return rc;
}

int cl_build_request(void *ist, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    cl_inst *is = ist;
    cl_req *rs = is->h->alloc(sizeof(*rs));
    const char *model = lms_nonempty(c->model) ? c->model : lms_jstr(canon, "model");
    json_t *body = json_pack("{s:s?}", "model", model);
    if (rs != NULL)
        *rs = (cl_req){.in = -1, .cache_create = -1, .cache_read = -1, .out = -1};
    c->rstate = rs;
    int rc = rs && body ? LM_OK : lms_oom(e);
    if (rc == LM_OK)
        rc = convert_messages(json_object_get(canon, "messages"), body, e);
    if (rc == LM_OK)
        rc = convert_params(is, c, canon, body, e);
    if (rc == LM_OK)
        rc = convert_tools(json_object_get(canon, "tools"), body, e);
    if (rc == LM_OK)
        rc = convert_tool_choice(canon, body, e);
    if (rc != LM_OK) {
        json_decref(body);
        return rc;
    }
    lms_header hdrs[] = {{"x-api-key", is->api_key},
                         {"anthropic-version", is->version},
                         {is->beta.n ? "anthropic-beta" : NULL, is->beta},
                         {c->stream ? "accept" : NULL, LM_STR("text/event-stream")},
                         {NULL, {NULL, 0}}};
    if (hdrs[2].name == NULL) /* no beta header: the list ends earlier */
        hdrs[2] = hdrs[3], hdrs[3].name = NULL;
    return lms_post_json(is->h, u, is->base_url, "/v1/messages", hdrs, body, e);
}
