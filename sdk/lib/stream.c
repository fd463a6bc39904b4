/* stream.c - stream event and emit helpers (lmsdk.h). */
#include "lmsdk.h"

int lms_event_is_done(const lm_event *ev)
{
    return ev->data.n == 6 && memcmp(ev->data.p, "[DONE]", 6) == 0;
}

static int emitted(int rc, lm_err *e)
{
    if (rc < 0)
        return lm_err_set(e, rc, 500, "api_error", NULL, "the client stream is closed");
    return LM_OK;
}

int lms_emit_text(const lm_host_api *h, lm_emit *out, int index, const char *key, const char *s,
                  size_t n, lm_err *e)
{
    if (n == 0)
        return LM_OK;
    json_t *d = json_object();
    if (d == NULL || json_object_set_new(d, key ? key : "content", json_stringn(s, n)) < 0) {
        json_decref(d);
        return lms_oom(e);
    }
    return emitted(h->emit_delta(out, index, d, NULL), e);
}

int lms_emit_finish(const lm_host_api *h, lm_emit *out, int index, const char *reason, lm_err *e)
{
    return emitted(h->emit_delta(out, index, NULL, reason ? reason : "stop"), e);
}

int lms_emit_usage(const lm_host_api *h, lm_emit *out, const lm_usage *u, lm_err *e)
{
    return emitted(h->emit_usage(out, u), e);
}

int lms_emit_tool_call(const lm_host_api *h, lm_emit *out, int index, int call_index, json_t *id,
                       const char *name, json_t *args, lm_err *e)
{
    json_t *fn = json_object(), *tc = json_pack("{s:i}", "index", call_index);
    if (fn == NULL || tc == NULL)
        goto oom;
    if (id != NULL) {
        json_object_set_new(tc, "id", id);
        json_object_set_new(tc, "type", json_string("function"));
        json_object_set_new(fn, "name", json_string(name ? name : ""));
        id = NULL;
    }
    if (args != NULL)
        json_object_set_new(fn, "arguments", args);
    args = NULL;
    json_object_set_new(tc, "function", fn);
    return emitted(h->emit_delta(out, index, json_pack("{s:[o]}", "tool_calls", tc), NULL), e);
oom:
    json_decref(fn);
    json_decref(tc);
    json_decref(id);
    json_decref(args);
    return lms_oom(e);
}
