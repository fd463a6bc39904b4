/*
 * ernie_stream.c - v1 stream events: SSE, one event per sentence, each with
 * its text in "result", the running usage, and is_end on the last. No
 * "[DONE]" (one is tolerated). The kernel adds the role, keeps one finish
 * per choice and synthesises it when the stream ends without one.
 */
#include "ernie.h"

/* An in-stream error event. A refused token cannot be retried here (bytes
 * may have reached the client), but the next request must not reuse it. */
static int eb1_stream_error(const eb1_inst *in, const eb1_req *rs, json_int_t code)
{
    eb1_refusal(in, rs, code, 0);
    return LM_EUPSTREAM;
}

/* The event's text and its function call (v1 has one per answer: sent once,
 * whole, as tool call 0). */
static int eb1_event_deltas(const eb1_inst *in, lm_call *c, eb1_req *rs, const json_t *j,
                            lm_emit *out, lm_err *e)
{
    const json_t *res = json_object_get(j, "result"), *fc = json_object_get(j, "function_call");
    int rc =
        lms_emit_text(in->h, out, 0, "content", json_string_value(res), json_string_length(res), e);
    if (rc == LM_OK && json_is_object(fc) && !rs->called) {
        rs->called = 1;
        rc = lms_emit_tool_call(in->h, out, 0, 0, lms_tool_call_id(c, 0), lms_jstr(fc, "name"),
                                lms_tool_args_text(json_object_get(fc, "arguments")), e);
    }
    return rc;
}

int eb1_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    const eb1_inst *in = istate;
    eb1_req *rs = c->rstate;
    lm_usage us;

    if (rs == NULL)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "ernie: no request state");
    if (lms_event_is_done(ev))
        return LM_DONE;
    if (ev->data.n == 0)
        return LM_OK;
    json_t *j = lms_parse_object(ev->data, "an ERNIE v1 stream event", e);
    if (j == NULL)
        return LM_EUPSTREAM;
    json_int_t code = eb1_fill_error(in, rs, j, 0, e);
    int rc = code != 0 ? eb1_stream_error(in, rs, code) : eb1_event_deltas(in, c, rs, j, out, e);
    if (rc == LM_OK && lm_usage_from_json(json_object_get(j, "usage"), &us))
        rc = lms_emit_usage(in->h, out, &us, e);
    /* is_end, or a blocked answer: nothing after it is shown */
    if (rc == LM_OK && (json_is_true(json_object_get(j, "is_end")) ||
                        json_is_true(json_object_get(j, "need_clear_history")))) {
        rc = lms_emit_finish(in->h, out, 0,
                             eb1_finish(j, json_is_object(json_object_get(j, "function_call"))), e);
        rc = rc == LM_OK ? LM_DONE : rc;
    }
    json_decref(j);
    return rc;
}
