/*
 * ernie_chat.c - the v1 chat request body (docs/wire-formats.md 2.1 and the
 * Baidu translation notes; decisions in sdk/notes/ernie.md).
 *
 * v1 wants system text in a top-level "system", roles user / assistant /
 * function only, an odd strictly alternating history that starts and ends
 * on the user side, and one function call per turn. The kernel has already
 * validated roles, content types, tool messages and numeric ranges (the
 * table's param_ranges), so this file only reshapes.
 * Ownership: every json_t built here is owned by the eb1_conv or the body.
 */
#include "ernie.h"

#include <stdio.h>
#include <string.h>

#define EB1_MAX_STOP 4 /* stop sequences (v1 limit) */

/* What the message pass builds, all owned here. */
typedef struct eb1_conv {
    const eb1_inst *in;
    json_t *turns;   /* v1 messages: user / assistant / function */
    json_t *system;  /* JSON string: joined system/developer text, or NULL */
    json_t *names;   /* tool_call_id -> function name (first call of a turn) */
    json_t *dropped; /* tool_call_ids beyond the first of a turn */
} eb1_conv;

/* a LMS_TEXT_JOIN b as a new JSON string (the join only between two
 * non-empty texts). */
static json_t *eb1_join(const json_t *a, const json_t *b)
{
    lms_buf sb = {0};
    lms_buf_add(&sb, json_string_value(a), json_string_length(a));
    if (sb.n > 0 && json_string_length(b) > 0)
        lms_buf_adds(&sb, LMS_TEXT_JOIN);
    lms_buf_add(&sb, json_string_value(b), json_string_length(b));
    json_t *r = lms_buf_json(&sb);
    lms_buf_free(&sb);
    return r;
}

/* Record every assistant tool call id: the first of a turn is the one v1
 * can express (function_call); later ones are dropped with their results. */
static void eb1_index_calls(const json_t *msgs, eb1_conv *cv)
{
    const json_t *m, *tc;
    size_t i, k;
    json_array_foreach (msgs, i, m) {
        if (!lms_streq(lms_jstr(m, "role"), "assistant"))
            continue;
        json_array_foreach (json_object_get(m, "tool_calls"), k, tc) {
            const char *id = lms_jstr(tc, "id");
            const char *name = lms_jstr(json_object_get(tc, "function"), "name");
            if (id != NULL && k == 0 && name != NULL)
                json_object_set_new(cv->names, id, json_string(name));
            else if (id != NULL)
                json_object_set_new(cv->dropped, id, json_true());
        }
    }
}

/* Append turn t (stolen), merged into the previous turn when the roles
 * match: text joined, the first function_call kept. */
static int eb1_push(eb1_conv *cv, json_t *t, lm_err *e)
{
    size_t n = json_array_size(cv->turns);
    json_t *prev = n ? json_array_get(cv->turns, n - 1) : NULL;
    if (t == NULL)
        return lms_oom(e);
    if (prev == NULL || !lms_streq(lms_jstr(prev, "role"), lms_jstr(t, "role")))
        return lms_aadd(cv->turns, t) == 0 ? LM_OK : lms_oom(e);
    json_t *fc = json_object_get(t, "function_call");
    int rc = lms_oset(prev, "content",
                      eb1_join(json_object_get(prev, "content"), json_object_get(t, "content")));
    if (fc != NULL && json_object_get(prev, "function_call") == NULL)
        json_object_set(prev, "function_call", fc);
    else if (fc != NULL)
        eb1_debug(cv->in, "dropping a second function call merged into one turn", "function_call");
    json_decref(t);
    return rc == 0 ? LM_OK : lms_oom(e);
}

/* {"name","arguments"} from an OpenAI function object, arguments as text. */
static json_t *eb1_fcall(const json_t *fn)
{
    const char *name = lms_jstr(fn, "name");
    return json_pack("{s:s,s:o}", "name", name ? name : "", "arguments",
                     lms_tool_args_text(json_object_get(fn, "arguments")));
}

/* text is stolen. tool_calls[0] (or a legacy function_call) -> function_call. */
static int eb1_assistant_turn(eb1_conv *cv, const json_t *m, json_t *text, lm_err *e)
{
    const json_t *tcs = json_object_get(m, "tool_calls");
    const json_t *legacy = json_object_get(m, "function_call");
    json_t *t = json_pack("{s:s,s:o}", "role", "assistant", "content", text);
    if (json_array_size(tcs) > 1)
        eb1_debug(cv->in, "v1 takes one function call per turn, dropping", "tool_calls[1..]");
    if (json_array_size(tcs) > 0)
        lms_oset(t, "function_call",
                 eb1_fcall(json_object_get(json_array_get(tcs, 0), "function")));
    else if (json_is_object(legacy))
        lms_oset(t, "function_call", eb1_fcall(legacy));
    return eb1_push(cv, t, e);
}

/* A tool result -> {"role":"function","name":<looked up by tool_call_id>}.
 * text is stolen. */
