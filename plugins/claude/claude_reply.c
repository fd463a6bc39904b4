/* claude_reply.c - Anthropic answers and SSE events as OpenAI choices,
 * tool calls and usage (claude.h). */
#include "claude.h"

#include <stdio.h>
#include <string.h>

#define CL_MAX_BLOCKS 4096

/* Anthropic stop_reason -> OpenAI finish_reason, one row per outcome. */
/* clang-format off */
static const lms_rename cl_finish[] = {
    {"end_turn", "stop"}, {"stop_sequence", "stop"}, {"pause_turn", "stop"},
    {"max_tokens", "length"}, {"model_context_window_exceeded", "length"},
    {"tool_use", "tool_calls"}, {"refusal", "content_filter"}, {NULL, NULL}};
/* clang-format on */

/* ---- usage -------------------------------------------------------------- */

/* Counts seen so far; a later report (message_delta) overrides each field
 * it carries. */
static void read_usage(cl_req *rs, const json_t *usage)
{
    int64_t *const f[] = {&rs->in, &rs->cache_create, &rs->cache_read, &rs->out};
    static const char *const k[] = {"input_tokens", "cache_creation_input_tokens",
                                    "cache_read_input_tokens", "output_tokens"};
    for (int i = 0; i < 4; i++) {
        int64_t v = lm_json_int_or_unknown(usage, k[i]);
        if (v >= 0)
            *f[i] = v;
    }
}

/* prompt = input + cache creation + cache reads; cached = cache reads. */
static lm_usage usage_of(const cl_req *rs)
{
    lm_usage u = LM_USAGE_UNKNOWN;
    if (rs->in >= 0 || rs->cache_create >= 0 || rs->cache_read >= 0)
        u.prompt = (rs->in > 0 ? rs->in : 0) + (rs->cache_create > 0 ? rs->cache_create : 0) +
                   (rs->cache_read > 0 ? rs->cache_read : 0);
    u.completion = rs->out;
    u.total = (u.prompt >= 0 && rs->out >= 0) ? u.prompt + rs->out : -1;
    u.cached = rs->cache_read;
    return u;
}

/* ---- whole answers ------------------------------------------------------ */

/* content blocks: every text block (not only the first), thinking ->
 * reasoning_content, tool_use -> tool calls keeping Anthropic's ids. */
static int read_blocks(const lm_call *c, const json_t *content, lms_reply *r, lm_err *e)
{
    size_t i;
    json_t *b;
    json_array_foreach (content, i, b) {
        const char *type = lms_jstr(b, "type"), *id = lms_jstr(b, "id"),
                   *name = lms_jstr(b, "name");
        const json_t *t = json_object_get(b, lms_streq(type, "thinking") ? "thinking" : "text");
        int rc = LM_OK;
        if (lms_streq(type, "text") || lms_streq(type, "thinking"))
            lms_reply_text(r, json_string_value(t), json_string_length(t),
                           lms_streq(type, "thinking"));
        else if (lms_streq(type, "tool_use") && (id == NULL || name == NULL))
            rc = lms_bad_upstream(e, "tool_use block without id or name");
        else if (lms_streq(type, "tool_use"))
            rc = lms_reply_call(r,
                                lms_tool_call(c, 0, json_string(id), name,
                                              lms_tool_args_text(json_object_get(b, "input"))),
                                e);
        if (rc != LM_OK)
            return rc;
    }
    return r->text.oom || r->think.oom ? lms_oom(e) : LM_OK;
}

int cl_parse_response(void *ist, lm_call *c, int status, lm_str body, json_t **out, lm_usage *usage,
                      lm_err *e)
{
    cl_inst *is = ist;
    cl_req tmp = {.in = -1, .cache_create = -1, .cache_read = -1, .out = -1};
    lms_reply r = {0};
    json_t *root = lms_parse_object(body, "body", e), *err = json_object_get(root, "error");
    int rc = root ? LM_OK : LM_EUPSTREAM;
    (void)status;
    *out = NULL;
    if (rc == LM_OK && lms_streq(lms_jstr(root, "type"), "error"))
        rc = cl_error(
            lms_jstr(err, "type"), 0,
            lms_jstr(err, "message") ? lms_jstr(err, "message") : "Anthropic returned an error", e);
    else if (rc == LM_OK && !json_is_array(json_object_get(root, "content")))
        rc = lms_bad_upstream(e, "no content array");
    if (rc == LM_OK)
        rc = read_blocks(c, json_object_get(root, "content"), &r, e);
    if (rc == LM_OK) {
        const char *fr = lms_finish_map(cl_finish, lms_jstr(root, "stop_reason"), 0);
        *out = lms_completion(is->h, c, lms_jstr(root, "id"), lms_jstr(root, "model"),
                              json_pack("[o]", lms_reply_choice(&r, 0, fr, e)), e);
        rc = *out ? LM_OK : LM_ENOMEM;
        read_usage(&tmp, json_object_get(root, "usage"));
        *usage = usage_of(&tmp);
    }
    lms_reply_free(&r);
    json_decref(root);
    return rc;
}

/* ---- streams ------------------------------------------------------------ */

