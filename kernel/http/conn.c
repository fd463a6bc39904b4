/* conn.c - open client connections per worker thread, so shutdown can
 * close them and slow senders (IN-7) are cut off. Thread: the owning
 * worker; a node is freed with its connection (on_conn_fini). */
#include "http/conn.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/gate.h"
#include "longmen.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include <event2/event.h>
#include <stdlib.h>

typedef struct lm_http_conn_s {
    evhtp_connection_t *conn;
    struct lm_http_conn_s *prev, *next;
    lm_http_thread_t *t;
    int64_t waiting_since_ms; /* waiting for request headers since (0: a request is running) */
    int64_t body_read_ms;     /* reading a request body: its last piece came then (0: not) */
    lm_gate_t *gate;          /* owned: hands libevhtp one whole request at a time */
    uint64_t sent, sent_last; /* bytes written to the socket: now, at the last sweep */
    int64_t out_stuck_ms;     /* bytes queued and none written since (0: not stuck) */
    struct evbuffer_cb_entry *on_out; /* counts `sent` on the output buffer (owned) */
} lm_http_conn_t;

static evhtp_res on_conn_fini(evhtp_connection_t *conn, void *arg);

lm_http_thread_t *lm_http_thread_of(evhtp_request_t *req)
{
    return req && req->conn && req->conn->thread ? evthr_get_aux(req->conn->thread) : NULL;
}

static lm_http_conn_t *node_of(evhtp_request_t *req)
{
    evhtp_connection_t *c = req ? req->conn : NULL;
    if (c == NULL || c->hooks == NULL || c->hooks->on_connection_fini != on_conn_fini)
        return NULL; /* not tracked, or already released */
    return c->hooks->on_connection_fini_arg;
}

/* Headers complete: the request runs, no header deadline. */
void lm_http_conn_busy(evhtp_request_t *req)
{
    lm_http_conn_t *n = node_of(req);
    if (n)
        n->waiting_since_ms = 0;
}

/* A body piece arrived (body_done: the whole body is in). */
void lm_http_conn_body(evhtp_request_t *req, int body_done)
{
    lm_http_conn_t *n = node_of(req);
    if (n)
        n->body_read_ms = body_done ? 0 : lm_clock_ms();
}

void lm_http_conn_reply_now(evhtp_request_t *req)
{
    lm_http_conn_t *n = node_of(req);
    if (n)
        lm_gate_reply_now(n->gate);
}

/* A request ended: a keep-alive connection waits for the next one. */
void lm_http_conn_idle(evhtp_request_t *req)
{
    lm_http_conn_t *n = node_of(req);
    if (n) {
        n->waiting_since_ms = lm_clock_ms();
        n->body_read_ms = 0;
        lm_gate_request_done(n->gate); /* the next pipelined request may go in */
    }
}

static evhtp_res on_conn_headers(evhtp_request_t *req, evhtp_headers_t *hdrs, void *arg)
{
    (void)hdrs;
    (void)arg;
    lm_http_conn_busy(req);
    return EVHTP_RES_OK;
}

static evhtp_res on_conn_req_fini(evhtp_request_t *req, void *arg)
{
    (void)arg;
    lm_http_conn_idle(req);
    return EVHTP_RES_OK;
}

/* FT-6: a client that reads none of what is queued for it for
 * client_send_timeout is cut off; its relay then cancels the upstream and
 * bills what was received. Progress is the queue going down (the relay
 * stops adding once it is over stream_buffer). */
static int send_stalled(lm_http_conn_t *n, int64_t now, int limit)
{
    struct bufferevent *bev = evhtp_connection_get_bev(n->conn);
    size_t out = bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
    if (out == 0 || n->sent != n->sent_last)
        n->out_stuck_ms = 0;
    else if (n->out_stuck_ms == 0)
        n->out_stuck_ms = now;
    n->sent_last = n->sent;
    if (n->out_stuck_ms == 0 || now - n->out_stuck_ms < limit)
        return 0;
    lm_log(LM_LOG_INFO,
           "closing a connection whose client read nothing of %zu queued bytes "
           "for %d ms (client_send_timeout)",
           out, limit);
    return 1;
}

