/* output.c - writing the client's reply: errors (secrets scrubbed), the
 * route header, SSE events and the stream's end. Thread: the relay's
 * worker. Buffers written here belong to the relay. */
#include "relay/output.h"
#include "relay/trace.h"

#include "core/errors.h"
#include "proto/response.h"
#include "relay/cache_rec.h"
#include "relay/passthru.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    /* "channel=%s; attempts=%d" without snprintf (a request's hot path) */
    const char *name = r->route->inst->chan->name;
    size_t n = strnlen(name, sizeof(v) - 40);
    memcpy(v, "channel=", 8);
    memcpy(v + 8, name, n);
    n += 8;
    memcpy(v + n, "; attempts=", 11);
    n += 11;
    if (r->attempt >= 0 && r->attempt < 10) {
        v[n++] = (char)('0' + r->attempt);
        v[n] = '\0';
    } else {
        snprintf(v + n, sizeof(v) - n, "%d", r->attempt);
    }
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
    lm_trace_error(r, e->code);
    lm_err safe = scrubbed(r, e);
    if (r->req == NULL)
        return 0;
    if (r->api->error == NULL) {
        lm_http_reply_error(r->req, &safe, r->id);
        return 0;
    }
    int status; /* the client's API shapes it, and may use its own status (529) */
    char *body = r->api->error(&safe, &status);
    r->client_status = status;
    lm_http_reply(r->req, status, "application/json", body, strlen(body), r->id);
    free(body);
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
    if (r->audio) { /* binary audio: the chunked body just ends (cut short) */
        r->stream_error = e != NULL;
        if (r->req)
            lm_http_stream_end(r->req);
        return;
    }
    if (r->pt) { /* the upstream's own events ended it; only an error is ours to add */
        lm_err safe;
        if (e)
            safe = scrubbed(r, e);
        r->stream_error = e != NULL;
        lm_passthru_end(r, e ? &safe : NULL);
        lm_out_flush(r);
        if (r->req)
            lm_http_stream_end(r->req);
        return;
    }
    if (r->api_st) { /* the client's API ends its stream its own way */
        if (e)
            r->stream_error = 1;
        lm_err safe;
        if (e)
            safe = scrubbed(r, e);
        r->api->stream_end(r->api_st,
                           r->want_usage || !r->api->usage_if_asked ? &r->st.emit.usage : NULL,
                           e ? &safe : NULL, &r->out);
        lm_out_flush(r);
        if (r->req)
            lm_http_stream_end(r->req);
        return;
    }
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

/* on_event's output for another API: the canonical events the scripts
 * sent ("data: {...}" blocks) go through the API's translator. */
static int api_events(lm_relay_t *r, lm_buf_t *sse)
{
    const char *p = lm_buf_cstr(sse), *end = p + sse->len;
    while (p < end) {
        const char *next = strstr(p, "\n\n");
        const char *stop = next ? next : end;
        if (stop - p > 6 && strncmp(p, "data: ", 6) == 0 && strncmp(p + 6, "[DONE]", 6) != 0 &&
            r->api->stream_chunk(r->api_st, p + 6, (size_t)(stop - p - 6), &r->out) < 0)
            return -1;
        p = next ? next + 2 : end;
    }
    return 0;
}

/* Emit sink: each canonical chunk becomes one SSE event in r->out, or the
 * events of the client's API (r->api_st). Scripts see canonical chunks. */
int lm_out_sse_sink(void *arg, const char *json, size_t len)
{
    lm_relay_t *r = arg;
    if (r->req == NULL)
        return -1;
    lm_cache_rec_chunk(r, json, len); /* canonical, before on_event (cache.h) */
    if (r->trace.collect)
        lm_trace_answer(r, json, len);
    if (r->lua && (lm_lua_call_stages(r->lua) & LM_LUA_BIT(LM_LUA_STAGE_EVENT))) {
        lm_err e;
        lm_buf_t sse = {0};
        int rc = lm_rlua_event(r->lua, json, len, r->api_st ? &sse : &r->out, &e);
        if (rc == 0 && r->api_st && api_events(r, &sse) < 0) {
            lm_error_set(&e, -1, 500, "api_error", NULL, "out of memory");
            rc = -1;
        }
        lm_buf_free(&sse);
        if (rc < 0) {
            r->st.err = e; /* reported as the stream's error event */
            return -1;
        }
        return 0;
    }
    if (r->api_st)
        return r->api->stream_chunk(r->api_st, json, len, &r->out);
    if (lm_buf_add(&r->out, "data: ", 6) < 0 || lm_buf_add(&r->out, json, len) < 0 ||
        lm_buf_add(&r->out, "\n\n", 2) < 0)
        return -1;
    return 0;
}