static int eb1_tool_turn(eb1_conv *cv, const json_t *m, json_t *text, lm_err *e)
{
    const char *id = lms_jstr(m, "tool_call_id");
    const char *name = lms_jstr(m, "name"); /* legacy "function" messages */
    if (id != NULL && json_object_get(cv->dropped, id) != NULL) {
        eb1_debug(cv->in, "dropping the result of a dropped tool call", "tool");
        json_decref(text);
        return LM_OK;
    }
    if (id != NULL && lms_jstr(cv->names, id) != NULL)
        name = lms_jstr(cv->names, id);
    if (!lms_nonempty(name)) {
        json_decref(text);
        return lms_bad_request(e, "a tool message must answer a tool_call_id of an earlier "
                                  "assistant message");
    }
    return eb1_push(
        cv, json_pack("{s:s,s:s,s:o}", "role", "function", "name", name, "content", text), e);
}

/* The text of message i's content (a new JSON string in *out). */
static int eb1_text(const json_t *m, size_t i, json_t **out, lm_err *e)
{
    char where[48];
    lms_buf b = {0};
    snprintf(where, sizeof where, "messages[%zu].content", i);
    int rc = lms_content_text(json_object_get(m, "content"), LMS_TEXT_ONLY, where, &b, e);
    if (rc == LM_OK && (*out = lms_buf_json(&b)) == NULL)
        rc = lms_oom(e);
    lms_buf_free(&b);
    return rc;
}

static int eb1_one_message(eb1_conv *cv, const json_t *m, size_t i, lm_err *e)
{
    const char *role = lms_jstr(m, "role");
    json_t *text = NULL;
    int rc = eb1_text(m, i, &text, e);
    if (rc != LM_OK)
        return rc;
    if (lms_streq(role, "system") || lms_streq(role, "developer")) {
        json_t *j = cv->system ? eb1_join(cv->system, text) : json_incref(text);
        json_decref(text);
        json_decref(cv->system);
        cv->system = j;
        return j ? LM_OK : lms_oom(e);
    }
    if (lms_streq(role, "assistant"))
        return eb1_assistant_turn(cv, m, text, e);
    if (lms_streq(role, "tool") || lms_streq(role, "function"))
        return eb1_tool_turn(cv, m, text, e);
    if (lms_streq(role, "user"))
        return eb1_push(cv, json_pack("{s:s,s:o}", "role", "user", "content", text), e);
    json_decref(text);
    return lms_bad_request(e, "messages[%zu].role is not supported", i);
}

/* user and function turns sit at odd positions (1st, 3rd, ...), assistant
 * turns at even ones (Baidu's rule for messages). */
static int eb1_user_side(const json_t *t)
{
    return !lms_streq(lms_jstr(t, "role"), "assistant");
}

/* Make the history what v1 accepts: start with a user turn (leading
 * assistant/function turns dropped), end on the user side (trailing
 * assistant turns dropped), strictly alternate. Consecutive same-role turns
 * were merged while pushing, so the count is then odd. */
static int eb1_repair(const eb1_inst *in, json_t *turns, lm_err *e)
{
    size_t i, n;
    while (json_array_size(turns) > 0 &&
           !lms_streq(lms_jstr(json_array_get(turns, 0), "role"), "user")) {
        eb1_debug(in, "dropping a leading turn v1 cannot start with",
                  lms_jstr(json_array_get(turns, 0), "role"));
        json_array_remove(turns, 0);
    }
    while ((n = json_array_size(turns)) > 0 && !eb1_user_side(json_array_get(turns, n - 1))) {
        eb1_debug(in, "dropping a trailing turn v1 cannot end with", "assistant");
        json_array_remove(turns, n - 1);
    }
    if (json_array_size(turns) == 0)
        return lms_bad_request(e, "messages must contain a user message");
    for (i = 0; i < n; i++)
        if (eb1_user_side(json_array_get(turns, i)) != (i % 2 == 0))
            return lms_bad_request(e, "ERNIE v1 needs user and assistant turns to alternate: a "
                                      "tool result must be followed by an assistant message");
    return LM_OK;
}

static int eb1_messages(eb1_conv *cv, const json_t *msgs, lm_err *e)
{
    const json_t *m;
    size_t i;
    int rc = LM_OK;
    if (!cv->turns || !cv->names || !cv->dropped)
        return lms_oom(e);
    eb1_index_calls(msgs, cv);
    json_array_foreach (msgs, i, m) {
        if ((rc = eb1_one_message(cv, m, i, e)) != LM_OK)
            return rc;
    }
    return eb1_repair(cv->in, cv->turns, e);
}

/* ------------------------------------------------------------------ parameters */

/* Sent under v1 names when present; the kernel clamped the numbers. */
static const lms_rename eb1_params[] = {
    {"temperature", NULL}, {"top_p", NULL},          {"penalty_score", NULL},
    {"user", "user_id"},   {"disable_search", NULL}, {"enable_citation", NULL},
    {NULL, NULL}};

/* max_tokens (wins) or max_completion_tokens -> max_output_tokens; the
 * frequency_penalty f -> penalty_score 1 + f/2 unless the client sent
 * penalty_score itself (f <= 0 is v1's default 1.0); stop -> at most 4. */
