/* conn.c - open client connections per worker, so shutdown can close
 * them and slow senders (IN-7) are cut off. Thread: the owning worker;
 * nodes are freed when their connection is. */
#include "http/conn.h"

#include "core/clock.h"
#include "server/server.h"

#include <evhtp/evhtp.h>
#include <stdlib.h>

typedef struct conn_node_s {
    evhtp_connection_t *conn;
    struct conn_node_s *prev, *next;
    lm_worker_t *w;
    int64_t waiting_since_ms; /* waiting for request headers since (0: a request is running) */
    int64_t body_read_ms;     /* reading a request body: its last piece came then (0: not) */
} conn_node_t;

static evhtp_res on_conn_fini(evhtp_connection_t *conn, void *arg);

static conn_node_t *node_of(evhtp_request_t *req)
{
    evhtp_connection_t *c = req ? req->conn : NULL;
    if (c == NULL || c->hooks == NULL || c->hooks->on_connection_fini != on_conn_fini)
        return NULL; /* not tracked, or already released */
    return c->hooks->on_connection_fini_arg;
}

/* Headers complete: the request runs, no header deadline. */
void lm_http_conn_busy(evhtp_request_t *req)
{
    conn_node_t *n = node_of(req);
    if (n)
        n->waiting_since_ms = 0;
}

/* A body piece arrived (body_done: the whole body is in). */
void lm_http_conn_body(evhtp_request_t *req, int body_done)
{
    conn_node_t *n = node_of(req);
    if (n)
        n->body_read_ms = body_done ? 0 : lm_clock_ms();
}

/* A request ended: a keep-alive connection waits for the next one. */
void lm_http_conn_idle(evhtp_request_t *req)
{
    conn_node_t *n = node_of(req);
    if (n) {
        n->waiting_since_ms = lm_clock_ms();
        n->body_read_ms = 0;
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

/* Slowloris (IN-7): a connection that has not completed its request
 * headers within client_header_timeout (from accept, or since its last
 * request ended) is closed; bytes trickling in do not extend it. A request
 * body must keep arriving: client_body_timeout between two pieces. */
void lm_http_conn_sweep(evutil_socket_t fd, short what, void *arg)
{
    lm_worker_t *w = arg;
    (void)fd;
    (void)what;
    int header_ms, body_ms;
    lm_server_client_timeouts(w->srv, &header_ms, &body_ms);
    int64_t now = lm_clock_ms(), limit = header_ms;
    conn_node_t *n = w->conns;
    while (n) {
        conn_node_t *next = n->next;
        if ((n->waiting_since_ms > 0 && now - n->waiting_since_ms >= limit) ||
            (n->body_read_ms > 0 && now - n->body_read_ms >= body_ms))
            evhtp_connection_free(n->conn); /* on_conn_fini unlinks and frees n */
        n = next;
    }
}

static evhtp_res on_conn_fini(evhtp_connection_t *conn, void *arg)
{
    conn_node_t *n = arg;
    /* libevhtp runs this before the request's fini hooks: they must not
     * find the node (node_of) once it is freed. */
    if (conn->hooks)
        conn->hooks->on_connection_fini_arg = NULL;
    if (n->prev)
        n->prev->next = n->next;
    else
        n->w->conns = n->next;
    if (n->next)
        n->next->prev = n->prev;
    free(n);
    return EVHTP_RES_OK;
}

/* Runs on the worker that owns the new connection. */
evhtp_res lm_http_conn_accept(evhtp_connection_t *conn, void *arg)
{
    lm_worker_t *w = conn->thread ? evthr_get_aux(conn->thread) : NULL;
    (void)arg;
    if (w == NULL)
        return EVHTP_RES_OK;
    conn_node_t *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return EVHTP_RES_ERROR;
    n->conn = conn;
    n->w = w;
    n->next = w->conns;
    if (n->next)
        n->next->prev = n;
    w->conns = n;
    evhtp_connection_set_hook(conn, evhtp_hook_on_connection_fini,
                              (evhtp_hook)(void (*)(void))on_conn_fini, n);
    n->waiting_since_ms = lm_clock_ms();
    evhtp_connection_set_hook(conn, evhtp_hook_on_headers,
                              (evhtp_hook)(void (*)(void))on_conn_headers, NULL);
    evhtp_connection_set_hook(conn, evhtp_hook_on_request_fini,
                              (evhtp_hook)(void (*)(void))on_conn_req_fini, NULL);
    return EVHTP_RES_OK;
}

/* Thread exit: close what clients left open (their fini hooks run now). */
void lm_http_conn_close_all(lm_worker_t *w)
{
    while (w->conns)
        evhtp_connection_free(((conn_node_t *)w->conns)->conn);
}
