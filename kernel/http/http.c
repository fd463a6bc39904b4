/* http.c - the request calls of http.h: headers, body, replies, streams.
 * Thread: the connection's worker. What they return is borrowed from the
 * request (lives until its reply is sent). */
#include "http/http.h"

#include "core/errors.h"
#include "http/conn.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <evhtp/evhtp.h>
#include <stdlib.h>
#include <string.h>

/* Once the front drains, each reply closes its connection. */
static int draining(evhtp_request_t *req)
{
    lm_http_thread_t *t = lm_http_thread_of(req);
    return t && atomic_load(t->draining);
}

int lm_http_method(lm_http_req_t *r)
{
    if (r->method == htp_method_GET)
        return LM_HTTP_GET;
    return r->method == htp_method_POST ? LM_HTTP_POST : LM_HTTP_OTHER;
}

const char *lm_http_path(lm_http_req_t *r)
{
    return r->uri && r->uri->path && r->uri->path->full ? r->uri->path->full : "/";
}

const char *lm_http_header(lm_http_req_t *r, const char *name)
{
    return r ? evhtp_header_find(r->headers_in, name) : NULL;
}

const struct sockaddr *lm_http_peer(lm_http_req_t *r)
{
    return r && r->conn ? r->conn->saddr : NULL;
}

void lm_http_add_header(lm_http_req_t *r, const char *name, const char *value)
{
    if (r)
        evhtp_headers_add_header(r->headers_out, evhtp_header_new(name, value, 1, 1));
}

lm_str lm_http_body(lm_http_req_t *r)
{
    size_t n = evbuffer_get_length(r->buffer_in);
    lm_str s = {"", 0};
    if (n) {
        s.p = (const char *)evbuffer_pullup(r->buffer_in, -1);
        s.n = n;
    }
    return s;
}

static void add_header(lm_http_req_t *r, const char *k, const char *v)
{
    evhtp_headers_add_header(r->headers_out, evhtp_header_new(k, v, 0, 1));
}

void lm_http_reply(lm_http_req_t *r, int status, const char *ctype, const char *body, size_t n,
                   const char *request_id)
{
    if (r == NULL)
        return;
    if (draining(r))
        evhtp_request_set_keepalive(r, 0); /* close after the last in-flight reply */
    add_header(r, "Content-Type", ctype);
    if (request_id && *request_id)
        add_header(r, "X-Request-Id", request_id);
    evbuffer_add(r->buffer_out, body, n);
    lm_http_conn_reply_now(r);
    evhtp_send_reply(r, (evhtp_res)status);
}

void lm_http_reply_error(lm_http_req_t *r, const lm_err *e, const char *request_id)
{
    char *body = lm_error_body(e);
    lm_http_reply(r, e->http_status ? e->http_status : 500, "application/json", body, strlen(body),
                  request_id);
    free(body);
}

lm_http_body_t *lm_http_body_take(lm_http_req_t *r, lm_str *s)
{
    struct evbuffer *b = evbuffer_new();
    *s = (lm_str){"", 0};
    if (b == NULL || evbuffer_add_buffer(b, r->buffer_in) < 0) {
        if (b)
            evbuffer_free(b);
        return NULL;
    }
    size_t n = evbuffer_get_length(b);
    if (n) { /* one chain already (lm_http_body pulled it up): no copy */
        const char *p = (const char *)evbuffer_pullup(b, -1);
        if (p == NULL) {
            evbuffer_free(b);
            return NULL;
        }
        *s = (lm_str){p, n};
    }
    return (lm_http_body_t *)b;
}

void lm_http_body_free(lm_http_body_t *b)
{
    if (b)
        evbuffer_free((struct evbuffer *)b);
}

void lm_http_stream_start_as(lm_http_req_t *r, const char *ctype, const char *request_id)
{
    if (r == NULL)
        return;
    if (draining(r))
        evhtp_request_set_keepalive(r, 0);
    add_header(r, "Content-Type", ctype);
    add_header(r, "Cache-Control", "no-cache");
    if (request_id && *request_id)
        add_header(r, "X-Request-Id", request_id);
    evhtp_send_reply_chunk_start(r, EVHTP_RES_OK);
}

void lm_http_stream_start(lm_http_req_t *r, const char *request_id)
{
    lm_http_stream_start_as(r, "text/event-stream", request_id);
}

void lm_http_stream_write(lm_http_req_t *r, const char *p, size_t n)
{
    if (r == NULL || n == 0)
        return;
    struct evbuffer *b = evbuffer_new();
    if (b == NULL)
        return;
    evbuffer_add(b, p, n);
    evhtp_send_reply_chunk(r, b);
    evbuffer_free(b);
}

void lm_http_stream_end(lm_http_req_t *r)
{
    if (r == NULL)
        return;
    if (draining(r))
        evhtp_request_set_keepalive(r, 0);
    evhtp_send_reply_chunk_end(r);
}

size_t lm_http_out_pending(lm_http_req_t *r)
{
    evhtp_connection_t *c = r ? evhtp_request_get_connection(r) : NULL;
    struct bufferevent *bev = c ? evhtp_connection_get_bev(c) : NULL;
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

void lm_http_reply_simple(lm_http_req_t *req, int status, const char *type, const char *code,
                          const char *msg)
{
    lm_err e;
    lm_error_set(&e, -1, status, type, code, msg);
    lm_http_reply_error(req, &e, NULL);
}
