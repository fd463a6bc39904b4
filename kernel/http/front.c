/* front.c - the data-plane front: relay routes' hooks (headers, body,
 * client errors, request end, output drained) and the smuggling check.
 * Thread: the connection's worker. */
#include "http/front.h"

#include "http/conn.h"
#include "http/http.h"
#include "relay/relay.h"
#include "relay/worker.h"

#include <evhtp/evhtp.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

static evhtp_res on_relay_body(evhtp_request_t *req, struct evbuffer *buf, void *arg);

static void on_req_error(evhtp_request_t *req, evhtp_error_flags flags, void *arg)
{
    (void)req;
    (void)flags;
    lm_relay_client_gone(arg);
}

static evhtp_res on_req_fini(evhtp_request_t *req, void *arg)
{
    lm_http_conn_idle(req);
    lm_relay_client_fini(arg);
    return EVHTP_RES_OK;
}

/* Output drained: resume a paused upstream of the connection's request. */
static evhtp_res on_conn_write(evhtp_connection_t *conn, void *arg)
{
    evhtp_request_t *req = conn->request;
    (void)arg;
    if (req && req->hooks && req->hooks->on_request_fini == on_req_fini)
        lm_relay_client_writable(req->hooks->on_request_fini_arg);
    return EVHTP_RES_OK;
}

void lm_http_bind_relay(lm_http_req_t *r, struct lm_relay_s *relay)
{
    evhtp_request_set_hook(r, evhtp_hook_on_read, (evhtp_hook)(void (*)(void))on_relay_body, relay);
    evhtp_request_set_hook(r, evhtp_hook_on_error, (evhtp_hook)(void (*)(void))on_req_error, relay);
    evhtp_request_set_hook(r, evhtp_hook_on_request_fini, (evhtp_hook)(void (*)(void))on_req_fini,
                           relay);
    evhtp_connection_set_hook(evhtp_request_get_connection(r), evhtp_hook_on_write,
                              (evhtp_hook)(void (*)(void))on_conn_write, NULL);
}

static lm_worker_t *worker_of(evhtp_request_t *req)
{
    return evthr_get_aux(req->conn->thread);
}

static lm_relay_t *relay_of(evhtp_request_t *req)
{
    if (req->hooks && req->hooks->on_request_fini == on_req_fini)
        return req->hooks->on_request_fini_arg;
    return NULL;
}

/* Headers complete on a relay route: the relay exists from here on, so the
 * body can be capped as it arrives. */
/* A body framed two ways (Content-Length and Transfer-Encoding) or with
 * two lengths is how requests are smuggled past a proxy in front of us:
 * refuse it (the connection closes) rather than guess which framing the
 * proxy used (IN-6). */
static int ambiguous_framing(evhtp_headers_t *hdrs)
{
    int ncl = 0, nte = 0;
    evhtp_kv_t *kv;
    TAILQ_FOREACH(kv, hdrs, next)
    {
        if (kv->key && strcasecmp(kv->key, "Content-Length") == 0)
            ncl++;
        else if (kv->key && strcasecmp(kv->key, "Transfer-Encoding") == 0)
            nte++;
    }
    return ncl > 1 || nte > 1 || (ncl && nte);
}

evhtp_res lm_http_front_relay_headers(evhtp_request_t *req, evhtp_headers_t *hdrs, void *arg)
{
    lm_http_conn_busy(req);
    if (ambiguous_framing(hdrs))
        return EVHTP_RES_BADREQ;
    lm_http_conn_body(req, 0);
    lm_relay_begin(req, worker_of(req), (int)(intptr_t)arg);
    return EVHTP_RES_OK;
}

static evhtp_res on_relay_body(evhtp_request_t *req, struct evbuffer *buf, void *arg)
{
    size_t n = evbuffer_get_length(buf);
    lm_http_conn_body(req, 0);
    int keep = lm_relay_body(arg, evbuffer_get_length(req->buffer_in), n);
    if (keep < 0)
        return EVHTP_RES_DATA_TOO_LONG;
    if (keep)
        evbuffer_add_buffer(req->buffer_in, buf);
    else
        evbuffer_drain(buf, n);
    return EVHTP_RES_OK;
}

void lm_http_front_relay_route(evhtp_request_t *req, void *arg)
{
    lm_relay_t *r = relay_of(req);
    (void)arg;
    lm_http_conn_body(req, 1);
    if (r == NULL) {
        lm_http_reply_simple(req, 500, "api_error", NULL, "out of memory");
        return;
    }
    lm_relay_run(r, req->method == htp_method_POST);
}
