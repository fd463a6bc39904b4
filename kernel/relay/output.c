/* output.c - writing the client's reply: errors (secrets scrubbed), the
 * route header, SSE events and the stream's end. Thread: the relay's
 * worker. Buffers written here belong to the relay. */
#include "relay/output.h"

#include "core/errors.h"
#include "proto/response.h"

#include <stdio.h>
#include <stdlib.h>

/* A copy of e with the channel's secrets masked out of the message. */
static lm_err scrubbed(const lm_relay_t *r, const lm_err *e)
{
    lm_err c = *e;
    c.msg[sizeof(c.msg) - 1] = '\0';
    if (r->route)
        lm_conf_scrub(r->route->inst->chan, c.msg);
    return c;
}

/* x-longmen-route: which channel answered and after how many attempts. */
void lm_out_route_header(lm_relay_t *r)
{
    char v[192];
    if (r->req == NULL || r->route == NULL)
        return;
    snprintf(v, sizeof(v), "channel=%s; attempts=%d", r->route->inst->chan->name, r->attempt);
    lm_http_add_header(r->req, "X-Longmen-Route", v);
    if (r->clamped[0]) /* the provider's range changed what the client asked */
        lm_http_add_header(r->req, "X-Longmen-Clamped", r->clamped);
}

int lm_out_error(lm_relay_t *r, const lm_err *e)
{
    if (r->state == LM_RELAY_DONE)
        return 0;
    lm_out_route_header(r);
    lm_relay_to(r, LM_RELAY_DONE);
    r->client_status = e->http_status;
    lm_err safe = scrubbed(r, e);
    if (r->req)
        lm_http_reply_error(r->req, &safe, r->id);
    return 0;
}

int lm_out_err(lm_relay_t *r, int status, const char *type, const char *code, const char *msg)
{
    lm_err e;
    lm_error_set(&e, -1, status, type, code, msg);
    return lm_out_error(r, &e);
}

void lm_out_flush(lm_relay_t *r)
{
    if (r->out.len && r->req)
        lm_http_stream_write(r->req, r->out.p, r->out.len);
    lm_buf_reset(&r->out);
}

void lm_out_stream_end(lm_relay_t *r, const lm_err *e)
{
    if (r->state == LM_RELAY_DONE)
        return;
    lm_relay_to(r, LM_RELAY_DONE);
    r->client_status = 200;
    if (e) {
        r->stream_error = 1;
        lm_err safe = scrubbed(r, e);
        char *body = lm_error_body(&safe);
        lm_buf_adds(&r->out, "data: ");
        lm_buf_adds(&r->out, body);
        lm_buf_adds(&r->out, "\n\n");
        free(body);
    } else if (r->want_usage) {
        char *u = lm_emit_usage_chunk(&r->st.emit);
        if (u) {
            lm_buf_adds(&r->out, "data: ");
            lm_buf_adds(&r->out, u);
            lm_buf_adds(&r->out, "\n\n");
            free(u);
        }
    }
    lm_buf_adds(&r->out, "data: [DONE]\n\n");
    lm_out_flush(r);
    if (r->req)
        lm_http_stream_end(r->req);
}

/* Emit sink: each canonical chunk becomes one SSE event in r->out. */
int lm_out_sse_sink(void *arg, const char *json, size_t len)
{
    lm_relay_t *r = arg;
    if (r->req == NULL)
        return -1;
    if (r->lua && (lm_lua_call_stages(r->lua) & LM_LUA_BIT(LM_LUA_STAGE_EVENT))) {
        lm_err e;
        if (lm_rlua_event(r->lua, json, len, &r->out, &e) < 0) {
            r->st.err = e; /* reported as the stream's error event */
            return -1;
        }
        return 0;
    }
    if (lm_buf_add(&r->out, "data: ", 6) < 0 || lm_buf_add(&r->out, json, len) < 0 ||
        lm_buf_add(&r->out, "\n\n", 2) < 0)
        return -1;
    return 0;
}
