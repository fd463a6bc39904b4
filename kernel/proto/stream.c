/* stream.c - one streamed answer: frame splitter -> plugin parse_event ->
 * emit sink (stream.h). Thread: the request's worker; the caller owns the
 * lm_stream_t and frees it with lm_stream_free. */
#include "proto/stream.h"

#include "core/errors.h"
#include "plugin/plugin.h"

#include <string.h>

void lm_stream_init(lm_stream_t *s, lm_inst_t *inst, lm_call *call, int64_t created,
                    lm_emit_sink_fn sink, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->inst = inst;
    s->call = call;
    lm_frame_init(&s->frame, inst->plugin->vt.framing, LM_FRAME_MAX_EVENT);
    lm_emit_init(&s->emit, inst->plugin->vt.usage_mode, call->request_id, call->model, created,
                 sink, arg);
}

void lm_stream_free(lm_stream_t *s)
{
    lm_frame_free(&s->frame);
}

static int on_event(void *arg, const lm_event *ev)
{
    lm_stream_t *s = arg;
    if (s->done)
        return 0;
    memset(&s->err, 0, sizeof(s->err));
    const lm_plugin_t *prev = lm_plugin_enter(s->inst->plugin);
    int rc = s->inst->plugin->vt.parse_event(s->inst->istate, s->call, ev, &s->emit, &s->err);
    lm_plugin_leave(prev);
    if (rc == LM_DONE) {
        s->done = 1;
        if (lm_emit_close(&s->emit) < 0)
            return lm_error_set(&s->err, LM_ERR, 500, "api_error", NULL, "client stream closed");
        return LM_DONE;
    }
    if (rc < 0) {
        if (s->err.http_status == 0)
            lm_error_set(&s->err, rc, 502, "api_error", "upstream_error",
                         "the upstream stream could not be translated");
        return rc;
    }
    return 0;
}

static int result(lm_stream_t *s, int rc)
{
    if (rc == LM_DONE || rc == LM_OK)
        return rc;
    s->failed = 1;
    if (rc == LM_ERR && s->err.http_status == 0) /* splitter refused an event */
        lm_error_set(&s->err, rc, 502, "api_error", "upstream_error",
                     "upstream stream event exceeds the 1 MiB limit");
    return rc;
}

int lm_stream_feed(lm_stream_t *s, const char *p, size_t n)
{
    if (s->done)
        return LM_DONE;
    if (s->failed)
        return LM_ERR;
    return result(s, lm_frame_feed(&s->frame, p, n, on_event, s));
}

int lm_stream_finish(lm_stream_t *s)
{
    if (s->done)
        return LM_DONE;
    if (s->failed)
        return LM_ERR;
    int rc = result(s, lm_frame_finish(&s->frame, on_event, s));
    return rc;
}