/* Slowloris (IN-7): a connection that has not completed its request
 * headers within client_header_timeout (from accept, or since its last
 * request ended) is closed; bytes trickling in do not extend it. A request
 * body must keep arriving: client_body_timeout between two pieces. An
 * answer must keep leaving: client_send_timeout (send_stalled). */
static void on_conn_sweep(evutil_socket_t fd, short what, void *arg)
{
    lm_http_thread_t *t = arg;
    (void)fd;
    (void)what;
    int64_t now = lm_clock_ms(), limit = t->header_timeout_ms;
    lm_http_conn_t *n = t->conns;
    while (n) {
        lm_http_conn_t *next = n->next;
        if ((n->waiting_since_ms > 0 && now - n->waiting_since_ms >= limit) ||
            (n->body_read_ms > 0 && now - n->body_read_ms >= t->body_timeout_ms) ||
            send_stalled(n, now, t->send_timeout_ms))
            evhtp_connection_free(n->conn); /* on_conn_fini unlinks and frees n */
        n = next;
    }
}

static evhtp_res on_conn_fini(evhtp_connection_t *conn, void *arg)
{
    lm_http_conn_t *n = arg;
    /* libevhtp runs this before the request's fini hooks: they must not
     * find the node (node_of) once it is freed. */
    if (conn->hooks)
        conn->hooks->on_connection_fini_arg = NULL;
    if (n->prev)
        n->prev->next = n->next;
    else
        n->t->conns = n->next;
    if (n->next)
        n->next->prev = n->prev;
    struct bufferevent *bev = evhtp_connection_get_bev(conn);
    if (bev && n->on_out)
        evbuffer_remove_cb_entry(bufferevent_get_output(bev), n->on_out);
    lm_gate_free(n->gate);
    free(n);
    return EVHTP_RES_OK;
}

/* Output buffer callback: bytes drained from it went to the socket. */
static void on_out(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    lm_http_conn_t *n = arg;
    (void)buf;
    n->sent += info->n_deleted;
}

/* Runs on the worker that owns the new connection. */
evhtp_res lm_http_conn_accept(evhtp_connection_t *conn, void *arg)
{
    lm_http_thread_t *t = conn->thread ? evthr_get_aux(conn->thread) : NULL;
    (void)arg;
    if (t == NULL)
        return EVHTP_RES_OK;
    lm_http_conn_t *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return EVHTP_RES_ERROR;
    n->conn = conn;
    n->t = t;
    n->next = t->conns;
    if (n->next)
        n->next->prev = n;
    t->conns = n;
    evhtp_connection_set_hook(conn, evhtp_hook_on_connection_fini,
                              (evhtp_hook)(void (*)(void))on_conn_fini, n);
    n->waiting_since_ms = lm_clock_ms();
    evhtp_connection_set_hook(conn, evhtp_hook_on_headers,
                              (evhtp_hook)(void (*)(void))on_conn_headers, NULL);
    evhtp_connection_set_hook(conn, evhtp_hook_on_request_fini,
                              (evhtp_hook)(void (*)(void))on_conn_req_fini, NULL);
    lm_head_limits_t lim;
    lm_head_limits_default(&lim, t->max_body ? atomic_load(t->max_body) : UINT64_MAX);
    if (t->max_body)
        lim.max_body_audio = atomic_load(&t->max_body[1]);
    n->gate = lm_gate_attach(conn, &lim);
    struct bufferevent *bev = evhtp_connection_get_bev(conn);
    n->on_out = bev ? evbuffer_add_cb(bufferevent_get_output(bev), on_out, n) : NULL;
    lm_gate_max_body_from(n->gate, t->max_body);
    return EVHTP_RES_OK;
}

int lm_http_conn_sweep_start(lm_http_thread_t *t, struct event_base *base)
{
    int every = t->header_timeout_ms / 4 < 1000 ? t->header_timeout_ms / 4 : 1000;
    struct timeval tv = {every / 1000, (every % 1000) * 1000};
    t->sweep = event_new(base, -1, EV_PERSIST, on_conn_sweep, t);
    return t->sweep && event_add(t->sweep, &tv) == 0 ? 0 : -1;
}

void lm_http_conn_close_all(lm_http_thread_t *t)
{
    while (t->conns)
        evhtp_connection_free(t->conns->conn); /* on_conn_fini unlinks it */
    if (t->sweep)
        event_free(t->sweep);
    t->sweep = NULL;
}