static cl_block *block_at(cl_inst *is, cl_req *rs, const json_t *d)
{
    const json_t *ix = json_object_get(d, "index");
    json_int_t i = json_is_integer(ix) ? json_integer_value(ix) : -1;
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

/* A block's text (text or thinking) as a delta. */
static int emit_text(cl_inst *is, lm_emit *out, const json_t *o, int thinking, lm_err *e)
{
    const json_t *t = json_object_get(o, thinking ? "thinking" : "text");
    return lms_emit_text(is->h, out, 0, thinking ? "reasoning_content" : "content",
                         json_string_value(t), json_string_length(t), e);
}

/* content_block_start: text/thinking may carry text; tool_use opens a tool
 * call numbered by tool_use blocks (not by Anthropic's block index). */
static int on_block_start(cl_inst *is, cl_req *rs, const json_t *d, lm_emit *out, lm_err *e)
{
    const json_t *cb = json_object_get(d, "content_block");
    const char *type = lms_jstr(cb, "type");
    cl_block *b = block_at(is, rs, d);
    if (b == NULL)
        return lms_bad_upstream(e, "content_block_start without a valid index");
    b->kind = lms_streq(type, "text")       ? CL_TEXT
              : lms_streq(type, "thinking") ? CL_THINK
              : lms_streq(type, "tool_use") ? CL_TOOL
                                            : CL_OTHER; /* redacted_thinking, server tools */
    if (b->kind == CL_TEXT || b->kind == CL_THINK)
        return emit_text(is, out, cb, b->kind == CL_THINK, e);
    if (b->kind != CL_TOOL)
        return LM_OK;
    if (lms_jstr(cb, "id") == NULL || lms_jstr(cb, "name") == NULL)
        return lms_bad_upstream(e, "tool_use block without id or name");
    b->tool = rs->ntools++;
    return lms_emit_tool_call(is->h, out, 0, b->tool, json_string(lms_jstr(cb, "id")),
                              lms_jstr(cb, "name"), json_string(""), e);
}

static int on_block_delta(cl_inst *is, cl_req *rs, const json_t *d, lm_emit *out, lm_err *e)
{
    const json_t *delta = json_object_get(d, "delta");
    const char *type = lms_jstr(delta, "type");
    cl_block *b = block_at(is, rs, d);
    if (b == NULL)
        return lms_bad_upstream(e, "content_block_delta without a valid index");
    if (lms_streq(type, "text_delta") || lms_streq(type, "thinking_delta"))
        return emit_text(is, out, delta, lms_streq(type, "thinking_delta"), e);
    if (!lms_streq(type, "input_json_delta"))
        return LM_OK; /* signature_delta, citations_delta, unknown */
    if (b->kind != CL_TOOL)
        return lms_bad_upstream(e, "input_json_delta outside a tool_use block");
    if (json_string_length(json_object_get(delta, "partial_json")) == 0)
        return LM_OK;
    b->has_args = 1;
    return lms_emit_tool_call(is->h, out, 0, b->tool, NULL, NULL,
                              json_incref(json_object_get(delta, "partial_json")), e);
}

/* A tool_use block that got no argument fragment still gets "{}". */
static int on_block_stop(cl_inst *is, cl_req *rs, const json_t *d, lm_emit *out, lm_err *e)
{
    cl_block *b = block_at(is, rs, d);
    if (b == NULL || b->kind != CL_TOOL || b->has_args)
        return LM_OK;
    b->has_args = 1;
    return lms_emit_tool_call(is->h, out, 0, b->tool, NULL, NULL, json_string("{}"), e);
}

/* message_start/message_delta usage (running totals), the finish reason. */
static int on_message(cl_inst *is, cl_req *rs, const json_t *d, int start, lm_emit *out, lm_err *e)
{
    const json_t *usage = json_object_get(start ? json_object_get(d, "message") : d, "usage");
    const char *reason = lms_jstr(json_object_get(d, "delta"), "stop_reason");
    read_usage(rs, usage);
    lm_usage u = usage_of(rs);
    int rc = lms_emit_usage(is->h, out, &u, e);
    if (rc == LM_OK && !start && reason != NULL)
        rc = lms_emit_finish(is->h, out, 0, lms_finish_map(cl_finish, reason, 0), e);
    return rc;
}

/* The event type comes from the data's "type", else the SSE event name. */
static int on_event(cl_inst *is, cl_req *rs, const char *type, const json_t *d, lm_emit *out,
                    lm_err *e)
{
    const json_t *err = json_object_get(d, "error");
    if (lms_streq(type, "message_start") || lms_streq(type, "message_delta"))
        return on_message(is, rs, d, lms_streq(type, "message_start"), out, e);
    if (lms_streq(type, "content_block_start"))
        return on_block_start(is, rs, d, out, e);
    if (lms_streq(type, "content_block_delta"))
        return on_block_delta(is, rs, d, out, e);
    if (lms_streq(type, "content_block_stop"))
        return on_block_stop(is, rs, d, out, e);
    if (lms_streq(type, "message_stop"))
        return LM_DONE;
    if (lms_streq(type, "error"))
        return cl_error(
            lms_jstr(err, "type"), 0,
            lms_jstr(err, "message") ? lms_jstr(err, "message") : "Anthropic stream error", e);
    return LM_OK; /* ping, unknown */
}

int cl_parse_event(void *ist, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    char name[40];
    json_t *d;
    int rc;
    if (ev->data.n == 0)
        return LM_OK;
    if ((d = lms_parse_object(ev->data, "stream event", e)) == NULL)
        return LM_EUPSTREAM;
    snprintf(name, sizeof(name), "%.*s", (int)(ev->event.n < 39 ? ev->event.n : 39),
             ev->event.p ? ev->event.p : "");
    rc = on_event(ist, c->rstate, lms_jstr(d, "type") ? lms_jstr(d, "type") : name, d, out, e);
    json_decref(d);
    return rc;
}