static int eb1_numbers(const json_t *canon, json_t *body, lm_err *e)
{
    const json_t *mt = json_object_get(canon, "max_tokens");
    const json_t *fp = json_object_get(canon, "frequency_penalty");
    json_t *stop = NULL;
    if (!json_is_number(mt))
        mt = json_object_get(canon, "max_completion_tokens");
    if (json_is_number(mt) &&
        lms_oset(body, "max_output_tokens", json_integer((json_int_t)json_number_value(mt))) < 0)
        return lms_oom(e);
    if (json_is_number(fp) && json_object_get(body, "penalty_score") == NULL) {
        double f = json_number_value(fp);
        if (lms_oset(body, "penalty_score", json_real(f > 0 ? 1.0 + f / 2.0 : 1.0)) < 0)
            return lms_oom(e);
    }
    int rc = lms_stop_list(json_object_get(canon, "stop"), EB1_MAX_STOP, &stop, e);
    if (rc == LM_OK && json_array_size(stop) > 0)
        json_object_set(body, "stop", stop);
    json_decref(stop);
    return rc;
}

/* tools -> functions: the {"type":"function","function":{..}} wrapper goes. */
static int eb1_functions(const json_t *tools, json_t *body, lm_err *e)
{
    static const lms_rename keep[] = {
        {"name", NULL}, {"description", NULL}, {"parameters", NULL}, {NULL, NULL}};
    json_t *arr = json_array(), *t;
    size_t i;
    if (arr == NULL || lms_oset(body, "functions", arr) < 0)
        return lms_oom(e);
    json_array_foreach (tools, i, t) {
        const json_t *fn = json_object_get(t, "function");
        const char *type = lms_jstr(t, "type");
        json_t *f = json_object();
        if ((type != NULL && strcmp(type, "function") != 0) || lms_jstr(fn, "name") == NULL) {
            json_decref(f);
            return lms_bad_request(e, "tools[%zu]: ERNIE v1 takes named functions only", i);
        }
        if (lms_aadd(arr, f) < 0 || lms_copy_params(fn, f, keep) < 0)
            return lms_oom(e);
    }
    return LM_OK;
}

/* tools + tool_choice. "auto": v1's default, not sent. "none": no functions
 * are sent. "required": forcing "some function" has no v1 form; with a
 * single function it becomes that function, else it is dropped.
 * {"type":"function","function":{"name":..}} is v1's own shape. */
static int eb1_tools(const eb1_inst *in, const json_t *canon, json_t *body, lm_err *e)
{
    const json_t *tools = json_object_get(canon, "tools"),
                 *tc = json_object_get(canon, "tool_choice");
    const char *mode = json_is_string(tc) ? json_string_value(tc) : NULL;
    const char *name = lms_jstr(json_object_get(tc, "function"), "name");
    if (json_array_size(tools) == 0 || lms_streq(mode, "none"))
        return LM_OK;
    int rc = eb1_functions(tools, body, e);
    if (rc != LM_OK || tc == NULL || json_is_null(tc) || lms_streq(mode, "auto"))
        return rc;
    if (lms_streq(mode, "required") && json_array_size(tools) == 1)
        name = lms_jstr(json_object_get(json_array_get(tools, 0), "function"), "name");
    else if (lms_streq(mode, "required"))
        eb1_debug(in, "v1 cannot force one of several functions, dropping", "tool_choice");
    else if (name == NULL)
        return lms_bad_request(e, "tool_choice must be none, auto, required or a named function");
    if (name != NULL &&
        lms_oset(body, "tool_choice",
                 json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name", name)) < 0)
        return lms_oom(e);
    return LM_OK;
}

int eb1_chat_body(const eb1_inst *in, const lm_call *c, const json_t *canon, json_t **out,
                  lm_err *e)
{
    eb1_conv cv = {in, json_array(), NULL, json_object(), json_object()};
    int rc = eb1_messages(&cv, json_object_get(canon, "messages"), e);
    json_t *body = rc == LM_OK ? json_pack("{s:O}", "messages", cv.turns) : NULL;
    if (rc == LM_OK && body == NULL)
        rc = lms_oom(e);
    if (rc == LM_OK && json_string_length(cv.system) > 0)
        json_object_set(body, "system", cv.system);
    json_decref(cv.turns);
    json_decref(cv.system);
    json_decref(cv.names);
    json_decref(cv.dropped);
    if (rc == LM_OK && lms_copy_params(canon, body, eb1_params) < 0)
        rc = lms_oom(e);
    if (rc == LM_OK)
        rc = eb1_numbers(canon, body, e);
    if (rc == LM_OK)
        rc = eb1_tools(in, canon, body, e);
    if (rc == LM_OK && c->stream && lms_oset(body, "stream", json_true()) < 0)
        rc = lms_oom(e);
    if (rc != LM_OK)
        json_decref(body);
    *out = rc == LM_OK ? body : NULL;
    return rc;
}
